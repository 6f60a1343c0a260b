// Declarative tensor tables: a family lists every tensor its decoder reads, by canonical HF module path
// ("model.layers.3.self_attn.q_proj", "lm_head"), with the shape the config implies and whether it is
// required. Loading resolves each canonical name against the checkpoint's actual layout (HF-original
// `model.*`, VLM layouts `language_model.model.*` / `model.language_model.*` / `model.text_model.*`,
// mlx-community names), decides per module whether it is MLX-quantized (by the presence of
// `<module>.scales`, the MLX loader rule) and then reports every missing, mis-shaped and unused tensor by
// name in one error, instead of failing later inside a kernel. Weights stay in their stored format, on
// the host until to_device() uploads them (entries are replaced in place, so references stay valid).
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"

namespace vlm {

// Where the text decoder lives inside a checkpoint: `decoder_prefix` replaces the canonical "model."
// and `head_prefix` the canonical "lm_head." (e.g. "language_model.model." and "language_model.lm_head.").
struct DecoderLayout {
  std::string decoder_prefix = "model.";
  std::string head_prefix = "lm_head.";
  // The checkpoint name of a canonical name ("model.norm.weight" -> "language_model.model.norm.weight").
  std::string actual(const std::string& canonical) const;
  // Detects the layout by where `<prefix>embed_tokens.weight` is; throws Error(kNotFound) listing what
  // was tried when no known layout matches.
  static DecoderLayout detect(const Checkpoint& checkpoint);
};

// The MLX affine weight `<base>.weight` (u32 packed) with `<base>.scales` and `<base>.biases` as an
// ops::Weight of logical shape [out, in] under `spec`. The caller has checked the stored shapes (each
// reader reports them its own way); QuantizedMatrix::validate checks them again and throws.
ops::Weight quantized_weight(const Checkpoint& checkpoint, const std::string& base, const AffineQuantSpec& spec,
                             int64_t out, int64_t in);

// The checkpoint is read during resolve() only: resolved weights are borrowed views that keep their
// files alive on their own.
class TensorTable {
 public:
  TensorTable(const Checkpoint& checkpoint, const QuantizationConfig& quantization, DecoderLayout layout,
              std::string family);

  // A Linear/Embedding weight "<module>.weight" of logical shape [out, in]: dense (f32/f16/bf16) or MLX
  // affine-quantized (u32 packed weight + scales + biases). Optionally its additive "<module>.bias" [out].
  void matrix(const std::string& module, int64_t out, int64_t in, bool required = true, bool with_bias = false,
              bool bias_required = true);
  // A float vector (norm weight, bias) with `n` elements.
  void vector(const std::string& name, int64_t n, bool required = true);

  // Resolves everything declared; throws one Error(kFormat) naming the folder, the family and every
  // missing / mis-shaped / unused tensor. Tensors under the decoder that nothing declared are unused
  // (rotary_emb.inv_freq buffers of old checkpoints excepted).
  void resolve();

  bool has(const std::string& canonical) const;  // declared and present
  const ops::Weight& weight(const std::string& module) const;  // "<module>" as declared with matrix()
  Tensor bias(const std::string& module) const;                // undefined when absent
  Tensor tensor(const std::string& name) const;                // a vector() entry, undefined when absent
  // The checkpoint name behind a canonical module path (for LoRA and messages).
  std::string actual(const std::string& canonical) const { return layout_.actual(canonical); }
  const DecoderLayout& layout() const { return layout_; }
  size_t weight_bytes() const;

  // Copies every resolved weight (stored format kept) and vector to `device` and drops the previous
  // views, except the entries named in `stay` (canonical names, e.g. an untied model's embedding table,
  // which only the host-side lookup reads). The map entries are assigned in place, so references from
  // weight() stay valid; tensor() and bias() return the new copies. Throws what ops::to_device throws
  // (kUnsupported without CUDA), leaving the table as it was.
  void to_device(Device device, const std::set<std::string>& stay = {});
  Device device() const { return device_; }

 private:
  struct Entry {
    std::string canonical;
    bool is_matrix = false;
    Shape shape;  // logical
    bool required = true;
  };
  void resolve_matrix(const Entry& e);
  void resolve_vector(const Entry& e);

  const Checkpoint& checkpoint_;
  const QuantizationConfig& quantization_;
  DecoderLayout layout_;
  std::string family_;
  std::vector<Entry> entries_;
  std::map<std::string, ops::Weight> weights_;  // by module
  std::map<std::string, Tensor> tensors_;       // vectors and biases by canonical tensor name
  std::vector<std::string> used_;               // actual names consumed
  std::vector<std::string> missing_, misshaped_;
  Device device_ = Device::kCpu;
};

}  // namespace vlm
