// Python str semantics on UTF-8 text: strings are sequences of code points (len, indexing and slicing count
// code points), and whitespace, case and character classes follow Python's Unicode rules (via utf8proc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vlm::jinja::pystr {

std::u32string decode(std::string_view s);  // invalid bytes become U+FFFD
std::string encode(std::u32string_view s);
void append_utf8(std::string& out, char32_t c);
bool valid_utf8(std::string_view s, size_t* bad_offset = nullptr);
size_t length(std::string_view s);  // code points

bool is_space(char32_t c);      // str.isspace
bool is_alpha(char32_t c);      // str.isalpha
bool is_decimal(char32_t c);    // str.isdecimal
bool is_digit(char32_t c);      // str.isdigit
bool is_numeric(char32_t c);    // str.isnumeric
bool is_alnum(char32_t c);
bool is_lower_char(char32_t c);
bool is_upper_char(char32_t c);
bool is_cased(char32_t c);
bool is_printable(char32_t c);  // str.isprintable
bool is_linebreak(char32_t c);  // the separators of str.splitlines
char32_t upper_char(char32_t c);
char32_t lower_char(char32_t c);

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string capitalize(std::string_view s);  // str.capitalize
std::string title(std::string_view s);       // str.title
std::string swapcase(std::string_view s);
// str.strip/lstrip/rstrip with chars = None (whitespace) or a set of code points.
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> splitlines(std::string_view s, bool keepends);
std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
// Predicates of whole strings (str.isdigit(), ...): false for "".
bool all_of(std::string_view s, bool (*pred)(char32_t));
bool is_lower(std::string_view s);
bool is_upper(std::string_view s);
bool is_title(std::string_view s);
std::string pad(std::string_view s, int64_t width, char32_t fill, char align);  // '<', '>', '^' (center)

}  // namespace vlm::jinja::pystr
