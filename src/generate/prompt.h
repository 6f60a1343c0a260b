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
//
// Images (prepare_prompt): a VLM folder (config.json with a vision_config) goes the way transformers'
// `processor(text=rendered, images=...)` goes — every image is decoded upright (EXIF orientation applied,
// as transformers' load_image), processed by the family's image processor built from the folder's own
// processor configs (make_image_processor), the rendered text's placeholders are expanded in order
// (expand_prompt), and the expanded text is encoded with the processor's special-token rule. With a
// loaded VisionModel the images are also encoded and the MultimodalPrompt (embeddings, positions,
// bidirectional groups) is built for the generator. Without a chat template (--no-chat-template, or a
// VLM folder that ships none, like PaliGemma's) the raw prompt goes to expand_prompt as it is: PaliGemma's
// processor builds its native "<image>×N <bos> prompt \n" form; the other processors need the placeholder
// written in the prompt once per image, as transformers requires.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "image/processor.h"
#include "models/language_model.h"
#include "models/vision_model.h"
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
  // prepare_prompt only: image files for the image items, in order (num_images follows their count), and the
  // processing overrides (--max-pixels, --min-pixels, --resize-shape, --image-backend).
  std::vector<std::string> image_paths;
  ProcessorOptions processor_options;
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

// What one image became (reported by generate/tokenize --json and the checker).
struct ImageInfo {
  std::string path;
  int width = 0, height = 0;                      // decoded and upright (EXIF orientation applied)
  int exif_orientation = 1;                       // the file's EXIF Orientation (1 = none)
  int processed_width = 0, processed_height = 0;  // after the processor's resize, before tiling
  int tiles = 1;                                  // tiles/crops fed to the encoder, global image included
  int64_t image_tokens = 0;                       // placeholder tokens it expanded to
  std::string backend;                            // "pil" | "torchvision": which pixel path produced it
  Json to_json() const;  // {path, width, height, processed_width, processed_height, tiles, image_tokens, backend}
};

struct PreparedPrompt {
  std::string text;            // the rendered chat template (or the raw prompt), before image expansion
  std::string expanded_text;   // after the processor's expansion ("" when the text-model rule was used)
  std::vector<int32_t> ids;    // the ids the model sees
  Json messages;               // the conversation rendered (null without a chat template)
  bool processor_encoding = false;  // expanded + encoded the VLM processor's way (else the text-model rule)
  bool template_fallback = false;   // a VLM folder without a chat template: the raw prompt went to the processor
  std::string processor_family;     // ImageProcessor::family() when a processor was used
  int64_t placeholder_count = 0;    // the processor's image placeholders in `text` (PaliGemma's raw prompt: 0)
  std::vector<ProcessedImage> images;
  std::vector<ImageInfo> image_info;
  int64_t image_tokens = 0;              // over all images
  std::optional<MultimodalPrompt> multimodal;  // set when a VisionModel was given and there are images
  double image_preprocess_s = 0;  // decode + processing of every image
  double vision_encode_s = 0;     // vision tower + connector + building the prompt embeddings
};

// The one way from a conversation (+ images) to what the model sees; see the header comment. Without
// `vision` (tokenize) the ids, pixels and per-image facts are computed but nothing is encoded. Errors:
// Error(kUnsupported) for images given to a text-only folder or to a family without an image processor,
// Error(kNotFound) when the folder lacks config.json or its processor config, the decoder's errors
// (naming the file) for a bad image, Error(kInvalidArgument) when placeholders and images disagree.
PreparedPrompt prepare_prompt(const std::string& model_folder, const Tokenizer& tokenizer,
                              const PromptRequest& request, const VisionModel* vision = nullptr,
                              const LanguageModel* language_model = nullptr);

}  // namespace vlm
