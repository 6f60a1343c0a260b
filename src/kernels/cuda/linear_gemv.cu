// The decode GEMV (n < 8 tokens): y[t, r] = Σ_c x[t, c] · W[r, c] (+ bias[r]), W in its stored
// format (dense f32/f16/bf16, or MLX affine codes + per-group scales and biases of any float dtype),
// read once per chunk of up to 4 tokens (chunks of 4/2/1).
//
//   Layout. A warp owns R consecutive rows; the block's warps are split into row groups × K-splits
//   (ksplit = 1..8 warps share one row group's inputs, chosen so each lane has about one round of U
//   units per row: short rows give several row groups per block, long rows one). Lane l of K-split k
//   takes units u = k·32 + l, + 32·ksplit, ... (consecutive lanes read consecutive bytes of a row),
//   and issues the loads of a whole round (R rows × U units, plus their scales and biases) before any
//   math. Weights are loaded with ld.global.nc.L1::no_allocate (streamed once; x stays in L1).
//   Unit. Dense: 16 stored bytes (4 f32 / 8 f16 or bf16 values). Quantized: 32 values = `bits` u32
//   words (16-byte loads at 4/8 bits, 8-byte at 2/6, 4-byte at 3/5), inside one group (groups are
//   32/64/128 wide: the unit's group is u >> group_shift, no division).
//   Shapes (Config, measured on an H200 against the previous kernels and variants, docs/CUDA.md):
//   dense, any n: R = 4, U = 1, 256 threads. Quantized n = 1: the same. Quantized n >= 2: the work per
//   token (x loads, Σx, one FMA per code and token) dominates, so 8 rows share each x load at 4 bits
//   (R = 8, 128 threads), 4 rows with 2-4 units per round at the other widths.
//   x bank order. A quantized unit's x is one 128-byte line per lane; reading it as 8 float4 in the
//   same order on every lane puts all 32 lanes on the same 4 L1 banks. Where it pays (n >= 2 at 2/4/8
//   bits, n = 1 at 8 bits) lane l reads chunk (c + l) mod 8 at step c and rotates its code registers
//   by the same amount (selects and funnel shifts), so 8 consecutive lanes cover all 32 banks.
//   Math. f32 as the reference: dense Σ w·x; quantized per unit s·Σq·x + b·Σx with codes made exact
//   floats by the exponent trick ((q | 0x4B000000) - 2^23, one byte permute per code at 4 and 8
//   bits). Each lane keeps R × NT partial sums; warp shuffles and, across K-splits, one shared array
//   reduce them at the end; the bias (any float dtype) is added on store (the reference's separate
//   f32 add). At one token the 4-bit kernel is bound by this per-code arithmetic (~1.2 TB/s of codes
//   on an H200), not by DRAM.
//   Tall dense launches (see dense_stream()) take a streaming kernel instead: warps walk row groups
//   of the whole grid with the next round's loads always in flight (gemv_dense_stream_kernel).
//   4-bit weights with cols a multiple of 128 go to the tensor-core kernel of linear_gemv_mma.cu
//   instead (unless VLMCHECK_CUDA_GEMV=legacy); everything else, and those with the switch, run here.
//   Fused forms (ops.h LinearOut). accumulate: the store adds the sum (bias included) to y, so o_proj
//   and down_proj write the residual stream directly (every kernel here and the tensor-core one).
//   norm (dense kernels): x is the un-normalized stream; each block first reduces x's sum of squares
//   per token (after issuing its first round of weight loads, so the two overlap) and then scales every
//   x value it reads by inv_rms · (w + offset) as rms_norm rounds it. That replaces the RMSNorm launch
//   before q/k/v, gate/up and the lm_head; the extra x and norm-weight reads hit L1/L2.
//   Groups. One launch covers up to kGemvMaxTargets weights of the same format and cols (q/k/v,
//   gate/up): blocks are numbered through the members' rows, and each block finds its member from the
//   cumulative block counts in the parameter block.
#include "kernels/cuda/linear_gemv.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace vlm::ops::cuda::kernels {
namespace {

// Launch shape of one kernel: rows per warp (R), units per lane loaded per round (U), threads per
// block, and whether lanes rotate their x chunk order (2/4/8 bits only).
struct Config {
  int rows, units, threads;
  bool rot;
};
constexpr bool rotates(int bits) { return bits == 2 || bits == 4 || bits == 8; }
// Dense, every token count: 4 rows per warp, one unit of each per round, 256 threads.
constexpr Config dense_config() { return {4, 1, 256, false}; }
// Quantized. One token: as dense (the rotated x order only pays at 8 bits, where a unit is 32 bytes).
// More tokens: the per-token x loads and Σx dominate, so more rows share them (8 at 4 bits) and lanes
// read x in rotated order.
constexpr Config quant_config(int bits, int nt) {
  if (nt == 1) return {4, 1, 256, bits == 8};
  if (bits == 4) return {8, 1, 128, true};
  return {4, bits == 2 ? 4 : bits == 8 ? 1 : 2, 128, rotates(bits)};
}

struct GemvParams {
  const float* x;   // [n, in] f32 (this launch's token chunk)
  int64_t in;       // inputs per row, x's row stride
  int64_t units;    // units per row
  int count;        // members
  int ksplit;       // warps per row group: 1, 2 or 4
  int group_shift;  // quantized: log2(group_size / 32)
  int scale_kind, bias_kind;
  int64_t groups;  // quantized: groups per row
  int64_t words;   // quantized: u32 words per row
  unsigned block_end[kGemvMaxTargets];  // cumulative blocks per member
  int64_t rows[kGemvMaxTargets];
  const void* w[kGemvMaxTargets];       // dense values or packed codes
  const void* scales[kGemvMaxTargets];  // quantized
  const void* biases[kGemvMaxTargets];  // quantized
  const void* out_bias[kGemvMaxTargets];  // linear bias or null
  int out_bias_kind[kGemvMaxTargets];
  float* y[kGemvMaxTargets];  // [n, rows] f32
  unsigned accumulate;        // bit j: member j adds its sums to y (y += x·Wᵀ + bias)
  // Dense: x is normalized on the fly (GemvNorm) when norm_w is non-null (the kernels' NORM variant).
  const void* norm_w;
  int norm_kind;
  float norm_eps, norm_offset;
  int early;         // dense block kernel: first weight round before chain_wait (gemv_dense_early())
  int release_late;  // chain_release() after chain_wait() (gemv_release_late())
};

// Streaming loads: read once, not kept in L1 (x, which every warp re-reads, stays there).
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_stream8(const void* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream4(const void* p) {
  uint32_t v;
  asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

// Value i of a small float vector (scales, biases) of any float dtype, through the read-only path.
__device__ __forceinline__ float ld_small(const void* p, int kind, int64_t i) {
  switch (kind) {
    case detail::kF16: return __half2float(__ldg(static_cast<const __half*>(p) + i));
    case detail::kBF16: return __uint_as_float(static_cast<uint32_t>(__ldg(static_cast<const unsigned short*>(p) + i)) << 16);
    default: return __ldg(static_cast<const float*>(p) + i);
  }
}

// Where this warp works: member j, first row of its row group, its K-split index.
struct Slot {
  int j;
  int64_t block_row0;  // first row of the block (row group 0)
  int grp, kw;
};

template <int R, int WARPS>
__device__ __forceinline__ Slot locate(const GemvParams& p) {
  const unsigned b = blockIdx.x;
  int j = 0;
  while (j + 1 < p.count && b >= p.block_end[j]) ++j;
  const unsigned first = j > 0 ? p.block_end[j - 1] : 0u;
  const int warp = threadIdx.x >> 5;
  const int groups_per_block = WARPS / p.ksplit;
  Slot s;
  s.j = j;
  s.grp = warp / p.ksplit;
  s.kw = warp % p.ksplit;
  s.block_row0 = static_cast<int64_t>(b - first) * groups_per_block * R;
  return s;
}

// Reduces acc over the warp's lanes and the row group's K-splits, adds the bias, stores y.
template <int R, int NT, int WARPS>
__device__ __forceinline__ void finish(float (&acc)[R][NT], const GemvParams& p, const Slot& s) {
  __shared__ float red[WARPS][R * NT];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float v = warp_sum(acc[r][t]);
      if (lane == 0) red[warp][r * NT + t] = v;
    }
  __syncthreads();
  const int per_block = (WARPS / p.ksplit) * R * NT;
  if (static_cast<int>(threadIdx.x) < per_block) {
    const int grp = threadIdx.x / (R * NT), rt = threadIdx.x % (R * NT);
    float sum = 0.0f;
    for (int k = 0; k < p.ksplit; ++k) sum += red[grp * p.ksplit + k][rt];
    const int64_t rows = p.rows[s.j];
    const int64_t row = s.block_row0 + grp * R + rt / NT;
    const int t = rt % NT;
    if (row < rows) {
      const void* bias = p.out_bias[s.j];
      if (bias != nullptr) sum = __fadd_rn(sum, ld_small(bias, p.out_bias_kind[s.j], row));
      float* y = p.y[s.j] + t * rows + row;
      if ((p.accumulate >> s.j) & 1u) sum = __fadd_rn(*y, sum);  // the reference's add(y, x·Wᵀ + bias)
      *y = sum;
    }
  }
}

// ---- dense ----------------------------------------------------------------------------------------
// 16 stored bytes -> f32 values.
template <typename WT>
struct Dense;
template <>
struct Dense<float> {
  static constexpr int kN = 4;
  __device__ static void load(const uint4& u, float* f) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
  }
};
template <>
struct Dense<__nv_bfloat16> {
  static constexpr int kN = 8;
  __device__ static void load(const uint4& u, float* f) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);  // element 2i is the low half (little-endian)
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};
template <>
struct Dense<__half> {
  static constexpr int kN = 8;
  __device__ static void load(const uint4& u, float* f) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __half2 h;
      memcpy(&h, &w[i], 4);
      const float2 v = __half22float2(h);
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  }
};

