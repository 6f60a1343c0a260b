// `vlmcheck run` end to end, as a user runs it: the built binary on fixture checkpoints placed in a
// fake Hugging Face cache (HF_HUB_CACHE), with a checkpoint whose weights are corrupt, a worker that
// crashes with a real SIGSEGV and one that hangs until the --timeout kill (the binary's documented
// test-only fault hook), while the others complete and every report is written. results.jsonl is
// validated against docs/results.schema.json by Ajv and against docs/results_schema.md's remaining
// rules (test_cli_run_support.h) plus the axis rules restated below; `vlmcheck report` re-renders
// every report byte for byte; model output with <script> shows as text in the HTML.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <functional>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "check/sha256.h"
#include "support/test_support.h"
#include "test_cli_run_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using vlm::test::read_file;
using vlm::test::run_vlmcheck;
using vlm::test::TempDir;

namespace {

const std::string kSha = "0123456789abcdef0123456789abcdef01234567";

std::string fixture(const std::string& name) { return vlm::test::source_dir() + "/tests/fixtures/text/" + name; }
std::string demo_image() { return vlm::test::source_dir() + "/assets/demo/sample.jpg"; }

// A cache repo in the real layout: blobs/, refs/main, snapshots/<sha>/ with symlinks into blobs.
std::string add_repo(const std::string& cache, const std::string& repo_id, const std::string& from) {
  std::string folder = "models--" + std::regex_replace(repo_id, std::regex("/"), "--");
  fs::path repo = fs::path(cache) / folder;
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots" / kSha);
  std::ofstream(repo / "refs" / "main") << kSha;
  int n = 0;
  for (const auto& e : fs::directory_iterator(from)) {
    if (!e.is_regular_file()) continue;
    std::string blob = "blob" + std::to_string(n++);
    fs::copy_file(e.path(), repo / "blobs" / blob);
    fs::create_symlink("../../blobs/" + blob, repo / "snapshots" / kSha / e.path().filename());
  }
  return (repo / "snapshots" / kSha).string();
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(json::parse(line));
  return lines;
}

// docs/results_schema.md, "Rules a valid file satisfies".
void validate_results(const std::vector<json>& lines) {
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0].value("_type", ""), "metadata");
  EXPECT_EQ(lines[0].value("format_version", ""), "2.0");
  static const std::vector<std::string> registry = {
      "empty_output", "repeated_output", "missing_final_answer", "unexpected_special_token",
      "missing_requested_sections", "prompt_instruction_echo", "unexpected_catalog_preamble", "token_cap_truncation",
      "thinking_trace_incomplete", "role_boundary_token_present", "thinking_trace_present",
      "configured_wrapper_present", "catalog_constraint_violation", "minimal_output", "draft_returned_unchanged",
      "no_keyword_overlap"};
  static const std::set<std::string> phases = {"input_validation", "model_load", "prompt_prep", "prefill", "decode",
                                                "cleanup"};
  static const std::set<std::string> stages = {
      "Network Error", "OOM", "Timeout", "Crash", "Not Built", "Unsupported Arch", "Config Missing",
      "No Chat Template", "Tokenizer Error", "Weight Mismatch", "Weight Format", "Processor Error", "Model Error",
      "Error"};
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& l = lines[i];
    std::string type = l.value("_type", "");
    ASSERT_TRUE(type == "metadata" || type == "result" || type == "rerun" || type == "run_end") << "line " << i;
    if (type != "result") continue;
    SCOPED_TRACE(l.value("model", "?"));
    ASSERT_FALSE(l.value("model", "").empty());
    const json& a = l["assessment"];
    std::string e = a["execution"], u = a["usability"], m = a["maintainer_status"];
    bool legal = (e == "completed" && u == "usable" && m == "none") ||
                 (e == "completed" && (u == "usable_with_caveats" || u == "unusable") &&
                  (m == "none" || m == "observation_needs_reproduction")) ||
                 (e == "crashed" && u == "not_evaluated" && m == "actionable_failure") ||
                 (e == "indeterminate" && u == "not_evaluated" && m == "none");
    EXPECT_TRUE(legal) << e << "/" << u << "/" << m;
    bool need_obs = u == "usable_with_caveats" || u == "unusable";
    EXPECT_EQ(need_obs, !a["observations"].empty());
    int last = -1;
    for (const auto& o : a["observations"]) {
      auto it = std::find(registry.begin(), registry.end(), o.get<std::string>());
      ASSERT_NE(it, registry.end()) << o;
      int rank = static_cast<int>(it - registry.begin());
      EXPECT_GT(rank, last) << "observations out of registry order";
      last = rank;
    }
    EXPECT_EQ(l["failure"].is_null(), e == "completed");
    if (!l["failure"].is_null()) {
      const json& f = l["failure"];
      EXPECT_TRUE(phases.count(f["phase"].get<std::string>())) << f["phase"];
      EXPECT_TRUE(stages.count(f["stage"].get<std::string>())) << f["stage"];
      EXPECT_TRUE(std::regex_match(f["signature"].get<std::string>(), std::regex("[A-Z0-9_]+:[0-9a-f]{12}")))
          << f["signature"];
      EXPECT_FALSE(f["message"].get<std::string>().empty());
    }
    const json& mt = l["metrics"];
    EXPECT_EQ(mt["generation_tps_valid"].get<bool>(), mt["generation_tokens"].get<int64_t>() >= 16);
    for (const auto& [k, v] : mt.items())
      if (v.is_number()) {
        EXPECT_GE(v.get<double>(), 0.0) << k;
      }
    for (const auto& [k, v] : l["timing"].items())
      if (v.is_number()) {
        EXPECT_GE(v.get<double>(), 0.0) << k;
      }
    EXPECT_GT(l["requested_max_tokens"].get<int64_t>(), 0);
    EXPECT_TRUE(std::regex_match(l["settings_hash"].get<std::string>(), std::regex("[0-9a-f]{64}")));
  }
}

