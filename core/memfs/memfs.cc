// core/memfs/memfs.cc — the in-memory POSIX file system.
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
#include "core/privileges.h"
#include "proto/abi.h"
#include "proto/notify.h"

namespace efuse {

namespace {

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

timespec CoarseNow() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return ts;
}

timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

bool NotAfter(const timespec& a, const timespec& b) {
  return a.tv_sec < b.tv_sec ||
         (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
}

// POSIX class selection: the owner class alone decides for the owner, the
// group class for group members. Root passes read/write always and exec when
// any x bit is set (directories are always searchable).
bool Permits(const RequestContext& ctx, uint32_t mode, uint32_t uid,
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
bool KillSuidgid(uint32_t* mode, uint32_t gid, const RequestContext& ctx) {
  const uint32_t bits = *mode & KilledSetIdBits(*mode, gid, ctx);
  *mode &= ~bits;
  return bits != 0;
}

// A name for a new entry: ENAMETOOLONG, or EINVAL for what no kernel sends.
Status CheckNewName(std::string_view name) {
  if (name.size() > MemFs::kMaxNameLength) return Errno(ENAMETOOLONG);
  if (name.empty() || name.find('/') != std::string_view::npos) {
    return Errno(EINVAL);
  }
  return OkStatus();
}

enum class XattrClass { kUser, kTrusted, kSecurity, kUnsupported };

XattrClass ClassifyXattr(std::string_view name, size_t* prefix_len) {
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
Status CheckXattrName(std::string_view name, XattrClass* cls) {
  if (name.empty() || name.size() > MemFs::kMaxXattrNameLength) {
    return Errno(ERANGE);
  }
  size_t prefix_len = 0;
  *cls = ClassifyXattr(name, &prefix_len);
  if (*cls == XattrClass::kUnsupported) return Errno(EOPNOTSUPP);
  if (name.size() == prefix_len) return Errno(EINVAL);
  return OkStatus();
}

}  // namespace

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
  uint64_t next_cookie = kFirstEntryCookie;
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
  Inode(uint64_t id, uint32_t type, SpaceAccount* space)
      : id(id), type(type), data(space) {}

  bool MayAccess(const RequestContext& ctx, uint32_t mask) const {
    memfs::ReadLock l(&mu);
    return Permits(ctx, mode, uid, gid, mask);
  }
  uint32_t Uid() const {
    memfs::ReadLock l(&mu);
    return uid;
  }
  // An entry of this directory changed: `entries` and `subdirs` are the
  // changes in entry count and in subdirectory count (nlink).
  void TouchDir(const timespec& now, int entries, int subdirs) {
    memfs::WriteLock l(&mu);
    mtime = ctime = now;
    dir_size +=
        static_cast<int64_t>(entries) * static_cast<int64_t>(kDirentSize);
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
    auto it = xattrs.find(kCapabilityXattr);
    if (it == xattrs.end()) return;
    space.Release(it->first.size() + it->second.size());
    xattrs.erase(it);
  }
  // Relatime: the first read after a change, or one a day, sets atime.
  bool NeedsAtime(const timespec& now) const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return NotAfter(atime, mtime) || NotAfter(atime, ctime) ||
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
  // Incremented holding tree_mu_ (shared suffices); decremented only holding
  // it exclusively, which is also what freeing needs, so no count can rise
  // from 0 while an inode is being freed.
  std::atomic<uint64_t> lookups{0};
  std::atomic<uint32_t> opens{0};
  // Page-cache pushes (StoreInPageCache) and writers exclude each other:
  // `writers` counts handles that may write and truncations under way,
  // `storing` is set while a push runs. Both change under MemFs::store_mu_.
  std::atomic<uint32_t> writers{0};
  bool storing = false;
};

MemFs::MemFs(MemFsOptions opts) : opts_(opts), space_(opts.size_limit) {
  auto root = std::make_shared<Inode>(kRootId, S_IFDIR, &space_);
  const timespec now = Now();
  {
    memfs::WriteLock l(&root->mu);
    root->mode = S_IFDIR | (opts_.root_mode & kPermBits);
    root->uid = opts_.root_uid;
    root->gid = opts_.root_gid;
    root->nlink = 2;
    root->atime = root->mtime = root->ctime = root->btime = now;
    root->dir_size = 2 * kDirentSize;
  }
  root->dir = std::make_unique<DirData>();
  root->dir->parent = root.get();
  root_ = root.get();
  memfs::WriteLock l(&table_mu_);
  inodes_.emplace(kRootId, std::move(root));
}

MemFs::~MemFs() = default;

std::shared_ptr<MemFs::Inode> MemFs::Find(uint64_t nodeid) const {
  memfs::ReadLock l(&table_mu_);
  auto it = inodes_.find(nodeid);
  return it == inodes_.end() ? nullptr : it->second;
}

// No table_mu_: insertions and removals hold tree_mu_ exclusively, so the
// map cannot change under a holder of tree_mu_ (other readers only read).
MemFs::Inode* MemFs::FindInTree(uint64_t nodeid) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  auto it = inodes_.find(nodeid);
  return it == inodes_.end() ? nullptr : it->second.get();
}

Entry MemFs::LockedEntryOf(Inode& n) const {
  Entry e;
  e.nodeid = n.id;
  e.generation = 0;
  {
    memfs::ReadLock l(&n.mu);
    e.attr = n.Attrs();
  }
  e.entry_timeout = opts_.entry_timeout;
  e.attr_timeout = opts_.attr_timeout;
  return e;
}

Result<MemFs::Inode*> MemFs::DirForChange(uint64_t id) {
  Inode* n = FindInTree(id);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type != S_IFDIR) return Errno(ENOTDIR);
  if (n->nlink == 0) return Errno(ENOENT);  // removed while in use
  return n;
}

Status MemFs::CheckCanAdd(const RequestContext& ctx, Inode* parent,
                          std::string_view name) {
  if (Status s = CheckNewName(name); !s) return s;
  if (!parent->MayAccess(ctx, kX)) return Errno(EACCES);
  if (IsDotOrDotDot(name) || parent->dir->by_name.contains(name)) {
    return Errno(EEXIST);
  }
  if (!parent->MayAccess(ctx, kW)) return Errno(EACCES);
  return OkStatus();
}

