// Phi-3 / Phi-3.5 / Phi-4-mini text: fused projections — qkv_proj rows [q | k | v] and gate_up_proj rows
// [gate | up] — partial rotary when partial_rotary_factor < 1, and a sliding window on every layer when
// sliding_window is set.
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/registry.h"

namespace vlm::families {

void register_phi3() {
  register_language_model({"phi3"}, [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
    const Json& text = config.text();
    DecoderSpec spec = read_common_spec(text, "phi3", config.path);
    spec.fused_qkv = true;
    spec.fused_gate_up = true;
    apply_legacy_windows(spec, text, [](int) { return true; }, config.path);
    return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
  });
}

}  // namespace vlm::families
