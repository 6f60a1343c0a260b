// Exit codes of the vlmcheck binary (all below 128; 130 is reserved for Ctrl-C as shells use it).
#pragma once

#include "core/error.h"

namespace vlm::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;      // runtime failure (I/O, internal)
constexpr int kExitUsage = 2;        // bad flags or argument values
constexpr int kExitNotFound = 3;     // model, file or snapshot not found
constexpr int kExitBadInput = 4;     // a file exists but is malformed (safetensors, config, image)
constexpr int kExitUnsupported = 5;  // valid input vlmcheck cannot handle, or a command not built yet
constexpr int kExitResource = 6;     // out of memory / limits
constexpr int kExitInterrupted = 130;

inline int exit_code_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return kExitUsage;
    case ErrorKind::kNotFound: return kExitNotFound;
    case ErrorKind::kFormat: return kExitBadInput;
    case ErrorKind::kUnsupported: return kExitUnsupported;
    case ErrorKind::kResource: return kExitResource;
    case ErrorKind::kCancelled: return kExitInterrupted;
    case ErrorKind::kIo:
    case ErrorKind::kInternal: return kExitFailure;
  }
  return kExitFailure;
}

}  // namespace vlm::cli
