// Placeholder SIMD tables: every entry null, so each op falls back to the scalar reference until its
// vectorised version lands (see simd_*.cpp).
#include "kernels/cpu/cpu_dispatch.h"

namespace vlm::ops::cpu {
const KernelTable& avx512_table(bool) {
  static const KernelTable t;
  return t;
}
const KernelTable& avx2_table() {
  static const KernelTable t;
  return t;
}
}  // namespace vlm::ops::cpu
