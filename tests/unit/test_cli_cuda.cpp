// The language model on CUDA (`--device cuda`), end to end.
// Everywhere: a vlmcheck without a usable GPU refuses `generate --device cuda` and `bench --device cuda`
// with the backend's reason before loading weights or writing a synthetic checkpoint, and the default
// device (auto) is the CPU there.
// Where a GPU is usable (the other cases skip elsewhere): every text fixture of tests/fixtures/text (the
// families, RoPE scalings and LoRA adapters) with its language model moved to CUDA — weights, KV cache and
// every op on the GPU, logits copied back — against transformers' logits and greedy tokens, with the
// tolerance of test_generate_parity_text (1e-3 relative per position); with chunked prefill and a rotating
// cache against the same model on the CPU run the same way; every VLM fixture with its reference images
// (vision tower and projector on CUDA too) against transformers' features and logits and against the same
// model's features on the CPU; bf16 towers of real width (SigLIP, Qwen2.5-VL) on CUDA against the CPU, with
// their encode times; the CLI's --json for cpu vs cuda; bench on CUDA. Everywhere, every VLM family's vision
// model refuses an unusable device and stays whole.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <functional>
#include <random>
#include <set>

#include "cli/exit_codes.h"
#include "core/error.h"
#include "core/json.h"
#include "core/thread_pool.h"
#include "generate/benchmark.h"
#include "generate/kv_cache.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "models/layers/decoder.h"
#include "models/registry.h"
#include "models/vision/vision_device.h"
#include "models/vision/vision_encoder.h"
#include "support/test_support.h"
#include "test_models_vlm_fixture.h"
#include "test_text_model_run.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;
using test::run_text;
using test::TextRun;
using test::argmax;
using vlmtest::rel_diff;

constexpr double kLogitTol = 1e-3;  // test_generate_parity_text / test_cli_vlm_parity

bool gpu() { return ops::cuda::available(); }

std::string text_fixture(const std::string& name) { return test::source_dir() + "/tests/fixtures/text/" + name; }

// Every text fixture with a transformers reference (families and LoRA adapters), by folder name.
std::vector<std::string> text_fixtures() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(test::source_dir() + "/tests/fixtures/text"))
    if (fs::exists(e.path() / "reference.json")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Normalized mean squared error Σ(a - b)² / Σb² over n values.
double nmse(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? num / den : num;
}

double worst_position(const TextRun& run, const std::vector<std::vector<float>>& ref, int64_t vocab) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    worst = std::max(worst, rel_diff(run.prompt_logits.data() + static_cast<int64_t>(i) * vocab, ref[i].data(), vocab));
  return worst;
}

// ---- everywhere -------------------------------------------------------------------------------------------

TEST(CliCuda, GenerateOnCudaWithoutAGpuRefusesWithTheReasonBeforeLoading) {
  if (gpu()) GTEST_SKIP() << "a CUDA device is usable here";
  auto r = test::run_vlmcheck({"generate", "--model", text_fixture("llama"), "--prompt", "hi", "--device", "cuda"});
  EXPECT_EQ(r.exit_code, cli::kExitUnsupported) << r.err;
  EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(cuda_unavailable_reason()), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  // The same from the environment's default.
  auto env = test::run_vlmcheck({"generate", "--model", text_fixture("llama"), "--prompt", "hi"},
                                {"VLMCHECK_DEVICE=cuda"});
  EXPECT_EQ(env.exit_code, cli::kExitUnsupported) << env.err;
  EXPECT_NE(env.err.find(cuda_unavailable_reason()), std::string::npos) << env.err;
}

TEST(CliCuda, BenchOnCudaWithoutAGpuRefusesBeforeWritingTheSyntheticCheckpoint) {
  if (gpu()) GTEST_SKIP() << "a CUDA device is usable here";
  test::TempDir dir;
  auto r = test::run_vlmcheck({"bench", "--synthetic", "smolvlm-256m", "--device", "cuda", "--work-dir", dir / ""});
  EXPECT_EQ(r.exit_code, cli::kExitUnsupported) << r.err;
  EXPECT_NE(r.err.find(cuda_unavailable_reason()), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(dir / "")) << "a checkpoint was written before the device was checked";
}

