// A fixed-size thread pool for data-parallel kernels. parallel_for splits [0, n) into contiguous
// chunks, runs them on the workers plus the calling thread, and returns when all are done.
// Exceptions thrown by a chunk are rethrown on the calling thread (the first one wins).
//
// Latency matters more than throughput here: decode calls parallel_for ~300 times per token, each a
// few microseconds of work. So a worker that finishes a job spins (with `pause`) for a bounded time
// before sleeping on a condition variable, and the caller spins briefly on the completion count
// before sleeping; back-to-back jobs then cost two cache-line transfers instead of two futex round
// trips. Chunks are claimed dynamically and a job ends when its chunks are done, so a worker that
// wakes late or is preempted (the machine is shared) costs at most the chunk it holds, never a
// wait for it to be scheduled; run_on_all_threads is the one job shape that pins
// work to threads (the roofline probes need every thread busy at once).
//
// On an oversubscribed machine that spinning is what hurts: the scheduler shares the CPU between
// sessions (autogroups), so a spinning worker burns the time our caller would have computed in, and
// a worker preempted while it holds a chunk makes the caller wait a time slice. SmolLM2 4-bit decode
// at load ~10 (other sessions compiling): 25-29 tok/s on two threads, 52-56 on one. So the pool
// watches how long its caller waits runnable for a CPU (the scheduler's run delay, sampled every
// 10 ms) and, while other work competes for the cores, runs parallel_for on the caller alone
// (the workers stop spinning and sleep), re-trying the workers after a back-off that doubles while
// the load lasts. On an idle machine the caller waits for a CPU only while a kernel thread runs
// (microseconds), far under the threshold, so it keeps every thread.
// VLMCHECK_POOL_SOLO=0 (read at construction) or set_load_fallback(false) turns this off.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vlm {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // total threads including the caller; >= 1
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // fn(begin, end) over [0, n) in chunks of at least `grain` items. Not reentrant: never call
  // parallel_for of the same pool from inside fn (it would wait for itself).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // fn(t) once on every thread t in [0, num_threads()) at the same time (t = 0 is the caller).
  // Never falls back to the caller alone.
  void run_on_all_threads(const std::function<void(int)>& fn);

  // Counters of parallel_for jobs big enough for the pool (n above the grain, more than one thread).
  struct Stats {
    uint64_t parallel_jobs = 0;  // handed to the workers
    uint64_t solo_jobs = 0;      // run on the caller alone because the machine was oversubscribed
    uint64_t busy_windows = 0;   // sampling windows whose caller waited for a CPU (each starts a back-off)
  };
  Stats stats() const;
  // Turns the load fallback (header comment) on or off; either way ends a back-off in progress.
  void set_load_fallback(bool on);

  // The process-wide pool used by kernels; sized by set_global_threads() or hardware concurrency.
  static ThreadPool& global();
  static void set_global_threads(int n);

 private:
  void worker_loop(int index);
  // Publishes the job in job_* fields, runs the caller's share and waits until every chunk is done.
  void run_job(const std::function<void(int64_t, int64_t)>& fn, int64_t n, int64_t chunk, bool pinned);
  // Claims and runs chunks of job `seq` until none are left (pinned job: runs chunk `participant`).
  void run_chunks(int participant, uint64_t seq, bool pinned);
  void run_chunk(int64_t c, uint64_t seq);
  void chunk_done(int64_t count);
  // Load fallback: closes a sampling window at steady-clock time `now` (ns) and decides solo_.
  void review_load(int64_t now);
  void record_error();

  std::vector<std::thread> workers_;

  // The published job. Written by the caller only while no chunk is outstanding; a worker reads it
  // only while it holds a claimed, unfinished chunk (the job cannot complete, so it cannot change).
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 0;
  int64_t job_chunks_ = 0;

  // Each on its own cache line: they are the only lines that bounce between cores per job.
  // generation_: (job sequence number << 1) | pinned. claims_: (sequence << 32) | chunks not yet
  // claimed; a claim takes the highest unclaimed index and fails once the sequence has moved on, so
  // a worker that wakes after its job ended does nothing. unfinished_: chunks not yet completed;
  // the job ends when it reaches 0, whether or not every worker showed up.
  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<uint64_t> claims_{0};
  alignas(64) std::atomic<int64_t> unfinished_{0};
  std::atomic<int> sleepers_{0};  // workers blocked (or about to block) on cv_start_
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};

  alignas(64) std::mutex mu_;  // guards the condition variables' sleep/wake and error_
  std::condition_variable cv_start_, cv_done_;
  std::exception_ptr error_;
  mutable std::mutex run_mu_;  // one parallel_for at a time

  // Load fallback state, touched only by a caller holding run_mu_.
  bool fallback_ = true;
  bool solo_ = false;          // parallel_for runs on the caller alone
  int64_t solo_until_ns_ = 0;  // end of the current back-off (steady clock)
  int64_t backoff_ns_ = 0;     // length of the next back-off
  int64_t window_ns_ = 0;      // start of the sampling window (steady clock), 0 = none open
  int64_t window_delay_ns_ = 0;  // the caller's run delay (time runnable, waiting for a CPU) then
  Stats stats_;
};

}  // namespace vlm
