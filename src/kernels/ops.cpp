// The op entry points of kernels/ops.h: argument validation (typed errors naming the op and the
// expected vs actual values), then dispatch to the current device's table — on the CPU the SIMD table
// for this CPU or the scalar reference, on CUDA the CUDA backend's table (kernels/cuda/cuda_backend.h).
// The CPU path is detected once; VLMCHECK_KERNELS=<path> or set_cpu_kernel_path() select a lower one
// (the conformance tests run every op on every path this CPU has). The "devices" half of ops.h lives
// at the end: the thread's current device, device memory, copies and uploads.
#include "kernels/ops.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_dispatch.h"
#include "kernels/cpu/ref/ref_ops.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/sampling.h"

namespace vlm::ops {

namespace {

// The calling thread's device (ops.h: every op runs there). A plain thread_local read per op: one
// load and a branch on the CPU path.
thread_local Device t_current_device = Device::kCpu;

enum class Path { kScalar, kAvx2, kAvx512, kAvx512Bf16 };

Path detect_path() {
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512) return __builtin_cpu_supports("avx512bf16") ? Path::kAvx512Bf16 : Path::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return Path::kAvx2;
  return Path::kScalar;
}

Path hardware_path() {
  static const Path p = detect_path();
  return p;
}

const char* path_name(Path p) {
  switch (p) {
    case Path::kAvx512Bf16: return "avx512bf16";
    case Path::kAvx512: return "avx512";
    case Path::kAvx2: return "avx2";
    case Path::kScalar: return "scalar";
  }
  return "scalar";
}

// Paths are ordered: a CPU that runs one runs every lower one.
bool parse_path(const std::string& name, Path& out) {
  for (Path p : {Path::kScalar, Path::kAvx2, Path::kAvx512, Path::kAvx512Bf16})
    if (name == path_name(p)) {
      out = p;
      return true;
    }
  return false;
}

constexpr int kAuto = -1;

// The path VLMCHECK_KERNELS names (a Path value), or kAuto when unset or not runnable here.
int env_path() {
  static const int p = [] {
    const char* env = std::getenv("VLMCHECK_KERNELS");
    Path parsed;
    if (env != nullptr && parse_path(env, parsed) && static_cast<int>(parsed) <= static_cast<int>(hardware_path()))
      return static_cast<int>(parsed);
    return kAuto;
  }();
  return p;
}

// The selected path (a Path value) or kAuto; starts from VLMCHECK_KERNELS.
std::atomic<int>& selected_path() {
  static std::atomic<int> sel{env_path()};
  return sel;
}

Path active_path() {
  int sel = selected_path().load(std::memory_order_relaxed);
  return sel == kAuto ? hardware_path() : static_cast<Path>(sel);
}

const cpu::KernelTable& ref_table() {
  static const cpu::KernelTable t = [] {
    cpu::KernelTable r;
    r.linear = ref::linear;
    r.linear_group = ref::linear_group;
    r.embedding = ref::embedding;
    r.rms_norm = ref::rms_norm;
    r.add_rms_norm = ref::add_rms_norm;
    r.layer_norm = ref::layer_norm;
    r.rope = ref::rope;
    r.mrope = ref::mrope;
    r.activate = ref::activate;
    r.gated_activate = ref::gated_activate;
    r.softmax = ref::softmax;
    r.argmax = ref::argmax;
    r.sample = sampling::sample;
    r.attention = ref::attention;
    r.add = ref::add;
    r.scale = ref::scale;
    r.mul = ref::mul;
    r.softcap = ref::softcap;
    r.kv_quantize = ref::kv_quantize;
    r.kv_dequantize = ref::kv_dequantize;
    r.attention_quantized = ref::attention_quantized;
    return r;
  }();
  return t;
}

const cpu::KernelTable* simd_table() {
  switch (active_path()) {
    case Path::kAvx512Bf16: return &cpu::avx512_table(true);
    case Path::kAvx512: return &cpu::avx512_table(false);
    case Path::kAvx2: return &cpu::avx2_table();
    case Path::kScalar: return nullptr;
  }
  return nullptr;
}

// The implementation of op `member` on the current device: the CUDA table under DeviceScope(kCuda);
// on the CPU the active path's SIMD entry when it has one, else the reference.
template <typename Fn>
Fn pick(Fn cpu::KernelTable::*member) {
  if (t_current_device == Device::kCuda) {
    cuda::graph_op_boundary();  // under run_graph: may launch the piece captured so far (graph.cu)
    return cuda::kernel_table().*member;
  }
  const cpu::KernelTable* t = simd_table();
  if (t != nullptr && t->*member != nullptr) return t->*member;
  return ref_table().*member;
}

// A fused op's SIMD entry is missing on this CPU path: true, so the caller composes it from the
// path's own unfused ops instead of running the scalar reference.
template <typename Fn>
bool compose_on_cpu(Fn cpu::KernelTable::*member) {
  if (t_current_device != Device::kCpu) return false;
  const cpu::KernelTable* t = simd_table();
  return t != nullptr && t->*member == nullptr;
}

bool is_float_dtype(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

// Weights, norms and biases must live on the device the op runs on (shapes and dtypes only are read
// here, never the data, so the checks hold for device tensors too).
void check_vector(const Tensor& t, int64_t want, const char* op, const char* name) {
  if (!t.defined()) return;
  const Device dev = t_current_device;
  if (!is_float_dtype(t.dtype()) || !t.is_contiguous() || t.numel() != want || t.device() != dev)
    throw_error(ErrorKind::kInvalidArgument, "[{}] {} is {}, expected a contiguous f32/f16/bf16 {} vector of {}", op,
                name, t.describe(), device_name(dev), want);
}

void check_weight(const Weight& w, const char* op) {
  const Device dev = t_current_device;
  if (w.quantized) {
    w.quant.validate(op);
    if (w.quant.packed.device() != dev || w.quant.scales.device() != dev || w.quant.biases.device() != dev ||
        !w.quant.packed.is_contiguous() || !w.quant.scales.is_contiguous() || !w.quant.biases.is_contiguous())
      throw_error(ErrorKind::kInvalidArgument, "[{}] quantized weight must be contiguous {} tensors (packed {})", op,
                  device_name(dev), w.quant.packed.describe());
    return;
  }
  const Tensor& d = w.dense;
  if (!d.defined() || d.ndim() != 2 || !is_float_dtype(d.dtype()) || !d.is_contiguous() || d.device() != dev)
    throw_error(ErrorKind::kInvalidArgument, "[{}] weight is {}, expected a contiguous 2-D f32/f16/bf16 {} matrix",
                op, d.defined() ? d.describe() : std::string("undefined"), device_name(dev));
}

}  // namespace

const char* cpu_kernel_path() { return path_name(active_path()); }

void force_scalar_kernels(bool on) { selected_path().store(on ? static_cast<int>(Path::kScalar) : env_path()); }

bool set_cpu_kernel_path(const std::string& name) {
  if (name == "auto") {
    selected_path().store(kAuto);
    return true;
  }
  Path p;
  if (!parse_path(name, p) || static_cast<int>(p) > static_cast<int>(hardware_path())) return false;
  selected_path().store(static_cast<int>(p));
  return true;
}

std::vector<std::string> cpu_kernel_paths() {
  std::vector<std::string> out;
  for (int p = static_cast<int>(hardware_path()); p >= 0; --p) out.emplace_back(path_name(static_cast<Path>(p)));
  return out;
}

void linear(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y) {
  check_weight(w, "linear");
  check_vector(bias, w.rows(), "linear", "bias");
  VLM_CHECK(n >= 0, ErrorKind::kInvalidArgument, "[linear] token count {} < 0", n);
  if (n == 0) return;
  pick(&cpu::KernelTable::linear)(x, n, w, bias, y);
}

void linear_group(const float* x, int64_t n, const LinearOut* outs, int count) {
  VLM_CHECK(n >= 0 && count >= 0, ErrorKind::kInvalidArgument, "[linear_group] token count {} or group size {} < 0",
            n, count);
  for (int i = 0; i < count; ++i) {
    VLM_CHECK(outs[i].w != nullptr && outs[i].y != nullptr, ErrorKind::kInvalidArgument,
              "[linear_group] member {} has no weight or no output", i);
    check_weight(*outs[i].w, "linear_group");
    if (outs[i].bias != nullptr) check_vector(*outs[i].bias, outs[i].w->rows(), "linear_group", "bias");
    VLM_CHECK(outs[i].w->cols() == outs[0].w->cols(), ErrorKind::kInvalidArgument,
              "[linear_group] member {} has {} input columns, member 0 has {}", i, outs[i].w->cols(),
              outs[0].w->cols());
  }
  const LinearNorm* norm = count > 0 ? outs[0].norm : nullptr;
  const int64_t cols = count > 0 ? outs[0].w->cols() : 0;
  bool accumulate = false;
  for (int i = 0; i < count; ++i) {
    VLM_CHECK(outs[i].norm == norm, ErrorKind::kInvalidArgument,
              "[linear_group] member {} has {} norm than member 0 (a group shares one norm or none)", i,
              outs[i].norm == nullptr ? "no" : "a different");
    if (!outs[i].accumulate) continue;
    accumulate = true;
    // x [n, cols] and y [n, rows] as address ranges (both on the current device).
    const float* y0 = outs[i].y;
    const bool overlap = y0 < x + n * cols && x < y0 + n * outs[i].w->rows();
    VLM_CHECK(!overlap, ErrorKind::kInvalidArgument, "[linear_group] member {} accumulates into y overlapping x", i);
  }
  if (norm != nullptr) {
    VLM_CHECK(norm->weight != nullptr && norm->weight->defined(), ErrorKind::kInvalidArgument,
              "[linear_group] norm weight is undefined");
    check_vector(*norm->weight, cols, "linear_group", "norm weight");
  }
  if (n == 0 || count == 0) return;
  // CUDA takes the fused forms natively (falling back inside the backend where a kernel cannot).
  if (t_current_device == Device::kCpu && (norm != nullptr || accumulate)) {
    // CPU: composed from the plain ops (the CPU's linears dominate; the extra pass is noise).
    Tensor normed, sums;
    const float* xin = x;
    if (norm != nullptr) {
      normed = Tensor::empty({n, cols}, DType::kF32, MemCategory::kScratch);
      rms_norm(x, n, cols, *norm->weight, norm->eps, norm->offset, normed.data<float>());
      xin = normed.data<float>();
    }
    // Accumulating members write x·Wᵀ + bias into `sums` [Σ n * rows] first, then add it to their y.
    std::vector<LinearOut> plain(outs, outs + count);
    int64_t total = 0;
    for (const LinearOut& o : plain)
      if (o.accumulate) total += n * o.w->rows();
    if (total > 0) sums = Tensor::empty({total}, DType::kF32, MemCategory::kScratch);
    float* next = total > 0 ? sums.data<float>() : nullptr;
    for (LinearOut& o : plain) {
      o.norm = nullptr;
      if (!o.accumulate) continue;
      o.y = next;
      next += n * o.w->rows();
    }
    for (LinearOut& o : plain) o.accumulate = false;
    linear_group(xin, n, plain.data(), count);
    for (int i = 0; i < count; ++i)
      if (outs[i].accumulate) add(outs[i].y, plain[static_cast<size_t>(i)].y, n * outs[i].w->rows());
    return;
  }
  if (compose_on_cpu(&cpu::KernelTable::linear_group)) {
    for (int i = 0; i < count; ++i)
      pick(&cpu::KernelTable::linear)(x, n, *outs[i].w, outs[i].bias ? *outs[i].bias : Tensor(), outs[i].y);
    return;
  }
  pick(&cpu::KernelTable::linear_group)(x, n, outs, count);
}

void embedding(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out) {
  check_weight(table, "embedding");
  for (int64_t i = 0; i < n; ++i)
    VLM_CHECK(ids[i] >= 0 && ids[i] < table.rows(), ErrorKind::kInvalidArgument,
              "[embedding] token id {} at index {} is outside the table of {} rows", ids[i], i, table.rows());
  if (n <= 0) return;
  pick(&cpu::KernelTable::embedding)(table, ids, n, scale, out);
}

void embedding_device_ids(const Weight& table, const int32_t* device_ids, int64_t n, float scale, float* out) {
  check_weight(table, "embedding_device_ids");
  if (n <= 0) return;
  if (t_current_device == Device::kCuda) {
    cuda::graph_op_boundary();
    cuda::embedding_device_ids(table, device_ids, n, scale, out);
    return;
  }
  // Host memory here: the same gather, with out-of-table rows as zeros (the device kernel's rule).
  for (int64_t i = 0; i < n; ++i) {
    if (device_ids[i] >= 0 && device_ids[i] < table.rows())
      pick(&cpu::KernelTable::embedding)(table, device_ids + i, 1, scale, out + i * table.cols());
    else
      std::fill(out + i * table.cols(), out + (i + 1) * table.cols(), 0.0f);
  }
}

void rms_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, float eps, float offset, float* y) {
  VLM_CHECK(weight.defined(), ErrorKind::kInvalidArgument, "[rms_norm] weight is undefined");
  check_vector(weight, d, "rms_norm", "weight");
  if (n <= 0 || d <= 0) return;
  pick(&cpu::KernelTable::rms_norm)(x, n, d, weight, eps, offset, y);
}

