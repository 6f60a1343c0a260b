// `vlmcheck convert`: writes an mlx-community-style quantized copy of a Hugging Face checkpoint (a local
// folder or a cached repo id) with vlmcheck's own MLX-exact affine quantizer. Flags only; the conversion
// itself is models/convert.h.
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/exit_codes.h"
#include "core/dtype.h"
#include "io/hf_cache.h"
#include "models/convert.h"

namespace vlm::cli {

namespace {

struct ConvertFlags {
  std::string model;
  std::string revision;
  std::string cache_dir;
  std::string out;
  int bits = 4;
  int group_size = 64;
  std::string dtype;  // "" = keep the stored dtypes
};

int run_convert(const ConvertFlags& f) {
  ResolvedModel r = resolve_model(f.model, f.revision, f.cache_dir);
  ConvertOptions o;
  o.quant = AffineQuantSpec{f.bits, f.group_size};
  if (f.dtype == "bf16") o.dtype = DType::kBF16;
  if (f.dtype == "f16") o.dtype = DType::kF16;
  if (f.dtype == "f32") o.dtype = DType::kF32;
  ConvertSummary s = convert_checkpoint(r.snapshot, f.out, o);
  fmt::print("{}: {} ({} bits, group size {}): {} modules quantized, {} left dense; {:.2f} MB -> {:.2f} MB; "
             "{} files copied\n",
             f.out, s.layout, f.bits, f.group_size, s.quantized.size(), s.dense.size(),
             static_cast<double>(s.source_tensor_bytes) / 1e6, static_cast<double>(s.tensor_bytes) / 1e6,
             s.copied.size());
  for (const std::string& d : s.dense)
    fmt::print("  dense (input dim not a multiple of {}): {}\n", f.group_size, d);
  return kExitOk;
}

}  // namespace

void register_convert(CLI::App& root, Action& action) {
  auto f = std::make_shared<ConvertFlags>();
  auto* cmd = root.add_subcommand("convert", "Write an MLX-quantized (mlx-community layout) copy of a model");
  cmd->add_option("--model", f->model, "A local model folder or a repo id in the Hugging Face cache")->required();
  cmd->add_option("--revision", f->revision, "Branch, tag, commit sha or unique sha prefix (cached repos)");
  cmd->add_option("--cache-dir", f->cache_dir, "Hub cache directory (default: HF_HUB_CACHE, HF_HOME/hub, ...)");
  cmd->add_option("--out", f->out, "The output folder (must not exist, or be empty)")->required();
  cmd->add_option("--bits", f->bits, "Bits per weight: 2, 3, 4, 5, 6 or 8")
      ->check(CLI::IsMember({2, 3, 4, 5, 6, 8}))
      ->capture_default_str();
  cmd->add_option("--group-size", f->group_size, "Weights per scale/bias group: 32, 64 or 128")
      ->check(CLI::IsMember({32, 64, 128}))
      ->capture_default_str();
  cmd->add_option("--dtype", f->dtype, "Cast weights (and scales/biases) to bf16, f16 or f32 (default: as stored)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->callback([&action, f] { action = [f] { return run_convert(*f); }; });
}

}  // namespace vlm::cli
