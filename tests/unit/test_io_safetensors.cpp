// safetensors and Checkpoint: round trips through files written by the test writer (padded and
// MLX-style unpadded/out-of-order), lazy == eager bytes, sharded folders, and every malformed-input
// case the reader must refuse with an error naming the file and the tensor.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"
#include "safetensors_writer.h"
#include "support/test_support.h"

using namespace vlm;
using namespace vlm::test;

namespace {

std::string bytes_of(const Tensor& t) { return std::string(static_cast<const char*>(t.raw()), t.nbytes()); }

// Runs `fn`, expects a vlm::Error of `kind`, and returns its message.
template <typename Fn>
std::string error_of(Fn&& fn, ErrorKind kind) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

std::vector<StTensor> sample_tensors() {
  return {st_random("model.embed_tokens.weight", "BF16", {7, 5}, 1),
          st_random("model.layers.0.mlp.down_proj.weight", "U32", {4, 3}, 2),
          st_random("model.layers.0.mlp.down_proj.scales", "F16", {4, 1}, 3),
          st_random("model.norm.weight", "F32", {5}, 4),
          st_random("scalar", "I64", {}, 5),
          st_random("empty", "F32", {0, 3}, 6)};
}

}  // namespace

class SafetensorsRoundTrip : public ::testing::TestWithParam<std::tuple<bool, bool, LoadMode>> {};

TEST_P(SafetensorsRoundTrip, ReadsBackWhatWasWritten) {
  auto [pad, reverse, mode] = GetParam();
  TempDir dir;
  auto tensors = sample_tensors();
  StOptions opt;
  opt.pad_header_to_8 = pad;
  opt.reverse_data = reverse;
  opt.metadata = {{"format", "mlx"}};
  std::string path = dir / "model.safetensors";
  write_file(path, st_build(tensors, opt));

  auto f = SafetensorsFile::open(path, mode);
  EXPECT_EQ(f->path(), path);
  ASSERT_EQ(f->tensors().size(), tensors.size());
  EXPECT_EQ(f->metadata().at("format"), "mlx");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& info = f->tensors()[i];
    EXPECT_EQ(info.name, tensors[i].name);  // header order
    EXPECT_EQ(info.shape, Shape(tensors[i].shape.begin(), tensors[i].shape.end()));
    EXPECT_EQ(info.file, path);
    Tensor t = f->tensor(tensors[i].name);
    EXPECT_EQ(t.shape(), info.shape);
    EXPECT_EQ(t.nbytes(), tensors[i].data.size());
    EXPECT_EQ(bytes_of(t), tensors[i].data) << tensors[i].name;
  }
  EXPECT_EQ(f->tensor("model.embed_tokens.weight").dtype(), DType::kBF16);
  EXPECT_EQ(f->tensor("model.layers.0.mlp.down_proj.weight").dtype(), DType::kU32);
  EXPECT_EQ(f->find("nope"), nullptr);
  EXPECT_THROW(f->tensor("nope"), Error);
}

INSTANTIATE_TEST_SUITE_P(Layouts, SafetensorsRoundTrip,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(),
                                            ::testing::Values(LoadMode::kLazy, LoadMode::kEager)));

TEST(Safetensors, LazyAndEagerGiveTheSameBytes) {
  TempDir dir;
  std::vector<StTensor> tensors;
  for (int i = 0; i < 20; ++i)
    tensors.push_back(st_random("t" + std::to_string(i), i % 2 ? "BF16" : "F32", {17, 3 + i}, 100 + i));
  StOptions opt;
  opt.pad_header_to_8 = false;
  opt.reverse_data = true;
  write_file(dir / "a.safetensors", st_build(tensors, opt));
  auto lazy = SafetensorsFile::open(dir / "a.safetensors", LoadMode::kLazy);
  auto eager = SafetensorsFile::open(dir / "a.safetensors", LoadMode::kEager);
  EXPECT_EQ(lazy->file().mode(), LoadMode::kLazy);
  EXPECT_EQ(eager->file().mode(), LoadMode::kEager);
  for (const auto& t : tensors) EXPECT_EQ(bytes_of(lazy->tensor(t.name)), bytes_of(eager->tensor(t.name)));
}

