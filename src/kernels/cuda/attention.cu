// Attention on the GPU (ops.h semantics): the dispatcher and the f32 kernels.
//   prefill (nq >= 8), bf16_matmul and a head_dim it has (32/64/72/80/96/128/256; 72 runs as 80
//                     with zero columns): attention_flash.cu (bf16 tensor cores, f32 softmax);
//   prefill otherwise attention_prefill_kernel (exact f32): one block per (32 queries, head), K/V
//                     tiles staged in shared memory once for all 32 queries (see its comment);
//   decode (nq < 8)   attention_decode.cu (f32, grouped by kv head, K/V chunks through shared memory,
//                     one launch that also merges its key splits), or, for head_dim % 4 != 0 or
//                     unaligned K/V, attention_kernel here: keys split over blocks (flash-decoding),
//                     one block of 8 warps per (query, head, split); warp w takes key tiles w, w + 8, ...
//                     of its split (one key per lane), the 8 warp states are merged through shared
//                     memory, and attention_combine_kernel merges the splits.
// attention_quantized (ops.h): decode runs attention_decode.cu's kernel on the packed K/V rows
// (dequantized chunk by chunk in shared memory); prefill dequantizes the rows into a temporary f32
// buffer (kv_dequantize) and runs attention() over it.
// The f32 kernels share their arithmetic (an online softmax in f32, one warp max / sum per 32-key
// tile, values accumulated with the lanes over head_dim, so head_dim <= 256).
// The mask is the reference's key_visible rule, evaluated per key from the absolute positions (k_pos
// may be in any order: rotating caches), so every mask case (causal, sliding window, image groups,
// none) and GQA share the code. A query that sees no key gets zeros. k_pos and group_of_position are
// host arrays (ops.h "devices"), staged to the device per call; a consecutive k_pos (standard caches)
// is passed as its first position instead.
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/kv_quant.cuh"
#include "kernels/cuda/rope_common.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxPerLane = 8;  // head_dim <= 32 * 8

