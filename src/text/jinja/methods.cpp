// Methods templates call on values (str.startswith, dict.get, list.index, ...), the subset of Python's that
// ImmutableSandboxedEnvironment allows: mutating methods (list.append, dict.update, ...) resolve to an undefined
// that raises "access to attribute ... is unsafe" when called, as in the sandbox. Also str % args and
// str.format with Python's format mini-language for the common specs.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "text/jinja/interpreter.h"
#include "text/jinja/pystr.h"

namespace vlm::jinja {
namespace {

class BoundMethod : public Object {
 public:
  BoundMethod(Value self, std::string name) : self_(std::move(self)), name_(std::move(name)) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  std::string repr() const override { return "<built-in method " + name_ + " of " + self_.type_name() + " object>"; }
  bool callable() const override { return true; }
  Value call(Interpreter& in, CallArgs& a) override;

 private:
  Value self_;
  std::string name_;
};

const char* const kStrMethods[] = {
    "startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "replace", "upper", "lower", "title",
    "capitalize", "swapcase", "casefold", "count", "find", "rfind", "index", "rindex", "format", "join",
    "splitlines", "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "istitle", "isnumeric",
    "isdecimal", "zfill", "center", "ljust", "rjust", "partition", "rpartition", "removeprefix", "removesuffix"};
const char* const kDictMethods[] = {"items", "keys", "values", "get", "copy"};
const char* const kDictUnsafe[] = {"clear", "pop", "popitem", "setdefault", "update"};
const char* const kListMethods[] = {"index", "count", "copy", "pop", "clear"};
// jinja2 3.1's sandbox lists these for MutableSequence; pop and clear are (by its omission) allowed.
const char* const kListUnsafe[] = {"append", "reverse", "insert", "sort", "extend", "remove"};
const char* const kTupleMethods[] = {"index", "count"};

template <size_t N>
bool in_set(const char* const (&set)[N], const std::string& name) {
  for (const char* s : set)
    if (name == s) return true;
  return false;
}

std::vector<std::optional<Value>> args_of(const std::string& m, const CallArgs& a, size_t max_pos,
                                          std::initializer_list<const char*> kw_names = {}) {
  std::vector<const char*> names(kw_names);
  std::vector<std::optional<Value>> out(std::max(max_pos, names.size()));
  if (a.args.size() > max_pos) rt_fail(m + "() takes at most " + std::to_string(max_pos) + " arguments");
  for (size_t i = 0; i < a.args.size(); ++i) out[i] = a.args[i];
  for (const auto& kw : a.kwargs) {
    size_t i = 0;
    while (i < names.size() && kw.first != names[i]) ++i;
    if (i == names.size()) rt_fail(m + "() takes no keyword argument '" + kw.first + "'");
    out[i] = kw.second;
  }
  return out;
}

const std::string& str_arg(const std::optional<Value>& v, const std::string& m) {
  if (!v || !v->is_string()) rt_fail(m + "() argument must be str, not " + (v ? v->type_name() : "nothing"));
  return v->str();
}

std::optional<std::string> opt_str(const std::optional<Value>& v, const std::string& m) {
  if (!v || v->is_none()) return std::nullopt;
  return str_arg(v, m);
}

int64_t int_arg(const std::optional<Value>& v, int64_t dflt, const std::string& m) {
  if (!v || v->is_none()) return dflt;
  if (!v->is_int()) rt_fail(m + "(): '" + v->type_name() + "' object cannot be interpreted as an integer");
  return v->as_int();
}

// Clamp Python start/end indices (code points) for find/count/startswith.
void clamp_range(int64_t n, std::optional<int64_t> s, std::optional<int64_t> e, int64_t& lo, int64_t& hi) {
  lo = s.value_or(0);
  hi = e.value_or(n);
  if (lo < 0) lo = std::max<int64_t>(0, lo + n);
  if (hi < 0) hi = std::max<int64_t>(0, hi + n);
  hi = std::min(hi, n);
}

std::optional<int64_t> opt_int(const std::optional<Value>& v, const std::string& m) {
  if (!v || v->is_none()) return std::nullopt;
  return int_arg(v, 0, m);
}

Value call_str_method(Interpreter& in, const std::string& s, const std::string& m, CallArgs& a) {
  if (m == "startswith" || m == "endswith") {
    auto b = args_of(m, a, 3);
    if (!b[0]) rt_fail(m + "() takes at least 1 argument");
    ValueList prefixes = b[0]->is_tuple() ? b[0]->items() : ValueList{*b[0]};
    std::u32string u = pystr::decode(s);
    int64_t lo, hi;
    clamp_range(static_cast<int64_t>(u.size()), opt_int(b[1], m), opt_int(b[2], m), lo, hi);
    for (const auto& p : prefixes) {
      if (!p.is_string()) rt_fail(m + " first arg must be str or a tuple of str, not " + p.type_name());
      std::u32string pu = pystr::decode(p.str());
      if (hi - lo < static_cast<int64_t>(pu.size()) || lo > static_cast<int64_t>(u.size())) continue;
      size_t at = m == "startswith" ? static_cast<size_t>(lo) : static_cast<size_t>(hi) - pu.size();
      if (u.compare(at, pu.size(), pu) == 0) return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (m == "split" || m == "rsplit") {
    auto b = args_of(m, a, 2, {"sep", "maxsplit"});
    auto sep = opt_str(b[0], m);
    if (sep && sep->empty()) rt_fail("empty separator");
    int64_t maxsplit = int_arg(b[1], -1, m);
    auto parts = m == "split" ? pystr::split(s, sep, maxsplit) : pystr::rsplit(s, sep, maxsplit);
    ValueList out;
    for (auto& p : parts) out.push_back(Value::string(std::move(p)));
    in.charge(static_cast<int64_t>(out.size()));
    return Value::list(std::move(out));
  }
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    auto b = args_of(m, a, 1);
    return Value::string(pystr::strip(s, opt_str(b[0], m), m != "rstrip", m != "lstrip"));
  }
  if (m == "replace") {
    auto b = args_of(m, a, 3);
    std::string r = pystr::replace(s, str_arg(b[0], m), str_arg(b[1], m), int_arg(b[2], -1, m));
    in.check_size(r.size());
    return Value::string(std::move(r));
  }
  if (m == "upper" || m == "lower" || m == "title" || m == "capitalize" || m == "swapcase" || m == "casefold") {
    args_of(m, a, 0);
    if (m == "upper") return Value::string(pystr::upper(s));
    if (m == "lower" || m == "casefold") return Value::string(pystr::lower(s));
    if (m == "title") return Value::string(pystr::title(s));
    if (m == "capitalize") return Value::string(pystr::capitalize(s));
    return Value::string(pystr::swapcase(s));
  }
  if (m == "count" || m == "find" || m == "rfind" || m == "index" || m == "rindex") {
    auto b = args_of(m, a, 3);
    std::u32string u = pystr::decode(s);
    std::u32string sub = pystr::decode(str_arg(b[0], m));
    int64_t lo, hi;
    clamp_range(static_cast<int64_t>(u.size()), opt_int(b[1], m), opt_int(b[2], m), lo, hi);
    if (m == "count") {
      if (lo > hi) return Value::integer(0);
      if (sub.empty()) return Value::integer(hi - lo + 1);
      int64_t n = 0;
      size_t p = static_cast<size_t>(lo);
      while (true) {
        size_t f = u.find(sub, p);
        if (f == std::u32string::npos || static_cast<int64_t>(f + sub.size()) > hi) break;
        ++n;
        p = f + sub.size();
      }
      return Value::integer(n);
    }
    int64_t found = -1;
    if (lo <= hi && static_cast<int64_t>(sub.size()) <= hi - lo) {
      std::u32string_view window = std::u32string_view(u).substr(static_cast<size_t>(lo), static_cast<size_t>(hi - lo));
      size_t f = (m == "find" || m == "index") ? window.find(sub) : window.rfind(sub);
      if (f != std::u32string_view::npos) found = lo + static_cast<int64_t>(f);
    }
    if (found < 0 && (m == "index" || m == "rindex")) rt_fail("substring not found");
    return Value::integer(found);
  }
  if (m == "format") return Value::string(str_format(s, a, in));
  if (m == "join") {
    auto b = args_of(m, a, 1);
    if (!b[0]) rt_fail("join() takes exactly one argument");
    std::string out;
    bool first = true;
    for (const auto& item : in.iterate(*b[0])) {
      if (!item.is_string()) rt_fail("sequence item: expected str instance, " + item.type_name() + " found");
      if (!first) out += s;
      first = false;
      out += item.str();
      in.check_size(out.size());
    }
    return Value::string(std::move(out));
  }
  if (m == "splitlines") {
    auto b = args_of(m, a, 1, {"keepends"});
    ValueList out;
    for (auto& l : pystr::splitlines(s, b[0] && b[0]->truthy())) out.push_back(Value::string(std::move(l)));
    return Value::list(std::move(out));
  }
  if (m.rfind("is", 0) == 0) {
    args_of(m, a, 0);
    if (m == "isdigit") return Value::boolean(pystr::all_of(s, pystr::is_digit));
    if (m == "isalpha") return Value::boolean(pystr::all_of(s, pystr::is_alpha));
    if (m == "isalnum") return Value::boolean(pystr::all_of(s, pystr::is_alnum));
    if (m == "isspace") return Value::boolean(pystr::all_of(s, pystr::is_space));
    if (m == "isnumeric") return Value::boolean(pystr::all_of(s, pystr::is_numeric));
    if (m == "isdecimal") return Value::boolean(pystr::all_of(s, pystr::is_decimal));
    if (m == "islower") return Value::boolean(pystr::is_lower(s));
    if (m == "isupper") return Value::boolean(pystr::is_upper(s));
    if (m == "istitle") return Value::boolean(pystr::is_title(s));
  }
  if (m == "zfill") {
    auto b = args_of(m, a, 1);
    int64_t width = int_arg(b[0], 0, m);
    int64_t len = static_cast<int64_t>(pystr::length(s));
    if (width <= len) return Value::string(s);
    in.check_size(static_cast<size_t>(width));
    std::string zeros(static_cast<size_t>(width - len), '0');
    if (!s.empty() && (s[0] == '+' || s[0] == '-')) return Value::string(s.substr(0, 1) + zeros + s.substr(1));
    return Value::string(zeros + s);
  }
  if (m == "center" || m == "ljust" || m == "rjust") {
    auto b = args_of(m, a, 2);
    char32_t fill = ' ';
    if (b[1]) {
      std::u32string f = pystr::decode(str_arg(b[1], m));
      if (f.size() != 1) rt_fail("The fill character must be exactly one character long");
      fill = f[0];
    }
    int64_t width = int_arg(b[0], 0, m);
    in.check_size(static_cast<size_t>(std::max<int64_t>(0, width)));
    return Value::string(pystr::pad(s, width, fill, m == "center" ? '^' : m == "ljust" ? '<' : '>'));
  }
  if (m == "partition" || m == "rpartition") {
    auto b = args_of(m, a, 1);
    const std::string& sep = str_arg(b[0], m);
    if (sep.empty()) rt_fail("empty separator");
    size_t f = m == "partition" ? s.find(sep) : s.rfind(sep);
    if (f == std::string::npos)
      return m == "partition" ? Value::tuple({Value::string(s), Value::string(""), Value::string("")})
                              : Value::tuple({Value::string(""), Value::string(""), Value::string(s)});
    return Value::tuple({Value::string(s.substr(0, f)), Value::string(sep), Value::string(s.substr(f + sep.size()))});
  }
  if (m == "removeprefix" || m == "removesuffix") {
    auto b = args_of(m, a, 1);
    const std::string& x = str_arg(b[0], m);
    if (m == "removeprefix" && s.compare(0, x.size(), x) == 0) return Value::string(s.substr(x.size()));
    if (m == "removesuffix" && !x.empty() && s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0)
      return Value::string(s.substr(0, s.size() - x.size()));
    return Value::string(s);
  }
  rt_unsupported("str." + m + "() is not supported by vlmcheck's template engine");
}

Value call_seq_method(const Value& self, const std::string& m, CallArgs& a) {
  if (m == "copy") {
    args_of(m, a, 0);
    return Value::list(self.items());
  }
  if (m == "clear") {
    args_of(m, a, 0);
    self.mutable_items()->clear();
    return Value::none();
  }
  if (m == "pop") {
    auto b = args_of(m, a, 1);
    ValueList& items = *self.mutable_items();
    if (items.empty()) rt_fail("pop from empty list");
    int64_t n = static_cast<int64_t>(items.size());
    int64_t i = int_arg(b[0], -1, m);
    if (i < 0) i += n;
    if (i < 0 || i >= n) rt_fail("pop index out of range");
    Value out = items[static_cast<size_t>(i)];
    items.erase(items.begin() + i);
    return out;
  }
  auto b = args_of(m, a, 3);
  if (!b[0]) rt_fail(m + "() takes at least 1 argument");
  const ValueList& items = self.items();
  if (m == "count") {
    int64_t n = 0;
    for (const auto& x : items) n += py_equal(x, *b[0]);
    return Value::integer(n);
  }
  int64_t lo, hi;
  clamp_range(static_cast<int64_t>(items.size()), opt_int(b[1], m), opt_int(b[2], m), lo, hi);
  for (int64_t i = lo; i < hi; ++i)
    if (py_equal(items[static_cast<size_t>(i)], *b[0])) return Value::integer(i);
  rt_fail(b[0]->repr() + " is not in " + self.type_name());
}

Value call_dict_method(const Value& self, const std::string& m, CallArgs& a) {
  if (m == "get") {
    auto b = args_of(m, a, 2);
    if (!b[0]) rt_fail("get expected at least 1 argument, got 0");
    if (b[0]->is_list() || b[0]->is_dict()) rt_fail("unhashable type: '" + b[0]->type_name() + "'");
    if (const Value* v = self.dict_get(*b[0])) return *v;
    return b[1] ? *b[1] : Value::none();
  }
  args_of(m, a, 0);
  if (m == "copy") return Value::dict(self.entries());
  ValueList out;
  for (const auto& e : self.entries()) {
    if (m == "items") out.push_back(Value::tuple({e.first, e.second}));
    else if (m == "keys") out.push_back(e.first);
    else out.push_back(e.second);
  }
  return Value::iter(std::move(out), m == "items" ? "dict_items" : m == "keys" ? "dict_keys" : "dict_values", true);
}

Value BoundMethod::call(Interpreter& in, CallArgs& a) {
  if (self_.is_string()) return call_str_method(in, self_.str(), name_, a);
  if (self_.is_dict()) return call_dict_method(self_, name_, a);
  return call_seq_method(self_, name_, a);
}

}  // namespace

bool lookup_method(const Value& self, const std::string& name, Value& out) {
  auto bound = [&] {
    out = Value::object(std::make_shared<BoundMethod>(self, name));
    return true;
  };
  auto unsafe = [&] {
    out = Value::undefined(name, self.describe(),
                           "access to attribute '" + name + "' of '" + self.type_name() + "' object is unsafe.");
    return true;
  };
  switch (self.kind()) {
    case Kind::kString: return in_set(kStrMethods, name) && bound();
    case Kind::kDict:
      if (in_set(kDictMethods, name)) return bound();
      return in_set(kDictUnsafe, name) && unsafe();
    case Kind::kList:
      if (in_set(kListMethods, name)) return bound();
      return in_set(kListUnsafe, name) && unsafe();
    case Kind::kTuple: return in_set(kTupleMethods, name) && bound();
    case Kind::kBool:
    case Kind::kInt:
      // The plain-data attributes of Python ints (True.real is 1).
      if (name == "real" || name == "numerator") return out = Value::integer(self.as_int()), true;
      if (name == "imag") return out = Value::integer(0), true;
      if (name == "denominator") return out = Value::integer(1), true;
      return false;
    case Kind::kFloat:
      if (name == "real") return out = self, true;
      if (name == "imag") return out = Value::floating(0.0), true;
      return false;
    default: return false;
  }
}

// ---- str % args -------------------------------------------------------------------------------------------------

namespace {

std::string format_number_printf(char conv, const std::string& flags, int width, int prec, const Value& v) {
  std::string f = "%" + flags;
  if (width >= 0) f += std::to_string(width);
  if (prec >= 0) f += "." + std::to_string(prec);
  char buf[512];
  if (conv == 'd' || conv == 'i' || conv == 'u') {
    if (!v.is_number()) rt_fail("%" + std::string(1, conv) + " format: a real number is required, not " + v.type_name());
    double d = v.as_double();
    int64_t x = v.is_float() ? static_cast<int64_t>(std::trunc(d)) : v.as_int();
    std::snprintf(buf, sizeof(buf), (f + "lld").c_str(), static_cast<long long>(x));
    return buf;
  }
  if (conv == 'x' || conv == 'X' || conv == 'o') {
    if (!v.is_int()) rt_fail("%" + std::string(1, conv) + " format: an integer is required, not " + v.type_name());
    int64_t x = v.as_int();
    std::string body;
    std::snprintf(buf, sizeof(buf), (f + "ll" + std::string(1, conv)).c_str(),
                  static_cast<unsigned long long>(x < 0 ? -x : x));
    body = buf;
    if (x < 0) body = "-" + body;
    return body;
  }
  if (!v.is_number()) rt_fail("must be real number, not " + v.type_name());
  std::snprintf(buf, sizeof(buf), (f + std::string(1, conv)).c_str(), v.as_double());
  return buf;
}

}  // namespace

std::string printf_format(const std::string& fmt, const Value& args) {
  ValueList positional;
  const Value* mapping = nullptr;
  if (args.is_tuple()) positional = args.items();
  else if (args.is_dict()) mapping = &args;
  else positional.push_back(args);
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    if (++i >= fmt.size()) rt_fail("incomplete format");
    Value arg;
    bool have_arg = false;
    if (fmt[i] == '(') {
      size_t close = fmt.find(')', i);
      if (close == std::string::npos) rt_fail("incomplete format key");
      if (!mapping) rt_fail("format requires a mapping");
      const Value* v = mapping->dict_get(Value::string(fmt.substr(i + 1, close - i - 1)));
      if (!v) rt_fail("KeyError: " + fmt.substr(i + 1, close - i - 1));
      arg = *v;
      have_arg = true;
      i = close + 1;
    }
    std::string flags;
    while (i < fmt.size() && std::strchr("-+ #0", fmt[i]) && fmt[i]) flags.push_back(fmt[i++]);
    int width = -1, prec = -1;
    // Digits saturate at 10^6 (anything over 4096 is refused below) so long digit runs cannot overflow.
    while (i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i])))
      width = std::min(std::max(width, 0) * 10 + (fmt[i++] - '0'), 1'000'000);
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      prec = 0;
      while (i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i])))
        prec = std::min(prec * 10 + (fmt[i++] - '0'), 1'000'000);
    }
    if (i >= fmt.size()) rt_fail("incomplete format");
    char conv = fmt[i];
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (!have_arg) {
      if (mapping) {
        arg = *mapping;
      } else {
        if (next >= positional.size()) rt_fail("not enough arguments for format string");
        arg = positional[next++];
      }
    }
    if (width > 4096 || prec > 4096) rt_resource("format width too large");
    switch (conv) {
      case 's':
      case 'r':
      case 'a': {
        std::string s = conv == 's' ? arg.to_str() : arg.repr();
        if (prec >= 0) s = pystr::encode(pystr::decode(s).substr(0, static_cast<size_t>(prec)));
        out += pystr::pad(s, width, ' ', flags.find('-') != std::string::npos ? '<' : '>');
        break;
      }
      case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': case 'f': case 'F': case 'e': case 'E':
      case 'g': case 'G':
        out += format_number_printf(conv, flags, width, prec, arg);
        break;
      case 'c':
        if (arg.is_int()) pystr::append_utf8(out, static_cast<char32_t>(arg.as_int()));
        else out += arg.to_str();
        break;
      default: rt_fail(std::string("unsupported format character '") + conv + "'");
    }
  }
  if (!mapping && next < positional.size() && !(positional.size() == 1 && args.is_dict()))
    rt_fail("not all arguments converted during string formatting");
  return out;
}

