// MemoryTracker counters and the tracked host allocator.
#include "core/memory.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include "core/error.h"

namespace vlm {

const char* mem_category_name(MemCategory c) {
  switch (c) {
    case MemCategory::kWeights: return "weights";
    case MemCategory::kKvCache: return "kv_cache";
    case MemCategory::kScratch: return "scratch";
    case MemCategory::kImage: return "image";
    case MemCategory::kOther: return "other";
    case MemCategory::kCount: break;
  }
  return "?";
}

MemoryTracker& MemoryTracker::instance() {
  static MemoryTracker tracker;
  return tracker;
}

void MemoryTracker::on_alloc(MemDevice d, MemCategory c, int64_t bytes) {
  Counters& k = dev_[static_cast<int>(d)];
  int64_t now = k.active.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  k.by_category[static_cast<int>(c)].fetch_add(bytes, std::memory_order_relaxed);
  int64_t prev = k.peak.load(std::memory_order_relaxed);
  while (now > prev && !k.peak.compare_exchange_weak(prev, now, std::memory_order_relaxed)) {
  }
}

void MemoryTracker::on_free(MemDevice d, MemCategory c, int64_t bytes) {
  Counters& k = dev_[static_cast<int>(d)];
  k.active.fetch_sub(bytes, std::memory_order_relaxed);
  k.by_category[static_cast<int>(c)].fetch_sub(bytes, std::memory_order_relaxed);
}

void MemoryTracker::on_cache_add(MemDevice d, int64_t bytes) {
  dev_[static_cast<int>(d)].cache.fetch_add(bytes, std::memory_order_relaxed);
}
void MemoryTracker::on_cache_remove(MemDevice d, int64_t bytes) {
  dev_[static_cast<int>(d)].cache.fetch_sub(bytes, std::memory_order_relaxed);
}
void MemoryTracker::on_map(int64_t bytes) { mapped_.fetch_add(bytes, std::memory_order_relaxed); }
void MemoryTracker::on_unmap(int64_t bytes) { mapped_.fetch_sub(bytes, std::memory_order_relaxed); }

MemorySnapshot MemoryTracker::snapshot(MemDevice d) const {
  const Counters& k = dev_[static_cast<int>(d)];
  MemorySnapshot s;
  s.active = k.active.load(std::memory_order_relaxed);
  s.peak = k.peak.load(std::memory_order_relaxed);
  s.cache = k.cache.load(std::memory_order_relaxed);
  s.mapped = d == MemDevice::kHost ? mapped_.load(std::memory_order_relaxed) : 0;
  for (int i = 0; i < static_cast<int>(MemCategory::kCount); ++i)
    s.by_category[i] = k.by_category[i].load(std::memory_order_relaxed);
  return s;
}

void MemoryTracker::reset_peak(MemDevice d) {
  Counters& k = dev_[static_cast<int>(d)];
  k.peak.store(k.active.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

void MemoryTracker::reset_peak_all() {
  reset_peak(MemDevice::kHost);
  reset_peak(MemDevice::kGpu);
}

ProcessMemory process_memory() {
  ProcessMemory m;
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    long long kb = 0;
    if (std::sscanf(line, "VmRSS: %lld kB", &kb) == 1) m.rss = kb * 1024;
    if (std::sscanf(line, "VmHWM: %lld kB", &kb) == 1) m.peak_rss = kb * 1024;
  }
  std::fclose(f);
  return m;
}

void* host_alloc(size_t bytes, MemCategory c) {
  if (bytes == 0) bytes = 1;
  // Blocks of 4 MB and more (eager weights, a photo's vision features coming back from the GPU, KV
  // caches) are 2 MB-aligned and asked to be backed by transparent huge pages where the kernel leaves
  // that to madvise: the first write of a fresh 223 MB block faulted in 4 KB pages cost ~150 ms on the
  // GPU machine's VM (the 16k photo's features), and huge pages also spare the TLB when they are read.
  constexpr size_t kHuge = size_t{2} << 20;
  static const bool huge_ok = [] {
    const char* v = std::getenv("VLMCHECK_HUGEPAGES");  // 0: plain 64-byte-aligned blocks only
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  const bool huge = huge_ok && bytes >= 2 * kHuge;
  const size_t align = huge ? kHuge : 64;
  size_t rounded = (bytes + align - 1) & ~(align - 1);
  void* p = std::aligned_alloc(align, rounded);
  if (!p) throw_error(ErrorKind::kResource, "host allocation of {} bytes ({}) failed", bytes, mem_category_name(c));
#ifdef MADV_HUGEPAGE
  if (huge) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: refused or THP off leaves 4 KB pages
#endif
  MemoryTracker::instance().on_alloc(MemDevice::kHost, c, static_cast<int64_t>(bytes));
  return p;
}

void host_free(void* p, size_t bytes, MemCategory c) {
  if (!p) return;
  std::free(p);
  MemoryTracker::instance().on_free(MemDevice::kHost, c, static_cast<int64_t>(bytes == 0 ? 1 : bytes));
}

HostBuffer make_host_buffer(size_t bytes, MemCategory c) {
  return HostBuffer(host_alloc(bytes, c), HostDeleter{bytes, c});
}

}  // namespace vlm