using vlm::test::report_files;
using vlm::test::result_for;

// The hand-written rules above plus Ajv against docs/results.schema.json and the shared rules.
void validate_results_file(const std::string& path) {
  validate_results(read_jsonl(path));
  vlm::test::expect_valid_results(path);
}

class RunSweep : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::string cache = *dir_ / "hub";
    add_repo(cache, "test-org/qwen2-tiny", fixture("qwen2"));
    add_repo(cache, "test-org/llama-tiny", fixture("llama"));
    std::string bad = add_repo(cache, "test-org/corrupt-weights", fixture("qwen2"));
    // Truncate the weights blob: the header promises more bytes than the file holds.
    fs::path blob = fs::canonical(fs::path(bad) / "model.safetensors");
    fs::resize_file(blob, fs::file_size(blob) / 2);
    add_repo(cache, "test-org/crashes-in-load", fixture("qwen2"));
    add_repo(cache, "test-org/hangs-in-load", fixture("qwen2"));
    out_ = *dir_ / "out";
    auto t0 = std::chrono::steady_clock::now();
    result_ = new vlm::test::ProcessResult(run_vlmcheck(
        {"run", "--image", demo_image(), "--models", "test-org/qwen2-tiny", "test-org/corrupt-weights",
         "test-org/crashes-in-load", "test-org/hangs-in-load", "test-org/llama-tiny", "--max-tokens", "24",
         "--timeout", "20", "--output-dir", out_, "--no-color"},
        {"HF_HUB_CACHE=" + cache, "VLMCHECK_ALLOW_FAULT_INJECTION=1",
         "VLMCHECK_WORKER_FAULT=segv:crashes-in-load,hang:hangs-in-load"}));
    wall_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  static void TearDownTestSuite() {
    delete result_;
    delete dir_;
  }
  static TempDir* dir_;
  static std::string out_;
  static vlm::test::ProcessResult* result_;
  static double wall_s_;
};
TempDir* RunSweep::dir_ = nullptr;
std::string RunSweep::out_;
vlm::test::ProcessResult* RunSweep::result_ = nullptr;
double RunSweep::wall_s_ = 0;

