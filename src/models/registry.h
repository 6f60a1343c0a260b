// Model families register here by config.json model_type (one line per family, in the family's own
// folder); loading a model folder picks the family from the config, never from the repo name.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/language_model.h"

namespace vlm {

struct LoadOptions {
  LoadMode mode = LoadMode::kEager;  // --lazy-load selects kLazy
  std::string adapter_path;          // LoRA adapter folder ("" = none)
};

// A loaded model: its configs, weights and the language model (vision parts arrive with the vision work).
struct LoadedModel {
  std::string folder;
  ModelConfig config;
  std::shared_ptr<Checkpoint> checkpoint;
  std::unique_ptr<LanguageModel> language_model;
};

using LanguageModelFactory =
    std::function<std::unique_ptr<LanguageModel>(const ModelConfig&, const Checkpoint&, const LoadOptions&)>;

// Registers a family for one or more model_type values (text model types such as "qwen2", and VLM
// model types whose language part it implements).
void register_language_model(const std::vector<std::string>& model_types, LanguageModelFactory factory);
bool is_supported_model_type(const std::string& model_type);
std::vector<std::string> supported_model_types();

// Loads config + weights from a model folder (a snapshot path). Errors name the folder and what is
// missing/mis-shaped; an unknown model_type gives Error(kUnsupported) listing what is supported.
LoadedModel load_model(const std::string& folder, const LoadOptions& options);

}  // namespace vlm
