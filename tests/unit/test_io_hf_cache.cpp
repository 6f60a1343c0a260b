// Hugging Face cache: location order, repo folder names, refs (branches, tags, refs/tags/x), several
// snapshots, revision by full sha / unique prefix / ambiguous prefix, `--model` as folder or repo
// id, and symlinks that leave the repo folder being refused. All on real trees written here.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "fake_hf_cache.h"
#include "io/hf_cache.h"
#include "support/test_support.h"

using namespace vlm;
using namespace vlm::test;

namespace {

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

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Sets environment variables for one test and restores them afterwards.
class EnvGuard {
 public:
  explicit EnvGuard(std::vector<std::string> names) : names_(std::move(names)) {
    for (const auto& n : names_) {
      const char* v = std::getenv(n.c_str());
      saved_.push_back(v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(n.c_str());
    }
  }
  ~EnvGuard() {
    for (size_t i = 0; i < names_.size(); ++i) {
      if (saved_[i]) ::setenv(names_[i].c_str(), saved_[i]->c_str(), 1);
      else ::unsetenv(names_[i].c_str());
    }
  }

 private:
  std::vector<std::string> names_;
  std::vector<std::optional<std::string>> saved_;
};

const std::vector<std::string> kCacheEnv = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME",
                                            "HOME"};

const std::string kS1 = fake_sha("1111aaaa");
const std::string kS2 = fake_sha("2222bbbb");
const std::string kS3 = fake_sha("2222cccc");  // shares "2222" with kS2: an ambiguous prefix

// A repo with three snapshots: main -> S2, branch dev -> S3, tags v1.0 (refs/tags/) and v0.9
// (stored as refs/v0.9, as huggingface_hub does for a tag passed as revision) -> S1.
struct ThreeSnapshotRepo {
  TempDir cache;
  FakeRepo repo{cache.path(), "Org/Model-A"};
  ThreeSnapshotRepo() {
    repo.add_file(kS1, "config.json", R"({"v": 1})");
    repo.add_file(kS2, "config.json", R"({"v": 2})");
    repo.add_file(kS2, "sub/dir/notes.txt", "nested");
    repo.add_file(kS3, "config.json", R"({"v": 3})");
    repo.set_ref("main", kS2);
    repo.set_ref("dev", kS3 + "\n");
    repo.set_ref("tags/v1.0", kS1);
    repo.set_ref("v0.9", kS1);
  }
};

}  // namespace

TEST(HfCacheLocation, FollowsHuggingfaceHubOrder) {
  EnvGuard guard(kCacheEnv);
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(hf_cache_location().path, "/home/u/.cache/huggingface/hub");
  EXPECT_EQ(hf_cache_location().source, "HOME");
  ::setenv("XDG_CACHE_HOME", "/xdg", 1);
  EXPECT_EQ(hf_cache_location().path, "/xdg/huggingface/hub");
  ::setenv("HF_HOME", "~/hfhome", 1);
  EXPECT_EQ(hf_cache_location().path, "/home/u/hfhome/hub");
  EXPECT_EQ(hf_cache_location().source, "HF_HOME");
  ::setenv("HUGGINGFACE_HUB_CACHE", "/legacy", 1);
  EXPECT_EQ(hf_cache_location().path, "/legacy");
  ::setenv("HF_HUB_CACHE", "/hub", 1);
  EXPECT_EQ(hf_cache_location().path, "/hub");
  EXPECT_EQ(hf_cache_location().source, "HF_HUB_CACHE");
  EXPECT_EQ(hf_cache_location("/explicit").path, "/explicit");
  EXPECT_EQ(hf_cache_location("/explicit").source, "--cache-dir");
  ::setenv("HF_HUB_CACHE", "", 1);  // empty counts as unset
  EXPECT_EQ(hf_cache_location().path, "/legacy");
}

TEST(HfCacheNames, RepoFolderRoundTripAndValidation) {
  EXPECT_EQ(hf_repo_folder_name("mlx-community/Qwen2-VL-2B-Instruct-4bit"),
            "models--mlx-community--Qwen2-VL-2B-Instruct-4bit");
  EXPECT_EQ(hf_repo_folder_name("gpt2"), "models--gpt2");
  EXPECT_EQ(hf_repo_folder_name("org/data", "dataset"), "datasets--org--data");
  auto p = hf_parse_repo_folder("models--mlx-community--Qwen2-VL-2B-Instruct-4bit");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->type, "model");
  EXPECT_EQ(p->id, "mlx-community/Qwen2-VL-2B-Instruct-4bit");
  EXPECT_EQ(hf_parse_repo_folder("datasets--a--b")->type, "dataset");
  EXPECT_FALSE(hf_parse_repo_folder(".locks"));
  EXPECT_FALSE(hf_parse_repo_folder("version.txt"));
  EXPECT_FALSE(hf_parse_repo_folder("models--"));
  for (const char* bad : {"", "../etc", "a/b/c", "a--b/c", "org/", "/abs", "a/..", "sp ace/x", "-org/x"})
    error_of([&] { hf_repo_folder_name(bad); }, ErrorKind::kInvalidArgument);
}

