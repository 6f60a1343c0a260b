// Core runtime: tensors and views, the memory tracker, the thread pool, mapped files and the
// affine-quantization packing reference.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/json.h"
#include "core/mapped_file.h"
#include "core/memory.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "support/test_support.h"

using namespace vlm;

TEST(Tensor, OwnedTensorIsTrackedAndViewsShareStorage) {
  auto& tracker = MemoryTracker::instance();
  int64_t before = tracker.snapshot(MemDevice::kHost).by_category[static_cast<int>(MemCategory::kKvCache)];
  {
    Tensor t = Tensor::empty({4, 8}, DType::kF32, MemCategory::kKvCache);
    EXPECT_EQ(tracker.snapshot(MemDevice::kHost).by_category[static_cast<int>(MemCategory::kKvCache)],
              before + 4 * 8 * 4);
    for (int i = 0; i < 32; ++i) t.data<float>()[i] = static_cast<float>(i);
    Tensor row2 = t[2];
    EXPECT_EQ(row2.shape(), (Shape{8}));
    EXPECT_EQ(row2.data<float>()[3], 19.0f);
    Tensor rows = t.slice_rows(1, 3).reshape({16});
    EXPECT_EQ(rows.data<float>()[0], 8.0f);
    EXPECT_THROW(t.reshape({5, 7}), Error);
    EXPECT_THROW(t.slice_rows(2, 9), Error);
  }
  EXPECT_EQ(tracker.snapshot(MemDevice::kHost).by_category[static_cast<int>(MemCategory::kKvCache)], before);
}

TEST(Tensor, ConversionsBetweenFloatTypes) {
  Tensor f = Tensor::from_f32({3}, {1.5f, -2.25f, 1e-3f});
  Tensor b = f.to(DType::kBF16);
  Tensor h = f.to(DType::kF16);
  Tensor back = b.to_f32();
  EXPECT_EQ(back.data<float>()[0], 1.5f);
  EXPECT_EQ(back.data<float>()[1], -2.25f);
  EXPECT_NEAR(h.to_f32().data<float>()[2], 1e-3f, 1e-6f);
}

TEST(MemoryTracker, PeakFollowsActiveAndResets) {
  auto& tr = MemoryTracker::instance();
  tr.reset_peak(MemDevice::kHost);
  int64_t base = tr.snapshot(MemDevice::kHost).active;
  {
    Tensor a = Tensor::empty({1 << 20}, DType::kU8);
    Tensor b = Tensor::empty({1 << 19}, DType::kU8);
  }
  auto s = tr.snapshot(MemDevice::kHost);
  EXPECT_EQ(s.active, base);
  EXPECT_GE(s.peak, base + (1 << 20) + (1 << 19));
  tr.reset_peak(MemDevice::kHost);
  EXPECT_EQ(tr.snapshot(MemDevice::kHost).peak, base);
}

TEST(ThreadPool, CoversRangeExactlyOnceAndPropagatesErrors) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(1000);
  pool.parallel_for(1000, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_THROW(pool.parallel_for(
                   100, [](int64_t b, int64_t) { if (b > 0) throw_error(ErrorKind::kInternal, "chunk {}", b); }),
               Error);
  // The pool still works after an error.
  std::atomic<int64_t> sum{0};
  pool.parallel_for(10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 45);
}

// Sums 0..n-1 through the pool and checks the result (every item exactly once, whoever ran it).
void expect_full_sum(ThreadPool& pool, int64_t n) {
  std::atomic<int64_t> sum{0};
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    int64_t local = 0;
    for (int64_t i = b; i < e; ++i) local += i;
    sum += local;
  });
  EXPECT_EQ(sum.load(), n * (n - 1) / 2);
}

// The load fallback (thread_pool.h): with twice as many spinning threads as cores beside it, the caller
// waits for a CPU and parallel_for goes to the caller alone, still covering the range; with the fallback
// off it never does. Real threads, real scheduler; the signal is /proc/thread-self/schedstat.
TEST(ThreadPool, FallsBackToTheCallerAloneWhileTheMachineIsOversubscribed) {
  if (!std::ifstream("/proc/thread-self/schedstat")) GTEST_SKIP() << "no scheduler statistics on this kernel";
  ThreadPool pool(2);
  pool.set_load_fallback(false);
  for (int i = 0; i < 50; ++i) expect_full_sum(pool, 4096);
  ThreadPool::Stats off = pool.stats();
  EXPECT_EQ(off.solo_jobs, 0u);
  EXPECT_GT(off.parallel_jobs, 0u);

  pool.set_load_fallback(true);
  std::atomic<bool> stop{false};
  std::vector<std::thread> spinners;
  const unsigned n_spin = 2 * std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n_spin; ++i)
    spinners.emplace_back([&stop] {
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pool.stats().solo_jobs == off.solo_jobs && std::chrono::steady_clock::now() < deadline)
    expect_full_sum(pool, 4096);
  stop = true;
  for (auto& t : spinners) t.join();
  const ThreadPool::Stats busy = pool.stats();
  EXPECT_GT(busy.busy_windows, off.busy_windows) << "no window saw the caller wait for a CPU";
  EXPECT_GT(busy.solo_jobs, off.solo_jobs) << "parallel_for never ran on the caller alone under contention";
}

