// Vision towers against an independent reference: tiny random-weight checkpoints written here, and a
// straightforward double-precision forward pass written with plain loops from the transformers modules (direct
// convolution over the image, explicit softmax attention with masks instead of reordering/segments). Also: MLX
// channels-last convolutions equal PyTorch layout, Idefics3 position bucketing, layer selection, and the loading
// errors (missing / mis-shaped / unused tensors named in one error, quantized towers refused).
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "models/vision/vision_encoder.h"
#include "support/test_support.h"

namespace vlm {
namespace {

using Vec = std::vector<double>;

// ---- a tiny checkpoint: values kept (as stored, after bf16 rounding) for the reference -------------------------

struct Param {
  Shape shape;
  std::vector<float> values;  // exactly what the file holds, as f32
};

class TinyCheckpoint {
 public:
  explicit TinyCheckpoint(uint32_t seed) : rng_(seed) {}
  // Random values ~ U(-scale, scale) (+ offset: norm weights around 1).
  const std::vector<float>& add(const std::string& name, const Shape& shape, float scale, float offset = 0.0f,
                                DType dtype = DType::kF32) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (float& x : v) x = offset + u(rng_);
    if (dtype == DType::kBF16) {
      for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
    }
    params_[name] = {shape, v};
    dtypes_[name] = dtype;
    return params_[name].values;
  }
  // A tensor stored with another shape/layout than the reference reads (MLX convolutions, broken files).
  void add_raw(const std::string& name, const Shape& shape, const std::vector<float>& values) {
    raw_[name] = {shape, values};
  }
  void remove(const std::string& name) { params_.erase(name); }
  const std::vector<float>& get(const std::string& name) const { return params_.at(name).values; }
  bool has(const std::string& name) const { return params_.count(name) > 0; }
  std::string write(const test::TempDir& dir) const {
    SafetensorsWriter w;
    for (const auto& [name, p] : params_) {
      if (raw_.count(name)) continue;
      Tensor t = Tensor::from_f32(p.shape, p.values);
      w.add(name, dtypes_.at(name) == DType::kF32 ? t : t.to(dtypes_.at(name)));
    }
    for (const auto& [name, p] : raw_) w.add(name, Tensor::from_f32(p.shape, p.values));
    w.write(dir / "model.safetensors");
    return dir.path();
  }

 private:
  std::mt19937 rng_;
  std::map<std::string, Param> params_, raw_;
  std::map<std::string, DType> dtypes_;
};

std::vector<float> random_pixels(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.5f, 1.5f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// ---- reference math (double) ---------------------------------------------------------------------------------

// y[n, out] = x[n, in] W^T + b
Vec ref_linear(const Vec& x, int64_t n, const std::vector<float>& W, const std::vector<float>* b, int64_t out) {
  const int64_t in = static_cast<int64_t>(x.size()) / n;
  Vec y(static_cast<size_t>(n * out));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double s = b ? (*b)[static_cast<size_t>(o)] : 0.0;
      for (int64_t c = 0; c < in; ++c) s += x[static_cast<size_t>(i * in + c)] * W[static_cast<size_t>(o * in + c)];
      y[static_cast<size_t>(i * out + o)] = s;
    }
  }
  return y;
}

Vec ref_layer_norm(const Vec& x, int64_t d, const std::vector<float>& w, const std::vector<float>* b, double eps) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size() / static_cast<size_t>(d); ++i) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < d; ++c) mean += x[i * d + c];
    mean /= static_cast<double>(d);
    for (int64_t c = 0; c < d; ++c) var += (x[i * d + c] - mean) * (x[i * d + c] - mean);
    var /= static_cast<double>(d);
    for (int64_t c = 0; c < d; ++c) {
      y[i * d + c] = (x[i * d + c] - mean) / std::sqrt(var + eps) * w[c] + (b ? (*b)[c] : 0.0);
    }
  }
  return y;
}

Vec ref_rms_norm(const Vec& x, int64_t d, const std::vector<float>& w, double eps) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size() / static_cast<size_t>(d); ++i) {
    double ms = 0;
    for (int64_t c = 0; c < d; ++c) ms += x[i * d + c] * x[i * d + c];
    ms /= static_cast<double>(d);
    for (int64_t c = 0; c < d; ++c) y[i * d + c] = x[i * d + c] / std::sqrt(ms + eps) * w[c];
  }
  return y;
}

double act(const std::string& name, double x) {
  if (name == "quick_gelu") return x / (1.0 + std::exp(-1.702 * x));
  if (name == "gelu_pytorch_tanh") {
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  if (name == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (name == "silu") return x / (1.0 + std::exp(-x));
  ADD_FAILURE() << "unknown activation " << name;
  return 0;
}

// Multi-head softmax attention over [n, heads*hd] rows; visible(i, j) decides which keys query i sees.
template <typename Visible>
Vec ref_attention(const Vec& q, const Vec& k, const Vec& v, int64_t n, int64_t heads, int64_t hd, Visible visible) {
  Vec out(static_cast<size_t>(n * heads * hd), 0.0);
  const int64_t D = heads * hd;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> s(static_cast<size_t>(n), -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        if (!visible(i, j)) continue;
        double dot = 0;
        for (int64_t c = 0; c < hd; ++c) dot += q[i * D + h * hd + c] * k[j * D + h * hd + c];
        s[j] = dot / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx);
      for (int64_t j = 0; j < n; ++j) {
        if (std::isinf(s[j])) continue;
        const double p = std::exp(s[j] - mx) / sum;
        for (int64_t c = 0; c < hd; ++c) out[i * D + h * hd + c] += p * v[j * D + h * hd + c];
      }
    }
  }
  return out;
}

