#include "core/mount.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <climits>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace efuse {

namespace {

absl::Status ErrnoError(int err, const std::string& what) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(what, ": ", std::strerror(err)));
}

// Thin wrappers: glibc 2.36 declares these, but calling the syscalls keeps
// us independent of which glibc headers are installed.
int FsOpen(const char* fs, unsigned flags) { return static_cast<int>(syscall(SYS_fsopen, fs, flags)); }
int FsConfig(int fd, unsigned cmd, const char* key, const void* value, int aux) {
  return static_cast<int>(syscall(SYS_fsconfig, fd, cmd, key, value, aux));
}
int FsMount(int fd, unsigned flags, unsigned attrs) {
  return static_cast<int>(syscall(SYS_fsmount, fd, flags, attrs));
}
int MoveMount(int from_dfd, const char* from, int to_dfd, const char* to, unsigned flags) {
  return static_cast<int>(syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags));
}

std::vector<std::pair<std::string, std::string>> KernelParams(const MountOptions& o, int fd) {
  std::vector<std::pair<std::string, std::string>> p = {
      {"fd", std::to_string(fd)},
      {"rootmode", absl::StrFormat("%o", o.rootmode)},
      {"user_id", std::to_string(o.user_id)},
      {"group_id", std::to_string(o.group_id)},
  };
  if (o.allow_other) p.push_back({"allow_other", ""});
  if (o.default_permissions) p.push_back({"default_permissions", ""});
  if (o.max_read != 0) p.push_back({"max_read", std::to_string(o.max_read)});
  return p;
}