// ---- the fused input RMSNorm (GemvNorm) ------------------------------------------------------------
// inv[t] = 1 / sqrt(mean(x[t]²) + eps) for the launch's NT tokens, in every thread of the block (all
// threads must call it: it has a block barrier). x rows are 16-byte aligned, in a multiple of 4.
template <int NT, int WARPS>
__device__ __forceinline__ void norm_scales(const GemvParams& p, float (&inv)[NT]) {
  __shared__ float red[WARPS][NT];
  float ss[NT] = {};
  const int64_t n4 = p.in / 4;
  for (int64_t c = threadIdx.x; c < n4; c += blockDim.x)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(p.x + t * p.in) + c);
      ss[t] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float v = warp_sum(ss[t]);
    if (lane == 0) red[warp][t] = v;
  }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sum += red[w][t];
    inv[t] = 1.0f / sqrtf(sum / static_cast<float>(p.in) + p.norm_eps);
  }
}

// (norm weight + offset) of columns c..c+3 (c a multiple of 4), as rms_norm adds them.
__device__ __forceinline__ float4 norm_gain4(const GemvParams& p, int64_t c) {
  float4 g;
  if (p.norm_kind == detail::kF32) {
    const float2* w2 = reinterpret_cast<const float2*>(static_cast<const float*>(p.norm_w) + c);  // 8-byte aligned
    const float2 a = __ldg(w2), b = __ldg(w2 + 1);
    g = make_float4(a.x, a.y, b.x, b.y);
  } else {
    const uint2 u = __ldg(reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(p.norm_w) + c));
    if (p.norm_kind == detail::kBF16) {
      g = make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                      __uint_as_float(u.y & 0xffff0000u));
    } else {
      __half2 a, b;
      memcpy(&a, &u.x, 4);
      memcpy(&b, &u.y, 4);
      const float2 fa = __half22float2(a), fb = __half22float2(b);
      g = make_float4(fa.x, fa.y, fb.x, fb.y);
    }
  }
  g.x = __fadd_rn(g.x, p.norm_offset);
  g.y = __fadd_rn(g.y, p.norm_offset);
  g.z = __fadd_rn(g.z, p.norm_offset);
  g.w = __fadd_rn(g.w, p.norm_offset);
  return g;
}

