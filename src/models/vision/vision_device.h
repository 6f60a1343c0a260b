// Vision models on a device (CPU or CUDA): the all-or-nothing weight move behind VisionModel::to_device, and the
// few device-neutral helpers the towers' and families' encode() share — activations allocated on the model's
// device, uploads / downloads, row gathers as one device op. Every helper runs on whichever device its tensors are
// on (ops.h "devices"); on the CPU they reduce to plain allocations and copies.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "kernels/ops.h"

namespace vlm::vision {

// The weights of one vision model (towers, projector) and the device fields that say where they are. commit()
// refuses an unusable device with the backend's reason (ops::DeviceScope) before copying anything, then copies
// every entry to the device and only after all copies succeeded replaces the entries and sets the fields: a
// failed upload (out of device memory) leaves the model whole on its old device. Dense weights keep their stored
// dtype, quantized ones their packed codes + scales + biases (ops::to_device).
class DeviceMove {
 public:
  void add(ops::Weight& w) { weights_.push_back(&w); }
  void add(Tensor& t) { tensors_.push_back(&t); }  // undefined tensors (absent biases) stay undefined
  void add_device(Device& field) { devices_.push_back(&field); }
  void commit(Device device);

 private:
  std::vector<ops::Weight*> weights_;
  std::vector<Tensor*> tensors_;
  std::vector<Device*> devices_;
};

// An uninitialised f32 activation tensor [rows, cols] on `device` (MemCategory::kScratch).
Tensor scratch(int64_t rows, int64_t cols, Device device);
// `t` on `device` as an activation (t itself when already there).
Tensor upload(const Tensor& t, Device device);
// A host copy of `t` (t itself on the host); waits for the device's queued work.
Tensor to_host(const Tensor& t);
// A copy of t [rows, cols] f32 on t's device (clone() is host-only).
Tensor clone(const Tensor& t);
// out[i, :] = x[ids[i], :] for x [rows, cols] f32 on the current device (an ops::embedding over x as its table:
// one launch on CUDA, exact copies). `ids` is a host array, as every op's index arrays.
void gather_rows(const Tensor& x, const std::vector<int32_t>& ids, float* out);
// Whether `w` is dense f32 (device attention may then stay exact f32; see ops::AttentionMask::bf16_matmul).
bool is_f32(const ops::Weight& w);

}  // namespace vlm::vision
