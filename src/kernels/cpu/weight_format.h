// The stored formats of a linear weight as the SIMD linear kernels (simd_linear_avx2.cpp,
// simd_linear_avx512.cpp) dispatch on them: one template instance per format, chosen once per call.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/dtype.h"
#include "kernels/ops.h"

namespace vlm::ops::cpu {

enum class Fmt { kF32, kF16, kBF16, kQ2, kQ3, kQ4, kQ5, kQ6, kQ8 };

inline Fmt format_of(const Weight& w) {
  if (!w.quantized) {
    switch (w.dense.dtype()) {
      case DType::kF16: return Fmt::kF16;
      case DType::kBF16: return Fmt::kBF16;
      default: return Fmt::kF32;
    }
  }
  switch (w.quant.spec.bits) {
    case 2: return Fmt::kQ2;
    case 3: return Fmt::kQ3;
    case 4: return Fmt::kQ4;
    case 5: return Fmt::kQ5;
    case 6: return Fmt::kQ6;
    default: return Fmt::kQ8;
  }
}

// Paired formats decode each 16 inputs as their even 8 then their odd 8, so x is permuted to match.
constexpr bool is_paired(Fmt f) { return f == Fmt::kBF16 || f == Fmt::kQ4 || f == Fmt::kQ2; }
constexpr bool is_quant(Fmt f) { return f != Fmt::kF32 && f != Fmt::kF16 && f != Fmt::kBF16; }
constexpr int bits_of(Fmt f) {
  return f == Fmt::kQ2 ? 2 : f == Fmt::kQ3 ? 3 : f == Fmt::kQ4 ? 4 : f == Fmt::kQ5 ? 5 : f == Fmt::kQ6 ? 6 : 8;
}

// Row r's stored data: packed codes of a quantized weight, else the dense row.
inline const void* row_ptr(const Weight& w, int64_t r) {
  if (w.quantized) return w.quant.packed.data<uint32_t>() + r * w.quant.words_per_row();
  return static_cast<const char*>(w.dense.raw()) + r * w.cols() * dtype_size(w.dense.dtype());
}

// Element i of a dense row as f32 (the kernels' tails past their last whole chunk).
inline float scalar_at(const void* row, Fmt f, int64_t i) {
  switch (f) {
    case Fmt::kF16: return f16_to_f32(static_cast<const uint16_t*>(row)[i]);
    case Fmt::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(row)[i]);
    default: return static_cast<const float*>(row)[i];
  }
}

// fn(std::integral_constant<Fmt, F>) for w's format.
template <typename Fn>
decltype(auto) with_format(const Weight& w, Fn&& fn) {
  switch (format_of(w)) {
    case Fmt::kF32: return fn(std::integral_constant<Fmt, Fmt::kF32>{});
    case Fmt::kF16: return fn(std::integral_constant<Fmt, Fmt::kF16>{});
    case Fmt::kBF16: return fn(std::integral_constant<Fmt, Fmt::kBF16>{});
    case Fmt::kQ2: return fn(std::integral_constant<Fmt, Fmt::kQ2>{});
    case Fmt::kQ3: return fn(std::integral_constant<Fmt, Fmt::kQ3>{});
    case Fmt::kQ4: return fn(std::integral_constant<Fmt, Fmt::kQ4>{});
    case Fmt::kQ5: return fn(std::integral_constant<Fmt, Fmt::kQ5>{});
    case Fmt::kQ6: return fn(std::integral_constant<Fmt, Fmt::kQ6>{});
    default: return fn(std::integral_constant<Fmt, Fmt::kQ8>{});
  }
}

}  // namespace vlm::ops::cpu