// rms_norm's y = (x * inv) * gain, rounded as there.
__device__ __forceinline__ float4 normalize4(float4 f, float inv, const float4& g) {
  f.x = __fmul_rn(__fmul_rn(f.x, inv), g.x);
  f.y = __fmul_rn(__fmul_rn(f.y, inv), g.y);
  f.z = __fmul_rn(__fmul_rn(f.z, inv), g.z);
  f.w = __fmul_rn(__fmul_rn(f.w, inv), g.w);
  return f;
}

// acc[r][t] += Σ_e W[r, unit e] · x[t, unit e] for one unit of R rows; x points at the unit's first
// value of token 0, column col. NORM: x values are normalized first (inv from norm_scales).
template <typename WT, int R, int NT, bool NORM>
__device__ __forceinline__ void dense_unit(const uint4 (&wv)[R], const float* __restrict__ x, int64_t in,
                                           float (&acc)[R][NT], const GemvParams& p, int64_t col,
                                           const float (&inv)[NT]) {
  constexpr int V = Dense<WT>::kN;
  float wf[R][V];
#pragma unroll
  for (int r = 0; r < R; ++r) Dense<WT>::load(wv[r], wf[r]);
  // q outer, t inner: each acc[r][t] still sums its terms in column order.
#pragma unroll
  for (int q = 0; q < V / 4; ++q) {
    float4 g;
    if constexpr (NORM) g = norm_gain4(p, col + 4 * q);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float4 f = __ldg(reinterpret_cast<const float4*>(x + t * in) + q);
      if constexpr (NORM) f = normalize4(f, inv[t], g);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        acc[r][t] += wf[r][4 * q] * f.x;
        acc[r][t] += wf[r][4 * q + 1] * f.y;
        acc[r][t] += wf[r][4 * q + 2] * f.z;
        acc[r][t] += wf[r][4 * q + 3] * f.w;
      }
    }
  }
}

template <typename WT, int NT, bool NORM>
__global__ void __launch_bounds__(dense_config().threads) gemv_dense_kernel(const __grid_constant__ GemvParams p) {
  // Chained launch (common.cuh): the successor is released once this grid has passed chain_wait
  // (gemv_release_late); the first round of weight loads goes out after chain_wait too unless p.early
  // (gemv_dense_early); x, y and the bias are only touched after it.
  if (!p.release_late) detail::chain_release();
  constexpr Config c = dense_config();
  constexpr int R = c.rows, U = c.units, V = Dense<WT>::kN, WARPS = c.threads / 32;
  const Slot sl = locate<R, WARPS>(p);
  const int lane = threadIdx.x & 31;
  const int64_t rows = p.rows[sl.j];
  const WT* w = static_cast<const WT*>(p.w[sl.j]);
  const uint4* rowp[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    int64_t rr = sl.block_row0 + sl.grp * R + r;
    rr = rr < rows ? rr : rows - 1;  // clamped rows are computed, not stored
    rowp[r] = reinterpret_cast<const uint4*>(w + rr * p.in);
  }
  float acc[R][NT] = {};
  float inv[NT];
  const int64_t step = 32 * p.ksplit;
  int64_t u = sl.kw * 32 + lane;
  // Full rounds: U units of every row in flight, then the math. The first round's loads go out before
  // the norm's sum of squares (which only reads x), so the two overlap.
  uint4 wv[U][R];
  auto load_round = [&] {
#pragma unroll
    for (int k = 0; k < U; ++k)
#pragma unroll
      for (int r = 0; r < R; ++r) wv[k][r] = ld_stream16(rowp[r] + u + k * step);
  };
  bool full = u + (U - 1) * step < p.units;
  if (full && p.early) load_round();
  detail::chain_wait();
  if (p.release_late) detail::chain_release();
  if (full && !p.early) load_round();
  if constexpr (NORM) norm_scales<NT, WARPS>(p, inv);
  while (full) {
#pragma unroll
    for (int k = 0; k < U; ++k)
      dense_unit<WT, R, NT, NORM>(wv[k], p.x + (u + k * step) * V, p.in, acc, p, (u + k * step) * V, inv);
    u += U * step;
    full = u + (U - 1) * step < p.units;
    if (full) load_round();
  }
  // The rest (fewer than U units per lane), loads still issued together.
  if constexpr (U > 1) {
    uint4 wv[U - 1][R];
#pragma unroll
    for (int k = 0; k < U - 1; ++k)
      if (u + k * step < p.units)
#pragma unroll
        for (int r = 0; r < R; ++r) wv[k][r] = ld_stream16(rowp[r] + u + k * step);
#pragma unroll
    for (int k = 0; k < U - 1; ++k)
      if (u + k * step < p.units)
        dense_unit<WT, R, NT, NORM>(wv[k], p.x + (u + k * step) * V, p.in, acc, p, (u + k * step) * V, inv);
  }
  finish<R, NT, WARPS>(acc, p, sl);
}

