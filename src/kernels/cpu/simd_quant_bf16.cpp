// 2/4/8-bit MLX GEMV (decode) on AVX512_BF16: the hot path of quantized decode.
//
// Why: decoding nibbles to f32 costs ~8 uops per 32 weights (zero-extend, mask, shift, two
// int->float converts, two FMAs), which on this 2-core machine caps 4-bit decode near half the
// memory roofline. Here each nibble becomes an exact bf16 with one shift and one ternary-logic op —
// 0x3F80 | (q << 3) is the bf16 value 1 + q/16 — and vdpbf16ps does 32 multiply-adds per uop.
// 2-bit codes work the same way (1 + q/4); an 8-bit code is split into its two nibbles, the high
// one dotted against 16·x (exact in bf16), so Σ pieces = 17·x + q·x/16 (see Layout below).
// Activations are NOT rounded to bf16: x is split into x_hi = bf16(x) and x_lo = bf16(x - x_hi),
// which together carry ~16 significant bits, and both are dotted (products are exact in f32; the
// accumulation is f32). So the result differs from the scalar reference by ~1e-6 relative, far
// below bf16 rounding of x (documented in docs/PERFORMANCE.md, checked by the conformance test).
//
// Arithmetic: with f = 1 + q/16, w = s·q + b = 16·s·f + (b − 16·s), so per row
//   y = 16 Σ_g s_g·(Σ_{c∈g} f_c x_c) + Σ_g (b_g − 16 s_g)·X_g,   X_g = Σ_{c∈g} x_c (f32, per token).
// Layout: a 64-byte load holds 128 codes; 16-bit lane j holds codes 4j..4j+3 (nibble t = code 4j+t),
// so x is pre-permuted per 128-block into four 32-lane bf16 vectors x_t[j] = x[4j + t]. f32 lane i
// of the dot accumulates codes 8i..8i+7, all in group (8i)/group_size, so one per-lane scale vector
// (permutexvar of the block's 1, 2 or 4 group scales) applies each group's scale.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "core/quant.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_avx512.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")

namespace vlm::ops::cpu::avx512 {
namespace {

// Per-format constants. A 64-byte block holds 32 16-bit lanes of P "pieces" of 16/P bits each;
// piece t of lane j is turned into the bf16 1 + piece/2^PB (PB = piece bits) by
// ternarylogic(shift(v), keep, 0x3F80). For 2- and 4-bit codes a piece is a code; for 8-bit codes
// the two nibbles of a byte are pieces (low nibble weighted 1, high nibble weighted 16 through x).
template <int BITS>
struct Layout {
  static constexpr int kPieceBits = BITS == 8 ? 4 : BITS;
  static constexpr int kPieces = 16 / kPieceBits;               // pieces per 16-bit lane
  static constexpr int kCodes = 512 / BITS;                     // codes per 64-byte block
  static constexpr int kCodesPerF32Lane = kCodes / 16;          // codes feeding one f32 lane
  static constexpr float kUnit = static_cast<float>(1 << kPieceBits);  // f = 1 + piece / kUnit
  // Σ_t f_t·x_t over a code's pieces = kOffset·x + q·x / kUnit  (kOffset = 1, or 17 for 8-bit).
  static constexpr float kOffset = BITS == 8 ? 17.0f : 1.0f;
};

struct Prepared {
  std::vector<uint16_t> xh, xl;  // [blocks][pieces][32] bf16
  std::vector<float> group_sum;  // [groups]
  int64_t blocks = 0;
};

// bf16 bits (low half of each 32-bit lane) of 16 floats, rounded exactly as core's f32_to_bf16:
// nearest, ties to even; NaN -> quiet NaN.
inline __m512i bf16_bits(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i top = _mm512_srli_epi32(u, 16);
  const __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(top, _mm512_set1_epi32(1)));
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(_mm512_srli_epi32(_mm512_add_epi32(u, rounding), 16), nan,
                               _mm512_or_si512(top, _mm512_set1_epi32(0x40)));
}

// 32 floats (n valid, the rest read as 0) split into x_hi = bf16(x) and x_lo = bf16(x - x_hi), each
// 32 bf16 lanes in natural order; `mul` scales x first (16 for 8-bit high nibbles, exact).
inline void split_hi_lo(const float* x, int64_t n, float mul, __m512i& hi, __m512i& lo) {
  __m256i h[2], l[2];
  for (int half = 0; half < 2; ++half) {
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(16, n - 16 * half));
    const __mmask16 m = static_cast<__mmask16>((1u << valid) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(m, x + 16 * half);
    if (mul != 1.0f) v = _mm512_mul_ps(v, _mm512_set1_ps(mul));
    const __m512i hb = bf16_bits(v);
    const __m512i lb = bf16_bits(_mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(hb, 16))));
    h[half] = _mm512_cvtepi32_epi16(hb);
    l[half] = _mm512_cvtepi32_epi16(lb);
  }
  hi = _mm512_inserti64x4(_mm512_castsi256_si512(h[0]), h[1], 1);
  lo = _mm512_inserti64x4(_mm512_castsi256_si512(l[0]), l[1], 1);
}

