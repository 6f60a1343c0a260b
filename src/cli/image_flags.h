// The image flags `generate` and `tokenize` share: --image P (repeatable), the visual-token budget
// (--max-pixels, --min-pixels, --resize-shape H [W]), --image-backend pil|torchvision and --pan-and-scan
// (Gemma 3 crops, off by default as in transformers' Gemma3Processor). Registered on
// a subcommand by add_image_flags; validated (CLI::ValidationError naming the flag, exit 2) and turned
// into the processor's options by image_processor_options. Also the --json "images" array.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/json.h"
#include "generate/prompt.h"
#include "image/processor.h"

namespace vlm::cli {

struct ImageFlags {
  std::vector<std::string> images;
  std::optional<int64_t> max_pixels, min_pixels;
  std::vector<int64_t> resize_shape;  // H or H W
  std::string backend;                // "" = the family's transformers default
  bool pan_and_scan = false;
};

void add_image_flags(CLI::App* cmd, ImageFlags& flags);

// Throws CLI::ValidationError naming the flag for a value out of range, a budget without --image,
// or --min-pixels above --max-pixels.
ProcessorOptions image_processor_options(const ImageFlags& flags);

// [{path, width, height, processed_width, processed_height, tiles, image_tokens, backend}, ...]
Json images_json(const std::vector<ImageInfo>& images);

}  // namespace vlm::cli
