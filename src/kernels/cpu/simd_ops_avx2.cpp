// AVX2 versions of the non-matrix ops a decoder runs every token: RMSNorm (plain and fused with the
// residual add), activations, softmax, attention (f32, and over a quantized KV cache by dequantizing
// first) and the elementwise helpers. The same algorithms as simd_ops_avx512.cpp at 8 lanes and with
// 16 vector registers instead of 32, which changes two things:
// - exp has no scalef: 2^n is built in the exponent bits, so inputs are clamped to [-87.3, 88.3]
//   (exp(-87.3) ~ 1.2e-38 stands in for anything smaller; every caller subtracts a row max first, so
//   such terms are ~1e-38 of the sum either way).
// - Attention keeps no head_dim-long register arrays: scores take 8 keys at a time against one
//   8-wide slice of q (8 accumulators), and P·V walks head_dim in column blocks of up to 8 vectors.
//   Prefill (8+ queries) runs blocks of queries over each L1-resident K/V chunk, two rows per load,
//   with every row's arithmetic the row kernel's (the AVX-512 file has a flash kernel instead for
//   unmasked attention and the row kernel for masked prefill).
// Tails (lengths not a multiple of 8) go through a zero-padded stack copy rather than masked
// loads/stores, which are slow on some AMD cores. RoPE, LayerNorm and KV (de)quantization stay on the
// reference: per token they are small next to the GEMVs (RoPE's cos/sin are per token, not per head).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/avx2_common.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/ref/ref_ops.h"
#include "kernels/cpu/simd_avx2.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace vlm::ops::cpu::avx2 {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Lane j of the result = the sum of the lanes of v[j].
inline __m256 sum8(const __m256* v) {
  const __m256 a0 = _mm256_hadd_ps(v[0], v[1]), a1 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 a2 = _mm256_hadd_ps(v[4], v[5]), a3 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 b0 = _mm256_hadd_ps(a0, a1), b1 = _mm256_hadd_ps(a2, a3);  // lanes: (v0..v3 lo, v4..v7 lo | hi)
  return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
}

inline __m256 exp_ps(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3f)), _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline __m256 tanh_ps(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 ax = _mm256_andnot_ps(sign, x);
  const __m256 e = exp_ps(_mm256_mul_ps(ax, _mm256_set1_ps(-2.0f)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 big = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
  // |x| < 0.125: x - x³/3 + 2x⁵/15 - 17x⁷/315, where 1 - 2/(e^{2x}+1) would cancel.
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-17.0f / 315.0f);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.0f / 15.0f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 3.0f));
  p = _mm256_fmadd_ps(p, x2, one);
  const __m256 small = _mm256_mul_ps(p, ax);
  const __m256 r = _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.125f), _CMP_LT_OQ));
  return _mm256_or_ps(r, _mm256_and_ps(x, sign));
}

inline __m256 act_ps(__m256 x, Activation act) {
  const __m256 one = _mm256_set1_ps(1.0f);
  switch (act) {
    case Activation::kSilu: return _mm256_div_ps(x, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    case Activation::kQuickGelu:
      return _mm256_div_ps(x, _mm256_add_ps(one, exp_ps(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)))));
    case Activation::kGeluTanh: {
      const __m256 cubic = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), _mm256_mul_ps(x, x)), x, x);
      const __m256 inner = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), cubic);
      return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, tanh_ps(inner)));
    }
    case Activation::kRelu: return _mm256_max_ps(x, _mm256_setzero_ps());
    case Activation::kGeluErf: break;  // handled by the callers (scalar erf)
  }
  return x;
}

// The tail [i, n) (< 8 values) of up to two arrays, zero-padded to one vector, and back.
struct Tail {
  alignas(32) float a[8] = {}, b[8] = {};
  int64_t len;
  Tail(const float* x, const float* y, int64_t left) : len(left) {
    std::memcpy(a, x, static_cast<size_t>(left) * 4);
    if (y != nullptr) std::memcpy(b, y, static_cast<size_t>(left) * 4);
  }
  __m256 va() const { return _mm256_load_ps(a); }
  __m256 vb() const { return _mm256_load_ps(b); }
  void store(float* dst, __m256 v) {
    _mm256_store_ps(a, v);
    std::memcpy(dst, a, static_cast<size_t>(len) * 4);
  }
};

// y[i] = f(x[i], z[i]) 8 at a time, z optional (nullptr: zeros).
template <typename F>
inline void map8(float* y, const float* x, const float* z, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i), z ? _mm256_loadu_ps(z + i) : _mm256_setzero_ps()));
  if (i < n) {
    Tail t(x + i, z ? z + i : nullptr, n - i);
    t.store(y + i, f(t.va(), t.vb()));
  }
}

// map8's operations, as named functors: a lambda nested in a pool job's lambda does not inherit this
// file's target attribute, and passing __m256 to it would change the ABI.
struct AddOp {
  __m256 operator()(__m256 a, __m256 b) const { return _mm256_add_ps(a, b); }
};
struct MulOp {
  __m256 operator()(__m256 a, __m256 b) const { return _mm256_mul_ps(a, b); }
};
struct ScaleOp {
  __m256 s;
  __m256 operator()(__m256 a, __m256) const { return _mm256_mul_ps(a, s); }
};
struct ActOp {
  Activation act;
  __m256 operator()(__m256 a, __m256) const { return act_ps(a, act); }
};
struct GatedOp {
  Activation act;
  __m256 operator()(__m256 g, __m256 u) const { return _mm256_mul_ps(act_ps(g, act), u); }
};
struct SoftcapOp {
  __m256 cap, inv;
  __m256 operator()(__m256 a, __m256) const { return _mm256_mul_ps(tanh_ps(_mm256_mul_ps(a, inv)), cap); }
};

