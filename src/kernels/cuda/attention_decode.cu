// Decode attention (nq < 8) in f32 on CUDA cores, grouped by kv head and split over keys: one
// 8-warp block per (key split, query, kv head, group of up to 8 of the kv head's query heads). The
// block walks its split in chunks of 32 keys. A chunk's K and V rows go to shared memory with
// cp.async, all issued at once (the chunk is one memory round trip; the block's q rows ride in the
// first chunk's group), and then serve every query head of the group, so a kv head's cache is read
// once per step, not heads / kv_heads times. Warp w owns query head w: lane j scores key j of the
// chunk (float4 reads of its padded K row, four partial sums), one warp max / sum per chunk keeps the
// online softmax, and the values are accumulated key by key from shared memory with the lanes over
// head_dim.
//
// Quantized K/V (ops::attention_quantized): the same kernel with the chunk's packed codes, scales and
// biases staged by cp.async instead, then dequantized into the same f32 tiles in shared memory with
// kv_dequantize's arithmetic (__fadd_rn(__fmul_rn(s, q), b)), so the result is bit for bit that of
// kv_dequantize followed by attention on the GPU, and no f32 rows are written to global memory.
//
// Key range: with a consecutive k_pos (standard caches) the host narrows the keys to those a query
// can see (window start, causal end without image groups), so a sliding-window layer of a long
// standard cache reads only its window. Every key of the range still goes through key_visible.
//
// Splits: about two blocks per SM (at most 4096 splits). Each split writes its unnormalized state
// (m, l, acc) to scratch and attention_combine_kernel (attention.cu) merges them in a second launch.
// A one-launch merge is here too, behind VLMCHECK_CUDA_DECODE_MERGE=last-block: splits numbered in
// teams of about sqrt(splits); the last block of a team to finish (an atomic counter per team) merges
// the team's states, and the last team merger of a (query, row group, kv head) merges the team
// states into the output; the last block of each counter resets it, so the counters (a persistent
// buffer from the caching allocator, zeroed once when grown, by a memset that becomes a graph node
// under capture) are zero for the next call, with no host sync. It is correct but measured slower
// (see last_block_merge()). History: 23 µs per call at 2080 keys on the 3B shape with one block per
// (query, head, split) loading K rows per lane from global memory; 14 µs with the 4-warp version of
// this kernel; 13.4-14.0 µs with this one (H200, two launches).
#include "kernels/cuda/attention_common.cuh"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kDecWarps = 8;
constexpr int kDecThreads = kDecWarps * 32;
constexpr int kDecRows = kDecWarps;  // query heads per block, one per warp
constexpr int kDecKeys = 32;             // keys per chunk, one per lane
constexpr int kDecMaxPerLane = 8;        // head_dim <= 256
constexpr int kDecMaxHd = 32 * kDecMaxPerLane;
constexpr int64_t kDecMaxSplits = 4096;  // teams and team sizes stay <= 64 (sqrt)
constexpr int kDecMaxMerge = 64;         // states merged by one block
constexpr int kDecMergePairs = kDecRows * kDecMaxHd / kDecThreads;  // (row, column) outputs per thread

// Everything the kernel needs, by value.
struct DecodeArgs {
  const float* q;  // [nq, n_heads, hd]
  int64_t q_pos0;
  // f32 rows: k, v [nk, n_kv_heads, hd]
  const float* k;
  const float* v;
  // quantized rows (kv_quantize layout): packed [nk, words_row], scales / biases [nk, groups_row]
  const uint32_t* kq;
  const float* ks;
  const float* kb;
  const uint32_t* vq;
  const float* vs;
  const float* vb;
  int bits, group;
  int64_t words_row, groups_row;
  bool vec16;    // packed rows and heads 16-byte aligned: 16-byte cp.async for the codes
  bool q_vec16;  // q 16-byte aligned
  const int64_t* k_pos;  // device, or null (consecutive: mask.kpos0 + j)
  int64_t nk, j_lo, n_range;  // keys [j_lo, j_lo + n_range) are walked
  int n_heads, n_kv_heads, hd;
  float scale, softcap;
  MaskArgs mask;
  int row_chunks;
  int64_t chunks_per_split;
  int team;   // splits per team
  int teams;  // teams per (query, row group, kv head)
  float* out;       // [nq, n_heads, hd]
  float* part_ml;   // [nq * n_heads, splits, 2]
  float* part_acc;  // [nq * n_heads, splits, hd]
  float* team_ml;   // [nq * n_heads, teams, 2]
  float* team_acc;  // [nq * n_heads, teams, hd]
  int* counters;    // [nq * row_chunks * n_kv_heads, teams + 1], zero between calls
};

