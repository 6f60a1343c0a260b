// `vlmcheck convert` end to end on the text fixture (tests/fixtures/text/llama, f32 Llama) and the LLaVA
// vision fixture (tests/fixtures/vision/llava, transformers 5 layout): names and layouts as mlx-lm / mlx-vlm
// write them, the config's quantization entries, side files byte-identical, every quantized tensor equal to an
// independent scalar implementation of MLX's affine rule written here from the formula (not core/quantize),
// the converted model's first-step logits equal to the same model with the dequantized weights and within a
// bounded distance of the original, `vlmcheck generate` running on it, byte-identical reruns, and bad flags.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstring>
#include <functional>
#include <limits>
#include <set>

#include "cli/exit_codes.h"
#include "core/json.h"
#include "core/quant.h"
#include "generate/kv_cache.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "models/registry.h"
#include "support/test_support.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

std::string text_fixture() { return test::source_dir() + "/tests/fixtures/text/llama"; }
// The LLaVA fixture as a model folder: its reference.json / reference.safetensors (transformers' outputs,
// not weights) left out, as a Hub snapshot would be.
std::string vision_fixture() {
  static test::TempDir dir;
  static const std::string folder = [] {
    const std::string f = dir / "llava";
    fs::create_directories(f);
    for (const auto& e : fs::directory_iterator(test::source_dir() + "/tests/fixtures/vision/llava"))
      if (e.path().stem() != "reference") fs::copy_file(e.path(), f + "/" + e.path().filename().string());
    return f;
  }();
  return folder;
}

void convert_ok(const std::string& model, const std::string& out, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"convert", "--model", model, "--out", out};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = test::run_vlmcheck(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("quantized"), std::string::npos) << r.out;
}

bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

std::vector<float> as_f32(const Tensor& t) {
  Tensor f = t.to_f32();
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

// MLX's affine quantization of one group, written from the published formula (engine_facts.md §1.5 and
// mlx/backend/metal/kernels/quantized.h), independently of src/core/quantize.cpp.
struct RefGroup {
  std::vector<uint32_t> q;
  float scale, bias;
};
RefGroup reference_group(const float* w, int g, int bits) {
  const float n_bins = static_cast<float>((1 << bits) - 1);
  float w_max = 0.0f, w_min = std::numeric_limits<float>::max();
  for (int i = 0; i < g; ++i) {
    w_max = std::max(w_max, w[i]);
    w_min = std::min(w_min, w[i]);
  }
  float scale = std::max((w_max - w_min) / n_bins, 1e-7f);
  const bool side = std::fabs(w_min) > std::fabs(w_max);
  scale = side ? scale : -scale;
  const float edge = side ? w_min : w_max;
  const float q0 = std::round(edge / scale);
  float bias = 0.0f;
  if (q0 != 0.0f) {
    scale = edge / q0;
    bias = edge;
  }
  RefGroup r{std::vector<uint32_t>(static_cast<size_t>(g)), scale, bias};
  for (int i = 0; i < g; ++i)
    r.q[static_cast<size_t>(i)] = static_cast<uint32_t>(std::min(std::round((w[i] - bias) / scale), n_bins));
  return r;
}

// Every quantized module of `out` (names ending .scales) against the reference rule applied to the source
// weight `src_name_of(module)`; returns the number of modules checked.
int expect_quantized_match_reference(const Checkpoint& src, const Checkpoint& out, int bits, int group,
                                     const std::function<std::string(const std::string&)>& src_name_of) {
  int checked = 0;
  for (const std::string& name : out.names()) {
    if (!ends_with(name, ".scales")) continue;
    const std::string module = name.substr(0, name.size() - 7);
    Tensor packed = out.get(module + ".weight"), scales = out.get(module + ".scales"),
           biases = out.get(module + ".biases");
    Tensor w = src.get(src_name_of(module));
    const int64_t rows = w.dim(0), cols = w.dim(1);
    EXPECT_EQ(packed.dtype(), DType::kU32) << module;
    EXPECT_EQ(packed.shape(), (Shape{rows, cols * bits / 32})) << module;
    EXPECT_EQ(scales.shape(), (Shape{rows, cols / group})) << module;
    EXPECT_EQ(scales.dtype(), w.dtype()) << module;
    EXPECT_EQ(biases.dtype(), w.dtype()) << module;
    std::vector<float> wf = as_f32(w), sf = as_f32(scales), bf = as_f32(biases);
    int64_t code_mismatch = 0, param_mismatch = 0;
    double worst_err_over_step = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto* row = packed.data<uint32_t>() + r * cols * bits / 32;
      for (int64_t g0 = 0; g0 < cols; g0 += group) {
        RefGroup ref = reference_group(wf.data() + r * cols + g0, group, bits);
        const size_t gi = static_cast<size_t>(r * (cols / group) + g0 / group);
        // Scales/biases are stored in the weight's dtype (f32 fixtures: exact).
        if (sf[gi] != ref.scale || bf[gi] != ref.bias) ++param_mismatch;
        for (int64_t c = 0; c < group; ++c) {
          uint32_t q = unpack_affine(row, g0 + c, bits);
          if (q != ref.q[static_cast<size_t>(c)]) ++code_mismatch;
          const double deq = static_cast<double>(sf[gi]) * q + bf[gi];
          const double step = std::fabs(static_cast<double>(sf[gi]));
          worst_err_over_step = std::max(worst_err_over_step, std::fabs(deq - wf[static_cast<size_t>(r * cols + g0 + c)]) / step);
        }
      }
    }
    EXPECT_EQ(code_mismatch, 0) << module;
    EXPECT_EQ(param_mismatch, 0) << module;
    // Round-to-nearest gives half a step; the snapped edge can clip the far end by up to one more step.
    EXPECT_LE(worst_err_over_step, 1.5 + 1e-4) << module;
    ++checked;
  }
  return checked;
}

