// bench_load: lazy (mmap) vs eager (read into owned memory) loading of a synthetic ~1 GB sharded
// safetensors checkpoint. For each mode: time until Checkpoint::open returns (time to ready), the
// time to then touch every weight byte, and peak RSS; beside them the plain sequential read rate of
// the same files, so the load numbers can be read against what the disk (or page cache) delivers.
//
// Every measurement runs in a fresh forked child (its own VmHWM, reset through clear_refs), with
// the page cache either evicted for the files (posix_fadvise DONTNEED after fsync, verified with
// mincore, plus an attempt at drop_caches) -- "cold" -- or pre-read -- "warm". The residency
// actually achieved is printed with each sample: cold is only claimed when it was measured.
//
//   bench_load [--size-mb 1024] [--reps 3] [--dir /tmp]
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/json.h"
#include "core/memory.h"
#include "io/safetensors.h"

using namespace vlm;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---- checkpoint writer ---------------------------------------------------------------------------
// Shards of bf16 [rows, 2048] tensors filled with xorshift noise (incompressible, never zero pages).
struct Synthetic {
  std::string dir;
  std::vector<std::string> files;
  size_t bytes = 0;
};

void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w <= 0) throw std::runtime_error("write failed: " + path);
    c += w;
    n -= static_cast<size_t>(w);
  }
}

Synthetic write_checkpoint(const std::string& dir, size_t total_mb) {
  Synthetic s;
  s.dir = dir;
  const int64_t cols = 2048, rows = 4096;  // 16 MiB per tensor
  const size_t tensor_bytes = static_cast<size_t>(rows * cols * 2);
  const size_t n_tensors = std::max<size_t>(1, total_mb * 1024 * 1024 / tensor_bytes);
  const size_t n_shards = 2;
  Json index = {{"metadata", {{"total_size", n_tensors * tensor_bytes}}}, {"weight_map", Json::object()}};
  std::vector<uint8_t> buf(tensor_bytes);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (size_t sh = 0; sh < n_shards; ++sh) {
    std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", sh + 1, n_shards);
    std::string path = dir + "/" + name;
    Json header = Json::object();
    size_t off = 0;
    std::vector<std::string> names;
    for (size_t t = sh; t < n_tensors; t += n_shards) {
      std::string tn = fmt::format("model.layers.{}.mlp.weight", t);
      header[tn] = {{"dtype", "BF16"}, {"shape", {rows, cols}}, {"data_offsets", {off, off + tensor_bytes}}};
      index["weight_map"][tn] = name;
      names.push_back(tn);
      off += tensor_bytes;
    }
    std::string h = header.dump();
    while ((8 + h.size()) % 8) h += ' ';
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("cannot create " + path);
    uint64_t hl = h.size();
    write_all(fd, &hl, 8, path);
    write_all(fd, h.data(), h.size(), path);
    for (size_t t = 0; t < names.size(); ++t) {
      auto* w = reinterpret_cast<uint64_t*>(buf.data());
      for (size_t i = 0; i < tensor_bytes / 8; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
      }
      write_all(fd, buf.data(), buf.size(), path);
    }
    ::fsync(fd);
    ::close(fd);
    s.files.push_back(path);
    s.bytes += 8 + h.size() + off;
  }
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2);
  return s;
}

// ---- page cache control ----------------------------------------------------------------------------
// Fraction of the files' pages resident in the page cache (mincore over a fresh mapping).
double resident_fraction(const Synthetic& s) {
  size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE)), resident = 0, total = 0;
  for (const auto& f : s.files) {
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st;
    ::fstat(fd, &st);
    size_t n = static_cast<size_t>(st.st_size);
    void* p = ::mmap(nullptr, n, PROT_READ, MAP_SHARED, fd, 0);
    std::vector<unsigned char> vec((n + page - 1) / page);
    ::mincore(p, n, vec.data());
    for (unsigned char v : vec) resident += v & 1;
    total += vec.size();
    ::munmap(p, n);
    ::close(fd);
  }
  return total ? static_cast<double>(resident) / static_cast<double>(total) : 0.0;
}

bool try_drop_caches() {
  ::sync();
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, "3", 1) == 1;
  ::close(fd);
  return ok;
}

