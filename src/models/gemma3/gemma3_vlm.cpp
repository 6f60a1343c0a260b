// Gemma 3 (model_type gemma3): the SigLIP tower's last_hidden_state per image (and per pan-and-scan crop),
// average-pooled from (image_size / patch_size)² patches to mm_tokens_per_image tokens, mm_soft_emb_norm
// (Gemma's (1 + w) RMSNorm, vision layer_norm_eps) and mm_input_projection_weight — a raw [vision_hidden,
// text_hidden] matrix multiplied from the right, not a Linear. The language model is the gemma3_text decoder of
// text_config. Prompt: text rows are the scaled embeddings (Gemma 3 scales inside its embedding), image rows the
// features unscaled; every run of image tokens attends bidirectionally within itself (transformers'
// image_group_ids from token_type_ids, OR-ed into the causal and the sliding masks). On a device (to_device) the
// tower, the pooling (strided device copies and adds), the norm and the projection run there; encode() downloads
// once.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/llava/vlm_common.h"
#include "models/vision/vision_device.h"
#include "models/vision/vision_encoder.h"

namespace vlm::families {

namespace {

class Gemma3Vision final : public vlm_common::TowerVisionModel {
 public:
  Gemma3Vision(const ModelConfig& config, const Checkpoint& ckpt) : TowerVisionModel(config.path) {
    const Json& raw = config.raw;
    const Json& vision = config.vision();
    VLM_CHECK(vision.is_object(), ErrorKind::kFormat, "{}: vision_config is missing", what_);
    image_token_id_ = vlm_common::read_image_token_id(raw, what_);
    const std::string vwhat = what_ + " vision_config";
    const int64_t image_size = require_int(vision, "image_size", vwhat);
    const int64_t patch = require_int(vision, "patch_size", vwhat);
    eps_ = static_cast<float>(json_number(vision, "layer_norm_eps", vwhat).value_or(1e-6));
    patches_per_side_ = image_size / patch;
    const int64_t tokens = json_int(raw, "mm_tokens_per_image", what_).value_or(256);
    tokens_per_side_ = static_cast<int64_t>(std::sqrt(static_cast<double>(tokens)));
    VLM_CHECK(tokens_per_side_ > 0 && tokens_per_side_ * tokens_per_side_ == tokens &&
                  patches_per_side_ % tokens_per_side_ == 0,
              ErrorKind::kFormat,
              "{}: mm_tokens_per_image {} must be a square whose side divides image_size / patch_size = {}", what_,
              tokens, patches_per_side_);
    const std::string tower_prefix = vlm_common::find_prefix(
        ckpt, {"model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower.vision_model.", "vision_tower."},
        "embeddings.patch_embedding.weight", "Gemma 3 vision tower");
    tower_ = std::make_unique<ViTEncoder>(vision, ckpt, tower_prefix, -1, what_);
    const int64_t dv = tower_->hidden_size();
    text_hidden_ = require_int(config.text(), "hidden_size", what_ + " text_config");
    const std::string proj_prefix = vlm_common::find_prefix(ckpt, {"model.multi_modal_projector.", "multi_modal_projector."},
                                                            "mm_input_projection_weight", "Gemma 3 multi_modal_projector");
    vlm_common::WeightReader r(ckpt, config.quantization, proj_prefix, what_);
    norm_ = r.vector("mm_soft_emb_norm.weight", dv);
    // torch.matmul(x, W) with W [dv, dt] is a Linear with weight Wᵀ [dt, dv]: transposed once here.
    Tensor w = r.matrix_f32("mm_input_projection_weight", dv, text_hidden_);
    Tensor wt = Tensor::empty({text_hidden_, dv}, DType::kF32, MemCategory::kWeights);
    for (int64_t i = 0; i < dv; ++i) {
      for (int64_t j = 0; j < text_hidden_; ++j) wt.data<float>()[j * dv + i] = w.data<float>()[i * text_hidden_ + j];
    }
    proj_.dense = wt;
    r.check_all_used();
    projector_bytes_ = r.bytes();
  }

