// Typed access to a parsed tokenizer.json (simdjson DOM) with errors that name the file and the
// JSON path, e.g. "tokenizer.json: pre_tokenizer.pretokenizers[0].behavior: expected a string".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <simdjson.h>

#include "core/error.h"

namespace vlm::tok {

using JsonElement = simdjson::dom::element;

// Where we are in the file, for error messages.
struct JsonPath {
  const std::string* file;
  std::string path;
  JsonPath child(std::string_view key) const {
    return {file, path.empty() ? std::string(key) : path + "." + std::string(key)};
  }
  JsonPath index(size_t i) const { return {file, path + "[" + std::to_string(i) + "]"}; }
};

[[noreturn]] inline void json_fail(const JsonPath& at, std::string_view what) {
  throw_error(ErrorKind::kFormat, "{}: {}: {}", *at.file, at.path.empty() ? "<root>" : at.path, what);
}

inline bool json_is_null(JsonElement e) { return e.type() == simdjson::dom::element_type::NULL_VALUE; }

// Member lookup; nullopt when absent (or null when `null_is_absent`).
inline std::optional<JsonElement> json_member(JsonElement obj, std::string_view key, bool null_is_absent = true) {
  simdjson::dom::object o;
  if (obj.get_object().get(o)) return std::nullopt;
  JsonElement v;
  if (o.at_key(key).get(v)) return std::nullopt;
  if (null_is_absent && json_is_null(v)) return std::nullopt;
  return v;
}

inline JsonElement json_require(JsonElement obj, std::string_view key, const JsonPath& at) {
  auto v = json_member(obj, key);
  if (!v) json_fail(at.child(key), "required field is missing");
  return *v;
}

inline std::string_view json_as_string(JsonElement e, const JsonPath& at) {
  std::string_view s;
  if (e.get_string().get(s)) json_fail(at, "expected a string");
  return s;
}
inline bool json_as_bool(JsonElement e, const JsonPath& at) {
  bool b;
  if (e.get_bool().get(b)) json_fail(at, "expected true or false");
  return b;
}
inline int64_t json_as_int(JsonElement e, const JsonPath& at) {
  int64_t v;
  if (e.get_int64().get(v)) {
    uint64_t u;
    if (e.get_uint64().get(u) || u > uint64_t(INT64_MAX)) json_fail(at, "expected an integer");
    v = static_cast<int64_t>(u);
  }
  return v;
}
inline double json_as_double(JsonElement e, const JsonPath& at) {
  double d;
  if (e.get_double().get(d)) {
    int64_t i;
    if (e.get_int64().get(i)) json_fail(at, "expected a number");
    d = static_cast<double>(i);
  }
  return d;
}

inline std::string json_string_or(JsonElement obj, std::string_view key, const JsonPath& at, std::string_view def) {
  auto v = json_member(obj, key);
  return v ? std::string(json_as_string(*v, at.child(key))) : std::string(def);
}
inline bool json_bool_or(JsonElement obj, std::string_view key, const JsonPath& at, bool def) {
  auto v = json_member(obj, key);
  return v ? json_as_bool(*v, at.child(key)) : def;
}
inline int64_t json_int_or(JsonElement obj, std::string_view key, const JsonPath& at, int64_t def) {
  auto v = json_member(obj, key);
  return v ? json_as_int(*v, at.child(key)) : def;
}
inline std::string json_type_of(JsonElement obj, const JsonPath& at) {
  if (!obj.is_object()) json_fail(at, "expected an object with a \"type\"");
  return std::string(json_as_string(json_require(obj, "type", at), at.child("type")));
}

}  // namespace vlm::tok
