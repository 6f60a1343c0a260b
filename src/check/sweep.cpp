// The run orchestration of sweep.h. Order of work follows check_models §2 with one process per
// model: image → metadata → lane prompt → models → (dry run stops here) → header line → per model:
// worker, record, flushed line → footer → reports from the re-read JSONL → history → summary.
#include "check/sweep.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "check/analysis.h"
#include "check/assessment.h"
#include "check/console.h"
#include "check/prompts.h"
#include "check/quality.h"
#include "check/record.h"
#include "check/report.h"
#include "check/sha256.h"
#include "check/system_info.h"
#include "check/text_util.h"
#include "check/worker.h"
#include "core/error.h"
#include "image/image.h"
#include "image/metadata.h"
#include "io/discovery.h"
#include "io/hf_cache.h"

namespace fs = std::filesystem;

namespace vlm::check {
namespace {

std::atomic<bool> g_stop{false};
void on_sigint(int) { g_stop.store(true); }

bool supported_image(const fs::path& p) {
  std::string ext = lower_ascii(p.extension().string());
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp";
}

bool looks_like_url(const std::string& s) {
  size_t colon = s.find(":/");
  if (colon == std::string::npos || colon < 2) return false;
  if (!std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (size_t i = 0; i < colon; ++i) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '.' || c == '-')) return false;
  }
  return true;
}

// Supported images directly in `folder` (no recursion, no dot-files), newest first (mtime, then name).
std::vector<std::string> folder_images(const std::string& folder) {
  std::error_code ec;
  VLM_CHECK(fs::is_directory(folder, ec), ErrorKind::kNotFound, "--folder {}: not a directory", folder);
  std::vector<std::pair<fs::file_time_type, std::string>> found;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.' || !e.is_regular_file(ec) || !supported_image(e.path())) continue;
    found.emplace_back(e.last_write_time(ec), e.path().string());
  }
  VLM_CHECK(!found.empty(), ErrorKind::kNotFound,
            "--folder {}: no supported image (.jpg, .jpeg, .png, .webp) directly in the folder", folder);
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::string home_dir() {
  const char* h = std::getenv("HOME");
  return h ? h : "";
}

std::string json_or_empty(const std::optional<std::string>& s) { return s.value_or(""); }

Json metadata_json(const ImageMetadata& md) {
  Json j = Json::object();
  if (md.title) j["title"] = *md.title;
  if (md.description) j["description"] = *md.description;
  if (md.keywords) j["keywords"] = *md.keywords;
  if (md.date) j["date"] = *md.date;
  if (md.time) j["time"] = *md.time;
  if (md.gps) j["gps"] = *md.gps;
  if (!md.warnings.empty()) j["warnings"] = md.warnings;
  return j;
}

ImageProfile profile_image(const std::string& path, const ImageMetadata& md, const std::string& source_url) {
  ImageProfile p;
  p.path = fs::absolute(path).lexically_normal().string();
  p.name = fs::path(path).filename().string();
  p.sha256 = sha256_file_hex(path);
  p.size_bytes = static_cast<int64_t>(fs::file_size(path));
  p.mime_type = md.mime_type;
  // Verify the whole file decodes (check_models' "Cannot open or verify image" is fatal).
  DecodedImage d = decode_image_file(path);
  p.width = d.image.width();
  p.height = d.image.height();
  p.megapixels = static_cast<double>(p.width) * static_cast<double>(p.height) / 1e6;
  p.source_url = source_url;
  return p;
}

Json discovery_json(const DiscoveredModel& m) {
  return Json{{"repo_id", m.repo_id},
              {"selected", m.selected()},
              {"layout_supported", m.layout_supported},
              {"layout_reasons", m.layout_reasons},
              {"capability_verdict", image_capability_name(m.capability.verdict)},
              {"model_purpose", m.capability.purpose},
              {"capability_evidence", m.capability.evidence},
              {"skip_reasons", m.skip_reasons()},
              {"model_type", m.model_type},
              {"revision", m.revision},
              {"size_bytes", m.size_bytes},
              {"dtype", m.dtype},
              {"quantization", m.quantization}};
}

