// CUDA kernel benchmark: how close the GPU linear kernels get to the card's own limits.
//   1. probes: device-to-device copy bandwidth (read + written bytes / s) and cuBLASLt bf16 GEMM
//      8192^3 (GFLOP/s), measured in this run;
//   2. decode GEMV (n = 1) on Qwen2.5-VL-3B-shaped linears (hidden 2048, intermediate 11008, vocab
//      151936) in bf16 and MLX 4-bit g64: weight bytes read per call / time = GB/s, and its fraction of
//      the copy probe (a GEMV only reads, so 100% of the copy figure is not the ceiling: the read-only
//      roofline sits somewhat above it);
//   3. prefill GEMM (2048 tokens) on the same shapes: GFLOP/s and fraction of the bf16 probe;
//   4. attention at the same model's shape: decode over 4096 cached keys, causal 2048-token prefill.
// Each row: warm-up, then batches timed with CUDA events (see time_median), median per call reported.
// Weights are random (values do not change the timing), generated once on the host in a 16 MiB block
// and tiled over the device buffer. Prints a markdown table. Usage: bench_cuda_kernels [--quick]
// (--quick: decode only, fewer repetitions). Built without CUDA (or no GPU) it says so and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

#ifdef VLMCHECK_WITH_CUDA
#include <cuda_runtime.h>
#endif

using namespace vlm;
namespace cuda = vlm::ops::cuda;

namespace {

#ifdef VLMCHECK_WITH_CUDA
// A device tensor filled by tiling a random host block (bytes of `dtype`-valid values).
Tensor device_random(const Shape& shape, DType dtype, std::mt19937& rng) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* p = cuda::device_alloc(bytes, MemCategory::kWeights);
  std::shared_ptr<void> keep(p, [bytes](void* q) { cuda::device_free(q, bytes, MemCategory::kWeights); });
  const size_t block = std::min<size_t>(bytes, size_t{16} << 20);
  std::vector<uint8_t> host(block);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<uint32_t> word;
  if (dtype == DType::kBF16) {
    for (size_t i = 0; i + 1 < block; i += 2) {
      uint16_t h = f32_to_bf16(u(rng) * 0.05f);
      std::memcpy(&host[i], &h, 2);
    }
  } else if (dtype == DType::kF32) {
    for (size_t i = 0; i + 3 < block; i += 4) {
      float f = u(rng);
      std::memcpy(&host[i], &f, 4);
    }
  } else {  // packed codes: any bits
    for (size_t i = 0; i + 3 < block; i += 4) {
      uint32_t w = word(rng);
      std::memcpy(&host[i], &w, 4);
    }
  }
  for (size_t off = 0; off < bytes; off += block)
    cuda::copy(static_cast<char*>(p) + off, Device::kCuda, host.data(), Device::kCpu, std::min(block, bytes - off));
  return Tensor::borrow(p, shape, dtype, keep, Device::kCuda);
}

ops::Weight make_weight(int64_t out, int64_t in, bool quant, std::mt19937& rng) {
  ops::Weight w;
  if (!quant) {
    w.dense = device_random({out, in}, DType::kBF16, rng);
    return w;
  }
  w.quantized = true;
  w.quant.rows = out;
  w.quant.cols = in;
  w.quant.spec = {4, 64};
  w.quant.packed = device_random({out, in * 4 / 32}, DType::kU32, rng);
  w.quant.scales = device_random({out, in / 64}, DType::kBF16, rng);
  w.quant.biases = device_random({out, in / 64}, DType::kBF16, rng);
  return w;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw_error(ErrorKind::kInternal, "{}: {}", what, cudaGetErrorString(e));
}

