// Prefill attention on tensor cores (AttentionMask::bf16_matmul): flash attention with bf16
// mma.sync.m16n8k16 (f32 accumulation) for both matmuls and an f32 online softmax. On Hopper (sm_90a) an
// opt-in flash_wgmma_kernel (below flash_kernel; head dims 72-96) runs the same algorithm with warpgroup MMAs.
//   1. q, k, v (f32) are rounded to bf16 into scratch once per call (one pass, ~3 µs for a 2048-token
//      Qwen 3B layer), so the main kernel streams half the bytes and its tiles go to shared memory
//      with cp.async, already in the MMA's input type.
//   2. flash_kernel<HD, BN, D, MINB, QREG, STAGES>: one block of 8 warps per (128 rows, kv head, key split).
//      A row is a (query, head of the kv group) pair: the G = heads / kv_heads query heads that share a kv
//      head sit in the same block, so every K/V tile is loaded once for all of them (GQA costs no extra
//      traffic). Each warp owns 16 rows. K/V tiles of BN keys go through a ring of STAGES buffers (2: the
//      next tile's cp.async runs under the current tile's math; 3 stages measured slower on an H200: 16k 7B
//      shape 9.50 vs 9.10 ms, Qwen2.5-VL tower 116.1 vs 114.0 ms). Per tile: S = Q·Kᵀ (ldmatrix +
//      mma; with QREG the warp's Q fragments stay in registers for the whole key loop), softcap / mask in
//      f32, online softmax in the log2 domain with scale · log2(e) folded into the exponent's FMA (ex2.approx),
//      O rescaled only when a row's max moved, P rounded to bf16 in registers (the S accumulator layout is
//      the A-operand layout of the second MMA), O += P·V (V read with ldmatrix.trans).
//   3. Optional key splits (grid z; VLMCHECK_CUDA_FLASH_SPLITS): each block's key tiles are shared out over
//      the splits, which write unnormalized states that launch_attention_combine (attention.cu) merges.
// Head dims that are not a multiple of 16 (SigLIP so400m's 72) run as the next multiple of 16: the tiles'
// extra columns are zero-filled in shared memory (cp.async with a zero source size), so Q·Kᵀ is unchanged
// and the extra output columns (zero V) are never stored. D is the head dim in memory, HD the padded one.
// Occupancy: at head_dim <= 96 (the vision towers' 64/72/80) the kernel is built for two blocks per SM
// (__launch_bounds__ min 2: <= 128 registers, 16 warps per SM instead of 8); O (HD / 2 floats per lane) and
// S fit in that budget, Q fragments only at head_dim 32 (at 64-96 they spilled). head_dim 128 takes two
// blocks per SM with 32-key tiles on long prefills (>= 1024 blocks), else one block per SM with 64-key
// tiles and Q in registers; head_dim 256 one block per SM with 32-key tiles.
// H200, bench_cuda_kernels --attention, the previous kernels -> these (same call, two runs each): 7B shape 16k
// causal 11.19 -> 9.39 ms (22 -> 27% of the bf16 probe), Qwen2.5-VL tower full attention (62,208 patches,
// hd 80) 128.3 -> 105.4 ms (20 -> 24-25%), 3B shape 2k causal 188 -> 186 us; slower: Gemma 3 shape 2k
// (hd 256) 230 -> 242-254 us and SigLIP so400m (4096 patches, hd 72) 569 -> 612 us (cause not profiled).
// Without Q in registers the 2k 3B shape took 203 us.
// Tried and dropped (stop 17, H200, bench_cuda_kernels --attention, tower full attention hd 80): two m16 row
// fragments per warp (4 warps x 32 rows per 128-row block: every K/V ldmatrix feeds twice the MMAs, half the shared
// reads per MMA) ran 196 ms without spills at 2 blocks per SM (250 registers), 197 ms with Q in registers (88-byte
// spill), 139 ms with 32-key tiles at 3 blocks per SM (104-byte spill), against 105 ms here (16 warps of 16 rows per
// SM). Time x resident warps stayed ~1.6-1.7 s for all three: halving the shared reads per MMA gained nothing, and
// a warp with two fragments took twice as long per tile, so the hd-80 kernel is limited per resident warp (issue /
// dependency chain), not by the SM's shared-memory bandwidth; more resident warps or asynchronous MMAs (wgmma with
// softmax overlapped) are the levers.
// Masking: the key range a block can see is computed up front (causal end, window start), so tiles
// that no row sees are never loaded; per warp, a tile every row sees entirely (consecutive k_pos,
// all keys inside the causal bound and the window) skips the per-element mask, and a tile no row of
// the warp sees skips its math. Other tiles evaluate key_visible per element (rotating-cache k_pos,
// image groups, the diagonal). Rows past the end read zeros and are not stored; a row that sees no
// key gets zeros (l = 0).
#include "kernels/cuda/attention_common.cuh"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kFlashWarps = 8;
constexpr int kFlashRows = kFlashWarps * 16;
constexpr float kLog2e = 1.4426950408889634f;

// ---- PTX wrappers (sm_80+) ---------------------------------------------------------------------------
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// c[16x8] += a[16x16] · b[16x8], bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x (lower column) in the low half
  return *reinterpret_cast<uint32_t*>(&h);
}

// f32 -> bf16 (round to nearest even) of three arrays in one launch: blockIdx.y picks the array.
__global__ void to_bf16_kernel(const float* __restrict__ a, int64_t na, const float* __restrict__ b, int64_t nb,
                               const float* __restrict__ c, int64_t nc, __nv_bfloat16* __restrict__ da,
                               __nv_bfloat16* __restrict__ db, __nv_bfloat16* __restrict__ dc) {
  const float* src = blockIdx.y == 0 ? a : blockIdx.y == 1 ? b : c;
  __nv_bfloat16* dst = blockIdx.y == 0 ? da : blockIdx.y == 1 ? db : dc;
  const int64_t n = blockIdx.y == 0 ? na : blockIdx.y == 1 ? nb : nc;
  // Pairs (every array's length is a multiple of 16: head_dim is).
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 2; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * 2)
    *reinterpret_cast<__nv_bfloat162*>(dst + i) = __floats2bfloat162_rn(src[i], src[i + 1]);
}

