// /proc and uname probes; every probe is best-effort and reports "unavailable" instead of failing.
#include "check/system_info.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <exiv2/exiv2.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "check/text_util.h"
#include "core/build_info.h"
#include "kernels/backend.h"

namespace vlm::check {
namespace {

std::string read_first_match(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (starts_with(line, key)) {
      auto colon = line.find_first_of(":=", key.size());
      if (colon != std::string::npos) {
        std::string v = trim(line.substr(colon + 1));
        if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
        return v;
      }
    }
  }
  return "";
}

double meminfo_gib(const std::string& key) {
  std::string v = read_first_match("/proc/meminfo", key + ":");
  return v.empty() ? -1.0 : std::atof(v.c_str()) / (1024.0 * 1024.0);  // kB → GiB
}

int physical_cores() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, phys, core;
  std::set<std::string> ids;
  while (std::getline(in, line)) {
    if (starts_with(line, "physical id")) phys = trim(line.substr(line.find(':') + 1));
    if (starts_with(line, "core id")) {
      core = trim(line.substr(line.find(':') + 1));
      ids.insert(phys + ":" + core);
    }
  }
  return static_cast<int>(ids.size());
}

}  // namespace

Json system_characteristics() {
  Json s = Json::object();
  utsname u{};
  if (::uname(&u) == 0) {
    s["OS"] = fmt::format("{} {}", u.sysname, u.release);
    s["Architecture"] = u.machine;
  }
  std::string os = read_first_match("/etc/os-release", "PRETTY_NAME");
  if (!os.empty()) s["OS Release"] = os;
  std::string cpu = read_first_match("/proc/cpuinfo", "model name");
  s["CPU"] = cpu.empty() ? "unavailable" : cpu;
  s["CPU Cores (Physical/Logical)"] = fmt::format("{}/{}", physical_cores(), ::sysconf(_SC_NPROCESSORS_ONLN));
  double total = meminfo_gib("MemTotal"), avail = meminfo_gib("MemAvailable");
  double swap_total = meminfo_gib("SwapTotal"), swap_free = meminfo_gib("SwapFree");
  if (total >= 0) s["RAM"] = fmt::format("{:.1f} GB", total);
  if (avail >= 0) s["Available Memory (run start)"] = fmt::format("{:.1f} GB", avail);
  if (swap_total >= 0) s["Swap Used (run start)"] = fmt::format("{:.1f} GB of {:.1f} GB", swap_total - swap_free, swap_total);
  s["Compute Backend"] = cuda_compiled() ? "cpu + cuda (compiled)" : "cpu";
  return s;
}

Json library_versions() {
  return Json{{"vlmcheck", VLMCHECK_VERSION},
              {"exiv2", Exiv2::versionString()},
              {"fmt", fmt::format("{}.{}.{}", FMT_VERSION / 10000, FMT_VERSION / 100 % 100, FMT_VERSION % 100)},
              {"nlohmann_json", fmt::format("{}.{}.{}", NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR,
                                            NLOHMANN_JSON_VERSION_PATCH)},
              {"tomlplusplus", fmt::format("{}.{}.{}", TOML_LIB_MAJOR, TOML_LIB_MINOR, TOML_LIB_PATCH)}};
}

Json producer_record() {
  const char* sha = std::getenv("GITHUB_SHA");
  return Json{{"name", "vlmcheck"},
              {"version", VLMCHECK_VERSION},
              {"build_type", VLMCHECK_BUILD_TYPE},
              {"compiler", VLMCHECK_COMPILER},
              {"cuda", cuda_compiled()},
              {"git_revision", sha ? sha : ""}};
}

}  // namespace vlm::check
