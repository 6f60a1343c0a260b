// linear_group on the GPU (ops.h): several linears of one input x (q/k/v, gate/up). In decode (n < 8)
// consecutive members that the GEMV takes and that share a storage format (dense dtype, or bits, group
// size and scale/bias dtypes) run as one GEMV launch covering all their rows, bias included
// (linear_gemv.cu); anything else is its own `linear` call (launches queue back to back on the one
// stream). Prefill members are GEMMs, one per member; dense 16-bit members share one rounding of x
// (linear_dense.cu), so x [n, in] is converted once instead of once per member.
// The fused forms (ops.h LinearOut): the GEMV kernels add into y themselves (accumulate), and the dense
// and 4-bit tensor-core GEMVs normalize x on the fly (norm); elsewhere — GEMMs, other quantized
// weights, the tiled fallback — the
// group runs on rms_norm(x) materialized once, and an accumulating non-GEMV member into a temporary
// that is then added to its y.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/linear_dense.cuh"
#include "kernels/cuda/linear_gemv.cuh"
#include "kernels/ops.h"

namespace vlm::ops::cuda::kernels {

namespace {

// The plain group over x (already normalized unless gnorm is set: then the dense GEMVs normalize it).
void run_group(const float* x, int64_t n, const LinearOut* outs, int count, const GemvNorm* gnorm) {
  // One member outside the GEMV: into y, or into a temporary added to y when it accumulates.
  auto one = [&](int i) {
    const Tensor bias = outs[i].bias ? *outs[i].bias : Tensor();
    if (!outs[i].accumulate) {
      kernels::linear(x, n, *outs[i].w, bias, outs[i].y);
      return;
    }
    const int64_t size = n * outs[i].w->rows();
    Tensor r = ops::empty({size}, DType::kF32, MemCategory::kScratch, Device::kCuda);
    kernels::linear(x, n, *outs[i].w, bias, r.data<float>());
    kernels::add(outs[i].y, r.data<float>(), size);
  };
  if (n >= 8) {
    constexpr int kMaxShared = 16;  // groups are 2-3 members; a larger one runs member by member
    bool done[kMaxShared] = {};
    bool plain = count <= kMaxShared;
    for (int i = 0; i < count && plain; ++i) plain = !outs[i].accumulate;
    if (plain) dense_group_cublaslt(x, n, outs, count, done);
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
      t[m++] = {outs[j].w, outs[j].bias, outs[j].y, outs[j].accumulate};
      ++j;
    }
    gemv_launch(x, n, t, m, gnorm);
    i = j;
  }
}

}  // namespace

void linear_group(const float* x, int64_t n, const LinearOut* outs, int count) {
  if (n <= 0 || count <= 0) return;
  // Prefill of dense 16-bit members: norm and accumulate inside the GEMMs' input rounding and epilogue
  // (linear_dense.cu); false (nothing launched) where that does not apply.
  if (n >= 8 && dense_group_fused(x, n, outs, count, outs[0].norm)) return;
  const LinearNorm* norm = outs[0].norm;  // ops.cpp: every member has the same one
  if (norm == nullptr) {
    run_group(x, n, outs, count, nullptr);
    return;
  }
  const int64_t cols = outs[0].w->cols();
  const void* nw = detail::device_ptr(*norm->weight, "linear_group", "norm weight");
  // The GEMV normalizes x itself when every member is a dense weight it takes or a 4-bit one the
  // tensor-core GEMV takes; otherwise x is normalized once into a temporary that the whole group reads.
  bool native = n < 8 && (reinterpret_cast<uintptr_t>(nw) & 7u) == 0;
  for (int i = 0; i < count && native; ++i)
    native = (!outs[i].w->quantized || (gemv_mma_norm_enabled() && gemv_mma_supported(x, *outs[i].w))) &&
             outs[i].w->rows() > 0 &&
             gemv_supported(x, *outs[i].w);
  if (native) {
    GemvNorm g;
    g.w = nw;
    g.kind = detail::float_kind(*norm->weight, "linear_group", "norm weight");
    g.eps = norm->eps;
    g.offset = norm->offset;
    run_group(x, n, outs, count, &g);
    return;
  }
  Tensor hx = ops::empty({n, cols}, DType::kF32, MemCategory::kScratch, Device::kCuda);
  kernels::rms_norm(x, n, cols, *norm->weight, norm->eps, norm->offset, hx.data<float>());
  run_group(hx.data<float>(), n, outs, count, nullptr);
}

}  // namespace vlm::ops::cuda::kernels
