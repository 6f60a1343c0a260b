// The Markdown artefacts: index.md (run dashboard), reports/model_gallery.md (for choosing a model),
// reports/diagnostics.md (maintainer triage) and the issue drafts. Markdownlint rules of check_models
// §5 apply: tables inside disable guards, model output in fences longer than any backtick run
// inside it, HTML in table cells escaped so model tokens such as <s> show as text.
#include <fmt/format.h>

#include "check/assessment.h"
#include "check/report.h"
#include "check/text_util.h"

namespace vlm::check {
namespace {

const char* kTableGuardOn = "<!-- markdownlint-disable MD013 MD033 MD034 MD037 MD049 -->\n";
const char* kTableGuardOff = "<!-- markdownlint-enable MD013 MD033 MD034 MD037 MD049 -->\n";

std::string glosses(const ModelResult& r) {
  std::string out;
  for (const auto& o : r.assessment.observations) {
    const auto* info = find_observation(o);
    out += (out.empty() ? "" : ", ") + std::string(info ? info->gloss : o.c_str());
  }
  if (r.failure) out = r.failure->phase + ": " + r.failure->stage;
  return out.empty() ? "-" : out;
}

std::string anchor(const std::string& model) { return "model-" + slugify(model); }
std::string gtps(const ModelResult& r) {
  return r.metrics.generation_tps_valid ? fmt_tps(r.metrics.generation_tps)
         : r.failure                    ? "-"
                                        : "insufficient sample";
}
std::string usability_label(const std::string& u) {
  if (u == "usable_with_caveats") return "caveats";
  if (u == "not_evaluated") return "not evaluated";
  return u;
}
std::string secs(double s) { return fmt::format("{:.2f}", s); }

std::string generated_label(const RunRecords& run) {
  return run.footer ? run.footer->timestamp : run.header.timestamp + " (run did not finish)";
}

std::string fact_list(const ModelResult& r) {
  std::string o;
  auto kv = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) o += "- **" + k + ":** " + md_text(v) + "\n";
  };
  const auto& a = r.assessment;
  kv("Execution / usability / maintainer", a.execution + " / " + a.usability + " / " + a.maintainer_status);
  for (const auto& ob : a.observations) kv("Observation", enriched_label(ob, a.details));
  if (r.failure) {
    const auto& f = *r.failure;
    kv("Failure phase", f.phase);
    kv("Error stage", f.stage);
    kv("Error code", f.code);
    kv("Signature", f.signature);
    kv("Package", f.package);
    kv("Signal", f.signal);
    kv("Message", f.message);
  }
  const auto& t = r.timing;
  const auto& m = r.metrics;
  kv("Timing (s)", fmt::format("total {} · validation {} · load {} · prompt prep {} · image {} · vision {} · "
                               "prefill {} · decode {} · first token {}",
                               secs(t.total_time_s), secs(t.input_validation_time_s), secs(t.model_load_time_s),
                               secs(t.prompt_prep_time_s), secs(t.image_preprocess_time_s),
                               secs(t.vision_encode_time_s), secs(t.prefill_time_s), secs(t.decode_time_s),
                               secs(t.first_token_latency_s)));
  kv("Tokens", fmt::format("{} prompt ({} image) + {} generated; prompt {} tok/s; generation {}", m.prompt_tokens,
                           m.image_tokens, m.generation_tokens, fmt_tps(m.prompt_tps), gtps(r)));
  kv("Memory (GB)", fmt::format("peak {} (tracker) · peak RSS {} · after load {} · post-cleanup {} · model files {}",
                                fmt_gb(m.peak_memory_gb), fmt_gb(m.peak_rss_gb), fmt_gb(m.model_load_active_memory_gb),
                                fmt_gb(m.post_cleanup_active_memory_gb), fmt_gb(m.model_size_gb)));
  kv("Device", device_summary(r));
  kv("Stop reason", t.stop_reason);
  kv("Requested max tokens", std::to_string(r.requested_max_tokens));
  kv("Triage rerun", rerun_summary(r.rerun));
  const auto& p = r.model_provenance;
  kv("Revision", (p.requested_revision.empty() ? "main" : p.requested_revision) + " → " +
                     (p.resolved_revision.empty() ? "(local folder)" : p.resolved_revision));
  kv("Snapshot", p.snapshot_path);
  kv("model_type / dtype / quantization",
     (p.model_type.empty() ? "?" : p.model_type) + " / " + (p.dtype.empty() ? "?" : p.dtype) + " / " +
         (p.quantization.empty() ? "none" : p.quantization));
  if (r.prompt_diagnostics.is_object()) {
    const Json& d = r.prompt_diagnostics;
    kv("Rendered prompt", fmt::format("{} chars, {} image placeholders, sha256 {}", d.value("rendered_prompt_chars", 0),
                                      d.value("image_placeholder_count", 0),
                                      d.value("rendered_prompt_hash_sha256", std::string())));
    if (d.contains("eos_token")) kv("EOS token", d["eos_token"].get<std::string>());
    if (d.contains("tokenizer_class")) kv("Tokenizer class", d["tokenizer_class"].get<std::string>());
    if (d.contains("snapshot_notes"))
      for (const auto& n : d["snapshot_notes"]) kv("Snapshot note", n.get<std::string>());
  }
  return o;
}

