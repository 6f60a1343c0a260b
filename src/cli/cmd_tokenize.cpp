// `vlmcheck tokenize`: the prompt a model would see, rendered with the checkpoint's own chat template and
// encoded with its tokenizer.json, printed as {"prompt": ..., "ids": [...]}. Works on a folder that holds only
// tokenizer files, or a repo id in the Hugging Face cache.
//
// BOS rule (transformers, text models): apply_chat_template(tokenize=True) encodes the rendered prompt with
// add_special_tokens=False, because the template writes BOS itself where the model wants it (Gemma's
// `{{ bos_token }}`, Llama 3's `bos_token + ...`). We follow that rule. With --no-chat-template the text is
// encoded as is with add_special_tokens=True, so BOS/EOS are added as the tokenizer's post-processor and
// tokenizer_config.json say; special tokens written in the text are recognised.
//
// VLM folders (config.json with a vision_config and a processor config) follow the processor instead, as
// transformers' `processor(text=rendered, images=...)` does: --image files are decoded (EXIF orientation
// applied) and processed, each image placeholder is expanded to the family's image tokens, and the expanded
// text is encoded with the processor's special-token rule (prepare_prompt in src/generate/prompt.h). "prompt"
// stays the rendered text before expansion; "ids" are what `generate` feeds the model; "images" reports each
// image's sizes, tiles, image tokens and pixel backend.
//
// Thinking: templates that read `enable_thinking` get it (false unless --enable-thinking), as mlx-vlm and
// `vlmcheck generate` pass it; the rendering is src/generate/prompt.h's, shared with generate.
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
#include "cli/image_flags.h"
#include "core/error.h"
#include "core/json.h"
#include "generate/prompt.h"
#include "io/hf_cache.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace vlm::cli {

namespace {

struct TokenizeOptions {
  std::string model, revision, cache_dir;
  std::string prompt, system, messages_file, template_kwargs, template_name = "default";
  bool prompt_given = false, system_given = false;
  ImageFlags image;
  ProcessorOptions processor_options;
  bool no_chat_template = false;
  bool enable_thinking = false;
  bool json = false;
};

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

  // One way in: the same conversation, template variables and encoding rule as `vlmcheck generate`.
  PromptRequest req;
  req.prompt = o.prompt;
  req.system = o.system;
  req.has_system = o.system_given;
  req.messages_file = o.messages_file;
  req.image_paths = o.image.images;
  req.processor_options = o.processor_options;
  req.no_chat_template = o.no_chat_template;
  req.enable_thinking = o.enable_thinking;
  req.template_name = o.template_name;
  req.template_kwargs = parse_template_kwargs(o.template_kwargs);
  PreparedPrompt prepared = prepare_prompt(folder, *tok, req);
  const std::string& prompt = prepared.text;
  const std::vector<int32_t>& ids = prepared.ids;
  if (o.json) {
    Json out = Json::object();
    out["prompt"] = prompt;
    out["ids"] = ids;
    if (!o.image.images.empty()) {
      out["images"] = images_json(prepared.image_info);
      out["image_tokens"] = prepared.image_tokens;
    }
    fmt::print("{}\n", out.dump(-1, ' ', false, Json::error_handler_t::strict));
  } else {
    fmt::print("prompt:\n{}\n\nids ({}):", prompt, ids.size());
    for (int32_t id : ids) fmt::print(" {}", id);
    fmt::print("\n");
    for (const ImageInfo& i : prepared.image_info)
      fmt::print("image: {} ({}x{} -> {}x{}, {} tile(s), {} image tokens, {})\n", i.path, i.width, i.height,
                 i.processed_width, i.processed_height, i.tiles, i.image_tokens, i.backend);
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
  add_image_flags(cmd, o->image);
  auto* no_tmpl = cmd->add_flag("--no-chat-template", o->no_chat_template,
                                "Encode --prompt as is (special tokens recognised, BOS as the tokenizer config says)");
  cmd->add_option("--chat-template-kwargs", o->template_kwargs,
                  "A JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'");
  cmd->add_flag("--enable-thinking", o->enable_thinking,
                "Pass enable_thinking=true to templates that read it (they get false otherwise, as mlx-vlm does)");
  cmd->add_option("--chat-template-name", o->template_name, "Which named chat template to use (default: default)");
  cmd->add_flag("--json", o->json, "Print {\"prompt\": ..., \"ids\": [...]} as one JSON line");
  messages->excludes(prompt)->excludes(system)->excludes(no_tmpl);
  system->excludes(no_tmpl);
  cmd->callback([&action, o, prompt, system] {
    o->prompt_given = prompt->count() > 0;
    o->system_given = system->count() > 0;
    if (o->messages_file.empty() && !o->prompt_given)
      throw CLI::ValidationError("--prompt", "give --prompt (or --messages FILE)");
    o->processor_options = image_processor_options(o->image);
    action = [o] { return run_tokenize(*o); };
  });
}

}  // namespace vlm::cli
