// ops::sample on the GPU: the built-in sampler chain over one logits row, so that only the token id
// crosses to the host. Semantics and the per-element arithmetic are kernels/sampling.h's (shared with
// the CPU op); this file only organises the work:
//
//   edit_max     the row copied to scratch with the processors' edits (host-planned, staged), chunk maxima
//   sum_exp      Σ exp(x - max) per chunk in double
//   logprob      logprobs in place, chunk argmax, top_p's first histogram
//   top_p        radix selection of the boundary value by fixed-point probability mass (3 passes of
//                11/11/10 bits over the order-preserving key), then the ties at the boundary ranked by id
//   min_p        fused into top_p's apply pass (threshold from the max, which top_p always keeps)
//   top_k        radix selection of the k-th largest by counts, ties ranked by id
//   draw         chunk sums of the categorical weights, then one block finds the chunk and the id
//
// The row is split into at most kMaxChunks contiguous chunks, one block each; every cross-chunk
// reduction runs in a fixed order (no float atomics), histograms add integers, so the op is
// deterministic. No host synchronisation except the final copy of the id (and a status word) to host
// memory; temporary storage is the backend's scratch buffer, the edits and u are staged — nothing is
// allocated per call, so decode steps stay capturable.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sample.cuh"

#include <algorithm>
#include <cstddef>

#include "kernels/sampling.h"

namespace vlm::ops::cuda::kernels {
namespace {

using sampling::LogitEdit;
using u64 = unsigned long long;

constexpr int kThreads = 256;    // every kernel here (the scans assume it)
constexpr int kWarps = kThreads / 32;
constexpr int kMaxChunks = 128;  // blocks per row pass (~1.2k values each at a 152k vocabulary)
constexpr int kBuckets = 2048;   // radix digits of 11, 11 and 10 bits
constexpr int32_t kNone = 0x7fffffff;
constexpr int kStatusAllMasked = 1;

__host__ __device__ constexpr int digit_bits(int pass) { return pass == 2 ? 10 : 11; }
__host__ __device__ constexpr int digit_shift(int pass) { return pass == 0 ? 21 : (pass == 1 ? 10 : 0); }

// A radix selection so far: the key's leading digits, the mass (top_p: fixed-point probability,
// ascending; top_k: count, descending) of every key before them in scan order, and whether the
// selection exists (top_p: the whole row's mass may not exceed 1 - top_p).
struct Pick {
  uint32_t prefix;
  u64 below;
  int found;
};

// Per-row state in scratch. Only the histograms need zeroing (one memset per call); every other
// field is written before it is read.
struct State {
  u64 p_sum[3][kBuckets];  // top_p: probability mass per digit, per pass
  uint32_t p_count[3][kBuckets];
  uint32_t k_count[3][kBuckets];  // top_k: count per digit, per pass
  // ---- end of the zeroed part ----
  float part_max[kMaxChunks];      // max of the edited logits
  double part_sum[kMaxChunks];     // Σ exp(x - max)
  float part_fmax[2][kMaxChunks];  // max logprob after the filters so far (double-buffered)
  int32_t part_arg[2][kMaxChunks];  // its first index
  uint32_t part_ties[kMaxChunks];   // keys equal to the boundary key
  double part_w[kMaxChunks];        // Σ categorical weights
  int32_t part_last[kMaxChunks];    // last id with weight > 0, or -1
  Pick p_pick[4], k_pick[4];        // written by block 0 of the pass that decides them
  u64 tie_lo, tie_hi;               // kept tie ranks [lo, hi) of the filter being applied
  int32_t out[2];                   // id, status
};
constexpr size_t kZeroedBytes = offsetof(State, part_max);

struct Range {
  int64_t begin, end;
};
__device__ __forceinline__ Range chunk_range(int64_t vocab, int64_t chunk) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * chunk;
  return {b, b + chunk < vocab ? b + chunk : vocab};
}

// ---- block primitives (kThreads threads) ---------------------------------------------------------------

// Inclusive prefix of v over the block in thread order, and the block total (the last thread's
// inclusive value). Fixed association, so deterministic for doubles too; integer callers get the
// exclusive prefix as incl - v.
template <typename T>
__device__ T block_inclusive_scan(T v, T* total) {
  __shared__ T warp_incl[kWarps];
  __shared__ T last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x = x + y;
  }
  if (lane == 31) warp_incl[warp] = x;
  __syncthreads();
  if (warp == 0) {
    T t = lane < kWarps ? warp_incl[lane] : T(0);
#pragma unroll
    for (int o = 1; o < kWarps; o <<= 1) {
      const T y = __shfl_up_sync(0xffffffffu, t, o);
      if (lane >= o) t = t + y;
    }
    if (lane < kWarps) warp_incl[lane] = t;
  }
  __syncthreads();
  const T incl = warp > 0 ? warp_incl[warp - 1] + x : x;
  if (threadIdx.x == kThreads - 1) last = incl;
  __syncthreads();
  *total = last;
  __syncthreads();
  return incl;
}

