// Elementwise CUDA kernels: activations (the reference's formulas in f32 with CUDA's accurate libm:
// expf, tanhf, erff; no fast-math), gated activations, row softmax, add / scale / mul / softcap.
// Grid-stride loops, 256 threads; the products that the reference rounds separately use __fmul_rn so
// nvcc does not contract them into an FMA the CPU does not do.
#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float activation_value(float x, int act) {
  switch (static_cast<Activation>(act)) {
    case Activation::kSilu: return x / (1.0f + expf(-x));
    case Activation::kGeluTanh: {
      constexpr float kSqrt2OverPi = 0.7978845608028654f;
      return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    }
    case Activation::kGeluErf: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case Activation::kQuickGelu: return x / (1.0f + expf(-1.702f * x));
    case Activation::kRelu: return x > 0.0f ? x : 0.0f;
  }
  return x;
}

__global__ void activate_kernel(float* x, int64_t n, int act) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    x[i] = activation_value(x[i], act);
}

__global__ void gated_kernel(float* gate, const float* up, int64_t n, int act) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    gate[i] = __fmul_rn(activation_value(gate[i], act), up[i]);
}

enum BinaryOp : int { kAdd, kMul, kScale, kSoftcap };

__global__ void binary_kernel(float* y, const float* x, float s, int64_t n, int op) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    switch (op) {
      case kAdd: y[i] = __fadd_rn(y[i], x[i]); break;
      case kMul: y[i] = __fmul_rn(y[i], x[i]); break;
      case kScale: y[i] = __fmul_rn(y[i], s); break;
      default: y[i] = __fmul_rn(s, tanhf(y[i] / s)); break;
    }
  }
}

// One block per row: max, then sum of exp, then normalise. A row of -inf only becomes zeros.
__global__ void softmax_kernel(float* x, int64_t d) {
  __shared__ float red[32];
  float* xr = x + blockIdx.x * d;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) mx = fmaxf(mx, xr[c]);
  mx = block_max(mx, red);
  if (mx == -INFINITY) {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) xr[c] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float e = expf(xr[c] - mx);
    xr[c] = e;
    sum += e;
  }
  sum = block_sum(sum, red);
  const float inv = 1.0f / sum;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) xr[c] = __fmul_rn(xr[c], inv);
}

void binary(const char* op_name, float* y, const float* x, float s, int64_t n, int op) {
  if (n <= 0) return;
  cudaStream_t st = detail::stream(op_name);
  binary_kernel<<<detail::elementwise_blocks(n, kThreads), kThreads, 0, st>>>(y, x, s, n, op);
  VLM_CUDA_LAUNCHED(op_name);
}

}  // namespace

void activate(float* x, int64_t n, Activation act) {
  if (n <= 0) return;
  cudaStream_t st = detail::stream("activate");
  activate_kernel<<<detail::elementwise_blocks(n, kThreads), kThreads, 0, st>>>(x, n, static_cast<int>(act));
  VLM_CUDA_LAUNCHED("activate");
}

void gated_activate(float* gate, const float* up, int64_t n, Activation act) {
  if (n <= 0) return;
  cudaStream_t st = detail::stream("gated_activate");
  gated_kernel<<<detail::elementwise_blocks(n, kThreads), kThreads, 0, st>>>(gate, up, n, static_cast<int>(act));
  VLM_CUDA_LAUNCHED("gated_activate");
}

void softmax(float* x, int64_t n, int64_t d) {
  if (n <= 0 || d <= 0) return;
  if (n > 0x7fffffff) detail::fail(ErrorKind::kInvalidArgument, "[cuda softmax] too many rows: " + std::to_string(n));
  cudaStream_t st = detail::stream("softmax");
  softmax_kernel<<<static_cast<unsigned>(n), kThreads, 0, st>>>(x, d);
  VLM_CUDA_LAUNCHED("softmax");
}

void add(float* y, const float* x, int64_t n) { binary("add", y, x, 0.0f, n, kAdd); }
void scale(float* y, float s, int64_t n) { binary("scale", y, nullptr, s, n, kScale); }
void mul(float* y, const float* x, int64_t n) { binary("mul", y, x, 0.0f, n, kMul); }
void softcap(float* x, int64_t n, float cap) { binary("softcap", x, nullptr, cap, n, kSoftcap); }

}  // namespace vlm::ops::cuda::kernels
