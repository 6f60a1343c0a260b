// AVX2 + FMA + F16C kernels for CPUs without AVX-512 (compiled with function-level target
// attributes): linear (and linear_group) and embedding (simd_linear_avx2.cpp), and the per-token
// non-matrix ops a decoder runs — norms, activations, softmax, attention, elementwise helpers — plus
// LayerNorm and KV-cache dequantization (simd_ops_avx2.cpp). RoPE and KV-cache quantization run the scalar
// reference.
#pragma once

#include "kernels/ops.h"

namespace vlm::ops::cpu::avx2 {

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y);
void linear_group(const float* x, int64_t n, const LinearOut* outs, int count);
void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out);
void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y);
void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y);
void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y);
void activate(float* x, int64_t n, Activation act);
void gated_activate(float* gate, const float* up, int64_t n, Activation act);
void softmax(float* x, int64_t n, int64_t d);
void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out);
void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out);
void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out);
void add(float* y, const float* x, int64_t n);
void scale(float* y, float s, int64_t n);
void mul(float* y, const float* x, int64_t n);
void softcap(float* x, int64_t n, float cap);

}  // namespace vlm::ops::cpu::avx2
