// CUDA graphs for ops::run_graph (ops.h "captured steps"): the step's ops are captured from the
// backend stream (relaxed mode, so the caching allocator may still cudaMalloc on a miss) instead of
// being launched one by one, and each captured piece is applied to an executable graph kept per
// (key, piece) with cudaGraphExecUpdate — re-instantiated only when the topology changed (e.g. the
// attention's split count) — then launched. Every step is captured afresh, so kernel arguments,
// buffer addresses and host inputs are always the current step's: a key only saves instantiations.
//
// Pieces: the step is cut at op boundaries (graph_op_boundary, called by ops.cpp before every CUDA
// op) into graphs of 8, 16, 32, ... up to piece_ops ops, each launched as soon as it is captured, so
// the GPU runs piece i while the host captures piece i + 1 (one graph for the whole step would leave
// the GPU idle during the whole capture). piece_ops 0: one graph per step.
//
// Host data under capture (common.cuh): host index arrays (Staging) and host-to-device copies go to a
// pinned bump arena whose bytes are copied to a device mirror with one cudaMemcpyAsync right before
// the piece that reads them is launched; device-to-host copies (argmax's ids) land in pinned memory
// and are copied to their destination after the last piece, when run_graph waits for the stream.
//
// Queued steps (run_graph_async): the step is captured and launched as above, but the host does not
// wait for it; its readbacks reach their destinations in graph_wait(ticket). So that the host can
// capture step t + 1 while the GPU still runs step t, everything a step's launches read later lives in
// one of two step sets used alternately (staging arena, readback arena, and the executables of every
// piece of every key): capturing step t + 1 never rewrites what step t's pending uploads and launches
// read. A set is reused two steps later; if that step's ticket was never waited for, the reuse waits
// for it first (and delivers its readbacks), so at most two steps are in flight.
//
// Failure: everything capture cannot do (a host wait, a pageable copy, cudaFree, profiler events) is
// routed around above or ruled out before capture starts (VLMCHECK_CUDA_PROFILE turns graphs off),
// because once the step ran on the host its state (KV cache lengths) has advanced and it cannot run
// twice. When an op throws mid-capture, the ops captured before it are still launched (as eager mode
// would have run them) and the error propagates; when the driver refuses the capture itself, graphs
// are switched off for the process (with a warning) and the error propagates — never a silent skip.
#include "kernels/cuda/common.cuh"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <list>
#include <memory>

#include "core/log.h"

namespace vlm::ops::cuda {
namespace detail {
namespace {

constexpr size_t kStageChunk = size_t{1} << 20;     // pinned + device bytes per staging chunk (grows)
constexpr size_t kReadbackChunk = size_t{64} << 10;  // pinned bytes per readback chunk (grows)
constexpr int kFirstPieceOps = 8;                    // first piece; each next one doubles up to piece_ops
constexpr int kDefaultPieceOps = 64;
constexpr size_t kMaxKeys = 8;  // executables kept (least recently used dropped)

size_t round16(size_t b) { return (b + 15) / 16 * 16; }

using Clock = std::chrono::steady_clock;
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A pinned host block with (for staging) a device mirror of the same size; [uploaded, used) is what
// the host wrote since the last upload.
struct Chunk {
  char* host = nullptr;
  char* device = nullptr;
  size_t cap = 0, used = 0, uploaded = 0;
};

struct Readback {
  const char* pinned;
  void* dst;
  size_t bytes;
};

constexpr int kSets = 2;  // step sets used alternately (queued steps, above)

struct Entry {
  const void* key = nullptr;
  std::vector<cudaGraphExec_t> pieces[kSets];  // per step set, one executable per piece index
  uint64_t last_used = 0;
  bool warm = false;  // the first step of a key runs eagerly (lazy initialisation, module loading)
};

// What one captured step leaves for later: its staged bytes (read by its uploads), its readback
// buffers and destinations, and the events that say when the host may reuse them.
struct StepSet {
  std::vector<Chunk> stage;  // staging arena (pinned + device mirror)
  size_t stage_cur = 0;
  std::vector<Chunk> readback;  // readback arena (pinned only)
  size_t readback_cur = 0;
  std::vector<Readback> readbacks;
  cudaEvent_t uploaded = nullptr;  // after the last upload: the host may rewrite the staging arena
  bool upload_pending = false;
  cudaEvent_t done = nullptr;  // after the step's last piece: its readbacks have landed
  uint64_t ticket = 0;         // nonzero while the step's readbacks wait for graph_wait
};

struct GraphState {
  bool enabled = true;
  int piece_ops = kDefaultPieceOps;
  int queued_piece_ops = 0;  // run_graph_async's steps: one graph unless VLMCHECK_CUDA_GRAPH_OPS says otherwise
  GraphStats stats;

