// The image flags shared by `generate` and `tokenize` (image_flags.h).
#include "cli/image_flags.h"

#include <fmt/format.h>

namespace vlm::cli {

void add_image_flags(CLI::App* cmd, ImageFlags& f) {
  cmd->add_option("--image", f.images, "An image for the next image item (repeatable; EXIF orientation applied)");
  cmd->add_option("--max-pixels", f.max_pixels,
                  "Upper bound on a processed image's pixels (dynamic-resolution families such as Qwen2-VL; "
                  "caps the image tokens)");
  cmd->add_option("--min-pixels", f.min_pixels, "Lower bound on a processed image's pixels (dynamic-resolution "
                                                "families)");
  cmd->add_option("--resize-shape", f.resize_shape, "Resize every image to H x W before processing (one value: "
                                                    "a square)")
      ->expected(1, 2);
  cmd->add_option("--image-backend", f.backend,
                  "Pixel path: pil or torchvision (default: what transformers uses for the family)")
      ->check(CLI::IsMember({"pil", "torchvision"}));
  cmd->add_flag("--pan-and-scan", f.pan_and_scan,
                "Gemma 3: add pan-and-scan crops of wide/tall images (transformers' do_pan_and_scan=True)");
}

ProcessorOptions image_processor_options(const ImageFlags& f) {
  ProcessorOptions o;
  auto need_image = [&](const char* flag) {
    if (f.images.empty())
      throw CLI::ValidationError(flag, "only applies to images; give --image (or drop the flag)");
  };
  if (f.max_pixels) {
    need_image("--max-pixels");
    if (*f.max_pixels <= 0)
      throw CLI::ValidationError("--max-pixels", fmt::format("must be a positive pixel count, got {}", *f.max_pixels));
    o.max_pixels = f.max_pixels;
  }
  if (f.min_pixels) {
    need_image("--min-pixels");
    if (*f.min_pixels <= 0)
      throw CLI::ValidationError("--min-pixels", fmt::format("must be a positive pixel count, got {}", *f.min_pixels));
    o.min_pixels = f.min_pixels;
  }
  if (f.max_pixels && f.min_pixels && *f.min_pixels > *f.max_pixels)
    throw CLI::ValidationError("--min-pixels", fmt::format("{} is above --max-pixels {}", *f.min_pixels,
                                                           *f.max_pixels));
  if (!f.resize_shape.empty()) {
    need_image("--resize-shape");
    if (f.resize_shape.size() > 2)
      throw CLI::ValidationError("--resize-shape", fmt::format("takes H or H W, got {} values", f.resize_shape.size()));
    for (int64_t v : f.resize_shape)
      if (v <= 0 || v > 65535)
        throw CLI::ValidationError("--resize-shape",
                                   fmt::format("each value must be a size in pixels in [1, 65535], got {}", v));
    o.resize_height = static_cast<int>(f.resize_shape[0]);
    o.resize_width = static_cast<int>(f.resize_shape.size() == 2 ? f.resize_shape[1] : f.resize_shape[0]);
  }
  if (!f.backend.empty()) {
    need_image("--image-backend");
    o.backend = f.backend == "pil" ? PixelBackend::kPil : PixelBackend::kTorchvision;
  }
  if (f.pan_and_scan) {
    need_image("--pan-and-scan");
    o.pan_and_scan = true;
  }
  return o;
}

Json images_json(const std::vector<ImageInfo>& images) {
  Json a = Json::array();
  for (const ImageInfo& i : images) a.push_back(i.to_json());
  return a;
}

}  // namespace vlm::cli
