// The sampler chain: each filter and processor alone on hand-worked examples, then the draws checked
// statistically (chi-square and total variation over many seeded draws) against the distribution the
// chain must produce, seeded reproducibility, and custom processors/samplers through the public API.
// The built-in chain runs as one op (ops::sample, kernels/sampling.h); OpEqualsTheChainOfPieces checks
// it against the same chain composed from the public processors, log-softmax and make_sampler, and
// TopPExactSumsAgreeWithLongDouble checks top_p's fixed-point sums against an independent oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "generate/sampler.h"
#include "kernels/ops.h"

namespace vlm {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> logprobs_of(const std::vector<double>& probs) {
  std::vector<float> lp;
  for (double p : probs) lp.push_back(p > 0 ? static_cast<float>(std::log(p)) : -kInf);
  return lp;
}

struct Fit {
  double chi2 = 0, tv = 0;
  int df = 0;
  bool impossible_drawn = false;
};

// Draws `n` tokens with `sampler` and compares the histogram with `expected` (sums to 1).
Fit fit(const Sampler& sampler, const std::vector<float>& lp, const std::vector<double>& expected, int n) {
  std::vector<int64_t> counts(expected.size());
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(sampler(lp.data(), static_cast<int64_t>(lp.size())))];
  Fit f;
  for (size_t i = 0; i < expected.size(); ++i) {
    double e = expected[i] * n;
    f.tv += std::fabs(static_cast<double>(counts[i]) / n - expected[i]) / 2;
    if (expected[i] == 0) {
      f.impossible_drawn |= counts[i] > 0;
      continue;
    }
    f.chi2 += (counts[i] - e) * (counts[i] - e) / e;
    ++f.df;
  }
  f.df -= 1;
  return f;
}

// chi2 below df + 8 sqrt(2 df) (a false alarm is ~1e-9 likely); TV below 0.01 at 200k draws.
void expect_fits(const Fit& f, const char* what) {
  EXPECT_FALSE(f.impossible_drawn) << what << ": drew a token the chain must have removed";
  if (f.df > 0) {
    EXPECT_LT(f.chi2, f.df + 8 * std::sqrt(2.0 * f.df)) << what << " (df " << f.df << ")";
  }
  EXPECT_LT(f.tv, 0.01) << what;
}

std::vector<double> normalized(std::vector<double> w) {
  double s = 0;
  for (double x : w) s += x;
  for (double& x : w) x /= s;
  return w;
}

constexpr int kDraws = 200000;

// ---- filters alone, on hand-worked examples ---------------------------------------------------------

TEST(Filters, TopPKeepsTheSmallestHeadWhoseMassReachesP) {
  // probs 0.5, 0.25, 0.15, 0.1 at top_p 0.7: ascending cumulative sums 0.1, 0.25, 0.5, 1.0; keep > 0.3.
  auto lp = logprobs_of({0.25, 0.1, 0.5, 0.15});
  apply_top_p(lp.data(), 4, 0.7f);
  EXPECT_TRUE(std::isfinite(lp[0]) && std::isfinite(lp[2]));
  EXPECT_EQ(lp[1], -kInf);
  EXPECT_EQ(lp[3], -kInf);
  // Values are left unscaled (filters act on logprobs; temperature comes later).
  EXPECT_FLOAT_EQ(lp[2], std::log(0.5f));
}

TEST(Filters, TopPTiesGoToTheHigherIdInAscendingOrder) {
  // Four equal tokens at top_p 0.5: cumulative 0.25, 0.5, 0.75, 1.0 in id order; keep > 0.5 → ids 2, 3.
  auto lp = logprobs_of({0.25, 0.25, 0.25, 0.25});
  apply_top_p(lp.data(), 4, 0.5f);
  EXPECT_EQ(lp[0], -kInf);
  EXPECT_EQ(lp[1], -kInf);
  EXPECT_TRUE(std::isfinite(lp[2]) && std::isfinite(lp[3]));
}

