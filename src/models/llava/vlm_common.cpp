// Shared VLM pieces: text model by text_config.model_type, connector weight reader, prompt assembly.
#include "models/llava/vlm_common.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "models/families.h"
#include "models/layers/tensor_table.h"

namespace vlm::vlm_common {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool is_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

}  // namespace

std::unique_ptr<LanguageModel> make_text_model(const ModelConfig& config, const Checkpoint& checkpoint,
                                               const LoadOptions& options, const std::string& default_text_type,
                                               const std::vector<std::pair<std::string, std::string>>& aliases) {
  const Json& text = config.text();
  std::string type = default_text_type;
  // A nested text_config names its own model_type; the flat older layout (Qwen2-VL on the Hub) carries the
  // VLM's model_type at the top level, which is not a text decoder.
  if (&text != &config.raw) {
    if (std::optional<std::string> t = json_string(text, "model_type", config.path + " text_config")) type = *t;
  }
  for (const auto& [from, to] : aliases) {
    if (type == from) type = to;
  }
  VLM_CHECK(type != config.model_type, ErrorKind::kFormat, "{}: text_config.model_type '{}' names the VLM itself",
            config.path, type);
  // transformers reads tie_word_embeddings from the top-level VLM config when the text config does not set it;
  // the decoder reads the text config only, so hand it a copy that carries the top-level value. (The decoder
  // uses the config during construction only.)
  const Json* tie = json_find(config.raw, "tie_word_embeddings");
  if (&text != &config.raw && tie && tie->is_boolean() && !json_find(text, "tie_word_embeddings")) {
    ModelConfig patched = config;
    for (const char* k : {"text_config", "llm_config"}) {
      if (Json* t = json_find(patched.raw, k) ? &patched.raw[k] : nullptr; t && t->is_object()) {
        (*t)["tie_word_embeddings"] = *tie;
        break;
      }
    }
    return families::make_registered_language_model(type, patched, checkpoint, options);
  }
  return families::make_registered_language_model(type, config, checkpoint, options);
}

WeightReader::WeightReader(const Checkpoint& checkpoint, const QuantizationConfig& quantization, std::string prefix,
                           std::string what)
    : checkpoint_(checkpoint), quantization_(quantization), prefix_(std::move(prefix)), what_(std::move(what)) {}

bool WeightReader::has(const std::string& name) const { return checkpoint_.has(prefix_ + name); }

const TensorInfo& WeightReader::require(const std::string& full, const std::string& expect) const {
  VLM_CHECK(checkpoint_.has(full), ErrorKind::kFormat, "{}: tensor '{}' ({}) is missing", what_, full, expect);
  return checkpoint_.info(full);
}

ops::Weight WeightReader::linear(const std::string& module, int64_t out, int64_t in) {
  const std::string base = prefix_ + module;
  const std::string wname = base + ".weight";
  const TensorInfo& info = require(wname, fmt::format("[{}, {}]", out, in));
  ops::Weight w;
  used_.insert(wname);
  if (checkpoint_.has(base + ".scales")) {
    // MLX affine, as the decoder's tensor table reads it: quantized iff .scales exists, spec from the config.
    std::optional<AffineQuantSpec> spec = quantization_.spec_for(base);
    VLM_CHECK(spec.has_value(), ErrorKind::kFormat,
              "{}: '{}' has .scales but the config's quantization marks it unquantized", what_, base);
    VLM_CHECK(checkpoint_.has(base + ".biases"), ErrorKind::kFormat, "{}: '{}.biases' is missing", what_, base);
    const Shape packed = {out, in * spec->bits / 32}, scales = {out, in / spec->group_size};
    VLM_CHECK(info.dtype == DType::kU32 && info.shape == packed, ErrorKind::kFormat,
              "{}: '{}' expected u32{} for {}-bit [{}, {}], got {}{}", what_, wname, shape_str(packed), spec->bits,
              out, in, dtype_name(info.dtype), shape_str(info.shape));
    const TensorInfo& sinfo = checkpoint_.info(base + ".scales");
    VLM_CHECK(sinfo.shape == scales && is_float(sinfo.dtype), ErrorKind::kFormat,
              "{}: '{}.scales' expected float{}, got {}{}", what_, base, shape_str(scales), dtype_name(sinfo.dtype),
              shape_str(sinfo.shape));
    used_.insert(base + ".scales");
    used_.insert(base + ".biases");
    w = quantized_weight(checkpoint_, base, *spec, out, in);
  } else {
    VLM_CHECK(is_float(info.dtype) && info.shape == (Shape{out, in}), ErrorKind::kFormat,
              "{}: '{}' expected float[{}, {}], got {}{}", what_, wname, out, in, dtype_name(info.dtype),
              shape_str(info.shape));
    w.dense = checkpoint_.get(wname);
  }
  bytes_ += w.nbytes();
  return w;
}

