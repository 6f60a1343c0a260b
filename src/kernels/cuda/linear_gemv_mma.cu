// The decode GEMV (n < 8 tokens) for MLX affine 4-bit weights on integer tensor cores:
// y[t, r] = Σ_groups s[r, g] · Σ_{c in g} q[r, c] · x[t, c] + b[r, g] · Σ_{c in g} x[t, c] (+ bias[r]).
// The codes are the A operand of mma.sync m16n8k32 u8 × s8 → s32 as they are (a nibble mask turns a
// word of 8 codes into two registers of 4 byte codes: 3 instructions per 8 codes, no float
// conversion); x is the B operand, written exactly enough as integers.
//
//   x as integers. Per 32..128-value quantization group and token, x is put on a fixed-point grid
//   relative to the group's largest |x| (2^e > max |x|): m = rint(x · 2^(22-e)), |m| <= 2^22, split into
//   three signed bytes m = d0 + 2^8 d1 + 2^16 d2, which are three B columns. The MMA sums q·d exactly
//   in int32; per group the three column sums are turned to f32 and scaled by s · 2^(e-22+8k). The
//   only rounding besides the f32 accumulation is m's: at most 2^-23 · max|x| of the group per value,
//   below f32's own rounding of the products the reference sums (relative 2^-24 of each term, which
//   sum to at least max|x| · |w| of the group). b · Σx uses Σx in f32.
//   Fragments (m16n8k32, lane = 4·gid + tig): A rows gid and gid+8 are two weight rows, A bytes
//   k = 4·tig..+3 (register a0/a1) and 4·tig+16..+19 (a2/a3); B column gid, the same k. Each lane loads
//   the words of its own rows, and word w of a lane gives a0 = w & 0x0F0F0F0F (codes 0, 2, 4, 6 of the
//   word) and a2 = (w >> 4) & 0x0F0F0F0F (codes 1, 3, 5, 7); the K order inside one MMA is thereby
//   permuted, and x's digits are staged in the same order (b0 = digits of x at the word's even
//   columns, b1 = odd). One MMA covers 4 words of each row (one per tig lane), always inside one group.
//   Rounds. A row is read in rounds of 128 values (64 bytes): lane tig loads 16 bytes of each of its
//   rows, as one 16-byte load (group 128), two 8-byte loads (group 64: each quad reads one 32-byte
//   group) or four 4-byte loads (group 32). A warp owns 32 rows (two MMA row tiles); the block's
//   warps split the rounds of those rows (round r goes to warp r mod warps) and are reduced through
//   shared memory at the end. The next round's codes, scales and biases are loaded (streaming, not
//   kept in L1) before the current round's math.
//   Staging. Per round each warp writes its round's x digits (and per group and token 2^(e-22) and
//   Σx) to its own shared-memory slice, each lane converting 4 values per token; a swizzle keeps the
//   8-byte B-fragment reads free of bank conflicts.
//   Tokens. Columns are (token, digit): one MMA holds 2 tokens (6 columns), so n <= 2 is one MMA per
//   k step and 3..7 tokens are four (the codes' conversion is shared by all of them).
#include "kernels/cuda/linear_gemv.cuh"

#include <cooperative_groups.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kMaxWarps = 8;  // K-split warps per block
constexpr int kTiles = 2;     // 16-row MMA tiles per warp
constexpr int kRowsPerBlock = 16 * kTiles;

struct MmaParams {
  const float* x;  // [n, in] f32
  int64_t in;      // inputs per row (x's row stride)
  int nt;          // tokens of this launch (1..2 or 1..8)
  int rounds;      // 128-value rounds per row
  int64_t words;   // u32 words per row
  int64_t groups;  // groups per row
  int scale_kind, bias_kind;
  int count;
  int cs;  // blocks per cluster: K-splits across blocks, reduced through distributed shared memory
  unsigned block_end[kGemvMaxTargets];  // cumulative 32-row groups per member
  int64_t rows[kGemvMaxTargets];
  const uint32_t* w[kGemvMaxTargets];
  const void* scales[kGemvMaxTargets];
  const void* biases[kGemvMaxTargets];
  const void* out_bias[kGemvMaxTargets];
  int out_bias_kind[kGemvMaxTargets];
  float* y[kGemvMaxTargets];  // [n, rows] f32
};