// x_t[j] (piece t of 16-bit lane j) multiplies the code that piece belongs to; for 8-bit codes the
// high-nibble piece carries 16·x (exact in bf16). Per 128-code block (2/4-bit: 32·P codes), the
// block's x is split into bf16 halves in natural order, then 16-bit permutes gather x_t[j] =
// x[P·j + t] (2/4-bit) or x[2j + u]·(1 or 16) (8-bit, t = 2u + high).
template <int BITS>
void prepare(const float* x, int64_t k, int group, Prepared& p) {
  using L = Layout<BITS>;
  constexpr int P = L::kPieces;
  p.blocks = (k + L::kCodes - 1) / L::kCodes;
  p.xh.resize(static_cast<size_t>(p.blocks * 32 * P));
  p.xl.resize(p.xh.size());
  alignas(64) int16_t idx_store[P][32];
  for (int t = 0; t < P; ++t)
    for (int j = 0; j < 32; ++j)
      idx_store[t][j] = static_cast<int16_t>(BITS == 8 ? (2 * j + t / 2) % 64 : (P * j + t) % 64);
  for (int64_t b = 0; b < p.blocks; ++b) {
    const float* xb = x + b * L::kCodes;
    const int64_t left = k - b * L::kCodes;
    uint16_t* oh = p.xh.data() + b * 32 * P;
    uint16_t* ol = p.xl.data() + b * 32 * P;
    if constexpr (BITS == 8) {
      // 64 codes: halves [0, 32) and [32, 64) of x and of 16·x.
      __m512i h[2][2], l[2][2];  // [scaled][half]
      for (int s = 0; s < 2; ++s)
        for (int half = 0; half < 2; ++half)
          split_hi_lo(xb + 32 * half, left - 32 * half, s ? 16.0f : 1.0f, h[s][half], l[s][half]);
      for (int t = 0; t < P; ++t) {
        const __m512i idx = _mm512_load_si512(idx_store[t]);
        const int s = t % 2;
        _mm512_storeu_si512(oh + 32 * t, _mm512_permutex2var_epi16(h[s][0], idx, h[s][1]));
        _mm512_storeu_si512(ol + 32 * t, _mm512_permutex2var_epi16(l[s][0], idx, l[s][1]));
      }
    } else {
      // 32·P codes in P vectors of 32; pair q (vectors 2q, 2q+1) feeds lanes [q·64/P, (q+1)·64/P).
      __m512i h[P], l[P];
      for (int v = 0; v < P; ++v) split_hi_lo(xb + 32 * v, left - 32 * v, 1.0f, h[v], l[v]);
      constexpr int kLanesPerPair = 64 / P;
      for (int t = 0; t < P; ++t) {
        const __m512i idx = _mm512_load_si512(idx_store[t]);
        __m512i rh = _mm512_setzero_si512(), rl = _mm512_setzero_si512();
        for (int q = 0; q < P / 2; ++q) {
          const __mmask32 lanes = static_cast<__mmask32>(((uint64_t{1} << kLanesPerPair) - 1) << (q * kLanesPerPair));
          rh = _mm512_mask_mov_epi16(rh, lanes, _mm512_permutex2var_epi16(h[2 * q], idx, h[2 * q + 1]));
          rl = _mm512_mask_mov_epi16(rl, lanes, _mm512_permutex2var_epi16(l[2 * q], idx, l[2 * q + 1]));
        }
        _mm512_storeu_si512(oh + 32 * t, rh);
        _mm512_storeu_si512(ol + 32 * t, rl);
      }
    }
  }
  p.group_sum.resize(static_cast<size_t>(k / group));
  for (int64_t g = 0; g < k / group; ++g) {
    float s = 0.0f;
    for (int j = 0; j < group; ++j) s += x[g * group + j];
    p.group_sum[g] = s;
  }
}

