#include "core/log.h"

#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace efuse {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<bool> g_syslog{false};
// Set once, before serving starts (SetLogName's contract), read by every thread.
char g_name[64] = "efused";
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "?";
}
}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
void SetLogName(std::string_view name) {
  const size_t n = std::min(name.size(), sizeof(g_name) - 1);
  std::memcpy(g_name, name.data(), n);
  g_name[n] = '\0';
}
bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

void LogToSyslog() {
  openlog(g_name, LOG_PID | LOG_NDELAY, LOG_DAEMON);
  g_syslog.store(true);
}

void LogLine(LogLevel level, std::string_view message) {
  if (g_syslog.load(std::memory_order_relaxed)) {
    const int priority = level == LogLevel::kError     ? LOG_ERR
                         : level == LogLevel::kWarning ? LOG_WARNING
                         : level == LogLevel::kInfo    ? LOG_INFO
                                                       : LOG_DEBUG;
    syslog(priority, "%.*s", static_cast<int>(message.size()), message.data());
    return;
  }
  std::string line = absl::StrFormat("%s: %s: %s\n", g_name, LevelName(level), message);
  // One write() per line so lines from different threads never interleave.
  ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
  (void)unused;
}

bool RateLimiter::Allow(uint64_t* suppressed) {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  int64_t now = ts.tv_sec;
  int64_t w = window_.load(std::memory_order_relaxed);
  if (w != now && window_.compare_exchange_strong(w, now)) in_window_.store(0);
  if (in_window_.fetch_add(1, std::memory_order_relaxed) < per_second_) {
    *suppressed = dropped_.exchange(0);
    return true;
  }
  dropped_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

}  // namespace efuse
