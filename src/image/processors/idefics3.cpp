// Idefics3 / SmolVLM (model_type idefics3) and SmolVLM2 (model_type smolvlm): Idefics3ImageProcessor /
// SmolVLMImageProcessor (the same steps; PIL backend by default in transformers 5: LANCZOS has no tensor
// implementation) and Idefics3Processor's / SmolVLMProcessor's prompt string.
//
// Pixels (Idefics3ImageProcessorPil._preprocess):
//   1. resize so the longest edge is size.longest_edge (up or down; the other edge int() of the aspect
//      ratio, rounded up to even), then scaled below 4096;
//   2. with do_image_splitting: resize up to multiples of max_image_size.longest_edge (M); if larger than
//      M×M, cut M×M tiles row-major and append the whole image resized to M×M (the global image); without
//      splitting: resize to M×M;
//   3. rescale + normalise (mean = std = 0.5); pad to the batch's largest tile (tiles are all M×M, so the
//      pixel_attention_mask is all ones).
// Prompt (Idefics3Processor.replace_image_token): for rows × cols tiles,
//   per row: per col "<fake_token_around_image><row_r_col_c>" + image_seq_len × "<image>", then "\n";
//   then "\n<fake_token_around_image><global-img>" + image_seq_len × "<image>" + "<fake_token_around_image>";
//   an unsplit image: "<fake_token_around_image><global-img>" + image_seq_len × "<image>" +
//   "<fake_token_around_image>". The token strings are fixed in Idefics3Processor; SmolVLMProcessor reads
//   them from the tokenizer (fake_image_token, image_token, global_image_token) with those defaults.
// The smolvlm path has no parity fixture yet (the idefics3 fixtures cover the shared code).
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "image/processors/common.h"

namespace vlm::proc {
namespace {

constexpr int kMaxImageSize = 4096;  // Idefics3 MAX_IMAGE_SIZE
const std::vector<float> kHalf = {0.5f, 0.5f, 0.5f};  // IMAGENET_STANDARD_MEAN / STD
const char* const kFakeToken = "<fake_token_around_image>";
const char* const kImageToken = "<image>";
const char* const kGlobalImg = "<global-img>";

// _resize_output_size_rescale_to_max_len, then _resize_output_size_scale_below_upper_bound: (h, w).
std::pair<int, int> longest_edge_size(int height, int width, int max_len) {
  const double aspect = static_cast<double>(width) / height;
  int h = height, w = width;
  if (width >= height) {
    w = max_len;
    h = static_cast<int>(w / aspect);
    if (h % 2 != 0) h += 1;
  } else {
    h = max_len;
    w = static_cast<int>(h * aspect);
    if (w % 2 != 0) w += 1;
  }
  h = std::max(h, 1);
  w = std::max(w, 1);
  // Scale below MAX_IMAGE_SIZE (aspect recomputed from the new size, as transformers does).
  const double aspect2 = static_cast<double>(w) / h;
  if (w >= h && w > kMaxImageSize) {
    w = kMaxImageSize;
    h = static_cast<int>(w / aspect2);
  } else if (h > w && h > kMaxImageSize) {
    h = kMaxImageSize;
    w = static_cast<int>(h * aspect2);
  }
  return {std::max(h, 1), std::max(w, 1)};
}

// resize_for_vision_encoder: both edges up to multiples of m (the second edge from the aspect ratio first).
std::pair<int, int> vision_encoder_size(int height, int width, int m) {
  const double aspect = static_cast<double>(width) / height;
  int h = height, w = width;
  if (width >= height) {
    w = static_cast<int>(std::ceil(static_cast<double>(width) / m)) * m;
    h = static_cast<int>(w / aspect);
    h = static_cast<int>(std::ceil(static_cast<double>(h) / m)) * m;
  } else {
    h = static_cast<int>(std::ceil(static_cast<double>(height) / m)) * m;
    w = static_cast<int>(h * aspect);
    w = static_cast<int>(std::ceil(static_cast<double>(w) / m)) * m;
  }
  return {h, w};
}

class Idefics3Processor final : public ImageProcessor {
 public:
  Idefics3Processor(const Sources& s, const ProcessorOptions& o, bool smolvlm)
      : options_(o), family_(smolvlm ? "smolvlm" : "idefics3") {
    const Json& ip = s.image_processor;
    const std::string w = s.image_what();
    do_resize_ = read_bool(ip, "do_resize", true, w);
    auto size = read_size(ip, "size", false, w);
    longest_edge_ = size && size->longest_edge ? *size->longest_edge : 4 * 364;
    VLM_CHECK(!size || size->longest_edge || (size->height && size->width), ErrorKind::kFormat,
              "{}: field \"size\" must have \"longest_edge\" (or height and width)", w);
    if (size && !size->longest_edge) fixed_size_ = {static_cast<int>(*size->height), static_cast<int>(*size->width)};
    auto mis = read_size(ip, "max_image_size", false, w);
    VLM_CHECK(!mis || mis->longest_edge, ErrorKind::kFormat, "{}: field \"max_image_size\" must have \"longest_edge\"",
              w);
    tile_ = static_cast<int>(mis ? *mis->longest_edge : 364);
    do_split_ = read_bool(ip, "do_image_splitting", true, w);
    resample_ = read_resample(ip, "resample", ResampleFilter::kLanczos, w);
    norm_ = read_normalization(ip, kHalf, kHalf, w);
    backend_ = pick_backend(o, PixelBackend::kPil);
    // Idefics3Processor(image_seq_len=169); processor_config.json carries the checkpoint's value.
    const Json& pj = json_find(s.processor, "image_seq_len") ? s.processor : s.image_processor;
    image_seq_len_ = read_positive(pj, "image_seq_len", 169, s.processor_what());
    if (smolvlm) {
      const std::string tw = s.tokenizer_what();
      fake_ = tokenizer_token(s.tokenizer_config, "fake_image_token", fake_, tw);
      image_ = tokenizer_token(s.tokenizer_config, "image_token", image_, tw);
      global_ = tokenizer_token(s.tokenizer_config, "global_image_token", global_, tw);
    }
  }

