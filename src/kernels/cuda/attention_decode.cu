// Decode attention (nq < 8) in f32 on CUDA cores, grouped by kv head and split over keys: one
// 8-warp block per (key split, query, kv head, group of up to 8 of the kv head's query heads). Two
// kernels share that layout and the split merge: the register kernel (the default, described at
// attention_decode_reg_kernel below: K/V straight into registers, no barrier in the key walk) and the
// tile kernel described here (VLMCHECK_CUDA_DECODE_KERNEL=tile). Both formats (f32 rows and
// ops::attention_quantized's packed rows) take the same kernel and layout for a given shape.
//
// Register vs tile kernel, kernel alone (ncu gpu__time_duration, --cache-control none, --clock-control
// none, `VLMCHECK_BENCH_DECODE_PROFILE=3 bench_cuda_kernels --decode-attention`, H200, median of 3, µs;
// register kernel with its final one-team merge): f32 K/V 3B 2k 10.9 vs 12.8, 3B 16k 20.8 vs 29.7, 7B
// 2k 11.0 vs 13.6, 7B 16k 30.8 vs 42.7, Gemma 3 4B 2k 12.1 vs 14.9, 16k 42.9 vs 53.7, its 1024-key
// window 9.5 vs 10.1; 4-bit g64 K/V 3B 2k 11.9 vs 18.4, 3B 16k 28.2 vs 43.3, 7B 2k 12.0 vs 18.7, 7B 16k
// 43.3 vs 70.8, Gemma 2k 14.4 vs 21.2. The floor at 2k (~11 µs for 4 MB) is the chain of dependent
// steps (launch, the K/V round trip, the split state's write + fence + atomic, the last block's merge
// round trip), not bandwidth. End to end (synthetic Qwen2.5-VL-3B, 2048-token prompt, same bundle,
// H200): bf16 decode 366.9 vs 356.4 tok/s, MLX 4-bit 392.2 vs 380.6 tok/s (both with the register
// kernel's earlier two-level merge, teams of 16).
//
// The tile kernel walks its split in chunks of 32 * slices keys. A chunk's K and V rows go to shared memory
// with cp.async, all issued at once (the chunk is one memory round trip; the block's q rows ride in
// the first chunk's group), and then serve every query head of the group, so a kv head's cache is
// read once per step, not heads / kv_heads times.
//
// Work of a chunk: warp w owns rows_per_warp query heads (row group p = w % row_groups) and the
// 32-key slice s = w / row_groups of the chunk. Lane j scores key j of its slice against each of its
// rows (float4 reads of the padded K row, four partial sums per row), one warp max / sum per row and
// slice keeps the online softmax, and the values are accumulated key by key from shared memory with
// the lanes over head_dim. Two rows per warp (groups of 4+ query heads) read each K / V element of
// shared memory once for both rows: shared-memory traffic, the bound of this kernel once the chunk
// has landed, is ~45% lower than one row per warp, and the freed warps take a second 32-key slice.
// After the walk the slices' states are merged in shared memory, so a block leaves one state per row.
//
// Quantized K/V (ops::attention_quantized): the same kernel with the chunk's packed codes, scales and
// biases staged by cp.async instead, then dequantized into the same f32 tiles in shared memory with
// kv_dequantize's arithmetic (__fadd_rn(__fmul_rn(s, q), b)), so the result is bit for bit that of
// kv_dequantize followed by attention on the GPU (the slice and split layout depends only on the
// shape, never on the K/V format), and no f32 rows are written to global memory.
//
// Key range: with a consecutive k_pos (standard caches) the host narrows the keys to those a query
// can see (window start, causal end without image groups), so a sliding-window layer of a long
// standard cache reads only its window. Every key of the range still goes through key_visible.
//
// Splits: about two blocks per SM (at most 4096 splits). By default the splits are merged in the
// same launch: every split writes its unnormalized state (m, l, acc) to scratch and counts itself on
// an atomic counter; the last block of a team to arrive merges the team's states (up to 64 splits
// are one team; more form teams of about sqrt(splits)), and with several teams the last team merger
// merges the team states into the output. Each block publishes with one fence and one atomic by
// thread 0 after a barrier (the pattern of cooperative groups' grid sync): the first version ran
// __threadfence() in every thread and measured ~12 µs slower than the two-launch merge. The last
// block of each counter resets it, so the counters (a persistent buffer from the caching allocator,
// zeroed once when grown, by a memset that becomes a graph node under capture) are zero for the next
// call, with no host sync. VLMCHECK_CUDA_DECODE_MERGE=combine (or set_decode_last_block_merge(false))
// merges in a second launch instead (attention_combine_kernel, attention.cu).
//
// History (3B shape, 2080 keys, H200, per call): 23 µs with one block per (query, head, split) loading
// K rows per lane from global memory; 14 µs with a 4-warp version of this kernel; 13.4-14.0 µs with
// one row per warp, 32-key chunks and the two-launch merge. This version against that one
// (`bench_cuda_kernels --decode-attention` of both builds in one call, H200, median µs per call, f32
// K/V): 3B 2k 13.6 -> 13.7 (two launches 14.6; the old one-launch merge 26.4), 3B 16k 36.9 -> 31.2,
// 7B 2k 16.4 -> 14.6, 7B 16k 52.9 -> 44.1, Gemma 3 4B 2k 20.1 -> 16.2, 16k 61.1 -> 55.7, its
// 1024-key window at 16k 21.7 -> 12.3; 4-bit g64 K/V: 3B 2k 15.6 -> 19.0 (slower: twice the keys
// dequantized per block, half the blocks), 3B 16k 50.5 -> 44.3, 7B 16k 80.9 -> 72.4, Gemma 2k 26.2 ->
// 22.7. The 2k rows barely move with any layout or merge (13.6-14.6 µs): below ~4k keys the call is
// bound by something this kernel's work does not change (host issue of the op, launch), which the
// bench cannot separate from the GPU time. End to end (synthetic Qwen2.5-VL-3B bf16, 2048-token
// prompt) decode is the same: 352.5 vs 354.3 tok/s with the old layout and merge forced by the
// environment (rows per warp 1, combine) in the same call.
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/rope_common.cuh"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kDecWarps = 8;
constexpr int kDecThreads = kDecWarps * 32;
constexpr int kDecRows = kDecWarps;      // query heads per block
constexpr int kDecKeys = 32;             // keys per slice, one per lane
constexpr int kDecMaxPerLane = 8;        // head_dim <= 256
constexpr int kDecMaxHd = 32 * kDecMaxPerLane;
constexpr int64_t kDecMaxSplits = 4096;  // teams and team sizes stay <= 64 (sqrt)
constexpr int kDecMaxMerge = 64;         // states merged by one block
constexpr size_t kDecTileBudget = 72 * 1024;  // f32 K/V tile bytes per block (hd 128: two 32-key slices)
constexpr int kDecMergeQuads = kDecRows * kDecMaxHd / 4 / kDecThreads;  // float4 outputs per merging thread
constexpr int kDecMergeBatch = 16;  // states whose loads a merging thread has in flight at once

// Everything the kernel needs, by value.
struct DecodeArgs {
  const float* q;  // [nq, n_heads, hd]
  int64_t q_pos0;
  // f32 rows: k, v [nk, n_kv_heads, hd]
  const float* k;
  const float* v;
  // ops::attention_with_rope (register kernel, f32 K/V): the new key row rope_key, rotated in
  // registers by the block that owns it and written back here (k's own rows, writable).
  float* k_rot;
  int64_t rope_key;
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
  int row_groups;  // warps over a block's rows (rows_per_warp each)
  int slices;      // 32-key slices per chunk (row_groups * slices <= 8 warps)
  int64_t chunks_per_split;
  int team;   // splits per team
  int teams;  // teams per (query, row group, kv head)
  float* out;       // [nq, n_heads, hd]
  float* part_ml;   // [nq * n_heads, splits, 2]
  float* part_acc;  // [nq * n_heads, splits, hd]
  float* team_ml;   // [nq * n_heads, teams, 2]
  float* team_acc;  // [nq * n_heads, teams, hd]
  int* counters;    // [nq * row_chunks * n_kv_heads, teams + 1], zero between calls
  unsigned long long* dbg;  // diagnostics (VLMCHECK_CUDA_DECODE_TIMES): per block 8 globaltimer stamps
};