// Shared memory: q rows, the f32 K/V tiles (rows padded to hd + 4 floats: 16-byte aligned, and the
// lanes' float4 reads of consecutive rows fall in distinct bank groups), and for quantized K/V the
// staged packed chunk (codes, then scales, then biases, K then V).
size_t decode_smem_bytes(int64_t hd, bool quant, int bits, int group) {
  size_t floats = static_cast<size_t>(kDecRows * hd + 2 * kDecKeys * (hd + 4));
  if (quant) floats += static_cast<size_t>(2 * kDecKeys * (hd * bits / 32 + 2 * (hd / group)));
  return sizeof(float) * floats;
}

// Merges `count` states (m, l, acc) of the block's `rows` rows into one per row: states of row r are
// at index (qh0 + r) * stride + first + s. final: writes out[(qh0 + r) * hd + c] normalized (zeros
// when no state saw a key); else the merged unnormalized state at (qh0 + r) * dst_stride + dst_index.
__device__ void merge_states(const float* __restrict__ ml, const float* __restrict__ acc, int64_t stride,
                             int64_t first, int count, int rows, int64_t qh0, int hd, bool final, float* __restrict__ out,
                             float* __restrict__ dst_ml, float* __restrict__ dst_acc, int64_t dst_stride,
                             int64_t dst_index) {
  __shared__ float w_s[kDecRows][kDecMaxMerge];
  __shared__ float l_s[kDecRows][kDecMaxMerge];
  __shared__ float big_m[kDecRows], big_l[kDecRows];
  const int tid = threadIdx.x;
  for (int idx = tid; idx < rows * count; idx += blockDim.x) {
    const int r = idx / count, s = idx % count;
    const float2 st = __ldcg(reinterpret_cast<const float2*>(ml + ((qh0 + r) * stride + first + s) * 2));
    w_s[r][s] = st.x;
    l_s[r][s] = st.y;
  }
  __syncthreads();
  if (tid < rows) {
    float m = -INFINITY;
    for (int s = 0; s < count; ++s) m = fmaxf(m, w_s[tid][s]);
    float total = 0.0f;
    for (int s = 0; s < count; ++s) {
      const float w = w_s[tid][s] == -INFINITY ? 0.0f : expf(w_s[tid][s] - m);  // 0 for a split that saw nothing
      w_s[tid][s] = w;
      total += l_s[tid][s] * w;
    }
    big_m[tid] = m;
    big_l[tid] = total;
  }
  __syncthreads();
  // Each thread owns up to kDecMergePairs (row, column) outputs and issues their loads for four
  // states at a time before using any: the merge is a few L2 round trips, not one per state.
  int pr[kDecMergePairs], pc[kDecMergePairs];
  float sum[kDecMergePairs];
#pragma unroll
  for (int p = 0; p < kDecMergePairs; ++p) {
    const int idx = tid + p * kDecThreads;
    pr[p] = idx < rows * hd ? idx / hd : -1;
    pc[p] = idx < rows * hd ? idx % hd : 0;
    sum[p] = 0.0f;
  }
  for (int s0 = 0; s0 < count; s0 += 4) {
    float v[4][kDecMergePairs];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int p = 0; p < kDecMergePairs; ++p)
        v[u][p] = s0 + u < count && pr[p] >= 0
                      ? __ldcg(acc + ((qh0 + pr[p]) * stride + first + s0 + u) * hd + pc[p])
                      : 0.0f;
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int p = 0; p < kDecMergePairs; ++p)
        if (s0 + u < count && pr[p] >= 0) sum[p] += v[u][p] * w_s[pr[p]][s0 + u];
  }
