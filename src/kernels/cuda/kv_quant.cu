// KV-cache quantization on the GPU (ops.h "KV-cache quantization"): rows of f32 values to MLX affine
// codes + f32 scales/biases, and back. Bit-identical to the CPU reference (cpu/ref/ref_kv_quant.cpp,
// i.e. core's quantize_affine_group), because the KV cache must hold the same bits on every device:
//   * min / max are exact whatever the reduction order (the comparisons of std::min / std::max, so a
//     NaN is skipped the same way; the sign of a zero extreme never reaches a result, see below);
//   * every other step is one IEEE f32 operation in the reference's order, spelled with __fsub_rn /
//     __fdiv_rn / __fmul_rn / __fadd_rn so nvcc can neither contract a multiply-add into an FMA nor
//     use an approximate division; round_half_away is std::round's rule, exactly.
// (A zero extreme: w_max starts at +0 on both devices; w_min = ±0 only enters as w_max - w_min, which
// is the same value for either sign, and the edge is then w_max.)
// Quantize: one warp per (row, group) — lane j holds values j, j+32, ... of the group, two shuffle
// reductions give min and max, every lane derives the same scale/bias, the codes go to shared memory,
// and lane w assembles word w of the group's bit stream (a group of g values at b bits fills exactly
// g*b/32 <= 32 words, so groups never share a word). Dequantize: one thread per value.
// Neither op synchronizes or allocates: both are plain launches on the backend stream, so they can be
// captured into a CUDA graph with the rest of a decode step.
#include "kernels/cuda/common.cuh"

#include <algorithm>
#include <cfloat>

#include "kernels/cuda/kv_quant.cuh"

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kWarps = 4;       // groups per block
constexpr int kMaxGroup = 128;  // ops.cpp: group_size 32, 64 or 128

// std::min / std::max exactly (b < a ? b : a): a NaN second argument never wins, as in the reference.
__device__ __forceinline__ float min_like_std(float a, float b) { return b < a ? b : a; }
__device__ __forceinline__ float max_like_std(float a, float b) { return a < b ? b : a; }

// std::round: half away from zero. a - truncf(a) is exact, so the comparison with 0.5 decides the
// halfway cases exactly (no a + 0.5 rounding step).
__device__ __forceinline__ float round_half_away(float a) {
  const float t = truncf(a);
  return fabsf(__fsub_rn(a, t)) >= 0.5f ? __fadd_rn(t, copysignf(1.0f, a)) : t;
}

// x: [rows, n] f32; packed: [rows, n*bits/32]; scales, biases: [rows, n/group].
__global__ void __launch_bounds__(kWarps * 32)
    kv_quantize_kernel(const float* __restrict__ x, int64_t total_groups, int64_t groups_per_row, int bits, int group,
                       uint32_t* __restrict__ packed, float* __restrict__ scales, float* __restrict__ biases) {
  __shared__ uint32_t codes_s[kWarps][kMaxGroup];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per_lane = group / 32;
  const float n_bins = static_cast<float>((1u << bits) - 1u);
  const int words = group * bits / 32;
  for (int64_t gi = static_cast<int64_t>(blockIdx.x) * kWarps + warp; gi < total_groups;
       gi += static_cast<int64_t>(gridDim.x) * kWarps) {
    // Group gi is row gi / groups_per_row, group gi % groups_per_row: its values are contiguous.
    const float* w = x + gi * group;
    float v[kMaxGroup / 32];
    float w_min = FLT_MAX, w_max = 0.0f;  // the reference's starting values
    for (int e = 0; e < per_lane; ++e) {
      v[e] = w[lane + 32 * e];
      w_min = min_like_std(w_min, v[e]);
      w_max = max_like_std(w_max, v[e]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      w_min = min_like_std(w_min, __shfl_xor_sync(0xffffffffu, w_min, o));
      w_max = max_like_std(w_max, __shfl_xor_sync(0xffffffffu, w_max, o));
    }
    float scale = max_like_std(__fdiv_rn(__fsub_rn(w_max, w_min), n_bins), 1e-7f);
    const bool side = fabsf(w_min) > fabsf(w_max);
    scale = side ? scale : -scale;
    const float edge = side ? w_min : w_max;
    const float q0 = round_half_away(__fdiv_rn(edge, scale));
    const bool at_zero = q0 == 0.0f;
    if (!at_zero) scale = __fdiv_rn(edge, q0);
    const float bias = at_zero ? 0.0f : edge;
    for (int e = 0; e < per_lane; ++e) {
      const float q = min_like_std(max_like_std(round_half_away(__fdiv_rn(__fsub_rn(v[e], bias), scale)), 0.0f), n_bins);
      codes_s[warp][lane + 32 * e] = static_cast<uint32_t>(q);
    }
    __syncwarp();
    if (lane < words) {
      // Word `lane` covers stream bits [32*lane, 32*lane + 32): the codes from first to last overlap it.
      const int bit0 = 32 * lane;
      const int first = bit0 / bits, last = (bit0 + 31) / bits;
      uint32_t word = 0;
      for (int i = first; i <= last; ++i) {
        const int shift = i * bits - bit0;  // may be negative for the code straddling in from below
        const uint32_t c = codes_s[warp][i];
        word |= shift >= 0 ? c << shift : c >> -shift;
      }
      const int64_t row = gi / groups_per_row, g = gi % groups_per_row;
      packed[row * groups_per_row * words + g * words + lane] = word;
    }
    if (lane == 0) {
      scales[gi] = scale;
      biases[gi] = bias;
    }
    __syncwarp();  // codes_s is rewritten by the warp's next group
  }
}

// out[r, j] = scale * q + bias (product rounded, then the add: the CPU reference has no FMA).
__global__ void kv_dequantize_kernel(const uint32_t* __restrict__ packed, const float* __restrict__ scales,
                                     const float* __restrict__ biases, int64_t rows, int64_t n, int bits, int group,
                                     float* __restrict__ out) {
  const int64_t words = n * bits / 32, groups = n / group, total = rows * n;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, j = i % n;
    const int64_t g = r * groups + j / group;
    const float q = static_cast<float>(detail::unpack_bits(packed + r * words, j, bits));
    out[i] = __fadd_rn(__fmul_rn(scales[g], q), biases[g]);
  }
}

}  // namespace

void kv_quantize(const float* x, int64_t rows, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                 float* biases) {
  if (rows <= 0) return;
  const int64_t groups_per_row = n / group_size, total = rows * groups_per_row;
  const int64_t blocks = std::min<int64_t>((total + kWarps - 1) / kWarps, 65535 * 8);
  kv_quantize_kernel<<<static_cast<unsigned>(blocks), kWarps * 32, 0, detail::stream("kv_quantize")>>>(
      x, total, groups_per_row, bits, group_size, packed, scales, biases);
  VLM_CUDA_LAUNCHED("kv_quantize");
}

void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out) {
  if (rows <= 0) return;
  constexpr int kThreads = 256;
  kv_dequantize_kernel<<<detail::elementwise_blocks(rows * n, kThreads), kThreads, 0,
                         detail::stream("kv_dequantize")>>>(packed, scales, biases, rows, n, bits, group_size, out);
  VLM_CUDA_LAUNCHED("kv_dequantize");
}

}  // namespace vlm::ops::cuda::kernels