// Shared memory: q rows, the f32 K/V tiles of a chunk (rows padded to hd + 4 floats: 16-byte
// aligned, and the lanes' float4 reads of consecutive rows fall in distinct bank groups), and for
// quantized K/V the staged packed chunk (codes, then scales, then biases, K then V). After the walk
// the tiles hold the slices' states ([slices][kDecRows] of (m, l) and of hd floats).
size_t decode_smem_bytes(int64_t hd, int64_t slices, bool quant, int bits, int group) {
  const int64_t keys = kDecKeys * slices;
  size_t floats = static_cast<size_t>(kDecRows * hd + 2 * keys * (hd + 4));
  if (quant) floats += static_cast<size_t>(2 * keys * (hd * bits / 32 + 2 * (hd / group)));
  return sizeof(float) * floats;
}

__device__ __forceinline__ void dbg_stamp(unsigned long long* dbg, int k) {
  if (dbg == nullptr || threadIdx.x != 0) return;
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  const unsigned long long b =
      (static_cast<unsigned long long>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  dbg[b * 8 + k] = t;
}

// Merges `count` states (m, l, acc) of the block's `rows` rows into one per row: states of row r are
// at index (qh0 + r) * stride + first + s. final: writes out[(qh0 + r) * hd + c] normalized (zeros
// when no state saw a key); else the merged unnormalized state at (qh0 + r) * dst_stride + dst_index.
// The states were written by other blocks of this launch: read through L2 (__ldcg), never L1.
__device__ void merge_states(const float* __restrict__ ml, const float* __restrict__ acc, int64_t stride,
                             int64_t first, int count, int rows, int64_t qh0, int hd, bool final, float* __restrict__ out,
                             float* __restrict__ dst_ml, float* __restrict__ dst_acc, int64_t dst_stride,
                             int64_t dst_index, bool prefetch) {
  __shared__ float w_s[kDecRows][kDecMaxMerge];
  __shared__ float l_s[kDecRows][kDecMaxMerge];
  __shared__ float big_m[kDecRows], big_l[kDecRows];
  const int tid = threadIdx.x;
  const int quads = hd / 4;
  // prefetch (the register kernel): the first batch of this thread's first output is loaded before
  // the weights are known, so its acc loads and the (m, l) loads below are one L2 round trip, not two.
  float4 pre[kDecMergeBatch];
  const int pre_n = prefetch ? min(count, kDecMergeBatch) : 0;
  if (prefetch && tid < rows * quads) {
    const float* src = acc + ((qh0 + tid / quads) * stride + first) * hd + 4 * (tid % quads);
#pragma unroll
    for (int u = 0; u < kDecMergeBatch; ++u)
      if (u < pre_n) pre[u] = __ldcg(reinterpret_cast<const float4*>(src + u * hd));
  }
  for (int idx = tid; idx < rows * count; idx += blockDim.x) {
    const int r = idx / count, s = idx % count;
    const float2 st = __ldcg(reinterpret_cast<const float2*>(ml + ((qh0 + r) * stride + first + s) * 2));
    w_s[r][s] = st.x;
    l_s[r][s] = st.y;
  }
  __syncthreads();
  // Warp r weighs row r's states, lanes over the states (count <= 64: two per lane).
  const int warp = tid >> 5, lane = tid & 31;
  if (warp < rows) {
    const int r = warp;
    float m = -INFINITY;
    for (int s = lane; s < count; s += 32) m = fmaxf(m, w_s[r][s]);
    m = warp_max(m);
    float total = 0.0f;
    for (int s = lane; s < count; s += 32) {
      const float w = w_s[r][s] == -INFINITY ? 0.0f : expf(w_s[r][s] - m);  // 0 for a split that saw nothing
      w_s[r][s] = w;
      total += l_s[r][s] * w;
    }
    total = warp_sum(total);
    if (lane == 0) {
      big_m[r] = m;
      big_l[r] = total;
    }
  }
  __syncthreads();
  // Each thread owns up to kDecMergeQuads (row, 4 columns) outputs and sums each over the states in
  // batches of kDecMergeBatch independent float4 loads: the merge is a few L2 round trips, not one
  // per state.
#pragma unroll 1
  for (int p = 0; p < kDecMergeQuads; ++p) {
    const int idx = tid + p * kDecThreads;
    if (idx >= rows * quads) break;
    const int r = idx / quads, c = 4 * (idx % quads);
    const float* src = acc + ((qh0 + r) * stride + first) * hd + c;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    int s0 = 0;
    if (p == 0) {  // the prefetched batch
#pragma unroll
      for (int u = 0; u < kDecMergeBatch; ++u) {
        if (u >= pre_n) break;
        const float w = w_s[r][u];
        sum.x += pre[u].x * w;
        sum.y += pre[u].y * w;
        sum.z += pre[u].z * w;
        sum.w += pre[u].w * w;
      }
      s0 = pre_n;
    }
    for (; s0 + kDecMergeBatch <= count; s0 += kDecMergeBatch) {
      float4 v[kDecMergeBatch];
#pragma unroll
      for (int u = 0; u < kDecMergeBatch; ++u) v[u] = __ldcg(reinterpret_cast<const float4*>(src + (s0 + u) * hd));
#pragma unroll
      for (int u = 0; u < kDecMergeBatch; ++u) {
        const float w = w_s[r][s0 + u];
        sum.x += v[u].x * w;
        sum.y += v[u].y * w;
        sum.z += v[u].z * w;
        sum.w += v[u].w * w;
      }
    }
    for (; s0 < count; ++s0) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(src + s0 * hd));
      const float w = w_s[r][s0];
      sum.x += v.x * w;
      sum.y += v.y * w;
      sum.z += v.z * w;
      sum.w += v.w * w;
    }
    if (final) {
      const float inv = big_m[r] == -INFINITY ? 0.0f : 1.0f / big_l[r];  // no state saw a key: zeros
      *reinterpret_cast<float4*>(out + (qh0 + r) * hd + c) =
          make_float4(sum.x * inv, sum.y * inv, sum.z * inv, sum.w * inv);
    } else {
      *reinterpret_cast<float4*>(dst_acc + ((qh0 + r) * dst_stride + dst_index) * hd + c) = sum;
    }
  }
  if (!final && tid < rows) {
    dst_ml[((qh0 + tid) * dst_stride + dst_index) * 2] = big_m[tid];
    dst_ml[((qh0 + tid) * dst_stride + dst_index) * 2 + 1] = big_m[tid] == -INFINITY ? 0.0f : big_l[tid];
  }
}

// Counts this block on `counter` once its global writes are done; true in every thread of the last
// of `expected` blocks to arrive, which also resets the counter for the next call. One fence and one
// atomic by thread 0 after a barrier: the barrier orders the other threads' writes before thread 0's
// fence, which makes them visible device-wide before the count (release); the last block's fence
// after the count orders its later reads after the other members' counts (acquire).
__device__ __forceinline__ bool arrive_last(int* counter, int expected) {
  __shared__ int last_s;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const int done = atomicAdd(counter, 1) + 1;
    const bool last = done == expected;
    if (last) {
      *counter = 0;  // every member has counted: ready for the next call
      __threadfence();
    }
    last_s = last;
  }
  __syncthreads();
  return last_s != 0;
}

// 4-byte asynchronous global -> shared copy (cp.async.ca: 4 and 8 bytes may not bypass L1); valid ==
// false writes zeros.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}

