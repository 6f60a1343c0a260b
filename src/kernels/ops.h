// Backend-neutral op interface. Activations are f32, row-major, PyTorch order; weights stay in their
// stored format (f32/f16/bf16 dense, or MLX affine-quantized) and are read directly by the kernels.
// Every op has a scalar reference (src/kernels/cpu/ref/) that is always built; the CPU backend picks a
// SIMD path at run time (AVX2 / AVX-512 / AVX512-BF16) when the CPU has it. All ops run multithreaded
// over ThreadPool::global() — so never call an op from inside a ThreadPool::global() job (the pool
// runs one parallel_for at a time; a nested one would wait on itself). Small jobs stay on the
// calling thread. Shapes are written as [rows, cols].
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/quant.h"
#include "core/tensor.h"

namespace vlm::ops {

// A Linear/Embedding weight matrix [out, in] in its stored format.
struct Weight {
  Tensor dense;           // f32/f16/bf16 [out, in], used when !quantized
  QuantizedMatrix quant;  // used when quantized
  bool quantized = false;
  int64_t rows() const { return quantized ? quant.rows : dense.dim(0); }  // out
  int64_t cols() const { return quantized ? quant.cols : dense.dim(1); }  // in
  size_t nbytes() const { return quantized ? quant.nbytes() : dense.nbytes(); }
};

// y[n, out] = x[n, in] · Wᵀ (+ bias[out] if bias is defined, any float dtype). x and y must not
// overlap. Few tokens run as GEMV (memory-bound: n < 8, or n < 16 for 2/4/8-bit weights on
// AVX512_BF16, which read each row once per four tokens), more as a blocked GEMM (compute-bound).
void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y);

// Several linears of one input (q/k/v, gate/up): for each i < count, outs[i].y[n, w->rows()] =
// x · outs[i].wᵀ (+ *outs[i].bias when bias is non-null and defined). Every w has the same cols; no y
// overlaps x or another y. Same results as `count` calls of linear(); backends run the group as one
// pass where the formats allow (one thread-pool round on the CPU, one launch on CUDA), which is what
// small decode matrices need.
//
// Two fused forms (the decoder's residual adds and pre-norms folded into the GEMVs around them; every
// backend honours them, natively where its kernels can, else by composing the plain ops):
// - accumulate: y += x · Wᵀ (+ bias) — the product plus bias is formed first, then added to y, so the
//   result equals linear() into a temporary r followed by add(y, r). y (the residual stream) must not
//   overlap x.
// - norm: the member reads rms_norm(x, norm->weight, norm->eps, norm->offset) instead of x (x is the
//   un-normalized stream; the same values as rms_norm into a temporary followed by the linear, up to
//   the order of the sum of squares). Every member of a group passes the same norm or none; weight has
//   cols() values.
struct LinearNorm {
  const Tensor* weight = nullptr;  // [cols] any float dtype
  float eps = 1e-6f;
  float offset = 0.0f;  // 1 for Gemma's (1 + w) norms
};
struct LinearOut {
  const Weight* w = nullptr;
  const Tensor* bias = nullptr;  // null or undefined: no bias
  float* y = nullptr;
  bool accumulate = false;            // y += x · Wᵀ (+ bias) instead of y =
  const LinearNorm* norm = nullptr;  // null: x as given
};
void linear_group(const float* x, int64_t n, const LinearOut* outs, int count);

// out[i, :] = row ids[i] of the table (dense or quantized), as f32, times `scale`.
void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out);
// embedding() with the ids in memory of the current device (e.g. argmax_device's output of the step
// before), so a decode step can be queued before the host knows its token. The ids are not checked on
// the host: a row outside the table gives zeros.
void embedding_device_ids(const Weight& table, const int32_t* device_ids, int64_t n, float scale, float* out);

// y = x / sqrt(mean(x²) + eps) * (weight + offset); offset is 1 for Gemma's (1 + w) norms, else 0.
// x, y: [n, d]; weight [d] any float dtype. In-place (x == y) allowed.
void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y);
// The residual add fused with the norm that follows it: x += r, then y = rms_norm(x) (same arguments
// as rms_norm). x, r, y: [n, d]; y may alias r but not x.
void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y);
// LayerNorm with optional bias (undefined tensor = no bias).
void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y);

