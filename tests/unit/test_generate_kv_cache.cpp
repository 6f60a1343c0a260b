// KV caches against a full-history reference: every query's output must equal attention over the
// exact set of keys the cache semantics say it sees (mlx's RotatingKVCache rules, written here as
// position sets rather than buffer operations), computed from an independent full-length record of
// all keys and values. Quantized caches are checked against bounds derived from each group's scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <set>

#include "core/error.h"
#include "core/memory.h"
#include "core/quant.h"
#include "generate/kv_cache.h"
#include "generate/kv_quant.h"
#include "kernels/ops.h"

namespace vlm {
namespace {

constexpr int64_t kHeads = 4, kKvHeads = 2, kHd = 64;

struct Record {  // the whole history, one row per absolute position
  std::vector<float> q, k, v;  // q: [pos, kHeads*kHd]; k, v: [pos, kKvHeads*kHd]
};

LayerAttentionSpec spec_for(int64_t window = 0) {
  LayerAttentionSpec s;
  s.n_heads = kHeads;
  s.n_kv_heads = kKvHeads;
  s.head_dim = kHd;
  s.scale = 1.0f / std::sqrt(static_cast<float>(kHd));
  s.sliding_window = window;
  return s;
}

void append_random(Record& r, int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t i = 0; i < n * kHeads * kHd; ++i) r.q.push_back(d(rng));
  for (int64_t i = 0; i < n * kKvHeads * kHd; ++i) r.k.push_back(d(rng));
  for (int64_t i = 0; i < n * kKvHeads * kHd; ++i) r.v.push_back(d(rng) * 2.0f + 0.5f);
}

// Attention of the query at position p over exactly the positions in `visible` (ascending), with
// keys/values taken from `k`/`v` rows (full history, possibly dequantized).
std::vector<float> reference(const Record& r, const std::vector<float>& k, const std::vector<float>& v, int64_t p,
                             const std::vector<int64_t>& visible, const LayerAttentionSpec& s) {
  const int64_t row = kKvHeads * kHd;
  std::vector<float> ks, vs;
  for (int64_t j : visible) {
    ks.insert(ks.end(), k.begin() + j * row, k.begin() + (j + 1) * row);
    vs.insert(vs.end(), v.begin() + j * row, v.begin() + (j + 1) * row);
  }
  std::vector<float> out(kHeads * kHd);
  ops::AttentionMask m;
  m.causal = true;
  ops::attention(r.q.data() + p * kHeads * kHd, 1, p, ks.data(), vs.data(), visible.data(),
                 static_cast<int64_t>(visible.size()), kHeads, kKvHeads, kHd, s.scale, 0.0f, m, out.data());
  return out;
}

float max_abs_diff(const float* a, const float* b, int64_t n) {
  float d = 0;
  for (int64_t i = 0; i < n; ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// Which positions the query at position o+i of a chunk [o, o+s) sees, per mlx's rotating cache:
// the chunk is appended to min(o, M-1) retained entries (all of them while o <= M-1, else the
// `keep` sinks plus the most recent M-1-keep), and query i sees the M entries ending at itself in
// that array. A single token (s == 1) sees the sinks and the most recent M-keep positions.
std::vector<int64_t> rotating_visible(int64_t o, int64_t s, int64_t i, int64_t m, int64_t keep) {
  std::vector<int64_t> arr;
  if (s == 1) {
    for (int64_t p = 0; p <= o; ++p)
      if (o < m || p < keep || p > o - (m - keep)) arr.push_back(p);
    return arr;
  }
  if (o <= m - 1) {
    for (int64_t p = 0; p < o; ++p) arr.push_back(p);
  } else {
    for (int64_t p = 0; p < keep; ++p) arr.push_back(p);
    for (int64_t p = o - (m - 1 - keep); p < o; ++p) arr.push_back(p);
  }
  const int64_t l = static_cast<int64_t>(arr.size());
  for (int64_t p = o; p < o + s; ++p) arr.push_back(p);
  std::vector<int64_t> vis;
  for (int64_t j = 0; j <= l + i; ++j)
    if (l + i - j < m) vis.push_back(arr[static_cast<size_t>(j)]);
  std::sort(vis.begin(), vis.end());
  return vis;
}

// The exact (unquantized) caches against a double-precision reference: f32 attention whose blocked online softmax
// rescales partial sums as key blocks arrive (AVX-512 path) lands within a few ulps of 1 (measured <= 2.4e-6).
constexpr float kF32AttentionTol = 4e-6f;

using VisibleFn = std::function<std::vector<int64_t>(int64_t o, int64_t s, int64_t i)>;

// A standard cache: query i of a chunk fed at offset o sees every position up to its own.
std::vector<int64_t> causal(int64_t o, int64_t, int64_t i) {
  std::vector<int64_t> v;
  for (int64_t p = 0; p <= o + i; ++p) v.push_back(p);
  return v;
}

// Feeds `chunks` through `layer` and checks every query against the reference over VisibleFn.
// `kref`/`vref` are the rows the reference uses (the originals, or their dequantized versions).
void run_and_compare(KVLayer& layer, const std::vector<int64_t>& chunks, const LayerAttentionSpec& s,
                     const VisibleFn& visible, float tol, uint32_t seed,
                     const std::function<void(Record&, std::vector<float>&, std::vector<float>&)>& make_refs = {},
                     bool in_place = false) {
  std::mt19937 rng(seed);
  Record r;
  int64_t total = 0;
  for (int64_t c : chunks) total += c;
  append_random(r, total, rng);
  std::vector<float> kref = r.k, vref = r.v;
  if (make_refs) make_refs(r, kref, vref);
  int64_t o = 0;
  for (int64_t c : chunks) {
    std::vector<float> out(static_cast<size_t>(c * kHeads * kHd));
    ops::AttentionMask m;
    // A chunk fed before the layer turned quantized attends in full precision (mlx converts after a step).
    const bool quantized_before = layer.quantized();
    const float* k = r.k.data() + o * kKvHeads * kHd;
    const float* v = r.v.data() + o * kKvHeads * kHd;
    if (in_place) {  // as DecoderModel does: compute k/v into the cache's next rows, then hand those over
      auto [kd, vd] = layer.next_rows(c);
      if (kd != nullptr) {
        std::copy_n(k, c * kKvHeads * kHd, kd);
        std::copy_n(v, c * kKvHeads * kHd, vd);
        k = kd;
        v = vd;
      }
    }
    layer.update_and_attend(r.q.data() + o * kHeads * kHd, k, v, c, s, m, out.data());
    for (int64_t i = 0; i < c; ++i) {
      auto vis = visible(o, c, i);
      auto want = quantized_before ? reference(r, kref, vref, o + i, vis, s) : reference(r, r.k, r.v, o + i, vis, s);
      float d = max_abs_diff(out.data() + i * kHeads * kHd, want.data(), kHeads * kHd);
      ASSERT_LE(d, tol) << "chunk at offset " << o << " size " << c << ", query " << i << " (position " << o + i
                        << "), " << vis.size() << " visible keys";
    }
    o += c;
    ASSERT_EQ(layer.offset(), o);
  }
}

KVLayerConfig layer_config(int64_t max_size = 0, int64_t keep = 0, std::optional<int> bits = std::nullopt,
                           int64_t start = 0, int group = 64) {
  KVLayerConfig c;
  c.n_kv_heads = kKvHeads;
  c.head_dim = kHd;
  c.max_size = max_size;
  c.keep = keep;
  c.bits = bits;
  c.group_size = group;
  c.quantize_start = start;
  return c;
}

TEST(KVCache, StandardMatchesFullHistoryPrefillAndDecode) {
  KVLayer layer(layer_config());
  run_and_compare(layer, {7, 1, 1, 300, 1, 5, 1}, spec_for(), causal, kF32AttentionTol, 1);
  EXPECT_EQ(layer.stored_tokens(), 316);
  EXPECT_FALSE(layer.rotating());
}

// k/v written into next_rows (no copy in the cache) give the same results, across storage growth
// (256-token steps); layers that do not store plain rows offer none.
TEST(KVCache, InPlaceRowsMatchFullHistory) {
  KVLayer layer(layer_config());
  run_and_compare(layer, {7, 1, 250, 1, 300, 1}, spec_for(), causal, kF32AttentionTol, 3, {}, /*in_place=*/true);
  EXPECT_EQ(layer.stored_tokens(), 560);
  EXPECT_NE(layer.next_rows(1).first, nullptr);

  KVLayer rotating(layer_config(16, 4));
  EXPECT_EQ(rotating.next_rows(1).first, nullptr);
  KVLayer quantized(layer_config(0, 0, 4, 0));
  std::mt19937 rng(5);
  Record r;
  append_random(r, 3, rng);
  std::vector<float> out(3 * kHeads * kHd);
  quantized.update_and_attend(r.q.data(), r.k.data(), r.v.data(), 3, spec_for(), ops::AttentionMask{}, out.data());
  ASSERT_TRUE(quantized.quantized());
  EXPECT_EQ(quantized.next_rows(1).first, nullptr);
}

TEST(KVCache, RotatingMatchesMlxWindowAcrossWraps) {
  const int64_t m = 16, keep = 4;
  KVLayer layer(layer_config(m, keep));
  VisibleFn vis = [&](int64_t o, int64_t s, int64_t i) { return rotating_visible(o, s, i, m, keep); };
  // Prefill shorter than the ring, decode through several wraps, a chunk after a wrap, a chunk
  // longer than the ring, and decode again (in-place after a concat that over-filled the ring).
  std::vector<int64_t> chunks = {5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                 6, 1, 1, 1, 40, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 2, 1};
  run_and_compare(layer, chunks, spec_for(), vis, kF32AttentionTol, 2);
  EXPECT_LE(layer.stored_tokens(), m);
  // Sinks are the first `keep` absolute positions, never re-rotated.
  auto pos = layer.stored_positions();
  for (int64_t i = 0; i < keep; ++i) EXPECT_EQ(pos[static_cast<size_t>(i)], i);
}

TEST(KVCache, RotatingFirstPrefillLongerThanRing) {
  const int64_t m = 8, keep = 4;
  KVLayer layer(layer_config(m, keep));
  VisibleFn vis = [&](int64_t o, int64_t s, int64_t i) { return rotating_visible(o, s, i, m, keep); };
  run_and_compare(layer, {20, 1, 1, 9, 1}, spec_for(), vis, kF32AttentionTol, 3);
}

TEST(KVCache, SlidingWindowLayerKeepsOnlyTheWindow) {
  const int64_t w = 12;
  auto caches = make_layered_kv_cache({{kKvHeads, kHd, w}, {kKvHeads, kHd, 0}}, KVCacheOptions{});
  KVLayer& layer = caches->kv_layer(0);
  EXPECT_TRUE(layer.rotating());
  EXPECT_EQ(layer.config().max_size, w);
  EXPECT_EQ(layer.config().keep, 0);
  EXPECT_FALSE(caches->kv_layer(1).rotating());
  VisibleFn window = [&](int64_t o, int64_t, int64_t i) {
    std::vector<int64_t> v;
    for (int64_t p = std::max<int64_t>(0, o + i - w + 1); p <= o + i; ++p) v.push_back(p);
    return v;
  };
  run_and_compare(layer, {30, 1, 1, 1, 5, 1, 20, 1, 1}, spec_for(w), window, kF32AttentionTol, 4);
  EXPECT_LE(layer.stored_tokens(), w);
}

TEST(KVCache, FactoryRulesFollowMlx) {
  KVCacheOptions o;
  o.max_kv_size = 64;
  auto full = make_layered_kv_cache({{2, 64, 0}, {2, 64, 0}}, o);
  EXPECT_TRUE(full->kv_layer(0).rotating());
  EXPECT_EQ(full->kv_layer(1).config().keep, 4);
  EXPECT_FALSE(max_kv_size_ignored({{2, 64, 0}}, o));
  // A layout with its own windows ignores max_kv_size (mlx: the model's make_cache wins).
  auto gem = make_layered_kv_cache({{2, 64, 16}, {2, 64, 0}}, o);
  EXPECT_TRUE(max_kv_size_ignored({{2, 64, 16}, {2, 64, 0}}, o));
  EXPECT_EQ(gem->kv_layer(0).config().max_size, 16);
  EXPECT_FALSE(gem->kv_layer(1).rotating());
  EXPECT_NE(full->describe().find("rotating(64, keep 4)"), std::string::npos);

  KVCacheOptions bad;
  bad.kv_bits = 7;
  EXPECT_THROW(make_kv_cache({{2, 64, 0}}, bad), Error);
  bad.kv_bits = 4;
  bad.kv_group_size = 48;
  EXPECT_THROW(make_kv_cache({{2, 64, 0}}, bad), Error);
  bad.kv_group_size = 128;  // does not divide head_dim 64
  try {
    make_kv_cache({{2, 64, 0}}, bad);
    FAIL() << "group 128 over head_dim 64 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 64"), std::string::npos) << e.what();
  }
  KVCacheOptions small;
  small.max_kv_size = 4;
  EXPECT_THROW(make_kv_cache({{2, 64, 0}}, small), Error);
}

// ---- quantization ---------------------------------------------------------------------------------

TEST(KVQuant, ErrorBoundedByGroupScaleEveryBitWidth) {
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.3f, 2.0f);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (int group : {32, 64, 128}) {
      const int64_t n = 256;
      std::vector<float> x(n);
      for (auto& e : x) e = d(rng);
      x[3] = 0.0f;
      std::vector<uint32_t> packed(static_cast<size_t>(kvq::packed_words(n, bits)));
      std::vector<float> sc(n / group), bi(n / group), y(n);
      kvq::quantize_row(x.data(), n, bits, group, packed.data(), sc.data(), bi.data());
      kvq::dequantize_row(packed.data(), sc.data(), bi.data(), n, bits, group, y.data());
      int64_t beyond_half = 0;
      for (int64_t i = 0; i < n; ++i) {
        float s = std::fabs(sc[static_cast<size_t>(i / group)]);
        float err = std::fabs(x[static_cast<size_t>(i)] - y[static_cast<size_t>(i)]);
        // Rounding gives |err| <= scale/2; the edge snapping of MLX's rule can push the far end of
        // the range up to one step past the last code, where clipping costs at most one scale.
        ASSERT_LE(err, s * 1.0f + 1e-5f) << bits << "-bit g" << group << " element " << i;
        // Beyond half a step only where the code was clipped at the far end of the range.
        if (err > s * 0.5f + 1e-5f) {
          ++beyond_half;
          ASSERT_EQ(unpack_affine(packed.data(), i, bits), (1u << bits) - 1u) << bits << "-bit g" << group;
        }
        // Codes decode through core's independent unpacker to the same value.
        float via_core = sc[static_cast<size_t>(i / group)] * static_cast<float>(unpack_affine(packed.data(), i, bits)) +
                         bi[static_cast<size_t>(i / group)];
        ASSERT_EQ(via_core, y[static_cast<size_t>(i)]);
      }
      EXPECT_LE(beyond_half, n / 16) << bits << "-bit g" << group;
      // 0 stays exactly representable (the edge snapping exists for this).
      EXPECT_NEAR(y[3], 0.0f, std::fabs(sc[0]) * 0.5f + 1e-6f);
    }
  }
}