std::string output_block(const ModelResult& r) {
  std::string o;
  if (r.failure) {
    o += "Failure message:\n\n" + md_fence(r.failure->message);
    if (!r.failure->stderr_tail.empty()) o += "\nWorker stderr (tail):\n\n" + md_fence(r.failure->stderr_tail);
    if (!r.generated_text.empty()) o += "\nPartial output:\n\n" + md_fence(r.generated_text);
    return o;
  }
  o += "Output:\n\n" + md_fence(r.generated_text.empty() ? "(empty)" : r.generated_text);
  return o;
}

}  // namespace

std::string render_index_md(const RunRecords& run) {
  Counts c = count_results(run.results);
  std::string o = "# vlmcheck Output Index\n\n";
  o += fmt::format("Run started {} · lane **{}** · image `{}`\n\n", run.header.timestamp, run.header.eval_mode,
                   run.header.image.name);
  if (!run.footer) o += "> **Note:** this run did not finish; the reports cover the models completed so far.\n\n";
  else if (run.footer->interrupted) o += "> **Note:** this run was interrupted (Ctrl-C); the reports cover the models completed before it.\n\n";
  o += "## Run at a glance\n\n";
  o += fmt::format("- Attempted: {} (completed {}, crashed {}, indeterminate {})\n", c.attempted, c.completed,
                   c.crashed, c.indeterminate);
  o += fmt::format("- Usability: usable {}, with caveats {}, unusable {}, not evaluated {}\n", c.usable, c.caveats,
                   c.unusable, c.not_evaluated);
  // Top observations by registry severity, not by frequency.
  std::vector<std::pair<std::string, int>> obs;
  for (const auto& info : observation_registry()) {
    int n = 0;
    for (const auto& r : run.results)
      for (const auto& x : r.assessment.observations) n += x == info.code;
    if (n > 0) obs.emplace_back(info.code, n);
  }
  if (!obs.empty()) {
    o += "- Top observations:";
    for (size_t i = 0; i < obs.size() && i < 5; ++i)
      o += fmt::format("{} {} ({})", i ? "," : "", find_observation(obs[i].first)->gloss, obs[i].second);
    o += "\n";
  }
  if (!render_run_issue_md(run).empty())
    o += fmt::format("\n## Start here\n\n- [Run summary issue draft]({}/run_summary.md)\n", output_file(run, "issues_dir"));
  o += "\n## Artifacts\n\n";
  for (const char* k : {"results_html", "model_gallery", "diagnostics", "results_jsonl", "run_json", "results_tsv",
                        "results_history", "log", "environment"}) {
    std::string p = output_file(run, k);
    o += fmt::format("- [{}]({})\n", p.substr(p.rfind('/') + 1), p);
  }
  std::vector<std::string> drafts;
  for (const auto& r : run.results)
    if (r.assessment.execution == "crashed")
      drafts.push_back(output_file(run, "issues_dir") + "/issue_" + slugify(r.model) + ".md");
  if (!drafts.empty()) {
    o += "\n## Issue drafts\n\n";
    for (const auto& d : drafts) o += fmt::format("- [{}]({})\n", d.substr(d.rfind('/') + 1), d);
  }
  return o;
}

