// Vision-tower tensor loading: shape checks, MLX channels-last convolutions, one error for every problem.
#include "models/vision/vision_weights.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "core/error.h"

namespace vlm {

namespace {

bool is_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }
bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

}  // namespace

std::string join_names(const std::vector<std::string>& names, size_t limit) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += fmt::format(", ... ({} more)", names.size() - limit);
  return s;
}

VisionWeights::VisionWeights(const Checkpoint& checkpoint, std::string prefix, std::string what)
    : checkpoint_(checkpoint), prefix_(std::move(prefix)), what_(std::move(what)) {}

bool VisionWeights::has(const std::string& name) const { return checkpoint_.has(prefix_ + name); }

void VisionWeights::allow_unused(const std::string& relative) { allowed_prefixes_.push_back(prefix_ + relative); }

Tensor VisionWeights::fetch(const std::string& name, const Shape& shape, bool required) {
  const std::string full = prefix_ + name;
  if (!checkpoint_.has(full)) {
    if (required) missing_.push_back(full);
    return {};
  }
  used_.push_back(full);
  const TensorInfo& info = checkpoint_.info(full);
  if (!is_float(info.dtype) || info.shape != shape) {
    misshaped_.push_back(fmt::format("{}: expected float{}, got {}{}", full, shape_str(shape), dtype_name(info.dtype),
                                     shape_str(info.shape)));
    return {};
  }
  Tensor t = checkpoint_.get(full);
  bytes_ += t.nbytes();
  return t;
}

Tensor VisionWeights::tensor(const std::string& name, const Shape& shape, bool required) {
  return fetch(name, shape, required);
}

ops::Weight VisionWeights::matrix(const std::string& module, int64_t out, int64_t in) {
  ops::Weight w;
  if (checkpoint_.has(prefix_ + module + ".scales")) {
    // MLX never quantizes vision towers (skip_multimodal_module); a checkpoint that did is outside what the
    // towers support rather than malformed.
    quantized_.push_back(prefix_ + module);
    used_.push_back(prefix_ + module + ".weight");
    used_.push_back(prefix_ + module + ".scales");
    used_.push_back(prefix_ + module + ".biases");
    return w;
  }
  w.dense = fetch(module + ".weight", {out, in}, true);
  return w;
}

ops::Weight VisionWeights::conv(const std::string& module, int64_t out, int64_t in_ch, int64_t t, int64_t p) {
  ops::Weight w;
  const std::string full = prefix_ + module + ".weight";
  if (!checkpoint_.has(full)) {
    missing_.push_back(full);
    return w;
  }
  used_.push_back(full);
  const TensorInfo& info = checkpoint_.info(full);
  // PyTorch: [O, I, (T,) P, P]; MLX: [O, (T,) P, P, I]. They only coincide when P == I and T == I, which no
  // vision tower has; PyTorch order is checked first.
  Shape torch_shape = t == 1 ? Shape{out, in_ch, p, p} : Shape{out, in_ch, t, p, p};
  Shape mlx_shape = t == 1 ? Shape{out, p, p, in_ch} : Shape{out, t, p, p, in_ch};
  if (!is_float(info.dtype) || (info.shape != torch_shape && info.shape != mlx_shape)) {
    misshaped_.push_back(fmt::format("{}: expected float{} (PyTorch) or float{} (MLX channels-last), got {}{}", full,
                                     shape_str(torch_shape), shape_str(mlx_shape), dtype_name(info.dtype),
                                     shape_str(info.shape)));
    return w;
  }
  const int64_t k = in_ch * t * p * p;
  Tensor stored = checkpoint_.get(full);
  if (info.shape == torch_shape) {
    w.dense = stored.reshape({out, k});
  } else {
    // Channels-last -> (c, t, y, x) per filter, element bytes copied as stored (no dtype conversion). Runs once at
    // load, so plain loops.
    const size_t es = dtype_size(info.dtype);
    const int64_t spatial = t * p * p;  // (t, y, x) positions per channel
    Tensor dst = Tensor::empty({out, k}, info.dtype, MemCategory::kWeights);
    const auto* src = static_cast<const uint8_t*>(stored.raw());
    auto* d = static_cast<uint8_t*>(dst.raw());
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t s = 0; s < spatial; ++s) {
        for (int64_t c = 0; c < in_ch; ++c) {
          std::memcpy(d + static_cast<size_t>(o * k + c * spatial + s) * es,
                      src + static_cast<size_t>(o * k + s * in_ch + c) * es, es);
        }
      }
    }
    w.dense = dst;
  }
  bytes_ += w.dense.nbytes();
  return w;
}

void VisionWeights::finish() {
  if (!quantized_.empty()) {
    throw_error(ErrorKind::kUnsupported, "{}: quantized vision weights are not supported (modules with .scales: {})",
                what_, join_names(quantized_));
  }
  std::set<std::string> used(used_.begin(), used_.end());
  std::vector<std::string> unused;
  for (const std::string& n : checkpoint_.names()) {
    if (!starts_with(n, prefix_) || used.count(n)) continue;
    bool allowed = std::any_of(allowed_prefixes_.begin(), allowed_prefixes_.end(),
                               [&](const std::string& a) { return starts_with(n, a); });
    if (!allowed) unused.push_back(n);
  }
  if (missing_.empty() && misshaped_.empty() && unused.empty()) return;
  std::string msg = fmt::format("{}: checkpoint does not match the vision tower (prefix '{}')", what_, prefix_);
  if (!missing_.empty()) msg += "; missing: " + join_names(missing_);
  if (!misshaped_.empty()) msg += "; mis-shaped: " + join_names(misshaped_);
  if (!unused.empty()) msg += "; unused: " + join_names(unused);
  throw Error(ErrorKind::kFormat, msg);
}

}  // namespace vlm
