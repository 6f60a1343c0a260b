// Attention on the GPU (ops.h semantics): one block of 8 warps per (query, head). Each warp walks its
// share of the keys in tiles of 32 (tiles warp, warp + 8, ...) with an online softmax: every lane
// scores one key of the tile (a full dot product with q from shared memory), one warp max / sum per
// tile rescales the running state, then the tile's values are accumulated key by key with the lanes
// spread over head_dim (up to 8 values each, so head_dim <= 256). The 8 partial states are merged
// through shared memory at the end. The mask is the reference's key_visible rule, evaluated per key from the
// absolute positions (k_pos may be in any order: rotating caches), so every mask case (causal, sliding
// window, image groups, none) and GQA share one kernel. A query that sees no key gets zeros.
// k_pos and group_of_position are host arrays (ops.h "devices"), staged to the device per call.
#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxPerLane = 8;  // head_dim <= 32 * 8

struct MaskArgs {
  int causal;
  int64_t window;
  const int32_t* groups;  // device, or null
  int64_t group_positions;
};

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

// q: [nq, n_heads, hd]; k, v: [nk, n_kv_heads, hd]; out: [nq, n_heads, hd].
__global__ void __launch_bounds__(kWarps * 32)
    attention_kernel(const float* __restrict__ q, int64_t q_pos0, const float* __restrict__ k,
                     const float* __restrict__ v, const int64_t* __restrict__ k_pos, int64_t nk, int64_t n_heads,
                     int64_t n_kv_heads, int64_t hd, float scale, float softcap, MaskArgs mask, bool k_vec4,
                     float* __restrict__ out) {
  __shared__ __align__(16) float s_q[32 * kMaxPerLane];
  __shared__ float s_m[kWarps], s_l[kWarps];
  __shared__ float s_acc[kWarps][32 * kMaxPerLane];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t i = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
  const int64_t kvh = h / (n_heads / n_kv_heads);
  const int64_t qp = q_pos0 + i;
  const float* qi = q + (i * n_heads + h) * hd;
  for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) s_q[c] = qi[c];
  __syncthreads();

  float acc[kMaxPerLane];
#pragma unroll
  for (int e = 0; e < kMaxPerLane; ++e) acc[e] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int64_t tiles = (nk + 31) / 32;
  for (int64_t tile = warp; tile < tiles; tile += kWarps) {
    // Scores: lane j of the warp owns key tile * 32 + j (invisible or past the end: -inf).
    const int64_t j = tile * 32 + lane;
    const bool valid = j < nk && key_visible(mask, qp, k_pos[j]);
    float sc = -INFINITY;
    if (valid) {
      const float* kj = k + (j * n_kv_heads + kvh) * hd;
      float dot = 0.0f;
      if (k_vec4) {  // head_dim % 4 == 0 and k 16-byte aligned: every key row is too
        const float4* k4 = reinterpret_cast<const float4*>(kj);
        const float4* q4 = reinterpret_cast<const float4*>(s_q);
        for (int64_t c = 0; c < hd / 4; ++c) {
          const float4 a = q4[c], b = __ldg(k4 + c);
          dot += a.x * b.x;
          dot += a.y * b.y;
          dot += a.z * b.z;
          dot += a.w * b.w;
        }
      } else {
        for (int64_t c = 0; c < hd; ++c) dot += s_q[c] * kj[c];
      }
      sc = dot * scale;
      if (softcap > 0.0f) sc = softcap * tanhf(sc / softcap);
    }
    const float tile_max = warp_max(sc);
    if (tile_max == -INFINITY) continue;  // no visible key in this tile (uniform across the warp)
    const float m_new = fmaxf(m, tile_max);
    const float corr = expf(m - m_new);  // 0 while nothing was seen (m = -inf)
    const float p = valid ? expf(sc - m_new) : 0.0f;
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int e = 0; e < kMaxPerLane; ++e) acc[e] *= corr;
    // Values: key by key, the lanes spread over head_dim (coalesced rows).
    for (int jj = 0; jj < 32; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == 0.0f) continue;  // invisible, past the end, or underflowed: adds nothing
      const float* vj = v + ((tile * 32 + jj) * n_kv_heads + kvh) * hd;
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) {
        const int64_t c = lane + 32 * e;
        if (c < hd) acc[e] += pj * vj[c];
      }
    }
    m = m_new;
  }
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < kMaxPerLane; ++e) s_acc[warp][lane + 32 * e] = acc[e];
  __syncthreads();

  float mx = -INFINITY;
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w]);
  float* oi = out + (i * n_heads + h) * hd;
  if (mx == -INFINITY) {  // no visible key
    for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) oi[c] = 0.0f;
    return;
  }
  float wgt[kWarps];
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    wgt[w] = s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - mx);
    total += s_l[w] * wgt[w];
  }
  const float inv = 1.0f / total;
  for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += s_acc[w][c] * wgt[w];
    oi[c] = o * inv;
  }
}

}  // namespace

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out) {
  if (nq <= 0) return;
  if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 || nk < 0)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda attention] bad shape: " + std::to_string(n_heads) +
                                                  " query heads, " + std::to_string(n_kv_heads) + " kv heads, head_dim " +
                                                  std::to_string(head_dim) + ", nk " + std::to_string(nk));
  if (head_dim > 32 * kMaxPerLane)
    detail::fail(ErrorKind::kUnsupported, "[cuda attention] head_dim " + std::to_string(head_dim) +
                                              " exceeds the kernel's maximum of " + std::to_string(32 * kMaxPerLane));
  if (nq * n_heads > 0x7fffffff) detail::fail(ErrorKind::kInvalidArgument, "[cuda attention] nq * n_heads too large");
  detail::Staging st("attention");
  const size_t h_kpos = st.add(k_pos, static_cast<size_t>(nk));
  const bool has_groups = mask.group_of_position != nullptr && mask.group_positions > 0;
  const size_t h_groups =
      has_groups ? st.add(mask.group_of_position, static_cast<size_t>(mask.group_positions)) : size_t{0};
  st.upload();
  MaskArgs m{mask.causal ? 1 : 0, mask.sliding_window, has_groups ? st.device<int32_t>(h_groups) : nullptr,
             has_groups ? mask.group_positions : 0};
  const int64_t* kp = nk > 0 ? st.device<int64_t>(h_kpos) : nullptr;
  const bool k_vec4 = head_dim % 4 == 0 && (reinterpret_cast<uintptr_t>(k) & 15u) == 0;
  attention_kernel<<<static_cast<unsigned>(nq * n_heads), kWarps * 32, 0, detail::stream("attention")>>>(
      q, q_pos0, k, v, kp, nk, n_heads, n_kv_heads, head_dim, scale, softcap, m, k_vec4, out);
  VLM_CUDA_LAUNCHED("attention");
}

}  // namespace vlm::ops::cuda::kernels
