// linear on MLX affine-quantized weights (core/quant.h layout): the prefill GEMM, and the tiled kernel
// every weight falls back to. The decode GEMV is linear_gemv.cu.
//
// GEMM (prefill, n >= 8): row chunks of W (<= 64 MiB) are dequantized as the reference does
// (s * q + b in f32) and rounded to bf16 into scratch, x is rounded to bf16, and cuBLASLt multiplies
// them on tensor cores with f32 accumulation and output — what MLX does for a bf16 model's quantized
// matmul (it dequantizes to the activation dtype); NMSE vs the f32 reference ~1e-6. If cuBLASLt has no
// bf16 algorithm, the chunks stay f32 (exact) and go through the f32 GEMM. The extra traffic (write +
// read of the dequantized chunk) is small next to the GEMM at prefill sizes.
//
// Tiled (any case a fast path refuses): 64 tokens x 64 output rows per 256-thread block,
// K in steps of 16; the weight tile is dequantized (or converted from f16/bf16) into shared memory
// once and reused by all 64 tokens; each thread accumulates a 4x4 patch in f32. Simple, general,
// correct for every shape; not tensor-core fast.
#include "kernels/cuda/common.cuh"

#include <type_traits>

namespace vlm::ops::cuda::kernels {
namespace {

// ---- tiled kernel -----------------------------------------------------------------------------------
constexpr int kTileT = 64, kTileR = 64, kTileK = 16;

struct WeightArgs {
  const void* dense;  // [out, in] of dense_kind, or null when quantized
  int dense_kind;
  detail::QuantView q;
};

__device__ __forceinline__ float weight_value(const WeightArgs& w, int64_t in, int64_t r, int64_t c) {
  if (w.dense != nullptr) return detail::load_float(w.dense, w.dense_kind, r * in + c);
  const int64_t g = r * w.q.groups + c / w.q.group_size;
  const float s = detail::load_float(w.q.scales, w.q.scale_kind, g);
  const float b = detail::load_float(w.q.biases, w.q.bias_kind, g);
  return s * static_cast<float>(detail::unpack_bits(w.q.packed + r * w.q.words_per_row, c, w.q.bits)) + b;
}

// grid: (ceil(out / 64), ceil(n / 64)); 256 threads, thread (ty, tx) = (tid / 16, tid % 16) owns tokens
// ty*4 .. +3 and rows tx*4 .. +3 of the tile.
__global__ void __launch_bounds__(256) linear_tiled_kernel(const float* __restrict__ x, int64_t n, int64_t in,
                                                           WeightArgs w, int64_t out, float* __restrict__ y) {
  __shared__ float xs[kTileK][kTileT + 4];
  __shared__ float ws[kTileK][kTileR + 4];
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTileR, t0 = static_cast<int64_t>(blockIdx.y) * kTileT;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < in; k0 += kTileK) {
    // 64 x 16 values of x and of W per tile: 4 each per thread; consecutive threads walk k.
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int idx = tid + e * 256, row = idx / kTileK, kk = idx % kTileK;
      const int64_t t = t0 + row, c = k0 + kk;
      xs[kk][row] = (t < n && c < in) ? x[t * in + c] : 0.0f;
      const int64_t r = r0 + row;
      ws[kk][row] = (r < out && c < in) ? weight_value(w, in, r, c) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = xs[kk][ty * 4 + i];
        b[i] = ws[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = t0 + ty * 4 + i;
    if (t >= n) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t r = r0 + tx * 4 + j;
      if (r < out) y[t * out + r] = acc[i][j];
    }
  }
}

// out[i, c] = W[r0 + i, c] for i < rows: the reference's f32 value (s * q, then + b), stored as T
// (f32 exactly, or rounded to bf16 for the tensor-core GEMM). One block per row (no per-element
// 64-bit division), threads over the row's columns.
template <typename T>
__global__ void dequant_rows_kernel(detail::QuantView q, int64_t r0, int in, T* out) {
  const int64_t r = r0 + blockIdx.x;
  const uint32_t* row = q.packed + r * q.words_per_row;
  T* o = out + static_cast<int64_t>(blockIdx.x) * in;
  for (int c = threadIdx.x; c < in; c += blockDim.x) {
    const int64_t g = r * q.groups + c / q.group_size;
    const float s = detail::load_float(q.scales, q.scale_kind, g);
    const float b = detail::load_float(q.biases, q.bias_kind, g);
    const float w = __fadd_rn(__fmul_rn(s, static_cast<float>(detail::unpack_bits(row, c, q.bits))), b);
    if constexpr (std::is_same_v<T, float>)
      o[c] = w;
    else
      o[c] = __float2bfloat16_rn(w);
  }
}

__global__ void to_bf16_kernel(const float* x, int64_t n, __nv_bfloat16* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = __float2bfloat16_rn(x[i]);
}

// Row chunks of at most 64 MiB of dequantized weights (a multiple of 64 rows, so y + r0 stays 256-byte
// aligned): dequantize into `wbuf`, multiply by cuBLASLt. False when cuBLASLt refuses the first chunk
// (nothing written yet).
template <typename T>
bool quant_gemm_chunks(const detail::QuantView& q, const void* xa, int64_t n, int64_t in, int64_t out, float* y,
                       T* wbuf, int64_t chunk, cudaStream_t st) {
  for (int64_t r0 = 0; r0 < out; r0 += chunk) {
    const int64_t rows = std::min(chunk, out - r0);
    dequant_rows_kernel<T><<<static_cast<unsigned>(rows), 256, 0, st>>>(q, r0, static_cast<int>(in), wbuf);
    VLM_CUDA_LAUNCHED("linear (dequantize chunk)");
    bool ok;
    if constexpr (std::is_same_v<T, float>)
      ok = lt_matmul_f32(wbuf, static_cast<const float*>(xa), n, in, rows, y + r0, out);
    else
      ok = lt_matmul(wbuf, CUDA_R_16BF, xa, n, in, rows, y + r0, out, CUBLAS_COMPUTE_32F);
    if (!ok) {
      if (r0 == 0) return false;
      detail::fail(ErrorKind::kInternal, "[cuda linear] cuBLASLt refused a " + std::to_string(rows) +
                                             "-row chunk after accepting the first one");
    }
  }
  return true;
}

int64_t chunk_rows(int64_t in, int64_t out, int64_t elem_bytes) {
  constexpr int64_t kChunkBytes = int64_t{64} << 20;
  return std::min(out, std::max<int64_t>(64, kChunkBytes / elem_bytes / in / 64 * 64));
}

}  // namespace