TEST(KVQuant, MatchesMlxRuleOnAKnownGroup) {
  // Group of 32 values 0..31 at 4 bits: w_min 0, w_max 31, delta = 31/15; |max| > |min| so the
  // edge is 31 with a negative scale: q0 = round(31 / -2.0667) = -15, scale = 31/-15, bias = 31.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i);
  std::vector<uint32_t> packed(4);
  float sc = 0, bi = 0;
  kvq::quantize_row(x.data(), 32, 4, 32, packed.data(), &sc, &bi);
  EXPECT_FLOAT_EQ(sc, 31.0f / -15.0f);
  EXPECT_FLOAT_EQ(bi, 31.0f);
  EXPECT_EQ(unpack_affine(packed.data(), 31, 4), 0u);   // the max is code 0
  EXPECT_EQ(unpack_affine(packed.data(), 0, 4), 15u);   // the min is code 15
}

// Dequantized copies of every row: what a quantized cache must attend over.
void dequantized_refs(int bits, int group, std::vector<float>& k, std::vector<float>& v) {
  const int64_t row = kKvHeads * kHd;
  for (auto* t : {&k, &v}) {
    std::vector<uint32_t> packed(static_cast<size_t>(kvq::packed_words(row, bits)));
    std::vector<float> sc(row / group), bi(row / group);
    for (size_t p = 0; p < t->size() / row; ++p) {
      float* r = t->data() + p * row;
      kvq::quantize_row(r, row, bits, group, packed.data(), sc.data(), bi.data());
      kvq::dequantize_row(packed.data(), sc.data(), bi.data(), row, bits, group, r);
    }
  }
}