// Declared wrappers for the analysis: tokenizer specials that look like markup, the EOS token, --eos-tokens.
std::vector<std::string> declared_wrappers(const Json& diag, const Json& generation) {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    if (!s.empty() && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  };
  if (diag.is_object()) {
    if (diag.contains("special_tokens"))
      for (const auto& t : diag["special_tokens"])
        if (t.is_string() && (starts_with(t.get<std::string>(), "<") || starts_with(t.get<std::string>(), "[")))
          add(t.get<std::string>());
    if (diag.contains("eos_token") && diag["eos_token"].is_string()) add(diag["eos_token"].get<std::string>());
  }
  if (generation.contains("eos_tokens"))
    for (const auto& t : generation["eos_tokens"])
      if (t.is_string()) add(t.get<std::string>());
  return out;
}

ModelResult build_result(const std::string& model, const std::string& revision, const WorkerRun& run,
                         const PromptPlan& plan, const Json& generation, int64_t max_tokens,
                         const std::string& context_marker, const QualityThresholds& q, double timeout_s) {
  ModelResult r;
  r.model = model;
  r.timestamp = now_local_iso8601();
  r.requested_max_tokens = max_tokens;
  r.model_provenance.model = model;
  r.model_provenance.requested_revision = revision;
  if (!run.got_result) {
    // The worker died before reporting its provenance: resolve the revision here, so crash reports
    // and their reproduction commands still pin the exact snapshot. A model that does not resolve
    // keeps an empty revision (its failure message says why).
    try {
      ResolvedModel rm = resolve_model(model, revision);
      r.model_provenance.resolved_revision = rm.revision;
      r.model_provenance.snapshot_path = sanitize_path(rm.snapshot);
    } catch (const std::exception&) {
    }
  }
  if (run.got_result) {
    const EngineOutcome& o = run.outcome;
    r.metrics = o.metrics;
    r.timing = o.timing;
    r.model_provenance = o.provenance;
    r.prompt_diagnostics = o.prompt_diagnostics;
    r.generated_text = o.generated_text;
    if (r.prompt_diagnostics.is_object() && r.prompt_diagnostics.contains("model_type"))
      r.architecture = Json{{"model_type", r.prompt_diagnostics["model_type"]}};
  }
  r.metrics.generation_tps_valid = r.metrics.generation_tokens >= q.min_generation_tokens_for_tps;
  if (run.got_result && run.outcome.success) {
    AnalysisInput in;
    in.text = r.generated_text;
    in.generation_tokens = r.metrics.generation_tokens;
    in.prompt_tokens = r.metrics.prompt_tokens;
    in.prompt = plan.prompt;
    if (r.prompt_diagnostics.is_object())
      in.rendered_prompt = r.prompt_diagnostics.value("rendered_prompt", std::string());
    in.max_tokens = max_tokens;
    in.context_marker = context_marker;
    in.declared_wrappers = declared_wrappers(r.prompt_diagnostics, generation);
    TextAnalysis a = analyze_generation_text(in, q);
    r.assessment = assess_completed(a);
    return r;
  }
  // A failure: from the engine's own report, or from how the worker process ended.
  std::string phase = run.got_result ? run.outcome.error_phase : run.last_phase;
  std::string kind, message;
  if (run.got_result) {
    kind = run.outcome.error_kind;
    message = run.outcome.error_message;
  } else if (run.timed_out) {
    kind = "timeout";
    message = fmt::format("worker timed out after {:.0f} s in phase {} (stopped with SIGTERM{})", timeout_s, phase,
                          run.term_signal == SIGKILL ? ", then SIGKILL after the grace period" : "");
  } else if (run.term_signal != 0) {
    kind = "signal";
    message = fmt::format("worker process died with {} in phase {}", signal_name(run.term_signal), phase);
    if (run.term_signal == SIGKILL) message += " (killed from outside: likely the out-of-memory killer)";
  } else {
    kind = "internal";
    message = fmt::format("worker process exited with status {} in phase {} without a result", run.exit_status, phase);
  }
  Failure f = classify_failure(phase, kind, message);
  if (run.term_signal != 0) f.signal = signal_name(run.term_signal);
  f.exit_status = run.exit_status;
  f.stderr_tail = run.stderr_tail;
  r.failure = f;
  r.captured_output_on_fail = run.stdout_tail;
  r.timing.stop_reason = run.timed_out ? "timeout" : run.term_signal ? "crashed" : "exception";
  if (r.timing.total_time_s == 0) r.timing.total_time_s = run.wall_s;
  r.assessment = assess_failed(f, run.stdout_tail);
  return r;
}

