// reports/results.html in a real browser. A real `vlmcheck run` (the built binary, fixture
// checkpoints in a fake Hugging Face cache, one worker crashing with a real SIGSEGV) writes the
// report; Debian's headless Chromium opens it and is driven over the Chrome DevTools Protocol on
// --remote-debugging-pipe (NUL-terminated JSON messages on fds 3 and 4) by the small client below,
// so no browser-automation library is involved. The test clicks column headers with real mouse
// events, types into the search box with real key events, picks a filter with the keyboard, and
// checks the DOM's row order and visibility against results.jsonl after each step. The screenshot
// is decoded by our own PNG decoder and must have real content (pixel variance, many colours, the
// crashed row's background colour on screen). A second page, re-rendered from a record whose
// model output is hostile HTML, must run none of it and show it verbatim.
// Skips (GTEST_SKIP) only when no Chromium is installed; VLMCHECK_CHROMIUM names another binary.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "fake_hf_cache.h"
#include "image/image.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using vlm::test::read_file;
using vlm::test::run_vlmcheck;
using vlm::test::TempDir;

namespace {

const std::string kSha = vlm::test::fake_sha("c0ffee");

// ---- finding the browser ---------------------------------------------------------------------------

std::string find_chromium() {
  if (const char* env = std::getenv("VLMCHECK_CHROMIUM"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (const char* name : {"chromium", "chromium-browser"}) {
    size_t b = 0;
    while (b <= dirs.size()) {
      size_t e = dirs.find(':', b);
      if (e == std::string::npos) e = dirs.size();
      std::string cand = dirs.substr(b, e - b) + "/" + name;
      if (!cand.empty() && ::access(cand.c_str(), X_OK) == 0) return cand;
      b = e + 1;
    }
  }
  return "";
}

// ---- a minimal DevTools client over --remote-debugging-pipe ----------------------------------------

class Browser {
 public:
  // Starts headless Chromium with its own profile in `profile_dir`; its console goes to `log_path`.
  Browser(const std::string& exe, const std::string& profile_dir, const std::string& log_path) : log_path_(log_path) {
    int to_browser[2], from_browser[2];
    if (::pipe2(to_browser, O_CLOEXEC) != 0 || ::pipe2(from_browser, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe2 failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);  // its own group: the browser's helper processes end with it
      // Move both ends above 4 first so the dup2 onto 3 and 4 cannot clobber one another.
      int rd = ::fcntl(to_browser[0], F_DUPFD, 10), wr = ::fcntl(from_browser[1], F_DUPFD, 10);
      ::dup2(rd, 3);
      ::dup2(wr, 4);
      int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (log >= 0) {
        ::dup2(log, 1);
        ::dup2(log, 2);
      }
      std::string profile = "--user-data-dir=" + profile_dir;
      std::vector<const char*> argv = {exe.c_str(), "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
                                       "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                                       "--no-default-browser-check", "--disable-extensions",
                                       "--disable-background-networking", "--disable-sync", "--mute-audio",
                                       "--hide-scrollbars", "--force-color-profile=srgb", profile.c_str(),
                                       "about:blank", nullptr};
      ::execv(exe.c_str(), const_cast<char* const*>(argv.data()));
      ::_exit(127);
    }
    ::close(to_browser[0]);
    ::close(from_browser[1]);
    write_fd_ = to_browser[1];
    read_fd_ = from_browser[0];
  }

  ~Browser() {
    if (write_fd_ >= 0) {
      try {
        call("Browser.close", json::object(), "", 5.0);
      } catch (...) {
      }
      ::close(write_fd_);
    }
    if (read_fd_ >= 0) ::close(read_fd_);
    if (pid_ > 0) {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      int status = 0;
      while (::waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          ::kill(-pid_, SIGKILL);  // the group we created above
          ::waitpid(pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      ::kill(-pid_, SIGKILL);  // stray helpers of that group, if any
    }
  }

  std::string log_tail() const {
    std::string s = read_file(log_path_);
    return s.size() > 3000 ? s.substr(s.size() - 3000) : s;
  }

  // Sends one command and waits for its reply; throws with the protocol error or on timeout.
  json call(const std::string& method, const json& params, const std::string& session = "", double timeout_s = 30.0) {
    int id = ++next_id_;
    json msg = {{"id", id}, {"method", method}, {"params", params}};
    if (!session.empty()) msg["sessionId"] = session;
    std::string text = msg.dump();
    text.push_back('\0');
    for (size_t off = 0; off < text.size();) {
      ssize_t n = ::write(write_fd_, text.data() + off, text.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("the browser closed its DevTools pipe while sending " + method);
      off += static_cast<size_t>(n);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      // Complete messages already buffered: events are dropped, the matching reply returned.
      for (size_t nul; (nul = buf_.find('\0')) != std::string::npos;) {
        json reply = json::parse(buf_.substr(0, nul));
        buf_.erase(0, nul + 1);
        if (!reply.contains("id") || reply["id"] != id) continue;
        if (reply.contains("error")) throw std::runtime_error(method + ": " + reply["error"].dump());
        return reply.value("result", json::object());
      }
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0) throw std::runtime_error(method + ": no reply within the timeout");
      pollfd p{read_fd_, POLLIN, 0};
      int r = ::poll(&p, 1, left);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) continue;
      char chunk[65536];
      ssize_t n = ::read(read_fd_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(method + ": the browser exited (DevTools pipe closed)");
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  int write_fd_ = -1, read_fd_ = -1;
  int next_id_ = 0;
  std::string buf_;
};

// One tab, attached in flat mode so page commands carry its sessionId.
class Page {
 public:
  Page(Browser& b, int width, int height) : b_(b) {
    std::string target = b_.call("Target.createTarget", {{"url", "about:blank"}})["targetId"];
    session_ = b_.call("Target.attachToTarget", {{"targetId", target}, {"flatten", true}})["sessionId"];
    cmd("Emulation.setDeviceMetricsOverride",
        {{"width", width}, {"height", height}, {"deviceScaleFactor", 1}, {"mobile", false}});
    cmd("Page.enable", json::object());
  }
  json cmd(const std::string& method, const json& params) { return b_.call(method, params, session_); }

  void open(const std::string& url) {
    cmd("Page.navigate", {{"url", url}});
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (eval("document.readyState + ' ' + location.href") != json("complete " + url)) {
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("page did not load: " + url);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Evaluates a JavaScript expression in the page and returns its JSON value.
  json eval(const std::string& expr) {
    json r = cmd("Runtime.evaluate", {{"expression", expr}, {"returnByValue", true}, {"awaitPromise", true}});
    if (r.contains("exceptionDetails")) throw std::runtime_error("page script failed: " + r["exceptionDetails"].dump());
    return r["result"].value("value", json());
  }

  // A real left click at the centre of the element `selector_expr` (a JS expression yielding it).
  void click(const std::string& element_expr) {
    json c = eval("(function(){var e=" + element_expr +
                  ";e.scrollIntoView({block:'center'});var r=e.getBoundingClientRect();"
                  "return {x:r.left+r.width/2,y:r.top+r.height/2};})()");
    for (const char* type : {"mouseMoved", "mousePressed", "mouseReleased"})
      cmd("Input.dispatchMouseEvent",
          {{"type", type}, {"x", c["x"]}, {"y", c["y"]}, {"button", "left"}, {"clickCount", 1}});
  }

  // Key presses as a keyboard sends them (keyDown with text, then keyUp).
  void type_text(const std::string& text) {
    for (char ch : text) {
      std::string s(1, ch);
      cmd("Input.dispatchKeyEvent", {{"type", "keyDown"}, {"key", s}, {"text", s}, {"unmodifiedText", s}});
      cmd("Input.dispatchKeyEvent", {{"type", "keyUp"}, {"key", s}});
    }
  }
  void press(const std::string& key, int key_code) {
    for (const char* type : {"rawKeyDown", "keyUp"})
      cmd("Input.dispatchKeyEvent", {{"type", type}, {"key", key}, {"code", key}, {"windowsVirtualKeyCode", key_code}});
  }

  std::string screenshot_png() {
    std::string b64 = cmd("Page.captureScreenshot", {{"format", "png"}})["data"];
    return base64_decode(b64);
  }

 private:
  static std::string base64_decode(const std::string& in) {
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
      int v = c >= 'A' && c <= 'Z'   ? c - 'A'
              : c >= 'a' && c <= 'z' ? c - 'a' + 26
              : c >= '0' && c <= '9' ? c - '0' + 52
              : c == '+'             ? 62
              : c == '/'             ? 63
                                     : -1;
      if (v < 0) continue;  // '=' padding
      acc = (acc << 6) | static_cast<uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push_back(static_cast<char>((acc >> bits) & 0xff));
      }
    }
    return out;
  }
  Browser& b_;
  std::string session_;
};

// ---- the run -----------------------------------------------------------------------------------------

void add_fixture_repo(const std::string& cache, const std::string& repo_id, const std::string& fixture) {
  vlm::test::FakeRepo repo(cache, repo_id);
  for (const auto& e : fs::directory_iterator(vlm::test::source_dir() + "/tests/fixtures/text/" + fixture))
    if (e.is_regular_file()) repo.add_file(kSha, e.path().filename().string(), read_file(e.path().string()));
  repo.set_ref("main", kSha);
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(json::parse(line));
  return lines;
}

// JS expressions the checks below read the table through.
const char* kRowOrder = "Array.from(document.querySelectorAll('#chooser tbody tr')).map(function(r){return r.dataset.model;})";
const char* kVisibleRows =
    "Array.from(document.querySelectorAll('#chooser tbody tr')).filter(function(r){return r.getClientRects().length>0;})"
    ".map(function(r){return r.dataset.model;})";
std::string header(const std::string& label) {
  return "Array.from(document.querySelectorAll('#chooser thead th')).find(function(t){return t.textContent==='" + label +
         "';})";
}

std::vector<std::string> strings(const json& j) { return j.get<std::vector<std::string>>(); }

class BrowserReport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    chromium_ = find_chromium();
    if (chromium_.empty()) return;
    dir_ = new TempDir();
    std::string cache = *dir_ / "hub";
    add_fixture_repo(cache, "test-org/qwen2-tiny", "qwen2");
    add_fixture_repo(cache, "test-org/llama-tiny", "llama");
    add_fixture_repo(cache, "test-org/crashes-in-load", "qwen2");
    out_ = *dir_ / "out";
    run_ = new vlm::test::ProcessResult(run_vlmcheck(
        {"run", "--image", vlm::test::source_dir() + "/assets/demo/sample.jpg", "--models", "test-org/qwen2-tiny",
         "test-org/crashes-in-load", "test-org/llama-tiny", "--max-tokens", "20", "--timeout", "120", "--output-dir",
         out_, "--no-color"},
        {"HF_HUB_CACHE=" + cache, "VLMCHECK_ALLOW_FAULT_INJECTION=1", "VLMCHECK_WORKER_FAULT=segv:crashes-in-load"}));
  }
  static void TearDownTestSuite() {
    delete run_;
    delete dir_;
  }
  void SetUp() override {
    if (chromium_.empty())
      GTEST_SKIP() << "Chromium is not installed (Debian: apt-get install chromium, as scripts/setup.sh does; or set "
                      "VLMCHECK_CHROMIUM): the real-browser test of reports/results.html cannot run";
    ASSERT_EQ(run_->exit_code, 0) << run_->out << run_->err;
    ::signal(SIGPIPE, SIG_IGN);  // a dying browser must fail the test, not kill it
  }

  static std::string chromium_;
  static TempDir* dir_;
  static std::string out_;
  static vlm::test::ProcessResult* run_;
};
std::string BrowserReport::chromium_;
TempDir* BrowserReport::dir_ = nullptr;
std::string BrowserReport::out_;
vlm::test::ProcessResult* BrowserReport::run_ = nullptr;

TEST_F(BrowserReport, SortsFiltersAndRendersTheTable) {
  // What the page must show, from the records alone.
  std::map<std::string, json> rows;
  for (const auto& l : read_jsonl(out_ + "/results.jsonl"))
    if (l["_type"] == "result") rows[l["model"]] = l;
  ASSERT_EQ(rows.size(), 3u);
  ASSERT_EQ(rows["test-org/crashes-in-load"]["assessment"]["execution"], "crashed");
  std::vector<std::string> by_name;
  for (const auto& [m, _] : rows) by_name.push_back(m);  // std::map: ascending, and these names sort alike in ICU

  TempDir profile;
  Browser browser(chromium_, profile / "profile", profile / "chromium.log");
  try {
    Page page(browser, 1280, 900);
    page.open("file://" + out_ + "/reports/results.html");
    const std::vector<std::string> initial = strings(page.eval(kRowOrder));
    ASSERT_EQ(initial.size(), 3u);
    EXPECT_EQ(std::set<std::string>(initial.begin(), initial.end()), std::set<std::string>(by_name.begin(), by_name.end()));
    EXPECT_EQ(page.eval("document.getElementById('shown').textContent"), "Showing 3 of 3 rows");

    // Sort by model name: one click ascending, a second descending (aria-sort drives the arrow).
    page.click(header("Model"));
    EXPECT_EQ(strings(page.eval(kRowOrder)), by_name);
    EXPECT_EQ(page.eval(header("Model") + ".getAttribute('aria-sort')"), "ascending");
    page.click(header("Model"));
    EXPECT_EQ(strings(page.eval(kRowOrder)), std::vector<std::string>(by_name.rbegin(), by_name.rend()));
    EXPECT_EQ(page.eval(header("Model") + ".getAttribute('aria-sort')"), "descending");

    // Numeric sort on Total s: the page's order must follow results.jsonl's total_time_s.
    auto totals = [&](const std::vector<std::string>& order) {
      std::vector<double> t;
      for (const auto& m : order) t.push_back(std::round(rows[m]["timing"]["total_time_s"].get<double>() * 1000) / 1000);
      return t;
    };
    page.click(header("Total s"));
    auto asc = totals(strings(page.eval(kRowOrder)));
    EXPECT_TRUE(std::is_sorted(asc.begin(), asc.end())) << ::testing::PrintToString(asc);
    page.click(header("Total s"));
    auto desc = totals(strings(page.eval(kRowOrder)));
    EXPECT_TRUE(std::is_sorted(desc.rbegin(), desc.rend())) << ::testing::PrintToString(desc);
    EXPECT_EQ(page.eval(header("Model") + ".hasAttribute('aria-sort')"), false);

    // Search: typed into the box, key by key.
    page.click("document.getElementById('q')");
    page.type_text("llama-tiny");
    EXPECT_EQ(page.eval("document.getElementById('q').value"), "llama-tiny");
    EXPECT_EQ(strings(page.eval(kVisibleRows)), std::vector<std::string>{"test-org/llama-tiny"});
    EXPECT_EQ(page.eval("document.getElementById('shown').textContent"), "Showing 1 of 3 rows");
    for (size_t i = 0; i < std::string("llama-tiny").size(); ++i) page.press("Backspace", 8);
    EXPECT_EQ(strings(page.eval(kVisibleRows)).size(), 3u);

    // Execution filter, chosen with the keyboard: "all" → "completed" → "crashed".
    page.eval("document.getElementById('f-execution').focus()");
    page.press("ArrowDown", 40);
    page.press("ArrowDown", 40);
    ASSERT_EQ(page.eval("document.getElementById('f-execution').value"), "crashed");
    EXPECT_EQ(strings(page.eval(kVisibleRows)), std::vector<std::string>{"test-org/crashes-in-load"});
    EXPECT_EQ(page.eval("document.getElementById('shown').textContent"), "Showing 1 of 3 rows");
    // Sorting keeps the filter: the hidden rows stay hidden.
    page.click(header("Model"));
    EXPECT_EQ(strings(page.eval(kVisibleRows)), std::vector<std::string>{"test-org/crashes-in-load"});

    // The screenshot: the filtered table in view, decoded by our own PNG decoder.
    page.eval("window.scrollTo(0, document.getElementById('chooser-section').getBoundingClientRect().top + "
              "window.scrollY - 8)");
    std::string png = page.screenshot_png();
    const char* dir_env = std::getenv("VLMCHECK_SCREENSHOT_DIR");
    std::string saved = (dir_env && *dir_env ? std::string(dir_env) : fs::current_path().string()) +
                        "/test_cli_browser_results.png";
    vlm::test::write_file(saved, png);
    std::printf("screenshot: %s (%zu bytes)\n", saved.c_str(), png.size());
    vlm::DecodedImage img = vlm::decode_image_bytes(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(png.data()), png.size()), "screenshot");
    ASSERT_EQ(img.format, vlm::ImageFormat::kPng);
    ASSERT_EQ(img.image.width(), 1280);
    ASSERT_EQ(img.image.height(), 900);
    double sum = 0, sum2 = 0;
    std::set<uint32_t> colours;
    size_t crashed_bg = 0;  // .u-not_evaluated{background:#eaeef2}: the one visible row
    const auto& im = img.image;
    for (int y = 0; y < im.height(); ++y)
      for (int x = 0; x < im.width(); ++x) {
        const uint8_t* p = im.row(y) + x * im.channels();
        double luma = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        sum += luma;
        sum2 += luma * luma;
        colours.insert(uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]);
        crashed_bg += p[0] == 0xea && p[1] == 0xee && p[2] == 0xf2;
      }
    double n = static_cast<double>(im.width()) * im.height();
    double stddev = std::sqrt(std::max(0.0, sum2 / n - (sum / n) * (sum / n)));
    EXPECT_GT(stddev, 8.0) << "screenshot looks blank";
    EXPECT_GT(colours.size(), 32u) << "screenshot has almost no distinct colours";
    EXPECT_GT(crashed_bg, 500u) << "the crashed row's background is not on screen";
  } catch (const std::exception& e) {
    FAIL() << e.what() << "\nchromium log tail:\n" << browser.log_tail();
  }
}

TEST_F(BrowserReport, HostileModelOutputStaysText) {
  // The same run's records with HTML in one model's output, re-rendered by `vlmcheck report`.
  const std::string hostile =
      "Title: <script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\"></pre><b>bold</b> & co";
  std::string dir = *dir_ / "hostile";
  fs::create_directories(dir);
  {
    std::ofstream out(dir + "/results.jsonl");
    for (auto l : read_jsonl(out_ + "/results.jsonl")) {
      if (l.value("model", "") == "test-org/qwen2-tiny") l["generated_text"] = hostile;
      out << l.dump() << "\n";
    }
  }
  auto r = run_vlmcheck({"report", "--from", dir + "/results.jsonl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  TempDir profile;
  Browser browser(chromium_, profile / "profile", profile / "chromium.log");
  try {
    Page page(browser, 1280, 900);
    page.open("file://" + dir + "/reports/results.html");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let a (wrongly) live onerror fire
    EXPECT_EQ(page.eval("typeof window.__pwned"), "undefined");
    EXPECT_EQ(page.eval("document.scripts.length"), 1);  // ours only
    EXPECT_EQ(page.eval("document.querySelectorAll('img').length"), 1);  // the preview only
    EXPECT_EQ(page.eval("document.querySelector('#model-test-org-qwen2-tiny pre.output').textContent"), hostile);
    // The table still works on this page.
    EXPECT_EQ(page.eval("document.getElementById('shown').textContent"), "Showing 3 of 3 rows");
  } catch (const std::exception& e) {
    FAIL() << e.what() << "\nchromium log tail:\n" << browser.log_tail();
  }
}

}  // namespace
