// MLX-quantized GEMV (decode) on AVX512-VNNI: codes times 16-bit fixed-point activations, summed exactly
// in int32. 2/4/8-bit codes are split into bytes and dotted with vpdpbusd against the activations'
// high and low bytes (below); 3/5/6-bit codes, which straddle bytes, are gathered into 16-bit lanes
// with AVX512-VBMI and dotted with vpdpwssd (see "3/5/6-bit").
//
// Activations: x is quantized once per token to int16 with one scale per 32 activations
// (xs = max|x| / 32639 over the 32, round to nearest). Per row and group g: Σ_c w_c·x_c =
// s_g·Σ_c q_c·x_c + b_g·X_g with X_g = Σ_c x_c (exact f32, per token) and, per 32-activation chunk h,
// Σ_c q_c·x_c ≈ xs_h·Σ_c q_c·xq_c (integer, exact). The only rounding is xq: |x − xs_h·xq| <= xs_h / 2
// = max|x_h| / 65278, i.e. 16-bit fixed point per 32 activations — about the accuracy of f16
// activations (NMSE ~1e-8 on inputs with 20x outliers, ~1e-9 without; bf16 activations, as MLX computes
// bf16 models, give ~1e-6). The conformance test bounds it against the f32 reference.
//
// 2/4/8-bit layout: a 64-byte block of a row holds E = 8 / BITS codes per byte (code E·j + t is piece t
// of byte j, MLX packs LSB first); one and (plus a shift for t > 0) gives piece t of all 64 bytes as
// unsigned bytes. xq is split as xq = 256·xh + xl with xl the low byte read as signed (xl, xh in
// [-128, 127], which is why the scale maps max|x| to 32639 rather than 32767), and pre-arranged per
// block and piece into byte vectors xh_t[j] = xh[E·j + t], xl_t[j] = xl[E·j + t], so piece t meets its
// activations without shuffles. vpdpbusd sums four u8·s8 products per int32 lane exactly; per block and
// row: acc = Σ_t dpbusd(c_t, xh_t), acc <<= 8, acc += Σ_t dpbusd(c_t, xl_t) — 4-bit: 3 ops to split
// the codes and 4 dot products per 128 codes (the 16-bit-lane kernel this replaced took 6 + 4 and an
// add). Int32 lane i covers codes 4E·i .. 4E·i + 4E − 1: one group and one 32-activation chunk
// (4E <= 16), so one per-lane vector of s_g·xs_h converts a block's sums.
// Overflow: |Σ| < 2^8 · 4E·255·128 + ... < 2^26.
//
// Where the time goes (Zen 4 under KVM, one core, measured with bench_kernels --gemv and throughput
// micro-benchmarks, 2026-11-27): vpdpbusd, vfmadd, vmulps and vgf2p8affineqb on zmm each take one
// cycle of the same two-pipe multiply unit, shifts and converts another pair, ands any pipe. The 4-bit
// loop above is 4 dot products + 1 FMA there per 64 bytes — ~5.8 cycles per block and row measured on
// L1-resident codes, ~40 GB/s — so the loop itself is not what bounds decode; the per-row and per-call
// costs were (setup per 8 rows, a multiply per block for the factor, byte-masked loads), and streamed
// from DRAM it is the access pattern (see kPrefetchGroups). A GFNI split of the pieces (one
// vgf2p8affineqb instead of shift + and) was tried and dropped: it moves work onto the busy pipe.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/quant.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_avx512.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")

