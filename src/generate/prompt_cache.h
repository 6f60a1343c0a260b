// Prompt (prefix) cache: keeps a KV cache and the ids whose K/V it holds between generations, so a
// second generation whose prompt shares a prefix with what was already fed (an earlier prompt plus
// its generated tokens — a multi-turn chat) only computes the new suffix.
//
// Reuse is exact: the cache is trimmed back to the common prefix, which gives the same K/V a fresh
// run computes for those positions. Where trimming cannot be exact the cache is rebuilt instead
// (recompute, reported as 0 cached tokens):
// * a rotating layer that has already evicted tokens (mlx: not trimmable);
// * a layer already converted to quantized storage: a fresh run would hold those positions in full
//   precision until quantized_kv_start is crossed again, so reuse would change the logits;
// * different cache options (the device included) or a different model layout.
// At least one prompt token is always recomputed, since its logits start the generation.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "generate/kv_cache.h"

namespace vlm {

class PromptCache {
 public:
  // Makes the cache ready for `prompt` and returns how many of its leading tokens are already held
  // (the caller feeds prompt[returned..]).
  int64_t prepare(const std::vector<LayerCacheInfo>& layout, const KVCacheOptions& options,
                  const std::vector<int32_t>& prompt);
  LayeredKVCache& cache() { return *cache_; }
  // Records ids fed to the model after prepare(), in order.
  void record(const int32_t* ids, int64_t n) { tokens_.insert(tokens_.end(), ids, ids + n); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  void clear();

 private:
  void rebuild(const std::vector<LayerCacheInfo>& layout, const KVCacheOptions& options);

  std::unique_ptr<LayeredKVCache> cache_;
  std::vector<int32_t> tokens_;
  std::vector<LayerCacheInfo> layout_;
  KVCacheOptions options_;
};

}  // namespace vlm
