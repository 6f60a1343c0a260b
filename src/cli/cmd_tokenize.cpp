// `vlmcheck tokenize`: the prompt a model would see, rendered with the checkpoint's own chat template and
// encoded with its tokenizer.json, printed as {"prompt": ..., "ids": [...]}. Works on a folder that holds only
// tokenizer files, or a repo id in the Hugging Face cache.
//
// BOS rule (transformers, text models): apply_chat_template(tokenize=True) encodes the rendered prompt with
// add_special_tokens=False, because the template writes BOS itself where the model wants it (Gemma's
// `{{ bos_token }}`, Llama 3's `bos_token + ...`). We follow that rule. (A VLM *processor* encodes with
// add_special_tokens=True yet ends with a single BOS; that path arrives with image expansion.) With
// --no-chat-template the text is encoded as is with add_special_tokens=True, so BOS/EOS are added as the
// tokenizer's post-processor and tokenizer_config.json say; special tokens written in the text are recognised.
//
// Content form: the conversation from --prompt/--system/--image uses content lists (DESIGN.md) when the template
// reads content items (its source mentions "type") or there are images. Text-only templates (Qwen3, Llama 3)
// never do and concatenate `message.content` as a string, so they get the prompt as plain-string content; and if
// a list-reading template still fails on the list without images, the string form is tried once more.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/exit_codes.h"
#include "core/error.h"
#include "core/json.h"
#include "io/hf_cache.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace vlm::cli {

