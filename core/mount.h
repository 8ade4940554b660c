// core/mount.h — mounting and unmounting a FUSE file system with the syscalls.
//
// Owns: the kernel mount options of a FUSE mount, the new mount API
// (fsopen/fsconfig/fsmount/move_mount) with a fallback to mount(2) on
// kernels without it, and unmounting (lazy when busy). No libfuse: with
// CAP_SYS_ADMIN in the user namespace that owns the mount namespace (root,
// or root of `unshare -Urm`) the daemon mounts itself; without it, Debian's
// setuid fusermount3 mounts and passes the /dev/fuse descriptor back over
// _FUSE_COMMFD, and unmounts ("fusermount3" as the method). Stateless
// functions; thread-safe (fusermount3 runs in a forked child).
#ifndef EFUSE_CORE_MOUNT_H_
#define EFUSE_CORE_MOUNT_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace efuse {

struct MountOptions {
  std::string mountpoint;
  std::string fsname = "efuse";   // "source" in /proc/mounts
  std::string subtype = "efuse";  // type shows as fuse.<subtype>
  uint32_t rootmode = 040755;     // S_IFDIR | permissions of the root
  uid_t user_id = 0;              // owner of the connection (who may use it without allow_other)
  gid_t group_id = 0;
  bool allow_other = false;
  bool default_permissions = false;
  bool read_only = false;
  bool nosuid = false;
  bool nodev = false;
  bool noexec = false;
  bool noatime = false;
  bool strictatime = false;  // (relatime, the kernel's default, otherwise)
  bool nodiratime = false;
  bool lazytime = false;     // superblock flags, as mount(8) sets them
  bool synchronous = false;  // -o sync
  bool dirsync = false;
  uint32_t max_read = 0;  // 0: kernel default
};

// Parses "-o" style options ("allow_other,ro,max_read=131072,fsname=x") into
// `opts`. Unknown options are an InvalidArgument error that names them.
absl::Status ParseMountOptions(const std::vector<std::string>& options, MountOptions* opts);

// Opens /dev/fuse and mounts it at opts.mountpoint. Returns the device fd,
// which the caller owns. `method` (optional) receives "fsopen", "mount(2)"
// or "fusermount3".
absl::StatusOr<int> MountFuse(const MountOptions& opts, std::string* method = nullptr);

// Unmounts `mountpoint`; if it is busy, detaches it lazily (the connection
// then lives on until the last open file closes). Sets `*lazy` accordingly.
absl::Status UnmountFuse(const std::string& mountpoint, bool* lazy = nullptr);

// A private tmpfs instance (fsopen/fsmount), attached nowhere: only the
// returned directory fd of its root reaches it (files inside stay
// reachable by file handle through it, after their own fds are closed).
// It lives until the last fd of it closes. memfs keeps file data there,
// so the kernel's page cache serves it (FUSE passthrough).
struct PrivateTmpfsOptions {
  uint64_t size = 0;        // bytes (tmpfs size=); ENOSPC past it
  uint64_t max_inodes = 0;  // tmpfs nr_inodes=
  uint32_t root_mode = 0755;
  uid_t root_uid = 0;
  gid_t root_gid = 0;
  bool noatime = false;  // the FUSE mount's -o noatime, kept by its files
};
absl::StatusOr<int> MountPrivateTmpfs(const PrivateTmpfsOptions& opts);

// The device number (st_dev) of the mount at `mountpoint`, read from
// /proc/self/mountinfo: no request reaches the FUSE daemon (stat() would
// send GETATTR, which deadlocks before INIT is served). Its minor is the
// connection id under /sys/fs/fuse/connections.
absl::StatusOr<dev_t> MountDevice(const std::string& mountpoint);

// Mounts the fusectl file system on /sys/fs/fuse/connections if it is not
// there (needed to abort a connection). Best effort.
void EnsureFusectl();

// True if /proc/self/mountinfo lists `path` (an absolute, resolved path) as
// a mount point. Sends nothing to a FUSE daemon.
bool IsMountPoint(const std::string& path);

}  // namespace efuse

#endif  // EFUSE_CORE_MOUNT_H_
