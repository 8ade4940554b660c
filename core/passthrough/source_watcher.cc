// core/passthrough/source_watcher.cc — fanotify on the source's directories.
#include "core/passthrough/source_watcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

namespace efuse::passthrough {

namespace {

constexpr uint64_t kMask = FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ATTRIB |
                           FAN_CLOSE_WRITE | FAN_DELETE_SELF | FAN_ONDIR | FAN_EVENT_ON_CHILD;

// fanotify_mark refuses O_PATH fds; the /proc link reaches the same inode.
int Mark(int fan_fd, unsigned flags, int fd) {
  char path[32];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  return fanotify_mark(fan_fd, flags, kMask, AT_FDCWD, path) == 0 ? 0 : errno;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SourceWatcher>> SourceWatcher::Start(Callback callback) {
  int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_CLOEXEC | FAN_NONBLOCK,
                          O_RDONLY | O_CLOEXEC);
  if (fan < 0) return absl::ErrnoToStatus(errno, "fanotify_init");
  int stop = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop < 0) {
    int err = errno;
    close(fan);
    return absl::ErrnoToStatus(err, "eventfd");
  }
  std::unique_ptr<SourceWatcher> w(new SourceWatcher(fan, stop, std::move(callback)));
  w->thread_ = std::thread(&SourceWatcher::Loop, w.get());
  return w;
}

SourceWatcher::SourceWatcher(int fan_fd, int stop_fd, Callback callback)
    : fan_fd_(fan_fd), stop_fd_(stop_fd), callback_(std::move(callback)) {}

SourceWatcher::~SourceWatcher() {
  uint64_t one = 1;
  ssize_t unused = write(stop_fd_, &one, sizeof(one));
  (void)unused;
  if (thread_.joinable()) thread_.join();
  close(fan_fd_);
  close(stop_fd_);
}

int SourceWatcher::Watch(int fd) { return Mark(fan_fd_, FAN_MARK_ADD, fd); }
int SourceWatcher::Unwatch(int fd) { return Mark(fan_fd_, FAN_MARK_REMOVE, fd); }

void SourceWatcher::Loop() {
  const pid_t self = getpid();
  std::vector<char> buf(64 * 1024);
  for (;;) {
    pollfd pfds[2] = {{fan_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(pfds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (pfds[1].revents != 0) return;
    ssize_t n = read(fan_fd_, buf.data(), buf.size());
    if (n <= 0) continue;
    // Records are parsed by copying fields out (the buffer is bytes).
    for (size_t off = 0; off + sizeof(fanotify_event_metadata) <= static_cast<size_t>(n);) {
      fanotify_event_metadata meta;
      std::memcpy(&meta, buf.data() + off, sizeof(meta));
      if (meta.event_len < sizeof(meta) || off + meta.event_len > static_cast<size_t>(n)) break;
      const char* end = buf.data() + off + meta.event_len;
      // An overflowed queue lost events: nothing to point at.
      if ((meta.mask & FAN_Q_OVERFLOW) == 0 && meta.pid != self) {
        for (const char* p = buf.data() + off + meta.metadata_len;
             p + sizeof(fanotify_event_info_header) <= end;) {
          fanotify_event_info_header hdr;
          std::memcpy(&hdr, p, sizeof(hdr));
          if (hdr.len < sizeof(hdr) || p + hdr.len > end) break;
          const bool named = hdr.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME;
          if (named || hdr.info_type == FAN_EVENT_INFO_TYPE_DFID ||
              hdr.info_type == FAN_EVENT_INFO_TYPE_FID) {
            // header, fsid, then struct file_handle (+ the name).
            const char* fh = p + sizeof(hdr) + sizeof(__kernel_fsid_t);
            uint32_t bytes;
            int32_t type;
            std::memcpy(&bytes, fh, 4);
            std::memcpy(&type, fh + 4, 4);
            const char* f_handle = fh + 8;
            if (f_handle + bytes <= p + hdr.len) {
              SourceEvent ev;
              ev.mask = meta.mask;
              ev.dir_handle.resize(sizeof(int) + bytes);
              std::memcpy(ev.dir_handle.data(), &type, sizeof(int));
              std::memcpy(ev.dir_handle.data() + sizeof(int), f_handle, bytes);
              if (named) {
                const char* name = f_handle + bytes;
                ev.name.assign(name, strnlen(name, static_cast<size_t>(p + hdr.len - name)));
              } else {
                ev.name = ".";
              }
              callback_(ev);
            }
          }
          p += hdr.len;
        }
      }
      if (meta.fd >= 0) close(meta.fd);
      off += meta.event_len;
    }
  }
}

}  // namespace efuse::passthrough
