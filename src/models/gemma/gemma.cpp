// Gemma (1): Llama's layout with Gemma's norms, embedding scale, GeGLU (tanh) MLP and a tied head.
#include <cmath>

#include "core/error.h"
#include "models/families.h"
#include "models/gemma/gemma_common.h"
#include "models/registry.h"

namespace vlm::families {

void apply_gemma_basics(DecoderSpec& spec, const Json& text, const std::string& what) {
  spec.norm_offset = 1.0f;
  spec.embed_scale = std::sqrt(static_cast<float>(spec.hidden_size));
  spec.tie_word_embeddings = json_bool(text, "tie_word_embeddings", what).value_or(true);
  const Json* act = json_find(text, "hidden_activation");
  std::string name = (act && act->is_string()) ? act->get<std::string>() : "gelu_pytorch_tanh";
  spec.activation = parse_activation(name, what + " hidden_activation");
}

void apply_gemma2_attention(DecoderSpec& spec, const Json& text, const std::string& what) {
  spec.sandwich_norms = true;
  const double scalar = json_number(text, "query_pre_attn_scalar", what).value_or(static_cast<double>(spec.head_dim));
  VLM_CHECK(scalar > 0, ErrorKind::kFormat, "{}: query_pre_attn_scalar must be positive", what);
  spec.attn_scale = static_cast<float>(1.0 / std::sqrt(scalar));
  auto cap = [&](const char* key) {
    const Json* j = json_find(text, key);
    return (j && j->is_number()) ? static_cast<float>(j->get<double>()) : 0.0f;
  };
  spec.attn_softcap = cap("attn_logit_softcapping");
  spec.final_softcap = cap("final_logit_softcapping");
}

void register_gemma() {
  register_language_model({"gemma"}, [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
    DecoderSpec spec = read_common_spec(config.text(), "gemma", config.path);
    apply_gemma_basics(spec, config.text(), config.path);
    return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
  });
}

}  // namespace vlm::families