  // Per step.
  bool capturing = false;
  Entry* entry = nullptr;
  int set = 0;  // the step set of the step being captured
  size_t piece = 0;
  int step_piece_ops = 0;  // piece_ops or queued_piece_ops, for the step being captured
  int ops_in_piece = 0, piece_limit = 0;

  StepSet sets[kSets];
  uint64_t next_ticket = 1;

  std::list<Entry> entries;
  uint64_t clock = 0;

  GraphState() {
    const char* on = std::getenv("VLMCHECK_CUDA_GRAPHS");
    enabled = !(on != nullptr && std::string(on) == "0");
    if (const char* ops = std::getenv("VLMCHECK_CUDA_GRAPH_OPS"); ops != nullptr && *ops != '\0')
      piece_ops = queued_piece_ops = std::max(0, std::atoi(ops));
  }
};

GraphState& state() {
  static GraphState* s = new GraphState();  // never destroyed: executables die with the context
  return *s;
}

// A bump allocation of `bytes` from `arena`, opening (or allocating) the next chunk when the current
// one is full. with_device: staging chunks also get a device mirror.
Chunk& bump(std::vector<Chunk>& arena, size_t& cur, size_t bytes, size_t chunk_bytes, bool with_device,
            const char* op) {
  for (;; ++cur) {
    if (cur == arena.size()) {
      Chunk c;
      c.cap = std::max(chunk_bytes, round16(bytes));
      VLM_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&c.host), c.cap, cudaHostAllocDefault), op);
      MemoryTracker::instance().on_alloc(MemDevice::kHost, MemCategory::kOther, static_cast<int64_t>(c.cap));
      if (with_device) c.device = static_cast<char*>(device_alloc(c.cap, MemCategory::kOther));
      arena.push_back(c);
    }
    Chunk& c = arena[cur];
    if (c.used + bytes <= c.cap) return c;
  }
}

// Copies what the host staged since the last upload to the device mirrors (before a piece launches;
// stream order puts it after every earlier piece, which read other ranges).
void upload_staged(GraphState& g, cudaStream_t s) {
  StepSet& st = g.sets[g.set];
  bool any = false;
  for (Chunk& c : st.stage) {
    if (c.used <= c.uploaded) continue;
    VLM_CUDA(cudaMemcpyAsync(c.device + c.uploaded, c.host + c.uploaded, c.used - c.uploaded, cudaMemcpyHostToDevice,
                             s),
             "run_graph");
    c.uploaded = c.used;
    any = true;
  }
  if (!any) return;
  if (st.uploaded == nullptr) VLM_CUDA(cudaEventCreateWithFlags(&st.uploaded, cudaEventDisableTiming), "run_graph");
  VLM_CUDA(cudaEventRecord(st.uploaded, s), "run_graph");
  st.upload_pending = true;
}

void begin_capture(cudaStream_t s) {
  VLM_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), "run_graph");
}

// Ends the current capture; applies it to the entry's executable for this piece (update, else
// instantiate) and launches it after the staged bytes' upload.
void end_piece(GraphState& g, cudaStream_t s) {
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(s, &graph);
  if (e != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    fail_cuda(e, "run_graph", "cudaStreamEndCapture");
  }
  std::unique_ptr<CUgraph_st, cudaError_t (*)(cudaGraph_t)> owned(graph, &cudaGraphDestroy);
  size_t nodes = 0;
  VLM_CUDA(cudaGraphGetNodes(graph, nullptr, &nodes), "run_graph");
  upload_staged(g, s);  // even for an empty piece: a later piece may read what this one staged
  if (nodes == 0) return;
  std::vector<cudaGraphExec_t>& pieces = g.entry->pieces[g.set];
  if (pieces.size() <= g.piece) pieces.resize(g.piece + 1, nullptr);
  cudaGraphExec_t& exec = pieces[g.piece];
  if (exec != nullptr) {
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(exec, graph, &info) == cudaSuccess) {
      ++g.stats.updates;
    } else {  // topology (or a node kind) changed: build it anew
      cudaGetLastError();
      VLM_LOG_DEBUG("run_graph: piece {} re-instantiated (cudaGraphExecUpdate result {})", g.piece,
                    static_cast<int>(info.result));
      cudaGraphExecDestroy(exec);
      exec = nullptr;
    }
  }
  if (exec == nullptr) {
    VLM_CUDA(cudaGraphInstantiate(&exec, graph, 0), "run_graph");
    ++g.stats.instantiations;
  }
  VLM_CUDA(cudaGraphLaunch(exec, s), "run_graph");
  ++g.stats.pieces;
  ++g.piece;
}

