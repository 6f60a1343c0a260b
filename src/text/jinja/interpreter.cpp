// Evaluator of the template tree (see interpreter.h) and the Template entry point. Scoping follows what jinja2's
// compiler produces: each loop iteration gets a fresh child scope (assignments inside a loop never leak out or
// carry over to the next iteration), `if` shares the enclosing scope, macros resolve free names in the scope
// they were defined in at call time, and `namespace()` objects are the one way to carry state out of a loop.
#include "text/jinja/interpreter.h"

#include "core/error.h"
#include "text/jinja/parser.h"
#include "text/jinja/pystr.h"

namespace vlm::jinja {

const Value* Scope::lookup(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get())
    for (auto it = s->vars.rbegin(); it != s->vars.rend(); ++it)
      if (it->first == name) return &it->second;
  return nullptr;
}

void Scope::set(const std::string& name, Value v) {
  for (auto& e : vars)
    if (e.first == name) {
      e.second = std::move(v);
      return;
    }
  vars.emplace_back(name, std::move(v));
}

std::string Namespace::repr() const {
  std::string out = "<Namespace {";
  for (size_t i = 0; i < attrs.size(); ++i) {
    if (i) out += ", ";
    out += attrs[i].first.repr() + ": " + attrs[i].second.repr();
  }
  return out + "}>";
}
bool Namespace::get_attr(const std::string& name, Value& out) const {
  for (const auto& e : attrs)
    if (e.first.is_string() && e.first.str() == name) {
      out = e.second;
      return true;
    }
  return false;
}
bool Namespace::set_attr(const std::string& name, const Value& v) {
  for (auto& e : attrs)
    if (e.first.is_string() && e.first.str() == name) {
      e.second = v;
      return true;
    }
  attrs.emplace_back(Value::string(name), v);
  return true;
}

namespace {

ScopePtr child_of(const ScopePtr& parent) {
  auto s = std::make_shared<Scope>();
  s->parent = parent;
  return s;
}

// A macro, or the `caller` of a call block: parameters, body and the scope it closes over.
class Macro : public Object {
 public:
  Macro(const Node& def, ScopePtr closure, std::string name) : def_(def), closure_(std::move(closure)), name_(std::move(name)) {}
  std::string type_name() const override { return "Macro"; }
  std::string repr() const override { return "<Macro '" + name_ + "'>"; }
  bool callable() const override { return true; }
  bool get_attr(const std::string& name, Value& out) const override {
    if (name == "name") {
      out = Value::string(name_);
      return true;
    }
    return false;
  }

  void release() { closure_.reset(); }

  Value call(Interpreter& in, CallArgs& a) override {
    if (!closure_) rt_fail("macro '" + name_ + "' called after its template finished rendering");
    auto scope = child_of(closure_);
    const auto& params = def_.params;
    ValueList extra;
    std::vector<bool> given(params.size(), false);
    for (size_t i = 0; i < a.args.size(); ++i) {
      if (i < params.size()) {
        scope->set(params[i].name, a.args[i]);
        given[i] = true;
      } else if (def_.uses_varargs) {
        extra.push_back(a.args[i]);
      } else {
        rt_fail("macro '" + name_ + "' takes not more than " + std::to_string(params.size()) + " argument(s)");
      }
    }
    DictEntries extra_kw;
    bool caller_given = false;
    for (auto& kw : a.kwargs) {
      bool matched = false;
      for (size_t i = 0; i < params.size(); ++i)
        if (params[i].name == kw.first) {
          if (given[i]) rt_fail("macro '" + name_ + "' got multiple values for argument '" + kw.first + "'");
          scope->set(kw.first, kw.second);
          given[i] = matched = true;
        }
      if (matched) continue;
      if (kw.first == "caller" && def_.uses_caller) {
        scope->set("caller", kw.second);
        caller_given = true;
      } else if (def_.uses_kwargs) {
        extra_kw.emplace_back(Value::string(kw.first), kw.second);
      } else {
        rt_fail("macro '" + name_ + "' takes no keyword argument '" + kw.first + "'");
      }
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (given[i]) continue;
      if (params[i].default_value) scope->set(params[i].name, in.eval(*params[i].default_value, scope));
      else scope->set(params[i].name, Value::undefined("", "", "parameter '" + params[i].name + "' was not provided"));
    }
    if (def_.uses_varargs) scope->set("varargs", Value::tuple(std::move(extra)));
    if (def_.uses_kwargs) scope->set("kwargs", Value::dict(std::move(extra_kw)));
    if (def_.uses_caller && !caller_given) scope->set("caller", Value::undefined("", "", "No caller defined"));
    return Value::string(in.render_macro(def_, scope));
  }