std::string render_gallery_md(const RunRecords& run, bool have_preview) {
  const auto& h = run.header;
  std::string o = "# Model Gallery\n\n";
  o += "Generated on " + generated_label(run) + ".\n\n";
  o += "For choosing a local vision-language model: every model's output on the same image and prompt, with "
       "mechanical observations (facts, not scores) and resource figures. Human comparison remains necessary.\n\n";
  o += "## Reference Image\n\n";
  if (have_preview) o += fmt::format("![{}](assets/source-image.jpg)\n\n", md_text(h.image.name));
  o += fmt::format("`{}`: {}x{} ({:.2f} MP), {} bytes, sha256 `{}`\n\n", h.image.name, h.image.width, h.image.height,
                   h.image.megapixels, h.image.size_bytes, h.image.sha256);
  o += "## Current-run Chooser\n\n";
  o += "Total time is end-to-end; throughput covers generation only and needs at least 16 generated tokens; "
       "First token is the measured time from the start of generation to the first token (image preprocessing, "
       "vision encoding and prefill included); Prompt tok includes image tokens.\n\n";
  o += kTableGuardOn;
  o += "| Model | Usability | Total s | Gen TPS | First token s | Peak GB | Peak RSS GB | Prompt tok | Gen tok | Observations |\n";
  o += "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto* r : sort_for_chooser(run.results))
    o += fmt::format("| [{}](#{}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", md_cell(r->model),
                     anchor(r->model), usability_label(r->assessment.usability), secs(r->timing.total_time_s),
                     gtps(*r), secs(r->timing.first_token_latency_s), fmt_gb(r->metrics.peak_memory_gb),
                     fmt_gb(r->metrics.peak_rss_gb), r->metrics.prompt_tokens, r->metrics.generation_tokens,
                     md_cell(glosses(*r)));
  o += kTableGuardOff;
  // Resource highlights over clean completions only.
  const ModelResult *fastest = nullptr, *leanest = nullptr;
  for (const auto& r : run.results) {
    if (r.assessment.usability != "usable") continue;
    if (r.metrics.generation_tps_valid && (!fastest || r.metrics.generation_tps > fastest->metrics.generation_tps))
      fastest = &r;
    if (!leanest || r.metrics.peak_memory_gb < leanest->metrics.peak_memory_gb) leanest = &r;
  }
  o += "\n## Resource Highlights\n\n";
  if (!fastest && !leanest) o += "No clean completions in this run.\n";
  if (fastest)
    o += fmt::format("- Fastest clean completion: {} at {} tok/s (indicative only: tokenizers and architectures "
                     "differ)\n", md_text(fastest->model), fmt_tps(fastest->metrics.generation_tps));
  if (leanest) o += fmt::format("- Lowest peak memory: {} at {} GB\n", md_text(leanest->model), fmt_gb(leanest->metrics.peak_memory_gb));
  o += "\n## Avoid for This Run\n\n";
  bool any_avoid = false;
  for (const auto* r : sort_for_chooser(run.results)) {
    if (r->assessment.usability != "unusable" && r->assessment.usability != "not_evaluated") continue;
    any_avoid = true;
    o += fmt::format("- [{}](#{}): {}\n", md_text(r->model), anchor(r->model), md_text(glosses(*r)));
  }
  if (!any_avoid) o += "None.\n";
  o += "\n## Output at a Glance\n\n";
  for (const auto* r : sort_for_chooser(run.results)) {
    std::string text = r->failure ? "(" + r->failure->phase + ") " + r->failure->message : r->generated_text;
    o += fmt::format("- **{}:** {}\n", md_text(r->model), md_text(collapse_whitespace(truncate_chars(text, 280))));
  }
  o += "\n## Run Stamps\n\n";
  for (const auto& [k, v] : h.library_versions.items()) o += fmt::format("- {}: {}\n", k, v.get<std::string>());
  for (const char* k : {"OS", "CPU", "RAM", "Compute Backend"})
    if (h.system.contains(k)) o += fmt::format("- {}: {}\n", k, h.system[k].get<std::string>());
  o += "\n## Image Metadata\n\n";
  bool any_md = false;
  for (const char* k : {"title", "description", "keywords", "date", "time", "gps"}) {
    if (h.image_metadata.contains(k) && h.image_metadata[k].is_string()) {
      o += fmt::format("- {}: {}\n", k, md_text(h.image_metadata[k].get<std::string>()));
      any_md = true;
    }
  }
  if (!any_md) o += "None found.\n";
  o += "\n## Prompt\n\n";
  for (const auto& line : split(h.prompt, '\n')) {
    std::string l = html_escape(line);
    if (!l.empty() && (l[0] == '-' || l[0] == '#' || l[0] == '*' || l[0] == '+')) l = fmt::format("&#{};", int(l[0])) + l.substr(1);
    o += l.empty() ? ">\n" : "> " + l + "\n";
  }
  o += "\n## Complete Per-model Evidence\n";
  for (const auto* r : sort_for_chooser(run.results)) {
    o += fmt::format("\n<a id=\"{}\"></a>\n\n### {}\n\n<details>\n<summary>{} — {}</summary>\n\n", anchor(r->model),
                     md_text(r->model), usability_label(r->assessment.usability), html_escape(glosses(*r)));
    o += fact_list(*r) + "\n" + output_block(*r) + "\n</details>\n";
  }
  return o;
}

