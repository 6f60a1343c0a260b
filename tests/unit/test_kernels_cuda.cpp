// CUDA backend conformance: every op of the kernel table (cpu::kKernelOps) has cases here that draw
// fresh random inputs, run the op through cuda::kernel_table() on device buffers (outputs poisoned
// with NaN first, so an element the kernel forgot to write fails), copy the result back and compare
// it with the CPU scalar reference (ops::force_scalar_kernels(true)) by NMSE against the op's bound:
//   f32 math (norms, rope, activations, softmax, attention, f32/f16/bf16-weight GEMV, quantized
//   linear, f32 GEMM)                                  1e-11 .. 1e-14 (summation order, libm ulps)
//   f16-weight GEMM (x rounded to f16 for cuBLASLt)   1e-7
//   bf16-weight and quantized GEMM (x, and dequantized weights, rounded to bf16 for cuBLASLt) 1e-5
//   attention with bf16_matmul, prefill on tensor cores (q, k, v, p rounded to bf16)   1e-4
//     (expected (2/3)u²(1 + scale²·hd·E[q²]E[k²]) with u = 2^-9: 1.1e-5 at hd 128, 2.1e-5 at 256;
//     see kBf16AttentionNmse); f32 attention past 8000 keys: 1e-11 · nk / 8000 (the reference's
//     sequential f32 sums drift like sqrt(nk) ulps)
//   KV-cache quantization (kv_quantize codes / scales / biases, kv_dequantize)   0: bit-identical
// An op without a case fails EveryOpHasACase, which runs without a GPU too; the GPU tests skip with
// the reason when no CUDA device is usable (CPU-only CI). Also: the allocator's size classes, cache
// and MemoryTracker reports, copies, copy_2d, and typed errors for unsupported shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <tuple>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "test_kernels_util.h"

using namespace vlm;
using namespace vlm::test;
namespace cuda = vlm::ops::cuda;

namespace {

// ---- device helpers -------------------------------------------------------------------------------
// A device copy of host bytes, freed (to the allocator's cache) with its last reference.
std::shared_ptr<void> device_copy(const void* host, size_t bytes) {
  void* p = cuda::device_alloc(bytes, MemCategory::kScratch);
  std::shared_ptr<void> keep(p, [bytes](void* q) { cuda::device_free(q, bytes, MemCategory::kScratch); });
  if (bytes > 0) cuda::copy(p, Device::kCuda, host, Device::kCpu, bytes);
  return keep;
}

Tensor gpu_tensor(const Tensor& t) {
  if (!t.defined()) return t;
  std::shared_ptr<void> p = device_copy(t.raw(), t.nbytes());
  return Tensor::borrow(p.get(), t.shape(), t.dtype(), p, Device::kCuda);
}

ops::Weight gpu_weight(const ops::Weight& w) {
  ops::Weight g = w;
  if (w.quantized) {
    g.quant.packed = gpu_tensor(w.quant.packed);
    g.quant.scales = gpu_tensor(w.quant.scales);
    g.quant.biases = gpu_tensor(w.quant.biases);
  } else {
    g.dense = gpu_tensor(w.dense);
  }
  return g;
}

// A float buffer on the device; `poison` fills it with NaN (every element must be overwritten).
struct DeviceFloats {
  std::shared_ptr<void> mem;
  size_t n;
  DeviceFloats(const std::vector<float>& v) : mem(device_copy(v.data(), v.size() * 4)), n(v.size()) {}
  static DeviceFloats poison(size_t n) {
    return DeviceFloats(std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()));
  }
  float* ptr() const { return static_cast<float*>(mem.get()); }
  std::vector<float> host() const {
    std::vector<float> v(n);
    cuda::copy(v.data(), Device::kCpu, mem.get(), Device::kCuda, n * 4);
    return v;
  }
};

using Vec = std::shared_ptr<std::vector<float>>;
Vec vec(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  return std::make_shared<std::vector<float>>(random_vec(rng, n, lo, hi));
}

struct Case {
  std::string op, what;
  double tol;
  std::function<std::vector<float>()> cpu;  // scalar reference on host data
  std::function<std::vector<float>()> gpu;  // the CUDA table entry on device copies
};

const ops::cpu::KernelTable& table() { return cuda::kernel_table(); }

// A linear case: y [n, rows] through ops::linear on the host (the scalar reference) and through the
// CUDA table entry on device copies.
Case linear_case(const std::string& what, double tol, const ops::Weight& w, const Vec& x, int64_t n,
                 const Tensor& bias) {
  return {"linear", what, tol,
          [w, x, n, bias] {
            std::vector<float> y(static_cast<size_t>(n * w.rows()));
            ops::linear(x->data(), n, w, bias, y.data());
            return y;
          },
          [w, x, n, bias] {
            ops::Weight gw = gpu_weight(w);
            DeviceFloats gx(*x), gy = DeviceFloats::poison(static_cast<size_t>(n * w.rows()));
            table().linear(gx.ptr(), n, gw, gpu_tensor(bias), gy.ptr());
            return gy.host();
          }};
}

// A linear_group case: the members' outputs back to back, [n, rows_i] each; the CPU side through the
// scalar reference member by member (run_linear_group), the GPU side as one table().linear_group call.
Case linear_group_case(const std::string& what, double tol, const std::vector<ops::Weight>& ws,
                       const std::vector<Tensor>& biases, const Vec& x, int64_t n) {
  size_t total = 0;
  for (const ops::Weight& w : ws) total += static_cast<size_t>(n * w.rows());
  return {"linear_group", what, tol,
          [ws, biases, x, n, total] {
            std::vector<float> y(total);
            run_linear_group(ws, biases, x->data(), n, [&](size_t) { return y.data(); });
            return y;
          },
          [ws, biases, x, n, total] {
            std::vector<ops::Weight> gws;
            std::vector<Tensor> gbs;
            for (size_t i = 0; i < ws.size(); ++i) {
              gws.push_back(gpu_weight(ws[i]));
              gbs.push_back(gpu_tensor(biases[i]));
            }
            DeviceFloats gx(*x), gy = DeviceFloats::poison(total);
            std::vector<ops::LinearOut> outs;
            size_t at = 0;
            for (size_t i = 0; i < ws.size(); ++i) {
              outs.push_back({&gws[i], &gbs[i], gy.ptr() + at});
              at += static_cast<size_t>(n * ws[i].rows());
            }
            table().linear_group(gx.ptr(), n, outs.data(), static_cast<int>(outs.size()));
            return gy.host();
          }};
}

// A linear_group case in the fused forms (ops.h LinearOut): every member reads rms_norm(x, norm_w,
// 1e-6, offset); members flagged in `acc` add into y, which starts as y0 (the others' outputs are
// poisoned). The CPU side is ops::linear_group on the host (composed from the scalar reference).
Case fused_group_case(const std::string& what, double tol, const std::vector<ops::Weight>& ws,
                      const std::vector<Tensor>& biases, const Vec& x, int64_t n, const Tensor& norm_w, float offset,
                      const std::vector<bool>& acc, const Vec& y0) {
  size_t total = 0;
  for (const ops::Weight& w : ws) total += static_cast<size_t>(n * w.rows());
  // The starting y: y0's values for accumulating members, NaN for the rest.
  std::vector<float> start(total, std::numeric_limits<float>::quiet_NaN());
  for (size_t i = 0, at = 0; i < ws.size(); at += static_cast<size_t>(n * ws[i].rows()), ++i)
    if (acc[i]) std::copy(y0->begin() + at, y0->begin() + at + n * ws[i].rows(), start.begin() + at);
  auto outs_for = [n, acc](const std::vector<ops::Weight>& w, const std::vector<Tensor>& b, float* y,
                           const ops::LinearNorm* norm) {
    std::vector<ops::LinearOut> outs;
    for (size_t i = 0, at = 0; i < w.size(); at += static_cast<size_t>(n * w[i].rows()), ++i)
      outs.push_back({&w[i], &b[i], y + at, static_cast<bool>(acc[i]), norm});
    return outs;
  };
  return {"linear_group", what, tol,
          [ws, biases, x, n, norm_w, offset, start, outs_for] {
            std::vector<float> y = start;
            const ops::LinearNorm norm{&norm_w, 1e-6f, offset};
            std::vector<ops::LinearOut> outs = outs_for(ws, biases, y.data(), &norm);
            ops::linear_group(x->data(), n, outs.data(), static_cast<int>(outs.size()));
            return y;
          },
          [ws, biases, x, n, norm_w, offset, start, outs_for] {
            std::vector<ops::Weight> gws;
            std::vector<Tensor> gbs;
            for (size_t i = 0; i < ws.size(); ++i) {
              gws.push_back(gpu_weight(ws[i]));
              gbs.push_back(gpu_tensor(biases[i]));
            }
            const Tensor gnorm = gpu_tensor(norm_w);
            const ops::LinearNorm norm{&gnorm, 1e-6f, offset};
            DeviceFloats gx(*x), gy(start);
            std::vector<ops::LinearOut> outs = outs_for(gws, gbs, gy.ptr(), &norm);
            table().linear_group(gx.ptr(), n, outs.data(), static_cast<int>(outs.size()));
            return gy.host();
          }};
}

// Same-shape elementwise op: `cpu_fn` mutates a host copy, `gpu_fn` a device copy.
Case inplace_case(std::string op, std::string what, double tol, Vec x, std::function<void(float*, int64_t)> cpu_fn,
                  std::function<void(float*, int64_t)> gpu_fn) {
  return {op, what, tol,
          [x, cpu_fn] {
            std::vector<float> y = *x;
            cpu_fn(y.data(), static_cast<int64_t>(y.size()));
            return y;
          },
          [x, gpu_fn] {
            DeviceFloats d(*x);
            gpu_fn(d.ptr(), static_cast<int64_t>(x->size()));
            return d.host();
          }};
}

void add_linear_cases(std::vector<Case>& cases, std::mt19937& rng) {
  std::vector<std::pair<std::string, ops::Weight>> weights;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    weights.emplace_back(std::string(dtype_name(dt)) + " 200x576", dense_weight(random_tensor(rng, {200, 576}, dt)));
  weights.emplace_back("bf16 45x200", dense_weight(random_tensor(rng, {45, 200}, DType::kBF16)));
  weights.emplace_back("f16 odd 33x203", dense_weight(random_tensor(rng, {33, 203}, DType::kF16)));
  weights.emplace_back("f32 odd 19x37", dense_weight(random_tensor(rng, {19, 37}, DType::kF32)));
  weights.emplace_back("bf16 300x5632", dense_weight(random_tensor(rng, {300, 5632}, DType::kBF16)));
  // `in` not a multiple of 8 (the Qwen2.5-VL tower's down_proj, in 3420): cuBLASLt with 8-byte-aligned columns.
  weights.emplace_back("bf16 64x3420", dense_weight(random_tensor(rng, {64, 3420}, DType::kBF16)));
  weights.emplace_back("f32 32x1178", dense_weight(random_tensor(rng, {32, 1178}, DType::kF32)));
  weights.emplace_back("q4g64 300x5632", random_quantized(rng, 300, 5632, 4, 64, DType::kBF16));
  // Row lengths where the decode GEMV splits each row over 2 warps (bf16: 256 16-byte units; 4-bit:
  // 112 32-value units, the 7B hidden size).
  weights.emplace_back("bf16 40x2048", dense_weight(random_tensor(rng, {40, 2048}, DType::kBF16)));
  weights.emplace_back("q4g64 37x3584", random_quantized(rng, 37, 3584, 4, 64, DType::kBF16));
  weights.emplace_back("q4g64 f16 scales", random_quantized(rng, 66, 256, 4, 64, DType::kF16));
  weights.emplace_back("q3g32 f32 scales", random_quantized(rng, 66, 256, 3, 32, DType::kF32));
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int group : {32, 64, 128})
      weights.emplace_back("q" + std::to_string(bits) + "g" + std::to_string(group) + " 70x640",
                           random_quantized(rng, 70, 640, bits, group, DType::kBF16));
  for (auto& [name, w] : weights) {
    const bool big = w.cols() > 1000;
    for (int64_t n : big ? std::vector<int64_t>{1, 5, 37} : std::vector<int64_t>{1, 3, 7, 37, 131}) {
      Vec x = vec(rng, static_cast<size_t>(n * w.cols()));
      Tensor bias;
      if (n == 3) bias = random_tensor(rng, {w.rows()}, DType::kF32);
      if (n == 37) bias = random_tensor(rng, {w.rows()}, DType::kBF16);
      // GEMM (n >= 8) on 16-bit dense weights rounds x to the weight's dtype for cuBLASLt; on quantized
      // weights it rounds x and the dequantized weights to bf16.
      double tol = 1e-11;
      if (n >= 8 && (w.quantized || w.dense.dtype() == DType::kBF16)) tol = 1e-5;
      if (!w.quantized && n >= 8 && w.dense.dtype() == DType::kF16) tol = 1e-7;
      const std::string what = name + " n=" + std::to_string(n) + (bias.defined() ? " +bias" : "");
      cases.push_back(linear_case(what, tol, w, x, n, bias));
    }
  }
  // Views: a weight that starts one row into its buffer (16-byte but not 256-byte aligned: cuBLASLt
  // must be told) and x one float into its buffer (the vector loads must not be used).
  {
    Tensor full = random_tensor(rng, {45, 200}, DType::kBF16);
    ops::Weight host_view = dense_weight(full.slice_rows(1, 45));
    for (int64_t n : {1, 37}) {
      Vec x = vec(rng, static_cast<size_t>(n * 200 + 1));
      const double tol = n >= 8 ? 1e-5 : 1e-11;
      cases.push_back({"linear", "bf16 row view, x at +1 float, n=" + std::to_string(n), tol,
                       [host_view, x, n] {
                         std::vector<float> y(static_cast<size_t>(n * 44));
                         ops::linear(x->data() + 1, n, host_view, Tensor(), y.data());
                         return y;
                       },
                       [full, x, n] {
                         ops::Weight gw = dense_weight(gpu_tensor(full).slice_rows(1, 45));
                         DeviceFloats gx(*x), gy = DeviceFloats::poison(static_cast<size_t>(n * 44));
                         table().linear(gx.ptr() + 1, n, gw, Tensor(), gy.ptr());
                         return gy.host();
                       }});
    }
    Vec x = vec(rng, static_cast<size_t>(37 * 200));
    cases.push_back({"linear", "bf16 row view, n=37 (cuBLASLt on a 16-byte aligned A)", 1e-5,
                     [host_view, x] {
                       std::vector<float> y(37 * 44);
                       ops::linear(x->data(), 37, host_view, Tensor(), y.data());
                       return y;
                     },
                     [full, x] {
                       ops::Weight gw = dense_weight(gpu_tensor(full).slice_rows(1, 45));
                       DeviceFloats gx(*x), gy = DeviceFloats::poison(37 * 44);
                       table().linear(gx.ptr(), 37, gw, Tensor(), gy.ptr());
                       return gy.host();
                     }});
  }
  // linear_group: one format per group (decode runs it as one pass) and a mixed group, n = 1, 3, 37.
  {
    auto bf = [&](int64_t rows) { return dense_weight(random_tensor(rng, {rows, 1024}, DType::kBF16)); };
    auto q4 = [&](int64_t rows) { return random_quantized(rng, rows, 1024, 4, 64, DType::kBF16); };
    std::vector<std::pair<std::string, std::vector<ops::Weight>>> groups = {
        {"bf16 q/k/v", {bf(1024), bf(256), bf(256)}},
        {"q4g64 gate/up", {q4(2816), q4(2816)}},
        {"mixed f32/q4/bf16", {dense_weight(random_tensor(rng, {200, 1024}, DType::kF32)), q4(256), bf(64)}}};
    for (auto& [name, ws] : groups)
      for (int64_t n : {1, 3, 37}) {
        Vec x = vec(rng, static_cast<size_t>(n * 1024));
        std::vector<Tensor> biases;
        for (const ops::Weight& w : ws) biases.push_back(n == 3 ? random_tensor(rng, {w.rows()}, DType::kF32) : Tensor());
        const bool gemm16 = n >= 8 && std::any_of(ws.begin(), ws.end(), [](const ops::Weight& w) {
                              return w.quantized || w.dense.dtype() != DType::kF32;
                            });
        cases.push_back(linear_group_case(name + " n=" + std::to_string(n), gemm16 ? 1e-5 : 1e-11, ws, biases, x, n));
      }
  }
  // linear_group's fused forms: q/k/v-like members reading rms_norm(x) (plain and Gemma offset), one
  // of them adding into y. Dense GEMVs normalize x themselves (n = 1..5, block and streaming kernels),
  // 4-bit ones (mma and CUDA-core) read a materialized norm and add on store; n = 37 is the GEMM path
  // (materialized norm, temporary + add).
  {
    struct Fused {
      std::string name;
      std::vector<ops::Weight> ws;
      int64_t cols;
    };
    auto dense = [&](int64_t rows, int64_t cols, DType dt) { return dense_weight(random_tensor(rng, {rows, cols}, dt)); };
    std::vector<Fused> fused = {
        {"bf16 q/k/v", {dense(1024, 1024, DType::kBF16), dense(256, 1024, DType::kBF16), dense(256, 1024, DType::kBF16)}, 1024},
        {"f16 o-like", {dense(512, 2048, DType::kF16)}, 2048},
        {"f32 gate/up", {dense(300, 512, DType::kF32), dense(300, 512, DType::kF32)}, 512},
        {"bf16 head-like 65536 rows (streaming)", {dense(65536, 256, DType::kBF16)}, 256},
        {"q4g64 gate/up", {random_quantized(rng, 512, 1024, 4, 64, DType::kBF16), random_quantized(rng, 512, 1024, 4, 64, DType::kBF16)}, 1024},
        {"q8g32 q/k", {random_quantized(rng, 96, 512, 8, 32, DType::kBF16), random_quantized(rng, 64, 512, 8, 32, DType::kBF16)}, 512}};
    for (Fused& f : fused)
      for (int64_t n : {1, 3, 4, 5, 37}) {
        if (f.ws[0].rows() >= 65536 && n > 3) continue;  // the head runs one token (or a few)
        const float offset = n == 3 ? 1.0f : 0.0f;
        Vec x = vec(rng, static_cast<size_t>(n * f.cols), -3.0f, 3.0f);
        std::vector<Tensor> biases;
        std::vector<bool> acc;
        size_t total = 0;
        for (size_t i = 0; i < f.ws.size(); ++i) {
          biases.push_back(i == 0 ? random_tensor(rng, {f.ws[i].rows()}, DType::kBF16) : Tensor());
          acc.push_back(i + 1 == f.ws.size());  // the last member accumulates
          total += static_cast<size_t>(n * f.ws[i].rows());
        }
        const Tensor norm_w = random_tensor(rng, {f.cols}, n == 4 ? DType::kF32 : DType::kBF16, 0.5f, 1.5f);
        const bool gemm16 = n >= 8 && (f.ws[0].quantized || f.ws[0].dense.dtype() != DType::kF32);
        cases.push_back(fused_group_case("fused norm+accumulate " + f.name + " n=" + std::to_string(n),
                                         gemm16 ? 1e-5 : 1e-11, f.ws, biases, x, n, norm_w, offset, acc,
                                         vec(rng, total)));
      }
  }
  // Embedding over a few of the same tables.
  for (auto& [name, w] : weights) {
    if (w.quantized && name.find("g64 70") == std::string::npos && name.find("scales") == std::string::npos) continue;
    std::vector<int32_t> ids = {0, static_cast<int32_t>(w.rows() - 1), 5, 5, 17};
    cases.push_back({"embedding", name, 1e-14,
                     [w, ids] {
                       std::vector<float> out(ids.size() * w.cols());
                       ops::embedding(w, ids.data(), static_cast<int64_t>(ids.size()), 1.5f, out.data());
                       return out;
                     },
                     [w, ids] {
                       ops::Weight gw = gpu_weight(w);
                       DeviceFloats out = DeviceFloats::poison(ids.size() * w.cols());
                       table().embedding(gw, ids.data(), static_cast<int64_t>(ids.size()), 1.5f, out.ptr());
                       return out.host();
                     }});
  }
}

