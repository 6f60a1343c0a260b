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
//   Rounds. A row is read in rounds of 128 values (64 bytes). A warp owns 32 rows (two MMA row
//   tiles); the block's warps, and the cs blocks of a row group, split the rounds of those rows
//   (round r goes to warp r mod (warps · cs)) and are reduced through shared memory at the end of the
//   row group, then across the blocks in a fixed order (split 0, 1, ...): through distributed shared
//   memory where the blocks are a thread-block cluster (sm_90), or through global memory (each block
//   writes its sums, the last to arrive on the row group's counter adds them and stores; long rows,
//   see kGlobalSplitRounds). With the same splits both give the same bits. Each warp streams its
//   rounds through a ring of kStages rounds in shared memory filled by cp.async (codes bypass L1):
//   kStages - 1 rounds are in flight while one is computed, without registers held for them. From the
//   ring, lane tig reads 16 bytes of each of its rows: word i of the lane is word (i / L)·4L + tig·L +
//   i % L of the round, L = group / 32, so the quad's i-th words are one run inside one group.
//   Persistent blocks. Where there are more 32-row groups than blocks resident at once, the grid is
//   made of what fits (each block the same number of row groups) and a block walks row groups
//   g, g + grid, ...: a warp's rounds are the same in every row group, so its ring streams on across
//   row groups without draining, and x is converted once per block instead of once per row group.
//   Staging. In the prologue (while the ring's first copies fly) each warp copies the raw x of its
//   rounds into shared memory and converts it in place into digits (per group and token also
//   2^(e-22) and Σx), each lane converting 4 values per token; the loop then only reads them.
//   Columns. Two tokens: (token, digit), 6 of the MMA's 8 columns. One token: (slot, digit), the slot
//   being the parity of the group inside the round (group 32/64), so two groups accumulate in
//   separate int32 columns and one flush scales both: half the per-group f32 work of 3 columns.
//   Tokens. n > 2 runs in chunks of 2 tokens, each reading the weights once (gemv_launch keeps some
//   chunks on the CUDA-core kernel).
//   Fused forms (ops.h LinearOut). accumulate: the store adds the row's sum (bias included) to y.
//   norm: x is normalized while it is staged — each block sums x² over the whole row (L2-resident,
//   while its x copies fly), then every staged value becomes (x · inv_rms) · (w + offset), rms_norm's
//   rounding — so the decoder's pre-norms cost no launch of their own on 4-bit weights either.
//   Chained launches (common.cuh): chain_release() first; where the launch is chained the ring's
//   first kStages - 1 rounds (weights only) are issued before chain_wait(), so they stream while the
//   previous kernel drains, then x. Nothing is written before chain_wait().
//   The global split's reduction is its own instances (template GS): the others compile without it.
//   Launch shape (H200/H100, bench_cuda_kernels --quant, 1/2/4/8 warps, with and without clusters): up to 8
//   warps per block (at least 2 rounds each; 4 below 64 rounds until stop 18's H100 runs); K split across blocks only where the row groups alone give
//   fewer blocks than SMs (rows of 64+ rounds: 2 splits through global memory, else a cluster). Before persistent blocks, prologue staging and slots: 61-66% of the copy probe on the
//   lm_heads, 36-40% on the 7B gate/up and down at n = 1, the limit being the per-round work of a
//   warp (ncu: ~700 instructions per warp and 2 KB round, x staging included), not DRAM.
#include "kernels/cuda/linear_gemv.cuh"

#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kMaxWarps = 8;  // K-split warps per block
constexpr int kTiles = 2;     // 16-row MMA tiles per warp
constexpr int kRowsPerBlock = 16 * kTiles;
constexpr int kStages = 4;  // rounds of codes, scales and biases in flight per warp (cp.async ring)

struct MmaParams {
  const float* x;  // [n, in] f32
  int64_t in;      // inputs per row (x's row stride)
  int nt;          // tokens of this launch (1 or 2)
  int rounds;      // 128-value rounds per row
  int64_t words;   // u32 words per row
  int64_t groups;  // groups per row
  int scale_kind, bias_kind;
  int count;
  int cs;  // blocks per row group: K-splits across blocks (a cluster's, or through global memory)
  int global_split;  // 1: the cs blocks are not a cluster; they reduce through `partials` (below)
  int nr;  // digit slices per warp: the most rounds any warp of the launch takes
  unsigned block_end[kGemvMaxTargets];  // cumulative 32-row groups per member
  int64_t rows[kGemvMaxTargets];
  const uint32_t* w[kGemvMaxTargets];
  const void* scales[kGemvMaxTargets];
  const void* biases[kGemvMaxTargets];
  const void* out_bias[kGemvMaxTargets];
  int out_bias_kind[kGemvMaxTargets];
  float* y[kGemvMaxTargets];  // [n, rows] f32
  unsigned accumulate;        // bit j: member j adds its sums to y (GemvTarget::accumulate)
  // Global split only: each block's partial sums [row group][split][token][32 rows] f32 and one
  // arrival counter per row group (zero between calls: the last block of a row group resets it).
  float* partials;
  int* counters;
  // The fused input RMSNorm (GemvNorm; norm_w null: x as given): x is staged as
  // (x · inv_rms) · (norm_w + offset), rms_norm's rounding, inv_rms from a block-wide sum of squares.
  const void* norm_w;
  int norm_kind;
  float norm_eps, norm_offset;
  int chained;  // launched chained (common.cuh): the ring's first copies go out before chain_wait()
  int release_late;  // chain_release() after chain_wait() (gemv_release_late(), linear_gemv.cuh)
};

// Group-size dependent layout of one round (16 words of a row).
template <int G>
struct Round {
  static constexpr int kLc = G / 32;       // words of one quad run per lane (1, 2, 4)
  static constexpr int kGroups = 128 / G;  // groups per round
};

// Scales or biases of one round of one row: kGroups values of SB bytes, copied as one aligned piece
// of kCopy bytes (the 4-byte word holding the value when a round has a single 2-byte value).
template <int G, int KIND>
struct ScaleWords {
  static constexpr int SB = KIND == detail::kF32 ? 4 : 2;
  static constexpr int kBytes = (128 / G) * SB;
  static constexpr int kCopy = kBytes < 4 ? 4 : kBytes;
  static constexpr int kN = kCopy / 4;
  // Value jj (round-local group) of the copied words as f32; odd = the value is the word's upper half
  // (2-byte single values only).
  __device__ static float get(const uint32_t* v, int jj, bool odd) {
    if constexpr (SB == 4) {
      return __uint_as_float(v[jj]);
    } else {
      const int half = kBytes == 2 ? (odd ? 1 : 0) : (jj & 1);
      const uint32_t h = (v[kBytes == 2 ? 0 : jj >> 1] >> (16 * half)) & 0xffffu;
      if constexpr (KIND == detail::kBF16) return __uint_as_float(h << 16);
      return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
    }
  }
};

