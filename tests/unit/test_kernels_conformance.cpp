// Backend conformance in one table (after ggml's test-backend-ops): every op of the CPU dispatch
// table runs on model-shaped random inputs on the scalar reference and on every SIMD path this CPU
// can run (avx2, avx512, avx512bf16 via set_cpu_kernel_path), and each must agree with the reference
// within the op's NMSE bound. An op listed in
// kKernelOps without a case here is a failure, so new ops cannot skip conformance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <set>

#include "core/error.h"
#include "core/quantize.h"
#include "kernels/cpu/cpu_dispatch.h"
#include "test_kernels_util.h"

using namespace vlm;
using namespace vlm::test;

namespace {

struct Case {
  std::string op;    // name in kKernelOps
  std::string what;  // shape / variant
  double tol;        // NMSE bound between the two paths
  // Runs the op on fresh copies of its inputs and returns the output (same inputs on both paths).
  std::function<std::vector<float>()> run;
};

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// ops::kv_quantize on x [rows, n], flattened for comparison: every code (read bit by bit from the
// stream, exact in f32), then the scales, then the biases.
std::vector<float> kv_quantize_flat(const std::vector<float>& x, int64_t rows, int64_t n, int bits, int group) {
  const int64_t words = ops::kv_packed_words(n, bits), groups = n / group;
  std::vector<uint32_t> packed(static_cast<size_t>(rows * words));
  std::vector<float> scales(static_cast<size_t>(rows * groups)), biases(scales.size());
  ops::kv_quantize(x.data(), rows, n, bits, group, packed.data(), scales.data(), biases.data());
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) out.push_back(static_cast<float>(stream_bits(packed.data() + r * words, j, bits)));
  out.insert(out.end(), scales.begin(), scales.end());
  out.insert(out.end(), biases.begin(), biases.end());
  return out;
}

