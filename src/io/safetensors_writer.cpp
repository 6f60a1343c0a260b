// SafetensorsWriter: JSON header (ordered) + raw little-endian data.
#include "io/safetensors_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/json.h"

namespace vlm {

const char* dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF64: return "F64";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kI16: return "I16";
    case DType::kU16: return "U16";
    case DType::kI32: return "I32";
    case DType::kU32: return "U32";
    case DType::kI64: return "I64";
    case DType::kU64: return "U64";
    case DType::kBool: return "BOOL";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF8E5M2: return "F8_E5M2";
  }
  return "?";
}

void SafetensorsWriter::add(const std::string& name, const Tensor& t) {
  VLM_CHECK(t.defined() && t.device() == Device::kCpu && t.is_contiguous(), ErrorKind::kInvalidArgument,
            "safetensors writer: tensor {} must be a contiguous host tensor", name);
  for (const auto& [n, _] : tensors_)
    VLM_CHECK(n != name, ErrorKind::kInvalidArgument, "safetensors writer: tensor {} added twice", name);
  tensors_.emplace_back(name, t);
}

size_t SafetensorsWriter::data_bytes() const {
  size_t n = 0;
  for (const auto& [_, t] : tensors_) n += t.nbytes();
  return n;
}

void SafetensorsWriter::write(const std::string& path) const {
  Json header = Json::object();
  if (!metadata_.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = meta;
  }
  size_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    header[name] = {{"dtype", dtype_safetensors_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw_error(ErrorKind::kIo, "{}: cannot create: {}", path, std::strerror(errno));
  uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto& [name, t] : tensors_) {
    if (!ok) break;
    ok = std::fwrite(t.raw(), 1, t.nbytes(), f) == t.nbytes();
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) throw_error(ErrorKind::kIo, "{}: write failed: {}", path, std::strerror(errno));
}

}  // namespace vlm