// Shared-memory rows are HD + 8 bf16 long: the 16-byte pad shifts consecutive rows by one 16-byte
// bank group (HD / 8 + 1 is odd for HD a multiple of 16), so the 8 row addresses of every ldmatrix
// hit distinct banks. HD is the padded head dim (a multiple of 16). STAGES K/V tile pairs are in
// flight or resident at once (a ring: tile t lives in buffer t % STAGES).
template <int HD, int BN, int STAGES>
struct FlashShape {
  static constexpr int kStride = HD + 8;
  static constexpr size_t kSmemBytes =
      sizeof(__nv_bfloat16) * static_cast<size_t>(kFlashRows + 2 * STAGES * BN) * kStride;
};

// 2^x on the MUFU unit (ex2.approx.ftz: ~2 ulp, -inf -> +0). exp2f without fast-math adds a range
// fix-up around the same instruction for denormal results, which P (rounded to bf16) cannot use.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// One key tile's scores to probabilities, in the m16n8 accumulator layout both kernels below hold (lane
// (gq, tq) of a warp: rows gq and gq + 8 of its 16, keys 8n + 2tq + {0, 1} of the tile): the scale (or
// softcap, then log2 domain), the mask (cls == 1: per element, keys j0... up to j_end), the online softmax
// (running row max m, this lane's share of the row sums l) and O rescaled when a row's max moved.
// s: [NS][4] scores in, unnormalized probabilities out; o: [NO][4] the rows' output accumulators.
template <int NS, int NO>
__device__ __forceinline__ void softmax_tile(float (&s)[NS][4], float (&o)[NO][4], bool raw, float scale,
                                             float softcap, float mul, int cls, int64_t j0, int tq, int64_t j_end,
                                             const MaskArgs& mask, const int64_t* k_pos, int64_t qp_a,
                                             int64_t qp_b, float& m_a, float& m_b, float& l_a, float& l_b) {
  // Softcap first when set (log2 domain after it); masked keys -inf. Each of the two is one branch on a
  // warp-uniform value around its whole loop, and the mask's per-element visibility is computed in a rolled loop
  // into a bit set, then applied with selects: per-element branches (a reconvergence point and a jump over an
  // unrolled key_visible for each of the NS x 4 scores, taken even where cls == 2) made the loop body large enough
  // that warps waited on instruction fetch: ncu, H100, stall samples "no instruction" + "branch resolving" 35% on
  // the 3B 2k causal kernel and 26% on the tower's full attention (hd 80, 9848 SASS instructions) before, 2% after
  // (4048 instructions); that row 101.8 -> 71.9 ms, the 7B 16k causal 9.27 -> 7.46 ms (same call).
  static_assert(NS * 4 <= 32, "softmax_tile: one visibility bit per score of the lane");
  if (!raw) {
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = s[n][e];
        s[n][e] = softcap > 0.0f ? softcap * tanhf(x * scale / softcap) * kLog2e : x * scale * kLog2e;
      }
  }
  if (cls == 1) {
    uint32_t vis = 0;  // bit 4n + e: score s[n][e] is visible
#pragma unroll 1
    for (int i = 0; i < NS * 4; ++i) {
      const int n = i >> 2, e = i & 3;
      const int64_t j = j0 + n * 8 + 2 * tq + (e & 1);
      if (j < j_end && key_visible(mask, e < 2 ? qp_a : qp_b, key_pos(k_pos, mask, j))) vis |= 1u << i;
    }
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = (vis >> (4 * n + e)) & 1u ? s[n][e] : -INFINITY;
  }
  // Online softmax: the 4 lanes of a quad share a row.
  float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    mx_a = fmaxf(mx_a, fmaxf(s[n][0], s[n][1]));
    mx_b = fmaxf(mx_b, fmaxf(s[n][2], s[n][3]));
  }
#pragma unroll
  for (int o2 = 1; o2 <= 2; o2 <<= 1) {
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, o2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, o2));
  }
  const float new_a = fmaxf(m_a, mx_a * mul), new_b = fmaxf(m_b, mx_b * mul);  // mul > 0: -inf stays -inf
  // A row that has seen nothing yet keeps base 0 so that exp2(-inf - base) = 0, not NaN.
  const float base_a = new_a == -INFINITY ? 0.0f : new_a, base_b = new_b == -INFINITY ? 0.0f : new_b;
  const float corr_a = fast_exp2(m_a - base_a), corr_b = fast_exp2(m_b - base_b);
  m_a = new_a;
  m_b = new_b;
  float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    s[n][0] = fast_exp2(fmaf(s[n][0], mul, -base_a));
    s[n][1] = fast_exp2(fmaf(s[n][1], mul, -base_a));
    s[n][2] = fast_exp2(fmaf(s[n][2], mul, -base_b));
    s[n][3] = fast_exp2(fmaf(s[n][3], mul, -base_b));
    sum_a += s[n][0] + s[n][1];
    sum_b += s[n][2] + s[n][3];
  }
  l_a = l_a * corr_a + sum_a;  // this lane's share; the quad is summed at the end
  l_b = l_b * corr_b + sum_b;
  // Rescale O only when some row's max moved (after the first few tiles it rarely does).
  if (!__all_sync(0xffffffffu, corr_a == 1.0f && corr_b == 1.0f)) {
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      o[n][0] *= corr_a;
      o[n][1] *= corr_a;
      o[n][2] *= corr_b;
      o[n][3] *= corr_b;
    }
  }
}

// Where a block writes: `out` directly (one split), or a split's unnormalized state for
// launch_attention_combine: part_ml[qh][split] = (m in natural-log units, l), part_acc[qh][split][D].
struct FlashOut {
  float* out;
  float* part_ml;
  float* part_acc;
};