TEST(Safetensors, UnpaddedMlxHeadersStillGiveNaturallyAlignedTensors) {
  // MLX writes the header unpadded, so the data region can start at any byte. Eager buffers place it on a
  // 64-byte boundary (views, no copies); mmap'd files keep the file layout, so misaligned tensors come back as
  // aligned copies with the same bytes.
  TempDir dir;
  std::vector<StTensor> tensors = {st_random("q", "U32", {8, 16}, 1), st_random("s", "BF16", {8, 3}, 2),
                                   st_random("f", "F32", {5, 7}, 3)};
  StOptions opt;
  opt.pad_header_to_8 = false;
  std::string bytes = st_build(tensors, opt);
  // Grow the header with spaces until the data region starts at an odd offset.
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  std::string header = bytes.substr(8, n), data = bytes.substr(8 + n);
  while ((8 + header.size()) % 2 == 0) header += ' ';
  write_file(dir / "m.safetensors", st_raw(header, data));
  for (LoadMode mode : {LoadMode::kLazy, LoadMode::kEager}) {
    auto f = SafetensorsFile::open(dir / "m.safetensors", mode);
    for (const auto& t : tensors) {
      Tensor v = f->tensor(t.name);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v.raw()) % dtype_size(v.dtype()), 0u) << t.name;
      EXPECT_EQ(bytes_of(v), t.data) << t.name;
      if (mode == LoadMode::kEager) {
        EXPECT_FALSE(v.is_owned()) << t.name << ": eager views need no copy";
      }
    }
  }
}

TEST(Safetensors, BorrowedViewOutlivesTheFileObject) {
  TempDir dir;
  auto t0 = st_random("w", "F32", {64, 64}, 9);
  write_file(dir / "m.safetensors", st_build({t0}));
  for (LoadMode mode : {LoadMode::kLazy, LoadMode::kEager}) {
    Tensor t;
    {
      auto f = SafetensorsFile::open(dir / "m.safetensors", mode);
      t = f->tensor("w");
    }
    EXPECT_FALSE(t.is_owned());
    EXPECT_EQ(bytes_of(t), t0.data);  // the mapping/buffer is kept alive by the view (ASan checks)
  }
}

// ---- malformed files ---------------------------------------------------------------------------

namespace {
std::string header_for(const std::string& entry_json) { return "{\"x\":" + entry_json + "}"; }

void expect_bad(const std::string& file_bytes, const std::vector<std::string>& must_mention,
                ErrorKind kind = ErrorKind::kFormat) {
  TempDir dir;
  std::string path = dir / "bad.safetensors";
  write_file(path, file_bytes);
  for (LoadMode mode : {LoadMode::kLazy, LoadMode::kEager}) {
    std::string msg = error_of([&] { SafetensorsFile::open(path, mode); }, kind);
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& s : must_mention) EXPECT_NE(msg.find(s), std::string::npos) << "'" << s << "' not in: " << msg;
  }
}
}  // namespace

TEST(SafetensorsBad, TruncatedBeforeHeaderLength) {
  expect_bad("", {"0 bytes", "8-byte"});
  expect_bad(std::string("\x10\x00\x00", 3), {"3 bytes"});
}

TEST(SafetensorsBad, HeaderLengthLargerThanFile) {
  std::string good = st_build({st_random("w", "F32", {4}, 1)});
  expect_bad(good.substr(0, 20), {"header length", "exceeds"});  // truncated inside the header
  expect_bad(st_raw("{}", "", 1000), {"header length 1000"});
}

