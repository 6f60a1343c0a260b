// Internal interfaces of the tokenizer pipeline (not part of the public contract): the pieces that
// flow through it and one abstract class per stage. The stages follow Hugging Face `tokenizers`:
//   added-token split → normalizer → pre-tokenizer → model → post-processor;  decoder for ids → text.
// We track no offsets (vlmcheck only needs ids), except the one bit HF's Metaspace "first" scheme
// reads: whether a piece starts at offset 0 of the original text.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vlm::tok {

// One span of text on its way through the pipeline. `id >= 0` marks a span already resolved to an
// added token; later stages pass such spans through untouched.
struct Piece {
  std::string text;
  int32_t id = -1;
  bool at_origin = false;  // starts at byte 0 of the original input
};
using Pieces = std::vector<Piece>;

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string_view s) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits/rewrites every piece with id < 0; pieces that end up empty are dropped.
  virtual void pre_tokenize(Pieces& pieces) const = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word.
  virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual const std::string* id_to_token(int32_t id) const = 0;  // null when out of range
  virtual int64_t vocab_size() const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Called only with add_special_tokens = true; single sequence (no pairs in vlmcheck).
  virtual void process(std::vector<int32_t>& ids) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // HF's decode_chain: tokens in, tokens out; the final text is their concatenation.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

}  // namespace vlm::tok