// q: [nq, n_heads, D] bf16; k, v: [nk, n_kv_heads, D] bf16; out: [nq, n_heads, D] f32; D <= HD, a multiple
// of 8 (16-byte rows for cp.async), HD the multiple of 16 the MMAs run at (columns D..HD are zeros).
// Grid: (row tiles, kv heads, key splits); row tiles run in reverse so that the longest (causal: last)
// start first. Split z of gridDim.z takes the z-th equal share of the block's key tiles.
// QREG: the warp's Q fragments (HD / 16 x 4 registers) are read from shared memory once and kept for
// the whole key loop (instances whose registers allow it).
template <int HD, int BN, int D, int MINB, bool QREG, int STAGES>
__global__ void __launch_bounds__(kFlashWarps * 32, MINB)
    flash_kernel(const __nv_bfloat16* __restrict__ q, int64_t nq, int64_t q_pos0, const __nv_bfloat16* __restrict__ k,
                 const __nv_bfloat16* __restrict__ v, const int64_t* __restrict__ k_pos, int64_t nk, int n_heads,
                 int n_kv_heads, float scale, float softcap, MaskArgs mask, FlashOut dst) {
  using Shape = FlashShape<HD, BN, STAGES>;
  constexpr int S = Shape::kStride;
  static_assert(HD % 16 == 0 && D % 8 == 0 && D <= HD && HD - D < 16, "flash: D pads to HD");
  static_assert(STAGES >= 2, "flash: at least double buffering");
  constexpr int kChunks = HD / 8;  // 16-byte chunks per shared-memory row
  constexpr int kDataChunks = D / 8;  // of which hold data; the rest are zero-filled
  extern __shared__ __align__(16) unsigned char flash_smem[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(flash_smem);  // [kFlashRows][S]
  __nv_bfloat16* sk = sq + kFlashRows * S;                            // [STAGES][BN][S]
  __nv_bfloat16* sv = sk + STAGES * BN * S;                           // [STAGES][BN][S]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = n_heads / n_kv_heads;
  const int64_t kvh = blockIdx.y;
  const int64_t rows_total = nq * G;
  const int64_t row0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kFlashRows;
  const int64_t row_last = (row0 + kFlashRows < rows_total ? row0 + kFlashRows : rows_total) - 1;

  // Q tile (row f = (query f / G, head kvh * G + f % G); rows past the end are zeros).
  for (int idx = tid; idx < kFlashRows * kChunks; idx += kFlashWarps * 32) {
    const int r = idx / kChunks, c = idx % kChunks;
    const int64_t f = row0 + r;
    const bool ok = f < rows_total && c < kDataChunks;
    const int64_t i = ok ? f / G : 0, g = ok ? f % G : 0, cc = ok ? c : 0;
    cp_async16(sq + r * S + c * 8, q + ((i * n_heads + kvh * G + g) * D + cc * 8), ok);
  }

  // Keys any row of the block can see: [j_begin, j_end). Only for consecutive k_pos; a rotating
  // cache's keys are all visited (per-element mask).
  const bool consecutive = k_pos == nullptr;
  const bool has_groups = mask.groups != nullptr;
  const int64_t q_lo = q_pos0 + row0 / G, q_hi = q_pos0 + row_last / G;
  int64_t j_begin = 0, j_end = nk;
  if (consecutive) {
    if (mask.window > 0 && q_lo - mask.window + 1 - mask.kpos0 > j_begin) j_begin = q_lo - mask.window + 1 - mask.kpos0;
    if (mask.causal && !has_groups && q_hi - mask.kpos0 + 1 < j_end) j_end = q_hi - mask.kpos0 + 1;
  }
  int64_t n_tiles = j_end > j_begin ? (j_end - j_begin + BN - 1) / BN : 0;
  if (gridDim.z > 1) {  // this split's share of the tiles: move j_begin to its first one
    const int64_t share = (n_tiles + gridDim.z - 1) / gridDim.z, t_begin = share * blockIdx.z;
    n_tiles = t_begin < n_tiles ? (n_tiles - t_begin < share ? n_tiles - t_begin : share) : 0;
    j_begin += t_begin * BN;
  }

  // Loads K/V tile t (keys j_begin + t * BN ...) into buffer t % STAGES; keys past j_end are zeros (and
  // masked).
  auto load_kv = [&](int64_t t) {
    const int64_t j0 = j_begin + t * BN;
    const int b = static_cast<int>(t % STAGES);
    __nv_bfloat16* dk = sk + b * BN * S;
    __nv_bfloat16* dv = sv + b * BN * S;
    for (int idx = tid; idx < BN * kChunks; idx += kFlashWarps * 32) {
      const int r = idx / kChunks, c = idx % kChunks;
      const int64_t j = j0 + r;
      const bool ok = j < j_end && c < kDataChunks;
      const int64_t off = ((ok ? j : 0) * n_kv_heads + kvh) * D + (ok ? c : 0) * 8;
      cp_async16(dk + r * S + c * 8, k + off, ok);
      cp_async16(dv + r * S + c * 8, v + off, ok);
    }
  };
  // Prologue: tiles 0 .. STAGES - 2, one commit group each (Q rides with tile 0), so that at step t
  // `wait_group STAGES - 2` means tile t (and everything before it) has landed.
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) {
    if (p < n_tiles) load_kv(p);
    cp_async_commit();
  }

  // This thread's two rows (mma layout: rows lane / 4 and lane / 4 + 8 of the warp's 16).
  const int gq = lane >> 2, tq = lane & 3;
  const int64_t wrow0 = row0 + warp * 16;
  const bool warp_live = wrow0 < rows_total;
  const int64_t w_last = wrow0 + 15 < rows_total ? wrow0 + 15 : rows_total - 1;
  const int64_t wq_lo = q_pos0 + wrow0 / G, wq_hi = q_pos0 + (warp_live ? w_last : wrow0) / G;
  const int64_t qp_a = q_pos0 + (wrow0 + gq) / G, qp_b = q_pos0 + (wrow0 + gq + 8) / G;

  // Q fragments in registers (QREG): Q arrived with group 0.
  uint32_t qf[QREG ? HD / 16 : 1][4];
  if constexpr (QREG) {
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
      ldmatrix_x4(qf[kk], sq + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);
  }

  float o[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;  // m: running max in the log2 domain
  // Without softcap (and with a positive scale, which commutes with max) the raw scores stay raw: the
  // max is taken on them and scale · log2(e) is folded into the exponent's FMA. With softcap they are
  // transformed first (tanh is not linear) and the factor is 1.
  const bool raw = !(softcap > 0.0f) && scale > 0.0f;
  const float mul = raw ? scale * kLog2e : 1.0f;

  for (int64_t t = 0; t < n_tiles; ++t) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile t (and Q) visible to all; every warp is done with tile t - 1's buffer
    if (t + STAGES - 1 < n_tiles) load_kv(t + STAGES - 1);  // into tile t - 1's buffer
    cp_async_commit();

    const int64_t j0 = j_begin + t * BN;
    // Per-warp class of this tile: 0 = no row sees any key, 1 = mixed (per-element mask), 2 = every
    // row sees every key.
    int cls = 1;
    if (!warp_live) {
      cls = 0;
    } else if (consecutive) {
      const int64_t kp_lo = mask.kpos0 + j0, kp_hi = kp_lo + BN - 1;
      if ((mask.causal && !has_groups && kp_lo > wq_hi) || (mask.window > 0 && wq_lo - kp_hi >= mask.window))
        cls = 0;
      else if (j0 + BN <= j_end && (!mask.causal || kp_hi <= wq_lo) &&
               (mask.window <= 0 || wq_hi - kp_lo < mask.window))
        cls = 2;
    }
    if (cls == 0) continue;  // warp-uniform; the next iteration's barrier is still reached by all

    const int b = static_cast<int>(t % STAGES);
    const __nv_bfloat16* kb = sk + b * BN * S;
    const __nv_bfloat16* vb = sv + b * BN * S;
    // S = Q · Kᵀ for the warp's 16 rows x BN keys.
    float s[BN / 8][4];
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t a_smem[4];
      if constexpr (!QREG) ldmatrix_x4(a_smem, sq + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);
      const uint32_t(&a)[4] = QREG ? qf[QREG ? kk : 0] : a_smem;
#pragma unroll
      for (int nn = 0; nn < BN / 16; ++nn) {
        uint32_t bk[4];
        ldmatrix_x4(bk, kb + (nn * 16 + (lane & 7) + (lane >> 4) * 8) * S + kk * 16 + ((lane >> 3) & 1) * 8);
        mma_bf16(s[2 * nn], a, bk[0], bk[1]);
        mma_bf16(s[2 * nn + 1], a, bk[2], bk[3]);
      }
    }
    softmax_tile(s, o, raw, scale, softcap, mul, cls, j0, tq, j_end, mask, k_pos, qp_a, qp_b, m_a, m_b, l_a, l_b);
    // O += P · V: the S accumulators of key blocks 2kk, 2kk + 1 are the A fragment of keys 16kk...
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dd = 0; dd < HD / 16; ++dd) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, vb + (kk * 16 + (lane & 15)) * S + dd * 16 + (lane >> 4) * 8);
        mma_bf16(o[2 * dd], a, bv[0], bv[1]);
        mma_bf16(o[2 * dd + 1], a, bv[2], bv[3]);
      }
    }
  }
  cp_async_wait<0>();  // nothing may be in flight when the block exits

  if (!warp_live) return;
