// The generation loop end to end on a small attention model that runs entirely through the real KV
// caches and kernels (two random-weight attention layers, no MLP), with the real tokenizer of the
// llama text fixture. The oracle for every incremental run is recomputation: the model run from
// scratch on the whole sequence at each step must pick the same tokens (and logits).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <tuple>

#include "core/error.h"
#include "generate/generator.h"
#include "generate/prompt_cache.h"
#include "generate/sampler.h"
#include "kernels/ops.h"
#include "support/test_support.h"
#include "text/tokenizer.h"

namespace vlm {
namespace {

// x -> for each layer: x += Wo · attn(Wq x, Wk x, Wv x) (positions mixed into q and k by a
// sinusoid), logits = E · x (tied embeddings).
class TinyAttentionLM final : public LanguageModel {
 public:
  static constexpr int64_t kHeads = 2, kKvHeads = 1, kHd = 64, kHidden = 128, kLayers = 2;

  TinyAttentionLM(int64_t vocab, int64_t window_layer0 = 0) : vocab_(vocab), window0_(window_layer0) {
    std::mt19937 rng(1234);
    std::normal_distribution<float> d(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& w, size_t n, float s) {
      w.resize(n);
      for (auto& x : w) x = d(rng) * s;
    };
    fill(embed_, static_cast<size_t>(vocab * kHidden), 1.0f);
    for (int l = 0; l < kLayers; ++l) {
      fill(wq_[l], kHeads * kHd * kHidden, 0.15f);
      fill(wk_[l], kKvHeads * kHd * kHidden, 0.15f);
      fill(wv_[l], kKvHeads * kHd * kHidden, 0.1f);
      fill(wo_[l], kHidden * kHeads * kHd, 0.1f);
    }
  }
  int64_t vocab_size() const override { return vocab_; }
  int64_t hidden_size() const override { return kHidden; }
  std::vector<LayerCacheInfo> cache_layout() const override {
    return {{kKvHeads, kHd, window0_}, {kKvHeads, kHd, 0}};
  }
  void embed(const int32_t* ids, int64_t n, float* out) const override {
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(embed_.data() + ids[i] * kHidden, kHidden, out + i * kHidden);
  }
  void forward(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
               const ops::AttentionMask& mask, float* logits, bool all_logits) override {
    ++forward_calls;
    tokens_forwarded += n;
    EXPECT_EQ(embeds.device, Device::kCpu);  // a host model gets host rows
    std::vector<float> x(embeds.data, embeds.data + n * kHidden);
    std::vector<float> q(n * kHeads * kHd), k(n * kKvHeads * kHd), v(n * kKvHeads * kHd), a(n * kHeads * kHd);
    for (int l = 0; l < kLayers; ++l) {
      for (int64_t t = 0; t < n; ++t) {
        std::vector<float> xp(x.begin() + t * kHidden, x.begin() + (t + 1) * kHidden);
        for (int64_t j = 0; j < kHidden; ++j)
          xp[j] += 0.5f * std::sin(static_cast<float>(positions.data[t]) * (0.3f + 0.01f * j));
        matvec(wq_[l].data(), xp.data(), kHeads * kHd, q.data() + t * kHeads * kHd);
        matvec(wk_[l].data(), xp.data(), kKvHeads * kHd, k.data() + t * kKvHeads * kHd);
        matvec(wv_[l].data(), x.data() + t * kHidden, kKvHeads * kHd, v.data() + t * kKvHeads * kHd);
      }
      LayerAttentionSpec spec;
      spec.n_heads = kHeads;
      spec.n_kv_heads = kKvHeads;
      spec.head_dim = kHd;
      spec.scale = 1.0f / 8.0f;
      spec.sliding_window = l == 0 ? window0_ : 0;
      cache.layer(l).update_and_attend(q.data(), k.data(), v.data(), n, spec, mask, a.data());
      for (int64_t t = 0; t < n; ++t) {
        std::vector<float> o(kHidden);
        matvec(wo_[l].data(), a.data() + t * kHeads * kHd, kHidden, o.data(), kHeads * kHd);
        for (int64_t j = 0; j < kHidden; ++j) x[t * kHidden + j] += o[j];
      }
    }
    for (int64_t t = all_logits ? 0 : n - 1; t < n; ++t) {
      float* out = logits + (all_logits ? t * vocab_ : 0);
      for (int64_t r = 0; r < vocab_; ++r) {
        float s = 0;
        for (int64_t j = 0; j < kHidden; ++j) s += embed_[r * kHidden + j] * x[t * kHidden + j];
        out[r] = s * 0.2f;
      }
    }
  }
  size_t weight_bytes() const override { return 0; }

