// linear on the GPU: the dispatcher, the dense-weight prefill path and the bias epilogue.
//
//   n < 8 (decode)  every format the GEMV takes (16-byte aligned x and weights, cols a multiple of the
//                   16-byte vector or of 32 for quantized codes) -> linear_gemv.cu, bias added on store.
//   n >= 8 (prefill) f32 -> cuBLASLt SGEMM with CUBLAS_COMPUTE_32F_PEDANTIC (no TF32);
//                   f16/bf16 -> x rounded to the weight's dtype in scratch, cuBLASLt with f32 accumulation
//                   and f32 output (x loses its low mantissa bits: NMSE ~1e-6 for bf16, ~1e-8 for f16);
//                   quantized -> linear_quant.cu: row chunks of W dequantized (the reference's f32
//                   s * q + b) and rounded to bf16 into scratch, x rounded to bf16, cuBLASLt as above.
//   cuBLASLt gets the alignment that the pointers and leading dimensions allow (an `in` that is not a
//   multiple of 8 costs it its 16-byte-aligned kernels, not the tensor cores). Its algorithm is chosen once
//   per problem: the heuristic's first answer, or with VLMCHECK_CUDA_GEMM_TUNE=1 (opt-in) for GEMMs of
//   >= 1 GFLOP the fastest of its first 8 answers, timed on the first call (tune_algo; `--verbose` logs it).
//   Whatever a fast path refuses (misaligned views, cuBLASLt finding no algorithm) runs on the tiled
//   kernel, which takes any weight and any shape.
// Bias: on the dense cuBLASLt path it is cuBLASLt's bias epilogue (D = acc + bias in f32, the same single
// rounding as the reference's separate f32 add; a bf16/f16 bias is widened to f32 in scratch first), which
// saves a read and a write of y (the Qwen2.5-VL tower's biased linears over 62k patches: ~7 GB per block).
// Elsewhere, or when cuBLASLt has no epilogue algorithm, one more small kernel adds it.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/linear_dense.cuh"
#include "kernels/cuda/linear_gemv.cuh"
#include "kernels/ops.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/log.h"

namespace vlm::ops::cuda::kernels {
namespace {

constexpr int64_t kGemvMaxN = 8;  // n below this runs as GEMV

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// y[t, c] += b[c]: rows over blockIdx.y, columns over x (no per-element division).
__global__ void add_bias_kernel(float* y, int64_t n, int64_t out, const void* b, int kind) {
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
    float* row = y + t * out;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < out; c += int64_t{gridDim.x} * blockDim.x)
      row[c] = __fadd_rn(row[c], detail::load_float(b, kind, c));
  }
}

__global__ void bias_to_f32_kernel(const void* b, int kind, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = detail::load_float(b, kind, i);
}

// x rounded to nearest even into T (bf16 / f16), four values per step (x 16-byte aligned, out 8-byte), the last
// n % 4 one by one.
template <typename T>
__global__ void convert_kernel(const float* __restrict__ x, int64_t n, T* __restrict__ out) {
  const int64_t n4 = n / 4;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  for (int64_t i = 4 * n4 + first; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      out[i] = __float2bfloat16_rn(x[i]);
    else
      out[i] = __float2half_rn(x[i]);
  }
  for (int64_t i = first; i < n4; i += int64_t{gridDim.x} * blockDim.x) {
    const float4 v = reinterpret_cast<const float4*>(x)[i];
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      reinterpret_cast<__nv_bfloat162*>(out)[2 * i] = __floats2bfloat162_rn(v.x, v.y);
      reinterpret_cast<__nv_bfloat162*>(out)[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
    } else {
      reinterpret_cast<__half2*>(out)[2 * i] = __floats2half2_rn(v.x, v.y);
      reinterpret_cast<__half2*>(out)[2 * i + 1] = __floats2half2_rn(v.z, v.w);
    }
  }
}

