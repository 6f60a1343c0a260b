// RoPE and M-RoPE on the GPU, HF rotate_half convention (see ops.h). One thread per (token, head,
// frequency) rotates that pair. Angles are the reference's f32 product
// position * inv_freq; cos/sin are evaluated in double and rounded once, exactly like the CPU
// reference, so both paths agree to the last bit of the angle. Positions, inv_freq and the M-RoPE
// stream table are host arrays (ops.h "devices"): passed by value for decode-sized calls, staged to the
// device otherwise.
#include "kernels/cuda/common.cuh"

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

// One thread per (token, head, frequency) rotates that pair; threads of one token and frequency
// recompute the same angle (cheap next to a dependent load/store chain over the heads per thread).
// positions: [n_streams, n_tokens]; stream_of: [half] or null (one stream, row 0). kSmall: the three
// arrays come from `small` instead of the pointers.
template <bool kSmall>
__global__ void rope_kernel(float* __restrict__ x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t half,
                            const float* inv_freq, const int64_t* positions, const int* stream_of, bool has_streams,
                            float scaling, const SmallArgs small) {
  detail::chain_wait();
  detail::chain_release();
  const int64_t total = n_tokens * n_heads * half;
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < total; w += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = w % half, th = w / half;
    const int64_t t = th / n_heads, h = th % n_heads;
    int64_t stream = 0;
    if (has_streams) stream = kSmall ? small.stream_of[i] : stream_of[i];
    const int64_t pos = kSmall ? small.positions[stream * n_tokens + t] : positions[stream * n_tokens + t];
    const float angle = static_cast<float>(pos) * (kSmall ? small.inv_freq[i] : inv_freq[i]);
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    const float cs = static_cast<float>(c) * scaling, sn = static_cast<float>(s) * scaling;
    float* xh = x + (t * n_heads + h) * head_dim;
    const float x1 = xh[i], x2 = xh[i + half];
    xh[i] = __fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn));
    xh[i + half] = __fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn));
  }
}

// Shared by rope and mrope: positions has n_streams rows of n_tokens; stream_of (half entries) is null
// for plain RoPE.
void launch_rope(const char* op, float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t half,
                 const float* inv_freq, const int64_t* positions, int n_streams, const int* stream_of,
                 float scaling) {
  const int64_t total = n_tokens * n_heads * half;
  const unsigned blocks = detail::elementwise_blocks(total, kThreads);
  cudaStream_t cs = detail::stream(op);
  const bool has_streams = stream_of != nullptr;
  if (n_tokens <= kSmallTokens && half <= kSmallHalf) {
    SmallArgs a{};
    std::memcpy(a.inv_freq, inv_freq, sizeof(float) * static_cast<size_t>(half));
    std::memcpy(a.positions, positions, sizeof(int64_t) * static_cast<size_t>(n_streams * n_tokens));
    if (has_streams) std::memcpy(a.stream_of, stream_of, sizeof(int) * static_cast<size_t>(half));
    // Chained (common.cuh): decode runs two per layer, right after the q/k/v GEMV.
    detail::launch_chained(op, rope_kernel<true>, dim3(blocks), dim3(kThreads), 0, cs, x, n_tokens, n_heads, head_dim,
                           half, static_cast<const float*>(nullptr), static_cast<const int64_t*>(nullptr),
                           static_cast<const int*>(nullptr), has_streams, scaling, a);
  } else {
    detail::Staging st(op);
    const size_t h_inv = st.add(inv_freq, static_cast<size_t>(half));
    const size_t h_pos = st.add(positions, static_cast<size_t>(n_streams * n_tokens));
    const size_t h_str = has_streams ? st.add(stream_of, static_cast<size_t>(half)) : size_t{0};
    st.upload();
    rope_kernel<false><<<blocks, kThreads, 0, cs>>>(x, n_tokens, n_heads, head_dim, half, st.device<float>(h_inv),
                                                    st.device<int64_t>(h_pos),
                                                    has_streams ? st.device<int>(h_str) : nullptr, has_streams,
                                                    scaling, SmallArgs{});
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
