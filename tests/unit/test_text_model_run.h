// Runs a language model the way the parity tests compare it with transformers: prefill (in chunks of
// `chunk` tokens, 0 = all at once) keeping every position's logits, then a plain greedy loop of `steps`
// tokens through the same KV cache, which lives on the model's device — with `device_argmax`, the loop
// takes each token from forward_argmax (on a GPU the argmax runs there and the decode steps are captured
// as CUDA graphs) instead of the host argmax of forward's logits; with `queued`, from the queued greedy
// steps generation runs on a GPU (LanguageModel::queue_greedy: step s + 1 queued before step s's token
// is read, the embedding gathered on the device from the id the step before left there). Shared by
// test_generate_parity_text (CPU) and test_cli_cuda (the same fixtures on the GPU).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "generate/kv_cache.h"
#include "models/language_model.h"

namespace vlm::test {

inline int32_t argmax(const float* x, int64_t n) { return static_cast<int32_t>(std::max_element(x, x + n) - x); }

struct TextRun {
  std::vector<float> prompt_logits;  // [n, vocab]
  std::vector<int32_t> greedy;
};

inline TextRun run_text(LanguageModel& lm, const std::vector<int32_t>& ids, int steps, int64_t chunk = 0,
                        KVCacheOptions options = {}, bool device_argmax = false, bool queued = false) {
  const int64_t n = static_cast<int64_t>(ids.size()), V = lm.vocab_size(), H = lm.hidden_size();
  options.device = lm.device();
  std::unique_ptr<KVCache> cache = make_kv_cache(lm.cache_layout(), options);
  const ops::AttentionMask mask;
  TextRun r;
  r.prompt_logits.resize(static_cast<size_t>(n * V));
  if (chunk <= 0) chunk = n;
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t m = std::min(chunk, n - b);
    std::vector<float> x(static_cast<size_t>(m * H));
    std::vector<int64_t> pos(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) pos[static_cast<size_t>(i)] = b + i;
    lm.embed(ids.data() + b, m, x.data());
    lm.forward(x.data(), m, Positions{pos.data(), m, 1}, *cache, mask, r.prompt_logits.data() + b * V, true);
  }
  std::vector<float> logits(r.prompt_logits.end() - V, r.prompt_logits.end());
  std::vector<float> x(static_cast<size_t>(H));
  int32_t next = argmax(logits.data(), V);
  if (queued) {
    r.greedy.push_back(next);
    lm.begin_queued(next);
    for (int s = 1; s < steps; ++s) {
      int64_t p = n + s - 1;
      lm.queue_greedy(Positions{&p, 1, 1}, *cache);  // feeds token s - 1, produces token s
      if (s > 1) r.greedy.push_back(lm.next_queued());
    }
    if (steps > 1) r.greedy.push_back(lm.next_queued());
    return r;
  }
  for (int s = 0; s < steps; ++s) {
    const int32_t tok = next;
    r.greedy.push_back(tok);
    if (s + 1 == steps) break;
    int64_t p = n + s;
    lm.embed(&tok, 1, x.data());
    if (device_argmax) {
      next = lm.forward_argmax(x.data(), 1, Positions{&p, 1, 1}, *cache, mask);
    } else {
      lm.forward(x.data(), 1, Positions{&p, 1, 1}, *cache, mask, logits.data(), false);
      next = argmax(logits.data(), V);
    }
  }
  return r;
}

}  // namespace vlm::test
