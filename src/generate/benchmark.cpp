// Synthetic checkpoints of real shapes and the bench protocol. Weights are uniform random in
// ±0.05 (norm weights 1), so activations stay finite through any depth; the content does not matter
// for speed, only the bytes and the shapes do.
#include "generate/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/memory.h"
#include "core/quantize.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "generate/kv_cache.h"
#include "io/safetensors_writer.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"
#include "kernels/probes.h"
#include "models/registry.h"

namespace vlm {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

Json llama_like(int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv, int64_t vocab, bool tied,
                double theta, double eps) {
  return Json{{"hidden_size", hidden},
              {"intermediate_size", inter},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv},
              {"vocab_size", vocab},
              {"tie_word_embeddings", tied},
              {"rope_theta", theta},
              {"rms_norm_eps", eps},
              {"max_position_embeddings", 32768},
              {"hidden_act", "silu"}};
}

// Gemma 3's text config (older Hub layout: sliding_window_pattern + rope_local_base_freq).
Json gemma3_like(int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv, int64_t head_dim,
                 int64_t vocab, int64_t window, int64_t pattern) {
  return Json{{"hidden_size", hidden},
              {"intermediate_size", inter},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv},
              {"head_dim", head_dim},
              {"query_pre_attn_scalar", head_dim},
              {"vocab_size", vocab},
              {"tie_word_embeddings", true},
              {"sliding_window", window},
              {"sliding_window_pattern", pattern},
              {"rope_theta", 1000000.0},
              {"rope_local_base_freq", 10000.0},
              {"rope_scaling", {{"rope_type", "linear"}, {"factor", 8.0}}},
              {"rms_norm_eps", 1e-6},
              {"max_position_embeddings", 131072},
              {"hidden_activation", "gelu_pytorch_tanh"}};
}

// xorshift64*: fast deterministic fill for hundreds of millions of values.
struct Rng {
  uint64_t s;
  float uniform() {  // [-1, 1)
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    uint64_t r = s * 0x2545F4914F6CDD1Dull;
    return static_cast<float>(static_cast<int64_t>(r >> 40) - (1 << 23)) / static_cast<float>(1 << 23);
  }
};

Tensor random_matrix(const Shape& shape, float amplitude, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::kF32, MemCategory::kOther);
  float* p = t.data<float>();
  const int64_t n = t.numel();
  ThreadPool::global().parallel_for(n, [&](int64_t b, int64_t e) {
    Rng rng{seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(b) + 1};
    for (int64_t i = b; i < e; ++i) p[i] = amplitude * rng.uniform();
  }, 1 << 20);
  return t;
}

Tensor filled(int64_t n, float value, DType dtype) {
  Tensor t = Tensor::empty({n}, DType::kF32, MemCategory::kOther);
  std::fill(t.data<float>(), t.data<float>() + n, value);
  return t.to(dtype, MemCategory::kOther);
}

}  // namespace