// Group-size dependent layout of one round (16 words of a row).
template <int G>
struct Round {
  static constexpr int kLc = G / 32;        // words per load per lane (1, 2, 4)
  static constexpr int kGroups = 128 / G;   // groups per round
  // Word position within the round of lane tig's i-th word: the quad's i-th words are one run of
  // 4·kLc consecutive words inside one group.
  __device__ static constexpr int pos(int tig, int i) { return (i / kLc) * 4 * kLc + tig * kLc + i % kLc; }
};

__device__ __forceinline__ uint32_t ld_code_words1(const uint32_t* p, bool stream) {
  uint32_t v;
  if (stream)
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  else
    asm("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

// Loads the 4 words of lane tig in one round of one row (16-, 8- or 4-byte loads by group size).
template <int G>
__device__ __forceinline__ void load_words(const uint32_t* __restrict__ row, int r, int tig, uint32_t (&w)[4]) {
  const uint32_t* base = row + r * 16;
  if constexpr (G == 128) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(base + 4 * tig));
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (G == 64) {
#pragma unroll
    for (int run = 0; run < 2; ++run) {
      uint2 v;
      asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(base + run * 8 + 2 * tig));
      w[2 * run] = v.x, w[2 * run + 1] = v.y;
    }
  } else {
    // 16-byte runs per quad: half a sector per instruction, the next instruction reads the other half,
    // so these go through L1 (allocating) to be fetched from L2 once.
#pragma unroll
    for (int run = 0; run < 4; ++run) w[run] = ld_code_words1(base + run * 4 + tig, false);
  }
}

// Words of scales or biases for one round of one row: kGroups values of SB bytes.
template <int G, int SB>
struct ScaleWords {
  static constexpr int kBytes = (128 / G) * SB;
  static constexpr int kN = kBytes < 4 ? 1 : kBytes / 4;
  __device__ static void load(const void* base, int64_t first, uint32_t (&v)[kN]) {
    const char* p = static_cast<const char*>(base) + first * SB;
    if constexpr (kBytes == 2) {
      v[0] = __ldg(reinterpret_cast<const unsigned short*>(p));
    } else if constexpr (kBytes == 4) {
      v[0] = __ldg(reinterpret_cast<const unsigned*>(p));
    } else if constexpr (kBytes == 8) {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
      v[0] = u.x, v[1] = u.y;
    } else {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
      v[0] = u.x, v[1] = u.y, v[2] = u.z, v[3] = u.w;
    }
  }
  // Value jj (round-local group) as f32.
  __device__ static float get(const uint32_t (&v)[kN], int jj, int kind) {
    if constexpr (SB == 4) {
      return __uint_as_float(v[jj]);
    } else {
      const uint32_t h = (v[jj >> 1] >> (16 * (jj & 1))) & 0xffffu;
      if (kind == detail::kBF16) return __uint_as_float(h << 16);
      return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
    }
  }
};

// Low bytes of four ints packed into one register (byte k = v[k]).
__device__ __forceinline__ uint32_t pack_low_bytes(int a, int b, int c, int d) {
  const uint32_t ab = __byte_perm(static_cast<uint32_t>(a), static_cast<uint32_t>(b), 0x0040);
  const uint32_t cd = __byte_perm(static_cast<uint32_t>(c), static_cast<uint32_t>(d), 0x0040);
  return __byte_perm(ab, cd, 0x5410);
}

__device__ __forceinline__ int sext8(int v) { return static_cast<int>(static_cast<uint32_t>(v) << 24) >> 24; }

__device__ __forceinline__ void mma_u8s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One round's loaded operands of a warp: codes, scales and biases of its 2 × 2 rows per lane.
template <int G, int SB>
struct Buf {
  uint32_t c[kTiles][2][4];
  uint32_t s[kTiles][2][ScaleWords<G, SB>::kN];
  uint32_t b[kTiles][2][ScaleWords<G, SB>::kN];
};

