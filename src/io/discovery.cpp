// Discovery: the layout filter and the image-capability classification of check_models.md §2.5,
// plus the facts `vlmcheck models` shows (size on disk, dtype, quantization). Reads only what it
// must: refs, the main snapshot's file names, two bounded JSON files and safetensors headers.
#include "io/discovery.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/config.h"
#include "io/hf_cache.h"
#include "io/safetensors.h"

namespace vlm {

namespace {

constexpr size_t kMaxJsonBytes = size_t{16} << 20;

// Config keys whose meaningful presence says "this model takes images" (check_models.md §2.5).
constexpr std::array<const char*, 10> kImageKeys = {
    "vision_config",        "image_token_id",         "image_token_index",     "image_start_token_id",
    "image_end_token_id",   "vision_start_token_id",  "vision_end_token_id",   "mm_vision_select_layer",
    "image_grid_pinpoints", "vision_soft_tokens_per_image"};
// Audio inputs (the reference names "audio keys" without listing them; these are the fields the
// audio-capable families in transformers use).
constexpr std::array<const char*, 5> kAudioKeys = {"audio_config", "audio_token_id", "audio_token_index",
                                                   "audio_start_token_id", "audio_end_token_id"};
constexpr std::array<const char*, 6> kGenerativeMarkers = {"ForConditionalGeneration", "ForCausalLM",
                                                           "ForBlockDiffusion",        "ChatModel",
                                                           "ForVision2Seq",            "ForImageTextToText"};
constexpr std::array<const char*, 15> kNonGenerativeImageMarkers = {
    "ForImageClassification",  "ForObjectDetection",          "ForSemanticSegmentation",
    "ForInstanceSegmentation", "ForUniversalSegmentation",    "ForZeroShotImageClassification",
    "ForZeroShotObjectDetection", "ForImageSegmentation",     "ForMaskedImageModeling",
    "ForDepthEstimation",      "ForImageEmbedding",           "CLIPModel",
    "SiglipModel",             "Siglip2Model",                "CLIPVisionModel"};
constexpr std::array<const char*, 3> kGenerationPipelineKeys = {"unet_config", "vae_config", "transformer_config"};

// "Meaningful" as in Python truthiness: not null, false, 0, "" or an empty list/object.
bool meaningful(const Json* v) {
  if (!v || v->is_null()) return false;
  if (v->is_boolean()) return v->get<bool>();
  if (v->is_number()) return v->get<double>() != 0.0;
  if (v->is_string() || v->is_array() || v->is_object()) return !v->empty();
  return true;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool regular_inside(const std::string& repo_path, const std::string& p) {
  try {
    std::string real = hf_resolve_inside(repo_path, p);
    struct stat st;
    return ::stat(real.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

const char* image_capability_name(ImageCapability c) {
  switch (c) {
    case ImageCapability::kYes: return "yes";
    case ImageCapability::kNo: return "no";
    case ImageCapability::kUnknown: return "unknown";
  }
  return "unknown";
}

CapabilityVerdict classify_image_capability(const Json* config, bool has_model_index,
                                            const std::string& config_problem) {
  CapabilityVerdict v;
  auto verdict = [&](ImageCapability c, const char* purpose) {
    v.verdict = c;
    v.purpose = purpose;
    return v;
  };
  if (has_model_index) {
    v.evidence.push_back("model_index.json present (diffusers pipeline)");
    return verdict(ImageCapability::kNo, "image_generation");
  }
  if (!config || !config->is_object()) {
    v.evidence.push_back("no readable config.json" + (config_problem.empty() ? "" : ": " + config_problem));
    return verdict(ImageCapability::kUnknown, "unknown");
  }
  const Json& c = *config;

  // Negative signals, in the reference's order.
  if (const Json* s = json_find(c, "speculators_model_type"); meaningful(s)) {
    v.evidence.push_back("speculators_model_type = " + s->dump());
    return verdict(ImageCapability::kNo, "speculative_drafter");
  }
  if (const Json* m = json_find(c, "mlx_embeddings"); m && m->is_object()) {
    const Json* kind = json_find(*m, "kind");
    if (kind && kind->is_string() && kind->get<std::string>() == "embedding") {
      v.evidence.push_back("mlx_embeddings.kind = \"embedding\"");
      return verdict(ImageCapability::kNo, "embedding");
    }
  }
  std::vector<std::string> archs;
  if (const Json* a = json_find(c, "architectures"); a && a->is_array())
    for (const auto& x : *a)
      if (x.is_string()) archs.push_back(x.get<std::string>());
  std::string model_type;
  if (const Json* mt = json_find(c, "model_type"); mt && mt->is_string()) model_type = lower(mt->get<std::string>());
  if (model_type == "bert" || model_type == "modernbert" || model_type == "xlm_roberta" ||
      model_type == "xlm-roberta") {
    v.evidence.push_back("model_type = \"" + model_type + "\" (encoder used for reranking)");
    return verdict(ImageCapability::kNo, "reranker");
  }
  for (const auto& a : archs)
    if (a.find("ForSequenceClassification") != std::string::npos) {
      v.evidence.push_back("architecture " + a + " (sequence classification)");
      return verdict(ImageCapability::kNo, "reranker");
    }

  std::vector<std::string> image_keys, audio_keys, pipeline_keys;
  for (const char* k : kImageKeys)
    if (meaningful(json_find(c, k))) image_keys.push_back(k);
  for (const char* k : kAudioKeys)
    if (meaningful(json_find(c, k))) audio_keys.push_back(k);
  for (const char* k : kGenerationPipelineKeys)
    if (meaningful(json_find(c, k))) pipeline_keys.push_back(k);
  if (!pipeline_keys.empty() && image_keys.empty()) {
    v.evidence.push_back(join(pipeline_keys) + " present, no image keys (image/video generation pipeline)");
    return verdict(ImageCapability::kNo, "image_generation");
  }

  std::vector<std::string> generative, non_generative;
  for (const auto& a : archs) {
    if (std::any_of(kGenerativeMarkers.begin(), kGenerativeMarkers.end(),
                    [&](const char* m) { return a.find(m) != std::string::npos; }))
      generative.push_back(a);
    if (std::any_of(kNonGenerativeImageMarkers.begin(), kNonGenerativeImageMarkers.end(),
                    [&](const char* m) { return a.find(m) != std::string::npos; }))
      non_generative.push_back(a);
  }
  if (!image_keys.empty()) v.evidence.push_back("image keys: " + join(image_keys));
  if (!audio_keys.empty()) v.evidence.push_back("audio keys: " + join(audio_keys));
  if (!generative.empty()) v.evidence.push_back("generative architecture: " + join(generative));
  if (!non_generative.empty()) v.evidence.push_back("non-generative image architecture: " + join(non_generative));
  if (archs.empty()) v.evidence.push_back("no architectures listed");
  else if (generative.empty() && non_generative.empty())
    v.evidence.push_back("architectures without a known marker: " + join(archs));

  if (!non_generative.empty() && generative.empty()) {
    v.evidence.push_back("image-consuming but non-text-generating");
    return verdict(ImageCapability::kNo, "image_non_generative");
  }
  if (!image_keys.empty() && !generative.empty()) return verdict(ImageCapability::kYes, "image_to_text");
  if (!image_keys.empty()) return verdict(ImageCapability::kUnknown, "unknown");
  if (!audio_keys.empty() && !generative.empty()) return verdict(ImageCapability::kNo, "audio_to_text");
  bool dflash = meaningful(json_find(c, "dflash_config"));
  if (!generative.empty() && !dflash) {
    v.evidence.push_back("no vision/audio/dflash config");
    return verdict(ImageCapability::kNo, "text_generation");
  }
  if (dflash) v.evidence.push_back("dflash_config present");
  return verdict(ImageCapability::kUnknown, "unknown");
}

std::optional<Json> read_bounded_json(const std::string& repo_path, const std::string& file, std::string* problem) {
  auto fail = [&](std::string why) -> std::optional<Json> {
    if (problem) *problem = std::move(why);
    return std::nullopt;
  };
  struct stat st;
  if (::lstat(file.c_str(), &st) != 0) return fail("absent");
  std::string real;
  try {
    real = hf_resolve_inside(repo_path, file);
  } catch (const Error& e) {
    return fail(e.what());
  }
  if (::stat(real.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return fail(file + ": not a regular file");
  if (static_cast<size_t>(st.st_size) > kMaxJsonBytes)
    return fail(fmt::format("{}: {} bytes, over the {}-byte limit", file, st.st_size, kMaxJsonBytes));
  try {
    return read_json_file(real, kMaxJsonBytes);
  } catch (const Error& e) {
    return fail(e.what());
  }
}

std::vector<std::string> DiscoveredModel::skip_reasons() const {
  std::vector<std::string> out;
  if (!layout_supported) out = layout_reasons;
  if (capability.verdict == ImageCapability::kNo)
    out.push_back("image capability: no (" + capability.purpose + "): " + join(capability.evidence));
  return out;
}

namespace {

// Files of a snapshot (recursively), with symlinks resolved inside the repo; escaping links are
// reported instead of followed.
struct SnapshotFiles {
  std::vector<std::string> rel_paths;  // "config.json", "sub/x.safetensors"
  std::set<std::string> basenames;
  int64_t size_bytes = 0;
  std::vector<std::string> refused;  // "<rel> -> <target>"
};

SnapshotFiles list_snapshot(const std::string& repo_path, const std::string& snapshot) {
  SnapshotFiles out;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::vector<std::pair<std::string, std::string>> stack{{snapshot, ""}};
  int dirs = 0;
  while (!stack.empty() && dirs < 4096) {
    auto [dir, rel_dir] = stack.back();
    stack.pop_back();
    ++dirs;
    DIR* d = ::opendir(dir.c_str());
    if (!d) continue;
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      std::string p = dir + "/" + n, rel = rel_dir.empty() ? n : rel_dir + "/" + n;
      std::string real;
      try {
        real = hf_resolve_inside(repo_path, p);
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::kFormat) out.refused.push_back(rel);
        continue;  // dangling link: an incomplete download, the file is simply not there
      }
      struct stat st;
      if (::stat(real.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        stack.push_back({p, rel});
      } else if (S_ISREG(st.st_mode)) {
        out.rel_paths.push_back(rel);
        out.basenames.insert(n);
        if (seen.insert({st.st_dev, st.st_ino}).second) out.size_bytes += st.st_size;
      }
    }
  }
  return out;
}

// The dominant float dtype of the weights by bytes, from the safetensors headers only.
std::string weights_dtype(const std::string& repo_path, const std::string& snapshot, const SnapshotFiles& files) {
  std::map<DType, size_t> bytes;
  for (const auto& rel : files.rel_paths) {
    if (rel.find('/') != std::string::npos || !rel.ends_with(".safetensors")) continue;
    try {
      auto f = SafetensorsFile::open(hf_resolve_inside(repo_path, snapshot + "/" + rel), LoadMode::kLazy);
      for (const auto& t : f->tensors())
        if (dtype_is_float(t.dtype)) bytes[t.dtype] += t.nbytes;
    } catch (const Error&) {
      // A broken shard is reported when the model is loaded; discovery only summarises.
    }
  }
  auto best = std::max_element(bytes.begin(), bytes.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  return best == bytes.end() ? "" : dtype_name(best->first);
}

}  // namespace

DiscoveredModel discover_repo(const std::string& repo_path) {
  DiscoveredModel m;
  HfCachedRepo repo = hf_read_repo(repo_path);
  m.repo_id = repo.repo_id;
  m.repo_type = repo.repo_type;
  m.repo_path = repo.path;
  auto reason = [&](std::string r) { m.layout_reasons.push_back("cache layout: " + std::move(r)); };

  if (repo.repo_type != "model") reason("repo type is " + repo.repo_type + ", not model");
  auto main = repo.refs.find("main");
  if (main == repo.refs.end()) {
    reason("no main ref (refs/main)");
  } else if (!std::binary_search(repo.snapshots.begin(), repo.snapshots.end(), main->second)) {
    reason("refs/main points to " + main->second + ", which has no snapshot folder");
  } else {
    m.revision = main->second;
    m.snapshot = repo.path + "/snapshots/" + m.revision;
  }

  std::optional<Json> config;
  std::string config_problem = "no main snapshot";
  bool has_model_index = false;
  if (!m.snapshot.empty()) {
    SnapshotFiles files = list_snapshot(repo.path, m.snapshot);
    m.size_bytes = files.size_bytes;
    for (const auto& r : files.refused) reason(r + " is a symlink pointing outside the repo folder (refused)");
    for (const char* need : {"config.json", "tokenizer_config.json"})
      if (!files.basenames.count(need)) reason(std::string("missing ") + need);
    bool weights = files.basenames.count("model.safetensors.index.json") > 0 ||
                   std::any_of(files.basenames.begin(), files.basenames.end(),
                               [](const std::string& n) { return n.ends_with(".safetensors"); });
    if (!weights) reason("no safetensors weights (model.safetensors.index.json or *.safetensors)");

    // model_index.json counts when present as a regular file inside the repo, readable or not.
    has_model_index = regular_inside(repo.path, m.snapshot + "/model_index.json");
    config = read_bounded_json(repo.path, m.snapshot + "/config.json", &config_problem);
    m.dtype = weights_dtype(repo.path, m.snapshot, files);
  }
  m.layout_supported = m.layout_reasons.empty();
  m.capability = classify_image_capability(config ? &*config : nullptr, has_model_index, config_problem);

  if (config && config->is_object()) {
    const Json& c = *config;
    for (const char* k : {"model_type", "speculators_model_type"}) {
      const Json* v = json_find(c, k);
      if (v && v->is_string() && !v->get<std::string>().empty()) {
        m.model_type = v->get<std::string>();
        break;
      }
    }
    if (m.dtype.empty()) {  // no readable weights: fall back to what the config claims
      for (const Json* src : {&c, json_find(c, "text_config")})
        for (const char* k : {"dtype", "torch_dtype"})
          if (m.dtype.empty() && src)
            if (const Json* v = json_find(*src, k); v && v->is_string()) m.dtype = v->get<std::string>();
    }
    try {
      m.quantization = QuantizationConfig::from_config(c, m.snapshot + "/config.json").summary();
    } catch (const Error& e) {
      m.quantization = "unreadable";
      m.capability.evidence.push_back(e.what());
    }
  }
  return m;
}

std::vector<DiscoveredModel> discover_models(const std::string& cache_dir) {
  std::vector<DiscoveredModel> out;
  for (const auto& repo : hf_scan_cache(cache_dir)) out.push_back(discover_repo(repo.path));
  return out;  // hf_scan_cache already sorted by repo id
}

}  // namespace vlm