// Rotary embedding, HF "rotate_half" convention: the first rotary_dim dims of each head are split into
// two halves [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]; angle = position * inv_freq[i].
// x: [n_tokens, n_heads, head_dim]; inv_freq: [rotary_dim / 2]; positions: [n_tokens].
// attention_scaling multiplies cos and sin (Llama-3 / YaRN style scalings), 1 normally.
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling = 1.0f);
// M-RoPE (Qwen2-VL): frequency index i uses positions[section(i)], sections as in mrope_section
// (e.g. {16, 24, 24} over head_dim/2 frequencies); positions: [3, n_tokens].
void mrope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
           const int64_t* positions3, const std::vector<int>& sections, float attention_scaling = 1.0f);
// A layer's q [n_tokens, n_heads, head_dim] and k [n_tokens, n_kv_heads, head_dim] rotated with the same
// positions and frequencies: exactly rope(q, ...) then rope(k, ...) (mrope_qk: mrope), in one launch
// on CUDA for decode-sized calls. q and k must not overlap.
void rope_qk(float* q, int64_t n_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
             int64_t rotary_dim, const float* inv_freq, const int64_t* positions, float attention_scaling = 1.0f);
void mrope_qk(float* q, int64_t n_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
              const float* inv_freq, const int64_t* positions3, const std::vector<int>& sections,
              float attention_scaling = 1.0f);
// Interleaved M-RoPE (Qwen3-VL, Qwen3.5; HF apply_interleaved_mrope): frequency i takes the height
// stream when i % 3 == 1 and i < 3 * sections[1], the width stream when i % 3 == 2 and
// i < 3 * sections[2], the temporal stream otherwise (e.g. sections {24, 20, 20}). Same arguments.
void mrope_interleaved(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
                       const int64_t* positions3, const std::vector<int>& sections, float attention_scaling = 1.0f);

enum class Activation { kSilu, kGeluTanh, kGeluErf, kQuickGelu, kRelu };
// In place on n values.
void activate(float* x, int64_t n, Activation act);
// gate[i] = act(gate[i]) * up[i] (SwiGLU / GeGLU), n values.
void gated_activate(float* gate, const float* up, int64_t n, Activation act);

// Row softmax in place: x [n, d].
void softmax(float* x, int64_t n, int64_t d);
// ids[i] = the index of row i's largest value, x [n, d] (ties: the lowest index; NaN never wins; an
// all-NaN row gives 0). `ids` is HOST memory on every device: on CUDA the op waits for its result (inside
// run_graph: written when run_graph returns), so greedy decoding copies one id per token instead of
// the logits.
void argmax(const float* x, int64_t n, int64_t d, int32_t* ids);
// argmax() into memory of the current device (no wait on CUDA): the ids stay where the next step's
// embedding_device_ids reads them; copy them to the host to see them.
void argmax_device(const float* x, int64_t n, int64_t d, int32_t* device_ids);

