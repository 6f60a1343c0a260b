// Added tokens (HF AddedVocabulary): tokens matched in the raw text before the model runs, special
// or not. Matching is leftmost-longest over a byte trie, then HF's single_word / lstrip / rstrip
// rules. Two sets: tokens with normalized=false match the raw text; normalized=true tokens match
// the normalized text (their content normalized the same way).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer/components.h"

namespace vlm::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

class AddedTokenMatcher {
 public:
  // `patterns[i]` is the text to find for tokens[i] (the content, or its normalized form).
  void build(const std::vector<const AddedToken*>& tokens, const std::vector<std::string>& patterns);
  bool empty() const { return tokens_.empty(); }
  // Splits every unresolved piece into text pieces and resolved added-token pieces (empty ones dropped).
  void split(Pieces& pieces) const;

 private:
  // Longest token starting at `pos`: returns its index, length in *len; -1 if none.
  int32_t longest_at(std::string_view s, size_t pos, size_t* len) const;
  void split_one(Piece& piece, Pieces& out) const;

  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> kids;  // sorted by byte
    int32_t token = -1;
  };
  std::vector<Node> nodes_;
  std::vector<const AddedToken*> tokens_;
  bool first_byte_[256] = {};
};

}  // namespace vlm::tok
