// Scalar reference for the KV-cache quantization ops (ops.h "KV-cache quantization"): rows of f32
// values to MLX affine codes + f32 scales/biases and back. The per-group rule is core's
// quantize_affine_group and the packing core's pack_affine, so the KV cache, the checkpoint quantizer
// (core/quantize.h) and this op share one implementation of MLX's arithmetic; the CUDA kernels
// (cuda/kv_quant.cu) reproduce it bit for bit. Compiled without FMA contraction (the reference path
// has no -mfma), so scale * q + bias rounds the product before the add.
#include <cstring>

#include "core/quant.h"
#include "core/quantize.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/ref/ref_ops.h"

namespace vlm::ops::ref {

void kv_quantize(const float* x, int64_t rows, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                 float* biases) {
  const int64_t words = kv_packed_words(n, bits), groups = n / group_size;
  // ~8 operations per value (min/max, divide, round, pack).
  cpu::parallel_for(rows, 8 * n, [&](int64_t r0, int64_t r1) {
    uint32_t codes[128];  // group_size <= 128 (ops.cpp)
    for (int64_t r = r0; r < r1; ++r) {
      uint32_t* row = packed + r * words;
      std::memset(row, 0, static_cast<size_t>(words) * sizeof(uint32_t));  // pack_affine ORs into the row
      for (int64_t g = 0; g < groups; ++g) {
        const AffineGroupParams p = quantize_affine_group(x + r * n + g * group_size, group_size, bits, codes);
        scales[r * groups + g] = p.scale;
        biases[r * groups + g] = p.bias;
        for (int j = 0; j < group_size; ++j) pack_affine(row, g * group_size + j, bits, codes[j]);
      }
    }
  });
}

void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out) {
  const int64_t words = kv_packed_words(n, bits), groups = n / group_size;
  cpu::parallel_for(rows, 2 * n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint32_t* row = packed + r * words;
      for (int64_t g = 0; g < groups; ++g) {
        const float s = scales[r * groups + g], b = biases[r * groups + g];
        for (int64_t j = g * group_size; j < (g + 1) * group_size; ++j)
          out[r * n + j] = s * static_cast<float>(unpack_affine(row, j, bits)) + b;
      }
    }
  });
}

}  // namespace vlm::ops::ref
