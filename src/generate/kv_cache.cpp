// Standard, rotating, quantized and quantized+rotating KV caches (semantics in kv_cache.h).
//
// Storage is a slot array: slot i holds one token's K row and V row ([n_kv_heads, head_dim] each),
// either as f32 or as MLX-affine packed codes + f32 scales/biases per group, kept in planes (Store).
// A quantized layer holds nothing else: decode steps attend over the packed planes directly
// (ops::attention_quantized); prefill chunks dequantize the held slots into a KVScratch shared by all
// layers of the cache (one layer's f32 rows, reused layer after layer). Rotating caches
// reorder slots exactly where mlx reorders its arrays, so the slot order is mlx's array order and
// the masks can be expressed the same way mlx expresses them.
#include "generate/kv_cache.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace vlm {

namespace {
constexpr int64_t kGrowStep = 256;  // mlx grows caches in steps of 256 tokens
// Quantized layers attend with ops::attention_quantized below this many queries (the CUDA decode
// kernel's range; on the CPU the row kernel would dequantize each chunk once per query); prefill
// chunks dequantize into the scratch and run ops::attention.
constexpr int64_t kFusedDecodeMaxTokens = 8;

bool valid_kv_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8; }
}  // namespace

void KVCacheOptions::validate() const {
  if (max_kv_size && *max_kv_size <= keep)
    throw_error(ErrorKind::kInvalidArgument, "max_kv_size must be greater than the {} kept tokens, got {}", keep,
                *max_kv_size);
  if (keep < 0) throw_error(ErrorKind::kInvalidArgument, "kv cache keep must be >= 0, got {}", keep);
  if (kv_bits && !valid_kv_bits(*kv_bits))
    throw_error(ErrorKind::kInvalidArgument,
                "kv_bits must be one of 2, 3, 4, 5, 6, 8 (MLX affine quantization), got {}", *kv_bits);
  if (kv_group_size != 32 && kv_group_size != 64 && kv_group_size != 128)
    throw_error(ErrorKind::kInvalidArgument, "kv_group_size must be 32, 64 or 128, got {}", kv_group_size);
  if (quantized_kv_start < 0)
    throw_error(ErrorKind::kInvalidArgument, "quantized_kv_start must be >= 0, got {}", quantized_kv_start);
  if (device == Device::kCuda && !ops::cuda::available())
    throw_error(ErrorKind::kUnsupported, "kv cache on cuda: {}", cuda_unavailable_reason());
}

// ---- dequantization scratch ----------------------------------------------------------------------

KVScratch::KVScratch(Device device) : device_(device) {}
KVScratch::~KVScratch() = default;

std::pair<float*, float*> KVScratch::rows(int64_t tokens, int64_t row) {
  // Grown in the cache's own 256-token steps and never shrunk, so a decode step allocates only when
  // the longest layer crosses a step (from ops::empty's caching allocator on CUDA: no sync, no free
  // to the driver, as CUDA graph capture requires).
  const int64_t need = (std::max<int64_t>(tokens, 1) + kGrowStep - 1) / kGrowStep * kGrowStep * row;
  if (need > floats_) {
    k_ = ops::empty({need}, DType::kF32, MemCategory::kScratch, device_);
    v_ = ops::empty({need}, DType::kF32, MemCategory::kScratch, device_);
    floats_ = need;
  }
  return {static_cast<float*>(k_.raw()), static_cast<float*>(v_.raw())};
}

size_t KVScratch::nbytes() const { return static_cast<size_t>(floats_) * 2 * sizeof(float); }

// ---- slot storage ---------------------------------------------------------------------------------