// Index (in uint2) of the B fragment of MMA jm, word i, lane (col, tig) in a warp's staging slice:
// 8 consecutive lanes of one 8-byte wavefront hit distinct banks thanks to the col swizzle by tig.
__device__ __forceinline__ int stage_index(int jm, int i, int tig, int col) {
  return ((jm * 4 + i) * 4 + tig) * 8 + (col ^ (4 * (tig >> 1)));
}

template <int G, int SB, int NM>
__global__ void __launch_bounds__(32 * kMaxWarps, NM == 1 ? 2 : 1)
    gemv_q4_mma_kernel(const __grid_constant__ MmaParams p) {
  using RL = Round<G>;
  using SW = ScaleWords<G, SB>;
  constexpr int kGroups = RL::kGroups;
  constexpr int kStage = NM * 128;  // uint2 per warp: NM MMAs × 4 words × 4 tig × 8 columns
  __shared__ __align__(16) uint2 stage_all[kMaxWarps * kStage];
  __shared__ float2 grp_all[kMaxWarps][kGroups * 2 * NM];  // {2^(e-22), Σx} per (group, token)
  __shared__ float block_sum[kRowsPerBlock * 2 * NM];       // this block's partial y [token][row]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int gid = lane >> 2, tig = lane & 3;
  // Row group (32 rows) and this block's K-split within its cluster.
  const unsigned rg = blockIdx.x / p.cs, split = blockIdx.x % p.cs;
  int j = 0;
  while (j + 1 < p.count && rg >= p.block_end[j]) ++j;
  const unsigned first = j > 0 ? p.block_end[j - 1] : 0u;
  const int64_t rows = p.rows[j];
  const int64_t row0 = static_cast<int64_t>(rg - first) * kRowsPerBlock;
  const uint32_t* rowp[kTiles][2];
  int64_t srow[kTiles][2];
#pragma unroll
  for (int m = 0; m < kTiles; ++m)
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      int64_t rr = row0 + 16 * m + 8 * q + gid;
      rr = rr < rows ? rr : rows - 1;  // clamped rows are computed, not stored
      rowp[m][q] = p.w[j] + rr * p.words;
      srow[m][q] = rr * p.groups;
    }
  const void* scales = p.scales[j];
  const void* biases = p.biases[j];

  uint2* stage = stage_all + warp * kStage;
  float2* grp = grp_all[warp];
  for (int i = lane; i < kStage; i += 32) stage[i] = make_uint2(0u, 0u);
  for (int i = lane; i < kGroups * 2 * NM; i += 32) grp[i] = make_float2(0.0f, 0.0f);
  __syncwarp();

  // This lane's C columns 2·tig and 2·tig + 1 of each MMA: (token within the MMA, digit); columns 6
  // and 7 are unused (multiplier 0).
  const int col_a = 2 * tig, col_b = 2 * tig + 1;
  const int tok_a = col_a < 6 ? col_a / 3 : 0, tok_b = col_b < 6 ? col_b / 3 : 0;
  const float mul_a = col_a < 6 ? (col_a % 3 == 0 ? 1.0f : col_a % 3 == 1 ? 256.0f : 65536.0f) : 0.0f;
  const float mul_b = col_b < 6 ? (col_b % 3 == 0 ? 1.0f : col_b % 3 == 1 ? 256.0f : 65536.0f) : 0.0f;
  const float bias_a = col_a < 6 && col_a % 3 == 0 ? 1.0f : 0.0f;
  const float bias_b = col_b < 6 && col_b % 3 == 0 ? 1.0f : 0.0f;

  // The staging lane's word (2 lanes per word: h = 0 takes the even columns, 1 the odd ones).
  const int sp = lane >> 1, sh = lane & 1;
  const int s_run = sp / (4 * RL::kLc), s_rem = sp % (4 * RL::kLc);
  const int s_tig = s_rem / RL::kLc, s_i = s_run * RL::kLc + s_rem % RL::kLc;
  const int s_grp = (8 * sp) / G;

  float acc[kTiles][NM][4] = {};

  auto load = [&](Buf<G, SB>& bf, int r) {
#pragma unroll
    for (int m = 0; m < kTiles; ++m)
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        load_words<G>(rowp[m][q], r, tig, bf.c[m][q]);
        SW::load(scales, srow[m][q] + static_cast<int64_t>(r) * kGroups, bf.s[m][q]);
        SW::load(biases, srow[m][q] + static_cast<int64_t>(r) * kGroups, bf.b[m][q]);
      }
  };

  // x digits of round r into the staging slice.
  auto stage_x = [&](int r) {
    for (int tk = 0; tk < p.nt; ++tk) {
      const float4* xr = reinterpret_cast<const float4*>(p.x + tk * p.in + static_cast<int64_t>(r) * 128 + 8 * sp);
      const float4 u0 = __ldg(xr), u1 = __ldg(xr + 1);
      const float v[4] = {sh ? u0.y : u0.x, sh ? u0.w : u0.z, sh ? u1.y : u1.x, sh ? u1.w : u1.z};
      float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
      float sum = (v[0] + v[1]) + (v[2] + v[3]);
#pragma unroll
      for (int o = 1; o < G / 4; o <<= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
      }
      // 2^e > amax with e = E - 126 (E: amax's biased exponent, at least 22 so the factors stay normal).
      const int e_biased = max(static_cast<int>(__float_as_uint(amax) >> 23), 22);
      const float f = __uint_as_float(static_cast<uint32_t>(275 - e_biased) << 23);  // 2^(22 - e)
      int d0[4], d1[4], d2[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        // rint(v·f) by the 1.5·2^23 shift (|v·f| < 2^22).
        const int m = __float_as_int(fmaf(v[k], f, 12582912.0f)) - 0x4B400000;
        const int m1 = (m - sext8(m)) >> 8;
        d0[k] = m;
        d1[k] = m1;
        d2[k] = (m1 - sext8(m1)) >> 8;
      }
      if ((lane & (G / 4 - 1)) == 0)
        grp[s_grp * 2 * NM + tk] = make_float2(__uint_as_float(static_cast<uint32_t>(e_biased - 21) << 23), sum);
      const int jm = tk >> 1, cbase = 3 * (tk & 1);
      uint32_t* st = reinterpret_cast<uint32_t*>(stage);
      st[2 * stage_index(jm, s_i, s_tig, cbase) + sh] = pack_low_bytes(d0[0], d0[1], d0[2], d0[3]);
      st[2 * stage_index(jm, s_i, s_tig, cbase + 1) + sh] = pack_low_bytes(d1[0], d1[1], d1[2], d1[3]);
      st[2 * stage_index(jm, s_i, s_tig, cbase + 2) + sh] = pack_low_bytes(d2[0], d2[1], d2[2], d2[3]);
    }
  };

  auto process = [&](Buf<G, SB>& bf, int r) {
    stage_x(r);
    __syncwarp();
    int c[kTiles][NM][4] = {};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint2 bv[NM];
#pragma unroll
      for (int jm = 0; jm < NM; ++jm) bv[jm] = stage[stage_index(jm, i, tig, gid)];
#pragma unroll
      for (int m = 0; m < kTiles; ++m) {
        const uint32_t w0 = bf.c[m][0][i], w1 = bf.c[m][1][i];
        const uint32_t lo0 = w0 & 0x0F0F0F0Fu, hi0 = (w0 >> 4) & 0x0F0F0F0Fu;
        const uint32_t lo1 = w1 & 0x0F0F0F0Fu, hi1 = (w1 >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int jm = 0; jm < NM; ++jm) mma_u8s8(c[m][jm], lo0, lo1, hi0, hi1, bv[jm].x, bv[jm].y);
      }
      if (i % RL::kLc == RL::kLc - 1) {  // end of a group: scale into the f32 sums
        const int jj = i / RL::kLc;
        float fa[NM], fb[NM], ba[NM], bb[NM];
#pragma unroll
        for (int jm = 0; jm < NM; ++jm) {
          const float2 ga = grp[jj * 2 * NM + 2 * jm + tok_a], gb = grp[jj * 2 * NM + 2 * jm + tok_b];
          fa[jm] = ga.x * mul_a;
          fb[jm] = gb.x * mul_b;
          ba[jm] = ga.y * bias_a;
          bb[jm] = gb.y * bias_b;
        }
#pragma unroll
        for (int m = 0; m < kTiles; ++m)
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            const float s = SW::get(bf.s[m][q], jj, p.scale_kind), b = SW::get(bf.b[m][q], jj, p.bias_kind);
#pragma unroll
            for (int jm = 0; jm < NM; ++jm) {
              acc[m][jm][2 * q] = fmaf(s * fa[jm], static_cast<float>(c[m][jm][2 * q]), fmaf(b, ba[jm], acc[m][jm][2 * q]));
              acc[m][jm][2 * q + 1] =
                  fmaf(s * fb[jm], static_cast<float>(c[m][jm][2 * q + 1]), fmaf(b, bb[jm], acc[m][jm][2 * q + 1]));
              c[m][jm][2 * q] = 0;
              c[m][jm][2 * q + 1] = 0;
            }
          }
      }
    }
    __syncwarp();
  };

  // Rounds kw, kw + kws, ... (kw: this warp among the cluster's kws warps); two buffers alternate so
  // the next round's loads are in flight during the current round's math.
  Buf<G, SB> b0, b1;
  const int kws = warps * p.cs;
  int r = static_cast<int>(split) * warps + warp;
  if (r < p.rounds) load(b0, r);
  while (r < p.rounds) {
    if (r + kws < p.rounds) load(b1, r + kws);
    process(b0, r);
    r += kws;
    if (r >= p.rounds) break;
    if (r + kws < p.rounds) load(b0, r + kws);
    process(b1, r);
    r += kws;
  }

  // Reduce over the block's warps (K-splits) and each token's three digit columns.
  __syncthreads();
  float* red = reinterpret_cast<float*>(stage_all);  // [warp][tile][mma][16 rows][8 cols]