TEST(HfCacheRepo, ReadsRefsAndSnapshots) {
  ThreeSnapshotRepo t;
  t.cache.path();
  write_file(t.cache / ".locks/models--Org--Model-A/x.lock", "");
  HfCachedRepo r = hf_read_repo(t.repo.path());
  EXPECT_EQ(r.repo_id, "Org/Model-A");
  EXPECT_EQ(r.repo_type, "model");
  EXPECT_EQ(r.snapshots, (std::vector<std::string>{kS1, kS2, kS3}));
  EXPECT_EQ(r.refs.size(), 4u);
  EXPECT_EQ(r.refs.at("main"), kS2);
  EXPECT_EQ(r.refs.at("dev"), kS3);  // trailing newline trimmed
  EXPECT_EQ(r.refs.at("tags/v1.0"), kS1);
  auto all = hf_scan_cache(t.cache.path());
  ASSERT_EQ(all.size(), 1u);  // .locks is not a repo
  error_of([&] { hf_read_repo(t.cache / "models--nope"); }, ErrorKind::kNotFound);
}

TEST(HfCacheRevision, BranchTagShaAndPrefix) {
  ThreeSnapshotRepo t;
  HfCachedRepo r = hf_read_repo(t.repo.path());
  EXPECT_EQ(hf_resolve_revision(r, ""), kS2);
  EXPECT_EQ(hf_resolve_revision(r, "main"), kS2);
  EXPECT_EQ(hf_resolve_revision(r, "dev"), kS3);
  EXPECT_EQ(hf_resolve_revision(r, "v1.0"), kS1);       // via refs/tags/v1.0
  EXPECT_EQ(hf_resolve_revision(r, "tags/v1.0"), kS1);  // spelled out
  EXPECT_EQ(hf_resolve_revision(r, "v0.9"), kS1);
  EXPECT_EQ(hf_resolve_revision(r, kS3), kS3);  // full sha without any ref
  EXPECT_EQ(hf_resolve_revision(r, "1111"), kS1);
  EXPECT_EQ(hf_resolve_revision(r, "2222c"), kS3);

  std::string msg = error_of([&] { hf_resolve_revision(r, "2222"); }, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(msg, "ambiguous")) << msg;
  EXPECT_TRUE(contains(msg, kS2) && contains(msg, kS3)) << msg;

  msg = error_of([&] { hf_resolve_revision(r, "release"); }, ErrorKind::kNotFound);
  EXPECT_TRUE(contains(msg, "\"release\"") && contains(msg, "dev") && contains(msg, kS1)) << msg;
  error_of([&] { hf_resolve_revision(r, "ffff"); }, ErrorKind::kNotFound);
  error_of([&] { hf_resolve_revision(r, "111"); }, ErrorKind::kNotFound);  // too short to be a prefix
  error_of([&] { hf_resolve_revision(r, "../../etc"); }, ErrorKind::kInvalidArgument);

  // A ref whose snapshot is missing (interrupted download).
  t.repo.set_ref("broken", fake_sha("dead"));
  r = hf_read_repo(t.repo.path());
  msg = error_of([&] { hf_resolve_revision(r, "broken"); }, ErrorKind::kNotFound);
  EXPECT_TRUE(contains(msg, fake_sha("dead"))) << msg;
}

TEST(HfCacheResolveModel, RepoIdThroughEnvAndOverride) {
  ThreeSnapshotRepo t;
  EnvGuard guard(kCacheEnv);
  ::setenv("HF_HUB_CACHE", t.cache.path().c_str(), 1);
  ResolvedModel m = resolve_model("Org/Model-A");
  EXPECT_FALSE(m.local);
  EXPECT_EQ(m.repo_id, "Org/Model-A");
  EXPECT_EQ(m.revision, kS2);
  EXPECT_EQ(m.snapshot, t.repo.snapshot(kS2));
  EXPECT_EQ(m.cache_dir, t.cache.path());
  EXPECT_EQ(read_file(m.snapshot + "/config.json"), R"({"v": 2})");  // through the blob symlink
  EXPECT_EQ(read_file(m.snapshot + "/sub/dir/notes.txt"), "nested");

  m = resolve_model("Org/Model-A", "v1.0");
  EXPECT_EQ(m.requested_revision, "v1.0");
  EXPECT_EQ(m.revision, kS1);

  ::setenv("HF_HUB_CACHE", "/nonexistent-cache", 1);
  EXPECT_EQ(resolve_model("Org/Model-A", "dev", t.cache.path()).revision, kS3);  // --cache-dir wins
}

TEST(HfCacheResolveModel, NotCachedSaysHowToDownload) {
  TempDir cache;
  std::string msg = error_of([&] { resolve_model("mlx-community/SmolVLM-256M", "", cache.path()); },
                             ErrorKind::kNotFound);
  EXPECT_TRUE(contains(msg, "huggingface-cli download mlx-community/SmolVLM-256M")) << msg;
  EXPECT_TRUE(contains(msg, "hf download mlx-community/SmolVLM-256M")) << msg;
  EXPECT_TRUE(contains(msg, cache.path())) << msg;

  ThreeSnapshotRepo t;
  msg = error_of([&] { resolve_model("Org/Model-A", "v2", t.cache.path()); }, ErrorKind::kNotFound);
  EXPECT_TRUE(contains(msg, "huggingface-cli download Org/Model-A --revision v2")) << msg;
  error_of([&] { resolve_model("not a repo id!", "", cache.path()); }, ErrorKind::kInvalidArgument);
}