// Dense, streaming (tall launches, see dense_stream()): a warp owns kStreamR rows
// over the whole row and walks row groups w, w + (warps of the grid), ...; lane l reads units
// l, l + 32, ... in rounds of kStreamU units per row. The loads of the next round (of this row group
// or the next one) are issued before the current round's math (two register buffers), so a warp
// always has a round in flight, including across row groups; the grid is what is resident at once.
// Each row group ends with a warp reduction and the store: no shared memory, no block barrier.
constexpr int kStreamR = 4, kStreamU = 2, kStreamThreads = 128;

template <typename WT, int NT, bool NORM>
__global__ void __launch_bounds__(kStreamThreads) gemv_dense_stream_kernel(const __grid_constant__ GemvParams p) {
  // Chained launch (common.cuh): released as the block kernel; the first weight round goes out before
  // chain_wait.
  if (!p.release_late) detail::chain_release();
  constexpr int R = kStreamR, U = kStreamU, V = Dense<WT>::kN;
  const int lane = threadIdx.x & 31;
  const unsigned total = p.block_end[p.count - 1];  // row groups of R rows, numbered through the members
  const unsigned nwarps = gridDim.x * (kStreamThreads / 32);
  const unsigned first = blockIdx.x * (kStreamThreads / 32) + (threadIdx.x >> 5);
  const int64_t rounds = (p.units + 32 * U - 1) / (32 * U);
  // Row group rg: member j, first row; row pointers of the load cursor.
  auto find = [&](unsigned rg, int& j, int64_t& row0) {
    j = 0;
    while (j + 1 < p.count && rg >= p.block_end[j]) ++j;
    row0 = static_cast<int64_t>(rg - (j > 0 ? p.block_end[j - 1] : 0u)) * R;
  };
  const uint4* rowp[R];
  auto set_rows = [&](unsigned rg) {
    int j;
    int64_t row0;
    find(rg, j, row0);
    const WT* w = static_cast<const WT*>(p.w[j]);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t rr = row0 + r < p.rows[j] ? row0 + r : p.rows[j] - 1;  // clamped rows: not stored
      rowp[r] = reinterpret_cast<const uint4*>(w + rr * p.in);
    }
  };
  auto load = [&](uint4 (&b)[U][R], int64_t round) {
#pragma unroll
    for (int k = 0; k < U; ++k) {
      const int64_t u = round * 32 * U + k * 32 + lane;
#pragma unroll
      for (int r = 0; r < R; ++r) b[k][r] = u < p.units ? ld_stream16(rowp[r] + u) : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  float acc[R][NT] = {};
  float inv[NT];
  auto math = [&](uint4 (&b)[U][R], int64_t round) {
#pragma unroll
    for (int k = 0; k < U; ++k) {
      const int64_t u = round * 32 * U + k * 32 + lane;
      if (u < p.units) dense_unit<WT, R, NT, NORM>(b[k], p.x + u * V, p.in, acc, p, u * V, inv);
    }
  };
  auto store = [&](unsigned rg) {
    int j;
    int64_t row0;
    find(rg, j, row0);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        float v = warp_sum(acc[r][t]);
        acc[r][t] = 0.0f;
        const int64_t row = row0 + r;
        if (lane == r * NT + t && row < p.rows[j]) {
          if (p.out_bias[j] != nullptr) v = __fadd_rn(v, ld_small(p.out_bias[j], p.out_bias_kind[j], row));
          float* y = p.y[j] + t * p.rows[j] + row;
          if ((p.accumulate >> j) & 1u) v = __fadd_rn(*y, v);
          *y = v;
        }
      }
  };
  // Math cursor (rg, rd) and load cursor (lrg, lrd), one round ahead.
  unsigned rg = first, lrg = first;
  int64_t rd = 0, lrd = 0;
  auto advance_load = [&] {
    if (++lrd == rounds) {
      lrd = 0;
      lrg += nwarps;
      if (lrg < total) set_rows(lrg);
    }
  };
  // One step: load the next round into `next` (if any), compute the current one from `cur`.
  auto step = [&](uint4 (&cur)[U][R], uint4 (&next)[U][R]) {
    if (lrg < total) {
      load(next, lrd);
      advance_load();
    }
    math(cur, rd);
    if (++rd == rounds) {
      store(rg);
      rd = 0;
      rg += nwarps;
    }
    return rg < total;
  };
  uint4 b0[U][R], b1[U][R];
  // Warps past the last row group only join the norm's block barrier. The first loads go out before
  // the sum of squares, so the two overlap.
  const bool active = first < total;
  if (active) {
    set_rows(lrg);
    load(b0, lrd);
    advance_load();
  }
  detail::chain_wait();
  if (p.release_late) detail::chain_release();
  if constexpr (NORM) norm_scales<NT, kStreamThreads / 32>(p, inv);
  if (!active) return;
  while (step(b0, b1) && step(b1, b0)) {
  }
}

