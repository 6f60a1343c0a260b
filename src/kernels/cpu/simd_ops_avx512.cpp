// AVX-512 versions of the non-matrix ops: norms, RoPE, activations, softmax, attention (f32 and over
// a quantized KV cache), KV dequantization and the elementwise helpers. exp is a Cody-Waite range reduction + degree-7 Taylor polynomial + scalef
// (< 2 ulp on the clamped range); tanh derives from it with an odd polynomial near 0, where
// 1 - 2/(e^{2x}+1) would cancel. GELU with erf keeps the libm erf (no vector erf here). RoPE angles
// and their cos/sin are formed exactly as in the reference, once per token, shared by all heads.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/ref/ref_ops.h"
#include "kernels/cpu/simd_avx512.h"

// GCC 12 reports a false -Wmaybe-uninitialized inside its own _mm512_reduce_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")

namespace vlm::ops::cpu::avx512 {
namespace {

// Lanes [0, left) of a 16-lane vector; none when left <= 0 (a shift by a negative count would be undefined).
inline __mmask16 tail_mask(int64_t left) {
  if (left <= 0) return 0;
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-104.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 tanh_ps(__m512 x) {
  __m512 ax = _mm512_abs_ps(x);
  __m512 e = exp_ps(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
  __m512 big = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  // |x| < 0.125: x - x³/3 + 2x⁵/15 - 17x⁷/315 (next term < 1e-9 relative).
  __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-17.0f / 315.0f);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.0f / 15.0f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.0f / 3.0f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.0f));
  __m512 small = _mm512_mul_ps(p, ax);
  __m512 r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.125f), _CMP_LT_OQ), big, small);
  return _mm512_or_ps(r, _mm512_and_ps(x, _mm512_set1_ps(-0.0f)));  // restore the sign
}

inline __m512 act_ps(__m512 x, Activation act) {
  const __m512 one = _mm512_set1_ps(1.0f);
  switch (act) {
    case Activation::kSilu: return _mm512_div_ps(x, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    case Activation::kQuickGelu:
      return _mm512_div_ps(x, _mm512_add_ps(one, exp_ps(_mm512_mul_ps(x, _mm512_set1_ps(-1.702f)))));
    case Activation::kGeluTanh: {
      __m512 inner = _mm512_mul_ps(
          _mm512_set1_ps(0.7978845608028654f),
          _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), _mm512_mul_ps(x, x)), x, x));
      return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(one, tanh_ps(inner)));
    }
    case Activation::kRelu: return _mm512_max_ps(x, _mm512_setzero_ps());
    case Activation::kGeluErf: break;  // handled by the callers (scalar erf)
  }
  return x;
}

inline float dot(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

// y += s * x
inline void axpy(float* y, float s, const float* x, int64_t n) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(vs, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

void rotate_token(float* xt, int64_t n_heads, int64_t head_dim, int64_t half, const float* cs, const float* sn) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* x1p = xt + h * head_dim;
    float* x2p = x1p + half;
    for (int64_t i = 0; i < half; i += 16) {
      __mmask16 m = tail_mask(half - i);
      __m512 x1 = _mm512_maskz_loadu_ps(m, x1p + i), x2 = _mm512_maskz_loadu_ps(m, x2p + i);
      __m512 c = _mm512_maskz_loadu_ps(m, cs + i), s = _mm512_maskz_loadu_ps(m, sn + i);
      _mm512_mask_storeu_ps(x1p + i, m, _mm512_fmsub_ps(x1, c, _mm512_mul_ps(x2, s)));
      _mm512_mask_storeu_ps(x2p + i, m, _mm512_fmadd_ps(x2, c, _mm512_mul_ps(x1, s)));
    }
  }
}

}  // namespace

namespace {

// Values [c, c + 16) of a contiguous f32/f16/bf16 vector (a norm weight) as f32, lanes outside `m` zero.
inline __m512 load_any(const void* p, DType dt, int64_t c, __mmask16 m) {
  switch (dt) {
    case DType::kBF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + c)), 16));
    case DType::kF16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + c));
    default: return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + c);
  }
}

// yi = xi · inv · (w + offset), reading the weight in its stored dtype (no per-call f32 copy: decode
// runs ~60 norms per token on rows of 576-896 values).
inline void scale_row(const float* xi, float* yi, int64_t d, float inv, const Tensor& weight, float offset) {
  const __m512 vinv = _mm512_set1_ps(inv), voff = _mm512_set1_ps(offset);
  const void* w = weight.raw();
  const DType dt = weight.dtype();
  for (int64_t c = 0; c < d; c += 16) {
    const __mmask16 m = tail_mask(d - c);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xi + c), vinv);
    _mm512_mask_storeu_ps(yi + c, m, _mm512_mul_ps(v, _mm512_add_ps(load_any(w, dt, c, m), voff)));
  }
}

}  // namespace

void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y) {
  VLM_CHECK(weight.is_contiguous(), ErrorKind::kInvalidArgument, "rms_norm: the weight must be contiguous");
  parallel_for(n, d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* xi = x + i * d;
      scale_row(xi, y + i * d, d, 1.0f / std::sqrt(dot(xi, xi, d) / static_cast<float>(d) + eps), weight, offset);
    }
  });
}

void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y) {
  VLM_CHECK(weight.is_contiguous(), ErrorKind::kInvalidArgument, "add_rms_norm: the weight must be contiguous");
  // One pass over x and r (sum, store, square-accumulate), then the row (now in L1) is scaled into y. r is
  // read in full before y, which may alias it, is written.
  parallel_for(n, 2 * d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* xi = x + i * d;
      const float* ri = r + i * d;
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      int64_t c = 0;
      for (; c + 32 <= d; c += 32) {
        const __m512 a = _mm512_add_ps(_mm512_loadu_ps(xi + c), _mm512_loadu_ps(ri + c));
        const __m512 b = _mm512_add_ps(_mm512_loadu_ps(xi + c + 16), _mm512_loadu_ps(ri + c + 16));
        _mm512_storeu_ps(xi + c, a);
        _mm512_storeu_ps(xi + c + 16, b);
        acc0 = _mm512_fmadd_ps(a, a, acc0);
        acc1 = _mm512_fmadd_ps(b, b, acc1);
      }
      for (; c < d; c += 16) {
        const __mmask16 m = tail_mask(d - c);
        const __m512 a = _mm512_add_ps(_mm512_maskz_loadu_ps(m, xi + c), _mm512_maskz_loadu_ps(m, ri + c));
        _mm512_mask_storeu_ps(xi + c, m, a);
        acc0 = _mm512_fmadd_ps(a, a, acc0);
      }
      const float ss = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
      scale_row(xi, y + i * d, d, 1.0f / std::sqrt(ss / static_cast<float>(d) + eps), weight, offset);
    }
  });
}

