// MLX affine quantization of KV rows; see kv_quant.h for the rule and where it comes from.
#include "generate/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/quant.h"

namespace vlm::kvq {

void quantize_row(const float* x, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                  float* biases) {
  std::memset(packed, 0, static_cast<size_t>(packed_words(n, bits)) * sizeof(uint32_t));
  const float n_bins = static_cast<float>((1u << bits) - 1u);
  const float kEps = 1e-7f;
  for (int64_t g = 0; g < n / group_size; ++g) {
    const float* w = x + g * group_size;
    float w_max = w[0], w_min = w[0];
    for (int j = 1; j < group_size; ++j) {
      w_max = std::max(w_max, w[j]);
      w_min = std::min(w_min, w[j]);
    }
    // The value of larger magnitude is the "edge"; it is made exactly representable (q0 * scale)
    // so that 0 stays exact too. The scale is negative when the edge is the maximum.
    float delta = std::max((w_max - w_min) / n_bins, kEps);
    bool min_is_edge = std::fabs(w_min) > std::fabs(w_max);
    float scale = min_is_edge ? delta : -delta;
    float edge = min_is_edge ? w_min : w_max;
    float q0 = std::nearbyint(edge / scale);
    float bias = 0.0f;
    if (q0 != 0.0f) {
      scale = edge / q0;
      bias = edge;
    }
    scales[g] = scale;
    biases[g] = bias;
    for (int j = 0; j < group_size; ++j) {
      float q = std::nearbyint((w[j] - bias) / scale);
      q = std::clamp(q, 0.0f, n_bins);
      pack_affine(packed, g * group_size + j, bits, static_cast<uint32_t>(q));
    }
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
