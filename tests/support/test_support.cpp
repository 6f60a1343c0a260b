// Test helpers: temp dirs, files and child processes (fork/exec with pipes).
#include "support/test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <algorithm>

namespace vlm::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/vlmcheck-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_file(const std::string& path, const std::string& content) {
  fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Both paths are fixed at build time; VLMCHECK_TEST_SOURCE_DIR / VLMCHECK_TEST_BINARY override them
// when the test binaries run elsewhere (copied with the repository to the GPU machine, see
// tools/cuda/make_device_bundle.sh).
std::string source_dir() {
  const char* env = std::getenv("VLMCHECK_TEST_SOURCE_DIR");
  return env && *env ? env : VLM_SOURCE_DIR;
}

size_t comparable_greedy_tokens(const Json& config, size_t prompt_len, size_t n) {
  const Json* rope = nullptr;
  for (const char* key : {"rope_parameters", "rope_scaling"})
    if (config.contains(key) && config[key].is_object()) rope = &config[key];
  if (!rope) return n;
  const std::string type = rope->value("rope_type", rope->value("type", std::string()));
  if (type != "longrope") return n;
  const int64_t original =
      config.value("original_max_position_embeddings", rope->value("original_max_position_embeddings", int64_t{0}));
  if (original <= 0 || static_cast<int64_t>(prompt_len + n) <= original) return n;
  return std::min<size_t>(n, static_cast<size_t>(std::max<int64_t>(0, original - static_cast<int64_t>(prompt_len) + 1)));
}
std::string vlmcheck_binary() {
  const char* env = std::getenv("VLMCHECK_TEST_BINARY");
  return env && *env ? env : VLM_BINARY;
}

ProcessResult run_vlmcheck(const std::vector<std::string>& args, const std::vector<std::string>& env,
                           const std::string& cwd) {
  int out_pipe[2], err_pipe[2];
  if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(127);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    std::string bin = vlmcheck_binary();
    argv.push_back(bin.data());
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ProcessResult r;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

}  // namespace vlm::test
