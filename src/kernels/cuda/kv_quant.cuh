// Host entries of the KV-cache quantization kernels (kv_quant.cu), for table.cu; same arguments and
// semantics as ops::kv_quantize / ops::kv_dequantize (ops.h), every pointer device memory.
#pragma once

#include <cstdint>

namespace vlm::ops::cuda::kernels {
void kv_quantize(const float* x, int64_t rows, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                 float* biases);
void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out);
}  // namespace vlm::ops::cuda::kernels