// After a block has written its split's state (part_ml / part_acc): counts it, and the last block of
// each team merges the team's states (into the output, or with several teams into a team state that
// the last team merger merges into the output). Shared by both decode kernels.
__device__ void merge_splits(const DecodeArgs& a, int rows, int64_t qh0, int64_t split, int64_t splits, bool prefetch) {
  if (splits == 1 || a.counters == nullptr) return;  // no counters: attention_combine_kernel merges
  const int hd = a.hd;
  int* counters = a.counters + (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * (a.teams + 1);
  const int team_id = static_cast<int>(split / a.team);
  const int first = team_id * a.team;
  const int team_size = static_cast<int>(a.team < splits - first ? a.team : splits - first);
  const bool last = arrive_last(counters + team_id, team_size);
  dbg_stamp(a.dbg, 4);
  if (!last) return;
  if (a.teams == 1) {
    merge_states(a.part_ml, a.part_acc, splits, first, team_size, rows, qh0, hd, true, a.out, nullptr, nullptr, 0, 0,
                 prefetch);
    dbg_stamp(a.dbg, 5);
    return;
  }
  merge_states(a.part_ml, a.part_acc, splits, first, team_size, rows, qh0, hd, false, nullptr, a.team_ml, a.team_acc,
               a.teams, team_id, prefetch);
  if (!arrive_last(counters + a.teams, a.teams)) return;
  merge_states(a.team_ml, a.team_acc, a.teams, 0, a.teams, rows, qh0, hd, true, a.out, nullptr, nullptr, 0, 0,
               prefetch);
}

// Grid: (split, query * row_chunks + row chunk, kv head). kRpw: query heads (rows) per warp. Two
// blocks per SM (up to 128 registers: the merge's batched loads spilled at 80).
template <bool kQuant, int kRpw>
__global__ void __launch_bounds__(kDecThreads, 2) attention_decode_kernel(const DecodeArgs a) {
  extern __shared__ __align__(16) float dec_smem[];
  // Chained launch (common.cuh): release first, so the next kernel's blocks (o_proj's GEMV) become
  // resident on the SMs this latency-bound grid leaves free and start their weight loads; then wait,
  // since q and the new K/V rows come from the kernels before.
  detail::chain_release();
  detail::chain_wait();
  const int hd = a.hd;
  const int ks = hd + 4;
  const int keys = kDecKeys * a.slices;  // keys per chunk
  float* q_s = dec_smem;             // [kDecRows][hd]
  float* k_s = q_s + kDecRows * hd;  // [keys][ks]
  float* v_s = k_s + keys * ks;      // [keys][ks]
  // Quantized staging: per key, the kv head's codes (wph words), then scales and biases (gph each).
  const int wph = kQuant ? hd * a.bits / 32 : 0, gph = kQuant ? hd / a.group : 0;
  uint32_t* kraw = reinterpret_cast<uint32_t*>(v_s + keys * ks);  // [keys][wph]
  uint32_t* vraw = kraw + keys * wph;
  float* kscale = reinterpret_cast<float*>(vraw + keys * wph);  // [keys][gph]
  float* kbias = kscale + keys * gph;
  float* vscale = kbias + keys * gph;
  float* vbias = vscale + keys * gph;

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
  // Rows past `rows` that a half-live warp still scores (and never stores) read zeros, not stale
  // shared memory.
  for (int idx = rows * hd + tid; idx < min(kDecRows, a.row_groups * kRpw) * hd; idx += blockDim.x) q_s[idx] = 0.0f;
  // This warp's rows [r0, r0 + kRpw) and 32-key slice.
  const int r0 = (warp % a.row_groups) * kRpw;
  const int slice = warp / a.row_groups;
  const bool live = slice < a.slices && r0 < rows;  // warp-uniform
  float m[kRpw], l[kRpw], acc[kRpw][kDecMaxPerLane];
#pragma unroll
  for (int r = 0; r < kRpw; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < kDecMaxPerLane; ++e) acc[r][e] = 0.0f;
  }

  const int c4 = hd / 4;
  const int64_t chunks = (a.n_range + keys - 1) / keys;
  const int64_t c_begin = split * a.chunks_per_split;
  const int64_t c_end = c_begin + a.chunks_per_split < chunks ? c_begin + a.chunks_per_split : chunks;
  const int64_t j_end = a.j_lo + a.n_range;
  for (int64_t chunk = c_begin; chunk < c_end; ++chunk) {
    const int64_t j0 = a.j_lo + chunk * keys;
    if constexpr (!kQuant) {
      for (int idx = tid; idx < keys * c4; idx += blockDim.x) {
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
        for (int idx = tid; idx < keys * w4; idx += blockDim.x) {
          const int r = idx / w4, c = idx % w4;
          const int64_t j = j0 + r;
          const bool ok = j < j_end;
          const int64_t off = (ok ? j : 0) * a.words_row + kvh * wph + 4 * c;
          cp_async16(kraw + r * wph + 4 * c, a.kq + off, ok);
          cp_async16(vraw + r * wph + 4 * c, a.vq + off, ok);
        }
      } else {
        for (int idx = tid; idx < keys * wph; idx += blockDim.x) {
          const int r = idx / wph, c = idx % wph;
          const int64_t j = j0 + r;
          const bool ok = j < j_end;
          const int64_t off = (ok ? j : 0) * a.words_row + kvh * wph + c;
          cp_async4(kraw + r * wph + c, a.kq + off, ok);
          cp_async4(vraw + r * wph + c, a.vq + off, ok);
        }
      }
      for (int idx = tid; idx < keys * gph; idx += blockDim.x) {
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
      for (int idx = tid; idx < keys * hd; idx += blockDim.x) {
        const int r = idx / hd, c = idx % hd;
        const int g = r * gph + c / a.group;
        const float kc = static_cast<float>(detail::unpack_bits(kraw + r * wph, c, a.bits));
        const float vc = static_cast<float>(detail::unpack_bits(vraw + r * wph, c, a.bits));
        k_s[r * ks + c] = __fadd_rn(__fmul_rn(kscale[g], kc), kbias[g]);
        v_s[r * ks + c] = __fadd_rn(__fmul_rn(vscale[g], vc), vbias[g]);
      }
      __syncthreads();
    }
    const int key = slice * kDecKeys + lane;  // this lane's key within the chunk
    const int64_t j = j0 + key;
    const bool vis = live && j < j_end && key_visible(a.mask, qp, key_pos(a.k_pos, a.mask, j));
    if (live && __any_sync(0xffffffffu, vis)) {
      const float4* k4 = reinterpret_cast<const float4*>(k_s + key * ks);
      // Four partial sums per row (one per float4 lane) break the dependent FMA chain; each K float4
      // serves all kRpw rows.
      float d[kRpw][4];
#pragma unroll
      for (int r = 0; r < kRpw; ++r) d[r][0] = d[r][1] = d[r][2] = d[r][3] = 0.0f;
#pragma unroll 8
      for (int c = 0; c < c4; ++c) {
        const float4 kk = k4[c];
#pragma unroll
        for (int r = 0; r < kRpw; ++r) {
          const float4 qq = reinterpret_cast<const float4*>(q_s + (r0 + r) * hd)[c];
          d[r][0] += qq.x * kk.x;
          d[r][1] += qq.y * kk.y;
          d[r][2] += qq.z * kk.z;
          d[r][3] += qq.w * kk.w;
        }
      }
      float p[kRpw];
#pragma unroll
      for (int r = 0; r < kRpw; ++r) {
        float s0 = ((d[r][0] + d[r][1]) + (d[r][2] + d[r][3])) * a.scale;
        if (a.softcap > 0.0f) s0 = a.softcap * tanhf(s0 / a.softcap);
        s0 = vis ? s0 : -INFINITY;
        // Some key is visible, so the maximum is finite.
        const float n0 = fmaxf(m[r], warp_max(s0));
        const float corr = expf(m[r] - n0);  // 0 while nothing was seen
        p[r] = vis ? expf(s0 - n0) : 0.0f;
        l[r] = l[r] * corr + warp_sum(p[r]);
        m[r] = n0;
#pragma unroll
        for (int e = 0; e < kDecMaxPerLane; ++e) acc[r][e] *= corr;
      }
#pragma unroll 8
      for (int jj = 0; jj < kDecKeys; ++jj) {
        float pa[kRpw];
#pragma unroll
        for (int r = 0; r < kRpw; ++r) pa[r] = __shfl_sync(0xffffffffu, p[r], jj);
        const float* vrow = v_s + (slice * kDecKeys + jj) * ks;
#pragma unroll
        for (int e = 0; e < kDecMaxPerLane; ++e) {
          const int c = lane + 32 * e;
          if (32 * e < hd && c < hd) {
            const float vv = vrow[c];
#pragma unroll
            for (int r = 0; r < kRpw; ++r) acc[r][e] += pa[r] * vv;
          }
        }
      }
    }
    __syncthreads();  // every warp is done with the tiles before the next chunk overwrites them
  }
  cp_async_wait<0>();  // a split with no chunk still owns q's copies

  // The slices' states (m, l, acc) go to shared memory (over the tiles: every warp passed the loop's
  // last barrier) and are merged into one state per row: st_ml [slices][kDecRows][2], st_acc
  // [slices][kDecRows][hd]. A slice that saw no key has m = -inf and weight 0.
  float* st_ml = k_s;
  float* st_acc = st_ml + a.slices * kDecRows * 2;
  if (live) {
#pragma unroll
    for (int r = 0; r < kRpw; ++r) {
      if (r0 + r >= rows) continue;
      const int at = slice * kDecRows + r0 + r;
      if (lane == 0) {
        st_ml[2 * at] = m[r];
        st_ml[2 * at + 1] = l[r];
      }
#pragma unroll
      for (int e = 0; e < kDecMaxPerLane; ++e) {
        const int c = lane + 32 * e;
        if (c < hd) st_acc[at * hd + c] = acc[r][e];
      }
    }
  }
  __syncthreads();
  for (int idx = tid; idx < rows * hd; idx += blockDim.x) {
    const int r = idx / hd, c = idx % hd;
    float mx = -INFINITY;
    for (int s = 0; s < a.slices; ++s) mx = fmaxf(mx, st_ml[2 * (s * kDecRows + r)]);
    float sum_l = 0.0f, sum_acc = 0.0f;
    for (int s = 0; s < a.slices; ++s) {
      const int at = s * kDecRows + r;
      const float ms = st_ml[2 * at];
      const float w = ms == -INFINITY ? 0.0f : expf(ms - mx);
      sum_l += st_ml[2 * at + 1] * w;
      sum_acc += st_acc[at * hd + c] * w;
    }
    const int64_t qh = qh0 + r;
    if (splits == 1) {
      a.out[qh * hd + c] = mx == -INFINITY ? 0.0f : sum_acc * (1.0f / sum_l);  // no visible key: zeros
    } else {  // partial state (m = -inf, l = 0, acc = 0 when this split saw no key)
      a.part_acc[(qh * splits + split) * hd + c] = sum_acc;
      if (c == 0) {
        a.part_ml[(qh * splits + split) * 2] = mx;
        a.part_ml[(qh * splits + split) * 2 + 1] = mx == -INFINITY ? 0.0f : sum_l;
      }
    }
  }
  merge_splits(a, rows, qh0, split, splits, false);
}

// ---- The register kernel (the default) ----------------------------------------------------------------
// One 8-warp block per (key split, query, group of up to 8 query heads of one kv head), like the tile
// kernel above, but nothing of K/V goes through shared memory: warp w of a chunk owns kKW consecutive
// keys (chunk = 8 * kKW keys), and lane l holds dims [4c, 4c + 4) of each, c = l + 32 e (e < kE), as
// float4 registers, loaded straight from global memory (quantized: the codes, scale and bias of those
// dims, dequantized in registers with kv_dequantize's arithmetic). The next chunk's loads are issued
// before the current chunk is computed, so a split of several chunks keeps one chunk in flight while
// it computes another. The block's q rows sit in registers the same way.
//
// Work of a chunk per warp: kRows * kKW partial dot products per lane (kNV values), then one
// reduce-scatter over the warp (kNV - 1 shuffles for kNV = 32: lane i ends with score i, row i / kKW,
// key i % kKW), the online softmax per row among the lanes of that row, and acc[r] += p[r][t] * v[t]
// with p and the rows' corrections broadcast through the warp's slots in shared memory. After the
// walk the 8 warps' states are merged in shared memory, and the split's state goes through
// merge_splits like the tile kernel's.
//
// Why: at 2k keys the tile kernel ran 66 blocks that each staged 64 keys (64 KB) through shared memory
// with barriers, then merged 33 split states of 4 KB in one block (a chain of L2 round trips); this one
// runs one block per SM over 32-key chunks with no barrier in the walk, and merges the splits in
// teams of at most kRegTeam (two levels past that).
constexpr int kV2Warps = 8;
constexpr int kV2Threads = kV2Warps * 32;

template <int kE>
struct V2Shape {
  static constexpr int kKW = kE == 1 ? 4 : 2;  // keys per warp per chunk
  static constexpr int kChunk = kV2Warps * kKW;
};

// Loads one warp's kKW keys from jw (keys at or past j_end read nothing and hold zeros). f32: the
// K/V float4s; quantized: (codes word, next word or 0, scale, bias) in a float4 per (key, e). Through
// L2 (__ldcg), never L1: under a chained launch the kernel may start on an SM whose L1 still holds an
// older copy of a rotating cache's slot.
template <bool kQuant, int kE>
__device__ __forceinline__ void v2_load(const DecodeArgs& a, int64_t kvh, int64_t jw, int64_t j_end, int lane,
                                        float4 (&k)[V2Shape<kE>::kKW][kE], float4 (&v)[V2Shape<kE>::kKW][kE]) {
  constexpr int kKW = V2Shape<kE>::kKW;
  const int c4 = a.hd / 4;
#pragma unroll
  for (int t = 0; t < kKW; ++t) {
    const int64_t j = jw + t;
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const int c = lane + 32 * e;
      k[t][e] = v[t][e] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (j >= j_end || c >= c4) continue;
      if constexpr (!kQuant) {
        const int64_t off = (j * a.n_kv_heads + kvh) * a.hd + 4 * c;
        k[t][e] = __ldcg(reinterpret_cast<const float4*>(a.k + off));
        v[t][e] = __ldcg(reinterpret_cast<const float4*>(a.v + off));
      } else {
        const int wph = a.hd * a.bits / 32, gph = a.hd / a.group;
        const int bit = 4 * c * a.bits, word = bit >> 5;
        const bool two = (bit & 31) + 4 * a.bits > 32;
        const int64_t w0 = j * a.words_row + kvh * wph + word;
        const int64_t g = j * a.groups_row + kvh * gph + 4 * c / a.group;
        k[t][e] = make_float4(__uint_as_float(__ldcg(a.kq + w0)), __uint_as_float(two ? __ldcg(a.kq + w0 + 1) : 0u),
                              __ldcg(a.ks + g), __ldcg(a.kb + g));
        v[t][e] = make_float4(__uint_as_float(__ldcg(a.vq + w0)), __uint_as_float(two ? __ldcg(a.vq + w0 + 1) : 0u),
                              __ldcg(a.vs + g), __ldcg(a.vb + g));
      }
    }
  }
}