// Up to 16 consecutive scale/bias values starting at `p` (n valid) as f32.
inline __m512 load_group_values(const void* p, DType dt, int64_t n) {
  const __mmask16 m = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
  switch (dt) {
    case DType::kBF16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p))), 16));
    case DType::kF16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p)));
    default: return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p));
  }
}

// Piece t of every 16-bit lane as the bf16 1 + piece / 2^PB (t is a constant after unrolling, so
// the shifts are immediates).
template <int PB>
inline __m512bh piece(__m512i v, int t) {
  const int shift = PB * t - (7 - PB);  // piece bits [PB*t, PB*t+PB) -> mantissa bits [7-PB, 7)
  const __m512i keep = _mm512_set1_epi16(static_cast<int16_t>(((1 << PB) - 1) << (7 - PB)));
  const __m512i one = _mm512_set1_epi16(0x3F80);
  const __m512i s = shift < 0 ? _mm512_slli_epi16(v, static_cast<unsigned>(-shift))
                              : _mm512_srli_epi16(v, static_cast<unsigned>(shift));
  return (__m512bh)_mm512_ternarylogic_epi32(s, keep, one, 0xEA);  // (s & keep) | one
}

constexpr int64_t kPrefetchGroups = 2;

template <int BITS, int R>
void rows_dot(const QuantizedMatrix& m, int64_t r0, const Prepared& p, float* out) {
  using L = Layout<BITS>;
  constexpr int P = L::kPieces;
  const int64_t cols = m.cols, row_bytes = cols * BITS / 8;
  const int gs = m.spec.group_size;
  const int64_t groups = cols / gs;
  const DType sd = m.scales.dtype();
  const size_t ssize = dtype_size(sd);
  const __m512i lane_codes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(L::kCodesPerF32Lane));
  const __m128i log2_gs = _mm_cvtsi32_si128(__builtin_ctz(static_cast<unsigned>(gs)));

  const uint8_t* rows[R];
  const char* srow[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    rows[i] = reinterpret_cast<const uint8_t*>(m.packed.data<uint32_t>() + (r0 + i) * m.words_per_row());
    srow[i] = static_cast<const char*>(m.scales.raw()) + (r0 + i) * groups * ssize;
  }
  __m512 total[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) total[i] = _mm512_setzero_ps();
  // Sixteen consecutive group scales per row stay in a register (sv) until a block reaches past
  // them: one load per 16 groups instead of one per block.
  __m512 sv[R];
  int64_t gbase = -1;
  const int64_t ahead = kPrefetchGroups * R * m.words_per_row() * 4;
  for (int64_t b = 0; b < p.blocks; ++b) {
    const int64_t valid = std::min<int64_t>(64, row_bytes - 64 * b);
    const __mmask64 bm = valid >= 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
    const uint16_t* xh = p.xh.data() + b * 32 * P;
    const uint16_t* xl = p.xl.data() + b * 32 * P;
    const int64_t first = b * L::kCodes;
    const int64_t g_last = std::min<int64_t>(groups - 1, (first + L::kCodes - 1) / gs);
    if (gbase < 0 || g_last >= gbase + 16) {
      gbase = first / gs;
      const int64_t ng = std::min<int64_t>(16, groups - gbase);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) sv[i] = load_group_values(srow[i] + gbase * ssize, sd, ng);
    }
    // f32 lane i covers codes first + kCodesPerF32Lane*i ...: its group relative to gbase.
    const __m512i lane_group = _mm512_srl_epi32(
        _mm512_add_epi32(lane_codes, _mm512_set1_epi32(static_cast<int>(first - gbase * gs))), log2_gs);
    __m512bh h[P], l[P];
    for (int t = 0; t < P; ++t) {
      h[t] = (__m512bh)_mm512_loadu_si512(xh + 32 * t);
      l[t] = (__m512bh)_mm512_loadu_si512(xl + 32 * t);
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      // The same block kPrefetchGroups groups of R rows on (see simd_linear_avx512.cpp: short rows
      // are too short for the hardware prefetcher to train on).
      _mm_prefetch(reinterpret_cast<const char*>(rows[i] + 64 * b + ahead), _MM_HINT_T0);
      const __m512i v = _mm512_maskz_loadu_epi8(bm, rows[i] + 64 * b);
      __m512 a = _mm512_setzero_ps(), c = _mm512_setzero_ps(), d = _mm512_setzero_ps(), e = _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int t = 0; t < P; t += 2) {  // two independent chains per half (P is even)
        const __m512bh f0 = piece<L::kPieceBits>(v, t), f1 = piece<L::kPieceBits>(v, t + 1);
        a = _mm512_dpbf16_ps(a, f0, h[t]);
        d = _mm512_dpbf16_ps(d, f0, l[t]);
        c = _mm512_dpbf16_ps(c, f1, h[t + 1]);
        e = _mm512_dpbf16_ps(e, f1, l[t + 1]);
      }
      const __m512 acc = _mm512_add_ps(_mm512_add_ps(a, c), _mm512_add_ps(d, e));
      total[i] = _mm512_fmadd_ps(acc, _mm512_permutexvar_ps(lane_group, sv[i]), total[i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    // Σ_g (b_g − kUnit·kOffset·s_g)·X_g, sixteen groups at a time.
    const char* brow = static_cast<const char*>(m.biases.raw()) + (r0 + i) * groups * ssize;
    __m512 bt = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g += 16) {
      const int64_t n = std::min<int64_t>(16, groups - g);
      const __mmask16 mk = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
      __m512 s = load_group_values(srow[i] + g * ssize, sd, n), bb = load_group_values(brow + g * ssize, sd, n);
      __m512 xs = _mm512_maskz_loadu_ps(mk, p.group_sum.data() + g);
      bt = _mm512_fmadd_ps(_mm512_fnmadd_ps(_mm512_set1_ps(L::kUnit * L::kOffset), s, bb), xs, bt);
    }
    out[i] = L::kUnit * _mm512_reduce_add_ps(total[i]) + _mm512_reduce_add_ps(bt);
  }
}