namespace {

struct TokenizeOptions {
  std::string model, revision, cache_dir;
  std::string prompt, system, messages_file, template_kwargs, template_name = "default";
  bool prompt_given = false, system_given = false;
  std::vector<std::string> images;
  bool no_chat_template = false;
  bool json = false;
};

// transformers' messages format: a list of {"role": str, "content": str | [{"type": "text", "text": str} |
// {"type": "image"} | ...]}. Other keys (tool_calls, reasoning_content, ...) pass through to the template.
Json read_messages(const std::string& path) {
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

size_t count_image_items(const Json& messages) {
  size_t n = 0;
  for (const auto& msg : messages)
    if (msg.contains("content") && msg["content"].is_array())
      for (const auto& item : msg["content"])
        if (item.value("type", "") == "image") ++n;
  return n;
}

// DESIGN.md: an optional system message, then one user message with one image item per --image followed by
// the prompt text. `as_list` false gives the plain-string content that text-only templates expect.
Json build_messages(const TokenizeOptions& o, bool as_list) {
  Json messages = Json::array();
  if (o.system_given) messages.push_back({{"role", "system"}, {"content", o.system}});
  if (!as_list) {
    messages.push_back({{"role", "user"}, {"content", o.prompt}});
    return messages;
  }
  Json content = Json::array();
  for (size_t i = 0; i < o.images.size(); ++i) content.push_back({{"type", "image"}});
  content.push_back({{"type", "text"}, {"text", o.prompt}});
  messages.push_back({{"role", "user"}, {"content", content}});
  return messages;
}

void require_utf8(const std::string& s, const char* flag) {
  try {
    (void)Json(s).dump();
  } catch (const Json::exception&) {
    throw_error(ErrorKind::kInvalidArgument, "{} is not valid UTF-8 text", flag);
  }
}

int run_tokenize(const TokenizeOptions& o) {
  require_utf8(o.prompt, "--prompt");
  require_utf8(o.system, "--system");
  ResolvedModel r = resolve_model(o.model, o.revision, o.cache_dir);
  const std::string& folder = r.snapshot;
  std::unique_ptr<Tokenizer> tok = Tokenizer::from_folder(folder);

  std::string prompt;
  std::vector<int32_t> ids;
  size_t images = o.images.size();
  if (o.no_chat_template) {
    prompt = o.prompt;
    ids = tok->encode(prompt, /*add_special_tokens=*/true);
  } else {
    Json messages = o.messages_file.empty() ? Json() : read_messages(o.messages_file);
    if (!o.messages_file.empty()) {
      size_t items = count_image_items(messages);
      if (items != images)
        throw_error(ErrorKind::kInvalidArgument,
                    "{}: the conversation has {} image item(s) but {} --image path(s) were given; each image item "
                    "takes the next --image",
                    o.messages_file, items, images);
    }
    std::optional<ChatTemplate> tmpl = ChatTemplate::from_folder(folder, o.template_name);
    if (!tmpl)
      throw_error(ErrorKind::kNotFound,
                  "{}: no chat template (looked for chat_template.jinja, chat_template.json and the chat_template "
                  "field of tokenizer_config.json); use --no-chat-template to encode --prompt as is",
                  folder);
    // Templates that never look at an item's "type" are text templates: they get plain-string content.
    bool as_list = images > 0 || tmpl->source.find("type") != std::string::npos;
    if (o.messages_file.empty()) messages = build_messages(o, as_list);
    ChatRenderOptions ro;
    ro.add_generation_prompt = true;
    std::string cfg_path = folder + "/tokenizer_config.json";
    if (std::filesystem::exists(cfg_path)) ro.special_tokens = special_tokens_from_config(read_json_file(cfg_path));
    if (!o.template_kwargs.empty()) {
      ro.extra = parse_json(o.template_kwargs, "--chat-template-kwargs");
      VLM_CHECK(ro.extra.is_object(), ErrorKind::kInvalidArgument,
                "--chat-template-kwargs must be a JSON object such as '{{\"enable_thinking\": false}}', got {}",
                ro.extra.type_name());
    }
    try {
      prompt = render_chat_template(*tmpl, messages, ro);
    } catch (const Error& e) {
      // Text-only templates (Qwen3, Llama 3) concatenate `message.content` as a string and fail on the content
      // list; without images the same conversation with string content is what they are meant to get.
      if (e.kind() != ErrorKind::kFormat || !o.messages_file.empty() || images > 0 || !as_list) throw;
      try {
        prompt = render_chat_template(*tmpl, build_messages(o, false), ro);
      } catch (const Error&) {
        throw e;
      }
    }
    ids = tok->encode(prompt, /*add_special_tokens=*/false);
  }
  if (images > 0)
    throw_error(ErrorKind::kUnsupported,
                "image expansion not built yet: the prompt rendered ({} image item(s)), but turning each image "
                "into the model's image tokens arrives with the vision encoders",
                images);
  if (o.json) {
    Json out = Json::object();
    out["prompt"] = prompt;
    out["ids"] = ids;
    fmt::print("{}\n", out.dump(-1, ' ', false, Json::error_handler_t::strict));
  } else {
    fmt::print("prompt:\n{}\n\nids ({}):", prompt, ids.size());
    for (int32_t id : ids) fmt::print(" {}", id);
    fmt::print("\n");
  }
  return kExitOk;
}

}  // namespace

void register_tokenize(CLI::App& root, Action& action) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* cmd = root.add_subcommand(
      "tokenize",
      "Render the chat template and print the prompt token ids (text models' rule: the rendered prompt is encoded "
      "without adding special tokens; the template writes BOS itself)");
  cmd->add_option("--model", o->model, "A local folder (tokenizer files are enough) or a cached repo id")->required();
  cmd->add_option("--revision", o->revision, "Branch, tag, commit sha or unique sha prefix (cached repos)");
  cmd->add_option("--cache-dir", o->cache_dir, "Hub cache directory (default: HF_HUB_CACHE, HF_HOME/hub, ...)");
  auto* prompt = cmd->add_option("--prompt", o->prompt, "The user's text");
  auto* system = cmd->add_option("--system", o->system, "A system message before the user's");
  auto* messages = cmd->add_option("--messages", o->messages_file,
                                   "A JSON file with a whole conversation in transformers' messages format");
  cmd->add_option("--image", o->images, "An image for the next image item (repeatable)");
  auto* no_tmpl = cmd->add_flag("--no-chat-template", o->no_chat_template,
                                "Encode --prompt as is (special tokens recognised, BOS as the tokenizer config says)");
  cmd->add_option("--chat-template-kwargs", o->template_kwargs,
                  "A JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'");
  cmd->add_option("--chat-template-name", o->template_name, "Which named chat template to use (default: default)");
  cmd->add_flag("--json", o->json, "Print {\"prompt\": ..., \"ids\": [...]} as one JSON line");
  messages->excludes(prompt)->excludes(system)->excludes(no_tmpl);
  system->excludes(no_tmpl);
  cmd->callback([&action, o, prompt, system] {
    o->prompt_given = prompt->count() > 0;
    o->system_given = system->count() > 0;
    if (o->messages_file.empty() && !o->prompt_given)
      throw CLI::ValidationError("--prompt", "give --prompt (or --messages FILE)");
    action = [o] { return run_tokenize(*o); };
  });
}

}  // namespace vlm::cli
