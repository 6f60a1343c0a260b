// Minimal levelled logging to stderr. The level comes from set_log_level() (the CLI's -v/-q) or
// the VLMCHECK_LOG environment variable (error, warn, info, debug).
#pragma once

#include <string_view>

#include <fmt/format.h>

namespace vlm {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, std::string_view message);

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> f, Args&&... args) {
  if (level <= log_level()) log_message(level, fmt::format(f, std::forward<Args>(args)...));
}
#define VLM_LOG_ERROR(...) ::vlm::log(::vlm::LogLevel::kError, __VA_ARGS__)
#define VLM_LOG_WARN(...) ::vlm::log(::vlm::LogLevel::kWarn, __VA_ARGS__)
#define VLM_LOG_INFO(...) ::vlm::log(::vlm::LogLevel::kInfo, __VA_ARGS__)
#define VLM_LOG_DEBUG(...) ::vlm::log(::vlm::LogLevel::kDebug, __VA_ARGS__)

}  // namespace vlm