TEST_F(RunSweep, ExitsZeroAndWritesEveryReport) {
  ASSERT_EQ(result_->exit_code, 0) << result_->out << result_->err;
  for (const char* f : {"results.jsonl", "run.json", "index.md", "results.tsv", "results.history.jsonl",
                        "reports/results.html", "reports/model_gallery.md", "reports/diagnostics.md",
                        "reports/assets/source-image.jpg", "issues/run_summary.md",
                        "issues/issue_test-org-crashes-in-load.md", "vlmcheck.log", "environment.log"})
    EXPECT_TRUE(fs::exists(out_ + "/" + f)) << f;
  // The hang is bounded by --timeout plus the kill grace, not by the test's patience.
  EXPECT_LT(wall_s_, 20 + 10 + 60);
}

TEST_F(RunSweep, RowsTellWhatHappenedToEachModel) {
  auto lines = read_jsonl(out_ + "/results.jsonl");
  validate_results_file(out_ + "/results.jsonl");
  ASSERT_EQ(lines.back().value("_type", ""), "run_end");
  const json* crash = result_for(lines, "test-org/crashes-in-load");
  ASSERT_TRUE(crash);
  EXPECT_EQ((*crash)["assessment"]["execution"], "crashed");
  EXPECT_EQ((*crash)["failure"]["signal"], "SIGSEGV");
  EXPECT_EQ((*crash)["failure"]["phase"], "model_load");
  EXPECT_EQ((*crash)["failure"]["stage"], "Crash");
  EXPECT_NE((*crash)["failure"]["stderr_tail"].get<std::string>().find("injecting fault"), std::string::npos);
  // The worker died before reporting provenance; the parent still pins the snapshot it would have loaded.
  EXPECT_EQ((*crash)["model_provenance"]["resolved_revision"], kSha);
  const json* hang = result_for(lines, "test-org/hangs-in-load");
  ASSERT_TRUE(hang);
  EXPECT_EQ((*hang)["failure"]["stage"], "Timeout");
  EXPECT_EQ((*hang)["failure"]["signal"], "SIGKILL");  // it ignores SIGTERM, so the grace period ends in SIGKILL
  EXPECT_EQ((*hang)["timing"]["stop_reason"], "timeout");
  const json* bad = result_for(lines, "test-org/corrupt-weights");
  ASSERT_TRUE(bad);
  EXPECT_EQ((*bad)["failure"]["phase"], "model_load");
  EXPECT_NE((*bad)["failure"]["message"].get<std::string>().find("model.safetensors"), std::string::npos)
      << (*bad)["failure"]["message"];
  for (const char* ok : {"test-org/qwen2-tiny", "test-org/llama-tiny"}) {
    const json* r = result_for(lines, ok);
    ASSERT_TRUE(r) << ok;
    EXPECT_EQ((*r)["assessment"]["execution"], "completed") << (*r)["failure"].dump();
    EXPECT_EQ((*r)["model_provenance"]["resolved_revision"], kSha);
    EXPECT_GT((*r)["metrics"]["generation_tokens"].get<int64_t>(), 0);
    EXPECT_LE((*r)["metrics"]["generation_tokens"].get<int64_t>(), 24);
    EXPECT_GT((*r)["metrics"]["peak_rss_gb"].get<double>(), 0.0);
    EXPECT_GT((*r)["timing"]["first_token_latency_s"].get<double>(), 0.0);
    // The rendered prompt is recorded with its hash (SHA-256 is pinned to FIPS vectors and sha256sum in
    // test_check_analysis) and contains the exact user prompt.
    const json& d = (*r)["prompt_diagnostics"];
    std::string rendered = d["rendered_prompt"];
    EXPECT_EQ(d["rendered_prompt_hash_sha256"], vlm::check::sha256_hex(rendered));
    EXPECT_NE(rendered.find(lines[0]["prompt"].get<std::string>()), std::string::npos);
    EXPECT_EQ(d["image_placeholder_count"], 0);  // text-only fixtures: no image tokens in their templates
  }
  // The assisted lane: the demo image carries a caption, keywords, date and GPS.
  EXPECT_EQ(lines[0]["eval_mode"], "assisted");
  EXPECT_NE(lines[0]["prompt"].get<std::string>().find("- GPS: 51.959333\u00b0N, 1.349050\u00b0E"), std::string::npos);
}

