// LoRA adapter loading for the mlx-lm / mlx-vlm and PEFT formats (see lora.h for the layouts).
#include "models/layers/lora.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/json.h"
#include "io/safetensors.h"

namespace vlm {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// f32 copy of a 2-D tensor, transposed when `transpose` ([a, b] -> [b, a]).
Tensor f32_matrix(const Tensor& t, bool transpose) {
  Tensor f = t.to_f32();
  if (!transpose) return f;
  const int64_t r = f.dim(0), c = f.dim(1);
  Tensor out = Tensor::empty({c, r}, DType::kF32, MemCategory::kWeights);
  const float* src = f.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) dst[j * r + i] = src[i * c + j];
  return out;
}

}  // namespace

std::unique_ptr<LoraAdapter> LoraAdapter::load(const std::string& folder, const std::vector<LoraTarget>& targets) {
  namespace fs = std::filesystem;
  const std::string cfg_path = folder + "/adapter_config.json";
  VLM_CHECK(fs::exists(cfg_path), ErrorKind::kNotFound, "{}: adapter folder has no adapter_config.json", folder);
  Json cfg = read_json_file(cfg_path);
  auto adapter = std::make_unique<LoraAdapter>();

  float scale = 1.0f;
  std::string file;
  if (json_find(cfg, "peft_type")) {
    adapter->format_ = "peft";
    std::string type = json_string(cfg, "peft_type", cfg_path).value_or("");
    VLM_CHECK(type == "LORA", ErrorKind::kUnsupported, "{}: peft_type '{}' is not supported (LORA only)", cfg_path,
              type);
    VLM_CHECK(!json_bool(cfg, "use_dora", cfg_path).value_or(false), ErrorKind::kUnsupported,
              "{}: use_dora is not supported", cfg_path);
    for (const char* k : {"rank_pattern", "alpha_pattern"}) {
      const Json* p = json_find(cfg, k);
      VLM_CHECK(!p || p->is_null() || p->empty(), ErrorKind::kUnsupported, "{}: {} is not supported", cfg_path, k);
    }
    std::optional<int64_t> r = json_int(cfg, "r", cfg_path);
    std::optional<double> alpha = json_number(cfg, "lora_alpha", cfg_path);
    VLM_CHECK(r && *r > 0 && alpha, ErrorKind::kFormat, "{}: needs r > 0 and lora_alpha", cfg_path);
    bool rs = json_bool(cfg, "use_rslora", cfg_path).value_or(false);
    scale = static_cast<float>(*alpha / (rs ? std::sqrt(static_cast<double>(*r)) : static_cast<double>(*r)));
    file = folder + "/adapter_model.safetensors";
  } else {
    adapter->format_ = "mlx";
    std::string type = json_string(cfg, "fine_tune_type", cfg_path).value_or("lora");
    VLM_CHECK(type == "lora", ErrorKind::kUnsupported, "{}: fine_tune_type '{}' is not supported (lora only)",
              cfg_path, type);
    if (const Json* lp = json_find(cfg, "lora_parameters"); lp && lp->is_object()) {
      std::optional<double> s = json_number(*lp, "scale", cfg_path + " lora_parameters");
      VLM_CHECK(s, ErrorKind::kFormat, "{}: lora_parameters.scale is missing", cfg_path);
      scale = static_cast<float>(*s);  // mlx-lm uses it as is (mlx-vlm stores alpha / rank there)
    } else {
      std::optional<int64_t> r = json_int(cfg, "rank", cfg_path);
      std::optional<double> alpha = json_number(cfg, "alpha", cfg_path);
      VLM_CHECK(r && *r > 0 && alpha, ErrorKind::kFormat,
                "{}: needs lora_parameters.scale, or rank and alpha (legacy mlx-vlm)", cfg_path);
      scale = static_cast<float>(*alpha / static_cast<double>(*r));
    }
    file = folder + "/adapters.safetensors";
  }
  VLM_CHECK(fs::exists(file), ErrorKind::kNotFound, "{}: adapter weights file {} is missing", folder,
            fs::path(file).filename().string());

  std::map<std::string, const LoraTarget*> by_path;
  for (const LoraTarget& t : targets) {
    by_path[t.canonical] = &t;
    by_path[t.actual] = &t;
  }
  auto sf = SafetensorsFile::open(file, LoadMode::kEager);
  struct Pair {
    Tensor a, b;
  };
  std::map<std::string, Pair> pairs;  // canonical -> (A, B) in PyTorch layout
  for (const TensorInfo& info : sf->tensors()) {
    const std::string& n = info.name;
    std::string path, which;
    bool transpose = false;
    if (adapter->format_ == "peft") {
      std::string s = starts_with(n, "base_model.model.") ? n.substr(17) : n;
      if (ends_with(s, ".lora_A.weight")) {
        path = s.substr(0, s.size() - 14), which = "a";
      } else if (ends_with(s, ".lora_B.weight")) {
        path = s.substr(0, s.size() - 14), which = "b";
      }
    } else {
      transpose = true;  // mlx stores lora_a [in, r] and lora_b [r, out]
      for (const char* suffix : {".lora_a", ".A"})
        if (ends_with(n, suffix)) path = n.substr(0, n.size() - std::string(suffix).size()), which = "a";
      for (const char* suffix : {".lora_b", ".B"})
        if (ends_with(n, suffix)) path = n.substr(0, n.size() - std::string(suffix).size()), which = "b";
    }
    VLM_CHECK(!which.empty(), ErrorKind::kFormat, "{}: tensor '{}' is not a LoRA A/B matrix", file, n);
    auto it = by_path.find(path);
    VLM_CHECK(it != by_path.end(), ErrorKind::kFormat, "{}: '{}' adapts module '{}', which the model does not have",
              file, n, path);
    VLM_CHECK(info.shape.size() == 2, ErrorKind::kFormat, "{}: '{}' must be 2-D, got {}", file, n,
              shape_str(info.shape));
    Tensor m = f32_matrix(sf->tensor(n), transpose);
    (which == "a" ? pairs[it->second->canonical].a : pairs[it->second->canonical].b) = m;
  }
  for (auto& [canonical, p] : pairs) {
    const LoraTarget& t = *by_path.at(canonical);
    VLM_CHECK(p.a.defined() && p.b.defined(), ErrorKind::kFormat, "{}: module '{}' has only one of its A/B matrices",
              file, canonical);
    const int64_t r = p.a.dim(0);
    VLM_CHECK(p.a.dim(1) == t.in && p.b.dim(0) == t.out && p.b.dim(1) == r, ErrorKind::kFormat,
              "{}: module '{}': A {} and B {} do not fit [out {}, in {}] (PyTorch layout A [r, in], B [out, r])", file,
              canonical, shape_str(p.a.shape()), shape_str(p.b.shape()), t.out, t.in);
    LoraModule mod;
    mod.a.dense = p.a;
    mod.b.dense = p.b;
    mod.scale = scale;
    mod.rank = r;
    adapter->modules_[canonical] = std::move(mod);
  }
  VLM_CHECK(!adapter->modules_.empty(), ErrorKind::kFormat, "{}: no LoRA matrices found", file);
  return adapter;
}

const LoraModule* LoraAdapter::find(const std::string& canonical) const {
  auto it = modules_.find(canonical);
  return it == modules_.end() ? nullptr : &it->second;
}

size_t LoraAdapter::nbytes() const {
  size_t n = 0;
  for (const auto& [_, m] : modules_) n += m.a.nbytes() + m.b.nbytes();
  return n;
}

}  // namespace vlm