 private:
  const Node& def_;
  ScopePtr closure_;
  std::string name_;
};

// The `loop` variable of one iteration.
class LoopObject : public Object {
 public:
  struct Shared {
    ValueList items;
    const Node* node = nullptr;  // the for node, for recursive loops
    ScopePtr scope;              // the scope the loop runs in
    int depth = 1;
    bool has_last_changed = false;
    ValueList last_changed;
  };
  LoopObject(std::shared_ptr<Shared> s, size_t i) : s_(std::move(s)), i_(i) {}
  std::string type_name() const override { return "LoopContext"; }
  std::string repr() const override {
    return "<LoopContext " + std::to_string(i_ + 1) + "/" + std::to_string(s_->items.size()) + ">";
  }
  bool callable() const override { return true; }
  Value call(Interpreter& in, CallArgs& a) override {
    if (!s_->node->recursive) rt_fail("Tried to call non recursive loop.  Maybe you forgot the 'recursive' modifier.");
    if (!s_->scope) rt_fail("loop() called after its template finished rendering");
    if (a.args.size() != 1 || !a.kwargs.empty()) rt_fail("loop() takes exactly one argument");
    return Value::string(in.render_loop(*s_->node, a.args[0], s_->scope, s_->depth + 1));
  }
  bool get_attr(const std::string& name, Value& out) const override {
    int64_t n = static_cast<int64_t>(s_->items.size());
    int64_t i = static_cast<int64_t>(i_);
    if (name == "index") out = Value::integer(i + 1);
    else if (name == "index0") out = Value::integer(i);
    else if (name == "revindex") out = Value::integer(n - i);
    else if (name == "revindex0") out = Value::integer(n - i - 1);
    else if (name == "first") out = Value::boolean(i == 0);
    else if (name == "last") out = Value::boolean(i == n - 1);
    else if (name == "length") out = Value::integer(n);
    else if (name == "depth") out = Value::integer(s_->depth);
    else if (name == "depth0") out = Value::integer(s_->depth - 1);
    else if (name == "previtem")
      out = i > 0 ? s_->items[i_ - 1] : Value::undefined("", "", "there is no previous item");
    else if (name == "nextitem")
      out = i + 1 < n ? s_->items[i_ + 1] : Value::undefined("", "", "there is no next item");
    else if (name == "cycle") {
      size_t idx = i_;
      out = Value::object(std::make_shared<BuiltinFunction>("cycle", [idx](Interpreter&, CallArgs& a) {
        if (a.args.empty()) rt_fail("no items for cycling given");
        return a.args[idx % a.args.size()];
      }));
    } else if (name == "changed") {
      auto s = s_;
      out = Value::object(std::make_shared<BuiltinFunction>("changed", [s](Interpreter&, CallArgs& a) {
        ValueList now = a.args;
        bool same = s->has_last_changed && py_equal(Value::list(now), Value::list(s->last_changed));
        s->has_last_changed = true;
        s->last_changed = std::move(now);
        return Value::boolean(!same);
      }));
    } else {
      return false;
    }
    return true;
  }

 private:
  std::shared_ptr<Shared> s_;
  size_t i_;
};

bool is_hashable(const Value& v) {
  if (v.is_list() || v.is_dict()) return false;
  if (v.is_tuple()) {
    for (const auto& x : v.items())
      if (!is_hashable(x)) return false;
  }
  return true;
}

}  // namespace

void Interpreter::fail_at(const Node& n, const RuntimeFail& f) const {
  if (f.resource)
    throw_error(ErrorKind::kResource, "{}:{}:{}: template exceeded a limit: {}", origin_, n.line, n.col, f.message);
  if (f.unsupported)
    throw_error(ErrorKind::kUnsupported, "{}:{}:{}: {}", origin_, n.line, n.col, f.message);
  if (f.raised)
    throw_error(ErrorKind::kFormat, "{}:{}:{}: template raised an error: {}", origin_, n.line, n.col, f.message);
  throw_error(ErrorKind::kFormat, "{}:{}:{}: template error: {}", origin_, n.line, n.col, f.message);
}

