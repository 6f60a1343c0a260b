// `vlmcheck run --device cpu|cuda|auto`: the checker picks the device the way `generate` does (the
// shared cli/device_flag.h rule; VLMCHECK_DEVICE sets the default) and records it per model.
// Everywhere: `run --device cuda` without a usable GPU is refused with the backend's reason and exit 5
// before any model loads or any output is written (generate's behaviour); `--device cpu` and the
// environment's cpu are recorded as "cpu" on every result and in the header, with no GPU memory, in
// results.jsonl (Ajv against docs/results.schema.json), run.json and the Markdown/HTML evidence; a bad
// VLMCHECK_DEVICE is a usage error. A worker job asking for cuda where it cannot run comes back as that
// model's model_load failure naming the reason (the real worker process, not a crash).
// Where a GPU is usable (skipped elsewhere): the default is cuda (with --kv-bits too), the GPU peak is
// recorded, and a cuda job with a quantized KV cache runs there and writes the cpu job's text.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "check/worker.h"
#include "cli/exit_codes.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "support/test_support.h"
#include "test_cli_run_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using vlm::test::run_vlmcheck;
using vlm::test::TempDir;

namespace {

bool gpu() { return vlm::ops::cuda::available(); }

// A fake HF cache with two text fixtures (a Qwen2 and a Llama language model).
struct Cache {
  TempDir dir;
  std::string path = dir / "hub";
  Cache() {
    vlm::test::add_fixture_repo(path, "test-org/qwen2-tiny", vlm::test::text_fixture("qwen2"));
    vlm::test::add_fixture_repo(path, "test-org/llama-tiny", vlm::test::text_fixture("llama"));
  }
};

const std::vector<std::string> kCachedModels = {"test-org/qwen2-tiny", "test-org/llama-tiny"};

std::vector<std::string> run_args(const std::string& out, const std::vector<std::string>& extra,
                                  const std::vector<std::string>& models = kCachedModels) {
  std::vector<std::string> a = {"run", "--image", vlm::test::demo_image(), "--max-tokens", "4", "--output-dir", out,
                                "--no-color", "--models"};
  a.insert(a.end(), models.begin(), models.end());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Every result line's device, and the header's options.device, equal `device` (results_schema.md rule 8).
void expect_device_recorded(const std::string& out, const std::string& device,
                            const std::vector<std::string>& models = kCachedModels) {
  const std::string jsonl = out + "/results.jsonl";
  vlm::test::expect_valid_results(jsonl);
  const std::vector<json> lines = vlm::test::read_jsonl(jsonl);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0]["options"]["device"], device);
  int results = 0;
  for (const json& l : lines) {
    if (l.value("_type", "") != "result") continue;
    ++results;
    SCOPED_TRACE(l.value("model", "?"));
    EXPECT_EQ(l["assessment"]["execution"], "completed") << l["failure"].dump();
    EXPECT_EQ(l["device"], device);
    if (device == "cpu") {
      EXPECT_EQ(l["metrics"]["peak_gpu_memory_gb"].get<double>(), 0.0);
    } else {
      EXPECT_GT(l["metrics"]["peak_gpu_memory_gb"].get<double>(), 0.0);
    }
  }
  EXPECT_EQ(results, static_cast<int>(models.size()));
  // run.json and the history line per model, and the evidence sections of the Markdown gallery and the HTML
  // report.
  const json run = json::parse(vlm::test::read_file(out + "/run.json"));
  const std::vector<json> history = vlm::test::read_jsonl(out + "/results.history.jsonl");
  ASSERT_FALSE(history.empty());
  for (const std::string& m : models) {
    EXPECT_EQ(run["model_devices"][m], device);
    EXPECT_EQ(history.back()["model_results"][m]["device"], device);
  }
  const std::string md = vlm::test::read_file(out + "/reports/model_gallery.md");
  const std::string html = vlm::test::read_file(out + "/reports/results.html");
  if (device == "cpu") {
    EXPECT_NE(md.find("- **Device:** cpu\n"), std::string::npos);
    EXPECT_NE(html.find("<dt>Device</dt><dd>cpu</dd>"), std::string::npos);
  } else {
    EXPECT_NE(md.find("- **Device:** cuda (language model; peak GPU memory "), std::string::npos);
    EXPECT_NE(html.find("<dt>Device</dt><dd>cuda (language model; peak GPU memory "), std::string::npos);
  }
}