TEST(KVCache, QuantizedAttendsOverItsDequantizedEntries) {
  for (int bits : {2, 4, 8}) {
    KVLayer layer(layer_config(0, 0, bits, 0, 32));
    EXPECT_FALSE(layer.quantized());  // converts after its first update
    run_and_compare(layer, {9, 1, 1, 4, 1}, spec_for(), causal, 2e-6f, 6,
                    [&](Record&, std::vector<float>& k, std::vector<float>& v) { dequantized_refs(bits, 32, k, v); });
  }
}

// Decode steps of a quantized layer attend over the packed planes (ops::attention_quantized, fused on
// the CPU's AVX-512 path and on CUDA) while prefill chunks go through the f32 scratch: both must be
// exactly ops::attention over the layer's dequantized entries (read() gives those rows), bit for
// bit, at a length past several 64-key chunks and with 3-bit codes that straddle words.
TEST(KVCache, QuantizedDecodeEqualsAttentionOverItsDequantizedRows) {
  for (int bits : {3, 4, 8}) {
    SCOPED_TRACE(std::to_string(bits) + "-bit");
    KVLayer layer(layer_config(0, 0, bits, 0, 32));
    std::mt19937 rng(11);
    Record r;
    append_random(r, 200, rng);
    const int64_t row = kKvHeads * kHd;
    const LayerAttentionSpec s = spec_for();
    ops::AttentionMask m;
    m.causal = true;
    int64_t o = 0;
    for (int64_t c : {150, 1, 1, 3, 1, 1}) {
      std::vector<float> out(static_cast<size_t>(c * kHeads * kHd)), want(out.size());
      const bool quantized_before = layer.quantized();
      layer.update_and_attend(r.q.data() + o * kHeads * kHd, r.k.data() + o * row, r.v.data() + o * row, c, s, m,
                              out.data());
      o += c;
      if (!quantized_before) continue;  // the first chunk attends in full precision
      std::vector<float> k(static_cast<size_t>(o * row)), v(k.size());
      layer.read(0, o, k.data(), v.data());
      std::vector<int64_t> pos = layer.stored_positions();
      ops::attention(r.q.data() + (o - c) * kHeads * kHd, c, o - c, k.data(), v.data(), pos.data(), o, kHeads,
                     kKvHeads, kHd, s.scale, 0.0f, m, want.data());
      EXPECT_EQ(std::memcmp(out.data(), want.data(), out.size() * sizeof(float)), 0) << "chunk of " << c << " at " << o - c;
    }
  }
}

