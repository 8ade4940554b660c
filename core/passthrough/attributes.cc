// core/passthrough/attributes.cc — PassthroughFs: GETATTR, SETATTR (and
// the privileges a change takes away), READLINK, ACCESS, STATFS.
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "core/passthrough/internal.h"
#include "core/privileges.h"
#include "proto/abi.h"

namespace efuse {

using passthrough::ProcPath;
using passthrough::Statx;
using passthrough::Chmod;
using passthrough::SharedFd;

// ---------------------------------------------------------------------------
// Attributes.

Result<AttrReply> PassthroughFs::GetAttr(const RequestContext& ctx, uint64_t nodeid,
                                         const uint64_t* fh) {
  if (fh != nullptr) {
    if (std::shared_ptr<Handle> h = GetHandle(*fh); h != nullptr && h->fd.load() >= 0) {
      Result<Attributes> a = StatFd(h->fd.load());
      if (!a.ok()) return a.error();
      return MakeAttrReply(*h->inode, *a);
    }
  }
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<Attributes> a = StatInode(**n);
  if (!a.ok()) return a.error();
  return MakeAttrReply(**n, *a);
}

Result<AttrReply> PassthroughFs::SetAttr(const RequestContext& ctx, uint64_t nodeid,
                                         const SetAttrRequest& req) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<SharedFd> pfd = PathFd(**n);
  if (!pfd.ok()) return pfd.error();
  const int fd = (*pfd)->get();
  const uint32_t v = req.valid;
  // ftruncate and fstat through the caller's handle when there is one: the
  // file may have no name left.
  std::shared_ptr<Handle> h;
  if ((v & abi::kFattrFh) != 0) h = GetHandle(req.fh);

  // Permission checks are the kernel's (default_permissions); the source
  // sees the daemon. Order: owner first (chown clears setuid, which an
  // explicit mode in the same request then sets again), size, mode, times.
  //
  // Privileges. The source kernel clears what a change by the daemon (root,
  // with CAP_FSETID) clears; a change by the caller may clear more, which
  // the kernel asks for: FATTR_KILL_SUIDGID (chown, truncate without
  // CAP_FSETID), or a SETATTR with no attribute at all. That one comes from
  // chown(f, -1, -1) and, with HANDLE_KILLPRIV_V2, from the kernel's
  // file_remove_privs() before a write, fallocate or copy_file_range it does
  // not send us (kernel passthrough) or sends without a kill flag: both are
  // a chown to the same owner, which clears setuid, setgid with group exec
  // and file capabilities (security.capability) in the source, and whose
  // reply gives the kernel the mode it must use for exec from now on.
  const bool no_attribute = IsBareChown(v);
  const bool kill = (v & abi::kFattrKillSuidgid) != 0 && (v & abi::kFattrMode) == 0;
  struct statx before;
  if ((kill || no_attribute) && Statx(fd, &before) != 0) return Errno::Last();
  if (no_attribute && (*n)->type != S_IFDIR) {
    if (fchownat(fd, "", static_cast<uid_t>(-1), static_cast<gid_t>(-1),
                 AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return Errno::Last();
    }
  }
  if ((v & (abi::kFattrUid | abi::kFattrGid)) != 0) {
    const uid_t uid = (v & abi::kFattrUid) != 0 ? req.uid : static_cast<uid_t>(-1);
    const gid_t gid = (v & abi::kFattrGid) != 0 ? req.gid : static_cast<gid_t>(-1);
    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return Errno::Last();
  }
  if ((v & abi::kFattrSize) != 0) {
    if ((*n)->type == S_IFDIR) return Errno(EISDIR);
    if ((*n)->type != S_IFREG) return Errno(EINVAL);
    int rc;
    if (h != nullptr && h->fd.load() >= 0 && (h->flags & O_ACCMODE) != O_RDONLY) {
      rc = ftruncate(h->fd.load(), static_cast<off_t>(req.size));
    } else {
      rc = truncate(ProcPath(fd).c_str(), static_cast<off_t>(req.size));
    }
    if (rc != 0) return Errno::Last();
  }
  if ((v & abi::kFattrMode) != 0) {
    if (int err = Chmod(fd, req.mode); err != 0) return Errno(err);
  }
  if ((kill || (no_attribute && (*n)->type != S_IFDIR)) && HasSetId(before.stx_mode)) {
    // What the caller's change takes away, judged by the file as it was
    // (a chown's new group does not make its caller a member of the old).
    const uint32_t bits = KilledSetIdBits(before.stx_mode, before.stx_gid, ctx);
    struct statx now;
    if (bits != 0 && Statx(fd, &now) == 0 && (now.stx_mode & bits) != 0) {
      if (int err = Chmod(fd, now.stx_mode & ~bits); err != 0) return Errno(err);
    }
  }
  constexpr uint32_t kTimes =
      abi::kFattrAtime | abi::kFattrMtime | abi::kFattrAtimeNow | abi::kFattrMtimeNow;
  if ((v & kTimes) != 0) {
    timespec ts[2];
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_nsec = UTIME_OMIT;
    if ((v & abi::kFattrAtimeNow) != 0) {
      ts[0].tv_nsec = UTIME_NOW;
    } else if ((v & abi::kFattrAtime) != 0) {
      ts[0] = req.atime;
    }
    if ((v & abi::kFattrMtimeNow) != 0) {
      ts[1].tv_nsec = UTIME_NOW;
    } else if ((v & abi::kFattrMtime) != 0) {
      ts[1] = req.mtime;
    }
    if (utimensat(fd, "", ts, AT_EMPTY_PATH) != 0) return Errno::Last();
  }
  Result<Attributes> a = (h != nullptr && h->fd.load() >= 0) ? StatFd(h->fd.load()) : StatFd(fd);
  if (!a.ok()) return a.error();
  return MakeAttrReply(**n, *a);
}

Result<std::string> PassthroughFs::ReadLink(const RequestContext& ctx, uint64_t nodeid) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if ((*n)->type != S_IFLNK) return Errno(EINVAL);
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  std::string target(PATH_MAX, '\0');
  ssize_t len = readlinkat((*fd)->get(), "", target.data(), target.size());
  if (len < 0) return Errno::Last();
  target.resize(static_cast<size_t>(len));
  return target;
}