__device__ double block_sum_double(double v) {
  __shared__ double s[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) s[warp] = v;
  __syncthreads();
  double t = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) t += s[w];
  __syncthreads();
  return t;  // valid in thread 0
}

// The larger value wins, equal values go to the lower index, NaN never wins (ops::argmax's rule).
__device__ __forceinline__ void better(float& bv, int32_t& bi, float v, int32_t i) {
  if (i == kNone || isnan(v)) return;
  if (bi == kNone || v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}
__device__ void block_best(float& bv, int32_t& bi) {
  __shared__ float sv[kWarps];
  __shared__ int32_t si[kWarps];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_down_sync(0xffffffffu, bv, o);
    const int32_t oi = __shfl_down_sync(0xffffffffu, bi, o);
    better(bv, bi, ov, oi);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < kWarps; ++w) better(bv, bi, sv[w], si[w]);
  __syncthreads();
}

// Max over the first n chunk maxima (every thread gets it).
__device__ float max_of_parts(const float* parts, int n) {
  __shared__ float sh[32];
  float m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, parts[i]);
  return block_max(m, sh);
}

// The next digit of a radix selection from its histogram `value` (scan order ascending, or
// descending for top_k): the first digit at which below + the inclusive mass exceeds `threshold`.
// Every thread returns the same Pick; found = 0 when no digit does.
template <typename Get>
__device__ Pick decide_digit(const Pick& prev, int bits, bool descending, u64 threshold, Get value) {
  __shared__ int s_digit;
  __shared__ u64 s_below;
  if (!prev.found) return prev;
  const int nb = 1 << bits, per = nb / kThreads;
  const int j0 = threadIdx.x * per;
  auto digit_at = [&](int j) { return descending ? nb - 1 - j : j; };
  u64 seg = 0;
  for (int j = j0; j < j0 + per; ++j) seg += value(digit_at(j));
  if (threadIdx.x == 0) s_digit = -1;
  u64 total;
  const u64 excl = block_inclusive_scan<u64>(seg, &total) - seg;
  const u64 start = prev.below + excl;
  if (start <= threshold && start + seg > threshold) {
    u64 acc = start;
    for (int j = j0; j < j0 + per; ++j) {
      const u64 v = value(digit_at(j));
      if (acc + v > threshold) {
        s_digit = digit_at(j);
        s_below = acc;
        break;
      }
      acc += v;
    }
  }
  __syncthreads();
  Pick p{0, 0, 0};
  if (s_digit >= 0) p = Pick{(prev.prefix << bits) | static_cast<uint32_t>(s_digit), s_below, 1};
  __syncthreads();
  return p;
}

// Ties at the boundary key before this chunk (fixed order over the chunks).
__device__ u64 ties_before(const State* st) {
  __shared__ u64 s;
  if (threadIdx.x == 0) {
    u64 t = 0;
    for (unsigned b = 0; b < blockIdx.x; ++b) t += st->part_ties[b];
    s = t;
  }
  __syncthreads();
  const u64 r = s;
  __syncthreads();
  return r;
}

// Rank of this thread's flag among the tile's set flags in thread order, and the tile's count.
__device__ __forceinline__ uint32_t tile_rank(bool flag, uint32_t* count) {
  __shared__ uint32_t warp_counts[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  if (lane == 0) warp_counts[warp] = __popc(ballot);
  __syncthreads();
  uint32_t before = 0, all = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += warp_counts[w];
    all += warp_counts[w];
  }
  __syncthreads();
  *count = all;
  return before + __popc(ballot & ((1u << lane) - 1u));
}

// ---- kernels ---------------------------------------------------------------------------------------------

