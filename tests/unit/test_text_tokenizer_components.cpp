// Every tokenizer component on small hand-built tokenizer.json files, each compared with Hugging
// Face's `tokenizers` on the same file: the expected ids and texts come from the oracle, never
// from this file. The base model is a small BPE over ASCII, GPT-2 byte characters and ▁, with byte
// fallback, so any text can be encoded; each case swaps in one normalizer / pre-tokenizer / model /
// post-processor / decoder / added-token configuration.
#include <gtest/gtest.h>

#include "test_text_tokenizer_oracle.h"
#include "text/tokenizer.h"
#include "text/tokenizer/stages.h"
#include "text/unicode.h"

namespace vlm::test {
namespace {

struct Case {
  std::string name;
  Json overrides;  // top-level tokenizer.json fields replacing the base ones
};

// Base vocabulary: specials, 256 byte tokens, byte-level characters, ASCII, ▁, a few merges.
Json base_bpe(const Json& extra_fields = Json::object()) {
  Json vocab = Json::object();
  int id = 0;
  auto add = [&](const std::string& t) {
    if (!vocab.contains(t)) vocab[t] = id++;
  };
  add("<unk>");
  add("<s>");
  add("</s>");
  for (int b = 0; b < 256; ++b) add(fmt::format("<0x{:02X}>", b));
  for (int b = 0; b < 256; ++b) add(unicode::to_utf8(tok::byte_to_char(static_cast<uint8_t>(b))));
  add("\u2581");  // ▁
  add("##");
  const std::vector<std::pair<std::string, std::string>> merges_list = {
      {"t", "h"}, {"th", "e"}, {"i", "n"}, {"e", "r"}, {"a", "n"}, {"an", "d"}, {"o", "n"}, {"\u2581", "t"},
      {"\u2581t", "he"}, {"\xC4\xA0", "t"}, {"\xC4\xA0t", "he"}, {"\xC4\xA0", "a"}, {"l", "l"}, {"e", "ll"},
      {"h", "ell"}, {"hell", "o"}, {"1", "2"}, {"12", "3"}, {"\u2581", "\u2581"}, {"\xC4\xA0", "\xC4\xA0"},
      {"w", "o"}, {"wo", "r"}, {"wor", "l"}, {"worl", "d"}, {"\xE4\xBD\xA0", "\xE5\xA5\xBD"}};
  Json merges = Json::array();
  for (auto& [a, b] : merges_list) {
    add(a);
    add(b);
    add(a + b);
    merges.push_back(a + " " + b);
  }
  Json m = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", true}, {"ignore_merges", false},
            {"vocab", vocab}, {"merges", merges}};
  for (auto& [k, v] : extra_fields.items()) m[k] = v;
  return m;
}

Json added(int id, const std::string& content, bool special, bool normalized = false, bool lstrip = false,
           bool rstrip = false, bool single_word = false) {
  return {{"id", id}, {"content", content}, {"single_word", single_word}, {"lstrip", lstrip}, {"rstrip", rstrip},
          {"normalized", normalized}, {"special", special}};
}

Json base_tokenizer() {
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", Json::array({added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)})},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", {{"type", "Sequence"},
                       {"decoders", Json::array({{{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}}},
          {"model", base_bpe()}};
}

Json split(const Json& pattern, const std::string& behavior, bool invert) {
  return {{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}};
}

const Json kByteLevelDecoder = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};

std::vector<Case> cases() {
  std::vector<Case> c;
  // ---- normalizers
  for (const char* n : {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents"}) {
    c.push_back({std::string("normalizer_") + n, {{"normalizer", {{"type", n}}}}});
  }
  c.push_back({"normalizer_replace_string", {{"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}});
  c.push_back({"normalizer_replace_regex", {{"normalizer", {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}}}}});
  c.push_back({"normalizer_prepend", {{"normalizer", {{"type", "Prepend"}, {"prepend", "\u2581"}}}}});
  c.push_back({"normalizer_strip_both", {{"normalizer", {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}}}});
  c.push_back({"normalizer_strip_left", {{"normalizer", {{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}}}});
  c.push_back({"normalizer_strip_right", {{"normalizer", {{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}}}}});
  c.push_back({"normalizer_bert", {{"normalizer", {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true}, {"strip_accents", nullptr}, {"lowercase", true}}}}});
  c.push_back({"normalizer_sequence", {{"normalizer", {{"type", "Sequence"}, {"normalizers", Json::array({{{"type", "NFKC"}}, {{"type", "Lowercase"}}, {{"type", "Prepend"}, {"prepend", "\u2581"}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}}}}});
  // ---- pre-tokenizers
  for (bool aps : {false, true}) {
    for (bool re : {false, true}) {
      c.push_back({fmt::format("byte_level_prefix{}_regex{}", int(aps), int(re)),
                   {{"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", aps}, {"trim_offsets", true}, {"use_regex", re}}},
                    {"decoder", kByteLevelDecoder}}});
    }
  }
  for (const char* b : {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"}) {
    for (bool inv : {false, true}) {
      c.push_back({fmt::format("split_regex_{}_invert{}", b, int(inv)),
                   {{"pre_tokenizer", split({{"Regex", "\\s+|[0-9]|'s"}}, b, inv)}}});
      c.push_back({fmt::format("split_string_{}_invert{}", b, int(inv)),
                   {{"pre_tokenizer", split({{"String", " "}}, b, inv)}}});
    }
  }
  c.push_back({"split_empty_matches", {{"pre_tokenizer", split({{"Regex", "x*"}}, "Isolated", false)}}});
  c.push_back({"split_lookahead", {{"pre_tokenizer", split({{"Regex", "\\s+(?!\\S)|\\s+|\\p{L}+|\\p{N}{1,3}"}}, "Isolated", false)}}});
  for (const char* scheme : {"always", "first", "never"}) {
    for (bool sp : {false, true}) {
      const Json ms = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme}, {"split", sp}};
      c.push_back({fmt::format("metaspace_{}_split{}", scheme, int(sp)),
                   {{"pre_tokenizer", ms},
                    {"decoder", {{"type", "Sequence"}, {"decoders", Json::array({ms, {{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}}}}});
    }
  }
  c.push_back({"metaspace_legacy_add_prefix_space", {{"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"add_prefix_space", true}}}}});
  c.push_back({"whitespace", {{"pre_tokenizer", {{"type", "Whitespace"}}}}});
  c.push_back({"whitespace_split", {{"pre_tokenizer", {{"type", "WhitespaceSplit"}}}}});
  c.push_back({"digits_individual", {{"pre_tokenizer", {{"type", "Digits"}, {"individual_digits", true}}}}});
  c.push_back({"digits_grouped", {{"pre_tokenizer", {{"type", "Digits"}, {"individual_digits", false}}}}});
  for (const char* b : {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"}) {
    c.push_back({std::string("punctuation_") + b, {{"pre_tokenizer", {{"type", "Punctuation"}, {"behavior", b}}}}});
  }
  c.push_back({"bert_pre_tokenizer", {{"pre_tokenizer", {{"type", "BertPreTokenizer"}}}}});
  c.push_back({"char_delimiter", {{"pre_tokenizer", {{"type", "CharDelimiterSplit"}, {"delimiter", "e"}}}}});
  c.push_back({"pre_sequence", {{"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", Json::array({{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}, {"individual_digits", true}}, {{"type", "Punctuation"}, {"behavior", "Isolated"}}})}}}}});
  // ---- models
  c.push_back({"bpe_no_byte_fallback_unk", {{"model", base_bpe({{"byte_fallback", false}})}}});
  c.push_back({"bpe_fuse_unk", {{"model", base_bpe({{"byte_fallback", false}, {"fuse_unk", true}})}}});
  c.push_back({"bpe_no_unk", {{"model", base_bpe({{"byte_fallback", false}, {"unk_token", nullptr}})}}});
  c.push_back({"bpe_ignore_merges", {{"model", base_bpe({{"ignore_merges", true}})}}});
  {
    Json m = base_bpe();
    Json list = Json::array();
    for (auto& s : m["merges"]) {
      const std::string t = s.get<std::string>();
      const size_t sp = t.find(' ');
      list.push_back(Json::array({t.substr(0, sp), t.substr(sp + 1)}));
    }
    m["merges"] = list;
    c.push_back({"bpe_merges_as_lists", {{"model", m}}});
  }
  {
    Json m = base_bpe({{"continuing_subword_prefix", "##"}, {"byte_fallback", false}});
    Json v = m["vocab"];
    int next = static_cast<int>(v.size());
    for (const char* t : {"##h", "##e", "##l", "##o", "##he", "##ll", "##llo"}) v[t] = next++;
    m["vocab"] = v;
    m["merges"] = Json::array({"h ##e", "##l ##l", "##ll ##o"});
    c.push_back({"bpe_continuing_subword_prefix", {{"model", m}, {"pre_tokenizer", {{"type", "WhitespaceSplit"}}}}});
  }
  {
    Json m = base_bpe({{"end_of_word_suffix", "</w>"}, {"byte_fallback", false}});
    Json v = m["vocab"];
    int next = static_cast<int>(v.size());
    for (const char* t : {"o</w>", "d</w>", "e</w>", "s</w>", "lo</w>"}) v[t] = next++;
    m["vocab"] = v;
    m["merges"] = Json::array({"l o</w>", "h e"});
    v["he"] = next++;
    m["vocab"] = v;
    c.push_back({"bpe_end_of_word_suffix",
                 {{"model", m}, {"pre_tokenizer", {{"type", "WhitespaceSplit"}}}, {"decoder", {{"type", "BPEDecoder"}, {"suffix", "</w>"}}}}});
  }
  {
    Json vocab = Json::array({Json::array({"<unk>", 0.0}), Json::array({"<s>", 0.0}), Json::array({"</s>", 0.0})});
    for (int b = 0; b < 256; ++b) vocab.push_back(Json::array({fmt::format("<0x{:02X}>", b), 0.0}));
    const std::vector<std::pair<std::string, double>> pieces = {
        {"\u2581", -2.0}, {"\u2581the", -3.0}, {"the", -4.0}, {"t", -5.0}, {"h", -5.1}, {"e", -4.5},
        {"he", -4.2}, {"\u2581t", -3.5}, {"a", -4.0}, {"an", -4.4}, {"and", -5.0}, {"\u2581a", -3.9},
        {"o", -4.1}, {"w", -5.2}, {"r", -5.3}, {"l", -5.0}, {"d", -5.0}, {"ld", -6.0}, {"wor", -6.5}, {"world", -7.0},
        {"1", -4.0}, {"2", -4.0}, {"12", -4.5}, {"\xE4\xBD\xA0", -6.0}, {"x", -5.0}, {"s", -4.8}, {"i", -4.6},
        {"n", -4.7}, {"in", -4.9}, {"g", -5.5}, {"ing", -5.2}};
    for (auto& [p, s] : pieces) vocab.push_back(Json::array({p, s}));
    const Json ms = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
    for (bool bf : {false, true}) {
      c.push_back({fmt::format("unigram_byte_fallback{}", int(bf)),
                   {{"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", vocab}, {"byte_fallback", bf}}},
                    {"pre_tokenizer", ms},
                    {"decoder", {{"type", "Sequence"}, {"decoders", Json::array({ms, {{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}}}}});
    }
  }
  {
    Json vocab = {{"[UNK]", 0}, {"[CLS]", 1}, {"[SEP]", 2}};
    int next = 3;
    for (const char* t : {"the", "quick", "brown", "fox", "##s", "##ing", "jump", "over", "lazy", "dog", ".", ",", "!", "?",
                          "'", "a", "b", "c", "##a", "##b", "##c", "hello", "world", "1", "2", "##1", "##2", "##3", "un",
                          "##believ", "##able", "n", "##t", "isn", "it", "s", "do", "not"}) {
      vocab[t] = next++;
    }
    c.push_back({"wordpiece_bert",
                 {{"added_tokens", Json::array({added(0, "[UNK]", true), added(1, "[CLS]", true), added(2, "[SEP]", true)})},
                  {"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"}, {"max_input_chars_per_word", 12}, {"vocab", vocab}}},
                  {"normalizer", {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true}, {"strip_accents", nullptr}, {"lowercase", true}}},
                  {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
                  {"post_processor", {{"type", "BertProcessing"}, {"sep", Json::array({"[SEP]", 2})}, {"cls", Json::array({"[CLS]", 1})}}},
                  {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}}}});
  }
  // ---- post-processors
  const Json tmpl = {{"type", "TemplateProcessing"},
                     {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
                     {"pair", Json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
                     {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", Json::array({1})}, {"tokens", Json::array({"<s>"})}}}, {"</s>", {{"id", "</s>"}, {"ids", Json::array({2})}, {"tokens", Json::array({"</s>"})}}}}}};
  c.push_back({"post_template", {{"post_processor", tmpl}}});
  c.push_back({"post_roberta", {{"post_processor", {{"type", "RobertaProcessing"}, {"sep", Json::array({"</s>", 2})}, {"cls", Json::array({"<s>", 1})}, {"trim_offsets", true}, {"add_prefix_space", true}}}}});
  c.push_back({"post_bytelevel", {{"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}}}});
  c.push_back({"post_sequence", {{"post_processor", {{"type", "Sequence"}, {"processors", Json::array({{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}, tmpl})}}}}});
  // ---- decoders (HF's Strip panics when start + stop cut past each other or stop > 0 meets an
  // empty token, so the cases below stay clear of that)
  c.push_back({"decoder_strip_replace", {{"normalizer", {{"type", "Sequence"}, {"normalizers", Json::array({{{"type", "Prepend"}, {"prepend", "\u2581"}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}}},
                                         {"decoder", {{"type", "Sequence"}, {"decoders", Json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}}, {{"type", "ByteFallback"}}, {{"type", "Strip"}, {"content", "e"}, {"start", 0}, {"stop", 1}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}, {{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 2}, {"stop", 0}}})}}}}});
  c.push_back({"decoder_replace_regex", {{"decoder", {{"type", "Replace"}, {"pattern", {{"Regex", "[aeiou]+"}}}, {"content", "_"}}}}});
  c.push_back({"no_decoder", {{"decoder", nullptr}}});
  // ---- added tokens
  {
    Json at = Json::array({added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)});
    const int base = static_cast<int>(base_bpe()["vocab"].size());
    at.push_back(added(base + 0, "<|special|>", true));
    at.push_back(added(base + 1, "[LS]", true, false, true, false));
    at.push_back(added(base + 2, "[RS]", true, false, false, true));
    at.push_back(added(base + 3, "[BOTH]", false, false, true, true));
    at.push_back(added(base + 4, "word", false, false, false, false, true));
    at.push_back(added(base + 5, "Norm", false, true));
    at.push_back(added(base + 6, "<|special|>x", true));
    at.push_back(added(base + 7, "\u2581sp", false, true));
    c.push_back({"added_tokens_plain", {{"added_tokens", at}}});
    {
      // HF ignores the ids written for added tokens (it numbers new ones from the model's size): gaps, a
      // reversed order and an id that belongs to a model token all load as HF numbers them.
      Json odd = at;
      for (size_t k = 3; k < odd.size(); ++k) odd[k]["id"] = base + 100 - static_cast<int>(k) * 7;
      odd[4]["id"] = 5;
      c.push_back({"added_tokens_file_ids_ignored", {{"added_tokens", odd}}});
    }
    c.push_back({"added_tokens_lowercase", {{"added_tokens", at}, {"normalizer", {{"type", "Lowercase"}}}}});
    c.push_back({"added_tokens_metaspace_first", {{"added_tokens", at}, {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}}}}});
    c.push_back({"added_tokens_prepend_normalizer", {{"added_tokens", at}, {"normalizer", {{"type", "Sequence"}, {"normalizers", Json::array({{{"type", "Prepend"}, {"prepend", "\u2581"}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}}}}});
    c.push_back({"added_tokens_byte_level", {{"added_tokens", at}, {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}}, {"decoder", kByteLevelDecoder}}});
  }
  return c;
}

std::vector<std::string> component_corpus() {
  std::vector<std::string> specials = {"<s>", "</s>", "<|special|>", "<|special|>x", "[LS]", "[RS]", "[BOTH]", "word", "Norm", "norm", "\u2581sp", " sp"};
  std::vector<std::string> c = make_corpus(specials, 120, 7);
  for (const char* s : {"the world", "hello world 123", "  [LS]x  [RS]  y", "a word here", "awordb", "word", "sword swords word_", "[BOTH]   [BOTH]",
                        "x  <|special|>x  <|special|>", "The Norm and the norm", "unbelievable isn't it", "THE QUICK BROWN FOX",
                        "xxx x xx", "ab1c2d33", "__init__", "a sp b", "hello,world!how?are.you"}) {
    c.emplace_back(s);
  }
  return c;
}

// JSON text of a value for failure messages; invalid UTF-8 shown as U+FFFD instead of throwing.
template <typename T>
std::string q(const T& v) {
  return Json(v).dump(-1, ' ', false, Json::error_handler_t::replace);
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Component : public ::testing::TestWithParam<Case> {};

TEST_P(Component, MatchesHuggingFaceTokenizers) {
  ASSERT_FALSE(oracle_dir().empty());
  const Case& cs = GetParam();
  Json t = base_tokenizer();
  for (auto& [k, v] : cs.overrides.items()) t[k] = v;
  TempDir tmp;
  const std::string path = tmp / "tokenizer.json";
  write_file(path, t.dump());
  auto tok = Tokenizer::from_files(path);

  const std::vector<std::string> corpus = component_corpus();
  std::vector<std::vector<int32_t>> decode_cases;
  for (const auto& s : corpus) decode_cases.push_back(tok->encode(s, true));
  std::vector<int32_t> byte_ids;
  for (int b = 0x80; b < 0x100; b += 7) byte_ids.push_back(3 + b);
  for (auto& ids : make_decode_cases(tok->vocab_size(), byte_ids, tok->special_ids(), 80, 5)) decode_cases.push_back(ids);

  const Json res = run_oracle(path, corpus, decode_cases, tmp);
  ASSERT_TRUE(res.is_object());
  EXPECT_EQ(tok->vocab_size(), res["vocab_size"].get<int64_t>());
  size_t bad = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const auto want = res["ids"][i].get<std::vector<int32_t>>();
    const auto want_sp = res["ids_special"][i].get<std::vector<int32_t>>();
    const auto got = tok->encode(corpus[i], false);
    const auto got_sp = tok->encode(corpus[i], true);
    if ((got != want || got_sp != want_sp) && ++bad <= 5) {
      ADD_FAILURE() << cs.name << ": encode " << q(corpus[i]) << "\n want " << q(want) << "\n got  "
                    << q(got) << "\n want+sp " << q(want_sp) << "\n got+sp  " << q(got_sp);
    }
  }
  for (size_t i = 0; i < decode_cases.size(); ++i) {
    for (bool skip : {false, true}) {
      const std::string want = res[skip ? "decoded_skip" : "decoded"][i].get<std::string>();
      const std::string got = tok->decode(decode_cases[i], skip);
      if (got != want && ++bad <= 10) {
        ADD_FAILURE() << cs.name << ": decode " << q(decode_cases[i]) << " skip=" << skip << "\n want "
                      << q(want) << "\n got  " << q(got);
      }
      StreamingDecoder stream(*tok, skip);
      std::string text;
      for (int32_t id : decode_cases[i]) text += stream.push(id);
      text += stream.flush();
      if (text != want && ++bad <= 10) {
        ADD_FAILURE() << cs.name << ": streaming " << q(decode_cases[i]) << "\n want " << q(want);
      }
    }
  }
  EXPECT_EQ(bad, 0u) << cs.name;
}

INSTANTIATE_TEST_SUITE_P(Hf, Component, ::testing::ValuesIn(cases()), [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace vlm::test
