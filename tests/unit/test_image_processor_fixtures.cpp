// The image processors against transformers 5.17 itself: every vision parity fixture
// (tests/fixtures/vision/<name>/, written by tools/make_vision_fixtures.py on the GPU machine) holds the
// processor's own pixel_values / image_grid_thw / pixel_attention_mask for each case and the input_ids after
// placeholder expansion. Here the checkpoint folder's configs build our processor, the fixture images are
// decoded by our decoder (EXIF orientation included), and:
//   - pixels equal the reference within 1e-3 absolute for the torchvision backend, bit-exact for PIL;
//   - the backend we pick is the one reference.json says produced the pixels;
//   - our expanded prompt, encoded by Hugging Face `tokenizers` (the npm binding of the library transformers
//     uses) with the fixture's tokenizer.json, gives exactly the reference input_ids;
//   - where this executable is also linked to vlm_text (tests/CMakeLists.txt defines VLM_TEST_LINKS_TEXT for
//     it then), our own vlm::Tokenizer encodes the expanded prompt to the same ids, end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "image/image.h"
#include "image/processor.h"
#include "support/test_support.h"
#include "test_text_tokenizer_oracle.h"
#if defined(VLM_TEST_LINKS_TEXT)
#include "text/tokenizer.h"
#endif

namespace vlm {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::string vision_dir() { return test::source_dir() + "/tests/fixtures/vision"; }

// reference.safetensors: 8-byte little-endian header length, JSON header, data. Only what the test needs.
struct RefTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<double> values;  // every dtype widened (f32, i64 and bool are exact in double)
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path) : path_(path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(ErrorKind::kNotFound, path + ": cannot open");
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    f.read(header.data(), static_cast<std::streamsize>(n));
    header_ = parse_json(header, path);
    data_.assign(std::istreambuf_iterator<char>(f), {});
  }
  bool has(const std::string& name) const { return json_find(header_, name) != nullptr; }
  RefTensor get(const std::string& name) const {
    const Json* e = json_find(header_, name);
    if (!e) throw Error(ErrorKind::kNotFound, path_ + ": no tensor " + name);
    RefTensor t;
    t.dtype = (*e)["dtype"].get<std::string>();
    t.shape = (*e)["shape"].get<std::vector<int64_t>>();
    const size_t b = (*e)["data_offsets"][0].get<size_t>(), end = (*e)["data_offsets"][1].get<size_t>();
    const char* p = data_.data() + b;
    if (t.dtype == "F32") {
      for (size_t i = 0; i < (end - b) / 4; ++i) {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        t.values.push_back(v);
      }
    } else if (t.dtype == "I64") {
      for (size_t i = 0; i < (end - b) / 8; ++i) {
        int64_t v;
        std::memcpy(&v, p + 8 * i, 8);
        t.values.push_back(static_cast<double>(v));
      }
    } else if (t.dtype == "BOOL" || t.dtype == "U8") {
      for (size_t i = 0; i < end - b; ++i) t.values.push_back(static_cast<uint8_t>(p[i]));
    } else {
      throw Error(ErrorKind::kUnsupported, path_ + ": dtype " + t.dtype);
    }
    return t;
  }

 private:
  std::string path_;
  Json header_;
  std::vector<char> data_;
};

// The processor configs as transformers resolves them: processor_config.json's nested image_processor
// (transformers 5 layout), else preprocessor_config.json (Hub layout), processor-level fields beside.
struct FolderConfigs {
  Json config, image_processor = Json::object(), processor = Json::object(), tokenizer_config = Json::object();
};
FolderConfigs load_configs(const std::string& dir) {
  FolderConfigs c;
  c.config = read_json_file(dir + "/config.json");
  if (fs::exists(dir + "/processor_config.json")) {
    Json p = read_json_file(dir + "/processor_config.json");
    for (const auto& [k, v] : p.items())
      if (k == "image_processor")
        c.image_processor = v;
      else if (k != "video_processor")
        c.processor[k] = v;
  }
  if (c.image_processor.empty() && fs::exists(dir + "/preprocessor_config.json"))
    c.image_processor = read_json_file(dir + "/preprocessor_config.json");
  if (fs::exists(dir + "/tokenizer_config.json")) c.tokenizer_config = read_json_file(dir + "/tokenizer_config.json");
  return c;
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> out;
  if (!fs::exists(vision_dir())) return out;
  for (const auto& e : fs::directory_iterator(vision_dir()))
    if (e.is_directory() && fs::exists(e.path() / "reference.json")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ImageProcessorFixtures, FixturesArePresent) {
  // The generator writes all five families in both layouts; a missing one is a test failure, not a skip.
  const std::vector<std::string> names = fixture_names();
  for (const char* n : {"qwen2_vl", "qwen2_5_vl", "llava", "idefics3", "gemma3", "paligemma"})
    for (const std::string suffix : {"", "_hub"})
      EXPECT_NE(std::find(names.begin(), names.end(), n + suffix), names.end()) << n << suffix;
}

class FixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTest, PixelsAndInputIdsMatchTransformers) {
  const std::string name = GetParam();
  const std::string dir = vision_dir() + "/" + name;
  const Json ref = read_json_file(dir + "/reference.json");
  const SafetensorsFile tensors(dir + "/reference.safetensors");
  const FolderConfigs cfg = load_configs(dir);
  auto proc = make_image_processor(cfg.config, cfg.image_processor, cfg.processor, {}, name, cfg.tokenizer_config);
  const std::string want_backend = ref["image_backend"].get<std::string>();
  const double tol = want_backend == "pil" ? 0.0 : 1e-3;

