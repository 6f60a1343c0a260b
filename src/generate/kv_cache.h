// The KV caches behind the models/kv_cache.h seam: standard, rotating, quantized, and quantized +
// rotating, all one layer class (KVLayer) over one slot store, so every combination shares the same
// code path. Semantics follow mlx-lm / mlx-vlm `models/cache.py` (engine_facts.md §1.4):
//
// * Standard: every token kept, in order; storage grows in steps of 256 tokens.
// * Rotating (max_size M, keep K): a ring that always keeps the first K tokens (attention sinks) and
//   the most recent ones. A single-token update writes in place at the ring index (wrapping to K) and
//   attends over every stored entry. A multi-token update first puts the ring in temporal order,
//   trims it to M-1 entries (K sinks + most recent), appends all new tokens, so it may hold M-1+S
//   entries, and masks each new token to a window of M entries by storage index: exactly mlx's
//   `_update_concat` + `create_causal_mask(N, min(M-1, offset), window_size=M)`. Consequence kept on
//   purpose for parity: inside a multi-token chunk the sinks are visible only to the first few
//   queries. RoPE positions are never re-rotated (the model applies them from the absolute offset).
// * Quantized (bits, group_size): K and V rows stored MLX-affine quantized along head_dim
//   (ops::kv_quantize), and only those: codes, scales and biases (MemoryTracker kKvCache and
//   nbytes(), as mlx's nbytes counts). Decode steps (fewer than 8 tokens) attend with
//   ops::attention_quantized, which reads the packed rows directly (dequantized chunk by chunk in
//   shared memory on CUDA, in L1 on the CPU). Prefill chunks dequantize the held slots
//   (ops::kv_dequantize) into a KVScratch, one layer's f32 K/V rows shared by every layer of the cache
//   (kScratch), and ops::attention runs over them. Both equal
//   mlx's quantized_matmul attention up to float summation order. So a cache of L layers holds L
//   layers of codes plus at most one layer of f32 rows. A layer created with
//   a quantization start N stays f32 until its offset reaches N at the end of an update, then
//   converts all held entries at once; later tokens are quantized on insert (mlx-vlm's
//   maybe_quantize_kv_cache after every step, default N = 5000; with N = 0 the first chunk still
//   attends in full precision, as in mlx).
// * Quantized + rotating: the rotating rules over a quantized store (mlx raises "NYI" for this).
//
// make_kv_cache picks per layer (mlx's make_prompt_cache + the model's own make_cache):
//   layer with its own sliding window W  -> rotating, M = W, keep 0 (holds only what the window needs)
//   otherwise, max_kv_size set           -> rotating, M = max_kv_size, keep 4
//   otherwise                            -> standard
// As in mlx, max_kv_size is ignored for models whose layout has windowed layers (there the model's
// own cache layout wins; see KVCacheOptions::max_kv_size_ignored). kv_bits applies to every layer.
//
// Devices: the store and the scratch live on KVCacheOptions::device — f32 K/V rows are written with
// ops::copy from the model's device buffers, quantized ones with ops::kv_quantize there and read back
// with ops::kv_dequantize or attended in place by ops::attention_quantized (bit-identical codes,
// scales, biases and dequantized rows on every backend, so a quantized cache holds the same bits on
// CPU and CUDA), and attention runs there; the positions (k_pos) and the masks' index arrays stay
// host arrays (ops.h "devices").
// Rotating moves are ops::copy calls of whole runs of slots, one per plane.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/memory.h"
#include "core/tensor.h"
#include "models/kv_cache.h"
#include "models/language_model.h"

namespace vlm {

struct KVCacheOptions {
  std::optional<int64_t> max_kv_size;  // rotating cache for full-attention layers
  int64_t keep = 4;                    // attention sinks kept by a max_kv_size rotating cache
  std::optional<int> kv_bits;          // quantized cache: 2, 3, 4, 5, 6 or 8
  int kv_group_size = 64;
  int64_t quantized_kv_start = 5000;   // quantize once offset >= this (0 = from the first update)
  Device device = Device::kCpu;        // where K/V live: the model's device (LanguageModel::device())
  // Throws Error(kInvalidArgument) naming the option when a value is out of range.
  void validate() const;
};

// Transient f32 K/V rows that quantized layers dequantize into before attending: sized for the
// longest layer (grown in 256-token steps, never shrunk, so a decode step allocates only when that
// crosses a step), tracked as MemCategory::kScratch, on one device. Shared by the layers of one
// cache: they attend one after another (one stream on CUDA), so each layer's rows are dead once its
// attention has been issued.
class KVScratch {
 public:
  explicit KVScratch(Device device);
  ~KVScratch();
  KVScratch(const KVScratch&) = delete;
  KVScratch& operator=(const KVScratch&) = delete;
  // k, v: [tokens, row] f32 on device(); valid until the next rows() call.
  std::pair<float*, float*> rows(int64_t tokens, int64_t row);
  Device device() const { return device_; }
  size_t nbytes() const;  // both planes, as allocated