#pragma unroll
  for (int o2 = 1; o2 <= 2; o2 <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, o2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, o2);
  }
  const bool split = gridDim.z > 1;
  // One split: normalize (no key: zeros). Several: the unnormalized state for the combine.
  const float inv_a = split ? 1.0f : l_a > 0.0f ? 1.0f / l_a : 0.0f;
  const float inv_b = split ? 1.0f : l_b > 0.0f ? 1.0f / l_b : 0.0f;
  constexpr float kLn2 = 0.6931471805599453f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t f = wrow0 + gq + 8 * half;
    if (f >= rows_total) continue;
    const int64_t i = f / G, g = f % G;
    const int64_t qh = i * n_heads + kvh * G + g;
    float* orow;
    if (split) {
      const int64_t slot = qh * gridDim.z + blockIdx.z;
      if (tq == 0) {
        const float m = half == 0 ? m_a : m_b;
        dst.part_ml[2 * slot] = m == -INFINITY ? -INFINITY : m * kLn2;  // the combine uses e^(m_s - M)
        dst.part_ml[2 * slot + 1] = half == 0 ? l_a : l_b;
      }
      orow = dst.part_acc + slot * D;
    } else {
      orow = dst.out + qh * D;
    }
    const float inv = half == 0 ? inv_a : inv_b;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {  // the padded columns (zero V) are not stored
      orow[n * 8 + 2 * tq] = o[n][2 * half] * inv;
      orow[n * 8 + 2 * tq + 1] = o[n][2 * half + 1] * inv;
    }
  }
}

template <int HD, int BN, int D = HD, int MINB = 1, bool QREG = false, int STAGES = 2>
void launch_flash(const __nv_bfloat16* q, int64_t nq, int64_t q_pos0, const __nv_bfloat16* k,
                  const __nv_bfloat16* v, const int64_t* k_pos, int64_t nk, int64_t n_heads, int64_t n_kv_heads,
                  float scale, float softcap, const MaskArgs& mask, const FlashOut& dst, int splits, cudaStream_t cs) {
  constexpr size_t smem = FlashShape<HD, BN, STAGES>::kSmemBytes;
  auto* kernel = flash_kernel<HD, BN, D, MINB, QREG, STAGES>;
  static std::once_flag once;  // above 48 KiB of dynamic shared memory needs an opt-in per kernel
  std::call_once(once, [kernel] {
    VLM_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "attention");
  });
  const int64_t rows = nq * (n_heads / n_kv_heads);
  const dim3 grid(static_cast<unsigned>((rows + kFlashRows - 1) / kFlashRows), static_cast<unsigned>(n_kv_heads),
                  static_cast<unsigned>(splits));
  kernel<<<grid, kFlashWarps * 32, smem, cs>>>(q, nq, q_pos0, k, v, k_pos, nk, static_cast<int>(n_heads),
                                               static_cast<int>(n_kv_heads), scale, softcap, mask, dst);
}