inline float sum_squares(const float* x, int64_t d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= d; c += 16) {
    const __m256 u = _mm256_loadu_ps(x + c), v = _mm256_loadu_ps(x + c + 8);
    a0 = _mm256_fmadd_ps(u, u, a0);
    a1 = _mm256_fmadd_ps(v, v, a1);
  }
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; c < d; ++c) s += x[c] * x[c];
  return s;
}

// Values [c, c + 8) of a contiguous f32/f16/bf16 vector (a norm weight) as f32.
inline __m256 load8_any(const void* p, DType dt, int64_t c) {
  switch (dt) {
    case DType::kBF16:
      return _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + c))),
          16));
    case DType::kF16:
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + c)));
    default: return _mm256_loadu_ps(static_cast<const float*>(p) + c);
  }
}

// One LayerNorm row: the reference's two passes (mean, then Σ(x − mean)²), 8 lanes at a time; w and b are f32
// (ones and zeros where the op has none).
inline void layer_norm_row(const float* xi, float* yi, int64_t d, const float* w, const float* b, float eps) {
  __m256 s = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= d; c += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(xi + c));
  float sum = hsum(s);
  for (; c < d; ++c) sum += xi[c];
  const float mean = sum / static_cast<float>(d);
  const __m256 vm = _mm256_set1_ps(mean);
  __m256 v2 = _mm256_setzero_ps();
  for (c = 0; c + 8 <= d; c += 8) {
    const __m256 dv = _mm256_sub_ps(_mm256_loadu_ps(xi + c), vm);
    v2 = _mm256_fmadd_ps(dv, dv, v2);
  }
  float var = hsum(v2);
  for (; c < d; ++c) var += (xi[c] - mean) * (xi[c] - mean);
  const float inv = 1.0f / std::sqrt(var / static_cast<float>(d) + eps);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (c = 0; c + 8 <= d; c += 8)
    _mm256_storeu_ps(yi + c, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xi + c), vm), vinv),
                                             _mm256_loadu_ps(w + c), _mm256_loadu_ps(b + c)));
  for (; c < d; ++c) yi[c] = (xi[c] - mean) * inv * w[c] + b[c];
}

// yi = xi · inv · (w + offset), the weight read in its stored dtype.
inline void scale_row(const float* xi, float* yi, int64_t d, float inv, const Tensor& weight, float offset) {
  const __m256 vinv = _mm256_set1_ps(inv), voff = _mm256_set1_ps(offset);
  const void* w = weight.raw();
  const DType dt = weight.dtype();
  int64_t c = 0;
  for (; c + 8 <= d; c += 8)
    _mm256_storeu_ps(yi + c, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xi + c), vinv),
                                           _mm256_add_ps(load8_any(w, dt, c), voff)));
  for (; c < d; ++c) yi[c] = xi[c] * inv * (load_f32(w, dt, c) + offset);
}

}  // namespace

void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y) {
  VLM_CHECK(weight.is_contiguous(), ErrorKind::kInvalidArgument, "rms_norm: the weight must be contiguous");
  parallel_for(n, d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* xi = x + i * d;
      scale_row(xi, y + i * d, d, 1.0f / std::sqrt(sum_squares(xi, d) / static_cast<float>(d) + eps), weight, offset);
    }
  });
}

void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y) {
  std::vector<float> w = vector_f32(weight), b = vector_f32(bias);
  if (w.empty()) w.assign(static_cast<size_t>(d), 1.0f);
  if (b.empty()) b.assign(static_cast<size_t>(d), 0.0f);
  parallel_for(n, 3 * d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) layer_norm_row(x + i * d, y + i * d, d, w.data(), b.data(), eps);
  });
}

void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y) {
  VLM_CHECK(weight.is_contiguous(), ErrorKind::kInvalidArgument, "add_rms_norm: the weight must be contiguous");
  // x += r, then the row (now in L1) is normalised into y; r is read in full before y (which may alias it).
  parallel_for(n, 2 * d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* xi = x + i * d;
      map8(xi, xi, r + i * d, d, AddOp{});
      scale_row(xi, y + i * d, d, 1.0f / std::sqrt(sum_squares(xi, d) / static_cast<float>(d) + eps), weight, offset);
    }
  });
}

void activate(float* x, int64_t n, Activation act) {
  if (act == Activation::kGeluErf) return ref::activate(x, n, act);
  parallel_for(n, 8, [&](int64_t i0, int64_t i1) {
    map8(x + i0, x + i0, nullptr, i1 - i0, ActOp{act});
  });
}

void gated_activate(float* gate, const float* up, int64_t n, Activation act) {
  if (act == Activation::kGeluErf) return ref::gated_activate(gate, up, n, act);
  parallel_for(n, 8, [&](int64_t i0, int64_t i1) {
    map8(gate + i0, gate + i0, up + i0, i1 - i0, GatedOp{act});
  });
}

void softmax(float* x, int64_t n, int64_t d) {
  parallel_for(n, d * 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * d;
      float m = kNegInf;
      for (int64_t c = 0; c < d; ++c) m = std::max(m, xr[c]);
      if (m == kNegInf) {
        std::fill(xr, xr + d, 0.0f);
        continue;
      }
      const __m256 vm = _mm256_set1_ps(m);
      __m256 sum = _mm256_setzero_ps();
      int64_t c = 0;
      for (; c + 8 <= d; c += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + c), vm));
        sum = _mm256_add_ps(sum, e);
        _mm256_storeu_ps(xr + c, e);
      }
      float s = hsum(sum);
      if (c < d) {
        Tail t(xr + c, nullptr, d - c);
        const __m256 e = exp_ps(_mm256_sub_ps(t.va(), vm));
        t.store(xr + c, e);
        for (int64_t j = c; j < d; ++j) s += xr[j];
      }
      const float inv = 1.0f / s;
      for (int64_t j = 0; j < d; ++j) xr[j] *= inv;
    }
  });
}

