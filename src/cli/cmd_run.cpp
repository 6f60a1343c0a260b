// `vlmcheck run`: check_models' flags (reference/check_models.md §1) mapped onto RunOptions, plus
// vlmcheck's --device (shared with generate/bench, cli/device_flag.h). Only parsing and validation live
// here; the sweep is src/check/sweep.cpp.
#include <filesystem>
#include <memory>

#include "check/engine_job.h"
#include "check/sweep.h"
#include "cli/command.h"
#include "cli/device_flag.h"
#include "core/error.h"
#include "core/log.h"

namespace vlm::cli {
namespace {

struct RunFlags {
  check::RunOptions o;
  std::string prompt;
  std::optional<int64_t> max_tokens, top_k, max_kv_size, thinking_budget, seed;
  double temperature = 0.0, top_p = 1.0, min_p = 0.0;
  std::optional<double> repetition_penalty, presence_penalty, frequency_penalty, kv_bits;
  int64_t repetition_context_size = 20, presence_context_size = 20, frequency_context_size = 20;
  int64_t kv_group_size = 64, quantized_kv_start = 5000, prefill_step_size = 2048;
  std::string logit_bias, processor_kwargs, thinking_start_token, thinking_end_token = "</think>";
  std::vector<std::string> eos_tokens;
  std::vector<int64_t> resize_shape;
  bool skip_special_tokens = false, enable_thinking = false, no_color = false, force_color = false;
  bool trust_remote_code = true, no_trust_remote_code = false;
  std::string output_html, output_gallery, output_jsonl, output_run_json, output_log, output_env, output_diagnostics;
  std::string device = "auto";
};

// "\n" in --eos-tokens values becomes a newline (Python's unicode_escape for the common escapes).
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char c = s[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == '\\' ? '\\' : c;
      if (c != 'n' && c != 't' && c != 'r' && c != '\\') out.insert(out.size() - 1, "\\");
    } else {
      out += s[i];
    }
  }
  return out;
}