Result<MemFs::Inode*> MemFs::NewInode(const RequestContext& ctx, Inode* parent,
                                      uint32_t mode, uint32_t rdev,
                                      std::string_view target) {
  {
    memfs::ReadLock l(&table_mu_);
    if (inodes_.size() >= opts_.max_inodes) return Errno(ENOSPC);
  }
  const uint32_t type = mode & S_IFMT;
  uint32_t perm = mode & kPermBits;
  uint32_t gid = ctx.gid;
  {
    memfs::ReadLock l(&parent->mu);
    // A setgid directory hands its group down, and its setgid bit to subdirs.
    if ((parent->mode & S_ISGID) != 0) {
      gid = parent->gid;
      if (type == S_IFDIR) perm |= S_ISGID;
    }
  }
  if (type != S_IFDIR && (perm & S_ISGID) != 0 && ctx.uid != 0 &&
      !ctx.InGroup(gid)) {
    perm &= ~static_cast<uint32_t>(S_ISGID);
  }
  auto n = std::make_shared<Inode>(next_id_++, type, &space_);
  n->target = std::string(target);
  const timespec now = Now();
  {
    memfs::WriteLock l(&n->mu);
    n->mode = type | perm;
    n->uid = ctx.uid;
    n->gid = gid;
    n->rdev = rdev;
    n->nlink = type == S_IFDIR ? 2 : 1;
    n->atime = n->mtime = n->ctime = n->btime = now;
    if (type == S_IFDIR) n->dir_size = 2 * kDirentSize;
  }
  if (type == S_IFDIR) {
    n->dir = std::make_unique<DirData>();
    n->dir->parent = parent;
  }
  Inode* raw = n.get();
  memfs::WriteLock l(&table_mu_);
  inodes_.emplace(raw->id, std::move(n));
  return raw;
}

void MemFs::AddEntry(Inode* dir, std::string_view name, Inode* child,
                     const timespec& now) {
  DirData& d = *dir->dir;
  const uint64_t cookie = d.next_cookie++;
  auto it = d.slots.emplace_hint(d.slots.end(), cookie,
                                 DirData::Slot{std::string(name), child});
  d.by_name.emplace(it->second.name, it);
  dir->TouchDir(now, 1, child->type == S_IFDIR ? 1 : 0);
  DirChanged(dir);
}

void MemFs::RemoveEntry(Inode* dir, std::string_view name,
                        const timespec& now) {
  DirData& d = *dir->dir;
  auto it = d.FindName(name);
  if (it == d.slots.end()) return;
  const bool is_dir = it->second.inode->type == S_IFDIR;
  d.by_name.erase(std::string_view(it->second.name));
  d.slots.erase(it);
  dir->TouchDir(now, -1, is_dir ? -1 : 0);
  DirChanged(dir);
}

void MemFs::DirChanged(Inode* dir) {
  // Opened without OPENDIR, a directory's listing is kept by the kernel,
  // which checks it for changes only when a reader starts at position 0
  // (fs/fuse/readdir.c): a reader partway through would take up a listing
  // another reader began before this change. Dropped now, before the
  // reply and while the kernel holds the directory's lock, it is found
  // incomplete and read again.
  if (kernel_ == nullptr || !dir->dir->listed_without_handle.load(std::memory_order_acquire)) return;
  kernel_->InvalidateData(dir->id).ok();
}

bool MemFs::StickyDenies(const RequestContext& ctx, const Inode& dir,
                         const Inode& child) const {
  if (ctx.uid == 0 || !ctx.IdentityKnown()) return false;  // unknown: the kernel checked
  {
    memfs::ReadLock l(&dir.mu);
    if ((dir.mode & S_ISVTX) == 0 || dir.uid == ctx.uid) return false;
  }
  return child.Uid() != ctx.uid;
}

bool MemFs::IsInSubtree(const Inode* dir, const Inode* top) const {
  for (const Inode* p = dir; p != nullptr; p = p->dir->parent) {
    if (p == top) return true;
    if (p == root_) return false;
  }
  return false;
}

void MemFs::BeginWrite(Inode& n) {
  absl::MutexLock l(&store_mu_);
  while (n.storing) store_cv_.Wait(&store_mu_);
  n.writers.fetch_add(1, std::memory_order_relaxed);
}

void MemFs::EndWrite(Inode& n) { n.writers.fetch_sub(1, std::memory_order_relaxed); }

OpenReply MemFs::NewHandle(std::shared_ptr<Inode> n, uint32_t flags) {
  n->opens.fetch_add(1, std::memory_order_relaxed);
  memfs::WriteLock l(&handles_mu_);
  OpenReply reply;
  reply.fh = next_fh_++;
  // Locks stay in the kernel and close has nothing to flush: no FLUSH
  // round trip on every close().
  reply.open_flags = abi::kFopenNoflush;
  // While another write handle is open, an open must not drop the cached
  // pages: the kernel unlocks a page once a write has copied into it,
  // before the WRITE reaches us, so a reader could fetch the page again
  // from the old data and leave it cached over the writer's bytes (a stale
  // read after write). Only the kernel changes memfs data, so its pages are
  // current. An O_TRUNC open still drops them.
  const uint32_t own = (flags & O_ACCMODE) != O_RDONLY ? 1 : 0;  // counted by BeginWrite
  if (n->type == S_IFREG && (flags & O_TRUNC) == 0 &&
      n->writers.load(std::memory_order_relaxed) > own) {
    reply.open_flags |= abi::kFopenKeepCache;
  }
  handles_.emplace(reply.fh, Handle{std::move(n), flags});
  return reply;
}

