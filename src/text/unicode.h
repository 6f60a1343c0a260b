// Unicode helpers for the text layer: UTF-8 decoding/encoding, Rust-compatible lossy decoding
// (`String::from_utf8_lossy`, which Hugging Face's decoders use), the character classes the
// tokenizer components test (Rust's char::is_whitespace / is_alphanumeric / is_numeric, Unicode
// punctuation), and normalization forms through utf8proc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vlm::unicode {

// Decodes one code point at s[pos]; advances pos. Invalid or truncated sequences yield U+FFFD and
// advance by one byte (callers that need validation use is_valid_utf8 first).
char32_t decode_utf8(std::string_view s, size_t& pos);
// Length in bytes of the UTF-8 sequence that starts with lead byte `b` (1 for invalid leads).
inline size_t utf8_seq_len(uint8_t b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}
void append_utf8(std::string& out, char32_t cp);
std::string to_utf8(char32_t cp);

// Strict validation (no overlongs, no surrogates, <= U+10FFFF). On failure *bad_offset (if given)
// receives the offset of the first invalid byte.
bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);
// Length of the longest prefix of `s` that ends on a complete code point, treating an incomplete
// but so-far-valid sequence at the very end as "not yet complete" (used by streaming decoders).
size_t complete_utf8_prefix(std::string_view s);
// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Character classes with the semantics of Rust's `char` methods (what HF tokenizers calls).
bool is_whitespace(char32_t c);    // White_Space property
bool is_numeric(char32_t c);       // general category Nd, Nl, No
bool is_alphabetic(char32_t c);    // approximated by categories L*, Nl, Mn, Mc (Other_Alphabetic)
inline bool is_alphanumeric(char32_t c) { return is_alphabetic(c) || is_numeric(c); }
bool is_punctuation(char32_t c);   // ASCII punctuation or categories Pc Pd Ps Pe Pi Pf Po
bool is_word_char(char32_t c);     // Rust regex `\w`: Alphabetic, M, Nd, Pc, Join_Control
bool is_control(char32_t c);       // category Cc/Cf/Co/Cn... as BERT's _is_control
bool is_mark(char32_t c);            // categories Mn, Mc, Me (unicode-normalization is_combining_mark)
bool is_nonspacing_mark(char32_t c); // category Mn
bool is_cjk(char32_t c);           // BERT's CJK ideograph ranges

enum class NormForm { kNFC, kNFD, kNFKC, kNFKD };
// Throws Error(kInvalidArgument) on invalid UTF-8.
std::string normalize(std::string_view s, NormForm form);
// Rust's char::to_lowercase, applied per code point (no final-sigma context, as HF does).
std::string to_lower(std::string_view s);

}  // namespace vlm::unicode
