// AVX2 linear: the same two strategies as simd_linear_avx512.cpp at 8 lanes.
// Decode: rows go four per pass (sharing x), each pass prefetching the region two passes ahead. Quantized
// rows (columns a multiple of 64, groups of 32/64/128) dot codes with 16-bit fixed-point activations in
// integer instructions (below, "4-bit decode" and "2/3/5/6/8-bit decode"); dense rows, and quantized rows
// outside those shapes, decode each 32-element chunk into four __m256 (bf16, 4-bit and 2-bit chunks come out
// as (even, odd) element pairs per 16 elements, matched by a per-16 permuted copy of x) and FMA in f32.
// Quantized rows accumulate Σq·x per group, apply the scale once, and add b·Σx. Prefill: 16-row panels built
// in registers (8 rows x 32 inputs decoded, transposed 8x8) and swept by a 6-token x 16-row microkernel
// (12 ymm accumulators).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/quant.h"
#include "kernels/cpu/avx2_common.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/weight_format.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace vlm::ops::cpu::avx2 {
namespace {

constexpr int64_t kGemmMinTokens = 8;
constexpr int64_t kKc = 256;
constexpr int kNr = 16;
constexpr int kMr = 6;

// Permute/shift tables for a 32-element chunk of a B-bit stream (B dwords): lane i of quarter q
// starts at bit (8q + i) * B; only the chunk's B dwords are loaded (masked: never past the row).
template <int B>
struct StreamIdx8 {
  __m256i word[4], word_next[4], shift[4], shift_next[4], load_mask;
  StreamIdx8() {
    alignas(32) int32_t w[8], wn[8], s[8], sn[8], lm[8];
    for (int q = 0; q < 4; ++q) {
      for (int i = 0; i < 8; ++i) {
        int bit = (8 * q + i) * B;
        w[i] = bit / 32;
        wn[i] = std::min(bit / 32 + 1, 7);
        s[i] = bit % 32;
        sn[i] = 32 - bit % 32;  // shifting by 32 gives 0: no spill
      }
      word[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      word_next[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wn));
      shift[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(s));
      shift_next[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sn));
    }
    for (int i = 0; i < 8; ++i) lm[i] = i < B ? -1 : 0;
    load_mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(lm));
  }
};

// Chunk c (32 elements) of a row as four vectors v[0..3]: for paired formats v[2h], v[2h+1] are the
// even / odd elements of the h-th 16; otherwise elements 8i..8i+7 in v[i].
template <Fmt F>
inline void decode_chunk(const void* row, int64_t c, __m256 v[4]) {
  if constexpr (F == Fmt::kF32) {
    const float* p = static_cast<const float*>(row) + 32 * c;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(p + 8 * i);
  } else if constexpr (F == Fmt::kF16) {
    const uint16_t* p = static_cast<const uint16_t*>(row) + 32 * c;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) v[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8 * i)));
  } else if constexpr (F == Fmt::kBF16) {
    const uint16_t* p = static_cast<const uint16_t*>(row) + 32 * c;
#pragma GCC unroll 4
    for (int h = 0; h < 2; ++h) {
      __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 * h));
      v[2 * h] = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
      v[2 * h + 1] = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
    }
  } else if constexpr (F == Fmt::kQ4) {
    const uint8_t* p = static_cast<const uint8_t*>(row) + 16 * c;
#pragma GCC unroll 4
    for (int h = 0; h < 2; ++h) {
      __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * h)));
      v[2 * h] = _mm256_cvtepi32_ps(_mm256_and_si256(w, _mm256_set1_epi32(15)));
      v[2 * h + 1] = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 4));
    }
  } else if constexpr (F == Fmt::kQ2) {
    const uint8_t* p = static_cast<const uint8_t*>(row) + 8 * c;
#pragma GCC unroll 4
    for (int h = 0; h < 2; ++h) {
      __m128i b4 = _mm_loadu_si32(p + 4 * h);
      __m256i w = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b4, b4));  // lane l: byte l/2
      w = _mm256_srlv_epi32(w, _mm256_set_epi32(4, 0, 4, 0, 4, 0, 4, 0));
      v[2 * h] = _mm256_cvtepi32_ps(_mm256_and_si256(w, _mm256_set1_epi32(3)));
      v[2 * h + 1] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(w, 2), _mm256_set1_epi32(3)));
    }
  } else if constexpr (F == Fmt::kQ8) {
    const uint8_t* p = static_cast<const uint8_t*>(row) + 32 * c;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
      v[i] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * i))));
  } else {
    // 3/5/6-bit stream: the chunk is B dwords; lane i of quarter q starts at bit (8q + i) * B.
    constexpr int B = bits_of(F);
    static const StreamIdx8<B> idx;
    const uint32_t* p = static_cast<const uint32_t*>(row) + B * c;
    __m256i words = _mm256_maskload_epi32(reinterpret_cast<const int*>(p), idx.load_mask);
    const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      __m256i lo = _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(words, idx.word[q]), idx.shift[q]);
      __m256i hi = _mm256_sllv_epi32(_mm256_permutevar8x32_epi32(words, idx.word_next[q]), idx.shift_next[q]);
      v[q] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_or_si256(lo, hi), mask));
    }
  }
}