  ProcessedImage process(const Image& rgb) const override {
    ProcessedImage out;
    out.backend = backend_;
    Image img = rgb.clone();
    auto resize_to = [&](const Image& im, int h, int w) {
      return (h == im.height() && w == im.width()) ? im.clone() : backend_resize(im, w, h, resample_, backend_);
    };
    if (options_.resize_height) {
      img = resize_to(img, *options_.resize_height, options_.resize_width.value_or(*options_.resize_height));
    } else if (do_resize_) {
      auto [h, w] = fixed_size_ ? *fixed_size_ : longest_edge_size(img.height(), img.width(), static_cast<int>(longest_edge_));
      img = resize_to(img, h, w);
    }
    std::vector<Image> frames;
    if (do_split_) {
      auto [h, w] = vision_encoder_size(img.height(), img.width(), tile_);
      img = resize_to(img, h, w);
      if (h > tile_ || w > tile_) {
        out.rows = (h - tile_) / tile_ + 1;
        out.cols = (w - tile_) / tile_ + 1;
        for (int r = 0; r < out.rows; ++r)
          for (int c = 0; c < out.cols; ++c) frames.push_back(crop_clipped(img, c * tile_, r * tile_, tile_, tile_));
        frames.push_back(resize_to(img, tile_, tile_));  // the global image
      } else {
        frames.push_back(std::move(img));
      }
    } else {
      frames.push_back(resize_to(img, tile_, tile_));
    }
    out.processed_height = frames.back().height();
    out.processed_width = frames.back().width();
    if (out.rows > 0) {
      out.processed_height = out.rows * tile_;
      out.processed_width = out.cols * tile_;
    }
    // Pad every frame to the largest (transformers pads across the batch; frames here are M×M unless
    // do_image_splitting is off and do_resize produced something else, which cannot happen: step 2 always
    // yields M×M or multiples cut into M×M).
    int mh = 0, mw = 0;
    for (const Image& f : frames) mh = std::max(mh, f.height()), mw = std::max(mw, f.width());
    std::vector<Tensor> tiles;
    bool padded = false;
    for (const Image& f : frames) {
      Tensor t = backend_normalize(f, norm_, backend_);
      if (f.height() != mh || f.width() != mw) {
        padded = true;
        Tensor p = Tensor::zeros({3, mh, mw}, DType::kF32, MemCategory::kImage);
        for (int c = 0; c < 3; ++c)
          for (int y = 0; y < f.height(); ++y)
            std::memcpy(p.data<float>() + (int64_t(c) * mh + y) * mw, t.data<float>() + (int64_t(c) * f.height() + y) * f.width(),
                        size_t(f.width()) * sizeof(float));
        t = p;
      }
      tiles.push_back(std::move(t));
    }
    out.pixels = stack_tiles(tiles);  // [n_tiles, 3, M, M]
    out.n_tiles = static_cast<int>(tiles.size());
    if (padded) {
      out.pixel_mask = Tensor::zeros({out.n_tiles, mh, mw}, DType::kU8, MemCategory::kImage);
      for (int i = 0; i < out.n_tiles; ++i)
        for (int y = 0; y < frames[i].height(); ++y)
          std::memset(out.pixel_mask.data<uint8_t>() + (int64_t(i) * mh + y) * mw, 1, size_t(frames[i].width()));
    }
    out.image_tokens = image_seq_len_ * out.n_tiles;
    return out;
  }

  std::string expand_prompt(const std::string& text, const std::vector<ProcessedImage>& images) const override {
    const std::string run = repeat(image_, image_seq_len_);
    return replace_placeholders(text, image_, images.size(), [&](size_t i) {
      const ProcessedImage& im = images[i];
      std::string s;
      if (im.rows == 0 && im.cols == 0) return fake_ + global_ + run + fake_;
      for (int r = 0; r < im.rows; ++r) {
        for (int c = 0; c < im.cols; ++c)
          s += fake_ + "<row_" + std::to_string(r + 1) + "_col_" + std::to_string(c + 1) + ">" + run;
        s += "\n";
      }
      s += "\n" + fake_ + global_ + run + fake_;
      return s;
    }, family());
  }
  std::string placeholder() const override { return image_; }
  std::string image_token() const override { return image_; }
  std::string family() const override { return family_; }

 private:
  ProcessorOptions options_;
  std::string family_;
  std::string fake_ = kFakeToken, image_ = kImageToken, global_ = kGlobalImg;
  bool do_resize_ = true, do_split_ = true;
  int64_t longest_edge_ = 4 * 364;
  std::optional<std::pair<int, int>> fixed_size_;
  int tile_ = 364;
  ResampleFilter resample_ = ResampleFilter::kLanczos;
  Normalization norm_;
  PixelBackend backend_ = PixelBackend::kPil;
  int64_t image_seq_len_ = 169;
};

}  // namespace

std::unique_ptr<ImageProcessor> make_idefics3(const Sources& s, const ProcessorOptions& o) {
  return std::make_unique<Idefics3Processor>(s, o, false);
}
std::unique_ptr<ImageProcessor> make_smolvlm(const Sources& s, const ProcessorOptions& o) {
  return std::make_unique<Idefics3Processor>(s, o, true);
}

}  // namespace vlm::proc