  Tensor encode(const ProcessedImage& image) const override {
    vlm_common::check_tiles(image, what_);
    const Tensor& px = image.pixels;
    const int64_t tiles = px.dim(0), h = px.dim(2), w = px.dim(3), dv = tower_->hidden_size();
    const int64_t P = patches_per_side_, T = tokens_per_side_, k = P / T;
    const int64_t per_tile = T * T;
    ops::DeviceScope scope(device_);
    Tensor out = vision::scratch(tiles * per_tile, text_hidden_, device_);
    Tensor cols = vision::scratch(P * T, dv, device_);   // row sums over k patches: [P rows, T columns]
    Tensor pooled = vision::scratch(per_tile, dv, device_);
    Tensor part = vision::scratch(P * T, dv, device_);   // one strided gather at a time
    const size_t row = static_cast<size_t>(dv) * sizeof(float);
    for (int64_t t = 0; t < tiles; ++t) {
      Tensor hs = tower_->forward(px.data<float>() + t * 3 * h * w, h, w, -1, true);  // [P*P, dv]
      VLM_CHECK(hs.dim(0) == P * P, ErrorKind::kInvalidArgument,
                "{}: the tower gave {} patches for a {}x{} tile, the projector pools {}x{}", what_, hs.dim(0), h, w, P,
                P);
      // AvgPool2d(k, k) over the [P, P] patch grid (row-major patches), per channel, separably. Along x: patch
      // (y, tx k + xo) is row (y T + tx) k + xo, so offset xo is one gather of stride k rows over all (y, tx).
      for (int64_t xo = 0; xo < k; ++xo) {
        float* dst = xo == 0 ? cols.data<float>() : part.data<float>();
        ops::copy_2d(dst, row, hs.data<float>() + xo * dv, row * static_cast<size_t>(k), row,
                     static_cast<size_t>(P * T));
        if (xo > 0) ops::add(cols.data<float>(), part.data<float>(), P * T * dv);
      }
      // Along y: cols row (ty k + yo) T + tx; for one yo, each ty is a block of T contiguous rows.
      for (int64_t yo = 0; yo < k; ++yo) {
        float* dst = yo == 0 ? pooled.data<float>() : part.data<float>();
        ops::copy_2d(dst, row * static_cast<size_t>(T), cols.data<float>() + yo * T * dv,
                     row * static_cast<size_t>(k * T), row * static_cast<size_t>(T), static_cast<size_t>(T));
        if (yo > 0) ops::add(pooled.data<float>(), part.data<float>(), per_tile * dv);
      }
      ops::scale(pooled.data<float>(), 1.0f / static_cast<float>(k * k), per_tile * dv);
      ops::rms_norm(pooled.data<float>(), per_tile, dv, norm_, eps_, 1.0f, pooled.data<float>());
      ops::linear(pooled.data<float>(), per_tile, proj_, Tensor(), out.data<float>() + t * per_tile * text_hidden_);
    }
    return out;  // on device_
  }

  MultimodalPrompt build_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids,
                                const std::vector<ProcessedImage>& /*images*/,
                                const std::vector<Tensor>& features) const override {
    MultimodalPrompt p;
    const int64_t n = static_cast<int64_t>(ids.size());
    p.embeds = vlm_common::embed_and_scatter(lm, ids, image_token_id_, features, 1.0f, what_, &p.image_tokens);
    p.positions = vlm_common::positions_1d(n, 0);
    if (p.image_tokens > 0) {
      const int32_t img = image_token_id_;
      p.groups = vlm_common::run_groups(n, [&](int64_t i) { return ids[static_cast<size_t>(i)] == img; });
    }
    return p;
  }

 private:
  void collect_projector(vision::DeviceMove& move) override {
    move.add(norm_);
    move.add(proj_);
  }

  int64_t patches_per_side_ = 0, tokens_per_side_ = 0;
  float eps_ = 1e-6f;
  Tensor norm_;
  ops::Weight proj_;
};

}  // namespace

void register_gemma3_vlm() { vlm_common::register_vlm<Gemma3Vision>({"gemma3"}, "gemma3_text"); }

}  // namespace vlm::families
