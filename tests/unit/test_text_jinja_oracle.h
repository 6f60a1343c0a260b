// Differential-test support for the Jinja interpreter: runs Python's jinja2 (Debian's python3-jinja2, called as
// /usr/bin/python3) through tests/unit/jinja_oracle.py, which sets it up as transformers does, and compares every
// case with our render. A missing oracle fails the test with a clear message; nothing is skipped.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "support/test_support.h"
#include "text/jinja/jinja.h"

namespace vlm::test {

struct OracleResult {
  bool ok = false;
  std::string out, type, message;
  bool raised = false;
};

inline constexpr const char* kOraclePython = "/usr/bin/python3";

// Renders every case {"template", "vars", "now"} with jinja2. Fails the calling test (and returns {}) when the
// oracle cannot run.
inline std::vector<OracleResult> run_jinja_oracle(const Json& cases) {
  TempDir dir;
  write_file(dir / "cases.json", cases.dump());
  std::string cmd = std::string("TZ=UTC ") + kOraclePython + " " + source_dir() + "/tests/unit/jinja_oracle.py " +
                    (dir / "cases.json") + " > " + (dir / "out.json") + " 2> " + (dir / "err.txt");
  int rc = std::system(cmd.c_str());
  if (rc != 0) {
    ADD_FAILURE() << "jinja2 oracle failed to run (exit " << rc << "): " << cmd << "\n"
                  << read_file(dir / "err.txt")
                  << "\nThe differential tests need /usr/bin/python3 with python3-jinja2 (apt-get install python3-jinja2).";
    return {};
  }
  Json j = parse_json(read_file(dir / "out.json"), "jinja oracle output");
  std::vector<OracleResult> out;
  for (const auto& r : j) {
    OracleResult o;
    o.ok = r["ok"].get<bool>();
    if (o.ok) {
      o.out = r["out"].get<std::string>();
    } else {
      o.type = r["type"].get<std::string>();
      o.message = r["message"].get<std::string>();
      o.raised = r["raised"].get<bool>();
    }
    out.push_back(std::move(o));
  }
  if (out.size() != cases.size()) ADD_FAILURE() << "oracle returned " << out.size() << " results for " << cases.size();
  return out;
}

struct DiffStats {
  size_t cases = 0, rendered = 0, errors = 0, mismatches = 0;
};

// Renders each case with our interpreter (TZ=UTC, as the oracle) and compares with the oracle's result: equal
// text, or both failing (with raise_exception's message carried through). Each mismatch is a test failure.
inline DiffStats compare_with_oracle(const Json& cases, const std::string& label, size_t max_reports = 25) {
  setenv("TZ", "UTC", 1);
  tzset();
  DiffStats st;
  std::vector<OracleResult> want = run_jinja_oracle(cases);
  if (want.size() != cases.size()) return st;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Json& c = cases[i];
    ++st.cases;
    bool ok = false;
    std::string got, err;
    ErrorKind kind = ErrorKind::kInternal;
    try {
      jinja::Template t(c["template"].get<std::string>(), label + "#" + std::to_string(i));
      jinja::RenderOptions ro;
      if (c.contains("now") && !c["now"].is_null()) ro.now_unix = c["now"].get<int64_t>();
      got = t.render(c["vars"], ro);
      ok = true;
    } catch (const Error& e) {
      err = e.what();
      kind = e.kind();
    }
    const OracleResult& w = want[i];
    bool match = ok == w.ok && (!ok || got == w.out) &&
                 (ok || !w.raised || err.find(w.message) != std::string::npos);
    if (w.ok) ++st.rendered;
    else ++st.errors;
    if (!match) {
      ++st.mismatches;
      if (st.mismatches <= max_reports) {
        ADD_FAILURE() << label << " case " << i << " differs from jinja2\ntemplate: " << c["template"].dump()
                      << "\nvars: " << c["vars"].dump().substr(0, 600) << "\njinja2: "
                      << (w.ok ? "OK " + Json(w.out).dump() : "ERROR " + w.type + ": " + w.message)
                      << "\nours:   " << (ok ? "OK " + Json(got).dump() : "ERROR (" + std::string(error_kind_name(kind)) + ") " + err);
      }
    }
  }
  return st;
}

}  // namespace vlm::test
