// Operators, globals, filters and tests with jinja2 3.1's semantics (filters.py / tests.py), including the
// filter transformers swaps in (`tojson` = json.dumps with ensure_ascii=False) and its globals raise_exception
// and strftime_now. Filters that return generators in jinja2 (map, select, batch, ...) return kIter values so
// truthiness, len() and printing behave as they do there.
#include <cmath>
#include <ctime>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "text/jinja/interpreter.h"
#include "text/jinja/parser.h"
#include "text/jinja/pystr.h"

namespace vlm::jinja {
namespace {

using OptValues = std::vector<std::optional<Value>>;

// Python-style binding of positional and keyword arguments to `names`.
OptValues bind(const char* fname, const CallArgs& a, std::initializer_list<const char*> names) {
  std::vector<const char*> nm(names);
  OptValues out(nm.size());
  if (a.args.size() > nm.size())
    rt_fail(std::string(fname) + "() takes at most " + std::to_string(nm.size() + 1) + " arguments");
  for (size_t i = 0; i < a.args.size(); ++i) out[i] = a.args[i];
  for (const auto& kw : a.kwargs) {
    size_t i = 0;
    while (i < nm.size() && kw.first != nm[i]) ++i;
    if (i == nm.size()) rt_fail(std::string(fname) + "() got an unexpected keyword argument '" + kw.first + "'");
    if (out[i]) rt_fail(std::string(fname) + "() got multiple values for argument '" + kw.first + "'");
    out[i] = kw.second;
  }
  return out;
}

Value opt_or(const std::optional<Value>& v, Value d) { return v ? *v : std::move(d); }

void require_undefined_ok(const Value& v) {
  if (v.is_undefined()) rt_fail(v.undefined_message());
}

int64_t to_int_arg(const Value& v, const char* what) {
  if (v.is_int()) return v.as_int();
  rt_fail(std::string("'") + v.type_name() + "' object cannot be interpreted as an integer (" + what + ")");
}

// Python's int(str, base): optional sign, whitespace around, underscores between digits.
bool parse_py_int(const std::string& s, int base, int64_t& out) {
  std::string t = pystr::strip(s, std::nullopt, true, true);
  size_t i = 0;
  bool neg = false;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) neg = t[i++] == '-';
  if (base == 16 && t.size() > i + 1 && t[i] == '0' && (t[i + 1] | 0x20) == 'x') i += 2;
  if (base == 8 && t.size() > i + 1 && t[i] == '0' && (t[i + 1] | 0x20) == 'o') i += 2;
  if (base == 2 && t.size() > i + 1 && t[i] == '0' && (t[i + 1] | 0x20) == 'b') i += 2;
  if (i >= t.size()) return false;
  __int128 v = 0;
  bool prev_digit = false;
  for (; i < t.size(); ++i) {
    char c = t[i];
    if (c == '_') {
      if (!prev_digit || i + 1 >= t.size()) return false;
      prev_digit = false;
      continue;
    }
    int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
            : std::isalpha(static_cast<unsigned char>(c)) ? (c | 0x20) - 'a' + 10
                                                           : 99;
    if (d >= base) return false;
    v = v * base + d;
    if (v > static_cast<__int128>(INT64_MAX) + 1) return false;
    prev_digit = true;
  }
  if (!neg && v > INT64_MAX) return false;
  out = neg ? static_cast<int64_t>(-v) : static_cast<int64_t>(v);
  return true;
}

// Python's float(str).
bool parse_py_float(const std::string& s, double& out) {
  std::string t = pystr::strip(s, std::nullopt, true, true);
  std::string clean;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '_') {
      if (i == 0 || i + 1 >= t.size() || !std::isdigit(static_cast<unsigned char>(t[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(t[i + 1])))
        return false;
      continue;
    }
    clean.push_back(t[i]);
  }
  if (clean.empty()) return false;
  std::string low = pystr::lower(clean);
  std::string body = (low[0] == '+' || low[0] == '-') ? low.substr(1) : low;
  if (body == "inf" || body == "infinity" || body == "nan") {
    double v = body == "nan" ? NAN : INFINITY;
    out = low[0] == '-' ? -v : v;
    return true;
  }
  for (char c : body)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == '+' || c == '-')) return false;
  char* end = nullptr;
  out = std::strtod(clean.c_str(), &end);
  return end && *end == 0;
}

Value ignore_case(const Value& v) { return v.is_string() ? Value::string(pystr::lower(v.str())) : v; }

// jinja2's make_attrgetter: "a.b.0" walks getitem for each part (digit parts as ints).
Value attr_lookup(Interpreter& in, Value item, const Value& attribute) {
  if (attribute.is_none()) return item;
  if (!attribute.is_string()) return in.getitem(item, attribute);
  for (const auto& part : pystr::split(attribute.str(), std::string("."), -1)) {
    int64_t idx = 0;
    bool digits = !part.empty() && pystr::all_of(part, [](char32_t c) { return c >= '0' && c <= '9'; });
    if (digits && parse_py_int(part, 10, idx)) item = in.getitem(item, Value::integer(idx));
    else item = in.getitem(item, Value::string(part));
  }
  return item;
}