  int64_t forward_calls = 0, tokens_forwarded = 0;

 private:
  static void matvec(const float* w, const float* x, int64_t rows, float* y, int64_t cols = kHidden) {
    for (int64_t r = 0; r < rows; ++r) {
      float s = 0;
      for (int64_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[c];
      y[r] = s;
    }
  }
  int64_t vocab_, window0_;
  std::vector<float> embed_, wq_[kLayers], wk_[kLayers], wv_[kLayers], wo_[kLayers];
};

struct Fixture {
  std::unique_ptr<Tokenizer> tok = Tokenizer::from_folder(test::source_dir() + "/tests/fixtures/text/llama");
  // "<|bos|><|im_start|>user\nDescribe the small red boat.<|im_end|>\n<|im_start|>assistant\n"
  std::vector<int32_t> prompt = {1, 2, 396, 85, 202, 325, 344, 302, 265, 262, 372, 315, 71,
                                 267, 379, 17, 3, 202, 2, 68, 388, 274, 87, 288, 87, 202};
};

// The oracle: logits of the last position of `ids`, computed from scratch with a fresh cache.
std::vector<float> recompute_logits(TinyAttentionLM& lm, const std::vector<int32_t>& ids,
                                    const KVCacheOptions& opts = {}) {
  auto cache = make_kv_cache(lm.cache_layout(), opts);
  std::vector<float> e(ids.size() * TinyAttentionLM::kHidden), logits(lm.vocab_size());
  lm.embed(ids.data(), static_cast<int64_t>(ids.size()), e.data());
  std::vector<int64_t> pos(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) pos[i] = static_cast<int64_t>(i);
  lm.forward(e.data(), static_cast<int64_t>(ids.size()), Positions{pos.data(), static_cast<int64_t>(ids.size()), 1},
             *cache, ops::AttentionMask{}, logits.data(), false);
  return logits;
}

TEST(Generator, GreedyEqualsRecomputationAndStreamsTheText) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  p.max_tokens = 12;
  std::string streamed;
  int pieces = 0;
  GenerationResult r = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p, [&](const std::string& s, int32_t) {
    streamed += s;
    ++pieces;
    return true;
  });
  ASSERT_EQ(r.generation_tokens, 12);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(r.prompt_tokens, 26);
  // Oracle: from-scratch argmax at every step.
  std::vector<int32_t> seq = f.prompt;
  for (int i = 0; i < 12; ++i) {
    auto logits = recompute_logits(lm, seq);
    int32_t want = argmax(logits.data(), lm.vocab_size());
    ASSERT_EQ(r.tokens[static_cast<size_t>(i)], want) << "step " << i;
    seq.push_back(want);
  }
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.text, f.tok->decode(r.tokens, false));
  EXPECT_GT(pieces, 0);
  EXPECT_GT(r.ttft_s, 0);
  EXPECT_GT(r.prompt_tps, 0);
  EXPECT_GT(r.generation_tps, 0);
  EXPECT_GT(r.peak_host_bytes, 0);
  EXPECT_EQ(r.kv_cache, "standard");
}

TEST(Generator, ChunkedPrefillMatchesOneShot) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  p.max_tokens = 8;
  GenerationResult one = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  lm.forward_calls = 0;
  p.prefill_step_size = 4;
  GenerationResult chunked = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  EXPECT_EQ(one.tokens, chunked.tokens);
  // 25 tokens in chunks of 4 (7 calls), the last prompt token (1), then 7 decode steps.
  EXPECT_EQ(lm.forward_calls, 7 + 1 + 7);
}

TEST(Generator, StopsOnEosAndExcludesIt) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  p.max_tokens = 10;
  GenerationResult full = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  ASSERT_GE(full.tokens.size(), 4u);
  int32_t stop_at = full.tokens[3];
  size_t first = std::find(full.tokens.begin(), full.tokens.end(), stop_at) - full.tokens.begin();
  GenerationResult r = generate(lm, *f.tok, {stop_at}, GenerateRequest{f.prompt, {}}, p);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.tokens, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + static_cast<long>(first)));
  // A stream callback returning false also stops.
  int calls = 0;
  GenerationResult cut = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p, [&](const std::string&, int32_t) {
    return ++calls < 2;
  });
  EXPECT_EQ(cut.finish_reason, "stop");
  EXPECT_LT(cut.tokens.size(), full.tokens.size());
}