// Decode (nq < kPrefillMinQueries), split over keys (flash-decoding): block (query i, head h, split s)
// covers key tiles [s * tiles_per_split, (s + 1) * tiles_per_split) of 32 keys; its warp w takes
// tiles w, w + 8, ... of that range. With one split the block writes the normalized output; with
// several it writes its unnormalized partial state (max m, sum l, acc[hd]) to `part` and
// attention_combine_kernel merges the splits. One block per (query, head) alone would leave most SMs
// idle (9-16 blocks for 132 SMs) and walk 2048 keys serially.
// q: [nq, n_heads, hd]; k, v: [nk, n_kv_heads, hd]; out: [nq, n_heads, hd];
// part_ml: [nq * n_heads, splits, 2] (m, l); part_acc: [nq * n_heads, splits, hd].
__global__ void __launch_bounds__(kWarps * 32)
    attention_kernel(const float* __restrict__ q, int64_t q_pos0, const float* __restrict__ k,
                     const float* __restrict__ v, const int64_t* __restrict__ k_pos, int64_t nk, int64_t n_heads,
                     int64_t n_kv_heads, int64_t hd, float scale, float softcap, MaskArgs mask, bool k_vec4,
                     int64_t tiles_per_split, float* __restrict__ out, float* __restrict__ part_ml,
                     float* __restrict__ part_acc) {
  __shared__ __align__(16) float s_q[32 * kMaxPerLane];
  __shared__ float s_m[kWarps], s_l[kWarps];
  __shared__ float s_acc[kWarps][32 * kMaxPerLane];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t qh = blockIdx.x;
  const int64_t i = qh / n_heads, h = qh % n_heads;
  const int64_t split = blockIdx.y, splits = gridDim.y;
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
  const int64_t tile_begin = split * tiles_per_split;
  const int64_t tile_end = tile_begin + tiles_per_split < tiles ? tile_begin + tiles_per_split : tiles;
  for (int64_t tile = tile_begin + warp; tile < tile_end; tile += kWarps) {
    // Scores: lane j of the warp owns key tile * 32 + j (invisible or past the end: -inf).
    const int64_t j = tile * 32 + lane;
    const bool valid = j < nk && key_visible(mask, qp, key_pos(k_pos, mask, j));
    float sc = -INFINITY;
    if (valid) {
      const float* kj = k + (j * n_kv_heads + kvh) * hd;
      float dot = 0.0f;
      if (k_vec4) {  // head_dim % 4 == 0 and k 16-byte aligned: every key row is too
        const float4* k4 = reinterpret_cast<const float4*>(kj);
        const float4* q4 = reinterpret_cast<const float4*>(s_q);
        const int c4 = static_cast<int>(hd / 4);
        // Unrolled so that 8 row loads are in flight at once (a dependent load per step would make
        // the scores latency-bound: one memory round trip per 4 values).
#pragma unroll 8
        for (int c = 0; c < c4; ++c) {
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
    // Values: key by key, the lanes spread over head_dim (coalesced rows). Each group of 8 keys is
    // loaded (all of head_dim) before it is accumulated, so up to 8 * head_dim / 32 loads per lane are
    // in flight instead of one. Keys past the end read the last row (their weight is 0 and skipped);
    // an invisible key's weight is 0.
    const int64_t last = nk - 1;
    for (int j0 = 0; j0 < 32; j0 += 8) {
      float pj[8];
      const float* vj[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        pj[u] = __shfl_sync(0xffffffffu, p, j0 + u);
        const int64_t key = tile * 32 + j0 + u;
        vj[u] = v + ((key < nk ? key : last) * n_kv_heads + kvh) * hd;
      }
      float vv[kMaxPerLane][8];
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) {
        const int64_t c = lane + 32 * e;
        if (32 * e < hd) {  // uniform across the warp: most e are skipped whole for small head_dim
#pragma unroll
          for (int u = 0; u < 8; ++u) vv[e][u] = c < hd ? __ldg(vj[u] + c) : 0.0f;
        }
      }
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) {
        if (32 * e < hd && lane + 32 * e < hd) {
#pragma unroll
          for (int u = 0; u < 8; ++u)
            if (pj[u] != 0.0f) acc[e] += pj[u] * vv[e][u];
        }
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
  float wgt[kWarps];
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    wgt[w] = s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - mx);
    total += s_l[w] * wgt[w];
  }
  if (splits > 1) {  // partial state of this split (m = -inf, l = 0, acc = 0 when it saw no key)
    float* pa = part_acc + (qh * splits + split) * hd;
    if (threadIdx.x == 0) {
      part_ml[(qh * splits + split) * 2] = mx;
      part_ml[(qh * splits + split) * 2 + 1] = mx == -INFINITY ? 0.0f : total;
    }
    for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) {
      float o = 0.0f;
      if (mx != -INFINITY)
        for (int w = 0; w < kWarps; ++w) o += s_acc[w][c] * wgt[w];
      pa[c] = o;
    }
    return;
  }
  float* oi = out + (i * n_heads + h) * hd;
  if (mx == -INFINITY) {  // no visible key
    for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) oi[c] = 0.0f;
    return;
  }
  const float inv = 1.0f / total;
  for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += s_acc[w][c] * wgt[w];
    oi[c] = o * inv;
  }
}

// Merges the splits (launch_attention_combine): block qh = (query, head), 128 threads. The split
// weights e^(m_s - M) are computed once into shared memory (threads over splits), then each thread
// sums its head_dim columns over the splits (independent loads, so many are in flight).
__global__ void attention_combine_kernel(const float* __restrict__ part_ml, const float* __restrict__ part_acc,
                                         int64_t splits, int64_t hd, float* __restrict__ out) {
  extern __shared__ float w_s[];  // [splits]
  __shared__ float red[32];
  detail::chain_wait();  // chained launch (common.cuh)
  detail::chain_release();
  const int64_t qh = blockIdx.x;
  const float* ml = part_ml + qh * splits * 2;
  const float* pa = part_acc + qh * splits * hd;
  float mx = -INFINITY;
  for (int64_t s = threadIdx.x; s < splits; s += blockDim.x) mx = fmaxf(mx, ml[2 * s]);
  mx = block_max(mx, red);
  float* o = out + qh * hd;
  if (mx == -INFINITY) {  // no split saw a key
    for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) o[c] = 0.0f;
    return;
  }
  float total = 0.0f;
  for (int64_t s = threadIdx.x; s < splits; s += blockDim.x) {
    const float w = ml[2 * s] == -INFINITY ? 0.0f : expf(ml[2 * s] - mx);
    w_s[s] = w;
    total += ml[2 * s + 1] * w;
  }
  total = block_sum(total, red);  // its barriers also publish w_s
  const float inv = 1.0f / total;
  for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) {
    float acc = 0.0f;
#pragma unroll 8
    for (int64_t s = 0; s < splits; ++s) acc += pa[s * hd + c] * w_s[s];
    o[c] = acc * inv;
  }
}