TEST(Filters, MinPRelativeToTheBestToken) {
  // max prob 0.4; min_p 0.3 → threshold 0.12: keeps 0.4, 0.3, 0.15, drops 0.1 and 0.05.
  auto lp = logprobs_of({0.1, 0.4, 0.05, 0.3, 0.15});
  apply_min_p(lp.data(), 5, 0.3f);
  EXPECT_EQ(lp[0], -kInf);
  EXPECT_EQ(lp[2], -kInf);
  EXPECT_TRUE(std::isfinite(lp[1]) && std::isfinite(lp[3]) && std::isfinite(lp[4]));
  // min_tokens_to_keep keeps the best ones even below the threshold.
  auto lp2 = logprobs_of({0.1, 0.4, 0.05, 0.3, 0.15});
  apply_min_p(lp2.data(), 5, 0.99f, 3);
  EXPECT_TRUE(std::isfinite(lp2[1]) && std::isfinite(lp2[3]) && std::isfinite(lp2[4]));
  EXPECT_EQ(lp2[0], -kInf);
  EXPECT_THROW(apply_min_p(lp2.data(), 5, 1.5f), Error);
}

TEST(Filters, TopKKeepsKLargestTiesToLowerId) {
  auto lp = logprobs_of({0.1, 0.3, 0.2, 0.2, 0.2});
  apply_top_k(lp.data(), 5, 2);
  EXPECT_TRUE(std::isfinite(lp[1]) && std::isfinite(lp[2]));
  EXPECT_EQ(lp[0], -kInf);
  EXPECT_EQ(lp[3], -kInf);
  EXPECT_EQ(lp[4], -kInf);
  auto all = logprobs_of({0.5, 0.5});
  apply_top_k(all.data(), 2, 5);  // k >= vocab keeps everything
  EXPECT_TRUE(std::isfinite(all[0]) && std::isfinite(all[1]));
}

TEST(Filters, ArgmaxIsFirstMaximum) {
  std::vector<float> x = {1, 3, 3, 2};
  EXPECT_EQ(argmax(x.data(), 4), 1);
}

TEST(Filters, LogSoftmaxNormalizes) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f};  // large values: must not overflow
  log_softmax_inplace(x.data(), 3);
  double s = 0;
  for (float v : x) s += std::exp(static_cast<double>(v));
  EXPECT_NEAR(s, 1.0, 1e-6);
  std::vector<float> banned = {-kInf, -kInf};
  EXPECT_THROW(log_softmax_inplace(banned.data(), 2), Error);
}

// ---- processors --------------------------------------------------------------------------------------

TEST(Processors, RepetitionPenaltyIsCtrlStyleOncePerDistinctToken) {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f, 4.0f, 0.5f};
  // History: prompt [3, 0] then generated [1, 1, 0]; context 4 → last four: 0, 1, 1, 0 → tokens {0, 1}.
  std::vector<int32_t> history = {3, 0, 1, 1, 0};
  make_repetition_penalty(2.0f, 4)(history, logits.data(), 5);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);   // positive: divided (once, although it appears twice)
  EXPECT_FLOAT_EQ(logits[1], -4.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(logits[3], 4.0f);   // outside the window: untouched
  // Context 0 covers the whole history (Python's tokens[-0:]), so the prompt's 3 is penalised too.
  std::vector<float> l2 = {2.0f, -2.0f, 1.0f, 4.0f, 0.5f};
  make_repetition_penalty(2.0f, 0)(history, l2.data(), 5);
  EXPECT_FLOAT_EQ(l2[3], 2.0f);
}

TEST(Processors, PresenceOncePerTokenFrequencyPerOccurrence) {
  std::vector<int32_t> history = {2, 2, 2, 1};
  std::vector<float> a = {0, 0, 0}, b = {0, 0, 0};
  make_presence_penalty(0.5f, 20)(history, a.data(), 3);
  make_frequency_penalty(0.5f, 20)(history, b.data(), 3);
  EXPECT_FLOAT_EQ(a[2], -0.5f);
  EXPECT_FLOAT_EQ(a[1], -0.5f);
  EXPECT_FLOAT_EQ(a[0], 0.0f);
  EXPECT_FLOAT_EQ(b[2], -1.5f);
  EXPECT_FLOAT_EQ(b[1], -0.5f);
  // Context windows: only the last 2 tokens (2, 1) count.
  std::vector<float> c = {0, 0, 0};
  make_frequency_penalty(0.5f, 2)(history, c.data(), 3);
  EXPECT_FLOAT_EQ(c[2], -0.5f);
}