int compare_values(const Value& a, const Value& b) {
  bool ok = true;
  if (py_less(a, b, ok)) return -1;
  if (!ok) rt_fail("'<' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
  if (py_less(b, a, ok)) return 1;
  return 0;
}

// sorted(items, key=keys, reverse=reverse): stable, and reverse keeps equal items in their original order.
ValueList sorted_by(ValueList items, const ValueList& keys, bool reverse) {
  std::vector<size_t> idx(items.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t x, size_t y) {
    int c = compare_values(keys[x], keys[y]);
    return reverse ? c > 0 : c < 0;
  });
  ValueList out;
  out.reserve(items.size());
  for (size_t i : idx) out.push_back(std::move(items[i]));
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

// Python's round(x, n) for floats: correctly rounded, ties to even on the exact binary value.
double py_round(double x, int64_t ndigits) {
  if (!std::isfinite(x)) return x;
  if (ndigits == 0) return std::nearbyint(x);
  if (ndigits > 300) return x;
  if (ndigits < -308) return 0.0 * x;
  if (ndigits > 0) {
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(ndigits), x);  // glibc rounds the exact value
    return std::strtod(buf, nullptr);
  }
  double p = std::pow(10.0, static_cast<double>(-ndigits));
  double y = std::nearbyint(x / p) * p;
  return y;
}

using FilterFn = Value (*)(Interpreter&, const Value&, CallArgs&);
using TestFn = bool (*)(Interpreter&, const Value&, CallArgs&);

