// LLaVA-1.5 (model_type llava): CLIPImageProcessor (torchvision backend by default in transformers 5), or
// LlavaImageProcessor when the config names it (do_pad: paste onto a square of the mean colour first), or
// SiglipImageProcessor for SigLIP towers (its defaults: square resize, no crop), and LlavaProcessor's
// expansion of "<image>".
//
// Pixels: resize the shortest edge to size.shortest_edge (long edge int(short * long / short)), centre crop
// to crop_size, rescale + normalise (OpenAI CLIP mean/std).
// Prompt: every "<image>" becomes N copies, N = (crop_h // patch_size) * (crop_w // patch_size)
//   + num_additional_image_tokens - (1 if vision_feature_select_strategy == "default"), from the processor
// config (patch_size, vision_feature_select_strategy, num_additional_image_tokens, image_token). Where the
// processor config lacks patch_size / the strategy, config.json's vision_config.patch_size /
// vision_feature_select_strategy (the values the model itself uses) stand in.
#include "core/error.h"
#include "image/processors/common.h"

namespace vlm::proc {
namespace {

const std::vector<float> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
const std::vector<float> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};
const std::vector<float> kHalf = {0.5f, 0.5f, 0.5f};

// get_resize_output_image_size(size=shortest_edge, default_to_square=False): (h, w).
std::pair<int, int> shortest_edge_size(int height, int width, int64_t short_target) {
  const bool w_short = width <= height;
  const int64_t s = w_short ? width : height, l = w_short ? height : width;
  if (s == short_target) return {height, width};
  // int(requested_new_short * long / short): Python float division of ints, truncated.
  const int64_t new_long = static_cast<int64_t>(static_cast<double>(short_target * l) / static_cast<double>(s));
  return w_short ? std::pair<int, int>{static_cast<int>(new_long), static_cast<int>(short_target)}
                 : std::pair<int, int>{static_cast<int>(short_target), static_cast<int>(new_long)};
}

// TorchvisionBackend.center_crop: pads with floor-left/top halves when the crop is larger, then crops at
// int((H - h) / 2.0). (The numpy version, center_crop in resample.h, pads with the ceiling half.)
Image center_crop_torchvision(const Image& src, int cw, int ch) {
  Image img = src.clone();
  if (cw > img.width() || ch > img.height()) {
    const int l = cw > img.width() ? (cw - img.width()) / 2 : 0, t = ch > img.height() ? (ch - img.height()) / 2 : 0;
    const int r = cw > img.width() ? (cw - img.width() + 1) / 2 : 0, b = ch > img.height() ? (ch - img.height() + 1) / 2 : 0;
    img = pad_image(img, img.width() + l + r, img.height() + t + b, l, t);
    if (img.width() == cw && img.height() == ch) return img;
  }
  const int top = static_cast<int>((img.height() - ch) / 2.0), left = static_cast<int>((img.width() - cw) / 2.0);
  return crop_clipped(img, left, top, cw, ch);
}

class LlavaProcessor final : public ImageProcessor {
 public:
  LlavaProcessor(const Sources& s, const ProcessorOptions& o) {
    const Json& ip = s.image_processor;
    const std::string w = s.image_what();
    // Class defaults: LLaVA checkpoints name CLIPImageProcessor (or LlavaImageProcessor, same defaults), and
    // a few SigLIP-tower ones SiglipImageProcessor (square resize, no crop, mean = std = 0.5).
    const std::string type = json_string(ip, "image_processor_type", w).value_or("CLIPImageProcessor");
    const bool siglip = type.rfind("Siglip", 0) == 0;
    do_resize_ = read_bool(ip, "do_resize", true, w);
    size_ = read_size(ip, "size", siglip, w)
                .value_or(siglip ? SizeSpec{224, 224, std::nullopt, std::nullopt}
                                 : SizeSpec{std::nullopt, std::nullopt, 224, std::nullopt});
    do_crop_ = read_bool(ip, "do_center_crop", !siglip, w);
    crop_ = read_size(ip, "crop_size", true, w).value_or(SizeSpec{224, 224, std::nullopt, std::nullopt});
    VLM_CHECK(!do_crop_ || (crop_.height && crop_.width), ErrorKind::kFormat,
              "{}: field \"crop_size\" must have \"height\" and \"width\"", w);
    VLM_CHECK(!do_resize_ || size_.shortest_edge || (size_.height && size_.width), ErrorKind::kFormat,
              "{}: field \"size\" must have \"shortest_edge\" or \"height\" and \"width\"", w);
    resample_ = read_resample(ip, "resample", ResampleFilter::kBicubic, w);
    norm_ = read_normalization(ip, siglip ? kHalf : kClipMean, siglip ? kHalf : kClipStd, w);
    do_pad_ = type.rfind("LlavaImageProcessor", 0) == 0 && read_bool(ip, "do_pad", false, w);
    backend_ = pick_backend(o, PixelBackend::kTorchvision);

    static const Json kNone = Json::object();
    const Json* vcp = json_find(s.model_config, "vision_config");
    const Json& vc = vcp ? *vcp : kNone;
    const std::string pw = s.processor_what();
    std::optional<int64_t> patch = json_int(s.processor, "patch_size", pw);
    if (!patch) patch = json_int(vc, "patch_size", s.config_what() + " vision_config");
    VLM_CHECK(patch && *patch > 0, ErrorKind::kFormat,
              "{}: field \"patch_size\" is missing from the processor config and config.json vision_config", s.what);
    patch_ = *patch;
    std::optional<std::string> strategy = json_string(s.processor, "vision_feature_select_strategy", pw);
    if (!strategy) strategy = json_string(s.model_config, "vision_feature_select_strategy", s.config_what());
    strategy_ = strategy.value_or("default");  // LlavaConfig's default
    VLM_CHECK(strategy_ == "default" || strategy_ == "full", ErrorKind::kFormat,
              "{}: vision_feature_select_strategy must be \"default\" or \"full\", got \"{}\"", s.what, strategy_);
    num_additional_ = read_int(s.processor, "num_additional_image_tokens", 0, pw);
    image_token_ = tokenizer_token(s.tokenizer_config, "image_token",
                                   json_string(s.processor, "image_token", pw).value_or("<image>"), s.tokenizer_what());
    if (do_crop_)
      check_fixed_resize_shape(o, *crop_.height, *crop_.width, "llava");
    else if (size_.height && size_.width)
      check_fixed_resize_shape(o, *size_.height, *size_.width, "llava");
    else if (o.resize_height)
      throw_error(ErrorKind::kInvalidArgument, "--resize-shape: llava without centre crop keeps the aspect ratio; "
                                               "its size comes from the image processor's \"size\"");
  }

