// PaliGemma (1 and 2): the SigLIP tower's last_hidden_state and multi_modal_projector.linear (with bias). In
// transformers 5.17 the Gemma / Gemma 2 decoder (from text_config) scales inside its embedding module, and the
// image rows are the projector output as is: neither the old division of the features by sqrt(hidden_size)
// nor a normalizer applied to the whole inputs_embeds exists any more (the fixtures' inputs_embeds show text rows
// = embedding × sqrt(hidden), image rows = get_image_features). Positions are 1-based (PaliGemma's
// position_ids = cache_position + 1, in prefill and decode alike). The prompt — image tokens, BOS, prefix and
// "\n" — is one bidirectional block (prefix-LM: transformers ORs token_type_ids == 0 into the causal mask on the
// first forward); generated tokens are causal. On a device (to_device) the tower and the projector run there;
// encode() downloads once.
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

class PaliGemmaVision final : public vlm_common::TowerVisionModel {
 public:
  PaliGemmaVision(const ModelConfig& config, const Checkpoint& ckpt) : TowerVisionModel(config.path) {
    const Json& raw = config.raw;
    const Json& vision = config.vision();
    VLM_CHECK(vision.is_object(), ErrorKind::kFormat, "{}: vision_config is missing", what_);
    image_token_id_ = vlm_common::read_image_token_id(raw, what_);
    text_hidden_ = require_int(config.text(), "hidden_size", what_ + " text_config");
    const int64_t proj_dim = json_int(vision, "projection_dim", what_ + " vision_config").value_or(text_hidden_);
    VLM_CHECK(proj_dim == text_hidden_, ErrorKind::kFormat,
              "{}: vision_config.projection_dim {} differs from the text hidden_size {}", what_, proj_dim, text_hidden_);
    const std::string tower_prefix = vlm_common::find_prefix(
        ckpt, {"model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower.vision_model.", "vision_tower."},
        "embeddings.patch_embedding.weight", "PaliGemma vision tower");
    tower_ = std::make_unique<ViTEncoder>(vision, ckpt, tower_prefix, -1, what_);
    const std::string proj_prefix = vlm_common::find_prefix(ckpt, {"model.multi_modal_projector.", "multi_modal_projector."},
                                                            "linear.weight", "PaliGemma multi_modal_projector");
    vlm_common::WeightReader r(ckpt, config.quantization, proj_prefix, what_);
    linear_ = r.linear("linear", text_hidden_, tower_->hidden_size());
    bias_ = r.vector("linear.bias", text_hidden_);
    r.check_all_used();
    projector_bytes_ = r.bytes();
  }

  Tensor encode(const ProcessedImage& image) const override {
    vlm_common::check_tiles(image, what_);
    const Tensor& px = image.pixels;
    const int64_t tiles = px.dim(0), h = px.dim(2), w = px.dim(3);
    ops::DeviceScope scope(device_);
    Tensor all;  // [tiles * n_patches, text_hidden] on device_
    for (int64_t t = 0; t < tiles; ++t) {
      Tensor hs = tower_->forward(px.data<float>() + t * 3 * h * w, h, w, -1, true);  // [n_patches, dv]
      const int64_t rows = hs.dim(0);  // every tile has the same size
      if (!all.defined()) all = vision::scratch(tiles * rows, text_hidden_, device_);
      ops::linear(hs.data<float>(), rows, linear_, bias_, all.data<float>() + t * rows * text_hidden_);
    }
    return all.defined() ? all : Tensor::empty({0, text_hidden_}, DType::kF32);
  }

  MultimodalPrompt build_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids,
                                const std::vector<ProcessedImage>& /*images*/,
                                const std::vector<Tensor>& features) const override {
    MultimodalPrompt p;
    const int64_t n = static_cast<int64_t>(ids.size());
    p.embeds = vlm_common::embed_and_scatter(lm, ids, image_token_id_, features, 1.0f, what_, &p.image_tokens);
    p.positions = vlm_common::positions_1d(n, 1);
    p.rope_delta = 1;
    // Without a suffix every prompt token has token_type_ids 0 (transformers' BC path for a prompt without
    // token_type_ids is the same): one bidirectional block. A single token needs no group.
    if (n > 1) p.groups.assign(static_cast<size_t>(n), 1);
    return p;
  }

 private:
  void collect_projector(vision::DeviceMove& move) override {
    move.add(linear_);
    move.add(bias_);
  }

  ops::Weight linear_;
  Tensor bias_;
};

}  // namespace

void register_paligemma() { vlm_common::register_vlm<PaliGemmaVision>({"paligemma"}, "gemma"); }

}  // namespace vlm::families
