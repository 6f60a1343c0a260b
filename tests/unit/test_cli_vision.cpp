// Images end to end through the built binary, against the vision parity fixtures written by transformers
// (tests/fixtures/vision/<name>/: a tiny random-weight VLM as save_pretrained wrote it, plus reference.json
// with each case's messages, input ids after placeholder expansion, image tokens per image and 24 greedy
// tokens). For every fixture and case:
//   `vlmcheck tokenize --messages <the case's messages> --image ... --json` gives the reference input ids and
//   per-image token counts (raw-prompt cases: --no-chat-template --prompt <prompt_text>);
//   `vlmcheck generate ... --temperature 0 --max-tokens 24 --json` gives the reference greedy tokens.
// Also: --max-pixels shrinks a dynamic-resolution image's token count as smart_resize says; a corrupt or
// truncated image fails with the file named; every image flag is validated (exit 2 naming it); a text-only
// model refuses --image (exit 5); the checker runs a VLM with the image and records image tokens and the
// processed size. Fixture-driven tests skip (saying why) while tests/fixtures/vision is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "cli/exit_codes.h"
#include "core/json.h"
#include "support/test_support.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

std::string vision_root() { return test::source_dir() + "/tests/fixtures/vision"; }
std::string images_dir() { return vision_root() + "/images"; }
std::string text_fixture(const std::string& name) { return test::source_dir() + "/tests/fixtures/text/" + name; }

struct VisionFixture {
  std::string name, folder;
  Json ref;
};

