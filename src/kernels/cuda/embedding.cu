// Embedding gather on the GPU: out[i, :] = row ids[i] of a dense (f32/f16/bf16) or MLX-quantized
// table, as f32, times `scale`. One block per id; the ids are a host array (ops.h "devices"), checked
// against the table on the host and staged to the device. Quantized rows are dequantized exactly as
// core/quant.h's dequantize_row (scale * q + bias, rounded separately as on the CPU).
#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// rows: the table's row count when the ids come from device memory (unchecked on the host: a row
// outside gives zeros), else 0 (checked).
__global__ void embedding_dense_kernel(const void* table, int kind, int64_t d, const int32_t* ids, float scale,
                                       float* out, int64_t rows) {
  const int64_t r = ids[blockIdx.x];
  float* o = out + blockIdx.x * d;
  if (rows > 0 && (r < 0 || r >= rows)) {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) o[c] = 0.0f;
    return;
  }
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x)
    o[c] = __fmul_rn(detail::load_float(table, kind, r * d + c), scale);
}

__global__ void embedding_quant_kernel(detail::QuantView q, int64_t d, const int32_t* ids, float scale, float* out,
                                       int64_t rows) {
  const int64_t r = ids[blockIdx.x];
  float* o = out + blockIdx.x * d;
  if (rows > 0 && (r < 0 || r >= rows)) {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) o[c] = 0.0f;
    return;
  }
  const uint32_t* row = q.packed + r * q.words_per_row;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const int64_t g = r * q.groups + c / q.group_size;
    const float s = detail::load_float(q.scales, q.scale_kind, g);
    const float b = detail::load_float(q.biases, q.bias_kind, g);
    const float w = __fadd_rn(__fmul_rn(s, static_cast<float>(detail::unpack_bits(row, c, q.bits))), b);
    o[c] = __fmul_rn(w, scale);
  }
}

}  // namespace

void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out) {
  if (n <= 0) return;
  if (n > 0x7fffffff) detail::fail(ErrorKind::kInvalidArgument, "[cuda embedding] too many ids");
  const int64_t rows = table.rows(), d = table.cols();
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= rows)
      detail::fail(ErrorKind::kInvalidArgument, "[cuda embedding] token id " + std::to_string(ids[i]) +
                                                    " at index " + std::to_string(i) + " is outside the table of " +
                                                    std::to_string(rows) + " rows");
  if (d <= 0) return;
  detail::Staging st("embedding");
  const size_t h_ids = st.add(ids, static_cast<size_t>(n));
  if (table.quantized) {
    const detail::QuantView q = detail::quant_view(table, "embedding");
    st.upload();
    embedding_quant_kernel<<<static_cast<unsigned>(n), kThreads, 0, detail::stream("embedding")>>>(
        q, d, st.device<int32_t>(h_ids), scale, out, 0);
  } else {
    const void* t = detail::device_ptr(table.dense, "embedding", "table");
    const int kind = detail::float_kind(table.dense, "embedding", "table");
    st.upload();
    embedding_dense_kernel<<<static_cast<unsigned>(n), kThreads, 0, detail::stream("embedding")>>>(
        t, kind, d, st.device<int32_t>(h_ids), scale, out, 0);
  }
  VLM_CUDA_LAUNCHED("embedding");
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {
void embedding_device_ids(const Weight& table, const int32_t* device_ids, int64_t n, float scale, float* out) {
  using namespace kernels;
  if (n <= 0) return;
  if (n > 0x7fffffff) detail::fail(ErrorKind::kInvalidArgument, "[cuda embedding_device_ids] too many ids");
  const int64_t rows = table.rows(), d = table.cols();
  if (d <= 0) return;
  cudaStream_t st = detail::stream("embedding_device_ids");
  if (table.quantized) {
    const detail::QuantView q = detail::quant_view(table, "embedding_device_ids");
    embedding_quant_kernel<<<static_cast<unsigned>(n), kThreads, 0, st>>>(q, d, device_ids, scale, out, rows);
  } else {
    const void* t = detail::device_ptr(table.dense, "embedding_device_ids", "table");
    const int kind = detail::float_kind(table.dense, "embedding_device_ids", "table");
    embedding_dense_kernel<<<static_cast<unsigned>(n), kThreads, 0, st>>>(t, kind, d, device_ids, scale, out, rows);
  }
  VLM_CUDA_LAUNCHED("embedding_device_ids");
}
}  // namespace vlm::ops::cuda