namespace {

// ---- attention ----------------------------------------------------------------------------------------
// One query row at a time, keys in chunks of kRowChunk (the AVX-512 row kernel's scheme): per (query,
// kv head, key chunk) and each query head of that kv head, the chunk's scores (8 keys per step, each a
// vector of partial sums over head_dim, reduced together), masked to -inf; the chunk max m_c,
// p = exp(s − m_c), its sum l_c and Σ p·v. Then per (query, head) the chunks combine as
// out = Σ_c e^(m_c − M)·o_c / Σ_c e^(m_c − M)·l_c. Decode and prefill run the same code with the same chunk
// boundaries, so a cached decode step equals the prefill row it repeats. All query heads of a kv head
// use the chunk's K/V rows while they are in L1.
constexpr int64_t kRowChunk = 64;
// attention_quantized dequantizes inside the row kernel below this many queries: every query row's items
// dequantize their chunk again, which a prefill would repeat per row.
constexpr int64_t kFusedQuantQueries = 8;

// Scores of one query against keys [j0, j0 + kn) (kn <= 8) of one head: lane jj = q · k_{j0+jj}, lanes
// past kn 0. ld: floats between consecutive keys.
inline __m256 scores8(const float* q, const float* kb, int64_t ld, int64_t j0, int64_t kn, int64_t nv) {
  const float* kr[8];
  for (int jj = 0; jj < 8; ++jj) kr[jj] = kb + (j0 + std::min<int64_t>(jj, kn - 1)) * ld;
  __m256 acc[8];
#pragma GCC unroll 8
  for (int jj = 0; jj < 8; ++jj) acc[jj] = _mm256_setzero_ps();
  for (int64_t c = 0; c < nv; ++c) {
    const __m256 qc = _mm256_loadu_ps(q + 8 * c);
#pragma GCC unroll 8
    for (int jj = 0; jj < 8; ++jj) acc[jj] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr[jj] + 8 * c), acc[jj]);
  }
  return sum8(acc);
}

// o[0 .. 8·CW) = Σ_j p[j] · v_j[c0 .. c0 + 8·CW) over keys [0, kn) of the chunk (vb: the chunk's first key,
// column c0 applied). Keys with p == 0 (invisible or underflowed) are skipped, so a non-finite V row of a
// masked key cannot leak in. With few columns two accumulator sets alternate keys (one set would chain
// every key's FMAs on the previous key's).
template <int CW>
inline void pv_block(const float* p, int64_t kn, const float* vb, int64_t ld, float* o) {
  constexpr int kSets = CW <= 4 ? 2 : 1;
  __m256 acc[kSets][CW];
#pragma GCC unroll 8
  for (int s = 0; s < kSets; ++s)
    for (int cc = 0; cc < CW; ++cc) acc[s][cc] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + kSets <= kn; j += kSets) {
#pragma GCC unroll 2
    for (int s = 0; s < kSets; ++s) {
      const float pj = p[j + s];
      if (pj == 0.0f) continue;
      const __m256 vp = _mm256_set1_ps(pj);
      const float* vr = vb + (j + s) * ld;
#pragma GCC unroll 8
      for (int cc = 0; cc < CW; ++cc) acc[s][cc] = _mm256_fmadd_ps(vp, _mm256_loadu_ps(vr + 8 * cc), acc[s][cc]);
    }
  }
  for (; j < kn; ++j) {
    if (p[j] == 0.0f) continue;
    const __m256 vp = _mm256_set1_ps(p[j]);
#pragma GCC unroll 8
    for (int cc = 0; cc < CW; ++cc) acc[0][cc] = _mm256_fmadd_ps(vp, _mm256_loadu_ps(vb + j * ld + 8 * cc), acc[0][cc]);
  }
#pragma GCC unroll 8
  for (int cc = 0; cc < CW; ++cc) {
    __m256 a = acc[0][cc];
    if constexpr (kSets == 2) a = _mm256_add_ps(a, acc[1][cc]);
    _mm256_storeu_ps(o + 8 * cc, a);
  }
}

inline void pv(const float* p, int64_t kn, const float* vb, int64_t ld, int64_t nv, float* o) {
  int64_t c = 0;
  for (; nv - c >= 8; c += 8) pv_block<8>(p, kn, vb + 8 * c, ld, o + 8 * c);
  switch (nv - c) {
    case 1: return pv_block<1>(p, kn, vb + 8 * c, ld, o + 8 * c);
    case 2: return pv_block<2>(p, kn, vb + 8 * c, ld, o + 8 * c);
    case 3: return pv_block<3>(p, kn, vb + 8 * c, ld, o + 8 * c);
    case 4: return pv_block<4>(p, kn, vb + 8 * c, ld, o + 8 * c);
    case 5: return pv_block<5>(p, kn, vb + 8 * c, ld, o + 8 * c);
    case 6: return pv_block<6>(p, kn, vb + 8 * c, ld, o + 8 * c);
    case 7: return pv_block<7>(p, kn, vb + 8 * c, ld, o + 8 * c);
    default: return;
  }
}

// Makes GCC hold v in a register: otherwise it folds the load into each FMA that uses it as a memory operand,
// so a K or V vector meant to feed two rows is loaded twice (perf annotate of scores8x2 and pv2_block: 10
// loads per 8 FMAs instead of 6).
inline void keep_in_register(__m256& v) {
  asm("" : "+x"(v));
}

