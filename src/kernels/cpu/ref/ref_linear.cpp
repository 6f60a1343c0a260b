// Scalar reference for linear and embedding. Dense weights are converted element by element;
// quantized weights are read in their packed MLX layout (unpack_affine per element, scale/bias per
// group) — the matrix is never dequantized as a whole. Parallel over output rows.
#include <vector>

#include "core/quant.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/ref/ref_ops.h"

namespace vlm::ops::ref {

void linear_group(const float* x, int64_t n, const LinearOut* outs, int count) {
  for (int i = 0; i < count; ++i) ref::linear(x, n, *outs[i].w, outs[i].bias ? *outs[i].bias : Tensor(), outs[i].y);
}

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y) {
  const int64_t out = w.rows(), in = w.cols();
  std::vector<float> b = cpu::vector_f32(bias);
  cpu::parallel_for(out, in * n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * in;
        float acc = 0.0f;
        if (!w.quantized) {
          const void* row = static_cast<const char*>(w.dense.raw()) + r * in * dtype_size(w.dense.dtype());
          for (int64_t c = 0; c < in; ++c) acc += cpu::load_f32(row, w.dense.dtype(), c) * xt[c];
        } else {
          const QuantizedMatrix& m = w.quant;
          const int gs = m.spec.group_size;
          const int64_t groups = in / gs;
          const uint32_t* row = m.packed.data<uint32_t>() + r * m.words_per_row();
          for (int64_t g = 0; g < groups; ++g) {
            float s = cpu::load_f32(m.scales.raw(), m.scales.dtype(), r * groups + g);
            float bb = cpu::load_f32(m.biases.raw(), m.biases.dtype(), r * groups + g);
            for (int64_t j = 0; j < gs; ++j) {
              int64_t c = g * gs + j;
              float wv = s * static_cast<float>(unpack_affine(row, c, m.spec.bits)) + bb;
              acc += wv * xt[c];
            }
          }
        }
        y[t * out + r] = b.empty() ? acc : acc + b[r];
      }
    }
  });
}

void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out) {
  const int64_t d = table.cols();
  cpu::parallel_for(n, d, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* o = out + i * d;
      int64_t r = ids[i];
      if (table.quantized) {
        dequantize_row(table.quant, r, o);
      } else {
        const void* row = static_cast<const char*>(table.dense.raw()) + r * d * dtype_size(table.dense.dtype());
        convert_to_f32(table.dense.dtype(), row, o, static_cast<size_t>(d));
      }
      if (scale != 1.0f)
        for (int64_t c = 0; c < d; ++c) o[c] *= scale;
    }
  });
}

}  // namespace vlm::ops::ref
