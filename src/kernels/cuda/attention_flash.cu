// Prefill attention on tensor cores (AttentionMask::bf16_matmul): flash attention with bf16
// mma.sync.m16n8k16 (f32 accumulation) for both matmuls and an f32 online softmax.
//   1. q, k, v (f32) are rounded to bf16 into scratch once per call (one pass, ~3 µs for a 2048-token
//      Qwen 3B layer), so the main kernel streams half the bytes and its tiles go to shared memory
//      with cp.async, already in the MMA's input type.
//   2. flash_kernel<HD, BN, D>: one block of 8 warps per (128 rows, kv head). A row is a (query, head of
//      the kv group) pair: the G = heads / kv_heads query heads that share a kv head sit in the same
//      block, so every K/V tile is loaded once for all of them (GQA costs no extra traffic). Each warp
//      owns 16 rows. K/V tiles of BN keys are double-buffered (the next tile's cp.async runs under
//      the current tile's math). Per tile: S = Q·Kᵀ (ldmatrix + mma), scale / softcap / mask in f32,
//      online softmax in the log2 domain, P rounded to bf16 in registers (the S accumulator layout is
//      the A-operand layout of the second MMA), O += P·V (V read with ldmatrix.trans).
// Head dims that are not a multiple of 16 (SigLIP so400m's 72) run as the next multiple of 16: the tiles'
// extra columns are zero-filled in shared memory (cp.async with a zero source size), so Q·Kᵀ is unchanged
// and the extra output columns (zero V) are never stored. D is the head dim in memory, HD the padded one.
// Occupancy: at head_dim <= 96 (the vision towers' 64/72/80) the kernel is built for two blocks per SM
// (__launch_bounds__ min 2: <= 128 registers, 16 warps per SM instead of 8), which hides more of the
// ldmatrix -> mma and cp.async latency that one 8-warp block per SM leaves exposed; O (HD / 2 floats per lane)
// and S fit in that budget there. head_dim 128 takes two blocks per SM with 32-key tiles (S halves, so O
// fits in 128 registers) on long prefills only (see the dispatch); head_dim 256 keeps one block per SM.
// H200 (bench_cuda_kernels --attention): the Qwen2.5-VL tower's full attention over 62,208 patches (hd 80)
// 176 -> 128 ms; the 7B shape at 16k (hd 128) 13.5 -> 11.0 ms.
// VLMCHECK_CUDA_FLASH (tuning switch, read once): 1 = one block per SM everywhere (the previous kernels),
// 2 = two blocks per SM at head_dim 128 (BN 64, registers capped at 128: spills; 12.5 ms at 16k, 273 us at
// 2k), 3 = two blocks per SM with BN 32 at head_dim 128 at every size.
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
// hit distinct banks. HD is the padded head dim (a multiple of 16).
template <int HD, int BN>
struct FlashShape {
  static constexpr int kStride = HD + 8;
  static constexpr size_t kSmemBytes = sizeof(__nv_bfloat16) * static_cast<size_t>(kFlashRows + 4 * BN) * kStride;
};