TEST_F(RunSweep, ReportRegeneratesByteIdentical) {
  ASSERT_EQ(result_->exit_code, 0);
  std::string again = *dir_ / "again";
  auto r = run_vlmcheck({"report", "--from", out_ + "/results.jsonl", "--output-dir", again});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = report_files(out_), b = report_files(again);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, content] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(content == b[name]) << name << " differs after re-rendering";
  }
}

TEST_F(RunSweep, ModelOutputIsEscapedInHtml) {
  ASSERT_EQ(result_->exit_code, 0);
  // Put hostile text into one record and re-render: the renderer reads only the records.
  auto lines = read_jsonl(out_ + "/results.jsonl");
  std::string jsonl = *dir_ / "hostile/results.jsonl";
  fs::create_directories(*dir_ / "hostile");
  {
    std::ofstream out(jsonl);
    for (auto& l : lines) {
      if (l.value("model", "") == "test-org/qwen2-tiny") l["generated_text"] = "Title: <script>alert('x')</script> & co";
      out << l.dump() << "\n";
    }
  }
  auto r = run_vlmcheck({"report", "--from", jsonl});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string html = read_file(*dir_ / "hostile/reports/results.html");
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"), std::string::npos);
  // Exactly one real script element: ours.
  size_t n = 0;
  for (size_t p = html.find("<script>"); p != std::string::npos; p = html.find("<script>", p + 1)) ++n;
  EXPECT_EQ(n, 1u);
  std::string gallery = read_file(*dir_ / "hostile/reports/model_gallery.md");
  EXPECT_NE(gallery.find("<script>alert('x')</script>"), std::string::npos);  // inside a code fence, verbatim
}

TEST_F(RunSweep, SchemaRejectsWhatTheDocForbids) {
  ASSERT_EQ(result_->exit_code, 0);
  // The schema is not vacuous: each edit below breaks one documented rule and Ajv must say where.
  auto lines = read_jsonl(out_ + "/results.jsonl");
  size_t ok_row = 0, failed_row = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].value("model", "") == "test-org/qwen2-tiny") ok_row = i;
    if (lines[i].contains("failure") && lines[i]["failure"].is_object()) failed_row = i;
  }
  ASSERT_GT(ok_row, 0u);
  ASSERT_GT(failed_row, 0u);
  struct Case {
    const char* what;
    std::function<void(std::vector<json>&)> edit;
    const char* expect;  // a fragment of Ajv's message
  };
  std::vector<Case> cases = {
      {"undocumented metric", [&](auto& l) { l[ok_row]["metrics"]["bogus_gb"] = 1.0; }, "/metrics must NOT have additional"},
      {"illegal axis combination",
       [&](auto& l) { l[ok_row]["assessment"]["maintainer_status"] = "actionable_failure"; }, "/assessment"},
      {"failure on a completed row", [&](auto& l) { l[ok_row]["failure"] = lines[failed_row]["failure"]; }, "/failure must be null"},
      {"negative time", [&](auto& l) { l[ok_row]["timing"]["decode_time_s"] = -0.5; }, "/timing/decode_time_s must be >= 0"},
      {"unknown observation", [&](auto& l) { l[ok_row]["assessment"]["observations"] = {"looks_bad"}; }, "/assessment/observations/0"},
      {"timestamp without offset", [&](auto& l) { l[0]["timestamp"] = "2026-11-26T05:09:26"; }, "/timestamp must match pattern"},
      {"unknown line type", [&](auto& l) { l[ok_row]["_type"] = "comment"; }, "/_type must be equal to one of"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto edited = lines;
    c.edit(edited);
    std::string path = *dir_ / "edited.jsonl";
    {
      std::ofstream out(path);
      for (const auto& l : edited) out << l.dump() << "\n";
    }
    json errors = vlm::test::schema_errors(path);
    ASSERT_EQ(errors.size(), 1u) << errors.dump(2);
    EXPECT_NE(errors[0].dump().find(c.expect), std::string::npos) << errors.dump(2);
  }
}