// x permuted per 16 elements into (even 8, odd 8) for paired formats; Σx per group.
void prepare_x(const float* x, int64_t k, Fmt f, int group, std::vector<float>& perm, std::vector<float>& gsum) {
  if (is_paired(f)) {
    perm.assign(x, x + k);
    for (int64_t c = 0; c + 16 <= k / 32 * 32; c += 16)
      for (int l = 0; l < 8; ++l) {
        perm[c + l] = x[c + 2 * l];
        perm[c + 8 + l] = x[c + 2 * l + 1];
      }
  }
  if (is_quant(f)) {
    gsum.assign(static_cast<size_t>(k / group), 0.0f);
    for (int64_t g = 0; g < k / group; ++g)
      for (int64_t c = g * group; c < (g + 1) * group; ++c) gsum[g] += x[c];
  }
}

// One quantized row (formats without the integer kernel): Σq·x per group in f32, the scale once per group,
// plus b·Σx. (Dense rows go through dense_rows.)
template <Fmt F>
float dot_row(const Weight& w, int64_t r, const float* xv, const float* gsum) {
  static_assert(is_quant(F));
  const QuantizedMatrix& m = w.quant;
  const void* row = row_ptr(w, r);
  const int64_t gs = m.spec.group_size, groups = w.cols() / gs;
  const void *scales = m.scales.raw(), *biases = m.biases.raw();
  const DType sd = m.scales.dtype(), bd = m.biases.dtype();
  __m256 acc = _mm256_setzero_ps();
  float tail = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t c = g * gs / 32; c < (g + 1) * gs / 32; ++c) {
      __m256 v[4];
      decode_chunk<F>(row, c, v);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) a[i] = _mm256_fmadd_ps(v[i], _mm256_loadu_ps(xv + 32 * c + 8 * i), a[i]);
    }
    const int64_t gi = r * groups + g;
    float s = load_f32(scales, sd, gi), b = load_f32(biases, bd, gi);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
                          acc);
    tail += b * gsum[g];
  }
  return hsum(acc) + tail;
}

// Rows [a, e) in passes of four, then one at a time: fn(std::integral_constant<int, R>{}, r) per pass.
template <typename Fn>
inline void in_fours(int64_t a, int64_t e, Fn&& fn) {
  int64_t r = a;
  for (; r + 4 <= e; r += 4) fn(std::integral_constant<int, 4>{}, r);
  for (; r < e; ++r) fn(std::integral_constant<int, 1>{}, r);
}

// A dense matrix's base, row bytes and element size, looked up once per pool chunk for dense_rows (looked
// up per 4-row pass, the out-of-line Tensor::raw, dim and dtype_size were ~2.5 % of a SmolLM2 bf16
// decode's samples).
struct DenseView {
  const char* base;
  int64_t k, elem, row_bytes;
  explicit DenseView(const Weight& w)
      : base(static_cast<const char*>(w.dense.raw())),
        k(w.cols()),
        elem(dtype_size(w.dense.dtype())),
        row_bytes(k * elem) {}
};

// Dense rows [r0, r0 + R) against one token: the dot_row arithmetic with R rows per pass sharing each
// chunk's x loads, and the region prefetch of the 4-bit kernel below (rows are contiguous; R interleaved
// row streams defeat the hardware prefetcher), so a pass asks for the bytes two passes ahead.
template <Fmt F, int R>
void dense_rows(const DenseView& w, int64_t r0, const float* x, const float* xv, const float* bias, float* y) {
  const int64_t k = w.k, chunks = k / 32;
  const int64_t row_bytes = w.row_bytes;
  const void* rows[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) rows[r] = w.base + (r0 + r) * row_bytes;
  const char* pf = static_cast<const char*>(rows[0]) + 2 * R * row_bytes;
  const int64_t chunk_bytes = 32 * w.elem;
  __m256 acc[R][2];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    if constexpr (R > 1)
      for (int64_t l = 0; l < R * chunk_bytes; l += 64) _mm_prefetch(pf + R * chunk_bytes * c + l, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __m256 v[4];
      decode_chunk<F>(rows[r], c, v);
      acc[r][0] = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(xv + 32 * c), acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xv + 32 * c + 8), acc[r][1]);
      acc[r][0] = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xv + 32 * c + 16), acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xv + 32 * c + 24), acc[r][1]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    float t = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
    for (int64_t j = chunks * 32; j < k; ++j) t += scalar_at(rows[r], F, j) * x[j];
    y[r] = t + (bias ? bias[r] : 0.0f);
  }
}

// One output of a decode GEMV group: weight, f32 bias or null, output, first row in the group's numbering.
struct GemvOut {
  const Weight* w;
  const float* bias;
  float* y;
  int64_t row0;
};

// The group's members number their rows in one range [0, total); fn(o, a, e) for each member o with rows
// [a, e) (its own numbering) inside the pool chunk [r0, r1).
template <typename Fn>
inline void member_ranges(const GemvOut* outs, int count, int64_t total, int64_t r0, int64_t r1, Fn&& fn) {
  for (int o = 0; o < count; ++o) {
    const int64_t o_end = o + 1 < count ? outs[o + 1].row0 : total;
    const int64_t rb = std::max(r0, outs[o].row0), re = std::min(r1, o_end);
    if (rb < re) fn(o, rb - outs[o].row0, re - outs[o].row0);
  }
}

