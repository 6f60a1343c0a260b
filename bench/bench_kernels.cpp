// Kernel benchmark: the machine's measured limits and how close the CPU kernels get to them.
//   1. read bandwidth: a sum with the widest loads the CPU has (AVX-512 or AVX2, sum_words) over a 1 GiB
//      buffer on all pool threads (the decode roofline);
//   2. FMA peak: register-only f32 FMAs on all threads (the compute roofline);
//   3. matrix throughput: ops::linear as GEMM at a prefill-like size (f32, bf16, 4-bit g64);
//   4. decode GEMV: one token through every linear of a SmolLM2-135M-shaped and a
//      Qwen2.5-0.5B-shaped model (all layers + tied LM head, real sizes, random weights) in bf16 and
//      MLX 4-bit g64 — bytes read per token / time = effective GB/s, and its fraction of (1);
//   5. prefill GEMM on the same model shapes (all linears, 256 tokens), GFLOP/s vs (2);
//   6. decode-kernel compute capacity (one core, L2-resident matrix, paired with FMAs);
//   7. one core streaming model-shaped decode matrices from DRAM (64 MB of distinct copies) against
//      a one-core sequential read, both in thread CPU time — the access pattern's cost, which is
//      what decode loses to the roofline on this VM (robust to other processes' CPU use);
//   8. one core, decode attention of a whole token (every layer's cache distinct, so KV comes from
//      DRAM) over an f32 cache (ops::attention) and a 4-bit g64 quantized one (ops::attention_quantized,
//      and the former CPU route: kv_dequantize into f32 rows, then attention), SmolLM2 and Qwen2.5-0.5B
//      shapes at 290 and 1024 keys: ms per token and KV GB/s against the one-core read of (7).
// Each measurement: warm-up, repetitions, median with min/max; raw samples printed at the end.
// Kernel timings are also paired with a short probe of the relevant limit (256 MiB read, ~20 ms of
// FMAs) run just before each repetition; the median per-pair ratio is the robust figure on a
// machine shared with other work, where the limits themselves move during the run.
// Usage: bench_kernels [--reps N] [--quick] [--kernels-only] [--gemv] [--stream] [--attention]
//   --stream: only sections 7 and 8 (one core streamed from DRAM, thread CPU time), for A/B runs.
//   --gemv: only the one-core quantized decode GEMV table (every bit width, L2-resident and streamed
//   from DRAM, thread CPU time), quick enough to alternate two binaries for an A/B comparison.
//   --attention: only causal prefill attention at model head shapes against paired FMA probes (A/B runs).
//   --quick: fewer reps, skips the Qwen prefill; --kernels-only: skips the model-shaped runs (4, 5).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "kernels/probes.h"

using namespace vlm;

// GCC 12 reports a false -W(maybe-)uninitialized inside its own _mm512_reduce_add_ps.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace {

// Wall time is what a user sees; process CPU time divided by the pool size says what the kernels
// would do with the cores to themselves (this dev machine is shared, so both are reported).
double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Stats {
  std::string name;
  std::vector<double> samples;      // wall seconds
  std::vector<double> cpu_samples;  // process CPU seconds / threads
  double median() const {
    std::vector<double> s = samples;
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
  }
  double min() const { return *std::min_element(samples.begin(), samples.end()); }
  double max() const { return *std::max_element(samples.begin(), samples.end()); }
  double cpu_median() const {
    std::vector<double> s = cpu_samples;
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
  }
};

std::vector<Stats> g_all;

Stats measure(const std::string& name, int warmup, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  Stats st{name, {}, {}};
  const double threads = ThreadPool::global().num_threads();
  for (int i = 0; i < reps; ++i) {
    double c0 = process_cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    st.samples.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    st.cpu_samples.push_back((process_cpu_seconds() - c0) / threads);
  }
  g_all.push_back(st);
  return st;
}

// Fast deterministic fill (xorshift), so 1 GiB of weights does not take minutes.
struct Rng {
  uint64_t s = 0x9e3779b97f4a7c15ull;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform() { return static_cast<float>(next() >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f; }
};

__attribute__((target("avx512f,fma"))) float fma_loop(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.9999f), a = _mm512_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

// The same loop on AVX2 (8 lanes), so the bench runs on CPUs without AVX-512; callers go through fma_loop_any /
// fma_loop_flops, which pick the widest the CPU has. (Reads go through the read probe's sum_words.)
__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.9999f), a = _mm256_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
  alignas(32) float t[8];
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_store_ps(t, s);
  return t[0] + t[7];
}

