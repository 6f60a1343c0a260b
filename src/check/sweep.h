// `vlmcheck run` end to end: inputs (image selection, metadata, lane prompt), model selection
// (explicit --models or cache discovery with every skip reason), one worker process per model,
// records written first (results.jsonl, flushed per model), then every report rendered from the
// records, the history line, and the console summary. Ctrl-C stops the sweep cleanly.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/json.h"

namespace vlm::check {

struct RunOptions {
  // Inputs
  std::string folder, image, image_source_url;
  std::vector<std::string> images;  // --images: several explicit files
  bool all_images = false;          // --folder --all: every supported image in the folder
  // Models
  std::vector<std::string> models, exclude;
  std::string revision, adapter_path;
  // Prompt and lane
  std::optional<std::string> prompt;
  std::string messages_file;
  std::string eval_mode = "auto";
  std::string context_marker = "Context:";
  // Generation: the settings JSON the worker maps onto GenerationParams (null = not set).
  Json generation = Json::object();
  std::optional<int64_t> max_tokens;
  bool lazy_load = false;
  std::string device = "cpu";  // the resolved --device every model's language model runs on: cpu | cuda
  double timeout_s = 300.0;
  // Outputs
  std::string output_dir = "output";
  Json output_overrides = Json::object();  // artefact key → path from the per-file flags
  std::string quality_config;
  // Workflow and console
  bool dry_run = false, resume = false, rerun_triage = false;
  int color = -1;  // -1 auto, 0 off, 1 on
  int width = 0;
  bool verbose = false;
  std::string self_exe = "/proc/self/exe";
};

// Returns the process exit code: 0 when the sweep ran (even if models failed), 130 on Ctrl-C.
// Throws vlm::Error for fatal input problems (no image, unreadable image, no models).
int run_check(const RunOptions& opts);

// Re-renders every report from results.jsonl into `output_dir` ("" = next to the JSONL).
int run_report(const std::string& jsonl_path, const std::string& output_dir);

// The demo assets (sample image + tiny model) when found: VLMCHECK_ASSETS, else an `assets/demo`
// folder in a parent directory of the running binary.
struct DemoAssets {
  std::string image, model;
};
std::optional<DemoAssets> find_demo_assets();

}  // namespace vlm::check
