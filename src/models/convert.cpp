// Conversion of a Hugging Face checkpoint to the mlx-community layout with our MLX-exact quantizer
// (see convert.h for the rules and their sources).
#include "models/convert.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <system_error>

#include <fmt/format.h>

#include "core/error.h"
#include "core/json.h"
#include "core/quantize.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"

namespace vlm {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Files that are weights (never copied) or our own output (written, not copied).
bool is_weight_or_output(const std::string& name) {
  static const char* const kSkipExt[] = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack",
                                         ".ckpt", ".onnx", ".npz"};
  if (name == "config.json" || name == "model.safetensors.index.json") return true;
  for (const char* ext : kSkipExt)
    if (ends_with(name, ext)) return true;
  return false;
}

// The side files a conversion carries: every json (mlx-vlm copies all `*.json`), chat templates and
// tokenizer vocabularies.
bool is_side_file(const std::string& name) {
  if (name.empty() || name[0] == '.' || is_weight_or_output(name)) return false;
  static const char* const kExt[] = {".json", ".jinja", ".txt", ".model", ".tiktoken"};
  for (const char* ext : kExt)
    if (ends_with(name, ext)) return true;
  return starts_with(name, "tokenizer");
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  VLM_CHECK(in.good(), ErrorKind::kIo, "{}: cannot open for reading", p.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  VLM_CHECK(out.good(), ErrorKind::kIo, "{}: cannot open for writing", p.string());
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  VLM_CHECK(out.good(), ErrorKind::kIo, "{}: write failed", p.string());
}

// Python's json.dump(obj, indent=4) spelling with sorted top-level keys (mlx-lm's save_config).
std::string config_text(const Json& config) {
  std::vector<std::string> keys;
  for (auto it = config.begin(); it != config.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  Json sorted = Json::object();
  for (const std::string& k : keys) sorted[k] = config.at(k);
  return sorted.dump(4, ' ', true);
}

// [O, I, kH, kW] (PyTorch) → [O, kH, kW, I] (MLX channels-last), any element size.
Tensor conv_to_channels_last(const Tensor& w) {
  const int64_t O = w.dim(0), I = w.dim(1), H = w.dim(2), W = w.dim(3);
  const size_t es = dtype_size(w.dtype());
  Tensor out = Tensor::empty({O, H, W, I}, w.dtype(), MemCategory::kWeights);
  const auto* src = static_cast<const uint8_t*>(w.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t x = 0; x < W; ++x)
          std::memcpy(dst + ((((o * H + h) * W + x) * I + i) * es), src + ((((o * I + i) * H + h) * W + x) * es), es);
  return out;
}

}  // namespace

std::optional<std::string> mlx_vlm_llava_name(const std::string& name) {
  if (ends_with(name, "position_ids")) return std::nullopt;  // a buffer, not a weight (mlx-vlm drops it)
  auto rest = [&](const std::string& p) { return name.substr(p.size()); };
  // Language model: transformers 5 (model.language_model.*, lm_head.*), 4.x / mlx-vlm (language_model.model.*,
  // language_model.lm_head.*).
  if (starts_with(name, "model.language_model.")) return "language_model.model." + rest("model.language_model.");
  if (starts_with(name, "lm_head.")) return "language_model." + name;
  if (starts_with(name, "language_model.model.") || starts_with(name, "language_model.lm_head."))
    return name;
  // Vision tower: transformers 5 drops CLIP's `vision_model.` level; mlx-vlm keeps it.
  for (const char* p : {"model.vision_tower.", "vision_tower."}) {
    if (!starts_with(name, p)) continue;
    std::string r = rest(p);
    return starts_with(r, "vision_model.") ? "vision_tower." + r : "vision_tower.vision_model." + r;
  }
  for (const char* p : {"model.multi_modal_projector.", "multi_modal_projector."})
    if (starts_with(name, p)) return "multi_modal_projector." + rest(p);
  throw_error(ErrorKind::kFormat,
              "tensor '{}': not a LLaVA language-model, vision-tower or projector weight (expected a "
              "model.language_model./lm_head./language_model./vision_tower./multi_modal_projector. prefix)",
              name);
}

ConvertSummary convert_checkpoint(const std::string& src_folder, const std::string& out_folder,
                                  const ConvertOptions& options) {
  validate_quant_spec(options.quant, "convert");
  if (options.dtype)
    VLM_CHECK(*options.dtype == DType::kF32 || *options.dtype == DType::kF16 || *options.dtype == DType::kBF16,
              ErrorKind::kInvalidArgument, "convert: dtype must be f32, f16 or bf16, got {}",
              dtype_name(*options.dtype));
  std::error_code ec;
  if (fs::exists(out_folder, ec)) {
    VLM_CHECK(fs::is_directory(out_folder, ec) && fs::is_empty(out_folder, ec), ErrorKind::kInvalidArgument,
              "{}: the output folder already exists and is not empty (MLX refuses to overwrite too; remove it or "
              "pick another --out)",
              out_folder);
  }

  const std::string config_path = src_folder + "/config.json";
  Json config = read_json_file(config_path);
  VLM_CHECK(config.is_object(), ErrorKind::kFormat, "{}: expected a JSON object", config_path);
  VLM_CHECK(!config.contains("quantization") && !config.contains("quantization_config"), ErrorKind::kUnsupported,
            "{}: the source is already quantized (config has quantization/quantization_config); convert a "
            "dense checkpoint",
            config_path);
  const std::string model_type = json_string(config, "model_type", config_path).value_or("");
  const bool is_vlm = config.contains("vision_config");
  VLM_CHECK(!is_vlm || model_type == "llava", ErrorKind::kUnsupported,
            "{}: model_type '{}' is a VLM without a known mlx-vlm layout in vlmcheck convert (supported: llava and "
            "text-only models)",
            config_path, model_type);
  const bool tied = json_bool(config, "tie_word_embeddings", config_path).value_or(false);
  int64_t num_channels = 3;
  if (is_vlm) {
    if (auto c = json_int(config.at("vision_config"), "num_channels", config_path + ": vision_config")) num_channels = *c;
  }

  Checkpoint ckpt = Checkpoint::open(src_folder, LoadMode::kLazy);
  ConvertSummary summary;
  summary.layout = is_vlm ? "mlx-vlm llava" : "mlx-lm";
  summary.source_tensor_bytes = ckpt.total_bytes();

  std::map<std::string, Tensor> out;  // sorted by name: the MLX writer's sorted header, and determinism
  auto put = [&](const std::string& name, Tensor t) {
    VLM_CHECK(out.emplace(name, std::move(t)).second, ErrorKind::kFormat,
              "{}: two source tensors map to the output name '{}'", src_folder, name);
  };
  const AffineQuantSpec spec = options.quant;
  for (const std::string& src_name : ckpt.names()) {
    VLM_CHECK(!ends_with(src_name, ".scales") && !ends_with(src_name, ".biases"), ErrorKind::kUnsupported,
              "{}: tensor '{}' looks MLX-quantized already; convert a dense checkpoint", src_folder, src_name);
    std::string name;
    if (is_vlm) {
      std::optional<std::string> mapped = mlx_vlm_llava_name(src_name);
      if (!mapped) continue;
      name = *mapped;
    } else {
      // mlx-lm keeps HF names, drops rotary buffers and the head of a tied model.
      if (ends_with(src_name, "rotary_emb.inv_freq")) continue;
      if (tied && src_name == "lm_head.weight") continue;
      name = src_name;
    }
    Tensor t = ckpt.get(src_name);
    const bool is_float = dtype_is_float(t.dtype());
    const DType target = (is_float && options.dtype) ? *options.dtype : t.dtype();
    const bool language = !is_vlm || starts_with(name, "language_model.");

    if (is_vlm && starts_with(name, "vision_tower.") && ends_with(name, "patch_embedding.weight") && t.ndim() == 4 &&
        t.dim(1) == num_channels && t.dim(2) == t.dim(3)) {
      put(name, conv_to_channels_last(t.to(target, MemCategory::kWeights)));
      continue;
    }
    if (language && is_float && t.ndim() == 2 && ends_with(name, ".weight")) {
      const std::string module = name.substr(0, name.size() - std::string(".weight").size());
      if (t.dim(1) % spec.group_size == 0) {
        Tensor w = t.to(target, MemCategory::kScratch);
        QuantizedMatrix q = quantize_affine(w, spec, target, MemCategory::kWeights);
        put(module + ".weight", q.packed);
        put(module + ".scales", q.scales);
        put(module + ".biases", q.biases);
        summary.quantized.push_back(module);
        continue;
      }
      summary.dense.push_back(module);
    }
    put(name, t.to(target, MemCategory::kWeights));
  }
  std::sort(summary.quantized.begin(), summary.quantized.end());
  std::sort(summary.dense.begin(), summary.dense.end());

  // Config: the source's, plus MLX's two quantization entries (same dict).
  Json quant = Json::object();
  quant["group_size"] = spec.group_size;
  quant["bits"] = spec.bits;
  quant["mode"] = "affine";
  config["quantization"] = quant;
  config["quantization_config"] = quant;

  // Side files, in sorted order (directory iteration order is not stable).
  std::vector<std::string> side;
  for (const auto& entry : fs::directory_iterator(src_folder, ec)) {
    const std::string fname = entry.path().filename().string();
    if (entry.is_regular_file(ec) && is_side_file(fname)) side.push_back(fname);  // follows HF cache symlinks
  }
  VLM_CHECK(!ec, ErrorKind::kIo, "{}: cannot list the folder: {}", src_folder, ec.message());
  std::sort(side.begin(), side.end());

  fs::create_directories(out_folder, ec);
  VLM_CHECK(!ec, ErrorKind::kIo, "{}: cannot create the output folder: {}", out_folder, ec.message());

  SafetensorsWriter writer;
  Json weight_map = Json::object();
  for (const auto& [name, t] : out) {
    writer.add(name, t);
    weight_map[name] = "model.safetensors";
    summary.tensor_bytes += t.nbytes();
  }
  writer.set_metadata("format", "mlx");
  writer.write(out_folder + "/model.safetensors");
  Json index = Json::object();
  index["metadata"] = Json::object({{"total_size", summary.tensor_bytes}});
  index["weight_map"] = weight_map;
  write_bytes(fs::path(out_folder) / "model.safetensors.index.json", index.dump(4, ' ', true) + "\n");
  write_bytes(fs::path(out_folder) / "config.json", config_text(config) + "\n");
  for (const std::string& f : side) {
    write_bytes(fs::path(out_folder) / f, read_bytes(fs::path(src_folder) / f));
    summary.copied.push_back(f);
  }
  return summary;
}

}  // namespace vlm
