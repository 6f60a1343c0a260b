// reports/results.html: one self-contained file (inline CSS + ~60 lines of vanilla JS + base64
// preview + inline SVG charts). Every model output appears in full inside an HTML-escaped <pre>; no
// model text is ever placed in a script, attribute or raw HTML context without escaping.
#include <cmath>

#include <fmt/format.h>

#include "check/assessment.h"
#include "check/report.h"
#include "check/text_util.h"

namespace vlm::check {
namespace {

const char* kCss = R"(body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px;color:#1b1f24}
nav a{margin-right:1em}h1{font-size:1.6em}table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #d0d7de;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f6f8fa;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \25B2"}th[aria-sort=descending]::after{content:" \25BC"}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:8px;border-radius:4px}
.u-usable{background:#dafbe1}.u-usable_with_caveats{background:#fff8c5}.u-unusable{background:#ffebe9}.u-not_evaluated{background:#eaeef2}
.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:center}.chart{margin:1em 0}img.preview{max-width:100%;height:auto;border:1px solid #d0d7de}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dl.kv dt{font-weight:600}
)";

const char* kJs = R"((function(){
var t=document.getElementById('chooser');if(!t)return;var tb=t.tBodies[0];
var rows=Array.prototype.slice.call(tb.rows);
function val(r,i){var c=r.cells[i];return c?(c.getAttribute('data-v')||c.textContent).trim():'';}
Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){
 var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
 Array.prototype.forEach.call(t.tHead.rows[0].cells,function(o){o.removeAttribute('aria-sort');});
 th.setAttribute('aria-sort',dir);var s=dir==='ascending'?1:-1;
 rows.sort(function(a,b){var x=val(a,i),y=val(b,i);if(x===''&&y!=='')return 1;if(y===''&&x!=='')return -1;
  var nx=parseFloat(x),ny=parseFloat(y);if(!isNaN(nx)&&!isNaN(ny)&&String(nx)===x.replace(/^\+/,'')&&String(ny)===y.replace(/^\+/,''))return s*(nx-ny);
  return s*x.localeCompare(y,undefined,{numeric:true});});
 rows.forEach(function(r){tb.appendChild(r);});});});
var q=document.getElementById('q'),fe=document.getElementById('f-execution'),fu=document.getElementById('f-usability'),
 fm=document.getElementById('f-maintainer'),st=document.getElementById('shown');
function apply(){var n=0,s=q.value.toLowerCase();rows.forEach(function(r){
 var ok=(!s||r.getAttribute('data-model').toLowerCase().indexOf(s)>=0||r.textContent.toLowerCase().indexOf(s)>=0)&&
 (!fe.value||r.getAttribute('data-execution')===fe.value)&&(!fu.value||r.getAttribute('data-usability')===fu.value)&&
 (!fm.value||r.getAttribute('data-maintainer-status')===fm.value);r.style.display=ok?'':'none';if(ok)n++;});
 st.textContent='Showing '+n+' of '+rows.length+' rows';}
[q,fe,fu,fm].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});apply();
})();)";

std::string e(const std::string& s) { return html_escape(s); }
std::string anchor(const std::string& model) { return "model-" + slugify(model); }

std::string select_filter(const char* id, const char* label, std::vector<std::string> values) {
  std::string o = fmt::format("<label>{} <select id=\"{}\"><option value=\"\">all</option>", label, id);
  for (const auto& v : values) o += fmt::format("<option value=\"{}\">{}</option>", e(v), e(v));
  return o + "</select></label>";
}

