// The data-shaped artefacts: run.json, results.tsv, the history line, the image preview, and the
// writer that runs every renderer in check_models' order (JSONL is already on disk by then).
#include <sys/stat.h>
#include <turbojpeg.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "check/assessment.h"
#include "check/report.h"
#include "check/sha256.h"
#include "check/text_util.h"
#include "core/error.h"
#include "image/image.h"

namespace vlm::check {
namespace {

void write_text_file(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw_error(ErrorKind::kIo, "{}: cannot write", tmp);
    out << text;
    if (!out) throw_error(ErrorKind::kIo, "{}: write failed", tmp);
  }
  std::filesystem::rename(tmp, path);  // atomic: a reader never sees half a report
}

std::string tsv_cell(const std::string& s, size_t cap = 0) {
  std::string v = cap ? truncate_chars(s, cap) : s, out;
  for (char c : v) {
    if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out;
}

std::string num(double v, int decimals = 3) { return fmt::format("{:.{}f}", v, decimals); }

// Area-average downscale of 8-bit RGB [h, w, 3] so the longer side is at most `max_side`.
std::vector<unsigned char> downscale(const Image& img, int max_side, int* ow, int* oh) {
  int w = img.width(), h = img.height();
  double scale = std::min(1.0, static_cast<double>(max_side) / std::max(w, h));
  *ow = std::max(1, static_cast<int>(std::lround(w * scale)));
  *oh = std::max(1, static_cast<int>(std::lround(h * scale)));
  std::vector<unsigned char> out(static_cast<size_t>(*ow) * *oh * 3);
  for (int y = 0; y < *oh; ++y) {
    int y0 = y * h / *oh, y1 = std::max(y0 + 1, (y + 1) * h / *oh);
    for (int x = 0; x < *ow; ++x) {
      int x0 = x * w / *ow, x1 = std::max(x0 + 1, (x + 1) * w / *ow);
      for (int c = 0; c < 3; ++c) {
        uint64_t sum = 0;
        for (int yy = y0; yy < y1; ++yy)
          for (int xx = x0; xx < x1; ++xx) sum += img.row(yy)[xx * img.channels() + c];
        uint64_t n = static_cast<uint64_t>(y1 - y0) * static_cast<uint64_t>(x1 - x0);
        out[(static_cast<size_t>(y) * *ow + x) * 3 + c] = static_cast<unsigned char>((sum + n / 2) / n);
      }
    }
  }
  return out;
}

}  // namespace

Json default_output_files() {
  return Json{{"output_index", "index.md"},
              {"results_html", "reports/results.html"},
              {"model_gallery", "reports/model_gallery.md"},
              {"diagnostics", "reports/diagnostics.md"},
              {"results_jsonl", "results.jsonl"},
              {"results_history", "results.history.jsonl"},
              {"run_json", "run.json"},
              {"results_tsv", "results.tsv"},
              {"log", "vlmcheck.log"},
              {"environment", "environment.log"},
              {"preview", "reports/assets/source-image.jpg"},
              {"issues_dir", "issues"}};
}

std::string output_file(const RunRecords& run, const std::string& key) {
  const Json& f = run.header.output_files;
  if (f.is_object() && f.contains(key) && f[key].is_string()) return f[key].get<std::string>();
  return default_output_files()[key].get<std::string>();
}

std::string make_preview_jpeg(const RunRecords& run) {
  const auto& im = run.header.image;
  struct stat st{};
  if (im.path.empty() || ::stat(im.path.c_str(), &st) != 0) return "";
  if (sha256_file_hex(im.path) != im.sha256) return "";
  DecodedImage d = decode_image_file(im.path);
  int w = 0, h = 0;
  auto rgb = downscale(d.image, 1024, &w, &h);
  tjhandle tj = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  int rc = tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_420, 85, 0);
  std::string out;
  if (rc == 0) out.assign(reinterpret_cast<char*>(jpeg), size);
  tjFree(jpeg);
  tjDestroy(tj);
  return out;
}