std::string render_diagnostics_md(const RunRecords& run) {
  Counts c = count_results(run.results);
  std::string o = "# Diagnostics\n\nGenerated on " + generated_label(run) + ".\n\n## Run Summary\n\n";
  o += kTableGuardOn;
  o += "| Outcome | Count |\n|---|---|\n";
  o += fmt::format("| attempted | {} |\n| conclusive | {} |\n| completed | {} |\n| crashed | {} |\n| indeterminate | {} |\n",
                   c.attempted, c.evaluated, c.completed, c.crashed, c.indeterminate);
  o += "\n| Maintainer status | Count |\n|---|---|\n";
  o += fmt::format("| actionable_failure | {} |\n| observation_needs_reproduction | {} |\n| none | {} |\n", c.actionable,
                   c.needs_repro, c.attempted - c.actionable - c.needs_repro);
  o += "\n| Usability | Count |\n|---|---|\n";
  o += fmt::format("| usable | {} |\n| usable_with_caveats | {} |\n| unusable | {} |\n| not_evaluated | {} |\n", c.usable,
                   c.caveats, c.unusable, c.not_evaluated);
  o += "\n| Observation | Count |\n|---|---|\n";
  for (const auto& info : observation_registry()) {
    int n = 0;
    for (const auto& r : run.results)
      for (const auto& x : r.assessment.observations) n += x == info.code;
    if (n) o += fmt::format("| {} | {} |\n", info.code, n);
  }
  o += kTableGuardOff;
  o += "\n## Triage\n\n";
  o += kTableGuardOn;
  o += "| Model | Execution | Usability | Maintainer status | Observations |\n|---|---|---|---|---|\n";
  for (const auto* r : sort_by_actionability(run.results)) {
    const auto& a = r->assessment;
    if (a.maintainer_status == "none" && a.execution != "indeterminate") continue;
    o += fmt::format("| [{}](#{}) | {} | {} | {} | {} |\n", md_cell(r->model), anchor(r->model), a.execution,
                     a.usability, a.maintainer_status, md_cell(glosses(*r)));
  }
  o += kTableGuardOff;
  o += "\n## Crashes requiring action\n";
  for (const auto* r : sort_by_actionability(run.results)) {
    if (r->assessment.execution != "crashed") continue;
    const auto& f = *r->failure;
    o += fmt::format("\n<a id=\"{}\"></a>\n\n### {}\n\n", anchor(r->model), md_text(r->model));
    o += fmt::format("- **Phase:** {}\n- **Stage:** {}\n- **Code:** {}\n- **Signature:** {}\n", f.phase, f.stage, f.code,
                     f.signature);
    if (!f.signal.empty()) o += "- **Signal:** " + f.signal + "\n";
    if (!r->rerun.is_null()) o += "- **Triage rerun:** " + md_text(rerun_summary(r->rerun)) + "\n";
    o += "\n" + md_fence(f.message);
    if (!f.stderr_tail.empty())
      o += "\n<details>\n<summary>Worker stderr (tail)</summary>\n\n" + md_fence(f.stderr_tail) + "\n</details>\n";
  }
  o += "\n## Completed Runs with Observations\n";
  for (const auto* r : sort_by_actionability(run.results)) {
    if (r->assessment.execution != "completed" || r->assessment.observations.empty()) continue;
    o += fmt::format("\n<a id=\"{}\"></a>\n\n<details>\n<summary>{} — {} — {}</summary>\n\n", anchor(r->model),
                     html_escape(r->model), usability_label(r->assessment.usability), html_escape(glosses(*r)));
    o += fact_list(*r) + "\nComplete output:\n\n" + md_fence(r->generated_text) + "\n</details>\n";
  }
  o += "\n## Indeterminate Attempts\n\n";
  bool any = false;
  for (const auto* r : sort_by_actionability(run.results)) {
    if (r->assessment.execution != "indeterminate") continue;
    any = true;
    o += fmt::format("- {}: {} — remedy: check connectivity or the cache, then re-run\n", md_text(r->model),
                     md_text(r->failure ? r->failure->message : ""));
  }
  if (!any) o += "None.\n";
  o += "\n## Model Compliance Notes (not maintainer issues)\n\n";
  any = false;
  for (const auto* r : sort_by_actionability(run.results)) {
    if (r->assessment.execution != "completed" || r->assessment.observations.empty() ||
        r->assessment.maintainer_status != "none")
      continue;
    any = true;
    o += fmt::format("- {}: {}\n", md_text(r->model), md_text(glosses(*r)));
  }
  if (!any) o += "None.\n";
  o += "\n## Clean Completion Context\n\n<details>\n<summary>Clean completions</summary>\n\n";
  for (const auto* r : sort_for_chooser(run.results)) {
    if (r->assessment.usability != "usable") continue;
    o += fmt::format("- {}: rev {}; stop {}; {} prompt / {} generated; {} tok/s; peak {} GB; cleanup {} GB\n",
                     md_text(r->model), r->model_provenance.resolved_revision.substr(0, 12), r->timing.stop_reason,
                     r->metrics.prompt_tokens, r->metrics.generation_tokens, gtps(*r), fmt_gb(r->metrics.peak_memory_gb),
                     fmt_gb(r->metrics.post_cleanup_active_memory_gb));
  }
  o += "\n</details>\n\n## Shared Reproduction and Provenance\n\n";
  const auto& im = run.header.image;
  o += fmt::format("- Image: `{}` ({}, {}x{}, {} bytes, sha256 `{}`)\n", im.name, im.mime_type, im.width, im.height,
                   im.size_bytes, im.sha256);
  if (im.source_url.empty())
    o += "- The original input image is not published, so no reproduction command is given.\n";
  else
    o += fmt::format("- Public source: <{}>\n", im.source_url);
  o += "\n<details>\n<summary>Exact prompt</summary>\n\n" + md_fence(run.header.prompt) + "\n</details>\n\n";
  o += "Generation settings:\n\n" + md_fence(run.header.generation_settings.dump(2), "json");
  o += "\nComponents and system:\n\n";
  for (const auto& [k, v] : run.header.library_versions.items()) o += fmt::format("- {}: {}\n", k, v.get<std::string>());
  for (const auto& [k, v] : run.header.system.items()) o += fmt::format("- {}: {}\n", k, md_text(v.get<std::string>()));
  return o;
}

