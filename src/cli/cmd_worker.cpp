// `vlmcheck worker`: the hidden per-model mode `vlmcheck run` re-executes itself in (see
// src/check/worker.h). It also hosts the test-only fault injection, honoured only when
// VLMCHECK_ALLOW_FAULT_INJECTION=1:
//   VLMCHECK_WORKER_FAULT=segv:<model-substring> | abort:<…> | hang:<…>   (comma-separated list)
// fires when the named model enters its model_load phase — a real signal or a real hang in a real
// process, so the parent's crash and timeout handling is tested without mocks.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "check/worker.h"
#include "cli/command.h"

namespace vlm::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t e; (e = s.find(',', b)) != std::string::npos; b = e + 1) out.push_back(s.substr(b, e - b));
  out.push_back(s.substr(b));
  return out;
}

void maybe_inject_fault(const std::string& phase, const std::string& model) {
  const char* allow = std::getenv("VLMCHECK_ALLOW_FAULT_INJECTION");
  const char* fault = std::getenv("VLMCHECK_WORKER_FAULT");
  if (!allow || std::string(allow) != "1" || !fault || phase != "model_load") return;
  std::string kind;
  for (const std::string& spec : split_list(fault)) {
    size_t colon = spec.find(':');
    std::string target = colon == std::string::npos ? "" : spec.substr(colon + 1);
    if (!target.empty() && model.find(target) != std::string::npos) kind = spec.substr(0, colon);
  }
  if (kind.empty()) return;
  std::fprintf(stderr, "vlmcheck worker: injecting fault '%s' for %s\n", kind.c_str(), model.c_str());
  std::fflush(stderr);
  if (kind == "segv") {
    ::signal(SIGSEGV, SIG_DFL);
    ::raise(SIGSEGV);
  } else if (kind == "abort") {
    ::signal(SIGABRT, SIG_DFL);
    ::raise(SIGABRT);
  } else if (kind == "hang") {
    ::signal(SIGTERM, SIG_IGN);  // a truly stuck worker: only SIGKILL ends it
    for (;;) ::pause();
  }
}

}  // namespace

void register_worker(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("worker", "Internal: run one model's job for `vlmcheck run`");
  cmd->group("");  // hidden from --help
  auto job_fd = std::make_shared<int>(0);
  auto event_fd = std::make_shared<int>(3);
  cmd->add_option("--job-fd", *job_fd, "File descriptor to read the job JSON from");
  cmd->add_option("--event-fd", *event_fd, "File descriptor to write events to");
  cmd->callback([&action, job_fd, event_fd] {
    action = [job_fd, event_fd] { return check::worker_main(*job_fd, *event_fd, maybe_inject_fault); };
  });
}

}  // namespace vlm::cli