void add_rms_norm(float* x, const float* r, int64_t n, int64_t d, const Tensor& weight, float eps, float offset,
                  float* y) {
  VLM_CHECK(weight.defined(), ErrorKind::kInvalidArgument, "[add_rms_norm] weight is undefined");
  check_vector(weight, d, "add_rms_norm", "weight");
  VLM_CHECK(x != y, ErrorKind::kInvalidArgument, "[add_rms_norm] y must not alias x (it may alias r)");
  if (n <= 0 || d <= 0) return;
  if (compose_on_cpu(&cpu::KernelTable::add_rms_norm)) {
    pick(&cpu::KernelTable::add)(x, r, n * d);
    pick(&cpu::KernelTable::rms_norm)(x, n, d, weight, eps, offset, y);
    return;
  }
  pick(&cpu::KernelTable::add_rms_norm)(x, r, n, d, weight, eps, offset, y);
}

void layer_norm(const float* x, int64_t n, int64_t d, const Tensor& weight, const Tensor& bias, float eps, float* y) {
  check_vector(weight, d, "layer_norm", "weight");
  check_vector(bias, d, "layer_norm", "bias");
  if (n <= 0 || d <= 0) return;
  pick(&cpu::KernelTable::layer_norm)(x, n, d, weight, bias, eps, y);
}

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, const float* inv_freq,
          const int64_t* positions, float attention_scaling) {
  VLM_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, ErrorKind::kInvalidArgument,
            "[rope] rotary_dim {} must be even and in (0, head_dim {}]", rotary_dim, head_dim);
  if (n_tokens <= 0 || n_heads <= 0) return;
  pick(&cpu::KernelTable::rope)(x, n_tokens, n_heads, head_dim, rotary_dim, inv_freq, positions, attention_scaling);
}