void expect_close(const Tensor& got, const Vec& want, double rel, const std::string& what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  double max_abs = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(static_cast<double>(got.data<float>()[i]) - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  EXPECT_LE(max_abs, rel * max_ref) << what << ": max |diff| " << max_abs << " vs max |ref| " << max_ref;
}

// ---- ViT (CLIP / SigLIP / Idefics3) --------------------------------------------------------------------------

struct VitShape {
  std::string model_type;
  int64_t D = 32, heads = 4, inter = 48, layers = 3, patch = 4, side = 4, channels = 3;
  std::string act = "quick_gelu";
  double eps = 1e-5;
  bool clip() const { return model_type == "clip_vision_model"; }
  Json config() const {
    return Json{{"model_type", model_type},      {"hidden_size", D},          {"num_attention_heads", heads},
                {"intermediate_size", inter},     {"num_hidden_layers", layers}, {"patch_size", patch},
                {"image_size", side * patch},     {"hidden_act", act},         {"layer_norm_eps", eps}};
  }
};

void add_vit_weights(TinyCheckpoint& ck, const VitShape& s, const std::string& p, DType dt = DType::kF32) {
  const int64_t D = s.D;
  ck.add(p + "embeddings.patch_embedding.weight", {D, s.channels, s.patch, s.patch}, 0.2f, 0.0f, dt);
  if (!s.clip()) ck.add(p + "embeddings.patch_embedding.bias", {D}, 0.1f, 0.0f, dt);
  ck.add(p + "embeddings.position_embedding.weight", {s.side * s.side + (s.clip() ? 1 : 0), D}, 0.5f, 0.0f, dt);
  if (s.clip()) {
    ck.add(p + "embeddings.class_embedding", {D}, 0.5f, 0.0f, dt);
    ck.add(p + "pre_layrnorm.weight", {D}, 0.2f, 1.0f, dt);
    ck.add(p + "pre_layrnorm.bias", {D}, 0.1f, 0.0f, dt);
  }
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string q = p + "encoder.layers." + std::to_string(l) + ".";
    for (const char* n : {"layer_norm1", "layer_norm2"}) {
      ck.add(q + n + ".weight", {D}, 0.2f, 1.0f, dt);
      ck.add(q + n + ".bias", {D}, 0.1f, 0.0f, dt);
    }
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      ck.add(q + "self_attn." + n + ".weight", {D, D}, 0.3f, 0.0f, dt);
      ck.add(q + "self_attn." + n + ".bias", {D}, 0.1f, 0.0f, dt);
    }
    ck.add(q + "mlp.fc1.weight", {s.inter, D}, 0.3f, 0.0f, dt);
    ck.add(q + "mlp.fc1.bias", {s.inter}, 0.1f, 0.0f, dt);
    ck.add(q + "mlp.fc2.weight", {D, s.inter}, 0.3f, 0.0f, dt);
    ck.add(q + "mlp.fc2.bias", {D}, 0.1f, 0.0f, dt);
  }
  ck.add(p + "post_layernorm.weight", {D}, 0.2f, 1.0f, dt);
  ck.add(p + "post_layernorm.bias", {D}, 0.1f, 0.0f, dt);
}