// ---- Hopper (sm_90a): the same algorithm with warpgroup MMAs (wgmma) ---------------------------------
// flash_wgmma_kernel<HD, BN, BS, D, MINB>: the grid, rows, masking, softmax and output of flash_kernel, with both
// matmuls issued per warpgroup (4 warps, 64 rows) as wgmma.m64nNk16 (f32 += bf16 · bf16): A from registers
// (Q fragments, loaded once by ldmatrix; then P, whose S accumulator layout is the A-operand layout, as with
// mma.sync), B read by the tensor cores straight from shared memory through a matrix descriptor, so K and V
// tiles are never staged through registers (the mma.sync kernel spends one ldmatrix per two MMAs on them).
// K and V tiles use the canonical no-swizzle layout ("core matrices" of 8 rows x 16 bytes, 128 contiguous
// bytes each): the 16-byte chunk c of key r sits at ((r / 8) * HD / 8 + c) * 128 + (r % 8) * 16 bytes. For
// S = Q·Kᵀ the tile is a K-major B operand (K = head_dim: the next core matrix along K is 128 bytes away, the
// next 8 keys HD * 16 bytes); for O += P·V the same layout is an MN-major B operand (trans-b = 1, K = keys:
// the next 8 keys are HD * 16 bytes away, the next 8 head_dim columns 128 bytes). Each batch of wgmmas is
// committed and waited for before its results are read (no overlap between the two matmuls of a warpgroup
// yet; the two warpgroups of a block and the blocks of an SM overlap each other). A K/V tile of BN keys is
// processed in sub-tiles of BS keys (S, softmax, P·V each), so that S and P fit the register budget of two
// blocks per SM while the tile loads and barriers stay per BN keys.
template <int N>
struct Wgmma;
template <>
struct Wgmma<32> {
  template <int TRANS_B>
  static __device__ __forceinline__ void run(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, {%16, %17, %18, %19}, %20, p, 1, 1, %22;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B));
  }
};
template <>
struct Wgmma<64> {
  template <int TRANS_B>
  static __device__ __forceinline__ void run(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B));
  }
};
template <>
struct Wgmma<80> {
  template <int TRANS_B>
  static __device__ __forceinline__ void run(float (&d)[10][4], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39"
        "}, {%40, %41, %42, %43}, %44, p, 1, 1, %46;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B));
  }
};
template <>
struct Wgmma<96> {
  template <int TRANS_B>
  static __device__ __forceinline__ void run(float (&d)[12][4], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %53, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
        "}, {%48, %49, %50, %51}, %52, p, 1, 1, %54;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
          "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B));
  }
};

// (Device passes for other architectures never see the helpers: the kernel body is empty there.)
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Keeps the compiler from moving reads of wgmma accumulators across the wait (the asm above does not name them).
template <int R>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[R][4]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}
// Makes this thread's cp.async writes to shared memory (generic proxy) visible to wgmma's reads (async proxy).
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Shared-memory matrix descriptor, no swizzle: start address, leading (K direction) and stride (M/N
// direction) byte offsets between core matrices, each in 16-byte units.
__device__ __forceinline__ uint64_t wgmma_desc(const void* p, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return static_cast<uint64_t>((smem_addr(p) >> 4) & 0x3FFFu) |
         (static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFFu) << 32);
}
#endif

template <int HD, int BN>
struct WgmmaShape {
  static constexpr int kQStride = HD + 8;  // Q rows as flash_kernel (ldmatrix, conflict-free)
  static constexpr int kTile = BN * HD;    // elements of one K or V tile (core-matrix layout, no padding)
  static constexpr int kStages = 2;
  static constexpr size_t kSmemBytes =
      sizeof(__nv_bfloat16) * (static_cast<size_t>(kFlashRows) * kQStride + 2 * kStages * static_cast<size_t>(kTile));
};

