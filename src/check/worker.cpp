// Worker processes: fork + exec of our own binary, pipes for job / events / output, poll() loop with
// the deadline, SIGTERM → SIGKILL escalation, and the worker-side event writer.
#include "check/worker.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "core/error.h"

namespace vlm::check {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kTailBytes = 8192;

void append_tail(std::string& tail, const char* p, size_t n) {
  tail.append(p, n);
  if (tail.size() > 4 * kTailBytes) tail.erase(0, tail.size() - kTailBytes);
}

std::string final_tail(const std::string& s) {
  return s.size() > kTailBytes ? "…" + s.substr(s.size() - kTailBytes) : s;
}

bool write_all(int fd, const std::string& s) {
  const char* p = s.data();
  size_t left = s.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

void handle_event_line(const std::string& line, WorkerRun& run, const WorkerProgress& progress) {
  Json ev;
  try {
    ev = Json::parse(line);
  } catch (const std::exception&) {
    return;  // a torn line from a dying worker
  }
  std::string type = ev.value("event", "");
  if (type == "phase") {
    run.last_phase = ev.value("phase", run.last_phase);
    if (progress.on_phase) progress.on_phase(run.last_phase);
  } else if (type == "token") {
    run.tokens_seen = ev.value("tokens", int64_t{0});
    if (progress.on_token) progress.on_token(run.tokens_seen, ev.value("decode_s", 0.0));
  } else if (type == "result" && ev.contains("outcome")) {
    decode(ev["outcome"], run.outcome);
    run.got_result = true;
  }
}

}  // namespace

std::string signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGINT: return "SIGINT";
    case SIGPIPE: return "SIGPIPE";
    default: return fmt::format("signal {}", sig);
  }
}

WorkerRun run_in_worker(const std::string& self_exe, const EngineJob& job, double timeout_s,
                        const WorkerProgress& progress, const std::atomic<bool>& stop) {
  WorkerRun run;
  int in_pipe[2], ev_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) || ::pipe2(ev_pipe, O_CLOEXEC) || ::pipe2(out_pipe, O_CLOEXEC) ||
      ::pipe2(err_pipe, O_CLOEXEC))
    throw_error(ErrorKind::kIo, "worker: pipe() failed: {}", std::strerror(errno));
  const auto start = Clock::now();
  pid_t pid = ::fork();
  if (pid < 0) throw_error(ErrorKind::kResource, "worker: fork() failed: {}", std::strerror(errno));
  if (pid == 0) {
    // Child: its own process group, so a terminal Ctrl-C reaches the parent, which stops it in order.
    ::setpgid(0, 0);
    // Lift the four ends above 3 first: when the parent runs with a standard fd closed, pipe2 hands
    // out 0-3 itself, and a dup2 onto its own number would keep O_CLOEXEC or clobber another end.
    int job = ::fcntl(in_pipe[0], F_DUPFD_CLOEXEC, 10), out = ::fcntl(out_pipe[1], F_DUPFD_CLOEXEC, 10);
    int err = ::fcntl(err_pipe[1], F_DUPFD_CLOEXEC, 10), ev = ::fcntl(ev_pipe[1], F_DUPFD_CLOEXEC, 10);
    ::dup2(job, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::dup2(ev, 3);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    const char* argv[] = {"vlmcheck", "worker", "--job-fd", "0", "--event-fd", "3", nullptr};
    ::execv(self_exe.c_str(), const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  ::close(in_pipe[0]);
  ::close(ev_pipe[1]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  // The job is small (well under the pipe buffer); write it and close so the worker sees EOF.
  write_all(in_pipe[1], encode(job).dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
  ::close(in_pipe[1]);

  pollfd fds[3] = {{ev_pipe[0], POLLIN, 0}, {out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string ev_buf;
  int open_fds = 3;
  bool exited = false;
  int status = 0;
  std::optional<Clock::time_point> term_sent;
  char buf[65536];
  while (open_fds > 0 || !exited) {
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (!term_sent && timeout_s > 0 && elapsed > timeout_s) {
      run.timed_out = true;
      ::kill(-pid, SIGTERM);
      term_sent = Clock::now();
    }
    if (!term_sent && stop.load()) {
      run.interrupted = true;
      ::kill(-pid, SIGTERM);
      term_sent = Clock::now();
    }
    if (term_sent && std::chrono::duration<double>(Clock::now() - *term_sent).count() > kKillGraceSeconds)
      ::kill(-pid, SIGKILL);
    if (!exited) {
      pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) exited = true;
    }
    if (open_fds == 0) {
      if (!exited) ::usleep(20000);
      continue;
    }
    int pr = ::poll(fds, 3, 100);
    if (pr < 0 && errno != EINTR) break;
    for (int i = 0; i < 3; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (i == 0) {
          ev_buf.append(buf, static_cast<size_t>(n));
          for (size_t nl = ev_buf.find('\n'); nl != std::string::npos; nl = ev_buf.find('\n')) {
            handle_event_line(ev_buf.substr(0, nl), run, progress);
            ev_buf.erase(0, nl + 1);
          }
        } else {
          append_tail(i == 1 ? run.stdout_tail : run.stderr_tail, buf, static_cast<size_t>(n));
        }
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
    // A worker that exited but left a grandchild holding the pipes must not stall the sweep.
    if (exited && open_fds > 0 && term_sent &&
        std::chrono::duration<double>(Clock::now() - *term_sent).count() > 2 * kKillGraceSeconds)
      break;
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  if (!exited) ::waitpid(pid, &status, 0);
  if (!ev_buf.empty()) handle_event_line(ev_buf, run, progress);
  run.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  if (WIFSIGNALED(status)) run.term_signal = WTERMSIG(status);
  if (WIFEXITED(status)) run.exit_status = WEXITSTATUS(status);
  run.stderr_tail = final_tail(run.stderr_tail);
  run.stdout_tail = final_tail(run.stdout_tail);
  return run;
}

int worker_main(int job_fd, int event_fd, const PhaseHook& phase_hook) {
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(job_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  EngineJob job;
  decode(parse_json(text, "worker job (stdin)"), job);
  auto emit = [event_fd](const Json& j) {
    write_all(event_fd, j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
  };
  EngineCallbacks cb;
  cb.on_phase = [&](const std::string& phase) {
    emit(Json{{"event", "phase"}, {"phase", phase}});
    if (phase_hook) phase_hook(phase, job.model);
  };
  cb.on_token = [&](int64_t tokens, double decode_s) {
    emit(Json{{"event", "token"}, {"tokens", tokens}, {"decode_s", decode_s}});
  };
  EngineOutcome outcome = run_engine_job(job, cb);
  emit(Json{{"event", "result"}, {"outcome", encode(outcome)}});
  return 0;
}

}  // namespace vlm::check
