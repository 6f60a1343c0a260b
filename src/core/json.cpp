// JSON parsing with file-naming errors.
#include "core/json.h"

#include "core/error.h"
#include "core/mapped_file.h"

namespace vlm {

Json parse_json(const std::string& text, const std::string& what) {
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw_error(ErrorKind::kFormat, "{}: invalid JSON at byte {}: {}", what, e.byte, e.what());
  }
}

Json read_json_file(const std::string& path, size_t max_bytes) {
  return parse_json(read_file_to_string(path, max_bytes), path);
}

const Json* json_find(const Json& obj, const std::string& key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end()) return nullptr;
  return &*it;
}

std::optional<int64_t> json_int(const Json& obj, const std::string& key, const std::string& what) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_number_integer() || v->is_number_unsigned()) return v->get<int64_t>();
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
  }
  throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be an integer, got {}", what, key, v->dump());
}

std::optional<double> json_number(const Json& obj, const std::string& key, const std::string& what) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_number()) return v->get<double>();
  throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be a number, got {}", what, key, v->dump());
}

std::optional<std::string> json_string(const Json& obj, const std::string& key, const std::string& what) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be a string, got {}", what, key, v->dump());
}

std::optional<bool> json_bool(const Json& obj, const std::string& key, const std::string& what) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_boolean()) return v->get<bool>();
  throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be true/false, got {}", what, key, v->dump());
}

}  // namespace vlm
