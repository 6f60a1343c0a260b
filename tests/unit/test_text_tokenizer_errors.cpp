// Tokenizer loading errors (typed vlm::Error naming the file and JSON field), input validation, and
// transformers' tokenizer_config.json rule for add_bos_token / add_eos_token, whose expected ids come
// from HF tokenizers running the post-processor transformers builds ("[bos] $A [eos]").
#include <gtest/gtest.h>

#include "core/error.h"
#include "test_text_tokenizer_oracle.h"
#include "text/tokenizer.h"

namespace vlm::test {
namespace {

const char* kMinimal = R"({
  "version": "1.0", "added_tokens": [{"id": 0, "content": "<s>", "special": true, "normalized": false,
                                      "lstrip": false, "rstrip": false, "single_word": false}],
  "normalizer": null, "pre_tokenizer": PRE, "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3}, "merges": MERGES}
})";

std::string minimal(const std::string& pre, const std::string& merges = R"(["a b"])") {
  std::string s = kMinimal;
  s.replace(s.find("PRE"), 3, pre);
  s.replace(s.find("MERGES"), 6, merges);
  return s;
}

// Loads `json` from a temp file and returns the error (or fails the test if none is thrown).
Error load_error(const std::string& json, std::string* path_out = nullptr) {
  TempDir tmp;
  const std::string path = tmp / "tokenizer.json";
  write_file(path, json);
  if (path_out) *path_out = path;
  try {
    Tokenizer::from_files(path);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << json;
  return Error(ErrorKind::kInternal, "");
}

TEST(TokenizerErrors, MinimalFileLoadsAndEncodes) {
  TempDir tmp;
  write_file(tmp / "tokenizer.json", minimal("null"));
  auto tok = Tokenizer::from_files(tmp / "tokenizer.json");
  EXPECT_EQ(tok->encode("ab<s>ba", true), (std::vector<int32_t>{3, 0, 2, 1}));
}

// A BPE model without "merges" has no merges (found by fuzz_tokenizer: sizing the absent array was
// undefined behaviour): "ab" stays two tokens, where the same vocab with the merge "a b" gives one.
TEST(TokenizerErrors, BpeWithoutMergesLoadsAndNeverMerges) {
  std::string json = minimal("null");
  const std::string merges_field = R"(, "merges": ["a b"])";
  const size_t at = json.find(merges_field);
  ASSERT_NE(at, std::string::npos);
  json.erase(at, merges_field.size());
  auto tok = Tokenizer::from_json_text(json, "inline");
  EXPECT_EQ(tok->encode("ab<s>ba", true), (std::vector<int32_t>{1, 2, 0, 2, 1}));
}

TEST(TokenizerErrors, RegexThatDoesNotCompileNamesFileAndField) {
  std::string path;
  const Error e = load_error(minimal(R"({"type": "Split", "pattern": {"Regex": "(unclosed[a-"}, "behavior": "Isolated", "invert": false})"), &path);
  EXPECT_EQ(e.kind(), ErrorKind::kFormat);
  EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("pre_tokenizer.pattern.Regex"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("does not compile"), std::string::npos) << e.what();
}

TEST(TokenizerErrors, MalformedJsonAndFields) {
  struct BadCase {
    std::string json, expect;
  };
  const std::vector<BadCase> cases = {
      {"{\"model\": {\"type\": \"BPE\", \"vocab\": {", "not valid JSON"},
      {"[1, 2]", "expected a JSON object"},
      {R"({"added_tokens": []})", "model: required field is missing"},
      {minimal(R"({"type": "NoSuchPreTokenizer"})"), "pre_tokenizer.type: unsupported pre_tokenizer \"NoSuchPreTokenizer\""},
      {minimal(R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways", "invert": false})"), "unknown split behavior"},
      {minimal("null", R"(["a c"])"), "model.merges[0]: merge token \"c\" is not in the vocabulary"},
      {minimal("null", R"(["b a"])"), "merged token \"ba\" is not in the vocabulary"},
      {minimal("null", R"(["a b c"])"), "is not two tokens separated by one space"},
      {minimal("null", R"([7])"), "expected \"a b\" or [\"a\", \"b\"]"},
      {minimal(R"({"type": "Metaspace", "replacement": "ab"})"), "expected exactly one character"},
      {R"({"model": {"type": "BPE", "vocab": {"a": -3}, "merges": []}})", "model.vocab.a"},
      {R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 5}})", "unk_id 5 is outside the vocabulary"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}})", "dropout is not supported"},
      {R"({"model": {"type": "WordLevel", "vocab": {"a": 0}}})", "unsupported model type \"WordLevel\""},
  };
  for (const BadCase& c : cases) {
    const Error e = load_error(c.json);
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << "message: " << e.what() << "\nexpected: " << c.expect;
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
  }
}