Status PassthroughFs::Access(const RequestContext& ctx, uint64_t nodeid, uint32_t mask) {
  // Only sent without default_permissions. Mode bits only (ACLs are the
  // kernel's business once FUSE_POSIX_ACL is on, which implies
  // default_permissions and no ACCESS at all).
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  struct statx st;
  Result<Attributes> a = StatInode(**n, &st);
  if (!a.ok()) return a.error();
  mask &= R_OK | W_OK | X_OK;
  if (mask == 0) return OkStatus();
  if (ctx.uid == 0) {
    if ((mask & X_OK) != 0 && !S_ISDIR(st.stx_mode) && (st.stx_mode & 0111) == 0) {
      return Errno(EACCES);
    }
    return OkStatus();
  }
  uint32_t bits;
  if (ctx.uid == st.stx_uid) {
    bits = (st.stx_mode >> 6) & 7;
  } else if (ctx.InGroup(st.stx_gid)) {
    bits = (st.stx_mode >> 3) & 7;
  } else {
    bits = st.stx_mode & 7;
  }
  return (bits & mask) == mask ? OkStatus() : Status(Errno(EACCES));
}

Result<FsStats> PassthroughFs::StatFs(const RequestContext& ctx, uint64_t nodeid) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  std::shared_ptr<Inode> inode = n.ok() ? *n : root_;
  Result<SharedFd> fd = PathFd(*inode);
  if (!fd.ok()) return fd.error();
  struct statfs sf;
  if (fstatfs((*fd)->get(), &sf) != 0) return Errno::Last();
  FsStats s;
  s.blocks = sf.f_blocks;
  s.bfree = sf.f_bfree;
  s.bavail = sf.f_bavail;
  s.files = sf.f_files;
  s.ffree = sf.f_ffree;
  s.bsize = static_cast<uint32_t>(sf.f_bsize);
  s.namelen = static_cast<uint32_t>(sf.f_namelen);
  s.frsize = static_cast<uint32_t>(sf.f_frsize != 0 ? sf.f_frsize : sf.f_bsize);
  return s;
}

}  // namespace efuse
