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
// one produced the pixels. The torchvision backend has no LANCZOS for tensors: like transformers, it resizes
// with BICUBIC instead.
//
// Token strings come from where the HF processor reads them: tokenizer_config.json attributes (top level or
// "extra_special_tokens": image_token, boi_token, eoi_token, bos_token) and processor fields, with the HF
// class defaults. Per family (src/image/processors/<family>.cpp):
//   qwen2_vl, qwen2_5_vl  smart_resize; --max-pixels/--min-pixels replace size.longest_edge/shortest_edge;
//                         --resize-shape H W resizes to (H, W) rounded to multiples of patch*merge, no budget.
//   idefics3, smolvlm     longest-edge resize, tiles of max_image_size + a global image; --resize-shape H W
//                         replaces the longest-edge resize (then tiling as usual), which sets the tile count.
//   llava                 shortest-edge resize + centre crop (LlavaImageProcessor's do_pad square first);
//   gemma3, paligemma     resize to size. These three encode one fixed resolution: --resize-shape must equal
//                         it (Error(kInvalidArgument) otherwise), --max/min-pixels are ignored.
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
  // Gemma 3 pan-and-scan. Gemma3Processor passes do_pan_and_scan=False (and its crop parameters 256 / 4 /
  // 1.2) to the image processor unless the caller asks, so the image processor config's own values never
  // apply; unset = off, as transformers.
  std::optional<bool> pan_and_scan;
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
  // Copies of image_token() this image puts in the prompt = feature rows its encoder output must fill
  // (wrappers such as <fake_token_around_image>, <row_i_col_j>, boi/eoi are not counted).
  int64_t image_tokens = 0;
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
  // Whether the expanded text is encoded with the tokenizer's special tokens (add_special_tokens=True; the
  // tokenizer's own rules decide whether a BOS is actually added — engine_facts "Behaviour of the reference"
  // item 8). False for PaliGemma, whose processor turns the tokenizer's BOS/EOS off and writes the BOS itself.
  virtual bool encode_with_special_tokens() const { return true; }
  virtual std::string family() const = 0;
};

// Builds the processor for a checkpoint. `model_config` is config.json; `image_processor` and `processor`
// are the objects ProcessorConfig (io/config.h) found (either may be empty JSON); `tokenizer_config` is
// tokenizer_config.json (TokenizerConfig::raw; may be empty: HF's default token strings are used). `what`
// names the folder in errors. Throws Error(kUnsupported) for a model_type without an image processor,
// Error(kFormat) for a missing/ill-typed field (naming the file and field), Error(kInvalidArgument) for an
// option the family cannot honour.
std::unique_ptr<ImageProcessor> make_image_processor(const Json& model_config, const Json& image_processor,
                                                     const Json& processor, const ProcessorOptions& options,
                                                     const std::string& what,
                                                     const Json& tokenizer_config = Json::object());

// The model_types make_image_processor knows, for messages and discovery.
std::vector<std::string> image_processor_model_types();

// Qwen2-VL smart_resize: (height, width) rounded to multiples of `factor` within [min_pixels, max_pixels].
// Throws Error(kInvalidArgument) where transformers' smart_resize raises (aspect ratio above 200, ...).
std::pair<int, int> qwen_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels);

}  // namespace vlm