// ---- 4-bit decode: integer dot products ---------------------------------------------------------------
// The f32 form above turns every code into a float (widen, convert, FMA: ~18 instructions per 16 bytes);
// here codes meet 16-bit fixed-point activations in vpmaddubsw (u8 x s8 pairs into i16) and vpmaddwd
// (i16 pairs into i32), ~17 instructions per 32 bytes, as the AVX-512 VNNI kernel does
// (simd_quant_vnni.cpp, which derives the arithmetic). Per token x is rounded once per 64 activations:
// xs = max|x| / 32639, xq = round(x / xs) = 256·xh + xl with xl the low byte read as signed and both
// bytes in [-128, 127] (hence 32639, not 32767), laid out per 64-code block as xh of the even and the odd
// codes, then xl of the same: MLX packs code 2j in the low nibble of byte j, so the low nibbles of 32
// bytes meet the even-code vector and the high nibbles the odd one, with no shuffles. Per block and row:
// i32 lane i = Σ codes 8i..8i+7 times xq (exact: |pair| <= 2·15·128 fits i16, the hi/lo sums fit too),
// then one convert and one FMA by s_g·xs (lanes 0-3 and 4-7 are the block's two halves, which matters
// only at group size 32). Σ_c w_c·x_c = s_g·Σ q_c·x_c + b_g·X_g: the b_g·X_g part uses Σx per group in
// f32. The only rounding is xq: |x − xs·xq| <= max|x| / 65278 per 64 values (the VNNI kernel's accuracy;
// bf16 activations, as MLX runs bf16 models, are ~100x coarser).
constexpr float kXMax = 32639;

// max|x| over 64 activations (one block's fixed-point range).
inline float abs_max64(const float* x) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs_mask));
  return hmax(m);
}

// Σx per group of `group` values (the b_g·X_g term of an affine row).
void group_sums(const float* x, int64_t k, int group, std::vector<float>& gsum) {
  gsum.resize(static_cast<size_t>(k / group));
  for (int64_t g = 0; g < k / group; ++g) {
    __m256 s = _mm256_setzero_ps();
    for (int64_t c = g * group; c < (g + 1) * group; c += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(x + c));
    gsum[g] = hsum(s);
  }
}

struct PreparedQ4 {
  std::vector<int8_t> xb;  // [blocks][xh even 32, xh odd 32, xl even 32, xl odd 32], 32-byte aligned
  std::vector<float> xs;   // [blocks]
  std::vector<float> gsum; // [groups]
  const int8_t* blocks() const {
    return reinterpret_cast<const int8_t*>((reinterpret_cast<uintptr_t>(xb.data()) + 31) & ~uintptr_t{31});
  }
};

void prepare_q4(const float* x, int64_t k, int group, PreparedQ4& p) {
  const int64_t blocks = k / 64;
  p.xb.resize(static_cast<size_t>(blocks * 128 + 32));
  p.xs.resize(static_cast<size_t>(blocks));
  int8_t* d0 = const_cast<int8_t*>(p.blocks());
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,  //
                                         0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + 64 * b;
    const float mx = abs_max64(xb);
    const __m256 inv = _mm256_set1_ps(mx > 0.0f ? kXMax / mx : 0.0f);
    p.xs[b] = mx / kXMax;
    __m256i hi[8], lo[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * i), inv));  // round to nearest
      lo[i] = _mm256_srai_epi32(_mm256_slli_epi32(q, 24), 24);                              // low byte, signed
      hi[i] = _mm256_srai_epi32(_mm256_sub_epi32(q, lo[i]), 8);
    }
    // Both parts are in [-128, 127] (|q| <= 32639), so the saturating packs are exact: 64 int32 -> 64 bytes in
    // natural order, then the even- and odd-index bytes apart (d: xh even, xh odd, xl even, xl odd). This
    // was a scalar loop of 128 byte stores per block: with the rest of this function ~4 % of the calling
    // thread's samples in a SmolLM2 4-bit decode (perf), serial before each pool job.
    int8_t* d = d0 + 128 * b;
    auto bytes32 = [&](const __m256i* v) {  // v[0..3]: 32 int32 -> 32 bytes, natural order
      const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      // even bytes of each 16 then odd ones, per 128-bit lane; then [lane0 evens, lane1 evens, lane0 odds,
      // lane1 odds]: the 16 even-index values, then the 16 odd-index ones.
      return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(b, order), split), 0xd8);
    };
    const __m256i* parts[2] = {hi, lo};
    for (int h = 0; h < 2; ++h) {
      const __m256i a = bytes32(parts[h]), c = bytes32(parts[h] + 4);  // values 0-31, 32-63
      _mm256_store_si256(reinterpret_cast<__m256i*>(d + 64 * h), _mm256_permute2x128_si256(a, c, 0x20));
      _mm256_store_si256(reinterpret_cast<__m256i*>(d + 64 * h + 32), _mm256_permute2x128_si256(a, c, 0x31));
    }
  }
  group_sums(x, k, group, p.gsum);
}

template <DType D>
inline float to_f32(const void* p, int64_t i) {
  if constexpr (D == DType::kBF16) return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  else if constexpr (D == DType::kF16) return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  else return static_cast<const float*>(p)[i];
}

