// Shared by the `vlmcheck run` / `report` / browser tests: fixture checkpoints placed in a fake
// Hugging Face cache, results.jsonl reading, and validation of every line two ways:
//   - against docs/results.schema.json by Ajv (an independent JSON Schema validator, installed
//     outside the repository by tests/oracles/install_oracles.sh), and
//   - against the cross-field and cross-line rules of docs/results_schema.md that JSON Schema
//     cannot state (observation registry order, the TPS threshold taken from the header).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fake_hf_cache.h"
#include "support/test_support.h"

namespace vlm::test {

inline const std::string kFixtureSha = fake_sha("0123456789abcdef");

inline std::string text_fixture(const std::string& name) { return source_dir() + "/tests/fixtures/text/" + name; }
inline std::string demo_image() { return source_dir() + "/assets/demo/sample.jpg"; }

// A cache repo in huggingface_hub's layout (blobs/, refs/main, snapshots/<sha>/ symlinks) holding
// the files of a fixture folder. Returns the snapshot folder.
inline std::string add_fixture_repo(const std::string& cache, const std::string& repo_id, const std::string& from) {
  FakeRepo repo(cache, repo_id);
  for (const auto& e : std::filesystem::directory_iterator(from))
    if (e.is_regular_file()) repo.add_file(kFixtureSha, e.path().filename().string(), read_file(e.path().string()));
  repo.set_ref("main", kFixtureSha);
  return repo.snapshot(kFixtureSha);
}

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

inline const nlohmann::json* result_for(const std::vector<nlohmann::json>& lines, const std::string& model) {
  const nlohmann::json* found = nullptr;
  for (const auto& l : lines)
    if (l.value("_type", "") == "result" && l.value("model", "") == model) found = &l;  // the latest wins
  return found;
}

inline std::string shell_output(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  *status = pclose(p);
  return out;
}

// Ajv's verdict on every line of `jsonl_path` against docs/results.schema.json: the list of
// {line, type, errors[]} for the lines that fail (empty when all pass). Fails the test when the
// validator itself cannot run.
inline nlohmann::json schema_errors(const std::string& jsonl_path) {
  static std::string oracle_dir;
  if (oracle_dir.empty()) {
    int status = 0;
    std::string out = shell_output("bash '" + source_dir() + "/tests/oracles/install_oracles.sh'", &status);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (status != 0 || out.empty()) {
      ADD_FAILURE() << "could not install the npm oracles (ajv) with tests/oracles/install_oracles.sh: status "
                    << status << "; the npm registry is needed on first use, then the cache in "
                    << "$VLMCHECK_ORACLE_DIR or ~/.cache/vlmcheck-oracles";
      return nlohmann::json::array({"validator unavailable"});
    }
    oracle_dir = out;
  }
  int status = 0;
  std::string out = shell_output("node '" + source_dir() + "/tests/oracles/validate_jsonl.js' '" + oracle_dir + "' '" +
                                     source_dir() + "/docs/results.schema.json' '" + jsonl_path + "'",
                                 &status);
  nlohmann::json verdict = nlohmann::json::parse(out, nullptr, false);
  if (status != 0 || verdict.is_discarded() || !verdict.contains("errors")) {
    ADD_FAILURE() << "validate_jsonl.js failed (status " << status << "): " << out;
    return nlohmann::json::array({"validator failed"});
  }
  if (verdict["lines"].get<int>() == 0) return nlohmann::json::array({"no lines"});
  return verdict["errors"];
}

inline void expect_schema_valid(const std::string& jsonl_path) {
  nlohmann::json errors = schema_errors(jsonl_path);
  EXPECT_TRUE(errors.empty()) << jsonl_path << " does not match docs/results.schema.json:\n" << errors.dump(2);
}

// docs/results_schema.md, "Rules a valid file satisfies", the parts beyond the JSON Schema.
inline void expect_rules_hold(const std::vector<nlohmann::json>& lines) {
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0].value("_type", ""), "metadata");
  static const std::vector<std::string> registry = {
      "empty_output", "repeated_output", "missing_final_answer", "unexpected_special_token",
      "missing_requested_sections", "prompt_instruction_echo", "unexpected_catalog_preamble", "token_cap_truncation",
      "thinking_trace_incomplete", "role_boundary_token_present", "thinking_trace_present",
      "configured_wrapper_present", "catalog_constraint_violation", "minimal_output", "draft_returned_unchanged",
      "no_keyword_overlap"};
  int64_t tps_min = 16;
  std::set<std::string> models_so_far;
  for (size_t i = 0; i < lines.size(); ++i) {
    const nlohmann::json& l = lines[i];
    std::string type = l.value("_type", "");
    if (type == "metadata") tps_min = l["quality_thresholds"].value("min_generation_tokens_for_tps", 16);
    if (type == "rerun") {
      EXPECT_TRUE(models_so_far.count(l.value("model", ""))) << "rerun before its result, line " << i;
    }
    if (type == "run_end") {
      EXPECT_EQ(i + 1 == lines.size() || lines[i + 1].value("_type", "") == "metadata", true)
          << "run_end must end a run, line " << i;
    }
    if (type != "result") continue;
    SCOPED_TRACE(l.value("model", "?"));
    models_so_far.insert(l.value("model", ""));
    int last = -1;
    for (const auto& o : l["assessment"]["observations"]) {
      auto it = std::find(registry.begin(), registry.end(), o.get<std::string>());
      ASSERT_NE(it, registry.end()) << o;
      int rank = static_cast<int>(it - registry.begin());
      EXPECT_GT(rank, last) << "observations out of registry order";
      last = rank;
    }
    const auto& mt = l["metrics"];
    EXPECT_EQ(mt["generation_tps_valid"].get<bool>(), mt["generation_tokens"].get<int64_t>() >= tps_min);
    EXPECT_EQ(mt["total_tokens"].get<int64_t>(),
              mt["prompt_tokens"].get<int64_t>() + mt["generation_tokens"].get<int64_t>());
  }
}

// Both checks on a results.jsonl file.
inline void expect_valid_results(const std::string& jsonl_path) {
  expect_schema_valid(jsonl_path);
  expect_rules_hold(read_jsonl(jsonl_path));
}

// Every report file under `dir` (relative path → content), the JSONL, history and logs excluded.
inline std::map<std::string, std::string> report_files(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string rel = std::filesystem::relative(e.path(), dir).string();
    if (rel == "results.jsonl" || rel == "results.history.jsonl" || rel == "vlmcheck.log" || rel == "environment.log")
      continue;
    out[rel] = read_file(e.path().string());
  }
  return out;
}

// `vlmcheck report --from <dir>/results.jsonl` into a fresh folder reproduces every report byte for byte.
inline void expect_report_regenerates(const std::string& run_dir, const std::string& scratch) {
  auto r = run_vlmcheck({"report", "--from", run_dir + "/results.jsonl", "--output-dir", scratch});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = report_files(run_dir), b = report_files(scratch);
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, content] : a) {
    ASSERT_TRUE(b.count(name)) << name << " not re-rendered";
    EXPECT_TRUE(content == b[name]) << name << " differs after re-rendering";
  }
}

}  // namespace vlm::test
