// The vision half of the VLM families against transformers 5.17 (tests/fixtures/vision/, float32): for every
// fixture in both weight layouts, the reference processor's pixel values go through VisionModel::encode and
// must equal get_image_features (max |diff| / max |ref| <= 1e-4); build_prompt must reproduce the prompt layout
// of the HF forward — Qwen's get_rope_index positions, Gemma 3's per-image bidirectional blocks (from
// token_type_ids), PaliGemma's 1-based positions and bidirectional prefix, image rows = features, text rows = the
// language model's own embeddings, all of it = the inputs_embeds transformers gave its language model (1e-4).
// Also: text_only loading,
// and the typed errors for mismatched prompts, mis-shaped pixels and incomplete connector weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors_writer.h"
#include "models/layers/decoder.h"
#include "models/registry.h"
#include "test_models_vlm_fixture.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;
using vlmtest::VlmCase;
using vlmtest::VlmFixture;

constexpr double kFeatureTol = 1e-4;

class VisionFixture : public ::testing::TestWithParam<std::string> {};

std::vector<Tensor> encode_all(const VisionModel& v, const std::vector<ProcessedImage>& images) {
  std::vector<Tensor> out;
  for (const ProcessedImage& im : images) out.push_back(v.encode(im));
  return out;
}

TEST_P(VisionFixture, ImageFeaturesMatchTransformers) {
  const std::string name = GetParam();
  VlmFixture f = vlmtest::load_vision_fixture(name);
  LoadedModel m = load_model(f.folder, {});
  ASSERT_NE(m.vision, nullptr) << name;
  int checked = 0;
  for (const VlmCase& c : f.cases) {
    if (c.images.empty() || !c.has("image_features")) continue;
    std::vector<ProcessedImage> images = vlmtest::reference_images(f, c);
    std::vector<Tensor> feats = encode_all(*m.vision, images);
    Tensor ref = f.get(c, "image_features").to_f32();
    const int64_t h = m.language_model->hidden_size();
    ref = ref.reshape({ref.numel() / h, h});
    int64_t rows = 0;
    for (size_t i = 0; i < feats.size(); ++i) {
      ASSERT_EQ(feats[i].dim(1), h);
      rows += feats[i].dim(0);
    }
    ASSERT_EQ(rows, ref.dim(0)) << name << " " << c.name;
    EXPECT_EQ(rows, std::count(c.ids.begin(), c.ids.end(), m.vision->image_token_id())) << name << " " << c.name;
    double worst = 0;
    int64_t row = 0;
    for (const Tensor& ft : feats) {
      worst = std::max(worst, vlmtest::rel_diff(ft.data<float>(), ref.data<float>() + row * h, ft.numel()));
      row += ft.dim(0);
    }
    EXPECT_LE(worst, kFeatureTol) << name << " " << c.name;
    std::printf("[features] %-14s %-10s rows %5lld rel diff %.2e\n", name.c_str(), c.name.c_str(),
                static_cast<long long>(rows), worst);
    ++checked;
  }
  EXPECT_GT(checked, 0) << name << ": no case with images and image_features";
}