template <DType D>
inline __m256 load8_f32(const void* p, int64_t i) {
  if constexpr (D == DType::kBF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i))),
        16));
  else if constexpr (D == DType::kF16)
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  else return _mm256_loadu_ps(static_cast<const float*>(p) + i);
}

template <DType D>
inline __m128 load4_f32(const void* p, int64_t i) {
  if constexpr (D == DType::kBF16)
    return _mm_castsi128_ps(_mm_slli_epi32(
        _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i))),
        16));
  else if constexpr (D == DType::kF16)
    return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  else return _mm_loadu_ps(static_cast<const float*>(p) + i);
}

// The integer kernels work through a row's blocks (64 codes) in spans of kSpan blocks; before a span each
// row's factors s_g·xs_b are formed eight blocks at a time, so the block loop reads one broadcast per
// block instead of converting a scale and multiplying it in scalar code (which with its index arithmetic
// was a third of the loop's instructions).
constexpr int64_t kSpan = 64;

// Factors of one row (first group gi) for blocks [b0, b0 + nb), b0 even: fs[b - b0] = s_g·xs_b (G groups of
// 64 or 128 codes) or, for groups of 32, fs[2(b - b0) + h] = s_{2b+h}·xs_b for the block's two halves.
template <DType D, int G>
void block_factors(const void* sc, int64_t gi, const float* xs, int64_t b0, int64_t nb, float* fs) {
  int64_t j = 0;
  for (; j + 8 <= nb; j += 8) {
    const __m256 xv = _mm256_loadu_ps(xs + b0 + j);
    if constexpr (G == 64) {
      _mm256_storeu_ps(fs + j, _mm256_mul_ps(load8_f32<D>(sc, gi + b0 + j), xv));
    } else if constexpr (G == 128) {
      const __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load4_f32<D>(sc, gi + (b0 + j) / 2)),
                                                _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
      _mm256_storeu_ps(fs + j, _mm256_mul_ps(s, xv));
    } else {
      const __m256 xa = _mm256_permutevar8x32_ps(xv, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
      const __m256 xb = _mm256_permutevar8x32_ps(xv, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7));
      _mm256_storeu_ps(fs + 2 * j, _mm256_mul_ps(load8_f32<D>(sc, gi + 2 * (b0 + j)), xa));
      _mm256_storeu_ps(fs + 2 * j + 8, _mm256_mul_ps(load8_f32<D>(sc, gi + 2 * (b0 + j) + 8), xb));
    }
  }
  for (; j < nb; ++j) {
    const int64_t b = b0 + j;
    if constexpr (G == 32) {
      fs[2 * j] = to_f32<D>(sc, gi + 2 * b) * xs[b];
      fs[2 * j + 1] = to_f32<D>(sc, gi + 2 * b + 1) * xs[b];
    } else {
      fs[j] = to_f32<D>(sc, gi + b / (G / 64)) * xs[b];
    }
  }
}

// The block's factor as a vector: one broadcast, or for groups of 32 the two halves' (lanes 0-3, 4-7).
template <int G>
inline __m256 block_factor(const float* fs, int64_t j) {
  if constexpr (G == 32)
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(fs + 2 * j)), _mm_broadcast_ss(fs + 2 * j + 1),
                                1);
  else return _mm256_broadcast_ss(fs + j);
}

// y[r] = hsum(acc) + Σ_g b_g·X_g (+ bias): the bias term of an affine row.
template <DType D>
inline float finish_row(__m256 acc, const void* bi, int64_t gi, int64_t groups, const float* gsum, const float* bias) {
  __m256 bx = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) bx = _mm256_fmadd_ps(load8_f32<D>(bi, gi + g), _mm256_loadu_ps(gsum + g), bx);
  float t = hsum(_mm256_add_ps(acc, bx));
  for (; g < groups; ++g) t += to_f32<D>(bi, gi + g) * gsum[g];
  return t + (bias ? *bias : 0.0f);
}

// Rows are contiguous, so the R rows of a pass are one region of R·row_bytes and the next passes follow it;
// interleaved, the R streams defeat the hardware prefetcher (perf: the code loads were the hot
// instructions). Each block step fetches the R·block_bytes of the region kPrefetchPasses passes ahead.
constexpr int kPrefetchPasses = 2;

// The 4-bit codes of a block (32 bytes) against x: i32 lanes of Σ q·xq, lane i over codes 8i..8i+7 (so lanes
// 0-3 and 4-7 are the block's halves).
struct Q4Codes {
  using Prepared = PreparedQ4;
  static constexpr int64_t kBlockBytes = 32;
  static constexpr bool kReadsPast = false;
  struct Ctl {};
  static Ctl controls() { return {}; }
  struct X {
    __m256i he, ho, le, lo;
  };
  static X load_x(const Prepared& p, int64_t b) {
    const __m256i* xv = reinterpret_cast<const __m256i*>(p.blocks() + 128 * b);
    return {_mm256_load_si256(xv), _mm256_load_si256(xv + 1), _mm256_load_si256(xv + 2), _mm256_load_si256(xv + 3)};
  }
  template <int G>
  static __m256i dot(const X& x, Ctl, const uint8_t* src) {
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const __m256i lo = _mm256_and_si256(w, m0f), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m0f);
    const __m256i ph = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x.he), _mm256_maddubs_epi16(hi, x.ho));
    const __m256i pl = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x.le), _mm256_maddubs_epi16(hi, x.lo));
    // 256·Σ(hi pairs) + Σ(lo pairs) in two vpmaddwd (|ph| <= 7680, so 2·256·7680 fits i32).
    return _mm256_add_epi32(_mm256_madd_epi16(ph, _mm256_set1_epi16(256)), _mm256_madd_epi16(pl, _mm256_set1_epi16(1)));
  }
};

