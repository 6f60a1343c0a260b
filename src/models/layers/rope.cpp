// RoPE inverse frequencies as transformers' modeling_rope_utils computes them, from either config layout.
#include "models/layers/rope.h"

#include <cmath>

#include "core/error.h"

namespace vlm {

namespace {

const Json* object_or_null(const Json& obj, const char* key) {
  const Json* j = json_find(obj, key);
  return (j && j->is_object()) ? j : nullptr;
}

double number_or(const Json& obj, const char* key, double fallback, const std::string& what) {
  std::optional<double> v = json_number(obj, key, what);
  return v ? *v : fallback;
}

}  // namespace

RopeTable parse_rope(const Json& text, int64_t head_dim, const RopeOverrides& ov, const std::string& what) {
  RopeTable r;
  // The dict holding rope_type / factor / ...: rope_parameters (possibly per layer type) or rope_scaling.
  const Json* params = object_or_null(text, "rope_parameters");
  std::string where = "rope_parameters";
  if (params && ov.layer_type && !json_find(*params, "rope_type") && !json_find(*params, "rope_theta")) {
    params = object_or_null(*params, ov.layer_type->c_str());
    where = "rope_parameters." + *ov.layer_type;
    VLM_CHECK(params, ErrorKind::kFormat, "{}: rope_parameters has no entry for layer type '{}'", what,
              *ov.layer_type);
  }
  const Json* scaling = nullptr;
  if (!params) {
    r.theta = number_or(text, "rope_theta", 10000.0, what);
    if (!ov.ignore_scaling) scaling = object_or_null(text, "rope_scaling");
    where = "rope_scaling";
  } else {
    r.theta = number_or(*params, "rope_theta", number_or(text, "rope_theta", 10000.0, what), what);
    scaling = params;
  }
  if (ov.theta) r.theta = *ov.theta;

  double partial = number_or(text, "partial_rotary_factor", 1.0, what);
  if (params) partial = number_or(*params, "partial_rotary_factor", partial, what);
  r.rotary_dim = static_cast<int64_t>(static_cast<double>(head_dim) * partial);
  r.rotary_dim -= r.rotary_dim % 2;
  VLM_CHECK(r.rotary_dim > 0 && r.rotary_dim <= head_dim, ErrorKind::kFormat,
            "{}: partial_rotary_factor {} gives rotary dim {} for head_dim {}", what, partial, r.rotary_dim, head_dim);

  if (scaling) {
    std::optional<std::string> t = json_string(*scaling, "rope_type", what);
    if (!t) t = json_string(*scaling, "type", what);
    if (t) r.rope_type = *t;
    if (const Json* sec = json_find(*scaling, "mrope_section"); sec && sec->is_array()) {
      for (const Json& s : *sec) r.mrope_section.push_back(s.get<int>());
    }
  }
  // Qwen2-VL's older configs say {"type": "mrope"}; transformers treats it as default frequencies.
  if (r.rope_type == "mrope") r.rope_type = "default";

  // inv_freq[i] = theta^(-2i / rotary_dim), as HF's _compute_default_rope_parameters.
  const int64_t half = r.rotary_dim / 2;
  r.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    r.inv_freq[i] = static_cast<float>(1.0 / std::pow(r.theta, static_cast<double>(2 * i) / r.rotary_dim));
  }
  if (r.rope_type == "default") return r;
  if (r.rope_type == "linear") {
    // Positions divided by factor == frequencies divided by factor.
    double factor = number_or(*scaling, "factor", 0.0, what);
    VLM_CHECK(factor > 0, ErrorKind::kFormat, "{}: {} linear rope needs factor > 0", what, where);
    for (float& f : r.inv_freq) f = static_cast<float>(f / factor);
    return r;
  }
  if (r.rope_type == "llama3") {
    // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
    double factor = number_or(*scaling, "factor", 0.0, what);
    double low = number_or(*scaling, "low_freq_factor", 1.0, what);
    double high = number_or(*scaling, "high_freq_factor", 4.0, what);
    double old_ctx = number_or(*scaling, "original_max_position_embeddings", 8192.0, what);
    VLM_CHECK(factor > 0 && high > low, ErrorKind::kFormat,
              "{}: {} llama3 rope needs factor > 0 and high_freq_factor > low_freq_factor", what, where);
    const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    for (float& f : r.inv_freq) {
      const double inv = f;
      const double wavelen = 2.0 * M_PI / inv;
      double out = wavelen > low_wavelen ? inv / factor : inv;
      if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
        double smooth = (old_ctx / wavelen - low) / (high - low);
        out = (1.0 - smooth) * out / factor + smooth * out;
      }
      f = static_cast<float>(out);
    }
    return r;
  }
  throw_error(ErrorKind::kUnsupported, "{}: {}.rope_type '{}' is not supported (supported: default, linear, llama3)",
              what, where, r.rope_type);
}

}  // namespace vlm
