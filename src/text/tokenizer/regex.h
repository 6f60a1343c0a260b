// PCRE2 (JIT, PCRE2_UTF | PCRE2_UCP) regexes for the split/replace patterns of tokenizer.json, with
// the match iteration of HF's Oniguruma binding, and HF's Pattern (a literal string or a regex)
// whose find_matches() covers the whole input with (span, is_match) pieces.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace vlm::tok {

struct Span {
  size_t start, end;
  bool is_match;
};

class Regex {
 public:
  // Throws Error(kFormat) "<what>: regex <pattern> does not compile: <reason> at offset N".
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches [start, end) in order; an empty match directly after the previous
  // match is skipped (rust-onig's FindMatches). `text` must be valid UTF-8.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// HF `SplitPattern` / `ReplacePattern`: {"String": s} (a literal) or {"Regex": r}.
class Pattern {
 public:
  static Pattern literal(std::string s);
  static Pattern regex(const std::string& r, const std::string& what);
  // Spans covering `text` in order; for empty text a single empty non-match (as HF).
  void find_matches(std::string_view text, std::vector<Span>& out) const;

 private:
  std::string literal_;
  std::shared_ptr<Regex> regex_;
};

}  // namespace vlm::tok
