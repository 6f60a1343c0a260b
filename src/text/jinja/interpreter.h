// The tree-walking evaluator behind jinja::Template: scopes as jinja2 compiles them (a fresh scope per loop
// iteration, `if` sharing its parent's, macros closing over their defining scope), undefined semantics of
// jinja2's default Undefined, the sandbox's rules for attribute access, and the resource limits.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/jinja/ast.h"
#include "text/jinja/jinja.h"
#include "text/jinja/value.h"

namespace vlm::jinja {

class BuiltinFunction : public Object {
 public:
  using Fn = std::function<Value(Interpreter&, CallArgs&)>;
  BuiltinFunction(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  std::string repr() const override { return "<built-in function " + name_ + ">"; }
  bool callable() const override { return true; }
  Value call(Interpreter& in, CallArgs& args) override { return fn_(in, args); }

 private:
  std::string name_;
  Fn fn_;
};

class Namespace : public Object {
 public:
  std::string type_name() const override { return "Namespace"; }
  std::string repr() const override;
  bool get_attr(const std::string& name, Value& out) const override;
  bool set_attr(const std::string& name, const Value& v) override;
  DictEntries attrs;
};

struct Scope {
  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> vars;
  const Value* lookup(const std::string& name) const;
  void set(const std::string& name, Value v);
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  Interpreter(const std::string& origin, const RenderOptions& opts) : origin_(origin), opts_(opts) {}
  // Breaks the reference cycles a render can build (a macro holds the scope that holds it; a namespace can hold
  // itself), so every value is freed when the render ends.
  ~Interpreter() {
    for (auto& r : releasers_) r();
  }
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;
  void on_release(std::function<void()> f) { releasers_.push_back(std::move(f)); }

  enum class Flow { kNormal, kBreak, kContinue };
  Flow exec_body(const NodeList& body, const ScopePtr& scope, std::string& out);
  Value eval(const Node& n, const ScopePtr& scope);

  // Shared by builtins.
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  ValueList iterate(const Value& v);
  Value call(const Value& callee, CallArgs& args);
  Value call_filter(const std::string& name, const Value& input, CallArgs& args);
  bool call_test(const std::string& name, const Value& input, CallArgs& args);
  void charge(int64_t iterations);        // counts work against the iteration budget
  void check_size(size_t bytes) const;    // throws kResource past the output limit
  std::string render_macro(const Node& def, const ScopePtr& scope);  // body of a macro/caller
  std::string render_loop(const Node& for_node, const Value& iterable, const ScopePtr& scope, int depth);
  const RenderOptions& options() const { return opts_; }
  int& call_depth() { return call_depth_; }

 private:
  Value eval_inner(const Node& n, const ScopePtr& scope);
  Value eval_compare(const Node& n, const ScopePtr& scope);
  Value eval_call(const Node& n, const ScopePtr& scope);
  void eval_args(const Node& n, const ScopePtr& scope, CallArgs& args);
  Flow exec(const Node& n, const ScopePtr& scope, std::string& out);
  Flow exec_for(const Node& n, const ScopePtr& scope, std::string& out, const Value* override_iter, int depth);
  void assign(const Node& target, const Value& v, const ScopePtr& scope);
  [[noreturn]] void fail_at(const Node& n, const RuntimeFail& f) const;

  const std::string& origin_;
  const RenderOptions& opts_;
  int64_t iterations_ = 0;
  int call_depth_ = 0;
  std::vector<std::function<void()>> releasers_;
};

// Builtins (builtins.cpp, methods.cpp).
Value make_globals_scope_value(const std::string& name, bool& found);  // range, dict, namespace, ...
Value binary_op(const std::string& op, const Value& a, const Value& b, Interpreter& in);
bool value_in(const Value& needle, const Value& haystack);
Value slice_value(const Value& v, const Value& start, const Value& stop, const Value& step);
// Methods of str, dict, list and tuple values (the sandbox-safe ones), as bound callables.
bool lookup_method(const Value& self, const std::string& name, Value& out);
std::string printf_format(const std::string& fmt, const Value& args);       // str % args
std::string str_format(const std::string& fmt, const CallArgs& args, Interpreter& in);  // str.format

}  // namespace vlm::jinja
