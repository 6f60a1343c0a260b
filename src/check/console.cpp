// Console rendering; the live line is redrawn with \r and cleared (ESC[K) only on a TTY.
#include "check/console.h"

#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>

#include "check/assessment.h"
#include "check/text_util.h"

namespace vlm::check {

Console::Console(std::FILE* out, int color, int width) : out_(out) {
  tty_ = ::isatty(::fileno(out)) != 0;
  const char* no_color = std::getenv("NO_COLOR");
  const char* force = std::getenv("FORCE_COLOR");
  // Flags beat the environment; NO_COLOR (no-color.org: "regardless of its value", when non-empty)
  // beats FORCE_COLOR; otherwise colour only on a terminal.
  if (color == 1) color_ = true;
  else if (color == 0) color_ = false;
  else if (no_color && *no_color) color_ = false;
  else color_ = (force && *force) || tty_;
  width_ = width > 0 ? width : 100;
  if (width <= 0)
    if (const char* w = std::getenv("COLUMNS"); w && std::atoi(w) > 0) width_ = std::clamp(std::atoi(w), 60, 120);
}

std::string Console::paint(const std::string& s, const char* code) const {
  return color_ ? fmt::format("\x1b[{}m{}\x1b[0m", code, s) : s;
}

void Console::line(const std::string& text) {
  if (live_) {
    std::fputs("\r\x1b[K", out_);
    live_ = false;
  }
  std::fputs((text + "\n").c_str(), out_);
  std::fflush(out_);
}

void Console::warn(const std::string& text) { line(paint("warning: ", "33") + text); }
void Console::heading(const std::string& text) { line(paint(text, "1")); }

void Console::start_model(int index, int total, const std::string& model) {
  index_ = index;
  total_ = total;
  model_ = model;
  phase_ = "starting";
  tokens_ = 0;
  decode_s_ = 0;
  start_ = std::chrono::steady_clock::now();
  if (!tty_) line(fmt::format("Processing Model [{}/{}]: {}", index, total, model));
  else redraw();
}

void Console::phase(const std::string& p) {
  phase_ = p;
  if (tty_) redraw();
  else line(fmt::format("  [{}/{}] {}: {}", index_, total_, model_, p));
}

void Console::tokens(int64_t n, double decode_s) {
  tokens_ = n;
  decode_s_ = decode_s;
  if (tty_) redraw();
}

void Console::redraw() {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string tps = tokens_ > 0 && decode_s_ > 0 ? fmt::format(" {} tok {:.1f} tok/s", tokens_, tokens_ / decode_s_) : "";
  std::string text = fmt::format("[{}/{}] {} · {} · {:.1f}s{}", index_, total_, model_, phase_, el, tps);
  text = truncate_chars(text, static_cast<size_t>(width_ - 1), false);
  std::fputs(("\r\x1b[K" + text).c_str(), out_);
  std::fflush(out_);
  live_ = true;
}

void Console::done_model(const ModelResult& r) {
  const auto& a = r.assessment;
  std::string obs;
  for (const auto& o : a.observations) obs += (obs.empty() ? "" : "+") + o;
  std::string extra = r.failure ? fmt::format(" phase={} stage=\"{}\" code={}{}", r.failure->phase, r.failure->stage,
                                              r.failure->code, r.failure->signal.empty() ? "" : " signal=" + r.failure->signal)
                                : "";
  // Machine-parsable key=value fields stay uncoloured; only the leading tag is painted.
  const char* tag_colour = a.execution != "completed" ? "31" : a.usability == "usable" ? "32" : "33";
  line(fmt::format("{} SUMMARY model={} execution={} usability={} maintainer={} observations={}{} ({:.2f}s)",
                   paint(fmt::format("[RUN {}/{}]", index_, total_), tag_colour), r.model, a.execution, a.usability,
                   a.maintainer_status, obs.empty() ? "-" : obs, extra, r.timing.total_time_s));
}

void Console::summary_table(const std::vector<ModelResult>& results) {
  heading("Results Summary");
  std::vector<const ModelResult*> rows = sort_failures_first(results);
  // Completed first, then by descending valid TPS (check_models' comparison order).
  std::stable_sort(rows.begin(), rows.end(), [](const ModelResult* a, const ModelResult* b) {
    bool ca = a->assessment.execution == "completed", cb = b->assessment.execution == "completed";
    if (ca != cb) return ca;
    double ta = a->metrics.generation_tps_valid ? a->metrics.generation_tps : -1;
    double tb = b->metrics.generation_tps_valid ? b->metrics.generation_tps : -1;
    return ta > tb;
  });
  line(fmt::format("{:>3} | {:<40} | {:<3} | {:>6} | {:>6} | {:>6} | {:>7} | {:>8} | {:>6}", "#", "Model", "E/U", "Load",
                   "First", "Gen", "Total", "TPS", "GB"));
  int i = 0;
  for (const auto* r : rows) {
    const auto& a = r->assessment;
    char e = a.execution == "completed" ? 'C' : a.execution == "crashed" ? 'X' : 'I';
    char u = a.usability == "usable" ? 'U' : a.usability == "usable_with_caveats" ? 'C' : a.usability == "unusable" ? 'X' : '-';
    line(fmt::format("{:>3} | {:<40} | {}/{} | {:>6.2f} | {:>6.2f} | {:>6.2f} | {:>7.2f} | {:>8} | {:>6}", ++i,
                     truncate_chars(r->model, 40), e, u, r->timing.model_load_time_s, r->timing.first_token_latency_s,
                     r->timing.generation_time_s, r->timing.total_time_s,
                     r->metrics.generation_tps_valid ? fmt_tps(r->metrics.generation_tps) : "-",
                     fmt_gb(std::max(r->metrics.peak_memory_gb, r->metrics.peak_rss_gb))));
  }
  Counts c = count_results(results);
  line(fmt::format("Maintainer Summary: attempted={} evaluated={} completed={} crashed={} indeterminate={}", c.attempted,
                   c.evaluated, c.completed, c.crashed, c.indeterminate));
}

}  // namespace vlm::check
