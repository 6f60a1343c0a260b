// The CUDA backend as ops.cpp sees it: a kernel table with the CPU table's shape (one entry per op
// of ops.h, same arguments and semantics, device pointers for float data and weights, host pointers
// for index arrays — see ops.h "devices"), plus device memory, copies and the stream. Plain C++ (no
// CUDA types), so ops.cpp and tests include it without nvcc. Implemented by the .cu files of this
// folder when the build has nvcc; by kernels/cuda_stub.cpp (every call throws "built without CUDA")
// otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "core/memory.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_dispatch.h"

namespace vlm::ops::cuda {

// True when a CUDA device can run our kernels (compiled in, a device present, the context created).
bool available();
// Every op of ops.h on the GPU; all entries non-null. mrope takes the per-frequency stream table
// (host, [head_dim / 2]) exactly like the CPU table's entry.
const cpu::KernelTable& kernel_table();

// Device memory from the caching allocator (freed blocks are kept for reuse and reported as cache).
void* device_alloc(size_t bytes, MemCategory category);
void device_free(void* p, size_t bytes, MemCategory category);
// Returns every cached (free) block to the driver.
void release_cache();

// Copies: host<->device and device<->device on the backend stream; a copy whose destination is the
// host waits for it to finish.
void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width, size_t rows);
void synchronize();

// ops::run_graph on the GPU (graph.cu; rules in ops.h "captured steps"): step() captured into CUDA
// graphs, one executable per (key, piece), updated in place each step and launched.
void run_graph(const void* key, const std::function<void()>& step);
// ops::run_graph_async / graph_wait on the GPU (graph.cu "queued steps").
uint64_t run_graph_async(const void* key, const std::function<void()>& step);
void graph_wait(uint64_t ticket);
// ops::argmax_device, ops::embedding_device_ids and ops::sample_device on the GPU (elementwise.cu,
// embedding.cu, sample.cu).
void argmax_device(const float* x, int64_t n, int64_t d, int32_t* device_ids);
void embedding_device_ids(const Weight& table, const int32_t* device_ids, int64_t n, float scale, float* out);
void sample_device(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
                   int64_t n_history, double u, int32_t* device_id);
// Called by ops.cpp before every CUDA op: under run_graph, ends and launches the piece captured so far
// once it holds its share of ops (8, 16, 32, ... up to the piece size), so the GPU starts early.
void graph_op_boundary();
// Whether run_graph captures (VLMCHECK_CUDA_GRAPHS=0 turns it off; so does VLMCHECK_CUDA_PROFILE).
bool graphs_enabled();
// Tests and benchmarks: overrides VLMCHECK_CUDA_GRAPHS (on/off) and VLMCHECK_CUDA_GRAPH_OPS (the
// most ops per captured piece, default 64 for run_graph and 0 = the whole step as one graph for
// run_graph_async; either sets both). Not inside run_graph.
void set_graph_options(bool enabled, int piece_ops);
// Decode attention's split merge: true (the default) = the last block of each team of splits merges
// them in the same launch, false = a second launch (attention_combine). VLMCHECK_CUDA_DECODE_MERGE=combine
// sets false as the initial value; tests and benchmarks switch it between calls (not inside run_graph).
void set_decode_last_block_merge(bool on);
// The 4-bit tensor-core GEMV's K-splits: 0 (the initial value unless VLMCHECK_CUDA_GEMV_SPLITK sets
// one) = the launch's own rule, 1 = thread-block clusters only, N in 2..64 = N splits per row group
// (capped at one round per warp) reduced through global memory. Tests and benchmarks switch it
// between calls (not inside run_graph).
void set_gemv_split_k(int splits);
// Decode attention's kernel: false (the default) = the register kernel, true = the tile kernel (K/V
// staged through shared memory). VLMCHECK_CUDA_DECODE_KERNEL=tile sets true as the initial value; tests
// and benchmarks switch it between calls (not inside run_graph).
void set_decode_tile_kernel(bool on);
// Whether VLMCHECK_CUDA_PROFILE is on (profile.cu's rule, read once).
bool profiling_enabled();
// RoPE of q [n_tokens, n_heads, head_dim] and k [n_tokens, n_kv_heads, head_dim] in one launch
// (rope.cu; ops::rope_qk / mrope_qk call it for decode-sized calls). stream_of: mrope's per-frequency
// stream table, null for plain RoPE over rotary_dim.
void rope_qk(float* q, int64_t n_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
             int64_t rotary_dim, const float* inv_freq, const int64_t* positions, const int* stream_of,
             float attention_scaling);
// ops::attention_with_rope's fused decode form (attention.cu / attention_decode.cu): q and the new key
// row (the last of nk) rotated inside the decode attention kernel, the key row written back into k.
// Returns false, launching nothing, where it does not apply (nq > 1, partial rotary, head_dim or head
// grouping the kernel does not take, non-consecutive k_pos, VLMCHECK_CUDA_ROPE_ATTENTION=0, ...): the
// caller then runs rope_qk and attention. Arguments as ops::attention_with_rope, mrope's per-frequency
// stream table in stream_of (null for plain RoPE), positions [streams, nq] host memory.
bool attention_rope_decode(float* q, int64_t nq, int64_t q_pos0, float* k, const float* v, const int64_t* k_pos,
                           int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale,
                           float softcap, const AttentionMask& mask, int64_t rotary_dim, const float* inv_freq,
                           const int64_t* positions, const int* stream_of, float attention_scaling, float* out);
// Counters since the process started: run_graph steps (eager_steps of them ran uncaptured, the
// first of each key), pieces launched, executables instantiated and updated in place; and where the
// captured steps' host time went: in the step's own code under capture (the ops' host work and their
// captured launches), in the graph API (ending each piece's capture, updating or instantiating its
// executable, uploading the staged bytes and launching it), and waiting at the end for the GPU (the
// host outputs). A step whose capture + graph API time is about its whole duration is host-bound.
struct GraphStats {
  int64_t steps = 0, eager_steps = 0, pieces = 0, instantiations = 0, updates = 0;
  double capture_s = 0, graph_api_s = 0, wait_s = 0;
};
GraphStats graph_stats();

// Roofline probes on the current GPU, measured when called: device-to-device copy bandwidth
// (bytes read + written, GB/s) and dense bf16 matrix throughput through cuBLASLt (GFLOP/s).
double probe_copy_bandwidth_gbs();
double probe_bf16_matmul_gflops();

}  // namespace vlm::ops::cuda