// ---- 2/3/5/6/8-bit decode: integer dot products on 16-bit lanes -------------------------------------------
// These codes do not split into nibbles, so each 16 codes become 16 u16 lanes and meet x as plain 16-bit
// fixed point in one vpmaddwd (i16 pairs into i32): xs = max|x| / 32767 per 64 activations, xq = round(x /
// xs) — the 4-bit kernel's accuracy (|x − xs·xq| <= max|x| / 65534), exact integer sums per block (64 codes
// · 255 · 32767 < 2^31); codes16 (avx2_common.h) turns 16 codes into u16 lanes. Its 16-byte load reads up to
// 16 − 2B bytes past a 16-code block, so a matrix's last row goes through a padded copy.
struct PreparedX16 {
  std::vector<int16_t> xq;  // [k], natural order
  std::vector<float> xs;    // [blocks]
  std::vector<float> gsum;  // [groups]
};

void prepare_x16(const float* x, int64_t k, int group, PreparedX16& p) {
  const int64_t blocks = k / 64;
  p.xq.resize(static_cast<size_t>(k));
  p.xs.resize(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + 64 * b;
    const float mx = abs_max64(xb);
    const __m256 inv = _mm256_set1_ps(mx > 0.0f ? 32767.0f / mx : 0.0f);
    p.xs[b] = mx / 32767.0f;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 16 * i), inv));
      const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 16 * i + 8), inv));
      // packs interleaves 128-bit lanes: (a0..3, c0..3, a4..7, c4..7); the permute restores the order.
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p.xq.data() + 64 * b + 16 * i),
                          _mm256_permute4x64_epi64(_mm256_packs_epi32(a, c), 0xd8));
    }
  }
  group_sums(x, k, group, p.gsum);
}

// B-bit codes of a block (8B bytes) against x: i32 lanes of Σ q·xq; for groups of 32, lanes 0-3 over the
// block's first 32 codes and 4-7 over its second.
template <int B>
struct X16Codes {
  using Prepared = PreparedX16;
  static constexpr int64_t kBlockBytes = 8 * B;
  static constexpr bool kReadsPast = B != 8;
  using Ctl = Unpack16<B>;
  // Built on first use (a function-local static: never on a CPU without AVX2); a pass copies it to registers.
  static const Ctl& controls() {
    static const Ctl u;
    return u;
  }
  struct X {
    __m256i x0, x1, x2, x3;
  };
  static X load_x(const Prepared& p, int64_t b) {
    const __m256i* xv = reinterpret_cast<const __m256i*>(p.xq.data() + 64 * b);
    return {_mm256_loadu_si256(xv), _mm256_loadu_si256(xv + 1), _mm256_loadu_si256(xv + 2),
            _mm256_loadu_si256(xv + 3)};
  }
  template <int G>
  static __m256i dot(const X& x, const Ctl& u, const uint8_t* src) {
    const __m256i lo = _mm256_add_epi32(_mm256_madd_epi16(codes16<B>(src, u), x.x0),
                                        _mm256_madd_epi16(codes16<B>(src + 2 * B, u), x.x1));
    const __m256i hi = _mm256_add_epi32(_mm256_madd_epi16(codes16<B>(src + 4 * B, u), x.x2),
                                        _mm256_madd_epi16(codes16<B>(src + 6 * B, u), x.x3));
    if constexpr (G == 32)
      return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
    else return _mm256_add_epi32(lo, hi);
  }
};

// y[r] (+ bias) for R rows of one quantized matrix (rows[r]: the row's codes, first row r0) through the
// Codes kernel. D: the dtype of its scales and biases; G: the group size.
template <typename Codes, int R, DType D, int G>
void int_rows(const QuantizedMatrix& m, const uint8_t* const* rows, int64_t r0, const typename Codes::Prepared& p,
              const float* bias, float* y) {
  constexpr int64_t kBlockBytes = Codes::kBlockBytes;
  const int64_t k = m.cols, blocks = k / 64, groups = k / G;
  const void *sc = m.scales.raw(), *bi = m.biases.raw();
  __m256 acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const uint8_t* pf = rows[0] + kPrefetchPasses * R * kBlockBytes * blocks;
  alignas(32) float fs[R][2 * kSpan];
  const typename Codes::Ctl ctl = Codes::controls();
  for (int64_t b0 = 0; b0 < blocks; b0 += kSpan) {
    const int64_t nb = std::min(kSpan, blocks - b0);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) block_factors<D, G>(sc, (r0 + r) * groups, p.xs.data(), b0, nb, fs[r]);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t b = b0 + j;
      if constexpr (R > 1)
#pragma GCC unroll 4
        for (int64_t l = 0; l < R * kBlockBytes; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(pf + R * kBlockBytes * b + l), _MM_HINT_T0);
      const typename Codes::X x = Codes::load_x(p, b);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Codes::template dot<G>(x, ctl, rows[r] + kBlockBytes * b)),
                                 block_factor<G>(fs[r], j), acc[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
    y[r] = finish_row<D>(acc[r], bi, (r0 + r) * groups, groups, p.gsum.data(), bias ? bias + r : nullptr);
}

