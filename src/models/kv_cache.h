// The KV-cache seam between models and generation. A model's attention layer hands the cache the
// new tokens' q/k/v; the cache stores k/v in its own format (full, rotating, quantized, quantized +
// rotating; implementations in src/generate/) and computes attention of q over everything it holds.
// Models therefore never see the storage layout, and a new cache type needs no model change.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/ops.h"

namespace vlm {

struct LayerAttentionSpec {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;            // usually 1/sqrt(head_dim); Gemma: query_pre_attn_scalar^-0.5
  float softcap = 0.0f;          // attention logit soft-capping (Gemma 2), 0 = off
  int64_t sliding_window = 0;    // 0 = full attention for this layer
};

class LayerKVCache {
 public:
  virtual ~LayerKVCache() = default;
  // q: [n, n_heads, hd]; k, v: [n, n_kv_heads, hd] (f32, RoPE already applied) for n new tokens at
  // absolute positions offset() .. offset()+n-1. Stores k/v, then writes attention output
  // [n, n_heads, hd] to out. `mask` carries causal/bidirectional-group settings (the layer's own
  // sliding window comes from spec).
  virtual void update_and_attend(const float* q, const float* k, const float* v, int64_t n,
                                 const LayerAttentionSpec& spec, const ops::AttentionMask& mask, float* out) = 0;
  // update_and_attend with RoPE applied first: q [n, n_heads, hd] and k [n, n_kv_heads, hd] not yet
  // rotated, rotated as ops::attention_with_rope states (q's contents afterwards unspecified; k's rows
  // rotated in place). The default rotates both (ops::rope_qk / mrope_qk) and calls update_and_attend;
  // a layer that holds k in place (next_rows) passes the rotation on to the attention op, which on
  // CUDA rotates inside the decode attention kernel (no launch of its own).
  virtual void rope_update_and_attend(float* q, float* k, const float* v, int64_t n, const ops::AttentionRope& rope,
                                      const LayerAttentionSpec& spec, const ops::AttentionMask& mask, float* out) {
    if (rope.mrope_section != nullptr)
      ops::mrope_qk(q, spec.n_heads, k, spec.n_kv_heads, n, spec.head_dim, rope.inv_freq, rope.positions,
                    *rope.mrope_section, rope.attention_scaling);
    else
      ops::rope_qk(q, spec.n_heads, k, spec.n_kv_heads, n, spec.head_dim, rope.rotary_dim, rope.inv_freq,
                   rope.positions, rope.attention_scaling);
    update_and_attend(q, k, v, n, spec, mask, out);
  }
  // Where the next n tokens' K and V rows ([n, n_kv_heads * hd] f32 each, on the cache's device) can
  // be written in place, or {nullptr, nullptr} when the layer stores them another way (rotating,
  // quantized). A model that computes k/v there (RoPE applied in place) passes the same pointers to
  // update_and_attend, which then copies nothing. Valid until the next update.
  virtual std::pair<float*, float*> next_rows(int64_t n) {
    (void)n;
    return {nullptr, nullptr};
  }
  virtual int64_t offset() const = 0;        // tokens seen so far (absolute position of the next token)
  virtual int64_t stored_tokens() const = 0;  // tokens currently held
  virtual size_t nbytes() const = 0;          // memory held
};

class KVCache {
 public:
  virtual ~KVCache() = default;
  virtual int num_layers() const = 0;
  virtual LayerKVCache& layer(int i) = 0;
  int64_t offset() { return num_layers() ? layer(0).offset() : 0; }
  size_t nbytes() {
    size_t n = 0;
    for (int i = 0; i < num_layers(); ++i) n += layer(i).nbytes();
    return n;
  }
};

}  // namespace vlm
