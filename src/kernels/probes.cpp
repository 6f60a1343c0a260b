// Roofline probes. Bandwidth: sum of 64-byte vectors with four independent accumulators per thread
// over disjoint slices (read-only traffic, as decode is), the median of several passes over a buffer
// far above the last-level cache. Compute: 12 independent FMA chains per
// thread, long enough that loop overhead is noise; bf16 uses vdpbf16ps (2 FLOPs × 32 lanes per op).
#include "kernels/probes.h"

#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/thread_pool.h"

namespace vlm {

namespace {

using Clock = std::chrono::steady_clock;

__attribute__((target("avx512f"))) uint64_t sum_avx512(const uint64_t* p, int64_t n_words) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n_words; i += 32) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 8));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 16));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 24));
  }
  // Horizontal sum through memory (gcc 12's _mm512_reduce_* trips -Wuninitialized in its own header).
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  uint64_t out = 0;
  for (uint64_t v : lanes) out += v;
  for (; i < n_words; ++i) out += p[i];
  return out;
}

__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, int64_t n_words) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n_words; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t out = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n_words; ++i) out += p[i];
  return out;
}

}  // namespace

uint64_t sum_words(const uint64_t* p, int64_t n) {
  if (__builtin_cpu_supports("avx512f")) return sum_avx512(p, n);
  if (__builtin_cpu_supports("avx2")) return sum_avx2(p, n);
  uint64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

namespace {

constexpr int64_t kFmaIters = 20'000'000;

// Twelve independent accumulators written out as named variables: an array indexed in a loop is not
// fully unrolled at -O2 and would round-trip through memory, measuring store forwarding instead of FMAs.
#define VLM_PROBE_12(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11)

__attribute__((target("avx512f"))) float fma_loop_avx512(float seed) {
  const __m512 x = _mm512_set1_ps(seed), y = _mm512_set1_ps(0.999999f);
#define DECL(i) __m512 a##i = _mm512_set1_ps(seed * (i + 1));
  VLM_PROBE_12(DECL)
#undef DECL
  for (int64_t it = 0; it < kFmaIters; ++it) {
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, y, x);
    VLM_PROBE_12(STEP)
#undef STEP
  }
  __m512 s = _mm512_setzero_ps();
#define SUM(i) s = _mm512_add_ps(s, a##i);
  VLM_PROBE_12(SUM)
#undef SUM
  alignas(64) float l[16];
  _mm512_store_ps(l, s);
  return l[0] + l[15];
}

__attribute__((target("avx512f,avx512bf16"))) float bf16_loop(float seed) {
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0 in every lane
  const __m512bh y = (__m512bh)_mm512_set1_epi16(0x3c00);
#define DECL(i) __m512 a##i = _mm512_set1_ps(seed * i);
  VLM_PROBE_12(DECL)
#undef DECL
  for (int64_t it = 0; it < kFmaIters; ++it) {
#define STEP(i) a##i = _mm512_dpbf16_ps(a##i, x, y);
    VLM_PROBE_12(STEP)
#undef STEP
  }
  __m512 s = _mm512_setzero_ps();
#define SUM(i) s = _mm512_add_ps(s, a##i);
  VLM_PROBE_12(SUM)
#undef SUM
  alignas(64) float l[16];
  _mm512_store_ps(l, s);
  return l[0] + l[15];
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(float seed) {
  const __m256 x = _mm256_set1_ps(seed), y = _mm256_set1_ps(0.999999f);
#define DECL(i) __m256 a##i = _mm256_set1_ps(seed * (i + 1));
  VLM_PROBE_12(DECL)
#undef DECL
  for (int64_t it = 0; it < kFmaIters; ++it) {
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, y, x);
    VLM_PROBE_12(STEP)
#undef STEP
  }
  __m256 s = _mm256_setzero_ps();
#define SUM(i) s = _mm256_add_ps(s, a##i);
  VLM_PROBE_12(SUM)
#undef SUM
  alignas(32) float l[8];
  _mm256_store_ps(l, s);
  return l[0] + l[7];
}
#undef VLM_PROBE_12

// Runs fn on every pool thread at once and returns the wall time.
double timed_on_all_threads(const std::function<void()>& fn) {
  ThreadPool& pool = ThreadPool::global();
  auto t0 = Clock::now();
  pool.run_on_all_threads([&](int) { fn(); });
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// read_gbs (median), min, max and trials from samples_gbs.
void summarize(BandwidthProbe& p) {
  std::vector<double> v = p.samples_gbs;
  p.trials = static_cast<int>(v.size());
  if (v.empty()) return;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  p.read_gbs = v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
  p.min_gbs = v.front();
  p.max_gbs = v.back();
}

}  // namespace

int64_t last_level_cache_bytes() {
  // sysfs: the highest-level data or unified cache of CPU 0 ("32768K").
  int64_t from_sysfs = 0;
  int best_level = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_file(dir + "level"), type_file(dir + "type"), size_file(dir + "size");
    int level = 0;
    std::string type, size;
    if (!(level_file >> level) || !(type_file >> type) || !(size_file >> size)) break;  // indices are contiguous
    if (type == "Instruction") continue;
    int64_t v = 0;
    size_t pos = 0;
    while (pos < size.size() && size[pos] >= '0' && size[pos] <= '9') v = v * 10 + (size[pos++] - '0');
    if (pos < size.size()) {
      if (size[pos] == 'K') v <<= 10;
      else if (size[pos] == 'M') v <<= 20;
      else if (size[pos] == 'G') v <<= 30;
    }
    if (level >= best_level) {
      best_level = level;
      from_sysfs = v;
    }
  }
  // cpuid as glibc reads it. The two disagree on a VM: this 2-vCPU KVM guest's sysfs says 32 MiB (one
  // Zen 4 CCD) and cpuid 320 MiB (the host's); the larger one is the safe bound for sizing a buffer.
  int64_t from_cpuid = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
  from_cpuid = std::max<long>(0, sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
  return std::max(from_sysfs, from_cpuid);
}

BandwidthProbe probe_read_bandwidth(int64_t bytes, int trials) {
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.num_threads();
  BandwidthProbe out;
  out.llc_bytes = last_level_cache_bytes();
  // A cyclic streaming pass over a buffer several times the LLC finds nothing of the previous pass
  // left (LRU-like replacement evicts every line before its reuse; even random replacement keeps at
  // most LLC / size of it). 4 x the largest LLC reported, 1 GiB at least (32 x this CPU's real 32 MiB),
  // at most an eighth of physical memory (the machine is shared).
  if (bytes <= 0) {
    bytes = std::max<int64_t>(int64_t{1} << 30, 4 * out.llc_bytes);
    const int64_t phys = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
    if (phys > 0) bytes = std::max<int64_t>(std::min(bytes, phys / 8), int64_t{64} << 20);
  }
  trials = std::max(trials, 1);
  const int64_t words = bytes / 8;
  // host_alloc backs blocks this large with transparent huge pages where the kernel allows it, as it
  // does the eagerly loaded weights the decode reads, so the probe sees the same TLB reach.
  HostBuffer buf = make_host_buffer(static_cast<size_t>(words * 8), MemCategory::kScratch);
  auto* p = static_cast<uint64_t*>(buf.get());
  pool.parallel_for(words, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
  }, 1 << 16);
  std::atomic<uint64_t> sink{0};
  out.bytes = words * 8;
  out.threads = threads;
  // Slices are a multiple of 64 bytes so aligned loads stay aligned.
  const int64_t slice = ((words + threads - 1) / threads + 7) / 8 * 8;
  // Wall time, not each thread's CPU time: the roofline is what the threads get side by side, as the
  // decode's do on an idle machine. Rating each thread by its own CPU time was tried and dropped: at
  // load 1.5 the worker was descheduled for ~half of its 46 ms pass (26 ms CPU), so every thread
  // looked like a lone core (~25 GB/s) and the sum (47-56 GB/s at load 1.5-9) was the single-core rate
  // doubled, not a rate two concurrent threads reach (~33 GB/s idle). Neither clock is right on a
  // loaded machine: the probe (and the decode) is only meaningful at load < 1.
  auto pass = [&] {
    auto t0 = Clock::now();
    pool.run_on_all_threads([&](int t) {
      int64_t begin = t * slice, end = std::min(words, begin + slice);
      if (begin < end) sink += sum_words(p + begin, end - begin);
    });
    return static_cast<double>(out.bytes) / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
  };
  pass();  // untimed: page-table walks of the fresh buffer, workers asleep, cores at idle clocks
  for (int r = 0; r < trials; ++r) out.samples_gbs.push_back(pass());
  out.bursts = 1;
  summarize(out);
  if (sink.load() == 42) out.threads = -out.threads;  // keep the sums observable
  return out;
}

