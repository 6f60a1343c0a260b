// The CUDA backend's kernel table (cuda_backend.h): every op of ops.h, each entry pointing at the
// kernel family's host entry in this folder. ops.cpp validates arguments before calling an entry.
#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda {

const cpu::KernelTable& kernel_table() {
  static const cpu::KernelTable table = [] {
    cpu::KernelTable t;
    t.linear = &kernels::linear;
    t.embedding = &kernels::embedding;
    t.rms_norm = &kernels::rms_norm;
    t.layer_norm = &kernels::layer_norm;
    t.rope = &kernels::rope;
    t.mrope = &kernels::mrope;
    t.activate = &kernels::activate;
    t.gated_activate = &kernels::gated_activate;
    t.softmax = &kernels::softmax;
    t.attention = &kernels::attention;
    t.add = &kernels::add;
    t.scale = &kernels::scale;
    t.mul = &kernels::mul;
    t.softcap = &kernels::softcap;
    return t;
  }();
  return table;
}

}  // namespace vlm::ops::cuda