// ---- quantized ------------------------------------------------------------------------------------
// Code j (compile-time after unrolling) of a 32-value unit held in BITS words, as an exact float.
// 4 and 8 bits place the code in the float's low byte with one byte permute; for 4 bits the even and
// odd nibbles of a word are split into byte vectors first (shared by the word's 8 codes).
template <int BITS>
__device__ __forceinline__ float code(const uint32_t (&w)[BITS], int j) {
  if constexpr (BITS == 4) {
    const uint32_t word = w[j >> 3];
    const int n = j & 7;
    const uint32_t split = (n & 1) ? ((word >> 4) & 0x0F0F0F0Fu) : (word & 0x0F0F0F0Fu);
    return __uint_as_float(__byte_perm(split, 0x4B000000u, 0x7440u | static_cast<unsigned>(n >> 1))) - 8388608.0f;
  } else if constexpr (BITS == 8) {
    return __uint_as_float(__byte_perm(w[j >> 2], 0x4B000000u, 0x7440u | static_cast<unsigned>(j & 3))) -
           8388608.0f;
  }
  const int bit = j * BITS, word = bit >> 5, shift = bit & 31;
  uint32_t v = w[word] >> shift;
  if (shift + BITS > 32) v |= w[word + 1] << (32 - shift);
  v &= (1u << BITS) - 1u;
  return __uint_as_float(v | 0x4B000000u) - 8388608.0f;
}

