// The "devices" half of kernels/ops.h: the calling thread's current device and DeviceScope, device
// memory (ops::empty), copies (copy, copy_2d), uploads (to_device for tensors and weights) and the
// device check every op makes on its weights. On a CPU-only build (the stub backend) DeviceScope(kCuda)
// and every CUDA allocation must refuse with the backend's reason; where a GPU is usable, the round
// trips and one op run on it and are compared with the CPU (those cases skip elsewhere).
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/memory.h"
#include "core/quantize.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"

using namespace vlm;

namespace {

bool gpu() { return ops::cuda::available(); }

Tensor random_f32(const Shape& shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = u(rng);
  return Tensor::from_f32(shape, v);
}

std::vector<uint8_t> bytes_of(const Tensor& host) {
  const auto* p = static_cast<const uint8_t*>(host.raw());
  return {p, p + host.nbytes()};
}

// A host copy of a tensor on any device.
Tensor to_host(const Tensor& t) { return ops::to_device(t, Device::kCpu, MemCategory::kScratch); }

TEST(KernelDevices, TheDefaultDeviceIsTheCpuAndACpuScopeRestoresIt) {
  EXPECT_EQ(ops::current_device(), Device::kCpu);
  {
    ops::DeviceScope outer(Device::kCpu);
    EXPECT_EQ(ops::current_device(), Device::kCpu);
    {
      ops::DeviceScope inner(Device::kCpu);
      EXPECT_EQ(ops::current_device(), Device::kCpu);
    }
    EXPECT_EQ(ops::current_device(), Device::kCpu);
  }
  EXPECT_EQ(ops::current_device(), Device::kCpu);
}

TEST(KernelDevices, ACudaScopeWithoutAGpuRefusesWithTheBackendsReasonAndChangesNothing) {
  if (gpu()) GTEST_SKIP() << "a CUDA device is usable here";
  try {
    ops::DeviceScope s(Device::kCuda);
    FAIL() << "DeviceScope(kCuda) did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find(cuda_unavailable_reason()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ops::current_device(), Device::kCpu);
  EXPECT_FALSE(cuda_unavailable_reason().empty());
  // Allocation and uploads refuse the same way.
  try {
    ops::empty({4}, DType::kF32, MemCategory::kScratch, Device::kCuda);
    FAIL() << "ops::empty on cuda did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  }
  EXPECT_THROW(ops::to_device(Tensor::from_f32({2}, {1, 2}), Device::kCuda), Error);
}

TEST(KernelDevices, ACudaScopeOnAGpuSwitchesOnlyThisThread) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  {
    ops::DeviceScope s(Device::kCuda);
    EXPECT_EQ(ops::current_device(), Device::kCuda);
    Device other = Device::kCuda;
    std::thread([&] { other = ops::current_device(); }).join();
    EXPECT_EQ(other, Device::kCpu);  // thread-local
    {
      ops::DeviceScope back(Device::kCpu);
      EXPECT_EQ(ops::current_device(), Device::kCpu);
    }
    EXPECT_EQ(ops::current_device(), Device::kCuda);
  }
  EXPECT_EQ(ops::current_device(), Device::kCpu);
}

TEST(KernelDevices, EmptyOnTheHostIsAContiguousTrackedTensor) {
  const int kv = static_cast<int>(MemCategory::kKvCache);
  const int64_t before = MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[kv];
  {
    Tensor t = ops::empty({3, 5}, DType::kBF16, MemCategory::kKvCache, Device::kCpu);
    EXPECT_EQ(t.shape(), (Shape{3, 5}));
    EXPECT_EQ(t.dtype(), DType::kBF16);
    EXPECT_EQ(t.device(), Device::kCpu);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.nbytes(), 30u);
    std::memset(t.raw(), 0x5a, t.nbytes());  // writable host memory
    EXPECT_GE(MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[kv] - before, 30);
  }
  EXPECT_EQ(MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[kv], before);
}

TEST(KernelDevices, HostCopiesMoveExactlyTheBytesAsked) {
  std::vector<uint8_t> src(100), dst(100, 0xee);
  std::iota(src.begin(), src.end(), 0);
  ops::copy(dst.data() + 10, Device::kCpu, src.data() + 20, Device::kCpu, 50);
  for (size_t i = 0; i < dst.size(); ++i) {
    const uint8_t want = (i >= 10 && i < 60) ? static_cast<uint8_t>(i + 10) : 0xee;
    EXPECT_EQ(dst[i], want) << i;
  }
  ops::copy(nullptr, Device::kCpu, nullptr, Device::kCpu, 0);  // nothing to do, nothing read
}

TEST(KernelDevices, Copy2dSplitsRowsByPitchAndLeavesTheGapsAlone) {
  // Columns [3, 7) of a fused [4, 10] f32 buffer into rows of pitch 6: the decoder's qkv / gate_up split.
  const size_t rows = 4, src_cols = 10, begin = 3, width = 4, dst_cols = 6;
  std::vector<float> src(rows * src_cols);
  std::iota(src.begin(), src.end(), 0.0f);
  std::vector<float> dst(rows * dst_cols, -1.0f);
  ops::copy_2d(dst.data(), dst_cols * sizeof(float), src.data() + begin, src_cols * sizeof(float),
               width * sizeof(float), rows);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < dst_cols; ++c) {
      const float want = c < width ? static_cast<float>(r * src_cols + begin + c) : -1.0f;
      EXPECT_EQ(dst[r * dst_cols + c], want) << r << "," << c;
    }
  ops::copy_2d(nullptr, 0, nullptr, 0, 0, 3);  // zero width: no-op
}

