// core/passthrough/xattrs.cc — PassthroughFs: extended attributes, and the
// memory of names the source lacks.
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cerrno>

#include "core/clock.h"
#include "core/passthrough/internal.h"
#include "proto/abi.h"

namespace efuse {

using passthrough::ProcPath;
using passthrough::CName;
using passthrough::Statx;
using passthrough::Chmod;
using passthrough::SharedFd;

namespace {
// GETXATTR of these names is answered from memory when the source lacked
// them at most --attr_timeout ago: `ls -l` asks for security.selinux on every
// file and exec for security.capability, and without it each answer costs an
// open by handle of an inode the fd cache no longer holds. Only names anyone
// may read (no permission check to bypass), and all listed by listxattr.
// Not security.ima or security.evm: the kernel itself writes those (on the
// last writer's close, on chmod/chown), with no SETXATTR for us to see.
constexpr std::string_view kAbsenceRemembered[] = {
    "security.selinux", "security.capability", "system.posix_acl_access",
    "system.posix_acl_default", "security.SMACK64",
};
// The bit of `name` in Inode::absent_xattrs, or 0 when not remembered.
bool IsAclName(std::string_view name) { return name.starts_with("system.posix_acl_"); }

uint8_t AbsenceBit(std::string_view name) {
  for (size_t i = 0; i < std::size(kAbsenceRemembered); ++i) {
    if (kAbsenceRemembered[i] == name) return static_cast<uint8_t>(1u << i);
  }
  return 0;
}
}  // namespace

// ---------------------------------------------------------------------------
// Extended attributes: through /proc/self/fd (f*xattr refuse O_PATH fds).

Status PassthroughFs::SetXattr(const RequestContext& ctx, uint64_t nodeid, std::string_view name,
                               std::span<const uint8_t> value, uint32_t flags,
                               uint32_t setxattr_flags) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  if (AclsRefused() && IsAclName(name)) return Errno(EOPNOTSUPP);
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  const ProcPath path((*fd)->get());
  const int rc = setxattr(path.c_str(), CName(name).c_str(), value.data(), value.size(),
                          static_cast<int>(flags));
  const int err = errno;
  XattrsChanged(**n);  // after the call: a GETXATTR that ran before it forgets
  if (rc != 0) return Errno(err);
  // Setting an access ACL as a non-member of the group drops setgid, as
  // the kernel tells us (FUSE_SETXATTR_ACL_KILL_SGID).
  if ((setxattr_flags & abi::kSetxattrAclKillSgid) != 0) {
    struct statx st;
    if (Statx((*fd)->get(), &st) == 0 && (st.stx_mode & S_ISGID) != 0) {
      Chmod((*fd)->get(), st.stx_mode & ~static_cast<uint32_t>(S_ISGID));
    }
  }
  return OkStatus();
}

bool PassthroughFs::KnownAbsent(Inode& inode, uint8_t bit, uint32_t* changes) {
  absl::MutexLock l(&inode.mu);
  *changes = inode.xattr_changes;
  return (inode.absent_xattrs & bit) != 0 && MonotonicNs() < inode.absent_until;
}

void PassthroughFs::RememberAbsent(Inode& inode, uint8_t bit, uint32_t changes) {
  if (opts_.attr_timeout <= 0) return;  // nothing cached: nothing remembered
  const uint64_t now = MonotonicNs();
  absl::MutexLock l(&inode.mu);
  if (inode.xattr_changes != changes) return;  // the answer may be outdated
  // One window for all bits, opened by the first: no absence is trusted
  // longer than attr_timeout after it was read.
  if (now >= inode.absent_until) {
    inode.absent_xattrs = 0;
    inode.absent_until = now + static_cast<uint64_t>(opts_.attr_timeout * 1e9);
  }
  inode.absent_xattrs |= bit;
}

void PassthroughFs::XattrsChanged(Inode& inode) {
  absl::MutexLock l(&inode.mu);
  inode.absent_xattrs = 0;
  ++inode.xattr_changes;
}

Result<std::string> PassthroughFs::GetXattr(const RequestContext& ctx, uint64_t nodeid,
                                            std::string_view name) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if (AclsRefused() && IsAclName(name)) return Errno(EOPNOTSUPP);
  if (ctx.uid != 0 && name.starts_with("trusted.")) return Errno(ENODATA);
  const uint8_t absence_bit = AbsenceBit(name);
  uint32_t changes = 0;
  if (absence_bit != 0 && KnownAbsent(**n, absence_bit, &changes)) {
    absences_answered_.fetch_add(1, std::memory_order_relaxed);
    return Errno(ENODATA);
  }
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  const ProcPath path((*fd)->get());
  const CName cname(name);
  std::string value;
  for (;;) {
    ssize_t size = getxattr(path.c_str(), cname.c_str(), nullptr, 0);
    if (size < 0) {
      if (errno == ENODATA && absence_bit != 0) RememberAbsent(**n, absence_bit, changes);
      return Errno::Last();
    }
    value.resize(static_cast<size_t>(size));
    if (size == 0) return value;
    ssize_t got = getxattr(path.c_str(), cname.c_str(), value.data(), value.size());
    if (got >= 0) {
      value.resize(static_cast<size_t>(got));
      return value;
    }
    if (errno != ERANGE) return Errno::Last();  // grew in between: again
  }
}

Result<std::string> PassthroughFs::ListXattr(const RequestContext& ctx, uint64_t nodeid) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  Result<SharedFd> fd = NodePathFd(nodeid);
  if (!fd.ok()) return fd.error();
  const ProcPath path((*fd)->get());
  std::string names;
  for (;;) {
    ssize_t size = listxattr(path.c_str(), nullptr, 0);
    if (size < 0) return Errno::Last();
    names.resize(static_cast<size_t>(size));
    if (size == 0) break;
    ssize_t got = listxattr(path.c_str(), names.data(), names.size());
    if (got >= 0) {
      names.resize(static_cast<size_t>(got));
      break;
    }
    if (errno != ERANGE) return Errno::Last();
  }
  if (ctx.uid == 0) return names;
  // The source lists trusted.* to the daemon (root); others must not see it.
  std::string visible;
  for (size_t pos = 0; pos < names.size();) {
    size_t end = names.find('\0', pos);
    if (end == std::string::npos) end = names.size();
    std::string_view one(names.data() + pos, end - pos);
    if (!one.empty() && !one.starts_with("trusted.")) {
      visible.append(one);
      visible.push_back('\0');
    }
    pos = end + 1;
  }
  return visible;
}

Status PassthroughFs::RemoveXattr(const RequestContext& ctx, uint64_t nodeid,
                                  std::string_view name) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  if (AclsRefused() && IsAclName(name)) return Errno(EOPNOTSUPP);
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  const int rc = removexattr(ProcPath((*fd)->get()).c_str(), CName(name).c_str());
  const int err = errno;
  XattrsChanged(**n);
  if (rc != 0) return Errno(err);
  return OkStatus();
}

}  // namespace efuse