namespace vlm::ops::cpu::avx512 {
namespace {

template <int BITS>
struct LayoutB {
  static constexpr int kPieces = 8 / BITS;           // codes per byte (E)
  static constexpr int kCodes = 64 * kPieces;        // codes per 64-byte block
  static constexpr int kCodesPerLane = 4 * kPieces;  // codes feeding one int32 lane
};

constexpr int kXChunk = 32;     // activations per x scale
constexpr float kXMax = 32639;  // |xq| bound: xq = 256·xh + xl with both bytes in [-128, 127]
// Rows per pass of the one-token GEMV (more rows share each block's activation loads and bookkeeping;
// 8 vs 4: 13.6 -> 14.3 GB/s on an L2-resident 512 x 576 4-bit matrix, one core, thread CPU time).
constexpr int kRowsOneToken = 8;

// Per token: the activations in the layout of the kernel (bytes or int16), the x scale per 32
// activations, Σx per group.
struct PreparedQ {
  std::vector<int8_t> xb;        // 2/4/8-bit: [blocks][E][hi, lo][64]
  std::vector<int16_t> xq;       // 3/5/6-bit: natural order
  std::vector<float> xscale;     // [k / 32 + 16] (padded so a 16-wide load never reads past it)
  std::vector<float> group_sum;  // [groups]
  int64_t blocks = 0;
};

// E: codes per byte of the 2/4/8-bit kernels (8 / bits), or 0 for the natural int16 order of the
// 3/5/6-bit kernels.
template <int E>
void prepare_q(const float* x, int64_t k, int group, PreparedQ& p) {
  constexpr int kCodes = E > 0 ? 64 * E : 32;
  const int64_t groups = k / group;
  p.blocks = (k + kCodes - 1) / kCodes;
  const int64_t chunks = k / kXChunk;  // k is a multiple of the group size, itself of 32
  p.xscale.assign(static_cast<size_t>(chunks + 16), 0.0f);
  p.group_sum.assign(static_cast<size_t>(groups), 0.0f);
  // Natural order first (the 3/5/6-bit kernels read it as is); zero past k up to the last block's end.
  thread_local std::vector<int16_t> natural_store;
  std::vector<int16_t>& natural = E == 0 ? p.xq : natural_store;
  natural.assign(static_cast<size_t>(p.blocks * kCodes), 0);
  for (int64_t h = 0; h < chunks; ++h) {
    const float* xh = x + h * kXChunk;
    const __m512 v0 = _mm512_loadu_ps(xh), v1 = _mm512_loadu_ps(xh + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    p.group_sum[static_cast<size_t>(h * kXChunk / group)] += _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
    // amax == 0 (or not finite): scale 0 and codes 0; a NaN/inf activation then yields NaN through
    // the scale (and the exact Σx term) rather than a silently wrong finite value.
    const float scale = (amax > 0.0f && std::isfinite(amax)) ? amax / kXMax : 0.0f;
    p.xscale[static_cast<size_t>(h)] = std::isfinite(amax) ? scale : amax;
    const __m512 inv = _mm512_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
    // Round to nearest even; |x · inv| <= 32639 · (1 + 2^-23) < 32639.5, so |xq| <= 32639.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(natural.data() + h * kXChunk),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v0, inv))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(natural.data() + h * kXChunk + 16),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v1, inv))));
  }
  if constexpr (E > 0) {
    // Per block, piece t and half u (bytes 32u .. 32u + 31): the 32 values natural[E·j + t] of the
    // block's values 32E·u .. 32E·u + 32E − 1. Output lane j takes its value from source vectors
    // 2q, 2q + 1 of that range (values 64q .. 64q + 63) where 64q <= E·j < 64(q + 1): one two-source
    // permute per pair, merged under that pair's lanes. Each int16 is then split into its bytes.
    p.xb.resize(static_cast<size_t>(p.blocks * kCodes * 2));
    alignas(64) int16_t idx[E][32];
    __mmask32 lanes[E > 1 ? E / 2 : 1];
    for (int t = 0; t < E; ++t)
      for (int j = 0; j < 32; ++j) idx[t][j] = static_cast<int16_t>((E * j + t) & 63);
    for (int q = 0; q < (E > 1 ? E / 2 : 1); ++q) {
      uint32_t m = 0;
      for (int j = 0; j < 32; ++j)
        if (E * j / 64 == q) m |= 1u << j;
      lanes[q] = m;
    }
    for (int64_t b = 0; b < p.blocks; ++b) {
#pragma GCC unroll 2
      for (int u = 0; u < 2; ++u) {
        const int16_t* src = natural.data() + b * kCodes + 32 * E * u;
#pragma GCC unroll 4
        for (int t = 0; t < E; ++t) {
          __m512i r;
          if constexpr (E == 1) {
            r = _mm512_loadu_si512(src);
          } else {
            const __m512i ix = _mm512_load_si512(idx[t]);
            r = _mm512_setzero_si512();
#pragma GCC unroll 2
            for (int q = 0; q < E / 2; ++q)
              r = _mm512_mask_mov_epi16(r, lanes[q],
                                        _mm512_permutex2var_epi16(_mm512_loadu_si512(src + 64 * q), ix,
                                                                  _mm512_loadu_si512(src + 64 * q + 32)));
          }
          const __m512i lo = _mm512_srai_epi16(_mm512_slli_epi16(r, 8), 8);  // low byte, signed
          const __m512i hi = _mm512_srai_epi16(_mm512_sub_epi16(r, lo), 8);
          int8_t* dst = p.xb.data() + (b * E + t) * 128 + 32 * u;
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi16_epi8(hi));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64), _mm512_cvtepi16_epi8(lo));
        }
      }
    }
  }
}