// A horizontal bar chart: one bar per model, value labels, no dependencies.
std::string svg_bar_chart(const std::string& title, const std::string& unit,
                          const std::vector<std::pair<std::string, double>>& data) {
  if (data.empty()) return fmt::format("<p>{}: no data.</p>\n", e(title));
  double maxv = 0;
  for (const auto& d : data) maxv = std::max(maxv, d.second);
  if (maxv <= 0) maxv = 1;
  const int bar_h = 18, gap = 6, label_w = 280, width = 900, plot_w = width - label_w - 90;
  int height = static_cast<int>(data.size()) * (bar_h + gap) + 30;
  std::string o = fmt::format(
      "<figure class=\"chart\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" "
      "height=\"{}\" role=\"img\" aria-label=\"{}\">\n",
      e(title), width, height, e(title));
  for (size_t i = 0; i < data.size(); ++i) {
    int y = 20 + static_cast<int>(i) * (bar_h + gap);
    int w = static_cast<int>(std::lround(data[i].second / maxv * plot_w));
    o += fmt::format(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{}</text><rect x=\"{}\" y=\"{}\" width=\"{}\" "
        "height=\"{}\" fill=\"#4c8bf5\"><title>{}: {:.3f} {}</title></rect><text x=\"{}\" y=\"{}\" "
        "font-size=\"12\">{:.3g} {}</text>\n",
        label_w - 6, y + 13, e(truncate_chars(data[i].first, 40)), label_w, y, std::max(w, 1), bar_h, e(data[i].first),
        data[i].second, e(unit), label_w + std::max(w, 1) + 4, y + 13, data[i].second, e(unit));
  }
  return o + "</svg></figure>\n";
}

}  // namespace

