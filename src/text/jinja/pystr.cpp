// Python str helpers on UTF-8 (see pystr.h). Character classes come from utf8proc's Unicode tables, with the
// same category rules CPython uses (isspace: Zs or bidi WS/B/S; isalpha: L*; isprintable: not C*/Z* except ' ').
#include "text/jinja/pystr.h"

#include <utf8proc.h>

#include <algorithm>

namespace vlm::jinja::pystr {

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t n = static_cast<utf8proc_ssize_t>(s.size());
  utf8proc_ssize_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      out.push_back(p[i]);
      ++i;
      continue;
    }
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t len = utf8proc_iterate(p + i, n - i, &cp);
    if (len <= 0) {
      out.push_back(0xFFFD);
      ++i;
    } else {
      out.push_back(static_cast<char32_t>(cp));
      i += len;
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

bool valid_utf8(std::string_view s, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t n = static_cast<utf8proc_ssize_t>(s.size());
  utf8proc_ssize_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t len = utf8proc_iterate(p + i, n - i, &cp);
    if (len <= 0) {
      if (bad_offset) *bad_offset = static_cast<size_t>(i);
      return false;
    }
    i += len;
  }
  return true;
}

size_t length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

namespace {
utf8proc_category_t cat(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}
}  // namespace

bool is_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  if (cat(c) == UTF8PROC_CATEGORY_ZS) return true;
  const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(c));
  return p->bidi_class == UTF8PROC_BIDI_CLASS_WS || p->bidi_class == UTF8PROC_BIDI_CLASS_B ||
         p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

bool is_alpha(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  auto k = cat(c);
  return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
         k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_LO;
}
bool is_decimal(char32_t c) { return c < 0x80 ? (c >= '0' && c <= '9') : cat(c) == UTF8PROC_CATEGORY_ND; }
bool is_digit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  // Python's isdigit also accepts superscripts and other digits with a digit value (category No, some of them).
  return cat(c) == UTF8PROC_CATEGORY_ND || (c >= 0x00B2 && c <= 0x00B3) || c == 0x00B9 ||
         (c >= 0x2070 && c <= 0x2079) || (c >= 0x2080 && c <= 0x2089) || (c >= 0x2460 && c <= 0x2468);
}
bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  auto k = cat(c);
  return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}
bool is_alnum(char32_t c) { return is_alpha(c) || is_numeric(c); }
bool is_lower_char(char32_t c) { return cat(c) == UTF8PROC_CATEGORY_LL; }
bool is_upper_char(char32_t c) { return cat(c) == UTF8PROC_CATEGORY_LU || cat(c) == UTF8PROC_CATEGORY_LT; }
bool is_cased(char32_t c) {
  return upper_char(c) != c || lower_char(c) != c || cat(c) == UTF8PROC_CATEGORY_LT;
}
bool is_printable(char32_t c) {
  if (c == ' ') return true;
  if (c < 0x80) return c > 0x20 && c < 0x7F;
  switch (cat(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}
bool is_linebreak(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}
char32_t upper_char(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}
char32_t lower_char(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

namespace {
template <typename F>
std::string map_chars(std::string_view s, F f) {
  std::u32string u = decode(s);
  for (size_t i = 0; i < u.size(); ++i) u[i] = f(u[i], i, u);
  return encode(u);
}
}  // namespace

std::string upper(std::string_view s) {
  return map_chars(s, [](char32_t c, size_t, const std::u32string&) { return upper_char(c); });
}
std::string lower(std::string_view s) {
  return map_chars(s, [](char32_t c, size_t, const std::u32string&) { return lower_char(c); });
}
std::string capitalize(std::string_view s) {
  return map_chars(s, [](char32_t c, size_t i, const std::u32string&) {
    return i == 0 ? static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c))) : lower_char(c);
  });
}
std::string swapcase(std::string_view s) {
  return map_chars(s, [](char32_t c, size_t, const std::u32string&) {
    return is_upper_char(c) ? lower_char(c) : is_lower_char(c) ? upper_char(c) : c;
  });
}
std::string title(std::string_view s) {
  std::u32string u = decode(s);
  bool prev_cased = false;
  for (char32_t& c : u) {
    bool cased = is_cased(c);
    if (prev_cased) {
      c = lower_char(c);
    } else if (cased) {
      c = static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c)));
    }
    prev_cased = cased;
  }
  return encode(u);
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  std::u32string u = decode(s);
  std::u32string set = chars ? decode(*chars) : std::u32string();
  auto drop = [&](char32_t c) { return chars ? set.find(c) != std::u32string::npos : is_space(c); };
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && drop(u[b])) ++b;
  if (right)
    while (e > b && drop(u[e - 1])) --e;
  return encode(std::u32string_view(u).substr(b, e - b));
}

