// Implementations of the text helpers; see text_util.h for the rules each follows.
#include "check/text_util.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace vlm::check {

std::string collapse_whitespace(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      space = false;
      out += c;
    }
  }
  return out;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

std::string truncate_chars(std::string_view s, size_t max_chars, bool ellipsis) {
  if (utf8_length(s) <= max_chars) return std::string(s);
  size_t keep = ellipsis && max_chars >= 3 ? max_chars - 3 : max_chars;
  size_t n = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (n == keep) break;
      ++n;
    }
  }
  std::string out(s.substr(0, i));
  if (ellipsis) out = trim(out) + "...";
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    size_t e = s.find(sep, b);
    out.emplace_back(s.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b));
    if (e == std::string_view::npos) break;
    b = e + 1;
  }
  return out;
}

bool contains_ci(std::string_view hay, std::string_view needle) {
  return lower_ascii(hay).find(lower_ascii(needle)) != std::string::npos;
}
bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 16);
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string md_text(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '_' || c == '*' || c == '`') { out += '\\'; out += c; }
    else out += c;
  }
  return out;
}

std::string md_cell(std::string_view s) {
  std::string out;
  for (char c : md_text(s)) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += "<br>";
    else if (c == '\r') continue;
    else out += c;
  }
  return out;
}

std::string md_fence(std::string_view content, std::string_view lang) {
  size_t longest = 0, run = 0;
  for (char c : content) {
    run = c == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  std::string fence(std::max<size_t>(3, longest + 1), '`');
  std::string body(content);
  if (body.empty() || body.back() != '\n') body += '\n';
  return fence + std::string(lang) + "\n" + body + fence + "\n";
}

std::string slugify(std::string_view s) {
  std::string out;
  bool dash = false;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      if (dash && !out.empty()) out += '-';
      dash = false;
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      dash = true;
    }
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  static const char* kTable = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<unsigned char>(bytes[i])} << 16) |
                 (uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8) | static_cast<unsigned char>(bytes[i + 2]);
    for (int k = 3; k >= 0; --k) out += kTable[(v >> (6 * k)) & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t{static_cast<unsigned char>(bytes[i])} << 16;
    if (rest == 2) v |= uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8;
    out += kTable[(v >> 18) & 63];
    out += kTable[(v >> 12) & 63];
    out += rest == 2 ? kTable[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string sanitize_path(std::string_view path) {
  std::string p(path);
  if (const char* home = std::getenv("HOME"); home && *home && std::string(home) != "/") {
    std::string h = home;
    if (starts_with(p, h) && (p.size() == h.size() || p[h.size()] == '/')) return "~" + p.substr(h.size());
  }
  for (const char* root : {"/home/", "/Users/"}) {
    if (starts_with(p, root)) {
      size_t slash = p.find('/', std::string_view(root).size());
      return "~" + (slash == std::string::npos ? std::string() : p.substr(slash));
    }
  }
  return p;
}

std::string fmt_gb(double gb) {
  if (gb >= 10) return fmt::format("{:.0f}", gb);
  if (gb >= 1) return fmt::format("{:.1f}", gb);
  return fmt::format("{:.2f}", gb);
}

std::string fmt_int(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string fmt_tps(double tps) {
  if (tps >= 100) return fmt_int(static_cast<int64_t>(std::llround(tps)));
  if (tps >= 10) return fmt::format("{:.1f}", tps);
  return fmt::format("{:.3g}", tps);
}

std::string fmt_seconds(double s) { return fmt::format("{:.2f}s", s); }

}  // namespace vlm::check
