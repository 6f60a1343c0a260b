// Tensor loading for the vision towers: every tensor a tower reads is requested by its name relative to the
// tower's checkpoint prefix with the shape the config implies; problems are collected instead of thrown one at a
// time, so finish() can name every missing, mis-shaped and unused tensor in one Error(kFormat) — the same contract
// as the text decoder's TensorTable, which is decoder-specific (its layouts rename "model.*") and so not reused.
//
// Patch-embedding convolutions come in two layouts: PyTorch [O, I, (T,) P, P] and MLX channels-last
// [O, (T,) P, P, I]. Both are returned as one dense matrix [O, I*(T*)P*P] in PyTorch's flattening order, so the
// convolution is a single ops::linear over patches flattened as (channel, t, y, x): a borrowed view for PyTorch
// layout, a permuted copy in the stored dtype for MLX layout. Weights otherwise stay borrowed in their stored
// dtype (f32/f16/bf16); an MLX-quantized module (`<module>.scales`) is Error(kUnsupported).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "kernels/ops.h"

namespace vlm {

class VisionWeights {
 public:
  // `what` names the tower in messages (e.g. "<folder>: vision tower (siglip_vision_model)").
  VisionWeights(const Checkpoint& checkpoint, std::string prefix, std::string what);

  // "<module>.weight" [out, in] (+ "<module>.bias" [out] when `bias`). Returns an empty Weight when missing or
  // mis-shaped (recorded for finish()).
  ops::Weight matrix(const std::string& module, int64_t out, int64_t in);
  // A float tensor of exactly `shape`; undefined Tensor when missing (recorded unless !required) or mis-shaped.
  Tensor tensor(const std::string& name, const Shape& shape, bool required = true);
  // A patch-embedding convolution "<module>.weight" for `in_ch` channels, `t` frames (1 = Conv2d, stored 4-D),
  // `p`×`p` kernel, `out` filters, as [out, in_ch*t*p*p] in PyTorch's (c, t, y, x) order.
  ops::Weight conv(const std::string& module, int64_t out, int64_t in_ch, int64_t t, int64_t p);

  bool has(const std::string& name) const;  // relative name exists in the checkpoint
  // Tensors under `prefix + relative` are known and deliberately not loaded (CLIP layers past the selected one,
  // SigLIP's pooling head, unused post_layernorm): they do not count as unused.
  void allow_unused(const std::string& relative);
  // Throws one Error naming every problem: kUnsupported for quantized modules, else kFormat for missing /
  // mis-shaped / non-float / unused tensors.
  void finish();

  size_t bytes() const { return bytes_; }  // bytes of the tensors loaded (stored dtype; MLX conv copies included)
  const std::string& prefix() const { return prefix_; }

 private:
  Tensor fetch(const std::string& name, const Shape& shape, bool required);

  const Checkpoint& checkpoint_;
  std::string prefix_, what_;
  std::vector<std::string> used_, allowed_prefixes_;
  std::vector<std::string> missing_, misshaped_, quantized_;
  size_t bytes_ = 0;
};

// "<a, b, ...>" list for messages, truncated after `limit` entries.
std::string join_names(const std::vector<std::string>& names, size_t limit = 40);

}  // namespace vlm
