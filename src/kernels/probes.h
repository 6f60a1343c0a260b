// Roofline probes: the two physical floors every benchmark is reported against (DESIGN.md "How speed
// is proven"). Measured on this machine in the same run as the benchmark, never taken from a datasheet.
#pragma once

#include <cstdint>

namespace vlm {

struct BandwidthProbe {
  // The roofline's bandwidth: the MEDIAN of the timed trials, GB/s (1e9 bytes). Not the best one: on
  // this shared VM single trials swing (stop 16: one run's best of five 57.8 GB/s, the others 30-36),
  // and a decode lasting seconds does not get a spike of a few tens of ms; the median of passes made
  // under the same conditions is what a decode step can expect to get.
  double read_gbs = 0;
  double min_gbs = 0, max_gbs = 0;  // spread of the trials
  int trials = 0;
  int64_t bytes = 0;      // bytes read per trial (the whole buffer)
  int64_t llc_bytes = 0;  // last-level cache the size was chosen against (0: unknown)
  int threads = 0;
};
// Streams a buffer far larger than the last-level cache with wide loads, every pool thread reading
// its own contiguous slice at once (decode's GEMVs read their rows the same way: sequential streams on
// every pool thread). bytes = 0 picks max(1 GiB, 4 x LLC), capped at an eighth of physical memory.
// One untimed pass first (first-touch faults, thread wake-up, clocks), then `trials` timed passes.
BandwidthProbe probe_read_bandwidth(int64_t bytes = 0, int trials = 9);
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
