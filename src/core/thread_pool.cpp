// ThreadPool: each parallel_for publishes one job and bumps a generation counter; workers spin on the
// counter for a while after each job, then sleep on a condition variable (see thread_pool.h for why).
//
// Sleep/wake is the classic store-then-load handshake on both sides, all seq_cst so the two orders
// are total: a worker going to sleep increments sleepers_ and then re-reads generation_ under mu_;
// the caller bumps generation_ and then reads sleepers_. At least one of them sees the other's
// store, so either the worker sees the new job or the caller notifies it (after taking mu_, so the
// notification cannot fall between the worker's check and its wait). Completion uses the same
// pattern with unfinished_ / caller_sleeping_. Chunks are claimed through claims_ (see the header),
// and a job is complete when its chunks are, so the caller never waits for a worker that was
// descheduled before it claimed anything.
#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace vlm {

namespace {

using Clock = std::chrono::steady_clock;

// A worker that finished a job spins this long for the next one before sleeping. Decode launches
// jobs every few microseconds, so workers stay awake for a whole forward pass and sleep soon after
// it; an idle pool costs at most this much CPU per job.
constexpr auto kWorkerSpin = std::chrono::microseconds(200);
// The caller, done with its own chunks, spins this long for the workers before sleeping. Short:
// a worker that has not finished by then was probably preempted (shared machine), and spinning
// would take the core it needs.
constexpr auto kCallerSpin = std::chrono::microseconds(50);
// Chunks per thread: more than one, so a thread that starts late sheds work to the others.
constexpr int64_t kChunksPerThread = 4;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls done() until it returns true (-> true) or `limit` has passed (-> false).
template <typename Pred>
bool spin_until(Pred&& done, Clock::duration limit) {
  const auto start = Clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (Clock::now() - start > limit) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads < 1) throw_error(ErrorKind::kInvalidArgument, "thread pool size {} < 1", num_threads);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_seq_cst);
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::record_error() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_) error_ = std::current_exception();
}

void ThreadPool::chunk_done(int64_t count) {
  if (unfinished_.fetch_sub(count, std::memory_order_seq_cst) == count &&
      caller_sleeping_.load(std::memory_order_seq_cst)) {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_done_.notify_one();
  }
  // From here on the job may be over: job_ and the caller's fn must not be touched.
}

void ThreadPool::run_chunk(int64_t c, uint64_t seq) {
  const int64_t begin = c * job_chunk_, end = std::min(job_n_, begin + job_chunk_);
  try {
    (*job_)(begin, end);
  } catch (...) {
    record_error();
    // Stop handing out the rest of this job: its unclaimed chunks count as done.
    const uint64_t tag = (seq & 0xffffffffu) << 32;
    uint64_t cur = claims_.load(std::memory_order_acquire);
    while ((cur & ~uint64_t{0xffffffffu}) == tag && (cur & 0xffffffffu) != 0) {
      if (claims_.compare_exchange_weak(cur, tag, std::memory_order_acq_rel, std::memory_order_acquire)) {
        chunk_done(static_cast<int64_t>(cur & 0xffffffffu));
        break;
      }
    }
  }
  chunk_done(1);
}

void ThreadPool::run_chunks(int participant, uint64_t seq, bool pinned) {
  if (pinned) {  // the job waits for every participant, so it is still live here
    if (participant < job_chunks_) run_chunk(participant, seq);
    return;
  }
  const uint64_t tag = (seq & 0xffffffffu) << 32;
  uint64_t cur = claims_.load(std::memory_order_acquire);
  for (;;) {
    if ((cur & ~uint64_t{0xffffffffu}) != tag) return;  // that job is over (a later one is out)
    const uint64_t left = cur & 0xffffffffu;
    if (left == 0) return;
    // acquire: a successful claim sees the job fields written before the caller published claims_.
    if (claims_.compare_exchange_weak(cur, cur - 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
      run_chunk(static_cast<int64_t>(left - 1), seq);
      cur = claims_.load(std::memory_order_acquire);
    }
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = 0;
    auto ready = [&] {
      g = generation_.load(std::memory_order_seq_cst);
      return g != seen || stop_.load(std::memory_order_relaxed);
    };
    if (!spin_until(ready, kWorkerSpin)) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      cv_start_.wait(lock, ready);
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = g;
    run_chunks(index, g >> 1, (g & 1) != 0);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  const int threads = num_threads();
  grain = std::max<int64_t>(grain, 1);
  if (threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  const int64_t chunk = std::max(grain, (n + threads * kChunksPerThread - 1) / (threads * kChunksPerThread));
  run_job(fn, n, chunk, /*pinned=*/false);
}

void ThreadPool::run_on_all_threads(const std::function<void(int)>& fn) {
  const int threads = num_threads();
  if (threads == 1) {
    fn(0);
    return;
  }
  run_job([&](int64_t b, int64_t) { fn(static_cast<int>(b)); }, threads, 1, /*pinned=*/true);
}

void ThreadPool::run_job(const std::function<void(int64_t, int64_t)>& fn, int64_t n, int64_t chunk, bool pinned) {
  std::lock_guard<std::mutex> run_lock(run_mu_);
  // No chunk of an earlier job is outstanding (it ended at unfinished_ == 0), so no worker reads the
  // job fields now; publishing claims_ (release) and generation_ hands them over.
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = chunk;
  job_chunks_ = (n + chunk - 1) / chunk;
  error_ = nullptr;
  const uint64_t seq = (generation_.load(std::memory_order_relaxed) >> 1) + 1;
  unfinished_.store(job_chunks_, std::memory_order_relaxed);
  claims_.store(((seq & 0xffffffffu) << 32) | static_cast<uint64_t>(pinned ? 0 : job_chunks_),
                std::memory_order_release);
  generation_.store((seq << 1) | (pinned ? 1u : 0u), std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_start_.notify_all();
  }
  run_chunks(0, seq, pinned);
  auto done = [&] { return unfinished_.load(std::memory_order_seq_cst) == 0; };
  if (!spin_until(done, kCallerSpin)) {
    std::unique_lock<std::mutex> lock(mu_);
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    cv_done_.wait(lock, done);
    caller_sleeping_.store(false, std::memory_order_relaxed);
  }
  job_ = nullptr;
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

namespace {
std::unique_ptr<ThreadPool>& global_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
std::mutex& global_mu() {
  static std::mutex mu;
  return mu;
}
}  // namespace

ThreadPool& ThreadPool::global() {
  std::lock_guard<std::mutex> lock(global_mu());
  auto& slot = global_slot();
  if (!slot) slot = std::make_unique<ThreadPool>(std::max(1u, std::thread::hardware_concurrency()));
  return *slot;
}

void ThreadPool::set_global_threads(int n) {
  std::lock_guard<std::mutex> lock(global_mu());
  global_slot() = std::make_unique<ThreadPool>(std::max(1, n));
}

}  // namespace vlm
