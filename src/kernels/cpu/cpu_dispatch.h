// The CPU backend's dispatch table: one function pointer per op. The reference table is always
// complete; a SIMD table fills the ops it accelerates and leaves the rest null (the dispatcher then
// falls back to the reference). Which table runs is decided by cpu_kernel_path().
#pragma once

#include "kernels/ops.h"

namespace vlm::ops::cpu {

struct KernelTable {
  void (*linear)(const float*, int64_t, const Weight&, const Tensor&, float*) = nullptr;
  void (*embedding)(const Weight&, const int32_t*, int64_t, float, float*) = nullptr;
  void (*rms_norm)(const float*, int64_t, int64_t, const Tensor&, float, float, float*) = nullptr;
  void (*layer_norm)(const float*, int64_t, int64_t, const Tensor&, const Tensor&, float, float*) = nullptr;
  void (*rope)(float*, int64_t, int64_t, int64_t, int64_t, const float*, const int64_t*, float) = nullptr;
  void (*mrope)(float*, int64_t, int64_t, int64_t, const float*, const int64_t*, const std::vector<int>&,
                float) = nullptr;
  void (*activate)(float*, int64_t, Activation) = nullptr;
  void (*gated_activate)(float*, const float*, int64_t, Activation) = nullptr;
  void (*softmax)(float*, int64_t, int64_t) = nullptr;
  void (*attention)(const float*, int64_t, int64_t, const float*, const float*, const int64_t*, int64_t, int64_t,
                    int64_t, int64_t, float, float, const AttentionMask&, float*) = nullptr;
  void (*add)(float*, const float*, int64_t) = nullptr;
  void (*scale)(float*, float, int64_t) = nullptr;
  void (*mul)(float*, const float*, int64_t) = nullptr;
  void (*softcap)(float*, int64_t, float) = nullptr;
};

// The AVX-512 table (null entries fall back to the reference); only called when the CPU has
// AVX-512F/BW/VL/DQ. `bf16` says whether AVX512_BF16 is usable too.
const KernelTable& avx512_table(bool bf16);
// The AVX2+FMA+F16C table, for CPUs without AVX-512.
const KernelTable& avx2_table();

}  // namespace vlm::ops::cpu
