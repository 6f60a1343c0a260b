// End-to-end model parity of the VLM families with transformers 5.17 (tests/fixtures/vision/, float32): the
// reference processor's pixels → VisionModel::encode → build_prompt → LanguageModel::forward through the real KV
// cache (src/generate, hence a test_cli_* file: it links every layer) with the prompt's bidirectional groups in
// the attention mask; last-position logits within 1e-3 relative (max |diff| / max |ref|), then 24 greedy tokens
// decoding at n + rope_delta, identical to transformers'. Every fixture, both weight layouts, every case.
// Also: mlx-community-style copies (mlx-vlm names, channels-last convolutions, language model MLX-quantized with
// our quantizer, vision tower and projector left dense as mlx-vlm does) against a dense twin holding the
// dequantized weights under the same names.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/quantize.h"
#include "generate/kv_cache.h"
#include "io/safetensors_writer.h"
#include "models/registry.h"
#include "test_models_vlm_fixture.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;
using vlmtest::VlmCase;
using vlmtest::VlmFixture;

constexpr double kLogitTol = 1e-3;

int32_t argmax(const float* x, int64_t n) { return static_cast<int32_t>(std::max_element(x, x + n) - x); }

struct VlmRun {
  std::vector<float> logits;  // first-step logits [vocab]
  std::vector<int32_t> greedy;
  int64_t rope_delta = 0;
};

// Prefill the multimodal prompt, then `steps` greedy tokens through the same cache.
VlmRun run_vlm(LoadedModel& m, const std::vector<int32_t>& ids, const std::vector<ProcessedImage>& images,
               int steps) {
  LanguageModel& lm = *m.language_model;
  std::vector<Tensor> feats;
  for (const ProcessedImage& im : images) feats.push_back(m.vision->encode(im));
  MultimodalPrompt p = m.vision->build_prompt(lm, ids, images, feats);
  const int64_t n = static_cast<int64_t>(ids.size()), V = lm.vocab_size(), H = lm.hidden_size();
  std::unique_ptr<KVCache> cache = make_kv_cache(lm.cache_layout(), KVCacheOptions{});
  ops::AttentionMask mask;
  if (!p.groups.empty()) {
    mask.group_of_position = p.groups.data();
    mask.group_positions = static_cast<int64_t>(p.groups.size());
  }
  VlmRun r;
  r.rope_delta = p.rope_delta;
  r.logits.resize(static_cast<size_t>(V));
  lm.forward(p.embeds.data<float>(), n, Positions{p.positions.data(), n, p.dims}, *cache, mask, r.logits.data(),
             false);
  std::vector<float> logits = r.logits;
  std::vector<float> x(static_cast<size_t>(H));
  for (int s = 0; s < steps; ++s) {
    int32_t tok = argmax(logits.data(), V);
    r.greedy.push_back(tok);
    if (s + 1 == steps) break;
    // Decoding: every RoPE row at n + step + rope_delta (text positions: the rows are equal).
    int64_t pos = n + s + p.rope_delta;
    lm.embed(&tok, 1, x.data());
    lm.forward(x.data(), 1, Positions{&pos, 1, 1}, *cache, mask, logits.data(), false);
  }
  return r;
}

void expect_parity(const std::string& name) {
  VlmFixture f = vlmtest::load_vision_fixture(name);
  LoadedModel m = load_model(f.folder, {});
  ASSERT_NE(m.vision, nullptr);
  for (const VlmCase& c : f.cases) {
    SCOPED_TRACE(name + " " + c.name);
    std::vector<ProcessedImage> images = vlmtest::reference_images(f, c);
    VlmRun run = run_vlm(m, c.ids, images, static_cast<int>(c.greedy.size()));
    Tensor ref = f.get(c, "logits").to_f32();
    ASSERT_EQ(ref.numel(), m.language_model->vocab_size());
    const double diff = vlmtest::rel_diff(run.logits.data(), ref.data<float>(), ref.numel());
    EXPECT_LE(diff, kLogitTol);
    EXPECT_EQ(run.greedy, c.greedy) << "reference min top-2 gap " << c.min_gap;
    std::printf("[vlm parity] %-14s %-10s n %4zu images %zu: logits rel diff %.2e, greedy %s\n", name.c_str(),
                c.name.c_str(), c.ids.size(), images.size(), diff, run.greedy == c.greedy ? "identical" : "DIFFERENT");
  }
}

class VlmParity : public ::testing::TestWithParam<std::string> {};

TEST_P(VlmParity, LogitsAndGreedyTokensMatchTransformers) { expect_parity(GetParam()); }