// Four dims of a quantized (codes, next, scale, bias) register: kv_dequantize's scale * q + bias, the
// product rounded.
__device__ __forceinline__ float4 v2_dequant(float4 raw, int shift, int bits) {
  const uint64_t two = (static_cast<uint64_t>(__float_as_uint(raw.y)) << 32) | __float_as_uint(raw.x);
  const uint64_t m = (uint64_t{1} << bits) - 1;
  auto at = [&](int d) {
    const float q = static_cast<float>(static_cast<uint32_t>((two >> (shift + d * bits)) & m));
    return __fadd_rn(__fmul_rn(raw.z, q), raw.w);
  };
  return make_float4(at(0), at(1), at(2), at(3));
}

// One step of the warp's reduce-scatter over the first kN of a lane's values: the lane keeps the half
// selected by its bit kO (upper half when set) and adds its partner's copy of that half.
template <int kN, int kO, int kNV>
__device__ __forceinline__ void v2_rs_half(float (&sc)[kNV], int lane) {
  const bool upper = (lane & kO) != 0;
#pragma unroll
  for (int u = 0; u < kN / 2; ++u) {
    const float lo = sc[u], hi = sc[u + kN / 2];
    sc[u] = (upper ? hi : lo) + __shfl_xor_sync(0xffffffffu, upper ? lo : hi, kO);
  }
}

