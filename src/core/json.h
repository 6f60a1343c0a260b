// JSON helpers on nlohmann::ordered_json (key order follows the file, as Python dicts do; Jinja's
// tojson and our JSONL rely on that). Parse errors name the file and the byte offset.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace vlm {

using Json = nlohmann::ordered_json;

// Parses text; `what` names the source in errors (usually the path). Throws Error(kFormat).
Json parse_json(const std::string& text, const std::string& what);
// Reads and parses a file (bounded size). Throws Error(kNotFound/kIo/kFormat/kResource).
Json read_json_file(const std::string& path, size_t max_bytes = size_t{64} << 20);

// Typed field access with errors naming `what` and the key.
const Json* json_find(const Json& obj, const std::string& key);  // null if absent or obj not an object
std::optional<int64_t> json_int(const Json& obj, const std::string& key, const std::string& what);
std::optional<double> json_number(const Json& obj, const std::string& key, const std::string& what);
std::optional<std::string> json_string(const Json& obj, const std::string& key, const std::string& what);
std::optional<bool> json_bool(const Json& obj, const std::string& key, const std::string& what);

}  // namespace vlm
