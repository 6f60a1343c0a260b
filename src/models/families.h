// The built-in families' registration entry points, one per folder under src/models/. Each family
// registers its model_type values itself (a register_language_model call in its own folder); the
// registry calls these once, because static-initialiser self-registration is dropped by the linker when
// nothing else references a family's object file in the static library.
#pragma once

#include <memory>
#include <string>

#include "models/registry.h"

namespace vlm::families {

void register_llama();
void register_mistral();
void register_qwen2();
void register_qwen3();
void register_gemma();
void register_gemma2();
void register_gemma3();
void register_phi3();
// Vision-language families: each registers its VLM model_type(s) for both the language model (the decoder
// of its text_config) and the vision model.
void register_llava();
void register_idefics3();
void register_gemma3_vlm();
void register_paligemma();
void register_qwen2_vl();

// The language model registered for `model_type`, built from `config` (a VLM builds its decoder with the
// factory of its text_config's model_type). Error(kUnsupported) when none is registered.
std::unique_ptr<LanguageModel> make_registered_language_model(const std::string& model_type,
                                                              const ModelConfig& config,
                                                              const Checkpoint& checkpoint,
                                                              const LoadOptions& options);

}  // namespace vlm::families
