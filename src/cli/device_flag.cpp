// --device registration and resolution shared by generate, bench and run (see device_flag.h).
#include "cli/device_flag.h"

#include <cstdlib>

#include "core/error.h"
#include "generate/generator.h"

namespace vlm::cli {

CLI::Option* add_device_flag(CLI::App* cmd, std::string& device, const std::string& help) {
  if (const char* env = std::getenv("VLMCHECK_DEVICE"); env != nullptr && *env != '\0') device = env;
  // CLI11 checks only a value given on the command line; a bad VLMCHECK_DEVICE (the default) reaches
  // resolve_device, which refuses it as a usage error naming the value.
  return cmd->add_option("--device", device, help + ". Default: VLMCHECK_DEVICE, else auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
}

DeviceChoice choose_device(const std::string& flag) {
  DeviceChoice c;
  c.device = resolve_device(flag);
  return c;
}

}  // namespace vlm::cli
