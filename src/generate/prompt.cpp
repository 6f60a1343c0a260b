// Conversation (+ images) → chat template → placeholder expansion → prompt ids (+ multimodal prompt);
// rules in prompt.h.
#include "generate/prompt.h"

#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "image/image.h"
#include "io/config.h"
#include "kernels/ops.h"
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

namespace vlm {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The VLM side of a model folder: its config.json (when present) and whether it declares a vision tower.
struct FolderKind {
  std::optional<ModelConfig> config;
  bool vlm = false;
};

FolderKind inspect_folder(const std::string& folder) {
  FolderKind k;
  const std::string path = folder + "/config.json";
  if (std::filesystem::exists(path)) {
    k.config = ModelConfig::load(path);
    k.vlm = k.config->has_vision();
  }
  return k;
}

// The family's image processor from the folder's own configs. `required`: images are to be processed, so a
// missing processor is an error; otherwise (a text conversation) nullopt sends the prompt down the text rule.
std::unique_ptr<ImageProcessor> build_processor(const std::string& folder, const FolderKind& kind,
                                                const ProcessorOptions& options, bool required) {
  if (!kind.config) {
    VLM_CHECK(!required, ErrorKind::kNotFound,
              "{}: expanding images needs the model's config.json (and its preprocessor_config.json or "
              "processor_config.json); this folder has tokenizer files only",
              folder);
    return nullptr;
  }
  if (!kind.vlm) {
    VLM_CHECK(!required, ErrorKind::kUnsupported,
              "{}: model_type '{}' is a text-only model (config.json has no vision_config); it cannot take --image",
              folder, kind.config->model_type);
    return nullptr;
  }
  std::optional<ProcessorConfig> pc = ProcessorConfig::load_from_folder(folder);
  if (!pc) {
    VLM_CHECK(!required, ErrorKind::kNotFound,
              "{}: model_type '{}' has a vision tower but neither preprocessor_config.json nor processor_config.json, "
              "so its images cannot be processed as transformers would",
              folder, kind.config->model_type);
    return nullptr;
  }
  try {
    return make_image_processor(kind.config->raw, pc->image_processor, pc->processor, options, folder);
  } catch (const Error& e) {
    if (required || e.kind() != ErrorKind::kUnsupported) throw;
    return nullptr;  // a VLM family without an image processor yet: text prompts still work
  }
}

size_t count_image_items_in(const Json& messages) {
  size_t n = 0;
  if (!messages.is_array()) return 0;
  for (const auto& msg : messages)
    if (msg.is_object() && msg.contains("content") && msg["content"].is_array())
      for (const auto& item : msg["content"])
        if (item.is_object() && item.value("type", "") == "image") ++n;
  return n;
}

}  // namespace

Json ImageInfo::to_json() const {
  return Json{{"path", path},
              {"width", width},
              {"height", height},
              {"processed_width", processed_width},
              {"processed_height", processed_height},
              {"tiles", tiles},
              {"image_tokens", image_tokens},
              {"backend", backend}};
}

PreparedPrompt prepare_prompt(const std::string& folder, const Tokenizer& tok, const PromptRequest& request,
                              const VisionModel* vision, const LanguageModel* lm) {
  PromptRequest r = request;
  const size_t n_images = r.image_paths.size();
  if (n_images > 0) r.num_images = n_images;
  const FolderKind kind = inspect_folder(folder);

  // ---- the text: chat template (or the raw prompt) ----
  PreparedPrompt out;
  const bool given_conversation = !r.messages.is_null() || !r.messages_file.empty();
  // A VLM folder without a chat template (PaliGemma ships none): its processor takes the raw prompt.
  if (!r.no_chat_template && kind.vlm && !given_conversation && !r.has_system &&
      !ChatTemplate::from_folder(folder, r.template_name)) {
    r.no_chat_template = true;
    out.template_fallback = true;
  }
  RenderedPrompt rendered = render_prompt(folder, tok, r);
  out.text = rendered.text;
  out.messages = rendered.messages;
  if (n_images > 0 && !r.messages.is_null()) {
    const size_t items = count_image_items_in(r.messages);
    VLM_CHECK(items == n_images, ErrorKind::kInvalidArgument,
              "the conversation has {} image item(s) but {} image(s) were given; each image item takes the next image",
              items, n_images);
  }

  // ---- the processor, or the text-model rule ----
  std::unique_ptr<ImageProcessor> processor = build_processor(folder, kind, r.processor_options, n_images > 0);
  if (!processor) {
    out.ids = std::move(rendered.ids);
    return out;
  }
  out.processor_encoding = true;
  out.processor_family = processor->family();
  const std::string placeholder = processor->placeholder();
  if (!placeholder.empty())
    for (size_t at = out.text.find(placeholder); at != std::string::npos; at = out.text.find(placeholder, at + 1))
      ++out.placeholder_count;

  // ---- images: decode upright, process ----
  const Clock::time_point t_images = Clock::now();
  out.images.reserve(n_images);
  for (const std::string& path : r.image_paths) {
    DecodedImage decoded = decode_image_file(path);
    ProcessedImage processed = processor->process(decoded.image);
    ImageInfo info;
    info.path = path;
    info.width = decoded.image.width();
    info.height = decoded.image.height();
    info.exif_orientation = decoded.exif_orientation;
    info.processed_width = processed.processed_width;
    info.processed_height = processed.processed_height;
    info.tiles = processed.n_tiles;
    info.image_tokens = processed.image_tokens;
    info.backend = pixel_backend_name(processed.backend);
    out.image_tokens += processed.image_tokens;
    out.image_info.push_back(std::move(info));
    out.images.push_back(std::move(processed));
  }
  out.image_preprocess_s = seconds_since(t_images);

  // ---- expansion + encoding, as processor(text=..., images=...) ----
  try {
    out.expanded_text = processor->expand_prompt(out.text, out.images);
  } catch (const Error& e) {
    if (!r.no_chat_template || e.kind() != ErrorKind::kInvalidArgument) throw;
    throw_error(ErrorKind::kInvalidArgument,
                "{} (without a chat template the prompt goes to the {} processor as written: put its image "
                "placeholder '{}' in --prompt once per image, or use the chat template)",
                e.what(), processor->family(), processor->placeholder());
  }
  out.ids = tok.encode(out.expanded_text, processor->encode_with_special_tokens());

  // ---- vision: features + the prompt the language model sees ----
  if (vision && n_images > 0) {
    VLM_CHECK(lm != nullptr, ErrorKind::kInternal, "prepare_prompt: a vision model needs its language model");
    const Clock::time_point t_vision = Clock::now();
    std::vector<Tensor> features;
    features.reserve(n_images);
    for (const ProcessedImage& img : out.images) features.push_back(vision->encode(img));
    out.multimodal = vision->build_prompt(*lm, out.ids, out.images, features);
    // The features and the prompt stay on the tower's device, so nothing above waited for its queued work:
    // wait here, or vision_encode_s would count only the launches and the LM prefill the tower's time.
    if (vision->device() != Device::kCpu) {
      ops::DeviceScope scope(vision->device());
      ops::synchronize();
    }
    out.vision_encode_s = seconds_since(t_vision);
  }
  return out;
}

}  // namespace vlm