TEST(RunCli, DryRunWritesNothing) {
  TempDir dir;
  auto r = run_vlmcheck({"run", "--image", demo_image(), "--models", fixture("qwen2"), "--dry-run", "--output-dir",
                         dir / "out", "--eval-mode", "blind"},
                        {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_NE(r.out.find("Return exactly these three sections and nothing else:"), std::string::npos) << r.out;
}

TEST(RunCli, BadInputsAreUsageOrNotFoundErrors) {
  TempDir dir;
  auto url = run_vlmcheck({"run", "--image", "https://example.com/a.jpg", "--models", "x/y"});
  EXPECT_EQ(url.exit_code, 2) << url.err;
  EXPECT_NE(url.err.find("looks like a URL"), std::string::npos);
  fs::create_directories(dir / "empty");
  auto empty = run_vlmcheck({"run", "--folder", dir / "empty", "--models", "x/y", "--dry-run"});
  EXPECT_EQ(empty.exit_code, 3) << empty.err;
  // --image and --folder exclude each other.
  auto both = run_vlmcheck({"run", "--image", demo_image(), "--folder", dir / "empty"});
  EXPECT_EQ(both.exit_code, 2);
}

TEST(RunCli, CtrlCStopsCleanlyWith130) {
  TempDir dir;
  std::string cache = dir / "hub";
  add_repo(cache, "test-org/qwen2-tiny", fixture("qwen2"));
  add_repo(cache, "test-org/hangs-in-load", fixture("qwen2"));
  std::string out = dir / "out";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("HF_HUB_CACHE", cache.c_str(), 1);
    setenv("VLMCHECK_ALLOW_FAULT_INJECTION", "1", 1);
    setenv("VLMCHECK_WORKER_FAULT", "hang:hangs-in-load", 1);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    std::string bin = vlm::test::vlmcheck_binary(), img = demo_image();
    execl(bin.c_str(), bin.c_str(), "run", "--image", img.c_str(), "--models", "test-org/qwen2-tiny",
          "test-org/hangs-in-load", "--max-tokens", "8", "--timeout", "300", "--output-dir", out.c_str(), nullptr);
    _exit(127);
  }
  // Wait until the first model's row is on disk and the second is running, then press Ctrl-C.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(out + "/results.jsonl") && read_jsonl(out + "/results.jsonl").size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  auto lines = read_jsonl(out + "/results.jsonl");
  validate_results_file(out + "/results.jsonl");
  ASSERT_EQ(lines.back().value("_type", ""), "run_end");
  EXPECT_TRUE(lines.back()["interrupted"].get<bool>());
  EXPECT_TRUE(result_for(lines, "test-org/qwen2-tiny"));
  EXPECT_FALSE(result_for(lines, "test-org/hangs-in-load"));  // unfinished: not recorded
  EXPECT_TRUE(fs::exists(out + "/reports/results.html"));
  EXPECT_TRUE(fs::exists(out + "/index.md"));
}

TEST(RunCli, OutOfTheBoxRunsTheBundledDemo) {
  TempDir dir;
  fs::create_directories(dir / "home");
  auto r = run_vlmcheck({"run", "--max-tokens", "8"},
                        {"HOME=" + (dir / "home"), "HF_HUB_CACHE=" + (dir / "empty-hub")}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto lines = read_jsonl(dir / "output/results.jsonl");
  validate_results_file(dir / "output/results.jsonl");
  ASSERT_GE(lines.size(), 3u);
  // Whichever bundled demo image the assets provide (sample.jpg, or a demo-VLM scene when shipped).
  EXPECT_EQ(lines[0]["image"]["path"].get<std::string>().rfind(vlm::test::source_dir() + "/assets/demo/", 0), 0u)
      << lines[0]["image"]["path"];
  EXPECT_EQ(lines[1]["assessment"]["execution"], "completed") << lines[1]["failure"].dump();
  EXPECT_TRUE(fs::exists(dir / "output/reports/results.html"));
}

}  // namespace
