// core/log.h — one-line logging to stderr or syslog, with rate limiting for
// the data plane.
//
// Owns: the daemon's log format ("efused: LEVEL: message"), the global
// verbosity, and RateLimiter, which keeps a flood of bad requests from
// becoming a flood of log lines. Thread-safe.
#ifndef EFUSE_CORE_LOG_H_
#define EFUSE_CORE_LOG_H_

#include <atomic>
#include <cstdint>
#include <string_view>

#include "absl/strings/str_format.h"

namespace efuse {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
// The name lines start with ("efused" unless set): a program built on
// libefuse logs under its own. Call it before any thread logs.
void SetLogName(std::string_view name);
// From now on, lines go to syslog (the journal, under systemd) as
// "efused[PID]: message" at the matching priority, instead of stderr.
void LogToSyslog();
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, std::string_view message);

template <typename... Args>
void Log(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) LogLine(level, absl::StrFormat(format, args...));
}

// Allows `per_second` events per wall-clock second and counts the rest, so
// the next allowed line can say how many were suppressed. Lock-free.
class RateLimiter {
 public:
  explicit RateLimiter(uint32_t per_second) : per_second_(per_second) {}
  // True if this event may be logged; `*suppressed` gets the number of
  // events dropped since the last allowed one.
  bool Allow(uint64_t* suppressed);

 private:
  const uint32_t per_second_;
  std::atomic<int64_t> window_{0};
  std::atomic<uint32_t> in_window_{0};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace efuse

#endif  // EFUSE_CORE_LOG_H_
