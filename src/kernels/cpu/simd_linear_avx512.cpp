// AVX-512 linear (y = x·Wᵀ + b) for every stored weight format, reading the stored bytes directly.
//
// Decode (n < kGemmMinTokens): one pass over W per token, memory-bandwidth bound. Each 32-element
// chunk of a row is decoded in registers into two f32 vectors and FMA'd against the activations in
// f32 (activations are never rounded to bf16, so results match the scalar reference to f32
// accumulation-order noise). Formats whose natural decode yields (even, odd) element pairs — bf16
// (shift / mask of a dword), 4-bit and 2-bit (nibbles / crumbs of a byte) — use a copy of x permuted
// the same way per chunk, so no shuffle is needed in the inner loop. Quantized rows accumulate
// Σ q·x per group and apply the group's scale once; the bias term is b·Σx with Σx per group
// precomputed once per token. 3/5/6-bit bit streams are unpacked with permutexvar + variable shifts.
// Four rows are processed together so eight independent FMA chains hide latency.
//
// Prefill (n >= kGemmMinTokens): blocked GEMM. For a block of 32 output rows and kKc inputs the
// weights are decoded once to f32 and transposed into a panel Wp[k][32] (L1/L2 resident), then a
// 6-token x 32-row register-tiled microkernel (12 zmm accumulators, x broadcast from memory)
// sweeps all tokens. Decode cost is amortised over the tokens, so every format runs at the f32
// FMA rate.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/quant.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/weight_format.h"

// GCC 12 reports a false -Wmaybe-uninitialized inside its own _mm512_reduce_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")

namespace vlm::ops::cpu::avx512 {
namespace {

constexpr int64_t kGemmMinTokens = 8;
constexpr int64_t kKc = 256;  // panel depth: 256 x 32 f32 = 32 KiB
constexpr int kNr = 32;       // panel width (output rows)
constexpr int kMr = 6;        // microkernel tokens

// Lane i of half h of a 32-element bit-stream chunk starts at bit p = (16h + i) * bits: dword
// p / 32 of the chunk, shift p % 32.
template <int B>
struct StreamIdx {
  __m512i word[2], word_next[2], shift[2], shift_next[2];
  StreamIdx() {
    alignas(64) int32_t w[16], wn[16], s[16], sn[16];
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < 16; ++i) {
        int p = (16 * h + i) * B;
        w[i] = p / 32;
        wn[i] = std::min(p / 32 + 1, 15);
        s[i] = p % 32;
        sn[i] = 32 - p % 32;  // a shift of 32 yields 0: no spill when the value fits one dword
      }
      word[h] = _mm512_load_si512(w);
      word_next[h] = _mm512_load_si512(wn);
      shift[h] = _mm512_load_si512(s);
      shift_next[h] = _mm512_load_si512(sn);
    }
  }
};

// Decodes chunk c (elements 32c .. 32c+31) of a row into two f32 vectors: (even, odd) elements for
// paired formats, (0-15, 16-31) otherwise. Quantized formats give the raw codes.
template <Fmt F>
inline void decode_chunk(const void* row, int64_t c, __m512& a, __m512& b) {
  if constexpr (F == Fmt::kF32) {
    const float* p = static_cast<const float*>(row) + 32 * c;
    a = _mm512_loadu_ps(p);
    b = _mm512_loadu_ps(p + 16);
  } else if constexpr (F == Fmt::kF16) {
    const uint16_t* p = static_cast<const uint16_t*>(row) + 32 * c;
    a = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    b = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
  } else if constexpr (F == Fmt::kBF16) {
    __m512i v = _mm512_loadu_si512(static_cast<const uint16_t*>(row) + 32 * c);
    a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  } else if constexpr (F == Fmt::kQ4) {
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(row) + 16 * c)));
    a = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
    b = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
  } else if constexpr (F == Fmt::kQ2) {
    __m128i v8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(row) + 8 * c));
    __m512i v = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(v8, v8));  // lane l: byte l/2
    v = _mm512_srlv_epi32(v, _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0));
    a = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(3)));
    b = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 2), _mm512_set1_epi32(3)));
  } else if constexpr (F == Fmt::kQ8) {
    const uint8_t* p = static_cast<const uint8_t*>(row) + 32 * c;
    a = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    b = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  } else {
    constexpr int B = bits_of(F);
    static const StreamIdx<B> idx;
    const __m512i mask = _mm512_set1_epi32((1 << B) - 1);
    __m512i v = _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << B) - 1u),
                                         static_cast<const uint32_t*>(row) + B * c);
    __m512 out[2];
    for (int h = 0; h < 2; ++h) {
      __m512i lo = _mm512_srlv_epi32(_mm512_permutexvar_epi32(idx.word[h], v), idx.shift[h]);
      __m512i hi = _mm512_sllv_epi32(_mm512_permutexvar_epi32(idx.word_next[h], v), idx.shift_next[h]);
      out[h] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_or_si512(lo, hi), mask));
    }
    a = out[0];
    b = out[1];
  }
}