Result<OpenReply> MemFs::OpenInode(const RequestContext& ctx,
                                   std::shared_ptr<Inode> n, uint32_t flags,
                                   uint32_t open_flags, bool is_new) {
  const uint32_t access = flags & O_ACCMODE;
  uint32_t mask = access == O_RDONLY ? kR : access == O_WRONLY ? kW : kR | kW;
  // execve() opens with execute permission alone (a 0711 program runs for
  // anyone); without default_permissions the kernel checks only that some
  // x bit is set, so the class rule is ours to apply (a group denied exec
  // must not run a setuid program that others may).
  if ((flags & abi::kOpenFlagExec) != 0 && access == O_RDONLY) mask = kX;
  if ((flags & O_TRUNC) != 0) mask |= kW;
  if (n->type == S_IFDIR && (mask & kW) != 0) return Errno(EISDIR);
  if (n->type == S_IFLNK) return Errno(ELOOP);
  // A write handle counts as a writer until released; a read-only O_TRUNC
  // only while it truncates. Taken before n->mu: a push in progress holds
  // it briefly and must finish first.
  const bool writes = (mask & kW) != 0;
  if (writes) BeginWrite(*n);
  const bool write_handle = access != O_RDONLY;
  bool killed = false;
  {
    memfs::WriteLock l(&n->mu);
    // A new file is opened with the rights asked for, whatever its mode.
    if (!is_new && !Permits(ctx, n->mode, n->uid, n->gid, mask)) {
      if (writes) EndWrite(*n);
      return Errno(EACCES);
    }
    const timespec now = Now();
    if (!is_new && n->type == S_IFREG && (flags & O_TRUNC) != 0) {
      n->data.Truncate(0);
      n->mtime = n->ctime = now;
      n->DropCapability(space_);
    }
    if ((open_flags & abi::kOpenKillSuidgid) != 0) {
      killed = KillSuidgid(&n->mode, n->gid, ctx);
      if (killed) n->ctime = now;
    }
  }
  if (writes && !write_handle) EndWrite(*n);
  // An OPEN reply carries no attributes.
  if (killed && kernel_ != nullptr) (void)kernel_->DropCachedAttributes(n->id);
  return NewHandle(std::move(n), flags);
}

void MemFs::ReleaseHandle(uint64_t fh) {
  memfs::WriteLock tl(&tree_mu_);
  std::shared_ptr<Inode> n;
  {
    memfs::WriteLock l(&handles_mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return;
    n = std::move(it->second.inode);
    if ((it->second.flags & O_ACCMODE) != O_RDONLY) EndWrite(*n);
    handles_.erase(it);
  }
  n->opens.fetch_sub(1, std::memory_order_relaxed);
  MaybeFree(n.get());
}

void MemFs::MaybeFree(Inode* n) {
  if (n == root_ || n->nlink != 0 ||
      n->lookups.load(std::memory_order_relaxed) != 0 ||
      n->opens.load(std::memory_order_relaxed) != 0) {
    return;
  }
  {
    memfs::WriteLock l(&n->mu);
    n->dead = true;
    n->data.Truncate(0);
    uint64_t bytes = n->target.size();
    for (const auto& [name, value] : n->xattrs)
      bytes += name.size() + value.size();
    n->xattrs.clear();
    space_.Release(bytes);
  }
  memfs::WriteLock l(&table_mu_);
  inodes_.erase(n->id);  // may destroy *n
}

// ---------------------------------------------------------------------------
// Names.

Result<Entry> MemFs::Lookup(const RequestContext& ctx, uint64_t parent,
                            std::string_view name) {
  if (name.size() > kMaxNameLength) return Errno(ENAMETOOLONG);
  memfs::ReadLock tl(&tree_mu_);
  Inode* dir = FindInTree(parent);
  if (dir == nullptr) return Errno(ENOENT);
  if (name == "." && dir->type != S_IFDIR) {
    // The kernel's export operations (open_by_handle_at, NFS) ask for a
    // node it forgot by this name, whatever its type; node ids are never
    // reused, so the id alone names the file. Gone once unlinked.
    if (dir->nlink == 0) return Errno(ESTALE);
    dir->lookups.fetch_add(1, std::memory_order_relaxed);
    return LockedEntryOf(*dir);
  }
  if (dir->type != S_IFDIR) return Errno(ENOTDIR);
  if (!dir->MayAccess(ctx, kX)) return Errno(EACCES);
  Inode* child = nullptr;
  if (dir->nlink != 0) {
    if (name == ".") {
      child = dir;
    } else if (name == "..") {
      child = dir->dir->parent;
    } else {
      auto it = dir->dir->FindName(name);
      if (it != dir->dir->slots.end()) child = it->second.inode;
    }
  }
  if (child == nullptr) {
    if (opts_.negative_timeout <= 0) return Errno(ENOENT);
    Entry negative;
    negative.nodeid = 0;
    negative.entry_timeout = opts_.negative_timeout;
    negative.attr_timeout = 0;
    return negative;
  }
  child->lookups.fetch_add(1, std::memory_order_relaxed);
  return LockedEntryOf(*child);
}

void MemFs::AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const {
  size_t all = 0, known = 0;
  {
    memfs::ReadLock l(&table_mu_);
    all = inodes_.size();
    for (const auto& [id, inode] : inodes_)
      if (inode.get() != root_ && inode->lookups.load(std::memory_order_relaxed) != 0) ++known;
  }
  lines->emplace_back("memfs_inodes", std::to_string(all));
  lines->emplace_back("memfs_known_to_kernel", std::to_string(known));
}

void MemFs::Forget(uint64_t nodeid, uint64_t nlookup) {
  memfs::WriteLock tl(&tree_mu_);
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return;
  const uint64_t have = n->lookups.load(std::memory_order_relaxed);
  n->lookups.store(have > nlookup ? have - nlookup : 0,
                   std::memory_order_relaxed);
  MaybeFree(n.get());
}

Result<Entry> MemFs::Mknod(const RequestContext& ctx, uint64_t parent,
                           std::string_view name, uint32_t mode, uint32_t rdev,
                           uint32_t umask) {
  uint32_t type = mode & S_IFMT;
  if (type == 0) type = S_IFREG;
  switch (type) {
    case S_IFREG:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      break;
    case S_IFDIR:
      return Errno(EPERM);
    default:
      return Errno(EINVAL);
  }
  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> dir = DirForChange(parent);
  if (!dir) return dir.error();
  if (Status s = CheckCanAdd(ctx, *dir, name); !s) return s.error();
  Result<Inode*> n =
      NewInode(ctx, *dir, type | (mode & ~umask & kPermBits), rdev);
  if (!n) return n.error();
  AddEntry(*dir, name, *n, Now());
  (*n)->lookups.fetch_add(1, std::memory_order_relaxed);
  return LockedEntryOf(**n);
}

Result<Entry> MemFs::Mkdir(const RequestContext& ctx, uint64_t parent,
                           std::string_view name, uint32_t mode,
                           uint32_t umask) {
  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> dir = DirForChange(parent);
  if (!dir) return dir.error();
  if (Status s = CheckCanAdd(ctx, *dir, name); !s) return s.error();
  // mkdir(2) takes only permission and sticky bits; setgid comes from the
  // parent (NewInode).
  const uint32_t perm = mode & ~umask & (0777 | S_ISVTX);
  Result<Inode*> n = NewInode(ctx, *dir, S_IFDIR | perm, 0);
  if (!n) return n.error();
  AddEntry(*dir, name, *n, Now());
  (*n)->lookups.fetch_add(1, std::memory_order_relaxed);
  return LockedEntryOf(**n);
}

Result<Entry> MemFs::Symlink(const RequestContext& ctx, uint64_t parent,
                             std::string_view name, std::string_view target) {
  if (target.empty()) return Errno(ENOENT);
  if (target.size() > kMaxSymlinkLength) return Errno(ENAMETOOLONG);
  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> dir = DirForChange(parent);
  if (!dir) return dir.error();
  if (Status s = CheckCanAdd(ctx, *dir, name); !s) return s.error();
  if (!space_.Reserve(target.size())) return Errno(ENOSPC);
  Result<Inode*> n = NewInode(ctx, *dir, S_IFLNK | 0777, 0, target);
  if (!n) {
    space_.Release(target.size());
    return n.error();
  }
  AddEntry(*dir, name, *n, Now());
  (*n)->lookups.fetch_add(1, std::memory_order_relaxed);
  return LockedEntryOf(**n);
}

Result<Entry> MemFs::Link(const RequestContext& ctx, uint64_t nodeid,
                          uint64_t newparent, std::string_view newname) {
  memfs::WriteLock tl(&tree_mu_);
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type == S_IFDIR) return Errno(EPERM);
  Result<Inode*> dir = DirForChange(newparent);
  if (!dir) return dir.error();
  if (Status s = CheckCanAdd(ctx, *dir, newname); !s) return s.error();
  if (n->nlink >= kMaxLinks) return Errno(EMLINK);
  const timespec now = Now();
  AddEntry(*dir, newname, n.get(), now);
  // nlink may be 0 here: an O_TMPFILE file getting its first name.
  n->AddLinks(1, now);
  n->lookups.fetch_add(1, std::memory_order_relaxed);
  return LockedEntryOf(*n);
}