// Every truncation of a real tokenizer.json (a fixture written by transformers) is a format error that names
// the file: the parse never half-succeeds, crashes or throws anything but vlm::Error.
TEST(TokenizerErrors, EveryTruncationOfARealFileIsAFormatError) {
  const std::string path = source_dir() + "/tests/fixtures/text/qwen2/tokenizer.json";
  const std::string src = read_file(path);
  ASSERT_GT(src.size(), 1000u);
  ASSERT_NO_THROW(Tokenizer::from_json_text(src, "qwen2/tokenizer.json"));
  const size_t end = src.find_last_not_of(" \t\r\n") + 1;  // trailing whitespace may go
  size_t checked = 0;
  for (size_t cut = 0; cut < end; ++cut) {
    try {
      Tokenizer::from_json_text(std::string_view(src).substr(0, cut), "qwen2/tokenizer.json");
      ADD_FAILURE() << "a file cut at byte " << cut << " of " << src.size() << " loaded";
    } catch (const Error& e) {
      ++checked;
      if (e.kind() != ErrorKind::kFormat || std::string(e.what()).find("qwen2/tokenizer.json: not valid JSON") != 0) {
        ADD_FAILURE() << "cut at " << cut << ": " << e.what();
      }
    }
  }
  EXPECT_EQ(checked, end);
  // The same through the file loader: the message names the path on disk.
  TempDir tmp;
  write_file(tmp / "tokenizer.json", src.substr(0, src.size() / 2));
  const Error e = load_error(src.substr(0, src.size() / 2));
  EXPECT_NE(std::string(e.what()).find("/tokenizer.json: not valid JSON"), std::string::npos) << e.what();
}