TEST(KernelDevices, ToDeviceOnTheSameDeviceIsTheSameStorage) {
  Tensor t = random_f32({4, 8}, 1);
  EXPECT_EQ(ops::to_device(t, Device::kCpu).raw(), t.raw());
  EXPECT_FALSE(ops::to_device(Tensor(), Device::kCpu).defined());
  if (gpu()) {
    EXPECT_FALSE(ops::to_device(Tensor(), Device::kCuda).defined());
  }

  ops::Weight dense;
  dense.dense = t.to(DType::kBF16);
  ops::Weight d2 = ops::to_device(dense, Device::kCpu);
  EXPECT_FALSE(d2.quantized);
  EXPECT_EQ(d2.dense.raw(), dense.dense.raw());

  ops::Weight q;
  q.quantized = true;
  q.quant = quantize_affine(random_f32({4, 64}, 2), AffineQuantSpec{4, 32}, DType::kF16);
  ops::Weight q2 = ops::to_device(q, Device::kCpu);
  ASSERT_TRUE(q2.quantized);
  EXPECT_EQ(q2.quant.packed.raw(), q.quant.packed.raw());
  EXPECT_EQ(q2.quant.scales.raw(), q.quant.scales.raw());
  EXPECT_EQ(q2.quant.biases.raw(), q.quant.biases.raw());
  EXPECT_EQ(q2.quant.spec, q.quant.spec);
  EXPECT_EQ(q2.rows(), 4);
  EXPECT_EQ(q2.cols(), 64);
}

TEST(KernelDevices, AStridedHostViewIsUploadedContiguous) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  Tensor t = random_f32({6, 5}, 3);
  Tensor view = t.slice_rows(2, 5);
  Tensor dev = ops::to_device(view, Device::kCuda);
  EXPECT_EQ(dev.device(), Device::kCuda);
  EXPECT_EQ(dev.shape(), view.shape());
  EXPECT_EQ(bytes_of(to_host(dev)), bytes_of(view.clone()));
}

