// The sampler chain, in mlx-vlm / mlx-lm order (engine_facts.md §1.2, mlx_lm/sample_utils.py):
//
//   logits ─ logit_bias ─ repetition ─ presence ─ frequency ─ user processors   (make_logits_processors)
//          ─ logprobs = logits - logsumexp(logits)
//          ─ top_p ─ min_p ─ top_k        (filters on the UNSCALED logprobs; removed = -inf)
//          ─ temperature 0 ? argmax : categorical(logprobs / temperature)      (make_sampler)
//
// A custom Sampler (GenerationParams::sampler) replaces the filters + draw. The built-in pieces live
// in one place below this layer, kernels/sampling.h (the CPU backend of ops::sample, whose CUDA
// backend shares its per-element arithmetic); the functions here are their public face, and that
// header states every corner exactly. In short:
// * repetition (CTRL): for each distinct token among the last `context` of the history (prompt ids
//   first, then generated): logit < 0 ? logit * p : logit / p. Presence subtracts once per distinct
//   token; frequency once per occurrence. context 0 means the whole history (Python's tokens[-0:]).
// * top_p: sort ascending (stable: ties ordered by token id), cumulative sum of probabilities; keep
//   tokens whose inclusive cumulative sum is > 1 - top_p. Active only for 0 < top_p < 1. The sums
//   are exact (fixed point of 2^-56 over double probabilities), not mlx's float32 scan.
// * min_p: keep tokens with logprob >= max + log(min_p), and always the min_tokens_to_keep best.
//   Active for min_p != 0.
// * top_k: keep the k largest (ties at the boundary go to the lower token id); active for
//   0 < k < vocab (mlx raises for k >= vocab; keeping everything is the same distribution).
// * argmax returns the first maximal id (mlx.argmax).
// Draws use our own xoshiro256** generator seeded through splitmix64, so a seed gives the same
// tokens on every platform (not the same stream as MLX's threefry; no engine can promise that). One
// uniform is drawn per sampled token (none at temperature 0), the same on every device: a chain of
// built-in pieces only runs as ops::sample on the model's device with that uniform.
#pragma once

#include <cstdint>
#include <vector>

#include "generate/generate.h"
#include "kernels/ops.h"

namespace vlm {

// xoshiro256** seeded by splitmix64(seed).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1) with 53 random bits

 private:
  uint64_t s_[4];
};

// ---- logits processors (edit logits [vocab] in place) ---------------------------------------------
LogitsProcessor make_logit_bias_processor(const std::map<int32_t, float>& bias);
LogitsProcessor make_repetition_penalty(float penalty, int64_t context_size);
LogitsProcessor make_presence_penalty(float penalty, int64_t context_size);
LogitsProcessor make_frequency_penalty(float penalty, int64_t context_size);
// The built-in processors the params enable, in mlx order, followed by params.logits_processors.
std::vector<LogitsProcessor> make_logits_processors(const GenerationParams& params);

// ---- log-probabilities and filters (in place over logprobs [vocab]) --------------------------------
void log_softmax_inplace(float* x, int64_t vocab);  // x - logsumexp(x)
void apply_top_p(float* logprobs, int64_t vocab, float top_p);
void apply_min_p(float* logprobs, int64_t vocab, float min_p, int64_t min_tokens_to_keep = 1);
void apply_top_k(float* logprobs, int64_t vocab, int64_t top_k);
int32_t argmax(const float* x, int64_t vocab);
// One draw from softmax(logprobs / temperature) (temperature > 0).
int32_t sample_categorical(const float* logprobs, int64_t vocab, float temperature, Rng& rng);

// The built-in sampler of make_sampler(temp, top_p, min_p, top_k) as a Sampler (it owns its Rng).
Sampler make_sampler(float temperature, float top_p, float min_p, int64_t top_k, uint64_t seed);

// The built-in chain's knobs from the params (penalties left unset are 0 = off).
ops::SamplingSpec sampling_spec(const GenerationParams& params);

// The whole chain for one generation: processors over the history, log-softmax, then the sampler
// (params.sampler when set, else make_sampler from the params with `seed`).
class SamplingChain {
 public:
  SamplingChain(const GenerationParams& params, uint64_t seed);
  // logits [vocab] (host; may be modified in place: processors, then turned into logprobs) -> next
  // token id. A built-in chain runs ops::sample on the CPU with draw().
  int32_t next(const std::vector<int32_t>& history, float* logits, int64_t vocab);
  // Nothing but argmax: no processors, no custom sampler, temperature 0. Then the next token is the
  // argmax of the raw logits, and a model can take it on its own device (LanguageModel::forward_argmax).
  bool greedy() const { return greedy_; }
  // Only built-in processors and the built-in sampler (no LogitsProcessor or Sampler from the C++
  // API): the whole chain is ops::sample(spec(), u = draw()), which a model can run on its own device
  // (LanguageModel::forward_sample) so that only the id crosses to the host.
  bool builtin() const { return builtin_; }
  const ops::SamplingSpec& spec() const { return spec_; }
  // The uniform for the next token of a built-in chain: one Rng draw when temperature > 0 (where the
  // categorical draw takes it), else 0 and the Rng untouched. Call once per token.
  double draw();

 private:
  std::vector<LogitsProcessor> processors_;
  Sampler sampler_;
  ops::SamplingSpec spec_;
  Rng rng_;
  bool greedy_ = false;
  bool builtin_ = false;
};

}  // namespace vlm