std::string settings_hash(const RunHeader& h, const std::string& model) {
  return sha256_hex(Json{{"model", model}, {"prompt", h.prompt}, {"messages", h.messages}, {"image", h.image.sha256},
                         {"eval_mode", h.eval_mode}, {"generation", h.generation_settings}}
                        .dump());
}

void write_file(const std::string& path, const std::string& text, bool append = false) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
  if (!out) throw_error(ErrorKind::kIo, "{}: cannot write", path);
  out << text;
}

int run_one_image(const RunOptions& opts, const std::string& image_path, const std::string& output_dir,
                  const std::vector<std::string>& demo_models, Console& con) {
  const auto run_start = std::chrono::steady_clock::now();
  QualityConfigLoad qc = load_quality_config(opts.quality_config);
  for (const auto& w : qc.warnings) con.warn(w);
  const QualityThresholds& q = qc.thresholds;

  // Image, metadata, prompt.
  ImageMetadata md = read_image_metadata(image_path);
  for (const auto& w : md.warnings) con.warn("metadata: " + w);
  ImageProfile profile = profile_image(image_path, md, opts.image_source_url);
  con.line(fmt::format("Image: {} ({}x{}, {:.1f} MPixels)", sanitize_path(profile.path), profile.width, profile.height,
                       profile.megapixels));
  con.line("Date: " + json_or_empty(md.date) + " · Description: " + truncate_chars(json_or_empty(md.description), 80) +
           " · GPS: " + json_or_empty(md.gps));
  if (md.title) con.line("Title: " + *md.title);
  if (md.keywords) con.line("Keywords: " + truncate_chars(*md.keywords, 120));
  Json messages;
  if (!opts.messages_file.empty()) messages = load_messages_file(opts.messages_file);
  PromptPlan plan = plan_prompt(opts.eval_mode, md, opts.prompt, messages, q);
  for (const auto& w : plan.warnings) con.warn(w);
  int64_t max_tokens = opts.max_tokens.value_or(plan.default_max_tokens);
  Json generation = opts.generation;
  generation["max_tokens"] = max_tokens;
  con.line(fmt::format("Lane: {} · prompt {} characters · max tokens {}", lane_name(plan.lane),
                       utf8_length(plan.prompt), max_tokens));

  // Models: explicit list (user order) or discovery (repo id order), minus exclusions.
  std::vector<std::string> models;
  Json cache_json = Json::array();
  HfCacheLocation cache = hf_cache_location();
  std::vector<DiscoveredModel> discovered = discover_models(cache.path);
  for (const auto& d : discovered) cache_json.push_back(discovery_json(d));
  if (!opts.models.empty()) {
    for (const auto& m : opts.models) {
      VLM_CHECK(!trim(m).empty() && m.find(' ') == std::string::npos, ErrorKind::kInvalidArgument,
                "--models '{}': not a valid model id or folder", m);
      models.push_back(m);
      for (const auto& d : discovered)
        if (d.repo_id == m && d.capability.verdict == ImageCapability::kNo)
          con.warn(fmt::format("{} classifies as non-image ({}); running it because it was named explicitly", m,
                               d.capability.purpose));
    }
  } else if (!demo_models.empty()) {
    models = demo_models;
  } else {
    for (const auto& d : discovered) {
      if (d.selected()) {
        models.push_back(d.repo_id);
        if (d.capability.verdict == ImageCapability::kUnknown)
          con.warn(fmt::format("{}: image capability unknown ({}); running it anyway", d.repo_id,
                               d.capability.evidence.empty() ? "no evidence" : d.capability.evidence.front()));
      } else {
        std::string why;
        for (const auto& s : d.skip_reasons()) why += (why.empty() ? "" : "; ") + s;
        con.line(fmt::format("Skipping {}: {}", d.repo_id, why));
      }
    }
  }
  for (const auto& e : opts.exclude) {
    auto it = std::find(models.begin(), models.end(), e);
    if (it == models.end()) con.warn(fmt::format("--exclude {}: not in the model list, will have no effect", e));
    else models.erase(it);
  }
  VLM_CHECK(!models.empty(), ErrorKind::kNotFound,
            "no models to check: the cache at {} ({}) has no selectable vision-language model ({} repos skipped); "
            "download one with `hf download <repo>` or pass --models",
            cache.path, cache.source, discovered.size());

  // Header.
  RunHeader h;
  h.timestamp = now_local_iso8601();
  h.eval_mode = lane_name(plan.lane);
  h.requested_eval_mode = opts.eval_mode;
  h.metadata_exposed_to_prompt = plan.metadata_exposed_to_prompt;
  h.prompt = plan.prompt;
  h.prompt_sha256 = sha256_hex(plan.prompt);
  h.messages = plan.messages;
  h.image = profile;
  h.image_metadata = metadata_json(md);
  h.system = system_characteristics();
  h.library_versions = library_versions();
  h.producer = producer_record();
  h.generation_settings = generation;
  h.cache_discovery = cache_json;
  h.quality_thresholds = q.to_json();
  Json files = default_output_files();
  for (const auto& [k, v] : opts.output_overrides.items()) files[k] = v;
  h.output_files = files;
  h.options = Json{{"timeout_s", opts.timeout_s}, {"lazy_load", opts.lazy_load}, {"revision", opts.revision},
                   {"adapter_path", opts.adapter_path}, {"context_marker", opts.context_marker},
                   {"quality_config", qc.source}, {"rerun_triage", opts.rerun_triage},
                   {"hf_cache", sanitize_path(cache.path)}, {"device", opts.device}};
  h.models_planned = static_cast<int64_t>(models.size());

  if (opts.dry_run) {
    con.heading("Dry run: nothing is executed or written");
    con.line("Prompt:\n" + plan.prompt);
    con.line("Device: " + opts.device + (opts.device == "cpu" ? "" : " (language models; vision towers on the cpu)"));
    con.line(fmt::format("Models ({}):", models.size()));
    for (const auto& m : models) {
      std::string note;
      for (const auto& d : discovered)
        if (d.repo_id == m)
          note = fmt::format(" [model_type {}, capability {}, {:.2f} GB]", d.model_type.empty() ? "?" : d.model_type,
                             image_capability_name(d.capability.verdict), static_cast<double>(d.size_bytes) / 1e9);
      con.line("  " + m + note);
    }
    for (const auto& [k, v] : h.library_versions.items()) con.line(fmt::format("  {} {}", k, v.get<std::string>()));
    return 0;
  }

  auto path_of = [&](const std::string& key) {
    std::string rel = files[key].get<std::string>();
    return starts_with(rel, "/") ? rel : output_dir + "/" + rel;
  };
  fs::create_directories(output_dir);
  const std::string jsonl_path = path_of("results_jsonl");
  fs::create_directories(fs::path(jsonl_path).parent_path());

  // --resume: models already recorded with the same settings are skipped.
  std::vector<std::string> done;
  if (opts.resume && fs::exists(jsonl_path)) {
    RunRecords prev = read_results_jsonl(jsonl_path);
    for (const auto& r : prev.results)
      if (r.settings_hash == settings_hash(h, r.model) && !r.failure) done.push_back(r.model);
  }
  bool append = opts.resume && fs::exists(jsonl_path);
  JsonlWriter jsonl(jsonl_path, !append);
  jsonl.write(encode(h));
  write_file(path_of("environment"),
             fmt::format("vlmcheck environment\nsystem: {}\nlibraries: {}\nproducer: {}\n", h.system.dump(2),
                         h.library_versions.dump(2), h.producer.dump(2)));
  std::string log_path = path_of("log");
  write_file(log_path, fmt::format("{} vlmcheck run: {} models, lane {}, image {}\n", h.timestamp, models.size(),
                                   h.eval_mode, profile.name));

  // Ctrl-C: stop the current worker, keep everything finished, exit 130.
  g_stop.store(false);
  struct sigaction sa{}, old_int{}, old_term{};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  con.line(fmt::format("Processing {} model(s) on {}...", models.size(), opts.device));
  std::vector<ModelResult> finished;
  int skipped = 0;
  int index = 0;
  for (const auto& model : models) {
    ++index;
    if (g_stop.load()) break;
    if (std::find(done.begin(), done.end(), model) != done.end()) {
      con.line(fmt::format("[{}/{}] {}: already in {} with the same settings (--resume), skipped", index,
                           models.size(), model, jsonl_path));
      ++skipped;
      continue;
    }
    EngineJob job;
    job.model = model;
    job.revision = opts.revision;
    job.image_path = profile.path;
    job.prompt = plan.prompt;
    job.messages = plan.messages;
    job.messages_file = opts.messages_file;
    job.generation = generation;
    job.lazy_load = opts.lazy_load;
    job.adapter_path = opts.adapter_path;
    job.device = opts.device;
    con.start_model(index, static_cast<int>(models.size()), model);
    WorkerProgress progress;
    progress.on_phase = [&](const std::string& p) { con.phase(p); };
    progress.on_token = [&](int64_t n, double s) { con.tokens(n, s); };
    WorkerRun wr = run_in_worker(opts.self_exe, job, opts.timeout_s, progress, g_stop);
    write_file(log_path,
               fmt::format("--- {}: phase {}, signal {}, exit {}, {:.2f}s\n=== STDOUT ===\n{}\n=== STDERR ===\n{}\n",
                           model, wr.last_phase, wr.term_signal, wr.exit_status, wr.wall_s, wr.stdout_tail,
                           wr.stderr_tail),
               true);
    if (wr.interrupted) {
      con.line(fmt::format("Interrupted while running {}; its partial run is not recorded", model));
      break;
    }
    ModelResult r =
        build_result(model, opts.revision, wr, plan, generation, max_tokens, opts.context_marker, q, opts.timeout_s);
    r.settings_hash = settings_hash(h, model);
    r.device = job.device;  // known even when the worker died before reporting
    validate_assessment(model, r.assessment);
    jsonl.write(encode(r));  // results.jsonl first, flushed per model
    con.done_model(r);
    finished.push_back(std::move(r));
  }

  // --rerun-triage: a short, fixed second attempt for models that need maintainer attention.
  if (opts.rerun_triage && !g_stop.load()) {
    for (const auto& r : finished) {
      if (g_stop.load()) break;
      const auto& ms = r.assessment.maintainer_status;
      if (ms != "actionable_failure" && ms != "observation_needs_reproduction") continue;
      EngineJob job;
      job.model = r.model;
      job.revision = opts.revision;
      job.image_path = profile.path;
      job.prompt = kTriagePrompt;
      job.generation = generation;
      job.generation["max_tokens"] = 100;
      job.generation["temperature"] = 0.0;
      job.lazy_load = opts.lazy_load;
      job.adapter_path = opts.adapter_path;
      job.device = opts.device;
      // check_models' fixed 60 s, unless the user asked for a tighter per-model limit.
      const double rerun_timeout = std::min(60.0, opts.timeout_s);
      con.line("Rerun (triage): " + r.model);
      WorkerRun wr = run_in_worker(opts.self_exe, job, rerun_timeout, {}, g_stop);
      bool ok = wr.got_result && wr.outcome.success;
      Json ev{{"success", ok},
              {"prompt", kTriagePrompt},
              {"max_tokens", 100},
              {"timeout_s", rerun_timeout},
              {"failure_phase", ok ? "" : (wr.got_result ? wr.outcome.error_phase : wr.last_phase)},
              {"error", ok ? "" : (wr.got_result ? wr.outcome.error_message
                                                 : (wr.term_signal ? signal_name(wr.term_signal) : "no result"))},
              {"output_chars", ok ? utf8_length(wr.outcome.generated_text) : 0},
              {"generation_time_s", ok ? wr.outcome.timing.generation_time_s : 0.0}};
      jsonl.write(Json{{"_type", "rerun"}, {"model", r.model}, {"evidence", ev}});
    }
  }

  bool interrupted = g_stop.load();
  RunFooter footer;
  footer.timestamp = now_local_iso8601();
  footer.total_runtime_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  footer.interrupted = interrupted;
  footer.models_skipped_resume = skipped;
  for (const auto& r : finished) (r.failure ? footer.models_failed : footer.models_completed)++;
  jsonl.write(encode(footer));
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);

  // Reports are rendered from the records on disk, exactly as `vlmcheck report` does.
  RunRecords records = read_results_jsonl(jsonl_path);
  RenderResult rendered = render_reports(records, output_dir);
  for (const auto& w : rendered.warnings) con.warn("report: " + w);
  write_file(path_of("results_history"), history_record(records).dump(-1, ' ', false, Json::error_handler_t::replace) + "\n",
             true);
  con.summary_table(records.results);
  con.line("Reports:");
  for (const auto& p : rendered.written) con.line("  " + p);
  con.line("  " + jsonl_path);
  con.line(fmt::format("Overall runtime: {:.2f}s", footer.total_runtime_seconds));
  if (interrupted) {
    con.line("Interrupted: everything finished so far is written.");
    return 130;
  }
  return 0;
}

}  // namespace

