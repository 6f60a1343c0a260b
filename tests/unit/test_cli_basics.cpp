// The vlmcheck binary as a user runs it: --version, --help, unknown flags, unbuilt subcommands.
#include <gtest/gtest.h>

#include "support/test_support.h"

using vlm::test::run_vlmcheck;

TEST(Cli, VersionAndHelp) {
  auto v = run_vlmcheck({"--version"});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_NE(v.out.find("vlmcheck 0."), std::string::npos);
  auto h = run_vlmcheck({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  for (const char* sub : {"run", "generate", "tokenize", "models", "report", "bench"})
    EXPECT_NE(h.out.find(sub), std::string::npos) << sub;
}

TEST(Cli, UsageErrorsExitTwo) {
  auto r = run_vlmcheck({"--no-such-flag"});
  EXPECT_EQ(r.exit_code, 2);
  auto none = run_vlmcheck({});
  EXPECT_EQ(none.exit_code, 2);
}
