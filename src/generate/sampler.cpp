// The sampler chain and its logits processors; semantics and order in sampler.h. The built-in pieces
// are kernels/sampling.h's CPU implementation (one home for them, shared with ops::sample on CUDA).
#include "generate/sampler.h"

#include <memory>

#include "core/error.h"
#include "kernels/ops.h"
#include "kernels/sampling.h"

namespace vlm {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// A processor that is one built-in processor of the spec.
LogitsProcessor spec_processor(const ops::SamplingSpec& spec) {
  return [spec](const std::vector<int32_t>& history, float* logits, int64_t vocab) {
    ops::sampling::apply_logit_edits(logits, vocab, spec, history.data(), static_cast<int64_t>(history.size()));
  };
}
}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

// ---- processors -----------------------------------------------------------------------------------

LogitsProcessor make_logit_bias_processor(const std::map<int32_t, float>& bias) {
  ops::SamplingSpec spec;
  spec.logit_bias = bias;
  return spec_processor(spec);
}

LogitsProcessor make_repetition_penalty(float penalty, int64_t context_size) {
  VLM_CHECK(penalty >= 0 && context_size >= 0, ErrorKind::kInvalidArgument,
            "repetition_penalty {} must be >= 0 and repetition_context_size {} >= 0", penalty, context_size);
  ops::SamplingSpec spec;
  spec.repetition_penalty = penalty;
  spec.repetition_context = context_size;
  return spec_processor(spec);
}

LogitsProcessor make_presence_penalty(float penalty, int64_t context_size) {
  VLM_CHECK(context_size >= 0, ErrorKind::kInvalidArgument, "presence_context_size must be >= 0, got {}",
            context_size);
  ops::SamplingSpec spec;
  spec.presence_penalty = penalty;
  spec.presence_context = context_size;
  return spec_processor(spec);
}

LogitsProcessor make_frequency_penalty(float penalty, int64_t context_size) {
  VLM_CHECK(context_size >= 0, ErrorKind::kInvalidArgument, "frequency_context_size must be >= 0, got {}",
            context_size);
  ops::SamplingSpec spec;
  spec.frequency_penalty = penalty;
  spec.frequency_context = context_size;
  return spec_processor(spec);
}

std::vector<LogitsProcessor> make_logits_processors(const GenerationParams& p) {
  std::vector<LogitsProcessor> out;
  if (!p.logit_bias.empty()) out.push_back(make_logit_bias_processor(p.logit_bias));
  // mlx: `if repetition_penalty and repetition_penalty != 0.0` (so 0 and unset both disable).
  if (p.repetition_penalty && *p.repetition_penalty != 0.0f)
    out.push_back(make_repetition_penalty(*p.repetition_penalty, p.repetition_context_size));
  if (p.presence_penalty && *p.presence_penalty != 0.0f)
    out.push_back(make_presence_penalty(*p.presence_penalty, p.presence_context_size));
  if (p.frequency_penalty && *p.frequency_penalty != 0.0f)
    out.push_back(make_frequency_penalty(*p.frequency_penalty, p.frequency_context_size));
  for (const auto& user : p.logits_processors) out.push_back(user);
  return out;
}

// ---- logprobs and filters -------------------------------------------------------------------------

void log_softmax_inplace(float* x, int64_t vocab) { ops::sampling::log_softmax_inplace(x, vocab); }
void apply_top_p(float* logprobs, int64_t vocab, float top_p) { ops::sampling::apply_top_p(logprobs, vocab, top_p); }
void apply_min_p(float* logprobs, int64_t vocab, float min_p, int64_t min_tokens_to_keep) {
  ops::sampling::apply_min_p(logprobs, vocab, min_p, min_tokens_to_keep);
}
void apply_top_k(float* logprobs, int64_t vocab, int64_t top_k) { ops::sampling::apply_top_k(logprobs, vocab, top_k); }

int32_t argmax(const float* x, int64_t vocab) {
  int32_t id = 0;
  ops::DeviceScope host(Device::kCpu);  // x is host memory
  ops::argmax(x, 1, vocab, &id);
  return id;
}

int32_t sample_categorical(const float* logprobs, int64_t vocab, float temperature, Rng& rng) {
  VLM_CHECK(temperature > 0, ErrorKind::kInvalidArgument, "categorical sampling needs temperature > 0, got {}",
            temperature);
  return ops::sampling::sample_categorical(logprobs, vocab, temperature, rng.uniform());
}

Sampler make_sampler(float temperature, float top_p, float min_p, int64_t top_k, uint64_t seed) {
  ops::SamplingSpec spec;
  spec.temperature = temperature;
  spec.top_p = top_p;
  spec.min_p = min_p;
  spec.top_k = top_k;
  if (temperature == 0.0f)
    return [spec](const float* lp, int64_t vocab) { return ops::sampling::sample_logprobs(lp, vocab, spec, 0.0); };
  auto rng = std::make_shared<Rng>(seed);
  return [spec, rng](const float* lp, int64_t vocab) {
    return ops::sampling::sample_logprobs(lp, vocab, spec, rng->uniform());
  };
}

ops::SamplingSpec sampling_spec(const GenerationParams& p) {
  ops::SamplingSpec s;
  s.temperature = p.temperature;
  s.top_p = p.top_p;
  s.min_p = p.min_p;
  s.top_k = p.top_k;
  s.logit_bias = p.logit_bias;
  s.repetition_penalty = p.repetition_penalty.value_or(0.0f);
  s.repetition_context = p.repetition_context_size;
  s.presence_penalty = p.presence_penalty.value_or(0.0f);
  s.presence_context = p.presence_context_size;
  s.frequency_penalty = p.frequency_penalty.value_or(0.0f);
  s.frequency_context = p.frequency_context_size;
  return s;
}

SamplingChain::SamplingChain(const GenerationParams& params, uint64_t seed)
    : processors_(make_logits_processors(params)),
      sampler_(params.sampler ? params.sampler
                              : make_sampler(params.temperature, params.top_p, params.min_p, params.top_k, seed)),
      spec_(sampling_spec(params)),
      rng_(seed),
      greedy_(processors_.empty() && !params.sampler && params.temperature == 0.0f),
      builtin_(params.logits_processors.empty() && !params.sampler) {}

double SamplingChain::draw() { return spec_.temperature > 0.0f ? rng_.uniform() : 0.0; }

int32_t SamplingChain::next(const std::vector<int32_t>& history, float* logits, int64_t vocab) {
  // log-softmax keeps the order of the logits, so greedy picks straight from them (as transformers
  // does): the vocabulary-wide exp/log pass is skipped.
  if (greedy_) return argmax(logits, vocab);
  int32_t id = 0;
  if (builtin_) {
    // The built-in chain is one op; its Rng is the chain's own (make_sampler's copy stays unused).
    ops::DeviceScope host(Device::kCpu);  // logits are host memory
    ops::sample(logits, vocab, spec_, history.data(), static_cast<int64_t>(history.size()), draw(), &id);
    return id;
  }
  for (const auto& p : processors_) p(history, logits, vocab);
  log_softmax_inplace(logits, vocab);
  id = sampler_(logits, vocab);
  VLM_CHECK(id >= 0 && id < vocab, ErrorKind::kInvalidArgument, "sampler returned token id {} outside [0, {})", id,
            vocab);
  return id;
}

}  // namespace vlm
