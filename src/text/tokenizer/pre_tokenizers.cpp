// Pre-tokenizers (HF tokenizers `pre_tokenizers`): ByteLevel, Split, Metaspace, Whitespace,
// WhitespaceSplit, Digits, Punctuation, CharDelimiterSplit, BertPreTokenizer and Sequence. Every
// split honours HF's SplitDelimiterBehavior and drops empty pieces, as PreTokenizedString::split.
#include <array>

#include "text/tokenizer/regex.h"
#include "text/tokenizer/stages.h"
#include "text/unicode.h"

namespace vlm::tok {
namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(std::string_view s, const JsonPath& at) {
  if (s == "Removed") return Behavior::kRemoved;
  if (s == "Isolated") return Behavior::kIsolated;
  if (s == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::kMergedWithNext;
  if (s == "Contiguous") return Behavior::kContiguous;
  json_fail(at, fmt::format("unknown split behavior \"{}\"", s));
}

// HF NormalizedString::split: turn (span, is_match) pieces into the kept spans.
void apply_behavior(const std::vector<Span>& m, Behavior b, std::vector<Span>& out) {
  switch (b) {
    case Behavior::kIsolated:
      out = m;
      break;
    case Behavior::kRemoved:
      for (const Span& s : m)
        if (!s.is_match) out.push_back(s);
      break;
    case Behavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Span& s : m) {
        if (s.is_match && !prev_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.start, s.end, s.is_match && !prev_match && out.empty()});
        }
        prev_match = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t i = m.size(); i-- > 0;) {
        const Span& s = m[i];
        if (s.is_match && !prev_match && !out.empty()) {
          out.back().start = s.start;
        } else {
          out.push_back({s.start, s.end, false});
        }
        prev_match = s.is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::kContiguous: {
      bool prev_match = false;
      for (const Span& s : m) {
        if (s.is_match == prev_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.start, s.end, false});
        }
        prev_match = s.is_match;
      }
      break;
    }
  }
}

// Replaces each unresolved piece by the kept spans of `matcher(text, spans)` under `behavior`.
template <typename Matcher>
void split_pieces(Pieces& pieces, Behavior behavior, Matcher&& matcher) {
  Pieces out;
  out.reserve(pieces.size() * 2);
  std::vector<Span> m, kept;
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    m.clear();
    kept.clear();
    matcher(std::string_view(p.text), m);
    apply_behavior(m, behavior, kept);
    for (const Span& s : kept) {
      if (s.end == s.start) continue;
      out.push_back(Piece{p.text.substr(s.start, s.end - s.start), -1, p.at_origin && s.start == 0});
    }
  }
  pieces = std::move(out);
}

// HF's `impl Pattern for Fn(char) -> bool`: each matching character is its own match.
template <typename Pred>
void char_matches(std::string_view text, std::vector<Span>& out, Pred&& pred) {
  if (text.empty()) {
    out.push_back({0, 0, false});
    return;
  }
  size_t last = 0, pos = 0;
  while (pos < text.size()) {
    const size_t b = pos;
    const char32_t c = unicode::decode_utf8(text, pos);
    if (pred(c)) {
      if (last < b) out.push_back({last, b, false});
      out.push_back({b, pos, true});
      last = pos;
    }
  }
  if (pos > last) out.push_back({last, pos, false});
}

void inverted(std::vector<Span>& m) {
  for (Span& s : m) s.is_match = !s.is_match;
}

const std::array<std::string, 256>& byte_level_strings() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int b = 0; b < 256; ++b) t[b] = unicode::to_utf8(byte_to_char(static_cast<uint8_t>(b)));
    return t;
  }();
  return table;
}

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const std::string& what)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_shared<Regex>(kGpt2Pattern, what);
  }
  void pre_tokenize(Pieces& pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : pieces)
        if (p.id < 0 && (p.text.empty() || p.text[0] != ' ')) p.text.insert(p.text.begin(), ' ');
    }
    if (regex_) {
      split_pieces(pieces, Behavior::kIsolated, [&](std::string_view t, std::vector<Span>& m) {
        if (t.empty()) {
          m.push_back({0, 0, false});
          return;
        }
        std::vector<std::pair<size_t, size_t>> found;
        regex_->find_all(t, found);
        size_t prev = 0;
        for (auto [s, e] : found) {
          if (prev != s) m.push_back({prev, s, false});
          m.push_back({s, e, true});
          prev = e;
        }
        if (prev != t.size()) m.push_back({prev, t.size(), false});
      });
    }
    const auto& table = byte_level_strings();
    for (Piece& p : pieces) {
      if (p.id >= 0) continue;
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += table[static_cast<uint8_t>(c)];
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::shared_ptr<Regex> regex_;
};