// ---- sampling (the built-in sampler chain of generate/sampler.h as one op) ------------------------
// The knobs of mlx-vlm's make_logits_processors + make_sampler. Disabled values are the mlx ones:
// penalties 0 (mlx: `if penalty and penalty != 0`), top_p outside (0, 1), min_p 0, top_k 0 (or >= vocab).
struct SamplingSpec {
  float temperature = 0.0f;  // 0: argmax of the log-probabilities (filters skipped)
  float top_p = 1.0f;
  float min_p = 0.0f;  // in [0, 1]; always keeps the best token (min_tokens_to_keep 1)
  int64_t top_k = 0;
  std::map<int32_t, float> logit_bias;  // added to the logits first
  float repetition_penalty = 0.0f;      // >= 0; CTRL style, once per distinct token of its window
  int64_t repetition_context = 20;      // window = the last `context` ids of the history, 0 = all of it
  float presence_penalty = 0.0f;        // subtracted once per distinct token of its window
  int64_t presence_context = 20;
  float frequency_penalty = 0.0f;  // subtracted once per occurrence in its window
  int64_t frequency_context = 20;
  // Whether a penalty reads the history, so that a step needs the token before it on the host (a
  // queued decode step cannot sample with it).
  bool reads_history() const {
    return repetition_penalty != 0.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
};
// One token from one logits row [vocab], mlx-vlm's chain in its order: logit_bias, repetition,
// presence and frequency penalties over the history (prompt then generated ids), log-softmax, then
// temperature 0 ? argmax : top_p, min_p, top_k on the unscaled log-probabilities and one categorical
// draw from softmax(logprobs / temperature) by inverse CDF at the uniform `u` in [0, 1) (the caller's
// seeded Rng draws it, so a seed gives the same tokens on every device). Exact semantics, ties and
// rounding rules: kernels/sampling.h. `logits` lives on the current device and is not modified
// (scratch holds the working copy); `history` [n_history] is HOST memory, and so is `id`: on CUDA the
// op waits for its result, so one id per token crosses to the host instead of the logits. Throws
// Error(kInvalidArgument) for out-of-range knobs, history or logit_bias ids outside [0, vocab), and a
// row whose every logit is -inf or NaN after the processors — except inside a CUDA run_graph step,
// where the id arrives only when run_graph returns: there such a row gives *id = -1, which the caller
// must check.
void sample(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history, int64_t n_history,
            double u, int32_t* id);
// sample() leaving the id in memory of the current device (no wait on CUDA), where a queued decode step's
// embedding_device_ids reads it; copy it to the host to see it. On CUDA a row whose every logit is masked
// gives -1 there (the caller checks the copy); on the CPU it throws as sample() does.
void sample_device(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
                   int64_t n_history, double u, int32_t* device_id);

// Attention of q over k/v already laid out as [tokens, heads, head_dim] (keys contiguous per token).
// q: [nq, n_heads, hd]; k, v: [nk, n_kv_heads, hd]; out: [nq, n_heads, hd]. GQA: query head h reads
// kv head h / (n_heads / n_kv_heads). Query i sits at absolute position q_pos0 + i, key j at
// k_pos[j] (absolute positions, so rotating caches can pass their ring order). Masking: with
// `causal`, key j is visible iff k_pos[j] <= q_pos; with sliding_window W > 0 also
// q_pos - k_pos[j] < W; `group_of_position` (optional, by absolute position) makes keys of the query's
// non-zero group visible regardless of order (Gemma 3 image tokens, PaliGemma prefix) — the window still bounds
// them, as transformers' Gemma 3 sliding layers do. softcap > 0: scores = softcap * tanh(scores / softcap).
struct AttentionMask {
  bool causal = true;
  int64_t sliding_window = 0;
  // Optional: group id per absolute position (0 = none); same non-zero id = mutually visible.
  const int32_t* group_of_position = nullptr;
  int64_t group_positions = 0;  // length of group_of_position
  // Precision of the two matmuls (q·kᵀ, p·v). false: f32 throughout (every CPU path, and the device
  // paths of f32 models). true: a device with tensor cores may round q, k, v and the probabilities to
  // bf16 for the matmuls, keeping f32 accumulation and an f32 softmax — the precision transformers and
  // MLX run bf16 models at. DecoderModel sets it on the device for models whose weights are not f32
  // (their linears already round activations to bf16 there). The CPU ignores it.
  bool bf16_matmul = false;
};
void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out);

