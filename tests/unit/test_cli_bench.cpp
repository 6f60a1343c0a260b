// `vlmcheck bench` image mode on the CPU: synthetic VLM checkpoints (the three VLM families of the bench
// shapes, shrunk to test size but written by the same write_synthetic_checkpoint: real tower/projector tensor
// names, configs, tokenizer, chat template, processor configs) benchmarked through the CLI with a synthetic
// photo. Checks the report's stages against each other and against `vlmcheck tokenize` (the same prompt
// through another command), the --prompt-tokens padding, the text mode on the same folder, and the refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/exit_codes.h"
#include "core/json.h"
#include "generate/benchmark.h"
#include "models/registry.h"
#include "support/test_support.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

// A bench VLM shape with a small decoder and tower (same family, same layout, same files).
SyntheticShape tiny(const std::string& name) {
  SyntheticShape s = find_synthetic_shape(name);
  Json& c = s.config;
  Json& v = s.vision_config;
  c["intermediate_size"] = 128;
  c["num_hidden_layers"] = 2;
  c["vocab_size"] = 512;
  if (s.vlm_type == "qwen2_5_vl") {
    // M-RoPE sections 16/24/24 need head_dim 128.
    c["hidden_size"] = 256;
    c["num_attention_heads"] = 2;
    c["num_key_value_heads"] = 1;
    v["depth"] = 2;
    v["hidden_size"] = 32;
    v["num_heads"] = 2;
    v["intermediate_size"] = 48;
    v["out_hidden_size"] = 256;
    v["fullatt_block_indexes"] = {1};
  } else {
    c["hidden_size"] = 64;
    c["num_attention_heads"] = 4;
    c["num_key_value_heads"] = 2;
    if (c.contains("head_dim")) c["head_dim"] = 16, c["query_pre_attn_scalar"] = 16;
    v["hidden_size"] = 32;
    v["num_hidden_layers"] = 2;
    v["num_attention_heads"] = 2;
    v["intermediate_size"] = 64;
    // Gemma 3: 224 px / 14 = 16 x 16 patches = its 256 tokens; SmolVLM: 64 px tiles of 16 patches.
    v["image_size"] = s.vlm_type == "gemma3" ? 224 : 64;
  }
  return s;
}

Json run_json(const std::vector<std::string>& args) {
  auto r = test::run_vlmcheck(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return Json::object();
  return Json::parse(r.out);
}

class BenchImage : public ::testing::TestWithParam<const char*> {};

TEST_P(BenchImage, ReportsEveryStageOfTheGenerateImagePath) {
  test::TempDir dir;
  const std::string folder = dir / "model";
  SyntheticOptions so;
  so.with_vision = true;
  write_synthetic_checkpoint(tiny(GetParam()), so, folder);

  Json r = run_json({"bench", "--model", folder, "--image-size", "96x64", "--gen-tokens", "3", "--repetitions", "2",
                     "--device", "cpu", "--threads", "2", "--work-dir", dir / "work", "--keep", "--json"});
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r["mode"], "image");
  EXPECT_EQ(r["image"]["width"], 96);
  EXPECT_EQ(r["image"]["height"], 64);
  EXPECT_GT(r["vision_weight_bytes"].get<int64_t>(), 0);
  const int64_t image_tokens = r["image_tokens"], text_tokens = r["text_tokens"], prompt = r["prompt_tokens"];
  EXPECT_GT(image_tokens, 0);
  EXPECT_GT(text_tokens, 0);
  EXPECT_EQ(image_tokens + text_tokens, prompt);
  EXPECT_EQ(r["image"]["image_tokens"], image_tokens);
  if (std::string(GetParam()) == "gemma-3-4b") {
    EXPECT_EQ(image_tokens, 256);  // config mm_tokens_per_image
  }

  // Every stage ran and TTFT spans them all (it also counts the cache setup, so it is at least their sum).
  const Json& st = r["stages"];
  double stage_sum = 0;
  for (const char* k : {"tokenize_s", "image_preprocess_s", "vision_encode_s", "prefill_s"}) {
    EXPECT_GT(st[k].get<double>(), 0.0) << k;
    stage_sum += st[k].get<double>();
  }
  ASSERT_EQ(r["samples"].size(), 2u);
  for (const Json& s : r["samples"]) {
    double sum = 0;
    for (const char* k : {"tokenize_s", "image_preprocess_s", "vision_encode_s", "prefill_s"}) {
      EXPECT_GT(s[k].get<double>(), 0.0) << k;
      sum += s[k].get<double>();
    }
    EXPECT_GE(s["ttft_s"].get<double>(), sum * (1 - 1e-9));
    EXPECT_GT(s["decode_s"].get<double>(), 0.0);
  }
  EXPECT_GE(r["ttft_s"].get<double>(), 0.5 * stage_sum);  // medians of different samples
  EXPECT_GT(r["prompt_tps"].get<double>(), 0.0);
  EXPECT_GT(r["generation_tps"].get<double>(), 0.0);
  EXPECT_EQ(r["gen_tokens"], 3);

  // The same prompt through `vlmcheck tokenize` (prepare_prompt from another command) has as many ids.
  const std::string photo = dir / "work/vlmcheck-bench-photo-96x64.jpg";
  ASSERT_TRUE(fs::exists(photo)) << "--keep keeps the synthetic photo";
  Json tok = run_json({"tokenize", "--model", folder, "--image", photo, "--prompt", "Describe this image.", "--json"});
  ASSERT_FALSE(tok.empty());
  EXPECT_EQ(static_cast<int64_t>(tok["ids"].size()), prompt);

  // --prompt-tokens pads the text: every byte is one token of the synthetic tokenizer, so the count is exact.
  Json padded = run_json({"bench", "--model", folder, "--image", photo, "--prompt-tokens", std::to_string(prompt + 150),
                          "--gen-tokens", "2", "--repetitions", "1", "--device", "cpu", "--json"});
  ASSERT_FALSE(padded.empty());
  EXPECT_EQ(padded["prompt_tokens"], prompt + 150);
  EXPECT_EQ(padded["image_tokens"], image_tokens);
  EXPECT_EQ(padded["text_tokens"], text_tokens + 150);

  // Below the image prompt's own length: refused, naming both counts.
  auto small = test::run_vlmcheck({"bench", "--model", folder, "--image", photo, "--prompt-tokens", "3",
                                   "--gen-tokens", "2", "--repetitions", "1", "--device", "cpu"});
  EXPECT_EQ(small.exit_code, cli::kExitUsage) << small.err;
  EXPECT_NE(small.err.find("--prompt-tokens 3 is below the " + std::to_string(prompt) + " tokens"), std::string::npos)
      << small.err;

  // Text mode on the VLM folder: the language model alone, the report without the image additions.
  Json text = run_json({"bench", "--model", folder, "--prompt-tokens", "16", "--gen-tokens", "2", "--repetitions",
                        "1", "--device", "cpu", "--json"});
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text["mode"], "text");
  EXPECT_EQ(text["prompt_tokens"], 16);
  EXPECT_FALSE(text.contains("stages"));
  EXPECT_FALSE(text.contains("image_tokens"));
}