TEST(KVCache, QuantizedWithinBoundOfFullPrecision) {
  // A bound derived per query and head from the actual key/value errors (each within its group's
  // scale, see the quantizer test): scores move by at most D = attn_scale * max_j sum_d |q_d| |dk_jd|,
  // so each softmax weight moves by at most a factor exp(+-2D) and, per output dim d,
  // |out - out_full| <= max_j |dv_jd| + (exp(2D) - 1) * (range_j v_jd) / 2.
  for (int bits : {4, 8}) {
    const int group = 64;
    std::mt19937 rng(7 + bits);
    Record r;
    const int64_t n = 24;
    append_random(r, n, rng);
    LayerAttentionSpec s = spec_for();
    KVLayer q(layer_config(0, 0, bits, 0, group)), f(layer_config());
    std::vector<float> oq(n * kHeads * kHd), of(n * kHeads * kHd);
    ops::AttentionMask m;
    // Token 0 goes first (the layer converts after that update), then the rest attends over
    // quantized entries. Compare the outputs of positions 1..n-1.
    q.update_and_attend(r.q.data(), r.k.data(), r.v.data(), 1, s, m, oq.data());
    f.update_and_attend(r.q.data(), r.k.data(), r.v.data(), 1, s, m, of.data());
    ASSERT_TRUE(q.quantized());
    const int64_t qs = kHeads * kHd, ks = kKvHeads * kHd;
    q.update_and_attend(r.q.data() + qs, r.k.data() + ks, r.v.data() + ks, n - 1, s, m, oq.data() + qs);
    f.update_and_attend(r.q.data() + qs, r.k.data() + ks, r.v.data() + ks, n - 1, s, m, of.data() + qs);
    std::vector<float> kd = r.k, vd = r.v;
    dequantized_refs(bits, group, kd, vd);
    const int64_t per_kv = kHeads / kKvHeads;
    double worst_ratio = 0;
    for (int64_t t = 1; t < n; ++t) {
      for (int64_t h = 0; h < kHeads; ++h) {
        const int64_t g = h / per_kv;
        double big_d = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double acc = 0;
          for (int64_t d = 0; d < kHd; ++d) {
            size_t ki = static_cast<size_t>((j * kKvHeads + g) * kHd + d);
            acc += std::fabs(r.q[static_cast<size_t>((t * kHeads + h) * kHd + d)]) * std::fabs(kd[ki] - r.k[ki]);
          }
          big_d = std::max(big_d, s.scale * acc);
        }
        for (int64_t d = 0; d < kHd; ++d) {
          double dv = 0, lo = 1e30, hi = -1e30;
          for (int64_t j = 0; j <= t; ++j) {
            size_t vi = static_cast<size_t>((j * kKvHeads + g) * kHd + d);
            dv = std::max<double>(dv, std::fabs(vd[vi] - r.v[vi]));
            lo = std::min<double>(lo, r.v[vi]);
            hi = std::max<double>(hi, r.v[vi]);
          }
          double bound = dv + (std::exp(2 * big_d) - 1) * (hi - lo) / 2 + 1e-5;
          size_t oi = static_cast<size_t>((t * kHeads + h) * kHd + d);
          double err = std::fabs(oq[oi] - of[oi]);
          ASSERT_LE(err, bound) << bits << "-bit, query " << t << " head " << h << " dim " << d;
          worst_ratio = std::max(worst_ratio, err / bound);
        }
      }
    }
    EXPECT_GT(max_abs_diff(oq.data(), of.data(), static_cast<int64_t>(oq.size())), 0.0f);  // really quantized
    EXPECT_GT(worst_ratio, 0.01) << "bound is so loose it could not fail";
  }
}

