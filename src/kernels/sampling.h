// The sampler chain's semantics in one home (ops::sample, ops.h): the CPU op and the chain's pieces
// (cpu/ref/ref_sample.cpp, which generate/sampler.cpp calls for its public filters and processors)
// and the CUDA kernels (cuda/sample.cu) share the per-element arithmetic below, so both devices pick
// the same token for the same uniform u. Order and corners follow mlx-vlm (mlx_lm/sample_utils.py):
//
//   logits ─ logit_bias ─ repetition ─ presence ─ frequency          (per token id: apply_logit_edit)
//          ─ logprobs = (x - max) - log(Σ exp(x - max))   (exp and Σ in double, the log rounded to f32)
//          ─ temperature 0: argmax (first maximum), filters skipped
//          ─ top_p ─ min_p ─ top_k     (on the UNSCALED logprobs; a removed token becomes -inf)
//          ─ categorical(logprobs / temperature) by inverse CDF at u
//
// * repetition (CTRL): each distinct id of its window: l < 0 ? l * p : l / p. presence: minus p once
//   per distinct id; frequency: minus p once per occurrence (sequential float subtractions, as mlx's
//   .at[].subtract). A window is the last `context` ids of the history, all of it for context 0.
// * top_p (0 < top_p < 1): ascending order, ties by id (stable sort); a token is kept iff the
//   inclusive cumulative probability is > 1 - top_p. The probabilities are exp(logprob) in double,
//   clamped to [0, 1], as fixed-point integers of 2^-56 (prob_fixed), so the cumulative sums are
//   exact and do not depend on summation order: CPU and CUDA keep the same set. (mlx sums float32 in
//   its scan's order; ours differs from that only where a sum sits within rounding of 1 - top_p.)
// * min_p (!= 0): keep logprob >= max + log(min_p) (log in f32 on the host) and the
//   min_tokens_to_keep best (1 in the chain; the best always passes the threshold).
// * top_k (0 < k < vocab): keep the k largest, ties at the boundary to the lower ids.
// * categorical: w_i = exp(lp_i / T - max_j lp_j / T) in double (0 for removed tokens), target =
//   u * Σ w; the first id whose cumulative weight exceeds target, else (rounding) the last id with
//   w > 0, else 0. The CUDA draw sums in another order than the CPU's sequential loop, so the two can
//   differ only where target lies within a few double ulps of a cumulative boundary.
// * log-softmax: the CUDA sum of exp in double runs in another order too; its f32 log agrees with the
//   CPU's unless the double sums straddle an f32 rounding boundary (~1e-9 of rows).
// Every device-side expression is written without FMA contraction (__dmul_rn / __dsub_rn), matching
// the CPU build, which compiles this file without FMA.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/ops.h"

#if defined(__CUDACC__)
#define VLM_SAMPLE_HD __host__ __device__ __forceinline__
#else
#define VLM_SAMPLE_HD inline
#endif

namespace vlm::ops::sampling {

// ---- the logits processors as per-token edits --------------------------------------------------------
// Every id a processor touches, once, with what each processor does to it. Composing the processors
// per id gives the same floats as running them one after another over the row (each touches only its
// own ids), which lets a device apply them in parallel.
struct LogitEdit {
  int32_t id = 0;
  float bias = 0.0f;
  int32_t frequency = 0;  // occurrences in the frequency window
  uint8_t has_bias = 0, repetition = 0, presence = 0;
};
// Sorted by id, distinct. Throws Error(kInvalidArgument) naming the processor for an id outside
// [0, vocab), as the processors themselves do.
std::vector<LogitEdit> plan_logit_edits(const SamplingSpec& spec, const int32_t* history, int64_t n_history,
                                        int64_t vocab);

VLM_SAMPLE_HD float apply_logit_edit(float l, const LogitEdit& e, float repetition, float presence,
                                     float frequency) {
  if (e.has_bias) l += e.bias;
  if (e.repetition) l = l < 0 ? l * repetition : l / repetition;
  if (e.presence) l -= presence;
  for (int32_t i = 0; i < e.frequency; ++i) l -= frequency;
  return l;
}

// ---- shared arithmetic ----------------------------------------------------------------------------------
inline constexpr double kProbScale = 0x1p56;  // fixed-point unit of top_p's probabilities

// exp(logprob) in double, clamped to [0, 1] (values above 0 are not log-probabilities), as an
// integer multiple of 2^-56 rounded to nearest even. Σ over a normalised row stays below 2^57.
VLM_SAMPLE_HD uint64_t prob_fixed(float logprob) {
#if defined(__CUDA_ARCH__)
  double p = exp(static_cast<double>(logprob));
  p = p > 1.0 ? 1.0 : (p >= 0.0 ? p : 0.0);
  return __double2ull_rn(__dmul_rn(p, kProbScale));
#else
  double p = std::exp(static_cast<double>(logprob));
  p = p > 1.0 ? 1.0 : (p >= 0.0 ? p : 0.0);
  return static_cast<uint64_t>(std::nearbyint(p * kProbScale));
#endif
}

// top_p keeps a token iff its cumulative fixed-point sum is > this (an integer cum exceeds the real
// (1 - top_p) * 2^56 iff it exceeds its floor). Host only.
inline uint64_t top_p_threshold(float top_p) {
  const float t = 1.0f - top_p;
  return static_cast<uint64_t>(std::floor(static_cast<double>(t) * kProbScale));
}

// Order-preserving key of a float: a < b iff key(a) < key(b); -0 and +0 share a key (they compare
// equal, so a stable sort keeps them in id order). NaN is not supported.
VLM_SAMPLE_HD uint32_t order_key(float v) {
  if (v == 0.0f) v = 0.0f;
  uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(v);
#else
  std::memcpy(&u, &v, 4);
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// logprob / temperature as the draw scales it: double(lp) * (1 / T).
VLM_SAMPLE_HD double scaled_logprob(float lp, double inv_t) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(static_cast<double>(lp), inv_t);
#else
  return static_cast<double>(lp) * inv_t;
#endif
}

// The draw's weight of one token: 0 when removed, else exp(lp / T - max_scaled).
VLM_SAMPLE_HD double categorical_weight(float lp, double inv_t, double max_scaled) {
  if (lp == -INFINITY) return 0.0;
#if defined(__CUDA_ARCH__)
  return exp(__dsub_rn(scaled_logprob(lp, inv_t), max_scaled));
#else
  return std::exp(scaled_logprob(lp, inv_t) - max_scaled);
#endif
}

// ---- the CPU implementation (cpu/ref/ref_sample.cpp) ------------------------------------------------------
// Each edits a row in place; semantics above.
void apply_logit_edits(float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
                       int64_t n_history);
void log_softmax_inplace(float* x, int64_t vocab);  // throws when every value is -inf or NaN
void apply_top_p(float* logprobs, int64_t vocab, float top_p);
void apply_min_p(float* logprobs, int64_t vocab, float min_p, int64_t min_tokens_to_keep = 1);
void apply_top_k(float* logprobs, int64_t vocab, int64_t top_k);
// One draw from softmax(logprobs / temperature) at u (temperature > 0).
int32_t sample_categorical(const float* logprobs, int64_t vocab, float temperature, double u);
// The sampler half on logprobs (copied, not modified): argmax for temperature 0, else the active
// filters and the draw.
int32_t sample_logprobs(const float* logprobs, int64_t vocab, const SamplingSpec& spec, double u);
// The whole op on host memory (the CPU backend's ops::sample).
void sample(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
            int64_t n_history, double u, int32_t* id);

}  // namespace vlm::ops::sampling