// work = logits with the edits applied (edits sorted by id); part_max = the chunk's max.
__global__ void edit_max_kernel(const float* logits, int64_t vocab, int64_t chunk, float* work,
                                const LogitEdit* edits, int n_edits, float rep, float pres, float freq, State* st) {
  __shared__ int s_lo;
  __shared__ float sh[32];
  const Range r = chunk_range(vocab, chunk);
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) work[i] = logits[i];
  if (threadIdx.x == 0) {  // first edit at or after the chunk
    int lo = 0, hi = n_edits;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (edits[mid].id < r.begin) lo = mid + 1;
      else hi = mid;
    }
    s_lo = lo;
  }
  __syncthreads();
  for (int e = s_lo + threadIdx.x; e < n_edits && edits[e].id < r.end; e += kThreads)
    work[edits[e].id] = sampling::apply_logit_edit(logits[edits[e].id], edits[e], rep, pres, freq);
  __syncthreads();
  float m = -INFINITY;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) m = fmaxf(m, work[i]);  // NaN skipped
  m = block_max(m, sh);
  if (threadIdx.x == 0) st->part_max[blockIdx.x] = m;
}

__global__ void sum_exp_kernel(const float* work, int64_t vocab, int64_t chunk, int chunks, State* st) {
  const float m = max_of_parts(st->part_max, chunks);
  const Range r = chunk_range(vocab, chunk);
  double s = 0;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) s += exp(static_cast<double>(work[i] - m));
  s = block_sum_double(s);
  if (threadIdx.x == 0) st->part_sum[blockIdx.x] = s;
}

// work = (x - max) - log(Σ); chunk argmax into buffer 0; top_p's first histogram when asked.
__global__ void logprob_kernel(float* work, int64_t vocab, int64_t chunk, int chunks, State* st, bool top_p_hist) {
  __shared__ float s_log_sum;
  __shared__ uint32_t h_count[kBuckets];
  __shared__ u64 h_sum[kBuckets];
  const float m = max_of_parts(st->part_max, chunks);
  if (threadIdx.x == 0) {
    double total = 0;
    for (int b = 0; b < chunks; ++b) total += st->part_sum[b];
    s_log_sum = static_cast<float>(log(total));
  }
  if (top_p_hist)
    for (int d = threadIdx.x; d < kBuckets; d += kThreads) {
      h_count[d] = 0;
      h_sum[d] = 0;
    }
  __syncthreads();
  const float log_sum = s_log_sum;
  const Range r = chunk_range(vocab, chunk);
  float bv = 0.0f;
  int32_t bi = kNone;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
    const float lp = (work[i] - m) - log_sum;
    work[i] = lp;
    better(bv, bi, lp, static_cast<int32_t>(i));
    if (top_p_hist) {
      const int d = static_cast<int>(sampling::order_key(lp) >> digit_shift(0));
      atomicAdd(&h_count[d], 1u);
      atomicAdd(&h_sum[d], static_cast<u64>(sampling::prob_fixed(lp)));
    }
  }
  block_best(bv, bi);
  if (threadIdx.x == 0) {
    st->part_fmax[0][blockIdx.x] = bi == kNone ? -INFINITY : bv;
    st->part_arg[0][blockIdx.x] = bi;
  }
  if (top_p_hist) {
    __syncthreads();
    for (int d = threadIdx.x; d < kBuckets; d += kThreads)
      if (h_count[d] != 0) {
        atomicAdd(&st->p_count[0][d], h_count[d]);
        atomicAdd(&st->p_sum[0][d], h_sum[d]);
      }
  }
}

// top_p pass `pass` (1, 2): decides the previous digit (block 0 records it), then histograms the
// keys that match the selection so far.
__global__ void top_p_pass_kernel(const float* work, int64_t vocab, int64_t chunk, State* st, int pass, u64 threshold) {
  __shared__ uint32_t h_count[kBuckets];
  __shared__ u64 h_sum[kBuckets];
  const Pick prev = pass == 1 ? Pick{0, 0, 1} : st->p_pick[pass - 1];
  const Pick p = decide_digit(prev, digit_bits(pass - 1), false, threshold,
                              [&](int d) { return st->p_sum[pass - 1][d]; });
  if (blockIdx.x == 0 && threadIdx.x == 0) st->p_pick[pass] = p;
  if (!p.found) return;
  for (int d = threadIdx.x; d < kBuckets; d += kThreads) {
    h_count[d] = 0;
    h_sum[d] = 0;
  }
  __syncthreads();
  const Range r = chunk_range(vocab, chunk);
  const int shift = digit_shift(pass), match_shift = digit_shift(pass - 1);
  const uint32_t mask = (1u << digit_bits(pass)) - 1u;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
    const float lp = work[i];
    const uint32_t key = sampling::order_key(lp);
    if ((key >> match_shift) != p.prefix) continue;
    const int d = static_cast<int>((key >> shift) & mask);
    atomicAdd(&h_count[d], 1u);
    atomicAdd(&h_sum[d], static_cast<u64>(sampling::prob_fixed(lp)));
  }
  __syncthreads();
  for (int d = threadIdx.x; d < kBuckets; d += kThreads)
    if (h_count[d] != 0) {
      atomicAdd(&st->p_count[pass][d], h_count[d]);
      atomicAdd(&st->p_sum[pass][d], h_sum[d]);
    }
}

