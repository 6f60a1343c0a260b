// Post-processors (TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence) and
// decoders (ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, WordPiece, BPEDecoder,
// Sequence) of HF tokenizers. Post-processors only add ids (offsets are not tracked); decoders turn
// token strings back into text exactly as HF's decode_chain does.
#include <utility>

#include "text/tokenizer/regex.h"
#include "text/tokenizer/stages.h"
#include "text/unicode.h"

namespace vlm::tok {
namespace {

// ---- post-processors -----------------------------------------------------------------------------

class Surround final : public PostProcessor {
 public:
  Surround(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }

 private:
  std::vector<int32_t> prefix_, suffix_;
};

class NoOpProcessor final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> v) : steps_(std::move(v)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& s : steps_) s->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

int32_t id_of_pair(JsonElement obj, std::string_view key, const JsonPath& at) {
  // "cls": ["<s>", 0]
  const JsonPath kat = at.child(key);
  simdjson::dom::array arr;
  if (json_require(obj, key, at).get_array().get(arr) || arr.size() != 2) json_fail(kat, "expected [token, id]");
  const int64_t id = json_as_int(arr.at(1).value_unsafe(), kat.index(1));
  if (id < 0 || id > INT32_MAX) json_fail(kat.index(1), "id out of range");
  return static_cast<int32_t>(id);
}

std::unique_ptr<PostProcessor> make_template(JsonElement e, const JsonPath& at) {
  const JsonPath sat = at.child("single");
  simdjson::dom::array single;
  if (json_require(e, "single", at).get_array().get(single)) json_fail(sat, "expected an array of template pieces");
  std::vector<int32_t> prefix, suffix;
  bool seen_sequence = false;
  size_t i = 0;
  for (JsonElement piece : single) {
    const JsonPath pat = sat.index(i++);
    if (auto seq = json_member(piece, "Sequence")) {
      const std::string_view which = json_as_string(json_require(*seq, "id", pat.child("Sequence")),
                                                    pat.child("Sequence").child("id"));
      if (which != "A") json_fail(pat, fmt::format("single template refers to sequence \"{}\"", which));
      if (seen_sequence) json_fail(pat, "single template holds sequence A twice");
      seen_sequence = true;
      continue;
    }
    auto sp = json_member(piece, "SpecialToken");
    if (!sp) json_fail(pat, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    const std::string_view name = json_as_string(json_require(*sp, "id", pat.child("SpecialToken")),
                                                 pat.child("SpecialToken").child("id"));
    const JsonPath tat = at.child("special_tokens").child(name);
    auto specials = json_member(e, "special_tokens");
    auto tok = specials ? json_member(*specials, name) : std::nullopt;
    if (!tok) json_fail(tat, "template uses a special token that special_tokens does not define");
    simdjson::dom::array ids;
    if (json_require(*tok, "ids", tat).get_array().get(ids)) json_fail(tat.child("ids"), "expected an array of ids");
    size_t k = 0;
    for (JsonElement idv : ids) {
      const int64_t id = json_as_int(idv, tat.child("ids").index(k++));
      if (id < 0 || id > INT32_MAX) json_fail(tat.child("ids"), "id out of range");
      (seen_sequence ? suffix : prefix).push_back(static_cast<int32_t>(id));
    }
  }
  if (!seen_sequence) json_fail(sat, "single template lacks the sequence $A");
  return std::make_unique<Surround>(std::move(prefix), std::move(suffix));
}

// ---- decoders ------------------------------------------------------------------------------------

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      // A token with any character outside the byte table contributes its raw UTF-8 (HF).
      const size_t mark = bytes.size();
      bool ok = true;
      size_t pos = 0;
      while (pos < t.size()) {
        const int b = byte_from_char(unicode::decode_utf8(t, pos));
        if (b < 0) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, unicode::utf8_lossy(bytes));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string rep, bool strip_first) : rep_(std::move(rep)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      size_t pos = 0;
      while (pos < t.size()) {
        if (t.compare(pos, rep_.size(), rep_) == 0) {
          // HF drops every replacement character of the first token, not only a leading one.
          if (!(i == 0 && strip_first_)) out.push_back(' ');
          pos += rep_.size();
        } else {
          out.push_back(t[pos++]);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string rep_;
  bool strip_first_;
};

int parse_byte_token(const std::string& t) {
  // "<0xAB>"; Rust's u8::from_str_radix also accepts a leading '+'.
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (t[3] == '+') return hex(t[4]);
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    auto flush = [&] {
      if (bytes.empty()) return;
      if (unicode::is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
    };
    for (std::string& t : tokens) {
      const int b = parse_byte_token(t);
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, code point)
      size_t pos = 0;
      while (pos < t.size()) {
        const size_t b = pos;
        chars.emplace_back(b, unicode::decode_utf8(t, pos));
      }
      size_t start_cut = 0;
      for (size_t i = 0; i < start_ && i < chars.size(); ++i) {
        if (chars[i].second != c_) break;
        start_cut = i + 1;
      }
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < stop_ && i < chars.size(); ++i) {
        const size_t idx = chars.size() - i - 1;
        if (chars[idx].second != c_) break;
        stop_cut = idx;
      }
      if (stop_cut <= start_cut) {
        t.clear();
        continue;
      }
      const size_t b0 = start_cut < chars.size() ? chars[start_cut].first : t.size();
      const size_t b1 = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
      t = t.substr(b0, b1 - b0);
    }
  }

 private:
  char32_t c_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<Span> spans;
    for (std::string& t : tokens) {
      spans.clear();
      pattern_.find_matches(t, spans);
      std::string out;
      for (const Span& s : spans) {
        if (s.is_match) {
          out += content_;
        } else {
          out.append(t, s.start, s.end - s.start);
        }
      }
      t = std::move(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t f = s.find(from, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += to;
    pos = f + from.size();
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// HF decoders::wordpiece::cleanup (BERT's clean_up_tokenization).
void cleanup_tokenization(std::string& s) {
  replace_all(s, " .", ".");
  replace_all(s, " ?", "?");
  replace_all(s, " !", "!");
  replace_all(s, " ,", ",");
  replace_all(s, " ' ", "'");
  replace_all(s, " n't", "n't");
  replace_all(s, " 'm", "'m");
  replace_all(s, " do not", " don't");
  replace_all(s, " 's", "'s");
  replace_all(s, " 've", "'ve");
  replace_all(s, " 're", "'re");
}

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix_.size(), prefix_) == 0) {
          t.erase(0, prefix_.size());
        } else {
          t.insert(t.begin(), ' ');
        }
      }
      if (cleanup_) cleanup_tokenization(t);
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class BpeDecoder final : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> v) : steps_(std::move(v)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps_) s->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

char32_t one_char(std::string_view s, const JsonPath& at) {
  size_t pos = 0;
  const char32_t c = s.empty() ? 0 : unicode::decode_utf8(s, pos);
  if (s.empty() || pos != s.size()) json_fail(at, fmt::format("expected exactly one character, got \"{}\"", s));
  return c;
}

}  // namespace

