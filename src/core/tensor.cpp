// Tensor construction, views and dtype conversion (host only; device copies live in kernels/).
#include "core/tensor.h"

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"

namespace vlm {

const char* device_name(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

namespace {
void check_shape(const Shape& shape) {
  for (int64_t d : shape)
    if (d < 0) throw_error(ErrorKind::kInvalidArgument, "tensor shape {} has a negative dimension", shape_str(shape));
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, MemCategory category, Device device) {
  check_shape(shape);
  if (device != Device::kCpu)
    throw_error(ErrorKind::kUnsupported, "Tensor::empty on {}: device tensors are created by the backend",
                device_name(device));
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  size_t bytes = t.nbytes();
  auto buf = std::make_shared<HostBuffer>(make_host_buffer(bytes, category));
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = buf->get();
  t.storage_->bytes = bytes;
  t.storage_->owned = true;
  t.storage_->keepalive = buf;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, MemCategory category) {
  Tensor t = empty(shape, dtype, category);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::borrow(const void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keepalive,
                      Device device) {
  check_shape(shape);
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = const_cast<void*>(data);
  t.storage_->bytes = t.nbytes();
  t.storage_->device = device;
  t.storage_->keepalive = std::move(keepalive);
  return t;
}

Tensor Tensor::from_f32(const Shape& shape, const std::vector<float>& values) {
  Tensor t = empty(shape, DType::kF32);
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw_error(ErrorKind::kInvalidArgument, "from_f32: {} values for shape {}", values.size(), shape_str(shape));
  std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  if (i < 0 || i >= n) throw_error(ErrorKind::kInvalidArgument, "dim({}) of a {}-d tensor", i, n);
  return shape_[i];
}

// strides_ == contiguous_strides(shape_), without building that vector (every op's weight check calls this).
bool Tensor::is_contiguous() const {
  if (strides_.size() != shape_.size()) return false;
  int64_t acc = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (strides_[i] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

void* Tensor::raw() const {
  if (!storage_) throw_error(ErrorKind::kInternal, "access to an undefined tensor");
  return static_cast<char*>(storage_->data) + offset_bytes_;
}

Tensor Tensor::reshape(const Shape& shape) const {
  check_shape(shape);
  if (!is_contiguous()) throw_error(ErrorKind::kInvalidArgument, "reshape of a non-contiguous tensor {}", describe());
  if (shape_numel(shape) != numel())
    throw_error(ErrorKind::kInvalidArgument, "reshape {} -> {}: element counts differ", shape_str(shape_),
                shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  if (ndim() == 0 || begin < 0 || end < begin || end > shape_[0])
    throw_error(ErrorKind::kInvalidArgument, "slice_rows({}, {}) of {}", begin, end, describe());
  Tensor t = *this;
  t.offset_bytes_ += static_cast<size_t>(begin * strides_[0]) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::operator[](int64_t i) const {
  Tensor t = slice_rows(i, i + 1);
  t.shape_.erase(t.shape_.begin());
  t.strides_.erase(t.strides_.begin());
  return t;
}

Tensor Tensor::to_f32() const { return to(DType::kF32); }

Tensor Tensor::to(DType dtype, MemCategory category) const {
  if (device() != Device::kCpu) throw_error(ErrorKind::kUnsupported, "Tensor::to on {}", describe());
  if (!is_contiguous()) throw_error(ErrorKind::kUnsupported, "Tensor::to on non-contiguous {}", describe());
  Tensor out = empty(shape_, dtype, category);
  if (dtype == dtype_) {
    std::memcpy(out.raw(), raw(), nbytes());
  } else if (dtype == DType::kF32) {
    convert_to_f32(dtype_, raw(), out.data<float>(), static_cast<size_t>(numel()));
  } else {
    Tensor f = dtype_ == DType::kF32 ? *this : to_f32();
    convert_from_f32(f.data<float>(), dtype, out.raw(), static_cast<size_t>(numel()));
  }
  return out;
}

Tensor Tensor::clone(MemCategory category) const { return to(dtype_, category); }

std::string Tensor::describe() const {
  return fmt::format("{}{} {}", dtype_name(dtype_), shape_str(shape_), device_name(device()));
}

}  // namespace vlm
