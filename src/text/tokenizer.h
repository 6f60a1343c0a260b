// Hugging Face `tokenizer.json` tokenizers: normalizer → pre-tokenizer → model (BPE / Unigram /
// WordPiece) → post-processor, with added/special tokens, and the matching decoder. Ids and text are
// identical to Hugging Face's `tokenizers` library (tested against it).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vlm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Loads tokenizer.json; `tokenizer_config_json` (may be empty) supplies add_bos_token /
  // add_eos_token and the special-token strings. Errors name the file and the JSON field.
  static std::unique_ptr<Tokenizer> from_files(const std::string& tokenizer_json,
                                               const std::string& tokenizer_config_json = "");
  // tokenizer.json + tokenizer_config.json from a model folder.
  static std::unique_ptr<Tokenizer> from_folder(const std::string& folder);
  // tokenizer.json content already in memory (no tokenizer_config.json); `origin` names it in
  // errors. Used by the fuzzer and by tests that build tokenizers on the fly.
  static std::unique_ptr<Tokenizer> from_json_text(std::string_view json_text, const std::string& origin);

  // Special tokens written in the text are recognised (as HF does for added tokens).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;  // "" if out of range
  virtual int64_t vocab_size() const = 0;                 // including added tokens
  virtual bool is_special(int32_t id) const = 0;
  virtual std::vector<int32_t> special_ids() const = 0;
  // From tokenizer_config.json (content strings), when present.
  virtual std::optional<std::string> bos_token() const = 0;
  virtual std::optional<std::string> eos_token() const = 0;
  // How many code points the context of a StreamingDecoder window must decode to, beyond which decoding
  // the window reproduces the full decode after the context: the sum of the leading-character Strips that
  // follow a Fuse/ByteLevel step (Llama 2's chain strips 1), else 0. -1 when no window is exact (a Replace
  // after Fuse can match across the window's start); StreamingDecoder then decodes everything on each push.
  virtual int64_t stream_context_chars() const { return 0; }
};

// Incremental detokenizer: push ids one at a time, get back only complete UTF-8 text; the
// concatenation of all pushes plus flush() equals decode(all ids). Cost per push is independent of
// the sequence length: it decodes a window that starts a little before the last emitted token (those
// tokens are the context, as in HF's DecodeStream) and returns the text the window adds beyond it.
class StreamingDecoder {
 public:
  StreamingDecoder(const Tokenizer& tok, bool skip_special_tokens);
  std::string push(int32_t id);
  std::string flush();

 private:
  std::string decode_range(size_t begin, size_t end) const;  // decode(ids_[begin, end))
  void set_context(size_t last);
  std::string fresh_text() const;

  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t emitted_bytes_ = 0;  // total bytes returned so far
  size_t window_start_ = 0;   // first id of the decode window
  std::string context_text_;  // decode of the window's context (ids_[window_start_ .. last emitted]) when set
  bool has_context_ = false;
};

}  // namespace vlm
