// Tensor: shape, strides, dtype, device and storage that is either owned (allocated through the
// MemoryTracker) or borrowed (a view into memory someone else keeps alive, e.g. an mmap'd
// safetensors file). Shapes are in PyTorch order: the last dimension is contiguous in memory for
// a row-major tensor, e.g. a Linear weight is [out, in].
//
// Tensors are cheap handles: copying one shares the storage. Eager execution only: there is no
// graph; kernels read and write the storage directly.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/memory.h"

namespace vlm {

enum class Device : uint8_t { kCpu, kCuda };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

// The bytes behind a tensor. `keepalive` owns them (a HostBuffer, a mapping, a device buffer) or
// is null for memory that outlives every tensor pointing to it (tests only).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::kCpu;
  bool owned = false;  // true if allocated for this storage (counted by the tracker)
  std::shared_ptr<void> keepalive;
};

class Tensor {
 public:
  Tensor() = default;

  // A new owned, contiguous, uninitialised tensor.
  static Tensor empty(const Shape& shape, DType dtype, MemCategory category = MemCategory::kScratch,
                      Device device = Device::kCpu);
  // A new owned, contiguous tensor filled with zero bytes.
  static Tensor zeros(const Shape& shape, DType dtype, MemCategory category = MemCategory::kScratch);
  // A contiguous view of memory kept alive by `keepalive` (may be null: caller guarantees lifetime).
  static Tensor borrow(const void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keepalive,
                       Device device = Device::kCpu);
  // f32 tensor from values (tests, small constants).
  static Tensor from_f32(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }  // in elements
  int64_t dim(int i) const;                           // negative i counts from the end
  int ndim() const { return static_cast<int>(shape_.size()); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::kCpu; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  bool is_owned() const { return storage_ && storage_->owned; }

  void* raw() const;  // pointer to the first element
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }

  // Same storage, new shape (must be contiguous and have the same numel).
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) of the first dimension, as a view.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Element i of the first dimension, as a view with that dimension removed.
  Tensor operator[](int64_t i) const;
  // A contiguous owned copy converted to f32 (any float dtype in).
  Tensor to_f32() const;
  // A contiguous owned copy in `dtype` (from f32/f16/bf16).
  Tensor to(DType dtype, MemCategory category = MemCategory::kScratch) const;
  // Deep copy, contiguous.
  Tensor clone(MemCategory category = MemCategory::kScratch) const;

  std::string describe() const;  // "bf16[2, 3] cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::kF32;
};

Shape contiguous_strides(const Shape& shape);

}  // namespace vlm