std::vector<std::string> parity_fixtures() {
  std::vector<std::string> out;
  for (const std::string& n : vlmtest::vision_fixture_names()) {
    if (n.rfind("gemma3", 0) != 0) out.push_back(n);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, VlmParity, ::testing::ValuesIn(parity_fixtures()));

// Gemma 3 with images: transformers 5.17 ORs the image block into the causal part of the sliding layers' mask
// only — a key is visible iff (k <= q or same image block) and q - k < sliding_window — and the fixture's window
// (8) is shorter than its 16-token image blocks, so this case fails if the window stops bounding same-block keys.
TEST(VlmParityGemma3, ImageBlocksUnderTheSlidingWindowMatchTransformers) {
  expect_parity("gemma3");
  expect_parity("gemma3_hub");
}

// ---- mlx-community layout ----------------------------------------------------------------------------------

struct MlxRecipe {
  const char* fixture;  // a Hub-layout fixture (mlx-vlm converts from Hub checkpoints)
  // Hub name -> mlx-vlm name.
  std::string (*rename)(const std::string&);
  bool head_copy;  // mlx-vlm Gemma 3 writes language_model.lm_head for the tied embedding
};

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

std::string rename_qwen(const std::string& n) {
  if (starts_with(n, "visual.")) return "vision_tower." + n.substr(7);
  if (starts_with(n, "model.")) return "language_model.model." + n.substr(6);
  if (starts_with(n, "lm_head.")) return "language_model.lm_head." + n.substr(8);
  return n;
}
// mlx-vlm Idefics3 / SmolVLM (`Model.sanitize`): the "model." wrapper is dropped, text_model.* becomes
// language_model.* (no inner ".model."), and lm_head moves under language_model.
std::string rename_idefics3(const std::string& n) {
  if (starts_with(n, "model.text_model.")) return "language_model." + n.substr(17);
  if (starts_with(n, "model.")) return n.substr(6);
  if (starts_with(n, "lm_head.")) return "language_model.lm_head." + n.substr(8);
  return n;
}
// PaliGemma has no rename in mlx-vlm: its module tree (vision_tower.vision_model, language_model.model,
// multi_modal_projector.linear) already spells the Hub names.
std::string keep_name(const std::string& n) { return n; }

// Channels-last convolution weights as MLX stores them: [O, I, kH, kW] -> [O, kH, kW, I], [O, I, T, kH, kW] ->
// [O, T, kH, kW, I].
Tensor channels_last(const Tensor& t) {
  Tensor x = t.to_f32();
  const Shape& s = x.shape();
  const int64_t O = s[0], I = s[1];
  int64_t inner = 1;
  for (size_t i = 2; i < s.size(); ++i) inner *= s[i];
  Shape out_shape = {O};
  for (size_t i = 2; i < s.size(); ++i) out_shape.push_back(s[i]);
  out_shape.push_back(I);
  Tensor y = Tensor::empty(out_shape, DType::kF32);
  for (int64_t o = 0; o < O; ++o) {
    for (int64_t i = 0; i < I; ++i) {
      for (int64_t k = 0; k < inner; ++k) {
        y.data<float>()[(o * inner + k) * I + i] = x.data<float>()[(o * I + i) * inner + k];
      }
    }
  }
  return y.to(t.dtype());
}

bool is_lm_matrix(const std::string& mlx_name, const Tensor& t) {
  // mlx-vlm quantizes the language model's Linear/Embedding weights only (never vision_tower / projector).
  return starts_with(mlx_name, "language_model.") && t.ndim() == 2 && mlx_name.size() > 7 &&
         mlx_name.compare(mlx_name.size() - 7, 7, ".weight") == 0 && mlx_name.find("norm") == std::string::npos;
}

// Writes the mlx-vlm conversion of `recipe.fixture` (quantized LM) to q_dir and its dequantized twin to d_dir.
void write_mlx_vlm(const MlxRecipe& recipe, AffineQuantSpec spec, const std::string& q_dir, const std::string& d_dir) {
  const std::string src = vlmtest::vision_fixture(recipe.fixture);
  Checkpoint ckpt = Checkpoint::open(src, LoadMode::kEager);
  SafetensorsWriter qw, dw;
  int quantized = 0;
  for (const std::string& n : ckpt.names()) {
    Tensor t = ckpt.get(n);
    const std::string out = recipe.rename(n);
    const bool conv = t.ndim() >= 4 && (n.find("patch_embed") != std::string::npos ||
                                        n.find("patch_embedding") != std::string::npos);
    if (conv) t = channels_last(t);
    std::vector<std::pair<std::string, Tensor>> items = {{out, t}};
    if (recipe.head_copy && out == "language_model.model.embed_tokens.weight") {
      items.push_back({"language_model.lm_head.weight", t});
    }
    for (const auto& [name, w] : items) {
      // mlx's quantize_model skips matrices whose input dimension the group size does not divide.
      if (!is_lm_matrix(name, w) || w.dim(1) % spec.group_size != 0) {
        qw.add(name, w.is_contiguous() ? w : w.clone());
        dw.add(name, w.is_contiguous() ? w : w.clone());
        continue;
      }
      QuantizedMatrix q = quantize_affine(w, spec, DType::kBF16);
      const std::string base = name.substr(0, name.size() - 7);
      qw.add(base + ".weight", q.packed);
      qw.add(base + ".scales", q.scales);
      qw.add(base + ".biases", q.biases);
      dw.add(name, dequantize(q));
      ++quantized;
    }
  }
  ASSERT_GT(quantized, 0) << recipe.fixture;
  qw.set_metadata("format", "mlx");
  Json cfg = read_json_file(src + "/config.json");
  Json dense_cfg = cfg;
  Json quant = {{"group_size", spec.group_size}, {"bits", spec.bits}, {"mode", "affine"}};
  cfg["quantization"] = quant;
  cfg["quantization_config"] = quant;
  for (const auto& [dir, c, w] : {std::tuple{q_dir, cfg, &qw}, std::tuple{d_dir, dense_cfg, &dw}}) {
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(src)) {
      const std::string fname = e.path().filename().string();
      if (fname.find("safetensors") != std::string::npos || fname == "config.json") continue;
      fs::copy_file(e.path(), dir + "/" + fname);
    }
    test::write_file(dir + "/config.json", c.dump(2));
    w->write(dir + "/model.safetensors");
  }
}

