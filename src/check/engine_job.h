// One model's job as the worker process runs it: validate the image, resolve and load the model (its
// vision tower too when the image goes to a VLM), render the prompt with the checkpoint's chat template,
// process + expand + encode the image with the model's own processor and vision tower, tokenise, generate
// with the effective parameters (the language model and the vision tower moved to job.device after
// loading), and return the raw facts (EngineOutcome) with per-phase timings and memory. This is
// the only file that calls into the engine layers (io, image, text, models, generate), so it is
// the one place to adapt as those APIs grow. It never throws: failures come back as an outcome
// with error_phase / error_kind / error_message.
#pragma once

#include <functional>
#include <string>

#include "check/record.h"
#include "generate/generate.h"

namespace vlm::check {

struct EngineJob {
  std::string model;     // repo id or local folder, as given
  std::string revision;  // requested ("" = main)
  std::string cache_dir; // "" = the usual HF cache lookup
  std::string image_path;
  std::string prompt;
  Json messages;         // --messages conversation (null = build from prompt + image)
  std::string messages_file;  // the --messages file the worker renders (same rules as `generate`)
  Json generation;       // effective generation settings (see generation_params_from_settings)
  bool lazy_load = false;
  std::string adapter_path;
  std::string device = "cpu";  // where the language model runs: "cpu" | "cuda" (the run's resolved --device)
  template <class V> void visit(V&& v) {
    v("model", model); v("revision", revision); v("cache_dir", cache_dir); v("image_path", image_path);
    v("prompt", prompt); v("messages", messages); v("messages_file", messages_file);
    v("generation", generation); v("lazy_load", lazy_load);
    v("adapter_path", adapter_path); v("device", device);
  }
};

// Called at the start of each phase ("input_validation", "model_load", "prompt_prep", "prefill",
// "decode", "cleanup") and for each generated token (count, decode seconds so far).
struct EngineCallbacks {
  std::function<void(const std::string& phase)> on_phase;
  std::function<void(int64_t tokens, double decode_s)> on_token;
};

EngineOutcome run_engine_job(const EngineJob& job, const EngineCallbacks& cb);

// check_models' generation flags (as the settings JSON the run records) → GenerationParams.
// Throws Error(kInvalidArgument) naming the setting for a value of the wrong type or range.
GenerationParams generation_params_from_settings(const Json& settings);

}  // namespace vlm::check