#pragma unroll
  for (int m = 0; m < kTiles; ++m)
#pragma unroll
    for (int jm = 0; jm < NM; ++jm) {
      float* t = red + ((warp * kTiles + m) * NM + jm) * 128;
      *reinterpret_cast<float2*>(t + gid * 8 + 2 * tig) = make_float2(acc[m][jm][0], acc[m][jm][1]);
      *reinterpret_cast<float2*>(t + (gid + 8) * 8 + 2 * tig) = make_float2(acc[m][jm][2], acc[m][jm][3]);
    }
  __syncthreads();
  for (int o = threadIdx.x; o < kRowsPerBlock * p.nt; o += blockDim.x) {
    const int tk = o / kRowsPerBlock, rr = o % kRowsPerBlock;
    const int m = rr / 16, row16 = rr % 16, jm = tk >> 1, cb = 3 * (tk & 1);
    float sum = 0.0f;
    for (int k = 0; k < warps; ++k) {
      const float* t = red + ((k * kTiles + m) * NM + jm) * 128 + row16 * 8 + cb;
      sum += (t[0] + t[1]) + t[2];
    }
    block_sum[o] = sum;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The cluster's blocks hold K-splits of the same rows: block 0 adds the others' sums (fixed order)
  // from their shared memory; the second sync keeps that memory alive until it has been read.
  cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
  if (p.cs > 1) {
    cluster.sync();
    if (split == 0) {
      for (int o = threadIdx.x; o < kRowsPerBlock * p.nt; o += blockDim.x) {
        float sum = block_sum[o];
        for (int c = 1; c < p.cs; ++c) sum += cluster.map_shared_rank(block_sum, c)[o];
        block_sum[o] = sum;
      }
    }
    cluster.sync();
    if (split != 0) return;
  }
#endif
  __syncthreads();
  for (int o = threadIdx.x; o < kRowsPerBlock * p.nt; o += blockDim.x) {
    const int tk = o / kRowsPerBlock, rr = o % kRowsPerBlock;
    float sum = block_sum[o];
    const int64_t row = row0 + rr;
    if (row < rows) {
      const void* ob = p.out_bias[j];
      if (ob != nullptr) {
        const int kind = p.out_bias_kind[j];
        float bv;
        if (kind == detail::kF16)
          bv = __half2float(__ldg(static_cast<const __half*>(ob) + row));
        else if (kind == detail::kBF16)
          bv = __uint_as_float(static_cast<uint32_t>(__ldg(static_cast<const unsigned short*>(ob) + row)) << 16);
        else
          bv = __ldg(static_cast<const float*>(ob) + row);
        sum = __fadd_rn(sum, bv);
      }
      p.y[j][tk * rows + row] = sum;
    }
  }
}

