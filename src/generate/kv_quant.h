// MLX affine quantization of KV rows (engine_facts.md §1.5), as mlx-lm's QuantizedKVCache applies it
// with mx.quantize: groups of `group_size` consecutive values along head_dim, one (scale, bias) per
// group, codes packed little-endian into u32 words (element 0 in the low bits; 3/5/6-bit rows are
// one bit stream). The per-group arithmetic is core's quantize_affine_group (MLX's Metal kernel:
// edge snapping so 0 is exact, w_max clamped at >= 0, half-away rounding); decoding is
// w = scale * q + bias.
//
// Scales and biases are kept in f32 here (our activations are f32; MLX keeps them in the keys' own
// dtype, usually bf16).
#pragma once

#include <cstdint>

namespace vlm::kvq {

// Words of one packed row of `n` values at `bits` (n * bits must be a multiple of 32).
inline int64_t packed_words(int64_t n, int bits) { return n * bits / 32; }

// Quantizes x[n] (n a multiple of group_size) into packed[packed_words(n, bits)] (overwritten),
// scales[n / group_size], biases[n / group_size].
void quantize_row(const float* x, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                  float* biases);

// out[n] = scale * q + bias per group.
void dequantize_row(const uint32_t* packed, const float* scales, const float* biases, int64_t n, int bits,
                    int group_size, float* out);

}  // namespace vlm::kvq