bool has_avx512() {
  static const bool v = __builtin_cpu_supports("avx512f") != 0;
  return v;
}
// n floats (a multiple of 16, 64-byte aligned) read as words; the result only keeps the loads alive.
float sum_floats(const float* p, int64_t n) {
  return static_cast<float>(sum_words(reinterpret_cast<const uint64_t*>(p), n / 2));
}
float fma_loop_any(int64_t iters) { return has_avx512() ? fma_loop(iters) : fma_loop_avx2(iters); }
// FLOPs of fma_loop_any(iters): 12 vector FMAs of 16 or 8 lanes per iteration.
double fma_loop_flops(int64_t iters) { return 2.0 * (has_avx512() ? 16 : 8) * 12 * static_cast<double>(iters); }

ops::Weight make_dense(int64_t rows, int64_t cols, DType dt, Rng& rng) {
  std::vector<float> tmp(static_cast<size_t>(cols));
  Tensor t = Tensor::empty({rows, cols}, dt, MemCategory::kWeights);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : tmp) v = rng.uniform() * 0.05f;
    convert_from_f32(tmp.data(), dt, static_cast<char*>(t.raw()) + r * cols * dtype_size(dt), tmp.size());
  }
  ops::Weight w;
  w.dense = t;
  return w;
}

ops::Weight make_q(int64_t rows, int64_t cols, int bits, int group, Rng& rng) {
  ops::Weight w;
  w.quantized = true;
  QuantizedMatrix& m = w.quant;
  m.rows = rows;
  m.cols = cols;
  m.spec = {bits, group};
  m.packed = Tensor::empty({rows, cols * bits / 32}, DType::kU32, MemCategory::kWeights);
  for (int64_t i = 0; i < m.packed.numel(); ++i) m.packed.data<uint32_t>()[i] = static_cast<uint32_t>(rng.next());
  m.scales = Tensor::empty({rows, cols / group}, DType::kBF16, MemCategory::kWeights);
  m.biases = Tensor::empty({rows, cols / group}, DType::kBF16, MemCategory::kWeights);
  for (int64_t i = 0; i < m.scales.numel(); ++i) {
    m.scales.data<uint16_t>()[i] = f32_to_bf16(rng.uniform() * 0.01f);
    m.biases.data<uint16_t>()[i] = f32_to_bf16(rng.uniform() * 0.1f);
  }
  return w;
}

struct ModelShape {
  const char* name;
  int64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
};

struct Model {
  std::vector<ops::Weight> linears;  // every per-layer linear, then the tied LM head
  double bytes = 0, flops_per_token = 0;
};

Model build_model(const ModelShape& s, bool quant, Rng& rng) {
  Model m;
  auto add = [&](int64_t out, int64_t in) {
    m.linears.push_back(quant ? make_q(out, in, 4, 64, rng) : make_dense(out, in, DType::kBF16, rng));
    m.bytes += static_cast<double>(m.linears.back().nbytes());
    m.flops_per_token += 2.0 * static_cast<double>(out) * static_cast<double>(in);
  };
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  for (int64_t l = 0; l < s.layers; ++l) {
    add(q, s.hidden);
    add(kv, s.hidden);
    add(kv, s.hidden);
    add(s.hidden, q);
    add(s.intermediate, s.hidden);
    add(s.intermediate, s.hidden);
    add(s.hidden, s.intermediate);
  }
  add(s.vocab, s.hidden);  // tied LM head (reads the whole embedding)
  return m;
}