#pragma unroll
  for (int p = 0; p < kDecMergePairs; ++p) {
    if (pr[p] < 0) continue;
    const int r = pr[p], c = pc[p];
    if (final) {
      out[(qh0 + r) * hd + c] = big_m[r] == -INFINITY ? 0.0f : sum[p] * (1.0f / big_l[r]);
    } else {
      dst_acc[((qh0 + r) * dst_stride + dst_index) * hd + c] = sum[p];
    }
  }
  if (!final && tid < rows) {
    dst_ml[((qh0 + tid) * dst_stride + dst_index) * 2] = big_m[tid];
    dst_ml[((qh0 + tid) * dst_stride + dst_index) * 2 + 1] = big_m[tid] == -INFINITY ? 0.0f : big_l[tid];
  }
}

// 4-byte asynchronous global -> shared copy (cp.async.ca: 4 and 8 bytes may not bypass L1); valid ==
// false writes zeros.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}

// Grid: (split, query * row_chunks + row chunk, kv head).
template <bool kQuant>
__global__ void __launch_bounds__(kDecThreads, 3) attention_decode_kernel(const DecodeArgs a) {
  extern __shared__ __align__(16) float dec_smem[];
  detail::chain_wait();  // chained launch (common.cuh): q and the new K/V rows come from the kernels before
  detail::chain_release();
  const int hd = a.hd;
  const int ks = hd + 4;
  float* q_s = dec_smem;             // [kDecRows][hd]
  float* k_s = q_s + kDecRows * hd;  // [kDecKeys][ks]
  float* v_s = k_s + kDecKeys * ks;  // [kDecKeys][ks]
  // Quantized staging: per key, the kv head's codes (wph words), then scales and biases (gph each).
  const int wph = kQuant ? hd * a.bits / 32 : 0, gph = kQuant ? hd / a.group : 0;
  uint32_t* kraw = reinterpret_cast<uint32_t*>(v_s + kDecKeys * ks);  // [kDecKeys][wph]
  uint32_t* vraw = kraw + kDecKeys * wph;
  float* kscale = reinterpret_cast<float*>(vraw + kDecKeys * wph);  // [kDecKeys][gph]
  float* kbias = kscale + kDecKeys * gph;
  float* vscale = kbias + kDecKeys * gph;
  float* vbias = vscale + kDecKeys * gph;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = a.n_heads / a.n_kv_heads;
  const int64_t kvh = blockIdx.z;
  const int64_t i = blockIdx.y / a.row_chunks;
  const int rc = static_cast<int>(blockIdx.y % a.row_chunks);
  const int rows = min(kDecRows, G - rc * kDecRows);
  const int64_t h0 = kvh * G + rc * kDecRows;
  const int64_t qh0 = i * a.n_heads + h0;
  const int64_t qp = a.q_pos0 + i;
  const int64_t split = blockIdx.x, splits = gridDim.x;
  // q rows: asynchronous copies in the first chunk's group (one round trip for both), or plain
  // loads when q is not 16-byte aligned.
  if (a.q_vec16) {
    for (int idx = tid; idx < rows * (hd / 4); idx += blockDim.x)
      cp_async16(q_s + 4 * idx, a.q + qh0 * hd + 4 * idx, true);
  } else {
    for (int idx = tid; idx < rows * hd; idx += blockDim.x) q_s[idx] = a.q[qh0 * hd + idx];
  }
  const int r0 = warp;
  const bool live = r0 < rows;  // warp-uniform
  float m0 = -INFINITY, l0 = 0.0f;
  float acc0[kDecMaxPerLane];
#pragma unroll
  for (int e = 0; e < kDecMaxPerLane; ++e) acc0[e] = 0.0f;

  const int c4 = hd / 4;
  const int64_t chunks = (a.n_range + kDecKeys - 1) / kDecKeys;
  const int64_t c_begin = split * a.chunks_per_split;
  const int64_t c_end = c_begin + a.chunks_per_split < chunks ? c_begin + a.chunks_per_split : chunks;
  for (int64_t chunk = c_begin; chunk < c_end; ++chunk) {
    const int64_t j0 = a.j_lo + chunk * kDecKeys;
    const int64_t j_end = a.j_lo + a.n_range;
    if constexpr (!kQuant) {
      for (int idx = tid; idx < kDecKeys * c4; idx += blockDim.x) {
        const int r = idx / c4, c = idx % c4;
        const int64_t j = j0 + r;
        const bool ok = j < j_end;
        const int64_t off = ((ok ? j : 0) * a.n_kv_heads + kvh) * hd + 4 * c;
        cp_async16(k_s + r * ks + 4 * c, a.k + off, ok);
        cp_async16(v_s + r * ks + 4 * c, a.v + off, ok);
      }
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();  // the chunk (and, the first time, q_s) is visible to every warp
    } else {
      // Codes of this kv head: words [kvh * wph, (kvh + 1) * wph) of each key's packed row.
      if (a.vec16) {
        const int w4 = wph / 4;
        for (int idx = tid; idx < kDecKeys * w4; idx += blockDim.x) {
          const int r = idx / w4, c = idx % w4;
          const int64_t j = j0 + r;
          const bool ok = j < j_end;
          const int64_t off = (ok ? j : 0) * a.words_row + kvh * wph + 4 * c;
          cp_async16(kraw + r * wph + 4 * c, a.kq + off, ok);
          cp_async16(vraw + r * wph + 4 * c, a.vq + off, ok);
        }
      } else {
        for (int idx = tid; idx < kDecKeys * wph; idx += blockDim.x) {
          const int r = idx / wph, c = idx % wph;
          const int64_t j = j0 + r;
          const bool ok = j < j_end;
          const int64_t off = (ok ? j : 0) * a.words_row + kvh * wph + c;
          cp_async4(kraw + r * wph + c, a.kq + off, ok);
          cp_async4(vraw + r * wph + c, a.vq + off, ok);
        }
      }
      for (int idx = tid; idx < kDecKeys * gph; idx += blockDim.x) {
        const int r = idx / gph, g = idx % gph;
        const int64_t j = j0 + r;
        const bool ok = j < j_end;
        const int64_t off = (ok ? j : 0) * a.groups_row + kvh * gph + g;
        cp_async4(kscale + idx, a.ks + off, ok);
        cp_async4(kbias + idx, a.kb + off, ok);
        cp_async4(vscale + idx, a.vs + off, ok);
        cp_async4(vbias + idx, a.vb + off, ok);
      }
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      // kv_dequantize's arithmetic: w = scale * q + bias, the product rounded (keys past the range
      // were zero-filled: codes, scales and biases 0, so their rows are 0).
      for (int idx = tid; idx < kDecKeys * hd; idx += blockDim.x) {
        const int r = idx / hd, c = idx % hd;
        const int g = r * gph + c / a.group;
        const float kc = static_cast<float>(detail::unpack_bits(kraw + r * wph, c, a.bits));
        const float vc = static_cast<float>(detail::unpack_bits(vraw + r * wph, c, a.bits));
        k_s[r * ks + c] = __fadd_rn(__fmul_rn(kscale[g], kc), kbias[g]);
        v_s[r * ks + c] = __fadd_rn(__fmul_rn(vscale[g], vc), vbias[g]);
      }
      __syncthreads();
    }
    const int64_t j = j0 + lane;
    const bool vis = j < j_end && key_visible(a.mask, qp, key_pos(a.k_pos, a.mask, j));
    // Every warp computes the same `vis` (one query per block), so this is uniform across the block.
    if (live && __any_sync(0xffffffffu, vis)) {
      const float4* k4 = reinterpret_cast<const float4*>(k_s + lane * ks);
      const float4* qa = reinterpret_cast<const float4*>(q_s + r0 * hd);
      // Four partial sums (one per float4 lane) break the dependent FMA chain.
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 8
      for (int c = 0; c < c4; ++c) {
        const float4 kk = k4[c], qq = qa[c];
        d[0] += qq.x * kk.x;
        d[1] += qq.y * kk.y;
        d[2] += qq.z * kk.z;
        d[3] += qq.w * kk.w;
      }
      float s0 = ((d[0] + d[1]) + (d[2] + d[3])) * a.scale;
      if (a.softcap > 0.0f) s0 = a.softcap * tanhf(s0 / a.softcap);
      s0 = vis ? s0 : -INFINITY;
      // Some key is visible, so the maximum is finite.
      const float n0 = fmaxf(m0, warp_max(s0));
      const float corr0 = expf(m0 - n0);  // 0 while nothing was seen
      const float p0 = vis ? expf(s0 - n0) : 0.0f;
      l0 = l0 * corr0 + warp_sum(p0);
      m0 = n0;
#pragma unroll
      for (int e = 0; e < kDecMaxPerLane; ++e) acc0[e] *= corr0;
#pragma unroll 8
      for (int jj = 0; jj < kDecKeys; ++jj) {
        const float pa = __shfl_sync(0xffffffffu, p0, jj);
        const float* vrow = v_s + jj * ks;
#pragma unroll
        for (int e = 0; e < kDecMaxPerLane; ++e) {
          const int c = lane + 32 * e;
          if (32 * e < hd && c < hd) acc0[e] += pa * vrow[c];
        }
      }
    }
    __syncthreads();  // every warp is done with the tiles before the next chunk overwrites them
  }

  cp_async_wait<0>();  // a split with no chunk still owns q's copies
  // One split: normalize and store. Several: store this split's state, then the team / group merges.
  if (live) {
    const int64_t qh = qh0 + r0;
    if (splits == 1) {
      const float inv = m0 == -INFINITY ? 0.0f : 1.0f / l0;  // no visible key: zeros
#pragma unroll
      for (int e = 0; e < kDecMaxPerLane; ++e) {
        const int c = lane + 32 * e;
        if (c < hd) a.out[qh * hd + c] = acc0[e] * inv;
      }
    } else {  // partial state (m = -inf, l = 0, acc = 0 when this split saw no key)
      if (lane == 0) {
        a.part_ml[(qh * splits + split) * 2] = m0;
        a.part_ml[(qh * splits + split) * 2 + 1] = m0 == -INFINITY ? 0.0f : l0;
      }
      float* pa = a.part_acc + (qh * splits + split) * hd;
#pragma unroll
      for (int e = 0; e < kDecMaxPerLane; ++e) {
        const int c = lane + 32 * e;
        if (c < hd) pa[c] = acc0[e];
      }
    }
  }
  if (splits == 1 || a.counters == nullptr) return;  // no counters: attention_combine_kernel merges

  __shared__ int last_s;
  int* counters = a.counters + (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * (a.teams + 1);
  const int team_id = static_cast<int>(split / a.team);
  const int first = team_id * a.team;
  const int team_size = static_cast<int>(a.team < splits - first ? a.team : splits - first);
  __threadfence();  // this block's state is visible device-wide before it is counted
  __syncthreads();
  if (tid == 0) {
    const int done = atomicAdd(counters + team_id, 1) + 1;
    last_s = done == team_size;
    if (done == team_size) counters[team_id] = 0;  // every member has counted: ready for the next call
  }
  __syncthreads();
  if (!last_s) return;
  __threadfence();  // acquire: the other members' states are read after their counts
  if (a.teams == 1) {
    merge_states(a.part_ml, a.part_acc, splits, first, team_size, rows, qh0, hd, true, a.out, nullptr, nullptr, 0, 0);
    return;
  }
  merge_states(a.part_ml, a.part_acc, splits, first, team_size, rows, qh0, hd, false, nullptr, a.team_ml, a.team_acc,
               a.teams, team_id);
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    const int done = atomicAdd(counters + a.teams, 1) + 1;
    last_s = done == a.teams;
    if (done == a.teams) counters[a.teams] = 0;
  }
  __syncthreads();
  if (!last_s) return;
  __threadfence();
  merge_states(a.team_ml, a.team_acc, a.teams, 0, a.teams, rows, qh0, hd, true, a.out, nullptr, nullptr, 0, 0);
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

// The merge counters: a persistent buffer, zero between calls (each call's last blocks reset what
// they used). Grown through the caching allocator and zeroed on the stream, so a call inside a graph
// capture neither syncs nor frees memory to the driver.
int* decode_counters(size_t count, cudaStream_t cs) {
  static int* buf = nullptr;
  static size_t cap = 0;
  if (count > cap) {
    const size_t n = std::max<size_t>(count, 4096);
    int* fresh = static_cast<int*>(device_alloc(n * sizeof(int), MemCategory::kScratch));
    VLM_CUDA(cudaMemsetAsync(fresh, 0, n * sizeof(int), cs), "attention");
    // The old buffer goes back to the allocator's cache; later users are ordered after this call's
    // predecessors by the stream.
    if (buf != nullptr) device_free(buf, cap * sizeof(int), MemCategory::kScratch);
    buf = fresh;
    cap = n;
  }
  return buf;
}

// The splits are merged by attention_combine_kernel in a second launch unless
// VLMCHECK_CUDA_DECODE_MERGE=last-block (read once; set_decode_last_block_merge switches it for A/B
// runs in one process) asks for the in-kernel merge by the last blocks. That one-launch variant is correct (test_kernels_cuda runs every
// decode case through it) but measured slower on the H200: 26 vs 14 µs at 2048 keys on the 3B shape,
// 300 vs 367 tok/s end to end, most likely the per-thread __threadfence() of every block on the
// critical path (the gap doubled when the blocks went from 128 to 256 threads). See CUDA.md.
bool& last_block_merge_flag() {
  static bool on = [] {
    const char* e = std::getenv("VLMCHECK_CUDA_DECODE_MERGE");
    return e != nullptr && std::strcmp(e, "last-block") == 0;
  }();
  return on;
}
bool last_block_merge() { return last_block_merge_flag(); }

// Blocks per SM the split count aims at: 2 (measured on the H200 against 4 and 8: 36 vs 45 / 57 µs
// at 16k keys on the 3B shape, the same at 2k; VLMCHECK_CUDA_DECODE_BLOCKS_PER_SM=1..16 overrides it
// for tuning runs; read once).
int64_t blocks_per_sm() {
  static const int64_t n = [] {
    const char* e = std::getenv("VLMCHECK_CUDA_DECODE_BLOCKS_PER_SM");
    const int64_t v = e != nullptr ? std::atoll(e) : 0;
    return v >= 1 && v <= 16 ? v : int64_t{2};
  }();
  return n;
}

template <bool kQuant>
void launch_decode(DecodeArgs a, int64_t nq, cudaStream_t cs) {
  static std::once_flag once;  // head_dim 256 (8-bit codes) needs ~95 KB of dynamic shared memory
  std::call_once(once, [] {
    VLM_CUDA(cudaFuncSetAttribute(attention_decode_kernel<kQuant>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(decode_smem_bytes(kDecMaxHd, kQuant, 8, 32))),
             "attention");
  });
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int64_t row_chunks = (group + kDecRows - 1) / kDecRows;
  const int64_t base = nq * row_chunks * a.n_kv_heads;  // blocks per split
  const int64_t chunks = std::max<int64_t>((a.n_range + kDecKeys - 1) / kDecKeys, 1);
  int64_t splits = std::clamp<int64_t>((blocks_per_sm() * sm_count() + base - 1) / base, 1, chunks);
  int64_t per_split = (chunks + splits - 1) / splits;
  per_split = std::max(per_split, (chunks + kDecMaxSplits - 1) / kDecMaxSplits);
  splits = (chunks + per_split - 1) / per_split;  // no empty split
  a.row_chunks = static_cast<int>(row_chunks);
  a.chunks_per_split = per_split;
  a.team = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(splits))));
  a.teams = static_cast<int>((splits + a.team - 1) / a.team);
  if (splits > 1) {
    const int64_t qh = nq * a.n_heads;
    const size_t part = static_cast<size_t>(qh * splits), team = static_cast<size_t>(qh * a.teams);
    const size_t floats = part * (2 + static_cast<size_t>(a.hd)) + team * (2 + static_cast<size_t>(a.hd));
    float* scratch = static_cast<float*>(detail::scratch(sizeof(float) * floats, "attention"));
    a.part_ml = scratch;
    a.part_acc = a.part_ml + part * 2;
    a.team_ml = a.part_acc + part * static_cast<size_t>(a.hd);
    a.team_acc = a.team_ml + team * 2;
    if (last_block_merge()) a.counters = decode_counters(static_cast<size_t>(base * (a.teams + 1)), cs);
  }
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(nq * row_chunks),
                  static_cast<unsigned>(a.n_kv_heads));
  detail::launch_chained("attention", attention_decode_kernel<kQuant>, grid, dim3(kDecThreads),
                         decode_smem_bytes(a.hd, kQuant, a.bits, a.group), cs, a);
  if (splits > 1 && a.counters == nullptr)
    launch_attention_combine(a.part_ml, a.part_acc, nq * a.n_heads, splits, a.hd, a.out, cs);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The keys [j_lo, j_lo + n_range) that any query can see: the whole cache unless k_pos is