void Interpreter::charge(int64_t n) {
  // Compared before adding, so a huge n (a list repeated 2**62 times) cannot overflow the counter.
  if (n > opts_.limits.max_iterations - iterations_)
    rt_resource("more than " + std::to_string(opts_.limits.max_iterations) + " loop iterations");
  iterations_ += n;
}

void Interpreter::check_size(size_t bytes) const {
  if (bytes > opts_.limits.max_output_bytes)
    rt_resource("output larger than " + std::to_string(opts_.limits.max_output_bytes) + " bytes");
}

Value Interpreter::eval(const Node& n, const ScopePtr& scope) {
  try {
    return eval_inner(n, scope);
  } catch (const RuntimeFail& f) {
    fail_at(n, f);
  }
}

Value Interpreter::eval_inner(const Node& n, const ScopePtr& scope) {
  switch (n.kind) {
    case NodeKind::kConst: return n.value;
    case NodeKind::kName: {
      const Value* v = scope->lookup(n.name);
      return v ? *v : Value::undefined(n.name);
    }
    case NodeKind::kTuple:
    case NodeKind::kList: {
      ValueList items;
      items.reserve(n.items.size());
      for (const auto& i : n.items) items.push_back(eval(*i, scope));
      return n.kind == NodeKind::kTuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
    }
    case NodeKind::kDict: {
      DictEntries entries;
      for (size_t i = 0; i + 1 < n.items.size(); i += 2) {
        Value k = eval(*n.items[i], scope);
        Value v = eval(*n.items[i + 1], scope);
        if (!is_hashable(k)) rt_fail("unhashable type: '" + k.type_name() + "'");
        bool replaced = false;
        for (auto& e : entries)
          if (py_equal(e.first, k)) {
            e.second = std::move(v);
            replaced = true;
            break;
          }
        if (!replaced) entries.emplace_back(std::move(k), std::move(v));
      }
      return Value::dict(std::move(entries));
    }
    case NodeKind::kGetattr: return getattr(eval(*n.a, scope), n.name);
    case NodeKind::kGetitem: {
      Value obj = eval(*n.a, scope);
      return getitem(obj, eval(*n.b, scope));
    }
    case NodeKind::kSlice: {
      Value obj = eval(*n.a, scope);
      Value parts[3];
      for (size_t i = 0; i < 3; ++i) parts[i] = n.items[i] ? eval(*n.items[i], scope) : Value::none();
      if (obj.is_undefined()) rt_fail(obj.undefined_message());
      return slice_value(obj, parts[0], parts[1], parts[2]);
    }
    case NodeKind::kCall: return eval_call(n, scope);
    case NodeKind::kFilter: {
      Value input = eval(*n.a, scope);
      CallArgs args;
      eval_args(n, scope, args);
      return call_filter(n.name, input, args);
    }
    case NodeKind::kTest: {
      Value input = eval(*n.a, scope);
      CallArgs args;
      eval_args(n, scope, args);
      return Value::boolean(call_test(n.name, input, args));
    }
    case NodeKind::kNot: return Value::boolean(!eval(*n.a, scope).truthy());
    case NodeKind::kNeg:
    case NodeKind::kPos: {
      Value v = eval(*n.a, scope);
      if (v.is_undefined()) rt_fail(v.undefined_message());
      if (!v.is_number())
        rt_fail(std::string("bad operand type for unary ") + (n.kind == NodeKind::kNeg ? "-" : "+") + ": '" +
                v.type_name() + "'");
      if (n.kind == NodeKind::kPos) return v.is_bool() ? Value::integer(v.as_int()) : v;
      if (v.is_float()) return Value::floating(-v.as_double());
      if (v.as_int() == INT64_MIN) rt_fail("integer overflow");
      return Value::integer(-v.as_int());
    }
    case NodeKind::kBinOp: {
      Value a = eval(*n.a, scope);
      Value b = eval(*n.b, scope);
      return binary_op(n.name, a, b, *this);
    }
    case NodeKind::kAnd: {
      Value a = eval(*n.a, scope);
      return a.truthy() ? eval(*n.b, scope) : a;
    }
    case NodeKind::kOr: {
      Value a = eval(*n.a, scope);
      return a.truthy() ? a : eval(*n.b, scope);
    }
    case NodeKind::kConcat: {
      std::string out;
      for (const auto& i : n.items) {
        out += eval(*i, scope).to_str();
        check_size(out.size());
      }
      return Value::string(std::move(out));
    }
    case NodeKind::kCompare: return eval_compare(n, scope);
    case NodeKind::kCondExpr: {
      if (eval(*n.a, scope).truthy()) return eval(*n.b, scope);
      if (n.c) return eval(*n.c, scope);
      return Value::undefined("", "", "the inline if-expression on line " + std::to_string(n.line) +
                                          " evaluated to false and no else section was defined.");
    }
    default: rt_fail("statement used as an expression");
  }
}

