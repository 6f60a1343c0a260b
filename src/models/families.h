// The built-in families' registration entry points, one per folder under src/models/. Each family
// registers its model_type values itself (a register_language_model call in its own folder); the
// registry calls these once, because static-initialiser self-registration is dropped by the linker when
// nothing else references a family's object file in the static library.
#pragma once

namespace vlm::families {

void register_llama();
void register_mistral();
void register_qwen2();
void register_qwen3();
void register_gemma();
void register_gemma2();
void register_gemma3();
void register_phi3();

}  // namespace vlm::families
