// Gemma 2: Gemma plus sandwich norms, attention and final-logit soft-capping, query_pre_attn_scalar, and
// sliding-window attention on alternating layers (layer_types, or even layers in older configs).
#include "models/families.h"
#include "models/gemma/gemma_common.h"
#include "models/registry.h"

namespace vlm::families {

void register_gemma2() {
  register_language_model({"gemma2"}, [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
    const Json& text = config.text();
    DecoderSpec spec = read_common_spec(text, "gemma2", config.path);
    apply_gemma_basics(spec, text, config.path);
    apply_gemma2_attention(spec, text, config.path);
    apply_legacy_windows(spec, text, [](int i) { return i % 2 == 0; }, config.path);
    return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
  });
}

}  // namespace vlm::families
