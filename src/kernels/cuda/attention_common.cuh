// Shared by the attention kernels (attention.cu: dispatchers, f32 prefill and the general decode
// kernel; attention_decode.cu: the grouped-query decode kernel, f32 or quantized K/V;
// attention_flash.cu: the bf16 tensor-core prefill): the device form of the mask (ref::key_visible
// verbatim), key positions, the cp.async helpers, and the entry points the dispatchers call. Include
// after common.cuh.
#pragma once

#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {

// Device form of ops::AttentionMask plus the key positions. k_pos (a separate pointer) is null when
// the host found it consecutive: key j is then at position kpos0 + j.
struct MaskArgs {
  int causal;
  int64_t window;
  const int32_t* groups;  // device, or null
  int64_t group_positions;
  int64_t kpos0;
};

// Position of key j: staged k_pos, or kpos0 + j when the host found k_pos consecutive (standard
// caches), which saves the staging copy.
__device__ __forceinline__ int64_t key_pos(const int64_t* k_pos, const MaskArgs& m, int64_t j) {
  return k_pos != nullptr ? k_pos[j] : m.kpos0 + j;
}

// ref::key_visible, verbatim.
__device__ __forceinline__ bool key_visible(const MaskArgs& m, int64_t qp, int64_t kp) {
  if (m.window > 0 && qp - kp >= m.window) return false;
  if (m.groups != nullptr && qp >= 0 && kp >= 0 && qp < m.group_positions && kp < m.group_positions) {
    const int32_t g = m.groups[qp];
    if (g != 0 && g == m.groups[kp]) return true;
  }
  if (m.causal && kp > qp) return false;
  return true;
}

// 16-byte asynchronous global -> shared copy (sm_80+); valid == false writes 16 zero bytes and reads
// nothing (gmem must still be a valid address).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Merges the per-split partial states of a split-over-keys kernel: block qh = (query, head) reads
// `splits` states (m, l) in part_ml[qh][s] and acc in part_acc[qh][s][hd] and writes
// out[qh] = Σ_s acc_s · e^(m_s - M) / Σ_s l_s · e^(m_s - M) (zeros when no split saw a key).
void launch_attention_combine(const float* part_ml, const float* part_acc, int64_t qh, int64_t splits, int64_t hd,
                              float* out, cudaStream_t cs);

// Grouped-query decode (attention_decode.cu): false (nothing launched) when it does not apply
// (head_dim not a multiple of 4 or above 256, K/V not 16-byte aligned).
bool attention_decode_gqa(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                          const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          float scale, float softcap, const MaskArgs& mask, float* out, cudaStream_t cs);

// ops::attention_with_rope's fused form (attention_decode.cu, register kernel): whether it takes this
// shape (one query, rotary_dim == head_dim with head_dim / 8 a power of two up to 128 dims, or 256,
// at most 8 query heads per kv head, the register kernel selected), and the launch: q rotated on
// load, the new key row nk - 1 (consecutive key positions: k_pos_dev null) rotated on load by the one
// block that reads it and written back into k. False (nothing launched) when it does not apply
// (also K/V or out not 16-byte aligned, the new key outside the mask's key range).
struct RopeArgs;
bool decode_rope_applies(int64_t nq, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t rotary_dim);
bool attention_decode_gqa_rope(const float* q, int64_t q_pos0, float* k, const float* v, int64_t nk, int64_t n_heads,
                               int64_t n_kv_heads, int64_t head_dim, float scale, float softcap, const MaskArgs& mask,
                               const RopeArgs& rope, float* out, cudaStream_t cs);

// Grouped-query decode over a quantized KV cache (attention_decode.cu; ops::attention_quantized's
// layout): false (nothing launched) when it does not apply (head_dim not a multiple of 4 or of
// group_size, or above 256).
bool attention_decode_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv,
                                const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads,
                                int64_t head_dim, float scale, float softcap, const MaskArgs& mask, float* out,
                                cudaStream_t cs);

// ops::attention_quantized on the GPU (attention.cu): the decode kernel above for nq < 8, else the
// rows dequantized into a temporary f32 buffer (kv_quant.cu) and attention().
void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out);

// bf16 tensor-core prefill (attention_flash.cu): false (nothing launched) for a head_dim it has no
// instance for.
bool attention_flash_bf16(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                          const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          float scale, float softcap, const MaskArgs& mask, float* out, cudaStream_t cs);

}  // namespace vlm::ops::cuda::kernels