// Seeded sampling with every built-in filter and a penalty: on CUDA the chain runs on the GPU
// (ops::sample, only the id comes back) with the same uniforms as the CPU's, so --device cuda gives
// the tokens of --device cpu. The logits of the two devices differ by rounding (NMSE ~1e-9), so a draw
// could differ only where u or a filter's cut sits within that rounding of a boundary: for 3 fixtures x
// 3 seeds x 24 tokens, a chance of the order of 1e-4. Different seeds must give different tokens
// somewhere (the draws are real, not greedy).
TEST(CliCuda, SeededSamplingOnCudaGivesTheCpuTokens) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  std::set<std::vector<int32_t>> distinct;
  for (const char* fixture : {"qwen2", "llama", "gemma3_text"})
    for (const char* seed : {"1", "2", "3"}) {
      auto run = [&](const char* device) {
        auto r = test::run_vlmcheck({"generate", "--model", text_fixture(fixture), "--prompt", "Once upon a time",
                                     "--max-tokens", "24", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "20",
                                     "--min-p", "0.05", "--repetition-penalty", "1.1", "--seed", seed, "--device",
                                     device, "--json"});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        const Json out = Json::parse(r.out);
        EXPECT_EQ(out["device"], device);
        return out["tokens"].get<std::vector<int32_t>>();
      };
      const std::vector<int32_t> cpu = run("cpu"), cuda = run("cuda");
      EXPECT_FALSE(cpu.empty()) << fixture << " seed " << seed;
      EXPECT_EQ(cuda, cpu) << fixture << " seed " << seed;
      distinct.insert(cpu);
    }
  EXPECT_GE(distinct.size(), 7u) << "seeds should give different samples";
  // Without a penalty the CUDA decode steps are queued one ahead of the host (ops::sample_device feeding the
  // next step's embedding on the GPU): still the CPU's tokens.
  for (const char* fixture : {"qwen2", "llama", "gemma3_text"}) {
    auto run = [&](const char* device) {
      auto r = test::run_vlmcheck({"generate", "--model", text_fixture(fixture), "--prompt", "Once upon a time",
                                   "--max-tokens", "24", "--temperature", "0.7", "--top-p", "0.95", "--top-k", "40",
                                   "--seed", "5", "--device", device, "--json"});
      EXPECT_EQ(r.exit_code, 0) << r.err;
      return Json::parse(r.out)["tokens"].get<std::vector<int32_t>>();
    };
    const std::vector<int32_t> cpu = run("cpu");
    EXPECT_FALSE(cpu.empty()) << fixture;
    EXPECT_EQ(run("cuda"), cpu) << fixture << " (queued sampled decode)";
  }
}

TEST(CliCuda, TheDefaultDeviceIsCudaExactlyWhenAGpuIsUsable) {
  auto args = std::vector<std::string>{"generate", "--model", text_fixture("qwen2"), "--prompt", "hi",
                                       "--max-tokens", "2", "--json"};
  auto r = test::run_vlmcheck(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json out = Json::parse(r.out);
  EXPECT_EQ(out["device"], gpu() ? "cuda" : "cpu");
  EXPECT_TRUE(out["vision_device"].is_null());  // a text model has no tower
  EXPECT_EQ(out["gpu_memory_bytes"].is_null(), !gpu());
  auto cpu = test::run_vlmcheck(args, {"VLMCHECK_DEVICE=cpu"});
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  EXPECT_EQ(Json::parse(cpu.out)["device"], "cpu");
  auto bad = test::run_vlmcheck(args, {"VLMCHECK_DEVICE=tpu"});
  EXPECT_EQ(bad.exit_code, cli::kExitUsage) << bad.err;
  EXPECT_NE(bad.err.find("tpu"), std::string::npos) << bad.err;
}

TEST(CliCuda, ALanguageModelRefusesAnUnusableDeviceAndStaysWhole) {
  if (gpu()) GTEST_SKIP() << "a CUDA device is usable here";
  LoadedModel m = load_model(text_fixture("llama"), {});
  LanguageModel& lm = *m.language_model;
  const Json ref = read_json_file(text_fixture("llama") + "/reference.json");
  const auto ids = ref["input_ids"].get<std::vector<int32_t>>();
  const TextRun before = run_text(lm, ids, 4, 0);
  try {
    lm.to_device(Device::kCuda);
    FAIL() << "to_device(kCuda) did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find(cuda_unavailable_reason()), std::string::npos) << e.what();
  }
  EXPECT_EQ(lm.device(), Device::kCpu);
  const TextRun after = run_text(lm, ids, 4, 0);
  EXPECT_EQ(after.prompt_logits, before.prompt_logits);  // bit-identical: nothing moved
  EXPECT_EQ(after.greedy, before.greedy);
  // A CUDA KV cache is refused the same way.
  KVCacheOptions o;
  o.device = Device::kCuda;
  EXPECT_THROW(make_kv_cache(lm.cache_layout(), o), Error);
}

// The quantized KV cache runs on the GPU too: on cuda its options need only a usable device.
TEST(CliCuda, QuantizedKvCacheOnCudaNeedsOnlyAUsableGpu) {
  KVCacheOptions o;
  o.kv_bits = 4;
  o.device = Device::kCuda;
  if (gpu()) {
    EXPECT_NO_THROW(o.validate());
    return;
  }
  try {
    o.validate();
    FAIL() << "a cuda kv cache validated without a usable GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find(cuda_unavailable_reason()), std::string::npos) << e.what();
  }
}

// One KV layer on each device, fed the same tokens (a prefill chunk, then single tokens): the quantized
// store holds the same bits on the GPU as on the CPU (read() dequantizes both: exact equality), and the
// attention outputs agree to f32 summation order. Standard and rotating layers, conversion at the first
// update and mid-way (quantize_start crossed), MLX's bit widths.
TEST(CliCuda, QuantizedKvLayerHoldsTheSameBitsOnTheGpu) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  struct Variant {
    int bits, group;
    int64_t start, max_size;
  };
  const LayerAttentionSpec spec{8, 2, 128, 0.088f, 0.0f, 0};  // head_dim 128: every group size divides it
  const int64_t row = spec.n_kv_heads * spec.head_dim, qrow = spec.n_heads * spec.head_dim;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (const Variant& var : {Variant{4, 64, 0, 0}, Variant{8, 32, 0, 0}, Variant{3, 64, 9, 0}, Variant{6, 128, 0, 0},
                             Variant{2, 32, 0, 12}, Variant{5, 64, 10, 12}}) {
    SCOPED_TRACE(std::to_string(var.bits) + "-bit g" + std::to_string(var.group) + " from " +
                 std::to_string(var.start) + (var.max_size ? ", rotating 12" : ""));
    KVLayerConfig c;
    c.n_kv_heads = spec.n_kv_heads;
    c.head_dim = spec.head_dim;
    c.max_size = var.max_size;
    c.keep = var.max_size ? 4 : 0;
    c.bits = var.bits;
    c.group_size = var.group;
    c.quantize_start = var.start;
    KVLayer cpu_layer(c);
    c.device = Device::kCuda;
    KVLayer gpu_layer(c);
    for (int64_t n : {int64_t{7}, int64_t{1}, int64_t{1}, int64_t{5}, int64_t{1}, int64_t{1}, int64_t{1},
                      int64_t{1}, int64_t{1}, int64_t{1}}) {
      std::vector<float> q(static_cast<size_t>(n * qrow)), k(static_cast<size_t>(n * row)), v(k.size());
      for (auto* buf : {&q, &k, &v})
        for (float& x : *buf) x = u(rng);
      std::vector<float> want(q.size()), got(q.size());
      cpu_layer.update_and_attend(q.data(), k.data(), v.data(), n, spec, {}, want.data());
      {
        ops::DeviceScope on_gpu(Device::kCuda);
        auto up = [](const std::vector<float>& h) {
          return ops::to_device(Tensor::from_f32({static_cast<int64_t>(h.size())}, h), Device::kCuda,
                                MemCategory::kScratch);
        };
        const Tensor dq = up(q), dk = up(k), dv = up(v);
        Tensor dout = ops::empty({static_cast<int64_t>(q.size())}, DType::kF32, MemCategory::kScratch, Device::kCuda);
        gpu_layer.update_and_attend(dq.data<float>(), dk.data<float>(), dv.data<float>(), n, spec, {},
                                    dout.data<float>());
        ops::copy(got.data(), Device::kCpu, dout.raw(), Device::kCuda, got.size() * sizeof(float));
      }
      EXPECT_LE(rel_diff(got.data(), want.data(), static_cast<int64_t>(got.size())), 1e-5) << "offset " << cpu_layer.offset();
    }
    ASSERT_TRUE(cpu_layer.quantized());
    ASSERT_TRUE(gpu_layer.quantized());
    ASSERT_EQ(gpu_layer.stored_positions(), cpu_layer.stored_positions());
    const int64_t held = cpu_layer.stored_tokens();
    std::vector<float> ck(static_cast<size_t>(held * row)), cv(ck.size()), gk(ck.size()), gv(ck.size());
    cpu_layer.read(0, held, ck.data(), cv.data());
    gpu_layer.read(0, held, gk.data(), gv.data());
    EXPECT_EQ(std::memcmp(gk.data(), ck.data(), ck.size() * 4), 0) << "dequantized K differs";
    EXPECT_EQ(std::memcmp(gv.data(), cv.data(), cv.size() * 4), 0) << "dequantized V differs";
  }
}

