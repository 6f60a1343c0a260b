// RoPE arithmetic shared by rope.cu (the rope / mrope / rope_qk kernels) and attention_decode.cu (the
// decode attention kernel that rotates q and the new key row itself, ops::attention_with_rope): one
// definition of the angle's rounding and of the rotation, so the fused kernel's rotated values are the
// very bits rope_qk writes. Include after common.cuh.
#pragma once

#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {

// cos/sin of one (token, frequency), scaled: the reference's rounding (f32 angle, double sincos, one
// rounding to f32, then the f32 product with the scaling).
__device__ __forceinline__ float2 rope_cos_sin(int64_t pos, float inv_freq, float scaling) {
  const float angle = static_cast<float>(pos) * inv_freq;
  double s, c;
  sincos(static_cast<double>(angle), &s, &c);
  return make_float2(static_cast<float>(c) * scaling, static_cast<float>(s) * scaling);
}

// The pair (x1, x2) = (x[i], x[i + half]) rotated: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, the
// products rounded separately (no FMA), as the CPU reference.
__device__ __forceinline__ float rope_first(float x1, float x2, float2 cs) {
  return __fsub_rn(__fmul_rn(x1, cs.x), __fmul_rn(x2, cs.y));
}
__device__ __forceinline__ float rope_second(float x1, float x2, float2 cs) {
  return __fadd_rn(__fmul_rn(x2, cs.x), __fmul_rn(x1, cs.y));
}

// The rotation the fused decode attention applies (by value: no staging copy), for one query token:
// inv_freq [half], the token's position per stream (M-RoPE: stream_of[i] picks frequency i's stream;
// plain RoPE: stream 0 everywhere).
constexpr int kRopeMaxHalf = 128;
struct RopeArgs {
  float inv_freq[kRopeMaxHalf];
  int64_t positions[3];
  signed char stream_of[kRopeMaxHalf];
  int half;  // rotary_dim / 2 (the fused kernel rotates whole heads: rotary_dim == head_dim)
  float scaling;
};

}  // namespace vlm::ops::cuda::kernels
