// The dense prefill GEMM's group entry (linear_dense.cu), for linear_group.cu: several linears of one
// input share one rounding of x to bf16/f16 instead of one per member (q/k/v: 3, gate/up: 2).
#pragma once

#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {

// Prefill (n >= 8) of the members of outs[0, count) that have dense bf16 or f16 weights (of the first
// such member's dtype and input width, 16-byte aligned weight and output, rows a multiple of 4): x
// [n, in] f32 rounded to that dtype once, then one cuBLASLt GEMM per member, bias in the epilogue where
// cuBLASLt takes it. done[i] says whether member i ran; the caller runs the others (quantized, f32, or
// refused by cuBLASLt) itself. Does nothing unless at least two members qualify.
void dense_group_cublaslt(const float* x, int64_t n, const LinearOut* outs, int count, bool* done);

// The fused forms of a prefill group (ops.h LinearOut: norm, accumulate) when every member is a dense
// bf16/f16 weight of one dtype and input width (aligned as above; at most 8 members): the input is
// rounded to that dtype once — rms_norm's values rounded by the norm kernel itself (no f32 copy of the
// normalized x, no separate conversion pass) — and an accumulating member adds into y in cuBLASLt's
// epilogue (beta = 1: no temporary, no add pass). The same values as the materialized composition up to
// the order of y + x·Wᵀ + bias. False (nothing launched) when it does not apply: neither norm nor
// accumulate, n < 8, or a member it does not take.
bool dense_group_fused(const float* x, int64_t n, const LinearOut* outs, int count, const LinearNorm* norm);

// rms_norm (norms.cu) with y rounded to nearest even into the 16-bit `kind` (bf16/f16): the same f32
// values as rms_norm (same kernel and block size), then one rounding. y [n, d] of that dtype.
void rms_norm_rounded(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, void* y,
                      int kind);

}  // namespace vlm::ops::cuda::kernels