// One row against NT tokens (2 <= n < 8 decode, e.g. a short prompt suffix after a prompt-cache hit):
// each block of codes is loaded and turned into bf16 pieces once and dotted against every token, so
// the row is read once instead of NT times.
template <int BITS, int NT>
void row_dot_tokens(const QuantizedMatrix& m, int64_t r, const Prepared* const* p, float* out) {
  using L = Layout<BITS>;
  constexpr int P = L::kPieces;
  const int64_t cols = m.cols, row_bytes = cols * BITS / 8;
  const int gs = m.spec.group_size;
  const int64_t groups = cols / gs;
  const DType sd = m.scales.dtype();
  const size_t ssize = dtype_size(sd);
  const __m512i lane_codes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(L::kCodesPerF32Lane));
  const __m128i log2_gs = _mm_cvtsi32_si128(__builtin_ctz(static_cast<unsigned>(gs)));
  const uint8_t* row = reinterpret_cast<const uint8_t*>(m.packed.data<uint32_t>() + r * m.words_per_row());
  const char* srow = static_cast<const char*>(m.scales.raw()) + r * groups * ssize;
  __m512 total[NT];
#pragma GCC unroll 4
  for (int j = 0; j < NT; ++j) total[j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < p[0]->blocks; ++b) {
    const int64_t valid = std::min<int64_t>(64, row_bytes - 64 * b);
    const __mmask64 bm = valid >= 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
    const int64_t first = b * L::kCodes, g0 = first / gs, ng = std::min<int64_t>(16, groups - g0);
    const __m512i lane_group =
        _mm512_srl_epi32(_mm512_add_epi32(lane_codes, _mm512_set1_epi32(static_cast<int>(first % gs))), log2_gs);
    const __m512i v = _mm512_maskz_loadu_epi8(bm, row + 64 * b);
    __m512 hi[NT], lo[NT];
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j) hi[j] = lo[j] = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int t = 0; t < P; ++t) {
      const __m512bh f = piece<L::kPieceBits>(v, t);
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) {
        const uint16_t* xh = p[j]->xh.data() + (b * P + t) * 32;
        const uint16_t* xl = p[j]->xl.data() + (b * P + t) * 32;
        hi[j] = _mm512_dpbf16_ps(hi[j], f, (__m512bh)_mm512_loadu_si512(xh));
        lo[j] = _mm512_dpbf16_ps(lo[j], f, (__m512bh)_mm512_loadu_si512(xl));
      }
    }
    const __m512 s = _mm512_permutexvar_ps(lane_group, load_group_values(srow + g0 * ssize, sd, ng));
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j) total[j] = _mm512_fmadd_ps(_mm512_add_ps(hi[j], lo[j]), s, total[j]);
  }
  const char* brow = static_cast<const char*>(m.biases.raw()) + r * groups * ssize;