std::vector<Case> build_cases() {
  std::vector<Case> cases;
  auto rng = std::make_shared<std::mt19937>(99);
  // linear: every stored format, decode (n = 1), small batch (n = 3) and prefill (n = 37) shapes.
  struct LinearShape {
    int64_t rows, cols;
  };
  std::vector<std::pair<std::string, ops::Weight>> weights;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    weights.emplace_back(dtype_name(dt), dense_weight(random_tensor(*rng, {200, 576}, dt)));
  weights.emplace_back("bf16 ragged", dense_weight(random_tensor(*rng, {45, 200}, DType::kBF16)));
  // Large enough that decode runs multithreaded (kernels keep small jobs on the calling thread).
  weights.emplace_back("bf16 threaded", dense_weight(random_tensor(*rng, {1024, 576}, DType::kBF16)));
  weights.emplace_back("q4g64 threaded", random_quantized(*rng, 1024, 576, 4, 64, DType::kBF16));
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int group : {32, 64, 128})
      weights.emplace_back("q" + std::to_string(bits) + "g" + std::to_string(group),
                           random_quantized(*rng, 70, 640, bits, group, DType::kBF16));
  for (auto& [name, w] : weights)
    for (int64_t n : {1, 3, 37}) {
      auto x = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(n * w.cols())));
      Tensor bias = n == 3 ? random_tensor(*rng, {w.rows()}, DType::kF32) : Tensor();
      // Quantized decode (n < 16) on AVX-512 VNNI rounds x to 16-bit fixed point per 32 values
      // (simd_quant_vnni.cpp): 1e-8; the rest accumulates exact products in f32.
      double tol = w.quantized && n < 16 ? 1e-8 : 1e-11;
      cases.push_back({"linear", name + " n=" + std::to_string(n), tol, [w, x, n, bias] {
                         std::vector<float> y(static_cast<size_t>(n * w.rows()));
                         ops::linear(x->data(), n, w, bias, y.data());
                         return y;
                       }});
    }
  // linear_group: q/k/v-like groups of one format (one pass on the SIMD paths) and a mixed group,
  // with and without biases; every member must equal its own linear().
  {
    auto bf = [&](int64_t rows) { return dense_weight(random_tensor(*rng, {rows, 576}, DType::kBF16)); };
    auto q4 = [&](int64_t rows) { return random_quantized(*rng, rows, 576, 4, 64, DType::kBF16); };
    std::vector<std::pair<std::string, std::vector<ops::Weight>>> groups = {
        {"bf16 q/k/v", {bf(576), bf(192), bf(192)}},
        {"q4g64 gate/up", {q4(1536), q4(1536)}},
        {"q8g32 q/k/v", {random_quantized(*rng, 320, 576, 8, 32, DType::kF16),
                         random_quantized(*rng, 64, 576, 8, 32, DType::kF16),
                         random_quantized(*rng, 64, 576, 8, 32, DType::kF16)}},
        {"mixed", {dense_weight(random_tensor(*rng, {200, 576}, DType::kF32)), q4(256), bf(64)}}};
    for (auto& [name, ws] : groups)
      for (int64_t n : {1, 3, 37}) {
        auto x = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(n * 576)));
        std::vector<Tensor> biases;
        for (const ops::Weight& w : ws) biases.push_back(n == 3 ? random_tensor(*rng, {w.rows()}, DType::kF32) : Tensor());
        const bool quant = std::any_of(ws.begin(), ws.end(), [](const ops::Weight& w) { return w.quantized; });
        cases.push_back({"linear_group", name + " n=" + std::to_string(n), quant && n < 16 ? 1e-8 : 1e-11,
                         [ws, biases, x, n] {
                           std::vector<float> y;
                           run_linear_group(ws, biases, x->data(), n, [&](size_t total) {
                             y.resize(total);
                             return y.data();
                           });
                           return y;
                         }});
      }
  }
  for (auto& [name, w] : weights) {
    std::vector<int32_t> ids = {0, static_cast<int32_t>(w.rows() - 1), 5, 5};
    cases.push_back({"embedding", name, 1e-14, [w, ids] {
                       std::vector<float> out(ids.size() * w.cols());
                       ops::embedding(w, ids.data(), static_cast<int64_t>(ids.size()), 1.5f, out.data());
                       return out;
                     }});
  }
  for (int64_t d : {576, 896, 1001}) {
    auto x = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(9 * d), -4.0f, 4.0f));
    Tensor w = random_tensor(*rng, {d}, DType::kBF16);
    Tensor b = random_tensor(*rng, {d}, DType::kF32);
    for (float offset : {0.0f, 1.0f})
      cases.push_back({"rms_norm", "d=" + std::to_string(d), 1e-12, [x, w, d, offset] {
                         std::vector<float> y(x->size());
                         ops::rms_norm(x->data(), 9, d, w, 1e-6f, offset, y.data());
                         return y;
                       }});
    auto r = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(9 * d), -4.0f, 4.0f));
    for (bool y_is_r : {false, true})
      cases.push_back({"add_rms_norm", "d=" + std::to_string(d) + (y_is_r ? " y=r" : ""), 1e-12, [x, r, w, d, y_is_r] {
                         // Returns the updated x followed by y.
                         std::vector<float> xs = *x, rs = *r, y(x->size());
                         float* out = y_is_r ? rs.data() : y.data();
                         ops::add_rms_norm(xs.data(), rs.data(), 9, d, w, 1e-6f, 1.0f, out);
                         xs.insert(xs.end(), out, out + x->size());
                         return xs;
                       }});
    cases.push_back({"layer_norm", "d=" + std::to_string(d), 1e-12, [x, w, b, d] {
                       std::vector<float> y(x->size());
                       ops::layer_norm(x->data(), 9, d, w, b, 1e-5f, y.data());
                       return y;
                     }});
  }
  for (auto [hd, rot] : {std::pair<int64_t, int64_t>{64, 64}, {128, 128}, {96, 48}}) {
    auto x = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(11 * 5 * hd)));
    auto inv = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(rot / 2), 0.0f, 1.0f));
    auto pos = std::make_shared<std::vector<int64_t>>(11);
    std::iota(pos->begin(), pos->end(), int64_t{100});
    cases.push_back({"rope", "hd=" + std::to_string(hd) + " rot=" + std::to_string(rot), 1e-13, [=] {
                       std::vector<float> y = *x;
                       ops::rope(y.data(), 11, 5, hd, rot, inv->data(), pos->data(), 1.1f);
                       return y;
                     }});
  }
  {
    auto x = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(7 * 4 * 128)));
    auto inv = std::make_shared<std::vector<float>>(random_vec(*rng, 64, 0.0f, 1.0f));
    auto pos = std::make_shared<std::vector<int64_t>>(21);
    for (size_t i = 0; i < pos->size(); ++i) (*pos)[i] = static_cast<int64_t>((i * 7) % 13);
    cases.push_back({"mrope", "qwen2-vl sections", 1e-13, [=] {
                       std::vector<float> y = *x;
                       ops::mrope(y.data(), 7, 4, 128, inv->data(), pos->data(), {16, 24, 24});
                       return y;
                     }});
    cases.push_back({"mrope", "qwen3-vl interleaved", 1e-13, [=] {
                       std::vector<float> y = *x;
                       ops::mrope_interleaved(y.data(), 7, 4, 128, inv->data(), pos->data(), {24, 20, 20});
                       return y;
                     }});
  }
  {
    // sample: the chain has no SIMD entry of its own, but its temperature-0 pick is the path's argmax.
    // Rows on a 0.25 grid (many exact ties), a 152k vocabulary, the full chain and greedy with penalties.
    const int64_t d = 152064;
    auto rows = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(4 * d), -8.0f, 8.0f));
    for (float& v : *rows) v = std::round(v * 4.0f) / 4.0f;
    auto hist = std::make_shared<std::vector<int32_t>>();
    for (int i = 0; i < 40; ++i) hist->push_back(static_cast<int32_t>((*rng)() % d));
    for (float temperature : {0.0f, 0.8f}) {
      ops::SamplingSpec spec;
      spec.temperature = temperature;
      spec.top_p = 0.9f;
      spec.top_k = 20;
      spec.min_p = 0.05f;
      spec.repetition_penalty = 1.1f;
      spec.logit_bias = {{7, 3.0f}};
      cases.push_back({"sample", temperature == 0 ? "4x152064 greedy + penalties" : "4x152064 full chain", 0.0,
                       [rows, hist, spec, d] {
                         std::vector<float> ids;
                         for (int r = 0; r < 4; ++r) {
                           int32_t id = -1;
                           ops::sample(rows->data() + r * d, d, spec, hist->data(), static_cast<int64_t>(hist->size()),
                                       0.25 * r + 0.1, &id);
                           ids.push_back(static_cast<float>(id));
                         }
                         return ids;
                       }});
    }
  }
  for (auto act : {ops::Activation::kSilu, ops::Activation::kGeluTanh, ops::Activation::kGeluErf,
                   ops::Activation::kQuickGelu, ops::Activation::kRelu}) {
    auto x = std::make_shared<std::vector<float>>(random_vec(*rng, 4864 + 3, -10.0f, 10.0f));
    auto up = std::make_shared<std::vector<float>>(random_vec(*rng, 4864 + 3));
    std::string name = "act " + std::to_string(static_cast<int>(act));
    cases.push_back({"activate", name, 1e-12, [=] {
                       std::vector<float> y = *x;
                       ops::activate(y.data(), static_cast<int64_t>(y.size()), act);
                       return y;
                     }});
    cases.push_back({"gated_activate", name, 1e-12, [=] {
                       std::vector<float> y = *x;
                       ops::gated_activate(y.data(), up->data(), static_cast<int64_t>(y.size()), act);
                       return y;
                     }});
  }
  {
    auto x = std::make_shared<std::vector<float>>(random_vec(*rng, 6 * 1003, -20.0f, 20.0f));
    cases.push_back({"softmax", "6x1003", 1e-12, [=] {
                       std::vector<float> y = *x;
                       ops::softmax(y.data(), 6, 1003);
                       return y;
                     }});
  }
  {
    const int64_t d = 152064;
    auto x = std::make_shared<std::vector<float>>(argmax_rows(*rng, d));
    cases.push_back({"argmax", "5x152064 ties, NaN, -inf", 0.0, [x, d] {
                       std::vector<int32_t> ids(5);
                       ops::argmax(x->data(), 5, d, ids.data());
                       return std::vector<float>(ids.begin(), ids.end());
                     }});
  }
  {
    static const int32_t groups[40] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    struct A {
      std::string what;
      int64_t nq, nk, q0, nh, nkv, hd;
      float cap;
      ops::AttentionMask mask;
    };
    for (const A& a : std::vector<A>{{"prefill gqa causal", 24, 24, 0, 14, 2, 64, 0.0f, {}},
                                     {"decode", 1, 40, 39, 14, 2, 64, 0.0f, {}},
                                     {"sliding window + softcap", 30, 30, 0, 8, 4, 128, 50.0f, {true, 8, nullptr, 0}},
                                     {"image groups", 20, 20, 0, 4, 1, 72, 0.0f, {true, 0, groups, 40}}}) {
      auto q = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(a.nq * a.nh * a.hd), -2, 2));
      auto k = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(a.nk * a.nkv * a.hd), -2, 2));
      auto v = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(a.nk * a.nkv * a.hd)));
      auto kp = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(a.nk));
      std::iota(kp->begin(), kp->end(), int64_t{0});
      cases.push_back({"attention", a.what, 1e-12, [=] {
                         std::vector<float> out(q->size());
                         ops::attention(q->data(), a.nq, a.q0, k->data(), v->data(), kp->data(), a.nk, a.nh, a.nkv,
                                        a.hd, 0.125f, a.cap, a.mask, out.data());
                         return out;
                       }});
    }
  }
  // KV-cache quantization: 9 rows of 2 kv heads x 128, every bit width the op takes, every group size.
  // Exact (tol 0): the SIMD tables have no entry, and a future one must give the same bits.
  for (int bits = 2; bits <= 8; ++bits)
    for (int group : {32, 64, 128}) {
      const int64_t rows = 9, n = 256;
      const std::string what = std::to_string(bits) + "-bit g" + std::to_string(group) + " 9x256";
      auto x = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(rows * n), -3.0f, 3.0f));
      cases.push_back({"kv_quantize", what, 0.0, [=] { return kv_quantize_flat(*x, rows, n, bits, group); }});
      auto packed = std::make_shared<std::vector<uint32_t>>(static_cast<size_t>(rows * ops::kv_packed_words(n, bits)));
      std::uniform_int_distribution<uint32_t> word;
      for (auto& w : *packed) w = word(*rng);
      auto scales = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(rows * n / group), -0.1f, 0.1f));
      auto biases = std::make_shared<std::vector<float>>(random_vec(*rng, scales->size(), -2.0f, 2.0f));
      cases.push_back({"kv_dequantize", what, 0.0, [=] {
                         std::vector<float> out(static_cast<size_t>(rows * n));
                         ops::kv_dequantize(packed->data(), scales->data(), biases->data(), rows, n, bits, group,
                                            out.data());
                         return out;
                       }});
    }
  // attention over a quantized KV cache: decode with GQA and a window, a few queries with softcap.
  for (int bits : {3, 4, 8}) {
    const int64_t nq = bits == 8 ? 3 : 1, nk = 70, nh = 8, nkv = 2, hd = 64, group = 32, row = nkv * hd;
    const std::string what = std::to_string(bits) + "-bit g32, " + std::to_string(nq) + " x 70 keys";
    auto q = std::make_shared<std::vector<float>>(random_vec(*rng, static_cast<size_t>(nq * nh * hd), -2, 2));
    auto planes = std::make_shared<std::vector<std::vector<float>>>();  // K scales, K biases, V scales, V biases
    auto packed = std::make_shared<std::vector<std::vector<uint32_t>>>(2);
    for (int p = 0; p < 2; ++p) {
      std::vector<float> x = random_vec(*rng, static_cast<size_t>(nk * row), -2.0f, 2.0f);
      (*packed)[p].resize(static_cast<size_t>(nk * ops::kv_packed_words(row, bits)));
      std::vector<float> sc(static_cast<size_t>(nk * row / group)), bi(sc.size());
      ops::kv_quantize(x.data(), nk, row, bits, group, (*packed)[p].data(), sc.data(), bi.data());
      planes->push_back(sc);
      planes->push_back(bi);
    }
    auto kp = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(nk));
    std::iota(kp->begin(), kp->end(), int64_t{0});
    ops::AttentionMask mask;
    mask.sliding_window = bits == 3 ? 50 : 0;
    const float cap = bits == 8 ? 30.0f : 0.0f;
    cases.push_back({"attention_quantized", what, 1e-12, [=] {
                       std::vector<float> out(q->size());
                       const ops::QuantizedKV kv{(*packed)[0].data(), (*planes)[0].data(), (*planes)[1].data(),
                                                 (*packed)[1].data(), (*planes)[2].data(), (*planes)[3].data(),
                                                 bits,                group};
                       ops::attention_quantized(q->data(), nq, nk - nq, kv, kp->data(), nk, nh, nkv, hd, 0.125f, cap,
                                                mask, out.data());
                       return out;
                     }});
  }
  {
    auto y = std::make_shared<std::vector<float>>(random_vec(*rng, 2053, -40.0f, 40.0f));
    auto x = std::make_shared<std::vector<float>>(random_vec(*rng, 2053));
    auto n = static_cast<int64_t>(y->size());
    cases.push_back({"add", "2053", 1e-14, [=] {
                       std::vector<float> r = *y;
                       ops::add(r.data(), x->data(), n);
                       return r;
                     }});
    cases.push_back({"mul", "2053", 1e-14, [=] {
                       std::vector<float> r = *y;
                       ops::mul(r.data(), x->data(), n);
                       return r;
                     }});
    cases.push_back({"scale", "2053", 1e-14, [=] {
                       std::vector<float> r = *y;
                       ops::scale(r.data(), 0.37f, n);
                       return r;
                     }});
    cases.push_back({"softcap", "2053 cap 30", 1e-12, [=] {
                       std::vector<float> r = *y;
                       ops::softcap(r.data(), n, 30.0f);
                       return r;
                     }});
  }
  return cases;
}

}  // namespace