Value select_or_reject(Interpreter& in, const Value& v, CallArgs& a, bool lookup_attr, bool select) {
  size_t off = 0;
  Value attr;
  if (lookup_attr) {
    if (a.args.empty()) rt_fail("Missing parameter for attribute name");
    attr = a.args[0];
    off = 1;
  }
  std::string test;
  bool has_test = a.args.size() > off;
  if (has_test) {
    if (!a.args[off].is_string()) rt_fail("test name must be a string");
    test = a.args[off].str();
  }
  CallArgs rest;
  for (size_t i = off + 1; i < a.args.size(); ++i) rest.args.push_back(a.args[i]);
  rest.kwargs = a.kwargs;
  ValueList out;
  ValueList items = in.iterate(v);
  in.charge(static_cast<int64_t>(items.size()));
  for (auto& item : items) {
    Value x = lookup_attr ? attr_lookup(in, item, attr) : item;
    bool r;
    if (has_test) {
      CallArgs t = rest;
      r = in.call_test(test, x, t);
    } else {
      r = x.truthy();
    }
    if (r == select) out.push_back(std::move(item));
  }
  return Value::iter(std::move(out), "generator", false);
}

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = [] {
    std::unordered_map<std::string, FilterFn> t;
    t["abs"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("abs", a, {});
      require_undefined_ok(v);
      if (v.is_float()) return Value::floating(std::fabs(v.as_double()));
      if (v.is_int()) {
        if (v.as_int() == INT64_MIN) rt_fail("integer overflow");
        return Value::integer(v.as_int() < 0 ? -v.as_int() : v.as_int());
      }
      rt_fail("bad operand type for abs(): '" + v.type_name() + "'");
    };
    t["attr"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("attr", a, {"name"});
      if (!b[0]) rt_fail("attr() missing required argument 'name'");
      // Python getattr only: unlike `x.name`, no fallback to x["name"].
      std::string name = b[0]->to_str();
      Value out;
      if (v.is_object() ? v.obj()->get_attr(name, out) : lookup_method(v, name, out)) return out;
      (void)in;
      return Value::undefined(name, v.describe());
    };
    t["batch"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("batch", a, {"linecount", "fill_with"});
      if (!b[0]) rt_fail("batch() missing required argument 'linecount'");
      int64_t n = to_int_arg(*b[0], "linecount");
      ValueList out, cur;
      for (auto& item : in.iterate(v)) {
        if (static_cast<int64_t>(cur.size()) == n) {
          out.push_back(Value::list(std::move(cur)));
          cur.clear();
        }
        cur.push_back(item);
      }
      if (!cur.empty()) {
        if (b[1] && !b[1]->is_none()) {
          if (n > static_cast<int64_t>(cur.size())) in.charge(n - static_cast<int64_t>(cur.size()));
          while (static_cast<int64_t>(cur.size()) < n) cur.push_back(*b[1]);
        }
        out.push_back(Value::list(std::move(cur)));
      }
      return Value::iter(std::move(out), "generator", false);
    };
    t["capitalize"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("capitalize", a, {});
      return Value::string(pystr::capitalize(v.to_str()));
    };
    t["center"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("center", a, {"width"});
      const int64_t width = to_int_arg(opt_or(b[0], Value::integer(80)), "width");
      in.check_size(static_cast<size_t>(std::max<int64_t>(0, width)));
      return Value::string(pystr::pad(v.to_str(), width, ' ', '^'));
    };
    t["length"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("length", a, {});
      return Value::integer(static_cast<int64_t>(v.length()));
    };
    t["count"] = t["length"];
    t["default"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("default", a, {"default_value", "boolean"});
      Value d = opt_or(b[0], Value::string(""));
      bool boolean = b[1] && b[1]->truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return d;
      return v;
    };
    t["d"] = t["default"];
    t["dictsort"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("dictsort", a, {"case_sensitive", "by", "reverse"});
      bool cs = b[0] && b[0]->truthy();
      std::string by = b[1] ? b[1]->to_str() : "key";
      if (by != "key" && by != "value") rt_fail("You can only sort by either \"key\" or \"value\"");
      require_undefined_ok(v);
      if (!v.is_dict()) rt_fail("'" + v.type_name() + "' object has no attribute 'items'");
      ValueList items, keys;
      for (const auto& e : v.entries()) {
        items.push_back(Value::tuple({e.first, e.second}));
        const Value& k = by == "key" ? e.first : e.second;
        keys.push_back(cs ? k : ignore_case(k));
      }
      in.charge(static_cast<int64_t>(items.size()));
      return Value::list(sorted_by(std::move(items), keys, b[2] && b[2]->truthy()));
    };
    t["escape"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("escape", a, {});
      return Value::string(html_escape(v.to_str()));
    };
    t["e"] = t["escape"];
    t["forceescape"] = t["escape"];
    t["first"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      bind("first", a, {});
      ValueList items = in.iterate(v);
      if (items.empty()) return Value::undefined("", "", "No first item, sequence was empty.");
      return items.front();
    };
    t["last"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      bind("last", a, {});
      if (v.is_iter() && !v.iter_has_len()) rt_fail("'generator' object is not reversible");
      ValueList items = in.iterate(v);
      if (items.empty()) return Value::undefined("", "", "No last item, sequence was empty.");
      return items.back();
    };
    t["float"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("float", a, {"default"});
      Value d = opt_or(b[0], Value::floating(0.0));
      require_undefined_ok(v);
      if (v.is_number()) return Value::floating(v.as_double());
      double f = 0;
      if (v.is_string() && parse_py_float(v.str(), f)) return Value::floating(f);
      return d;
    };
    t["int"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("int", a, {"default", "base"});
      Value d = opt_or(b[0], Value::integer(0));
      int64_t base = b[1] ? to_int_arg(*b[1], "base") : 10;
      require_undefined_ok(v);
      if (v.is_int()) return Value::integer(v.as_int());
      if (v.is_float()) {
        double x = v.as_double();
        if (std::isnan(x)) rt_fail("cannot convert float NaN to integer");
        if (std::isinf(x)) rt_fail("cannot convert float infinity to integer");
        if (std::fabs(x) >= 9.2e18) rt_unsupported("integer beyond 64-bit range");
        return Value::integer(static_cast<int64_t>(std::trunc(x)));
      }
      if (v.is_string()) {
        int64_t i = 0;
        if (base >= 2 && base <= 36 && parse_py_int(v.str(), static_cast<int>(base), i)) return Value::integer(i);
        double f = 0;
        if (parse_py_float(v.str(), f)) {
          if (std::isnan(f)) rt_fail("cannot convert float NaN to integer");
          if (std::isinf(f)) rt_fail("cannot convert float infinity to integer");
          if (std::fabs(f) >= 9.2e18) rt_unsupported("integer beyond 64-bit range");
          return Value::integer(static_cast<int64_t>(std::trunc(f)));
        }
      }
      return d;
    };
    t["format"] = [](Interpreter&, const Value& v, CallArgs& a) {
      if (!a.args.empty() && !a.kwargs.empty()) rt_fail("can't handle positional and keyword arguments at the same time");
      if (!a.kwargs.empty()) {
        DictEntries d;
        for (auto& kw : a.kwargs) d.emplace_back(Value::string(kw.first), kw.second);
        return Value::string(printf_format(v.to_str(), Value::dict(std::move(d))));
      }
      return Value::string(printf_format(v.to_str(), Value::tuple(a.args)));
    };
    t["indent"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("indent", a, {"width", "first", "blank"});
      std::string ind;
      if (b[0] && b[0]->is_string()) {
        ind = b[0]->str();
      } else {
        const int64_t width = std::max<int64_t>(0, to_int_arg(opt_or(b[0], Value::integer(4)), "width"));
        in.check_size(static_cast<size_t>(width));  // before allocating: indent(10**15) is a resource error
        ind.assign(static_cast<size_t>(width), ' ');
      }
      bool first = b[1] && b[1]->truthy();
      bool blank = b[2] && b[2]->truthy();
      require_undefined_ok(v);
      std::string s = v.to_str() + "\n";
      std::vector<std::string> lines = pystr::splitlines(s, false);
      std::string rv;
      if (blank) {
        for (size_t i = 0; i < lines.size(); ++i) {
          rv += (i ? "\n" + ind : "") + lines[i];
          in.check_size(rv.size());
        }
      } else {
        rv = lines.empty() ? "" : lines[0];
        for (size_t i = 1; i < lines.size(); ++i) {
          rv += "\n" + (lines[i].empty() ? "" : ind + lines[i]);
          in.check_size(rv.size());
        }
      }
      if (first) rv = ind + rv;
      return Value::string(rv);
    };
    t["items"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("items", a, {});
      if (v.is_undefined()) return Value::iter({}, "generator", false);
      if (!v.is_dict()) rt_fail("Can only get item pairs from a mapping.");
      ValueList out;
      for (const auto& e : v.entries()) out.push_back(Value::tuple({e.first, e.second}));
      return Value::iter(std::move(out), "generator", false);
    };
    t["join"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("join", a, {"d", "attribute"});
      std::string sep = b[0] ? b[0]->to_str() : "";
      std::string out;
      bool first = true;
      for (const auto& item : in.iterate(v)) {
        if (!first) out += sep;
        first = false;
        out += (b[1] && !b[1]->is_none() ? attr_lookup(in, item, *b[1]) : item).to_str();
        in.check_size(out.size());
      }
      return Value::string(std::move(out));
    };
    t["list"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      bind("list", a, {});
      return Value::list(in.iterate(v));
    };
    t["lower"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("lower", a, {});
      return Value::string(pystr::lower(v.to_str()));
    };
    t["upper"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("upper", a, {});
      return Value::string(pystr::upper(v.to_str()));
    };
    t["map"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      ValueList out;
      ValueList items = in.iterate(v);
      in.charge(static_cast<int64_t>(items.size()));
      if (a.args.empty()) {
        auto b = bind("map", a, {"attribute", "default"});
        if (!b[0]) rt_fail("map requires a filter argument");
        for (auto& item : items) {
          Value x = attr_lookup(in, item, *b[0]);
          if (x.is_undefined() && b[1]) x = *b[1];
          out.push_back(std::move(x));
        }
      } else {
        if (!a.args[0].is_string()) rt_fail("map: filter name must be a string");
        std::string name = a.args[0].str();
        if (!is_known_filter(name)) rt_fail("No filter named '" + name + "'.");
        for (auto& item : items) {
          CallArgs fa;
          fa.args.assign(a.args.begin() + 1, a.args.end());
          fa.kwargs = a.kwargs;
          out.push_back(in.call_filter(name, item, fa));
        }
      }
      return Value::iter(std::move(out), "generator", false);
    };
    t["max"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("max", a, {"case_sensitive", "attribute"});
      bool cs = b[0] && b[0]->truthy();
      ValueList items = in.iterate(v);
      if (items.empty()) return Value::undefined("", "", "No aggregated item, sequence was empty.");
      size_t best = 0;
      Value best_key;
      for (size_t i = 0; i < items.size(); ++i) {
        Value k = b[1] && !b[1]->is_none() ? attr_lookup(in, items[i], *b[1]) : items[i];
        if (!cs) k = ignore_case(k);
        if (i == 0 || compare_values(k, best_key) > 0) {
          best = i;
          best_key = k;
        }
      }
      return items[best];
    };
    t["min"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("min", a, {"case_sensitive", "attribute"});
      bool cs = b[0] && b[0]->truthy();
      ValueList items = in.iterate(v);
      if (items.empty()) return Value::undefined("", "", "No aggregated item, sequence was empty.");
      size_t best = 0;
      Value best_key;
      for (size_t i = 0; i < items.size(); ++i) {
        Value k = b[1] && !b[1]->is_none() ? attr_lookup(in, items[i], *b[1]) : items[i];
        if (!cs) k = ignore_case(k);
        if (i == 0 || compare_values(k, best_key) < 0) {
          best = i;
          best_key = k;
        }
      }
      return items[best];
    };
    t["select"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_or_reject(in, v, a, false, true); };
    t["reject"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_or_reject(in, v, a, false, false); };
    t["selectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      return select_or_reject(in, v, a, true, true);
    };
    t["rejectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      return select_or_reject(in, v, a, true, false);
    };
    t["replace"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("replace", a, {"old", "new", "count"});
      if (!b[0] || !b[1]) rt_fail("replace() missing required arguments");
      int64_t count = b[2] && !b[2]->is_none() ? to_int_arg(*b[2], "count") : -1;
      std::string r = pystr::replace(v.to_str(), b[0]->to_str(), b[1]->to_str(), count);
      in.check_size(r.size());
      return Value::string(std::move(r));
    };
    t["reverse"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      bind("reverse", a, {});
      if (v.is_string()) {
        std::u32string u = pystr::decode(v.str());
        std::reverse(u.begin(), u.end());
        return Value::string(pystr::encode(u));
      }
      ValueList items = in.iterate(v);
      std::reverse(items.begin(), items.end());
      if (v.is_list()) return Value::iter(std::move(items), "list_reverseiterator", false);
      if (v.is_tuple() || v.is_dict() || (v.is_iter() && v.iter_has_len()))
        return Value::iter(std::move(items), v.is_dict() ? "dict_reversekeyiterator" : "reversed", false);
      return Value::list(std::move(items));
    };
    t["round"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("round", a, {"precision", "method"});
      int64_t prec = b[0] ? to_int_arg(*b[0], "precision") : 0;
      std::string method = b[1] ? b[1]->to_str() : "common";
      if (method != "common" && method != "ceil" && method != "floor")
        rt_fail("method must be common, ceil or floor");
      require_undefined_ok(v);
      if (!v.is_number()) rt_fail("type " + v.type_name() + " doesn't define __round__ method");
      if (method == "common") {
        if (v.is_int()) {
          if (prec >= 0) return Value::integer(v.as_int());
          if (prec <= -20) return Value::integer(0);  // 10**20 / 2 exceeds every 64-bit integer
          double p = std::pow(10.0, static_cast<double>(-prec));
          const double r = std::nearbyint(static_cast<double>(v.as_int()) / p) * p;
          if (std::fabs(r) >= 9.2e18) rt_unsupported("integer beyond 64-bit range");
          return Value::integer(static_cast<int64_t>(r));
        }
        return Value::floating(py_round(v.as_double(), prec));
      }
      double p = std::pow(10.0, static_cast<double>(prec));
      double x = v.as_double() * p;
      x = method == "ceil" ? std::ceil(x) : std::floor(x);
      return Value::floating(x / p);
    };
    t["safe"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("safe", a, {});
      return v.is_string() ? v : Value::string(v.to_str());
    };
    t["sort"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("sort", a, {"reverse", "case_sensitive", "attribute"});
      bool cs = b[1] && b[1]->truthy();
      ValueList items = in.iterate(v);
      in.charge(static_cast<int64_t>(items.size()));
      ValueList keys;
      std::vector<std::string> parts;
      if (b[2] && b[2]->is_string()) parts = pystr::split(b[2]->str(), std::string(","), -1);
      for (const auto& item : items) {
        if (parts.size() > 1) {
          ValueList multi;
          for (const auto& p : parts) {
            Value k = attr_lookup(in, item, Value::string(p));
            multi.push_back(cs ? k : ignore_case(k));
          }
          keys.push_back(Value::list(std::move(multi)));
        } else {
          Value k = b[2] && !b[2]->is_none() ? attr_lookup(in, item, *b[2]) : item;
          keys.push_back(cs ? k : ignore_case(k));
        }
      }
      return Value::list(sorted_by(std::move(items), keys, b[0] && b[0]->truthy()));
    };
    t["string"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("string", a, {});
      return Value::string(v.to_str());
    };
    t["sum"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("sum", a, {"attribute", "start"});
      Value acc = opt_or(b[1], Value::integer(0));
      for (const auto& item : in.iterate(v)) {
        Value x = b[0] && !b[0]->is_none() ? attr_lookup(in, item, *b[0]) : item;
        if (x.is_string() && acc.is_number()) rt_fail("unsupported operand type(s) for +: 'int' and 'str'");
        acc = binary_op("+", acc, x, in);
      }
      return acc;
    };
    t["title"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("title", a, {});
      // jinja2 splits at runs of [-\s({\[<] and capitalizes each piece (not Python's str.title).
      std::u32string u = pystr::decode(v.to_str());
      auto is_sep = [](char32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || pystr::is_space(c); };
      std::u32string out;
      size_t i = 0;
      while (i < u.size()) {
        size_t j = i;
        bool sep = is_sep(u[i]);
        while (j < u.size() && is_sep(u[j]) == sep) ++j;
        out.push_back(pystr::upper_char(u[i]));
        for (size_t k = i + 1; k < j; ++k) out.push_back(pystr::lower_char(u[k]));
        i = j;
      }
      return Value::string(pystr::encode(out));
    };
    t["tojson"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
      JsonDumpOptions o;
      o.ensure_ascii = b[0] && b[0]->truthy();
      if (b[1] && !b[1]->is_none()) {
        o.has_indent = true;
        if (b[1]->is_string()) o.indent_str = b[1]->str();
        else {
          const int64_t width = std::max<int64_t>(0, to_int_arg(*b[1], "indent"));
          in.check_size(static_cast<size_t>(width));
          o.indent_str.assign(static_cast<size_t>(width), ' ');
        }
        o.item_sep = ",";
      }
      if (b[2] && !b[2]->is_none()) {
        ValueList seps;
        if (b[2]->is_sequence()) seps = b[2]->items();
        if (seps.size() != 2 || !seps[0].is_string() || !seps[1].is_string())
          rt_fail("tojson: separators must be a pair of strings");
        o.item_sep = seps[0].str();
        o.key_sep = seps[1].str();
      }
      o.sort_keys = b[3] && b[3]->truthy();
      std::string out, err;
      if (!json_dumps(v, o, out, err)) rt_fail(err);
      return Value::string(std::move(out));
    };
    t["trim"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("trim", a, {"chars"});
      std::optional<std::string> chars;
      if (b[0] && !b[0]->is_none()) chars = b[0]->to_str();
      return Value::string(pystr::strip(v.to_str(), chars, true, true));
    };
    t["unique"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("unique", a, {"case_sensitive", "attribute"});
      bool cs = b[0] && b[0]->truthy();
      ValueList out, seen;
      for (const auto& item : in.iterate(v)) {
        Value k = b[1] && !b[1]->is_none() ? attr_lookup(in, item, *b[1]) : item;
        if (!cs) k = ignore_case(k);
        bool dup = false;
        for (const auto& s : seen)
          if (py_equal(s, k)) {
            dup = true;
            break;
          }
        in.charge(static_cast<int64_t>(seen.size()) / 64 + 1);
        if (!dup) {
          seen.push_back(k);
          out.push_back(item);
        }
      }
      return Value::iter(std::move(out), "generator", false);
    };
    t["wordcount"] = [](Interpreter&, const Value& v, CallArgs& a) {
      bind("wordcount", a, {});
      int64_t n = 0;
      bool in_word = false;
      for (char32_t c : pystr::decode(v.to_str())) {
        bool w = c == '_' || pystr::is_alnum(c);
        if (w && !in_word) ++n;
        in_word = w;
      }
      return Value::integer(n);
    };
    return t;
  }();
  return table;
}