void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y) {
  std::vector<float> w = vector_f32(weight), b = vector_f32(bias);
  if (w.empty()) w.assign(static_cast<size_t>(d), 1.0f);
  if (b.empty()) b.assign(static_cast<size_t>(d), 0.0f);
  parallel_for(n, d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* xi = x + i * d;
      float* yi = y + i * d;
      __m512 s = _mm512_setzero_ps();
      for (int64_t c = 0; c < d; c += 16) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask(d - c), xi + c));
      const float mean = _mm512_reduce_add_ps(s) / static_cast<float>(d);
      const __m512 vm = _mm512_set1_ps(mean);
      __m512 v2 = _mm512_setzero_ps();
      for (int64_t c = 0; c < d; c += 16) {
        __mmask16 m = tail_mask(d - c);
        __m512 dv = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xi + c), vm);
        v2 = _mm512_fmadd_ps(dv, dv, v2);
      }
      const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(v2) / static_cast<float>(d) + eps));
      for (int64_t c = 0; c < d; c += 16) {
        __mmask16 m = tail_mask(d - c);
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xi + c), vm), inv);
        v = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, w.data() + c), _mm512_maskz_loadu_ps(m, b.data() + c));
        _mm512_mask_storeu_ps(yi + c, m, v);
      }
    }
  });
}

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling) {
  const int64_t half = rotary_dim / 2;
  if (n_tokens == 1) {
    // Decode: every layer rotates q and k of the same position with (usually) the same frequencies, so the
    // cos/sin row (half double-precision cos + sin) is kept per calling thread and reused while position,
    // frequencies and scaling are unchanged (before: recomputed for q and k of every layer, ~60 times per
    // token). The values are computed exactly as below, so the results do not change.
    struct Row {
      int64_t position = -1;
      float scaling = 0.0f;
      std::vector<float> inv_freq, cs, sn;
    };
    thread_local Row row;
    const bool same = row.position == positions[0] && row.scaling == attention_scaling &&
                      row.inv_freq.size() == static_cast<size_t>(half) &&
                      std::equal(inv_freq, inv_freq + half, row.inv_freq.begin());
    if (!same) {
      row.position = positions[0];
      row.scaling = attention_scaling;
      row.inv_freq.assign(inv_freq, inv_freq + half);
      row.cs.resize(static_cast<size_t>(half));
      row.sn.resize(static_cast<size_t>(half));
      for (int64_t i = 0; i < half; ++i) {
        float angle = static_cast<float>(positions[0]) * inv_freq[i];
        row.cs[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_scaling;
        row.sn[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_scaling;
      }
    }
    rotate_token(x, n_heads, head_dim, half, row.cs.data(), row.sn.data());
    return;
  }
  parallel_for(n_tokens, n_heads * head_dim * 2 + half * 40, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        float angle = static_cast<float>(positions[t]) * inv_freq[i];
        cs[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_scaling;
        sn[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_scaling;
      }
      rotate_token(x + t * n_heads * head_dim, n_heads, head_dim, half, cs.data(), sn.data());
    }
  });
}

void mrope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
           const int64_t* positions3, const int* stream_of, float attention_scaling) {
  const int64_t half = head_dim / 2;
  parallel_for(n_tokens, n_heads * head_dim * 2 + half * 40, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        float angle = static_cast<float>(positions3[stream_of[i] * n_tokens + t]) * inv_freq[i];
        cs[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_scaling;
        sn[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_scaling;
      }
      rotate_token(x + t * n_heads * head_dim, n_heads, head_dim, half, cs.data(), sn.data());
    }
  });
}

void activate(float* x, int64_t n, Activation act) {
  if (act == Activation::kGeluErf) return ref::activate(x, n, act);
  parallel_for(n, 8, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i += 16) {
      __mmask16 m = tail_mask(i1 - i);
      _mm512_mask_storeu_ps(x + i, m, act_ps(_mm512_maskz_loadu_ps(m, x + i), act));
    }
  });
}

void gated_activate(float* gate, const float* up, int64_t n, Activation act) {
  if (act == Activation::kGeluErf) return ref::gated_activate(gate, up, n, act);
  parallel_for(n, 8, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i += 16) {
      __mmask16 m = tail_mask(i1 - i);
      __m512 g = act_ps(_mm512_maskz_loadu_ps(m, gate + i), act);
      _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, up + i)));
    }
  });
}

void softmax(float* x, int64_t n, int64_t d) {
  parallel_for(n, d * 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * d;
      __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      for (int64_t c = 0; c < d; c += 16)
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(d - c), xr + c));
      const float m = _mm512_reduce_max_ps(mx);
      if (m == -std::numeric_limits<float>::infinity()) {
        for (int64_t c = 0; c < d; ++c) xr[c] = 0.0f;
        continue;
      }
      const __m512 vm = _mm512_set1_ps(m);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t c = 0; c < d; c += 16) {
        __mmask16 k = tail_mask(d - c);
        __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + c), vm));
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
        _mm512_mask_storeu_ps(xr + c, k, e);
      }
      const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
      for (int64_t c = 0; c < d; c += 16) {
        __mmask16 k = tail_mask(d - c);
        _mm512_mask_storeu_ps(xr + c, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xr + c), inv));
      }
    }
  });
}