// Unit u's BITS words of a row (16-byte loads at 4/8 bits, 8-byte at 2/6, 4-byte at 3/5; the host
// checks the base alignment, row and unit offsets keep it).
template <int BITS>
__device__ __forceinline__ void load_unit(const uint32_t* __restrict__ row, int64_t u, uint32_t (&w)[BITS]) {
  const uint32_t* p = row + u * BITS;
  if constexpr (BITS % 4 == 0) {
#pragma unroll
    for (int i = 0; i < BITS / 4; ++i) {
      const uint4 v = ld_stream16(p + 4 * i);
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  } else if constexpr (BITS % 2 == 0) {
#pragma unroll
    for (int i = 0; i < BITS / 2; ++i) {
      const uint2 v = ld_stream8(p + 2 * i);
      w[2 * i] = v.x;
      w[2 * i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < BITS; ++i) w[i] = ld_stream4(p + i);
  }
}

// Whether lanes read their unit's x in a rotated chunk order (see the header): the rotation of the
// codes is cheap where a chunk of 4 codes is a whole byte, 16-bit half or word (2, 4, 8 bits).
// Rotates a unit's codes so that chunk c (codes 4c..4c+3) of the result is chunk (c + k) mod 8 of w.
template <int BITS>
__device__ __forceinline__ void rotate_chunks(uint32_t (&w)[BITS], int k) {
  if constexpr (BITS == 4) {  // chunk c = bits [16c, 16c + 16): rotate the 128 bits right by 16k
    uint32_t a[4], b[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = (k & 2) ? w[(i + 1) & 3] : w[i];
#pragma unroll
    for (int i = 0; i < 4; ++i) b[i] = (k & 4) ? a[(i + 2) & 3] : a[i];
    const unsigned sh = (k & 1) * 16u;
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = __funnelshift_r(b[i], b[(i + 1) & 3], sh);
  } else if constexpr (BITS == 8) {  // chunk c = word c
    uint32_t a[8], b[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] = (k & 1) ? w[(i + 1) & 7] : w[i];
#pragma unroll
    for (int i = 0; i < 8; ++i) b[i] = (k & 2) ? a[(i + 2) & 7] : a[i];
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = (k & 4) ? b[(i + 4) & 7] : b[i];
  } else if constexpr (BITS == 2) {  // chunk c = byte c of the 64 bits
    const uint32_t a0 = (k & 4) ? w[1] : w[0], a1 = (k & 4) ? w[0] : w[1];
    const unsigned sh = (k & 3) * 8u;
    w[0] = __funnelshift_r(a0, a1, sh);
    w[1] = __funnelshift_r(a1, a0, sh);
  }
}

// acc[r][t] += s[r] · Σ q·x + b[r] · Σ x over one unit of R rows; x points at the unit's first value
// of token 0; rot = the lane's chunk rotation (0 when ROT is off).
template <int BITS, int R, int NT, bool ROT>
__device__ __forceinline__ void quant_unit(uint32_t (&w)[R][BITS], const float (&s)[R], const float (&b)[R],
                                           const float* __restrict__ x, int64_t in, int rot, float (&acc)[R][NT]) {
  if constexpr (ROT) {
#pragma unroll
    for (int r = 0; r < R; ++r) rotate_chunks<BITS>(w[r], rot);
  }
  float qx[R][NT] = {}, sx[NT] = {};
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int cx = ROT ? ((c + rot) & 7) : c;
    float4 f[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      f[t] = __ldg(reinterpret_cast<const float4*>(x + t * in) + cx);
      sx[t] += (f[t].x + f[t].y) + (f[t].z + f[t].w);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float q0 = code<BITS>(w[r], 4 * c), q1 = code<BITS>(w[r], 4 * c + 1);
      const float q2 = code<BITS>(w[r], 4 * c + 2), q3 = code<BITS>(w[r], 4 * c + 3);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        qx[r][t] += q0 * f[t].x;
        qx[r][t] += q1 * f[t].y;
        qx[r][t] += q2 * f[t].z;
        qx[r][t] += q3 * f[t].w;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] += s[r] * qx[r][t] + b[r] * sx[t];
}

template <int BITS, int NT>
__global__ void __launch_bounds__(quant_config(BITS, NT).threads)
    gemv_quant_kernel(const __grid_constant__ GemvParams p) {
  // Chained launch (common.cuh): released as the block kernel; x is touched after chain_wait.
  if (!p.release_late) detail::chain_release();
  detail::chain_wait();
  if (p.release_late) detail::chain_release();
  constexpr Config c = quant_config(BITS, NT);
  constexpr int R = c.rows, U = c.units, WARPS = c.threads / 32;
  constexpr bool ROT = c.rot;
  const Slot sl = locate<R, WARPS>(p);
  const int lane = threadIdx.x & 31;
  const int64_t rows = p.rows[sl.j];
  const uint32_t* packed = static_cast<const uint32_t*>(p.w[sl.j]);
  const void* scales = p.scales[sl.j];
  const void* biases = p.biases[sl.j];
  const uint32_t* rowp[R];
  int64_t grow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    int64_t rr = sl.block_row0 + sl.grp * R + r;
    rr = rr < rows ? rr : rows - 1;  // clamped rows are computed, not stored
    rowp[r] = packed + rr * p.words;
    grow[r] = rr * p.groups;
  }
  const int rot = ROT ? (lane & 7) : 0;
  float acc[R][NT] = {};
  const int64_t step = 32 * p.ksplit;
  int64_t u = sl.kw * 32 + lane;
  // One round: the codes, scales and biases of `valid` units per row (all U in full rounds; VALID is a
  // compile-time count so the loads stay unrolled ahead of the math) are loaded before any math.
  auto round = [&](auto valid_tag) {
    constexpr int kValid = decltype(valid_tag)::value;
    uint32_t w[kValid][R][BITS];
    float s[kValid][R], b[kValid][R];
#pragma unroll
    for (int k = 0; k < kValid; ++k) {
      const int64_t uk = u + k * step, g = uk >> p.group_shift;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        load_unit<BITS>(rowp[r], uk, w[k][r]);
        s[k][r] = ld_small(scales, p.scale_kind, grow[r] + g);
        b[k][r] = ld_small(biases, p.bias_kind, grow[r] + g);
      }
    }
#pragma unroll
    for (int k = 0; k < kValid; ++k)
      quant_unit<BITS, R, NT, ROT>(w[k], s[k], b[k], p.x + (u + k * step) * 32, p.in, rot, acc);
  };
  for (; u + (U - 1) * step < p.units; u += U * step) round(std::integral_constant<int, U>{});
  // The rest: fewer than U units per lane.
  if constexpr (U > 1) {
    if (u + 2 * step < p.units) {
      if constexpr (U > 3) round(std::integral_constant<int, 3>{});
    } else if (u + step < p.units) {
      if constexpr (U > 2) round(std::integral_constant<int, 2>{});
    } else if (u < p.units) {
      round(std::integral_constant<int, 1>{});
    }
  }
  finish<R, NT, WARPS>(acc, p, sl);
}

// ---- host -----------------------------------------------------------------------------------------
}  // namespace
bool gemv_release_late() {
  static const bool on = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV_RELEASE");
    return !(v != nullptr && std::strcmp(v, "early") == 0);
  }();
  return on;
}
bool gemv_dense_early(bool norm_fused, bool accumulating) {
  enum class Early { kNone, kAll, kNorm, kAccum };
  static const Early mode = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV_DENSE_EARLY");
    if (v == nullptr) return Early::kAccum;
    if (std::strcmp(v, "0") == 0) return Early::kNone;
    if (std::strcmp(v, "1") == 0) return Early::kAll;
    if (std::strcmp(v, "norm") == 0) return Early::kNorm;
    return Early::kAccum;
  }();
  return mode == Early::kAll || (mode == Early::kNorm && norm_fused) || (mode == Early::kAccum && accumulating);
}
namespace {
bool aligned(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

int log2_exact(int64_t v) {
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

// Whether a dense launch of `rows` rows (all members) and nt tokens takes the streaming kernel:
// tall launches with several tokens, and one token from 65536 rows (the lm_heads). H200, bf16, % of
// the copy probe, block kernel -> streaming: lm_head 151936x2048 n = 1/2/4 101/72/55 -> 108/103/74,
// 152064x3584 108/82/73 -> 110/107/85, 18944x3584 n = 2/4 72/65 -> 79/71 but n = 1 91 -> 86, 11008x2048
// n = 2/4 54/44 -> 59/48 but n = 1 72 -> 67; rows <= 3584 lose at every n (2048x11008 n = 1 74 -> 47).
// VLMCHECK_CUDA_GEMV_DENSE=stream / block forces one kernel (read once).
bool dense_stream(int64_t rows, int nt) {
  static const int forced = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV_DENSE");
    if (v != nullptr && std::strcmp(v, "stream") == 0) return 1;
    if (v != nullptr && std::strcmp(v, "block") == 0) return 0;
    return -1;
  }();
  if (forced >= 0) return forced == 1;
  return rows >= 65536 || (nt >= 2 && rows >= 8192);
}

int sm_count() {
  static const int n = [] {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 1;
    return sms > 0 ? sms : 1;
  }();
  return n;
}

// Numbers groups of `rows_per_group` rows through the members: p.block_end[i] is one past member i's
// last group. Returns the total; more than a grid can index throws.
int64_t number_row_groups(GemvParams& p, int64_t rows_per_group) {
  int64_t groups = 0;
  for (int i = 0; i < p.count; ++i) {
    groups += (p.rows[i] + rows_per_group - 1) / rows_per_group;
    if (groups > 0x7fffffff)
      detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] " + std::to_string(p.rows[i]) +
                                                    " rows exceed the GEMV grid");
    p.block_end[i] = static_cast<unsigned>(groups);
  }
  return groups;
}