std::vector<VisionFixture> vision_fixtures() {
  std::vector<VisionFixture> out;
  if (!fs::is_directory(vision_root())) return out;
  for (const auto& e : fs::directory_iterator(vision_root())) {
    if (!fs::exists(e.path() / "reference.json") || !fs::exists(e.path() / "config.json")) continue;
    out.push_back({e.path().filename().string(), e.path().string(), read_json_file((e.path() / "reference.json").string())});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

#define SKIP_WITHOUT_FIXTURES(list)                                                                       \
  if ((list).empty())                                                                                    \
  GTEST_SKIP() << "no vision fixtures under " << vision_root()                                           \
               << " yet (tools/make_vision_fixtures.py writes them on the GPU machine)"

// The CLI arguments that give `vlmcheck` the case's conversation and images, as transformers got them.
std::vector<std::string> case_args(const VisionFixture& f, const Json& c, const test::TempDir& dir) {
  std::vector<std::string> a = {"--model", f.folder};
  if (c.contains("messages") && !c["messages"].is_null()) {
    const std::string path = dir / (f.name + "." + c["name"].get<std::string>() + ".messages.json");
    test::write_file(path, c["messages"].dump());
    a.insert(a.end(), {"--messages", path});
  } else {
    a.insert(a.end(), {"--no-chat-template", "--prompt", c["prompt_text"].get<std::string>()});
  }
  if (c.contains("images"))
    for (const auto& img : c["images"]) a.insert(a.end(), {"--image", images_dir() + "/" + img.get<std::string>()});
  return a;
}

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Json run_json(const std::vector<std::string>& args, const std::string& what) {
  auto r = test::run_vlmcheck(args);
  EXPECT_EQ(r.exit_code, 0) << what << ": " << r.err;
  if (r.exit_code != 0) return Json();
  return Json::parse(r.out);
}

// The fixture's case that gave `image` alone (null when none did).
Json single_image_case(const VisionFixture& f, const std::string& image) {
  for (const auto& c : f.ref["cases"])
    if (c.value("images", Json::array()).size() == 1 && c["images"][0] == image && c.contains("image_tokens")) return c;
  return Json();
}

std::vector<int64_t> image_tokens_of(const Json& out) {
  std::vector<int64_t> v;
  for (const auto& i : out.value("images", Json::array())) v.push_back(i["image_tokens"].get<int64_t>());
  return v;
}

TEST(CliVision, TokenizeGivesTheProcessorsInputIds) {
  auto fixtures = vision_fixtures();
  SKIP_WITHOUT_FIXTURES(fixtures);
  test::TempDir dir;
  int cases = 0;
  for (const auto& f : fixtures) {
    for (const auto& c : f.ref["cases"]) {
      const std::string what = f.name + "/" + c["name"].get<std::string>();
      Json out = run_json(cat({"tokenize"}, cat(case_args(f, c, dir), {"--json"})), what);
      if (out.is_null()) continue;
      ++cases;
      EXPECT_EQ(out["ids"].get<std::vector<int32_t>>(), c["input_ids"].get<std::vector<int32_t>>()) << what;
      EXPECT_EQ(out["prompt"].get<std::string>(), c["prompt_text"].get<std::string>()) << what;
      if (c["messages"].is_null() && !fs::exists(f.folder + "/chat_template.jinja") &&
          !fs::exists(f.folder + "/chat_template.json")) {
        // A VLM without a chat template (PaliGemma): a plain --prompt goes to its processor as written, as
        // with --no-chat-template.
        std::vector<std::string> plain = case_args(f, c, dir);
        plain.erase(std::find(plain.begin(), plain.end(), "--no-chat-template"));
        Json same = run_json(cat({"tokenize"}, cat(plain, {"--json"})), what + " without --no-chat-template");
        if (!same.is_null()) {
          EXPECT_EQ(same["ids"], out["ids"]) << what;
        }
      }
      const size_t n_images = c.value("images", Json::array()).size();
      if (n_images == 0) continue;
      ASSERT_EQ(out["images"].size(), n_images) << what;
      // Per image: the count transformers gave that image alone (its single-image case); reference.json's
      // per-image split of a multi-image case is an even split of the total, so only the total is compared.
      const std::vector<int64_t> ours = image_tokens_of(out);
      const auto ref_counts = c["image_tokens"].get<std::vector<int64_t>>();
      EXPECT_EQ(std::accumulate(ours.begin(), ours.end(), int64_t{0}),
                std::accumulate(ref_counts.begin(), ref_counts.end(), int64_t{0}))
          << what;
      for (size_t i = 0; i < n_images; ++i) {
        const Json alone = single_image_case(f, c["images"][i].get<std::string>());
        if (!alone.is_null()) {
          EXPECT_EQ(ours[i], alone["image_tokens"][0].get<int64_t>()) << what << " image " << i;
        }
      }
      // The pixel path transformers used by default is ours by default.
      EXPECT_EQ(out["images"][0]["backend"], f.ref["image_backend"]) << what;
      for (const auto& img : out["images"]) {
        EXPECT_GT(img["processed_width"].get<int>(), 0) << what;
        EXPECT_GT(img["processed_height"].get<int>(), 0) << what;
        EXPECT_GE(img["tiles"].get<int>(), 1) << what;
      }
    }
  }
  EXPECT_GT(cases, 0);
}

TEST(CliVision, GenerateGivesTheReferenceGreedyTokens) {
  auto fixtures = vision_fixtures();
  SKIP_WITHOUT_FIXTURES(fixtures);
  test::TempDir dir;
  int cases = 0;
  for (const auto& f : fixtures) {
    for (const auto& c : f.ref["cases"]) {
      if (!c.contains("greedy_tokens")) continue;
      const std::string what = f.name + "/" + c["name"].get<std::string>();
      auto want = c["greedy_tokens"].get<std::vector<int32_t>>();
      Json out = run_json(cat({"generate"}, cat(case_args(f, c, dir), {"--temperature", "0", "--max-tokens",
                                                                       std::to_string(want.size()), "--json"})),
                          what);
      if (out.is_null()) continue;
      ++cases;
      EXPECT_EQ(out["prompt_ids"].get<std::vector<int32_t>>(), c["input_ids"].get<std::vector<int32_t>>()) << what;
      // transformers generated a fixed count; we stop at the first stop id, which is not part of the text.
      const auto stops = out["stop_token_ids"].get<std::vector<int32_t>>();
      auto first_stop = std::find_if(want.begin(), want.end(), [&](int32_t t) {
        return std::find(stops.begin(), stops.end(), t) != stops.end();
      });
      want.erase(first_stop, want.end());
      EXPECT_EQ(out["tokens"].get<std::vector<int32_t>>(), want) << what << " (" << want.size() << " tokens)";
      const size_t n_images = c.value("images", Json::array()).size();
      EXPECT_EQ(out["images"].size(), n_images) << what;
      int64_t total = 0;
      for (int64_t t : image_tokens_of(out)) total += t;
      EXPECT_EQ(out["image_tokens"].get<int64_t>(), total) << what;
      if (n_images > 0) {
        EXPECT_GT(out["times"]["image_preprocess_s"].get<double>(), 0) << what;
        EXPECT_GT(out["times"]["vision_encode_s"].get<double>(), 0) << what;
        EXPECT_EQ(out["cached_prompt_tokens"], 0) << what;
      }
    }
  }
  EXPECT_GT(cases, 0);
}

// A fixture whose processor is dynamic-resolution (Qwen2-VL's smart_resize): the one whose reference records
// image_grid_thw for its image case.
const VisionFixture* dynamic_resolution_fixture(const std::vector<VisionFixture>& fixtures, Json* image_case) {
  for (const auto& f : fixtures)
    for (const auto& c : f.ref["cases"])
      if (c["name"] == "image" && c.contains("processor_keys") && c["processor_keys"].contains("image_grid_thw")) {
        *image_case = c;
        return &f;
      }
  return nullptr;
}

TEST(CliVision, MaxPixelsCapsTheImageTokens) {
  auto fixtures = vision_fixtures();
  SKIP_WITHOUT_FIXTURES(fixtures);
  Json c;
  const VisionFixture* f = dynamic_resolution_fixture(fixtures, &c);
  if (!f) GTEST_SKIP() << "no dynamic-resolution (image_grid_thw) fixture among " << fixtures.size();
  test::TempDir dir;
  Json config = read_json_file(f->folder + "/config.json");
  const Json& vc = config["vision_config"];
  const int64_t patch = vc.value("patch_size", 14), merge = vc.value("spatial_merge_size", 2);
  const int64_t factor = patch * merge;
  Json base = run_json(cat({"tokenize"}, cat(case_args(*f, c, dir), {"--json"})), f->name);
  ASSERT_FALSE(base.is_null());
  const int64_t base_tokens = base["image_tokens"].get<int64_t>();
  // A budget of a quarter of the default processed area (rounded to whole merge blocks, at least 4).
  const int64_t area = base["images"][0]["processed_width"].get<int64_t>() * base["images"][0]["processed_height"].get<int64_t>();
  const int64_t budget = std::max<int64_t>(4 * factor * factor, area / 4);
  Json small = run_json(cat({"tokenize"}, cat(case_args(*f, c, dir), {"--max-pixels", std::to_string(budget),
                                                                      "--min-pixels", std::to_string(factor * factor),
                                                                      "--json"})),
                        f->name + " --max-pixels");
  ASSERT_FALSE(small.is_null());
  const Json& img = small["images"][0];
  const int64_t w = img["processed_width"].get<int64_t>(), h = img["processed_height"].get<int64_t>();
  EXPECT_LE(w * h, budget);
  EXPECT_EQ(w % factor, 0);
  EXPECT_EQ(h % factor, 0);
  // One image token per merge block of patches (Qwen2-VL: (H / 28) x (W / 28)).
  EXPECT_EQ(img["image_tokens"].get<int64_t>(), (w / factor) * (h / factor));
  EXPECT_LT(img["image_tokens"].get<int64_t>(), base_tokens);
  // The ids carry exactly that many image tokens more than the text.
  EXPECT_EQ(base["ids"].size() - small["ids"].size(), static_cast<size_t>(base_tokens - img["image_tokens"].get<int64_t>()));
  // generate reports the same count and still runs.
  Json gen = run_json(cat({"generate"}, cat(case_args(*f, c, dir), {"--max-pixels", std::to_string(budget),
                                                                    "--min-pixels", std::to_string(factor * factor),
                                                                    "--max-tokens", "3", "--json"})),
                      f->name + " generate --max-pixels");
  ASSERT_FALSE(gen.is_null());
  EXPECT_EQ(gen["image_tokens"], img["image_tokens"]);
  EXPECT_EQ(gen["prompt_tokens"].get<size_t>(), small["ids"].size());
}

TEST(CliVision, ResizeShapeAndBackendAreApplied) {
  auto fixtures = vision_fixtures();
  SKIP_WITHOUT_FIXTURES(fixtures);
  Json c;
  const VisionFixture* f = dynamic_resolution_fixture(fixtures, &c);
  if (!f) GTEST_SKIP() << "no dynamic-resolution fixture";
  test::TempDir dir;
  Json out = run_json(cat({"tokenize"}, cat(case_args(*f, c, dir), {"--resize-shape", "112", "224", "--json"})),
                      f->name + " --resize-shape");
  ASSERT_FALSE(out.is_null());
  EXPECT_EQ(out["images"][0]["processed_height"], 112);
  EXPECT_EQ(out["images"][0]["processed_width"], 224);
  for (const char* backend : {"pil", "torchvision"}) {
    Json b = run_json(cat({"tokenize"}, cat(case_args(*f, c, dir), {"--image-backend", backend, "--json"})),
                      f->name + " --image-backend " + backend);
    ASSERT_FALSE(b.is_null());
    EXPECT_EQ(b["images"][0]["backend"], backend);
  }
}

// --pan-and-scan (Gemma 3): transformers' Gemma3Processor defaults (min crop 256, at most 4 crops, ratio >= 1.2) on
// the 1203x677 photo give 2 crops side by side (min(floor(1203/256), floor(1203/677 + 0.5)) = 2), each
// with its own image sequence, and the prompt wraps them in its "Here is the original image ..." text.
TEST(CliVision, PanAndScanAddsGemma3Crops) {
  const std::string folder = vision_root() + "/gemma3";
  if (!fs::is_directory(folder)) GTEST_SKIP() << "no gemma3 vision fixture";
  const Json cfg = read_json_file(folder + "/config.json");
  const int64_t per_image = cfg["mm_tokens_per_image"].get<int64_t>();
  const std::string photo = vision_root() + "/processors/images/odd.png";
  const std::vector<std::string> base = {"tokenize", "--model", folder, "--prompt", "What is this?", "--image", photo,
                                         "--json"};
  Json plain = run_json(base, "gemma3 without --pan-and-scan");
  Json crops = run_json(cat(base, {"--pan-and-scan"}), "gemma3 --pan-and-scan");
  ASSERT_FALSE(plain.is_null());
  ASSERT_FALSE(crops.is_null());
  EXPECT_EQ(image_tokens_of(plain), std::vector<int64_t>{per_image});
  EXPECT_EQ(image_tokens_of(crops), std::vector<int64_t>{3 * per_image});
  EXPECT_EQ(crops["images"][0]["tiles"], 3);
  EXPECT_EQ(plain["prompt"].get<std::string>().find("Here is the original image"), std::string::npos);
  EXPECT_NE(crops["ids"].size(), plain["ids"].size());
  auto r = test::run_vlmcheck({"tokenize", "--model", folder, "--prompt", "x", "--pan-and-scan"});
  EXPECT_EQ(r.exit_code, cli::kExitUsage) << r.err;
  EXPECT_NE(r.err.find("--pan-and-scan"), std::string::npos) << r.err;
}

TEST(CliVision, BadImagesFailNamingTheFile) {
  auto fixtures = vision_fixtures();
  SKIP_WITHOUT_FIXTURES(fixtures);
  const VisionFixture& f = fixtures.front();
  test::TempDir dir;
  test::write_file(dir / "garbage.png", "this is not an image at all");
  const std::string scene = test::read_file(images_dir() + "/scene.png");
  test::write_file(dir / "truncated.png", scene.substr(0, scene.size() / 3));
  test::write_file(dir / "empty.jpg", "");
  for (const std::string& bad : {dir / "garbage.png", dir / "truncated.png", dir / "empty.jpg", dir / "missing.jpg"}) {
    for (const char* cmd : {"tokenize", "generate"}) {
      auto r = test::run_vlmcheck({cmd, "--model", f.folder, "--prompt", "What is this?", "--image", bad});
      EXPECT_NE(r.exit_code, 0) << cmd << " " << bad;
      EXPECT_NE(r.exit_code, -1) << cmd << " " << bad << " crashed: " << r.err;
      EXPECT_NE(r.err.find(fs::path(bad).filename().string()), std::string::npos) << cmd << " " << bad << ": " << r.err;
    }
  }
}

TEST(CliVision, PlaceholderCountMustMatchTheImages) {
  auto fixtures = vision_fixtures();
  SKIP_WITHOUT_FIXTURES(fixtures);
  test::TempDir dir;
  // A conversation with one image item and two --image paths.
  const VisionFixture& f = fixtures.front();
  test::write_file(dir / "one.json",
                   R"([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}])");
  auto r = test::run_vlmcheck({"tokenize", "--model", f.folder, "--messages", dir / "one.json", "--image",
                               images_dir() + "/scene.png", "--image", images_dir() + "/scene.png"});
  EXPECT_EQ(r.exit_code, cli::kExitUsage) << r.err;
  EXPECT_NE(r.err.find("image item"), std::string::npos) << r.err;
}

TEST(CliVision, CheckerRunsAVlmWithTheImage) {
  auto fixtures = vision_fixtures();
  SKIP_WITHOUT_FIXTURES(fixtures);
  Json c;
  const VisionFixture* f = dynamic_resolution_fixture(fixtures, &c);
  if (!f) f = &fixtures.front();
  test::TempDir dir;
  auto r = test::run_vlmcheck({"run", "--image", images_dir() + "/scene.png", "--models", f->folder, "--max-tokens",
                               "8", "--output-dir", dir / "out", "--eval-mode", "blind"},
                              {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(dir / "out/results.jsonl");
  std::string line;
  Json result;
  while (std::getline(in, line))
    if (Json j = Json::parse(line); j.value("_type", "") == "result") result = j;
  ASSERT_FALSE(result.is_null());
  ASSERT_TRUE(result["failure"].is_null()) << result["failure"].dump();
  // The reference's image case used the same image: its token count is what the checker must record.
  Json image_case;
  for (const auto& cs : f->ref["cases"])
    if (cs["name"] == "image" && cs["images"].size() == 1 && cs["images"][0] == "scene.png") image_case = cs;
  if (!image_case.is_null() && image_case.contains("image_tokens")) {
    EXPECT_EQ(result["metrics"]["image_tokens"], image_case["image_tokens"][0]);
  }
  EXPECT_GT(result["metrics"]["image_tokens"].get<int64_t>(), 0);
  EXPECT_GT(result["prompt_diagnostics"]["processed_image_width"].get<int>(), 0);
  EXPECT_GT(result["prompt_diagnostics"]["processed_image_height"].get<int>(), 0);
  EXPECT_GT(result["timing"]["image_preprocess_time_s"].get<double>(), 0);
  EXPECT_GT(result["timing"]["vision_encode_time_s"].get<double>(), 0);
}

// ---- no fixtures needed ----

TEST(CliVision, ImageFlagsAreValidated) {
  const std::string model = text_fixture("llama");
  const std::string img = test::source_dir() + "/assets/demo/sample.jpg";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--image", img, "--max-pixels", "0"}, "--max-pixels"},
      {{"--image", img, "--max-pixels", "-5"}, "--max-pixels"},
      {{"--image", img, "--min-pixels", "0"}, "--min-pixels"},
      {{"--image", img, "--min-pixels", "5000", "--max-pixels", "4000"}, "--min-pixels"},
      {{"--image", img, "--resize-shape", "0"}, "--resize-shape"},
      {{"--image", img, "--resize-shape", "224", "-1"}, "--resize-shape"},
      {{"--image", img, "--resize-shape", "70000"}, "--resize-shape"},
      {{"--image", img, "--image-backend", "opencv"}, "--image-backend"},
      {{"--max-pixels", "1000"}, "--max-pixels"},
      {{"--resize-shape", "224"}, "--resize-shape"},
      {{"--image-backend", "pil"}, "--image-backend"},
      {{"--image", img, "--max-pixels", "lots"}, "--max-pixels"},
  };
  for (const char* cmd : {"generate", "tokenize"}) {
    for (const auto& [flags, name] : cases) {
      auto r = test::run_vlmcheck(cat({cmd, "--model", model, "--prompt", "hi"}, flags));
      EXPECT_EQ(r.exit_code, cli::kExitUsage) << cmd << " " << flags.back() << ": " << r.err;
      EXPECT_NE(r.err.find(name), std::string::npos) << cmd << ": " << r.err;
    }
    // Three values for --resize-shape is a usage error too.
    auto three = test::run_vlmcheck({cmd, "--model", model, "--prompt", "hi", "--image", img, "--resize-shape", "1",
                                     "2", "3"});
    EXPECT_EQ(three.exit_code, cli::kExitUsage) << three.err;
  }
}

TEST(CliVision, TextOnlyModelsRefuseImages) {
  const std::string img = test::source_dir() + "/assets/demo/sample.jpg";
  auto g = test::run_vlmcheck({"generate", "--model", text_fixture("llama"), "--prompt", "hi", "--image", img});
  EXPECT_EQ(g.exit_code, cli::kExitUnsupported) << g.err;
  EXPECT_NE(g.err.find("text-only"), std::string::npos) << g.err;
  auto t = test::run_vlmcheck({"tokenize", "--model", text_fixture("llama"), "--prompt", "hi", "--image", img});
  EXPECT_EQ(t.exit_code, cli::kExitUnsupported) << t.err;
  EXPECT_NE(t.err.find("text-only"), std::string::npos) << t.err;
  // Text prompts on the same model are unchanged by the image plumbing.
  Json ref = read_json_file(text_fixture("llama") + "/reference.json");
  auto r = test::run_vlmcheck({"tokenize", "--model", text_fixture("llama"), "--prompt", ref["prompt"].get<std::string>(),
                               "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json out = Json::parse(r.out);
  EXPECT_EQ(out["ids"], ref["input_ids"]);
  EXPECT_FALSE(out.contains("images"));
}

}  // namespace
}  // namespace vlm
