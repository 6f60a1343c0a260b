// Compact hash tables for the hot paths of encoding: token string → id (keys stored in one arena,
// open addressing, lookups by string_view without allocation) and (id, id) → merge (rank, new id).
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vlm::tok {

// A fixed-size array of trivially copyable T on transparent huge pages where the OS allows it.
// Vocabulary tables are probed at random; with 4 KiB pages nearly every probe of a 150k-entry
// table is also a TLB miss, which made tokenizer.json loading twice as slow.
template <typename T>
class HugeArray {
 public:
  HugeArray() = default;
  HugeArray(size_t n, const T& fill) : n_(n) {
    constexpr size_t kHuge = size_t{2} << 20;
    const size_t bytes = std::max<size_t>(sizeof(T) * n, 1);
    const bool big = bytes >= kHuge;
    const size_t alloc = big ? (bytes + kHuge - 1) / kHuge * kHuge : bytes;
    void* p = std::aligned_alloc(big ? kHuge : alignof(std::max_align_t), (alloc + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    if (big) madvise(p, alloc, MADV_HUGEPAGE);  // advisory; ignored where THP is off
    data_.reset(static_cast<T*>(p));
    std::uninitialized_fill_n(data_.get(), n, fill);
  }
  T& operator[](size_t i) { return data_.get()[i]; }
  const T& operator[](size_t i) const { return data_.get()[i]; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* begin() { return data_.get(); }
  T* end() { return data_.get() + n_; }
  const T* begin() const { return data_.get(); }
  const T* end() const { return data_.get() + n_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t n_ = 0;
};

inline uint64_t hash_bytes(std::string_view s) {
  // 64-bit FNV-1a over 8-byte words, then a final avalanche (keys are short; this is enough).
  uint64_t h = 0xcbf29ce484222325ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  if (i < s.size()) std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ tail) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ull;
  h ^= h >> 32;
  return h;
}

class StringIdMap {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_ = HugeArray<Slot>(cap, Slot{});
    mask_ = cap - 1;
  }
  // Inserts or overwrites; returns true if the key was new.
  bool insert(std::string_view key, int32_t id) {
    if ((count_ + 1) * 2 > slots_.size()) grow();
    const uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.len == kEmpty) {
        s = Slot{static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), id,
                 static_cast<uint32_t>(h >> 32)};
        arena_.append(key);
        ++count_;
        return true;
      }
      if (s.hash_hi == static_cast<uint32_t>(h >> 32) && key_of(s) == key) {
        s.id = id;
        return false;
      }
    }
  }
  const int32_t* find(std::string_view key) const { return find_hashed(key, hash_bytes(key)); }
  // Batch lookups hash and prefetch first, then find (loading 450k merges is bound by cache misses).
  void prefetch(uint64_t h) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[h & mask_]);
  }
  const int32_t* find_hashed(std::string_view key, uint64_t h) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) return nullptr;
      if (s.hash_hi == static_cast<uint32_t>(h >> 32) && key_of(s) == key) return &s.id;
    }
  }
  size_t size() const { return count_; }
  template <typename F>
  void for_each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.len != kEmpty) f(key_of(s), s.id);
  }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  struct Slot {
    uint32_t off = 0, len = kEmpty;
    int32_t id = -1;
    uint32_t hash_hi = 0;
  };
  std::string_view key_of(const Slot& s) const { return std::string_view(arena_).substr(s.off, s.len); }
  void grow() {
    HugeArray<Slot> old = std::move(slots_);
    const size_t cap = old.empty() ? 16 : old.size() * 2;
    slots_ = HugeArray<Slot>(cap, Slot{});
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (s.len == kEmpty) continue;
      const uint64_t h = hash_bytes(key_of(s));
      size_t i = h & mask_;
      while (slots_[i].len != kEmpty) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  HugeArray<Slot> slots_;
  size_t mask_ = 0;
  size_t count_ = 0;
  std::string arena_;
};

// (left id, right id) → (rank, merged id).
class PairMap {
 public:
  struct Value {
    int32_t rank;
    int32_t new_id;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    keys_ = HugeArray<uint64_t>(cap, kEmpty);
    vals_ = HugeArray<Value>(cap, Value{0, 0});
    mask_ = cap - 1;
  }
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  // Inserts or overwrites (a later duplicate merge wins, as in HF's HashMap collect).
  void set(int32_t a, int32_t b, Value v) {
    if ((count_ + 1) * 2 > keys_.size()) grow();
    const uint64_t k = key(a, b);
    size_t i = mix(k) & mask_;
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    if (keys_[i] == kEmpty) ++count_;
    keys_[i] = k;
    vals_[i] = v;
  }
  const Value* find(int32_t a, int32_t b) const {
    if (keys_.empty()) return nullptr;
    const uint64_t k = key(a, b);
    for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == k) return &vals_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
  }
  void grow() {
    HugeArray<uint64_t> ok = std::move(keys_);
    HugeArray<Value> ov = std::move(vals_);
    const size_t cap = ok.empty() ? 16 : ok.size() * 2;
    keys_ = HugeArray<uint64_t>(cap, kEmpty);
    vals_ = HugeArray<Value>(cap, Value{0, 0});
    mask_ = cap - 1;
    for (size_t j = 0; j < ok.size(); ++j) {
      if (ok[j] == kEmpty) continue;
      size_t i = mix(ok[j]) & mask_;
      while (keys_[i] != kEmpty) i = (i + 1) & mask_;
      keys_[i] = ok[j];
      vals_[i] = ov[j];
    }
  }
  HugeArray<uint64_t> keys_;
  HugeArray<Value> vals_;
  size_t mask_ = 0;
  size_t count_ = 0;
};

// id → token string of a model's vocabulary. Ids are normally dense (0..n-1), but tokenizer.json may
// leave gaps or use ids far beyond the vocabulary size (HF keeps a hash map and accepts any u32), so
// an array is used only when it stays within a small multiple of the entry count; sparse ids go to a
// hash map instead of an allocation sized by the largest id (a fuzzer-found out-of-memory).
class IdTokenTable {
 public:
  // From the final token → id map (a key listed twice in the file keeps its last id, as in HF).
  void build(const StringIdMap& vocab) {
    int64_t max_id = -1;
    vocab.for_each([&](std::string_view, int32_t id) { max_id = std::max<int64_t>(max_id, id); });
    const size_t n = vocab.size();
    dense_ = max_id < 0 || static_cast<uint64_t>(max_id) < 2 * static_cast<uint64_t>(n) + 1024;
    if (dense_) {
      tokens_.assign(static_cast<size_t>(max_id + 1), std::string());
      present_.assign(static_cast<size_t>(max_id + 1), false);
      vocab.for_each([&](std::string_view k, int32_t id) {
        tokens_[static_cast<size_t>(id)] = std::string(k);
        present_[static_cast<size_t>(id)] = true;
      });
    } else {
      sparse_.reserve(n);
      vocab.for_each([&](std::string_view k, int32_t id) { sparse_[id] = std::string(k); });
    }
  }
  const std::string* find(int32_t id) const {
    if (dense_) {
      if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || !present_[static_cast<size_t>(id)]) return nullptr;
      return &tokens_[static_cast<size_t>(id)];
    }
    auto it = sparse_.find(id);
    return it == sparse_.end() ? nullptr : &it->second;
  }

 private:
  bool dense_ = true;
  std::vector<std::string> tokens_;
  std::vector<bool> present_;
  std::unordered_map<int32_t, std::string> sparse_;
};

}  // namespace vlm::tok
