// The image processors against transformers 5.17 on photo-sized inputs (tests/fixtures/vision/processors/,
// written by tools/make_processor_fixtures.py with torch 2.11 / torchvision 0.26): a 1600x1200 JPEG with EXIF
// Orientation 8 and a 1203x677 PNG, through Qwen2-VL (torchvision and PIL), CLIP and SigLIP (torchvision),
// Gemma 3 with pan-and-scan, Idefics3 (PIL and torchvision) and SmolVLM. The tiny images of the model fixtures
// only exercise small resize ratios; these exercise large downscales (antialias support scaled by 5-20x,
// ATen's per-axis int16 weight precision) and odd sizes.
//
// For each <config>.json the test builds our processor through make_image_processor (config.json carries only
// the model_type the image processor class belongs to), decodes the fixture images with our decoder (EXIF
// orientation applied, as transformers' load_image), and compares with <config>.safetensors:
//   - pixel_values: bit-exact for the PIL backend; within 1e-3 absolute (the bound) for torchvision,
//     with the max |diff| and the count of differing values printed per image;
//   - image_grid_thw (Qwen2-VL), pixel_attention_mask (Idefics3/SmolVLM), num_crops (Gemma 3);
//   - the backend our processor picks is the one the fixture records (transformers' default for the class
//     unless the fixture forced use_fast, which maps to ProcessorOptions.backend).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json.h"
#include "image/image.h"
#include "image/processor.h"
#include "support/test_support.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

std::string photos_dir() { return test::source_dir() + "/tests/fixtures/vision/processors"; }

// A reference tensor widened to double (f32, i64 and u8 are exact in double).
struct RefTensor {
  std::vector<int64_t> shape;
  std::vector<double> values;
};

// safetensors: 8-byte little-endian header length, JSON header, then the data block.
class Safetensors {
 public:
  explicit Safetensors(const std::string& path) : path_(path) {
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
    const std::string dtype = (*e)["dtype"].get<std::string>();
    t.shape = (*e)["shape"].get<std::vector<int64_t>>();
    const size_t b = (*e)["data_offsets"][0].get<size_t>(), end = (*e)["data_offsets"][1].get<size_t>();
    if (end > data_.size() || b > end) throw Error(ErrorKind::kFormat, path_ + ": " + name + " is out of range");
    const char* p = data_.data() + b;
    auto read = [&](auto tag, size_t width) {
      for (size_t i = 0; i < (end - b) / width; ++i) {
        decltype(tag) v;
        std::memcpy(&v, p + width * i, width);
        t.values.push_back(static_cast<double>(v));
      }
    };
    if (dtype == "F32")
      read(float{}, 4);
    else if (dtype == "I64")
      read(int64_t{}, 8);
    else if (dtype == "U8" || dtype == "BOOL")
      read(uint8_t{}, 1);
    else
      throw Error(ErrorKind::kUnsupported, path_ + ": " + name + " has dtype " + dtype);
    return t;
  }

 private:
  std::string path_;
  Json header_;
  std::vector<char> data_;
};

std::vector<std::string> config_names() {
  std::vector<std::string> out;
  if (!fs::exists(photos_dir())) return out;
  for (const auto& e : fs::directory_iterator(photos_dir()))
    if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  std::sort(out.begin(), out.end());
  return out;
}

// The config.json model_type whose processor uses this image processor class.
Json model_config_for(const std::string& image_processor_type) {
  Json c = Json::object();
  if (image_processor_type.rfind("Qwen2VL", 0) == 0) {
    c["model_type"] = "qwen2_vl";
  } else if (image_processor_type.rfind("CLIP", 0) == 0 || image_processor_type.rfind("Siglip", 0) == 0) {
    c["model_type"] = "llava";
    c["vision_config"] = {{"patch_size", 14}};
  } else if (image_processor_type.rfind("Gemma3", 0) == 0) {
    c["model_type"] = "gemma3";
  } else if (image_processor_type.rfind("Idefics3", 0) == 0) {
    c["model_type"] = "idefics3";
  } else if (image_processor_type.rfind("SmolVLM", 0) == 0) {
    c["model_type"] = "smolvlm";
  } else {
    throw Error(ErrorKind::kUnsupported, "no model_type known for image processor " + image_processor_type);
  }
  return c;
}