std::optional<DemoAssets> find_demo_assets() {
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("VLMCHECK_ASSETS"); env && *env) roots.push_back(fs::path(env));
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (fs::path p = exe.parent_path(); !ec && !p.empty() && p != p.root_path(); p = p.parent_path())
    roots.push_back(p / "assets");
  for (const auto& root : roots) {
    fs::path demo = fs::exists(root / "demo") ? root / "demo" : root;
    // Preferred: the trained demo VLM with a held-out sample scene (docs/DEMO_MODEL.md), a model that sees.
    if (fs::exists(demo / "vlm/config.json", ec) && fs::exists(demo / "scenes/scene_00.png", ec))
      return DemoAssets{(demo / "scenes/scene_00.png").string(), fs::absolute(demo / "vlm").lexically_normal().string()};
    fs::path image = demo / "sample.jpg";
    if (!fs::exists(image, ec)) continue;
    DemoAssets a;
    a.image = image.string();
    // The demo model: assets/demo/model when present, else the repository's tiny text fixture.
    for (fs::path m : {demo / "model", root.parent_path() / "tests/fixtures/text/qwen2"})
      if (fs::exists(m / "config.json", ec)) {
        a.model = fs::absolute(m).lexically_normal().string();
        break;
      }
    return a;
  }
  return std::nullopt;
}

