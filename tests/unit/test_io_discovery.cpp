// Discovery (check_models.md §2.5) on real fake-cache trees: the layout filter and its reasons, the
// image-capability verdict for VLM / text-only / embedding / reranker / diffusers / CLIP-like /
// audio / unknown cases, bounded and contained JSON reads, size on disk, dtype and quantization.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "fake_hf_cache.h"
#include "io/discovery.h"
#include "safetensors_writer.h"
#include "support/test_support.h"

using namespace vlm;
using namespace vlm::test;

namespace {

bool has_evidence(const CapabilityVerdict& v, const std::string& part) {
  for (const auto& e : v.evidence)
    if (e.find(part) != std::string::npos) return true;
  return false;
}
bool has_reason(const DiscoveredModel& m, const std::string& part) {
  for (const auto& e : m.layout_reasons)
    if (e.find(part) != std::string::npos) return true;
  return false;
}

const std::string kMain = fake_sha("abc123");

// A complete model repo: config, tokenizer config and a single safetensors file, main -> kMain.
FakeRepo make_model(const std::string& cache, const std::string& id, const std::string& config) {
  FakeRepo r(cache, id);
  r.add_file(kMain, "config.json", config);
  r.add_file(kMain, "tokenizer_config.json", R"({"add_bos_token": false})");
  r.add_file(kMain, "model.safetensors", st_build({st_random("w", "BF16", {4, 4}, 1)}));
  r.set_ref("main", kMain);
  return r;
}

CapabilityVerdict classify(const std::string& config_json) {
  Json c = Json::parse(config_json);
  return classify_image_capability(&c, false);
}

}  // namespace

TEST(ImageCapability, ClassificationTable) {
  struct Case {
    const char* config;
    ImageCapability want;
    const char* purpose;
    const char* evidence;
  };
  const Case cases[] = {
      {R"({"model_type":"qwen2_vl","architectures":["Qwen2VLForConditionalGeneration"],"vision_config":{"depth":32},
          "image_token_id":151655})",
       ImageCapability::kYes, "image_to_text", "image keys: vision_config, image_token_id"},
      {R"({"architectures":["LlavaForConditionalGeneration"],"image_token_index":32000})", ImageCapability::kYes,
       "image_to_text", "image_token_index"},
      {R"({"architectures":["InternVLChatModel"],"vision_config":{"a":1}})", ImageCapability::kYes, "image_to_text",
       "InternVLChatModel"},
      {R"({"architectures":["LlamaForCausalLM"],"model_type":"llama"})", ImageCapability::kNo, "text_generation",
       "no vision/audio/dflash config"},
      // Image keys whose values are not meaningful do not count.
      {R"({"architectures":["Qwen2ForCausalLM"],"vision_config":null,"image_token_id":false,"image_grid_pinpoints":[]})",
       ImageCapability::kNo, "text_generation", "generative architecture: Qwen2ForCausalLM"},
      {R"({"architectures":["Qwen2ForCausalLM"],"speculators_model_type":"eagle3"})", ImageCapability::kNo,
       "speculative_drafter", "speculators_model_type"},
      {R"({"architectures":["Qwen3Model"],"mlx_embeddings":{"kind":"embedding"}})", ImageCapability::kNo, "embedding",
       "mlx_embeddings.kind"},
      {R"({"model_type":"xlm-roberta","architectures":["XLMRobertaModel"]})", ImageCapability::kNo, "reranker",
       "model_type"},
      {R"({"architectures":["Qwen3ForSequenceClassification"]})", ImageCapability::kNo, "reranker",
       "ForSequenceClassification"},
      {R"({"unet_config":{"x":1}})", ImageCapability::kNo, "image_generation", "unet_config"},
      {R"({"architectures":["CLIPModel"],"vision_config":{"a":1}})", ImageCapability::kNo, "image_non_generative",
       "non-text-generating"},
      {R"({"architectures":["ViTForImageClassification"]})", ImageCapability::kNo, "image_non_generative",
       "ViTForImageClassification"},
      {R"({"architectures":["Qwen2AudioForConditionalGeneration"],"audio_config":{"a":1}})", ImageCapability::kNo,
       "audio_to_text", "audio keys: audio_config"},
      {R"({"architectures":["SomethingModel"],"vision_config":{"a":1}})", ImageCapability::kUnknown, "unknown",
       "image keys: vision_config"},
      {R"({"model_type":"mystery"})", ImageCapability::kUnknown, "unknown", "no architectures listed"},
      {R"({"architectures":["Qwen3ForCausalLM"],"dflash_config":{"a":1}})", ImageCapability::kUnknown, "unknown",
       "dflash_config"},
  };
  for (const auto& c : cases) {
    CapabilityVerdict v = classify(c.config);
    EXPECT_EQ(v.verdict, c.want) << c.config;
    EXPECT_EQ(v.purpose, c.purpose) << c.config;
    EXPECT_TRUE(has_evidence(v, c.evidence)) << c.config << " lacks evidence '" << c.evidence << "'";
  }
  // model_index.json wins over everything; no config means unknown.
  Json vlm_config = Json::parse(R"({"architectures":["LlavaForConditionalGeneration"],"vision_config":{"a":1}})");
  EXPECT_EQ(classify_image_capability(&vlm_config, true).verdict, ImageCapability::kNo);
  CapabilityVerdict none = classify_image_capability(nullptr, false, "absent");
  EXPECT_EQ(none.verdict, ImageCapability::kUnknown);
  EXPECT_TRUE(has_evidence(none, "absent"));
}

