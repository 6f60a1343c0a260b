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
#include "models/vision_model.h"

namespace vlm {

struct LoadOptions {
  LoadMode mode = LoadMode::kEager;  // --lazy-load selects kLazy
  std::string adapter_path;          // LoRA adapter folder ("" = none)
  bool text_only = false;            // skip the vision tower of a VLM (text prompts only)
};

// A loaded model: its configs, weights, the language model and, for VLMs, the vision model.
struct LoadedModel {
  std::string folder;
  ModelConfig config;
  std::shared_ptr<Checkpoint> checkpoint;
  std::unique_ptr<LanguageModel> language_model;
  std::unique_ptr<VisionModel> vision;  // null for text-only models (and with LoadOptions.text_only)
};

using LanguageModelFactory =
    std::function<std::unique_ptr<LanguageModel>(const ModelConfig&, const Checkpoint&, const LoadOptions&)>;

// Registers a family for one or more model_type values (text model types such as "qwen2", and VLM
// model types whose language part it implements).
void register_language_model(const std::vector<std::string>& model_types, LanguageModelFactory factory);
using VisionModelFactory =
    std::function<std::unique_ptr<VisionModel>(const ModelConfig&, const Checkpoint&, const LoadOptions&)>;
// Registers the vision half of a VLM model_type (its language half is registered with
// register_language_model under the same model_type). load_model builds both.
void register_vision_model(const std::vector<std::string>& model_types, VisionModelFactory factory);
bool has_vision_model(const std::string& model_type);

bool is_supported_model_type(const std::string& model_type);
std::vector<std::string> supported_model_types();

// Loads config + weights from a model folder (a snapshot path). Errors name the folder and what is
// missing/mis-shaped; an unknown model_type gives Error(kUnsupported) listing what is supported.
LoadedModel load_model(const std::string& folder, const LoadOptions& options);

}  // namespace vlm