// attention() with RoPE applied first (the decode step's fused form): q [nq, n_heads, hd] and the last
// nq key rows k[nk - nq, nk) are rotated exactly as rope_qk (mrope_section null) or mrope_qk
// (mrope_section set; rotary_dim must be head_dim) with `rope`'s arguments, then attended. The rotated
// key rows are written back into k (a cache keeps them rotated); q's contents afterwards are
// unspecified (the CPU rotates it in place, CUDA's fused decode kernel only in registers). Composed as
// rope_qk + attention on the CPU and wherever CUDA's decode kernel does not take the shape (it takes
// one query over consecutive k_pos with whole heads rotated: cuda_backend.h attention_rope_decode).
struct AttentionRope {
  int64_t rotary_dim = 0;
  const float* inv_freq = nullptr;                  // [rotary_dim / 2], host
  const int64_t* positions = nullptr;               // [nq], or [3, nq] with mrope_section; host
  const std::vector<int>* mrope_section = nullptr;  // non-null: M-RoPE with these sections
  float attention_scaling = 1.0f;
};
void attention_with_rope(float* q, int64_t nq, int64_t q_pos0, float* k, const float* v, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, const AttentionRope& rope, float* out);

// Elementwise helpers.
void add(float* y, const float* x, int64_t n);             // y += x
void scale(float* y, float s, int64_t n);                  // y *= s
void mul(float* y, const float* x, int64_t n);             // y *= x
void softcap(float* x, int64_t n, float cap);              // x = cap * tanh(x / cap)

// ---- KV-cache quantization (MLX affine rows, mlx-lm's QuantizedKVCache) ---------------------------
// `rows` rows of `n` f32 values, each quantized along the row in groups of `group_size` (32, 64 or
// 128; n a multiple of it) at `bits` (2..8; MLX and the KV cache use 2, 3, 4, 5, 6, 8). Layouts:
//   packed [rows, kv_packed_words(n, bits)] u32 — codes little-endian, element 0 in the low bits; the
//          row is one bit stream, so 3/5/6/7-bit codes may straddle two words (core/quant.h)
//   scales, biases [rows, n / group_size] f32 — kept in f32, not rounded to a storage dtype
// Per group the arithmetic is core's quantize_affine_group (core/quantize.h: MLX's Metal kernel,
// edge snapping so 0 is exact, half-away rounding); dequantization is w = scale * q + bias, the
// product rounded before the add. Every backend gives bit-identical codes, scales, biases and
// dequantized values (no FMA contraction, IEEE division): a quantized KV cache on CUDA holds the same
// bits as on the CPU. All buffers live on the current device.
inline int64_t kv_packed_words(int64_t n, int bits) { return n * bits / 32; }
void kv_quantize(const float* x, int64_t rows, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                 float* biases);
void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out);

// attention() over a quantized KV cache read as stored: K and V are nk rows of n_kv_heads * head_dim
// values in kv_quantize's layout (packed [nk, kv_packed_words(n_kv_heads * head_dim, bits)], scales
// and biases [nk, n_kv_heads * head_dim / group_size]; head_dim a multiple of group_size, so a group
// never straddles heads). Same result as kv_dequantize of both into f32 rows followed by attention()
// with the other arguments unchanged: values are w = scale * q + bias with the product rounded, as
// kv_dequantize. Backends may fuse the two (CUDA's decode kernel dequantizes K/V chunks in shared
// memory; nothing is written to global memory), so the exactness is attention()'s on each device.
struct QuantizedKV {
  const uint32_t* k_packed = nullptr;
  const float* k_scales = nullptr;
  const float* k_biases = nullptr;
  const uint32_t* v_packed = nullptr;
  const float* v_scales = nullptr;
  const float* v_biases = nullptr;
  int bits = 4;
  int group_size = 64;
};
void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out);

