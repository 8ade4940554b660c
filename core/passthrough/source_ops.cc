// core/passthrough/source_ops.cc — the passthrough backend's helpers that
// act on the source (declared in core/passthrough/internal.h).
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/log.h"
#include "core/status_file.h"
#include "core/passthrough/internal.h"
#include "core/privileges.h"

namespace efuse::passthrough {

#ifndef SYS_fchmodat2
constexpr long SYS_fchmodat2 = 452;
#endif

Result<std::string> HandleOf(int fd) {
  struct {
    struct file_handle h;
    unsigned char bytes[MAX_HANDLE_SZ];
  } buf;
  buf.h.handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(fd, "", &buf.h, &mount_id, AT_EMPTY_PATH) != 0) return Errno::Last();
  std::string s(sizeof(int) + buf.h.handle_bytes, '\0');
  std::memcpy(s.data(), &buf.h.handle_type, sizeof(int));
  std::memcpy(s.data() + sizeof(int), buf.h.f_handle, buf.h.handle_bytes);
  return s;
}

int OpenByHandle(int mount_fd, const std::string& handle, int flags) {
  struct {
    struct file_handle h;
    unsigned char bytes[MAX_HANDLE_SZ];
  } buf;
  const size_t n = handle.size() - sizeof(int);
  buf.h.handle_bytes = static_cast<unsigned>(n);
  std::memcpy(&buf.h.handle_type, handle.data(), sizeof(int));
  std::memcpy(buf.h.f_handle, handle.data() + sizeof(int), n);
  return open_by_handle_at(mount_fd, &buf.h, flags | O_CLOEXEC);
}

bool HasCapability(int cap) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

bool HasInitialNamespaceCapability(int cap) {
  return HasCapability(cap) && InInitialUserNamespace();
}


int Chmod(int path_fd, uint32_t mode) {
  if (syscall(SYS_fchmodat2, path_fd, "", mode & 07777, AT_EMPTY_PATH) == 0) return 0;
  if (errno != ENOSYS) return errno;
  return fchmodat(AT_FDCWD, ProcPath(path_fd).c_str(), mode & 07777, 0) == 0 ? 0 : errno;
}

bool DropSuidgid(int fd, const RequestContext& ctx) {
  struct statx st;
  if (Statx(fd, &st) != 0) return false;
  const uint32_t kill = KilledSetIdBits(st.stx_mode, st.stx_gid, ctx);
  return kill != 0 && Chmod(fd, st.stx_mode & ~kill) == 0;
}

// The root of a private, detached clone of the mounts at and below `path`,
// all set noatime: every fd reached from it (by name or, through a mount fd
// of it, by handle) is on those mounts, so reads through it — the daemon's
// and the kernel's through a backing file registered from it — leave access
// times alone, as a noatime mount promises. -1 (logged) if refused.
int OpenNoatimeClone(const std::string& path) {
  int tree = static_cast<int>(open_tree(AT_FDCWD, path.c_str(),
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
  if (tree < 0) {
    Log(LogLevel::kWarning, "passthrough: noatime: cannot clone the mounts of '%s' (%s): reads may "
        "move the source's access times", path, std::strerror(errno));
    return -1;
  }
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_NOATIME;
  attr.attr_clr = MOUNT_ATTR__ATIME;
  if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) {
    Log(LogLevel::kWarning,
        "passthrough: noatime: cannot set the clone of '%s' noatime (%s): reads may move the "
        "source's access times",
        path, std::strerror(errno));
    close(tree);
    return -1;
  }
  return tree;  // an O_PATH fd of the clone's root; it keeps the clone alive
}

// Read/write loops: a short count from pread/pwrite is retried until the
// request is done or the file ends.
Result<size_t> PreadAll(int fd, std::span<uint8_t> out, uint64_t offset) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return Errno::Last();
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

// O_DIRECT wants aligned memory; WRITE data sits after the request headers.
std::span<const uint8_t> AlignedCopy(std::span<const uint8_t> data) {
  struct Free {
    void operator()(void* p) const { free(p); }
  };
  // One per worker thread, grown to the largest write; freed with the thread.
  thread_local std::unique_ptr<void, Free> buf;
  thread_local size_t cap = 0;
  if (cap < data.size()) {
    const size_t want = (data.size() + 4095) & ~size_t{4095};
    void* p = nullptr;
    if (posix_memalign(&p, 4096, want) != 0) return data;
    buf.reset(p);
    cap = want;
  }
  std::memcpy(buf.get(), data.data(), data.size());
  return {static_cast<const uint8_t*>(buf.get()), data.size()};
}

}  // namespace efuse::passthrough