Tensor WeightReader::vector(const std::string& name, int64_t n) {
  const std::string full = prefix_ + name;
  const TensorInfo& info = require(full, fmt::format("[{}]", n));
  VLM_CHECK(is_float(info.dtype) && info.shape == (Shape{n}), ErrorKind::kFormat,
            "{}: '{}' expected float[{}], got {}{}", what_, full, n, dtype_name(info.dtype), shape_str(info.shape));
  used_.insert(full);
  Tensor t = checkpoint_.get(full);
  bytes_ += t.nbytes();
  return t;
}

Tensor WeightReader::matrix_f32(const std::string& name, int64_t rows, int64_t cols) {
  const std::string full = prefix_ + name;
  const TensorInfo& info = require(full, fmt::format("[{}, {}]", rows, cols));
  VLM_CHECK(is_float(info.dtype) && info.shape == (Shape{rows, cols}), ErrorKind::kFormat,
            "{}: '{}' expected float[{}, {}], got {}{}", what_, full, rows, cols, dtype_name(info.dtype),
            shape_str(info.shape));
  used_.insert(full);
  Tensor t = checkpoint_.get(full);
  bytes_ += t.nbytes();
  return t.to_f32();
}

void WeightReader::check_all_used() const {
  std::vector<std::string> unused;
  for (const std::string& n : checkpoint_.names()) {
    if (starts_with(n, prefix_) && !used_.count(n)) unused.push_back(n);
  }
  if (unused.empty()) return;
  std::string list;
  for (size_t i = 0; i < unused.size() && i < 20; ++i) list += (i ? ", " : "") + unused[i];
  if (unused.size() > 20) list += fmt::format(", ... ({} more)", unused.size() - 20);
  throw_error(ErrorKind::kFormat, "{}: tensors under '{}' that the connector does not use: {}", what_, prefix_, list);
}

std::string find_prefix(const Checkpoint& checkpoint, const std::vector<std::string>& candidates,
                        const std::string& probe, const std::string& what) {
  std::string tried;
  for (const std::string& c : candidates) {
    if (checkpoint.has(c + probe)) return c;
    tried += (tried.empty() ? "" : ", ") + c + probe;
  }
  throw_error(ErrorKind::kNotFound, "{}: {}: none of the expected tensors exists (tried {})", checkpoint.folder(),
              what, tried);
}

int32_t read_image_token_id(const Json& config, const std::string& what) {
  for (const char* key : {"image_token_id", "image_token_index"}) {
    if (std::optional<int64_t> v = json_int(config, key, what)) {
      VLM_CHECK(*v >= 0 && *v <= INT32_MAX, ErrorKind::kFormat, "{}: {} {} is out of range", what, key, *v);
      return static_cast<int32_t>(*v);
    }
  }
  throw_error(ErrorKind::kFormat, "{}: neither image_token_id nor image_token_index is set", what);
}