// Parameters and layouts as flash_kernel (q: [nq, n_heads, D] bf16; k, v: [nk, n_kv_heads, D] bf16; HD the
// padded head dim, a multiple of 16 with HD / 8 even). A warpgroup skips a tile only when none of its 64 rows
// sees a key of it (wgmma is issued by the four warps together).
template <int HD, int BN, int BS, int D, int MINB>
__global__ void __launch_bounds__(kFlashWarps * 32, MINB)
    flash_wgmma_kernel(const __nv_bfloat16* __restrict__ q, int64_t nq, int64_t q_pos0,
                       const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                       const int64_t* __restrict__ k_pos, int64_t nk, int n_heads, int n_kv_heads, float scale,
                       float softcap, MaskArgs mask, FlashOut dst) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = WgmmaShape<HD, BN>;
  constexpr int S = Shape::kQStride;
  constexpr int kStages = Shape::kStages;
  constexpr int kChunks = HD / 8, kDataChunks = D / 8;
  static_assert(HD % 16 == 0 && kChunks % 2 == 0 && D % 8 == 0 && D <= HD && HD - D < 16, "flash wgmma: shape");
  static_assert(BN % BS == 0 && BS % 16 == 0, "flash wgmma: key tile of whole sub-tiles");
  extern __shared__ __align__(128) unsigned char wgmma_smem[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(wgmma_smem);  // [kFlashRows][S]
  __nv_bfloat16* sk = sq + kFlashRows * S;                            // [kStages][kTile]
  __nv_bfloat16* sv = sk + kStages * Shape::kTile;                    // [kStages][kTile]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int G = n_heads / n_kv_heads;
  const int64_t kvh = blockIdx.y;
  const int64_t rows_total = nq * G;
  const int64_t row0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kFlashRows;
  const int64_t row_last = (row0 + kFlashRows < rows_total ? row0 + kFlashRows : rows_total) - 1;
  // Descriptor byte offsets between core matrices: K as a K-major operand (K direction = head_dim: 128 bytes;
  // N direction = keys: HD * 16), V as an MN-major one (K direction = keys: HD * 16; N direction = head_dim: 128).
  // (Exchanging either pair was checked on an H200: every case then fails, NaN for V.)
  constexpr uint32_t k_lbo = 128, k_sbo = kChunks * 128, v_lbo = kChunks * 128, v_sbo = 128;

  for (int idx = tid; idx < kFlashRows * kChunks; idx += kFlashWarps * 32) {
    const int r = idx / kChunks, c = idx % kChunks;
    const int64_t f = row0 + r;
    const bool ok = f < rows_total && c < kDataChunks;
    const int64_t i = ok ? f / G : 0, g = ok ? f % G : 0, cc = ok ? c : 0;
    cp_async16(sq + r * S + c * 8, q + ((i * n_heads + kvh * G + g) * D + cc * 8), ok);
  }

  const bool consecutive = k_pos == nullptr;
  const bool has_groups = mask.groups != nullptr;
  const int64_t q_lo = q_pos0 + row0 / G, q_hi = q_pos0 + row_last / G;
  int64_t j_begin = 0, j_end = nk;
  if (consecutive) {
    if (mask.window > 0 && q_lo - mask.window + 1 - mask.kpos0 > j_begin) j_begin = q_lo - mask.window + 1 - mask.kpos0;
    if (mask.causal && !has_groups && q_hi - mask.kpos0 + 1 < j_end) j_end = q_hi - mask.kpos0 + 1;
  }
  int64_t n_tiles = j_end > j_begin ? (j_end - j_begin + BN - 1) / BN : 0;
  if (gridDim.z > 1) {
    const int64_t share = (n_tiles + gridDim.z - 1) / gridDim.z, t_begin = share * blockIdx.z;
    n_tiles = t_begin < n_tiles ? (n_tiles - t_begin < share ? n_tiles - t_begin : share) : 0;
    j_begin += t_begin * BN;
  }

  // K/V tile t into buffer t % kStages in the core-matrix layout. Consecutive thread pairs take the two
  // 16-byte halves of one 32-byte global sector, and a warp's 16 pairs 16 consecutive keys (eight distinct
  // 16-byte bank groups per core matrix: the shared-memory writes are conflict-free per quarter warp).
  auto load_kv = [&](int64_t t) {
    const int64_t j0 = j_begin + t * BN;
    const int b = static_cast<int>(t % kStages);
    __nv_bfloat16* dk = sk + b * Shape::kTile;
    __nv_bfloat16* dv = sv + b * Shape::kTile;
    for (int idx = tid; idx < BN * kChunks; idx += kFlashWarps * 32) {
      const int p = idx >> 1, r = p % BN, c = (p / BN) * 2 + (idx & 1);
      const int64_t j = j0 + r;
      const bool ok = j < j_end && c < kDataChunks;
      const int64_t off = ((ok ? j : 0) * n_kv_heads + kvh) * D + (ok ? c : 0) * 8;
      const int so = ((r >> 3) * kChunks + c) * 64 + (r & 7) * 8;
      cp_async16(dk + so, k + off, ok);
      cp_async16(dv + so, v + off, ok);
    }
  };
  load_kv(0);  // with Q: group 0 (n_tiles == 0 loads zeros, never read)
  cp_async_commit();

  const int gq = lane >> 2, tq = lane & 3;
  const int64_t wrow0 = row0 + warp * 16;
  const bool warp_live = wrow0 < rows_total;
  const int64_t qp_a = q_pos0 + (wrow0 + gq) / G, qp_b = q_pos0 + (wrow0 + gq + 8) / G;
  // The warpgroup's 64 rows decide which tiles it skips or masks.
  const int64_t grow0 = row0 + wg * 64;
  const bool wg_live = grow0 < rows_total;
  const int64_t g_last = grow0 + 63 < rows_total ? grow0 + 63 : rows_total - 1;
  const int64_t gq_lo = q_pos0 + grow0 / G, gq_hi = q_pos0 + (wg_live ? g_last : grow0) / G;

  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[HD / 16][4];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk)
    ldmatrix_x4(qf[kk], sq + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);

  float o[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
  const bool raw = !(softcap > 0.0f) && scale > 0.0f;
  const float mul = raw ? scale * kLog2e : 1.0f;

  for (int64_t t = 0; t < n_tiles; ++t) {
    cp_async_wait<0>();
    fence_proxy_async_shared();
    __syncthreads();  // tile t visible to all (and to the tensor cores); tile t - 1's buffer is free
    if (t + 1 < n_tiles) load_kv(t + 1);
    cp_async_commit();

    const int b = static_cast<int>(t % kStages);
    // Sub-tiles of BS keys: S, the softmax and P · V per sub-tile keep S and P within the register budget.
#pragma unroll 1
    for (int sub = 0; sub < BN / BS; ++sub) {
      const int64_t j0 = j_begin + t * BN + sub * BS;
      int cls = 1;  // per warpgroup: 0 = no row sees a key, 1 = per-element mask, 2 = every row sees every key
      if (!wg_live || j0 >= j_end) {
        cls = 0;
      } else if (consecutive) {
        const int64_t kp_lo = mask.kpos0 + j0, kp_hi = kp_lo + BS - 1;
        if ((mask.causal && !has_groups && kp_lo > gq_hi) || (mask.window > 0 && gq_lo - kp_hi >= mask.window))
          cls = 0;
        else if (j0 + BS <= j_end && (!mask.causal || kp_hi <= gq_lo) &&
                 (mask.window <= 0 || gq_hi - kp_lo < mask.window))
          cls = 2;
      }
      if (cls == 0) continue;  // warpgroup-uniform

      // This sub-tile's keys start sub * BS / 8 key groups into the tile.
      const __nv_bfloat16* kb = sk + b * Shape::kTile + sub * (BS / 8) * kChunks * 64;
      const __nv_bfloat16* vb = sv + b * Shape::kTile + sub * (BS / 8) * kChunks * 64;
      // S = Q · Kᵀ: 64 rows x BS keys per warpgroup, HD / 16 steps of K.
      float s[BS / 8][4];
#pragma unroll
      for (int n = 0; n < BS / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk)
        Wgmma<BS>::template run<0>(s, qf[kk], wgmma_desc(kb + kk * 128, k_lbo, k_sbo), 1);
      wgmma_commit();
      wgmma_wait_all();
      wgmma_fence_operands(s);
      softmax_tile(s, o, raw, scale, softcap, mul, cls, j0, tq, j_end, mask, k_pos, qp_a, qp_b, m_a, m_b, l_a, l_b);
      // O += P · V: P's A fragments (keys 16kk ... 16kk + 15) from the S accumulators of key blocks 2kk, 2kk + 1.
      uint32_t pa[BS / 16][4];
#pragma unroll
      for (int kk = 0; kk < BS / 16; ++kk) {
        pa[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      }
      wgmma_fence_operands(o);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BS / 16; ++kk)
        Wgmma<HD>::template run<1>(o, pa[kk], wgmma_desc(vb + 2 * kk * kChunks * 64, v_lbo, v_sbo), 1);
      wgmma_commit();
      wgmma_wait_all();
      wgmma_fence_operands(o);
    }
  }
  cp_async_wait<0>();

  if (!warp_live) return;
#pragma unroll
  for (int o2 = 1; o2 <= 2; o2 <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, o2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, o2);
  }
  const bool split = gridDim.z > 1;
  const float inv_a = split ? 1.0f : l_a > 0.0f ? 1.0f / l_a : 0.0f;
  const float inv_b = split ? 1.0f : l_b > 0.0f ? 1.0f / l_b : 0.0f;
  constexpr float kLn2 = 0.6931471805599453f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t f = wrow0 + gq + 8 * half;
    if (f >= rows_total) continue;
    const int64_t i = f / G, g = f % G;
    const int64_t qh = i * n_heads + kvh * G + g;
    float* orow;
    if (split) {
      const int64_t slot = qh * gridDim.z + blockIdx.z;
      if (tq == 0) {
        const float m = half == 0 ? m_a : m_b;
        dst.part_ml[2 * slot] = m == -INFINITY ? -INFINITY : m * kLn2;
        dst.part_ml[2 * slot + 1] = half == 0 ? l_a : l_b;
      }
      orow = dst.part_acc + slot * D;
    } else {
      orow = dst.out + qh * D;
    }
    const float inv = half == 0 ? inv_a : inv_b;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      orow[n * 8 + 2 * tq] = o[n][2 * half] * inv;
      orow[n * 8 + 2 * tq + 1] = o[n][2 * half + 1] * inv;
    }
  }
