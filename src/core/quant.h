// MLX affine quantization: the descriptor of a quantized matrix as mlx-community checkpoints
// store it (engine_facts.md §1.5), plus the scalar reference for unpacking and dequantizing.
//
//   packed  u32  [rows, cols * bits / 32]   values q in [0, 2^bits), element 0 in the low bits;
//                                            3/5/6-bit rows are one little-endian bit stream
//   scales  bf16/f16/f32 [rows, cols / group_size]
//   biases  same dtype and shape as scales
//   w[r][c] = scales[r][c / g] * q[r][c] + biases[r][c / g]
//
// Groups run along the last (input) dimension. Kernels consume this layout directly; nothing
// dequantizes a whole model.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace vlm {

struct AffineQuantSpec {
  int bits = 4;
  int group_size = 64;
  bool operator==(const AffineQuantSpec&) const = default;
};

// Throws Error(kUnsupported) unless bits ∈ {2,3,4,5,6,8} and group_size ∈ {32,64,128}.
void validate_quant_spec(const AffineQuantSpec& spec, const char* what);

struct QuantizedMatrix {
  Tensor packed;  // u32 [rows, cols*bits/32]
  Tensor scales;  // [rows, cols/group_size]
  Tensor biases;  // [rows, cols/group_size]
  AffineQuantSpec spec;
  int64_t rows = 0;
  int64_t cols = 0;  // logical input dimension

  // Checks shapes and dtypes against each other; `what` names the module in errors.
  void validate(const char* what) const;
  int64_t words_per_row() const { return cols * spec.bits / 32; }
  size_t nbytes() const { return packed.nbytes() + scales.nbytes() + biases.nbytes(); }
};

// Value i of a packed row (any supported bit width).
inline uint32_t unpack_affine(const uint32_t* row, int64_t i, int bits) {
  if (bits == 2 || bits == 4 || bits == 8) {
    int per_word = 32 / bits;
    return (row[i / per_word] >> ((i % per_word) * bits)) & ((1u << bits) - 1u);
  }
  int64_t bit = i * bits;
  int64_t word = bit >> 5;
  int shift = static_cast<int>(bit & 31);
  uint64_t two = row[word];
  if (shift + bits > 32) two |= static_cast<uint64_t>(row[word + 1]) << 32;
  return static_cast<uint32_t>((two >> shift) & ((1u << bits) - 1u));
}

// Stores value q at position i of a packed row (row must be zeroed beforehand).
inline void pack_affine(uint32_t* row, int64_t i, int bits, uint32_t q) {
  int64_t bit = i * bits;
  int64_t word = bit >> 5;
  int shift = static_cast<int>(bit & 31);
  row[word] |= q << shift;
  if (shift + bits > 32) row[word + 1] |= q >> (32 - shift);
}

// Reference dequantization of row r into out[cols] (f32).
void dequantize_row(const QuantizedMatrix& m, int64_t r, float* out);
// Reference: whole matrix to f32 [rows, cols] (tests and tools only).
Tensor dequantize(const QuantizedMatrix& m);

}  // namespace vlm
