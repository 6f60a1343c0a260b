// Checkpoint conversion to the mlx-community layout (`vlmcheck convert`): a Hugging Face model folder in,
// a folder out that loads like an mlx-lm / mlx-vlm conversion (engine_facts.md "How MLX's converters
// actually write a checkpoint", §1.5), quantized with our MLX-exact affine quantizer (core/quantize.h).
//
//   - language-model Linear / Embedding weights ([out, in], name ends ".weight") are quantized when `in`
//     is a multiple of the group size — MLX's quantize_model rule; the others stay dense and get no
//     config entry (loaders decide per module by the presence of `<module>.scales`);
//   - vision towers and multi-modal projectors are never quantized (mlx-vlm);
//   - names: text models keep HF names (mlx-lm); LLaVA becomes language_model.model.*,
//     language_model.lm_head.*, vision_tower.vision_model.* (patch conv channels-last [O, kH, kW, I]) and
//     multi_modal_projector.* (mlx-vlm); position_ids / rotary inv_freq buffers are dropped;
//   - config.json gains "quantization" and "quantization_config" = {group_size, bits, mode: "affine"}
//     (top-level keys sorted, indent 4, as mlx-lm's save_config); every other json / tokenizer / template
//     file is copied byte for byte;
//   - model.safetensors holds the tensors in sorted name order with __metadata__ {"format": "mlx"}, and
//     model.safetensors.index.json is written for the single shard, as MLX does.
// The output is a pure function of the input bytes and options (no timestamps, no hash order).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"

namespace vlm {

struct ConvertOptions {
  AffineQuantSpec quant{4, 64};
  // Every floating tensor (and the scales/biases) is cast to this dtype first; nullopt keeps each
  // tensor's stored dtype.
  std::optional<DType> dtype;
};

struct ConvertSummary {
  std::string layout;                  // "mlx-lm" (text) or "mlx-vlm llava"
  std::vector<std::string> quantized;  // module names (without ".weight"), sorted
  std::vector<std::string> dense;      // language-model 2-D weights left dense (input dim not divisible)
  std::vector<std::string> copied;     // files copied next to the weights, sorted
  size_t tensor_bytes = 0;             // sum of the written tensors' bytes
  size_t source_tensor_bytes = 0;
};

// Converts `src_folder` (a model folder: config.json + safetensors) into `out_folder`, which must not
// exist or be an empty directory. Throws Error(kInvalidArgument) for a non-empty output folder or a bad
// spec, Error(kUnsupported) for an already-quantized source or a VLM family without a known mlx-vlm
// layout, Error(kFormat) for tensors that fit no known name, Error(kIo) when writing fails.
ConvertSummary convert_checkpoint(const std::string& src_folder, const std::string& out_folder,
                                  const ConvertOptions& options);

// The mlx-vlm name of a LLaVA tensor given its Hugging Face name (transformers 4 or 5 layout, or already
// mlx-vlm); nullopt for buffers MLX drops (position_ids). Throws Error(kFormat) for an unknown prefix.
std::optional<std::string> mlx_vlm_llava_name(const std::string& hf_name);

}  // namespace vlm