TEST(KernelDevices, TensorsAndWeightsRoundTripThroughTheGpuBitExact) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  const int64_t gpu_active = MemoryTracker::instance().snapshot(MemDevice::kGpu).active;
  {
    Tensor t = random_f32({33, 17}, 4).to(DType::kBF16);
    Tensor dev = ops::to_device(t, Device::kCuda, MemCategory::kWeights);
    EXPECT_EQ(dev.device(), Device::kCuda);
    EXPECT_EQ(dev.dtype(), DType::kBF16);
    EXPECT_GE(MemoryTracker::instance().snapshot(MemDevice::kGpu).active - gpu_active,
              static_cast<int64_t>(t.nbytes()));
    EXPECT_EQ(bytes_of(to_host(dev)), bytes_of(t));

    ops::Weight q;
    q.quantized = true;
    q.quant = quantize_affine(random_f32({8, 128}, 5), AffineQuantSpec{3, 64}, DType::kBF16);
    ops::Weight qd = ops::to_device(q, Device::kCuda);
    EXPECT_EQ(qd.quant.packed.device(), Device::kCuda);
    EXPECT_EQ(qd.quant.scales.device(), Device::kCuda);
    EXPECT_EQ(qd.quant.biases.device(), Device::kCuda);
    EXPECT_EQ(bytes_of(to_host(qd.quant.packed)), bytes_of(q.quant.packed));
    EXPECT_EQ(bytes_of(to_host(qd.quant.scales)), bytes_of(q.quant.scales));
    EXPECT_EQ(bytes_of(to_host(qd.quant.biases)), bytes_of(q.quant.biases));

    // copy_2d on the device: the host test's split, read back.
    ops::DeviceScope s(Device::kCuda);
    Tensor src = ops::to_device(random_f32({4, 10}, 6), Device::kCuda);
    Tensor dst = ops::empty({4, 4}, DType::kF32, MemCategory::kScratch, Device::kCuda);
    ops::copy_2d(dst.raw(), 4 * sizeof(float), src.data<float>() + 3, 10 * sizeof(float), 4 * sizeof(float), 4);
    Tensor back = to_host(dst), whole = to_host(src);
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) EXPECT_EQ(back.data<float>()[r * 4 + c], whole.data<float>()[r * 10 + 3 + c]);
  }
  // Everything above went back to the allocator: nothing stays active.
  EXPECT_EQ(MemoryTracker::instance().snapshot(MemDevice::kGpu).active, gpu_active);
}

TEST(KernelDevices, LinearOnTheGpuMatchesTheCpu) {
  if (!gpu()) GTEST_SKIP() << cuda_unavailable_reason();
  const int64_t n = 5, in = 64, out = 24;
  Tensor x = random_f32({n, in}, 7);
  ops::Weight w;
  w.dense = random_f32({out, in}, 8).to(DType::kBF16);
  Tensor bias = random_f32({out}, 9);
  std::vector<float> want(static_cast<size_t>(n * out));
  ops::linear(x.data<float>(), n, w, bias, want.data());

  ops::DeviceScope s(Device::kCuda);
  ops::Weight wd = ops::to_device(w, Device::kCuda);
  Tensor bd = ops::to_device(bias, Device::kCuda), xd = ops::to_device(x, Device::kCuda);
  Tensor yd = ops::empty({n, out}, DType::kF32, MemCategory::kScratch, Device::kCuda);
  ops::linear(xd.data<float>(), n, wd, bd, yd.data<float>());
  Tensor y = to_host(yd);
  for (int64_t i = 0; i < n * out; ++i) EXPECT_NEAR(y.data<float>()[i], want[static_cast<size_t>(i)], 1e-4) << i;
  // A host weight under a CUDA scope is refused before any kernel runs.
  EXPECT_THROW(ops::linear(xd.data<float>(), n, w, Tensor(), yd.data<float>()), Error);
}

TEST(KernelDevices, OpsRefuseWeightsThatLiveOnAnotherDevice) {
  // Tensors that claim to be on the GPU (host bytes behind them, never read): the CPU ops must refuse
  // them by their device, naming the device the op runs on.
  std::vector<uint16_t> storage(8 * 4, 0);
  ops::Weight w;
  w.dense = Tensor::borrow(storage.data(), {8, 4}, DType::kBF16, nullptr, Device::kCuda);
  std::vector<float> x(4, 1.0f), y(8);
  try {
    ops::linear(x.data(), 1, w, Tensor(), y.data());
    FAIL() << "a cuda weight was accepted by a cpu op";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
  Tensor norm = Tensor::borrow(storage.data(), {4}, DType::kBF16, nullptr, Device::kCuda);
  EXPECT_THROW(ops::rms_norm(x.data(), 1, 4, norm, 1e-6f, 0.0f, y.data()), Error);
}

}  // namespace