// The 4-bit tensor-core GEMV (linear_gemv_mma.cu; cols a multiple of 128): every group size with
// f16/bf16/f32 scales and biases, n = 1..7 (chunks of 2 tokens; launches of at most 2048 rows keep
// chunks of 4 tokens on the CUDA-core kernel, so n = 4..7 run both), row counts that are not a
// multiple of its 32-row blocks, rows split over 1..4 warps and thread-block clusters (3, 16 and 28
// rounds of 128 values, unevenly), q/k/v groups in one launch, and x with a large dynamic range (it
// is put on a per-group fixed-point grid: |x| from 2^-30 to 2^30, an all-zero group, one huge value
// among tiny ones), and launches with more row groups than fit on the GPU at once (persistent
// blocks, also across a group's members). Also a 4-bit weight whose cols are not a multiple of 128,
// which stays on the CUDA-core kernel. Own rng, so the other cases' inputs do not depend on these.
void add_quant_gemv_cases(std::vector<Case>& cases) {
  std::mt19937 rng(7411);
  // x [n, cols]: uniform(-1, 1) times 2^k, k uniform in [-30, 30]; group 0 of token 0 all zeros; in
  // the last 128 columns of each token one value of 2^30 among values below 2^-12.
  auto wide_x = [&](int64_t n, int64_t cols) {
    std::vector<float> v = random_vec(rng, static_cast<size_t>(n * cols));
    std::uniform_int_distribution<int> e(-30, 30);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float& f : v) f = std::ldexp(f, e(rng));
    for (int64_t c = 0; c < 32; ++c) v[static_cast<size_t>(c)] = 0.0f;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = cols - 128; c < cols; ++c)
        v[static_cast<size_t>(t * cols + c)] = c == cols - 77 ? std::ldexp(1.0f, 30) : std::ldexp(u(rng), -12);
    return std::make_shared<std::vector<float>>(std::move(v));
  };
  auto add = [&](const std::string& name, const ops::Weight& w, int64_t n, Vec x, Tensor bias) {
    const std::string what = name + " n=" + std::to_string(n) + (bias.defined() ? " +bias" : "");
    cases.push_back(linear_case(what, 1e-11, w, x, n, bias));
  };
  for (int group : {32, 64, 128})
    for (DType sd : {DType::kF16, DType::kBF16, DType::kF32}) {
      const std::string name = "mma q4g" + std::to_string(group) + " " + dtype_name(sd) + " scales 45x384";
      ops::Weight w = random_quantized(rng, 45, 384, 4, group, sd);
      for (int64_t n = 1; n <= 7; ++n) {
        Tensor bias = n == 2 || n == 5 ? random_tensor(rng, {45}, n == 2 ? DType::kF32 : DType::kBF16) : Tensor();
        add(name, w, n, n % 2 ? vec(rng, static_cast<size_t>(n * 384)) : wide_x(n, 384), bias);
      }
    }
  for (auto [rows, cols, group] : {std::tuple<int64_t, int64_t, int>{77, 2048, 64}, {33, 3584, 128}, {100, 2048, 32}}) {
    ops::Weight w = random_quantized(rng, rows, cols, 4, group, DType::kBF16);
    const std::string name = "mma q4g" + std::to_string(group) + " " + std::to_string(rows) + "x" + std::to_string(cols);
    for (int64_t n : {1, 2, 3, 7}) add(name, w, n, n == 3 ? wide_x(n, cols) : vec(rng, static_cast<size_t>(n * cols)), Tensor());
  }
  {
    ops::Weight w = random_quantized(rng, 40, 224, 4, 32, DType::kBF16);  // 224 = 1.75 rounds: CUDA cores
    for (int64_t n : {1, 4}) add("q4g32 40x224 (not a multiple of 128)", w, n, vec(rng, static_cast<size_t>(n * 224)), Tensor());
  }
  // More 32-row groups than the GPU holds blocks at once (H100/H200: 1000-1200 at 512 cols): persistent
  // blocks walk several row groups, the ring streaming across them, x staged once per block. One
  // weight, and a gate/up-like group whose members a block's row groups straddle (biases, n = 2 / 5).
  {
    ops::Weight w = random_quantized(rng, 60000, 512, 4, 64, DType::kBF16);
    for (int64_t n : {1, 2, 5})
      add("mma q4g64 60000x512 (persistent blocks)", w, n, vec(rng, static_cast<size_t>(n * 512)), Tensor());
    std::vector<ops::Weight> gu = {random_quantized(rng, 40000, 512, 4, 32, DType::kF16),
                                   random_quantized(rng, 24011, 512, 4, 32, DType::kF16)};
    for (int64_t n : {1, 2, 5}) {
      std::vector<Tensor> biases;
      for (const ops::Weight& w : gu)
        biases.push_back(n == 1 ? Tensor() : random_tensor(rng, {w.rows()}, DType::kF32));
      Vec x = n == 2 ? wide_x(n, 512) : vec(rng, static_cast<size_t>(n * 512));
      const std::string name = "mma q4g32 f16 40000+24011 rows (persistent) n=" + std::to_string(n);
      cases.push_back(linear_group_case(name, 1e-11, gu, biases, x, n));
    }
  }
  // A 7B down_proj (3584 x 18944, 148 rounds): 112 row groups, fewer than the SMs, so pairs of
  // 8-warp blocks split K, ten rounds per warp, reduced through global memory by the last block of
  // each pair (the split-K test also runs it as thread-block clusters, reduced through distributed
  // shared memory); at 1-2 tokens a block's digits and rings (~160 KB) leave room for one block per
  // SM, so the 224 blocks run in two waves. wide_x at one token.
  {
    ops::Weight w = random_quantized(rng, 3584, 18944, 4, 64, DType::kBF16);
    for (int64_t n : {1, 2})
      add("mma q4g64 3584x18944 (a 7B down_proj: clusters over two waves)", w, n,
          n == 1 ? wide_x(n, 18944) : vec(rng, static_cast<size_t>(n * 18944)), Tensor());
  }
  // q/k/v as one launch: three members, biases on all, rows not multiples of 32.
  std::vector<ops::Weight> ws = {random_quantized(rng, 96, 512, 4, 128, DType::kF16),
                                 random_quantized(rng, 40, 512, 4, 128, DType::kF16),
                                 random_quantized(rng, 40, 512, 4, 128, DType::kF16)};
  for (int64_t n : {1, 2, 5}) {
    std::vector<Tensor> biases;
    for (const ops::Weight& w : ws) biases.push_back(random_tensor(rng, {w.rows()}, DType::kBF16));
    Vec x = n == 2 ? wide_x(n, 512) : vec(rng, static_cast<size_t>(n * 512));
    cases.push_back(linear_group_case("mma q4g128 f16 q/k/v n=" + std::to_string(n), 1e-11, ws, biases, x, n));
  }
  // Split-K shapes (the global-memory reduction): rows that are not a multiple of 32 with 86 rounds
  // (a 3B down_proj's 11008 inputs: 3 row groups, two global splits by default) and 11 rounds at group
  // 32 with f32 scales; the split test below runs every "mma" case with 1, 2, 3, 8 and 64 splits.
  {
    ops::Weight w = random_quantized(rng, 95, 11008, 4, 64, DType::kBF16);
    for (int64_t n : {1, 2, 3})
      add("mma q4g64 95x11008 (split-K)", w, n, n == 1 ? wide_x(n, 11008) : vec(rng, static_cast<size_t>(n * 11008)),
          n == 2 ? random_tensor(rng, {95}, DType::kBF16) : Tensor());
    ops::Weight w32 = random_quantized(rng, 70, 1408, 4, 32, DType::kF32);
    for (int64_t n : {1, 2})
      add("mma q4g32 f32 scales 70x1408 (split-K)", w32, n, vec(rng, static_cast<size_t>(n * 1408)), Tensor());
  }
  // The fused forms natively on this kernel (ops.h LinearOut): every member reads rms_norm(x), which
  // the kernel forms while staging x, and the last one adds into y; long rows (global split-K),
  // clusters, persistent blocks, a q/k/v group, rows not a multiple of 32; 1, 2, 3 and 5 tokens (5:
  // chunks 2 + 2 + 1, all on this kernel since the CUDA-core one cannot normalize); Gemma's offset at
  // n = 3; f32, f16 and bf16 norm weights; wide_x at n = 2. Named "mma": the split test runs them too.
  {
    struct Fused {
      std::string name;
      std::vector<ops::Weight> ws;
      int64_t cols;
    };
    std::vector<Fused> fused = {
        {"q4g64 95x11008 (split-K)", {random_quantized(rng, 95, 11008, 4, 64, DType::kBF16)}, 11008},
        {"q4g128 f16 q/k/v 96+40+40x512",
         {random_quantized(rng, 96, 512, 4, 128, DType::kF16), random_quantized(rng, 40, 512, 4, 128, DType::kF16),
          random_quantized(rng, 40, 512, 4, 128, DType::kF16)},
         512},
        {"q4g32 f32 scales 70+33x1408",
         {random_quantized(rng, 70, 1408, 4, 32, DType::kF32), random_quantized(rng, 33, 1408, 4, 32, DType::kF32)},
         1408},
        {"q4g64 60000x512 (persistent)", {random_quantized(rng, 60000, 512, 4, 64, DType::kBF16)}, 512}};
    for (Fused& f : fused)
      for (int64_t n : {1, 2, 3, 5}) {
        const float offset = n == 3 ? 1.0f : 0.0f;
        const DType nd = n == 1 ? DType::kF32 : n == 2 ? DType::kF16 : DType::kBF16;
        Vec x = n == 2 ? wide_x(n, f.cols) : vec(rng, static_cast<size_t>(n * f.cols), -3.0f, 3.0f);
        std::vector<Tensor> biases;
        std::vector<bool> acc;
        size_t total = 0;
        for (size_t i = 0; i < f.ws.size(); ++i) {
          biases.push_back(i == 0 ? random_tensor(rng, {f.ws[i].rows()}, DType::kBF16) : Tensor());
          acc.push_back(i + 1 == f.ws.size());
          total += static_cast<size_t>(n * f.ws[i].rows());
        }
        const Tensor norm_w = random_tensor(rng, {f.cols}, nd, 0.5f, 1.5f);
        cases.push_back(fused_group_case("mma fused norm+accumulate " + f.name + " n=" + std::to_string(n), 1e-11,
                                         f.ws, biases, x, n, norm_w, offset, acc, vec(rng, total)));
      }
  }
}

