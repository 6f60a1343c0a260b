// The generator's multimodal path (GenerateRequest.multimodal) on a small attention model that runs through
// the real KV caches and attention kernels (random weights, positions mixed into q/k by a sinusoid, so
// positions matter), with the llama text fixture's tokenizer. Oracles:
// * embeddings equal to the model's own, 1-D positions 0..n-1 and no groups must give exactly the text path;
// * bidirectional groups: the model run once over the whole prompt with a fresh cache and the group mask
//   (one forward, nothing split) must give the generator's first token and logits at every prefill step size;
//   the forwards the generator makes are recorded, and no chunk may cut a group;
// * M-RoPE positions (3 rows) are sliced per chunk and decode continues at n + rope_delta in all 3 rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "core/error.h"
#include "generate/generator.h"
#include "generate/prompt_cache.h"
#include "generate/sampler.h"
#include "kernels/ops.h"
#include "support/test_support.h"
#include "text/tokenizer.h"

namespace vlm {
namespace {

// x -> for each layer: x += Wo · attn(Wq x', Wk x', Wv x), x' = x + sin(position-dependent), logits = E · x.
// Records every forward: its positions (all rows), token count and whether a group mask was passed.
class RecordingAttentionLM final : public LanguageModel {
 public:
  static constexpr int64_t kHeads = 2, kKvHeads = 1, kHd = 32, kHidden = 64, kLayers = 2;

  struct Call {
    int64_t n = 0;
    int dims = 1;
    std::vector<int64_t> positions;  // dims * n values, row-major [dims, n]
    bool grouped = false;
  };

  explicit RecordingAttentionLM(int64_t vocab) : vocab_(vocab) {
    std::mt19937 rng(99);
    std::normal_distribution<float> d(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& w, size_t n, float s) {
      w.resize(n);
      for (auto& x : w) x = d(rng) * s;
    };
    fill(embed_, static_cast<size_t>(vocab * kHidden), 1.0f);
    for (int l = 0; l < kLayers; ++l) {
      fill(wq_[l], kHeads * kHd * kHidden, 0.3f);
      fill(wk_[l], kKvHeads * kHd * kHidden, 0.3f);
      fill(wv_[l], kKvHeads * kHd * kHidden, 0.2f);
      fill(wo_[l], kHidden * kHeads * kHd, 0.2f);
    }
  }
  int64_t vocab_size() const override { return vocab_; }
  int64_t hidden_size() const override { return kHidden; }
  std::vector<LayerCacheInfo> cache_layout() const override { return {{kKvHeads, kHd, 0}, {kKvHeads, kHd, 0}}; }
  void embed(const int32_t* ids, int64_t n, float* out) const override {
    for (int64_t i = 0; i < n; ++i) std::copy_n(embed_.data() + ids[i] * kHidden, kHidden, out + i * kHidden);
  }
  void forward(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
               const ops::AttentionMask& mask, float* logits, bool all_logits) override {
    calls.push_back({n, positions.dims, std::vector<int64_t>(positions.data, positions.data + positions.dims * n),
                     mask.group_of_position != nullptr});
    EXPECT_EQ(embeds.device, Device::kCpu);  // a host model gets host rows
    std::vector<float> x(embeds.data, embeds.data + n * kHidden);
    std::vector<float> q(n * kHeads * kHd), k(n * kKvHeads * kHd), v(n * kKvHeads * kHd), a(n * kHeads * kHd);
    for (int l = 0; l < kLayers; ++l) {
      for (int64_t t = 0; t < n; ++t) {
        std::vector<float> xp(x.begin() + t * kHidden, x.begin() + (t + 1) * kHidden);
        // Every RoPE row moves q/k (rows 1 and 2 only when given), so a wrong row slice changes the result.
        for (int r = 0; r < positions.dims; ++r)
          for (int64_t j = 0; j < kHidden; ++j)
            xp[j] += 0.4f * std::sin(static_cast<float>(positions.data[r * n + t]) * (0.2f + 0.013f * j + 0.05f * r));
        matvec(wq_[l].data(), xp.data(), kHeads * kHd, q.data() + t * kHeads * kHd);
        matvec(wk_[l].data(), xp.data(), kKvHeads * kHd, k.data() + t * kKvHeads * kHd);
        matvec(wv_[l].data(), x.data() + t * kHidden, kKvHeads * kHd, v.data() + t * kKvHeads * kHd);
      }
      LayerAttentionSpec spec;
      spec.n_heads = kHeads;
      spec.n_kv_heads = kKvHeads;
      spec.head_dim = kHd;
      spec.scale = 1.0f / std::sqrt(static_cast<float>(kHd));
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
        out[r] = s * 0.25f;
      }
    }
  }
  size_t weight_bytes() const override { return 0; }