// x [n, in] f32 rounded to the 16-bit `kind` into xb.
void convert_x(const float* x, int64_t n, int64_t in, int kind, void* xb, cudaStream_t st) {
  if (kind == detail::kBF16)
    convert_kernel<<<detail::elementwise_blocks(n * in / 4 + 1, 256), 256, 0, st>>>(x, n * in,
                                                                                    static_cast<__nv_bfloat16*>(xb));
  else
    convert_kernel<<<detail::elementwise_blocks(n * in / 4 + 1, 256), 256, 0, st>>>(x, n * in,
                                                                                    static_cast<__half*>(xb));
  VLM_CUDA_LAUNCHED("linear (convert x)");
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

// cuBLASLt's chosen algorithm per problem (or none: first = false); the last fields: bias epilogue, beta = 1.
using AlgoKey =
    std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, uint32_t, uint32_t, uint32_t, uint32_t, bool, bool>;
std::map<AlgoKey, std::pair<bool, cublasLtMatmulAlgo_t>>& algo_cache() {
  static std::map<AlgoKey, std::pair<bool, cublasLtMatmulAlgo_t>> cache;
  return cache;
}
std::mutex& algo_cache_mutex() {
  static std::mutex m;
  return m;
}

// Per-shape algorithm choice (opt-in: VLMCHECK_CUDA_GEMM_TUNE=1). cuBLASLt's heuristic answer for the prefill
// shapes is not always its fastest algorithm: its first kTuneCandidates answers are timed once (one warm-up and
// kTuneReps launches each, CUDA events, on the call's own operands) and the fastest kept. Only GEMMs of at least
// kTuneMinFlops (a 2048-token chunk through the 3B's 256 x 2048 k/v weights has 2.1e9). Never while the stream
// is being captured into a CUDA graph (events cannot be waited on there): the heuristic's first answer then.
// H200, vlmcheck bench --synthetic qwen2.5-vl-3b --prompt-tokens 2048, same call: the timed choice was up to 10%
// faster per GEMM (gate/up 2048 -> 11008: 136.4 -> 123.1 us; o 27.7 -> 26.9; down 117.7 -> 117.3; k/v: the
// first answer) and the prefill 2-3% faster (47.1/49.8k -> 48.4/50.9k tok/s, alternating runs), but the timing
// costs ~55 ms on the first prefill of each token count (~32 extra launches and a host wait per shape), which a
// one-shot TTFT (a CLI run, the photo bench's single repetition over the vision tower's shapes) pays in full.
// Hence off by default.
constexpr int kTuneCandidates = 8;
constexpr int kTuneReps = 3;
constexpr double kTuneMinFlops = 1e9;

bool gemm_tuning_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_GEMM_TUNE");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

// Index of the fastest of results[0, found) (0 when timing is not possible here). A candidate whose launch
// fails is skipped; launch(algo) enqueues one GEMM on st and returns its status.
template <typename Launch>
int tune_algo(const cublasLtMatmulHeuristicResult_t* results, int found, Launch&& launch, cudaStream_t st,
              const char* op, const std::string& label) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(st, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return 0;
  }
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (stop) cudaEventDestroy(stop);
      if (start) cudaEventDestroy(start);
    }
  } ev;
  VLM_CUDA(cudaEventCreate(&ev.start), op);
  VLM_CUDA(cudaEventCreate(&ev.stop), op);
  cudaEvent_t start = ev.start, stop = ev.stop;
  int best = 0;
  float best_ms = -1.0f, first_ms = -1.0f;
  for (int i = 0; i < found; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS || launch(results[i].algo) != CUBLAS_STATUS_SUCCESS) continue;
    bool ok = cudaEventRecord(start, st) == cudaSuccess;
    for (int r = 0; r < kTuneReps && ok; ++r) ok = launch(results[i].algo) == CUBLAS_STATUS_SUCCESS;
    ok = ok && cudaEventRecord(stop, st) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess;
    float ms = 0.0f;
    if (!ok || cudaEventElapsedTime(&ms, start, stop) != cudaSuccess) continue;
    if (i == 0) first_ms = ms;
    if (best_ms < 0.0f || ms < best_ms) {
      best_ms = ms;
      best = i;
    }
  }
  VLM_CUDA(cudaGetLastError(), op);  // a failed launch left no sticky error behind
  VLM_LOG_DEBUG("{}: {}: heuristic's first of {} algorithms {:.1f} us, fastest (#{}) {:.1f} us", op, label,
                found, 1e3f * first_ms / kTuneReps, best, 1e3f * best_ms / kTuneReps);
  return best;
}

}  // namespace