// top_k pass `pass` (0, 1, 2): as top_p's, by counts in descending order (k_pick[0] is "everything").
__global__ void top_k_pass_kernel(const float* work, int64_t vocab, int64_t chunk, State* st, int pass, u64 threshold) {
  __shared__ uint32_t h_count[kBuckets];
  Pick p{0, 0, 1};
  if (pass > 0) {
    const Pick prev = pass == 1 ? Pick{0, 0, 1} : st->k_pick[pass - 1];
    p = decide_digit(prev, digit_bits(pass - 1), true, threshold,
                     [&](int d) { return static_cast<u64>(st->k_count[pass - 1][d]); });
    if (blockIdx.x == 0 && threadIdx.x == 0) st->k_pick[pass] = p;
  }
  for (int d = threadIdx.x; d < kBuckets; d += kThreads) h_count[d] = 0;
  __syncthreads();
  const Range r = chunk_range(vocab, chunk);
  const int shift = digit_shift(pass);
  const uint32_t mask = (1u << digit_bits(pass)) - 1u;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
    const uint32_t key = sampling::order_key(work[i]);
    if (pass > 0 && (key >> digit_shift(pass - 1)) != p.prefix) continue;
    atomicAdd(&h_count[(key >> shift) & mask], 1u);
  }
  __syncthreads();
  for (int d = threadIdx.x; d < kBuckets; d += kThreads)
    if (h_count[d] != 0) atomicAdd(&st->k_count[pass][d], h_count[d]);
}

// Decides the last digit of a selection (top_p: is_top_k false), records the boundary key and the
// kept tie ranks [tie_lo, tie_hi), and counts this chunk's ties at the boundary key.
__global__ void ties_kernel(const float* work, int64_t vocab, int64_t chunk, State* st, bool is_top_k, u64 threshold,
                            u64 k) {
  Pick p;
  if (is_top_k) {
    p = decide_digit(st->k_pick[2], digit_bits(2), true, threshold,
                     [&](int d) { return static_cast<u64>(st->k_count[2][d]); });
  } else {
    p = decide_digit(st->p_pick[2], digit_bits(2), false, threshold, [&](int d) { return st->p_sum[2][d]; });
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    (is_top_k ? st->k_pick : st->p_pick)[3] = p;
    if (p.found) {
      const int d = static_cast<int>(p.prefix & ((1u << digit_bits(2)) - 1u));
      if (is_top_k) {
        // p.below keys are larger; the first k - below ties (by id) complete the k.
        st->tie_lo = 0;
        st->tie_hi = k - p.below;
      } else {
        // Every tie has the same probability q; tie r (by id) ends at below + (r + 1) q, kept iff
        // that exceeds the threshold: r >= (threshold - below) / q.
        const u64 q = st->p_sum[2][d] / st->p_count[2][d];
        st->tie_lo = (threshold - p.below) / q;
        st->tie_hi = ~0ull;
      }
    }
  }
  uint32_t n = 0;
  if (p.found) {
    const Range r = chunk_range(vocab, chunk);
    for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) n += sampling::order_key(work[i]) == p.prefix;
  }
  u64 total;
  block_inclusive_scan<u64>(n, &total);
  if (threadIdx.x == 0) st->part_ties[blockIdx.x] = static_cast<uint32_t>(total);
}