// consecutive (then the window start and, without image groups, the causal end bound it).
void key_range(const MaskArgs& mask, bool consecutive, int64_t nq, int64_t q_pos0, int64_t nk, DecodeArgs& a) {
  int64_t lo = 0, hi = nk;
  if (consecutive && nk > 0) {
    if (mask.window > 0) lo = std::clamp<int64_t>(q_pos0 - mask.window + 1 - mask.kpos0, 0, nk);
    if (mask.causal && mask.groups == nullptr) hi = std::clamp<int64_t>(q_pos0 + nq - 1 - mask.kpos0 + 1, 0, nk);
  }
  a.j_lo = lo;
  a.n_range = std::max<int64_t>(hi - lo, 0);
}

DecodeArgs common_args(const float* q, int64_t nq, int64_t q_pos0, const int64_t* k_pos_dev, int64_t nk,
                       int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                       const MaskArgs& mask, float* out) {
  DecodeArgs a{};
  a.q = q;
  a.q_pos0 = q_pos0;
  a.k_pos = k_pos_dev;
  a.nk = nk;
  a.n_heads = static_cast<int>(n_heads);
  a.n_kv_heads = static_cast<int>(n_kv_heads);
  a.hd = static_cast<int>(head_dim);
  a.scale = scale;
  a.softcap = softcap;
  a.mask = mask;
  a.out = out;
  a.bits = 0;
  a.group = 32;
  a.q_vec16 = aligned16(q);
  key_range(mask, k_pos_dev == nullptr, nq, q_pos0, nk, a);
  return a;
}

}  // namespace

