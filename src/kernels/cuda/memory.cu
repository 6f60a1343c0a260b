// The CUDA backend's runtime side: device selection and availability, the one stream, the cuBLASLt
// handle + workspace, the caching device allocator (reported to the MemoryTracker as GPU memory),
// copies, the reusable scratch and staging buffers, and the error helpers of common.cuh. Under
// run_graph capture (graph.cu) copies and staging take the capture's pinned arenas, synchronize()
// refuses, and an out-of-memory retry does not free the cache (cudaFree cannot run during capture).
//
// Allocator: requests are rounded up to size classes (powers of two up to 4 KiB, then 8 classes per
// power of two, steps capped at 2 MiB) and freed blocks of a class are kept for the next request of
// that class. Everything runs on
// one stream, so a block freed by the host while a kernel still reads it is only handed to work that
// the stream orders after that kernel. release_cache() (and an out-of-memory retry) gives cached
// blocks back to the driver; cudaFree waits for the device first.
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/quant.h"
#include "kernels/cuda/common.cuh"

namespace vlm::ops::cuda {
namespace detail {

void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

void fail_cuda(cudaError_t e, const char* op, const char* what) {
  ErrorKind kind = e == cudaErrorMemoryAllocation ? ErrorKind::kResource : ErrorKind::kInternal;
  std::string msg = std::string("[cuda ") + op + "] " + what + ": " + cudaGetErrorName(e) + " (" +
                    cudaGetErrorString(e) + ")";
  cudaGetLastError();  // clear a non-sticky error so the next call does not report it again
  fail(kind, msg);
}

void fail_cublas(cublasStatus_t s, const char* op, const char* what) {
  ErrorKind kind = s == CUBLAS_STATUS_ALLOC_FAILED ? ErrorKind::kResource : ErrorKind::kInternal;
  fail(kind, std::string("[cuda ") + op + "] " + what + ": cuBLASLt status " + std::to_string(static_cast<int>(s)) +
                 " (" + cublasLtGetStatusString(s) + ")");
}

namespace {

struct Context {
  bool usable = false;
  std::string reason;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
};

Context& context() {
  static Context c = [] {
    Context ctx;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      cudaGetLastError();
      ctx.reason = e != cudaSuccess ? std::string("no CUDA device: ") + cudaGetErrorString(e) : "no CUDA device found";
      return ctx;
    }
    cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, 0)) != cudaSuccess || (e = cudaSetDevice(0)) != cudaSuccess ||
        (e = cudaFree(nullptr)) != cudaSuccess) {
      cudaGetLastError();
      ctx.reason = std::string("CUDA device 0 unusable: ") + cudaGetErrorString(e);
      return ctx;
    }
    if (p.major < 8) {  // we ship sm_90a code and compute_80/89 PTX
      ctx.reason = std::string("CUDA device 0 (") + p.name + ") has compute capability " + std::to_string(p.major) +
                   "." + std::to_string(p.minor) + ", the CUDA backend needs 8.0 or newer";
      return ctx;
    }
    if ((e = cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking)) != cudaSuccess) {
      cudaGetLastError();
      ctx.reason = std::string("cannot create a CUDA stream: ") + cudaGetErrorString(e);
      return ctx;
    }
    ctx.usable = true;
    return ctx;
  }();
  return c;
}

Context& usable_context(const char* op) {
  Context& c = context();
  if (!c.usable) fail(ErrorKind::kUnsupported, std::string("[cuda ") + op + "] " + c.reason);
  return c;
}

// ---- caching allocator ----------------------------------------------------------------------------
size_t size_class(size_t bytes) {
  // Up to 4 KiB: powers of two (from 256). Above: 8 classes per power of two (a step of 1/8 of the
  // power below, so at most 12.5% is wasted), the step capped at 2 MiB (large weights waste < 2 MiB).
  if (bytes <= 4096) {
    size_t c = 256;
    while (c < bytes) c <<= 1;
    return c;
  }
  size_t p = 4096;
  while (p * 2 <= bytes) p <<= 1;
  const size_t step = std::min<size_t>(p / 8, size_t{2} << 20);
  return (bytes + step - 1) / step * step;
}

struct Block {
  size_t size;
  MemCategory category;
};

struct Allocator {
  std::mutex mu;
  std::unordered_map<void*, Block> live;
  std::multimap<size_t, void*> cached;  // class size -> block
  size_t cached_bytes = 0;