// transformers' vision tower, literally: Conv2d over the image, embeddings, encoder layers, hidden_states[layer].
// `pos` gives each patch's position id (null: 0..n-1, CLIP: class token at 0); `mask` marks real patches (keys).
Vec ref_vit(const TinyCheckpoint& ck, const VitShape& s, const std::string& p, const std::vector<float>& pix,
            int64_t gh, int64_t gw, int layer, bool post, const std::vector<int32_t>* pos = nullptr,
            const std::vector<uint8_t>* mask = nullptr) {
  const int64_t D = s.D, P = s.patch, H = gh * P, W = gw * P, extra = s.clip() ? 1 : 0, n = gh * gw + extra;
  const auto& cw = ck.get(p + "embeddings.patch_embedding.weight");
  const auto& pe = ck.get(p + "embeddings.position_embedding.weight");
  Vec x(static_cast<size_t>(n * D), 0.0);
  for (int64_t py = 0; py < gh; ++py) {
    for (int64_t px = 0; px < gw; ++px) {
      const int64_t t = extra + py * gw + px;
      for (int64_t o = 0; o < D; ++o) {
        double acc = s.clip() ? 0.0 : ck.get(p + "embeddings.patch_embedding.bias")[o];
        for (int64_t c = 0; c < s.channels; ++c)
          for (int64_t y = 0; y < P; ++y)
            for (int64_t xx = 0; xx < P; ++xx)
              acc += cw[((o * s.channels + c) * P + y) * P + xx] * pix[(c * H + py * P + y) * W + px * P + xx];
        x[t * D + o] = acc;
      }
    }
  }
  if (s.clip()) {
    for (int64_t o = 0; o < D; ++o) x[o] = ck.get(p + "embeddings.class_embedding")[o];
  }
  for (int64_t t = 0; t < n; ++t) {
    const int64_t id = pos ? (*pos)[t] : t;
    for (int64_t o = 0; o < D; ++o) x[t * D + o] += pe[id * D + o];
  }
  if (s.clip()) x = ref_layer_norm(x, D, ck.get(p + "pre_layrnorm.weight"), &ck.get(p + "pre_layrnorm.bias"), s.eps);
  const int want = layer < 0 ? static_cast<int>(s.layers) + 1 + layer : layer;
  for (int l = 0; l < want; ++l) {
    const std::string q = p + "encoder.layers." + std::to_string(l) + ".";
    auto lin = [&](const Vec& in, const std::string& m, int64_t out) {
      return ref_linear(in, n, ck.get(q + m + ".weight"), &ck.get(q + m + ".bias"), out);
    };
    Vec h = ref_layer_norm(x, D, ck.get(q + "layer_norm1.weight"), &ck.get(q + "layer_norm1.bias"), s.eps);
    Vec a = ref_attention(lin(h, "self_attn.q_proj", D), lin(h, "self_attn.k_proj", D), lin(h, "self_attn.v_proj", D),
                          n, s.heads, D / s.heads,
                          [&](int64_t, int64_t j) { return mask == nullptr || (*mask)[static_cast<size_t>(j)]; });
    Vec o = lin(a, "self_attn.out_proj", D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    h = ref_layer_norm(x, D, ck.get(q + "layer_norm2.weight"), &ck.get(q + "layer_norm2.bias"), s.eps);
    Vec f = lin(h, "mlp.fc1", s.inter);
    for (double& v : f) v = act(s.act, v);
    o = lin(f, "mlp.fc2", D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  }
  if (post) x = ref_layer_norm(x, D, ck.get(p + "post_layernorm.weight"), &ck.get(p + "post_layernorm.bias"), s.eps);
  return x;
}

constexpr double kTol = 2e-5;  // f32 engine vs double reference, relative to the largest |value|

TEST(VisionEncoder, ClipMatchesReferenceAtEveryLayer) {
  VitShape s;
  s.model_type = "clip_vision_model";
  TinyCheckpoint ck(1);
  add_vit_weights(ck, s, "vision_tower.vision_model.");
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kEager);
  const std::string prefix =
      detect_prefix(cp, {"vision_tower.", "vision_tower.vision_model."}, "embeddings.patch_embedding.weight", "t");
  EXPECT_EQ(prefix, "vision_tower.vision_model.");
  ViTEncoder enc(s.config(), cp, prefix, -1, "clip");
  EXPECT_EQ(enc.hidden_size(), 32);
  EXPECT_EQ(enc.num_layers(), 3);
  const auto pix = random_pixels(3 * 16 * 16, 7);
  for (int layer : {0, 1, -2, -1}) {
    Tensor got = enc.forward(pix.data(), 16, 16, layer, false);
    EXPECT_EQ(got.shape(), (Shape{17, 32}));  // class token + 4x4 patches
    expect_close(got, ref_vit(ck, s, prefix, pix, 4, 4, layer, false), kTol, "clip layer " + std::to_string(layer));
  }
  expect_close(enc.forward(pix.data(), 16, 16, -1, true), ref_vit(ck, s, prefix, pix, 4, 4, -1, true), kTol,
               "clip post_layernorm");
}

TEST(VisionEncoder, ClipLoadsOnlyTheLayersNeeded) {
  VitShape s;
  s.model_type = "clip_vision_model";
  TinyCheckpoint ck(2);
  add_vit_weights(ck, s, "model.vision_tower.");
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kLazy);
  ViTEncoder full(s.config(), cp, "model.vision_tower.", -1, "clip");
  ViTEncoder part(s.config(), cp, "model.vision_tower.", 2, "clip");  // LLaVA: vision_feature_layer -2
  EXPECT_LT(part.weight_bytes(), full.weight_bytes());
  const auto pix = random_pixels(3 * 16 * 16, 8);
  Tensor a = full.forward(pix.data(), 16, 16, -2, false), b = part.forward(pix.data(), 16, 16, -2, false);
  ASSERT_EQ(a.numel(), b.numel());
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]);
  try {
    part.forward(pix.data(), 16, 16, -1, false);
    FAIL() << "the last layer was not loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("only 2 were loaded"), std::string::npos) << e.what();
  }
  // Several layers from one pass equal separate passes, in the order asked (repeats included).
  std::vector<Tensor> many = full.forward_layers(pix.data(), 16, 16, {-1, 0, -2, 3, 1});
  ASSERT_EQ(many.size(), 5u);
  const std::vector<int> single = {-1, 0, -2, 3, 1};
  for (size_t j = 0; j < single.size(); ++j) {
    Tensor one = full.forward(pix.data(), 16, 16, single[j], false);
    ASSERT_EQ(many[j].shape(), one.shape());
    for (int64_t i = 0; i < one.numel(); ++i) ASSERT_EQ(many[j].data<float>()[i], one.data<float>()[i]) << j;
  }
  EXPECT_NE(many[0].data<float>(), many[3].data<float>());  // a repeated index is its own copy
  // Wrong image size: the tower has a fixed 4x4 grid.
  EXPECT_THROW(full.forward(pix.data(), 12, 12, -1, false), Error);
}