// Up to 16 consecutive scale values starting at `p` (n valid) as f32.
inline __m512 load_values(const void* p, DType dt, int64_t n) {
  const __mmask16 m = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
  switch (dt) {
    case DType::kBF16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p))), 16));
    case DType::kF16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p)));
    default:
      return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p));
  }
}

// Piece t (a code) of every byte, as an unsigned byte (t is a constant after unrolling).
template <int BITS>
inline __m512i piece(__m512i v, int t) {
  if (BITS == 8) return v;
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  if (t == 0) return _mm512_and_si512(v, mask);
  // A 16-bit shift moves the next byte's low bits into this byte's top: the and removes them.
  return _mm512_and_si512(_mm512_srli_epi16(v, static_cast<unsigned>(BITS * t)), mask);
}

// The same for 32 bytes (a half block).
template <int BITS>
inline __m256i piece256(__m256i v, int t) {
  if (BITS == 8) return v;
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  if (t == 0) return _mm256_and_si256(v, mask);
  return _mm256_and_si256(_mm256_srli_epi16(v, static_cast<unsigned>(BITS * t)), mask);
}

// Software prefetch distance in passes of R rows, and its target: L2, as in simd_linear_avx512.cpp
// (prefetching into L1 streamed 4-bit matrices at 8-9 GB/s per core, into L2 at 12-15 GB/s). A pass
// reads its R rows together, so the in-loop prefetch of each block's line kPrefetchGroups passes
// further on covers the matrix ahead as one stream, each line exactly where that pass will load it.
// Distances in bytes instead (one core, thread CPU time, alternating, load ~3, 2026-11-27 01:35;
// 4-bit g64 GB/s for 1536 x 576 / 576 x 1536 / 4864 x 896): two passes (4.6 / 12 / 7.2 KB)
// 18-22 / 17-22 / 25-28; 6 KB 17-21 / 15-20 / 17-21; 8 KB 14-19 / 14-18 / 15-21; 16 KB 13-16 /
// 15-16 / 15-18. (A micro-benchmark of the bare loop had favoured ~16 KB; the kernel does not.)
constexpr int64_t kPrefetchGroups = 2;
constexpr auto kPrefetchHint = _MM_HINT_T1;

// Prefetches [p, p + bytes) into L2. Used at the start of a pool chunk (and of each output's rows in
// it): the in-loop prefetch runs kPrefetchGroups passes ahead, so a chunk's first rows would
// otherwise arrive on demand, one miss latency at a time — and at decode sizes a pool round has only ~8 chunks, and a
// thread's next chunk does not follow its last one in memory (claims run downwards), so every chunk
// paid that.
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, kPrefetchHint);
}

// The line to prefetch for a load at `src`: `ahead` bytes on, unless that is past the rows this
// thread's chunk covers (another thread's rows, or past the matrix), where it re-touches src instead.
inline const char* prefetch_target(const uint8_t* src, int64_t ahead, const uint8_t* pf_end) {
  const uint8_t* t = src + ahead;
  return reinterpret_cast<const char*>(t < pf_end ? t : src);
}

// A quantized matrix's raw pointers and strides, read once per call (Tensor::raw() is out of line and
// checked; per row it showed as ~3 % of SmolLM2 4-bit decode samples).
struct QView {
  const uint8_t* packed;  // row r at packed + r * row_stride
  const char* scales;     // [rows, groups] in dtype sd
  const char* biases;
  int64_t row_stride;  // bytes per packed row
  int64_t cols, groups;
  int group_size;
  DType sd;
  size_t ssize;
};

QView view_of(const QuantizedMatrix& m) {
  QView v;
  v.packed = reinterpret_cast<const uint8_t*>(m.packed.data<uint32_t>());
  v.scales = static_cast<const char*>(m.scales.raw());
  v.biases = static_cast<const char*>(m.biases.raw());
  v.row_stride = m.words_per_row() * 4;
  v.cols = m.cols;
  v.group_size = m.spec.group_size;
  v.groups = m.cols / m.spec.group_size;
  v.sd = m.scales.dtype();
  v.ssize = dtype_size(v.sd);
  return v;
}

