// The vision half of a VLM, seen from generation: turn processed images into features in the language model's
// embedding space, and lay out the multimodal prompt (embeddings with image features scattered at the image-token
// positions, RoPE positions — 1-D or Qwen's M-RoPE — and which prompt positions attend bidirectionally).
//
// Families (src/models/<family>/: llava, idefics3, gemma3, paligemma, qwen2_vl) implement VisionModel and register
// it by model_type next to their language model (registry.h: register_vision_model). The language model of a VLM is
// an ordinary LanguageModel found under the VLM's text prefix (language_model.model.*, model.language_model.*,
// model.text_model.*, model.*), so everything text-only keeps working on VLM checkpoints.
//
// Devices: a vision model loads on the host; to_device(kCuda) moves its tower and projector weights to the GPU,
// after which encode() runs every op there (under its own DeviceScope) while the interface stays host-facing:
// encode() takes host pixels and returns host features, which build_prompt scatters into the host embeddings the
// language model uploads. Callers move it together with the language model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "image/processor.h"
#include "models/language_model.h"

namespace vlm {

// The prompt as the language model must see it.
struct MultimodalPrompt {
  // [n, hidden] f32: text embeddings (family scaling included) + image features, on the device the features
  // were computed on (the vision model's; generate() hands the rows to a language model there without a copy
  // through the host).
  Tensor embeds;
  std::vector<int64_t> positions;    // dims == 1: [n]; dims == 3: [3, n] (t, h, w rows, Qwen M-RoPE)
  int dims = 1;
  // Decode continues at position (prompt length + rope_delta) for every RoPE row (Qwen's rope_deltas; 0 else).
  int64_t rope_delta = 0;
  // Bidirectional groups: group[i] != 0 means position i attends to every position with the same id in both
  // directions (Gemma 3 image tokens of one image; PaliGemma's image + prefix); empty = purely causal.
  std::vector<int32_t> groups;
  int64_t image_tokens = 0;          // positions filled with image features
};

class VisionModel {
 public:
  virtual ~VisionModel() = default;
  // Features for one processed image, in prompt order: [image.image_tokens, lm_hidden] f32 on device(), where
  // they were computed (vision::to_host makes a host copy). Throws
  // Error(kInvalidArgument) when the image's layout does not match the tower (wrong tile size, ...).
  virtual Tensor encode(const ProcessedImage& image) const = 0;
  // The id of the token that carries image features (config image_token_id / image_token_index).
  virtual int32_t image_token_id() const = 0;
  // Builds the prompt: embeds `ids` with `lm`, then overwrites the rows of image tokens with `features`
  // (concatenated over images, in order; their row count must equal the number of image tokens in `ids`,
  // Error(kInvalidArgument) naming both counts otherwise), and fills positions / groups as the family's HF
  // forward does (get_rope_index for Qwen2-VL, token_type_ids for Gemma 3 / PaliGemma).
  virtual MultimodalPrompt build_prompt(const LanguageModel& lm, const std::vector<int32_t>& ids,
                                        const std::vector<ProcessedImage>& images,
                                        const std::vector<Tensor>& features) const = 0;
  virtual size_t weight_bytes() const = 0;
  // Where the weights live and encode() runs.
  virtual Device device() const { return Device::kCpu; }
  // Moves every tower and projector weight to `device` in its stored format (a no-op when already there).
  // Refuses an unusable device with the backend's reason before copying anything (Error(kUnsupported)), and
  // stays whole on its old device when a copy fails. Models that cannot run elsewhere keep this default, which
  // refuses any device but the CPU.
  virtual void to_device(Device device) {
    VLM_CHECK(device == Device::kCpu, ErrorKind::kUnsupported, "this vision model runs on the cpu only, not on {}",
              device_name(device));
  }
};

}  // namespace vlm
