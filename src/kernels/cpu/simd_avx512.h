// AVX-512 kernels of the CPU backend (compiled with function-level target attributes, so the rest
// of the binary stays baseline x86-64; only called after cpu_kernel_path() saw AVX-512F/BW/VL/DQ).
// Signatures mirror kernels/ops.h; arguments arrive validated by kernels/ops.cpp.
#pragma once

#include "kernels/ops.h"

namespace vlm::ops::cpu::avx512 {

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y);
void linear_group(const float* x, int64_t n, const LinearOut* outs, int count);
// Quantized GEMV (n < 16 tokens) on AVX512-VNNI with 16-bit fixed-point activations
// (simd_quant_vnni.cpp; 3/5/6-bit also need AVX512-VBMI): y[i] = x · w[i]ᵀ + bias[i] for `count`
// weights of one layout (bits, group size, cols), all in one thread-pool round per token; bias[i] is
// f32 [rows] or null. Returns false (doing nothing) when the CPU lacks them.
bool quant_gemv_vnni(const float* x, int64_t n, const Weight* const* w, const float* const* bias, float* const* y,
                     int count);
void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out);
void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y);
void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y);
void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y);
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling);
// stream_of[i] (0 = temporal, 1 = height, 2 = width) picks the position row of frequency i.
void mrope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
           const int64_t* positions3, const int* stream_of, float attention_scaling);
void activate(float* x, int64_t n, Activation act);
void gated_activate(float* gate, const float* up, int64_t n, Activation act);
void softmax(float* x, int64_t n, int64_t d);
void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out);
// kv_dequantize bit for bit (w = scale * q + bias, product rounded), 16 values per step.
void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out);
// Exactly this path's kv_dequantize + attention; decode and masked prefill dequantize each K/V chunk
// of one head in L1 inside the attention kernel instead of writing f32 rows of the whole cache.
void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out);
void add(float* y, const float* x, int64_t n);
void scale(float* y, float s, int64_t n);
void mul(float* y, const float* x, int64_t n);
void softcap(float* x, int64_t n, float cap);

}  // namespace vlm::ops::cpu::avx512
