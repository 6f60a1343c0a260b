// The MLX affine quantizer (core/quantize.h) checked against core/quant.h's independent
// dequantization and a bit-by-bit reading of the packed rows: exact round trips of matrices that
// are representable, the documented error bound, edge snapping (zero lands on a code), MLX's
// asymmetric extrema (the running max starts at 0), rounding half away from zero, the packing
// layout for every width, scale dtypes, and typed errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "core/quant.h"
#include "core/quantize.h"

using namespace vlm;

namespace {

uint32_t stream_code(const QuantizedMatrix& m, int64_t r, int64_t c) {
  const uint32_t* row = m.packed.data<uint32_t>() + r * m.words_per_row();
  uint32_t q = 0;
  for (int t = 0; t < m.spec.bits; ++t) {
    int64_t p = c * m.spec.bits + t;
    q |= ((row[p / 32] >> (p % 32)) & 1u) << t;
  }
  return q;
}

float stored(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF16: return f16_to_f32(t.data<uint16_t>()[i]);
    case DType::kBF16: return bf16_to_f32(t.data<uint16_t>()[i]);
    default: return t.data<float>()[i];
  }
}

std::vector<float> random_matrix(std::mt19937& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> n(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = n(rng);
  return w;
}

const int kBits[] = {2, 3, 4, 5, 6, 8};
const int kGroups[] = {32, 64, 128};

}  // namespace

// A matrix built as s*q + b with power-of-two s, b = -k*s (so |b| is the larger edge) and every
// group holding codes 0 and 2^bits-1 is reproduced exactly: codes, scales and biases.
TEST(Quantize, RepresentableMatrixRoundTripsExactly) {
  std::mt19937 rng(1);
  for (int bits : kBits)
    for (int group : kGroups) {
      const int64_t rows = 3, cols = 2 * group, groups = cols / group;
      const uint32_t top = (1u << bits) - 1u;
      std::vector<uint32_t> codes(static_cast<size_t>(rows * cols));
      std::vector<float> w(codes.size()), gs(static_cast<size_t>(rows * groups)), gb(gs.size());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
          float s = std::ldexp(1.0f, -static_cast<int>(rng() % 6) - 3);
          int k = static_cast<int>(top / 2 + 1 + rng() % ((top + 1) / 2));  // k in (top/2, top]
          gs[r * groups + g] = s;
          gb[r * groups + g] = -static_cast<float>(k) * s;
          for (int j = 0; j < group; ++j) {
            uint32_t q = j == 0 ? 0u : j == 1 ? top : static_cast<uint32_t>(rng() % (top + 1));
            codes[r * cols + g * group + j] = q;
            w[r * cols + g * group + j] = s * static_cast<float>(q) + gb[r * groups + g];
          }
        }
      QuantizedMatrix m = quantize_affine(w.data(), rows, cols, {bits, group}, DType::kF32);
      m.validate("test");
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c)
          ASSERT_EQ(stream_code(m, r, c), codes[r * cols + c]) << bits << "-bit g" << group << " [" << r << "," << c << "]";
        for (int64_t g = 0; g < groups; ++g) {
          EXPECT_EQ(stored(m.scales, r * groups + g), gs[r * groups + g]);
          EXPECT_EQ(stored(m.biases, r * groups + g), gb[r * groups + g]);
        }
      }
      Tensor deq = dequantize(m);
      for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(deq.data<float>()[i], w[i]);
    }
}

// The mirrored matrix (largest magnitude at the top) comes back with negative scales and
// bias = w_max, still exactly.
TEST(Quantize, MirroredMatrixUsesNegativeScaleAndMaxEdge) {
  const int bits = 4, group = 32;
  std::vector<float> w(group);
  for (int j = 0; j < group; ++j) w[j] = 0.25f * static_cast<float>(12 - (j % 16));  // 3.0 .. -0.75
  QuantizedMatrix m = quantize_affine(w.data(), 1, group, {bits, group}, DType::kF32);
  EXPECT_EQ(stored(m.biases, 0), 3.0f);
  EXPECT_EQ(stored(m.scales, 0), -0.25f);
  Tensor deq = dequantize(m);
  for (int j = 0; j < group; ++j) EXPECT_EQ(deq.data<float>()[j], w[j]) << j;
}