namespace {
void check_mrope(int64_t head_dim, const std::vector<int>& sections, const char* op) {
  int64_t total = std::accumulate(sections.begin(), sections.end(), int64_t{0});
  VLM_CHECK(head_dim % 2 == 0 && total == head_dim / 2 && !sections.empty(), ErrorKind::kInvalidArgument,
            "[{}] mrope_section sums to {}, expected head_dim / 2 = {}", op, total, head_dim / 2);
  for (int s : sections) VLM_CHECK(s >= 0, ErrorKind::kInvalidArgument, "[{}] negative mrope_section entry {}", op, s);
}
}  // namespace

namespace {
// mrope's per-frequency stream table: HF splits cos/sin (two copies of the half) by mrope_section * 2
// and takes chunk j from stream j % 3, which gives frequency i the stream of the section it falls in.
std::vector<int> mrope_streams(const std::vector<int>& sections) {
  std::vector<int> stream_of;
  for (size_t s = 0; s < sections.size(); ++s) stream_of.insert(stream_of.end(), sections[s], static_cast<int>(s % 3));
  return stream_of;
}
}  // namespace

void mrope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
           const int64_t* positions3, const std::vector<int>& sections, float attention_scaling) {
  check_mrope(head_dim, sections, "mrope");
  if (n_tokens <= 0 || n_heads <= 0) return;
  const std::vector<int> stream_of = mrope_streams(sections);
  pick(&cpu::KernelTable::mrope)(x, n_tokens, n_heads, head_dim, inv_freq, positions3, stream_of.data(),
                                 attention_scaling);
}

