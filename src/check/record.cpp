// results.jsonl reading and the flushed line writer.
#include "check/record.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"

namespace vlm::check {

RunRecords read_results_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(ErrorKind::kNotFound, "{}: cannot open results file", path);
  RunRecords run;
  std::string line;
  size_t lineno = 0;
  bool have_header = false;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    Json j = parse_json(line, fmt::format("{} line {}", path, lineno));
    std::string type = j.is_object() && j.contains("_type") && j["_type"].is_string() ? j["_type"].get<std::string>()
                                                                                        : "";
    if (!have_header) {
      VLM_CHECK(type == "metadata", ErrorKind::kFormat, "{} line {}: expected the \"metadata\" header first, got \"{}\"",
                path, lineno, type);
      decode(j, run.header);
      have_header = true;
    } else if (type == "result") {
      ModelResult r;
      decode(j, r);
      VLM_CHECK(!r.model.empty(), ErrorKind::kFormat, "{} line {}: result without \"model\"", path, lineno);
      // A resumed run may re-run a model: the latest line for a model wins, in its original place.
      auto it = std::find_if(run.results.begin(), run.results.end(), [&](auto& x) { return x.model == r.model; });
      if (it != run.results.end()) *it = std::move(r);
      else run.results.push_back(std::move(r));
    } else if (type == "rerun") {
      std::string model = j.value("model", "");
      auto it = std::find_if(run.results.begin(), run.results.end(), [&](auto& x) { return x.model == model; });
      VLM_CHECK(it != run.results.end(), ErrorKind::kFormat, "{} line {}: rerun for unknown model \"{}\"", path,
                lineno, model);
      it->rerun = j.contains("evidence") ? j["evidence"] : Json();
    } else if (type == "run_end") {
      RunFooter f;
      decode(j, f);
      run.footer = f;
    } else if (type == "metadata") {
      // A resumed run appends a new header: the latest header describes the run.
      decode(j, run.header);
      run.footer.reset();
    } else {
      throw_error(ErrorKind::kFormat, "{} line {}: unknown record type \"{}\"", path, lineno, type);
    }
  }
  VLM_CHECK(have_header, ErrorKind::kFormat, "{}: empty results file (no metadata header)", path);
  return run;
}

JsonlWriter::JsonlWriter(const std::string& path, bool truncate) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND), 0644);
  if (fd_ < 0) throw_error(ErrorKind::kIo, "{}: cannot open for writing: {}", path, std::strerror(errno));
}

JsonlWriter::~JsonlWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonlWriter::write(const Json& line) {
  std::string text = line.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw_error(ErrorKind::kIo, "{}: write failed: {}", path_, std::strerror(errno));
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::fdatasync(fd_);
}

std::string now_local_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
  std::string s = buf;  // +0100 → +01:00
  if (s.size() >= 5) s = s.substr(0, s.size() - 2) + ":" + s.substr(s.size() - 2);
  return s;
}

}  // namespace vlm::check