std::string render_results_tsv(const RunRecords& run) {
  std::string out = "# generated_at: " + run.header.timestamp + "\n";
  out +=
      "model\texecution\tusability\tmaintainer_status\tobservations\tfailure_phase\terror_stage\terror_code\t"
      "error_package\tsignal\ttotal_time_s\tmodel_load_time_s\tgeneration_time_s\tfirst_token_latency_s\t"
      "prompt_tokens\tgeneration_tokens\tprompt_tps\tgeneration_tps\tpeak_memory_gb\tpeak_rss_gb\tresolved_revision\t"
      "output\n";
  for (const auto* r : sort_for_chooser(run.results)) {
    std::string obs;
    for (const auto& o : r->assessment.observations) obs += (obs.empty() ? "" : ",") + o;
    const Failure f = r->failure.value_or(Failure{});
    out += fmt::format(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n", tsv_cell(r->model),
        r->assessment.execution, r->assessment.usability, r->assessment.maintainer_status, obs, f.phase, f.stage,
        f.code, f.package, f.signal, num(r->timing.total_time_s), num(r->timing.model_load_time_s),
        num(r->timing.generation_time_s), num(r->timing.first_token_latency_s), r->metrics.prompt_tokens,
        r->metrics.generation_tokens, num(r->metrics.prompt_tps, 1),
        r->metrics.generation_tps_valid ? num(r->metrics.generation_tps, 1) : "", num(r->metrics.peak_memory_gb),
        num(r->metrics.peak_rss_gb), r->model_provenance.resolved_revision,
        tsv_cell(r->failure ? r->failure->message : r->generated_text, 200));
  }
  return out;
}