// Sums kNV values over the warp's 32 lanes so that lane l ends with total l >> (5 - log2 kNV) in
// sc[0]. Every index is a compile-time constant (a runtime step count put the array in local memory).
template <int kNV>
__device__ __forceinline__ void v2_reduce_scatter(float (&sc)[kNV], int lane) {
  if constexpr (kNV >= 2) v2_rs_half<kNV, 16>(sc, lane); else sc[0] += __shfl_xor_sync(0xffffffffu, sc[0], 16);
  if constexpr (kNV >= 4) v2_rs_half<kNV / 2, 8>(sc, lane); else sc[0] += __shfl_xor_sync(0xffffffffu, sc[0], 8);
  if constexpr (kNV >= 8) v2_rs_half<kNV / 4, 4>(sc, lane); else sc[0] += __shfl_xor_sync(0xffffffffu, sc[0], 4);
  if constexpr (kNV >= 16) v2_rs_half<kNV / 8, 2>(sc, lane); else sc[0] += __shfl_xor_sync(0xffffffffu, sc[0], 2);
  if constexpr (kNV >= 32) v2_rs_half<kNV / 16, 1>(sc, lane); else sc[0] += __shfl_xor_sync(0xffffffffu, sc[0], 1);
}

// RoPE in the register kernel (ops::attention_with_rope; one query, whole heads rotated, hd / 8 a power
// of two up to 128 dims, or 256). A lane holds dims [4c, 4c + 4) of a row, c = lane + 32 e; the
// partner dims of a rotation pair (i, i + half) are float4 c ^ hq, hq = half / 4: lane ^ hq of the
// same e (kE == 1) or the other e of the same lane (kE == 2, half 128). cs: the (cos, sin) of this
// lane's four frequencies per e. rope_first / rope_second: the rope_qk kernel's arithmetic, so the
// rotated values are its bits.
template <int kE>
__device__ __forceinline__ void rope_rotate_row(float4 (&x)[kE], const float2 (&cs)[kE][4], int lane, int hq) {
  float4 other[kE];
  if constexpr (kE == 1) {
    other[0] = make_float4(__shfl_xor_sync(0xffffffffu, x[0].x, hq), __shfl_xor_sync(0xffffffffu, x[0].y, hq),
                           __shfl_xor_sync(0xffffffffu, x[0].z, hq), __shfl_xor_sync(0xffffffffu, x[0].w, hq));
  } else {
    other[0] = x[1];
    other[1] = x[0];
  }
#pragma unroll
  for (int e = 0; e < kE; ++e) {
    const bool second = ((lane + 32 * e) & hq) != 0;  // this float4 is in the second half (x2)
    auto rot = [&](float own, float oth, float2 c) {
      return second ? rope_second(oth, own, c) : rope_first(own, oth, c);
    };
    x[e] = make_float4(rot(x[e].x, other[e].x, cs[e][0]), rot(x[e].y, other[e].y, cs[e][1]),
                       rot(x[e].z, other[e].z, cs[e][2]), rot(x[e].w, other[e].w, cs[e][3]));
  }
}

struct NoRope {};
template <bool kRope>
using RopeParam = std::conditional_t<kRope, RopeArgs, NoRope>;

// Grid: (split, query * row_chunks + row chunk, kv head); kRows: 2 or 8 rows of registers (a block's
// rows <= kRows); kE: float4s per lane and row (head_dim <= 128 * kE). kRope (f32 K/V, one query, one
// row chunk): q is rotated after its load, and the block whose chunk holds the new key a.rope_key
// rotates that row after its load and writes it back to a.k_rot. That block is the only reader of the
// row in this launch (one query, one block per (split, kv head)), so the write races with nothing.
template <bool kQuant, int kRows, int kE, bool kRope>
__global__ void __launch_bounds__(kV2Threads, 1)
    attention_decode_reg_kernel(const DecodeArgs a, const RopeParam<kRope> rp) {
  constexpr int kKW = V2Shape<kE>::kKW;
  constexpr int kChunk = V2Shape<kE>::kChunk;
  constexpr int kNV = kRows * kKW;  // scores per warp and chunk: 4, 8, 16 or 32
  constexpr int kSh = kNV == 32 ? 0 : kNV == 16 ? 1 : kNV == 8 ? 2 : 3;  // lane of score i: i << kSh
  static_assert(kNV == (32 >> kSh), "kRows * kKW must be 4, 8, 16 or 32");
  extern __shared__ __align__(16) float reg_smem[];  // st_acc [8 warps][kRows][hd]
  __shared__ float st_ml[kV2Warps][kRows][2];
  __shared__ __align__(16) float p_s[kV2Warps][kNV];  // a chunk's probabilities, score order
  __shared__ float corr_s[kV2Warps][kRows];
  __shared__ float2 cs_s[kRope ? kRopeMaxHalf : 1];
  dbg_stamp(a.dbg, 0);
  detail::chain_release();  // chained launch, as attention_decode_kernel
  if constexpr (kRope) {
    // (cos, sin) per frequency: parameters only, so before chain_wait (under the previous kernel's tail).
    for (int f = threadIdx.x; f < rp.half; f += kV2Threads)
      cs_s[f] = rope_cos_sin(rp.positions[rp.stream_of[f]], rp.inv_freq[f], rp.scaling);
  }
  detail::chain_wait();
  dbg_stamp(a.dbg, 1);
  const int hd = a.hd, c4 = hd / 4;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = a.n_heads / a.n_kv_heads;
  const int64_t kvh = blockIdx.z;
  const int64_t i = blockIdx.y / a.row_chunks;
  const int rc = static_cast<int>(blockIdx.y % a.row_chunks);
  const int rows = min(kRows, G - rc * kRows);
  const int64_t qh0 = i * a.n_heads + kvh * G + rc * kRows;
  const int64_t qp = a.q_pos0 + i;
  const int64_t split = blockIdx.x, splits = gridDim.x;
  const int64_t chunks = (a.n_range + kChunk - 1) / kChunk;
  const int64_t c_begin = split * a.chunks_per_split;
  const int64_t c_end = c_begin + a.chunks_per_split < chunks ? c_begin + a.chunks_per_split : chunks;
  const int64_t j_end = a.j_lo + a.n_range;

  float4 kc[kKW][kE], vc[kKW][kE];
  v2_load<kQuant, kE>(a, kvh, a.j_lo + c_begin * kChunk + warp * kKW, c_begin < c_end ? j_end : 0, lane, kc, vc);
  float4 q[kRows][kE];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const int c = lane + 32 * e;
      q[r][e] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (r >= rows || c >= c4) continue;
      const float* src = a.q + (qh0 + r) * hd + 4 * c;
      q[r][e] = a.q_vec16 ? __ldcg(reinterpret_cast<const float4*>(src))
                          : make_float4(__ldcg(src), __ldcg(src + 1), __ldcg(src + 2), __ldcg(src + 3));
    }
  // RoPE: this lane's (cos, sin) per e (frequencies 4 (c mod hq) .. + 3), then q rotated.
  const int hq = kRope ? c4 / 2 : 1;
  float2 cs[kE][4];
  if constexpr (kRope) {
    __syncthreads();  // cs_s
#pragma unroll
    for (int e = 0; e < kE; ++e)
#pragma unroll
      for (int d = 0; d < 4; ++d) cs[e][d] = cs_s[4 * ((lane + 32 * e) & (hq - 1)) + d];
#pragma unroll
    for (int r = 0; r < kRows; ++r) rope_rotate_row<kE>(q[r], cs, lane, hq);
  }
  int shift[kE];  // quantized: bit offset of dim 4c within its first word