Status MemFs::Unlink(const RequestContext& ctx, uint64_t parent,
                     std::string_view name) {
  if (name.size() > kMaxNameLength) return Errno(ENAMETOOLONG);
  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> dir = DirForChange(parent);
  if (!dir) return dir.error();
  if (!(*dir)->MayAccess(ctx, kX)) return Errno(EACCES);
  if (IsDotOrDotDot(name)) return Errno(EISDIR);
  auto it = (*dir)->dir->FindName(name);
  if (it == (*dir)->dir->slots.end()) return Errno(ENOENT);
  Inode* child = it->second.inode;
  // The order of may_delete() in Linux: EACCES, then sticky EPERM, then type.
  if (!(*dir)->MayAccess(ctx, kW)) return Errno(EACCES);
  if (StickyDenies(ctx, **dir, *child)) return Errno(EPERM);
  if (child->type == S_IFDIR) return Errno(EISDIR);
  const timespec now = Now();
  RemoveEntry(*dir, name, now);
  child->AddLinks(-1, now);
  MaybeFree(child);
  return OkStatus();
}

Status MemFs::Rmdir(const RequestContext& ctx, uint64_t parent,
                    std::string_view name) {
  if (name.size() > kMaxNameLength) return Errno(ENAMETOOLONG);
  if (name == ".") return Errno(EINVAL);
  if (name == "..") return Errno(ENOTEMPTY);
  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> dir = DirForChange(parent);
  if (!dir) return dir.error();
  if (!(*dir)->MayAccess(ctx, kX)) return Errno(EACCES);
  auto it = (*dir)->dir->FindName(name);
  if (it == (*dir)->dir->slots.end()) return Errno(ENOENT);
  Inode* child = it->second.inode;
  if (!(*dir)->MayAccess(ctx, kW)) return Errno(EACCES);
  if (StickyDenies(ctx, **dir, *child)) return Errno(EPERM);
  if (child->type != S_IFDIR) return Errno(ENOTDIR);
  if (!child->dir->slots.empty()) return Errno(ENOTEMPTY);
  const timespec now = Now();
  RemoveEntry(*dir, name, now);
  child->AddLinks(-static_cast<int>(child->nlink), now);
  child->dir->parent = nullptr;
  MaybeFree(child);
  return OkStatus();
}

