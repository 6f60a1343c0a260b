// Shared by the kernel tests: random inputs (never all zeros), dense and MLX-quantized random weights
// built without the code under test, an independent double-precision reading of both, and NMSE.
#pragma once

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "kernels/ops.h"

namespace vlm::test {

inline std::vector<float> random_vec(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// A float tensor of `dtype` holding values drawn uniformly from [lo, hi) (rounded to dtype).
inline Tensor random_tensor(std::mt19937& rng, const Shape& shape, DType dtype, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v = random_vec(rng, static_cast<size_t>(shape_numel(shape)), lo, hi);
  return Tensor::from_f32(shape, v).to(dtype);
}

// Value i of a float tensor as double (decoded independently of the kernels' loaders).
inline double value_at(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF16: return f16_to_f32(t.data<uint16_t>()[i]);
    case DType::kBF16: return f32_from_bits(uint32_t{t.data<uint16_t>()[i]} << 16);
    default: return t.data<float>()[i];
  }
}

// Element i of a packed MLX row read bit by bit from the little-endian stream (for 2/4/8 bits the
// per-word layout is the same stream), independent of core/quant.h's unpack_affine.
inline uint32_t stream_bits(const uint32_t* row, int64_t i, int bits) {
  uint32_t q = 0;
  for (int t = 0; t < bits; ++t) {
    int64_t p = i * bits + t;
    q |= ((row[p / 32] >> (p % 32)) & 1u) << t;
  }
  return q;
}

// A random MLX-layout quantized matrix: random codes, random scales (both signs) and biases.
inline ops::Weight random_quantized(std::mt19937& rng, int64_t rows, int64_t cols, int bits, int group,
                                    DType scale_dtype) {
  ops::Weight w;
  w.quantized = true;
  QuantizedMatrix& m = w.quant;
  m.rows = rows;
  m.cols = cols;
  m.spec = {bits, group};
  m.packed = Tensor::empty({rows, cols * bits / 32}, DType::kU32);
  std::uniform_int_distribution<uint32_t> word;
  for (int64_t i = 0; i < m.packed.numel(); ++i) m.packed.data<uint32_t>()[i] = word(rng);
  m.scales = random_tensor(rng, {rows, cols / group}, scale_dtype, -0.05f, 0.05f);
  m.biases = random_tensor(rng, {rows, cols / group}, scale_dtype, -0.5f, 0.5f);
  return w;
}

inline ops::Weight dense_weight(const Tensor& t) {
  ops::Weight w;
  w.dense = t;
  return w;
}

// W[r][c] in double, from the stored format.
inline double weight_at(const ops::Weight& w, int64_t r, int64_t c) {
  if (!w.quantized) return value_at(w.dense, r * w.cols() + c);
  const QuantizedMatrix& m = w.quant;
  const uint32_t* row = m.packed.data<uint32_t>() + r * (m.cols * m.spec.bits / 32);
  int64_t g = r * (m.cols / m.spec.group_size) + c / m.spec.group_size;
  return value_at(m.scales, g) * stream_bits(row, c, m.spec.bits) + value_at(m.biases, g);
}

// Normalised mean squared error sum((a-b)²) / sum(b²) against the double reference b.
inline double nmse(const float* got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return den > 0 ? num / den : num;
}

// One ops::linear_group over `ws` (biases[i] may be undefined) on the current device, every member's
// output [n, rows_i] concatenated in member order; x and the weights must live on that device, y is
// allocated by `alloc(total floats)` (host vector or device buffer) and returned through `out`.
template <typename Alloc>
float* run_linear_group(const std::vector<ops::Weight>& ws, const std::vector<Tensor>& biases, const float* x,
                        int64_t n, Alloc alloc) {
  size_t total = 0;
  for (const ops::Weight& w : ws) total += static_cast<size_t>(n * w.rows());
  float* y = alloc(total);
  std::vector<ops::LinearOut> outs;
  size_t at = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    outs.push_back({&ws[i], &biases[i], y + at});
    at += static_cast<size_t>(n * ws[i].rows());
  }
  ops::linear_group(x, n, outs.data(), static_cast<int>(outs.size()));
  return y;
}

// Rows of a vocabulary's width for argmax cases ([5, d], d > 150000): random; a tie (the lower index
// wins); NaNs around a smaller maximum (NaN never wins); all -inf but one NaN (index 0); the maximum
// in the last column.
inline std::vector<float> argmax_rows(std::mt19937& rng, int64_t d) {
  std::vector<float> x = random_vec(rng, static_cast<size_t>(5 * d), -30.0f, 30.0f);
  float* r = x.data();
  r[1 * d + 90000] = r[1 * d + 1000] = 31.0f;
  r[2 * d + 7] = 30.5f;
  r[2 * d + 3] = r[2 * d + 150000] = std::numeric_limits<float>::quiet_NaN();
  std::fill(r + 3 * d, r + 4 * d, -std::numeric_limits<float>::infinity());
  r[3 * d + 5] = std::numeric_limits<float>::quiet_NaN();
  r[4 * d + d - 1] = 40.0f;
  return x;
}

}  // namespace vlm::test