bool test_number(const Value& v) { return v.is_number(); }

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = [] {
    std::unordered_map<std::string, TestFn> t;
    t["defined"] = [](Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); };
    t["undefined"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); };
    t["none"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_none(); };
    t["boolean"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); };
    t["true"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); };
    t["false"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); };
    t["integer"] = [](Interpreter&, const Value& v, CallArgs&) { return v.kind() == Kind::kInt; };
    t["float"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_float(); };
    t["number"] = [](Interpreter&, const Value& v, CallArgs&) { return test_number(v); };
    t["string"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string(); };
    t["mapping"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); };
    t["sequence"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict();
    };
    t["iterable"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict() || v.is_iter();
    };
    t["callable"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_undefined() || (v.is_object() && v.obj()->callable());
    };
    t["lower"] = [](Interpreter&, const Value& v, CallArgs&) { return pystr::is_lower(v.to_str()); };
    t["upper"] = [](Interpreter&, const Value& v, CallArgs&) { return pystr::is_upper(v.to_str()); };
    t["escaped"] = [](Interpreter&, const Value&, CallArgs&) { return false; };
    t["odd"] = [](Interpreter& in, const Value& v, CallArgs&) {
      return py_equal(binary_op("%", v, Value::integer(2), in), Value::integer(1));
    };
    t["even"] = [](Interpreter& in, const Value& v, CallArgs&) {
      return py_equal(binary_op("%", v, Value::integer(2), in), Value::integer(0));
    };
    t["divisibleby"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      auto b = bind("divisibleby", a, {"num"});
      if (!b[0]) rt_fail("divisibleby() missing required argument 'num'");
      return py_equal(binary_op("%", v, *b[0], in), Value::integer(0));
    };
    t["in"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("in", a, {"seq"});
      if (!b[0]) rt_fail("in() missing required argument 'seq'");
      return value_in(v, *b[0]);
    };
    t["sameas"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("sameas", a, {"other"});
      if (!b[0]) rt_fail("sameas() missing required argument 'other'");
      const Value& o = *b[0];
      if (v.kind() != o.kind()) return false;
      if (v.is_none() || v.is_bool() || v.is_undefined()) return py_equal(v, o);
      if (v.is_object()) return v.obj() == o.obj();
      return v.kind() == Kind::kInt && v.as_int() == o.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    };
    t["eq"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("eq", a, {"other"});
      return py_equal(v, opt_or(b[0], Value()));
    };
    t["=="] = t["eq"];
    t["equalto"] = t["eq"];
    t["ne"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("ne", a, {"other"});
      return !py_equal(v, opt_or(b[0], Value()));
    };
    t["!="] = t["ne"];
    t["lt"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("lt", a, {"other"});
      return compare_values(v, opt_or(b[0], Value())) < 0;
    };
    t["<"] = t["lt"];
    t["lessthan"] = t["lt"];
    t["le"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("le", a, {"other"});
      return compare_values(v, opt_or(b[0], Value())) <= 0;
    };
    t["<="] = t["le"];
    t["gt"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("gt", a, {"other"});
      return compare_values(v, opt_or(b[0], Value())) > 0;
    };
    t[">"] = t["gt"];
    t["greaterthan"] = t["gt"];
    t["ge"] = [](Interpreter&, const Value& v, CallArgs& a) {
      auto b = bind("ge", a, {"other"});
      return compare_values(v, opt_or(b[0], Value())) >= 0;
    };
    t[">="] = t["ge"];
    t["filter"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string() && is_known_filter(v.str()); };
    t["test"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string() && is_known_test(v.str()); };
    return t;
  }();
  return table;
}

