// The CPU backend's dispatch table: one function pointer per op. The reference table is always
// complete; a SIMD table fills the ops it accelerates and leaves the rest null (the dispatcher then
// falls back to the reference). Which table runs is decided by cpu_kernel_path().
#pragma once

#include "kernels/ops.h"

namespace vlm::ops::cpu {

struct KernelTable {
  void (*linear)(const float*, int64_t, const Weight&, const Tensor&, float*) = nullptr;
  void (*linear_group)(const float*, int64_t, const LinearOut*, int) = nullptr;
  void (*embedding)(const Weight&, const int32_t*, int64_t, float, float*) = nullptr;
  void (*rms_norm)(const float*, int64_t, int64_t, const Tensor&, float, float, float*) = nullptr;
  void (*add_rms_norm)(float*, const float*, int64_t, int64_t, const Tensor&, float, float, float*) = nullptr;
  void (*layer_norm)(const float*, int64_t, int64_t, const Tensor&, const Tensor&, float, float*) = nullptr;
  void (*rope)(float*, int64_t, int64_t, int64_t, int64_t, const float*, const int64_t*, float) = nullptr;
  // M-RoPE with the position stream (0 = t, 1 = h, 2 = w) of every frequency given explicitly
  // (stream_of: [head_dim / 2]); ops.cpp derives it for the chunked and the interleaved layouts.
  void (*mrope)(float*, int64_t, int64_t, int64_t, const float*, const int64_t*, const int*, float) = nullptr;
  void (*activate)(float*, int64_t, Activation) = nullptr;
  void (*gated_activate)(float*, const float*, int64_t, Activation) = nullptr;
  void (*softmax)(float*, int64_t, int64_t) = nullptr;
  void (*argmax)(const float*, int64_t, int64_t, int32_t*) = nullptr;
  void (*sample)(const float*, int64_t, const SamplingSpec&, const int32_t*, int64_t, double, int32_t*) = nullptr;
  void (*attention)(const float*, int64_t, int64_t, const float*, const float*, const int64_t*, int64_t, int64_t,
                    int64_t, int64_t, float, float, const AttentionMask&, float*) = nullptr;
  void (*add)(float*, const float*, int64_t) = nullptr;
  void (*scale)(float*, float, int64_t) = nullptr;
  void (*mul)(float*, const float*, int64_t) = nullptr;
  void (*softcap)(float*, int64_t, float) = nullptr;
  void (*kv_quantize)(const float*, int64_t, int64_t, int, int, uint32_t*, float*, float*) = nullptr;
  void (*kv_dequantize)(const uint32_t*, const float*, const float*, int64_t, int64_t, int, int, float*) = nullptr;
  void (*attention_quantized)(const float*, int64_t, int64_t, const QuantizedKV&, const int64_t*, int64_t, int64_t,
                              int64_t, int64_t, float, float, const AttentionMask&, float*) = nullptr;
};

// Names of every op in KernelTable, in member order. The static_assert ties the list to the struct,
// so a new op cannot be added without naming it here — and the conformance test
// (tests/unit/test_kernels_conformance.cpp) fails for any name it has no case for.
inline constexpr const char* kKernelOps[] = {"linear",    "linear_group", "embedding",      "rms_norm",
                                             "add_rms_norm",               "layer_norm",     "rope",
                                             "mrope",     "activate",     "gated_activate", "softmax",
                                             "argmax",    "sample",
                                             "attention", "add",          "scale",          "mul",
                                             "softcap",
                                             "kv_quantize", "kv_dequantize", "attention_quantized"};
static_assert(sizeof(KernelTable) == sizeof(kKernelOps) / sizeof(kKernelOps[0]) * sizeof(void (*)()),
              "every KernelTable member needs a name in kKernelOps");

// The AVX-512 table (null entries fall back to the reference); only called when the CPU has
// AVX-512F/BW/VL/DQ. `bf16` says whether AVX512_BF16 is usable too.
const KernelTable& avx512_table(bool bf16);
// The AVX2+FMA+F16C table, for CPUs without AVX-512.
const KernelTable& avx2_table();

}  // namespace vlm::ops::cpu