 private:
  Device device_;
  Tensor k_, v_;
  int64_t floats_ = 0;  // capacity of each plane
};

// One layer's configuration, resolved by make_kv_cache (public so tests can build single layers).
struct KVLayerConfig {
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_size = 0;          // 0 = standard (unbounded), > 0 = rotating ring of this size
  int64_t keep = 0;              // rotating: first tokens always kept
  int64_t sliding_window = 0;    // the layer's own window (0 = none); informational + masking
  std::optional<int> bits;       // quantize when offset reaches quantize_start
  int group_size = 64;
  int64_t quantize_start = 0;
  Device device = Device::kCpu;  // where the store (f32 or quantized) lives
};

class KVLayer final : public LayerKVCache {
 public:
  // `scratch` (same device as the config) is shared with the cache's other layers; null = its own.
  explicit KVLayer(const KVLayerConfig& config, std::shared_ptr<KVScratch> scratch = nullptr);
  ~KVLayer() override;
  KVLayer(const KVLayer&) = delete;
  KVLayer& operator=(const KVLayer&) = delete;

  void update_and_attend(const float* q, const float* k, const float* v, int64_t n, const LayerAttentionSpec& spec,
                         const ops::AttentionMask& mask, float* out) override;
  // Standard f32 layers with k in place (next_rows): ops::attention_with_rope over the held rows;
  // every other layer: the default (rope_qk, then update_and_attend).
  void rope_update_and_attend(float* q, float* k, const float* v, int64_t n, const ops::AttentionRope& rope,
                              const LayerAttentionSpec& spec, const ops::AttentionMask& mask, float* out) override;
  std::pair<float*, float*> next_rows(int64_t n) override;
  int64_t offset() const override { return offset_; }
  int64_t stored_tokens() const override { return size_; }
  size_t nbytes() const override;

  const KVLayerConfig& config() const { return config_; }
  bool rotating() const { return config_.max_size > 0; }
  bool quantized() const { return quantized_; }
  const KVScratch& scratch() const { return *scratch_; }
  // Whether the last `n` tokens can be dropped exactly (standard: always; rotating: only while
  // nothing has been evicted yet, i.e. offset < max_size, as mlx's is_trimmable).
  bool is_trimmable() const;
  // Drops the last n tokens (n <= offset); throws Error(kInvalidArgument) when not trimmable.
  void trim(int64_t n);
  // Converts the held entries to the quantized format now (no-op when already quantized or bits unset).
  void to_quantized();

  // Inspection (tests, reports): absolute positions of the stored entries in storage order, and an
  // f32 copy (dequantized when quantized) of entries [begin, begin+count): k, v [count, n_kv_heads, hd].
  std::vector<int64_t> stored_positions() const { return {pos_.begin(), pos_.begin() + size_}; }
  void read(int64_t begin, int64_t count, float* k, float* v) const;

 private:
  struct Store;  // raw slot storage (f32 or quantized rows)
  void ensure_capacity(int64_t slots);
  void write_slot(int64_t slot, const float* k, const float* v);
  void reorder(const std::vector<int64_t>& order);  // new slot i = old slot order[i]
  void attend(const float* q, int64_t n, int64_t q_pos0, const int64_t* k_pos, const LayerAttentionSpec& spec,
              const ops::AttentionMask& mask, float* out);
  void update_standard(const float* k, const float* v, int64_t n);
  void update_rotating_in_place(const float* k, const float* v);
  void update_rotating_concat(const float* k, const float* v, int64_t n);

  KVLayerConfig config_;
  int64_t row_ = 0;  // values per token for K (and V): n_kv_heads * head_dim
  bool quantized_ = false;
  int64_t offset_ = 0;  // tokens seen
  int64_t size_ = 0;    // entries held
  int64_t idx_ = 0;     // rotating: next write slot (mlx's _idx)
  std::vector<int64_t> pos_;  // absolute position of each slot
  std::unique_ptr<Store> store_;
  std::shared_ptr<KVScratch> scratch_;  // quantized stores dequantize here to attend / read
};

class LayeredKVCache final : public KVCache {
 public:
  explicit LayeredKVCache(std::vector<std::unique_ptr<KVLayer>> layers) : layers_(std::move(layers)) {}
  int num_layers() const override { return static_cast<int>(layers_.size()); }
  LayerKVCache& layer(int i) override { return *layers_.at(static_cast<size_t>(i)); }
  KVLayer& kv_layer(int i) { return *layers_.at(static_cast<size_t>(i)); }
  bool is_trimmable() const;
  void trim(int64_t n);
  // "standard", "rotating(4096, keep 4)", "quantized(4-bit, g64, from 5000)", ... per distinct layer kind.
  std::string describe() const;
  // Bytes of the dequantization scratch(es) the layers share (not in nbytes(): transient rows).
  size_t scratch_nbytes() const;

 private:
  std::vector<std::unique_ptr<KVLayer>> layers_;
};

// Per-layer cache for a model's cache_layout() under the options (rules in the header comment).
std::unique_ptr<LayeredKVCache> make_layered_kv_cache(const std::vector<LayerCacheInfo>& layers,
                                                      const KVCacheOptions& options);
std::unique_ptr<KVCache> make_kv_cache(const std::vector<LayerCacheInfo>& layers, const KVCacheOptions& options);
// True when options.max_kv_size is set but ignored because the layout has windowed layers (mlx rule).
bool max_kv_size_ignored(const std::vector<LayerCacheInfo>& layers, const KVCacheOptions& options);

}  // namespace vlm
