// Qwen2-VL / Qwen2.5-VL: Qwen2VLImageProcessor (torchvision backend by default in transformers 5) and
// Qwen2VLProcessor's placeholder expansion.
//
// Pixels: smart_resize to multiples of patch_size * merge_size within [min_pixels, max_pixels], resize
// (bicubic), rescale + normalise (CLIP mean/std), the frame repeated to temporal_patch_size, and the
// flattening of Qwen2VLImageProcessor._preprocess: view [gt, T, C, gh/m, m, P, gw/m, m, P] permuted to
// [gt, gh/m, gw/m, m, m, C, T, P, P], so each merge block's m*m patches are consecutive rows.
// Prompt: each "<|image_pad|>" (tokenizer image_token) becomes grid_t*grid_h*grid_w / merge² copies.
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "image/processors/common.h"

namespace vlm::proc {
namespace {

// OPENAI_CLIP_MEAN / OPENAI_CLIP_STD (transformers image_utils).
const std::vector<float> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
const std::vector<float> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};

class Qwen2VLProcessor final : public ImageProcessor {
 public:
  Qwen2VLProcessor(const Sources& s, const ProcessorOptions& o) : options_(o) {
    const Json& ip = s.image_processor;
    const std::string w = s.image_what();
    // Qwen2VLImageProcessor.__init__: size (default {56*56, 28*28*1280}) with min_pixels / max_pixels
    // overriding its shortest_edge / longest_edge.
    min_pixels_ = 56 * 56;
    max_pixels_ = 28 * 28 * 1280;
    if (auto size = read_size(ip, "size", false, w)) {
      VLM_CHECK(size->shortest_edge && size->longest_edge, ErrorKind::kFormat,
                "{}: field \"size\" must contain \"shortest_edge\" and \"longest_edge\" (pixel counts)", w);
      min_pixels_ = *size->shortest_edge;
      max_pixels_ = *size->longest_edge;
    }
    if (auto v = json_int(ip, "min_pixels", w)) min_pixels_ = *v;
    if (auto v = json_int(ip, "max_pixels", w)) max_pixels_ = *v;
    if (o.min_pixels) min_pixels_ = *o.min_pixels;
    if (o.max_pixels) max_pixels_ = *o.max_pixels;
    VLM_CHECK(min_pixels_ > 0 && max_pixels_ >= min_pixels_, ErrorKind::kInvalidArgument,
              "{}: min_pixels {} and max_pixels {} must satisfy 0 < min <= max", s.what, min_pixels_, max_pixels_);
    do_resize_ = read_bool(ip, "do_resize", true, w);
    resample_ = read_resample(ip, "resample", ResampleFilter::kBicubic, w);
    norm_ = read_normalization(ip, kClipMean, kClipStd, w);
    patch_ = static_cast<int>(read_positive(ip, "patch_size", 14, w));
    temporal_ = static_cast<int>(read_positive(ip, "temporal_patch_size", 2, w));
    merge_ = static_cast<int>(read_positive(ip, "merge_size", 2, w));
    backend_ = pick_backend(o, PixelBackend::kTorchvision);
    image_token_ = tokenizer_token(s.tokenizer_config, "image_token", "<|image_pad|>", s.tokenizer_what());
  }

  ProcessedImage process(const Image& rgb) const override {
    const int factor = patch_ * merge_;
    int h = rgb.height(), w = rgb.width();
    if (options_.resize_height) {
      // --resize-shape: the requested size rounded to whole merge blocks; the pixel budget does not apply.
      const int rh = *options_.resize_height, rw = options_.resize_width.value_or(rh);
      h = std::max(factor, static_cast<int>(std::nearbyint(static_cast<double>(rh) / factor)) * factor);
      w = std::max(factor, static_cast<int>(std::nearbyint(static_cast<double>(rw) / factor)) * factor);
    } else if (do_resize_) {
      std::tie(h, w) = qwen_smart_resize(rgb.height(), rgb.width(), factor, min_pixels_, max_pixels_);
    }
    VLM_CHECK(h % factor == 0 && w % factor == 0, ErrorKind::kInvalidArgument,
              "Qwen2-VL processor: a {}x{} image is not a multiple of patch_size*merge_size = {} (do_resize is off)",
              w, h, factor);
    Image resized = (h == rgb.height() && w == rgb.width()) ? rgb.clone() : backend_resize(rgb, w, h, resample_, backend_);
    Tensor chw = backend_normalize(resized, norm_, backend_);  // [3, h, w] f32

    ProcessedImage out;
    out.backend = backend_;
    out.processed_height = h;
    out.processed_width = w;
    out.grid_t = 1;  // one frame, repeated temporal_patch_size times
    out.grid_h = h / patch_;
    out.grid_w = w / patch_;
    const int64_t C = 3, T = temporal_, P = patch_, M = merge_;
    const int64_t rows = out.grid_t * out.grid_h * out.grid_w, cols = C * T * P * P;
    out.pixels = Tensor::empty({rows, cols}, DType::kF32, MemCategory::kImage);  // [patches, C*T*P*P]
    const float* src = chw.data<float>();
    float* dst = out.pixels.data<float>();
    const int64_t bh_n = out.grid_h / M, bw_n = out.grid_w / M;
    // One row of merge blocks per work item: rows bh*bw_n*M*M .. (bh+1)*bw_n*M*M of the output.
    ThreadPool::global().parallel_for(bh_n, [&](int64_t b0, int64_t b1) {
      for (int64_t bh = b0; bh < b1; ++bh) {
        int64_t r = bh * bw_n * M * M;
        for (int64_t bw = 0; bw < bw_n; ++bw)
          for (int64_t mh = 0; mh < M; ++mh)
            for (int64_t mw = 0; mw < M; ++mw, ++r) {
              const int64_t y0 = (bh * M + mh) * P, x0 = (bw * M + mw) * P;
              float* row = dst + r * cols;
              for (int64_t c = 0; c < C; ++c)
                for (int64_t t = 0; t < T; ++t)  // every temporal slot holds the same frame
                  for (int64_t py = 0; py < P; ++py)
                    std::memcpy(row + ((c * T + t) * P + py) * P, src + (c * h + y0 + py) * w + x0,
                                size_t(P) * sizeof(float));
            }
      }
    });
    out.image_tokens = rows / (M * M);
    out.n_tiles = 1;
    return out;
  }

  std::string expand_prompt(const std::string& text, const std::vector<ProcessedImage>& images) const override {
    return replace_placeholders(text, image_token_, images.size(), [&](size_t i) {
      return repeat(image_token_, images[i].image_tokens);
    }, family());
  }
  std::string placeholder() const override { return image_token_; }
  std::string image_token() const override { return image_token_; }
  std::string family() const override { return "qwen2_vl"; }

 private:
  ProcessorOptions options_;
  int64_t min_pixels_ = 0, max_pixels_ = 0;
  bool do_resize_ = true;
  ResampleFilter resample_ = ResampleFilter::kBicubic;
  Normalization norm_;
  int patch_ = 14, temporal_ = 2, merge_ = 2;
  PixelBackend backend_ = PixelBackend::kTorchvision;
  std::string image_token_;
};

}  // namespace

std::unique_ptr<ImageProcessor> make_qwen2_vl(const Sources& s, const ProcessorOptions& o) {
  return std::make_unique<Qwen2VLProcessor>(s, o);
}

}  // namespace vlm::proc