TEST(Quantize, ErrorWithinHalfAScaleAndSnappedEdges) {
  std::mt19937 rng(2);
  for (int bits : kBits)
    for (int group : kGroups) {
      const int64_t rows = 8, cols = 256;
      std::vector<float> w = random_matrix(rng, rows, cols);
      QuantizedMatrix m = quantize_affine(w.data(), rows, cols, {bits, group}, DType::kF32);
      Tensor deq = dequantize(m);
      const float n_bins = static_cast<float>((1 << bits) - 1);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < cols / group; ++g) {
          const float* wg = w.data() + r * cols + g * group;
          float mn = *std::min_element(wg, wg + group), mx = std::max(0.0f, *std::max_element(wg, wg + group));
          float scale = stored(m.scales, r * (cols / group) + g), bias = stored(m.biases, r * (cols / group) + g);
          // Edge snapping: the bias is the larger-magnitude extreme and a whole number of scales from 0.
          float edge = std::fabs(mn) > std::fabs(mx) ? mn : mx;
          EXPECT_EQ(bias, edge) << bits << "/" << group;
          float steps = -bias / scale;
          EXPECT_NEAR(steps, std::round(steps), 1e-3f);
          EXPECT_GE(std::round(steps), 0.0f);
          EXPECT_LE(std::round(steps), n_bins);
          // Zero is (to f32 rounding) a representable value.
          EXPECT_NEAR(scale * std::round(steps) + bias, 0.0f, 4e-7f * std::fabs(bias));
          // Rounding error: half a step, except where snapping pushed the far end of the range past the
          // top code: those values clip to it, with an error of at most one unsnapped step (range / n).
          for (int j = 0; j < group; ++j) {
            float d = deq.data<float>()[r * cols + g * group + j];
            float err = std::fabs(d - wg[j]);
            if ((wg[j] - bias) / scale <= n_bins + 0.5f) {
              ASSERT_LE(err, 0.5f * std::fabs(scale) * (1.0f + 1e-5f) + 1e-7f)
                  << bits << "-bit g" << group << " r" << r << " c" << g * group + j;
            } else {
              ASSERT_EQ(stream_code(m, r, g * group + j), static_cast<uint32_t>(n_bins));
              ASSERT_LE(err, (mx - mn) / n_bins * (1.0f + 1e-5f));
            }
          }
        }
    }
}

// MLX's running max starts at 0 but its running min does not: an all-negative group spans [w_min, 0],
// an all-positive group spans [w_min, w_max] and takes the max as its (negative-scale) edge.
TEST(Quantize, AsymmetricExtremaLikeMlx) {
  const int group = 32, bits = 4;
  std::vector<float> neg(group), pos(group);
  for (int j = 0; j < group; ++j) {
    neg[j] = -2.0f + static_cast<float>(j) / 32.0f;  // [-2, -1.03]
    pos[j] = 1.0f + static_cast<float>(j) / 32.0f;   // [1, 1.97]
  }
  QuantizedMatrix mn = quantize_affine(neg.data(), 1, group, {bits, group}, DType::kF32);
  EXPECT_FLOAT_EQ(stored(mn.scales, 0), 2.0f / 15.0f);  // (0 - (-2)) / 15: the top of the range is 0
  EXPECT_EQ(stored(mn.biases, 0), -2.0f);
  QuantizedMatrix mp = quantize_affine(pos.data(), 1, group, {bits, group}, DType::kF32);
  float s0 = -(1.96875f - 1.0f) / 15.0f;
  float q0 = std::round(1.96875f / s0);
  EXPECT_FLOAT_EQ(stored(mp.scales, 0), 1.96875f / q0);
  EXPECT_EQ(stored(mp.biases, 0), 1.96875f);
}

TEST(Quantize, RoundsHalfAwayFromZero) {
  // Group with edge -1 (bias), scale 1/8 for 4 bits: values 0.5 + even k steps sit exactly halfway.
  const int group = 32;
  std::vector<float> w(group, 0.0f);
  w[0] = -1.0f;                 // edge: q0 = round(-1 / ((0.875+1)/15)) = -8 -> scale 1/8
  w[1] = 0.875f;                // top code 15
  w[2] = -1.0f + 2.5f / 8.0f;   // 2.5 steps -> 3 (nearest-even would give 2)
  w[3] = -1.0f + 4.5f / 8.0f;   // 4.5 steps -> 5
  QuantizedMatrix m = quantize_affine(w.data(), 1, group, {4, group}, DType::kF32);
  ASSERT_EQ(stored(m.scales, 0), 0.125f);
  ASSERT_EQ(stored(m.biases, 0), -1.0f);
  EXPECT_EQ(stream_code(m, 0, 1), 15u);
  EXPECT_EQ(stream_code(m, 0, 2), 3u);
  EXPECT_EQ(stream_code(m, 0, 3), 5u);
  EXPECT_EQ(stream_code(m, 0, 4), 8u);  // exact zero
}