// Greedy generation with a quantized KV cache on --device cuda writes the tokens --device cpu writes: 4 and
// 8 bits from the first token, a --quantized-kv-start crossed during decoding, a group size of 32, and
// quantized + rotating (--max-kv-size smaller than prompt + generation, so the ring wraps). The demo VLM's
// language model (head_dim 64): the text fixtures' head_dim of 16 is below every allowed --kv-group-size.
TEST(CliCuda, QuantizedKvCacheGreedyTokensMatchTheCpu) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  const std::string demo = test::source_dir() + "/assets/demo/vlm";
  auto generate = [&](const std::string& device, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"generate", "--model", demo, "--prompt", "Tell me about the sea.", "--max-tokens",
                                     "24", "--json", "--device", device};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = test::run_vlmcheck(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? Json::parse(r.out) : Json::object();
  };
  const Json plain = generate("cpu", {});
  ASSERT_TRUE(plain.contains("prompt_tokens"));
  const int64_t prompt = plain["prompt_tokens"].get<int64_t>();
  const std::string crossing = std::to_string(prompt + 6);  // converted after the 6th generated token
  const std::vector<std::vector<std::string>> variants = {
      {"--kv-bits", "4", "--quantized-kv-start", "0"},
      {"--kv-bits", "8", "--quantized-kv-start", "0"},
      {"--kv-bits", "4", "--quantized-kv-start", crossing},
      {"--kv-bits", "3", "--kv-group-size", "32", "--quantized-kv-start", "0", "--prefill-step-size", "5"},
      {"--kv-bits", "4", "--quantized-kv-start", "0", "--max-kv-size", std::to_string(prompt / 2 + 8)},
  };
  for (const auto& extra : variants) {
    std::string what;
    for (const auto& a : extra) what += a + " ";
    SCOPED_TRACE(what);
    const Json c = generate("cpu", extra), g = generate("cuda", extra);
    ASSERT_TRUE(c.contains("tokens") && g.contains("tokens"));
    EXPECT_EQ(c["device"], "cpu");
    EXPECT_EQ(g["device"], "cuda");
    EXPECT_NE(g["kv_cache"].dump().find("quantized"), std::string::npos) << g["kv_cache"].dump();
    EXPECT_EQ(g["prompt_ids"], c["prompt_ids"]);
    EXPECT_EQ(g["tokens"], c["tokens"]);
    EXPECT_GE(g["tokens"].size(), 4u);  // a real generation, not an immediate stop
  }
}

// ---- on a GPU ---------------------------------------------------------------------------------------------