TEST(KernelConformance, EveryOpHasACase) {
  std::set<std::string> covered;
  for (const Case& c : build_cases()) covered.insert(c.op);
  for (const char* op : ops::cpu::kKernelOps) EXPECT_TRUE(covered.count(op)) << "no conformance case for op " << op;
  for (const std::string& op : covered) {
    bool known = false;
    for (const char* k : ops::cpu::kKernelOps) known = known || op == k;
    EXPECT_TRUE(known) << "case for unknown op " << op;
  }
}

TEST(KernelConformance, EverySimdPathMatchesScalarReference) {
  std::vector<std::string> paths = ops::cpu_kernel_paths();
  if (paths.size() == 1) GTEST_SKIP() << "this CPU has only the reference path";
  const std::vector<Case> cases = build_cases();
  for (const Case& c : cases) {
    ASSERT_TRUE(ops::set_cpu_kernel_path("scalar"));
    std::vector<float> want = c.run();
    for (const std::string& path : paths) {
      if (path == "scalar") continue;
      ASSERT_TRUE(ops::set_cpu_kernel_path(path));
      std::vector<float> got = c.run();
      ASSERT_EQ(got.size(), want.size());
      EXPECT_LE(nmse(got.data(), to_double(want)), c.tol) << c.op << " [" << c.what << "] on " << path;
    }
  }
  ops::force_scalar_kernels(false);  // back to the default path
}

