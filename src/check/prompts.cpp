// Lane resolution and the verbatim lane prompts; see prompts.h and check_models §2.4.
#include "check/prompts.h"

#include <fmt/format.h>

#include "check/text_util.h"
#include "core/error.h"
#include "core/log.h"

namespace vlm::check {

const char* const kTriagePrompt = "Describe this image briefly.";

const char* const kBlindPrompt =
    "Create British-English catalogue metadata using only clearly visible facts. Omit uncertain details and "
    "unsupported identity, location, event, brand, species, period, or intent.\n"
    "\n"
    "Write:\n"
    "- a concrete 5-10-word title;\n"
    "- a 1-2-sentence factual description of the main subject, setting, action, lighting, and distinctive "
    "details;\n"
    "- 10-18 unique, comma-separated keywords.\n"
    "\n"
    "Return exactly these three sections and nothing else:\n"
    "Title:\n"
    "Description:\n"
    "Keywords:";

const char* lane_name(Lane lane) {
  switch (lane) {
    case Lane::kTriage: return "triage";
    case Lane::kBlind: return "blind";
    case Lane::kAssisted: return "assisted";
  }
  return "blind";
}

std::string clean_metadata_text(const std::string& s) {
  std::string t = collapse_whitespace(s);
  size_t b = t.find_first_not_of(" ,"), e = t.find_last_not_of(" ,");
  return b == std::string::npos ? std::string() : t.substr(b, e - b + 1);
}

std::string build_assisted_prompt(const ImageMetadata& md, const QualityThresholds& q) {
  std::string out =
      "Create British-English catalogue metadata from the image and supplied context.\n"
      "\n"
      "Treat any capture date/time and GPS as authoritative facts, but do not claim they are visible. "
      "Descriptive hints may be incomplete or wrong: retain details supported by the image, correct conflicts, "
      "and add important visible details. Prefer image evidence when a hint conflicts, and omit uncertain "
      "details.\n"
      "\n";
  std::vector<std::string> authoritative;
  if (md.date) {
    std::string when = clean_metadata_text(*md.date);
    if (md.time && when.find(*md.time) == std::string::npos) when += " " + *md.time;
    authoritative.push_back("- Capture date/time: " + when);
  }
  if (md.gps) authoritative.push_back("- GPS: " + clean_metadata_text(*md.gps));
  std::vector<std::string> hints;
  if (md.title && !clean_metadata_text(*md.title).empty())
    hints.push_back("- Title hint: " +
                    truncate_chars(clean_metadata_text(*md.title), static_cast<size_t>(q.prompt_title_max_chars)));
  if (md.description && !clean_metadata_text(*md.description).empty())
    hints.push_back("- Description hint: " + truncate_chars(clean_metadata_text(*md.description),
                                                            static_cast<size_t>(q.prompt_description_max_chars)));
  std::vector<std::string> kws, seen;
  for (const auto& k : md.keyword_list) {
    std::string c = clean_metadata_text(k);
    if (c.empty() || std::find(seen.begin(), seen.end(), lower_ascii(c)) != seen.end()) continue;
    seen.push_back(lower_ascii(c));
    kws.push_back(c);
    if (static_cast<int>(kws.size()) >= q.prompt_keyword_max_items) break;
  }
  if (!kws.empty()) {
    std::string joined;
    for (const auto& k : kws) joined += (joined.empty() ? "" : ", ") + k;
    hints.push_back("- Keyword hints: " + joined);
  }
  if (!authoritative.empty()) {
    out += "Context: Authoritative context:\n";
    for (const auto& l : authoritative) out += l + "\n";
    out += "\n";
  }
  if (!hints.empty()) {
    out += authoritative.empty() ? "Context: Descriptive hints:\n" : "Descriptive hints:\n";
    for (const auto& l : hints) out += l + "\n";
    out += "\n";
  }
  out +=
      "Write:\n"
      "- a concrete 5-10-word title;\n"
      "- a 1-2-sentence factual description combining relevant context with the main visible subject, setting, "
      "action, lighting, and distinctive details;\n"
      "- 10-18 unique, comma-separated keywords covering relevant context and visible details.\n"
      "\n"
      "Return exactly these three sections and nothing else:\n"
      "Title:\n"
      "Description:\n"
      "Keywords:";
  return out;
}

PromptPlan plan_prompt(const std::string& eval_mode, const ImageMetadata& md,
                       const std::optional<std::string>& custom_prompt, const Json& messages,
                       const QualityThresholds& q) {
  PromptPlan p;
  p.requested_mode = eval_mode;
  bool descriptive = md.has_descriptive();
  if (eval_mode == "triage") {
    p.lane = Lane::kTriage;
  } else if (eval_mode == "blind") {
    p.lane = Lane::kBlind;
  } else if (eval_mode == "assisted") {
    if (!descriptive)
      throw_error(ErrorKind::kInvalidArgument,
                  "--eval-mode assisted needs descriptive metadata (title, description or keywords) in the image; "
                  "none was found (use --eval-mode blind or auto)");
    p.lane = Lane::kAssisted;
  } else if (eval_mode == "auto" || eval_mode == "stress" || eval_mode == "quality") {
    if (eval_mode != "auto")
      p.warnings.push_back(fmt::format("--eval-mode {} is a deprecated alias of auto", eval_mode));
    p.lane = descriptive ? Lane::kAssisted : Lane::kBlind;
  } else {
    throw_error(ErrorKind::kInvalidArgument,
                "--eval-mode {}: expected one of auto, triage, blind, assisted, stress, quality", eval_mode);
  }
  p.default_max_tokens = p.lane == Lane::kTriage ? kTriageMaxTokens : kDefaultMaxTokens;
  if (!messages.is_null()) {
    p.messages = messages;
    p.prompt = messages_prompt_text(messages);
    p.custom_prompt = true;
  } else if (custom_prompt) {
    p.prompt = *custom_prompt;
    p.custom_prompt = true;
  } else if (p.lane == Lane::kTriage) {
    p.prompt = kTriagePrompt;
  } else if (p.lane == Lane::kBlind) {
    p.prompt = kBlindPrompt;
  } else {
    p.prompt = build_assisted_prompt(md, q);
  }
  p.metadata_exposed_to_prompt =
      !p.custom_prompt && p.lane == Lane::kAssisted && (descriptive || md.date.has_value() || md.gps.has_value());
  return p;
}

Json load_messages_file(const std::string& path) {
  Json m = read_json_file(path, size_t{16} << 20);
  VLM_CHECK(m.is_array() && !m.empty(), ErrorKind::kFormat, "--messages {}: expected a non-empty JSON list", path);
  for (size_t i = 0; i < m.size(); ++i) {
    const Json& msg = m[i];
    VLM_CHECK(msg.is_object() && msg.contains("role") && msg["role"].is_string(), ErrorKind::kFormat,
              "--messages {}: message [{}] needs a string \"role\"", path, i);
    VLM_CHECK(msg.contains("content"), ErrorKind::kFormat, "--messages {}: message [{}] has no \"content\"", path, i);
    const Json& c = msg["content"];
    if (c.is_string()) continue;
    VLM_CHECK(c.is_array(), ErrorKind::kFormat,
              "--messages {}: message [{}] content must be a string or a list of items", path, i);
    for (size_t k = 0; k < c.size(); ++k) {
      const Json& item = c[k];
      std::string type = item.is_object() && item.contains("type") && item["type"].is_string()
                             ? item["type"].get<std::string>()
                             : "";
      VLM_CHECK(type == "text" || type == "image", ErrorKind::kFormat,
                "--messages {}: message [{}] item [{}]: \"type\" must be \"text\" or \"image\"", path, i, k);
      if (type == "text")
        VLM_CHECK(item.contains("text") && item["text"].is_string(), ErrorKind::kFormat,
                  "--messages {}: message [{}] item [{}]: text item needs a string \"text\"", path, i, k);
    }
  }
  return m;
}

std::string messages_prompt_text(const Json& messages) {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if ((*it).value("role", "") != "user") continue;
    const Json& c = (*it)["content"];
    if (c.is_string()) return c.get<std::string>();
    std::string out;
    for (const auto& item : c)
      if (item.value("type", "") == "text") out += (out.empty() ? "" : "\n") + item["text"].get<std::string>();
    return out;
  }
  return "";
}

int count_message_images(const Json& messages) {
  int n = 0;
  for (const auto& msg : messages)
    if (msg.contains("content") && msg["content"].is_array())
      for (const auto& item : msg["content"])
        if (item.is_object() && item.value("type", "") == "image") ++n;
  return n;
}

}  // namespace vlm::check
