// Elementwise CUDA kernels: activations (the reference's formulas in f32 with CUDA's accurate libm:
// expf, tanhf, erff; no fast-math), gated activations, row softmax, add / scale / mul / softcap, and
// the row argmax of greedy decoding (chunks of a row over many blocks, then one warp per row; only
// the ids are copied back).
// Grid-stride loops, 256 threads; the products that the reference rounds separately use __fmul_rn so
// nvcc does not contract them into an FMA the CPU does not do. activate, gated_activate and the binary ops
// move four values per step (float4) when their arrays are 16-byte aligned, the last n % 4 one by one: these
// are the prefill's memory-bound passes (a 2048-token Qwen 3B MLP: 22.5M gate values; the Qwen2.5-VL tower
// on a 16k-token photo: 213M per block), and one scalar per thread left them at about half the bandwidth.
#include "kernels/cuda/common.cuh"

#include <initializer_list>

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

// Runs f(i) for every i < n: i < 4 * n4 as groups of four (fv(i4) for i4 < n4), the rest one by one.
template <typename FV, typename F>
__device__ __forceinline__ void for_each4(int64_t n, int64_t n4, FV fv, F f) {
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x, stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = first; i < n4; i += stride) fv(i);
  for (int64_t i = 4 * n4 + first; i < n; i += stride) f(i);
}

// Groups of four when every pointer is 16-byte aligned (else 0: all scalar), and the blocks to launch.
int64_t groups_of_four(int64_t n, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (p != nullptr && (reinterpret_cast<uintptr_t>(p) & 15u) != 0) return 0;
  return n / 4;
}
unsigned blocks_for(int64_t n, int64_t n4) { return detail::elementwise_blocks(n4 > 0 ? n4 : n, kThreads); }

__global__ void activate_kernel(float* x, int64_t n, int64_t n4, int act) {
  for_each4(
      n, n4,
      [&](int64_t i) {
        float4 v = reinterpret_cast<float4*>(x)[i];
        v.x = activation_value(v.x, act);
        v.y = activation_value(v.y, act);
        v.z = activation_value(v.z, act);
        v.w = activation_value(v.w, act);
        reinterpret_cast<float4*>(x)[i] = v;
      },
      [&](int64_t i) { x[i] = activation_value(x[i], act); });
}

__global__ void gated_kernel(float* gate, const float* up, int64_t n, int64_t n4, int act) {
  detail::chain_release();  // chained launch (common.cuh): decode runs one per layer between two GEMVs
  detail::chain_wait();
  for_each4(
      n, n4,
      [&](int64_t i) {
        float4 g = reinterpret_cast<float4*>(gate)[i];
        const float4 u = reinterpret_cast<const float4*>(up)[i];
        g.x = __fmul_rn(activation_value(g.x, act), u.x);
        g.y = __fmul_rn(activation_value(g.y, act), u.y);
        g.z = __fmul_rn(activation_value(g.z, act), u.z);
        g.w = __fmul_rn(activation_value(g.w, act), u.w);
        reinterpret_cast<float4*>(gate)[i] = g;
      },
      [&](int64_t i) { gate[i] = __fmul_rn(activation_value(gate[i], act), up[i]); });
}

enum BinaryOp : int { kAdd, kMul, kScale, kSoftcap };

__device__ __forceinline__ float binary_value(float y, float x, float s, int op) {
  switch (op) {
    case kAdd: return __fadd_rn(y, x);
    case kMul: return __fmul_rn(y, x);
    case kScale: return __fmul_rn(y, s);
    default: return __fmul_rn(s, tanhf(y / s));
  }
}

// x is unused (nullptr) for kScale and kSoftcap.
__global__ void binary_kernel(float* y, const float* x, float s, int64_t n, int64_t n4, int op) {
  const bool has_x = op == kAdd || op == kMul;
  for_each4(
      n, n4,
      [&](int64_t i) {
        float4 a = reinterpret_cast<float4*>(y)[i];
        const float4 b = has_x ? reinterpret_cast<const float4*>(x)[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        a.x = binary_value(a.x, b.x, s, op);
        a.y = binary_value(a.y, b.y, s, op);
        a.z = binary_value(a.z, b.z, s, op);
        a.w = binary_value(a.w, b.w, s, op);
        reinterpret_cast<float4*>(y)[i] = a;
      },
      [&](int64_t i) { y[i] = binary_value(y[i], has_x ? x[i] : 0.0f, s, op); });
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
  const int64_t n4 = groups_of_four(n, {y, x});
  binary_kernel<<<blocks_for(n, n4), kThreads, 0, st>>>(y, x, s, n, n4, op);
  VLM_CUDA_LAUNCHED(op_name);
}

// Row argmax in two launches: blocks of kArgmaxThreads each reduce one chunk of a row to its best
// (value, index) — NaN skipped — and one warp per row then reduces the chunks' results. In every
// reduction a larger value wins and equal values go to the lower index: the reference's first-maximum
// rule. kNone (index INT32_MAX) marks "nothing seen"; an all-NaN row gives 0. (One block per row read
// a 152k vocabulary in ~58 us on an H200; ~40 chunks spread it over the SMs.)
constexpr int kArgmaxThreads = 256;
constexpr int64_t kArgmaxChunk = 4096;  // values per block
constexpr int32_t kNone = 0x7fffffff;

__device__ __forceinline__ void better(float& bv, int32_t& bi, float v, int32_t i) {
  if (i == kNone) return;
  if (bi == kNone || v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}

__device__ __forceinline__ void warp_best(float& bv, int32_t& bi) {
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_down_sync(0xffffffffu, bv, off);
    const int32_t oi = __shfl_down_sync(0xffffffffu, bi, off);
    better(bv, bi, ov, oi);
  }
}

// Block (chunk, row): the best of x[row, chunk * kArgmaxChunk, ...) into part_v / part_i[row, chunk].
__global__ void argmax_chunk_kernel(const float* x, int64_t d, float* part_v, int32_t* part_i) {
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  detail::chain_release();  // chained launch (common.cuh): greedy decode ends every step with it
  detail::chain_wait();
  const float* row = x + blockIdx.y * d;
  const int64_t begin = blockIdx.x * kArgmaxChunk, end = min(d, begin + kArgmaxChunk);
  float bv = 0.0f;
  int32_t bi = kNone;
  for (int64_t c = begin + threadIdx.x; c < end; c += blockDim.x) {
    const float v = row[c];
    if (!isnan(v)) better(bv, bi, v, static_cast<int32_t>(c));
  }
  warp_best(bv, bi);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    bv = lane < warps ? sv[lane] : 0.0f;
    bi = lane < warps ? si[lane] : kNone;
    warp_best(bv, bi);
    if (lane == 0) {
      part_v[blockIdx.y * gridDim.x + blockIdx.x] = bv;
      part_i[blockIdx.y * gridDim.x + blockIdx.x] = bi;
    }
  }
}