BandwidthProbe pooled_bandwidth(const BandwidthProbe& a, const BandwidthProbe& b) {
  BandwidthProbe out = a;
  out.samples_gbs.insert(out.samples_gbs.end(), b.samples_gbs.begin(), b.samples_gbs.end());
  out.bursts = a.bursts + b.bursts;
  summarize(out);
  return out;
}

ComputeProbe probe_compute() {
  ComputeProbe out;
  out.threads = ThreadPool::global().num_threads();
  std::atomic<float> sink{0};
  const double ops_per_thread = static_cast<double>(kFmaIters) * 12;
  if (__builtin_cpu_supports("avx512f")) {
    out.isa = "avx512";
    double s = timed_on_all_threads([&] { sink = sink + fma_loop_avx512(1e-3f); });
    out.f32_gflops = ops_per_thread * 16 * 2 * out.threads / s / 1e9;
    if (__builtin_cpu_supports("avx512bf16")) {
      double sb = timed_on_all_threads([&] { sink = sink + bf16_loop(1e-3f); });
      out.bf16_gflops = ops_per_thread * 32 * 2 * out.threads / sb / 1e9;
    }
  } else if (__builtin_cpu_supports("avx2")) {
    out.isa = "avx2";
    double s = timed_on_all_threads([&] { sink = sink + fma_loop_avx2(1e-3f); });
    out.f32_gflops = ops_per_thread * 8 * 2 * out.threads / s / 1e9;
  } else {
    out.isa = "scalar";
  }
  return out;
}

}  // namespace vlm