// ---- devices --------------------------------------------------------------------------------------
// Every op above runs on the calling thread's current device (kCpu unless a DeviceScope says
// otherwise). On kCuda, every float buffer and every weight/norm/bias tensor an op takes must be
// device memory (ops::empty(..., Device::kCuda) or to_device), while the small index arrays — token
// ids, positions, k_pos, inv_freq, group_of_position, mrope sections — stay HOST memory: the CUDA
// backend stages them onto the device itself, so callers (the decoder, the KV caches) pass the same
// host arrays on both devices. CUDA ops are asynchronous on the backend's stream (one per process);
// a copy to host memory, and synchronize(), wait for everything before them.
Device current_device();
class DeviceScope {
 public:
  explicit DeviceScope(Device d);  // throws Error(kUnsupported) for kCuda when no CUDA device is usable
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  Device previous_;
};
// A new owned, contiguous, uninitialised tensor on `device` (kCpu: Tensor::empty; kCuda: the CUDA
// backend's caching allocator, reported to the MemoryTracker as GPU memory: active / peak / cache).
Tensor empty(const Shape& shape, DType dtype, MemCategory category, Device device);
// Copies between any two devices (blocking when the destination is the host).
void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
// `rows` rows of `width` bytes from src (row pitch src_pitch) to dst (pitch dst_pitch), both on the
// current device (splitting fused qkv / gate_up outputs).
void copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width, size_t rows);
// Waits for every op issued on the current device (no-op on kCpu).
void synchronize();
// A contiguous copy of t on `device` in its own dtype (t itself when it is already there; undefined
// stays undefined).
Tensor to_device(const Tensor& t, Device device, MemCategory category = MemCategory::kWeights);
// The same weight (stored format kept: dense dtype, or packed codes + scales + biases) on `device`.
Weight to_device(const Weight& w, Device device);

// ---- captured steps -------------------------------------------------------------------------------
// Runs `step` — a sequence of ops on the current device, e.g. one greedy decode step — as a unit the
// backend may replay cheaply. CPU: step() is called directly. CUDA: the ops are captured into CUDA
// graphs instead of being launched one by one (each captured part launches as soon as it is
// complete, while the host captures the rest), which removes most of the per-kernel host cost and the
// gaps between kernels. Every call captures anew, so every step may pass different host inputs,
// buffers and shapes; `key` (e.g. the model) only lets the backend update the executable graph of
// the previous step with the same key instead of building one (any key is correct; a topology change,
// such as a different attention split count, just rebuilds). The first step of a key runs uncaptured.
// Off with VLMCHECK_CUDA_GRAPHS=0, and while VLMCHECK_CUDA_PROFILE is on: then step() runs directly.
// Rules for step on CUDA (they hold for every op of this file):
// - Host outputs (argmax ids, copies to the host) are written when run_graph returns, not when the op
//   returns: read them only after run_graph. synchronize() inside step throws.
// - Host inputs (ids, positions, k_pos, host-to-device copies) are read when the op is called, as
//   usual; they may change or die afterwards.
// - Do no host-side work that depends on device results inside step; plain host code is fine.
// - Nested run_graph calls join the enclosing step.
// If an op throws inside step, the ops before it still run (as without graphs) and the error
// propagates; the step's host state (e.g. KV cache lengths) has advanced like any failed step's.
void run_graph(const void* key, const std::function<void()>& step);
// run_graph without the wait: the step is queued (CUDA: captured and launched) and the call returns a
// ticket; graph_wait(ticket) waits for the step and writes its host outputs, which are not valid
// before. 0 means nothing to wait for (the CPU, and steps that ran uncaptured, whose outputs are
// already written). The host may capture the next step while a step runs (greedy decode queues step
// t + 1 before it reads step t's token); at most two steps are in flight: queueing a third waits for
// the oldest and writes its outputs. graph_wait of a ticket already delivered is a no-op.
uint64_t run_graph_async(const void* key, const std::function<void()>& step);
void graph_wait(uint64_t ticket);

// Which SIMD path the CPU backend uses ("avx512bf16", "avx512", "avx2", "scalar"); VLMCHECK_KERNELS
// =scalar forces the reference path (the conformance tests compare the two).
const char* cpu_kernel_path();
// true: the scalar reference; false: back to the default (VLMCHECK_KERNELS if set, else the best).
void force_scalar_kernels(bool on);
// Selects a CPU path by name ("scalar", "avx2", "avx512", "avx512bf16", or "auto" for the best one)
// for tests and benchmarks that compare paths; returns false and changes nothing if this CPU cannot
// run it. VLMCHECK_KERNELS accepts the same names.
bool set_cpu_kernel_path(const std::string& name);
// Every path this CPU can run, best first (always ends with "scalar").
std::vector<std::string> cpu_kernel_paths();

}  // namespace vlm::ops
