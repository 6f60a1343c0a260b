// MLX affine quantizer (see quantize.h for the exact rule and why each step is there).
#include "core/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace vlm {

AffineGroupParams quantize_affine_group(const float* w, int group, int bits, uint32_t* q) {
  const float n_bins = static_cast<float>((1u << bits) - 1u);
  float w_min = std::numeric_limits<float>::max();
  float w_max = 0.0f;  // MLX's running max starts at 0: w_max >= 0 always
  for (int i = 0; i < group; ++i) {
    w_min = std::min(w_min, w[i]);
    w_max = std::max(w_max, w[i]);
  }
  float scale = std::max((w_max - w_min) / n_bins, 1e-7f);
  const bool side = std::fabs(w_min) > std::fabs(w_max);
  scale = side ? scale : -scale;
  const float edge = side ? w_min : w_max;
  const float q0 = std::round(edge / scale);  // std::round: half away from zero, like Metal's round
  const bool at_zero = q0 == 0.0f;
  if (!at_zero) scale = edge / q0;
  const float bias = at_zero ? 0.0f : edge;
  for (int i = 0; i < group; ++i) {
    float v = std::round((w[i] - bias) / scale);
    v = std::min(std::max(v, 0.0f), n_bins);  // >= 0 by construction; the clamp guards -0 and ulps
    q[i] = static_cast<uint32_t>(v);
  }
  return {scale, bias};
}

namespace {

// Writes v into element `index` of a scales/biases buffer of `dtype` (round to nearest even).
void store(DType dtype, void* base, int64_t index, float v) {
  convert_from_f32(&v, dtype, static_cast<char*>(base) + index * dtype_size(dtype), 1);
}

QuantizedMatrix quantize_rows(int64_t rows, int64_t cols, AffineQuantSpec spec, DType scale_dtype,
                              MemCategory category, const std::function<void(int64_t, float*)>& load_row) {
  validate_quant_spec(spec, "quantize_affine");
  if (scale_dtype != DType::kF32 && scale_dtype != DType::kF16 && scale_dtype != DType::kBF16)
    throw_error(ErrorKind::kInvalidArgument, "quantize_affine: scale dtype {} (expected f32, f16 or bf16)",
                dtype_name(scale_dtype));
  if (rows < 0 || cols <= 0 || cols % spec.group_size != 0)
    throw_error(ErrorKind::kInvalidArgument,
                "quantize_affine: matrix [{}, {}] has an input dimension that is not a multiple of group size {}",
                rows, cols, spec.group_size);
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.spec = spec;
  const int64_t words = cols * spec.bits / 32, groups = cols / spec.group_size;
  m.packed = Tensor::zeros({rows, words}, DType::kU32, category);
  m.scales = Tensor::empty({rows, groups}, scale_dtype, category);
  m.biases = Tensor::empty({rows, groups}, scale_dtype, category);
  ThreadPool::global().parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(cols));
        std::vector<uint32_t> codes(static_cast<size_t>(spec.group_size));
        for (int64_t r = r0; r < r1; ++r) {
          load_row(r, row.data());
          for (int64_t c = 0; c < cols; ++c)
            if (!std::isfinite(row[c]))
              throw_error(ErrorKind::kInvalidArgument, "quantize_affine: non-finite value {} at [{}, {}]", row[c], r,
                          c);
          uint32_t* packed = m.packed.data<uint32_t>() + r * words;
          for (int64_t g = 0; g < groups; ++g) {
            AffineGroupParams p =
                quantize_affine_group(row.data() + g * spec.group_size, spec.group_size, spec.bits, codes.data());
            store(scale_dtype, m.scales.raw(), r * groups + g, p.scale);
            store(scale_dtype, m.biases.raw(), r * groups + g, p.bias);
            for (int j = 0; j < spec.group_size; ++j) pack_affine(packed, g * spec.group_size + j, spec.bits, codes[j]);
          }
        }
      },
      std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols / 64)));
  return m;
}

}  // namespace

QuantizedMatrix quantize_affine(const Tensor& w, AffineQuantSpec spec, std::optional<DType> scale_dtype,
                                MemCategory category) {
  if (!w.defined() || w.ndim() != 2 || !w.is_contiguous() || w.device() != Device::kCpu ||
      (w.dtype() != DType::kF32 && w.dtype() != DType::kF16 && w.dtype() != DType::kBF16))
    throw_error(ErrorKind::kInvalidArgument,
                "quantize_affine: input is {}, expected a contiguous 2-D f32/f16/bf16 cpu matrix",
                w.defined() ? w.describe() : std::string("undefined"));
  const int64_t cols = w.dim(1);
  const size_t esize = dtype_size(w.dtype());
  return quantize_rows(w.dim(0), cols, spec, scale_dtype.value_or(w.dtype()), category, [&](int64_t r, float* out) {
    convert_to_f32(w.dtype(), static_cast<const char*>(w.raw()) + r * cols * esize, out, static_cast<size_t>(cols));
  });
}

QuantizedMatrix quantize_affine(const float* w, int64_t rows, int64_t cols, AffineQuantSpec spec, DType scale_dtype,
                                MemCategory category) {
  return quantize_rows(rows, cols, spec, scale_dtype, category, [&](int64_t r, float* out) {
    std::memcpy(out, w + r * cols, static_cast<size_t>(cols) * sizeof(float));
  });
}

}  // namespace vlm
