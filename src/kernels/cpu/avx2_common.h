// Helpers shared by the AVX2 kernel files (simd_linear_avx2.cpp, simd_ops_avx2.cpp). Each carries its own
// target attribute, so it compiles for AVX2 wherever it is included; only call it from AVX2 code.
#pragma once

#include <immintrin.h>

#include <cstdint>

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

// 16 MLX-packed B-bit codes (a little-endian bit stream, code i at bit B·i) as u16 lanes. 8-bit codes
// widen with one vpmovzxbw. Narrower codes straddle bytes: codes 8h..8h+7 are the B bytes at offset B·h,
// so one 16-byte broadcast feeds both 128-bit lanes; vpshufb puts the two bytes holding code i into
// 16-bit lane i, vpmullw by 2^(16 − s − B) (s: the code's bit offset in those bytes) moves the code to the
// top and a shift by 16 − B brings it down, with no mask. Reads 16 bytes from src (2B are the codes).
template <int B>
struct Unpack16 {
  static_assert(B >= 2 && B <= 8);
  __m256i shuf, mul;
  __attribute__((target("avx2"))) Unpack16() {
    alignas(32) uint8_t sh[32];
    alignas(32) uint16_t mu[16];
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 8; ++i) {
        const int byte = B * h + B * i / 8, s = B * i % 8;
        sh[16 * h + 2 * i] = static_cast<uint8_t>(byte);
        sh[16 * h + 2 * i + 1] = static_cast<uint8_t>((byte + 1) & 15);  // B = 8 only: a byte the shift drops
        mu[8 * h + i] = static_cast<uint16_t>(1u << (16 - s - B));
      }
    shuf = _mm256_load_si256(reinterpret_cast<const __m256i*>(sh));
    mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(mu));
  }
};

template <int B>
__attribute__((target("avx2"))) inline __m256i codes16(const uint8_t* src, const Unpack16<B>& u) {
  if constexpr (B == 8) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  } else {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    return _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(v, u.shuf), u.mul), 16 - B);
  }
}

}  // namespace vlm::ops::cpu::avx2
