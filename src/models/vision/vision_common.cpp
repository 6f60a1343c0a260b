// Config helpers for the vision towers.
#include "models/vision/vision_common.h"

#include "core/error.h"

namespace vlm::vision {

int64_t config_int(const Json& cfg, const char* key, int64_t fallback, const std::string& what) {
  std::optional<int64_t> v = json_int(cfg, key, what);
  if (!v) return fallback;
  VLM_CHECK(*v > 0, ErrorKind::kFormat, "{}: field '{}' must be positive, got {}", what, key, *v);
  return *v;
}

int64_t config_int_any(const Json& cfg, std::initializer_list<const char*> keys, int64_t fallback,
                       const std::string& what) {
  for (const char* k : keys) {
    const Json* v = json_find(cfg, k);
    if (v && !v->is_null()) return config_int(cfg, k, fallback, what);
  }
  return fallback;
}

double config_number(const Json& cfg, const char* key, double fallback, const std::string& what) {
  std::optional<double> v = json_number(cfg, key, what);
  return v ? *v : fallback;
}

}  // namespace vlm::vision
