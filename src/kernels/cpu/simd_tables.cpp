// The SIMD dispatch tables. Compiled for baseline x86-64 (no target attributes here) so building
// the tables is safe on any CPU; the entries point into the target-attributed kernel files.
// The AVX2 table leaves RoPE, LayerNorm and KV (de)quantization to the scalar reference.
#include "kernels/cpu/cpu_dispatch.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/simd_avx512.h"

namespace vlm::ops::cpu {

const KernelTable& avx512_table(bool bf16) {
  static const KernelTable plain = [] {
    KernelTable k;
    k.linear = avx512::linear;
    k.linear_group = avx512::linear_group;
    k.embedding = avx512::embedding;
    k.rms_norm = avx512::rms_norm;
    k.add_rms_norm = avx512::add_rms_norm;
    k.layer_norm = avx512::layer_norm;
    k.rope = avx512::rope;
    k.mrope = avx512::mrope;
    k.activate = avx512::activate;
    k.gated_activate = avx512::gated_activate;
    k.softmax = avx512::softmax;
    k.attention = avx512::attention;
    k.add = avx512::add;
    k.scale = avx512::scale;
    k.mul = avx512::mul;
    k.softcap = avx512::softcap;
    k.kv_dequantize = avx512::kv_dequantize;
    k.attention_quantized = avx512::attention_quantized;
    return k;
  }();
  // No op differs on AVX512_BF16 at present: the quantized decode kernels that did (bf16 dots of
  // x split into two bf16 halves) were replaced by the faster VNNI ones, which every AVX512_BF16 CPU
  // has. The path stays selectable so a bf16 GEMM can land here without renaming anything.
  (void)bf16;
  return plain;
}

const KernelTable& avx2_table() {
  static const KernelTable t = [] {
    KernelTable k;
    k.linear = avx2::linear;
    k.linear_group = avx2::linear_group;
    k.embedding = avx2::embedding;
    k.rms_norm = avx2::rms_norm;
    k.add_rms_norm = avx2::add_rms_norm;
    k.layer_norm = avx2::layer_norm;
    k.activate = avx2::activate;
    k.gated_activate = avx2::gated_activate;
    k.softmax = avx2::softmax;
    k.attention = avx2::attention;
    k.kv_dequantize = avx2::kv_dequantize;
    k.attention_quantized = avx2::attention_quantized;
    k.add = avx2::add;
    k.scale = avx2::scale;
    k.mul = avx2::mul;
    k.softcap = avx2::softcap;
    return k;
  }();
  return t;
}

}  // namespace vlm::ops::cpu