TEST_P(VisionFixture, PromptLayoutMatchesTheHfForward) {
  const std::string name = GetParam();
  VlmFixture f = vlmtest::load_vision_fixture(name);
  LoadedModel m = load_model(f.folder, {});
  ASSERT_NE(m.vision, nullptr);
  const LanguageModel& lm = *m.language_model;
  const std::string& type = f.config.model_type;
  const int64_t h = lm.hidden_size();
  for (const VlmCase& c : f.cases) {
    SCOPED_TRACE(name + " " + c.name);
    std::vector<ProcessedImage> images = vlmtest::reference_images(f, c);
    std::vector<Tensor> feats = encode_all(*m.vision, images);
    MultimodalPrompt p = m.vision->build_prompt(lm, c.ids, images, feats);
    const int64_t n = static_cast<int64_t>(c.ids.size());
    ASSERT_EQ(p.embeds.shape(), (Shape{n, h}));
    ASSERT_EQ(static_cast<int64_t>(p.positions.size()), n * p.dims);
    // Image rows are the features in order; text rows are embed() (Gemma's scaling included).
    const int32_t img = m.vision->image_token_id();
    std::vector<float> text_row(static_cast<size_t>(h));
    size_t fi = 0;
    int64_t fr = 0, image_rows = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float* row = p.embeds.data<float>() + i * h;
      if (c.ids[static_cast<size_t>(i)] == img) {
        while (fr == feats[fi].dim(0)) ++fi, fr = 0;
        const float* src = feats[fi].data<float>() + fr * h;
        for (int64_t j = 0; j < h; ++j) ASSERT_EQ(row[j], src[j]) << "image row " << i;
        ++fr;
        ++image_rows;
      } else {
        lm.embed(&c.ids[static_cast<size_t>(i)], 1, text_row.data());
        for (int64_t j = 0; j < h; ++j) ASSERT_EQ(row[j], text_row[static_cast<size_t>(j)]) << "text row " << i;
      }
    }
    EXPECT_EQ(p.image_tokens, image_rows);
    // ...and the whole matrix is what transformers handed its language model.
    if (c.has("inputs_embeds")) {
      Tensor ref = f.get(c, "inputs_embeds").to_f32();
      ASSERT_EQ(ref.numel(), n * h);
      const double d = vlmtest::rel_diff(p.embeds.data<float>(), ref.data<float>(), n * h);
      EXPECT_LE(d, kFeatureTol) << "inputs_embeds";
    }

    if (type == "qwen2_vl" || type == "qwen2_5_vl") {
      ASSERT_EQ(p.dims, 3);
      std::vector<int64_t> ref;
      if (c.has("position_ids")) {
        ref = vlmtest::int_values(f.get(c, "position_ids"));
      } else {
        // The generator saves get_rope_index's output for image cases only; text-only is arange on every row.
        ASSERT_TRUE(c.images.empty()) << "an image case without position_ids";
        for (int r = 0; r < 3; ++r) {
          for (int64_t i = 0; i < n; ++i) ref.push_back(i);
        }
      }
      ASSERT_EQ(static_cast<int64_t>(ref.size()), 3 * n);
      EXPECT_EQ(p.positions, ref);
      const int64_t max_pos = *std::max_element(ref.begin(), ref.end());
      EXPECT_EQ(p.rope_delta, max_pos + 1 - n);  // HF's mrope_position_deltas
      EXPECT_TRUE(p.groups.empty());
    } else {
      ASSERT_EQ(p.dims, 1);
      const int64_t base = type == "paligemma" ? 1 : 0;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(p.positions[static_cast<size_t>(i)], i + base);
      EXPECT_EQ(p.rope_delta, base);
      if (c.has("position_ids")) {
        EXPECT_EQ(p.positions, vlmtest::int_values(f.get(c, "position_ids")));
      }
    }
    if (type == "gemma3" && !c.images.empty()) {
      // token_type_ids == 1 marks the image tokens; each contiguous block is its own group.
      ASSERT_TRUE(c.has("token_type_ids")) << "the fixture has no token_type_ids";
      std::vector<int64_t> tt = vlmtest::int_values(f.get(c, "token_type_ids"));
      ASSERT_EQ(static_cast<int64_t>(tt.size()), n);
      ASSERT_EQ(static_cast<int64_t>(p.groups.size()), n);
      int32_t expect = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (tt[static_cast<size_t>(i)] == 1 && (i == 0 || tt[static_cast<size_t>(i - 1)] != 1)) ++expect;
        EXPECT_EQ(p.groups[static_cast<size_t>(i)], tt[static_cast<size_t>(i)] == 1 ? expect : 0) << "position " << i;
      }
      EXPECT_EQ(static_cast<size_t>(expect), c.images.size());
    } else if (type == "paligemma") {
      // No suffix: every prompt token has token_type_ids 0, i.e. one bidirectional prefix block.
      if (c.has("token_type_ids")) {
        for (int64_t v : vlmtest::int_values(f.get(c, "token_type_ids"))) EXPECT_EQ(v, 0);
      }
      EXPECT_EQ(p.groups, std::vector<int32_t>(static_cast<size_t>(n), 1));
    } else if (type != "gemma3") {
      EXPECT_TRUE(p.groups.empty());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, VisionFixture, ::testing::ValuesIn(vlmtest::vision_fixture_names()));