std::string render_run_json(const RunRecords& run) {
  const auto& h = run.header;
  Counts c = count_results(run.results);
  Json j = Json::object();
  j["schema_version"] = "2.0";
  j["generated_at"] = run.footer ? run.footer->timestamp : h.timestamp;
  j["started_at"] = h.timestamp;
  j["eval_mode"] = h.eval_mode;
  j["prompt"] = h.prompt;
  j["prompt_sha256"] = h.prompt_sha256;
  j["metadata_exposed_to_prompt"] = h.metadata_exposed_to_prompt;
  j["total_runtime_seconds"] = run.footer ? std::round(run.footer->total_runtime_seconds * 1000.0) / 1000.0 : 0.0;
  j["interrupted"] = run.footer ? run.footer->interrupted : true;
  j["counts"] = Json{{"models_attempted", c.attempted}, {"models_evaluated", c.evaluated},
                     {"models_completed", c.completed}, {"models_crashed", c.crashed},
                     {"models_indeterminate", c.indeterminate}};
  Json artifacts = Json::object();
  for (const char* k : {"output_index", "results_html", "model_gallery", "diagnostics", "results_jsonl", "run_json",
                        "results_tsv", "log", "environment"})
    artifacts[k] = output_file(run, k);
  if (!render_run_issue_md(run).empty()) artifacts["run_issue_summary"] = output_file(run, "issues_dir") + "/run_summary.md";
  j["artifacts"] = artifacts;
  j["library_versions"] = h.library_versions;
  j["producer"] = h.producer;
  j["system"] = h.system;
  Json image = encode(h.image);
  image.erase("path");  // public artefact: name only
  j["image"] = image;
  j["generation_settings"] = h.generation_settings;
  j["trust_remote_code"] = false;  // a native engine runs no repository code
  Json prov = Json::object(), burden = Json::object(), devices = Json::object();
  for (const auto& r : run.results) {
    prov[r.model] = encode(r.model_provenance);
    if (!r.device.empty()) devices[r.model] = r.device;  // vlmcheck's addition: where the language model ran
    const Json& d = r.prompt_diagnostics;
    burden[r.model] = Json{{"total_tokens", r.metrics.prompt_tokens},
                           {"image_tokens", r.metrics.image_tokens},
                           {"image_placeholder_count", d.is_object() ? d.value("image_placeholder_count", 0) : 0}};
  }
  j["model_provenance"] = prov;
  j["prompt_burden"] = burden;
  j["model_devices"] = devices;
  j["cache_discovery"] = h.cache_discovery;
  j["quality_thresholds"] = h.quality_thresholds;
  // Sorted keys, pretty-printed, as check_models writes run.json.
  nlohmann::json sorted = nlohmann::json::parse(j.dump());
  return sorted.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Json history_record(const RunRecords& run) {
  const auto& h = run.header;
  Json results = Json::object();
  for (const auto& r : run.results) {
    const Failure f = r.failure.value_or(Failure{});
    results[r.model] = Json{{"success", !r.failure.has_value()},
                            {"failure_phase", f.phase},
                            {"error_stage", f.stage},
                            {"error_type", f.exception_type},
                            {"error_package", f.package},
                            {"error_code", f.code},
                            {"error_signature", f.signature},
                            {"stop_reason", r.timing.stop_reason},
                            {"prompt_tokens", r.metrics.prompt_tokens},
                            {"generation_tokens", r.metrics.generation_tokens},
                            {"total_tokens", r.metrics.total_tokens},
                            {"generation_tps", r.metrics.generation_tps},
                            {"device", r.device},
                            {"peak_memory_gb", r.metrics.peak_memory_gb},
                            {"peak_gpu_memory_gb", r.metrics.peak_gpu_memory_gb},
                            {"active_memory_gb", r.metrics.active_memory_gb},
                            {"cache_memory_gb", r.metrics.cache_memory_gb},
                            {"post_cleanup_active_memory_gb", r.metrics.post_cleanup_active_memory_gb},
                            {"post_cleanup_cache_memory_gb", r.metrics.post_cleanup_cache_memory_gb},
                            {"generation_time_s", r.timing.generation_time_s},
                            {"model_load_time_s", r.timing.model_load_time_s},
                            {"total_time_s", r.timing.total_time_s}};
  }
  return Json{{"_type", "run"},
              {"format_version", "1.0"},
              {"timestamp", h.timestamp},
              {"prompt_hash", h.prompt_sha256},
              {"prompt_preview", truncate_chars(h.prompt, 200, false)},
              {"image_path", sanitize_path(h.image.path)},
              {"system", h.system},
              {"library_versions", h.library_versions},
              {"eval_mode", h.eval_mode},
              {"model_results", results}};
}

RenderResult render_reports(const RunRecords& run, const std::string& output_dir) {
  RenderResult res;
  auto path_of = [&](const std::string& key) {
    std::string rel = output_file(run, key);
    return starts_with(rel, "/") ? rel : output_dir + "/" + rel;
  };
  auto attempt = [&](const char* what, const std::string& path, auto&& make) {
    try {
      write_text_file(path, make());
      res.written.push_back(path);
    } catch (const std::exception& e) {
      res.warnings.push_back(fmt::format("{}: {}", what, e.what()));
    }
  };
  std::string preview;
  try {
    preview = make_preview_jpeg(run);
  } catch (const std::exception& e) {
    res.warnings.push_back(fmt::format("image preview: {}", e.what()));
  }
  if (!preview.empty()) attempt("preview", path_of("preview"), [&] { return preview; });
  // Issue drafts: stale ones are removed each render, then the current ones written.
  std::string issues = path_of("issues_dir");
  std::error_code ec;
  if (std::filesystem::is_directory(issues, ec))
    for (const auto& e : std::filesystem::directory_iterator(issues, ec))
      if (e.path().extension() == ".md") std::filesystem::remove(e.path(), ec);
  for (const auto& r : run.results)
    if (r.assessment.execution == "crashed")
      attempt("crash issue draft", issues + "/issue_" + slugify(r.model) + ".md",
              [&] { return render_crash_issue_md(run, r); });
  std::string summary = render_run_issue_md(run);
  if (!summary.empty()) attempt("run issue summary", issues + "/run_summary.md", [&] { return summary; });
  attempt("diagnostics", path_of("diagnostics"), [&] { return render_diagnostics_md(run); });
  attempt("run.json", path_of("run_json"), [&] { return render_run_json(run); });
  attempt("gallery", path_of("model_gallery"), [&] { return render_gallery_md(run, !preview.empty()); });
  attempt("index", path_of("output_index"), [&] { return render_index_md(run); });
  attempt("tsv", path_of("results_tsv"), [&] { return render_results_tsv(run); });
  attempt("html", path_of("results_html"), [&] { return render_results_html(run, preview); });
  return res;
}

}  // namespace vlm::check
