// Logging sink: one line per message on stderr, serialised by a mutex.
#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace vlm {

namespace {
LogLevel initial_level() {
  const char* env = std::getenv("VLMCHECK_LOG");
  if (!env) return LogLevel::kWarn;
  if (!std::strcmp(env, "error")) return LogLevel::kError;
  if (!std::strcmp(env, "info")) return LogLevel::kInfo;
  if (!std::strcmp(env, "debug")) return LogLevel::kDebug;
  return LogLevel::kWarn;
}
std::atomic<int>& level_slot() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}
}  // namespace

void set_log_level(LogLevel level) { level_slot().store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(level_slot().load()); }

void log_message(LogLevel level, std::string_view message) {
  static std::mutex mu;
  static const char* names[] = {"error", "warning", "info", "debug"};
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "vlmcheck %s: %.*s\n", names[static_cast<int>(level)], static_cast<int>(message.size()),
               message.data());
}

}  // namespace vlm
