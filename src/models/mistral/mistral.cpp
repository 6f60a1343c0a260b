// Mistral: Llama's decoder with a sliding attention window on every layer when `sliding_window` is set
// (null in Mistral v0.2+ configs = full attention).
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/registry.h"

namespace vlm::families {

void register_mistral() {
  register_language_model({"mistral"}, [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
    DecoderSpec spec = read_common_spec(config.text(), "mistral", config.path);
    apply_legacy_windows(spec, config.text(), [](int) { return true; }, config.path);
    return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
  });
}

}  // namespace vlm::families
