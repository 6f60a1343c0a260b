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

}  // namespace vlm::ops::cuda::kernels
