// Subcommands whose engine has not landed yet. Each keeps its place in --help and answers with a
// clear "not built yet" and a non-zero exit. As a subcommand lands, its registration moves to its
// own cmd_<name>.cpp and leaves this file.
#include "cli/command.h"

namespace vlm::cli {

void register_tokenize(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("tokenize", "Render the chat template and print the prompt token ids");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("tokenize", "tokenizers and chat templates"); }; });
}

void register_bench(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("bench", "Prompt/decode tokens/s, TTFT, load time and memory vs the roofline");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("bench", "the engine benchmarks"); }; });
}

}  // namespace vlm::cli