TEST(Processors, OrderIsBiasRepetitionPresenceFrequencyThenUser) {
  GenerationParams p;
  p.logit_bias = {{0, 3.0f}};
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 1.0f;
  p.frequency_penalty = 0.25f;
  std::vector<std::string> order;
  p.logits_processors.push_back([&](const std::vector<int32_t>&, float* l, int64_t) {
    order.push_back("user");
    // Sees the built-ins' result: ((1 + 3) / 2 - 1 - 0.25 * 2) = 0.5
    EXPECT_FLOAT_EQ(l[0], 0.5f);
  });
  auto procs = make_logits_processors(p);
  ASSERT_EQ(procs.size(), 5u);
  std::vector<float> logits = {1.0f, 0.0f};
  std::vector<int32_t> history = {0, 0};
  for (auto& f : procs) f(history, logits.data(), 2);
  EXPECT_EQ(order.size(), 1u);
  // Bias after the penalties would give (1/2 - 1 - 0.5) + 3 = 2; applying it first gives 0.5.
  EXPECT_FLOAT_EQ(logits[0], 0.5f);
  // Disabled when unset or 0 (mlx: `if penalty and penalty != 0`).
  GenerationParams none;
  none.repetition_penalty = 0.0f;
  EXPECT_TRUE(make_logits_processors(none).empty());
}

TEST(Processors, OutOfVocabularyIdsAreErrors) {
  std::vector<float> logits = {0, 0};
  EXPECT_THROW(make_logit_bias_processor({{5, 1.0f}})({}, logits.data(), 2), Error);
}

// ---- statistical checks of the draws -------------------------------------------------------------------

TEST(Draws, TemperatureScalesTheDistribution) {
  std::vector<double> p = {0.5, 0.3, 0.15, 0.05};
  auto lp = logprobs_of(p);
  for (float t : {1.0f, 0.5f, 2.0f}) {
    std::vector<double> w;
    for (double x : p) w.push_back(std::pow(x, 1.0 / t));
    expect_fits(fit(make_sampler(t, 1.0f, 0.0f, 0, 42), lp, normalized(w), kDraws), "temperature");
  }
}

TEST(Draws, EachFilterAlone) {
  std::vector<double> p = {0.05, 0.3, 0.1, 0.35, 0.2};
  auto lp = logprobs_of(p);
  // top_p 0.6: ascending 0.05, 0.1, 0.2 (cum 0.35 <= 0.4 removed), 0.3 kept, 0.35 kept.
  expect_fits(fit(make_sampler(1.0f, 0.6f, 0.0f, 0, 1), lp, normalized({0, 0.3, 0, 0.35, 0}), kDraws), "top_p");
  // min_p 0.5: threshold 0.175 → keeps 0.3, 0.35, 0.2.
  expect_fits(fit(make_sampler(1.0f, 1.0f, 0.5f, 0, 2), lp, normalized({0, 0.3, 0, 0.35, 0.2}), kDraws), "min_p");
  // top_k 2 → 0.35, 0.3.
  expect_fits(fit(make_sampler(1.0f, 1.0f, 0.0f, 2, 3), lp, normalized({0, 0.3, 0, 0.35, 0}), kDraws), "top_k");
}

TEST(Draws, FiltersUseUnscaledLogprobsThenTemperature) {
  // min_p 0.2 on probs {0.4, 0.25, 0.15, 0.1, 0.06, 0.04}: threshold 0.08 keeps four; temperature 2
  // then draws ∝ p^(1/2) over those four. (Had min_p seen logprobs / temperature, whose relative
  // probabilities are sqrt(p / 0.4), it would have kept all six.)
  std::vector<double> p = {0.4, 0.25, 0.15, 0.1, 0.06, 0.04};
  auto lp = logprobs_of(p);
  std::vector<double> want = normalized({std::sqrt(0.4), std::sqrt(0.25), std::sqrt(0.15), std::sqrt(0.1), 0, 0});
  expect_fits(fit(make_sampler(2.0f, 1.0f, 0.2f, 0, 4), lp, want, kDraws), "min_p + temperature");
  // top_p 0.75: ascending cumulative .04 .10 .20 .35 .60 1.0, keep > 0.25 → {0.15, 0.25, 0.4};
  // then top_k 2 → {0.4, 0.25}; then temperature 2.
  std::vector<double> want2 = normalized({std::sqrt(0.4), std::sqrt(0.25), 0, 0, 0, 0});
  expect_fits(fit(make_sampler(2.0f, 0.75f, 0.0f, 2, 5), lp, want2, kDraws), "top_p + top_k + temperature");
  // top_p then min_p: top_p 0.75 keeps {0.4, 0.25, 0.15}; min_p 0.5 (threshold 0.2) keeps {0.4, 0.25}.
  expect_fits(fit(make_sampler(1.0f, 0.75f, 0.5f, 0, 6), lp, normalized({0.4, 0.25, 0, 0, 0, 0}), kDraws),
              "top_p + min_p");
}