void add_norm_rope_cases(std::vector<Case>& cases, std::mt19937& rng) {
  // 5003: more values than threads per block (1024), so each thread's loops take several steps.
  for (int64_t d : {576, 1001, 5003}) {
    Vec x = vec(rng, static_cast<size_t>(9 * d), -4.0f, 4.0f);
    for (DType wt : {DType::kBF16, DType::kF32}) {
      Tensor w = random_tensor(rng, {d}, wt);
      for (float offset : {0.0f, 1.0f})
        cases.push_back({"rms_norm", "d=" + std::to_string(d) + " w " + dtype_name(wt) + " offset " +
                                         std::to_string(static_cast<int>(offset)),
                         1e-12,
                         [x, w, d, offset] {
                           std::vector<float> y(x->size());
                           ops::rms_norm(x->data(), 9, d, w, 1e-6f, offset, y.data());
                           return y;
                         },
                         [x, w, d, offset] {  // in place on the device (allowed by ops.h)
                           DeviceFloats g(*x);
                           table().rms_norm(g.ptr(), 9, d, gpu_tensor(w), 1e-6f, offset, g.ptr());
                           return g.host();
                         }});
    }
    {  // add_rms_norm: returns the updated x followed by y; y aliases r in the second variant.
      Vec r = vec(rng, static_cast<size_t>(9 * d), -4.0f, 4.0f);
      Tensor w = random_tensor(rng, {d}, DType::kBF16);
      for (bool y_is_r : {false, true})
        cases.push_back({"add_rms_norm", "d=" + std::to_string(d) + (y_is_r ? " y=r" : ""), 1e-12,
                         [x, r, w, d, y_is_r] {
                           std::vector<float> xs = *x, rs = *r, y(x->size());
                           float* out = y_is_r ? rs.data() : y.data();
                           ops::add_rms_norm(xs.data(), rs.data(), 9, d, w, 1e-6f, 1.0f, out);
                           xs.insert(xs.end(), out, out + x->size());
                           return xs;
                         },
                         [x, r, w, d, y_is_r] {
                           DeviceFloats gx(*x), gr(*r), gy = DeviceFloats::poison(x->size());
                           float* out = y_is_r ? gr.ptr() : gy.ptr();
                           table().add_rms_norm(gx.ptr(), gr.ptr(), 9, d, gpu_tensor(w), 1e-6f, 1.0f, out);
                           std::vector<float> xs = gx.host(), ys = y_is_r ? gr.host() : gy.host();
                           xs.insert(xs.end(), ys.begin(), ys.end());
                           return xs;
                         }});
    }
    Tensor w = random_tensor(rng, {d}, DType::kBF16), b = random_tensor(rng, {d}, DType::kF16);
    for (int variant = 0; variant < 3; ++variant) {
      Tensor wv = variant == 2 ? Tensor() : w, bv = variant == 1 ? Tensor() : b;
      cases.push_back({"layer_norm",
                       "d=" + std::to_string(d) + (wv.defined() ? " +w" : "") + (bv.defined() ? " +b" : ""), 1e-12,
                       [x, wv, bv, d] {
                         std::vector<float> y(x->size());
                         ops::layer_norm(x->data(), 9, d, wv, bv, 1e-5f, y.data());
                         return y;
                       },
                       [x, wv, bv, d] {
                         DeviceFloats g(*x), y = DeviceFloats::poison(x->size());
                         table().layer_norm(g.ptr(), 9, d, gpu_tensor(wv), gpu_tensor(bv), 1e-5f, y.ptr());
                         return y.host();
                       }});
    }
  }
  for (auto [hd, rot] : {std::pair<int64_t, int64_t>{64, 64}, {128, 128}, {96, 48}, {256, 256}}) {
    const int64_t nt = 11, nh = 5;
    Vec x = vec(rng, static_cast<size_t>(nt * nh * hd));
    Vec inv = vec(rng, static_cast<size_t>(rot / 2), 0.0f, 1.0f);
    auto pos = std::make_shared<std::vector<int64_t>>(nt);
    for (int64_t i = 0; i < nt; ++i) (*pos)[i] = (i * 7919) % 100003;  // large, unordered positions
    cases.push_back(inplace_case(
        "rope", "hd=" + std::to_string(hd) + " rot=" + std::to_string(rot), 1e-13, x,
        [=](float* y, int64_t) { ops::rope(y, nt, nh, hd, rot, inv->data(), pos->data(), 1.1f); },
        [=](float* y, int64_t) { table().rope(y, nt, nh, hd, rot, inv->data(), pos->data(), 1.1f); }));
  }
  {
    const int64_t nt = 7, nh = 4, hd = 128;
    Vec x = vec(rng, static_cast<size_t>(nt * nh * hd));
    Vec inv = vec(rng, static_cast<size_t>(hd / 2), 0.0f, 1.0f);
    auto pos = std::make_shared<std::vector<int64_t>>(3 * nt);
    for (size_t i = 0; i < pos->size(); ++i) (*pos)[i] = static_cast<int64_t>((i * 7) % 13);
    // Stream tables by ops.h's rules: chunked sections, and the interleaved layout.
    std::vector<int> sections = {16, 24, 24}, inter = {24, 20, 20};
    auto chunked = std::make_shared<std::vector<int>>();
    for (size_t s = 0; s < sections.size(); ++s) chunked->insert(chunked->end(), sections[s], static_cast<int>(s % 3));
    auto interleaved = std::make_shared<std::vector<int>>(hd / 2, 0);
    for (int64_t i = 0; i < hd / 2; ++i) {
      if (i % 3 == 1 && i < 3 * inter[1]) (*interleaved)[i] = 1;
      if (i % 3 == 2 && i < 3 * inter[2]) (*interleaved)[i] = 2;
    }
    cases.push_back(inplace_case(
        "mrope", "qwen2-vl sections", 1e-13, x,
        [=](float* y, int64_t) { ops::mrope(y, nt, nh, hd, inv->data(), pos->data(), sections, 0.9f); },
        [=](float* y, int64_t) { table().mrope(y, nt, nh, hd, inv->data(), pos->data(), chunked->data(), 0.9f); }));
    cases.push_back(inplace_case(
        "mrope", "qwen3-vl interleaved", 1e-13, x,
        [=](float* y, int64_t) { ops::mrope_interleaved(y, nt, nh, hd, inv->data(), pos->data(), inter, 1.0f); },
        [=](float* y, int64_t) {
          table().mrope(y, nt, nh, hd, inv->data(), pos->data(), interleaved->data(), 1.0f);
        }));
  }
  // ops::rope_qk / mrope_qk (not table entries: one launch for decode-sized calls, two rope launches
  // otherwise), on [q | k] back to back: 1 and 4 tokens take the one-launch kernel, 7 the table path.
  for (int64_t nt : {1, 4, 7}) {
    const int64_t H = 16, KV = 2, hd = 128;
    const int64_t q_size = nt * H * hd;
    Vec x = vec(rng, static_cast<size_t>(nt * (H + KV) * hd));
    Vec inv = vec(rng, static_cast<size_t>(hd / 2), 0.0f, 1.0f);
    auto pos = std::make_shared<std::vector<int64_t>>(3 * nt);
    for (int64_t i = 0; i < 3 * nt; ++i) (*pos)[i] = 2048 + (i * 37) % 101;
    const std::vector<int> sections = {16, 24, 24};
    auto on_gpu = [](const std::function<void()>& f) {
      ops::DeviceScope scope(Device::kCuda);
      f();
    };
    cases.push_back(inplace_case(
        "rope", "rope_qk q/k n=" + std::to_string(nt), 1e-13, x,
        [=](float* y, int64_t) { ops::rope_qk(y, H, y + q_size, KV, nt, hd, hd, inv->data(), pos->data(), 1.1f); },
        [=](float* y, int64_t) {
          on_gpu([&] { ops::rope_qk(y, H, y + q_size, KV, nt, hd, hd, inv->data(), pos->data(), 1.1f); });
        }));
    cases.push_back(inplace_case(
        "mrope", "mrope_qk q/k n=" + std::to_string(nt), 1e-13, x,
        [=](float* y, int64_t) { ops::mrope_qk(y, H, y + q_size, KV, nt, hd, inv->data(), pos->data(), sections); },
        [=](float* y, int64_t) {
          on_gpu([&] { ops::mrope_qk(y, H, y + q_size, KV, nt, hd, inv->data(), pos->data(), sections); });
        }));
  }
}

// The NMSE bound of f32 attention over nk keys against the scalar reference: 1e-11, or u²·nk past that
// (u = 2^-24) — the reference's sequential f32 sums over nk keys drift like sqrt(nk) roundings, so their
// expected NMSE is about u²·nk / 3 and grows linearly with nk (measured: 1.1e-11 at 20000 keys, 2.6e-11 at
// 16384 keys with other inputs); the bound is three times that expectation.
double f32_attention_nmse(int64_t nk) {
  const double u = std::ldexp(1.0, -24);
  return std::max(1e-11, u * u * static_cast<double>(nk));
}

void add_elementwise_cases(std::vector<Case>& cases, std::mt19937& rng) {
  for (auto act : {ops::Activation::kSilu, ops::Activation::kGeluTanh, ops::Activation::kGeluErf,
                   ops::Activation::kQuickGelu, ops::Activation::kRelu}) {
    // ReLU zeroes the negative half: its inputs lean positive (3 in 4) so that most reference outputs stay
    // non-zero (ReferenceOutputsAreNonTrivial) whatever the generator's state, with both branches taken.
    const bool relu = act == ops::Activation::kRelu;
    Vec x = vec(rng, 4864 + 3, relu ? -5.0f : -10.0f, relu ? 15.0f : 10.0f), up = vec(rng, 4864 + 3);
    const std::string name = "activation " + std::to_string(static_cast<int>(act));
    cases.push_back(inplace_case(
        "activate", name, 1e-12, x, [=](float* y, int64_t n) { ops::activate(y, n, act); },
        [=](float* y, int64_t n) { table().activate(y, n, act); }));
    cases.push_back(inplace_case(
        "gated_activate", name, 1e-12, x, [=](float* y, int64_t n) { ops::gated_activate(y, up->data(), n, act); },
        [=](float* y, int64_t n) {
          DeviceFloats u(*up);
          table().gated_activate(y, u.ptr(), n, act);
        }));
  }
  {
    Vec x = vec(rng, 7 * 1003, -20.0f, 20.0f);
    for (int c = 0; c < 1003; ++c) (*x)[3 * 1003 + c] = -std::numeric_limits<float>::infinity();  // masked row
    (*x)[5 * 1003 + 17] = -std::numeric_limits<float>::infinity();
    cases.push_back(inplace_case(
        "softmax", "7x1003 with a fully masked row", 1e-12, x, [](float* y, int64_t) { ops::softmax(y, 7, 1003); },
        [](float* y, int64_t) { table().softmax(y, 7, 1003); }));
  }
  {
    const int64_t d = 152064;
    auto x = std::make_shared<std::vector<float>>(argmax_rows(rng, d));
    cases.push_back({"argmax", "5x152064 ties, NaN, -inf", 0.0,
                     [x, d] {
                       std::vector<int32_t> ids(5);
                       ops::argmax(x->data(), 5, d, ids.data());
                       return std::vector<float>(ids.begin(), ids.end());
                     },
                     [x, d] {
                       DeviceFloats g(*x);
                       std::vector<int32_t> ids(5, -1);
                       table().argmax(g.ptr(), 5, d, ids.data());
                       return std::vector<float>(ids.begin(), ids.end());
                     }});
  }
  Vec y = vec(rng, 2053, -40.0f, 40.0f), x = vec(rng, 2053);
  cases.push_back(inplace_case(
      "add", "2053", 1e-14, y, [=](float* p, int64_t n) { ops::add(p, x->data(), n); },
      [=](float* p, int64_t n) { table().add(p, DeviceFloats(*x).ptr(), n); }));
  cases.push_back(inplace_case(
      "mul", "2053", 1e-14, y, [=](float* p, int64_t n) { ops::mul(p, x->data(), n); },
      [=](float* p, int64_t n) { table().mul(p, DeviceFloats(*x).ptr(), n); }));
  cases.push_back(inplace_case(
      "scale", "2053", 1e-14, y, [](float* p, int64_t n) { ops::scale(p, 0.37f, n); },
      [](float* p, int64_t n) { table().scale(p, 0.37f, n); }));
  cases.push_back(inplace_case(
      "softcap", "2053 cap 30", 1e-12, y, [](float* p, int64_t n) { ops::softcap(p, n, 30.0f); },
      [](float* p, int64_t n) { table().softcap(p, n, 30.0f); }));
}

// bf16_matmul attention (tensor-core prefill): q, k, v and the probabilities are rounded to bf16
// (unit roundoff u = 2^-9) for the two matmuls. The score error δs = scale · Σ q_c k_c (ε_q + ε_k) has
// variance (2/3) u² · scale² · hd · E[q²] E[k²]; it moves the output by Σ p_j δs_j (v_j - o), and the
// v and p roundings add about (2/3) u² relative, so NMSE ≈ (2/3) u² (1 + scale² · hd · E[q²] E[k²]):
// 1.1e-5 at hd 128 and 2.1e-5 at hd 256 for these inputs (q, k uniform in [-2, 2], scale 1/8). The
// bound leaves 5-10x of that; a wrong mask on even one query of a case exceeds it.
constexpr double kBf16AttentionNmse = 1e-4;