template <int G, int SB, int NM>
void launch_kernel(const MmaParams& p, unsigned grid, int threads, cudaStream_t st) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  if (p.cs > 1) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(p.cs);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  VLM_CUDA(cudaLaunchKernelEx(&cfg, gemv_q4_mma_kernel<G, SB, NM>, p), "linear (gemv, tensor cores)");
}

// Resident blocks per SM of one instantiation at `threads` (cached per warps count).
template <int G, int SB, int NM>
int blocks_per_sm(int threads) {
  static int cache[kMaxWarps + 1] = {};
  int& c = cache[threads / 32];
  if (c == 0) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_q4_mma_kernel<G, SB, NM>, threads, 0) != cudaSuccess ||
        n < 1)
      n = 1;
    c = n;
  }
  return c;
}

struct DeviceShape {
  int sms = 0;
  bool clusters = false;
};

DeviceShape device_shape() {
  static const DeviceShape d = [] {
    DeviceShape s{1, false};
    int dev = 0, sms = 0, major = 0;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess) {
      s.sms = sms > 0 ? sms : 1;
      s.clusters = major >= 9;
    }
    return s;
  }();
  return d;
}

// Picks the cluster size (K-splits across blocks: 1, 2, 4 or 8) for `groups` 32-row groups and
// launches. The score is the filled fraction of the last wave of blocks (a launch of less than one
// wave leaves SMs idle), times 0.9 where a warp gets fewer than 2 rounds (nothing to prefetch);
// ties keep the smaller cluster.
template <int G, int SB, int NM>
void launch_shape(MmaParams& p, int64_t groups, int warps, cudaStream_t st) {
  const DeviceShape d = device_shape();
  const int threads = 32 * warps;
  const double slots = static_cast<double>(d.sms) * blocks_per_sm<G, SB, NM>(threads);
  int best = 1;
  double best_score = -1;
  for (int cs = 1; cs <= (d.clusters ? 8 : 1); cs *= 2) {
    if (cs > 1 && warps * cs > p.rounds) break;
    const double waves = static_cast<double>(groups * cs) / slots;
    double score = waves < 1 ? waves : waves / std::ceil(waves);
    if (2 * warps * cs > p.rounds) score *= 0.9;
    if (score > best_score + 1e-9) best = cs, best_score = score;
  }
  p.cs = best;
  const int64_t grid = groups * best;
  if (grid > 0x7fffffff)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] " + std::to_string(groups * kRowsPerBlock) +
                                                  " rows exceed the GEMV grid");
  launch_kernel<G, SB, NM>(p, static_cast<unsigned>(grid), threads, st);
}

