// Writing safetensors files (the same format the reader validates): tools, benchmarks' synthetic
// checkpoints, and converted/quantized outputs. Header keys are written in insertion order, data is
// 8-byte aligned like the Python writer (the header is padded with spaces).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vlm {

class SafetensorsWriter {
 public:
  // Adds a tensor (contiguous host tensor; the bytes are copied only at write()).
  void add(const std::string& name, const Tensor& t);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes the file; throws Error(kIo) naming the path on failure.
  void write(const std::string& path) const;
  size_t data_bytes() const;

 private:
  std::vector<std::pair<std::string, Tensor>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The safetensors dtype spelling of a DType ("F32", "BF16", "U32", ...).
const char* dtype_safetensors_name(DType t);

}  // namespace vlm