Value Interpreter::eval_compare(const Node& n, const ScopePtr& scope) {
  Value left = eval(*n.a, scope);
  for (size_t i = 0; i < n.ops.size(); ++i) {
    Value right = eval(*n.items[i], scope);
    const std::string& op = n.ops[i];
    bool r;
    if (op == "==") r = py_equal(left, right);
    else if (op == "!=") r = !py_equal(left, right);
    else if (op == "in") r = value_in(left, right);
    else if (op == "notin") r = !value_in(left, right);
    else {
      if (left.is_undefined()) rt_fail(left.undefined_message());
      if (right.is_undefined()) rt_fail(right.undefined_message());
      bool ok = true;
      if (op == "<") r = py_less(left, right, ok);
      else if (op == ">") r = py_less(right, left, ok);
      else if (op == "<=") r = !py_less(right, left, ok);
      else r = !py_less(left, right, ok);  // >=
      if (ok && (op == "<=" || op == ">=")) {
        // a <= b is not (b < a) only for totally ordered values; NaN compares false both ways.
        if ((left.is_float() && left.as_double() != left.as_double()) ||
            (right.is_float() && right.as_double() != right.as_double()))
          r = false;
      }
      if (!ok)
        rt_fail("'" + op + "' not supported between instances of '" + left.type_name() + "' and '" +
                right.type_name() + "'");
    }
    if (!r) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

void Interpreter::eval_args(const Node& n, const ScopePtr& scope, CallArgs& args) {
  for (const auto& i : n.items) args.args.push_back(eval(*i, scope));
  for (const auto& kw : n.kwargs) args.kwargs.emplace_back(kw.first, eval(*kw.second, scope));
  if (n.b) {
    for (auto& v : iterate(eval(*n.b, scope))) args.args.push_back(std::move(v));
  }
  if (n.c) {
    Value d = eval(*n.c, scope);
    if (!d.is_dict()) rt_fail("argument after ** must be a mapping, not " + d.type_name());
    for (const auto& e : d.entries()) {
      if (!e.first.is_string()) rt_fail("keywords must be strings");
      args.kwargs.emplace_back(e.first.str(), e.second);
    }
  }
}

Value Interpreter::eval_call(const Node& n, const ScopePtr& scope) {
  Value callee = eval(*n.a, scope);
  CallArgs args;
  eval_args(n, scope, args);
  return call(callee, args);
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) rt_fail(callee.undefined_message());
  if (!callee.is_object() || !callee.obj()->callable()) rt_fail("'" + callee.type_name() + "' object is not callable");
  return callee.obj()->call(*this, args);
}

Value Interpreter::getattr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) rt_fail(obj.undefined_message());
  Value out;
  if (obj.is_object()) {
    if (obj.obj()->get_attr(name, out)) return out;
    return Value::undefined(name, obj.describe());
  }
  if (lookup_method(obj, name, out)) return out;
  if (obj.is_dict()) {
    if (const Value* v = obj.dict_get(Value::string(name))) return *v;
  }
  return Value::undefined(name, obj.describe());
}

Value Interpreter::getitem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) rt_fail(obj.undefined_message());
  if (obj.is_dict()) {
    if (is_hashable(key))
      if (const Value* v = obj.dict_get(key)) return *v;
  } else if ((obj.is_sequence() || obj.is_string()) && key.is_int()) {
    int64_t n = static_cast<int64_t>(obj.is_string() ? pystr::length(obj.str()) : obj.items().size());
    int64_t i = key.as_int();
    if (i < 0) i += n;
    if (i >= 0 && i < n) {
      if (!obj.is_string()) return obj.items()[static_cast<size_t>(i)];
      std::u32string u = pystr::decode(obj.str());
      return Value::string(pystr::encode(std::u32string(1, u[static_cast<size_t>(i)])));
    }
  }
  if (key.is_string()) {
    Value out;
    if (obj.is_object()) {
      if (obj.obj()->get_attr(key.str(), out)) return out;
    } else if (lookup_method(obj, key.str(), out)) {
      return out;
    }
    return Value::undefined(key.str(), obj.describe());
  }
  return Value::undefined(key.repr(), obj.describe());
}

