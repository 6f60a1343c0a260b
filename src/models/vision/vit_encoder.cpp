// ViTEncoder: CLIP, SigLIP and Idefics3's variable-grid SigLIP (transformers' modeling_clip.py,
// modeling_siglip.py, modeling_idefics3.py):
//
//   x = conv_PxP(pixels) (+ conv bias: SigLIP)          as one linear over patches flattened (c, y, x)
//   CLIP:   x = [class_embedding; x] + position_embedding[0..n]; x = pre_layrnorm(x)
//   SigLIP: x = x + position_embedding[0..n-1]
//   Idefics3: x = x + position_embedding[bucketed ids]  (padded patches: id 0, masked as keys)
//   per layer:  x += out_proj(attention(q_proj, k_proj, v_proj of layer_norm1(x)))   (bidirectional)
//               x += fc2(act(fc1(layer_norm2(x))))
//   hidden_states[i] = x after i layers (0 = embeddings); post_layernorm on request.
//
// Devices: the weights move with to_device / collect (vision_device.h); forward() then runs every op on device()
// under its own DeviceScope. Patches are cut from the host pixels and uploaded once; the class token and the
// intermediate hidden states are device copies, the masked keys of a partial Idefics3 tile one row gather.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "models/layers/decoder.h"
#include "models/vision/vision_common.h"
#include "models/vision/vision_device.h"
#include "models/vision/vision_encoder.h"
#include "models/vision/vision_weights.h"

namespace vlm {

using vision::Buffer;

std::string detect_prefix(const Checkpoint& checkpoint, const std::vector<std::string>& candidates,
                          const std::string& probe_suffix, const std::string& what) {
  for (const std::string& c : candidates) {
    if (checkpoint.has(c + probe_suffix)) return c;
  }
  std::vector<std::string> tried;
  for (const std::string& c : candidates) tried.push_back(c + probe_suffix);
  throw_error(ErrorKind::kNotFound, "{}: no vision tower found in {} (tried {})", what, checkpoint.folder(),
              join_names(tried));
}

std::vector<int32_t> bucketed_position_ids(const uint8_t* patch_mask, int64_t grid_h, int64_t grid_w,
                                           int64_t patches_per_side) {
  const int64_t n = grid_h * grid_w, side = patches_per_side;
  // Real rows / columns, counted as transformers does: down the first column, along the first row.
  int64_t nb_h = grid_h, nb_w = grid_w;
  if (patch_mask != nullptr) {
    nb_h = nb_w = 0;
    for (int64_t r = 0; r < grid_h; ++r) nb_h += patch_mask[r * grid_w] ? 1 : 0;
    for (int64_t c = 0; c < grid_w; ++c) nb_w += patch_mask[c] ? 1 : 0;
  }
  VLM_CHECK(nb_h > 0 && nb_w > 0, ErrorKind::kInvalidArgument,
            "[vision] patch mask has no real patch in its first row or column ({} x {})", nb_h, nb_w);
  // transformers: coordinate i * (1 / nb) clamped to 1 - 1e-6, bucketized (right=True) against the boundaries
  // arange(1/N, 1, 1/N), i.e. the number of k in 1..N-1 with k/N <= i/nb: floor(i * N / nb), at most N - 1. Done in
  // integers: the float32 evaluation agrees except where i * N / nb is a whole number and rounding decides, and
  // there the GPU (arange by FMA) gives the exact value, which is what this returns (full grids map to 0..N-1).
  auto bucket = [&](int64_t i, int64_t nb) { return std::min(side - 1, (i * side) / nb); };
  std::vector<int32_t> ids(static_cast<size_t>(n), 0);
  for (int64_t r = 0; r < grid_h; ++r) {
    for (int64_t c = 0; c < grid_w; ++c) {
      const int64_t i = r * grid_w + c;
      if (patch_mask != nullptr && !patch_mask[i]) continue;  // padded: keeps id 0
      ids[static_cast<size_t>(i)] = static_cast<int32_t>(bucket(r, nb_h) * side + bucket(c, nb_w));
    }
  }
  return ids;
}

namespace {

enum class VitKind { kClip, kSiglip, kVariableGrid };

struct VitLayer {
  Tensor ln1_w, ln1_b, ln2_w, ln2_b;
  ops::Weight q, k, v, o, fc1, fc2;
  Tensor q_b, k_b, v_b, o_b, fc1_b, fc2_b;
};

// pixels [3, h, w] -> patches [gh*gw, c*p*p], each row flattened (c, y, x) like a Conv2d weight.
void extract_patches(const float* pixels, int64_t channels, int64_t h, int64_t w, int64_t p, float* out) {
  const int64_t gh = h / p, gw = w / p, k = channels * p * p;
  for (int64_t py = 0; py < gh; ++py) {
    for (int64_t px = 0; px < gw; ++px) {
      float* row = out + (py * gw + px) * k;
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t y = 0; y < p; ++y) {
          std::memcpy(row + (c * p + y) * p, pixels + (c * h + py * p + y) * w + px * p,
                      static_cast<size_t>(p) * sizeof(float));
        }
      }
    }
  }
}

}  // namespace