TEST(VisionEncoder, SiglipBf16WeightsAndMlxConvolutionMatchReference) {
  VitShape s;
  s.model_type = "siglip_vision_model";
  s.act = "gelu_pytorch_tanh";
  s.eps = 1e-6;
  TinyCheckpoint ck(3);
  add_vit_weights(ck, s, "vision_tower.vision_model.", DType::kBF16);
  // Gemma 3 / PaliGemma towers carry no head; a SigLIP pooling head must be tolerated when present.
  ck.add("vision_tower.vision_model.head.probe", {1, 1, s.D}, 0.1f);
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kEager);
  ViTEncoder enc(s.config(), cp, "vision_tower.vision_model.", -1, "siglip");
  const auto pix = random_pixels(3 * 16 * 16, 9);
  Tensor hf = enc.forward(pix.data(), 16, 16, -1, true);
  EXPECT_EQ(hf.shape(), (Shape{16, 32}));
  expect_close(hf, ref_vit(ck, s, "vision_tower.vision_model.", pix, 4, 4, -1, true), kTol, "siglip bf16");

  // The same weights with the patch convolution stored channels-last [O, kH, kW, I] (mlx-vlm's conversion).
  const auto& w = ck.get("vision_tower.vision_model.embeddings.patch_embedding.weight");
  std::vector<float> nhwc(w.size());
  for (int64_t o = 0; o < s.D; ++o)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 4; ++y)
        for (int64_t x = 0; x < 4; ++x) nhwc[((o * 4 + y) * 4 + x) * 3 + c] = w[((o * 3 + c) * 4 + y) * 4 + x];
  ck.add_raw("vision_tower.vision_model.embeddings.patch_embedding.weight", {s.D, 4, 4, 3}, nhwc);
  test::TempDir dir2;
  Checkpoint cp2 = Checkpoint::open(ck.write(dir2), LoadMode::kEager);
  ViTEncoder mlx(s.config(), cp2, "vision_tower.vision_model.", -1, "siglip-mlx");
  Tensor got = mlx.forward(pix.data(), 16, 16, -1, true);
  // f32 copy of bf16 values: the product terms are identical, so any difference is summation order only.
  expect_close(got, ref_vit(ck, s, "vision_tower.vision_model.", pix, 4, 4, -1, true), kTol, "siglip mlx layout");
}

TEST(VisionEncoder, IdeficsBucketedPositions) {
  // Full grids map one to one; smaller grids spread over the N x N table (floor(i * N / nb)).
  std::vector<int32_t> full = bucketed_position_ids(nullptr, 4, 4, 4);
  for (int32_t i = 0; i < 16; ++i) EXPECT_EQ(full[static_cast<size_t>(i)], i);
  EXPECT_EQ(bucketed_position_ids(nullptr, 2, 2, 4), (std::vector<int32_t>{0, 2, 8, 10}));
  // 3 real rows of a 4-row grid (i * 4 / 3 = 0, 1, 2), 2 real columns of 3 (0, 2); padding keeps id 0.
  std::vector<uint8_t> mask = {1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0};
  EXPECT_EQ(bucketed_position_ids(mask.data(), 4, 3, 4),
            (std::vector<int32_t>{0, 2, 0, 4, 6, 0, 8, 10, 0, 0, 0, 0}));
  // SmolVLM-like: 32 x 32 table, a 32 x 24 image -> columns i * 32 / 24.
  std::vector<int32_t> wide = bucketed_position_ids(nullptr, 32, 24, 32);
  EXPECT_EQ(wide[1], 1);   // 32/24 = 1.33
  EXPECT_EQ(wide[3], 4);   // exactly 4: the boundary itself counts (right=True)
  EXPECT_EQ(wide[23], 30); // 23 * 32 / 24 = 30.67
  EXPECT_EQ(wide[24], 32); // row 1
  std::vector<uint8_t> empty(12, 0);
  EXPECT_THROW(bucketed_position_ids(empty.data(), 4, 3, 4), Error);
}

