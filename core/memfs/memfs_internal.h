// core/memfs/memfs_internal.h — what memfs's source files share: the
// inode and directory structures and the POSIX rules they apply. Private
// to core/memfs (memfs.h is the interface).
#ifndef EFUSE_CORE_MEMFS_MEMFS_INTERNAL_H_
#define EFUSE_CORE_MEMFS_MEMFS_INTERNAL_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/memfs/memfs.h"
#include "core/privileges.h"
#include "proto/abi.h"

namespace efuse {
namespace memfs {


constexpr uint64_t kRootId = abi::kRootId;
// "." and ".." are cookies 1 and 2; entries count up from 3.
constexpr uint64_t kDotCookie = 1;
constexpr uint64_t kDotDotCookie = 2;
constexpr uint64_t kFirstEntryCookie = 3;
// Directory st_size grows by this per entry, as on tmpfs: nothing reads it,
// but a size that moves with the contents looks familiar to tools.
constexpr uint64_t kDirentSize = 20;
constexpr uint32_t kPermBits = 07777;
constexpr uint32_t kR = R_OK, kW = W_OK, kX = X_OK;
constexpr std::string_view kCapabilityXattr = "security.capability";

inline timespec CoarseNow() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return ts;
}

inline timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

inline bool NotAfter(const timespec& a, const timespec& b) {
  return a.tv_sec < b.tv_sec ||
         (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
}

// POSIX class selection: the owner class alone decides for the owner, the
// group class for group members. Root passes read/write always and exec when
// any x bit is set (directories are always searchable).
inline bool Permits(const RequestContext& ctx, uint32_t mode, uint32_t uid,
             uint32_t gid, uint32_t mask) {
  mask &= kR | kW | kX;
  if (!ctx.IdentityKnown()) return true;  // the kernel checked (default_permissions)
  if (ctx.uid == 0) {
    return (mask & kX) == 0 || S_ISDIR(mode) || (mode & 0111) != 0;
  }
  uint32_t bits;
  if (ctx.uid == uid) {
    bits = (mode >> 6) & 7;
  } else if (ctx.InGroup(gid)) {
    bits = (mode >> 3) & 7;
  } else {
    bits = mode & 7;
  }
  return (bits & mask) == mask;
}

// Clears what a write, truncate or chown by `ctx` drops from a file whose
// group is `gid` (before a chown changes it): core/privileges.h. True if
// the mode changed.
inline bool KillSuidgid(uint32_t* mode, uint32_t gid, const RequestContext& ctx) {
  const uint32_t bits = *mode & KilledSetIdBits(*mode, gid, ctx);
  *mode &= ~bits;
  return bits != 0;
}

// A name for a new entry: ENAMETOOLONG, or EINVAL for what no kernel sends.
inline Status CheckNewName(std::string_view name) {
  if (name.size() > MemFs::kMaxNameLength) return Errno(ENAMETOOLONG);
  if (name.empty() || name.find('/') != std::string_view::npos) {
    return Errno(EINVAL);
  }
  return OkStatus();
}

enum class XattrClass { kUser, kTrusted, kSecurity, kUnsupported };

inline XattrClass ClassifyXattr(std::string_view name, size_t* prefix_len) {
  static constexpr std::pair<std::string_view, XattrClass> kPrefixes[] = {
      {"user.", XattrClass::kUser},
      {"trusted.", XattrClass::kTrusted},
      {"security.", XattrClass::kSecurity},
  };
  for (const auto& [prefix, cls] : kPrefixes) {
    if (name.starts_with(prefix)) {
      *prefix_len = prefix.size();
      return cls;
    }
  }
  // system.posix_acl_* among them: memfs keeps no ACLs.
  return XattrClass::kUnsupported;
}

// The checks every xattr call makes on the name alone.
inline Status CheckXattrName(std::string_view name, XattrClass* cls) {
  if (name.empty() || name.size() > MemFs::kMaxXattrNameLength) {
    return Errno(ERANGE);
  }
  size_t prefix_len = 0;
  *cls = ClassifyXattr(name, &prefix_len);
  if (*cls == XattrClass::kUnsupported) return Errno(EOPNOTSUPP);
  if (name.size() == prefix_len) return Errno(EINVAL);
  return OkStatus();
}


}  // namespace memfs

struct MemFs::DirData {
  struct Slot {
    std::string name;
    Inode* inode;  // valid while the slot exists (it holds a link)
  };
  using Slots = std::map<uint64_t, Slot>;

  Slots::iterator FindName(std::string_view name) {
    auto it = by_name.find(name);
    return it == by_name.end() ? slots.end() : it->second;
  }

  // All guarded by tree_mu_.
  Inode* parent = nullptr;  // ".."; the root's is itself; null once removed
  // Atomic only so the journal may read it under the inode's lock alone
  // (an attribute change of the directory); it changes under tree_mu_.
  std::atomic<uint64_t> next_cookie{memfs::kFirstEntryCookie};
  // Entries by cookie: readdir walks this, so an entry keeps its place while
  // others come and go, and new ones always sort after existing ones.
  Slots slots;
  // The keys view the names stored in `slots` (std::map nodes never move).
  std::unordered_map<std::string_view, Slots::iterator> by_name;
  // Listed by a READDIR without a handle (under tree_mu_ shared, hence
  // atomic): the kernel may keep the listing, so changes drop it.
  std::atomic<bool> listed_without_handle{false};
};

struct MemFs::Inode {
  // `slot`: where a regular file's bytes are in `store` (kNoSlot for the
  // other types).
  static constexpr uint32_t kNoSlot = UINT32_MAX;
  Inode(uint64_t id, uint32_t type, SpaceAccount* space, const DataStore* store, uint32_t slot)
      : id(id), type(type), data(space, store, slot) {}