class CudaTextParity : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaTextParity, LogitsAndGreedyTokensMatchTransformers) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  const std::string name = GetParam();
  const Json ref = read_json_file(text_fixture(name) + "/reference.json");
  const bool lora = ref.contains("base");
  LoadOptions lo;
  if (lora) lo.adapter_path = text_fixture(name);
  const std::string folder = text_fixture(lora ? ref["base"].get<std::string>() : name);
  LoadedModel m = load_model(folder, lo);
  LanguageModel& lm = *m.language_model;
  lm.to_device(Device::kCuda);
  ASSERT_EQ(lm.device(), Device::kCuda);

  const auto ids = ref["input_ids"].get<std::vector<int32_t>>();
  const auto logits = ref["logits"].get<std::vector<std::vector<float>>>();
  auto greedy = ref["greedy_tokens"].get<std::vector<int32_t>>();
  greedy.resize(test::comparable_greedy_tokens(read_json_file(folder + "/config.json"), ids.size(), greedy.size()));
  const int64_t V = lm.vocab_size();
  const TextRun run = run_text(lm, ids, static_cast<int>(greedy.size()), 0);
  const double worst = worst_position(run, logits, V);
  EXPECT_LE(worst, kLogitTol);
  EXPECT_EQ(run.greedy, greedy) << "reference min top-2 gap " << ref["greedy_min_gap"];
  std::printf("[cuda parity] %-26s worst position rel diff %.2e, greedy %s\n", name.c_str(), worst,
              run.greedy == greedy ? "identical" : "DIFFERENT");
  // Generation's greedy path: the argmax on the GPU, decode steps captured as CUDA graphs (run_graph).
  const ops::cuda::GraphStats graphs_before = ops::cuda::graph_stats();
  EXPECT_EQ(run_text(lm, ids, static_cast<int>(greedy.size()), 0, {}, true).greedy, run.greedy)
      << "forward_argmax (graph-captured decode) differs from forward's logits";
  if (ops::cuda::graphs_enabled() && greedy.size() > 2) {
    EXPECT_GT(ops::cuda::graph_stats().pieces, graphs_before.pieces) << "no decode step was captured";
  }
  // generate()'s greedy path on a GPU: steps queued one ahead of the host (graph_wait reads each token), the
  // embedding gathered on the GPU from the argmax the step before left there.
  ASSERT_TRUE(lm.queues_ahead());
  const ops::cuda::GraphStats queued_before = ops::cuda::graph_stats();
  EXPECT_EQ(run_text(lm, ids, static_cast<int>(greedy.size()), 0, {}, false, true).greedy, run.greedy)
      << "queued decode differs from forward's logits";
  if (ops::cuda::graphs_enabled() && greedy.size() > 3) {
    EXPECT_GT(ops::cuda::graph_stats().pieces, queued_before.pieces) << "no queued step was captured";
  }

  // Chunked prefill (chunks straddle the fixtures' sliding windows of 8) and a rotating cache (ring moves are
  // device copies), each against the same model on the CPU run the same way (dynamic RoPE scalings depend on
  // the chunking, so the CPU, not transformers, is the reference here).
  LoadedModel host = load_model(folder, lo);
  KVCacheOptions rotating;
  rotating.max_kv_size = 12;
  const int64_t n = static_cast<int64_t>(ids.size());
  for (const auto& [chunk, options] : {std::pair<int64_t, KVCacheOptions>{5, KVCacheOptions{}}, {4, rotating}}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk) + (options.max_kv_size ? ", rotating cache of 12" : ""));
    const TextRun on_gpu = run_text(lm, ids, static_cast<int>(greedy.size()), chunk, options);
    const TextRun on_cpu = run_text(*host.language_model, ids, static_cast<int>(greedy.size()), chunk, options);
    EXPECT_EQ(on_gpu.greedy, on_cpu.greedy);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_LE(rel_diff(on_gpu.prompt_logits.data() + i * V, on_cpu.prompt_logits.data() + i * V, V), kLogitTol)
          << "position " << i;
  }
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaTextParity, ::testing::ValuesIn(text_fixtures()), param_name);

TEST(CudaTextParity, EveryFamilyIsCovered) { EXPECT_GE(text_fixtures().size(), 12u); }

class CudaVlmParity : public ::testing::TestWithParam<std::string> {};

constexpr double kFeatureTol = 1e-4;      // test_models_vlm: max |diff| / max |ref| against transformers
constexpr double kF32DeviceNmse = 1e-9;   // f32 fixtures, CUDA vs CPU: summation order and libm ulps only

// Everywhere without a GPU: every family's vision model refuses CUDA with the backend's reason before copying
// anything, stays on the CPU, and encodes bit-identically afterwards.
TEST_P(CudaVlmParity, AnUnusableDeviceIsRefusedAndTheVisionModelStaysWhole) {
  if (gpu()) GTEST_SKIP() << "a CUDA device is usable here";
  vlmtest::VlmFixture f = vlmtest::load_vision_fixture(GetParam());
  LoadedModel m = load_model(f.folder, {});
  ASSERT_NE(m.vision, nullptr);
  EXPECT_EQ(m.vision->device(), Device::kCpu);
  const vlmtest::VlmCase* c = nullptr;
  for (const vlmtest::VlmCase& k : f.cases)
    if (!k.images.empty() && c == nullptr) c = &k;
  ASSERT_NE(c, nullptr);
  const ProcessedImage image = vlmtest::reference_images(f, *c).front();
  const Tensor before = m.vision->encode(image);
  try {
    m.vision->to_device(Device::kCuda);
    FAIL() << "to_device(kCuda) did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find(cuda_unavailable_reason()), std::string::npos) << e.what();
  }
  EXPECT_EQ(m.vision->device(), Device::kCpu);
  m.vision->to_device(Device::kCpu);  // already there: a no-op
  const Tensor after = m.vision->encode(image);
  ASSERT_EQ(after.shape(), before.shape());
  EXPECT_TRUE(std::equal(before.data<float>(), before.data<float>() + before.numel(), after.data<float>()));
}