void add_attention_cases(std::vector<Case>& cases, std::mt19937& rng) {
  static const int32_t groups[40] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2,
                                     2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  // 260 positions: text, a 100-token image (group 1) from 30, text, a 64-token image (group 2) from 150.
  static const std::vector<int32_t> long_groups = [] {
    std::vector<int32_t> g(260, 0);
    for (int p = 30; p < 130; ++p) g[p] = 1;
    for (int p = 150; p < 214; ++p) g[p] = 2;
    return g;
  }();
  struct A {
    std::string what;
    int64_t nq, nk, q0, nh, nkv, hd;
    float cap;
    ops::AttentionMask mask;
    bool ring;  // keys in rotating-cache order (k_pos not sorted)
  };
  const std::vector<A> all = {
      {"prefill gqa causal", 24, 24, 0, 14, 2, 64, 0.0f, {}, false},
      {"decode", 1, 40, 39, 14, 2, 64, 0.0f, {}, false},
      {"decode ring window", 1, 16, 47, 8, 2, 128, 0.0f, {true, 16, nullptr, 0}, true},
      {"chunk after cache ring", 5, 16, 43, 4, 4, 64, 0.0f, {true, 12, nullptr, 0}, true},
      {"sliding window + softcap", 30, 30, 0, 8, 4, 128, 50.0f, {true, 8, nullptr, 0}, false},
      {"image groups", 20, 20, 0, 4, 1, 72, 0.0f, {true, 0, groups, 40}, false},
      {"image groups + window", 24, 24, 0, 4, 2, 64, 0.0f, {true, 3, groups, 40}, false},
      {"vision non-causal", 50, 50, 0, 6, 6, 80, 0.0f, {false, 0, nullptr, 0}, false},
      {"head_dim 256 gqa", 9, 9, 0, 8, 1, 256, 30.0f, {}, false},
      {"head_dim 66 (scalar key loads)", 7, 7, 0, 3, 1, 66, 0.0f, {}, false},
      {"prefill chunk after 100 cached", 40, 140, 100, 8, 2, 128, 0.0f, {}, false},
      {"prefill chunk after 100 cached, window 48 (skipped tiles)", 40, 140, 100, 8, 2, 64, 0.0f,
       {true, 48, nullptr, 0}, false},
      {"prefill head_dim 66, ring cache", 33, 64, 31, 4, 2, 66, 20.0f, {true, 40, nullptr, 0}, true},
      {"first query sees no key (zeros)", 4, 10, -1, 2, 1, 32, 0.0f, {}, false},
      {"prefill, first 3 queries see no key (zeros)", 12, 10, -3, 2, 1, 32, 0.0f, {}, false},
      {"long decode", 1, 1500, 1499, 16, 2, 128, 0.0f, {}, false},
      {"9000 keys (k_pos over a pinned staging slot)", 2, 9000, 8998, 4, 2, 64, 0.0f, {}, false},
      {"decode 20000 keys, gqa 7 (several chunks per split)", 1, 20000, 19999, 14, 2, 128, 0.0f, {}, false},
      {"decode 3 queries, 12 heads per kv head (two row groups)", 3, 300, 297, 12, 1, 64, 0.0f, {}, false},
      {"decode at position 19999, 4096-key ring, window 4096", 1, 4096, 19999, 8, 4, 128, 0.0f, {true, 4096, nullptr, 0}, true},
      // The one-launch decode kernel: split counts with one and several merge teams, the key range
      // narrowed by the window and the causal end, image groups that keep future keys visible.
      {"decode 7B shape (28 / 4 heads), 2048 keys", 1, 2048, 2047, 28, 4, 128, 0.0f, {}, false},
      {"decode 3B shape, 16384 keys (many merge teams)", 1, 16384, 16383, 16, 2, 128, 0.0f, {}, false},
      {"decode gemma shape (8 / 4, hd 256), window 1024 over 3000 keys", 1, 3000, 2999, 8, 4, 256, 0.0f,
       {true, 1024, nullptr, 0}, false},
      {"decode 7 queries, softcap 30, hd 256, window 300", 7, 900, 893, 8, 4, 256, 30.0f, {true, 300, nullptr, 0},
       false},
      {"decode 4 queries inside an image group (later keys of the group visible)", 4, 214, 150, 8, 2, 64, 0.0f,
       {true, 0, long_groups.data(), 260}, false},
      {"decode 2 queries, 60 keys after the queries (causal end inside the cache)", 2, 600, 538, 16, 2, 128, 0.0f, {},
       false},
      // Warp layouts of the decode kernel: two rows per warp with a half-live warp and a one-row
      // second row group; one row per warp with four 32-key slices per chunk, some empty.
      {"decode 9 heads per kv head (a one-row group), 45 keys (second slice partly empty)", 1, 45, 44, 18, 2, 128, 0.0f,
       {}, false},
      {"decode 2 queries, 5 heads per kv head, hd 64, 300 keys, window 70", 2, 300, 298, 5, 1, 64, 0.0f,
       {true, 70, nullptr, 0}, false},
      {"decode 2 heads per kv head, hd 64, 40 keys (four slices, two empty)", 1, 40, 39, 4, 2, 64, 0.0f, {}, false},
      // Register layouts of the register kernel: 8 rows with two float4s per lane, a lane's second
      // float4 partly past head_dim (160), one query head per kv head (96: lanes past head_dim idle).
      {"decode hd 256, 6 heads per kv head, 777 keys", 1, 777, 776, 12, 2, 256, 0.0f, {}, false},
      {"decode 3 queries, hd 160, ring, window 200", 3, 400, 520, 4, 1, 160, 0.0f, {true, 200, nullptr, 0},
       true},
      {"decode 1 head per kv head, hd 96, 33 keys", 1, 33, 32, 3, 3, 96, 0.0f, {}, false},
  };
  // Prefill shapes for the tensor-core kernel: several row and key tiles, GQA groups that do not
  // divide its 128-row tiles, every mask case, head_dim 32/64/72/80/96/128/256.
  const std::vector<A> prefill = {
      {"causal 300, gqa 7, hd 128", 300, 300, 0, 14, 2, 128, 0.0f, {}, false},
      {"causal chunk after 200 cached, no gqa, hd 64", 150, 350, 200, 8, 8, 64, 0.0f, {}, false},
      {"window 100 + softcap 30, hd 256", 200, 200, 0, 4, 2, 256, 30.0f, {true, 100, nullptr, 0}, false},
      {"image groups (100 + 64 tokens) + causal, hd 80", 260, 260, 0, 4, 1, 80, 0.0f,
       {true, 0, long_groups.data(), 260}, false},
      {"image groups + window 50, hd 64", 260, 260, 0, 4, 2, 64, 0.0f, {true, 50, long_groups.data(), 260}, false},
      {"vision non-causal 196, hd 80", 196, 196, 0, 16, 16, 80, 0.0f, {false, 0, nullptr, 0}, false},
      // SigLIP so400m's head_dim (Gemma 3, PaliGemma towers): 72 runs padded to 80 with zero columns.
      {"vision non-causal 300, hd 72 (padded to 80)", 300, 300, 0, 16, 16, 72, 0.0f, {false, 0, nullptr, 0}, false},
      {"ring cache chunk, window 100, hd 96", 40, 128, 100, 6, 3, 96, 0.0f, {true, 100, nullptr, 0}, true},
      {"causal 1100, hd 96 (many key tiles)", 1100, 1100, 0, 2, 1, 96, 0.0f, {}, false},
      // A later prefill chunk against a longer cache at head_dim 128, gqa 7 (a causal end inside a key tile, row
      // tiles that split a query's heads).
      {"causal chunk 200 after 700 cached, gqa 7, hd 128", 200, 900, 700, 14, 2, 128, 0.0f, {}, false},
      {"first 5 queries see no key, hd 32", 70, 64, -5, 4, 2, 32, 0.0f, {}, false},
      // The Qwen2.5-VL tower's windowed blocks: 40 windows of 64 patches as 40 x 16 heads of one call.
      {"vision windows as heads (64 x 640 heads), hd 80", 64, 64, 0, 640, 640, 80, 0.0f, {false, 0, nullptr, 0},
       false},
  };
  auto add = [&](const A& a, bool bf16) {
    Vec q = vec(rng, static_cast<size_t>(a.nq * a.nh * a.hd), -2, 2);
    Vec k = vec(rng, static_cast<size_t>(a.nk * a.nkv * a.hd), -2, 2);
    Vec v = vec(rng, static_cast<size_t>(a.nk * a.nkv * a.hd));
    auto kp = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(a.nk));
    std::iota(kp->begin(), kp->end(), int64_t{0});
    if (a.ring)  // a ring buffer holding the last nk positions before q0 + nq, rotated
      for (int64_t j = 0; j < a.nk; ++j) (*kp)[j] = a.q0 + a.nq - a.nk + (j + 5) % a.nk;
    ops::AttentionMask mask = a.mask;
    mask.bf16_matmul = bf16;
    const double f32_tol = f32_attention_nmse(a.nk);
    cases.push_back({"attention", (bf16 ? "bf16_matmul " : "") + a.what, bf16 ? kBf16AttentionNmse : f32_tol,
                     [=] {
                       std::vector<float> out(q->size());
                       ops::attention(q->data(), a.nq, a.q0, k->data(), v->data(), kp->data(), a.nk, a.nh, a.nkv,
                                      a.hd, 0.125f, a.cap, mask, out.data());
                       return out;
                     },
                     [=] {
                       DeviceFloats gq(*q), gk(*k), gv(*v), out = DeviceFloats::poison(q->size());
                       table().attention(gq.ptr(), a.nq, a.q0, gk.ptr(), gv.ptr(), kp->data(), a.nk, a.nh, a.nkv,
                                         a.hd, 0.125f, a.cap, mask, out.ptr());
                       return out.host();
                     }});
  };
  for (const A& a : all) add(a, false);
  for (const A& a : prefill) add(a, false);
  // bf16_matmul: the tensor-core kernel for nq >= 8 and a head_dim it has (others, and decode, stay
  // exact f32, well inside the bound).
  for (const A& a : all) add(a, true);
  for (const A& a : prefill) add(a, true);
}

// KV-cache quantization, one input for both ops: x [rows, n] with random rows plus rows at the rule's
// corners (a constant group: the 1e-7 scale floor; all negative; all positive; zeros; groups whose
// codes fall exactly halfway between two steps), and its quantization by the CPU reference.
struct KvQuantInput {
  int64_t rows = 0, n = 0;
  int bits = 0, group = 0;
  std::vector<float> x;
};

KvQuantInput kv_quant_input(std::mt19937& rng, int bits, int group) {
  KvQuantInput in{12, 384, bits, group, {}};
  in.x = random_vec(rng, static_cast<size_t>(in.rows * in.n), -3.0f, 3.0f);
  const float top = static_cast<float>((1 << bits) - 1);
  for (int64_t j = 0; j < in.n; ++j) {
    auto at = [&](int64_t r) -> float& { return in.x[static_cast<size_t>(r * in.n + j)]; };
    at(1) = 0.75f;
    at(2) = -0.25f - 0.01f * static_cast<float>(j % 17);
    at(3) = 0.5f + 0.02f * static_cast<float>(j % 13);
    if (j % 3 == 0) at(4) = 0.0f;
    const int64_t jg = j % group;  // min 0, max 2^b - 1: scale -1, bias top, so k + 0.5 is a tie
    at(5) = jg == 0 ? 0.0f : jg == 1 ? top : std::fmod(static_cast<float>(jg), std::max(top - 1.0f, 1.0f)) + 0.5f;
    at(6) = at(0) * 1e-3f;  // small magnitudes
  }
  return in;
}

struct KvQuantOut {
  std::vector<uint32_t> packed;
  std::vector<float> scales, biases;
};

// ops::kv_quantize through `t` (the CPU reference table or the CUDA table on device copies).
KvQuantOut run_kv_quantize(const KvQuantInput& in, bool on_gpu) {
  const int64_t words = ops::kv_packed_words(in.n, in.bits), groups = in.n / in.group;
  KvQuantOut o{std::vector<uint32_t>(static_cast<size_t>(in.rows * words)),
               std::vector<float>(static_cast<size_t>(in.rows * groups)),
               std::vector<float>(static_cast<size_t>(in.rows * groups))};
  if (!on_gpu) {
    ops::kv_quantize(in.x.data(), in.rows, in.n, in.bits, in.group, o.packed.data(), o.scales.data(),
                     o.biases.data());
    return o;
  }
  DeviceFloats x(in.x), s = DeviceFloats::poison(o.scales.size()), b = DeviceFloats::poison(o.biases.size());
  std::vector<uint32_t> poison(o.packed.size(), 0xdeadbeefu);
  std::shared_ptr<void> p = device_copy(poison.data(), poison.size() * 4);
  table().kv_quantize(x.ptr(), in.rows, in.n, in.bits, in.group, static_cast<uint32_t*>(p.get()), s.ptr(), b.ptr());
  cuda::copy(o.packed.data(), Device::kCpu, p.get(), Device::kCuda, o.packed.size() * 4);
  o.scales = s.host();
  o.biases = b.host();
  return o;
}

// Codes (read bit by bit, exact in f32), then scales, then biases.
std::vector<float> flatten(const KvQuantInput& in, const KvQuantOut& o) {
  std::vector<float> out;
  const int64_t words = ops::kv_packed_words(in.n, in.bits);
  for (int64_t r = 0; r < in.rows; ++r)
    for (int64_t j = 0; j < in.n; ++j)
      out.push_back(static_cast<float>(stream_bits(o.packed.data() + r * words, j, in.bits)));
  out.insert(out.end(), o.scales.begin(), o.scales.end());
  out.insert(out.end(), o.biases.begin(), o.biases.end());
  return out;
}

std::vector<float> run_kv_dequantize(const KvQuantInput& in, const KvQuantOut& q, bool on_gpu) {
  std::vector<float> out(static_cast<size_t>(in.rows * in.n));
  if (!on_gpu) {
    ops::kv_dequantize(q.packed.data(), q.scales.data(), q.biases.data(), in.rows, in.n, in.bits, in.group,
                       out.data());
    return out;
  }
  std::shared_ptr<void> p = device_copy(q.packed.data(), q.packed.size() * 4);
  DeviceFloats s(q.scales), b(q.biases), y = DeviceFloats::poison(out.size());
  table().kv_dequantize(static_cast<const uint32_t*>(p.get()), s.ptr(), b.ptr(), in.rows, in.n, in.bits, in.group,
                        y.ptr());
  return y.host();
}

// Every bit width 2..8 and group size: exact (tol 0; KvQuantIsBitExact compares the raw bits too).
void add_kv_quant_cases(std::vector<Case>& cases, std::mt19937& rng) {
  for (int bits = 2; bits <= 8; ++bits)
    for (int group : {32, 64, 128}) {
      auto in = std::make_shared<KvQuantInput>(kv_quant_input(rng, bits, group));
      const std::string what = std::to_string(bits) + "-bit g" + std::to_string(group) + " 12x384";
      cases.push_back({"kv_quantize", what, 0.0, [in] { return flatten(*in, run_kv_quantize(*in, false)); },
                       [in] { return flatten(*in, run_kv_quantize(*in, true)); }});
      // Dequantize the reference's own quantization (scales of both signs, biases on the edge).
      cases.push_back({"kv_dequantize", what, 0.0,
                       [in] { return run_kv_dequantize(*in, run_kv_quantize(*in, false), false); },
                       [in] {
                         ops::force_scalar_kernels(true);
                         const KvQuantOut q = run_kv_quantize(*in, false);
                         ops::force_scalar_kernels(false);
                         return run_kv_dequantize(*in, q, true);
                       }});
    }
}

// attention_quantized: K/V quantized by the CPU reference (kv_quantize), then the op on both sides: the
// scalar reference (kv_dequantize, then attention) and the CUDA entry on device copies of the packed
// rows (decode: dequantized chunk by chunk in shared memory; prefill: through an f32 buffer). Same
// bound as f32 attention: the dequantized values are bit-identical, only the attention sums differ.
struct QuantKvRows {
  std::vector<uint32_t> kp, vp;
  std::vector<float> ks, kb, vs, vb;
};

void add_attention_quantized_cases(std::vector<Case>& cases, std::mt19937& rng) {
  struct Q {
    std::string what;
    int64_t nq, nk, q0, nh, nkv, hd;
    int bits, group;
    float cap;
    ops::AttentionMask mask;
    bool ring;
  };
  const std::vector<Q> all = {
      {"decode 4-bit g64, 3B shape, 2048 keys", 1, 2048, 2047, 16, 2, 128, 4, 64, 0.0f, {}, false},
      {"decode 4-bit g64, 7B shape, 700 keys", 1, 700, 699, 28, 4, 128, 4, 64, 0.0f, {}, false},
      {"decode 8-bit g32, 3 queries, ring, window 40", 3, 64, 97, 8, 2, 64, 8, 32, 0.0f, {true, 40, nullptr, 0}, true},
      {"decode 3-bit g32, hd 64 (codes not 16-byte aligned)", 1, 333, 332, 4, 2, 64, 3, 32, 0.0f, {}, false},
      {"decode 2-bit g128, hd 256, softcap 30, window 100", 2, 400, 398, 8, 4, 256, 2, 128, 30.0f,
       {true, 100, nullptr, 0}, false},
      {"decode 5-bit g64, 6 queries", 6, 150, 144, 12, 3, 128, 5, 64, 0.0f, {}, false},
      {"decode 6-bit g32, 9000 keys", 1, 9000, 8999, 8, 1, 64, 6, 32, 0.0f, {}, false},
      {"decode 4-bit g32, hd 256, 8 heads per kv head", 1, 500, 499, 16, 2, 256, 4, 32, 0.0f, {}, false},
      {"decode 3-bit g32, hd 160, 2 queries", 2, 300, 298, 4, 2, 160, 3, 32, 0.0f, {}, false},
      {"first query sees no key (zeros), 4-bit", 3, 10, -1, 4, 2, 64, 4, 64, 0.0f, {}, false},
      {"prefill 4-bit g64, chunk of 20 after 100 (dequantize + attention)", 20, 120, 100, 8, 2, 128, 4, 64, 0.0f, {},
       false},
  };
  for (const Q& a : all) {
    Vec q = vec(rng, static_cast<size_t>(a.nq * a.nh * a.hd), -2, 2);
    const int64_t row = a.nkv * a.hd, words = ops::kv_packed_words(row, a.bits), groups = row / a.group;
    auto rows = std::make_shared<QuantKvRows>();
    ops::force_scalar_kernels(true);
    for (int plane = 0; plane < 2; ++plane) {
      std::vector<float> x = random_vec(rng, static_cast<size_t>(a.nk * row), plane == 0 ? -2.0f : -1.0f,
                                        plane == 0 ? 2.0f : 1.0f);
      auto& p = plane == 0 ? rows->kp : rows->vp;
      auto& sc = plane == 0 ? rows->ks : rows->vs;
      auto& bi = plane == 0 ? rows->kb : rows->vb;
      p.resize(static_cast<size_t>(a.nk * words));
      sc.resize(static_cast<size_t>(a.nk * groups));
      bi.resize(sc.size());
      ops::kv_quantize(x.data(), a.nk, row, a.bits, a.group, p.data(), sc.data(), bi.data());
    }
    ops::force_scalar_kernels(false);
    auto kp = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(a.nk));
    std::iota(kp->begin(), kp->end(), int64_t{0});
    if (a.ring)
      for (int64_t j = 0; j < a.nk; ++j) (*kp)[j] = a.q0 + a.nq - a.nk + (j + 5) % a.nk;
    const double tol = f32_attention_nmse(a.nk);
    cases.push_back(
        {"attention_quantized", a.what, tol,
         [=] {
           std::vector<float> out(q->size());
           const ops::QuantizedKV kv{rows->kp.data(), rows->ks.data(), rows->kb.data(), rows->vp.data(),
                                     rows->vs.data(), rows->vb.data(), a.bits,         a.group};
           ops::attention_quantized(q->data(), a.nq, a.q0, kv, kp->data(), a.nk, a.nh, a.nkv, a.hd, 0.125f, a.cap,
                                    a.mask, out.data());
           return out;
         },
         [=] {
           std::shared_ptr<void> gkp = device_copy(rows->kp.data(), rows->kp.size() * 4),
                                 gvp = device_copy(rows->vp.data(), rows->vp.size() * 4);
           DeviceFloats gq(*q), gks(rows->ks), gkb(rows->kb), gvs(rows->vs), gvb(rows->vb),
               out = DeviceFloats::poison(q->size());
           const ops::QuantizedKV kv{static_cast<const uint32_t*>(gkp.get()), gks.ptr(), gkb.ptr(),
                                     static_cast<const uint32_t*>(gvp.get()), gvs.ptr(), gvb.ptr(), a.bits, a.group};
           table().attention_quantized(gq.ptr(), a.nq, a.q0, kv, kp->data(), a.nk, a.nh, a.nkv, a.hd, 0.125f, a.cap,
                                       a.mask, out.ptr());
           return out.host();
         }});
  }
}