// The streaming dense kernel: row groups of kStreamR rows numbered through the members, a grid of
// what is resident at once (or fewer blocks, when there are fewer row groups).
template <typename WT, int NT, bool NORM>
void launch_stream(GemvParams& p, cudaStream_t st) {
  static const int per_sm = [] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_dense_stream_kernel<WT, NT, NORM>, kStreamThreads,
                                                      0) !=
            cudaSuccess ||
        n < 1)
      n = 1;
    return n;
  }();
  const int64_t groups = number_row_groups(p, kStreamR);
  const int64_t warps = kStreamThreads / 32;
  const int64_t grid = std::min<int64_t>((groups + warps - 1) / warps, static_cast<int64_t>(per_sm) * sm_count());
  detail::launch_chained("linear (gemv)", gemv_dense_stream_kernel<WT, NT, NORM>, dim3(static_cast<unsigned>(grid)),
                         dim3(kStreamThreads), 0, st, p);
}

// Numbers the blocks of one launch with this config (row groups per block from ksplit) and launches it.
template <int NT>
void launch_chunk(GemvParams& p, bool quant, int kind_or_bits, cudaStream_t st) {
  int64_t total_rows = 0;
  for (int i = 0; i < p.count; ++i) total_rows += p.rows[i];
  const bool norm = p.norm_w != nullptr;  // dense only (gemv_launch checks)
  if (!quant && dense_stream(total_rows, NT)) {
    switch (kind_or_bits) {
      case detail::kF32: norm ? launch_stream<float, NT, true>(p, st) : launch_stream<float, NT, false>(p, st); break;
      case detail::kF16: norm ? launch_stream<__half, NT, true>(p, st) : launch_stream<__half, NT, false>(p, st); break;
      default:
        norm ? launch_stream<__nv_bfloat16, NT, true>(p, st) : launch_stream<__nv_bfloat16, NT, false>(p, st);
        break;
    }
    VLM_CUDA_LAUNCHED("linear (gemv)");
    return;
  }
  const Config c = quant ? quant_config(kind_or_bits, NT) : dense_config();
  const int warps = c.threads / 32;
  // Warps per row group: about one round of U units per lane (short rows: fewer warps per row, more
  // row groups per block; long rows: all the block's warps share one group's inputs).
  const int64_t rounds = (p.units + 32 * c.units - 1) / (32 * c.units);
  p.ksplit = 1;
  while (p.ksplit < warps && p.ksplit < rounds) p.ksplit *= 2;
  const int64_t rows_per_block = (warps / p.ksplit) * c.rows;
  const int64_t blocks = number_row_groups(p, rows_per_block);
  const unsigned grid = static_cast<unsigned>(blocks);
  // Chained launches (common.cuh): in a decode step every GEMV follows a norm, a rope or another GEMV.
  auto launch = [&](auto kernel) {
    detail::launch_chained("linear (gemv)", kernel, dim3(grid), dim3(c.threads), 0, st, p);
  };
  if (!quant && norm) {
    switch (kind_or_bits) {
      case detail::kF32: launch(gemv_dense_kernel<float, NT, true>); break;
      case detail::kF16: launch(gemv_dense_kernel<__half, NT, true>); break;
      default: launch(gemv_dense_kernel<__nv_bfloat16, NT, true>); break;
    }
  } else if (!quant) {
    switch (kind_or_bits) {
      case detail::kF32: launch(gemv_dense_kernel<float, NT, false>); break;
      case detail::kF16: launch(gemv_dense_kernel<__half, NT, false>); break;
      default: launch(gemv_dense_kernel<__nv_bfloat16, NT, false>); break;
    }
  } else {
    switch (kind_or_bits) {
      case 2: launch(gemv_quant_kernel<2, NT>); break;
      case 3: launch(gemv_quant_kernel<3, NT>); break;
      case 4: launch(gemv_quant_kernel<4, NT>); break;
      case 5: launch(gemv_quant_kernel<5, NT>); break;
      case 6: launch(gemv_quant_kernel<6, NT>); break;
      default: launch(gemv_quant_kernel<8, NT>); break;
    }
  }
}

}  // namespace

bool gemv_supported(const float* x, const Weight& w) {
  if (!aligned(x, 16) || w.cols() <= 0 || w.rows() <= 0) return false;
  if (w.quantized) {
    const detail::QuantView q = detail::quant_view(w, "linear");
    const int b = q.bits;
    if (b != 2 && b != 3 && b != 4 && b != 5 && b != 6 && b != 8) return false;
    if (q.group_size != 32 && q.group_size != 64 && q.group_size != 128) return false;
    return w.cols() % 32 == 0 && aligned(q.packed, b % 4 == 0 ? 16 : b % 2 == 0 ? 8 : 4);
  }
  const int kind = detail::float_kind(w.dense, "linear", "weight");
  const int64_t v = kind == detail::kF32 ? 4 : 8;
  return w.cols() % v == 0 && aligned(detail::device_ptr(w.dense, "linear", "weight"), 16);
}