// Two rows' scores8 against the same keys, each K load feeding both: per (row, key) the same accumulator over
// head_dim in the same order, and sum8's reduction tree (its two halves of four keys, then the cross-lane add),
// so each row's eight lanes equal what scores8 gives it, bit for bit. Stored to pa[0..8), pb[0..8).
inline void scores8x2(const float* qa, const float* qb, const float* kb, int64_t ld, int64_t j0, int64_t kn,
                      int64_t nv, float* pa, float* pb) {
  const float* kr[8];
  for (int jj = 0; jj < 8; ++jj) kr[jj] = kb + (j0 + std::min<int64_t>(jj, kn - 1)) * ld;
  __m256 ha[2], hb[2];  // sum8's b0 / b1 of each row
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    __m256 a[4], b[4];
#pragma GCC unroll 4
    for (int jj = 0; jj < 4; ++jj) a[jj] = b[jj] = _mm256_setzero_ps();
    for (int64_t c = 0; c < nv; ++c) {
      const __m256 qa_c = _mm256_loadu_ps(qa + 8 * c), qb_c = _mm256_loadu_ps(qb + 8 * c);
#pragma GCC unroll 4
      for (int jj = 0; jj < 4; ++jj) {
        __m256 kc = _mm256_loadu_ps(kr[4 * h + jj] + 8 * c);
        keep_in_register(kc);
        a[jj] = _mm256_fmadd_ps(qa_c, kc, a[jj]);
        b[jj] = _mm256_fmadd_ps(qb_c, kc, b[jj]);
      }
    }
    ha[h] = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    hb[h] = _mm256_hadd_ps(_mm256_hadd_ps(b[0], b[1]), _mm256_hadd_ps(b[2], b[3]));
  }
  _mm256_storeu_ps(pa, _mm256_add_ps(_mm256_permute2f128_ps(ha[0], ha[1], 0x20),
                                     _mm256_permute2f128_ps(ha[0], ha[1], 0x31)));
  _mm256_storeu_ps(pb, _mm256_add_ps(_mm256_permute2f128_ps(hb[0], hb[1], 0x20),
                                     _mm256_permute2f128_ps(hb[0], hb[1], 0x31)));
}

// One key of pv2_block: x·v into a, y·v into b, each skipped where its weight is 0 (as pv_block skips it).
template <int CW>
inline void pv2_key(float x, float y, const float* vr, __m256 (&a)[CW], __m256 (&b)[CW]) {
  if (x != 0.0f && y != 0.0f) {
    const __m256 vx = _mm256_set1_ps(x), vy = _mm256_set1_ps(y);
#pragma GCC unroll 8
    for (int cc = 0; cc < CW; ++cc) {
      __m256 vc = _mm256_loadu_ps(vr + 8 * cc);
      keep_in_register(vc);
      a[cc] = _mm256_fmadd_ps(vx, vc, a[cc]);
      b[cc] = _mm256_fmadd_ps(vy, vc, b[cc]);
    }
  } else if (x != 0.0f) {
    const __m256 vx = _mm256_set1_ps(x);
#pragma GCC unroll 8
    for (int cc = 0; cc < CW; ++cc) a[cc] = _mm256_fmadd_ps(vx, _mm256_loadu_ps(vr + 8 * cc), a[cc]);
  } else if (y != 0.0f) {
    const __m256 vy = _mm256_set1_ps(y);
#pragma GCC unroll 8
    for (int cc = 0; cc < CW; ++cc) b[cc] = _mm256_fmadd_ps(vy, _mm256_loadu_ps(vr + 8 * cc), b[cc]);
  }
}

// pv_block for two rows (weights pa, pb) over CW columns, each V load feeding both. kSets is the set count
// pv_block uses for the column block these columns belong to (it depends on that block's width, not on CW):
// key j goes to set j % kSets, a last odd key to set 0, the sets added at the end, so every output column
// sees pv_block's additions in pv_block's order.
template <int CW, int kSets>
inline void pv2_block(const float* pa, const float* pb, int64_t kn, const float* vb, int64_t ld, float* oa,
                      float* ob) {
  __m256 a[kSets][CW], b[kSets][CW];
#pragma GCC unroll 8
  for (int s = 0; s < kSets; ++s)
    for (int cc = 0; cc < CW; ++cc) a[s][cc] = b[s][cc] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + kSets <= kn; j += kSets) {
#pragma GCC unroll 2
    for (int s = 0; s < kSets; ++s) pv2_key<CW>(pa[j + s], pb[j + s], vb + (j + s) * ld, a[s], b[s]);
  }
  for (; j < kn; ++j) pv2_key<CW>(pa[j], pb[j], vb + j * ld, a[0], b[0]);
#pragma GCC unroll 8
  for (int cc = 0; cc < CW; ++cc) {
    __m256 x = a[0][cc], y = b[0][cc];
    if constexpr (kSets == 2) {
      x = _mm256_add_ps(x, a[1][cc]);
      y = _mm256_add_ps(y, b[1][cc]);
    }
    _mm256_storeu_ps(oa + 8 * cc, x);
    _mm256_storeu_ps(ob + 8 * cc, y);
  }
}

// pv for two rows: pv's column blocks (whole 8-vector blocks with one set, then the rest: two sets up to 4
// vectors, else one), each split so that no more than 8 accumulators are live.
inline void pv2(const float* pa, const float* pb, int64_t kn, const float* vb, int64_t ld, int64_t nv, float* oa,
                float* ob) {
  int64_t c = 0;
  for (; nv - c >= 8; c += 8) {
    pv2_block<4, 1>(pa, pb, kn, vb + 8 * c, ld, oa + 8 * c, ob + 8 * c);
    pv2_block<4, 1>(pa, pb, kn, vb + 8 * c + 32, ld, oa + 8 * c + 32, ob + 8 * c + 32);
  }
  if (nv - c >= 5) {  // pv's last block has one set
    pv2_block<4, 1>(pa, pb, kn, vb + 8 * c, ld, oa + 8 * c, ob + 8 * c);
    c += 4;
    switch (nv - c) {
      case 1: return pv2_block<1, 1>(pa, pb, kn, vb + 8 * c, ld, oa + 8 * c, ob + 8 * c);
      case 2: return pv2_block<2, 1>(pa, pb, kn, vb + 8 * c, ld, oa + 8 * c, ob + 8 * c);
      default: return pv2_block<3, 1>(pa, pb, kn, vb + 8 * c, ld, oa + 8 * c, ob + 8 * c);
    }
  }
  for (; nv - c >= 2; c += 2) pv2_block<2, 2>(pa, pb, kn, vb + 8 * c, ld, oa + 8 * c, ob + 8 * c);  // two sets
  if (c < nv) pv2_block<1, 2>(pa, pb, kn, vb + 8 * c, ld, oa + 8 * c, ob + 8 * c);
}

