// MemoryTracker: the one place every allocation path reports to (rule 4 of DEVELOPERS.md).
//
// Counters are kept per device (host, gpu) and per category, in bytes:
//   active  bytes currently held by live buffers,
//   peak    the high-water mark of active since the last reset_peak(),
//   cache   bytes held by caching allocators but not in use (freed to the cache, not to the OS),
//   mapped  bytes of files mapped read-only (lazy weights); counted separately because the kernel
//           pages them in on demand and may drop them again.
// All counters are atomics: allocation paths on any thread may report.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace vlm {

enum class MemDevice : uint8_t { kHost = 0, kGpu = 1 };
enum class MemCategory : uint8_t { kWeights = 0, kKvCache, kScratch, kImage, kOther, kCount };

const char* mem_category_name(MemCategory c);

struct MemorySnapshot {
  int64_t active = 0;
  int64_t peak = 0;
  int64_t cache = 0;
  int64_t mapped = 0;
  int64_t by_category[static_cast<int>(MemCategory::kCount)] = {};
};

class MemoryTracker {
 public:
  static MemoryTracker& instance();

  void on_alloc(MemDevice d, MemCategory c, int64_t bytes);
  void on_free(MemDevice d, MemCategory c, int64_t bytes);
  // A caching allocator moved bytes between "in use" and "cached".
  void on_cache_add(MemDevice d, int64_t bytes);
  void on_cache_remove(MemDevice d, int64_t bytes);
  void on_map(int64_t bytes);
  void on_unmap(int64_t bytes);

  MemorySnapshot snapshot(MemDevice d) const;
  void reset_peak(MemDevice d);
  void reset_peak_all();

 private:
  struct Counters {
    std::atomic<int64_t> active{0};
    std::atomic<int64_t> peak{0};
    std::atomic<int64_t> cache{0};
    std::atomic<int64_t> by_category[static_cast<int>(MemCategory::kCount)] = {};
  };
  Counters dev_[2];
  std::atomic<int64_t> mapped_{0};
};

// Process-level figures from the OS, for cross-checking the tracker: current and peak resident
// set size (VmRSS / VmHWM from /proc/self/status), in bytes; 0 where unavailable.
struct ProcessMemory {
  int64_t rss = 0;
  int64_t peak_rss = 0;
};
ProcessMemory process_memory();

// ---- host allocation ------------------------------------------------------------------------------
// 64-byte aligned host buffers that report to the tracker. Use HostBuffer for owned storage.
void* host_alloc(size_t bytes, MemCategory c);
void host_free(void* p, size_t bytes, MemCategory c);

struct HostDeleter {
  size_t bytes;
  MemCategory category;
  void operator()(void* p) const { host_free(p, bytes, category); }
};
using HostBuffer = std::unique_ptr<void, HostDeleter>;
HostBuffer make_host_buffer(size_t bytes, MemCategory c);

}  // namespace vlm
