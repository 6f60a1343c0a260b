// RMSNorm and LayerNorm on the GPU: one block per row, f32 block reductions, the reference's
// formulas (rms = sqrt(mean(x²) + eps), y = x / rms * (w + offset); LayerNorm two-pass mean and
// variance). Weights and biases of any float dtype are read as f32. In place (x == y) is allowed:
// each element is read before the same thread writes it. add_rms_norm folds the residual add into
// the norm's first pass (one launch and one read of x instead of two). The RMSNorms are chained
// launches (common.cuh): a decode step runs two per layer.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/linear_dense.cuh"

#include <algorithm>
#include <type_traits>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// The stored value: f32 as computed, or rounded to nearest even into bf16 / f16 (rms_norm_rounded).
template <typename T>
__device__ __forceinline__ T store_value(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return v;
}

// rms_norm and add_rms_norm (kResidual: x += r first). Each thread adds, stores and later reads back
// only its own elements, so y may alias r. T: y's type (float, or bf16/f16 for rms_norm_rounded: the
// same f32 value, then rounded once).
template <bool kResidual, typename T = float>
__global__ void rms_norm_kernel(float* x, const float* r, int64_t d, const void* w, int wkind, float eps, float offset,
                                T* y) {
  __shared__ float red[32];
  detail::chain_release();  // chained launch (common.cuh): release first, wait before touching x
  detail::chain_wait();
  float* xr = x + blockIdx.x * d;
  T* yr = y + blockIdx.x * d;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float v = xr[c];
    if constexpr (kResidual) {
      v = __fadd_rn(v, r[blockIdx.x * d + c]);
      xr[c] = v;
    }
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x)
    yr[c] = store_value<T>(__fmul_rn(__fmul_rn(xr[c], inv), detail::load_float(w, wkind, c) + offset));
}

__global__ void layer_norm_kernel(const float* x, int64_t d, const void* w, int wkind, const void* b, int bkind,
                                  float eps, float* y) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * d;
  float* yr = y + blockIdx.x * d;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) sum += xr[c];
  const float mean = block_sum(sum, red) / static_cast<float>(d);
  float var = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float t = xr[c] - mean;
    var += t * t;
  }
  const float inv = 1.0f / sqrtf(block_sum(var, red) / static_cast<float>(d) + eps);
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float v = __fmul_rn(xr[c] - mean, inv);
    if (w != nullptr) v = __fmul_rn(v, detail::load_float(w, wkind, c));
    if (b != nullptr) v = __fadd_rn(v, detail::load_float(b, bkind, c));
    yr[c] = v;
  }
}

void check_rows(int64_t n, const char* op) {
  if (n > 0x7fffffff) detail::fail(ErrorKind::kInvalidArgument, std::string("[cuda ") + op + "] too many rows");
}

// About 2 values per thread (up to 1024 threads): a decode-time row is one block, and its passes
// are chains of dependent L2 round trips, so fewer steps per thread is what shortens them. The block
// size also fixes the order of the sum of squares, so rms_norm_rounded uses the same one.
int row_threads(int64_t d) {
  return static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, ((d + 1) / 2 + 31) / 32 * 32)));
}

}  // namespace

void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y) {
  if (n <= 0 || d <= 0) return;
  check_rows(n, "rms_norm");
  const void* w = detail::device_ptr(weight, "rms_norm", "weight");
  const int wk = detail::float_kind(weight, "rms_norm", "weight");
  cudaStream_t st = detail::stream("rms_norm");
  const int threads = row_threads(d);
  // x is only read (kResidual false).
  detail::launch_chained("rms_norm", rms_norm_kernel<false>, dim3(static_cast<unsigned>(n)), dim3(threads), 0, st,
                         const_cast<float*>(x), static_cast<const float*>(nullptr), d, w, wk, eps, offset, y);
}

void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y) {
  if (n <= 0 || d <= 0) return;
  check_rows(n, "add_rms_norm");
  const void* w = detail::device_ptr(weight, "add_rms_norm", "weight");
  const int wk = detail::float_kind(weight, "add_rms_norm", "weight");
  cudaStream_t st = detail::stream("add_rms_norm");
  const int threads = row_threads(d);
  detail::launch_chained("add_rms_norm", rms_norm_kernel<true>, dim3(static_cast<unsigned>(n)), dim3(threads), 0,
                         st, x, r, d, w, wk, eps, offset, y);
}

void rms_norm_rounded(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, void* y,
                      int kind) {
  if (n <= 0 || d <= 0) return;
  check_rows(n, "rms_norm_rounded");
  const void* w = detail::device_ptr(weight, "rms_norm_rounded", "weight");
  const int wk = detail::float_kind(weight, "rms_norm_rounded", "weight");
  cudaStream_t st = detail::stream("rms_norm_rounded");
  const dim3 grid(static_cast<unsigned>(n)), block(row_threads(d));
  float* xm = const_cast<float*>(x);  // only read (kResidual false)
  if (kind == detail::kBF16)
    detail::launch_chained("rms_norm_rounded", rms_norm_kernel<false, __nv_bfloat16>, grid, block, 0, st, xm,
                           static_cast<const float*>(nullptr), d, w, wk, eps, offset, static_cast<__nv_bfloat16*>(y));
  else
    detail::launch_chained("rms_norm_rounded", rms_norm_kernel<false, __half>, grid, block, 0, st, xm,
                           static_cast<const float*>(nullptr), d, w, wk, eps, offset, static_cast<__half*>(y));
}

void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y) {
  if (n <= 0 || d <= 0) return;
  check_rows(n, "layer_norm");
  const void* w = weight.defined() ? detail::device_ptr(weight, "layer_norm", "weight") : nullptr;
  const void* b = bias.defined() ? detail::device_ptr(bias, "layer_norm", "bias") : nullptr;
  const int wk = weight.defined() ? detail::float_kind(weight, "layer_norm", "weight") : 0;
  const int bk = bias.defined() ? detail::float_kind(bias, "layer_norm", "bias") : 0;
  cudaStream_t st = detail::stream("layer_norm");
  layer_norm_kernel<<<static_cast<unsigned>(n), kThreads, 0, st>>>(x, d, w, wk, b, bk, eps, y);
  VLM_CUDA_LAUNCHED("layer_norm");
}

}  // namespace vlm::ops::cuda::kernels
