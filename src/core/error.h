// Typed errors for library code. Library code throws these (never aborts or exits); only src/cli
// decides exit codes, from ErrorKind. Messages name the file/field/op and expected vs actual.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace vlm {

enum class ErrorKind {
  kInvalidArgument,  // a caller-supplied value is out of range (flags, API arguments)
  kNotFound,         // a file, model, tensor or key that should exist does not
  kIo,               // the OS refused a read/write/map
  kFormat,           // a file exists but its content is malformed (safetensors, JSON, images)
  kUnsupported,      // valid input that vlmcheck does not handle (yet)
  kResource,         // out of memory, too large, limits exceeded
  kCancelled,        // stopped by the user or a timeout
  kInternal,         // a bug: an invariant of our own code broke
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message) : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// throw_error(kFormat, "{}: header length {} exceeds file size {}", path, n, size)
template <typename... Args>
[[noreturn]] void throw_error(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(kind, fmt::format(f, std::forward<Args>(args)...));
}

// VLM_CHECK(cond, kind, fmt, ...) throws when cond is false.
#define VLM_CHECK(cond, kind, ...)                       \
  do {                                                   \
    if (!(cond)) ::vlm::throw_error(kind, __VA_ARGS__);  \
  } while (0)

}  // namespace vlm