// The vision tower and projector on CUDA with the language model: encode() runs there and returns its features
// in device memory, which must match transformers' image features and the same model's features on the CPU; the
// prompt's multimodal embeddings are built on the GPU too (bit for bit the prompt built on the host from the same
// features) and the model reads them in place. Moved back to the CPU, the model encodes bit-identically to one
// that never left it.
TEST_P(CudaVlmParity, ImagePromptsMatchTransformers) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  vlmtest::VlmFixture f = vlmtest::load_vision_fixture(GetParam());
  LoadedModel m = load_model(f.folder, {});
  LoadedModel host = load_model(f.folder, {});  // the same weights, left on the CPU
  ASSERT_NE(m.vision, nullptr);
  LanguageModel& lm = *m.language_model;
  lm.to_device(Device::kCuda);
  m.vision->to_device(Device::kCuda);
  ASSERT_EQ(m.vision->device(), Device::kCuda);
  const int64_t V = lm.vocab_size(), H = lm.hidden_size();
  for (const vlmtest::VlmCase& c : f.cases) {
    SCOPED_TRACE(GetParam() + " " + c.name);
    std::vector<ProcessedImage> images = vlmtest::reference_images(f, c);
    std::vector<Tensor> feats, feats_host;
    double worst_cpu = 0, worst_ref = 0;
    int64_t row = 0;
    for (const ProcessedImage& im : images) {
      const auto t0 = std::chrono::steady_clock::now();
      Tensor gd = m.vision->encode(im);
      ASSERT_EQ(gd.device(), Device::kCuda);  // the features stay where the tower ran
      Tensor g = ops::to_device(gd, Device::kCpu, MemCategory::kScratch);
      const double gpu_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto t1 = std::chrono::steady_clock::now();
      const Tensor cpu = host.vision->encode(im);
      const double cpu_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      ASSERT_EQ(g.shape(), cpu.shape());
      worst_cpu = std::max(worst_cpu, nmse(g.data<float>(), cpu.data<float>(), g.numel()));
      if (c.has("image_features")) {
        const Tensor ref = f.get(c, "image_features").to_f32();
        ASSERT_LE((row + g.dim(0)) * H, ref.numel());
        worst_ref = std::max(worst_ref, rel_diff(g.data<float>(), ref.data<float>() + row * H, g.numel()));
      }
      row += g.dim(0);
      std::printf("[cuda vlm encode] %-14s %-10s %5lld rows: cuda %.2f ms, cpu %.2f ms\n", GetParam().c_str(),
                  c.name.c_str(), static_cast<long long>(g.dim(0)), gpu_s * 1e3, cpu_s * 1e3);
      feats.push_back(std::move(gd));
      feats_host.push_back(std::move(g));
    }
    EXPECT_LE(worst_cpu, kF32DeviceNmse);
    EXPECT_LE(worst_ref, kFeatureTol);
    MultimodalPrompt p = m.vision->build_prompt(lm, c.ids, images, feats);
    const int64_t n = static_cast<int64_t>(c.ids.size());
    // Built where the features are; a case without images has none, and its prompt is built on the host.
    ASSERT_EQ(p.embeds.device(), feats.empty() ? Device::kCpu : Device::kCuda);
    {
      const MultimodalPrompt ph = m.vision->build_prompt(lm, c.ids, images, feats_host);
      ASSERT_EQ(ph.embeds.device(), Device::kCpu);
      const Tensor pd = ops::to_device(p.embeds, Device::kCpu, MemCategory::kScratch);
      ASSERT_EQ(pd.shape(), ph.embeds.shape());
      EXPECT_EQ(std::memcmp(pd.data<float>(), ph.embeds.data<float>(), sizeof(float) * pd.numel()), 0)
          << "the prompt built on the GPU differs from the one built on the host from the same features";
      EXPECT_EQ(p.positions, ph.positions);
      EXPECT_EQ(p.groups, ph.groups);
    }
    KVCacheOptions o;
    o.device = Device::kCuda;
    std::unique_ptr<KVCache> cache = make_kv_cache(lm.cache_layout(), o);
    ops::AttentionMask mask;
    if (!p.groups.empty()) {
      mask.group_of_position = p.groups.data();
      mask.group_positions = static_cast<int64_t>(p.groups.size());
    }
    std::vector<float> logits(static_cast<size_t>(V));
    lm.forward(Embeds{p.embeds.data<float>(), p.embeds.device()}, n, Positions{p.positions.data(), n, p.dims}, *cache,
               mask, logits.data(), false);
    Tensor ref = f.get(c, "logits").to_f32();
    ASSERT_EQ(ref.numel(), V);
    const double diff = vlmtest::rel_diff(logits.data(), ref.data<float>(), V);
    EXPECT_LE(diff, kLogitTol);
    std::vector<int32_t> greedy;
    std::vector<float> x(static_cast<size_t>(H));
    for (size_t s = 0; s < c.greedy.size(); ++s) {
      const int32_t tok = argmax(logits.data(), V);
      greedy.push_back(tok);
      if (s + 1 == c.greedy.size()) break;
      int64_t pos = n + static_cast<int64_t>(s) + p.rope_delta;
      lm.embed(&tok, 1, x.data());
      lm.forward(x.data(), 1, Positions{&pos, 1, 1}, *cache, mask, logits.data(), false);
    }
    EXPECT_EQ(greedy, c.greedy) << "reference min top-2 gap " << c.min_gap;
    std::printf("[cuda vlm parity] %-14s %-10s features nmse vs cpu %.2e, rel diff vs transformers %.2e, logits "
                "rel diff %.2e, greedy %s\n",
                GetParam().c_str(), c.name.c_str(), worst_cpu, worst_ref, diff,
                greedy == c.greedy ? "identical" : "DIFFERENT");
  }
  // Back on the CPU: the weights come home as the same bytes.
  m.vision->to_device(Device::kCpu);
  EXPECT_EQ(m.vision->device(), Device::kCpu);
  for (const vlmtest::VlmCase& c : f.cases) {
    if (c.images.empty()) continue;
    const ProcessedImage im = vlmtest::reference_images(f, c).front();
    const Tensor a = m.vision->encode(im), b = host.vision->encode(im);
    ASSERT_EQ(a.shape(), b.shape());
    EXPECT_TRUE(std::equal(a.data<float>(), a.data<float>() + a.numel(), b.data<float>())) << c.name;
    break;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaVlmParity, ::testing::ValuesIn(vlmtest::vision_fixture_names()), param_name);

