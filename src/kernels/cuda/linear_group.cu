// linear_group on the GPU (ops.h): several linears of one input x (q/k/v, gate/up). In decode (n < 8)
// consecutive members that the GEMV takes and that share a storage format (dense dtype, or bits, group
// size and scale/bias dtypes) run as one GEMV launch covering all their rows, bias included
// (linear_gemv.cu); anything else is its own `linear` call (launches queue back to back on the one
// stream). Prefill members are GEMMs, one per member.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/linear_gemv.cuh"

namespace vlm::ops::cuda::kernels {

void linear_group(const float* x, int64_t n, const LinearOut* outs, int count) {
  auto one = [&](int i) { kernels::linear(x, n, *outs[i].w, outs[i].bias ? *outs[i].bias : Tensor(), outs[i].y); };
  if (n <= 0 || n >= 8) {
    for (int i = 0; i < count; ++i) one(i);
    return;
  }
  auto gemv_ok = [&](int i) { return outs[i].w->rows() > 0 && gemv_supported(x, *outs[i].w); };
  for (int i = 0; i < count;) {
    if (!gemv_ok(i)) {
      one(i++);
      continue;
    }
    GemvTarget t[kGemvMaxTargets];
    int m = 0, j = i;
    while (j < count && m < kGemvMaxTargets && gemv_ok(j) && gemv_same_format(*outs[i].w, *outs[j].w)) {
      t[m++] = {outs[j].w, outs[j].bias, outs[j].y};
      ++j;
    }
    gemv_launch(x, n, t, m);
    i = j;
  }
}

}  // namespace vlm::ops::cuda::kernels