Status MemFs::Rename(const RequestContext& ctx, uint64_t parent,
                     std::string_view name, uint64_t newparent,
                     std::string_view newname, uint32_t flags) {
  constexpr uint32_t kKnown =
      RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT;
  // Whiteouts belong to overlayfs over a real disk; memfs makes none.
  if ((flags & ~kKnown) != 0 || (flags & RENAME_WHITEOUT) != 0) {
    return Errno(EINVAL);
  }
  const bool exchange = (flags & RENAME_EXCHANGE) != 0;
  const bool noreplace = (flags & RENAME_NOREPLACE) != 0;
  if (exchange && noreplace) return Errno(EINVAL);
  if (name.size() > kMaxNameLength) return Errno(ENAMETOOLONG);
  if (Status s = CheckNewName(newname); !s) return s;
  if (IsDotOrDotDot(name) || IsDotOrDotDot(newname)) return Errno(EINVAL);

  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> sdir_r = DirForChange(parent);
  if (!sdir_r) return sdir_r.error();
  Result<Inode*> ddir_r = DirForChange(newparent);
  if (!ddir_r) return ddir_r.error();
  Inode* sdir = *sdir_r;
  Inode* ddir = *ddir_r;
  if (!sdir->MayAccess(ctx, kX) || !ddir->MayAccess(ctx, kX)) {
    return Errno(EACCES);
  }
  auto sit = sdir->dir->FindName(name);
  if (sit == sdir->dir->slots.end()) return Errno(ENOENT);
  auto dit = ddir->dir->FindName(newname);
  Inode* src = sit->second.inode;
  Inode* dst = dit == ddir->dir->slots.end() ? nullptr : dit->second.inode;
  if (exchange && dst == nullptr) return Errno(ENOENT);
  if (noreplace && dst != nullptr) return Errno(EEXIST);
  // POSIX: two links to one file (or one name to itself): nothing to do.
  if (src == dst) return OkStatus();
  if (!sdir->MayAccess(ctx, kW) || !ddir->MayAccess(ctx, kW)) {
    return Errno(EACCES);
  }
  if (StickyDenies(ctx, *sdir, *src)) return Errno(EPERM);
  if (dst != nullptr && StickyDenies(ctx, *ddir, *dst)) return Errno(EPERM);
  const bool src_is_dir = src->type == S_IFDIR;
  const bool dst_is_dir = dst != nullptr && dst->type == S_IFDIR;
  if (dst != nullptr && !exchange) {
    if (src_is_dir && !dst_is_dir) return Errno(ENOTDIR);
    if (!src_is_dir && dst_is_dir) return Errno(EISDIR);
  }
  // A directory cannot move below itself.
  if (src_is_dir && IsInSubtree(ddir, src)) return Errno(EINVAL);
  if (exchange && dst_is_dir && IsInSubtree(sdir, dst)) return Errno(EINVAL);
  if (dst_is_dir && !exchange && !dst->dir->slots.empty()) {
    return Errno(ENOTEMPTY);
  }
  // A directory changing parent rewrites its "..", which needs write on it.
  if (sdir != ddir) {
    if (src_is_dir && !src->MayAccess(ctx, kW)) return Errno(EACCES);
    if (exchange && dst_is_dir && !dst->MayAccess(ctx, kW))
      return Errno(EACCES);
  }

  const timespec now = Now();
  if (exchange) {
    // Both names keep their cookies; only what they point at swaps.
    sit->second.inode = dst;
    dit->second.inode = src;
    if (src_is_dir) src->dir->parent = ddir;
    if (dst_is_dir) dst->dir->parent = sdir;
    const int moved =
        static_cast<int>(src_is_dir) - static_cast<int>(dst_is_dir);
    sdir->TouchDir(now, 0, -moved);
    ddir->TouchDir(now, 0, moved);
    DirChanged(sdir);
    if (ddir != sdir) DirChanged(ddir);
    src->TouchCtime(now);
    dst->TouchCtime(now);
    return OkStatus();
  }
  RemoveEntry(sdir, name, now);  // `dit` stays valid: map iterators are stable
  if (dst != nullptr) {
    // The target name keeps its cookie and now names `src`.
    dit->second.inode = src;
    ddir->TouchDir(now, 0,
                   static_cast<int>(src_is_dir) - static_cast<int>(dst_is_dir));
    DirChanged(ddir);
    if (dst_is_dir) {
      dst->AddLinks(-static_cast<int>(dst->nlink), now);
      dst->dir->parent = nullptr;
    } else {
      dst->AddLinks(-1, now);
    }
  } else {
    AddEntry(ddir, newname, src, now);
  }
  if (src_is_dir) src->dir->parent = ddir;
  src->TouchCtime(now);
  if (dst != nullptr) MaybeFree(dst);
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Attributes.

Result<AttrReply> MemFs::GetAttr(const RequestContext& ctx, uint64_t nodeid,
                                 const uint64_t* fh) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  memfs::ReadLock l(&n->mu);
  if (n->dead) return Errno(ENOENT);
  return AttrReply{n->Attrs(), opts_.attr_timeout};
}

Result<AttrReply> MemFs::SetAttr(const RequestContext& ctx, uint64_t nodeid,
                                 const SetAttrRequest& req) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  // A truncation is a writer while it runs (see StoreInPageCache).
  const bool resizes = (req.valid & abi::kFattrSize) != 0;
  if (resizes) BeginWrite(*n);
  absl::Cleanup end_write = [&] {
    if (resizes) EndWrite(*n);
  };
  memfs::WriteLock l(&n->mu);
  if (n->dead) return Errno(ENOENT);
  const uint32_t v = req.valid;
  // An unknown caller (idmapped mounts) passed the kernel's own checks of
  // the same rules (setattr_prepare, default_permissions), which also took
  // setgid out of a chmod by a non-member.
  const bool root = ctx.uid == 0 || !ctx.IdentityKnown();
  const bool owner = ctx.uid == n->uid;

  // Check everything before changing anything, so a refused request changes
  // nothing. The rules are Linux's chown_ok/chgrp_ok/inode_change_ok.
  if ((v & abi::kFattrMode) != 0 && !root && !owner) return Errno(EPERM);
  if ((v & abi::kFattrUid) != 0 && !root && !(owner && req.uid == n->uid)) {
    return Errno(EPERM);
  }
  if ((v & abi::kFattrGid) != 0 && !root &&
      !(owner && (req.gid == n->gid || ctx.InGroup(req.gid)))) {
    return Errno(EPERM);
  }
  if ((v & abi::kFattrSize) != 0) {
    if (n->type == S_IFDIR) return Errno(EISDIR);
    if (n->type != S_IFREG) return Errno(EINVAL);
    if (req.size > kMaxFileSize) return Errno(EFBIG);
    // ftruncate (kFattrFh) was checked against the handle's open mode.
    if ((v & abi::kFattrFh) == 0 &&
        !Permits(ctx, n->mode, n->uid, n->gid, kW)) {
      return Errno(EACCES);
    }
  }
  const bool atime_now = (v & abi::kFattrAtimeNow) != 0;
  const bool mtime_now = (v & abi::kFattrMtimeNow) != 0;
  const bool atime_set = (v & abi::kFattrAtime) != 0 && !atime_now;
  const bool mtime_set = (v & abi::kFattrMtime) != 0 && !mtime_now;
  if (atime_set || mtime_set) {
    if (!root && !owner) return Errno(EPERM);
  } else if (atime_now || mtime_now) {
    if (!root && !owner && !Permits(ctx, n->mode, n->uid, n->gid, kW)) {
      return Errno(EACCES);
    }
  }

  const timespec now = Now();
  if ((v & abi::kFattrMode) != 0) {
    uint32_t mode = n->type | (req.mode & kPermBits);
    const uint32_t gid = (v & abi::kFattrGid) != 0 ? req.gid : n->gid;
    if (!root && !ctx.InGroup(gid)) mode &= ~static_cast<uint32_t>(S_ISGID);
    n->mode = mode;
  }
  const uint32_t old_gid = n->gid;
  if ((v & abi::kFattrUid) != 0) n->uid = req.uid;
  if ((v & abi::kFattrGid) != 0) n->gid = req.gid;
  // As Linux's chown_common: any chown of a non-directory drops setuid (and
  // setgid as core/privileges.h says), whoever asks; a SETATTR with nothing
  // to set is one (IsBareChown).
  if (IsBareChown(v) && n->type != S_IFDIR) {
    KillSuidgid(&n->mode, old_gid, ctx);
    n->DropCapability(space_);
    n->ctime = now;
  }
  if ((v & (abi::kFattrUid | abi::kFattrGid)) != 0 && n->type != S_IFDIR) {
    KillSuidgid(&n->mode, old_gid, ctx);
    n->DropCapability(space_);
  }
  if ((v & abi::kFattrSize) != 0) {
    n->data.Truncate(req.size);
    n->DropCapability(space_);
    n->mtime = now;
  }
  if ((v & abi::kFattrKillSuidgid) != 0) KillSuidgid(&n->mode, old_gid, ctx);
  if (atime_now) n->atime = now;
  if (atime_set) n->atime = req.atime;
  if (mtime_now) n->mtime = now;
  if (mtime_set) n->mtime = req.mtime;
  constexpr uint32_t kChanges =
      abi::kFattrMode | abi::kFattrUid | abi::kFattrGid | abi::kFattrSize |
      abi::kFattrAtime | abi::kFattrMtime | abi::kFattrAtimeNow |
      abi::kFattrMtimeNow | abi::kFattrKillSuidgid | abi::kFattrCtime;
  if ((v & abi::kFattrCtime) != 0) {
    n->ctime = req.ctime;
  } else if ((v & kChanges) != 0) {
    n->ctime = now;
  }
  return AttrReply{n->Attrs(), opts_.attr_timeout};
}

