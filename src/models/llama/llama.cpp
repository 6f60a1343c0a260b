// Llama (1/2/3/3.x, SmolLM): the plain pre-norm decoder — SwiGLU MLP, RMSNorm, RoPE with the config's
// scaling (default, linear, llama3), optional attention/MLP biases, optional tied head.
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/registry.h"

namespace vlm::families {

void register_llama() {
  register_language_model({"llama"}, [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
    DecoderSpec spec = read_common_spec(config.text(), "llama", config.path);
    return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
  });
}

}  // namespace vlm::families
