// linear on the GPU: the dispatcher, the dense-weight prefill path and the bias epilogue.
//
//   n < 8 (decode)  every format the GEMV takes (16-byte aligned x and weights, cols a multiple of the
//                   16-byte vector or of 32 for quantized codes) -> linear_gemv.cu, bias added on store.
//   n >= 8 (prefill) f32 -> cuBLASLt SGEMM with CUBLAS_COMPUTE_32F_PEDANTIC (no TF32);
//                   f16/bf16 -> x rounded to the weight's dtype in scratch, cuBLASLt with f32 accumulation
//                   and f32 output (x loses its low mantissa bits: NMSE ~1e-6 for bf16, ~1e-8 for f16);
//                   quantized -> linear_quant.cu: row chunks of W dequantized (the reference's f32
//                   s * q + b) and rounded to bf16 into scratch, x rounded to bf16, cuBLASLt as above.
//   Whatever a fast path refuses (misaligned views, cuBLASLt finding no algorithm) runs on the tiled
//   kernel, which takes any weight and any shape. The bias is then added by one more small kernel.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/linear_gemv.cuh"

#include <map>
#include <mutex>
#include <tuple>

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int64_t kGemvMaxN = 8;  // n below this runs as GEMV

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

__global__ void add_bias_kernel(float* y, int64_t n, int64_t out, const void* b, int kind) {
  const int64_t total = n * out;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = __fadd_rn(y[i], detail::load_float(b, kind, i % out));
}

template <typename T>
__global__ void convert_kernel(const float* x, int64_t n, T* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      out[i] = __float2bfloat16_rn(x[i]);
    else
      out[i] = __float2half_rn(x[i]);
  }
}

