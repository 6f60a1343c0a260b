// Config reads, backends and placeholder replacement shared by the family processors (see common.h).
#include "image/processors/common.h"

#include <cstring>

#include "core/error.h"

namespace vlm::proc {

namespace {

std::optional<int64_t> size_field(const Json& obj, const std::string& key, const std::string& what) {
  return json_int(obj, key, what);
}

}  // namespace

std::optional<SizeSpec> read_size(const Json& obj, const std::string& key, bool default_to_square,
                                  const std::string& what) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return std::nullopt;
  SizeSpec s;
  const std::string field = what + " field \"" + key + "\"";
  if (v->is_number()) {
    const int64_t n = json_int(obj, key, what).value();
    if (default_to_square)
      s.height = s.width = n;
    else
      s.shortest_edge = n;
  } else if (v->is_array()) {
    // transformers' get_size_dict: a (height, width) pair.
    VLM_CHECK(v->size() == 2 && (*v)[0].is_number_integer() && (*v)[1].is_number_integer(), ErrorKind::kFormat,
              "{}: expected [height, width], got {}", field, v->dump());
    s.height = (*v)[0].get<int64_t>();
    s.width = (*v)[1].get<int64_t>();
  } else if (v->is_object()) {
    s.height = size_field(*v, "height", field);
    s.width = size_field(*v, "width", field);
    s.shortest_edge = size_field(*v, "shortest_edge", field);
    s.longest_edge = size_field(*v, "longest_edge", field);
  } else {
    throw_error(ErrorKind::kFormat, "{}: expected an object, integer or [h, w], got {}", field, v->dump());
  }
  for (const auto* f : {&s.height, &s.width, &s.shortest_edge, &s.longest_edge})
    VLM_CHECK(!*f || **f > 0, ErrorKind::kFormat, "{}: sizes must be positive, got {}", field, v->dump());
  return s;
}

std::vector<float> read_channel_values(const Json& obj, const std::string& key, const std::vector<float>& def,
                                       const std::string& what) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return def;
  if (v->is_number()) return std::vector<float>(3, static_cast<float>(v->get<double>()));
  VLM_CHECK(v->is_array() && v->size() == 3, ErrorKind::kFormat,
            "{}: field \"{}\" should be a number or a list of 3 numbers, got {}", what, key, v->dump());
  std::vector<float> out;
  for (const Json& x : *v) {
    VLM_CHECK(x.is_number(), ErrorKind::kFormat, "{}: field \"{}\" should hold numbers, got {}", what, key,
              v->dump());
    // Python float → float32, as torch.tensor(mean) and np.array(mean, dtype=float32) store it.
    out.push_back(static_cast<float>(x.get<double>()));
  }
  return out;
}

ResampleFilter read_resample(const Json& obj, const std::string& key, ResampleFilter def, const std::string& what) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return def;
  if (v->is_number_integer()) {
    const int64_t code = v->get<int64_t>();
    VLM_CHECK(code >= 0 && code <= 5, ErrorKind::kFormat,
              "{}: field \"{}\" should be a PIL resampling code 0-5, got {}", what, key, code);
    return resample_filter_from_pil_code(static_cast<int>(code));
  }
  if (v->is_string()) {
    const std::string n = v->get<std::string>();
    for (ResampleFilter f : {ResampleFilter::kNearest, ResampleFilter::kBox, ResampleFilter::kBilinear,
                             ResampleFilter::kHamming, ResampleFilter::kBicubic, ResampleFilter::kLanczos})
      if (n == resample_filter_name(f)) return f;
  }
  throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be a PIL resampling code, got {}", what, key, v->dump());
}

bool read_bool(const Json& obj, const std::string& key, bool def, const std::string& what) {
  return json_bool(obj, key, what).value_or(def);
}
int64_t read_int(const Json& obj, const std::string& key, int64_t def, const std::string& what) {
  return json_int(obj, key, what).value_or(def);
}
double read_number(const Json& obj, const std::string& key, double def, const std::string& what) {
  return json_number(obj, key, what).value_or(def);
}
int64_t read_positive(const Json& obj, const std::string& key, int64_t def, const std::string& what) {
  const int64_t v = read_int(obj, key, def, what);
  VLM_CHECK(v > 0, ErrorKind::kFormat, "{}: field \"{}\" must be positive, got {}", what, key, v);
  return v;
}

