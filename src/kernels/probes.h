// Roofline probes: the two physical floors every benchmark is reported against (DESIGN.md "How speed
// is proven"). Measured on this machine in the same run as the benchmark, never taken from a datasheet.
#pragma once

#include <cstdint>

namespace vlm {

struct BandwidthProbe {
  double read_gbs = 0;  // best of the repetitions, GB/s (1e9 bytes)
  int64_t bytes = 0;
  int threads = 0;
};
// Streams a `bytes`-sized buffer (far larger than the caches) with wide loads on every pool thread.
BandwidthProbe probe_read_bandwidth(int64_t bytes = int64_t{1} << 30, int repetitions = 5);

struct ComputeProbe {
  double f32_gflops = 0;   // FMA peak, all pool threads
  double bf16_gflops = 0;  // bf16 dot-product peak (vdpbf16ps) where the CPU has it, else 0
  int threads = 0;
  const char* isa = "";
};
// Tight register-resident FMA loops: the matrix-unit ceiling a GEMM can at most reach.
ComputeProbe probe_compute();

}  // namespace vlm
