// Mechanical output checks (check_models §4.2): normalisation (declared wrappers, thinking blocks,
// generic control wrappers), then the detectors — repetition, catalogue sections and constraints,
// thinking traces, instruction echo, token-cap truncation with degradation evidence, special-token
// and role-token leakage, minimal output, keyword overlap, draft copied unchanged. Facts only: no
// scores. The observation registry and the three-axis assessment live in assessment.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "check/quality.h"
#include "core/json.h"

namespace vlm::check {

struct ThinkingPair {
  std::string start, end;
  bool empty_wrapper_is_leak = false;  // <|channel>thought<channel|>
  bool auto_budget_eligible = true;
};
const std::vector<ThinkingPair>& default_thinking_pairs();

struct AnalysisInput {
  std::string text;                       // raw generated text
  std::optional<int64_t> generation_tokens;
  int64_t prompt_tokens = 0;
  std::string prompt;                     // the user prompt text
  std::string rendered_prompt;            // chat-template output ("" if unknown)
  int64_t max_tokens = 0;
  std::string context_marker = "Context:";
  std::vector<std::string> declared_wrappers;  // tokenizer specials (<…, […), EOS, --eos-tokens
  std::vector<ThinkingPair> thinking_pairs = default_thinking_pairs();
};

struct TextAnalysis {
  std::string analysis_text;  // normalised final-answer view
  int64_t word_count = 0;
  bool is_empty = false;
  bool repetitive = false;
  std::string repeated_fragment;
  bool contract_requested = false;
  std::vector<std::string> missing_sections;  // "Title", "Description", "Keywords"
  bool has_preamble = false;
  std::string preamble;
  std::optional<int64_t> title_word_count, keyword_count;
  std::optional<std::pair<int64_t, int64_t>> title_word_range, keyword_count_range;
  std::vector<std::string> duplicate_keywords;
  bool constraint_violation = false;
  bool thinking_present = false, thinking_incomplete = false, thinking_only = false;
  std::vector<std::string> thinking_markers;
  std::vector<std::string> echo_fragments;
  bool capped = false;
  std::vector<std::string> cutoff_reasons;  // degradation evidence; truncation fires when capped && non-empty
  std::vector<std::string> leaked_tokens;
  std::vector<std::string> configured_wrappers_present;
  std::vector<std::string> role_tokens;
  std::optional<std::string> minimal_reason;  // zero_tokens | minimal_words(Nw;Ktok)
  std::string keyword_overlap = "not_assessable";  // not_assessable | no_overlap | some_overlap
  std::vector<std::string> unchanged_draft_fields;
  int64_t text_tokens_est = 0, nontext_tokens_est = 0;
};

TextAnalysis analyze_generation_text(const AnalysisInput& in, const QualityThresholds& q);

// Catalogue sections of a text: label (lower-case) → content, first occurrence wins.
std::vector<std::pair<std::string, std::string>> parse_catalog_sections(const std::string& text,
                                                                        std::string* preamble = nullptr);
// "lower-case alphanumerics with collapsed spaces", the comparison form of keywords and hints.
std::string normalize_term(const std::string& s);

}  // namespace vlm::check
