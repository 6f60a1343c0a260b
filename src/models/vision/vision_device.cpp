// DeviceMove (all-or-nothing weight moves) and the device-neutral activation helpers of the vision models.
#include "models/vision/vision_device.h"

#include "core/error.h"

namespace vlm::vision {

void DeviceMove::commit(Device device) {
  // Refuses with the backend's reason (e.g. "built without CUDA") before anything is copied.
  { ops::DeviceScope probe(device); }
  std::vector<ops::Weight> weights;
  std::vector<Tensor> tensors;
  weights.reserve(weights_.size());
  tensors.reserve(tensors_.size());
  for (const ops::Weight* w : weights_) weights.push_back(ops::to_device(*w, device));
  for (const Tensor* t : tensors_) tensors.push_back(ops::to_device(*t, device, MemCategory::kWeights));
  for (size_t i = 0; i < weights_.size(); ++i) *weights_[i] = std::move(weights[i]);
  for (size_t i = 0; i < tensors_.size(); ++i) *tensors_[i] = std::move(tensors[i]);
  for (Device* d : devices_) *d = device;
}

Tensor scratch(int64_t rows, int64_t cols, Device device) {
  return ops::empty({rows, cols}, DType::kF32, MemCategory::kScratch, device);
}

Tensor upload(const Tensor& t, Device device) { return ops::to_device(t, device, MemCategory::kScratch); }

Tensor to_host(const Tensor& t) { return ops::to_device(t, Device::kCpu, MemCategory::kScratch); }

Tensor clone(const Tensor& t) {
  Tensor out = ops::empty(t.shape(), t.dtype(), MemCategory::kScratch, t.device());
  ops::copy(out.raw(), t.device(), t.raw(), t.device(), t.nbytes());
  return out;
}

void gather_rows(const Tensor& x, const std::vector<int32_t>& ids, float* out) {
  VLM_CHECK(x.ndim() == 2 && x.dtype() == DType::kF32 && x.is_contiguous(), ErrorKind::kInternal,
            "[vision] gather_rows needs a contiguous f32 matrix, got {}", x.describe());
  ops::Weight table;
  table.dense = x;
  ops::embedding(table, ids.data(), static_cast<int64_t>(ids.size()), 1.0f, out);
}

bool is_f32(const ops::Weight& w) { return !w.quantized && w.dense.defined() && w.dense.dtype() == DType::kF32; }

}  // namespace vlm::vision
