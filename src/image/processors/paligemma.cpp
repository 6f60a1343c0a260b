// PaliGemma (model_type paligemma): SiglipImageProcessor (torchvision backend by default in transformers 5)
// and PaliGemmaProcessor, which builds the whole prefix itself.
//
// Pixels: resize to size (bicubic), rescale, normalise with mean = std = 0.5.
// Prompt (PaliGemmaProcessor.__call__):
//   text without "<image>": image_seq_length × n_images × "<image>" + bos_token + text + "\n"
//                            (build_string_from_input);
//   text with "<image>":    each "<image>" becomes image_seq_length copies, then "\n" is appended.
// The processor sets tokenizer.add_bos_token = add_eos_token = False, so the string is encoded without
// special tokens: the BOS it wrote is the only one.
#include "core/error.h"
#include "image/processors/common.h"

namespace vlm::proc {
namespace {

const char* const kImageToken = "<image>";  // PaliGemmaProcessor IMAGE_TOKEN (fixed)

class PaliGemmaProcessor final : public ImageProcessor {
 public:
  PaliGemmaProcessor(const Sources& s, const ProcessorOptions& o)
      : fixed_(read_fixed_resize(s, o, ResampleFilter::kBicubic, "paligemma")) {
    const Json& ip = s.image_processor;
    const std::string w = s.image_what();
    // PaliGemmaProcessor raises "Image processor is missing an `image_seq_length` attribute" without it.
    std::optional<int64_t> seq = json_int(ip, "image_seq_length", w);
    if (!seq) seq = json_int(s.processor, "image_seq_length", s.processor_what());
    VLM_CHECK(seq.has_value(), ErrorKind::kFormat,
              "{}: field \"image_seq_length\" is missing from the image processor config (PaliGemmaProcessor needs it)",
              w);
    VLM_CHECK(*seq > 0, ErrorKind::kFormat, "{}: field \"image_seq_length\" must be positive, got {}", w, *seq);
    image_seq_length_ = *seq;
    bos_ = tokenizer_token(s.tokenizer_config, "bos_token", "<bos>", s.tokenizer_what());
  }

  ProcessedImage process(const Image& rgb) const override {
    const Image img = fixed_.resize(rgb);
    ProcessedImage out;
    out.backend = fixed_.backend;
    out.processed_height = img.height();
    out.processed_width = img.width();
    out.pixels = stack_tiles({fixed_.pixels(img)});  // [1, 3, h, w]
    out.image_tokens = image_seq_length_;
    return out;
  }

  std::string expand_prompt(const std::string& text, const std::vector<ProcessedImage>& images) const override {
    if (count_occurrences(text, kImageToken) == 0) {
      int64_t n = 0;
      for (const ProcessedImage& im : images) n += im.image_tokens;
      return repeat(kImageToken, n) + bos_ + text + "\n";
    }
    return replace_placeholders(text, kImageToken, images.size(),
                                [&](size_t i) { return repeat(kImageToken, images[i].image_tokens); }, family()) +
           "\n";
  }
  std::string placeholder() const override { return kImageToken; }
  std::string image_token() const override { return kImageToken; }
  bool encode_with_special_tokens() const override { return false; }
  std::string family() const override { return "paligemma"; }

 private:
  FixedResize fixed_;
  int64_t image_seq_length_ = 256;
  std::string bos_;
};

}  // namespace

std::unique_ptr<ImageProcessor> make_paligemma(const Sources& s, const ProcessorOptions& o) {
  return std::make_unique<PaliGemmaProcessor>(s, o);
}

}  // namespace vlm::proc
