// What the VLM families (llava, idefics3, gemma3, paligemma, qwen2_vl) share on the model side: the language
// model of a VLM built by its text config's model_type, connector weights resolved under the checkpoint's own
// prefix (transformers 5 `model.multi_modal_projector.*`, Hub / mlx-community `multi_modal_projector.*`) dense or
// MLX-quantized, and the prompt assembly every family's HF forward does (embed the ids, overwrite the image-token
// rows with the image features, 1-D positions, bidirectional groups from runs of tokens), plus the VisionModel
// plumbing of the ViT-tower families (TowerVisionModel) and one way to register a VLM family (register_vlm).
// Lives in the LLaVA folder because LLaVA is the plainest instance; the other families include it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "models/registry.h"
#include "models/vision/vision_device.h"
#include "models/vision/vision_encoder.h"
#include "models/vision_model.h"

namespace vlm::vlm_common {

// The text decoder of a VLM: the family registered for text_config.model_type (`default_text_type` when the
// config has none, as transformers' VLM configs default it), built from the same ModelConfig (whose text()
// is that text config). `aliases` maps VLM-specific text types to the decoder that implements them
// (e.g. "qwen2_vl_text" -> "qwen2").
std::unique_ptr<LanguageModel> make_text_model(const ModelConfig& config, const Checkpoint& checkpoint,
                                               const LoadOptions& options, const std::string& default_text_type,
                                               const std::vector<std::pair<std::string, std::string>>& aliases = {});

// Connector weights under one prefix. Every tensor taken is remembered so that check_all_used() can name
// the ones under the prefix that nothing read (a checkpoint of another variant, a renamed module).
class WeightReader {
 public:
  WeightReader(const Checkpoint& checkpoint, const QuantizationConfig& quantization, std::string prefix,
               std::string what);
  // "<prefix><module>.weight" [out, in]: dense (f32/f16/bf16) or MLX affine (u32 + scales + biases, decided
  // by the presence of .scales). With `bias`, "<prefix><module>.bias" [out] is required too.
  ops::Weight linear(const std::string& module, int64_t out, int64_t in);
  Tensor vector(const std::string& name, int64_t n);              // float [n] as stored
  Tensor matrix_f32(const std::string& name, int64_t rows, int64_t cols);  // float [rows, cols] → f32 copy
  bool has(const std::string& name) const;
  // Throws Error(kFormat) naming every tensor under the prefix that was not read.
  void check_all_used() const;
  const std::string& prefix() const { return prefix_; }
  size_t bytes() const { return bytes_; }

 private:
  const TensorInfo& require(const std::string& full, const std::string& expect) const;
  const Checkpoint& checkpoint_;
  const QuantizationConfig& quantization_;
  std::string prefix_, what_;
  std::set<std::string> used_;
  size_t bytes_ = 0;
};

// The first candidate prefix under which `<prefix><probe>` exists; Error(kNotFound) listing what was tried.
std::string find_prefix(const Checkpoint& checkpoint, const std::vector<std::string>& candidates,
                        const std::string& probe, const std::string& what);

// The config's image token id: image_token_id, else image_token_index (older LLaVA / PaliGemma / Gemma 3).
int32_t read_image_token_id(const Json& config, const std::string& what);

// [ids.size(), hidden] f32: the embeddings of the text tokens of `ids` and, at the positions holding
// `image_token_id`, the rows of `features` (concatenated, in order), each multiplied by `feature_scale`. Built on
// the features' device (all must share one; the host without features): text rows are embedded on the host and
// uploaded, feature rows copied in place, so a prompt whose tower ran on a GPU never crosses to the host.
// Error(kInvalidArgument) naming both counts when rows and image tokens differ.
Tensor embed_and_scatter(const LanguageModel& lm, const std::vector<int32_t>& ids, int32_t image_token_id,
                         const std::vector<Tensor>& features, float feature_scale, const std::string& what,
                         int64_t* image_tokens);

// The plain causal prompt (LLaVA, Idefics3): features scattered at the image token, positions 0 .. n - 1, no groups.
MultimodalPrompt causal_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids, int32_t image_token_id,
                               const std::vector<Tensor>& features, const std::string& what);

// 1-D positions offset .. offset + n - 1.
std::vector<int64_t> positions_1d(int64_t n, int64_t offset);

// Bidirectional groups: every maximal run of positions where `in_group(i)` holds gets its own id (1, 2, ...),
// other positions 0 (transformers' image_group_ids from token_type_ids, shifted so that 0 means none).
std::vector<int32_t> run_groups(int64_t n, const std::function<bool(int64_t)>& in_group);

// Features of an image tile-by-tile: `pixels` [n_tiles, 3, h, w] f32 (Error(kInvalidArgument) otherwise).
void check_tiles(const ProcessedImage& image, const std::string& what);

// Per-tile feature blocks [n_i, cols] f32 stacked in order into one [sum n_i, cols] on the first block's device
// (the single block itself when there is one).
Tensor concat_rows(const std::vector<Tensor>& parts, int64_t cols);

// The ViT-tower families (LLaVA, Idefics3, Gemma 3, PaliGemma): a ViTEncoder and the family's projector. Their
// shared VisionModel plumbing: a family's constructor fills the protected fields (what_ is set from here), lists its
// projector weights in collect_projector() and implements encode() and build_prompt(); to_device() moves the tower
// and the projector together, weight_bytes() counts both.
class TowerVisionModel : public VisionModel {
 public:
  int32_t image_token_id() const override { return image_token_id_; }
  size_t weight_bytes() const override { return tower_->weight_bytes() + projector_bytes_; }
  Device device() const override { return device_; }
  void to_device(Device device) override;

 protected:
  explicit TowerVisionModel(std::string what) : what_(std::move(what)) {}
  // Adds every projector weight and tensor (undefined ones included: they stay undefined) to `move`.
  virtual void collect_projector(vision::DeviceMove& move) = 0;

  std::string what_;  // the model folder, for messages
  Device device_ = Device::kCpu;
  int32_t image_token_id_ = 0;
  int64_t text_hidden_ = 0;
  std::unique_ptr<ViTEncoder> tower_;
  size_t projector_bytes_ = 0;  // the projector's checkpoint bytes (WeightReader::bytes)
};

// Registers a VLM family under `model_types`: its language model (make_text_model with `default_text_type` and
// `aliases`) and its vision model, built as Vision(config, checkpoint).
template <typename Vision>
void register_vlm(const std::vector<std::string>& model_types, const std::string& default_text_type,
                  const std::vector<std::pair<std::string, std::string>>& aliases = {}) {
  register_language_model(model_types, [default_text_type, aliases](const ModelConfig& config,
                                                                     const Checkpoint& checkpoint,
                                                                     const LoadOptions& options) {
    return make_text_model(config, checkpoint, options, default_text_type, aliases);
  });
  register_vision_model(model_types, [](const ModelConfig& config, const Checkpoint& checkpoint, const LoadOptions&) {
    return std::make_unique<Vision>(config, checkpoint);
  });
}

}  // namespace vlm::vlm_common