// Slots in planes, each plane [capacity, plane_bytes] on `device`: f32 stores have {K rows, V rows};
// quantized ones {K codes, K scales, K biases, V codes, V scales, V biases} in the layout of
// ops::kv_quantize (so `count` consecutive slots are one op call) and nothing more: f32 rows of a
// quantized store exist only transiently, dequantized into a KVScratch when attention needs them
// (the same bits every time, so attention equals one over rows dequantized once). Moves copy whole
// runs of slots plane by plane.
struct KVLayer::Store {
  int64_t row = 0;  // values per K (or V) row
  bool quantized = false;
  int bits = 0, group = 0;
  Device device = Device::kCpu;
  int64_t capacity = 0;
  std::vector<int64_t> plane_bytes;  // bytes per slot of each plane
  std::vector<Tensor> planes;        // u8 [capacity * plane_bytes[p]] on `device`

  Store(int64_t row_, bool quantized_, int bits_, int group_, Device device_)
      : row(row_), quantized(quantized_), bits(bits_), group(group_), device(device_) {
    if (quantized) {
      const int64_t words = ops::kv_packed_words(row, bits) * 4, groups = row / group * 4;
      plane_bytes = {words, groups, groups, words, groups, groups};
    } else {
      plane_bytes = {row * 4, row * 4};
    }
    planes.resize(plane_bytes.size());
  }
  uint8_t* at(size_t p, int64_t s) const { return static_cast<uint8_t*>(planes[p].raw()) + s * plane_bytes[p]; }
  // The f32 K / V row of slot s (f32 stores only).
  float* kslot(int64_t s) const {
    VLM_CHECK(!quantized, ErrorKind::kInternal, "kv cache: f32 row of a quantized store");
    return reinterpret_cast<float*>(at(0, s));
  }
  float* vslot(int64_t s) const {
    VLM_CHECK(!quantized, ErrorKind::kInternal, "kv cache: f32 row of a quantized store");
    return reinterpret_cast<float*>(at(1, s));
  }

  void grow(int64_t slots, int64_t keep_slots) {
    if (slots <= capacity) return;
    int64_t cap = (slots + kGrowStep - 1) / kGrowStep * kGrowStep;
    for (size_t p = 0; p < planes.size(); ++p) {
      Tensor fresh = ops::empty({cap * plane_bytes[p]}, DType::kU8, MemCategory::kKvCache, device);
      if (keep_slots > 0)
        ops::copy(fresh.raw(), device, planes[p].raw(), device, static_cast<size_t>(keep_slots * plane_bytes[p]));
      planes[p] = std::move(fresh);
    }
    capacity = cap;
  }

  // Slots [from, from + count) of `src` (same layout and device) into slots [to, to + count).
  void copy_slots(int64_t to, const Store& src, int64_t from, int64_t count) {
    for (size_t p = 0; p < planes.size(); ++p)
      ops::copy(at(p, to), device, src.at(p, from), device, static_cast<size_t>(count * plane_bytes[p]));
  }

  // `count` consecutive tokens' rows kr, vr ([count, row] f32, on `device`) into slots s, s+1, ...
  void write(int64_t s, const float* kr, const float* vr, int64_t count = 1) {
    if (!quantized) {  // one copy each for K and V (none when written in place)
      const size_t bytes = static_cast<size_t>(count * row) * 4;
      if (kr != kslot(s)) ops::copy(kslot(s), device, kr, device, bytes);
      if (vr != vslot(s)) ops::copy(vslot(s), device, vr, device, bytes);
      return;
    }
    ops::DeviceScope scope(device);  // the kernels run where the store lives
    ops::kv_quantize(kr, count, row, bits, group, reinterpret_cast<uint32_t*>(at(0, s)),
                     reinterpret_cast<float*>(at(1, s)), reinterpret_cast<float*>(at(2, s)));
    ops::kv_quantize(vr, count, row, bits, group, reinterpret_cast<uint32_t*>(at(3, s)),
                     reinterpret_cast<float*>(at(4, s)), reinterpret_cast<float*>(at(5, s)));
  }