// y[n, out] (f32) = x[n, in] · Wᵀ (+ bias[out] f32, when given) through cuBLASLt, in column-major terms
// D[out, n] = op(A)[out, in] · B[in, n] with A = W read as [in, out] (ld in) and transposed, B = x as
// [in, n] (ld in). Returns false (nothing launched) when cuBLASLt has no algorithm for this compute type,
// these alignments and this epilogue. y's rows are ldy apart (ldy >= out: a column block of a wider output).
// accumulate: y += (beta = 1, C = D = y) instead of y = (never timed by tune_algo: its runs would add up).
bool lt_matmul_impl(const void* w, cudaDataType_t ab_type, const void* xb, int64_t n, int64_t in, int64_t out,
                    float* y, int64_t ldy, cublasComputeType_t compute, const float* bias, bool accumulate) {
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
  if (bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;  // bias[r] added to row r of D = column r of y
    const cudaDataType_t bias_type = CUDA_R_32F;
    VLM_CUBLAS(cublasLtMatmulDescSetAttribute(c.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), op);
    VLM_CUBLAS(cublasLtMatmulDescSetAttribute(c.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), op);
    VLM_CUBLAS(
        cublasLtMatmulDescSetAttribute(c.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)),
        op);
  }
  VLM_CUBLAS(cublasLtMatrixLayoutCreate(&c.a, ab_type, in, out, in), op);
  VLM_CUBLAS(cublasLtMatrixLayoutCreate(&c.b, ab_type, in, n, in), op);
  VLM_CUBLAS(cublasLtMatrixLayoutCreate(&c.c, CUDA_R_32F, out, n, ldy), op);
  VLM_CUBLAS(cublasLtMatmulPreferenceCreate(&c.pref), op);
  const size_t ws = detail::lt_workspace_bytes();
  VLM_CUBLAS(
      cublasLtMatmulPreferenceSetAttribute(c.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), op);
  // cuBLASLt assumes 256-byte aligned buffers unless told otherwise; views may be less aligned.
  // Every column of a matrix starts at base + j * ld elements, so a leading dimension that is not a
  // multiple of 16 bytes (the Qwen2.5-VL tower's down_proj: in = 3420 bf16) lowers the alignment too.
  const void* bufs[4] = {w, xb, y, y};
  const size_t ab_size = ab_type == CUDA_R_32F ? 4 : 2;
  const size_t ld_bytes[4] = {static_cast<size_t>(in) * ab_size, static_cast<size_t>(in) * ab_size,
                              static_cast<size_t>(ldy) * 4, static_cast<size_t>(ldy) * 4};
  const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  uint32_t align[4];
  for (int i = 0; i < 4; ++i) {
    align[i] = 256;
    while (align[i] > 1 &&
           ((reinterpret_cast<uintptr_t>(bufs[i]) % align[i]) != 0 || ld_bytes[i] % align[i] != 0))
      align[i] >>= 1;
    VLM_CUBLAS(cublasLtMatmulPreferenceSetAttribute(c.pref, align_attr[i], &align[i], sizeof(align[i])), op);
  }
  // The algorithm is chosen once per problem (types, sizes, alignments, epilogue) and kept, including "no
  // algorithm": the heuristic's first answer, or (opt-in) for a large GEMM the fastest of its first
  // kTuneCandidates answers, timed on this call's own operands (tune_algo). y is overwritten (beta = 0), so the
  // timing runs leave nothing behind; the real launch follows.
  const AlgoKey key{static_cast<int>(ab_type), static_cast<int>(compute), n, in, out, ldy,
                    align[0], align[1], align[2], align[3], bias != nullptr, accumulate};
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  cudaStream_t st = detail::stream(op);
  void* wsp = detail::lt_workspace(op);
  cublasLtMatmulAlgo_t algo{};
  {
    std::lock_guard<std::mutex> lock(algo_cache_mutex());
    auto it = algo_cache().find(key);
    if (it != algo_cache().end()) {
      if (!it->second.first) return false;
      algo = it->second.second;
    } else {
      cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
      const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(in) * static_cast<double>(out);
      const int want = flops >= kTuneMinFlops && gemm_tuning_enabled() && !accumulate ? kTuneCandidates : 1;
      int found = 0;
      cublasStatus_t s =
          cublasLtMatmulAlgoGetHeuristic(h, c.desc, c.a, c.b, c.c, c.c, c.pref, want, results, &found);
      const bool ok = s == CUBLAS_STATUS_SUCCESS && found > 0;
      if (ok) {
        auto launch = [&](const cublasLtMatmulAlgo_t& a) {
          return cublasLtMatmul(h, c.desc, &alpha, w, c.a, xb, c.b, &beta, y, c.c, y, c.c, &a, wsp, ws, st);
        };
        const std::string label = "n " + std::to_string(n) + " in " + std::to_string(in) + " out " +
                                  std::to_string(out) + (bias != nullptr ? " +bias" : "");
        algo = results[found > 1 ? tune_algo(results, found, launch, st, op, label) : 0].algo;
      }
      algo_cache().emplace(key, std::make_pair(ok, algo));
      if (!ok) return false;
    }
  }
  VLM_CUBLAS(cublasLtMatmul(h, c.desc, &alpha, w, c.a, xb, c.b, &beta, y, c.c, y, c.c, &algo, wsp, ws, st), op);
  return true;
}