void mrope_interleaved(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
                       const int64_t* positions3, const std::vector<int>& sections, float attention_scaling) {
  check_mrope(head_dim, sections, "mrope_interleaved");
  VLM_CHECK(sections.size() == 3, ErrorKind::kInvalidArgument,
            "[mrope_interleaved] mrope_section has {} entries, expected 3 (t, h, w)", sections.size());
  if (n_tokens <= 0 || n_heads <= 0) return;
  std::vector<int> stream_of(static_cast<size_t>(head_dim / 2), 0);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    if (i % 3 == 1 && i < 3 * int64_t{sections[1]}) stream_of[i] = 1;
    if (i % 3 == 2 && i < 3 * int64_t{sections[2]}) stream_of[i] = 2;
  }
  pick(&cpu::KernelTable::mrope)(x, n_tokens, n_heads, head_dim, inv_freq, positions3, stream_of.data(),
                                 attention_scaling);
}

namespace {
// rope_qk / mrope_qk: one CUDA call (under VLMCHECK_CUDA_PROFILE two table calls, so the profile
// keeps its per-op rows), else the table's entry per tensor. stream_of: null for plain RoPE.
void rotate_qk(float* q, int64_t n_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
               int64_t rotary_dim, const float* inv_freq, const int64_t* positions, const int* stream_of,
               float scaling) {
  if (n_tokens <= 0 || n_heads <= 0 || n_kv_heads <= 0) return;
  const int64_t q_end = n_tokens * n_heads * head_dim, k_end = n_tokens * n_kv_heads * head_dim;
  VLM_CHECK(q + q_end <= k || k + k_end <= q, ErrorKind::kInvalidArgument, "[rope_qk] q and k overlap");
  if (t_current_device == Device::kCuda && !cuda::profiling_enabled()) {
    cuda::graph_op_boundary();
    cuda::rope_qk(q, n_heads, k, n_kv_heads, n_tokens, head_dim, rotary_dim, inv_freq, positions, stream_of, scaling);
    return;
  }
  for (auto [x, heads] : {std::pair<float*, int64_t>{q, n_heads}, {k, n_kv_heads}}) {
    if (stream_of == nullptr)
      pick(&cpu::KernelTable::rope)(x, n_tokens, heads, head_dim, rotary_dim, inv_freq, positions, scaling);
    else
      pick(&cpu::KernelTable::mrope)(x, n_tokens, heads, head_dim, inv_freq, positions, stream_of, scaling);
  }
}
}  // namespace