// Dynamic shared memory of one block (byte offsets, the same arithmetic on host and device):
//   rings  [warp][stage]: codes of 32 rows (64 B each, 16-byte chunks swizzled), raw scales, raw biases
//   digits [warp][k]: the x digits of the warp's k-th round as [word i][tig][nc columns] uint2 (nc = 4
//          for one token: digit columns 0-2 and a zero column; 8 for two tokens: 0-5 and two zero
//          columns). Before the prologue converts it, a round's slice holds its raw f32 x (128 values
//          × nt tokens = the same 128·nc bytes).
//   grp    [warp][k][group][token]: {2^(e-22) scale factor, Σx} float2 (zeros for an absent token)
//   red    [warp][tile][16 rows][8 columns] f32: each warp's partial sums at the end of a row group
template <int G, int KIND>
struct Ring {
  static constexpr int kN = ScaleWords<G, KIND>::kN;
  static constexpr int kScales = kRowsPerBlock * 64;  // offsets inside one stage
  static constexpr int kBiases = kScales + kRowsPerBlock * kN * 4;
  static constexpr int kStage = kBiases + kRowsPerBlock * kN * 4;
  static constexpr int kBytes = kStages * kStage;  // one warp's ring
  static constexpr int kGrpRound = Round<G>::kGroups * 2 * 8;
};

// Columns of the B operand (x digits). Two tokens: column 3·t + d (token t, digit d). One token with
// two or more groups per round: column 3·s + d, s = the parity of the group within the round (its
// slot), so that two consecutive groups accumulate in separate columns and one flush scales both (half
// the flushes); one token at group 128: columns 0-2.
template <int G, int NT>
struct Cols {
  static constexpr int kSlots = NT == 1 && Round<G>::kGroups >= 2 ? 2 : 1;
  static constexpr int kUsed = 3 * (NT == 2 ? 2 : kSlots);
  static constexpr int kNc = kUsed > 4 ? 8 : 4;          // columns stored per (word, tig) of a slice
  static constexpr int kPerToken = NT == 2 ? 3 : kUsed;  // columns that sum to one token's y
};

struct SmemPlan {
  int digits, grp, red, total;
};
template <int G, int KIND>
__host__ __device__ __forceinline__ SmemPlan smem_plan(int warps, int nr, int nc) {
  SmemPlan s;
  s.digits = warps * Ring<G, KIND>::kBytes;
  s.grp = s.digits + warps * nr * 128 * nc;
  s.red = s.grp + warps * nr * Ring<G, KIND>::kGrpRound;
  s.total = s.red + warps * kTiles * 128 * 4;
  return s;
}

__device__ __forceinline__ void cp_async_cg16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem));
}
template <int N>
__device__ __forceinline__ void cp_async_ca(void* smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem), "n"(N));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// 16-byte chunk c (0..3) of smem row `row` holds the row's bytes [16c', 16c' + 16) with c' = c ^ swz:
// the XOR spreads the 8-byte fragment reads of rows 2 apart over different banks.
__device__ __forceinline__ int chunk_swizzle(int row) {
  return 2 * ((row >> 1) & 1);
}

// Low bytes of four ints packed into one register (byte k = v[k]).
__device__ __forceinline__ uint32_t pack_low_bytes(int a, int b, int c, int d) {
  const uint32_t ab = __byte_perm(static_cast<uint32_t>(a), static_cast<uint32_t>(b), 0x0040);
  const uint32_t cd = __byte_perm(static_cast<uint32_t>(c), static_cast<uint32_t>(d), 0x0040);
  return __byte_perm(ab, cd, 0x5410);
}

__device__ __forceinline__ int sext8(int v) {
  return static_cast<int>(static_cast<uint32_t>(v) << 24) >> 24;
}

__device__ __forceinline__ void mma_u8s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Index (in uint2) of the B fragment of word i, lane (col, tig) in a round's digit slice of nc
// columns; with 8 columns the col swizzle by tig spreads the staging's writes over more banks.
__device__ __forceinline__ int digit_index(int i, int tig, int col, int nc) {
  return (i * 4 + tig) * nc + (nc == 8 ? (col ^ (4 * (tig >> 1))) : col);
}