bool lt_matmul_bias(const void* w, cudaDataType_t ab_type, const void* xb, int64_t n, int64_t in, int64_t out,
                    float* y, int64_t ldy, cublasComputeType_t compute, const float* bias) {
  return lt_matmul_impl(w, ab_type, xb, n, in, out, y, ldy, compute, bias, false);
}

namespace {

bool lt_matmul_f32_bias(const void* w, const float* x, int64_t n, int64_t in, int64_t out, float* y, int64_t ldy,
                        const float* bias) {
  return lt_matmul_bias(w, CUDA_R_32F, x, n, in, out, y, ldy, CUBLAS_COMPUTE_32F_PEDANTIC, bias) ||
         lt_matmul_bias(w, CUDA_R_32F, x, n, in, out, y, ldy, CUBLAS_COMPUTE_32F, bias);
}

// The dense prefill GEMM. `bias` (undefined: none) goes into cuBLASLt's epilogue where an algorithm takes
// it; *bias_done says whether it did (else the caller adds it). False: nothing launched, use another path.
bool dense_cublaslt(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y, bool* bias_done) {
  *bias_done = false;
  const int64_t in = w.cols(), out = w.rows();
  const void* wp = detail::device_ptr(w.dense, "linear", "weight");
  const int kind = detail::float_kind(w.dense, "linear", "weight");
  // Any `in`: cuBLASLt is told the alignment its leading dimension leaves (lt_matmul_bias); an `in` that is
  // not a multiple of 8 used to go to the tiled CUDA-core kernel (~40 ms per Qwen2.5-VL down_proj over 62k
  // patches).
  if (!aligned16(wp) || !aligned16(x) || !aligned16(y) || out % 4 != 0) return false;
  // Scratch: [x in 16 bits (bf16/f16 weights)][bias in f32 (a bias that is not already aligned f32)],
  // each part 256-byte aligned.
  const size_t x_bytes = kind == detail::kF32 ? 0 : (static_cast<size_t>(n * in) * 2 + 255) / 256 * 256;
  const void* bp = bias.defined() ? detail::device_ptr(bias, "linear", "bias") : nullptr;
  const int bkind = bias.defined() ? detail::float_kind(bias, "linear", "bias") : detail::kF32;
  const bool bias_direct = bp != nullptr && bkind == detail::kF32 && aligned16(bp);
  const size_t b_bytes = bp != nullptr && !bias_direct ? static_cast<size_t>(out) * sizeof(float) : 0;
  auto* base = static_cast<unsigned char*>(
      x_bytes + b_bytes > 0 ? detail::scratch(x_bytes + b_bytes, "linear") : nullptr);
  cudaStream_t st = detail::stream("linear");
  const float* bias_f32 = bias_direct ? static_cast<const float*>(bp) : nullptr;
  if (b_bytes > 0) {
    auto* bf = reinterpret_cast<float*>(base + x_bytes);
    bias_to_f32_kernel<<<detail::elementwise_blocks(out, 256), 256, 0, st>>>(bp, bkind, out, bf);
    VLM_CUDA_LAUNCHED("linear (bias)");
    bias_f32 = bf;
  }
  if (kind == detail::kF32) {
    if (bias_f32 != nullptr && lt_matmul_f32_bias(wp, x, n, in, out, y, out, bias_f32)) {
      *bias_done = true;
      return true;
    }
    return lt_matmul_f32_bias(wp, x, n, in, out, y, out, nullptr);
  }
  // x rounded to the weight's 16-bit type (round to nearest even) in scratch.
  void* xb = base;
  convert_x(x, n, in, kind, xb, st);
  const cudaDataType_t ab = kind == detail::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
  if (bias_f32 != nullptr && lt_matmul_bias(wp, ab, xb, n, in, out, y, out, CUBLAS_COMPUTE_32F, bias_f32)) {
    *bias_done = true;
    return true;
  }
  return lt_matmul_bias(wp, ab, xb, n, in, out, y, out, CUBLAS_COMPUTE_32F, nullptr);
}

}  // namespace