Entry& entry_for(GraphState& g, const void* key) {
  ++g.clock;
  for (auto it = g.entries.begin(); it != g.entries.end(); ++it) {
    if (it->key != key) continue;
    g.entries.splice(g.entries.begin(), g.entries, it);  // most recent first
    g.entries.front().last_used = g.clock;
    return g.entries.front();
  }
  if (g.entries.size() >= kMaxKeys) {
    // An executable may still run (a queued step): cudaGraphExecDestroy waits for nothing, so the
    // stream must have finished with it first.
    VLM_CUDA(cudaStreamSynchronize(stream("run_graph")), "run_graph");
    for (auto& set : g.entries.back().pieces)
      for (cudaGraphExec_t x : set)
        if (x != nullptr) cudaGraphExecDestroy(x);
    g.entries.pop_back();
  }
  g.entries.push_front(Entry{key, {}, g.clock, false});
  return g.entries.front();
}

// Waits for the step that used set `st` and copies its readbacks to their destinations.
void finish(GraphState& g, StepSet& st) {
  if (st.ticket == 0) return;
  const auto t0 = Clock::now();
  if (const cudaError_t e = cudaEventSynchronize(st.done); e != cudaSuccess) {
    st.readbacks.clear();  // never delivered later, when their destinations may be gone
    st.ticket = 0;
    fail_cuda(e, "run_graph", "cudaEventSynchronize");
  }
  for (const Readback& r : st.readbacks) std::memcpy(r.dst, r.pinned, r.bytes);
  st.readbacks.clear();
  st.ticket = 0;
  g.stats.wait_s += seconds(Clock::now() - t0);
}

// Before a capture into set `st`: the step that used it last has delivered its readbacks and its
// uploads have left the staging arena.
void reset_arenas(GraphState& g, StepSet& st) {
  finish(g, st);
  if (st.upload_pending) VLM_CUDA(cudaEventSynchronize(st.uploaded), "run_graph");
  st.upload_pending = false;
  for (Chunk& c : st.stage) c.used = c.uploaded = 0;
  for (Chunk& c : st.readback) c.used = 0;
  st.stage_cur = st.readback_cur = 0;
  st.readbacks.clear();
}

void disable_after_failure(GraphState& g, const char* why) {
  g.enabled = false;
  VLM_LOG_WARN("CUDA graphs switched off for this process: {} (the step's error follows)", why);
}

}  // namespace

bool capturing() { return state().capturing; }

StagedBytes capture_stage(size_t bytes) {
  GraphState& g = state();
  StepSet& st = g.sets[g.set];
  const size_t b = round16(std::max<size_t>(bytes, 1));
  Chunk& c = bump(st.stage, st.stage_cur, b, kStageChunk, true, "run_graph staging");
  StagedBytes out{c.host + c.used, c.device + c.used};
  c.used += b;
  return out;
}

void* capture_readback(void* dst, size_t bytes) {
  GraphState& g = state();
  StepSet& st = g.sets[g.set];
  const size_t b = round16(std::max<size_t>(bytes, 1));
  Chunk& c = bump(st.readback, st.readback_cur, b, kReadbackChunk, false, "run_graph readback");
  char* p = c.host + c.used;
  c.used += b;
  st.readbacks.push_back({p, dst, bytes});
  return p;
}

}  // namespace detail

