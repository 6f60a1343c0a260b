// vlmcheck entry point: builds the CLI11 command tree from the cmd_*.cpp registrations, runs the
// chosen subcommand, and maps library errors to exit codes with a one-line message on stderr.
#include <cstdio>
#include <exception>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/exit_codes.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/backend.h"

namespace vlm::cli {

int not_built(const char* command, const char* what) {
  fmt::print(stderr, "vlmcheck {}: not built yet: {}\n", command, what);
  return kExitUnsupported;
}

namespace {

std::string version_text() {
  std::string cuda = cuda_compiled() ? "cuda" : "no cuda";
  return fmt::format("vlmcheck {} ({}, {}, {})", VLMCHECK_VERSION, VLMCHECK_BUILD_TYPE, VLMCHECK_COMPILER, cuda);
}

int real_main(int argc, char** argv) {
  CLI::App app{"vlmcheck: run every vision-language model in your Hugging Face cache on your images, "
               "and report what each said, how fast it was and what failed"};
  app.name("vlmcheck");
  app.set_version_flag("--version", version_text());
  app.require_subcommand(1);
  bool verbose = false, quiet = false;
  app.add_flag("-v,--verbose", verbose, "More log output (debug)");
  app.add_flag("-q,--quiet", quiet, "Only errors on stderr");

  Action action;
  register_run(app, action);
  register_generate(app, action);
  register_tokenize(app, action);
  register_models(app, action);
  register_report(app, action);
  register_bench(app, action);
  register_worker(app, action);
  register_convert(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (verbose) set_log_level(LogLevel::kDebug);
  if (quiet) set_log_level(LogLevel::kError);
  if (!action) return not_built("", "no action registered for this subcommand");
  return action();
}

}  // namespace
}  // namespace vlm::cli

int main(int argc, char** argv) {
  try {
    return vlm::cli::real_main(argc, argv);
  } catch (const vlm::Error& e) {
    std::fprintf(stderr, "vlmcheck: error: %s\n", e.what());
    return vlm::cli::exit_code_for(e.kind());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "vlmcheck: error: out of memory\n");
    return vlm::cli::kExitResource;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlmcheck: internal error: %s\n", e.what());
    return vlm::cli::kExitFailure;
  }
}