TEST(ImageProcessorPhotos, AllConfigurationsArePresent) {
  const std::vector<std::string> names = config_names();
  for (const char* n : {"qwen2_vl_default", "qwen2_vl_pil", "clip_default", "siglip_default", "gemma3_pan_and_scan",
                        "idefics3_default", "idefics3_torchvision", "smolvlm_default"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

struct PixelDiff {
  double max = 0;
  size_t worst = 0, differing = 0;
};
// ours: any-shaped f32 tensor with as many elements as the reference, compared flat.
PixelDiff compare(const Tensor& ours, const RefTensor& want) {
  PixelDiff r;
  const float* got = ours.data<float>();
  for (size_t i = 0; i < want.values.size(); ++i) {
    const double dd = std::abs(static_cast<double>(got[i]) - want.values[i]);
    r.differing += dd != 0;
    if (dd > r.max) r.max = dd, r.worst = i;
  }
  return r;
}

class PhotoConfig : public ::testing::TestWithParam<std::string> {};

TEST_P(PhotoConfig, MatchesTransformers) {
  const std::string name = GetParam();
  const Json meta = read_json_file(photos_dir() + "/" + name + ".json");
  const Safetensors ref(photos_dir() + "/" + name + ".safetensors");
  const Json& ipc = meta["preprocessor_config"];
  const std::string want_backend = meta["backend"].get<std::string>();

  ProcessorOptions options;
  if (!meta["use_fast"].is_null())  // the fixture forced a backend; otherwise ours must pick the default
    options.backend = meta["use_fast"].get<bool>() ? PixelBackend::kTorchvision : PixelBackend::kPil;
  const Json& kw = meta["call_kwargs"];
  if (const Json* pas = json_find(kw, "do_pan_and_scan")) options.pan_and_scan = pas->get<bool>();
  const Json model_config = model_config_for(ipc["image_processor_type"].get<std::string>());
  auto proc = make_image_processor(model_config, ipc, Json::object(), options, name);
  // The same configuration on the other backend: its pixels must NOT match the reference, which shows these
  // inputs tell the two resizers (and the two normalisation arithmetics) apart.
  ProcessorOptions other_options = options;
  other_options.backend = want_backend == "pil" ? PixelBackend::kTorchvision : PixelBackend::kPil;
  auto other = make_image_processor(model_config, ipc, Json::object(), other_options, name);
  const double tol = want_backend == "pil" ? 0.0 : 1e-3;

  for (const Json& f : meta["images"]) {
    const std::string file = f.get<std::string>();
    const std::string stem = fs::path(file).stem().string();
    SCOPED_TRACE(name + " / " + file);
    const DecodedImage d = decode_image_file(photos_dir() + "/images/" + file);
    const ProcessedImage im = proc->process(d.image);
    EXPECT_EQ(pixel_backend_name(im.backend), want_backend);

    // Pixels: ours flattened against the reference (Idefics3's leading batch dimension of 1 is the only
    // shape difference, so the element counts and the trailing dimension must agree).
    const RefTensor want = ref.get(stem + ".pixel_values");
    ASSERT_EQ(static_cast<size_t>(im.pixels.numel()), want.values.size())
        << "reference " << shape_str(want.shape) << ", ours " << shape_str(im.pixels.shape());
    ASSERT_EQ(want.shape.back(), im.pixels.shape().back());
    const PixelDiff diff = compare(im.pixels, want);
    const ProcessedImage alt = other->process(d.image);
    ASSERT_EQ(alt.pixels.numel(), im.pixels.numel());
    const PixelDiff alt_diff = compare(alt.pixels, want);
    std::printf("[ photos ] %-21s %-16s %-11s %7zu values  max |diff| %-8.3g differing %-6zu%s  (%s backend: "
                "max |diff| %.3g, differing %zu)\n",
                name.c_str(), file.c_str(), want_backend.c_str(), want.values.size(), diff.max, diff.differing,
                diff.max == 0 ? " bit-exact" : "", pixel_backend_name(alt.backend), alt_diff.max, alt_diff.differing);
    EXPECT_LE(diff.max, tol) << "at flat index " << diff.worst << ": ours " << im.pixels.data<float>()[diff.worst]
                             << ", transformers " << want.values[diff.worst];
    EXPECT_GT(alt_diff.differing, 0u) << "the other backend reproduces the reference too: the input does not "
                                         "discriminate";

    if (ref.has(stem + ".image_grid_thw")) {
      const RefTensor g = ref.get(stem + ".image_grid_thw");
      ASSERT_EQ(g.values.size(), 3u);
      EXPECT_EQ(im.grid_t, g.values[0]);
      EXPECT_EQ(im.grid_h, g.values[1]);
      EXPECT_EQ(im.grid_w, g.values[2]);
    } else {
      EXPECT_EQ(im.grid_t, 0);
    }
    if (ref.has(stem + ".pixel_attention_mask")) {
      const RefTensor m = ref.get(stem + ".pixel_attention_mask");
      const int64_t n = im.pixels.dim(0) * im.pixels.dim(2) * im.pixels.dim(3);
      ASSERT_EQ(static_cast<size_t>(n), m.values.size());
      size_t mismatched = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double mine = im.pixel_mask.defined() ? im.pixel_mask.data<uint8_t>()[i] : 1.0;
        mismatched += mine != m.values[static_cast<size_t>(i)];
      }
      EXPECT_EQ(mismatched, 0u) << "pixel_attention_mask";
      // The tile count the prompt describes: rows x cols tiles plus the global image.
      EXPECT_EQ(im.n_tiles, im.rows * im.cols + 1);
    }
    if (ref.has(stem + ".num_crops")) {
      const RefTensor c = ref.get(stem + ".num_crops");
      ASSERT_EQ(c.values.size(), 1u);
      EXPECT_EQ(im.n_tiles - 1, c.values[0]) << "pan-and-scan crops";
    }
    EXPECT_EQ(im.n_tiles, im.pixels.ndim() == 4 ? im.pixels.dim(0) : 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Processors, PhotoConfig, ::testing::ValuesIn(config_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace vlm