// Lane tig's 4 words of one smem row (word i of the lane is the round's word (i / kLc)·4·kLc +
// tig·kLc + i % kLc: the quad's i-th words are one run inside one group).
template <int G>
__device__ __forceinline__ void read_words(const unsigned char* codes_row, int row, int tig, uint32_t (&w)[4]) {
  const int swz = chunk_swizzle(row);
  if constexpr (G == 128) {
    const uint4 v = *reinterpret_cast<const uint4*>(codes_row + 16 * (tig ^ swz));
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (G == 64) {
#pragma unroll
    for (int run = 0; run < 2; ++run) {
      const int byte = 32 * run + 8 * tig;
      const uint2 v = *reinterpret_cast<const uint2*>(codes_row + 16 * ((byte >> 4) ^ swz) + (byte & 15));
      w[2 * run] = v.x, w[2 * run + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int run = 0; run < 4; ++run)
      w[run] = *reinterpret_cast<const uint32_t*>(codes_row + 16 * (run ^ swz) + 4 * tig);
  }
}

// Counts this block on `counter` once its global writes are done; true in every thread of the last
// of `expected` blocks to arrive, which also resets the counter for the next call. The barrier orders
// the block's writes before thread 0's fence and count (release); the last block's fence after the
// count orders its later reads after the other blocks' counts (acquire).
__device__ __forceinline__ bool arrive_last(int* counter, int expected) {
  __shared__ int last_s;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const bool last = atomicAdd(counter, 1) + 1 == expected;
    if (last) {
      *counter = 0;
      __threadfence();
    }
    last_s = last;
  }
  __syncthreads();
  return last_s != 0;
}

// Rows of one 32-row group: its member, first row and the member's row count.
struct RowGroup {
  int j;
  int64_t row0, rows;
};
__device__ __forceinline__ RowGroup row_group(const MmaParams& p, unsigned rg) {
  int j = 0;
  while (j + 1 < p.count && rg >= p.block_end[j]) ++j;
  const unsigned first = j > 0 ? p.block_end[j - 1] : 0u;
  return {j, static_cast<int64_t>(rg - first) * kRowsPerBlock, p.rows[j]};
}
__device__ __forceinline__ int64_t clamp_row(const RowGroup& g, int64_t r) {
  return r < g.rows ? r : g.rows - 1;  // clamped rows are computed, not stored
}

// (norm weight + offset) of column c, as rms_norm adds them.
__device__ __forceinline__ float norm_gain(const MmaParams& p, int64_t c) {
  float w;
  if (p.norm_kind == detail::kF32)
    w = __ldg(static_cast<const float*>(p.norm_w) + c);
  else if (p.norm_kind == detail::kBF16)
    w = __uint_as_float(static_cast<uint32_t>(__ldg(static_cast<const unsigned short*>(p.norm_w) + c)) << 16);
  else
    w = __half2float(__ldg(static_cast<const __half*>(p.norm_w) + c));
  return __fadd_rn(w, p.norm_offset);
}

// GS: the cs blocks of a row group reduce through global memory (p.global_split; its own instances, so
// the cluster and single-block ones compile without that path's code and registers).
template <int G, int KIND, int NT, bool GS>
__global__ void __launch_bounds__(32 * kMaxWarps, 2) gemv_q4_mma_kernel(const __grid_constant__ MmaParams p) {
  using RL = Round<G>;
  using CL = Cols<G, NT>;
  using SW = ScaleWords<G, KIND>;
  using RG = Ring<G, KIND>;
  constexpr int kGroups = RL::kGroups, kN = SW::kN;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float block_sum[kRowsPerBlock * 2];  // this block's partial y [token][row]

  // Chained launch (common.cuh): the successor may be scheduled once every block has released it
  // (after chain_wait with release_late, else here); it waits for this grid's completion itself
  // before touching memory.
  if (!p.release_late) detail::chain_release();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int gid = lane >> 2, tig = lane & 3;
  constexpr int nc = CL::kNc;
  const SmemPlan plan = smem_plan<G, KIND>(warps, p.nr, nc);
  unsigned char* ring = smem + warp * RG::kBytes;
  unsigned char* dig = smem + plan.digits + warp * p.nr * 128 * nc;
  float2* grp = reinterpret_cast<float2*>(smem + plan.grp + warp * p.nr * RG::kGrpRound);
  float* red = reinterpret_cast<float*>(smem + plan.red);

  // K-split: this block's index in its cluster, this warp's among the cluster's kws warps, and its
  // rounds kw, kw + kws, ... (nr of them; p.nr is the most any warp has, the size of its slices).
  const unsigned split = blockIdx.x % p.cs;
  const int kws = warps * p.cs, kw = static_cast<int>(split) * warps + warp;
  const int nr = kw < p.rounds ? (p.rounds - kw + kws - 1) / kws : 0;
  // Row groups: blockIdx.x / cs, then every (gridDim.x / cs)-th one (a persistent block walks several,
  // its warps' rings streaming on across row groups; the digits of x are staged once).
  const unsigned stride = gridDim.x / p.cs, rg_first = blockIdx.x / p.cs;
  const unsigned total = p.block_end[p.count - 1];
  const int my_groups = rg_first < total ? static_cast<int>((total - rg_first + stride - 1) / stride) : 0;
  const int items = my_groups * nr;

  // 1. Raw x of the warp's rounds into their digit slices (one cp.async group), after chain_wait():
  // x is the previous kernel's output.
  auto copy_x = [&] {
    detail::chain_wait();
    if (p.release_late) detail::chain_release();
    const int x_chunks = nr * NT * 32;  // 16-byte pieces
    for (int c = lane; c < x_chunks; c += 32) {
      const int k = c / (NT * 32), rem = c % (NT * 32), tk = rem >> 5, q = rem & 31;
      cp_async_cg16(dig + k * 128 * nc + tk * 512 + 16 * q,
                    p.x + tk * p.in + static_cast<int64_t>(kw + k * kws) * 128 + 4 * q);
    }
    cp_async_commit();
  };
  for (int i = lane; i < nr * kGroups * 2; i += 32) grp[i] = make_float2(0.0f, 0.0f);

  // 2. The ring's first kStages - 1 rounds. The issue cursor (row group ig, round ir of the warp)
  // walks the block's row groups; copy sources: code rows lane/4 + 8k (16-byte chunk lane % 4),
  // scales and biases of row `lane`.
  const unsigned char* copy_rows[4];
  int64_t scale_elem = 0;
  const unsigned char* scale_src = nullptr;
  const unsigned char* bias_src = nullptr;
  auto set_source = [&](unsigned rg) {
    const RowGroup g = row_group(p, rg);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      copy_rows[k] =
          reinterpret_cast<const unsigned char*>(p.w[g.j] + clamp_row(g, g.row0 + (lane >> 2) + 8 * k) * p.words);
    scale_elem = clamp_row(g, g.row0 + lane) * p.groups;
    scale_src = static_cast<const unsigned char*>(p.scales[g.j]);
    bias_src = static_cast<const unsigned char*>(p.biases[g.j]);
  };
  // Copies round r of the cursor's row group into ring stage st (codes: 4 × 16 bytes per lane,
  // scales and biases: one piece each).
  auto issue = [&](int st, int r) {
    unsigned char* codes = ring + st * RG::kStage;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int row = (lane >> 2) + 8 * k, c = lane & 3;
      cp_async_cg16(codes + row * 64 + 16 * (c ^ chunk_swizzle(row)),
                    copy_rows[k] + static_cast<int64_t>(r) * 64 + 16 * c);
    }
    int64_t e = scale_elem + static_cast<int64_t>(r) * kGroups;
    if constexpr (SW::kBytes == 2) e &= ~int64_t{1};  // the aligned word holding the value
    unsigned char* sd = codes + RG::kScales + lane * kN * 4;
    unsigned char* bd = codes + RG::kBiases + lane * kN * 4;
    if constexpr (SW::kCopy == 16) {
      cp_async_cg16(sd, scale_src + e * SW::SB);
      cp_async_cg16(bd, bias_src + e * SW::SB);
    } else {
      cp_async_ca<SW::kCopy>(sd, scale_src + e * SW::SB);
      cp_async_ca<SW::kCopy>(bd, bias_src + e * SW::SB);
    }
  };
  int ig = 0, ir = 0;
  if (my_groups > 0) set_source(rg_first);
  auto issue_next = [&](int st) {
    issue(st, kw + ir * kws);
    if (++ir == nr) {
      ir = 0;
      if (++ig < my_groups) set_source(rg_first + static_cast<unsigned>(ig) * stride);
    }
  };
  auto ring_prologue = [&] {
#pragma unroll
    for (int k = 0; k < kStages - 1; ++k) {
      if (k < items) issue_next(k);
      cp_async_commit();
    }
  };
  // The fused norm's weights at the warp's rounds (constant, so before chain_wait) into L1: the
  // staging's per-value gain reads then hit L1 instead of waiting on L2 once per round.
  if (p.norm_w != nullptr) {
    const int span = 128 * (p.norm_kind == detail::kF32 ? 4 : 2), lines = span / 128 + 1;
    for (int i = lane; i < nr * lines; i += 32) {
      const int k = i / lines, off = min((i % lines) * 128, span - 1);
      const char* a = static_cast<const char*>(p.norm_w) + static_cast<int64_t>(kw + k * kws) * span + off;
      asm volatile("prefetch.global.L1 [%0];" ::"l"(a));
    }
  }
  // Chained: the weights do not depend on the previous kernel, so their first rounds stream while it
  // finishes; x follows after chain_wait() (the newest group: all groups are awaited). Otherwise x
  // goes first (the oldest group), so its conversion starts while the ring's copies fly.
  if (p.chained) {
    ring_prologue();
    copy_x();
  } else {
    copy_x();
    ring_prologue();
  }

  // The fused norm's inv_rms per token: the block's threads sum x² over the whole row (L2-resident,
  // while the x copies fly; kBatch independent loads per thread in flight at once, so a 4096-input
  // row of 128 threads costs one L2 round trip), one block barrier. Every thread of the block gets here.
  float inv_rms[2] = {1.0f, 1.0f};
  if (p.norm_w != nullptr) {
    __shared__ float ss_red[kMaxWarps][2];
    constexpr int kBatch = 8 / NT;
    float ss[2] = {0.0f, 0.0f};
    const int64_t n4 = p.in / 4;
    for (int64_t c0 = threadIdx.x; c0 < n4; c0 += kBatch * blockDim.x) {
      float4 v[NT][kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const int64_t c = c0 + static_cast<int64_t>(b) * blockDim.x;
#pragma unroll
        for (int tk = 0; tk < NT; ++tk)
          v[tk][b] = c < n4 ? __ldcg(reinterpret_cast<const float4*>(p.x + tk * p.in) + c)
                            : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
#pragma unroll
        for (int tk = 0; tk < NT; ++tk)
          ss[tk] += v[tk][b].x * v[tk][b].x + v[tk][b].y * v[tk][b].y + v[tk][b].z * v[tk][b].z +
                    v[tk][b].w * v[tk][b].w;
    }
#pragma unroll
    for (int tk = 0; tk < NT; ++tk) {
      float v = ss[tk];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) ss_red[warp][tk] = v;
    }
    __syncthreads();
#pragma unroll
    for (int tk = 0; tk < NT; ++tk) {
      float sum = 0.0f;
      for (int w = 0; w < warps; ++w) sum += ss_red[w][tk];
      inv_rms[tk] = 1.0f / sqrtf(sum / static_cast<float>(p.in) + p.norm_eps);
    }
  }

  // 3. x as digits, in place, once for every row group: per group and token m = rint(x·2^(22-e))
  // with 2^e > max|x| of the group, three signed base-256 digits; {2^(e-22), Σx} per group and token.
  // The staging lane's word (2 lanes per word: h = 0 takes the even columns, 1 the odd ones).
  const int sp = lane >> 1, sh = lane & 1;
  const int s_run = sp / (4 * RL::kLc), s_rem = sp % (4 * RL::kLc);
  const int s_tig = s_rem / RL::kLc, s_i = s_run * RL::kLc + s_rem % RL::kLc;
  const int s_grp = (8 * sp) / G;
  if (p.chained)
    cp_async_wait<0>();  // the x group, the newest, has landed (the ring's first rounds too)
  else
    cp_async_wait<kStages - 1>();  // the x group, the oldest, has landed
  __syncwarp();
  for (int k = 0; k < nr; ++k) {
    unsigned char* slice = dig + k * 128 * nc;
    float v[2][4];
#pragma unroll
    for (int tk = 0; tk < 2; ++tk) {
      if (tk < NT) {
        const float4* xr = reinterpret_cast<const float4*>(slice + tk * 512 + 32 * sp);
        const float4 u0 = xr[0], u1 = xr[1];
        v[tk][0] = sh ? u0.y : u0.x, v[tk][1] = sh ? u0.w : u0.z;
        v[tk][2] = sh ? u1.y : u1.x, v[tk][3] = sh ? u1.w : u1.z;
      }
    }
    if (p.norm_w != nullptr) {
      // This lane's columns: 8·sp + 2q + sh of round kw + k·kws; rms_norm's y = (x · inv) · gain.
      const int64_t col0 = static_cast<int64_t>(kw + k * kws) * 128 + 8 * sp + sh;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float gain = norm_gain(p, col0 + 2 * q);
#pragma unroll
        for (int tk = 0; tk < NT; ++tk) v[tk][q] = __fmul_rn(__fmul_rn(v[tk][q], inv_rms[tk]), gain);
      }
    }
    __syncwarp();
    uint4* z = reinterpret_cast<uint4*>(slice);
    for (int i = lane; i < 8 * nc; i += 32) z[i] = make_uint4(0u, 0u, 0u, 0u);
    __syncwarp();
    uint32_t* dg = reinterpret_cast<uint32_t*>(slice);
#pragma unroll
    for (int tk = 0; tk < 2; ++tk) {
      if (tk >= NT) break;
      float amax = fmaxf(fmaxf(fabsf(v[tk][0]), fabsf(v[tk][1])), fmaxf(fabsf(v[tk][2]), fabsf(v[tk][3])));
      float sum = (v[tk][0] + v[tk][1]) + (v[tk][2] + v[tk][3]);
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
      for (int q = 0; q < 4; ++q) {
        // rint(v·f) by the 1.5·2^23 shift (|v·f| < 2^22), then signed base-256 digits.
        const int m = __float_as_int(fmaf(v[tk][q], f, 12582912.0f)) - 0x4B400000;
        const int m1 = (m - sext8(m)) >> 8;
        d0[q] = m;
        d1[q] = m1;
        d2[q] = (m1 - sext8(m1)) >> 8;
      }
      if ((lane & (G / 4 - 1)) == 0)
        grp[(k * kGroups + s_grp) * 2 + tk] =
            make_float2(__uint_as_float(static_cast<uint32_t>(e_biased - 21) << 23), sum);
      const int cbase = 3 * (tk + (CL::kSlots == 2 ? (s_i / RL::kLc) & 1 : 0));
      dg[2 * digit_index(s_i, s_tig, cbase, nc) + sh] = pack_low_bytes(d0[0], d0[1], d0[2], d0[3]);
      dg[2 * digit_index(s_i, s_tig, cbase + 1, nc) + sh] = pack_low_bytes(d1[0], d1[1], d1[2], d1[3]);
      dg[2 * digit_index(s_i, s_tig, cbase + 2, nc) + sh] = pack_low_bytes(d2[0], d2[1], d2[2], d2[3]);
    }
  }
  __syncwarp();

  // This lane's C columns 2·tig and 2·tig + 1: unit col / 3 (a token, or a slot), digit col % 3.
  // Columns past the used ones hold zeros and get zero factors. A slot's group is the flush's last
  // group + goff (slot 0: the one before).
  const int col_a = 2 * tig, col_b = 2 * tig + 1;
  const bool use_a = col_a < CL::kUsed, use_b = col_b < CL::kUsed;
  const int unit_a = use_a ? col_a / 3 : 0, unit_b = use_b ? col_b / 3 : 0;
  const int tok_a = NT == 2 ? unit_a : 0, tok_b = NT == 2 ? unit_b : 0;
  const int goff_a = CL::kSlots == 2 ? (use_a ? unit_a : 1) - 1 : 0;
  const int goff_b = CL::kSlots == 2 ? (use_b ? unit_b : 1) - 1 : 0;
  const float mul_a = use_a ? (col_a % 3 == 0 ? 1.0f : col_a % 3 == 1 ? 256.0f : 65536.0f) : 0.0f;
  const float mul_b = use_b ? (col_b % 3 == 0 ? 1.0f : col_b % 3 == 1 ? 256.0f : 65536.0f) : 0.0f;
  const float bias_a = use_a && col_a % 3 == 0 ? 1.0f : 0.0f;
  const float bias_b = use_b && col_b % 3 == 0 ? 1.0f : 0.0f;
  // B fragment reads: column gid of the slice, zero for lanes past its nc columns.
  const bool b_live = gid < nc;
  const int b_off = digit_index(0, tig, gid & (nc - 1), nc);

  float acc[kTiles][4] = {};

  // Round r (the warp's k-th) from ring stage st: the MMAs per word, then per group the scaling into
  // acc. elem[m][q] = first scale index of row 16m + 8q + gid (parity of 2-byte single values).
  auto process = [&](int st, int k, int r, const int64_t (&elem)[kTiles][2]) {
    const unsigned char* codes = ring + st * RG::kStage;
    const uint32_t* sraw = reinterpret_cast<const uint32_t*>(codes + RG::kScales);
    const uint32_t* braw = reinterpret_cast<const uint32_t*>(codes + RG::kBiases);
    const uint2* digits = reinterpret_cast<const uint2*>(dig + k * 128 * nc);
    const float2* kg = grp + k * kGroups * 2;
    uint32_t w[kTiles][2][4];
#pragma unroll
    for (int m = 0; m < kTiles; ++m)
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int row = 16 * m + 8 * q + gid;
        read_words<G>(codes + row * 64, row, tig, w[m][q]);
      }
    int c[kTiles][4] = {};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint2 bv = digits[b_off + i * 4 * nc];
      if (!b_live) bv = make_uint2(0u, 0u);