// ---- sample -----------------------------------------------------------------------------------------------
// A logits row with many exact ties: values on a 0.25 grid in [-spread, spread].
std::vector<float> tied_logits(std::mt19937& rng, int64_t vocab, float spread) {
  std::vector<float> x = random_vec(rng, static_cast<size_t>(vocab), -spread, spread);
  for (float& v : x) v = std::round(v * 4.0f) / 4.0f;
  return x;
}

// One id from ops::sample: the CPU backend on host data, or the CUDA table entry on a device copy.
int32_t sample_id(const std::vector<float>& logits, const ops::SamplingSpec& spec, const std::vector<int32_t>& hist,
                  double u, bool on_gpu) {
  int32_t id = -1;
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (!on_gpu) {
    ops::sample(logits.data(), vocab, spec, hist.data(), static_cast<int64_t>(hist.size()), u, &id);
  } else {
    DeviceFloats d(logits);
    table().sample(d.ptr(), vocab, spec, hist.data(), static_cast<int64_t>(hist.size()), u, &id);
  }
  return id;
}

ops::SamplingSpec full_chain_spec() {
  ops::SamplingSpec spec;
  spec.temperature = 0.8f;
  spec.top_p = 0.9f;
  spec.top_k = 20;
  spec.min_p = 0.05f;
  spec.repetition_penalty = 1.1f;
  return spec;
}

void add_sample_cases(std::vector<Case>& cases, std::mt19937& rng) {
  const int64_t vocab = 152064;
  auto rows = std::make_shared<std::vector<std::vector<float>>>();
  for (int r = 0; r < 4; ++r) rows->push_back(tied_logits(rng, vocab, 8.0f));
  auto hist = std::make_shared<std::vector<int32_t>>();
  for (int i = 0; i < 64; ++i) hist->push_back(static_cast<int32_t>(rng() % vocab));
  ops::SamplingSpec greedy;
  greedy.repetition_penalty = 1.3f;
  greedy.logit_bias = {{11, 2.5f}};
  for (const auto& [what, spec] : {std::pair<std::string, ops::SamplingSpec>{"4x152064 full chain", full_chain_spec()},
                                   {"4x152064 greedy + penalties", greedy}}) {
    auto run = [rows, hist, spec = spec](bool gpu) {
      std::vector<float> ids;
      for (size_t r = 0; r < rows->size(); ++r)
        ids.push_back(static_cast<float>(sample_id((*rows)[r], spec, *hist, 0.2 * static_cast<double>(r) + 0.1, gpu)));
      return ids;
    };
    cases.push_back({"sample", what, 0.0, [run] { return run(false); }, [run] { return run(true); }});
  }
}

std::vector<Case> build_cases() {
  std::vector<Case> cases;
  std::mt19937 rng(20261126);
  add_linear_cases(cases, rng);
  add_quant_gemv_cases(cases);
  add_norm_rope_cases(cases, rng);
  add_elementwise_cases(cases, rng);
  add_attention_cases(cases, rng);
  add_kv_quant_cases(cases, rng);
  add_attention_quantized_cases(cases, rng);
  add_sample_cases(cases, rng);
  return cases;
}

}  // namespace

// GTEST_SKIP returns from the function it is in, so this stays a macro used in test bodies.
#define SKIP_WITHOUT_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_unavailable_reason()

namespace {

}  // namespace

TEST(CudaKernels, EveryOpHasACase) {
  std::set<std::string> covered;
  for (const Case& c : build_cases()) covered.insert(c.op);
  for (const char* op : ops::cpu::kKernelOps) EXPECT_TRUE(covered.count(op)) << "no CUDA case for op " << op;
  for (const std::string& op : covered) {
    bool known = false;
    for (const char* k : ops::cpu::kKernelOps) known = known || op == k;
    EXPECT_TRUE(known) << "case for unknown op " << op;
  }
}

// Runs without a GPU too: every case's reference output is finite and not all zeros, so the GPU
// comparison cannot pass on degenerate inputs.
TEST(CudaKernels, ReferenceOutputsAreNonTrivial) {
  ops::force_scalar_kernels(true);
  for (const Case& c : build_cases()) {
    std::vector<float> want = c.cpu();
    size_t nonzero = 0, nonfinite = 0;
    for (float v : want) {
      nonzero += v != 0.0f;
      nonfinite += !std::isfinite(v);
    }
    EXPECT_GT(nonzero, want.size() / 2) << c.op << " [" << c.what << "]";
    EXPECT_EQ(nonfinite, 0u) << c.op << " [" << c.what << "]";
  }
  ops::force_scalar_kernels(false);
}

TEST(CudaKernels, TableIsComplete) {
  SKIP_WITHOUT_GPU();
  const auto& t = cuda::kernel_table();
  const void* const* entries = reinterpret_cast<const void* const*>(&t);
  for (size_t i = 0; i < sizeof(t) / sizeof(void*); ++i)
    EXPECT_NE(entries[i], nullptr) << "null CUDA entry " << ops::cpu::kKernelOps[i];
}

TEST(CudaKernels, EveryOpMatchesScalarReference) {
  SKIP_WITHOUT_GPU();
  std::map<std::string, double> worst;
  for (const Case& c : build_cases()) {
    ops::force_scalar_kernels(true);
    std::vector<float> want = c.cpu();
    ops::force_scalar_kernels(false);
    std::vector<float> got = c.gpu();
    ASSERT_EQ(got.size(), want.size()) << c.op << " [" << c.what << "]";
    size_t unwritten = 0;
    for (size_t i = 0; i < got.size(); ++i) unwritten += std::isnan(got[i]) && !std::isnan(want[i]);
    EXPECT_EQ(unwritten, 0u) << c.op << " [" << c.what << "]: elements left unwritten (NaN poison) or NaN";
    const double e = nmse(got.data(), std::vector<double>(want.begin(), want.end()));
    EXPECT_LE(e, c.tol) << c.op << " [" << c.what << "]";
    worst[c.op] = std::max(worst[c.op], e);
  }
  for (auto& [op, e] : worst) std::printf("  %-15s worst NMSE %.3g\n", op.c_str(), e);
}

// bf16_matmul must actually change the arithmetic for prefill (the tensor-core kernel ran, not the f32
// fallback), and leave decode on the exact f32 kernel.
TEST(CudaKernels, AttentionBf16MatmulRoundsOnlyPrefill) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (int64_t nq : {int64_t{3}, int64_t{64}}) {
    const int64_t nk = 64, nh = 4, nkv = 2, hd = 128;
    const std::vector<float> q = random_vec(rng, static_cast<size_t>(nq * nh * hd), -2, 2);
    const std::vector<float> k = random_vec(rng, static_cast<size_t>(nk * nkv * hd), -2, 2);
    const std::vector<float> v = random_vec(rng, static_cast<size_t>(nk * nkv * hd));
    std::vector<int64_t> kp(static_cast<size_t>(nk));
    std::iota(kp.begin(), kp.end(), int64_t{0});
    DeviceFloats gq(q), gk(k), gv(v);
    std::vector<float> got[2];
    for (int bf16 = 0; bf16 < 2; ++bf16) {
      ops::AttentionMask mask;
      mask.bf16_matmul = bf16 == 1;
      DeviceFloats out = DeviceFloats::poison(q.size());
      table().attention(gq.ptr(), nq, nk - nq, gk.ptr(), gv.ptr(), kp.data(), nk, nh, nkv, hd, 0.125f, 0.0f, mask,
                        out.ptr());
      got[bf16] = out.host();
    }
    const double e = nmse(got[1].data(), std::vector<double>(got[0].begin(), got[0].end()));
    if (nq < 8)
      EXPECT_EQ(e, 0.0) << "decode must stay on the f32 kernel";
    else
      EXPECT_GT(e, 1e-9) << "bf16_matmul prefill gave the f32 result: the tensor-core kernel did not run";
    EXPECT_LE(e, kBf16AttentionNmse);
  }
}

// head_dim 72 (SigLIP so400m) must take the tensor-core kernel (padded to 80), not the exact f32 fallback, at the
// Gemma 3 tower's shape: 4096 patches (896 px / 14)², 16 heads, non-causal. Both paths run on the GPU (the CPU
// reference case is the shorter "hd 72" conformance case); their times are printed for CUDA.md.
TEST(CudaKernels, AttentionBf16MatmulHeadDim72UsesTensorCores) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(72);
  const int64_t n = 4096, nh = 16, hd = 72;
  const std::vector<float> q = random_vec(rng, static_cast<size_t>(n * nh * hd), -2, 2);
  const std::vector<float> k = random_vec(rng, static_cast<size_t>(n * nh * hd), -2, 2);
  const std::vector<float> v = random_vec(rng, static_cast<size_t>(n * nh * hd));
  std::vector<int64_t> kp(static_cast<size_t>(n));
  std::iota(kp.begin(), kp.end(), int64_t{0});
  DeviceFloats gq(q), gk(k), gv(v);
  std::vector<float> got[2];
  double ms[2] = {0, 0};
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    ops::AttentionMask mask{false, 0, nullptr, 0};
    mask.bf16_matmul = bf16 == 1;
    DeviceFloats out = DeviceFloats::poison(q.size());
    auto run = [&] {
      table().attention(gq.ptr(), n, 0, gk.ptr(), gv.ptr(), kp.data(), n, nh, nh, hd, 1.0f / std::sqrt(72.0f), 0.0f,
                        mask, out.ptr());
    };
    run();  // warm-up (first launch sets the kernel's shared-memory limit)
    cuda::synchronize();
    constexpr int kReps = 5;
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < kReps; ++r) run();
    cuda::synchronize();
    ms[bf16] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / kReps;
    got[bf16] = out.host();
  }
  std::printf("[hd 72 attention] %lld queries x %lld heads, non-causal: f32 %.3f ms, bf16 tensor cores %.3f ms\n",
              static_cast<long long>(n), static_cast<long long>(nh), ms[0], ms[1]);
  const double e = nmse(got[1].data(), std::vector<double>(got[0].begin(), got[0].end()));
  EXPECT_GT(e, 1e-9) << "hd 72 bf16_matmul prefill gave the f32 result: the tensor-core kernel did not run";
  EXPECT_LE(e, kBf16AttentionNmse);
}

TEST(CudaKernels, AllocatorCachesBlocksAndReportsToTracker) {
  SKIP_WITHOUT_GPU();
  cuda::synchronize();
  cuda::release_cache();
  auto& tracker = MemoryTracker::instance();
  const MemorySnapshot s0 = tracker.snapshot(MemDevice::kGpu);
  // Size classes: 3000 B -> 4096 (powers of two up to 4 KiB); 3 MiB + 1 -> 3.25 MiB (steps of 256 KiB
  // between 2 and 4 MiB); 700 MiB + 1 -> 702 MiB (steps capped at 2 MiB); 100 B -> 256; 4097 -> 4608.
  void* p = cuda::device_alloc(3000, MemCategory::kKvCache);
  const MemorySnapshot s1 = tracker.snapshot(MemDevice::kGpu);
  EXPECT_EQ(s1.active - s0.active, 4096);
  EXPECT_EQ(s1.by_category[static_cast<int>(MemCategory::kKvCache)] -
                s0.by_category[static_cast<int>(MemCategory::kKvCache)],
            4096);
  cuda::device_free(p, 3000, MemCategory::kKvCache);
  const MemorySnapshot s2 = tracker.snapshot(MemDevice::kGpu);
  EXPECT_EQ(s2.active, s0.active);
  EXPECT_EQ(s2.cache - s0.cache, 4096);
  void* q = cuda::device_alloc(3050, MemCategory::kScratch);  // same class: the cached block comes back
  EXPECT_EQ(q, p);
  EXPECT_EQ(tracker.snapshot(MemDevice::kGpu).cache, s0.cache);
  cuda::device_free(q, 3050, MemCategory::kScratch);
  struct Want {
    size_t ask;
    int64_t cls;
  };
  for (const Want& w : {Want{(size_t{3} << 20) + 1, int64_t{13} << 18},
                        Want{(size_t{700} << 20) + 1, int64_t{702} << 20}, Want{100, 256}, Want{4097, 4608}}) {
    const int64_t before = tracker.snapshot(MemDevice::kGpu).active;
    void* b = cuda::device_alloc(w.ask, MemCategory::kWeights);
    EXPECT_EQ(tracker.snapshot(MemDevice::kGpu).active - before, w.cls) << w.ask << " bytes";
    cuda::device_free(b, w.ask, MemCategory::kWeights);
  }
  cuda::release_cache();
  EXPECT_EQ(tracker.snapshot(MemDevice::kGpu).cache, 0);
  EXPECT_EQ(tracker.snapshot(MemDevice::kGpu).active, s0.active);
}

// The KV cache holds the same bits on both devices: CUDA's codes, scales, biases and dequantized
// values equal the CPU reference's bit for bit (memcmp, so -0 vs +0 or a 1-ulp scale fails too).
TEST(CudaKernels, KvQuantIsBitExact) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  for (int bits = 2; bits <= 8; ++bits)
    for (int group : {32, 64, 128}) {
      SCOPED_TRACE(std::to_string(bits) + "-bit g" + std::to_string(group));
      const KvQuantInput in = kv_quant_input(rng, bits, group);
      ops::force_scalar_kernels(true);
      const KvQuantOut want = run_kv_quantize(in, false);
      const std::vector<float> want_deq = run_kv_dequantize(in, want, false);
      ops::force_scalar_kernels(false);
      const KvQuantOut got = run_kv_quantize(in, true);
      EXPECT_EQ(std::memcmp(got.packed.data(), want.packed.data(), want.packed.size() * 4), 0) << "codes";
      EXPECT_EQ(std::memcmp(got.scales.data(), want.scales.data(), want.scales.size() * 4), 0) << "scales";
      EXPECT_EQ(std::memcmp(got.biases.data(), want.biases.data(), want.biases.size() * 4), 0) << "biases";
      const std::vector<float> got_deq = run_kv_dequantize(in, want, true);
      EXPECT_EQ(std::memcmp(got_deq.data(), want_deq.data(), want_deq.size() * 4), 0) << "dequantized";
    }
}

// Every attention / attention_quantized case on the GPU against the scalar reference with the case's
// bound (the decode-kernel and merge variants below run them under their switches). `label` names the
// variant in failures.
static void expect_attention_cases_match_reference(const std::string& label) {
  for (const Case& c : build_cases()) {
    if (c.op != "attention" && c.op != "attention_quantized") continue;
    ops::force_scalar_kernels(true);
    std::vector<float> want = c.cpu();
    ops::force_scalar_kernels(false);
    std::vector<float> got = c.gpu();
    ASSERT_EQ(got.size(), want.size()) << c.op << " [" << c.what << "] " << label;
    EXPECT_LE(nmse(got.data(), std::vector<double>(want.begin(), want.end())), c.tol)
        << c.op << " [" << c.what << "] " << label;
  }
}

