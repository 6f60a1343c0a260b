// HfTokenizer: loads tokenizer.json (simdjson; the 11 MB Qwen file in tens of milliseconds) and
// runs HF's encode pipeline — added tokens → normalizer → normalized added tokens → pre-tokenizer
// → model → post-processor — and decode (id → token, skip specials, decoder chain). When a
// tokenizer_config.json is given, add_bos_token / add_eos_token are honoured as transformers 5's
// TokenizersBackend does: if either key is present, or tokenizer.json has no post_processor, the
// post-processor becomes "[bos] $A [eos]" with the config's bos/eos tokens.
#include "text/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <unordered_map>

#include <simdjson.h>

#include "core/error.h"
#include "core/json.h"
#include "core/mapped_file.h"
#include "text/tokenizer/added_tokens.h"
#include "text/tokenizer/models.h"
#include "text/tokenizer/stages.h"
#include "text/unicode.h"

namespace vlm {
namespace {

using tok::JsonElement;
using tok::JsonPath;

class HfTokenizer final : public Tokenizer {
 public:
  // `json_text` null: read `json_path`; otherwise parse the text and use json_path as its name.
  HfTokenizer(const std::string& json_path, const std::string& config_path, const std::string_view* json_text = nullptr);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    auto it = added_by_content_.find(std::string(token));
    if (it != added_by_content_.end()) return it->second;
    return model_->token_to_id(token);
  }
  std::string id_to_token(int32_t id) const override {
    const std::string* s = token_string(id);
    return s ? *s : std::string();
  }
  int64_t vocab_size() const override { return vocab_size_; }
  bool is_special(int32_t id) const override {
    auto it = added_by_id_.find(id);
    return it != added_by_id_.end() && added_[it->second].special;
  }
  std::vector<int32_t> special_ids() const override { return special_ids_; }
  std::optional<std::string> bos_token() const override { return bos_; }
  std::optional<std::string> eos_token() const override { return eos_; }
  int64_t stream_context_chars() const override { return stream_context_chars_; }

 private:
  // HF simple_id_to_token: a normalized added token decodes as its normalized form.
  const std::string* token_string(int32_t id) const {
    auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) {
      const tok::AddedToken& t = added_[it->second];
      return t.normalized && normalizer_ ? &decode_forms_[it->second] : &t.content;
    }
    return model_->id_to_token(id);
  }
  void load_config(const std::string& config_path);

  std::string path_;
  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tok::Model> model_;
  std::unique_ptr<tok::PostProcessor> post_processor_;
  std::unique_ptr<tok::Decoder> decoder_;
  std::vector<tok::AddedToken> added_;
  std::vector<std::string> decode_forms_;  // per added token: normalized content (when normalized)
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  std::unordered_map<std::string, bool> special_contents_;
  std::vector<int32_t> special_ids_;
  tok::AddedTokenMatcher raw_matcher_, normalized_matcher_;
  int64_t vocab_size_ = 0;
  std::optional<std::string> bos_, eos_;
  bool had_post_processor_ = false;
  int64_t stream_context_chars_ = 0;
};

// Tokenizer::stream_context_chars for a decoder chain, walked in order: after a step that joins all tokens
// into one (Fuse, ByteLevel), a Replace can match across the window's start, so windows are unusable (-1);
// a Strip of leading characters only ever touches the first `start` characters of the whole text, so a
// window whose context decodes to more characters than all those strips together is exact.
int64_t decoder_stream_context(JsonElement d, bool& fused) {
  // Called after make_decoder validated the chain.
  std::string_view type;
  if (auto t = tok::json_member(d, "type"); !t || t->get_string().get(type)) type = {};
  if (type == "Sequence") {
    int64_t need = 0;
    simdjson::dom::array arr;
    if (auto ds = tok::json_member(d, "decoders"); ds && !ds->get_array().get(arr)) {
      for (JsonElement x : arr) {
        const int64_t n = decoder_stream_context(x, fused);
        if (n < 0) return -1;
        need = std::min<int64_t>(need + n, int64_t{1} << 40);
      }
    }
    return need;
  }
  if (type == "Fuse" || type == "ByteLevel") fused = true;
  if (fused && type == "Replace") return -1;
  if (fused && type == "Strip") {
    int64_t start = 0;
    if (auto st = tok::json_member(d, "start"); st && st->get_int64().get(start)) start = 0;
    return std::min<int64_t>(std::max<int64_t>(start, 0), int64_t{1} << 40);
  }
  return 0;
}

