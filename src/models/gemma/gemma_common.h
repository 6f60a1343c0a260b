// What the Gemma generations share: (1 + w) RMSNorm, embeddings scaled by sqrt(hidden_size), a tied head
// by default, and the activation taken from hidden_activation (transformers ignores the legacy
// hidden_act "gelu" of the first Gemma configs and uses gelu_pytorch_tanh). Gemma 2 and 3 add the
// sandwich norms, query_pre_attn_scalar and the soft-caps.
#pragma once

#include <string>

#include "core/json.h"
#include "models/layers/decoder.h"

namespace vlm::families {

void apply_gemma_basics(DecoderSpec& spec, const Json& text, const std::string& what);
// Gemma 2/3: pre/post attention and feed-forward norms, attention scale query_pre_attn_scalar^-0.5,
// attn_logit_softcapping and final_logit_softcapping (null = off).
void apply_gemma2_attention(DecoderSpec& spec, const Json& text, const std::string& what);

}  // namespace vlm::families