  // Quantized stores: slots [s, s + count) dequantized into k, v ([count, row] f32 on `device`).
  void dequantize(int64_t s, int64_t count, float* k, float* v) const {
    ops::DeviceScope scope(device);
    ops::kv_dequantize(reinterpret_cast<const uint32_t*>(at(0, s)), reinterpret_cast<const float*>(at(1, s)),
                       reinterpret_cast<const float*>(at(2, s)), count, row, bits, group, k);
    ops::kv_dequantize(reinterpret_cast<const uint32_t*>(at(3, s)), reinterpret_cast<const float*>(at(4, s)),
                       reinterpret_cast<const float*>(at(5, s)), count, row, bits, group, v);
  }

  // Quantized stores: the planes of slots [0, size) as ops::attention_quantized reads them.
  ops::QuantizedKV view() const {
    VLM_CHECK(quantized, ErrorKind::kInternal, "kv cache: quantized view of an f32 store");
    return {reinterpret_cast<const uint32_t*>(at(0, 0)), reinterpret_cast<const float*>(at(1, 0)),
            reinterpret_cast<const float*>(at(2, 0)),    reinterpret_cast<const uint32_t*>(at(3, 0)),
            reinterpret_cast<const float*>(at(4, 0)),    reinterpret_cast<const float*>(at(5, 0)),
            bits,                                        group};
  }

  // What the cache holds: f32 rows, or codes + scales + biases.
  size_t nbytes() const {
    int64_t per_slot = 0;
    for (int64_t b : plane_bytes) per_slot += b;
    return static_cast<size_t>(capacity * per_slot);
  }
};

// ---- KVLayer --------------------------------------------------------------------------------------

KVLayer::KVLayer(const KVLayerConfig& config, std::shared_ptr<KVScratch> scratch)
    : config_(config), scratch_(std::move(scratch)) {
  VLM_CHECK(config.n_kv_heads > 0 && config.head_dim > 0, ErrorKind::kInvalidArgument,
            "kv cache layer: n_kv_heads {} and head_dim {} must be positive", config.n_kv_heads, config.head_dim);
  VLM_CHECK(config.max_size >= 0 && (config.max_size == 0 || config.max_size > config.keep) && config.keep >= 0,
            ErrorKind::kInvalidArgument, "kv cache layer: rotating size {} must exceed keep {}", config.max_size,
            config.keep);
  if (config.bits) {
    VLM_CHECK(valid_kv_bits(*config.bits), ErrorKind::kInvalidArgument,
              "kv_bits must be one of 2, 3, 4, 5, 6, 8, got {}", *config.bits);
    VLM_CHECK(config.group_size == 32 || config.group_size == 64 || config.group_size == 128,
              ErrorKind::kInvalidArgument, "kv_group_size must be 32, 64 or 128, got {}", config.group_size);
    // Groups run along head_dim and must not straddle heads (mlx requires the same).
    VLM_CHECK(config.head_dim % config.group_size == 0, ErrorKind::kInvalidArgument,
              "kv_group_size {} does not divide the model's head_dim {}; pick a group size that does",
              config.group_size, config.head_dim);
  }
  row_ = config.n_kv_heads * config.head_dim;
  // Always starts in f32: like mlx's maybe_quantize_kv_cache, conversion happens after an update
  // (so even with quantize_start 0 the first chunk attends in full precision).
  store_ = std::make_unique<Store>(row_, false, config.bits.value_or(0), config.group_size, config.device);
  if (!scratch_) scratch_ = std::make_shared<KVScratch>(config.device);  // allocates on first use only
  VLM_CHECK(scratch_->device() == config.device, ErrorKind::kInvalidArgument,
            "kv cache layer on {} given a dequantization scratch on {}", device_name(config.device),
            device_name(scratch_->device()));
}

KVLayer::~KVLayer() = default;

size_t KVLayer::nbytes() const { return store_->nbytes() + pos_.capacity() * sizeof(int64_t); }

void KVLayer::ensure_capacity(int64_t slots) {
  store_->grow(slots, size_);
  if (static_cast<int64_t>(pos_.size()) < store_->capacity) pos_.resize(static_cast<size_t>(store_->capacity));
}

void KVLayer::write_slot(int64_t slot, const float* k, const float* v) { store_->write(slot, k, v); }

