// Conversation → chat template → prompt ids (rules in prompt.h).
#include "generate/prompt.h"

#include <filesystem>

#include "core/error.h"
#include "text/chat_template.h"

namespace vlm {

Json parse_template_kwargs(const std::string& text) {
  if (text.empty()) return Json();
  Json kwargs = parse_json(text, "--chat-template-kwargs");
  VLM_CHECK(kwargs.is_object(), ErrorKind::kInvalidArgument,
            "--chat-template-kwargs must be a JSON object such as '{{\"enable_thinking\": false}}', got {}",
            kwargs.type_name());
  return kwargs;
}

Json read_messages_file(const std::string& path) {
  Json m = read_json_file(path);
  VLM_CHECK(m.is_array(), ErrorKind::kFormat, "{}: --messages must hold a JSON list of messages, got {}", path,
            m.type_name());
  for (size_t i = 0; i < m.size(); ++i) {
    const Json& msg = m[i];
    VLM_CHECK(msg.is_object(), ErrorKind::kFormat, "{}: message {} must be an object, got {}", path, i,
              msg.type_name());
    VLM_CHECK(msg.contains("role") && msg["role"].is_string(), ErrorKind::kFormat,
              "{}: message {} needs a string \"role\"", path, i);
    if (!msg.contains("content")) continue;  // assistant tool-call turns may omit it
    const Json& c = msg["content"];
    VLM_CHECK(c.is_string() || c.is_array() || c.is_null(), ErrorKind::kFormat,
              "{}: message {} \"content\" must be a string or a list of items, got {}", path, i, c.type_name());
    if (c.is_array())
      for (size_t k = 0; k < c.size(); ++k)
        VLM_CHECK(c[k].is_object() && c[k].contains("type") && c[k]["type"].is_string(), ErrorKind::kFormat,
                  "{}: message {} content item {} must be an object with a string \"type\"", path, i, k);
  }
  return m;
}

Json build_messages(const PromptRequest& r, bool as_list) {
  Json messages = Json::array();
  if (r.has_system) messages.push_back({{"role", "system"}, {"content", r.system}});
  if (!as_list) {
    messages.push_back({{"role", "user"}, {"content", r.prompt}});
    return messages;
  }
  Json content = Json::array();
  for (size_t i = 0; i < r.num_images; ++i) content.push_back({{"type", "image"}});
  content.push_back({{"type", "text"}, {"text", r.prompt}});
  messages.push_back({{"role", "user"}, {"content", content}});
  return messages;
}

namespace {
size_t count_image_items(const Json& messages) {
  size_t n = 0;
  for (const auto& msg : messages)
    if (msg.contains("content") && msg["content"].is_array())
      for (const auto& item : msg["content"])
        if (item.value("type", "") == "image") ++n;
  return n;
}
}  // namespace

RenderedPrompt render_prompt(const std::string& folder, const Tokenizer& tok, const PromptRequest& r) {
  RenderedPrompt out;
  if (r.no_chat_template) {
    out.text = r.prompt;
    out.ids = tok.encode(out.text, /*add_special_tokens=*/true);
    return out;
  }
  const bool given_conversation = !r.messages.is_null() || !r.messages_file.empty();
  if (given_conversation) {
    out.messages = !r.messages.is_null() ? r.messages : read_messages_file(r.messages_file);
    VLM_CHECK(out.messages.is_array(), ErrorKind::kInvalidArgument, "the conversation must be a JSON list of messages");
    size_t items = count_image_items(out.messages);
    // A conversation from a file pairs its image items with --image paths; an in-memory one (the checker's)
    // may carry image items a text-only model renders without an image.
    VLM_CHECK(r.messages_file.empty() || items == r.num_images, ErrorKind::kInvalidArgument,
              "{}: the conversation has {} image item(s) but {} --image path(s) were given; each image item takes "
              "the next --image",
              r.messages_file, items, r.num_images);
  }
  std::optional<ChatTemplate> tmpl = ChatTemplate::from_folder(folder, r.template_name);
  VLM_CHECK(tmpl.has_value(), ErrorKind::kNotFound,
            "{}: no chat template (looked for chat_template.jinja, chat_template.json and the chat_template field "
            "of tokenizer_config.json); use --no-chat-template to encode --prompt as is",
            folder);
  ChatRenderOptions ro;
  ro.add_generation_prompt = true;
  const std::string cfg = folder + "/tokenizer_config.json";
  if (std::filesystem::exists(cfg)) ro.special_tokens = special_tokens_from_config(read_json_file(cfg));
  ro.extra = Json::object();
  if (tmpl->source.find("enable_thinking") != std::string::npos) ro.extra["enable_thinking"] = r.enable_thinking;
  if (r.enable_thinking && tmpl->source.find("thinking_mode") != std::string::npos)
    ro.extra["thinking_mode"] = "enabled";
  if (r.template_kwargs.is_object())
    for (const auto& [k, v] : r.template_kwargs.items()) ro.extra[k] = v;  // explicit kwargs win
  if (given_conversation) {
    out.text = render_chat_template(*tmpl, out.messages, ro);
  } else {
    // Content form: DESIGN.md's content list when there are images or the template reads content items
    // (its source mentions "type"); text templates (Qwen3, Llama 3) get the plain string they concatenate.
    // A list-reading template that still fails on the list without images gets the string form once more.
    const bool as_list = r.num_images > 0 || tmpl->source.find("type") != std::string::npos;
    out.messages = build_messages(r, as_list);
    try {
      out.text = render_chat_template(*tmpl, out.messages, ro);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kFormat || r.num_images > 0 || !as_list) throw;
      Json plain = build_messages(r, false);
      try {
        out.text = render_chat_template(*tmpl, plain, ro);
      } catch (const Error&) {
        throw e;
      }
      out.messages = std::move(plain);
    }
  }
  out.ids = tok.encode(out.text, /*add_special_tokens=*/false);
  return out;
}

}  // namespace vlm
