// BPE model (HF tokenizers `models::bpe`). A word is split into characters (with the optional
// continuing-subword prefix / end-of-word suffix), unknown characters become byte-fallback tokens
// <0xXX> or (fused) unk, then merges are applied lowest rank first, ties to the leftmost pair —
// the same order as HF's binary heap. Results per word are cached (words repeat a lot in text).
#include <array>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "text/tokenizer/models.h"
#include "text/tokenizer/vocab.h"
#include "text/unicode.h"

namespace vlm::tok {
namespace {

class BpeModel final : public Model {
 public:
  BpeModel(JsonElement m, const JsonPath& at);

  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int32_t* id = vocab_.find(token);
    return id ? std::optional<int32_t>(*id) : std::nullopt;
  }
  const std::string* id_to_token(int32_t id) const override { return id_to_token_.find(id); }
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void apply_merges(std::vector<int32_t>& syms) const;

  StringIdMap vocab_;
  IdTokenTable id_to_token_;
  PairMap merges_;
  std::array<int32_t, 256> byte_ids_{};
  std::optional<std::string> unk_token_;
  std::string prefix_, suffix_;
  bool has_prefix_ = false, has_suffix_ = false;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;

  // Word → ids cache. Sharded so that concurrent encodes rarely contend.
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 16384;
  static constexpr size_t kMaxCachedWordBytes = 256;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  mutable std::array<Shard, kShards> cache_;
};

BpeModel::BpeModel(JsonElement m, const JsonPath& at) {
  // dropout: HF samples merges at random when set; vlmcheck encodes deterministically.
  if (auto d = json_member(m, "dropout")) {
    const double p = json_as_double(*d, at.child("dropout"));
    if (p != 0.0) json_fail(at.child("dropout"), "BPE dropout is not supported (encoding would be random)");
  }
  if (auto u = json_member(m, "unk_token")) unk_token_ = std::string(json_as_string(*u, at.child("unk_token")));
  if (auto p = json_member(m, "continuing_subword_prefix")) {
    prefix_ = json_as_string(*p, at.child("continuing_subword_prefix"));
    has_prefix_ = true;
  }
  if (auto s = json_member(m, "end_of_word_suffix")) {
    suffix_ = json_as_string(*s, at.child("end_of_word_suffix"));
    has_suffix_ = true;
  }
  fuse_unk_ = json_bool_or(m, "fuse_unk", at, false);
  byte_fallback_ = json_bool_or(m, "byte_fallback", at, false);
  ignore_merges_ = json_bool_or(m, "ignore_merges", at, false);

  const JsonPath vat = at.child("vocab");
  simdjson::dom::object vocab;
  if (json_require(m, "vocab", at).get_object().get(vocab)) json_fail(vat, "expected an object of token: id");
  vocab_.reserve(vocab.size());
  for (auto [key, value] : vocab) {
    int64_t id = -1;
    if (value.get_int64().get(id) || id < 0 || id > INT32_MAX) {
      json_fail(vat.child(key), "expected a token id (integer in [0, 2^31))");
    }
    vocab_.insert(key, static_cast<int32_t>(id));
  }
  id_to_token_.build(vocab_);
  for (int b = 0; b < 256; ++b) {
    const int32_t* id = vocab_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = id ? *id : -1;
  }

  const JsonPath mat = at.child("merges");
  // A model without "merges" has none (tokenizers' BPE builder defaults to an empty list). A
  // default-constructed dom::array has no document behind it, so it is never sized or iterated.
  simdjson::dom::array merges;
  bool have_merges = false;
  if (auto mm = json_member(m, "merges")) {
    if (mm->get_array().get(merges)) json_fail(mat, "expected an array of merges");
    have_merges = true;
  }
  const size_t merge_count = have_merges ? merges.size() : 0;
  merges_.reserve(merge_count);
  const size_t prefix_len = has_prefix_ ? prefix_.size() : 0;
  // Pass 1: split every merge into its two token strings (views into the parsed JSON).
  struct Merge {
    std::string_view a, b;
    uint64_t ha, hb, hj;
    std::string joined;
  };
  std::vector<Merge> list(merge_count);
  if (have_merges) {
    size_t rank = 0;
    for (JsonElement e : merges) {
      std::string_view line;
      simdjson::dom::array pair;
      Merge& mg = list[rank];
      if (!e.get_string().get(line)) {
        const size_t sp = line.find(' ');
        if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos) {
          json_fail(mat.index(rank), fmt::format("merge \"{}\" is not two tokens separated by one space", line));
        }
        mg.a = line.substr(0, sp);
        mg.b = line.substr(sp + 1);
      } else if (!e.get_array().get(pair) && pair.size() == 2 && !pair.at(0).get_string().get(mg.a) &&
                 !pair.at(1).get_string().get(mg.b)) {
      } else {
        json_fail(mat.index(rank), "expected \"a b\" or [\"a\", \"b\"]");
      }
      ++rank;
    }
  }
  // Pass 2: resolve ids in batches, prefetching the hash slots of a batch before probing them.
  constexpr size_t kBatch = 32;
  for (size_t base = 0; base < list.size(); base += kBatch) {
    const size_t end = std::min(list.size(), base + kBatch);
    for (size_t i = base; i < end; ++i) {
      Merge& mg = list[i];
      mg.ha = hash_bytes(mg.a);
      mg.hb = hash_bytes(mg.b);
      mg.joined.assign(mg.a);
      if (prefix_len <= mg.b.size()) mg.joined.append(mg.b.substr(prefix_len));
      mg.hj = hash_bytes(mg.joined);
      vocab_.prefetch(mg.ha);
      vocab_.prefetch(mg.hb);
      vocab_.prefetch(mg.hj);
    }
    for (size_t i = base; i < end; ++i) {
      Merge& mg = list[i];
      const int32_t* ia = vocab_.find_hashed(mg.a, mg.ha);
      const int32_t* ib = vocab_.find_hashed(mg.b, mg.hb);
      if (!ia || !ib) {
        json_fail(mat.index(i), fmt::format("merge token \"{}\" is not in the vocabulary", !ia ? mg.a : mg.b));
      }
      const int32_t* inew = vocab_.find_hashed(mg.joined, mg.hj);
      if (!inew) json_fail(mat.index(i), fmt::format("merged token \"{}\" is not in the vocabulary", mg.joined));
      // A later duplicate overwrites an earlier one, as HF's HashMap collect does.
      merges_.set(*ia, *ib, PairMap::Value{static_cast<int32_t>(i), *inew});
      std::string().swap(mg.joined);
    }
  }
  if (unk_token_ && !vocab_.find(*unk_token_)) {
    json_fail(at.child("unk_token"), fmt::format("unk token \"{}\" is not in the vocabulary", *unk_token_));
  }
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const int32_t* id = vocab_.find(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  Shard* shard = nullptr;
  if (cacheable) {
    shard = &cache_[hash_bytes(word) % kShards];
    std::lock_guard<std::mutex> lock(shard->mu);
    auto it = shard->map.find(std::string(word));
    if (it != shard->map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(shard->mu);
    if (shard->map.size() < kMaxEntriesPerShard) shard->map.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& syms) const {
  const int32_t unk_id = unk_token_ ? *vocab_.find(*unk_token_) : -1;
  bool pending_unk = false;
  std::string s;
  size_t pos = 0;
  while (pos < w.size()) {
    const size_t start = pos;
    pos += unicode::utf8_seq_len(static_cast<uint8_t>(w[pos]));
    if (pos > w.size()) pos = w.size();
    const bool is_first = start == 0, is_last = pos == w.size();
    std::string_view piece = w.substr(start, pos - start);
    if ((!is_first && has_prefix_) || (is_last && has_suffix_)) {
      s.clear();
      if (!is_first && has_prefix_) s += prefix_;
      s += piece;
      if (is_last && has_suffix_) s += suffix_;
      piece = s;
    }
    if (const int32_t* id = vocab_.find(piece)) {
      if (pending_unk) {
        syms.push_back(unk_id);
        pending_unk = false;
      }
      syms.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : piece) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        // HF adds the byte tokens without flushing a pending unk first; keep that order.
        for (char c : piece) syms.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_id >= 0) {
      if (pending_unk && !fuse_unk_) syms.push_back(unk_id);
      pending_unk = true;
    }
  }
  if (pending_unk) syms.push_back(unk_id);
  apply_merges(syms);
}

void BpeModel::apply_merges(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Sym> sy(n);
  for (size_t i = 0; i < n; ++i) sy[i] = {ids[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
  struct Cand {
    int32_t rank, pos, new_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const PairMap::Value* v = merges_.find(sy[i].id, sy[i + 1].id)) heap.push({v->rank, static_cast<int32_t>(i), v->new_id});
  }
  while (!heap.empty()) {
    const Cand top = heap.top();
    heap.pop();
    Sym& left = sy[top.pos];
    if (!left.alive || left.next < 0) continue;
    Sym& right = sy[left.next];
    // Stale entry: the pair at this position changed since it was queued.
    const PairMap::Value* v = merges_.find(left.id, right.id);
    if (!v || v->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sy[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const PairMap::Value* pv = merges_.find(sy[left.prev].id, left.id)) heap.push({pv->rank, left.prev, pv->new_id});
    }
    if (left.next >= 0) {
      if (const PairMap::Value* nv = merges_.find(left.id, sy[left.next].id)) heap.push({nv->rank, top.pos, nv->new_id});
    }
  }
  ids.clear();
  for (int32_t i = 0; i >= 0; i = sy[i].next) ids.push_back(sy[i].id);
}

}  // namespace

std::unique_ptr<Model> make_bpe_model(JsonElement m, const JsonPath& at) { return std::make_unique<BpeModel>(m, at); }

}  // namespace vlm::tok