struct ViTEncoder::Impl {
  VitKind kind = VitKind::kSiglip;
  std::string what;
  int64_t hidden = 0, inter = 0, n_layers_cfg = 0, heads = 0, head_dim = 0, patch = 0, channels = 3;
  int64_t side = 0;  // patches per side of the position grid (image_size / patch_size)
  float eps = 1e-6f;
  ops::Activation act = ops::Activation::kGeluTanh;

  ops::Weight patch_w;
  Tensor patch_b;
  ops::Weight pos_table;  // [n_positions, hidden]
  Tensor class_emb;       // CLIP: [hidden] f32
  Tensor pre_w, pre_b, post_w, post_b;
  std::vector<VitLayer> layers;
  size_t bytes = 0;
  Device device = Device::kCpu;
  bool f32_weights = true;  // every matrix dense f32: device attention stays exact f32

  void run_layer(const VitLayer& L, float* x, int64_t n, const std::vector<int32_t>& real_keys) const;
};

ViTEncoder::ViTEncoder(const Json& vision_config, const Checkpoint& checkpoint, const std::string& prefix,
                       int layers_needed, const std::string& what)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const Json& cfg = vision_config;
  VLM_CHECK(cfg.is_object(), ErrorKind::kFormat, "{}: vision_config must be an object", what);
  std::string model_type = json_string(cfg, "model_type", what).value_or("");
  if (model_type.empty()) {
    // Old configs without a type: CLIP is the tower with a class token.
    model_type = checkpoint.has(prefix + "embeddings.class_embedding") ? "clip_vision_model" : "siglip_vision_model";
  }
  m.what = fmt::format("{}: vision tower ({})", what, model_type);
  // Defaults are those of the transformers config classes, since Hub configs omit fields equal to them.
  int64_t d_hidden, d_inter, d_layers, d_heads, d_image, d_patch;
  std::string d_act;
  double d_eps;
  if (model_type == "clip_vision_model" || model_type == "clip") {
    m.kind = VitKind::kClip;
    d_hidden = 768, d_inter = 3072, d_layers = 12, d_heads = 12, d_image = 224, d_patch = 32;
    d_act = "quick_gelu", d_eps = 1e-5;
  } else if (model_type == "siglip_vision_model" || model_type == "siglip") {
    m.kind = VitKind::kSiglip;
    d_hidden = 768, d_inter = 3072, d_layers = 12, d_heads = 12, d_image = 224, d_patch = 16;
    d_act = "gelu_pytorch_tanh", d_eps = 1e-6;
  } else if (model_type == "idefics3_vision" || model_type == "idefics3" || model_type == "smolvlm_vision" ||
             model_type == "idefics2_vision" || model_type == "idefics2") {
    m.kind = VitKind::kVariableGrid;
    d_hidden = 1152, d_inter = 3072, d_layers = 12, d_heads = 16, d_image = 224, d_patch = 32;
    d_act = "gelu_pytorch_tanh", d_eps = 1e-6;
  } else {
    throw_error(ErrorKind::kUnsupported, "{}: vision tower model_type '{}' is not supported", what, model_type);
  }
  const std::string& w = m.what;
  m.hidden = vision::config_int(cfg, "hidden_size", d_hidden, w);
  m.inter = vision::config_int(cfg, "intermediate_size", d_inter, w);
  m.n_layers_cfg = vision::config_int(cfg, "num_hidden_layers", d_layers, w);
  m.heads = vision::config_int(cfg, "num_attention_heads", d_heads, w);
  m.patch = vision::config_int(cfg, "patch_size", d_patch, w);
  m.channels = vision::config_int(cfg, "num_channels", 3, w);
  m.eps = static_cast<float>(vision::config_number(cfg, "layer_norm_eps", d_eps, w));
  m.act = parse_activation(json_string(cfg, "hidden_act", w).value_or(d_act), w + " hidden_act");
  VLM_CHECK(m.hidden % m.heads == 0, ErrorKind::kFormat, "{}: hidden_size {} is not a multiple of {} heads", w,
            m.hidden, m.heads);
  m.head_dim = m.hidden / m.heads;

  // The position grid: from image_size when the config has it, else from the table's row count (PaliGemma's Hub
  // configs leave image_size at the class default while their tables are sized for 448/896 px).
  const int64_t extra = m.kind == VitKind::kClip ? 1 : 0;
  const std::string pos_name = prefix + "embeddings.position_embedding.weight";
  if (json_int(cfg, "image_size", w).has_value() || !checkpoint.has(pos_name)) {
    m.side = vision::config_int(cfg, "image_size", d_image, w) / m.patch;
  } else {
    const TensorInfo& info = checkpoint.info(pos_name);
    const int64_t rows = info.shape.empty() ? 0 : info.shape[0] - extra;
    m.side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(rows, 0)))));
    VLM_CHECK(m.side > 0 && m.side * m.side == rows, ErrorKind::kFormat,
              "{}: {} has {} rows, not a square patch grid{}", w, pos_name, rows + extra,
              extra ? " plus a class position" : "");
  }
  VLM_CHECK(m.side > 0, ErrorKind::kFormat, "{}: image_size is smaller than patch_size {}", w, m.patch);

  int n_load = static_cast<int>(m.n_layers_cfg);
  if (layers_needed >= 0) n_load = std::min(layers_needed, n_load);

  VisionWeights t(checkpoint, prefix, w);
  const int64_t D = m.hidden;
  m.patch_w = t.conv("embeddings.patch_embedding", D, m.channels, 1, m.patch);
  // CLIP's patch conv has no bias; SigLIP's has one.
  m.patch_b = t.tensor("embeddings.patch_embedding.bias", {D}, m.kind != VitKind::kClip);
  const int64_t n_pos = m.side * m.side + extra;
  m.pos_table.dense = t.tensor("embeddings.position_embedding.weight", {n_pos, D});
  if (m.kind == VitKind::kClip) {
    Tensor ce = t.tensor("embeddings.class_embedding", {D});
    if (ce.defined()) m.class_emb = ce.to_f32();
    m.pre_w = t.tensor("pre_layrnorm.weight", {D});
    m.pre_b = t.tensor("pre_layrnorm.bias", {D});
  }
  // post_layernorm: SigLIP's last_hidden_state needs it; LLaVA's CLIP feature layers do not, and Hub exports
  // of some towers omit it, so it is optional here and required only by forward(apply_post_layernorm).
  m.post_w = t.tensor("post_layernorm.weight", {D}, false);
  m.post_b = t.tensor("post_layernorm.bias", {D}, false);
  m.layers.resize(static_cast<size_t>(n_load));
  for (int i = 0; i < n_load; ++i) {
    VitLayer& L = m.layers[static_cast<size_t>(i)];
    const std::string p = fmt::format("encoder.layers.{}.", i);
    L.ln1_w = t.tensor(p + "layer_norm1.weight", {D});
    L.ln1_b = t.tensor(p + "layer_norm1.bias", {D});
    L.ln2_w = t.tensor(p + "layer_norm2.weight", {D});
    L.ln2_b = t.tensor(p + "layer_norm2.bias", {D});
    L.q = t.matrix(p + "self_attn.q_proj", D, D);
    L.q_b = t.tensor(p + "self_attn.q_proj.bias", {D});
    L.k = t.matrix(p + "self_attn.k_proj", D, D);
    L.k_b = t.tensor(p + "self_attn.k_proj.bias", {D});
    L.v = t.matrix(p + "self_attn.v_proj", D, D);
    L.v_b = t.tensor(p + "self_attn.v_proj.bias", {D});
    L.o = t.matrix(p + "self_attn.out_proj", D, D);
    L.o_b = t.tensor(p + "self_attn.out_proj.bias", {D});
    L.fc1 = t.matrix(p + "mlp.fc1", m.inter, D);
    L.fc1_b = t.tensor(p + "mlp.fc1.bias", {m.inter});
    L.fc2 = t.matrix(p + "mlp.fc2", D, m.inter);
    L.fc2_b = t.tensor(p + "mlp.fc2.bias", {D});
  }
  for (int64_t i = n_load; i < m.n_layers_cfg; ++i) t.allow_unused(fmt::format("encoder.layers.{}.", i));
  t.allow_unused("head.");                    // SigLIP's attention-pooling head (vision_use_head)
  t.allow_unused("embeddings.position_ids");  // a buffer older exports saved
  t.finish();
  m.bytes = t.bytes();
  m.f32_weights = vision::is_f32(m.patch_w);
  for (const VitLayer& L : m.layers) m.f32_weights = m.f32_weights && vision::is_f32(L.q) && vision::is_f32(L.fc1);
}