// RAII for the cuBLASLt descriptors of one call.
struct LtCall {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtCall() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// cuBLASLt's chosen algorithm per problem (or none: first = false).
using AlgoKey = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, uint32_t, uint32_t, uint32_t, uint32_t>;
std::map<AlgoKey, std::pair<bool, cublasLtMatmulAlgo_t>>& algo_cache() {
  static std::map<AlgoKey, std::pair<bool, cublasLtMatmulAlgo_t>> cache;
  return cache;
}
std::mutex& algo_cache_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

// y[n, out] (f32) = x[n, in] · Wᵀ through cuBLASLt, in column-major terms D[out, n] = op(A)[out, in] ·
// B[in, n] with A = W read as [in, out] (ld in) and transposed, B = x as [in, n] (ld in). Returns false
// (nothing launched) when cuBLASLt has no algorithm for this compute type and these alignments.
// y's rows are ldy apart (ldy >= out: a column block of a wider output).
bool lt_matmul(const void* w, cudaDataType_t ab_type, const void* xb, int64_t n, int64_t in, int64_t out, float* y,
               int64_t ldy, cublasComputeType_t compute) {
  const char* op = "linear (cuBLASLt)";
  cublasLtHandle_t h = detail::lt_handle(op);
  LtCall c;
  // A compute type this cuBLASLt does not take is "no algorithm", not an error: the caller falls back.
  if (cublasLtMatmulDescCreate(&c.desc, compute, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) {
    c.desc = nullptr;
    return false;
  }
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  VLM_CUBLAS(cublasLtMatmulDescSetAttribute(c.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), op);
  VLM_CUBLAS(cublasLtMatmulDescSetAttribute(c.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), op);
  VLM_CUBLAS(cublasLtMatrixLayoutCreate(&c.a, ab_type, in, out, in), op);
  VLM_CUBLAS(cublasLtMatrixLayoutCreate(&c.b, ab_type, in, n, in), op);
  VLM_CUBLAS(cublasLtMatrixLayoutCreate(&c.c, CUDA_R_32F, out, n, ldy), op);
  VLM_CUBLAS(cublasLtMatmulPreferenceCreate(&c.pref), op);
  const size_t ws = detail::lt_workspace_bytes();
  VLM_CUBLAS(
      cublasLtMatmulPreferenceSetAttribute(c.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), op);
  // cuBLASLt assumes 256-byte aligned buffers unless told otherwise; views may be less aligned.
  const void* bufs[4] = {w, xb, y, y};
  const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  uint32_t align[4];
  for (int i = 0; i < 4; ++i) {
    align[i] = 256;
    while (align[i] > 1 && (reinterpret_cast<uintptr_t>(bufs[i]) % align[i]) != 0) align[i] >>= 1;
    VLM_CUBLAS(cublasLtMatmulPreferenceSetAttribute(c.pref, align_attr[i], &align[i], sizeof(align[i])), op);
  }
  // The heuristic query costs far more host time than the descriptors: its answer is kept per problem
  // (types, sizes, alignments), including "no algorithm".
  const AlgoKey key{static_cast<int>(ab_type), static_cast<int>(compute), n, in, out, ldy,
                    align[0], align[1], align[2], align[3]};
  cublasLtMatmulHeuristicResult_t result{};
  {
    std::lock_guard<std::mutex> lock(algo_cache_mutex());
    auto it = algo_cache().find(key);
    if (it != algo_cache().end()) {
      if (!it->second.first) return false;
      result.algo = it->second.second;
    } else {
      int found = 0;
      cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, c.desc, c.a, c.b, c.c, c.c, c.pref, 1, &result, &found);
      const bool ok = s == CUBLAS_STATUS_SUCCESS && found > 0;
      algo_cache().emplace(key, std::make_pair(ok, result.algo));
      if (!ok) return false;
    }
  }
  const float alpha = 1.0f, beta = 0.0f;
  VLM_CUBLAS(cublasLtMatmul(h, c.desc, &alpha, w, c.a, xb, c.b, &beta, y, c.c, y, c.c, &result.algo,
                            detail::lt_workspace(op), ws, detail::stream(op)),
             op);
  return true;
}

bool lt_matmul_f32(const void* w, const float* x, int64_t n, int64_t in, int64_t out, float* y, int64_t ldy) {
  return lt_matmul(w, CUDA_R_32F, x, n, in, out, y, ldy, CUBLAS_COMPUTE_32F_PEDANTIC) ||
         lt_matmul(w, CUDA_R_32F, x, n, in, out, y, ldy, CUBLAS_COMPUTE_32F);
}

bool linear_dense_cublaslt(const float* x, int64_t n, const Weight& w, float* y) {
  const int64_t in = w.cols(), out = w.rows();
  const void* wp = detail::device_ptr(w.dense, "linear", "weight");
  const int kind = detail::float_kind(w.dense, "linear", "weight");
  if (!aligned16(wp) || !aligned16(x) || !aligned16(y) || in % 8 != 0 || out % 4 != 0) return false;
  if (kind == detail::kF32)
    return lt_matmul_f32(wp, x, n, in, out, y, out);
  // x rounded to the weight's 16-bit type (round to nearest even) in scratch.
  void* xb = detail::scratch(static_cast<size_t>(n * in) * 2, "linear");
  cudaStream_t st = detail::stream("linear");
  if (kind == detail::kBF16)
    convert_kernel<<<detail::elementwise_blocks(n * in, 256), 256, 0, st>>>(x, n * in,
                                                                            static_cast<__nv_bfloat16*>(xb));
  else
    convert_kernel<<<detail::elementwise_blocks(n * in, 256), 256, 0, st>>>(x, n * in, static_cast<__half*>(xb));
  VLM_CUDA_LAUNCHED("linear (convert x)");
  return lt_matmul(wp, kind == detail::kBF16 ? CUDA_R_16BF : CUDA_R_16F, xb, n, in, out, y, out, CUBLAS_COMPUTE_32F);
}

void add_bias(float* y, int64_t n, int64_t out, const Tensor& bias) {
  const void* b = detail::device_ptr(bias, "linear", "bias");
  const int kind = detail::float_kind(bias, "linear", "bias");
  if (bias.numel() != out)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] bias has " + std::to_string(bias.numel()) +
                                                  " values, expected " + std::to_string(out));
  add_bias_kernel<<<detail::elementwise_blocks(n * out, 256), 256, 0, detail::stream("linear")>>>(y, n, out, b, kind);
  VLM_CUDA_LAUNCHED("linear (bias)");
}

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y) {
  if (n <= 0 || w.rows() <= 0) return;
  if (!w.quantized && (!w.dense.defined() || w.dense.ndim() != 2))
    detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] weight is " +
                                                  (w.dense.defined() ? w.dense.describe() : std::string("undefined")) +
                                                  ", expected a 2-D f32/f16/bf16 matrix");
  if (w.cols() <= 0) {  // empty dot products: y = bias (or 0)
    VLM_CUDA(cudaMemsetAsync(y, 0, static_cast<size_t>(n * w.rows()) * sizeof(float), detail::stream("linear")),
             "linear");
  } else if (n < kGemvMaxN && gemv_supported(x, w)) {
    const GemvTarget t{&w, &bias, y};  // bias added on store
    gemv_launch(x, n, &t, 1);
    return;
  } else {
    bool done = false;  // a GEMV that gemv_supported() refused goes to the tiled kernel
    if (n >= kGemvMaxN) done = w.quantized ? linear_quant_gemm(x, n, w, y) : linear_dense_cublaslt(x, n, w, y);
    if (!done) linear_tiled(x, n, w, y);
  }
  if (bias.defined()) add_bias(y, n, w.rows(), bias);
}

}  // namespace vlm::ops::cuda::kernels