const std::vector<SyntheticShape>& synthetic_shapes() {
  static const std::vector<SyntheticShape> shapes = {
      // SmolVLM-256M's language model (SmolLM2-135M): hidden 576, 30 layers, 9 heads / 3 kv heads.
      {"smollm2-135m", "llama", llama_like(576, 1536, 30, 9, 3, 49152, true, 100000.0, 1e-5)},
      // Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads / 2 kv heads, tied.
      {"qwen2.5-0.5b", "qwen2", llama_like(896, 4864, 24, 14, 2, 151936, true, 1000000.0, 1e-6)},
      // Qwen2.5-VL-3B's language model (Qwen2.5-3B): hidden 2048, 36 layers, 16 / 2 heads, tied.
      {"qwen2.5-3b", "qwen2", llama_like(2048, 11008, 36, 16, 2, 151936, true, 1000000.0, 1e-6)},
      // Qwen2.5-VL-7B's language model (Qwen2.5-7B): hidden 3584, 28 layers, 28 / 4 heads, untied.
      {"qwen2.5-7b", "qwen2", llama_like(3584, 18944, 28, 28, 4, 152064, false, 1000000.0, 1e-6)},
      // Llama-3.2-1B: hidden 2048, 16 layers, 32 / 8 heads, tied.
      {"llama3.2-1b", "llama", llama_like(2048, 8192, 16, 32, 8, 128256, true, 500000.0, 1e-5)},
      // The VLM targets, by their VLM names (text decoders only; the towers are bench_vision's).
      // Qwen2.5-VL-3B-Instruct text_config: hidden 2048, 36 layers, 16 / 2 heads (head_dim 128),
      // intermediate 11008, vocab 151936, tied.
      {"qwen2.5-vl-3b", "qwen2", llama_like(2048, 11008, 36, 16, 2, 151936, true, 1000000.0, 1e-6)},
      // Qwen2.5-VL-7B-Instruct: hidden 3584, 28 layers, 28 / 4 heads, intermediate 18944, vocab 152064,
      // untied.
      {"qwen2.5-vl-7b", "qwen2", llama_like(3584, 18944, 28, 28, 4, 152064, false, 1000000.0, 1e-6)},
      // Gemma-3-4B-it text_config: hidden 2560, 34 layers, 8 / 4 heads of 256, intermediate 10240, vocab
      // 262208, tied; sliding window 1024 with every 6th layer global (rope 10k local, 1M x8 linear global).
      {"gemma-3-4b", "gemma3_text", gemma3_like(2560, 10240, 34, 8, 4, 256, 262208, 1024, 6)},
      // SmolVLM-256M-Instruct text_config (SmolLM2-135M with SmolVLM's 49280-token vocabulary): hidden 576,
      // 30 layers, 9 / 3 heads, intermediate 1536; untied (the checkpoint carries its own lm_head).
      {"smolvlm-256m", "llama", llama_like(576, 1536, 30, 9, 3, 49280, false, 100000.0, 1e-5)},
  };
  return shapes;
}

const SyntheticShape& find_synthetic_shape(const std::string& name) {
  std::string known;
  for (const auto& s : synthetic_shapes()) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : ", ") + s.name;
  }
  throw_error(ErrorKind::kInvalidArgument, "unknown synthetic shape '{}' (known: {})", name, known);
}

