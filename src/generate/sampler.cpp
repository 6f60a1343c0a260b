// The sampler chain and its logits processors; semantics and order in sampler.h.
#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "kernels/ops.h"

namespace vlm {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// The last `context` tokens of the history (all of them for context 0, like Python's tokens[-0:]).
std::pair<const int32_t*, const int32_t*> window(const std::vector<int32_t>& history, int64_t context) {
  const int32_t* end = history.data() + history.size();
  if (context <= 0 || context >= static_cast<int64_t>(history.size())) return {history.data(), end};
  return {end - context, end};
}

void check_id(int32_t id, int64_t vocab, const char* what) {
  VLM_CHECK(id >= 0 && id < vocab, ErrorKind::kInvalidArgument, "{}: token id {} outside the vocabulary [0, {})", what,
            id, vocab);
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
  return [bias](const std::vector<int32_t>&, float* logits, int64_t vocab) {
    for (const auto& [id, b] : bias) {
      check_id(id, vocab, "logit_bias");
      logits[id] += b;
    }
  };
}

LogitsProcessor make_repetition_penalty(float penalty, int64_t context_size) {
  VLM_CHECK(penalty >= 0 && context_size >= 0, ErrorKind::kInvalidArgument,
            "repetition_penalty {} must be >= 0 and repetition_context_size {} >= 0", penalty, context_size);
  return [penalty, context_size](const std::vector<int32_t>& history, float* logits, int64_t vocab) {
    auto [b, e] = window(history, context_size);
    std::unordered_set<int32_t> seen;
    for (const int32_t* t = b; t != e; ++t) {
      if (!seen.insert(*t).second) continue;  // a scatter-assign: each distinct token once
      check_id(*t, vocab, "repetition_penalty history");
      float& l = logits[*t];
      l = l < 0 ? l * penalty : l / penalty;
    }
  };
}

LogitsProcessor make_presence_penalty(float penalty, int64_t context_size) {
  VLM_CHECK(context_size >= 0, ErrorKind::kInvalidArgument, "presence_context_size must be >= 0, got {}",
            context_size);
  return [penalty, context_size](const std::vector<int32_t>& history, float* logits, int64_t vocab) {
    auto [b, e] = window(history, context_size);
    std::unordered_set<int32_t> seen;
    for (const int32_t* t = b; t != e; ++t) {
      if (!seen.insert(*t).second) continue;
      check_id(*t, vocab, "presence_penalty history");
      logits[*t] -= penalty;
    }
  };
}

LogitsProcessor make_frequency_penalty(float penalty, int64_t context_size) {
  VLM_CHECK(context_size >= 0, ErrorKind::kInvalidArgument, "frequency_context_size must be >= 0, got {}",
            context_size);
  return [penalty, context_size](const std::vector<int32_t>& history, float* logits, int64_t vocab) {
    auto [b, e] = window(history, context_size);
    for (const int32_t* t = b; t != e; ++t) {  // once per occurrence (mlx .at[].subtract)
      check_id(*t, vocab, "frequency_penalty history");
      logits[*t] -= penalty;
    }
  };
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

void log_softmax_inplace(float* x, int64_t vocab) {
  float m = kNegInf;
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, x[i]);
  VLM_CHECK(m != kNegInf && !std::isnan(m), ErrorKind::kInvalidArgument,
            "sampling: every logit is -inf or NaN (were all tokens banned by logit_bias?)");
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(x[i] - m));
  // (x - max) - log(sum) keeps precision for large logits, where x - logsumexp would lose the
  // low bits to x's magnitude.
  const float log_sum = static_cast<float>(std::log(sum));
  for (int64_t i = 0; i < vocab; ++i) x[i] = (x[i] - m) - log_sum;
}

void apply_top_p(float* logprobs, int64_t vocab, float top_p) {
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logprobs[a] < logprobs[b]; });
  // Inclusive cumulative probability in ascending order (float, as mlx's cumsum).
  std::vector<uint8_t> keep(static_cast<size_t>(vocab));
  float cum = 0;
  const float threshold = 1.0f - top_p;
  for (int32_t id : order) {
    cum += std::exp(logprobs[id]);
    keep[static_cast<size_t>(id)] = cum > threshold;
  }
  for (int64_t i = 0; i < vocab; ++i)
    if (!keep[static_cast<size_t>(i)]) logprobs[i] = kNegInf;
}