std::string tokenizer_token(const Json& tokenizer_config, const std::string& key, const std::string& def,
                            const std::string& what) {
  auto as_token = [&](const Json& v, const std::string& where) -> std::optional<std::string> {
    if (v.is_null()) return std::nullopt;
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object()) {
      const Json* c = json_find(v, "content");
      if (c && c->is_string()) return c->get<std::string>();
    }
    throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be a token string, got {}", what, where, v.dump());
  };
  if (const Json* v = json_find(tokenizer_config, key))
    if (auto t = as_token(*v, key)) return *t;
  if (const Json* extra = json_find(tokenizer_config, "extra_special_tokens"); extra && extra->is_object())
    if (const Json* v = json_find(*extra, key))
      if (auto t = as_token(*v, "extra_special_tokens." + key)) return *t;
  return def;
}

Normalization read_normalization(const Json& ip, const std::vector<float>& default_mean,
                                 const std::vector<float>& default_std, const std::string& what) {
  Normalization n;
  n.do_rescale = read_bool(ip, "do_rescale", true, what);
  n.rescale_factor = read_number(ip, "rescale_factor", 1.0 / 255.0, what);
  VLM_CHECK(n.rescale_factor != 0.0, ErrorKind::kFormat, "{}: field \"rescale_factor\" is zero", what);
  n.do_normalize = read_bool(ip, "do_normalize", true, what);
  n.mean = read_channel_values(ip, "image_mean", default_mean, what);
  n.std = read_channel_values(ip, "image_std", default_std, what);
  for (size_t c = 0; c < n.std.size(); ++c)
    VLM_CHECK(!n.do_normalize || n.std[c] != 0.0f, ErrorKind::kFormat, "{}: image_std[{}] is zero", what, c);
  return n;
}

Image backend_resize(const Image& src, int out_w, int out_h, ResampleFilter filter, PixelBackend backend) {
  if (backend == PixelBackend::kPil) return resize_pil(src, out_w, out_h, filter);
  // TorchvisionBackend.resize: LANCZOS is not implemented for tensors; transformers warns and uses BICUBIC.
  if (filter == ResampleFilter::kLanczos) filter = ResampleFilter::kBicubic;
  VLM_CHECK(filter == ResampleFilter::kBilinear || filter == ResampleFilter::kBicubic, ErrorKind::kUnsupported,
            "torchvision image backend: {} resampling is not implemented (bilinear, bicubic and lanczos→bicubic are); "
            "use --image-backend pil",
            resample_filter_name(filter));
  return resize_torchvision(src, out_w, out_h, filter);
}

Tensor backend_normalize(const Image& src, const Normalization& n, PixelBackend backend) {
  VLM_CHECK(src.channels() == 3, ErrorKind::kInvalidArgument, "image processor: expected an RGB image, got {} channels",
            src.channels());
  if (n.do_rescale && n.do_normalize) {
    return backend == PixelBackend::kPil ? to_normalized_chw(src, n.mean, n.std, n.rescale_factor)
                                         : to_normalized_chw_torchvision(src, n.mean, n.std, n.rescale_factor);
  }
  if (backend == PixelBackend::kPil) {
    Tensor t = rescale_to_chw(src, n.do_rescale ? n.rescale_factor : 1.0);
    if (n.do_normalize) normalize_chw(t, n.mean, n.std);
    return t;
  }
  // Torchvision without fusion: image * scale (float32), or normalize of the float32 image.
  Tensor t = rescale_to_chw(src, 1.0);
  float* p = t.data<float>();
  if (n.do_rescale) {
    const float s = static_cast<float>(n.rescale_factor);
    for (int64_t i = 0; i < t.numel(); ++i) p[i] *= s;
  }
  if (n.do_normalize) normalize_chw(t, n.mean, n.std);
  return t;
}

std::vector<float> normalization_lut(const Normalization& n, PixelBackend backend) {
  // backend_normalize itself on a 256 x 1 ramp (pixel v = (v, v, v)): the table holds its exact values.
  Image ramp(256, 1, 3);
  for (int v = 0; v < 256; ++v)
    for (int c = 0; c < 3; ++c) ramp.row(0)[v * 3 + c] = static_cast<uint8_t>(v);
  const Tensor chw = backend_normalize(ramp, n, backend);  // [3, 1, 256]
  const float* p = chw.data<float>();
  return std::vector<float>(p, p + 3 * 256);
}