// Per-token activations prepared for the row kernels: x permuted per chunk into (even, odd) halves
// for paired formats, and Σx per quantization group.
struct PreparedX {
  std::vector<float> perm;
  std::vector<float> group_sum;
};

void prepare_x(const float* x, int64_t k, Fmt f, int group, PreparedX& p) {
  if (is_paired(f)) {
    p.perm.resize(static_cast<size_t>(k));
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const int64_t full = k / 32 * 32;
    for (int64_t c = 0; c < full; c += 32) {
      const __m512 a = _mm512_loadu_ps(x + c), b = _mm512_loadu_ps(x + c + 16);
      _mm512_storeu_ps(p.perm.data() + c, _mm512_permutex2var_ps(a, even, b));
      _mm512_storeu_ps(p.perm.data() + c + 16, _mm512_permutex2var_ps(a, odd, b));
    }
    for (int64_t i = full; i < k; ++i) p.perm[i] = x[i];
  }
  if (is_quant(f)) {
    // Σx per group, in the element order of the scalar loop it replaced (group sizes are multiples of 32,
    // k of the group size).
    p.group_sum.resize(static_cast<size_t>(k / group));
    for (int64_t g = 0; g < k / group; ++g) {
      float s = 0.0f;
      for (int j = 0; j < group; ++j) s += x[g * group + j];
      p.group_sum[g] = s;
    }
  }
}

// Software prefetch for the decode GEMVs. Rows are short (896 bf16 inputs = 1,792 bytes for
// Qwen2.5-0.5B), so a group of R rows is R streams of a few dozen cache lines each: the hardware
// prefetcher barely trains before a stream ends, and a 4864 x 896 GEMV streamed at half the rate of a
// 896 x 4864 one (same bytes). Each chunk load therefore also prefetches the same offset in the row
// kPrefetchGroups groups of R rows further on, so the next rows are in flight while these are summed.
constexpr int64_t kPrefetchGroups = 2;
// Into L2, not L1 (2026-11-26 19:40, one core, thread CPU time, ~64 MB of distinct matrices streamed,
// alternating runs at load 7-9): bf16 576x576 13-14 -> 17-19 GB/s, 896x896 12-14.5 -> 15.6-17,
// 4864x896 12-15.6 -> 14.3-15.7, 896x4864 13.3-14.9 -> 12.1-13.9 (the one shape not helped); the
// VNNI 4-bit kernel gained more (simd_quant_vnni.cpp). A one-thread sequential read gets ~16 GB/s
// then. Our reading: prefetches into L1 hold its few miss buffers and evict the activations, while
// the L1's own prefetcher pulls lines from L2 in time.
constexpr auto kPrefetchHint = _MM_HINT_T1;

