// The worker's engine job, phase by phase (check_models §2.6, with native timings): every call into
// the engine layers is here. Phases are timed with steady_clock; memory comes from MemoryTracker
// (host, and GPU when present) and the process's own VmHWM. Generation itself goes through the
// generator's generate(), the same path as `vlmcheck generate`. The language model runs on job.device
// (moved after loading, inside model_load); on cuda the GPU tracker's peak is recorded too.
#include "check/engine_job.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include <fmt/format.h>

#include "check/sha256.h"
#include "check/text_util.h"
#include "core/error.h"
#include "core/memory.h"
#include "generate/generator.h"
#include "generate/prompt.h"
#include "image/image.h"
#include "io/config.h"
#include "io/hf_cache.h"
#include "io/safetensors.h"
#include "models/registry.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace vlm::check {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
constexpr double kGB = 1e9;

// Thrown inside the job to carry the phase with the error.
struct PhaseError {
  std::string phase, kind, message;
};

template <class F>
auto in_phase(const std::string& phase, const EngineCallbacks& cb, F&& f) {
  if (cb.on_phase) cb.on_phase(phase);
  try {
    return f();
  } catch (const Error& e) {
    throw PhaseError{phase, error_kind_name(e.kind()), e.what()};
  } catch (const std::bad_alloc&) {
    throw PhaseError{phase, "resource", "out of memory"};
  } catch (const std::exception& e) {
    throw PhaseError{phase, "internal", e.what()};
  }
}

int64_t folder_weight_bytes(const std::string& folder) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(folder, ec)) {
    if (e.path().extension() == ".safetensors") total += static_cast<int64_t>(std::filesystem::file_size(e.path(), ec));
  }
  return total;
}

std::string quantization_text(const ModelConfig& c) {
  if (!c.quantization.present) return "";
  return fmt::format("{} {}-bit g{}{}", c.quantization.mode, c.quantization.default_spec.bits,
                     c.quantization.default_spec.group_size,
                     c.quantization.overrides.empty() ? ""
                                                      : fmt::format(" + {} overrides", c.quantization.overrides.size()));
}

// Image placeholders as check_models counts them: <image>, <|image|>, <image_N>, <start_of_image>, <image_soft_token>.
int64_t count_image_placeholders(const std::string& s) {
  int64_t n = 0;
  for (size_t p = s.find('<'); p != std::string::npos; p = s.find('<', p + 1)) {
    std::string_view rest(s.c_str() + p, std::min<size_t>(s.size() - p, 40));
    if (starts_with(rest, "<start_of_image>") || starts_with(rest, "<image_soft_token>")) {
      ++n;
      continue;
    }
    size_t i = 1;
    if (i < rest.size() && rest[i] == '|') ++i;
    if (rest.substr(i, 5) != "image") continue;
    i += 5;
    if (i < rest.size() && rest[i] == '_') {
      size_t d = i + 1;
      while (d < rest.size() && std::isdigit(static_cast<unsigned char>(rest[d]))) ++d;
      if (d == i + 1) continue;
      i = d;
    }
    if (i < rest.size() && rest[i] == '|') ++i;
    if (i < rest.size() && rest[i] == '>') ++n;
  }
  return n;
}

// Token ids of --eos-tokens strings (those the vocabulary knows as one token).
std::vector<int32_t> extra_eos_ids(const Json& generation, const Tokenizer& tok) {
  std::vector<int32_t> ids;
  if (generation.contains("eos_tokens"))
    for (const auto& t : generation["eos_tokens"])
      if (t.is_string())
        if (auto id = tok.token_to_id(t.get<std::string>())) ids.push_back(*id);
  return ids;
}

