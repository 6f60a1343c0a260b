// Tensor-table resolution: canonical HF names -> checkpoint names, dense-vs-quantized per module, and one
// error listing everything that does not match the table.
#include "models/layers/tensor_table.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "core/error.h"

namespace vlm {

namespace {

// Text-decoder prefixes in the order they are tried: the VLM layouts first, so that a VLM checkpoint
// whose vision tower also sits under "model." resolves to its language part.
struct LayoutCandidate {
  const char* decoder;
  std::vector<const char*> heads;
};
const std::vector<LayoutCandidate>& layout_candidates() {
  static const std::vector<LayoutCandidate> k = {
      {"language_model.model.", {"language_model.lm_head.", "lm_head."}},  // LLaVA/Gemma 3/PaliGemma, mlx-vlm
      {"model.language_model.", {"lm_head.", "model.lm_head."}},           // transformers 5 VLMs
      {"model.text_model.", {"lm_head.", "model.lm_head."}},               // Idefics3 / SmolVLM
      {"language_model.", {"language_model.lm_head.", "lm_head."}},
      {"text_model.", {"lm_head."}},
      {"model.", {"lm_head."}},  // HF text models, mlx-lm
  };
  return k;
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
bool is_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

std::string join(const std::vector<std::string>& v, size_t limit = 40) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < limit; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > limit) s += fmt::format(", ... ({} more)", v.size() - limit);
  return s;
}

}  // namespace

ops::Weight quantized_weight(const Checkpoint& checkpoint, const std::string& base, const AffineQuantSpec& spec,
                             int64_t out, int64_t in) {
  ops::Weight w;
  w.quantized = true;
  w.quant.packed = checkpoint.get(base + ".weight");
  w.quant.scales = checkpoint.get(base + ".scales");
  w.quant.biases = checkpoint.get(base + ".biases");
  w.quant.spec = spec;
  w.quant.rows = out;
  w.quant.cols = in;
  w.quant.validate(base.c_str());
  return w;
}

std::string DecoderLayout::actual(const std::string& canonical) const {
  if (starts_with(canonical, "model.")) return decoder_prefix + canonical.substr(6);
  if (canonical == "lm_head") return head_prefix.substr(0, head_prefix.size() - 1);
  if (starts_with(canonical, "lm_head.")) return head_prefix + canonical.substr(8);
  return canonical;
}

DecoderLayout DecoderLayout::detect(const Checkpoint& checkpoint) {
  std::string tried;
  for (const auto& c : layout_candidates()) {
    std::string embed = std::string(c.decoder) + "embed_tokens.weight";
    if (!checkpoint.has(embed)) {
      tried += (tried.empty() ? "" : ", ") + embed;
      continue;
    }
    DecoderLayout layout;
    layout.decoder_prefix = c.decoder;
    layout.head_prefix = c.heads.front();
    for (const char* h : c.heads) {
      if (checkpoint.has(std::string(h) + "weight")) {
        layout.head_prefix = h;
        break;
      }
    }
    return layout;
  }
  throw_error(ErrorKind::kNotFound, "{}: no text-decoder embedding found (tried {})", checkpoint.folder(), tried);
}

TensorTable::TensorTable(const Checkpoint& checkpoint, const QuantizationConfig& quantization, DecoderLayout layout,
                         std::string family)
    : checkpoint_(checkpoint), quantization_(quantization), layout_(std::move(layout)), family_(std::move(family)) {}

void TensorTable::matrix(const std::string& module, int64_t out, int64_t in, bool required, bool with_bias,
                         bool bias_required) {
  entries_.push_back({module, true, {out, in}, required});
  if (with_bias) entries_.push_back({module + ".bias", false, {out}, required && bias_required});
}

void TensorTable::vector(const std::string& name, int64_t n, bool required) {
  entries_.push_back({name, false, {n}, required});
}

