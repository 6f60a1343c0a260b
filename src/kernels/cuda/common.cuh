// Shared by the CUDA backend's .cu files: error checking that turns every failing CUDA / cuBLASLt
// call into a vlm::Error naming the op, the one backend stream, the staging of host index arrays into
// a reusable device buffer, and small device helpers (float loads of any stored float dtype, warp and
// block reductions). Include it first in every .cu file: fmt 9 turns constexpr off under nvcc but keeps
// its C++20 constexpr functions, which then call non-constexpr helpers and fail to compile; forcing
// FMT_USE_CONSTEXPR before any fmt header keeps the two consistent (core/error.h includes fmt).
#pragma once

#ifndef FMT_USE_CONSTEXPR
#define FMT_USE_CONSTEXPR 1
#endif

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cuda/cuda_backend.h"

namespace vlm::ops::cuda::detail {

// ---- errors ---------------------------------------------------------------------------------------
[[noreturn]] void fail(ErrorKind kind, const std::string& message);
// Throws Error(kInternal, or kResource for out-of-memory) "[cuda <op>] <what>: <CUDA error string>".
void fail_cuda(cudaError_t e, const char* op, const char* what);
void fail_cublas(cublasStatus_t s, const char* op, const char* what);

inline void check_cuda(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) fail_cuda(e, op, what);
}
inline void check_cublas(cublasStatus_t s, const char* op, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail_cublas(s, op, what);
}

// VLM_CUDA(call, "op"): checks one runtime call. VLM_CUDA_LAUNCHED("op"): checks the launch just made
// (cudaGetLastError catches bad configurations; faults inside the kernel surface at the next sync).
#define VLM_CUDA(call, op) ::vlm::ops::cuda::detail::check_cuda((call), (op), #call)
#define VLM_CUBLAS(call, op) ::vlm::ops::cuda::detail::check_cublas((call), (op), #call)
#define VLM_CUDA_LAUNCHED(op) ::vlm::ops::cuda::detail::check_cuda(cudaGetLastError(), (op), "kernel launch")

// ---- context --------------------------------------------------------------------------------------
// The backend stream (created on first use, after the device is selected). Throws kUnsupported when no
// CUDA device is usable, naming `op`.
cudaStream_t stream(const char* op);
// Why available() is false ("" when it is true).
std::string unavailable_reason();
// The process-wide cuBLASLt handle and a workspace of workspace_bytes() on the device.
cublasLtHandle_t lt_handle(const char* op);
void* lt_workspace(const char* op);
size_t lt_workspace_bytes();

// A device scratch buffer of at least `bytes`, reused between calls (kernels that need temporary
// storage, e.g. activations converted to bf16 for cuBLASLt). Stream order makes reuse safe: the next
// op that overwrites it runs after every earlier reader. Valid until the next scratch() call.
void* scratch(size_t bytes, const char* op);

// ---- staging of host index arrays -----------------------------------------------------------------
// Collects the host arrays one op needs (ids, positions, k_pos, ...) into one host block, copies it to
// a device buffer with one cudaMemcpyAsync on the backend stream, and hands out the device addresses.
// Eagerly the block goes through a pinned slot to a reusable device buffer (blocks larger than a slot
// through memory.cu's pool of pinned buffers; a pageable copy only past its cap); the host arrays may die once upload() returns, and the device buffer is only
// overwritten by a later op's upload, which the stream orders after this op's kernels. Under
// run_graph capture the block goes to the graph's staging arena instead (capture_stage: its own
// device range per op, uploaded before the piece launches), so nothing is copied from pageable memory
// and no slot is waited for. One host thread drives the backend at a time (the stream is shared).
class Staging {
 public:
  explicit Staging(const char* op) : op_(op) {}
  // Queues n elements of p (may be null when n == 0); returns a handle for device().
  template <typename T>
  size_t add(const T* p, size_t n) {
    size_t off = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(off + n * sizeof(T));
    if (n > 0) std::memcpy(bytes_.data() + off, p, n * sizeof(T));
    return off;
  }
  void upload();
  template <typename T>
  const T* device(size_t handle) const {
    return reinterpret_cast<const T*>(base_ + handle);
  }

 private:
  const char* op_;
  std::vector<char> bytes_;
  const char* base_ = nullptr;
};