// The conversation (DESIGN.md): --messages as given, else one user message with the image item (when
// the model takes images) followed by the prompt text; a plain string for text-only models, as
// their templates expect. Rendered with the checkpoint's own template, add_generation_prompt=true;
// for a VLM the image is decoded, processed and expanded by the model's own processor and encoded by its
// vision tower. The same path as `vlmcheck generate` / `tokenize` (prepare_prompt).
PreparedPrompt prepare_conversation(const std::string& folder, const Tokenizer& tok, const EngineJob& job,
                                    bool use_image, const LoadedModel& model) {
  PromptRequest req;
  req.prompt = job.prompt;
  req.messages = job.messages;
  if (use_image) req.image_paths = {job.image_path};
  req.enable_thinking = job.generation.value("enable_thinking", false);
  return prepare_prompt(folder, tok, req, model.vision.get(), model.language_model.get());
}

// The language model, and a VLM's vision tower and projector, move to the run's device once loaded (the image
// features come back as host floats the language model takes as input embeddings). A model that cannot run
// there fails its model_load phase with the reason, so the sweep records it and goes on.
void move_language_model(LoadedModel& loaded, const EngineJob& job) {
  const Device device = resolve_device(job.device);  // "--device cuda: <reason>" without a usable GPU
  if (device == Device::kCpu) return;
  try {
    loaded.language_model->to_device(device);
  } catch (const Error& e) {
    throw_error(e.kind(), "moving the language model to {}: {}", device_name(device), e.what());
  }
  if (!loaded.vision) return;
  try {
    loaded.vision->to_device(device);
  } catch (const Error& e) {
    throw_error(e.kind(), "moving the vision model to {}: {}", device_name(device), e.what());
  }
}

}  // namespace

GenerationParams generation_params_from_settings(const Json& s) {
  GenerationParams p;
  auto num = [&](const char* k) -> std::optional<double> {
    if (!s.contains(k) || s[k].is_null()) return std::nullopt;
    VLM_CHECK(s[k].is_number(), ErrorKind::kInvalidArgument, "generation setting {}: expected a number, got {}", k,
              s[k].dump());
    return s[k].get<double>();
  };
  if (auto v = num("max_tokens")) p.max_tokens = static_cast<int64_t>(*v);
  if (auto v = num("temperature")) p.temperature = static_cast<float>(*v);
  if (auto v = num("top_p")) p.top_p = static_cast<float>(*v);
  if (auto v = num("top_k")) p.top_k = static_cast<int64_t>(*v);
  if (auto v = num("min_p")) p.min_p = static_cast<float>(*v);
  if (auto v = num("repetition_penalty")) p.repetition_penalty = static_cast<float>(*v);
  if (auto v = num("repetition_context_size")) p.repetition_context_size = static_cast<int64_t>(*v);
  if (auto v = num("presence_penalty")) p.presence_penalty = static_cast<float>(*v);
  if (auto v = num("presence_context_size")) p.presence_context_size = static_cast<int64_t>(*v);
  if (auto v = num("frequency_penalty")) p.frequency_penalty = static_cast<float>(*v);
  if (auto v = num("frequency_context_size")) p.frequency_context_size = static_cast<int64_t>(*v);
  if (auto v = num("seed")) p.seed = static_cast<uint64_t>(*v);
  if (auto v = num("max_kv_size")) p.max_kv_size = static_cast<int64_t>(*v);
  if (auto v = num("kv_bits")) p.kv_bits = static_cast<int>(*v);
  if (auto v = num("kv_group_size")) p.kv_group_size = static_cast<int>(*v);
  if (auto v = num("quantized_kv_start")) p.quantized_kv_start = static_cast<int64_t>(*v);
  if (auto v = num("prefill_step_size")) p.prefill_step_size = static_cast<int64_t>(*v);
  if (auto v = num("thinking_budget")) p.thinking_budget = static_cast<int64_t>(*v);
  if (s.contains("skip_special_tokens") && s["skip_special_tokens"].is_boolean())
    p.skip_special_tokens = s["skip_special_tokens"].get<bool>();
  if (s.contains("enable_thinking") && s["enable_thinking"].is_boolean())
    p.enable_thinking = s["enable_thinking"].get<bool>();
  if (s.contains("thinking_start_token") && s["thinking_start_token"].is_string())
    p.thinking_start_token = s["thinking_start_token"].get<std::string>();
  if (s.contains("thinking_end_token") && s["thinking_end_token"].is_string())
    p.thinking_end_token = s["thinking_end_token"].get<std::string>();
  if (s.contains("logit_bias") && s["logit_bias"].is_object()) {
    for (const auto& [k, v] : s["logit_bias"].items()) {
      VLM_CHECK(v.is_number(), ErrorKind::kInvalidArgument, "logit_bias[{}]: expected a number", k);
      p.logit_bias[static_cast<int32_t>(std::stol(k))] = v.get<float>();
    }
  }
  p.validate();
  return p;
}

