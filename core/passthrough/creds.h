// core/passthrough/creds.h — acting as the caller while creating a file.
//
// Owns: ScopedCreds, which switches the *calling thread's* fsuid, fsgid and
// supplementary groups to a request's (raw SYS_setfsuid/SYS_setfsgid/
// SYS_setgroups: per-thread, unlike glibc's setgroups, which changes every
// thread) and restores the daemon's on destruction; and ThreadUmaskZero(),
// which gives the calling thread its own umask of 0.
//
// Why switch rather than create-then-fchownat: the new inode gets its owner
// atomically (never visible as root's, never a root-owned setuid window), the
// source kernel applies setgid-directory inheritance and the S_ISGID strip
// for non-members itself, and quota is charged to the caller from the start.
// Permission to create was already checked by the FUSE kernel
// (default_permissions / POSIX ACLs), so CAP_DAC_OVERRIDE is kept in the
// thread's effective set while switched: the source kernel must not refuse
// what the FUSE kernel allowed because of a supplementary group it does not
// see. CAP_FSETID and CAP_MKNOD stay dropped (setfsuid drops them).
//
// ModeUnderCallerUmask() makes the caller's umask the calling thread's own
// (FUSE_DONT_MASK sends it unapplied), so the source applies it exactly as
// for a local caller: ignored under a parent's default ACL, applied
// otherwise. One umask() call only when the caller's umask differs from the
// previous one on this thread.
//
// Thread-safety: a ScopedCreds affects only the thread that made it and must
// be destroyed on that thread; DaemonCreds is immutable after Capture().
#ifndef EFUSE_CORE_PASSTHROUGH_CREDS_H_
#define EFUSE_CORE_PASSTHROUGH_CREDS_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "core/filesystem.h"
#include "core/result.h"

namespace efuse::passthrough {

// The daemon's own credentials, captured once.
struct DaemonCreds {
  uid_t fsuid = 0;
  gid_t fsgid = 0;
  std::vector<gid_t> groups;
  bool can_switch = false;  // holds CAP_SETUID and CAP_SETGID
  static DaemonCreds Capture();
};

class ScopedCreds {
 public:
  // Switches unless `ctx` already matches the daemon (root asking root: no
  // syscalls). On failure nothing stays switched and error() says why.
  ScopedCreds(const DaemonCreds& daemon, const RequestContext& ctx);
  ~ScopedCreds();
  ScopedCreds(const ScopedCreds&) = delete;
  ScopedCreds& operator=(const ScopedCreds&) = delete;

  bool ok() const { return error_ == 0; }
  Errno error() const { return Errno(error_); }
  bool switched() const { return switched_; }

 private:
  void Restore();

  const DaemonCreds& daemon_;
  bool switched_ = false;
  int error_ = 0;
};

// Call right before creating with mode `mode` for a caller whose umask is
// `umask`: returns the mode to pass to the creating call. Needs a private
// fs_struct (unshare(CLONE_FS), made on first use); without one (refused)
// the umask is applied here, as the kernel would without ACLs.
uint32_t ModeUnderCallerUmask(uint32_t mode, uint32_t umask);

}  // namespace efuse::passthrough

#endif  // EFUSE_CORE_PASSTHROUGH_CREDS_H_
