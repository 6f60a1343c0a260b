// `vlmcheck bench`: prompt and decode tokens/s, TTFT, load time and peak memory for a model folder
// (or cached repo id) or a synthetic model of a real shape, against the memory-bandwidth and compute
// rooflines measured in the same run. --device cuda runs the language model on the GPU (weights uploaded
// after loading, counted in the load time) against the GPU's rooflines (copy bandwidth, bf16 matmul).
// --image FILE or --image-size WxH (a synthetic photo) benchmarks a VLM the way `generate --image` runs it:
// the synthetic VLM shapes are then written with their vision tower, and TTFT covers image load,
// preprocessing, vision encoding and prefill, each reported.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/device_flag.h"
#include "cli/exit_codes.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "generate/benchmark.h"
#include "generate/generator.h"
#include "io/hf_cache.h"
#include "kernels/ops.h"

namespace vlm::cli {

namespace {

struct BenchArgs {
  std::string model, synthetic, dtype = "bf16", revision, work_dir;
  std::string image, image_size;           // image mode: a file, or WxH of a synthetic photo
  const CLI::Option* prompt_tokens_opt = nullptr;  // given? (image mode defaults to no filler)
  int bits = 0, group_size = 64, threads = 0;
  BenchOptions options;
  std::string device = "auto";
  bool json = false, keep = false;
};

int run_bench(BenchArgs& a) {
  a.options.device = resolve_device(a.device);  // before a synthetic checkpoint is written
  if (a.threads > 0) ThreadPool::set_global_threads(a.threads);
  VLM_CHECK(a.model.empty() != a.synthetic.empty(), ErrorKind::kInvalidArgument,
            "bench: give exactly one of --model or --synthetic");
  VLM_CHECK(a.image.empty() || a.image_size.empty(), ErrorKind::kInvalidArgument,
            "bench: give at most one of --image and --image-size");
  const bool image_mode = !a.image.empty() || !a.image_size.empty();
  if (image_mode && (a.prompt_tokens_opt == nullptr || a.prompt_tokens_opt->count() == 0))
    a.options.prompt_tokens = 0;  // the image and the question only
  std::string base = a.work_dir.empty() ? std::filesystem::temp_directory_path().string() : a.work_dir;
  int photo_w = 0, photo_h = 0;
  if (!a.image_size.empty()) {
    char x = 0, rest = 0;
    VLM_CHECK(std::sscanf(a.image_size.c_str(), "%d%c%d%c", &photo_w, &x, &photo_h, &rest) == 3 &&
                  (x == 'x' || x == 'X'),
              ErrorKind::kInvalidArgument, "--image-size must be WIDTHxHEIGHT (e.g. 1280x960), got '{}'",
              a.image_size);
  } else if (!a.image.empty()) {
    VLM_CHECK(std::filesystem::is_regular_file(a.image), ErrorKind::kNotFound, "--image: no such file '{}'", a.image);
    a.options.image_path = a.image;
  }
  std::string folder, label;
  std::string tmp;
  if (!a.synthetic.empty()) {
    const SyntheticShape& shape = find_synthetic_shape(a.synthetic);
    SyntheticOptions so;
    if (a.dtype == "bf16") so.dtype = DType::kBF16;
    else if (a.dtype == "f16") so.dtype = DType::kF16;
    else if (a.dtype == "f32") so.dtype = DType::kF32;
    else throw_error(ErrorKind::kInvalidArgument, "--dtype must be bf16, f16 or f32, got '{}'", a.dtype);
    if (a.bits) so.quant = AffineQuantSpec{a.bits, a.group_size};
    if (so.quant) validate_quant_spec(*so.quant, "--bits/--group-size");
    so.with_vision = image_mode;
    VLM_CHECK(!image_mode || !shape.vlm_type.empty(), ErrorKind::kInvalidArgument,
              "bench --image/--image-size: synthetic shape {} is a text model (VLM shapes: qwen2.5-vl-3b, "
              "qwen2.5-vl-7b, gemma-3-4b, smolvlm-256m)",
              shape.name);
    tmp = fmt::format("{}/vlmcheck-bench-{}-{}{}{}", base, shape.name, a.dtype,
                      a.bits ? fmt::format("-q{}g{}", a.bits, a.group_size) : "", image_mode ? "-vlm" : "");
    fmt::print(stderr, "bench: writing synthetic {} {}checkpoint to {}\n", shape.name, image_mode ? "VLM " : "", tmp);
    write_synthetic_checkpoint(shape, so, tmp);
    folder = tmp;
    label = fmt::format("synthetic:{} {}{}{}", shape.name, a.dtype,
                        a.bits ? fmt::format(" mlx-{}bit-g{}", a.bits, a.group_size) : "",
                        image_mode ? fmt::format(" + {} vision", a.dtype) : "");
  } else {
    folder = resolve_model(a.model, a.revision).snapshot;
    label = a.model;
  }
  std::string photo;  // written last, so that a refused run leaves nothing behind
  if (photo_w > 0 || photo_h > 0 || !a.image_size.empty()) {
    std::filesystem::create_directories(base);
    photo = fmt::format("{}/vlmcheck-bench-photo-{}x{}.jpg", base, photo_w, photo_h);
    write_synthetic_photo(photo, photo_w, photo_h);
    a.options.image_path = photo;
  }
  BenchResult r = run_benchmark(folder, label, a.options);
  if (!tmp.empty() && !a.keep) std::filesystem::remove_all(tmp);
  if (!photo.empty() && !a.keep) std::filesystem::remove(photo);
  if (a.json) {
    fmt::print("{}\n", r.to_json().dump(2));
    return kExitOk;
  }
  fmt::print("model            {}\n", r.model);
  const bool gpu = r.device != "cpu";
  fmt::print("device           {}{}\n", r.device, r.gpu.empty() ? "" : " (" + r.gpu + ")");
  fmt::print("kernels          {} ({} threads)\n", r.kernel_path, r.threads);
  fmt::print("load             {:.3f} s{}\n", r.load_s, gpu ? " (including the upload)" : "");
  if (r.mode == "image") {
    const Json& im = r.image;
    fmt::print("image            {}x{} -> {}x{}, {} tile(s), {} image tokens + {} text tokens ({} backend)\n",
               im.value("width", 0), im.value("height", 0), im.value("processed_width", 0),
               im.value("processed_height", 0), im.value("tiles", 0), r.image_tokens, r.text_tokens,
               im.value("backend", std::string()));
    fmt::print("ttft             {:.3f} s = tokenize {:.3f} + image load and preprocess {:.3f} + vision encode {:.3f} "
               "+ prefill {:.3f} s (vision weights {:.1f} MB)\n",
               r.ttft_s, r.tokenize_s, r.image_preprocess_s, r.vision_encode_s, r.prefill_s,
               static_cast<double>(r.vision_weight_bytes) / 1e6);
    fmt::print("prefill          {} tokens, LM prefill {:.3f} s, {:.1f} tok/s, {:.1f} GFLOP/s = {:.0f}% of {} peak "
               "{:.0f} GFLOP/s\n",
               r.prompt_tokens, r.prefill_s, r.prompt_tps, r.prefill_gflops,
               100 * (gpu ? r.prefill_fraction_of_bf16_peak : r.prefill_fraction_of_peak),
               gpu ? "bf16 matmul" : "f32", gpu ? r.bf16_gflops : r.f32_gflops);
  } else if (gpu)
    fmt::print("prefill          {} tokens, TTFT {:.3f} s, {:.1f} tok/s, {:.1f} GFLOP/s = {:.0f}% of bf16 matmul "
               "peak {:.0f} GFLOP/s\n",
               r.prompt_tokens, r.ttft_s, r.prompt_tps, r.prefill_gflops, 100 * r.prefill_fraction_of_bf16_peak,
               r.bf16_gflops);
  else
    fmt::print("prefill          {} tokens, TTFT {:.3f} s, {:.1f} tok/s, {:.1f} GFLOP/s = {:.0f}% of f32 peak "
               "{:.0f} GFLOP/s\n",
               r.prompt_tokens, r.ttft_s, r.prompt_tps, r.prefill_gflops, 100 * r.prefill_fraction_of_peak,
               r.f32_gflops);
  fmt::print("decode           {:.2f} tok/s (min {:.2f}, max {:.2f}) over {} tokens\n", r.decode_tps,
             r.decode_tps_min, r.decode_tps_max, r.gen_tokens);
  fmt::print("kv cache         {}\n", r.kv_cache);
  fmt::print("decode roofline  {:.1f} MB/token at {:.1f} GB/s = {:.2f} tok/s; achieved {:.0f}%\n",
             static_cast<double>(r.decode_bytes_per_token) / 1e6, r.bandwidth_gbs, r.decode_roofline_tps,
             100 * r.decode_roofline_fraction);
  if (r.bandwidth_trials > 0)
    fmt::print("read probe       median {:.1f} GB/s of {} passes over {:.2f} GB, before and after the runs "
               "(min {:.1f}, max {:.1f})\n",
               r.bandwidth_gbs, r.bandwidth_trials, static_cast<double>(r.bandwidth_probe_bytes) / 1e9,
               r.bandwidth_min_gbs, r.bandwidth_max_gbs);
  if (r.decode_captured_steps > 0)
    fmt::print("decode host      per captured step: capture {:.0f} us + graph API {:.0f} us + wait {:.0f} us "
               "(a token takes {:.0f} us)\n",
               r.decode_capture_us, r.decode_graph_api_us, r.decode_wait_us, 1e6 / r.decode_tps);
  fmt::print("memory           peak tracked host {:.1f} MB, peak RSS {:.1f} MB\n",
             static_cast<double>(r.peak_host_bytes) / 1e6, static_cast<double>(r.peak_rss_bytes) / 1e6);
  if (gpu) fmt::print("gpu memory       peak tracked {:.1f} MB\n", static_cast<double>(r.peak_gpu_bytes) / 1e6);
  return kExitOk;
}

}  // namespace

void register_bench(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("bench", "Prompt/decode tokens/s, TTFT, load time and memory vs the roofline");
  auto args = std::make_shared<BenchArgs>();
  cmd->add_option("--model", args->model, "Model folder or cached repo id");
  cmd->add_option("--revision", args->revision, "Branch, tag or commit of a cached repo");
  cmd->add_option("--synthetic", args->synthetic,
                  "Synthetic model of a real shape: smollm2-135m, qwen2.5-0.5b, qwen2.5-3b, qwen2.5-7b, llama3.2-1b, "
                  "qwen2.5-vl-3b, qwen2.5-vl-7b, gemma-3-4b, smolvlm-256m (text decoders; the VLM shapes with their "
                  "vision tower when an image is given)");
  cmd->add_option("--dtype", args->dtype, "Synthetic weight dtype: bf16, f16, f32")->capture_default_str();
  cmd->add_option("--bits", args->bits, "Synthetic MLX affine quantization bits (2,3,4,5,6,8; 0 = none)");
  cmd->add_option("--group-size", args->group_size, "Synthetic quantization group size")->capture_default_str();
  args->prompt_tokens_opt =
      cmd->add_option("--prompt-tokens", args->options.prompt_tokens,
                      "Prompt length (with an image: the whole prompt, padded with filler text; default: the image "
                      "and the question only)")
          ->capture_default_str();
  cmd->add_option("--image", args->image, "Image mode: benchmark generate --image on this file (a VLM)");
  cmd->add_option("--image-size", args->image_size,
                  "Image mode on a synthetic photo-like JPEG of WIDTHxHEIGHT (e.g. 1280x960), deterministic");
  cmd->add_option("--prompt", args->options.question, "Image mode: the question asked about the image")
      ->capture_default_str();
  cmd->add_option("--gen-tokens", args->options.gen_tokens, "Decode steps")->capture_default_str();
  cmd->add_option("--repetitions", args->options.repetitions, "Repetitions (median reported)")->capture_default_str();
  cmd->add_option("--prefill-step-size", args->options.prefill_step_size, "Chunked prefill size")
      ->capture_default_str();
  cmd->add_option("--max-kv-size", args->options.max_kv_size, "Rotating KV cache of this many tokens (keeps the first 4)")
      ->check(CLI::Range(int64_t{5}, INT64_MAX));
  cmd->add_option("--kv-bits", args->options.kv_bits, "Quantize the KV cache to 2, 3, 4, 5, 6 or 8 bits (MLX affine)")
      ->check(CLI::IsMember({2, 3, 4, 5, 6, 8}));
  cmd->add_option("--kv-group-size", args->options.kv_group_size, "KV quantization group size: 32, 64 or 128")
      ->check(CLI::IsMember({32, 64, 128}))
      ->capture_default_str();
  cmd->add_option("--quantized-kv-start", args->options.quantized_kv_start,
                  "Quantize the KV cache once it holds this many tokens (0: from the prompt on)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--lazy-load", args->options.lazy_load, "mmap the weights instead of reading them");
  add_device_flag(cmd, args->device, "cpu, cuda, or auto (cuda when a GPU is usable)");
  cmd->add_option("--threads", args->threads, "Threads (default: all cores)");
  cmd->add_option("--work-dir", args->work_dir, "Where synthetic checkpoints are written (default: $TMPDIR)");
  cmd->add_flag("--keep", args->keep, "Keep the synthetic checkpoint");
  cmd->add_flag("--json", args->json, "One JSON object on stdout");
  cmd->callback([&action, args] { action = [args] { return run_bench(*args); }; });
}

}  // namespace vlm::cli