// Greedy decode queued one step ahead of the host (what generate() runs on a GPU; forced here on the CPU
// with the model's default queue): the same tokens, text and finish reasons, and a stop costs at most the
// one speculative step that fed the stopping token.
TEST(Generator, QueuedDecodeGivesTheSameTokensAndStops) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  struct EnvGuard {
    ~EnvGuard() { unsetenv("VLMCHECK_QUEUED_DECODE"); }
  } guard;
  GenerationParams p;
  p.max_tokens = 10;
  std::vector<int32_t> prompt;
  auto run = [&](bool queued, const std::vector<int32_t>& eos, int stop_after) {
    setenv("VLMCHECK_QUEUED_DECODE", queued ? "1" : "0", 1);
    lm.forward_calls = 0;
    int calls = 0;
    GenerationResult r = generate(lm, *f.tok, eos, GenerateRequest{prompt, {}}, p, [&](const std::string&, int32_t) {
      return stop_after <= 0 || ++calls < stop_after;
    });
    return std::make_pair(r, lm.forward_calls);
  };
  // A prompt (a prefix of the fixture's) whose continuation has a token not seen before after the first, so
  // that an EOS can stop the generation past its first step.
  GenerationResult full;
  int64_t full_calls = 0;
  size_t first = 0;
  for (size_t len = f.prompt.size(); len >= 2 && first == 0; --len) {
    prompt.assign(f.prompt.begin(), f.prompt.begin() + static_cast<long>(len));
    std::tie(full, full_calls) = run(false, {}, 0);
    for (size_t i = 1; i < full.tokens.size() && first == 0; ++i)
      if (std::find(full.tokens.begin(), full.tokens.begin() + static_cast<long>(i), full.tokens[i]) ==
          full.tokens.begin() + static_cast<long>(i))
        first = i;
  }
  ASSERT_GT(first, 0u) << "no prompt prefix gives two distinct tokens";
  const auto [queued_full, queued_full_calls] = run(true, {}, 0);
  ASSERT_EQ(full.tokens.size(), 10u);
  EXPECT_EQ(queued_full.tokens, full.tokens);
  EXPECT_EQ(queued_full.text, full.text);
  EXPECT_EQ(queued_full.finish_reason, "length");
  EXPECT_EQ(queued_full_calls, full_calls);  // no step past max_tokens
  // EOS at that token: the same output; the queued loop had fed the EOS token once more (unless it was the
  // last token max_tokens allows, which no step feeds).
  const auto [eos, eos_calls] = run(false, {full.tokens[first]}, 0);
  const auto [queued_eos, queued_eos_calls] = run(true, {full.tokens[first]}, 0);
  EXPECT_EQ(eos.finish_reason, "stop");
  EXPECT_EQ(eos.tokens.size(), first);
  EXPECT_EQ(queued_eos.finish_reason, "stop");
  EXPECT_EQ(queued_eos.tokens, eos.tokens);
  EXPECT_EQ(queued_eos.text, eos.text);
  EXPECT_EQ(queued_eos_calls, eos_calls + (static_cast<int64_t>(first) + 1 < p.max_tokens ? 1 : 0));
  // The stream callback stopping after its second piece.
  const auto [cut, cut_calls] = run(false, {}, 2);
  const auto [queued_cut, queued_cut_calls] = run(true, {}, 2);
  EXPECT_EQ(queued_cut.finish_reason, "stop");
  EXPECT_EQ(queued_cut.tokens, cut.tokens);
  ASSERT_FALSE(cut.tokens.empty());
  const int64_t stop_index = static_cast<int64_t>(cut.tokens.size()) - 1;  // the token whose piece said stop
  EXPECT_EQ(queued_cut_calls, cut_calls + (stop_index >= 1 && stop_index + 1 < p.max_tokens ? 1 : 0));
  // A first token that is EOS: nothing was queued.
  const auto [none, none_calls] = run(true, {full.tokens[0]}, 0);
  EXPECT_TRUE(none.tokens.empty());
  EXPECT_EQ(none_calls, run(false, {full.tokens[0]}, 0).second);  // the prompt only
  // Seeded sampling with the built-in chain is queued too (the same u per step, drawn when it is queued) ...
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.top_k = 20;
  p.seed = 7;
  const auto [sampled, sampled_calls] = run(false, {}, 0);
  const auto [queued_sampled, queued_sampled_calls] = run(true, {}, 0);
  ASSERT_EQ(sampled.tokens.size(), 10u);
  EXPECT_EQ(queued_sampled.tokens, sampled.tokens);
  EXPECT_EQ(queued_sampled_calls, sampled_calls);
  EXPECT_NE(sampled.tokens, full.tokens);  // the draws mattered
  // ... but not with a penalty, which reads the history the host has not seen yet: the plain loop runs, with
  // the same tokens and no speculative step at a stop.
  p.repetition_penalty = 1.3f;
  const auto [penalized, penalized_calls] = run(false, {}, 3);
  const auto [queued_penalized, queued_penalized_calls] = run(true, {}, 3);
  EXPECT_EQ(queued_penalized.tokens, penalized.tokens);
  EXPECT_EQ(queued_penalized_calls, penalized_calls);
}