std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<int32_t> prefix, std::vector<int32_t> suffix) {
  return std::make_unique<Surround>(std::move(prefix), std::move(suffix));
}

std::unique_ptr<PostProcessor> make_post_processor(JsonElement e, const JsonPath& at) {
  const std::string type = json_type_of(e, at);
  if (type == "TemplateProcessing") return make_template(e, at);
  if (type == "ByteLevel") return std::make_unique<NoOpProcessor>();  // offsets only
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    return std::make_unique<Surround>(std::vector<int32_t>{id_of_pair(e, "cls", at)},
                                      std::vector<int32_t>{id_of_pair(e, "sep", at)});
  }
  if (type == "Sequence") {
    const JsonPath pat = at.child("processors");
    simdjson::dom::array arr;
    if (json_require(e, "processors", at).get_array().get(arr)) json_fail(pat, "expected an array");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    size_t i = 0;
    for (JsonElement x : arr) steps.push_back(make_post_processor(x, pat.index(i++)));
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  json_fail(at.child("type"), fmt::format("unsupported post_processor \"{}\"", type));
}

std::unique_ptr<Decoder> make_decoder(JsonElement e, const JsonPath& at) {
  const std::string type = json_type_of(e, at);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Metaspace") {
    const std::string rep = json_string_or(e, "replacement", at, "\xE2\x96\x81");
    one_char(rep, at.child("replacement"));
    bool strip_first = true;
    if (auto ps = json_member(e, "prepend_scheme")) {
      strip_first = json_as_string(*ps, at.child("prepend_scheme")) != "never";
    } else if (auto ap = json_member(e, "add_prefix_space")) {
      strip_first = json_as_bool(*ap, at.child("add_prefix_space"));
    }
    return std::make_unique<MetaspaceDecoder>(rep, strip_first);
  }
  if (type == "Strip") {
    const char32_t c = one_char(json_as_string(json_require(e, "content", at), at.child("content")), at.child("content"));
    const int64_t start = json_int_or(e, "start", at, 0), stop = json_int_or(e, "stop", at, 0);
    if (start < 0 || stop < 0) json_fail(at, "start and stop must be non-negative");
    return std::make_unique<StripDecoder>(c, static_cast<size_t>(start), static_cast<size_t>(stop));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(make_pattern(json_require(e, "pattern", at), at.child("pattern")),
                                            std::string(json_as_string(json_require(e, "content", at), at.child("content"))));
  }
  if (type == "WordPiece") {
    return std::make_unique<WordPieceDecoder>(json_string_or(e, "prefix", at, "##"), json_bool_or(e, "cleanup", at, true));
  }
  if (type == "BPEDecoder") return std::make_unique<BpeDecoder>(json_string_or(e, "suffix", at, "</w>"));
  if (type == "Sequence") {
    const JsonPath dat = at.child("decoders");
    simdjson::dom::array arr;
    if (json_require(e, "decoders", at).get_array().get(arr)) json_fail(dat, "expected an array");
    std::vector<std::unique_ptr<Decoder>> steps;
    size_t i = 0;
    for (JsonElement x : arr) steps.push_back(make_decoder(x, dat.index(i++)));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  json_fail(at.child("type"), fmt::format("unsupported decoder \"{}\"", type));
}

}  // namespace vlm::tok