// Applies a selection: keys above the boundary stay, keys below go, ties stay by rank. For top_p it
// then applies min_p (threshold from the max, which top_p keeps) and may run top_k's first histogram.
// Chunk maxima go from buffer `in` to buffer 1 - in.
__global__ void apply_kernel(float* work, int64_t vocab, int64_t chunk, int chunks, State* st, int selection,
                             bool min_p_on, float log_min_p, bool top_k_hist, int in) {
  __shared__ uint32_t h_count[kBuckets];
  // selection: 0 none (min_p alone), 1 top_p, 2 top_k
  Pick p{0, 0, 1};
  if (selection == 1) p = st->p_pick[3];
  if (selection == 2) p = st->k_pick[3];
  const u64 lo = st->tie_lo, hi = st->tie_hi;
  const float row_max = max_of_parts(st->part_fmax[in], chunks);
  const float min_p_threshold = min_p_on && p.found ? row_max + log_min_p : -INFINITY;
  if (top_k_hist) {
    for (int d = threadIdx.x; d < kBuckets; d += kThreads) h_count[d] = 0;
    __syncthreads();
  }
  u64 rank = selection != 0 ? ties_before(st) : 0;
  const Range r = chunk_range(vocab, chunk);
  float bv = 0.0f;
  int32_t bi = kNone;
  for (int64_t t0 = r.begin; t0 < r.end; t0 += kThreads) {
    const int64_t i = t0 + threadIdx.x;
    const bool in_range = i < r.end;
    float lp = in_range ? work[i] : -INFINITY;
    const uint32_t key = sampling::order_key(lp);
    const bool tie = in_range && selection != 0 && p.found && key == p.prefix;
    uint32_t tile_ties;
    const u64 my_rank = rank + tile_rank(tie, &tile_ties);
    rank += tile_ties;
    if (in_range) {
      bool keep = true;
      if (selection != 0) keep = p.found && (key > p.prefix || (tie && my_rank >= lo && my_rank < hi));
      if (!keep) lp = -INFINITY;
      if (lp < min_p_threshold) lp = -INFINITY;
      work[i] = lp;
      better(bv, bi, lp, static_cast<int32_t>(i));
      if (top_k_hist) atomicAdd(&h_count[sampling::order_key(lp) >> digit_shift(0)], 1u);
    }
  }
  block_best(bv, bi);
  if (threadIdx.x == 0) {
    st->part_fmax[1 - in][blockIdx.x] = bi == kNone ? -INFINITY : bv;
    st->part_arg[1 - in][blockIdx.x] = bi;
  }
  if (top_k_hist) {
    __syncthreads();
    for (int d = threadIdx.x; d < kBuckets; d += kThreads)
      if (h_count[d] != 0) atomicAdd(&st->k_count[0][d], h_count[d]);
  }
}

__device__ double max_scaled_of(const State* st, int buf, int chunks, double inv_t) {
  const float m = max_of_parts(st->part_fmax[buf], chunks);
  return sampling::scaled_logprob(m, inv_t);
}

__global__ void weight_sum_kernel(const float* work, int64_t vocab, int64_t chunk, int chunks, State* st, int buf,
                                  double inv_t) {
  __shared__ int32_t s_last[kWarps];
  const double ms = max_scaled_of(st, buf, chunks, inv_t);
  const Range r = chunk_range(vocab, chunk);
  double acc = 0;
  int32_t last = -1;
  for (int64_t t0 = r.begin; t0 < r.end; t0 += kThreads) {
    const int64_t i = t0 + threadIdx.x;
    // Tile by tile with the scan finish_kernel repeats, so its sums match these bit for bit.
    const double w = i < r.end ? sampling::categorical_weight(work[i], inv_t, ms) : 0.0;
    double total;
    block_inclusive_scan<double>(w, &total);
    acc = acc + total;
    if (w > 0) last = static_cast<int32_t>(i);
  }
  for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  if ((threadIdx.x & 31) == 0) s_last[threadIdx.x >> 5] = last;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 0; w < kWarps; ++w) last = max(last, s_last[w]);
    st->part_w[blockIdx.x] = acc;
    st->part_last[blockIdx.x] = last;
  }
}