// The fused ops against the ops they fuse, on every path: linear_group must give each member's
// linear() result, add_rms_norm the result of add() then rms_norm().
TEST(KernelConformance, FusedOpsMatchTheirParts) {
  std::mt19937 rng(7);
  const int64_t d = 896, n = 5;
  std::vector<ops::Weight> ws = {dense_weight(random_tensor(rng, {896, d}, DType::kBF16)),
                                 dense_weight(random_tensor(rng, {128, d}, DType::kBF16)),
                                 random_quantized(rng, 4864, d, 4, 64, DType::kBF16)};
  Tensor bias = random_tensor(rng, {128}, DType::kF32);
  Tensor norm = random_tensor(rng, {d}, DType::kBF16);
  for (int64_t tokens : {int64_t{1}, n}) {
    std::vector<float> x = random_vec(rng, static_cast<size_t>(tokens * d));
    std::vector<float> r = random_vec(rng, static_cast<size_t>(tokens * d));
    for (const std::string& path : ops::cpu_kernel_paths()) {
      ASSERT_TRUE(ops::set_cpu_kernel_path(path));
      std::vector<std::vector<float>> grouped, single;
      std::vector<ops::LinearOut> outs;
      for (size_t i = 0; i < ws.size(); ++i) {
        grouped.emplace_back(static_cast<size_t>(tokens * ws[i].rows()));
        single.emplace_back(static_cast<size_t>(tokens * ws[i].rows()));
        outs.push_back({&ws[i], i == 1 ? &bias : nullptr, grouped.back().data()});
        ops::linear(x.data(), tokens, ws[i], i == 1 ? bias : Tensor(), single.back().data());
      }
      ops::linear_group(x.data(), tokens, outs.data(), static_cast<int>(outs.size()));
      for (size_t i = 0; i < ws.size(); ++i)
        EXPECT_LE(nmse(grouped[i].data(), to_double(single[i])), 1e-12)
            << "linear_group member " << i << " n=" << tokens << " on " << path;

      std::vector<float> xa = x, ya(x.size()), xb = x, yb(x.size());
      ops::add_rms_norm(xa.data(), r.data(), tokens, d, norm, 1e-6f, 0.0f, ya.data());
      ops::add(xb.data(), r.data(), tokens * d);
      ops::rms_norm(xb.data(), tokens, d, norm, 1e-6f, 0.0f, yb.data());
      EXPECT_LE(nmse(xa.data(), to_double(xb)), 1e-14) << "add_rms_norm x on " << path;
      EXPECT_LE(nmse(ya.data(), to_double(yb)), 1e-12) << "add_rms_norm y on " << path;
      if (path == "scalar") {
        EXPECT_EQ(xa, xb) << "reference add_rms_norm is not exactly add + rms_norm";
        EXPECT_EQ(ya, yb) << "reference add_rms_norm is not exactly add + rms_norm";
      }
    }
  }
  ops::force_scalar_kernels(false);
}

