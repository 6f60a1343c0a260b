// Helpers shared by the AVX2 kernel files (simd_linear_avx2.cpp, simd_ops_avx2.cpp). Each carries its own
// target attribute, so it compiles for AVX2 wherever it is included; only call it from AVX2 code.
#pragma once

#include <immintrin.h>

namespace vlm::ops::cpu::avx2 {

// The sum and the maximum of the 8 lanes.
__attribute__((target("avx2"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2"))) inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace vlm::ops::cpu::avx2