HfTokenizer::HfTokenizer(const std::string& json_path, const std::string& config_path, const std::string_view* json_text)
    : path_(json_path) {
  simdjson::padded_string text;
  if (json_text) {
    text = simdjson::padded_string(json_text->data(), json_text->size());
  } else {
    // Read through MappedFile so errors name the path; simdjson needs its own padded copy.
    auto file = MappedFile::open(json_path, LoadMode::kLazy, MemCategory::kOther);
    text = simdjson::padded_string(reinterpret_cast<const char*>(file->data()), file->size());
  }
  simdjson::dom::parser parser;
  JsonElement root;
  if (auto err = parser.parse(text).get(root)) {
    throw_error(ErrorKind::kFormat, "{}: not valid JSON: {}", json_path, simdjson::error_message(err));
  }
  const JsonPath at{&path_, ""};
  if (!root.is_object()) tok::json_fail(at, "expected a JSON object");

  model_ = tok::make_model(tok::json_require(root, "model", at), at.child("model"));
  if (auto n = tok::json_member(root, "normalizer")) normalizer_ = tok::make_normalizer(*n, at.child("normalizer"));
  if (auto p = tok::json_member(root, "pre_tokenizer")) {
    pre_tokenizer_ = tok::make_pre_tokenizer(*p, at.child("pre_tokenizer"));
  }
  if (auto p = tok::json_member(root, "post_processor")) {
    post_processor_ = tok::make_post_processor(*p, at.child("post_processor"));
    had_post_processor_ = true;
  }
  if (auto d = tok::json_member(root, "decoder")) {
    decoder_ = tok::make_decoder(*d, at.child("decoder"));  // validates the types first
    bool fused = false;
    stream_context_chars_ = decoder_stream_context(*d, fused);
  }

  // Added tokens. HF reads the "id" written in the file but does not use it (AddedVocabulary::add_tokens): a
  // token already in the model's vocabulary, or added before, keeps that id; a new one gets the model's size
  // (number of entries) or, once an added id reaches it, the largest added id + 1. For files HF wrote the two
  // agree; for others (gaps, sparse or duplicate ids) this is what HF and transformers encode with.
  if (auto arr_el = tok::json_member(root, "added_tokens")) {
    const JsonPath aat = at.child("added_tokens");
    simdjson::dom::array arr;
    if (arr_el->get_array().get(arr)) tok::json_fail(aat, "expected an array");
    const int64_t model_size = model_->vocab_size();
    int64_t max_added = -1;
    size_t i = 0;
    for (JsonElement e : arr) {
      const JsonPath tat = aat.index(i++);
      tok::AddedToken t;
      const int64_t file_id = tok::json_as_int(tok::json_require(e, "id", tat), tat.child("id"));
      if (file_id < 0 || file_id > INT32_MAX) tok::json_fail(tat.child("id"), fmt::format("id {} is out of range", file_id));
      t.content = tok::json_as_string(tok::json_require(e, "content", tat), tat.child("content"));
      t.single_word = tok::json_bool_or(e, "single_word", tat, false);
      t.lstrip = tok::json_bool_or(e, "lstrip", tat, false);
      t.rstrip = tok::json_bool_or(e, "rstrip", tat, false);
      t.normalized = tok::json_bool_or(e, "normalized", tat, true);
      t.special = tok::json_bool_or(e, "special", tat, false);
      if (t.content.empty()) continue;  // HF ignores empty added tokens
      auto existing = added_by_content_.find(t.content);
      if (existing != added_by_content_.end()) {
        // Same content listed twice: HF keeps one entry per content and its id; the later flags win.
        t.id = existing->second;
        for (tok::AddedToken& a : added_)
          if (a.content == t.content) a = t;
        continue;
      }
      int64_t id;
      if (auto in_model = model_->token_to_id(t.content)) {
        id = *in_model;
      } else if (max_added < 0) {
        id = model_size;
      } else {
        id = max_added >= model_size || model_size == 0 ? max_added + 1 : model_size;
      }
      if (id > INT32_MAX) tok::json_fail(tat.child("id"), "added token ids run past 2^31 - 1");
      max_added = std::max(max_added, id);
      t.id = static_cast<int32_t>(id);
      // Two contents can end up on one id only with sparse model ids; then, as in HF, both are matched in text
      // and the id decodes to the later one (added_by_id_ is overwritten).
      added_by_content_[t.content] = t.id;
      added_by_id_[t.id] = added_.size();
      if (t.special) special_contents_[t.content] = true;
      added_.push_back(std::move(t));
    }
  }
  std::vector<const tok::AddedToken*> raw, norm;
  std::vector<std::string> raw_pat, norm_pat;
  for (const tok::AddedToken& t : added_) {
    decode_forms_.push_back(t.normalized && normalizer_ ? normalizer_->normalize(t.content) : t.content);
    if (t.normalized) {
      norm.push_back(&t);
      norm_pat.push_back(decode_forms_.back());
    } else {
      raw.push_back(&t);
      raw_pat.push_back(t.content);
    }
    if (t.special) special_ids_.push_back(t.id);
  }
  std::sort(special_ids_.begin(), special_ids_.end());
  special_ids_.erase(std::unique(special_ids_.begin(), special_ids_.end()), special_ids_.end());
  raw_matcher_.build(raw, raw_pat);
  normalized_matcher_.build(norm, norm_pat);

  // Vocabulary size as HF's get_vocab_size(with_added_tokens=true): distinct token strings.
  vocab_size_ = model_->vocab_size();
  for (const tok::AddedToken& t : added_) {
    if (!model_->token_to_id(t.content)) ++vocab_size_;
  }

  if (!config_path.empty()) load_config(config_path);
}