std::pair<float*, float*> KVLayer::next_rows(int64_t n) {
  // Only the standard f32 layout stores the next tokens as plain rows at slot size_ (update_standard);
  // rotating layers may reorder first and quantized ones convert.
  if (rotating() || quantized_ || n <= 0) return {nullptr, nullptr};
  ensure_capacity(size_ + n);
  return {reinterpret_cast<float*>(store_->kslot(size_)), reinterpret_cast<float*>(store_->vslot(size_))};
}

void KVLayer::rope_update_and_attend(float* q, float* k, const float* v, int64_t n, const ops::AttentionRope& rope,
                                     const LayerAttentionSpec& spec, const ops::AttentionMask& mask, float* out) {
  // Only a standard f32 layer whose next rows already hold k and v (the model wrote them there) and
  // that stays f32 after this update: the new keys are then the last n held rows, which the attention
  // op rotates where they lie.
  const bool stays_f32 = !config_.bits || offset_ + n < config_.quantize_start;
  if (rotating() || quantized_ || !stays_f32 || n <= 0 || size_ + n > store_->capacity ||
      k != store_->kslot(size_) || v != store_->vslot(size_)) {
    LayerKVCache::rope_update_and_attend(q, k, v, n, rope, spec, mask, out);
    return;
  }
  VLM_CHECK(spec.n_kv_heads == config_.n_kv_heads && spec.head_dim == config_.head_dim, ErrorKind::kInvalidArgument,
            "kv cache layer holds [{} kv heads, head_dim {}] but the attention spec has [{}, {}]", config_.n_kv_heads,
            config_.head_dim, spec.n_kv_heads, spec.head_dim);
  const int64_t q_pos0 = offset_;
  update_standard(k, v, n);  // the rows are in place: positions and counts only
  ops::AttentionMask m = mask;
  m.sliding_window = spec.sliding_window > 0 ? spec.sliding_window : mask.sliding_window;
  ops::attention_with_rope(q, n, q_pos0, store_->kslot(0), store_->vslot(0), pos_.data(), size_, spec.n_heads,
                           spec.n_kv_heads, spec.head_dim, spec.scale, spec.softcap, m, rope, out);
}

void KVLayer::reorder(const std::vector<int64_t>& order) {
  auto fresh = std::make_unique<Store>(row_, store_->quantized, store_->bits, store_->group, store_->device);
  fresh->grow(std::max<int64_t>(static_cast<int64_t>(order.size()), 1), 0);
  std::vector<int64_t> pos(static_cast<size_t>(fresh->capacity), 0);
  // Orders are a few runs of consecutive slots (sinks, then ring segments): one copy per run and plane.
  for (size_t i = 0; i < order.size();) {
    size_t j = i + 1;
    while (j < order.size() && order[j] == order[j - 1] + 1) ++j;
    fresh->copy_slots(static_cast<int64_t>(i), *store_, order[i], static_cast<int64_t>(j - i));
    for (size_t t = i; t < j; ++t) pos[t] = pos_[static_cast<size_t>(order[t])];
    i = j;
  }
  store_ = std::move(fresh);
  pos_ = std::move(pos);
  size_ = static_cast<int64_t>(order.size());
}

void KVLayer::read(int64_t begin, int64_t count, float* k, float* v) const {
  VLM_CHECK(begin >= 0 && count >= 0 && begin + count <= size_, ErrorKind::kInvalidArgument,
            "kv cache read [{}, {}) outside the {} held entries", begin, begin + count, size_);
  if (count == 0) return;
  // f32 rows (a quantized store's dequantized through the scratch), from wherever the store lives.
  const float* ks = nullptr;
  const float* vs = nullptr;
  if (store_->quantized) {
    auto [kd, vd] = scratch_->rows(count, row_);
    store_->dequantize(begin, count, kd, vd);
    ks = kd;
    vs = vd;
  } else {
    ks = store_->kslot(begin);
    vs = store_->vslot(begin);
  }
  const size_t bytes = static_cast<size_t>(count * row_) * sizeof(float);
  ops::copy(k, Device::kCpu, ks, store_->device, bytes);
  ops::copy(v, Device::kCpu, vs, store_->device, bytes);
}

