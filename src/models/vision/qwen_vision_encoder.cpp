// QwenVisionEncoder: the Qwen2-VL and Qwen2.5-VL ViTs (transformers' modeling_qwen2_vl.py and
// modeling_qwen2_5_vl.py, Qwen2VisionTransformerPretrainedModel / Qwen2_5_VisionTransformerPretrainedModel):
//
//   x = Conv3d_{T,P,P}(patches)                 one linear: a patch row is already flattened (c, t, y, x)
//   Qwen2.5: rows regrouped by window: merge units (merge x merge patches) ordered window by window
//   per block:  x += proj(attention(rope2d(q), rope2d(k), v of qkv(norm1(x))))  within segments:
//                   one segment per frame (Qwen2-VL; Qwen2.5 fullatt_block_indexes), else one per window
//               x += mlp(norm2(x))          Qwen2-VL: LayerNorm, fc2(quick_gelu(fc1));
//                                           Qwen2.5: RMSNorm, down(silu(gate) * up), all with biases
//   merged = mlp.2(gelu(mlp.0(ln_q(x) viewed [n / merge², merge² * dim])))
//   Qwen2.5: merged rows put back in processor order (argsort of the window index)
//
// 2-D RoPE: head_dim/4 frequencies 1/10000^(2i/(head_dim/2)); a patch's first head_dim/4 rotary pairs turn with its
// row, the next head_dim/4 with its column (rotate_half convention) — ops::mrope with sections {hd/4, hd/4}.
//
// Devices: after to_device / collect (vision_device.h) forward() runs every op on device(). The patches are
// uploaded once; the window regrouping and its undoing are row gathers (one device op each); a dense qkv runs as
// a linear_group of its q, k and v row blocks; positions, spans and inv_freq stay host arrays, as ops.h wants.
//
// MLP width on a device: Qwen2.5-VL's intermediate_size 3420 makes down_proj's K (and its bf16 input's row pitch,
// 6840 bytes) a multiple of 8 bytes only, which keeps cuBLASLt off its 16-byte-aligned (TMA) kernels. to_device
// therefore pads gate/up (zero rows, zero bias) and down (zero columns) to a multiple of kMlpPad before the move:
// the extra gate/up outputs are 0, act(0) * 0 = 0 (any finite act), and down's zero columns add nothing, so the result is
// the unpadded one up to the GEMMs' summation order (~1 % more MLP FLOPs). The host copy of a tower never pads;
// VLMCHECK_VISION_MLP_PAD=0 turns the padding off.
//
// Row layout inside the blocks: every op of a block but attention treats rows independently, and full attention
// (non-causal, one frame) does not depend on the order of a frame's rows. So the blocks keep the rows of a frame's
// windows of one length interleaved, [len, count, dim] (row t * count + w = patch t of window w), which is what
// ops::attention takes for `count` windows as count * heads heads of `len` queries: one attention call per window
// length (at most four per frame: interior, right, bottom, corner) instead of one per window (~1000 calls per block
// for a 16k-token image). After the blocks, one gather puts the rows back in window order for the merger.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

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

namespace {

struct QwenBlock {
  Tensor n1_w, n1_b, n2_w, n2_b;  // biases: Qwen2-VL's LayerNorm only
  ops::Weight qkv, proj, fc1, fc2, gate, up, down;
  Tensor qkv_b, proj_b, fc1_b, fc2_b, gate_b, up_b, down_b;
  // A dense qkv as its q, k and v row blocks (views until to_device copies them; qkv itself is then left
  // empty): one linear_group writes q, k and v straight into their own buffers, instead of a [n, 3 * dim]
  // product split by three strided copies (~1 GB of extra traffic per block on a 16k-token photo).
  bool split = false;
  ops::Weight part[3];
  Tensor part_b[3];
};

// Rows [begin, begin + len * count) of the hidden state hold `count` attention segments of `len` patches each,
// interleaved: row begin + t * count + w is patch t of segment w ([len, count, dim]).
struct AttnSpan {
  int64_t begin = 0, len = 0, count = 1;
};

// A device tower's gated MLP width is padded to a multiple of this (see "MLP width on a device").
constexpr int64_t kMlpPad = 64;

// Largest count * heads of one attention call (the CUDA kernels put heads on a grid dimension of at most 65535).
constexpr int64_t kMaxSpanHeads = 32768;

}  // namespace

