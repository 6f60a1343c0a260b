// `vlmcheck generate`: one model, one conversation, text out — flags named as mlx_vlm.generate has
// them (DESIGN.md's command-line contract). Argument parsing and output only; the work is
// load_model (src/models), render_prompt + generate (src/generate).
//
// Output: the generated text on stdout (streamed as it comes with --stream), the mlx-style summary
// (prompt/generation tokens and tokens-per-sec, peak memory) on stderr. With --json, stdout is one
// JSON object with the text, ids, timings, memory, the resolved model and every effective
// parameter; --stream then writes the pieces to stderr so stdout stays one object.
//
// Images: --image P (repeatable) fills the conversation's image items in order; the model's own processor
// decodes, resizes and expands them (prepare_prompt), its vision tower encodes them, and --json reports each
// image's original and processed size, tiles, image tokens and pixel backend. Without --image a VLM loads its
// language model only (LoadOptions.text_only).
//
// Devices: --device cpu|cuda|auto (default auto: cuda when a usable GPU is present; VLMCHECK_DEVICE sets
// the default; every KV cache kind, the quantized one included, runs on either device). The
// model loads on the host, then its language model and a VLM's vision tower and projector move to the device
// (the image features come back as host floats the language model takes as input embeddings), and sampling
// stays on the host. --json reports "device", "vision_device" and,
// on CUDA, the GPU memory (active / peak / allocator cache).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/device_flag.h"
#include "cli/exit_codes.h"
#include "cli/image_flags.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/thread_pool.h"
#include "generate/generator.h"
#include "generate/prompt.h"
#include "io/config.h"
#include "io/hf_cache.h"
#include "kernels/backend.h"
#include "models/registry.h"
#include "text/tokenizer.h"

namespace vlm::cli {

namespace {

struct GenerateOptions {
  std::string model, revision, cache_dir, adapter_path;
  ImageFlags image;
  ProcessorOptions processor_options;
  std::string prompt, system, messages_file, template_kwargs;
  bool system_given = false, no_chat_template = false;
  GenerationParams params;
  // Flags kept in their raw form until validated in the callback.
  std::optional<float> repetition_penalty, presence_penalty, frequency_penalty;
  std::optional<double> kv_bits;
  std::optional<int64_t> max_kv_size, thinking_budget;
  std::optional<uint64_t> seed;
  std::string logit_bias_json;
  std::vector<std::string> eos_tokens;
  bool lazy_load = false, wired_limit = false, stream = false, json = false;
  std::string device = "auto";
  int threads = 0;
};

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::map<int32_t, float> parse_logit_bias(const std::string& text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const std::exception& e) {
    throw CLI::ValidationError("--logit-bias", fmt::format("not valid JSON ({}); expected e.g. '{{\"42\": -100}}'",
                                                           e.what()));
  }
  if (!j.is_object())
    throw CLI::ValidationError("--logit-bias", "expected a JSON object of token id -> bias, e.g. '{\"42\": -100}'");
  std::map<int32_t, float> out;
  for (const auto& [key, value] : j.items()) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(key, &used);
    } catch (...) {
      used = 0;
    }
    if (used != key.size() || id < 0 || id > INT32_MAX)
      throw CLI::ValidationError("--logit-bias", fmt::format("key '{}' is not a token id (a non-negative integer)", key));
    if (!value.is_number())
      throw CLI::ValidationError("--logit-bias", fmt::format("bias for token {} must be a number", key));
    out[static_cast<int32_t>(id)] = value.get<float>();
  }
  return out;
}

// --eos-tokens entries: a token string of the vocabulary (as mlx-vlm), or a token id.
std::vector<int32_t> resolve_eos_tokens(const std::vector<std::string>& items, const Tokenizer& tok) {
  std::vector<int32_t> ids;
  for (const std::string& s : items) {
    if (auto id = tok.token_to_id(s)) {
      ids.push_back(*id);
      continue;
    }
    auto enc = tok.encode(s, false);
    if (enc.size() == 1) {
      ids.push_back(enc[0]);
      continue;
    }
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(s, &used);
    } catch (...) {
      used = 0;
    }
    if (used == s.size() && id >= 0 && id < tok.vocab_size()) {
      ids.push_back(static_cast<int32_t>(id));
      continue;
    }
    throw_error(ErrorKind::kInvalidArgument,
                "--eos-tokens: '{}' is neither a single token of this tokenizer nor a token id below {}", s,
                tok.vocab_size());
  }
  return ids;
}

