// The generation loop (mlx-vlm generate_step + stream_generate, engine_facts.md §1.2):
//
//   prompt ids ─ chunked prefill (prefill_step_size tokens at a time, all but the last token)
//              ─ last prompt token → logits → SamplingChain → token 0          (TTFT ends here)
//              ─ decode: feed the previous token → logits → next token, until an EOS id, max_tokens,
//                or the stream callback asks to stop
//
// * EOS ids: config.json eos_token_id ∪ generation_config.json eos_token_id ∪ the tokenizer's
//   eos_token ∪ params.extra_eos_ids (collect_eos_ids). The EOS token ends the text and is not part
//   of it (mlx breaks before yielding it).
// * The token history seen by logits processors is the whole prompt followed by the generated ids.
//   (Current mlx-vlm, with chunked prefill, only hands the processors the last prompt chunk; mlx-lm
//   and older mlx-vlm hand them the prompt. We keep the prompt, as the issue specifies.)
// * thinking_budget (mlx-vlm ThinkingBudgetCriteria): with enable_thinking, counting starts when
//   the thinking start token is generated, or from the start when the prompt already opened a
//   thinking block (its last start token has no end token after it). Once more than `budget`
//   thinking tokens were produced, the next tokens are forced to "\n" then the end token, replacing
//   what the sampler would have drawn.
// * Timings: ttft_s = tokenize + image stages + prefill up to the first sampled token (mlx's
//   prompt_tps also counts everything up to the first token); prompt_tps = prompt tokens / that
//   prefill time; generation_tps = generated tokens / time since the first token (as mlx).
// * Memory: the tracker's peaks are reset at the start; peak_host_bytes is the tracked host peak
//   during this generation (weights stay counted), peak_rss_bytes the process's VmHWM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "generate/generate.h"
#include "generate/kv_cache.h"
#include "generate/prompt_cache.h"
#include "models/vision_model.h"
#include "text/tokenizer.h"

namespace vlm {

struct GenerateRequest {
  std::vector<int32_t> prompt_ids;
  StageTimes times;  // stages already spent by the caller (tokenize, images); counted into TTFT
  // A VLM prompt (vision_model.h): when set, prefill feeds its embeddings, positions and bidirectional groups
  // instead of embedding prompt_ids (which stay the token history for penalties); decode continues at
  // position n + rope_delta. Prefill chunks never split a bidirectional group. Prompt caching is skipped.
  const MultimodalPrompt* multimodal = nullptr;
};

// The stop ids for a model folder: config + generation_config + tokenizer eos + extra ids, deduplicated.
std::vector<int32_t> collect_eos_ids(const LoadedModel& model, const Tokenizer& tokenizer,
                                     const std::vector<int32_t>& extra_ids);

// A --device value: "cpu", "cuda", or "auto" (cuda when the CUDA backend can run, else cpu). "cuda"
// without a usable GPU throws Error(kUnsupported) with the backend's reason ("built without CUDA",
// "no CUDA device: ..."); any other name Error(kInvalidArgument).
Device resolve_device(const std::string& name);

// The KV cache options a GenerationParams asks for (on the cpu; generate() puts them on the model's
// device).
KVCacheOptions kv_cache_options(const GenerationParams& params);

// Whether greedy decode runs queued one step ahead of the host (LanguageModel::queue_greedy; generate()
// and vlmcheck bench): where the model's steps run asynchronously (a GPU), unless
// VLMCHECK_QUEUED_DECODE says otherwise (1 forces it, so tests run it on the CPU; 0 turns it off).
bool queued_decode(const LanguageModel& model);

// Runs one generation. `prompt_cache` (optional) is reused and updated (see prompt_cache.h);
// without it a fresh cache lives for this call. Throws Error(kInvalidArgument) for bad params or an
// empty prompt; kCancelled is never thrown (a callback returning false ends with finish "stop").
GenerationResult generate(LanguageModel& model, const Tokenizer& tokenizer, const std::vector<int32_t>& eos_ids,
                          const GenerateRequest& request, const GenerationParams& params,
                          const StreamCallback& on_piece = {}, PromptCache* prompt_cache = nullptr);

}  // namespace vlm
