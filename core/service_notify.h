// core/service_notify.h — telling a service manager how the daemon is doing.
//
// Owns: the sd_notify(3) protocol, written from its documentation (no
// libsystemd): one datagram of "KEY=VALUE" lines to the AF_UNIX socket named
// by $NOTIFY_SOCKET (a path, or an abstract name written "@name"), with the
// sender's credentials. The session sends READY=1 (with STATUS= and
// MAINPID=) once INIT is answered and a transport serves, STOPPING=1 when
// it unmounts, and WATCHDOG=1 every half of $WATCHDOG_USEC when the manager
// asks for it ($WATCHDOG_PID, if set, must be ours).
//
// Thread-safety: Send may be called from any thread (one sendmsg each).
#ifndef EFUSE_CORE_SERVICE_NOTIFY_H_
#define EFUSE_CORE_SERVICE_NOTIFY_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace efuse {

// Descriptors handed to this process (systemd's socket activation and fd
// store protocol, which efused's supervisor speaks too): LISTEN_PID names
// this process, LISTEN_FDS counts fds from 3, LISTEN_FDNAMES names them
// (":"-separated; a name may repeat). In order, with their names; each
// made close-on-exec, and the variables removed so that no child takes
// them for its own.
std::vector<std::pair<std::string, int>> TakeListenFds();

class ServiceNotifier {
 public:
  // From $NOTIFY_SOCKET (and $WATCHDOG_USEC/$WATCHDOG_PID); null when the
  // daemon was not started by a manager that listens.
  static std::unique_ptr<ServiceNotifier> FromEnvironment();
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // Sends `message` ("READY=1\nSTATUS=...") as one datagram.
  absl::Status Send(std::string_view message) const;
  // The same with descriptors attached (SCM_RIGHTS): "FDSTORE=1\nFDNAME=x"
  // puts them in the manager's fd store, handed back at the next start.
  absl::Status SendWithFds(std::string_view message, std::span<const int> fds) const;
  // The watchdog period the manager wants pings within (0: none).
  uint64_t watchdog_usec() const { return watchdog_usec_; }
  const std::string& socket_name() const { return name_; }

 private:
  ServiceNotifier(int fd, std::string name, uint64_t watchdog_usec)
      : fd_(fd), name_(std::move(name)), watchdog_usec_(watchdog_usec) {}
  int fd_;
  std::string name_;  // as given in $NOTIFY_SOCKET
  uint64_t watchdog_usec_;
};

}  // namespace efuse

#endif  // EFUSE_CORE_SERVICE_NOTIFY_H_
