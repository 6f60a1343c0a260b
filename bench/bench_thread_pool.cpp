// ThreadPool latency and a stress check of its spin/sleep hand-offs.
//
// Measures (wall clock, median of --reps):
//   1. back-to-back: 10,000 empty parallel_for(num_threads) calls in a row (the caller may finish
//      an empty job before a worker claims anything: this is the dispatch cost), and 10,000
//      run_on_all_threads calls (every worker must take part: the spinning hand-off, the case of
//      decode's ~300 kernel launches per token);
//   2. round trip after idling past the workers' spin window (they are asleep: futex wake-up);
//   3. the load fallback: jobs of ~20 us (decode-sized) for a second with as many busy-looping
//      threads as the pool beside it (the machine oversubscribed: the pool should run most jobs on
//      the caller alone), then for a second after they stop (back to the workers, unless the
//      machine is loaded anyway); reported as parallel / solo job counts and job rates;
// and checks, over many randomised jobs (sizes, grains, idle gaps that straddle the spin window,
// throwing chunks), that every index is visited exactly once and errors reach the caller, and that
// run_on_all_threads runs every thread once and concurrently (a barrier inside it passes); the jobs
// of 3. are checked the same way. Any mismatch exits with status 1, so the binary doubles as a
// stress test of the pool.
//
// Usage: bench_thread_pool [--threads N] [--reps R] [--stress-jobs J]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int stress(vlm::ThreadPool& pool, int jobs) {
  std::mt19937_64 rng(42);
  std::vector<std::atomic<int>> hits(5000);
  int failures = 0;
  for (int j = 0; j < jobs; ++j) {
    const int64_t n = static_cast<int64_t>(rng() % hits.size()) + 1;
    const int64_t grain = static_cast<int64_t>(rng() % 64) + 1;
    for (int64_t i = 0; i < n; ++i) hits[static_cast<size_t>(i)].store(0, std::memory_order_relaxed);
    const bool throws = rng() % 16 == 0;
    const int64_t bad = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
    bool caught = false;
    try {
      pool.parallel_for(
          n,
          [&](int64_t b, int64_t e) {
            if (b < 0 || e > n || b >= e) throw std::runtime_error("bad chunk");
            for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed);
            if (throws && b <= bad && bad < e) vlm::throw_error(vlm::ErrorKind::kInternal, "chunk with {}", bad);
          },
          grain);
    } catch (const vlm::Error&) {
      caught = true;
    }
    if (throws != caught) {
      std::fprintf(stderr, "job %d: error %s\n", j, throws ? "lost" : "spurious");
      ++failures;
    }
    // A throwing job may skip chunks after the error; a clean one must cover [0, n) exactly once.
    if (!throws)
      for (int64_t i = 0; i < n; ++i)
        if (hits[static_cast<size_t>(i)].load() != 1) {
          std::fprintf(stderr, "job %d (n=%lld grain=%lld): index %lld visited %d times\n", j,
                       static_cast<long long>(n), static_cast<long long>(grain), static_cast<long long>(i),
                       hits[static_cast<size_t>(i)].load());
          ++failures;
          break;
        }
    // Gaps around the workers' spin window, so both the spinning and the sleeping hand-off run.
    const int gap = static_cast<int>(rng() % 8);
    if (gap >= 6) std::this_thread::sleep_for(std::chrono::microseconds(gap == 6 ? 150 : 400));
  }
  return failures;
}

// Decode-sized jobs (n = 64 items of ~0.3 us each) for `seconds`; counts jobs, checks coverage.
struct LoadRun {
  int64_t jobs = 0, parallel = 0, solo = 0;
  int failures = 0;
};

