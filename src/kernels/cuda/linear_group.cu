// linear_group on the GPU (ops.h): several linears of one input x (q/k/v, gate/up). In decode (n < 8)
// consecutive members that the GEMV takes and that share a storage format (dense dtype, or bits, group
// size and scale/bias dtypes) run as one GEMV launch covering all their rows, bias included
// (linear_gemv.cu); anything else is its own `linear` call (launches queue back to back on the one
// stream). Prefill members are GEMMs, one per member; dense 16-bit members share one rounding of x
// (linear_dense.cu), so x [n, in] is converted once instead of once per member.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/linear_dense.cuh"
#include "kernels/cuda/linear_gemv.cuh"

namespace vlm::ops::cuda::kernels {

void linear_group(const float* x, int64_t n, const LinearOut* outs, int count) {
  auto one = [&](int i) { kernels::linear(x, n, *outs[i].w, outs[i].bias ? *outs[i].bias : Tensor(), outs[i].y); };
  if (n <= 0) return;
  if (n >= 8) {
    constexpr int kMaxShared = 16;  // groups are 2-3 members; a larger one runs member by member
    bool done[kMaxShared] = {};
    if (count <= kMaxShared) dense_group_cublaslt(x, n, outs, count, done);
    for (int i = 0; i < count; ++i)
      if (i >= kMaxShared || !done[i]) one(i);
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
