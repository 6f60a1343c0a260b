// Output-check thresholds (check_models §4.1), with defaults, overridable from a TOML quality config:
//   [thresholds]            # every key of QualityThresholds, e.g. repetition_ratio = 0.85
//   [prompt]                # prompt_title_max_chars, prompt_description_max_chars, prompt_keyword_max_items
// Keys may also sit at the top level. Unknown keys are warnings; ratios outside 0–1 or
// min_phrase_repetitions > max_phrase_repetitions reject the whole file (defaults kept, warning).
#pragma once

#include <string>
#include <vector>

#include "core/json.h"

namespace vlm::check {

struct QualityThresholds {
  double repetition_ratio = 0.9;
  int min_text_length = 10;
  int min_token_count = 5;
  int min_phrase_repetitions = 3;
  int max_phrase_repetitions = 10;
  double phrase_coverage_threshold = 0.4;
  int min_phrase_length = 4;
  int max_phrase_length = 10;
  int min_catalog_keywords_for_repeat = 10;
  int min_catalog_keyword_repetitions = 3;
  double catalog_keyword_duplicate_ratio = 0.4;
  int min_context_term_length = 2;
  int min_tokens_for_substantial = 10;
  int max_words_for_minimal_output = 2;
  int long_prompt_tokens_threshold = 3000;
  double heavy_nontext_prompt_ratio = 0.50;
  double mixed_prompt_burden_ratio_floor = 0.25;
  int prompt_title_max_chars = 120;
  int prompt_description_max_chars = 420;
  int prompt_keyword_max_items = 20;
  double prompt_word_to_token_ratio = 1.3;
  int cutoff_tail_chars = 120;
  int min_generation_tokens_for_tps = 16;  // generation tokens/s is "valid" only from this many tokens

  Json to_json() const;
};

struct QualityConfigLoad {
  QualityThresholds thresholds;
  std::vector<std::string> warnings;
  std::string source;  // file path, or "defaults"
};

// Loads `path` ("" = defaults). Never throws for content problems: they become warnings and the
// defaults stay (check_models' fail-soft rule). A missing file named explicitly is an Error(kNotFound).
QualityConfigLoad load_quality_config(const std::string& path);

}  // namespace vlm::check