// Rows [r_begin, r_end) of one matrix, four per pass. Where the kernel's loads read past a block, the
// matrix's last row goes through a padded copy.
template <typename Codes, DType D, int G>
void int_range(const QuantizedMatrix& m, int64_t r_begin, int64_t r_end, const typename Codes::Prepared& p,
               const float* bias, float* y) {
  const uint8_t* base = reinterpret_cast<const uint8_t*>(m.packed.data<uint32_t>());
  const int64_t row_bytes = m.cols / 64 * Codes::kBlockBytes;
  const int64_t safe_end = Codes::kReadsPast ? std::min(r_end, m.rows - 1) : r_end;
  in_fours(r_begin, safe_end, [&](auto rows, int64_t r) {
    constexpr int R = decltype(rows)::value;
    const uint8_t* ptrs[R];
    for (int i = 0; i < R; ++i) ptrs[i] = base + (r + i) * row_bytes;
    int_rows<Codes, R, D, G>(m, ptrs, r, p, bias ? bias + r : nullptr, y + r);
  });
  if (safe_end < r_end) {
    thread_local std::vector<uint8_t> padded;
    padded.assign(static_cast<size_t>(row_bytes + 16), 0);
    std::copy_n(base + safe_end * row_bytes, row_bytes, padded.data());
    const uint8_t* ptr = padded.data();
    int_rows<Codes, 1, D, G>(m, &ptr, safe_end, p, bias ? bias + safe_end : nullptr, y + safe_end);
  }
}

// fn(dtype tag, group tag) for a matrix's scale dtype and group size (32/64/128).
template <typename Fn>
void with_scales(DType d, int group, Fn&& fn) {
  auto by_group = [&](auto dt) {
    switch (group) {
      case 32: return fn(dt, std::integral_constant<int, 32>{});
      case 64: return fn(dt, std::integral_constant<int, 64>{});
      default: return fn(dt, std::integral_constant<int, 128>{});
    }
  };
  switch (d) {
    case DType::kBF16: return by_group(std::integral_constant<DType, DType::kBF16>{});
    case DType::kF16: return by_group(std::integral_constant<DType, DType::kF16>{});
    default: return by_group(std::integral_constant<DType, DType::kF32>{});
  }
}

// The group's B-bit members through the integer kernels: false (nothing done) when a member's shape or
// dtypes are outside them (columns not a multiple of 64, group size not 32/64/128, scales and biases of
// different float dtypes).
template <int B>
bool gemv_group_int(const float* x, int64_t n, GemvOut* outs, int count, int64_t total) {
  const QuantizedMatrix& m0 = outs[0].w->quant;
  const int64_t k = m0.cols;
  const int gs = m0.spec.group_size;
  if (k % 64 != 0 || (gs != 32 && gs != 64 && gs != 128)) return false;
  for (int o = 0; o < count; ++o) {
    const QuantizedMatrix& m = outs[o].w->quant;
    const DType d = m.scales.dtype();
    if (m.biases.dtype() != d || (d != DType::kBF16 && d != DType::kF16 && d != DType::kF32)) return false;
  }
  using Prepared = std::conditional_t<B == 4, PreparedQ4, PreparedX16>;
  thread_local Prepared prep_store;
  Prepared& prep = prep_store;  // the pool's threads reach the caller's buffers through this reference
  for (int64_t t = 0; t < n; ++t) {
    if constexpr (B == 4) prepare_q4(x + t * k, k, gs, prep);
    else prepare_x16(x + t * k, k, gs, prep);
    parallel_for(total, k * B / 8, [&](int64_t r0, int64_t r1) {
      member_ranges(outs, count, total, r0, r1, [&](int o, int64_t a, int64_t e) {
        const QuantizedMatrix& m = outs[o].w->quant;
        float* y = outs[o].y + t * m.rows;
        const float* bias = outs[o].bias;
        with_scales(m.scales.dtype(), gs, [&](auto dt, auto gt) {
          constexpr DType D = decltype(dt)::value;
          constexpr int G = decltype(gt)::value;
          int_range<std::conditional_t<B == 4, Q4Codes, X16Codes<B>>, D, G>(m, a, e, prep, bias, y);
        });
      });
    });
  }
  return true;
}