std::optional<std::string> config_token(const Json& cfg, const std::string& key, const std::string& what) {
  const Json* v = json_find(cfg, key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) {
    // Older files serialise AddedToken objects: {"content": "<s>", "__type": "AddedToken", ...}.
    if (auto c = json_string(*v, "content", what + ": " + key)) return c;
  }
  throw_error(ErrorKind::kFormat, "{}: {}: expected a string or {{\"content\": ...}}", what, key);
}

void HfTokenizer::load_config(const std::string& config_path) {
  const Json cfg = read_json_file(config_path);
  if (!cfg.is_object()) throw_error(ErrorKind::kFormat, "{}: expected a JSON object", config_path);
  bos_ = config_token(cfg, "bos_token", config_path);
  eos_ = config_token(cfg, "eos_token", config_path);
  const auto add_bos = json_bool(cfg, "add_bos_token", config_path);
  const auto add_eos = json_bool(cfg, "add_eos_token", config_path);
  if (!add_bos && !add_eos && had_post_processor_) return;
  // transformers' update_post_processor: "[bos:0] $A:0 [eos:0]".
  std::vector<int32_t> prefix, suffix;
  auto resolve = [&](const std::optional<std::string>& token, const char* key) {
    auto id = token_to_id(*token);
    if (!id) {
      throw_error(ErrorKind::kFormat, "{}: {} \"{}\" is not in the vocabulary of {}", config_path, key, *token, path_);
    }
    return *id;
  };
  if (add_bos.value_or(false) && bos_) prefix.push_back(resolve(bos_, "bos_token"));
  if (add_eos.value_or(false) && eos_) suffix.push_back(resolve(eos_, "eos_token"));
  post_processor_ = tok::make_bos_eos_processor(std::move(prefix), std::move(suffix));
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  size_t bad = 0;
  if (!unicode::is_valid_utf8(text, &bad)) {
    throw_error(ErrorKind::kInvalidArgument, "tokenizer {}: input text is not valid UTF-8 (byte offset {})", path_, bad);
  }
  tok::Pieces pieces;
  pieces.push_back(tok::Piece{std::string(text), -1, true});
  // 1. Added tokens that match the raw text.
  raw_matcher_.split(pieces);
  // 2. Normalize what is left, then match the normalized added tokens.
  if (normalizer_) {
    for (tok::Piece& p : pieces)
      if (p.id < 0) p.text = normalizer_->normalize(p.text);
  }
  normalized_matcher_.split(pieces);
  // 3. Pre-tokenize, 4. run the model on each word.
  if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const tok::Piece& p : pieces) {
    if (p.id >= 0) {
      ids.push_back(p.id);
    } else if (!p.text.empty()) {
      model_->tokenize(p.text, ids);
    }
  }
  // 5. Special tokens around the sequence.
  if (add_special_tokens && post_processor_) post_processor_->process(ids);
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* s = token_string(id);
    if (!s) continue;  // unknown ids are dropped, as HF does
    if (skip_special_tokens && special_contents_.count(*s)) continue;
    tokens.push_back(*s);
  }
  if (decoder_) {
    decoder_->decode_chain(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) out.push_back(' ');
    out += tokens[i];
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_files(const std::string& tokenizer_json, const std::string& tokenizer_config_json) {
  return std::make_unique<HfTokenizer>(tokenizer_json, tokenizer_config_json);
}

std::unique_ptr<Tokenizer> Tokenizer::from_json_text(std::string_view json_text, const std::string& origin) {
  return std::make_unique<HfTokenizer>(origin, std::string(), &json_text);
}

std::unique_ptr<Tokenizer> Tokenizer::from_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  const fs::path json = dir / "tokenizer.json";
  if (!fs::is_regular_file(json)) {
    throw_error(ErrorKind::kNotFound, "{}: no tokenizer.json in this folder", folder);
  }
  const fs::path cfg = dir / "tokenizer_config.json";
  return from_files(json.string(), fs::is_regular_file(cfg) ? cfg.string() : std::string());
}