void rope_qk(float* q, int64_t n_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
             int64_t rotary_dim, const float* inv_freq, const int64_t* positions, float attention_scaling) {
  VLM_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, ErrorKind::kInvalidArgument,
            "[rope_qk] rotary_dim {} must be even and in (0, head_dim {}]", rotary_dim, head_dim);
  rotate_qk(q, n_heads, k, n_kv_heads, n_tokens, head_dim, rotary_dim, inv_freq, positions, nullptr,
            attention_scaling);
}

void mrope_qk(float* q, int64_t n_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
              const float* inv_freq, const int64_t* positions3, const std::vector<int>& sections,
              float attention_scaling) {
  check_mrope(head_dim, sections, "mrope_qk");
  const std::vector<int> stream_of = mrope_streams(sections);
  rotate_qk(q, n_heads, k, n_kv_heads, n_tokens, head_dim, head_dim, inv_freq, positions3, stream_of.data(),
            attention_scaling);
}

void activate(float* x, int64_t n, Activation act) {
  if (n > 0) pick(&cpu::KernelTable::activate)(x, n, act);
}
void gated_activate(float* gate, const float* up, int64_t n, Activation act) {
  if (n > 0) pick(&cpu::KernelTable::gated_activate)(gate, up, n, act);
}
void softmax(float* x, int64_t n, int64_t d) {
  if (n > 0 && d > 0) pick(&cpu::KernelTable::softmax)(x, n, d);
}

void argmax(const float* x, int64_t n, int64_t d, int32_t* ids) {
  VLM_CHECK(d > 0 && d <= INT32_MAX, ErrorKind::kInvalidArgument, "[argmax] row length {} must be in [1, 2^31)", d);
  if (n > 0) pick(&cpu::KernelTable::argmax)(x, n, d, ids);
}

void argmax_device(const float* x, int64_t n, int64_t d, int32_t* device_ids) {
  VLM_CHECK(d > 0 && d <= INT32_MAX, ErrorKind::kInvalidArgument, "[argmax_device] row length {} must be in [1, 2^31)",
            d);
  if (n <= 0) return;
  if (t_current_device == Device::kCuda) {
    cuda::graph_op_boundary();
    cuda::argmax_device(x, n, d, device_ids);
    return;
  }
  pick(&cpu::KernelTable::argmax)(x, n, d, device_ids);  // host memory on the CPU
}

