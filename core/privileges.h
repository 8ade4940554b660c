// core/privileges.h — what a change of a file by a caller takes away.
//
// Owns: the Linux rule for the setuid and setgid bits when a file's data or
// owner changes (write, truncate, fallocate, copy_file_range, chown), which
// a server that negotiated FUSE_HANDLE_KILLPRIV_V2 carries out itself, so
// that every backend clears exactly what a local file system clears
// (fs/attr.c setattr_should_drop_suidgid / setattr_should_drop_sgid):
//
//   * setuid always;
//   * setgid with group execute (a setgid program);
//   * setgid without group execute too when the caller is neither in the
//     file's group nor privileged (CAP_FSETID, here: uid 0).
//
// Whether the caller may keep the bits (CAP_FSETID) on a write or truncate
// is the kernel's to say: it asks the server only for callers without it
// (FUSE_WRITE_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID, FATTR_KILL_SUIDGID, or an
// attribute-less SETATTR). File capabilities (security.capability) go on
// every such change, by anyone, and are each backend's to remove.
//
// Thread-safety: pure functions; RequestContext::InGroup may read the
// caller's groups from /proc once (see core/filesystem.h).
#ifndef EFUSE_CORE_PRIVILEGES_H_
#define EFUSE_CORE_PRIVILEGES_H_

#include <sys/stat.h>

#include <cstdint>

#include "core/filesystem.h"
#include "proto/abi.h"

namespace efuse {

// True if `mode` has setuid or setgid: a file a change may have to clear.
inline bool HasSetId(uint32_t mode) { return (mode & (S_ISUID | S_ISGID)) != 0; }

// A SETATTR with no attribute to set (file handle, lock owner and, with the
// writeback cache, ctime aside) is a chown to the same owner: chown(f, -1,
// -1), or, with HANDLE_KILLPRIV_V2, the kernel's file_remove_privs() before
// a write, fallocate or copy_file_range. On a non-directory it clears what
// a chown clears (setuid, setgid as below, file capabilities).
inline bool IsBareChown(uint32_t setattr_valid) {
  return (setattr_valid & ~(abi::kFattrFh | abi::kFattrLockowner | abi::kFattrCtime)) == 0;
}

// The bits of `mode` (of a file whose group is `gid`) that a change by
// `ctx` clears.
inline uint32_t KilledSetIdBits(uint32_t mode, uint32_t gid, const RequestContext& ctx) {
  uint32_t bits = mode & S_ISUID;
  if ((mode & S_ISGID) != 0 &&
      ((mode & S_IXGRP) != 0 || (ctx.uid != 0 && !ctx.InGroup(gid)))) {
    bits |= S_ISGID;
  }
  return bits;
}

}  // namespace efuse

#endif  // EFUSE_CORE_PRIVILEGES_H_