Json build_generation(const RunFlags& f) {
  VLM_CHECK(f.temperature >= 0, ErrorKind::kInvalidArgument, "--temperature {}: must be >= 0", f.temperature);
  VLM_CHECK(f.top_p >= 0 && f.top_p <= 1, ErrorKind::kInvalidArgument, "--top-p {}: must be within 0-1", f.top_p);
  VLM_CHECK(f.min_p >= 0 && f.min_p <= 1, ErrorKind::kInvalidArgument, "--min-p {}: must be within 0-1", f.min_p);
  VLM_CHECK(!f.top_k || *f.top_k >= 0, ErrorKind::kInvalidArgument, "--top-k: must be >= 0");
  VLM_CHECK(!f.repetition_penalty || *f.repetition_penalty >= 1.0, ErrorKind::kInvalidArgument,
            "--repetition-penalty {}: must be >= 1.0", f.repetition_penalty.value_or(0));
  VLM_CHECK(f.presence_context_size > 0 && f.frequency_context_size > 0, ErrorKind::kInvalidArgument,
            "--presence-context-size / --frequency-context-size must be > 0");
  VLM_CHECK(!f.max_kv_size || *f.max_kv_size > 0, ErrorKind::kInvalidArgument, "--max-kv-size must be > 0");
  VLM_CHECK(!f.thinking_budget || f.enable_thinking, ErrorKind::kInvalidArgument,
            "--thinking-budget requires --enable-thinking");
  VLM_CHECK(f.thinking_start_token.empty() || f.enable_thinking, ErrorKind::kInvalidArgument,
            "--thinking-start-token requires --enable-thinking");
  VLM_CHECK(!f.thinking_budget || *f.thinking_budget > 0, ErrorKind::kInvalidArgument, "--thinking-budget must be > 0");
  if (f.kv_bits) {
    int b = static_cast<int>(*f.kv_bits);
    VLM_CHECK(*f.kv_bits == b && (b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8), ErrorKind::kInvalidArgument,
              "--kv-bits {}: must be one of 2, 3, 4, 5, 6, 8", *f.kv_bits);
  }
  for (int64_t v : f.resize_shape)
    VLM_CHECK(v > 0, ErrorKind::kInvalidArgument, "--resize-shape: values must be > 0");
  VLM_CHECK(f.resize_shape.size() <= 2, ErrorKind::kInvalidArgument, "--resize-shape takes 1 or 2 integers");
  // Always-sent settings, then the ones sent only when set (check_models §1.9).
  Json g = Json::object();
  g["temperature"] = f.temperature;
  g["top_p"] = f.top_p;
  g["repetition_context_size"] = f.repetition_context_size;
  g["kv_group_size"] = f.kv_group_size;
  g["quantized_kv_start"] = f.quantized_kv_start;
  g["prefill_step_size"] = f.prefill_step_size;
  if (f.min_p > 0) g["min_p"] = f.min_p;
  if (f.top_k && *f.top_k > 0) g["top_k"] = *f.top_k;
  if (f.repetition_penalty) g["repetition_penalty"] = *f.repetition_penalty;
  if (f.seed) g["seed"] = *f.seed;
  if (f.presence_penalty) {
    g["presence_penalty"] = *f.presence_penalty;
    g["presence_context_size"] = f.presence_context_size;
  }
  if (f.frequency_penalty) {
    g["frequency_penalty"] = *f.frequency_penalty;
    g["frequency_context_size"] = f.frequency_context_size;
  }
  if (!f.logit_bias.empty()) {
    Json lb = parse_json(f.logit_bias, "--logit-bias");
    VLM_CHECK(lb.is_object(), ErrorKind::kInvalidArgument, "--logit-bias: expected a JSON object of token id → bias");
    for (const auto& [k, v] : lb.items()) {
      VLM_CHECK(!k.empty() && k.find_first_not_of("-0123456789") == std::string::npos, ErrorKind::kInvalidArgument,
                "--logit-bias: key '{}' is not an integer token id", k);
      VLM_CHECK(v.is_number(), ErrorKind::kInvalidArgument, "--logit-bias[{}]: value must be a number", k);
    }
    g["logit_bias"] = lb;
  }
  if (f.max_kv_size) g["max_kv_size"] = *f.max_kv_size;
  if (f.kv_bits) g["kv_bits"] = static_cast<int>(*f.kv_bits);
  if (!f.eos_tokens.empty()) {
    Json e = Json::array();
    for (const auto& t : f.eos_tokens) e.push_back(unescape(t));
    g["eos_tokens"] = e;
  }
  if (f.skip_special_tokens) g["skip_special_tokens"] = true;
  if (f.enable_thinking) {
    g["enable_thinking"] = true;
    VLM_CHECK(!f.thinking_end_token.empty(), ErrorKind::kInvalidArgument, "--thinking-end-token must not be empty");
    g["thinking_end_token"] = f.thinking_end_token;
    if (!f.thinking_start_token.empty()) g["thinking_start_token"] = f.thinking_start_token;
    if (f.thinking_budget) g["thinking_budget"] = *f.thinking_budget;
  }
  if (!f.resize_shape.empty())
    g["resize_shape"] = f.resize_shape.size() == 1 ? Json{f.resize_shape[0], f.resize_shape[0]} : Json(f.resize_shape);
  if (!f.processor_kwargs.empty()) {
    Json pk = parse_json(f.processor_kwargs, "--processor-kwargs");
    VLM_CHECK(pk.is_object(), ErrorKind::kInvalidArgument, "--processor-kwargs: expected a JSON object");
    g["processor_kwargs"] = pk;
  }
  return g;
}

}  // namespace