std::string render_run_issue_md(const RunRecords& run) {
  Counts c = count_results(run.results);
  if (c.crashed + c.needs_repro + c.indeterminate == 0) return "";
  std::string o = fmt::format("# vlmcheck findings across {} cached vision-language models\n\n", c.attempted);
  o += fmt::format("Run {} · lane {} · completed {}, crashed {}, indeterminate {} · crashes requiring action: {} · "
                   "other results requiring review: {}\n\n",
                   run.header.timestamp, run.header.eval_mode, c.completed, c.crashed, c.indeterminate, c.actionable,
                   c.needs_repro);
  o += "## Model quality at a glance\n\n";
  o += kTableGuardOn;
  o += "| Model | Usability | Total s | Gen tok/s | Peak GB | Observed |\n|---|---|---|---|---|---|\n";
  for (const auto* r : sort_by_actionability(run.results))
    o += fmt::format("| {} | {} | {} | {} | {} | {} |\n", md_cell(r->model), usability_label(r->assessment.usability),
                     secs(r->timing.total_time_s), gtps(*r), fmt_gb(r->metrics.peak_memory_gb), md_cell(glosses(*r)));
  o += kTableGuardOff;
  o += "\n## Crashes requiring action\n";
  for (const auto* r : sort_by_actionability(run.results)) {
    if (r->assessment.execution != "crashed") continue;
    o += fmt::format("\n### {}\n\n- {} in phase {} ({})\n\n", md_text(r->model), r->failure->stage, r->failure->phase,
                     r->failure->signature);
    o += md_fence(truncate_chars(r->failure->message, 2000));
  }
  // Clusters: identical failure signatures / observation sets.
  std::vector<std::pair<std::string, int>> clusters;
  for (const auto& r : run.results) {
    std::string key = r.failure ? r.failure->signature : "";
    if (key.empty())
      for (const auto& ob : r.assessment.observations) key += (key.empty() ? "" : "+") + ob;
    if (key.empty()) continue;
    auto it = std::find_if(clusters.begin(), clusters.end(), [&](auto& p) { return p.first == key; });
    if (it == clusters.end()) clusters.emplace_back(key, 1);
    else ++it->second;
  }
  o += "\n## Observation clusters\n\n";
  for (const auto& [k, n] : clusters) o += fmt::format("- `{}`: {} model(s)\n", k, n);
  o += "\n## Run context\n\n";
  const auto& im = run.header.image;
  o += fmt::format("- Image: {}x{}, {} bytes, sha256 `{}`\n", im.width, im.height, im.size_bytes, im.sha256);
  o += "- Generation settings: `" + run.header.generation_settings.dump() + "`\n";
  for (const auto& [k, v] : run.header.producer.items()) o += fmt::format("- producer {}: {}\n", k, v.dump());
  std::string body = o;
  if (body.size() > 60000) body = body.substr(0, 60000) + "\n\n…(truncated to stay under GitHub's issue size limit)\n";
  return body;
}

