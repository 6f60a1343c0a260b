// Engine benchmarks behind `vlmcheck bench`: synthetic checkpoints of real model shapes (random
// weights in any dtype or MLX quantization, written as a normal model folder so loading is measured
// too), and a run protocol (load → prefill of P tokens → G decode steps, repeated) whose results are
// reported against the rooflines measured in the same run (kernels/probes.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/json.h"
#include "core/quant.h"
#include "core/tensor.h"

namespace vlm {

struct SyntheticShape {
  std::string name;        // "qwen2.5-0.5b"
  std::string model_type;  // config.json model_type
  Json config;             // the text config fields (hidden_size, ...)
};

// The known shapes (public configs of the real models' language parts).
const std::vector<SyntheticShape>& synthetic_shapes();
const SyntheticShape& find_synthetic_shape(const std::string& name);  // throws kInvalidArgument listing names

struct SyntheticOptions {
  DType dtype = DType::kBF16;
  std::optional<AffineQuantSpec> quant;  // MLX affine quantization of every linear + the embedding
  uint64_t seed = 1;
};

// Writes config.json + model.safetensors for `shape` into `folder` (created). Returns bytes written.
int64_t write_synthetic_checkpoint(const SyntheticShape& shape, const SyntheticOptions& options,
                                   const std::string& folder);

struct BenchOptions {
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 64;
  int repetitions = 3;
  bool lazy_load = false;
  int64_t prefill_step_size = 2048;
  // Where the language model runs. On kCuda the weights are uploaded after loading (counted in load_s),
  // clocks are read after ops::synchronize(), and the rooflines are the GPU's (device-to-device copy
  // bandwidth, cuBLASLt bf16 matmul throughput) instead of the CPU probes.
  Device device = Device::kCpu;
};

struct BenchSample {
  double load_s = 0, prefill_s = 0, decode_s = 0;
};

struct BenchResult {
  std::string model;  // folder or synthetic name
  std::string kernel_path;  // the CPU path, or "cuda"
  std::string device = "cpu";
  std::string gpu;  // the CUDA device's name when device is cuda
  int threads = 0;
  int64_t prompt_tokens = 0, gen_tokens = 0;
  std::vector<BenchSample> samples;  // raw, one per repetition
  double load_s = 0, ttft_s = 0, prompt_tps = 0, decode_tps = 0;  // medians
  double decode_tps_min = 0, decode_tps_max = 0;
  int64_t weight_bytes = 0;
  int64_t decode_bytes_per_token = 0;  // weights touched + mean KV read per decode step
  double prefill_flops_per_token = 0;
  int64_t peak_host_bytes = 0, peak_rss_bytes = 0, peak_gpu_bytes = 0;
  // CPU: read bandwidth and f32/bf16 FMA peaks (kernels/probes.h). CUDA: copy bandwidth and the bf16
  // matmul peak (f32_gflops stays 0: not probed).
  double bandwidth_gbs = 0, f32_gflops = 0, bf16_gflops = 0;
  double decode_roofline_tps = 0, decode_roofline_fraction = 0;
  double prefill_gflops = 0, prefill_fraction_of_peak = 0, prefill_fraction_of_bf16_peak = 0;
  Json to_json() const;
};

// Runs the protocol on a model folder. Never samples: decode feeds the argmax, with no stop tokens.
BenchResult run_benchmark(const std::string& folder, const std::string& label, const BenchOptions& options);

}  // namespace vlm
