// Decode attention (nq < 8) in f32 on CUDA cores, grouped by kv head and split over keys:
// one 4-warp block per (key split, query, kv head, group of up to 8 of the kv head's query heads).
// The block walks its split in chunks of 32 keys; each chunk's K and V rows (f32) go to shared
// memory with cp.async, all of them issued at once (16 KiB each for head_dim 128: the whole chunk is
// one memory round trip instead of a dependent chain of row loads), and then serve every query head
// of the group, so a kv head's cache is read once per step, not heads / kv_heads times. Warp w owns
// query heads 2w and 2w + 1: lane j scores key j of the chunk against both (float4 reads of its
// padded K row, the q rows broadcast), one warp max / sum per row and chunk keeps the online softmax,
// and the values are accumulated key by key from shared memory with the lanes over head_dim.
// Splits: enough blocks for about four per SM; each writes its unnormalized state (m, l, acc) and
// launch_attention_combine merges them (one split: the block normalizes itself). Every key's
// visibility is key_visible of its absolute position, so rotating-cache (ring) k_pos orders work.
// Before (one 8-warp block per (query, head, split), K rows loaded by each lane from global memory,
// every query head reading the shared kv head again): 23 µs per call at 2080 keys on the Qwen 3B
// shape, 14% occupancy, latency-bound.
#include "kernels/cuda/attention_common.cuh"

#include <algorithm>
#include <mutex>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kDecWarps = 4;
constexpr int kDecRows = 2 * kDecWarps;  // query heads per block
constexpr int kDecKeys = 32;             // keys per chunk, one per lane
constexpr int kDecMaxPerLane = 8;        // head_dim <= 256
constexpr int64_t kDecMaxSplits = 4096;  // the combine kernel keeps one weight per split in shared memory

size_t decode_smem_bytes(int64_t hd) {
  return sizeof(float) * static_cast<size_t>(kDecRows * hd + 2 * kDecKeys * (hd + 4));
}