struct QwenVisionEncoder::Impl {
  std::string what;
  bool v25 = false;  // Qwen2.5-VL block flavour and window attention
  int64_t dim = 0, out = 0, inter = 0, depth = 0, heads = 0, head_dim = 0;
  int64_t mlp_width = 0;  // the gated MLP's width as stored: inter, or inter padded on a device (to_device)
  int64_t patch = 14, temporal = 2, merge = 2, channels = 3, window = 0;
  std::vector<int64_t> full_blocks;
  double theta = 10000.0;
  ops::Activation act = ops::Activation::kQuickGelu;
  static constexpr float kEps = 1e-6f;  // every norm in both towers

  ops::Weight patch_w;
  std::vector<QwenBlock> blocks;
  Tensor ln_q_w, ln_q_b;
  ops::Weight mlp0, mlp2;
  Tensor mlp0_b, mlp2_b;
  std::vector<float> inv_freq;  // [head_dim / 2]: the head_dim/4 frequencies twice (row half, column half)
  size_t bytes = 0;
  Device device = Device::kCpu;
  bool f32_weights = true;  // every matrix dense f32: device attention stays exact f32

  void norm(const float* x, int64_t n, const Tensor& w, const Tensor& b, float* y) const {
    if (v25) {
      ops::rms_norm(x, n, dim, w, kEps, 0.0f, y);
    } else {
      ops::layer_norm(x, n, dim, w, b, kEps, y);
    }
  }
  void pad_gated_mlp(int64_t width);
  void run_block(const QwenBlock& B, float* x, int64_t n, const int64_t* positions3,
                 const std::vector<AttnSpan>& spans) const;
};

