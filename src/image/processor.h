// Per-family image processors: from a decoded, upright RGB image to the pixel tensor and the prompt
// expansion that the checkpoint's own transformers processor would produce.
//
// A processor is configured from the checkpoint's processor files (preprocessor_config.json, or the
// "image_processor" object of transformers 5's processor_config.json, plus processor-level fields such
// as image_seq_len) and its config.json (model_type, vision_config sizes, image token ids), never from the
// repository name. It does two things, as transformers' `processor(text=..., images=...)` does:
//   1. process(image): resize / tile / rescale / normalise → pixels, with the token count it implies;
//   2. expand_prompt(text, images): replace each image placeholder of the rendered prompt by the exact
//      token string the HF processor inserts (Qwen: N × <|image_pad|>; Idefics3: the tile grid string;
//      LLaVA: N × <image>; Gemma 3: \n\n<start_of_image> 256 × <image_soft_token> <end_of_image>\n\n;
//      PaliGemma: N × <image> + BOS + prefix + "\n").
// The expanded text is then encoded as the HF processor encodes it (encode_with_special_tokens says how).
//
// Two pixel backends exist because transformers 5 has two: "torchvision" (the default "fast" processors
// for Qwen2-VL, CLIP, SigLIP, Gemma 3) and "pil" (the slow ones, default for Idefics3). Each family uses
// transformers' default unless ProcessorOptions.backend overrides it; ProcessedImage.backend records which
// one produced the pixels.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "image/image.h"

namespace vlm {

enum class PixelBackend { kPil, kTorchvision };
const char* pixel_backend_name(PixelBackend b);  // "pil" | "torchvision"

// The visual-token budget and overrides a user can set (CLI: --max-pixels, --min-pixels,
// --resize-shape H [W], --image-backend pil|torchvision).
struct ProcessorOptions {
  std::optional<int64_t> max_pixels, min_pixels;  // dynamic-resolution families (Qwen2-VL); others ignore
  std::optional<int> resize_height, resize_width;  // --resize-shape: fixed processed size (W = H when one value)
  std::optional<PixelBackend> backend;             // default: the family's transformers default
};

struct ProcessedImage {
  // Pixel layout depends on the family's encoder input:
  //   tiles  (CLIP, SigLIP, Idefics3, Gemma 3, PaliGemma): [n_tiles, 3, tile_h, tile_w] f32 (CHW per tile);
  //   patches (Qwen2-VL / 2.5-VL): [grid_t * grid_h * grid_w, 3 * temporal_patch * patch * patch] f32, in the
  //   HF processor's flattened order (merge-blocks of spatial_merge_size² patches kept together).
  Tensor pixels;
  // Idefics3: [n_tiles, tile_h, tile_w] u8 pixel_attention_mask (1 = real pixel); undefined when every
  // pixel is real.
  Tensor pixel_mask;
  int64_t grid_t = 0, grid_h = 0, grid_w = 0;  // Qwen2-VL patch grid (0 for other families)
  int rows = 0, cols = 0;                      // tiling grid (Idefics3 splits; Gemma 3 pan-and-scan crops)
  int n_tiles = 1;                             // tiles/crops fed to the encoder, global image included
  int processed_width = 0, processed_height = 0;  // size after resize (before tiling)
  int64_t image_tokens = 0;  // placeholder tokens this image expands to in the prompt
  PixelBackend backend = PixelBackend::kPil;
};

class ImageProcessor {
 public:
  virtual ~ImageProcessor() = default;
  // `rgb`: [h, w, 3] u8, upright (decode_image_file output). Throws Error(kInvalidArgument) for an image
  // the family cannot take (e.g. Qwen's aspect ratio > 200), naming the limit.
  virtual ProcessedImage process(const Image& rgb) const = 0;
  // Replaces the image placeholders of `text` (the rendered chat template, or the raw prompt with
  // --no-chat-template) in order with each image's expansion. The number of placeholders must equal
  // images.size() (Error(kInvalidArgument) naming both counts otherwise). PaliGemma, whose processor
  // builds the whole prompt, prepends its image tokens + BOS and appends "\n" here.
  virtual std::string expand_prompt(const std::string& text, const std::vector<ProcessedImage>& images) const = 0;
  // The placeholder a chat template writes for one image item ("<|vision_start|><|image_pad|><|vision_end|>"
  // renders via the template; this is the single token string expand_prompt looks for, e.g. "<|image_pad|>").
  virtual std::string placeholder() const = 0;
  // The token that carries image features after expansion ("<|image_pad|>", "<image>", "<image_soft_token>").
  virtual std::string image_token() const = 0;
  // Whether the HF processor encodes the expanded text with add_special_tokens=True (it does for every
  // family; the tokenizer's own rules decide whether a BOS is actually added — engine_facts "Behaviour of the
  // reference" item 8).
  virtual bool encode_with_special_tokens() const { return true; }
  virtual std::string family() const = 0;
};

// Builds the processor for a checkpoint. `model_config` is config.json; `image_processor` and `processor`
// are the objects ProcessorConfig (io/config.h) found (either may be empty JSON). `what` names the folder in
// errors. Throws Error(kUnsupported) for a model_type without an image processor, Error(kFormat) for a
// missing/ill-typed field (naming the file and field).
std::unique_ptr<ImageProcessor> make_image_processor(const Json& model_config, const Json& image_processor,
                                                     const Json& processor, const ProcessorOptions& options,
                                                     const std::string& what);

// Qwen2-VL smart_resize: (height, width) rounded to multiples of `factor` within [min_pixels, max_pixels].
// Throws Error(kInvalidArgument) where transformers' smart_resize raises (aspect ratio above 200, ...).
std::pair<int, int> qwen_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels);

}  // namespace vlm