#pragma unroll
      for (int m = 0; m < kTiles; ++m) {
        const uint32_t w0 = w[m][0][i], w1 = w[m][1][i];
        mma_u8s8(c[m], w0 & 0x0F0F0F0Fu, w1 & 0x0F0F0F0Fu, (w0 >> 4) & 0x0F0F0F0Fu, (w1 >> 4) & 0x0F0F0F0Fu, bv.x,
                 bv.y);
      }
      // End of a group (with two slots: of an odd one): scale into the f32 sums.
      if (i % RL::kLc == RL::kLc - 1 && (CL::kSlots == 1 || ((i / RL::kLc) & 1) != 0)) {
        const int jj = i / RL::kLc, ja = jj + goff_a, jb = jj + goff_b;
        const float2 ga = kg[ja * 2 + tok_a], gb = kg[jb * 2 + tok_b];
        const float fa = ga.x * mul_a, fb = gb.x * mul_b, ba = ga.y * bias_a, bb = gb.y * bias_b;
#pragma unroll
        for (int m = 0; m < kTiles; ++m)
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            const int row = 16 * m + 8 * q + gid;
            const bool odd = ((elem[m][q] + r) & 1) != 0;
            const float sa = SW::get(sraw + row * kN, ja, odd), va = SW::get(braw + row * kN, ja, odd);
            const float sb = CL::kSlots == 2 ? SW::get(sraw + row * kN, jb, odd) : sa;
            const float vb = CL::kSlots == 2 ? SW::get(braw + row * kN, jb, odd) : va;
            acc[m][2 * q] = fmaf(sa * fa, static_cast<float>(c[m][2 * q]), fmaf(va, ba, acc[m][2 * q]));
            acc[m][2 * q + 1] = fmaf(sb * fb, static_cast<float>(c[m][2 * q + 1]), fmaf(vb, bb, acc[m][2 * q + 1]));
            c[m][2 * q] = 0;
            c[m][2 * q + 1] = 0;
          }
      }
    }
    __syncwarp();  // every lane is done with the stage before it is refilled
  };

  // End of a row group: reduce over the block's warps (K-splits) and each token's digit (and slot)
  // columns, then over the row group's blocks (split 0, 1, ... in that order, through distributed
  // shared memory in a cluster or through global memory, where the last block to arrive adds them),
  // add the output bias and store. rg: the row group's index (its partials and counter).
  auto finish = [&](const RowGroup& g, unsigned rg) {
#pragma unroll
    for (int m = 0; m < kTiles; ++m) {
      float* t = red + (warp * kTiles + m) * 128;
      *reinterpret_cast<float2*>(t + gid * 8 + 2 * tig) = make_float2(acc[m][0], acc[m][1]);
      *reinterpret_cast<float2*>(t + (gid + 8) * 8 + 2 * tig) = make_float2(acc[m][2], acc[m][3]);
    }
    __syncthreads();
    for (int o = threadIdx.x; o < kRowsPerBlock * NT; o += blockDim.x) {
      const int tk = o / kRowsPerBlock, rr = o % kRowsPerBlock;
      const int m = rr / 16, row16 = rr % 16, cb = CL::kPerToken * tk;
      float sum = 0.0f;
      for (int w = 0; w < warps; ++w) {
        const float* t = red + (w * kTiles + m) * 128 + row16 * 8 + cb;
        float part = (t[0] + t[1]) + t[2];
        if constexpr (CL::kPerToken == 6) part += (t[3] + t[4]) + t[5];
        sum += part;
      }
      block_sum[o] = sum;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // The cluster's blocks hold K-splits of the same rows (one row group per block when cs > 1):
    // block 0 adds the others' sums from their shared memory; the second sync keeps that memory
    // alive until it has been read.
    if (!GS && p.cs > 1) {
      cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
      cluster.sync();
      if (split == 0) {
        for (int o = threadIdx.x; o < kRowsPerBlock * NT; o += blockDim.x) {
          float sum = block_sum[o];
          for (int c = 1; c < p.cs; ++c) sum += cluster.map_shared_rank(block_sum, c)[o];
          block_sum[o] = sum;
        }
      }
      cluster.sync();
    }
#endif
    // Global split: every block writes its sums; the last to arrive adds all of them in split order
    // (the same sums as the cluster's, whichever block that is) and stores.
    bool store = split == 0;
    if constexpr (GS) {
      constexpr int kPer = kRowsPerBlock * NT;
      float* part = p.partials + static_cast<int64_t>(rg) * p.cs * kPer;
      for (int o = threadIdx.x; o < kPer; o += blockDim.x) __stcg(part + split * kPer + o, block_sum[o]);
      store = arrive_last(p.counters + rg, p.cs);
      if (store)
        for (int o = threadIdx.x; o < kPer; o += blockDim.x) {
          float sum = __ldcg(part + o);
          for (int c = 1; c < p.cs; ++c) sum += __ldcg(part + c * kPer + o);
          block_sum[o] = sum;
        }
    }
    __syncthreads();
    if (store) {
      for (int o = threadIdx.x; o < kRowsPerBlock * NT; o += blockDim.x) {
        const int tk = o / kRowsPerBlock, rr = o % kRowsPerBlock;
        float sum = block_sum[o];
        const int64_t row = g.row0 + rr;
        if (row < g.rows) {
          const void* ob = p.out_bias[g.j];
          if (ob != nullptr) {
            const int kind = p.out_bias_kind[g.j];
            float bv;
            if (kind == detail::kF16)
              bv = __half2float(__ldg(static_cast<const __half*>(ob) + row));
            else if (kind == detail::kBF16)
              bv = __uint_as_float(static_cast<uint32_t>(__ldg(static_cast<const unsigned short*>(ob) + row)) << 16);
            else
              bv = __ldg(static_cast<const float*>(ob) + row);
            sum = __fadd_rn(sum, bv);
          }
          float* y = p.y[g.j] + tk * g.rows + row;
          if ((p.accumulate >> g.j) & 1u) sum = __fadd_rn(*y, sum);
          *y = sum;
        }
      }
    }
  };

  // 4. Stream: for each of the block's row groups, the warp's rounds through the ring (the copies of
  // the next kStages - 1 items in flight, across row-group boundaries), then the row group's sums.
  int item = 0;
  for (int gi = 0; gi < my_groups; ++gi) {
    const unsigned rg = rg_first + static_cast<unsigned>(gi) * stride;
    const RowGroup g = row_group(p, rg);
    int64_t elem[kTiles][2];
#pragma unroll
    for (int m = 0; m < kTiles; ++m)
#pragma unroll
      for (int q = 0; q < 2; ++q) elem[m][q] = clamp_row(g, g.row0 + 16 * m + 8 * q + gid) * p.groups;
    for (int k = 0; k < nr; ++k, ++item) {
      if (item + kStages - 1 < items) issue_next((item + kStages - 1) % kStages);
      cp_async_commit();
      cp_async_wait<kStages - 1>();
      __syncwarp();
      process(item % kStages, k, kw + k * kws, elem);
    }
    finish(g, rg);
#pragma unroll
    for (int m = 0; m < kTiles; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][e] = 0.0f;
  }
}

