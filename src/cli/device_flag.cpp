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

DeviceChoice choose_device(const std::string& flag, bool quantized_kv_cache) {
  DeviceChoice c;
  c.device = resolve_device(flag);
  if (c.device != Device::kCpu && quantized_kv_cache) {
    if (flag != "auto")
      throw_error(ErrorKind::kInvalidArgument,
                  "--kv-bits: the quantized KV cache runs on the cpu only; drop --kv-bits or use --device cpu");
    c.device = Device::kCpu;
    c.warnings.push_back("--device auto: running on the cpu because --kv-bits (the quantized KV cache) is cpu-only");
  }
  return c;
}

}  // namespace vlm::cli
