// `vlmcheck models` as a user runs it: --json on a fake cache found through HF_HUB_CACHE, the table,
// --model resolution, and bad input (a broken shard, a malformed config, an uncached repo) giving a
// non-zero exit below 128 with a message that names the file.
#include <gtest/gtest.h>

#include "cli/exit_codes.h"
#include "core/json.h"
#include "fake_hf_cache.h"
#include "models/registry.h"
#include "safetensors_writer.h"
#include "support/test_support.h"

using namespace vlm;
using namespace vlm::test;

namespace {

const std::string kMain = fake_sha("c0ffee");

struct Cache {
  TempDir dir;
  Cache() {
    FakeRepo vlm(dir.path(), "mlx-community/Qwen2-VL-2B-Instruct-4bit");
    vlm.add_file(kMain, "config.json", R"({"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
      "vision_config": {"depth": 2}, "image_token_id": 151655, "quantization": {"group_size": 64, "bits": 4}})");
    vlm.add_file(kMain, "tokenizer_config.json", "{}");
    vlm.add_file(kMain, "model.safetensors",
                 st_build({st_random("w.weight", "U32", {4, 1}, 1), st_random("w.scales", "BF16", {4, 1}, 2)}));
    vlm.set_ref("main", kMain);

    FakeRepo text(dir.path(), "Qwen/Qwen2.5-0.5B");
    text.add_file(kMain, "config.json", R"({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})");
    text.add_file(kMain, "tokenizer_config.json", "{}");
    text.add_file(kMain, "model.safetensors", st_build({st_random("w", "F32", {2}, 3)}));
    text.set_ref("main", kMain);
  }
  std::string env() const { return "HF_HUB_CACHE=" + dir.path(); }
};

void expect_clean_failure(const ProcessResult& r, int code, const std::string& must_name) {
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.exit_code, code) << r.err;
  EXPECT_GT(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find(must_name), std::string::npos) << r.err;
}

}  // namespace

TEST(CliModels, JsonOnFakeCacheViaHfHubCache) {
  Cache c;
  ProcessResult r = run_vlmcheck({"models", "--json"}, {c.env()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json arr = Json::parse(r.out);
  ASSERT_TRUE(arr.is_array());
  ASSERT_EQ(arr.size(), 2u);
  const Json& text = arr[0];  // code-point order: "Qwen/..." < "mlx-community/..."
  const Json& vlm = arr[1];
  EXPECT_EQ(text["repo_id"], "Qwen/Qwen2.5-0.5B");
  EXPECT_EQ(text["capability_verdict"], "no");
  EXPECT_EQ(text["model_purpose"], "text_generation");
  EXPECT_EQ(vlm["repo_id"], "mlx-community/Qwen2-VL-2B-Instruct-4bit");
  EXPECT_EQ(vlm["revision"], kMain);
  EXPECT_EQ(vlm["snapshot"], c.dir.path() + "/models--mlx-community--Qwen2-VL-2B-Instruct-4bit/snapshots/" + kMain);
  EXPECT_EQ(vlm["model_type"], "qwen2_vl");
  EXPECT_EQ(vlm["capability_verdict"], "yes");
  EXPECT_EQ(vlm["model_purpose"], "image_to_text");
  EXPECT_EQ(vlm["layout_supported"], true);
  EXPECT_TRUE(vlm["layout_reasons"].empty());
  EXPECT_FALSE(vlm["capability_evidence"].empty());
  EXPECT_EQ(vlm["quantization"], "affine 4-bit g64");
  EXPECT_EQ(vlm["dtype"], "bf16");
  EXPECT_GT(vlm["size_bytes"].get<int64_t>(), 0);
  // "supported" is the registry's answer for that model_type, whatever families have landed.
  EXPECT_EQ(vlm["supported"], is_supported_model_type("qwen2_vl"));
  EXPECT_EQ(text["supported"], is_supported_model_type("qwen2"));
  for (const char* key : {"repo_id", "revision", "snapshot", "model_type", "size_bytes", "dtype", "quantization",
                          "layout_supported", "layout_reasons", "capability_verdict", "model_purpose",
                          "capability_evidence", "supported"})
    EXPECT_TRUE(vlm.contains(key)) << key;
}

TEST(CliModels, TableAndCacheDirFlag) {
  Cache c;
  ProcessResult r = run_vlmcheck({"models", "--cache-dir", c.dir.path()}, {"HF_HUB_CACHE=/nonexistent"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mlx-community/Qwen2-VL-2B-Instruct-4bit"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("skipped Qwen/Qwen2.5-0.5B"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 repo(s), 1 selected"), std::string::npos) << r.out;

  TempDir empty;
  r = run_vlmcheck({"models", "--json"}, {"HF_HUB_CACHE=" + empty.path()});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(Json::parse(r.out), Json::array());
  r = run_vlmcheck({"models", "--cache-dir", empty / "missing"});
  expect_clean_failure(r, vlm::cli::kExitNotFound, empty / "missing");
}

TEST(CliModels, ModelResolutionAndBadInput) {
  Cache c;
  ProcessResult r = run_vlmcheck({"models", "--json", "--model", "mlx-community/Qwen2-VL-2B-Instruct-4bit",
                                  "--revision", kMain.substr(0, 8)},
                                 {c.env()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["revision"], kMain);
  EXPECT_EQ(j["tensors"], 2);

  // Not cached: says how to download it.
  r = run_vlmcheck({"models", "--model", "org/not-cached"}, {c.env()});
  expect_clean_failure(r, vlm::cli::kExitNotFound, "huggingface-cli download org/not-cached");

  // A truncated safetensors file in a local folder: names the file.
  TempDir local;
  write_file(local / "config.json", R"({"model_type": "qwen2"})");
  std::string good = st_build({st_random("w", "F32", {64}, 1)});
  write_file(local / "model.safetensors", good.substr(0, good.size() - 10));
  r = run_vlmcheck({"models", "--model", local.path()});
  expect_clean_failure(r, vlm::cli::kExitBadInput, local / "model.safetensors");

  // A malformed config.json: names the file.
  write_file(local / "model.safetensors", good);
  write_file(local / "config.json", R"({"model_type": )");
  r = run_vlmcheck({"models", "--model", local.path()});
  expect_clean_failure(r, vlm::cli::kExitBadInput, local / "config.json");

  // A sharded checkpoint with a missing shard.
  write_file(local / "config.json", R"({"model_type": "qwen2"})");
  write_file(local / "model.safetensors.index.json", R"({"weight_map": {"w": "model-00002-of-00002.safetensors"}})");
  r = run_vlmcheck({"models", "--model", local.path()});
  expect_clean_failure(r, vlm::cli::kExitNotFound, "model-00002-of-00002.safetensors");

  r = run_vlmcheck({"models", "--revision", "main"});
  EXPECT_EQ(r.exit_code, vlm::cli::kExitUsage);
}
