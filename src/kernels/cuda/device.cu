// CUDA device discovery through the runtime API. Failing calls (no driver, no GPU) are reported
// as "unavailable", never thrown: a CPU-only machine runs the same binary.
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "kernels/backend.h"

namespace vlm {

bool cuda_compiled() { return true; }

std::vector<GpuInfo> cuda_devices() {
  std::vector<GpuInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    GpuInfo g;
    g.index = i;
    g.name = p.name;
    g.total_memory = static_cast<int64_t>(p.totalGlobalMem);
    g.compute_major = p.major;
    g.compute_minor = p.minor;
    g.multiprocessors = p.multiProcessorCount;
    out.push_back(g);
  }
  return out;
}

namespace ops::cuda::detail {
std::string unavailable_reason();  // memory.cu: also covers devices the backend refuses (compute < 8.0)
}

std::string cuda_unavailable_reason() {
  std::string backend = ops::cuda::detail::unavailable_reason();
  if (!backend.empty()) return backend;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(e);
  }
  return n == 0 ? "no CUDA device found" : "";
}

}  // namespace vlm
