// The --device flag every command that runs a language model shares (generate, bench, run): its
// registration (cpu | cuda | auto; VLMCHECK_DEVICE sets the default, else auto) and its resolution for
// a request, in one place so the commands pick a device by the same rule.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/tensor.h"

namespace vlm::cli {

// Registers --device on `cmd`, bound to `device`, after setting its default from VLMCHECK_DEVICE (when
// set and non-empty). `help` is the flag's description; the default's origin is appended.
CLI::Option* add_device_flag(CLI::App* cmd, std::string& device, const std::string& help);

struct DeviceChoice {
  Device device = Device::kCpu;
  std::vector<std::string> warnings;  // why auto picked what it picked, when that is not the obvious choice
};

// Resolves a --device value for a request, before any weights load: resolve_device's rule (auto = cuda
// when the CUDA backend can run, else cpu; cuda without a usable GPU throws Error(kUnsupported) with
// the backend's reason; another name throws Error(kInvalidArgument)). Every KV cache kind runs on
// every device (the quantized one too), so no flag narrows the choice today; `warnings` is where a
// future restriction would say why auto picked what it picked.
DeviceChoice choose_device(const std::string& flag);

}  // namespace vlm::cli
