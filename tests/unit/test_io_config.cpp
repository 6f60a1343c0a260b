// Config parsing: config.json in the nested (transformers 5) and flat (Hub) layouts, MLX
// quantization with per-module overrides, generation/processor/tokenizer configs, and malformed or
// unreadable files giving errors that name the file and field.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include "core/error.h"
#include "io/config.h"
#include "support/test_support.h"

using namespace vlm;
using namespace vlm::test;

namespace {
template <typename Fn>
std::string error_of(Fn&& fn, ErrorKind kind) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}
}  // namespace

TEST(ModelConfig, NestedLayoutWithMlxMixedQuantization) {
  TempDir dir;
  // As mlx-vlm writes a mixed-precision Qwen2.5-VL: the dict twice, overrides keyed by module path.
  std::string q = R"({"group_size": 64, "bits": 4,
      "language_model.model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8},
      "language_model.model.layers.1.mlp.down_proj": {"bits": 6},
      "language_model.lm_head": false})";
  write_file(dir / "config.json", R"({"model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "eos_token_id": [151645, 151643], "dtype": "bfloat16",
    "text_config": {"hidden_size": 64, "eos_token_id": 151643, "model_type": "qwen2_5_vl_text"},
    "vision_config": {"depth": 2, "hidden_size": 32},
    "quantization": )" + q + R"(, "quantization_config": )" + q + "}");
  ModelConfig c = ModelConfig::load(dir / "config.json");
  EXPECT_EQ(c.path, dir / "config.json");
  EXPECT_EQ(c.model_type, "qwen2_5_vl");
  EXPECT_EQ(c.architectures, std::vector<std::string>{"Qwen2_5_VLForConditionalGeneration"});
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{151645, 151643}));  // merged, no duplicates
  EXPECT_EQ(c.text()["hidden_size"], 64);
  EXPECT_TRUE(c.has_vision());
  EXPECT_EQ(c.vision()["depth"], 2);

  const QuantizationConfig& qc = c.quantization;
  EXPECT_TRUE(qc.present);
  EXPECT_EQ(qc.mode, "affine");  // absent mode means affine
  EXPECT_EQ(qc.default_spec, (AffineQuantSpec{4, 64}));
  EXPECT_EQ(qc.overrides.size(), 3u);
  EXPECT_EQ(qc.spec_for("language_model.model.layers.0.mlp.down_proj"), (AffineQuantSpec{8, 32}));
  EXPECT_EQ(qc.spec_for("language_model.model.layers.1.mlp.down_proj"), (AffineQuantSpec{6, 64}));
  EXPECT_EQ(qc.spec_for("language_model.lm_head"), std::nullopt);
  EXPECT_EQ(qc.spec_for("language_model.model.layers.5.mlp.up_proj"), (AffineQuantSpec{4, 64}));
}

TEST(ModelConfig, FlatOlderLayoutAndQuantizationConfigOnly) {
  TempDir dir;
  write_file(dir / "config.json", R"({"model_type": "qwen2_vl", "hidden_size": 1536, "torch_dtype": "float16",
    "eos_token_id": 151645, "vision_config": {"depth": 32},
    "quantization_config": {"group_size": 32, "bits": 8, "mode": "affine"}})");
  ModelConfig c = ModelConfig::load(dir / "config.json");
  EXPECT_EQ(c.text()["hidden_size"], 1536);  // flat: the text config is the root
  EXPECT_EQ(&c.text(), &c.raw);
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_TRUE(c.quantization.present);
  EXPECT_EQ(c.quantization.default_spec, (AffineQuantSpec{8, 32}));
  EXPECT_TRUE(c.quantization.overrides.empty());
}

