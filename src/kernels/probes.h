// Roofline probes: the two physical floors every benchmark is reported against (DESIGN.md "How speed
// is proven"). Measured on this machine in the same run as the benchmark, never taken from a datasheet.
#pragma once

#include <cstdint>
#include <vector>

namespace vlm {

struct BandwidthProbe {
  // The roofline's bandwidth: the MEDIAN of the timed trials, GB/s (1e9 bytes). Not the best one: on
  // this shared 2-vCPU VM the two-thread read rate jumps for a few hundred ms at a time (stop 16: one
  // run's best of five 57.8 GB/s, the others 30-36; 2026-11-27 04:00: a whole probe at median 45.2,
  // max 50.0 GB/s between runs at 31.6 and 33.1, while the Qwen decode right after it read 26.7 GB/s).
  // One core alone streams 25-30 GB/s (thread CPU time), so ~33 GB/s for two is a limit shared with
  // the host's other tenants, and the jumps are moments when they leave more of it. The median of
  // passes taken before and after the runs is what a decode can expect; max_gbs keeps the best seen.
  double read_gbs = 0;
  double min_gbs = 0, max_gbs = 0;  // spread of the trials
  int trials = 0;
  int64_t bytes = 0;      // bytes read per trial (the whole buffer)
  int64_t llc_bytes = 0;  // last-level cache the size was chosen against (0: unknown)
  int threads = 0;
  int bursts = 0;                    // separate calls whose passes these are (pooled_bandwidth)
  std::vector<double> samples_gbs;  // every timed pass, in order
};
// Streams a buffer far larger than the last-level cache with wide loads, every pool thread reading
// its own contiguous slice at once (decode's GEMVs read their rows the same way: sequential streams on
// every pool thread). bytes = 0 picks max(1 GiB, 4 x LLC), capped at an eighth of physical memory.
// One untimed pass first (first-touch faults, thread wake-up, clocks), then `trials` timed passes.
BandwidthProbe probe_read_bandwidth(int64_t bytes = 0, int trials = 9);
// The passes of two probes (of the same buffer size and threads) as one: median, min and max over all
// of them. A benchmark probes before and after its runs, so a burst of spare bandwidth lasting one
// probe (this VM's read rate jumps from ~30 to 45-58 GB/s for a few hundred ms at a time) moves at
// most half the samples instead of the whole figure.
BandwidthProbe pooled_bandwidth(const BandwidthProbe& a, const BandwidthProbe& b);
// The sum of n 64-bit words read with the widest loads this CPU has (AVX-512, AVX2, else scalar): the read
// probe's loop, for benchmarks that time their own reads. p must be 64-byte aligned.
uint64_t sum_words(const uint64_t* p, int64_t n);
// The last-level cache in bytes: the larger of what sysfs (CPU 0's highest data/unified level) and
// cpuid (sysconf) report; 0 if neither does.
int64_t last_level_cache_bytes();

struct ComputeProbe {
  double f32_gflops = 0;   // FMA peak, all pool threads
  double bf16_gflops = 0;  // bf16 dot-product peak (vdpbf16ps) where the CPU has it, else 0
  int threads = 0;
  const char* isa = "";
};
// Tight register-resident FMA loops: the matrix-unit ceiling a GEMM can at most reach.
ComputeProbe probe_compute();

}  // namespace vlm
