// Qwen3: Qwen2's layout without q/k/v biases (attention_bias, default false) and with per-head RMSNorm
// on queries and keys (q_norm / k_norm over head_dim) before RoPE.
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/registry.h"

namespace vlm::families {

void qwen_legacy_windows(DecoderSpec& spec, const Json& text, const std::string& what);  // qwen2/qwen2.cpp

void register_qwen3() {
  register_language_model({"qwen3"}, [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
    const Json& text = config.text();
    DecoderSpec spec = read_common_spec(text, "qwen3", config.path);
    spec.qk_norm = true;
    qwen_legacy_windows(spec, text, config.path);
    return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
  });
}

}  // namespace vlm::families