TEST(Quantize, ScaleDtypesFollowInputAndRoundToNearest) {
  std::mt19937 rng(3);
  std::vector<float> w = random_matrix(rng, 4, 128);
  Tensor wt = Tensor::from_f32({4, 128}, w).to(DType::kBF16);
  QuantizedMatrix m = quantize_affine(wt, {4, 64});
  EXPECT_EQ(m.scales.dtype(), DType::kBF16);
  EXPECT_EQ(m.biases.dtype(), DType::kBF16);
  QuantizedMatrix m16 = quantize_affine(wt, {4, 64}, DType::kF16);
  EXPECT_EQ(m16.scales.dtype(), DType::kF16);
  // Codes are computed from the f32 scale/bias; storing in bf16 only rounds those two numbers.
  Tensor w32 = wt.to_f32();
  QuantizedMatrix m32 = quantize_affine(w32, {4, 64}, DType::kF32);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 128; ++c) ASSERT_EQ(stream_code(m, r, c), stream_code(m32, r, c));
  for (int64_t i = 0; i < 8; ++i) {
    EXPECT_EQ(m.scales.data<uint16_t>()[i], f32_to_bf16(stored(m32.scales, i)));
    EXPECT_EQ(m.biases.data<uint16_t>()[i], f32_to_bf16(stored(m32.biases, i)));
  }
  // bf16 storage changes each value by at most the rounding of its scale and bias.
  Tensor deq = dequantize(m), deq32 = dequantize(m32);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 128; ++c) {
      int64_t g = r * 2 + c / 64;
      float bound = (15.0f * std::fabs(stored(m32.scales, g)) + std::fabs(stored(m32.biases, g))) * std::ldexp(1.0f, -8);
      ASSERT_LE(std::fabs(deq.data<float>()[r * 128 + c] - deq32.data<float>()[r * 128 + c]), bound);
    }
}

TEST(Quantize, PackingLayoutMatchesMlx) {
  // 4-bit: element i of a word sits at bits 4i..4i+3; 3-bit: 32 values fill exactly 3 words.
  std::vector<float> w(32);
  for (int j = 0; j < 32; ++j) w[j] = -1.0f + 0.125f * static_cast<float>(j % 16);  // codes j % 16 (4-bit)
  QuantizedMatrix m = quantize_affine(w.data(), 1, 32, {4, 32}, DType::kF32);
  EXPECT_EQ(m.packed.data<uint32_t>()[0], 0x76543210u);
  EXPECT_EQ(m.packed.data<uint32_t>()[1], 0xfedcba98u);
  std::vector<float> w3(32);
  for (int j = 0; j < 32; ++j) w3[j] = -1.75f + 0.25f * static_cast<float>(j % 8);  // codes j % 8
  QuantizedMatrix m3 = quantize_affine(w3.data(), 1, 32, {3, 32}, DType::kF32);
  ASSERT_EQ(m3.packed.dim(1), 3);
  // Codes 0..7 repeated: the 96-bit stream is the 24-bit pattern 0o76543210 four times.
  uint64_t lo = m3.packed.data<uint32_t>()[0] | (static_cast<uint64_t>(m3.packed.data<uint32_t>()[1]) << 32);
  EXPECT_EQ(lo & 0xffffffu, 076543210u);
  EXPECT_EQ((lo >> 24) & 0xffffffu, 076543210u);
  EXPECT_EQ(m3.packed.data<uint32_t>()[2] >> 8, 076543210u);
}

TEST(Quantize, BadInputsThrowTypedErrors) {
  std::vector<float> w(100, 0.5f);
  EXPECT_THROW(quantize_affine(w.data(), 1, 100, {4, 64}, DType::kF32), Error);  // 100 % 64 != 0
  try {
    quantize_affine(w.data(), 1, 64, {7, 64}, DType::kF32);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  }
  w[70] = NAN;
  try {
    quantize_affine(w.data(), 1, 64 + 32, {4, 32}, DType::kF32);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("[0, 70]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_affine(Tensor::from_f32({64}, std::vector<float>(64, 1.0f)), {4, 64}), Error);
}