TEST(VlmParityMlx, QuantizedMlxLayoutMatchesItsDequantizedTwin) {
  const std::vector<MlxRecipe> recipes = {
      {"qwen2_5_vl_hub", rename_qwen, false},
      {"gemma3_hub", keep_name, true},
      {"llava_hub", keep_name, false},
      {"qwen2_vl_hub", rename_qwen, false},  // mlx-vlm Qwen2-VL's sanitize is Qwen2.5-VL's
      {"idefics3_hub", rename_idefics3, false},
      {"paligemma_hub", keep_name, false},
  };
  for (const MlxRecipe& r : recipes) {
    SCOPED_TRACE(r.fixture);
    test::TempDir dir;
    write_mlx_vlm(r, AffineQuantSpec{4, 32}, dir / "q", dir / "d");
    VlmFixture f = vlmtest::load_vision_fixture(r.fixture);
    const VlmCase* c = nullptr;
    for (const VlmCase& v : f.cases) {
      if (!v.images.empty() && !c) c = &v;
    }
    ASSERT_NE(c, nullptr);
    std::vector<ProcessedImage> images = vlmtest::reference_images(f, *c);
    LoadedModel q = load_model(dir / "q", {});
    LoadedModel d = load_model(dir / "d", {});
    EXPECT_LT(q.language_model->weight_bytes(), d.language_model->weight_bytes() / 3);
    // The tower is dense in both and read channels-last: its features equal the reference's.
    Tensor ref_feat = f.get(*c, "image_features").to_f32();
    Tensor feat = q.vision->encode(images[0]);
    const double fdiff = vlmtest::rel_diff(feat.data<float>(), ref_feat.data<float>(), feat.numel());
    EXPECT_LE(fdiff, 1e-4);
    VlmRun rq = run_vlm(q, c->ids, images, 8);
    VlmRun rd = run_vlm(d, c->ids, images, 8);
    const double diff = vlmtest::rel_diff(rq.logits.data(), rd.logits.data(), static_cast<int64_t>(rd.logits.size()));
    EXPECT_LE(diff, 1e-4);
    EXPECT_EQ(rq.greedy, rd.greedy);
    // ...and the quantization is real: the logits moved away from the f32 reference.
    Tensor ref_logits = f.get(*c, "logits").to_f32();
    const double moved = vlmtest::rel_diff(rq.logits.data(), ref_logits.data<float>(), ref_logits.numel());
    EXPECT_GT(moved, 1e-4);
    std::printf("[vlm mlx] %-16s 4-bit g32: features vs reference %.2e, logits vs dequantized twin %.2e, vs f32 "
                "reference %.2e\n",
                r.fixture, fdiff, diff, moved);
  }
}

}  // namespace
}  // namespace vlm
