#include "core/service_notify.h"

#include <stddef.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace efuse {

std::unique_ptr<ServiceNotifier> ServiceNotifier::FromEnvironment() {
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || (name[0] != '/' && name[0] != '@') || name[1] == '\0') return nullptr;
  if (std::strlen(name) >= sizeof(sockaddr_un::sun_path)) return nullptr;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  uint64_t watchdog = 0;
  if (const char* usec = std::getenv("WATCHDOG_USEC"); usec != nullptr) {
    uint64_t pid = 0;
    const char* for_pid = std::getenv("WATCHDOG_PID");
    // A watchdog meant for another process of the service is not ours.
    if (for_pid == nullptr || (absl::SimpleAtoi(for_pid, &pid) && pid == static_cast<uint64_t>(getpid()))) {
      if (!absl::SimpleAtoi(usec, &watchdog)) watchdog = 0;
    }
  }
  return std::unique_ptr<ServiceNotifier>(new ServiceNotifier(fd, name, watchdog));
}

ServiceNotifier::~ServiceNotifier() { close(fd_); }

std::vector<std::pair<std::string, int>> TakeListenFds() {
  std::vector<std::pair<std::string, int>> fds;
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  const char* names = std::getenv("LISTEN_FDNAMES");
  uint64_t for_pid = 0, n = 0;
  if (pid != nullptr && count != nullptr && absl::SimpleAtoi(pid, &for_pid) &&
      for_pid == static_cast<uint64_t>(getpid()) && absl::SimpleAtoi(count, &n) && n <= 65536) {
    std::vector<std::string> named = absl::StrSplit(names != nullptr ? names : "", ':');
    for (uint64_t i = 0; i < n; ++i) {
      const int fd = static_cast<int>(3 + i);
      fcntl(fd, F_SETFD, FD_CLOEXEC);
      fds.emplace_back(i < named.size() && !named[i].empty() ? named[i] : absl::StrCat("fd", i), fd);
    }
  }
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  return fds;
}

absl::Status ServiceNotifier::Send(std::string_view message) const { return SendWithFds(message, {}); }

absl::Status ServiceNotifier::SendWithFds(std::string_view message, std::span<const int> fds) const {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, name_.data(), name_.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
  if (name_[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract: the name's bytes after a NUL, no terminator
  } else {
    ++len;  // a path: with its NUL
  }
  iovec iov{const_cast<char*>(message.data()), message.size()};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    // The descriptors ride along as SCM_RIGHTS (FDSTORE=1).
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  if (sendmsg(fd_, &msg, MSG_NOSIGNAL) < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("sending to NOTIFY_SOCKET ", name_));
  }
  return absl::OkStatus();
}

}  // namespace efuse
