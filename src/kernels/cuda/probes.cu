// Roofline probes on the current GPU (cuda_backend.h), measured when called with CUDA events on the
// backend stream, median of several timed runs after a warm-up:
//   copy bandwidth   device-to-device cudaMemcpyAsync of 512 MiB, bytes read + written per second;
//   bf16 matmul      cuBLASLt 8192 x 8192 x 8192, bf16 inputs (random), f32 accumulate and output.
// Buffers come from the caching allocator and go back to its cache afterwards.
#include <algorithm>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda {
namespace {

// Event pair timing one enqueued piece of work, in seconds.
class Timer {
 public:
  explicit Timer(const char* op) : op_(op) {
    VLM_CUDA(cudaEventCreate(&start_), op_);
    VLM_CUDA(cudaEventCreate(&stop_), op_);
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  template <typename Fn>
  double seconds(Fn&& fn) {
    cudaStream_t s = detail::stream(op_);
    VLM_CUDA(cudaEventRecord(start_, s), op_);
    fn();
    VLM_CUDA(cudaEventRecord(stop_, s), op_);
    VLM_CUDA(cudaEventSynchronize(stop_), op_);
    float ms = 0.0f;
    VLM_CUDA(cudaEventElapsedTime(&ms, start_, stop_), op_);
    return ms * 1e-3;
  }

 private:
  const char* op_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Deterministic pseudo-random bf16 values in [-1, 1) (a hash of the index).
__global__ void fill_random_bf16(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16_rn(static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

// A device block from the caching allocator, returned on scope exit.
struct Buffer {
  void* p;
  size_t bytes;
  Buffer(size_t b) : p(device_alloc(b, MemCategory::kScratch)), bytes(b) {}
  ~Buffer() { device_free(p, bytes, MemCategory::kScratch); }
};

}  // namespace

double probe_copy_bandwidth_gbs() {
  const char* op = "probe_copy_bandwidth";
  const size_t bytes = size_t{512} << 20;
  Buffer a(bytes), b(bytes);
  cudaStream_t s = detail::stream(op);
  VLM_CUDA(cudaMemsetAsync(a.p, 1, bytes, s), op);
  Timer timer(op);
  auto run = [&] { VLM_CUDA(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, s), op); };
  timer.seconds(run);  // warm-up
  std::vector<double> t;
  for (int i = 0; i < 7; ++i) t.push_back(timer.seconds(run));
  return 2.0 * static_cast<double>(bytes) / median(t) / 1e9;
}

double probe_bf16_matmul_gflops() {
  const char* op = "probe_bf16_matmul";
  const int64_t n = 8192;
  Buffer a(static_cast<size_t>(n * n) * 2), b(static_cast<size_t>(n * n) * 2), c(static_cast<size_t>(n * n) * 4);
  cudaStream_t s = detail::stream(op);
  fill_random_bf16<<<4096, 256, 0, s>>>(static_cast<__nv_bfloat16*>(a.p), n * n, 0x1234u);
  VLM_CUDA_LAUNCHED(op);
  fill_random_bf16<<<4096, 256, 0, s>>>(static_cast<__nv_bfloat16*>(b.p), n * n, 0x9876u);
  VLM_CUDA_LAUNCHED(op);
  Timer timer(op);
  bool ok = true;
  auto run = [&] {
    ok = ok && kernels::lt_matmul(a.p, CUDA_R_16BF, b.p, n, n, n, static_cast<float*>(c.p), n, CUBLAS_COMPUTE_32F);
  };
  timer.seconds(run);  // warm-up (also the heuristic's first call)
  if (!ok) detail::fail(ErrorKind::kUnsupported, "[cuda probe_bf16_matmul] cuBLASLt has no bf16 algorithm here");
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) t.push_back(timer.seconds(run));
  return 2.0 * static_cast<double>(n) * n * n / median(t) / 1e9;
}

}  // namespace vlm::ops::cuda