ViTEncoder::~ViTEncoder() = default;

Device ViTEncoder::device() const { return impl_->device; }

void ViTEncoder::collect(vision::DeviceMove& move) {
  Impl& m = *impl_;
  move.add(m.patch_w);
  move.add(m.patch_b);
  move.add(m.pos_table);
  for (Tensor* t : {&m.class_emb, &m.pre_w, &m.pre_b, &m.post_w, &m.post_b}) move.add(*t);
  for (VitLayer& L : m.layers) {
    for (ops::Weight* w : {&L.q, &L.k, &L.v, &L.o, &L.fc1, &L.fc2}) move.add(*w);
    for (Tensor* t : {&L.ln1_w, &L.ln1_b, &L.ln2_w, &L.ln2_b, &L.q_b, &L.k_b, &L.v_b, &L.o_b, &L.fc1_b, &L.fc2_b})
      move.add(*t);
  }
  move.add_device(m.device);
}

void ViTEncoder::to_device(Device device) {
  if (device == impl_->device) return;
  vision::DeviceMove move;
  collect(move);
  move.commit(device);
}

int64_t ViTEncoder::hidden_size() const { return impl_->hidden; }
int64_t ViTEncoder::patch_size() const { return impl_->patch; }
int64_t ViTEncoder::num_layers() const { return impl_->n_layers_cfg; }
size_t ViTEncoder::weight_bytes() const { return impl_->bytes; }

