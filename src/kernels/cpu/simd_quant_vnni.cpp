// MLX-quantized GEMV (decode) on AVX512-VNNI: codes times 16-bit activations with vpdpwssd. 2/4/8-bit
// codes split into pieces of 16-bit lanes (below); 3/5/6-bit codes, which straddle bytes, are gathered
// with AVX512-VBMI (see "3/5/6-bit").
//
// Why: the bf16-dot kernels this replaced kept activations exact to ~16 bits by dotting each code
// against two bf16 halves of x, which cost two vdpbf16ps per 32 codes plus the 1 + q/16
// construction; at ~22 vector ops per 64-byte block and row, a core decoded 4-bit weights more
// slowly than its share of the DRAM bandwidth arrives. Here x is quantized once per token to
// int16 with one scale per 32 activations (xs = max|x| / 32767 over the 32, round to nearest), codes stay
// integers (one shift + one and per piece), and vpdpwssd multiplies-adds 32 16-bit pairs into 16
// int32 lanes exactly: ~15 ops per block and row.
//
// Arithmetic, per row and group g: Σ_c w_c·x_c = s_g·Σ_c q_c·x_c + b_g·X_g with X_g = Σ_c x_c (exact
// f32, per token) and, per 32-activation chunk h, Σ_c q_c·x_c ≈ xs_h·Σ_c q_c·xq_c (integer, exact).
// The only rounding is xq: |x − xs_h·xq| <= xs_h / 2 = max|x_h| / 65534, i.e. 16-bit fixed point per
// 32 activations — about the accuracy of f16 activations (NMSE ~1e-8 on inputs with 20x outliers,
// ~1e-9 without; bf16 activations, as MLX computes bf16 models, give ~1e-6). The conformance test
// bounds it against the f32 reference.
//
// Layout: a 64-byte block of a row holds 32 16-bit lanes of P = 16 / BITS codes each (code P·j + t
// is piece t of lane j, MLX packs LSB first). x is pre-arranged per block into P vectors
// xq_t[j] = xq[P·j + t], so piece t of every lane meets its activation without shuffles. Int32 lane
// i of vpdpwssd sums 16-bit lanes 2i and 2i+1, i.e. codes 2P·i .. 2P·i + 2P − 1: all in one group and
// one 32-activation chunk (2P <= 16), so per block one per-lane vector of s_g·xs_h converts the sums.
// Overflow: a lane adds 2P products of |q| <= 255 and |xq| <= 32767 per block (< 2^25).
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
struct Layout16 {
  static constexpr int kPieces = 16 / BITS;              // codes per 16-bit lane
  static constexpr int kCodes = 32 * kPieces;             // codes per 64-byte block
  static constexpr int kCodesPerLane = 2 * kPieces;       // codes feeding one int32 lane
};

constexpr int kXChunk = 32;  // activations per x scale

// Per token: xq in piece layout [blocks][P][32] int16, the x scale per 32 activations, Σx per group.
struct PreparedQ {
  std::vector<int16_t> xq;
  std::vector<float> xscale;     // [k / 32 + 16] (padded so a 16-wide load never reads past it)
  std::vector<float> group_sum;  // [groups]
  int64_t blocks = 0;
};

