// Value semantics (see value.h): Python truthiness, equality, ordering, str/repr and json.dumps text.
#include "text/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "text/jinja/pystr.h"

namespace vlm::jinja {

void rt_fail(std::string message) { throw RuntimeFail{std::move(message), false, false}; }
void rt_resource(std::string message) { throw RuntimeFail{std::move(message), false, true}; }
void rt_unsupported(std::string message) { throw RuntimeFail{std::move(message), false, false, true}; }

Value Object::call(Interpreter&, CallArgs&) { rt_fail("'" + type_name() + "' object is not callable"); }
bool Object::get_attr(const std::string&, Value&) const { return false; }
bool Object::set_attr(const std::string&, const Value&) { return false; }

Value Value::undefined(std::string name, std::string owner, std::string hint) {
  Value v;
  if (!name.empty() || !owner.empty() || !hint.empty())
    v.undef_ = std::make_shared<UndefinedInfo>(UndefinedInfo{std::move(name), std::move(owner), std::move(hint)});
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.str_ = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value Value::list(ValueList items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<ValueList>(std::move(items));
  return v;
}
Value Value::tuple(ValueList items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}
Value Value::dict(DictEntries entries) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<const DictEntries>(std::move(entries));
  return v;
}
Value Value::object(std::shared_ptr<Object> o) {
  Value v;
  v.kind_ = Kind::kObject;
  v.obj_ = std::move(o);
  return v;
}

Value Value::iter(ValueList items, const char* type_name, bool has_len) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kIter;
  v.iter_name_ = type_name;
  v.iter_has_len_ = has_len;
  return v;
}

Value Value::from_json(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return none();
    case Json::value_t::boolean: return boolean(j.get<bool>());
    case Json::value_t::number_integer: return integer(j.get<int64_t>());
    case Json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX))
        throw_error(ErrorKind::kUnsupported, "template variable: integer {} is beyond 64-bit range", u);
      return integer(static_cast<int64_t>(u));
    }
    case Json::value_t::number_float: return floating(j.get<double>());
    case Json::value_t::string: return string(j.get<std::string>());
    case Json::value_t::array: {
      ValueList items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return list(std::move(items));
    }
    case Json::value_t::object: {
      DictEntries entries;
      entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) entries.emplace_back(string(it.key()), from_json(it.value()));
      return dict(std::move(entries));
    }
    default: return none();
  }
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool:
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0.0;
    case Kind::kString: return !str_->empty();
    case Kind::kList:
    case Kind::kTuple: return !list_->empty();
    case Kind::kDict: return !dict_->empty();
    case Kind::kIter: return !iter_has_len_ || !list_->empty();
    case Kind::kObject: return true;
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's layout: fixed for 1e-4 <= |x| < 1e16, else exponent.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits.push_back(c);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  int decpt = exp + 1;  // digits d1 d2 ... with the decimal point after `decpt` digits
  std::string out = neg ? "-" : "";
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
    } else if (static_cast<size_t>(decpt) >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(decpt) - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    int x = decpt - 1;
    char eb[16];
    std::snprintf(eb, sizeof(eb), "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    out += eb;
  }
  return out;
}

std::string string_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (char32_t c : pystr::decode(s)) {
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (!pystr::is_printable(c)) {
      char b[16];
      if (c < 0x100) std::snprintf(b, sizeof(b), "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000) std::snprintf(b, sizeof(b), "\\u%04x", static_cast<unsigned>(c));
      else std::snprintf(b, sizeof(b), "\\U%08x", static_cast<unsigned>(c));
      out += b;
    } else {
      pystr::append_utf8(out, c);
    }
  }
  out.push_back(q);
  return out;
}

std::string Value::to_str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kString: return *str_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "None";
    case Kind::kBool: return i_ ? "True" : "False";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return float_repr(f_);
    case Kind::kString: return string_repr(*str_);
    case Kind::kList:
    case Kind::kTuple: {
      bool tup = kind_ == Kind::kTuple;
      std::string out = tup ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i) out += ", ";
        out += (*list_)[i].repr();
      }
      if (tup && list_->size() == 1) out += ",";
      out += tup ? ")" : "]";
      return out;
    }
    case Kind::kDict: {
      std::string out = "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        if (i) out += ", ";
        out += (*dict_)[i].first.repr() + ": " + (*dict_)[i].second.repr();
      }
      return out + "}";
    }
    case Kind::kIter: {
      if (!iter_has_len_) return std::string("<") + iter_name_ + " object>";
      std::string out = std::string(iter_name_) + "([";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i) out += ", ";
        out += (*list_)[i].repr();
      }
      return out + "])";
    }
    case Kind::kObject: return obj_->repr();
  }
  return "";
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kTuple: return "tuple";
    case Kind::kDict: return "dict";
    case Kind::kIter: return iter_name_;
    case Kind::kObject: return obj_->type_name();
  }
  return "object";
}

std::string Value::describe() const {
  if (kind_ == Kind::kNone) return "None";
  return type_name() + " object";
}

const Value* Value::dict_get(const Value& key) const {
  if (kind_ != Kind::kDict) return nullptr;
  for (const auto& e : *dict_)
    if (py_equal(e.first, key)) return &e.second;
  return nullptr;
}

