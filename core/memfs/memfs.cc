// core/memfs/memfs.cc — the in-memory POSIX file system: its tables, names,
// handles and directories (data in memfs_data.cc, xattrs in memfs_xattrs.cc).
#include "core/memfs/memfs.h"

#include <fcntl.h>
#include <signal.h>
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
#include "core/log.h"
#include "core/memfs/memfs_internal.h"
#include "core/state_region.h"
#include "core/test_faults.h"
#include "core/privileges.h"
#include "proto/abi.h"
#include "proto/notify.h"

namespace efuse {

using namespace memfs;  // NOLINT: the shared rules and constants of memfs_internal.h

namespace {

std::unique_ptr<DataStore> OpenStore(int fd) {
  absl::StatusOr<std::unique_ptr<DataStore>> store = fd >= 0 ? DataStore::Adopt(fd) : DataStore::Create();
  if (!store.ok()) {
    // The factory (tools/efused) made or checked the store already: only a
    // process out of memory or descriptors gets here.
    std::fprintf(stderr, "memfs: %s\n", std::string(store.status().message()).c_str());
    std::abort();
  }
  return std::move(*store);
}

}  // namespace

MemFs::MemFs(MemFsOptions opts)
    : opts_(opts),
      space_(opts.size_limit),
      store_(OpenStore(opts.data_fd)),
      journal_(opts.journal),
      checkpoint_min_bytes_(opts.journal_checkpoint_bytes),
      journal_refuses_(opts.journal != nullptr && TestFault("journal_refuses").has_value()) {
  // A successor rebuilds in Init, once it takes over (a standby is built
  // long before, while the journal still grows).
  rebuild_pending_ = journal_ != nullptr && journal_->header().initialized.load() != 0;
  auto root = std::make_shared<Inode>(kRootId, S_IFDIR, &space_, store_.get(), Inode::kNoSlot);
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
  if (!rebuild_pending_) JournalInode(*root_);
  {
    memfs::WriteLock l(&table_mu_);
    inodes_.emplace(kRootId, std::move(root));
  }
}


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
  uint32_t slot = Inode::kNoSlot;
  if (type == S_IFREG) {
    std::optional<uint32_t> taken = store_->TakeSlot();
    if (!taken) return Errno(ENOSPC);
    slot = *taken;
  }
  auto n = std::make_shared<Inode>(next_id_++, type, &space_, store_.get(), slot);
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

uint64_t MemFs::LinkEntry(Inode* dir, std::string_view name, Inode* child, const timespec& now) {
  DirData& d = *dir->dir;
  const uint64_t cookie = d.next_cookie.fetch_add(1, std::memory_order_relaxed);
  auto it = d.slots.emplace_hint(d.slots.end(), cookie,
                                 DirData::Slot{std::string(name), child});
  d.by_name.emplace(it->second.name, it);
  dir->TouchDir(now, 1, child->type == S_IFDIR ? 1 : 0);
  return cookie;
}

void MemFs::AddEntry(Inode* dir, std::string_view name, Inode* child,
                     const timespec& now) {
  const uint64_t cookie = LinkEntry(dir, name, child, now);
  JournalEntry(*dir, cookie, name, *child);
  JournalInode(*dir);
  DirChanged(dir);
}

void MemFs::AddNewName(Inode* dir, std::string_view name, Inode* child, uint64_t unique, const OpenReply* open,
                       uint32_t flags) {
  const uint64_t cookie = LinkEntry(dir, name, child, Now());
  CountLookups(*child, 1, unique);
  JournalNewName(*dir, cookie, name, *child, unique, open, flags);
  DirChanged(dir);
}

void MemFs::RemoveEntry(Inode* dir, std::string_view name,
                        const timespec& now) {
  DirData& d = *dir->dir;
  auto it = d.FindName(name);
  if (it == d.slots.end()) return;
  const bool is_dir = it->second.inode->type == S_IFDIR;
  const uint64_t cookie = it->first;
  d.by_name.erase(std::string_view(it->second.name));
  d.slots.erase(it);
  dir->TouchDir(now, -1, is_dir ? -1 : 0);
  JournalEntryGone(*dir, cookie);
  JournalInode(*dir);
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
  if (crash_before_listing_drop_) {
    Log(LogLevel::kWarning, "test fault crash_before_listing_drop: dying before dropping the listing of node %u",
        dir->id);
    raise(SIGKILL);
  }
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

OpenReply MemFs::NewHandle(std::shared_ptr<Inode> n, uint32_t flags, uint64_t unique, bool journal) {
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
  auto [it, added] = handles_.emplace(reply.fh, Handle{std::move(n), flags, unique & ~abi::kUniqueResend});
  if (journal) JournalHandle(reply.fh, it->second);
  return reply;
}

Result<OpenReply> MemFs::OpenInode(const RequestContext& ctx,
                                   std::shared_ptr<Inode> n, uint32_t flags,
                                   uint32_t open_flags) {
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
    if (!Permits(ctx, n->mode, n->uid, n->gid, mask)) {
      if (writes) EndWrite(*n);
      return Errno(EACCES);
    }
    const timespec now = Now();
    if (n->type == S_IFREG && (flags & O_TRUNC) != 0) {
      n->data.Truncate(0);
      n->mtime = n->ctime = now;
      n->DropCapability(space_);
    }
    if ((open_flags & abi::kOpenKillSuidgid) != 0) {
      killed = KillSuidgid(&n->mode, n->gid, ctx);
      if (killed) n->ctime = now;
    }
    if (killed || (n->type == S_IFREG && (flags & O_TRUNC) != 0)) JournalInodeLocked(*n);
  }
  if (writes && !write_handle) EndWrite(*n);
  // An OPEN reply carries no attributes.
  if (killed && kernel_ != nullptr) (void)kernel_->DropCachedAttributes(n->id);
  return NewHandle(std::move(n), flags, ctx.unique);
}

void MemFs::ReleaseHandle(uint64_t fh) {
  std::shared_ptr<Inode> n;
  bool now_unused = false;
  {
    // Shared: a close (RELEASE comes after it, unwaited for) must not hold
    // up the lookups that follow it, as it did exclusively. No unlink or
    // FORGET runs meanwhile, so the last handle of a file with neither a
    // name nor a kernel lookup is known here (neither can come back under
    // the shared lock: LOOKUP "." refuses a file without a name); only
    // that one is freed, exclusively, below.
    memfs::ReadLock tl(&tree_mu_);
    {
      memfs::WriteLock l(&handles_mu_);
      auto it = handles_.find(fh);
      if (it == handles_.end()) return;
      n = std::move(it->second.inode);
      if ((it->second.flags & O_ACCMODE) != O_RDONLY) EndWrite(*n);
      handles_.erase(it);
      JournalHandleGone(fh);
    }
    now_unused = n->opens.fetch_sub(1, std::memory_order_relaxed) == 1 && n->nlink == 0 &&
                 n->lookups.load(std::memory_order_relaxed) == 0;
  }
  if (!now_unused) return;
  memfs::WriteLock tl(&tree_mu_);
  // (A FORGET may have freed it in between.)
  if (!n->Dead()) MaybeFree(n.get());
}

void MemFs::MaybeFree(Inode* n) {
  if (n == root_ || n->nlink != 0 ||
      n->lookups.load(std::memory_order_relaxed) != 0 ||
      n->opens.load(std::memory_order_relaxed) != 0) {
    return;
  }
  const uint32_t slot = n->data.slot();
  {
    memfs::WriteLock l(&n->mu);
    n->dead = true;
    // Under n->mu, after `dead`: no record of the inode can follow it.
    JournalFreed(*n);
    n->data.Truncate(0);
    uint64_t bytes = n->target.size();
    for (const auto& [name, value] : n->xattrs)
      bytes += name.size() + value.size();
    n->xattrs.clear();
    space_.Release(bytes);
  }
  {
    memfs::WriteLock l(&table_mu_);
    inodes_.erase(n->id);  // may destroy *n
  }
  if (slot != Inode::kNoSlot) store_->GiveBack(slot);
}

// ---------------------------------------------------------------------------
// Names.

Result<Entry> MemFs::Lookup(const RequestContext& ctx, uint64_t parent,
                            std::string_view name) {
  if (name.size() > kMaxNameLength) return Errno(ENAMETOOLONG);
  if ((ctx.unique & abi::kUniqueResend) != 0) TakeOutLookupsOfResent(ctx.unique & ~abi::kUniqueResend);
  memfs::ReadLock tl(&tree_mu_);
  Inode* dir = FindInTree(parent);
  if (dir == nullptr) return Errno(ENOENT);
  if (name == "." && dir->type != S_IFDIR) {
    // The kernel's export operations (open_by_handle_at, NFS) ask for a
    // node it forgot by this name, whatever its type; node ids are never
    // reused, so the id alone names the file. Gone once unlinked.
    if (dir->nlink == 0) return Errno(ESTALE);
    AddLookups(*dir, 1, ctx.unique);
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
  AddLookups(*child, 1, ctx.unique);
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
  lines->emplace_back("memfs_open_handles", std::to_string(OpenHandleCount()));
  if (journal_ != nullptr) lines->emplace_back("memfs_journal_failures", std::to_string(JournalFailures()));
}

void MemFs::Forget(uint64_t nodeid, uint64_t nlookup) {
  memfs::WriteLock tl(&tree_mu_);
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return;
  const uint64_t have = n->lookups.load(std::memory_order_relaxed);
  AddLookups(*n, -static_cast<int64_t>(std::min(have, nlookup)), 0);
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
  AddNewName(*dir, name, *n, ctx.unique);
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
  AddNewName(*dir, name, *n, ctx.unique);
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
  AddNewName(*dir, name, *n, ctx.unique);
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
  JournalInode(*n);
  AddLookups(*n, 1, ctx.unique);
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
  JournalInode(*child);
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
  JournalInode(*child);
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
  // An exchange is its own undo: one its first run made (that run recorded
  // which inode it moved away from `name`, in the request's intent) is not
  // made again when the kernel resends it to a successor.
  const uint64_t first_run = ctx.unique & ~abi::kUniqueResend;
  if (exchange && journal_ != nullptr && (ctx.unique & abi::kUniqueResend) != 0) {
    if (std::optional<uint64_t> moved = journal_->IntentDetail(first_run); moved && dst->id == *moved) {
      return OkStatus();
    }
  }
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
  // Its entry records (source gone, target set, a replaced one) are one.
  EntryBatch batch(this);
  if (exchange) {
    if (journal_ != nullptr && first_run != 0) journal_->RecordIntentDetail(first_run, src->id);
    // Both names keep their cookies; only what they point at swaps.
    sit->second.inode = dst;
    dit->second.inode = src;
    if (src_is_dir) src->dir->parent = ddir;
    if (dst_is_dir) dst->dir->parent = sdir;
    const int moved =
        static_cast<int>(src_is_dir) - static_cast<int>(dst_is_dir);
    sdir->TouchDir(now, 0, -moved);
    ddir->TouchDir(now, 0, moved);
    JournalEntry(*sdir, sit->first, sit->second.name, *dst);
    JournalEntry(*ddir, dit->first, dit->second.name, *src);
    DirChanged(sdir);
    if (ddir != sdir) DirChanged(ddir);
    src->TouchCtime(now);
    dst->TouchCtime(now);
    for (const Inode* changed : {sdir, ddir, src, dst}) JournalInode(*changed);
    return OkStatus();
  }
  RemoveEntry(sdir, name, now);  // `dit` stays valid: map iterators are stable
  if (dst != nullptr) {
    // The target name keeps its cookie and now names `src`.
    dit->second.inode = src;
    JournalEntry(*ddir, dit->first, dit->second.name, *src);
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
  JournalInode(*src);
  if (dst != nullptr) {
    JournalInode(*ddir);  // its TouchDir above (AddEntry journals it otherwise)
    JournalInode(*dst);
  }
  batch.Commit();  // before the replaced file's end
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
  return OpenInode(ctx, std::move(n), flags, open_flags);
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
        OpenInode(ctx, Find(existing->id), flags, open_flags);
    if (!open) return open.error();
    AddLookups(*existing, 1, ctx.unique);
    return CreateReply{LockedEntryOf(*existing), *open};
  }
  if (!dir->MayAccess(ctx, kW)) return Errno(EACCES);
  Result<Inode*> n =
      NewInode(ctx, dir, S_IFREG | (mode & ~umask & kPermBits), 0);
  if (!n) return n.error();
  // Opened with the rights asked for, whatever its mode (none of
  // OpenInode's checks applies to a new file).
  if ((flags & O_ACCMODE) != O_RDONLY) BeginWrite(**n);  // new: never being pushed
  const OpenReply open = NewHandle(Find((*n)->id), flags, ctx.unique, /*journal=*/false);
  AddNewName(dir, name, *n, ctx.unique, &open, flags);
  return CreateReply{LockedEntryOf(**n), open};
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
  JournalInode(**n);
  if ((flags & O_ACCMODE) != O_RDONLY) BeginWrite(**n);  // new: never being pushed
  OpenReply open = NewHandle(Find((*n)->id), flags, ctx.unique);
  AddLookups(*(*n), 1, ctx.unique);
  return CreateReply{LockedEntryOf(**n), open};
}


void MemFs::Init(const InitInfo& info) {
  kernel_ = info.kernel;
  if (rebuild_pending_) {
    Rebuild();
    rebuild_pending_ = false;
  }
  // (Test fault: the first server only; its successor must serve.)
  crash_before_listing_drop_ = journal_ != nullptr && TestFault("crash_before_listing_drop").has_value() &&
                               journal_->header().generation.load() == 1;
  // Only a server that serves checkpoints the journal (a standby's tables
  // are empty until it takes over, here).
  if (journal_ != nullptr && !compactor_.joinable()) compactor_ = std::thread([this] { RunCompactor(); });
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
  return NewHandle(std::move(n), flags, ctx.unique);
}

Status MemFs::ReadDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                      uint64_t offset, DirSink& sink) {
  if (sink.plus() && (ctx.unique & abi::kUniqueResend) != 0) {
    TakeOutLookupsOfResent(ctx.unique & ~abi::kUniqueResend);
  }
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
      AddLookups(*child, 1, ctx.unique);
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
