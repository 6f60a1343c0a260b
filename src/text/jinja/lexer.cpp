// Jinja lexer (see lexer.h). The structure follows jinja2's regex rules: the root state searches for the first
// tag opener; tag states try the closing rule first (only when brackets are balanced), then whitespace,
// numbers, names, strings and operators. Whitespace stripping follows jinja2's OptionalLStrip rule exactly.
#include "text/jinja/lexer.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "text/jinja/pystr.h"

namespace vlm::jinja {
namespace {

class Lexer {
 public:
  Lexer(const std::string& raw, const std::string& origin) : origin_(origin) {
    // jinja2 splits on \r\n, \r, \n and rejoins with \n, then drops one trailing newline.
    src_.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        src_.push_back(raw[i]);
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit_data(src_.substr(pos), pos);
        break;
      }
      char kind = src_[tag + 1];  // '{', '%', '#'
      char sign = tag + 2 < n && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      std::string text = src_.substr(pos, tag - pos);
      text = strip_before(text, sign, kind != '{', line_starting);
      emit_data(text, pos);
      size_t after = tag + 2 + (sign ? 1 : 0);
      if (kind == '%') {
        size_t raw_end = 0;
        if (match_raw_begin(after, raw_end)) {
          pos = lex_raw(raw_end, line_starting);
          continue;
        }
        push(Tok::kBlockBegin, tag);
        pos = lex_tag(after, false, line_starting);
      } else if (kind == '{') {
        push(Tok::kVarBegin, tag);
        pos = lex_tag(after, true, line_starting);
      } else {
        pos = lex_comment(after, tag, line_starting);
      }
    }
    Token eof;
    eof.type = Tok::kEof;
    SourcePos p = position(src_.size());
    eof.line = p.line;
    eof.col = p.col;
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  // Line and column (in code points) of a byte offset. Offsets arrive mostly in increasing order, so the column
  // is counted on from the previous answer when it is on the same line (keeps long one-line templates linear).
  SourcePos position(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = static_cast<size_t>(it - line_starts_.begin());
    size_t start = line_starts_[line - 1];
    size_t from = start, col = 1;
    if (cache_line_ == line && cache_offset_ <= offset) {
      from = cache_offset_;
      col = cache_col_;
    }
    col += pystr::length(std::string_view(src_).substr(from, offset - from));
    cache_line_ = line;
    cache_offset_ = offset;
    cache_col_ = col;
    return {static_cast<int>(line), static_cast<int>(col)};
  }

  [[noreturn]] void fail(size_t offset, const std::string& msg) const {
    SourcePos p = position(offset);
    throw_error(ErrorKind::kFormat, "{}:{}:{}: template syntax error: {}", origin_, p.line, p.col, msg);
  }

  void push(Tok t, size_t offset, std::string value = "") {
    Token tok;
    tok.type = t;
    tok.value = std::move(value);
    SourcePos p = position(offset);
    tok.line = p.line;
    tok.col = p.col;
    tokens_.push_back(std::move(tok));
  }

  void emit_data(const std::string& text, size_t offset) {
    if (!text.empty()) push(Tok::kData, offset, text);
  }

  size_t find_tag(size_t pos) const {
    while (true) {
      size_t f = src_.find('{', pos);
      if (f == std::string::npos || f + 1 >= src_.size()) return std::string::npos;
      char c = src_[f + 1];
      if (c == '{' || c == '%' || c == '#') return f;
      pos = f + 1;
    }
  }

  // Python's str.rstrip() on the text before a `-` tag, or lstrip_blocks' removal of the spaces/tabs that open
  // the tag's line.
  static std::string strip_before(const std::string& text, char sign, bool lstrip_applies, bool line_starting) {
    if (sign == '-') return pystr::strip(text, std::nullopt, false, true);
    if (sign == '+' || !lstrip_applies) return text;
    size_t nl = text.rfind('\n');
    size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos > 0 || line_starting) {
      bool only_blank = true;
      for (size_t i = l_pos; i < text.size(); ++i)
        if (text[i] != ' ' && text[i] != '\t') {
          only_blank = false;
          break;
        }
      if (only_blank) return text.substr(0, l_pos);
    }
    return text;
  }

  // Length of Unicode whitespace (Python's \s) starting at `pos`.
  size_t skip_space(size_t pos) const {
    while (pos < src_.size()) {
      unsigned char c = static_cast<unsigned char>(src_[pos]);
      if (c < 0x80) {
        if (!pystr::is_space(c)) break;
        ++pos;
        continue;
      }
      size_t len = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : 2;
      std::u32string u = pystr::decode(std::string_view(src_).substr(pos, len));
      if (u.size() != 1 || !pystr::is_space(u[0])) break;
      pos += len;
    }
    return pos;
  }

  bool starts(size_t pos, const char* s) const { return src_.compare(pos, std::strlen(s), s) == 0; }