int run_check(const RunOptions& opts) {
  Console con(stdout, opts.color, opts.width);
  con.heading("vlmcheck: Vision Language Model Check");
  // Image selection (check_models §2.2, plus --images / --folder --all).
  std::vector<std::string> images;
  std::vector<std::string> demo_models;
  for (const auto& p : std::vector<std::string>{opts.image}) {
    if (p.empty()) continue;
    VLM_CHECK(!looks_like_url(p), ErrorKind::kInvalidArgument,
              "--image {}: looks like a URL; download the file first (record its origin with --image-source-url)", p);
    images.push_back(p);
  }
  for (const auto& p : opts.images) {
    VLM_CHECK(!looks_like_url(p), ErrorKind::kInvalidArgument, "--images {}: looks like a URL; download it first", p);
    images.push_back(p);
  }
  std::string folder = opts.folder;
  if (images.empty() && folder.empty()) {
    folder = home_dir() + "/Pictures/Processed";
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) {
      auto demo = find_demo_assets();
      VLM_CHECK(demo.has_value(), ErrorKind::kNotFound,
                "no --image or --folder given, the default folder {} does not exist, and no demo assets were found "
                "(set VLMCHECK_ASSETS)", folder);
      con.line(fmt::format("Assuming default folder {}: it does not exist; using the bundled demo image {}", folder,
                           sanitize_path(demo->image)));
      images.push_back(demo->image);
      folder.clear();
      // No models anywhere: the bundled demo model makes the run complete on a fresh machine.
      if (opts.models.empty()) {
        bool any_cached = false;
        for (const auto& d : discover_models(hf_cache_location().path)) any_cached |= d.selected();
        if (!any_cached && !demo->model.empty()) {
          con.line("No models in the Hugging Face cache: running the bundled demo model " + sanitize_path(demo->model));
          demo_models.push_back(demo->model);
          // Its 4-bit conversion (`vlmcheck convert`, assets/demo/vlm-4bit) runs alongside when shipped.
          if (fs::path q = fs::path(demo->model).parent_path() / "vlm-4bit"; fs::exists(q / "config.json"))
            demo_models.push_back(q.string());
        }
      }
    } else {
      con.line("Assuming default folder " + sanitize_path(folder));
    }
  }
  if (!folder.empty()) {
    auto found = folder_images(folder);
    if (opts.all_images) images.insert(images.end(), found.begin(), found.end());
    else images.push_back(found.front());
  }
  for (const auto& p : images) {
    struct stat st{};
    VLM_CHECK(::stat(p.c_str(), &st) == 0, ErrorKind::kNotFound, "image {}: not found", p);
  }
  if (images.size() == 1) return run_one_image(opts, images.front(), opts.output_dir, demo_models, con);
  // Several images: one complete run (records + reports) per image, in <output>/<image stem>/;
  // a stem met twice (a.jpg and a.png, or one name in two folders) gets -2, -3, ... .
  int rc = 0;
  std::vector<std::string> used;
  for (const auto& img : images) {
    std::string base = slugify(fs::path(img).stem().string());
    if (base.empty()) base = "image";
    std::string sub = base;
    for (int n = 2; std::find(used.begin(), used.end(), sub) != used.end(); ++n) sub = fmt::format("{}-{}", base, n);
    used.push_back(sub);
    con.heading("Image " + fs::path(img).filename().string() + " → " + sanitize_path(opts.output_dir + "/" + sub));
    rc = run_one_image(opts, img, opts.output_dir + "/" + sub, demo_models, con);
    if (rc == 130) return rc;
  }
  return rc;
}

int run_report(const std::string& jsonl_path, const std::string& output_dir) {
  RunRecords records = read_results_jsonl(jsonl_path);
  std::string dir = output_dir.empty() ? fs::absolute(jsonl_path).parent_path().string() : output_dir;
  // The JSONL's own location relative to the output dir is part of the layout; reports only need the records.
  RenderResult r = render_reports(records, dir);
  for (const auto& p : r.written) std::printf("%s\n", p.c_str());
  for (const auto& w : r.warnings) std::fprintf(stderr, "vlmcheck report: warning: %s\n", w.c_str());
  return r.warnings.empty() ? 0 : 1;
}

}  // namespace vlm::check
