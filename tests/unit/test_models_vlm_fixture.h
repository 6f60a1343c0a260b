// Reading the vision parity fixtures (tests/fixtures/vision/<name>/, written by transformers 5.17 in float32 —
// see docs of tools/make_vision_fixtures.py): reference.json's cases and reference.safetensors' tensors, and the
// reference pixel values turned into our ProcessedImage per image, so the model side is tested independently of
// the image processors. Shared by test_models_vlm.cpp (encode / prompt layout) and test_cli_vlm_parity.cpp
// (logits and greedy tokens through the real KV cache).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "image/processor.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace vlm::vlmtest {

inline std::string vision_fixture(const std::string& name) {
  return test::source_dir() + "/tests/fixtures/vision/" + name;
}

// Every fixture the generator writes: transformers 5 layout and the Hub layout of the same weights.
inline std::vector<std::string> vision_fixture_names() {
  std::vector<std::string> out;
  for (const char* n : {"llava", "idefics3", "gemma3", "paligemma", "qwen2_vl", "qwen2_5_vl"}) {
    out.push_back(n);
    out.push_back(std::string(n) + "_hub");
  }
  return out;
}

struct VlmCase {
  std::string name;
  std::vector<std::string> images;
  std::vector<int32_t> ids;
  std::vector<int64_t> image_tokens;  // per image
  std::vector<int32_t> greedy;
  double min_gap = 0;
  std::vector<std::string> tensors;
  bool has(const std::string& key) const {
    return std::find(tensors.begin(), tensors.end(), name + "." + key) != tensors.end();
  }
};

struct VlmFixture {
  std::string folder;
  Json ref;
  ModelConfig config;
  std::shared_ptr<SafetensorsFile> tensors;
  std::vector<VlmCase> cases;

  Tensor get(const VlmCase& c, const std::string& key) const { return tensors->tensor(c.name + "." + key); }
};

inline VlmFixture load_vision_fixture(const std::string& name) {
  VlmFixture f;
  f.folder = vision_fixture(name);
  f.ref = read_json_file(f.folder + "/reference.json");
  f.config = ModelConfig::load(f.folder + "/config.json");
  f.tensors = SafetensorsFile::open(f.folder + "/reference.safetensors", LoadMode::kEager);
  for (const Json& c : f.ref.at("cases")) {
    VlmCase v;
    v.name = c.at("name").get<std::string>();
    if (c.contains("images") && c.at("images").is_array()) v.images = c.at("images").get<std::vector<std::string>>();
    v.ids = c.at("input_ids").get<std::vector<int32_t>>();
    if (c.contains("image_tokens") && c.at("image_tokens").is_array()) {
      v.image_tokens = c.at("image_tokens").get<std::vector<int64_t>>();
    }
    v.greedy = c.at("greedy_tokens").get<std::vector<int32_t>>();
    if (c.contains("greedy_min_gap") && c.at("greedy_min_gap").is_number()) v.min_gap = c.at("greedy_min_gap").get<double>();
    if (c.contains("tensors")) v.tensors = c.at("tensors").get<std::vector<std::string>>();
    f.cases.push_back(std::move(v));
  }
  return f;
}

// Any integer tensor as int64 values.
inline std::vector<int64_t> int_values(const Tensor& t) {
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::kI64: out[static_cast<size_t>(i)] = t.data<int64_t>()[i]; break;
      case DType::kI32: out[static_cast<size_t>(i)] = t.data<int32_t>()[i]; break;
      case DType::kU8:
      case DType::kBool: out[static_cast<size_t>(i)] = t.data<uint8_t>()[i]; break;
      default: throw Error(ErrorKind::kInternal, "int_values: unexpected dtype " + std::string(dtype_name(t.dtype())));
    }
  }
  return out;
}

// A contiguous f32 copy of rows [begin, end) of `t` reshaped to `shape`.
inline Tensor rows_f32(const Tensor& t, int64_t begin, int64_t end, const Shape& shape) {
  Tensor c = t.slice_rows(begin, end).to_f32();
  return c.reshape(shape);
}

// The reference processor output split per image, in our ProcessedImage layout.
inline std::vector<ProcessedImage> reference_images(const VlmFixture& f, const VlmCase& c) {
  std::vector<ProcessedImage> out;
  const size_t k = c.images.size();
  if (k == 0) return out;
  const std::string& type = f.config.model_type;
  Tensor pv = f.get(c, "pixel_values");
  if (type == "qwen2_vl" || type == "qwen2_5_vl") {
    std::vector<int64_t> thw = int_values(f.get(c, "image_grid_thw"));
    EXPECT_EQ(thw.size(), 3 * k);
    int64_t row = 0;
    for (size_t i = 0; i < k; ++i) {
      ProcessedImage im;
      im.grid_t = thw[3 * i];
      im.grid_h = thw[3 * i + 1];
      im.grid_w = thw[3 * i + 2];
      const int64_t n = im.grid_t * im.grid_h * im.grid_w;
      im.pixels = rows_f32(pv, row, row + n, {n, pv.dim(1)});
      im.image_tokens = c.image_tokens.empty() ? 0 : c.image_tokens[i];
      row += n;
      out.push_back(im);
    }
    EXPECT_EQ(row, pv.dim(0)) << f.folder << " " << c.name << ": patch rows left over";
    return out;
  }
  // Tiles: [N, 3, H, W], or [1, N, 3, H, W] (Idefics3's batch dimension).
  Tensor tiles = pv.ndim() == 5 ? pv[0] : pv;
  Tensor mask;
  if (c.has("pixel_attention_mask")) {
    Tensor m = f.get(c, "pixel_attention_mask");
    mask = m.ndim() == 4 ? m[0] : m;
  }
  const int64_t H = tiles.dim(2), W = tiles.dim(3);
  // Tiles per image: from the token count per image and the tokens one tile expands to.
  int64_t tokens_per_tile = 0;
  const Json& vc = f.config.vision();
  if (type == "idefics3") {
    const int64_t side = vc.at("image_size").get<int64_t>() / vc.at("patch_size").get<int64_t>();
    const int64_t s = f.config.raw.value("scale_factor", 2);
    tokens_per_tile = side * side / (s * s);
  } else if (type == "gemma3") {
    tokens_per_tile = f.config.raw.value("mm_tokens_per_image", 256);
  }
  int64_t tile = 0;
  for (size_t i = 0; i < k; ++i) {
    int64_t n = 1;
    if (tokens_per_tile > 0) {
      EXPECT_FALSE(c.image_tokens.empty());
      n = c.image_tokens[i] / tokens_per_tile;
    }
    ProcessedImage im;
    im.pixels = rows_f32(tiles, tile, tile + n, {n, 3, H, W});
    if (mask.defined()) {
      Tensor mm = Tensor::empty({n, H, W}, DType::kU8);
      std::vector<int64_t> v = int_values(mask.slice_rows(tile, tile + n).clone());
      for (size_t j = 0; j < v.size(); ++j) mm.data<uint8_t>()[j] = v[j] ? 1 : 0;
      im.pixel_mask = mm;
    }
    im.n_tiles = static_cast<int>(n);
    im.image_tokens = c.image_tokens.empty() ? 0 : c.image_tokens[i];
    tile += n;
    out.push_back(im);
  }
  EXPECT_EQ(tile, tiles.dim(0)) << f.folder << " " << c.name << ": tiles left over";
  return out;
}

// max |a - b| / max |b| over n values.
inline double rel_diff(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

}  // namespace vlm::vlmtest
