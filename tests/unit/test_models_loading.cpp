// Model loading against the transformers-written fixtures (tests/fixtures/text/): every family loads and
// picks up its config-driven features (windows per layer, RoPE per layer type in both Gemma 3 layouts),
// and broken checkpoints/configs fail with errors that name the tensor or field.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "models/layers/decoder.h"
#include "models/registry.h"
#include "support/test_support.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return test::source_dir() + "/tests/fixtures/text/" + name; }

// A tensor to write: name, safetensors dtype, shape, raw bytes.
struct RawTensor {
  std::string name, dtype;
  Shape shape;
  std::string bytes;
};

std::vector<RawTensor> read_all(const std::string& path) {
  auto f = SafetensorsFile::open(path, LoadMode::kEager);
  std::vector<RawTensor> out;
  for (const TensorInfo& info : f->tensors()) {
    Tensor t = f->tensor(info.name);
    VLM_CHECK(info.dtype == DType::kF32, ErrorKind::kInternal, "fixture tensors are f32");
    out.push_back({info.name, "F32", info.shape, std::string(static_cast<const char*>(t.raw()), t.nbytes())});
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors) {
  Json header = Json::object();
  size_t offset = 0;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream out(path, std::ios::binary);
  uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << h;
  for (const RawTensor& t : tensors) out << t.bytes;
}

// A copy of a fixture folder (config + tokenizer files) with its tensors replaced and config edited.
std::string make_variant(const test::TempDir& dir, const std::string& name, const std::vector<RawTensor>& tensors,
                         const std::function<void(Json&)>& edit_config = nullptr) {
  const std::string out = dir / "model";
  fs::create_directories(out);
  Json cfg = read_json_file(fixture(name) + "/config.json");
  if (edit_config) edit_config(cfg);
  test::write_file(out + "/config.json", cfg.dump(2));
  write_safetensors(out + "/model.safetensors", tensors);
  return out;
}

std::string load_error(const std::string& folder, ErrorKind* kind = nullptr) {
  try {
    load_model(folder, {});
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "";
}

const DecoderModel& decoder(const LoadedModel& m) {
  auto* d = dynamic_cast<const DecoderModel*>(m.language_model.get());
  EXPECT_NE(d, nullptr);
  return *d;
}

std::vector<int64_t> windows(const LoadedModel& m) {
  std::vector<int64_t> w;
  for (const LayerCacheInfo& l : m.language_model->cache_layout()) w.push_back(l.sliding_window);
  return w;
}

TEST(ModelsRegistry, ListsEveryTextFamily) {
  for (const char* t : {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"}) {
    EXPECT_TRUE(is_supported_model_type(t)) << t;
  }
  EXPECT_FALSE(is_supported_model_type("not_a_model"));
  std::vector<std::string> all = supported_model_types();
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
}

TEST(ModelsLoading, EveryFixtureLoadsWithItsConfigFeatures) {
  struct Case {
    const char* name;
    std::vector<int64_t> windows;
  };
  const std::vector<Case> cases = {
      {"llama", {0, 0, 0}},        {"mistral", {8, 8, 8}},           {"qwen2", {0, 0, 0}},
      {"qwen3", {0, 0, 0}},        {"gemma", {0, 0, 0}},             {"gemma2", {8, 0, 8, 0}},
      {"gemma3_text", {8, 8, 0, 8}}, {"gemma3_text_legacy", {8, 8, 0, 8}}, {"phi3", {0, 0, 0}},
  };
  for (const Case& c : cases) {
    LoadedModel m = load_model(fixture(c.name), {});
    EXPECT_EQ(m.language_model->vocab_size(), 400) << c.name;
    EXPECT_EQ(m.language_model->hidden_size(), 64) << c.name;
    EXPECT_EQ(windows(m), c.windows) << c.name;
    EXPECT_GT(m.language_model->weight_bytes(), 0u);
  }
}

TEST(ModelsLoading, FamilyFeaturesComeFromConfigFields) {
  LoadedModel phi = load_model(fixture("phi3"), {});
  EXPECT_TRUE(decoder(phi).spec().fused_qkv);
  EXPECT_EQ(decoder(phi).spec().layers[0].rope.rotary_dim, 8);  // partial_rotary_factor 0.5 of head_dim 16

  LoadedModel g2 = load_model(fixture("gemma2"), {});
  const DecoderSpec& s2 = decoder(g2).spec();
  EXPECT_FLOAT_EQ(s2.attn_scale, 1.0f / std::sqrt(24.0f));  // query_pre_attn_scalar
  EXPECT_FLOAT_EQ(s2.attn_softcap, 10.0f);
  EXPECT_FLOAT_EQ(s2.final_softcap, 15.0f);
  EXPECT_FLOAT_EQ(s2.embed_scale, 8.0f);
  EXPECT_FLOAT_EQ(s2.norm_offset, 1.0f);

  // Gemma 3's config carries attn_logit_softcapping, which transformers' Gemma 3 attention never applies.
  LoadedModel g3 = load_model(fixture("gemma3_text"), {});
  EXPECT_FLOAT_EQ(decoder(g3).spec().attn_softcap, 0.0f);
  EXPECT_FLOAT_EQ(decoder(g3).spec().final_softcap, 15.0f);
  EXPECT_TRUE(decoder(g3).spec().qk_norm);

  LoadedModel llama = load_model(fixture("llama"), {});
  const RopeTable& r = decoder(llama).spec().layers[0].rope;
  EXPECT_EQ(r.rope_type, "llama3");
  // Highest frequency (wavelength 2π < high_freq_wavelen 8) is untouched; the lowest is divided by 8.
  EXPECT_FLOAT_EQ(r.inv_freq[0], 1.0f);
  EXPECT_NEAR(r.inv_freq[7], std::pow(500000.0, -14.0 / 16.0) / 8.0, 1e-12);
}

TEST(ModelsLoading, Gemma3ConfigLayoutsGiveTheSameRopePerLayer) {
  LoadedModel a = load_model(fixture("gemma3_text"), {});
  LoadedModel b = load_model(fixture("gemma3_text_legacy"), {});
  const DecoderSpec &sa = decoder(a).spec(), &sb = decoder(b).spec();
  ASSERT_EQ(sa.layers.size(), sb.layers.size());
  for (size_t i = 0; i < sa.layers.size(); ++i) {
    EXPECT_EQ(sa.layers[i].rope.inv_freq, sb.layers[i].rope.inv_freq) << "layer " << i;
    EXPECT_EQ(sa.layers[i].sliding_window, sb.layers[i].sliding_window) << "layer " << i;
  }
  // Local layers: rope_local_base_freq 10k, unscaled; global: rope_theta 1M with linear factor 2.
  EXPECT_FLOAT_EQ(sa.layers[0].rope.inv_freq[1], static_cast<float>(std::pow(10000.0, -2.0 / 16.0)));
  EXPECT_FLOAT_EQ(sa.layers[2].rope.inv_freq[1], static_cast<float>(std::pow(1e6, -2.0 / 16.0) / 2.0));
}

TEST(ModelsLoading, UnknownModelTypeNamesTheFieldAndTheSupportedTypes) {
  test::TempDir dir;
  std::string folder = make_variant(dir, "llama", read_all(fixture("llama") + "/model.safetensors"),
                                    [](Json& c) { c["model_type"] = "frobnicator"; });
  ErrorKind kind{};
  std::string msg = load_error(folder, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("model_type 'frobnicator'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gemma3_text"), std::string::npos) << msg;
}

TEST(ModelsLoading, MissingTensorIsNamed) {
  test::TempDir dir;
  auto tensors = read_all(fixture("llama") + "/model.safetensors");
  std::erase_if(tensors, [](const RawTensor& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  ErrorKind kind{};
  std::string msg = load_error(make_variant(dir, "llama", tensors), &kind);
  EXPECT_EQ(kind, ErrorKind::kFormat);
  EXPECT_NE(msg.find("missing: model.layers.1.mlp.up_proj.weight"), std::string::npos) << msg;
}

TEST(ModelsLoading, MisShapedTensorNamesExpectedAndActual) {
  test::TempDir dir;
  auto tensors = read_all(fixture("qwen2") + "/model.safetensors");
  for (RawTensor& t : tensors) {
    if (t.name == "model.layers.0.self_attn.k_proj.weight") t.shape = {64, 32};  // same bytes, transposed shape
  }
  std::string msg = load_error(make_variant(dir, "qwen2", tensors));
  EXPECT_NE(msg.find("model.layers.0.self_attn.k_proj.weight: expected float[32, 64], got f32[64, 32]"),
            std::string::npos)
      << msg;
}

TEST(ModelsLoading, UnusedTensorIsReported) {
  test::TempDir dir;
  auto tensors = read_all(fixture("qwen3") + "/model.safetensors");
  tensors.push_back({"model.layers.2.self_attn.mystery.weight", "F32", {4}, std::string(16, '\0')});
  std::string msg = load_error(make_variant(dir, "qwen3", tensors));
  EXPECT_NE(msg.find("unused: model.layers.2.self_attn.mystery.weight"), std::string::npos) << msg;
}

TEST(ModelsLoading, MissingHeadOfUntiedModelIsNamed) {
  test::TempDir dir;
  auto tensors = read_all(fixture("mistral") + "/model.safetensors");
  std::erase_if(tensors, [](const RawTensor& t) { return t.name == "lm_head.weight"; });
  std::string msg = load_error(make_variant(dir, "mistral", tensors));
  EXPECT_NE(msg.find("missing: lm_head.weight"), std::string::npos) << msg;
}

TEST(ModelsLoading, MissingConfigFieldIsNamed) {
  test::TempDir dir;
  std::string folder = make_variant(dir, "gemma", read_all(fixture("gemma") + "/model.safetensors"),
                                    [](Json& c) { c.erase("num_attention_heads"); });
  std::string msg = load_error(folder);
  EXPECT_NE(msg.find("'num_attention_heads' is missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
}

TEST(ModelsLoading, UnsupportedRopeTypeIsNamed) {
  test::TempDir dir;
  std::string folder = make_variant(dir, "llama", read_all(fixture("llama") + "/model.safetensors"), [](Json& c) {
    c["rope_parameters"] = {{"rope_type", "proportional"}, {"factor", 2.0}, {"rope_theta", 10000.0}};
  });
  ErrorKind kind{};
  std::string msg = load_error(folder, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("rope_type 'proportional'"), std::string::npos) << msg;
}

TEST(ModelsLoading, NoDecoderEmbeddingListsTheLayoutsTried) {
  test::TempDir dir;
  auto tensors = read_all(fixture("llama") + "/model.safetensors");
  for (RawTensor& t : tensors) t.name = "transformer." + t.name;
  ErrorKind kind{};
  std::string msg = load_error(make_variant(dir, "llama", tensors), &kind);
  EXPECT_EQ(kind, ErrorKind::kNotFound);
  EXPECT_NE(msg.find("language_model.model.embed_tokens.weight"), std::string::npos) << msg;
}

TEST(ModelsLoading, QuantizedTensorWithoutQuantizationConfigIsReported) {
  test::TempDir dir;
  auto tensors = read_all(fixture("llama") + "/model.safetensors");
  // A stray ".scales" makes the module look MLX-quantized while the config declares no quantization.
  tensors.push_back({"model.layers.0.mlp.down_proj.scales", "F32", {64, 2}, std::string(64 * 2 * 4, '\0')});
  std::string msg = load_error(make_variant(dir, "llama", tensors));
  EXPECT_NE(msg.find("model.layers.0.mlp.down_proj: has .scales but the config's quantization marks it unquantized"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace vlm