// Prefill (nq >= kPrefillMinQueries): a block per (32 consecutive queries, head). Each of the 8 warps
// owns 4 queries through the whole key range, so no merge is needed. The block streams the keys in
// tiles of 32: K and V rows go to shared memory once and serve all 32 queries (K rows padded to
// hd + 1 floats so the lane-per-key reads hit distinct banks), then every lane scores its key against
// the warp's 4 queries, and the values are accumulated key by key with the lanes over head_dim. A tile
// that no query of the block can see (causal future, outside every window) is skipped after its
// k_pos alone. Dynamic shared memory: 4 * 32 * (3 * hd + 1) bytes (98,432 for hd = 256).
constexpr int kQPerWarp = 4;
constexpr int kQTile = kWarps * kQPerWarp;
constexpr int kKTile = 32;
constexpr int64_t kPrefillMinQueries = 8;

size_t prefill_smem_bytes(int64_t hd) { return sizeof(float) * kKTile * static_cast<size_t>(3 * hd + 1); }

__global__ void __launch_bounds__(kWarps * 32)
    attention_prefill_kernel(const float* __restrict__ q, int64_t nq, int64_t q_pos0, const float* __restrict__ k,
                             const float* __restrict__ v, const int64_t* __restrict__ k_pos, int64_t nk,
                             int64_t n_heads, int64_t n_kv_heads, int64_t hd, float scale, float softcap,
                             MaskArgs mask, float* __restrict__ out) {
  extern __shared__ float smem[];
  const int64_t kstride = hd + 1;
  float* q_s = smem;                    // [kQTile][hd]
  float* k_s = q_s + kQTile * hd;       // [kKTile][hd + 1]
  float* v_s = k_s + kKTile * kstride;  // [kKTile][hd]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kQTile, h = blockIdx.y;
  const int64_t kvh = h / (n_heads / n_kv_heads);
  for (int64_t idx = threadIdx.x; idx < kQTile * hd; idx += blockDim.x) {
    const int64_t i = i0 + idx / hd, c = idx % hd;
    q_s[idx] = i < nq ? q[(i * n_heads + h) * hd + c] : 0.0f;
  }
  float acc[kQPerWarp][kMaxPerLane], m[kQPerWarp], l[kQPerWarp];
  int64_t qpos[kQPerWarp];
  bool live[kQPerWarp];
#pragma unroll
  for (int qq = 0; qq < kQPerWarp; ++qq) {
    const int64_t i = i0 + warp * kQPerWarp + qq;
    live[qq] = i < nq;
    qpos[qq] = q_pos0 + i;
    m[qq] = -INFINITY;
    l[qq] = 0.0f;
#pragma unroll
    for (int e = 0; e < kMaxPerLane; ++e) acc[qq][e] = 0.0f;
  }
  for (int64_t j0 = 0; j0 < nk; j0 += kKTile) {
    const int64_t j = j0 + lane;
    const int64_t kp = j < nk ? key_pos(k_pos, mask, j) : 0;
    bool vis[kQPerWarp];
    int any = 0;
#pragma unroll
    for (int qq = 0; qq < kQPerWarp; ++qq) {
      vis[qq] = live[qq] && j < nk && key_visible(mask, qpos[qq], kp);
      any |= vis[qq] ? 1 : 0;
    }
    // Also the barrier that lets the previous tile's readers finish before K/V are overwritten (and
    // that publishes q_s before the first tile).
    if (!__syncthreads_or(any)) continue;
    for (int64_t idx = threadIdx.x; idx < kKTile * hd; idx += blockDim.x) {
      const int64_t kk = idx / hd, c = idx % hd, jj = j0 + kk;
      const bool in = jj < nk;
      k_s[kk * kstride + c] = in ? k[(jj * n_kv_heads + kvh) * hd + c] : 0.0f;
      v_s[kk * hd + c] = in ? v[(jj * n_kv_heads + kvh) * hd + c] : 0.0f;
    }
    __syncthreads();
    float sc[kQPerWarp];
#pragma unroll
    for (int qq = 0; qq < kQPerWarp; ++qq) sc[qq] = 0.0f;
    const float* krow = k_s + lane * kstride;
    const float* qrow = q_s + warp * kQPerWarp * hd;
    for (int64_t c = 0; c < hd; ++c) {
      const float kv = krow[c];
#pragma unroll
      for (int qq = 0; qq < kQPerWarp; ++qq) sc[qq] += qrow[qq * hd + c] * kv;
    }
    float p[kQPerWarp];
#pragma unroll
    for (int qq = 0; qq < kQPerWarp; ++qq) {
      float s = sc[qq] * scale;
      if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
      s = vis[qq] ? s : -INFINITY;
      const float tile_max = warp_max(s);
      p[qq] = 0.0f;
      if (tile_max == -INFINITY) continue;  // this query sees nothing here (uniform across the warp)
      const float m_new = fmaxf(m[qq], tile_max);
      const float corr = expf(m[qq] - m_new);
      p[qq] = vis[qq] ? expf(s - m_new) : 0.0f;
      l[qq] = l[qq] * corr + warp_sum(p[qq]);
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) acc[qq][e] *= corr;
      m[qq] = m_new;
    }
    for (int jj = 0; jj < kKTile; ++jj) {
      float pj[kQPerWarp];
#pragma unroll
      for (int qq = 0; qq < kQPerWarp; ++qq) pj[qq] = __shfl_sync(0xffffffffu, p[qq], jj);
      const float* vrow = v_s + jj * hd;
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) {
        const int64_t c = lane + 32 * e;
        if (c < hd) {
          const float vv = vrow[c];
#pragma unroll
          for (int qq = 0; qq < kQPerWarp; ++qq) acc[qq][e] += pj[qq] * vv;
        }
      }
    }
  }