class SplitPre final : public PreTokenizer {
 public:
  SplitPre(Pattern p, Behavior b, bool invert) : pattern_(std::move(p)), behavior_(b), invert_(invert) {}
  void pre_tokenize(Pieces& pieces) const override {
    split_pieces(pieces, behavior_, [&](std::string_view t, std::vector<Span>& m) {
      pattern_.find_matches(t, m);
      if (invert_) inverted(m);
    });
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(char32_t replacement, PrependScheme scheme, bool split)
      : rep_(unicode::to_utf8(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(Pieces& pieces) const override {
    for (Piece& p : pieces) {
      if (p.id >= 0) continue;
      std::string t;
      t.reserve(p.text.size() + rep_.size());
      for (char c : p.text) {
        if (c == ' ') {
          t += rep_;
        } else {
          t.push_back(c);
        }
      }
      const bool starts = t.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_origin))) {
        t.insert(0, rep_);
      }
      p.text = std::move(t);
    }
    if (split_) {
      split_pieces(pieces, Behavior::kMergedWithNext, [&](std::string_view t, std::vector<Span>& m) {
        Pattern::literal(rep_).find_matches(t, m);
      });
    }
  }

 private:
  std::string rep_;
  PrependScheme scheme_;
  bool split_;
};

class CharClassSplit final : public PreTokenizer {
 public:
  using Pred = bool (*)(char32_t);
  CharClassSplit(Pred pred, Behavior b) : pred_(pred), behavior_(b) {}
  void pre_tokenize(Pieces& pieces) const override {
    split_pieces(pieces, behavior_, [&](std::string_view t, std::vector<Span>& m) { char_matches(t, m, pred_); });
  }

 private:
  Pred pred_;
  Behavior behavior_;
};

class CharDelimiter final : public PreTokenizer {
 public:
  explicit CharDelimiter(char32_t d) : d_(d) {}
  void pre_tokenize(Pieces& pieces) const override {
    split_pieces(pieces, Behavior::kRemoved,
                 [&](std::string_view t, std::vector<Span>& m) { char_matches(t, m, [&](char32_t c) { return c == d_; }); });
  }

 private:
  char32_t d_;
};

// HF Whitespace: the regex \w+|[^\w\s]+, inverted and removed — i.e. keep runs of word characters
// and runs of other non-space characters. Written as a scanner to use Rust's \w and \s classes.
class Whitespace final : public PreTokenizer {
 public:
  void pre_tokenize(Pieces& pieces) const override {
    split_pieces(pieces, Behavior::kRemoved, [](std::string_view t, std::vector<Span>& m) {
      if (t.empty()) {
        m.push_back({0, 0, false});
        return;
      }
      size_t prev = 0, pos = 0;
      while (pos < t.size()) {
        size_t p = pos;
        const char32_t c = unicode::decode_utf8(t, p);
        const int cls = unicode::is_word_char(c) ? 1 : unicode::is_whitespace(c) ? 0 : 2;
        if (cls == 0) {
          pos = p;
          continue;
        }
        size_t end = p;
        while (end < t.size()) {
          size_t q = end;
          const char32_t d = unicode::decode_utf8(t, q);
          const int dc = unicode::is_word_char(d) ? 1 : unicode::is_whitespace(d) ? 0 : 2;
          if (dc != cls) break;
          end = q;
        }
        // Matches of the regex are the kept runs; the inverted pattern marks them as non-matches.
        if (prev != pos) m.push_back({prev, pos, true});
        m.push_back({pos, end, false});
        prev = pos = end;
      }
      if (prev != t.size()) m.push_back({prev, t.size(), true});
    });
  }
};

class BertPre final : public PreTokenizer {
 public:
  void pre_tokenize(Pieces& pieces) const override {
    split_pieces(pieces, Behavior::kRemoved,
                 [](std::string_view t, std::vector<Span>& m) { char_matches(t, m, unicode::is_whitespace); });
    split_pieces(pieces, Behavior::kIsolated,
                 [](std::string_view t, std::vector<Span>& m) { char_matches(t, m, unicode::is_punctuation); });
  }
};