int64_t row_bytes(const Weight& w) {
  return w.quantized ? w.quant.words_per_row() * 4 : w.cols() * static_cast<int64_t>(dtype_size(w.dense.dtype()));
}
// The one-row path (rows_per_group 1) looks at least 4 KB ahead: two rows of 576 bf16 inputs (2.3 KB)
// are ~150 ns of streaming, under a miss latency. One core, streamed, four alternating rounds (20:12,
// load 5.5-6): 576 x 576 two rows ahead 12.5-14.4 GB/s vs four 13.6-16.6, 1536 x 576 12.0-14.5 vs
// 15.0-17.2; at 896 inputs (3.6 KB for two rows) four rows ahead was no better (13.7-16.3 vs 15.6-17.1).
int64_t prefetch_distance(const Weight& w, int rows_per_group) {
  const int64_t d = kPrefetchGroups * rows_per_group * row_bytes(w);
  return rows_per_group == 1 ? std::max<int64_t>(d, 4096) : d;
}

// Prefetches [p, p + bytes) into L2. Used at the start of a pool chunk: the in-loop prefetch runs
// kPrefetchGroups row groups ahead, so a chunk's first groups would otherwise arrive on demand, one
// miss latency at a time — and at decode sizes a pool round has only ~8 chunks, and a thread's next
// chunk does not follow its last one in memory (claims run downwards), so every chunk paid that.
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, kPrefetchHint);
}

// Bytes of one 32-element chunk in format F (the 3/5/6-bit streams: 4·B bytes).
template <Fmt F>
constexpr int chunk_bytes() {
  switch (F) {
    case Fmt::kF32: return 128;
    case Fmt::kF16:
    case Fmt::kBF16: return 64;
    default: return 4 * bits_of(F);
  }
}

// Prefetches chunk c's bytes `ahead` bytes further on (prefetches never fault, so running past the
// matrix end is harmless). Chunks smaller than a line prefetch only when they start a new line.
template <Fmt F>
inline void prefetch_chunk(const void* row, int64_t c, int64_t ahead) {
  constexpr int cb = chunk_bytes<F>();
  const char* p = static_cast<const char*>(row) + c * cb + ahead;
  if constexpr (cb >= 64) {
    for (int off = 0; off < cb; off += 64) _mm_prefetch(p + off, kPrefetchHint);
  } else {
    if (((c * cb) & 63) < cb) _mm_prefetch(p, kPrefetchHint);
  }
}

// out[0..R) = dot(W[r0 + i], x) for R consecutive rows (decode path).
template <Fmt F, int R>
void dot_rows(const Weight& w, int64_t r0, const float* x, const PreparedX& px, float* out) {
  const int64_t k = w.cols();
  const float* xv = is_paired(F) ? px.perm.data() : x;
  const void* rows[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) rows[i] = row_ptr(w, r0 + i);
  __m512 acc[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  float tail[R] = {};
  if constexpr (!is_quant(F)) {
    __m512 acc2[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) acc2[i] = _mm512_setzero_ps();
    const int64_t chunks = k / 32;
    const int64_t ahead = prefetch_distance(w, R);
    for (int64_t c = 0; c < chunks; ++c) {
      __m512 x0 = _mm512_loadu_ps(xv + 32 * c), x1 = _mm512_loadu_ps(xv + 32 * c + 16);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        prefetch_chunk<F>(rows[i], c, ahead);
        __m512 a, b;
        decode_chunk<F>(rows[i], c, a, b);
        acc[i] = _mm512_fmadd_ps(a, x0, acc[i]);
        acc2[i] = _mm512_fmadd_ps(b, x1, acc2[i]);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      acc[i] = _mm512_add_ps(acc[i], acc2[i]);
      for (int64_t j = chunks * 32; j < k; ++j) tail[i] += scalar_at(rows[i], F, j) * x[j];
    }
  } else {
    const QuantizedMatrix& m = w.quant;
    const int gs = m.spec.group_size;
    const int64_t groups = k / gs, chunks_per_group = gs / 32;
    const DType sd = m.scales.dtype();
    const int64_t ahead = prefetch_distance(w, R);
    for (int64_t g = 0; g < groups; ++g) {
      __m512 qa[R], qb[R];
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) qa[i] = qb[i] = _mm512_setzero_ps();
      for (int64_t cc = 0; cc < chunks_per_group; ++cc) {
        const int64_t c = g * chunks_per_group + cc;
        __m512 x0 = _mm512_loadu_ps(xv + 32 * c), x1 = _mm512_loadu_ps(xv + 32 * c + 16);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
          prefetch_chunk<F>(rows[i], c, ahead);
          __m512 a, b;
          decode_chunk<F>(rows[i], c, a, b);
          qa[i] = _mm512_fmadd_ps(a, x0, qa[i]);
          qb[i] = _mm512_fmadd_ps(b, x1, qb[i]);
        }
      }
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        const int64_t gi = (r0 + i) * groups + g;
        float s = load_f32(m.scales.raw(), sd, gi), bb = load_f32(m.biases.raw(), sd, gi);
        acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(s), _mm512_add_ps(qa[i], qb[i]), acc[i]);
        tail[i] += bb * px.group_sum[g];
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_ps(acc[i]) + tail[i];
}

