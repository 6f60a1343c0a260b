// Typed config parsing. Every reader keeps the raw JSON and pulls out only the fields the engine
// needs everywhere; a wrong type in one of those fields is an Error(kFormat) naming the file and the
// key, while unknown fields are kept for family code to read.
#include "io/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"

namespace vlm {

namespace {

constexpr size_t kMaxConfigBytes = size_t{16} << 20;

const Json& null_json() {
  static const Json kNull;
  return kNull;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Json read_object(const std::string& path) {
  Json j = read_json_file(path, kMaxConfigBytes);
  if (!j.is_object())
    throw_error(ErrorKind::kFormat, "{}: expected a JSON object at the top level, found {}", path, j.type_name());
  return j;
}

// eos_token_id: an int, a list of ints, or null.
void append_token_ids(const Json& obj, const std::string& key, const std::string& what, std::vector<int64_t>& out) {
  const Json* v = json_find(obj, key);
  if (!v || v->is_null()) return;
  auto add = [&](const Json& x) {
    if (!x.is_number_integer())
      throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be an integer or a list of integers, got {}", what,
                  key, v->dump());
    int64_t id = x.get<int64_t>();
    if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  };
  if (v->is_array()) {
    for (const auto& x : *v) add(x);
  } else {
    add(*v);
  }
}

// Keys of an MLX quantization dict that describe the default spec, not a module override.
bool is_quant_setting_key(const std::string& k) {
  return k == "bits" || k == "group_size" || k == "mode" || k == "quant_method";
}

AffineQuantSpec read_spec(const Json& obj, const AffineQuantSpec& fallback, const std::string& what) {
  AffineQuantSpec s = fallback;
  if (auto b = json_int(obj, "bits", what)) s.bits = static_cast<int>(*b);
  if (auto g = json_int(obj, "group_size", what)) s.group_size = static_cast<int>(*g);
  return s;
}

}  // namespace

QuantizationConfig QuantizationConfig::from_config(const Json& raw, const std::string& path) {
  QuantizationConfig q;
  // MLX writes the same dict under both names; "quantization" is MLX's own, so it wins.
  const Json* src = json_find(raw, "quantization");
  std::string key = "quantization";
  if (!src || src->is_null()) {
    src = json_find(raw, "quantization_config");
    key = "quantization_config";
  }
  if (!src || src->is_null()) return q;
  const std::string what = path + " " + key;
  if (!src->is_object())
    throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be an object, got {}", path, key, src->dump());
  q.present = true;
  // Non-MLX schemes (GPTQ, AWQ, bitsandbytes, fp8 ...) name themselves with quant_method; keep the
  // name in `mode` so the loader can refuse them clearly instead of misreading the weights.
  if (auto m = json_string(*src, "mode", what)) q.mode = *m;
  else if (auto qm = json_string(*src, "quant_method", what)) q.mode = *qm;
  q.default_spec = read_spec(*src, AffineQuantSpec{}, what);
  if (json_find(*src, "quant_method")) return q;  // non-MLX: its other keys are settings, not modules
  for (const auto& [k, v] : src->items()) {
    if (is_quant_setting_key(k)) continue;
    if (v.is_boolean() && !v.get<bool>()) {
      q.overrides[k] = std::nullopt;  // explicitly left unquantized
    } else if (v.is_boolean()) {
      q.overrides[k] = q.default_spec;
    } else if (v.is_object() && (v.contains("bits") || v.contains("group_size"))) {
      // Missing fields fall back to the checkpoint's default spec.
      q.overrides[k] = read_spec(v, q.default_spec, what + "[\"" + k + "\"]");
    }
    // Anything else is not a module entry MLX would act on.
  }
  return q;
}

std::string QuantizationConfig::summary() const {
  if (!present) return "";
  std::string s = fmt::format("{} {}-bit", mode, default_spec.bits);
  if (mode == "affine") s += fmt::format(" g{}", default_spec.group_size);
  if (!overrides.empty()) s += fmt::format(", {} module override{}", overrides.size(), overrides.size() == 1 ? "" : "s");
  return s;
}

std::optional<AffineQuantSpec> QuantizationConfig::spec_for(const std::string& module_path) const {
  auto it = overrides.find(module_path);
  if (it != overrides.end()) return it->second;
  if (!present) return std::nullopt;
  return default_spec;
}

const Json& ModelConfig::text() const {
  // transformers' nested layout (text_config) and InternVL's llm_config; else the flat older layout.
  for (const char* k : {"text_config", "llm_config"}) {
    const Json* t = json_find(raw, k);
    if (t && t->is_object()) return *t;
  }
  return raw;
}

const Json& ModelConfig::vision() const {
  const Json* v = json_find(raw, "vision_config");
  return (v && v->is_object()) ? *v : null_json();
}

bool ModelConfig::has_vision() const { return !vision().is_null(); }

ModelConfig ModelConfig::load(const std::string& config_json_path) {
  ModelConfig c;
  c.path = config_json_path;
  c.raw = read_object(config_json_path);
  const std::string& what = config_json_path;
  c.model_type = json_string(c.raw, "model_type", what).value_or("");

  if (const Json* a = json_find(c.raw, "architectures"); a && !a->is_null()) {
    if (!a->is_array())
      throw_error(ErrorKind::kFormat, "{}: field \"architectures\" should be a list of strings, got {}", what,
                  a->dump());
    for (const auto& x : *a) {
      if (!x.is_string())
        throw_error(ErrorKind::kFormat, "{}: field \"architectures\" should be a list of strings, got {}", what,
                    a->dump());
      c.architectures.push_back(x.get<std::string>());
    }
  }

  // transformers 5 writes "dtype", older versions "torch_dtype"; nested configs may carry it only
  // in text_config. The value can be a non-string (e.g. a dict per sub-config) -- ignore those.
  auto dtype_of = [&](const Json& obj) -> std::optional<std::string> {
    for (const char* k : {"dtype", "torch_dtype"}) {
      const Json* v = json_find(obj, k);
      if (v && v->is_string()) return v->get<std::string>();
    }
    return std::nullopt;
  };
  c.torch_dtype = dtype_of(c.raw);
  if (!c.torch_dtype) {
    const Json* t = json_find(c.raw, "text_config");
    if (t) c.torch_dtype = dtype_of(*t);
  }

  c.quantization = QuantizationConfig::from_config(c.raw, what);
  append_token_ids(c.raw, "eos_token_id", what, c.eos_token_ids);
  if (const Json* t = json_find(c.raw, "text_config"); t && t->is_object())
    append_token_ids(*t, "eos_token_id", what + " text_config", c.eos_token_ids);
  return c;
}

GenerationConfig GenerationConfig::load_if_present(const std::string& path) {
  GenerationConfig g;
  if (!file_exists(path)) return g;
  g.raw = read_object(path);
  append_token_ids(g.raw, "eos_token_id", path, g.eos_token_ids);
  g.bos_token_id = json_int(g.raw, "bos_token_id", path);
  // pad_token_id may also be a list in some configs; keep the first.
  if (const Json* p = json_find(g.raw, "pad_token_id"); p && p->is_array()) {
    if (!p->empty() && (*p)[0].is_number_integer()) g.pad_token_id = (*p)[0].get<int64_t>();
  } else {
    g.pad_token_id = json_int(g.raw, "pad_token_id", path);
  }
  g.temperature = json_number(g.raw, "temperature", path);
  g.top_p = json_number(g.raw, "top_p", path);
  g.repetition_penalty = json_number(g.raw, "repetition_penalty", path);
  g.top_k = json_int(g.raw, "top_k", path);
  g.do_sample = json_bool(g.raw, "do_sample", path);
  return g;
}

std::optional<ProcessorConfig> ProcessorConfig::load_from_folder(const std::string& folder) {
  // transformers prefers the image_processor nested in processor_config.json when present, and
  // falls back to the legacy preprocessor_config.json. mlx-vlm folders may hold both.
  const std::string proc_path = folder + "/processor_config.json";
  const std::string pre_path = folder + "/preprocessor_config.json";
  std::optional<ProcessorConfig> out;
  if (file_exists(proc_path)) {
    ProcessorConfig p;
    Json j = read_object(proc_path);
    const Json* ip = json_find(j, "image_processor");
    if (ip && !ip->is_object())
      throw_error(ErrorKind::kFormat, "{}: field \"image_processor\" should be an object, got {}", proc_path,
                  ip->type_name());
    p.processor = Json::object();
    for (const auto& [k, v] : j.items())
      if (k != "image_processor" && k != "video_processor" && k != "audio_processor") p.processor[k] = v;
    if (ip) {
      p.path = proc_path;
      p.image_processor = *ip;
      return p;
    }
    out = std::move(p);  // processor-level fields only; the image processor may be in the legacy file
  }
  if (file_exists(pre_path)) {
    ProcessorConfig p = out.value_or(ProcessorConfig{});
    if (p.processor.is_null()) p.processor = Json::object();
    p.path = pre_path;
    p.image_processor = read_object(pre_path);
    return p;
  }
  if (out) {
    out->path = proc_path;
    out->image_processor = Json::object();
  }
  return out;
}

std::optional<TokenizerConfig> TokenizerConfig::load_from_folder(const std::string& folder) {
  const std::string path = folder + "/tokenizer_config.json";
  if (!file_exists(path)) return std::nullopt;
  TokenizerConfig t;
  t.path = path;
  t.raw = read_object(path);
  t.add_bos_token = json_bool(t.raw, "add_bos_token", path);
  t.add_eos_token = json_bool(t.raw, "add_eos_token", path);
  t.tokenizer_class = json_string(t.raw, "tokenizer_class", path);
  // Special tokens are plain strings or serialised AddedToken objects {"content": "...", ...}.
  auto special = [&](const char* key) -> std::optional<std::string> {
    const Json* v = json_find(t.raw, key);
    if (!v || v->is_null()) return std::nullopt;
    if (v->is_string()) return v->get<std::string>();
    if (v->is_object()) {
      const Json* c = json_find(*v, "content");
      if (c && c->is_string()) return c->get<std::string>();
    }
    throw_error(ErrorKind::kFormat, "{}: field \"{}\" should be a string or an object with \"content\", got {}",
                path, key, v->dump());
  };
  t.bos_token = special("bos_token");
  t.eos_token = special("eos_token");
  t.pad_token = special("pad_token");
  t.unk_token = special("unk_token");
  return t;
}

}  // namespace vlm
