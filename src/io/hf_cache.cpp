// Hugging Face cache: locations, repo folders, refs, revision resolution and symlink containment.
// Layout facts follow huggingface_hub (constants.py, file_download.py, _cache_manager.py):
//   <cache>/models--org--name/refs/<revision>      text file holding a commit sha
//   <cache>/models--org--name/snapshots/<sha>/...  symlinks (relative) into ../../blobs/<hash>
#include "io/hf_cache.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>

#include "core/error.h"
#include "core/mapped_file.h"

namespace vlm {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// Python's os.path.expanduser for the forms that matter: "~" and "~/...".
std::string expand_user(const std::string& p) {
  if (p == "~" || p.starts_with("~/")) return env("HOME") + p.substr(1);
  return p;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_hex(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

bool inside(const std::string& root, const std::string& p) {
  return p == root || (p.size() > root.size() && p.starts_with(root) && p[root.size()] == '/');
}

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  if (!::realpath(p.c_str(), buf)) {
    ErrorKind kind = (errno == ENOENT || errno == ENOTDIR) ? ErrorKind::kNotFound : ErrorKind::kIo;
    throw_error(kind, "{}: cannot resolve path: {}", p, std::strerror(errno));
  }
  return buf;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// refs/ files, recursively ("main", "tags/v1", "refs/pr/1"). Symlinks are not followed: a ref is
// a small text file huggingface_hub writes itself.
void read_refs(const std::string& dir, const std::string& prefix, std::map<std::string, std::string>& out,
               int depth) {
  if (depth > 8) return;
  for (const auto& n : list_dir(dir)) {
    std::string p = dir + "/" + n;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      read_refs(p, prefix + n + "/", out, depth + 1);
    } else if (S_ISREG(st.st_mode) && st.st_size <= 1024) {
      std::string sha;
      try {
        sha = read_file_to_string(p, 1024);
      } catch (const Error&) {
        continue;  // unreadable ref: omitted, as documented
      }
      while (!sha.empty() && std::isspace(static_cast<unsigned char>(sha.back()))) sha.pop_back();
      if (is_hex(sha)) out[prefix + n] = sha;
    }
  }
}

std::string join_names(const std::vector<std::string>& v, size_t max = 12) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < max; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > max) s += fmt::format(", ... ({} more)", v.size() - max);
  return s.empty() ? "none" : s;
}

std::string download_hint(const std::string& repo_id, const std::string& revision) {
  std::string rev = revision.empty() ? "" : " --revision " + revision;
  return fmt::format("download it with `huggingface-cli download {0}{1}` (or `hf download {0}{1}`)", repo_id, rev);
}

}  // namespace