namespace {

// ---- attention ----------------------------------------------------------------------------------------
// Few queries (decode) or masked attention: one pass per (query, head) over the keys. Many queries without a
// mask (vision towers): flash-style blocked attention (it handles masks too, see attention()). K is packed once per call,
// transposed per kv head (Kt[kvh][d][j], keys padded to kAttKb with zeros), so a 4-query x 64-key score
// tile is 16 register accumulators fed by one broadcast of q[d] and four loads of Kt per d. Per 64-key
// block the running row max / sum are updated online (softmax rescale of the partial output), then
// P·V adds into the output rows, 4 queries x up to 5 vectors of head_dim at a time. Work items are
// (head, block of kAttQb queries) so each K/V block (20 KiB at head_dim 80) is reused by 64 queries
// from L1/L2.
constexpr int64_t kFlashMinQueries = 8;
constexpr int64_t kAttKb = 64;  // keys per block: 4 vectors
constexpr int64_t kAttQb = 64;  // queries per work item
constexpr int kAttMq = 4;       // queries per register tile

struct FlashArgs {
  const float* q;
  const float* kt;  // [n_kv_heads][head_dim][nk_pad]
  const float* v;
  const int64_t* k_pos;
  int64_t nk, nk_pad, n_heads, n_kv_heads, head_dim, q_pos0;
  float scale, softcap;
  const AttentionMask* mask;  // null: every key visible
};

// s[t][0..64) = scale * q_t · k_j for MQ queries of head h against keys [kb0, kb0 + 64).
template <int MQ>
void flash_scores(const FlashArgs& a, int64_t h, int64_t i0, int64_t kb0, float* s) {
  const int64_t kvh = h / (a.n_heads / a.n_kv_heads), hd = a.head_dim;
  const float* kt = a.kt + kvh * hd * a.nk_pad + kb0;
  const float* qr[MQ];
  for (int t = 0; t < MQ; ++t) qr[t] = a.q + ((i0 + t) * a.n_heads + h) * hd;
  __m512 acc[MQ][4];
  for (int t = 0; t < MQ; ++t)
    for (int c = 0; c < 4; ++c) acc[t][c] = _mm512_setzero_ps();
  for (int64_t d = 0; d < hd; ++d) {
    const float* kr = kt + d * a.nk_pad;
    const __m512 k0 = _mm512_loadu_ps(kr), k1 = _mm512_loadu_ps(kr + 16), k2 = _mm512_loadu_ps(kr + 32),
                 k3 = _mm512_loadu_ps(kr + 48);
    for (int t = 0; t < MQ; ++t) {
      const __m512 qb = _mm512_set1_ps(qr[t][d]);
      acc[t][0] = _mm512_fmadd_ps(qb, k0, acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(qb, k1, acc[t][1]);
      acc[t][2] = _mm512_fmadd_ps(qb, k2, acc[t][2]);
      acc[t][3] = _mm512_fmadd_ps(qb, k3, acc[t][3]);
    }
  }
  const __m512 vs = _mm512_set1_ps(a.scale);
  for (int t = 0; t < MQ; ++t)
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(s + t * kAttKb + 16 * c, _mm512_mul_ps(acc[t][c], vs));
}

// o[t][c0 .. c0 + 16*NV) = alpha[t] * o[t] + Σ_j p[t][j] · v_j for MQ queries, keys [kb0, kb0 + kn); the last
// of the NV vectors is masked to the head_dim tail.
template <int MQ, int NV>
void flash_pv_cols(const FlashArgs& a, int64_t h, int64_t kb0, int64_t kn, const float* p, const float* alpha,
                   float* o, int64_t c0) {
  const int64_t kvh = h / (a.n_heads / a.n_kv_heads), hd = a.head_dim, ldv = a.n_kv_heads * hd;
  const __mmask16 last = tail_mask(hd - c0 - 16 * (NV - 1));
  auto msk = [&](int c) { return c == NV - 1 ? last : static_cast<__mmask16>(0xffff); };
  __m512 acc[MQ][NV];
  for (int t = 0; t < MQ; ++t) {
    const __m512 al = _mm512_set1_ps(alpha[t]);
    for (int c = 0; c < NV; ++c) acc[t][c] = _mm512_mul_ps(al, _mm512_maskz_loadu_ps(msk(c), o + t * hd + c0 + 16 * c));
  }
  const float* vr = a.v + (kb0 * a.n_kv_heads + kvh) * hd + c0;
  for (int64_t j = 0; j < kn; ++j, vr += ldv) {
    __m512 vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = _mm512_maskz_loadu_ps(msk(c), vr + 16 * c);
    for (int t = 0; t < MQ; ++t) {
      const __m512 pb = _mm512_set1_ps(p[t * kAttKb + j]);
      for (int c = 0; c < NV; ++c) acc[t][c] = _mm512_fmadd_ps(pb, vv[c], acc[t][c]);
    }
  }
  for (int t = 0; t < MQ; ++t)
    for (int c = 0; c < NV; ++c) _mm512_mask_storeu_ps(o + t * hd + c0 + 16 * c, msk(c), acc[t][c]);
}

// P·V over the whole head_dim: one column chunk of up to 5 vectors (head_dim <= 80: 20 accumulators), else
// chunks of 4 vectors.
template <int MQ>
void flash_pv(const FlashArgs& a, int64_t h, int64_t kb0, int64_t kn, const float* p, const float* alpha, float* o) {
  const int64_t hd = a.head_dim;
  const int64_t nvec = (hd + 15) / 16;
  int64_t c0 = 0;
  int64_t left = nvec <= 5 ? nvec : 0;
  if (nvec > 5) {
    for (; hd - c0 > 64; c0 += 64) flash_pv_cols<MQ, 4>(a, h, kb0, kn, p, alpha, o, c0);
    left = (hd - c0 + 15) / 16;
  }
  switch (left) {
    case 1: return flash_pv_cols<MQ, 1>(a, h, kb0, kn, p, alpha, o, c0);
    case 2: return flash_pv_cols<MQ, 2>(a, h, kb0, kn, p, alpha, o, c0);
    case 3: return flash_pv_cols<MQ, 3>(a, h, kb0, kn, p, alpha, o, c0);
    case 4: return flash_pv_cols<MQ, 4>(a, h, kb0, kn, p, alpha, o, c0);
    default: return flash_pv_cols<MQ, 5>(a, h, kb0, kn, p, alpha, o, c0);
  }
}

// Queries [i0, i0 + mq) (mq <= 4) of head h against key block [kb0, kb0 + kn): scores, mask, online softmax
// update of mx/l, P·V into o ([mq][head_dim] running output).
template <int MQ>
void flash_tile(const FlashArgs& a, int64_t h, int64_t i0, int64_t kb0, int64_t kn, float* s, float* mx, float* l,
                float* o) {
  flash_scores<MQ>(a, h, i0, kb0, s);
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  float alpha[MQ];
  for (int t = 0; t < MQ; ++t) {
    float* st = s + t * kAttKb;
    const int64_t qp = a.q_pos0 + i0 + t;
    __m512 bm = ninf;
    for (int c = 0; c < 4; ++c) {
      __m512 x = _mm512_loadu_ps(st + 16 * c);
      if (a.softcap > 0.0f) {
        const __m512 cap = _mm512_set1_ps(a.softcap);
        x = _mm512_mul_ps(cap, tanh_ps(_mm512_div_ps(x, cap)));
      }
      __mmask16 valid = tail_mask(kn - 16 * c);
      if (16 * c >= kn) valid = 0;
      if (a.mask != nullptr)
        for (int b = 0; b < 16; ++b)
          if ((valid >> b) & 1u)
            if (!ref::key_visible(*a.mask, qp, a.k_pos[kb0 + 16 * c + b])) valid &= static_cast<__mmask16>(~(1u << b));
      x = _mm512_mask_blend_ps(valid, ninf, x);
      _mm512_storeu_ps(st + 16 * c, x);
      bm = _mm512_max_ps(bm, x);
    }
    const float block_max = _mm512_reduce_max_ps(bm);
    const float m_new = std::max(mx[t], block_max);
    if (m_new == -std::numeric_limits<float>::infinity()) {  // nothing visible yet: P = 0, o stays 0
      alpha[t] = 1.0f;
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(st + 16 * c, _mm512_setzero_ps());
      continue;
    }
    alpha[t] = mx[t] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(mx[t] - m_new);
    const __m512 vm = _mm512_set1_ps(m_new);
    __m512 sum = _mm512_setzero_ps();
    for (int c = 0; c < 4; ++c) {
      const __m512 x = _mm512_loadu_ps(st + 16 * c);
      const __mmask16 fin = _mm512_cmp_ps_mask(x, ninf, _CMP_NEQ_OQ);
      const __m512 e = _mm512_maskz_mov_ps(fin, exp_ps(_mm512_sub_ps(x, vm)));
      sum = _mm512_add_ps(sum, e);
      _mm512_storeu_ps(st + 16 * c, e);
    }
    l[t] = l[t] * alpha[t] + _mm512_reduce_add_ps(sum);
    mx[t] = m_new;
  }
  flash_pv<MQ>(a, h, kb0, kn, s, alpha, o);
}

void flash_attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                     const int64_t* k_pos, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                     float scale, float softcap, const AttentionMask& mask, float* out) {
  const int64_t nk_pad = (nk + kAttKb - 1) / kAttKb * kAttKb;
  // kt: [n_kv_heads][head_dim][nk_pad], keys transposed per head, zero padding.
  std::vector<float> kt(static_cast<size_t>(n_kv_heads * head_dim * nk_pad));
  parallel_for(n_kv_heads * (nk_pad / kAttKb), kAttKb * head_dim, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t kvh = w / (nk_pad / kAttKb), j0 = (w % (nk_pad / kAttKb)) * kAttKb;
      float* dst = kt.data() + kvh * head_dim * nk_pad + j0;
      for (int64_t j = j0; j < j0 + kAttKb; ++j) {
        const float* src = k + (j * n_kv_heads + kvh) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) dst[d * nk_pad + (j - j0)] = j < nk ? src[d] : 0.0f;
      }
    }
  });
  const bool all_visible = !mask.causal && mask.sliding_window <= 0 && mask.group_of_position == nullptr;
  FlashArgs a{q,       kt.data(), v,        k_pos, nk,      nk_pad, n_heads, n_kv_heads, head_dim, q_pos0,
              scale,   softcap,   all_visible ? nullptr : &mask};
  const int64_t qblocks = (nq + kAttQb - 1) / kAttQb;
  parallel_for(n_heads * qblocks, kAttQb * nk * head_dim * 2, [&](int64_t w0, int64_t w1) {
    std::vector<float> o(static_cast<size_t>(kAttQb * head_dim)), s(static_cast<size_t>(kAttMq * kAttKb));
    float mx[kAttQb], l[kAttQb];
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t h = w / qblocks, q0 = (w % qblocks) * kAttQb, qn = std::min(kAttQb, nq - q0);
      std::fill(o.begin(), o.end(), 0.0f);
      std::fill(mx, mx + kAttQb, -std::numeric_limits<float>::infinity());
      std::fill(l, l + kAttQb, 0.0f);
      for (int64_t kb0 = 0; kb0 < nk; kb0 += kAttKb) {
        const int64_t kn = std::min(kAttKb, nk - kb0);
        for (int64_t t0 = 0; t0 < qn; t0 += kAttMq) {
          float* ot = o.data() + t0 * head_dim;
          switch (std::min<int64_t>(kAttMq, qn - t0)) {
            case 4: flash_tile<4>(a, h, q0 + t0, kb0, kn, s.data(), mx + t0, l + t0, ot); break;
            case 3: flash_tile<3>(a, h, q0 + t0, kb0, kn, s.data(), mx + t0, l + t0, ot); break;
            case 2: flash_tile<2>(a, h, q0 + t0, kb0, kn, s.data(), mx + t0, l + t0, ot); break;
            default: flash_tile<1>(a, h, q0 + t0, kb0, kn, s.data(), mx + t0, l + t0, ot); break;
          }
        }
      }
      for (int64_t t = 0; t < qn; ++t) {
        float* dst = out + ((q0 + t) * n_heads + h) * head_dim;
        const float inv = l[t] > 0.0f ? 1.0f / l[t] : 0.0f;
        for (int64_t c = 0; c < head_dim; ++c) dst[c] = o[static_cast<size_t>(t * head_dim + c)] * inv;
      }
    }
  });
}