// Fields of the wrong JSON type, or values out of range, anywhere in the file: Error(kFormat) naming the file
// and the field's path.
TEST(TokenizerErrors, WrongTypesNameTheField) {
  const std::string bpe = R"("model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3}, "merges": ["a b"]})";
  auto file = [&](const std::string& fields) { return "{" + fields + ", " + bpe + "}"; };
  struct BadCase {
    std::string json, expect;
  };
  const std::vector<BadCase> cases = {
      {R"({"model": []})", "model: expected an object with a \"type\""},
      {R"({"model": "BPE"})", "model: expected an object with a \"type\""},
      {R"({"model": {"vocab": {"a": 0}}})", "model: no \"type\""},
      {R"({"model": {"type": 7, "vocab": {}}})", "model.type: expected a string"},
      {R"({"model": {"type": "BPE", "vocab": ["a", "b"], "merges": []}})", "model.vocab: expected an object"},
      {R"({"model": {"type": "BPE", "vocab": {"a": "0"}, "merges": []}})", "model.vocab.a: expected a token id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 1.5}, "merges": []}})", "model.vocab.a: expected a token id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 4294967296}, "merges": []}})", "model.vocab.a: expected a token id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": {"a": "b"}}})", "model.merges: expected an array"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": "yes"}})", "model.byte_fallback: expected true or false"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": 0}})", "model.unk_token: expected a string"},
      {R"({"model": {"type": "Unigram", "vocab": {"a": 0.0}}})", "model.vocab"},
      {R"({"model": {"type": "Unigram", "vocab": [["a", "high"]]}})", "model.vocab[0]"},
      {R"({"model": {"type": "Unigram", "vocab": [["a"]]}})", "model.vocab[0]"},
      {R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": "1"}}})", "model.vocab.a: expected an integer"},
      {R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})", "model.unk_token: \"[UNK]\" is not in the vocabulary"},
      {R"({"model": {"type": "SentencePiece", "vocab": {"a": 0}}})", "model.type: unsupported model type \"SentencePiece\""},
      {file(R"("added_tokens": {"id": 0})"), "added_tokens: expected an array"},
      {file(R"("added_tokens": [{"content": "<s>"}])"), "added_tokens[0].id: required field is missing"},
      {file(R"("added_tokens": [{"id": "0", "content": "<s>"}])"), "added_tokens[0].id: expected an integer"},
      {file(R"("added_tokens": [{"id": -1, "content": "<s>"}])"), "added_tokens[0].id: id -1 is out of range"},
      {file(R"("added_tokens": [{"id": 0, "content": 5}])"), "added_tokens[0].content: expected a string"},
      {file(R"("added_tokens": [{"id": 0, "content": "<s>", "special": "true"}])"), "added_tokens[0].special: expected true or false"},
      {file(R"("normalizer": "NFC")"), "normalizer: expected an object with a \"type\""},
      {file(R"("decoder": [{"type": "Fuse"}])"), "decoder: expected an object with a \"type\""},
      {file(R"("normalizer": {"type": "Sequence", "normalizers": {"type": "NFC"}})"), "normalizer.normalizers: expected an array"},
      {file(R"("normalizer": {"type": "Sequence", "normalizers": [{"type": "NFX"}]})"), "normalizer.normalizers[0].type: unsupported normalizer \"NFX\""},
      {file(R"("normalizer": {"type": "Replace", "pattern": "a", "content": "b"})"), "normalizer.pattern: expected {\"String\": ...} or {\"Regex\": ...}"},
      {file(R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": 1}]})"), "pre_tokenizer.pretokenizers[0].individual_digits: expected true or false"},
      {file(R"("pre_tokenizer": {"type": "Metaspace", "replacement": "_", "prepend_scheme": "sometimes"})"), "pre_tokenizer.prepend_scheme: expected always, first or never"},
      {file(R"("post_processor": {"type": "TemplateProcessing", "single": "$A", "special_tokens": {}})"), "post_processor.single: expected an array"},
      {file(R"("post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}})"), "special token that special_tokens does not define"},
      {file(R"("post_processor": {"type": "RobertaProcessing", "sep": ["</s>"], "cls": ["<s>", 0]})"), "post_processor.sep: expected [token, id]"},
      {file(R"("post_processor": {"type": "Bert"})"), "post_processor.type: unsupported post_processor \"Bert\""},
      {file(R"("decoder": {"type": "Strip", "content": " ", "start": -1, "stop": 0})"), "decoder: start and stop must be non-negative"},
      {file(R"("decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": 3}]})"), "decoder.decoders[1].type: expected a string"},
      {file(R"("decoder": {"type": "Replace", "pattern": {"Regex": "(?<"}, "content": ""})"), "decoder.pattern.Regex: regex \"(?<\" does not compile"},
      {file(R"("normalizer": {"type": "Replace", "pattern": {"Regex": "[z-a]"}, "content": ""})"), "normalizer.pattern.Regex: regex \"[z-a]\" does not compile"},
  };
  for (const BadCase& c : cases) {
    const Error e = load_error(c.json);
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
    EXPECT_NE(std::string(e.what()).find("/tokenizer.json: "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << "message: " << e.what() << "\nexpected: " << c.expect;
  }
}

// Ids need not be dense: HF keeps its vocabulary in hash maps, so gaps and ids far beyond the vocabulary size load
// and round-trip there. Ours must match it (found by fuzz_tokenizer: an id near 2^31 made us allocate an array of
// that size). Expected ids and texts come from HF tokenizers.
TEST(TokenizerIds, SparseIdsMatchHuggingFace) {
  ASSERT_FALSE(oracle_dir().empty());
  const std::string bpe = R"({"added_tokens": [{"id": 2100000000, "content": "<big>", "special": true, "normalized": false,
      "lstrip": false, "rstrip": false, "single_word": false}],
    "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"<unk>": 0, "a": 7, "b": 1000000, "ab": 2000000000, "c": 12},
              "merges": ["a b"]}})";
  const std::string wordpiece = R"({"added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
    "post_processor": null, "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
              "max_input_chars_per_word": 100, "vocab": {"[UNK]": 3, "ab": 9, "##c": 40, "c": 1999999999}}})";
  const std::vector<std::string> texts = {"ab", "a b c", "abab <big> cab", "abc", "ccc ab", "x", ""};
  const std::vector<std::vector<int32_t>> ids = {
      {7, 1000000, 2000000000, 12, 2100000000}, {0, 1, 2, 8, 999999, 2000000001}, {9, 40, 1999999999, 3, 4, 40}, {}};
  for (const std::string& json : {bpe, wordpiece}) {
    TempDir tmp;
    write_file(tmp / "tokenizer.json", json);
    auto tok = Tokenizer::from_files(tmp / "tokenizer.json");
    const Json res = run_oracle(tmp / "tokenizer.json", texts, ids, tmp);
    ASSERT_TRUE(res.is_object());
    EXPECT_EQ(tok->vocab_size(), res["vocab_size"].get<int64_t>());
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(tok->encode(texts[i], false), res["ids"][i].get<std::vector<int32_t>>()) << texts[i];
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(tok->decode(ids[i], false), res["decoded"][i].get<std::string>()) << i;
      EXPECT_EQ(tok->decode(ids[i], true), res["decoded_skip"][i].get<std::string>()) << i;
    }
  }
}