// The decode kernel's two merges on every attention case, with the same bounds: the one-launch merge
// (the default: the last block of each team of splits merges them, counters reset for the next call),
// run twice so the second pass starts from the counters the first left behind, and the two-launch
// merge (VLMCHECK_CUDA_DECODE_MERGE=combine: attention_combine_kernel). Leaves the default on.
TEST(CudaKernels, DecodeAttentionBothMergesMatchScalarReference) {
  SKIP_WITHOUT_GPU();
  for (const bool last_block : {true, false}) {
    cuda::set_decode_last_block_merge(last_block);
    for (int pass = 0; pass < (last_block ? 2 : 1); ++pass)
      expect_attention_cases_match_reference((last_block ? "one launch, pass " : "two launches, pass ") +
                                             std::to_string(pass));
  }
  cuda::set_decode_last_block_merge(true);
}

// The tile kernel (VLMCHECK_CUDA_DECODE_KERNEL=tile; the default is the register kernel) on every
// attention case, one-launch merge, against the scalar reference with the usual bound.
TEST(CudaKernels, DecodeAttentionTileKernelMatchesScalarReference) {
  SKIP_WITHOUT_GPU();
  cuda::set_decode_tile_kernel(true);
  expect_attention_cases_match_reference("tile kernel");
  cuda::set_decode_tile_kernel(false);
}

// The 4-bit tensor-core GEMV with its K-splits reduced through global memory (the last block of each
// row group adds the splits' sums in split order): every "mma" case with 2, 3, 8 and 64 splits per
// row group (capped at one round per warp), and with thread-block clusters only (1: the rule before
// global splits, which long rows now take by default), against the scalar reference with the usual
// bound, run twice so the second pass starts from the counters the first left behind and must give
// the same bits. Leaves the launch's own rule on.
TEST(CudaKernels, QuantGemvGlobalSplitKMatchesScalarReference) {
  SKIP_WITHOUT_GPU();
  std::vector<Case> mma;
  std::vector<std::vector<float>> want;
  for (const Case& c : build_cases()) {
    if ((c.op != "linear" && c.op != "linear_group") || c.what.rfind("mma", 0) != 0) continue;
    ops::force_scalar_kernels(true);
    want.push_back(c.cpu());
    ops::force_scalar_kernels(false);
    mma.push_back(c);
  }
  ASSERT_GE(mma.size(), 40u);
  for (const int splits : {1, 2, 3, 8, 64}) {
    cuda::set_gemv_split_k(splits);
    for (size_t i = 0; i < mma.size(); ++i) {
      const std::vector<float> got = mma[i].gpu(), again = mma[i].gpu();
      ASSERT_EQ(got.size(), want[i].size()) << mma[i].what;
      EXPECT_LE(nmse(got.data(), std::vector<double>(want[i].begin(), want[i].end())), mma[i].tol)
          << mma[i].op << " [" << mma[i].what << "] " << splits << " splits";
      EXPECT_EQ(std::memcmp(got.data(), again.data(), got.size() * 4), 0)
          << mma[i].op << " [" << mma[i].what << "] " << splits << " splits: second run differs";
    }
  }
  cuda::set_gemv_split_k(0);
}

// Prefill (n >= 8) of dense 16-bit members: the fused forms round their input in the producing kernel
// (rms_norm_rounded, gated_rounded) and add into y in cuBLASLt's epilogue (linear_dense.cu
// dense_group_fused). Against the same ops composed on the GPU (rms_norm / gated_activate on a copy, the
// plain group, a separate add): a norm without accumulation gives the very bits (same rounding of the
// same f32 values, same GEMM); an accumulating member differs only by the order of y + x·Wᵀ + bias.
TEST(CudaKernels, PrefillFusedGroupIsTheComposedOps) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(91);
  for (const DType dt : {DType::kBF16, DType::kF16}) {
    for (const int64_t n : {8, 64, 203}) {
      SCOPED_TRACE(std::string(dt == DType::kBF16 ? "bf16" : "f16") + " n=" + std::to_string(n));
      const int64_t cols = 512;
      const ops::Weight w0 = gpu_weight(dense_weight(random_tensor(rng, {256, cols}, dt)));
      const ops::Weight w1 = gpu_weight(dense_weight(random_tensor(rng, {128, cols}, dt)));
      const Tensor b0 = gpu_tensor(random_tensor(rng, {256}, DType::kBF16));
      const Tensor none;
      const Tensor norm_w = gpu_tensor(random_tensor(rng, {cols}, DType::kBF16, 0.5f, 1.5f));
      const ops::LinearNorm norm{&norm_w, 1e-6f, 0.0f};
      const std::vector<float> x = random_vec(rng, static_cast<size_t>(n * cols), -3.0f, 3.0f);
      const std::vector<float> up = random_vec(rng, static_cast<size_t>(n * cols), -2.0f, 2.0f);
      const std::vector<float> y0 = random_vec(rng, static_cast<size_t>(n * 128));
      DeviceFloats gx(x), gu(up);
      // norm, no accumulation: bit for bit.
      {
        DeviceFloats f0 = DeviceFloats::poison(static_cast<size_t>(n * 256)), f1(y0);
        DeviceFloats c0 = DeviceFloats::poison(static_cast<size_t>(n * 256)), c1(y0);
        const ops::LinearOut fused[2] = {{&w0, &b0, f0.ptr(), false, &norm}, {&w1, &none, f1.ptr(), true, &norm}};
        table().linear_group(gx.ptr(), n, fused, 2);
        DeviceFloats hx = DeviceFloats::poison(static_cast<size_t>(n * cols));
        table().rms_norm(gx.ptr(), n, cols, norm_w, 1e-6f, 0.0f, hx.ptr());
        DeviceFloats t1 = DeviceFloats::poison(static_cast<size_t>(n * 128));
        const ops::LinearOut plain[2] = {{&w0, &b0, c0.ptr(), false, nullptr}, {&w1, &none, t1.ptr(), false, nullptr}};
        table().linear_group(hx.ptr(), n, plain, 2);
        table().add(c1.ptr(), t1.ptr(), n * 128);
        const std::vector<float> a0 = f0.host(), e0 = c0.host(), a1 = f1.host(), e1 = c1.host();
        EXPECT_EQ(std::memcmp(a0.data(), e0.data(), a0.size() * 4), 0) << "normalized member";
        for (size_t i = 0; i < a1.size(); ++i)
          ASSERT_NEAR(a1[i], e1[i], 1e-5 * (1.0 + std::fabs(e1[i]))) << "accumulating member, element " << i;
      }
    }
  }
}

// The fused decode kernel reads the packed rows and dequantizes them in shared memory with
// kv_dequantize's arithmetic, then runs the f32 decode kernel's math: so attention_quantized must give
// the very bits of kv_dequantize followed by attention on the GPU (one split, several splits in one
// merge team, several teams; aligned and unaligned code rows; a ring order), with the register
// kernel (the default: the codes dequantized in registers) and the tile kernel.
TEST(CudaKernels, AttentionQuantizedDecodeIsDequantizeThenAttentionBitForBit) {
  SKIP_WITHOUT_GPU();
  for (const bool tile : {false, true}) {
    SCOPED_TRACE(tile ? "tile kernel" : "register kernel");
    cuda::set_decode_tile_kernel(tile);
    std::mt19937 rng(77);
    struct Q {
      int64_t nq, nk, nh, nkv, hd;
      int bits, group;
      bool ring;
    };
    for (const Q& a : std::vector<Q>{{1, 20, 8, 2, 128, 4, 64, false},
                                     {1, 2048, 16, 2, 128, 4, 64, false},
                                     {3, 5000, 28, 4, 128, 8, 32, true},
                                     {2, 777, 8, 4, 64, 3, 32, false},
                                     {1, 1500, 8, 4, 256, 6, 128, true}}) {
      SCOPED_TRACE(std::to_string(a.bits) + "-bit g" + std::to_string(a.group) + ", " + std::to_string(a.nk) + " keys");
      const int64_t row = a.nkv * a.hd, words = ops::kv_packed_words(row, a.bits), groups = row / a.group;
      const int64_t q0 = a.nk - a.nq;
      std::vector<float> q = random_vec(rng, static_cast<size_t>(a.nq * a.nh * a.hd), -2, 2);
      std::vector<int64_t> kpos(static_cast<size_t>(a.nk));
      for (int64_t j = 0; j < a.nk; ++j) kpos[j] = a.ring ? (j + 7) % a.nk : j;
      DeviceFloats gq(q), k = DeviceFloats::poison(static_cast<size_t>(a.nk * row)),
          v = DeviceFloats::poison(static_cast<size_t>(a.nk * row));
      std::shared_ptr<void> packed[2];
      std::vector<DeviceFloats> sb;
      for (int plane = 0; plane < 2; ++plane) {
        DeviceFloats x(random_vec(rng, static_cast<size_t>(a.nk * row), -2, 2));
        packed[plane] = device_copy(std::vector<uint32_t>(static_cast<size_t>(a.nk * words)).data(),
                                    static_cast<size_t>(a.nk * words) * 4);
        sb.push_back(DeviceFloats::poison(static_cast<size_t>(a.nk * groups)));
        sb.push_back(DeviceFloats::poison(static_cast<size_t>(a.nk * groups)));
        table().kv_quantize(x.ptr(), a.nk, row, a.bits, a.group, static_cast<uint32_t*>(packed[plane].get()),
                            sb[2 * plane].ptr(), sb[2 * plane + 1].ptr());
        table().kv_dequantize(static_cast<const uint32_t*>(packed[plane].get()), sb[2 * plane].ptr(),
                              sb[2 * plane + 1].ptr(), a.nk, row, a.bits, a.group, plane == 0 ? k.ptr() : v.ptr());
      }
      ops::AttentionMask mask;
      DeviceFloats want = DeviceFloats::poison(q.size()), got = DeviceFloats::poison(q.size());
      table().attention(gq.ptr(), a.nq, q0, k.ptr(), v.ptr(), kpos.data(), a.nk, a.nh, a.nkv, a.hd, 0.09f, 0.0f, mask,
                        want.ptr());
      const ops::QuantizedKV kv{static_cast<const uint32_t*>(packed[0].get()), sb[0].ptr(), sb[1].ptr(),
                                static_cast<const uint32_t*>(packed[1].get()), sb[2].ptr(), sb[3].ptr(), a.bits,
                                a.group};
      table().attention_quantized(gq.ptr(), a.nq, q0, kv, kpos.data(), a.nk, a.nh, a.nkv, a.hd, 0.09f, 0.0f, mask,
                                  got.ptr());
      const std::vector<float> w = want.host(), g = got.host();
      EXPECT_EQ(std::memcmp(w.data(), g.data(), w.size() * 4), 0);
      EXPECT_TRUE(std::all_of(g.begin(), g.end(), [](float f) { return std::isfinite(f); }));
    }
  }
  cuda::set_decode_tile_kernel(false);
}

// ops::attention_with_rope: on the GPU the decode kernel rotates q and the new key row itself (one
// query, whole heads, up to 8 query heads per kv head); every other shape composes rope_qk +
// attention. Either way the output and the rotated key rows must be the bits of rope_qk / mrope_qk
// followed by attention on the GPU, and match the scalar reference (rope then attention on the host).
// Shapes: the 3B (RoPE and M-RoPE with unequal stream positions), 7B, head_dim 256 (two float4s a
// lane), 64 and 32, a window, a cache of only the new key; and fallbacks (3 queries, 16 query heads
// per kv head, partial rotary).
TEST(CudaKernels, AttentionWithRopeIsRopeThenAttentionBitForBit) {
  SKIP_WITHOUT_GPU();
  struct R {
    int64_t nq, nk, nh, nkv, hd, rotary, window;
    bool mrope;
  };
  std::mt19937 rng(91);
  for (const R& c : std::vector<R>{{1, 2048, 16, 2, 128, 128, 0, false},
                                   {1, 2048, 16, 2, 128, 128, 0, true},
                                   {1, 777, 28, 4, 128, 128, 0, false},
                                   {1, 1500, 8, 4, 256, 256, 0, false},
                                   {1, 300, 8, 8, 64, 64, 100, false},
                                   {1, 33, 4, 2, 32, 32, 0, false},
                                   {1, 1, 16, 2, 128, 128, 0, true},
                                   {3, 600, 16, 2, 128, 128, 0, false},
                                   {1, 500, 32, 2, 128, 128, 0, false},
                                   {1, 400, 16, 2, 128, 64, 0, false}}) {
    SCOPED_TRACE(std::to_string(c.nh) + "/" + std::to_string(c.nkv) + " heads of " + std::to_string(c.hd) + ", " +
                 std::to_string(c.nk) + " keys, nq " + std::to_string(c.nq) + (c.mrope ? ", mrope" : ", rope") +
                 " rotary " + std::to_string(c.rotary));
    const int64_t row = c.nkv * c.hd, q0 = c.nk - c.nq;
    const std::vector<float> q = random_vec(rng, static_cast<size_t>(c.nq * c.nh * c.hd), -2, 2);
    const std::vector<float> k = random_vec(rng, static_cast<size_t>(c.nk * row), -2, 2);
    const std::vector<float> v = random_vec(rng, static_cast<size_t>(c.nk * row), -2, 2);
    std::vector<float> inv = random_vec(rng, static_cast<size_t>(c.rotary / 2), 0.0f, 1.0f);
    std::vector<int64_t> pos(static_cast<size_t>(3 * c.nq)), kpos(static_cast<size_t>(c.nk));
    for (int64_t i = 0; i < 3 * c.nq; ++i) pos[i] = q0 + i % c.nq + (c.mrope ? (i / c.nq) * 17 : 0);
    for (int64_t j = 0; j < c.nk; ++j) kpos[j] = j;
    const int64_t h = c.hd / 2;
    const std::vector<int> sections = {static_cast<int>(h - 2 * (3 * h / 8)), static_cast<int>(3 * h / 8),
                                       static_cast<int>(3 * h / 8)};
    ops::AttentionMask mask;
    mask.sliding_window = c.window;
    const ops::AttentionRope rope{c.rotary, inv.data(), pos.data(), c.mrope ? &sections : nullptr, 1.05f};
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    // GPU: the fused op, then rope_qk + attention on fresh copies.
    DeviceFloats fq(q), fk(k), fv(v), fo = DeviceFloats::poison(q.size());
    DeviceFloats sq(q), sk(k), so = DeviceFloats::poison(q.size());
    {
      ops::DeviceScope scope(Device::kCuda);
      ops::attention_with_rope(fq.ptr(), c.nq, q0, fk.ptr(), fv.ptr(), kpos.data(), c.nk, c.nh, c.nkv, c.hd, scale,
                               0.0f, mask, rope, fo.ptr());
      float* kn = sk.ptr() + q0 * row;
      if (c.mrope)
        ops::mrope_qk(sq.ptr(), c.nh, kn, c.nkv, c.nq, c.hd, inv.data(), pos.data(), sections, 1.05f);
      else
        ops::rope_qk(sq.ptr(), c.nh, kn, c.nkv, c.nq, c.hd, c.rotary, inv.data(), pos.data(), 1.05f);
      ops::attention(sq.ptr(), c.nq, q0, sk.ptr(), fv.ptr(), kpos.data(), c.nk, c.nh, c.nkv, c.hd, scale, 0.0f, mask,
                     so.ptr());
    }
    const std::vector<float> got = fo.host(), want = so.host(), got_k = fk.host(), want_k = sk.host();
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << "output";
    EXPECT_EQ(std::memcmp(got_k.data(), want_k.data(), got_k.size() * 4), 0) << "rotated keys";
    EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float f) { return std::isfinite(f); }));
    // The scalar reference on the host.
    std::vector<float> hq = q, hk = k, ho(q.size());
    ops::force_scalar_kernels(true);
    ops::attention_with_rope(hq.data(), c.nq, q0, hk.data(), v.data(), kpos.data(), c.nk, c.nh, c.nkv, c.hd, scale,
                             0.0f, mask, rope, ho.data());
    ops::force_scalar_kernels(false);
    EXPECT_LE(nmse(got.data(), std::vector<double>(ho.begin(), ho.end())), f32_attention_nmse(c.nk)) << "output";
    EXPECT_LE(nmse(got_k.data(), std::vector<double>(hk.begin(), hk.end())), 1e-13) << "rotated keys";
  }
}