namespace {

// A group member's bias as aligned f32 for cuBLASLt's epilogue: the tensor itself when it already is, else
// widened into `slot` (the member's scratch slot); null without a bias.
const float* group_bias_f32(const Tensor* b, int64_t out, unsigned char* slot, cudaStream_t st) {
  if (b == nullptr || !b->defined()) return nullptr;
  const void* bp = detail::device_ptr(*b, "linear_group", "bias");
  const int bkind = detail::float_kind(*b, "linear_group", "bias");
  if (bkind == detail::kF32 && aligned16(bp)) return static_cast<const float*>(bp);
  auto* bf = reinterpret_cast<float*>(slot);
  bias_to_f32_kernel<<<detail::elementwise_blocks(out, 256), 256, 0, st>>>(bp, bkind, out, bf);
  VLM_CUDA_LAUNCHED("linear_group (bias)");
  return bf;
}

}  // namespace

void dense_group_cublaslt(const float* x, int64_t n, const LinearOut* outs, int count, bool* done) {
  for (int i = 0; i < count; ++i) done[i] = false;
  if (n < kGemvMaxN || !aligned16(x) || count <= 0) return;
  // Members this path takes: dense, the 16-bit dtype of the first such member, the same `in`, aligned
  // weight and output (as dense_cublaslt wants).
  int kind = -1;
  int64_t in = 0;
  std::vector<int> members;
  std::vector<size_t> bias_at(static_cast<size_t>(count), 0);
  size_t x_bytes = 0, total = 0;
  for (int i = 0; i < count; ++i) {
    const Weight& w = *outs[i].w;
    if (w.quantized || !w.dense.defined() || w.dense.ndim() != 2 || w.rows() <= 0 || w.cols() <= 0) continue;
    const int k = detail::float_kind(w.dense, "linear_group", "weight");
    if (k == detail::kF32 || (kind >= 0 && (k != kind || w.cols() != in))) continue;
    if (!aligned16(w.dense.raw()) || !aligned16(outs[i].y) || w.rows() % 4 != 0) continue;
    const Tensor* b = outs[i].bias;
    if (b != nullptr && b->defined() && b->numel() != w.rows())  // checked before the epilogue could read it
      detail::fail(ErrorKind::kInvalidArgument, "[cuda linear_group] bias " + std::to_string(i) + " has " +
                                                    std::to_string(b->numel()) + " values, expected " +
                                                    std::to_string(w.rows()));
    if (kind < 0) {
      kind = k;
      in = w.cols();
      x_bytes = (static_cast<size_t>(n * in) * 2 + 255) / 256 * 256;
      total = x_bytes;
    }
    members.push_back(i);
    bias_at[static_cast<size_t>(i)] = total;
    if (b != nullptr && b->defined()) total += (static_cast<size_t>(w.rows()) * sizeof(float) + 255) / 256 * 256;
  }
  if (members.size() < 2) return;  // one member: plain linear does the same
  // Scratch: [x in 16 bits][each member's bias in f32 (when it is not already aligned f32)], 256-byte
  // aligned parts; one scratch() call, so no part moves while later members still read x.
  auto* base = static_cast<unsigned char*>(detail::scratch(total, "linear_group"));
  cudaStream_t st = detail::stream("linear_group");
  convert_x(x, n, in, kind, base, st);
  const cudaDataType_t ab = kind == detail::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
  for (int i : members) {
    const Weight& w = *outs[i].w;
    const int64_t out = w.rows();
    const Tensor* b = outs[i].bias;
    const float* bias_f32 = group_bias_f32(b, out, base + bias_at[static_cast<size_t>(i)], st);
    if (bias_f32 != nullptr &&
        lt_matmul_bias(w.dense.raw(), ab, base, n, in, out, outs[i].y, out, CUBLAS_COMPUTE_32F, bias_f32)) {
      done[i] = true;
    } else if (lt_matmul_bias(w.dense.raw(), ab, base, n, in, out, outs[i].y, out, CUBLAS_COMPUTE_32F, nullptr)) {
      if (bias_f32 != nullptr) add_bias(outs[i].y, n, out, *b);
      done[i] = true;
    }
  }
}

