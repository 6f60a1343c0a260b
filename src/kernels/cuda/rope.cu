// RoPE and M-RoPE on the GPU, HF rotate_half convention (see ops.h). Angles are the reference's f32
// product position * inv_freq; cos/sin are evaluated in double and rounded once, exactly like the CPU
// reference, so both paths agree to the last bit of the angle. Positions, inv_freq and the M-RoPE
// stream table are host arrays (ops.h "devices"): passed by value for decode-sized calls; for longer
// calls they become a device table of (cos, sin) per (token, frequency), which one block per token then
// applies to every head.
//
// The table is kept between calls and rebuilt only when its inputs change. A layer rotates q and then k
// with the same positions, and a vision tower rotates every block's q and k with the same patch
// positions (64 calls per Qwen2.5-VL encode): each of those repeats costs a host memcmp of the inputs
// (~0.1 ms for the 1.5 MB positions of a 62k-patch photo) instead of an upload and a table kernel, and
// the double-precision sincos runs once per (token, frequency) instead of once per head.
#include <algorithm>

#include "kernels/cuda/rope_common.cuh"

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// Decode-sized calls (a few tokens, head_dim <= 256) pass inv_freq, the positions and the stream table
// by value as kernel parameters (1.1 KB), so no staging copy is queued before the kernel.
constexpr int kSmallTokens = 4, kSmallHalf = 128;
struct SmallArgs {
  float inv_freq[kSmallHalf];
  int64_t positions[3 * kSmallTokens];
  int stream_of[kSmallHalf];
};

// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin in place (rope_common.cuh's arithmetic).
__device__ __forceinline__ void rotate_pair(float* xh, int64_t i, int64_t half, float2 cs) {
  const float x1 = xh[i], x2 = xh[i + half];
  xh[i] = rope_first(x1, x2, cs);
  xh[i + half] = rope_second(x1, x2, cs);
}

// Decode: one thread per (token, head, frequency), the three arrays from `small`. Heads [0, n_heads) are
// x's [n_tokens, n_heads, head_dim], heads [n_heads, n_heads + n_heads2) x2's (rope_qk: q and k in one
// launch; n_heads2 = 0 for one tensor).
// positions: [n_streams, n_tokens]; stream_of: [half] (used when has_streams; else one stream, row 0).
__global__ void rope_small_kernel(float* __restrict__ x, int64_t n_heads, float* __restrict__ x2, int64_t n_heads2,
                                  int64_t n_tokens, int64_t head_dim, int64_t half, bool has_streams, float scaling,
                                  const SmallArgs small) {
  detail::chain_release();  // chained launch (common.cuh): release first, wait before touching x
  detail::chain_wait();
  const int64_t heads = n_heads + n_heads2;
  const int64_t total = n_tokens * heads * half;
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < total; w += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = w % half, th = w / half;
    const int64_t t = th / heads, h = th % heads;
    const int64_t stream = has_streams ? small.stream_of[i] : 0;
    const float2 cs = rope_cos_sin(small.positions[stream * n_tokens + t], small.inv_freq[i], scaling);
    float* row = h < n_heads ? x + (t * n_heads + h) * head_dim : x2 + (t * n_heads2 + (h - n_heads)) * head_dim;
    rotate_pair(row, i, half, cs);
  }
}

// Under graph capture: one thread per (token, head, frequency), cos/sin per thread, arrays staged.
__global__ void rope_direct_kernel(float* __restrict__ x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                                   int64_t half, const float* __restrict__ inv_freq,
                                   const int64_t* __restrict__ positions, const int* __restrict__ stream_of,
                                   float scaling) {
  const int64_t total = n_tokens * n_heads * half;
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < total; w += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = w % half, th = w / half;
    const int64_t t = th / n_heads, h = th % n_heads;
    const int64_t stream = stream_of != nullptr ? stream_of[i] : 0;
    rotate_pair(x + (t * n_heads + h) * head_dim, i, half,
                rope_cos_sin(positions[stream * n_tokens + t], inv_freq[i], scaling));
  }
}

// table[t * half + i] = (cos, sin) of token t, frequency i. positions: [n_streams, n_tokens]; stream_of:
// [half] or null (one stream).
__global__ void rope_table_kernel(float2* __restrict__ table, int64_t n_tokens, int64_t half,
                                  const float* __restrict__ inv_freq, const int64_t* __restrict__ positions,
                                  const int* __restrict__ stream_of, float scaling) {
  const int64_t total = n_tokens * half;
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < total; w += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = w % half, t = w / half;
    const int64_t stream = stream_of != nullptr ? stream_of[i] : 0;
    table[w] = rope_cos_sin(positions[stream * n_tokens + t], inv_freq[i], scaling);
  }
}