QwenVisionEncoder::QwenVisionEncoder(const Json& vision_config, const std::string& model_type,
                                     const Checkpoint& checkpoint, const std::string& prefix, const std::string& what)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const Json& cfg = vision_config;
  VLM_CHECK(cfg.is_object(), ErrorKind::kFormat, "{}: vision_config must be an object", what);
  if (model_type == "qwen2_5_vl") {
    m.v25 = true;
  } else {
    VLM_CHECK(model_type == "qwen2_vl", ErrorKind::kUnsupported,
              "{}: the Qwen vision tower supports qwen2_vl and qwen2_5_vl, not '{}'", what, model_type);
  }
  m.what = fmt::format("{}: vision tower ({})", what, model_type);
  const std::string& w = m.what;
  m.depth = vision::config_int(cfg, "depth", 32, w);
  m.heads = vision::config_int(cfg, "num_heads", 16, w);
  m.patch = vision::config_int(cfg, "patch_size", 14, w);
  m.temporal = vision::config_int(cfg, "temporal_patch_size", 2, w);
  m.merge = vision::config_int(cfg, "spatial_merge_size", 2, w);
  m.channels = vision::config_int_any(cfg, {"in_channels", "in_chans"}, 3, w);
  if (m.v25) {
    // Qwen2_5_VLVisionConfig: hidden_size is the ViT width, out_hidden_size the language model's.
    m.dim = vision::config_int(cfg, "hidden_size", 3584, w);
    m.out = vision::config_int(cfg, "out_hidden_size", 3584, w);
    m.inter = vision::config_int(cfg, "intermediate_size", 3420, w);
    m.mlp_width = m.inter;
    m.window = vision::config_int(cfg, "window_size", 112, w);
    m.act = parse_activation(json_string(cfg, "hidden_act", w).value_or("silu"), w + " hidden_act");
    const Json* fb = json_find(cfg, "fullatt_block_indexes");
    if (fb == nullptr || fb->is_null()) {
      m.full_blocks = {7, 15, 23, 31};  // the config class default
    } else {
      VLM_CHECK(fb->is_array(), ErrorKind::kFormat, "{}: fullatt_block_indexes must be a list of integers", w);
      for (const Json& v : *fb) {
        VLM_CHECK(v.is_number_integer(), ErrorKind::kFormat, "{}: fullatt_block_indexes must be integers", w);
        m.full_blocks.push_back(v.get<int64_t>());
      }
    }
    VLM_CHECK(m.window / m.merge / m.patch > 0, ErrorKind::kFormat,
              "{}: window_size {} is smaller than one merge unit ({} x {} px)", w, m.window, m.merge, m.patch);
  } else {
    // Qwen2VLVisionConfig: embed_dim is the ViT width, hidden_size the language model's.
    m.dim = vision::config_int(cfg, "embed_dim", 1280, w);
    m.out = vision::config_int(cfg, "hidden_size", 3584, w);
    const double ratio = vision::config_number(cfg, "mlp_ratio", 4.0, w);
    m.inter = static_cast<int64_t>(static_cast<double>(m.dim) * ratio);  // int(dim * mlp_ratio), as transformers
    m.act = parse_activation(json_string(cfg, "hidden_act", w).value_or("quick_gelu"), w + " hidden_act");
  }
  // transformers 5 writes the tower's RoPE as rope_parameters {"rope_theta", "rope_type": "axial"}; older configs
  // have neither and use VisionRotaryEmbedding's theta of 10000.
  if (const Json* rp = json_find(cfg, "rope_parameters"); rp != nullptr && rp->is_object()) {
    m.theta = vision::config_number(*rp, "rope_theta", 10000.0, w + " rope_parameters");
    const std::string type = json_string(*rp, "rope_type", w).value_or("axial");
    VLM_CHECK(type == "axial" || type == "default", ErrorKind::kUnsupported,
              "{}: vision rope_type '{}' is not supported (axial only)", w, type);
  } else {
    m.theta = vision::config_number(cfg, "rope_theta", 10000.0, w);
  }
  VLM_CHECK(m.dim % m.heads == 0 && (m.dim / m.heads) % 4 == 0, ErrorKind::kFormat,
            "{}: width {} over {} heads does not give a head_dim divisible by 4 (2-D RoPE)", w, m.dim, m.heads);
  m.head_dim = m.dim / m.heads;

  const int64_t D = m.dim, unit = m.merge * m.merge, merged = D * unit;
  VisionWeights t(checkpoint, prefix, w);
  m.patch_w = t.conv("patch_embed.proj", D, m.channels, m.temporal, m.patch);
  m.blocks.resize(static_cast<size_t>(m.depth));
  for (int64_t i = 0; i < m.depth; ++i) {
    QwenBlock& B = m.blocks[static_cast<size_t>(i)];
    const std::string p = fmt::format("blocks.{}.", i);
    B.n1_w = t.tensor(p + "norm1.weight", {D});
    B.n2_w = t.tensor(p + "norm2.weight", {D});
    if (!m.v25) {
      B.n1_b = t.tensor(p + "norm1.bias", {D});
      B.n2_b = t.tensor(p + "norm2.bias", {D});
    }
    B.qkv = t.matrix(p + "attn.qkv", 3 * D, D);
    B.qkv_b = t.tensor(p + "attn.qkv.bias", {3 * D});
    if (!B.qkv.quantized) {
      B.split = true;
      for (int64_t s = 0; s < 3; ++s) {
        B.part[s].dense = B.qkv.dense.slice_rows(s * D, (s + 1) * D);
        B.part_b[s] = B.qkv_b.slice_rows(s * D, (s + 1) * D);
      }
      B.qkv = ops::Weight();
      B.qkv_b = Tensor();
    }
    B.proj = t.matrix(p + "attn.proj", D, D);
    B.proj_b = t.tensor(p + "attn.proj.bias", {D});
    if (m.v25) {
      B.gate = t.matrix(p + "mlp.gate_proj", m.inter, D);
      B.gate_b = t.tensor(p + "mlp.gate_proj.bias", {m.inter});
      B.up = t.matrix(p + "mlp.up_proj", m.inter, D);
      B.up_b = t.tensor(p + "mlp.up_proj.bias", {m.inter});
      B.down = t.matrix(p + "mlp.down_proj", D, m.inter);
      B.down_b = t.tensor(p + "mlp.down_proj.bias", {D});
    } else {
      B.fc1 = t.matrix(p + "mlp.fc1", m.inter, D);
      B.fc1_b = t.tensor(p + "mlp.fc1.bias", {m.inter});
      B.fc2 = t.matrix(p + "mlp.fc2", D, m.inter);
      B.fc2_b = t.tensor(p + "mlp.fc2.bias", {D});
    }
  }
  m.ln_q_w = t.tensor("merger.ln_q.weight", {D});
  if (!m.v25) m.ln_q_b = t.tensor("merger.ln_q.bias", {D});
  m.mlp0 = t.matrix("merger.mlp.0", merged, merged);
  m.mlp0_b = t.tensor("merger.mlp.0.bias", {merged});
  m.mlp2 = t.matrix("merger.mlp.2", m.out, merged);
  m.mlp2_b = t.tensor("merger.mlp.2.bias", {m.out});
  t.finish();
  m.bytes = t.bytes();
  m.f32_weights = vision::is_f32(m.patch_w) && vision::is_f32(m.mlp0);
  for (const QwenBlock& B : m.blocks) m.f32_weights = m.f32_weights && vision::is_f32(B.split ? B.part[0] : B.qkv);

  // VisionRotaryEmbedding(head_dim / 2): inv_freq = 1 / theta^(arange(0, dim, 2) / dim), float32.
  const int64_t rdim = m.head_dim / 2, quarter = m.head_dim / 4;
  m.inv_freq.resize(static_cast<size_t>(2 * quarter));
  for (int64_t i = 0; i < quarter; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(rdim);
    const float f = 1.0f / std::pow(static_cast<float>(m.theta), e);
    m.inv_freq[static_cast<size_t>(i)] = m.inv_freq[static_cast<size_t>(quarter + i)] = f;
  }
}