TEST(KVCache, QuantizedKvStartConvertsWhenCrossed) {
  const int64_t start = 10;
  KVLayer q(layer_config(0, 0, 4, start, 64)), f(layer_config());
  std::mt19937 rng(8);
  Record r;
  append_random(r, 16, rng);
  LayerAttentionSpec s = spec_for();
  ops::AttentionMask m;
  int64_t o = 0;
  for (int64_t c : {6, 3, 1, 1, 5}) {
    std::vector<float> a(c * kHeads * kHd), b(c * kHeads * kHd);
    bool was_quantized = q.quantized();
    q.update_and_attend(r.q.data() + o * kHeads * kHd, r.k.data() + o * kKvHeads * kHd,
                        r.v.data() + o * kKvHeads * kHd, c, s, m, a.data());
    f.update_and_attend(r.q.data() + o * kHeads * kHd, r.k.data() + o * kKvHeads * kHd,
                        r.v.data() + o * kKvHeads * kHd, c, s, m, b.data());
    o += c;
    if (!was_quantized) {
      // Before the crossing (and on the step that crosses) attention ran in full precision.
      EXPECT_EQ(max_abs_diff(a.data(), b.data(), static_cast<int64_t>(a.size())), 0.0f) << "offset " << o;
    } else {
      EXPECT_GT(max_abs_diff(a.data(), b.data(), static_cast<int64_t>(a.size())), 0.0f) << "offset " << o;
    }
    EXPECT_EQ(q.quantized(), o >= start) << "offset " << o;
  }
  // After conversion every held entry (old and new) is the dequantized version of the original.
  std::vector<float> kd = r.k, vd = r.v;
  dequantized_refs(4, 64, kd, vd);
  std::vector<float> kk(16 * kKvHeads * kHd), vv(16 * kKvHeads * kHd);
  q.read(0, 16, kk.data(), vv.data());
  EXPECT_EQ(max_abs_diff(kk.data(), kd.data(), static_cast<int64_t>(kk.size())), 0.0f);
  EXPECT_EQ(max_abs_diff(vv.data(), vd.data(), static_cast<int64_t>(vv.size())), 0.0f);
  EXPECT_LT(q.nbytes(), f.nbytes());
}

