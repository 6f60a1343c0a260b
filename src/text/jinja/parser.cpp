// Jinja parser (see parser.h). Mirrors jinja2.parser.Parser method by method so that precedence and the
// corner cases (`-x|f` is `(-x)|f`, `a is b and c`, `x if y` without else, trailing commas) match.
#include "text/jinja/parser.h"

#include "core/error.h"

namespace vlm::jinja {
namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& origin) : toks_(std::move(tokens)), origin_(origin) {}

  NodeList parse_all() {
    NodeList body = subparse({});
    if (cur().type != Tok::kEof) fail(cur(), "unexpected token");
    return body;
  }

 private:
  const Token& cur() const { return toks_[pos_]; }
  const Token& look() const { return toks_[std::min(pos_ + 1, toks_.size() - 1)]; }
  Token next() {
    Token t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().value == op; }
  bool is_name(const char* n) const { return cur().type == Tok::kName && cur().value == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::kEof: return "end of template";
      case Tok::kBlockEnd: return "end of statement block";
      case Tok::kVarEnd: return "end of print statement";
      case Tok::kBlockBegin: return "begin of statement block";
      case Tok::kVarBegin: return "begin of print statement";
      case Tok::kData: return "template data";
      case Tok::kString: return "string";
      case Tok::kInt: return "integer";
      case Tok::kFloat: return "float";
      default: return "'" + t.value + "'";
    }
  }

  [[noreturn]] void fail(const Token& t, const std::string& msg) const {
    throw_error(ErrorKind::kFormat, "{}:{}:{}: template syntax error: {} (at {})", origin_, t.line, t.col, msg,
                describe(t));
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(cur(), fmt::format("expected '{}'", op));
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) fail(cur(), "expected a name");
    return next().value;
  }
  void expect_block_end() {
    if (cur().type != Tok::kBlockEnd) fail(cur(), "expected end of statement block");
    next();
  }

  NodePtr make(NodeKind k, const Token& t) { return std::make_unique<Node>(k, t.line, t.col); }

  // Nesting bound: the tree is walked recursively (parse, evaluate, destroy), so its depth is capped well below
  // what the stack holds. jinja2 itself fails such templates with RecursionError.
  static constexpr int kMaxDepth = 256;
  void deeper(const Token& t) {
    if (++depth_ > kMaxDepth) fail(t, "template nested too deeply (more than 256 levels)");
  }
  struct Guard {
    Parser& p;
    int n = 0;
    Guard(Parser& parser, const Token& t) : p(parser) { step(t); }
    void step(const Token& t) {
      ++n;
      p.deeper(t);
    }
    ~Guard() { p.depth_ -= n; }
  };

  // ---- statements -------------------------------------------------------------------------------------------

  // Parses nodes until a block tag whose name is in `end_names` (left as the current token) or EOF.
  NodeList subparse(const std::vector<std::string>& end_names) {
    NodeList body;
    while (cur().type != Tok::kEof) {
      const Token& t = cur();
      if (t.type == Tok::kData) {
        auto n = make(NodeKind::kData, t);
        n->name = t.value;
        body.push_back(std::move(n));
        next();
      } else if (t.type == Tok::kVarBegin) {
        Token begin = next();
        auto n = make(NodeKind::kOutput, begin);
        n->a = parse_tuple(false, true, {}, false);
        if (cur().type != Tok::kVarEnd) fail(cur(), "expected end of print statement");
        next();
        body.push_back(std::move(n));
      } else if (t.type == Tok::kBlockBegin) {
        next();
        if (cur().type != Tok::kName) fail(cur(), "tag name expected");
        for (const auto& e : end_names)
          if (cur().value == e) return body;
        body.push_back(parse_statement());
      } else {
        fail(t, "unexpected token");
      }
    }
    if (!end_names.empty()) {
      fail(cur(), fmt::format("unexpected end of template; expected '{}'", end_names[0]));
    }
    return body;
  }

  // Parses until one of `end_names`; consumes that tag name (the caller handles its block end).
  NodeList statements_until(const std::vector<std::string>& end_names, bool drop_needle) {
    NodeList body = subparse(end_names);
    if (drop_needle) {
      next();  // the end tag's name
      expect_block_end();
    }
    return body;
  }

  NodePtr parse_statement() {
    const Token t = cur();
    Guard g(*this, t);
    const std::string& kw = t.value;
    if (kw == "for") return parse_for();
    if (kw == "if") return parse_if();
    if (kw == "set") return parse_set();
    if (kw == "macro") return parse_macro();
    if (kw == "call") return parse_call_block();
    if (kw == "filter") return parse_filter_block();
    if (kw == "with") return parse_with();
    if (kw == "print") {
      next();
      auto n = make(NodeKind::kOutput, t);
      n->a = parse_tuple(false, true, {}, false);
      expect_block_end();
      return n;
    }
    if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0) fail(t, fmt::format("'{}' outside loop", kw));
      next();
      expect_block_end();
      return make(kw == "break" ? NodeKind::kBreak : NodeKind::kContinue, t);
    }
    if (kw == "generation") {  // transformers' AssistantTracker tag; renders its body unchanged
      next();
      expect_block_end();
      auto n = make(NodeKind::kScope, t);
      n->body = statements_until({"endgeneration"}, true);
      return n;
    }
    if (kw == "block" || kw == "extends" || kw == "include" || kw == "import" || kw == "from" ||
        kw == "autoescape" || kw == "do")
      fail(t, fmt::format("tag '{}' is not supported in chat templates", kw));
    fail(t, fmt::format("Encountered unknown tag '{}'", kw));
  }

  NodePtr parse_for() {
    Token t = next();
    auto n = make(NodeKind::kFor, t);
    n->a = parse_assign_target(true, {"in"}, false);
    if (!skip_name("in")) fail(cur(), "expected 'in'");
    n->b = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) n->c = parse_expression(true);
    n->recursive = skip_name("recursive");
    expect_block_end();
    ++loop_depth_;
    n->body = subparse({"endfor", "else"});
    --loop_depth_;
    if (next().value == "else") {
      expect_block_end();
      n->else_body = statements_until({"endfor"}, true);
    } else {
      expect_block_end();
    }
    return n;
  }

  NodePtr parse_if() {
    Token t = next();
    auto n = make(NodeKind::kIf, t);
    n->a = parse_tuple(false, false, {}, false);
    expect_block_end();
    n->body = subparse({"elif", "else", "endif"});
    Token end = next();
    if (end.value == "elif") {
      // Rewind one token so the nested if sees "elif" as its keyword.
      --pos_;
      n->else_body.push_back(parse_if());
      return n;
    }
    expect_block_end();
    if (end.value == "else") n->else_body = statements_until({"endif"}, true);
    return n;
  }

  NodePtr parse_set() {
    Token t = next();
    NodePtr target = parse_assign_target(true, {}, true);
    if (skip_op("=")) {
      auto n = make(NodeKind::kSet, t);
      n->a = std::move(target);
      n->b = parse_tuple(false, true, {}, false);
      expect_block_end();
      return n;
    }
    auto n = make(NodeKind::kSetBlock, t);
    n->a = std::move(target);
    if (is_op("|")) n->c = parse_filter(nullptr, false);
    expect_block_end();
    n->body = statements_until({"endset"}, true);
    return n;
  }

  void parse_signature(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (!n.params.empty()) expect_op(",");
      if (is_op(")")) break;
      Param p;
      p.name = expect_name();
      if (skip_op("=")) p.default_value = parse_expression(true);
      else if (!n.params.empty() && n.params.back().default_value)
        fail(cur(), "non-default argument follows default argument");
      n.params.push_back(std::move(p));
    }
    expect_op(")");
  }

  static void scan_names(const Node& n, Node& macro) {
    if (n.kind == NodeKind::kName) {
      if (n.name == "caller") macro.uses_caller = true;
      if (n.name == "varargs") macro.uses_varargs = true;
      if (n.name == "kwargs") macro.uses_kwargs = true;
    }
    for (const NodePtr* p : {&n.a, &n.b, &n.c})
      if (*p) scan_names(**p, macro);
    for (const NodeList* l : {&n.items, &n.items2, &n.body, &n.else_body})
      for (const auto& x : *l) scan_names(*x, macro);
    for (const auto& kw : n.kwargs) scan_names(*kw.second, macro);
    for (const auto& p : n.params)
      if (p.default_value) scan_names(*p.default_value, macro);
  }

  NodePtr parse_macro() {
    Token t = next();
    auto n = make(NodeKind::kMacro, t);
    n->name = expect_name();
    parse_signature(*n);
    expect_block_end();
    int saved = loop_depth_;
    loop_depth_ = 0;
    n->body = statements_until({"endmacro"}, true);
    loop_depth_ = saved;
    for (const auto& b : n->body) scan_names(*b, *n);
    return n;
  }

  NodePtr parse_call_block() {
    Token t = next();
    auto n = make(NodeKind::kCallBlock, t);
    if (is_op("(")) parse_signature(*n);
    n->a = parse_expression(true);
    if (n->a->kind != NodeKind::kCall) fail(t, "expected call");
    expect_block_end();
    int saved = loop_depth_;
    loop_depth_ = 0;
    n->body = statements_until({"endcall"}, true);
    loop_depth_ = saved;
    for (const auto& b : n->body) scan_names(*b, *n);
    return n;
  }

  NodePtr parse_filter_block() {
    Token t = next();
    auto n = make(NodeKind::kFilterBlock, t);
    n->c = parse_filter(nullptr, true);
    expect_block_end();
    n->body = statements_until({"endfilter"}, true);
    return n;
  }

  NodePtr parse_with() {
    Token t = next();
    auto n = make(NodeKind::kWith, t);
    while (cur().type != Tok::kBlockEnd) {
      if (!n->items.empty()) expect_op(",");
      n->items.push_back(parse_assign_target(true, {}, false));
      expect_op("=");
      n->items2.push_back(parse_expression(true));
    }
    next();
    n->body = statements_until({"endwith"}, true);
    return n;
  }

  // Targets: a name, a (nested) tuple of names, or `ns.attr` where `with_namespace`.
  NodePtr parse_assign_target(bool with_tuple, const std::vector<std::string>& extra_end, bool with_namespace) {
    if (with_namespace && cur().type == Tok::kName && look().type == Tok::kOp && look().value == ".") {
      Token t = next();
      next();
      auto n = make(NodeKind::kGetattr, t);
      auto base = make(NodeKind::kName, t);
      base->name = t.value;
      n->a = std::move(base);
      n->name = expect_name();
      return n;
    }
    NodePtr target = with_tuple ? parse_tuple(true, true, extra_end, false) : parse_primary();
    check_assignable(*target);
    return target;
  }

  void check_assignable(const Node& n) {
    if (n.kind == NodeKind::kName) {
      static const char* kReserved[] = {"true", "false", "none", "True", "False", "None"};
      for (const char* r : kReserved)
        if (n.name == r) fail(cur(), fmt::format("can't assign to '{}'", n.name));
      return;
    }
    if (n.kind == NodeKind::kTuple) {
      for (const auto& i : n.items) check_assignable(*i);
      return;
    }
    fail(cur(), "can't assign to this expression");
  }

  // ---- expressions ------------------------------------------------------------------------------------------

  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    if (cur().type == Tok::kVarEnd || cur().type == Tok::kBlockEnd || cur().type == Tok::kEof) return true;
    if (is_op(")")) return true;
    for (const auto& e : extra_end)
      if (cur().type == Tok::kName && cur().value == e) return true;
    return false;
  }

  NodePtr parse_tuple(bool simplified, bool with_condexpr, const std::vector<std::string>& extra_end,
                      bool explicit_parens) {
    Token start = cur();
    NodeList args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      if (simplified) args.push_back(parse_primary());
      else args.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) fail(cur(), "Expected an expression");
    }
    auto n = make(NodeKind::kTuple, start);
    n->items = std::move(args);
    return n;
  }

  NodePtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  NodePtr parse_condexpr() {
    Token start = cur();
    Guard g(*this, start);
    NodePtr expr1 = parse_or();
    while (skip_name("if")) {
      g.step(start);
      auto n = make(NodeKind::kCondExpr, start);
      n->a = parse_or();
      n->b = std::move(expr1);
      if (skip_name("else")) n->c = parse_condexpr();
      expr1 = std::move(n);
    }
    return expr1;
  }

  NodePtr parse_or() {
    Guard g(*this, cur());
    NodePtr left = parse_and();
    while (is_name("or")) {
      Token t = next();
      g.step(t);
      auto n = make(NodeKind::kOr, t);
      n->a = std::move(left);
      n->b = parse_and();
      left = std::move(n);
    }
    return left;
  }

  NodePtr parse_and() {
    Guard g(*this, cur());
    NodePtr left = parse_not();
    while (is_name("and")) {
      Token t = next();
      g.step(t);
      auto n = make(NodeKind::kAnd, t);
      n->a = std::move(left);
      n->b = parse_not();
      left = std::move(n);
    }
    return left;
  }

  NodePtr parse_not() {
    if (is_name("not")) {
      Token t = next();
      Guard g(*this, t);
      auto n = make(NodeKind::kNot, t);
      n->a = parse_not();
      return n;
    }
    return parse_compare();
  }

  NodePtr parse_compare() {
    Token start = cur();
    NodePtr expr = parse_math1();
    NodePtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::kOp &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" || cur().value == "<=" ||
           cur().value == ">" || cur().value == ">=")) {
        op = next().value;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && look().type == Tok::kName && look().value == "in") {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(NodeKind::kCompare, start);
        cmp->a = std::move(expr);
      }
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(expr);
  }

  NodePtr binop(NodePtr left, const Token& t, NodePtr right) {
    auto n = make(NodeKind::kBinOp, t);
    n->name = t.value;
    n->a = std::move(left);
    n->b = std::move(right);
    return n;
  }

  NodePtr parse_math1() {
    Guard g(*this, cur());
    NodePtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      Token t = next();
      g.step(t);
      left = binop(std::move(left), t, parse_concat());
    }
    return left;
  }

  NodePtr parse_concat() {
    Token start = cur();
    NodePtr first = parse_math2();
    if (!is_op("~")) return first;
    auto n = make(NodeKind::kConcat, start);
    n->items.push_back(std::move(first));
    while (skip_op("~")) n->items.push_back(parse_math2());
    return n;
  }

  NodePtr parse_math2() {
    Guard g(*this, cur());
    NodePtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      Token t = next();
      g.step(t);
      left = binop(std::move(left), t, parse_pow());
    }
    return left;
  }

  NodePtr parse_pow() {
    Guard g(*this, cur());
    NodePtr left = parse_unary(true);
    while (is_op("**")) {
      Token t = next();
      g.step(t);
      left = binop(std::move(left), t, parse_unary(true));
    }
    return left;
  }

  NodePtr parse_unary(bool with_filter) {
    Guard g(*this, cur());
    NodePtr node;
    if (is_op("-") || is_op("+")) {
      Token t = next();
      node = make(t.value == "-" ? NodeKind::kNeg : NodeKind::kPos, t);
      node->a = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  NodePtr parse_primary() {
    const Token t = cur();
    if (t.type == Tok::kName) {
      next();
      auto n = make(NodeKind::kConst, t);
      if (t.value == "true" || t.value == "True") n->value = Value::boolean(true);
      else if (t.value == "false" || t.value == "False") n->value = Value::boolean(false);
      else if (t.value == "none" || t.value == "None") n->value = Value::none();
      else {
        n->kind = NodeKind::kName;
        n->name = t.value;
      }
      return n;
    }
    if (t.type == Tok::kString) {
      std::string s;
      while (cur().type == Tok::kString) s += next().value;  // adjacent literals concatenate
      auto n = make(NodeKind::kConst, t);
      n->value = Value::string(std::move(s));
      return n;
    }
    if (t.type == Tok::kInt || t.type == Tok::kFloat) {
      next();
      auto n = make(NodeKind::kConst, t);
      n->value = t.type == Tok::kInt ? Value::integer(t.int_value) : Value::floating(t.float_value);
      return n;
    }
    if (t.type == Tok::kOp && t.value == "(") {
      next();
      NodePtr n = parse_tuple(false, true, {}, true);
      expect_op(")");
      return n;
    }
    if (t.type == Tok::kOp && t.value == "[") {
      next();
      auto n = make(NodeKind::kList, t);
      while (!is_op("]")) {
        if (!n->items.empty()) expect_op(",");
        if (is_op("]")) break;
        n->items.push_back(parse_expression(true));
      }
      expect_op("]");
      return n;
    }
    if (t.type == Tok::kOp && t.value == "{") {
      next();
      auto n = make(NodeKind::kDict, t);
      while (!is_op("}")) {
        if (!n->items.empty()) expect_op(",");
        if (is_op("}")) break;
        n->items.push_back(parse_expression(true));
        expect_op(":");
        n->items.push_back(parse_expression(true));
      }
      expect_op("}");
      return n;
    }
    fail(t, "unexpected token");
  }

  NodePtr parse_postfix(NodePtr node) {
    Guard g(*this, cur());
    while (true) {
      g.step(cur());
      if (is_op(".") || is_op("[")) node = parse_subscript(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else break;
    }
    return node;
  }

  NodePtr parse_filter_expr(NodePtr node) {
    Guard g(*this, cur());
    while (true) {
      g.step(cur());
      if (is_op("|")) node = parse_filter(std::move(node), false);
      else if (is_name("is")) node = parse_test(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else break;
    }
    return node;
  }

  NodePtr parse_subscript(NodePtr node) {
    Token t = next();
    if (t.value == ".") {
      Token attr = next();
      if (attr.type == Tok::kName) {
        auto n = make(NodeKind::kGetattr, t);
        n->a = std::move(node);
        n->name = attr.value;
        return n;
      }
      if (attr.type != Tok::kInt) fail(attr, "expected name or number");
      auto n = make(NodeKind::kGetitem, t);
      n->a = std::move(node);
      n->b = make(NodeKind::kConst, attr);
      n->b->value = Value::integer(attr.int_value);
      return n;
    }
    NodeList args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    NodePtr arg;
    if (args.size() == 1) {
      arg = std::move(args[0]);
    } else {
      // `x[a:b, c]` subscripts with a tuple holding slice objects, which no list, string or dict accepts
      // (Jinja2 renders it undefined); we have no slice values, so it is refused here.
      for (const NodePtr& a : args)
        if (a->kind == NodeKind::kSlice) fail(t, "a subscript with both slices and commas is not supported");
      arg = make(NodeKind::kTuple, t);
      arg->items = std::move(args);
    }
    if (arg->kind == NodeKind::kSlice) {
      arg->a = std::move(node);
      return arg;
    }
    auto n = make(NodeKind::kGetitem, t);
    n->a = std::move(node);
    n->b = std::move(arg);
    return n;
  }

  NodePtr parse_subscribed() {
    Token start = cur();
    NodeList parts;
    if (is_op(":")) {
      next();
      parts.push_back(nullptr);
    } else {
      NodePtr e = parse_expression(true);
      if (!is_op(":")) return e;
      next();
      parts.push_back(std::move(e));
    }
    if (is_op(":") || is_op("]") || is_op(",")) parts.push_back(nullptr);
    else parts.push_back(parse_expression(true));
    if (skip_op(":")) {
      if (is_op("]") || is_op(",")) parts.push_back(nullptr);
      else parts.push_back(parse_expression(true));
    } else {
      parts.push_back(nullptr);
    }
    auto n = make(NodeKind::kSlice, start);
    n->items = std::move(parts);
    return n;
  }

  // `( args, name=value, *dyn, **dynkw )` into n's items/kwargs/b/c.
  void parse_call_args(Node& n) {
    Token lp = cur();
    expect_op("(");
    bool require_comma = false;
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        if (n.b || n.c) fail(lp, "invalid syntax for function call expression");
        next();
        n.b = parse_expression(true);
      } else if (is_op("**")) {
        if (n.c) fail(lp, "invalid syntax for function call expression");
        next();
        n.c = parse_expression(true);
      } else if (cur().type == Tok::kName && look().type == Tok::kOp && look().value == "=") {
        if (n.c) fail(lp, "invalid syntax for function call expression");
        std::string key = next().value;
        next();
        n.kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (n.b || n.c || !n.kwargs.empty()) fail(lp, "invalid syntax for function call expression");
        n.items.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  NodePtr parse_call(NodePtr node) {
    auto n = std::make_unique<Node>(NodeKind::kCall, node->line, node->col);
    n->a = std::move(node);
    parse_call_args(*n);
    return n;
  }

  NodePtr parse_filter(NodePtr node, bool start_inline) {
    Guard g(*this, cur());
    while (is_op("|") || start_inline) {
      g.step(cur());
      if (!start_inline) next();
      Token t = cur();
      std::string name = expect_name();
      while (is_op(".")) {
        next();
        name += "." + expect_name();
      }
      if (!is_known_filter(name)) fail(t, fmt::format("No filter named '{}'.", name));
      auto n = make(NodeKind::kFilter, t);
      n->name = name;
      n->a = std::move(node);
      if (is_op("(")) parse_call_args(*n);
      node = std::move(n);
      start_inline = false;
    }
    return node;
  }

  NodePtr parse_test(NodePtr node) {
    Token t = next();  // "is"
    bool negated = skip_name("not");
    Token nt = cur();
    std::string name = expect_name();
    while (is_op(".")) {
      next();
      name += "." + expect_name();
    }
    if (!is_known_test(name)) fail(nt, fmt::format("No test named '{}'.", name));
    auto n = make(NodeKind::kTest, t);
    n->name = name;
    n->a = std::move(node);
    if (is_op("(")) {
      parse_call_args(*n);
    } else if ((cur().type == Tok::kName || cur().type == Tok::kString || cur().type == Tok::kInt ||
                cur().type == Tok::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail(cur(), "You cannot chain multiple tests with is");
      n->items.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return n;
    auto neg = make(NodeKind::kNot, t);
    neg->a = std::move(n);
    return neg;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  const std::string& origin_;
  int loop_depth_ = 0;
  int depth_ = 0;
};

}  // namespace

NodeList parse_template(const std::string& source, const std::string& origin) {
  return Parser(tokenize(source, origin), origin).parse_all();
}

}  // namespace vlm::jinja