TEST(RunDevice, CudaWithoutAGpuIsRefusedBeforeAnyModelLoads) {
  if (gpu()) GTEST_SKIP() << "a CUDA device is usable here";
  Cache cache;
  const std::string out = cache.dir / "out";
  auto r = run_vlmcheck(run_args(out, {"--device", "cuda"}), {"HF_HUB_CACHE=" + cache.path});
  EXPECT_EQ(r.exit_code, vlm::cli::kExitUnsupported) << r.err;
  EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(vlm::cuda_unavailable_reason()), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out)) << "output was written before the device was checked";
  // The same from the environment's default, and before --kv-bits is looked at (generate's order).
  auto env = run_vlmcheck(run_args(out, {"--kv-bits", "4"}), {"HF_HUB_CACHE=" + cache.path, "VLMCHECK_DEVICE=cuda"});
  EXPECT_EQ(env.exit_code, vlm::cli::kExitUnsupported) << env.err;
  EXPECT_NE(env.err.find(vlm::cuda_unavailable_reason()), std::string::npos) << env.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST(RunDevice, CpuIsRecordedOnEveryResult) {
  Cache cache;
  const std::string out = cache.dir / "out";
  auto r = run_vlmcheck(run_args(out, {"--device", "cpu"}), {"HF_HUB_CACHE=" + cache.path});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("Processing 2 model(s) on cpu"), std::string::npos) << r.out;
  expect_device_recorded(out, "cpu");
}