bool gemv_same_format(const Weight& a, const Weight& b) {
  if (a.quantized != b.quantized || a.cols() != b.cols()) return false;
  if (!a.quantized) return a.dense.dtype() == b.dense.dtype();
  return a.quant.spec.bits == b.quant.spec.bits && a.quant.spec.group_size == b.quant.spec.group_size &&
         a.quant.scales.dtype() == b.quant.scales.dtype() && a.quant.biases.dtype() == b.quant.biases.dtype();
}

void gemv_launch(const float* x, int64_t n, const GemvTarget* targets, int count, const GemvNorm* norm) {
  if (count < 1 || count > kGemvMaxTargets)
    detail::fail(ErrorKind::kInternal, "[cuda linear] gemv_launch takes 1.." + std::to_string(kGemvMaxTargets) +
                                           " members, got " + std::to_string(count));
  const Weight& w0 = *targets[0].w;
  const bool quant = w0.quantized;
  if (norm != nullptr && !aligned(norm->w, 8))
    detail::fail(ErrorKind::kInternal, "[cuda linear] the fused norm takes an 8-byte aligned norm weight");
  // Tokens [0, here) run on this file's kernels, the rest on the 4-bit tensor-core kernel where it
  // takes the format. Launches of at most 2048 rows in all keep chunks of 4 tokens here: this kernel
  // measured faster there on the H200 (n = 4: 3B q/o 12.0 vs 13.3 us, k/v 10.7 vs 11.8, down_proj 28.9
  // vs 29.4 with the tensor-core kernel's global K-split), the tensor-core kernel everywhere else (one
  // token of the 3B down_proj: 14.6 us here, 12.2 there with the global K-split). With a fused norm
  // (quantized: only 4-bit weights the tensor-core kernel takes) every token goes there: the CUDA-core
  // quantized kernel reads x as given.
  int64_t here = n;
  if (quant) {
    bool mma = true;
    int64_t total_rows = 0;
    for (int i = 0; i < count && mma; ++i) {
      mma = gemv_mma_supported(x, *targets[i].w);
      total_rows += targets[i].w->rows();
    }
    if (mma) {
      here = 0;
      if (total_rows <= 2048 && !gemv_mma_everywhere() && norm == nullptr) here = n / 4 * 4;
      if (here < n) {
        GemvTarget rest[kGemvMaxTargets];
        for (int i = 0; i < count; ++i) {
          rest[i] = targets[i];
          rest[i].y = targets[i].y + here * targets[i].w->rows();
        }
        gemv_mma_launch(x + here * w0.cols(), n - here, rest, count, norm);
      }
      if (here == 0) return;
    }
    if (norm != nullptr)
      detail::fail(ErrorKind::kInternal,
                   "[cuda linear] the fused norm takes dense weights or 4-bit ones the tensor-core GEMV takes");
  }
  GemvParams p{};
  p.in = w0.cols();
  p.count = count;
  bool accumulating = false;
  for (int i = 0; i < count; ++i) accumulating = accumulating || targets[i].accumulate;
  p.early = gemv_dense_early(norm != nullptr, accumulating) ? 1 : 0;
  p.release_late = gemv_release_late() ? 1 : 0;
  if (norm != nullptr) {
    p.norm_w = norm->w;
    p.norm_kind = norm->kind;
    p.norm_eps = norm->eps;
    p.norm_offset = norm->offset;
  }
  int kind_or_bits = 0;
  if (quant) {
    const detail::QuantView q = detail::quant_view(w0, "linear");
    kind_or_bits = q.bits;
    p.units = p.in / 32;
    p.group_shift = log2_exact(q.group_size / 32);
    p.scale_kind = q.scale_kind;
    p.bias_kind = q.bias_kind;
    p.groups = q.groups;
    p.words = q.words_per_row;
  } else {
    kind_or_bits = detail::float_kind(w0.dense, "linear", "weight");
    p.units = p.in / (kind_or_bits == detail::kF32 ? 4 : 8);
  }
  for (int i = 0; i < count; ++i) {
    const Weight& w = *targets[i].w;
    p.rows[i] = w.rows();
    if (quant) {
      const detail::QuantView q = detail::quant_view(w, "linear");
      p.w[i] = q.packed;
      p.scales[i] = q.scales;
      p.biases[i] = q.biases;
    } else {
      p.w[i] = detail::device_ptr(w.dense, "linear", "weight");
    }
    const GemvBias bias = gemv_bias(targets[i]);
    p.out_bias[i] = bias.ptr;
    p.out_bias_kind[i] = bias.kind;
    if (targets[i].accumulate) p.accumulate |= 1u << i;
  }
  cudaStream_t st = detail::stream("linear");
  for (int64_t t0 = 0; t0 < here;) {
    p.x = x + t0 * p.in;
    for (int i = 0; i < count; ++i) p.y[i] = targets[i].y + t0 * p.rows[i];
    const int64_t left = here - t0;
    if (left >= 4) {
      launch_chunk<4>(p, quant, kind_or_bits, st);
      t0 += 4;
    } else if (left >= 2) {
      launch_chunk<2>(p, quant, kind_or_bits, st);
      t0 += 2;
    } else {
      launch_chunk<1>(p, quant, kind_or_bits, st);
      t0 += 1;
    }
  }
}

}  // namespace vlm::ops::cuda::kernels
