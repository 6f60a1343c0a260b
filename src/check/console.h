// Console output of `vlmcheck run`: a live one-line progress display per model on a TTY (model,
// phase, elapsed, tokens/s), plain lines when piped, ANSI colour only when allowed (NO_COLOR /
// FORCE_COLOR / --no-color / --force-color), and the final summary table.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "check/record.h"

namespace vlm::check {

class Console {
 public:
  // color: -1 = auto (TTY and no NO_COLOR), 0 = off, 1 = on.
  Console(std::FILE* out, int color, int width);
  bool tty() const { return tty_; }
  void line(const std::string& text);            // a plain line (ends any live line first)
  void warn(const std::string& text);
  void heading(const std::string& text);
  // Live progress: start(i, n, model) then phase()/tokens() updates, then done(result).
  void start_model(int index, int total, const std::string& model);
  void phase(const std::string& phase);
  void tokens(int64_t n, double decode_s);
  void done_model(const ModelResult& r);
  void summary_table(const std::vector<ModelResult>& results);

 private:
  std::string paint(const std::string& s, const char* code) const;
  void redraw();
  std::FILE* out_;
  bool tty_ = false, color_ = false, live_ = false;
  int width_ = 100;
  int index_ = 0, total_ = 0;
  std::string model_, phase_;
  int64_t tokens_ = 0;
  double decode_s_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace vlm::check
