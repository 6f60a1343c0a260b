// MappedFile: a read-only view of a whole file, either mmap'd (lazy: the kernel pages bytes in on
// first touch) or read into an owned, tracked buffer (eager). Both expose the same span, so readers
// (safetensors, images) do not care which mode produced it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/memory.h"

namespace vlm {

enum class LoadMode { kLazy, kEager };

class MappedFile {
 public:
  // Opens `path`; throws Error(kNotFound / kIo) naming the path. In eager mode the byte at file offset
  // `align_at` lands on a 64-byte boundary of the buffer (safetensors passes its data-region start, so
  // tensors written unpadded by MLX are still naturally aligned in memory).
  static std::shared_ptr<MappedFile> open(const std::string& path, LoadMode mode,
                                          MemCategory category = MemCategory::kWeights, size_t align_at = 0);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  LoadMode mode() const { return mode_; }

  // Advise the kernel that [offset, offset+len) will be read soon (lazy mode; no-op when eager).
  void prefetch(size_t offset, size_t len) const;
  // Lock the pages in RAM (mlock). Returns false, with errno text in *why, if the OS refuses.
  bool lock(std::string* why);

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  LoadMode mode_ = LoadMode::kLazy;
  MemCategory category_ = MemCategory::kWeights;
  bool locked_ = false;
  HostBuffer owned_{nullptr, HostDeleter{0, MemCategory::kOther}};
};

// Reads a whole (small) file into a string; throws naming the path. `max_bytes` bounds the read.
std::string read_file_to_string(const std::string& path, size_t max_bytes = size_t{64} << 20);

}  // namespace vlm
