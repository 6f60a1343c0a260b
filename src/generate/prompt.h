// From the user's conversation to prompt ids, the way `vlmcheck generate` (and mlx-vlm's
// apply_chat_template) does it: the conversation is either --messages (transformers' messages
// format) or built from --system/--prompt/--image (DESIGN.md: optional system message, then one
// user message with one image item per image followed by the text; with no image and a template that
// never reads content items, the plain string text templates expect); it is rendered with the
// checkpoint's own chat template (add_generation_prompt=true) and encoded without adding special
// tokens (the template writes BOS itself), the same rule as `vlmcheck tokenize`.
//
// Thinking (mlx-vlm get_chat_template): when the template mentions `enable_thinking`, it receives
// enable_thinking = params.enable_thinking (so false unless asked, as mlx-vlm injects); when
// thinking is on and the template mentions `thinking_mode`, it also receives thinking_mode="enabled".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/json.h"
#include "text/tokenizer.h"

namespace vlm {

struct PromptRequest {
  std::string prompt;
  std::string system;
  bool has_system = false;
  std::string messages_file;  // replaces prompt/system when set
  Json messages;              // an in-memory conversation (transformers' format); replaces all of the above
  size_t num_images = 0;      // image items to build (or to expect in messages_file)
  bool no_chat_template = false;  // encode `prompt` as is, with the tokenizer's special tokens
  Json template_kwargs;            // null or an object of extra template variables
  bool enable_thinking = false;
  std::string template_name = "default";
};

struct RenderedPrompt {
  std::string text;
  std::vector<int32_t> ids;
  Json messages;  // the conversation rendered (null with no_chat_template)
};

// --chat-template-kwargs: a JSON object of extra template variables (null when `text` is empty).
// Throws Error(kFormat) for invalid JSON and Error(kInvalidArgument) for anything but an object.
Json parse_template_kwargs(const std::string& text);

// transformers' messages format, validated (errors name the file and the message index).
Json read_messages_file(const std::string& path);
// DESIGN.md's conversation for --system/--prompt/--image: the user content is a list of image items then
// the text item when as_list, else the plain prompt string (render_prompt decides, see there).
Json build_messages(const PromptRequest& request, bool as_list);

RenderedPrompt render_prompt(const std::string& model_folder, const Tokenizer& tokenizer, const PromptRequest& request);

}  // namespace vlm
