// Registry, assessment axes, and failure classification; see assessment.h.
#include "check/assessment.h"

#include <algorithm>
#include <regex>

#include <fmt/format.h>

#include "check/sha256.h"
#include "check/text_util.h"
#include "core/error.h"

namespace vlm::check {
namespace {

const char* const kConnectivityNeedles[] = {
    "server disconnected", "remoteprotocolerror", "connection refused", "connection reset", "connection aborted",
    "connection error", "network is unreachable", "temporary failure in name resolution", "nodename nor servname",
    "failed to establish a new connection", "502 bad gateway", "503 service unavailable", "504 gateway timeout"};

bool has_connectivity_needle(const std::string& text) {
  std::string l = lower_ascii(text);
  for (const char* n : kConnectivityNeedles)
    if (l.find(n) != std::string::npos) return true;
  return false;
}

int usability_rank(const std::string& u) {
  if (u == "unusable") return 0;
  if (u == "usable_with_caveats") return 1;
  if (u == "usable") return 2;
  return 3;
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string upper_snake(std::string s) {
  for (char& c : s) c = std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(c)) : '_';
  return s;
}

}  // namespace

const std::vector<ObservationInfo>& observation_registry() {
  static const std::vector<ObservationInfo> k = {
      {"empty_output", "No response text was returned", "empty response", true, true},
      {"repeated_output", "Response repeats the same text", "repeated text", true, true},
      {"missing_final_answer", "Internal reasoning is present but no final answer was returned",
       "thinking only, no answer", true, true},
      {"unexpected_special_token", "Unrecognised model control tokens remain visible", "control tokens visible", false,
       true},
      {"missing_requested_sections", "Required fields are missing or empty", "missing required fields", true, false},
      {"prompt_instruction_echo", "Response repeats the task instructions instead of answering", "echoes instructions",
       true, false},
      {"unexpected_catalog_preamble", "Extra text appears before the Title field", "extra text before Title", true,
       false},
      {"token_cap_truncation", "Response appears cut off at the token limit", "cut off at token limit", true, false},
      {"thinking_trace_incomplete", "Internal reasoning block appears incomplete", "incomplete thinking block", true,
       true},
      {"role_boundary_token_present", "Conversation-role control tokens remain visible", "role tokens visible", false,
       true},
      {"thinking_trace_present", "Internal reasoning text remains visible", "thinking text visible", false, true},
      {"configured_wrapper_present", "Expected model wrapper tokens remain visible", "wrapper tokens visible", false,
       true},
      {"catalog_constraint_violation", "Title or keywords do not meet requested constraints",
       "title/keyword constraints failed", false, false},
      {"minimal_output", "Response is unusually short", "very short response", false, false},
      {"draft_returned_unchanged", "Title, Description and Keywords copy all supplied hints unchanged",
       "draft hints copied unchanged", false, false},
      {"no_keyword_overlap", "Keywords do not overlap the supplied keyword hints", "no keyword overlap", false, false},
  };
  return k;
}

const ObservationInfo* find_observation(const std::string& code) {
  for (const auto& o : observation_registry())
    if (code == o.code) return &o;
  return nullptr;
}

int observation_rank(const std::string& code) {
  const auto& r = observation_registry();
  for (size_t i = 0; i < r.size(); ++i)
    if (code == r[i].code) return static_cast<int>(i);
  return 1000;
}

Assessment assess_completed(const TextAnalysis& a) {
  Assessment out;
  out.execution = "completed";
  std::vector<std::string> obs;
  Json& d = out.details;
  if (a.is_empty) obs.push_back("empty_output");
  if (a.repetitive) {
    obs.push_back("repeated_output");
    d["repeated_fragment"] = a.repeated_fragment;
  }
  if (a.thinking_only) obs.push_back("missing_final_answer");
  if (!a.leaked_tokens.empty()) {
    obs.push_back("unexpected_special_token");
    d["unexpected_special_tokens"] = a.leaked_tokens;
  }
  if (!a.missing_sections.empty()) {
    obs.push_back("missing_requested_sections");
    d["missing_sections"] = a.missing_sections;
  }
  if (!a.echo_fragments.empty()) {
    obs.push_back("prompt_instruction_echo");
    d["instruction_echo_fragments"] = a.echo_fragments;
  }
  if (a.has_preamble) {
    obs.push_back("unexpected_catalog_preamble");
    d["unexpected_catalog_preamble"] = a.preamble;
  }
  if (a.capped && !a.cutoff_reasons.empty()) {
    obs.push_back("token_cap_truncation");
    d["token_cap_reasons"] = a.cutoff_reasons;
  }
  if (a.thinking_incomplete) obs.push_back("thinking_trace_incomplete");
  if (a.thinking_present) d["thinking_trace_markers"] = a.thinking_markers;
  if (!a.role_tokens.empty()) {
    obs.push_back("role_boundary_token_present");
    d["role_boundary_tokens"] = a.role_tokens;
  }
  if (!a.configured_wrappers_present.empty()) {
    obs.push_back("configured_wrapper_present");
    d["configured_generation_wrappers"] = a.configured_wrappers_present;
  }
  if (a.constraint_violation) {
    obs.push_back("catalog_constraint_violation");
    if (a.title_word_count) d["title_word_count"] = *a.title_word_count;
    if (a.title_word_range) d["title_word_range"] = {a.title_word_range->first, a.title_word_range->second};
    if (a.keyword_count) d["keyword_count"] = *a.keyword_count;
    if (a.keyword_count_range) d["keyword_count_range"] = {a.keyword_count_range->first, a.keyword_count_range->second};
    if (!a.duplicate_keywords.empty()) d["duplicate_keywords"] = a.duplicate_keywords;
  }
  if (a.minimal_reason && !a.is_empty) {
    obs.push_back("minimal_output");
    d["minimal_output_reason"] = *a.minimal_reason;
  }
  if (!a.unchanged_draft_fields.empty()) {
    obs.push_back("draft_returned_unchanged");
    d["unchanged_draft_fields"] = a.unchanged_draft_fields;
  }
  if (a.keyword_overlap == "no_overlap") obs.push_back("no_keyword_overlap");
  std::stable_sort(obs.begin(), obs.end(),
                   [](const std::string& x, const std::string& y) { return observation_rank(x) < observation_rank(y); });
  out.observations = obs;
  bool unusable = false, integration = false;
  for (const auto& o : obs) {
    const auto* info = find_observation(o);
    unusable |= info->unusable;
    integration |= info->integration_signal;
  }
  out.usability = obs.empty() ? "usable" : unusable ? "unusable" : "usable_with_caveats";
  out.maintainer_status = integration ? "observation_needs_reproduction" : "none";
  return out;
}

Assessment assess_failed(const Failure& f, const std::string& captured_output) {
  Assessment out;
  bool indeterminate = has_connectivity_needle(f.message + "\n" + captured_output);
  out.execution = indeterminate ? "indeterminate" : "crashed";
  out.usability = "not_evaluated";
  out.maintainer_status = indeterminate ? "none" : "actionable_failure";
  return out;
}

std::string enriched_label(const std::string& code, const Json& d) {
  const auto* info = find_observation(code);
  std::string label = info ? info->label : code;
  auto strings = [&](const char* key) {
    std::vector<std::string> v;
    if (d.contains(key) && d[key].is_array())
      for (const auto& x : d[key]) v.push_back(x.is_string() ? x.get<std::string>() : x.dump());
    return v;
  };
  if (code == "missing_requested_sections") return "Missing or empty fields: " + join(strings("missing_sections"));
  if (code == "catalog_constraint_violation") {
    std::vector<std::string> parts;
    auto range_text = [&](const char* key) {
      return d.contains(key) ? fmt::format("{}-{}", d[key][0].get<int64_t>(), d[key][1].get<int64_t>()) : "";
    };
    if (d.contains("title_word_count") && d.contains("title_word_range")) {
      int64_t n = d["title_word_count"], lo = d["title_word_range"][0], hi = d["title_word_range"][1];
      if (n < lo || n > hi) parts.push_back(fmt::format("Title has {} words (requested {})", n, range_text("title_word_range")));
    }
    if (d.contains("keyword_count") && d.contains("keyword_count_range")) {
      int64_t n = d["keyword_count"], lo = d["keyword_count_range"][0], hi = d["keyword_count_range"][1];
      if (n < lo || n > hi)
        parts.push_back(fmt::format("Keyword list has {} terms (requested {})", n, range_text("keyword_count_range")));
    }
    if (!strings("duplicate_keywords").empty()) parts.push_back("Duplicate keywords: " + join(strings("duplicate_keywords")));
    return parts.empty() ? label : join(parts, "; ");
  }
  if (code == "repeated_output" && d.contains("repeated_fragment"))
    return label + ": " + d["repeated_fragment"].get<std::string>();
  if (code == "unexpected_special_token") return label + ": " + join(strings("unexpected_special_tokens"));
  if (code == "role_boundary_token_present") return label + ": " + join(strings("role_boundary_tokens"));
  if (code == "configured_wrapper_present") return label + ": " + join(strings("configured_generation_wrappers"));
  if (code == "token_cap_truncation") return label + " (" + join(strings("token_cap_reasons")) + ")";
  if (code == "prompt_instruction_echo")
    return label + ": " + join(strings("instruction_echo_fragments"), "; ");
  if (code == "minimal_output" && d.contains("minimal_output_reason"))
    return label + " (" + d["minimal_output_reason"].get<std::string>() + ")";
  return label;
}

void validate_assessment(const std::string& model, const Assessment& a) {
  const std::string& e = a.execution;
  const std::string& u = a.usability;
  const std::string& m = a.maintainer_status;
  bool legal = (e == "completed" && u == "usable" && m == "none") ||
               (e == "completed" && (u == "usable_with_caveats" || u == "unusable") &&
                (m == "none" || m == "observation_needs_reproduction")) ||
               (e == "crashed" && u == "not_evaluated" && m == "actionable_failure") ||
               (e == "indeterminate" && u == "not_evaluated" && m == "none");
  VLM_CHECK(legal, ErrorKind::kInternal, "{}: illegal assessment ({}, {}, {})", model, e, u, m);
  bool need_obs = u == "usable_with_caveats" || u == "unusable";
  VLM_CHECK(need_obs == !a.observations.empty(), ErrorKind::kInternal,
            "{}: observations must be present exactly when usability is caveats/unusable", model);
}

std::string normalize_failure_message(const std::string& message) {
  std::string first = message.substr(0, message.find('\n'));
  first = std::regex_replace(first, std::regex("[0-9]+"), "N");
  first = std::regex_replace(first, std::regex(R"(\(N(?:,\s*N)+\))"), "(N,...)");
  // Paths differ between machines: keep base names only.
  first = std::regex_replace(first, std::regex(R"((?:/[^/\s:]+)+/([^/\s:]+))"), "$1");
  return first;
}

Failure classify_failure(const std::string& phase, const std::string& error_kind, const std::string& message) {
  Failure f;
  f.phase = phase;
  f.message = message;
  f.exception_type = error_kind;
  std::string l = lower_ascii(message);
  auto has = [&](const char* s) { return l.find(s) != std::string::npos; };
  if (has_connectivity_needle(message)) f.stage = "Network Error";
  else if (error_kind == "signal" && (has("sigkill") && has("memory"))) f.stage = "OOM";
  else if (has("out of memory") || error_kind == "resource") f.stage = "OOM";
  else if (error_kind == "timeout" || has("timeout") || has("timed out")) f.stage = "Timeout";
  else if (error_kind == "signal") f.stage = "Crash";
  else if (has("not built yet") || has("not implemented")) f.stage = "Not Built";
  else if (has("model_type") && (has("not supported") || has("unsupported"))) f.stage = "Unsupported Arch";
  else if (has("config.json") && (has("missing") || has("not found"))) f.stage = "Config Missing";
  else if (has("chat template") || has("chat_template")) f.stage = "No Chat Template";
  else if (has("tokenizer")) f.stage = "Tokenizer Error";
  else if (has("safetensors") || has("tensor")) f.stage = (has("missing") || has("shape")) ? "Weight Mismatch" : "Weight Format";
  else if (has("image")) f.stage = "Processor Error";
  else if (has("model") && (has("loading") || has("failed"))) f.stage = "Model Error";
  else f.stage = "Error";
  // Owning component: the layer whose input or code failed.
  if (f.stage == "Network Error") f.package = "unknown";
  else if (error_kind == "signal" || error_kind == "timeout") f.package = "vlmcheck-engine";
  else if (has("config.json") || has("chat template") || has("chat_template") || has("tokenizer_config"))
    f.package = "model-config";
  else if (has("safetensors") || has("tensor")) f.package = "model-weights";
  else if (has("tokenizer")) f.package = "vlmcheck-text";
  else if (phase == "input_validation" || has("image")) f.package = "vlmcheck-image";
  else if (phase == "model_load") f.package = "vlmcheck-models";
  else f.package = "vlmcheck-engine";
  f.code = upper_snake(f.package) + "_" + upper_snake(phase) + "_" + upper_snake(f.stage);
  f.signature = f.code + ":" + sha256_hex(f.code + "|" + normalize_failure_message(message)).substr(0, 12);
  return f;
}

Counts count_results(const std::vector<ModelResult>& results) {
  Counts c;
  for (const auto& r : results) {
    ++c.attempted;
    const auto& a = r.assessment;
    if (a.execution == "completed") ++c.completed;
    if (a.execution == "crashed") ++c.crashed;
    if (a.execution == "indeterminate") ++c.indeterminate;
    if (a.usability == "usable") ++c.usable;
    if (a.usability == "usable_with_caveats") ++c.caveats;
    if (a.usability == "unusable") ++c.unusable;
    if (a.usability == "not_evaluated") ++c.not_evaluated;
    if (a.maintainer_status == "actionable_failure") ++c.actionable;
    if (a.maintainer_status == "observation_needs_reproduction") ++c.needs_repro;
  }
  c.evaluated = c.completed + c.crashed;
  return c;
}

namespace {
std::vector<const ModelResult*> pointers(const std::vector<ModelResult>& results) {
  std::vector<const ModelResult*> v;
  for (const auto& r : results) v.push_back(&r);
  return v;
}
int worst_rank(const ModelResult& r) {
  int best = 1000;
  for (const auto& o : r.assessment.observations) best = std::min(best, observation_rank(o));
  if (r.assessment.execution != "completed") best = -1;  // failures are the most actionable
  return best;
}
}  // namespace

std::vector<const ModelResult*> sort_by_actionability(const std::vector<ModelResult>& results) {
  auto v = pointers(results);
  std::stable_sort(v.begin(), v.end(), [](const ModelResult* a, const ModelResult* b) {
    int ra = worst_rank(*a), rb = worst_rank(*b);
    if (ra != rb) return ra < rb;
    int ua = usability_rank(a->assessment.usability), ub = usability_rank(b->assessment.usability);
    if (ua != ub) return ua < ub;
    return lower_ascii(a->model) < lower_ascii(b->model);
  });
  return v;
}

std::vector<const ModelResult*> sort_for_chooser(const std::vector<ModelResult>& results) {
  auto v = pointers(results);
  auto rank = [](const std::string& u) {
    return u == "usable" ? 0 : u == "usable_with_caveats" ? 1 : u == "unusable" ? 2 : 3;
  };
  std::stable_sort(v.begin(), v.end(), [&](const ModelResult* a, const ModelResult* b) {
    int ra = rank(a->assessment.usability), rb = rank(b->assessment.usability);
    if (ra != rb) return ra < rb;
    return lower_ascii(a->model) < lower_ascii(b->model);
  });
  return v;
}

std::vector<const ModelResult*> sort_failures_first(const std::vector<ModelResult>& results) {
  auto v = pointers(results);
  std::stable_sort(v.begin(), v.end(), [](const ModelResult* a, const ModelResult* b) {
    bool fa = a->failure.has_value(), fb = b->failure.has_value();
    if (fa != fb) return fa;
    if (a->timing.generation_time_s != b->timing.generation_time_s)
      return a->timing.generation_time_s < b->timing.generation_time_s;
    return a->model < b->model;
  });
  return v;
}

std::string rerun_summary(const Json& rerun) {
  if (!rerun.is_object()) return "";
  std::string how = fmt::format("\"{}\", max {} tokens, {}s limit", rerun.value("prompt", std::string()),
                                rerun.value("max_tokens", 0), rerun.value("timeout_s", 0.0));
  if (rerun.value("success", false))
    return fmt::format("succeeded: {} chars in {:.2f}s ({})", rerun.value("output_chars", 0),
                       rerun.value("generation_time_s", 0.0), how);
  std::string phase = rerun.value("failure_phase", std::string());
  return fmt::format("failed{}: {} ({})", phase.empty() ? "" : " in " + phase, rerun.value("error", std::string()), how);
}

std::string device_summary(const ModelResult& r) {
  if (r.device.empty() || r.device == "cpu") return r.device;
  return fmt::format("{} (language model; peak GPU memory {} GB)", r.device, fmt_gb(r.metrics.peak_gpu_memory_gb));
}

}  // namespace vlm::check
