// Small pieces shared by the vision towers (internal to src/models/vision/): config reading with the defaults of
// the transformers config classes, and f32 scratch buffers on the tower's device.
#pragma once

#include <cstdint>
#include <string>

#include "core/json.h"
#include "core/tensor.h"
#include "kernels/ops.h"

namespace vlm::vision {

// A positive integer field, `fallback` when absent or null (the config class default); Error(kFormat) naming
// `what` and the key when present but not a positive integer.
int64_t config_int(const Json& cfg, const char* key, int64_t fallback, const std::string& what);
// The first of `keys` present (e.g. {"in_channels", "in_chans"}: transformers 5 and Hub spellings).
int64_t config_int_any(const Json& cfg, std::initializer_list<const char*> keys, int64_t fallback,
                       const std::string& what);
double config_number(const Json& cfg, const char* key, double fallback, const std::string& what);

// An owned f32 scratch tensor [rows, cols] on `device` (ops::empty) and its data pointer (device memory off the
// CPU).
struct Buffer {
  Tensor t;
  float* p = nullptr;
  Buffer() = default;
  Buffer(int64_t rows, int64_t cols, Device device)
      : t(ops::empty({rows, cols}, DType::kF32, MemCategory::kScratch, device)), p(t.data<float>()) {}
};

}  // namespace vlm::vision