  ProcessedImage process(const Image& rgb) const override {
    Image img = rgb.clone();
    if (do_pad_) {
      // LlavaImageProcessor.pad_to_square: background = tuple(int(x * 255) for x in image_mean).
      std::array<uint8_t, 4> fill{};
      for (int c = 0; c < 3; ++c) fill[c] = static_cast<uint8_t>(static_cast<int>(static_cast<double>(norm_.mean[c]) * 255));
      img = expand_to_square(img, fill);
    }
    if (do_resize_) {
      auto [h, w] = size_.shortest_edge ? shortest_edge_size(img.height(), img.width(), *size_.shortest_edge)
                                        : std::pair<int, int>{static_cast<int>(*size_.height), static_cast<int>(*size_.width)};
      if (h != img.height() || w != img.width()) img = backend_resize(img, w, h, resample_, backend_);
    }
    if (do_crop_) {
      const int ch = static_cast<int>(*crop_.height), cw = static_cast<int>(*crop_.width);
      img = backend_ == PixelBackend::kPil ? center_crop(img, cw, ch) : center_crop_torchvision(img, cw, ch);
    }
    ProcessedImage out;
    out.backend = backend_;
    out.processed_height = img.height();
    out.processed_width = img.width();
    out.pixels = stack_tiles({backend_normalize(img, norm_, backend_)});  // [1, 3, h, w]
    out.image_tokens = (img.height() / patch_) * (img.width() / patch_) + num_additional_ - (strategy_ == "default" ? 1 : 0);
    VLM_CHECK(out.image_tokens > 0, ErrorKind::kInvalidArgument, "llava processor: a {}x{} image gives {} image tokens",
              img.width(), img.height(), out.image_tokens);
    return out;
  }

  std::string expand_prompt(const std::string& text, const std::vector<ProcessedImage>& images) const override {
    return replace_placeholders(text, image_token_, images.size(),
                                [&](size_t i) { return repeat(image_token_, images[i].image_tokens); }, family());
  }
  std::string placeholder() const override { return image_token_; }
  std::string image_token() const override { return image_token_; }
  std::string family() const override { return "llava"; }

 private:
  bool do_resize_ = true, do_crop_ = true, do_pad_ = false;
  SizeSpec size_, crop_;
  ResampleFilter resample_ = ResampleFilter::kBicubic;
  Normalization norm_;
  PixelBackend backend_ = PixelBackend::kTorchvision;
  int64_t patch_ = 14, num_additional_ = 0;
  std::string strategy_, image_token_;
};

}  // namespace

std::unique_ptr<ImageProcessor> make_llava(const Sources& s, const ProcessorOptions& o) {
  return std::make_unique<LlavaProcessor>(s, o);
}

}  // namespace vlm::proc