EngineOutcome run_engine_job(const EngineJob& job, const EngineCallbacks& cb) {
  EngineOutcome out;
  auto& t = out.timing;
  auto& m = out.metrics;
  auto& tracker = MemoryTracker::instance();
  tracker.reset_peak_all();  // the peak belongs to this model alone (check_models §8 fix)
  const auto total_start = Clock::now();
  out.provenance.model = job.model;
  out.provenance.requested_revision = job.revision;
  Json diag = Json::object();
  const bool on_gpu = job.device != "cpu";
  int64_t gpu_peak = 0;  // bytes: the GPU tracker's peak over load + generation (cuda only)
  try {
    // input_validation: the generation settings, and the image decoded exactly as the model will see it.
    auto t0 = Clock::now();
    GenerationParams params;
    in_phase("input_validation", cb, [&] {
      params = generation_params_from_settings(job.generation);  // a bad setting is this job's failure
      if (!job.image_path.empty()) (void)decode_image_file(job.image_path);
      return 0;
    });
    t.input_validation_time_s = seconds_since(t0);

    // model_load: resolve in the cache, read config, open + validate every weight file.
    t0 = Clock::now();
    ResolvedModel resolved;
    ModelConfig config;
    LoadedModel loaded;
    in_phase("model_load", cb, [&] {
      resolved = resolve_model(job.model, job.revision, job.cache_dir);
      out.provenance.resolved_revision = resolved.revision;
      out.provenance.snapshot_path = sanitize_path(resolved.snapshot);
      config = ModelConfig::load(resolved.snapshot + "/config.json");
      out.provenance.model_type = config.model_type;
      out.provenance.dtype = config.torch_dtype.value_or("");
      out.provenance.quantization = quantization_text(config);
      m.model_size_gb = static_cast<double>(folder_weight_bytes(resolved.snapshot)) / kGB;
      const bool with_image = !job.image_path.empty() && config.has_vision();
      if (with_image && !has_vision_model(config.model_type)) {
        // Weights are still validated (a corrupt file fails here), then the missing part is named.
        (void)Checkpoint::open(resolved.snapshot, LoadMode::kLazy);
        throw_error(ErrorKind::kUnsupported, "model_type '{}': the vision encoder is not built yet in vlmcheck",
                    config.model_type);
      }
      LoadOptions lo;
      lo.mode = job.lazy_load ? LoadMode::kLazy : LoadMode::kEager;
      lo.adapter_path = job.adapter_path;
      lo.text_only = !with_image;  // a text-only run of a VLM needs no vision tower
      loaded = load_model(resolved.snapshot, lo);
      VLM_CHECK(!with_image || loaded.vision, ErrorKind::kUnsupported,
                "model_type '{}' loaded without its vision model", config.model_type);
      move_language_model(loaded, job);
      return 0;
    });
    t.model_load_time_s = seconds_since(t0);
    m.model_load_active_memory_gb = static_cast<double>(tracker.snapshot(MemDevice::kHost).active) / kGB;
    if (on_gpu) gpu_peak = tracker.snapshot(MemDevice::kGpu).peak;  // the upload's peak, before generate resets it

    // prompt_prep: tokenizer, conversation, chat template, token ids.
    t0 = Clock::now();
    std::unique_ptr<Tokenizer> tok;
    std::string rendered;
    std::vector<int32_t> ids;
    PreparedPrompt prepared;
    bool use_image = !job.image_path.empty() && config.has_vision();
    in_phase("prompt_prep", cb, [&] {
      tok = Tokenizer::from_folder(resolved.snapshot);
      diag["model_type"] = config.model_type;
      if (auto tc = TokenizerConfig::load_from_folder(resolved.snapshot); tc && tc->tokenizer_class)
        diag["tokenizer_class"] = *tc->tokenizer_class;
      Json special = Json::array(), special_ids = Json::array();
      for (int32_t id : tok->special_ids()) {
        if (special.size() >= 32) break;
        special.push_back(tok->id_to_token(id));
        special_ids.push_back(id);
      }
      diag["special_tokens"] = special;
      diag["special_token_ids"] = special_ids;
      if (auto eos = tok->eos_token()) {
        diag["eos_token"] = *eos;
        if (auto id = tok->token_to_id(*eos)) diag["eos_token_id"] = *id;
      }
      Json notes = Json::array();
      if (!job.image_path.empty() && !config.has_vision())
        notes.push_back("config.json has no vision_config: a text-only model; the image is not passed to it");
      if (!ProcessorConfig::load_from_folder(resolved.snapshot) && config.has_vision())
        notes.push_back("neither preprocessor_config.json nor processor_config.json is present");
      diag["snapshot_notes"] = notes;
      prepared = prepare_conversation(resolved.snapshot, *tok, job, use_image, loaded);
      rendered = prepared.text;
      ids = prepared.ids;  // the text-model rule (template writes BOS) or the VLM processor's rule
      return 0;
    });
    // Image decoding/processing and vision encoding are timed as their own stages (check_models §3.1).
    t.image_preprocess_time_s = prepared.image_preprocess_s;
    t.vision_encode_time_s = prepared.vision_encode_s;
    t.prompt_prep_time_s =
        std::max(0.0, seconds_since(t0) - prepared.image_preprocess_s - prepared.vision_encode_s);
    m.image_tokens = prepared.image_tokens;
    if (!prepared.image_info.empty()) {
      const ImageInfo& img = prepared.image_info.front();
      diag["processed_image_width"] = img.processed_width;
      diag["processed_image_height"] = img.processed_height;
      diag["image_tiles"] = img.tiles;
      diag["image_backend"] = img.backend;
    }
    if (prepared.processor_encoding) diag["image_processor"] = prepared.processor_family;
    diag["rendered_prompt"] = rendered;
    diag["rendered_prompt_chars"] = utf8_length(rendered);
    diag["rendered_prompt_hash_sha256"] = sha256_hex(rendered);
    diag["rendered_prompt_preview"] = truncate_chars(rendered, 800, false);
    // With the model's processor: its own placeholder (Qwen's <|image_pad|> included), and at least the images
    // it expanded (PaliGemma's processor writes the image tokens itself). Else check_models' heuristic over the
    // usual placeholder spellings.
    diag["image_placeholder_count"] =
        prepared.processor_encoding
            ? std::max<int64_t>(prepared.placeholder_count, static_cast<int64_t>(prepared.images.size()))
            : count_image_placeholders(rendered);
    diag["generate_kwargs"] = job.generation;
    m.prompt_tokens = static_cast<int64_t>(ids.size());

    // prefill + decode (the engine reports its own stage split and true TTFT).
    t0 = Clock::now();
    params.extra_eos_ids = extra_eos_ids(job.generation, *tok);
    GenerationResult g = in_phase("prefill", cb, [&] {
      std::vector<int32_t> eos = collect_eos_ids(loaded, *tok, params.extra_eos_ids);
      GenerateRequest req;
      req.prompt_ids = ids;
      req.multimodal = prepared.multimodal ? &*prepared.multimodal : nullptr;
      req.times.image_preprocess_s = prepared.image_preprocess_s;
      req.times.vision_encode_s = prepared.vision_encode_s;
      int64_t n = 0;
      auto gen_start = Clock::now();
      std::optional<Clock::time_point> first;
      StreamCallback on_piece = [&](const std::string&, int32_t) {
        if (!first) {
          first = Clock::now();
          if (cb.on_phase) cb.on_phase("decode");
        }
        ++n;
        if (cb.on_token) cb.on_token(n, seconds_since(*first));
        return true;
      };
      (void)gen_start;
      return generate(*loaded.language_model, *tok, eos, req, params, on_piece);
    });
    // generation_time_s covers image preprocessing + vision + prefill + decode (record.h).
    t.generation_time_s = seconds_since(t0) + prepared.image_preprocess_s + prepared.vision_encode_s;
    t.prefill_time_s = g.times.prefill_s;
    t.decode_time_s = g.times.decode_s;
    t.first_token_latency_s = g.ttft_s;
    out.generated_text = g.text;
    out.finish_reason = g.finish_reason;
    m.prompt_tokens = g.prompt_tokens;
    m.generation_tokens = g.generation_tokens;
    m.total_tokens = g.prompt_tokens + g.generation_tokens;
    m.prompt_tps = g.prompt_tps;
    m.generation_tps = g.generation_tps;
    m.generation_tps_valid = g.generation_tokens >= 16;
    auto snap = tracker.snapshot(MemDevice::kHost);
    m.active_memory_gb = static_cast<double>(snap.active) / kGB;
    m.cache_memory_gb = static_cast<double>(snap.cache) / kGB;
    m.peak_memory_gb = static_cast<double>(std::max<int64_t>(snap.peak, g.peak_host_bytes)) / kGB;
    if (on_gpu) gpu_peak = std::max({gpu_peak, g.peak_gpu_bytes, tracker.snapshot(MemDevice::kGpu).peak});
    m.peak_memory_delta_gb = std::max(0.0, m.peak_memory_gb - m.model_load_active_memory_gb);
    t.stop_reason = g.finish_reason == "length" ? "max_tokens" : g.finish_reason == "stop" ? "completed"
                                                                                           : g.finish_reason;
    if (t.stop_reason.empty()) t.stop_reason = g.generation_tokens >= params.max_tokens ? "max_tokens" : "completed";
    out.success = true;
    t.total_time_s = seconds_since(total_start);
  } catch (const PhaseError& e) {
    out.success = false;
    out.error_phase = e.phase;
    out.error_kind = e.kind;
    out.error_message = e.message;
    t.total_time_s = seconds_since(total_start);
    t.stop_reason = "exception";
  }
  if (!diag.empty()) out.prompt_diagnostics = diag;
  // cleanup is the parent's (the worker exits); the residue is what the tracker still holds.
  if (cb.on_phase) cb.on_phase("cleanup");
  auto snap = MemoryTracker::instance().snapshot(MemDevice::kHost);
  if (m.peak_memory_gb == 0) m.peak_memory_gb = static_cast<double>(snap.peak) / kGB;
  m.post_cleanup_active_memory_gb = static_cast<double>(snap.active) / kGB;
  m.post_cleanup_cache_memory_gb = static_cast<double>(snap.cache) / kGB;
  m.peak_rss_gb = static_cast<double>(process_memory().peak_rss) / kGB;
  // A failed job keeps the GPU peak it reached (an out-of-memory prefill shows how far it got).
  if (on_gpu) gpu_peak = std::max(gpu_peak, MemoryTracker::instance().snapshot(MemDevice::kGpu).peak);
  m.peak_gpu_memory_gb = static_cast<double>(gpu_peak) / kGB;
  return out;
}

}  // namespace vlm::check