  // Caller holds mu.
  void release_locked() {
    for (auto& [size, p] : cached) {
      cudaFree(p);  // errors here would be sticky faults already reported elsewhere
      MemoryTracker::instance().on_cache_remove(MemDevice::kGpu, static_cast<int64_t>(size));
    }
    cached.clear();
    cached_bytes = 0;
  }
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed: tensors may be freed during static teardown
  return *a;
}

// Scratch and staging buffers: grown on demand, never shrunk.
struct Reusable {
  void* p = nullptr;
  size_t bytes = 0;
};

void* grow(Reusable& r, size_t bytes, MemCategory category) {
  if (r.bytes >= bytes) return r.p;
  if (r.p != nullptr) device_free(r.p, r.bytes, category);  // stream-ordered reuse makes this safe
  r.p = nullptr;
  r.bytes = 0;
  size_t want = size_class(std::max<size_t>(bytes, 4096));
  r.p = device_alloc(want, category);
  r.bytes = want;
  return r.p;
}

}  // namespace

cudaStream_t stream(const char* op) { return usable_context(op).stream; }

std::string unavailable_reason() { return context().reason; }

cublasLtHandle_t lt_handle(const char* op) {
  Context& c = usable_context(op);
  static std::once_flag once;
  std::call_once(once, [&] { VLM_CUBLAS(cublasLtCreate(&c.lt), op); });
  return c.lt;
}

size_t lt_workspace_bytes() { return size_t{32} << 20; }

void* lt_workspace(const char* op) {
  usable_context(op);
  static void* ws = device_alloc(lt_workspace_bytes(), MemCategory::kScratch);
  return ws;
}

void* scratch(size_t bytes, const char* op) {
  usable_context(op);
  static Reusable r;
  return grow(r, bytes, MemCategory::kScratch);
}

namespace {

// Pinned host memory for the staging copies. A copy from pageable memory makes the driver synchronize the
// stream first (the host waits for every queued kernel, then the GPU idles while the host queues the next
// ones), so every upload goes through pinned memory and is truly asynchronous.
// Small blocks: slots used round-robin; an event per slot says when the copy out of it has run, so a slot
// is only rewritten after that (a wait only when the GPU is kSlots ops behind).
struct PinnedSlots {
  static constexpr int kSlots = 16;
  static constexpr size_t kSlotBytes = size_t{64} << 10;
  char* host = nullptr;
  cudaEvent_t done[kSlots] = {};
  bool used[kSlots] = {};
  int next = 0;
  bool ok = false;

  explicit PinnedSlots(const char* op) {
    if (cudaHostAlloc(reinterpret_cast<void**>(&host), kSlots * kSlotBytes, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      host = nullptr;
      return;  // pageable copies still work
    }
    for (int i = 0; i < kSlots; ++i) VLM_CUDA(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming), op);
    MemoryTracker::instance().on_alloc(MemDevice::kHost, MemCategory::kOther,
                                       static_cast<int64_t>(kSlots * kSlotBytes));
    ok = true;
  }
};

// Larger blocks (the 1.5 MB M-RoPE positions of a 62k-patch photo, k_pos of a 16k-token prompt): a pool
// of pinned buffers of power-of-two sizes (from 1 MiB), each with an event for its last copy. An idle
// buffer that fits is reused (the smallest); otherwise a new one is allocated while the pool stays under
// kCapBytes, and past that the least recently used one that fits is waited for. Only a block that no
// buffer can hold within the cap (or a failed cudaHostAlloc) is copied from pageable memory.
struct PinnedPool {
  static constexpr size_t kMinBytes = size_t{1} << 20, kCapBytes = size_t{256} << 20;
  struct Buffer {
    char* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t done = nullptr;
    uint64_t last_use = 0;  // 0: never used
  };
  std::vector<Buffer> buffers;
  size_t total = 0;
  uint64_t uses = 0;

  static bool idle(const Buffer& b, const char* op) {
    if (b.last_use == 0) return true;
    const cudaError_t e = cudaEventQuery(b.done);
    if (e == cudaSuccess) return true;
    if (e == cudaErrorNotReady) {
      cudaGetLastError();  // not an error: keep it out of the next launch check
      return false;
    }
    fail_cuda(e, op, "cudaEventQuery(staging buffer)");
    return false;
  }

