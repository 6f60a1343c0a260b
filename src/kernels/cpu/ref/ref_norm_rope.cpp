// Scalar reference for RMSNorm, LayerNorm, RoPE and M-RoPE.
// Norms follow transformers in f32: rms = sqrt(mean(x²) + eps), y = x / rms * (w + offset).
// RoPE angles are formed exactly as HF does (f32 product position * inv_freq), cos/sin are then
// evaluated in double and rounded once, so the only difference from torch is its own f32 libm ulp.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/ref/ref_ops.h"

namespace vlm::ops::ref {

void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y) {
  std::vector<float> w = cpu::vector_f32(weight);
  cpu::parallel_for(n, d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* xi = x + i * d;
      float* yi = y + i * d;
      float ss = 0.0f;
      for (int64_t c = 0; c < d; ++c) ss += xi[c] * xi[c];
      float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
      for (int64_t c = 0; c < d; ++c) yi[c] = xi[c] * inv * (w[c] + offset);
    }
  });
}

void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y) {
  // Exactly add() then rms_norm(); r is consumed before y (which may alias it) is written.
  add(x, r, n * d);
  rms_norm(x, n, d, weight, eps, offset, y);
}

void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y) {
  std::vector<float> w = cpu::vector_f32(weight), b = cpu::vector_f32(bias);
  cpu::parallel_for(n, d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* xi = x + i * d;
      float* yi = y + i * d;
      float sum = 0.0f;
      for (int64_t c = 0; c < d; ++c) sum += xi[c];
      float mean = sum / static_cast<float>(d);
      float var = 0.0f;  // two-pass: no cancellation for large means
      for (int64_t c = 0; c < d; ++c) var += (xi[c] - mean) * (xi[c] - mean);
      float inv = 1.0f / std::sqrt(var / static_cast<float>(d) + eps);
      for (int64_t c = 0; c < d; ++c) {
        float v = (xi[c] - mean) * inv;
        if (!w.empty()) v *= w[c];
        if (!b.empty()) v += b[c];
        yi[c] = v;
      }
    }
  });
}

namespace {
// Rotates the first 2*half dims of every head of one token: x1 = x[i], x2 = x[i + half].
void rotate_token(float* xt, int64_t n_heads, int64_t head_dim, int64_t half, const float* cos_t, const float* sin_t) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = xt + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      float x1 = xh[i], x2 = xh[i + half];
      xh[i] = x1 * cos_t[i] - x2 * sin_t[i];
      xh[i + half] = x2 * cos_t[i] + x1 * sin_t[i];
    }
  }
}
}  // namespace

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling) {
  const int64_t half = rotary_dim / 2;
  cpu::parallel_for(n_tokens, n_heads * head_dim * 4, [&](int64_t t0, int64_t t1) {
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
  cpu::parallel_for(n_tokens, n_heads * head_dim * 4, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        int64_t pos = positions3[stream_of[i] * n_tokens + t];
        float angle = static_cast<float>(pos) * inv_freq[i];
        cs[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_scaling;
        sn[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_scaling;
      }
      rotate_token(x + t * n_heads * head_dim, n_heads, head_dim, half, cs.data(), sn.data());
    }
  });
}

}  // namespace vlm::ops::ref