// jinja2 3.1's filter and test names: the parser accepts exactly these (an unknown name fails at compile time).
const std::unordered_set<std::string> kJinjaFilters = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "join", "last",
    "length", "list", "lower", "items", "map", "min", "max", "pprint", "random", "reject", "rejectattr", "replace",
    "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title",
    "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", "tojson"};
const std::unordered_set<std::string> kJinjaTests = {
    "odd", "even", "divisibleby", "defined", "undefined", "filter", "test", "none", "boolean", "false", "true",
    "integer", "float", "lower", "upper", "string", "mapping", "number", "sequence", "iterable", "callable",
    "sameas", "escaped", "in", "==", "eq", "equalto", "!=", "ne", ">", "gt", "greaterthan", "ge", ">=", "<", "lt",
    "lessthan", "<=", "le"};

std::string strftime_local(const std::string& fmt, int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tmv {};
  localtime_r(&tt, &tmv);
  if (fmt.empty()) return "";
  std::vector<char> buf(256 + fmt.size() * 16);
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tmv);
  if (n == 0) return "";
  return std::string(buf.data(), n);
}

}  // namespace

bool is_known_filter(const std::string& name) { return kJinjaFilters.count(name) > 0; }
bool is_known_test(const std::string& name) { return kJinjaTests.count(name) > 0; }