INSTANTIATE_TEST_SUITE_P(Families, BenchImage, ::testing::Values("qwen2.5-vl-3b", "gemma-3-4b", "smolvlm-256m"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

// The real-shape SmolVLM-256M VLM checkpoint (tower, connector, 4-bit decoder) loads with every tensor the
// loaders ask for, the tower and connector bf16 and the decoder quantized (as mlx-community's conversions).
TEST(BenchSynthetic, SmolVlm256mWithVisionLoadsAtItsRealShape) {
  test::TempDir dir;
  SyntheticOptions so;
  so.with_vision = true;
  so.quant = AffineQuantSpec{4, 64};
  const SyntheticShape& shape = find_synthetic_shape("smolvlm-256m");
  write_synthetic_checkpoint(shape, so, dir / "m");
  LoadOptions lo;
  lo.mode = LoadMode::kLazy;
  LoadedModel m = load_model(dir / "m", lo);
  ASSERT_NE(m.vision, nullptr);
  // SigLIP base at 512 px: per layer 4 d² + 2 d·i weights plus biases and norms; embeddings, post norm, and the
  // [576, 768·16] connector; every tensor bf16 (2 bytes).
  const int64_t d = 768, i = 3072, layers = 12, patches = 1024, text = 576;
  const int64_t per_layer = 4 * d * d + 4 * d + 2 * d * i + i + d + 4 * d;
  const int64_t params = layers * per_layer + 3 * 16 * 16 * d + d + patches * d + 2 * d + text * d * 16;
  EXPECT_EQ(static_cast<int64_t>(m.vision->weight_bytes()), 2 * params);
  EXPECT_EQ(m.language_model->hidden_size(), text);
  // The decoder is the 4-bit one: 4 bits per weight plus a bf16 scale and bias per 64 (4.5 bits) of its
  // 30 layers (q, o 576²; k, v 576·192; three 576·1536 MLP matrices), embedding and untied head (49280·576).
  const int64_t lm_params = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) + 2 * 49280 * 576;
  const auto lm_bytes = static_cast<double>(m.language_model->weight_bytes());
  EXPECT_GT(lm_bytes, lm_params * 4.5 / 8);
  EXPECT_LT(lm_bytes, lm_params * 4.5 / 8 * 1.01);  // + the norms (bf16), a fraction of a percent
}

// --kv-bits / --kv-group-size / --quantized-kv-start / --max-kv-size build the cache generate builds, and the
// decode roofline counts the K/V bytes that cache holds: f32 rows before the conversion, codes + f32 scale
// and bias per group after it, capped by a rotating cache's size.
TEST(BenchSynthetic, KvCacheFlagsShapeTheCacheAndTheRooflineBytes) {
  test::TempDir dir;
  const SyntheticShape shape = tiny("qwen2.5-vl-3b");  // 2 layers, 1 kv head of 128
  write_synthetic_checkpoint(shape, SyntheticOptions{}, dir / "m");
  auto bench = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"bench", "--model", dir / "m", "--device", "cpu", "--prompt-tokens", "16",
                                  "--gen-tokens", "4", "--repetitions", "1", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_json(args);
  };
  // Step g attends over 16 + g + 1 rows of 2 layers x K and V x 128 values.
  auto kv_bytes = [](std::vector<int64_t> rows, std::vector<double> bytes_per_value) {
    double total = 0;
    for (size_t g = 0; g < rows.size(); ++g) total += 2.0 * 2.0 * 128.0 * static_cast<double>(rows[g]) * bytes_per_value[g];
    return static_cast<int64_t>(std::llround(total / static_cast<double>(rows.size())));
  };

  Json plain = bench({});
  ASSERT_TRUE(plain.is_object());
  EXPECT_EQ(plain["kv_cache"], "standard");
  const int64_t weights = plain["weight_bytes"];
  EXPECT_EQ(plain["decode_bytes_per_token"].get<int64_t>() - weights, kv_bytes({17, 18, 19, 20}, {4, 4, 4, 4}));

  // Converted after the step whose offset reached 18: steps 2 and 3 read 4-bit codes + 8 bytes per 32 values.
  Json quant = bench({"--kv-bits", "4", "--kv-group-size", "32", "--quantized-kv-start", "18"});
  ASSERT_TRUE(quant.is_object());
  EXPECT_EQ(quant["kv_cache"], "standard quantized(4-bit, g32, from 18)");
  const double q4 = 0.5 + 8.0 / 32;
  EXPECT_EQ(quant["decode_bytes_per_token"].get<int64_t>() - weights, kv_bytes({17, 18, 19, 20}, {4, 4, q4, q4}));
  EXPECT_GT(quant["generation_tps"].get<double>(), 0);

  Json rotating = bench({"--max-kv-size", "12"});
  ASSERT_TRUE(rotating.is_object());
  EXPECT_EQ(rotating["kv_cache"], "rotating(12, keep 4)");
  EXPECT_EQ(rotating["decode_bytes_per_token"].get<int64_t>() - weights, kv_bytes({12, 12, 12, 12}, {4, 4, 4, 4}));

  for (std::vector<std::string> bad : {std::vector<std::string>{"--kv-bits", "7"}, {"--kv-group-size", "48"},
                                       {"--quantized-kv-start", "-1"}, {"--max-kv-size", "2"}}) {
    std::vector<std::string> args{"bench", "--model", dir / "m", "--device", "cpu", "--json"};
    args.insert(args.end(), bad.begin(), bad.end());
    auto r = test::run_vlmcheck(args);
    EXPECT_EQ(r.exit_code, cli::kExitUsage) << bad[0] << ": " << r.err;
    EXPECT_NE(r.err.find(bad[0]), std::string::npos) << r.err;
  }
}

TEST(BenchSynthetic, ImageModeRefusesTextShapesAndBadSizes) {
  test::TempDir dir;
  auto text_shape = test::run_vlmcheck({"bench", "--synthetic", "qwen2.5-0.5b", "--image-size", "64x64", "--device",
                                        "cpu", "--work-dir", dir / ""});
  EXPECT_EQ(text_shape.exit_code, cli::kExitUsage) << text_shape.err;
  EXPECT_NE(text_shape.err.find("qwen2.5-0.5b is a text model"), std::string::npos) << text_shape.err;
  auto bad = test::run_vlmcheck({"bench", "--synthetic", "smolvlm-256m", "--image-size", "64by64", "--device", "cpu",
                                 "--work-dir", dir / ""});
  EXPECT_EQ(bad.exit_code, cli::kExitUsage) << bad.err;
  EXPECT_NE(bad.err.find("64by64"), std::string::npos) << bad.err;
  auto both = test::run_vlmcheck({"bench", "--synthetic", "smolvlm-256m", "--image-size", "64x64", "--image", "x.jpg",
                                  "--device", "cpu", "--work-dir", dir / ""});
  EXPECT_EQ(both.exit_code, cli::kExitUsage) << both.err;
}

}  // namespace
}  // namespace vlm