bool attention_decode_gqa(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                          const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          float scale, float softcap, const MaskArgs& mask, float* out, cudaStream_t cs) {
  if (head_dim % 4 != 0 || head_dim > kDecMaxHd || !aligned16(k) || !aligned16(v)) return false;
  DecodeArgs a = common_args(q, nq, q_pos0, k_pos_dev, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
  a.k = k;
  a.v = v;
  launch_decode<false>(a, nq, cs);
  return true;
}

bool attention_decode_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv,
                                const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads,
                                int64_t head_dim, float scale, float softcap, const MaskArgs& mask, float* out,
                                cudaStream_t cs) {
  if (head_dim % 4 != 0 || head_dim > kDecMaxHd || head_dim % kv.group_size != 0) return false;
  DecodeArgs a = common_args(q, nq, q_pos0, k_pos_dev, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
  a.kq = kv.k_packed;
  a.ks = kv.k_scales;
  a.kb = kv.k_biases;
  a.vq = kv.v_packed;
  a.vs = kv.v_scales;
  a.vb = kv.v_biases;
  a.bits = kv.bits;
  a.group = kv.group_size;
  a.words_row = kv_packed_words(n_kv_heads * head_dim, kv.bits);
  a.groups_row = n_kv_heads * head_dim / kv.group_size;
  const int64_t wph = head_dim * kv.bits / 32;
  a.vec16 = wph % 4 == 0 && a.words_row % 4 == 0 && aligned16(kv.k_packed) && aligned16(kv.v_packed);
  launch_decode<true>(a, nq, cs);
  return true;
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {
void set_decode_last_block_merge(bool on) { kernels::last_block_merge_flag() = on; }
}  // namespace vlm::ops::cuda