// The source checkpoint's names that the converted text model must hold: every tensor, with each 2-D
// weight whose input dim divides `group` replaced by .weight/.scales/.biases.
std::set<std::string> expected_text_names(const Checkpoint& src, int group) {
  std::set<std::string> want;
  for (const std::string& n : src.names()) {
    want.insert(n);
    const TensorInfo& info = src.info(n);
    if (info.shape.size() == 2 && ends_with(n, ".weight") && info.shape[1] % group == 0) {
      const std::string m = n.substr(0, n.size() - 7);
      want.insert(m + ".scales");
      want.insert(m + ".biases");
    }
  }
  return want;
}

std::set<std::string> names_of(const Checkpoint& c) {
  auto v = c.names();
  return {v.begin(), v.end()};
}

TEST(CliConvert, TextFixtureIsWrittenInTheMlxLmLayout) {
  test::TempDir tmp;
  const std::string out = tmp / "llama-4bit";
  convert_ok(text_fixture(), out, {"--bits", "4", "--group-size", "32"});
  Checkpoint src = Checkpoint::open(text_fixture(), LoadMode::kEager);
  Checkpoint dst = Checkpoint::open(out, LoadMode::kEager);
  EXPECT_EQ(names_of(dst), expected_text_names(src, 32));
  // Norms and other 1-D tensors are carried unchanged (dtype and bytes).
  for (const std::string& n : src.names()) {
    if (src.info(n).shape.size() != 1) continue;
    Tensor a = src.get(n), b = dst.get(n);
    ASSERT_EQ(b.dtype(), a.dtype()) << n;
    ASSERT_EQ(a.nbytes(), b.nbytes()) << n;
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << n;
  }
  EXPECT_EQ(expect_quantized_match_reference(src, dst, 4, 32, [](const std::string& m) { return m + ".weight"; }),
            3 * 7 + 2);  // 7 Linear per layer x 3 layers, plus embed_tokens and lm_head

  // MLX's file conventions: metadata format mlx, an index for the single shard.
  ASSERT_EQ(dst.files().size(), 1u);
  EXPECT_EQ(dst.files()[0]->metadata().at("format"), "mlx");
  Json index = read_json_file(out + "/model.safetensors.index.json");
  EXPECT_EQ(index["weight_map"].size(), dst.names().size());
  for (const std::string& n : dst.names()) EXPECT_EQ(index["weight_map"].value(n, ""), "model.safetensors") << n;
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), dst.total_bytes());

  // Config: the source's keys and values, plus the two quantization entries.
  Json sc = read_json_file(text_fixture() + "/config.json"), dc = read_json_file(out + "/config.json");
  for (auto it = sc.begin(); it != sc.end(); ++it) EXPECT_EQ(dc.at(it.key()), it.value()) << it.key();
  const Json want = Json::parse(R"({"group_size": 32, "bits": 4, "mode": "affine"})");
  EXPECT_EQ(dc.at("quantization"), want);
  EXPECT_EQ(dc.at("quantization_config"), want);
  EXPECT_EQ(dc.size(), sc.size() + 2);

  // Every tokenizer / template / json side file copied byte for byte.
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"})
    EXPECT_EQ(test::read_file(out + "/" + f), test::read_file(text_fixture() + "/" + f)) << f;
}