Tensor embed_and_scatter(const LanguageModel& lm, const std::vector<int32_t>& ids, int32_t image_token_id,
                         const std::vector<Tensor>& features, float feature_scale, const std::string& what,
                         int64_t* image_tokens) {
  const int64_t n = static_cast<int64_t>(ids.size()), h = lm.hidden_size();
  const int64_t count = std::count(ids.begin(), ids.end(), image_token_id);
  // The features stay where the tower computed them: the prompt is built on that device.
  const Device device = features.empty() ? Device::kCpu : features.front().device();
  int64_t rows = 0;
  for (const Tensor& f : features) {
    VLM_CHECK(f.ndim() == 2 && f.dim(1) == h && f.dtype() == DType::kF32 && f.is_contiguous(),
              ErrorKind::kInvalidArgument, "{}: image features must be f32 [rows, {}], got {}{}", what, h,
              dtype_name(f.dtype()), shape_str(f.shape()));
    VLM_CHECK(f.device() == device, ErrorKind::kInvalidArgument,
              "{}: image features must all be on one device, got {} and {}", what, device_name(device),
              device_name(f.device()));
    rows += f.dim(0);
  }
  VLM_CHECK(rows == count, ErrorKind::kInvalidArgument,
            "{}: the prompt has {} image tokens but the images give {} feature rows", what, count, rows);
  ops::DeviceScope scope(device);
  Tensor embeds = ops::empty({n, h}, DType::kF32, MemCategory::kScratch, device);
  float* e = embeds.data<float>();
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(h);
  std::vector<float> staged;  // text rows embedded on the host, for a prompt built on a device
  size_t fi = 0;
  int64_t fr = 0;  // next row of features[fi]
  for (int64_t i = 0; i < n;) {
    const bool image = ids[static_cast<size_t>(i)] == image_token_id;
    int64_t j = i;
    while (j < n && (ids[static_cast<size_t>(j)] == image_token_id) == image) ++j;
    if (!image) {  // a run of text tokens: their embeddings (family scaling included)
      const int32_t* run_ids = ids.data() + i;
      if (device == Device::kCpu) {
        lm.embed(run_ids, j - i, e + i * h);
      } else {
        staged.resize(static_cast<size_t>((j - i) * h));
        lm.embed(run_ids, j - i, staged.data());
        ops::copy(e + i * h, device, staged.data(), Device::kCpu, row_bytes * static_cast<size_t>(j - i));
      }
    } else {  // a run of image tokens: the next feature rows, in pieces that stay inside one image's features
      for (int64_t k = i; k < j;) {
        while (fr == features[fi].dim(0)) {
          ++fi;
          fr = 0;
        }
        const int64_t take = std::min(j - k, features[fi].dim(0) - fr);
        ops::copy(e + k * h, device, features[fi].data<float>() + fr * h, device,
                  row_bytes * static_cast<size_t>(take));
        if (feature_scale != 1.0f) ops::scale(e + k * h, feature_scale, take * h);
        fr += take;
        k += take;
      }
    }
    i = j;
  }
  if (image_tokens) *image_tokens = count;
  return embeds;
}

std::vector<int64_t> positions_1d(int64_t n, int64_t offset) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = offset + i;
  return p;
}

std::vector<int32_t> run_groups(int64_t n, const std::function<bool(int64_t)>& in_group) {
  std::vector<int32_t> g(static_cast<size_t>(n), 0);
  int32_t id = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!in_group(i)) continue;
    if (i == 0 || g[static_cast<size_t>(i - 1)] == 0) ++id;
    g[static_cast<size_t>(i)] = id;
  }
  return g;
}

void check_tiles(const ProcessedImage& image, const std::string& what) {
  const Tensor& p = image.pixels;
  VLM_CHECK(p.defined() && p.ndim() == 4 && p.dim(1) == 3 && p.dtype() == DType::kF32 && p.is_contiguous(),
            ErrorKind::kInvalidArgument, "{}: image pixels must be f32 [n_tiles, 3, h, w], got {}{}", what,
            p.defined() ? dtype_name(p.dtype()) : "undefined", p.defined() ? shape_str(p.shape()) : "");
}

Tensor concat_rows(const std::vector<Tensor>& parts, int64_t cols) {
  if (parts.size() == 1) return parts[0];
  const Device device = parts.empty() ? Device::kCpu : parts.front().device();
  int64_t total = 0;
  for (const Tensor& t : parts) total += t.dim(0);
  ops::DeviceScope scope(device);
  Tensor all = ops::empty({total, cols}, DType::kF32, MemCategory::kScratch, device);
  int64_t row = 0;
  for (const Tensor& t : parts) {
    ops::copy(all.data<float>() + row * cols, device, t.data<float>(), t.device(), sizeof(float) * t.numel());
    row += t.dim(0);
  }
  return all;
}

MultimodalPrompt causal_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids, int32_t image_token_id,
                               const std::vector<Tensor>& features, const std::string& what) {
  MultimodalPrompt p;
  p.embeds = embed_and_scatter(lm, ids, image_token_id, features, 1.0f, what, &p.image_tokens);
  p.positions = positions_1d(static_cast<int64_t>(ids.size()), 0);
  return p;
}

void TowerVisionModel::to_device(Device device) {
  if (device == device_) return;
  vision::DeviceMove move;
  tower_->collect(move);
  collect_projector(move);
  move.add_device(device_);
  move.commit(device);
}

}  // namespace vlm::vlm_common
