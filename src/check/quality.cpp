// TOML quality config via toml++: each known key maps onto one QualityThresholds member.
#include "check/quality.h"

#include <sys/stat.h>

#include <functional>
#include <map>

#include <toml++/toml.h>
#include <fmt/format.h>

#include "core/error.h"

namespace vlm::check {
namespace {

using Setter = std::function<bool(QualityThresholds&, const toml::node&)>;

template <typename T>
Setter member(T QualityThresholds::*m) {
  return [m](QualityThresholds& q, const toml::node& n) {
    if constexpr (std::is_same_v<T, int>) {
      auto v = n.value<int64_t>();
      if (!v || n.is_floating_point()) return false;
      q.*m = static_cast<int>(*v);
    } else {
      auto v = n.value<double>();
      if (!v) return false;
      q.*m = *v;
    }
    return true;
  };
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> k = {
      {"repetition_ratio", member(&QualityThresholds::repetition_ratio)},
      {"min_text_length", member(&QualityThresholds::min_text_length)},
      {"min_token_count", member(&QualityThresholds::min_token_count)},
      {"min_phrase_repetitions", member(&QualityThresholds::min_phrase_repetitions)},
      {"max_phrase_repetitions", member(&QualityThresholds::max_phrase_repetitions)},
      {"phrase_coverage_threshold", member(&QualityThresholds::phrase_coverage_threshold)},
      {"min_phrase_length", member(&QualityThresholds::min_phrase_length)},
      {"max_phrase_length", member(&QualityThresholds::max_phrase_length)},
      {"min_catalog_keywords_for_repeat", member(&QualityThresholds::min_catalog_keywords_for_repeat)},
      {"min_catalog_keyword_repetitions", member(&QualityThresholds::min_catalog_keyword_repetitions)},
      {"catalog_keyword_duplicate_ratio", member(&QualityThresholds::catalog_keyword_duplicate_ratio)},
      {"min_context_term_length", member(&QualityThresholds::min_context_term_length)},
      {"min_tokens_for_substantial", member(&QualityThresholds::min_tokens_for_substantial)},
      {"max_words_for_minimal_output", member(&QualityThresholds::max_words_for_minimal_output)},
      {"long_prompt_tokens_threshold", member(&QualityThresholds::long_prompt_tokens_threshold)},
      {"heavy_nontext_prompt_ratio", member(&QualityThresholds::heavy_nontext_prompt_ratio)},
      {"mixed_prompt_burden_ratio_floor", member(&QualityThresholds::mixed_prompt_burden_ratio_floor)},
      {"prompt_title_max_chars", member(&QualityThresholds::prompt_title_max_chars)},
      {"prompt_description_max_chars", member(&QualityThresholds::prompt_description_max_chars)},
      {"prompt_keyword_max_items", member(&QualityThresholds::prompt_keyword_max_items)},
      {"prompt_word_to_token_ratio", member(&QualityThresholds::prompt_word_to_token_ratio)},
      {"cutoff_tail_chars", member(&QualityThresholds::cutoff_tail_chars)},
      {"min_generation_tokens_for_tps", member(&QualityThresholds::min_generation_tokens_for_tps)},
  };
  return k;
}

void apply_table(const toml::table& t, const std::string& prefix, QualityThresholds& q,
                 std::vector<std::string>& warnings) {
  for (const auto& [key, node] : t) {
    std::string name(key.str());
    if (node.is_table()) {
      if (prefix.empty() && (name == "thresholds" || name == "prompt" || name == "quality")) {
        apply_table(*node.as_table(), name + ".", q, warnings);
      } else {
        warnings.push_back(fmt::format("unknown section [{}{}] ignored", prefix, name));
      }
      continue;
    }
    auto it = setters().find(name);
    if (it == setters().end()) {
      warnings.push_back(fmt::format("unknown key {}{} ignored", prefix, name));
    } else if (!it->second(q, node)) {
      warnings.push_back(fmt::format("{}{}: expected a number", prefix, name));
    }
  }
}

}  // namespace

Json QualityThresholds::to_json() const {
  Json j = Json{{"repetition_ratio", repetition_ratio},
           {"min_text_length", min_text_length},
           {"min_token_count", min_token_count},
           {"min_phrase_repetitions", min_phrase_repetitions},
           {"max_phrase_repetitions", max_phrase_repetitions},
           {"phrase_coverage_threshold", phrase_coverage_threshold},
           {"min_phrase_length", min_phrase_length},
           {"max_phrase_length", max_phrase_length},
           {"min_catalog_keywords_for_repeat", min_catalog_keywords_for_repeat},
           {"min_catalog_keyword_repetitions", min_catalog_keyword_repetitions},
           {"catalog_keyword_duplicate_ratio", catalog_keyword_duplicate_ratio},
           {"min_context_term_length", min_context_term_length},
           {"min_tokens_for_substantial", min_tokens_for_substantial},
           {"max_words_for_minimal_output", max_words_for_minimal_output},
           {"long_prompt_tokens_threshold", long_prompt_tokens_threshold},
           {"heavy_nontext_prompt_ratio", heavy_nontext_prompt_ratio},
           {"mixed_prompt_burden_ratio_floor", mixed_prompt_burden_ratio_floor},
           {"prompt_title_max_chars", prompt_title_max_chars},
           {"prompt_description_max_chars", prompt_description_max_chars},
           {"prompt_keyword_max_items", prompt_keyword_max_items},
           {"prompt_word_to_token_ratio", prompt_word_to_token_ratio},
           {"cutoff_tail_chars", cutoff_tail_chars},
           {"min_generation_tokens_for_tps", min_generation_tokens_for_tps}};
  return j;
}

QualityConfigLoad load_quality_config(const std::string& path) {
  QualityConfigLoad out;
  out.source = path.empty() ? "defaults" : path;
  if (path.empty()) return out;
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw_error(ErrorKind::kNotFound, "--quality-config {}: file not found", path);
  QualityThresholds q;
  std::vector<std::string> warnings;
  try {
    toml::table t = toml::parse_file(path);
    apply_table(t, "", q, warnings);
  } catch (const toml::parse_error& e) {
    out.warnings.push_back(fmt::format("{}: TOML parse error at line {}: {}; defaults kept", path,
                                       e.source().begin.line, e.description()));
    return out;
  }
  std::string bad;
  for (auto [name, v] : {std::pair{"repetition_ratio", q.repetition_ratio},
                         {"phrase_coverage_threshold", q.phrase_coverage_threshold},
                         {"catalog_keyword_duplicate_ratio", q.catalog_keyword_duplicate_ratio},
                         {"heavy_nontext_prompt_ratio", q.heavy_nontext_prompt_ratio},
                         {"mixed_prompt_burden_ratio_floor", q.mixed_prompt_burden_ratio_floor}}) {
    if (v < 0 || v > 1) bad = fmt::format("{} = {} is outside 0-1", name, v);
  }
  if (q.min_phrase_repetitions > q.max_phrase_repetitions)
    bad = fmt::format("min_phrase_repetitions {} > max_phrase_repetitions {}", q.min_phrase_repetitions,
                      q.max_phrase_repetitions);
  for (auto& w : warnings) out.warnings.push_back(fmt::format("{}: {}", path, w));
  if (!bad.empty()) {
    out.warnings.push_back(fmt::format("{}: {}; defaults kept", path, bad));
    return out;
  }
  out.thresholds = q;
  return out;
}

}  // namespace vlm::check