// The horizontal sums of eight vectors: lane i of the result is the sum of v[i]'s lanes. One
// transpose-add tree (24 shuffles/adds) instead of eight reductions of ~9 dependent steps each: at
// 576 inputs a row is only 4.5 blocks, so the row-end reductions were a fifth of the kernel's ops.
inline __m256 sum8(const __m512* v) {
  __m512 p[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {  // [v2k's lanes 0-7 + 8-15 | v2k+1's]
    const __m512 a = v[2 * k], b = v[2 * k + 1];
    p[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  __m512 q[2];
#pragma GCC unroll 2
  for (int k = 0; k < 2; ++k) {  // 128-bit quarter r: four partial sums of v[4k + r]
    const __m512 a = p[2 * k], b = p[2 * k + 1];
    q[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // Per quarter r: lane 0 = Σ v[r], lane 1 = Σ v[4 + r].
  __m512 s = _mm512_add_ps(_mm512_unpacklo_ps(q[0], q[1]), _mm512_unpackhi_ps(q[0], q[1]));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512i idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, s));
}

// y[t0 + j][r] = Σ_c w[r][c]·x_j[c] (+ bias[r]) for NT tokens (x prepared per token) and the rows
// [r_begin, r_end), R at a time (r_end − r_begin a multiple of R); each block of codes is loaded and
// split into pieces once for all NT tokens. One call covers a pool chunk's rows of one matrix, so the
// setup below (constants, pointers; ~13 % of the samples at 576 inputs when it ran per 8 rows) is paid
// once per chunk.
//
// Per 64-byte block and row the work is the load, the piece split (2E − 1 ands and shifts), 2E
// dot products and a shift, then one vpermps, a convert and an FMA: the per-lane factor s_g·xs_h
// (int32 lane -> f32 contribution) is formed per row once per window of 16 x chunks (512 codes,
// 8/E blocks) — a vpermps of the row's group scales to chunks times the 16 chunk scales — and each
// block only picks its lanes' factors from it (the same f32 products as one multiply per block).
// Σ_g b_g·X_g (exact f32 sums of x per group), sixteen groups at a time, added to the lanes of R rows for
// each of NT tokens before the one reduction per row. brow0: the first row's biases; sstride: bytes per
// row of biases.
template <int R, int NT>
inline void add_bias_terms(__m512 (&total)[NT][R], const char* brow0, int64_t sstride, size_t ssize, DType sd,
                           int64_t groups, const PreparedQ* const* p) {
  for (int64_t g = 0; g < groups; g += 16) {
    const int64_t n = std::min<int64_t>(16, groups - g);
    const __mmask16 mk = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
    __m512 xsum[NT];
#pragma GCC unroll 8
    for (int j = 0; j < NT; ++j) xsum[j] = _mm512_maskz_loadu_ps(mk, p[j]->group_sum.data() + g);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 bb = load_values(brow0 + i * sstride + g * ssize, sd, n);
#pragma GCC unroll 8
      for (int j = 0; j < NT; ++j) total[j][i] = _mm512_fmadd_ps(bb, xsum[j], total[j][i]);
    }
  }
}

template <int BITS, int R, int NT>
void rows_dot(const QView& m, int64_t r_begin, int64_t r_end, const PreparedQ* const* p, const float* bias,
              float* y /* [tokens][rows] */, int64_t t0, int64_t rows, const uint8_t* pf_end) {
  using L = LayoutB<BITS>;
  constexpr int E = L::kPieces;
  constexpr int kWindowChunks = 16;
  constexpr int kWindowBlocks = kWindowChunks * kXChunk / L::kCodes;  // 8 / E
  const int64_t row_bytes = m.cols * BITS / 8;
  const int gs_shift = __builtin_ctz(static_cast<unsigned>(m.group_size));  // 5, 6 or 7
  const int64_t groups = m.groups;
  const DType sd = m.sd;
  const size_t ssize = m.ssize;
  // Chunk c of a window (512 codes, a multiple of every group size) lies in the window's group
  // 32c / group_size; int32 lane i of the window's block w covers chunk 2E·w + 4E·i / 32.
  const __m512i chunk_group =
      _mm512_srl_epi32(_mm512_slli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 5),
                       _mm_cvtsi32_si128(gs_shift));
  const __m512i lane_chunk =
      _mm512_srli_epi32(_mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(L::kCodesPerLane)),
                        5);
  const int64_t ahead = kPrefetchGroups * R * m.row_stride;
  const int64_t sstride = groups * static_cast<int64_t>(ssize);
  const int64_t blocks = p[0]->blocks;
  for (int64_t r0 = r_begin; r0 < r_end; r0 += R) {
    const uint8_t* const row0 = m.packed + r0 * m.row_stride;
    const char* const srow0 = m.scales + r0 * groups * ssize;
    __m512 total[NT][R];
#pragma GCC unroll 8
    for (int j = 0; j < NT; ++j)
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) total[j][i] = _mm512_setzero_ps();
    for (int64_t w0 = 0; w0 < blocks; w0 += kWindowBlocks) {
      // sx[j][i] lane c: s_g·xs_c of row i, token j, for the window's chunk c.
      const int64_t gbase = (w0 * L::kCodes) >> gs_shift;
      const int64_t ng = std::min<int64_t>(16, groups - gbase);
      const int64_t c0 = w0 * L::kCodes / kXChunk;
      __m512 sx[NT][R];
      {
        __m512 xs[NT];
#pragma GCC unroll 8
        for (int j = 0; j < NT; ++j) xs[j] = _mm512_loadu_ps(p[j]->xscale.data() + c0);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
          const __m512 s = _mm512_permutexvar_ps(chunk_group, load_values(srow0 + i * sstride + gbase * ssize, sd, ng));
#pragma GCC unroll 8
          for (int j = 0; j < NT; ++j) sx[j][i] = _mm512_mul_ps(s, xs[j]);
        }
      }
      const int64_t w1 = std::min<int64_t>(blocks, w0 + kWindowBlocks);
      for (int64_t b = w0; b < w1; ++b) {
        const int64_t valid = std::min<int64_t>(64, row_bytes - 64 * b);
        const __m512i lane_sel = _mm512_add_epi32(lane_chunk, _mm512_set1_epi32(static_cast<int>(2 * E * (b - w0))));
        if (valid == 32) {
          // A half block at the row's end (4-bit rows of 576 inputs are 4.5 blocks: a tenth of SmolLM2's
          // 4-bit work went to the masked half) in 256-bit ops, which take half the time of 512-bit ones here.
#pragma GCC unroll 8
          for (int i = 0; i < R; ++i) {
            const uint8_t* src = row0 + i * m.row_stride + 64 * b;
            _mm_prefetch(prefetch_target(src, ahead, pf_end), kPrefetchHint);
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
            __m256i c[E];
#pragma GCC unroll 8
            for (int t = 0; t < E; ++t) c[t] = piece256<BITS>(v, t);
#pragma GCC unroll 8
            for (int j = 0; j < NT; ++j) {
              const int8_t* xb = p[j]->xb.data() + b * E * 128;
              auto x32 = [&](int off) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + off)); };
              __m256i acc = _mm256_dpbusd_epi32(_mm256_setzero_si256(), c[0], x32(0));
#pragma GCC unroll 8
              for (int t = 1; t < E; ++t) acc = _mm256_dpbusd_epi32(acc, c[t], x32(128 * t));
              acc = _mm256_slli_epi32(acc, 8);
#pragma GCC unroll 8
              for (int t = 0; t < E; ++t) acc = _mm256_dpbusd_epi32(acc, c[t], x32(128 * t + 64));
              const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc),
                                             _mm512_castps512_ps256(_mm512_permutexvar_ps(lane_sel, sx[j][i])));
              total[j][i] = _mm512_add_ps(total[j][i], _mm512_insertf32x8(_mm512_setzero_ps(), f, 0));
            }
          }
          continue;
        }
        // A whole block takes a plain load: the byte-masked one cost ~12 % of the kernel's speed on
        // L2-resident rows (one core, 2048 inputs), and only a row's last block can be partial.
        auto full = [&](auto masked_tag) {
          constexpr bool kMasked = decltype(masked_tag)::value;
          const __mmask64 bm = kMasked ? (__mmask64{1} << valid) - 1 : ~__mmask64{0};
#pragma GCC unroll 8
          for (int i = 0; i < R; ++i) {
            const uint8_t* src = row0 + i * m.row_stride + 64 * b;
            _mm_prefetch(prefetch_target(src, ahead, pf_end), kPrefetchHint);
            const __m512i v = kMasked ? _mm512_maskz_loadu_epi8(bm, src) : _mm512_loadu_si512(src);
            __m512i c[E];
#pragma GCC unroll 8
            for (int t = 0; t < E; ++t) c[t] = piece<BITS>(v, t);
#pragma GCC unroll 8
            for (int j = 0; j < NT; ++j) {
              const int8_t* xb = p[j]->xb.data() + b * E * 128;
              __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[0], _mm512_loadu_si512(xb));
#pragma GCC unroll 8
              for (int t = 1; t < E; ++t) acc = _mm512_dpbusd_epi32(acc, c[t], _mm512_loadu_si512(xb + 128 * t));
              acc = _mm512_slli_epi32(acc, 8);
#pragma GCC unroll 8
              for (int t = 0; t < E; ++t) acc = _mm512_dpbusd_epi32(acc, c[t], _mm512_loadu_si512(xb + 128 * t + 64));
              total[j][i] =
                  _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(lane_sel, sx[j][i]), total[j][i]);
            }
          }
        };
        if (valid >= 64)
          full(std::false_type{});
        else
          full(std::true_type{});
      }
    }
    add_bias_terms<R, NT>(total, m.biases + r0 * sstride, sstride, ssize, sd, groups, p);