QwenVisionEncoder::~QwenVisionEncoder() = default;

int64_t QwenVisionEncoder::out_hidden_size() const { return impl_->out; }
int64_t QwenVisionEncoder::spatial_merge_size() const { return impl_->merge; }
size_t QwenVisionEncoder::weight_bytes() const { return impl_->bytes; }
Device QwenVisionEncoder::device() const { return impl_->device; }

void QwenVisionEncoder::collect(vision::DeviceMove& move) {
  Impl& m = *impl_;
  for (ops::Weight* w : {&m.patch_w, &m.mlp0, &m.mlp2}) move.add(*w);
  for (Tensor* t : {&m.ln_q_w, &m.ln_q_b, &m.mlp0_b, &m.mlp2_b}) move.add(*t);
  for (QwenBlock& B : m.blocks) {
    for (ops::Weight* w : {&B.qkv, &B.part[0], &B.part[1], &B.part[2], &B.proj, &B.fc1, &B.fc2, &B.gate, &B.up,
                           &B.down}) {
      if (w->quantized || w->dense.defined()) move.add(*w);  // the other flavour's MLP (or qkv form) is empty
    }
    for (Tensor* t : {&B.n1_w, &B.n1_b, &B.n2_w, &B.n2_b, &B.qkv_b, &B.part_b[0], &B.part_b[1], &B.part_b[2],
                      &B.proj_b, &B.fc1_b, &B.fc2_b, &B.gate_b, &B.up_b, &B.down_b})
      move.add(*t);
  }
  move.add_device(m.device);
}

namespace {

// `rows` x `cols` of the host matrix `src` [src_rows, src_cols] copied into the top-left corner of a zeroed
// [rows, cols] matrix of its dtype (a vector when cols == 0: src [src_rows] into [rows]).
Tensor zero_padded(const Tensor& src, int64_t rows, int64_t cols) {
  const bool vec = cols == 0;
  const int64_t src_rows = src.dim(0), src_cols = vec ? 1 : src.dim(1);
  Tensor dst = Tensor::zeros(vec ? Shape{rows} : Shape{rows, cols}, src.dtype(), MemCategory::kWeights);
  const size_t es = dtype_size(src.dtype()), row_bytes = static_cast<size_t>(src_cols) * es;
  const size_t dst_pitch = static_cast<size_t>(vec ? 1 : cols) * es;
  const auto* s = static_cast<const uint8_t*>(src.raw());
  auto* d = static_cast<uint8_t*>(dst.raw());
  for (int64_t r = 0; r < src_rows; ++r) std::memcpy(d + r * dst_pitch, s + r * row_bytes, row_bytes);
  return dst;
}

}  // namespace