Result<std::string> MemFs::ReadLink(const RequestContext& ctx,
                                    uint64_t nodeid) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type != S_IFLNK) return Errno(EINVAL);
  return n->target;
}

Status MemFs::Access(const RequestContext& ctx, uint64_t nodeid,
                     uint32_t mask) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if ((mask & (kR | kW | kX)) == 0) return OkStatus();  // F_OK
  if (!n->MayAccess(ctx, mask)) return Errno(EACCES);
  return OkStatus();
}

Result<FsStats> MemFs::StatFs(const RequestContext& ctx, uint64_t nodeid) {
  FsStats s;
  s.bsize = s.frsize = FileData::kBlockSize;
  s.namelen = kMaxNameLength;
  s.blocks = opts_.size_limit / FileData::kBlockSize;
  const uint64_t used =
      (space_.used() + FileData::kBlockSize - 1) / FileData::kBlockSize;
  s.bfree = s.bavail = s.blocks > used ? s.blocks - used : 0;
  s.files = opts_.max_inodes;
  const uint64_t inodes = InodeCount();
  s.ffree = s.files > inodes ? s.files - inodes : 0;
  return s;
}

// ---------------------------------------------------------------------------
// Files.

Result<OpenReply> MemFs::Open(const RequestContext& ctx, uint64_t nodeid,
                              uint32_t flags, uint32_t open_flags) {
  memfs::ReadLock tl(&tree_mu_);
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  return OpenInode(ctx, std::move(n), flags, open_flags, /*is_new=*/false);
}

Result<CreateReply> MemFs::Create(const RequestContext& ctx, uint64_t parent,
                                  std::string_view name, uint32_t mode,
                                  uint32_t umask, uint32_t flags,
                                  uint32_t open_flags) {
  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> dir_r = DirForChange(parent);
  if (!dir_r) return dir_r.error();
  Inode* dir = *dir_r;
  if (Status s = CheckNewName(name); !s) return s.error();
  if (!dir->MayAccess(ctx, kX)) return Errno(EACCES);
  auto it = dir->dir->FindName(name);
  if (it != dir->dir->slots.end() || IsDotOrDotDot(name)) {
    // The name appeared since the kernel's lookup: O_EXCL fails, otherwise
    // this is a plain open of what is there.
    if ((flags & O_EXCL) != 0) return Errno(EEXIST);
    Inode* existing = it != dir->dir->slots.end() ? it->second.inode
                      : name == "."               ? dir
                                                  : dir->dir->parent;
    if (existing->type == S_IFDIR) return Errno(EISDIR);
    Result<OpenReply> open =
        OpenInode(ctx, Find(existing->id), flags, open_flags, /*is_new=*/false);
    if (!open) return open.error();
    existing->lookups.fetch_add(1, std::memory_order_relaxed);
    return CreateReply{LockedEntryOf(*existing), *open};
  }
  if (!dir->MayAccess(ctx, kW)) return Errno(EACCES);
  Result<Inode*> n =
      NewInode(ctx, dir, S_IFREG | (mode & ~umask & kPermBits), 0);
  if (!n) return n.error();
  AddEntry(dir, name, *n, Now());
  Result<OpenReply> open =
      OpenInode(ctx, Find((*n)->id), flags, 0, /*is_new=*/true);
  if (!open) return open.error();  // unreachable: a new file opens
  (*n)->lookups.fetch_add(1, std::memory_order_relaxed);
  return CreateReply{LockedEntryOf(**n), *open};
}

Result<CreateReply> MemFs::TmpFile(const RequestContext& ctx, uint64_t parent,
                                   uint32_t mode, uint32_t umask,
                                   uint32_t flags) {
  memfs::WriteLock tl(&tree_mu_);
  Result<Inode*> dir = DirForChange(parent);
  if (!dir) return dir.error();
  if (!(*dir)->MayAccess(ctx, kW | kX)) return Errno(EACCES);
  Result<Inode*> n =
      NewInode(ctx, *dir, S_IFREG | (mode & ~umask & kPermBits), 0);
  if (!n) return n.error();
  (*n)->AddLinks(-1, Now());  // unnamed until Link() gives it a name
  if ((flags & O_ACCMODE) != O_RDONLY) BeginWrite(**n);  // new: never being pushed
  OpenReply open = NewHandle(Find((*n)->id), flags);
  (*n)->lookups.fetch_add(1, std::memory_order_relaxed);
  return CreateReply{LockedEntryOf(**n), open};
}

Result<size_t> MemFs::Read(const RequestContext& ctx, uint64_t nodeid,
                           uint64_t fh, uint64_t offset, std::span<uint8_t> out,
                           uint32_t flags) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type == S_IFDIR) return Errno(EISDIR);
  if (n->type != S_IFREG) return Errno(EINVAL);
  size_t count;
  bool touch;
  {
    // Reads of one file run in parallel; only an atime update excludes.
    // The clock only decides the 24-hour rule here, where the coarse one
    // (a third of the cost of a precise read in this VM) is exact enough.
    memfs::ReadLock l(&n->mu);
    count = n->data.Read(offset, out);
    // A noatime mount, or an O_NOATIME open: reads leave atime alone.
    touch = !opts_.noatime && (flags & O_NOATIME) == 0 && n->NeedsAtime(CoarseNow());
  }
  if (touch) {
    const timespec now = Now();
    memfs::WriteLock l(&n->mu);
    if (n->NeedsAtime(now)) n->atime = now;
  }
  return count;
}