#pragma GCC unroll 8
    for (int j = 0; j < NT; ++j) {
      float* yj = y + (t0 + j) * rows + r0;
      if constexpr (R == 8) {
        __m256 v = sum8(total[j]);
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + r0));
        _mm256_storeu_ps(yj, v);
      } else {
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) yj[i] = _mm512_reduce_add_ps(total[j][i]) + (bias ? bias[r0 + i] : 0.0f);
      }
    }
  }
}

// ---- 3/5/6-bit: codes gathered across byte boundaries -------------------------------------------
// A 32-code chunk is 4·BITS bytes. vpermb copies, for 16-bit lane j, the two bytes holding bits
// BITS·j .. BITS·j + BITS − 1 (bytes ⌊BITS·j/8⌋ and the next), vpsrlvw shifts the code down and an
// and keeps BITS bits: 32 codes in natural order in three instructions, dotted by one vpdpwssd
// against x in natural order. Each chunk lies in one quantization group and one x-scale chunk, so
// its int32 sums convert with one broadcast s_g·xs.
template <int BITS>
struct StreamGather {
  __m512i index, shift;
  StreamGather() {
    alignas(64) uint8_t ix[64];
    alignas(64) uint16_t sh[32];
    for (int j = 0; j < 32; ++j) {
      ix[2 * j] = static_cast<uint8_t>(BITS * j / 8);
      ix[2 * j + 1] = static_cast<uint8_t>(BITS * j / 8 + 1);  // past the chunk only where unused
      sh[j] = static_cast<uint16_t>(BITS * j % 8);
    }
    index = _mm512_load_si512(ix);
    shift = _mm512_load_si512(sh);
  }
};

