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

namespace {

// Model output for a terminal: control characters other than newline shown as U+FFFD (an escape sequence in
// a model's output must not drive the terminal), each line wrapped at `width` code points on spaces.
std::vector<std::string> wrap_for_console(const std::string& text, size_t width) {
  std::string clean;
  clean.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\n' || c == '\t' || c >= 0x20) clean += c == '\t' ? ' ' : static_cast<char>(c);
    else clean += "\xEF\xBF\xBD";
  }
  std::vector<std::string> out;
  for (const std::string& para : split(clean, '\n')) {
    std::string rest = para;
    while (utf8_length(rest) > width) {
      std::string head = truncate_chars(rest, width, false);
      size_t cut = head.rfind(' ');
      if (cut == std::string::npos || cut == 0) cut = head.size();
      out.push_back(head.substr(0, cut));
      rest = rest.substr(cut == head.size() ? cut : cut + 1);
    }
    out.push_back(rest);
  }
  while (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

}  // namespace

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
  if (r.failure) return;
  // check_models §5.1: the generated text, wrapped at <= 100 columns, then the compact metrics.
  for (const std::string& l : wrap_for_console(r.generated_text, 100)) line("  " + l);
  const auto& t = r.timing;
  const auto& m = r.metrics;
  std::string stop = t.stop_reason == "max_tokens" ? ", stop=max_tokens" : "";
  line(fmt::format("  Timing: {} total (gen={}, load={}, prep={}, first={}{}) | Memory: {} GB peak",
                   fmt_seconds(t.total_time_s), fmt_seconds(t.generation_time_s), fmt_seconds(t.model_load_time_s),
                   fmt_seconds(t.prompt_prep_time_s), fmt_seconds(t.first_token_latency_s), stop,
                   fmt_gb(m.peak_memory_gb)));
  line(fmt::format("  Tokens: {} ({} prompt{} + {} gen) | Speed: {} gen/s, {} prompt/s", fmt_int(m.total_tokens),
                   fmt_int(m.prompt_tokens), m.image_tokens > 0 ? fmt::format(", {} image", fmt_int(m.image_tokens)) : "",
                   fmt_int(m.generation_tokens), m.generation_tps_valid ? fmt_tps(m.generation_tps) : "-",
                   fmt_tps(m.prompt_tps)));
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
