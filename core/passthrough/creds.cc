// core/passthrough/creds.cc — per-thread credential switching.
#include "core/passthrough/creds.h"

#include <linux/capability.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace efuse::passthrough {

namespace {

// The capability sets of the calling thread (v3: two 32-bit words).
bool GetCaps(__user_cap_data_struct data[2]) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  return syscall(SYS_capget, &hdr, data) == 0;
}
bool SetCaps(__user_cap_data_struct data[2]) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  return syscall(SYS_capset, &hdr, data) == 0;
}
bool HasEffective(const __user_cap_data_struct data[2], int cap) {
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

// setfsuid/setfsgid never fail visibly: they return the previous id. Asking
// with an invalid id (-1) reads back the current one.
long CurrentFsuid() { return syscall(SYS_setfsuid, -1); }
long CurrentFsgid() { return syscall(SYS_setfsgid, -1); }

}  // namespace

DaemonCreds DaemonCreds::Capture() {
  DaemonCreds c;
  c.fsuid = geteuid();
  c.fsgid = getegid();
  int n = getgroups(0, nullptr);
  if (n > 0) {
    c.groups.resize(static_cast<size_t>(n));
    n = getgroups(n, c.groups.data());
    c.groups.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  __user_cap_data_struct caps[2] = {};
  c.can_switch = GetCaps(caps) && HasEffective(caps, CAP_SETUID) && HasEffective(caps, CAP_SETGID);
  return c;
}

ScopedCreds::ScopedCreds(const DaemonCreds& daemon, const RequestContext& ctx) : daemon_(daemon) {
  if (ctx.uid == daemon.fsuid && ctx.gid == daemon.fsgid && ctx.groups.empty()) return;
  // Unknown caller (idmapped mounts, core/filesystem.h): the kernel checked
  // permissions; the daemon acts with its own credentials, as it does for
  // a caller it cannot become.
  if (!ctx.IdentityKnown()) return;
  if (!daemon.can_switch) {
    error_ = EPERM;
    return;
  }
  switched_ = true;
  // Order: group ids while still privileged, the uid last (it drops the
  // file-system capabilities from the effective set).
  std::vector<gid_t> groups(ctx.groups.begin(), ctx.groups.end());
  if (syscall(SYS_setgroups, groups.size(), groups.data()) != 0) {
    error_ = errno;
    Restore();
    return;
  }
  syscall(SYS_setfsgid, ctx.gid);
  syscall(SYS_setfsuid, ctx.uid);
  if (CurrentFsgid() != static_cast<long>(ctx.gid) ||
      CurrentFsuid() != static_cast<long>(ctx.uid)) {
    error_ = EPERM;
    Restore();
    return;
  }
  // Keep DAC override: the FUSE kernel already decided the caller may
  // create here (see creds.h).
  if (ctx.uid != 0) {
    __user_cap_data_struct caps[2] = {};
    if (GetCaps(caps)) {
      for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH}) {
        if ((caps[cap / 32].permitted & (1u << (cap % 32))) != 0)
          caps[cap / 32].effective |= 1u << (cap % 32);
      }
      SetCaps(caps);
    }
  }
}

ScopedCreds::~ScopedCreds() {
  if (switched_) Restore();
}

void ScopedCreds::Restore() {
  // fsuid back to the daemon's raises the file-system capabilities again
  // (from the permitted set), which also undoes the DAC override above.
  syscall(SYS_setfsuid, daemon_.fsuid);
  syscall(SYS_setfsgid, daemon_.fsgid);
  syscall(SYS_setgroups, daemon_.groups.size(), daemon_.groups.data());
  switched_ = false;
}

uint32_t ModeUnderCallerUmask(uint32_t mode, uint32_t umask) {
  // Without a private fs_struct, umask() would change every thread's.
  thread_local const bool private_fs = unshare(CLONE_FS) == 0;
  thread_local int thread_umask = -1;  // unknown until first set
  umask &= 0777;
  if (!private_fs) return mode & ~umask;
  if (thread_umask != static_cast<int>(umask)) {
    ::umask(static_cast<mode_t>(umask));
    thread_umask = static_cast<int>(umask);
  }
  return mode;
}

}  // namespace efuse::passthrough
