// Subcommands whose engine has not landed yet. Each keeps its place in --help and answers with a
// clear "not built yet" and a non-zero exit. As a subcommand lands, its registration moves to its
// own cmd_<name>.cpp and leaves this file.
#include "cli/command.h"

namespace vlm::cli {

void register_run(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("run", "Check every cached VLM (or --models) on an image and write reports");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("run", "the checker (issue: The checker)"); }; });
}

void register_generate(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("generate", "Generate text from one model for a prompt and images");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("generate", "the language-model engine"); }; });
}

void register_tokenize(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("tokenize", "Render the chat template and print the prompt token ids");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("tokenize", "tokenizers and chat templates"); }; });
}

void register_report(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("report", "Re-render every report from results.jsonl");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("report", "the report renderers"); }; });
}

void register_bench(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("bench", "Prompt/decode tokens/s, TTFT, load time and memory vs the roofline");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("bench", "the engine benchmarks"); }; });
}

void register_models(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("models", "List the models found in the Hugging Face cache");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("models", "cache discovery"); }; });
}

void register_worker(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("worker", "Internal: run one model's job for `vlmcheck run`");
  cmd->group("");  // hidden from --help
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return not_built("worker", "the checker's worker mode"); }; });
}

}  // namespace vlm::cli