namespace {
// The arguments sample and sample_device share.
void check_sample(const SamplingSpec& spec, int64_t vocab, const int32_t* history, int64_t n_history, double u) {
  VLM_CHECK(vocab > 0 && vocab <= INT32_MAX, ErrorKind::kInvalidArgument, "[sample] vocab {} must be in [1, 2^31)",
            vocab);
  VLM_CHECK(spec.temperature >= 0.0f, ErrorKind::kInvalidArgument, "[sample] temperature must be >= 0, got {}",
            spec.temperature);
  VLM_CHECK(spec.top_p >= 0.0f && spec.top_p <= 1.0f, ErrorKind::kInvalidArgument,
            "[sample] top_p must be in [0, 1], got {}", spec.top_p);
  VLM_CHECK(spec.min_p >= 0.0f && spec.min_p <= 1.0f, ErrorKind::kInvalidArgument,
            "[sample] min_p must be in [0, 1], got {}", spec.min_p);
  VLM_CHECK(spec.top_k >= 0, ErrorKind::kInvalidArgument, "[sample] top_k must be >= 0, got {}", spec.top_k);
  VLM_CHECK(spec.repetition_penalty >= 0.0f && spec.repetition_context >= 0 && spec.presence_context >= 0 &&
                spec.frequency_context >= 0,
            ErrorKind::kInvalidArgument,
            "[sample] repetition_penalty {} must be >= 0 and the context sizes ({}, {}, {}) >= 0",
            spec.repetition_penalty, spec.repetition_context, spec.presence_context, spec.frequency_context);
  VLM_CHECK(u >= 0.0 && u < 1.0, ErrorKind::kInvalidArgument, "[sample] u must be in [0, 1), got {}", u);
  VLM_CHECK(n_history >= 0 && (n_history == 0 || history != nullptr), ErrorKind::kInvalidArgument,
            "[sample] history of {} ids without data", n_history);
}
}  // namespace

void sample(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history, int64_t n_history,
            double u, int32_t* id) {
  check_sample(spec, vocab, history, n_history, u);
  pick(&cpu::KernelTable::sample)(logits, vocab, spec, history, n_history, u, id);
}

void sample_device(const float* logits, int64_t vocab, const SamplingSpec& spec, const int32_t* history,
                   int64_t n_history, double u, int32_t* device_id) {
  check_sample(spec, vocab, history, n_history, u);
  if (t_current_device == Device::kCuda) {
    cuda::graph_op_boundary();
    cuda::sample_device(logits, vocab, spec, history, n_history, u, device_id);
    return;
  }
  pick(&cpu::KernelTable::sample)(logits, vocab, spec, history, n_history, u, device_id);  // host memory on the CPU
}

namespace {
// The arguments attention and attention_quantized share; `op` names the caller in the message.
void check_attention(const char* op, int64_t nq, int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                     float softcap, const AttentionMask& mask) {
  VLM_CHECK(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0, ErrorKind::kInvalidArgument,
            "[{}] {} query heads is not a multiple of {} kv heads", op, n_heads, n_kv_heads);
  VLM_CHECK(head_dim > 0 && nq >= 0 && nk >= 0, ErrorKind::kInvalidArgument,
            "[{}] head_dim {}, nq {}, nk {} must be positive", op, head_dim, nq, nk);
  VLM_CHECK(softcap >= 0.0f && mask.sliding_window >= 0, ErrorKind::kInvalidArgument,
            "[{}] softcap {} and sliding_window {} must be >= 0", op, softcap, mask.sliding_window);
}
}  // namespace

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, const int64_t* k_pos,
               int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
               const AttentionMask& mask, float* out) {
  check_attention("attention", nq, nk, n_heads, n_kv_heads, head_dim, softcap, mask);
  if (nq == 0) return;
  pick(&cpu::KernelTable::attention)(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap,
                                     mask, out);
}

