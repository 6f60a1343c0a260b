// One worker process per model. The parent re-executes its own binary (`/proc/self/exe worker`),
// writes the job as one JSON line to the worker's stdin and reads events from the worker's fd 3:
//   {"event":"phase","phase":"model_load"}   {"event":"token","tokens":12,"decode_s":0.4}
//   {"event":"result","outcome":{…EngineOutcome…}}
// stdout and stderr are captured (a bounded tail is kept). A worker that outlives --timeout gets
// SIGTERM, then SIGKILL after a grace period; a worker that dies by a signal, exits without a
// result, or is killed for memory becomes a failure with the last phase it reported.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "check/engine_job.h"
#include "check/record.h"

namespace vlm::check {

struct WorkerRun {
  bool got_result = false;
  EngineOutcome outcome;      // valid when got_result
  std::string last_phase = "input_validation";
  bool timed_out = false;
  bool interrupted = false;   // the parent's stop flag was raised
  int term_signal = 0;        // the signal that ended the worker (0 if it exited)
  int exit_status = 0;
  std::string stderr_tail, stdout_tail;
  double wall_s = 0;
  int64_t tokens_seen = 0;
};

struct WorkerProgress {
  std::function<void(const std::string& phase)> on_phase;
  std::function<void(int64_t tokens, double decode_s)> on_token;
};

constexpr double kKillGraceSeconds = 2.0;

// Runs `job` in a worker process; never throws for worker failures (they are in the result).
// `stop` is polled; when it becomes true the worker is stopped and `interrupted` is set.
WorkerRun run_in_worker(const std::string& self_exe, const EngineJob& job, double timeout_s,
                        const WorkerProgress& progress, const std::atomic<bool>& stop);

// The worker side: reads one job line from `job_fd`, runs it, streams events to `event_fd`.
// Returns the process exit status (0 when a result was written).
// `phase_hook` (may be empty) runs after each phase event with the phase and the job's model: the
// CLI's test-only fault injection lives there.
using PhaseHook = std::function<void(const std::string& phase, const std::string& model)>;
int worker_main(int job_fd, int event_fd, const PhaseHook& phase_hook = {});

// Signal number → "SIGSEGV" (or "signal N").
std::string signal_name(int sig);

}  // namespace vlm::check