void KVLayer::to_quantized() {
  if (quantized_ || !config_.bits) return;
  // All held entries in one op call per K and V, on the store's device.
  auto fresh = std::make_unique<Store>(row_, true, *config_.bits, config_.group_size, store_->device);
  fresh->grow(std::max<int64_t>(store_->capacity, 1), 0);
  if (size_ > 0) fresh->write(0, store_->kslot(0), store_->vslot(0), size_);
  store_ = std::move(fresh);
  quantized_ = true;
}

bool KVLayer::is_trimmable() const { return !rotating() || offset_ < config_.max_size; }

void KVLayer::trim(int64_t n) {
  VLM_CHECK(n >= 0 && n <= offset_, ErrorKind::kInvalidArgument, "kv cache trim of {} tokens, but {} are held", n,
            offset_);
  VLM_CHECK(is_trimmable(), ErrorKind::kInvalidArgument,
            "kv cache trim: this rotating cache (size {}) has already evicted tokens (offset {})", config_.max_size,
            offset_);
  // Nothing was evicted, so slots are positions 0..offset-1 in order.
  offset_ -= n;
  size_ -= n;
  idx_ = size_;
}

void KVLayer::attend(const float* q, int64_t n, int64_t q_pos0, const int64_t* k_pos, const LayerAttentionSpec& spec,
                     const ops::AttentionMask& mask, float* out) {
  // A quantized store, decoding: the fused op reads the packed planes directly (K/V chunks dequantized
  // in shared memory on CUDA, in L1 inside the AVX-512 row kernel on the CPU; bit-identical values and
  // the f32 kernel's math, so the same result as the scratch path below), and no f32 rows of the whole
  // cache are written and read back. Prefill chunks keep the scratch: there every query would
  // dequantize each chunk again.
  if (store_->quantized && n < kFusedDecodeMaxTokens) {
    ops::attention_quantized(q, n, q_pos0, store_->view(), k_pos, size_, spec.n_heads, spec.n_kv_heads,
                             spec.head_dim, spec.scale, spec.softcap, mask, out);
    return;
  }
  // f32 rows on the store's device: an f32 store's own, a quantized store's dequantized into the
  // shared scratch (overwritten by the next layer, which attends after this call's kernels on the
  // same stream).
  const float* ks = nullptr;
  const float* vs = nullptr;
  if (store_->quantized) {
    auto [kd, vd] = scratch_->rows(size_, row_);
    store_->dequantize(0, size_, kd, vd);
    ks = kd;
    vs = vd;
  } else {
    ks = store_->kslot(0);
    vs = store_->vslot(0);
  }
  ops::attention(q, n, q_pos0, ks, vs, k_pos, size_, spec.n_heads, spec.n_kv_heads, spec.head_dim, spec.scale,
                 spec.softcap, mask, out);
}

void KVLayer::update_standard(const float* k, const float* v, int64_t n) {
  ensure_capacity(size_ + n);
  store_->write(size_, k, v, n);
  for (int64_t i = 0; i < n; ++i) pos_[static_cast<size_t>(size_ + i)] = offset_ + i;
  size_ += n;
  offset_ += n;
  idx_ = size_;
}

// mlx RotatingKVCache._update_in_place (one token).
void KVLayer::update_rotating_in_place(const float* k, const float* v) {
  const int64_t m = config_.max_size, keep = config_.keep;
  if (size_ > m) {
    // A previous multi-token update left up to M-1+S entries in temporal order: keep the sinks and
    // the most recent M-keep.
    std::vector<int64_t> order;
    for (int64_t i = 0; i < keep; ++i) order.push_back(i);
    for (int64_t i = size_ - (m - keep); i < size_; ++i) order.push_back(i);
    reorder(order);
    idx_ = m;
  }
  if (idx_ == m) idx_ = keep;  // wrap past the sinks
  if (idx_ >= size_) {         // still filling
    ensure_capacity(idx_ + 1);
    size_ = idx_ + 1;
  }
  write_slot(idx_, k, v);
  pos_[static_cast<size_t>(idx_)] = offset_;
  offset_ += 1;
  idx_ += 1;
}