void apply_min_p(float* logprobs, int64_t vocab, float min_p, int64_t min_tokens_to_keep) {
  VLM_CHECK(min_p >= 0 && min_p <= 1, ErrorKind::kInvalidArgument, "min_p must be in [0, 1], got {}", min_p);
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logprobs[a] > logprobs[b]; });
  const float threshold = logprobs[order[0]] + std::log(min_p);
  for (int64_t r = 0; r < vocab; ++r) {
    int32_t id = order[static_cast<size_t>(r)];
    if (r >= min_tokens_to_keep && logprobs[id] < threshold) logprobs[id] = kNegInf;
  }
}

void apply_top_k(float* logprobs, int64_t vocab, int64_t top_k) {
  VLM_CHECK(top_k > 0, ErrorKind::kInvalidArgument, "top_k must be > 0, got {}", top_k);
  if (top_k >= vocab) return;
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logprobs[a] > logprobs[b]; });
  for (int64_t r = top_k; r < vocab; ++r) logprobs[order[static_cast<size_t>(r)]] = kNegInf;
}

int32_t argmax(const float* x, int64_t vocab) {
  int32_t id = 0;
  ops::DeviceScope host(Device::kCpu);  // x is host memory
  ops::argmax(x, 1, vocab, &id);
  return id;
}

int32_t sample_categorical(const float* logprobs, int64_t vocab, float temperature, Rng& rng) {
  VLM_CHECK(temperature > 0, ErrorKind::kInvalidArgument, "categorical sampling needs temperature > 0, got {}",
            temperature);
  // softmax(logprobs / T) by inverse CDF in double; removed tokens (-inf) have probability 0.
  const double inv_t = 1.0 / temperature;
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, logprobs[i] * inv_t);
  std::vector<double> w(static_cast<size_t>(vocab));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    w[static_cast<size_t>(i)] = logprobs[i] == kNegInf ? 0.0 : std::exp(logprobs[i] * inv_t - m);
    sum += w[static_cast<size_t>(i)];
  }
  double u = rng.uniform() * sum;
  int64_t last_positive = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (w[static_cast<size_t>(i)] <= 0) continue;
    last_positive = i;
    u -= w[static_cast<size_t>(i)];
    if (u < 0) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last_positive);  // rounding left u a hair above 0
}

Sampler make_sampler(float temperature, float top_p, float min_p, int64_t top_k, uint64_t seed) {
  if (temperature == 0.0f) return [](const float* lp, int64_t vocab) { return argmax(lp, vocab); };
  auto rng = std::make_shared<Rng>(seed);
  return [=](const float* lp, int64_t vocab) {
    std::vector<float> x(lp, lp + vocab);
    if (top_p > 0.0f && top_p < 1.0f) apply_top_p(x.data(), vocab, top_p);
    if (min_p != 0.0f) apply_min_p(x.data(), vocab, min_p);
    if (top_k > 0) apply_top_k(x.data(), vocab, top_k);
    return sample_categorical(x.data(), vocab, temperature, *rng);
  };
}

SamplingChain::SamplingChain(const GenerationParams& params, uint64_t seed)
    : processors_(make_logits_processors(params)),
      sampler_(params.sampler ? params.sampler
                              : make_sampler(params.temperature, params.top_p, params.min_p, params.top_k, seed)),
      greedy_(processors_.empty() && !params.sampler && params.temperature == 0.0f) {}

int32_t SamplingChain::next(const std::vector<int32_t>& history, float* logits, int64_t vocab) {
  // log-softmax keeps the order of the logits, so greedy picks straight from them (as transformers
  // does): the vocabulary-wide exp/log pass is skipped.
  if (greedy_) return argmax(logits, vocab);
  for (const auto& p : processors_) p(history, logits, vocab);
  log_softmax_inplace(logits, vocab);
  int32_t id = sampler_(logits, vocab);
  VLM_CHECK(id >= 0 && id < vocab, ErrorKind::kInvalidArgument, "sampler returned token id {} outside [0, {})", id,
            vocab);
  return id;
}

}  // namespace vlm
