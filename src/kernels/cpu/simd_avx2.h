// AVX2 + FMA + F16C kernels for CPUs without AVX-512 (compiled with function-level target
// attributes). Only linear (and linear_group) and embedding are vectorised here — they are >95% of decode and prefill
// time; every other op runs the scalar reference on this path.
#pragma once

#include "kernels/ops.h"

namespace vlm::ops::cpu::avx2 {

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y);
void linear_group(const float* x, int64_t n, const LinearOut* outs, int count);
void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out);

}  // namespace vlm::ops::cpu::avx2
