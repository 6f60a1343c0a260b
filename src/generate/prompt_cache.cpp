// Prompt cache: longest-common-prefix reuse of a KV cache (rules in prompt_cache.h).
#include "generate/prompt_cache.h"

#include <algorithm>

namespace vlm {

namespace {
bool same_layout(const std::vector<LayerCacheInfo>& a, const std::vector<LayerCacheInfo>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const LayerCacheInfo& x, const LayerCacheInfo& y) {
    return x.n_kv_heads == y.n_kv_heads && x.head_dim == y.head_dim && x.sliding_window == y.sliding_window;
  });
}
bool same_options(const KVCacheOptions& a, const KVCacheOptions& b) {
  return a.max_kv_size == b.max_kv_size && a.keep == b.keep && a.kv_bits == b.kv_bits &&
         a.kv_group_size == b.kv_group_size && a.quantized_kv_start == b.quantized_kv_start && a.device == b.device;
}
}  // namespace

void PromptCache::clear() {
  cache_.reset();
  tokens_.clear();
}

void PromptCache::rebuild(const std::vector<LayerCacheInfo>& layout, const KVCacheOptions& options) {
  cache_.reset();  // release the old K/V before allocating the new
  cache_ = make_layered_kv_cache(layout, options);
  tokens_.clear();
  layout_ = layout;
  options_ = options;
}

int64_t PromptCache::prepare(const std::vector<LayerCacheInfo>& layout, const KVCacheOptions& options,
                             const std::vector<int32_t>& prompt) {
  if (!cache_ || !same_layout(layout, layout_) || !same_options(options, options_) ||
      cache_->offset() != static_cast<int64_t>(tokens_.size())) {
    rebuild(layout, options);
    return 0;
  }
  int64_t common = 0;
  const int64_t limit = std::min<int64_t>(static_cast<int64_t>(tokens_.size()), static_cast<int64_t>(prompt.size()) - 1);
  while (common < limit && tokens_[static_cast<size_t>(common)] == prompt[static_cast<size_t>(common)]) ++common;
  bool any_quantized = false;
  for (int i = 0; i < cache_->num_layers(); ++i) any_quantized |= cache_->kv_layer(i).quantized();
  const int64_t drop = static_cast<int64_t>(tokens_.size()) - common;
  if (common == 0 || any_quantized || (drop > 0 && !cache_->is_trimmable())) {
    rebuild(layout, options);
    return 0;
  }
  if (drop > 0) cache_->trim(drop);
  tokens_.resize(static_cast<size_t>(common));
  return common;
}

}  // namespace vlm
