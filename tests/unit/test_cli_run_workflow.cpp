// `vlmcheck run` workflow flags end to end, each on the built binary with fixture checkpoints in a
// fake Hugging Face cache: --resume, --rerun-triage, --folder --all / --images, --quality-config,
// the per-file output flags and the TSV, the history file, console colour rules (NO_COLOR,
// FORCE_COLOR, --no-color, --force-color) and the live progress line on a real pseudo-terminal,
// --prompt / --messages overrides, EXIF/GPS/IPTC/XMP written by exiv2 reaching the assisted prompt,
// and cache discovery listing every skip with its reasons. Every results.jsonl written here is
// validated against docs/results.schema.json (Ajv) and re-rendered byte for byte.
#include <gtest/gtest.h>
#include <pty.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "test_cli_run_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using vlm::test::add_fixture_repo;
using vlm::test::demo_image;
using vlm::test::read_file;
using vlm::test::read_jsonl;
using vlm::test::result_for;
using vlm::test::run_vlmcheck;
using vlm::test::TempDir;
using vlm::test::text_fixture;

namespace {

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }
int count_of(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}
int count_type(const std::vector<json>& lines, const std::string& type) {
  int n = 0;
  for (const auto& l : lines) n += l.value("_type", "") == type;
  return n;
}

// A cache with a working model and one whose worker crashes with SIGSEGV when injection is on.
struct TwoModelCache {
  TempDir dir;
  std::string cache = dir / "hub";
  TwoModelCache() {
    add_fixture_repo(cache, "test-org/qwen2-tiny", text_fixture("qwen2"));
    add_fixture_repo(cache, "test-org/crashes-in-load", text_fixture("qwen2"));
  }
  std::vector<std::string> env(bool crash) const {
    std::vector<std::string> e = {"HF_HUB_CACHE=" + cache};
    if (crash) {
      e.push_back("VLMCHECK_ALLOW_FAULT_INJECTION=1");
      e.push_back("VLMCHECK_WORKER_FAULT=segv:crashes-in-load");
    }
    return e;
  }
};

TEST(RunWorkflow, ResumeSkipsFinishedModelsAndRetriesFailures) {
  TwoModelCache c;
  std::string out = c.dir / "out";
  std::vector<std::string> args = {"run", "--image", demo_image(), "--models", "test-org/qwen2-tiny",
                                   "test-org/crashes-in-load", "--max-tokens", "6", "--output-dir", out, "--no-color"};
  auto first = run_vlmcheck(args, c.env(true));
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  ASSERT_EQ((*result_for(read_jsonl(out + "/results.jsonl"), "test-org/crashes-in-load"))["assessment"]["execution"],
            "crashed");
  const json qwen_first = *result_for(read_jsonl(out + "/results.jsonl"), "test-org/qwen2-tiny");

  // Second pass, no crash any more: the finished model is skipped, the failed one is run again.
  args.push_back("--resume");
  auto second = run_vlmcheck(args, c.env(false));
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_TRUE(has(second.out, "test-org/qwen2-tiny: already in")) << second.out;
  EXPECT_FALSE(has(second.out, "test-org/crashes-in-load: already in"));
  auto lines = read_jsonl(out + "/results.jsonl");
  EXPECT_EQ(count_type(lines, "metadata"), 2);
  EXPECT_EQ(count_type(lines, "result"), 3);
  EXPECT_EQ(lines.back()["_type"], "run_end");
  EXPECT_EQ(lines.back()["models_skipped_resume"], 1);
  EXPECT_EQ(lines.back()["models_completed"], 1);
  EXPECT_EQ((*result_for(lines, "test-org/crashes-in-load"))["assessment"]["execution"], "completed");
  EXPECT_EQ(*result_for(lines, "test-org/qwen2-tiny"), qwen_first);  // untouched
  vlm::test::expect_valid_results(out + "/results.jsonl");
  // The reports describe both models as completed now (the later line for a model wins).
  std::string diag = read_file(out + "/reports/diagnostics.md");
  EXPECT_TRUE(has(diag, "| completed | 2 |\n| crashed | 0 |")) << diag;
  EXPECT_FALSE(fs::exists(out + "/issues/issue_test-org-crashes-in-load.md"));  // stale draft removed
  // Each pass appended one history line.
  std::string history = read_file(out + "/results.history.jsonl");
  ASSERT_EQ(count_of(history, "\n"), 2);
  json h2 = json::parse(history.substr(history.find('\n') + 1));
  EXPECT_EQ(h2["format_version"], "1.0");
  EXPECT_TRUE(h2["model_results"]["test-org/crashes-in-load"]["success"].get<bool>());
  vlm::test::expect_report_regenerates(out, c.dir / "again");

  // Different settings: nothing matches, so nothing is skipped.
  args[args.size() - 5] = "7";  // --max-tokens 7
  ASSERT_EQ(args[args.size() - 6], "--max-tokens");
  auto third = run_vlmcheck(args, c.env(false));
  ASSERT_EQ(third.exit_code, 0) << third.err;
  EXPECT_FALSE(has(third.out, "already in")) << third.out;
  EXPECT_EQ(read_jsonl(out + "/results.jsonl").back()["models_skipped_resume"], 0);
}