#pragma unroll
  for (int qq = 0; qq < kQPerWarp; ++qq) {
    if (!live[qq]) continue;
    const int64_t i = i0 + warp * kQPerWarp + qq;
    float* oi = out + (i * n_heads + h) * hd;
    const float inv = m[qq] == -INFINITY ? 0.0f : 1.0f / l[qq];  // no visible key: zeros
#pragma unroll
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t c = lane + 32 * e;
      if (c < hd) oi[c] = acc[qq][e] * inv;
    }
  }
}

}  // namespace

void launch_attention_combine(const float* part_ml, const float* part_acc, int64_t qh, int64_t splits, int64_t hd,
                              float* out, cudaStream_t cs) {
  detail::launch_chained("attention", attention_combine_kernel, dim3(static_cast<unsigned>(qh)), dim3(128),
                         sizeof(float) * static_cast<size_t>(splits), cs, part_ml, part_acc, splits, hd, out);
}

namespace {

// Shape checks shared by attention and attention_quantized (ops.cpp validated the rest).
void check_shape(int64_t nq, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 || nk < 0)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda attention] bad shape: " + std::to_string(n_heads) +
                                                  " query heads, " + std::to_string(n_kv_heads) + " kv heads, head_dim " +
                                                  std::to_string(head_dim) + ", nk " + std::to_string(nk));
  if (head_dim > 32 * kMaxPerLane)
    detail::fail(ErrorKind::kUnsupported, "[cuda attention] head_dim " + std::to_string(head_dim) +
                                              " exceeds the kernel's maximum of " + std::to_string(32 * kMaxPerLane));
  if (nq * n_heads > 0x7fffffff || n_heads > 65535)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda attention] nq * n_heads too large");
}

// True when k_pos is p0, p0 + 1, ... (every standard cache). Compared in blocks without an early exit
// inside a block, so the host loop stays cheap at 16k keys.
bool consecutive_positions(const int64_t* k_pos, int64_t nk) {
  const int64_t p0 = nk > 0 ? k_pos[0] : 0;
  for (int64_t j0 = 0; j0 < nk; j0 += 256) {
    const int64_t end = std::min<int64_t>(nk, j0 + 256);
    int64_t diff = 0;
    for (int64_t j = j0; j < end; ++j) diff |= k_pos[j] - (p0 + j);
    if (diff != 0) return false;
  }
  return true;
}

