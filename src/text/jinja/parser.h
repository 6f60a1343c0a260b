// Recursive-descent parser for the Jinja grammar as jinja2 3.1 parses it (operator precedence, `is` tests
// binding at the unary level, chained comparisons, implicit tuples), producing the tree in ast.h.
#pragma once

#include <string>

#include "text/jinja/ast.h"
#include "text/jinja/lexer.h"

namespace vlm::jinja {

// Parses a whole template. Unknown filters and tests are rejected here, as jinja2 does when it compiles.
// Throws Error(kFormat) with origin:line:col.
NodeList parse_template(const std::string& source, const std::string& origin);

// Names the interpreter provides (used by the parser's compile-time checks).
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

}  // namespace vlm::jinja
