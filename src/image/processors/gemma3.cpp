// Gemma 3 (model_type gemma3): Gemma3ImageProcessor (torchvision backend by default in transformers 5) and
// Gemma3Processor's expansion of the begin-of-image token.
//
// Pixels: resize to size (896x896 on real checkpoints; bilinear), rescale, normalise with mean = std = 0.5.
// Pan-and-scan (only when asked: Gemma3Processor passes do_pan_and_scan=False with min crop 256, max 4 crops,
// activation ratio 1.2, whatever the image processor config says): for an image whose aspect ratio reaches
// the ratio, n = clamp(min(floor(ratio + 0.5), floor(long / 256)), 2, 4) crops of ceil(long / n) along the
// long edge, cut from the original and each resized like the image; the image comes first, then its crops.
// Prompt: each boi token ("<start_of_image>" from tokenizer_config) becomes
//   "\n\n" + boi + image_seq_length × image_token + eoi + "\n\n"   (the full image sequence), or with crops
//   "Here is the original image " + full + " and here are some crops to help you see better " + crops' fulls
//   joined by " ".
#include <cmath>

#include "core/error.h"
#include "image/processors/common.h"

namespace vlm::proc {
namespace {

constexpr int kPasMinCrop = 256, kPasMaxCrops = 4;
constexpr double kPasMinRatio = 1.2;

// Gemma3ImageProcessor.pan_and_scan: crop rectangles (x, y, w, h) in the original image, row-major.
std::vector<std::array<int, 4>> pan_and_scan_crops(int height, int width) {
  int ncw = 1, nch = 1;
  if (width >= height) {
    if (static_cast<double>(width) / height < kPasMinRatio) return {};
    ncw = static_cast<int>(std::floor(static_cast<double>(width) / height + 0.5));
    ncw = std::min(static_cast<int>(std::floor(static_cast<double>(width) / kPasMinCrop)), ncw);
    ncw = std::min(kPasMaxCrops, std::max(2, ncw));
  } else {
    if (static_cast<double>(height) / width < kPasMinRatio) return {};
    nch = static_cast<int>(std::floor(static_cast<double>(height) / width + 0.5));
    nch = std::min(static_cast<int>(std::floor(static_cast<double>(height) / kPasMinCrop)), nch);
    nch = std::min(kPasMaxCrops, std::max(2, nch));
  }
  const int cw = static_cast<int>(std::ceil(static_cast<double>(width) / ncw));
  const int ch = static_cast<int>(std::ceil(static_cast<double>(height) / nch));
  if (std::min(cw, ch) < kPasMinCrop) return {};
  std::vector<std::array<int, 4>> out;
  for (int i = 0; i < nch; ++i)
    for (int j = 0; j < ncw; ++j) out.push_back({j * cw, i * ch, cw, ch});
  return out;
}

class Gemma3Processor final : public ImageProcessor {
 public:
  Gemma3Processor(const Sources& s, const ProcessorOptions& o)
      : pan_and_scan_(o.pan_and_scan.value_or(false)),
        fixed_(read_fixed_resize(s, o, ResampleFilter::kBilinear, "gemma3")) {
    const std::string w = s.image_what();
    // Gemma3Processor(image_seq_length=256) from processor_config.json; config.json's mm_tokens_per_image
    // is the same number where a folder has no processor config.
    std::optional<int64_t> seq = json_int(s.processor, "image_seq_length", s.processor_what());
    if (!seq) seq = json_int(s.image_processor, "image_seq_length", w);
    if (!seq) seq = json_int(s.model_config, "mm_tokens_per_image", s.config_what());
    image_seq_length_ = seq.value_or(256);
    VLM_CHECK(image_seq_length_ > 0, ErrorKind::kFormat, "{}: image_seq_length must be positive", s.what);
    const std::string tw = s.tokenizer_what();
    boi_ = tokenizer_token(s.tokenizer_config, "boi_token", "<start_of_image>", tw);
    eoi_ = tokenizer_token(s.tokenizer_config, "eoi_token", "<end_of_image>", tw);
    image_token_ = tokenizer_token(s.tokenizer_config, "image_token", "<image_soft_token>", tw);
    full_sequence_ = "\n\n" + boi_ + repeat(image_token_, image_seq_length_) + eoi_ + "\n\n";
  }

  ProcessedImage process(const Image& rgb) const override {
    std::vector<Image> frames;
    frames.push_back(rgb.clone());
    if (pan_and_scan_)
      for (const auto& r : pan_and_scan_crops(rgb.height(), rgb.width()))
        frames.push_back(crop_clipped(rgb, r[0], r[1], r[2], r[3]));
    std::vector<Tensor> tiles;
    for (Image& f : frames) {
      f = fixed_.resize(f);
      tiles.push_back(fixed_.pixels(f));
    }
    ProcessedImage out;
    out.backend = fixed_.backend;
    out.processed_height = frames[0].height();
    out.processed_width = frames[0].width();
    out.pixels = stack_tiles(tiles);  // [1 + crops, 3, h, w]
    out.n_tiles = static_cast<int>(tiles.size());
    out.cols = out.n_tiles > 1 ? out.n_tiles - 1 : 0;  // crops (one row or one column of them)
    out.rows = out.n_tiles > 1 ? 1 : 0;
    out.image_tokens = image_seq_length_ * out.n_tiles;
    return out;
  }

  std::string expand_prompt(const std::string& text, const std::vector<ProcessedImage>& images) const override {
    return replace_placeholders(text, boi_, images.size(), [&](size_t i) {
      const int crops = images[i].n_tiles - 1;
      if (crops <= 0) return full_sequence_;
      std::string s = "Here is the original image " + full_sequence_ + " and here are some crops to help you see better ";
      for (int c = 0; c < crops; ++c) s += (c ? " " : "") + full_sequence_;
      return s;
    }, family());
  }
  std::string placeholder() const override { return boi_; }
  std::string image_token() const override { return image_token_; }
  std::string family() const override { return "gemma3"; }

 private:
  bool pan_and_scan_ = false;
  FixedResize fixed_;
  int64_t image_seq_length_ = 256;
  std::string boi_, eoi_, image_token_, full_sequence_;
};

}  // namespace

std::unique_ptr<ImageProcessor> make_gemma3(const Sources& s, const ProcessorOptions& o) {
  return std::make_unique<Gemma3Processor>(s, o);
}

}  // namespace vlm::proc