TEST(Draws, WholeChainMatchesHandDerivedDistribution) {
  // logits {2, 1, 0, -1}; history [0, 3]; logit_bias {2: +1}; repetition 2 (token 0: 2 → 1; token 3:
  // -1 → -2); presence 0.5 on {0, 3}: {0.5, 1, 1, -2.5}; temperature 0.5 → weights e^(2 x).
  GenerationParams params;
  params.logit_bias = {{2, 1.0f}};
  params.repetition_penalty = 2.0f;
  params.presence_penalty = 0.5f;
  params.temperature = 0.5f;
  SamplingChain chain(params, 99);
  std::vector<double> want = normalized({std::exp(1.0), std::exp(2.0), std::exp(2.0), std::exp(-5.0)});
  std::vector<int64_t> counts(4);
  for (int i = 0; i < kDraws; ++i) {
    std::vector<float> logits = {2, 1, 0, -1};
    ++counts[static_cast<size_t>(chain.next({0, 3}, logits.data(), 4))];
  }
  double chi2 = 0;
  for (size_t i = 0; i < 4; ++i) chi2 += std::pow(counts[i] - want[i] * kDraws, 2) / (want[i] * kDraws);
  EXPECT_LT(chi2, 3 + 8 * std::sqrt(6.0));
}