// vis[j] = -1 where key j (position kp[j], j < cn) is visible from query position qp, else 0, and 0 for j in
// [cn, kRowChunk); returns whether any key is visible. `simple`: plain causal or no mask.
inline bool chunk_visibility(const AttentionMask& mask, bool simple, int64_t qp, const int64_t* kp, int64_t cn,
                             int32_t* vis) {
  std::fill(vis + cn, vis + kRowChunk, 0);
  if (!simple) {
    bool any = false;
    for (int64_t j = 0; j < cn; ++j) {
      const bool on = ref::key_visible(mask, qp, kp[j]);
      vis[j] = on ? -1 : 0;
      any |= on;
    }
    return any;
  }
  if (!mask.causal) {
    std::fill(vis, vis + cn, -1);
    return cn > 0;
  }
  // kp[j] <= qp, 8 keys per step: two 4 × i64 compares packed to 8 × i32 (lane order kept).
  const __m256i vq = _mm256_set1_epi64x(qp), lo32 = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  __m256i seen = _mm256_setzero_si256();
  int64_t j = 0;
  for (; j + 8 <= cn; j += 8) {
    const __m256i a = _mm256_cmpgt_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kp + j)), vq);
    const __m256i b = _mm256_cmpgt_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kp + j + 4)), vq);
    const __m256i late = _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(a, lo32),
                                                   _mm256_permutevar8x32_epi32(b, lo32), 0x20);
    const __m256i on = _mm256_xor_si256(late, _mm256_set1_epi32(-1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(vis + j), on);
    seen = _mm256_or_si256(seen, on);
  }
  bool any = !_mm256_testz_si256(seen, seen);
  for (; j < cn; ++j) {
    vis[j] = kp[j] <= qp ? -1 : 0;
    any |= kp[j] <= qp;
  }
  return any;
}

// One row's chunk after its scores: p[0, cn) holds q·k (8-lane groups up to cn rounded up); they are scaled,
// softcapped and masked to -inf (vis 0: also the lanes past cn), then replaced by p = exp(s − m) (0 where
// masked). Returns the chunk max m (−inf: nothing visible; p is then left as the masked scores) and the sum of
// p in *sum. Not inlined: the row and the query-block kernels run this one copy, so GCC's contraction choices
// cannot differ between them.
__attribute__((noinline)) float chunk_softmax(float* p, int64_t cn, const int32_t* vis, float scale, float softcap,
                                              float* sum) {
  __m256 vmax = _mm256_set1_ps(kNegInf);
  for (int64_t j0 = 0; j0 < cn; j0 += 8) {
    __m256 s8 = _mm256_mul_ps(_mm256_loadu_ps(p + j0), _mm256_set1_ps(scale));
    if (softcap > 0.0f) {
      const __m256 cap = _mm256_set1_ps(softcap);
      s8 = _mm256_mul_ps(cap, tanh_ps(_mm256_div_ps(s8, cap)));
    }
    // -inf where masked (whatever the score, even NaN from a masked key's non-finite row) and past the chunk.
    const __m256 on = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vis + j0)));
    const __m256 x = _mm256_blendv_ps(_mm256_set1_ps(kNegInf), s8, on);
    _mm256_storeu_ps(p + j0, x);
    vmax = _mm256_max_ps(vmax, x);
  }
  const float mx = hmax(vmax);
  *sum = 0.0f;
  if (mx == kNegInf) return mx;
  const __m256 vm = _mm256_set1_ps(mx), ninf = _mm256_set1_ps(kNegInf);
  __m256 vs = _mm256_setzero_ps();
  for (int64_t j = 0; j < cn; j += 8) {
    const __m256 x = _mm256_loadu_ps(p + j);
    // Masked keys (-inf) give exactly 0.
    const __m256 e = _mm256_and_ps(_mm256_cmp_ps(x, ninf, _CMP_NEQ_OQ), exp_ps(_mm256_sub_ps(x, vm)));
    vs = _mm256_add_ps(vs, e);
    _mm256_storeu_ps(p + j, e);
  }
  *sum = hsum(vs);
  return mx;
}

// One (query, head)'s output from its chunks (cmax, csum [nch], part [nch][head_dim]):
// oi = Σ_c e^(m_c − M)·o_c / Σ_c e^(m_c − M)·l_c, zeros where no key is visible. Not inlined, as chunk_softmax.
__attribute__((noinline)) void combine_chunks(const float* cmax, const float* csum, const float* part, int64_t nch,
                                              int64_t head_dim, float* oi) {
  float mx = kNegInf;
  for (int64_t c = 0; c < nch; ++c) mx = std::max(mx, cmax[c]);
  std::fill(oi, oi + head_dim, 0.0f);
  if (mx == kNegInf) return;  // no visible key
  float total = 0.0f;
  for (int64_t c = 0; c < nch; ++c) {
    const float m = cmax[c];
    if (m == kNegInf) continue;  // nothing visible in this chunk
    const float wgt = std::exp(m - mx);
    total += wgt * csum[c];
    const __m256 vw = _mm256_set1_ps(wgt);
    const float* o = part + c * head_dim;
    for (int64_t d = 0; d < head_dim; d += 8)
      _mm256_storeu_ps(oi + d, _mm256_fmadd_ps(vw, _mm256_loadu_ps(o + d), _mm256_loadu_ps(oi + d)));
  }
  const __m256 inv = _mm256_set1_ps(1.0f / total);
  for (int64_t d = 0; d < head_dim; d += 8) _mm256_storeu_ps(oi + d, _mm256_mul_ps(_mm256_loadu_ps(oi + d), inv));
}