// ---- graph capture (graph.cu) ---------------------------------------------------------------------
// True while run_graph captures the backend stream: ops must then neither wait for the stream nor
// copy from pageable host memory nor free device memory to the driver (memory.cu routes copies,
// staging and the allocator's out-of-memory retry accordingly).
bool capturing();
// Under capture: `bytes` of pinned host memory to fill now, and the device address where the same
// bytes will be when the captured work runs (uploaded right before the piece launches; both stay
// valid until the next run_graph step).
struct StagedBytes {
  char* host;
  const char* device;
};
StagedBytes capture_stage(size_t bytes);
// Under capture: pinned host memory for a device-to-host copy; run_graph copies its `bytes` to `dst`
// after waiting for the step (before it returns).
void* capture_readback(void* dst, size_t bytes);

// ---- chained launches (programmatic dependent launch, sm_90+; graph.cu) ----------------------------
// A decode step is ~250 dependent kernels of 2-25 us; launched normally, each is scheduled only after
// the one before it has completed, so every kernel's ramp (block scheduling, the first bytes of its
// weight stream) and tail are paid one after the other. A kernel launched with launch_chained() may
// be scheduled while the kernel ahead of it still runs. Its shape:
//   chain_release();   first thing: the NEXT chained kernel may be scheduled as soon as every block
//                      of this grid has passed here (i.e. its last wave is resident); the GEMVs
//                      release right after their chain_wait() instead (linear_gemv.cuh
//                      gemv_release_late), so the chain runs about one kernel ahead;
//   ...                work that reads only what no kernel of the step writes (weights, parameters):
//                      the 4-bit tensor-core GEMV issues its first rounds of weight copies here;
//   chain_wait();      returns once the previous kernel has completed and its writes are visible;
//                      since that kernel itself waited for its predecessor, every earlier kernel of
//                      the stream has then completed;
//   ...                everything else: reads of activations, and every global write (never write
//                      before chain_wait: the previous kernel may still read the buffer).
// Both are no-ops in a kernel launched normally (or below sm_90, or with chaining off), so a chained
// kernel is also correct when launched with <<<>>>, after a kernel that was not chained (which only
// releases its successor when it completes), as the first kernel of a graph piece (a graph launch
// starts after the previous one completed) and in eager mode. Under run_graph the launches become
// programmatic edges of the captured graph. Chained: every kernel of a text decode step (RMSNorms,
// RoPE, the GEMVs of linear_gemv*.cu, decode attention and its combine, gated_activate, argmax); not
// the prefill kernels, the general attention fallback or the sampler. On by default on sm_90+
// (VLMCHECK_CUDA_PDL=0 turns it off): on an H100, alternating runs of one bundle, it gained 2-4 % on
// the 3B bf16 and 4-bit and the 7B 4-bit decode (7B bf16, bandwidth-bound, unchanged); the host's
// capture time per step rises (3B 4-bit ~700 -> ~1000 us), still below the GPU's.
bool chained_launches_enabled();
__device__ __forceinline__ void chain_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void chain_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The launch: cudaLaunchKernelEx, with the programmatic-serialization attribute when chaining is on
// (without it, a plain launch: the kernel's chain_* calls are then no-ops).
template <typename... Params, typename... Args>
void launch_chained(const char* op, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                    Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = &attr;
  cfg.numAttrs = chained_launches_enabled() ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), op, "kernel launch");
}

// ---- profile (profile.cu) -------------------------------------------------------------------------
// VLMCHECK_CUDA_PROFILE=1: per-op host and GPU time, printed to stderr at exit. profiling() reads the
// variable once; a ProfileScope brackets one op (nested scopes count only the outermost);
// profile_phase(n) marks the following ops as decode (n < 8) or prefill.
bool profiling();
void profile_phase(int64_t tokens);
class ProfileScope {
 public:
  explicit ProfileScope(const char* op);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* op_ = nullptr;
  void* start_ = nullptr;  // cudaEvent_t
  double t0_ = 0.0;
};

// ---- dtypes ---------------------------------------------------------------------------------------
// Float dtypes as kernels see them (runtime argument for small vectors: scales, biases, norm weights).
enum FloatKind : int { kF32 = 0, kF16 = 1, kBF16 = 2 };
// Throws kInvalidArgument unless t is f32/f16/bf16 on the GPU (names the op and the tensor).
FloatKind float_kind(const Tensor& t, const char* op, const char* name);
// Device pointer of a defined tensor; throws unless it lives on the GPU.
const void* device_ptr(const Tensor& t, const char* op, const char* name);
struct QuantView;
// Checks a quantized weight (spec, shapes, all three tensors on the GPU) and returns its device view.
QuantView quant_view(const Weight& w, const char* op);

