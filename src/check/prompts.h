// Evaluation lanes and their prompts (check_models §2.4): triage / blind / assisted, with `auto`
// (and the deprecated aliases stress / quality) resolving to assisted when the image carries a
// descriptive reference (title, description or keywords), else blind. Prompts are verbatim.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "check/quality.h"
#include "core/json.h"
#include "image/metadata.h"

namespace vlm::check {

enum class Lane { kTriage, kBlind, kAssisted };
const char* lane_name(Lane lane);

extern const char* const kTriagePrompt;
extern const char* const kBlindPrompt;
constexpr int64_t kTriageMaxTokens = 200;
constexpr int64_t kDefaultMaxTokens = 1000;

struct PromptPlan {
  std::string requested_mode;  // as given: auto, triage, blind, assisted, stress, quality
  Lane lane = Lane::kBlind;
  std::string prompt;          // the user text sent with the image
  Json messages;               // --messages conversation (null unless given)
  bool custom_prompt = false;  // --prompt or --messages replaced the lane prompt
  bool metadata_exposed_to_prompt = false;
  int64_t default_max_tokens = kDefaultMaxTokens;
  std::vector<std::string> warnings;
};

// Resolves the lane and builds its prompt. Throws Error(kInvalidArgument) for an unknown mode, and
// for an explicit `assisted` on an image without descriptive metadata (even with --prompt).
PromptPlan plan_prompt(const std::string& eval_mode, const ImageMetadata& md,
                       const std::optional<std::string>& custom_prompt, const Json& messages,
                       const QualityThresholds& q);

// The assisted prompt for given metadata (exposed for tests).
std::string build_assisted_prompt(const ImageMetadata& md, const QualityThresholds& q);
// Metadata text as the prompt shows it: whitespace collapsed, leading/trailing spaces and commas cut.
std::string clean_metadata_text(const std::string& s);

// Loads and checks a --messages file: a JSON list of {"role", "content"} where content is a string
// or a list of {"type":"text","text":…} / {"type":"image"} items. Errors name the file and index.
Json load_messages_file(const std::string& path);
// The text the checks compare against: the text items of the last user message, joined by newlines.
std::string messages_prompt_text(const Json& messages);
// Number of {"type":"image"} items in a conversation.
int count_message_images(const Json& messages);

}  // namespace vlm::check