// The gated MLP of every block widened to `width` >= inter with zeros (host weights, before a move): gate/up
// [width, dim] + bias [width], down [dim, width]. A quantized or absent member leaves the tower as it is.
void QwenVisionEncoder::Impl::pad_gated_mlp(int64_t width) {
  if (!v25 || width <= mlp_width || device != Device::kCpu) return;
  for (const QwenBlock& B : blocks) {
    for (const ops::Weight* w : {&B.gate, &B.up, &B.down}) {
      if (w->quantized || !w->dense.defined() || !w->dense.is_contiguous()) return;
    }
    for (const Tensor* b : {&B.gate_b, &B.up_b}) {
      if (!b->defined() || !b->is_contiguous()) return;
    }
  }
  for (QwenBlock& B : blocks) {
    B.gate.dense = zero_padded(B.gate.dense, width, dim);
    B.up.dense = zero_padded(B.up.dense, width, dim);
    B.down.dense = zero_padded(B.down.dense, dim, width);
    B.gate_b = zero_padded(B.gate_b, width, 0);
    B.up_b = zero_padded(B.up_b, width, 0);
  }
  mlp_width = width;
}

void QwenVisionEncoder::to_device(Device device) {
  if (device == impl_->device) return;
  // An unusable device is refused (with the backend's reason) before anything is padded; a move that fails later
  // (out of device memory) leaves the padded host weights in place: the same function (see "MLP width on a
  // device"). VLMCHECK_VISION_MLP_PAD=0 keeps the stored width (same-binary A/B of the padding).
  static const bool pad = [] {
    const char* v = std::getenv("VLMCHECK_VISION_MLP_PAD");
    return v == nullptr || std::string(v) != "0";
  }();
  if (device != Device::kCpu && pad) {
    { ops::DeviceScope probe(device); }
    impl_->pad_gated_mlp((impl_->inter + kMlpPad - 1) / kMlpPad * kMlpPad);
  }
  vision::DeviceMove move;
  collect(move);
  move.commit(device);
}