// q: [nq, n_heads, hd]; k, v: [nk, n_kv_heads, hd] (16-byte aligned, hd % 4 == 0); out: [nq, n_heads, hd];
// part_ml: [nq * n_heads, splits, 2]; part_acc: [nq * n_heads, splits, hd].
// Grid: (split, query * row_chunks + row chunk, kv head).
__global__ void __launch_bounds__(kDecWarps * 32)
    attention_decode_gqa_kernel(const float* __restrict__ q, int64_t q_pos0, const float* __restrict__ k,
                                const float* __restrict__ v, const int64_t* __restrict__ k_pos, int64_t nk,
                                int n_heads, int n_kv_heads, int hd, float scale, float softcap, MaskArgs mask,
                                int row_chunks, int64_t chunks_per_split, float* __restrict__ out,
                                float* __restrict__ part_ml, float* __restrict__ part_acc) {
  extern __shared__ __align__(16) float dec_smem[];
  const int ks = hd + 4;  // padded K/V row: 16-byte aligned, and the lanes' float4 reads of
                          // consecutive rows fall in distinct bank groups (hd % 8 == 0)
  float* q_s = dec_smem;                 // [kDecRows][hd]
  float* k_s = q_s + kDecRows * hd;      // [kDecKeys][ks]
  float* v_s = k_s + kDecKeys * ks;      // [kDecKeys][ks]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = n_heads / n_kv_heads;
  const int64_t kvh = blockIdx.z;
  const int64_t i = blockIdx.y / row_chunks;
  const int rc = static_cast<int>(blockIdx.y % row_chunks);
  const int rows = min(kDecRows, G - rc * kDecRows);
  const int64_t h0 = kvh * G + rc * kDecRows;
  const int64_t qp = q_pos0 + i;
  const int64_t split = blockIdx.x, splits = gridDim.x;
  for (int idx = tid; idx < kDecRows * hd; idx += blockDim.x) {
    const int r = idx / hd, c = idx % hd;
    q_s[idx] = r < rows ? q[(i * n_heads + h0 + r) * hd + c] : 0.0f;
  }
  const int r0 = 2 * warp, r1 = r0 + 1;
  const bool live = r0 < rows;  // warp-uniform; row r1 past `rows` is computed on zeros, not stored
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  float acc0[kDecMaxPerLane], acc1[kDecMaxPerLane];
#pragma unroll
  for (int e = 0; e < kDecMaxPerLane; ++e) acc0[e] = acc1[e] = 0.0f;

  const int c4 = hd / 4;
  const int64_t chunks = (nk + kDecKeys - 1) / kDecKeys;
  const int64_t c_begin = split * chunks_per_split;
  const int64_t c_end = c_begin + chunks_per_split < chunks ? c_begin + chunks_per_split : chunks;
  for (int64_t chunk = c_begin; chunk < c_end; ++chunk) {
    const int64_t j0 = chunk * kDecKeys;
    for (int idx = tid; idx < kDecKeys * c4; idx += blockDim.x) {
      const int r = idx / c4, c = idx % c4;
      const int64_t j = j0 + r;
      const bool ok = j < nk;
      const int64_t off = ((ok ? j : 0) * n_kv_heads + kvh) * hd + 4 * c;
      cp_async16(k_s + r * ks + 4 * c, k + off, ok);
      cp_async16(v_s + r * ks + 4 * c, v + off, ok);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();  // the chunk (and, the first time, q_s) is visible to every warp
    const int64_t j = j0 + lane;
    const bool vis = j < nk && key_visible(mask, qp, key_pos(k_pos, mask, j));
    // Every warp computes the same `vis` (one query per block), so this is uniform across the block.
    if (live && __any_sync(0xffffffffu, vis)) {
      const float4* k4 = reinterpret_cast<const float4*>(k_s + lane * ks);
      const float4* qa = reinterpret_cast<const float4*>(q_s + r0 * hd);
      const float4* qb = reinterpret_cast<const float4*>(q_s + r1 * hd);
      float d0 = 0.0f, d1 = 0.0f;
#pragma unroll 4
      for (int c = 0; c < c4; ++c) {
        const float4 kk = k4[c], a = qa[c], b = qb[c];
        d0 += a.x * kk.x;
        d0 += a.y * kk.y;
        d0 += a.z * kk.z;
        d0 += a.w * kk.w;
        d1 += b.x * kk.x;
        d1 += b.y * kk.y;
        d1 += b.z * kk.z;
        d1 += b.w * kk.w;
      }
      float s0 = d0 * scale, s1 = d1 * scale;
      if (softcap > 0.0f) {
        s0 = softcap * tanhf(s0 / softcap);
        s1 = softcap * tanhf(s1 / softcap);
      }
      s0 = vis ? s0 : -INFINITY;
      s1 = vis ? s1 : -INFINITY;
      // Some key is visible, so both maxima are finite.
      const float n0 = fmaxf(m0, warp_max(s0)), n1 = fmaxf(m1, warp_max(s1));
      const float corr0 = expf(m0 - n0), corr1 = expf(m1 - n1);  // 0 while nothing was seen
      const float p0 = vis ? expf(s0 - n0) : 0.0f, p1 = vis ? expf(s1 - n1) : 0.0f;
      l0 = l0 * corr0 + warp_sum(p0);
      l1 = l1 * corr1 + warp_sum(p1);
      m0 = n0;
      m1 = n1;
#pragma unroll
      for (int e = 0; e < kDecMaxPerLane; ++e) {
        acc0[e] *= corr0;
        acc1[e] *= corr1;
      }
#pragma unroll 4
      for (int jj = 0; jj < kDecKeys; ++jj) {
        const float pa = __shfl_sync(0xffffffffu, p0, jj), pb = __shfl_sync(0xffffffffu, p1, jj);
        const float* vrow = v_s + jj * ks;
#pragma unroll
        for (int e = 0; e < kDecMaxPerLane; ++e) {
          const int c = lane + 32 * e;
          if (32 * e < hd && c < hd) {
            const float vv = vrow[c];
            acc0[e] += pa * vv;
            acc1[e] += pb * vv;
          }
        }
      }
    }
    __syncthreads();  // every warp is done with k_s / v_s before the next chunk overwrites them
  }
  if (!live) return;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = r0 + half;
    if (r >= rows) continue;
    const float m = half == 0 ? m0 : m1, l = half == 0 ? l0 : l1;
    const int64_t qh = i * n_heads + h0 + r;
    if (splits == 1) {
      const float inv = m == -INFINITY ? 0.0f : 1.0f / l;  // no visible key: zeros
#pragma unroll
      for (int e = 0; e < kDecMaxPerLane; ++e) {
        const int c = lane + 32 * e;
        if (c < hd) out[qh * hd + c] = (half == 0 ? acc0[e] : acc1[e]) * inv;
      }
    } else {  // partial state (m = -inf, l = 0, acc = 0 when this split saw no key)
      if (lane == 0) {
        part_ml[(qh * splits + split) * 2] = m;
        part_ml[(qh * splits + split) * 2 + 1] = m == -INFINITY ? 0.0f : l;
      }
      float* pa = part_acc + (qh * splits + split) * hd;
#pragma unroll
      for (int e = 0; e < kDecMaxPerLane; ++e) {
        const int c = lane + 32 * e;
        if (c < hd) pa[c] = half == 0 ? acc0[e] : acc1[e];
      }
    }
  }
}