  // A pinned buffer of at least `bytes` that no queued copy still reads, or null (use a pageable copy).
  Buffer* acquire(size_t bytes, const char* op) {
    Buffer* best = nullptr;
    for (Buffer& b : buffers)
      if (b.bytes >= bytes && (best == nullptr || b.bytes < best->bytes) && idle(b, op)) best = &b;
    if (best != nullptr) return best;
    size_t want = kMinBytes;
    while (want < bytes) want <<= 1;
    if (total + want <= kCapBytes) {
      Buffer b;
      if (cudaHostAlloc(reinterpret_cast<void**>(&b.host), want, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return nullptr;
      }
      VLM_CUDA(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming), op);
      b.bytes = want;
      total += want;
      MemoryTracker::instance().on_alloc(MemDevice::kHost, MemCategory::kOther, static_cast<int64_t>(want));
      buffers.push_back(b);
      return &buffers.back();
    }
    for (Buffer& b : buffers)  // at the cap: wait for the least recently used buffer that fits
      if (b.bytes >= bytes && (best == nullptr || b.last_use < best->last_use)) best = &b;
    if (best != nullptr) VLM_CUDA(cudaEventSynchronize(best->done), op);
    return best;
  }
};

// One pool for every large upload: Staging's host index arrays and copy()'s host-to-device blocks.
PinnedPool& pinned_pool() {
  static PinnedPool pool;
  return pool;
}

}  // namespace

// dst (device) <- src (host) through a pinned pool buffer, without waiting for queued work; false when
// no pinned buffer can hold it (the caller then copies from pageable memory).
bool pinned_upload(void* dst, const void* src, size_t bytes, cudaStream_t s, const char* op) {
  PinnedPool& pool = pinned_pool();
  PinnedPool::Buffer* b = pool.acquire(bytes, op);
  if (b == nullptr) return false;
  std::memcpy(b->host, src, bytes);
  VLM_CUDA(cudaMemcpyAsync(dst, b->host, bytes, cudaMemcpyHostToDevice, s), op);
  VLM_CUDA(cudaEventRecord(b->done, s), op);
  b->last_use = ++pool.uses;
  return true;
}

void Staging::upload() {
  static Reusable r;
  if (bytes_.empty()) return;
  if (capturing()) {  // the graph's arena: this op's own device range, uploaded before its piece runs
    StagedBytes b = capture_stage(bytes_.size());
    std::memcpy(b.host, bytes_.data(), bytes_.size());
    base_ = b.device;
    return;
  }
  cudaStream_t s = stream(op_);
  static PinnedSlots pinned(op_);
  base_ = static_cast<const char*>(grow(r, bytes_.size(), MemCategory::kOther));
  char* dst = const_cast<char*>(base_);
  if (pinned.ok && bytes_.size() <= PinnedSlots::kSlotBytes) {
    const int slot = pinned.next;
    pinned.next = (slot + 1) % PinnedSlots::kSlots;
    if (pinned.used[slot]) VLM_CUDA(cudaEventSynchronize(pinned.done[slot]), op_);
    char* src = pinned.host + static_cast<size_t>(slot) * PinnedSlots::kSlotBytes;
    std::memcpy(src, bytes_.data(), bytes_.size());
    VLM_CUDA(cudaMemcpyAsync(dst, src, bytes_.size(), cudaMemcpyHostToDevice, s), op_);
    VLM_CUDA(cudaEventRecord(pinned.done[slot], s), op_);
    pinned.used[slot] = true;
    return;
  }
  if (!pinned_upload(dst, bytes_.data(), bytes_.size(), s, op_))
    VLM_CUDA(cudaMemcpyAsync(dst, bytes_.data(), bytes_.size(), cudaMemcpyHostToDevice, s), op_);
}

FloatKind float_kind(const Tensor& t, const char* op, const char* name) {
  switch (t.dtype()) {
    case DType::kF32: return kF32;
    case DType::kF16: return kF16;
    case DType::kBF16: return kBF16;
    default: break;
  }
  fail(ErrorKind::kInvalidArgument,
       std::string("[cuda ") + op + "] " + name + " is " + t.describe() + ", expected f32, f16 or bf16");
}

const void* device_ptr(const Tensor& t, const char* op, const char* name) {
  if (!t.defined() || t.device() != Device::kCuda || !t.is_contiguous())
    fail(ErrorKind::kInvalidArgument, std::string("[cuda ") + op + "] " + name + " is " +
                                          (t.defined() ? t.describe() : std::string("undefined")) +
                                          ", expected a contiguous tensor on the GPU");
  return t.raw();
}

