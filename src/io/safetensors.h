// safetensors reading: single files and sharded checkpoints, lazy (mmap) or eager (read into
// tracked memory), with strict validation of untrusted files. Every error names the file and,
// where there is one, the tensor.
//
// File format: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
// then the data region; offsets are relative to the start of the data region. Files written by MLX
// are not 8-byte aligned and not in offset order: never assume either.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace vlm {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  size_t data_begin = 0;  // absolute byte offset in the file
  size_t nbytes = 0;
  std::string file;  // path of the file holding it
};

class SafetensorsFile {
 public:
  // Opens and validates `path`: header length within the file and at most 100 MB, valid JSON,
  // known dtypes, offsets inside the data region, end-begin == numel*dtype size, no overlaps.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path, LoadMode mode);

  const std::string& path() const;
  const std::vector<TensorInfo>& tensors() const;  // in header order
  const TensorInfo* find(const std::string& name) const;
  // A borrowed view of the tensor's bytes; keeps the file (mapping or buffer) alive.
  Tensor tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const;
  size_t file_size() const;
  const MappedFile& file() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// All weights of a model folder: `model.safetensors.index.json` (weight_map → shard files; every shard
// must exist and hold the tensors the map says), else every `*.safetensors` in the folder
// (`consolidated.safetensors` is ignored when other files exist, as mlx-vlm does).
class Checkpoint {
 public:
  static Checkpoint open(const std::string& folder, LoadMode mode);

  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws kNotFound naming the folder
  Tensor get(const std::string& name) const;              // borrowed view
  std::vector<std::string> names() const;                 // sorted
  size_t total_bytes() const;                              // sum of tensor bytes
  const std::string& folder() const { return folder_; }
  LoadMode mode() const { return mode_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  // Locks every file's pages in RAM (mlock); returns false with the reason if the OS refused.
  bool lock_in_memory(std::string* why);

 private:
  std::string folder_;
  LoadMode mode_ = LoadMode::kLazy;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> index_;  // name -> (file index, info)
};

}  // namespace vlm