TEST(TokenizerErrors, MissingFilesAndBadInput) {
  TempDir tmp;
  try {
    Tokenizer::from_folder(tmp.path());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find(tmp.path()), std::string::npos);
  }
  EXPECT_THROW(Tokenizer::from_files(tmp / "nope.json"), Error);
  write_file(tmp / "tokenizer.json", minimal("null"));
  auto tok = Tokenizer::from_files(tmp / "tokenizer.json");
  try {
    tok->encode("ab\xC3(", false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("byte offset 2"), std::string::npos) << e.what();
  }
  // Unknown ids decode to nothing, as in HF; id_to_token is empty out of range.
  EXPECT_EQ(tok->decode({1, 999, -4, 2}, false), "a b");
  EXPECT_EQ(tok->id_to_token(999), "");
  EXPECT_EQ(tok->token_to_id("ab"), 3);
  EXPECT_FALSE(tok->token_to_id("zz").has_value());
}

// transformers 5 (TokenizersBackend.update_post_processor): when tokenizer_config.json sets
// add_bos_token or add_eos_token, or tokenizer.json has no post_processor, the post-processor
// becomes TemplateProcessing "[bos:0] $A:0 [eos:0]" with the flags that are true.
TEST(TokenizerConfig, AddBosEosFollowsTransformers) {
  ASSERT_FALSE(oracle_dir().empty());
  const std::string llama2 = lenml_model_dir("llama2") + "/tokenizer.json";
  const Json base = parse_json(read_file(llama2), llama2);
  auto tmpl = [](bool bos, bool eos) {
    Json single = Json::array();
    Json specials = Json::object();
    if (bos) {
      single.push_back({{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}});
      specials["<s>"] = {{"id", "<s>"}, {"ids", Json::array({1})}, {"tokens", Json::array({"<s>"})}};
    }
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (eos) {
      single.push_back({{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}});
      specials["</s>"] = {{"id", "</s>"}, {"ids", Json::array({2})}, {"tokens", Json::array({"</s>"})}};
    }
    return Json{{"type", "TemplateProcessing"}, {"single", single}, {"pair", single}, {"special_tokens", specials}};
  };
  struct ConfigCase {
    const char* name;
    Json post_processor;  // in tokenizer.json
    Json config;          // tokenizer_config.json
    Json oracle_post;     // what transformers runs
    std::optional<std::string> bos, eos;
  };
  const std::vector<ConfigCase> cases = {
      {"explicit_bos_eos", tmpl(true, false), {{"add_bos_token", true}, {"add_eos_token", true}, {"bos_token", "<s>"}, {"eos_token", "</s>"}}, tmpl(true, true), "<s>", "</s>"},
      {"explicit_false_drops_bos", tmpl(true, false), {{"add_bos_token", false}, {"bos_token", "<s>"}}, tmpl(false, false), "<s>", std::nullopt},
      {"no_keys_keeps_file", tmpl(true, false), {{"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}}, {"eos_token", "</s>"}}, tmpl(true, false), "<s>", "</s>"},
      {"no_post_processor_no_keys", nullptr, {{"bos_token", "<s>"}}, tmpl(false, false), "<s>", std::nullopt},
      {"eos_only", nullptr, {{"add_eos_token", true}, {"eos_token", "</s>"}}, tmpl(false, true), std::nullopt, "</s>"},
  };
  const std::vector<std::string> texts = {"Hello world", "", " <s> inside</s>", "数字 123"};
  for (const ConfigCase& c : cases) {
    TempDir tmp;
    Json ours = base;
    ours["post_processor"] = c.post_processor;
    write_file(tmp / "model/tokenizer.json", ours.dump());
    write_file(tmp / "model/tokenizer_config.json", c.config.dump());
    Json theirs = base;
    theirs["post_processor"] = c.oracle_post;
    write_file(tmp / "oracle.json", theirs.dump());
    const Json res = run_oracle(tmp / "oracle.json", texts, {}, tmp);
    ASSERT_TRUE(res.is_object());
    auto tok = Tokenizer::from_folder(tmp / "model");
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(tok->encode(texts[i], true), res["ids_special"][i].get<std::vector<int32_t>>()) << c.name << ": " << texts[i];
      EXPECT_EQ(tok->encode(texts[i], false), res["ids"][i].get<std::vector<int32_t>>()) << c.name << ": " << texts[i];
    }
    EXPECT_EQ(tok->bos_token(), c.bos) << c.name;
    EXPECT_EQ(tok->eos_token(), c.eos) << c.name;
  }
}

}  // namespace
}  // namespace vlm::test