// The mask's device form. A consecutive k_pos is passed as its first position and nothing is staged
// (a host-to-device copy costs the stream several microseconds per call); other orders (rotating
// caches) and group_of_position are staged in one upload. kp: the staged k_pos, or null.
MaskArgs stage_mask(const AttentionMask& mask, const int64_t* k_pos, int64_t nk, const int64_t*& kp) {
  const bool consecutive = consecutive_positions(k_pos, nk);
  detail::Staging st("attention");
  const size_t h_kpos = consecutive ? size_t{0} : st.add(k_pos, static_cast<size_t>(nk));
  const bool has_groups = mask.group_of_position != nullptr && mask.group_positions > 0;
  const size_t h_groups =
      has_groups ? st.add(mask.group_of_position, static_cast<size_t>(mask.group_positions)) : size_t{0};
  st.upload();
  kp = nk > 0 && !consecutive ? st.device<int64_t>(h_kpos) : nullptr;
  return MaskArgs{mask.causal ? 1 : 0, mask.sliding_window, has_groups ? st.device<int32_t>(h_groups) : nullptr,
                  has_groups ? mask.group_positions : 0, consecutive && nk > 0 ? k_pos[0] : 0};
}

}  // namespace

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out) {
  if (nq <= 0) return;
  check_shape(nq, nk, n_heads, n_kv_heads, head_dim);
  const int64_t* kp = nullptr;
  const MaskArgs m = stage_mask(mask, k_pos, nk, kp);
  const bool k_vec4 = head_dim % 4 == 0 && (reinterpret_cast<uintptr_t>(k) & 15u) == 0;
  cudaStream_t cs = detail::stream("attention");
  if (nq >= kPrefillMinQueries) {
    if (mask.bf16_matmul &&
        attention_flash_bf16(q, nq, q_pos0, k, v, kp, nk, n_heads, n_kv_heads, head_dim, scale, softcap, m, out, cs))
      return;
    const size_t smem = prefill_smem_bytes(head_dim);
    static std::once_flag once;  // opt in to the largest size once (head_dim 256: 98,432 bytes)
    std::call_once(once, [] {
      VLM_CUDA(cudaFuncSetAttribute(attention_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(prefill_smem_bytes(32 * kMaxPerLane))),
               "attention");
    });
    const dim3 grid(static_cast<unsigned>((nq + kQTile - 1) / kQTile), static_cast<unsigned>(n_heads));
    attention_prefill_kernel<<<grid, kWarps * 32, smem, cs>>>(q, nq, q_pos0, k, v, kp, nk, n_heads, n_kv_heads,
                                                              head_dim, scale, softcap, m, out);
  } else {
    if (attention_decode_gqa(q, nq, q_pos0, k, v, kp, nk, n_heads, n_kv_heads, head_dim, scale, softcap, m, out, cs))
      return;
    // The general decode kernel (head_dim not a multiple of 4, or K/V not 16-byte aligned). Splits:
    // enough blocks to cover the SMs about twice, each at least one 32-key tile per warp.
    const int64_t qh = nq * n_heads, tiles = std::max<int64_t>((nk + 31) / 32, 1);
    static const int64_t target = [] {
      int dev = 0, sms = 0;
      if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) !=
                                                    cudaSuccess)
        sms = 0;
      cudaGetLastError();
      return int64_t{2} * (sms > 0 ? sms : 132);
    }();
    int64_t splits = std::min<int64_t>((tiles + kWarps - 1) / kWarps, (target + qh - 1) / qh);
    splits = std::max<int64_t>(std::min<int64_t>(splits, 4096), 1);
    const int64_t tiles_per_split = (tiles + splits - 1) / splits;
    splits = std::max<int64_t>((tiles + tiles_per_split - 1) / tiles_per_split, 1);  // no empty split
    float* part_ml = nullptr;
    float* part_acc = nullptr;
    if (splits > 1) {
      const size_t ml_floats = static_cast<size_t>(qh * splits * 2);
      float* base = static_cast<float*>(
          detail::scratch(sizeof(float) * (ml_floats + static_cast<size_t>(qh * splits * head_dim)), "attention"));
      part_ml = base;
      part_acc = base + ml_floats;
    }
    attention_kernel<<<dim3(static_cast<unsigned>(qh), static_cast<unsigned>(splits)), kWarps * 32, 0, cs>>>(
        q, q_pos0, k, v, kp, nk, n_heads, n_kv_heads, head_dim, scale, softcap, m, k_vec4, tiles_per_split, out,
        part_ml, part_acc);
    if (splits > 1) {
      VLM_CUDA_LAUNCHED("attention");
      launch_attention_combine(part_ml, part_acc, qh, splits, head_dim, out, cs);
    }
  }
  VLM_CUDA_LAUNCHED("attention");
}