// Lane j of the result = the sum of the lanes of v[j] (16 horizontal sums as one transpose-add tree:
// 45 shuffles/adds instead of 16 separate reductions of ~8 dependent steps each).
inline __m512 sum16(const __m512* v) {
  __m512 a[8], b[4];
#pragma GCC unroll 8
  for (int m = 0; m < 8; ++m)  // per 128-bit block: [v2m, v2m+1, v2m, v2m+1] partials
    a[m] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * m], v[2 * m + 1]), _mm512_unpackhi_ps(v[2 * m], v[2 * m + 1]));
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {  // per 128-bit block: keys 4m .. 4m + 3
    const __m512d x = _mm512_castps_pd(a[2 * m]), y = _mm512_castps_pd(a[2 * m + 1]);
    b[m] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // Blocks of c0: b0 (0 + 1), b0 (2 + 3), b1 (0 + 1), b1 (2 + 3); c1 the same for b2, b3.
  const __m512 c0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88), _mm512_shuffle_f32x4(b[0], b[1], 0xDD));
  const __m512 c1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88), _mm512_shuffle_f32x4(b[2], b[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c0, c1, 0x88), _mm512_shuffle_f32x4(c0, c1, 0xDD));
}

// Attention one query row at a time (decode, and masked prefill). Keys are split into chunks of
// kRowChunk; per (query, kv head, key chunk), for each query head of that kv head: the chunk's scores,
// 16 keys at a time (each key's dot product kept as one vector of partial sums, the 16 reduced
// together), masked to -inf; the chunk's max m_c; p = exp(s - m_c), its sum l_c and Σ p·v in NV
// registers (head_dim <= 16·NV). Then per (query, head): out = Σ_c e^(m_c − M)·o_c / Σ_c e^(m_c − M)·l_c
// with M the max of the m_c. All query heads of a kv head run on the chunk's K/V rows while they are in
// L1, so decode reads each layer's KV once instead of once per query head, and the chunks spread a
// decode step over the threads. Prefill and cached decode run this same code with the same chunk
// boundaries (key index multiples of kRowChunk), so they give the same numbers.
// The version before this one ran per (query, head) over every key, reducing each dot product on its
// own: SmolLM2 decode at ~290 positions spent ~2 ms per token there (one thread, thread CPU time: 30
// layers of 290 keys, 9 heads / 3 kv heads: 3.3 ms -> 1.7 ms from L3, 1.4 -> 0.6 ms L2-resident).
constexpr int64_t kRowChunk = 64;

