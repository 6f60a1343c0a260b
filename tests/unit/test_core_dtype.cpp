// dtype conversions: exhaustive over every f16/bf16 bit pattern, and round-to-nearest-even checked
// against an independent reference computed in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"

using namespace vlm;

namespace {
// Independent reference: decode a half with ldexp (no bit tricks shared with the code under test).
double half_value(uint16_t h) {
  int sign = (h >> 15) ? -1 : 1;
  int exp = (h >> 10) & 0x1f;
  int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + mant, exp - 25);
}
}  // namespace

TEST(DType, F16ToF32MatchesIndependentDecodeForEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    double want = half_value(static_cast<uint16_t>(h));
    float got = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << "pattern " << h;
    }
  }
}

TEST(DType, F16RoundTripIsIdentityForEveryNonNanPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << "pattern " << h;
  }
}

TEST(DType, F32ToF16RoundsToNearestEven) {
  // Every value between two adjacent halves: below the midpoint goes down, above goes up, and the
  // exact midpoint goes to the even mantissa.
  std::mt19937 rng(7);
  for (uint32_t h = 0; h < 0x7bff; ++h) {  // positive finite halves with a finite successor
    double lo = half_value(static_cast<uint16_t>(h)), hi = half_value(static_cast<uint16_t>(h + 1));
    double mid = (lo + hi) / 2;
    float below = static_cast<float>(lo + (mid - lo) * 0.75);
    float above = static_cast<float>(mid + (hi - mid) * 0.25);
    if (static_cast<double>(below) < mid && static_cast<double>(below) > lo) {
      EXPECT_EQ(f32_to_f16(below), h);
    }
    if (static_cast<double>(above) > mid && static_cast<double>(above) < hi) {
      EXPECT_EQ(f32_to_f16(above), h + 1);
    }
    float m = static_cast<float>(mid);
    if (static_cast<double>(m) == mid) {
      EXPECT_EQ(f32_to_f16(m), (h % 2 == 0) ? h : h + 1) << "tie at " << h;
    }
    EXPECT_EQ(f32_to_f16(-static_cast<float>(lo)), h | 0x8000u);
  }
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bffu);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bffu);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00u);  // rounds to infinity
  EXPECT_EQ(f32_to_f16(1e-9f), 0u);           // below half the smallest subnormal
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00u);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
}

TEST(DType, BF16RoundTripAndRounding) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(f32_bits(f), h << 16);
    if (!std::isnan(f)) {
      EXPECT_EQ(f32_to_bf16(f), h);
    }
  }
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80u);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even): goes up.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82u);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81u);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, SafetensorsNames) {
  EXPECT_EQ(dtype_from_safetensors("BF16"), DType::kBF16);
  EXPECT_EQ(dtype_from_safetensors("U32"), DType::kU32);
  EXPECT_FALSE(dtype_from_safetensors("F4").has_value());
  EXPECT_EQ(dtype_size(DType::kU32), 4u);
  EXPECT_EQ(dtype_from_torch_name("bfloat16"), DType::kBF16);
}
