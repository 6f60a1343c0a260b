// The observation registry (check_models §4.3) and the immutable three-axis assessment shared by
// every artefact: execution (completed / crashed / indeterminate), usability (usable /
// usable_with_caveats / unusable / not_evaluated) and maintainer status (none /
// observation_needs_reproduction / actionable_failure). Also failure classification (§4.4):
// stage, owning package, canonical code and a stable signature for clustering across runs.
#pragma once

#include <string>
#include <vector>

#include "check/analysis.h"
#include "check/record.h"

namespace vlm::check {

struct ObservationInfo {
  const char* code;
  const char* label;  // maintainer label
  const char* gloss;  // short gloss for tables
  bool unusable;
  bool integration_signal;
};
// In display priority, gross first.
const std::vector<ObservationInfo>& observation_registry();
const ObservationInfo* find_observation(const std::string& code);
int observation_rank(const std::string& code);  // index in the registry; large when unknown

// Builds the assessment of a completed run from its analysis (observations + details).
Assessment assess_completed(const TextAnalysis& a);
// Assessment of a failed run: crashed, or indeterminate for connectivity / download timeouts.
Assessment assess_failed(const Failure& f, const std::string& captured_output);
// The observation label with its details ("Missing or empty fields: Title, Keywords").
std::string enriched_label(const std::string& code, const Json& details);
// Throws Error(kInternal) for an illegal axis combination (checked before anything is published).
void validate_assessment(const std::string& model, const Assessment& a);

// Failure classification from the phase, error kind and message.
Failure classify_failure(const std::string& phase, const std::string& error_kind, const std::string& message);
// The normalised message used by signatures: first line, digits → N, "(N,N,…)" → "(N,...)".
std::string normalize_failure_message(const std::string& message);

// One line describing --rerun-triage evidence (ModelResult::rerun), "" when there was no rerun:
// "succeeded: 212 chars in 1.84s (\"Describe this image briefly.\", max 100 tokens)" or
// "failed in model_load: SIGSEGV (...)".
std::string rerun_summary(const Json& rerun);

// One line for where the model ran (ModelResult::device), "" for records without it: "cpu", or
// "cuda (language model; peak GPU memory 1.2 GB)".
std::string device_summary(const ModelResult& r);

struct Counts {
  int attempted = 0, evaluated = 0, completed = 0, crashed = 0, indeterminate = 0;
  int usable = 0, caveats = 0, unusable = 0, not_evaluated = 0;
  int actionable = 0, needs_repro = 0;
};
Counts count_results(const std::vector<ModelResult>& results);

// Orders, all stable and explicit so that reports compare byte for byte:
// actionability (worst observation rank, then usability, then name case-folded);
std::vector<const ModelResult*> sort_by_actionability(const std::vector<ModelResult>& results);
// chooser (usable → caveats → unusable → not evaluated, then name case-folded);
std::vector<const ModelResult*> sort_for_chooser(const std::vector<ModelResult>& results);
// context (failures first, then ascending generation time, then name).
std::vector<const ModelResult*> sort_failures_first(const std::vector<ModelResult>& results);

}  // namespace vlm::check
