// AddedTokenMatcher: byte trie with HF AddedVocabulary::find_matches semantics.
#include "text/tokenizer/added_tokens.h"

#include <algorithm>

#include "text/unicode.h"

namespace vlm::tok {
namespace {

// Rust regex `\w$` / `^\w` / `\s*$` / `^\s*` on the text around a match.
bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t k = s.size() - 1;
  while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
  size_t p = k;
  return unicode::is_word_char(unicode::decode_utf8(s, p));
}
bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t p = 0;
  return unicode::is_word_char(unicode::decode_utf8(s, p));
}
size_t trailing_space_start(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t k = e - 1;
    while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
    size_t p = k;
    if (!unicode::is_whitespace(unicode::decode_utf8(s, p))) break;
    e = k;
  }
  return e;
}
size_t leading_space_len(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t p = pos;
    if (!unicode::is_whitespace(unicode::decode_utf8(s, p))) break;
    pos = p;
  }
  return pos;
}

}  // namespace

void AddedTokenMatcher::build(const std::vector<const AddedToken*>& tokens, const std::vector<std::string>& patterns) {
  nodes_.assign(1, Node{});
  tokens_ = tokens;
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string& pat = patterns[t];
    if (pat.empty()) continue;
    first_byte_[static_cast<uint8_t>(pat[0])] = true;
    int32_t node = 0;
    for (char ch : pat) {
      const auto b = static_cast<uint8_t>(ch);
      auto& kids = nodes_[node].kids;
      auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(b, int32_t{-1}),
                                 [](const auto& x, const auto& y) { return x.first < y.first; });
      if (it != kids.end() && it->first == b) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(nodes_.size());
        kids.insert(it, {b, child});
        nodes_.emplace_back();
        node = child;
      }
    }
    // Two tokens with the same pattern: the later one wins (as the aho-corasick value would).
    nodes_[node].token = static_cast<int32_t>(t);
  }
}

int32_t AddedTokenMatcher::longest_at(std::string_view s, size_t pos, size_t* len) const {
  int32_t node = 0, best = -1;
  for (size_t i = pos; i < s.size(); ++i) {
    const auto b = static_cast<uint8_t>(s[i]);
    const auto& kids = nodes_[node].kids;
    auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(b, int32_t{-1}),
                               [](const auto& x, const auto& y) { return x.first < y.first; });
    if (it == kids.end() || it->first != b) break;
    node = it->second;
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      *len = i + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::split_one(Piece& piece, Pieces& out) const {
  const std::string_view s = piece.text;
  size_t start_offset = 0;  // end of the previous match
  auto emit_text = [&](size_t b, size_t e) {
    if (e > b) out.push_back(Piece{std::string(s.substr(b, e - b)), -1, piece.at_origin && b == 0});
  };
  size_t pos = 0;
  while (pos < s.size()) {
    if (!first_byte_[static_cast<uint8_t>(s[pos])]) {
      ++pos;
      continue;
    }
    size_t len = 0;
    const int32_t t = longest_at(s, pos, &len);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = *tokens_[t];
    size_t start = pos, stop = pos + len;
    pos = stop;  // the automaton resumes after this match even if it is discarded below
    if (tok.single_word) {
      const bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
      const bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) start = std::max(trailing_space_start(s.substr(0, start)), start_offset);
    if (tok.rstrip) stop += leading_space_len(s.substr(stop));
    emit_text(start_offset, start);
    out.push_back(Piece{std::string(s.substr(start, stop - start)), tok.id, piece.at_origin && start == 0});
    start_offset = stop;
    pos = std::max(pos, stop);
  }
  emit_text(start_offset, s.size());
}

void AddedTokenMatcher::split(Pieces& pieces) const {
  if (tokens_.empty()) {
    std::erase_if(pieces, [](const Piece& p) { return p.id < 0 && p.text.empty(); });
    return;
  }
  Pieces out;
  out.reserve(pieces.size() + 8);
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
    } else {
      split_one(p, out);
    }
  }
  pieces = std::move(out);
}

}  // namespace vlm::tok
