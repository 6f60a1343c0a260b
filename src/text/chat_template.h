// Chat templates as transformers applies them: found in chat_template.jinja, chat_template.json or the
// chat_template field of tokenizer_config.json (a string or a list of named templates), rendered by our
// own Jinja interpreter (src/text/jinja/) with the variables transformers passes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/json.h"

namespace vlm {

struct ChatTemplate {
  std::string source;  // template text
  std::string origin;  // file it came from (for errors)
  // Loads the default template of a model folder (nullopt when the folder has none).
  static std::optional<ChatTemplate> from_folder(const std::string& folder, const std::string& name = "default");
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  Json tools;      // null or list
  Json documents;  // null or list
  Json extra;      // object of extra kwargs (enable_thinking, ...), passed as template variables
  // Special-token strings from tokenizer_config.json (bos_token, eos_token, pad_token, unk_token ...).
  Json special_tokens;
  // Seconds since the epoch that strftime_now() formats (local time); unset: now. For reproducible tests.
  std::optional<int64_t> now_unix;
};

// transformers' `special_tokens_map` from a parsed tokenizer_config.json: bos/eos/unk/sep/pad/cls/mask_token and
// additional_special_tokens, as strings (AddedToken objects give their "content"); absent or null ones omitted.
Json special_tokens_from_config(const Json& tokenizer_config);

// messages: transformers' format, a JSON list of {"role", "content"} where content is a string or a
// list of {"type": "text", "text": ...} / {"type": "image"} items. Errors: Error(kFormat) with the
// template's line and column.
std::string render_chat_template(const ChatTemplate& tmpl, const Json& messages, const ChatRenderOptions& opts);

}  // namespace vlm