#pragma unroll
  for (int e = 0; e < kE; ++e) shift[e] = kQuant ? (4 * (lane + 32 * e) * a.bits) & 31 : 0;

  // This lane's row of the softmax state (row (lane >> kSh) / kKW; the lanes of a row agree).
  float m_own = -INFINITY, l_own = 0.0f;
  float4 acc[kRows][kE];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int e = 0; e < kE; ++e) acc[r][e] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const int my_t = (lane >> kSh) % kKW;

  for (int64_t chunk = c_begin; chunk < c_end; ++chunk) {
    const int64_t jw = a.j_lo + chunk * kChunk + warp * kKW;
    float4 kn[kKW][kE], vn[kKW][kE];  // the next chunk, in flight during this one
    v2_load<kQuant, kE>(a, kvh, jw + kChunk, chunk + 1 < c_end ? j_end : 0, lane, kn, vn);
    if constexpr (kRope) {
      if (a.rope_key >= jw && a.rope_key < jw + kKW) {  // warp-uniform: this warp holds the new key
#pragma unroll
        for (int t = 0; t < kKW; ++t) {
          if (jw + t != a.rope_key) continue;
          rope_rotate_row<kE>(kc[t], cs, lane, hq);
#pragma unroll
          for (int e = 0; e < kE; ++e) {
            const int c = lane + 32 * e;
            if (c < c4)
              *reinterpret_cast<float4*>(a.k_rot + (a.rope_key * a.n_kv_heads + kvh) * hd + 4 * c) = kc[t][e];
          }
        }
      }
    }
    if constexpr (kQuant) {
#pragma unroll
      for (int t = 0; t < kKW; ++t)
#pragma unroll
        for (int e = 0; e < kE; ++e) {
          kc[t][e] = v2_dequant(kc[t][e], shift[e], a.bits);
          vc[t][e] = v2_dequant(vc[t][e], shift[e], a.bits);
        }
    }
    // Partial dot products, then the reduce-scatter: after step s a lane keeps the half of its values
    // selected by lane bit (16 >> s) and adds its partner's copy of that half.
    float sc[kNV];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int t = 0; t < kKW; ++t) {
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < kE; ++e)
          d += (q[r][e].x * kc[t][e].x + q[r][e].y * kc[t][e].y) + (q[r][e].z * kc[t][e].z + q[r][e].w * kc[t][e].w);
        sc[r * kKW + t] = d;
      }
    v2_reduce_scatter<kNV>(sc, lane);
    const int64_t j = jw + my_t;
    const bool vis = j < j_end && key_visible(a.mask, qp, key_pos(a.k_pos, a.mask, j));
    float s = sc[0] * a.scale;
    if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
    s = vis ? s : -INFINITY;
    float mx = s;
#pragma unroll
    for (int o = 1 << kSh; o < (kKW << kSh); o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float m_new = fmaxf(m_own, mx);
    const float corr = m_new == -INFINITY ? 1.0f : expf(m_own - m_new);  // 0 when nothing was seen before
    const float p = vis ? expf(s - m_new) : 0.0f;
    float ps = p;
#pragma unroll
    for (int o = 1 << kSh; o < (kKW << kSh); o <<= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
    l_own = l_own * corr + ps;
    m_own = m_new;
    // Every lane needs every row's correction and probabilities: one store per value into the warp's
    // slots, then broadcast loads (fewer instructions than kNV + kRows shuffles).
    if ((lane & ((1 << kSh) - 1)) == 0) p_s[warp][lane >> kSh] = p;
    if ((lane & ((kKW << kSh) - 1)) == 0) corr_s[warp][lane / (kKW << kSh)] = corr;
    __syncwarp();
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float cr = corr_s[warp][r];
      float pr4[kKW];
      if constexpr (kKW == 4) {
        const float4 t4 = *reinterpret_cast<const float4*>(&p_s[warp][r * 4]);
        pr4[0] = t4.x;
        pr4[1] = t4.y;
        pr4[2] = t4.z;
        pr4[3] = t4.w;
      } else {
        const float2 t2 = *reinterpret_cast<const float2*>(&p_s[warp][r * 2]);
        pr4[0] = t2.x;
        pr4[1] = t2.y;
      }
#pragma unroll
      for (int e = 0; e < kE; ++e) {
        acc[r][e].x *= cr;
        acc[r][e].y *= cr;
        acc[r][e].z *= cr;
        acc[r][e].w *= cr;
      }
#pragma unroll
      for (int t = 0; t < kKW; ++t) {
        const float pr = pr4[t];
#pragma unroll
        for (int e = 0; e < kE; ++e) {
          acc[r][e].x += pr * vc[t][e].x;
          acc[r][e].y += pr * vc[t][e].y;
          acc[r][e].z += pr * vc[t][e].z;
          acc[r][e].w += pr * vc[t][e].w;
        }
      }
    }
    __syncwarp();  // the slots are read before the next chunk writes them
#pragma unroll
    for (int t = 0; t < kKW; ++t)
#pragma unroll
      for (int e = 0; e < kE; ++e) {
        kc[t][e] = kn[t][e];
        vc[t][e] = vn[t][e];
      }
  }

  dbg_stamp(a.dbg, 2);
  // The warps' states -> shared memory, merged per row (a warp that saw no key of a row: m = -inf,
  // weight 0).
  float* st_acc = reg_smem;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    if (lane == ((r * kKW) << kSh)) {
      st_ml[warp][r][0] = m_own;
      st_ml[warp][r][1] = l_own;
    }
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const int c = lane + 32 * e;
      if (c < c4) *reinterpret_cast<float4*>(st_acc + (warp * kRows + r) * hd + 4 * c) = acc[r][e];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < rows * c4; idx += kV2Threads) {
    const int r = idx / c4, c = idx % c4;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kV2Warps; ++w) mx = fmaxf(mx, st_ml[w][r][0]);
    float sum_l = 0.0f;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < kV2Warps; ++w) {
      const float ms = st_ml[w][r][0];
      const float wt = ms == -INFINITY ? 0.0f : expf(ms - mx);
      sum_l += st_ml[w][r][1] * wt;
      const float4 v = *reinterpret_cast<const float4*>(st_acc + (w * kRows + r) * hd + 4 * c);
      sum.x += v.x * wt;
      sum.y += v.y * wt;
      sum.z += v.z * wt;
      sum.w += v.w * wt;
    }
    const int64_t qh = qh0 + r;
    if (splits == 1) {
      const float inv = mx == -INFINITY ? 0.0f : 1.0f / sum_l;  // no visible key: zeros
      *reinterpret_cast<float4*>(a.out + qh * hd + 4 * c) =
          make_float4(sum.x * inv, sum.y * inv, sum.z * inv, sum.w * inv);
    } else {  // partial state (m = -inf, l = 0, acc = 0 when this split saw no key)
      *reinterpret_cast<float4*>(a.part_acc + (qh * splits + split) * hd + 4 * c) = sum;
      if (c == 0) {
        a.part_ml[(qh * splits + split) * 2] = mx;
        a.part_ml[(qh * splits + split) * 2 + 1] = mx == -INFINITY ? 0.0f : sum_l;
      }
    }
  }
  dbg_stamp(a.dbg, 3);
  merge_splits(a, rows, qh0, split, splits, true);
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

// The splits are merged in the kernel by the last blocks (one launch) unless
// VLMCHECK_CUDA_DECODE_MERGE=combine (read once; set_decode_last_block_merge switches it for A/B runs
// in one process) asks for attention_combine_kernel in a second launch. See CUDA.md for both.
bool& last_block_merge_flag() {
  static bool on = [] {
    const char* e = std::getenv("VLMCHECK_CUDA_DECODE_MERGE");
    return e == nullptr || std::strcmp(e, "combine") != 0;
  }();
  return on;
}
bool last_block_merge() { return last_block_merge_flag(); }

// A tuning switch: the integer in environment variable `name` when it lies in [lo, hi], else `fallback`.
int64_t env_in_range(const char* name, int64_t lo, int64_t hi, int64_t fallback) {
  const char* e = std::getenv(name);
  const int64_t v = e != nullptr ? std::atoll(e) : 0;
  return v >= lo && v <= hi ? v : fallback;
}

// Blocks per SM the split count aims at: 2 (measured on the H200 against 4 and 8 with the two-launch
// merge: 36 vs 45 / 57 µs at 16k keys on the 3B shape, the same at 2k).
// VLMCHECK_CUDA_DECODE_BLOCKS_PER_SM=1..16 overrides it for tuning runs (read once).
int64_t blocks_per_sm() {
  static const int64_t n = env_in_range("VLMCHECK_CUDA_DECODE_BLOCKS_PER_SM", 1, 16, 2);
  return n;
}

// Query heads per warp: 2 when a block holds 4 or more query heads (the K / V tiles are read once
// per two rows), else 1 (Gemma 3's 2 heads per kv head keep one warp per head).
// VLMCHECK_CUDA_DECODE_ROWS_PER_WARP=1|2 forces it for tuning runs (read once).
int rows_per_warp(int64_t block_rows) {
  static const int forced = static_cast<int>(env_in_range("VLMCHECK_CUDA_DECODE_ROWS_PER_WARP", 1, 2, 0));
  if (forced != 0) return forced;
  return block_rows >= 4 ? 2 : 1;
}