// mlx RotatingKVCache._update_concat (several tokens).
void KVLayer::update_rotating_concat(const float* k, const float* v, int64_t n) {
  const int64_t m = config_.max_size, keep = config_.keep;
  if (size_ > 0) {
    if (idx_ != size_) {  // wrapped ring: sinks, then oldest (from idx) to the end, then keep..idx
      std::vector<int64_t> order;
      for (int64_t i = 0; i < keep; ++i) order.push_back(i);
      for (int64_t i = idx_; i < size_; ++i) order.push_back(i);
      for (int64_t i = keep; i < idx_; ++i) order.push_back(i);
      reorder(order);
    }
    int64_t trim = size_ - m + 1;  // at most M-1 old entries stay, so each new token sees M entries
    if (trim > 0) {
      std::vector<int64_t> order;
      for (int64_t i = 0; i < keep; ++i) order.push_back(i);
      for (int64_t i = keep + trim; i < size_; ++i) order.push_back(i);
      reorder(order);
    }
  }
  ensure_capacity(size_ + n);
  store_->write(size_, k, v, n);
  for (int64_t i = 0; i < n; ++i) pos_[static_cast<size_t>(size_ + i)] = offset_ + i;
  size_ += n;
  offset_ += n;
  idx_ = size_;
}

void KVLayer::update_and_attend(const float* q, const float* k, const float* v, int64_t n,
                                const LayerAttentionSpec& spec, const ops::AttentionMask& mask, float* out) {
  VLM_CHECK(n > 0, ErrorKind::kInvalidArgument, "kv cache update with {} tokens", n);
  VLM_CHECK(spec.n_kv_heads == config_.n_kv_heads && spec.head_dim == config_.head_dim, ErrorKind::kInvalidArgument,
            "kv cache layer holds [{} kv heads, head_dim {}] but the attention spec has [{}, {}]", config_.n_kv_heads,
            config_.head_dim, spec.n_kv_heads, spec.head_dim);
  const int64_t q_pos0 = offset_;
  const int64_t window = spec.sliding_window > 0 ? spec.sliding_window : mask.sliding_window;
  ops::AttentionMask m = mask;

  if (!rotating()) {
    update_standard(k, v, n);
    m.sliding_window = window;
    attend(q, n, q_pos0, pos_.data(), spec, m, out);
  } else if (n == 1) {
    update_rotating_in_place(k, v);
    // Every held entry is visible to the new token (mlx passes no mask for one token), except what
    // the layer's own window, when narrower than the ring, excludes.
    m.sliding_window = (window > 0 && window < config_.max_size) ? window : 0;
    attend(q, n, q_pos0, pos_.data(), spec, m, out);
  } else {
    update_rotating_concat(k, v, n);
    // Mask by storage index, as mlx does: query i sits at index L+i (L entries held before the new
    // ones) and sees indices within a window of max_size (or the layer's own, narrower window).
    const int64_t l = size_ - n;
    std::vector<int64_t> index_pos(static_cast<size_t>(size_));
    for (int64_t j = 0; j < size_; ++j) index_pos[static_cast<size_t>(j)] = j;
    m.sliding_window = (window > 0 && window < config_.max_size) ? window : config_.max_size;
    std::vector<int32_t> groups;
    if (mask.group_of_position) {  // bidirectional groups are per absolute position: re-index them
      groups.resize(static_cast<size_t>(size_));
      for (int64_t j = 0; j < size_; ++j) {
        int64_t p = pos_[static_cast<size_t>(j)];
        groups[static_cast<size_t>(j)] = p < mask.group_positions ? mask.group_of_position[p] : 0;
      }
      m.group_of_position = groups.data();
      m.group_positions = size_;
    }
    attend(q, n, l, index_pos.data(), spec, m, out);
  }

  // mlx-vlm converts a cache once its offset reaches quantized_kv_start (after the step).
  if (config_.bits && !quantized_ && offset_ >= config_.quantize_start) to_quantized();
}