TEST(CudaKernels, CopiesAndCopy2d) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  const std::vector<float> src = random_vec(rng, 6 * 10);  // 6 rows of 10
  DeviceFloats a(src), b = DeviceFloats::poison(src.size());
  cuda::copy(b.ptr(), Device::kCuda, a.ptr(), Device::kCuda, src.size() * 4);
  EXPECT_EQ(b.host(), src);
  // Columns 3..6 of every row into a packed [6, 4] block.
  DeviceFloats c = DeviceFloats::poison(6 * 4);
  cuda::copy_2d(c.ptr(), 4 * 4, a.ptr() + 3, 10 * 4, 4 * 4, 6);
  std::vector<float> got = c.host();
  for (int r = 0; r < 6; ++r)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(got[r * 4 + j], src[r * 10 + 3 + j]) << r << "," << j;
  EXPECT_THROW(cuda::copy_2d(c.ptr(), 8, a.ptr(), 40, 16, 2), Error);  // width wider than the dst pitch
}

// Host <-> device blocks of 2 MB and more take the pinned paths of cuda::copy (uploads up to 64 MB through
// the pinned pool, downloads through two 8 MB buffers in turn): odd lengths, one and several chunks, a
// block past the upload limit, back-to-back uploads of one size (a pool buffer must not be rewritten
// while its copy is queued), and a download ordered after a device-side copy.
TEST(CudaKernels, LargeCopiesRoundTripThroughPinnedBuffers) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  const size_t mb = size_t{1} << 20;
  for (size_t bytes : {2 * mb - 4, 2 * mb, 8 * mb + 4, 17 * mb + 12, 70 * mb + 3}) {
    std::vector<uint8_t> a(bytes), b(bytes);
    for (auto& x : a) x = static_cast<uint8_t>(rng());
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    std::shared_ptr<void> da = device_copy(a.data(), bytes), db = device_copy(b.data(), bytes);
    std::vector<uint8_t> back(bytes, 0);
    cuda::copy(back.data(), Device::kCpu, da.get(), Device::kCuda, bytes);
    EXPECT_TRUE(back == a) << bytes << " bytes, first upload";
    cuda::copy(back.data(), Device::kCpu, db.get(), Device::kCuda, bytes);
    EXPECT_TRUE(back == b) << bytes << " bytes, second upload";
    cuda::copy(da.get(), Device::kCuda, db.get(), Device::kCuda, bytes);
    std::fill(back.begin(), back.end(), 0);
    cuda::copy(back.data(), Device::kCpu, da.get(), Device::kCuda, bytes);
    EXPECT_TRUE(back == b) << bytes << " bytes, after a device copy";
  }
}

TEST(CudaKernels, UnsupportedShapesThrowTypedErrors) {
  SKIP_WITHOUT_GPU();
  std::vector<float> host(2 * 300, 1.0f);
  DeviceFloats q(host), out = DeviceFloats::poison(host.size());
  const int64_t kp[1] = {0};
  try {
    table().attention(q.ptr(), 1, 0, q.ptr(), q.ptr(), kp, 1, 2, 2, 300, 1.0f, 0.0f, {}, out.ptr());
    FAIL() << "head_dim 300 should be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("head_dim 300"), std::string::npos) << e.what();
  }
  std::mt19937 rng(1);
  ops::Weight w = dense_weight(random_tensor(rng, {4, 8}, DType::kBF16));
  const int32_t bad[1] = {4};
  EXPECT_THROW(table().embedding(gpu_weight(w), bad, 1, 1.0f, out.ptr()), Error);
  // A host weight handed to the GPU table is refused, not dereferenced.
  EXPECT_THROW(table().linear(q.ptr(), 1, w, Tensor(), out.ptr()), Error);
}

// ops::sample on CUDA picks the CPU's id for the same u: many rows with exact ties (a 0.25 grid), sharp
// and flat, four vocabulary sizes, each processor and filter alone, filters at their edges, and the
// whole chain. The two may differ only where u sits within 1e-6 (relative) of a CDF boundary — the CPU
// itself then picks another id at u(1 ± 1e-6) — and such draws are counted, not failed; any other
// difference fails.
TEST(CudaKernels, SampleMatchesTheCpuForEveryFilterAndTheChain) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(4242);
  struct Config {
    std::string what;
    ops::SamplingSpec spec;
  };
  std::vector<Config> configs;
  auto add = [&](std::string what, auto set) {
    ops::SamplingSpec s;
    s.temperature = 1.0f;
    set(s);
    configs.push_back({std::move(what), s});
  };
  add("temperature 0.7", [](ops::SamplingSpec& s) { s.temperature = 0.7f; });
  add("greedy", [](ops::SamplingSpec& s) { s.temperature = 0.0f; });
  add("greedy + penalties", [](ops::SamplingSpec& s) {
    s.temperature = 0.0f;
    s.repetition_penalty = 1.5f;
    s.frequency_penalty = 0.5f;
  });
  for (float p : {0.01f, 0.5f, 0.9f, 0.999f})
    add("top_p " + std::to_string(p), [p](ops::SamplingSpec& s) { s.top_p = p; });
  for (float p : {0.05f, 0.5f, 1.0f}) add("min_p " + std::to_string(p), [p](ops::SamplingSpec& s) { s.min_p = p; });
  for (int64_t k : {1, 2, 20, 1000, 1 << 30})
    add("top_k " + std::to_string(k), [k](ops::SamplingSpec& s) { s.top_k = k; });
  add("penalties + bias", [](ops::SamplingSpec& s) {
    s.repetition_penalty = 1.3f;
    s.repetition_context = 0;
    s.presence_penalty = 0.5f;
    s.frequency_penalty = 0.25f;
    s.frequency_context = 8;
    s.logit_bias = {{0, 1.5f}, {3, -std::numeric_limits<float>::infinity()}, {17, 4.0f}};
  });
  add("top_p + top_k", [](ops::SamplingSpec& s) {
    s.top_p = 0.8f;
    s.top_k = 50;
  });
  add("full chain", [](ops::SamplingSpec& s) { s = full_chain_spec(); });
  int draws = 0, boundary = 0, differed = 0;
  for (int64_t vocab : {int64_t{37}, int64_t{1000}, int64_t{32000}, int64_t{152064}})
    for (const Config& c : configs)
      for (int row = 0; row < (vocab > 100000 ? 6 : 12); ++row) {
        // Sharp rows (spread 24: a few tokens hold the mass) and flat ones (spread 2).
        const std::vector<float> logits = tied_logits(rng, vocab, row % 2 ? 24.0f : 2.0f);
        std::vector<int32_t> hist;
        const auto hot = static_cast<uint32_t>(std::min<int64_t>(vocab, 40));  // penalties on the first ids
        for (int i = 0; i < 30; ++i) hist.push_back(static_cast<int32_t>(rng() % hot));
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        const int32_t want = sample_id(logits, c.spec, hist, u, false);
        const int32_t got = sample_id(logits, c.spec, hist, u, true);
        ++draws;
        if (got == want) continue;
        ++differed;
        const double above = std::min(u * (1 + 1e-6), std::nextafter(1.0, 0.0));
        const bool near = sample_id(logits, c.spec, hist, u * (1 - 1e-6), false) != want ||
                          sample_id(logits, c.spec, hist, above, false) != want;
        if (near) {
          ++boundary;
          continue;
        }
        ADD_FAILURE() << c.what << ", vocab " << vocab << ", row " << row << ", u " << u << ": cuda " << got << ", cpu "
                      << want;
      }
  std::printf("  sample: %d draws, %d differed, %d of them with u within 1e-6 of a CDF boundary\n", draws, differed,
              boundary);
  EXPECT_LE(boundary, draws / 100);
}

// The same seeded stream of u over a growing history gives the same tokens (the generator's loop).
TEST(CudaKernels, SampleIsDeterministicAndErrorsLikeTheCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  const std::vector<float> logits = tied_logits(rng, 152064, 6.0f);
  const ops::SamplingSpec spec = full_chain_spec();
  const std::vector<int32_t> hist = {1, 2, 3};
  for (double u : {0.0, 0.3, 0.999999})
    EXPECT_EQ(sample_id(logits, spec, hist, u, true), sample_id(logits, spec, hist, u, true));
  ops::SamplingSpec banned;
  banned.logit_bias = {{0, -std::numeric_limits<float>::infinity()}, {1, -std::numeric_limits<float>::infinity()}};
  const std::vector<float> two = {0.5f, 0.25f};
  EXPECT_THROW(sample_id(two, banned, {}, 0.5, true), Error);
  EXPECT_THROW(sample_id(two, full_chain_spec(), {5}, 0.5, true), Error);  // history id outside the vocabulary
}

// Inside a captured step (ops::run_graph) sample gives the eager op's ids, and a fully masked row
// comes back as id -1 (it cannot throw before the graph has run; ops.h).
TEST(CudaKernels, SampleInsideRunGraphMatchesEagerAndFlagsMaskedRows) {
  SKIP_WITHOUT_GPU();
  ops::DeviceScope scope(Device::kCuda);
  cuda::set_graph_options(true, 64);
  std::mt19937 rng(21);
  const std::vector<float> logits = tied_logits(rng, 151936, 6.0f);
  DeviceFloats dev(logits);
  const ops::SamplingSpec spec = full_chain_spec();
  const ops::SamplingSpec greedy;
  const std::vector<int32_t> hist = {7, 8, 9, 7};
  const int key = 0;
  const cuda::GraphStats before = cuda::graph_stats();
  for (double u : {0.05, 0.5, 0.95}) {
    for (const ops::SamplingSpec* sp : {&spec, &greedy}) {
      const int32_t want = sample_id(logits, *sp, hist, u, true);
      int32_t got = -2;
      ops::run_graph(&key, [&] {
        ops::sample(dev.ptr(), 151936, *sp, hist.data(), static_cast<int64_t>(hist.size()), u, &got);
      });
      EXPECT_EQ(got, want) << "u " << u << " temperature " << sp->temperature;
    }
  }
  EXPECT_GT(cuda::graph_stats().pieces, before.pieces) << "the steps were not captured";
  ops::SamplingSpec banned = spec;
  banned.logit_bias = {{0, -std::numeric_limits<float>::infinity()}, {1, -std::numeric_limits<float>::infinity()}};
  const std::vector<float> two = {0.5f, 0.25f};
  DeviceFloats dtwo(two);
  for (const float t : {0.0f, 0.8f}) {
    banned.temperature = t;
    int32_t got = 5;
    ops::run_graph(&key, [&] { ops::sample(dtwo.ptr(), 2, banned, nullptr, 0, 0.5, &got); });
    EXPECT_EQ(got, -1) << "temperature " << t;
  }
}

// The sampling step before and after: the logits row copied to the host and sampled there (what
// generation did for any non-greedy chain) vs ops::sample on the GPU with only the id copied back.
// Vocabulary 151936 (Qwen2.5), the full chain; printed, not asserted (timings depend on the card).
TEST(CudaKernels, SampleTiming) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  const int64_t vocab = 151936;
  std::vector<float> host = random_vec(rng, static_cast<size_t>(vocab), -10.0f, 10.0f);
  DeviceFloats dev(host);
  const ops::SamplingSpec spec = full_chain_spec();
  std::vector<int32_t> hist;
  for (int i = 0; i < 200; ++i) hist.push_back(static_cast<int32_t>(rng() % vocab));
  int32_t id = 0;
  auto time_us = [](int reps, auto fn) {
    fn();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) fn();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
  };
  std::vector<float> row(static_cast<size_t>(vocab));
  const double before = time_us(20, [&] {
    cuda::copy(row.data(), Device::kCpu, dev.ptr(), Device::kCuda, row.size() * 4);
    ops::sample(row.data(), vocab, spec, hist.data(), static_cast<int64_t>(hist.size()), 0.5, &id);
  });
  const double after = time_us(200, [&] {
    table().sample(dev.ptr(), vocab, spec, hist.data(), static_cast<int64_t>(hist.size()), 0.5, &id);
  });
  ops::SamplingSpec plain;
  plain.temperature = 0.8f;
  const double temp_only = time_us(200, [&] {
    table().sample(dev.ptr(), vocab, plain, nullptr, 0, 0.5, &id);
  });
  int32_t am = 0;
  const double argmax = time_us(200, [&] { table().argmax(dev.ptr(), 1, vocab, &am); });
  std::printf("  sample step, vocab %lld, full chain: host path (copy + CPU chain) %.1f us, GPU %.1f us; "
              "temperature only %.1f us; argmax %.1f us\n",
              static_cast<long long>(vocab), before, after, temp_only, argmax);
}

// ---- run_graph --------------------------------------------------------------------------------------
// A small decode step — embedding, rms_norm, linear_group writing q and the cache's next K/V rows,
// rope, attention over the grown cache (positions 3 apart, so k_pos is not consecutive and is staged
// every step), the head, argmax, and a copy of the logits to the host — run for many steps directly
// and through ops::run_graph must give bit-identical ids, logits and caches: capture changes how the
// kernels are launched, never what they compute. Each step feeds back the previous step's id, so one
// wrong step shows in all later ones. The cache grows past 32 keys, where the decode attention goes
// from one split to several (a combine kernel joins: the graph's topology changes) and past the
// sizes where its split count and scratch grow again.
namespace {

struct GraphDecoder {
  static constexpr int64_t kVocab = 512, kHeads = 4, kKvHeads = 2, kHd = 32, kHidden = kHeads * kHd;
  static constexpr int64_t kRow = kKvHeads * kHd;
  ops::Weight embed, wq, wk, wv, head;
  Tensor norm;
  std::vector<float> inv_freq;

  explicit GraphDecoder(std::mt19937& rng) {
    auto weight = [&](int64_t rows, int64_t cols) {
      return ops::to_device(dense_weight(random_tensor(rng, {rows, cols}, DType::kBF16)), Device::kCuda);
    };
    embed = weight(kVocab, kHidden);
    wq = weight(kHeads * kHd, kHidden);
    wk = weight(kRow, kHidden);
    wv = weight(kRow, kHidden);
    head = weight(kVocab, kHeads * kHd);
    norm = ops::to_device(random_tensor(rng, {kHidden}, DType::kBF16, 0.5f, 1.5f), Device::kCuda);
    for (int64_t i = 0; i < kHd / 2; ++i)
      inv_freq.push_back(static_cast<float>(std::pow(10000.0, -2.0 * static_cast<double>(i) / kHd)));
  }

  struct Run {
    Tensor kc, vc;  // [capacity, kRow] f32 on the GPU
    std::vector<int64_t> k_pos;
  };
  Run start(int64_t capacity) const {
    return {ops::empty({capacity, kRow}, DType::kF32, MemCategory::kScratch, Device::kCuda),
            ops::empty({capacity, kRow}, DType::kF32, MemCategory::kScratch, Device::kCuda),
            {}};
  }