bool dense_group_fused(const float* x, int64_t n, const LinearOut* outs, int count, const LinearNorm* norm) {
  constexpr int kMax = 8;
  if (n < kGemvMaxN || count <= 0 || count > kMax || !aligned16(x)) return false;
  bool fused = norm != nullptr;
  for (int i = 0; i < count; ++i) fused = fused || outs[i].accumulate;
  if (!fused) return false;  // the plain group (dense_group_cublaslt) does the same
  // Every member: dense, one 16-bit dtype, one `in`, aligned weight and output (as dense_cublaslt wants).
  const Weight& w0 = *outs[0].w;
  if (w0.quantized || !w0.dense.defined() || w0.dense.ndim() != 2 || w0.cols() <= 0) return false;
  const int kind = detail::float_kind(w0.dense, "linear_group", "weight");
  if (kind == detail::kF32) return false;
  const int64_t in = w0.cols();
  for (int i = 0; i < count; ++i) {
    const Weight& w = *outs[i].w;
    if (w.quantized || !w.dense.defined() || w.dense.ndim() != 2 || w.rows() <= 0 || w.cols() != in ||
        detail::float_kind(w.dense, "linear_group", "weight") != kind || !aligned16(w.dense.raw()) ||
        !aligned16(outs[i].y) || w.rows() % 4 != 0)
      return false;
    const Tensor* b = outs[i].bias;
    if (b != nullptr && b->defined() && b->numel() != w.rows())
      detail::fail(ErrorKind::kInvalidArgument, "[cuda linear_group] bias " + std::to_string(i) + " has " +
                                                    std::to_string(b->numel()) + " values, expected " +
                                                    std::to_string(w.rows()));
  }
  // Scratch: [x (normalized) in 16 bits][each member's bias in f32 (when it is not already aligned f32)].
  const size_t x_bytes = (static_cast<size_t>(n * in) * 2 + 255) / 256 * 256;
  size_t total = x_bytes, bias_at[kMax] = {};
  for (int i = 0; i < count; ++i) {
    bias_at[i] = total;
    const Tensor* b = outs[i].bias;
    if (b != nullptr && b->defined()) total += (static_cast<size_t>(outs[i].w->rows()) * sizeof(float) + 255) / 256 * 256;
  }
  auto* base = static_cast<unsigned char*>(detail::scratch(total, "linear_group"));
  cudaStream_t st = detail::stream("linear_group");
  // The input rounded once, straight into 16 bits: rms_norm's values (norms.cu, the same kernel and block
  // size as the materialized norm) or x itself.
  auto round_input = [&] {
    if (norm != nullptr)
      rms_norm_rounded(x, n, in, *norm->weight, norm->eps, norm->offset, base, kind);
    else
      convert_x(x, n, in, kind, base, st);
  };
  round_input();
  const cudaDataType_t ab = kind == detail::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
  Tensor hx;  // the f32 input of a member cuBLASLt refuses (materialized on first need)
  for (int i = 0; i < count; ++i) {
    const Weight& w = *outs[i].w;
    const int64_t out = w.rows();
    const Tensor* b = outs[i].bias;
    const bool acc = outs[i].accumulate;
    const float* bias_f32 = group_bias_f32(b, out, base + bias_at[i], st);
    // y (+)= x·Wᵀ + bias in cuBLASLt's epilogue: beta = 1 reads y there (no temporary, no add pass).
    if (bias_f32 != nullptr &&
        lt_matmul_impl(w.dense.raw(), ab, base, n, in, out, outs[i].y, out, CUBLAS_COMPUTE_32F, bias_f32, acc))
      continue;
    if (lt_matmul_impl(w.dense.raw(), ab, base, n, in, out, outs[i].y, out, CUBLAS_COMPUTE_32F, nullptr, acc)) {
      if (bias_f32 != nullptr) add_bias(outs[i].y, n, out, *b);
      continue;
    }
    // cuBLASLt refused this member: the general path on the f32 input. linear() may take the scratch that
    // holds the rounded input, so the next member gets it rounded again (below).
    if (!hx.defined() && norm != nullptr) {
      hx = ops::empty({n, in}, DType::kF32, MemCategory::kScratch, Device::kCuda);
      kernels::rms_norm(x, n, in, *norm->weight, norm->eps, norm->offset, hx.data<float>());
    }
    const float* xin = hx.defined() ? hx.data<float>() : x;
    const Tensor bias = b != nullptr ? *b : Tensor();
    if (!acc) {
      kernels::linear(xin, n, w, bias, outs[i].y);
    } else {
      Tensor r = ops::empty({n * out}, DType::kF32, MemCategory::kScratch, Device::kCuda);
      kernels::linear(xin, n, w, bias, r.data<float>());
      kernels::add(outs[i].y, r.data<float>(), n * out);
    }
    if (i + 1 < count) {
      base = static_cast<unsigned char*>(detail::scratch(total, "linear_group"));
      round_input();
    }
  }
  return true;
}

