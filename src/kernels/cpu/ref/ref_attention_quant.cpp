// Scalar reference for ops::attention_quantized: the op's definition, literally — K and V rows are
// dequantized by the reference kv_dequantize (w = scale * q + bias, product rounded; this file is
// compiled without FMA contraction like the rest of the reference) into f32 buffers, then the
// reference attention runs over them. The fused device kernels are checked against this.
#include <vector>

#include "kernels/cpu/ref/ref_ops.h"

namespace vlm::ops::ref {

void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out) {
  const int64_t row = n_kv_heads * head_dim;
  // k, v: [nk, n_kv_heads, head_dim] f32
  std::vector<float> k(static_cast<size_t>(nk * row)), v(k.size());
  if (nk > 0) {
    ref::kv_dequantize(kv.k_packed, kv.k_scales, kv.k_biases, nk, row, kv.bits, kv.group_size, k.data());
    ref::kv_dequantize(kv.v_packed, kv.v_scales, kv.v_biases, nk, row, kv.bits, kv.group_size, v.data());
  }
  ref::attention(q, nq, q_pos0, k.data(), v.data(), k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
}

}  // namespace vlm::ops::ref