// The KV-cache ops against core's checkpoint quantizer (quantize_affine with f32 scales: the same
// MLX rule through its own row loop and packing) — codes, scales and biases bit for bit — and the
// dequantization against core's dequantize_row, on every path; MLX's bit widths and group sizes, with
// rows that hit the rule's corners: constant groups (the 1e-7 scale floor), all-negative and
// all-positive groups (edge on either side), zeros, and codes exactly halfway between two steps.
TEST(KernelConformance, KvQuantizeMatchesCoreQuantizer) {
  std::mt19937 rng(11);
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int group : {32, 64, 128}) {
      const int64_t rows = 7, n = 256;
      std::vector<float> x = random_vec(rng, static_cast<size_t>(rows * n), -2.0f, 2.0f);
      const float top = static_cast<float>((1 << bits) - 1);
      for (int64_t j = 0; j < n; ++j) {
        x[static_cast<size_t>(1 * n + j)] = 0.75f;                                          // constant
        x[static_cast<size_t>(2 * n + j)] = -0.25f - 0.01f * static_cast<float>(j % 17);  // all negative
        x[static_cast<size_t>(3 * n + j)] = 0.5f + 0.02f * static_cast<float>(j % 13);    // all positive
        x[static_cast<size_t>(4 * n + j)] = j % 3 == 0 ? 0.0f : x[static_cast<size_t>(4 * n + j)];
        // min 0, max 2^b - 1 in every group: scale -1, bias top, so k + 0.5 lands exactly halfway.
        const int64_t jg = j % group;
        x[static_cast<size_t>(5 * n + j)] =
            jg == 0 ? 0.0f : jg == 1 ? top : std::fmod(static_cast<float>(jg), top - 1.0f) + 0.5f;
      }
      const QuantizedMatrix m = quantize_affine(x.data(), rows, n, {bits, group}, DType::kF32);
      for (const std::string& path : ops::cpu_kernel_paths()) {
        ASSERT_TRUE(ops::set_cpu_kernel_path(path));
        SCOPED_TRACE(std::to_string(bits) + "-bit g" + std::to_string(group) + " on " + path);
        const int64_t words = ops::kv_packed_words(n, bits), groups = n / group;
        std::vector<uint32_t> packed(static_cast<size_t>(rows * words), 0xdeadbeefu);  // fully overwritten
        std::vector<float> scales(static_cast<size_t>(rows * groups)), biases(scales.size());
        ops::kv_quantize(x.data(), rows, n, bits, group, packed.data(), scales.data(), biases.data());
        ASSERT_EQ(m.packed.numel(), static_cast<int64_t>(packed.size()));
        EXPECT_EQ(std::memcmp(packed.data(), m.packed.raw(), packed.size() * 4), 0) << "codes differ";
        EXPECT_EQ(std::memcmp(scales.data(), m.scales.raw(), scales.size() * 4), 0) << "scales differ";
        EXPECT_EQ(std::memcmp(biases.data(), m.biases.raw(), biases.size() * 4), 0) << "biases differ";
        std::vector<float> got(static_cast<size_t>(rows * n)), want(static_cast<size_t>(n));
        ops::kv_dequantize(packed.data(), scales.data(), biases.data(), rows, n, bits, group, got.data());
        for (int64_t r = 0; r < rows; ++r) {
          dequantize_row(m, r, want.data());
          EXPECT_EQ(std::memcmp(got.data() + r * n, want.data(), want.size() * 4), 0) << "row " << r;
          // And the values are a quantization of x: within half a step, or up to two where snapping
          // shrank the step and the far end of the range clips to the top code (core/quantize.h).
          for (int64_t j = 0; j < n; ++j) {
            const float s = std::fabs(scales[static_cast<size_t>(r * groups + j / group)]);
            ASSERT_LE(std::fabs(got[static_cast<size_t>(r * n + j)] - x[static_cast<size_t>(r * n + j)]), 2.0f * s + 1e-6f)
                << "row " << r << " value " << j;
          }
        }
      }
    }
  ops::force_scalar_kernels(false);
}

