// core/transport.h — how requests reach the dispatcher.
//
// Owns: the interface between the session and a request transport (blocking
// /dev/fuse reads today; io_uring transports implement the same interface).
// A transport owns its worker threads, their fds and buffers; it serves until
// the kernel ends the connection (ENODEV after unmount or abort).
#ifndef EFUSE_CORE_TRANSPORT_H_
#define EFUSE_CORE_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/dispatcher.h"

namespace efuse {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view Name() const = 0;
  // Starts the workers on the session's /dev/fuse fd (already past INIT).
  // `on_exit` runs once when the last worker has stopped.
  virtual absl::Status Start(int session_fd, Dispatcher* dispatcher,
                             std::function<void()> on_exit) = 0;
  // Waits for every worker to stop.
  virtual void Join() = 0;
  // INIT flags this transport needs the kernel to grant (asked for before
  // INIT; Start fails when the kernel did not grant them).
  virtual uint64_t InitFlags() const { return 0; }
  // "key: value" lines for the status file (per-queue counters and the
  // like). Called from the session thread while workers run: lock-free reads.
  virtual void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const {}
};

}  // namespace efuse

#endif  // EFUSE_CORE_TRANSPORT_H_