template <int G, int SB>
void launch_g(MmaParams& p, int nm, int64_t groups, int warps, cudaStream_t st) {
  if (nm == 1)
    launch_shape<G, SB, 1>(p, groups, warps, st);
  else
    launch_shape<G, SB, 4>(p, groups, warps, st);
}

bool aligned(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

}  // namespace

bool gemv_legacy_requested() {
  static const bool legacy = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV");
    return v != nullptr && std::strcmp(v, "legacy") == 0;
  }();
  return legacy;
}

bool gemv_mma_supported(const float* x, const Weight& w) {
  if (!w.quantized || gemv_legacy_requested()) return false;
  const detail::QuantView q = detail::quant_view(w, "linear");
  if (q.bits != 4 || (q.group_size != 32 && q.group_size != 64 && q.group_size != 128)) return false;
  if (w.cols() % 128 != 0 || !aligned(x, 16) || !aligned(q.packed, 16)) return false;
  const int sb = q.scale_kind == detail::kF32 ? 4 : 2, bb = q.bias_kind == detail::kF32 ? 4 : 2;
  // A round's scales (and biases) of a row are one aligned load of (128 / group) values.
  const uintptr_t round_bytes = static_cast<uintptr_t>(128 / q.group_size) * sb;
  return sb == bb && aligned(q.scales, round_bytes) && aligned(q.biases, round_bytes);
}

