// Image-to-features benchmark: a 12 MP JPEG (4000x3000, photo-like synthetic content, TurboJPEG 4:2:0 q92)
// through decode_image_file, the family's image processor and the vision tower, for two real tower shapes
// with synthetic bf16 weights written as real checkpoints (config.json + processor_config.json + safetensors):
//   smolvlm — SmolVLM-256M: SigLIP/Idefics3 tower, 12 layers, hidden 768, mlp 3072, 12 heads, patch 16,
//             512-px tiles, Idefics3Processor size.longest_edge 2048 / max_image_size 512, scale_factor 4;
//   qwen    — Qwen2.5-VL-3B: depth 32, hidden 1280, intermediate 3420, 16 heads, patch 14, window 112,
//             fullatt [7,15,23,31], merge 2, out_hidden 2048; one run per --max-pixels budget.
// The connector (pixel shuffle / LM projection) is not part of the timed encode (it is < 1% of the FLOPs).
// FLOPs of the encode are counted from the shapes (2 per multiply-add: every linear, attention's QKᵀ and
// PV; norms, activations and softmax are not counted) and compared with the f32 / bf16 matrix throughput
// measured by probes.h in the same run: "floor" = FLOPs / peak, "fraction" = floor / measured.
// A per-op table (one layer's linears and attention at the tower's token counts) shows where time goes.
//
// usage: bench_vision [--runs N] [--models smolvlm,qwen] [--max-pixels P[,P...]] [--threads T] [--keep DIR]
//                     [--ops-only]   (decode, preprocess and the per-op table; no full tower encode)
#include <turbojpeg.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/json.h"
#include "core/thread_pool.h"
#include "image/image.h"
#include "image/processor.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "kernels/ops.h"
#include "kernels/probes.h"
#include "models/vision/vision_encoder.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// Median wall seconds of `runs` calls of f (after `warmup` unmeasured ones); *cpu gets the median process CPU
// seconds (all threads), which stays meaningful when other jobs share the cores.
double time_median(int runs, int warmup, const std::function<void()>& f, std::vector<double>* samples = nullptr,
                   double* cpu = nullptr) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> s, c;
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    const double c0 = cpu_seconds();
    f();
    s.push_back(seconds_since(t0));
    c.push_back(cpu_seconds() - c0);
  }
  if (samples) *samples = s;
  if (cpu) *cpu = median(c);
  return median(s);
}

// Photo-like 4000x3000 content: smooth gradients, a few discs and bars, sensor-like noise.
std::vector<uint8_t> make_jpeg(int w, int h) {
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 6.0f);
  struct Disc { float cx, cy, r; int c[3]; };
  const Disc discs[] = {{0.3f, 0.4f, 0.12f, {220, 60, 40}}, {0.7f, 0.6f, 0.2f, {40, 90, 200}},
                        {0.55f, 0.2f, 0.07f, {250, 230, 80}}};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float fx = float(x) / w, fy = float(y) / h;
      float c[3] = {90 + 120 * fy + 25 * std::sin(fx * 9.0f), 140 - 60 * fy + 30 * std::cos(fx * 5 + fy * 3),
                    200 - 150 * fy};
      for (const Disc& d : discs) {
        const float dx = (fx - d.cx) * 4.0f / 3.0f, dy = fy - d.cy;
        if (dx * dx + dy * dy < d.r * d.r)
          for (int k = 0; k < 3; ++k) c[k] = 0.7f * d.c[k] + 0.3f * c[k] * (1 - (dx * dx + dy * dy) / (d.r * d.r));
      }
      if (((x / 40) % 7 == 0) && fy > 0.75f) c[0] = c[1] = c[2] = 30;  // fence posts
      uint8_t* p = &rgb[(size_t(y) * w + x) * 3];
      for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::clamp(int(c[k] + noise(rng)), 0, 255));
    }
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 92, 0) != 0) {
    std::fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
    std::exit(1);
  }
  std::vector<uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

// ---- synthetic checkpoints -----------------------------------------------------------------------------

