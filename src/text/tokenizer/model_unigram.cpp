// Unigram model (HF tokenizers `models::unigram`, SentencePiece's algorithm): Viterbi over all
// vocabulary pieces that start at each character, unknown characters scored min_score - 10, runs
// of unk fused, then optional byte fallback for pieces outside the vocabulary. Also WordPiece
// (greedy longest-match-first with a continuing-subword prefix) and the model dispatcher.
#include <limits>

#include "text/tokenizer/models.h"
#include "text/tokenizer/vocab.h"
#include "text/unicode.h"

namespace vlm::tok {

std::unique_ptr<Model> make_bpe_model(JsonElement m, const JsonPath& at);

namespace {

class UnigramModel final : public Model {
 public:
  UnigramModel(JsonElement m, const JsonPath& at) {
    const JsonPath vat = at.child("vocab");
    simdjson::dom::array vocab;
    if (json_require(m, "vocab", at).get_array().get(vocab)) json_fail(vat, "expected an array of [piece, score]");
    pieces_.reserve(vocab.size());
    scores_.reserve(vocab.size());
    ids_.reserve(vocab.size());
    min_score_ = std::numeric_limits<double>::infinity();
    size_t i = 0;
    for (JsonElement e : vocab) {
      simdjson::dom::array pair;
      if (e.get_array().get(pair) || pair.size() != 2) json_fail(vat.index(i), "expected [piece, score]");
      const std::string_view piece = json_as_string(pair.at(0).value_unsafe(), vat.index(i).index(0));
      const double score = json_as_double(pair.at(1).value_unsafe(), vat.index(i).index(1));
      // HF keeps the first id for a duplicated piece.
      if (!ids_.find(piece)) ids_.insert(piece, static_cast<int32_t>(i));
      pieces_.emplace_back(piece);
      scores_.push_back(score);
      min_score_ = std::min(min_score_, score);
      max_piece_bytes_ = std::max(max_piece_bytes_, piece.size());
      ++i;
    }
    if (auto u = json_member(m, "unk_id")) {
      const int64_t id = json_as_int(*u, at.child("unk_id"));
      if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) {
        json_fail(at.child("unk_id"), fmt::format("unk_id {} is outside the vocabulary of {}", id, pieces_.size()));
      }
      unk_id_ = static_cast<int32_t>(id);
    }
    byte_fallback_ = json_bool_or(m, "byte_fallback", at, false);
    for (int b = 0; b < 256; ++b) {
      const int32_t* id = ids_.find(fmt::format("<0x{:02X}>", b));
      byte_ids_[b] = id ? *id : -1;
    }
  }

  void tokenize(std::string_view s, std::vector<int32_t>& out) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int32_t* id = ids_.find(token);
    return id ? std::optional<int32_t>(*id) : std::nullopt;
  }
  const std::string* id_to_token(int32_t id) const override {
    return id >= 0 && static_cast<size_t>(id) < pieces_.size() ? &pieces_[id] : nullptr;
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }

 private:
  static constexpr double kUnkPenalty = 10.0;
  std::vector<std::string> pieces_;
  std::vector<double> scores_;
  StringIdMap ids_;
  double min_score_ = 0;
  size_t max_piece_bytes_ = 0;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  int32_t byte_ids_[256];
};

void UnigramModel::tokenize(std::string_view s, std::vector<int32_t>& out) const {
  if (s.empty()) return;
  const size_t n = s.size();
  struct Node {
    int32_t id = -1;
    double score = 0;
    int64_t starts_at = -1;
  };
  std::vector<Node> best(n + 1);
  const double unk_score = min_score_ - kUnkPenalty;
  size_t start = 0;
  while (start < n) {
    const double base = best[start].score;
    const size_t mblen = std::min(unicode::utf8_seq_len(static_cast<uint8_t>(s[start])), n - start);
    bool has_single = false;
    // All vocabulary pieces that are prefixes of s[start..], shortest first (the trie's order).
    const size_t limit = std::min(max_piece_bytes_, n - start);
    for (size_t len = 1; len <= limit; ++len) {
      const size_t end = start + len;
      // Pieces end on character boundaries only.
      if (end < n && (static_cast<uint8_t>(s[end]) & 0xC0) == 0x80) continue;
      const int32_t* id = ids_.find(s.substr(start, len));
      if (!id) continue;
      Node& t = best[end];
      const double cand = scores_[*id] + base;
      if (t.starts_at < 0 || cand > t.score) {
        t.score = cand;
        t.starts_at = static_cast<int64_t>(start);
        t.id = *id;
      }
      if (len == mblen) has_single = true;
    }
    if (!has_single) {
      if (unk_id_ < 0) {
        throw_error(ErrorKind::kFormat, "tokenizer.json: Unigram model has no unk_id but the text holds a character "
                                        "outside its vocabulary");
      }
      Node& t = best[start + mblen];
      const double cand = unk_score + base;
      if (t.starts_at < 0 || cand > t.score) {
        t.score = cand;
        t.starts_at = static_cast<int64_t>(start);
        t.id = unk_id_;
      }
    }
    start += mblen;
  }
  // Backtrack; consecutive unk pieces fuse into one (fuse_unk is always on for Unigram in HF).
  std::vector<std::string_view> rev;
  size_t end = n;
  size_t unk_begin = 0, unk_end = 0;
  bool in_unk = false;
  while (end > 0) {
    const Node& node = best[end];
    const auto st = static_cast<size_t>(node.starts_at);
    if (unk_id_ >= 0 && node.id == unk_id_) {
      if (!in_unk) unk_end = end;
      in_unk = true;
      unk_begin = st;
    } else {
      if (in_unk) rev.push_back(s.substr(unk_begin, unk_end - unk_begin));
      in_unk = false;
      rev.push_back(s.substr(st, end - st));
    }
    end = st;
  }
  if (in_unk) rev.push_back(s.substr(unk_begin, unk_end - unk_begin));
  for (auto it = rev.rbegin(); it != rev.rend(); ++it) {
    if (const int32_t* id = ids_.find(*it)) {
      out.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : *it) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : *it) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    out.push_back(unk_id_);
  }
}

