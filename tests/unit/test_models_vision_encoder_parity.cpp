// Vision towers against transformers 5.17: for every fixture in tests/fixtures/vision (tools/make_vision_fixtures.py,
// float32 on the GPU with TF32 off), the tower runs on the processor's own pixel_values and its output is compared
// with "<case>.vision_hidden", the input transformers fed to the connector:
//   llava      CLIP hidden_states[vision_feature_layer], class token dropped ("default" strategy)
//   gemma3 / paligemma   SigLIP last_hidden_state (post_layernorm)
//   idefics3   per tile: SigLIP last_hidden_state with the patch mask from pixel_attention_mask
//   qwen2_vl / qwen2_5_vl   the last block's output, images concatenated (Qwen2.5: window order)
// Both checkpoint layouts (transformers 5 and Hub) of each fixture must load and match within 1e-4 relative.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "models/vision/vision_encoder.h"
#include "support/test_support.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

constexpr double kRelTol = 1e-4;  // issue 5: max |ours - transformers| / max |transformers|

std::string fixtures_dir() { return test::source_dir() + "/tests/fixtures/vision"; }

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  if (!fs::is_directory(fixtures_dir())) return names;
  for (const auto& e : fs::directory_iterator(fixtures_dir())) {
    if (fs::exists(e.path() / "reference.safetensors") && fs::exists(e.path() / "config.json")) {
      names.push_back(e.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

struct Diff {
  double max_abs = 0, max_ref = 0;
  double rel() const { return max_ref > 0 ? max_abs / max_ref : max_abs; }
};

Diff compare(const float* got, const Tensor& want, int64_t n) {
  Diff d;
  const float* w = want.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    d.max_abs = std::max(d.max_abs, std::abs(static_cast<double>(got[i]) - w[i]));
    d.max_ref = std::max(d.max_ref, std::abs(static_cast<double>(w[i])));
  }
  return d;
}

const std::vector<std::string> kVitPrefixes = {"model.vision_tower.vision_model.", "model.vision_tower.",
                                               "vision_tower.vision_model.", "vision_tower.", "model.vision_model."};

// Runs the fixture's tower for one case; returns [rows, hidden] f32 laid out like vision_hidden.
Tensor run_tower(const std::string& model_type, const Json& config, const Checkpoint& cp,
                 const SafetensorsFile& ref, const std::string& c, const std::string& what) {
  const Json& vc = config.at("vision_config");
  if (model_type == "qwen2_vl" || model_type == "qwen2_5_vl") {
    const std::string prefix = detect_prefix(cp, {"model.visual.", "visual."}, "patch_embed.proj.weight", what);
    QwenVisionEncoder enc(vc, model_type, cp, prefix, what);
    Tensor pixels = ref.tensor(c + ".pixel_values"), grid = ref.tensor(c + ".image_grid_thw");
    std::vector<float> rows;
    int64_t offset = 0, dim = 0;
    for (int64_t i = 0; i < grid.dim(0); ++i) {
      const int64_t* g = grid.data<int64_t>() + 3 * i;
      const int64_t n = g[0] * g[1] * g[2];
      Tensor hidden;
      enc.forward(pixels.slice_rows(offset, offset + n).clone(), g[0], g[1], g[2], &hidden);
      dim = hidden.dim(1);
      rows.insert(rows.end(), hidden.data<float>(), hidden.data<float>() + hidden.numel());
      offset += n;
    }
    return Tensor::from_f32({static_cast<int64_t>(rows.size()) / dim, dim}, rows);
  }
  const std::string prefix = detect_prefix(cp, kVitPrefixes, "embeddings.patch_embedding.weight", what);
  Tensor pixels = ref.tensor(c + ".pixel_values");
  const int64_t h = pixels.dim(-2), w = pixels.dim(-1), per_image = 3 * h * w;
  const int64_t n_images = pixels.numel() / per_image;
  int layer = -1, needed = -1;
  bool post = true, drop_cls = false;
  if (model_type == "llava") {
    layer = static_cast<int>(json_int(config, "vision_feature_layer", what).value_or(-2));
    const int64_t L = json_int(vc, "num_hidden_layers", what).value_or(24);
    needed = static_cast<int>(layer < 0 ? L + 1 + layer : layer);
    post = false;
    drop_cls = json_string(config, "vision_feature_select_strategy", what).value_or("default") == "default";
  }
  ViTEncoder enc(vc, cp, prefix, needed, what);
  Tensor mask_px;
  if (ref.find(c + ".pixel_attention_mask") != nullptr) mask_px = ref.tensor(c + ".pixel_attention_mask");
  std::vector<float> rows;
  int64_t dim = enc.hidden_size();
  for (int64_t i = 0; i < n_images; ++i) {
    const float* px = pixels.data<float>() + i * per_image;
    std::vector<uint8_t> patch_mask;
    if (mask_px.defined()) {
      // transformers: a patch is real when any of its pixels is (unfold + sum > 0).
      const int64_t p = enc.patch_size(), gh = h / p, gw = w / p;
      const int64_t* m = mask_px.data<int64_t>() + i * h * w;
      patch_mask.assign(static_cast<size_t>(gh * gw), 0);
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          if (m[y * w + x] != 0) patch_mask[static_cast<size_t>((y / p) * gw + x / p)] = 1;
    }
    Tensor out = enc.forward(px, h, w, layer, post, patch_mask.empty() ? nullptr : patch_mask.data());
    const float* begin = out.data<float>() + (drop_cls ? dim : 0);
    const float* end = out.data<float>() + out.numel();
    rows.insert(rows.end(), begin, end);
  }
  return Tensor::from_f32({static_cast<int64_t>(rows.size()) / dim, dim}, rows);
}

TEST(VisionEncoderParity, EveryFixtureMatchesTransformers) {
  const std::vector<std::string> names = fixture_names();
  if (names.empty()) GTEST_SKIP() << "no vision fixtures under " << fixtures_dir();
  // The five families in both layouts are the contract; a fixture set without them is incomplete.
  for (const char* want : {"llava", "llava_hub", "gemma3", "gemma3_hub", "paligemma", "paligemma_hub", "idefics3",
                           "idefics3_hub", "qwen2_vl", "qwen2_vl_hub", "qwen2_5_vl", "qwen2_5_vl_hub"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << "fixture " << want << " is missing";
  }
  int compared = 0;
  for (const std::string& name : names) {
    const std::string folder = fixtures_dir() + "/" + name;
    const Json config = read_json_file(folder + "/config.json");
    const Json meta = read_json_file(folder + "/reference.json");
    const std::string model_type = config.at("model_type").get<std::string>();
    Checkpoint cp = Checkpoint::open(folder, LoadMode::kLazy);
    auto ref = SafetensorsFile::open(folder + "/reference.safetensors", LoadMode::kEager);
    for (const Json& c : meta.at("cases")) {
      const std::string cname = c.at("name").get<std::string>();
      if (ref->find(cname + ".vision_hidden") == nullptr) continue;
      const std::string what = name + "/" + cname;
      Tensor want = ref->tensor(cname + ".vision_hidden");
      Tensor got;
      try {
        got = run_tower(model_type, config, cp, *ref, cname, what);
      } catch (const Error& e) {
        ADD_FAILURE() << what << ": " << e.what();
        continue;
      }
      ASSERT_EQ(got.numel(), want.numel()) << what << ": got " << got.describe() << ", want " << want.describe();
      const Diff d = compare(got.data<float>(), want, want.numel());
      std::cout << fmt::format("  {:<28} max|diff| {:.3e}  max|ref| {:.3e}  rel {:.3e}\n", what, d.max_abs,
                               d.max_ref, d.rel());
      EXPECT_LE(d.rel(), kRelTol) << what;
      ++compared;
    }
  }
  EXPECT_GT(compared, 0);
}

}  // namespace
}  // namespace vlm
