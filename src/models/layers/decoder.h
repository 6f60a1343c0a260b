// The pre-norm transformer decoder every supported text family is an instance of. A family turns its
// config into a DecoderSpec (which features are on, per-layer windows and RoPE) — behaviour comes from
// config fields, never from model names — and DecoderModel declares the matching tensor table, loads it
// and runs it:
//
//   x = embed(ids) * embed_scale
//   per layer i:  h = norm(x, input_layernorm)
//                 q, k, v = q_proj(h), k_proj(h), v_proj(h)     (or one fused qkv_proj)
//                 q, k = q_norm(q), k_norm(k)                   (per head, when qk_norm)
//                 q, k = rope(q), rope(k)                       (layer's own frequencies, partial rotary)
//                 a = o_proj(cache.update_and_attend(q, k, v))  (scale, softcap, sliding window per layer)
//                 a = norm(a, post_attention_layernorm)         (sandwich norms only: Gemma 2/3)
//                 x += a
//                 h = norm(x, post_attention_layernorm | pre_feedforward_layernorm)
//                 m = down_proj(act(gate_proj(h)) * up_proj(h)) (or one fused gate_up_proj, gate first)
//                 m = norm(m, post_feedforward_layernorm)       (sandwich norms only)
//                 x += m
//   logits = softcap(lm_head(norm(x, model.norm)))             (lm_head = embed_tokens when tied/absent)
//
// Module names are HF's, so activations can be diffed against transformers layer by layer.
// Decode-sized calls without sandwich norms or LoRA run the norms and residual adds folded into the
// linears (ops.h LinearOut: q/k/v, gate/up and lm_head read norm(x) on the fly; o_proj and down_proj
// add into x) and rotate q, k in one rope_qk call: the same math, fewer launches per decode step
// (VLMCHECK_DECODER_FUSE=0 turns both off, for before/after measurements).
//
// Devices: to_device(kCuda) uploads every weight, norm, bias and LoRA A/B (TensorTable::to_device), then
// forward() allocates its activations on the device and runs every op there; the embedding lookup
// stays on the host (a host view of the table is kept: n rows per call, no round trip), forward()
// uploads the host embeddings once per call and copies back only the logits rows it was asked for.
#pragma once

#include <cstdint>
#include <functional>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "models/language_model.h"
#include "models/layers/lora.h"
#include "models/layers/rope.h"
#include "models/layers/tensor_table.h"

namespace vlm {

struct DecoderLayerSpec {
  int64_t sliding_window = 0;  // 0 = full attention
  RopeTable rope;
};

struct DecoderSpec {
  std::string family;  // for messages
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0;
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float rms_norm_eps = 1e-6f;
  float norm_offset = 0.0f;  // 1 for Gemma's (1 + w) RMSNorm
  ops::Activation activation = ops::Activation::kSilu;
  float embed_scale = 1.0f;  // Gemma: sqrt(hidden), rounded to the embedding's stored dtype
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  bool qk_norm = false;
  bool fused_qkv = false, fused_gate_up = false;  // Phi-3
  bool sandwich_norms = false;                    // Gemma 2/3 pre/post attention and feed-forward norms
  float attn_scale = 0.0f;                        // 0 = 1/sqrt(head_dim)
  float attn_softcap = 0.0f, final_softcap = 0.0f;
  bool tie_word_embeddings = false;  // also used when lm_head is absent (mlx-community drops it when tied)
  std::vector<DecoderLayerSpec> layers;
};

// Common fields of a HF text config (sizes, eps, tie, activation from hidden_act, attention_bias,
// mlp_bias, one RoPE table per layer, windows from layer_types + sliding_window when present).
// Families adjust the result. `what` names the config file in errors.
DecoderSpec read_common_spec(const Json& text, const std::string& family, const std::string& what);
// Required integer field, with the error naming the key.
int64_t require_int(const Json& obj, const char* key, const std::string& what);
ops::Activation parse_activation(const std::string& name, const std::string& what);
// layer_types ("sliding_attention" / "full_attention"...) when present: one entry per layer.
std::vector<std::string> read_layer_types(const Json& text, int64_t n_layers, const std::string& what);
// Older configs without layer_types: layers for which is_sliding(i) holds get the config's
// sliding_window (an integer > 0, else nothing is windowed). No-op when layer_types is present.
void apply_legacy_windows(DecoderSpec& spec, const Json& text, const std::function<bool(int)>& is_sliding,
                          const std::string& what);

class DecoderModel final : public LanguageModel {
 public:
  // Declares the tensor table for `spec`, resolves it against the checkpoint (throwing one error that
  // names every missing / mis-shaped / unused tensor) and attaches the LoRA adapter if any.
  // Weights are borrowed views that keep their files alive, so the checkpoint object itself need not
  // outlive the model.
  DecoderModel(DecoderSpec spec, const ModelConfig& config, const Checkpoint& checkpoint,
               const std::string& adapter_path);
  // Waits for queued decode steps nobody read (a generation that threw): their readbacks target this object.
  ~DecoderModel() override;