// One output of a decode GEMV group: its weight, f32 bias (or null), output rows, and the number of its
// first block of R rows in the group's numbering.
struct GemvOut {
  const Weight* w;
  const float* bias;
  float* y;
  int64_t block0;
};

// y_o = x · W_oᵀ (+ b_o) for every output o of the group (all in format F with the same cols, and the
// same group size when quantized) as ONE parallel_for per token over all the outputs' row blocks: the
// small decode matrices (q/k/v, gate/up) then share one pool round and its ramp-up.
template <Fmt F>
void gemv_group(const float* x, int64_t n, GemvOut* outs, int count) {
  const Weight& w0 = *outs[0].w;
  const int64_t k = w0.cols();
  const int group = w0.quantized ? w0.quant.spec.group_size : 32;
  constexpr int R = 4;
  // Rows of up to 3 KB (576-1536 bf16 inputs) are read one at a time: then each thread's loads
  // form one sequential stream across row ends, which the hardware prefetchers follow, instead of R
  // interleaved streams a few dozen lines long that restart every R rows. Measured one thread, thread
  // CPU time, 400 MB of bf16 matrices (2026-11-26 12:05, loaded machine, best of 8, alternating):
  // 1536x576 7.9 -> 13.2 GB/s, 4864x896 9.8 -> 14.5, 49152x576 8.5 -> 14.0; at 2048+ inputs the R
  // interleaved rows are as fast or faster (2048x2048 12.9 vs 11.7, 896x4864 14.7 vs 10.1).
  // Rechecked with the L2 prefetches (19:57, 576x1536 and 896x4864 bf16 streamed on one core, three
  // alternating rounds): one row at a time 16.3-19.6 / 14.5-21.2 GB/s vs four 16.6-18.4 / 18.4-19.0,
  // no consistent difference, so the threshold stays. But that threshold was `< 3072`, which left
  // 1536-input rows (3,072 bytes: SmolLM2's down_proj, a fifth of its decode bytes) on the four-row
  // path, against this comment's own intent. With the matrices in huge pages as the loaded weights are
  // (bench_kernels --stream, 2026-11-27 03:50, alternating, load ~9, thread CPU time), 576 x 1536 bf16:
  // four rows 11.4-14.0 GB/s vs one at a time 15.5-21.3 in four rounds, then old vs new binary
  // 18.6-21.5 vs 22.6-24.1 in four more (one at a time faster in all 8); 896 x 4864 (9.7 KB rows) no
  // consistent difference (13.2-17.9 vs 10.6-18.3), so it stays on four.
  const bool short_rows = !w0.quantized && row_bytes(w0) < 4096;
  int64_t blocks = 0;
  for (int o = 0; o < count; ++o) {
    outs[o].block0 = blocks;
    blocks += (outs[o].w->rows() + R - 1) / R;
  }
  // Reused across calls (one per calling thread): no allocation per token once warm. The job below runs
  // on pool threads too, so it reaches the caller's copy through this reference.
  thread_local PreparedX px_store;
  PreparedX& px = px_store;
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * k;
    prepare_x(xt, k, F, group, px);
    parallel_for(blocks, R * k, [&](int64_t b0, int64_t b1) {
      int o = 0;
      // The chunk's first blocks, which no earlier block of this thread has prefetched.
      for (int64_t b = b0; b < std::min(b1, b0 + kPrefetchGroups); ++b) {
        while (b >= (o + 1 < count ? outs[o + 1].block0 : blocks)) ++o;
        const Weight& w = *outs[o].w;
        const int64_t r = (b - outs[o].block0) * R, nr = std::min<int64_t>(R, w.rows() - r);
        prefetch_bytes(row_ptr(w, r), nr * row_bytes(w));
      }
      o = 0;
      for (int64_t b = b0; b < b1; ++b) {
        while (b >= (o + 1 < count ? outs[o + 1].block0 : blocks)) ++o;
        const Weight& w = *outs[o].w;
        const float* bias = outs[o].bias;
        const int64_t rows = w.rows(), r = (b - outs[o].block0) * R;
        float* yt = outs[o].y + t * rows;
        float out[R];
        if (short_rows) {
          for (int64_t rr = r; rr < std::min(rows, r + R); ++rr) {
            dot_rows<F, 1>(w, rr, xt, px, out);
            yt[rr] = out[0] + (bias ? bias[rr] : 0.0f);
          }
        } else if (r + R <= rows) {
          dot_rows<F, R>(w, r, xt, px, out);
          for (int i = 0; i < R; ++i) yt[r + i] = out[i] + (bias ? bias[r + i] : 0.0f);
        } else {
          for (int64_t rr = r; rr < rows; ++rr) {
            dot_rows<F, 1>(w, rr, xt, px, out);
            yt[rr] = out[0] + (bias ? bias[rr] : 0.0f);
          }
        }
      }
    });
  }
}

