// Model registry: model_type -> language-model factory, and load_model (config + checkpoint + family).
#include "models/registry.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.h"
#include "models/families.h"

namespace vlm {

namespace {

std::map<std::string, LanguageModelFactory>& factories() {
  static std::map<std::string, LanguageModelFactory> m;
  return m;
}
std::map<std::string, VisionModelFactory>& vision_factories() {
  static std::map<std::string, VisionModelFactory> m;
  return m;
}
std::recursive_mutex& registry_mutex() {
  static std::recursive_mutex m;
  return m;
}

// The built-in families: adding one is its folder plus one line here.
void register_builtin_families() {
  static std::once_flag once;
  std::call_once(once, [] {
    families::register_llama();
    families::register_mistral();
    families::register_qwen2();
    families::register_qwen3();
    families::register_gemma();
    families::register_gemma2();
    families::register_gemma3();
    families::register_phi3();
    families::register_llava();
    families::register_idefics3();
    families::register_gemma3_vlm();
    families::register_paligemma();
    families::register_qwen2_vl();
  });
}

}  // namespace

void register_language_model(const std::vector<std::string>& model_types, LanguageModelFactory factory) {
  std::lock_guard<std::recursive_mutex> lock(registry_mutex());
  for (const std::string& t : model_types) {
    VLM_CHECK(!factories().count(t), ErrorKind::kInternal, "model_type '{}' is registered twice", t);
    factories()[t] = factory;
  }
}

void register_vision_model(const std::vector<std::string>& model_types, VisionModelFactory factory) {
  std::lock_guard<std::recursive_mutex> lock(registry_mutex());
  for (const std::string& t : model_types) {
    VLM_CHECK(!vision_factories().count(t), ErrorKind::kInternal, "vision model_type '{}' is registered twice", t);
    vision_factories()[t] = factory;
  }
}

namespace families {

std::unique_ptr<LanguageModel> make_registered_language_model(const std::string& model_type,
                                                              const ModelConfig& config,
                                                              const Checkpoint& checkpoint,
                                                              const LoadOptions& options) {
  LanguageModelFactory factory;
  {
    std::lock_guard<std::recursive_mutex> lock(registry_mutex());
    auto it = factories().find(model_type);
    if (it != factories().end()) factory = it->second;
  }
  VLM_CHECK(factory != nullptr, ErrorKind::kUnsupported, "{}: the text model_type '{}' is not supported",
            config.path, model_type);
  return factory(config, checkpoint, options);
}

}  // namespace families

bool has_vision_model(const std::string& model_type) {
  register_builtin_families();
  std::lock_guard<std::recursive_mutex> lock(registry_mutex());
  return vision_factories().count(model_type) > 0;
}

bool is_supported_model_type(const std::string& model_type) {
  register_builtin_families();
  std::lock_guard<std::recursive_mutex> lock(registry_mutex());
  return factories().count(model_type) > 0;
}

std::vector<std::string> supported_model_types() {
  register_builtin_families();
  std::lock_guard<std::recursive_mutex> lock(registry_mutex());
  std::vector<std::string> out;
  for (const auto& [t, _] : factories()) out.push_back(t);
  return out;  // sorted (map order)
}

LoadedModel load_model(const std::string& folder, const LoadOptions& options) {
  register_builtin_families();
  namespace fs = std::filesystem;
  VLM_CHECK(fs::is_directory(folder), ErrorKind::kNotFound, "{}: model folder does not exist", folder);
  LoadedModel m;
  m.folder = folder;
  m.config = ModelConfig::load(folder + "/config.json");
  LanguageModelFactory factory;
  VisionModelFactory vision_factory;
  {
    std::lock_guard<std::recursive_mutex> lock(registry_mutex());
    auto it = factories().find(m.config.model_type);
    if (it != factories().end()) factory = it->second;
    auto vit = vision_factories().find(m.config.model_type);
    if (vit != vision_factories().end()) vision_factory = vit->second;
  }
  if (!factory) {
    std::string list;
    for (const std::string& t : supported_model_types()) list += (list.empty() ? "" : ", ") + t;
    throw_error(ErrorKind::kUnsupported, "{}: model_type '{}' is not supported (supported: {})", m.config.path,
                m.config.model_type, list);
  }
  if (!options.adapter_path.empty()) {
    VLM_CHECK(fs::is_directory(options.adapter_path), ErrorKind::kNotFound, "{}: adapter folder does not exist",
              options.adapter_path);
  }
  m.checkpoint = std::make_shared<Checkpoint>(Checkpoint::open(folder, options.mode));
  m.language_model = factory(m.config, *m.checkpoint, options);
  if (vision_factory && !options.text_only) m.vision = vision_factory(m.config, *m.checkpoint, options);
  return m;
}

}  // namespace vlm