QuantView quant_view(const Weight& w, const char* op) {
  const QuantizedMatrix& m = w.quant;
  m.validate(op);
  QuantView v;
  v.packed = static_cast<const uint32_t*>(device_ptr(m.packed, op, "packed weight"));
  v.scales = device_ptr(m.scales, op, "quantization scales");
  v.biases = device_ptr(m.biases, op, "quantization biases");
  v.scale_kind = float_kind(m.scales, op, "quantization scales");
  v.bias_kind = float_kind(m.biases, op, "quantization biases");
  v.bits = m.spec.bits;
  v.group_size = m.spec.group_size;
  v.words_per_row = m.words_per_row();
  v.groups = m.cols / m.spec.group_size;
  return v;
}

}  // namespace detail

using detail::allocator;

bool available() { return detail::context().usable; }

void* device_alloc(size_t bytes, MemCategory category) {
  detail::usable_context("device_alloc");
  const size_t size = detail::size_class(bytes);
  auto& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  void* p = nullptr;
  auto it = a.cached.find(size);
  if (it != a.cached.end()) {
    p = it->second;
    a.cached.erase(it);
    a.cached_bytes -= size;
    MemoryTracker::instance().on_cache_remove(MemDevice::kGpu, static_cast<int64_t>(size));
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    // Give the cache back and retry once (not under capture: cudaFree would end it).
    if (e == cudaErrorMemoryAllocation && !a.cached.empty() && !detail::capturing()) {
      cudaGetLastError();
      a.release_locked();
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      cudaGetLastError();
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
      detail::fail(e == cudaErrorMemoryAllocation ? ErrorKind::kResource : ErrorKind::kInternal,
                   "[cuda device_alloc] cudaMalloc of " + std::to_string(size) + " bytes (" + std::to_string(bytes) +
                       " asked, " + mem_category_name(category) + ") failed: " + cudaGetErrorString(e) + "; " +
                       std::to_string(free_b >> 20) + " of " + std::to_string(total_b >> 20) + " MiB free");
    }
  }
  a.live[p] = {size, category};
  MemoryTracker::instance().on_alloc(MemDevice::kGpu, category, static_cast<int64_t>(size));
  return p;
}

void device_free(void* p, size_t /*bytes*/, MemCategory /*category*/) {
  if (p == nullptr) return;
  auto& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(p);
  if (it == a.live.end()) return;  // not ours (or freed twice): called from deleters, so never throw
  const detail::Block b = it->second;
  a.live.erase(it);
  a.cached.emplace(b.size, p);
  a.cached_bytes += b.size;
  MemoryTracker::instance().on_free(MemDevice::kGpu, b.category, static_cast<int64_t>(b.size));
  MemoryTracker::instance().on_cache_add(MemDevice::kGpu, static_cast<int64_t>(b.size));
}

void release_cache() {
  if (!available()) return;
  auto& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  a.release_locked();
}

namespace {

// Large device-to-host copies outside capture (a photo's 223 MB of vision features) through two pinned
// buffers in turn: the DMA of one chunk overlaps the host's memcpy of the other. A pageable copy of that
// size ran at ~1.6 GB/s (the driver's own bounce buffers; H200: 139 ms for the 16k photo's features).
// Large host-to-device copies (the LM prefill's embeddings) go through the pinned pool instead
// (detail::pinned_upload): a pageable one makes the driver wait for every queued kernel first.
struct PinnedRing {
  static constexpr size_t kChunk = size_t{8} << 20;
  static constexpr size_t kMinBytes = size_t{2} << 20;  // below this the plain copy is as fast
  char* host[2] = {};
  cudaEvent_t done[2] = {};
  bool ok = false;

