// A small safetensors writer for tests: builds files the way the Python writers (safetensors, MLX)
// do, with switches for MLX's quirks (unpadded header, data in non-header order) and raw builders
// for deliberately broken files. Independent of src/io, so the reader is checked against it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlm::test {

struct StTensor {
  std::string name;
  std::string dtype;  // safetensors spelling: "F32", "BF16", "U32" ...
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian bytes
};

inline size_t st_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  return 1;
}

// Deterministic pseudo-random bytes for a tensor of `shape` in `dtype`.
inline StTensor st_random(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
                          uint32_t seed) {
  size_t n = st_dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  std::mt19937 rng(seed);
  std::string bytes(n, '\0');
  for (auto& c : bytes) c = static_cast<char>(rng() & 0xff);
  return StTensor{name, dtype, std::move(shape), std::move(bytes)};
}

// 8-byte little-endian length, then the header text, then the data bytes.
inline std::string st_raw(const std::string& header, const std::string& data, uint64_t header_len_override = 0) {
  uint64_t n = header_len_override ? header_len_override : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

struct StOptions {
  bool pad_header_to_8 = true;  // the Python safetensors writer pads with spaces; MLX does not
  bool reverse_data = false;    // lay data out in reverse header order (MLX writes hash order)
  nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
};

inline std::string st_build(const std::vector<StTensor>& tensors, const StOptions& opt = {}) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (opt.reverse_data) std::reverse(order.begin(), order.end());
  std::vector<std::pair<uint64_t, uint64_t>> offs(tensors.size());
  std::string data;
  for (size_t i : order) {
    offs[i] = {data.size(), data.size() + tensors[i].data.size()};
    data += tensors[i].data;
  }
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!opt.metadata.empty()) h["__metadata__"] = opt.metadata;
  for (size_t i = 0; i < tensors.size(); ++i)
    h[tensors[i].name] = {{"dtype", tensors[i].dtype},
                          {"shape", tensors[i].shape},
                          {"data_offsets", {offs[i].first, offs[i].second}}};
  std::string header = h.dump();
  if (opt.pad_header_to_8)
    while ((8 + header.size()) % 8 != 0) header += ' ';
  return st_raw(header, data);
}

}  // namespace vlm::test