TEST(CliConvert, GroupSizeThatDoesNotDivideTheInputLeavesTheModuleDenseAndUnlisted) {
  // hidden 64, intermediate 128: at group 128 only down_proj (input 128) can be quantized (MLX's rule).
  test::TempDir tmp;
  const std::string out = tmp / "g128";
  convert_ok(text_fixture(), out, {"--bits", "8", "--group-size", "128"});
  Checkpoint src = Checkpoint::open(text_fixture(), LoadMode::kEager);
  Checkpoint dst = Checkpoint::open(out, LoadMode::kEager);
  EXPECT_EQ(names_of(dst), expected_text_names(src, 128));
  EXPECT_TRUE(dst.has("model.layers.0.mlp.down_proj.scales"));
  EXPECT_FALSE(dst.has("model.layers.0.self_attn.q_proj.scales"));
  EXPECT_FALSE(dst.has("model.embed_tokens.scales"));
  EXPECT_EQ(dst.info("model.layers.0.self_attn.q_proj.weight").dtype, DType::kF32);
  EXPECT_EQ(expect_quantized_match_reference(src, dst, 8, 128, [](const std::string& m) { return m + ".weight"; }), 3);
  Json dc = read_json_file(out + "/config.json");
  EXPECT_EQ(dc["quantization"], Json::parse(R"({"group_size": 128, "bits": 8, "mode": "affine"})"));
}

// First-position... last-prompt-position logits of a model folder on `ids` (one prefill).
std::vector<float> prompt_logits(const std::string& folder, const std::vector<int32_t>& ids) {
  LoadedModel m = load_model(folder, {});
  LanguageModel& lm = *m.language_model;
  const int64_t n = static_cast<int64_t>(ids.size()), V = lm.vocab_size(), H = lm.hidden_size();
  std::unique_ptr<KVCache> cache = make_kv_cache(lm.cache_layout(), KVCacheOptions{});
  std::vector<float> x(static_cast<size_t>(n * H)), logits(static_cast<size_t>(V));
  std::vector<int64_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = i;
  lm.embed(ids.data(), n, x.data());
  ops::AttentionMask mask;
  lm.forward(x.data(), n, Positions{pos.data(), n, 1}, *cache, mask, logits.data(), false);
  return logits;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}

// A dense f32 copy of a converted text model: every quantized weight replaced by core's reference
// dequantization, side files from the text fixture.
void write_dequantized(const std::string& quantized, const std::string& deq, int bits, int group) {
  fs::create_directories(deq);
  Checkpoint dst = Checkpoint::open(quantized, LoadMode::kEager);
  SafetensorsWriter w;
  for (const std::string& n : dst.names()) {
    if (ends_with(n, ".scales") || ends_with(n, ".biases")) continue;
    const std::string m = n.substr(0, n.size() - 7);
    if (ends_with(n, ".weight") && dst.has(m + ".scales")) {
      QuantizedMatrix q;
      q.packed = dst.get(n);
      q.scales = dst.get(m + ".scales");
      q.biases = dst.get(m + ".biases");
      q.spec = {bits, group};
      q.rows = q.packed.dim(0);
      q.cols = q.packed.dim(1) * 32 / bits;
      w.add(n, dequantize(q));
    } else {
      w.add(n, dst.get(n).clone());
    }
  }
  w.write(deq + "/model.safetensors");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"})
    fs::copy_file(text_fixture() + "/" + f, deq + "/" + f);
  test::write_file(deq + "/config.json", test::read_file(text_fixture() + "/config.json"));
}