// s·q + b with the product rounded before the add, as the reference computes it: the empty asm hides the
// product from GCC, which otherwise contracts the two intrinsics into an FMA.
inline __m256 mul_then_add(__m256 q, __m256 s, __m256 b) {
  __m256 p = _mm256_mul_ps(q, s);
  asm("" : "+x"(p));
  return _mm256_add_ps(p, b);
}

// Values [16m, 16m + 16) of one quantized row (codes at `row`, scale s, bias b) into dst, as kv_dequantize
// computes them. `end`: the plane's end; a 16-byte load that would pass it reads a copy.
template <int B>
inline void dequantize16(const uint8_t* row, const uint8_t* end, int64_t m, float s, float b, const Unpack16<B>& u,
                         float* dst) {
  const uint8_t* src = row + 2 * B * m;
  alignas(16) uint8_t tail[16];
  if (src + 16 > end) {
    std::fill(tail, tail + 16, uint8_t{0});
    std::copy(src, src + 2 * B, tail);
    src = tail;
  }
  const __m256i c = codes16<B>(src, u);
  const __m256 vs = _mm256_set1_ps(s), vb = _mm256_set1_ps(b);
  _mm256_storeu_ps(dst, mul_then_add(_mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(c))), vs, vb));
  _mm256_storeu_ps(dst + 8,
                   mul_then_add(_mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(c, 1))), vs, vb));
}

// Keys [j0, j1) of kv head kvh (head_dim hd, a multiple of 16; the plane's rows hold n = n_kv_heads·hd values
// of nk keys) from K and V into kd, vd [j1 - j0][hd]: the rows kv_dequantize would give, for one chunk.
template <int B>
void dequantize_head_rows(const QuantizedKV& kv, int64_t n, int64_t nk, int64_t kvh, int64_t hd, int64_t j0,
                          int64_t j1, float* kd, float* vd) {
  static const Unpack16<B> u;
  const int64_t row_bytes = n * B / 8, groups = n / kv.group_size;
  const uint8_t* const kbase = reinterpret_cast<const uint8_t*>(kv.k_packed);
  const uint8_t* const vbase = reinterpret_cast<const uint8_t*>(kv.v_packed);
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t m = kvh * hd / 16; m < (kvh + 1) * hd / 16; ++m) {
      const int64_t g = j * groups + 16 * m / kv.group_size, d = 16 * m - kvh * hd;
      dequantize16<B>(kbase + j * row_bytes, kbase + nk * row_bytes, m, kv.k_scales[g], kv.k_biases[g], u,
                      kd + (j - j0) * hd + d);
      dequantize16<B>(vbase + j * row_bytes, vbase + nk * row_bytes, m, kv.v_scales[g], kv.v_biases[g], u,
                      vd + (j - j0) * hd + d);
    }
  }
}

using DequantizeHeadRows = void (*)(const QuantizedKV&, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                                    float*);

// fn(std::integral_constant<int, B>) for a KV cache's bit width (2-8, ops.cpp checks).
template <typename Fn>
decltype(auto) with_kv_bits(int bits, Fn&& fn) {
  switch (bits) {
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    default: return fn(std::integral_constant<int, 8>{});
  }
}

DequantizeHeadRows dequantize_head_rows_for(int bits) {
  return with_kv_bits(bits, [](auto b) -> DequantizeHeadRows { return dequantize_head_rows<decltype(b)::value>; });
}

// head_dim a multiple of 8 (attention() checks). With `qkv` (K and V quantized; head_dim a multiple of 16)
// each item dequantizes its chunk's rows of its kv head into the thread's L1-sized buffers (k, v unused):
// the values kv_dequantize gives, so the output is bit for bit kv_dequantize + attention.
void row_attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
                   int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                   const AttentionMask& mask, float* out, const QuantizedKV* qkv = nullptr) {
  const int64_t group = n_heads / n_kv_heads, ld = n_kv_heads * head_dim, nv = head_dim / 8;
  const DequantizeHeadRows dequantize = qkv ? dequantize_head_rows_for(qkv->bits) : nullptr;
  const int64_t nch = (nk + kRowChunk - 1) / kRowChunk;
  const bool simple = mask.sliding_window <= 0 && mask.group_of_position == nullptr;
  const RowAttentionScratch scratch(nq, n_heads, nch, head_dim);
  const int64_t qb = scratch.qb;
  float* const cmax = scratch.cmax;
  float* const csum = scratch.csum;
  float* const part = scratch.part;

  for (int64_t i0 = 0; i0 < nq; i0 += qb) {
    const int64_t nqb = std::min(qb, nq - i0);
    parallel_for(nqb * n_kv_heads * nch, kRowChunk * head_dim * group * 2, [&](int64_t w0, int64_t w1) {
      alignas(32) float p[kRowChunk];
      alignas(32) int32_t vis[kRowChunk];  // -1: visible, 0: masked or past the chunk
      for (int64_t w = w0; w < w1; ++w) {
        // kv head fastest: a thread's run of items covers whole [chunk][kv head][head_dim] blocks of the cache.
        const int64_t ii = w / (n_kv_heads * nch), c = (w / n_kv_heads) % nch, kvh = w % n_kv_heads;
        const int64_t qp = q_pos0 + i0 + ii, j_begin = c * kRowChunk, j_end = std::min(nk, j_begin + kRowChunk);
        const int64_t cn = j_end - j_begin;
        const float* kb = qkv ? nullptr : k + j_begin * ld + kvh * head_dim;
        const float* vb = qkv ? nullptr : v + j_begin * ld + kvh * head_dim;
        int64_t lk = ld;  // floats between consecutive keys of kb / vb
        // One head's keys are head_dim floats every n_kv_heads·head_dim: a strided stream the hardware
        // prefetcher follows poorly, and decode reads each layer's cache from DRAM once per token (perf: the
        // K and V loads were the hot instructions). The first query head's score loop fetches K 16 keys
        // ahead and V of the keys it scores (so P·V finds them), paced with the work rather than all at
        // once; the item starts by fetching its first 16 keys' K.
        auto fetch_rows = [&](const float* base, int64_t j_from, int64_t j_to) {
          if (qkv) return;  // the chunk's rows are in the thread's buffers
          for (int64_t j = j_from; j < std::min(j_to, cn); ++j)
            for (int64_t d = 0; d < head_dim; d += 16)
              _mm_prefetch(reinterpret_cast<const char*>(base + j * ld + d), _MM_HINT_T0);
        };
        fetch_rows(kb, 0, 16);
        // Visibility of the chunk's keys for this query: the same for every head of the group.
        if (!chunk_visibility(mask, simple, qp, k_pos + j_begin, cn, vis)) {
          // e.g. a chunk wholly after the query in a causal prefill: the combine skips it
          for (int64_t g = 0; g < group; ++g) {
            const int64_t row = ii * n_heads + kvh * group + g;
            cmax[row * nch + c] = kNegInf;
            csum[row * nch + c] = 0.0f;
          }
          continue;
        }
        if (qkv) {
          thread_local std::vector<float> kd, vd;
          kd.resize(static_cast<size_t>(kRowChunk * head_dim));
          vd.resize(kd.size());
          dequantize(*qkv, ld, nk, kvh, head_dim, j_begin, j_end, kd.data(), vd.data());
          kb = kd.data();
          vb = vd.data();
          lk = head_dim;
        }
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = kvh * group + g, row = ii * n_heads + h;
          const float* qi = q + ((i0 + ii) * n_heads + h) * head_dim;
          for (int64_t j0 = 0; j0 < cn; j0 += 8) {
            if (g == 0) {
              fetch_rows(kb, j0 + 16, j0 + 24);
              fetch_rows(vb, j0, j0 + 8);
            }
            _mm256_store_ps(p + j0, scores8(qi, kb, lk, j0, std::min<int64_t>(8, cn - j0), nv));
          }
          float sum;
          const float mx = chunk_softmax(p, cn, vis, scale, softcap, &sum);
          cmax[row * nch + c] = mx;
          csum[row * nch + c] = sum;
          float* o = part + (row * nch + c) * head_dim;
          if (mx == kNegInf) {
            std::fill(o, o + head_dim, 0.0f);
          } else {
            pv(p, cn, vb, lk, nv, o);
          }
        }
      }
    });
    parallel_for(nqb * n_heads, nch * head_dim, [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row)
        combine_chunks(cmax + row * nch, csum + row * nch, part + row * nch * head_dim, nch, head_dim,
                       out + (i0 * n_heads + row) * head_dim);
    });
  }
}

