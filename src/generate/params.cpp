// GenerationParams::validate: every knob's range, with messages that name the parameter and the
// value (the CLI turns these into exit code 2 and prints them as they are).
#include <cmath>

#include "core/error.h"
#include "generate/generate.h"
#include "generate/kv_cache.h"

namespace vlm {

namespace {
void finite(float v, const char* name) {
  VLM_CHECK(std::isfinite(v), ErrorKind::kInvalidArgument, "{} must be a finite number, got {}", name, v);
}
void non_negative(int64_t v, const char* name) {
  VLM_CHECK(v >= 0, ErrorKind::kInvalidArgument, "{} must be >= 0, got {}", name, v);
}
}  // namespace

void GenerationParams::validate() const {
  non_negative(max_tokens, "max_tokens");
  finite(temperature, "temperature");
  VLM_CHECK(temperature >= 0, ErrorKind::kInvalidArgument, "temperature must be >= 0 (0 = greedy), got {}",
            temperature);
  finite(top_p, "top_p");
  VLM_CHECK(top_p >= 0 && top_p <= 1, ErrorKind::kInvalidArgument, "top_p must be in [0, 1], got {}", top_p);
  finite(min_p, "min_p");
  VLM_CHECK(min_p >= 0 && min_p <= 1, ErrorKind::kInvalidArgument, "min_p must be in [0, 1], got {}", min_p);
  non_negative(top_k, "top_k");
  if (repetition_penalty) {
    finite(*repetition_penalty, "repetition_penalty");
    VLM_CHECK(*repetition_penalty >= 0, ErrorKind::kInvalidArgument, "repetition_penalty must be >= 0, got {}",
              *repetition_penalty);
  }
  non_negative(repetition_context_size, "repetition_context_size");
  if (presence_penalty) finite(*presence_penalty, "presence_penalty");
  non_negative(presence_context_size, "presence_context_size");
  if (frequency_penalty) finite(*frequency_penalty, "frequency_penalty");
  non_negative(frequency_context_size, "frequency_context_size");
  for (const auto& [id, bias] : logit_bias) {
    VLM_CHECK(id >= 0, ErrorKind::kInvalidArgument, "logit_bias: token id must be >= 0, got {}", id);
    // -inf is allowed: it bans the token.
    VLM_CHECK(!std::isnan(bias) && bias != INFINITY, ErrorKind::kInvalidArgument,
              "logit_bias: bias for token {} must be a number or -inf, got {}", id, bias);
  }
  for (int32_t id : extra_eos_ids)
    VLM_CHECK(id >= 0, ErrorKind::kInvalidArgument, "eos_tokens: token id must be >= 0, got {}", id);
  if (max_kv_size)
    VLM_CHECK(*max_kv_size > 4, ErrorKind::kInvalidArgument,
              "max_kv_size must be greater than the 4 always-kept tokens, got {}", *max_kv_size);
  KVCacheOptions kv;
  kv.kv_bits = kv_bits;
  kv.kv_group_size = kv_group_size;
  kv.quantized_kv_start = quantized_kv_start;
  kv.validate();
  VLM_CHECK(prefill_step_size >= 1, ErrorKind::kInvalidArgument, "prefill_step_size must be >= 1, got {}",
            prefill_step_size);
  if (thinking_budget) non_negative(*thinking_budget, "thinking_budget");
  VLM_CHECK(!thinking_start_token.empty() && !thinking_end_token.empty(), ErrorKind::kInvalidArgument,
            "thinking_start_token and thinking_end_token must not be empty");
}

}  // namespace vlm