  int64_t vocab_size() const override { return spec_.vocab_size; }
  int64_t hidden_size() const override { return spec_.hidden_size; }
  std::vector<LayerCacheInfo> cache_layout() const override;
  void embed(const int32_t* ids, int64_t n, float* out) const override;
  void forward(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
               const ops::AttentionMask& mask, float* logits, bool all_logits) override;
  int32_t forward_argmax(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                         const ops::AttentionMask& mask) override;
  int32_t forward_sample(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                         const ops::AttentionMask& mask, const ops::SamplingSpec& spec, const int32_t* history,
                         int64_t n_history, double u) override;
  // Queued greedy decode (language_model.h): on a device each step is one ops::run_graph_async whose
  // embedding is gathered from the id the step before left in device memory (embedding_device_ids) and
  // whose argmax stays there (argmax_device), with a readback of it for next_queued.
  void begin_queued(int32_t id) override;
  void queue_greedy(const Positions& positions, KVCache& cache) override;
  void queue_sample(const Positions& positions, KVCache& cache, const ops::SamplingSpec& spec, double u) override;
  int32_t next_queued() override;
  bool queues_ahead() const override { return device_ != Device::kCpu; }
  size_t weight_bytes() const override;
  Device device() const override { return device_; }
  // Throws Error(kUnsupported) naming the reason when `device` cannot run (no CUDA); the model then
  // stays whole on its old device.
  void to_device(Device device) override;
  // forward_argmax calls with fewer tokens than this run through ops::run_graph on a device.
  static constexpr int64_t kGraphMaxTokens = 8;

  const DecoderSpec& spec() const { return spec_; }
  const LoraAdapter* adapter() const { return adapter_.get(); }

 private:
  struct Linear {
    const ops::Weight* weight = nullptr;
    Tensor bias;
    const LoraModule* lora = nullptr;
    int64_t out = 0;
  };
  struct Layer {
    Tensor input_norm, post_attn_norm, pre_ffn_norm, post_ffn_norm, q_norm, k_norm;
    Linear q, k, v, qkv, o, gate, up, gate_up, down;
  };
  // Points embed_, head_, final_norm_ and layers_ at the table's current (device) tensors.
  void bind();
  Linear make_linear(const std::string& module, int64_t out);
  // f32 activations on the model's device.
  Tensor scratch(const Shape& shape) const;
  // norm: x is the residual stream and the linear reads rms_norm(x) (ops.h LinearOut::norm);
  // accumulate: y += the result. Either needs a module without LoRA (its term reads the normalized x).
  void run_linear(const Linear& l, const float* x, int64_t n, float* y, const ops::LinearNorm* norm = nullptr,
                  bool accumulate = false) const;
  // Linears of the same input in one ops::linear_group (q/k/v, gate/up): (linear, its output) pairs.
  void run_linears(std::initializer_list<std::pair<const Linear*, float*>> group, const float* x, int64_t n,
                   const ops::LinearNorm* norm = nullptr) const;
  // y += the LoRA term of l, if it has one.
  void add_lora(const Linear& l, const float* x, int64_t n, float* y) const;
  // hx: the block's normalized input [n, hidden]; out: its output before the residual add. Fused form
  // (norm set; run() takes it without sandwich norms or LoRA): hx is the residual stream itself, the
  // block's linears read rms_norm(hx, *norm), and its output projection adds into out (the stream).
  void attention_block(int i, const float* hx, int64_t n, const Positions& positions, KVCache& cache,
                       const ops::AttentionMask& mask, float* out, const ops::LinearNorm* norm = nullptr);
  void mlp_block(int i, const float* hx, int64_t n, float* out, const ops::LinearNorm* norm = nullptr);
  // The layers and the head: the logits of the last `rows` positions on device_ ([rows, vocab]; the
  // caller's host `logits` when on the CPU, else a device buffer kept alive by `keep`).
  // device_ids: when set, the n inputs are the embeddings of these ids in device_ memory, gathered
  // there (embeds is then unused).
  float* run(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
             const ops::AttentionMask& mask, int64_t rows, float* logits, Tensor& keep,
             const int32_t* device_ids = nullptr);
  // Raises forward_sample's error for a sampled id of -1 (a device's all-masked row).
  void require_sampled(int32_t id) const;
  // One queued decode step (queue_greedy: spec null; queue_sample).
  void queue_step(const Positions& positions, KVCache& cache, const ops::SamplingSpec* spec, double u);

  DecoderSpec spec_;
  std::unique_ptr<TensorTable> table_;
  std::unique_ptr<LoraAdapter> adapter_;
  std::map<std::string, LoraModule> lora_on_device_;  // adapter modules copied to device_ (by module)
  Device device_ = Device::kCpu;
  ops::Weight embed_host_;  // the embedding table's host view, for embed() on any device
  const ops::Weight* embed_ = nullptr;
  // Untied on a device: a copy of the table there, for queued steps' gathers (tied, the head is it).
  ops::Weight embed_device_;
  // Queued greedy decode: ids in device_ memory (slot k % 2 is what step k feeds, the next slot what
  // it produces), host copies read by next_queued (a ring: at most two steps are unread), and per
  // unread step its run_graph_async ticket and host slot.
  Tensor queued_ids_;
  int64_t queued_steps_ = 0;
  int32_t queued_host_[4] = {};
  std::deque<std::pair<uint64_t, int>> queued_unread_;
  Linear head_;
  Tensor final_norm_;
  std::vector<Layer> layers_;
  bool f32_weights_ = true;  // the linears are dense f32 (attention then stays f32 on every device)
};

}  // namespace vlm