// q: [nq, n_heads, D] bf16; k, v: [nk, n_kv_heads, D] bf16; out: [nq, n_heads, D] f32; D <= HD, a multiple
// of 8 (16-byte rows for cp.async), HD the multiple of 16 the MMAs run at (columns D..HD are zeros).
// Grid: (row tiles, kv heads); row tiles run in reverse so that the longest (causal: last) start first.
template <int HD, int BN, int D, int MINB>
__global__ void __launch_bounds__(kFlashWarps * 32, MINB)
    flash_kernel(const __nv_bfloat16* __restrict__ q, int64_t nq, int64_t q_pos0, const __nv_bfloat16* __restrict__ k,
                 const __nv_bfloat16* __restrict__ v, const int64_t* __restrict__ k_pos, int64_t nk, int n_heads,
                 int n_kv_heads, float scale, float softcap, MaskArgs mask, float* __restrict__ out) {
  using Shape = FlashShape<HD, BN>;
  constexpr int S = Shape::kStride;
  static_assert(HD % 16 == 0 && D % 8 == 0 && D <= HD && HD - D < 16, "flash: D pads to HD");
  constexpr int kChunks = HD / 8;  // 16-byte chunks per shared-memory row
  constexpr int kDataChunks = D / 8;  // of which hold data; the rest are zero-filled
  extern __shared__ __align__(16) unsigned char flash_smem[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(flash_smem);  // [kFlashRows][S]
  __nv_bfloat16* sk = sq + kFlashRows * S;                            // [2][BN][S]
  __nv_bfloat16* sv = sk + 2 * BN * S;                                // [2][BN][S]

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
  const int64_t n_tiles = j_end > j_begin ? (j_end - j_begin + BN - 1) / BN : 0;

  // Loads K/V tile t (keys j_begin + t * BN ...) into buffer b; keys past j_end are zeros (and masked).
  auto load_kv = [&](int64_t t, int b) {
    const int64_t j0 = j_begin + t * BN;
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
  if (n_tiles > 0) load_kv(0, 0);
  cp_async_commit();

  // This thread's two rows (mma layout: rows lane / 4 and lane / 4 + 8 of the warp's 16).
  const int gq = lane >> 2, tq = lane & 3;
  const int64_t wrow0 = row0 + warp * 16;
  const bool warp_live = wrow0 < rows_total;
  const int64_t w_last = wrow0 + 15 < rows_total ? wrow0 + 15 : rows_total - 1;
  const int64_t wq_lo = q_pos0 + wrow0 / G, wq_hi = q_pos0 + (warp_live ? w_last : wrow0) / G;
  const int64_t qp_a = q_pos0 + (wrow0 + gq) / G, qp_b = q_pos0 + (wrow0 + gq + 8) / G;

  float o[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
  const float scale_log2 = scale * kLog2e;

  for (int64_t t = 0; t < n_tiles; ++t) {
    const int b = static_cast<int>(t & 1);
    cp_async_wait<0>();
    __syncthreads();  // tile t (and Q) visible to all; every warp is done with buffer b ^ 1
    if (t + 1 < n_tiles) load_kv(t + 1, b ^ 1);
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

    const __nv_bfloat16* kb = sk + b * BN * S;
    const __nv_bfloat16* vb = sv + b * BN * S;
    // S = Q · Kᵀ for the warp's 16 rows x BN keys.
    float s[BN / 8][4];
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, sq + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int nn = 0; nn < BN / 16; ++nn) {
        uint32_t bk[4];
        ldmatrix_x4(bk, kb + (nn * 16 + (lane & 7) + (lane >> 4) * 8) * S + kk * 16 + ((lane >> 3) & 1) * 8);
        mma_bf16(s[2 * nn], a, bk[0], bk[1]);
        mma_bf16(s[2 * nn + 1], a, bk[2], bk[3]);
      }
    }
    // Scores in the log2 domain: x = score * scale * log2(e) (softcap first when set); masked -inf.
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e];
        if (softcap > 0.0f)
          x = softcap * tanhf(x * scale / softcap) * kLog2e;
        else
          x *= scale_log2;
        if (cls == 1) {
          const int64_t j = j0 + n * 8 + 2 * tq + (e & 1);
          const bool vis = j < j_end && key_visible(mask, e < 2 ? qp_a : qp_b, key_pos(k_pos, mask, j));
          if (!vis) x = -INFINITY;
        }
        s[n][e] = x;
      }
    }
    // Online softmax: the 4 lanes of a quad share a row.
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      mx_a = fmaxf(mx_a, fmaxf(s[n][0], s[n][1]));
      mx_b = fmaxf(mx_b, fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int o2 = 1; o2 <= 2; o2 <<= 1) {
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, o2));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, o2));
    }
    const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
    // A row that has seen nothing yet keeps base 0 so that exp2(-inf - base) = 0, not NaN.
    const float base_a = new_a == -INFINITY ? 0.0f : new_a, base_b = new_b == -INFINITY ? 0.0f : new_b;
    const float corr_a = exp2f(m_a - base_a), corr_b = exp2f(m_b - base_b);
    m_a = new_a;
    m_b = new_b;
    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      s[n][0] = exp2f(s[n][0] - base_a);
      s[n][1] = exp2f(s[n][1] - base_a);
      s[n][2] = exp2f(s[n][2] - base_b);
      s[n][3] = exp2f(s[n][3] - base_b);
      sum_a += s[n][0] + s[n][1];
      sum_b += s[n][2] + s[n][3];
    }
    l_a = l_a * corr_a + sum_a;  // this lane's share; the quad is summed at the end
    l_b = l_b * corr_b + sum_b;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      o[n][0] *= corr_a;
      o[n][1] *= corr_a;
      o[n][2] *= corr_b;
      o[n][3] *= corr_b;
    }
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
  const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f, inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;  // no key: zeros
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t f = wrow0 + gq + 8 * half;
    if (f >= rows_total) continue;
    const int64_t i = f / G, g = f % G;
    float* orow = out + (i * n_heads + kvh * G + g) * D;
    const float inv = half == 0 ? inv_a : inv_b;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {  // the padded columns (zero V) are not stored
      orow[n * 8 + 2 * tq] = o[n][2 * half] * inv;
      orow[n * 8 + 2 * tq + 1] = o[n][2 * half + 1] * inv;
    }
  }
}