LoadRun timed_jobs(vlm::ThreadPool& pool, double seconds) {
  LoadRun r;
  const vlm::ThreadPool::Stats before = pool.stats();
  std::vector<std::atomic<int>> hits(64);
  std::atomic<uint64_t> sink{0};
  const auto t0 = Clock::now();
  while (seconds_since(t0) < seconds) {
    for (auto& h : hits) h.store(0, std::memory_order_relaxed);
    pool.parallel_for(
        64,
        [&](int64_t b, int64_t e) {
          uint64_t x = 0;
          for (int64_t i = b; i < e; ++i) {
            for (int k = 0; k < 300; ++k) x = x * 6364136223846793005ull + static_cast<uint64_t>(k);
            hits[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed);
          }
          sink.fetch_add(x, std::memory_order_relaxed);
        },
        4);
    for (auto& h : hits)
      if (h.load() != 1) {
        ++r.failures;
        break;
      }
    ++r.jobs;
  }
  const vlm::ThreadPool::Stats after = pool.stats();
  r.parallel = static_cast<int64_t>(after.parallel_jobs - before.parallel_jobs);
  r.solo = static_cast<int64_t>(after.solo_jobs - before.solo_jobs);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, reps = 7, jobs = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--stress-jobs")) jobs = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (threads > 0) vlm::ThreadPool::set_global_threads(threads);
  vlm::ThreadPool& pool = vlm::ThreadPool::global();
  const int nt = pool.num_threads();
  std::printf("threads: %d\n", nt);

  std::vector<double> hot, pinned, cold;
  std::atomic<int64_t> sink{0};
  for (int r = 0; r < reps; ++r) {
    constexpr int kCalls = 10000;
    auto t0 = Clock::now();
    for (int i = 0; i < kCalls; ++i)
      pool.parallel_for(nt, [&](int64_t b, int64_t e) { sink.fetch_add(e - b, std::memory_order_relaxed); });
    hot.push_back(seconds_since(t0) / kCalls);
    t0 = Clock::now();
    for (int i = 0; i < kCalls; ++i) pool.run_on_all_threads([&](int t) { sink.fetch_add(t, std::memory_order_relaxed); });
    pinned.push_back(seconds_since(t0) / kCalls);
    double c = 0;
    constexpr int kColdCalls = 50;
    for (int i = 0; i < kColdCalls; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past the spin window: workers sleep
      auto t1 = Clock::now();
      pool.parallel_for(nt, [&](int64_t b, int64_t e) { sink.fetch_add(e - b, std::memory_order_relaxed); });
      c += seconds_since(t1);
    }
    cold.push_back(c / kColdCalls);
  }
  std::printf("round trip, back-to-back: %.2f us (median of %d x 10000; min %.2f)\n", median(hot) * 1e6, reps,
              *std::min_element(hot.begin(), hot.end()) * 1e6);
  std::printf("run_on_all_threads, back-to-back (every worker must take part): %.2f us (median; min %.2f)\n",
              median(pinned) * 1e6, *std::min_element(pinned.begin(), pinned.end()) * 1e6);
  std::printf("round trip, workers asleep: %.2f us (median of %d x 50; min %.2f)\n", median(cold) * 1e6, reps,
              *std::min_element(cold.begin(), cold.end()) * 1e6);

  int failures = stress(pool, jobs);

  {  // 3. load fallback
    std::atomic<bool> stop{false};
    std::vector<std::thread> hogs;
    for (int i = 0; i < nt; ++i)
      hogs.emplace_back([&] {
        volatile uint64_t x = 0;
        while (!stop.load(std::memory_order_relaxed)) x = x + 1;
      });
    const LoadRun loaded = timed_jobs(pool, 1.0);
    stop = true;
    for (auto& h : hogs) h.join();
    const LoadRun quiet = timed_jobs(pool, 1.0);
    failures += loaded.failures + quiet.failures;
    std::printf("load fallback, %d busy threads beside the pool: %lld jobs/s, %lld parallel / %lld solo\n", nt,
                static_cast<long long>(loaded.jobs), static_cast<long long>(loaded.parallel),
                static_cast<long long>(loaded.solo));
    std::printf("load fallback, after they stop: %lld jobs/s, %lld parallel / %lld solo\n",
                static_cast<long long>(quiet.jobs), static_cast<long long>(quiet.parallel),
                static_cast<long long>(quiet.solo));
  }
  // run_on_all_threads: every thread exactly once, all at the same time (a barrier inside must pass).
  for (int r = 0; r < 200; ++r) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(nt));
    std::atomic<int> arrived{0};
    std::atomic<bool> barrier_ok{true};
    if (r % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // workers asleep
    pool.run_on_all_threads([&](int t) {
      seen[static_cast<size_t>(t)].fetch_add(1);
      arrived.fetch_add(1);
      const auto t0 = Clock::now();
      while (arrived.load() < nt)
        if (seconds_since(t0) > 5.0) {
          barrier_ok = false;
          break;
        }
    });
    for (int t = 0; t < nt; ++t)
      if (seen[static_cast<size_t>(t)].load() != 1 || !barrier_ok) {
        std::fprintf(stderr, "run_on_all_threads round %d: thread %d ran %d times, barrier %s\n", r, t,
                     seen[static_cast<size_t>(t)].load(), barrier_ok ? "ok" : "timed out");
        ++failures;
        break;
      }
  }
  std::printf("stress: %d randomised jobs, %d failures\n", jobs, failures);
  return failures == 0 ? 0 : 1;
}