template <Fmt F>
void gemv(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  GemvOut one{&w, bias, y, 0};
  gemv_group<F>(x, n, &one, 1);
}

// ---- GEMM ----------------------------------------------------------------------------------------

// Row r, inputs [k0, k0 + kc) as f32 in natural order (kc a multiple of 32 unless it reaches the end
// of a dense row; k0 a multiple of the group size for quantized rows).
template <Fmt F>
void decode_segment(const Weight& w, int64_t r, int64_t k0, int64_t kc, float* out) {
  const void* row = row_ptr(w, r);
  const int64_t c0 = k0 / 32, chunks = kc / 32;
  const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  float s = 1.0f, b = 0.0f;
  int64_t chunks_per_group = 1, groups = 0;
  if constexpr (is_quant(F)) {
    chunks_per_group = w.quant.spec.group_size / 32;
    groups = w.cols() / w.quant.spec.group_size;
  }
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t cc = c0 + c;
    __m512 a, bb;
    decode_chunk<F>(row, cc, a, bb);
    if constexpr (is_paired(F)) {
      __m512 lo = _mm512_permutex2var_ps(a, lo_idx, bb), hi = _mm512_permutex2var_ps(a, hi_idx, bb);
      a = lo;
      bb = hi;
    }
    if constexpr (is_quant(F)) {
      if (cc % chunks_per_group == 0 || c == 0) {
        const int64_t gi = r * groups + cc / chunks_per_group;
        s = load_f32(w.quant.scales.raw(), w.quant.scales.dtype(), gi);
        b = load_f32(w.quant.biases.raw(), w.quant.biases.dtype(), gi);
      }
      a = _mm512_fmadd_ps(a, _mm512_set1_ps(s), _mm512_set1_ps(b));
      bb = _mm512_fmadd_ps(bb, _mm512_set1_ps(s), _mm512_set1_ps(b));
    }
    _mm512_storeu_ps(out + 32 * c, a);
    _mm512_storeu_ps(out + 32 * c + 16, bb);
  }
  for (int64_t j = chunks * 32; j < kc; ++j) out[j] = scalar_at(row, F, k0 + j);  // dense tails only
}