void register_run(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("run", "Check every cached VLM (or --models) on an image and write reports");
  auto f = std::make_shared<RunFlags>();
  auto& o = f->o;
  // Inputs
  auto* folder = cmd->add_option("-f,--folder", o.folder, "Folder: the newest .jpg/.jpeg/.png/.webp in it (non-recursive)");
  auto* image = cmd->add_option("-i,--image", o.image, "One image file");
  folder->excludes(image);
  cmd->add_option("--images", o.images, "Several image files (one complete run each, in <output-dir>/<image>/)");
  cmd->add_flag("--all", o.all_images, "With --folder: every supported image in the folder, not only the newest");
  cmd->add_option("--image-source-url", o.image_source_url, "Public URL of the image (provenance only, never fetched)")
      ->check([](const std::string& s) {
        return (s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0) && s.find('/', s.find("//") + 2) != s.find("//") + 2
                   ? std::string()
                   : std::string("must be an absolute http(s) URL with a host");
      });
  // Models
  cmd->add_option("-m,--models", o.models, "Model ids or local folders (repeatable; disables cache discovery)");
  cmd->add_option("-e,--exclude", o.exclude, "Models to leave out (repeatable)");
  cmd->add_option("--revision", o.revision, "Revision (branch, tag or commit) for every model");
  cmd->add_option("--adapter-path", o.adapter_path, "LoRA adapter folder");
  cmd->add_flag("--trust-remote-code", f->trust_remote_code, "Accepted for check_models compatibility (no effect: no Python runs)");
  cmd->add_flag("--no-trust-remote-code", f->no_trust_remote_code, "Accepted for check_models compatibility");
  // Prompt and lane
  cmd->add_option("-p,--prompt", f->prompt, "Replace the lane prompt (the lane still sets max tokens)");
  cmd->add_option("--messages", o.messages_file, "A JSON conversation (transformers messages format) replacing the prompt");
  cmd->add_option("--eval-mode", o.eval_mode, "auto | triage | blind | assisted (stress, quality: deprecated aliases of auto)")
      ->check(CLI::IsMember({"auto", "triage", "blind", "assisted", "stress", "quality"}));
  cmd->add_option("--context-marker", o.context_marker, "Marks where prompt context starts");
  // Generation
  cmd->add_option("-x,--max-tokens", f->max_tokens, "Token cap (default: 1000, or 200 for triage)")->check(CLI::PositiveNumber);
  cmd->add_option("-t,--temperature", f->temperature, "Sampling temperature (0 = greedy)");
  cmd->add_option("--top-p", f->top_p, "Nucleus sampling mass");
  cmd->add_option("--min-p", f->min_p, "Min-p filter");
  cmd->add_option("--top-k", f->top_k, "Top-k filter (0 = off)");
  cmd->add_option("-r,--repetition-penalty", f->repetition_penalty, "Repetition penalty (>= 1)");
  cmd->add_option("--repetition-context-size", f->repetition_context_size, "Tokens the repetition penalty looks back");
  cmd->add_option("--presence-penalty", f->presence_penalty, "Presence penalty");
  cmd->add_option("--presence-context-size", f->presence_context_size, "Presence penalty window");
  cmd->add_option("--frequency-penalty", f->frequency_penalty, "Frequency penalty");
  cmd->add_option("--frequency-context-size", f->frequency_context_size, "Frequency penalty window");
  cmd->add_option("--logit-bias", f->logit_bias, "JSON object: token id → additive bias");
  cmd->add_option("--seed", f->seed, "Random seed");
  cmd->add_option("--eos-tokens", f->eos_tokens, "Extra end-of-sequence strings (\\n escapes allowed)");
  cmd->add_flag("--skip-special-tokens", f->skip_special_tokens, "Drop special tokens from the decoded text");
  cmd->add_option("--resize-shape", f->resize_shape, "Resize the image to H [W] before the processor")->expected(1, 2);
  cmd->add_option("--processor-kwargs", f->processor_kwargs, "JSON object passed to the image processor");
  cmd->add_flag("--enable-thinking", f->enable_thinking, "Enable thinking in the template and generation");
  cmd->add_option("--thinking-budget", f->thinking_budget, "Thinking token budget (needs --enable-thinking)");
  cmd->add_option("--thinking-start-token", f->thinking_start_token, "Thinking start marker");
  cmd->add_option("--thinking-end-token", f->thinking_end_token, "Thinking end marker");
  // Loading, KV cache, time
  cmd->add_flag("-L,--lazy-load", o.lazy_load, "Map weights lazily instead of reading them up front");
  cmd->add_option("--max-kv-size", f->max_kv_size, "Rotating KV cache size");
  cmd->add_option("-b,--kv-bits", f->kv_bits, "Quantize the KV cache to this many bits (2,3,4,5,6,8)");
  cmd->add_option("-g,--kv-group-size", f->kv_group_size, "KV quantization group size");
  cmd->add_option("--quantized-kv-start", f->quantized_kv_start, "Quantize the KV cache from this many tokens");
  cmd->add_option("--prefill-step-size", f->prefill_step_size, "Prefill chunk size");
  add_device_flag(cmd, f->device,
                  "Where every model runs (language model and vision tower): cpu, cuda, or auto (cuda when a GPU is "
                  "usable)");
  cmd->add_option("-T,--timeout", o.timeout_s, "Seconds per model before its worker is killed")->check(CLI::PositiveNumber);
  // Outputs
  cmd->add_option("--output-dir", o.output_dir, "Directory for every artefact (default ./output)");
  cmd->add_option("--output-html", f->output_html, "Path of results.html");
  cmd->add_option("--output-gallery-markdown", f->output_gallery, "Path of model_gallery.md");
  cmd->add_option("--output-jsonl", f->output_jsonl, "Path of results.jsonl");
  cmd->add_option("--output-run-json", f->output_run_json, "Path of run.json");
  cmd->add_option("--output-log", f->output_log, "Path of the run log");
  cmd->add_option("--output-env", f->output_env, "Path of environment.log");
  cmd->add_option("--output-diagnostics", f->output_diagnostics, "Path of diagnostics.md");
  cmd->add_option("-c,--quality-config", o.quality_config, "TOML file overriding the output-check thresholds");
  // Workflow and console
  cmd->add_flag("-n,--dry-run", o.dry_run, "Select the image and models, build the prompt, list the plan, run nothing");
  cmd->add_flag("--resume", o.resume, "Skip models already in results.jsonl with the same settings");
  cmd->add_flag("--rerun-triage", o.rerun_triage, "Re-run actionable models once with the triage prompt");
  cmd->add_flag("--no-color", f->no_color, "No ANSI colours (NO_COLOR is honoured too)");
  cmd->add_flag("--force-color", f->force_color, "ANSI colours even when piped");
  cmd->add_option("--width", o.width, "Console width");
  cmd->callback([&action, f] {
    action = [f] {
      auto& o = f->o;
      if (!f->prompt.empty()) o.prompt = f->prompt;
      o.max_tokens = f->max_tokens;
      o.generation = build_generation(*f);
      // The workers map these settings onto GenerationParams; a value it refuses (e.g. --kv-group-size 16)
      // is a usage error here (Error kInvalidArgument, exit 2), before any model runs.
      (void)check::generation_params_from_settings(o.generation);
      // Resolved once, before any model loads: `--device cuda` without a usable GPU is refused here with
      // the backend's reason (exit 5), as `generate` refuses it.
      const DeviceChoice device = choose_device(f->device);
      for (const std::string& w : device.warnings) VLM_LOG_WARN("{}", w);
      o.device = device_name(device.device);
      o.color = f->no_color ? 0 : f->force_color ? 1 : -1;
      auto override_path = [&](const char* key, const std::string& p) {
        if (!p.empty()) o.output_overrides[key] = std::filesystem::absolute(p).lexically_normal().string();
      };
      override_path("results_html", f->output_html);
      override_path("model_gallery", f->output_gallery);
      override_path("results_jsonl", f->output_jsonl);
      override_path("run_json", f->output_run_json);
      override_path("log", f->output_log);
      override_path("environment", f->output_env);
      override_path("diagnostics", f->output_diagnostics);
      return check::run_check(o);
    };
  });
}

}  // namespace vlm::cli
