// The bundled demo VLM (assets/demo/vlm, docs/DEMO_MODEL.md) through the real CLI:
//   - assets/demo/vlm-4bit is exactly what `vlmcheck convert --bits 4 --group-size 64` writes today;
//   - on the six held-out sample scenes, with the demo's two prompts (triage and check_models' blind prompt),
//     vlmcheck's greedy tokens for the bf16 model equal transformers 5.17's (assets/demo/scenes/
//     transformers_outputs.json). Comparable: transformers ran f32 upcast from the same bf16 weights, so both
//     engines multiply the same weight values; activations differ only by f32 rounding order;
//   - meaning: each answer names the truth's shape/colour pairs and background, scored by the project's own
//     scorer (/usr/bin/python3 tools/eval_demo_vlm.py --score), for the bf16 and the 4-bit model;
//   - `vlmcheck run` with an empty Hugging Face cache runs both demo models on a sample scene.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include "core/json.h"
#include "support/test_support.h"
#include "test_cli_run_support.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

std::string demo(const std::string& rel) { return test::source_dir() + "/assets/demo/" + rel; }

const Json& oracle() {
  static const Json j = read_json_file(demo("scenes/transformers_outputs.json"));
  return j;
}

// The user text of a style's prompt: transformers' prompt_text is the ChatML rendering of [image, text].
std::string user_text(const std::string& style) {
  const std::string p = oracle()["prompts"][style]["prompt_text"].get<std::string>();
  const std::string open = "<|im_start|>user\n<image>", close = "<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(p.rfind(open, 0), 0u) << p;
  return p.substr(open.size(), p.size() - open.size() - close.size());
}

struct Answer {
  std::string prompt;  // rendered, image placeholder runs collapsed to one <image>
  std::vector<int32_t> tokens;  // through <|im_end|> when the model stopped
  std::string text;
  std::string finish_reason;
};

// One generate run per (model, scene, style), cached across tests.
const Answer& answer(const std::string& model, const std::string& image, const std::string& style) {
  static std::map<std::string, Answer> cache;
  const std::string key = model + "|" + image + "|" + style;
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const int max_tokens = oracle()["prompts"][style]["max_new_tokens"].get<int>();
  auto r = test::run_vlmcheck({"generate", "--model", demo(model), "--image", demo("scenes/" + image), "--prompt",
                               user_text(style), "--max-tokens", std::to_string(max_tokens), "--json"});
  Answer a;
  EXPECT_EQ(r.exit_code, 0) << key << ": " << r.err;
  if (r.exit_code == 0) {
    Json j = Json::parse(r.out);
    a.prompt = std::regex_replace(j["prompt"].get<std::string>(), std::regex("(<image>)+"), "<image>");
    a.tokens = j["tokens"].get<std::vector<int32_t>>();
    a.finish_reason = j["finish_reason"].get<std::string>();
    if (a.finish_reason == "stop") a.tokens.push_back(2);  // <|im_end|>, which transformers' ids include
    a.text = j["text"].get<std::string>();
  }
  return cache.emplace(key, a).first->second;
}

