// Vision towers shared by the VLM families, written against HF's module names so activations can be
// diffed against transformers:
//   ViTEncoder      — CLIP ViT (class embedding, pre_layrnorm, quick_gelu/gelu, post_layernorm) and SigLIP
//                     (no class token, gelu_pytorch_tanh, post_layernorm; Idefics3's variable-size patch grid
//                     with its bucketed position ids), selected by the vision config's model_type / fields.
//   QwenVisionEncoder — the Qwen2-VL ViT (Conv3d patch embed as one matmul, 2-D RoPE, LayerNorm + QuickGELU MLP,
//                     PatchMerger) and Qwen2.5-VL (RMSNorm + SwiGLU, window attention except fullatt_block_indexes,
//                     window reordering undone after the merger).
// Weights are found under the checkpoint's own prefix — transformers 5 drops the `vision_model.` level of CLIP and
// SigLIP towers that Hub checkpoints have; mlx-community conversions rename Qwen's `visual.*` to
// `vision_tower.*` and store convolutions channels-last ([O, kH, kW, I] / [O, T, kH, kW, I]) — and every
// missing, mis-shaped or unused tensor is named in one error. Vision weights are dense (f32/f16/bf16): MLX never
// quantizes vision towers; a quantized one is Error(kUnsupported).
//
// Devices: a tower loads on the host; to_device (or collect, for a move together with a projector) puts every
// weight on the device, and forward() then runs every op there. Inputs stay host arrays (pixels, patches, masks);
// outputs are tensors on the tower's device(), which the families' projectors continue from.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "io/safetensors.h"

namespace vlm {

namespace vision {
class DeviceMove;
}

// Where a tower lives: the candidate prefixes are tried in order; the first under which the tower's
// embeddings tensor exists wins (e.g. {"vision_tower.vision_model.", "vision_tower.", "model.vision_tower."}).
std::string detect_prefix(const Checkpoint& checkpoint, const std::vector<std::string>& candidates,
                          const std::string& probe_suffix, const std::string& what);

// Idefics3 / SmolVLM position ids for a grid_h x grid_w patch grid (`patch_mask` [grid_h, grid_w] u8, null = all
// real): transformers' Idefics3VisionEmbeddings bucketing — real patch (r, c) gets
// bucket(r, nb_h) * N + bucket(c, nb_w), bucket(i, nb) = min(N - 1, floor(i * N / nb)), with nb_h / nb_w the real
// patches down the first column / along the first row and N = `patches_per_side` (image_size / patch_size);
// padded patches get 0. [grid_h * grid_w] row-major.
std::vector<int32_t> bucketed_position_ids(const uint8_t* patch_mask, int64_t grid_h, int64_t grid_w,
                                           int64_t patches_per_side);

class ViTEncoder {
 public:
  // `vision_config`: the config.json "vision_config" object (hidden_size, intermediate_size, num_hidden_layers,
  // num_attention_heads, patch_size, image_size, layer_norm_eps, hidden_act, model_type "clip_vision_model" /
  // "siglip_vision_model" / "idefics3_vision"...). `prefix` is the tower's checkpoint prefix (ends with ".").
  // `layers_needed`: how many encoder layers to run and load (CLIP feature-layer selection never needs the
  // layers after the selected one; -1 = all).
  ViTEncoder(const Json& vision_config, const Checkpoint& checkpoint, const std::string& prefix, int layers_needed,
             const std::string& what);
  ~ViTEncoder();

  // pixels: [3, h, w] f32 (one tile). `patch_mask` (optional, Idefics3): [h/patch, w/patch] u8, 1 = patch has
  // real pixels; as in transformers, every patch is still computed and returned, padded
  // ones keep position id 0 and are masked out as attention keys; positions of real patches follow HF's
  // bucketing (bucketed_position_ids). Returns the hidden states after
  // encoder layer `layer` (HF hidden_states index: 0 = embeddings, L = last layer; negative counts from the end
  // as HF does), [n_tokens, hidden] f32 on device() (n_tokens includes CLIP's class token at row 0); when
  // `apply_post_layernorm` the post_layernorm is applied (SigLIP last_hidden_state).
  Tensor forward(const float* pixels, int64_t h, int64_t w, int layer, bool apply_post_layernorm,
                 const uint8_t* patch_mask = nullptr) const;
  // Several hidden_states indices from one pass (LLaVA's list-valued vision_feature_layer), one [n_tokens, hidden]
  // f32 tensor per entry of `layers`, in the order given; same index rules as forward(), no post_layernorm.
  std::vector<Tensor> forward_layers(const float* pixels, int64_t h, int64_t w, const std::vector<int>& layers,
                                     const uint8_t* patch_mask = nullptr) const;

  int64_t hidden_size() const;
  int64_t patch_size() const;
  int64_t num_layers() const;
  size_t weight_bytes() const;

  // Where the weights live and forward() runs (kCpu after loading).
  Device device() const;
  // Adds every weight and the tower's device to `move` (a family moves its tower and projector as one).
  void collect(vision::DeviceMove& move);
  // Moves the tower alone: refuses an unusable device before copying, stays whole on failure (DeviceMove).
  void to_device(Device device);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class QwenVisionEncoder {
 public:
  // `vision_config`: Qwen2-VL / Qwen2.5-VL vision_config (depth, embed_dim or hidden_size, num_heads, patch_size,
  // temporal_patch_size, spatial_merge_size, in_chans, mlp_ratio or intermediate_size, hidden_act,
  // window_size, fullatt_block_indexes, out_hidden_size / hidden_size of the LM). `model_type` of the VLM
  // ("qwen2_vl" | "qwen2_5_vl") picks the block flavour.
  QwenVisionEncoder(const Json& vision_config, const std::string& model_type, const Checkpoint& checkpoint,
                    const std::string& prefix, const std::string& what);
  ~QwenVisionEncoder();

  // patches: [grid_t*grid_h*grid_w, 3*T*P*P] f32 in the processor's order (host, or already on device()). Returns
  // the merger output, [grid_t*grid_h*grid_w / merge², lm_hidden] f32 on device(), in the processor's (prompt)
  // order. `last_hidden` (optional) receives the last block's output before the merger, [grid_t*grid_h*grid_w,
  // embed_dim] f32 on device(), in transformers' row order (Qwen2.5-VL: window order, as its last_hidden_state;
  // Qwen2-VL: processor order).
  Tensor forward(const Tensor& patches, int64_t grid_t, int64_t grid_h, int64_t grid_w,
                 Tensor* last_hidden = nullptr) const;

  int64_t out_hidden_size() const;
  int64_t spatial_merge_size() const;
  size_t weight_bytes() const;

  // As ViTEncoder's.
  Device device() const;
  void collect(vision::DeviceMove& move);
  void to_device(Device device);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vlm