// One warp per row over its chunks' results.
__global__ void argmax_final_kernel(const float* part_v, const int32_t* part_i, int chunks, int32_t* ids) {
  detail::chain_release();
  detail::chain_wait();
  float bv = 0.0f;
  int32_t bi = kNone;
  for (int c = threadIdx.x; c < chunks; c += 32) better(bv, bi, part_v[blockIdx.x * chunks + c], part_i[blockIdx.x * chunks + c]);
  warp_best(bv, bi);
  if (threadIdx.x == 0) ids[blockIdx.x] = bi == kNone ? 0 : bi;
}

}  // namespace

void activate(float* x, int64_t n, Activation act) {
  if (n <= 0) return;
  cudaStream_t st = detail::stream("activate");
  const int64_t n4 = groups_of_four(n, {x});
  activate_kernel<<<blocks_for(n, n4), kThreads, 0, st>>>(x, n, n4, static_cast<int>(act));
  VLM_CUDA_LAUNCHED("activate");
}

void gated_activate(float* gate, const float* up, int64_t n, Activation act) {
  if (n <= 0) return;
  cudaStream_t st = detail::stream("gated_activate");
  const int64_t n4 = groups_of_four(n, {gate, up});
  detail::launch_chained("gated_activate", gated_kernel, dim3(blocks_for(n, n4)), dim3(kThreads), 0, st, gate, up, n,
                         n4, static_cast<int>(act));
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

// Both argmax kernels on the backend stream, into `out` (device memory) or, when null, into ids in the
// op's scratch; returns where the ids are.
int32_t* launch_argmax(const char* op, const float* x, int64_t n, int64_t d, int32_t* out) {
  const int64_t chunks = (d + kArgmaxChunk - 1) / kArgmaxChunk;
  if (n > 65535 || chunks > 0x7fffffff)
    detail::fail(ErrorKind::kInvalidArgument,
                 std::string("[cuda ") + op + "] at most 65535 rows, got " + std::to_string(n));
  // Scratch: ids [n] (unless out) | chunk values [n, chunks] | chunk indices [n, chunks].
  const size_t parts = static_cast<size_t>(n * chunks), id_bytes = out == nullptr ? static_cast<size_t>(n) * 4 : 0;
  auto* base = static_cast<char*>(detail::scratch(id_bytes + parts * 8, op));
  int32_t* dev_ids = out != nullptr ? out : reinterpret_cast<int32_t*>(base);
  auto* part_v = reinterpret_cast<float*>(base + id_bytes);
  auto* part_i = reinterpret_cast<int32_t*>(base + id_bytes + parts * 4);
  cudaStream_t st = detail::stream(op);
  detail::launch_chained(op, argmax_chunk_kernel, dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(n)),
                         dim3(kArgmaxThreads), 0, st, x, d, part_v, part_i);
  detail::launch_chained(op, argmax_final_kernel, dim3(static_cast<unsigned>(n)), dim3(32), 0, st, part_v, part_i,
                         static_cast<int>(chunks), dev_ids);
  return dev_ids;
}

void argmax(const float* x, int64_t n, int64_t d, int32_t* ids) {
  if (n <= 0) return;
  int32_t* dev_ids = launch_argmax("argmax", x, n, d, nullptr);
  // The ids go to host memory: this waits for the stream (ops.h); under ops::run_graph the copy is
  // captured into pinned memory and the ids reach `ids` when run_graph returns (memory.cu copy()).
  vlm::ops::cuda::copy(ids, Device::kCpu, dev_ids, Device::kCuda, static_cast<size_t>(n) * sizeof(int32_t));
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {
void argmax_device(const float* x, int64_t n, int64_t d, int32_t* device_ids) {
  kernels::launch_argmax("argmax_device", x, n, d, device_ids);
}
}  // namespace vlm::ops::cuda
