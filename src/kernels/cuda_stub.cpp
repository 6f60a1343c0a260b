// The CUDA backend's stand-in for builds without nvcc: no devices, and a clear reason.
#include "kernels/backend.h"

namespace vlm {

bool cuda_compiled() { return false; }
std::vector<GpuInfo> cuda_devices() { return {}; }
std::string cuda_unavailable_reason() { return "this vlmcheck was built without CUDA (nvcc not found at build time)"; }

}  // namespace vlm
