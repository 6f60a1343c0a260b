// The shared decoder: tensor table from the spec, and the forward pass (see decoder.h for the math).
// All activations are f32; weights are read in their stored format by the kernels.
#include "models/layers/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>

#include <fmt/format.h>

#include "core/error.h"

namespace vlm {

// ---- config helpers -------------------------------------------------------------------------------

int64_t require_int(const Json& obj, const char* key, const std::string& what) {
  std::optional<int64_t> v = json_int(obj, key, what);
  VLM_CHECK(v.has_value(), ErrorKind::kFormat, "{}: required field '{}' is missing", what, key);
  VLM_CHECK(*v > 0, ErrorKind::kFormat, "{}: field '{}' must be positive, got {}", what, key, *v);
  return *v;
}

ops::Activation parse_activation(const std::string& name, const std::string& what) {
  if (name == "silu" || name == "swish") return ops::Activation::kSilu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast") return ops::Activation::kGeluTanh;
  if (name == "gelu") return ops::Activation::kGeluErf;  // transformers' "gelu" is the exact erf form
  if (name == "quick_gelu") return ops::Activation::kQuickGelu;
  if (name == "relu") return ops::Activation::kRelu;
  throw_error(ErrorKind::kUnsupported, "{}: activation '{}' is not supported", what, name);
}

std::vector<std::string> read_layer_types(const Json& text, int64_t n_layers, const std::string& what) {
  std::vector<std::string> types;
  const Json* lt = json_find(text, "layer_types");
  if (!lt || lt->is_null()) return types;
  VLM_CHECK(lt->is_array() && static_cast<int64_t>(lt->size()) == n_layers, ErrorKind::kFormat,
            "{}: layer_types must list {} layer types (num_hidden_layers)", what, n_layers);
  for (const Json& t : *lt) {
    VLM_CHECK(t.is_string(), ErrorKind::kFormat, "{}: layer_types entries must be strings", what);
    types.push_back(t.get<std::string>());
  }
  return types;
}

DecoderSpec read_common_spec(const Json& text, const std::string& family, const std::string& what) {
  DecoderSpec s;
  s.family = family;
  s.vocab_size = require_int(text, "vocab_size", what);
  s.hidden_size = require_int(text, "hidden_size", what);
  s.intermediate_size = require_int(text, "intermediate_size", what);
  s.n_heads = require_int(text, "num_attention_heads", what);
  const int64_t n_layers = require_int(text, "num_hidden_layers", what);
  s.n_kv_heads = json_int(text, "num_key_value_heads", what).value_or(s.n_heads);
  VLM_CHECK(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0, ErrorKind::kFormat,
            "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", what, s.n_heads, s.n_kv_heads);
  // head_dim may be absent or null (then hidden / heads).
  const Json* hd = json_find(text, "head_dim");
  s.head_dim = (hd && !hd->is_null()) ? require_int(text, "head_dim", what) : s.hidden_size / s.n_heads;
  s.rms_norm_eps = static_cast<float>(json_number(text, "rms_norm_eps", what).value_or(1e-6));
  s.tie_word_embeddings = json_bool(text, "tie_word_embeddings", what).value_or(false);
  s.activation = parse_activation(json_string(text, "hidden_act", what).value_or("silu"), what + " hidden_act");
  s.qkv_bias = s.o_bias = json_bool(text, "attention_bias", what).value_or(false);
  s.mlp_bias = json_bool(text, "mlp_bias", what).value_or(false);

  std::vector<std::string> types = read_layer_types(text, n_layers, what);
  const Json* sw = json_find(text, "sliding_window");
  const int64_t window = (sw && sw->is_number_integer()) ? sw->get<int64_t>() : 0;
  s.layers.resize(static_cast<size_t>(n_layers));
  for (int64_t i = 0; i < n_layers; ++i) {
    DecoderLayerSpec& l = s.layers[static_cast<size_t>(i)];
    RopeOverrides ov;
    if (!types.empty()) {
      ov.layer_type = types[static_cast<size_t>(i)];
      if (types[static_cast<size_t>(i)] == "sliding_attention") {
        VLM_CHECK(window > 0, ErrorKind::kFormat, "{}: layer {} is sliding_attention but sliding_window is unset",
                  what, i);
        l.sliding_window = window;
      }
    }
    l.rope = parse_rope(text, s.head_dim, ov, what);
  }
  return s;
}

void apply_legacy_windows(DecoderSpec& s, const Json& text, const std::function<bool(int)>& is_sliding,
                          const std::string& what) {
  if (!read_layer_types(text, static_cast<int64_t>(s.layers.size()), what).empty()) return;
  const Json* sw = json_find(text, "sliding_window");
  if (!sw || sw->is_null()) return;
  VLM_CHECK(sw->is_number_integer() && sw->get<int64_t>() > 0, ErrorKind::kFormat,
            "{}: sliding_window must be a positive integer or null", what);
  for (int i = 0; i < static_cast<int>(s.layers.size()); ++i) {
    if (is_sliding(i)) s.layers[static_cast<size_t>(i)].sliding_window = sw->get<int64_t>();
  }
}

// ---- model ----------------------------------------------------------------------------------------

namespace {

std::string layer_path(int i, const char* rest) { return fmt::format("model.layers.{}.{}", i, rest); }

// VLMCHECK_DECODER_FUSE=0 runs the unfused forward (separate add_rms_norm launches, one rope per tensor):
// the before/after switch for benchmarks; the math is the same either way. Read once.
bool fusion_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("VLMCHECK_DECODER_FUSE");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

// VLMCHECK_PREFILL_FUSE=0 keeps prefill chunks on the unfused forward (separate add_rms_norm passes, f32
// copies of the normalized input, temporaries for the residual adds): the same-binary A/B switch of the fused prefill
// (run()). Read once.
bool prefill_fusion_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("VLMCHECK_PREFILL_FUSE");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

// Gemma's normalizer is sqrt(hidden) cast to the activation dtype; checkpoints stored in bf16/f16 run in
// that dtype in transformers and mlx, so the factor is rounded the same way (f32 checkpoints: exact).
float round_to_dtype(float v, DType t) {
  if (t == DType::kBF16) return bf16_to_f32(f32_to_bf16(v));
  if (t == DType::kF16) return f16_to_f32(f32_to_f16(v));
  return v;
}

}  // namespace

DecoderModel::DecoderModel(DecoderSpec spec, const ModelConfig& config, const Checkpoint& checkpoint,
                           const std::string& adapter_path)
    : spec_(std::move(spec)) {
  const DecoderSpec& s = spec_;
  const int64_t h = s.hidden_size, hd = s.head_dim, q_out = s.n_heads * hd, kv_out = s.n_kv_heads * hd;
  const int64_t inter = s.intermediate_size;
  VLM_CHECK(s.layers.size() > 0, ErrorKind::kFormat, "{}: the {} config has no layers", config.path, s.family);
  table_ = std::make_unique<TensorTable>(checkpoint, config.quantization, DecoderLayout::detect(checkpoint),
                                         s.family);
  TensorTable& t = *table_;
  t.matrix("model.embed_tokens", s.vocab_size, h);
  // The head: required unless tied; a tied model may still carry a copy (mlx-vlm Gemma 3 writes one).
  t.matrix("lm_head", s.vocab_size, h, /*required=*/!s.tie_word_embeddings);
  t.vector("model.norm.weight", h);
  std::vector<LoraTarget> lora_targets;
  auto linear = [&](const std::string& m, int64_t out, int64_t in, bool bias) {
    t.matrix(m, out, in, true, bias);
    lora_targets.push_back({m, t.actual(m), out, in});
  };
  for (int i = 0; i < static_cast<int>(s.layers.size()); ++i) {
    t.vector(layer_path(i, "input_layernorm.weight"), h);
    t.vector(layer_path(i, "post_attention_layernorm.weight"), h);
    if (s.sandwich_norms) {
      t.vector(layer_path(i, "pre_feedforward_layernorm.weight"), h);
      t.vector(layer_path(i, "post_feedforward_layernorm.weight"), h);
    }
    if (s.fused_qkv) {
      linear(layer_path(i, "self_attn.qkv_proj"), q_out + 2 * kv_out, h, s.qkv_bias);
    } else {
      linear(layer_path(i, "self_attn.q_proj"), q_out, h, s.qkv_bias);
      linear(layer_path(i, "self_attn.k_proj"), kv_out, h, s.qkv_bias);
      linear(layer_path(i, "self_attn.v_proj"), kv_out, h, s.qkv_bias);
    }
    linear(layer_path(i, "self_attn.o_proj"), h, q_out, s.o_bias);
    if (s.qk_norm) {
      t.vector(layer_path(i, "self_attn.q_norm.weight"), hd);
      t.vector(layer_path(i, "self_attn.k_norm.weight"), hd);
    }
    if (s.fused_gate_up) {
      linear(layer_path(i, "mlp.gate_up_proj"), 2 * inter, h, s.mlp_bias);
    } else {
      linear(layer_path(i, "mlp.gate_proj"), inter, h, s.mlp_bias);
      linear(layer_path(i, "mlp.up_proj"), inter, h, s.mlp_bias);
    }
    linear(layer_path(i, "mlp.down_proj"), h, inter, s.mlp_bias);
  }
  t.resolve();
  if (!adapter_path.empty()) adapter_ = LoraAdapter::load(adapter_path, lora_targets);

  embed_host_ = t.weight("model.embed_tokens");
  if (s.embed_scale != 1.0f) {
    DType stored = embed_host_.quantized ? embed_host_.quant.scales.dtype() : embed_host_.dense.dtype();
    spec_.embed_scale = round_to_dtype(s.embed_scale, stored);
  }
  bind();
}

void DecoderModel::bind() {
  const DecoderSpec& s = spec_;
  const TensorTable& t = *table_;
  const int64_t h = s.hidden_size, hd = s.head_dim, q_out = s.n_heads * hd, kv_out = s.n_kv_heads * hd;
  const int64_t inter = s.intermediate_size;
  embed_ = &t.weight("model.embed_tokens");
  head_.weight = t.has("lm_head") ? &t.weight("lm_head") : embed_;
  head_.out = s.vocab_size;
  final_norm_ = t.tensor("model.norm.weight");
  layers_.assign(s.layers.size(), Layer{});
  for (int i = 0; i < static_cast<int>(s.layers.size()); ++i) {
    Layer& L = layers_[static_cast<size_t>(i)];
    L.input_norm = t.tensor(layer_path(i, "input_layernorm.weight"));
    L.post_attn_norm = t.tensor(layer_path(i, "post_attention_layernorm.weight"));
    L.pre_ffn_norm = t.tensor(layer_path(i, "pre_feedforward_layernorm.weight"));
    L.post_ffn_norm = t.tensor(layer_path(i, "post_feedforward_layernorm.weight"));
    L.q_norm = t.tensor(layer_path(i, "self_attn.q_norm.weight"));
    L.k_norm = t.tensor(layer_path(i, "self_attn.k_norm.weight"));
    if (s.fused_qkv) {
      L.qkv = make_linear(layer_path(i, "self_attn.qkv_proj"), q_out + 2 * kv_out);
    } else {
      L.q = make_linear(layer_path(i, "self_attn.q_proj"), q_out);
      L.k = make_linear(layer_path(i, "self_attn.k_proj"), kv_out);
      L.v = make_linear(layer_path(i, "self_attn.v_proj"), kv_out);
    }
    L.o = make_linear(layer_path(i, "self_attn.o_proj"), h);
    if (s.fused_gate_up) {
      L.gate_up = make_linear(layer_path(i, "mlp.gate_up_proj"), 2 * inter);
    } else {
      L.gate = make_linear(layer_path(i, "mlp.gate_proj"), inter);
      L.up = make_linear(layer_path(i, "mlp.up_proj"), inter);
    }
    L.down = make_linear(layer_path(i, "mlp.down_proj"), h);
  }
  const Linear& first = s.fused_qkv ? layers_[0].qkv : layers_[0].q;
  f32_weights_ = !first.weight->quantized && first.weight->dense.dtype() == DType::kF32;
}

DecoderModel::Linear DecoderModel::make_linear(const std::string& module, int64_t out) {
  Linear l;
  l.weight = &table_->weight(module);
  l.bias = table_->bias(module);
  l.lora = adapter_ ? adapter_->find(module) : nullptr;
  if (l.lora && device_ != Device::kCpu) {
    auto [it, fresh] = lora_on_device_.try_emplace(module);
    if (fresh) {
      it->second = *l.lora;
      it->second.a = ops::to_device(l.lora->a, device_);
      it->second.b = ops::to_device(l.lora->b, device_);
    }
    l.lora = &it->second;
  }
  l.out = out;
  return l;
}

void DecoderModel::to_device(Device device) {
  if (device == device_) return;
  // Refuses with the backend's reason (e.g. "built without CUDA") before anything is copied.
  { ops::DeviceScope probe(device); }
  const Device previous = device_;
  // The embedding table is read on the device only as a tied head; untied, embed() reads its host view.
  std::set<std::string> stay;
  if (table_->has("lm_head")) stay.insert("model.embed_tokens");
  table_->to_device(device, stay);
  device_ = device;
  lora_on_device_.clear();
  queued_ids_ = Tensor();
  embed_device_ = ops::Weight();
  try {
    bind();
    // Queued decode steps gather their embedding on the device (queue_greedy): untied, the table goes
    // there too (tracked as weights; decode reads one row of it per token, so weight_bytes leaves it out).
    if (device != Device::kCpu && !stay.empty()) embed_device_ = ops::to_device(embed_host_, device);
  } catch (...) {  // an upload failed: back to the old device, whole
    device_ = previous;
    lora_on_device_.clear();
    embed_device_ = ops::Weight();
    table_->to_device(previous, stay);
    bind();
    throw;
  }
}

Tensor DecoderModel::scratch(const Shape& shape) const {
  return ops::empty(shape, DType::kF32, MemCategory::kScratch, device_);
}

void DecoderModel::run_linear(const Linear& l, const float* x, int64_t n, float* y, const ops::LinearNorm* norm,
                              bool accumulate) const {
  if (norm == nullptr && !accumulate) {
    ops::linear(x, n, *l.weight, l.bias, y);
    add_lora(l, x, n, y);
    return;
  }
  VLM_CHECK(l.lora == nullptr, ErrorKind::kInternal, "{}: a fused linear cannot carry a LoRA term", spec_.family);
  const ops::LinearOut out{l.weight, &l.bias, y, accumulate, norm};
  ops::linear_group(x, n, &out, 1);
}

void DecoderModel::run_linears(std::initializer_list<std::pair<const Linear*, float*>> group, const float* x,
                               int64_t n, const ops::LinearNorm* norm) const {
  ops::LinearOut outs[4];
  int count = 0;
  for (const auto& [l, y] : group) {
    VLM_CHECK(norm == nullptr || l->lora == nullptr, ErrorKind::kInternal,
              "{}: a fused linear cannot carry a LoRA term", spec_.family);
    outs[count++] = {l->weight, &l->bias, y, false, norm};
  }
  ops::linear_group(x, n, outs, count);
  for (const auto& [l, y] : group) add_lora(*l, x, n, y);
}

void DecoderModel::add_lora(const Linear& l, const float* x, int64_t n, float* y) const {
  if (!l.lora) return;
  // y += scale · (x·Aᵀ)·Bᵀ — the adapter stays a separate low-rank term.
  const LoraModule& m = *l.lora;
  Tensor t = scratch({n, m.rank});
  Tensor d = scratch({n, l.out});
  ops::linear(x, n, m.a, Tensor(), t.data<float>());
  ops::linear(t.data<float>(), n, m.b, Tensor(), d.data<float>());
  ops::scale(d.data<float>(), m.scale, n * l.out);
  ops::add(y, d.data<float>(), n * l.out);
}

std::vector<LayerCacheInfo> DecoderModel::cache_layout() const {
  std::vector<LayerCacheInfo> out;
  for (const DecoderLayerSpec& l : spec_.layers) out.push_back({spec_.n_kv_heads, spec_.head_dim, l.sliding_window});
  return out;
}

void DecoderModel::embed(const int32_t* ids, int64_t n, float* out) const {
  for (int64_t i = 0; i < n; ++i) {
    VLM_CHECK(ids[i] >= 0 && ids[i] < spec_.vocab_size, ErrorKind::kInvalidArgument,
              "{}: token id {} at position {} is outside the vocabulary [0, {})", spec_.family, ids[i], i,
              spec_.vocab_size);
  }
  // On the host on every device: the caller wants host floats, and n rows of the (mapped) table are
  // cheaper to gather here than to gather on the GPU and copy back.
  ops::DeviceScope host(Device::kCpu);
  ops::embedding(embed_host_, ids, n, spec_.embed_scale, out);
}

void DecoderModel::attention_block(int i, const float* hx, int64_t n, const Positions& positions, KVCache& cache,
                                   const ops::AttentionMask& mask, float* out, const ops::LinearNorm* norm) {
  const DecoderSpec& s = spec_;
  const Layer& L = layers_[static_cast<size_t>(i)];
  const DecoderLayerSpec& ls = s.layers[static_cast<size_t>(i)];
  const int64_t h = s.hidden_size, hd = s.head_dim, H = s.n_heads, KV = s.n_kv_heads;
  Tensor qb = scratch({n, H * hd}), ab = scratch({n, H * hd}), kb, vb;
  float *q = qb.data<float>(), *a = ab.data<float>();
  // k and v go straight into the cache's next rows when it stores plain rows (no copy afterwards).
  auto [k, v] = cache.layer(i).next_rows(n);
  if (k == nullptr) {
    kb = scratch({n, KV * hd});
    vb = scratch({n, KV * hd});
    k = kb.data<float>();
    v = vb.data<float>();
  }

  if (s.fused_qkv) {
    // qkv_proj rows are [q | k | v]; split each token's row.
    const int64_t w = (H + 2 * KV) * hd;
    Tensor fused = scratch({n, w});
    const float* f = fused.data<float>();
    run_linear(L.qkv, hx, n, fused.data<float>(), norm);
    const size_t pitch = sizeof(float) * w, qw = sizeof(float) * H * hd, kvw = sizeof(float) * KV * hd;
    ops::copy_2d(q, qw, f, pitch, qw, n);
    ops::copy_2d(k, kvw, f + H * hd, pitch, kvw, n);
    ops::copy_2d(v, kvw, f + (H + KV) * hd, pitch, kvw, n);
  } else {
    run_linears({{&L.q, q}, {&L.k, k}, {&L.v, v}}, hx, n, norm);
  }
  if (s.qk_norm) {  // per-head RMSNorm over head_dim ("q_norm", "k_norm")
    ops::rms_norm(q, n * H, hd, L.q_norm, s.rms_norm_eps, s.norm_offset, q);
    ops::rms_norm(k, n * KV, hd, L.k_norm, s.rms_norm_eps, s.norm_offset, k);
  }
  const RopeTable& r = ls.rope;
  // The fused path (norm set: a device, fusions on; decode steps and, for dense 16-bit weights, prefill
  // chunks) hands the rotation to the cache's attention: on CUDA the decode attention kernel rotates q and
  // the new key row itself, one launch fewer per layer (KVLayer::rope_update_and_attend; other layers and
  // shapes, prefill chunks included, run rope_qk first inside ops::attention_with_rope).
  const bool rope_in_attention = norm != nullptr;
  ops::AttentionRope rope;
  std::vector<float> freq_scratch;
  if (positions.dims == 3 && !r.mrope_section.empty()) {
    VLM_CHECK(r.rotary_dim == hd, ErrorKind::kUnsupported, "{}: M-RoPE with partial rotary is not supported",
              s.family);
    rope = {hd, r.inv_freq.data(), positions.data, &r.mrope_section, r.attention_scaling};
    if (rope_in_attention) {
      // rotated by rope_update_and_attend below
    } else if (fusion_enabled()) {
      ops::mrope_qk(q, H, k, KV, n, hd, r.inv_freq.data(), positions.data, r.mrope_section, r.attention_scaling);
    } else {
      ops::mrope(q, n, H, hd, r.inv_freq.data(), positions.data, r.mrope_section, r.attention_scaling);
      ops::mrope(k, n, KV, hd, r.inv_freq.data(), positions.data, r.mrope_section, r.attention_scaling);
    }
  } else {
    // Text positions (dims == 1); for M-RoPE models all three rows are equal for text, use the first.
    const int64_t max_pos = *std::max_element(positions.data, positions.data + n);
    const float* inv_freq = r.inv_freq_for(max_pos, freq_scratch);
    rope = {r.rotary_dim, inv_freq, positions.data, nullptr, r.attention_scaling};
    if (rope_in_attention) {
      // rotated by rope_update_and_attend below
    } else if (fusion_enabled()) {
      ops::rope_qk(q, H, k, KV, n, hd, r.rotary_dim, inv_freq, positions.data, r.attention_scaling);
    } else {
      ops::rope(q, n, H, hd, r.rotary_dim, inv_freq, positions.data, r.attention_scaling);
      ops::rope(k, n, KV, hd, r.rotary_dim, inv_freq, positions.data, r.attention_scaling);
    }
  }
  LayerAttentionSpec spec;
  spec.n_heads = H;
  spec.n_kv_heads = KV;
  spec.head_dim = hd;
  spec.scale = s.attn_scale > 0 ? s.attn_scale : 1.0f / std::sqrt(static_cast<float>(hd));
  spec.softcap = s.attn_softcap;
  spec.sliding_window = ls.sliding_window;
  if (rope_in_attention)
    cache.layer(i).rope_update_and_attend(q, k, v, n, rope, spec, mask, a);
  else
    cache.layer(i).update_and_attend(q, k, v, n, spec, mask, a);
  run_linear(L.o, a, n, out, nullptr, norm != nullptr);  // "o_proj" (fused: out += o_proj(a))
  if (s.sandwich_norms) ops::rms_norm(out, n, h, L.post_attn_norm, s.rms_norm_eps, s.norm_offset, out);
}

void DecoderModel::mlp_block(int i, const float* hx, int64_t n, float* out, const ops::LinearNorm* norm) {
  const DecoderSpec& s = spec_;
  const Layer& L = layers_[static_cast<size_t>(i)];
  const int64_t h = s.hidden_size, I = s.intermediate_size;
  Tensor gb = scratch({n, I}), ub = scratch({n, I});
  float *g = gb.data<float>(), *u = ub.data<float>();
  if (s.fused_gate_up) {
    // gate_up_proj rows are [gate | up] (Phi-3 chunks the output in two, gate first).
    Tensor fused = scratch({n, 2 * I});
    run_linear(L.gate_up, hx, n, fused.data<float>(), norm);
    const size_t pitch = sizeof(float) * 2 * I, width = sizeof(float) * I;
    ops::copy_2d(g, width, fused.data<float>(), pitch, width, n);
    ops::copy_2d(u, width, fused.data<float>() + I, pitch, width, n);
  } else {
    run_linears({{&L.gate, g}, {&L.up, u}}, hx, n, norm);
  }
  ops::gated_activate(g, u, n * I, s.activation);
  run_linear(L.down, g, n, out, nullptr, norm != nullptr);  // "down_proj" (fused: out += down_proj(...))
  if (s.sandwich_norms) ops::rms_norm(out, n, h, L.post_ffn_norm, s.rms_norm_eps, s.norm_offset, out);
}

void DecoderModel::forward(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                           const ops::AttentionMask& mask, float* logits, bool all_logits) {
  const int64_t rows = all_logits ? n : 1;
  Tensor keep;
  const float* out = run(embeds, n, positions, cache, mask, rows, logits, keep);
  // On a device the logits were computed there; only these `rows` come back.
  if (device_ != Device::kCpu) {
    ops::DeviceScope scope(device_);
    ops::copy(logits, Device::kCpu, out, device_, sizeof(float) * rows * spec_.vocab_size);
  }
}

int32_t DecoderModel::forward_argmax(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                                     const ops::AttentionMask& mask) {
  ops::DeviceScope scope(device_);
  int32_t id = 0;
  auto step = [&] {
    Tensor keep;
    const float* out = run(embeds, n, positions, cache, mask, 1, nullptr, keep);
    ops::argmax(out, 1, spec_.vocab_size, &id);
  };
  // Decode steps on a device go through run_graph (ops.h: CUDA captures the ~400 launches of a step
  // into graphs); the id is written when it returns. Prefill chunks gain nothing from capture.
  if (device_ != Device::kCpu && n < kGraphMaxTokens)
    ops::run_graph(this, step);
  else
    step();
  return id;
}

int32_t DecoderModel::forward_sample(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                                     const ops::AttentionMask& mask, const ops::SamplingSpec& spec,
                                     const int32_t* history, int64_t n_history, double u) {
  ops::DeviceScope scope(device_);
  int32_t id = 0;
  auto step = [&] {
    Tensor keep;
    const float* out = run(embeds, n, positions, cache, mask, 1, nullptr, keep);
    // The logits row stays where run() left it (device memory on a GPU); only the id comes back.
    ops::sample(out, spec_.vocab_size, spec, history, n_history, u, &id);
  };
  // As forward_argmax: decode steps on a device are captured (ops::run_graph). There a row whose
  // every logit is masked comes back as id -1 instead of an error (ops.h), raised here.
  if (device_ != Device::kCpu && n < kGraphMaxTokens) {
    ops::run_graph(this, step);
    require_sampled(id);
  } else {
    step();
  }
  return id;
}

// On a device, a sampled row whose every logit is masked comes back as id -1 (ops.h sample / sample_device)
// instead of the CPU's error; raised here with the same message.
void DecoderModel::require_sampled(int32_t id) const {
  VLM_CHECK(id >= 0, ErrorKind::kInvalidArgument,
            "{}: sampling: every logit is -inf or NaN (were all tokens banned by logit_bias?)", spec_.family);
}

DecoderModel::~DecoderModel() {
  for (const auto& [ticket, slot] : queued_unread_) {
    try {
      ops::graph_wait(ticket);
    } catch (...) {  // a device fault already reported elsewhere; nothing to deliver into
    }
  }
}

void DecoderModel::begin_queued(int32_t id) {
  VLM_CHECK(id >= 0 && id < spec_.vocab_size, ErrorKind::kInvalidArgument,
            "{}: token id {} is outside the vocabulary [0, {})", spec_.family, id, spec_.vocab_size);
  ops::DeviceScope scope(device_);
  while (!queued_unread_.empty()) next_queued();  // steps an interrupted generation left unread
  if (!queued_ids_.defined()) queued_ids_ = ops::empty({2}, DType::kI32, MemCategory::kScratch, device_);
  queued_steps_ = 0;
  ops::copy(queued_ids_.data<int32_t>(), device_, &id, Device::kCpu, sizeof(int32_t));
}

void DecoderModel::queue_greedy(const Positions& positions, KVCache& cache) {
  queue_step(positions, cache, nullptr, 0.0);
}

void DecoderModel::queue_sample(const Positions& positions, KVCache& cache, const ops::SamplingSpec& spec, double u) {
  VLM_CHECK(!spec.reads_history(), ErrorKind::kInternal,
            "{}: queue_sample with penalties (they read the history the host does not have yet)", spec_.family);
  queue_step(positions, cache, &spec, u);
}

void DecoderModel::queue_step(const Positions& positions, KVCache& cache, const ops::SamplingSpec* spec, double u) {
  VLM_CHECK(queued_ids_.defined(), ErrorKind::kInternal, "{}: a decode step queued before begin_queued",
            spec_.family);
  VLM_CHECK(queued_unread_.size() < 2, ErrorKind::kInternal, "{}: more than two queued decode steps unread",
            spec_.family);
  ops::DeviceScope scope(device_);
  int32_t* ids = queued_ids_.data<int32_t>();
  const int32_t* in = ids + queued_steps_ % 2;
  int32_t* out = ids + (queued_steps_ + 1) % 2;
  const int slot = static_cast<int>(queued_steps_ % 4);
  int32_t* host = &queued_host_[slot];
  auto step = [&] {
    Tensor keep;
    const float* logits = run(nullptr, 1, positions, cache, ops::AttentionMask{}, 1, nullptr, keep, in);
    if (spec != nullptr)
      ops::sample_device(logits, spec_.vocab_size, *spec, nullptr, 0, u, out);
    else
      ops::argmax_device(logits, 1, spec_.vocab_size, out);
    // The host copy: under run_graph_async written at graph_wait (next_queued), else at once.
    ops::copy(host, Device::kCpu, out, device_, sizeof(int32_t));
  };
  // Its own graph keys: the step differs from forward_argmax's / forward_sample's (gather, argmax or sample on
  // the device), which the last prompt token runs, so sharing `this` would rebuild the executables every
  // generation.
  const void* key = reinterpret_cast<const char*>(this) + (spec != nullptr ? 2 : 1);
  const uint64_t ticket = device_ != Device::kCpu ? ops::run_graph_async(key, step) : (step(), uint64_t{0});
  ++queued_steps_;
  queued_unread_.emplace_back(ticket, slot);
}

int32_t DecoderModel::next_queued() {
  VLM_CHECK(!queued_unread_.empty(), ErrorKind::kInternal, "{}: next_queued: no decode step is queued", spec_.family);
  const auto [ticket, slot] = queued_unread_.front();
  queued_unread_.pop_front();
  ops::graph_wait(ticket);
  const int32_t id = queued_host_[slot];
  require_sampled(id);  // a sampled step whose every logit was masked (ops::sample_device on CUDA)
  return id;
}

float* DecoderModel::run(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                         const ops::AttentionMask& mask, int64_t rows, float* logits, Tensor& keep,
                         const int32_t* device_ids) {
  const DecoderSpec& s = spec_;
  VLM_CHECK(n > 0, ErrorKind::kInvalidArgument, "{}: forward needs at least one token", s.family);
  VLM_CHECK(positions.n == n && positions.data && (positions.dims == 1 || positions.dims == 3),
            ErrorKind::kInvalidArgument, "{}: positions must cover the {} new tokens (got n={}, dims={})", s.family, n,
            positions.n, positions.dims);
  VLM_CHECK(cache.num_layers() == static_cast<int>(layers_.size()), ErrorKind::kInvalidArgument,
            "{}: KV cache has {} layers, model has {}", s.family, cache.num_layers(), layers_.size());
  const int64_t h = s.hidden_size;
  const bool on_host = device_ == Device::kCpu;
  // Every op below runs on the model's device; on the CPU the scope only re-asserts the default.
  ops::DeviceScope scope(device_);
  // x: the residual stream; hx: the normalized input of the next block; r: a block's output.
  Tensor xb = scratch({n, h});
  float* x = xb.data<float>();
  if (device_ids != nullptr) {  // queued decode: the previous step's argmax, still on the device
    const bool copy = embed_device_.quantized || embed_device_.dense.defined();
    const ops::Weight& table = copy ? embed_device_ : *embed_;
    ops::embedding_device_ids(table, device_ids, n, spec_.embed_scale, x);
  } else {
    // The one upload per call; rows already on device_ (a multimodal prompt built there) are copied in place.
    VLM_CHECK(embeds.data != nullptr, ErrorKind::kInvalidArgument, "{}: forward needs its input embeddings", s.family);
    ops::copy(x, device_, embeds.data, embeds.device, sizeof(float) * n * h);
  }
  // bf16 models run attention's matmuls at bf16 on a device with tensor cores (ops.h AttentionMask).
  ops::AttentionMask m = mask;
  m.bf16_matmul = !on_host && !f32_weights_;
  const float eps = s.rms_norm_eps, off = s.norm_offset;
  // Not on the CPU: its backend composes the fused forms from the plain ops (a materialized norm, a
  // temporary and an add: one more pass per block than add_rms_norm), so they only cost there.
  // Prefill chunks take the fused forms where the device's GEMMs fold them in: dense 16-bit weights, whose
  // GEMM input is rounded by the norm kernel itself and whose residual add is the
  // GEMM epilogue's (CUDA linear_dense.cu dense_group_fused). Quantized and f32 weights would add through a
  // temporary and normalize through a materialized copy (ops.h's fallback), one more pass over [n, hidden]
  // per block than the separate add_rms_norm below.
  const Linear& first = s.fused_qkv ? layers_[0].qkv : layers_[0].q;
  const bool fused_prefill = prefill_fusion_enabled() && !f32_weights_ && !first.weight->quantized;
  if (!on_host && !s.sandwich_norms && !adapter_ && (n < kGraphMaxTokens || fused_prefill) && fusion_enabled()) {
    // Fused: the pre-norms are folded into the linears that read them and the residual adds into the
    // output projections (ops.h LinearOut), so the stream x is the only activation between blocks:
    // qkv(norm(x)) -> rope -> attention -> x += o_proj -> gate/up(norm(x)) -> act -> x += down_proj.
    for (int i = 0; i < static_cast<int>(layers_.size()); ++i) {
      const Layer& L = layers_[static_cast<size_t>(i)];
      const ops::LinearNorm input{&L.input_norm, eps, off}, post{&L.post_attn_norm, eps, off};
      attention_block(i, x, n, positions, cache, m, x, &input);
      mlp_block(i, x, n, x, &post);
    }
    if (!on_host || logits == nullptr) keep = scratch({rows, s.vocab_size});
    float* out = keep.defined() ? keep.data<float>() : logits;
    const ops::LinearNorm final_norm{&final_norm_, eps, off};
    run_linear(head_, x + (n - rows) * h, rows, out, &final_norm);  // "lm_head" of "model.norm"
    if (s.final_softcap > 0) ops::softcap(out, rows * s.vocab_size, s.final_softcap);
    return out;
  }
  Tensor hb = scratch({n, h}), rb = scratch({n, h});
  float *hx = hb.data<float>(), *r = rb.data<float>();
  ops::rms_norm(x, n, h, layers_[0].input_norm, eps, off, hx);  // layer 0's "input_layernorm"
  // Each residual add is fused with the norm that follows it: the feed-forward norm after attention,
  // the next layer's "input_layernorm" (or "model.norm" after the last layer) after the MLP.
  for (int i = 0; i < static_cast<int>(layers_.size()); ++i) {
    const Layer& L = layers_[static_cast<size_t>(i)];
    attention_block(i, hx, n, positions, cache, m, r);
    ops::add_rms_norm(x, r, n, h, s.sandwich_norms ? L.pre_ffn_norm : L.post_attn_norm, eps, off, hx);
    mlp_block(i, hx, n, r);
    const bool last_layer = i + 1 == static_cast<int>(layers_.size());
    ops::add_rms_norm(x, r, n, h, last_layer ? final_norm_ : layers_[static_cast<size_t>(i) + 1].input_norm, eps,
                      off, hx);
  }
  const float* last = hx + (n - rows) * h;  // already through "model.norm"
  if (!on_host || logits == nullptr) keep = scratch({rows, s.vocab_size});
  float* out = keep.defined() ? keep.data<float>() : logits;
  run_linear(head_, last, rows, out);  // "lm_head"
  if (s.final_softcap > 0) ops::softcap(out, rows * s.vocab_size, s.final_softcap);
  return out;
}

size_t DecoderModel::weight_bytes() const { return table_->weight_bytes() + (adapter_ ? adapter_->nbytes() : 0); }

}  // namespace vlm