TEST(Generator, SeededSamplingReproducesAndCustomHooksAreUsed) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  p.max_tokens = 10;
  p.temperature = 1.5f;
  p.top_k = 50;
  p.seed = 77;
  auto a = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  auto b = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.seed, 77u);
  // A custom sampler sees the processed logprobs: a processor that bans everything but token 5 and
  // a sampler that takes the argmax must produce only 5s; the history it sees starts with the prompt.
  GenerationParams c;
  c.max_tokens = 4;
  size_t first_history = 0;
  c.logits_processors.push_back([&](const std::vector<int32_t>& h, float* l, int64_t vocab) {
    if (!first_history) first_history = h.size();
    for (int64_t i = 0; i < vocab; ++i)
      if (i != 5) l[i] = -INFINITY;
  });
  c.sampler = [](const float* lp, int64_t vocab) { return argmax(lp, vocab); };
  auto r = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, c);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(4, 5));
  EXPECT_EQ(first_history, f.prompt.size());
}

TEST(Generator, RotatingAndQuantizedCachesRunThroughTheLoop) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  p.max_tokens = 20;
  p.max_kv_size = 16;  // prompt 26 + 20 tokens: wraps
  auto rot = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  EXPECT_EQ(rot.generation_tokens, 20);
  EXPECT_EQ(rot.kv_cache, "rotating(16, keep 4)");
  p.kv_bits = 8;
  p.quantized_kv_start = 30;
  auto both = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  EXPECT_EQ(both.generation_tokens, 20);
  EXPECT_NE(both.kv_cache.find("quantized(8-bit, g64, from 30)"), std::string::npos);
  // A windowed layer makes the layout the model's own: max_kv_size is ignored with a warning.
  TinyAttentionLM windowed(f.tok->vocab_size(), 8);
  GenerationParams w;
  w.max_tokens = 3;
  w.max_kv_size = 16;
  auto rw = generate(windowed, *f.tok, {}, GenerateRequest{f.prompt, {}}, w);
  ASSERT_EQ(rw.warnings.size(), 1u);
  EXPECT_NE(rw.warnings[0].find("max_kv_size 16 ignored"), std::string::npos);
}

TEST(Generator, ThinkingBudgetForcesNewlineThenEndMarker) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  p.max_tokens = 12;
  p.enable_thinking = true;
  p.thinking_budget = 3;
  // The prompt's last <|im_start|> opens the "thinking" block (nothing closes it); <|bos|> ends it.
  p.thinking_start_token = "<|im_start|>";
  p.thinking_end_token = "<|bos|>";
  // Keep the model from producing either marker on its own.
  p.logits_processors.push_back([](const std::vector<int32_t>&, float* l, int64_t) { l[1] = l[2] = -INFINITY; });
  auto r = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  const int32_t newline = f.tok->encode("\n", false).back();
  ASSERT_GE(r.tokens.size(), 6u);
  // Budget 3: after the 4th thinking token the next two are forced.
  EXPECT_EQ(r.tokens[4], newline);
  EXPECT_EQ(r.tokens[5], 1);
  EXPECT_EQ(r.thinking_tokens_forced, 2);
  EXPECT_EQ(std::count(r.tokens.begin(), r.tokens.end(), 1), 1);  // not forced again after the end
  // Without enable_thinking the budget does nothing (mlx).
  p.enable_thinking = false;
  auto off = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p);
  EXPECT_EQ(off.thinking_tokens_forced, 0);
}