void TensorTable::resolve_matrix(const Entry& e) {
  const std::string base = layout_.actual(e.canonical);
  const std::string wname = base + ".weight";
  if (!checkpoint_.has(wname)) {
    if (e.required) missing_.push_back(wname);
    return;
  }
  const int64_t out = e.shape[0], in = e.shape[1];
  const TensorInfo& info = checkpoint_.info(wname);
  used_.push_back(wname);
  ops::Weight w;
  if (checkpoint_.has(base + ".scales")) {
    // MLX affine: decided by the presence of scales; bits and group size from the config (per-module
    // override first), checked against the stored shapes.
    used_.push_back(base + ".scales");
    std::optional<AffineQuantSpec> spec = quantization_.spec_for(base);
    if (!spec) {
      misshaped_.push_back(fmt::format("{}: has .scales but the config's quantization marks it unquantized", base));
      return;
    }
    const TensorInfo& sinfo = checkpoint_.info(base + ".scales");
    if (!checkpoint_.has(base + ".biases")) {
      missing_.push_back(base + ".biases");
      return;
    }
    used_.push_back(base + ".biases");
    Shape want_packed = {out, in * spec->bits / 32};
    Shape want_scales = {out, in / spec->group_size};
    if (info.dtype != DType::kU32 || info.shape != want_packed) {
      misshaped_.push_back(fmt::format("{}: expected u32{} for {}-bit quantization of [{}, {}], got {}{}", wname,
                                       shape_str(want_packed), spec->bits, out, in, dtype_name(info.dtype),
                                       shape_str(info.shape)));
      return;
    }
    if (sinfo.shape != want_scales || !is_float(sinfo.dtype)) {
      misshaped_.push_back(fmt::format("{}.scales: expected float{} (group size {}), got {}{}", base,
                                       shape_str(want_scales), spec->group_size, dtype_name(sinfo.dtype),
                                       shape_str(sinfo.shape)));
      return;
    }
    w = quantized_weight(checkpoint_, base, *spec, out, in);
  } else {
    if (!is_float(info.dtype) || info.shape != Shape{out, in}) {
      misshaped_.push_back(fmt::format("{}: expected float[{}, {}], got {}{}", wname, out, in,
                                       dtype_name(info.dtype), shape_str(info.shape)));
      return;
    }
    w.dense = checkpoint_.get(wname);
  }
  weights_[e.canonical] = std::move(w);
}

void TensorTable::resolve_vector(const Entry& e) {
  const std::string name = layout_.actual(e.canonical);
  if (!checkpoint_.has(name)) {
    if (e.required) missing_.push_back(name);
    return;
  }
  const TensorInfo& info = checkpoint_.info(name);
  used_.push_back(name);
  if (!is_float(info.dtype) || info.shape != e.shape) {
    misshaped_.push_back(fmt::format("{}: expected float{}, got {}{}", name, shape_str(e.shape),
                                     dtype_name(info.dtype), shape_str(info.shape)));
    return;
  }
  tensors_[e.canonical] = checkpoint_.get(name);
}

void TensorTable::resolve() {
  for (const Entry& e : entries_) {
    if (e.is_matrix) {
      resolve_matrix(e);
    } else {
      resolve_vector(e);
    }
  }
  // Unused: anything under the decoder's layers/embedding/final norm, or the head, that no entry took.
  std::set<std::string> used(used_.begin(), used_.end());
  std::vector<std::string> unused;
  const std::string& p = layout_.decoder_prefix;
  for (const std::string& n : checkpoint_.names()) {
    bool ours = starts_with(n, p + "layers.") || starts_with(n, p + "embed_tokens.") || starts_with(n, p + "norm.") ||
                starts_with(n, layout_.head_prefix);
    if (!ours || used.count(n) || ends_with(n, "rotary_emb.inv_freq")) continue;
    unused.push_back(n);
  }
  if (missing_.empty() && misshaped_.empty() && unused.empty()) return;
  std::string msg = fmt::format("{}: checkpoint does not match the {} tensor table (decoder prefix '{}')",
                                checkpoint_.folder(), family_, layout_.decoder_prefix);
  if (!missing_.empty()) msg += "; missing: " + join(missing_);
  if (!misshaped_.empty()) msg += "; mis-shaped: " + join(misshaped_);
  if (!unused.empty()) msg += "; unused: " + join(unused);
  throw Error(ErrorKind::kFormat, msg);
}

bool TensorTable::has(const std::string& canonical) const {
  return weights_.count(canonical) > 0 || tensors_.count(canonical) > 0;
}

const ops::Weight& TensorTable::weight(const std::string& module) const {
  auto it = weights_.find(module);
  if (it == weights_.end()) throw_error(ErrorKind::kInternal, "{}: weight '{}' was not resolved", family_, module);
  return it->second;
}

Tensor TensorTable::bias(const std::string& module) const { return tensor(module + ".bias"); }

Tensor TensorTable::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? Tensor() : it->second;
}

size_t TensorTable::weight_bytes() const {
  size_t n = 0;
  for (const auto& [_, w] : weights_) n += w.nbytes();
  for (const auto& [_, t] : tensors_) n += t.nbytes();
  return n;
}

void TensorTable::to_device(Device device, const std::set<std::string>& stay) {
  if (device == device_) return;
  // All copies are made before any entry changes, so a failed upload (out of device memory) leaves the
  // table whole on its old device.
  std::vector<ops::Weight> weights;
  std::vector<Tensor> tensors;
  weights.reserve(weights_.size());
  tensors.reserve(tensors_.size());
  for (const auto& [name, w] : weights_) weights.push_back(stay.count(name) ? w : ops::to_device(w, device));
  for (const auto& [name, t] : tensors_)
    tensors.push_back(stay.count(name) ? t : ops::to_device(t, device, MemCategory::kWeights));
  size_t i = 0;
  for (auto& [_, w] : weights_) w = std::move(weights[i++]);
  i = 0;
  for (auto& [_, t] : tensors_) t = std::move(tensors[i++]);
  device_ = device;
}

}  // namespace vlm