template <int G, int KIND, int NT, bool GS>
void launch_kernel(const MmaParams& p, unsigned grid, int warps, int smem, cudaStream_t st) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(static_cast<unsigned>(32 * warps));
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = st;
  cudaLaunchAttribute attr[2];
  unsigned n_attr = 0;
  if (!GS && p.cs > 1) {
    attr[n_attr].id = cudaLaunchAttributeClusterDimension;
    attr[n_attr].val.clusterDim.x = static_cast<unsigned>(p.cs);
    attr[n_attr].val.clusterDim.y = 1;
    attr[n_attr].val.clusterDim.z = 1;
    ++n_attr;
  }
  if (p.chained) {  // a chained launch (common.cuh), as launch_chained does
    attr[n_attr].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n_attr].val.programmaticStreamSerializationAllowed = 1;
    ++n_attr;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n_attr;
  VLM_CUDA(cudaLaunchKernelEx(&cfg, gemv_q4_mma_kernel<G, KIND, NT, GS>, p), "linear (gemv, tensor cores)");
}

struct DeviceShape {
  int sms = 1;
  int max_smem = 48 << 10;  // dynamic shared memory one block may opt in to
  bool clusters = false;
};

DeviceShape device_shape() {
  static const DeviceShape d = [] {
    DeviceShape s;
    int dev = 0, sms = 0, major = 0, optin = 0;
    if (cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess) {
      s.sms = sms > 0 ? sms : 1;
      s.clusters = major >= 9;
      // Less the kernel's static shared memory (block_sum) and a margin.
      s.max_smem = std::max(optin - 1024, 48 << 10);
    }
    return s;
  }();
  return d;
}

