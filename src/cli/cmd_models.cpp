// `vlmcheck models`: what discovery finds in the Hugging Face cache (check_models.md §2.5) as a
// table or one JSON array; with --model, one model resolved (folder or repo id + --revision) and
// its weights and config validated, so a broken checkpoint is reported before anything runs.
#include <sys/stat.h>

#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/exit_codes.h"
#include "core/error.h"
#include "core/json.h"
#include "io/config.h"
#include "io/discovery.h"
#include "io/hf_cache.h"
#include "io/safetensors.h"
#include "models/registry.h"

namespace vlm::cli {

namespace {

struct ModelsOptions {
  bool json = false;
  std::string cache_dir;
  std::string model;
  std::string revision;
};

std::string human_bytes(int64_t b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1000.0 && u < 4) {
    v /= 1000.0;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, units[u]);
}

Json to_json(const DiscoveredModel& m) {
  Json j = Json::object();
  j["repo_id"] = m.repo_id;
  j["repo_type"] = m.repo_type;
  j["revision"] = m.revision;
  j["snapshot"] = m.snapshot;
  j["model_type"] = m.model_type;
  j["size_bytes"] = m.size_bytes;
  j["dtype"] = m.dtype;
  j["quantization"] = m.quantization;
  j["layout_supported"] = m.layout_supported;
  j["layout_reasons"] = m.layout_reasons;
  j["capability_verdict"] = image_capability_name(m.capability.verdict);
  j["model_purpose"] = m.capability.purpose;
  j["capability_evidence"] = m.capability.evidence;
  j["supported"] = !m.model_type.empty() && is_supported_model_type(m.model_type);
  j["selected"] = m.selected();
  return j;
}

std::string cell(const std::string& s, size_t w) {
  if (s.size() <= w) return s + std::string(w - s.size(), ' ');
  return s.substr(0, w - 1) + "~";
}

int list_models(const ModelsOptions& o) {
  HfCacheLocation loc = hf_cache_location(o.cache_dir);
  struct stat st;
  bool exists = ::stat(loc.path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (!exists && !o.cache_dir.empty())
    throw_error(ErrorKind::kNotFound, "{}: --cache-dir is not a directory", loc.path);
  std::vector<DiscoveredModel> models = exists ? discover_models(loc.path) : std::vector<DiscoveredModel>{};

  if (o.json) {
    Json arr = Json::array();
    for (const auto& m : models) arr.push_back(to_json(m));
    fmt::print("{}\n", arr.dump(2));
  } else {
    fmt::print("Hugging Face cache: {} (from {})\n", loc.path, loc.source);
    if (!exists) fmt::print("  (no such directory: nothing is cached there)\n");
    if (!models.empty()) {
      fmt::print("{} {} {} {} {} {} {} {} {}\n", cell("REPO", 44), cell("REVISION", 10), cell("MODEL_TYPE", 16),
                 cell("SIZE", 10), cell("DTYPE", 9), cell("QUANTIZATION", 22), cell("IMAGE", 7), cell("SUPPORTED", 9),
                 "STATUS");
      for (const auto& m : models) {
        bool supported = !m.model_type.empty() && is_supported_model_type(m.model_type);
        std::string status = m.selected() ? (m.capability.verdict == ImageCapability::kUnknown ? "selected (unknown)"
                                                                                               : "selected")
                                          : "skipped";
        fmt::print("{} {} {} {} {} {} {} {} {}\n", cell(m.repo_id, 44), cell(m.revision.substr(0, 10), 10),
                   cell(m.model_type.empty() ? "-" : m.model_type, 16), cell(human_bytes(m.size_bytes), 10),
                   cell(m.dtype.empty() ? "-" : m.dtype, 9), cell(m.quantization.empty() ? "-" : m.quantization, 22),
                   cell(image_capability_name(m.capability.verdict), 7), cell(supported ? "yes" : "no", 9), status);
      }
      // Why each repo is skipped, and what an "unknown" verdict rests on.
      for (const auto& m : models) {
        if (!m.selected()) {
          fmt::print("\nskipped {}:\n", m.repo_id);
          for (const auto& r : m.skip_reasons()) fmt::print("  - {}\n", r);
        } else if (m.capability.verdict == ImageCapability::kUnknown) {
          fmt::print("\n{}: image capability unknown; evidence:\n", m.repo_id);
          for (const auto& e : m.capability.evidence) fmt::print("  - {}\n", e);
        }
      }
    }
    size_t selected = 0;
    for (const auto& m : models) selected += m.selected();
    fmt::print("\n{} repo(s), {} selected for a run, {} skipped\n", models.size(), selected,
               models.size() - selected);
  }
  if (models.empty())
    fmt::print(stderr, "vlmcheck models: no model repos in {} (download one with `huggingface-cli download <repo>`)\n",
               loc.path);
  return kExitOk;
}

// --model: resolve, then open every shard (validating each header) and parse the configs.
int inspect_model(const ModelsOptions& o) {
  ResolvedModel r = resolve_model(o.model, o.revision, o.cache_dir);
  ModelConfig config = ModelConfig::load(r.snapshot + "/config.json");
  Checkpoint ck = Checkpoint::open(r.snapshot, LoadMode::kLazy);
  CapabilityVerdict cap = classify_image_capability(&config.raw, false);

  Json j = Json::object();
  j["model"] = r.model;
  j["local"] = r.local;
  j["repo_id"] = r.repo_id;
  j["requested_revision"] = r.requested_revision;
  j["revision"] = r.revision;
  j["snapshot"] = r.snapshot;
  j["model_type"] = config.model_type;
  j["architectures"] = config.architectures;
  j["dtype"] = config.torch_dtype.value_or("");
  j["quantization"] = config.quantization.summary();
  j["tensors"] = ck.names().size();
  j["weight_bytes"] = ck.total_bytes();
  Json files = Json::array();
  for (const auto& f : ck.files()) files.push_back(f->path());
  j["files"] = files;
  j["capability_verdict"] = image_capability_name(cap.verdict);
  j["model_purpose"] = cap.purpose;
  j["capability_evidence"] = cap.evidence;
  j["supported"] = !config.model_type.empty() && is_supported_model_type(config.model_type);
  if (o.json) {
    fmt::print("{}\n", j.dump(2));
    return kExitOk;
  }
  for (const auto& [k, v] : j.items()) fmt::print("{:<20} {}\n", k, v.is_string() ? v.get<std::string>() : v.dump());
  return kExitOk;
}

}  // namespace

void register_models(CLI::App& root, Action& action) {
  auto opts = std::make_shared<ModelsOptions>();
  auto* cmd = root.add_subcommand("models", "List the models found in the Hugging Face cache");
  cmd->add_flag("--json", opts->json, "Print one JSON array (or object with --model) instead of a table");
  cmd->add_option("--cache-dir", opts->cache_dir,
                  "Hub cache directory (default: HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, "
                  "~/.cache/huggingface/hub)");
  cmd->add_option("--model", opts->model, "Check one model instead: a local folder or a cached repo id");
  cmd->add_option("--revision", opts->revision, "With --model: branch, tag, commit sha or unique sha prefix");
  cmd->callback([&action, opts] {
    if (!opts->revision.empty() && opts->model.empty())
      throw CLI::ValidationError("--revision", "needs --model");
    action = [opts] { return opts->model.empty() ? list_models(*opts) : inspect_model(*opts); };
  });
}

}  // namespace vlm::cli
