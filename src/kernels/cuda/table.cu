// The CUDA backend's kernel table (cuda_backend.h): every op of ops.h, each entry pointing at the
// kernel family's host entry in this folder. ops.cpp validates arguments before calling an entry.
// With VLMCHECK_CUDA_PROFILE set (profile.cu) the entries are wrapped in a ProfileScope each.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sample.cuh"
#include "kernels/cuda/kv_quant.cuh"
#include "kernels/cuda/attention_common.cuh"

namespace vlm::ops::cuda {
namespace {

// Profiled(Fn): same signature as Fn, with the call bracketed by a ProfileScope named Name.
template <const char* Name, auto Fn>
struct Profiled;
template <const char* Name, typename... A, void (*Fn)(A...)>
struct Profiled<Name, Fn> {
  static void call(A... a) {
    detail::ProfileScope scope(Name);
    Fn(a...);
  }
};

constexpr char kLinear[] = "linear", kLinearGroup[] = "linear_group", kEmbedding[] = "embedding",
               kRmsNorm[] = "rms_norm", kAddRmsNorm[] = "add_rms_norm",
               kLayerNorm[] = "layer_norm", kRope[] = "rope", kMrope[] = "mrope", kActivate[] = "activate",
               kGated[] = "gated_activate", kSoftmax[] = "softmax", kArgmax[] = "argmax", kSample[] = "sample",
               kAttention[] = "attention", kAdd[] = "add",
               kScale[] = "scale", kMul[] = "mul", kSoftcap[] = "softcap";
constexpr char kKvQuantize[] = "kv_quantize", kKvDequantize[] = "kv_dequantize";
constexpr char kAttentionQuantized[] = "attention_quantized";

// linear also sets the phase: its token count says decode or prefill.
void linear_profiled(const float* x, int64_t n, const Weight& w, const Tensor& bias, float* y) {
  detail::profile_phase(n);
  detail::ProfileScope scope(kLinear);
  kernels::linear(x, n, w, bias, y);
}
void linear_group_profiled(const float* x, int64_t n, const LinearOut* outs, int count) {
  detail::profile_phase(n);
  detail::ProfileScope scope(kLinearGroup);
  kernels::linear_group(x, n, outs, count);
}

}  // namespace

const cpu::KernelTable& kernel_table() {
  static const cpu::KernelTable table = [] {
    cpu::KernelTable t;
    if (detail::profiling()) {
      t.linear = &linear_profiled;
      t.linear_group = &linear_group_profiled;
      t.embedding = &Profiled<kEmbedding, &kernels::embedding>::call;
      t.rms_norm = &Profiled<kRmsNorm, &kernels::rms_norm>::call;
      t.add_rms_norm = &Profiled<kAddRmsNorm, &kernels::add_rms_norm>::call;
      t.layer_norm = &Profiled<kLayerNorm, &kernels::layer_norm>::call;
      t.rope = &Profiled<kRope, &kernels::rope>::call;
      t.mrope = &Profiled<kMrope, &kernels::mrope>::call;
      t.activate = &Profiled<kActivate, &kernels::activate>::call;
      t.gated_activate = &Profiled<kGated, &kernels::gated_activate>::call;
      t.softmax = &Profiled<kSoftmax, &kernels::softmax>::call;
      t.argmax = &Profiled<kArgmax, &kernels::argmax>::call;
      t.sample = &Profiled<kSample, &kernels::sample>::call;
      t.attention = &Profiled<kAttention, &kernels::attention>::call;
      t.add = &Profiled<kAdd, &kernels::add>::call;
      t.scale = &Profiled<kScale, &kernels::scale>::call;
      t.mul = &Profiled<kMul, &kernels::mul>::call;
      t.softcap = &Profiled<kSoftcap, &kernels::softcap>::call;
      t.kv_quantize = &Profiled<kKvQuantize, &kernels::kv_quantize>::call;
      t.kv_dequantize = &Profiled<kKvDequantize, &kernels::kv_dequantize>::call;
      t.attention_quantized = &Profiled<kAttentionQuantized, &kernels::attention_quantized>::call;
      return t;
    }
    t.linear = &kernels::linear;
    t.linear_group = &kernels::linear_group;
    t.embedding = &kernels::embedding;
    t.rms_norm = &kernels::rms_norm;
    t.add_rms_norm = &kernels::add_rms_norm;
    t.layer_norm = &kernels::layer_norm;
    t.rope = &kernels::rope;
    t.mrope = &kernels::mrope;
    t.activate = &kernels::activate;
    t.gated_activate = &kernels::gated_activate;
    t.softmax = &kernels::softmax;
    t.argmax = &kernels::argmax;
    t.sample = &kernels::sample;
    t.attention = &kernels::attention;
    t.add = &kernels::add;
    t.scale = &kernels::scale;
    t.mul = &kernels::mul;
    t.softcap = &kernels::softcap;
    t.kv_quantize = &kernels::kv_quantize;
    t.kv_dequantize = &kernels::kv_dequantize;
    t.attention_quantized = &kernels::attention_quantized;
    return t;
  }();
  return table;
}

}  // namespace vlm::ops::cuda
