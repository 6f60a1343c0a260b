// Scalar reference for MLX affine dequantization.
#include "core/quant.h"

#include "core/error.h"

namespace vlm {

void validate_quant_spec(const AffineQuantSpec& spec, const char* what) {
  bool bits_ok = spec.bits == 2 || spec.bits == 3 || spec.bits == 4 || spec.bits == 5 || spec.bits == 6 ||
                 spec.bits == 8;
  bool group_ok = spec.group_size == 32 || spec.group_size == 64 || spec.group_size == 128;
  if (!bits_ok)
    throw_error(ErrorKind::kUnsupported, "{}: affine quantization with {} bits (supported: 2, 3, 4, 5, 6, 8)", what,
                spec.bits);
  if (!group_ok)
    throw_error(ErrorKind::kUnsupported, "{}: affine quantization group size {} (supported: 32, 64, 128)", what,
                spec.group_size);
}

void QuantizedMatrix::validate(const char* what) const {
  validate_quant_spec(spec, what);
  if (cols % spec.group_size != 0 || (cols * spec.bits) % 32 != 0)
    throw_error(ErrorKind::kFormat, "{}: input dimension {} is not a multiple of group size {}", what, cols,
                spec.group_size);
  // Shapes compared in place: every quantized op's weight check calls this, so no vector is built unless
  // an error message needs it.
  const int64_t words = cols * spec.bits / 32, groups = cols / spec.group_size;
  auto is = [](const Tensor& t, int64_t r, int64_t c) {
    const Shape& sh = t.shape();
    return sh.size() == 2 && sh[0] == r && sh[1] == c;
  };
  if (packed.dtype() != DType::kU32 || !is(packed, rows, words))
    throw_error(ErrorKind::kFormat, "{}: packed weight is {}, expected u32{}", what, packed.describe(),
                shape_str(Shape{rows, words}));
  if (!is(scales, rows, groups) || !is(biases, rows, groups))
    throw_error(ErrorKind::kFormat, "{}: scales {} / biases {}, expected {}", what, scales.describe(),
                biases.describe(), shape_str(Shape{rows, groups}));
  if (scales.dtype() != biases.dtype() || !dtype_is_float(scales.dtype()))
    throw_error(ErrorKind::kFormat, "{}: scales {} and biases {} must share a float dtype", what,
                dtype_name(scales.dtype()), dtype_name(biases.dtype()));
}

namespace {
float load_scalar(const Tensor& t, int64_t index) {
  switch (t.dtype()) {
    case DType::kF32: return t.data<float>()[index];
    case DType::kF16: return f16_to_f32(t.data<uint16_t>()[index]);
    case DType::kBF16: return bf16_to_f32(t.data<uint16_t>()[index]);
    default: throw_error(ErrorKind::kUnsupported, "quantization scale dtype {}", dtype_name(t.dtype()));
  }
}
}  // namespace

void dequantize_row(const QuantizedMatrix& m, int64_t r, float* out) {
  const uint32_t* row = m.packed.data<uint32_t>() + r * m.words_per_row();
  int64_t groups = m.cols / m.spec.group_size;
  for (int64_t g = 0; g < groups; ++g) {
    float s = load_scalar(m.scales, r * groups + g);
    float b = load_scalar(m.biases, r * groups + g);
    for (int64_t j = 0; j < m.spec.group_size; ++j) {
      int64_t c = g * m.spec.group_size + j;
      out[c] = s * static_cast<float>(unpack_affine(row, c, m.spec.bits)) + b;
    }
  }
}

Tensor dequantize(const QuantizedMatrix& m) {
  Tensor out = Tensor::empty({m.rows, m.cols}, DType::kF32);
  for (int64_t r = 0; r < m.rows; ++r) dequantize_row(m, r, out.data<float>() + r * m.cols);
  return out;
}

}  // namespace vlm