// Returns 0, or the errno; `*stage` names the failing call.
int MountWithFsopen(const MountOptions& o, int fd, std::string* stage) {
  int fsfd = FsOpen("fuse", FSOPEN_CLOEXEC);
  if (fsfd < 0) {
    *stage = "fsopen(fuse)";
    return errno;
  }
  int err = 0;
  auto fail = [&](std::string what) {
    err = errno;
    *stage = std::move(what);
    close(fsfd);
    return err;
  };
  for (const auto& [key, value] : KernelParams(o, fd)) {
    int rc = value.empty() ? FsConfig(fsfd, FSCONFIG_SET_FLAG, key.c_str(), nullptr, 0)
                           : FsConfig(fsfd, FSCONFIG_SET_STRING, key.c_str(), value.c_str(), 0);
    if (rc < 0) return fail("fsconfig(" + key + ")");
  }
  if (FsConfig(fsfd, FSCONFIG_SET_STRING, "source", o.fsname.c_str(), 0) < 0)
    return fail("fsconfig(source)");
  if (!o.subtype.empty() &&
      FsConfig(fsfd, FSCONFIG_SET_STRING, "subtype", o.subtype.c_str(), 0) < 0)
    return fail("fsconfig(subtype)");
  if (o.read_only && FsConfig(fsfd, FSCONFIG_SET_FLAG, "ro", nullptr, 0) < 0)
    return fail("fsconfig(ro)");
  // Superblock flags mount(8) would pass as MS_* (the VFS parses them).
  for (const auto& [on, name] : {std::pair{o.synchronous, "sync"}, std::pair{o.dirsync, "dirsync"},
                                 std::pair{o.lazytime, "lazytime"}}) {
    if (on && FsConfig(fsfd, FSCONFIG_SET_FLAG, name, nullptr, 0) < 0) {
      return fail(std::string("fsconfig(") + name + ")");
    }
  }
  if (FsConfig(fsfd, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0)
    return fail("fsconfig(create)");
  unsigned attrs = 0;
  if (o.read_only) attrs |= MOUNT_ATTR_RDONLY;
  if (o.nosuid) attrs |= MOUNT_ATTR_NOSUID;
  if (o.nodev) attrs |= MOUNT_ATTR_NODEV;
  if (o.noexec) attrs |= MOUNT_ATTR_NOEXEC;
  if (o.noatime) attrs |= MOUNT_ATTR_NOATIME;
  if (o.strictatime) attrs |= MOUNT_ATTR_STRICTATIME;
  if (o.nodiratime) attrs |= MOUNT_ATTR_NODIRATIME;
  int mfd = FsMount(fsfd, FSMOUNT_CLOEXEC, attrs);
  if (mfd < 0) return fail("fsmount");
  close(fsfd);
  if (MoveMount(mfd, "", AT_FDCWD, o.mountpoint.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0) {
    err = errno;
    *stage = "move_mount(" + o.mountpoint + ")";
    close(mfd);
    return err;
  }
  close(mfd);
  return 0;
}

int MountLegacy(const MountOptions& o, int fd, std::string* stage) {
  std::vector<std::string> parts;
  for (const auto& [key, value] : KernelParams(o, fd))
    parts.push_back(value.empty() ? key : key + "=" + value);
  unsigned long flags = MS_NODEV * o.nodev | MS_NOSUID * o.nosuid | MS_NOEXEC * o.noexec |
                        MS_RDONLY * o.read_only | MS_NOATIME * o.noatime |
                        MS_STRICTATIME * o.strictatime | MS_NODIRATIME * o.nodiratime |
                        MS_LAZYTIME * o.lazytime | MS_SYNCHRONOUS * o.synchronous |
                        MS_DIRSYNC * o.dirsync;
  std::string type = o.subtype.empty() ? "fuse" : "fuse." + o.subtype;
  if (mount(o.fsname.c_str(), o.mountpoint.c_str(), type.c_str(), flags,
            absl::StrJoin(parts, ",").c_str()) < 0) {
    *stage = "mount(2) on " + o.mountpoint;
    return errno;
  }
  return 0;
}

// Debian's setuid helper from fuse3, for users without CAP_SYS_ADMIN.
std::string FindFusermount() {
  for (const char* p : {"/usr/bin/fusermount3", "/bin/fusermount3"})
    if (access(p, X_OK) == 0) return p;
  return "";
}

// The -o words fusermount3 understands (it sets fd, rootmode, user_id and
// group_id itself, and always adds nosuid and nodev for users).
std::string FusermountOptions(const MountOptions& o) {
  std::vector<std::string> w = {"fsname=" + o.fsname};
  if (!o.subtype.empty()) w.push_back("subtype=" + o.subtype);
  if (o.allow_other) w.push_back("allow_other");
  if (o.default_permissions) w.push_back("default_permissions");
  if (o.max_read != 0) w.push_back("max_read=" + std::to_string(o.max_read));
  for (const auto& [on, name] :
       {std::pair{o.read_only, "ro"}, std::pair{o.nosuid, "nosuid"}, std::pair{o.nodev, "nodev"},
        std::pair{o.noexec, "noexec"}, std::pair{o.noatime, "noatime"},
        std::pair{o.strictatime, "strictatime"}, std::pair{o.nodiratime, "nodiratime"},
        std::pair{o.lazytime, "lazytime"}, std::pair{o.synchronous, "sync"},
        std::pair{o.dirsync, "dirsync"}}) {
    if (on) w.push_back(name);
  }
  return absl::StrJoin(w, ",");
}

// Runs fusermount3 with `args`. With `received_fd`, it is given a socket
// in _FUSE_COMMFD and the /dev/fuse descriptor it sends back is stored
// there (-1 if none came). Returns OK if it exited 0; otherwise an error
// carrying the last line it printed.
absl::Status RunFusermount(const std::vector<std::string>& args, int* received_fd) {
  const std::string helper = FindFusermount();
  if (helper.empty())
    return absl::FailedPreconditionError("no fusermount3 (Debian package fuse3) for a mount without CAP_SYS_ADMIN");
  int sock[2] = {-1, -1};
  if (received_fd != nullptr) {
    *received_fd = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sock) != 0) return ErrnoError(errno, "socketpair");
    fcntl(sock[0], F_SETFD, FD_CLOEXEC);
  }
  auto close_sock = [&] {
    for (int& fd : sock) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  };
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    close_sock();
    return ErrnoError(err, "pipe");
  }
  // Everything the child needs is built before fork (only exec follows).
  std::vector<std::string> argv_s = {helper};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string comm = "_FUSE_COMMFD=" + std::to_string(sock[1]);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "_FUSE_COMMFD=", 13) != 0) envp.push_back(*e);
  if (received_fd != nullptr) envp.push_back(comm.data());
  envp.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close_sock();
    close(err_pipe[0]);
    close(err_pipe[1]);
    return ErrnoError(err, "fork");
  }
  if (pid == 0) {
    dup2(err_pipe[1], STDERR_FILENO);
    dup2(err_pipe[1], STDOUT_FILENO);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(err_pipe[1]);
  if (received_fd != nullptr) {
    close(sock[1]);
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n;
    do n = recvmsg(sock[0], &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
          std::memcpy(received_fd, CMSG_DATA(c), sizeof(int));
      }
    }
    close(sock[0]);
  }
  std::string said;
  char buf[512];
  for (ssize_t n; (n = read(err_pipe[0], buf, sizeof(buf))) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    said.append(buf, static_cast<size_t>(n));
  }
  close(err_pipe[0]);
  int status = 0;
  pid_t waited;
  do waited = waitpid(pid, &status, 0);
  while (waited < 0 && errno == EINTR);
  if (waited != pid) {
    if (received_fd != nullptr && *received_fd >= 0) close(std::exchange(*received_fd, -1));
    return absl::PermissionDeniedError(absl::StrCat(helper, ": its exit status is lost (", std::strerror(errno), ")"));
  }
  while (!said.empty() && said.back() == '\n') said.pop_back();
  if (size_t nl = said.rfind('\n'); nl != std::string::npos) said = said.substr(nl + 1);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  if (received_fd != nullptr && *received_fd >= 0) {
    close(*received_fd);
    *received_fd = -1;
  }
  return absl::PermissionDeniedError(said.empty() ? helper + " failed" : said);
}

}  // namespace