// Largest dynamic shared memory any launch asks for: the f32 tiles within kDecTileBudget, and the
// widest quantized staging (8-bit codes, 32-value groups).
size_t max_decode_smem_bytes() {
  size_t most = 0;
  for (int64_t hd = 4; hd <= kDecMaxHd; hd += 4) {
    const int64_t tile = 2 * kDecKeys * (hd + 4) * static_cast<int64_t>(sizeof(float));
    const int64_t slices = std::max<int64_t>(1, static_cast<int64_t>(kDecTileBudget) / tile);
    most = std::max(most, decode_smem_bytes(hd, std::min<int64_t>(slices, kDecWarps), true, 8, 32));
  }
  return most;
}

template <bool kQuant, int kRpw>
void launch_kernel(const dim3& grid, size_t smem, cudaStream_t cs, const DecodeArgs& a) {
  static std::once_flag once;  // up to ~100 KB of dynamic shared memory (opted in once per instance)
  std::call_once(once, [] {
    VLM_CUDA(cudaFuncSetAttribute(attention_decode_kernel<kQuant, kRpw>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(max_decode_smem_bytes())),
             "attention");
  });
  detail::launch_chained("attention", attention_decode_kernel<kQuant, kRpw>, grid, dim3(kDecThreads), smem, cs, a);
}

// Team size of the last-block merge: one team (a single merge by the last block) up to the limit,
// else teams of ~sqrt(splits) (at most the limit, at least splits / kDecMaxMerge). The limit is
// kDecMaxMerge for the tile kernel and kRegTeam for the register kernel;
// VLMCHECK_CUDA_DECODE_TEAM=2..64 overrides both for tuning runs (read once). kRegTeam: 64, one merge
// by the last block up to 64 splits (ncu, H200, register kernel, µs, teams of at most 64 / 16 / 8: 3B
// 2k 10.9 / 11.7 / 11.6, 7B 2k 11.0 / 12.6 / 12.6, Gemma 3 2k 12.1 / 13.9 / 13.9, 4-bit 7B 2k 12.0 /
// 14.1 / 13.9): a second level costs another fence, atomic and round trip, more than the one merge
// reading 4x the states.
constexpr int kRegTeam = 64;
int team_limit(int fallback) {
  static const int forced = static_cast<int>(env_in_range("VLMCHECK_CUDA_DECODE_TEAM", 2, kDecMaxMerge, 0));
  return forced != 0 ? forced : fallback;
}

// Split bookkeeping shared by both kernels: teams, the state scratch and the merge counters.
// base: blocks per split.
void setup_splits(DecodeArgs& a, int64_t nq, int64_t splits, int64_t base, int limit, cudaStream_t cs) {
  if (splits <= limit) {
    a.team = static_cast<int>(splits);
  } else {
    const int64_t root = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(splits))));
    const int64_t fewest = (splits + kDecMaxMerge - 1) / kDecMaxMerge;  // teams <= kDecMaxMerge
    a.team = static_cast<int>(std::max<int64_t>(std::min<int64_t>(root, limit), fewest));
  }
  a.teams = static_cast<int>((splits + a.team - 1) / a.team);
  if (splits > 1) {
    const int64_t qh = nq * a.n_heads;
    const size_t part = static_cast<size_t>(qh * splits), team = static_cast<size_t>(qh * a.teams);
    const size_t floats = part * (2 + static_cast<size_t>(a.hd)) + team * (2 + static_cast<size_t>(a.hd));
    float* scratch = static_cast<float*>(detail::scratch(sizeof(float) * floats, "attention"));
    // acc planes first: hd is a multiple of 4, so every state's acc row is 16-byte aligned (the merge
    // reads them as float4).
    a.part_acc = scratch;
    a.team_acc = a.part_acc + part * static_cast<size_t>(a.hd);
    a.part_ml = a.team_acc + team * static_cast<size_t>(a.hd);
    a.team_ml = a.part_ml + part * 2;
    if (last_block_merge()) a.counters = decode_counters(static_cast<size_t>(base * (a.teams + 1)), cs);
  }
}

template <bool kQuant>
void launch_decode(DecodeArgs a, int64_t nq, cudaStream_t cs) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int64_t row_chunks = (group + kDecRows - 1) / kDecRows;
  const int64_t block_rows = std::min<int64_t>(group, kDecRows);
  // Warps: row_groups over the rows, times slices over the chunk's keys. The layout depends only on
  // the shape (never on the K/V format), which keeps attention_quantized bit-identical to
  // kv_dequantize + attention.
  const int rpw = rows_per_warp(block_rows);
  const int64_t row_groups = (block_rows + rpw - 1) / rpw;
  const int64_t tile = 2 * kDecKeys * (a.hd + 4) * static_cast<int64_t>(sizeof(float));
  const int64_t slices = std::clamp<int64_t>(std::min<int64_t>(kDecWarps / row_groups,
                                                               static_cast<int64_t>(kDecTileBudget) / tile),
                                             1, kDecWarps);
  const int64_t keys = kDecKeys * slices;
  const int64_t base = nq * row_chunks * a.n_kv_heads;  // blocks per split
  const int64_t chunks = std::max<int64_t>((a.n_range + keys - 1) / keys, 1);
  int64_t splits = std::clamp<int64_t>((blocks_per_sm() * sm_count() + base - 1) / base, 1, chunks);
  int64_t per_split = (chunks + splits - 1) / splits;
  per_split = std::max(per_split, (chunks + kDecMaxSplits - 1) / kDecMaxSplits);
  splits = (chunks + per_split - 1) / per_split;  // no empty split
  a.row_chunks = static_cast<int>(row_chunks);
  a.row_groups = static_cast<int>(row_groups);
  a.slices = static_cast<int>(slices);
  a.chunks_per_split = per_split;
  setup_splits(a, nq, splits, base, team_limit(kDecMaxMerge), cs);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(nq * row_chunks),
                  static_cast<unsigned>(a.n_kv_heads));
  const size_t smem = decode_smem_bytes(a.hd, slices, kQuant, a.bits, a.group);
  if (rpw == 2)
    launch_kernel<kQuant, 2>(grid, smem, cs, a);
  else
    launch_kernel<kQuant, 1>(grid, smem, cs, a);
  if (splits > 1 && a.counters == nullptr)
    launch_attention_combine(a.part_ml, a.part_acc, nq * a.n_heads, splits, a.hd, a.out, cs);
}

// Diagnostics: VLMCHECK_CUDA_DECODE_TIMES=file gives every register-kernel launch a slice of a device
// buffer for its blocks' globaltimer stamps (0 entry, 1 after chain_wait, 2 after the walk, 3 state
// written, 4 counted, 5 merged), written to `file` as CSV at exit.
struct DbgCall {
  size_t offset;
  int64_t blocks, keys;
};
struct DbgState {
  unsigned long long* buf = nullptr;
  size_t cap = 0, used = 0;
  std::vector<DbgCall> calls;
  std::string path;
};
DbgState& dbg_state() {
  static DbgState s;
  return s;
}
void dbg_dump() {
  DbgState& s = dbg_state();
  if (s.buf == nullptr) return;
  cudaDeviceSynchronize();
  std::vector<unsigned long long> h(s.used);
  cudaMemcpy(h.data(), s.buf, s.used * sizeof(unsigned long long), cudaMemcpyDeviceToHost);
  FILE* f = std::fopen(s.path.c_str(), "w");
  if (f == nullptr) return;
  std::fprintf(f, "call,keys,block,t0,t1,t2,t3,t4,t5\n");
  for (size_t c = 0; c < s.calls.size(); ++c)
    for (int64_t b = 0; b < s.calls[c].blocks; ++b) {
      const unsigned long long* t = h.data() + s.calls[c].offset + b * 8;
      std::fprintf(f, "%zu,%lld,%lld,%llu,%llu,%llu,%llu,%llu,%llu\n", c, static_cast<long long>(s.calls[c].keys),
                   static_cast<long long>(b), t[0], t[1], t[2], t[3], t[4], t[5]);
    }
  std::fclose(f);
}
unsigned long long* dbg_slot(int64_t blocks, int64_t keys, cudaStream_t cs) {
  static const char* path = std::getenv("VLMCHECK_CUDA_DECODE_TIMES");
  if (path == nullptr || *path == '\0') return nullptr;
  DbgState& s = dbg_state();
  if (s.buf == nullptr) {
    s.cap = size_t{8} << 20;  // stamps (64 MB, kept until exit)
    s.buf = static_cast<unsigned long long*>(device_alloc(s.cap * sizeof(unsigned long long), MemCategory::kScratch));
    VLM_CUDA(cudaMemsetAsync(s.buf, 0, s.cap * sizeof(unsigned long long), cs), "attention");
    s.path = path;
    std::atexit(dbg_dump);
  }
  const size_t need = static_cast<size_t>(blocks) * 8;
  if (s.used + need > s.cap) return nullptr;
  s.calls.push_back({s.used, blocks, keys});
  unsigned long long* p = s.buf + s.used;
  s.used += need;
  return p;
}