// y[t, 0..32) (+)= x[t, 0..kc) · panel, for MT tokens; masks select valid rows of the 32.
template <int MT>
void micro_kernel(const float* panel, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy, __mmask16 m0,
                  __mmask16 m1, const float* init /* bias at k0 == 0, or null for zero */, bool first) {
  // Every loop over t is fully unrolled: at -O2 GCC leaves them rolled, which keeps c0/c1 in memory
  // (a store-forwarding round trip per FMA) and ran this kernel at 42 % of the FMA peak instead of ~98 %.
  __m512 c0[MT], c1[MT];
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
    if (first) {
      c0[t] = init ? _mm512_maskz_loadu_ps(m0, init) : _mm512_setzero_ps();
      c1[t] = init ? _mm512_maskz_loadu_ps(m1, init + 16) : _mm512_setzero_ps();
    } else {
      c0[t] = _mm512_maskz_loadu_ps(m0, y + t * ldy);
      c1[t] = _mm512_maskz_loadu_ps(m1, y + t * ldy + 16);
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    __m512 w0 = _mm512_load_ps(panel + k * kNr), w1 = _mm512_load_ps(panel + k * kNr + 16);
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
      c0[t] = _mm512_fmadd_ps(xb, w0, c0[t]);
      c1[t] = _mm512_fmadd_ps(xb, w1, c1[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
    _mm512_mask_storeu_ps(y + t * ldy, m0, c0[t]);
    _mm512_mask_storeu_ps(y + t * ldy + 16, m1, c1[t]);
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, __mmask16, __mmask16,
                         const float*, bool);
constexpr MicroFn kMicro[kMr + 1] = {nullptr,         micro_kernel<1>, micro_kernel<2>, micro_kernel<3>,
                                     micro_kernel<4>, micro_kernel<5>, micro_kernel<6>};

template <Fmt F>
void gemm(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  const int64_t rows = w.rows(), k = w.cols();
  const int64_t blocks = (rows + kNr - 1) / kNr;
  parallel_for(blocks, n * k * kNr, [&](int64_t b0, int64_t b1) {
    // Thread-local scratch: decoded rows [32][kKc] and the transposed panel [kKc][32].
    thread_local std::vector<float> seg, panel_store;
    seg.resize(static_cast<size_t>(kNr * kKc));
    panel_store.resize(static_cast<size_t>(kNr * kKc + 16));
    float* panel = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(panel_store.data()) + 63) & ~uintptr_t{63});
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * kNr, nr = std::min<int64_t>(kNr, rows - r0);
      const __mmask16 m0 = static_cast<__mmask16>(nr >= 16 ? 0xffff : (1u << nr) - 1u);
      const __mmask16 m1 = static_cast<__mmask16>(nr >= 32 ? 0xffff : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
      for (int64_t k0 = 0; k0 < k; k0 += kKc) {
        const int64_t kc = std::min(kKc, k - k0);
        for (int64_t i = 0; i < nr; ++i) decode_segment<F>(w, r0 + i, k0, kc, seg.data() + i * kKc);
        for (int64_t kk = 0; kk < kc; ++kk) {
          float* dst = panel + kk * kNr;
          for (int64_t i = 0; i < nr; ++i) dst[i] = seg[i * kKc + kk];
          for (int64_t i = nr; i < kNr; ++i) dst[i] = 0.0f;
        }
        const float* init = bias ? bias + r0 : nullptr;
        for (int64_t t = 0; t < n; t += kMr) {
          const int64_t mt = std::min<int64_t>(kMr, n - t);
          kMicro[mt](panel, kc, x + t * k + k0, k, y + t * rows + r0, rows, m0, m1, init, k0 == 0);
        }
      }
    }
  });
}

template <Fmt F>
void linear_fmt(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  if (n >= kGemmMinTokens)
    gemm<F>(x, n, w, bias, y);
  else
    gemv<F>(x, n, w, bias, y);
}


// The bias as f32 [rows], or null without one: the tensor's own data when it is contiguous f32, else a
// converted copy in `store` (decode calls linear ~200 times per token; most biases need no copy).
const float* bias_f32(const Tensor& t, std::vector<float>& store) {
  if (!t.defined()) return nullptr;
  if (t.dtype() == DType::kF32 && t.is_contiguous()) return t.data<float>();
  store = vector_f32(t);
  return store.data();
}

// Quantized weights on AVX512-VNNI: the integer-dot kernels (simd_quant_vnni.cpp) read each row once per
// four tokens, so they beat the GEMM (which first decodes panels to f32) up to ~16 tokens.
constexpr int64_t kQuantGemvMaxTokens = 16;

void linear_one(const float* x, int64_t n, const Weight& w, const float* b, float* y) {
  if (w.quantized && n < kQuantGemvMaxTokens) {
    const Weight* ws[1] = {&w};
    const float* bs[1] = {b};
    float* ys[1] = {y};
    if (quant_gemv_vnni(x, n, ws, bs, ys, 1)) return;
  }
  with_format(w, [&](auto tag) { linear_fmt<decltype(tag)::value>(x, n, w, b, y); });
}

// Whether two weights can share one GEMV pass: same stored format, inputs and (quantized) group size.
bool same_layout(const Weight& a, const Weight& b) {
  if (a.quantized != b.quantized || a.cols() != b.cols()) return false;
  if (!a.quantized) return a.dense.dtype() == b.dense.dtype();
  return a.quant.spec.bits == b.quant.spec.bits && a.quant.spec.group_size == b.quant.spec.group_size &&
         a.quant.scales.dtype() == b.quant.scales.dtype();
}

}  // namespace

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias_t, float* y) {
  std::vector<float> store;
  linear_one(x, n, w, bias_f32(bias_t, store), y);
}

