// Scalar reference for activations, softmax, attention and the elementwise helpers.
// Attention is the textbook two-pass form per (query, head): scores over the visible keys, max
// subtraction, exp, normalise, weighted sum of values — all in f32. A query that sees no key gets
// zeros (never NaN).
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/ref/ref_ops.h"

namespace vlm::ops::ref {

float activation_value(float x, Activation act) {
  switch (act) {
    case Activation::kSilu: return x / (1.0f + std::exp(-x));
    case Activation::kGeluTanh: {
      constexpr float kSqrt2OverPi = 0.7978845608028654f;
      return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    }
    case Activation::kGeluErf: return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
    case Activation::kQuickGelu: return x / (1.0f + std::exp(-1.702f * x));
    case Activation::kRelu: return x > 0.0f ? x : 0.0f;
  }
  return x;
}

void activate(float* x, int64_t n, Activation act) {
  cpu::parallel_for(n, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] = activation_value(x[i], act);
  });
}

void gated_activate(float* gate, const float* up, int64_t n, Activation act) {
  cpu::parallel_for(n, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) gate[i] = activation_value(gate[i], act) * up[i];
  });
}

void softmax(float* x, int64_t n, int64_t d) {
  cpu::parallel_for(n, d * 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * d;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < d; ++c) mx = std::max(mx, xr[c]);
      if (mx == -std::numeric_limits<float>::infinity()) {  // fully masked row
        for (int64_t c = 0; c < d; ++c) xr[c] = 0.0f;
        continue;
      }
      float sum = 0.0f;
      for (int64_t c = 0; c < d; ++c) {
        xr[c] = std::exp(xr[c] - mx);
        sum += xr[c];
      }
      float inv = 1.0f / sum;
      for (int64_t c = 0; c < d; ++c) xr[c] *= inv;
    }
  });
}

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out) {
  const int64_t group = n_heads / n_kv_heads;
  cpu::parallel_for(nq * n_heads, nk * head_dim * 2, [&](int64_t w0, int64_t w1) {
    std::vector<float> p(static_cast<size_t>(nk));
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t i = w / n_heads, h = w % n_heads, kvh = h / group;
      const int64_t qp = q_pos0 + i;
      const float* qi = q + (i * n_heads + h) * head_dim;
      float* oi = out + (i * n_heads + h) * head_dim;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < nk; ++j) {
        if (!key_visible(mask, qp, k_pos[j])) {
          p[j] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float* kj = k + (j * n_kv_heads + kvh) * head_dim;
        float s = 0.0f;
        for (int64_t c = 0; c < head_dim; ++c) s += qi[c] * kj[c];
        s *= scale;
        if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
        p[j] = s;
        mx = std::max(mx, s);
      }
      for (int64_t c = 0; c < head_dim; ++c) oi[c] = 0.0f;
      if (mx == -std::numeric_limits<float>::infinity()) continue;  // no visible key
      float sum = 0.0f;
      for (int64_t j = 0; j < nk; ++j) {
        if (p[j] == -std::numeric_limits<float>::infinity()) continue;
        float e = std::exp(p[j] - mx);
        sum += e;
        const float* vj = v + (j * n_kv_heads + kvh) * head_dim;
        for (int64_t c = 0; c < head_dim; ++c) oi[c] += e * vj[c];
      }
      float inv = 1.0f / sum;
      for (int64_t c = 0; c < head_dim; ++c) oi[c] *= inv;
    }
  });
}

void argmax(const float* x, int64_t n, int64_t d, int32_t* ids) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * d;
    int64_t best = -1;
    for (int64_t c = 0; c < d; ++c)
      if (!std::isnan(row[c]) && (best < 0 || row[c] > row[best])) best = c;
    ids[i] = static_cast<int32_t>(best < 0 ? 0 : best);
  }
}

void add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}
void scale(float* y, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}
void mul(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= x[i];
}
void softcap(float* x, int64_t n, float cap) {
  cpu::parallel_for(n, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] = cap * std::tanh(x[i] / cap);
  });
}

}  // namespace vlm::ops::ref