void attention_with_rope(float* q, int64_t nq, int64_t q_pos0, float* k, const float* v, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, const AttentionRope& rope, float* out) {
  check_attention("attention_with_rope", nq, nk, n_heads, n_kv_heads, head_dim, softcap, mask);
  VLM_CHECK(nq <= nk, ErrorKind::kInvalidArgument, "[attention_with_rope] {} queries but only {} keys (the new keys "
            "are the last nq)", nq, nk);
  std::vector<int> stream_of;
  if (rope.mrope_section != nullptr) {
    check_mrope(head_dim, *rope.mrope_section, "attention_with_rope");
    VLM_CHECK(rope.rotary_dim == head_dim, ErrorKind::kInvalidArgument,
              "[attention_with_rope] M-RoPE rotates whole heads: rotary_dim {} must be head_dim {}", rope.rotary_dim,
              head_dim);
    stream_of = mrope_streams(*rope.mrope_section);
  } else {
    VLM_CHECK(rope.rotary_dim > 0 && rope.rotary_dim % 2 == 0 && rope.rotary_dim <= head_dim,
              ErrorKind::kInvalidArgument, "[attention_with_rope] rotary_dim {} must be even and in (0, head_dim {}]",
              rope.rotary_dim, head_dim);
  }
  if (nq == 0) return;
  const int* streams = stream_of.empty() ? nullptr : stream_of.data();
  // CUDA: one kernel where the decode kernel takes the shape (not under VLMCHECK_CUDA_PROFILE, which
  // keeps the per-op rows of rope and attention).
  if (t_current_device == Device::kCuda && !cuda::profiling_enabled()) {
    cuda::graph_op_boundary();
    if (cuda::attention_rope_decode(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap,
                                    mask, rope.rotary_dim, rope.inv_freq, rope.positions, streams,
                                    rope.attention_scaling, out))
      return;
  }
  rotate_qk(q, n_heads, k + (nk - nq) * n_kv_heads * head_dim, n_kv_heads, nq, head_dim, rope.rotary_dim,
            rope.inv_freq, rope.positions, streams, rope.attention_scaling);
  attention(q, nq, q_pos0, k, v, k_pos, nk, n_heads, n_kv_heads, head_dim, scale, softcap, mask, out);
}

void add(float* y, const float* x, int64_t n) {
  if (n > 0) pick(&cpu::KernelTable::add)(y, x, n);
}
void scale(float* y, float s, int64_t n) {
  if (n > 0) pick(&cpu::KernelTable::scale)(y, s, n);
}
void mul(float* y, const float* x, int64_t n) {
  if (n > 0) pick(&cpu::KernelTable::mul)(y, x, n);
}
void softcap(float* x, int64_t n, float cap) {
  VLM_CHECK(cap > 0.0f, ErrorKind::kInvalidArgument, "[softcap] cap {} must be > 0", cap);
  if (n > 0) pick(&cpu::KernelTable::softcap)(x, n, cap);
}

namespace {
void check_kv_quant(int64_t rows, int64_t n, int bits, int group_size, const char* op) {
  VLM_CHECK(bits >= 2 && bits <= 8, ErrorKind::kInvalidArgument, "[{}] bits {} must be in 2..8", op, bits);
  VLM_CHECK(group_size == 32 || group_size == 64 || group_size == 128, ErrorKind::kInvalidArgument,
            "[{}] group_size {} must be 32, 64 or 128", op, group_size);
  VLM_CHECK(rows >= 0 && n > 0 && n % group_size == 0, ErrorKind::kInvalidArgument,
            "[{}] {} rows of {} values: the row length must be a positive multiple of group_size {}", op, rows, n,
            group_size);
}
}  // namespace

void kv_quantize(const float* x, int64_t rows, int64_t n, int bits, int group_size, uint32_t* packed, float* scales,
                 float* biases) {
  check_kv_quant(rows, n, bits, group_size, "kv_quantize");
  if (rows > 0) pick(&cpu::KernelTable::kv_quantize)(x, rows, n, bits, group_size, packed, scales, biases);
}

void kv_dequantize(const uint32_t* packed, const float* scales, const float* biases, int64_t rows, int64_t n, int bits,
                   int group_size, float* out) {
  check_kv_quant(rows, n, bits, group_size, "kv_dequantize");
  if (rows > 0) pick(&cpu::KernelTable::kv_dequantize)(packed, scales, biases, rows, n, bits, group_size, out);
}