void run_model(const Model& m, const float* x, int64_t n, float* y) {
  for (const ops::Weight& w : m.linears) ops::linear(x, n, w, Tensor(), y);
}

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// --gemv: one core (a one-thread pool), thread CPU time, one token through ops::linear. For bf16 and
// per bit width and group size: L2-resident 512 x 576 and 128 x 2048 matrices (the kernel's own speed,
// short and long rows) and SmolLM2/Qwen-shaped matrices streamed from DRAM (distinct copies totalling
// >= 48 MB, so every byte comes from memory); group 128 uses 640 for the 576-wide shapes. GB/s counts
// the packed codes plus scales and biases (Weight::nbytes). Thread CPU time makes it robust to other
// processes taking the core, not to them taking memory bandwidth: compare builds by alternating runs.
void gemv_table(int reps, Rng& rng) {
  ThreadPool::set_global_threads(1);
  std::printf(
      "| GEMV, one token, one core (thread CPU time) | L2 512x576 GB/s | L2 128x2048 GB/s | DRAM 1536x576 GB/s "
      "| DRAM 576x1536 GB/s | DRAM 4864x896 GB/s |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  std::vector<float> x(8192), y(8192);
  for (auto& v : x) v = rng.uniform();
  struct C {
    int bits, group;  // bits 16: dense bf16
  };
  const C configs[] = {{16, 0}, {4, 64}, {4, 32}, {4, 128}, {2, 64}, {3, 64}, {5, 64}, {6, 64}, {8, 64}};
  for (const C& c : configs) {
    if (c.bits == 16)
      std::printf("| bf16");
    else
      std::printf("| q%d g%d", c.bits, c.group);
    auto run = [&](int64_t rows, int64_t cols, double min_bytes) {
      std::vector<ops::Weight> ws;
      double bytes = 0;
      do {
        ws.push_back(c.bits == 16 ? make_dense(rows, cols, DType::kBF16, rng)
                                  : make_q(rows, cols, c.bits, c.group, rng));
        bytes += static_cast<double>(ws.back().nbytes());
      } while (bytes < min_bytes);
      // L2-resident: repeat the one matrix until ~20 MB have been decoded per sample.
      const int inner = min_bytes > 0 ? 1 : static_cast<int>(20e6 / bytes) + 1;
      for (const ops::Weight& w : ws) ops::linear(x.data(), 1, w, Tensor(), y.data());  // warm-up
      std::vector<double> gbs;
      for (int r = 0; r < reps; ++r) {
        const double t0 = thread_cpu_seconds();
        for (int i = 0; i < inner; ++i)
          for (const ops::Weight& w : ws) ops::linear(x.data(), 1, w, Tensor(), y.data());
        gbs.push_back(bytes * inner / (thread_cpu_seconds() - t0) / 1e9);
      }
      std::sort(gbs.begin(), gbs.end());
      std::printf(" | %.1f", gbs[gbs.size() / 2]);
    };
    const int64_t narrow = c.group == 128 ? 640 : 576;  // 576 is not a multiple of 128
    run(512, narrow, 0);
    run(128, 2048, 0);
    run(1536, narrow, 48e6);
    run(576, 1536, 48e6);
    run(4864, 896, 48e6);
    std::printf(" |\n");
  }
}

// 7. and 8. (also --stream): one core, streamed from DRAM, on a one-thread pool (n = 1 token would
// otherwise split rows over the pool); every time is thread CPU time. `p` holds 4 x probe_floats floats.
void one_core_stream_tables(int reps, Rng& rng, const float* p, int64_t probe_floats) {
  std::vector<float> partial(1);
  auto thread_cpu = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> seq;
  for (int r = 0; r < reps; ++r) {
    const double t0 = thread_cpu();
    partial[0] = sum_floats(p + (r % 4) * probe_floats, probe_floats);
    seq.push_back(probe_floats * 4.0 / (thread_cpu() - t0) / 1e9);
  }
  const double seq_gbs = median(seq);
  std::printf("\n| one core, streamed from DRAM (thread CPU time) | GB/s | of one-core sequential read (%.1f GB/s) |\n",
              seq_gbs);
  std::printf("|---|---:|---:|\n");
  struct S {
    const char* what;
    int64_t rows, cols;
    bool quant;
  };
  const S shapes[] = {{"SmolLM2 q/o 576 x 576", 576, 576, false},      {"SmolLM2 gate 1536 x 576", 1536, 576, false},
                      {"SmolLM2 down 576 x 1536", 576, 1536, false},   {"Qwen q/o 896 x 896", 896, 896, false},
                      {"Qwen gate 4864 x 896", 4864, 896, false},      {"Qwen down 896 x 4864", 896, 4864, false},
                      {"SmolLM2 q/o 576 x 576", 576, 576, true},       {"SmolLM2 gate 1536 x 576", 1536, 576, true},
                      {"SmolLM2 down 576 x 1536", 576, 1536, true},    {"Qwen q/o 896 x 896", 896, 896, true},
                      {"Qwen gate 4864 x 896", 4864, 896, true},       {"Qwen down 896 x 4864", 896, 4864, true}};
  std::vector<float> x(8192), y(8192);
  for (auto& v : x) v = rng.uniform();
  for (const S& s : shapes) {
    // Copies of the matrix totalling >= 64 MB, cut from ONE allocation (make one matrix of copies x rows
    // rows and view it): the eagerly loaded model's weights sit in one huge-page-backed block (a decode
    // of SmolLM2 bf16 had 264 MB of its 269 MB of weights in AnonHugePages), while a separate
    // allocation per matrix under 4 MB gets 4 KB pages, where the hardware prefetcher stops at every
    // page end (4864 x 896 at ~26 GB/s vs 896 x 896 at ~17 GB/s on separate allocations).
    const ops::Weight one = s.quant ? make_q(s.rows, s.cols, 4, 64, rng) : make_dense(s.rows, s.cols, DType::kBF16, rng);
    const int64_t copies = static_cast<int64_t>(64e6 / static_cast<double>(one.nbytes())) + 1;
    const ops::Weight all = s.quant ? make_q(copies * s.rows, s.cols, 4, 64, rng)
                                    : make_dense(copies * s.rows, s.cols, DType::kBF16, rng);
    std::vector<ops::Weight> ws(static_cast<size_t>(copies));
    for (int64_t c = 0; c < copies; ++c) {
      ops::Weight& w = ws[static_cast<size_t>(c)];
      w.quantized = all.quantized;
      if (all.quantized) {
        w.quant = all.quant;
        w.quant.rows = s.rows;
        w.quant.packed = all.quant.packed.slice_rows(c * s.rows, (c + 1) * s.rows);
        w.quant.scales = all.quant.scales.slice_rows(c * s.rows, (c + 1) * s.rows);
        w.quant.biases = all.quant.biases.slice_rows(c * s.rows, (c + 1) * s.rows);
      } else {
        w.dense = all.dense.slice_rows(c * s.rows, (c + 1) * s.rows);
      }
    }
    const double bytes = static_cast<double>(all.nbytes());
    std::vector<double> gbs;
    for (int r = 0; r < reps; ++r) {
      const double t0 = thread_cpu();
      for (const ops::Weight& w : ws) ops::linear(x.data(), 1, w, Tensor(), y.data());
      gbs.push_back(bytes / (thread_cpu() - t0) / 1e9);
    }
    const double g = median(gbs);
    std::printf("| %s %s | %.1f | %.0f%% |\n", s.what, s.quant ? "4-bit g64" : "bf16", g, 100.0 * g / seq_gbs);
  }

  // 8. decode attention, one core.
  std::printf("\n| decode attention, one token, one core (thread CPU time) | ms/token | KV GB/s | of one-core read |\n");
  std::printf("|---|---:|---:|---:|\n");
  struct A {
    const char* what;
    int64_t layers, heads, kv_heads, head_dim;
  };
  const A models[] = {{"SmolLM2", 30, 9, 3, 64}, {"Qwen2.5-0.5B", 24, 14, 2, 64}};
  for (const A& m : models)
    for (int64_t nk : {290, 1024}) {
      const int bits = 4, group = 64;
      const int64_t row = m.kv_heads * m.head_dim, words = ops::kv_packed_words(row, bits), groups = row / group;
      std::vector<std::vector<float>> kf(m.layers), vf(m.layers), sc(m.layers);
      std::vector<std::vector<uint32_t>> kq(m.layers), vq(m.layers);
      for (int64_t l = 0; l < m.layers; ++l) {
        kf[l].resize(nk * row);
        vf[l].resize(nk * row);
        for (float& v : kf[l]) v = rng.uniform();
        for (float& v : vf[l]) v = rng.uniform();
        kq[l].resize(nk * words);
        vq[l].resize(nk * words);
        sc[l].resize(4 * nk * groups);  // K scales, K biases, V scales, V biases
        float* p = sc[l].data();
        ops::kv_quantize(kf[l].data(), nk, row, bits, group, kq[l].data(), p, p + nk * groups);
        ops::kv_quantize(vf[l].data(), nk, row, bits, group, vq[l].data(), p + 2 * nk * groups, p + 3 * nk * groups);
      }
      std::vector<float> q(m.heads * m.head_dim), o(q.size()), kd(nk * row), vd(nk * row);
      for (float& v : q) v = rng.uniform();
      std::vector<int64_t> pos(nk);
      for (int64_t j = 0; j < nk; ++j) pos[j] = j;
      ops::AttentionMask mask;
      mask.causal = true;
      const float scale = 0.125f;
      auto kv_of = [&](int64_t l) {
        const float* p = sc[l].data();
        return ops::QuantizedKV{kq[l].data(), p, p + nk * groups, vq[l].data(), p + 2 * nk * groups,
                                p + 3 * nk * groups, bits, group};
      };
      auto f32_token = [&] {
        for (int64_t l = 0; l < m.layers; ++l)
          ops::attention(q.data(), 1, nk - 1, kf[l].data(), vf[l].data(), pos.data(), nk, m.heads, m.kv_heads,
                         m.head_dim, scale, 0.0f, mask, o.data());
      };
      auto fused_token = [&] {
        for (int64_t l = 0; l < m.layers; ++l)
          ops::attention_quantized(q.data(), 1, nk - 1, kv_of(l), pos.data(), nk, m.heads, m.kv_heads, m.head_dim,
                                   scale, 0.0f, mask, o.data());
      };
      auto scratch_token = [&] {
        for (int64_t l = 0; l < m.layers; ++l) {
          const ops::QuantizedKV kv = kv_of(l);
          ops::kv_dequantize(kv.k_packed, kv.k_scales, kv.k_biases, nk, row, bits, group, kd.data());
          ops::kv_dequantize(kv.v_packed, kv.v_scales, kv.v_biases, nk, row, bits, group, vd.data());
          ops::attention(q.data(), 1, nk - 1, kd.data(), vd.data(), pos.data(), nk, m.heads, m.kv_heads, m.head_dim,
                         scale, 0.0f, mask, o.data());
        }
      };
      const double f32_bytes = 2.0 * m.layers * nk * row * 4;
      const double q_bytes = 2.0 * m.layers * nk * (words * 4 + 2 * groups * 4);
      const struct {
        const char* route;
        std::function<void()> fn;
        double bytes;
      } routes[] = {{"f32 cache", f32_token, f32_bytes},
                    {"4-bit cache, attention_quantized", fused_token, q_bytes},
                    {"4-bit cache, kv_dequantize + attention", scratch_token, q_bytes}};
      for (const auto& r : routes) {
        r.fn();  // warm-up
        std::vector<double> t;
        for (int rep = 0; rep < reps; ++rep) {
          const double t0 = thread_cpu();
          r.fn();
          t.push_back(thread_cpu() - t0);
        }
        const double sec = median(t);
        std::printf("| %s, %lld keys, %s | %.3f | %.1f | %.0f%% |\n", m.what, static_cast<long long>(nk), r.route,
                    sec * 1e3, r.bytes / sec / 1e9, 100.0 * r.bytes / sec / 1e9 / seq_gbs);
      }
    }
}

// GFLOP/s of ~20 ms of register-only FMAs on every pool thread: the paired probe of compute-bound rows.
double fma_probe() {
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.num_threads();
  std::vector<float> partial(static_cast<size_t>(threads));
  const int64_t it = 1'000'000;
  auto t0 = std::chrono::steady_clock::now();
  pool.run_on_all_threads([&](int t) { partial[t] = fma_loop_any(it); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return fma_loop_flops(it) * threads / s / 1e9;
}

// Paired probes: on a shared machine the limits drift from second to second, so each timed kernel
// repetition is preceded by a short probe of the same limit and the ratio is taken per pair. Returns the
// timings (also recorded in g_all); `ratios` gets (work / time) / probe per repetition, sorted.
Stats paired(const std::string& name, int warmup, int n, double work, const std::function<double()>& probe,
             const std::function<void()>& fn, std::vector<double>& ratios) {
  for (int i = 0; i < warmup; ++i) fn();
  Stats st{name, {}, {}};
  ratios.clear();
  for (int i = 0; i < n; ++i) {
    double limit = probe();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.samples.push_back(t);
    ratios.push_back(work / t / limit);
  }
  st.cpu_samples = st.samples;
  g_all.push_back(st);
  std::sort(ratios.begin(), ratios.end());
  return st;
}

// --attention: causal prefill attention (ops::attention, every query of a prompt against its keys, all
// pool threads) at SmolLM2-135M, Qwen2.5-0.5B and Qwen2.5-VL-3B head shapes, 256 and 1024 queries (the
// latter about an image prompt). Each repetition follows ~20 ms of register-only FMAs on all threads; the
// figure to read is the median per-pair ratio of the attention's GFLOP/s (4·head_dim per visible (query,
// key, head): q·k and p·v, as vlmcheck bench counts them) to that probe's.
void attention_table(int reps, Rng& rng) {
  struct Shape {
    const char* name;
    int64_t heads, kv_heads, head_dim;
  };
  const Shape shapes[] = {{"SmolLM2-135M", 9, 3, 64}, {"Qwen2.5-0.5B", 14, 2, 64}, {"Qwen2.5-VL-3B", 16, 2, 128}};
  const int threads = ThreadPool::global().num_threads();
  std::printf("| causal prefill attention, %d threads | ms median (min-max) | GFLOP/s | paired ratio to FMA probe |\n"
              "|---|---:|---:|---:|\n", threads);
  for (const Shape& m : shapes)
    for (int64_t n : {256, 1024}) {
      std::vector<float> q(static_cast<size_t>(n * m.heads * m.head_dim)), out(q.size());
      std::vector<float> k(static_cast<size_t>(n * m.kv_heads * m.head_dim)), v(k.size());
      for (float& x : q) x = rng.uniform();
      for (float& x : k) x = rng.uniform();
      for (float& x : v) x = rng.uniform();
      std::vector<int64_t> pos(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = i;
      const float scale = 1.0f / std::sqrt(static_cast<float>(m.head_dim));
      auto run = [&] {
        ops::attention(q.data(), n, 0, k.data(), v.data(), pos.data(), n, m.heads, m.kv_heads, m.head_dim, scale, 0.0f,
                       ops::AttentionMask{}, out.data());
      };
      const double flops = 4.0 * static_cast<double>(m.head_dim * m.heads) * static_cast<double>(n * (n + 1) / 2);
      std::vector<double> ratios;
      const Stats st = paired(std::string("prefill attention ") + m.name + " " + std::to_string(n), 1, reps, flops / 1e9,
                              fma_probe, run, ratios);
      std::printf("| %s, %lld queries | %.2f (%.2f-%.2f) | %.1f | %.0f%% (%.0f-%.0f%%) |\n", m.name,
                  static_cast<long long>(n), st.median() * 1e3, st.min() * 1e3, st.max() * 1e3,
                  flops / st.median() / 1e9, 100 * ratios[ratios.size() / 2], 100 * ratios.front(),
                  100 * ratios.back());
    }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line-buffered: progress is visible when redirected
  int reps = 7;
  bool quick = false, kernels_only = false, stream_only = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--kernels-only")) kernels_only = true;
    if (!std::strcmp(argv[i], "--stream")) stream_only = true;
    if (!std::strcmp(argv[i], "--gemv")) {
      Rng rng;
      gemv_table(reps, rng);
      return 0;
    }
    if (!std::strcmp(argv[i], "--attention")) {
      Rng rng;
      attention_table(reps, rng);
      return 0;
    }
  }
  if (quick) reps = std::min(reps, 3);
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.num_threads();
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::printf("# bench_kernels  %s  threads=%d  kernel path=%s  reps=%d\n\n", date, threads, ops::cpu_kernel_path(),
              reps);

  // 1. Read bandwidth.
  const int64_t n_floats = (int64_t{1} << 30) / 4;
  Tensor buf = Tensor::empty({n_floats}, DType::kF32, MemCategory::kOther);
  float* p = buf.data<float>();
  pool.parallel_for(n_floats, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = 1.0f;
  });
  if (stream_only) {
    ThreadPool::set_global_threads(1);
    Rng rng;
    one_core_stream_tables(reps, rng, p, n_floats / 4);
    ThreadPool::set_global_threads(threads);
    return 0;
  }
  std::vector<float> partial(static_cast<size_t>(threads));
  Stats bw = measure("read bandwidth 1 GiB", 1, reps, [&] {
    pool.run_on_all_threads([&](int t) {
      int64_t chunk = n_floats / threads;
      partial[t] = sum_floats(p + t * chunk, chunk);
    });
  });
  const double bw_gbs = 1.073741824 / bw.median();
  std::printf("read bandwidth (%s sum, 1 GiB, %d threads): %.1f GB/s (min %.1f, max %.1f)\n",
              has_avx512() ? "AVX-512" : "AVX2", threads, bw_gbs,
              1.073741824 / bw.max(), 1.073741824 / bw.min());

  // Pool round trip: the fixed cost of every multithreaded kernel call.
  Stats rt = measure("pool round trip x1000", 1, reps, [&] {
    for (int i = 0; i < 1000; ++i) pool.parallel_for(threads, [](int64_t, int64_t) {});
  });
  std::printf("ThreadPool parallel_for round trip: %.1f us (wall, median of %d x 1000)\n", rt.median() * 1e3, reps);

  // 2. FMA peak.
  const int64_t iters = 20'000'000;
  Stats pk = measure("f32 FMA peak", 1, reps, [&] {
    pool.run_on_all_threads([&](int t) { partial[t] = fma_loop_any(iters); });
  });
  const double peak = fma_loop_flops(iters) * threads / pk.median() / 1e9;
  std::printf("f32 FMA peak (register-only, %d threads): %.0f GFLOP/s\n\n", threads, peak);

  // Paired probes (paired() above); the read probe needs main's buffer.
  const int64_t probe_floats = n_floats / 4;  // 256 MiB
  int probe_slice = 0;
  auto bw_probe = [&] {  // GB/s over a 256 MiB slice (rotating, so it is not cache-warm)
    const float* base = p + (probe_slice++ % 4) * probe_floats;
    auto t0 = std::chrono::steady_clock::now();
    pool.run_on_all_threads(
        [&](int t) { partial[t] = sum_floats(base + t * (probe_floats / threads), probe_floats / threads); });
    return probe_floats * 4.0 / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9;
  };

  // 3. GEMM at a prefill-like size: 512 tokens through a 4864 x 896 matrix (Qwen2.5-0.5B MLP up).
  Rng rng;
  {
    const int64_t n = 512, out = 4864, in = 896;
    std::vector<float> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
    for (auto& v : x) v = rng.uniform();
    const double flops = 2.0 * n * out * in;
    std::printf("| GEMM %lld x %lld x %lld | median ms | GFLOP/s | of FMA peak | paired ratio (min-max) |\n"
                "|---|---:|---:|---:|---:|\n",
                static_cast<long long>(n), static_cast<long long>(out), static_cast<long long>(in));
    struct G {
      const char* name;
      ops::Weight w;
    };
    std::vector<G> gs = {{"f32", make_dense(out, in, DType::kF32, rng)},
                         {"bf16", make_dense(out, in, DType::kBF16, rng)},
                         {"q4 g64", make_q(out, in, 4, 64, rng)},
                         {"q8 g64", make_q(out, in, 8, 64, rng)}};
    for (auto& g : gs) {
      std::vector<double> ratio;
      Stats st = paired(std::string("gemm ") + g.name, 1, reps, flops / 1e9, fma_probe,
                        [&] { ops::linear(x.data(), n, g.w, Tensor(), y.data()); }, ratio);
      double gf = flops / st.median() / 1e9;
      std::printf("| %s | %.2f (%.2f-%.2f) | %.0f | %.0f%% | %.0f%% (%.0f-%.0f%%) |\n", g.name, st.median() * 1e3,
                  st.min() * 1e3, st.max() * 1e3, gf, 100.0 * gf / peak, 100.0 * ratio[ratio.size() / 2],
                  100.0 * ratio.front(), 100.0 * ratio.back());
    }
    std::printf("\n");
  }

  // 4./5. Model-shaped decode and prefill.
  const ModelShape shapes[] = {{"SmolLM2-135M", 576, 1536, 30, 9, 3, 64, 49152},
                               {"Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 64, 151936}};
  std::printf("| model | weights | MB read/token | decode ms/token (min-max) | GB/s | of BW | paired BW ratio (min-max) "
              "| prefill 256 tok GFLOP/s | paired FMA ratio |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const ModelShape& s : shapes) {
    for (bool quant : {false, true}) {
      if (kernels_only) break;
      Model m = build_model(s, quant, rng);
      int64_t max_out = 0;
      for (auto& w : m.linears) max_out = std::max(max_out, w.rows());
      std::vector<float> x(static_cast<size_t>(256 * s.intermediate)), y(static_cast<size_t>(256 * max_out));
      for (auto& v : x) v = rng.uniform();
      const std::string tag = std::string(s.name) + (quant ? " q4g64" : " bf16");
      std::vector<double> bw_ratio, fma_ratio;
      Stats dec = paired("decode " + tag, 2, reps * 2, m.bytes / 1e9, bw_probe,
                         [&] { run_model(m, x.data(), 1, y.data()); }, bw_ratio);
      double gbs = m.bytes / dec.median() / 1e9;
      double pf_gflops = 0, pf_ratio = 0;
      if (!(quick && s.hidden > 600)) {
        const double work = m.flops_per_token * 256 / 1e9;
        Stats pf = paired("prefill256 " + tag, 1, std::max(2, reps / 2), work, fma_probe,
                          [&] { run_model(m, x.data(), 256, y.data()); }, fma_ratio);
        pf_gflops = work / pf.median();
        pf_ratio = fma_ratio[fma_ratio.size() / 2];
      }
      std::printf("| %s | %s | %.0f | %.2f (%.2f-%.2f) | %.1f | %.0f%% | %.0f%% (%.0f-%.0f%%) | %.0f | %.0f%% |\n",
                  s.name, quant ? "4-bit g64 (bf16 scales)" : "bf16", m.bytes / 1e6, dec.median() * 1e3,
                  dec.min() * 1e3, dec.max() * 1e3, gbs, 100.0 * gbs / bw_gbs, 100.0 * bw_ratio[bw_ratio.size() / 2],
                  100.0 * bw_ratio.front(), 100.0 * bw_ratio.back(), pf_gflops, 100.0 * pf_ratio);
    }
  }

  // 6. Decode-kernel compute capacity, independent of how busy the machine is: one core decodes an
  // L2-resident 256 x 896 matrix (on a one-thread pool: the matrix is above the kernels' threading
  // threshold, and the pool's hand-offs are not what this measures) right after ~20 ms of
  // register-only FMAs on the same core; bytes decoded per second divided by the FMA rate of the
  // pair is a property of the kernel. An idle core of this CPU does ~190 GFLOP/s and gets ~33.5
  // GB/s of the shared bandwidth, so a kernel needs >= 0.176 bytes per FMA-GFLOP to keep up;
  // "headroom" is capacity / that need (> 1: decode is memory-bound, not kernel-bound).
  ThreadPool::set_global_threads(1);  // sections 6 and 7; `pool` is not used after this
  {
    const double kNeed = 33.5 / 190.0;
    std::printf("\n| decode kernel (1 core, L2-resident 256 x 896) | GB/s | paired FMA GFLOP/s | bytes per FMA-GFLOP | headroom vs memory |\n");
    std::printf("|---|---:|---:|---:|---:|\n");
    const int64_t rows = 256, cols = 896;
    std::vector<float> x(cols), y(rows);
    for (auto& v : x) v = rng.uniform();
    struct K {
      const char* name;
      ops::Weight w;
    };
    std::vector<K> ks = {{"f32", make_dense(rows, cols, DType::kF32, rng)},  {"f16", make_dense(rows, cols, DType::kF16, rng)},
                         {"bf16", make_dense(rows, cols, DType::kBF16, rng)}, {"q2 g64", make_q(rows, cols, 2, 64, rng)},
                         {"q3 g64", make_q(rows, cols, 3, 64, rng)},          {"q4 g64", make_q(rows, cols, 4, 64, rng)},
                         {"q5 g64", make_q(rows, cols, 5, 64, rng)},          {"q6 g64", make_q(rows, cols, 6, 64, rng)},
                         {"q8 g64", make_q(rows, cols, 8, 64, rng)}};
    for (K& k : ks) {
      const int inner = 200;
      std::vector<double> cap;
      double gbs_sum = 0, fma_sum = 0;
      for (int r = 0; r < reps * 3; ++r) {
        auto f0 = std::chrono::steady_clock::now();
        partial[0] = fma_loop_any(500'000);
        double fma =
            fma_loop_flops(500'000) / std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count() / 1e9;
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < inner; ++i) ops::linear(x.data(), 1, k.w, Tensor(), y.data());
        double gbs = static_cast<double>(k.w.nbytes()) * inner / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9;
        cap.push_back(gbs / fma);
        gbs_sum += gbs;
        fma_sum += fma;
      }
      std::sort(cap.begin(), cap.end());
      double c = cap[cap.size() / 2];
      std::printf("| %s | %.1f | %.0f | %.3f | %.2fx |\n", k.name, gbs_sum / cap.size(), fma_sum / cap.size(), c, c / kNeed);
    }
  }

  // 7. One core, streamed, and 8. decode attention, one core (one_core_stream_tables).
  one_core_stream_tables(reps, rng, p, probe_floats);
  ThreadPool::set_global_threads(threads);

  std::printf("\nraw samples (seconds):\n");
  for (const Stats& st : g_all) {
    std::printf("  %-34s", st.name.c_str());
    for (double v : st.samples) std::printf(" %.6f", v);
    std::printf("\n");
  }
  return 0;
}