TEST(HfCacheResolveModel, LocalFolder) {
  TempDir dir;
  write_file(dir / "m/config.json", "{}");
  ResolvedModel m = resolve_model(dir / "m");
  EXPECT_TRUE(m.local);
  EXPECT_EQ(m.snapshot, dir / "m");
  EXPECT_TRUE(m.revision.empty());
  error_of([&] { resolve_model(dir / "absent"); }, ErrorKind::kNotFound);
  error_of([&] { resolve_model("./definitely/not/here"); }, ErrorKind::kNotFound);
  error_of([&] { resolve_model(dir / "m", "main"); }, ErrorKind::kInvalidArgument);
}

TEST(HfCacheSymlinks, LinkOutsideTheRepoIsRefused) {
  TempDir cache;
  write_file(cache / "outside/secret.json", R"({"secret": true})");
  FakeRepo other(cache.path(), "Org/Other");
  std::string other_blob = other.add_file(kS1, "config.json", "{}");
  FakeRepo repo(cache.path(), "Org/Victim");
  repo.add_file(kS1, "tokenizer_config.json", "{}");
  repo.set_ref("main", kS1);
  // Relative, climbing out of the repo folder into a sibling folder of the cache.
  repo.add_link(kS1, "config.json", "../../../outside/secret.json");

  std::string msg = error_of([&] { resolve_model("Org/Victim", "", cache.path()); }, ErrorKind::kFormat);
  EXPECT_TRUE(contains(msg, "outside the repo folder")) << msg;
  EXPECT_TRUE(contains(msg, "config.json")) << msg;

  std::string link = repo.snapshot(kS1) + "/config.json";
  msg = error_of([&] { hf_resolve_inside(repo.path(), link); }, ErrorKind::kFormat);
  EXPECT_TRUE(contains(msg, link)) << msg;
  EXPECT_EQ(hf_escaping_links(repo.path(), repo.snapshot(kS1)).size(), 1u);

  // Absolute targets and links into another repo's blobs are outside too.
  std::filesystem::remove(link);
  repo.add_link(kS1, "config.json", other_blob);
  error_of([&] { hf_resolve_inside(repo.path(), link); }, ErrorKind::kFormat);
  std::filesystem::remove(link);
  repo.add_link(kS1, "config.json", "../../../models--Org--Other/blobs/" +
                                        std::filesystem::path(other_blob).filename().string());
  error_of([&] { hf_resolve_inside(repo.path(), link); }, ErrorKind::kFormat);

  // A chain of links that stays inside is followed; a dangling one inside is "not found".
  std::filesystem::remove(link);
  std::string blob = repo.add_file(kS1, "real.json", R"({"ok": 1})");
  repo.add_link(kS1, "config.json", "real.json");
  EXPECT_EQ(hf_resolve_inside(repo.path(), link), std::filesystem::canonical(blob).string());
  EXPECT_NO_THROW(resolve_model("Org/Victim", "", cache.path()));
  repo.add_link(kS1, "dangling.json", "../../blobs/missing");
  error_of([&] { hf_resolve_inside(repo.path(), repo.snapshot(kS1) + "/dangling.json"); }, ErrorKind::kNotFound);
  EXPECT_TRUE(hf_escaping_links(repo.path(), repo.snapshot(kS1)).empty());
}

TEST(HfCacheSymlinks, CacheReachedThroughASymlinkStillWorks) {
  ThreeSnapshotRepo t;
  TempDir other;
  std::string alias = other / "cache-alias";
  std::filesystem::create_directory_symlink(t.cache.path(), alias);
  ResolvedModel m = resolve_model("Org/Model-A", "", alias);
  EXPECT_EQ(m.snapshot, alias + "/models--Org--Model-A/snapshots/" + kS2);
  EXPECT_EQ(read_file(m.snapshot + "/config.json"), R"({"v": 2})");
}

TEST(HfCacheScan, SortedByCodePointAndAllRepoTypes) {
  TempDir cache;
  FakeRepo(cache.path(), "mlx-community/zeta");
  FakeRepo(cache.path(), "Qwen/Qwen2-VL-2B");
  FakeRepo(cache.path(), "LiquidAI/LFM2-VL");
  FakeRepo(cache.path(), "org/data", "datasets");
  write_file(cache / "version.txt", "1");
  auto repos = hf_scan_cache(cache.path());
  std::vector<std::string> ids;
  for (const auto& r : repos) ids.push_back(r.repo_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"LiquidAI/LFM2-VL", "Qwen/Qwen2-VL-2B", "mlx-community/zeta", "org/data"}));
  EXPECT_EQ(repos[3].repo_type, "dataset");
  EXPECT_TRUE(hf_scan_cache(cache / "missing").empty());
}