TEST(VisionEncoder, IdeficsPaddedPatchesAreComputedButMaskedAsKeys) {
  VitShape s;
  s.model_type = "idefics3_vision";
  s.act = "gelu_pytorch_tanh";
  s.eps = 1e-6;
  TinyCheckpoint ck(4);
  add_vit_weights(ck, s, "model.vision_model.");
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kEager);
  ViTEncoder enc(s.config(), cp, "model.vision_model.", -1, "idefics3");
  // A 16 x 12 tile (4 x 3 patches) whose last row and column of patches are padding (zero pixels).
  std::vector<float> pix = random_pixels(3 * 16 * 12, 10);
  std::vector<uint8_t> mask(12);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 3; ++c) mask[r * 3 + c] = (r < 3 && c < 2) ? 1 : 0;
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t y = 0; y < 16; ++y)
      for (int64_t x = 0; x < 12; ++x)
        if (y >= 12 || x >= 8) pix[(ch * 16 + y) * 12 + x] = 0.0f;
  const std::vector<int32_t> pos = {0, 2, 0, 4, 6, 0, 8, 10, 0, 0, 0, 0};
  Tensor got = enc.forward(pix.data(), 16, 12, -1, true, mask.data());
  EXPECT_EQ(got.shape(), (Shape{12, 32}));
  expect_close(got, ref_vit(ck, s, "model.vision_model.", pix, 4, 3, -1, true, &pos, &mask), kTol, "idefics3 mask");
  // Without a mask every patch is real: the 4 x 3 grid is bucketed over the 4 x 4 table.
  std::vector<int32_t> pos_all = bucketed_position_ids(nullptr, 4, 3, 4);
  expect_close(enc.forward(pix.data(), 16, 12, 2, false),
               ref_vit(ck, s, "model.vision_model.", pix, 4, 3, 2, false, &pos_all), kTol, "idefics3 no mask");
}

TEST(VisionEncoder, PositionGridFromTheTableWhenConfigHasNoImageSize) {
  // PaliGemma's Hub configs omit image_size (class default 224) while the table is sized for the real input: the
  // grid comes from the table's row count then.
  VitShape s;
  s.model_type = "siglip_vision_model";
  s.act = "gelu_pytorch_tanh";
  TinyCheckpoint ck(17);
  add_vit_weights(ck, s, "vision_tower.");
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kEager);
  Json cfg = s.config();
  cfg.erase("image_size");
  ViTEncoder enc(cfg, cp, "vision_tower.", -1, "no image_size");
  const auto pix = random_pixels(3 * 16 * 16, 18);
  expect_close(enc.forward(pix.data(), 16, 16, -1, true), ref_vit(ck, s, "vision_tower.", pix, 4, 4, -1, true), kTol,
               "siglip grid from table");
  // With image_size present, a table of another size is a mis-shaped tensor.
  Json wrong = s.config();
  wrong["image_size"] = 20;
  EXPECT_THROW(ViTEncoder(wrong, cp, "vision_tower.", -1, "wrong image_size"), Error);
}

// ---- loading errors --------------------------------------------------------------------------------------------

TEST(VisionEncoder, EveryMissingMisshapedAndUnusedTensorInOneError) {
  VitShape s;
  s.model_type = "siglip_vision_model";
  TinyCheckpoint ck(5);
  add_vit_weights(ck, s, "vision_tower.");
  ck.remove("vision_tower.encoder.layers.1.mlp.fc2.bias");
  ck.remove("vision_tower.encoder.layers.2.self_attn.k_proj.weight");
  ck.add_raw("vision_tower.encoder.layers.0.mlp.fc1.weight", {s.inter, s.D + 1}, std::vector<float>(48 * 33));
  ck.add("vision_tower.encoder.layers.3.mlp.fc1.weight", {4, 4}, 0.1f);  // a layer the config does not have
  ck.add("language_model.model.norm.weight", {8}, 0.1f);                 // not the tower's: ignored
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kLazy);
  try {
    ViTEncoder enc(s.config(), cp, "vision_tower.", -1, "tiny");
    FAIL() << "loaded a broken tower";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << m;
    EXPECT_NE(m.find("missing: "), std::string::npos) << m;
    EXPECT_NE(m.find("vision_tower.encoder.layers.1.mlp.fc2.bias"), std::string::npos) << m;
    EXPECT_NE(m.find("vision_tower.encoder.layers.2.self_attn.k_proj.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("vision_tower.encoder.layers.0.mlp.fc1.weight: expected float[48, 32], got f32[48, 33]"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("unused: vision_tower.encoder.layers.3.mlp.fc1.weight"), std::string::npos) << m;
    EXPECT_EQ(m.find("language_model"), std::string::npos) << m;
  }
}

TEST(VisionEncoder, QuantizedTowerAndUnknownPrefixAreRefused) {
  VitShape s;
  s.model_type = "siglip_vision_model";
  TinyCheckpoint ck(6);
  add_vit_weights(ck, s, "vision_tower.vision_model.");
  ck.add("vision_tower.vision_model.encoder.layers.0.mlp.fc1.scales", {s.inter, 1}, 0.1f);
  ck.add("vision_tower.vision_model.encoder.layers.0.mlp.fc1.biases", {s.inter, 1}, 0.1f);
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kLazy);
  try {
    ViTEncoder enc(s.config(), cp, "vision_tower.vision_model.", -1, "tiny");
    FAIL() << "loaded a quantized tower";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("encoder.layers.0.mlp.fc1"), std::string::npos) << e.what();
  }
  try {
    detect_prefix(cp, {"visual.", "model.visual."}, "patch_embed.proj.weight", "tiny");
    FAIL() << "found a tower that is not there";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("visual.patch_embed.proj.weight, model.visual.patch_embed.proj.weight"),
              std::string::npos)
        << e.what();
  }
  Json bad = s.config();
  bad["model_type"] = "pixtral";
  EXPECT_THROW(ViTEncoder(bad, cp, "vision_tower.vision_model.", -1, "tiny"), Error);
}