int64_t write_synthetic_checkpoint(const SyntheticShape& shape, const SyntheticOptions& options,
                                   const std::string& folder) {
  namespace fs = std::filesystem;
  fs::create_directories(folder);
  const Json& c = shape.config;
  const int64_t hidden = c["hidden_size"], inter = c["intermediate_size"], layers = c["num_hidden_layers"];
  const int64_t heads = c["num_attention_heads"], kv = c["num_key_value_heads"], vocab = c["vocab_size"];
  const int64_t hd = c.value("head_dim", hidden / heads);
  const bool tied = c["tie_word_embeddings"];
  const bool qkv_bias = shape.model_type == "qwen2";
  // Gemma 3: per-head q/k norms and sandwich norms, all (1 + w) norms, so w = 0 is the identity.
  const bool gemma3 = shape.model_type == "gemma3_text";
  const float norm_one = gemma3 ? 0.0f : 1.0f;

  Json config = c;
  config["model_type"] = shape.model_type;
  config["architectures"] = Json::array({gemma3                        ? "Gemma3ForCausalLM"
                                         : shape.model_type == "qwen2" ? "Qwen2ForCausalLM"
                                                                       : "LlamaForCausalLM"});
  config["torch_dtype"] = options.dtype == DType::kBF16 ? "bfloat16" : options.dtype == DType::kF16 ? "float16" : "float32";
  config["head_dim"] = hd;
  if (options.quant) {
    Json q = {{"group_size", options.quant->group_size}, {"bits", options.quant->bits}, {"mode", "affine"}};
    config["quantization"] = q;
    config["quantization_config"] = q;
  }
  {
    std::ofstream f(folder + "/config.json");
    f << config.dump(2);
  }

  SafetensorsWriter writer;
  uint64_t seed = options.seed;
  auto add_linear = [&](const std::string& name, int64_t out, int64_t in) {
    Tensor w = random_matrix({out, in}, 0.05f, seed++);
    if (options.quant) {
      QuantizedMatrix q = quantize_affine(w, *options.quant, options.dtype, MemCategory::kOther);
      writer.add(name + ".weight", q.packed);
      writer.add(name + ".scales", q.scales);
      writer.add(name + ".biases", q.biases);
    } else {
      writer.add(name + ".weight", w.to(options.dtype, MemCategory::kOther));
    }
  };
  auto add_bias = [&](const std::string& name, int64_t n) {
    writer.add(name, random_matrix({n}, 0.05f, seed++).to(options.dtype, MemCategory::kOther));
  };
  add_linear("model.embed_tokens", vocab, hidden);
  for (int64_t l = 0; l < layers; ++l) {
    std::string p = "model.layers." + std::to_string(l);
    add_linear(p + ".self_attn.q_proj", heads * hd, hidden);
    add_linear(p + ".self_attn.k_proj", kv * hd, hidden);
    add_linear(p + ".self_attn.v_proj", kv * hd, hidden);
    add_linear(p + ".self_attn.o_proj", hidden, heads * hd);
    if (qkv_bias) {
      add_bias(p + ".self_attn.q_proj.bias", heads * hd);
      add_bias(p + ".self_attn.k_proj.bias", kv * hd);
      add_bias(p + ".self_attn.v_proj.bias", kv * hd);
    }
    add_linear(p + ".mlp.gate_proj", inter, hidden);
    add_linear(p + ".mlp.up_proj", inter, hidden);
    add_linear(p + ".mlp.down_proj", hidden, inter);
    writer.add(p + ".input_layernorm.weight", filled(hidden, norm_one, options.dtype));
    writer.add(p + ".post_attention_layernorm.weight", filled(hidden, norm_one, options.dtype));
    if (gemma3) {
      writer.add(p + ".pre_feedforward_layernorm.weight", filled(hidden, norm_one, options.dtype));
      writer.add(p + ".post_feedforward_layernorm.weight", filled(hidden, norm_one, options.dtype));
      writer.add(p + ".self_attn.q_norm.weight", filled(hd, norm_one, options.dtype));
      writer.add(p + ".self_attn.k_norm.weight", filled(hd, norm_one, options.dtype));
    }
  }
  writer.add("model.norm.weight", filled(hidden, norm_one, options.dtype));
  if (!tied) add_linear("lm_head", vocab, hidden);
  writer.set_metadata("format", "pt");
  writer.write(folder + "/model.safetensors");
  return static_cast<int64_t>(writer.data_bytes());
}

Json BenchResult::to_json() const {
  Json samples_json = Json::array();
  for (const auto& s : samples)
    samples_json.push_back({{"load_s", s.load_s}, {"prefill_s", s.prefill_s}, {"decode_s", s.decode_s}});
  return Json{{"model", model},
              {"device", device},
              {"gpu", gpu.empty() ? Json(nullptr) : Json(gpu)},
              {"kernel_path", kernel_path},
              {"threads", threads},
              {"prompt_tokens", prompt_tokens},
              {"gen_tokens", gen_tokens},
              {"load_time_s", load_s},
              {"ttft_s", ttft_s},
              {"prompt_tps", prompt_tps},
              {"generation_tps", decode_tps},
              {"generation_tps_min", decode_tps_min},
              {"generation_tps_max", decode_tps_max},
              {"weight_bytes", weight_bytes},
              {"decode_bytes_per_token", decode_bytes_per_token},
              {"prefill_flops_per_token", prefill_flops_per_token},
              {"peak_memory_bytes", {{"host", peak_host_bytes}, {"rss", peak_rss_bytes}, {"gpu", peak_gpu_bytes}}},
              {"roofline",
               {{"read_bandwidth_gbs", bandwidth_gbs},
                {"f32_peak_gflops", f32_gflops},
                {"bf16_peak_gflops", bf16_gflops},
                {"decode_roofline_tps", decode_roofline_tps},
                {"decode_fraction", decode_roofline_fraction},
                {"prefill_gflops", prefill_gflops},
                {"prefill_fraction_of_f32_peak", prefill_fraction_of_peak},
                {"prefill_fraction_of_bf16_peak", prefill_fraction_of_bf16_peak}}},
              {"samples", samples_json}};
}

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
}  // namespace