TEST(RunWorkflow, RerunTriageAttachesEvidence) {
  TwoModelCache c;
  std::string out = c.dir / "out";
  auto r = run_vlmcheck({"run", "--image", demo_image(), "--models", "test-org/qwen2-tiny", "test-org/crashes-in-load",
                         "--max-tokens", "6", "--timeout", "30", "--rerun-triage", "--output-dir", out, "--no-color"},
                        c.env(true));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "Rerun (triage): test-org/crashes-in-load")) << r.out;
  auto lines = read_jsonl(out + "/results.jsonl");
  vlm::test::expect_valid_results(out + "/results.jsonl");
  // A rerun exactly for the models needing maintainer attention, after their results.
  for (const auto& l : lines) {
    if (l["_type"] != "result") continue;
    std::string ms = l["assessment"]["maintainer_status"];
    bool wanted = ms == "actionable_failure" || ms == "observation_needs_reproduction";
    int reruns = 0;
    for (const auto& x : lines) reruns += x["_type"] == "rerun" && x["model"] == l["model"];
    EXPECT_EQ(reruns, wanted ? 1 : 0) << l["model"];
  }
  json ev;
  for (const auto& l : lines)
    if (l["_type"] == "rerun" && l["model"] == "test-org/crashes-in-load") ev = l["evidence"];
  ASSERT_TRUE(ev.is_object());
  EXPECT_FALSE(ev["success"].get<bool>());
  EXPECT_EQ(ev["error"], "SIGSEGV");  // the fault fires again in the rerun's own worker
  EXPECT_EQ(ev["failure_phase"], "model_load");
  EXPECT_EQ(ev["prompt"], "Describe this image briefly.");
  EXPECT_EQ(ev["max_tokens"], 100);
  EXPECT_EQ(ev["timeout_s"], 30.0);  // min(60 s, --timeout)
  // Rendered next to the first-pass evidence, which it never replaces.
  std::string diag = read_file(out + "/reports/diagnostics.md");
  EXPECT_TRUE(has(diag, "- **Triage rerun:** failed in model\\_load: SIGSEGV")) << diag;  // Markdown-escaped _
  EXPECT_TRUE(has(read_file(out + "/reports/results.html"), "<dt>Triage rerun</dt><dd>failed in model_load: SIGSEGV"));
  EXPECT_EQ((*result_for(lines, "test-org/crashes-in-load"))["failure"]["signal"], "SIGSEGV");
  vlm::test::expect_report_regenerates(out, c.dir / "again");
}