// Every output of the group (format F, same cols and group size) in ONE parallel_for per token over
// all their rows, so small decode matrices (q/k/v, gate/up) share one pool round.
template <Fmt F>
void gemv_group(const float* x, int64_t n, GemvOut* outs, int count) {
  const Weight& w0 = *outs[0].w;
  const int64_t k = w0.cols();
  int64_t total = 0;
  for (int o = 0; o < count; ++o) {
    outs[o].row0 = total;
    total += outs[o].w->rows();
  }
  if constexpr (is_quant(F))
    if (gemv_group_int<bits_of(F)>(x, n, outs, count, total)) return;
  // Reused across calls, one set per calling thread. The job below runs on pool threads too, so it must
  // reach the caller's buffers through these references (naming the thread_locals there would give each
  // worker its own, empty ones).
  thread_local std::vector<float> perm_store, gsum_store;
  std::vector<float>& perm = perm_store;
  std::vector<float>& gsum = gsum_store;
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * k;
    prepare_x(xt, k, F, w0.quantized ? w0.quant.spec.group_size : 32, perm, gsum);
    const float* xv = is_paired(F) ? perm.data() : xt;
    parallel_for(total, k, [&](int64_t r0, int64_t r1) {
      member_ranges(outs, count, total, r0, r1, [&](int o, int64_t a, int64_t e) {
        const Weight& w = *outs[o].w;
        const float* bias = outs[o].bias;
        float* y = outs[o].y + t * w.rows();
        if constexpr (!is_quant(F)) {
          const DenseView view(w);
          in_fours(a, e, [&](auto rows, int64_t r) {
            dense_rows<F, decltype(rows)::value>(view, r, xt, xv, bias ? bias + r : nullptr, y + r);
          });
        } else {
          for (int64_t r = a; r < e; ++r) y[r] = dot_row<F>(w, r, xv, gsum.data()) + (bias ? bias[r] : 0.0f);
        }
      });
    });
  }
}

template <Fmt F>
void gemv(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  GemvOut one{&w, bias, y, 0};
  gemv_group<F>(x, n, &one, 1);
}

// Row r, inputs [k0, k0 + kc), f32 natural order.
template <Fmt F>
void decode_segment(const Weight& w, int64_t r, int64_t k0, int64_t kc, float* out) {
  const void* row = row_ptr(w, r);
  const int64_t chunks = kc / 32;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t cc = k0 / 32 + c;
    __m256 v[4];
    decode_chunk<F>(row, cc, v);
    alignas(32) float tmp[32];
    for (int i = 0; i < 4; ++i) _mm256_store_ps(tmp + 8 * i, v[i]);
    float* o = out + 32 * c;
    if constexpr (is_paired(F)) {
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 8; ++l) {
          o[16 * h + 2 * l] = tmp[16 * h + l];
          o[16 * h + 2 * l + 1] = tmp[16 * h + 8 + l];
        }
    } else {
      for (int i = 0; i < 32; ++i) o[i] = tmp[i];
    }
    if constexpr (is_quant(F)) {
      const int64_t gs = w.quant.spec.group_size, gi = r * (w.cols() / gs) + cc * 32 / gs;
      float s = load_f32(w.quant.scales.raw(), w.quant.scales.dtype(), gi);
      float b = load_f32(w.quant.biases.raw(), w.quant.biases.dtype(), gi);
      for (int i = 0; i < 32; ++i) o[i] = o[i] * s + b;
    }
  }
  for (int64_t j = chunks * 32; j < kc; ++j) out[j] = scalar_at(row, F, k0 + j);
}

// In-register 8x8 transpose: r[j] lane i <- r[i] lane j.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// The microkernel's panel of rows [r0, r0 + nr) (nr <= 16, zeros past it) over inputs [k0, k0 + kc):
// panel[kk][16]. Each 32-input chunk of 8 rows is decoded in registers (dequantized as decode_segment
// does: code·s, then + b), transposed 8x8 and stored by input; only a dense tail past the last whole
// chunk goes element by element. (decode_segment + a scalar transpose took about a quarter of a
// prefill GEMM's time at 512 tokens.)
template <Fmt F>
void build_panel(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, float* panel) {
  const int64_t chunks = kc / 32;
  for (int half = 0; half < 2; ++half)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t cc = k0 / 32 + c;
      __m256 v[8][4];
      for (int i = 0; i < 8; ++i) {
        const int r = 8 * half + i;
        if (r >= nr) {
          v[i][0] = v[i][1] = v[i][2] = v[i][3] = _mm256_setzero_ps();
          continue;
        }
        decode_chunk<F>(row_ptr(w, r0 + r), cc, v[i]);
        if constexpr (is_quant(F)) {
          const int64_t gs = w.quant.spec.group_size, gi = (r0 + r) * (w.cols() / gs) + cc * 32 / gs;
          const __m256 sv = _mm256_set1_ps(load_f32(w.quant.scales.raw(), w.quant.scales.dtype(), gi));
          const __m256 bv = _mm256_set1_ps(load_f32(w.quant.biases.raw(), w.quant.biases.dtype(), gi));
#pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) v[i][q] = _mm256_add_ps(_mm256_mul_ps(v[i][q], sv), bv);
        }
      }
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        __m256 t[8] = {v[0][q], v[1][q], v[2][q], v[3][q], v[4][q], v[5][q], v[6][q], v[7][q]};
        transpose8(t);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
          // Input offset of lane j of decode_chunk's vector q (paired formats: even/odd halves of each 16).
          const int koff = is_paired(F) ? 16 * (q / 2) + 2 * j + (q % 2) : 8 * q + j;
          _mm256_store_ps(panel + (32 * c + koff) * kNr + 8 * half, t[j]);
        }
      }
    }
  for (int64_t kk = chunks * 32; kk < kc; ++kk)  // dense formats only: quantized rows are whole groups of >= 32
    for (int i = 0; i < kNr; ++i) panel[kk * kNr + i] = i < nr ? scalar_at(row_ptr(w, r0 + i), F, k0 + kk) : 0.0f;
}