  bool MayAccess(const RequestContext& ctx, uint32_t mask) const {
    memfs::ReadLock l(&mu);
    return memfs::Permits(ctx, mode, uid, gid, mask);
  }
  uint32_t Uid() const {
    memfs::ReadLock l(&mu);
    return uid;
  }
  bool Dead() const {
    memfs::ReadLock l(&mu);
    return dead;
  }
  // An entry of this directory changed: `entries` and `subdirs` are the
  // changes in entry count and in subdirectory count (nlink).
  void TouchDir(const timespec& now, int entries, int subdirs) {
    memfs::WriteLock l(&mu);
    mtime = ctime = now;
    dir_size +=
        static_cast<int64_t>(entries) * static_cast<int64_t>(memfs::kDirentSize);
    nlink += subdirs;
  }
  void AddLinks(int delta, const timespec& now) {
    memfs::WriteLock l(&mu);
    nlink += delta;
    ctime = now;
  }
  void TouchCtime(const timespec& now) {
    memfs::WriteLock l(&mu);
    ctime = now;
  }
  Attributes Attrs() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    Attributes a;
    a.ino = id;
    a.mode = mode;
    a.nlink = nlink;
    a.uid = uid;
    a.gid = gid;
    a.rdev = rdev;
    a.atime = atime;
    a.mtime = mtime;
    a.ctime = ctime;
    a.btime = btime;
    a.blksize = FileData::kBlockSize;
    switch (type) {
      case S_IFREG:
        a.size = data.size();
        a.blocks = data.allocated_bytes() / 512;
        break;
      case S_IFLNK:
        a.size = target.size();
        break;
      case S_IFDIR:
        a.size = dir_size;
        break;
      default:
        break;
    }
    return a;
  }
  // Removes the file-capability xattr, as the Linux VFS does on every write,
  // truncate and chown of a file (with FUSE_HANDLE_KILLPRIV_V2 the kernel
  // leaves that to the server).
  void DropCapability(SpaceAccount& space) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // Writes are hot and most files have no xattrs: test that first.
    if (xattrs.empty()) return;
    auto it = xattrs.find(memfs::kCapabilityXattr);
    if (it == xattrs.end()) return;
    space.Release(it->first.size() + it->second.size());
    xattrs.erase(it);
  }
  // Relatime: the first read after a change, or one a day, sets atime.
  bool NeedsAtime(const timespec& now) const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return memfs::NotAfter(atime, mtime) || memfs::NotAfter(atime, ctime) ||
           now.tv_sec - atime.tv_sec >= 24 * 60 * 60;
  }

  const uint64_t id;
  const uint32_t type;  // S_IFMT bits, fixed for life
  mutable memfs::RwMutex mu;
  uint32_t mode ABSL_GUARDED_BY(mu) = 0;  // type | permission bits
  uint32_t uid ABSL_GUARDED_BY(mu) = 0;
  uint32_t gid ABSL_GUARDED_BY(mu) = 0;
  uint32_t rdev ABSL_GUARDED_BY(mu) = 0;
  // Written holding tree_mu_ exclusively and mu; read holding either.
  uint32_t nlink = 0;
  timespec atime ABSL_GUARDED_BY(mu){};
  timespec mtime ABSL_GUARDED_BY(mu){};
  timespec ctime ABSL_GUARDED_BY(mu){};
  timespec btime ABSL_GUARDED_BY(mu){};
  uint64_t dir_size ABSL_GUARDED_BY(mu) = 0;
  FileData data ABSL_GUARDED_BY(mu);  // regular files
  std::map<std::string, std::string, std::less<>> xattrs ABSL_GUARDED_BY(mu);
  bool dead ABSL_GUARDED_BY(mu) = false;  // freed; a late caller gets ENOENT
  std::string target;  // symlinks; fixed before the inode is published

  // Directories only. The pointer is fixed for life; contents under tree_mu_.
  std::unique_ptr<DirData> dir;
  // Changed holding tree_mu_: shared suffices to add, and to take away an
  // open (ReleaseHandle then frees exclusively what it left unused); lookups
  // are taken away exclusively. Freeing holds it exclusively, so no count
  // changes, nor rises from 0, while an inode is being freed.
  std::atomic<uint64_t> lookups{0};
  std::atomic<uint32_t> opens{0};
  // Page-cache pushes (StoreInPageCache) and writers exclude each other:
  // `writers` counts handles that may write and truncations under way,
  // `storing` is set while a push runs. Both change under MemFs::store_mu_.
  std::atomic<uint32_t> writers{0};
  bool storing = false;
};

}  // namespace efuse

#endif  // EFUSE_CORE_MEMFS_MEMFS_INTERNAL_H_
