// Shared helpers for tests: temporary directories that clean up, file writers, and running the
// built vlmcheck binary as a child process (capturing stdout, stderr and the exit status).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/json.h"

namespace vlm::test {

// A fresh directory under $TMPDIR, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& content);  // creates parent dirs
std::string read_file(const std::string& path);

struct ProcessResult {
  int exit_code = -1;  // -1 if killed by a signal
  int signal = 0;
  std::string out, err;
};
// Runs the built vlmcheck with `args`; `env` entries are "NAME=value" added to the environment.
ProcessResult run_vlmcheck(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                           const std::string& cwd = "");
std::string source_dir();   // repository root

// How many of a text fixture's reference greedy tokens transformers 5.17 produced with the full context.
// Its Phi-3 drops the KV cache when LongRoPE decoding first crosses original_max_position_embeddings and
// continues from the new token alone, so only the tokens up to that step are comparable.
size_t comparable_greedy_tokens(const Json& config, size_t prompt_len, size_t n);
std::string vlmcheck_binary();

}  // namespace vlm::test