// ---- Qwen2-VL / Qwen2.5-VL -------------------------------------------------------------------------------------

struct QwenShape {
  bool v25 = false;
  int64_t D = 32, heads = 2, inter = 40, depth = 3, patch = 2, T = 2, merge = 2, out = 24, window = 8;
  std::vector<int64_t> full = {1};
  Json config() const {
    if (v25) {
      return Json{{"depth", depth},           {"hidden_size", D},        {"num_heads", heads},
                  {"intermediate_size", inter}, {"out_hidden_size", out}, {"patch_size", patch},
                  {"temporal_patch_size", T},   {"spatial_merge_size", merge}, {"in_chans", 3},
                  {"window_size", window},      {"fullatt_block_indexes", full}, {"hidden_act", "silu"}};
    }
    return Json{{"depth", depth}, {"embed_dim", D},          {"hidden_size", out},        {"num_heads", heads},
                {"mlp_ratio", 1.25}, {"patch_size", patch}, {"temporal_patch_size", T},
                {"spatial_merge_size", merge}, {"in_channels", 3}, {"hidden_act", "quick_gelu"}};
  }
};

void add_qwen_weights(TinyCheckpoint& ck, const QwenShape& s, const std::string& p) {
  const int64_t D = s.D, M = D * s.merge * s.merge;
  ck.add(p + "patch_embed.proj.weight", {D, 3, s.T, s.patch, s.patch}, 0.3f);
  for (int64_t b = 0; b < s.depth; ++b) {
    const std::string q = p + "blocks." + std::to_string(b) + ".";
    for (const char* n : {"norm1", "norm2"}) {
      ck.add(q + n + ".weight", {D}, 0.2f, 1.0f);
      if (!s.v25) ck.add(q + n + ".bias", {D}, 0.1f);
    }
    ck.add(q + "attn.qkv.weight", {3 * D, D}, 0.3f);
    ck.add(q + "attn.qkv.bias", {3 * D}, 0.1f);
    ck.add(q + "attn.proj.weight", {D, D}, 0.3f);
    ck.add(q + "attn.proj.bias", {D}, 0.1f);
    if (s.v25) {
      for (const char* n : {"gate_proj", "up_proj"}) {
        ck.add(q + "mlp." + n + ".weight", {s.inter, D}, 0.3f);
        ck.add(q + "mlp." + n + ".bias", {s.inter}, 0.1f);
      }
      ck.add(q + "mlp.down_proj.weight", {D, s.inter}, 0.3f);
      ck.add(q + "mlp.down_proj.bias", {D}, 0.1f);
    } else {
      ck.add(q + "mlp.fc1.weight", {s.inter, D}, 0.3f);
      ck.add(q + "mlp.fc1.bias", {s.inter}, 0.1f);
      ck.add(q + "mlp.fc2.weight", {D, s.inter}, 0.3f);
      ck.add(q + "mlp.fc2.bias", {D}, 0.1f);
    }
  }
  ck.add(p + "merger.ln_q.weight", {D}, 0.2f, 1.0f);
  if (!s.v25) ck.add(p + "merger.ln_q.bias", {D}, 0.1f);
  ck.add(p + "merger.mlp.0.weight", {M, M}, 0.2f);
  ck.add(p + "merger.mlp.0.bias", {M}, 0.1f);
  ck.add(p + "merger.mlp.2.weight", {s.out, M}, 0.2f);
  ck.add(p + "merger.mlp.2.bias", {s.out}, 0.1f);
}

// Where each processor row lies in the image: the processor emits patches (t, y/merge, x/merge, y%merge, x%merge).
struct PatchPlace {
  int64_t t, y, x;
};
std::vector<PatchPlace> processor_order(int64_t gt, int64_t gh, int64_t gw, int64_t m) {
  std::vector<PatchPlace> v;
  for (int64_t t = 0; t < gt; ++t)
    for (int64_t by = 0; by < gh / m; ++by)
      for (int64_t bx = 0; bx < gw / m; ++bx)
        for (int64_t y = 0; y < m; ++y)
          for (int64_t x = 0; x < m; ++x) v.push_back({t, by * m + y, bx * m + x});
  return v;
}

