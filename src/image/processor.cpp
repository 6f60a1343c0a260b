// Processor selection by config.json model_type, and Qwen's smart_resize (public because the visual-token
// budget is reported before any pixel is touched). The families live in src/image/processors/.
#include "image/processor.h"

#include <cmath>

#include "core/error.h"
#include "image/processors/common.h"

namespace vlm {

const char* pixel_backend_name(PixelBackend b) { return b == PixelBackend::kPil ? "pil" : "torchvision"; }

std::pair<int, int> qwen_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels) {
  VLM_CHECK(height > 0 && width > 0, ErrorKind::kInvalidArgument, "smart_resize: image size {}x{} must be positive",
            width, height);
  VLM_CHECK(factor > 0, ErrorKind::kInvalidArgument, "smart_resize: factor {} must be positive", factor);
  // transformers' smart_resize, step for step in float64 (Python's true division of ints is the correctly
  // rounded quotient, as IEEE division of the exactly representable operands here; round() is half-even).
  const double ratio = static_cast<double>(std::max(height, width)) / std::min(height, width);
  VLM_CHECK(ratio <= 200.0, ErrorKind::kInvalidArgument,
            "smart_resize: absolute aspect ratio must be smaller than 200, got {} ({}x{})", ratio, width, height);
  const double f = factor;
  int64_t h_bar = static_cast<int64_t>(std::nearbyint(height / f)) * factor;
  int64_t w_bar = static_cast<int64_t>(std::nearbyint(width / f)) * factor;
  const double hw = static_cast<double>(int64_t{height} * width);
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(hw / static_cast<double>(max_pixels));
    h_bar = std::max<int64_t>(factor, static_cast<int64_t>(std::floor(height / beta / f)) * factor);
    w_bar = std::max<int64_t>(factor, static_cast<int64_t>(std::floor(width / beta / f)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / hw);
    h_bar = static_cast<int64_t>(std::ceil(height * beta / f)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(width * beta / f)) * factor;
  }
  // transformers would go on with a zero-sized grid (and fail later); name the cause instead.
  VLM_CHECK(h_bar >= factor && w_bar >= factor, ErrorKind::kInvalidArgument,
            "smart_resize: {}x{} with min_pixels {} / max_pixels {} gives {}x{}, smaller than one {}-pixel merge "
            "block",
            width, height, min_pixels, max_pixels, w_bar, h_bar, factor);
  VLM_CHECK(h_bar <= (1 << 20) && w_bar <= (1 << 20), ErrorKind::kResource,
            "smart_resize: {}x{} would be resized to {}x{}", width, height, w_bar, h_bar);
  return {static_cast<int>(h_bar), static_cast<int>(w_bar)};
}

namespace {

using Factory = std::unique_ptr<ImageProcessor> (*)(const proc::Sources&, const ProcessorOptions&);

struct Entry {
  const char* model_type;
  Factory make;
};

// One line per model_type (the HF processor class each selects).
constexpr Entry kFamilies[] = {
    {"qwen2_vl", proc::make_qwen2_vl},      // Qwen2VLProcessor + Qwen2VLImageProcessor
    {"qwen2_5_vl", proc::make_qwen2_vl},    // Qwen2_5_VLProcessor + Qwen2VLImageProcessor
    {"idefics3", proc::make_idefics3},      // Idefics3Processor (Idefics3, SmolVLM)
    {"smolvlm", proc::make_smolvlm},        // SmolVLMProcessor (SmolVLM2): Idefics3's steps, tokenizer tokens
    {"llava", proc::make_llava},            // LlavaProcessor + CLIPImageProcessor / LlavaImageProcessor
    {"gemma3", proc::make_gemma3},          // Gemma3Processor + Gemma3ImageProcessor
    {"paligemma", proc::make_paligemma},    // PaliGemmaProcessor + SiglipImageProcessor
};

}  // namespace

std::vector<std::string> image_processor_model_types() {
  std::vector<std::string> out;
  for (const Entry& e : kFamilies) out.emplace_back(e.model_type);
  return out;
}

std::unique_ptr<ImageProcessor> make_image_processor(const Json& model_config, const Json& image_processor,
                                                     const Json& processor, const ProcessorOptions& options,
                                                     const std::string& what, const Json& tokenizer_config) {
  const std::string model_type = json_string(model_config, "model_type", what + "/config.json").value_or("");
  VLM_CHECK(!model_type.empty(), ErrorKind::kFormat, "{}/config.json: field \"model_type\" is missing", what);
  if (options.resize_height)
    VLM_CHECK(*options.resize_height > 0 && options.resize_width.value_or(1) > 0, ErrorKind::kInvalidArgument,
              "--resize-shape: sizes must be positive");
  if (options.max_pixels) VLM_CHECK(*options.max_pixels > 0, ErrorKind::kInvalidArgument, "--max-pixels must be positive");
  if (options.min_pixels) VLM_CHECK(*options.min_pixels > 0, ErrorKind::kInvalidArgument, "--min-pixels must be positive");
  static const Json kEmpty = Json::object();
  const proc::Sources s{model_config, image_processor.is_object() ? image_processor : kEmpty,
                        processor.is_object() ? processor : kEmpty,
                        tokenizer_config.is_object() ? tokenizer_config : kEmpty, what};
  for (const Entry& e : kFamilies)
    if (model_type == e.model_type) return e.make(s, options);
  std::string known;
  for (const Entry& e : kFamilies) known += std::string(known.empty() ? "" : ", ") + e.model_type;
  throw_error(ErrorKind::kUnsupported, "{}: no image processor for model_type \"{}\" (supported: {})", what, model_type,
              known);
}

}  // namespace vlm