Tensor stack_tiles(const std::vector<Tensor>& tiles) {
  VLM_CHECK(!tiles.empty(), ErrorKind::kInternal, "stack_tiles: no tiles");
  const Shape s = tiles[0].shape();
  Tensor out = Tensor::empty({static_cast<int64_t>(tiles.size()), s[0], s[1], s[2]}, DType::kF32, MemCategory::kImage);
  const size_t bytes = tiles[0].nbytes();
  for (size_t i = 0; i < tiles.size(); ++i) {
    VLM_CHECK(tiles[i].shape() == s, ErrorKind::kInternal, "stack_tiles: tile {} is {}, tile 0 is {}", i,
              shape_str(tiles[i].shape()), shape_str(s));
    std::memcpy(static_cast<char*>(out.raw()) + i * bytes, tiles[i].raw(), bytes);
  }
  return out;
}

Image crop_clipped(const Image& src, int x, int y, int w, int h) {
  const int x0 = std::clamp(x, 0, src.width()), y0 = std::clamp(y, 0, src.height());
  const int x1 = std::clamp(x + w, 0, src.width()), y1 = std::clamp(y + h, 0, src.height());
  VLM_CHECK(x1 > x0 && y1 > y0, ErrorKind::kInternal, "crop ({}, {}, {}x{}) is outside the {}x{} image", x, y, w, h,
            src.width(), src.height());
  Image out(x1 - x0, y1 - y0, src.channels());
  for (int r = y0; r < y1; ++r)
    std::memcpy(out.row(r - y0), src.row(r) + size_t(x0) * src.channels(), out.row_bytes());
  return out;
}

size_t count_occurrences(const std::string& text, const std::string& needle) {
  if (needle.empty()) return 0;
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + needle.size())) ++n;
  return n;
}

std::string repeat(const std::string& s, int64_t n) {
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) out += s;
  return out;
}

std::string replace_placeholders(const std::string& text, const std::string& placeholder, size_t n_images,
                                 const std::function<std::string(size_t)>& expansion, const std::string& family) {
  const size_t found = count_occurrences(text, placeholder);
  VLM_CHECK(found == n_images, ErrorKind::kInvalidArgument,
            "{} processor: the prompt has {} image placeholder(s) \"{}\" but {} image(s) were given", family, found,
            placeholder, n_images);
  std::string out;
  size_t pos = 0, i = 0;
  for (size_t p = text.find(placeholder); p != std::string::npos; p = text.find(placeholder, pos)) {
    out.append(text, pos, p - pos);
    out += expansion(i++);
    pos = p + placeholder.size();
  }
  out.append(text, pos, std::string::npos);
  return out;
}

void check_fixed_resize_shape(const ProcessorOptions& o, int64_t height, int64_t width, const std::string& family) {
  if (!o.resize_height) return;
  const int64_t h = *o.resize_height, w = o.resize_width.value_or(*o.resize_height);
  VLM_CHECK(h == height && w == width, ErrorKind::kInvalidArgument,
            "--resize-shape {}x{}: {} encodes a fixed {}x{} (height x width) image; another size would not match "
            "its vision tower",
            h, w, family, height, width);
}

Image FixedResize::resize(const Image& image) const {
  if (!do_resize || (image.width() == width && image.height() == height)) return image.clone();
  return backend_resize(image, width, height, resample, backend);
}

FixedResize read_fixed_resize(const Sources& s, const ProcessorOptions& o, ResampleFilter default_resample,
                              const std::string& family) {
  static const std::vector<float> kHalf = {0.5f, 0.5f, 0.5f};  // IMAGENET_STANDARD_MEAN / STD
  const Json& ip = s.image_processor;
  const std::string w = s.image_what();
  FixedResize r;
  r.do_resize = read_bool(ip, "do_resize", true, w);
  const SizeSpec size = read_size(ip, "size", true, w).value_or(SizeSpec{224, 224, std::nullopt, std::nullopt});
  VLM_CHECK(size.height && size.width, ErrorKind::kFormat, "{}: field \"size\" must have \"height\" and \"width\"", w);
  r.height = static_cast<int>(*size.height);
  r.width = static_cast<int>(*size.width);
  r.resample = read_resample(ip, "resample", default_resample, w);
  r.norm = read_normalization(ip, kHalf, kHalf, w);
  r.backend = pick_backend(o, PixelBackend::kTorchvision);
  check_fixed_resize_shape(o, r.height, r.width, family);
  return r;
}

}  // namespace vlm::proc