__device__ __forceinline__ float load_float(const void* p, int kind, int64_t i) {
  switch (kind) {
    case kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// Value i of a packed MLX row (any bit width; the row is one little-endian bit stream, so a 3/5/6-bit
// value may straddle two words). Same rule as core/quant.h's unpack_affine.
__device__ __forceinline__ uint32_t unpack_bits(const uint32_t* row, int64_t i, int bits) {
  const int64_t bit = i * bits;
  const int64_t word = bit >> 5;
  const int shift = static_cast<int>(bit & 31);
  uint64_t two = row[word];
  if (shift + bits > 32) two |= static_cast<uint64_t>(row[word + 1]) << 32;
  return static_cast<uint32_t>((two >> shift) & ((1u << bits) - 1u));
}

// Device view of a quantized matrix (pointers + layout), built by quant_view().
struct QuantView {
  const uint32_t* packed;  // [rows, words_per_row]
  const void* scales;      // [rows, groups]
  const void* biases;      // [rows, groups]
  int scale_kind, bias_kind;
  int bits, group_size;
  int64_t words_per_row, groups;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum / max over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `shared` holds 32 floats; the trailing barrier lets callers reuse it immediately.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float t = lane < warps ? shared[lane] : 0.0f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float t = lane < warps ? shared[lane] : -INFINITY;
  t = warp_max(t);
  __syncthreads();
  return t;
}

// Grid size for an elementwise kernel over n items with `threads` per block (grid-stride loops cover
// the rest).
inline unsigned elementwise_blocks(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

}  // namespace vlm::ops::cuda::detail

// Kernel entry points (one .cu per op family), assembled into the table by table.cu.
namespace vlm::ops::cuda::kernels {
using detail::block_max;
using detail::block_sum;
using detail::warp_max;
using detail::warp_sum;

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y);
void linear_group(const float* x, int64_t n, const LinearOut* outs, int count);
void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out);
void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y);
void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y);
void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y);
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling);
void mrope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
           const int64_t* positions3, const int* stream_of, float attention_scaling);
void activate(float* x, int64_t n, Activation act);
void gated_activate(float* gate, const float* up, int64_t n, Activation act);
void softmax(float* x, int64_t n, int64_t d);
void argmax(const float* x, int64_t n, int64_t d, int32_t* ids);
void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out);
void add(float* y, const float* x, int64_t n);
void scale(float* y, float s, int64_t n);
void mul(float* y, const float* x, int64_t n);
void softcap(float* x, int64_t n, float cap);

// Pieces of linear (linear_dense.cu / linear_quant.cu), called by the dispatcher in linear_dense.cu.
// Each returns false when its fast path does not apply to these arguments (alignment, sizes).
bool linear_dense_cublaslt(const float* x, int64_t n, const Weight& w, float* y);
// Any weight, any shape: tiled kernel (dequantizes weight tiles into shared memory).
void linear_tiled(const float* x, int64_t n, const Weight& w, float* y);
// y[n, out] (f32, rows ldy apart) = xb[n, in] · w[out, in]ᵀ through cuBLASLt, A and B of `ab_type`,
// f32 output and scale; false (nothing launched) when cuBLASLt offers no algorithm. Also used by the
// bf16 probe.
bool lt_matmul(const void* w, cudaDataType_t ab_type, const void* xb, int64_t n, int64_t in, int64_t out, float* y,
               int64_t ldy, cublasComputeType_t compute);
// The f32 GEMM: CUBLAS_COMPUTE_32F_PEDANTIC (no TF32), else COMPUTE_32F; false when neither runs.
bool lt_matmul_f32(const void* w, const float* x, int64_t n, int64_t in, int64_t out, float* y, int64_t ldy);
// Quantized prefill: exact f32 dequantization of row chunks + lt_matmul_f32; false if it cannot run.
bool linear_quant_gemm(const float* x, int64_t n, const Weight& w, float* y);
// y[t, r] += bias[r] for t < n.
void add_bias(float* y, int64_t n, int64_t out, const Tensor& bias);
}  // namespace vlm::ops::cuda::kernels