void attention_quantized(const float* q, int64_t nq, int64_t q_pos0, const QuantizedKV& kv, const int64_t* k_pos,
                         int64_t nk, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale, float softcap,
                         const AttentionMask& mask, float* out) {
  check_attention("attention_quantized", nq, nk, n_heads, n_kv_heads, head_dim, softcap, mask);
  check_kv_quant(nk, n_kv_heads * head_dim, kv.bits, kv.group_size, "attention_quantized");
  VLM_CHECK(head_dim % kv.group_size == 0, ErrorKind::kInvalidArgument,
            "[attention_quantized] group_size {} does not divide head_dim {} (a group may not straddle heads)",
            kv.group_size, head_dim);
  VLM_CHECK(nk == 0 || (kv.k_packed && kv.k_scales && kv.k_biases && kv.v_packed && kv.v_scales && kv.v_biases),
            ErrorKind::kInvalidArgument, "[attention_quantized] {} keys but a null K/V plane", nk);
  if (nq == 0) return;
  pick(&cpu::KernelTable::attention_quantized)(q, nq, q_pos0, kv, k_pos, nk, n_heads, n_kv_heads, head_dim, scale,
                                               softcap, mask, out);
}

// ---- devices --------------------------------------------------------------------------------------

Device current_device() { return t_current_device; }

DeviceScope::DeviceScope(Device d) : previous_(t_current_device) {
  if (d == Device::kCuda && !cuda::available())
    throw_error(ErrorKind::kUnsupported, "device cuda is not usable: {}", cuda_unavailable_reason());
  t_current_device = d;
}

DeviceScope::~DeviceScope() { t_current_device = previous_; }

Tensor empty(const Shape& shape, DType dtype, MemCategory category, Device device) {
  if (device == Device::kCpu) return Tensor::empty(shape, dtype, category);
  VLM_CHECK(cuda::available(), ErrorKind::kUnsupported, "ops::empty on cuda: {}", cuda_unavailable_reason());
  const int64_t numel = shape_numel(shape);
  VLM_CHECK(numel >= 0, ErrorKind::kInvalidArgument, "ops::empty: negative shape {}", shape_str(shape));
  const size_t bytes = static_cast<size_t>(numel) * dtype_size(dtype);
  // The caching allocator reports to the MemoryTracker (GPU); the keepalive hands the block back.
  void* p = bytes > 0 ? cuda::device_alloc(bytes, category) : nullptr;
  std::shared_ptr<void> keepalive(p, [bytes, category](void* q) {
    if (q != nullptr) cuda::device_free(q, bytes, category);
  });
  return Tensor::borrow(p, shape, dtype, std::move(keepalive), Device::kCuda);
}

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::kCpu && src_device == Device::kCpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cuda::copy(dst, dst_device, src, src_device, bytes);
}

void copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width, size_t rows) {
  if (width == 0 || rows == 0) return;
  if (t_current_device == Device::kCuda) {
    cuda::copy_2d(dst, dst_pitch, src, src_pitch, width, rows);
    return;
  }
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  for (size_t r = 0; r < rows; ++r) std::memcpy(d + r * dst_pitch, s + r * src_pitch, width);
}

void synchronize() {
  if (t_current_device == Device::kCuda) cuda::synchronize();
}

void run_graph(const void* key, const std::function<void()>& step) {
  if (t_current_device == Device::kCuda)
    cuda::run_graph(key, step);
  else
    step();
}

uint64_t run_graph_async(const void* key, const std::function<void()>& step) {
  if (t_current_device == Device::kCuda) return cuda::run_graph_async(key, step);
  step();
  return 0;
}

void graph_wait(uint64_t ticket) {
  if (ticket != 0) cuda::graph_wait(ticket);
}

Tensor to_device(const Tensor& t, Device device, MemCategory category) {
  if (!t.defined() || t.device() == device) return t;
  // A strided host view is packed first; device tensors are always contiguous (ops::empty).
  const Tensor src = t.is_contiguous() ? t : t.clone(category);
  Tensor out = empty(src.shape(), src.dtype(), category, device);
  copy(out.raw(), device, src.raw(), src.device(), src.nbytes());
  return out;
}

Weight to_device(const Weight& w, Device device) {
  Weight out = w;
  if (w.quantized) {
    out.quant.packed = to_device(w.quant.packed, device);
    out.quant.scales = to_device(w.quant.scales, device);
    out.quant.biases = to_device(w.quant.biases, device);
  } else {
    out.dense = to_device(w.dense, device);
  }
  return out;
}

}  // namespace vlm::ops