ValueList Interpreter::iterate(const Value& v) {
  switch (v.kind()) {
    case Kind::kUndefined: return {};
    case Kind::kList:
    case Kind::kTuple:
    case Kind::kIter: return v.items();
    case Kind::kDict: {
      ValueList keys;
      keys.reserve(v.entries().size());
      for (const auto& e : v.entries()) keys.push_back(e.first);
      return keys;
    }
    case Kind::kString: {
      ValueList chars;
      for (char32_t c : pystr::decode(v.str())) chars.push_back(Value::string(pystr::encode(std::u32string(1, c))));
      return chars;
    }
    default: rt_fail("'" + v.type_name() + "' object is not iterable");
  }
}

void Interpreter::assign(const Node& target, const Value& v, const ScopePtr& scope) {
  if (target.kind == NodeKind::kName) {
    scope->set(target.name, v);
    return;
  }
  if (target.kind == NodeKind::kTuple) {
    ValueList vals = iterate(v);
    if (vals.size() > target.items.size())
      rt_fail("too many values to unpack (expected " + std::to_string(target.items.size()) + ")");
    if (vals.size() < target.items.size())
      rt_fail("not enough values to unpack (expected " + std::to_string(target.items.size()) + ", got " +
              std::to_string(vals.size()) + ")");
    for (size_t i = 0; i < vals.size(); ++i) assign(*target.items[i], vals[i], scope);
    return;
  }
  if (target.kind == NodeKind::kGetattr) {  // {% set ns.attr = v %}
    const Value* ns = scope->lookup(target.a->name);
    if (!ns || !ns->is_object() || !dynamic_cast<Namespace*>(ns->obj()))
      rt_fail("cannot assign attribute on non-namespace object");
    ns->obj()->set_attr(target.name, v);
    return;
  }
  rt_fail("can't assign to this target");
}