std::string render_crash_issue_md(const RunRecords& run, const ModelResult& r) {
  const Failure f = r.failure.value_or(Failure{});
  std::string o = "# Crash: " + md_text(r.model) + "\n\n## Maintainer evidence\n\n";
  o += fmt::format("- Phase: {}\n- Stage: {}\n- Code: {}\n- Signature: {}\n- Package: {}\n", f.phase, f.stage, f.code,
                   f.signature, f.package);
  if (!f.signal.empty()) o += "- Signal: " + f.signal + "\n";
  o += "\n" + md_fence(f.message);
  if (!f.stderr_tail.empty()) o += "\nWorker stderr (tail):\n\n" + md_fence(f.stderr_tail);
  o += "\n## Reproduction\n\n";
  const auto& p = r.model_provenance;
  std::string cmd = fmt::format("vlmcheck generate --model {}{} --prompt x --max-tokens 8", r.model,
                                p.resolved_revision.empty() ? "" : " --revision " + p.resolved_revision);
  if (f.phase != "model_load") cmd += " --image " + run.header.image.name;
  o += md_fence(cmd, "sh");
  o += "\n## Provenance\n\n";
  for (const auto& [k, v] : run.header.library_versions.items()) o += fmt::format("- {}: {}\n", k, v.get<std::string>());
  for (const char* k : {"OS", "CPU", "Compute Backend"})
    if (run.header.system.contains(k)) o += fmt::format("- {}: {}\n", k, run.header.system[k].get<std::string>());
  return o;
}

}  // namespace vlm::check
