// The CUDA backend's stand-in for builds without nvcc: no devices, a clear reason, and every entry of
// kernels/cuda/cuda_backend.h throwing the same reason (ops.cpp only reaches them under
// DeviceScope(kCuda), which already refuses, so these are a second line).
#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace vlm {

namespace {
constexpr const char* kReason = "this vlmcheck was built without CUDA (nvcc not found at build time)";
[[noreturn]] void unavailable() { throw_error(ErrorKind::kUnsupported, "{}", kReason); }
}  // namespace

bool cuda_compiled() { return false; }
std::vector<GpuInfo> cuda_devices() { return {}; }
std::string cuda_unavailable_reason() { return kReason; }

namespace ops::cuda {

bool available() { return false; }
const cpu::KernelTable& kernel_table() { unavailable(); }
void* device_alloc(size_t, MemCategory) { unavailable(); }
void device_free(void*, size_t, MemCategory) {}
void release_cache() {}
void copy(void*, Device, const void*, Device, size_t) { unavailable(); }
void copy_2d(void*, size_t, const void*, size_t, size_t, size_t) { unavailable(); }
void synchronize() {}
void run_graph(const void*, const std::function<void()>&) { unavailable(); }
uint64_t run_graph_async(const void*, const std::function<void()>&) { unavailable(); }
void graph_wait(uint64_t) {}
void argmax_device(const float*, int64_t, int64_t, int32_t*) { unavailable(); }
void embedding_device_ids(const Weight&, const int32_t*, int64_t, float, float*) { unavailable(); }
void sample_device(const float*, int64_t, const SamplingSpec&, const int32_t*, int64_t, double, int32_t*) {
  unavailable();
}
void graph_op_boundary() {}
bool graphs_enabled() { return false; }
void set_graph_options(bool, int) {}
void set_decode_last_block_merge(bool) {}
void set_gemv_split_k(int) {}
void set_decode_tile_kernel(bool) {}
bool profiling_enabled() { return false; }
void rope_qk(float*, int64_t, float*, int64_t, int64_t, int64_t, int64_t, const float*, const int64_t*, const int*,
             float) {
  unavailable();
}
bool attention_rope_decode(float*, int64_t, int64_t, float*, const float*, const int64_t*, int64_t, int64_t, int64_t,
                           int64_t, float, float, const AttentionMask&, int64_t, const float*, const int64_t*,
                           const int*, float, float*) {
  unavailable();
}
GraphStats graph_stats() { return {}; }
double probe_copy_bandwidth_gbs() { unavailable(); }
double probe_bf16_matmul_gflops() { unavailable(); }

}  // namespace ops::cuda
}  // namespace vlm
