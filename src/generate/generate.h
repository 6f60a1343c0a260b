// Generation: every MLX-VLM knob (engine_facts.md §1.2) with mlx-vlm's semantics and defaults,
// streaming through a callback, timings per stage, and memory from the MemoryTracker.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "models/registry.h"

namespace vlm {

// A logits processor sees the token history (prompt then generated) and edits logits [vocab] in place.
using LogitsProcessor = std::function<void(const std::vector<int32_t>& history, float* logits, int64_t vocab)>;
// A sampler maps log-probabilities [vocab] to a token id.
using Sampler = std::function<int32_t(const float* logprobs, int64_t vocab)>;

struct GenerationParams {
  int64_t max_tokens = 256;
  float temperature = 0.0f;  // 0 = argmax
  float top_p = 1.0f;
  int64_t top_k = 0;
  float min_p = 0.0f;
  std::optional<float> repetition_penalty;
  int64_t repetition_context_size = 20;
  std::optional<float> presence_penalty;
  int64_t presence_context_size = 20;
  std::optional<float> frequency_penalty;
  int64_t frequency_context_size = 20;
  std::map<int32_t, float> logit_bias;
  std::optional<uint64_t> seed;
  std::vector<int32_t> extra_eos_ids;  // --eos-tokens resolved to ids
  bool skip_special_tokens = false;
  // KV cache
  std::optional<int64_t> max_kv_size;  // rotating cache
  std::optional<int> kv_bits;          // quantized cache (2..8)
  int kv_group_size = 64;
  int64_t quantized_kv_start = 5000;
  int64_t prefill_step_size = 2048;
  // Thinking
  bool enable_thinking = false;
  std::optional<int64_t> thinking_budget;
  std::string thinking_start_token = "<think>";
  std::string thinking_end_token = "</think>";
  // C++ API extensions
  std::vector<LogitsProcessor> logits_processors;  // run after the built-in penalties
  Sampler sampler;                                 // replaces the built-in sampler when set
  // Throws Error(kInvalidArgument) naming the parameter when a value is out of range.
  void validate() const;
};

struct StageTimes {
  double tokenize_s = 0, image_preprocess_s = 0, vision_encode_s = 0, prefill_s = 0, decode_s = 0;
};

struct GenerationResult {
  std::string text;
  std::vector<int32_t> tokens;  // generated ids
  int64_t prompt_tokens = 0, generation_tokens = 0;
  double prompt_tps = 0, generation_tps = 0, ttft_s = 0;
  StageTimes times;
  std::string finish_reason;  // "stop" | "length"
  int64_t peak_host_bytes = 0, peak_gpu_bytes = 0;
  // GPU memory at the end (MemoryTracker kGpu): live buffers and the caching allocator's free blocks.
  int64_t gpu_active_bytes = 0, gpu_cache_bytes = 0;
  std::string device = "cpu";  // where the language model ran (LanguageModel::device())
  int64_t cached_prompt_tokens = 0;  // reused from a prompt cache
  // Additions (generator.h): what actually ran.
  uint64_t seed = 0;                 // the seed used (drawn from the OS when params.seed is unset)
  std::string kv_cache;              // LayeredKVCache::describe()
  int64_t thinking_tokens_forced = 0;  // tokens forced by thinking_budget
  int64_t peak_rss_bytes = 0;        // process VmHWM at the end (includes everything loaded before)
  std::vector<std::string> warnings;  // e.g. max_kv_size ignored for a windowed model
};

// Called with each new piece of text (complete UTF-8) and the token that produced it; return false to stop.
using StreamCallback = std::function<bool(const std::string& piece, int32_t token)>;

}  // namespace vlm