// MLX affine codes (kv_quantize's layout: value i of a row at bits [i*bits, (i+1)*bits) of a
// little-endian bit stream of u32 words, bits <= 8) to f32, 16 values at a time. Sixteen values
// starting at a multiple of 16 span exactly `bits` 16-bit words, so one masked load takes them; each
// 32-bit lane then gathers the two words holding its bits (permutexvar_epi16: AVX512BW), shifts and
// masks. w = scale * q + bias with the product rounded before the add (explicitly rounded intrinsics,
// which the compiler cannot contract into an FMA): the reference's and CUDA's values, bit for bit.
struct Unpack16 {
  __m512i idx, shift, mask;
  __mmask32 words;
  explicit Unpack16(int bits) {
    alignas(64) uint16_t ix[32];
    alignas(64) uint32_t sh[16];
    for (int i = 0; i < 16; ++i) {
      ix[2 * i] = static_cast<uint16_t>((i * bits) >> 4);
      ix[2 * i + 1] = static_cast<uint16_t>(((i * bits) >> 4) + 1);
      sh[i] = static_cast<uint32_t>((i * bits) & 15);
    }
    idx = _mm512_load_si512(ix);
    shift = _mm512_load_si512(sh);
    mask = _mm512_set1_epi32((1 << bits) - 1);
    words = static_cast<__mmask32>((1u << bits) - 1u);
  }
  // Values [16 m, 16 m + 16) of a packed row (m: the 16-value block index), dequantized.
  __m512 operator()(const uint32_t* row, int64_t m, int bits, float s, float b) const {
    const __m512i w = _mm512_maskz_loadu_epi16(words, reinterpret_cast<const uint16_t*>(row) + m * bits);
    const __m512i codes = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi16(idx, w), shift), mask);
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    return _mm512_add_round_ps(_mm512_mul_round_ps(_mm512_set1_ps(s), _mm512_cvtepi32_ps(codes), kRound),
                               _mm512_set1_ps(b), kRound);
  }
};

// Keys [j_begin, j_end) of kv head kvh (head_dim = 16 NV values) from a quantized plane into
// dst [j_end - j_begin][16 NV] f32.
template <int NV>
void dequantize_head_rows(const uint32_t* packed, const float* scales, const float* biases, int64_t row, int bits,
                          int group_size, const Unpack16& up, int64_t kvh, int64_t j_begin, int64_t j_end, float* dst) {
  const int64_t words = kv_packed_words(row, bits), groups = row / group_size, m0 = kvh * NV;
  for (int64_t j = j_begin; j < j_end; ++j) {
    const uint32_t* pr = packed + j * words;
    const float* sr = scales + j * groups;
    const float* br = biases + j * groups;
    float* d = dst + (j - j_begin) * 16 * NV;
#pragma GCC unroll 8
    for (int cc = 0; cc < NV; ++cc) {
      const int64_t g = (m0 + cc) * 16 / group_size;
      _mm512_store_ps(d + 16 * cc, up(pr, m0 + cc, bits, sr[g], br[g]));
    }
  }
}