  std::vector<Call> calls;

 private:
  static void matvec(const float* w, const float* x, int64_t rows, float* y, int64_t cols = kHidden) {
    for (int64_t r = 0; r < rows; ++r) {
      float s = 0;
      for (int64_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[c];
      y[r] = s;
    }
  }
  int64_t vocab_;
  std::vector<float> embed_, wq_[kLayers], wk_[kLayers], wv_[kLayers], wo_[kLayers];
};

struct Fixture {
  std::unique_ptr<Tokenizer> tok = Tokenizer::from_folder(test::source_dir() + "/tests/fixtures/text/llama");
  // "<|bos|><|im_start|>user\nDescribe the small red boat.<|im_end|>\n<|im_start|>assistant\n"
  std::vector<int32_t> prompt = {1, 2, 396, 85, 202, 325, 344, 302, 265, 262, 372, 315, 71,
                                 267, 379, 17, 3, 202, 2, 68, 388, 274, 87, 288, 87, 202};
  int64_t n() const { return static_cast<int64_t>(prompt.size()); }
};

// A multimodal prompt whose embeddings are the model's own for `ids`, 1-D positions offset..offset+n-1.
MultimodalPrompt plain_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids, int64_t offset = 0) {
  MultimodalPrompt mm;
  const int64_t n = static_cast<int64_t>(ids.size());
  mm.embeds = Tensor::empty({n, lm.hidden_size()}, DType::kF32);
  lm.embed(ids.data(), n, mm.embeds.data<float>());
  for (int64_t i = 0; i < n; ++i) mm.positions.push_back(offset + i);
  mm.rope_delta = offset;
  return mm;
}

// The oracle: last-position logits of one forward over the whole prompt, fresh cache, the prompt's mask.
std::vector<float> one_shot_logits(RecordingAttentionLM& lm, const MultimodalPrompt& mm) {
  const int64_t n = mm.embeds.dim(0);
  auto cache = make_kv_cache(lm.cache_layout(), {});
  std::vector<float> logits(static_cast<size_t>(lm.vocab_size()));
  ops::AttentionMask mask{};
  if (!mm.groups.empty()) {
    mask.group_of_position = mm.groups.data();
    mask.group_positions = n;
  }
  lm.forward(mm.embeds.data<float>(), n, Positions{mm.positions.data(), n, mm.dims}, *cache, mask, logits.data(),
             false);
  return logits;
}

// Largest |a - b| relative to the largest |b| (chunked prefill sums attention in another order than one forward).
float max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float err = 0, scale = 1e-6f;
  for (size_t i = 0; i < b.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return err / scale;
}

GenerationResult run(RecordingAttentionLM& lm, const Fixture& f, const MultimodalPrompt* mm, int64_t step,
                     int64_t max_tokens, std::vector<float>* first_logits = nullptr) {
  GenerationParams p;
  p.max_tokens = max_tokens;
  p.prefill_step_size = step;
  if (first_logits) {
    // A logits processor sees the first step's logits before sampling (and every later step's).
    p.logits_processors.push_back([first_logits](const std::vector<int32_t>&, float* logits, int64_t vocab) {
      if (first_logits->empty()) first_logits->assign(logits, logits + vocab);
    });
  }
  GenerateRequest req;
  req.prompt_ids = f.prompt;
  req.multimodal = mm;
  lm.calls.clear();
  return generate(lm, *f.tok, {}, req, p);
}

TEST(GenerateMultimodal, OwnEmbeddingsAndPlainPositionsGiveTheTextPath) {
  Fixture f;
  RecordingAttentionLM lm(f.tok->vocab_size());
  GenerationResult text = run(lm, f, nullptr, 2048, 10);
  MultimodalPrompt mm = plain_prompt(lm, f.prompt);
  for (int64_t step : {2048, 5}) {
    GenerationResult r = run(lm, f, &mm, step, 10);
    EXPECT_EQ(r.tokens, text.tokens) << "step " << step;
    EXPECT_EQ(r.prompt_tokens, f.n());
    // Prefill shape of the text path: all but the last token in chunks, then the last one alone.
    ASSERT_GE(lm.calls.size(), 2u);
    int64_t fed = 0;
    size_t prefill_calls = 0;
    while (fed < f.n()) fed += lm.calls[prefill_calls++].n;
    EXPECT_EQ(fed, f.n());
    EXPECT_EQ(lm.calls[prefill_calls - 1].n, 1) << "the last prompt token is fed alone";
    EXPECT_EQ(prefill_calls, step == 2048 ? 2u : 1u + (static_cast<size_t>(f.n()) - 1 + 4) / 5);
  }
}

TEST(GenerateMultimodal, PromptCacheIsNeitherUsedNorUpdated) {
  Fixture f;
  RecordingAttentionLM lm(f.tok->vocab_size());
  GenerationParams p;
  p.max_tokens = 4;
  PromptCache pc;
  GenerateRequest text{f.prompt, {}};
  GenerationResult first = generate(lm, *f.tok, {}, text, p, {}, &pc);
  const std::vector<int32_t> held = pc.tokens();
  ASSERT_FALSE(held.empty());
  // Same ids, different embeddings (as an image would give): nothing may be reused from the text run.
  MultimodalPrompt mm = plain_prompt(lm, f.prompt);
  for (int64_t i = 5; i < 10; ++i) mm.embeds.data<float>()[i * lm.hidden_size()] += 3.0f;
  GenerateRequest req{f.prompt, {}};
  req.multimodal = &mm;
  GenerationResult r = generate(lm, *f.tok, {}, req, p, {}, &pc);
  EXPECT_EQ(r.cached_prompt_tokens, 0);
  EXPECT_EQ(pc.tokens(), held) << "the prompt cache must not record a multimodal prompt";
  std::vector<float> want = one_shot_logits(lm, mm);
  EXPECT_EQ(r.tokens.front(), argmax(want.data(), lm.vocab_size()));
}

TEST(GenerateMultimodal, BidirectionalGroupsAreNeverSplitAndMatchOneForward) {
  Fixture f;
  RecordingAttentionLM lm(f.tok->vocab_size());
  MultimodalPrompt mm = plain_prompt(lm, f.prompt);
  // Two "images": positions [4, 12) and [15, 21), each attending within itself in both directions.
  mm.groups.assign(static_cast<size_t>(f.n()), 0);
  for (int64_t i = 4; i < 12; ++i) mm.groups[static_cast<size_t>(i)] = 1;
  for (int64_t i = 15; i < 21; ++i) mm.groups[static_cast<size_t>(i)] = 2;
  const std::vector<float> want = one_shot_logits(lm, mm);
  // The groups matter: causal-only logits differ.
  MultimodalPrompt causal = plain_prompt(lm, f.prompt);
  const std::vector<float> causal_logits = one_shot_logits(lm, causal);
  float diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff = std::max(diff, std::abs(want[i] - causal_logits[i]));
  ASSERT_GT(diff, 1e-3f) << "the group mask must change the model's output for this test to mean anything";

  std::vector<int32_t> tokens_at_2048;
  for (int64_t step : {2048, 1, 3, 5, 7, 9}) {
    std::vector<float> first;
    GenerationResult r = run(lm, f, &mm, step, 6, &first);
    // Chunk boundaries: never strictly inside [4, 12) or [15, 21).
    int64_t at = 0;
    for (const auto& c : lm.calls) {
      if (at >= f.n()) break;
      EXPECT_TRUE(c.grouped) << "prefill chunk at " << at << " lost the group mask";
      at += c.n;
      EXPECT_FALSE(at > 4 && at < 12) << "step " << step << " cut group 1 at " << at;
      EXPECT_FALSE(at > 15 && at < 21) << "step " << step << " cut group 2 at " << at;
    }
    EXPECT_EQ(at, f.n());
    ASSERT_EQ(first.size(), want.size());
    EXPECT_LT(max_rel_diff(first, want), 1e-5f) << "step " << step;
    EXPECT_EQ(r.tokens.front(), argmax(want.data(), lm.vocab_size())) << "step " << step;
    if (step == 2048) tokens_at_2048 = r.tokens;
    EXPECT_EQ(r.tokens, tokens_at_2048) << "step " << step;
  }
}

TEST(GenerateMultimodal, AGroupThatEndsThePromptIsFedWithTheLastToken) {
  // PaliGemma: image + prefix are one bidirectional block that reaches the last prompt token.
  Fixture f;
  RecordingAttentionLM lm(f.tok->vocab_size());
  MultimodalPrompt mm = plain_prompt(lm, f.prompt);
  mm.groups.assign(static_cast<size_t>(f.n()), 0);
  for (int64_t i = 10; i < f.n(); ++i) mm.groups[static_cast<size_t>(i)] = 7;
  const std::vector<float> want = one_shot_logits(lm, mm);
  for (int64_t step : {2048, 4}) {
    std::vector<float> first;
    run(lm, f, &mm, step, 3, &first);
    int64_t at = 0;
    size_t i = 0;
    for (; at < f.n(); ++i) at += lm.calls[i].n;
    EXPECT_EQ(lm.calls[i - 1].n, f.n() - 10) << "the final chunk is the whole trailing group";
    ASSERT_EQ(first.size(), want.size());
    EXPECT_LT(max_rel_diff(first, want), 1e-5f) << "step " << step;
  }
  // A group longer than the step is fed whole.
  mm.groups.assign(static_cast<size_t>(f.n()), 0);
  for (int64_t i = 2; i < 20; ++i) mm.groups[static_cast<size_t>(i)] = 1;
  run(lm, f, &mm, 4, 2);
  bool whole = false;
  int64_t at = 0;
  for (const auto& c : lm.calls) {
    if (at <= 2 && at + c.n >= 20) whole = true;
    at += c.n;
    if (at >= f.n()) break;
  }
  EXPECT_TRUE(whole) << "an 18-position group must sit in one chunk even with step 4";
}

TEST(GenerateMultimodal, MropePositionsAreSlicedPerChunkAndDecodeContinuesAtRopeDelta) {
  Fixture f;
  RecordingAttentionLM lm(f.tok->vocab_size());
  const int64_t n = f.n();
  MultimodalPrompt mm = plain_prompt(lm, f.prompt);
  // Qwen-style [3, n] (get_rope_index): text positions equal on all rows, an "image" at [6, 14) laid out as a
  // 2x4 grid at t = 6, text after it continuing at max + 1 = 10; decode continues at n + rope_delta = next.
  mm.dims = 3;
  mm.positions.assign(static_cast<size_t>(3 * n), 0);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t t = next, h = next, w = next;
    if (i >= 6 && i < 14) {
      t = 6;
      h = 6 + (i - 6) / 4;
      w = 6 + (i - 6) % 4;
      if (i == 13) next = 6 + 4;  // max(t, h, w) + 1 over the image
    } else {
      ++next;
    }
    mm.positions[static_cast<size_t>(i)] = t;
    mm.positions[static_cast<size_t>(n + i)] = h;
    mm.positions[static_cast<size_t>(2 * n + i)] = w;
  }
  mm.rope_delta = next - n;  // the next text position minus the prompt length (negative here)
  const std::vector<float> want = one_shot_logits(lm, mm);
  std::vector<int32_t> tokens_one_chunk;
  for (int64_t step : {2048, 4}) {
    std::vector<float> first;
    GenerationResult r = run(lm, f, &mm, step, 5, &first);
    int64_t at = 0;
    size_t i = 0;
    for (; at < n; ++i) {
      const auto& c = lm.calls[i];
      ASSERT_EQ(c.dims, 3);
      for (int row = 0; row < 3; ++row)
        for (int64_t k = 0; k < c.n; ++k)
          ASSERT_EQ(c.positions[static_cast<size_t>(row * c.n + k)],
                    mm.positions[static_cast<size_t>(row * n + at + k)])
              << "step " << step << " row " << row << " position " << at + k;
      at += c.n;
    }
    ASSERT_EQ(first.size(), want.size());
    EXPECT_LT(max_rel_diff(first, want), 1e-5f) << "step " << step;
    // Decode: one token each, 3 equal rows at (tokens so far + rope_delta).
    ASSERT_EQ(lm.calls.size() - i, static_cast<size_t>(r.generation_tokens - 1));
    for (size_t d = i; d < lm.calls.size(); ++d) {
      const auto& c = lm.calls[d];
      const int64_t want_pos = n + static_cast<int64_t>(d - i) + mm.rope_delta;
      ASSERT_EQ(c.n, 1);
      ASSERT_EQ(c.dims, 3);
      EXPECT_EQ(c.positions, std::vector<int64_t>(3, want_pos)) << "decode step " << d - i;
      EXPECT_FALSE(c.grouped);
    }
    if (step == 2048) tokens_one_chunk = r.tokens;
    EXPECT_EQ(r.tokens, tokens_one_chunk);
  }
  // Greedy decode queued one step ahead (generate()'s loop on a GPU, forced here): the same tokens, and the
  // same decode positions, passed to each step when it is queued.
  setenv("VLMCHECK_QUEUED_DECODE", "1", 1);
  GenerationResult q = run(lm, f, &mm, 2048, 5);
  unsetenv("VLMCHECK_QUEUED_DECODE");
  EXPECT_EQ(q.tokens, tokens_one_chunk);
  ASSERT_GE(lm.calls.size(), static_cast<size_t>(q.generation_tokens - 1));
  const size_t first_decode = lm.calls.size() - static_cast<size_t>(q.generation_tokens - 1);
  for (size_t d = first_decode; d < lm.calls.size(); ++d)
    EXPECT_EQ(lm.calls[d].positions, std::vector<int64_t>(3, n + static_cast<int64_t>(d - first_decode) + mm.rope_delta))
        << "queued decode step " << d - first_decode;
}

TEST(GenerateMultimodal, MalformedPromptsAreRefusedNamingTheField) {
  Fixture f;
  RecordingAttentionLM lm(f.tok->vocab_size());
  auto expect_error = [&](MultimodalPrompt mm, const std::string& needle) {
    try {
      run(lm, f, &mm, 2048, 2);
      ADD_FAILURE() << "accepted a prompt with bad " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  MultimodalPrompt short_embeds = plain_prompt(lm, std::vector<int32_t>(f.prompt.begin(), f.prompt.end() - 1));
  short_embeds.positions.push_back(f.n() - 1);
  expect_error(std::move(short_embeds), "embeds");
  MultimodalPrompt bad_positions = plain_prompt(lm, f.prompt);
  bad_positions.dims = 3;
  expect_error(std::move(bad_positions), "positions");
  MultimodalPrompt bad_dims = plain_prompt(lm, f.prompt);
  bad_dims.dims = 2;
  expect_error(std::move(bad_dims), "1 or 3 rows");
  MultimodalPrompt bad_groups = plain_prompt(lm, f.prompt);
  bad_groups.groups.assign(3, 1);
  expect_error(std::move(bad_groups), "groups");
}

}  // namespace
}  // namespace vlm