  PinnedRing() {
    char* block = nullptr;
    if (cudaHostAlloc(reinterpret_cast<void**>(&block), 2 * kChunk, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      return;  // pageable copies still work
    }
    for (int i = 0; i < 2; ++i) {
      host[i] = block + i * kChunk;
      if (cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        return;
      }
    }
    MemoryTracker::instance().on_alloc(MemDevice::kHost, MemCategory::kOther, static_cast<int64_t>(2 * kChunk));
    ok = true;
  }

  // dst (host) <- src (device), complete on return.
  void download(char* dst, const char* src, size_t bytes, cudaStream_t s) {
    size_t pending_off[2] = {0, 0}, pending_len[2] = {0, 0};
    auto drain = [&](int b) {
      if (pending_len[b] == 0) return;
      VLM_CUDA(cudaEventSynchronize(done[b]), "copy");
      std::memcpy(dst + pending_off[b], host[b], pending_len[b]);
      pending_len[b] = 0;
    };
    for (size_t off = 0, i = 0; off < bytes; off += kChunk, ++i) {
      const int b = static_cast<int>(i % 2);
      drain(b);
      const size_t len = std::min(kChunk, bytes - off);
      VLM_CUDA(cudaMemcpyAsync(host[b], src + off, len, cudaMemcpyDeviceToHost, s), "copy");
      VLM_CUDA(cudaEventRecord(done[b], s), "copy");
      pending_off[b] = off;
      pending_len[b] = len;
    }
    // Chunk order: the older pending chunk first (either order is correct; this one overlaps more).
    const size_t chunks = (bytes + kChunk - 1) / kChunk;
    drain(static_cast<int>(chunks % 2));
    drain(static_cast<int>((chunks + 1) % 2));
  }
};

}  // namespace

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::kCpu && src_device == Device::kCpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cudaStream_t s = detail::stream("copy");
  cudaMemcpyKind kind = dst_device == Device::kCpu   ? cudaMemcpyDeviceToHost
                        : src_device == Device::kCpu ? cudaMemcpyHostToDevice
                                                     : cudaMemcpyDeviceToDevice;
  detail::ProfileScope profile(kind == cudaMemcpyDeviceToHost   ? "copy d2h"
                               : kind == cudaMemcpyHostToDevice ? "copy h2d"
                                                                : "copy d2d");
  if (detail::capturing() && kind != cudaMemcpyDeviceToDevice) {
    // Under capture: host sources through the staging arena (a captured copy from pageable memory is
    // refused), host destinations through pinned memory that run_graph copies out after the step.
    if (kind == cudaMemcpyHostToDevice) {
      detail::StagedBytes b = detail::capture_stage(bytes);
      std::memcpy(b.host, src, bytes);
      VLM_CUDA(cudaMemcpyAsync(dst, b.device, bytes, cudaMemcpyDeviceToDevice, s), "copy");
    } else {
      VLM_CUDA(cudaMemcpyAsync(detail::capture_readback(dst, bytes), src, bytes, kind, s), "copy");
    }
    return;
  }
  if (kind != cudaMemcpyDeviceToDevice && bytes >= PinnedRing::kMinBytes) {
    if (kind == cudaMemcpyHostToDevice) {
      // Up to 64 MB (a 2048-token chunk of 7B embeddings is 29 MB): larger blocks are weights at load,
      // which the pool (capped at 256 MB) would only hold one or two of at a time.
      if (bytes <= (size_t{64} << 20) && detail::pinned_upload(dst, src, bytes, s, "copy")) return;
    } else {
      static PinnedRing ring;
      if (ring.ok) {
        ring.download(static_cast<char*>(dst), static_cast<const char*>(src), bytes, s);
        return;
      }
    }
  }
  VLM_CUDA(cudaMemcpyAsync(dst, src, bytes, kind, s), "copy");
  if (dst_device == Device::kCpu) VLM_CUDA(cudaStreamSynchronize(s), "copy");
}

void copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width, size_t rows) {
  if (width == 0 || rows == 0) return;
  if (width > dst_pitch || width > src_pitch)
    detail::fail(ErrorKind::kInvalidArgument, "[cuda copy_2d] row width " + std::to_string(width) +
                                                  " exceeds a pitch (dst " + std::to_string(dst_pitch) + ", src " +
                                                  std::to_string(src_pitch) + ")");
  cudaStream_t s = detail::stream("copy_2d");
  detail::ProfileScope profile("copy_2d");
  VLM_CUDA(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyDeviceToDevice, s), "copy_2d");
}

void synchronize() {
  if (!available()) return;
  if (detail::capturing())
    detail::fail(ErrorKind::kInvalidArgument,
                 "[cuda synchronize] called inside ops::run_graph: the captured step has not run yet (its host "
                 "outputs are written when run_graph returns)");
  VLM_CUDA(cudaStreamSynchronize(detail::stream("synchronize")), "synchronize");
}

}  // namespace vlm::ops::cuda