Json params_json(const GenerationParams& p, const GenerationResult& r) {
  auto opt = [](const auto& o) -> Json { return o ? Json(*o) : Json(nullptr); };
  Json bias = Json::object();
  for (const auto& [id, b] : p.logit_bias) bias[std::to_string(id)] = b;
  return Json{{"max_tokens", p.max_tokens},
              {"temperature", p.temperature},
              {"top_p", p.top_p},
              {"top_k", p.top_k},
              {"min_p", p.min_p},
              {"repetition_penalty", opt(p.repetition_penalty)},
              {"repetition_context_size", p.repetition_context_size},
              {"presence_penalty", opt(p.presence_penalty)},
              {"presence_context_size", p.presence_context_size},
              {"frequency_penalty", opt(p.frequency_penalty)},
              {"frequency_context_size", p.frequency_context_size},
              {"logit_bias", bias},
              {"seed", r.seed},
              {"eos_token_ids", p.extra_eos_ids},
              {"skip_special_tokens", p.skip_special_tokens},
              {"max_kv_size", opt(p.max_kv_size)},
              {"kv_bits", opt(p.kv_bits)},
              {"kv_group_size", p.kv_group_size},
              {"quantized_kv_start", p.quantized_kv_start},
              {"prefill_step_size", p.prefill_step_size},
              {"enable_thinking", p.enable_thinking},
              {"thinking_budget", opt(p.thinking_budget)},
              {"thinking_start_token", p.thinking_start_token},
              {"thinking_end_token", p.thinking_end_token}};
}