// One block in place on x [n, dim]; `spans` cover the rows with the attention segments (tokens attend only within
// their segment).
void QwenVisionEncoder::Impl::run_block(const QwenBlock& B, float* x, int64_t n, const int64_t* positions3,
                                        const std::vector<AttnSpan>& spans) const {
  const int64_t D = dim;
  // On a device, a Qwen2.5-VL block of dense 16-bit weights runs its norms and residual adds inside the linears
  // (ops.h LinearOut: norm, accumulate): norm1 feeds q/k/v and norm2 gate/up as the GEMMs' input rounding, and
  // proj and down_proj add into x in their epilogue. The same values as below up to the order of x + W·a + b;
  // on a 16k-token photo it skips ~2 GB of f32 passes per block (h, its conversions, the add kernels).
  bool fused = v25 && B.split && device != Device::kCpu && !f32_weights;
  for (const ops::Weight* w : {&B.part[0], &B.proj, &B.gate, &B.up, &B.down})
    fused = fused && !w->quantized && w->dense.defined() && w->dense.dtype() != DType::kF32;
  const ops::LinearNorm n1{&B.n1_w, kEps, 0.0f}, n2{&B.n2_w, kEps, 0.0f};
  Buffer h, q(n, D, device), k(n, D, device), v(n, D, device), a(n, D, device);
  if (!fused) {
    h = Buffer(n, D, device);
    norm(x, n, B.n1_w, B.n1_b, h.p);
  }
  if (fused) {
    const ops::LinearOut outs[3] = {{&B.part[0], &B.part_b[0], q.p, false, &n1},
                                    {&B.part[1], &B.part_b[1], k.p, false, &n1},
                                    {&B.part[2], &B.part_b[2], v.p, false, &n1}};
    ops::linear_group(x, n, outs, 3);  // q/k/v of norm1(x)
  } else if (B.split) {
    const ops::LinearOut outs[3] = {{&B.part[0], &B.part_b[0], q.p}, {&B.part[1], &B.part_b[1], k.p},
                                    {&B.part[2], &B.part_b[2], v.p}};
    ops::linear_group(h.p, n, outs, 3);
  } else {
    // qkv rows are (3, heads, head_dim): split into contiguous q, k, v [n, heads, head_dim], then freed (large
    // images have tens of thousands of patches).
    Buffer qkv(n, 3 * D, device);
    ops::linear(h.p, n, B.qkv, B.qkv_b, qkv.p);
    const size_t row = static_cast<size_t>(D) * sizeof(float);
    ops::copy_2d(q.p, row, qkv.p, 3 * row, row, static_cast<size_t>(n));
    ops::copy_2d(k.p, row, qkv.p + D, 3 * row, row, static_cast<size_t>(n));
    ops::copy_2d(v.p, row, qkv.p + 2 * D, 3 * row, row, static_cast<size_t>(n));
  }
  const std::vector<int> sections = {static_cast<int>(head_dim / 4), static_cast<int>(head_dim / 4)};
  ops::mrope(q.p, n, heads, head_dim, inv_freq.data(), positions3, sections);
  ops::mrope(k.p, n, heads, head_dim, inv_freq.data(), positions3, sections);
  ops::AttentionMask mask;
  mask.causal = false;
  // bf16 towers run attention's matmuls at bf16 on a device with tensor cores, as the decoder does.
  mask.bf16_matmul = device != Device::kCpu && !f32_weights;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  int64_t longest = 0;
  for (const AttnSpan& sp : spans) longest = std::max(longest, sp.len);
  std::vector<int64_t> k_pos(static_cast<size_t>(longest));
  for (int64_t j = 0; j < longest; ++j) k_pos[static_cast<size_t>(j)] = j;
  for (const AttnSpan& sp : spans) {
    // q/k/v rows of the span: [len, count, heads, head_dim] = [len, count * heads, head_dim].
    const int64_t b = sp.begin, h = sp.count * heads;
    ops::attention(q.p + b * D, sp.len, 0, k.p + b * D, v.p + b * D, k_pos.data(), sp.len, h, h, head_dim, scale,
                   0.0f, mask, a.p + b * D);
  }
  const int64_t width = v25 ? mlp_width : inter;
  if (fused) {
    q = Buffer();
    k = Buffer();
    v = Buffer();
    const ops::LinearOut proj{&B.proj, &B.proj_b, x, true, nullptr};
    ops::linear_group(a.p, n, &proj, 1);  // x += proj(a)
    a = Buffer();
    Buffer f(n, width, device), u(n, width, device);
    const ops::LinearOut outs[2] = {{&B.gate, &B.gate_b, f.p, false, &n2}, {&B.up, &B.up_b, u.p, false, &n2}};
    ops::linear_group(x, n, outs, 2);  // gate/up of norm2(x)
    ops::gated_activate(f.p, u.p, n * width, act);
    const ops::LinearOut down{&B.down, &B.down_b, x, true, nullptr};
    ops::linear_group(f.p, n, &down, 1);  // x += down_proj(act(gate) · up)
    return;
  }
  ops::linear(a.p, n, B.proj, B.proj_b, h.p);
  if (v25) {
    ops::add_rms_norm(x, h.p, n, D, B.n2_w, kEps, 0.0f, h.p);  // x += proj; h = norm2(x): one pass over x
  } else {
    ops::add(x, h.p, n * D);
    norm(x, n, B.n2_w, B.n2_b, h.p);
  }
  Buffer f(n, width, device);
  if (v25) {
    Buffer u(n, width, device);
    // One group: on the GPU h is rounded to bf16 once for both GEMMs.
    const ops::LinearOut outs[2] = {{&B.gate, &B.gate_b, f.p}, {&B.up, &B.up_b, u.p}};
    ops::linear_group(h.p, n, outs, 2);
    ops::gated_activate(f.p, u.p, n * width, act);
    ops::linear(f.p, n, B.down, B.down_b, h.p);
  } else {
    ops::linear(h.p, n, B.fc1, B.fc1_b, f.p);
    ops::activate(f.p, n * inter, act);
    ops::linear(f.p, n, B.fc2, B.fc2_b, h.p);
  }
  ops::add(x, h.p, n * D);
}