// One block per token (grid-stride over tokens): the token's (cos, sin) row is staged in shared memory, then
// the block's threads walk its (head, frequency) pairs with 32-bit index math. The previous kernel (one
// thread per flat 64-bit (token, head, frequency) index) profiled at 29 us per 3B q/k call at 2048 tokens and
// 52 us on Gemma, against ~8 us to move the bytes; its 64-bit divisions were the suspected cause (not
// profiled further), and this kernel's own time has not been measured on its own.
__global__ void rope_apply_kernel(float* __restrict__ x, int64_t n_tokens, int n_heads, int head_dim, int half,
                                  const float2* __restrict__ table) {
  extern __shared__ float2 row_cs[];  // [half]
  const int pairs = n_heads * half;
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) row_cs[i] = table[t * half + i];
    __syncthreads();
    float* xt = x + t * n_heads * head_dim;
    for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
      const int h = j / half, i = j - h * half;
      rotate_pair(xt + static_cast<int64_t>(h) * head_dim, i, half, row_cs[i]);
    }
    __syncthreads();  // before the next token overwrites row_cs
  }
}

// The last table built and the host inputs it was built from. One host thread drives the backend at a
// time (common.cuh), so no lock. The device buffer is rewritten only by a later table kernel on the one
// stream, which runs after every kernel that read the previous table.
struct TableCache {
  std::vector<int64_t> positions;
  std::vector<float> inv_freq;
  std::vector<int> stream_of;
  int64_t n_tokens = 0, half = 0;
  int n_streams = 0;
  float scaling = 0.0f;
  float2* table = nullptr;
  size_t capacity = 0;  // bytes of `table`
  bool valid = false;

  bool matches(int64_t n_tok, int64_t hf, const float* inv, const int64_t* pos, int n_str, const int* str,
               float sc) const {
    return valid && n_tokens == n_tok && half == hf && n_streams == n_str &&
           std::memcmp(&scaling, &sc, sizeof(float)) == 0 && (str == nullptr) == stream_of.empty() &&
           std::memcmp(inv_freq.data(), inv, sizeof(float) * static_cast<size_t>(hf)) == 0 &&
           (str == nullptr || std::memcmp(stream_of.data(), str, sizeof(int) * static_cast<size_t>(hf)) == 0) &&
           std::memcmp(positions.data(), pos, sizeof(int64_t) * static_cast<size_t>(n_str * n_tok)) == 0;
  }
};

TableCache& table_cache() {
  static TableCache* c = new TableCache();  // never destroyed: device memory may outlive static teardown
  return *c;
}

// The (cos, sin) table for these inputs on the device: the cached one when the inputs are unchanged, else
// built. Not under graph capture (launch_rope): a captured kernel would keep writing this buffer on every
// replay, after it may have been reallocated.
const float2* rope_table(const char* op, int64_t n_tokens, int64_t half, const float* inv_freq,
                         const int64_t* positions, int n_streams, const int* stream_of, float scaling) {
  TableCache& c = table_cache();
  if (c.matches(n_tokens, half, inv_freq, positions, n_streams, stream_of, scaling)) return c.table;
  c.valid = false;  // set again only once the new table is queued (a throw below leaves no stale match)
  const size_t bytes = sizeof(float2) * static_cast<size_t>(n_tokens * half);
  if (bytes > c.capacity) {
    if (c.table != nullptr) device_free(c.table, c.capacity, MemCategory::kScratch);  // stream-ordered reuse
    c.table = nullptr;
    c.capacity = 0;
    c.table = static_cast<float2*>(device_alloc(bytes, MemCategory::kScratch));
    c.capacity = bytes;
  }
  detail::Staging st(op);
  const size_t h_inv = st.add(inv_freq, static_cast<size_t>(half));
  const size_t h_pos = st.add(positions, static_cast<size_t>(n_streams * n_tokens));
  const size_t h_str = stream_of != nullptr ? st.add(stream_of, static_cast<size_t>(half)) : size_t{0};
  st.upload();
  rope_table_kernel<<<detail::elementwise_blocks(n_tokens * half, kThreads), kThreads, 0, detail::stream(op)>>>(
      c.table, n_tokens, half, st.device<float>(h_inv), st.device<int64_t>(h_pos),
      stream_of != nullptr ? st.device<int>(h_str) : nullptr, scaling);
  VLM_CUDA_LAUNCHED(op);
  c.positions.assign(positions, positions + n_streams * n_tokens);
  c.inv_freq.assign(inv_freq, inv_freq + half);
  if (stream_of != nullptr) {
    c.stream_of.assign(stream_of, stream_of + half);
  } else {
    c.stream_of.clear();
  }
  c.n_tokens = n_tokens;
  c.half = half;
  c.n_streams = n_streams;
  c.scaling = scaling;
  c.valid = true;
  return c.table;
}

// Whether launch_rope takes the one-launch decode kernel (which also rotates a second tensor).
bool small_rope(int64_t n_tokens, int64_t half) { return n_tokens <= kSmallTokens && half <= kSmallHalf; }

