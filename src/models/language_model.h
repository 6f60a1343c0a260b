// The decoder every VLM family shares, seen from generation: embed token ids, run the layers over
// n new positions with a KV cache, and produce logits. Families (src/models/<family>/) implement it
// and register themselves by model_type in the registry (registry.h).
//
// Devices: a model loads on the host; to_device(kCuda) moves its weights to the GPU, after which
// forward() runs there (under its own DeviceScope) while the interface stays host-facing: embed()
// writes host floats, forward() reads embeddings (host floats, or a multimodal prompt's rows already in
// device memory: Embeds) and writes host logits, and the KV cache passed in must hold its storage on
// device() (KVCacheOptions::device).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "models/kv_cache.h"

namespace vlm {

// Positions of the new tokens: dims == 1 → positions[n]; dims == 3 → M-RoPE [3, n] (t, h, w).
struct Positions {
  const int64_t* data = nullptr;
  int64_t n = 0;
  int dims = 1;
};

// The input embeddings of a forward call, [n, hidden] f32: host floats (a `const float*` converts), or rows
// in a device's memory (a multimodal prompt built where its vision tower ran, MultimodalPrompt::embeds),
// which a model on that device reads in place instead of uploading.
struct Embeds {
  const float* data = nullptr;
  Device device = Device::kCpu;
  Embeds(const float* host) : data(host) {}  // NOLINT(google-explicit-constructor): host floats
  Embeds(const float* rows, Device where) : data(rows), device(where) {}
};

struct LayerCacheInfo {
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t sliding_window = 0;  // 0 = full attention
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t hidden_size() const = 0;
  virtual std::vector<LayerCacheInfo> cache_layout() const = 0;
  // out: [n, hidden] f32 — the input embeddings, including any family scaling (Gemma's sqrt(hidden)).
  virtual void embed(const int32_t* ids, int64_t n, float* out) const = 0;
  // Runs the decoder on n embeddings [n, hidden] at `positions`, appending to `cache`. Writes logits
  // [n, vocab] when all_logits, else only the last position's [vocab].
  virtual void forward(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                       const ops::AttentionMask& mask, float* logits, bool all_logits) = 0;
  // forward() with all_logits = false for greedy decoding: returns the argmax of the last position's
  // logits (ops::argmax: ties go to the lowest id), taken on the model's device so that only the id
  // crosses to the host. The default runs forward() into a host buffer.
  virtual int32_t forward_argmax(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                                 const ops::AttentionMask& mask) {
    std::vector<float> logits(static_cast<size_t>(vocab_size()));
    forward(embeds, n, positions, cache, mask, logits.data(), false);
    int32_t id = 0;
    ops::DeviceScope host(Device::kCpu);
    ops::argmax(logits.data(), 1, vocab_size(), &id);
    return id;
  }
  // forward() with all_logits = false, then ops::sample over the last position's logits with the
  // built-in sampler chain `spec` (history [n_history] and the uniform u as ops::sample takes them),
  // on the model's device so that only the id crosses to the host. The default runs forward() into a
  // host buffer and samples on the CPU.
  virtual int32_t forward_sample(Embeds embeds, int64_t n, const Positions& positions, KVCache& cache,
                                 const ops::AttentionMask& mask, const ops::SamplingSpec& spec,
                                 const int32_t* history, int64_t n_history, double u) {
    std::vector<float> logits(static_cast<size_t>(vocab_size()));
    forward(embeds, n, positions, cache, mask, logits.data(), false);
    int32_t id = 0;
    ops::DeviceScope host(Device::kCpu);
    ops::sample(logits.data(), vocab_size(), spec, history, n_history, u, &id);
    return id;
  }
  // Greedy decoding with the host one step behind the device (generate() on a GPU): begin_queued(id)
  // starts from a known token; each queue_greedy() appends one decode step that feeds the id the step
  // before produced (the first: begin_queued's) at `positions`, appending to `cache`, and leaves its
  // argmax for the next; next_queued() returns the oldest unread step's argmax, waiting for it. So the
  // host can queue step t + 1 before it reads step t's token, and the device never waits for the host
  // in between. At most two steps may be queued and unread. Same ids, in the same order, as
  // forward_argmax on the embedding of the previous id (queue_sample: forward_sample). The default runs
  // each step at once.
  virtual void begin_queued(int32_t id) {
    queued_last_ = id;
    queued_.clear();
  }
  virtual void queue_greedy(const Positions& positions, KVCache& cache) { run_queued(positions, cache, nullptr, 0); }
  // queue_greedy with a sampled id instead of the argmax: ops::sample with the built-in chain `spec`
  // (which must not read the history: !spec.reads_history()) at the uniform u. next_queued throws for a
  // row whose every logit was masked, as forward_sample does.
  virtual void queue_sample(const Positions& positions, KVCache& cache, const ops::SamplingSpec& spec, double u) {
    run_queued(positions, cache, &spec, u);
  }
  virtual int32_t next_queued() {
    VLM_CHECK(!queued_.empty(), ErrorKind::kInternal, "next_queued: no decode step is queued");
    const int32_t id = queued_.front();
    queued_.pop_front();
    return id;
  }
  // Whether queue_greedy returns before its step has run (a device that runs asynchronously), which is
  // what makes queueing ahead pay.
  virtual bool queues_ahead() const { return false; }
  // Bytes of weights held (stored format).
  virtual size_t weight_bytes() const = 0;
  // Where the weights live and forward() runs.
  virtual Device device() const { return Device::kCpu; }
  // Moves the weights to `device` (a no-op when already there). Models that cannot run elsewhere keep
  // this default, which refuses any device but the CPU with Error(kUnsupported).
  virtual void to_device(Device device) {
    VLM_CHECK(device == Device::kCpu, ErrorKind::kUnsupported, "this language model runs on the cpu only, not on {}",
              device_name(device));
  }

 private:
  // The default queue's step, run at once: the last id's embedding through forward_argmax (spec null) or
  // forward_sample.
  void run_queued(const Positions& positions, KVCache& cache, const ops::SamplingSpec* spec, double u) {
    std::vector<float> e(static_cast<size_t>(hidden_size()));
    embed(&queued_last_, 1, e.data());
    queued_last_ = spec != nullptr
                       ? forward_sample(e.data(), 1, positions, cache, ops::AttentionMask{}, *spec, nullptr, 0, u)
                       : forward_argmax(e.data(), 1, positions, cache, ops::AttentionMask{});
    queued_.push_back(queued_last_);
  }

  int32_t queued_last_ = 0;     // the default queue: the id the next step feeds
  std::deque<int32_t> queued_;  // and the ids produced, not read yet
};

}  // namespace vlm