namespace vlm::test {
namespace {

// Regression (found by fuzz_tokenizer): with Metaspace "first" + Strip after Fuse, a window starting
// at a "▁" context token decodes that token to nothing, so a window decode stripped the next space.
// decode() itself is checked against HF in test_text_tokenizer_components; here the stream must equal it.
TEST(StreamingDecoder, EqualsDecodeWhenStripFollowsFuse) {
  std::string vocab = "{\"<unk>\":0";
  for (int b = 0; b < 256; ++b) vocab += fmt::format(",\"<0x{:02X}>\":{}", b, b + 1);
  vocab += ",\"\\u2581\":257,\"a\":258}";
  const std::string json = R"({"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,
    "decoder":{"type":"Sequence","decoders":[{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first","split":true},
      {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
    "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,"vocab":)" + vocab + R"(,"merges":[]}})";
  auto tok = Tokenizer::from_json_text(json, "inline");
  const std::vector<std::vector<int32_t>> cases = {{246, 257, 257}, {257, 257, 258, 257}, {258, 257, 257, 257, 246, 257, 258}};
  for (const auto& ids : cases) {
    for (bool skip : {false, true}) {
      StreamingDecoder stream(*tok, skip);
      std::string text;
      for (int32_t id : ids) text += stream.push(id);
      text += stream.flush();
      EXPECT_EQ(text, tok->decode(ids, skip));
    }
  }
}

}  // namespace
}  // namespace vlm::test