bool lt_matmul(const void* w, cudaDataType_t ab_type, const void* xb, int64_t n, int64_t in, int64_t out, float* y,
               int64_t ldy, cublasComputeType_t compute) {
  return lt_matmul_bias(w, ab_type, xb, n, in, out, y, ldy, compute, nullptr);
}

bool lt_matmul_f32(const void* w, const float* x, int64_t n, int64_t in, int64_t out, float* y, int64_t ldy) {
  return lt_matmul_f32_bias(w, x, n, in, out, y, ldy, nullptr);
}

bool linear_dense_cublaslt(const float* x, int64_t n, const Weight& w, float* y) {
  bool bias_done = false;
  return dense_cublaslt(x, n, w, Tensor(), y, &bias_done);
}

void add_bias(float* y, int64_t n, int64_t out, const Tensor& bias) {
  const void* b = detail::device_ptr(bias, "linear", "bias");
  const int kind = detail::float_kind(bias, "linear", "bias");
  if (bias.numel() != out)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] bias has " + std::to_string(bias.numel()) +
                                                  " values, expected " + std::to_string(out));
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((out + 255) / 256, 64)),
                  static_cast<unsigned>(std::min<int64_t>(n, 65535)));
  add_bias_kernel<<<grid, 256, 0, detail::stream("linear")>>>(y, n, out, b, kind);
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
    if (bias.defined() && bias.numel() != w.rows())  // checked before the epilogue could read it
      detail::fail(ErrorKind::kInvalidArgument, "[cuda linear] bias has " + std::to_string(bias.numel()) +
                                                    " values, expected " + std::to_string(w.rows()));
    bool bias_done = false;
    if (n >= kGemvMaxN)
      done = w.quantized ? linear_quant_gemm(x, n, w, y) : dense_cublaslt(x, n, w, bias, y, &bias_done);
    if (!done) linear_tiled(x, n, w, y);
    if (bias_done) return;
  }
  if (bias.defined()) add_bias(y, n, w.rows(), bias);
}

}  // namespace vlm::ops::cuda::kernels