// The Qwen ViT in processor order, window attention as an explicit mask (same frame and same window of
// window/patch pixels), RoPE as cos/sin of (row, column) angles. Returns the merger output; `pre` gets the last
// block's output in processor order.
Vec ref_qwen(const TinyCheckpoint& ck, const QwenShape& s, const std::string& p, const std::vector<float>& patches,
             int64_t gt, int64_t gh, int64_t gw, Vec* pre) {
  const int64_t D = s.D, n = gt * gh * gw, hd = D / s.heads, unit = s.merge * s.merge;
  const std::vector<PatchPlace> place = processor_order(gt, gh, gw, s.merge);
  Vec in(patches.begin(), patches.end());
  Vec x = ref_linear(in, n, ck.get(p + "patch_embed.proj.weight"), nullptr, D);
  const int64_t win = s.window / s.patch;  // window side in patches
  auto visible_full = [&](int64_t i, int64_t j) { return place[i].t == place[j].t; };
  auto visible_win = [&](int64_t i, int64_t j) {
    return place[i].t == place[j].t && place[i].y / win == place[j].y / win && place[i].x / win == place[j].x / win;
  };
  auto rope = [&](Vec& v) {
    const int64_t q4 = hd / 4;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < s.heads; ++h) {
        double* r = v.data() + i * D + h * hd;
        for (int64_t f = 0; f < hd / 2; ++f) {
          const double inv = 1.0 / std::pow(10000.0, static_cast<double>(2 * (f % q4)) / static_cast<double>(hd / 2));
          const double ang = static_cast<double>(f < q4 ? place[i].y : place[i].x) * inv;
          const double a = r[f], b = r[f + hd / 2];
          r[f] = a * std::cos(ang) - b * std::sin(ang);
          r[f + hd / 2] = b * std::cos(ang) + a * std::sin(ang);
        }
      }
    }
  };
  for (int64_t b = 0; b < s.depth; ++b) {
    const std::string q = p + "blocks." + std::to_string(b) + ".";
    auto norm = [&](const Vec& v, const char* nm) {
      return s.v25 ? ref_rms_norm(v, D, ck.get(q + nm + ".weight"), 1e-6)
                   : ref_layer_norm(v, D, ck.get(q + nm + ".weight"), &ck.get(q + nm + ".bias"), 1e-6);
    };
    auto lin = [&](const Vec& v, const std::string& m, int64_t out) {
      return ref_linear(v, n, ck.get(q + m + ".weight"), &ck.get(q + m + ".bias"), out);
    };
    Vec qkv = lin(norm(x, "norm1"), "attn.qkv", 3 * D);
    Vec qq(static_cast<size_t>(n * D)), kk(qq.size()), vv(qq.size());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < D; ++c) {
        qq[i * D + c] = qkv[i * 3 * D + c];
        kk[i * D + c] = qkv[i * 3 * D + D + c];
        vv[i * D + c] = qkv[i * 3 * D + 2 * D + c];
      }
    rope(qq);
    rope(kk);
    const bool full = !s.v25 || std::find(s.full.begin(), s.full.end(), b) != s.full.end();
    Vec a = full ? ref_attention(qq, kk, vv, n, s.heads, hd, visible_full)
                 : ref_attention(qq, kk, vv, n, s.heads, hd, visible_win);
    Vec o = lin(a, "attn.proj", D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    Vec h = norm(x, "norm2");
    if (s.v25) {
      Vec g = lin(h, "mlp.gate_proj", s.inter), u = lin(h, "mlp.up_proj", s.inter);
      for (size_t i = 0; i < g.size(); ++i) g[i] = act("silu", g[i]) * u[i];
      o = lin(g, "mlp.down_proj", D);
    } else {
      Vec f = lin(h, "mlp.fc1", s.inter);
      for (double& v : f) v = act("quick_gelu", v);
      o = lin(f, "mlp.fc2", D);
    }
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  }
  if (pre) *pre = x;
  Vec h = s.v25 ? ref_rms_norm(x, D, ck.get(p + "merger.ln_q.weight"), 1e-6)
                : ref_layer_norm(x, D, ck.get(p + "merger.ln_q.weight"), &ck.get(p + "merger.ln_q.bias"), 1e-6);
  const int64_t units = n / unit;
  Vec m = ref_linear(h, units, ck.get(p + "merger.mlp.0.weight"), &ck.get(p + "merger.mlp.0.bias"), D * unit);
  for (double& v : m) v = act("gelu", v);
  return ref_linear(m, units, ck.get(p + "merger.mlp.2.weight"), &ck.get(p + "merger.mlp.2.bias"), s.out);
}

TEST(VisionEncoder, Qwen2VlMatchesReference) {
  QwenShape s;
  TinyCheckpoint ck(11);
  add_qwen_weights(ck, s, "visual.");
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kEager);
  QwenVisionEncoder enc(s.config(), "qwen2_vl", cp, detect_prefix(cp, {"model.visual.", "visual."},
                                                                   "patch_embed.proj.weight", "t"),
                        "qwen2_vl");
  EXPECT_EQ(enc.out_hidden_size(), 24);
  EXPECT_EQ(enc.spatial_merge_size(), 2);
  // Two frames (a video-like grid): full attention stays within each frame.
  for (auto [gt, gh, gw] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 4, 6}, {2, 2, 4}}) {
    const int64_t n = gt * gh * gw;
    std::vector<float> patches = random_pixels(static_cast<size_t>(n * 3 * 2 * 2 * 2), 12);
    Tensor pt = Tensor::from_f32({n, 24}, patches), hidden;
    Tensor got = enc.forward(pt, gt, gh, gw, &hidden);
    EXPECT_EQ(got.shape(), (Shape{n / 4, 24}));
    Vec pre;
    expect_close(got, ref_qwen(ck, s, "visual.", patches, gt, gh, gw, &pre), kTol, "qwen2_vl merged");
    expect_close(hidden, pre, kTol, "qwen2_vl last_hidden");
  }
}

