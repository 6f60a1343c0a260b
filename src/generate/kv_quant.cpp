// Host single-row wrappers over ops::kv_quantize / ops::kv_dequantize (see kv_quant.h).
#include "generate/kv_quant.h"

#include "kernels/ops.h"

namespace vlm::kvq {

void quantize_row(const float* x, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                  float* biases) {
  ops::DeviceScope host(Device::kCpu);
  ops::kv_quantize(x, 1, n, bits, group_size, packed, scales, biases);
}

void dequantize_row(const uint32_t* packed, const float* scales, const float* biases, int64_t n, int bits,
                    int group_size, float* out) {
  ops::DeviceScope host(Device::kCpu);
  ops::kv_dequantize(packed, scales, biases, 1, n, bits, group_size, out);
}

}  // namespace vlm::kvq