// ---- bf16 towers of real width on CUDA ------------------------------------------------------------------

// Synthetic bf16 tower weights (uniform, variance 1/in for matrices so activations stay O(1) through the depth;
// norms 1 / 0), written as a real checkpoint the towers load.
struct TowerWriter {
  SafetensorsWriter w;
  uint64_t seed = 1;
  Tensor random(const Shape& shape, float a) {
    Tensor t = Tensor::empty(shape, DType::kBF16, MemCategory::kOther);
    uint64_t x = seed++ * 0x9E3779B97F4A7C15ull + 1;
    auto* p = t.data<uint16_t>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      p[i] = f32_to_bf16(a * (static_cast<float>(x >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f));
    }
    return t;
  }
  void linear(const std::string& name, int64_t out, int64_t in) {
    w.add(name + ".weight", random({out, in}, std::sqrt(3.0f / static_cast<float>(in))));
    w.add(name + ".bias", random({out}, 0.02f));
  }
  void norm(const std::string& name, int64_t d, bool bias) {
    Tensor one = Tensor::empty({d}, DType::kBF16, MemCategory::kOther);
    std::fill_n(one.data<uint16_t>(), d, f32_to_bf16(1.0f));
    w.add(name + ".weight", one);
    if (bias) {
      Tensor zero = Tensor::empty({d}, DType::kBF16, MemCategory::kOther);
      std::fill_n(zero.data<uint16_t>(), d, f32_to_bf16(0.0f));
      w.add(name + ".bias", zero);
    }
  }
};

std::vector<float> random_floats(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& f : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    f = static_cast<float>(x >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
  }
  return v;
}