TEST(SafetensorsBad, HeaderLengthOverTheSaneBound) {
  // A sparse file just over 100 MB whose header length claims all of it: refused by the bound, not
  // by running out of file, and without reading 100 MB.
  TempDir dir;
  std::string path = dir / "huge.safetensors";
  const uint64_t n = 100'000'001;
  write_file(path, st_raw("", "", n));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(8 + n)), 0);
  std::string msg = error_of([&] { SafetensorsFile::open(path, LoadMode::kLazy); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find(path), std::string::npos);
  EXPECT_NE(msg.find("limit"), std::string::npos) << msg;
}

TEST(SafetensorsBad, HeaderNotJsonOrNotAnObject) {
  expect_bad(st_raw("{\"x\": {\"dtype\": ", ""), {"not valid JSON"});
  expect_bad(st_raw("garbage!", ""), {"not valid JSON"});
  expect_bad(st_raw("[1, 2, 3]", ""), {"must be a JSON object", "array"});
  expect_bad(st_raw(header_for("[1]"), ""), {"\"x\"", "must be an object"});
}

TEST(SafetensorsBad, UnknownDtype) {
  expect_bad(st_raw(header_for(R"({"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]})"), "a"),
             {"\"x\"", "unknown dtype \"Q4_K\""});
  expect_bad(st_raw(header_for(R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})"), "abcd"), {"\"x\"", "dtype"});
  expect_bad(st_raw(header_for(R"({"shape":[1],"data_offsets":[0,4]})"), "abcd"), {"\"x\"", "no \"dtype\""});
}

TEST(SafetensorsBad, ShapeNotAListOfNonNegativeInts) {
  expect_bad(st_raw(header_for(R"({"dtype":"U8","shape":3,"data_offsets":[0,3]})"), "abc"), {"\"x\"", "shape"});
  expect_bad(st_raw(header_for(R"({"dtype":"U8","shape":[-3],"data_offsets":[0,3]})"), "abc"),
             {"\"x\"", "negative"});
  expect_bad(st_raw(header_for(R"({"dtype":"U8","shape":[1.5],"data_offsets":[0,3]})"), "abc"),
             {"\"x\"", "shape"});
  expect_bad(st_raw(header_for(R"({"dtype":"U8","shape":["3"],"data_offsets":[0,3]})"), "abc"),
             {"\"x\"", "shape"});
  // numel * dtype size overflows 64 bits
  expect_bad(st_raw(header_for(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]})"),
                    "abcd"),
             {"\"x\"", "too large"});
}