// The schema holds the device to what results_schema.md says: present, cpu | cuda, no GPU memory on the cpu.
TEST(RunDevice, TheSchemaRejectsAMissingOrUnknownDeviceAndGpuMemoryOnTheCpu) {
  Cache cache;
  const std::string out = cache.dir / "out";
  auto r = run_vlmcheck(run_args(out, {"--device", "cpu"}, {"test-org/qwen2-tiny"}), {"HF_HUB_CACHE=" + cache.path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<json> lines = vlm::test::read_jsonl(out + "/results.jsonl");
  ASSERT_TRUE(vlm::test::schema_errors(out + "/results.jsonl").empty());
  auto rejected = [&](const char* what, const std::function<void(json&)>& edit, const char* type = "result") {
    std::string text;
    for (json l : lines) {
      if (l.value("_type", "") == type) edit(l);
      text += l.dump() + "\n";
    }
    const std::string path = cache.dir / (std::string(what) + ".jsonl");
    vlm::test::write_file(path, text);
    EXPECT_FALSE(vlm::test::schema_errors(path).empty()) << what << " passed the schema";
  };
  rejected("missing", [](json& l) { l.erase("device"); });
  rejected("unknown", [](json& l) { l["device"] = "tpu"; });
  rejected("gpu_memory_on_cpu", [](json& l) { l["metrics"]["peak_gpu_memory_gb"] = 0.5; });
  rejected("header_without_device", [](json& l) { l["options"].erase("device"); }, "metadata");
}

TEST(RunDevice, TheDefaultFollowsVlmcheckDeviceElseTheGpu) {
  Cache cache;
  // VLMCHECK_DEVICE=cpu beats a usable GPU; without it auto takes cuda exactly when one is usable.
  const std::string env_out = cache.dir / "env";
  auto env = run_vlmcheck(run_args(env_out, {}), {"HF_HUB_CACHE=" + cache.path, "VLMCHECK_DEVICE=cpu"});
  ASSERT_EQ(env.exit_code, 0) << env.err;
  expect_device_recorded(env_out, "cpu");
  const std::string auto_out = cache.dir / "auto";
  auto a = run_vlmcheck(run_args(auto_out, {}), {"HF_HUB_CACHE=" + cache.path});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  expect_device_recorded(auto_out, gpu() ? "cuda" : "cpu");
  // --kv-bits does not narrow auto: the quantized KV cache runs on both devices.
  const std::string kv_out = cache.dir / "kv";
  // The bundled demo VLM (head_dim 64, which the KV groups of 64 divide).
  const std::vector<std::string> demo = {vlm::test::source_dir() + "/assets/demo/vlm"};
  auto kv = run_vlmcheck(run_args(kv_out, {"--kv-bits", "4", "--quantized-kv-start", "0"}, demo),
                         {"HF_HUB_CACHE=" + cache.path});
  ASSERT_EQ(kv.exit_code, 0) << kv.err;
  expect_device_recorded(kv_out, gpu() ? "cuda" : "cpu", demo);
  EXPECT_EQ(kv.err.find("--kv-bits"), std::string::npos) << kv.err;
  // A name that is not a device is a usage error naming it.
  auto bad = run_vlmcheck(run_args(cache.dir / "bad", {}), {"HF_HUB_CACHE=" + cache.path, "VLMCHECK_DEVICE=tpu"});
  EXPECT_EQ(bad.exit_code, vlm::cli::kExitUsage) << bad.err;
  EXPECT_NE(bad.err.find("tpu"), std::string::npos) << bad.err;
  auto flag = run_vlmcheck(run_args(cache.dir / "flag", {"--device", "gpu"}), {"HF_HUB_CACHE=" + cache.path});
  EXPECT_EQ(flag.exit_code, vlm::cli::kExitUsage) << flag.err;
}

// The worker's own refusal: a job whose device cannot take the language model fails that model in
// model_load with the reason, in a real worker process that exits normally with its result.
vlm::check::WorkerRun run_job(const std::string& device, const json& generation,
                              const std::string& model = vlm::test::text_fixture("qwen2")) {
  vlm::check::EngineJob job;
  job.model = model;
  job.prompt = "Describe the image.";
  job.generation = generation;
  job.device = device;
  std::atomic<bool> stop{false};
  return vlm::check::run_in_worker(vlm::test::vlmcheck_binary(), job, 60, {}, stop);
}

TEST(RunDevice, AWorkerJobOnAnUnusableDeviceIsThatModelsFailure) {
  if (gpu()) GTEST_SKIP() << "a CUDA device is usable here";
  const json generation = {{"max_tokens", 4}, {"temperature", 0.0}};
  vlm::check::WorkerRun w = run_job("cuda", generation);
  ASSERT_TRUE(w.got_result) << w.stderr_tail;
  EXPECT_EQ(w.term_signal, 0);
  EXPECT_FALSE(w.outcome.success);
  EXPECT_EQ(w.outcome.error_phase, "model_load");
  EXPECT_EQ(w.outcome.error_kind, "unsupported");
  EXPECT_NE(w.outcome.error_message.find("--device cuda"), std::string::npos) << w.outcome.error_message;
  EXPECT_NE(w.outcome.error_message.find(vlm::cuda_unavailable_reason()), std::string::npos)
      << w.outcome.error_message;
  EXPECT_EQ(w.outcome.metrics.peak_gpu_memory_gb, 0.0);
  // The same job on the cpu completes: the failure was the device, not the model.
  vlm::check::WorkerRun cpu = run_job("cpu", generation);
  ASSERT_TRUE(cpu.got_result) << cpu.stderr_tail;
  EXPECT_TRUE(cpu.outcome.success) << cpu.outcome.error_message;
  EXPECT_GT(cpu.outcome.metrics.generation_tokens, 0);
}

// A quantized KV cache job on the GPU (the demo VLM's language model: head_dim 64) runs there and, greedy,
// writes the text the same job writes on the cpu (the cache holds the same bits on both devices).
TEST(RunDevice, OnAGpuAQuantizedKvCacheJobRunsThereLikeOnTheCpu) {
  if (!gpu()) GTEST_SKIP() << "needs a usable CUDA device";
  const std::string demo = vlm::test::source_dir() + "/assets/demo/vlm";
  const json generation = {{"max_tokens", 12}, {"temperature", 0.0}, {"kv_bits", 4}, {"quantized_kv_start", 0}};
  vlm::check::WorkerRun w = run_job("cuda", generation, demo);
  ASSERT_TRUE(w.got_result) << w.stderr_tail;
  EXPECT_TRUE(w.outcome.success) << w.outcome.error_message;
  EXPECT_GT(w.outcome.metrics.peak_gpu_memory_gb, 0.0);
  vlm::check::WorkerRun cpu = run_job("cpu", generation, demo);
  ASSERT_TRUE(cpu.got_result) << cpu.stderr_tail;
  EXPECT_TRUE(cpu.outcome.success) << cpu.outcome.error_message;
  EXPECT_EQ(w.outcome.generated_text, cpu.outcome.generated_text);
}

}  // namespace