// The device's bf16 rounding of every linear's input and of attention's q, k, v and probabilities (u = 2⁻⁹,
// NMSE ≈ u²/3 ≈ 1.3e-6 per op where the CPU rounds differently) compounds over the depth; a wrong row, head or
// weight gives O(1).
constexpr double kBf16TowerNmse = 1e-2;

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// SmolVLM-256M's SigLIP tower (12 layers, width 768, MLP 3072, 12 heads of 64) on one 512-px tile (1024
// patches), SigLIP-so400m's width (1152, MLP 4304, 16 heads of 72; 4 layers) on 896 px (4096 patches), and a
// Qwen2.5-VL-3B-width tower (width 1280, MLP 3420, 16 heads of 80; 4 blocks, the last with full attention, the
// others windowed) on a 784 × 784 image (3136 patches): bf16 weights, so the device runs its tensor-core paths
// (bf16 GEMMs; flash attention with bf16_matmul where head_dim has an instance). CUDA must give the CPU's output;
// both encode times are printed (the second CUDA run, after cuBLASLt's first-call setup).
TEST(CudaVisionTowers, Bf16TowersOfRealWidthMatchTheCpu) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  test::TempDir dir;
  // SigLIP: SmolVLM-256M's tower on one 512-px tile, and SigLIP-so400m's width (head_dim 72: no tensor-core
  // attention instance, so the exact f32 kernel) on a Gemma 3 / PaliGemma 896-px image, 4 of its 27 layers.
  struct SiglipShape {
    const char* name;
    int64_t D, I, L, heads, P, image;
  };
  for (const SiglipShape& sh : {SiglipShape{"siglip-smolvlm", 768, 3072, 12, 12, 16, 512},
                                SiglipShape{"siglip-so400m", 1152, 4304, 4, 16, 14, 896}}) {
    const int64_t D = sh.D, I = sh.I, L = sh.L, P = sh.P, side = sh.image / P, px = side * P;
    TowerWriter tw;
    const std::string p = "vision_model.";
    tw.w.add(p + "embeddings.patch_embedding.weight", tw.random({D, 3, P, P}, std::sqrt(3.0f / (3 * P * P))));
    tw.w.add(p + "embeddings.patch_embedding.bias", tw.random({D}, 0.02f));
    tw.w.add(p + "embeddings.position_embedding.weight", tw.random({side * side, D}, 0.5f));
    for (int64_t i = 0; i < L; ++i) {
      const std::string l = p + "encoder.layers." + std::to_string(i) + ".";
      tw.norm(l + "layer_norm1", D, true);
      tw.norm(l + "layer_norm2", D, true);
      for (const char* m : {"q_proj", "k_proj", "v_proj", "out_proj"}) tw.linear(l + "self_attn." + m, D, D);
      tw.linear(l + "mlp.fc1", I, D);
      tw.linear(l + "mlp.fc2", D, I);
    }
    tw.norm(p + "post_layernorm", D, true);
    fs::create_directories(dir / sh.name);
    tw.w.write(dir / (std::string(sh.name) + "/model.safetensors"));
    const Json cfg = {{"model_type", "siglip_vision_model"}, {"hidden_size", D}, {"intermediate_size", I},
                      {"num_hidden_layers", L},  {"num_attention_heads", sh.heads}, {"patch_size", P},
                      {"image_size", sh.image},  {"hidden_act", "gelu_pytorch_tanh"}};
    const Checkpoint ck = Checkpoint::open(dir / sh.name, LoadMode::kEager);
    ViTEncoder cpu(cfg, ck, p, -1, sh.name), cuda(cfg, ck, p, -1, sh.name);
    cuda.to_device(Device::kCuda);
    ASSERT_EQ(cuda.device(), Device::kCuda);
    const std::vector<float> pixels = random_floats(3 * px * px, 7);
    Tensor a, b;
    const double cpu_s = seconds([&] { a = cpu.forward(pixels.data(), px, px, -1, true); });
    b = cuda.forward(pixels.data(), px, px, -1, true);  // warm-up
    const double cuda_s = seconds([&] { b = vision::to_host(cuda.forward(pixels.data(), px, px, -1, true)); });
    ASSERT_EQ(a.shape(), b.shape());
    const double e = nmse(b.data<float>(), a.data<float>(), a.numel());
    EXPECT_LE(e, kBf16TowerNmse) << sh.name;
    std::printf("[cuda vision tower] %s %lldx%lld, %lld patches (bf16): cuda %.1f ms, cpu %.1f ms (%d threads), "
                "nmse %.2e\n",
                sh.name, static_cast<long long>(D), static_cast<long long>(L), static_cast<long long>(side * side),
                cuda_s * 1e3, cpu_s * 1e3, ThreadPool::global().num_threads(), e);
  }
  {  // Qwen2.5-VL
    const int64_t D = 1280, I = 3420, depth = 4, P = 14, T = 2, out = 2048, grid = 56;
    TowerWriter tw;
    const std::string p = "visual.";
    tw.w.add(p + "patch_embed.proj.weight", tw.random({D, 3, T, P, P}, std::sqrt(3.0f / (3 * T * P * P))));
    for (int64_t i = 0; i < depth; ++i) {
      const std::string b = p + "blocks." + std::to_string(i) + ".";
      tw.norm(b + "norm1", D, false);
      tw.norm(b + "norm2", D, false);
      tw.linear(b + "attn.qkv", 3 * D, D);
      tw.linear(b + "attn.proj", D, D);
      tw.linear(b + "mlp.gate_proj", I, D);
      tw.linear(b + "mlp.up_proj", I, D);
      tw.linear(b + "mlp.down_proj", D, I);
    }
    tw.norm(p + "merger.ln_q", D, false);
    tw.linear(p + "merger.mlp.0", 4 * D, 4 * D);
    tw.linear(p + "merger.mlp.2", out, 4 * D);
    fs::create_directories(dir / "qwen");
    tw.w.write(dir / "qwen/model.safetensors");
    const Json cfg = {{"depth", depth},           {"hidden_size", D}, {"intermediate_size", I},
                      {"num_heads", 16},          {"patch_size", P},  {"temporal_patch_size", T},
                      {"spatial_merge_size", 2},  {"out_hidden_size", out}, {"window_size", 112},
                      {"fullatt_block_indexes", Json::array({depth - 1})}, {"hidden_act", "silu"}};
    const Checkpoint ck = Checkpoint::open(dir / "qwen", LoadMode::kEager);
    QwenVisionEncoder cpu(cfg, "qwen2_5_vl", ck, p, "qwen"), cuda(cfg, "qwen2_5_vl", ck, p, "qwen");
    cuda.to_device(Device::kCuda);
    ASSERT_EQ(cuda.device(), Device::kCuda);
    const int64_t n = grid * grid, k = 3 * T * P * P;
    Tensor patches = Tensor::empty({n, k}, DType::kF32);
    const std::vector<float> v = random_floats(n * k, 11);
    std::copy(v.begin(), v.end(), patches.data<float>());
    Tensor a, b;
    const double cpu_s = seconds([&] { a = cpu.forward(patches, 1, grid, grid); });
    b = cuda.forward(patches, 1, grid, grid);  // warm-up
    const double cuda_s = seconds([&] { b = vision::to_host(cuda.forward(patches, 1, grid, grid)); });
    ASSERT_EQ(a.shape(), b.shape());
    const double e = nmse(b.data<float>(), a.data<float>(), a.numel());
    EXPECT_LE(e, kBf16TowerNmse);
    std::printf("[cuda vision tower] qwen2.5-vl 1280x%lld, %lld patches (bf16): cuda %.1f ms, cpu %.1f ms (%d "
                "threads), nmse %.2e\n",
                static_cast<long long>(depth), static_cast<long long>(n), cuda_s * 1e3, cpu_s * 1e3,
                ThreadPool::global().num_threads(), e);
  }
}