std::string run_capture(const std::string& cmd) {
  std::string out;
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// tools/eval_demo_vlm.py's scores of one answer against its scene's truth.
Json score(const std::string& text, const Json& truth, const test::TempDir& tmp) {
  const std::string f = tmp / "score.json";
  test::write_file(f, Json{{"outputs", Json::array({Json{{"text", text}, {"truth", truth}}})}}.dump());
  const std::string out = run_capture("/usr/bin/python3 " + test::source_dir() + "/tools/eval_demo_vlm.py --score " +
                                      f + " 2>&1");
  Json j = Json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << out;
  return j.is_discarded() ? Json() : j["model"];
}

TEST(DemoModel, FourBitFolderIsWhatConvertWritesToday) {
  test::TempDir tmp;
  const std::string out = tmp / "vlm-4bit";
  auto r = test::run_vlmcheck(
      {"convert", "--model", demo("vlm"), "--out", out, "--bits", "4", "--group-size", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> want, got;
  for (const auto& e : fs::directory_iterator(demo("vlm-4bit"))) want.push_back(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(out)) got.push_back(e.path().filename().string());
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  ASSERT_EQ(got, want);
  for (const std::string& f : want)
    EXPECT_TRUE(test::read_file(out + "/" + f) == test::read_file(demo("vlm-4bit/" + f))) << f << " differs";
}

TEST(DemoModel, Bf16GreedyTokensEqualTransformers) {
  int compared = 0;
  for (const Json& scene : oracle()["scenes"]) {
    for (const std::string style : {"triage", "blind"}) {
      const Answer& a = answer("vlm", scene["image"].get<std::string>(), style);
      EXPECT_EQ(a.prompt, oracle()["prompts"][style]["prompt_text"].get<std::string>()) << scene["image"];
      const auto want = scene["output_ids"][style].get<std::vector<int32_t>>();
      EXPECT_EQ(a.tokens, want) << scene["image"] << " " << style << ": vlmcheck said \"" << a.text
                                << "\", transformers \"" << scene["outputs"][style].get<std::string>() << "\"";
      EXPECT_EQ(a.text, scene["outputs"][style].get<std::string>()) << scene["image"] << " " << style;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 12);
}

// Every answer of `model` scored against the scene's truth; `min_exact` answers (of 12) must be exactly
// right and each must name most of the truth.
void expect_answers_mean_the_scenes(const std::string& model, int min_exact) {
  test::TempDir tmp;
  int exact = 0, answers = 0;
  double pair_f1 = 0, background = 0;
  for (const Json& scene : oracle()["scenes"]) {
    const Json truth = read_json_file(demo("scenes/" + scene["truth"].get<std::string>()));
    for (const std::string style : {"triage", "blind"}) {
      const Answer& a = answer(model, scene["image"].get<std::string>(), style);
      Json s = score(a.text, truth, tmp);
      ASSERT_TRUE(s.is_object());
      std::printf("[demo] %-8s %s %-6s pair_f1 %.2f colour_f1 %.2f shape_f1 %.2f background %.0f | %s\n",
                  model.c_str(), scene["image"].get<std::string>().c_str(), style.c_str(), s["pair_f1"].get<double>(),
                  s["colour_f1"].get<double>(), s["shape_f1"].get<double>(), s["background"].get<double>(),
                  a.text.substr(0, a.text.find('\n')).c_str());
      EXPECT_GE(s["shape_f1"].get<double>(), 0.5) << model << " " << scene["image"] << " " << style << ": " << a.text;
      EXPECT_GE(s["colour_f1"].get<double>(), 0.5) << model << " " << scene["image"] << " " << style << ": " << a.text;
      exact += s["exact"].get<double>() == 1.0;
      pair_f1 += s["pair_f1"].get<double>();
      background += s["background"].get<double>();
      ++answers;
    }
  }
  std::printf("[demo] %s: %d/%d exact, mean pair F1 %.3f, background %.3f\n", model.c_str(), exact, answers,
              pair_f1 / answers, background / answers);
  EXPECT_EQ(answers, 12);
  EXPECT_GE(exact, min_exact) << model;
  // Chance (answers about unrelated scenes) is pair F1 0.03, background 0.14 (docs/DEMO_MODEL.md).
  EXPECT_GE(pair_f1 / answers, 0.8) << model;
  EXPECT_GE(background / answers, 0.8) << model;
}

TEST(DemoModel, Bf16AnswersNameTheScenesShapesAndColours) {
  // transformers' 12 answers are all exact; with identical tokens so are vlmcheck's.
  expect_answers_mean_the_scenes("vlm", 12);
}

TEST(DemoModel, FourBitAnswersNameTheScenesShapesAndColours) {
  // 4-bit g64 may flip a word; most answers must still be exact.
  expect_answers_mean_the_scenes("vlm-4bit", 9);
}

// The README's main command on a fresh machine: no images folder and an empty Hugging Face cache. Both demo
// models run on the sample scene, every result row succeeds, and the answers name the scene's shapes.
TEST(DemoModel, OutOfTheBoxRunUsesBothDemoModelsOnASampleScene) {
  test::TempDir dir;
  fs::create_directories(dir / "home");
  fs::create_directories(dir / "hf-home");
  auto r = test::run_vlmcheck({"run", "--no-color"},
                              {"HOME=" + (dir / "home"), "HF_HOME=" + (dir / "hf-home"), "HF_HUB_CACHE=", "HUGGINGFACE_HUB_CACHE=",
                               "XDG_CACHE_HOME=" + (dir / "home/.cache")},
                              dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const Json truth = read_json_file(demo("scenes/scene_00.json"));
  std::vector<Json> lines;
  {
    std::istringstream in(test::read_file(dir / "output/results.jsonl"));
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) lines.push_back(Json::parse(line));
  }
  ASSERT_FALSE(lines.empty());
  // docs/results.schema.json (Ajv) and the cross-line rules of docs/results_schema.md.
  test::expect_valid_results(dir / "output/results.jsonl");
  EXPECT_EQ(lines[0]["image"]["name"], "scene_00.png");
  std::vector<std::string> models;
  for (const Json& l : lines) {
    if (l.value("_type", "") != "result") continue;
    const std::string model = l["model"].get<std::string>();
    models.push_back(fs::path(model).filename().string());
    EXPECT_EQ(l["assessment"]["execution"], "completed") << model << ": " << l["failure"].dump();
    EXPECT_EQ(l["assessment"]["usability"], "usable") << model << ": " << l["assessment"].dump();
    const std::string text = l["generated_text"].get<std::string>();
    for (const Json& shape : truth["shapes"]) {
      EXPECT_NE(text.find(shape["shape"].get<std::string>()), std::string::npos) << model << ": " << text;
      // colours may open a sentence ("Black Diamond" in the blind title, "A black diamond" in triage)
      std::string low = text;
      std::transform(low.begin(), low.end(), low.begin(), [](unsigned char c) { return std::tolower(c); });
      EXPECT_NE(low.find(shape["colour"].get<std::string>()), std::string::npos) << model << ": " << text;
    }
  }
  std::sort(models.begin(), models.end());
  EXPECT_EQ(models, (std::vector<std::string>{"vlm", "vlm-4bit"}));
  // The report a user opens (the gallery of answers) and results.html name the shapes too, and so does the
  // console's per-model replay (check_models §5.1: the generated text after each SUMMARY line).
  const std::string gallery = test::read_file(dir / "output/reports/model_gallery.md");
  const std::string html = test::read_file(dir / "output/reports/results.html");
  for (const Json& shape : truth["shapes"]) {
    const std::string name = shape["shape"].get<std::string>();
    EXPECT_NE(gallery.find(name), std::string::npos) << gallery;
    EXPECT_NE(html.find(name), std::string::npos) << "results.html lacks " << name;
    EXPECT_NE(r.out.find(" " + shape["colour"].get<std::string>() + " " + name), std::string::npos) << r.out;
  }
  EXPECT_NE(r.out.find("Tokens: "), std::string::npos) << r.out;
}

}  // namespace
}  // namespace vlm