// Row attention reads K/V either as f32 rows ([nk][n_kv_heads][head_dim], `k`/`v`) or, with
// kQuant, from a quantized cache (`qkv`): each work item (kv head, key chunk) then dequantizes its
// chunk's K and V of that head into L1 first, and the same arithmetic runs on those rows, so the
// result is bit for bit attention() over kv_dequantize's rows.
template <int NV, bool kQuant = false>
void row_attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
                   int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                   const AttentionMask& mask, float* out, const QuantizedKV* qkv = nullptr) {
  const int64_t group = n_heads / n_kv_heads, row_len = n_kv_heads * head_dim;
  const int64_t ld = kQuant ? 16 * NV : row_len;  // floats between consecutive keys of one head
  const Unpack16 up(kQuant ? qkv->bits : 2);
  const int64_t nch = (nk + kRowChunk - 1) / kRowChunk;
  const __mmask16 last = tail_mask(head_dim - 16 * (NV - 1));
  auto msk = [&](int c) { return c == NV - 1 ? last : static_cast<__mmask16>(0xffff); };
  // Plain causal (or no) masking is a comparison of positions; windows and groups take the general test.
  const bool simple = mask.sliding_window <= 0 && mask.group_of_position == nullptr;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const __m512 ninf = _mm512_set1_ps(kNegInf);
  const RowAttentionScratch scratch(nq, n_heads, nch, head_dim);
  const int64_t qb = scratch.qb;
  float* const cmax = scratch.cmax;
  float* const csum = scratch.csum;
  float* const part = scratch.part;

  for (int64_t i0 = 0; i0 < nq; i0 += qb) {
    const int64_t nqb = std::min(qb, nq - i0);
    parallel_for(nqb * n_kv_heads * nch, kRowChunk * head_dim * group * 2, [&](int64_t w0, int64_t w1) {
      alignas(64) float p[kRowChunk];
      // kQuant: this item's K and V rows of one head, dequantized (2 x 32 KB at head_dim 128).
      alignas(64) float kq[kQuant ? kRowChunk * 16 * NV : 1];
      alignas(64) float vq[kQuant ? kRowChunk * 16 * NV : 1];
      for (int64_t w = w0; w < w1; ++w) {
        // Items of one key chunk are adjacent for all kv heads (kv head fastest), so a thread's run of
        // items covers whole [chunk][kv head][head_dim] blocks of the cache, which are contiguous: one
        // mostly-sequential stream instead of n_kv_heads interleaved strided ones. SmolLM2 decode,
        // 290 keys x 30 layers from memory, one thread, thread CPU time, six alternating runs at load
        // 8-10 (/tmp harness): 1.60-1.92 ms per token (median 1.87) with chunks fastest -> 1.31-1.77 (1.42).
        const int64_t ii = w / (n_kv_heads * nch), c = (w / n_kv_heads) % nch, kvh = w % n_kv_heads;
        const int64_t qp = q_pos0 + i0 + ii, j_begin = c * kRowChunk, j_end = std::min(nk, j_begin + kRowChunk);
        const float* kb = kQuant ? kq - j_begin * ld : k + kvh * head_dim;
        const float* vb = kQuant ? vq - j_begin * ld : v + kvh * head_dim;
        // The in-loop prefetches run 32 keys (K) and 16 keys (V) ahead, so the item's first keys would
        // arrive on demand, one miss latency at a time: fetch those rows now.
        if (!kQuant)
          for (int64_t j = j_begin; j < std::min(j_end, j_begin + 32); ++j)
#pragma GCC unroll 8
            for (int cc = 0; cc < NV; ++cc) {
              _mm_prefetch(reinterpret_cast<const char*>(kb + j * ld + 16 * cc), _MM_HINT_T1);
              if (j < j_begin + 16) _mm_prefetch(reinterpret_cast<const char*>(vb + j * ld + 16 * cc), _MM_HINT_T1);
            }
        if (simple && mask.causal) {
          // A chunk wholly after the query (causal prefill: about half of them) is skipped: the combine
          // ignores chunks whose max is -inf. k_pos need not be sorted (ring caches), so take its minimum.
          __m512i lowest = _mm512_set1_epi64(std::numeric_limits<int64_t>::max());
          for (int64_t j = j_begin; j < j_end; j += 8) {
            const __mmask8 m8 = static_cast<__mmask8>(tail_mask(j_end - j));
            lowest = _mm512_min_epi64(lowest, _mm512_mask_loadu_epi64(lowest, m8, k_pos + j));
          }
          if (_mm512_reduce_min_epi64(lowest) > qp) {
            for (int64_t g = 0; g < group; ++g) {
              const int64_t row = ii * n_heads + kvh * group + g;
              cmax[row * nch + c] = kNegInf;
              csum[row * nch + c] = 0.0f;
            }
            continue;
          }
        }
        if constexpr (kQuant) {
          dequantize_head_rows<NV>(qkv->k_packed, qkv->k_scales, qkv->k_biases, row_len, qkv->bits, qkv->group_size, up,
                                   kvh, j_begin, j_end, kq);
          dequantize_head_rows<NV>(qkv->v_packed, qkv->v_scales, qkv->v_biases, row_len, qkv->bits, qkv->group_size, up,
                                   kvh, j_begin, j_end, vq);
        }
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = kvh * group + g, row = ii * n_heads + h;
          const float* qi = q + ((i0 + ii) * n_heads + h) * head_dim;
          __m512 qv[NV];
#pragma GCC unroll 8
          for (int cc = 0; cc < NV; ++cc) qv[cc] = _mm512_maskz_loadu_ps(msk(cc), qi + 16 * cc);
          __m512 vmax = ninf;
          for (int64_t j0 = j_begin; j0 < j_end; j0 += 16) {
            const int64_t kn = std::min<int64_t>(16, j_end - j0);
            __m512 partial[16];
#pragma GCC unroll 16
            for (int jj = 0; jj < 16; ++jj) {
              if (jj < kn) {
                const float* kr = kb + (j0 + jj) * ld;
                // One head's keys are 16·NV floats every n_kv_heads·head_dim: a strided stream the hardware
                // prefetcher follows poorly from a cold cache (decode reads each layer's KV once per token).
                // Into L2 like the GEMVs' prefetches (simd_linear_avx512.cpp), 32 keys ahead (V: 16), and
                // each item fetches its first keys first. SmolLM2 4-bit decode, one thread, thread CPU time,
                // alternating (load 7-9): L1 -> L2 7.84-7.94 -> 7.46-7.93 ms/token; item-start prefetch
                // 6.75-6.90 -> 6.53-6.76; 16/8 -> 32/16 keys ahead 6.61-7.04 -> 6.41-6.49 (and 9.27 -> 9.13).
                if (g == 0 && !kQuant)
#pragma GCC unroll 8
                  for (int cc = 0; cc < NV; ++cc)
                    _mm_prefetch(reinterpret_cast<const char*>(kr + 32 * ld + 16 * cc), _MM_HINT_T1);
                __m512 acc = _mm512_mul_ps(qv[0], _mm512_maskz_loadu_ps(msk(0), kr));
#pragma GCC unroll 8
                for (int cc = 1; cc < NV; ++cc)
                  acc = _mm512_fmadd_ps(qv[cc], _mm512_maskz_loadu_ps(msk(cc), kr + 16 * cc), acc);
                partial[jj] = acc;
              } else {
                partial[jj] = _mm512_setzero_ps();
              }
            }
            __m512 s16 = _mm512_mul_ps(sum16(partial), _mm512_set1_ps(scale));
            if (softcap > 0.0f) {
              const __m512 cap = _mm512_set1_ps(softcap);
              s16 = _mm512_mul_ps(cap, tanh_ps(_mm512_div_ps(s16, cap)));
            }
            __mmask16 valid = tail_mask(kn);
            if (simple) {
              if (mask.causal) {
                const __m512i vq = _mm512_set1_epi64(qp);
                const __mmask8 lo = _mm512_cmp_epi64_mask(
                    _mm512_maskz_loadu_epi64(static_cast<__mmask8>(valid), k_pos + j0), vq, _MM_CMPINT_LE);
                const __mmask8 hi = _mm512_cmp_epi64_mask(
                    _mm512_maskz_loadu_epi64(static_cast<__mmask8>(valid >> 8), k_pos + j0 + 8), vq, _MM_CMPINT_LE);
                valid &= static_cast<__mmask16>(lo | (static_cast<unsigned>(hi) << 8));
              }
            } else {
              for (int b = 0; b < kn; ++b)
                if (!ref::key_visible(mask, qp, k_pos[j0 + b])) valid &= static_cast<__mmask16>(~(1u << b));
            }
            s16 = _mm512_mask_blend_ps(valid, ninf, s16);
            _mm512_store_ps(p + (j0 - j_begin), s16);
            vmax = _mm512_max_ps(vmax, s16);
          }
          const float mx = _mm512_reduce_max_ps(vmax);
          cmax[row * nch + c] = mx;
          __m512 acc[NV];
#pragma GCC unroll 8
          for (int cc = 0; cc < NV; ++cc) acc[cc] = _mm512_setzero_ps();
          float sum = 0.0f;
          if (mx != kNegInf) {
            const __m512 vm = _mm512_set1_ps(mx);
            __m512 vs = _mm512_setzero_ps();
            for (int64_t j = 0; j < j_end - j_begin; j += 16) {
              const __mmask16 m = tail_mask(j_end - j_begin - j);
              const __m512 x = _mm512_maskz_load_ps(m, p + j);
              // Masked keys (-inf) give exactly 0.
              const __m512 e =
                  _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, ninf, _CMP_NEQ_OQ) & m, exp_ps(_mm512_sub_ps(x, vm)));
              vs = _mm512_add_ps(vs, e);
              _mm512_store_ps(p + j, e);
            }
            sum = _mm512_reduce_add_ps(vs);
            // Two keys per step into two accumulator sets: one set would chain every key's FMAs on the
            // previous key's (4-cycle latency per key). Invisible (or underflowed) keys, p == 0, are masked
            // out rather than multiplied, so a non-finite V row of a masked key cannot leak in.
            __m512 acc2[NV];
#pragma GCC unroll 8
            for (int cc = 0; cc < NV; ++cc) acc2[cc] = _mm512_setzero_ps();
            auto add_key = [&](__m512* a, int64_t j) {
              const float pj = p[j - j_begin];
              const __mmask16 live = pj != 0.0f ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>(0);
              const float* vr = vb + j * ld;
              if (g == 0 && !kQuant)
#pragma GCC unroll 8
                for (int cc = 0; cc < NV; ++cc)
                  _mm_prefetch(reinterpret_cast<const char*>(vr + 16 * ld + 16 * cc), _MM_HINT_T1);
              const __m512 vp = _mm512_set1_ps(pj);
#pragma GCC unroll 8
              for (int cc = 0; cc < NV; ++cc)
                a[cc] = _mm512_mask3_fmadd_ps(vp, _mm512_maskz_loadu_ps(msk(cc), vr + 16 * cc), a[cc], live);
            };
            int64_t j = j_begin;
            for (; j + 2 <= j_end; j += 2) {
              add_key(acc, j);
              add_key(acc2, j + 1);
            }
            if (j < j_end) add_key(acc, j);
#pragma GCC unroll 8
            for (int cc = 0; cc < NV; ++cc) acc[cc] = _mm512_add_ps(acc[cc], acc2[cc]);
          }
          csum[row * nch + c] = sum;
          float* o = part + (row * nch + c) * head_dim;
#pragma GCC unroll 8
          for (int cc = 0; cc < NV; ++cc) _mm512_mask_storeu_ps(o + 16 * cc, msk(cc), acc[cc]);
        }
      }
    });
    parallel_for(nqb * n_heads, nch * head_dim, [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        float mx = kNegInf;
        for (int64_t c = 0; c < nch; ++c) mx = std::max(mx, cmax[row * nch + c]);
        float* oi = out + (i0 * n_heads + row) * head_dim;
        if (mx == kNegInf) {  // no visible key
          for (int64_t d = 0; d < head_dim; ++d) oi[d] = 0.0f;
          continue;
        }
        float total = 0.0f;
        __m512 acc[NV];
#pragma GCC unroll 8
        for (int cc = 0; cc < NV; ++cc) acc[cc] = _mm512_setzero_ps();
        for (int64_t c = 0; c < nch; ++c) {
          const float m = cmax[row * nch + c];
          if (m == kNegInf) continue;  // nothing visible in this chunk
          const float wgt = std::exp(m - mx);
          total += wgt * csum[row * nch + c];
          const __m512 vw = _mm512_set1_ps(wgt);
          const float* o = part + (row * nch + c) * head_dim;
#pragma GCC unroll 8
          for (int cc = 0; cc < NV; ++cc) acc[cc] = _mm512_fmadd_ps(vw, _mm512_maskz_loadu_ps(msk(cc), o + 16 * cc), acc[cc]);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / total);
#pragma GCC unroll 8
        for (int cc = 0; cc < NV; ++cc) _mm512_mask_storeu_ps(oi + 16 * cc, msk(cc), _mm512_mul_ps(acc[cc], inv));
      }
    });
  }
}

}  // namespace

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out) {
  // The blocked path serves bidirectional attention (vision towers, where sequences are long). Masked prefill
  // keeps the single-max path below: its online rescaling differs from it by ~1e-6 absolute, which the KV-cache
  // tests (prefill vs cached decode at 1e-6) do not allow; extending it there needs an exact-max first pass.
  const bool all_visible = !mask.causal && mask.sliding_window <= 0 && mask.group_of_position == nullptr;
  if (nq >= kFlashMinQueries && all_visible) {
    flash_attention(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
    return;
  }
  const int64_t nvec = (head_dim + 15) / 16;
  if (nvec <= 8) {
    switch (nvec) {
      case 1: return row_attention<1>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
      case 2: return row_attention<2>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
      case 3: return row_attention<3>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
      case 4: return row_attention<4>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
      case 5: return row_attention<5>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
      case 6: return row_attention<6>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
      case 7: return row_attention<7>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
      default: return row_attention<8>(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
    }
  }
  const int64_t group = n_heads / n_kv_heads;
  parallel_for(nq * n_heads, nk * head_dim * 2, [&](int64_t w0, int64_t w1) {
    std::vector<float> p(static_cast<size_t>(nk));
    std::vector<int64_t> vis(static_cast<size_t>(nk));
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t i = w / n_heads, h = w % n_heads, kvh = h / group, qp = q_pos0 + i;
      const float* qi = q + (i * n_heads + h) * head_dim;
      float* oi = out + (i * n_heads + h) * head_dim;
      int64_t nv = 0;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < nk; ++j) {
        if (!ref::key_visible(mask, qp, k_pos[j])) continue;
        float s = dot(qi, k + (j * n_kv_heads + kvh) * head_dim, head_dim) * scale;
        if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
        vis[nv] = j;
        p[nv++] = s;
        mx = std::max(mx, s);
      }
      for (int64_t c = 0; c < head_dim; ++c) oi[c] = 0.0f;
      if (nv == 0) continue;
      const __m512 vm = _mm512_set1_ps(mx);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t j = 0; j < nv; j += 16) {
        __mmask16 m = tail_mask(nv - j);
        __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.data() + j), vm));
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
        _mm512_mask_storeu_ps(p.data() + j, m, e);
      }
      const float inv = 1.0f / _mm512_reduce_add_ps(sum);
      for (int64_t j = 0; j < nv; ++j) axpy(oi, p[j] * inv, v + (vis[j] * n_kv_heads + kvh) * head_dim, head_dim);
    }
  });
}