void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out) {
  if (nq <= 0) return;
  check_shape(nq, nk, n_heads, n_kv_heads, head_dim);
  if (nq < kPrefillMinQueries) {
    const int64_t* kp = nullptr;
    const MaskArgs m = stage_mask(mask, k_pos, nk, kp);
    if (attention_decode_quantized(q, nq, q_pos0, kv, kp, nk, n_heads, n_kv_heads, head_dim, scale, softcap, m, out,
                                   detail::stream("attention")))
      return;
  }
  // Prefill (and shapes the decode kernel does not take): the rows dequantized into a temporary f32
  // buffer from the caching allocator (handed back when the op returns: later users are ordered after
  // this op's kernels by the stream), then attention().
  const int64_t row = n_kv_heads * head_dim;
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(nk, 1) * row) * sizeof(float);
  struct Temp {
    size_t bytes;
    float* p;
    ~Temp() { device_free(p, bytes, MemCategory::kScratch); }
  };
  const Temp k{bytes, static_cast<float*>(device_alloc(bytes, MemCategory::kScratch))};
  const Temp v{bytes, static_cast<float*>(device_alloc(bytes, MemCategory::kScratch))};
  if (nk > 0) {
    kernels::kv_dequantize(kv.k_packed, kv.k_scales, kv.k_biases, nk, row, kv.bits, kv.group_size, k.p);
    kernels::kv_dequantize(kv.v_packed, kv.v_scales, kv.v_biases, nk, row, kv.bits, kv.group_size, v.p);
  }
  kernels::attention(q, nq, q_pos0, k.p, v.p, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {

// ops::attention_with_rope's fused decode form (cuda_backend.h). VLMCHECK_CUDA_ROPE_ATTENTION=0 (read
// once) turns it off: ops.cpp then runs rope_qk and attention as two launches.
bool attention_rope_decode(float* q, int64_t nq, int64_t q_pos0, float* k, const float* v, const int64_t* k_pos,
                           int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale,
                           float softcap, const AttentionMask& mask, int64_t rotary_dim, const float* inv_freq,
                           const int64_t* positions, const int* stream_of, float attention_scaling, float* out) {
  using namespace kernels;
  static const bool enabled = [] {
    const char* e = std::getenv("VLMCHECK_CUDA_ROPE_ATTENTION");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  if (!enabled || nk < 1 || rotary_dim / 2 > kRopeMaxHalf ||
      !decode_rope_applies(nq, n_heads, n_kv_heads, head_dim, rotary_dim))
    return false;
  check_shape(nq, nk, n_heads, n_kv_heads, head_dim);
  // The new key is the last row only for consecutive positions (a standard cache).
  if (!consecutive_positions(k_pos, nk)) return false;
  RopeArgs r{};
  r.half = static_cast<int>(rotary_dim / 2);
  r.scaling = attention_scaling;
  std::memcpy(r.inv_freq, inv_freq, sizeof(float) * static_cast<size_t>(r.half));
  for (int s = 0; s < (stream_of != nullptr ? 3 : 1); ++s) r.positions[s] = positions[s];  // [streams, nq = 1]
  for (int i = 0; i < r.half; ++i) r.stream_of[i] = static_cast<signed char>(stream_of != nullptr ? stream_of[i] : 0);
  const int64_t* kp = nullptr;
  const MaskArgs m = stage_mask(mask, k_pos, nk, kp);  // consecutive: nothing staged
  if (!attention_decode_gqa_rope(q, q_pos0, k, v, nk, n_heads, n_kv_heads, head_dim, scale, softcap, m, r, out,
                                 detail::stream("attention")))
    return false;
  VLM_CUDA_LAUNCHED("attention");
  return true;
}

}  // namespace vlm::ops::cuda
