// Opt-in per-op profile of the CUDA backend (VLMCHECK_CUDA_PROFILE=1): every kernel-table entry and
// every copy is bracketed by two CUDA events and a host clock. At exit a table goes to stderr with,
// per (op, phase): calls, host time spent inside the call (launch cost, or waiting when the call
// blocks), and GPU time between the two events (the op's kernels, including any gap the stream
// had to wait inside the op). Phase is "decode" or "prefill n=N" after the token count N of the latest
// linear call (n < 8 is decode), so the first few ops of a forward inherit the previous call's phase.
// N separates the passes of one prompt: a vision tower's blocks (one row per patch), its merger (one
// per merged token) and the language model's prefill chunks.
//
// Events are resolved in batches of kFlush pairs (one cudaEventSynchronize per batch), so the profile
// adds one stream wait per ~kFlush ops; the numbers are for finding where time goes, not for the
// bench table. Off (the default), the table holds the plain entries and this file costs nothing.
#include "kernels/cuda/common.cuh"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>

namespace vlm::ops::cuda::detail {
namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
  int64_t calls = 0;
  double host_s = 0.0;
  double gpu_ms = 0.0;
};

struct Pending {
  std::string key;
  cudaEvent_t a, b;
};

struct Profiler {
  static constexpr size_t kFlush = 2048;
  std::map<std::string, Stats> stats;
  std::vector<Pending> pending;
  std::vector<cudaEvent_t> spare;
  bool decode = false;
  int64_t tokens = 0;  // of the latest linear call
  int depth = 0;  // nested scopes (linear -> copy) count only at the outer level

  cudaEvent_t event() {
    if (!spare.empty()) {
      cudaEvent_t e = spare.back();
      spare.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    VLM_CUDA(cudaEventCreate(&e), "profile");
    return e;
  }

  void flush() {
    if (pending.empty()) return;
    cudaEventSynchronize(pending.back().b);
    for (Pending& p : pending) {
      float ms = 0.0f;
      if (cudaEventElapsedTime(&ms, p.a, p.b) == cudaSuccess) stats[p.key].gpu_ms += ms;
      cudaGetLastError();
      spare.push_back(p.a);
      spare.push_back(p.b);
    }
    pending.clear();
  }

  void report() {
    flush();
    std::fprintf(stderr, "\nVLMCHECK_CUDA_PROFILE (per op and phase)\n%-36s %9s %11s %11s %10s %10s\n", "op", "calls",
                 "host ms", "gpu ms", "host us/c", "gpu us/c");
    double th = 0, tg = 0;
    for (const auto& [k, s] : stats) {
      std::fprintf(stderr, "%-36s %9lld %11.2f %11.2f %10.2f %10.2f\n", k.c_str(), static_cast<long long>(s.calls),
                   s.host_s * 1e3, s.gpu_ms, s.host_s * 1e6 / s.calls, s.gpu_ms * 1e3 / s.calls);
      th += s.host_s * 1e3;
      tg += s.gpu_ms;
    }
    std::fprintf(stderr, "%-36s %9s %11.2f %11.2f\n", "total", "", th, tg);
  }
};

Profiler* g_profiler = nullptr;

}  // namespace

bool profiling() {
  static const bool on = [] {
    const char* v = std::getenv("VLMCHECK_CUDA_PROFILE");
    if (v == nullptr || *v == '\0' || std::string(v) == "0") return false;
    g_profiler = new Profiler();
    // Registered after the CUDA runtime initialized (the first op), so it runs before its teardown.
    std::atexit([] { g_profiler->report(); });
    return true;
  }();
  return on;
}

void profile_phase(int64_t tokens) {
  if (g_profiler == nullptr) return;
  g_profiler->decode = tokens < 8;
  g_profiler->tokens = tokens;
}

ProfileScope::ProfileScope(const char* op) {
  if (!profiling() || g_profiler->depth++ > 0) return;
  op_ = op;
  start_ = g_profiler->event();
  VLM_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(start_), stream(op)), "profile");
  t0_ = std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

ProfileScope::~ProfileScope() {
  if (g_profiler == nullptr) return;
  --g_profiler->depth;
  if (op_ == nullptr) return;
  const double t1 = std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  Profiler& p = *g_profiler;
  std::string key =
      std::string(op_) + (p.decode ? std::string(" [decode]") : " [prefill n=" + std::to_string(p.tokens) + "]");
  Stats& s = p.stats[key];
  s.calls += 1;
  s.host_s += t1 - t0_;
  cudaEvent_t b = p.event();
  cudaEventRecord(b, stream(op_));
  p.pending.push_back({std::move(key), static_cast<cudaEvent_t>(start_), b});
  if (p.pending.size() >= Profiler::kFlush) p.flush();
}

}  // namespace vlm::ops::cuda::detail

namespace vlm::ops::cuda {
bool profiling_enabled() { return detail::profiling(); }
}  // namespace vlm::ops::cuda
