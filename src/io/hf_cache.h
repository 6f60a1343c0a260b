// The Hugging Face hub cache, read-only and offline: where it is (huggingface_hub's order of
// environment variables), its `models--org--name/{refs,snapshots,blobs}` layout, revision
// resolution (branch, tag, full commit sha or unique sha prefix) and `--model` arguments that are
// either a local folder or a repo id. Nothing here touches the network.
//
// Cache files are symlinks from snapshots/<sha>/ into blobs/. A symlink is only ever followed when
// its target stays inside the repo's own folder; anything else is refused with an error (or, for
// discovery, recorded as a reason), since a cache is untrusted input like any checkpoint.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace vlm {

struct HfCacheLocation {
  std::string path;    // the hub cache directory (may not exist)
  std::string source;  // how it was chosen: "--cache-dir", "HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"
};

// huggingface_hub's order: HF_HUB_CACHE (or the older HUGGINGFACE_HUB_CACHE), $HF_HOME/hub,
// $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub. A non-empty `override_dir` wins.
HfCacheLocation hf_cache_location(const std::string& override_dir = "");

// "org/name" -> "models--org--name" (also "name" -> "models--name"); throws kInvalidArgument for
// ids that could not be a repo (empty parts, "..", path separators beyond the one '/').
std::string hf_repo_folder_name(const std::string& repo_id, const std::string& repo_type = "model");
// "models--org--name" -> {"model", "org/name"}; nullopt for folders that are not repos.
struct HfRepoName {
  std::string type;  // "model", "dataset", "space"
  std::string id;
};
std::optional<HfRepoName> hf_parse_repo_folder(const std::string& folder_name);

// One repo folder in the cache: its refs (name relative to refs/, e.g. "main", "v1.0", "tags/v2",
// "refs/pr/1") and its snapshot folders.
struct HfCachedRepo {
  std::string repo_id;
  std::string repo_type;  // "model", "dataset", "space"
  std::string path;       // <cache>/models--org--name
  std::map<std::string, std::string> refs;  // ref name -> commit sha (refs whose file is unreadable are omitted)
  std::vector<std::string> snapshots;       // commit shas with a snapshots/<sha>/ folder, sorted
};

// Reads one repo folder (refs and snapshot names only). Throws kNotFound if it is not a directory.
HfCachedRepo hf_read_repo(const std::string& repo_path);
// Every repo folder in a cache directory, sorted by repo id (code-point order). A missing cache
// directory gives an empty list.
std::vector<HfCachedRepo> hf_scan_cache(const std::string& cache_dir);

// Resolves a revision in a cached repo to a commit sha whose snapshot exists: a ref name (branch or
// tag, also looked up as "tags/<name>"), a full 40-hex sha, or a unique prefix (>= 4 hex digits) of
// a snapshot sha. Empty means "main". Errors: kNotFound (nothing matches, message lists refs and
// snapshots), kInvalidArgument (ambiguous prefix, listing the candidates; or a malformed revision).
std::string hf_resolve_revision(const HfCachedRepo& repo, const std::string& revision);

// The real path of `path` (a file or folder inside `repo_path`), following symlinks only while every
// hop stays inside the repo folder. Throws kFormat naming the link if it points outside, kNotFound
// if the target does not exist.
std::string hf_resolve_inside(const std::string& repo_path, const std::string& path);
// Every symlink under `snapshot` (recursively) that points outside `repo_path`, as "<file> -> <target>".
std::vector<std::string> hf_escaping_links(const std::string& repo_path, const std::string& snapshot);

// A resolved `--model` argument.
struct ResolvedModel {
  std::string model;               // as given
  bool local = false;              // a local folder, not a cache repo
  std::string repo_id;             // "" when local
  std::string requested_revision;  // as given ("" = main)
  std::string revision;            // resolved commit sha ("" when local)
  std::string snapshot;            // the folder to load from
  std::string cache_dir;           // the cache that was searched ("" when local)
};

// `model` is a local folder when such a directory exists (or it is written as a path: starts with
// '/', '.', '~'); otherwise a repo id looked up in the cache. A repo that is not cached gives
// Error(kNotFound) whose message says how to download it. The snapshot's symlinks are checked:
// one that leaves the repo folder is an Error(kFormat) naming it.
ResolvedModel resolve_model(const std::string& model, const std::string& revision = "",
                            const std::string& cache_dir_override = "");

}  // namespace vlm