// ---- loading options and errors ---------------------------------------------------------------------------

const VlmCase* first_image_case(const VlmFixture& f) {
  for (const VlmCase& c : f.cases) {
    if (!c.images.empty()) return &c;
  }
  return nullptr;
}

TEST(VisionModels, TextOnlyLoadSkipsTheTower) {
  for (const char* name : {"llava", "qwen2_vl", "gemma3"}) {
    LoadedModel m = load_model(vlmtest::vision_fixture(name), LoadOptions{LoadMode::kEager, "", true});
    EXPECT_EQ(m.vision, nullptr) << name;
    ASSERT_NE(m.language_model, nullptr) << name;
    EXPECT_TRUE(has_vision_model(m.config.model_type)) << name;
  }
}

TEST(VisionModels, FeatureCountMustMatchImageTokens) {
  for (const char* name : {"llava", "idefics3", "gemma3", "paligemma", "qwen2_vl"}) {
    VlmFixture f = vlmtest::load_vision_fixture(name);
    const VlmCase* c = first_image_case(f);
    ASSERT_NE(c, nullptr) << name;
    LoadedModel m = load_model(f.folder, {});
    std::vector<ProcessedImage> images = vlmtest::reference_images(f, *c);
    std::vector<Tensor> feats = encode_all(*m.vision, images);
    std::vector<int32_t> ids = c->ids;
    // Drop one image token: the prompt no longer matches the features.
    ids.erase(std::find(ids.begin(), ids.end(), m.vision->image_token_id()));
    try {
      m.vision->build_prompt(*m.language_model, ids, images, feats);
      ADD_FAILURE() << name << ": expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << name;
      EXPECT_NE(std::string(e.what()).find("image tokens"), std::string::npos) << name << ": " << e.what();
    }
  }
}

TEST(VisionModels, MisShapedPixelsAreRejected) {
  for (const char* name : {"llava", "gemma3", "paligemma", "qwen2_vl"}) {
    VlmFixture f = vlmtest::load_vision_fixture(name);
    LoadedModel m = load_model(f.folder, {});
    ProcessedImage bad;
    bad.pixels = Tensor::zeros({5, 7}, DType::kF32);  // neither tiles [n, 3, h, w] nor grid_t*grid_h*grid_w rows
    bad.grid_t = bad.grid_h = bad.grid_w = 1;
    EXPECT_THROW(
        {
          try {
            m.vision->encode(bad);
          } catch (const Error& e) {
            EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << name << ": " << e.what();
            throw;
          }
        },
        Error)
        << name;
  }
}

TEST(VisionModels, MissingConnectorTensorIsNamed) {
  // A copy of the llava fixture without linear_2.weight: loading names that tensor.
  VlmFixture f = vlmtest::load_vision_fixture("llava");
  test::TempDir dir;
  for (const auto& e : fs::directory_iterator(f.folder)) {
    const std::string fname = e.path().filename().string();
    if (fname.find("safetensors") != std::string::npos) continue;
    fs::copy_file(e.path(), dir / fname);
  }
  Checkpoint ckpt = Checkpoint::open(f.folder, LoadMode::kEager);
  SafetensorsWriter w;
  std::string dropped;
  for (const std::string& n : ckpt.names()) {
    if (n.find("multi_modal_projector.linear_2.weight") != std::string::npos) {
      dropped = n;
      continue;
    }
    w.add(n, ckpt.get(n));
  }
  ASSERT_FALSE(dropped.empty());
  w.write(dir / "model.safetensors");
  try {
    load_model(dir.path(), {});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
    EXPECT_NE(std::string(e.what()).find(dropped), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vlm
