// Rotary-embedding parameters from a text config, in both layouts transformers reads:
//   transformers 5: "rope_parameters": {"rope_type", "rope_theta", "factor", ...}, or one such dict per
//                   layer type ({"sliding_attention": {...}, "full_attention": {...}}, Gemma 3);
//   older Hub:      "rope_theta" + "rope_scaling": {"rope_type" | "type", "factor", ...} (+ family fields
//                   such as Gemma 3's rope_local_base_freq, passed in as overrides by the family).
// The result is the inverse-frequency table HF's rope initialisers compute (default, linear, dynamic NTK,
// llama3, yarn, longrope, and M-RoPE sections), ready for ops::rope / ops::mrope.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/json.h"

namespace vlm {

struct RopeTable {
  std::string rope_type = "default";
  double theta = 10000.0;
  int64_t rotary_dim = 0;          // dims of each head that rotate (partial_rotary_factor * head_dim)
  std::vector<float> inv_freq;     // [rotary_dim / 2]
  float attention_scaling = 1.0f;  // multiplies cos and sin (1 for the supported types)
  std::vector<int> mrope_section;  // non-empty: M-RoPE (t, h, w) sections over inv_freq
  // LongRoPE (Phi-3/3.5 "longrope", legacy "su"): inv_freq holds the short-factor table; a forward whose
  // largest position + 1 exceeds original_max_positions uses long_inv_freq instead (transformers'
  // dynamic update: the choice is made per forward call, already-cached keys keep their rotation).
  std::vector<float> long_inv_freq;
  int64_t original_max_positions = 0;
  // Dynamic NTK ("dynamic"): a forward whose largest position + 1 = L exceeds dynamic_max_positions uses
  // theta' = theta * (factor * L / max - (factor - 1))^(d / (d - 2)) (transformers recomputes per forward as
  // the sequence grows; already-cached keys keep their rotation).
  double dynamic_factor = 0.0;
  int64_t dynamic_max_positions = 0;

  // The frequencies for a forward whose largest position is max_position; `scratch` holds computed ones.
  const float* inv_freq_for(int64_t max_position, std::vector<float>& scratch) const;
};

struct RopeOverrides {
  std::optional<std::string> layer_type;  // pick rope_parameters[layer_type] when it is per layer type
  std::optional<double> theta;            // e.g. Gemma 3 rope_local_base_freq for sliding layers (legacy)
  bool ignore_scaling = false;            // legacy Gemma 3: rope_scaling applies to global layers only
};

// `what` names the config in errors. Throws Error(kUnsupported) naming the rope type when it is not
// implemented (dynamic, yarn, longrope), Error(kFormat) for missing/malformed fields.
RopeTable parse_rope(const Json& text_config, int64_t head_dim, const RopeOverrides& overrides,
                     const std::string& what);

}  // namespace vlm
