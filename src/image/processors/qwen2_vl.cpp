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
    VLM_CHECK(rgb.channels() == 3, ErrorKind::kInvalidArgument,
              "image processor: expected an RGB image, got {} channels", rgb.channels());
    Image resized;
    if (h != rgb.height() || w != rgb.width()) resized = backend_resize(rgb, w, h, resample_, backend_);
    const Image& img = resized.empty() ? rgb : resized;  // [h, w, 3] u8
    // Rescale + normalise is a per-(channel, byte) table, so the [3, h, w] f32 image is never built: the
    // patch rows below read the u8 pixels through it (a 12 MP photo skips writing and re-reading 146 MB).
    const std::vector<float> lut = normalization_lut(norm_, backend_);  // [3, 256]

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
    float* dst = out.pixels.data<float>();
    const int64_t bw_n = out.grid_w / M, blocks = (out.grid_h / M) * bw_n;
    const size_t stride = img.row_bytes();
    // One merge block (M*M consecutive output rows) per item; the first touch of the output's pages is
    // spread over the pool with the writes.
    ThreadPool::global().parallel_for(blocks, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t bh = b / bw_n, bw = b % bw_n;
        int64_t r = b * M * M;
        for (int64_t mh = 0; mh < M; ++mh)
          for (int64_t mw = 0; mw < M; ++mw, ++r) {
            const int64_t y0 = (bh * M + mh) * P, x0 = (bw * M + mw) * P;
            float* row = dst + r * cols;
            for (int64_t c = 0; c < C; ++c) {
              const float* l = &lut[size_t(c) * 256];
              float* first = row + c * T * P * P;  // temporal slot 0 of channel c: [P, P]
              for (int64_t py = 0; py < P; ++py) {
                const uint8_t* s = img.data() + size_t(y0 + py) * stride + size_t(x0) * C + c;
                float* d = first + py * P;
                for (int64_t px = 0; px < P; ++px) d[px] = l[s[px * C]];
              }
              for (int64_t t = 1; t < T; ++t)  // every temporal slot holds the same frame
                std::memcpy(first + t * P * P, first, size_t(P * P) * sizeof(float));
            }
          }
      }
    }, 16);
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