void linear_group(const float* x, int64_t n, const LinearOut* outs, int count) {
  constexpr int kMaxGroup = 8;
  bool fused = count > 1 && count <= kMaxGroup;
  for (int i = 1; fused && i < count; ++i) fused = same_layout(*outs[0].w, *outs[i].w);
  const Weight& w0 = *outs[0].w;
  // Decode only: the GEMM is compute-bound and already splits every matrix into many blocks.
  const bool gemv = w0.quantized ? n < kQuantGemvMaxTokens : n < kGemmMinTokens;
  std::vector<float> stores[kMaxGroup];
  if (!fused || !gemv) {
    for (int i = 0; i < count; ++i) {
      std::vector<float> store;
      linear_one(x, n, *outs[i].w, outs[i].bias ? bias_f32(*outs[i].bias, store) : nullptr, outs[i].y);
    }
    return;
  }
  const Weight* ws[kMaxGroup];
  const float* bs[kMaxGroup];
  float* ys[kMaxGroup];
  GemvOut go[kMaxGroup];
  for (int i = 0; i < count; ++i) {
    ws[i] = outs[i].w;
    bs[i] = outs[i].bias ? bias_f32(*outs[i].bias, stores[i]) : nullptr;
    ys[i] = outs[i].y;
    go[i] = GemvOut{ws[i], bs[i], ys[i], 0};
  }
  if (w0.quantized && quant_gemv_vnni(x, n, ws, bs, ys, count)) return;
  with_format(w0, [&](auto tag) { gemv_group<decltype(tag)::value>(x, n, go, count); });
}

void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out) {
  const int64_t d = table.cols();
  auto run = [&](auto fmt_tag) {
    constexpr Fmt F = decltype(fmt_tag)::value;
    parallel_for(n, d, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float* o = out + i * d;
        decode_segment<F>(table, ids[i], 0, d, o);
        if (scale != 1.0f)
          for (int64_t c = 0; c < d; ++c) o[c] *= scale;
      }
    });
  };
  with_format(table, run);
}

}  // namespace vlm::ops::cpu::avx512

#pragma GCC pop_options