TEST(KVCache, QuantizedPlusRotating) {
  const int64_t m = 16, keep = 4;
  KVLayer layer(layer_config(m, keep, 4, 0, 32));
  EXPECT_TRUE(layer.rotating());
  VisibleFn vis = [&](int64_t o, int64_t s, int64_t i) { return rotating_visible(o, s, i, m, keep); };
  std::vector<int64_t> chunks = {5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 7, 1, 1, 30, 1, 1, 1, 2, 1};
  run_and_compare(layer, chunks, spec_for(), vis, 2e-6f, 9,
                  [&](Record&, std::vector<float>& k, std::vector<float>& v) { dequantized_refs(4, 32, k, v); });
  EXPECT_TRUE(layer.quantized());
}

TEST(KVCache, TrimThenRefeedEqualsUntrimmed) {
  std::mt19937 rng(10);
  Record r;
  append_random(r, 20, rng);
  LayerAttentionSpec s = spec_for();
  ops::AttentionMask m;
  auto run = [&](KVLayer& l, int64_t from, int64_t n, std::vector<float>& out) {
    out.resize(static_cast<size_t>(n * kHeads * kHd));
    l.update_and_attend(r.q.data() + from * kHeads * kHd, r.k.data() + from * kKvHeads * kHd,
                        r.v.data() + from * kKvHeads * kHd, n, s, m, out.data());
  };
  for (auto cfg : {layer_config(), layer_config(0, 0, 4, 0, 64), layer_config(32, 4)}) {
    KVLayer a(cfg), b(cfg);
    std::vector<float> oa, ob, junk;
    run(a, 0, 12, oa);
    run(a, 12, 8, oa);
    run(b, 0, 15, junk);  // b sees a different tail, then drops it
    ASSERT_TRUE(b.is_trimmable());
    b.trim(3);
    EXPECT_EQ(b.offset(), 12);
    run(b, 12, 8, ob);
    EXPECT_EQ(max_abs_diff(oa.data(), ob.data(), static_cast<int64_t>(oa.size())), 0.0f);
  }
  KVLayer rot(layer_config(8, 4));
  std::vector<float> junk;
  run(rot, 0, 10, junk);
  EXPECT_FALSE(rot.is_trimmable());
  EXPECT_THROW(rot.trim(1), Error);
}

