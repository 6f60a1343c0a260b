// LLaVA (1.5 and the llava model_type in general): a CLIP (or SigLIP) tower read at
// vision_feature_layer — one HF hidden_states index, or a list whose selections are concatenated along the
// feature axis — with the class token dropped under vision_feature_select_strategy "default" (kept for
// "full"), then multi_modal_projector linear_1 → projector_hidden_act → linear_2. The language model is the
// decoder of text_config.model_type (llama, mistral, qwen2, ...). The prompt is the ids' embeddings with the
// image-token rows replaced, causal, 1-D positions. On a device (to_device) the tower, the layer concatenation and
// the projector all run there; encode() downloads the features once per tile.
#include <algorithm>

#include "core/error.h"
#include "models/families.h"
#include "models/layers/decoder.h"
#include "models/llava/vlm_common.h"
#include "models/vision/vision_device.h"
#include "models/vision/vision_encoder.h"

namespace vlm::families {

namespace {

class LlavaVision final : public vlm_common::TowerVisionModel {
 public:
  LlavaVision(const ModelConfig& config, const Checkpoint& ckpt) : TowerVisionModel(config.path) {
    const Json& raw = config.raw;
    const Json& vision = config.vision();
    VLM_CHECK(vision.is_object(), ErrorKind::kFormat, "{}: vision_config is missing", what_);
    image_token_id_ = vlm_common::read_image_token_id(raw, what_);
    const int64_t n_layers = require_int(vision, "num_hidden_layers", what_ + " vision_config");
    // vision_feature_layer: int (default -2) or list of ints; HF hidden_states has n_layers + 1 entries.
    const Json* fl = json_find(raw, "vision_feature_layer");
    if (!fl || fl->is_null()) {
      layers_.push_back(-2);
    } else if (fl->is_number_integer()) {
      layers_.push_back(fl->get<int>());
    } else {
      VLM_CHECK(fl->is_array() && !fl->empty(), ErrorKind::kFormat,
                "{}: vision_feature_layer must be an integer or a non-empty list of integers", what_);
      for (const Json& v : *fl) {
        VLM_CHECK(v.is_number_integer(), ErrorKind::kFormat, "{}: vision_feature_layer entries must be integers",
                  what_);
        layers_.push_back(v.get<int>());
      }
    }
    int needed = 0;
    for (int l : layers_) {
      const int64_t idx = l < 0 ? n_layers + 1 + l : l;
      VLM_CHECK(idx >= 0 && idx <= n_layers, ErrorKind::kFormat,
                "{}: vision_feature_layer {} is outside the tower's hidden states [0, {}]", what_, l, n_layers);
      needed = std::max(needed, static_cast<int>(idx));
    }
    const std::string strategy = json_string(raw, "vision_feature_select_strategy", what_).value_or("default");
    VLM_CHECK(strategy == "default" || strategy == "full", ErrorKind::kUnsupported,
              "{}: vision_feature_select_strategy '{}' is not supported (default, full)", what_, strategy);
    drop_class_token_ = strategy == "default";

    const std::string tower_prefix = vlm_common::find_prefix(
        ckpt, {"model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower.vision_model.", "vision_tower."},
        "embeddings.patch_embedding.weight", "LLaVA vision tower");
    tower_ = std::make_unique<ViTEncoder>(vision, ckpt, tower_prefix, needed, what_);

    const int64_t dv = tower_->hidden_size() * static_cast<int64_t>(layers_.size());
    const int64_t dt = require_int(config.text(), "hidden_size", what_ + " text_config");
    const std::string proj_prefix = vlm_common::find_prefix(ckpt, {"model.multi_modal_projector.", "multi_modal_projector."},
                                                            "linear_1.weight", "LLaVA multi_modal_projector");
    vlm_common::WeightReader r(ckpt, config.quantization, proj_prefix, what_);
    const bool bias = json_bool(raw, "multimodal_projector_bias", what_).value_or(true);
    linear_1_ = r.linear("linear_1", dt, dv);
    linear_2_ = r.linear("linear_2", dt, dt);
    if (bias) {
      bias_1_ = r.vector("linear_1.bias", dt);
      bias_2_ = r.vector("linear_2.bias", dt);
    }
    r.check_all_used();
    act_ = parse_activation(json_string(raw, "projector_hidden_act", what_).value_or("gelu"),
                            what_ + " projector_hidden_act");
    projector_bytes_ = r.bytes();
    text_hidden_ = dt;
  }

  Tensor encode(const ProcessedImage& image) const override {
    vlm_common::check_tiles(image, what_);
    const Tensor& px = image.pixels;
    const int64_t tiles = px.dim(0), h = px.dim(2), w = px.dim(3), dv = tower_->hidden_size();
    const int64_t k = static_cast<int64_t>(layers_.size());
    ops::DeviceScope scope(device_);
    std::vector<Tensor> per_tile;
    for (int64_t t = 0; t < tiles; ++t) {
      const float* tile = px.data<float>() + t * 3 * h * w;
      // Every selected layer from one pass, [n_tok, dv] each on device_.
      std::vector<Tensor> hs = tower_->forward_layers(tile, h, w, layers_);
      const int64_t skip = drop_class_token_ ? 1 : 0, n_sel = hs.front().dim(0) - skip;
      // [n_sel, dv * k]: the selected layers side by side (torch.cat(hs_pool, dim=-1)), class token dropped.
      Tensor cat = vision::scratch(n_sel, dv * k, device_);
      const size_t row = static_cast<size_t>(dv) * sizeof(float);
      for (int64_t j = 0; j < k; ++j) {
        ops::copy_2d(cat.data<float>() + j * dv, row * static_cast<size_t>(k),
                     hs[static_cast<size_t>(j)].data<float>() + skip * dv, row, row, static_cast<size_t>(n_sel));
      }
      Tensor mid = vision::scratch(n_sel, text_hidden_, device_);
      Tensor out = vision::scratch(n_sel, text_hidden_, device_);
      ops::linear(cat.data<float>(), n_sel, linear_1_, bias_1_, mid.data<float>());
      ops::activate(mid.data<float>(), n_sel * text_hidden_, act_);
      ops::linear(mid.data<float>(), n_sel, linear_2_, bias_2_, out.data<float>());
      per_tile.push_back(std::move(out));
    }
    return vlm_common::concat_rows(per_tile, text_hidden_);
  }

  MultimodalPrompt build_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids,
                                const std::vector<ProcessedImage>& /*images*/,
                                const std::vector<Tensor>& features) const override {
    return vlm_common::causal_prompt(lm, ids, image_token_id_, features, what_);
  }

 private:
  void collect_projector(vision::DeviceMove& move) override {
    for (ops::Weight* w : {&linear_1_, &linear_2_}) move.add(*w);
    for (Tensor* b : {&bias_1_, &bias_2_}) move.add(*b);
  }

  std::vector<int> layers_;
  bool drop_class_token_ = true;
  ops::Weight linear_1_, linear_2_;
  Tensor bias_1_, bias_2_;
  ops::Activation act_ = ops::Activation::kGeluErf;
};

}  // namespace

void register_llava() { vlm_common::register_vlm<LlavaVision>({"llava"}, "llama"); }

}  // namespace vlm::families