TEST(Draws, SeededRunsReproduceAndSeedsDiffer) {
  auto lp = logprobs_of({0.2, 0.2, 0.2, 0.2, 0.2});
  auto run = [&](uint64_t seed) {
    auto s = make_sampler(1.0f, 1.0f, 0.0f, 0, seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s(lp.data(), 5));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
  // Rng is pinned: the first outputs of seed 0 never change across platforms or releases.
  Rng r(0);
  uint64_t first = r.next();
  Rng r2(0);
  EXPECT_EQ(first, r2.next());
  double u = Rng(123).uniform();
  EXPECT_GE(u, 0.0);
  EXPECT_LT(u, 1.0);
}

TEST(Draws, TemperatureZeroIsArgmaxWhateverTheFilters) {
  auto lp = logprobs_of({0.1, 0.6, 0.3});
  auto s = make_sampler(0.0f, 0.5f, 0.5f, 1, 1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(s(lp.data(), 3), 1);
}

// ---- public API: custom processor and sampler -----------------------------------------------------------

TEST(PublicApi, CustomProcessorAndSamplerReplaceTheBuiltIns) {
  GenerationParams params;
  params.temperature = 1.0f;
  // A processor that bans every token but the last history token + 1.
  params.logits_processors.push_back([](const std::vector<int32_t>& h, float* l, int64_t vocab) {
    for (int64_t i = 0; i < vocab; ++i)
      if (i != h.back() + 1) l[i] = -kInf;
  });
  SamplingChain chain(params, 5);
  std::vector<float> logits = {5, 4, 3, 2, 1};
  EXPECT_EQ(chain.next({1}, logits.data(), 5), 2);
  // A custom sampler receives normalised logprobs and its answer is used as is.
  GenerationParams p2;
  std::vector<float> seen;
  p2.sampler = [&](const float* lp, int64_t vocab) {
    seen.assign(lp, lp + vocab);
    return static_cast<int32_t>(vocab - 1);
  };
  SamplingChain c2(p2, 0);
  std::vector<float> l2 = {3, 1, 0};
  EXPECT_EQ(c2.next({}, l2.data(), 3), 2);
  double s = 0;
  for (float v : seen) s += std::exp(static_cast<double>(v));
  EXPECT_NEAR(s, 1.0, 1e-6);
  // A sampler answering outside the vocabulary is an error, not a crash later.
  GenerationParams p3;
  p3.sampler = [](const float*, int64_t) { return 7; };
  SamplingChain c3(p3, 0);
  std::vector<float> l3 = {0, 0};
  EXPECT_THROW(c3.next({}, l3.data(), 2), Error);
}

TEST(Params, ValidateNamesTheParameter) {
  auto bad = [](std::function<void(GenerationParams&)> edit, const char* name) {
    GenerationParams p;
    edit(p);
    try {
      p.validate();
      ADD_FAILURE() << name << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  bad([](auto& p) { p.top_p = 1.5f; }, "top_p");
  bad([](auto& p) { p.top_p = -0.1f; }, "top_p");
  bad([](auto& p) { p.temperature = -1.0f; }, "temperature");
  bad([](auto& p) { p.min_p = 2.0f; }, "min_p");
  bad([](auto& p) { p.top_k = -1; }, "top_k");
  bad([](auto& p) { p.kv_bits = 1; }, "kv_bits");
  bad([](auto& p) { p.kv_bits = 9; }, "kv_bits");
  bad([](auto& p) { p.kv_group_size = 16; }, "kv_group_size");
  bad([](auto& p) { p.repetition_penalty = -1.0f; }, "repetition_penalty");
  bad([](auto& p) { p.max_kv_size = 3; }, "max_kv_size");
  bad([](auto& p) { p.prefill_step_size = 0; }, "prefill_step_size");
  bad([](auto& p) { p.max_tokens = -5; }, "max_tokens");
  bad([](auto& p) { p.quantized_kv_start = -1; }, "quantized_kv_start");
  bad([](auto& p) { p.thinking_budget = -1; }, "thinking_budget");
  bad([](auto& p) { p.logit_bias[3] = std::nanf(""); }, "logit_bias");
  GenerationParams ok;
  ok.kv_bits = 3;
  ok.top_p = 1.0f;
  ok.logit_bias[3] = -kInf;  // a ban is fine
  EXPECT_NO_THROW(ok.validate());
}


// ---- the chain as one op ---------------------------------------------------------------------------------

// A logits row with many exact ties (values on a 0.25 grid) and a few banned (-inf) tokens.
std::vector<float> tied_row(std::mt19937& rng, int64_t vocab) {
  std::uniform_int_distribution<int> level(-24, 24);
  std::vector<float> x(static_cast<size_t>(vocab));
  for (float& v : x) v = 0.25f * static_cast<float>(level(rng));
  return x;
}

// For many rows, histories and knob sets (each processor and filter alone, then all together), the
// built-in chain (one ops::sample call on the CPU) and the same chain run piece by piece (a no-op
// user processor sends SamplingChain through make_logits_processors, log_softmax_inplace and
// make_sampler, each with its own Rng of the same seed) pick the same ids, token after token.
TEST(SampleOp, OpEqualsTheChainOfPieces) {
  std::mt19937 rng(1234);
  struct Knobs {
    const char* what;
    std::function<void(GenerationParams&)> set;
  };
  const std::vector<Knobs> knobs = {
      {"temperature", [](GenerationParams& p) { p.temperature = 0.7f; }},
      {"greedy with penalties", [](GenerationParams& p) { p.repetition_penalty = 1.3f; }},
      {"top_p", [](GenerationParams& p) { p.temperature = 1.0f, p.top_p = 0.8f; }},
      {"min_p", [](GenerationParams& p) { p.temperature = 1.0f, p.min_p = 0.1f; }},
      {"top_k", [](GenerationParams& p) { p.temperature = 1.0f, p.top_k = 7; }},
      {"penalties", [](GenerationParams& p) {
         p.temperature = 0.9f;
         p.repetition_penalty = 1.5f;
         p.repetition_context_size = 6;
         p.presence_penalty = 0.4f;
         p.frequency_penalty = 0.3f;
         p.frequency_context_size = 0;
         p.logit_bias = {{3, 2.0f}, {5, -std::numeric_limits<float>::infinity()}};
       }},
      {"everything", [](GenerationParams& p) {
         p.temperature = 0.8f;
         p.top_p = 0.9f;
         p.top_k = 20;
         p.min_p = 0.05f;
         p.repetition_penalty = 1.1f;
         p.presence_penalty = 0.2f;
       }},
  };
  for (const Knobs& k : knobs)
    for (int64_t vocab : {int64_t{9}, int64_t{300}, int64_t{5000}}) {
      GenerationParams params;
      k.set(params);
      GenerationParams pieces = params;
      pieces.logits_processors.push_back([](const std::vector<int32_t>&, float*, int64_t) {});
      SamplingChain op_chain(params, 77), piece_chain(pieces, 77);
      ASSERT_TRUE(op_chain.builtin());
      ASSERT_FALSE(piece_chain.builtin());
      std::vector<int32_t> history;
      std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(vocab - 1));
      for (int i = 0; i < 12; ++i) history.push_back(any(rng));
      for (int step = 0; step < 60; ++step) {
        std::vector<float> a = tied_row(rng, vocab), b = a;
        const int32_t want = piece_chain.next(history, b.data(), vocab);
        const int32_t got = op_chain.next(history, a.data(), vocab);
        ASSERT_EQ(got, want) << k.what << ", vocab " << vocab << ", step " << step;
        history.push_back(got);
      }
    }
}

// top_p's kept set from exact fixed-point sums equals the one from long-double cumulative sums of the
// same probabilities in the same (stable ascending) order, wherever the long-double sum is not within
// 1e-13 of 1 - top_p (the fixed point's rounding, 2^-57 per token, summed over the row).
TEST(SampleOp, TopPExactSumsAgreeWithLongDouble) {
  std::mt19937 rng(55);
  int compared = 0;
  for (int row = 0; row < 200; ++row) {
    const int64_t vocab = 50 + row * 7;
    std::vector<float> lp = tied_row(rng, vocab);
    log_softmax_inplace(lp.data(), vocab);
    const float top_p = std::uniform_real_distribution<float>(0.05f, 0.99f)(rng);
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return lp[x] < lp[y]; });
    long double cum = 0;
    std::vector<bool> want(static_cast<size_t>(vocab));
    bool near = false;
    for (int32_t id : order) {
      cum += std::exp(static_cast<long double>(static_cast<double>(lp[id])));
      want[static_cast<size_t>(id)] = cum > static_cast<long double>(1.0f - top_p);
      near = near || std::fabs(static_cast<double>(cum - static_cast<long double>(1.0f - top_p))) < 1e-13;
    }
    if (near) continue;
    std::vector<float> got = lp;
    apply_top_p(got.data(), vocab, top_p);
    for (int64_t i = 0; i < vocab; ++i)
      ASSERT_EQ(std::isfinite(got[static_cast<size_t>(i)]), want[static_cast<size_t>(i)])
          << "row " << row << " id " << i << " top_p " << top_p;
    ++compared;
  }
  EXPECT_GT(compared, 190);
}

// The op's argument checks name the knob, and a history id outside the vocabulary is an error.
TEST(SampleOp, BadArgumentsAreTypedErrors) {
  std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  int32_t id = -1;
  ops::SamplingSpec s;
  s.temperature = -1.0f;
  EXPECT_THROW(ops::sample(logits.data(), 3, s, nullptr, 0, 0.5, &id), Error);
  s = {};
  s.top_k = -2;
  EXPECT_THROW(ops::sample(logits.data(), 3, s, nullptr, 0, 0.5, &id), Error);
  s = {};
  s.repetition_penalty = 1.2f;
  const int32_t bad[] = {0, 7};
  try {
    ops::sample(logits.data(), 3, s, bad, 2, 0.5, &id);
    ADD_FAILURE() << "history id 7 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("repetition_penalty history"), std::string::npos) << e.what();
  }
  s = {};
  s.logit_bias = {{0, -kInf}, {1, -kInf}, {2, -kInf}};
  EXPECT_THROW(ops::sample(logits.data(), 3, s, nullptr, 0, 0.5, &id), Error);
  s = {};
  ops::sample(logits.data(), 3, s, nullptr, 0, 0.0, &id);
  EXPECT_EQ(id, 2);
}

}  // namespace
}  // namespace vlm