// Resident blocks per SM of one instantiation with `warps` warps and `smem` bytes of dynamic shared
// memory (cached); the first call lifts the kernel's dynamic shared memory limit to the device's.
template <int G, int KIND, int NT, bool GS>
int blocks_per_sm(int warps, int smem) {
  static const bool attr_set = [] {
    VLM_CUDA(cudaFuncSetAttribute(gemv_q4_mma_kernel<G, KIND, NT, GS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  device_shape().max_smem),
             "linear (gemv, tensor cores)");
    // All of L1 as shared memory: the rings of as many warps as fit are what keeps DRAM busy.
    VLM_CUDA(cudaFuncSetAttribute(gemv_q4_mma_kernel<G, KIND, NT, GS>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                  cudaSharedmemCarveoutMaxShared),
             "linear (gemv, tensor cores)");
    return true;
  }();
  (void)attr_set;
  static std::map<std::pair<int, int>, int> cache;  // one host thread drives the backend
  const auto key = std::make_pair(warps, smem);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_q4_mma_kernel<G, KIND, NT, GS>, 32 * warps,
                                                    static_cast<size_t>(smem)) != cudaSuccess ||
      n < 1)
    n = 1;
  cache.emplace(key, n);
  return n;
}

// Whether blocks walk several row groups (VLMCHECK_CUDA_GEMV_PERSIST=0: one row group per block, the
// tuning switch).
bool persistent_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV_PERSIST");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

