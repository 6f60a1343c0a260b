// Idefics3 / SmolVLM: each tile (the splits row by row, then the global image) goes through the SigLIP-style
// tower (last_hidden_state, post_layernorm applied; patches without real pixels in pixel_attention_mask are
// computed but masked out as attention keys, as in transformers), then the
// connector: pixel shuffle by scale_factor (s × s neighbouring patches folded into the feature axis, HF's
// view/permute sequence) and connector.modality_projection.proj (no bias). The language model is the decoder of
// text_config (llama). Prompt: image-token rows replaced, causal, 1-D positions. On a device (to_device) the
// tower, the pixel shuffle (strided device copies) and the projection run there; encode() downloads once.
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

// x: [seq, d] with seq = side², side divisible by s → [seq / s², d s²] (transformers' Idefics3 pixel_shuffle):
// out[i' * side/s + j'][c] = x[(i' s + c / (d s)) * side + j' s + (c % (d s)) / d][c % d].
// On x's device (the current one): for a fixed output row block i' and source row a = c / (d s), the s source
// patches j' s .. j' s + s - 1 of grid row i' s + a are s·d contiguous floats that land contiguously at column
// a·d·s of output row i' side/s + j' — one strided copy over j' per (i', a), `side` copies in all.
Tensor pixel_shuffle(const Tensor& x, int64_t s, const std::string& what) {
  const int64_t seq = x.dim(0), d = x.dim(1);
  const int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(seq))));
  VLM_CHECK(side * side == seq && side % s == 0, ErrorKind::kInvalidArgument,
            "{}: pixel shuffle needs a square patch grid divisible by scale_factor {}, got {} patches", what, s, seq);
  const int64_t side_s = side / s, out_d = d * s * s;
  Tensor out = vision::scratch(seq / (s * s), out_d, x.device());
  const float* in = x.data<float>();
  float* o = out.data<float>();
  const size_t block = static_cast<size_t>(s * d) * sizeof(float);
  for (int64_t i2 = 0; i2 < side_s; ++i2) {
    for (int64_t a = 0; a < s; ++a) {
      ops::copy_2d(o + i2 * side_s * out_d + a * s * d, static_cast<size_t>(out_d) * sizeof(float),
                   in + (i2 * s + a) * side * d, block, block, static_cast<size_t>(side_s));
    }
  }
  return out;
}

class Idefics3Vision final : public vlm_common::TowerVisionModel {
 public:
  Idefics3Vision(const ModelConfig& config, const Checkpoint& ckpt) : TowerVisionModel(config.path) {
    const Json& raw = config.raw;
    const Json& vision = config.vision();
    VLM_CHECK(vision.is_object(), ErrorKind::kFormat, "{}: vision_config is missing", what_);
    image_token_id_ = vlm_common::read_image_token_id(raw, what_);
    scale_ = json_int(raw, "scale_factor", what_).value_or(2);
    VLM_CHECK(scale_ > 0, ErrorKind::kFormat, "{}: scale_factor must be positive, got {}", what_, scale_);
    const std::string tower_prefix = vlm_common::find_prefix(
        ckpt, {"model.vision_model.", "vision_model.", "model.vision_tower.", "vision_tower."},
        "embeddings.patch_embedding.weight", "Idefics3 vision model");
    tower_ = std::make_unique<ViTEncoder>(vision, ckpt, tower_prefix, -1, what_);
    text_hidden_ = require_int(config.text(), "hidden_size", what_ + " text_config");
    const std::string conn = vlm_common::find_prefix(ckpt, {"model.connector.", "connector."},
                                                     "modality_projection.proj.weight", "Idefics3 connector");
    vlm_common::WeightReader r(ckpt, config.quantization, conn, what_);
    proj_ = r.linear("modality_projection.proj", text_hidden_, tower_->hidden_size() * scale_ * scale_);
    r.check_all_used();
    projector_bytes_ = r.bytes();
  }

  Tensor encode(const ProcessedImage& image) const override {
    vlm_common::check_tiles(image, what_);
    const Tensor& px = image.pixels;
    const int64_t tiles = px.dim(0), h = px.dim(2), w = px.dim(3), p = tower_->patch_size();
    const Tensor& pm = image.pixel_mask;
    if (pm.defined()) {
      VLM_CHECK(pm.dtype() == DType::kU8 && pm.shape() == (Shape{tiles, h, w}), ErrorKind::kInvalidArgument,
                "{}: pixel_mask must be u8 [{}, {}, {}], got {}{}", what_, tiles, h, w, dtype_name(pm.dtype()),
                shape_str(pm.shape()));
    }
    ops::DeviceScope scope(device_);
    Tensor all;  // [tiles * rows per tile, text_hidden] on device_
    int64_t rows = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      // HF: a patch is attended iff any of its pixels is real (pixel_attention_mask summed over the patch).
      std::vector<uint8_t> patch_mask;
      bool partial = false;
      if (pm.defined()) {
        const uint8_t* m = pm.data<uint8_t>() + t * h * w;
        patch_mask.assign(static_cast<size_t>((h / p) * (w / p)), 0);
        for (int64_t y = 0; y < (h / p) * p; ++y) {
          for (int64_t x = 0; x < (w / p) * p; ++x) {
            if (m[y * w + x]) patch_mask[static_cast<size_t>((y / p) * (w / p) + x / p)] = 1;
          }
        }
        for (uint8_t v : patch_mask) partial |= v == 0;
      }
      Tensor hs = tower_->forward(px.data<float>() + t * 3 * h * w, h, w, -1, true,
                                  partial ? patch_mask.data() : nullptr);  // [n_patches, dv]
      Tensor shuffled = pixel_shuffle(hs, scale_, what_);                    // [n / s², dv s²]
      rows = shuffled.dim(0);  // every tile has the same size
      if (!all.defined()) all = vision::scratch(tiles * rows, text_hidden_, device_);
      ops::linear(shuffled.data<float>(), rows, proj_, Tensor(), all.data<float>() + t * rows * text_hidden_);
    }
    return all.defined() ? all : Tensor::empty({0, text_hidden_}, DType::kF32);
  }

  MultimodalPrompt build_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids,
                                const std::vector<ProcessedImage>& /*images*/,
                                const std::vector<Tensor>& features) const override {
    return vlm_common::causal_prompt(lm, ids, image_token_id_, features, what_);
  }

 private:
  void collect_projector(vision::DeviceMove& move) override { move.add(proj_); }

  int64_t scale_ = 2;
  ops::Weight proj_;
};

}  // namespace

void register_idefics3() { vlm_common::register_vlm<Idefics3Vision>({"idefics3"}, "llama"); }

}  // namespace vlm::families