std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (sep) {
    size_t pos = 0;
    int64_t n = 0;
    while (n < maxsplit) {
      size_t f = s.find(*sep, pos);
      if (f == std::string_view::npos) break;
      out.emplace_back(s.substr(pos, f - pos));
      pos = f + sep->size();
      ++n;
    }
    out.emplace_back(s.substr(pos));
    return out;
  }
  std::u32string u = decode(s);
  size_t i = 0, n = u.size();
  int64_t count = 0;
  while (true) {
    while (i < n && is_space(u[i])) ++i;
    if (i >= n) break;
    if (count >= maxsplit) {
      // The rest (its trailing whitespace kept, as Python does) is the last item.
      out.push_back(encode(std::u32string_view(u).substr(i)));
      break;
    }
    size_t j = i;
    while (j < n && !is_space(u[j])) ++j;
    out.push_back(encode(std::u32string_view(u).substr(i, j - i)));
    ++count;
    i = j;
  }
  return out;
}

std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (maxsplit < 0) return split(s, sep, -1);
  if (sep) {
    size_t end = s.size();
    int64_t n = 0;
    while (n < maxsplit) {
      if (end < sep->size()) break;
      size_t f = s.rfind(*sep, end - sep->size());
      if (f == std::string_view::npos) break;
      out.emplace_back(s.substr(f + sep->size(), end - f - sep->size()));
      end = f;
      ++n;
    }
    out.emplace_back(s.substr(0, end));
    std::reverse(out.begin(), out.end());
    return out;
  }
  std::u32string u = decode(s);
  size_t j = u.size();
  int64_t count = 0;
  while (true) {
    while (j > 0 && is_space(u[j - 1])) --j;
    if (j == 0) break;
    if (count >= maxsplit) {
      out.push_back(encode(std::u32string_view(u).substr(0, j)));
      break;
    }
    size_t i = j;
    while (i > 0 && !is_space(u[i - 1])) --i;
    out.push_back(encode(std::u32string_view(u).substr(i, j - i)));
    ++count;
    j = i;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> splitlines(std::string_view s, bool keepends) {
  std::u32string u = decode(s);
  std::vector<std::string> out;
  size_t i = 0, n = u.size();
  while (i < n) {
    size_t j = i;
    while (j < n && !is_linebreak(u[j])) ++j;
    size_t eol = j;
    if (j < n) {
      if (u[j] == '\r' && j + 1 < n && u[j + 1] == '\n') j += 2;
      else j += 1;
      if (keepends) eol = j;
    }
    out.push_back(encode(std::u32string_view(u).substr(i, eol - i)));
    i = j;
  }
  return out;
}

std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old.empty()) {
    // Python inserts `repl` before every code point and at the end.
    std::u32string u = decode(s);
    int64_t n = 0;
    for (char32_t c : u) {
      if (n < count) {
        out.append(repl);
        ++n;
      }
      append_utf8(out, c);
    }
    if (n < count) out.append(repl);
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (n < count) {
    size_t f = s.find(old, pos);
    if (f == std::string_view::npos) break;
    out.append(s.substr(pos, f - pos));
    out.append(repl);
    pos = f + old.size();
    ++n;
  }
  out.append(s.substr(pos));
  return out;
}

bool all_of(std::string_view s, bool (*pred)(char32_t)) {
  std::u32string u = decode(s);
  if (u.empty()) return false;
  for (char32_t c : u)
    if (!pred(c)) return false;
  return true;
}

bool is_lower(std::string_view s) {
  bool cased = false;
  for (char32_t c : decode(s)) {
    if (is_upper_char(c)) return false;
    if (is_lower_char(c)) cased = true;
  }
  return cased;
}
bool is_upper(std::string_view s) {
  bool cased = false;
  for (char32_t c : decode(s)) {
    if (is_lower_char(c)) return false;
    if (is_upper_char(c)) cased = true;
  }
  return cased;
}
bool is_title(std::string_view s) {
  bool cased = false, prev_cased = false;
  for (char32_t c : decode(s)) {
    if (is_upper_char(c)) {
      if (prev_cased) return false;
      prev_cased = cased = true;
    } else if (is_lower_char(c)) {
      if (!prev_cased) return false;
      prev_cased = cased = true;
    } else {
      prev_cased = false;
    }
  }
  return cased;
}

std::string pad(std::string_view s, int64_t width, char32_t fill, char align) {
  int64_t len = static_cast<int64_t>(length(s));
  if (width <= len) return std::string(s);
  int64_t marg = width - len;
  int64_t left = 0;
  if (align == '>') left = marg;
  else if (align == '^') left = marg / 2 + (marg & width & 1);  // CPython's str.center split
  int64_t right = marg - left;
  std::string f;
  append_utf8(f, fill);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += f;
  out.append(s);
  for (int64_t i = 0; i < right; ++i) out += f;
  return out;
}

}  // namespace vlm::jinja::pystr
