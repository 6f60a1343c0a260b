// The scalar reference path: one straightforward implementation of every op in kernels/ops.h,
// always built, f32 accumulation, no intrinsics. It is the truth the SIMD paths are tested against
// (tests/unit/test_kernels_conformance.cpp) and the path VLMCHECK_KERNELS=scalar selects. Arguments
// arrive already validated by kernels/ops.cpp; signatures mirror ops.h.
#pragma once

#include "kernels/ops.h"

namespace vlm::ops::ref {

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y);
void linear_group(const float* x, int64_t n, const LinearOut* outs, int count);
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
void argmax(const float* x, int64_t n, int64_t d, int32_t* ids);
void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out);
void add(float* y, const float* x, int64_t n);
void scale(float* y, float s, int64_t n);
void mul(float* y, const float* x, int64_t n);
void softcap(float* x, int64_t n, float cap);
// ref_kv_quant.cpp: per group core's quantize_affine_group (the one home of MLX's rule).
void kv_quantize(const float* x, int64_t rows, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                 float* biases);
void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out);
// ref_attention_quant.cpp: kv_dequantize of K and V into f32 rows, then attention (the definition).
void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out);

// Scalar activation, shared with the SIMD paths' tails so both agree on the formula.
float activation_value(float x, Activation act);

// True when key position kp is visible from query position qp under `mask` (ops.h semantics).
// The window bounds every key, a same-group key included: transformers' Gemma 3 sliding layers AND the
// window with (causal OR same image block), so a block longer than the window is not fully visible there.
inline bool key_visible(const AttentionMask& mask, int64_t qp, int64_t kp) {
  if (mask.sliding_window > 0 && qp - kp >= mask.sliding_window) return false;
  if (mask.group_of_position != nullptr && qp >= 0 && kp >= 0 && qp < mask.group_positions &&
      kp < mask.group_positions) {
    int32_t g = mask.group_of_position[qp];
    if (g != 0 && g == mask.group_of_position[kp]) return true;
  }
  if (mask.causal && kp > qp) return false;
  return true;
}

}  // namespace vlm::ops::ref