int run_generate(GenerateOptions& o) {
  // Refuse an unusable device before loading any weights.
  const DeviceChoice choice = choose_device(o.device);
  const Device device = choice.device;
  const std::vector<std::string>& device_warnings = choice.warnings;
  for (const std::string& w : device_warnings) VLM_LOG_WARN("{}", w);
  if (o.threads > 0) ThreadPool::set_global_threads(o.threads);
  const std::vector<std::string>& images = o.image.images;
  GenerationParams& p = o.params;
  p.validate();

  // ---- model ----
  ResolvedModel resolved = resolve_model(o.model, o.revision, o.cache_dir);
  for (const std::string& path : images)  // fail before loading weights, as decoding later would
    VLM_CHECK(std::filesystem::is_regular_file(path), ErrorKind::kNotFound, "--image {}: image file not found", path);
  if (!images.empty()) {
    // Refuse before loading weights: a text-only model, or a VLM whose vision half vlmcheck lacks.
    ModelConfig config = ModelConfig::load(resolved.snapshot + "/config.json");
    VLM_CHECK(config.has_vision(), ErrorKind::kUnsupported,
              "--image: {} (model_type '{}') is a text-only model (config.json has no vision_config)", resolved.model,
              config.model_type);
    VLM_CHECK(has_vision_model(config.model_type), ErrorKind::kUnsupported,
              "--image: vlmcheck has no vision encoder for model_type '{}' yet; text prompts work without --image",
              config.model_type);
  }
  const Clock::time_point t_load = Clock::now();
  LoadOptions lo;
  lo.mode = o.lazy_load ? LoadMode::kLazy : LoadMode::kEager;
  lo.adapter_path = o.adapter_path;
  lo.text_only = images.empty();
  LoadedModel model = load_model(resolved.snapshot, lo);
  VLM_CHECK(images.empty() || model.vision, ErrorKind::kUnsupported,
            "--image: model_type '{}' loaded without a vision model", model.config.model_type);
  model.language_model->to_device(device);
  if (model.vision) model.vision->to_device(device);  // the tower and projector run where the decoder does
  std::unique_ptr<Tokenizer> tok = Tokenizer::from_folder(resolved.snapshot);
  const double load_time_s = since(t_load);

  Json wired = nullptr;
  if (o.wired_limit) {
    std::string why;
    bool locked = model.checkpoint && model.checkpoint->lock_in_memory(&why);
    if (!model.checkpoint) why = "the loaded model exposes no checkpoint to lock";
    wired = Json{{"requested", true}, {"locked", locked}, {"reason", locked ? Json(nullptr) : Json(why)}};
    if (!locked) VLM_LOG_WARN("--wired-limit: could not lock the weights in RAM ({}); continuing unlocked", why);
  }

  // ---- prompt ----
  const Clock::time_point t_tok = Clock::now();
  PromptRequest pr;
  pr.prompt = o.prompt;
  pr.system = o.system;
  pr.has_system = o.system_given;
  pr.messages_file = o.messages_file;
  pr.image_paths = images;
  pr.processor_options = o.processor_options;
  pr.no_chat_template = o.no_chat_template;
  pr.enable_thinking = p.enable_thinking;
  pr.template_kwargs = parse_template_kwargs(o.template_kwargs);
  PreparedPrompt prompt = prepare_prompt(resolved.snapshot, *tok, pr, model.vision.get(), model.language_model.get());
  p.extra_eos_ids = resolve_eos_tokens(o.eos_tokens, *tok);
  std::vector<int32_t> eos = collect_eos_ids(model, *tok, p.extra_eos_ids);
  GenerateRequest req;
  req.prompt_ids = prompt.ids;
  req.multimodal = prompt.multimodal ? &*prompt.multimodal : nullptr;
  req.times.image_preprocess_s = prompt.image_preprocess_s;
  req.times.vision_encode_s = prompt.vision_encode_s;
  req.times.tokenize_s = std::max(0.0, since(t_tok) - prompt.image_preprocess_s - prompt.vision_encode_s);

  // ---- generate ----
  StreamCallback on_piece;
  if (o.stream) {
    std::FILE* sink = o.json ? stderr : stdout;
    on_piece = [sink](const std::string& piece, int32_t) {
      std::fwrite(piece.data(), 1, piece.size(), sink);
      std::fflush(sink);
      return true;
    };
  }
  GenerationResult r = generate(*model.language_model, *tok, eos, req, p, on_piece);
  for (const std::string& w : r.warnings) VLM_LOG_WARN("{}", w);
  r.warnings.insert(r.warnings.begin(), device_warnings.begin(), device_warnings.end());

  if (o.json) {
    Json out = Json::object();
    out["text"] = r.text;
    out["tokens"] = r.tokens;
    out["prompt_tokens"] = r.prompt_tokens;
    out["generation_tokens"] = r.generation_tokens;
    out["prompt_tps"] = r.prompt_tps;
    out["generation_tps"] = r.generation_tps;
    out["ttft_s"] = r.ttft_s;
    out["load_time_s"] = load_time_s;
    out["times"] = Json{{"tokenize_s", r.times.tokenize_s},
                        {"image_preprocess_s", r.times.image_preprocess_s},
                        {"vision_encode_s", r.times.vision_encode_s},
                        {"prefill_s", r.times.prefill_s},
                        {"decode_s", r.times.decode_s}};
    out["peak_memory_bytes"] = Json{{"host", r.peak_host_bytes}, {"gpu", r.peak_gpu_bytes}};
    out["gpu_memory_bytes"] =
        device == Device::kCpu
            ? Json(nullptr)
            : Json{{"active", r.gpu_active_bytes}, {"peak", r.peak_gpu_bytes}, {"cache", r.gpu_cache_bytes}};
    out["peak_rss_bytes"] = r.peak_rss_bytes;
    out["finish_reason"] = r.finish_reason;
    out["cached_prompt_tokens"] = r.cached_prompt_tokens;
    out["kv_cache"] = r.kv_cache;
    out["model"] = Json{{"model", resolved.model},
                        {"local", resolved.local},
                        {"repo_id", resolved.repo_id},
                        {"requested_revision", resolved.requested_revision},
                        {"revision", resolved.revision},
                        {"snapshot", resolved.snapshot},
                        {"model_type", model.config.model_type},
                        {"load_mode", o.lazy_load ? "lazy" : "eager"},
                        {"adapter_path", o.adapter_path}};
    out["device"] = r.device;
    out["vision_device"] = model.vision ? Json(device_name(model.vision->device())) : Json(nullptr);
    if (device != Device::kCpu) {
      const std::vector<GpuInfo> gpus = cuda_devices();
      out["gpu"] = gpus.empty() ? Json(nullptr) : Json(gpus.front().name);
    }
    out["threads"] = ThreadPool::global().num_threads();
    out["wired_limit"] = wired;
    out["prompt"] = prompt.text;
    out["prompt_ids"] = prompt.ids;
    out["images"] = images_json(prompt.image_info);
    out["image_tokens"] = prompt.image_tokens;
    out["stop_token_ids"] = eos;
    out["params"] = params_json(p, r);
    out["warnings"] = r.warnings;
    fmt::print("{}\n", out.dump(-1, ' ', false, Json::error_handler_t::replace));
  } else {
    if (!o.stream) fmt::print("{}", r.text);
    fmt::print("\n");
    std::fflush(stdout);
    fmt::print(stderr, "==========\n");
    for (const ImageInfo& i : prompt.image_info)
      fmt::print(stderr, "Image: {} ({}x{} -> {}x{}, {} tile(s), {} image tokens, {})\n", i.path, i.width, i.height,
                 i.processed_width, i.processed_height, i.tiles, i.image_tokens, i.backend);
    fmt::print(stderr, "Prompt: {} tokens, {:.3f} tokens-per-sec\nGeneration: {} tokens, {:.3f} tokens-per-sec\n"
                       "Peak memory: {:.3f} GB\n",
               r.prompt_tokens, r.prompt_tps, r.generation_tokens, r.generation_tps, r.peak_host_bytes / 1e9);
    if (device != Device::kCpu)
      fmt::print(stderr, "Peak GPU memory: {:.3f} GB ({})\n", r.peak_gpu_bytes / 1e9, r.device);
  }
  return kExitOk;
}

}  // namespace