// Uniform random bf16 in [-a, a] (xorshift: 1e9 values in a few seconds).
vlm::Tensor random_bf16(const vlm::Shape& shape, float a, uint64_t seed) {
  vlm::Tensor t = vlm::Tensor::empty(shape, vlm::DType::kBF16, vlm::MemCategory::kOther);
  auto* p = t.data<uint16_t>();
  const int64_t n = t.numel();
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < n; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    const float u = float(s >> 40) / float(1 << 24) * 2.0f - 1.0f;
    p[i] = vlm::f32_to_bf16(a * u);
  }
  return t;
}
vlm::Tensor const_bf16(const vlm::Shape& shape, float v) {
  vlm::Tensor t = vlm::Tensor::empty(shape, vlm::DType::kBF16, vlm::MemCategory::kOther);
  std::fill(t.data<uint16_t>(), t.data<uint16_t>() + t.numel(), vlm::f32_to_bf16(v));
  return t;
}

void write_json(const fs::path& p, const vlm::Json& j) {
  std::ofstream(p) << j.dump(2) << "\n";
}

struct Writer {
  vlm::SafetensorsWriter w;
  uint64_t seed = 1;
  // Linear [out, in] with uniform init of variance 1/in (keeps activations O(1) through the depth).
  void linear(const std::string& name, int64_t out, int64_t in, bool bias = true) {
    w.add(name + ".weight", random_bf16({out, in}, std::sqrt(3.0f / float(in)), seed++));
    if (bias) w.add(name + ".bias", random_bf16({out}, 0.02f, seed++));
  }
  void norm(const std::string& name, int64_t d, bool bias) {
    w.add(name + ".weight", const_bf16({d}, 1.0f));
    if (bias) w.add(name + ".bias", const_bf16({d}, 0.0f));
  }
};

// SmolVLM-256M-Instruct's config / processor fields (Hub layout: model.vision_model.*).
void write_smolvlm(const fs::path& dir) {
  fs::create_directories(dir);
  const int64_t D = 768, I = 3072, L = 12, P = 16, side = 512 / P;
  vlm::Json vc = {{"hidden_size", D},          {"image_size", 512},      {"intermediate_size", I},
                  {"model_type", "idefics3_vision"}, {"num_attention_heads", 12}, {"num_hidden_layers", L},
                  {"patch_size", P},           {"hidden_act", "gelu_pytorch_tanh"}, {"layer_norm_eps", 1e-6},
                  {"num_channels", 3},         {"max_image_size", {{"longest_edge", 512}}}};
  vlm::Json cfg = {{"architectures", {"Idefics3ForConditionalGeneration"}},
                   {"model_type", "idefics3"},
                   {"image_token_id", 49190},
                   {"scale_factor", 4},
                   {"torch_dtype", "bfloat16"},
                   {"vision_config", vc},
                   {"text_config", {{"model_type", "llama"}, {"hidden_size", 576}, {"vocab_size", 49280}}}};
  write_json(dir / "config.json", cfg);
  vlm::Json ip = {{"do_convert_rgb", true},
                  {"do_image_splitting", true},
                  {"do_normalize", true},
                  {"do_pad", true},
                  {"do_rescale", true},
                  {"do_resize", true},
                  {"image_mean", {0.5, 0.5, 0.5}},
                  {"image_std", {0.5, 0.5, 0.5}},
                  {"image_processor_type", "Idefics3ImageProcessor"},
                  {"max_image_size", {{"longest_edge", 512}}},
                  {"resample", 1},
                  {"rescale_factor", 1.0 / 255.0},
                  {"size", {{"longest_edge", 2048}}}};
  write_json(dir / "processor_config.json",
             {{"image_processor", ip}, {"image_seq_len", 64}, {"processor_class", "Idefics3Processor"}});
  Writer w;
  const std::string p = "model.vision_model.";
  w.w.add(p + "embeddings.patch_embedding.weight", random_bf16({D, 3, P, P}, std::sqrt(3.0f / (3 * P * P)), w.seed++));
  w.w.add(p + "embeddings.patch_embedding.bias", random_bf16({D}, 0.02f, w.seed++));
  w.w.add(p + "embeddings.position_embedding.weight", random_bf16({side * side, D}, 0.5f, w.seed++));
  for (int64_t l = 0; l < L; ++l) {
    const std::string q = p + "encoder.layers." + std::to_string(l) + ".";
    w.norm(q + "layer_norm1", D, true);
    w.norm(q + "layer_norm2", D, true);
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) w.linear(q + "self_attn." + n, D, D);
    w.linear(q + "mlp.fc1", I, D);
    w.linear(q + "mlp.fc2", D, I);
  }
  w.norm(p + "post_layernorm", D, true);
  w.w.set_metadata("format", "pt");
  w.w.write((dir / "model.safetensors").string());
}