// y[t0 + j][r] for rows [r_begin, r_end), R at a time, as rows_dot. Per 32-code chunk and row: the
// load, three ops to gather the codes, one vpdpwssd per token, then a vpermps of the per-chunk factor
// s_g·xs_h (formed per row once per 16 chunks, as in rows_dot; it was a scalar scale load, convert,
// multiply and broadcast per chunk) and a convert and FMA. The Σ_g b_g·X_g term is vectorized as in
// rows_dot (it was a scalar loop per row and group).
template <int BITS, int R, int NT>
__attribute__((target("avx512vbmi"))) void stream_rows_dot(const QView& m, int64_t r_begin, int64_t r_end,
                                                           const PreparedQ* const* p, const float* bias,
                                                           float* y /* [tokens][rows] */, int64_t t0, int64_t rows,
                                                           const uint8_t* pf_end) {
  constexpr int kChunkBytes = 4 * BITS;
  static const StreamGather<BITS> gather;
  const int64_t chunks = m.cols / 32;
  const int gs_shift = __builtin_ctz(static_cast<unsigned>(m.group_size));
  const int64_t groups = m.groups;
  const DType sd = m.sd;
  const size_t ssize = m.ssize;
  const int64_t sstride = groups * static_cast<int64_t>(ssize);
  const __mmask64 load_mask = (__mmask64{1} << kChunkBytes) - 1;
  const __m512i code_mask = _mm512_set1_epi16(static_cast<int16_t>((1 << BITS) - 1));
  // Chunk c of a 16-chunk window lies in the window's group 32c / group_size.
  const __m512i chunk_group =
      _mm512_srl_epi32(_mm512_slli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 5),
                       _mm_cvtsi32_si128(gs_shift));
  const int64_t ahead = kPrefetchGroups * R * m.row_stride;
  for (int64_t r0 = r_begin; r0 < r_end; r0 += R) {
    const uint8_t* const row0 = m.packed + r0 * m.row_stride;
    const char* const srow0 = m.scales + r0 * sstride;
    __m512 total[NT][R];
#pragma GCC unroll 8
    for (int j = 0; j < NT; ++j)
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) total[j][i] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < chunks; c0 += 16) {
      const int64_t gbase = (c0 * 32) >> gs_shift;
      const int64_t ng = std::min<int64_t>(16, groups - gbase);
      __m512 sx[NT][R];
      {
        __m512 xs[NT];
#pragma GCC unroll 8
        for (int j = 0; j < NT; ++j) xs[j] = _mm512_loadu_ps(p[j]->xscale.data() + c0);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
          const __m512 sc =
              _mm512_permutexvar_ps(chunk_group, load_values(srow0 + i * sstride + gbase * ssize, sd, ng));
#pragma GCC unroll 8
          for (int j = 0; j < NT; ++j) sx[j][i] = _mm512_mul_ps(sc, xs[j]);
        }
      }
      const int64_t c1 = std::min<int64_t>(chunks, c0 + 16);
      for (int64_t c = c0; c < c1; ++c) {
        const __m512i sel = _mm512_set1_epi32(static_cast<int>(c - c0));
        __m512i xq[NT];
#pragma GCC unroll 8
        for (int j = 0; j < NT; ++j) xq[j] = _mm512_loadu_si512(p[j]->xq.data() + 32 * c);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
          const uint8_t* src = row0 + i * m.row_stride + c * kChunkBytes;
          if ((c * kChunkBytes & 63) < kChunkBytes) _mm_prefetch(prefetch_target(src, ahead, pf_end), kPrefetchHint);
          const __m512i v = _mm512_maskz_loadu_epi8(load_mask, src);
          const __m512i codes =
              _mm512_and_si512(_mm512_srlv_epi16(_mm512_permutexvar_epi8(gather.index, v), gather.shift), code_mask);
#pragma GCC unroll 8
          for (int j = 0; j < NT; ++j) {
            const __m512i acc = _mm512_dpwssd_epi32(_mm512_setzero_si512(), codes, xq[j]);
            total[j][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(sel, sx[j][i]), total[j][i]);
          }
        }
      }
    }
    add_bias_terms<R, NT>(total, m.biases + r0 * sstride, sstride, ssize, sd, groups, p);
