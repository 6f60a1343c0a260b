// CUDA kernel benchmark: how close the GPU linear kernels get to the card's own limits.
//   1. probes: device-to-device copy bandwidth (read + written bytes / s) and cuBLASLt bf16 GEMM
//      8192^3 (GFLOP/s), measured in this run;
//   2. decode GEMV (n = 1, 2, 4) on the Qwen2.5-VL-3B and -7B linears (q/o, k/v, gate/up, down,
//      lm_head) in bf16 and MLX 4-bit g64, n = 1 in the other formats (f32, f16, 2/3/5/6/8-bit, 4-bit
//      g32/g128) on the 7B gate/up and down shapes, and the q/k/v and gate+up groups as one
//      linear_group vs separate calls: weight bytes read per call / time = GB/s, and its fraction of
//      the copy probe (a GEMV only reads, so 100% of the copy figure is not the ceiling: the read-only
//      roofline sits somewhat above it);
//   3. prefill GEMM (2048 tokens) on the same shapes (not with --quick): GFLOP/s and fraction of the
//      bf16 probe; then the Qwen2.5-VL tower's GEMMs over 62,208 patches, its MLP stored and padded;
//   4. attention: decode over 2k/4k/16k cached keys (3B shape), causal prefill of 2048 tokens (3B
//      shape) and 16384 tokens (7B shape), bf16_matmul off and on: TFLOP/s and % of the bf16 probe;
//      tensor-core prefill at Gemma 3 4B's shape (head_dim 256) and the Qwen2.5-VL tower's on a
//      16k-token photo (head_dim 80: windows batched as heads, and full attention over 62,208 patches).
// Each row: warm-up, then batches timed with CUDA events (see time_median), median per call reported.
// Weights are random (values do not change the timing), generated once on the host in a 16 MiB block
// and tiled over the device buffer. Prints a markdown table. Usage: bench_cuda_kernels [--quick | --quant |
// --attention [TEXT]] (--attention: only the tensor-core attention prefill rows, with TEXT only those whose name
// contains it; VLMCHECK_CUDA_FLASH picks the flash kernel variant, attention_flash.cu)
// (--quick: decode only, fewer repetitions; --quant: only the quantized decode GEMV rows, 4-bit g64 at
// n = 1, 2, 3, 4, 7; `--quant TEXT`: only the rows whose "model linear" name contains TEXT, e.g.
// "7B down", for a profiler). VLMCHECK_CUDA_GEMV=legacy in the environment runs every quantized GEMV on the
// CUDA-core kernels instead of the 4-bit tensor-core one (the before/after switch); the header line
// prints every GEMV switch in effect (docs/CUDA.md). Built without CUDA (or no GPU) it says so and exits 0.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
  } else if (dtype == DType::kF16) {
    for (size_t i = 0; i + 1 < block; i += 2) {
      uint16_t h = f32_to_f16(u(rng) * 0.05f);
      std::memcpy(&host[i], &h, 2);
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

// A weight format of the linear rows: dense (dtype) or MLX affine (bits, group size, bf16 scales).
struct LinearFormat {
  const char* name;
  bool quant;
  DType dtype;  // dense
  int bits, group;
};

ops::Weight make_weight(int64_t out, int64_t in, const LinearFormat& f, std::mt19937& rng) {
  ops::Weight w;
  if (!f.quant) {
    w.dense = device_random({out, in}, f.dtype, rng);
    return w;
  }
  w.quantized = true;
  w.quant.rows = out;
  w.quant.cols = in;
  w.quant.spec = {f.bits, f.group};
  w.quant.packed = device_random({out, in * f.bits / 32}, DType::kU32, rng);
  w.quant.scales = device_random({out, in / f.group}, DType::kBF16, rng);
  w.quant.biases = device_random({out, in / f.group}, DType::kBF16, rng);
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

// Device buffer of n f32 values, uniform in [-1, 1] (a 1 MiB random block tiled).
std::shared_ptr<float> device_floats(int64_t n, std::mt19937& rng) {
  std::vector<float> h(static_cast<size_t>(std::min<int64_t>(n, int64_t{1} << 18)));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& v : h) v = u(rng);
  const size_t bytes = static_cast<size_t>(n) * 4;
  void* p = cuda::device_alloc(bytes, MemCategory::kScratch);
  for (size_t off = 0; off < bytes; off += h.size() * 4)
    cuda::copy(static_cast<char*>(p) + off, Device::kCuda, h.data(), Device::kCpu, std::min(h.size() * 4, bytes - off));
  return std::shared_ptr<float>(static_cast<float*>(p),
                                [bytes](float* q) { cuda::device_free(q, bytes, MemCategory::kScratch); });
}

// Copies of a weight's layout over `pool` (random device words) whose bytes together are several
// times the GPU's L2 (50 MB on H100 / H200): GEMV rows cycle through them, so each call reads DRAM
// as a real decode does (every layer's weights are different) instead of hitting L2. A weight of 64 MB
// or more (the lm_heads) is used as is. Contents are random bits (NaNs included), which does not
// change the timing.
std::vector<ops::Weight> l2_cold_copies(const ops::Weight& w, const std::shared_ptr<uint8_t>& pool, size_t pool_bytes) {
  auto round_up = [](size_t b) { return (b + 255) / 256 * 256; };
  std::vector<const Tensor*> parts;
  if (w.quantized)
    parts = {&w.quant.packed, &w.quant.scales, &w.quant.biases};
  else
    parts = {&w.dense};
  size_t stride = 0;
  for (const Tensor* t : parts) stride += round_up(t->nbytes());
  if (stride >= (size_t{64} << 20)) return {w};
  std::vector<ops::Weight> copies;
  for (size_t off = 0; off + stride <= pool_bytes; off += stride) {
    ops::Weight c = w;
    std::vector<Tensor*> dst = w.quantized ? std::vector<Tensor*>{&c.quant.packed, &c.quant.scales, &c.quant.biases}
                                           : std::vector<Tensor*>{&c.dense};
    size_t at = off;
    for (size_t i = 0; i < parts.size(); ++i) {
      *dst[i] = Tensor::borrow(pool.get() + at, parts[i]->shape(), parts[i]->dtype(), pool, Device::kCuda);
      at += round_up(parts[i]->nbytes());
    }
    copies.push_back(c);
  }
  return copies;
}

// Linear rows. Decode GEMV at n = 1, 2, 4 on the Qwen2.5-VL-3B and -7B linears (q/o, k/v, gate/up,
// down, lm_head) in bf16 and MLX 4-bit g64; n = 1 in the other formats (f32, f16, 2/3/5/6/8-bit g64,
// 4-bit g32/g128) on the gate/up and down shapes; the q/k/v and gate/up groups as one linear_group
// against separate linear calls; and (without --quick) the 2048-token prefill GEMM. GEMV rows report
// weight bytes read per second (scales and biases included) and their fraction of the copy probe.
void bench_linears(const ops::cpu::KernelTable& table, double copy_gbs, double bf16_gflops, bool quick,
                   bool quant_only, const std::string& only, std::mt19937& rng) {
  struct Shape2 {
    const char* model;
    const char* name;
    int64_t out, in;
  };
  const std::vector<Shape2> shapes = {
      {"3B", "q/o proj", 2048, 2048},       {"3B", "k/v proj", 256, 2048},     {"3B", "gate/up proj", 11008, 2048},
      {"3B", "down proj", 2048, 11008},     {"3B", "lm_head", 151936, 2048},   {"7B", "q/o proj", 3584, 3584},
      {"7B", "k/v proj", 512, 3584},        {"7B", "gate/up proj", 18944, 3584}, {"7B", "down proj", 3584, 18944},
      {"7B", "lm_head", 152064, 3584}};
  const LinearFormat bf16{"bf16", false, DType::kBF16, 0, 0}, q4{"4-bit g64", true, DType::kU32, 4, 64};
  const int64_t prefill = 2048, max_in = 18944, max_out = 152064;
  const int64_t n_max = quant_only ? 7 : quick ? 4 : prefill;
  std::shared_ptr<float> x = device_floats(max_in * n_max, rng), y = device_floats(max_out * n_max, rng);
  const size_t pool_bytes = size_t{256} << 20;
  const std::shared_ptr<uint8_t> pool = std::reinterpret_pointer_cast<uint8_t>(device_floats(pool_bytes / 4, rng));
  auto gemv_row = [&](const char* model, const char* name, const char* fmt, int64_t out, int64_t in, int64_t n,
                      double bytes, double t) {
    std::printf("| %s %s | %lldx%lld | %s | %lld | %.1f | %.0f | %.0f%% | %.0f | - |\n", model, name,
                static_cast<long long>(out), static_cast<long long>(in), fmt, static_cast<long long>(n), t * 1e6,
                bytes / t / 1e9, 100.0 * bytes / t / 1e9 / copy_gbs, 2.0 * n * out * in / t / 1e9);
    std::fflush(stdout);
  };
  std::printf("| linear | out x in | weights | tokens | median us | weight GB/s | %% of copy probe | GFLOP/s | "
              "%% of bf16 probe |\n|---|---|---|---|---|---|---|---|---|\n");
  const int batches = quick ? 5 : 9;
  const std::vector<LinearFormat> main_formats = quant_only ? std::vector<LinearFormat>{q4} : std::vector<LinearFormat>{bf16, q4};
  const std::vector<int64_t> token_counts =
      quant_only ? std::vector<int64_t>{1, 2, 3, 4, 7} : std::vector<int64_t>{1, 2, 4, prefill};
  auto wanted = [&](const char* model, const char* name) {
    return only.empty() || (std::string(model) + " " + name).find(only) != std::string::npos;
  };
  for (const LinearFormat& f : main_formats) {
    for (const Shape2& s : shapes) {
      if (!wanted(s.model, s.name)) continue;
      ops::Weight w = make_weight(s.out, s.in, f, rng);
      const double bytes = static_cast<double>(w.nbytes());
      const std::vector<ops::Weight> cold = l2_cold_copies(w, pool, pool_bytes);
      for (int64_t n : token_counts) {
        if (n > n_max) continue;
        size_t k = 0;
        auto run = [&] { table.linear(x.get(), n, n < 8 ? cold[k++ % cold.size()] : w, Tensor(), y.get()); };
        if (n < 8) {
          gemv_row(s.model, s.name, f.name, s.out, s.in, n, bytes, time_median(run, 5, batches, 20));
        } else {
          const double t = time_median(run, 1, 5, 1), gflops = 2.0 * static_cast<double>(n) * s.out * s.in / t / 1e9;
          std::printf("| %s %s | %lldx%lld | %s | %lld | %.1f | - | - | %.0f | %.0f%% |\n", s.model, s.name,
                      static_cast<long long>(s.out), static_cast<long long>(s.in), f.name, static_cast<long long>(n),
                      t * 1e6, gflops, 100.0 * gflops / bf16_gflops);
        }
      }
    }
  }
  // Other formats, n = 1.
  std::vector<LinearFormat> others = {
      {"f32", false, DType::kF32, 0, 0},       {"f16", false, DType::kF16, 0, 0},
      {"2-bit g64", true, DType::kU32, 2, 64}, {"3-bit g64", true, DType::kU32, 3, 64},
      {"4-bit g32", true, DType::kU32, 4, 32}, {"4-bit g128", true, DType::kU32, 4, 128},
      {"5-bit g64", true, DType::kU32, 5, 64}, {"6-bit g64", true, DType::kU32, 6, 64},
      {"8-bit g64", true, DType::kU32, 8, 64}};
  if (quant_only) others.erase(others.begin(), others.begin() + 2);
  for (const LinearFormat& f : others)
    for (const Shape2& s : {shapes[7], shapes[8]}) {
      if (!wanted(s.model, s.name)) continue;
      ops::Weight w = make_weight(s.out, s.in, f, rng);
      const std::vector<ops::Weight> cold = l2_cold_copies(w, pool, pool_bytes);
      size_t k = 0;
      auto run = [&] { table.linear(x.get(), 1, cold[k++ % cold.size()], Tensor(), y.get()); };
      gemv_row(s.model, s.name, f.name, s.out, s.in, 1, static_cast<double>(w.nbytes()), time_median(run, 5, batches, 20));
    }
  // Groups of one input: q/k/v and gate/up, as one linear_group and as separate linear calls.
  struct Group {
    const char* model;
    const char* name;
    std::vector<int64_t> outs;
    int64_t in;
  };
  const std::vector<Group> groups = {{"3B", "q/k/v group", {2048, 256, 256}, 2048},
                                     {"3B", "gate+up group", {11008, 11008}, 2048},
                                     {"7B", "q/k/v group", {3584, 512, 512}, 3584},
                                     {"7B", "gate+up group", {18944, 18944}, 3584}};
  for (const LinearFormat& f : main_formats)
    for (const Group& g : groups) {
      if (!wanted(g.model, g.name)) continue;
      std::vector<ops::Weight> ws;
      std::vector<Tensor> no_bias(g.outs.size());
      double bytes = 0;
      int64_t rows = 0;
      for (int64_t out : g.outs) {
        ws.push_back(make_weight(out, g.in, f, rng));
        bytes += static_cast<double>(ws.back().nbytes());
        rows += out;
      }
      // Copies of the whole group over the pool (members at disjoint offsets of each copy).
      std::vector<std::vector<ops::LinearOut>> sets;
      std::vector<std::vector<ops::Weight>> per(ws.size());  // outlives the LinearOut pointers into it
      {
        const size_t share = pool_bytes / ws.size() / 256 * 256;
        size_t copies = SIZE_MAX;
        for (size_t i = 0; i < ws.size(); ++i) {
          std::shared_ptr<uint8_t> part(pool, pool.get() + i * share);
          per[i] = l2_cold_copies(ws[i], part, share);
          copies = std::min(copies, per[i].size());
        }
        for (size_t k = 0; k < copies; ++k) {
          std::vector<ops::LinearOut> outs;
          int64_t at = 0;
          for (size_t i = 0; i < ws.size(); ++i) {
            outs.push_back({&per[i][per[i].size() == 1 ? 0 : k], &no_bias[i], y.get() + at});
            at += ws[i].rows();
          }
          sets.push_back(outs);
        }
      }
      size_t k1 = 0, k2 = 0;
      auto grouped = [&] {
        const auto& outs = sets[k1++ % sets.size()];
        table.linear_group(x.get(), 1, outs.data(), static_cast<int>(outs.size()));
      };
      auto separate = [&] {
        for (const ops::LinearOut& o : sets[k2++ % sets.size()]) table.linear(x.get(), 1, *o.w, Tensor(), o.y);
      };
      // The decoder's fused form (ops.h LinearOut::norm): the group reads rms_norm(x) (bf16 norm
      // weight); GEMVs that normalize in-kernel do it in one launch, others add a norm launch.
      const Tensor norm_w = device_random({g.in}, DType::kBF16, rng);
      const ops::LinearNorm norm{&norm_w, 1e-6f, 0.0f};
      size_t k3 = 0;
      auto fused = [&] {
        std::vector<ops::LinearOut> outs = sets[k3++ % sets.size()];
        for (ops::LinearOut& o : outs) o.norm = &norm;
        table.linear_group(x.get(), 1, outs.data(), static_cast<int>(outs.size()));
      };
      const std::string one = std::string(g.name) + " (linear_group)", many = std::string(g.name) + " (separate)";
      const std::string normed = std::string(g.name) + " (linear_group, fused norm)";
      gemv_row(g.model, one.c_str(), f.name, rows, g.in, 1, bytes, time_median(grouped, 5, batches, 20));
      gemv_row(g.model, many.c_str(), f.name, rows, g.in, 1, bytes, time_median(separate, 5, batches, 20));
      gemv_row(g.model, normed.c_str(), f.name, rows, g.in, 1, bytes, time_median(fused, 5, batches, 20));
    }
}

// Decode attention (one query) at the model shapes: Qwen2.5-VL-3B (16 / 2 heads of 128), -7B (28 / 4
// of 128), Gemma 3 4B (8 / 4 of 256; its sliding layers see 1024 keys) over 2048 and 16384 cached
// keys, f32 K/V and MLX 4-bit g64 K/V (ops::attention_quantized). K/V cycle through copies filling
// 256 MB, so each call reads DRAM like a decode step (every layer's cache is different; 2k keys of the
// 3B are only 4 MB, which the 50 MB L2 would otherwise serve). GB/s = K/V bytes the visible keys
// occupy / time. f32 rows run the decode kernel with the splits merged by its last blocks (one
// launch, the default) and then by attention_combine_kernel (two launches,
// VLMCHECK_CUDA_DECODE_MERGE=combine); quantized rows the fused kernel and then the path it replaces
// (kv_dequantize of K and V into f32 rows, then attention). Every row also times the tile kernel
// (VLMCHECK_CUDA_DECODE_KERNEL=tile, the default before the register kernel) with the one-launch merge.
// The switches are left on the register kernel and the one-launch merge. The times include the
// host's share of each call (mask staging, launch); VLMCHECK_BENCH_DECODE_PROFILE=n runs n untimed
// calls of each kernel per row instead, for ncu to time the kernels alone.
// `bench_cuda_kernels --decode-attention` runs only these rows.
void bench_decode_attention(const ops::cpu::KernelTable& table, double copy_gbs, bool quick, std::mt19937& rng) {
  struct Row {
    const char* model;
    int64_t nh, nkv, hd, nk, window;
    int bits;  // 0: f32 K/V
  };
  const std::vector<Row> rows = {
      {"Qwen2.5-VL-3B", 16, 2, 128, 2048, 0, 0},    {"Qwen2.5-VL-3B", 16, 2, 128, 16384, 0, 0},
      {"Qwen2.5-VL-7B", 28, 4, 128, 2048, 0, 0},    {"Qwen2.5-VL-7B", 28, 4, 128, 16384, 0, 0},
      {"Gemma 3 4B", 8, 4, 256, 2048, 0, 0},        {"Gemma 3 4B", 8, 4, 256, 16384, 0, 0},
      {"Gemma 3 4B", 8, 4, 256, 16384, 1024, 0},    {"Qwen2.5-VL-3B", 16, 2, 128, 2048, 0, 4},
      {"Qwen2.5-VL-3B", 16, 2, 128, 16384, 0, 4},   {"Qwen2.5-VL-7B", 28, 4, 128, 2048, 0, 4},
      {"Qwen2.5-VL-7B", 28, 4, 128, 16384, 0, 4},   {"Gemma 3 4B", 8, 4, 256, 2048, 0, 4},
      // The 3B decode after a 2048-token prompt: 65 splits on 132 SMs, which the register kernel merges in
      // two levels (teams of at most 64 states); the 2048-key rows (64 splits) take one.
      {"Qwen2.5-VL-3B", 16, 2, 128, 2080, 0, 0},    {"Qwen2.5-VL-3B", 16, 2, 128, 2080, 0, 4},
      // Short contexts (a few chunks: fewer splits of two chunks each since stop 23) and SmolVLM's hd 64.
      {"Qwen2.5-VL-3B", 16, 2, 128, 256, 0, 0},     {"SmolVLM-256M", 9, 3, 64, 2080, 0, 0},
  };
  const int group = 64;
  const size_t pool_target = size_t{256} << 20;
  // VLMCHECK_BENCH_DECODE_PROFILE=n: n calls of the register kernel and n of the tile kernel per row,
  // untimed (for ncu: the kernels' own durations without the host's share).
  const char* prof = std::getenv("VLMCHECK_BENCH_DECODE_PROFILE");
  const int profile_calls = prof != nullptr ? std::max(0, std::atoi(prof)) : 0;
  std::printf("\n| decode attention | heads / kv heads, hd | keys (window) | K/V | median us | GB/s | %% of copy | "
              "compared with: us |\n|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    const int64_t row = r.nkv * r.hd;
    const int64_t words = r.bits ? ops::kv_packed_words(row, r.bits) : 0, groups = row / group;
    // Bytes of one K (or V) plane per key, and of one copy of K and V.
    const size_t per_key = r.bits ? static_cast<size_t>(words * 4 + 2 * groups * 4) : static_cast<size_t>(row * 4);
    const size_t copy_bytes = 2 * per_key * static_cast<size_t>(r.nk);
    const size_t copies = std::max<size_t>(1, pool_target / copy_bytes);
    std::shared_ptr<float> q = device_floats(r.nh * r.hd, rng), o = device_floats(r.nh * r.hd, rng);
    std::shared_ptr<float> pool = device_floats(static_cast<int64_t>(copies * copy_bytes / 4), rng);
    if (r.bits) {  // valid scales (random bits could be NaN): quantize one copy's rows, tile it over the pool
      std::shared_ptr<float> x = device_floats(r.nk * row, rng);
      char* base = reinterpret_cast<char*>(pool.get());
      for (int plane = 0; plane < 2; ++plane) {
        char* p = base + plane * per_key * r.nk;
        auto* packed = reinterpret_cast<uint32_t*>(p);
        auto* scales = reinterpret_cast<float*>(p + words * 4 * r.nk);
        table.kv_quantize(x.get(), r.nk, row, r.bits, group, packed, scales, scales + groups * r.nk);
      }
      for (size_t c = 1; c < copies; ++c) cuda::copy(base + c * copy_bytes, Device::kCuda, base, Device::kCuda, copy_bytes);
    }
    std::vector<int64_t> kpos(static_cast<size_t>(r.nk));
    for (int64_t j = 0; j < r.nk; ++j) kpos[j] = j;
    ops::AttentionMask mask;
    mask.sliding_window = r.window;
    const float scale = 1.0f / std::sqrt(static_cast<float>(r.hd));
    std::shared_ptr<float> deq = r.bits ? device_floats(2 * r.nk * row, rng) : nullptr;
    size_t next = 0;
    auto call = [&](bool before) {
      char* base = reinterpret_cast<char*>(pool.get()) + (next++ % copies) * copy_bytes;
      if (!r.bits) {
        table.attention(q.get(), 1, r.nk - 1, reinterpret_cast<float*>(base),
                        reinterpret_cast<float*>(base + per_key * r.nk), kpos.data(), r.nk, r.nh, r.nkv, r.hd, scale,
                        0.0f, mask, o.get());
        return;
      }
      ops::QuantizedKV kv;
      for (int plane = 0; plane < 2; ++plane) {
        char* p = base + plane * per_key * r.nk;
        auto* packed = reinterpret_cast<const uint32_t*>(p);
        auto* scales = reinterpret_cast<const float*>(p + words * 4 * r.nk);
        (plane == 0 ? kv.k_packed : kv.v_packed) = packed;
        (plane == 0 ? kv.k_scales : kv.v_scales) = scales;
        (plane == 0 ? kv.k_biases : kv.v_biases) = scales + groups * r.nk;
      }
      kv.bits = r.bits;
      kv.group_size = group;
      if (!before) {
        table.attention_quantized(q.get(), 1, r.nk - 1, kv, kpos.data(), r.nk, r.nh, r.nkv, r.hd, scale, 0.0f, mask,
                                  o.get());
        return;
      }
      float* kd = deq.get();
      float* vd = kd + r.nk * row;
      table.kv_dequantize(kv.k_packed, kv.k_scales, kv.k_biases, r.nk, row, r.bits, group, kd);
      table.kv_dequantize(kv.v_packed, kv.v_scales, kv.v_biases, r.nk, row, r.bits, group, vd);
      table.attention(q.get(), 1, r.nk - 1, kd, vd, kpos.data(), r.nk, r.nh, r.nkv, r.hd, scale, 0.0f, mask, o.get());
    };
    if (profile_calls > 0) {  // a few calls of each kernel for ncu, no timing
      for (const bool tile : {false, true}) {
        ops::cuda::set_decode_tile_kernel(tile);
        for (int c = 0; c < profile_calls; ++c) call(false);
      }
      ops::cuda::set_decode_tile_kernel(false);
      cuda::synchronize();
      std::printf("| %s | %lld / %lld, %lld | %lld (%lld) | %d-bit | profiled |\n", r.model, static_cast<long long>(r.nh),
                  static_cast<long long>(r.nkv), static_cast<long long>(r.hd), static_cast<long long>(r.nk),
                  static_cast<long long>(r.window), r.bits);
      continue;
    }
    const int batches = quick ? 5 : 9;
    ops::cuda::set_decode_last_block_merge(true);
    // The tile kernel (the default before the register kernel) on the same rows, same merge.
    ops::cuda::set_decode_tile_kernel(true);
    const double t_tile = time_median([&] { call(false); }, 5, batches, 20);
    ops::cuda::set_decode_tile_kernel(false);
    const double t = time_median([&] { call(false); }, 5, batches, 20);
    double t_before = 0;
    if (r.bits) {
      t_before = time_median([&] { call(true); }, 5, batches, 20);
    } else {
      ops::cuda::set_decode_last_block_merge(false);
      t_before = time_median([&] { call(false); }, 5, batches, 20);
      ops::cuda::set_decode_last_block_merge(true);
    }
    const int64_t visible = r.window > 0 ? std::min(r.window, r.nk) : r.nk;
    const double gbs = static_cast<double>(2 * per_key * static_cast<size_t>(visible)) / t / 1e9;
    char keys[64];
    std::snprintf(keys, sizeof(keys), r.window > 0 ? "%lld (%lld)" : "%lld", static_cast<long long>(r.nk),
                  static_cast<long long>(r.window));
    std::printf("| %s | %lld / %lld, %lld | %s | %s | %.1f | %.0f | %.0f%% | %.1f (tile kernel); %.1f%s |\n", r.model,
                static_cast<long long>(r.nh), static_cast<long long>(r.nkv), static_cast<long long>(r.hd), keys,
                r.bits ? "4-bit g64" : "f32", t * 1e6, gbs, 100.0 * gbs / copy_gbs, t_tile * 1e6, t_before * 1e6,
                r.bits ? " (dequantize + attention)" : " (two launches, combine kernel)");
    std::fflush(stdout);
  }
}
#endif

}  // namespace

#ifdef VLMCHECK_WITH_CUDA
// The Qwen2.5-VL tower's prefill GEMMs on a 16k-token photo (62,208 patch rows, bf16 weights, f32 x and y as the
// tower runs them): q/k/v/proj 1280x1280, and the MLP at its stored width 3420 against the multiple of 64 that a
// device tower pads it to (qwen_vision_encoder.cpp: down_proj's 3420-wide bf16 rows are only 8-byte aligned).
void bench_tower_gemms(const ops::cpu::KernelTable& table, double bf16_gflops, std::mt19937& rng) {
  constexpr int64_t kPatches = 62208, kDim = 1280;
  struct Row {
    const char* name;
    int64_t out, in;
  };
  const Row rows[] = {{"qkv/proj", kDim, kDim},        {"gate/up (stored 3420)", 3420, kDim},
                      {"gate/up (padded 3456)", 3456, kDim}, {"down (stored 3420)", kDim, 3420},
                      {"down (padded 3456)", kDim, 3456}};
  const std::shared_ptr<float> x = device_floats(kPatches * 3456, rng), y = device_floats(kPatches * 3456, rng);
  const LinearFormat bf16{"bf16", false, DType::kBF16, 0, 0};
  for (const Row& r : rows) {
    const ops::Weight w = make_weight(r.out, r.in, bf16, rng);
    auto run = [&] { table.linear(x.get(), kPatches, w, Tensor(), y.get()); };
    const double t = time_median(run, 1, 5, 1), gflops = 2.0 * kPatches * r.out * r.in / t / 1e9;
    std::printf("| Qwen2.5-VL tower %s | %lldx%lld | bf16 | %lld | %.1f | - | - | %.0f | %.0f%% |\n", r.name,
                static_cast<long long>(r.out), static_cast<long long>(r.in), static_cast<long long>(kPatches), t * 1e6,
                gflops, 100.0 * gflops / bf16_gflops);
    std::fflush(stdout);
  }
}
#endif

int main(int argc, char** argv) {
  const bool quant_only = argc > 1 && std::strcmp(argv[1], "--quant") == 0;
  [[maybe_unused]] const bool attention_only = argc > 1 && std::strcmp(argv[1], "--attention") == 0;
  const bool quick = quant_only || (argc > 1 && std::strcmp(argv[1], "--quick") == 0);
  [[maybe_unused]] const bool decode_attention_only = argc > 1 && std::strcmp(argv[1], "--decode-attention") == 0;
  if (!cuda::available()) {
    std::printf("bench_cuda_kernels: no usable CUDA device (%s)\n", cuda_unavailable_reason().c_str());
    return 0;
  }
#ifdef VLMCHECK_WITH_CUDA
  try {
    const std::vector<GpuInfo> gpus = cuda_devices();
    // The GEMV switches in effect (docs/CUDA.md), so that a log says which kernels ran.
    auto env = [](const char* name) {
      const char* v = std::getenv(name);
      return v != nullptr ? v : "-";
    };
    const char* gemv_env = std::getenv("VLMCHECK_CUDA_GEMV");
    std::printf("# CUDA kernels on %s (quantized GEMV: %s; VLMCHECK_CUDA_GEMV=%s, _DENSE=%s, _PERSIST=%s, "
                "_WARPS=%s, _CLUSTER=%s)\n\n",
                gpus.empty() ? "?" : gpus[0].name.c_str(),
                gemv_env != nullptr && std::strcmp(gemv_env, "legacy") == 0 ? "legacy CUDA-core kernels"
                                                                              : "4-bit on tensor cores",
                env("VLMCHECK_CUDA_GEMV"), env("VLMCHECK_CUDA_GEMV_DENSE"), env("VLMCHECK_CUDA_GEMV_PERSIST"),
                env("VLMCHECK_CUDA_GEMV_WARPS"), env("VLMCHECK_CUDA_GEMV_CLUSTER"));
    const double copy_gbs = cuda::probe_copy_bandwidth_gbs();
    const double bf16_gflops = cuda::probe_bf16_matmul_gflops();
    std::printf("probe: device copy %.0f GB/s (read + written), cuBLASLt bf16 8192^3 %.0f GFLOP/s\n\n", copy_gbs,
                bf16_gflops);

    std::mt19937 rng(7);
    const auto& table = cuda::kernel_table();
    if (decode_attention_only) {
      bench_decode_attention(table, copy_gbs, false, rng);
      cuda::synchronize();
      return 0;
    }
    const std::string only = quant_only && argc > 2 ? argv[2] : "";
    if (!attention_only) bench_linears(table, copy_gbs, bf16_gflops, quick, quant_only, only, rng);
    if (!attention_only && !quick && !quant_only) bench_tower_gemms(table, bf16_gflops, rng);
    if (quant_only) {
      cuda::synchronize();
      return 0;
    }
    // Attention. Decode (one query) over 2k/4k/16k cached keys at the Qwen2.5-VL-3B text shape (16
    // heads, 2 kv heads, head_dim 128); causal prefill of 2048 tokens at that shape and of 16384 tokens
    // at the Qwen2.5-VL-7B shape (28 heads, 4 kv heads), with bf16_matmul off (f32 CUDA cores) and on
    // (bf16 tensor cores). Then the other tensor-core shapes: Gemma 3 4B's text attention (8 / 4 heads of 256),
    // and the Qwen2.5-VL tower on a 16k-token photo (62,208 patches, 16 heads of 80, non-causal): its 4
    // full-attention blocks, and its windowed blocks as one call of 972 windows x 16 heads of 64 patches;
    // SigLIP so400m's attention (Gemma 3: 4096 patches, 16 heads of 72).
    // TFLOP/s counts 4 · head_dim FLOPs (QK and PV) per visible (query, key, head).
    {
      struct AttnRow {
        const char* what;
        int64_t nh, nkv, nq, nk;
        bool bf16;
        int64_t hd = 128;
        bool causal = true;
      };
      std::vector<AttnRow> rows = {{"decode, 3B shape", 16, 2, 1, 2048, false},
                                   {"decode, 3B shape", 16, 2, 1, 4096, false},
                                   {"decode, 3B shape", 16, 2, 1, 16384, false}};
      if (attention_only) rows.clear();
      if (!quick)
        rows.insert(rows.end(), {{"prefill causal, 3B shape", 16, 2, 2048, 2048, false},
                                 {"prefill causal, 3B shape", 16, 2, 2048, 2048, true},
                                 {"prefill causal, 7B shape", 28, 4, 16384, 16384, false},
                                 {"prefill causal, 7B shape", 28, 4, 16384, 16384, true},
                                 // The 16k photo's LM prefill runs in 2048-token chunks: the last one and a middle one.
                                 {"prefill chunk causal, 7B shape", 28, 4, 2048, 16384, true},
                                 {"prefill chunk causal, 7B shape", 28, 4, 2048, 8192, true},
                                 {"prefill causal, Gemma 3 4B shape", 8, 4, 2048, 2048, true, 256},
                                 {"vision windows, Qwen2.5-VL tower", 972 * 16, 972 * 16, 64, 64, true, 80, false},
                                 {"vision full, Qwen2.5-VL tower", 16, 16, 62208, 62208, true, 80, false},
                                 // SigLIP so400m (Gemma 3's tower, 896 px: 4096 patches), head_dim 72 padded to 80.
                                 {"vision full, SigLIP so400m", 16, 16, 4096, 4096, true, 72, false}});
      // `--attention TEXT`: only the rows whose name contains TEXT (e.g. "vision full", for a profiler).
      const std::string row_filter = attention_only && argc > 2 ? argv[2] : "";
      if (attention_only)
        rows.erase(std::remove_if(rows.begin(), rows.end(),
                                  [&](const AttnRow& r) {
                                    return !r.bf16 || std::string(r.what).find(row_filter) == std::string::npos;
                                  }),
                   rows.end());
      auto dev = [&](int64_t n) {
        std::vector<float> h(static_cast<size_t>(std::min<int64_t>(n, int64_t{1} << 22)));
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        for (float& v : h) v = u(rng);
        const size_t bytes = static_cast<size_t>(n) * 4;
        void* p = cuda::device_alloc(bytes, MemCategory::kScratch);
        for (size_t off = 0; off < bytes; off += h.size() * 4)
          cuda::copy(static_cast<char*>(p) + off, Device::kCuda, h.data(), Device::kCpu,
                     std::min(h.size() * 4, bytes - off));
        return std::shared_ptr<void>(p, [bytes](void* q) { cuda::device_free(q, bytes, MemCategory::kScratch); });
      };
      std::printf("\n| attention | heads / kv heads | queries x keys | bf16_matmul | median us | TFLOP/s | "
                  "%% of bf16 probe |\n|---|---|---|---|---|---|---|\n");
      for (const AttnRow& r : rows) {
        const int64_t hd = r.hd;
        auto q = dev(r.nq * r.nh * hd), k = dev(r.nk * r.nkv * hd), v = dev(r.nk * r.nkv * hd),
             o = dev(r.nq * r.nh * hd);
        std::vector<int64_t> kpos(static_cast<size_t>(r.nk));
        for (int64_t j = 0; j < r.nk; ++j) kpos[j] = j;
        ops::AttentionMask mask;
        mask.bf16_matmul = r.bf16;
        mask.causal = r.causal;
        const int64_t q0 = r.nk - r.nq;
        auto run = [&] {
          table.attention(static_cast<float*>(q.get()), r.nq, q0, static_cast<float*>(k.get()),
                          static_cast<float*>(v.get()), kpos.data(), r.nk, r.nh, r.nkv, hd,
                          1.0f / std::sqrt(static_cast<float>(hd)), 0.0f, mask,
                          static_cast<float*>(o.get()));
        };
        const bool slow = r.nq > 4096 && !r.bf16;  // f32 16k prefill: ~0.3 s per call
        const double t = r.nq == 1 ? time_median(run, 5, quick ? 5 : 9, 20)
                                   : slow ? time_median(run, 1, 2, 1) : time_median(run, 1, 5, 1);
        double pairs = 0;  // visible (query, key) pairs under the causal mask
        for (int64_t i = 0; i < r.nq; ++i) pairs += static_cast<double>(r.causal ? q0 + i + 1 : r.nk);
        const double tflops = 4.0 * pairs * r.nh * hd / t / 1e12;
        std::printf("| %s, hd %lld | %lld / %lld | %lldx%lld | %s | %.1f | %.1f | %.1f%% |\n", r.what,
                    static_cast<long long>(hd),
                    static_cast<long long>(r.nh), static_cast<long long>(r.nkv), static_cast<long long>(r.nq),
                    static_cast<long long>(r.nk), r.bf16 ? "on" : "off", t * 1e6, tflops,
                    100.0 * tflops * 1e3 / bf16_gflops);
        std::fflush(stdout);
      }
    }
    if (!attention_only && !quant_only) bench_decode_attention(table, copy_gbs, quick, rng);
    cuda::synchronize();
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_cuda_kernels: %s\n", e.what());
    return 1;
  }
#else
  (void)quick;
#endif
  return 0;
}