// One block: the status, then the id — temperature 0: the first maximum of the logprobs (buffer 0);
// else the chunk where the cumulative weight passes u * total, then the id inside it by the same
// tile scans as weight_sum_kernel (rounding fallback: the last id with weight > 0).
__global__ void finish_kernel(const float* work, int64_t vocab, int64_t chunk, int chunks, State* st, bool draw,
                              int buf, double inv_t, const double* u) {
  __shared__ int s_chunk;
  __shared__ double s_before, s_target;
  __shared__ int32_t s_found[kWarps];
  const float m = max_of_parts(st->part_max, chunks);
  if (!draw) {
    float bv = 0.0f;
    int32_t bi = kNone;
    for (int b = threadIdx.x; b < chunks; b += kThreads) better(bv, bi, st->part_fmax[0][b], st->part_arg[0][b]);
    block_best(bv, bi);
    if (threadIdx.x == 0) {
      st->out[0] = m == -INFINITY ? -1 : bi == kNone ? 0 : bi;  // -1: every logit masked (ops.h)
      st->out[1] = m == -INFINITY ? kStatusAllMasked : 0;
    }
    return;
  }
  if (threadIdx.x == 0) {
    double total = 0;
    for (int b = 0; b < chunks; ++b) total += st->part_w[b];
    const double target = *u * total;
    double acc = 0;
    int found = -1;
    for (int b = 0; b < chunks; ++b) {
      if (acc + st->part_w[b] > target) {
        found = b;
        break;
      }
      acc = acc + st->part_w[b];
    }
    s_chunk = found;
    s_before = acc;
    s_target = target;
    st->out[1] = m == -INFINITY ? kStatusAllMasked : 0;
  }
  __syncthreads();
  const int b = s_chunk;
  int32_t id = -1;
  if (b >= 0) {
    const double ms = max_scaled_of(st, buf, chunks, inv_t);
    const int64_t begin = static_cast<int64_t>(b) * chunk, end = begin + chunk < vocab ? begin + chunk : vocab;
    double acc = 0;
    for (int64_t t0 = begin; t0 < end && id < 0; t0 += kThreads) {
      const int64_t i = t0 + threadIdx.x;
      const bool in_range = i < end;
      const double w = in_range ? sampling::categorical_weight(work[i], inv_t, ms) : 0.0;
      double total;
      const double incl = block_inclusive_scan<double>(w, &total);
      const bool hit = in_range && w > 0 && s_before + (acc + incl) > s_target;
      const unsigned ballot = __ballot_sync(0xffffffffu, hit);
      if ((threadIdx.x & 31) == 0)
        s_found[threadIdx.x >> 5] = ballot ? static_cast<int32_t>(t0 + (threadIdx.x & ~31) + __ffs(ballot) - 1) : -1;
      __syncthreads();
      for (int w2 = 0; w2 < kWarps; ++w2)
        if (s_found[w2] >= 0) {
          id = s_found[w2];
          break;
        }
      acc = acc + total;
      __syncthreads();
    }
    if (id < 0) id = st->part_last[b];
  } else {
    for (int c = 0; c < chunks; ++c) id = max(id, st->part_last[c]);
  }
  if (threadIdx.x == 0) st->out[0] = st->out[1] == kStatusAllMasked ? -1 : id < 0 ? 0 : id;  // -1: all masked
}

}  // namespace