// ---- streaming ---------------------------------------------------------------------------------

namespace {
// "<0xAB>": a byte-fallback token. HF's ByteFallback decoder turns a whole run of them into text
// only once the run ends, and an invalid run becomes one U+FFFD per byte — so text that depends on
// a run still growing may change and must not be emitted yet.
bool is_byte_token(const std::string& t) {
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>';
}

size_t code_points(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}
}  // namespace

StreamingDecoder::StreamingDecoder(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}

std::string StreamingDecoder::decode_range(size_t begin, size_t end) const {
  return tok_.decode(std::vector<int32_t>(ids_.begin() + static_cast<std::ptrdiff_t>(begin),
                                          ids_.begin() + static_cast<std::ptrdiff_t>(end)),
                     skip_special_);
}

// The next window starts far enough back that its context, ids_[window_start_ .. last], decodes on its own to
// more than stream_context_chars() code points. Steps that depend on the position in the text — Metaspace's and
// WordPiece's first-token rules, a Strip of leading characters after Fuse — then act inside the context, alike
// in the window's decode and in the context's own, and the window's text after the context is what the full
// decode adds. The span doubles while too short, so the search costs O(span) decoded tokens.
void StreamingDecoder::set_context(size_t last) {
  const size_t need = static_cast<size_t>(std::max<int64_t>(tok_.stream_context_chars(), 0));
  size_t span = 1;
  for (;;) {
    const size_t begin = last + 1 >= span ? last + 1 - span : 0;
    context_text_ = decode_range(begin, last + 1);
    window_start_ = begin;
    if (begin == 0 || code_points(context_text_) > need) break;
    span *= 2;
  }
  has_context_ = true;
}

// The text that the ids after the context add: from the window when the chain allows one, else (or should
// the context decode differently inside the window) from the full decode, of which all emitted text is a prefix.
std::string StreamingDecoder::fresh_text() const {
  if (tok_.stream_context_chars() >= 0) {
    std::string text = decode_range(window_start_, ids_.size());
    if (!has_context_) return text;
    if (text.starts_with(context_text_)) return text.substr(context_text_.size());
  }
  const std::string full = tok_.decode(ids_, skip_special_);
  return full.size() > emitted_bytes_ ? full.substr(emitted_bytes_) : std::string();
}

std::string StreamingDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string token = tok_.id_to_token(id);
  if (token.empty() || (skip_special_ && tok_.is_special(id))) return {};  // decodes to nothing
  if (is_byte_token(token)) return {};
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string fresh = fresh_text();
  // A trailing U+FFFD may be an incomplete character that the next byte-level token completes.
  if (fresh.empty() || std::string_view(fresh).ends_with(kReplacement)) return {};
  emitted_bytes_ += fresh.size();
  set_context(ids_.size() - 1);  // this token ends the next window's context
  return fresh;
}

std::string StreamingDecoder::flush() {
  std::string fresh = fresh_text();
  emitted_bytes_ += fresh.size();
  // Should more ids follow, the last token that decodes to something ends the next context.
  for (size_t k = ids_.size(); k-- > window_start_;) {
    if (!tok_.id_to_token(ids_[k]).empty() && !(skip_special_ && tok_.is_special(ids_[k]))) {
      set_context(k);
      break;
    }
  }
  return fresh;
}

}  // namespace vlm
