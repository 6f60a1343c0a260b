// Names of error kinds, used in CLI messages and JSON error records.
#include "core/error.h"

namespace vlm {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid_argument";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kIo: return "io";
    case ErrorKind::kFormat: return "format";
    case ErrorKind::kUnsupported: return "unsupported";
    case ErrorKind::kResource: return "resource";
    case ErrorKind::kCancelled: return "cancelled";
    case ErrorKind::kInternal: return "internal";
  }
  return "unknown";
}

}  // namespace vlm
