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
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "io/safetensors.h"

namespace vlm {

// Where a tower lives: the candidate prefixes are tried in order; the first under which the tower's
// embeddings tensor exists wins (e.g. {"vision_tower.vision_model.", "vision_tower.", "model.vision_tower."}).
std::string detect_prefix(const Checkpoint& checkpoint, const std::vector<std::string>& candidates,
                          const std::string& probe_suffix, const std::string& what);

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
  // real pixels — only those patches are kept, positions follow HF's bucketing. Returns the hidden states after
  // encoder layer `layer` (HF hidden_states index: 0 = embeddings, L = last layer; negative counts from the end
  // as HF does), [n_tokens, hidden] f32 (n_tokens includes CLIP's class token at row 0); when
  // `apply_post_layernorm` the post_layernorm is applied (SigLIP last_hidden_state).
  Tensor forward(const float* pixels, int64_t h, int64_t w, int layer, bool apply_post_layernorm,
                 const uint8_t* patch_mask = nullptr) const;

  int64_t hidden_size() const;
  int64_t patch_size() const;
  int64_t num_layers() const;
  size_t weight_bytes() const;

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

  // patches: [grid_t*grid_h*grid_w, 3*T*P*P] f32 in the processor's order. Returns the merger output,
  // [grid_t*grid_h*grid_w / merge², lm_hidden] f32, in the processor's (prompt) order.
  Tensor forward(const Tensor& patches, int64_t grid_t, int64_t grid_h, int64_t grid_w) const;

  int64_t out_hidden_size() const;
  int64_t spatial_merge_size() const;
  size_t weight_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vlm
