// The checker's records — the single source of truth every report is rendered from. A run is one
// RunHeader (first JSONL line), one ModelResult per model (one line each, flushed as it finishes)
// and a RunFooter (last line; absent when the run was killed). Field names follow check_models'
// results.jsonl 2.0 (§5.3) plus the native additions documented in docs/results_schema.md.
// Each struct lists its fields once in visit(); JSON encoding and decoding are generic over it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "core/json.h"

namespace vlm::check {

constexpr const char* kResultsFormatVersion = "2.0";

struct Timing {
  double input_validation_time_s = 0, model_load_time_s = 0, prompt_prep_time_s = 0;
  double image_preprocess_time_s = 0, vision_encode_time_s = 0, prefill_time_s = 0, decode_time_s = 0;
  double generation_time_s = 0;     // image preprocessing + vision + prefill + decode
  double first_token_latency_s = 0; // true TTFT: start of generation → first token sampled
  double cleanup_time_s = 0;
  double total_time_s = 0;          // validation → result, cleanup excluded (as check_models)
  std::string stop_reason;          // completed | max_tokens | timeout | exception | crashed | interrupted
  template <class V> void visit(V&& v) {
    v("input_validation_time_s", input_validation_time_s); v("model_load_time_s", model_load_time_s);
    v("prompt_prep_time_s", prompt_prep_time_s); v("image_preprocess_time_s", image_preprocess_time_s);
    v("vision_encode_time_s", vision_encode_time_s); v("prefill_time_s", prefill_time_s);
    v("decode_time_s", decode_time_s); v("generation_time_s", generation_time_s);
    v("first_token_latency_s", first_token_latency_s); v("cleanup_time_s", cleanup_time_s);
    v("total_time_s", total_time_s); v("stop_reason", stop_reason);
  }
};

struct Metrics {
  int64_t prompt_tokens = 0, generation_tokens = 0, total_tokens = 0, image_tokens = 0;
  double prompt_tps = 0, generation_tps = 0;
  bool generation_tps_valid = false;  // generation_tokens >= 16
  // Decimal GB (bytes / 1e9), from the MemoryTracker (host) unless named otherwise.
  double peak_memory_gb = 0, active_memory_gb = 0, cache_memory_gb = 0;
  double model_load_active_memory_gb = 0, peak_memory_delta_gb = 0;
  double post_cleanup_active_memory_gb = 0, post_cleanup_cache_memory_gb = 0;
  double peak_rss_gb = 0;         // the worker process's VmHWM: everything, mapped weights included
  double peak_gpu_memory_gb = 0;  // the GPU tracker's peak (weights, KV cache, activations); 0 on the cpu
  double model_size_gb = 0;       // bytes of weight files on disk
  template <class V> void visit(V&& v) {
    v("prompt_tokens", prompt_tokens); v("generation_tokens", generation_tokens); v("total_tokens", total_tokens);
    v("image_tokens", image_tokens); v("prompt_tps", prompt_tps); v("generation_tps", generation_tps);
    v("generation_tps_valid", generation_tps_valid); v("peak_memory_gb", peak_memory_gb);
    v("active_memory_gb", active_memory_gb); v("cache_memory_gb", cache_memory_gb);
    v("model_load_active_memory_gb", model_load_active_memory_gb); v("peak_memory_delta_gb", peak_memory_delta_gb);
    v("post_cleanup_active_memory_gb", post_cleanup_active_memory_gb);
    v("post_cleanup_cache_memory_gb", post_cleanup_cache_memory_gb); v("peak_rss_gb", peak_rss_gb);
    v("peak_gpu_memory_gb", peak_gpu_memory_gb); v("model_size_gb", model_size_gb);
  }
};

struct Failure {
  std::string phase;           // input_validation | model_load | prompt_prep | prefill | decode | cleanup | worker
  std::string stage;           // classification (§4.4): "Timeout", "Weight Mismatch", "Crash", ...
  std::string code;            // <PACKAGE>_<PHASE>_<STAGE>
  std::string signature;       // <code>:<sha256[:12]>
  std::string message;
  std::string exception_type;  // vlm::Error kind, "signal", "timeout"
  std::string package;         // owning component (vlmcheck-io, vlmcheck-models, model-config, ...)
  std::string signal;          // "SIGSEGV" when the worker died by a signal
  int exit_status = 0;         // the worker's exit status when it exited abnormally
  std::string stderr_tail;     // last lines of the worker's stderr
  template <class V> void visit(V&& v) {
    v("phase", phase); v("stage", stage); v("code", code); v("signature", signature); v("message", message);
    v("exception_type", exception_type); v("package", package); v("signal", signal); v("exit_status", exit_status);
    v("stderr_tail", stderr_tail);
  }
};

struct Provenance {
  std::string model, requested_revision, resolved_revision, snapshot_path;
  std::string model_type, dtype, quantization;
  template <class V> void visit(V&& v) {
    v("model", model); v("requested_revision", requested_revision); v("resolved_revision", resolved_revision);
    v("snapshot_path", snapshot_path); v("model_type", model_type); v("dtype", dtype); v("quantization", quantization);
  }
};

struct Assessment {
  std::string execution = "crashed";          // completed | crashed | indeterminate
  std::string usability = "not_evaluated";    // usable | usable_with_caveats | unusable | not_evaluated
  std::string maintainer_status = "none";     // none | observation_needs_reproduction | actionable_failure
  std::vector<std::string> observations;      // registry codes, in display priority
  Json details = Json::object();              // §5.3 detail keys, only those that apply
  template <class V> void visit(V&& v) {
    v("execution", execution); v("usability", usability); v("maintainer_status", maintainer_status);
    v("observations", observations); v("details", details);
  }
};

// What the worker returns for one model: raw engine facts, before any analysis.
struct EngineOutcome {
  bool success = false;
  std::string generated_text;
  std::string finish_reason;  // stop | length
  Metrics metrics;
  Timing timing;
  Provenance provenance;
  Json prompt_diagnostics;    // null or the §5.3 object
  std::string error_phase, error_kind, error_message;
  template <class V> void visit(V&& v) {
    v("success", success); v("generated_text", generated_text); v("finish_reason", finish_reason);
    v("metrics", metrics); v("timing", timing); v("provenance", provenance);
    v("prompt_diagnostics", prompt_diagnostics); v("error_phase", error_phase); v("error_kind", error_kind);
    v("error_message", error_message);
  }
};

struct ModelResult {
  std::string type = "result";
  std::string model;
  std::string timestamp;       // completion, local ISO-8601 with offset
  std::string settings_hash;   // sha256 of the effective settings; --resume matches on it
  Assessment assessment;
  std::string generated_text;  // exact bytes
  std::string captured_output_on_fail;
  std::optional<Failure> failure;
  Metrics metrics;
  Timing timing;
  std::string device;          // where the language model ran (or was to run): cpu | cuda; vision towers: cpu
  Provenance model_provenance;
  Json prompt_diagnostics;     // null or object
  Json architecture;           // {model_type, supported_by_engine} or null
  int64_t requested_max_tokens = 0;
  Json rerun;                  // --rerun-triage evidence (null unless rerun)
  template <class V> void visit(V&& v) {
    v("_type", type); v("model", model); v("timestamp", timestamp); v("settings_hash", settings_hash);
    v("assessment", assessment); v("generated_text", generated_text);
    v("captured_output_on_fail", captured_output_on_fail); v("failure", failure); v("metrics", metrics);
    v("timing", timing); v("device", device); v("model_provenance", model_provenance); v("prompt_diagnostics", prompt_diagnostics);
    v("architecture", architecture); v("requested_max_tokens", requested_max_tokens); v("rerun", rerun);
  }
};

struct ImageProfile {
  std::string name, path, sha256, mime_type, source_url;
  int64_t size_bytes = 0, width = 0, height = 0;
  double megapixels = 0;
  template <class V> void visit(V&& v) {
    v("name", name); v("path", path); v("sha256", sha256); v("mime_type", mime_type); v("source_url", source_url);
    v("size_bytes", size_bytes); v("width", width); v("height", height); v("megapixels", megapixels);
  }
};

struct RunHeader {
  std::string type = "metadata";
  std::string format_version = kResultsFormatVersion;
  std::string timestamp;  // run start, local ISO-8601 with offset
  std::string eval_mode, requested_eval_mode;
  bool metadata_exposed_to_prompt = false;
  std::string prompt, prompt_sha256;
  Json messages;          // --messages conversation or null
  ImageProfile image;
  Json image_metadata;    // title/description/keywords/date/time/gps
  Json system;            // machine + build provenance
  Json library_versions;
  Json producer;
  Json generation_settings;  // the effective parameters every model runs with
  Json cache_discovery;      // every cached repo's classification
  Json quality_thresholds;
  Json output_files;         // artefact name → path relative to the output dir
  Json options;              // the remaining run flags (timeout, trust flags, ...)
  int64_t models_planned = 0;
  template <class V> void visit(V&& v) {
    v("_type", type); v("format_version", format_version); v("timestamp", timestamp); v("eval_mode", eval_mode);
    v("requested_eval_mode", requested_eval_mode); v("metadata_exposed_to_prompt", metadata_exposed_to_prompt);
    v("prompt", prompt); v("prompt_sha256", prompt_sha256); v("messages", messages); v("image", image);
    v("image_metadata", image_metadata); v("system", system); v("library_versions", library_versions);
    v("producer", producer); v("generation_settings", generation_settings); v("cache_discovery", cache_discovery);
    v("quality_thresholds", quality_thresholds); v("output_files", output_files); v("options", options);
    v("models_planned", models_planned);
  }
};

struct RunFooter {
  std::string type = "run_end";
  std::string timestamp;  // end of the sweep
  double total_runtime_seconds = 0;
  bool interrupted = false;
  int64_t models_completed = 0, models_failed = 0, models_skipped_resume = 0;
  template <class V> void visit(V&& v) {
    v("_type", type); v("timestamp", timestamp); v("total_runtime_seconds", total_runtime_seconds);
    v("interrupted", interrupted); v("models_completed", models_completed); v("models_failed", models_failed);
    v("models_skipped_resume", models_skipped_resume);
  }
};

// ---- generic encoding over visit() ---------------------------------------------------------------
template <class T, class = void> struct has_visit : std::false_type {};
template <class T>
struct has_visit<T, std::void_t<decltype(std::declval<T&>().visit([](const char*, auto&) {}))>> : std::true_type {};

template <class T> Json encode(const T& value);
template <class T> void decode(const Json& j, T& out);

template <class T> Json encode(const T& value) {
  if constexpr (has_visit<T>::value) {
    Json j = Json::object();
    const_cast<T&>(value).visit([&](const char* k, auto& m) { j[k] = encode(m); });
    return j;
  } else if constexpr (std::is_same_v<T, Json>) {
    return value;
  } else if constexpr (requires { typename T::value_type; value.has_value(); }) {
    return value ? encode(*value) : Json(nullptr);
  } else if constexpr (requires { typename T::value_type; value.begin(); } && !std::is_same_v<T, std::string>) {
    Json a = Json::array();
    for (const auto& x : value) a.push_back(encode(x));
    return a;
  } else {
    return Json(value);
  }
}

template <class T> void decode(const Json& j, T& out) {
  if constexpr (has_visit<T>::value) {
    if (!j.is_object()) return;
    out.visit([&](const char* k, auto& m) {
      auto it = j.find(k);
      if (it != j.end()) decode(*it, m);
    });
  } else if constexpr (std::is_same_v<T, Json>) {
    out = j;
  } else if constexpr (requires { typename T::value_type; out.has_value(); }) {
    if (j.is_null()) {
      out.reset();
    } else {
      typename T::value_type v{};
      decode(j, v);
      out = std::move(v);
    }
  } else if constexpr (requires { typename T::value_type; out.begin(); } && !std::is_same_v<T, std::string>) {
    out.clear();
    if (!j.is_array()) return;
    for (const auto& x : j) {
      typename T::value_type v{};
      decode(x, v);
      out.push_back(std::move(v));
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    if (j.is_boolean()) out = j.get<bool>();
  } else if constexpr (std::is_arithmetic_v<T>) {
    if (j.is_number()) out = j.get<T>();
  } else {
    if (j.is_string()) out = j.get<std::string>();
  }
}

// A whole run read back from results.jsonl.
struct RunRecords {
  RunHeader header;
  std::vector<ModelResult> results;
  std::optional<RunFooter> footer;
};

// Reads results.jsonl. Throws Error(kFormat) naming the file and line for a malformed line, and
// when the first line is not a metadata header.
RunRecords read_results_jsonl(const std::string& path);

// Appends JSON lines and flushes + fsyncs each, so a killed run keeps every finished model.
class JsonlWriter {
 public:
  // truncate=true starts a new file; false appends (--resume).
  JsonlWriter(const std::string& path, bool truncate);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;
  void write(const Json& line);

 private:
  std::string path_;
  int fd_ = -1;
};

std::string now_local_iso8601();  // "2026-11-26T05:09:26+00:00"

}  // namespace vlm::check
