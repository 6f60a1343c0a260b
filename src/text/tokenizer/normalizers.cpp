// Normalizers (HF tokenizers `normalizers`): Unicode forms, Lowercase, Replace, Prepend, Strip,
// StripAccents, BertNormalizer and Sequence. They rewrite one span of text; offsets are not kept.
#include "text/tokenizer/regex.h"
#include "text/tokenizer/stages.h"
#include "text/unicode.h"

namespace vlm::tok {
namespace {

class UnicodeNorm final : public Normalizer {
 public:
  explicit UnicodeNorm(unicode::NormForm f) : form_(f) {}
  std::string normalize(std::string_view s) const override { return unicode::normalize(s, form_); }

 private:
  unicode::NormForm form_;
};

class Lowercase final : public Normalizer {
 public:
  std::string normalize(std::string_view s) const override { return unicode::to_lower(s); }
};

class Replace final : public Normalizer {
 public:
  Replace(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  std::string normalize(std::string_view s) const override {
    std::vector<Span> spans;
    pattern_.find_matches(s, spans);
    std::string out;
    out.reserve(s.size());
    for (const Span& sp : spans) {
      if (sp.is_match) {
        out += content_;
      } else {
        out.append(s.substr(sp.start, sp.end - sp.start));
      }
    }
    return out;
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string p) : prepend_(std::move(p)) {}
  std::string normalize(std::string_view s) const override {
    if (s.empty()) return {};
    std::string out = prepend_;
    out.append(s);
    return out;
  }

 private:
  std::string prepend_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string_view s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t p = b;
        if (!unicode::is_whitespace(unicode::decode_utf8(s, p))) break;
        b = p;
      }
    }
    if (right_) {
      while (e > b) {
        size_t k = e - 1;
        while (k > b && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
        size_t p = k;
        if (!unicode::is_whitespace(unicode::decode_utf8(s, p))) break;
        e = k;
      }
    }
    return std::string(s.substr(b, e - b));
  }

 private:
  bool left_, right_;
};

// Drops marks: StripAccents removes every General_Category=Mark character, BertNormalizer only Mn.
std::string strip_marks(std::string_view s, bool (*is_mark)(char32_t)) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    const char32_t c = unicode::decode_utf8(s, pos);
    if (!is_mark(c)) unicode::append_utf8(out, c);
  }
  return out;
}

class StripAccents final : public Normalizer {
 public:
  std::string normalize(std::string_view s) const override { return strip_marks(s, unicode::is_mark); }
};

class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, bool strip, bool lower)
      : clean_(clean), chinese_(chinese), strip_(strip), lower_(lower) {}
  std::string normalize(std::string_view s) const override {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    while (pos < s.size()) {
      const char32_t c = unicode::decode_utf8(s, pos);
      if (clean_) {
        if (c == 0 || c == 0xFFFD || unicode::is_control(c)) continue;
        if (unicode::is_whitespace(c)) {
          out.push_back(' ');
          continue;
        }
      }
      if (chinese_ && unicode::is_cjk(c)) {
        out.push_back(' ');
        unicode::append_utf8(out, c);
        out.push_back(' ');
        continue;
      }
      unicode::append_utf8(out, c);
    }
    if (strip_) out = strip_marks(unicode::normalize(out, unicode::NormForm::kNFD), unicode::is_nonspacing_mark);
    if (lower_) out = unicode::to_lower(out);
    return out;
  }

 private:
  bool clean_, chinese_, strip_, lower_;
};

class SequenceNorm final : public Normalizer {
 public:
  explicit SequenceNorm(std::vector<std::unique_ptr<Normalizer>> v) : steps_(std::move(v)) {}
  std::string normalize(std::string_view s) const override {
    std::string cur(s);
    for (const auto& n : steps_) cur = n->normalize(cur);
    return cur;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

// {"String": s} or {"Regex": r}; shared by Replace (normalizer and decoder) and Split.
Pattern make_pattern(JsonElement e, const JsonPath& at) {
  if (auto s = json_member(e, "String")) return Pattern::literal(std::string(json_as_string(*s, at.child("String"))));
  if (auto r = json_member(e, "Regex")) {
    const JsonPath rat = at.child("Regex");
    return Pattern::regex(std::string(json_as_string(*r, rat)), *rat.file + ": " + rat.path);
  }
  json_fail(at, "expected {\"String\": ...} or {\"Regex\": ...}");
}

std::unique_ptr<Normalizer> make_normalizer(JsonElement e, const JsonPath& at) {
  const std::string type = json_type_of(e, at);
  if (type == "NFC") return std::make_unique<UnicodeNorm>(unicode::NormForm::kNFC);
  if (type == "NFD") return std::make_unique<UnicodeNorm>(unicode::NormForm::kNFD);
  if (type == "NFKC") return std::make_unique<UnicodeNorm>(unicode::NormForm::kNFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNorm>(unicode::NormForm::kNFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Replace") {
    return std::make_unique<Replace>(make_pattern(json_require(e, "pattern", at), at.child("pattern")),
                                     std::string(json_as_string(json_require(e, "content", at), at.child("content"))));
  }
  if (type == "Prepend") {
    return std::make_unique<Prepend>(std::string(json_as_string(json_require(e, "prepend", at), at.child("prepend"))));
  }
  if (type == "Strip") {
    return std::make_unique<Strip>(json_bool_or(e, "strip_left", at, true), json_bool_or(e, "strip_right", at, true));
  }
  if (type == "BertNormalizer") {
    const bool lower = json_bool_or(e, "lowercase", at, true);
    const bool strip = json_member(e, "strip_accents") ? json_bool_or(e, "strip_accents", at, lower) : lower;
    return std::make_unique<BertNormalizer>(json_bool_or(e, "clean_text", at, true),
                                            json_bool_or(e, "handle_chinese_chars", at, true), strip, lower);
  }
  if (type == "Sequence") {
    const JsonPath nat = at.child("normalizers");
    simdjson::dom::array arr;
    if (json_require(e, "normalizers", at).get_array().get(arr)) json_fail(nat, "expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    size_t i = 0;
    for (JsonElement x : arr) steps.push_back(make_normalizer(x, nat.index(i++)));
    return std::make_unique<SequenceNorm>(std::move(steps));
  }
  json_fail(at.child("type"), fmt::format("unsupported normalizer \"{}\"", type));
}

}  // namespace vlm::tok