  // One step for token `id`: the next id into *next, the logits into logits_host [kVocab] (both
  // host memory: inside run_graph they are written when it returns).
  void step(Run& r, int32_t id, int32_t* next, float* logits_host) const {
    const auto buf = [](int64_t n) { return ops::empty({n}, DType::kF32, MemCategory::kScratch, Device::kCuda); };
    Tensor x = buf(kHidden), h = buf(kHidden), q = buf(kHeads * kHd), a = buf(kHeads * kHd), logits = buf(kVocab);
    const int64_t len = static_cast<int64_t>(r.k_pos.size());
    const int64_t pos = 3 * len + 1;
    float* krow = r.kc.data<float>() + len * kRow;
    float* vrow = r.vc.data<float>() + len * kRow;
    ops::embedding(embed, &id, 1, 1.0f, x.data<float>());
    ops::rms_norm(x.data<float>(), 1, kHidden, norm, 1e-6f, 0.0f, h.data<float>());
    const ops::LinearOut outs[3] = {{&wq, nullptr, q.data<float>()}, {&wk, nullptr, krow}, {&wv, nullptr, vrow}};
    ops::linear_group(h.data<float>(), 1, outs, 3);
    ops::rope(q.data<float>(), 1, kHeads, kHd, kHd, inv_freq.data(), &pos);
    ops::rope(krow, 1, kKvHeads, kHd, kHd, inv_freq.data(), &pos);
    r.k_pos.push_back(pos);
    ops::attention(q.data<float>(), 1, pos, r.kc.data<float>(), r.vc.data<float>(), r.k_pos.data(), len + 1,
                   kHeads, kKvHeads, kHd, 1.0f / std::sqrt(static_cast<float>(kHd)), 0.0f, ops::AttentionMask{},
                   a.data<float>());
    ops::linear(a.data<float>(), 1, head, Tensor(), logits.data<float>());
    ops::argmax(logits.data<float>(), 1, kVocab, next);
    ops::copy(logits_host, Device::kCpu, logits.data<float>(), Device::kCuda, sizeof(float) * kVocab);
  }
};

struct GraphRunResult {
  std::vector<int32_t> ids;
  std::vector<float> logits;  // every step's, concatenated
  std::vector<float> k, v;    // the caches at the end
};

// `steps` steps from token 7; graphed: through run_graph under `key`, else the ops directly.
GraphRunResult run_graph_decoder(const GraphDecoder& d, int64_t steps, bool graphed, const void* key) {
  GraphRunResult out;
  GraphDecoder::Run r = d.start(steps);
  int32_t id = 7;
  std::vector<float> logits(GraphDecoder::kVocab);
  for (int64_t s = 0; s < steps; ++s) {
    int32_t next = -1;
    std::fill(logits.begin(), logits.end(), std::numeric_limits<float>::quiet_NaN());
    if (graphed)
      ops::run_graph(key, [&] { d.step(r, id, &next, logits.data()); });
    else
      d.step(r, id, &next, logits.data());
    out.ids.push_back(next);
    out.logits.insert(out.logits.end(), logits.begin(), logits.end());
    id = next;
  }
  out.k.resize(static_cast<size_t>(steps * GraphDecoder::kRow));
  out.v.resize(out.k.size());
  ops::copy(out.k.data(), Device::kCpu, r.kc.raw(), Device::kCuda, out.k.size() * 4);
  ops::copy(out.v.data(), Device::kCpu, r.vc.raw(), Device::kCuda, out.v.size() * 4);
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(CudaKernels, RunGraphMatchesDirectOpsAcrossStepsAndTopologyChanges) {
  SKIP_WITHOUT_GPU();
  ops::DeviceScope scope(Device::kCuda);
  std::mt19937 rng(4242);
  const GraphDecoder d(rng);
  // 1 .. 160 keys: the decode kernel (4 heads over 2 kv heads of 32: four 32-key slices per chunk)
  // runs 1 split up to 128 keys, then 2. With the two-launch merge the second split adds the combine
  // kernel (a topology change: the graph is rebuilt); the one-launch merge keeps one kernel.
  constexpr int64_t kSteps = 160;
  const GraphRunResult direct = run_graph_decoder(d, kSteps, false, nullptr);
  std::set<int32_t> distinct(direct.ids.begin(), direct.ids.end());
  ASSERT_GT(distinct.size(), 3u) << "the step should not collapse onto one token";
  // The whole step as one graph, then cut into pieces of at most 3 ops (3 pieces per step: the
  // K/V rows are written in the first and read by attention in the second), each with the decode
  // attention's two-launch and one-launch merges.
  static const char keys[4] = {};  // a fresh key per variant (its first step runs eagerly)
  for (int variant = 0; variant < 4; ++variant) {
    const int piece_ops = variant % 2 == 0 ? 0 : 3;
    const bool one_launch = variant >= 2;
    cuda::set_decode_last_block_merge(one_launch);
    SCOPED_TRACE("piece_ops " + std::to_string(piece_ops) + (one_launch ? ", one-launch merge" : ", two launches"));
    cuda::set_graph_options(true, piece_ops);
    const cuda::GraphStats before = cuda::graph_stats();
    const GraphRunResult graphed = run_graph_decoder(d, kSteps, true, &keys[variant]);
    const cuda::GraphStats after = cuda::graph_stats();
    EXPECT_EQ(graphed.ids, direct.ids);
    EXPECT_TRUE(same_bits(graphed.logits, direct.logits)) << "logits differ";
    EXPECT_TRUE(same_bits(graphed.k, direct.k)) << "K cache differs";
    EXPECT_TRUE(same_bits(graphed.v, direct.v)) << "V cache differs";
    // The graphs really ran: every step after the first was captured, most were updated in place,
    // and with two launches the split change forced at least one rebuild after the first
    // instantiation.
    EXPECT_EQ(after.steps - before.steps, kSteps);
    EXPECT_EQ(after.eager_steps - before.eager_steps, 1);
    const int64_t pieces_per_step = piece_ops == 0 ? 1 : 3;  // 8 ops: 3 + 3 + 2
    EXPECT_EQ(after.pieces - before.pieces, (kSteps - 1) * pieces_per_step);
    EXPECT_GE(after.instantiations - before.instantiations, pieces_per_step + (one_launch ? 0 : 1));
    EXPECT_GE(after.updates - before.updates, (kSteps - 1) * pieces_per_step / 2);
  }
  cuda::set_decode_last_block_merge(true);
  cuda::set_graph_options(true, 64);
}

TEST(CudaKernels, RunGraphHostRulesAndFailures) {
  SKIP_WITHOUT_GPU();
  ops::DeviceScope scope(Device::kCuda);
  cuda::set_graph_options(true, 0);
  const std::vector<float> ones(1000, 1.0f);
  DeviceFloats buf(ones);
  const int key = 0;
  ops::run_graph(&key, [&] { ops::scale(buf.ptr(), 2.0f, 1000); });  // the key's eager first step
  EXPECT_EQ(buf.host()[999], 2.0f);
  // Host outputs are written when run_graph returns; host inputs are read when the op is called
  // (the staged copy below is overwritten right after the call and must still deliver 5s).
  std::vector<float> fives(1000, 5.0f), back(1000, 0.0f);
  ops::run_graph(&key, [&] {
    ops::copy(buf.ptr(), Device::kCuda, fives.data(), Device::kCpu, 4000);
    std::fill(fives.begin(), fives.end(), -1.0f);
    ops::run_graph(&key, [&] { ops::scale(buf.ptr(), 3.0f, 1000); });  // nested: joins the capture
    ops::copy(back.data(), Device::kCpu, buf.ptr(), Device::kCuda, 4000);
    EXPECT_EQ(back[0], 0.0f) << "a host output must not be written before run_graph returns";
  });
  EXPECT_EQ(back[0], 15.0f);
  EXPECT_EQ(back[999], 15.0f);
  // A throwing op: the ops captured before it still run (as without graphs), the error propagates,
  // graphs stay on, and the next step captures normally.
  try {
    ops::run_graph(&key, [&] {
      ops::scale(buf.ptr(), 2.0f, 1000);
      ops::synchronize();  // refused inside a captured step
    });
    ADD_FAILURE() << "synchronize inside run_graph did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("run_graph"), std::string::npos) << e.what();
  }
  EXPECT_EQ(buf.host()[0], 30.0f);
  EXPECT_TRUE(cuda::graphs_enabled());
  const cuda::GraphStats before = cuda::graph_stats();
  ops::run_graph(&key, [&] { ops::scale(buf.ptr(), 0.5f, 1000); });
  EXPECT_EQ(cuda::graph_stats().pieces - before.pieces, 1);
  EXPECT_EQ(buf.host()[500], 15.0f);
  cuda::set_graph_options(true, 64);
}

// ---- chained launches -------------------------------------------------------------------------------
// Chained launches (common.cuh; on by default on sm_90+, VLMCHECK_CUDA_PDL=0 turns them off; the GPU
// tests run both ways) let a decode kernel start, and issue its first weight loads, while the kernel
// before it still runs; each must still read its inputs only after the previous kernel's writes and
// write only after its reads.
// Two layers of a decoder-shaped chain — a non-chained op right before chained GEMVs, fused-norm q and
// 4-bit (tensor-core) / 3-bit (CUDA-core) GEMVs, rope, decode attention over 600 keys, o_proj and
// down_proj accumulating into the stream they follow, gate/up (n = 2: the streaming dense kernel),
// gated_activate, the head and argmax — run back to back (eagerly, and through run_graph as one graph
// and in pieces of 3 ops) must give the bits of the same ops run one at a time with a device
// synchronize after each (no overlap possible). A read before chain_wait, or a write the previous
// kernel's reads did not yet see, shows as a difference.
TEST(CudaKernels, ChainedDecodeOpsMatchTheSameOpsRunOneAtATime) {
  SKIP_WITHOUT_GPU();
  ops::DeviceScope scope(Device::kCuda);
  constexpr int64_t kD = 2048, kF = 4096, kHeads = 16, kKvHeads = 2, kHd = 128, kKeys = 600, kVocab = 4096;
  std::mt19937 rng(777);
  auto dense = [&](int64_t rows, int64_t cols) {
    return ops::to_device(dense_weight(random_tensor(rng, {rows, cols}, DType::kBF16, -0.05f, 0.05f)), Device::kCuda);
  };
  const ops::Weight wq = dense(kD, kD), wo = dense(kD, kD), wg = dense(kF, kD), wu = dense(kF, kD), wd = dense(kD, kF),
                    head = dense(kVocab, kD);
  const ops::Weight wq4 = ops::to_device(random_quantized(rng, kD, kD, 4, 64, DType::kBF16), Device::kCuda);
  const ops::Weight wq3 = ops::to_device(random_quantized(rng, kD, kD, 3, 64, DType::kBF16), Device::kCuda);
  const Tensor norm_w = ops::to_device(random_tensor(rng, {kD}, DType::kBF16, 0.5f, 1.5f), Device::kCuda);
  const ops::LinearNorm norm{&norm_w, 1e-6f, 0.0f};
  const DeviceFloats kc(random_vec(rng, kKeys * kKvHeads * kHd)), vc(random_vec(rng, kKeys * kKvHeads * kHd));
  std::vector<int64_t> k_pos(kKeys);
  std::iota(k_pos.begin(), k_pos.end(), int64_t{0});
  std::vector<float> inv_freq;
  for (int64_t i = 0; i < kHd / 2; ++i)
    inv_freq.push_back(static_cast<float>(std::pow(10000.0, -2.0 * static_cast<double>(i) / kHd)));
  const std::vector<float> x0 = random_vec(rng, 2 * kD);

  struct Out {
    std::vector<float> x, logits;
    std::vector<int32_t> ids;
  };
  // mode 0: a synchronize after every op; 1: back to back; 2: run_graph, one graph; 3: pieces of 3 ops.
  auto run = [&](int64_t n, int mode) {
    DeviceFloats x(x0), h = DeviceFloats::poison(2 * kD), q = DeviceFloats::poison(2 * kD),
                        t = DeviceFloats::poison(2 * kD), a = DeviceFloats::poison(kD),
                        g = DeviceFloats::poison(2 * kF), u = DeviceFloats::poison(2 * kF),
                        logits = DeviceFloats::poison(2 * kVocab);
    Out out;
    out.ids.assign(static_cast<size_t>(n), -1);
    const std::vector<int64_t> pos = {kKeys - 1, kKeys};
    auto op = [&] {
      if (mode == 0) ops::synchronize();
    };
    auto step = [&] {
      for (int layer = 0; layer < 2; ++layer) {
        ops::scale(x.ptr(), 0.5f, n * kD);  // not chained: the GEMVs after it must see its writes
        op();
        const ops::LinearOut qo[1] = {{&wq, nullptr, q.ptr(), false, &norm}};
        ops::linear_group(x.ptr(), n, qo, 1);
        op();
        ops::linear(x.ptr(), n, wq4, Tensor(), t.ptr());  // the tensor-core 4-bit GEMV
        op();
        ops::add(q.ptr(), t.ptr(), n * kD);
        op();
        ops::linear(q.ptr(), n, wq3, Tensor(), t.ptr());  // the CUDA-core 3-bit GEMV
        op();
        ops::add(q.ptr(), t.ptr(), n * kD);
        op();
        ops::rope(q.ptr(), n, kHeads, kHd, kHd, inv_freq.data(), pos.data());
        op();
        ops::attention(q.ptr(), 1, kKeys, kc.ptr(), vc.ptr(), k_pos.data(), kKeys, kHeads, kKvHeads, kHd,
                       1.0f / std::sqrt(static_cast<float>(kHd)), 0.0f, ops::AttentionMask{}, a.ptr());
        op();
        const ops::LinearOut oo[1] = {{&wo, nullptr, x.ptr(), true, nullptr}};
        ops::linear_group(a.ptr(), 1, oo, 1);  // token 0 only: x[0] += a · Woᵀ
        op();
        ops::rms_norm(x.ptr(), n, kD, norm_w, 1e-6f, 0.0f, h.ptr());
        op();
        const ops::LinearOut gu[2] = {{&wg, nullptr, g.ptr()}, {&wu, nullptr, u.ptr()}};
        ops::linear_group(h.ptr(), n, gu, 2);
        op();
        ops::gated_activate(g.ptr(), u.ptr(), n * kF, ops::Activation::kSilu);
        op();
        const ops::LinearOut down[1] = {{&wd, nullptr, x.ptr(), true, nullptr}};
        ops::linear_group(g.ptr(), n, down, 1);
        op();
      }
      const ops::LinearOut ho[1] = {{&head, nullptr, logits.ptr(), false, &norm}};
      ops::linear_group(x.ptr(), n, ho, 1);
      op();
      ops::argmax(logits.ptr(), n, kVocab, out.ids.data());
    };
    if (mode >= 2) {
      cuda::set_graph_options(true, mode == 2 ? 0 : 3);
      static const char keys[8] = {};
      const void* key = &keys[n * 2 + mode - 2];
      ops::run_graph(key, [] {});  // the key's first step runs eagerly: capture from the second on
      const cuda::GraphStats before = cuda::graph_stats();
      ops::run_graph(key, step);
      EXPECT_EQ(cuda::graph_stats().eager_steps, before.eager_steps) << "the step was not captured";
      cuda::set_graph_options(true, 64);
    } else {
      step();
    }
    out.x = x.host();
    out.logits = logits.host();
    out.x.resize(static_cast<size_t>(n * kD));
    out.logits.resize(static_cast<size_t>(n * kVocab));
    return out;
  };
  for (const int64_t n : {1, 2}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    const Out want = run(n, 0);
    ASSERT_TRUE(std::all_of(want.logits.begin(), want.logits.end(), [](float v) { return std::isfinite(v); }));
    for (int mode = 1; mode <= 3; ++mode) {
      for (int again = 0; again < 3; ++again) {  // a race need not show every time
        SCOPED_TRACE("mode " + std::to_string(mode) + ", run " + std::to_string(again));
        const Out got = run(n, mode);
        EXPECT_TRUE(same_bits(got.x, want.x)) << "residual stream differs";
        EXPECT_TRUE(same_bits(got.logits, want.logits)) << "logits differ";
        EXPECT_EQ(got.ids, want.ids);
      }
    }
  }
}