// attention_quantized is defined as kv_dequantize of K and V followed by attention: on every path the
// op must give exactly what the two ops give. The reference runs them; the AVX-512 entry dequantizes
// each K/V chunk inside its row kernel (decode, masked prefill) or dequantizes and calls its attention
// (bidirectional blocks), so on the default path it must equal the default path's two ops bit for bit.
// Cases: decode (1 query, causal), a masked prefill block (9 queries, sliding window) and a
// bidirectional block (9 queries: the flash kernel), at every bit width incl. codes that straddle words
// (7-bit only a KV cache uses). The AVX2 entry dequantizes inside its row kernel below 8 queries.
TEST(KernelConformance, AttentionQuantizedIsDequantizeThenAttention) {
  std::mt19937 rng(5);
  const int64_t nk = 90;
  struct Shape {
    int64_t nq, nh, nkv, hd;
    int mask;  // 0: causal, 1: sliding window 60, 2: none (bidirectional)
  };
  const Shape shapes[] = {{1, 9, 3, 64, 0}, {2, 12, 3, 128, 1}, {9, 4, 2, 64, 1}, {9, 4, 2, 128, 2}, {1, 2, 1, 96, 0}};
  for (const Shape& sh : shapes)
  for (int bits : {2, 3, 4, 5, 6, 7, 8}) {
    for (int group : {32, 64, 128}) {
      if (sh.hd % group != 0) continue;
      const int64_t nq = sh.nq, nh = sh.nh, nkv = sh.nkv, hd = sh.hd, row = nkv * hd;
      SCOPED_TRACE(std::to_string(bits) + "-bit g" + std::to_string(group) + " nq " + std::to_string(nq) + " hd " +
                   std::to_string(hd) + " mask " + std::to_string(sh.mask));
      const int64_t words = ops::kv_packed_words(row, bits), groups = row / group;
      std::vector<float> q = random_vec(rng, static_cast<size_t>(nq * nh * hd), -2, 2);
      std::vector<uint32_t> pk(static_cast<size_t>(nk * words)), pv(pk.size());
      std::vector<float> ks(static_cast<size_t>(nk * groups)), kb(ks.size()), vs(ks.size()), vb(ks.size());
      std::vector<float> x = random_vec(rng, static_cast<size_t>(nk * row), -3, 3);
      ops::kv_quantize(x.data(), nk, row, bits, group, pk.data(), ks.data(), kb.data());
      x = random_vec(rng, static_cast<size_t>(nk * row), -1, 1);
      ops::kv_quantize(x.data(), nk, row, bits, group, pv.data(), vs.data(), vb.data());
      std::vector<int64_t> kpos(static_cast<size_t>(nk));
      for (int64_t j = 0; j < nk; ++j) kpos[j] = (j * 7) % nk;  // a permuted (ring-like) order
      ops::AttentionMask mask;
      mask.causal = sh.mask != 2;
      mask.sliding_window = sh.mask == 1 ? 60 : 0;
      std::vector<float> kd(static_cast<size_t>(nk * row)), vd(kd.size()), want(q.size()), got(q.size());
      ops::kv_dequantize(pk.data(), ks.data(), kb.data(), nk, row, bits, group, kd.data());
      ops::kv_dequantize(pv.data(), vs.data(), vb.data(), nk, row, bits, group, vd.data());
      ops::attention(q.data(), nq, nk - nq, kd.data(), vd.data(), kpos.data(), nk, nh, nkv, hd, 0.09f, 0.0f, mask,
                     want.data());
      const ops::QuantizedKV kv{pk.data(), ks.data(), kb.data(), pv.data(), vs.data(), vb.data(), bits, group};
      ops::force_scalar_kernels(true);
      ops::attention_quantized(q.data(), nq, nk - nq, kv, kpos.data(), nk, nh, nkv, hd, 0.09f, 0.0f, mask, got.data());
      std::vector<float> kd_ref(kd.size()), ref_want(q.size());
      ops::kv_dequantize(pk.data(), ks.data(), kb.data(), nk, row, bits, group, kd_ref.data());
      ops::attention(q.data(), nq, nk - nq, kd.data(), vd.data(), kpos.data(), nk, nh, nkv, hd, 0.09f, 0.0f, mask,
                     ref_want.data());
      ops::force_scalar_kernels(false);
      EXPECT_EQ(std::memcmp(got.data(), ref_want.data(), got.size() * 4), 0) << "scalar path";
      // Dequantized values are the same bits on every path (w = scale * q + bias, product rounded).
      EXPECT_EQ(std::memcmp(kd.data(), kd_ref.data(), kd.size() * 4), 0) << "kv_dequantize, default path";
      std::vector<float> got_default(q.size());
      ops::attention_quantized(q.data(), nq, nk - nq, kv, kpos.data(), nk, nh, nkv, hd, 0.09f, 0.0f, mask,
                               got_default.data());
      EXPECT_EQ(std::memcmp(got_default.data(), want.data(), got.size() * 4), 0) << "default path";
      EXPECT_LE(nmse(got_default.data(), to_double(ref_want)), 1e-12) << "default path vs the reference";
    }
  }
  // Bad arguments are typed errors naming the op.
  std::vector<uint32_t> p(64);
  std::vector<float> s(8), o(64), q(64);
  std::vector<int64_t> kpos = {0, 1};
  const ops::QuantizedKV kv{p.data(), s.data(), s.data(), p.data(), s.data(), s.data(), 4, 64};
  try {
    ops::attention_quantized(q.data(), 1, 1, kv, kpos.data(), 2, 1, 1, 32, 1.0f, 0.0f, {}, o.data());
    ADD_FAILURE() << "group 64 over head_dim 32 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention_quantized"), std::string::npos) << e.what();
  }
  ops::QuantizedKV seven = kv;
  seven.bits = 9;
  EXPECT_THROW(ops::attention_quantized(q.data(), 1, 1, seven, kpos.data(), 2, 1, 1, 64, 1.0f, 0.0f, {}, o.data()),
               Error);
}

TEST(KernelConformance, KvQuantizeRefusesBadShapes) {
  std::vector<float> x(96, 1.0f), s(3), b(3);
  std::vector<uint32_t> p(96);
  EXPECT_THROW(ops::kv_quantize(x.data(), 1, 96, 1, 32, p.data(), s.data(), b.data()), Error);   // bits
  EXPECT_THROW(ops::kv_quantize(x.data(), 1, 96, 9, 32, p.data(), s.data(), b.data()), Error);   // bits
  EXPECT_THROW(ops::kv_quantize(x.data(), 1, 96, 4, 48, p.data(), s.data(), b.data()), Error);   // group
  EXPECT_THROW(ops::kv_quantize(x.data(), 1, 80, 4, 32, p.data(), s.data(), b.data()), Error);   // n % group
  EXPECT_THROW(ops::kv_dequantize(p.data(), s.data(), b.data(), 1, 96, 4, 64, x.data()), Error);  // n % group
  try {
    ops::kv_quantize(x.data(), 1, 80, 4, 32, p.data(), s.data(), b.data());
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("kv_quantize"), std::string::npos) << e.what();
  }
}
