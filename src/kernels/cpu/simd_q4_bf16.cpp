// 4-bit MLX GEMV (decode) on AVX512_BF16: the hot path of quantized decode.
//
// Why: decoding nibbles to f32 costs ~8 uops per 32 weights (zero-extend, mask, shift, two
// int->float converts, two FMAs), which on this 2-core machine caps 4-bit decode near half the
// memory roofline. Here each nibble becomes an exact bf16 with one shift and one ternary-logic op —
// 0x3F80 | (q << 3) is the bf16 value 1 + q/16 — and vdpbf16ps does 32 multiply-adds per uop.
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

struct Q4Prepared {
  std::vector<uint16_t> xh, xl;  // [blocks][4][32] bf16
  std::vector<float> group_sum;  // [groups]
  int64_t blocks = 0;
};

void prepare_q4(const float* x, int64_t k, int group, Q4Prepared& p) {
  p.blocks = (k + 127) / 128;
  p.xh.assign(static_cast<size_t>(p.blocks * 128), 0);
  p.xl.assign(static_cast<size_t>(p.blocks * 128), 0);
  for (int64_t c = 0; c < k; ++c) {
    const int64_t b = c / 128, within = c % 128;
    const int64_t idx = b * 128 + (within % 4) * 32 + within / 4;
    const uint16_t h = f32_to_bf16(x[c]);
    p.xh[idx] = h;
    p.xl[idx] = f32_to_bf16(x[c] - bf16_to_f32(h));  // x - x_hi is exact in f32
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

template <int R>
void q4_rows(const QuantizedMatrix& m, int64_t r0, const Q4Prepared& p, float* out) {
  const int64_t cols = m.cols, row_bytes = cols / 2;
  const int gs = m.spec.group_size;
  const int64_t groups = cols / gs, groups_per_block = 128 / gs;
  const DType sd = m.scales.dtype();
  const size_t ssize = dtype_size(sd);
  alignas(64) int32_t lane_group_arr[16];
  for (int i = 0; i < 16; ++i) lane_group_arr[i] = (8 * i) / gs;
  const __m512i lane_group = _mm512_load_si512(lane_group_arr);
  const __m512i keep = _mm512_set1_epi16(0x0078), one = _mm512_set1_epi16(0x3F80);

  const uint8_t* rows[R];
  const char* srow[R];
  for (int i = 0; i < R; ++i) {
    rows[i] = reinterpret_cast<const uint8_t*>(m.packed.data<uint32_t>() + (r0 + i) * m.words_per_row());
    srow[i] = static_cast<const char*>(m.scales.raw()) + (r0 + i) * groups * ssize;
  }
  __m512 total[R];
  for (int i = 0; i < R; ++i) total[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < p.blocks; ++b) {
    const int64_t valid = std::min<int64_t>(64, row_bytes - 64 * b);
    const __mmask64 bm = valid >= 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
    const uint16_t* xh = p.xh.data() + b * 128;
    const uint16_t* xl = p.xl.data() + b * 128;
    __m512bh h[4], l[4];
    for (int t = 0; t < 4; ++t) {
      h[t] = (__m512bh)_mm512_loadu_si512(xh + 32 * t);
      l[t] = (__m512bh)_mm512_loadu_si512(xl + 32 * t);
    }
    const int64_t g0 = b * groups_per_block, ng = std::min<int64_t>(groups_per_block, groups - g0);
    for (int i = 0; i < R; ++i) {
      const __m512i v = _mm512_maskz_loadu_epi8(bm, rows[i] + 64 * b);
      const __m512bh f0 = (__m512bh)_mm512_ternarylogic_epi32(_mm512_slli_epi16(v, 3), keep, one, 0xEA);
      const __m512bh f1 = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 1), keep, one, 0xEA);
      const __m512bh f2 = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 5), keep, one, 0xEA);
      const __m512bh f3 = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 9), keep, one, 0xEA);
      __m512 a = _mm512_dpbf16_ps(_mm512_setzero_ps(), f0, h[0]);
      __m512 c = _mm512_dpbf16_ps(_mm512_setzero_ps(), f1, h[1]);
      __m512 d = _mm512_dpbf16_ps(_mm512_setzero_ps(), f0, l[0]);
      __m512 e = _mm512_dpbf16_ps(_mm512_setzero_ps(), f1, l[1]);
      a = _mm512_dpbf16_ps(a, f2, h[2]);
      c = _mm512_dpbf16_ps(c, f3, h[3]);
      d = _mm512_dpbf16_ps(d, f2, l[2]);
      e = _mm512_dpbf16_ps(e, f3, l[3]);
      const __m512 acc = _mm512_add_ps(_mm512_add_ps(a, c), _mm512_add_ps(d, e));
      const __m512 s = _mm512_permutexvar_ps(lane_group, load_group_values(srow[i] + g0 * ssize, sd, ng));
      total[i] = _mm512_fmadd_ps(acc, s, total[i]);
    }
  }
  for (int i = 0; i < R; ++i) {
    // Σ_g (b_g − 16 s_g)·X_g, sixteen groups at a time.
    const char* brow = static_cast<const char*>(m.biases.raw()) + (r0 + i) * groups * ssize;
    __m512 bt = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g += 16) {
      const int64_t n = std::min<int64_t>(16, groups - g);
      const __mmask16 mk = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
      __m512 s = load_group_values(srow[i] + g * ssize, sd, n), bb = load_group_values(brow + g * ssize, sd, n);
      __m512 xs = _mm512_maskz_loadu_ps(mk, p.group_sum.data() + g);
      bt = _mm512_fmadd_ps(_mm512_fnmadd_ps(_mm512_set1_ps(16.0f), s, bb), xs, bt);
    }
    out[i] = 16.0f * _mm512_reduce_add_ps(total[i]) + _mm512_reduce_add_ps(bt);
  }
}

}  // namespace

void q4_gemv_bf16(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  const QuantizedMatrix& m = w.quant;
  const int64_t rows = m.rows, k = m.cols;
  constexpr int R = 4;
  Q4Prepared p;
  for (int64_t t = 0; t < n; ++t) {
    prepare_q4(x + t * k, k, m.spec.group_size, p);
    float* yt = y + t * rows;
    parallel_for((rows + R - 1) / R, R * k / 2, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * R;
        float out[R];
        if (r + R <= rows) {
          q4_rows<R>(m, r, p, out);
          for (int i = 0; i < R; ++i) yt[r + i] = out[i] + (bias ? bias[r + i] : 0.0f);
        } else {
          for (int64_t rr = r; rr < rows; ++rr) {
            q4_rows<1>(m, rr, p, out);
            yt[rr] = out[0] + (bias ? bias[rr] : 0.0f);
          }
        }
      }
    });
  }
}

}  // namespace vlm::ops::cpu::avx512

#pragma GCC pop_options