absl::Status ParseMountOptions(const std::vector<std::string>& options, MountOptions* o) {
  for (const std::string& group : options) {
    for (absl::string_view opt : absl::StrSplit(group, ',', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(opt, absl::MaxSplits('=', 1));
      absl::string_view key = kv.first, value = kv.second;
      bool has_value = absl::StrContains(opt, '=');
      auto flag = [&](bool* field) {
        if (has_value) return false;
        *field = true;
        return true;
      };
      bool ok = true;
      if (key == "allow_other") ok = flag(&o->allow_other);
      else if (key == "default_permissions") ok = flag(&o->default_permissions);
      else if (key == "ro") ok = flag(&o->read_only);
      else if (key == "rw") o->read_only = false;
      else if (key == "nosuid") ok = flag(&o->nosuid);
      else if (key == "nodev") ok = flag(&o->nodev);
      else if (key == "noexec") ok = flag(&o->noexec);
      // One access-time mode; the last word wins, as with mount(8).
      else if (key == "noatime") {
        ok = flag(&o->noatime);
        o->strictatime = false;
      } else if (key == "strictatime") {
        ok = flag(&o->strictatime);
        o->noatime = false;
      } else if (key == "relatime" || key == "atime") {
        o->noatime = o->strictatime = false;
      }
      else if (key == "nodiratime") ok = flag(&o->nodiratime);
      else if (key == "diratime") o->nodiratime = false;
      else if (key == "lazytime") ok = flag(&o->lazytime);
      else if (key == "nolazytime") o->lazytime = false;
      else if (key == "sync") ok = flag(&o->synchronous);
      else if (key == "async") o->synchronous = false;
      else if (key == "dirsync") ok = flag(&o->dirsync);
      else if (key == "suid") o->nosuid = false;
      else if (key == "dev") o->nodev = false;
      else if (key == "exec") o->noexec = false;
      else if (key == "auto" || key == "noauto" || key == "nofail" || key == "_netdev" ||
               key == "user" || key == "users" || key == "nouser" || key == "owner" ||
               key == "group" || key == "defaults" || key == "comment" ||
               absl::StartsWith(key, "x-")) {
        // fstab's words (for mount(8) and systemd), nothing for the daemon.
      } else if (key == "max_read") {
        ok = has_value && absl::SimpleAtoi(value, &o->max_read);
      } else if (key == "fsname") {
        ok = has_value && !value.empty();
        o->fsname = std::string(value);
      } else if (key == "subtype") {
        ok = has_value;
        o->subtype = std::string(value);
      } else if (key == "user_id") {
        ok = has_value && absl::SimpleAtoi(value, &o->user_id);
      } else if (key == "group_id") {
        ok = has_value && absl::SimpleAtoi(value, &o->group_id);
      } else if (key == "rootmode") {
        char* end = nullptr;
        std::string v(value);
        o->rootmode = static_cast<uint32_t>(std::strtoul(v.c_str(), &end, 8));
        ok = has_value && !v.empty() && *end == '\0';
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown mount option '", opt, "'"));
      }
      if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad value in mount option '", opt, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> MountFuse(const MountOptions& opts, std::string* method) {
  struct stat st;
  if (stat(opts.mountpoint.c_str(), &st) != 0)
    return ErrnoError(errno, "mount point " + opts.mountpoint);
  if (!S_ISDIR(st.st_mode))
    return absl::InvalidArgumentError("mount point " + opts.mountpoint + " is not a directory");
  // Without CAP_SYS_ADMIN (in the user namespace that owns our mount
  // namespace) the kernel refuses the mount; fusermount3, setuid root,
  // mounts for us the way libfuse's users do.
  auto by_fusermount = [&](const std::string& why) -> absl::StatusOr<int> {
    int fd = -1;
    absl::Status s = RunFusermount({"-o", FusermountOptions(opts), "--", opts.mountpoint}, &fd);
    if (!s.ok()) return absl::PermissionDeniedError(absl::StrCat(why, "; fusermount3: ", s.message()));
    if (fd < 0) return absl::PermissionDeniedError(why + "; fusermount3 sent no /dev/fuse descriptor");
    if (method) *method = "fusermount3";
    return fd;
  };
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if ((err == EACCES || err == EPERM) && !FindFusermount().empty())
      return by_fusermount(absl::StrCat("open /dev/fuse: ", std::strerror(err)));
    return ErrnoError(err, "open /dev/fuse");
  }
  std::string stage;
  int err = MountWithFsopen(opts, fd, &stage);
  if (err == EPERM && !FindFusermount().empty()) {
    close(fd);
    return by_fusermount(absl::StrCat(stage, ": ", std::strerror(err)));
  }
  if (err == 0) {
    if (method) *method = "fsopen";
    return fd;
  }
  // ENOSYS: no new mount API (or filtered by seccomp); try the old call.
  if (err == ENOSYS) {
    err = MountLegacy(opts, fd, &stage);
    if (err == 0) {
      if (method) *method = "mount(2)";
      return fd;
    }
  }
  close(fd);
  return ErrnoError(err, stage);
}

absl::StatusOr<int> MountPrivateTmpfs(const PrivateTmpfsOptions& o) {
  int fsfd = FsOpen("tmpfs", FSOPEN_CLOEXEC);
  if (fsfd < 0) return ErrnoError(errno, "fsopen(tmpfs)");
  const std::pair<const char*, std::string> params[] = {
      {"size", std::to_string(o.size)},
      {"nr_inodes", std::to_string(o.max_inodes)},
      {"mode", absl::StrFormat("%o", o.root_mode & 07777)},
      {"uid", std::to_string(o.root_uid)},
      {"gid", std::to_string(o.root_gid)},
  };
  for (const auto& [key, value] : params) {
    if (FsConfig(fsfd, FSCONFIG_SET_STRING, key, value.c_str(), 0) < 0) {
      const int err = errno;
      close(fsfd);
      return ErrnoError(err, absl::StrCat("fsconfig(tmpfs ", key, "=", value, ")"));
    }
  }
  if (FsConfig(fsfd, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0) {
    const int err = errno;
    close(fsfd);
    return ErrnoError(err, "fsconfig(tmpfs create)");
  }
  // Device files and set-id programs of the mount are the FUSE mount's to
  // honour (its own nodev/nosuid); the private one only stores them.
  const int mfd = FsMount(fsfd, FSMOUNT_CLOEXEC,
                          MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
                              (o.noatime ? MOUNT_ATTR_NOATIME : MOUNT_ATTR_RELATIME));
  const int err = errno;
  close(fsfd);
  if (mfd < 0) return ErrnoError(err, "fsmount(tmpfs)");
  return mfd;  // an O_PATH fd of its root
}

absl::Status UnmountFuse(const std::string& mountpoint, bool* lazy) {
  if (lazy) *lazy = false;
  if (umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
  const int umount_err = errno;
  if (umount_err == EPERM && !FindFusermount().empty()) {
    // A user's mount: fusermount3 unmounts it if it is theirs.
    absl::Status s = RunFusermount({"-u", "--", mountpoint}, nullptr);
    if (s.ok()) return s;
    if (!absl::StrContains(s.message(), "busy")) return absl::PermissionDeniedError(absl::StrCat("fusermount3 -u ", mountpoint, ": ", s.message()));
    s = RunFusermount({"-u", "-z", "--", mountpoint}, nullptr);
    if (!s.ok()) return absl::PermissionDeniedError(absl::StrCat("fusermount3 -u -z ", mountpoint, ": ", s.message()));
    if (lazy) *lazy = true;
    return s;
  }
  if (umount_err != EBUSY) return ErrnoError(umount_err, "umount " + mountpoint);
  if (umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
    return ErrnoError(errno, "lazy umount " + mountpoint);
  if (lazy) *lazy = true;
  return absl::OkStatus();
}

absl::StatusOr<dev_t> MountDevice(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  dev_t found = 0;
  bool any = false;
  while (std::getline(in, line)) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() <= 4 || f[4] != mountpoint) continue;
    unsigned maj = 0, min = 0;
    if (std::sscanf(std::string(f[2]).c_str(), "%u:%u", &maj, &min) == 2) {
      found = makedev(maj, min);  // the last match is the top of the stack
      any = true;
    }
  }
  if (!any) return absl::NotFoundError("no mount at " + mountpoint + " in /proc/self/mountinfo");
  return found;
}

void EnsureFusectl() {
  struct stat st, parent;
  if (stat("/sys/fs/fuse/connections", &st) != 0 || stat("/sys/fs/fuse", &parent) != 0) return;
  if (st.st_dev != parent.st_dev) return;  // already a mount
  mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);
}

bool IsMountPoint(const std::string& path) { return MountDevice(path).ok(); }

}  // namespace efuse
