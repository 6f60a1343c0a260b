// MLX affine quantization of KV rows; see kv_quant.h for the rule and where it comes from.
#include "generate/kv_quant.h"

#include <cstring>

#include "core/quant.h"
#include "core/quantize.h"

namespace vlm::kvq {

void quantize_row(const float* x, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                  float* biases) {
  std::memset(packed, 0, static_cast<size_t>(packed_words(n, bits)) * sizeof(uint32_t));
  uint32_t codes[128];  // group_size <= 128
  for (int64_t g = 0; g < n / group_size; ++g) {
    AffineGroupParams p = quantize_affine_group(x + g * group_size, group_size, bits, codes);
    scales[g] = p.scale;
    biases[g] = p.bias;
    for (int j = 0; j < group_size; ++j) pack_affine(packed, g * group_size + j, bits, codes[j]);
  }
}

void dequantize_row(const uint32_t* packed, const float* scales, const float* biases, int64_t n, int bits,
                    int group_size, float* out) {
  for (int64_t g = 0; g < n / group_size; ++g) {
    const float s = scales[g], b = biases[g];
    for (int j = 0; j < group_size; ++j) {
      int64_t i = g * group_size + j;
      out[i] = s * static_cast<float>(unpack_affine(packed, i, bits)) + b;
    }
  }
}

}  // namespace vlm::kvq
