// Qwen2 / Qwen2.5: Llama's decoder with biases on q/k/v (not on o_proj). Sliding windows only when
// use_sliding_window is true, on layers >= max_window_layers (transformers' rule for configs without
// layer_types).
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/registry.h"

namespace vlm::families {

void qwen_legacy_windows(DecoderSpec& spec, const Json& text, const std::string& what) {
  if (!json_bool(text, "use_sliding_window", what).value_or(false)) return;
  const int64_t from = json_int(text, "max_window_layers", what).value_or(0);
  apply_legacy_windows(spec, text, [from](int i) { return i >= from; }, what);
}

void register_qwen2() {
  register_language_model({"qwen2"}, [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
    const Json& text = config.text();
    DecoderSpec spec = read_common_spec(text, "qwen2", config.path);
    spec.qkv_bias = true;
    spec.o_bias = false;
    qwen_legacy_windows(spec, text, config.path);
    return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
  });
}

}  // namespace vlm::families
