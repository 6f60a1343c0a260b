// The CUDA backend's ops::sample (sample.cu), declared for the kernel table (table.cu).
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace vlm::ops::cuda::kernels {
void sample(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history, int64_t n_history,
            double u, int32_t* id);
}  // namespace vlm::ops::cuda::kernels
