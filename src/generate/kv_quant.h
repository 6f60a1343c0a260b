// MLX affine quantization of single KV rows on the host (engine_facts.md §1.5), as mlx-lm's
// QuantizedKVCache applies it with mx.quantize: groups of `group_size` consecutive values along
// head_dim, one (scale, bias) per group, codes packed little-endian into u32 words (element 0 in the
// low bits; 3/5/6-bit rows are one bit stream); decoding is w = scale * q + bias.
//
// The rule has one home: core's quantize_affine_group, applied by the ops::kv_quantize /
// ops::kv_dequantize kernels (the scalar reference on the CPU, bit-identical CUDA kernels on the GPU),
// which the KV cache calls on whole runs of rows. These wrappers are the same ops for one host row
// (tests, tools). Scales and biases are kept in f32 (our activations are f32; MLX keeps them in the
// keys' own dtype, usually bf16).
#pragma once

#include <cstdint>

namespace vlm::kvq {

// Words of one packed row of `n` values at `bits` (n * bits must be a multiple of 32).
inline int64_t packed_words(int64_t n, int bits) { return n * bits / 32; }

// Quantizes host x[n] (n a multiple of group_size) into packed[packed_words(n, bits)] (overwritten),
// scales[n / group_size], biases[n / group_size]. Not from inside a ThreadPool job (it is an op).
void quantize_row(const float* x, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                  float* biases);

// out[n] = scale * q + bias per group (host memory).
void dequantize_row(const uint32_t* packed, const float* scales, const float* biases, int64_t n, int bits,
                    int group_size, float* out);

}  // namespace vlm::kvq