Tensor QwenVisionEncoder::forward(const Tensor& patches, int64_t grid_t, int64_t grid_h, int64_t grid_w,
                                  Tensor* last_hidden) const {
  const Impl& m = *impl_;
  const int64_t k_in = m.channels * m.temporal * m.patch * m.patch;
  VLM_CHECK(grid_t > 0 && grid_h > 0 && grid_w > 0 && grid_h % m.merge == 0 && grid_w % m.merge == 0,
            ErrorKind::kInvalidArgument, "{}: grid {}x{}x{} is not a positive multiple of spatial_merge_size {}",
            m.what, grid_t, grid_h, grid_w, m.merge);
  const int64_t n = grid_t * grid_h * grid_w;
  VLM_CHECK(patches.defined() && patches.dtype() == DType::kF32 && patches.is_contiguous() && patches.ndim() == 2 &&
                patches.dim(0) == n && patches.dim(1) == k_in,
            ErrorKind::kInvalidArgument, "{}: patches must be f32[{}, {}] for grid {}x{}x{}, got {}", m.what, n, k_in,
            grid_t, grid_h, grid_w, patches.defined() ? patches.describe() : std::string("nothing"));
  const int64_t D = m.dim, unit = m.merge * m.merge, n_units = n / unit;
  const int64_t units_h = grid_h / m.merge, units_w = grid_w / m.merge;

  // Row (y) and column (x) of every patch. The processor orders patches (t, y/merge, x/merge, y%merge, x%merge).
  std::vector<int64_t> row(static_cast<size_t>(n)), col(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t local = i % (grid_h * grid_w), u = local / unit, within = local % unit;
    row[static_cast<size_t>(i)] = (u / units_w) * m.merge + within / m.merge;
    col[static_cast<size_t>(i)] = (u % units_w) * m.merge + within % m.merge;
  }

  // The order blocks see merge units in (window_index) and the attention segments, in patch rows.
  std::vector<int64_t> order(static_cast<size_t>(n_units));
  std::vector<int64_t> frames = {0}, windows = {0};
  for (int64_t f = 1; f <= grid_t; ++f) frames.push_back(f * grid_h * grid_w);
  if (m.v25) {
    const int64_t ws = m.window / m.merge / m.patch;  // window side in merge units
    // transformers pads each side up to the next multiple of ws, always adding padding (a whole empty window row
    // when already a multiple); empty windows are dropped by unique_consecutive, as here.
    const int64_t nwh = units_h / ws + 1, nww = units_w / ws + 1;
    int64_t next = 0;
    for (int64_t f = 0; f < grid_t; ++f) {
      for (int64_t wh = 0; wh < nwh; ++wh) {
        for (int64_t ww = 0; ww < nww; ++ww) {
          int64_t count = 0;
          for (int64_t a = 0; a < ws; ++a) {
            for (int64_t b = 0; b < ws; ++b) {
              const int64_t r = wh * ws + a, c = ww * ws + b;
              if (r >= units_h || c >= units_w) continue;
              order[static_cast<size_t>(next++)] = f * units_h * units_w + r * units_w + c;
              ++count;
            }
          }
          if (count > 0) windows.push_back(windows.back() + count * unit);
        }
      }
    }
    VLM_CHECK(next == n_units, ErrorKind::kInternal, "{}: window index covers {} of {} merge units", m.what, next,
              n_units);
  } else {
    for (int64_t j = 0; j < n_units; ++j) order[static_cast<size_t>(j)] = j;
  }

  // The blocks' row layout (AttnSpan): per frame, its windows grouped by length (first-seen order), each group
  // interleaved [len, count]. block_row[r] is the window-order row (merge unit order[j]'s patches at j * unit ...)
  // that row r holds. Qwen2-VL has no windows: one span per frame, rows in window (= processor) order.
  std::vector<int64_t> block_row(static_cast<size_t>(n));
  std::vector<AttnSpan> frame_spans, window_spans;
  for (size_t f = 0; f + 1 < frames.size(); ++f) frame_spans.push_back({frames[f], frames[f + 1] - frames[f], 1});
  if (m.v25) {
    const int64_t max_count = std::max<int64_t>(kMaxSpanHeads / m.heads, 1);
    int64_t next = 0;
    size_t w = 0;  // windows[w] .. windows[w + 1]: the next window, in window order
    for (size_t f = 0; f + 1 < frames.size(); ++f) {
      std::vector<std::pair<int64_t, std::vector<int64_t>>> by_len;  // (len, window starts), first-seen order
      for (; w + 1 < windows.size() && windows[w] < frames[f + 1]; ++w) {
        const int64_t b = windows[w], len = windows[w + 1] - b;
        auto it = std::find_if(by_len.begin(), by_len.end(), [&](const auto& g) { return g.first == len; });
        if (it == by_len.end()) it = by_len.insert(by_len.end(), {len, {}});
        it->second.push_back(b);
      }
      for (const auto& [len, starts] : by_len) {
        for (size_t c0 = 0; c0 < starts.size(); c0 += static_cast<size_t>(max_count)) {
          const int64_t count = std::min<int64_t>(max_count, static_cast<int64_t>(starts.size() - c0));
          window_spans.push_back({next, len, count});
          for (int64_t t = 0; t < len; ++t) {
            for (size_t c = c0; c < c0 + static_cast<size_t>(count); ++c) {
              block_row[static_cast<size_t>(next++)] = starts[c] + t;
            }
          }
        }
      }
    }
    VLM_CHECK(next == n, ErrorKind::kInternal, "{}: window spans cover {} of {} patches", m.what, next, n);
  } else {
    for (int64_t r = 0; r < n; ++r) block_row[static_cast<size_t>(r)] = r;
  }

  // Patch embedding (processor order), then one gather into the blocks' layout: row r takes the processor row of
  // window-order row block_row[r] (merge unit order[j] became unit j).
  const Device dev = m.device;
  ops::DeviceScope scope(dev);  // every op below runs on the tower's device
  Buffer embedded(n, D, dev);
  {
    const Tensor on_dev = vision::upload(patches, dev);
    ops::linear(on_dev.data<float>(), n, m.patch_w, Tensor(), embedded.p);
  }
  Buffer blocks_x(n, D, dev);
  float* x = blocks_x.p;
  std::vector<int64_t> positions3(static_cast<size_t>(3 * n), 0);  // rows: y, x, unused
  {
    std::vector<int32_t> src32(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      const int64_t wr = block_row[static_cast<size_t>(r)];
      const int64_t src = order[static_cast<size_t>(wr / unit)] * unit + wr % unit;
      src32[static_cast<size_t>(r)] = static_cast<int32_t>(src);
      positions3[static_cast<size_t>(r)] = row[static_cast<size_t>(src)];
      positions3[static_cast<size_t>(n + r)] = col[static_cast<size_t>(src)];
    }
    vision::gather_rows(embedded.t, src32, x);
  }
  embedded = Buffer();

  for (int64_t i = 0; i < m.depth; ++i) {
    const bool full =
        !m.v25 || std::find(m.full_blocks.begin(), m.full_blocks.end(), i) != m.full_blocks.end();
    m.run_block(m.blocks[static_cast<size_t>(i)], x, n, positions3.data(), full ? frame_spans : window_spans);
  }
  // Back to window order (row block_row[r] of hidden is row r of x): the merger's units are consecutive rows there.
  Tensor hidden = vision::scratch(n, D, dev);
  {
    std::vector<int32_t> inv32(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      inv32[static_cast<size_t>(block_row[static_cast<size_t>(r)])] = static_cast<int32_t>(r);
    }
    vision::gather_rows(blocks_x.t, inv32, hidden.data<float>());
  }
  blocks_x = Buffer();
  x = hidden.data<float>();
  if (last_hidden != nullptr) *last_hidden = vision::clone(hidden);

  // Merger: norm every patch, then each merge unit's rows concatenated into one row [unit * D].
  m.norm(x, n, m.ln_q_w, m.ln_q_b, x);
  Buffer mid(n_units, unit * D, dev);
  ops::linear(x, n_units, m.mlp0, m.mlp0_b, mid.p);
  ops::activate(mid.p, n_units * unit * D, ops::Activation::kGeluErf);
  Buffer merged(n_units, m.out, dev);
  ops::linear(mid.p, n_units, m.mlp2, m.mlp2_b, merged.p);
  // Back to processor order: unit order[j] is merged row j, so row u of the output is merged row j with
  // order[j] == u (the inverse permutation, one gather).
  std::vector<int32_t> back(static_cast<size_t>(n_units));
  for (int64_t j = 0; j < n_units; ++j) {
    back[static_cast<size_t>(order[static_cast<size_t>(j)])] = static_cast<int32_t>(j);
  }
  Tensor out = vision::scratch(n_units, m.out, dev);
  vision::gather_rows(merged.t, back, out.data<float>());
  return out;
}

}  // namespace vlm
