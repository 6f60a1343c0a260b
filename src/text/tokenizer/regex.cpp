// PCRE2 wrapper. Compiled once per pattern with JIT; each thread keeps its own JIT stack and match
// context (pcre2_match is reentrant given per-call match data).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer/regex.h"

#include <pcre2.h>

#include "core/error.h"
#include "text/unicode.h"

namespace vlm::tok {
namespace {

struct ThreadMatchState {
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ThreadMatchState() {
    mctx = pcre2_match_context_create(nullptr);
    // Long whitespace or letter runs recurse in the JIT; 8 MiB covers pieces of many megabytes.
    stack = pcre2_jit_stack_create(64 << 10, 8 << 20, nullptr);
    if (mctx && stack) pcre2_jit_stack_assign(mctx, nullptr, stack);
  }
  ~ThreadMatchState() {
    if (stack) pcre2_jit_stack_free(stack);
    if (mctx) pcre2_match_context_free(mctx);
  }
};

ThreadMatchState& thread_state() {
  thread_local ThreadMatchState state;
  return state;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& what) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (!code) {
    throw_error(ErrorKind::kFormat, "{}: regex \"{}\" does not compile: {} at offset {}", what, pattern,
                pcre2_message(err), static_cast<size_t>(err_off));
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  ThreadMatchState& ts = thread_state();
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  if (!md) throw_error(ErrorKind::kResource, "regex: out of memory for match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), last_end, PCRE2_NO_UTF_CHECK, md.get(), ts.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      throw_error(ErrorKind::kResource, "regex \"{}\": matching failed: {}", pattern_, pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t s = ov[0], e = ov[1];
    if (s == e && have_last && last_match_end == e) {
      // Skip an empty match right after the previous match; step one character.
      last_end += last_end < text.size() ? unicode::utf8_seq_len(static_cast<uint8_t>(text[last_end])) : 1;
      continue;
    }
    last_end = e;
    have_last = true;
    last_match_end = e;
    out.emplace_back(s, e);
  }
}

Pattern Pattern::literal(std::string s) {
  Pattern p;
  p.literal_ = std::move(s);
  return p;
}

Pattern Pattern::regex(const std::string& r, const std::string& what) {
  Pattern p;
  p.regex_ = std::make_shared<Regex>(r, what);
  return p;
}

void Pattern::find_matches(std::string_view text, std::vector<Span>& out) const {
  if (text.empty()) {
    out.push_back({0, 0, false});
    return;
  }
  size_t prev = 0;
  auto add = [&](size_t s, size_t e) {
    if (prev != s) out.push_back({prev, s, false});
    out.push_back({s, e, true});
    prev = e;
  };
  if (regex_) {
    std::vector<std::pair<size_t, size_t>> m;
    regex_->find_all(text, m);
    for (auto [s, e] : m) add(s, e);
  } else {
    if (literal_.empty()) {
      // HF: an empty literal matches nothing.
      out.push_back({0, text.size(), false});
      return;
    }
    size_t pos = 0;
    while (pos <= text.size()) {
      const size_t f = text.find(literal_, pos);
      if (f == std::string_view::npos) break;
      add(f, f + literal_.size());
      pos = f + literal_.size();
    }
  }
  if (prev != text.size()) out.push_back({prev, text.size(), false});
}

}  // namespace vlm::tok