  // `{%(-|+|)\s*raw\s*(-%}\s*|%})` (note: no trim_blocks after the opening raw tag, as in jinja2).
  bool match_raw_begin(size_t after, size_t& end) const {
    size_t p = skip_space(after);
    if (!starts(p, "raw")) return false;
    p = skip_space(p + 3);
    if (starts(p, "-%}")) {
      end = skip_space(p + 3);
      return true;
    }
    if (starts(p, "%}")) {
      end = p + 2;
      return true;
    }
    return false;
  }

  // Closing rule of a block tag at `p`: `+%}`, `-%}\s*` or `%}\n?`; returns the end offset or npos.
  size_t block_close(size_t p) const {
    if (starts(p, "+%}")) return p + 3;
    if (starts(p, "-%}")) return skip_space(p + 3);
    if (starts(p, "%}")) return (p + 2 < src_.size() && src_[p + 2] == '\n') ? p + 3 : p + 2;
    return std::string::npos;
  }

  size_t lex_raw(size_t pos, bool& line_starting) {
    line_starting = pos > 0 && src_[pos - 1] == '\n';
    if (pos >= src_.size()) return pos;  // jinja2 stops at end of input before trying the raw rules
    size_t search = pos;
    while (true) {
      size_t f = src_.find("{%", search);
      if (f == std::string::npos) fail(pos, "Missing end of raw directive");
      size_t p = f + 2;
      char sign = (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ? src_[p] : 0;
      if (sign) ++p;
      p = skip_space(p);
      if (starts(p, "endraw")) {
        size_t q = skip_space(p + 6);
        size_t end = block_close(q);
        if (end != std::string::npos) {
          std::string text = strip_before(src_.substr(pos, f - pos), sign, true, line_starting);
          emit_data(text, pos);
          line_starting = end > 0 && src_[end - 1] == '\n';
          return end;
        }
      }
      search = f + 1;
    }
  }

  size_t lex_comment(size_t pos, size_t begin, bool& line_starting) {
    if (pos >= src_.size()) return pos;  // jinja2 ignores a bare "{#" at the very end
    size_t search = pos;
    while (true) {
      size_t f = src_.find("#}", search);
      if (f == std::string::npos) fail(begin, "Missing end of comment tag");
      size_t end;
      if (f > pos && src_[f - 1] == '-') end = skip_space(f + 2);
      else if (f > pos && src_[f - 1] == '+') end = f + 2;
      else end = (f + 2 < src_.size() && src_[f + 2] == '\n') ? f + 3 : f + 2;
      line_starting = src_[end - 1] == '\n';
      return end;
    }
  }

  size_t lex_tag(size_t pos, bool variable, bool& line_starting) {
    std::vector<char> balance;
    const size_t n = src_.size();
    while (true) {
      if (pos >= n) fail(pos, variable ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
      if (balance.empty()) {
        size_t end = std::string::npos;
        if (variable) {
          if (starts(pos, "-}}")) end = skip_space(pos + 3);
          else if (starts(pos, "}}")) end = pos + 2;
        } else {
          end = block_close(pos);
        }
        if (end != std::string::npos) {
          push(variable ? Tok::kVarEnd : Tok::kBlockEnd, pos);
          line_starting = src_[end - 1] == '\n';
          return end;
        }
      }
      unsigned char c = static_cast<unsigned char>(src_[pos]);
      size_t sp = skip_space(pos);
      if (sp != pos) {
        pos = sp;
        continue;
      }
      if (c >= '0' && c <= '9') {
        pos = lex_number(pos);
      } else if (c == '_' || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) {
        size_t e = pos;
        while (e < n && (src_[e] == '_' || std::isalnum(static_cast<unsigned char>(src_[e])))) ++e;
        push(Tok::kName, pos, src_.substr(pos, e - pos));
        pos = e;
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        static const char* kOps2[] = {"//", "**", "==", "!=", ">=", "<="};
        std::string op;
        for (const char* o : kOps2)
          if (starts(pos, o)) op = o;
        if (op.empty()) {
          if (std::strchr("+-/*%~[](){}><=.:|,;", static_cast<char>(c)) == nullptr || c == 0)
            fail(pos, fmt::format("unexpected char '{}'", src_.substr(pos, 1)));
          op = std::string(1, static_cast<char>(c));
        }
        if (op == "(" || op == "[" || op == "{") {
          balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
        } else if (op == ")" || op == "]" || op == "}") {
          if (balance.empty()) fail(pos, fmt::format("unexpected '{}'", op));
          if (balance.back() != op[0])
            fail(pos, fmt::format("unexpected '{}', expected '{}'", op, balance.back()));
          balance.pop_back();
        }
        push(Tok::kOp, pos, op);
        pos += op.size();
      }
    }
  }

  size_t lex_number(size_t pos) {
    const size_t n = src_.size();
    auto digits = [&](size_t p, auto is_digit) {
      // \d+(_\d+)*
      if (p >= n || !is_digit(src_[p])) return std::string::npos;
      while (p < n) {
        if (is_digit(src_[p])) ++p;
        else if (src_[p] == '_' && p + 1 < n && is_digit(src_[p + 1])) p += 2;
        else break;
      }
      return p;
    };
    auto dec = [](char ch) { return ch >= '0' && ch <= '9'; };
    // Float: digits ( (. digits)? e[+-]?digits | . digits )
    bool after_dot = pos > 0 && src_[pos - 1] == '.';
    size_t ip = digits(pos, dec);
    if (!after_dot) {
      size_t p = ip;
      bool frac = false;
      if (p < n && src_[p] == '.') {
        size_t q = digits(p + 1, dec);
        if (q != std::string::npos) {
          p = q;
          frac = true;
        }
      }
      size_t expo = std::string::npos;
      if (p < n && (src_[p] == 'e' || src_[p] == 'E')) {
        size_t q = p + 1;
        if (q < n && (src_[q] == '+' || src_[q] == '-')) ++q;
        expo = digits(q, dec);
      }
      if (expo != std::string::npos) p = expo;
      if (frac || expo != std::string::npos) {
        std::string text;
        for (size_t i = pos; i < p; ++i)
          if (src_[i] != '_') text.push_back(src_[i]);
        Token t;
        push(Tok::kFloat, pos, text);
        tokens_.back().float_value = std::strtod(text.c_str(), nullptr);
        return p;
      }
    }
    // Integer: 0b/0o/0x prefixes, else [1-9](_?\d)* | 0(_?0)*
    int base = 10;
    size_t p = pos;
    if (src_[pos] == '0' && pos + 1 < n && std::strchr("bBoOxX", src_[pos + 1]) && src_[pos + 1] != 0) {
      char b = static_cast<char>(src_[pos + 1] | 0x20);
      base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
      p = pos + 2;
      size_t q = p;
      while (q < n) {
        char ch = src_[q];
        bool ok = (base == 2 && (ch == '0' || ch == '1')) || (base == 8 && ch >= '0' && ch <= '7') ||
                  (base == 16 && std::isxdigit(static_cast<unsigned char>(ch)));
        if (ok) ++q;
        else if (ch == '_' && q + 1 < n) ++q;
        else break;
      }
      if (q == p) base = 10, p = pos;
      else p = q;
    }
    if (base == 10) {
      if (src_[pos] == '0') {
        p = pos + 1;
        while (p < n && (src_[p] == '0' || (src_[p] == '_' && p + 1 < n && src_[p + 1] == '0'))) ++p;
      } else {
        p = ip;
      }
    }
    std::string text;
    for (size_t i = (base == 10 ? pos : pos + 2); i < p; ++i)
      if (src_[i] != '_') text.push_back(src_[i]);
    errno = 0;
    unsigned long long v = std::strtoull(text.c_str(), nullptr, base);
    if (errno == ERANGE || v > static_cast<unsigned long long>(INT64_MAX))
      fail(pos, "integer literal beyond 64-bit range");
    push(Tok::kInt, pos, text);
    tokens_.back().int_value = static_cast<int64_t>(v);
    return p;
  }

  // Python's "unicode-escape" decoding of the literal's body, as jinja2 applies it.
  size_t lex_string(size_t pos) {
    char q = src_[pos];
    size_t p = pos + 1;
    std::string out;
    const size_t n = src_.size();
    while (true) {
      if (p >= n) fail(pos, "unexpected end of string");
      char c = src_[p];
      if (c == q) break;
      if (c != '\\') {
        out.push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= n) fail(pos, "unexpected end of string");
      char e = src_[p + 1];
      p += 2;
      auto hex = [&](int count) {
        if (p + static_cast<size_t>(count) > n) fail(pos, "truncated \\x/\\u escape in string literal");
        uint32_t v = 0;
        for (int i = 0; i < count; ++i) {
          char h = src_[p + static_cast<size_t>(i)];
          if (!std::isxdigit(static_cast<unsigned char>(h))) fail(pos, "truncated \\x/\\u escape in string literal");
          v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
        }
        p += static_cast<size_t>(count);
        if (v > 0x10FFFF) fail(pos, "illegal Unicode character in string literal");
        pystr::append_utf8(out, v);
      };
      switch (e) {
        case '\n': break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        case 'N': fail(pos, "\\N{...} escapes are not supported");
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && p < n && src_[p] >= '0' && src_[p] <= '7'; ++i, ++p)
              v = v * 8 + static_cast<uint32_t>(src_[p] - '0');
            pystr::append_utf8(out, v);
          } else {
            // Unknown escapes keep their backslash (Python's behaviour).
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    push(Tok::kString, pos, out);
    return p + 1;
  }

  std::string src_;
  const std::string& origin_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  mutable size_t cache_line_ = 0, cache_offset_ = 0, cache_col_ = 1;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const std::string& origin) {
  size_t bad = 0;
  if (!pystr::valid_utf8(source, &bad))
    throw_error(ErrorKind::kFormat, "{}: template is not valid UTF-8 (byte offset {})", origin, bad);
  return Lexer(source, origin).run();
}

}  // namespace vlm::jinja