TEST(MappedFile, LazyAndEagerGiveTheSameBytes) {
  test::TempDir dir;
  std::string content(10000, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 31);
  test::write_file(dir / "blob.bin", content);
  auto lazy = MappedFile::open(dir / "blob.bin", LoadMode::kLazy);
  auto eager = MappedFile::open(dir / "blob.bin", LoadMode::kEager);
  ASSERT_EQ(lazy->size(), content.size());
  ASSERT_EQ(eager->size(), content.size());
  EXPECT_EQ(std::memcmp(lazy->data(), content.data(), content.size()), 0);
  EXPECT_EQ(std::memcmp(eager->data(), content.data(), content.size()), 0);
  try {
    MappedFile::open(dir / "missing.bin", LoadMode::kLazy);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("missing.bin"), std::string::npos);
  }
}

TEST(Json, ErrorsNameTheFile) {
  test::TempDir dir;
  test::write_file(dir / "config.json", "{\"a\": 1,");
  try {
    read_json_file(dir / "config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos);
  }
  Json j = parse_json(R"({"n": 3, "s": "x", "f": 2.0})", "inline");
  EXPECT_EQ(json_int(j, "n", "inline"), 3);
  EXPECT_EQ(json_int(j, "f", "inline"), 2);
  EXPECT_THROW(json_int(j, "s", "inline"), Error);
  EXPECT_FALSE(json_int(j, "missing", "inline").has_value());
}

TEST(AffineQuant, PackUnpackRoundTripForEveryBitWidth) {
  std::mt19937 rng(1);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    const int64_t n = 128;
    std::vector<uint32_t> row(n * bits / 32, 0);
    std::vector<uint32_t> vals(n);
    for (auto& v : vals) v = rng() & ((1u << bits) - 1);
    for (int64_t i = 0; i < n; ++i) pack_affine(row.data(), i, bits, vals[i]);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(unpack_affine(row.data(), i, bits), vals[i]) << bits << " " << i;
  }
  // Layout facts from MLX: 4-bit element i in bits 4i..4i+3 of word 0.
  uint32_t w = 0x87654321u;
  for (int i = 0; i < 8; ++i) EXPECT_EQ(unpack_affine(&w, i, 4), static_cast<uint32_t>(i + 1));
  // 3-bit: a contiguous little-endian bit stream; element 10 spans words 0 and 1 (bits 30..32).
  uint32_t two[3] = {0u, 0u, 0u};
  pack_affine(two, 10, 3, 0b101);
  EXPECT_EQ(two[0] >> 30, 0b01u);
  EXPECT_EQ(two[1] & 1u, 0b1u);
}

TEST(AffineQuant, DequantizeAndValidate) {
  QuantizedMatrix m;
  m.spec = {4, 32};
  m.rows = 2;
  m.cols = 64;
  m.packed = Tensor::zeros({2, 8}, DType::kU32);
  m.scales = Tensor::from_f32({2, 2}, {0.5f, 1.0f, 2.0f, -1.0f}).to(DType::kBF16);
  m.biases = Tensor::from_f32({2, 2}, {-1.0f, 0.0f, 3.0f, 0.25f}).to(DType::kBF16);
  for (int64_t i = 0; i < 64; ++i) pack_affine(m.packed.data<uint32_t>() + 8, i, 4, static_cast<uint32_t>(i % 16));
  m.validate("test");
  Tensor d = dequantize(m);
  EXPECT_EQ(d.data<float>()[0], -1.0f);          // row 0: q=0 -> bias
  EXPECT_EQ(d.data<float>()[64 + 5], 2 * 5 + 3.0f);  // row 1 group 0
  EXPECT_EQ(d.data<float>()[64 + 33], -1.0f * 1 + 0.25f);
  m.spec.bits = 7;
  EXPECT_THROW(m.validate("test"), Error);
}