// ---- prefill: blocks of queries -----------------------------------------------------------------------
// With many queries (prefill, a vision tower) and K/V in f32, one pool item is (a block of up to
// kQueryBlock queries, kv head) over every key chunk. Its rows (query × query head of that kv head) meet
// each chunk's K and V rows in pairs (scores8x2, pv2: every load feeds two rows) while the chunk is in L1,
// so K/V are read once per block instead of once per query, and the item combines its rows' chunks itself
// (its partials stay in the thread's cache; the row kernel's round-wide scratch went through DRAM). Per
// row the arithmetic is the row kernel's: the same chunks, the same per-key sums over head_dim and
// reduction tree, chunk_softmax, P·V's per-column order and combine_chunks, so a cached decode step still
// equals the prefill row it repeats, bit for bit (test_kernels_ops: AttentionPrefillEqualsItsRows).
constexpr int64_t kQueryBlock = 8;
constexpr int64_t kBlockMinQueries = 8;
// A block's partials (rows × chunks × (head_dim + 2) floats) are kept under this; the block shrinks for
// long contexts and large groups, and past one query's worth the row kernel runs instead.
constexpr int64_t kBlockScratchBytes = int64_t{1} << 20;

// Queries per block for a call (0: use the row kernel).
int64_t query_block(int64_t nq, int64_t group, int64_t nk, int64_t head_dim) {
  if (nq < kBlockMinQueries) return 0;
  const int64_t per_query = group * ((nk + kRowChunk - 1) / kRowChunk) * (head_dim + 2) * 4;
  return std::min(kQueryBlock, kBlockScratchBytes / per_query);
}