// Median seconds per call over `batches` batches of `per_batch` back-to-back calls, after `warm`
// untimed ones. The backend stream is internal to the backend, so the events go on the legacy default
// stream on either side of a batch: a synchronize() before the start event and after the calls. That
// wait (~10 us) is spread over the batch, so short kernels run in batches of 20.
template <typename Fn>
double time_median(Fn&& fn, int warm, int batches, int per_batch) {
  for (int i = 0; i < warm; ++i) fn();
  cuda::synchronize();
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  std::vector<double> t;
  for (int i = 0; i < batches; ++i) {
    check(cudaEventRecord(a, nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(a), "cudaEventSynchronize");
    for (int j = 0; j < per_batch; ++j) fn();
    cuda::synchronize();
    check(cudaEventRecord(b, nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms * 1e-3 / per_batch);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  if (!cuda::available()) {
    std::printf("bench_cuda_kernels: no usable CUDA device (%s)\n", cuda_unavailable_reason().c_str());
    return 0;
  }
#ifdef VLMCHECK_WITH_CUDA
  try {
    const std::vector<GpuInfo> gpus = cuda_devices();
    std::printf("# CUDA kernels on %s\n\n", gpus.empty() ? "?" : gpus[0].name.c_str());
    const double copy_gbs = cuda::probe_copy_bandwidth_gbs();
    const double bf16_gflops = cuda::probe_bf16_matmul_gflops();
    std::printf("probe: device copy %.0f GB/s (read + written), cuBLASLt bf16 8192^3 %.0f GFLOP/s\n\n", copy_gbs,
                bf16_gflops);

    struct Shape2 {
      const char* name;
      int64_t out, in;
    };
    const std::vector<Shape2> shapes = {{"q/o proj", 2048, 2048},
                                        {"gate/up proj", 11008, 2048},
                                        {"down proj", 2048, 11008},
                                        {"lm_head", 151936, 2048}};
    const int64_t prefill = 2048;
    std::mt19937 rng(7);
    const auto& table = cuda::kernel_table();
    // Activations: the largest x and y any row needs.
    const int64_t max_in = 11008, max_out = 151936;
    const int64_t n_max = quick ? 1 : prefill;
    Tensor x = [&] {
      std::vector<float> h(static_cast<size_t>(max_in * std::min<int64_t>(n_max, 64)));
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      for (float& v : h) v = u(rng);
      const size_t bytes = static_cast<size_t>(max_in * n_max) * 4;
      void* p = cuda::device_alloc(bytes, MemCategory::kScratch);
      std::shared_ptr<void> keep(p, [bytes](void* q) { cuda::device_free(q, bytes, MemCategory::kScratch); });
      for (size_t off = 0; off < bytes; off += h.size() * 4)
        cuda::copy(static_cast<char*>(p) + off, Device::kCuda, h.data(), Device::kCpu,
                   std::min(h.size() * 4, bytes - off));
      return Tensor::borrow(p, {n_max, max_in}, DType::kF32, keep, Device::kCuda);
    }();
    const size_t y_bytes = static_cast<size_t>(max_out * n_max) * 4;
    float* y = static_cast<float*>(cuda::device_alloc(y_bytes, MemCategory::kScratch));

    std::printf("| linear | out x in | weights | tokens | median us | weight GB/s | %% of copy probe | GFLOP/s | "
                "%% of bf16 probe |\n|---|---|---|---|---|---|---|---|---|\n");
    for (bool quant : {false, true}) {
      for (const Shape2& s : shapes) {
        ops::Weight w = make_weight(s.out, s.in, quant, rng);
        const double bytes = static_cast<double>(w.nbytes());
        const char* fmt_name = quant ? "4-bit g64" : "bf16";
        for (int64_t n : {int64_t{1}, prefill}) {
          if (n > n_max) continue;
          const double t = n == 1 ? time_median([&] { table.linear(x.data<float>(), n, w, Tensor(), y); }, 5,
                                                quick ? 5 : 9, 20)
                                  : time_median([&] { table.linear(x.data<float>(), n, w, Tensor(), y); }, 1, 5, 1);
          const double gflops = 2.0 * static_cast<double>(n) * s.out * s.in / t / 1e9;
          if (n == 1)
            std::printf("| %s | %lldx%lld | %s | 1 | %.1f | %.0f | %.0f%% | %.0f | - |\n", s.name,
                        static_cast<long long>(s.out), static_cast<long long>(s.in), fmt_name, t * 1e6,
                        bytes / t / 1e9, 100.0 * bytes / t / 1e9 / copy_gbs, gflops);
          else
            std::printf("| %s | %lldx%lld | %s | %lld | %.1f | - | - | %.0f | %.0f%% |\n", s.name,
                        static_cast<long long>(s.out), static_cast<long long>(s.in), fmt_name,
                        static_cast<long long>(n), t * 1e6, gflops, 100.0 * gflops / bf16_gflops);
        }
      }
    }
    // Attention at the Qwen2.5-VL-3B text shape (16 heads, 2 kv heads, head_dim 128), causal: decode
    // over a 4096-key cache and a 2048-token prefill. GFLOP/s counts QK and PV of visible pairs.
    {
      const int64_t nh = 16, nkv = 2, hd = 128, cache = 4096;
      const int64_t nq_max = quick ? 1 : prefill;
      auto dev = [&](int64_t n) {
        std::vector<float> h(static_cast<size_t>(n));
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        for (float& v : h) v = u(rng);
        void* p = cuda::device_alloc(h.size() * 4, MemCategory::kScratch);
        cuda::copy(p, Device::kCuda, h.data(), Device::kCpu, h.size() * 4);
        return std::shared_ptr<void>(p, [n](void* q) { cuda::device_free(q, static_cast<size_t>(n) * 4,
                                                                         MemCategory::kScratch); });
      };
      auto q = dev(nq_max * nh * hd), k = dev(cache * nkv * hd), v = dev(cache * nkv * hd), o = dev(nq_max * nh * hd);
      std::vector<int64_t> kpos(static_cast<size_t>(cache));
      for (int64_t j = 0; j < cache; ++j) kpos[j] = j;
      std::printf("\n| attention | queries x keys | median us | GFLOP/s |\n|---|---|---|---|\n");
      for (int64_t nq : {int64_t{1}, prefill}) {
        if (nq > nq_max) continue;
        const int64_t nk = nq == 1 ? cache : prefill, q0 = nk - nq;
        auto run = [&] {
          table.attention(static_cast<float*>(q.get()), nq, q0, static_cast<float*>(k.get()),
                          static_cast<float*>(v.get()), kpos.data(), nk, nh, nkv, hd, 0.088f, 0.0f, {},
                          static_cast<float*>(o.get()));
        };
        const double t = nq == 1 ? time_median(run, 5, quick ? 5 : 9, 20) : time_median(run, 1, 5, 1);
        const double pairs = nq == 1 ? static_cast<double>(nk) : 0.5 * static_cast<double>(nq) * (nq + 1);
        std::printf("| %s | %lldx%lld | %.1f | %.0f |\n", nq == 1 ? "decode" : "prefill (causal)",
                    static_cast<long long>(nq), static_cast<long long>(nk), t * 1e6,
                    4.0 * pairs * nh * hd / t / 1e9);
      }
    }
    cuda::synchronize();
    cuda::device_free(y, y_bytes, MemCategory::kScratch);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_cuda_kernels: %s\n", e.what());
    return 1;
  }
#else
  (void)quick;
#endif
  return 0;
}
