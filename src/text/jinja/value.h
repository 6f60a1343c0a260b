// Values of our Jinja interpreter, with Python's semantics as jinja2 exposes them to templates: truthiness,
// equality across int/float/bool, ordering, str() and repr() text (True, None, ['a', 1], 1e-05), and the
// json.dumps text transformers' `tojson` filter produces. Strings are UTF-8; lists, dicts and strings are shared
// immutable data (the sandbox transformers uses forbids in-place mutation), namespaces are the one mutable object.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"

namespace vlm::jinja {

class Value;
class Interpreter;

// Thrown by builtins; the evaluator attaches the position of the node being evaluated.
struct RuntimeFail {
  std::string message;
  bool raised = false;       // raise_exception() from the template itself
  bool resource = false;     // a limit was hit
  bool unsupported = false;  // a jinja2 feature this interpreter does not implement
};
[[noreturn]] void rt_fail(std::string message);
[[noreturn]] void rt_resource(std::string message);
[[noreturn]] void rt_unsupported(std::string message);
[[noreturn]] void rt_fail(std::string message);
[[noreturn]] void rt_resource(std::string message);

// kIter stands for Python's lazy iterables that filters such as map/select return (generators: always true,
// no len()) and dict views (dict_items...: len() works); they iterate like lists but print and test differently.
enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict, kIter, kObject };

using ValueList = std::vector<Value>;
using DictEntries = std::vector<std::pair<Value, Value>>;

struct CallArgs {
  ValueList args;
  std::vector<std::pair<std::string, Value>> kwargs;
};

// Objects other than the JSON-like data: namespaces, macros, bound methods, the loop variable, undefined hints.
class Object {
 public:
  virtual ~Object() = default;
  virtual std::string type_name() const = 0;  // as Python's type(x).__name__
  virtual std::string repr() const { return "<" + type_name() + " object>"; }
  virtual bool callable() const { return false; }
  virtual Value call(Interpreter& interp, CallArgs& args);
  // Attribute lookup; returns false when absent.
  virtual bool get_attr(const std::string& name, Value& out) const;
  virtual bool set_attr(const std::string& name, const Value& v);  // false: not assignable
};

// Why a value is undefined, for jinja2's messages ("'x' is undefined", "'dict object' has no attribute 'y'").
struct UndefinedInfo {
  std::string name;        // the missing name or attribute
  std::string owner;       // "" for a missing variable, else the owner's description ("dict object")
  std::string hint;        // a full message that replaces the default one (unsafe access, if-without-else)
};

class Value {
 public:
  Value() = default;  // undefined
  static Value undefined(std::string name = "", std::string owner = "", std::string hint = "");
  static Value none() { Value v; v.kind_ = Kind::kNone; return v; }
  static Value boolean(bool b) { Value v; v.kind_ = Kind::kBool; v.i_ = b; return v; }
  static Value integer(int64_t i) { Value v; v.kind_ = Kind::kInt; v.i_ = i; return v; }
  static Value floating(double f) { Value v; v.kind_ = Kind::kFloat; v.f_ = f; return v; }
  static Value string(std::string s);
  static Value list(ValueList items);
  static Value tuple(ValueList items);
  static Value dict(DictEntries entries);  // entries must hold unique keys
  static Value object(std::shared_ptr<Object> o);
  // A generator ("generator", no len) or a dict view ("dict_items", with len) over `items`.
  static Value iter(ValueList items, const char* type_name, bool has_len);
  static Value from_json(const Json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }  // Python: bool is an int
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kTuple; }
  bool is_sequence() const { return kind_ == Kind::kList || kind_ == Kind::kTuple; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_iter() const { return kind_ == Kind::kIter; }
  bool iter_has_len() const { return iter_has_len_; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return i_; }
  double as_double() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(i_); }
  const std::string& str() const { return *str_; }
  const ValueList& items() const { return *list_; }
  // Lists are shared by reference like Python's: list.pop()/clear() (the mutations the sandbox allows) are seen
  // through every copy of the value.
  ValueList* mutable_items() const { return list_.get(); }
  const DictEntries& entries() const { return *dict_; }
  Object* obj() const { return obj_.get(); }
  const std::shared_ptr<Object>& obj_ptr() const { return obj_; }
  const UndefinedInfo* undefined_info() const { return undef_.get(); }

  // Python semantics.
  bool truthy() const;
  std::string to_str() const;   // str(x); "" for undefined
  std::string repr() const;     // repr(x)
  std::string type_name() const;  // "str", "int", "dict", ... as Python names them
  std::string describe() const;   // jinja2's object_type_repr: "dict object", "None", ...
  const Value* dict_get(const Value& key) const;  // null when absent (dicts only)
  size_t length() const;        // len(x) for str (code points), list, tuple, dict; throws otherwise
  // The message jinja2 raises when an undefined value is used for anything but printing/testing.
  std::string undefined_message() const;

 private:
  Kind kind_ = Kind::kUndefined;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> str_;
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<const DictEntries> dict_;
  std::shared_ptr<Object> obj_;
  std::shared_ptr<const UndefinedInfo> undef_;
  const char* iter_name_ = "";
  bool iter_has_len_ = false;
};

// Python ==, with 1 == 1.0 == True and dicts compared as mappings.
bool py_equal(const Value& a, const Value& b);
// Python <: numbers with numbers, strings by code point, lists/tuples lexicographically; else TypeError
// (thrown as an interpreter error by the caller through `ok` = false).
bool py_less(const Value& a, const Value& b, bool& ok);
// Python float.__repr__ (shortest round-trip, 1e-05, 1e+16, inf, nan).
std::string float_repr(double d);
// repr of a Python str: quotes chosen as Python does, escapes for non-printables.
std::string string_repr(const std::string& s);

struct JsonDumpOptions {
  bool ensure_ascii = false;
  int indent = -1;              // -1: none
  std::string indent_str;       // used when indent >= 0 (spaces or the string given)
  bool has_indent = false;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};
// json.dumps(x, ...). Returns false (with `err` set to Python's TypeError text) for values JSON cannot hold.
bool json_dumps(const Value& v, const JsonDumpOptions& opts, std::string& out, std::string& err);

}  // namespace vlm::jinja