#endif
}

template <int HD, int BN, int BS, int D, int MINB>
void launch_flash_wgmma(const __nv_bfloat16* q, int64_t nq, int64_t q_pos0, const __nv_bfloat16* k,
                        const __nv_bfloat16* v, const int64_t* k_pos, int64_t nk, int64_t n_heads, int64_t n_kv_heads,
                        float scale, float softcap, const MaskArgs& mask, const FlashOut& dst, int splits,
                        cudaStream_t cs) {
  constexpr size_t smem = WgmmaShape<HD, BN>::kSmemBytes;
  auto* kernel = flash_wgmma_kernel<HD, BN, BS, D, MINB>;
  static std::once_flag once;
  std::call_once(once, [kernel] {
    VLM_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "attention");
  });
  const int64_t rows = nq * (n_heads / n_kv_heads);
  const dim3 grid(static_cast<unsigned>((rows + kFlashRows - 1) / kFlashRows), static_cast<unsigned>(n_kv_heads),
                  static_cast<unsigned>(splits));
  kernel<<<grid, kFlashWarps * 32, smem, cs>>>(q, nq, q_pos0, k, v, k_pos, nk, static_cast<int>(n_heads),
                                               static_cast<int>(n_kv_heads), scale, softcap, mask, dst);
}

}  // namespace