// Pids of `vlmcheck worker` processes whose parent is `parent`.
std::vector<pid_t> worker_children(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = read_file(e.path().string() + "/stat");
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    pid_t ppid = 0;
    if (std::sscanf(stat.c_str() + close + 2, "%*c %d", &ppid) != 1 || ppid != parent) continue;
    std::string cmdline = read_file(e.path().string() + "/cmdline");
    if (cmdline.find(std::string("worker") + '\0') != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

TEST(RunWorkflow, AbortAndAnOutsideKillBecomeFailureRows) {
  TempDir dir;
  std::string cache = dir / "hub";
  add_fixture_repo(cache, "test-org/qwen2-tiny", text_fixture("qwen2"));
  add_fixture_repo(cache, "test-org/aborts-in-load", text_fixture("qwen2"));
  add_fixture_repo(cache, "test-org/killed-in-load", text_fixture("qwen2"));
  std::string out = dir / "out";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("HF_HUB_CACHE", cache.c_str(), 1);
    setenv("VLMCHECK_ALLOW_FAULT_INJECTION", "1", 1);
    setenv("VLMCHECK_WORKER_FAULT", "abort:aborts-in-load,hang:killed-in-load", 1);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    std::string bin = vlm::test::vlmcheck_binary(), img = demo_image();
    execl(bin.c_str(), bin.c_str(), "run", "--image", img.c_str(), "--models", "test-org/aborts-in-load",
          "test-org/killed-in-load", "test-org/qwen2-tiny", "--max-tokens", "6", "--timeout", "120", "--output-dir",
          out.c_str(), "--no-color", nullptr);
    _exit(127);
  }
  // The second model hangs in model_load: kill its worker from outside with SIGKILL, as the kernel's
  // out-of-memory killer would.
  bool killed = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(out + "/results.jsonl") && read_jsonl(out + "/results.jsonl").size() >= 2) {
      auto workers = worker_children(pid);
      if (workers.size() == 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let it reach the hang
        killed = kill(workers[0], SIGKILL) == 0;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(killed) << "never saw the hanging worker";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto lines = read_jsonl(out + "/results.jsonl");
  vlm::test::expect_valid_results(out + "/results.jsonl");
  const json* ab = result_for(lines, "test-org/aborts-in-load");
  ASSERT_TRUE(ab);
  EXPECT_EQ((*ab)["failure"]["signal"], "SIGABRT");
  EXPECT_EQ((*ab)["failure"]["stage"], "Crash");
  EXPECT_EQ((*ab)["failure"]["phase"], "model_load");
  const json* oom = result_for(lines, "test-org/killed-in-load");
  ASSERT_TRUE(oom);
  EXPECT_EQ((*oom)["failure"]["signal"], "SIGKILL");
  EXPECT_EQ((*oom)["failure"]["stage"], "OOM");
  EXPECT_TRUE(has((*oom)["failure"]["message"].get<std::string>(), "out-of-memory")) << (*oom)["failure"].dump();
  EXPECT_EQ((*oom)["timing"]["stop_reason"], "crashed");
  const json* ok = result_for(lines, "test-org/qwen2-tiny");
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["assessment"]["execution"], "completed");  // the sweep went on
  EXPECT_TRUE(fs::exists(out + "/issues/issue_test-org-killed-in-load.md"));
}

// Writes a copy of the demo image in another format with Debian's PIL.
void convert_image(const std::string& from, const std::string& to) {
  std::string cmd = "/usr/bin/python3 -c \"import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2])\" '" +
                    from + "' '" + to + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(RunWorkflow, SeveralImagesEachGetACompleteRun) {
  TempDir dir;
  std::string photos = dir / "photos";
  fs::create_directories(photos);
  fs::copy_file(demo_image(), photos + "/harbour.jpg");
  convert_image(demo_image(), photos + "/harbour.png");  // same stem: must not share an output folder
  vlm::test::write_file(photos + "/notes.txt", "not an image");
  vlm::test::write_file(photos + "/.hidden.jpg", read_file(demo_image()));
  // The PNG is the newest.
  fs::last_write_time(photos + "/harbour.jpg", fs::file_time_type::clock::now() - std::chrono::hours(2));
  fs::last_write_time(photos + "/harbour.png", fs::file_time_type::clock::now() - std::chrono::hours(1));

  // --folder alone: the newest supported image only.
  auto one = run_vlmcheck({"run", "--folder", photos, "--models", text_fixture("qwen2"), "--dry-run"},
                          {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_TRUE(has(one.out, "harbour.png")) << one.out;
  EXPECT_FALSE(has(one.out, "harbour.jpg"));

  // --folder --all: every supported image, one complete run each.
  std::string out = dir / "out";
  auto all = run_vlmcheck({"run", "--folder", photos, "--all", "--models", text_fixture("qwen2"), "--max-tokens", "4",
                           "--output-dir", out, "--no-color"},
                          {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(all.exit_code, 0) << all.out << all.err;
  std::set<std::string> names;
  for (const char* sub : {"harbour", "harbour-2"}) {
    std::string run_dir = out + "/" + sub;
    ASSERT_TRUE(fs::exists(run_dir + "/results.jsonl")) << sub << "\n" << all.out;
    auto lines = read_jsonl(run_dir + "/results.jsonl");
    names.insert(lines[0]["image"]["name"].get<std::string>());
    EXPECT_EQ(lines.back()["_type"], "run_end");
    for (const char* f : {"index.md", "run.json", "reports/results.html", "results.tsv"})
      EXPECT_TRUE(fs::exists(run_dir + "/" + f)) << sub << "/" << f;
    vlm::test::expect_valid_results(run_dir + "/results.jsonl");
  }
  EXPECT_EQ(names, (std::set<std::string>{"harbour.jpg", "harbour.png"}));

  // --images: explicit files, in the order given.
  std::string out2 = dir / "out2";
  auto listed = run_vlmcheck({"run", "--images", photos + "/harbour.jpg", demo_image(), "--models",
                              text_fixture("qwen2"), "--dry-run", "--output-dir", out2},
                             {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  size_t a = listed.out.find("Image harbour.jpg"), b = listed.out.find("Image sample.jpg");
  EXPECT_TRUE(a != std::string::npos && b != std::string::npos && a < b) << listed.out;
  EXPECT_FALSE(fs::exists(out2));
}

TEST(RunWorkflow, QualityConfigOverridesThresholds) {
  TempDir dir;
  // Every output counts as minimal, and 4 tokens are enough for a valid tokens/s figure.
  vlm::test::write_file(dir / "quality.toml",
                        "[thresholds]\nmax_words_for_minimal_output = 100000\nmin_tokens_for_substantial = 100000\n"
                        "min_generation_tokens_for_tps = 4\nbogus_key = 1\n");
  std::string out = dir / "out";
  auto r = run_vlmcheck({"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--max-tokens", "6",
                         "--quality-config", dir / "quality.toml", "--output-dir", out, "--no-color"},
                        {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "unknown key thresholds.bogus_key ignored")) << r.out;
  auto lines = read_jsonl(out + "/results.jsonl");
  const json& q = lines[0]["quality_thresholds"];
  EXPECT_EQ(q["max_words_for_minimal_output"], 100000);
  EXPECT_EQ(q["min_generation_tokens_for_tps"], 4);
  EXPECT_EQ(q["repetition_ratio"], 0.9);  // untouched keys keep their defaults
  EXPECT_EQ(lines[0]["options"]["quality_config"], dir / "quality.toml");
  const json& row = lines[1];
  ASSERT_EQ(row["assessment"]["execution"], "completed") << row["failure"].dump();
  int64_t gen = row["metrics"]["generation_tokens"];
  ASSERT_GT(gen, 0);
  auto obs = row["assessment"]["observations"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(obs.begin(), obs.end(), "minimal_output"), obs.end()) << row["assessment"].dump();
  EXPECT_EQ(row["metrics"]["generation_tps_valid"].get<bool>(), gen >= 4);
  vlm::test::expect_valid_results(out + "/results.jsonl");  // the TPS rule reads the header's threshold

  // A file breaking a rule is rejected as a whole: warning, defaults kept (fail-soft as check_models).
  vlm::test::write_file(dir / "bad.toml", "repetition_ratio = 1.5\nmin_generation_tokens_for_tps = 4\n");
  auto bad = run_vlmcheck({"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--quality-config",
                           dir / "bad.toml", "--dry-run", "--no-color"},
                          {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(bad.exit_code, 0) << bad.err;
  EXPECT_TRUE(has(bad.out, "warning: ")) << bad.out;
  EXPECT_TRUE(has(bad.out, "repetition_ratio")) << bad.out;
  // A named file that does not exist is an error, not a silent default.
  auto missing = run_vlmcheck({"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--quality-config",
                               dir / "nope.toml", "--dry-run"},
                              {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_TRUE(has(missing.err, "nope.toml")) << missing.err;
}

TEST(RunWorkflow, PerFileOutputFlagsTsvAndIssueDrafts) {
  TwoModelCache c;
  std::string out = c.dir / "out", elsewhere = c.dir / "elsewhere";
  auto r = run_vlmcheck({"run", "--image", demo_image(), "--models", "test-org/qwen2-tiny", "test-org/crashes-in-load",
                         "--max-tokens", "6", "--output-dir", out, "--output-html", elsewhere + "/page.html",
                         "--output-jsonl", elsewhere + "/records.jsonl", "--output-diagnostics",
                         elsewhere + "/diag.md", "--no-color"},
                        c.env(true));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* f : {"page.html", "records.jsonl", "diag.md"}) EXPECT_TRUE(fs::exists(elsewhere + "/" + f)) << f;
  for (const char* f : {"reports/results.html", "results.jsonl", "reports/diagnostics.md"})
    EXPECT_FALSE(fs::exists(out + "/" + f)) << f;
  for (const char* f : {"index.md", "run.json", "results.tsv", "reports/model_gallery.md"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  EXPECT_TRUE(has(read_file(out + "/index.md"), "](" + elsewhere + "/page.html)"));
  vlm::test::expect_valid_results(elsewhere + "/records.jsonl");
  // Re-rendering from the moved JSONL writes the same bytes to the same places.
  std::string html = read_file(elsewhere + "/page.html"), diag = read_file(elsewhere + "/diag.md");
  fs::remove(elsewhere + "/page.html");
  auto again = run_vlmcheck({"report", "--from", elsewhere + "/records.jsonl", "--output-dir", out});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(read_file(elsewhere + "/page.html") == html);
  EXPECT_TRUE(read_file(elsewhere + "/diag.md") == diag);

  // TSV: a "# generated_at:" line, a header, one row per model, the same column count everywhere,
  // no raw tab or newline inside a cell.
  auto rows = vlm::test::read_file(out + "/results.tsv");
  std::vector<std::string> tsv_lines;
  for (size_t b = 0, e; (e = rows.find('\n', b)) != std::string::npos; b = e + 1) tsv_lines.push_back(rows.substr(b, e - b));
  ASSERT_EQ(tsv_lines.size(), 4u) << rows;
  EXPECT_TRUE(tsv_lines[0].rfind("# generated_at: ", 0) == 0);
  int cols = count_of(tsv_lines[1], "\t");
  EXPECT_EQ(cols, 21);
  for (size_t i = 2; i < tsv_lines.size(); ++i) EXPECT_EQ(count_of(tsv_lines[i], "\t"), cols) << tsv_lines[i];
  EXPECT_TRUE(has(rows, "test-org/crashes-in-load\tcrashed\tnot_evaluated\tactionable_failure\t\tmodel_load\tCrash\t"))
      << rows;

  // Issue drafts: one per crash, with the signature and a native reproduction command, plus the run summary.
  std::string draft = read_file(out + "/issues/issue_test-org-crashes-in-load.md");
  json crash = *result_for(read_jsonl(elsewhere + "/records.jsonl"), "test-org/crashes-in-load");
  EXPECT_TRUE(has(draft, "- Signature: " + crash["failure"]["signature"].get<std::string>())) << draft;
  EXPECT_TRUE(has(draft, "vlmcheck generate --model test-org/crashes-in-load --revision " + vlm::test::kFixtureSha));
  EXPECT_TRUE(has(draft, "- Signal: SIGSEGV"));
  std::string summary = read_file(out + "/issues/run_summary.md");
  EXPECT_TRUE(has(summary, "## Crashes requiring action\n\n### test-org/crashes-in-load")) << summary;
}

// Runs vlmcheck on a pseudo-terminal (its stdout is a TTY) and returns everything it wrote.
std::string run_on_pty(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  int master = -1;
  struct winsize ws{};
  ws.ws_col = 120;
  ws.ws_row = 40;
  pid_t pid = forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0) return "forkpty failed";
  if (pid == 0) {
    for (const auto& e : env) putenv(strdup(e.c_str()));
    std::string bin = vlm::test::vlmcheck_binary();
    std::vector<char*> argv = {strdup(bin.c_str())};
    for (const auto& a : args) argv.push_back(strdup(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  std::string out;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  for (;;) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n <= 0) break;  // EIO once the child has exited and closed the terminal
      out.append(buf, static_cast<size_t>(n));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      break;
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(master);
  return out + (WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "" : "\n[exit status " + std::to_string(status) + "]");
}

const std::regex kSgr("\x1b\\[[0-9;]*m");

TEST(RunConsole, LiveProgressOnATerminalPlainLinesWhenPiped) {
  TempDir dir;
  std::string out_tty = dir / "tty", out_pipe = dir / "pipe";
  // On a terminal: one live line redrawn in place (\r + erase-line) with model, phase, elapsed and
  // tokens/s, and colour by default.
  std::string tty = run_on_pty({"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--max-tokens",
                                "24", "--output-dir", out_tty},
                               {"HF_HUB_CACHE=" + (dir / "empty-hub"), "NO_COLOR=", "FORCE_COLOR="});
  EXPECT_FALSE(has(tty, "[exit status")) << tty;
  EXPECT_GT(count_of(tty, "\r\x1b[K[1/1] "), 3) << tty;
  EXPECT_TRUE(std::regex_search(tty, std::regex(R"(\[1/1\] \S*qwen2 · model_load · [0-9]+\.[0-9]s)"))) << tty;
  EXPECT_TRUE(std::regex_search(tty, std::regex(R"(· decode · [0-9]+\.[0-9]s [0-9]+ tok [0-9.]+ tok/s)"))) << tty;
  EXPECT_TRUE(std::regex_search(tty, kSgr)) << "no colour on a terminal";
  // Piped: no live line, one plain line per phase, no escape sequences at all.
  auto piped = run_vlmcheck({"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--max-tokens", "4",
                             "--output-dir", out_pipe},
                            {"HF_HUB_CACHE=" + (dir / "empty-hub"), "FORCE_COLOR="});
  ASSERT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_FALSE(has(piped.out, "\x1b")) << piped.out;
  EXPECT_FALSE(has(piped.out, "\r"));
  EXPECT_TRUE(has(piped.out, "Processing Model [1/1]: "));
  EXPECT_TRUE(std::regex_search(piped.out, std::regex(R"(\[1/1\] \S*qwen2: decode\n)"))) << piped.out;
  EXPECT_TRUE(has(piped.out, "Results Summary"));
}

TEST(RunConsole, ColourRules) {
  TempDir dir;
  auto dry = [&](std::vector<std::string> extra, std::vector<std::string> env, bool on_tty) {
    std::vector<std::string> args = {"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--dry-run"};
    args.insert(args.end(), extra.begin(), extra.end());
    // Neutral defaults first (the test's own environment may carry either variable); the case's own values win.
    env.insert(env.begin(), {"NO_COLOR=", "FORCE_COLOR=", "HF_HUB_CACHE=" + (dir / "empty-hub")});
    if (on_tty) return run_on_pty(args, env);
    auto r = run_vlmcheck(args, env);
    return r.out + r.err;
  };
  auto coloured = [](const std::string& s) { return std::regex_search(s, kSgr); };
  EXPECT_TRUE(coloured(dry({}, {"NO_COLOR=", "FORCE_COLOR="}, true)));             // terminal: on
  EXPECT_FALSE(coloured(dry({}, {"NO_COLOR=1", "FORCE_COLOR="}, true)));           // NO_COLOR
  EXPECT_FALSE(coloured(dry({"--no-color"}, {"NO_COLOR=", "FORCE_COLOR="}, true)));
  EXPECT_FALSE(coloured(dry({}, {"NO_COLOR=", "FORCE_COLOR="}, false)));           // piped: off
  EXPECT_TRUE(coloured(dry({}, {"FORCE_COLOR=1"}, false)));                        // FORCE_COLOR
  EXPECT_TRUE(coloured(dry({"--force-color"}, {}, false)));
  EXPECT_FALSE(coloured(dry({}, {"NO_COLOR=1", "FORCE_COLOR=1"}, false)));         // NO_COLOR wins
  EXPECT_TRUE(coloured(dry({"--force-color"}, {"NO_COLOR=1"}, false)));            // a flag beats the environment
  EXPECT_FALSE(coloured(dry({"--no-color"}, {"FORCE_COLOR=1"}, false)));
}

// Decimal degrees from EXIF's degree/minute/second rationals, computed here independently.
std::string dms(double d, double m, double s, char ref) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f\u00b0%c", d + m / 60.0 + s / 3600.0, ref);
  return buf;
}

TEST(RunPrompt, ExifGpsIptcXmpWrittenByExiv2ReachTheAssistedPrompt) {
  TempDir dir;
  std::string jpg = dir / "tagged.jpg";
  std::string cmd = "/usr/bin/python3 -c \"import sys; from PIL import Image; Image.new('RGB', (96, 64), (40, 90, "
                    "160)).save(sys.argv[1], quality=90)\" '" + jpg + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::string exiv2 = "exiv2";
  for (const char* m : {"set Exif.Photo.DateTimeOriginal 2025:12:24 09:30:05",
                        "set Exif.Photo.OffsetTimeOriginal -05:00",
                        "set Exif.GPSInfo.GPSLatitude 33/1 51/1 2484/100", "set Exif.GPSInfo.GPSLatitudeRef S",
                        "set Exif.GPSInfo.GPSLongitude 151/1 12/1 5500/100", "set Exif.GPSInfo.GPSLongitudeRef E",
                        "set Iptc.Application2.Caption Ferry crossing the harbour at dawn",
                        "add Iptc.Application2.Keywords ferry", "add Iptc.Application2.Keywords harbour",
                        "set Xmp.dc.title lang=x-default Morning ferry", "set Xmp.dc.subject XmpBag Sydney"})
    exiv2 += std::string(" -M'") + m + "'";
  exiv2 += " '" + jpg + "' 2>&1";
  ASSERT_EQ(std::system(exiv2.c_str()), 0) << exiv2;

  std::string out = dir / "out";
  auto r = run_vlmcheck({"run", "--image", jpg, "--models", text_fixture("qwen2"), "--max-tokens", "4", "--output-dir",
                         out, "--no-color"},
                        {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto lines = read_jsonl(out + "/results.jsonl");
  const json& h = lines[0];
  EXPECT_EQ(h["eval_mode"], "assisted");
  EXPECT_TRUE(h["metadata_exposed_to_prompt"].get<bool>());
  std::string prompt = h["prompt"];
  EXPECT_TRUE(has(prompt, "- GPS: " + dms(33, 51, 24.84, 'S') + ", " + dms(151, 12, 55.0, 'E'))) << prompt;
  EXPECT_TRUE(has(prompt, "- Capture date/time: 2025-12-24 09:30:05 UTC-05:00")) << prompt;
  EXPECT_TRUE(has(prompt, "- Title hint: Morning ferry")) << prompt;
  EXPECT_TRUE(has(prompt, "- Description hint: Ferry crossing the harbour at dawn")) << prompt;
  std::regex kw(R"(- Keyword hints: ([^\n]*))");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(prompt, m, kw)) << prompt;
  for (const char* k : {"ferry", "harbour", "Sydney"}) EXPECT_TRUE(has(m[1].str(), k)) << m[1].str();
  EXPECT_EQ(h["image_metadata"]["title"], "Morning ferry");
  EXPECT_EQ(h["image_metadata"]["gps"], dms(33, 51, 24.84, 'S') + ", " + dms(151, 12, 55.0, 'E'));
  // The rendered prompt the model saw carries it too, and the gallery lists the metadata.
  EXPECT_TRUE(has(lines[1]["prompt_diagnostics"]["rendered_prompt"].get<std::string>(), "Morning ferry"));
  EXPECT_TRUE(has(read_file(out + "/reports/model_gallery.md"), "- title: Morning ferry"));
  // The blind lane never shows it.
  auto blind = run_vlmcheck({"run", "--image", jpg, "--models", text_fixture("qwen2"), "--eval-mode", "blind",
                             "--dry-run", "--no-color"},
                            {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(blind.exit_code, 0) << blind.err;
  EXPECT_FALSE(has(blind.out, "Title hint")) << blind.out;
  EXPECT_FALSE(has(blind.out, "- GPS:")) << blind.out;
}

TEST(RunPrompt, PromptAndMessagesOverrides) {
  TempDir dir;
  std::string out = dir / "out";
  auto r = run_vlmcheck({"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--prompt",
                         "Name one colour you see.", "--max-tokens", "4", "--output-dir", out, "--no-color"},
                        {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto lines = read_jsonl(out + "/results.jsonl");
  EXPECT_EQ(lines[0]["prompt"], "Name one colour you see.");
  EXPECT_EQ(lines[0]["eval_mode"], "assisted");  // the lane stays, only its prompt is replaced
  EXPECT_FALSE(lines[0]["metadata_exposed_to_prompt"].get<bool>());
  EXPECT_TRUE(has(lines[1]["prompt_diagnostics"]["rendered_prompt"].get<std::string>(), "Name one colour you see."));

  vlm::test::write_file(dir / "messages.json",
                        R"([{"role": "system", "content": "You are a terse cataloguer."},
                            {"role": "user", "content": "List three keywords."}])");
  std::string out2 = dir / "out2";
  auto m = run_vlmcheck({"run", "--image", demo_image(), "--models", text_fixture("qwen2"), "--messages",
                         dir / "messages.json", "--max-tokens", "4", "--output-dir", out2, "--no-color"},
                        {"HF_HUB_CACHE=" + (dir / "empty-hub")});
  ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
  auto l2 = read_jsonl(out2 + "/results.jsonl");
  ASSERT_TRUE(l2[0]["messages"].is_array());
  EXPECT_EQ(l2[0]["messages"][0]["content"], "You are a terse cataloguer.");
  ASSERT_EQ(l2[1]["assessment"]["execution"], "completed") << l2[1]["failure"].dump();
  std::string rendered = l2[1]["prompt_diagnostics"]["rendered_prompt"];
  EXPECT_TRUE(has(rendered, "You are a terse cataloguer.")) << rendered;
  EXPECT_TRUE(has(rendered, "List three keywords.")) << rendered;
  vlm::test::expect_valid_results(out2 + "/results.jsonl");
}

TEST(RunDiscovery, EverySkipIsListedWithItsReasons) {
  TempDir dir;
  std::string cache = dir / "hub";
  add_fixture_repo(cache, "text-org/plain-llm", text_fixture("qwen2"));
  // An image-capable checkpoint in the layout the engine reads.
  vlm::test::FakeRepo vlm_repo(cache, "vis-org/tiny-vlm");
  vlm_repo.add_file(vlm::test::kFixtureSha, "config.json",
                    R"({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
                        "vision_config": {"model_type": "clip_vision_model"}, "text_config": {"model_type": "llama"}})");
  vlm_repo.add_file(vlm::test::kFixtureSha, "model.safetensors", read_file(text_fixture("qwen2") + "/model.safetensors"));
  vlm_repo.add_file(vlm::test::kFixtureSha, "tokenizer_config.json", read_file(text_fixture("qwen2") + "/tokenizer_config.json"));
  vlm_repo.set_ref("main", vlm::test::kFixtureSha);
  // A repo with no weights the engine can read.
  vlm::test::FakeRepo gguf(cache, "gguf-org/only-gguf");
  gguf.add_file(vlm::test::kFixtureSha, "model.Q4_K_M.gguf", "GGUF");
  gguf.set_ref("main", vlm::test::kFixtureSha);

  auto r = run_vlmcheck({"run", "--image", demo_image(), "--dry-run", "--no-color", "--exclude", "not/cached"},
                        {"HF_HUB_CACHE=" + cache, "HOME=" + (dir / "home")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(Skipping text-org/plain-llm: \S)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(Skipping gguf-org/only-gguf: \S)"))) << r.out;
  EXPECT_FALSE(has(r.out, "Skipping vis-org/tiny-vlm"));
  EXPECT_TRUE(has(r.out, "Models (1):\n  vis-org/tiny-vlm")) << r.out;
  EXPECT_TRUE(has(r.out, "--exclude not/cached: not in the model list, will have no effect")) << r.out;
  // --exclude removes a discovered model; nothing left is a not-found error naming the cache.
  auto none = run_vlmcheck({"run", "--image", demo_image(), "--dry-run", "--exclude", "vis-org/tiny-vlm"},
                           {"HF_HUB_CACHE=" + cache, "HOME=" + (dir / "home")});
  EXPECT_EQ(none.exit_code, 3) << none.out << none.err;
  EXPECT_TRUE(has(none.err, cache)) << none.err;
}

}  // namespace