Value Interpreter::call_filter(const std::string& name, const Value& input, CallArgs& args) {
  const auto& t = filters();
  auto it = t.find(name);
  if (it == t.end()) {
    if (!is_known_filter(name)) rt_fail("No filter named '" + name + "'.");
    rt_unsupported("the jinja2 filter '" + name + "' is not supported by vlmcheck's template engine");
  }
  return it->second(*this, input, args);
}

bool Interpreter::call_test(const std::string& name, const Value& input, CallArgs& args) {
  const auto& t = tests();
  auto it = t.find(name);
  if (it == t.end()) rt_fail("No test named '" + name + "'.");
  return it->second(*this, input, args);
}

bool value_in(const Value& needle, const Value& hay) {
  switch (hay.kind()) {
    case Kind::kString:
      if (!needle.is_string())
        rt_fail("'in <string>' requires string as left operand, not " + needle.type_name());
      return hay.str().find(needle.str()) != std::string::npos;
    case Kind::kList:
    case Kind::kTuple:
    case Kind::kIter:
      for (const auto& x : hay.items())
        if (py_equal(x, needle)) return true;
      return false;
    case Kind::kDict:
      if (needle.is_list() || needle.is_dict()) rt_fail("unhashable type: '" + needle.type_name() + "'");
      return hay.dict_get(needle) != nullptr;
    case Kind::kUndefined: return false;
    default: rt_fail("argument of type '" + hay.type_name() + "' is not iterable");
  }
}

