// Element types and exact scalar conversions between f32, f16 and bf16.
// f32 -> f16/bf16 rounds to nearest, ties to even (the IEEE default, as torch and MLX do);
// f16/bf16 -> f32 is exact. NaN stays NaN, infinities and subnormals are preserved.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace vlm {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF64,
  kI8,
  kU8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kBool,
  kF8E4M3,
  kF8E5M2,
};

// Bytes per element.
size_t dtype_size(DType t);
// Short lower-case name used in messages and JSON ("f32", "bf16", "u32" ...).
const char* dtype_name(DType t);
// Parses the safetensors spelling ("F32", "BF16", "U32", "F8_E4M3" ...); nullopt if unknown.
std::optional<DType> dtype_from_safetensors(std::string_view s);
// Parses a torch/config spelling ("float32", "bfloat16", "float16", "half" ...).
std::optional<DType> dtype_from_torch_name(std::string_view s);
bool dtype_is_float(DType t);

// ---- scalar conversions ---------------------------------------------------------------------------
inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Bulk conversions (scalar loops; the kernels have vectorised versions where it matters).
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);
void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n);

}  // namespace vlm
