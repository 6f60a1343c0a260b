// RoPE inverse frequencies as transformers' modeling_rope_utils computes them, from either config layout.
#include "models/layers/rope.h"

#include <algorithm>
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

std::vector<float> default_inv_freq(double theta, int64_t rotary_dim) {
  std::vector<float> f(static_cast<size_t>(rotary_dim / 2));
  for (int64_t i = 0; i < rotary_dim / 2; ++i) {
    f[i] = static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * i) / rotary_dim));
  }
  return f;
}

}  // namespace

const float* RopeTable::inv_freq_for(int64_t max_position, std::vector<float>& scratch) const {
  const int64_t len = max_position + 1;
  if (!long_inv_freq.empty() && len > original_max_positions) return long_inv_freq.data();
  if (dynamic_factor > 0 && len > dynamic_max_positions) {
    const double d = static_cast<double>(rotary_dim);
    const double t = theta * std::pow(dynamic_factor * static_cast<double>(len) / dynamic_max_positions -
                                          (dynamic_factor - 1.0),
                                      d / (d - 2.0));
    scratch = default_inv_freq(t, rotary_dim);
    return scratch.data();
  }
  return inv_freq.data();
}

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
  // original_max_position_embeddings: in the rope dict (transformers 5), else top level (Phi-3), else
  // max_position_embeddings.
  auto original_max = [&](const Json& dict) {
    return number_or(dict, "original_max_position_embeddings",
                     number_or(text, "original_max_position_embeddings",
                               number_or(text, "max_position_embeddings", 0.0, what), what),
                     what);
  };
  // Qwen2-VL's older configs say {"type": "mrope"}; transformers treats it as default frequencies.
  if (r.rope_type == "mrope") r.rope_type = "default";

  // inv_freq[i] = theta^(-2i / rotary_dim), as HF's _compute_default_rope_parameters.
  const int64_t half = r.rotary_dim / 2;
  r.inv_freq = default_inv_freq(r.theta, r.rotary_dim);
  if (r.rope_type == "default") return r;
  if (r.rope_type == "dynamic") {
    r.dynamic_factor = number_or(*scaling, "factor", 0.0, what);
    r.dynamic_max_positions = static_cast<int64_t>(number_or(text, "max_position_embeddings", 0.0, what));
    VLM_CHECK(r.dynamic_factor >= 1.0 && r.dynamic_max_positions > 0 && r.rotary_dim > 2, ErrorKind::kFormat,
              "{}: dynamic rope needs {}.factor >= 1 and max_position_embeddings", what, where);
    return r;
  }
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
  if (r.rope_type == "yarn") {
    // YaRN: per frequency, a ramp between extrapolation (unchanged) and interpolation (divided by factor)
    // over the dims whose rotation count at the original length lies between beta_slow and beta_fast;
    // cos/sin scaled by attention_factor (default 0.1 ln(factor) + 1, or the mscale ratio).
    const double max_pos = number_or(text, "max_position_embeddings", 0.0, what);
    const double orig = original_max(*scaling);
    VLM_CHECK(orig > 1, ErrorKind::kFormat, "{}: yarn needs original_max_position_embeddings", what);
    const double factor = number_or(*scaling, "factor", max_pos / orig, what);
    VLM_CHECK(factor > 0, ErrorKind::kFormat, "{}: {} yarn needs factor > 0", what, where);
    auto get_mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
    std::optional<double> af = json_number(*scaling, "attention_factor", what);
    const double mscale = number_or(*scaling, "mscale", 0.0, what);
    const double mscale_all = number_or(*scaling, "mscale_all_dim", 0.0, what);
    double attention = af ? *af
                          : (mscale != 0 && mscale_all != 0 ? get_mscale(factor, mscale) / get_mscale(factor, mscale_all)
                                                            : get_mscale(factor, 1.0));
    double beta_fast = number_or(*scaling, "beta_fast", 0.0, what), beta_slow = number_or(*scaling, "beta_slow", 0.0, what);
    if (beta_fast == 0) beta_fast = 32;
    if (beta_slow == 0) beta_slow = 1;
    const bool truncate = json_bool(*scaling, "truncate", what).value_or(true);
    const double d = static_cast<double>(r.rotary_dim);
    auto correction_dim = [&](double rotations) {
      return d * std::log(orig / (rotations * 2.0 * M_PI)) / (2.0 * std::log(r.theta));
    };
    double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
    if (truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0);
    high = std::min(high, d - 1);
    if (low == high) high += 0.001;  // as transformers: avoid a zero-width ramp
    for (int64_t i = 0; i < half; ++i) {
      const double extrap = r.inv_freq[i];  // theta^(-2i/d)
      const double interp = extrap / factor;
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      const double extrap_weight = 1.0 - ramp;
      r.inv_freq[i] = static_cast<float>(interp * (1.0 - extrap_weight) + extrap * extrap_weight);
    }
    r.attention_scaling = static_cast<float>(attention);
    return r;
  }
  if (r.rope_type == "longrope" || r.rope_type == "su") {
    // inv_freq = 1 / (ext_factor[i] * theta^(2i/d)) with the short or long factors; cos/sin scaled by
    // attention_factor, by default sqrt(1 + ln(s) / ln(original_max)) where s = max_position_embeddings /
    // original_max_position_embeddings (Phi-3 keeps the pretrained length in the latter).
    auto factors = [&](const char* key) {
      const Json* f = json_find(*scaling, key);
      VLM_CHECK(f && f->is_array() && static_cast<int64_t>(f->size()) == half, ErrorKind::kFormat,
                "{}: {}.{} must list {} factors (rotary dim / 2)", what, where, key, half);
      return f->get<std::vector<double>>();
    };
    std::vector<double> short_f = factors("short_factor"), long_f = factors("long_factor");
    const double max_pos = number_or(text, "max_position_embeddings", 0.0, what);
    const double orig = original_max(*scaling);
    VLM_CHECK(orig > 1, ErrorKind::kFormat, "{}: longrope needs original_max_position_embeddings", what);
    const double factor = number_or(*scaling, "factor", max_pos / orig, what);
    std::optional<double> af = json_number(*scaling, "attention_factor", what);
    double attention = af ? *af : (factor <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(factor) / std::log(orig)));
    r.attention_scaling = static_cast<float>(attention);
    r.original_max_positions = static_cast<int64_t>(orig);
    r.long_inv_freq.resize(r.inv_freq.size());
    for (int64_t i = 0; i < half; ++i) {
      const double base = std::pow(r.theta, static_cast<double>(2 * i) / r.rotary_dim);
      r.inv_freq[i] = static_cast<float>(1.0 / (short_f[i] * base));
      r.long_inv_freq[i] = static_cast<float>(1.0 / (long_f[i] * base));
    }
    return r;
  }
  throw_error(ErrorKind::kUnsupported,
              "{}: {}.rope_type '{}' is not supported (supported: default, linear, dynamic, llama3, yarn, longrope)", what, where,
              r.rope_type);
}

}  // namespace vlm