// PIECES: the piece layout of the 2/4/8-bit kernels (PIECES = 16 / bits codes per 16-bit lane), or 0
// for natural order (the 3/5/6-bit kernels gather codes into natural order instead).
template <int PIECES>
void prepare_q(const float* x, int64_t k, int group, PreparedQ& p) {
  constexpr int P = PIECES > 0 ? PIECES : 1;
  constexpr int kCodes = 32 * P;
  const int64_t groups = k / group;
  p.blocks = (k + kCodes - 1) / kCodes;
  const int64_t chunks = k / kXChunk;  // k is a multiple of the group size, itself of 32
  p.xscale.assign(static_cast<size_t>(chunks + 16), 0.0f);
  p.group_sum.assign(static_cast<size_t>(groups), 0.0f);
  // Natural order first (the 3/5/6-bit kernels read it as is); zero past k up to the last block's end.
  thread_local std::vector<int16_t> natural_store;
  std::vector<int16_t>& natural = PIECES == 0 ? p.xq : natural_store;
  natural.assign(static_cast<size_t>(p.blocks * kCodes), 0);
  for (int64_t h = 0; h < chunks; ++h) {
    const float* xh = x + h * kXChunk;
    const __m512 v0 = _mm512_loadu_ps(xh), v1 = _mm512_loadu_ps(xh + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    p.group_sum[static_cast<size_t>(h * kXChunk / group)] += _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
    // amax == 0 (or not finite): scale 0 and codes 0; a NaN/inf activation then yields NaN through
    // the scale (and the exact Σx term) rather than a silently wrong finite value.
    const float scale = (amax > 0.0f && std::isfinite(amax)) ? amax / 32767.0f : 0.0f;
    p.xscale[static_cast<size_t>(h)] = std::isfinite(amax) ? scale : amax;
    const __m512 inv = _mm512_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
    // Round to nearest even; |x · inv| <= 32767 · (1 + 2^-23), so the conversion cannot leave int16.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(natural.data() + h * kXChunk),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v0, inv))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(natural.data() + h * kXChunk + 16),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v1, inv))));
  }
  if constexpr (PIECES > 0) {
    // Piece layout: xq_t[j] = natural[P·j + t] within each block of 32·P values (P vectors of 32). Output
    // lane j takes its value from source vectors 2q, 2q + 1 (values 64q .. 64q + 63) where
    // 64q <= P·j < 64(q + 1): one two-source permute per pair, merged under that pair's lanes.
    p.xq.resize(static_cast<size_t>(p.blocks * kCodes));
    alignas(64) int16_t idx[P][32];
    __mmask32 lanes[P > 1 ? P / 2 : 1];
    for (int t = 0; t < P; ++t)
      for (int j = 0; j < 32; ++j) idx[t][j] = static_cast<int16_t>((P * j + t) & 63);
    for (int q = 0; q < (P > 1 ? P / 2 : 1); ++q) {
      uint32_t m = 0;
      for (int j = 0; j < 32; ++j)
        if (P * j / 64 == q) m |= 1u << j;
      lanes[q] = m;
    }
    for (int64_t b = 0; b < p.blocks; ++b) {
      const int16_t* src = natural.data() + b * kCodes;
      int16_t* dst = p.xq.data() + b * kCodes;
      if constexpr (P == 1) {
        _mm512_storeu_si512(dst, _mm512_loadu_si512(src));
      } else {
#pragma GCC unroll 8
        for (int t = 0; t < P; ++t) {
          const __m512i ix = _mm512_load_si512(idx[t]);
          __m512i r = _mm512_setzero_si512();
#pragma GCC unroll 4
          for (int q = 0; q < P / 2; ++q)
            r = _mm512_mask_mov_epi16(r, lanes[q],
                                      _mm512_permutex2var_epi16(_mm512_loadu_si512(src + 64 * q), ix,
                                                                _mm512_loadu_si512(src + 64 * q + 32)));
          _mm512_storeu_si512(dst + 32 * t, r);
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
    case DType::kF16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p)));
    default: return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p));
  }
}

// Piece t (a code) of every 16-bit lane as an int16 (t is a constant after unrolling).
template <int BITS>
inline __m512i piece(__m512i v, int t) {
  if (BITS * (t + 1) == 16) return _mm512_srli_epi16(v, static_cast<unsigned>(BITS * t));
  const __m512i mask = _mm512_set1_epi16(static_cast<int16_t>((1 << BITS) - 1));
  if (t == 0) return _mm512_and_si512(v, mask);
  return _mm512_and_si512(_mm512_srli_epi16(v, static_cast<unsigned>(BITS * t)), mask);
}

// Software prefetch distance in groups of R rows (see simd_linear_avx512.cpp).
constexpr int64_t kPrefetchGroups = 2;

// out[i] = Σ_c w[r0 + i][c]·x[c] for NT tokens (x prepared per token) and R consecutive rows; each
// block of codes is loaded and split into pieces once for all NT tokens.
template <int BITS, int R, int NT>
void rows_dot(const QuantizedMatrix& m, int64_t r0, const PreparedQ* const* p, float* out /* [NT][R] */) {
  using L = Layout16<BITS>;
  constexpr int P = L::kPieces;
  const int64_t cols = m.cols, row_bytes = cols * BITS / 8;
  const int gs = m.spec.group_size;
  const int64_t groups = cols / gs;
  const DType sd = m.scales.dtype();
  const size_t ssize = dtype_size(sd);
  const __m512i lane_codes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(L::kCodesPerLane));
  const __m128i log2_gs = _mm_cvtsi32_si128(__builtin_ctz(static_cast<unsigned>(gs)));
  const int64_t ahead = kPrefetchGroups * R * m.words_per_row() * 4;

  const uint8_t* rows[R];
  const char* srow[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    rows[i] = reinterpret_cast<const uint8_t*>(m.packed.data<uint32_t>() + (r0 + i) * m.words_per_row());
    srow[i] = static_cast<const char*>(m.scales.raw()) + (r0 + i) * groups * ssize;
  }
  __m512 total[NT][R];