// K-splits across blocks: 0 = the launch's own rule (launch_g), 1 = thread-block clusters only (the
// rule before global splits), N >= 2 = N splits per row group reduced through global memory in every
// launch (VLMCHECK_CUDA_GEMV_SPLITK=N, read once; set_gemv_split_k switches it between calls).
int& split_k_setting() {
  static int v = [] {
    const char* e = std::getenv("VLMCHECK_CUDA_GEMV_SPLITK");
    const int n = e != nullptr ? std::atoi(e) : 0;
    return n >= 1 && n <= 64 ? n : 0;
  }();
  return v;
}

// Rows of at least this many rounds whose row groups give fewer blocks than SMs split K in 2 through
// global memory instead of a cluster. H200, bench_cuda_kernels --quant, µs at n = 1 / 2 / 4 / 7:
// 3B down (2048 x 11008, cluster of 4 8-warp blocks) 17.9 / 21.0 / 40.7 / 76.7 -> 12.2 / 15.4 / 29.4 /
// 54.6; 7B down (3584 x 18944, cluster of 2) 27.5 / 37.0 / 72.7 / 133.8 -> 26.3 / 32.1 / 61.4 / 113.8.
// 4 or 8 global splits, or 4-warp blocks, measured slower on both; on short rows (3B q/o: 16 rounds,
// 7B q/o: 28) the global reduction costs more than the cluster's (3B q/o 6.8 -> 7.5 µs).
constexpr int kGlobalSplitRounds = 64;

// The global split's buffers for `groups` row groups of `cs` splits: partials [groups, cs, 64] f32 and
// counters [groups] int, persistent (the counters zero between calls: each row group's last block
// resets its own). Grown through the caching allocator and zeroed on the stream, so a call inside a
// graph capture neither syncs nor frees memory to the driver.
void split_buffers(MmaParams& p, int64_t groups, int cs, cudaStream_t st) {
  static float* partials = nullptr;
  static int* counters = nullptr;
  static size_t partials_cap = 0, counters_cap = 0;
  const size_t need_p = static_cast<size_t>(groups) * static_cast<size_t>(cs) * 2 * kRowsPerBlock;
  if (need_p > partials_cap) {
    const size_t n = std::max<size_t>(need_p, size_t{1} << 18);
    if (partials != nullptr) device_free(partials, partials_cap * sizeof(float), MemCategory::kScratch);
    partials = static_cast<float*>(device_alloc(n * sizeof(float), MemCategory::kScratch));
    partials_cap = n;
  }
  if (static_cast<size_t>(groups) > counters_cap) {
    const size_t n = std::max<size_t>(static_cast<size_t>(groups), 8192);
    int* fresh = static_cast<int*>(device_alloc(n * sizeof(int), MemCategory::kScratch));
    VLM_CUDA(cudaMemsetAsync(fresh, 0, n * sizeof(int), st), "linear (gemv, tensor cores)");
    if (counters != nullptr) device_free(counters, counters_cap * sizeof(int), MemCategory::kScratch);
    counters = fresh;
    counters_cap = n;
  }
  p.partials = partials;
  p.counters = counters;
}

// Picks the K-splits across blocks (global, kGlobalSplitRounds, or a cluster's), the digit slices and
// the grid, and launches. Clusters only where the row groups alone give fewer blocks than SMs (the smallest power of 2 up to
// 8 that reaches one block per SM; H200: 3B gate/up 26% of the copy probe with one block per row
// group against 18% with pairs). Where the row groups exceed what is resident at once, blocks are
// persistent: the grid is one full wave and each block walks every grid-th row group, so x is staged
// once per block instead of once per row group and no SM waits on a second wave.
template <int G, int KIND, int NT>
void launch_g(MmaParams& p, int64_t groups, int warps, cudaStream_t st) {
  const DeviceShape d = device_shape();
  static const int max_cs = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV_CLUSTER");  // tuning experiments: 1, 2, 4 or 8
    const int c = v != nullptr ? std::atoi(v) : 0;
    return c == 1 || c == 2 || c == 4 || c == 8 ? c : 8;
  }();
  int cs = 1;
  const int forced_split = split_k_setting();
  p.global_split = 0;
  if (forced_split >= 2) {
    // Every warp at least one round.
    cs = std::max(1, std::min(forced_split, (p.rounds + warps - 1) / warps));
    p.global_split = cs > 1 ? 1 : 0;
  } else if (forced_split == 0 && p.rounds >= kGlobalSplitRounds && groups < d.sms && warps * 4 <= p.rounds) {
    cs = 2;
    p.global_split = 1;
  } else {
    while (d.clusters && cs < max_cs && groups * cs < d.sms && warps * cs * 2 <= p.rounds) cs *= 2;
  }
  p.cs = cs;
  const int nc = Cols<G, NT>::kNc;
  SmemPlan plan{};
  for (;;) {
    p.nr = (p.rounds + warps * cs - 1) / (warps * cs);
    plan = smem_plan<G, KIND>(warps, p.nr, nc);
    if (plan.total <= d.max_smem || warps == 1) break;
    warps /= 2;
  }
  if (plan.total > d.max_smem)
    detail::fail(ErrorKind::kInternal, "[cuda linear] tensor-core GEMV needs " + std::to_string(plan.total) +
                                           " bytes of shared memory for " + std::to_string(p.in) +
                                           " inputs, the device allows " + std::to_string(d.max_smem));
  int64_t grid_groups = groups;
  if (p.global_split) {
    // No co-residency needed: at most one wave of blocks, each walking row groups as below.
    const int64_t resident = static_cast<int64_t>(blocks_per_sm<G, KIND, NT, true>(warps, plan.total)) * d.sms;
    if (persistent_enabled()) grid_groups = std::min(groups, std::max<int64_t>(1, resident / cs));
    split_buffers(p, groups, cs, st);
  } else if (cs == 1 && persistent_enabled()) {
    // A whole wave of blocks (a multiple of the SM count), row groups dealt round-robin: blocks
    // differ by at most one row group, and so do SMs (block b runs on SM b mod SMs in the first wave).
    const int64_t resident = static_cast<int64_t>(blocks_per_sm<G, KIND, NT, false>(warps, plan.total)) * d.sms;
    grid_groups = std::min(groups, resident);
  } else {
    (void)blocks_per_sm<G, KIND, NT, false>(warps, plan.total);  // sets the kernel's shared memory attributes
  }
  const int64_t grid = grid_groups * cs;
  if (grid > 0x7fffffff)
    detail::fail(ErrorKind::kInvalidArgument,
                 "[cuda linear] " + std::to_string(groups * kRowsPerBlock) + " rows exceed the GEMV grid");
  if (p.global_split)
    launch_kernel<G, KIND, NT, true>(p, static_cast<unsigned>(grid), warps, plan.total, st);
  else
    launch_kernel<G, KIND, NT, false>(p, static_cast<unsigned>(grid), warps, plan.total, st);
}