// One encoder layer in place on x [n, hidden] (on `device`, under its scope). `real_keys` (empty = all) lists the
// tokens that may be attended to (Idefics3's padded patches are masked as keys but still computed as queries, as
// transformers does).
void ViTEncoder::Impl::run_layer(const VitLayer& L, float* x, int64_t n, const std::vector<int32_t>& real_keys) const {
  const int64_t D = hidden;
  Buffer h(n, D, device), q(n, D, device), k(n, D, device), v(n, D, device), a(n, D, device);
  ops::layer_norm(x, n, D, L.ln1_w, L.ln1_b, eps, h.p);
  ops::linear(h.p, n, L.q, L.q_b, q.p);
  ops::linear(h.p, n, L.k, L.k_b, k.p);
  ops::linear(h.p, n, L.v, L.v_b, v.p);
  const float* kp = k.p;
  const float* vp = v.p;
  int64_t nk = n;
  Buffer kc, vc;
  if (!real_keys.empty()) {
    nk = static_cast<int64_t>(real_keys.size());
    kc = Buffer(nk, D, device);
    vc = Buffer(nk, D, device);
    vision::gather_rows(k.t, real_keys, kc.p);
    vision::gather_rows(v.t, real_keys, vc.p);
    kp = kc.p;
    vp = vc.p;
  }
  std::vector<int64_t> k_pos(static_cast<size_t>(nk));
  for (int64_t j = 0; j < nk; ++j) k_pos[static_cast<size_t>(j)] = j;
  ops::AttentionMask mask;
  mask.causal = false;
  // bf16 towers run attention's matmuls at bf16 on a device with tensor cores, as the decoder does.
  mask.bf16_matmul = device != Device::kCpu && !f32_weights;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  ops::attention(q.p, n, 0, kp, vp, k_pos.data(), nk, heads, heads, head_dim, scale, 0.0f, mask, a.p);
  ops::linear(a.p, n, L.o, L.o_b, h.p);
  ops::add(x, h.p, n * D);

  ops::layer_norm(x, n, D, L.ln2_w, L.ln2_b, eps, h.p);
  Buffer f(n, inter, device);
  ops::linear(h.p, n, L.fc1, L.fc1_b, f.p);
  ops::activate(f.p, n * inter, act);
  ops::linear(f.p, n, L.fc2, L.fc2_b, h.p);
  ops::add(x, h.p, n * D);
}

Tensor ViTEncoder::forward(const float* pixels, int64_t h, int64_t w, int layer, bool apply_post_layernorm,
                           const uint8_t* patch_mask) const {
  const Impl& m = *impl_;
  VLM_CHECK(!apply_post_layernorm || m.post_w.defined(), ErrorKind::kInvalidArgument,
            "{}: post_layernorm requested but the checkpoint has none", m.what);
  Tensor out = forward_layers(pixels, h, w, {layer}, patch_mask).front();
  if (apply_post_layernorm) {
    ops::DeviceScope scope(m.device);
    ops::layer_norm(out.data<float>(), out.dim(0), m.hidden, m.post_w, m.post_b, m.eps, out.data<float>());
  }
  return out;
}

