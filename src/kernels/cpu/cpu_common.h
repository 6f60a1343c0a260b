// Helpers shared by the CPU kernels (reference and SIMD paths): reading small per-channel vectors
// (norm weights, biases, quantization scales) of any float dtype as f32, and a parallel-for over
// the global pool that stays serial for work too small to be worth waking the workers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace vlm::ops::cpu {

// Element i of a float tensor (f32/f16/bf16), as f32. Used on scales/biases, never in inner loops
// of the fast paths.
inline float load_f32(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    default: return static_cast<const float*>(data)[i];
  }
}

// A whole (small) float tensor as an f32 vector; empty when `t` is undefined.
inline std::vector<float> vector_f32(const Tensor& t) {
  std::vector<float> out;
  if (!t.defined()) return out;
  out.resize(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype(), t.raw(), out.data(), out.size());
  return out;
}

// fn(begin, end) over [0, n); runs on the calling thread alone when n * cost_per_item is small.
// cost is in multiply-adds (or equivalent). The pool hands a job to a spinning worker in well under
// a microsecond (bench_thread_pool), in which one core does ~3e4 multiply-adds, so jobs below that
// stay on the caller. Chunks are at least that big too; the pool balances them dynamically.
inline void parallel_for(int64_t n, int64_t cost_per_item, const std::function<void(int64_t, int64_t)>& fn) {
  constexpr int64_t kSerialWork = 1 << 15;
  if (n <= 0) return;
  if (n * cost_per_item <= kSerialWork) {
    fn(0, n);
    return;
  }
  int64_t grain = std::max<int64_t>(1, kSerialWork / std::max<int64_t>(1, cost_per_item));
  ThreadPool::global().parallel_for(n, fn, std::min(grain, std::max<int64_t>(1, n / 2)));
}

// Scratch of the row attention kernels (simd_ops_avx512.cpp, simd_ops_avx2.cpp): per round of qb queries,
// each (query, head, key chunk)'s max, sum and partial output. qb keeps it under ~8 MB however long the
// prompt. The buffer is the calling thread's; the pool's threads reach it through the pointers.
struct RowAttentionScratch {
  int64_t qb;
  float* cmax;  // [qb][n_heads][nch]
  float* csum;  // [qb][n_heads][nch]
  float* part;  // [qb][n_heads][nch][head_dim]
  RowAttentionScratch(int64_t nq, int64_t n_heads, int64_t nch, int64_t head_dim) {
    const int64_t per_query = n_heads * nch * (head_dim + 2);
    qb = std::max<int64_t>(1, std::min<int64_t>(nq, (int64_t{1} << 21) / per_query));
    thread_local std::vector<float> store;
    const size_t need = static_cast<size_t>(qb * per_query);
    if (store.size() < need) store.resize(need);
    cmax = store.data();
    csum = cmax + qb * n_heads * nch;
    part = csum + qb * n_heads * nch;
  }
};

}  // namespace vlm::ops::cpu