TEST(Discovery, VlmRepoPassesWithEvidenceSizeDtypeAndQuantization) {
  TempDir cache;
  FakeRepo r(cache.path(), "mlx-community/Qwen2-VL-2B-Instruct-4bit");
  std::string config = R"({"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
    "vision_config": {"depth": 2}, "image_token_id": 151655, "torch_dtype": "float32",
    "quantization": {"group_size": 64, "bits": 4, "language_model.lm_head": false}})";
  std::string shard1 = st_build({st_random("a.weight", "U32", {8, 2}, 1), st_random("a.scales", "BF16", {8, 1}, 2),
                                 st_random("v.weight", "BF16", {16, 16}, 3)});
  std::string shard2 = st_build({st_random("b", "F32", {4}, 4)});
  std::string index = R"({"weight_map": {"a.weight": "model-1.safetensors", "a.scales": "model-1.safetensors",
    "v.weight": "model-1.safetensors", "b": "model-2.safetensors"}})";
  std::string tok = "{}";
  r.add_file(kMain, "config.json", config);
  r.add_file(kMain, "tokenizer_config.json", tok);
  r.add_file(kMain, "model-1.safetensors", shard1);
  r.add_file(kMain, "model-2.safetensors", shard2);
  r.add_file(kMain, "model.safetensors.index.json", index);
  r.add_file(kMain, "copy-of-config.json", config);  // same blob: counted once on disk
  r.set_ref("main", kMain);
  // An older snapshot does not count towards the main snapshot's size.
  r.add_file(fake_sha("0ld"), "config.json", "{\"old\": true}");

  DiscoveredModel m = discover_repo(r.path());
  EXPECT_EQ(m.repo_id, "mlx-community/Qwen2-VL-2B-Instruct-4bit");
  EXPECT_EQ(m.revision, kMain);
  EXPECT_EQ(m.snapshot, r.snapshot(kMain));
  EXPECT_TRUE(m.layout_supported) << (m.layout_reasons.empty() ? "" : m.layout_reasons[0]);
  EXPECT_EQ(m.capability.verdict, ImageCapability::kYes);
  EXPECT_EQ(m.capability.purpose, "image_to_text");
  EXPECT_TRUE(has_evidence(m.capability, "vision_config"));
  EXPECT_TRUE(m.selected());
  EXPECT_TRUE(m.skip_reasons().empty());
  EXPECT_EQ(m.model_type, "qwen2_vl");
  EXPECT_EQ(m.size_bytes,
            static_cast<int64_t>(config.size() + tok.size() + shard1.size() + shard2.size() + index.size()));
  EXPECT_EQ(m.dtype, "bf16");  // from the weights (bf16 outweighs f32), not the stale config
  EXPECT_EQ(m.quantization, "affine 4-bit g64, 1 module override");
}

TEST(Discovery, TextOnlyEmbeddingAndRerankerAreSkippedWithReasons) {
  TempDir cache;
  // The repo name says VL; names are never evidence.
  auto text = make_model(cache.path(), "someone/Looks-Like-Qwen2-VL",
                         R"({"model_type":"qwen2","architectures":["Qwen2ForCausalLM"],"torch_dtype":"bfloat16"})");
  auto emb = make_model(cache.path(), "mlx-community/embed",
                        R"({"model_type":"qwen3","architectures":["Qwen3Model"],"mlx_embeddings":{"kind":"embedding"}})");
  auto rr = make_model(cache.path(), "BAAI/reranker", R"({"model_type":"xlm-roberta","architectures":["XLMRobertaForSequenceClassification"]})");
  auto all = discover_models(cache.path());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].repo_id, "BAAI/reranker");  // code-point order
  EXPECT_EQ(all[0].capability.purpose, "reranker");
  EXPECT_EQ(all[1].capability.purpose, "embedding");
  EXPECT_EQ(all[2].repo_id, "someone/Looks-Like-Qwen2-VL");
  for (const auto& m : all) {
    EXPECT_TRUE(m.layout_supported);
    EXPECT_EQ(m.capability.verdict, ImageCapability::kNo);
    EXPECT_FALSE(m.selected());
    ASSERT_EQ(m.skip_reasons().size(), 1u);
    EXPECT_NE(m.skip_reasons()[0].find("image capability: no"), std::string::npos);
  }
  EXPECT_EQ(all[2].capability.purpose, "text_generation");
  EXPECT_EQ(all[2].dtype, "bf16");
}