TEST(Generator, PromptCacheReusesThePrefixWithIdenticalLogits) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  PromptCache pc;
  GenerationParams p;
  p.max_tokens = 6;
  auto first = generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p, {}, &pc);
  EXPECT_EQ(first.cached_prompt_tokens, 0);
  // Second turn: the first prompt, its answer, and a new user message.
  std::vector<int32_t> turn2 = f.prompt;
  turn2.insert(turn2.end(), first.tokens.begin(), first.tokens.end());
  for (int32_t id : {3, 202, 2, 302, 265, 202}) turn2.push_back(id);
  // Capture the first-step logprobs of the cached and uncached runs through a custom sampler.
  std::vector<float> cached_lp, fresh_lp;
  GenerationParams q = p;
  q.sampler = [&](const float* lp, int64_t vocab) {
    if (cached_lp.empty()) cached_lp.assign(lp, lp + vocab);
    return argmax(lp, vocab);
  };
  lm.tokens_forwarded = 0;
  auto second = generate(lm, *f.tok, {}, GenerateRequest{turn2, {}}, q, {}, &pc);
  // Everything fed before is reused: the prompt and all generated tokens but the last (never fed).
  EXPECT_EQ(second.cached_prompt_tokens, static_cast<int64_t>(f.prompt.size() + first.tokens.size() - 1));
  EXPECT_EQ(lm.tokens_forwarded, static_cast<int64_t>(turn2.size()) - second.cached_prompt_tokens + 5);
  GenerationParams r = p;
  r.sampler = [&](const float* lp, int64_t vocab) {
    if (fresh_lp.empty()) fresh_lp.assign(lp, lp + vocab);
    return argmax(lp, vocab);
  };
  auto fresh = generate(lm, *f.tok, {}, GenerateRequest{turn2, {}}, r);
  EXPECT_EQ(second.tokens, fresh.tokens);
  ASSERT_EQ(cached_lp.size(), fresh_lp.size());
  float d = 0;
  for (size_t i = 0; i < cached_lp.size(); ++i) d = std::max(d, std::fabs(cached_lp[i] - fresh_lp[i]));
  EXPECT_LE(d, 1e-5f);
  // A prompt that diverges early trims back to the common prefix.
  std::vector<int32_t> other = {1, 2, 396, 85, 202, 5, 6, 7};
  auto third = generate(lm, *f.tok, {}, GenerateRequest{other, {}}, p, {}, &pc);
  EXPECT_EQ(third.cached_prompt_tokens, 5);
  auto third_fresh = generate(lm, *f.tok, {}, GenerateRequest{other, {}}, p);
  EXPECT_EQ(third.tokens, third_fresh.tokens);
  // The same prompt again: all but its last token come from the cache.
  auto again = generate(lm, *f.tok, {}, GenerateRequest{other, {}}, p, {}, &pc);
  EXPECT_EQ(again.cached_prompt_tokens, static_cast<int64_t>(other.size()) - 1);
  EXPECT_EQ(again.tokens, third_fresh.tokens);
}

TEST(Generator, PromptCacheFallsBackWhereReuseIsNotExact) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  PromptCache pc;
  GenerationParams p;
  p.max_tokens = 4;
  p.max_kv_size = 16;  // the 26-token prompt already evicts: not trimmable
  generate(lm, *f.tok, {}, GenerateRequest{f.prompt, {}}, p, {}, &pc);
  std::vector<int32_t> shorter(f.prompt.begin(), f.prompt.begin() + 20);
  auto r = generate(lm, *f.tok, {}, GenerateRequest{shorter, {}}, p, {}, &pc);
  EXPECT_EQ(r.cached_prompt_tokens, 0);
  EXPECT_EQ(r.tokens, generate(lm, *f.tok, {}, GenerateRequest{shorter, {}}, p).tokens);
  // Different cache options never reuse.
  GenerationParams q;
  q.max_tokens = 4;
  auto s = generate(lm, *f.tok, {}, GenerateRequest{shorter, {}}, q, {}, &pc);
  EXPECT_EQ(s.cached_prompt_tokens, 0);
}

TEST(Generator, RejectsBadInput) {
  Fixture f;
  TinyAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  EXPECT_THROW(generate(lm, *f.tok, {}, GenerateRequest{{}, {}}, p), Error);
  EXPECT_THROW(generate(lm, *f.tok, {}, GenerateRequest{{1, 100000}, {}}, p), Error);
  p.top_p = 2;
  EXPECT_THROW(generate(lm, *f.tok, {}, GenerateRequest{{1, 2}, {}}, p), Error);
}

}  // namespace
}  // namespace vlm