TEST(SafetensorsBad, OffsetsOutOfTheDataRegion) {
  expect_bad(st_raw(header_for(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), "abcd"),
             {"\"x\"", "past the data region of 4 bytes"});
  expect_bad(st_raw(header_for(R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})"), "abcd"),
             {"\"x\"", "end before begin"});
  expect_bad(st_raw(header_for(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})"), "abcd"),
             {"\"x\"", "[begin, end]"});
  expect_bad(st_raw(header_for(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"), "abcd"),
             {"\"x\"", "negative"});
}

TEST(SafetensorsBad, SizeNotMatchingShape) {
  expect_bad(st_raw(header_for(R"({"dtype":"BF16","shape":[3],"data_offsets":[0,8]})"), "abcdefgh"),
             {"\"x\"", "span 8 bytes", "needs 6 bytes"});
}

TEST(SafetensorsBad, OverlappingTensors) {
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_bad(st_raw(h, std::string(12, 'z')), {"overlaps", "\"a\"", "\"b\""});
  // Out-of-order offsets that do not overlap are fine (MLX writes them that way).
  TempDir dir;
  std::string ok = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                   R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write_file(dir / "ok.safetensors", st_raw(ok, "01234567"));
  auto f = SafetensorsFile::open(dir / "ok.safetensors", LoadMode::kLazy);
  EXPECT_EQ(bytes_of(f->tensor("a")), "4567");
  EXPECT_EQ(bytes_of(f->tensor("b")), "0123");
}

TEST(SafetensorsBad, DuplicateNameAndBadMetadata) {
  std::string dup = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                    R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  expect_bad(st_raw(dup, "xy"), {"\"a\"", "twice"});
  expect_bad(st_raw(R"({"__metadata__":{"format":3}})", ""), {"__metadata__", "format"});
}

TEST(SafetensorsBad, MissingFileIsNotFound) {
  TempDir dir;
  std::string msg =
      error_of([&] { SafetensorsFile::open(dir / "absent.safetensors", LoadMode::kLazy); }, ErrorKind::kNotFound);
  EXPECT_NE(msg.find("absent.safetensors"), std::string::npos);
}

// ---- Checkpoint ------------------------------------------------------------------------------------

namespace {
std::string index_json(const std::vector<std::pair<std::string, std::string>>& map) {
  nlohmann::ordered_json j;
  j["metadata"] = {{"total_size", 0}};
  j["weight_map"] = nlohmann::ordered_json::object();
  for (const auto& [t, f] : map) j["weight_map"][t] = f;
  return j.dump(2);
}
}  // namespace

TEST(Checkpoint, ShardedIndexJoinsShards) {
  TempDir dir;
  auto a = st_random("model.a", "BF16", {8, 4}, 1), b = st_random("model.b", "F32", {3}, 2),
       c = st_random("lm_head.weight", "BF16", {2, 4}, 3);
  write_file(dir / "model-00001-of-00002.safetensors", st_build({a, b}));
  write_file(dir / "model-00002-of-00002.safetensors", st_build({c}, StOptions{false, true, {}}));
  write_file(dir / "model.safetensors.index.json",
             index_json({{"model.a", "model-00001-of-00002.safetensors"},
                         {"model.b", "model-00001-of-00002.safetensors"},
                         {"lm_head.weight", "model-00002-of-00002.safetensors"}}));
  // A stray file that the index does not name is not loaded.
  write_file(dir / "stray.safetensors", st_build({st_random("stray", "F32", {1}, 4)}));

  for (LoadMode mode : {LoadMode::kLazy, LoadMode::kEager}) {
    Checkpoint ck = Checkpoint::open(dir.path() + "/", mode);
    EXPECT_EQ(ck.folder(), dir.path());
    EXPECT_EQ(ck.mode(), mode);
    EXPECT_EQ(ck.files().size(), 2u);
    EXPECT_EQ(ck.names(), (std::vector<std::string>{"lm_head.weight", "model.a", "model.b"}));
    EXPECT_EQ(ck.total_bytes(), a.data.size() + b.data.size() + c.data.size());
    EXPECT_EQ(bytes_of(ck.get("model.a")), a.data);
    EXPECT_EQ(bytes_of(ck.get("lm_head.weight")), c.data);
    EXPECT_EQ(ck.info("lm_head.weight").file, dir / "model-00002-of-00002.safetensors");
    EXPECT_FALSE(ck.has("stray"));
    std::string msg = error_of([&] { ck.info("nope"); }, ErrorKind::kNotFound);
    EXPECT_NE(msg.find(dir.path()), std::string::npos);
    EXPECT_NE(msg.find("\"nope\""), std::string::npos);
  }
}

TEST(Checkpoint, MissingShardNamesTheShardAndTensor) {
  TempDir dir;
  write_file(dir / "model-00001-of-00002.safetensors", st_build({st_random("model.a", "F32", {2}, 1)}));
  write_file(dir / "model.safetensors.index.json", index_json({{"model.a", "model-00001-of-00002.safetensors"},
                                                               {"model.b", "model-00002-of-00002.safetensors"}}));
  std::string msg = error_of([&] { Checkpoint::open(dir.path(), LoadMode::kLazy); }, ErrorKind::kNotFound);
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model-00002-of-00002.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"model.b\""), std::string::npos) << msg;
}