#pragma GCC unroll 4
  for (int j = 0; j < NT; ++j)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) total[j][i] = _mm512_setzero_ps();
  // Sixteen consecutive group scales per row stay in registers until a block reaches past them.
  __m512 sv[R];
  const __m512i lane_chunk = _mm512_srli_epi32(lane_codes, 5);  // lane -> its 32-activation chunk in the block
  int64_t gbase = -1;
  for (int64_t b = 0; b < p[0]->blocks; ++b) {
    const int64_t valid = std::min<int64_t>(64, row_bytes - 64 * b);
    const __mmask64 bm = valid >= 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
    const int64_t first = b * L::kCodes;
    const int64_t g_last = std::min<int64_t>(groups - 1, (first + L::kCodes - 1) / gs);
    if (gbase < 0 || g_last >= gbase + 16) {
      gbase = first / gs;
      const int64_t ng = std::min<int64_t>(16, groups - gbase);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) sv[i] = load_values(srow[i] + gbase * ssize, sd, ng);
    }
    // Int32 lane i covers codes first + kCodesPerLane·i ...: its group relative to gbase.
    const __m512i lane_group = _mm512_srl_epi32(
        _mm512_add_epi32(lane_codes, _mm512_set1_epi32(static_cast<int>(first - gbase * gs))), log2_gs);
    __m512 xl[NT];
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j)
      xl[j] = _mm512_permutexvar_ps(lane_chunk, _mm512_loadu_ps(p[j]->xscale.data() + first / kXChunk));
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(rows[i] + 64 * b + ahead), _MM_HINT_T0);
      const __m512i v = _mm512_maskz_loadu_epi8(bm, rows[i] + 64 * b);
      const __m512 s = _mm512_permutexvar_ps(lane_group, sv[i]);
      __m512i acc[NT][2];
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int t = 0; t < P; ++t) {
        const __m512i f = piece<BITS>(v, t);
#pragma GCC unroll 4
        for (int j = 0; j < NT; ++j)
          acc[j][t & 1] = _mm512_dpwssd_epi32(
              acc[j][t & 1], f, _mm512_loadu_si512(p[j]->xq.data() + b * L::kCodes + 32 * t));
      }
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j)
        total[j][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[j][0], acc[j][1])),
                                      _mm512_mul_ps(s, xl[j]), total[j][i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    // Σ_g b_g·X_g, sixteen groups at a time (exact f32 sums of x).
    const char* brow = static_cast<const char*>(m.biases.raw()) + (r0 + i) * groups * ssize;
    __m512 bt[NT];
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j) bt[j] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g += 16) {
      const int64_t n = std::min<int64_t>(16, groups - g);
      const __mmask16 mk = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
      const __m512 bb = load_values(brow + g * ssize, sd, n);
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) bt[j] = _mm512_fmadd_ps(bb, _mm512_maskz_loadu_ps(mk, p[j]->group_sum.data() + g), bt[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j) out[j * R + i] = _mm512_reduce_add_ps(total[j][i]) + _mm512_reduce_add_ps(bt[j]);
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

inline float scale_at(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

template <int BITS, int R, int NT>
__attribute__((target("avx512vbmi"))) void stream_rows_dot(const QuantizedMatrix& m, int64_t r0,
                                                            const PreparedQ* const* p, float* out /* [NT][R] */) {
  constexpr int kChunkBytes = 4 * BITS;
  static const StreamGather<BITS> gather;
  const int64_t cols = m.cols, chunks = cols / 32;
  const int gs = m.spec.group_size;
  const int64_t groups = cols / gs;
  const DType sd = m.scales.dtype();
  const size_t ssize = dtype_size(sd);
  const __mmask64 load_mask = (__mmask64{1} << kChunkBytes) - 1;
  const __m512i code_mask = _mm512_set1_epi16(static_cast<int16_t>((1 << BITS) - 1));
  const int64_t ahead = kPrefetchGroups * R * m.words_per_row() * 4;
  const uint8_t* rows[R];
  const char* srow[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    rows[i] = reinterpret_cast<const uint8_t*>(m.packed.data<uint32_t>() + (r0 + i) * m.words_per_row());
    srow[i] = static_cast<const char*>(m.scales.raw()) + (r0 + i) * groups * ssize;
  }
  __m512 total[NT][R];
#pragma GCC unroll 4
  for (int j = 0; j < NT; ++j)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) total[j][i] = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t g = c * 32 / gs;
    __m512i xq[NT];
    float xs[NT];
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j) {
      xq[j] = _mm512_loadu_si512(p[j]->xq.data() + 32 * c);
      xs[j] = p[j]->xscale[static_cast<size_t>(c)];
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const uint8_t* src = rows[i] + c * kChunkBytes;
      if ((c * kChunkBytes & 63) < kChunkBytes) _mm_prefetch(reinterpret_cast<const char*>(src + ahead), _MM_HINT_T0);
      const __m512i v = _mm512_maskz_loadu_epi8(load_mask, src);
      const __m512i codes =
          _mm512_and_si512(_mm512_srlv_epi16(_mm512_permutexvar_epi8(gather.index, v), gather.shift), code_mask);
      const float s = scale_at(srow[i], sd, g);
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) {
        const __m512i acc = _mm512_dpwssd_epi32(_mm512_setzero_si512(), codes, xq[j]);
        total[j][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(s * xs[j]), total[j][i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    const char* brow = static_cast<const char*>(m.biases.raw()) + (r0 + i) * groups * ssize;
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j) {
      float bt = 0.0f;
      for (int64_t g = 0; g < groups; ++g) bt += scale_at(brow, sd, g) * p[j]->group_sum[static_cast<size_t>(g)];
      out[j * R + i] = _mm512_reduce_add_ps(total[j][i]) + bt;
    }
  }
}

// ---- drivers ---------------------------------------------------------------------------------------

template <int BITS>
constexpr bool kStream = BITS == 3 || BITS == 5 || BITS == 6;

// Rows r .. r + R (R rows, or fewer at the end: one at a time) for NT tokens.
template <int BITS, int NT>
void row_block(const QuantizedMatrix& m, int64_t r, const PreparedQ* const* p, const float* bias, float* y,
               int64_t t0) {
  constexpr int R = NT == 1 ? 4 : 2;  // fewer rows per pass when several tokens share the codes
  auto dot = [&](auto rows_tag, int64_t r0, float* out) {
    constexpr int RR = decltype(rows_tag)::value;
    if constexpr (kStream<BITS>)
      stream_rows_dot<BITS, RR, NT>(m, r0, p, out);
    else
      rows_dot<BITS, RR, NT>(m, r0, p, out);
  };
  const int64_t rows = m.rows;
  float out[NT * R];
  if (r + R <= rows) {
    dot(std::integral_constant<int, R>{}, r, out);
    for (int j = 0; j < NT; ++j)
      for (int i = 0; i < R; ++i) y[(t0 + j) * rows + r + i] = out[j * R + i] + (bias ? bias[r + i] : 0.0f);
  } else {
    for (int64_t rr = r; rr < rows; ++rr) {
      dot(std::integral_constant<int, 1>{}, rr, out);
      for (int j = 0; j < NT; ++j) y[(t0 + j) * rows + rr] = out[j] + (bias ? bias[rr] : 0.0f);
    }
  }
}

// One output of a GEMV group: weight, f32 bias or null, output, first row block in the group's numbering.
struct QuantOut {
  const QuantizedMatrix* m;
  const float* bias;
  float* y;
  int64_t block0;
};

template <int BITS>
void gemv(const float* x, int64_t n, const Weight* const* w, const float* const* bias, float* const* y, int count) {
  constexpr int kMaxGroup = 8;
  const int64_t k = w[0]->quant.cols;
  constexpr int kPieces = kStream<BITS> ? 0 : Layout16<BITS>::kPieces;
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
    const int R = nt == 1 ? 4 : 2;
    // Every output's row blocks in one numbering, so the whole group is one pool round.
    QuantOut outs[kMaxGroup];
    int64_t blocks = 0;
    for (int o = 0; o < count; ++o) {
      outs[o] = QuantOut{&w[o]->quant, bias[o], y[o], blocks};
      blocks += (w[o]->quant.rows + R - 1) / R;
    }
    parallel_for(blocks, R * k * nt / 2, [&](int64_t b0, int64_t b1) {
      int o = 0;
      for (int64_t b = b0; b < b1; ++b) {
        while (b >= (o + 1 < count ? outs[o + 1].block0 : blocks)) ++o;
        const QuantizedMatrix& m = *outs[o].m;
        const int64_t r = (b - outs[o].block0) * R;
        switch (nt) {
          case 1: row_block<BITS, 1>(m, r, ps, outs[o].bias, outs[o].y, t0); break;
          case 2: row_block<BITS, 2>(m, r, ps, outs[o].bias, outs[o].y, t0); break;
          case 3: row_block<BITS, 3>(m, r, ps, outs[o].bias, outs[o].y, t0); break;
          default: row_block<BITS, 4>(m, r, ps, outs[o].bias, outs[o].y, t0); break;
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
    case 2: gemv<2>(x, n, w, bias, y, count); return true;
    case 4: gemv<4>(x, n, w, bias, y, count); return true;
    case 8: gemv<8>(x, n, w, bias, y, count); return true;
    default: break;
  }
  if (!has_vbmi()) return false;
  switch (w[0]->quant.spec.bits) {
    case 3: gemv<3>(x, n, w, bias, y, count); return true;
    case 5: gemv<5>(x, n, w, bias, y, count); return true;
    case 6: gemv<6>(x, n, w, bias, y, count); return true;
    default: return false;
  }
}

}  // namespace vlm::ops::cpu::avx512

#pragma GCC pop_options
