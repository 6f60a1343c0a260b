// The sampler chain on the CPU (ops::sample's CPU backend, and the pieces generate/sampler.cpp exposes
// as its public filters and processors): semantics and the arithmetic shared with CUDA in
// kernels/sampling.h. Filters sort (stable, so ties keep id order) — one row per token, off the
// decode's critical path on the CPU.
#include <algorithm>
#include <limits>
#include <map>
#include <numeric>

#include "core/error.h"
#include "kernels/sampling.h"

namespace vlm::ops::sampling {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The last `context` ids of the history (all of them for context 0, like Python's tokens[-0:]).
std::pair<const int32_t*, const int32_t*> window(const int32_t* history, int64_t n, int64_t context) {
  if (context <= 0 || context >= n) return {history, history + n};
  return {history + n - context, history + n};
}

void check_id(int32_t id, int64_t vocab, const char* what) {
  VLM_CHECK(id >= 0 && id < vocab, ErrorKind::kInvalidArgument, "{}: token id {} outside the vocabulary [0, {})", what,
            id, vocab);
}

std::vector<int32_t> stable_order(const float* x, int64_t vocab, bool descending) {
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  if (descending)
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
  else
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[a] < x[b]; });
  return order;
}
}  // namespace

std::vector<LogitEdit> plan_logit_edits(const SamplingSpec& spec, const int32_t* history, int64_t n_history,
                                        int64_t vocab) {
  std::map<int32_t, LogitEdit> edits;
  auto at = [&](int32_t id) -> LogitEdit& {
    LogitEdit& e = edits[id];
    e.id = id;
    return e;
  };
  for (const auto& [id, b] : spec.logit_bias) {
    check_id(id, vocab, "logit_bias");
    LogitEdit& e = at(id);
    e.has_bias = 1;
    e.bias = b;
  }
  // Distinct ids get the penalty once (mlx scatters into the logits).
  if (spec.repetition_penalty != 0.0f) {
    auto [b, end] = window(history, n_history, spec.repetition_context);
    for (const int32_t* t = b; t != end; ++t) {
      check_id(*t, vocab, "repetition_penalty history");
      at(*t).repetition = 1;
    }
  }
  if (spec.presence_penalty != 0.0f) {
    auto [b, end] = window(history, n_history, spec.presence_context);
    for (const int32_t* t = b; t != end; ++t) {
      check_id(*t, vocab, "presence_penalty history");
      at(*t).presence = 1;
    }
  }
  if (spec.frequency_penalty != 0.0f) {
    auto [b, end] = window(history, n_history, spec.frequency_context);
    for (const int32_t* t = b; t != end; ++t) {
      check_id(*t, vocab, "frequency_penalty history");
      ++at(*t).frequency;
    }
  }
  std::vector<LogitEdit> out;
  out.reserve(edits.size());
  for (const auto& [id, e] : edits) out.push_back(e);
  return out;
}

void apply_logit_edits(float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
                       int64_t n_history) {
  for (const LogitEdit& e : plan_logit_edits(spec, history, n_history, vocab))
    logits[e.id] = apply_logit_edit(logits[e.id], e, spec.repetition_penalty, spec.presence_penalty,
                                    spec.frequency_penalty);
}

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
  const std::vector<int32_t> order = stable_order(logprobs, vocab, false);
  // Inclusive cumulative probability in ascending order, exact in fixed point (sampling.h).
  std::vector<uint8_t> keep(static_cast<size_t>(vocab));
  const uint64_t threshold = top_p_threshold(top_p);
  uint64_t cum = 0;
  for (int32_t id : order) {
    cum += prob_fixed(logprobs[id]);
    keep[static_cast<size_t>(id)] = cum > threshold;
  }
  for (int64_t i = 0; i < vocab; ++i)
    if (!keep[static_cast<size_t>(i)]) logprobs[i] = kNegInf;
}

void apply_min_p(float* logprobs, int64_t vocab, float min_p, int64_t min_tokens_to_keep) {
  VLM_CHECK(min_p >= 0 && min_p <= 1, ErrorKind::kInvalidArgument, "min_p must be in [0, 1], got {}", min_p);
  const std::vector<int32_t> order = stable_order(logprobs, vocab, true);
  const float threshold = logprobs[order[0]] + std::log(min_p);
  for (int64_t r = 0; r < vocab; ++r) {
    int32_t id = order[static_cast<size_t>(r)];
    if (r >= min_tokens_to_keep && logprobs[id] < threshold) logprobs[id] = kNegInf;
  }
}

void apply_top_k(float* logprobs, int64_t vocab, int64_t top_k) {
  VLM_CHECK(top_k > 0, ErrorKind::kInvalidArgument, "top_k must be > 0, got {}", top_k);
  if (top_k >= vocab) return;
  const std::vector<int32_t> order = stable_order(logprobs, vocab, true);
  for (int64_t r = top_k; r < vocab; ++r) logprobs[order[static_cast<size_t>(r)]] = kNegInf;
}

int32_t sample_categorical(const float* logprobs, int64_t vocab, float temperature, double u) {
  VLM_CHECK(temperature > 0, ErrorKind::kInvalidArgument, "categorical sampling needs temperature > 0, got {}",
            temperature);
  // softmax(logprobs / T) by inverse CDF in double; removed tokens (-inf) have probability 0.
  const double inv_t = 1.0 / temperature;
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, scaled_logprob(logprobs[i], inv_t));
  std::vector<double> w(static_cast<size_t>(vocab));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    w[static_cast<size_t>(i)] = categorical_weight(logprobs[i], inv_t, m);
    sum += w[static_cast<size_t>(i)];
  }
  const double target = u * sum;
  double cum = 0;
  int64_t last_positive = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (w[static_cast<size_t>(i)] <= 0) continue;
    last_positive = i;
    cum += w[static_cast<size_t>(i)];
    if (cum > target) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last_positive);  // rounding left the target a hair above the total
}

int32_t sample_logprobs(const float* logprobs, int64_t vocab, const SamplingSpec& spec, double u) {
  if (spec.temperature == 0.0f) {
    int32_t id = 0;
    DeviceScope host(Device::kCpu);  // logprobs are host memory
    ops::argmax(logprobs, 1, vocab, &id);
    return id;
  }
  std::vector<float> x(logprobs, logprobs + vocab);
  if (spec.top_p > 0.0f && spec.top_p < 1.0f) apply_top_p(x.data(), vocab, spec.top_p);
  if (spec.min_p != 0.0f) apply_min_p(x.data(), vocab, spec.min_p);
  if (spec.top_k > 0) apply_top_k(x.data(), vocab, spec.top_k);
  return sample_categorical(x.data(), vocab, spec.temperature, u);
}

void sample(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
            int64_t n_history, double u, int32_t* id) {
  std::vector<float> x(logits, logits + vocab);
  apply_logit_edits(x.data(), vocab, spec, history, n_history);
  log_softmax_inplace(x.data(), vocab);
  *id = sample_logprobs(x.data(), vocab, spec, u);
}

}  // namespace vlm::ops::sampling