TEST(CliConvert, ConvertedTextModelGeneratesAndItsLogitsAreTheDequantizedModels) {
  test::TempDir tmp;
  const std::string out = tmp / "q4";
  convert_ok(text_fixture(), out, {"--bits", "4", "--group-size", "32"});

  // The CLI runs on it.
  auto g = test::run_vlmcheck({"generate", "--model", out, "--prompt", "Describe the small red boat.", "--max-tokens",
                               "8", "--json"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  Json gj = Json::parse(g.out);
  EXPECT_EQ(gj["generation_tokens"], 8);

  // Oracle: the same model with every quantized weight replaced by its dequantization (dense f32, core's
  // reference dequantize): the quantized kernels must give the same logits.
  const std::string deq = tmp / "dequantized";
  write_dequantized(out, deq, 4, 32);
  Json ref = read_json_file(text_fixture() + "/reference.json");
  const auto ids = ref["input_ids"].get<std::vector<int32_t>>();
  // The same conversion at 8 bits: its step is 255/15 = 17x finer, so its distance to the original must
  // shrink accordingly — quantization noise, not a layout error, is what separates 4-bit from the original.
  const std::string out8 = tmp / "q8";
  convert_ok(text_fixture(), out8, {"--bits", "8", "--group-size", "32"});
  write_dequantized(out8, tmp / "dequantized8", 8, 32);
  std::vector<float> lq = prompt_logits(out, ids), ld = prompt_logits(deq, ids), lo = prompt_logits(text_fixture(), ids);
  std::vector<float> l8 = prompt_logits(out8, ids), l8d = prompt_logits(tmp / "dequantized8", ids);
  EXPECT_LE(rel_diff(l8, l8d), 1e-4) << "8-bit vs its dequantized copy";
  const double vs_dequantized = rel_diff(lq, ld), vs_original = rel_diff(lq, lo), q8_vs_original = rel_diff(l8, lo);
  std::printf("[convert] llama fixture, g32, last-position logits (max |diff| / max |ref|): 4-bit vs its dequantized "
              "f32 copy %.2e; vs the original: 4-bit %.3f, 8-bit %.4f\n",
              vs_dequantized, vs_original, q8_vs_original);
  EXPECT_LE(vs_dequantized, 1e-4);
  // Random-weight fixture: logits span a small range, so 4-bit noise is a large fraction of it (measured
  // 0.36); unrelated logits (a wrong transpose, swapped scales/biases) give >= 1.
  EXPECT_LE(vs_original, 0.6);
  EXPECT_LE(q8_vs_original, vs_original / 4);
  EXPECT_GT(vs_original, 0.0);  // it really is quantized
}

TEST(CliConvert, LlavaFixtureIsWrittenInTheMlxVlmLayout) {
  test::TempDir tmp;
  const std::string out = tmp / "llava-4bit";
  convert_ok(vision_fixture(), out, {"--bits", "4", "--group-size", "32"});
  Checkpoint src = Checkpoint::open(vision_fixture(), LoadMode::kEager);
  Checkpoint dst = Checkpoint::open(out, LoadMode::kEager);
  // transformers 5 names -> mlx-vlm names, and back for the oracle.
  auto src_of = [](const std::string& n) -> std::string {
    if (n.rfind("vision_tower.vision_model.", 0) == 0) return "vision_tower." + n.substr(26);
    return n;  // this fixture stores language_model.* and multi_modal_projector.* as mlx-vlm does
  };
  int lm = 0, vision = 0, projector = 0;
  for (const std::string& n : dst.names()) {
    if (n.rfind("language_model.model.", 0) == 0 || n.rfind("language_model.lm_head.", 0) == 0) {
      ++lm;
      continue;
    }
    if (n.rfind("vision_tower.vision_model.", 0) == 0) ++vision;
    else if (n.rfind("multi_modal_projector.", 0) == 0) ++projector;
    else ADD_FAILURE() << "unexpected name " << n;
    // Never quantized, and the same values (the patch conv channels-last).
    EXPECT_FALSE(ends_with(n, ".scales")) << n;
    Tensor a = src.get(src_of(n)), b = dst.get(n);
    ASSERT_EQ(a.dtype(), b.dtype()) << n;
    if (ends_with(n, "patch_embedding.weight")) {
      const int64_t O = a.dim(0), I = a.dim(1), K = a.dim(2);
      ASSERT_EQ(b.shape(), (Shape{O, K, K, I}));
      const float* pa = a.data<float>();
      const float* pb = b.data<float>();
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i)
          for (int64_t y = 0; y < K; ++y)
            for (int64_t x = 0; x < K; ++x)
              ASSERT_EQ(pa[((o * I + i) * K + y) * K + x], pb[((o * K + y) * K + x) * I + i]);
    } else {
      ASSERT_EQ(a.shape(), b.shape()) << n;
      EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << n;
    }
  }
  const std::vector<std::string> src_names = src.names();
  EXPECT_EQ(vision, static_cast<int>(std::count_if(src_names.begin(), src_names.end(), [](const std::string& n) {
              return n.rfind("vision_tower.", 0) == 0;
            })));
  EXPECT_EQ(projector, 4);
  EXPECT_GT(lm, 0);
  EXPECT_EQ(expect_quantized_match_reference(src, dst, 4, 32, [](const std::string& m) { return m + ".weight"; }),
            2 * 7 + 2);
  Json dc = read_json_file(out + "/config.json");
  EXPECT_EQ(dc["quantization"], Json::parse(R"({"group_size": 32, "bits": 4, "mode": "affine"})"));
  EXPECT_EQ(dc["quantization_config"], dc["quantization"]);
  EXPECT_EQ(dc["vision_config"], read_json_file(vision_fixture() + "/config.json")["vision_config"]);
  for (const char* f : {"processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"})
    EXPECT_EQ(test::read_file(out + "/" + f), test::read_file(vision_fixture() + "/" + f)) << f;
  // Our loader takes it as an mlx-vlm checkpoint (vision tower and quantized language model).
  LoadedModel m = load_model(out, {});
  EXPECT_TRUE(m.vision != nullptr);
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

TEST(CliConvert, TwoRunsAreByteIdentical) {
  test::TempDir tmp;
  for (const std::string& model : {text_fixture(), vision_fixture()}) {
    const std::string a = tmp / (fs::path(model).filename().string() + "-a");
    const std::string b = tmp / (fs::path(model).filename().string() + "-b");
    convert_ok(model, a, {"--bits", "4", "--group-size", "32", "--dtype", "bf16"});
    convert_ok(model, b, {"--bits", "4", "--group-size", "32", "--dtype", "bf16"});
    ASSERT_EQ(files_in(a), files_in(b));
    for (const std::string& f : files_in(a)) EXPECT_EQ(test::read_file(a + "/" + f), test::read_file(b + "/" + f)) << f;
    // --dtype bf16 reached every float tensor and the scales.
    Checkpoint c = Checkpoint::open(a, LoadMode::kLazy);
    for (const std::string& n : c.names())
      EXPECT_TRUE(c.info(n).dtype == DType::kBF16 || c.info(n).dtype == DType::kU32) << n;
  }
}

TEST(CliConvert, BadFlagsExitTwoWithAClearMessage) {
  test::TempDir tmp;
  struct Case {
    std::vector<std::string> extra;
    std::string flag;
  };
  const std::vector<Case> cases = {{{"--bits", "7"}, "--bits"},
                                   {{"--group-size", "48"}, "--group-size"},
                                   {{"--dtype", "f64"}, "--dtype"}};
  for (const Case& c : cases) {
    std::vector<std::string> args = {"convert", "--model", text_fixture(), "--out", tmp / "x"};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    auto r = test::run_vlmcheck(args);
    EXPECT_EQ(r.exit_code, cli::kExitUsage) << c.flag;
    EXPECT_NE(r.err.find(c.flag), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "x")) << c.flag;
  }
  auto missing = test::run_vlmcheck({"convert", "--model", text_fixture()});
  EXPECT_EQ(missing.exit_code, cli::kExitUsage);
  EXPECT_NE(missing.err.find("--out"), std::string::npos) << missing.err;

  // A non-empty output folder is refused (as MLX does), untouched.
  test::write_file(tmp / "full/keep.txt", "mine");
  auto full = test::run_vlmcheck({"convert", "--model", text_fixture(), "--out", tmp / "full"});
  EXPECT_EQ(full.exit_code, cli::kExitUsage);
  EXPECT_NE(full.err.find("not empty"), std::string::npos) << full.err;
  EXPECT_EQ(files_in(tmp / "full"), std::vector<std::string>{"keep.txt"});

  // An already-quantized source is refused.
  convert_ok(text_fixture(), tmp / "q", {"--group-size", "32"});
  auto again = test::run_vlmcheck({"convert", "--model", tmp / "q", "--out", tmp / "qq"});
  EXPECT_EQ(again.exit_code, cli::kExitUnsupported);
  EXPECT_NE(again.err.find("already quantized"), std::string::npos) << again.err;

  // A missing model folder.
  auto none = test::run_vlmcheck({"convert", "--model", tmp / "nope", "--out", tmp / "o"});
  EXPECT_EQ(none.exit_code, cli::kExitNotFound) << none.err;
}

}  // namespace
}  // namespace vlm