std::vector<Tensor> ViTEncoder::forward_layers(const float* pixels, int64_t h, int64_t w,
                                               const std::vector<int>& layers, const uint8_t* patch_mask) const {
  const Impl& m = *impl_;
  VLM_CHECK(pixels != nullptr, ErrorKind::kInvalidArgument, "{}: no pixels", m.what);
  VLM_CHECK(!layers.empty(), ErrorKind::kInvalidArgument, "{}: no layer requested", m.what);
  VLM_CHECK(h > 0 && w > 0 && h % m.patch == 0 && w % m.patch == 0, ErrorKind::kInvalidArgument,
            "{}: image {}x{} is not a whole number of {}-pixel patches", m.what, h, w, m.patch);
  const int64_t gh = h / m.patch, gw = w / m.patch, n_patches = gh * gw;
  if (m.kind != VitKind::kVariableGrid) {
    // transformers raises here too unless interpolate_pos_encoding, which no supported VLM passes.
    VLM_CHECK(gh == m.side && gw == m.side, ErrorKind::kInvalidArgument,
              "{}: image is {}x{} pixels, the tower takes {}x{}", m.what, h, w, m.side * m.patch, m.side * m.patch);
    VLM_CHECK(patch_mask == nullptr, ErrorKind::kInvalidArgument, "{}: a patch mask needs a variable-grid tower",
              m.what);
  }
  // hidden_states indices (negative ones count from the end, as in transformers).
  const int64_t L_all = m.n_layers_cfg;
  std::vector<int64_t> wants;
  for (int layer : layers) {
    const int64_t want = layer < 0 ? L_all + 1 + layer : layer;
    VLM_CHECK(want >= 0 && want <= L_all, ErrorKind::kInvalidArgument,
              "{}: layer {} is outside hidden_states[0..{}]", m.what, layer, L_all);
    VLM_CHECK(want <= static_cast<int64_t>(m.layers.size()), ErrorKind::kInvalidArgument,
              "{}: layer {} needs {} encoder layers, only {} were loaded", m.what, layer, want, m.layers.size());
    wants.push_back(want);
  }
  const int64_t last = *std::max_element(wants.begin(), wants.end());

  const int64_t D = m.hidden, extra = m.kind == VitKind::kClip ? 1 : 0, n = n_patches + extra;
  const Device dev = m.device;
  ops::DeviceScope scope(dev);  // every op below runs on the tower's device
  Tensor state = vision::scratch(n, D, dev);
  float* x = state.data<float>();
  {
    // Cut on the host (the pixels are host floats), uploaded in one copy.
    Buffer patches(n_patches, m.channels * m.patch * m.patch, Device::kCpu);
    extract_patches(pixels, m.channels, h, w, m.patch, patches.p);
    const Tensor on_dev = vision::upload(patches.t, dev);
    ops::linear(on_dev.data<float>(), n_patches, m.patch_w, m.patch_b, x + extra * D);
  }
  std::vector<int32_t> pos(static_cast<size_t>(n));
  if (m.kind == VitKind::kVariableGrid) {
    pos = bucketed_position_ids(patch_mask, gh, gw, m.side);
  } else {
    for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  }
  if (extra) ops::copy(x, dev, m.class_emb.data<float>(), dev, static_cast<size_t>(D) * sizeof(float));
  {
    Buffer pe(n, D, dev);
    ops::embedding(m.pos_table, pos.data(), n, 1.0f, pe.p);
    ops::add(x, pe.p, n * D);
  }
  if (m.kind == VitKind::kClip) ops::layer_norm(x, n, D, m.pre_w, m.pre_b, m.eps, x);

  std::vector<int32_t> real_keys;
  if (patch_mask != nullptr) {
    for (int64_t i = 0; i < n_patches; ++i) {
      if (patch_mask[i]) real_keys.push_back(static_cast<int32_t>(i));
    }
    if (static_cast<int64_t>(real_keys.size()) == n_patches) real_keys.clear();  // nothing masked
  }
  // Earlier states are copied as they pass; the deepest is handed over (copies only for repeated indices).
  std::vector<Tensor> outs(wants.size());
  for (int64_t i = 0; i < last; ++i) {
    for (size_t j = 0; j < wants.size(); ++j) {
      if (wants[j] == i) outs[j] = vision::clone(state);
    }
    m.run_layer(m.layers[static_cast<size_t>(i)], x, n, real_keys);
  }
  bool handed = false;
  for (size_t j = 0; j < wants.size(); ++j) {
    if (wants[j] != last) continue;
    outs[j] = handed ? vision::clone(state) : state;
    handed = true;
  }
  return outs;
}

}  // namespace vlm