void register_generate(CLI::App& root, Action& action) {
  auto o = std::make_shared<GenerateOptions>();
  GenerationParams& p = o->params;
  auto* cmd = root.add_subcommand("generate", "Generate text from one model for a prompt (flags as mlx_vlm.generate)");
  cmd->add_option("--model", o->model, "A local model folder or a repo id in the Hugging Face cache")->required();
  cmd->add_option("--revision", o->revision, "Branch, tag, commit sha or unique sha prefix (cached repos)");
  cmd->add_option("--cache-dir", o->cache_dir, "Hub cache directory (default: HF_HUB_CACHE, HF_HOME/hub, ...)");
  cmd->add_option("--adapter-path", o->adapter_path, "A LoRA adapter folder (mlx-lm or PEFT format)");
  add_image_flags(cmd, o->image);
  auto* prompt = cmd->add_option("--prompt", o->prompt, "The user's text");
  auto* system = cmd->add_option("--system", o->system, "A system message before the user's");
  auto* messages = cmd->add_option("--messages", o->messages_file,
                                   "A JSON file with a whole conversation in transformers' messages format");
  auto* no_tmpl = cmd->add_flag("--no-chat-template", o->no_chat_template, "Encode --prompt as is");
  cmd->add_option("--chat-template-kwargs", o->template_kwargs, "A JSON object of extra chat-template variables");
  messages->excludes(prompt)->excludes(system)->excludes(no_tmpl);
  system->excludes(no_tmpl);

  cmd->add_option("--max-tokens", p.max_tokens, "Maximum tokens to generate")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--temperature,--temp", p.temperature, "Sampling temperature (0 = greedy)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--top-p", p.top_p, "Nucleus sampling mass in [0, 1] (1 = off)")->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--top-k", p.top_k, "Keep the k most likely tokens (0 = off)")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--min-p", p.min_p, "Minimum probability relative to the best token, in [0, 1] (0 = off)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_option("--repetition-penalty", o->repetition_penalty, "CTRL repetition penalty (>= 0; 1 = off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--repetition-context-size", p.repetition_context_size, "Tokens the repetition penalty looks at")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--presence-penalty", o->presence_penalty, "Subtracted once from each token seen in the context");
  cmd->add_option("--presence-context-size", p.presence_context_size, "Tokens the presence penalty looks at")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--frequency-penalty", o->frequency_penalty, "Subtracted per occurrence in the context");
  cmd->add_option("--frequency-context-size", p.frequency_context_size, "Tokens the frequency penalty looks at")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--logit-bias", o->logit_bias_json, "JSON object of token id -> additive bias, e.g. '{\"42\": -100}'");
  cmd->add_option("--seed", o->seed, "Seed for sampling (default: random, reported in --json)");
  cmd->add_option("--eos-tokens", o->eos_tokens, "Extra stop tokens (token strings or ids)");
  cmd->add_flag("--skip-special-tokens", p.skip_special_tokens, "Leave special tokens out of the text");
  cmd->add_option("--max-kv-size", o->max_kv_size, "Rotating KV cache of this many tokens (keeps the first 4)")
      ->check(CLI::Range(int64_t{5}, INT64_MAX));
  cmd->add_option("--kv-bits", o->kv_bits, "Quantize the KV cache to 2, 3, 4, 5, 6 or 8 bits (MLX affine)");
  cmd->add_option("--kv-group-size", p.kv_group_size, "KV quantization group size: 32, 64 or 128")
      ->check(CLI::IsMember({32, 64, 128}))->capture_default_str();
  cmd->add_option("--quantized-kv-start", p.quantized_kv_start, "Quantize the KV cache once it holds this many tokens")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--prefill-step-size", p.prefill_step_size, "Prompt tokens per prefill chunk")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_flag("--enable-thinking", p.enable_thinking, "Let the chat template open a thinking block");
  cmd->add_option("--thinking-budget", o->thinking_budget, "Force the thinking end marker after this many tokens")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--thinking-start-token", p.thinking_start_token, "Marker that opens thinking")->capture_default_str();
  cmd->add_option("--thinking-end-token", p.thinking_end_token, "Marker that closes thinking")->capture_default_str();
  cmd->add_flag("--lazy-load", o->lazy_load, "Map the weights and let pages load on first use (default: read all)");
  cmd->add_flag("--wired-limit", o->wired_limit, "Lock the weights in RAM (mlock); a refusal is reported, not fatal");
  add_device_flag(cmd, o->device, "cpu, cuda, or auto (cuda when a GPU is usable); a VLM's vision tower too");
  cmd->add_option("--threads", o->threads, "Worker threads (default: all cores)")->check(CLI::PositiveNumber);
  cmd->add_flag("--stream", o->stream, "Print the text as it is generated");
  cmd->add_flag("--json", o->json, "Print one JSON object with the text, timings, memory and parameters");

  cmd->callback([&action, o, prompt, system] {
    o->system_given = system->count() > 0;
    if (o->messages_file.empty() && prompt->count() == 0)
      throw CLI::ValidationError("--prompt", "give --prompt (or --messages FILE)");
    GenerationParams& p = o->params;
    p.repetition_penalty = o->repetition_penalty;
    p.presence_penalty = o->presence_penalty;
    p.frequency_penalty = o->frequency_penalty;
    p.max_kv_size = o->max_kv_size;
    p.thinking_budget = o->thinking_budget;
    p.seed = o->seed;
    if (o->kv_bits) {
      double b = *o->kv_bits;
      if (b != std::floor(b))
        throw CLI::ValidationError("--kv-bits", fmt::format("{} mixes key and value bit widths, which is not "
                                                            "supported; use one of 2, 3, 4, 5, 6, 8", b));
      int bits = static_cast<int>(b);
      if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8)
        throw CLI::ValidationError("--kv-bits",
                                   fmt::format("{} is not an MLX affine bit width; use one of 2, 3, 4, 5, 6, 8", bits));
      p.kv_bits = bits;
    }
    if (!o->logit_bias_json.empty()) p.logit_bias = parse_logit_bias(o->logit_bias_json);
    o->processor_options = image_processor_options(o->image);
    try {
      p.validate();
    } catch (const Error& e) {
      throw CLI::ValidationError("generate", e.what());
    }
    action = [o] { return run_generate(*o); };
  });
}

}  // namespace vlm::cli