template <int HD, int BN, int D = HD, int MINB = 1>
void launch_flash(const __nv_bfloat16* q, int64_t nq, int64_t q_pos0, const __nv_bfloat16* k,
                  const __nv_bfloat16* v, const int64_t* k_pos, int64_t nk, int64_t n_heads, int64_t n_kv_heads,
                  float scale, float softcap, const MaskArgs& mask, float* out, cudaStream_t cs) {
  constexpr size_t smem = FlashShape<HD, BN>::kSmemBytes;
  static std::once_flag once;  // above 48 KiB of dynamic shared memory needs an opt-in per kernel
  std::call_once(once, [] {
    VLM_CUDA(cudaFuncSetAttribute(flash_kernel<HD, BN, D, MINB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)),
             "attention");
  });
  const int64_t rows = nq * (n_heads / n_kv_heads);
  const dim3 grid(static_cast<unsigned>((rows + kFlashRows - 1) / kFlashRows), static_cast<unsigned>(n_kv_heads));
  flash_kernel<HD, BN, D, MINB><<<grid, kFlashWarps * 32, smem, cs>>>(q, nq, q_pos0, k, v, k_pos, nk,
                                                              static_cast<int>(n_heads), static_cast<int>(n_kv_heads),
                                                              scale, softcap, mask, out);
}

}  // namespace

bool attention_flash_bf16(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                          const int64_t* k_pos_dev, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          float scale, float softcap, const MaskArgs& mask, float* out, cudaStream_t cs) {
  using Launch = void (*)(const __nv_bfloat16*, int64_t, int64_t, const __nv_bfloat16*, const __nv_bfloat16*,
                          const int64_t*, int64_t, int64_t, int64_t, float, float, const MaskArgs&, float*,
                          cudaStream_t);
  static const int mode = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_FLASH");
    return v != nullptr && *v >= '1' && *v <= '3' ? *v - '0' : 0;
  }();
  const bool one = mode == 1;  // every head_dim at one block per SM
  Launch launch = nullptr;
  switch (head_dim) {  // BN = 32 at 256 keeps O (HD / 2 registers per lane) plus S under the limit
    case 32: launch = one ? launch_flash<32, 64> : launch_flash<32, 64, 32, 2>; break;
    case 64: launch = one ? launch_flash<64, 64> : launch_flash<64, 64, 64, 2>; break;
    case 72:  // SigLIP so400m (Gemma 3, PaliGemma): padded to 80
      launch = one ? launch_flash<80, 64, 72> : launch_flash<80, 64, 72, 2>;
      break;
    case 80: launch = one ? launch_flash<80, 64> : launch_flash<80, 64, 80, 2>; break;
    case 96: launch = one ? launch_flash<96, 64> : launch_flash<96, 64, 96, 2>; break;
    case 128: {
      // Long prefills (>= 1024 blocks: a 16k-token 7B layer has 3584) take the two-blocks-per-SM kernel with
      // 32-key tiles, short ones (a 2k-token 3B layer: 256 blocks) keep one 64-key-tile block per SM:
      // H200, 7B shape 16k causal 13.5 -> 11.0 ms, 3B shape 2k 182 -> 242 us (so not there).
      const int64_t blocks = (nq * (n_heads / n_kv_heads) + kFlashRows - 1) / kFlashRows * n_kv_heads;
      const bool two = mode == 3 || (mode == 0 && blocks >= 1024);
      launch = mode == 2 ? launch_flash<128, 64, 128, 2> : two ? launch_flash<128, 32, 128, 2> : launch_flash<128, 64>;
      break;
    }
    case 256: launch = launch_flash<256, 32>; break;
    default: return false;
  }
  if (nq * (n_heads / n_kv_heads) > (int64_t{1} << 31)) return false;
  // bf16 copies of q, k, v in one scratch block (each part a multiple of 8 elements: 16-byte aligned, as
  // cp.async wants; head_dim is 32/64/72/80/96/128/256).
  const int64_t nqe = nq * n_heads * head_dim, nke = nk * n_kv_heads * head_dim;
  auto* base = static_cast<__nv_bfloat16*>(
      detail::scratch(sizeof(__nv_bfloat16) * static_cast<size_t>(nqe + 2 * nke + 8), "attention"));
  __nv_bfloat16 *qb = base, *kb = qb + nqe, *vb = kb + nke;
  const int64_t largest = std::max(nqe, nke);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((largest / 2 + 255) / 256, 4096));
  to_bf16_kernel<<<dim3(std::max(blocks, 1u), 3), 256, 0, cs>>>(q, nqe, k, nke, v, nke, qb, kb, vb);
  VLM_CUDA_LAUNCHED("attention");
  launch(qb, nq, q_pos0, kb, vb, k_pos_dev, nk, n_heads, n_kv_heads, scale, softcap, mask, out, cs);
  VLM_CUDA_LAUNCHED("attention");
  return true;
}

}  // namespace vlm::ops::cuda::kernels
