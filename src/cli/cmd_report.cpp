// `vlmcheck report --from results.jsonl [--output-dir D]`: re-renders every report from the records.
#include <memory>

#include "check/sweep.h"
#include "cli/command.h"

namespace vlm::cli {

void register_report(CLI::App& root, Action& action) {
  auto* cmd = root.add_subcommand("report", "Re-render every report from results.jsonl");
  auto from = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--from", *from, "results.jsonl of a run")->required();
  cmd->add_option("--output-dir", *out, "Where to write the reports (default: the JSONL's folder)");
  cmd->callback([&action, from, out] { action = [from, out] { return check::run_report(*from, *out); }; });
}

}  // namespace vlm::cli
