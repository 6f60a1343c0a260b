// Tokenizer for Jinja templates, reproducing jinja2 3.1's lexer under the settings transformers uses
// (trim_blocks, lstrip_blocks, keep_trailing_newline off): newline normalisation, `{%- -%}`/`{{- -}}`/`{#- -#}`
// whitespace control, `+` to opt out, raw blocks, comments, and the tokens inside tags.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vlm::jinja {

enum class Tok : uint8_t {
  kData,        // literal template text (value = text)
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,
  kString,      // value = decoded string
  kInt,
  kFloat,
  kOp,          // value = operator text ("+", "//", "(", ...)
  kEof,
};

struct Token {
  Tok type = Tok::kEof;
  std::string value;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1, col = 1;
};

struct SourcePos {
  int line = 1, col = 1;
};

// Splits `source` into tokens. Throws Error(kFormat) naming `origin`, line and column on bad syntax.
std::vector<Token> tokenize(const std::string& source, const std::string& origin);

}  // namespace vlm::jinja