HfCacheLocation hf_cache_location(const std::string& override_dir) {
  if (!override_dir.empty()) return {expand_user(override_dir), "--cache-dir"};
  if (auto v = env("HF_HUB_CACHE"); !v.empty()) return {expand_user(v), "HF_HUB_CACHE"};
  if (auto v = env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return {expand_user(v), "HUGGINGFACE_HUB_CACHE"};
  if (auto v = env("HF_HOME"); !v.empty()) return {expand_user(v) + "/hub", "HF_HOME"};
  if (auto v = env("XDG_CACHE_HOME"); !v.empty()) return {expand_user(v) + "/huggingface/hub", "XDG_CACHE_HOME"};
  return {env("HOME") + "/.cache/huggingface/hub", "HOME"};
}

std::string hf_repo_folder_name(const std::string& repo_id, const std::string& repo_type) {
  // huggingface_hub's validate_repo_id, in short: "name" or "namespace/name", word characters, '-'
  // and '.', no "--" or "..", nothing that could walk out of the cache folder.
  auto bad = [&](const char* why) {
    throw_error(ErrorKind::kInvalidArgument, "\"{}\" is not a valid repo id ({}); expected \"org/name\"", repo_id,
                why);
  };
  if (repo_id.empty() || repo_id.size() > 96) bad("empty or longer than 96 characters");
  size_t slash = repo_id.find('/');
  if (slash != std::string::npos && repo_id.find('/', slash + 1) != std::string::npos) bad("more than one '/'");
  if (repo_id.find("--") != std::string::npos || repo_id.find("..") != std::string::npos) bad("contains -- or ..");
  for (char c : repo_id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/'))
      bad("unexpected character");
  for (const std::string& part : {repo_id.substr(0, slash == std::string::npos ? repo_id.size() : slash),
                                  slash == std::string::npos ? std::string("x") : repo_id.substr(slash + 1)}) {
    if (part.empty()) bad("empty part");
    if (part.front() == '-' || part.front() == '.' || part.back() == '-' || part.back() == '.')
      bad("a part starts or ends with '-' or '.'");
  }
  std::string id = repo_id;
  if (slash != std::string::npos) id.replace(slash, 1, "--");
  return repo_type + "s--" + id;
}

std::optional<HfRepoName> hf_parse_repo_folder(const std::string& folder_name) {
  size_t sep = folder_name.find("--");
  if (sep == std::string::npos || sep + 2 >= folder_name.size()) return std::nullopt;
  std::string type = folder_name.substr(0, sep);
  if (type != "models" && type != "datasets" && type != "spaces") return std::nullopt;
  type.pop_back();
  std::string id = folder_name.substr(sep + 2);
  for (size_t p; (p = id.find("--")) != std::string::npos;) id.replace(p, 2, "/");
  return HfRepoName{type, id};
}

HfCachedRepo hf_read_repo(const std::string& repo_path) {
  if (!is_dir(repo_path)) throw_error(ErrorKind::kNotFound, "{}: not a cache repo folder", repo_path);
  HfCachedRepo r;
  r.path = repo_path;
  std::string base = fs::path(repo_path).filename().string();
  if (auto n = hf_parse_repo_folder(base)) {
    r.repo_id = n->id;
    r.repo_type = n->type;
  } else {
    r.repo_id = base;
    r.repo_type = "unknown";
  }
  read_refs(repo_path + "/refs", "", r.refs, 0);
  for (const auto& n : list_dir(repo_path + "/snapshots"))
    if (is_dir(repo_path + "/snapshots/" + n)) r.snapshots.push_back(n);
  return r;
}

std::vector<HfCachedRepo> hf_scan_cache(const std::string& cache_dir) {
  std::vector<HfCachedRepo> out;
  for (const auto& n : list_dir(cache_dir)) {
    if (!hf_parse_repo_folder(n)) continue;  // .locks, version.txt, stray files
    std::string p = cache_dir + "/" + n;
    if (!is_dir(p)) continue;
    out.push_back(hf_read_repo(p));
  }
  std::sort(out.begin(), out.end(), [](const HfCachedRepo& a, const HfCachedRepo& b) {
    return a.repo_id != b.repo_id ? a.repo_id < b.repo_id : a.repo_type < b.repo_type;
  });
  return out;
}

std::string hf_resolve_revision(const HfCachedRepo& repo, const std::string& revision_in) {
  const std::string rev = revision_in.empty() ? "main" : revision_in;
  if (rev.starts_with('/') || rev.find("..") != std::string::npos || rev.find('\0') != std::string::npos)
    throw_error(ErrorKind::kInvalidArgument, "revision \"{}\" is not a branch, tag or commit sha", rev);
  auto has_snapshot = [&](const std::string& sha) {
    return std::binary_search(repo.snapshots.begin(), repo.snapshots.end(), sha);
  };
  for (const std::string& ref : {rev, "tags/" + rev}) {
    auto it = repo.refs.find(ref);
    if (it == repo.refs.end()) continue;
    if (!has_snapshot(it->second))
      throw_error(ErrorKind::kNotFound,
                  "{}: ref \"{}\" points to commit {}, which has no snapshots/{} folder (an incomplete download?)",
                  repo.path, ref, it->second, it->second);
    return it->second;
  }
  if (is_hex(rev)) {
    if (has_snapshot(rev)) return rev;
    if (rev.size() >= 4) {
      std::vector<std::string> hits;
      for (const auto& s : repo.snapshots)
        if (s.starts_with(rev)) hits.push_back(s);
      if (hits.size() == 1) return hits[0];
      if (hits.size() > 1)
        throw_error(ErrorKind::kInvalidArgument, "{}: revision \"{}\" is ambiguous: it prefixes {} snapshots ({})",
                    repo.path, rev, hits.size(), join_names(hits));
    }
  }
  std::vector<std::string> refs;
  for (const auto& kv : repo.refs) refs.push_back(kv.first);
  throw_error(ErrorKind::kNotFound, "{}: revision \"{}\" is not cached (refs: {}; snapshots: {})", repo.path, rev,
              join_names(refs), join_names(repo.snapshots));
}

std::string hf_resolve_inside(const std::string& repo_path, const std::string& path) {
  const std::string root = real_path(repo_path);
  const std::string lexical_root = fs::path(repo_path).lexically_normal().string();
  std::string lexical = fs::path(path).lexically_normal().string();
  while (lexical.size() > 1 && lexical.back() == '/') lexical.pop_back();
  std::string rel;
  if (inside(lexical_root, lexical)) rel = lexical.substr(lexical_root.size());
  else if (inside(root, lexical)) rel = lexical.substr(root.size());
  else throw_error(ErrorKind::kInvalidArgument, "{}: not inside the repo folder {}", path, repo_path);

  // Walk component by component like realpath(3), checking each symlink hop's target.
  std::deque<std::string> todo;
  for (const auto& c : fs::path(rel).relative_path()) todo.push_back(c.string());
  std::string cur = root;
  int hops = 0;
  while (!todo.empty()) {
    std::string c = todo.front();
    todo.pop_front();
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      cur = fs::path(cur).parent_path().string();
      if (!inside(root, cur))
        throw_error(ErrorKind::kFormat, "{}: leads outside the repo folder {}", path, repo_path);
      continue;
    }
    std::string next = cur + "/" + c;
    struct stat st;
    if (::lstat(next.c_str(), &st) != 0)
      throw_error(ErrorKind::kNotFound, "{}: {} does not exist", path, next);
    if (!S_ISLNK(st.st_mode)) {
      cur = next;
      continue;
    }
    if (++hops > 40) throw_error(ErrorKind::kFormat, "{}: too many levels of symbolic links", path);
    char buf[PATH_MAX];
    ssize_t n = ::readlink(next.c_str(), buf, sizeof(buf) - 1);
    if (n < 0) throw_error(ErrorKind::kIo, "{}: cannot read link: {}", next, std::strerror(errno));
    std::string target(buf, static_cast<size_t>(n));
    std::string joined =
        (target.starts_with('/') ? fs::path(target) : fs::path(cur) / target).lexically_normal().string();
    bool ok = inside(root, joined) || inside(lexical_root, joined);
    if (!ok)
      throw_error(ErrorKind::kFormat, "{} is a symlink to {}, outside the repo folder {}; refusing to follow it",
                  next, target, repo_path);
    // Continue from the target: its components replace this one.
    std::string base = inside(root, joined) ? root : lexical_root;
    std::deque<std::string> more;
    for (const auto& t : fs::path(joined.substr(base.size())).relative_path()) more.push_back(t.string());
    todo.insert(todo.begin(), more.begin(), more.end());
    cur = root;
  }
  return cur;
}

std::vector<std::string> hf_escaping_links(const std::string& repo_path, const std::string& snapshot) {
  std::vector<std::string> out;
  std::vector<std::pair<std::string, int>> stack{{snapshot, 0}};
  while (!stack.empty()) {
    auto [dir, depth] = stack.back();
    stack.pop_back();
    for (const auto& n : list_dir(dir)) {
      std::string p = dir + "/" + n;
      struct stat st;
      if (::lstat(p.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        if (depth < 16) stack.push_back({p, depth + 1});
        continue;
      }
      if (!S_ISLNK(st.st_mode)) continue;
      try {
        std::string real = hf_resolve_inside(repo_path, p);
        if (is_dir(real) && depth < 16) stack.push_back({p, depth + 1});
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::kFormat) {
          char buf[PATH_MAX];
          ssize_t k = ::readlink(p.c_str(), buf, sizeof(buf) - 1);
          out.push_back(p + " -> " + (k >= 0 ? std::string(buf, static_cast<size_t>(k)) : std::string("?")));
        }
        // kNotFound: a dangling link inside the repo (incomplete download); opening it reports that.
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

ResolvedModel resolve_model(const std::string& model, const std::string& revision,
                            const std::string& cache_dir_override) {
  ResolvedModel r;
  r.model = model;
  r.requested_revision = revision;
  if (model.empty()) throw_error(ErrorKind::kInvalidArgument, "--model is empty: give a local folder or a repo id");

  bool looks_like_path = model.starts_with('/') || model.starts_with('.') || model.starts_with('~');
  std::string expanded = expand_user(model);
  if (looks_like_path || is_dir(expanded)) {
    if (!is_dir(expanded)) throw_error(ErrorKind::kNotFound, "{}: model folder does not exist", model);
    if (!revision.empty())
      throw_error(ErrorKind::kInvalidArgument,
                  "--revision {} applies to cached repos, but {} is a local folder", revision, model);
    r.local = true;
    r.snapshot = expanded;
    return r;
  }

  const std::string folder = hf_repo_folder_name(model);
  HfCacheLocation loc = hf_cache_location(cache_dir_override);
  r.cache_dir = loc.path;
  r.repo_id = model;
  const std::string repo_path = loc.path + "/" + folder;
  if (!is_dir(repo_path))
    throw_error(ErrorKind::kNotFound,
                "model \"{}\" is not a local folder and is not in the Hugging Face cache {} (from {}); vlmcheck "
                "never downloads: {}",
                model, loc.path, loc.source, download_hint(model, revision));
  HfCachedRepo repo = hf_read_repo(repo_path);
  try {
    r.revision = hf_resolve_revision(repo, revision);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kNotFound) throw;
    throw Error(ErrorKind::kNotFound, std::string(e.what()) + "; " + download_hint(model, revision));
  }
  r.snapshot = repo_path + "/snapshots/" + r.revision;
  // The snapshot folder itself must stay inside the repo, and so must every link in it.
  hf_resolve_inside(repo_path, r.snapshot);
  auto escaping = hf_escaping_links(repo_path, r.snapshot);
  if (!escaping.empty())
    throw_error(ErrorKind::kFormat,
                "{}: {} symlink(s) point outside the repo folder {}; refusing to load this snapshot: {}", r.snapshot,
                escaping.size(), repo_path, join_names(escaping, 4));
  return r;
}

}  // namespace vlm