void MemFs::Init(const InitInfo& info) { kernel_ = info.kernel; }

Result<uint64_t> MemFs::StoreInPageCache(uint64_t nodeid, uint64_t max_bytes) {
  if (kernel_ == nullptr) return Errno(ENOSYS);
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type != S_IFREG) return Errno(EINVAL);
  // Nobody may change the file from the snapshot until the kernel holds it:
  // pushed pages older than the kernel's would overwrite them, and a push
  // after a truncation would grow the file back. Writers wait (BeginWrite);
  // a file already open for writing is not pushed.
  {
    absl::MutexLock l(&store_mu_);
    if (n->writers.load(std::memory_order_relaxed) != 0 || n->storing) return Errno(EBUSY);
    n->storing = true;
  }
  absl::Cleanup done = [&] {
    absl::MutexLock l(&store_mu_);
    n->storing = false;
    store_cv_.SignalAll();
  };
  std::vector<uint8_t> data;
  {
    memfs::ReadLock l(&n->mu);
    if (n->dead) return Errno(ENOENT);
    if (n->data.size() > max_bytes) return Errno(EFBIG);
    data.resize(n->data.size());
    n->data.Read(0, data);
  }
  // Outside n->mu: the kernel may wait on requests this daemon serves.
  constexpr size_t kChunk = 1 << 20;
  for (size_t off = 0; off < data.size(); off += kChunk) {
    std::span<const uint8_t> chunk = std::span<const uint8_t>(data).subspan(off, std::min(kChunk, data.size() - off));
    proto::Reply r = proto::NotifyStore(nodeid, off, chunk);
    if (Status s = kernel_->Notify(r.Iov()); !s.ok()) return s.error();
  }
  return static_cast<uint64_t>(data.size());
}

Result<size_t> MemFs::Write(const RequestContext& ctx, uint64_t nodeid,
                            uint64_t fh, uint64_t offset,
                            std::span<const uint8_t> data, uint32_t write_flags,
                            uint32_t flags) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type == S_IFDIR) return Errno(EISDIR);
  if (n->type != S_IFREG) return Errno(EINVAL);
  size_t done;
  bool killed = false;
  {
    memfs::WriteLock l(&n->mu);
    if (n->dead) return Errno(ENOENT);
    // Write-back flushes (kWriteCache) carry offsets the kernel already chose.
    const bool append =
        (flags & O_APPEND) != 0 && (write_flags & abi::kWriteCache) == 0;
    const uint64_t pos = append ? n->data.size() : offset;
    if (data.empty()) return size_t{0};
    if (pos >= kMaxFileSize) return Errno(EFBIG);
    const size_t len =
        static_cast<size_t>(std::min<uint64_t>(data.size(), kMaxFileSize - pos));
    done = n->data.Write(pos, data.first(len));
    if (done == 0) return Errno(ENOSPC);
    n->mtime = n->ctime = Now();
    // The kernel asks for this when it decided privileges must be dropped.
    if ((write_flags & abi::kWriteKillSuidgid) != 0) killed = KillSuidgid(&n->mode, n->gid, ctx);
    // Page writeback (a store through a shared mapping) leaves capabilities
    // alone, as on a local file system; write(2) through the page cache had
    // the kernel ask for their removal first (an attribute-less SETATTR).
    if ((write_flags & abi::kWriteCache) == 0) n->DropCapability(space_);
  }
  // The WRITE reply carries no attributes: the kernel's cached mode would
  // keep the bits (and exec would honor them) until its lifetime ends.
  if (killed && kernel_ != nullptr) (void)kernel_->DropCachedAttributes(nodeid);
  return done;
}

void MemFs::Release(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                    uint32_t flags, uint32_t release_flags,
                    uint64_t lock_owner) {
  ReleaseHandle(fh);
}

Status MemFs::Fsync(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                    bool datasync) {
  return OkStatus();  // nothing below memory to sync to
}

Status MemFs::Flush(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                    uint64_t lock_owner) {
  return OkStatus();
}

Status MemFs::SyncFs(const RequestContext& ctx) { return OkStatus(); }

Status MemFs::Fallocate(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                        uint64_t offset, uint64_t length, uint32_t mode) {
  constexpr uint32_t kKeep = FALLOC_FL_KEEP_SIZE;
  constexpr uint32_t kPunch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  constexpr uint32_t kZero = FALLOC_FL_ZERO_RANGE;
  if (mode != 0 && mode != kKeep && mode != kPunch && mode != kZero &&
      mode != (kZero | kKeep)) {
    return Errno(EOPNOTSUPP);
  }
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type == S_IFDIR) return Errno(EISDIR);
  if (n->type != S_IFREG) return Errno(ENODEV);
  if (length == 0) return Errno(EINVAL);
  if (offset >= kMaxFileSize || length > kMaxFileSize - offset) {
    return Errno(EFBIG);
  }
  const uint64_t end = offset + length;
  memfs::WriteLock l(&n->mu);
  if (n->dead) return Errno(ENOENT);
  const timespec now = Now();
  if (mode == kPunch) {
    n->data.PunchHole(offset, length);
  } else {
    const bool ok = (mode & kZero) != 0 ? n->data.ZeroRange(offset, length)
                                        : n->data.Allocate(offset, length);
    if (!ok) return Errno(ENOSPC);
    const bool grows = (mode & kKeep) == 0 && end > n->data.size();
    if (grows) n->data.Truncate(end);
    // Pure preallocation changes no content; the rest count as a write.
    if (!grows && (mode & kZero) == 0) return OkStatus();
  }
  n->mtime = n->ctime = now;
  n->DropCapability(space_);
  return OkStatus();
}

Result<uint64_t> MemFs::Lseek(const RequestContext& ctx, uint64_t nodeid,
                              uint64_t fh, uint64_t offset, uint32_t whence) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return Errno(EINVAL);
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type != S_IFREG) return Errno(EINVAL);
  memfs::ReadLock l(&n->mu);
  const std::optional<uint64_t> pos =
      whence == SEEK_DATA ? n->data.SeekData(offset) : n->data.SeekHole(offset);
  if (!pos) return Errno(ENXIO);
  return *pos;
}