// ---- the whole cache ------------------------------------------------------------------------------

bool LayeredKVCache::is_trimmable() const {
  return std::all_of(layers_.begin(), layers_.end(), [](const auto& l) { return l->is_trimmable(); });
}

void LayeredKVCache::trim(int64_t n) {
  VLM_CHECK(is_trimmable(), ErrorKind::kInvalidArgument, "kv cache is not trimmable (a rotating layer evicted tokens)");
  for (auto& l : layers_) l->trim(n);
}

std::string LayeredKVCache::describe() const {
  std::vector<std::string> kinds;
  for (const auto& l : layers_) {
    const KVLayerConfig& c = l->config();
    std::string s = c.max_size > 0 ? fmt::format("rotating({}, keep {})", c.max_size, c.keep) : "standard";
    if (c.bits) s += fmt::format(" quantized({}-bit, g{}, from {})", *c.bits, c.group_size, c.quantize_start);
    if (std::find(kinds.begin(), kinds.end(), s) == kinds.end()) kinds.push_back(s);
  }
  std::string out;
  for (size_t i = 0; i < kinds.size(); ++i) out += (i ? " + " : "") + kinds[i];
  return out.empty() ? "empty" : out;
}

size_t LayeredKVCache::scratch_nbytes() const {
  std::vector<const KVScratch*> seen;
  size_t total = 0;
  for (const auto& l : layers_) {
    const KVScratch* s = &l->scratch();
    if (std::find(seen.begin(), seen.end(), s) != seen.end()) continue;
    seen.push_back(s);
    total += s->nbytes();
  }
  return total;
}

bool max_kv_size_ignored(const std::vector<LayerCacheInfo>& layers, const KVCacheOptions& options) {
  if (!options.max_kv_size) return false;
  return std::any_of(layers.begin(), layers.end(), [](const LayerCacheInfo& l) { return l.sliding_window > 0; });
}

std::unique_ptr<LayeredKVCache> make_layered_kv_cache(const std::vector<LayerCacheInfo>& layers,
                                                      const KVCacheOptions& options) {
  options.validate();
  // A layout with windowed layers is the model's own (mlx: the model defines make_cache), and there
  // max_kv_size does not apply.
  const bool own_layout =
      std::any_of(layers.begin(), layers.end(), [](const LayerCacheInfo& l) { return l.sliding_window > 0; });
  std::vector<std::unique_ptr<KVLayer>> out;
  out.reserve(layers.size());
  // Layers attend one after another, so one dequantization scratch serves them all.
  auto scratch = std::make_shared<KVScratch>(options.device);
  for (const LayerCacheInfo& info : layers) {
    KVLayerConfig c;
    c.n_kv_heads = info.n_kv_heads;
    c.head_dim = info.head_dim;
    c.sliding_window = info.sliding_window;
    if (info.sliding_window > 0) {
      c.max_size = info.sliding_window;
      c.keep = 0;
    } else if (options.max_kv_size && !own_layout) {
      c.max_size = *options.max_kv_size;
      c.keep = options.keep;
    }
    c.bits = options.kv_bits;
    c.group_size = options.kv_group_size;
    c.quantize_start = options.quantized_kv_start;
    c.device = options.device;
    out.push_back(std::make_unique<KVLayer>(c, scratch));
  }
  return std::make_unique<LayeredKVCache>(std::move(out));
}

std::unique_ptr<KVCache> make_kv_cache(const std::vector<LayerCacheInfo>& layers, const KVCacheOptions& options) {
  return make_layered_kv_cache(layers, options);
}

}  // namespace vlm
