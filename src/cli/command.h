// The subcommand seam of the CLI: each cmd_<name>.cpp registers its flags on a CLI11 subcommand
// and, when that subcommand is chosen, sets `action` to the work to run after parsing. main.cpp
// runs the action and turns exceptions into exit codes (exit_codes.h). Argument parsing only
// lives here; the work itself is in the library layers.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace vlm::cli {

using Action = std::function<int()>;

void register_run(CLI::App& root, Action& action);
void register_generate(CLI::App& root, Action& action);
void register_tokenize(CLI::App& root, Action& action);
void register_models(CLI::App& root, Action& action);
void register_report(CLI::App& root, Action& action);
void register_bench(CLI::App& root, Action& action);
void register_worker(CLI::App& root, Action& action);
void register_convert(CLI::App& root, Action& action);

// For subcommands whose engine part has not landed yet: print why and return kExitUnsupported.
int not_built(const char* command, const char* what);

}  // namespace vlm::cli
