// Builds real Hugging Face cache trees for tests, laid out as huggingface_hub writes them:
//   <cache>/models--org--name/blobs/<hash>                 file contents
//   <cache>/models--org--name/snapshots/<sha>/<rel path>   relative symlinks to ../../blobs/<hash>
//   <cache>/models--org--name/refs/<name>                  the commit sha, no newline
#pragma once

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include <fmt/format.h>

#include "support/test_support.h"

namespace vlm::test {

class FakeRepo {
 public:
  FakeRepo(const std::string& cache_dir, const std::string& repo_id, const std::string& type = "models") {
    std::string id = repo_id;
    for (size_t p; (p = id.find('/')) != std::string::npos;) id.replace(p, 1, "--");
    path_ = cache_dir + "/" + type + "--" + id;
    std::filesystem::create_directories(path_ + "/blobs");
    std::filesystem::create_directories(path_ + "/refs");
    std::filesystem::create_directories(path_ + "/snapshots");
  }
  const std::string& path() const { return path_; }
  std::string snapshot(const std::string& sha) const { return path_ + "/snapshots/" + sha; }

  // Writes `content` as a blob and links snapshots/<sha>/<rel> to it (relative, as the hub does).
  std::string add_file(const std::string& sha, const std::string& rel, const std::string& content) {
    std::string blob = fmt::format("{:016x}{:08x}", std::hash<std::string>{}(content), content.size());
    std::string blob_path = path_ + "/blobs/" + blob;
    if (!std::filesystem::exists(blob_path)) write_file(blob_path, content);
    std::string link = snapshot(sha) + "/" + rel;
    std::filesystem::create_directories(std::filesystem::path(link).parent_path());
    std::string up = "../../";
    for (char c : rel)
      if (c == '/') up += "../";
    std::filesystem::create_symlink(up + "blobs/" + blob, link);
    return blob_path;
  }
  // A raw symlink in a snapshot, pointing wherever the test says.
  void add_link(const std::string& sha, const std::string& rel, const std::string& target) {
    std::string link = snapshot(sha) + "/" + rel;
    std::filesystem::create_directories(std::filesystem::path(link).parent_path());
    std::filesystem::create_symlink(target, link);
  }
  void set_ref(const std::string& name, const std::string& sha) { write_file(path_ + "/refs/" + name, sha); }

 private:
  std::string path_;
};

// A 40-hex commit sha built from a short tag, e.g. sha_of("a1") = "a1a1a1...".
inline std::string fake_sha(const std::string& hex_prefix, char fill = '0') {
  std::string s = hex_prefix;
  while (s.size() < 40) s += fill;
  return s.substr(0, 40);
}

}  // namespace vlm::test