void gemv_mma_launch(const float* x, int64_t n, const GemvTarget* targets, int count) {
  const Weight& w0 = *targets[0].w;
  const detail::QuantView q0 = detail::quant_view(w0, "linear");
  MmaParams p{};
  p.in = w0.cols();
  p.rounds = static_cast<int>(p.in / 128);
  p.words = q0.words_per_row;
  p.groups = q0.groups;
  p.scale_kind = q0.scale_kind;
  p.bias_kind = q0.bias_kind;
  p.count = count;
  int64_t blocks = 0;
  for (int i = 0; i < count; ++i) {
    const Weight& w = *targets[i].w;
    const detail::QuantView q = detail::quant_view(w, "linear");
    p.rows[i] = w.rows();
    p.w[i] = static_cast<const uint32_t*>(q.packed);
    p.scales[i] = q.scales;
    p.biases[i] = q.biases;
    const Tensor* bias = targets[i].bias;
    if (bias != nullptr && bias->defined()) {
      if (bias->numel() != w.rows())
        detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] bias has " + std::to_string(bias->numel()) +
                                                      " values, expected " + std::to_string(w.rows()));
      p.out_bias[i] = detail::device_ptr(*bias, "linear", "bias");
      p.out_bias_kind[i] = detail::float_kind(*bias, "linear", "bias");
    }
    blocks += (w.rows() + kRowsPerBlock - 1) / kRowsPerBlock;
    if (blocks > 0x0fffffff)
      detail::fail(ErrorKind::kInvalidArgument,
                   "[cuda linear] " + std::to_string(w.rows()) + " rows exceed the GEMV grid");
    p.block_end[i] = static_cast<unsigned>(blocks);
  }
  // Warps per block (K-splits): at least 2 rounds per warp where the row is long enough.
  int warps = 1;
  while (warps < kMaxWarps && 2 * warps * 2 <= p.rounds) warps *= 2;
  const int group = q0.group_size, sb = q0.scale_kind == detail::kF32 ? 4 : 2;
  cudaStream_t st = detail::stream("linear");
  for (int64_t t0 = 0; t0 < n;) {
    const int64_t left = n - t0;
    const int nt = static_cast<int>(left <= 2 ? left : left < 8 ? left : 8);
    const int nm = nt <= 2 ? 1 : 4;
    p.nt = nt;
    p.x = x + t0 * p.in;
    for (int i = 0; i < count; ++i) p.y[i] = targets[i].y + t0 * p.rows[i];
    if (group == 32)
      sb == 4 ? launch_g<32, 4>(p, nm, blocks, warps, st) : launch_g<32, 2>(p, nm, blocks, warps, st);
    else if (group == 64)
      sb == 4 ? launch_g<64, 4>(p, nm, blocks, warps, st) : launch_g<64, 2>(p, nm, blocks, warps, st);
    else
      sb == 4 ? launch_g<128, 4>(p, nm, blocks, warps, st) : launch_g<128, 2>(p, nm, blocks, warps, st);
    t0 += nt;
  }
}

}  // namespace vlm::ops::cuda::kernels