void evict(const Synthetic& s) {
  for (const auto& f : s.files) {
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

void prewarm(const Synthetic& s) {
  std::vector<char> buf(16 << 20);
  for (const auto& f : s.files) {
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
    ::close(fd);
  }
}

// ---- measurements (run in a child) ---------------------------------------------------------------
struct Proc {
  int64_t hwm = 0, rss_anon = 0, rss_file = 0;
};
Proc read_proc() {
  Proc p;
  std::ifstream f("/proc/self/status");
  std::string line;
  auto kb = [](const std::string& l) { return std::atoll(l.c_str() + l.find(':') + 1) * 1024; };
  while (std::getline(f, line)) {
    if (line.starts_with("VmHWM:")) p.hwm = kb(line);
    if (line.starts_with("RssAnon:")) p.rss_anon = kb(line);
    if (line.starts_with("RssFile:")) p.rss_file = kb(line);
  }
  return p;
}
void reset_hwm() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Touches every byte (sums 64-bit words) so lazy pages are faulted in; returns the sum.
uint64_t touch_all(const Checkpoint& ck) {
  uint64_t sum = 0;
  for (const auto& name : ck.names()) {
    Tensor t = ck.get(name);
    const uint8_t* p = static_cast<const uint8_t*>(t.raw());
    size_t n = t.nbytes();
    uint64_t w;
    for (size_t i = 0; i + 8 <= n; i += 8) {
      std::memcpy(&w, p + i, 8);  // MLX data can be unaligned; memcpy compiles to a plain load
      sum += w;
    }
  }
  return sum;
}

Json measure_load(const Synthetic& s, LoadMode mode) {
  reset_hwm();
  Proc base = read_proc();
  auto t0 = Clock::now();
  Checkpoint ck = Checkpoint::open(s.dir, mode);
  double ready = seconds_since(t0);
  Proc after_open = read_proc();
  auto t1 = Clock::now();
  uint64_t sum = touch_all(ck);
  double touch = seconds_since(t1);
  Proc end = read_proc();
  MemorySnapshot mem = MemoryTracker::instance().snapshot(MemDevice::kHost);
  return {{"mode", mode == LoadMode::kLazy ? "lazy" : "eager"},
          {"ready_s", ready},
          {"touch_s", touch},
          {"total_s", ready + touch},
          {"peak_rss_after_open", after_open.hwm},
          {"peak_rss_after_touch", end.hwm},
          {"rss_anon_end", end.rss_anon},
          {"rss_file_end", end.rss_file},
          {"baseline_rss", base.rss_anon + base.rss_file},
          {"tracker_weights", mem.by_category[static_cast<int>(MemCategory::kWeights)]},
          {"tracker_mapped", mem.mapped},
          {"checksum", sum}};
}

Json measure_read(const Synthetic& s) {
  std::vector<char> buf(16 << 20);
  auto t0 = Clock::now();
  size_t total = 0;
  for (const auto& f : s.files) {
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    ssize_t r;
    while ((r = ::read(fd, buf.data(), buf.size())) > 0) total += static_cast<size_t>(r);
    ::close(fd);
  }
  double t = seconds_since(t0);
  return {{"mode", "read(2)"}, {"total_s", t}, {"bytes", total}, {"gb_per_s", static_cast<double>(total) / t / 1e9}};
}

// Runs fn in a forked child and returns its JSON (one line through a pipe).
template <typename Fn>
Json in_child(Fn&& fn) {
  int p[2];
  if (::pipe(p) != 0) throw std::runtime_error("pipe");
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    std::string out;
    try {
      out = fn().dump();
    } catch (const std::exception& e) {
      out = Json{{"error", e.what()}}.dump();
    }
    write_all(p[1], out.data(), out.size(), "pipe");
    ::close(p[1]);
    ::_exit(0);
  }
  ::close(p[1]);
  std::string text;
  char b[4096];
  ssize_t r;
  while ((r = ::read(p[0], b, sizeof(b))) > 0) text.append(b, static_cast<size_t>(r));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return Json::parse(text);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  size_t size_mb = 1024;
  int reps = 3;
  std::string base = "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--size-mb") size_mb = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--dir") base = argv[i + 1];
  }
  std::string tmpl = base + "/vlmcheck-bench-load-XXXXXX";
  std::vector<char> t(tmpl.begin(), tmpl.end());
  t.push_back('\0');
  if (!::mkdtemp(t.data())) {
    std::perror("mkdtemp");
    return 1;
  }
  std::string dir = t.data();
  int rc = 0;
  try {
    auto tw = Clock::now();
    Synthetic s = write_checkpoint(dir, size_mb);
    fmt::print("checkpoint: {} ({} shards, {:.3f} GB) written in {:.2f} s\n", dir, s.files.size(), s.bytes / 1e9,
               seconds_since(tw));
    bool drop_ok = try_drop_caches();
    evict(s);
    double cold_res = resident_fraction(s);
    fmt::print("page cache: drop_caches {}; after fadvise(DONTNEED) {:.1f}% of the files resident\n",
               drop_ok ? "accepted" : "refused", cold_res * 100);

    Json all = Json::array();
    for (const char* cache : {"cold", "warm"}) {
      for (const char* what : {"read", "lazy", "eager"}) {
        std::vector<double> ready, total, peak, anon, file;
        for (int r = 0; r < reps; ++r) {
          if (std::string(cache) == "cold") {
            try_drop_caches();
            evict(s);
          } else {
            prewarm(s);
          }
          double res = resident_fraction(s);
          Json j = in_child([&]() -> Json {
            if (std::string(what) == "read") return measure_read(s);
            return measure_load(s, std::string(what) == "lazy" ? LoadMode::kLazy : LoadMode::kEager);
          });
          if (j.contains("error")) throw std::runtime_error(j["error"].get<std::string>());
          j["cache"] = cache;
          j["resident_before"] = res;
          j["rep"] = r;
          fmt::print("sample {}\n", j.dump());
          all.push_back(j);
          total.push_back(j["total_s"].get<double>());
          if (j.contains("ready_s")) ready.push_back(j["ready_s"].get<double>());
          if (j.contains("peak_rss_after_touch")) {
            peak.push_back(j["peak_rss_after_touch"].get<double>());
            anon.push_back(j["rss_anon_end"].get<double>());
            file.push_back(j["rss_file_end"].get<double>());
          }
        }
        auto [mn, mx] = std::minmax_element(total.begin(), total.end());
        if (std::string(what) == "read") {
          fmt::print("{:5} {:6}: sequential read {:.2f} GB/s (median of {}; total {:.3f} s, spread {:.3f}-{:.3f})\n",
                     cache, what, s.bytes / median(total) / 1e9, reps, median(total), *mn, *mx);
        } else {
          fmt::print(
              "{:5} {:6}: ready {:.4f} s, ready+touch {:.3f} s (spread {:.3f}-{:.3f}), peak RSS {:.0f} MB "
              "(at end: anon {:.0f} MB, file-backed {:.0f} MB)\n",
              cache, what, median(ready), median(total), *mn, *mx, median(peak) / 1e6, median(anon) / 1e6,
              median(file) / 1e6);
        }
      }
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_load: {}\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return rc;
}