// Qwen2.5-VL-3B-Instruct's vision config / processor fields (Hub layout: visual.*).
void write_qwen_configs(const fs::path& dir) {
  fs::create_directories(dir);
  const int64_t D = 1280, I = 3420, depth = 32, P = 14, T = 2, out = 2048;
  vlm::Json vc = {{"depth", depth},
                  {"hidden_act", "silu"},
                  {"hidden_size", D},
                  {"intermediate_size", I},
                  {"num_heads", 16},
                  {"in_chans", 3},
                  {"out_hidden_size", out},
                  {"patch_size", P},
                  {"spatial_merge_size", 2},
                  {"spatial_patch_size", P},
                  {"window_size", 112},
                  {"fullatt_block_indexes", {7, 15, 23, 31}},
                  {"tokens_per_second", 2},
                  {"temporal_patch_size", T},
                  {"model_type", "qwen2_5_vl"}};
  vlm::Json cfg = {{"architectures", {"Qwen2_5_VLForConditionalGeneration"}},
                   {"model_type", "qwen2_5_vl"},
                   {"hidden_size", out},
                   {"image_token_id", 151655},
                   {"video_token_id", 151656},
                   {"vision_start_token_id", 151652},
                   {"vision_end_token_id", 151653},
                   {"torch_dtype", "bfloat16"},
                   {"vision_config", vc}};
  write_json(dir / "config.json", cfg);
  vlm::Json ip = {{"do_convert_rgb", true},
                  {"do_normalize", true},
                  {"do_rescale", true},
                  {"do_resize", true},
                  {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
                  {"image_std", {0.26862954, 0.26130258, 0.27577711}},
                  {"image_processor_type", "Qwen2VLImageProcessor"},
                  {"merge_size", 2},
                  {"min_pixels", 3136},
                  {"max_pixels", 12845056},
                  {"patch_size", P},
                  {"resample", 3},
                  {"rescale_factor", 1.0 / 255.0},
                  {"size", {{"longest_edge", 12845056}, {"shortest_edge", 3136}}},
                  {"temporal_patch_size", T}};
  write_json(dir / "processor_config.json", {{"image_processor", ip}, {"processor_class", "Qwen2_5_VLProcessor"}});
}

void write_qwen(const fs::path& dir) {
  write_qwen_configs(dir);
  const int64_t D = 1280, I = 3420, depth = 32, P = 14, T = 2, out = 2048, merged = D * 4;
  Writer w;
  const std::string p = "visual.";
  w.w.add(p + "patch_embed.proj.weight", random_bf16({D, 3, T, P, P}, std::sqrt(3.0f / (3 * T * P * P)), w.seed++));
  for (int64_t l = 0; l < depth; ++l) {
    const std::string q = p + "blocks." + std::to_string(l) + ".";
    w.norm(q + "norm1", D, false);
    w.norm(q + "norm2", D, false);
    w.linear(q + "attn.qkv", 3 * D, D);
    w.linear(q + "attn.proj", D, D);
    w.linear(q + "mlp.gate_proj", I, D);
    w.linear(q + "mlp.up_proj", I, D);
    w.linear(q + "mlp.down_proj", D, I);
  }
  w.norm(p + "merger.ln_q", D, false);
  w.linear(p + "merger.mlp.0", merged, merged);
  w.linear(p + "merger.mlp.2", out, merged);
  w.w.set_metadata("format", "pt");
  w.w.write((dir / "model.safetensors").string());
}

vlm::Json read_json(const fs::path& p) {
  std::ifstream f(p);
  return vlm::Json::parse(f);
}

// ---- FLOP counts (2 per multiply-add) -----------------------------------------------------------------

double vit_flops(int64_t tiles, int64_t n, int64_t nk, int64_t D, int64_t I, int64_t L, int64_t patch_in,
                 double* attn_part) {
  const double per_layer_lin = 2.0 * n * (4.0 * D * D + 2.0 * D * I);
  const double per_layer_att = 4.0 * double(n) * double(nk) * D;
  *attn_part = tiles * L * per_layer_att;
  return tiles * (2.0 * n * D * patch_in + L * (per_layer_lin + per_layer_att));
}

// Qwen2.5-VL windows: 112 px = 4x4 merge units (8x8 patches), cut from the merged grid's top-left corner.
double qwen_flops(int64_t gh, int64_t gw, double* attn_part) {
  const int64_t D = 1280, I = 3420, depth = 32, out = 2048, patch_in = 3 * 2 * 14 * 14, n = gh * gw;
  const int64_t uh = gh / 2, uw = gw / 2, wu = 4;
  double sum_sq = 0;
  for (int64_t r = 0; r < uh; r += wu)
    for (int64_t c = 0; c < uw; c += wu) {
      const double len = double(std::min(wu, uh - r) * std::min(wu, uw - c) * 4);
      sum_sq += len * len;
    }
  const double lin = 2.0 * n * (4.0 * D * D + 3.0 * D * I);
  const double full_att = 4.0 * double(n) * double(n) * D, win_att = 4.0 * sum_sq * D;
  *attn_part = 4 * full_att + (depth - 4) * win_att;
  const double merger = 2.0 * (n / 4) * (4.0 * D * 4.0 * D + 4.0 * D * out);
  return 2.0 * n * D * patch_in + depth * lin + *attn_part + merger;
}

// ---- per-op profile ---------------------------------------------------------------------------------

struct OpRow {
  std::string name;
  double flops, seconds, cpu_seconds;
};

void print_ops(const std::vector<OpRow>& rows, double f32_peak) {
  // GFLOP/s per CPU-second x threads = the rate the op would reach with every pool thread on its own core.
  const int th = vlm::ThreadPool::global().num_threads();
  std::printf("  %-52s %8s %9s %9s %9s %9s %12s\n", "op (one layer)", "GFLOP", "wall ms", "cpu ms", "GFLOP/s",
              "of f32pk", "cpu-GFLOP/s");
  for (const OpRow& r : rows)
    std::printf("  %-52s %8.3f %9.2f %9.2f %9.1f %8.0f%% %12.1f\n", r.name.c_str(), r.flops / 1e9, r.seconds * 1e3,
                r.cpu_seconds * 1e3, r.flops / r.seconds / 1e9, 100.0 * r.flops / r.seconds / 1e9 / f32_peak,
                r.flops / r.cpu_seconds * th / 1e9);
}

// Times ops::linear with a bf16 [out, in] weight on n tokens.
OpRow time_linear(const std::string& name, int64_t n, int64_t out, int64_t in, int runs) {
  vlm::ops::Weight w;
  w.dense = random_bf16({out, in}, std::sqrt(3.0f / float(in)), 99);
  vlm::Tensor b = vlm::Tensor::zeros({out}, vlm::DType::kF32);
  std::vector<float> x(size_t(n * in)), y(size_t(n * out));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  for (float& v : x) v = u(rng);
  double cpu = 0;
  const double s = time_median(runs, 1, [&] { vlm::ops::linear(x.data(), n, w, b, y.data()); }, nullptr, &cpu);
  return {name, 2.0 * n * out * in, s, cpu};
}

// Times ops::attention (bidirectional, as the towers call it) on `calls` independent segments of `len` tokens.
OpRow time_attention(const std::string& name, int64_t calls, int64_t len, int64_t heads, int64_t hd, int runs) {
  const int64_t D = heads * hd, n = calls * len;
  std::vector<float> q(size_t(n * D)), k(size_t(n * D)), v(size_t(n * D)), o(size_t(n * D));
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0, 1);
  for (auto* a : {&q, &k, &v})
    for (float& x : *a) x = g(rng);
  std::vector<int64_t> pos(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) pos[size_t(j)] = j;
  vlm::ops::AttentionMask mask;
  mask.causal = false;
  const float scale = 1.0f / std::sqrt(float(hd));
  double cpu = 0;
  const double s = time_median(runs, 1, [&] {
    for (int64_t c = 0; c < calls; ++c)
      vlm::ops::attention(q.data() + c * len * D, len, 0, k.data() + c * len * D, v.data() + c * len * D, pos.data(),
                          len, heads, heads, hd, scale, 0.0f, mask, o.data() + c * len * D);
  }, nullptr, &cpu);
  return {name, 4.0 * double(n) * len * D, s, cpu};
}

