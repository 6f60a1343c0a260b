// Typed views of a checkpoint's JSON configs: config.json (with nested text_config / vision_config
// or the flat older layout), quantization / quantization_config with per-module overrides,
// generation_config.json, preprocessor_config.json / processor_config.json, tokenizer_config.json.
// The raw JSON stays available: family code reads its own fields from text() / vision().
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/quant.h"

namespace vlm {

// MLX quantization of a checkpoint: the default spec plus per-module overrides keyed by module path
// ("language_model.model.layers.0.mlp.down_proj": {bits, group_size} or false = not quantized).
struct QuantizationConfig {
  bool present = false;
  AffineQuantSpec default_spec;
  std::string mode = "affine";
  std::map<std::string, std::optional<AffineQuantSpec>> overrides;  // nullopt = explicitly unquantized
  // The spec for a module path: override if any, else the default. (Whether a module IS quantized is
  // decided by the presence of "<path>.scales" in the weights, per MLX's loader rule.)
  std::optional<AffineQuantSpec> spec_for(const std::string& module_path) const;
  // From a whole config.json object: "quantization", else "quantization_config". A non-MLX scheme
  // (quant_method gptq/awq/...) keeps its name in `mode` and has no overrides. `what` names the file.
  static QuantizationConfig from_config(const Json& config, const std::string& what);
  // "affine 4-bit g64", "affine 4-bit g64, 3 module overrides", "gptq 4-bit", "" when absent.
  std::string summary() const;
};

struct ModelConfig {
  std::string path;  // the config.json it came from
  Json raw;          // the whole config.json
  std::string model_type;
  std::vector<std::string> architectures;
  std::optional<std::string> torch_dtype;  // "bfloat16", ... (dtype or torch_dtype)
  QuantizationConfig quantization;
  std::vector<int64_t> eos_token_ids;  // config.json eos_token_id (int or list), also text_config's

  // The language model's config: raw["text_config"] when present (merged over nothing), else raw.
  const Json& text() const;
  // The vision config, or null JSON when absent.
  const Json& vision() const;
  bool has_vision() const;

  static ModelConfig load(const std::string& config_json_path);
};

struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id, pad_token_id;
  std::optional<double> temperature, top_p, repetition_penalty;
  std::optional<int64_t> top_k;
  std::optional<bool> do_sample;
  Json raw;
  // Absent file → empty config (not an error); malformed file → Error(kFormat) naming it.
  static GenerationConfig load_if_present(const std::string& path);
};

// preprocessor_config.json, or the "image_processor" object of processor_config.json (transformers 5).
struct ProcessorConfig {
  std::string path;
  Json image_processor;  // the image processor's fields (size, resample, image_mean, ...)
  Json processor;        // processor-level fields (image_seq_len, ...), may be empty
  static std::optional<ProcessorConfig> load_from_folder(const std::string& folder);
};

struct TokenizerConfig {
  std::string path;
  Json raw;
  std::optional<bool> add_bos_token, add_eos_token;
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;  // content strings
  std::optional<std::string> tokenizer_class;
  static std::optional<TokenizerConfig> load_from_folder(const std::string& folder);
};

}  // namespace vlm
