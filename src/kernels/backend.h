// Backend discovery. The CPU backend is always present; the CUDA backend is linked in when the
// build found nvcc (src/kernels/cuda/), otherwise cuda_stub.cpp answers "built without CUDA".
// Model and generation code ask these functions, never an #ifdef.
#pragma once

#include <string>
#include <vector>

namespace vlm {

struct GpuInfo {
  int index = 0;
  std::string name;
  int64_t total_memory = 0;
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
};

// True when this binary was built with the CUDA backend.
bool cuda_compiled();
// GPUs visible to the CUDA runtime (empty when none, or not compiled). Never throws.
std::vector<GpuInfo> cuda_devices();
// A one-line reason when cuda_devices() is empty ("built without CUDA", "no CUDA device: ...").
std::string cuda_unavailable_reason();

}  // namespace vlm
