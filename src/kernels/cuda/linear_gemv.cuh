// The decode GEMV (linear with n < 8 tokens) for dense f32/f16/bf16 and MLX affine 2/3/4/5/6/8-bit
// weights: one kernel launch per token chunk covers every output row of one weight, or of a group of
// weights that read the same x (q/k/v, gate/up) and share a storage format. Implemented in
// linear_gemv.cu; called by linear (linear_dense.cu) and linear_group (linear_group.cu).
#pragma once

#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {

// One member of a GEMV launch: y[n, w->rows()] = x[n, w->cols()] · wᵀ (+ bias[rows], any float dtype,
// when bias is non-null and defined); with accumulate, y += (that sum) instead (ops.h LinearOut).
struct GemvTarget {
  const Weight* w = nullptr;
  const Tensor* bias = nullptr;
  float* y = nullptr;
  bool accumulate = false;
};

// The RMSNorm a dense GEMV launch applies to x on the fly (ops.h LinearOut::norm): every block
// computes x's sum of squares while its first weight loads are in flight, then reads
// x / sqrt(mean(x²) + eps) * (w + offset) — rms_norm's formula and rounding.
struct GemvNorm {
  const void* w = nullptr;  // [cols], 8-byte aligned (4 values per load at 16 bits)
  int kind = 0;             // detail::kF32 / kF16 / kBF16
  float eps = 1e-6f, offset = 0.0f;
};

// Most members one launch takes (the kernel's parameter block holds this many).
inline constexpr int kGemvMaxTargets = 8;

// The output bias of member t for a kernel's parameter block: its device pointer and float kind, or
// null when the member has none. Throws unless it has w->rows() values on the GPU.
struct GemvBias {
  const void* ptr = nullptr;
  int kind = 0;
};
inline GemvBias gemv_bias(const GemvTarget& t) {
  GemvBias b;
  if (t.bias == nullptr || !t.bias->defined()) return b;
  if (t.bias->numel() != t.w->rows())
    detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] bias has " + std::to_string(t.bias->numel()) +
                                                  " values, expected " + std::to_string(t.w->rows()));
  b.ptr = detail::device_ptr(*t.bias, "linear", "bias");
  b.kind = detail::float_kind(*t.bias, "linear", "bias");
  return b;
}

// Whether the GEMV path takes this weight with this x (format, 16-byte alignment of x, vector-width
// multiple of cols).
bool gemv_supported(const float* x, const Weight& w);
// Whether a and b can share one launch: same kind (dense dtype, or bits, group size and scale/bias
// dtypes) and the same cols.
bool gemv_same_format(const Weight& a, const Weight& b);
// Runs the GEMV for count (1..kGemvMaxTargets) members that gemv_supported() takes and that share a
// format (checked by the caller), n in [1, 8) tokens, bias included. norm (dense weights, or 4-bit
// ones gemv_mma_supported() takes; null: x as given) normalizes x inside the kernel.
void gemv_launch(const float* x, int64_t n, const GemvTarget* targets, int count, const GemvNorm* norm = nullptr);

// The 4-bit tensor-core GEMV (linear_gemv_mma.cu), which gemv_launch takes for every 4-bit group it
// supports: group 32/64/128, cols a multiple of 128, 16-byte aligned x and codes, scales and biases
// of one width (2 or 4 bytes) aligned to one round's (128 / group) values. Off (every weight on the
// CUDA-core kernels of linear_gemv.cu) when the environment has VLMCHECK_CUDA_GEMV=legacy, read once:
// the benchmark's before/after switch.
// norm (null: x as given) normalizes x while it is staged, as the dense kernels do; linear_group
// passes it only while gemv_mma_norm_enabled() (VLMCHECK_CUDA_GEMV_NORM=0: off, the fused norm of
// 4-bit weights materialized by an RMSNorm launch as before; read once — the A/B switch).
bool gemv_mma_supported(const float* x, const Weight& w);
bool gemv_mma_norm_enabled();
void gemv_mma_launch(const float* x, int64_t n, const GemvTarget* targets, int count, const GemvNorm* norm = nullptr);
bool gemv_legacy_requested();
// Where a chained GEMV (common.cuh) releases its successor: after its own chain_wait() (the default),
// not first thing. The kernel after a GEMV is then launched once the kernel before the GEMV has
// completed, so the chain runs about one kernel ahead instead of as far as SM room allows. Reason:
// in a decode step the decode attention is followed by o_proj and gate+up; released first thing,
// gate+up's blocks issued their first weight copies while the attention's split merge ran, and that
// merge (one block's instruction fetches and L2 round trips) took ~11 µs instead of ~9 on the 3B
// 4-bit (VLMCHECK_CUDA_DECODE_TIMES stamps). H100, synthetic Qwen2.5-VL-3B 4-bit, 2048-token prompt,
// decode tok/s, first thing vs late, alternating in one call each: 425 / 449 vs 461 / 459, 464 / 453 /
// 462 vs 482 / 482 / 458, 475 / 473 vs 475 / 472; the bf16 3B is unchanged by it.
// VLMCHECK_CUDA_GEMV_RELEASE=early restores the first-thing release (read once).
bool gemv_release_late();
// Whether a dense CUDA-core block GEMV launch issues its first weight round before chain_wait(), by the
// launch's kind: VLMCHECK_CUDA_GEMV_DENSE_EARLY=0 none, 1 all, norm the norm-fused ones (q/k/v, gate+up
// in a decode step), accum the accumulating ones (o_proj and down_proj, which add into the residual; the
// default; read once). H100, synthetic Qwen2.5-VL-3B bf16, 2048-token prompt, decode tok/s, one call, three
// alternating rounds: none 326.7 / 324.1 / 328.8, accum 330.3 / 334.5 / 333.6, norm 310.5 / 312.6 /
// 312.6, all 320.4 / 318.0 / 318.8. Earlier calls measured all against none (324 / 325 vs 330 / 332;
// 322 / 324 vs 327 / 330; 325 / 313 vs 332 / 331; 323 / 326 vs 331 / 330). The norm-fused launches
// follow weight-streaming GEMVs (q/k/v after down_proj, gate+up after o_proj), so their early loads
// compete with them; the accumulating ones follow kernels light on memory traffic (the decode
// attention, gated_activate), which their early loads overlap. The 4-bit tensor-core kernel keeps its
// ring prologue before chain_wait in every launch: without it the 3B 4-bit decode lost ~10 % (421 /
// 414 vs 475 / 471), and ~8 % with it moved after chain_wait for only the accumulating or only the
// norm-fused launches (473 / 468 / 465 vs 426 / 437 / 435 and 421 / 426 / 430).
bool gemv_dense_early(bool norm_fused, bool accumulating);
// VLMCHECK_CUDA_GEMV=mma: every 4-bit launch the tensor-core kernel takes goes to it, also those that
// gemv_launch's rule keeps on the CUDA-core kernel (the tuning switch for that rule).
bool gemv_mma_everywhere();

}  // namespace vlm::ops::cuda::kernels
