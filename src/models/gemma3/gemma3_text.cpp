// Gemma 3 text decoder: Gemma 2's layer plus QK-norm ((1 + w) RMSNorm per head), with local (sliding) and
// global layers interleaved. Both config layouts:
//   transformers 5: layer_types + rope_parameters per layer type ({"sliding_attention": {...},
//                   "full_attention": {...}});
//   older Hub:      sliding_window_pattern P (layer i is local iff (i + 1) % P != 0) + rope_theta and
//                   rope_scaling for global layers + rope_local_base_freq (unscaled) for local ones.
#include "core/error.h"
#include "models/families.h"
#include "models/gemma/gemma_common.h"
#include "models/registry.h"

namespace vlm::families {

namespace {

DecoderSpec gemma3_spec(const Json& text, const std::string& what) {
  // read_common_spec parses per-layer-type rope_parameters when layer_types exists; the legacy layout
  // is rebuilt below.
  DecoderSpec spec = read_common_spec(text, "gemma3_text", what);
  apply_gemma_basics(spec, text, what);
  apply_gemma2_attention(spec, text, what);
  spec.qk_norm = true;
  // transformers' Gemma 3 attention never passes attn_logit_softcapping to its attention function (the
  // field exists in the config, null in released checkpoints), so the reference does not cap scores.
  spec.attn_softcap = 0.0f;
  const int64_t n = static_cast<int64_t>(spec.layers.size());
  std::vector<std::string> types = read_layer_types(text, n, what);
  if (types.empty()) {
    const int64_t pattern = json_int(text, "sliding_window_pattern", what).value_or(6);
    VLM_CHECK(pattern > 0, ErrorKind::kFormat, "{}: sliding_window_pattern must be positive", what);
    for (int64_t i = 0; i < n; ++i) types.push_back((i + 1) % pattern != 0 ? "sliding_attention" : "full_attention");
    apply_legacy_windows(spec, text, [&](int i) { return types[static_cast<size_t>(i)] == "sliding_attention"; },
                         what);
  }
  const Json* rp = json_find(text, "rope_parameters");
  const bool per_type = rp && rp->is_object() && !json_find(*rp, "rope_type") && !json_find(*rp, "rope_theta");
  for (int64_t i = 0; i < n; ++i) {
    const std::string& type = types[static_cast<size_t>(i)];
    RopeOverrides ov;
    if (per_type) {
      ov.layer_type = type;
    } else if (type == "sliding_attention") {
      ov.theta = json_number(text, "rope_local_base_freq", what).value_or(10000.0);
      ov.ignore_scaling = true;
    }
    spec.layers[static_cast<size_t>(i)].rope = parse_rope(text, spec.head_dim, ov, what);
  }
  return spec;
}

}  // namespace

void register_gemma3() {
  register_language_model({"gemma3_text"},
                          [](const ModelConfig& config, const Checkpoint& ckpt, const LoadOptions& opt) {
                            DecoderSpec spec = gemma3_spec(config.text(), config.path);
                            return std::make_unique<DecoderModel>(std::move(spec), config, ckpt, opt.adapter_path);
                          });
}

}  // namespace vlm::families
