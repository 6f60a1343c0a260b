// MLX affine quantizer: turns a dense [rows, cols] matrix into the QuantizedMatrix layout that
// mlx-community checkpoints store (core/quant.h), with MLX's exact per-group arithmetic (the Metal /
// CUDA affine_quantize kernels, mlx 0.2x-0.3x), so fixtures and tools made here load like real
// mlx-vlm conversions. Per group of `group_size` consecutive inputs, in f32:
//   w_max = max(0, max(w))          (the running max starts at 0)
//   w_min = min(w)                  (the running min starts at +max, i.e. is NOT clamped at 0)
//   scale = max((w_max - w_min) / (2^bits - 1), 1e-7)
//   edge  = w_min if |w_min| > |w_max| else w_max; scale is negated when the edge is w_max
//   q0    = round(edge / scale); if q0 != 0: scale = edge / q0, bias = edge; else bias = 0
//   q     = min(round((w - bias) / scale), 2^bits - 1)     (round = half away from zero)
// q uses the f32 scale/bias; the stored scales/biases are those rounded to `scale_dtype` (RNE).
// The snapping makes 0 land on a code when the group spans zero; about half the scales are negative.
// Error: |w - deq| <= |scale| / 2, except that snapping can shrink |scale| so the far end of the range
// lies past the top code; those values clip to it (error up to one unsnapped step, range / (2^bits-1)).
// Source read: ml-explore/mlx mlx/backend/metal/kernels/quantized.h `affine_quantize` (float math;
// note w_min is not clamped to <= 0, only w_max to >= 0).
#pragma once

#include <optional>

#include "core/quant.h"
#include "core/tensor.h"

namespace vlm {

// w: [rows, cols] f32/f16/bf16, contiguous; cols must be a multiple of spec.group_size (MLX's
// quantize_model skips such layers instead; callers decide). Scales and biases are written in
// `scale_dtype` (default: w's dtype, as MLX does). Throws Error(kInvalidArgument) on bad shapes or
// non-finite values (naming the position), Error(kUnsupported) on an unsupported spec.
QuantizedMatrix quantize_affine(const Tensor& w, AffineQuantSpec spec, std::optional<DType> scale_dtype = std::nullopt,
                                MemCategory category = MemCategory::kWeights);

// The same on raw f32 rows (tools, KV-cache quantization).
QuantizedMatrix quantize_affine(const float* w, int64_t rows, int64_t cols, AffineQuantSpec spec, DType scale_dtype,
                                MemCategory category = MemCategory::kWeights);

// One group: quantizes w[0, group) into codes q[0, group), returns the f32 scale and bias (before any
// rounding to a storage dtype). Exposed for the KV cache and for tests.
struct AffineGroupParams {
  float scale = 0.0f;
  float bias = 0.0f;
};
AffineGroupParams quantize_affine_group(const float* w, int group, int bits, uint32_t* q);

}  // namespace vlm