TEST(KVCache, MemoryIsTrackedAsKvCache) {
  int64_t before = MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[static_cast<int>(MemCategory::kKvCache)];
  {
    KVLayer layer(layer_config());
    std::mt19937 rng(11);
    Record r;
    append_random(r, 3, rng);
    std::vector<float> out(3 * kHeads * kHd);
    layer.update_and_attend(r.q.data(), r.k.data(), r.v.data(), 3, spec_for(), ops::AttentionMask{}, out.data());
    int64_t now = MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[static_cast<int>(MemCategory::kKvCache)];
    // One 256-token step of K and V in f32.
    EXPECT_EQ(now - before, 2 * 256 * kKvHeads * kHd * 4);
    EXPECT_GE(layer.nbytes(), static_cast<size_t>(now - before));
  }
  EXPECT_EQ(MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[static_cast<int>(MemCategory::kKvCache)],
            before);
}

int64_t tracked(MemCategory c) {
  return MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[static_cast<int>(c)];
}

TEST(KVCache, QuantizedCacheHoldsOnlyPackedRowsPlusOneLayerOfScratch) {
  // A cache of several layers at 4 bits against the f32 cache at the same length, by what the
  // MemoryTracker sees (not by what nbytes() claims): the KV category must be exactly the packed
  // planes (codes + f32 scales + f32 biases per slot), and the f32 rows attention needs must exist
  // only once, as scratch shared by all layers — so the whole quantized cache, scratch included, is
  // well under half the f32 one. Its outputs must equal those of layers with their own scratch.
  // Only a prefill chunk over quantized entries needs those rows (the first chunk attends in full
  // precision, decode steps read the packed planes), hence the second chunk of kChunk tokens.
  constexpr int kLayers = 8, kBits = 4, kGroup = 64;
  constexpr int64_t kPrefill = 300, kChunk = 8, kDecode = 3, kTokens = kPrefill + kChunk + kDecode;
  const int64_t row = kKvHeads * kHd;
  const int64_t capacity = (kTokens + 255) / 256 * 256;  // the cache's 256-token growth step
  std::vector<Record> recs(kLayers);
  std::mt19937 rng(12);
  for (Record& r : recs) append_random(r, kTokens, rng);
  std::vector<LayerCacheInfo> layout(kLayers, LayerCacheInfo{kKvHeads, kHd, 0});
  const LayerAttentionSpec s = spec_for();

  // Feeds every layer the prefill then kDecode single tokens; returns all outputs.
  auto feed = [&](const std::function<LayerKVCache&(int)>& layer) {
    std::vector<float> out(static_cast<size_t>(kLayers * kTokens * kHeads * kHd));
    auto step = [&](int64_t from, int64_t n) {
      for (int l = 0; l < kLayers; ++l) {
        const Record& r = recs[static_cast<size_t>(l)];
        layer(l).update_and_attend(r.q.data() + from * kHeads * kHd, r.k.data() + from * row,
                                   r.v.data() + from * row, n, s, ops::AttentionMask{},
                                   out.data() + (l * kTokens + from) * kHeads * kHd);
      }
    };
    step(0, kPrefill);
    step(kPrefill, kChunk);
    for (int64_t t = kPrefill + kChunk; t < kTokens; ++t) step(t, 1);
    return out;
  };

  KVCacheOptions f32_opts;
  KVCacheOptions q_opts;
  q_opts.kv_bits = kBits;
  q_opts.kv_group_size = kGroup;
  q_opts.quantized_kv_start = 0;

  const int64_t kv0 = tracked(MemCategory::kKvCache), scratch0 = tracked(MemCategory::kScratch);
  auto f32_cache = make_layered_kv_cache(layout, f32_opts);
  feed([&](int l) -> LayerKVCache& { return f32_cache->layer(l); });
  const int64_t f32_kv = tracked(MemCategory::kKvCache) - kv0;
  EXPECT_EQ(f32_kv, kLayers * 2 * capacity * row * 4);
  EXPECT_EQ(tracked(MemCategory::kScratch), scratch0);  // f32 layers attend over their own rows
  EXPECT_EQ(f32_cache->scratch_nbytes(), 0u);
  f32_cache.reset();

  auto q_cache = make_layered_kv_cache(layout, q_opts);
  const std::vector<float> shared_out = feed([&](int l) -> LayerKVCache& { return q_cache->layer(l); });
  for (int l = 0; l < kLayers; ++l) ASSERT_TRUE(q_cache->kv_layer(l).quantized());
  const int64_t q_kv = tracked(MemCategory::kKvCache) - kv0;
  const int64_t q_scratch = tracked(MemCategory::kScratch) - scratch0;
  // Per slot and K/V plane: packed codes, then one f32 scale and one f32 bias per group.
  const int64_t packed_per_slot = 2 * (ops::kv_packed_words(row, kBits) * 4 + 2 * (row / kGroup) * 4);
  EXPECT_EQ(q_kv, kLayers * capacity * packed_per_slot);
  size_t held = 0;
  for (int l = 0; l < kLayers; ++l) held += q_cache->kv_layer(l).nbytes();
  EXPECT_GE(held, static_cast<size_t>(q_kv));  // nbytes() also counts the host position array
  EXPECT_LT(held, static_cast<size_t>(q_kv) + kLayers * capacity * sizeof(int64_t) * 2);
  // One layer's f32 K and V rows, whatever the number of layers.
  EXPECT_EQ(q_scratch, 2 * capacity * row * 4);
  EXPECT_EQ(q_cache->scratch_nbytes(), static_cast<size_t>(q_scratch));
  EXPECT_LT(q_kv + q_scratch, f32_kv / 2) << "4-bit cache (scratch included) must be well under half the f32 one";

  // The same inputs through standalone layers (each with its own scratch): the same bits.
  std::vector<std::unique_ptr<KVLayer>> own;
  for (int l = 0; l < kLayers; ++l) own.push_back(std::make_unique<KVLayer>(q_cache->kv_layer(l).config()));
  const std::vector<float> own_out = feed([&](int l) -> LayerKVCache& { return *own[static_cast<size_t>(l)]; });
  EXPECT_EQ(max_abs_diff(shared_out.data(), own_out.data(), static_cast<int64_t>(own_out.size())), 0.0f);
  own.clear();

  q_cache.reset();
  EXPECT_EQ(tracked(MemCategory::kKvCache), kv0);
  EXPECT_EQ(tracked(MemCategory::kScratch), scratch0);
}

}  // namespace
}  // namespace vlm