#pragma GCC unroll 8
    for (int j = 0; j < NT; ++j) {
      float* yj = y + (t0 + j) * rows + r0;
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) yj[i] = _mm512_reduce_add_ps(total[j][i]) + (bias ? bias[r0 + i] : 0.0f);
    }
  }
}

// ---- drivers ---------------------------------------------------------------------------------------

template <int BITS>
constexpr bool kStream = BITS == 3 || BITS == 5 || BITS == 6;

// Rows [r_begin, r_end) of m for NT tokens: R at a time, then the matrix's last rows (fewer than R)
// one at a time. pf_end: the end of the rows this chunk covers in m (prefetch_target).
template <int BITS, int NT>
void rows_range(const QuantizedMatrix& m, const QView& view, int64_t r_begin, int64_t r_end, const PreparedQ* const* p,
                const float* bias, float* y, int64_t t0, const uint8_t* pf_end) {
  // Fewer rows per pass when several tokens share the codes (and for 2-bit, whose eight activation
  // vectors per block leave fewer registers).
  constexpr int R = NT == 1 ? (BITS == 2 ? 4 : kRowsOneToken) : 2;
  const int64_t rows = m.rows;
  const int64_t r_full = r_begin + (r_end - r_begin) / R * R;
  if constexpr (kStream<BITS>) {
    if (r_full > r_begin) stream_rows_dot<BITS, R, NT>(view, r_begin, r_full, p, bias, y, t0, rows, pf_end);
    if (r_end > r_full) stream_rows_dot<BITS, 1, NT>(view, r_full, r_end, p, bias, y, t0, rows, pf_end);
  } else {
    if (r_full > r_begin) rows_dot<BITS, R, NT>(view, r_begin, r_full, p, bias, y, t0, rows, pf_end);
    if (r_end > r_full) rows_dot<BITS, 1, NT>(view, r_full, r_end, p, bias, y, t0, rows, pf_end);
  }
}

// One output of a GEMV group: weight, f32 bias or null, output, first row block in the group's numbering.
struct QuantOut {
  const QuantizedMatrix* m;
  QView view;
  const float* bias;
  float* y;
  int64_t block0;
};