TEST(VisionEncoder, Qwen25VlWindowsMatchReference) {
  QwenShape s;
  s.v25 = true;
  TinyCheckpoint ck(13);
  add_qwen_weights(ck, s, "visual.");
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kEager);
  QwenVisionEncoder enc(s.config(), "qwen2_5_vl", cp, "visual.", "qwen2_5_vl");
  // window 8 px = 4 patches = 2 merge units per side; a 6 x 10 patch grid (3 x 5 units) leaves partial windows,
  // an 8 x 4 grid fills them exactly (transformers then pads a whole empty window row and column).
  for (auto [gt, gh, gw] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 6, 10}, {1, 8, 4}, {2, 4, 6}}) {
    const int64_t n = gt * gh * gw;
    std::vector<float> patches = random_pixels(static_cast<size_t>(n * 24), 14);
    Tensor pt = Tensor::from_f32({n, 24}, patches), hidden;
    Tensor got = enc.forward(pt, gt, gh, gw, &hidden);
    Vec pre;
    expect_close(got, ref_qwen(ck, s, "visual.", patches, gt, gh, gw, &pre), kTol,
                 fmt::format("qwen2_5_vl merged {}x{}x{}", gt, gh, gw));
    // last_hidden is in window order: merge units sorted by (frame, window row, window column, unit row, unit
    // column), each unit's 4 patches together.
    const std::vector<PatchPlace> place = processor_order(gt, gh, gw, 2);
    std::vector<int64_t> units(static_cast<size_t>(n / 4));
    for (size_t u = 0; u < units.size(); ++u) units[u] = static_cast<int64_t>(u);
    auto key = [&](int64_t u) {
      const PatchPlace& pl = place[static_cast<size_t>(u * 4)];
      const int64_t uy = pl.y / 2, ux = pl.x / 2;
      return std::make_tuple(pl.t, uy / 2, ux / 2, uy, ux);
    };
    std::stable_sort(units.begin(), units.end(), [&](int64_t a, int64_t b) { return key(a) < key(b); });
    Vec reordered;
    for (int64_t u : units) reordered.insert(reordered.end(), pre.begin() + u * 4 * s.D, pre.begin() + (u + 1) * 4 * s.D);
    expect_close(hidden, reordered, kTol, "qwen2_5_vl last_hidden (window order)");
  }
}

TEST(VisionEncoder, QwenMlxChannelsLastConvolutionAndPrefix) {
  QwenShape s;
  s.v25 = true;
  TinyCheckpoint ck(15);
  add_qwen_weights(ck, s, "vision_tower.");
  // mlx-vlm stores Conv3d weights [O, T, kH, kW, I].
  const auto& w = ck.get("vision_tower.patch_embed.proj.weight");
  std::vector<float> cl(w.size());
  for (int64_t o = 0; o < s.D; ++o)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t t = 0; t < 2; ++t)
        for (int64_t y = 0; y < 2; ++y)
          for (int64_t x = 0; x < 2; ++x)
            cl[(((o * 2 + t) * 2 + y) * 2 + x) * 3 + c] = w[(((o * 3 + c) * 2 + t) * 2 + y) * 2 + x];
  ck.add_raw("vision_tower.patch_embed.proj.weight", {s.D, 2, 2, 2, 3}, cl);
  test::TempDir dir;
  Checkpoint cp = Checkpoint::open(ck.write(dir), LoadMode::kEager);
  const std::string prefix =
      detect_prefix(cp, {"visual.", "model.visual.", "vision_tower."}, "patch_embed.proj.weight", "t");
  EXPECT_EQ(prefix, "vision_tower.");
  QwenVisionEncoder enc(s.config(), "qwen2_5_vl", cp, prefix, "mlx");
  std::vector<float> patches = random_pixels(static_cast<size_t>(24 * 24), 16);
  Tensor got = enc.forward(Tensor::from_f32({24, 24}, patches), 1, 4, 6);
  expect_close(got, ref_qwen(ck, s, "vision_tower.", patches, 1, 4, 6, nullptr), kTol, "qwen mlx conv");
  // Wrong input shapes are refused with the expected shape named.
  try {
    enc.forward(Tensor::from_f32({24, 24}, patches), 1, 4, 4);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("f32[16, 24]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(enc.forward(Tensor::from_f32({24, 24}, patches), 1, 3, 8), Error);  // not a multiple of merge
  EXPECT_THROW(QwenVisionEncoder(s.config(), "qwen3_vl", cp, prefix, "mlx"), Error);
}

}  // namespace
}  // namespace vlm