namespace {

int64_t checked(__int128 v) {
  if (v > INT64_MAX || v < INT64_MIN) rt_unsupported("integer result beyond 64-bit range");
  return static_cast<int64_t>(v);
}

Value repeat(const Value& seq, int64_t n, Interpreter& in) {
  if (n <= 0) return seq.is_string() ? Value::string("") : seq.is_tuple() ? Value::tuple({}) : Value::list({});
  if (seq.is_string()) {
    // Saturating: 'abcd' * 2**62 must hit the limit, not wrap around to a small size.
    const size_t len = seq.str().size();
    in.check_size(len != 0 && static_cast<uint64_t>(n) > SIZE_MAX / len ? SIZE_MAX : len * static_cast<size_t>(n));
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.str();
    return Value::string(std::move(out));
  }
  const int64_t len = static_cast<int64_t>(seq.items().size());
  in.charge(len != 0 && n > INT64_MAX / len ? INT64_MAX : len * n);
  ValueList out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return seq.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

[[noreturn]] void bad_operands(const std::string& op, const Value& a, const Value& b) {
  rt_fail("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b, Interpreter& in) {
  if (a.is_undefined()) rt_fail(a.undefined_message());
  if (b.is_undefined()) rt_fail(b.undefined_message());
  bool nums = a.is_number() && b.is_number();
  bool flt = nums && (a.is_float() || b.is_float());
  if (op == "+") {
    if (nums) return flt ? Value::floating(a.as_double() + b.as_double())
                         : Value::integer(checked(static_cast<__int128>(a.as_int()) + b.as_int()));
    if (a.is_string() && b.is_string()) {
      in.check_size(a.str().size() + b.str().size());
      return Value::string(a.str() + b.str());
    }
    if ((a.is_list() && b.is_list()) || (a.is_tuple() && b.is_tuple())) {
      ValueList out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      in.charge(static_cast<int64_t>(out.size()));
      return a.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
    }
    if (a.is_string() || b.is_string())
      rt_fail(a.is_string() ? "can only concatenate str (not \"" + b.type_name() + "\") to str"
                            : "unsupported operand type(s) for +: '" + a.type_name() + "' and 'str'");
    bad_operands("+", a, b);
  }
  if (op == "-") {
    if (!nums) bad_operands("-", a, b);
    return flt ? Value::floating(a.as_double() - b.as_double())
               : Value::integer(checked(static_cast<__int128>(a.as_int()) - b.as_int()));
  }
  if (op == "*") {
    if (nums) return flt ? Value::floating(a.as_double() * b.as_double())
                         : Value::integer(checked(static_cast<__int128>(a.as_int()) * b.as_int()));
    if ((a.is_string() || a.is_sequence()) && b.is_int()) return repeat(a, b.as_int(), in);
    if ((b.is_string() || b.is_sequence()) && a.is_int()) return repeat(b, a.as_int(), in);
    bad_operands("*", a, b);
  }
  if (op == "/") {
    if (!nums) bad_operands("/", a, b);
    if (b.as_double() == 0) rt_fail("division by zero");
    return Value::floating(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (op == "%" && a.is_string()) return Value::string(printf_format(a.str(), b));
    if (!nums) bad_operands(op, a, b);
    if (!flt) {
      int64_t x = a.as_int(), y = b.as_int();
      if (y == 0) rt_fail(op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
      if (x == INT64_MIN && y == -1) rt_unsupported("integer result beyond 64-bit range");
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        q -= 1;
        r += y;
      }
      return Value::integer(op == "//" ? q : r);
    }
    double x = a.as_double(), y = b.as_double();
    if (y == 0) rt_fail("float division by zero");
    // CPython's float_divmod.
    double mod = std::fmod(x, y);
    double div = (x - mod) / y;
    if (mod != 0) {
      if ((y < 0) != (mod < 0)) {
        mod += y;
        div -= 1.0;
      }
    } else {
      mod = std::copysign(0.0, y);
    }
    double floordiv;
    if (div != 0) {
      floordiv = std::floor(div);
      if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
      floordiv = std::copysign(0.0, x / y);
    }
    return Value::floating(op == "//" ? floordiv : mod);
  }
  if (op == "**") {
    if (!nums) bad_operands("** or pow()", a, b);
    if (!flt && b.as_int() >= 0) {
      __int128 r = 1, base = a.as_int();
      int64_t e = b.as_int();
      while (e > 0) {
        if (e & 1) r = checked(r * base);
        e >>= 1;
        if (e) base = checked(base * base);
      }
      return Value::integer(static_cast<int64_t>(r));
    }
    if (a.as_double() == 0 && b.as_double() < 0) rt_fail("0.0 cannot be raised to a negative power");
    double r = std::pow(a.as_double(), b.as_double());
    if (std::isnan(r) && !std::isnan(a.as_double()) && !std::isnan(b.as_double()))
      rt_unsupported("complex result of ** is not supported");
    return Value::floating(r);
  }
  rt_fail("unknown operator " + op);
}

Value slice_value(const Value& v, const Value& start, const Value& stop, const Value& step) {
  auto idx = [](const Value& x, const char* what) -> std::optional<int64_t> {
    if (x.is_none()) return std::nullopt;
    if (!x.is_int()) rt_fail(std::string("slice indices must be integers or None (") + what + ")");
    return x.as_int();
  };
  std::optional<int64_t> s0 = idx(start, "start"), s1 = idx(stop, "stop"), st = idx(step, "step");
  int64_t k = st.value_or(1);
  if (k == 0) rt_fail("slice step cannot be zero");
  std::u32string chars;
  const ValueList* items = nullptr;
  int64_t n;
  if (v.is_string()) {
    chars = pystr::decode(v.str());
    n = static_cast<int64_t>(chars.size());
  } else if (v.is_sequence()) {
    items = &v.items();
    n = static_cast<int64_t>(items->size());
  } else {
    rt_fail("'" + v.type_name() + "' object is not subscriptable");
  }
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> x, int64_t dflt) {
    if (!x) return dflt;
    int64_t i = *x;
    if (i < 0) {
      i += n;
      if (i < 0) i = k < 0 ? -1 : 0;
    } else if (i >= n) {
      i = k < 0 ? n - 1 : n;
    }
    return i;
  };
  int64_t lo = adjust(s0, k < 0 ? n - 1 : 0);
  int64_t hi = adjust(s1, k < 0 ? -1 : n);
  std::u32string out_chars;
  ValueList out_items;
  for (int64_t i = lo; k > 0 ? i < hi : i > hi; i += k) {
    if (items) out_items.push_back((*items)[static_cast<size_t>(i)]);
    else out_chars.push_back(chars[static_cast<size_t>(i)]);
  }
  if (!items) return Value::string(pystr::encode(out_chars));
  return v.is_tuple() ? Value::tuple(std::move(out_items)) : Value::list(std::move(out_items));
}

ScopePtr make_global_scope() {
  auto g = std::make_shared<Scope>();
  auto fn = [&](const char* name, BuiltinFunction::Fn f) {
    g->set(name, Value::object(std::make_shared<BuiltinFunction>(name, std::move(f))));
  };
  fn("range", [](Interpreter& in, CallArgs& a) {
    if (!a.kwargs.empty()) rt_fail("range() takes no keyword arguments");
    if (a.args.empty() || a.args.size() > 3) rt_fail("range expected 1 to 3 arguments");
    int64_t start = 0, stop, step = 1;
    if (a.args.size() == 1) {
      stop = to_int_arg(a.args[0], "range");
    } else {
      start = to_int_arg(a.args[0], "range");
      stop = to_int_arg(a.args[1], "range");
      if (a.args.size() == 3) step = to_int_arg(a.args[2], "range");
    }
    if (step == 0) rt_fail("range() arg 3 must not be zero");
    __int128 count = step > 0 ? (stop > start ? (static_cast<__int128>(stop) - start + step - 1) / step : 0)
                              : (start > stop ? (static_cast<__int128>(start) - stop - step - 1) / -static_cast<__int128>(step) : 0);
    // The sandbox's MAX_RANGE.
    if (count > 100000) rt_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    in.charge(static_cast<int64_t>(count));
    ValueList out;
    // Each value lies between start and stop, so it fits; the product may not (range(-2**63, 2**63-1, 2**62)).
    for (int64_t i = 0; i < static_cast<int64_t>(count); ++i)
      out.push_back(Value::integer(static_cast<int64_t>(start + static_cast<__int128>(i) * step)));
    return Value::list(std::move(out));
  });
  fn("dict", [](Interpreter& in, CallArgs& a) {
    DictEntries d;
    auto put = [&](Value k, Value v) {
      for (auto& e : d)
        if (py_equal(e.first, k)) {
          e.second = std::move(v);
          return;
        }
      d.emplace_back(std::move(k), std::move(v));
    };
    if (a.args.size() > 1) rt_fail("dict expected at most 1 argument");
    if (a.args.size() == 1) {
      const Value& src = a.args[0];
      if (src.is_dict()) {
        for (const auto& e : src.entries()) put(e.first, e.second);
      } else {
        for (const auto& pair : in.iterate(src)) {
          ValueList kv = in.iterate(pair);
          if (kv.size() != 2) rt_fail("dictionary update sequence element has wrong length");
          put(kv[0], kv[1]);
        }
      }
    }
    for (auto& kw : a.kwargs) put(Value::string(kw.first), kw.second);
    return Value::dict(std::move(d));
  });
  fn("namespace", [](Interpreter& in, CallArgs& a) {
    auto ns = std::make_shared<Namespace>();
    in.on_release([ns] { ns->attrs.clear(); });
    if (a.args.size() > 1) rt_fail("namespace expected at most 1 positional argument");
    if (a.args.size() == 1) {
      const Value& src = a.args[0];
      if (src.is_dict()) {
        for (const auto& e : src.entries()) ns->attrs.push_back(e);
      } else {
        for (const auto& pair : in.iterate(src)) {
          ValueList kv = in.iterate(pair);
          if (kv.size() != 2) rt_fail("dictionary update sequence element has wrong length");
          ns->attrs.emplace_back(kv[0], kv[1]);
        }
      }
    }
    for (auto& kw : a.kwargs) ns->set_attr(kw.first, kw.second);
    return Value::object(ns);
  });
  fn("raise_exception", [](Interpreter&, CallArgs& a) -> Value {
    std::string msg = a.args.empty() ? "" : a.args[0].to_str();
    throw RuntimeFail{msg, true, false, false};
  });
  fn("strftime_now", [](Interpreter& in, CallArgs& a) {
    if (a.args.size() != 1 || !a.args[0].is_string()) rt_fail("strftime_now() takes one format string");
    int64_t now = in.options().now_unix ? *in.options().now_unix : static_cast<int64_t>(std::time(nullptr));
    return Value::string(strftime_local(a.args[0].str(), now));
  });
  fn("joiner", [](Interpreter&, CallArgs& a) {
    std::string sep = a.args.empty() ? ", " : a.args[0].to_str();
    auto used = std::make_shared<bool>(false);
    return Value::object(std::make_shared<BuiltinFunction>("joiner", [sep, used](Interpreter&, CallArgs&) {
      if (!*used) {
        *used = true;
        return Value::string("");
      }
      return Value::string(sep);
    }));
  });
  return g;
}

}  // namespace vlm::jinja
