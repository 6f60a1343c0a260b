// A kernel timeline for any CUDA program, graph nodes included: an LD_PRELOAD library that turns on CUPTI's
// kernel and memcpy activity records and writes one CSV row per kernel or copy (start and end in ns on the GPU's
// clock, the graph node, grid and block; a copy's name is "memcpy <direction> <bytes> B") when the program
// exits. It exists because the device machine's nsys cannot import its own traces; what it measures is what
// `nsys --cuda-graph-trace=node` shows.
//
// Built by the CUDA build as libkernel_trace.so (CMake target kernel_trace), or alone:
//   g++ -O2 -shared -fPIC -I/usr/local/cuda/include tools/cuda/kernel_trace.cpp -o kernel_trace.so
//       -L/usr/local/cuda/lib64 -lcupti   (one line)
//   VLMCHECK_KERNEL_TRACE=trace.csv LD_PRELOAD=$PWD/build/libkernel_trace.so vlmcheck bench --device cuda ...
//
// Tracing kernels one by one costs some overlap between chained launches; read the gaps between kernels as
// upper bounds.
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Row {
  uint64_t start, end, graph_node;
  uint32_t graph, stream;
  int grid, block;
  std::string name;
};

std::mutex g_mutex;
std::vector<Row>* g_rows = nullptr;  // leaked on purpose: records arrive until the process is gone

constexpr size_t kBufferBytes = 1u << 20;  // small, so that full buffers are delivered while the program runs

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> lock(g_mutex);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {  // a copy: its row names the direction and the bytes
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      static const char* const kinds[] = {"?", "h2d", "d2h", "h2a", "a2h", "a2a", "a2d", "d2a", "d2d", "h2h", "p2p"};
      const char* kind = m->copyKind < sizeof(kinds) / sizeof(kinds[0]) ? kinds[m->copyKind] : "?";
      g_rows->push_back({m->start, m->end, m->graphNodeId, m->graphId, m->streamId, 0, 0,
                         std::string("memcpy ") + kind + " " + std::to_string(m->bytes) + " B"});
      continue;
    }
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    g_rows->push_back({k->start, k->end, k->graphNodeId, k->graphId, k->streamId, k->gridX * k->gridY * k->gridZ,
                       k->blockX * k->blockY * k->blockZ, k->name ? k->name : "?"});
  }
  free(buffer);
}

void write_rows() {
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_rows->empty()) return;  // a child process that ran no kernel (the preload reaches children too)
  const char* path = std::getenv("VLMCHECK_KERNEL_TRACE");
  FILE* f = std::fopen(path && *path ? path : "kernel_trace.csv", "w");
  if (f == nullptr) return;
  std::fprintf(f, "start_ns,end_ns,graph,graph_node,stream,grid,block,name\n");
  for (const Row& r : *g_rows)
    std::fprintf(f, "%llu,%llu,%u,%llu,%u,%d,%d,\"%s\"\n", static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end), r.graph, static_cast<unsigned long long>(r.graph_node),
                 r.stream, r.grid, r.block, r.name.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_trace: %zu kernels and copies written to %s\n", g_rows->size(), path && *path ? path : "kernel_trace.csv");
}

// The runtime may tear its context down before our atexit runs: flush while the context still exists.
void CUPTIAPI on_resource(void*, CUpti_CallbackDomain domain, CUpti_CallbackId id, const void*) {
  if (domain == CUPTI_CB_DOMAIN_RESOURCE && id == CUPTI_CBID_RESOURCE_CONTEXT_DESTROY_STARTING) cuptiActivityFlushAll(1);
}

__attribute__((constructor)) void start_trace() {
  g_rows = new std::vector<Row>();
  g_rows->reserve(1 << 20);
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "kernel_trace: CUPTI refused kernel activity records\n");
    return;
  }
  cuptiActivityFlushPeriod(50);  // ms: completed records reach us while the context still exists
  CUpti_SubscriberHandle subscriber;
  if (cuptiSubscribe(&subscriber, on_resource, nullptr) == CUPTI_SUCCESS)
    cuptiEnableCallback(1, subscriber, CUPTI_CB_DOMAIN_RESOURCE, CUPTI_CBID_RESOURCE_CONTEXT_DESTROY_STARTING);
  std::atexit(write_rows);
}

}  // namespace