void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out) {
  // n is a multiple of group_size >= 32 (ops.cpp), so rows are whole 16-value blocks.
  const Unpack16 up(bits);
  const int64_t words = kv_packed_words(n, bits), groups = n / group_size;
  parallel_for(rows, n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t m = 0; m < n / 16; ++m) {
        const int64_t g = m * 16 / group_size;
        _mm512_storeu_ps(out + r * n + 16 * m,
                         up(packed + r * words, m, bits, scales[r * groups + g], biases[r * groups + g]));
      }
  });
}

void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out) {
  // Where attention() would run the row kernel (decode, masked prefill; head_dim <= 128, a multiple of
  // group_size so of 32), fuse: no f32 K/V of the whole cache is written. Elsewhere (bidirectional
  // blocks of >= 8 queries: the flash kernel transposes K anyway) dequantize and call attention().
  const bool all_visible = !mask.causal && mask.sliding_window <= 0 && mask.group_of_position == nullptr;
  if (!(nq >= kFlashMinQueries && all_visible)) {
    switch (head_dim) {
      case 32: return row_attention<2, true>(q, nq, q_pos0, nullptr, nullptr, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out, &kv);
      case 64: return row_attention<4, true>(q, nq, q_pos0, nullptr, nullptr, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out, &kv);
      case 96: return row_attention<6, true>(q, nq, q_pos0, nullptr, nullptr, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out, &kv);
      case 128: return row_attention<8, true>(q, nq, q_pos0, nullptr, nullptr, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out, &kv);
      default: break;
    }
  }
  const int64_t row = n_kv_heads * head_dim;
  std::vector<float> k(static_cast<size_t>(nk * row)), v(k.size());
  if (nk > 0) {
    avx512::kv_dequantize(kv.k_packed, kv.k_scales, kv.k_biases, nk, row, kv.bits, kv.group_size, k.data());
    avx512::kv_dequantize(kv.v_packed, kv.v_scales, kv.v_biases, nk, row, kv.bits, kv.group_size, v.data());
  }
  avx512::attention(q, nq, q_pos0, k.data(), v.data(), k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
}

void add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}
void scale(float* y, float s, int64_t n) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + i), vs));
  }
}
void mul(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}
void softcap(float* x, int64_t n, float cap) {
  const __m512 vc = _mm512_set1_ps(cap), vinv = _mm512_set1_ps(1.0f / cap);
  parallel_for(n, 8, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i += 16) {
      __mmask16 m = tail_mask(i1 - i);
      __m512 t = tanh_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv));
      _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(t, vc));
    }
  });
}

}  // namespace vlm::ops::cpu::avx512

#pragma GCC pop_options
