// RoPE and M-RoPE on the GPU, HF rotate_half convention (see ops.h). One thread per (token,
// frequency) rotates that frequency's pair in every head. Angles are the reference's f32 product
// position * inv_freq; cos/sin are evaluated in double and rounded once, exactly like the CPU
// reference, so both paths agree to the last bit of the angle. Positions, inv_freq and the M-RoPE
// stream table are host arrays (ops.h "devices"), staged to the device per call.
#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// positions: [n_streams, n_tokens]; stream_of: [half] or null (one stream, row 0).
__global__ void rope_kernel(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t half,
                            const float* inv_freq, const int64_t* positions, const int* stream_of, float scaling) {
  const int64_t total = n_tokens * half;
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < total; w += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = w / half, i = w % half;
    const int64_t stream = stream_of != nullptr ? stream_of[i] : 0;
    const float angle = static_cast<float>(positions[stream * n_tokens + t]) * inv_freq[i];
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    const float cs = static_cast<float>(c) * scaling, sn = static_cast<float>(s) * scaling;
    float* xt = x + t * n_heads * head_dim;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = xt + h * head_dim;
      const float x1 = xh[i], x2 = xh[i + half];
      xh[i] = __fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn));
      xh[i + half] = __fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn));
    }
  }
}

}  // namespace

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling) {
  if (n_tokens <= 0 || n_heads <= 0) return;
  const int64_t half = rotary_dim / 2;
  if (half <= 0) return;
  detail::Staging st("rope");
  size_t h_inv = st.add(inv_freq, static_cast<size_t>(half));
  size_t h_pos = st.add(positions, static_cast<size_t>(n_tokens));
  st.upload();
  const int64_t total = n_tokens * half;
  rope_kernel<<<detail::elementwise_blocks(total, kThreads), kThreads, 0, detail::stream("rope")>>>(
      x, n_tokens, n_heads, head_dim, half, st.device<float>(h_inv), st.device<int64_t>(h_pos), nullptr,
      attention_scaling);
  VLM_CUDA_LAUNCHED("rope");
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
  detail::Staging st("mrope");
  size_t h_inv = st.add(inv_freq, static_cast<size_t>(half));
  size_t h_pos = st.add(positions3, static_cast<size_t>(3 * n_tokens));
  size_t h_str = st.add(stream_of, static_cast<size_t>(half));
  st.upload();
  const int64_t total = n_tokens * half;
  rope_kernel<<<detail::elementwise_blocks(total, kThreads), kThreads, 0, detail::stream("mrope")>>>(
      x, n_tokens, n_heads, head_dim, half, st.device<float>(h_inv), st.device<int64_t>(h_pos),
      st.device<int>(h_str), attention_scaling);
  VLM_CUDA_LAUNCHED("mrope");
}

}  // namespace vlm::ops::cuda::kernels
