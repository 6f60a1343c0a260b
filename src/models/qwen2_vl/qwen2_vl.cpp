// Qwen2-VL and Qwen2.5-VL: the Qwen ViT (QwenVisionEncoder: patch embed, 2-D RoPE, window attention for 2.5,
// PatchMerger) gives one feature row per merged patch block; the language model is the Qwen2 decoder with
// M-RoPE (mrope_section from rope_parameters, or rope_scaling in the flat Hub layout). build_prompt is
// transformers 5.17's get_rope_index for one sequence: the ids are split into runs of text tokens and runs of
// image tokens (mm_token_type_ids 0 / 1 — the processor marks exactly the image-pad tokens); a text run of
// length L at current position c gets (c + i) on all three rows and advances c by L; an image run takes the
// next image's grid (t, h / merge, w / merge) and gets rows (c + t_index, c + h_index, c + w_index) in
// t-major order, then c advances by max(h, w) / merge. rope_delta = max position + 1 - n; decoding continues at
// n + rope_delta on all three rows. On a device (to_device) the whole tower runs there; encode() downloads the
// merger output.
#include <algorithm>

#include "core/error.h"
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/llava/vlm_common.h"
#include "models/vision/vision_encoder.h"

namespace vlm::families {

namespace {

class QwenVision final : public VisionModel {
 public:
  QwenVision(const ModelConfig& config, const Checkpoint& ckpt) : what_(config.path) {
    const Json& raw = config.raw;
    const Json& vision = config.vision();
    VLM_CHECK(vision.is_object(), ErrorKind::kFormat, "{}: vision_config is missing", what_);
    image_token_id_ = vlm_common::read_image_token_id(raw, what_);
    const std::string prefix = vlm_common::find_prefix(ckpt, {"model.visual.", "visual.", "vision_tower.", "model.vision_tower."},
                                                       "patch_embed.proj.weight", "Qwen2-VL vision tower");
    tower_ = std::make_unique<QwenVisionEncoder>(vision, config.model_type, ckpt, prefix, what_);
    merge_ = tower_->spatial_merge_size();
  }

  Tensor encode(const ProcessedImage& image) const override {
    const Tensor& px = image.pixels;
    VLM_CHECK(px.defined() && px.ndim() == 2 && px.dtype() == DType::kF32 &&
                  image.grid_t * image.grid_h * image.grid_w == px.dim(0),
              ErrorKind::kInvalidArgument, "{}: Qwen2-VL pixels must be f32 [grid_t*grid_h*grid_w = {}, patch], got {}{}",
              what_, image.grid_t * image.grid_h * image.grid_w, dtype_name(px.dtype()), shape_str(px.shape()));
    return tower_->forward(px, image.grid_t, image.grid_h, image.grid_w);  // on device(), as encode() promises
  }

  int32_t image_token_id() const override { return image_token_id_; }

  MultimodalPrompt build_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids,
                                const std::vector<ProcessedImage>& images,
                                const std::vector<Tensor>& features) const override {
    MultimodalPrompt p;
    const int64_t n = static_cast<int64_t>(ids.size());
    p.embeds = vlm_common::embed_and_scatter(lm, ids, image_token_id_, features, 1.0f, what_, &p.image_tokens);
    p.dims = 3;
    p.positions.assign(static_cast<size_t>(3 * n), 0);
    int64_t* rt = p.positions.data();
    int64_t* rh = rt + n;
    int64_t* rw = rh + n;
    int64_t cur = 0, max_pos = -1;
    size_t next_image = 0;
    for (int64_t i = 0; i < n;) {
      const bool is_image = ids[static_cast<size_t>(i)] == image_token_id_;
      int64_t j = i;
      while (j < n && (ids[static_cast<size_t>(j)] == image_token_id_) == is_image) ++j;
      if (!is_image) {
        for (int64_t k = i; k < j; ++k) rt[k] = rh[k] = rw[k] = cur + (k - i);
        cur += j - i;
        max_pos = std::max(max_pos, cur - 1);
      } else {
        VLM_CHECK(next_image < images.size(), ErrorKind::kInvalidArgument,
                  "{}: the prompt has more image-token runs than the {} images given", what_, images.size());
        const ProcessedImage& im = images[next_image++];
        const int64_t gt = im.grid_t, gh = im.grid_h / merge_, gw = im.grid_w / merge_;
        VLM_CHECK(gt * gh * gw == j - i, ErrorKind::kInvalidArgument,
                  "{}: image {} has grid {}x{}x{} (merge {}) = {} tokens but its run of image tokens has {}", what_,
                  next_image - 1, im.grid_t, im.grid_h, im.grid_w, merge_, gt * gh * gw, j - i);
        int64_t k = i;
        for (int64_t a = 0; a < gt; ++a) {
          for (int64_t b = 0; b < gh; ++b) {
            for (int64_t c = 0; c < gw; ++c, ++k) {
              rt[k] = cur + a;
              rh[k] = cur + b;
              rw[k] = cur + c;
              max_pos = std::max({max_pos, rt[k], rh[k], rw[k]});
            }
          }
        }
        cur += std::max(gh, gw);
      }
      i = j;
    }
    VLM_CHECK(next_image == images.size(), ErrorKind::kInvalidArgument,
              "{}: {} images given but the prompt has {} image-token runs", what_, images.size(), next_image);
    p.rope_delta = max_pos + 1 - n;
    return p;
  }

  size_t weight_bytes() const override { return tower_->weight_bytes(); }

  Device device() const override { return tower_->device(); }
  void to_device(Device device) override { tower_->to_device(device); }

 private:
  std::string what_;
  int32_t image_token_id_ = 0;
  int64_t merge_ = 2;
  std::unique_ptr<QwenVisionEncoder> tower_;
};

}  // namespace

void register_qwen2_vl() {
  vlm_common::register_vlm<QwenVision>({"qwen2_vl", "qwen2_5_vl"}, "qwen2",
                                       {{"qwen2_vl_text", "qwen2"}, {"qwen2_5_vl_text", "qwen2"}});
}

}  // namespace vlm::families