TEST(Discovery, DiffusersPipelineAndLayoutFailures) {
  TempDir cache;
  FakeRepo sd(cache.path(), "stabilityai/sd");
  sd.add_file(kMain, "model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
  sd.add_file(kMain, "unet/config.json", R"({"sample_size": 64})");
  sd.add_file(kMain, "unet/diffusion_pytorch_model.safetensors", st_build({st_random("w", "F16", {2}, 1)}));
  sd.set_ref("main", kMain);
  DiscoveredModel m = discover_repo(sd.path());
  EXPECT_EQ(m.capability.verdict, ImageCapability::kNo);
  EXPECT_EQ(m.capability.purpose, "image_generation");
  EXPECT_TRUE(has_reason(m, "cache layout: missing tokenizer_config.json"));
  EXPECT_FALSE(has_reason(m, "missing config.json"));  // basenames count recursively, like scan_cache_dir
  EXPECT_FALSE(has_reason(m, "safetensors"));

  FakeRepo noref(cache.path(), "a/no-main");
  noref.add_file(kMain, "config.json", "{}");
  noref.set_ref("dev", kMain);
  m = discover_repo(noref.path());
  EXPECT_TRUE(has_reason(m, "no main ref"));
  EXPECT_FALSE(m.layout_supported);
  EXPECT_EQ(m.capability.verdict, ImageCapability::kUnknown);

  FakeRepo noweights(cache.path(), "a/gguf-only");
  noweights.add_file(kMain, "config.json", R"({"architectures":["LlavaForConditionalGeneration"],"vision_config":{"a":1}})");
  noweights.add_file(kMain, "tokenizer_config.json", "{}");
  noweights.add_file(kMain, "model.gguf", "GGUF");
  noweights.set_ref("main", kMain);
  m = discover_repo(noweights.path());
  EXPECT_TRUE(has_reason(m, "no safetensors weights"));
  EXPECT_EQ(m.capability.verdict, ImageCapability::kYes);  // capability is judged independently
  EXPECT_FALSE(m.selected());

  FakeRepo ds(cache.path(), "org/images", "datasets");
  m = discover_repo(ds.path());
  EXPECT_TRUE(has_reason(m, "repo type is dataset"));

  FakeRepo stale(cache.path(), "a/stale-main");
  stale.set_ref("main", fake_sha("ff"));
  m = discover_repo(stale.path());
  EXPECT_TRUE(has_reason(m, "has no snapshot folder"));
}

TEST(Discovery, EscapingConfigLinkIsRefusedAndNotRead) {
  TempDir cache;
  write_file(cache / "elsewhere/config.json",
             R"({"architectures":["LlavaForConditionalGeneration"],"vision_config":{"a":1}})");
  FakeRepo r(cache.path(), "evil/repo");
  r.add_link(kMain, "config.json", "../../../elsewhere/config.json");
  r.add_file(kMain, "tokenizer_config.json", "{}");
  r.add_file(kMain, "model.safetensors", st_build({st_random("w", "F32", {1}, 1)}));
  r.set_ref("main", kMain);
  DiscoveredModel m = discover_repo(r.path());
  EXPECT_TRUE(has_reason(m, "config.json is a symlink pointing outside the repo folder (refused)"));
  EXPECT_TRUE(has_reason(m, "missing config.json"));
  EXPECT_EQ(m.capability.verdict, ImageCapability::kUnknown);  // the outside file was not read
  EXPECT_TRUE(has_evidence(m.capability, "outside the repo folder"));
}

TEST(Discovery, BoundedJsonReads) {
  TempDir cache;
  auto r = make_model(cache.path(), "big/config", "{}");
  // Replace config.json's blob by a (sparse) 17 MiB file: too big to read.
  std::string target = std::filesystem::canonical(r.snapshot(kMain) + "/config.json");
  ASSERT_EQ(::truncate(target.c_str(), 17 << 20), 0);
  DiscoveredModel m = discover_repo(r.path());
  EXPECT_EQ(m.capability.verdict, ImageCapability::kUnknown);
  EXPECT_TRUE(has_evidence(m.capability, "limit")) << m.capability.evidence[0];

  auto bad = make_model(cache.path(), "bad/json", "{\"architectures\": [");
  m = discover_repo(bad.path());
  EXPECT_EQ(m.capability.verdict, ImageCapability::kUnknown);
  EXPECT_TRUE(has_evidence(m.capability, "config.json")) << m.capability.evidence[0];
  std::string problem;
  EXPECT_FALSE(read_bounded_json(bad.path(), bad.snapshot(kMain) + "/absent.json", &problem));
  EXPECT_EQ(problem, "absent");
  EXPECT_TRUE(read_bounded_json(bad.path(), bad.snapshot(kMain) + "/tokenizer_config.json", &problem));
}