TEST(ModelConfig, TextOnlyUnquantizedAndNonMlxQuantization) {
  TempDir dir;
  write_file(dir / "config.json", R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vision_config": null})");
  ModelConfig c = ModelConfig::load(dir / "config.json");
  EXPECT_FALSE(c.has_vision());
  EXPECT_TRUE(c.vision().is_null());
  EXPECT_FALSE(c.quantization.present);
  EXPECT_EQ(c.quantization.spec_for("model.layers.0.mlp.up_proj"), std::nullopt);
  EXPECT_FALSE(c.torch_dtype.has_value());

  write_file(dir / "config.json", R"({"model_type": "llama", "quantization_config":
    {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": false, "sym": true}})");
  c = ModelConfig::load(dir / "config.json");
  EXPECT_TRUE(c.quantization.present);
  EXPECT_EQ(c.quantization.mode, "gptq");  // kept so a loader can refuse it by name
  EXPECT_TRUE(c.quantization.overrides.empty());
}

TEST(ModelConfig, MalformedOrUnreadable) {
  TempDir dir;
  std::string p = dir / "config.json";
  std::string msg = error_of([&] { ModelConfig::load(p); }, ErrorKind::kNotFound);
  EXPECT_NE(msg.find(p), std::string::npos);

  write_file(p, R"({"model_type": "llava", )");
  msg = error_of([&] { ModelConfig::load(p); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find(p), std::string::npos);

  write_file(p, "[1, 2]");
  msg = error_of([&] { ModelConfig::load(p); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("object"), std::string::npos) << msg;

  write_file(p, R"({"model_type": 7})");
  msg = error_of([&] { ModelConfig::load(p); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("model_type"), std::string::npos) << msg;

  write_file(p, R"({"architectures": "LlavaForConditionalGeneration"})");
  msg = error_of([&] { ModelConfig::load(p); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("architectures"), std::string::npos) << msg;

  write_file(p, R"({"eos_token_id": ["</s>"]})");
  msg = error_of([&] { ModelConfig::load(p); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("eos_token_id"), std::string::npos) << msg;

  write_file(p, R"({"quantization": {"bits": "four"}})");
  msg = error_of([&] { ModelConfig::load(p); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("bits"), std::string::npos) << msg;

  // A config that exists but cannot be read (a directory in its place).
  TempDir d2;
  ::mkdir((d2 / "config.json").c_str(), 0755);
  msg = error_of([&] { ModelConfig::load(d2 / "config.json"); }, ErrorKind::kIo);
  EXPECT_NE(msg.find(d2 / "config.json"), std::string::npos) << msg;
}

TEST(GenerationConfig, AbsentPresentAndMalformed) {
  TempDir dir;
  GenerationConfig g = GenerationConfig::load_if_present(dir / "generation_config.json");
  EXPECT_TRUE(g.eos_token_ids.empty());
  EXPECT_FALSE(g.temperature.has_value());

  write_file(dir / "generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [1, 106], "pad_token_id": 0,
    "do_sample": true, "temperature": 0.7, "top_p": 0.95, "top_k": 64, "repetition_penalty": 1.05})");
  g = GenerationConfig::load_if_present(dir / "generation_config.json");
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{1, 106}));
  EXPECT_EQ(g.bos_token_id, 1);
  EXPECT_EQ(g.pad_token_id, 0);
  EXPECT_EQ(g.do_sample, true);
  EXPECT_DOUBLE_EQ(*g.temperature, 0.7);
  EXPECT_DOUBLE_EQ(*g.top_p, 0.95);
  EXPECT_EQ(g.top_k, 64);
  EXPECT_DOUBLE_EQ(*g.repetition_penalty, 1.05);

  write_file(dir / "generation_config.json", R"({"temperature": "hot"})");
  std::string msg =
      error_of([&] { GenerationConfig::load_if_present(dir / "generation_config.json"); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("generation_config.json"), std::string::npos);
  EXPECT_NE(msg.find("temperature"), std::string::npos);
}

TEST(ProcessorConfig, LegacyNestedAndBoth) {
  TempDir none;
  EXPECT_FALSE(ProcessorConfig::load_from_folder(none.path()).has_value());

  TempDir legacy;
  write_file(legacy / "preprocessor_config.json", R"({"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14})");
  auto p = ProcessorConfig::load_from_folder(legacy.path());
  ASSERT_TRUE(p);
  EXPECT_EQ(p->path, legacy / "preprocessor_config.json");
  EXPECT_EQ(p->image_processor["patch_size"], 14);

  TempDir nested;  // transformers 5 save_pretrained
  write_file(nested / "processor_config.json", R"({"image_seq_len": 64, "processor_class": "Idefics3Processor",
    "image_processor": {"size": {"longest_edge": 364}}, "video_processor": {"fps": 1}})");
  p = ProcessorConfig::load_from_folder(nested.path());
  ASSERT_TRUE(p);
  EXPECT_EQ(p->path, nested / "processor_config.json");
  EXPECT_EQ(p->image_processor["size"]["longest_edge"], 364);
  EXPECT_EQ(p->processor["image_seq_len"], 64);
  EXPECT_FALSE(p->processor.contains("video_processor"));

  // mlx-vlm folders can hold both; the nested image_processor wins, as in transformers.
  write_file(nested / "preprocessor_config.json", R"({"size": {"longest_edge": 999}})");
  p = ProcessorConfig::load_from_folder(nested.path());
  EXPECT_EQ(p->image_processor["size"]["longest_edge"], 364);

  // processor_config.json without an image_processor: processor fields from it, image fields legacy.
  TempDir split;
  write_file(split / "processor_config.json", R"({"image_seq_len": 81})");
  write_file(split / "preprocessor_config.json", R"({"do_resize": true})");
  p = ProcessorConfig::load_from_folder(split.path());
  EXPECT_EQ(p->path, split / "preprocessor_config.json");
  EXPECT_EQ(p->image_processor["do_resize"], true);
  EXPECT_EQ(p->processor["image_seq_len"], 81);

  write_file(split / "preprocessor_config.json", "{oops");
  std::string msg = error_of([&] { ProcessorConfig::load_from_folder(split.path()); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find(split / "preprocessor_config.json"), std::string::npos);
}

TEST(TokenizerConfig, StringsAndAddedTokenObjects) {
  TempDir none;
  EXPECT_FALSE(TokenizerConfig::load_from_folder(none.path()).has_value());

  TempDir dir;
  write_file(dir / "tokenizer_config.json", R"({"add_bos_token": true, "add_eos_token": false,
    "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
    "eos_token": "</s>", "pad_token": null, "unk_token": {"content": "<unk>"},
    "tokenizer_class": "LlamaTokenizer"})");
  auto t = TokenizerConfig::load_from_folder(dir.path());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->path, dir / "tokenizer_config.json");
  EXPECT_EQ(t->add_bos_token, true);
  EXPECT_EQ(t->add_eos_token, false);
  EXPECT_EQ(t->bos_token, "<s>");
  EXPECT_EQ(t->eos_token, "</s>");
  EXPECT_FALSE(t->pad_token.has_value());
  EXPECT_EQ(t->unk_token, "<unk>");
  EXPECT_EQ(t->tokenizer_class, "LlamaTokenizer");

  write_file(dir / "tokenizer_config.json", R"({"eos_token": 2})");
  std::string msg = error_of([&] { TokenizerConfig::load_from_folder(dir.path()); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("eos_token"), std::string::npos);
  EXPECT_NE(msg.find("tokenizer_config.json"), std::string::npos);
}