namespace {

// The chain's kernels on the backend stream; returns the device State whose `out` holds (id, status).
State* launch_sample(const char* op, const float* logits, int64_t vocab, const SamplingSpec& spec,
                     const int32_t* history, int64_t n_history, double u) {
  // The processors' edits, planned on the host from the host history (and checked there, with the
  // CPU's messages); a few dozen entries per token.
  const std::vector<LogitEdit> edits = sampling::plan_logit_edits(spec, history, n_history, vocab);
  if (edits.size() > 0x7fffffff) detail::fail(ErrorKind::kInvalidArgument, "[cuda sample] too many edits");
  int chunks = static_cast<int>(std::min<int64_t>(kMaxChunks, std::max<int64_t>(1, (vocab + 1023) / 1024)));
  const int64_t chunk = (vocab + chunks - 1) / chunks;
  chunks = static_cast<int>((vocab + chunk - 1) / chunk);

  // Scratch: the working row [vocab] f32, then the State (256-byte aligned).
  const size_t row_bytes = (static_cast<size_t>(vocab) * 4 + 255) / 256 * 256;
  auto* base = static_cast<char*>(detail::scratch(row_bytes + sizeof(State), op));
  auto* work = reinterpret_cast<float*>(base);
  auto* st = reinterpret_cast<State*>(base + row_bytes);
  detail::Staging staging(op);
  const size_t h_edits = staging.add(edits.data(), edits.size());
  const size_t h_u = staging.add(&u, 1);
  staging.upload();
  const LogitEdit* d_edits = staging.device<LogitEdit>(h_edits);
  const double* d_u = staging.device<double>(h_u);

  cudaStream_t s = detail::stream(op);
  VLM_CUDA(cudaMemsetAsync(st, 0, kZeroedBytes, s), op);
  const dim3 grid(static_cast<unsigned>(chunks));
  const bool draw = spec.temperature != 0.0f;
  const bool top_p = draw && spec.top_p > 0.0f && spec.top_p < 1.0f;
  const bool min_p = draw && spec.min_p != 0.0f;
  const bool top_k = draw && spec.top_k > 0 && spec.top_k < vocab;

  edit_max_kernel<<<grid, kThreads, 0, s>>>(logits, vocab, chunk, work, d_edits, static_cast<int>(edits.size()),
                                            spec.repetition_penalty, spec.presence_penalty, spec.frequency_penalty, st);
  VLM_CUDA_LAUNCHED(op);
  sum_exp_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, chunks, st);
  VLM_CUDA_LAUNCHED(op);
  logprob_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, chunks, st, top_p);
  VLM_CUDA_LAUNCHED(op);
  int buf = 0;
  if (top_p || min_p) {
    const u64 threshold = sampling::top_p_threshold(spec.top_p);
    if (top_p) {
      for (int pass = 1; pass <= 2; ++pass) {
        top_p_pass_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, st, pass, threshold);
        VLM_CUDA_LAUNCHED(op);
      }
      ties_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, st, false, threshold, 0);
      VLM_CUDA_LAUNCHED(op);
    }
    const float log_min_p = min_p ? std::log(spec.min_p) : 0.0f;  // the CPU's float log
    apply_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, chunks, st, top_p ? 1 : 0, min_p, log_min_p, top_k,
                                           buf);
    VLM_CUDA_LAUNCHED(op);
    buf = 1 - buf;
  }
  if (top_k) {
    const u64 k = static_cast<u64>(spec.top_k);
    // Descending counts: the digit where the count of larger-or-equal keys reaches k.
    for (int pass = (top_p || min_p) ? 1 : 0; pass <= 2; ++pass) {
      top_k_pass_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, st, pass, k - 1);
      VLM_CUDA_LAUNCHED(op);
    }
    ties_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, st, true, k - 1, k);
    VLM_CUDA_LAUNCHED(op);
    apply_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, chunks, st, 2, false, 0.0f, false, buf);
    VLM_CUDA_LAUNCHED(op);
    buf = 1 - buf;
  }
  const double inv_t = draw ? 1.0 / spec.temperature : 0.0;
  if (draw) {
    weight_sum_kernel<<<grid, kThreads, 0, s>>>(work, vocab, chunk, chunks, st, buf, inv_t);
    VLM_CUDA_LAUNCHED(op);
  }
  finish_kernel<<<1, kThreads, 0, s>>>(work, vocab, chunk, chunks, st, draw, buf, inv_t, d_u);
  VLM_CUDA_LAUNCHED(op);
  return st;
}

}  // namespace

void sample(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history, int64_t n_history,
            double u, int32_t* id) {
  State* st = launch_sample("sample", logits, vocab, spec, history, n_history, u);
  // Inside a captured step (ops::run_graph) the copy lands when run_graph returns, so only the id
  // goes, -1 standing for "every logit masked"; the caller checks it then (ops.h).
  if (detail::capturing()) {
    vlm::ops::cuda::copy(id, Device::kCpu, st->out, Device::kCuda, sizeof(int32_t));
    return;
  }
  // The id (and status) go to host memory: this waits for the stream (ops.h).
  int32_t out[2] = {0, 0};
  vlm::ops::cuda::copy(out, Device::kCpu, st->out, Device::kCuda, sizeof(out));
  if (out[1] == kStatusAllMasked)
    detail::fail(ErrorKind::kInvalidArgument,
                 "sampling: every logit is -inf or NaN (were all tokens banned by logit_bias?)");
  *id = out[0];
}

}  // namespace vlm::ops::cuda::kernels

namespace vlm::ops::cuda {
void sample_device(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
                   int64_t n_history, double u, int32_t* device_id) {
  kernels::State* st = kernels::launch_sample("sample_device", logits, vocab, spec, history, n_history, u);
  // The id (-1: every logit masked) where the next step reads it; the State is scratch the next op reuses.
  vlm::ops::cuda::copy(device_id, Device::kCuda, st->out, Device::kCuda, sizeof(int32_t));
}
}  // namespace vlm::ops::cuda