int64_t sm_count() {
  static const int64_t sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) !=
                                                  cudaSuccess)
      n = 0;
    cudaGetLastError();
    return int64_t{n > 0 ? n : 132};
  }();
  return sms;
}

}  // namespace

bool attention_decode_gqa(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                          const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          float scale, float softcap, const MaskArgs& mask, float* out, cudaStream_t cs) {
  const auto aligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (head_dim % 4 != 0 || head_dim > 32 * kDecMaxPerLane || !aligned(k) || !aligned(v)) return false;
  static std::once_flag once;  // head_dim 256 needs 74,752 bytes of dynamic shared memory
  std::call_once(once, [] {
    VLM_CUDA(cudaFuncSetAttribute(attention_decode_gqa_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(decode_smem_bytes(32 * kDecMaxPerLane))),
             "attention");
  });
  const int64_t group = n_heads / n_kv_heads;
  const int64_t row_chunks = (group + kDecRows - 1) / kDecRows;
  const int64_t base = nq * row_chunks * n_kv_heads;  // blocks per split
  const int64_t chunks = std::max<int64_t>((nk + kDecKeys - 1) / kDecKeys, 1);
  int64_t splits = std::clamp<int64_t>((4 * sm_count() + base - 1) / base, 1, chunks);
  int64_t per_split = (chunks + splits - 1) / splits;
  per_split = std::max(per_split, (chunks + kDecMaxSplits - 1) / kDecMaxSplits);
  splits = (chunks + per_split - 1) / per_split;  // no empty split
  const int64_t qh = nq * n_heads;
  float* part_ml = nullptr;
  float* part_acc = nullptr;
  if (splits > 1) {
    const size_t ml_floats = static_cast<size_t>(qh * splits * 2);
    float* scratch = static_cast<float*>(
        detail::scratch(sizeof(float) * (ml_floats + static_cast<size_t>(qh * splits * head_dim)), "attention"));
    part_ml = scratch;
    part_acc = scratch + ml_floats;
  }
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(nq * row_chunks),
                  static_cast<unsigned>(n_kv_heads));
  attention_decode_gqa_kernel<<<grid, kDecWarps * 32, decode_smem_bytes(head_dim), cs>>>(
      q, q_pos0, k, v, k_pos_dev, nk, static_cast<int>(n_heads), static_cast<int>(n_kv_heads),
      static_cast<int>(head_dim), scale, softcap, mask, static_cast<int>(row_chunks), per_split, out, part_ml,
      part_acc);
  VLM_CUDA_LAUNCHED("attention");
  if (splits > 1) launch_attention_combine(part_ml, part_acc, qh, splits, head_dim, out, cs);
  return true;
}

}  // namespace vlm::ops::cuda::kernels