TEST(CliCuda, GenerateWithAnImageRunsTheTowerOnTheGpuAndMatchesTheCpuRun) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  const std::string model = test::source_dir() + "/tests/fixtures/vision/qwen2_5_vl";
  const std::string image = test::source_dir() + "/tests/fixtures/vision/images/scene.png";
  auto args = std::vector<std::string>{"generate", "--model", model, "--prompt", "What is in the picture?", "--image",
                                       image, "--max-tokens", "8", "--json", "--device"};
  auto cpu = test::run_vlmcheck([&] { auto a = args; a.push_back("cpu"); return a; }());
  auto cuda = test::run_vlmcheck([&] { auto a = args; a.push_back("cuda"); return a; }());
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  ASSERT_EQ(cuda.exit_code, 0) << cuda.err;
  Json c = Json::parse(cpu.out), g = Json::parse(cuda.out);
  EXPECT_EQ(g["device"], "cuda");
  EXPECT_EQ(g["vision_device"], "cuda");
  EXPECT_EQ(c["device"], "cpu");
  EXPECT_EQ(c["vision_device"], "cpu");
  EXPECT_EQ(g["prompt_ids"], c["prompt_ids"]);
  EXPECT_EQ(g["tokens"], c["tokens"]);
  EXPECT_GT(g["gpu_memory_bytes"]["peak"].get<int64_t>(), 0);
  EXPECT_GE(g["gpu_memory_bytes"]["peak"].get<int64_t>(), g["gpu_memory_bytes"]["active"].get<int64_t>());
}

TEST(CliCuda, BenchOnCudaReportsTheGpuRoofline) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  test::TempDir dir;
  auto r = test::run_vlmcheck({"bench", "--synthetic", "smolvlm-256m", "--device", "cuda", "--prompt-tokens", "64",
                               "--gen-tokens", "8", "--repetitions", "1", "--work-dir", dir / "", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json out = Json::parse(r.out);
  EXPECT_EQ(out["device"], "cuda");
  EXPECT_EQ(out["kernel_path"], "cuda");
  EXPECT_GT(out["roofline"]["read_bandwidth_gbs"].get<double>(), 0);
  EXPECT_GT(out["roofline"]["bf16_peak_gflops"].get<double>(), 0);
  EXPECT_GT(out["generation_tps"].get<double>(), 0);
  EXPECT_GT(out["peak_memory_bytes"]["gpu"].get<int64_t>(), out["weight_bytes"].get<int64_t>() / 2);
}

// The bench targets include Gemma 3 (sliding layers, per-head norms, sandwich norms): its synthetic
// writer, shrunk to test size, must produce a checkpoint the gemma3_text family resolves with no missing or
// unused tensor, with the layer pattern of the config (every 6th layer global), that runs to finite logits
// (and on a GPU, to the CPU's logits).
TEST(CudaBenchShapes, TheGemma3SyntheticCheckpointLoadsWithItsSlidingPattern) {
  SyntheticShape shape = find_synthetic_shape("gemma-3-4b");
  EXPECT_EQ(shape.model_type, "gemma3_text");
  const int64_t window = shape.config["sliding_window"], pattern = shape.config["sliding_window_pattern"];
  for (const char* name : {"qwen2.5-vl-3b", "qwen2.5-vl-7b", "smolvlm-256m"})
    EXPECT_NO_THROW(find_synthetic_shape(name)) << name;
  shape.config["hidden_size"] = 64;
  shape.config["intermediate_size"] = 96;
  shape.config["num_hidden_layers"] = 7;
  shape.config["num_attention_heads"] = 2;
  shape.config["num_key_value_heads"] = 1;
  shape.config["head_dim"] = 32;
  shape.config["vocab_size"] = 300;
  test::TempDir dir;
  write_synthetic_checkpoint(shape, SyntheticOptions{}, dir / "gemma3");
  LoadedModel m = load_model(dir / "gemma3", {});
  auto* dec = dynamic_cast<DecoderModel*>(m.language_model.get());
  ASSERT_NE(dec, nullptr);
  const DecoderSpec& spec = dec->spec();
  EXPECT_TRUE(spec.qk_norm);
  EXPECT_TRUE(spec.sandwich_norms);
  EXPECT_EQ(spec.head_dim, 32);
  ASSERT_EQ(spec.layers.size(), 7u);
  for (size_t i = 0; i < spec.layers.size(); ++i)
    EXPECT_EQ(spec.layers[i].sliding_window, (static_cast<int64_t>(i) + 1) % pattern == 0 ? 0 : window) << i;
  const std::vector<int32_t> ids = {1, 17, 42, 299, 5, 8};
  const TextRun cpu = run_text(*m.language_model, ids, 4, 0);
  for (float v : cpu.prompt_logits) ASSERT_TRUE(std::isfinite(v));
  if (!gpu()) return;
  m.language_model->to_device(Device::kCuda);
  const TextRun cuda = run_text(*m.language_model, ids, 4, 0);
  const int64_t V = m.language_model->vocab_size();
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_LE(rel_diff(cuda.prompt_logits.data() + i * V, cpu.prompt_logits.data() + i * V, V), kLogitTol) << i;
}

}  // namespace
}  // namespace vlm