struct Result {
  std::string model, what;
  int64_t tokens = 0;  // patches through the tower
  double decode_s = 0, preprocess_s = 0, encode_s = 0, encode_cpu_s = 0, flops = 0, attn_flops = 0;
  std::vector<double> samples;
};

}  // namespace

int main(int argc, char** argv) {
  int runs = 1, threads = 0;
  bool ops_only = false;
  std::string models = "smolvlm,qwen", keep;
  std::vector<int64_t> budgets = {1280 * 28 * 28};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--runs") runs = std::max(1, std::atoi(next().c_str()));
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--models") models = next();
    else if (a == "--keep") keep = next();
    else if (a == "--ops-only") ops_only = true;
    else if (a == "--max-pixels") {
      budgets.clear();
      std::string s = next();
      for (size_t p = 0; p < s.size();) {
        size_t e = s.find(',', p);
        budgets.push_back(std::atoll(s.substr(p, e - p).c_str()));
        p = e == std::string::npos ? s.size() : e + 1;
      }
    } else {
      std::fprintf(stderr, "usage: bench_vision [--runs N] [--models smolvlm,qwen] [--max-pixels P,...] "
                           "[--threads T] [--keep DIR] [--ops-only]\n");
      return 2;
    }
  }
  if (threads > 0) vlm::ThreadPool::set_global_threads(threads);
  const bool want_smol = models.find("smolvlm") != std::string::npos;
  const bool want_qwen = models.find("qwen") != std::string::npos;

  double load[3] = {0, 0, 0};
  getloadavg(load, 3);
  std::printf("bench_vision: kernels %s, %d threads, load average %.2f %.2f %.2f, runs %d\n",
              vlm::ops::cpu_kernel_path(), vlm::ThreadPool::global().num_threads(), load[0], load[1], load[2], runs);
  const vlm::ComputeProbe cp = vlm::probe_compute();
  std::printf("probe: f32 FMA peak %.1f GFLOP/s, bf16 dot peak %.1f GFLOP/s (%s, %d threads)\n\n", cp.f32_gflops,
              cp.bf16_gflops, cp.isa, cp.threads);

  const fs::path dir = keep.empty() ? fs::temp_directory_path() / ("bench_vision_" + std::to_string(getpid())) : fs::path(keep);
  fs::create_directories(dir);
  const fs::path jpg = dir / "photo_12mp.jpg";
  {
    auto t0 = Clock::now();
    std::vector<uint8_t> bytes = make_jpeg(4000, 3000);
    std::ofstream(jpg, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    std::printf("made %s: 4000x3000, %.1f MB, %.1f s\n", jpg.c_str(), bytes.size() / 1e6, seconds_since(t0));
  }
  vlm::DecodedImage decoded;
  std::vector<double> dec_samples;
  const double decode_s = time_median(std::max(3, runs), 1, [&] { decoded = vlm::decode_image_file(jpg.string()); },
                                      &dec_samples);
  std::printf("decode_image_file: median %.1f ms\n", decode_s * 1e3);

  std::vector<Result> results;
  std::vector<std::pair<std::string, std::vector<OpRow>>> profiles;

  if (want_smol) {
    const fs::path md = dir / "smolvlm256m_synthetic";
    if (!fs::exists(md / "model.safetensors")) {
      auto t0 = Clock::now();
      write_smolvlm(md);
      std::printf("wrote %s in %.1f s\n", md.c_str(), seconds_since(t0));
    }
    const vlm::Json cfg = read_json(md / "config.json"), pc = read_json(md / "processor_config.json");
    auto proc = vlm::make_image_processor(cfg, pc["image_processor"], pc, {}, md.string());
    vlm::ProcessedImage im;
    const double pre_s = time_median(std::max(3, runs), 1, [&] { im = proc->process(decoded.image); });
    const vlm::Checkpoint ck = vlm::Checkpoint::open(md.string(), vlm::LoadMode::kEager);
    vlm::ViTEncoder enc(cfg["vision_config"], ck, "model.vision_model.", -1, md.string());
    const int64_t tiles = im.pixels.dim(0), th = im.pixels.dim(2), tw = im.pixels.dim(3), P = enc.patch_size();
    const int64_t n = (th / P) * (tw / P);
    const uint8_t* mask_all = nullptr;  // every tile of a 2048x1536 resize is full (checked below)
    if (im.pixel_mask.defined()) {
      const auto* m = im.pixel_mask.data<uint8_t>();
      if (!std::all_of(m, m + im.pixel_mask.numel(), [](uint8_t b) { return b != 0; }))
        std::printf("note: padded tiles present; FLOPs count all keys\n");
    }
    (void)mask_all;
    std::printf("smolvlm: processed %dx%d -> %dx%d tiles + global = %lld tiles of %lldx%lld, %lld patches each\n",
                im.processed_width, im.processed_height, im.cols, im.rows, (long long)tiles, (long long)th,
                (long long)tw, (long long)n);
    Result r;
    r.model = "SmolVLM-256M tower";
    r.what = std::to_string(tiles) + " tiles x " + std::to_string(n) + " patches";
    r.tokens = tiles * n;
    r.decode_s = decode_s;
    r.preprocess_s = pre_s;
    r.flops = vit_flops(tiles, n, n, 768, 3072, 12, 3 * P * P, &r.attn_flops);
    const float* px = im.pixels.data<float>();
    const uint8_t* pm = im.pixel_mask.defined() ? im.pixel_mask.data<uint8_t>() : nullptr;
    if (!ops_only) r.encode_s = time_median(runs, 0, [&] {
      for (int64_t t = 0; t < tiles; ++t) {
        std::vector<uint8_t> patch_mask;
        if (pm) {  // per-patch mask from the pixel mask: a patch is real if any of its pixels is
          patch_mask.assign(size_t(n), 0);
          for (int64_t y = 0; y < th; ++y)
            for (int64_t x = 0; x < tw; ++x)
              if (pm[(t * th + y) * tw + x]) patch_mask[size_t((y / P) * (tw / P) + x / P)] = 1;
        }
        vlm::Tensor f = enc.forward(px + t * 3 * th * tw, th, tw, -1, true, pm ? patch_mask.data() : nullptr);
        if (f.dim(0) != n) std::abort();
      }
    }, &r.samples, &r.encode_cpu_s);
    results.push_back(r);
    std::vector<OpRow> ops;
    const int pr = 3;
    ops.push_back(time_linear("linear q/k/v/o 768->768 bf16, n=1024 (x4)", n, 768, 768, pr));
    ops.back().flops *= 4, ops.back().seconds *= 4, ops.back().cpu_seconds *= 4;
    ops.push_back(time_linear("linear fc1 768->3072 bf16, n=1024", n, 3072, 768, pr));
    ops.push_back(time_linear("linear fc2 3072->768 bf16, n=1024", n, 768, 3072, pr));
    ops.push_back(time_attention("attention 1024 tokens, 12 heads x 64", 1, n, 12, 64, pr));
    profiles.emplace_back("SmolVLM-256M tower, one 512-px tile layer", ops);
  }

  if (want_qwen) {
    const fs::path md = dir / "qwen25vl3b_synthetic";
    if (!fs::exists(md / "model.safetensors") && !ops_only) {
      auto t0 = Clock::now();
      write_qwen(md);
      std::printf("wrote %s in %.1f s\n", md.c_str(), seconds_since(t0));
    } else if (ops_only) {
      write_qwen_configs(md);
    }
    const vlm::Json cfg = read_json(md / "config.json"), pc = read_json(md / "processor_config.json");
    std::optional<vlm::Checkpoint> ck;
    std::optional<vlm::QwenVisionEncoder> enc;
    if (!ops_only) {
      ck.emplace(vlm::Checkpoint::open(md.string(), vlm::LoadMode::kEager));
      enc.emplace(cfg["vision_config"], "qwen2_5_vl", *ck, "visual.", md.string());
    }
    int64_t last_n = 0;
    for (int64_t budget : budgets) {
      vlm::ProcessorOptions opt;
      opt.max_pixels = budget;
      auto proc = vlm::make_image_processor(cfg, pc["image_processor"], pc, opt, md.string());
      vlm::ProcessedImage im;
      const double pre_s = time_median(std::max(3, runs), 1, [&] { im = proc->process(decoded.image); });
      const int64_t n = im.grid_t * im.grid_h * im.grid_w;
      std::printf("qwen: max_pixels %lld -> %dx%d, grid %lldx%lld, %lld patches\n", (long long)budget,
                  im.processed_width, im.processed_height, (long long)im.grid_h, (long long)im.grid_w, (long long)n);
      Result r;
      r.model = "Qwen2.5-VL-3B tower";
      r.what = "max_pixels " + std::to_string(budget) + ": " + std::to_string(im.processed_width) + "x" +
               std::to_string(im.processed_height) + ", " + std::to_string(n) + " patches";
      r.tokens = n;
      r.decode_s = decode_s;
      r.preprocess_s = pre_s;
      r.flops = qwen_flops(im.grid_h, im.grid_w, &r.attn_flops);
      if (!ops_only) r.encode_s = time_median(runs, 0, [&] {
        vlm::Tensor f = enc->forward(im.pixels, im.grid_t, im.grid_h, im.grid_w);
        if (f.dim(0) != n / 4) std::abort();
      }, &r.samples, &r.encode_cpu_s);
      results.push_back(r);
      last_n = n;
    }
    if (last_n > 0) {
      std::vector<OpRow> ops;
      const int pr = 3;
      const std::string ns = ", n=" + std::to_string(last_n);
      ops.push_back(time_linear("linear qkv 1280->3840 bf16" + ns, last_n, 3840, 1280, pr));
      ops.push_back(time_linear("linear proj 1280->1280 bf16" + ns, last_n, 1280, 1280, pr));
      ops.push_back(time_linear("linear gate+up 1280->3420 bf16 (x2)" + ns, last_n, 3420, 1280, pr));
      ops.back().flops *= 2, ops.back().seconds *= 2, ops.back().cpu_seconds *= 2;
      ops.push_back(time_linear("linear down 3420->1280 bf16" + ns, last_n, 1280, 3420, pr));
      ops.push_back(time_attention("attention windows of 64, 16 heads x 80", last_n / 64, 64, 16, 80, pr));
      ops.push_back(time_attention("attention full " + std::to_string(last_n) + ", 16 heads x 80", 1, last_n, 16, 80,
                                   1));
      profiles.emplace_back("Qwen2.5-VL-3B tower, one block at the last budget", ops);
    }
  }

  std::printf("\n%-20s %-44s %9s %9s %10s %9s %8s %9s %9s\n", "model", "input", "decode", "preproc", "encode",
              "TFLOP", "attn%", "f32 frac", "bf16 frac");
  for (const Result& r : results) {
    if (r.encode_s <= 0) {
      std::printf("%-20s %-44s %7.0fms %7.0fms %10s %9.3f %7.1f%%\n", r.model.c_str(), r.what.c_str(), r.decode_s * 1e3,
                  r.preprocess_s * 1e3, "-", r.flops / 1e12, 100 * r.attn_flops / r.flops);
      continue;
    }
    const double f32_floor = r.flops / (cp.f32_gflops * 1e9);
    const double bf16_floor = cp.bf16_gflops > 0 ? r.flops / (cp.bf16_gflops * 1e9) : 0;
    std::printf("%-20s %-44s %7.0fms %7.0fms %9.2fs %9.3f %7.1f%% %8.1f%% %8.1f%%\n", r.model.c_str(), r.what.c_str(),
                r.decode_s * 1e3, r.preprocess_s * 1e3, r.encode_s, r.flops / 1e12, 100 * r.attn_flops / r.flops,
                100 * f32_floor / r.encode_s, 100 * bf16_floor / r.encode_s);
    std::printf("%-20s   encode %.1f GFLOP/s wall, cpu %.1f s (%.1f GFLOP/s per CPU-second x %d threads); floor at "
                "f32 peak %.2f s, at bf16 peak %.2f s; samples [", "", r.flops / r.encode_s / 1e9, r.encode_cpu_s,
                r.flops / r.encode_cpu_s * vlm::ThreadPool::global().num_threads() / 1e9,
                vlm::ThreadPool::global().num_threads(), f32_floor, bf16_floor);
    for (size_t i = 0; i < r.samples.size(); ++i) std::printf("%s%.2f", i ? ", " : "", r.samples[i]);
    std::printf("] s\n");
  }
  for (const auto& [title, rows] : profiles) {
    std::printf("\n%s:\n", title.c_str());
    print_ops(rows, cp.f32_gflops);
  }
  getloadavg(load, 3);
  std::printf("\nload average at end %.2f %.2f %.2f\n", load[0], load[1], load[2]);
  if (keep.empty()) fs::remove_all(dir);
  return 0;
}