  std::vector<std::string> texts;
  std::vector<std::vector<int64_t>> want_ids;
  for (const Json& c : ref["cases"]) {
    const std::string cname = c["name"].get<std::string>();
    SCOPED_TRACE(name + " case " + cname);
    std::vector<ProcessedImage> images;
    for (const Json& f : c["images"]) {
      DecodedImage d = decode_image_file(vision_dir() + "/images/" + f.get<std::string>());
      images.push_back(proc->process(d.image));
      EXPECT_EQ(pixel_backend_name(images.back().backend), want_backend);
    }
    texts.push_back(proc->expand_prompt(c["prompt_text"].get<std::string>(), images));
    want_ids.push_back(c["input_ids"].get<std::vector<int64_t>>());
    if (images.empty()) continue;
    // The feature rows the vision model will produce fill exactly the image tokens of the expanded prompt,
    // and a lone image's count is the generator's image_tokens.
    int64_t total_tokens = 0;
    for (const ProcessedImage& im : images) total_tokens += im.image_tokens;
    size_t in_text = 0;
    const std::string tok = proc->image_token();
    for (size_t p = texts.back().find(tok); p != std::string::npos; p = texts.back().find(tok, p + tok.size())) ++in_text;
    EXPECT_EQ(static_cast<int64_t>(in_text), total_tokens);
    if (images.size() == 1) {
      EXPECT_EQ(images[0].image_tokens, c["image_tokens"][0].get<int64_t>());
    }

    // Pixels: our per-image tensors concatenated along the first dimension, as the processor batches them
    // (Qwen rows of patches; tiles for the others; Idefics3 adds a leading batch dimension of 1).
    const RefTensor want = tensors.get(cname + ".pixel_values");
    std::vector<float> got;
    for (const ProcessedImage& im : images)
      got.insert(got.end(), im.pixels.data<float>(), im.pixels.data<float>() + im.pixels.numel());
    ASSERT_EQ(got.size(), want.values.size()) << "reference shape " << shape_str(want.shape) << ", ours "
                                              << shape_str(images[0].pixels.shape()) << " per image";
    EXPECT_EQ(want.shape.back(), images[0].pixels.shape().back());
    double max_diff = 0;
    size_t worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double d = std::abs(static_cast<double>(got[i]) - want.values[i]);
      if (d > max_diff) max_diff = d, worst = i;
    }
    std::printf("[ fixture ] %-14s %-10s backend %-11s pixels %zu  max |diff| %.3g%s\n", name.c_str(), cname.c_str(),
                want_backend.c_str(), got.size(), max_diff, max_diff == 0 ? " (bit-exact)" : "");
    EXPECT_LE(max_diff, tol) << "at flat index " << worst << ": ours " << got[worst] << ", transformers "
                             << want.values[worst];

    if (tensors.has(cname + ".image_grid_thw")) {
      const RefTensor g = tensors.get(cname + ".image_grid_thw");
      ASSERT_EQ(g.values.size(), images.size() * 3);
      for (size_t i = 0; i < images.size(); ++i) {
        EXPECT_EQ(images[i].grid_t, g.values[i * 3]);
        EXPECT_EQ(images[i].grid_h, g.values[i * 3 + 1]);
        EXPECT_EQ(images[i].grid_w, g.values[i * 3 + 2]);
      }
    }
    if (tensors.has(cname + ".pixel_attention_mask")) {
      const RefTensor m = tensors.get(cname + ".pixel_attention_mask");
      size_t k = 0;
      for (const ProcessedImage& im : images) {
        const int64_t n = im.pixels.dim(0) * im.pixels.dim(2) * im.pixels.dim(3);
        for (int64_t i = 0; i < n; ++i, ++k) {
          const double mine = im.pixel_mask.defined() ? im.pixel_mask.data<uint8_t>()[i] : 1.0;
          ASSERT_EQ(mine, m.values[k]) << "pixel_attention_mask at " << k;
        }
      }
    }
  }

  // Input ids: the expanded prompt through HF tokenizers with the fixture's tokenizer.json.
  TempDir tmp;
  const Json res = test::run_oracle(dir + "/tokenizer.json", texts, {}, tmp);
  ASSERT_TRUE(res.is_object());
  const char* key = proc->encode_with_special_tokens() ? "ids_special" : "ids";
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto got = res[key][i].get<std::vector<int64_t>>();
    EXPECT_EQ(got, want_ids[i]) << name << " case " << ref["cases"][i]["name"] << ": expanded prompt\n"
                                << texts[i].substr(0, 400);
  }
#if defined(VLM_TEST_LINKS_TEXT)
  const auto tokenizer = Tokenizer::from_folder(dir);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int32_t> ours = tokenizer->encode(texts[i], proc->encode_with_special_tokens());
    EXPECT_EQ(std::vector<int64_t>(ours.begin(), ours.end()), want_ids[i])
        << name << " case " << ref["cases"][i]["name"] << " through vlm::Tokenizer";
  }
  std::printf("[ fixture ] %-14s input_ids identical through HF tokenizers and vlm::Tokenizer (%zu cases)\n",
              name.c_str(), texts.size());
#endif
}

INSTANTIATE_TEST_SUITE_P(Vision, FixtureTest, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace vlm