// Blocks the register kernel aims at: one per SM, one wave (~180 registers a thread: one 8-warp block
// fits an SM). VLMCHECK_CUDA_DECODE_BLOCKS=n overrides it for tuning runs (read once).
int64_t reg_blocks_target() {
  static const int64_t n = env_in_range("VLMCHECK_CUDA_DECODE_BLOCKS", 1, 65536, sm_count());
  return n;
}

// The register kernel is the default; VLMCHECK_CUDA_DECODE_KERNEL=tile picks the tile kernel (read
// once; set_decode_kernel switches it for A/B runs in one process).
bool& tile_kernel_flag() {
  static bool on = [] {
    const char* e = std::getenv("VLMCHECK_CUDA_DECODE_KERNEL");
    return e != nullptr && std::strcmp(e, "tile") == 0;
  }();
  return on;
}

// Chunks each split of the register kernel walks at least, once the keys are enough for one-chunk splits to
// fill half the blocks the launch aims at (launch_reg): 2, so every block has its second chunk's K/V in flight
// while it computes the first (one chunk per split leaves that prefetch idle) and, at 2 kv heads, a 2k context
// runs ~33 splits merged in one level instead of 65 in two. Shorter contexts keep one chunk per split: their
// few blocks need the parallelism. H100, same binary with VLMCHECK_CUDA_DECODE_MIN_CHUNKS=1 (one chunk per split
// everywhere) vs 2 everywhere: bench_cuda_kernels --decode-attention, 3B f32 2048 keys 11.8 -> 10.5 µs, 2080 keys
// 12.3 -> 10.9, but 256 keys 8.0 -> 9.0; decode inside the graph, synthetic Qwen2.5-VL-3B bf16, 2048-token
// prompt, 330.7 / 315.6 -> 339.6 / 326.6 tok/s, 256-token prompt 352.5 / 354.0 -> 346.7 / 347.5 (hence the
// threshold). The 7B, Gemma 3 and SmolVLM shapes (3-4 kv heads) already ran two or more chunks per split at 2k.
// VLMCHECK_CUDA_DECODE_MIN_CHUNKS=1..64 overrides it for tuning runs (read once).
int64_t min_chunks_per_split() {
  static const int64_t n = env_in_range("VLMCHECK_CUDA_DECODE_MIN_CHUNKS", 1, 64, 2);
  return n;
}

template <bool kQuant, int kRows, int kE, bool kRope>
void launch_reg_instance(const dim3& grid, cudaStream_t cs, const DecodeArgs& a, const RopeParam<kRope>& rp) {
  const size_t smem = sizeof(float) * kV2Warps * kRows * static_cast<size_t>(a.hd);
  static std::once_flag once;  // up to 64 KB of dynamic shared memory (8 rows of 256 dims)
  std::call_once(once, [] {
    VLM_CUDA(cudaFuncSetAttribute(attention_decode_reg_kernel<kQuant, kRows, kE, kRope>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(sizeof(float) * kV2Warps * kRows * kDecMaxHd)),
             "attention");
  });
  detail::launch_chained("attention", attention_decode_reg_kernel<kQuant, kRows, kE, kRope>, grid, dim3(kV2Threads),
                         smem, cs, a, rp);
}

template <bool kQuant, int kRows, int kE>
void launch_reg_pick(const dim3& grid, cudaStream_t cs, const DecodeArgs& a, const RopeArgs* rope) {
  if constexpr (!kQuant) {
    if (rope != nullptr) {
      launch_reg_instance<false, kRows, kE, true>(grid, cs, a, *rope);
      return;
    }
  }
  launch_reg_instance<kQuant, kRows, kE, false>(grid, cs, a, NoRope{});
}

// rope: ops::attention_with_rope's rotation (f32 K/V, nq 1, one row chunk; decode_rope_applies).
template <bool kQuant>
void launch_reg(DecodeArgs a, int64_t nq, cudaStream_t cs, const RopeArgs* rope = nullptr) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int kRowsPick = group <= 2 ? 2 : 8;
  const int64_t row_chunks = (group + kRowsPick - 1) / kRowsPick;
  const int kE = a.hd <= 128 ? 1 : 2;
  const int64_t keys = kV2Warps * (kE == 1 ? V2Shape<1>::kKW : V2Shape<2>::kKW);
  const int64_t base = nq * row_chunks * a.n_kv_heads;  // blocks per split
  const int64_t chunks = std::max<int64_t>((a.n_range + keys - 1) / keys, 1);
  int64_t splits = std::clamp<int64_t>((reg_blocks_target() + base - 1) / base, 1, chunks);
  int64_t per_split = (chunks + splits - 1) / splits;
  per_split = std::max(per_split, (chunks + kDecMaxSplits - 1) / kDecMaxSplits);
  if (2 * chunks * base >= reg_blocks_target())
    per_split = std::max(per_split, std::min(min_chunks_per_split(), chunks));
  splits = (chunks + per_split - 1) / per_split;  // no empty split
  a.row_chunks = static_cast<int>(row_chunks);
  a.chunks_per_split = per_split;
  a.dbg = dbg_slot(splits * nq * row_chunks * a.n_kv_heads, a.n_range, cs);
  setup_splits(a, nq, splits, base, team_limit(kRegTeam), cs);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(nq * row_chunks),
                  static_cast<unsigned>(a.n_kv_heads));
  if (kRowsPick == 2)
    kE == 1 ? launch_reg_pick<kQuant, 2, 1>(grid, cs, a, rope) : launch_reg_pick<kQuant, 2, 2>(grid, cs, a, rope);
  else
    kE == 1 ? launch_reg_pick<kQuant, 8, 1>(grid, cs, a, rope) : launch_reg_pick<kQuant, 8, 2>(grid, cs, a, rope);
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
  if (tile_kernel_flag() || !aligned16(out))
    launch_decode<false>(a, nq, cs);
  else
    launch_reg<false>(a, nq, cs);
  return true;
}

bool decode_rope_applies(int64_t nq, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t rotary_dim) {
  const int64_t hq = head_dim / 8;  // float4s per half head
  return nq == 1 && rotary_dim == head_dim && head_dim % 8 == 0 && (hq & (hq - 1)) == 0 &&
         (head_dim <= 128 || head_dim == 256) && n_kv_heads > 0 && n_heads % n_kv_heads == 0 &&
         n_heads / n_kv_heads <= kDecRows && !tile_kernel_flag();
}

bool attention_decode_gqa_rope(const float* q, int64_t q_pos0, float* k, const float* v, int64_t nk, int64_t n_heads,
                               int64_t n_kv_heads, int64_t head_dim, float scale, float softcap, const MaskArgs& mask,
                               const RopeArgs& rope, float* out, cudaStream_t cs) {
  if (!decode_rope_applies(1, n_heads, n_kv_heads, head_dim, 2 * int64_t{rope.half}) || nk < 1 || !aligned16(k) ||
      !aligned16(v) || !aligned16(out))
    return false;
  DecodeArgs a = common_args(q, 1, q_pos0, nullptr, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
  const int64_t j_new = nk - 1;  // the new key: the cache's last row
  if (j_new < a.j_lo || j_new >= a.j_lo + a.n_range) return false;
  a.k = k;
  a.v = v;
  a.k_rot = k;
  a.rope_key = j_new;
  launch_reg<false>(a, 1, cs, &rope);
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
  if (tile_kernel_flag() || !aligned16(out))
    launch_decode<true>(a, nq, cs);
  else
    launch_reg<true>(a, nq, cs);
  return true;
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {
void set_decode_last_block_merge(bool on) { kernels::last_block_merge_flag() = on; }
void set_decode_tile_kernel(bool on) { kernels::tile_kernel_flag() = on; }
}  // namespace vlm::ops::cuda