#pragma GCC unroll 4
  for (int j = 0; j < NT; ++j) {
    __m512 bt = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g += 16) {
      const int64_t n = std::min<int64_t>(16, groups - g);
      const __mmask16 mk = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
      __m512 sv = load_group_values(srow + g * ssize, sd, n), bb = load_group_values(brow + g * ssize, sd, n);
      __m512 xs = _mm512_maskz_loadu_ps(mk, p[j]->group_sum.data() + g);
      bt = _mm512_fmadd_ps(_mm512_fnmadd_ps(_mm512_set1_ps(L::kUnit * L::kOffset), sv, bb), xs, bt);
    }
    out[j] = L::kUnit * _mm512_reduce_add_ps(total[j]) + _mm512_reduce_add_ps(bt);
  }
}

template <int BITS>
void gemv(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  const QuantizedMatrix& m = w.quant;
  const int64_t rows = m.rows, k = m.cols;
  constexpr int R = 4;
  if (n == 1) {
    Prepared p;
    prepare<BITS>(x, k, m.spec.group_size, p);
    parallel_for((rows + R - 1) / R, R * k / 2, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * R;
        float out[R];
        if (r + R <= rows) {
          rows_dot<BITS, R>(m, r, p, out);
          for (int i = 0; i < R; ++i) y[r + i] = out[i] + (bias ? bias[r + i] : 0.0f);
        } else {
          for (int64_t rr = r; rr < rows; ++rr) {
            rows_dot<BITS, 1>(m, rr, p, out);
            y[rr] = out[0] + (bias ? bias[rr] : 0.0f);
          }
        }
      }
    });
    return;
  }
  // Several tokens: groups of up to four share each pass over the rows.
  constexpr int kMaxNt = 4;
  std::vector<Prepared> prep(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) prepare<BITS>(x + t * k, k, m.spec.group_size, prep[t]);
  for (int64_t t0 = 0; t0 < n; t0 += kMaxNt) {
    const int nt = static_cast<int>(std::min<int64_t>(kMaxNt, n - t0));
    const Prepared* ps[kMaxNt];
    for (int j = 0; j < nt; ++j) ps[j] = &prep[t0 + j];
    parallel_for(rows, k * nt / 4, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float out[kMaxNt];
        switch (nt) {
          case 1: row_dot_tokens<BITS, 1>(m, r, ps, out); break;
          case 2: row_dot_tokens<BITS, 2>(m, r, ps, out); break;
          case 3: row_dot_tokens<BITS, 3>(m, r, ps, out); break;
          default: row_dot_tokens<BITS, 4>(m, r, ps, out); break;
        }
        for (int j = 0; j < nt; ++j) y[(t0 + j) * rows + r] = out[j] + (bias ? bias[r] : 0.0f);
      }
    });
  }
}

}  // namespace

bool quant_gemv_bf16(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  switch (w.quant.spec.bits) {
    case 2: gemv<2>(x, n, w, bias, y); return true;
    case 4: gemv<4>(x, n, w, bias, y); return true;
    case 8: gemv<8>(x, n, w, bias, y); return true;
    default: return false;
  }
}

}  // namespace vlm::ops::cpu::avx512

#pragma GCC pop_options
