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
// descheduled before it claimed anything. The load fallback (thread_pool.h) is the caller's alone:
// it samples the scheduler's run delay between jobs, under run_mu_, and never touches the workers' hand-off.
#include "core/thread_pool.h"

#if defined(__linux__)
#include <fcntl.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string_view>

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

// Load fallback (thread_pool.h). Every kWindowNs of wall time in which jobs run, the caller reads
// how long it waited runnable for a CPU (run_delay, /proc/thread-self/schedstat; ~10 us per read).
// A wait above kBusyDelayFraction of the window means other runnable work shares our cores: a
// busy-looping thread at load 7 on this 2-core VM waited 34-35 % of its wall time, while an idle
// machine's kernel threads preempt us for microseconds. (Involuntary context switches, the first
// signal tried, also count those short preemptions, so their rate on an idle machine is not far
// from a loaded one's: 0.25-0.48 per CPU-ms at load ~10.) Then jobs run on the caller alone for a
// back-off of kBackoffMinNs, doubling to kBackoffMaxNs while each re-try with the workers finds the
// load still there (so a steady load costs one 10 ms window on two threads per 0.5 s); a clean
// window with the workers resets it. Without a readable schedstat the fallback stays off.
constexpr int64_t kWindowNs = 10'000'000;
constexpr double kBusyDelayFraction = 0.10;
constexpr int64_t kBackoffMinNs = 20'000'000;
constexpr int64_t kBackoffMaxNs = 500'000'000;

// The calling thread's total wait for a CPU while runnable, in ns; -1 when unavailable.
int64_t run_delay_ns() {
#if !defined(__linux__)
  return -1;
#else
  const int fd = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[128];
  const ssize_t got = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (got <= 0) return -1;
  buf[got] = '\0';
  // "<cpu time ns> <run delay ns> <timeslices>"
  char* end = nullptr;
  std::strtoll(buf, &end, 10);
  if (end == buf) return -1;
  const char* second = end;
  const long long delay = std::strtoll(second, &end, 10);
  return end == second ? -1 : static_cast<int64_t>(delay);
#endif
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

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
  const char* fallback = std::getenv("VLMCHECK_POOL_SOLO");
  fallback_ = !(fallback && std::string_view(fallback) == "0");
  backoff_ns_ = kBackoffMinNs;
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
  if (!pinned && fallback_) {
    const int64_t now = now_ns();
    if (now - window_ns_ >= kWindowNs) review_load(now);
    if (solo_) {  // as a one-thread pool runs it
      ++stats_.solo_jobs;
      fn(0, n);
      return;
    }
  }
  if (!pinned) ++stats_.parallel_jobs;
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

void ThreadPool::review_load(int64_t now) {
  const int64_t delay = run_delay_ns();
  if (delay < 0) {  // no scheduler statistics: keep every thread
    fallback_ = false;
    solo_ = false;
    return;
  }
  // A window long past (the process idled between jobs) says nothing about now: just reopen it.
  const bool stale = window_ns_ == 0 || now - window_ns_ > 4 * kWindowNs;
  if (solo_) {
    if (now >= solo_until_ns_) solo_ = false;  // re-try the workers; the next window judges them
  } else if (!stale) {
    const bool busy = static_cast<double>(delay - window_delay_ns_) > kBusyDelayFraction * (now - window_ns_);
    if (busy) {
      ++stats_.busy_windows;
      solo_ = true;
      solo_until_ns_ = now + backoff_ns_;
      backoff_ns_ = std::min(backoff_ns_ * 2, kBackoffMaxNs);
    } else {
      backoff_ns_ = kBackoffMinNs;
    }
  }
  window_ns_ = now;
  window_delay_ns_ = delay;
}

ThreadPool::Stats ThreadPool::stats() const {
  std::lock_guard<std::mutex> run_lock(run_mu_);
  return stats_;
}

void ThreadPool::set_load_fallback(bool on) {
  std::lock_guard<std::mutex> run_lock(run_mu_);
  fallback_ = on;
  solo_ = false;
  backoff_ns_ = kBackoffMinNs;
  window_ns_ = 0;
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
