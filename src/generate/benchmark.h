// Engine benchmarks behind `vlmcheck bench`: synthetic checkpoints of real model shapes (random
// weights in any dtype or MLX quantization, written as a normal model folder so loading is measured
// too), and a run protocol (load → prefill of P tokens → G decode steps, repeated) whose results are
// reported against the rooflines measured in the same run (kernels/probes.h).
//
// Two modes. Text (the default): token ids straight into the language model (a VLM loads text-only).
// Image (BenchOptions::image_path set): the `vlmcheck generate --image` path end to end — the VLM with its
// vision tower, the folder's tokenizer, chat template and processor configs, prepare_prompt (image decode,
// processing, placeholder expansion, vision encoding, prompt embeddings) and generate() (multimodal
// prefill, greedy decode) — so TTFT covers image load + preprocessing + vision encode + prefill. The
// synthetic VLM shapes carry the real tower and projector of their model (SyntheticShape::vlm_type) and are
// written with a small byte-level tokenizer whose special tokens stand in for the real ones (ids differ,
// costs do not: every text byte is one token).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/json.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "models/language_model.h"

namespace vlm {

struct SyntheticShape {
  std::string name;        // "qwen2.5-0.5b"
  std::string model_type;  // config.json model_type (of the text decoder)
  Json config;             // the text config fields (hidden_size, ...)
  // VLM shapes: the VLM model_type written with the vision tower ("qwen2_5_vl", "gemma3", "idefics3"; "" for
  // text-only shapes) and its vision_config (the real model's public config).
  std::string vlm_type = "";
  Json vision_config = nullptr;
};

// The known shapes (public configs of the real models' language parts).
const std::vector<SyntheticShape>& synthetic_shapes();
const SyntheticShape& find_synthetic_shape(const std::string& name);  // throws kInvalidArgument listing names

struct SyntheticOptions {
  DType dtype = DType::kBF16;
  // MLX affine quantization of every language-model linear + the embedding. The vision tower and projector
  // stay in `dtype`, as in mlx-community's conversions (our loaders refuse a quantized tower).
  std::optional<AffineQuantSpec> quant;
  uint64_t seed = 1;
  // VLM shapes only: write the whole VLM (tower, projector, tokenizer, chat template, processor configs)
  // instead of the text decoder alone. Error(kInvalidArgument) for a text-only shape.
  bool with_vision = false;
};

// Writes config.json + model.safetensors (and, with_vision, tokenizer.json, tokenizer_config.json,
// chat_template.json, preprocessor_config.json, processor_config.json) for `shape` into `folder`
// (created). Returns the bytes of tensor data written.
int64_t write_synthetic_checkpoint(const SyntheticShape& shape, const SyntheticOptions& options,
                                   const std::string& folder);

// A deterministic photo-like RGB picture (sky and ground gradients, shaded shapes, fine texture, noise) as
// a baseline JPEG (quality 90, 4:2:0) at `path`: what a camera image costs to decode and resize.
void write_synthetic_photo(const std::string& path, int width, int height, uint64_t seed = 7);

struct BenchOptions {
  // Text mode: the prompt length. Image mode: the total prompt (chat template + image tokens + text) is
  // padded with filler text to this many tokens; 0 = the image and a one-line question only.
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 64;
  int repetitions = 3;
  bool lazy_load = false;
  int64_t prefill_step_size = 2048;
  // The KV cache, as `generate` builds it from the same flags (KVCacheOptions; GenerationParams in image
  // mode): rotating (max_kv_size), quantized (kv_bits, kv_group_size, from quantized_kv_start tokens on).
  std::optional<int64_t> max_kv_size;
  std::optional<int> kv_bits;
  int kv_group_size = 64;
  int64_t quantized_kv_start = 5000;
  // Where the language model runs. On kCuda the weights are uploaded after loading (counted in load_s),
  // clocks are read after ops::synchronize(), and the rooflines are the GPU's (device-to-device copy
  // bandwidth, cuBLASLt bf16 matmul throughput) instead of the CPU probes.
  Device device = Device::kCpu;
  // Image mode: the image file fed to the VLM ("" = text mode) and the question asked about it.
  std::string image_path;
  std::string question = "Describe this image.";
};

// The mean K/V bytes one greedy decode step reads, over options.gen_tokens steps after a prefill of
// `prompt_tokens`, with the cache `options` describes: step g attends over its layer's held rows
// (prompt_tokens + g + 1, capped by the layer's sliding window, or by max_kv_size where no layer is
// windowed), at 4 bytes per value (f32), or bits/8 + 8/group_size (codes + f32 scale and bias) once the
// cache has converted (its offset prompt_tokens + g reached quantized_kv_start).
double kv_decode_bytes(const std::vector<LayerCacheInfo>& layers, const BenchOptions& options,
                       int64_t prompt_tokens);

struct BenchSample {
  double load_s = 0, prefill_s = 0, decode_s = 0;
  // Image mode: ttft_s = tokenize_s + image_preprocess_s + vision_encode_s + prefill_s (+ cache setup);
  // prefill_s is the language model's part alone.
  double ttft_s = 0, tokenize_s = 0, image_preprocess_s = 0, vision_encode_s = 0;
};

struct BenchResult {
  std::string model;  // folder or synthetic name
  std::string kernel_path;  // the CPU path, or "cuda"
  std::string device = "cpu";
  std::string gpu;  // the CUDA device's name when device is cuda
  int threads = 0;
  int64_t prompt_tokens = 0, gen_tokens = 0;
  std::vector<BenchSample> samples;  // raw, one per repetition
  // Medians. Text mode: ttft_s is the prefill. Image mode: ttft_s covers image load + preprocessing + vision
  // encode + prefill of the whole prompt; prompt_tps is prompt tokens over the language model's prefill.
  double load_s = 0, ttft_s = 0, prompt_tps = 0, decode_tps = 0;
  std::string mode = "text";  // "text" | "image"
  // Image mode: medians of the stages, what the image became, the prompt's split, the tower's bytes.
  double tokenize_s = 0, image_preprocess_s = 0, vision_encode_s = 0, prefill_s = 0;
  Json image = nullptr;  // ImageInfo::to_json() of the image (null in text mode)
  int64_t image_tokens = 0, text_tokens = 0;
  int64_t vision_weight_bytes = 0;
  double decode_tps_min = 0, decode_tps_max = 0;
  int64_t weight_bytes = 0;
  std::string kv_cache;  // LayeredKVCache::describe() of the cache the last repetition decoded with
  // Weights touched + the mean K/V bytes read per decode step: every layer's held rows (capped by its
  // window or max_kv_size) at f32, or at the quantized size (codes + f32 scale and bias per group) on the
  // steps after the cache converted (kv_decode_bytes).
  int64_t decode_bytes_per_token = 0;
  double prefill_flops_per_token = 0;
  int64_t peak_host_bytes = 0, peak_rss_bytes = 0, peak_gpu_bytes = 0;
  // CPU: read bandwidth and f32/bf16 FMA peaks (kernels/probes.h). CUDA: copy bandwidth and the bf16
  // matmul peak (f32_gflops stays 0: not probed).
  double bandwidth_gbs = 0, f32_gflops = 0, bf16_gflops = 0;
  // CPU: the read probe's spread (bandwidth_gbs is the median of its trials, taken in `bursts` separate
  // probes: before and after the repetitions) and bytes per trial.
  double bandwidth_min_gbs = 0, bandwidth_max_gbs = 0;
  int bandwidth_trials = 0, bandwidth_bursts = 0;
  int64_t bandwidth_probe_bytes = 0;
  double decode_roofline_tps = 0, decode_roofline_fraction = 0;
  double prefill_gflops = 0, prefill_fraction_of_peak = 0, prefill_fraction_of_bf16_peak = 0;
  // CUDA: where the host time of the last repetition's captured decode steps went, per step
  // (ops::cuda::GraphStats): capture (the ops' host work under capture), graph API (piece ends,
  // executable updates, launches) and the final wait for the GPU. capture + graph API close to the
  // time per token means decode is bound by the host, not the GPU. 0 steps: none were captured.
  int64_t decode_captured_steps = 0;
  double decode_capture_us = 0, decode_graph_api_us = 0, decode_wait_us = 0;
  Json to_json() const;
};

// Runs the protocol on a model folder. Never samples: decode feeds the argmax, with no stop tokens. Image
// mode needs a VLM folder (Error(kUnsupported) naming the model_type otherwise) and, with prompt_tokens > 0,
// at least as many tokens as the image prompt has without filler (Error(kInvalidArgument) naming both).
BenchResult run_benchmark(const std::string& folder, const std::string& label, const BenchOptions& options);

}  // namespace vlm
