// Model discovery over the Hugging Face cache, as check_models does it (check_models.md §2.5):
// layer 1, the layout filter (model repo, a main ref, config.json + tokenizer_config.json, weights
// as safetensors); layer 2, the image-capability verdict yes / no / unknown with a purpose label and
// the evidence it rests on. Evidence comes from config fields and architecture names only, never
// from the repo name. Only bounded JSON (<= 16 MiB, regular file, symlinks kept inside the repo)
// and safetensors headers are read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"

namespace vlm {

enum class ImageCapability { kYes, kNo, kUnknown };
const char* image_capability_name(ImageCapability c);  // "yes", "no", "unknown"

struct CapabilityVerdict {
  ImageCapability verdict = ImageCapability::kUnknown;
  // image_to_text, text_generation, audio_to_text, embedding, reranker, speculative_drafter,
  // image_generation, image_non_generative, unknown
  std::string purpose = "unknown";
  std::vector<std::string> evidence;
};

// Layer 2 on already-read inputs: `config` is config.json (null when missing/unreadable, with
// `config_problem` saying why), `has_model_index` whether model_index.json is present.
CapabilityVerdict classify_image_capability(const Json* config, bool has_model_index,
                                            const std::string& config_problem = "");

struct DiscoveredModel {
  std::string repo_id;
  std::string repo_type;  // "model" for model repos
  std::string repo_path;  // <cache>/models--org--name
  std::string revision;   // the commit main points to ("" without a main ref)
  std::string snapshot;   // <repo>/snapshots/<revision> ("" without one)
  std::string model_type;   // config.json model_type (or speculators_model_type), "" if unknown
  int64_t size_bytes = 0;   // bytes of the main snapshot's files (each blob counted once)
  std::string dtype;        // e.g. "bfloat16" (config) or "bf16" (from the weights); "" if unknown
  std::string quantization; // e.g. "affine 4-bit g64", "affine 4-bit g64 + 3 overrides", "gptq", ""
  bool layout_supported = false;
  std::vector<std::string> layout_reasons;  // "cache layout: missing config.json", ...
  CapabilityVerdict capability;

  // Selected for a run: layout passes and the capability is not "no" (unknown runs, with a warning).
  bool selected() const { return layout_supported && capability.verdict != ImageCapability::kNo; }
  // Every reason a skipped repo is skipped (empty when selected).
  std::vector<std::string> skip_reasons() const;
};

// Layer 1 + 2 for one repo folder.
DiscoveredModel discover_repo(const std::string& repo_path);
// Every repo in the cache, sorted by repo id (code-point order). A missing cache gives none.
std::vector<DiscoveredModel> discover_models(const std::string& cache_dir);

// Reads a small JSON file from a repo snapshot: regular file, <= 16 MiB, symlinks followed only
// inside `repo_path`. nullopt with `*problem` set when absent or refused; malformed JSON also
// yields nullopt with the parser's message.
std::optional<Json> read_bounded_json(const std::string& repo_path, const std::string& file, std::string* problem);

}  // namespace vlm