namespace detail {
namespace {

// run_graph / run_graph_async: the step captured in pieces of up to piece_ops ops (0: one graph).
uint64_t capture_step(const void* key, const std::function<void()>& step, int piece_ops) {
  GraphState& g = state();
  // Nested: part of the enclosing capture. Off, or profiling (events cannot be captured): eagerly, and
  // the host outputs are already written (their copies waited).
  if (g.capturing || !g.enabled || profiling()) {
    step();
    return 0;
  }
  cudaStream_t s = stream("run_graph");
  Entry& en = entry_for(g, key);
  ++g.stats.steps;
  if (!en.warm) {  // first step of a key: eager, so one-time setup never happens under capture
    en.warm = true;
    ++g.stats.eager_steps;
    step();
    return 0;
  }
  const auto t_begin = Clock::now();
  const double api_before = g.stats.graph_api_s, wait_before = g.stats.wait_s;
  g.set = (g.set + 1) % kSets;
  StepSet& set = g.sets[g.set];
  reset_arenas(g, set);
  g.entry = &en;
  g.piece = 0;
  g.ops_in_piece = 0;
  g.step_piece_ops = piece_ops;
  g.piece_limit = piece_ops > 0 ? std::min(kFirstPieceOps, piece_ops) : 0;
  begin_capture(s);
  g.capturing = true;
  try {
    step();
  } catch (...) {
    g.capturing = false;
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(s, &st);
    cudaGetLastError();
    if (st == cudaStreamCaptureStatusActive) {
      // An op refused its arguments: run what was captured before it, as eager mode would have.
      try {
        end_piece(g, s);
      } catch (...) {
        disable_after_failure(g, "a captured piece could not be launched");
      }
    } else {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(s, &broken);
      if (broken != nullptr) cudaGraphDestroy(broken);
      cudaGetLastError();
      disable_after_failure(g, "an operation invalidated the stream capture");
    }
    set.readbacks.clear();
    throw;
  }
  g.capturing = false;
  const auto t_captured = Clock::now();
  // The step's own time, less the piece ends graph_op_boundary made inside it and the wait for the
  // step set's previous user.
  g.stats.capture_s +=
      seconds(t_captured - t_begin) - (g.stats.graph_api_s - api_before) - (g.stats.wait_s - wait_before);
  try {
    end_piece(g, s);
  } catch (...) {
    disable_after_failure(g, "the captured step could not be instantiated or launched");
    throw;
  }
  if (!set.readbacks.empty()) {
    if (set.done == nullptr) VLM_CUDA(cudaEventCreateWithFlags(&set.done, cudaEventDisableTiming), "run_graph");
    VLM_CUDA(cudaEventRecord(set.done, s), "run_graph");
    set.ticket = g.next_ticket++;
  }
  g.stats.graph_api_s += seconds(Clock::now() - t_captured);
  return set.ticket;
}

}  // namespace
}  // namespace detail

uint64_t run_graph_async(const void* key, const std::function<void()>& step) {
  return detail::capture_step(key, step, detail::state().queued_piece_ops);
}

void graph_wait(uint64_t ticket) {
  if (ticket == 0) return;
  detail::GraphState& g = detail::state();
  VLM_CHECK(!g.capturing, ErrorKind::kInvalidArgument, "[cuda graph_wait] called inside run_graph");
  for (detail::StepSet& st : g.sets)
    if (st.ticket == ticket) detail::finish(g, st);  // else: already delivered (its set was reused)
}

void run_graph(const void* key, const std::function<void()>& step) {
  graph_wait(detail::capture_step(key, step, detail::state().piece_ops));
}

void graph_op_boundary() {
  detail::GraphState& g = detail::state();
  if (!g.capturing || g.step_piece_ops <= 0) return;
  if (g.ops_in_piece >= g.piece_limit) {
    const auto t0 = detail::Clock::now();
    cudaStream_t s = detail::stream("run_graph");
    detail::end_piece(g, s);
    detail::begin_capture(s);
    g.stats.graph_api_s += detail::seconds(detail::Clock::now() - t0);
    g.ops_in_piece = 0;
    g.piece_limit = std::min(g.piece_limit * 2, g.step_piece_ops);
  }
  ++g.ops_in_piece;
}

GraphStats graph_stats() { return detail::state().stats; }

bool detail::chained_launches_enabled() {
  static const bool on = [] {
    // On by default where the hardware has it (sm_90+); VLMCHECK_CUDA_PDL=0 turns it off. H100,
    // alternating runs of one bundle (common.cuh): 3B 4-bit 393-416 -> 417-428 tok/s, 3B bf16
    // 314-318 -> 322-330, 7B 4-bit 300-309 -> 314, 7B bf16 unchanged (bandwidth-bound).
    const char* env = std::getenv("VLMCHECK_CUDA_PDL");
    if (env != nullptr && std::string(env) == "0") return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

void set_graph_options(bool enabled, int piece_ops) {
  detail::GraphState& g = detail::state();
  VLM_CHECK(!g.capturing, ErrorKind::kInvalidArgument, "[cuda set_graph_options] called inside run_graph");
  g.enabled = enabled;
  g.piece_ops = g.queued_piece_ops = std::max(0, piece_ops);
}

bool graphs_enabled() { return detail::state().enabled && !detail::profiling(); }

}  // namespace vlm::ops::cuda