class SequencePre final : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> v) : steps_(std::move(v)) {}
  void pre_tokenize(Pieces& pieces) const override {
    for (const auto& s : steps_) s->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

char32_t single_char(std::string_view s, const JsonPath& at) {
  size_t pos = 0;
  const char32_t c = s.empty() ? 0 : unicode::decode_utf8(s, pos);
  if (s.empty() || pos != s.size()) json_fail(at, fmt::format("expected exactly one character, got \"{}\"", s));
  return c;
}

bool is_numeric_char(char32_t c) { return unicode::is_numeric(c); }
bool is_punct_char(char32_t c) { return unicode::is_punctuation(c); }

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(JsonElement e, const JsonPath& at) {
  const std::string type = json_type_of(e, at);
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevel>(json_bool_or(e, "add_prefix_space", at, true),
                                       json_bool_or(e, "use_regex", at, true), *at.file + ": " + at.path);
  }
  if (type == "Split") {
    const std::string behavior = std::string(json_as_string(json_require(e, "behavior", at), at.child("behavior")));
    return std::make_unique<SplitPre>(make_pattern(json_require(e, "pattern", at), at.child("pattern")),
                                      parse_behavior(behavior, at.child("behavior")),
                                      json_bool_or(e, "invert", at, false));
  }
  if (type == "Metaspace") {
    const char32_t rep = single_char(json_string_or(e, "replacement", at, "\xE2\x96\x81"), at.child("replacement"));
    PrependScheme scheme = PrependScheme::kAlways;
    if (auto ps = json_member(e, "prepend_scheme")) {
      const std::string_view s = json_as_string(*ps, at.child("prepend_scheme"));
      if (s == "always") {
        scheme = PrependScheme::kAlways;
      } else if (s == "first") {
        scheme = PrependScheme::kFirst;
      } else if (s == "never") {
        scheme = PrependScheme::kNever;
      } else {
        json_fail(at.child("prepend_scheme"), fmt::format("expected always, first or never, got \"{}\"", s));
      }
    } else if (auto ap = json_member(e, "add_prefix_space")) {
      // Files written before prepend_scheme existed.
      scheme = json_as_bool(*ap, at.child("add_prefix_space")) ? PrependScheme::kAlways : PrependScheme::kNever;
    }
    return std::make_unique<Metaspace>(rep, scheme, json_bool_or(e, "split", at, true));
  }
  if (type == "Whitespace") return std::make_unique<Whitespace>();
  if (type == "WhitespaceSplit") return std::make_unique<CharClassSplit>(unicode::is_whitespace, Behavior::kRemoved);
  if (type == "BertPreTokenizer") return std::make_unique<BertPre>();
  if (type == "Digits") {
    return std::make_unique<CharClassSplit>(
        is_numeric_char, json_bool_or(e, "individual_digits", at, false) ? Behavior::kIsolated : Behavior::kContiguous);
  }
  if (type == "Punctuation") {
    const std::string b = json_string_or(e, "behavior", at, "Isolated");
    return std::make_unique<CharClassSplit>(is_punct_char, parse_behavior(b, at.child("behavior")));
  }
  if (type == "CharDelimiterSplit") {
    return std::make_unique<CharDelimiter>(
        single_char(json_as_string(json_require(e, "delimiter", at), at.child("delimiter")), at.child("delimiter")));
  }
  if (type == "Sequence") {
    const JsonPath pat = at.child("pretokenizers");
    simdjson::dom::array arr;
    if (json_require(e, "pretokenizers", at).get_array().get(arr)) json_fail(pat, "expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    size_t i = 0;
    for (JsonElement x : arr) steps.push_back(make_pre_tokenizer(x, pat.index(i++)));
    return std::make_unique<SequencePre>(std::move(steps));
  }
  json_fail(at.child("type"), fmt::format("unsupported pre_tokenizer \"{}\"", type));
}

char32_t byte_to_char(uint8_t b) {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255);
      t[i] = printable ? static_cast<char32_t>(i) : next++;
    }
    return t;
  }();
  return table[b];
}

int byte_from_char(char32_t c) {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_char(static_cast<uint8_t>(b))] = static_cast<int16_t>(b);
    return t;
  }();
  return c < table.size() ? table[c] : -1;
}

}  // namespace vlm::tok