std::string render_results_html(const RunRecords& run, const std::string& preview_jpeg) {
  const auto& h = run.header;
  Counts c = count_results(run.results);
  auto chooser = sort_for_chooser(run.results);
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  o += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  o += "<title>vlmcheck results: " + e(h.image.name) + "</title>\n<style>\n" + kCss + "</style>\n</head>\n<body>\n";
  o += "<h1>vlmcheck results</h1>\n<nav><a href=\"#chooser-section\">Chooser</a><a href=\"#charts\">Charts</a>"
       "<a href=\"#evidence\">Complete evidence</a><a href=\"#diagnostics\">Maintainer diagnostics</a>"
       "<a href=\"#provenance\">Provenance</a></nav>\n";
  o += fmt::format("<p>Run started {} · lane <b>{}</b> · {} models: {} completed, {} crashed, {} indeterminate</p>\n",
                   e(h.timestamp), e(h.eval_mode), c.attempted, c.completed, c.crashed, c.indeterminate);
  if (!run.footer) o += "<p><b>This run did not finish; results cover the models completed so far.</b></p>\n";
  if (!preview_jpeg.empty())
    o += fmt::format("<img class=\"preview\" alt=\"{}\" src=\"data:image/jpeg;base64,{}\">\n", e(h.image.name),
                     base64_encode(preview_jpeg));
  o += fmt::format("<p><code>{}</code>: {}x{} ({:.2f} MP), sha256 <code>{}</code></p>\n", e(h.image.name), h.image.width,
                   h.image.height, h.image.megapixels, e(h.image.sha256));
  // Runtime summary.
  double gen_total = 0, load_total = 0, ttft_min = 1e300, ttft_max = 0, ttft_sum = 0;
  int ttft_n = 0;
  for (const auto& r : run.results) {
    gen_total += r.timing.generation_time_s;
    load_total += r.timing.model_load_time_s;
    if (!r.failure && r.timing.first_token_latency_s > 0) {
      ttft_min = std::min(ttft_min, r.timing.first_token_latency_s);
      ttft_max = std::max(ttft_max, r.timing.first_token_latency_s);
      ttft_sum += r.timing.first_token_latency_s;
      ++ttft_n;
    }
  }
  o += "<h2>Runtime</h2>\n<dl class=\"kv\">";
  o += fmt::format("<dt>Overall runtime</dt><dd>{:.2f} s</dd>", run.footer ? run.footer->total_runtime_seconds : 0.0);
  o += fmt::format("<dt>Model load total</dt><dd>{:.2f} s</dd><dt>Generation total</dt><dd>{:.2f} s</dd>", load_total,
                   gen_total);
  if (ttft_n)
    o += fmt::format("<dt>First token (avg / min / max)</dt><dd>{:.3f} / {:.3f} / {:.3f} s</dd>", ttft_sum / ttft_n,
                     ttft_min, ttft_max);
  o += "</dl>\n";
  // Chooser table with filters.
  o += "<h2 id=\"chooser-section\">Chooser</h2>\n<div class=\"filters\"><label>Search <input id=\"q\" type=\"search\" "
       "placeholder=\"model or text\"></label>";
  o += select_filter("f-execution", "Execution", {"completed", "crashed", "indeterminate"});
  o += select_filter("f-usability", "Usability", {"usable", "usable_with_caveats", "unusable", "not_evaluated"});
  o += select_filter("f-maintainer", "Maintainer",
                     {"none", "observation_needs_reproduction", "actionable_failure"});
  o += "<span id=\"shown\" aria-live=\"polite\"></span></div>\n";
  o += "<table id=\"chooser\"><thead><tr><th>Model</th><th>Execution</th><th>Usability</th><th>Maintainer status</th>"
       "<th>Total s</th><th>Gen TPS</th><th>First token s</th><th>Peak GB</th><th>Peak RSS GB</th><th>Prompt tok</th>"
       "<th>Gen tok</th><th>Observations</th><th>Output preview</th></tr></thead>\n<tbody>\n";
  for (const auto* r : chooser) {
    const auto& a = r->assessment;
    std::string obs;
    for (const auto& x : a.observations) {
      const auto* info = find_observation(x);
      obs += (obs.empty() ? "" : ", ") + std::string(info ? info->gloss : x.c_str());
    }
    if (r->failure) obs = r->failure->phase + ": " + r->failure->stage;
    std::string preview = r->failure ? r->failure->message : r->generated_text;
    o += fmt::format(
        "<tr data-model=\"{}\" data-execution=\"{}\" data-usability=\"{}\" data-maintainer-status=\"{}\" "
        "class=\"u-{}\"><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td data-v=\"{:.3f}\">{:.2f}</td>"
        "<td data-v=\"{}\">{}</td><td data-v=\"{:.3f}\">{:.3f}</td><td data-v=\"{:.3f}\">{}</td><td data-v=\"{:.3f}\">{}"
        "</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        e(r->model), e(a.execution), e(a.usability), e(a.maintainer_status), e(a.usability), anchor(r->model),
        e(r->model), e(a.execution), e(a.usability), e(a.maintainer_status), r->timing.total_time_s,
        r->timing.total_time_s, r->metrics.generation_tps_valid ? fmt::format("{:.3f}", r->metrics.generation_tps) : "",
        r->metrics.generation_tps_valid ? fmt_tps(r->metrics.generation_tps) : "", r->timing.first_token_latency_s,
        r->timing.first_token_latency_s, r->metrics.peak_memory_gb, fmt_gb(r->metrics.peak_memory_gb),
        r->metrics.peak_rss_gb, fmt_gb(r->metrics.peak_rss_gb), r->metrics.prompt_tokens, r->metrics.generation_tokens,
        e(obs), e(collapse_whitespace(truncate_chars(preview, 160))));
  }
  o += "</tbody></table>\n";
  // Charts.
  std::vector<std::pair<std::string, double>> tps, ttft, mem, rss;
  for (const auto* r : chooser) {
    if (r->metrics.generation_tps_valid) tps.emplace_back(r->model, r->metrics.generation_tps);
    if (!r->failure && r->timing.first_token_latency_s > 0) ttft.emplace_back(r->model, r->timing.first_token_latency_s);
    if (r->metrics.peak_memory_gb > 0) mem.emplace_back(r->model, r->metrics.peak_memory_gb);
    if (r->metrics.peak_rss_gb > 0) rss.emplace_back(r->model, r->metrics.peak_rss_gb);
  }
  o += "<h2 id=\"charts\">Charts</h2>\n";
  o += svg_bar_chart("Generation tokens/s (models with at least 16 generated tokens)", "tok/s", tps);
  o += svg_bar_chart("Time to first token", "s", ttft);
  o += svg_bar_chart("Peak tracked memory", "GB", mem);
  o += svg_bar_chart("Peak resident set size of the worker", "GB", rss);
  // Evidence.
  o += "<h2 id=\"evidence\">Complete evidence</h2>\n";
  for (const auto* r : chooser) {
    const auto& a = r->assessment;
    o += fmt::format("<section id=\"{}\"><h3>{}</h3>\n<dl class=\"kv\">", anchor(r->model), e(r->model));
    auto kv = [&](const std::string& k, const std::string& v) {
      if (!v.empty()) o += "<dt>" + e(k) + "</dt><dd>" + e(v) + "</dd>";
    };
    kv("Execution / usability / maintainer", a.execution + " / " + a.usability + " / " + a.maintainer_status);
    for (const auto& ob : a.observations) kv("Observation", enriched_label(ob, a.details));
    if (r->failure) {
      kv("Failure phase", r->failure->phase);
      kv("Error stage", r->failure->stage);
      kv("Code", r->failure->code);
      kv("Signature", r->failure->signature);
      kv("Signal", r->failure->signal);
    }
    kv("Timing", fmt::format("total {:.2f}s, load {:.2f}s, prompt prep {:.2f}s, generation {:.2f}s, first token {:.3f}s",
                             r->timing.total_time_s, r->timing.model_load_time_s, r->timing.prompt_prep_time_s,
                             r->timing.generation_time_s, r->timing.first_token_latency_s));
    kv("Tokens", fmt::format("{} prompt + {} generated", r->metrics.prompt_tokens, r->metrics.generation_tokens));
    kv("Device", device_summary(*r));
    kv("Revision", r->model_provenance.resolved_revision);
    kv("Stop reason", r->timing.stop_reason);
    kv("Triage rerun", rerun_summary(r->rerun));
    o += "</dl>\n";
    if (r->failure) {
      o += "<p>Failure message:</p><pre>" + e(r->failure->message) + "</pre>\n";
      if (!r->failure->stderr_tail.empty())
        o += "<details><summary>Worker stderr (tail)</summary><pre>" + e(r->failure->stderr_tail) + "</pre></details>\n";
    }
    if (!r->generated_text.empty() || !r->failure)
      o += "<p>Output:</p><pre class=\"output\">" + e(r->generated_text) + "</pre>\n";
    o += "</section>\n";
  }
  // Diagnostics (triage list) and provenance.
  o += "<h2 id=\"diagnostics\">Maintainer diagnostics</h2>\n<ul>\n";
  bool any = false;
  for (const auto* r : sort_by_actionability(run.results)) {
    if (r->assessment.maintainer_status == "none" && r->assessment.execution != "indeterminate") continue;
    any = true;
    o += fmt::format("<li><a href=\"#{}\">{}</a>: {} / {}{}</li>\n", anchor(r->model), e(r->model),
                     e(r->assessment.execution), e(r->assessment.maintainer_status),
                     r->failure ? " — " + e(r->failure->signature) : "");
  }
  if (!any) o += "<li>Nothing requires maintainer action.</li>\n";
  o += "</ul>\n<h2 id=\"provenance\">Provenance</h2>\n<dl class=\"kv\">";
  for (const auto& [k, v] : h.library_versions.items()) o += "<dt>" + e(k) + "</dt><dd>" + e(v.get<std::string>()) + "</dd>";
  for (const auto& [k, v] : h.system.items()) o += "<dt>" + e(k) + "</dt><dd>" + e(v.get<std::string>()) + "</dd>";
  o += "</dl>\n<details><summary>Prompt</summary><pre>" + e(h.prompt) + "</pre></details>\n";
  o += "<details><summary>Generation settings</summary><pre>" + e(h.generation_settings.dump(2)) + "</pre></details>\n";
  o += std::string("<script>\n") + kJs + "\n</script>\n</body>\n</html>\n";
  return o;
}

}  // namespace vlm::check