// Shared by rope and mrope: positions has n_streams rows of n_tokens; stream_of (half entries) is null
// for plain RoPE. x2 / n_heads2: a second tensor with the same tokens (rope_qk), small_rope() calls only.
void launch_rope(const char* op, float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t half,
                 const float* inv_freq, const int64_t* positions, int n_streams, const int* stream_of,
                 float scaling, float* x2 = nullptr, int64_t n_heads2 = 0) {
  const int64_t total = n_tokens * (n_heads + n_heads2) * half;
  const unsigned blocks = detail::elementwise_blocks(total, kThreads);
  cudaStream_t cs = detail::stream(op);
  const bool has_streams = stream_of != nullptr;
  if (small_rope(n_tokens, half)) {
    SmallArgs a{};
    std::memcpy(a.inv_freq, inv_freq, sizeof(float) * static_cast<size_t>(half));
    std::memcpy(a.positions, positions, sizeof(int64_t) * static_cast<size_t>(n_streams * n_tokens));
    if (has_streams) std::memcpy(a.stream_of, stream_of, sizeof(int) * static_cast<size_t>(half));
    // Chained (common.cuh): decode runs two per layer, right after the q/k/v GEMV.
    detail::launch_chained(op, rope_small_kernel, dim3(blocks), dim3(kThreads), 0, cs, x, n_heads, x2, n_heads2,
                           n_tokens, head_dim, half, has_streams, scaling, a);
  } else if (x2 != nullptr) {
    detail::fail(ErrorKind::kInternal, std::string("[cuda ") + op + "] a second tensor needs the decode kernel");
  } else if (detail::capturing()) {
    detail::Staging st(op);  // the graph's arena: this op's own device range
    const size_t h_inv = st.add(inv_freq, static_cast<size_t>(half));
    const size_t h_pos = st.add(positions, static_cast<size_t>(n_streams * n_tokens));
    const size_t h_str = has_streams ? st.add(stream_of, static_cast<size_t>(half)) : size_t{0};
    st.upload();
    rope_direct_kernel<<<blocks, kThreads, 0, cs>>>(x, n_tokens, n_heads, head_dim, half, st.device<float>(h_inv),
                                                    st.device<int64_t>(h_pos),
                                                    has_streams ? st.device<int>(h_str) : nullptr, scaling);
  } else {
    const float2* table = rope_table(op, n_tokens, half, inv_freq, positions, n_streams, stream_of, scaling);
    const int pairs = static_cast<int>(n_heads * half);
    const int threads = std::min(kThreads, (pairs + 31) / 32 * 32);
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(n_tokens, int64_t{65535} * 8));
    rope_apply_kernel<<<grid, threads, sizeof(float2) * static_cast<size_t>(half), cs>>>(
        x, n_tokens, static_cast<int>(n_heads), static_cast<int>(head_dim), static_cast<int>(half), table);
  }
  VLM_CUDA_LAUNCHED(op);
}

}  // namespace

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling) {
  if (n_tokens <= 0 || n_heads <= 0) return;
  const int64_t half = rotary_dim / 2;
  if (half <= 0) return;
  launch_rope("rope", x, n_tokens, n_heads, head_dim, half, inv_freq, positions, 1, nullptr, attention_scaling);
}

void mrope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
           const int64_t* positions3, const int* stream_of, float attention_scaling) {
  if (n_tokens <= 0 || n_heads <= 0) return;
  const int64_t half = head_dim / 2;
  if (half <= 0) return;
  for (int64_t i = 0; i < half; ++i)
    if (stream_of[i] < 0 || stream_of[i] > 2)
      detail::fail(ErrorKind::kInvalidArgument, "[cuda mrope] stream_of[" + std::to_string(i) + "] is " +
                                                    std::to_string(stream_of[i]) + ", expected 0, 1 or 2");
  launch_rope("mrope", x, n_tokens, n_heads, head_dim, half, inv_freq, positions3, 3, stream_of, attention_scaling);
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {

void rope_qk(float* q, int64_t n_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
             int64_t rotary_dim, const float* inv_freq, const int64_t* positions, const int* stream_of,
             float attention_scaling) {
  using namespace kernels;
  if (n_tokens <= 0 || n_heads <= 0 || n_kv_heads <= 0) return;
  const int64_t half = rotary_dim / 2;
  if (half <= 0) return;
  if (stream_of != nullptr)
    for (int64_t i = 0; i < half; ++i)
      if (stream_of[i] < 0 || stream_of[i] > 2)
        detail::fail(ErrorKind::kInvalidArgument, "[cuda mrope] stream_of[" + std::to_string(i) + "] is " +
                                                      std::to_string(stream_of[i]) + ", expected 0, 1 or 2");
  const char* op = stream_of != nullptr ? "mrope" : "rope";
  const int n_streams = stream_of != nullptr ? 3 : 1;
  if (small_rope(n_tokens, half)) {  // decode: q and k in one launch
    launch_rope(op, q, n_tokens, n_heads, head_dim, half, inv_freq, positions, n_streams, stream_of,
                attention_scaling, k, n_kv_heads);
    return;
  }
  launch_rope(op, q, n_tokens, n_heads, head_dim, half, inv_freq, positions, n_streams, stream_of, attention_scaling);
  launch_rope(op, k, n_tokens, n_kv_heads, head_dim, half, inv_freq, positions, n_streams, stream_of,
              attention_scaling);
}

}  // namespace vlm::ops::cuda