bool attention_flash_bf16(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                          const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          float scale, float softcap, const MaskArgs& mask, float* out, cudaStream_t cs) {
  using Launch = void (*)(const __nv_bfloat16*, int64_t, int64_t, const __nv_bfloat16*, const __nv_bfloat16*,
                          const int64_t*, int64_t, int64_t, int64_t, float, float, const MaskArgs&, const FlashOut&,
                          int, cudaStream_t);
  // Tuning switches (read once): VLMCHECK_CUDA_FLASH 1 = head_dim 128 short prefills without Q in registers,
  // 2 = head_dim 128 one 64-key-tile block per SM at every size, 3 = head_dim 128 two blocks per SM with
  // 32-key tiles at every size; VLMCHECK_CUDA_FLASH_SPLITS = N splits every block's key tiles N ways (1..16;
  // merged by launch_attention_combine).
  static const int mode = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_FLASH");
    return v != nullptr && *v >= '1' && *v <= '3' ? *v - '0' : 0;
  }();
  static const int forced_splits = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_FLASH_SPLITS");
    const int n = v != nullptr ? std::atoi(v) : 0;
    return n >= 1 && n <= 16 ? n : 0;
  }();
  // Hopper, opt-in (VLMCHECK_CUDA_FLASH_WGMMA=1; =2 the one-block-per-SM variant): the wgmma kernel for head
  // dims 72-96 (template: padded head dim, key tile, sub-tile, head dim, blocks per SM). Not the default: on an
  // H200 it matched the mma.sync kernel on the Qwen2.5-VL tower's full attention (102.8 vs 104.6 ms), was slower
  // on its windows (989 vs 953 us) and faster only on SigLIP's hd 72 (525 vs 618 us); its head_dim 64 and 128
  // instances (not dispatched) were up to 2x slower at 128 and failed the reference on every case with more
  // than one key tile (single-tile cases and every hd 72/80/96 case passed) -- cause not found.
  static const int wgmma_mode = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_FLASH_WGMMA");
    if (v == nullptr || (std::string(v) != "1" && std::string(v) != "2")) return 0;
    int dev = 0, major = 0;
    const bool ok = cudaGetDevice(&dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess;
    cudaGetLastError();
    if (!ok || major != 9) return 0;  // the binary carries sm_90a code for 9.0 only
    return *v - '0';
  }();
  Launch launch = nullptr;
  if (wgmma_mode != 0) {
    // Two blocks per SM (128 registers) need 32-key sub-tiles at hd 80 (S and P of 64 keys spilled ~110 bytes);
    // hd 96 spilled ~90 bytes even so and takes one block per SM.
    const bool one = wgmma_mode == 2;
    switch (head_dim) {
      case 72: launch = one ? launch_flash_wgmma<80, 64, 64, 72, 1> : launch_flash_wgmma<80, 64, 32, 72, 2>; break;
      case 80: launch = one ? launch_flash_wgmma<80, 64, 64, 80, 1> : launch_flash_wgmma<80, 64, 32, 80, 2>; break;
      case 96: launch = launch_flash_wgmma<96, 64, 64, 96, 1>; break;
      default: break;
    }
  }
  if (launch == nullptr) {
    switch (head_dim) {
      case 32: launch = launch_flash<32, 64, 32, 2, true>; break;
      case 64: launch = launch_flash<64, 64, 64, 2>; break;
      case 72: launch = launch_flash<80, 64, 72, 2>; break;  // SigLIP so400m (Gemma 3, PaliGemma): padded to 80
      case 80: launch = launch_flash<80, 64, 80, 2>; break;
      case 96: launch = launch_flash<96, 64, 96, 2>; break;
      case 128: {
        // Long prefills (>= 1024 blocks: a 16k-token 7B layer has 3584) and chunks against a long cache (>= 4096
        // keys: the 16k photo's 2048-token chunks, 448 blocks, ran at 15% of the bf16 probe on one block per SM
        // against 26% for the whole prompt in one call) take the two-blocks-per-SM kernel with 32-key tiles (O and
        // S fit 128 registers); short ones (a 2k-token 3B layer: 256 blocks) one 64-key-tile block per SM with Q
        // in registers (two blocks per SM measured slower there, with or without splits).
        const int64_t blocks = (nq * (n_heads / n_kv_heads) + kFlashRows - 1) / kFlashRows * n_kv_heads;
        const bool two = mode == 3 || (mode != 2 && (blocks >= 1024 || nk >= 4096));
        launch = two         ? launch_flash<128, 32, 128, 2>
                 : mode == 1 ? launch_flash<128, 64, 128, 1, false>
                             : launch_flash<128, 64, 128, 1, true>;
        break;
      }
      case 256: launch = launch_flash<256, 32>; break;  // BN 32 keeps O (HD / 2 per lane) + S in registers
      default: return false;
    }
  }
  if (nq * (n_heads / n_kv_heads) > (int64_t{1} << 31)) return false;
  // Key splits are off by default: on an H200 they made no measured row faster (2 splits: 2k 3B shape 186 ->
  // 250 us, Gemma 3 shape 242-254 -> 253 us; at two blocks per SM the 2k 3B shape took 226-230 us).
  const int splits = forced_splits > 0 ? forced_splits : 1;
  // One scratch block: bf16 copies of q, k, v (each part a multiple of 8 elements: 16-byte aligned, as
  // cp.async wants; head_dim is 32/64/72/80/96/128/256), then with splits the f32 partial states.
  const int64_t nqe = nq * n_heads * head_dim, nke = nk * n_kv_heads * head_dim;
  // (The partials start at a 256-byte boundary; without splits the request is the bf16 size alone.)
  const size_t bf16_raw = sizeof(__nv_bfloat16) * static_cast<size_t>(nqe + 2 * nke + 8);
  const size_t bf16_bytes = splits > 1 ? (bf16_raw + 255) / 256 * 256 : bf16_raw;
  const int64_t qh = nq * n_heads;
  const size_t part_bytes = splits > 1 ? sizeof(float) * static_cast<size_t>(qh * splits * (2 + head_dim)) : 0;
  auto* base = static_cast<unsigned char*>(detail::scratch(bf16_bytes + part_bytes, "attention"));
  __nv_bfloat16* qb = reinterpret_cast<__nv_bfloat16*>(base);
  __nv_bfloat16 *kb = qb + nqe, *vb = kb + nke;
  FlashOut dst{out, nullptr, nullptr};
  if (splits > 1) {
    dst.part_ml = reinterpret_cast<float*>(base + bf16_bytes);  // [qh][splits][2]
    dst.part_acc = dst.part_ml + qh * splits * 2;               // [qh][splits][head_dim]
  }
  const int64_t largest = std::max(nqe, nke);
  const unsigned cblocks = static_cast<unsigned>(std::min<int64_t>((largest / 2 + 255) / 256, 4096));
  to_bf16_kernel<<<dim3(std::max(cblocks, 1u), 3), 256, 0, cs>>>(q, nqe, k, nke, v, nke, qb, kb, vb);
  VLM_CUDA_LAUNCHED("attention");
  launch(qb, nq, q_pos0, kb, vb, k_pos_dev, nk, n_heads, n_kv_heads, scale, softcap, mask, dst, splits, cs);
  VLM_CUDA_LAUNCHED("attention");
  if (splits > 1) launch_attention_combine(dst.part_ml, dst.part_acc, qh, splits, head_dim, out, cs);
  return true;
}

}  // namespace vlm::ops::cuda::kernels