size_t Value::length() const {
  switch (kind_) {
    case Kind::kUndefined: return 0;
    case Kind::kString: return pystr::length(*str_);
    case Kind::kList:
    case Kind::kTuple: return list_->size();
    case Kind::kDict: return dict_->size();
    case Kind::kIter:
      if (iter_has_len_) return list_->size();
      rt_fail("object of type '" + type_name() + "' has no len()");
    default: rt_fail("object of type '" + type_name() + "' has no len()");
  }
}

std::string Value::undefined_message() const {
  if (!undef_) return "'Undefined' is undefined";  // jinja2's text for an anonymous undefined
  if (!undef_->hint.empty()) return undef_->hint;
  if (undef_->owner.empty()) return "'" + undef_->name + "' is undefined";
  return "'" + undef_->owner + "' has no attribute '" + undef_->name + "'";
}

bool py_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return a.str() == b.str();
    case Kind::kList:
    case Kind::kTuple: {
      if (a.items().size() != b.items().size()) return false;
      for (size_t i = 0; i < a.items().size(); ++i)
        if (!py_equal(a.items()[i], b.items()[i])) return false;
      return true;
    }
    case Kind::kDict: {
      if (a.entries().size() != b.entries().size()) return false;
      for (const auto& e : a.entries()) {
        const Value* o = b.dict_get(e.first);
        if (!o || !py_equal(e.second, *o)) return false;
      }
      return true;
    }
    case Kind::kObject: return a.obj() == b.obj();
    default: return false;
  }
}

bool py_less(const Value& a, const Value& b, bool& ok) {
  ok = true;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();  // UTF-8 byte order is code point order
  if ((a.is_list() && b.is_list()) || (a.is_tuple() && b.is_tuple())) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (py_equal(x[i], y[i])) continue;
      return py_less(x[i], y[i], ok);
    }
    return x.size() < y.size();
  }
  ok = false;
  return false;
}

namespace {

void json_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out.push_back('"');
  for (char32_t c : pystr::decode(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default: {
        char b[16];
        if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
          if (c >= 0x10000) {
            char32_t v = c - 0x10000;
            std::snprintf(b, sizeof(b), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                          static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
          } else {
            std::snprintf(b, sizeof(b), "\\u%04x", static_cast<unsigned>(c));
          }
          out += b;
        } else {
          pystr::append_utf8(out, c);
        }
      }
    }
  }
  out.push_back('"');
}

std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return float_repr(d);
}

bool dump(const Value& v, const JsonDumpOptions& o, int level, std::string& out, std::string& err) {
  auto newline = [&](int lvl) {
    out.push_back('\n');
    for (int i = 0; i < lvl; ++i) out += o.indent_str;
  };
  switch (v.kind()) {
    case Kind::kNone: out += "null"; return true;
    case Kind::kBool: out += v.as_bool() ? "true" : "false"; return true;
    case Kind::kInt: out += std::to_string(v.as_int()); return true;
    case Kind::kFloat: out += json_float(v.as_double()); return true;
    case Kind::kString: json_string(v.str(), o.ensure_ascii, out); return true;
    case Kind::kList:
    case Kind::kTuple: {
      if (v.items().empty()) {
        out += "[]";
        return true;
      }
      out.push_back('[');
      for (size_t i = 0; i < v.items().size(); ++i) {
        if (i) out += o.item_sep;
        if (o.has_indent) newline(level + 1);
        if (!dump(v.items()[i], o, level + 1, out, err)) return false;
      }
      if (o.has_indent) newline(level);
      out.push_back(']');
      return true;
    }
    case Kind::kDict: {
      if (v.entries().empty()) {
        out += "{}";
        return true;
      }
      std::vector<const std::pair<Value, Value>*> entries;
      for (const auto& e : v.entries()) entries.push_back(&e);
      if (o.sort_keys) {
        bool ok = true;
        std::stable_sort(entries.begin(), entries.end(), [&](auto* a, auto* b) {
          bool k = true;
          bool r = py_less(a->first, b->first, k);
          ok = ok && k;
          return r;
        });
        if (!ok) {
          err = "'<' not supported between instances of dict keys";
          return false;
        }
      }
      out.push_back('{');
      bool first = true;
      for (const auto* e : entries) {
        if (!first) out += o.item_sep;
        first = false;
        if (o.has_indent) newline(level + 1);
        const Value& k = e->first;
        if (k.is_string()) json_string(k.str(), o.ensure_ascii, out);
        else if (k.is_bool()) out += k.as_bool() ? "\"true\"" : "\"false\"";
        else if (k.is_int()) out += "\"" + std::to_string(k.as_int()) + "\"";
        else if (k.is_float()) out += "\"" + json_float(k.as_double()) + "\"";
        else if (k.is_none()) out += "\"null\"";
        else {
          err = "keys must be str, int, float, bool or None, not " + k.type_name();
          return false;
        }
        out += o.key_sep;
        if (!dump(e->second, o, level + 1, out, err)) return false;
      }
      if (o.has_indent) newline(level);
      out.push_back('}');
      return true;
    }
    default:
      err = "Object of type " + v.type_name() + " is not JSON serializable";
      return false;
  }
}

}  // namespace

bool json_dumps(const Value& v, const JsonDumpOptions& opts, std::string& out, std::string& err) {
  return dump(v, opts, 0, out, err);
}

}  // namespace vlm::jinja