BenchResult run_benchmark(const std::string& folder, const std::string& label, const BenchOptions& options) {
  VLM_CHECK(options.prompt_tokens >= 1 && options.gen_tokens >= 1 && options.repetitions >= 1,
            ErrorKind::kInvalidArgument, "bench: prompt tokens, generated tokens and repetitions must be >= 1");
  BenchResult r;
  r.model = label;
  const Device device = options.device;
  const bool on_gpu = device != Device::kCpu;
  { ops::DeviceScope probe(device); }  // refuses an unusable device before anything is loaded
  // Waits for everything issued on the model's device (a no-op on the cpu) before a clock is read.
  auto sync = [device] {
    ops::DeviceScope scope(device);
    ops::synchronize();
  };
  r.device = device_name(device);
  r.kernel_path = on_gpu ? "cuda" : ops::cpu_kernel_path();
  r.threads = ThreadPool::global().num_threads();
  r.prompt_tokens = options.prompt_tokens;
  r.gen_tokens = options.gen_tokens;

  if (on_gpu) {
    const std::vector<GpuInfo> gpus = cuda_devices();
    if (!gpus.empty()) r.gpu = gpus.front().name;
    r.bandwidth_gbs = ops::cuda::probe_copy_bandwidth_gbs();
    r.bf16_gflops = ops::cuda::probe_bf16_matmul_gflops();
  } else {
    BandwidthProbe bw = probe_read_bandwidth();
    ComputeProbe cp = probe_compute();
    r.bandwidth_gbs = bw.read_gbs;
    r.f32_gflops = cp.f32_gflops;
    r.bf16_gflops = cp.bf16_gflops;
  }

  MemoryTracker::instance().reset_peak_all();
  std::vector<double> loads, prefills, decodes;
  LoadedModel keep;
  for (int rep = 0; rep < options.repetitions; ++rep) {
    BenchSample s;
    if (on_gpu) keep = LoadedModel{};  // one model on the GPU at a time: the peak is one model's
    auto t0 = Clock::now();
    LoadOptions lo;
    lo.mode = options.lazy_load ? LoadMode::kLazy : LoadMode::kEager;
    lo.text_only = true;  // the protocol feeds token ids only; a VLM's tower would only add to the peak
    LoadedModel model = load_model(folder, lo);
    LanguageModel& lm = *model.language_model;
    lm.to_device(device);
    sync();
    s.load_s = seconds_since(t0);
    const int64_t vocab = lm.vocab_size(), hidden = lm.hidden_size();
    KVCacheOptions kv;
    kv.device = device;
    auto cache = make_kv_cache(lm.cache_layout(), kv);

    // Prompt: deterministic pseudo-random ids.
    std::vector<int32_t> ids(static_cast<size_t>(options.prompt_tokens));
    Rng rng{1234};
    for (auto& id : ids) id = static_cast<int32_t>((rng.uniform() * 0.5f + 0.5f) * static_cast<float>(vocab - 1));
    std::vector<float> logits(static_cast<size_t>(vocab));
    t0 = Clock::now();
    for (int64_t begin = 0; begin < options.prompt_tokens; begin += options.prefill_step_size) {
      int64_t n = std::min(options.prefill_step_size, options.prompt_tokens - begin);
      std::vector<float> emb(static_cast<size_t>(n * hidden));
      lm.embed(ids.data() + begin, n, emb.data());
      std::vector<int64_t> pos(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) pos[i] = begin + i;
      lm.forward(emb.data(), n, Positions{pos.data(), n, 1}, *cache, ops::AttentionMask{}, logits.data(), false);
    }
    sync();  // (forward already waited for its logits; this keeps the clock honest regardless)
    s.prefill_s = seconds_since(t0);

    for (float v : logits)
      VLM_CHECK(std::isfinite(v), ErrorKind::kInternal, "bench: non-finite logits from {}", label);

    // Greedy decode as generate runs it: forward_argmax (on a device only the id comes back).
    std::vector<float> emb(static_cast<size_t>(hidden));
    int32_t next = 0;
    {
      ops::DeviceScope host(Device::kCpu);
      ops::argmax(logits.data(), 1, vocab, &next);
    }
    t0 = Clock::now();
    for (int64_t g = 0; g < options.gen_tokens; ++g) {
      int64_t pos = options.prompt_tokens + g;
      lm.embed(&next, 1, emb.data());
      next = lm.forward_argmax(emb.data(), 1, Positions{&pos, 1, 1}, *cache, ops::AttentionMask{});
    }
    sync();
    s.decode_s = seconds_since(t0);
    r.samples.push_back(s);
    loads.push_back(s.load_s);
    prefills.push_back(s.prefill_s);
    decodes.push_back(s.decode_s);
    if (rep == options.repetitions - 1) {
      r.weight_bytes = static_cast<int64_t>(lm.weight_bytes());
      // KV bytes read per decode step: every layer's K and V (f32) over the mean context length.
      int64_t kv_per_token = 0;
      for (const auto& l : lm.cache_layout()) kv_per_token += 2 * l.n_kv_heads * l.head_dim * 4;
      const int64_t mean_ctx = options.prompt_tokens + options.gen_tokens / 2;
      // Decode reads every weight except the embedding table's unused rows; with a tied head the table is
      // read in full by the head, so weight_bytes counts it once either way.
      r.decode_bytes_per_token = r.weight_bytes + kv_per_token * mean_ctx;
      // Prefill FLOPs per token: 2 per weight of every projection, plus QKᵀ and PV over the mean causal
      // context (P/2), plus the head spread over the prompt — forward(all_logits=false) computes logits for the
      // last position of each prefill chunk only. From the config, so it holds for quantized weights too.
      const Json& t = model.config.text();
      const double h = t.value("hidden_size", 0.0), inter = t.value("intermediate_size", 0.0);
      const double nl = t.value("num_hidden_layers", 0.0), nh = t.value("num_attention_heads", 0.0);
      const double nkv = t.value("num_key_value_heads", nh), v = t.value("vocab_size", 0.0);
      const double hd = t.value("head_dim", nh > 0 ? h / nh : 0.0);
      const double per_layer = h * nh * hd * 2 + h * nkv * hd * 2 + 3 * h * inter;
      const double attn = 4.0 * nh * hd * (static_cast<double>(options.prompt_tokens) / 2);
      const double chunks = std::ceil(static_cast<double>(options.prompt_tokens) /
                                      static_cast<double>(options.prefill_step_size));
      r.prefill_flops_per_token = 2.0 * nl * per_layer + nl * attn +
                                  2.0 * v * h * chunks / static_cast<double>(options.prompt_tokens);
    }
    keep = std::move(model);
  }
  r.load_s = median(loads);
  r.ttft_s = median(prefills);
  r.prompt_tps = static_cast<double>(options.prompt_tokens) / r.ttft_s;
  std::vector<double> tps;
  for (double d : decodes) tps.push_back(static_cast<double>(options.gen_tokens) / d);
  r.decode_tps = median(tps);
  r.decode_tps_min = *std::min_element(tps.begin(), tps.end());
  r.decode_tps_max = *std::max_element(tps.begin(), tps.end());
  r.peak_host_bytes = MemoryTracker::instance().snapshot(MemDevice::kHost).peak;
  r.peak_rss_bytes = process_memory().peak_rss;
  r.peak_gpu_bytes = MemoryTracker::instance().snapshot(MemDevice::kGpu).peak;
  r.decode_roofline_tps = r.bandwidth_gbs * 1e9 / static_cast<double>(r.decode_bytes_per_token);
  r.decode_roofline_fraction = r.decode_tps / r.decode_roofline_tps;
  r.prefill_gflops = r.prefill_flops_per_token * r.prompt_tps / 1e9;
  // Against the f32 FMA peak (our GEMMs accumulate in f32 panels) and, where the CPU has it, the
  // bf16 dot-product peak (what a bf16 model could at most reach).
  r.prefill_fraction_of_peak = r.f32_gflops > 0 ? r.prefill_gflops / r.f32_gflops : 0;
  r.prefill_fraction_of_bf16_peak = r.bf16_gflops > 0 ? r.prefill_gflops / r.bf16_gflops : 0;
  return r;
}

}  // namespace vlm