// ---- str.format -------------------------------------------------------------------------------------------------

namespace {

std::string apply_spec(const Value& v, const std::string& spec) {
  // [[fill]align][sign][#][0][width][,|_][.precision][type]
  size_t i = 0;
  std::u32string u = pystr::decode(spec);
  char32_t fill = ' ';
  char align = 0;
  auto is_align = [](char32_t c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (u.size() >= 2 && is_align(u[1])) {
    fill = u[0];
    align = static_cast<char>(u[1]);
    i = 2;
  } else if (!u.empty() && is_align(u[0])) {
    align = static_cast<char>(u[0]);
    i = 1;
  }
  char sign = 0;
  if (i < u.size() && (u[i] == '+' || u[i] == '-' || u[i] == ' ')) sign = static_cast<char>(u[i++]);
  bool alt = false;
  if (i < u.size() && u[i] == '#') alt = true, ++i;
  if (i < u.size() && u[i] == '0') {
    if (!align) fill = '0', align = '=';
    ++i;
  }
  int64_t width = -1;
  while (i < u.size() && u[i] >= '0' && u[i] <= '9')
    width = std::min<int64_t>(std::max<int64_t>(width, 0) * 10 + (u[i++] - '0'), 1'000'000);
  char grouping = 0;
  if (i < u.size() && (u[i] == ',' || u[i] == '_')) grouping = static_cast<char>(u[i++]);
  int prec = -1;
  if (i < u.size() && u[i] == '.') {
    ++i;
    prec = 0;
    while (i < u.size() && u[i] >= '0' && u[i] <= '9') prec = std::min(prec * 10 + static_cast<int>(u[i++] - '0'), 1'000'000);
  }
  char type = 0;
  if (i < u.size()) type = static_cast<char>(u[i++]);
  if (i != u.size()) rt_fail("Invalid format specifier '" + spec + "'");
  if (width > 4096 || prec > 4096) rt_resource("format width too large");
  if (alt || grouping) rt_unsupported("format spec '" + spec + "' is not supported by vlmcheck's template engine");
  std::string body;
  bool numeric = false;
  if (v.is_string() || (!v.is_number() && type == 0) || type == 's') {
    if (!v.is_string() && type == 's') rt_fail("Unknown format code 's' for object of type '" + v.type_name() + "'");
    if (v.is_string() && type != 0 && type != 's')
      rt_fail(std::string("Unknown format code '") + type + "' for object of type 'str'");
    body = v.to_str();
    if (prec >= 0) body = pystr::encode(pystr::decode(body).substr(0, static_cast<size_t>(prec)));
    if (!align) align = '<';
  } else {
    numeric = true;
    if (!align) align = '>';
    double d = v.as_double();
    bool neg = false;
    if ((type == 0 || type == 'd') && v.is_int() && !v.is_float()) {
      int64_t x = v.is_bool() ? v.as_int() : v.as_int();
      neg = x < 0;
      body = std::to_string(neg ? -static_cast<__int128>(x) > INT64_MAX ? 0 : -x : x);
      if (v.is_bool() && type == 0) body = v.as_bool() ? "True" : "False", numeric = false;
    } else if (type == 'x' || type == 'X' || type == 'o' || type == 'b') {
      if (!v.is_int()) rt_fail(std::string("Unknown format code '") + type + "' for object of type 'float'");
      int64_t x = v.as_int();
      neg = x < 0;
      uint64_t ux = neg ? static_cast<uint64_t>(-(x + 1)) + 1 : static_cast<uint64_t>(x);
      if (type == 'b') {
        if (ux == 0) body = "0";
        while (ux) body.insert(body.begin(), static_cast<char>('0' + (ux & 1))), ux >>= 1;
      } else {
        char buf[64];
        std::snprintf(buf, sizeof(buf), type == 'o' ? "%llo" : type == 'x' ? "%llx" : "%llX",
                      static_cast<unsigned long long>(ux));
        body = buf;
      }
    } else if (type == 'f' || type == 'F' || type == 'e' || type == 'E' || type == 'g' || type == 'G' || type == '%' ||
               (type == 0 && v.is_float())) {
      if (type == 'd') rt_fail("Unknown format code 'd' for object of type 'float'");
      neg = std::signbit(d);
      double ad = std::fabs(d);
      char buf[600];
      if (type == 0 && prec < 0) {
        body = float_repr(ad);
      } else if (type == 0) {
        std::snprintf(buf, sizeof(buf), "%.*g", prec == 0 ? 1 : prec, ad);
        body = buf;
      } else if (type == '%') {
        std::snprintf(buf, sizeof(buf), "%.*f", prec < 0 ? 6 : prec, ad * 100);
        body = std::string(buf) + "%";
      } else {
        std::snprintf(buf, sizeof(buf), (std::string("%.*") + type).c_str(), prec < 0 ? 6 : prec, ad);
        body = buf;
      }
    } else {
      rt_fail(std::string("Unknown format code '") + type + "' for object of type '" + v.type_name() + "'");
    }
    if (numeric) {
      std::string s = neg ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "";
      if (align == '=') {
        int64_t pad_n = width - static_cast<int64_t>(pystr::length(s) + pystr::length(body));
        std::string f;
        pystr::append_utf8(f, fill);
        std::string padding;
        for (int64_t k = 0; k < pad_n; ++k) padding += f;
        return s + padding + body;
      }
      body = s + body;
    }
  }
  if (align == '=') align = '>';
  if (align == '^') {
    // format()'s centring puts the extra fill character on the right.
    int64_t len = static_cast<int64_t>(pystr::length(body));
    if (width <= len) return body;
    int64_t left = (width - len) / 2;
    std::string f;
    pystr::append_utf8(f, fill);
    std::string out;
    for (int64_t k = 0; k < left; ++k) out += f;
    out += body;
    for (int64_t k = 0; k < width - len - left; ++k) out += f;
    return out;
  }
  return pystr::pad(body, width, fill, align);
}

}  // namespace

std::string str_format(const std::string& fmt, const CallArgs& args, Interpreter& in) {
  std::string out;
  size_t auto_idx = 0;
  bool used_auto = false, used_manual = false;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      rt_fail("Single '}' encountered in format string");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    size_t close = fmt.find('}', i);
    if (close == std::string::npos) rt_fail("Single '{' encountered in format string");
    std::string field = fmt.substr(i + 1, close - i - 1);
    if (field.find('{') != std::string::npos) rt_unsupported("nested format fields are not supported");
    i = close;
    std::string spec, conv;
    size_t colon = field.find(':');
    if (colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    size_t bang = field.find('!');
    if (bang != std::string::npos) {
      conv = field.substr(bang + 1);
      field = field.substr(0, bang);
      if (conv != "r" && conv != "s" && conv != "a") rt_fail("Unknown conversion specifier " + conv);
    }
    size_t name_end = field.find_first_of(".[");
    std::string head = field.substr(0, name_end);
    Value v;
    if (head.empty()) {
      if (used_manual) rt_fail("cannot switch from manual field specification to automatic field numbering");
      used_auto = true;
      if (auto_idx >= args.args.size()) rt_fail("Replacement index " + std::to_string(auto_idx) + " out of range");
      v = args.args[auto_idx++];
    } else if (std::isdigit(static_cast<unsigned char>(head[0]))) {
      if (used_auto) rt_fail("cannot switch from automatic field numbering to manual field specification");
      used_manual = true;
      // An index too long for size_t is out of range like any other (stoul would throw past the interpreter).
      const size_t nd = std::min(head.find_first_not_of("0123456789"), head.size());
      if (nd > 18) rt_fail("Replacement index " + head + " out of range");
      size_t k = std::stoul(head);
      if (k >= args.args.size()) rt_fail("Replacement index " + head + " out of range");
      v = args.args[k];
    } else {
      bool found = false;
      for (const auto& kw : args.kwargs)
        if (kw.first == head) v = kw.second, found = true;
      if (!found) rt_fail("KeyError: '" + head + "'");
    }
    // .attr / [key] chains
    size_t p = name_end;
    while (p != std::string::npos && p < field.size()) {
      if (field[p] == '.') {
        size_t e = field.find_first_of(".[", p + 1);
        std::string attr = field.substr(p + 1, e == std::string::npos ? std::string::npos : e - p - 1);
        v = in.getattr(v, attr);
        if (v.is_undefined()) rt_fail("AttributeError: " + attr);
        p = e;
      } else {
        size_t e = field.find(']', p);
        if (e == std::string::npos) rt_fail("Missing ']' in format string");
        std::string key = field.substr(p + 1, e - p - 1);
        bool digits = !key.empty() && key.find_first_not_of("0123456789") == std::string::npos;
        if (digits && key.size() > 18) rt_fail("IndexError: " + key);
        v = in.getitem(v, digits ? Value::integer(std::stoll(key)) : Value::string(key));
        if (v.is_undefined()) rt_fail("KeyError: " + key);
        p = e + 1;
      }
    }
    if (conv == "r" || conv == "a") v = Value::string(v.repr());
    else if (conv == "s") v = Value::string(v.to_str());
    out += apply_spec(v, spec);
    in.check_size(out.size());
  }
  return out;
}

}  // namespace vlm::jinja