class WordPieceModel final : public Model {
 public:
  WordPieceModel(JsonElement m, const JsonPath& at) {
    const JsonPath vat = at.child("vocab");
    simdjson::dom::object vocab;
    if (json_require(m, "vocab", at).get_object().get(vocab)) json_fail(vat, "expected an object of token: id");
    for (auto [key, value] : vocab) {
      const int64_t id = json_as_int(value, vat.child(key));
      if (id < 0 || id > INT32_MAX) json_fail(vat.child(key), fmt::format("id {} is out of range", id));
      vocab_.insert(key, static_cast<int32_t>(id));
    }
    id_to_token_.build(vocab_);
    unk_ = json_string_or(m, "unk_token", at, "[UNK]");
    prefix_ = json_string_or(m, "continuing_subword_prefix", at, "##");
    max_chars_ = static_cast<size_t>(json_int_or(m, "max_input_chars_per_word", at, 100));
    if (!vocab_.find(unk_)) json_fail(at.child("unk_token"), fmt::format("\"{}\" is not in the vocabulary", unk_));
  }

  void tokenize(std::string_view w, std::vector<int32_t>& out) const override {
    size_t chars = 0;
    for (char c : w) chars += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    const int32_t unk = *vocab_.find(unk_);
    if (chars > max_chars_) {
      out.push_back(unk);
      return;
    }
    std::vector<int32_t> sub;
    std::string buf;
    size_t start = 0;
    while (start < w.size()) {
      size_t end = w.size();
      int32_t found = -1;
      while (start < end) {
        std::string_view cand = w.substr(start, end - start);
        if (start > 0) {
          buf = prefix_;
          buf += cand;
          cand = buf;
        }
        if (const int32_t* id = vocab_.find(cand)) {
          found = *id;
          break;
        }
        // Drop the last character.
        size_t k = end - 1;
        while (k > start && (static_cast<uint8_t>(w[k]) & 0xC0) == 0x80) --k;
        end = k;
      }
      if (found < 0) {
        out.push_back(unk);
        return;
      }
      sub.push_back(found);
      start = end;
    }
    out.insert(out.end(), sub.begin(), sub.end());
  }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int32_t* id = vocab_.find(token);
    return id ? std::optional<int32_t>(*id) : std::nullopt;
  }
  const std::string* id_to_token(int32_t id) const override { return id_to_token_.find(id); }
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }

 private:
  StringIdMap vocab_;
  IdTokenTable id_to_token_;
  std::string unk_, prefix_;
  size_t max_chars_ = 100;
};

}  // namespace

std::unique_ptr<Model> make_model(JsonElement model, const JsonPath& at) {
  // HF infers the model from its fields when "type" is absent (older files); do the same.
  if (!model.is_object()) json_fail(at, "expected an object with a \"type\" (BPE, Unigram or WordPiece)");
  std::string type;
  if (auto t = json_member(model, "type")) {
    type = json_as_string(*t, at.child("type"));
  } else if (json_member(model, "merges")) {
    type = "BPE";
  } else if (json_member(model, "unk_id") || (json_member(model, "vocab") && json_member(model, "vocab")->is_array())) {
    type = "Unigram";
  } else if (json_member(model, "max_input_chars_per_word")) {
    type = "WordPiece";
  }
  if (type == "BPE") return make_bpe_model(model, at);
  if (type == "Unigram") return std::make_unique<UnigramModel>(model, at);
  if (type == "WordPiece") return std::make_unique<WordPieceModel>(model, at);
  if (type.empty()) {
    json_fail(at, "no \"type\", and no field that tells the model (merges: BPE, unk_id: Unigram, "
                  "max_input_chars_per_word: WordPiece)");
  }
  json_fail(at.child("type"), fmt::format("unsupported model type \"{}\" (supported: BPE, Unigram, WordPiece)", type));
}

}  // namespace vlm::tok
