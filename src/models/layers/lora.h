// LoRA adapters (--adapter-path), applied as an extra low-rank term at linear time,
//   y = x·Wᵀ (+ b) + scale · (x·Aᵀ)·Bᵀ      A: [r, in], B: [out, r] (f32, PyTorch Linear layout),
// never merged into the base weights (which may be quantized and stay in their stored format).
// Formats (engine_facts.md §1.7):
//   mlx-lm / mlx-vlm: adapter_config.json {"fine_tune_type": "lora", "lora_parameters": {"rank", "scale"}}
//                     (scale used as stored) or legacy mlx-vlm {"rank", "alpha"} (scale = alpha / rank);
//                     adapters.safetensors "<module>.lora_a" [in, r], "<module>.lora_b" [r, out].
//   PEFT:             adapter_config.json {"peft_type": "LORA", "r", "lora_alpha", "use_rslora"};
//                     adapter_model.safetensors "base_model.model.<module>.lora_A.weight" [r, in] and
//                     "...lora_B.weight" [out, r]; scale = lora_alpha / r, or lora_alpha / sqrt(r) (rsLoRA).
// Module paths may be canonical HF names or the checkpoint's own (mlx-vlm's language_model.model.*).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/ops.h"

namespace vlm {

struct LoraModule {
  ops::Weight a;  // dense f32 [r, in]
  ops::Weight b;  // dense f32 [out, r]
  float scale = 1.0f;
  int64_t rank = 0;
};

struct LoraTarget {
  std::string canonical;  // "model.layers.0.self_attn.q_proj"
  std::string actual;     // the base checkpoint's name for it
  int64_t out = 0, in = 0;
};

class LoraAdapter {
 public:
  // Reads the adapter folder; every adapted module must be one of `targets` with matching shapes, else
  // Error(kFormat) naming the tensor. DoRA and per-module rank/alpha patterns are Error(kUnsupported).
  static std::unique_ptr<LoraAdapter> load(const std::string& folder, const std::vector<LoraTarget>& targets);

  const LoraModule* find(const std::string& canonical) const;
  const std::string& format() const { return format_; }  // "peft" or "mlx"
  size_t num_modules() const { return modules_.size(); }
  size_t nbytes() const;

 private:
  std::string format_;
  std::map<std::string, LoraModule> modules_;  // by canonical module path
};

}  // namespace vlm