// Dispatch on group size, scale/bias dtype and tokens (1 or 2).
template <int G, int KIND>
void launch_nt(MmaParams& p, int64_t groups, int warps, cudaStream_t st) {
  if (p.nt == 1)
    launch_g<G, KIND, 1>(p, groups, warps, st);
  else
    launch_g<G, KIND, 2>(p, groups, warps, st);
}

template <int G>
void launch_kind(MmaParams& p, int kind, int64_t groups, int warps, cudaStream_t st) {
  switch (kind) {
    case detail::kF32:
      launch_nt<G, detail::kF32>(p, groups, warps, st);
      break;
    case detail::kF16:
      launch_nt<G, detail::kF16>(p, groups, warps, st);
      break;
    default:
      launch_nt<G, detail::kBF16>(p, groups, warps, st);
      break;
  }
}

void launch_group_kind(MmaParams& p, int group, int kind, int64_t groups, int warps, cudaStream_t st) {
  switch (group) {
    case 32:
      launch_kind<32>(p, kind, groups, warps, st);
      break;
    case 64:
      launch_kind<64>(p, kind, groups, warps, st);
      break;
    default:
      launch_kind<128>(p, kind, groups, warps, st);
      break;
  }
}

bool aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

}  // namespace

bool gemv_legacy_requested() {
  static const bool legacy = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV");
    return v != nullptr && std::strcmp(v, "legacy") == 0;
  }();
  return legacy;
}

bool gemv_mma_everywhere() {
  static const bool all = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV");
    return v != nullptr && std::strcmp(v, "mma") == 0;
  }();
  return all;
}

bool gemv_mma_norm_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV_NORM");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

bool gemv_mma_supported(const float* x, const Weight& w) {
  if (!w.quantized || gemv_legacy_requested()) return false;
  const detail::QuantView q = detail::quant_view(w, "linear");
  if (q.bits != 4 || (q.group_size != 32 && q.group_size != 64 && q.group_size != 128)) return false;
  // Every round's x digits of a block live in shared memory: rows up to 192 rounds (two tokens:
  // 192 KB of digits).
  if (w.cols() % 128 != 0 || w.cols() > 128 * 192 || !aligned(x, 16) || !aligned(q.packed, 16)) return false;
  const int sb = q.scale_kind == detail::kF32 ? 4 : 2;
  // A round's scales (and biases) of a row are one aligned load of (128 / group) values.
  const uintptr_t round_bytes = static_cast<uintptr_t>(128 / q.group_size) * sb;
  // A round's single 2-byte value (group 128) is copied as the aligned 4-byte word holding it, which
  // must not run past the last value.
  const bool pair_ok = round_bytes >= 4 || (w.rows() * q.groups) % 2 == 0;
  const uintptr_t align = round_bytes < 4 ? 4 : round_bytes;
  return q.scale_kind == q.bias_kind && pair_ok && aligned(q.scales, align) && aligned(q.biases, align);
}

void gemv_mma_launch(const float* x, int64_t n, const GemvTarget* targets, int count, const GemvNorm* norm) {
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
  if (norm != nullptr) {
    p.norm_w = norm->w;
    p.norm_kind = norm->kind;
    p.norm_eps = norm->eps;
    p.norm_offset = norm->offset;
  }
  p.chained = detail::chained_launches_enabled() ? 1 : 0;
  p.release_late = gemv_release_late() ? 1 : 0;
  int64_t blocks = 0;
  for (int i = 0; i < count; ++i) {
    const Weight& w = *targets[i].w;
    const detail::QuantView q = detail::quant_view(w, "linear");
    p.rows[i] = w.rows();
    p.w[i] = static_cast<const uint32_t*>(q.packed);
    p.scales[i] = q.scales;
    p.biases[i] = q.biases;
    const GemvBias bias = gemv_bias(targets[i]);
    p.out_bias[i] = bias.ptr;
    p.out_bias_kind[i] = bias.kind;
    if (targets[i].accumulate) p.accumulate |= 1u << i;
    blocks += (w.rows() + kRowsPerBlock - 1) / kRowsPerBlock;
    if (blocks > 0x0fffffff)
      detail::fail(ErrorKind::kInvalidArgument,
                   "[cuda linear] " + std::to_string(w.rows()) + " rows exceed the GEMV grid");
    p.block_end[i] = static_cast<unsigned>(blocks);
  }
  // Warps per block (K-splits): at least 2 rounds per warp where the row is long enough.
  static const int max_warps_env = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMV_WARPS");  // tuning experiments: 1, 2, 4 or 8
    const int w = v != nullptr ? std::atoi(v) : 0;
    return w == 1 || w == 2 || w == 4 || w == 8 ? w : 0;
  }();
  // Up to 8 warps per block, fewer where a warp would get less than 2 rounds. It was 4 below 64 rounds
  // (8 only for the 3B/7B down_proj) until H100 end-to-end runs showed 8 faster on the 28-round 7B rows
  // (one call, synthetic qwen2.5-vl-7b MLX 4-bit, 2048-token prompt, decode tok/s, 8 vs the old rule:
  // 343.1 / 340.5 vs 310.0 / 317.5 / 317.8 / 317.2; kernel alone: gate/up 21.5 -> 18.2 us, q/o 9.1 -> 8.3)
  // and not slower on the 3B (461 / 434 vs 437 / 430). The environment's value, when set, is the cap.
  const int cap = max_warps_env > 0 ? max_warps_env : 8;
  int warps = 1;
  while (warps < cap && 2 * warps * 2 <= p.rounds) warps *= 2;
  const int group = q0.group_size, kind = q0.scale_kind;
  cudaStream_t st = detail::stream("linear");
  // Chunks of 2 tokens (6 of the MMA's 8 columns): the weights are read once per chunk.
  for (int64_t t0 = 0; t0 < n; t0 += 2) {
    p.nt = n - t0 >= 2 ? 2 : 1;
    p.x = x + t0 * p.in;
    for (int i = 0; i < count; ++i) p.y[i] = targets[i].y + t0 * p.rows[i];
    launch_group_kind(p, group, kind, blocks, warps, st);
  }
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {
void set_gemv_split_k(int splits) { kernels::split_k_setting() = splits >= 1 && splits <= 64 ? splits : 0; }
}  // namespace vlm::ops::cuda