TEST(Checkpoint, ShardNotHoldingWhatTheMapSays) {
  TempDir dir;
  write_file(dir / "s1.safetensors", st_build({st_random("model.a", "F32", {2}, 1)}));
  write_file(dir / "model.safetensors.index.json", index_json({{"model.a", "s1.safetensors"},
                                                               {"model.z", "s1.safetensors"}}));
  std::string msg = error_of([&] { Checkpoint::open(dir.path(), LoadMode::kLazy); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("\"model.z\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("s1.safetensors"), std::string::npos) << msg;
}

TEST(Checkpoint, IndexMayNotEscapeTheFolder) {
  TempDir dir;
  write_file(dir / "inner/model.safetensors.index.json", index_json({{"w", "../outside.safetensors"}}));
  write_file(dir / "outside.safetensors", st_build({st_random("w", "F32", {2}, 1)}));
  std::string msg = error_of([&] { Checkpoint::open(dir / "inner", LoadMode::kLazy); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("../outside.safetensors"), std::string::npos) << msg;
  write_file(dir / "inner/model.safetensors.index.json", "{\"weight_map\": [1]}");
  msg = error_of([&] { Checkpoint::open(dir / "inner", LoadMode::kLazy); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("weight_map"), std::string::npos) << msg;
  write_file(dir / "inner/model.safetensors.index.json", "{\"weight_map\": ");
  msg = error_of([&] { Checkpoint::open(dir / "inner", LoadMode::kLazy); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
}

TEST(Checkpoint, BadShardErrorNamesShardFile) {
  TempDir dir;
  write_file(dir / "s1.safetensors", st_raw(header_for(R"({"dtype":"F32","shape":[9],"data_offsets":[0,4]})"),
                                            "abcd"));
  write_file(dir / "model.safetensors.index.json", index_json({{"x", "s1.safetensors"}}));
  std::string msg = error_of([&] { Checkpoint::open(dir.path(), LoadMode::kEager); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find(dir / "s1.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"x\""), std::string::npos) << msg;
}

TEST(Checkpoint, UnindexedFolderGlobsAndSkipsConsolidated) {
  TempDir dir;
  auto a = st_random("a", "F32", {3}, 1), b = st_random("b", "F16", {5}, 2);
  write_file(dir / "model-1.safetensors", st_build({a}));
  write_file(dir / "model-2.safetensors", st_build({b}));
  write_file(dir / "consolidated.safetensors", st_build({a, b}));  // Mistral's duplicate copy
  Checkpoint ck = Checkpoint::open(dir.path(), LoadMode::kLazy);
  EXPECT_EQ(ck.files().size(), 2u);
  EXPECT_EQ(bytes_of(ck.get("b")), b.data);

  // consolidated.safetensors alone is used.
  TempDir solo;
  write_file(solo / "consolidated.safetensors", st_build({a}));
  EXPECT_TRUE(Checkpoint::open(solo.path(), LoadMode::kLazy).has("a"));

  // The same tensor in two files is ambiguous.
  write_file(dir / "model-3.safetensors", st_build({a}));
  std::string msg = error_of([&] { Checkpoint::open(dir.path(), LoadMode::kLazy); }, ErrorKind::kFormat);
  EXPECT_NE(msg.find("\"a\""), std::string::npos);
  EXPECT_NE(msg.find("model-3.safetensors"), std::string::npos);
}

TEST(Checkpoint, FolderWithoutWeights) {
  TempDir dir;
  write_file(dir / "config.json", "{}");
  std::string msg = error_of([&] { Checkpoint::open(dir.path(), LoadMode::kLazy); }, ErrorKind::kNotFound);
  EXPECT_NE(msg.find(dir.path()), std::string::npos);
  error_of([&] { Checkpoint::open(dir / "nope", LoadMode::kLazy); }, ErrorKind::kNotFound);
}