template <int MT>
void micro_kernel(const float* panel, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy, int nr,
                  const float* init, bool first) {
  __m256 c0[MT], c1[MT];
  alignas(32) float buf[MT][16];
  if (nr == kNr) {  // whole panels (all but a matrix's last): straight vector loads
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      const float* src = first ? init : y + t * ldy;
      c0[t] = src ? _mm256_loadu_ps(src) : _mm256_setzero_ps();
      c1[t] = src ? _mm256_loadu_ps(src + 8) : _mm256_setzero_ps();
    }
  } else {
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      for (int i = 0; i < 16; ++i) buf[t][i] = i < nr ? (first ? (init ? init[i] : 0.0f) : y[t * ldy + i]) : 0.0f;
      c0[t] = _mm256_load_ps(buf[t]);
      c1[t] = _mm256_load_ps(buf[t] + 8);
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    __m256 w0 = _mm256_load_ps(panel + k * kNr), w1 = _mm256_load_ps(panel + k * kNr + 8);
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      __m256 xb = _mm256_broadcast_ss(x + t * ldx + k);
      c0[t] = _mm256_fmadd_ps(xb, w0, c0[t]);
      c1[t] = _mm256_fmadd_ps(xb, w1, c1[t]);
    }
  }
  if (nr == kNr) {
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      _mm256_storeu_ps(y + t * ldy, c0[t]);
      _mm256_storeu_ps(y + t * ldy + 8, c1[t]);
    }
    return;
  }
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
    _mm256_store_ps(buf[t], c0[t]);
    _mm256_store_ps(buf[t] + 8, c1[t]);
    for (int i = 0; i < nr; ++i) y[t * ldy + i] = buf[t][i];
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int, const float*, bool);
constexpr MicroFn kMicro[kMr + 1] = {nullptr,         micro_kernel<1>, micro_kernel<2>, micro_kernel<3>,
                                     micro_kernel<4>, micro_kernel<5>, micro_kernel<6>};

template <Fmt F>
void gemm(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  const int64_t rows = w.rows(), k = w.cols();
  parallel_for((rows + kNr - 1) / kNr, n * k * kNr, [&](int64_t b0, int64_t b1) {
    std::vector<float> panel_store(static_cast<size_t>(kNr * kKc + 8));
    float* panel = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(panel_store.data()) + 31) & ~uintptr_t{31});
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * kNr;
      const int nr = static_cast<int>(std::min<int64_t>(kNr, rows - r0));
      for (int64_t k0 = 0; k0 < k; k0 += kKc) {
        const int64_t kc = std::min(kKc, k - k0);
        build_panel<F>(w, r0, nr, k0, kc, panel);
        for (int64_t t = 0; t < n; t += kMr) {
          const int64_t mt = std::min<int64_t>(kMr, n - t);
          kMicro[mt](panel, kc, x + t * k + k0, k, y + t * rows + r0, rows, nr, bias ? bias + r0 : nullptr, k0 == 0);
        }
      }
    }
  });
}

template <Fmt F>
void linear_fmt(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  if (n >= kGemmMinTokens)
    gemm<F>(x, n, w, bias, y);
  else
    gemv<F>(x, n, w, bias, y);
}

}  // namespace

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias_t, float* y) {
  std::vector<float> bias = vector_f32(bias_t);
  const float* b = bias.empty() ? nullptr : bias.data();
  with_format(w, [&](auto tag) { linear_fmt<decltype(tag)::value>(x, n, w, b, y); });
}

void linear_group(const float* x, int64_t n, const LinearOut* outs, int count) {
  constexpr int kMaxGroup = 8;
  const Weight& w0 = *outs[0].w;
  bool fused = count > 1 && count <= kMaxGroup && n < kGemmMinTokens;
  for (int i = 1; fused && i < count; ++i) {
    const Weight& w = *outs[i].w;
    fused = w.quantized == w0.quantized && w.cols() == w0.cols() && format_of(w) == format_of(w0) &&
            (!w.quantized || w.quant.spec.group_size == w0.quant.spec.group_size);
  }
  if (!fused) {
    for (int i = 0; i < count; ++i)
      avx2::linear(x, n, *outs[i].w, outs[i].bias ? *outs[i].bias : Tensor(), outs[i].y);
    return;
  }
  std::vector<float> biases[kMaxGroup];
  GemvOut go[kMaxGroup];
  for (int i = 0; i < count; ++i) {
    if (outs[i].bias) biases[i] = vector_f32(*outs[i].bias);
    go[i] = GemvOut{outs[i].w, biases[i].empty() ? nullptr : biases[i].data(), outs[i].y, 0};
  }
  with_format(w0, [&](auto tag) { gemv_group<decltype(tag)::value>(x, n, go, count); });
}

void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out) {
  const int64_t d = table.cols();
  with_format(table, [&](auto tag) {
    parallel_for(n, d, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float* o = out + i * d;
        decode_segment<decltype(tag)::value>(table, ids[i], 0, d, o);
        if (scale != 1.0f)
          for (int64_t c = 0; c < d; ++c) o[c] *= scale;
      }
    });
  });
}

}  // namespace vlm::ops::cpu::avx2

#pragma GCC pop_options
