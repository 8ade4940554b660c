// core/memfs/memfs_xattrs.cc — MemFs: extended attributes.
#include "core/memfs/memfs.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "core/memfs/memfs_internal.h"
#include "core/privileges.h"
#include "proto/abi.h"
#include "proto/notify.h"

namespace efuse {

using namespace memfs;  // NOLINT: the shared rules and constants of memfs_internal.h

// ---------------------------------------------------------------------------
// Extended attributes.

namespace {

// Linux xattr_permission(): user.* lives only on regular files and
// directories (and a sticky directory's only for its owner), trusted.* is
// root's, security.* needs write permission here.
Status XattrWriteAllowed(const RequestContext& ctx, XattrClass cls,
                         uint32_t mode, uint32_t uid, uint32_t gid) {
  switch (cls) {
    case XattrClass::kUser:
      if (!S_ISREG(mode) && !S_ISDIR(mode)) return Errno(EPERM);
      if (S_ISDIR(mode) && (mode & S_ISVTX) != 0 && ctx.uid != 0 &&
          ctx.uid != uid && ctx.IdentityKnown()) {
        return Errno(EPERM);
      }
      if (!Permits(ctx, mode, uid, gid, kW)) return Errno(EACCES);
      return OkStatus();
    case XattrClass::kTrusted:
      return ctx.uid == 0 ? OkStatus() : Status(Errno(EPERM));
    case XattrClass::kSecurity:
      if (!Permits(ctx, mode, uid, gid, kW)) return Errno(EACCES);
      return OkStatus();
    case XattrClass::kUnsupported:
      break;
  }
  return Errno(EOPNOTSUPP);
}

// Reading: an xattr the caller may not see is reported absent (ENODATA), as
// Linux does for trusted.* and for user.* on special files.
Status XattrReadAllowed(const RequestContext& ctx, XattrClass cls,
                        uint32_t mode, uint32_t uid, uint32_t gid) {
  switch (cls) {
    case XattrClass::kUser:
      if (!S_ISREG(mode) && !S_ISDIR(mode)) return Errno(ENODATA);
      if (!Permits(ctx, mode, uid, gid, kR)) return Errno(EACCES);
      return OkStatus();
    case XattrClass::kTrusted:
      return ctx.uid == 0 ? OkStatus() : Status(Errno(ENODATA));
    case XattrClass::kSecurity:
      return OkStatus();
    case XattrClass::kUnsupported:
      break;
  }
  return Errno(EOPNOTSUPP);
}

}  // namespace

Status MemFs::SetXattr(const RequestContext& ctx, uint64_t nodeid,
                       std::string_view name, std::span<const uint8_t> value,
                       uint32_t flags, uint32_t setxattr_flags) {
  XattrClass cls;
  if (Status s = CheckXattrName(name, &cls); !s) return s;
  if (value.size() > kMaxXattrValueSize) return Errno(E2BIG);
  if ((flags & ~static_cast<uint32_t>(XATTR_CREATE | XATTR_REPLACE)) != 0) {
    return Errno(EINVAL);
  }
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  memfs::WriteLock l(&n->mu);
  if (n->dead) return Errno(ENOENT);
  if (Status s = XattrWriteAllowed(ctx, cls, n->mode, n->uid, n->gid); !s) {
    return s;
  }
  auto it = n->xattrs.find(name);
  const bool exists = it != n->xattrs.end();
  if (exists && (flags & XATTR_CREATE) != 0) return Errno(EEXIST);
  if (!exists && (flags & XATTR_REPLACE) != 0) return Errno(ENODATA);
  const uint64_t old_bytes = exists ? name.size() + it->second.size() : 0;
  const uint64_t new_bytes = name.size() + value.size();
  if (new_bytes > old_bytes && !space_.Reserve(new_bytes - old_bytes)) {
    return Errno(ENOSPC);
  }
  if (old_bytes > new_bytes) space_.Release(old_bytes - new_bytes);
  std::string v(reinterpret_cast<const char*>(value.data()), value.size());
  if (exists) {
    it->second = std::move(v);
  } else {
    n->xattrs.emplace(std::string(name), std::move(v));
  }
  n->ctime = Now();
  JournalInodeLocked(*n);
  return OkStatus();
}

Result<std::string> MemFs::GetXattr(const RequestContext& ctx, uint64_t nodeid,
                                    std::string_view name) {
  XattrClass cls;
  if (Status s = CheckXattrName(name, &cls); !s) return s.error();
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  memfs::ReadLock l(&n->mu);
  if (Status s = XattrReadAllowed(ctx, cls, n->mode, n->uid, n->gid); !s) {
    return s.error();
  }
  auto it = n->xattrs.find(name);
  if (it == n->xattrs.end()) return Errno(ENODATA);
  return it->second;
}

Result<std::string> MemFs::ListXattr(const RequestContext& ctx,
                                     uint64_t nodeid) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  memfs::ReadLock l(&n->mu);
  std::string names;
  for (const auto& [name, value] : n->xattrs) {
    if (ctx.uid != 0 && name.starts_with("trusted.")) continue;
    names += name;
    names.push_back('\0');
  }
  return names;
}

Status MemFs::RemoveXattr(const RequestContext& ctx, uint64_t nodeid,
                          std::string_view name) {
  XattrClass cls;
  if (Status s = CheckXattrName(name, &cls); !s) return s;
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  memfs::WriteLock l(&n->mu);
  if (n->dead) return Errno(ENOENT);
  if (Status s = XattrWriteAllowed(ctx, cls, n->mode, n->uid, n->gid); !s) {
    return s;
  }
  auto it = n->xattrs.find(name);
  if (it == n->xattrs.end()) return Errno(ENODATA);
  space_.Release(it->first.size() + it->second.size());
  n->xattrs.erase(it);
  n->ctime = Now();
  JournalInodeLocked(*n);
  return OkStatus();
}

}  // namespace efuse