namespace {

// Copies `len` bytes (all within `src`'s size) block by block; a run of holes
// in `src` is punched in `dst` rather than filled, so holes stay holes.
// Stops early when `dst` runs out of space; returns the bytes copied.
uint64_t CopyData(const FileData& src, uint64_t off_in, FileData& dst,
                  uint64_t off_out, uint64_t len) {
  uint8_t buf[FileData::kBlockSize];
  uint64_t done = 0;
  while (done < len) {
    const uint64_t from = off_in + done;
    const uint64_t to = off_out + done;
    if (!src.IsAllocated(from)) {
      const uint64_t chunk =
          std::min(src.NextAllocated(from), off_in + len) - from;
      dst.PunchHole(to, chunk);
      if (to + chunk > dst.size()) dst.Truncate(to + chunk);
      done += chunk;
      continue;
    }
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(
        FileData::kBlockSize - from % FileData::kBlockSize, len - done));
    src.Read(from, std::span<uint8_t>(buf, chunk));
    const size_t written = dst.Write(to, std::span<const uint8_t>(buf, chunk));
    done += written;
    if (written < chunk) break;
  }
  return done;
}

}  // namespace

// Not analysed for locks: it holds one or two inode locks depending on
// whether the files differ, which the analysis cannot follow.
Result<uint64_t> MemFs::CopyFileRange(
    const RequestContext& ctx, uint64_t nodeid_in, uint64_t fh_in,
    uint64_t off_in, uint64_t nodeid_out, uint64_t fh_out, uint64_t off_out,
    uint64_t len, uint64_t flags) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (flags != 0) return Errno(EINVAL);
  std::shared_ptr<Inode> in = Find(nodeid_in);
  std::shared_ptr<Inode> out = Find(nodeid_out);
  if (in == nullptr || out == nullptr) return Errno(ENOENT);
  if (in->type == S_IFDIR || out->type == S_IFDIR) return Errno(EISDIR);
  if (in->type != S_IFREG || out->type != S_IFREG) return Errno(EINVAL);
  if (len == 0) return uint64_t{0};
  if (off_out >= kMaxFileSize) return Errno(EFBIG);

  // Two inode locks: always in increasing node id order.
  Inode* first = in->id <= out->id ? in.get() : out.get();
  Inode* second = in->id <= out->id ? out.get() : in.get();
  memfs::WriteLock l1(&first->mu);
  std::optional<memfs::WriteLock> l2;
  if (second != first) l2.emplace(&second->mu);

  const uint64_t in_size = in->data.size();
  uint64_t n = off_in < in_size ? std::min(len, in_size - off_in) : 0;
  n = std::min(n, kMaxFileSize - off_out);
  if (n == 0) return uint64_t{0};
  if (in == out && off_in < off_out + n && off_out < off_in + n) {
    return Errno(EINVAL);
  }
  const uint64_t copied = CopyData(in->data, off_in, out->data, off_out, n);
  if (copied == 0) return Errno(ENOSPC);
  out->mtime = out->ctime = Now();
  out->DropCapability(space_);
  return copied;
}

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
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Directories.

Result<OpenReply> MemFs::OpenDir(const RequestContext& ctx, uint64_t nodeid,
                                 uint32_t flags) {
  // The kernel takes this once for "open directories without asking".
  if (!opts_.dir_handles) return Errno(ENOSYS);
  memfs::ReadLock tl(&tree_mu_);
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
  if (n->type != S_IFDIR) return Errno(ENOTDIR);
  if (!n->MayAccess(ctx, kR)) return Errno(EACCES);
  return NewHandle(std::move(n), flags);
}

Status MemFs::ReadDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                      uint64_t offset, DirSink& sink) {
  memfs::ReadLock tl(&tree_mu_);
  std::shared_ptr<Inode> dir = Find(nodeid);
  if (dir == nullptr) return Errno(ENOENT);
  if (dir->type != S_IFDIR) return Errno(ENOTDIR);
  if (fh == 0) {
    // Opened without OPENDIR: its read permission is checked here (with
    // default_permissions the kernel checked it at open), and the kernel
    // may keep what this answers.
    if (!dir->MayAccess(ctx, kR)) return Errno(EACCES);
    dir->dir->listed_without_handle.store(true, std::memory_order_release);
  }
  if (dir->nlink == 0) return OkStatus();  // removed: nothing left to list
  const bool plus = sink.plus();
  // "." and "..": the kernel takes no reference, so nodeid 0.
  auto add_dot = [&](std::string_view name, Inode* target, uint64_t cookie) {
    Entry e;
    e.attr.ino = target->id;
    {
      memfs::ReadLock l(&target->mu);
      e.attr.mode = target->mode;
    }
    return sink.Add(name, target->id, e.attr.mode, cookie, plus ? &e : nullptr);
  };
  if (offset < kDotCookie && !add_dot(".", dir.get(), kDotCookie)) {
    return OkStatus();
  }
  if (offset < kDotDotCookie &&
      !add_dot("..", dir->dir->parent, kDotDotCookie)) {
    return OkStatus();
  }
  const DirData::Slots& slots = dir->dir->slots;
  for (auto it = slots.upper_bound(std::max(offset, kDotDotCookie));
       it != slots.end(); ++it) {
    Inode* child = it->second.inode;
    if (plus) {
      const Entry e = LockedEntryOf(*child);
      if (!sink.Add(it->second.name, child->id, e.attr.mode, it->first, &e)) {
        break;
      }
      // Counted only once accepted; Forget cannot run before this (it needs
      // tree_mu_ exclusively).
      child->lookups.fetch_add(1, std::memory_order_relaxed);
    } else if (!sink.Add(it->second.name, child->id, child->type, it->first,
                         nullptr)) {
      break;
    }
  }
  return OkStatus();
}

void MemFs::ReleaseDir(const RequestContext& ctx, uint64_t nodeid,
                       uint64_t fh) {
  ReleaseHandle(fh);
}

Status MemFs::FsyncDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                       bool datasync) {
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Observers.

size_t MemFs::InodeCount() const {
  memfs::ReadLock l(&table_mu_);
  return inodes_.size();
}

uint64_t MemFs::LookupCount(uint64_t nodeid) const {
  std::shared_ptr<Inode> n = Find(nodeid);
  return n == nullptr ? 0 : n->lookups.load(std::memory_order_relaxed);
}

size_t MemFs::OpenHandleCount() const {
  memfs::WriteLock l(&handles_mu_);
  return handles_.size();
}

}  // namespace efuse