void block_attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                     const int64_t* k_pos, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                     float scale, float softcap, const AttentionMask& mask, float* out, int64_t qblock) {
  const int64_t group = n_heads / n_kv_heads, ld = n_kv_heads * head_dim, nv = head_dim / 8;
  const int64_t nch = (nk + kRowChunk - 1) / kRowChunk, rows = qblock * group;
  const int64_t nblk = (nq + qblock - 1) / qblock;
  const bool simple = mask.sliding_window <= 0 && mask.group_of_position == nullptr;
  parallel_for(nblk * n_kv_heads, qblock * group * nk * head_dim * 2, [&](int64_t w0, int64_t w1) {
    thread_local std::vector<float> store;
    const size_t need = static_cast<size_t>(rows * (kRowChunk + nch * (head_dim + 2)));
    if (store.size() < need) store.resize(need);
    float* const p = store.data();         // [rows][kRowChunk]: one chunk's scores, then weights
    float* const cmax = p + rows * kRowChunk;  // [rows][nch]
    float* const csum = cmax + rows * nch;     // [rows][nch]
    float* const part = csum + rows * nch;     // [rows][nch][head_dim]
    alignas(32) int32_t vis[kQueryBlock][kRowChunk];
    std::vector<int64_t> seen(static_cast<size_t>(rows)), live(static_cast<size_t>(rows));
    for (int64_t w = w0; w < w1; ++w) {
      // Last blocks first: under a causal mask they see the most keys, and the pool hands out chunks in order.
      const int64_t blk = nblk - 1 - w / n_kv_heads, kvh = w % n_kv_heads;
      const int64_t i_begin = blk * qblock, nr = std::min(qblock, nq - i_begin) * group;
      // Row r is query i_begin + r / group, head kvh·group + r % group.
      auto q_row = [&](int64_t r) {
        return q + ((i_begin + r / group) * n_heads + kvh * group + r % group) * head_dim;
      };
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t j_begin = c * kRowChunk, cn = std::min(nk, j_begin + kRowChunk) - j_begin;
        const float* kb = k + j_begin * ld + kvh * head_dim;
        const float* vb = v + j_begin * ld + kvh * head_dim;
        int64_t ns = 0, nl = 0;  // rows whose query sees a key of the chunk; those with a finite max
        for (int64_t r = 0; r < nr; r += group) {
          const bool any = chunk_visibility(mask, simple, q_pos0 + i_begin + r / group, k_pos + j_begin, cn,
                                            vis[r / group]);
          for (int64_t g = r; g < r + group; ++g) {
            if (any) {
              seen[ns++] = g;
            } else {
              cmax[g * nch + c] = kNegInf;
              csum[g * nch + c] = 0.0f;
            }
          }
        }
        int64_t m = 0;
        for (; m + 2 <= ns; m += 2) {
          const int64_t a = seen[m], b = seen[m + 1];
          for (int64_t j0 = 0; j0 < cn; j0 += 8)
            scores8x2(q_row(a), q_row(b), kb, ld, j0, std::min<int64_t>(8, cn - j0), nv, p + a * kRowChunk + j0,
                      p + b * kRowChunk + j0);
        }
        if (m < ns)
          for (int64_t j0 = 0; j0 < cn; j0 += 8)
            _mm256_storeu_ps(p + seen[m] * kRowChunk + j0,
                             scores8(q_row(seen[m]), kb, ld, j0, std::min<int64_t>(8, cn - j0), nv));
        for (m = 0; m < ns; ++m) {
          const int64_t r = seen[m];
          float sum;
          const float mx = chunk_softmax(p + r * kRowChunk, cn, vis[r / group], scale, softcap, &sum);
          cmax[r * nch + c] = mx;
          csum[r * nch + c] = sum;
          if (mx != kNegInf) live[nl++] = r;  // else the combine skips the chunk, as the row kernel's does
        }
        for (m = 0; m + 2 <= nl; m += 2) {
          const int64_t a = live[m], b = live[m + 1];
          pv2(p + a * kRowChunk, p + b * kRowChunk, cn, vb, ld, nv, part + (a * nch + c) * head_dim,
              part + (b * nch + c) * head_dim);
        }
        if (m < nl) pv(p + live[m] * kRowChunk, cn, vb, ld, nv, part + (live[m] * nch + c) * head_dim);
      }
      for (int64_t r = 0; r < nr; ++r)
        combine_chunks(cmax + r * nch, csum + r * nch, part + r * nch * head_dim, nch, head_dim,
                       out + ((i_begin + r / group) * n_heads + kvh * group + r % group) * head_dim);
    }
  });
}

}  // namespace

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out) {
  if (head_dim % 8 != 0 || nk == 0)
    return ref::attention(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
  if (const int64_t qblock = query_block(nq, n_heads / n_kv_heads, nk, head_dim); qblock > 0)
    return block_attention(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out,
                           qblock);
  row_attention(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
}

namespace {

// kv_dequantize for B-bit codes, 16 values per step.
template <int B>
void kv_dequantize_bits(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n,
                        int group_size, float* out) {
  static const Unpack16<B> u;
  const int64_t row_bytes = n * B / 8, groups = n / group_size;
  const uint8_t* const base = reinterpret_cast<const uint8_t*>(packed);
  parallel_for(rows, 2 * n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t m = 0; m < n / 16; ++m) {
        const int64_t g = r * groups + 16 * m / group_size;
        dequantize16<B>(base + r * row_bytes, base + rows * row_bytes, m, scales[g], biases[g], u,
                        out + r * n + 16 * m);
      }
  });
}

}  // namespace

void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out) {
  // n is a multiple of group_size >= 32 (ops.cpp), so rows are whole 16-value steps.
  with_kv_bits(bits, [&](auto b) {
    kv_dequantize_bits<decltype(b)::value>(packed, scales, biases, rows, n, group_size, out);
  });
}

void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out) {
  // By definition kv_dequantize of K and V, then attention. Decode-sized calls (the row kernel's path,
  // head_dim a multiple of 16) dequantize chunk by chunk inside it, so the cache is read in its packed form
  // and no f32 copy of it is written; otherwise the whole range is dequantized first.
  if (nk > 0 && nq < kFusedQuantQueries && head_dim % 16 == 0)
    return row_attention(q, nq, q_pos0, nullptr, nullptr, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap,
                         mask, out, &kv);
  const int64_t row = n_kv_heads * head_dim;
  thread_local std::vector<float> kd, vd;
  kd.resize(static_cast<size_t>(nk * row));
  vd.resize(kd.size());
  if (nk > 0) {
    avx2::kv_dequantize(kv.k_packed, kv.k_scales, kv.k_biases, nk, row, kv.bits, kv.group_size, kd.data());
    avx2::kv_dequantize(kv.v_packed, kv.v_scales, kv.v_biases, nk, row, kv.bits, kv.group_size, vd.data());
  }
  avx2::attention(q, nq, q_pos0, kd.data(), vd.data(), k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask,
                  out);
}

void add(float* y, const float* x, int64_t n) {
  map8(y, y, x, n, AddOp{});
}
void scale(float* y, float s, int64_t n) {
  map8(y, y, nullptr, n, ScaleOp{_mm256_set1_ps(s)});
}
void mul(float* y, const float* x, int64_t n) {
  map8(y, y, x, n, MulOp{});
}
void softcap(float* x, int64_t n, float cap) {
  const SoftcapOp op{_mm256_set1_ps(cap), _mm256_set1_ps(1.0f / cap)};
  parallel_for(n, 8, [&](int64_t i0, int64_t i1) { map8(x + i0, x + i0, nullptr, i1 - i0, op); });
}

}  // namespace vlm::ops::cpu::avx2

#pragma GCC pop_options