bool linear_quant_gemm(const float* x, int64_t n, const Weight& w, float* y) {
  const detail::QuantView q = detail::quant_view(w, "linear");
  const int64_t in = w.cols(), out = w.rows();
  if ((reinterpret_cast<uintptr_t>(x) & 15u) != 0 || (reinterpret_cast<uintptr_t>(y) & 15u) != 0 || in % 8 != 0 ||
      out % 4 != 0 || in > (int64_t{1} << 30))
    return false;
  cudaStream_t st = detail::stream("linear");
  // Tensor cores: x and the dequantized weights rounded to bf16 (as MLX computes a bf16 model's
  // quantized matmul), f32 accumulation and output. One scratch block holds both.
  {
    const int64_t chunk = chunk_rows(in, out, 2);
    const size_t x_bytes = (static_cast<size_t>(n * in) * 2 + 255) / 256 * 256;
    char* base = static_cast<char*>(detail::scratch(x_bytes + static_cast<size_t>(chunk * in) * 2, "linear"));
    auto* xb = reinterpret_cast<__nv_bfloat16*>(base);
    to_bf16_kernel<<<detail::elementwise_blocks(n * in, 256), 256, 0, st>>>(x, n * in, xb);
    VLM_CUDA_LAUNCHED("linear (convert x)");
    if (quant_gemm_chunks(q, xb, n, in, out, y, reinterpret_cast<__nv_bfloat16*>(base + x_bytes), chunk, st))
      return true;
  }
  // No bf16 algorithm: exact f32 weights and the f32 GEMM.
  const int64_t chunk = chunk_rows(in, out, 4);
  float* wf = static_cast<float*>(detail::scratch(static_cast<size_t>(chunk * in) * 4, "linear"));
  return quant_gemm_chunks(q, x, n, in, out, y, wf, chunk, st);
}

void linear_tiled(const float* x, int64_t n, const Weight& w, float* y) {
  WeightArgs a{};
  if (w.quantized) {
    a.q = detail::quant_view(w, "linear");
  } else {
    a.dense = detail::device_ptr(w.dense, "linear", "weight");
    a.dense_kind = detail::float_kind(w.dense, "linear", "weight");
  }
  const int64_t out = w.rows(), in = w.cols();
  const int64_t gx = (out + kTileR - 1) / kTileR, gy = (n + kTileT - 1) / kTileT;
  if (gx > 0x7fffffff || gy > 65535)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] " + std::to_string(n) + " tokens x " +
                                                  std::to_string(out) + " rows exceed the tiled kernel's grid");
  linear_tiled_kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), 256, 0,
                        detail::stream("linear")>>>(x, n, in, a, out, y);
  VLM_CUDA_LAUNCHED("linear (tiled)");
}

}  // namespace vlm::ops::cuda::kernels