Interpreter::Flow Interpreter::exec_body(const NodeList& body, const ScopePtr& scope, std::string& out) {
  for (const auto& n : body) {
    Flow f = exec(*n, scope, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

namespace {
// Applies a filter chain whose innermost input is null (filter blocks, `{% set x | f %}`) to `input`.
Value apply_chain(Interpreter& in, const Node& f, const Value& input, const ScopePtr& scope) {
  Value inner = f.a ? apply_chain(in, *f.a, input, scope) : input;
  CallArgs args;
  for (const auto& i : f.items) args.args.push_back(in.eval(*i, scope));
  for (const auto& kw : f.kwargs) args.kwargs.emplace_back(kw.first, in.eval(*kw.second, scope));
  return in.call_filter(f.name, inner, args);
}
}  // namespace

Interpreter::Flow Interpreter::exec(const Node& n, const ScopePtr& scope, std::string& out) {
  try {
    switch (n.kind) {
      case NodeKind::kData:
        out += n.name;
        check_size(out.size());
        return Flow::kNormal;
      case NodeKind::kOutput:
        out += eval(*n.a, scope).to_str();
        check_size(out.size());
        return Flow::kNormal;
      case NodeKind::kIf:
        if (eval(*n.a, scope).truthy()) return exec_body(n.body, scope, out);
        return exec_body(n.else_body, scope, out);
      case NodeKind::kFor: return exec_for(n, scope, out, nullptr, 1);
      case NodeKind::kSet: assign(*n.a, eval(*n.b, scope), scope); return Flow::kNormal;
      case NodeKind::kSetBlock: {
        std::string text;
        exec_body(n.body, child_of(scope), text);
        Value v = Value::string(std::move(text));
        if (n.c) v = apply_chain(*this, *n.c, v, scope);
        assign(*n.a, v, scope);
        return Flow::kNormal;
      }
      case NodeKind::kMacro: {
        auto m = std::make_shared<Macro>(n, scope, n.name);
        on_release([m] { m->release(); });
        scope->set(n.name, Value::object(m));
        return Flow::kNormal;
      }
      case NodeKind::kCallBlock: {
        auto caller_macro = std::make_shared<Macro>(n, scope, "caller");
        on_release([caller_macro] { caller_macro->release(); });
        Value caller = Value::object(caller_macro);
        const Node& call_node = *n.a;
        Value callee = eval(*call_node.a, scope);
        CallArgs args;
        eval_args(call_node, scope, args);
        args.kwargs.emplace_back("caller", caller);
        out += call(callee, args).to_str();
        check_size(out.size());
        return Flow::kNormal;
      }
      case NodeKind::kFilterBlock: {
        std::string text;
        exec_body(n.body, scope, text);
        out += apply_chain(*this, *n.c, Value::string(std::move(text)), scope).to_str();
        check_size(out.size());
        return Flow::kNormal;
      }
      case NodeKind::kWith: {
        ValueList vals;
        for (const auto& v : n.items2) vals.push_back(eval(*v, scope));
        auto inner = child_of(scope);
        for (size_t i = 0; i < vals.size(); ++i) assign(*n.items[i], vals[i], inner);
        exec_body(n.body, inner, out);
        return Flow::kNormal;
      }
      case NodeKind::kScope: exec_body(n.body, child_of(scope), out); return Flow::kNormal;
      case NodeKind::kBreak: return Flow::kBreak;
      case NodeKind::kContinue: return Flow::kContinue;
      default: rt_fail("expression used as a statement");
    }
  } catch (const RuntimeFail& f) {
    fail_at(n, f);
  }
}

Interpreter::Flow Interpreter::exec_for(const Node& n, const ScopePtr& scope, std::string& out,
                                        const Value* override_iter, int depth) {
  Value iterable = override_iter ? *override_iter : eval(*n.b, scope);
  auto shared = std::make_shared<LoopObject::Shared>();
  shared->node = &n;
  shared->depth = depth;
  if (n.recursive) {  // only loop(...) needs the scope; a loop object kept past the loop could otherwise cycle
    shared->scope = scope;
    on_release([shared] { shared->scope.reset(); });
  }
  ValueList all = iterate(iterable);
  charge(static_cast<int64_t>(all.size()));
  if (n.c) {
    for (auto& item : all) {
      auto probe = child_of(scope);
      assign(*n.a, item, probe);
      if (eval(*n.c, probe).truthy()) shared->items.push_back(std::move(item));
    }
  } else {
    shared->items = std::move(all);
  }
  if (shared->items.empty()) {
    exec_body(n.else_body, child_of(scope), out);
    return Flow::kNormal;
  }
  for (size_t i = 0; i < shared->items.size(); ++i) {
    auto iter_scope = child_of(scope);
    assign(*n.a, shared->items[i], iter_scope);
    iter_scope->set("loop", Value::object(std::make_shared<LoopObject>(shared, i)));
    Flow f = exec_body(n.body, iter_scope, out);
    if (f == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

std::string Interpreter::render_macro(const Node& def, const ScopePtr& scope) {
  if (++call_depth_ > opts_.limits.max_call_depth) {
    --call_depth_;
    rt_resource("macro calls nested deeper than " + std::to_string(opts_.limits.max_call_depth));
  }
  std::string out;
  try {
    exec_body(def.body, scope, out);
  } catch (...) {
    --call_depth_;
    throw;
  }
  --call_depth_;
  return out;
}

std::string Interpreter::render_loop(const Node& for_node, const Value& iterable, const ScopePtr& scope, int depth) {
  if (depth > opts_.limits.max_call_depth) rt_resource("recursive loop nested deeper than the call-depth limit");
  std::string out;
  exec_for(for_node, scope, out, &iterable, depth);
  return out;
}

// ---- Template ---------------------------------------------------------------------------------------------------

struct Template::Impl {
  NodeList body;
};

Template::Template(const std::string& source, std::string origin)
    : impl_(std::make_unique<Impl>()), origin_(std::move(origin)) {
  impl_->body = parse_template(source, origin_);
}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

ScopePtr make_global_scope();  // builtins.cpp

std::string Template::render(const Json& variables, const RenderOptions& opts) const {
  VLM_CHECK(variables.is_object(), ErrorKind::kInvalidArgument, "{}: template variables must be a JSON object, got {}",
            origin_, variables.type_name());
  auto top = child_of(make_global_scope());
  for (auto it = variables.begin(); it != variables.end(); ++it) top->set(it.key(), Value::from_json(it.value()));
  Interpreter in(origin_, opts);
  std::string out;
  try {
    in.exec_body(impl_->body, top, out);
  } catch (const RuntimeFail& f) {
    throw_error(f.resource ? ErrorKind::kResource : ErrorKind::kFormat, "{}: template error: {}", origin_, f.message);
  }
  return out;
}

}  // namespace vlm::jinja