template <int BITS>
void gemv(const float* x, int64_t n, const Weight* const* w, const float* const* bias, float* const* y, int count) {
  constexpr int kMaxGroup = 8;
  const int64_t k = w[0]->quant.cols;
  constexpr int kPieces = kStream<BITS> ? 0 : LayoutB<BITS>::kPieces;
  // Prepared activations are reused across calls (one set per calling thread): decode calls this ~200
  // times per token, and the allocations showed up next to kernels of a few microseconds.
  thread_local std::vector<PreparedQ> prep;
  if (prep.size() < static_cast<size_t>(n)) prep.resize(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t)
    prepare_q<kPieces>(x + t * k, k, w[0]->quant.spec.group_size, prep[static_cast<size_t>(t)]);
  // Tokens in groups of up to four share each pass over the rows (a short prompt suffix after a
  // prompt-cache hit reads the weights about once per four tokens).
  constexpr int kMaxNt = 4;
  for (int64_t t0 = 0; t0 < n; t0 += kMaxNt) {
    const int nt = static_cast<int>(std::min<int64_t>(kMaxNt, n - t0));
    const PreparedQ* ps[kMaxNt];
    for (int j = 0; j < nt; ++j) ps[j] = &prep[static_cast<size_t>(t0 + j)];
    const int R = nt == 1 ? (BITS == 2 ? 4 : kRowsOneToken) : 2;
    // Every output's row blocks in one numbering, so the whole group is one pool round.
    QuantOut outs[kMaxGroup];
    int64_t blocks = 0;
    for (int o = 0; o < count; ++o) {
      outs[o] = QuantOut{&w[o]->quant, view_of(w[o]->quant), bias[o], y[o], blocks};
      blocks += (w[o]->quant.rows + R - 1) / R;
    }
    parallel_for(blocks, R * k * nt / 2, [&](int64_t b0, int64_t b1) {
      // Per output the chunk covers: its rows, their first bytes prefetched (no earlier pass of this
      // thread has), then one rows_range.
      for (int o = 0; o < count; ++o) {
        const int64_t o_end = o + 1 < count ? outs[o + 1].block0 : blocks;
        const int64_t sb = std::max(b0, outs[o].block0), se = std::min(b1, o_end);
        if (sb >= se) continue;
        const QuantizedMatrix& m = *outs[o].m;
        const QView& v = outs[o].view;
        const int64_t r_first = (sb - outs[o].block0) * R;
        const int64_t r_end = std::min<int64_t>(m.rows, (se - outs[o].block0) * R);
        const uint8_t* pf_end = v.packed + r_end * v.row_stride;
        prefetch_bytes(v.packed + r_first * v.row_stride,
                       std::min<int64_t>(kPrefetchGroups * R * v.row_stride, (r_end - r_first) * v.row_stride));
        switch (nt) {
          case 1:
            rows_range<BITS, 1>(m, v, r_first, r_end, ps, outs[o].bias, outs[o].y, t0, pf_end);
            break;
          case 2:
            rows_range<BITS, 2>(m, v, r_first, r_end, ps, outs[o].bias, outs[o].y, t0, pf_end);
            break;
          case 3:
            rows_range<BITS, 3>(m, v, r_first, r_end, ps, outs[o].bias, outs[o].y, t0, pf_end);
            break;
          default:
            rows_range<BITS, 4>(m, v, r_first, r_end, ps, outs[o].bias, outs[o].y, t0, pf_end);
            break;
        }
      }
    });
  }
}

bool has_vbmi() {
  static const bool v = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
  }();
  return v;
}

bool has_vnni() {
  static const bool v = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") != 0;
  }();
  return v;
}

}  // namespace

bool quant_gemv_vnni(const float* x, int64_t n, const Weight* const* w, const float* const* bias, float* const* y,
                     int count) {
  if (!has_vnni() || count < 1 || count > 8) return false;
  switch (w[0]->quant.spec.bits) {
    case 2:
      gemv<2>(x, n, w, bias, y, count);
      return true;
    case 4:
      gemv<4>(x, n, w, bias, y, count);
      return true;
    case 8:
      gemv<8>(x, n, w, bias, y, count);
      return true;
    default:
      break;
  }
  if (!has_vbmi()) return false;
  switch (w[0]->quant.spec.bits) {
    case 3:
      gemv<3>(x, n, w, bias, y, count);
      return true;
    case 5:
      gemv<5>(x, n, w, bias, y, count);
      return true;
    case 6:
      gemv<6>(x, n, w, bias, y, count);
      return true;
    default:
      return false;
  }
}

}  // namespace vlm::ops::cpu::avx512

#pragma GCC pop_options
