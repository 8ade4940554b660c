// core/passthrough/names.cc — PassthroughFs: LOOKUP and the namespace
// changes (MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR, RENAME).
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <climits>
#include <optional>

#include "core/clock.h"
#include "core/passthrough/internal.h"
#include "core/state_region.h"
#include "proto/abi.h"

namespace efuse {

using passthrough::kRootId;
using passthrough::kListingUnknown;
using passthrough::kListingNames;
using passthrough::kListingAttrs;
using passthrough::ProcPath;
using passthrough::CName;
using passthrough::DecodeDev;
using passthrough::ShardIndexOfKey;
using passthrough::ScopedCreds;
using passthrough::SharedFd;
using passthrough::DevOf;
using passthrough::Statx;

namespace {
// ListingAttrs::kAdaptive: files of a directory looked up by name before its
// listings carry attributes (`ls -l` looks up every one; `find` none), and
// how many such directories are remembered.
constexpr uint32_t kLookupsForAttrs = 4;
constexpr size_t kMaxAttrListedDirs = 1 << 16;
}  // namespace

// ---------------------------------------------------------------------------
// Names.

Result<Entry> PassthroughFs::Lookup(const RequestContext& ctx, uint64_t parent,
                                    std::string_view name) {
  if (name.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  // The kernel's export operations name a node they forgot by ".", any type.
  if (name == ".") return LookupSelf(parent);
  Result<std::shared_ptr<Inode>> dir = Get(parent);
  if (!dir.ok()) return dir.error();
  if ((*dir)->type != S_IFDIR) return Errno(ENOTDIR);
  Result<SharedFd> dfd = PathFd(**dir);
  if (!dfd.ok()) return dfd.error();
  // The source root's ".." is outside what we serve.
  if (name == ".." && parent == kRootId) name = ".";
  Result<Entry> e = LookupAt((*dfd)->get(), name);
  if (e.ok()) NoteLookupIn(**dir, *e);
  if (!e.ok() && e.error().value() == ENOENT && opts_.negative_timeout > 0) {
    Entry negative;
    negative.nodeid = 0;
    negative.entry_timeout = opts_.negative_timeout;
    negative.attr_timeout = 0;
    return negative;
  }
  return e;
}

void PassthroughFs::Forget(uint64_t nodeid, uint64_t nlookup) { Unremember(nodeid, nlookup); }

bool PassthroughFs::ListWithAttrs(Inode& dir) {
  if (opts_.listing_attrs != ListingAttrs::kAdaptive) {
    return opts_.listing_attrs == ListingAttrs::kAlways;
  }
  uint8_t state = dir.listing.load(std::memory_order_relaxed);
  if (state == kListingUnknown) {
    bool remembered;
    {
      absl::MutexLock l(&listing_mu_);
      remembered = attr_listed_dirs_.contains(std::make_pair(dir.dev, dir.ino));
    }
    if (!remembered) {
      const uint64_t parent_id = dir.looked_up_in.load(std::memory_order_relaxed);
      if (parent_id != 0) {
        std::shared_ptr<Inode> parent = Find(parent_id);
        remembered = parent != nullptr &&
                     parent->subdirs_listed_with_attrs.load(std::memory_order_relaxed);
      }
    }
    uint8_t expected = kListingUnknown;
    dir.listing.compare_exchange_strong(expected, remembered ? kListingAttrs : kListingNames,
                                        std::memory_order_relaxed);
    state = dir.listing.load(std::memory_order_relaxed);
  }
  return state == kListingAttrs;
}

void PassthroughFs::NoteLookupIn(Inode& dir, const Entry& child) {
  if (opts_.listing_attrs != ListingAttrs::kAdaptive) return;
  const bool attrs = dir.listing.load(std::memory_order_relaxed) == kListingAttrs;
  if (S_ISDIR(child.attr.mode)) {
    NoteSubdirIn(dir, child.nodeid, attrs);
    return;  // walks look up directories to descend: no evidence
  }
  if (attrs || dir.file_lookups.fetch_add(1, std::memory_order_relaxed) + 1 < kLookupsForAttrs) {
    return;
  }
  dir.listing.store(kListingAttrs, std::memory_order_relaxed);
  if (const uint64_t parent_id = dir.looked_up_in.load(std::memory_order_relaxed); parent_id != 0) {
    if (std::shared_ptr<Inode> parent = Find(parent_id)) {
      parent->subdirs_listed_with_attrs.store(true, std::memory_order_relaxed);
    }
  }
  absl::MutexLock l(&listing_mu_);
  if (attr_listed_dirs_.size() >= kMaxAttrListedDirs) attr_listed_dirs_.clear();
  attr_listed_dirs_.insert(std::make_pair(dir.dev, dir.ino));
}

void PassthroughFs::NoteSubdirIn(const Inode& dir, uint64_t sub_nodeid, bool dir_attrs) {
  if (opts_.listing_attrs != ListingAttrs::kAdaptive) return;
  std::shared_ptr<Inode> sub = Find(sub_nodeid);
  if (sub == nullptr) return;
  sub->looked_up_in.store(dir.nodeid, std::memory_order_relaxed);
  if (dir_attrs) {
    uint8_t expected = kListingUnknown;
    sub->listing.compare_exchange_strong(expected, kListingAttrs, std::memory_order_relaxed);
  }
}

Result<Entry> PassthroughFs::Mknod(const RequestContext& ctx, uint64_t parent,
                                   std::string_view name, uint32_t mode, uint32_t rdev,
                                   uint32_t umask) {
  if (name.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  Result<SharedFd> dfd = NodePathFd(parent);
  if (!dfd.ok()) return dfd.error();
  const uint32_t m = passthrough::ModeUnderCallerUmask(mode, umask);
  {
    ScopedCreds creds(creds_, ctx);
    if (!creds.ok()) return creds.error();
    if (mknodat((*dfd)->get(), CName(name).c_str(), m, DecodeDev(rdev)) != 0) {
      return Errno::Last();
    }
  }
  return EntryForNew(parent, (*dfd)->get(), name);
}

Result<Entry> PassthroughFs::Mkdir(const RequestContext& ctx, uint64_t parent,
                                   std::string_view name, uint32_t mode, uint32_t umask) {
  if (name.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  Result<SharedFd> dfd = NodePathFd(parent);
  if (!dfd.ok()) return dfd.error();
  const uint32_t m = passthrough::ModeUnderCallerUmask(mode & 07777, umask);
  {
    ScopedCreds creds(creds_, ctx);
    if (!creds.ok()) return creds.error();
    if (mkdirat((*dfd)->get(), CName(name).c_str(), m) != 0) return Errno::Last();
  }
  return EntryForNew(parent, (*dfd)->get(), name);
}

Result<Entry> PassthroughFs::Symlink(const RequestContext& ctx, uint64_t parent,
                                     std::string_view name, std::string_view target) {
  if (name.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  Result<SharedFd> dfd = NodePathFd(parent);
  if (!dfd.ok()) return dfd.error();
  {
    ScopedCreds creds(creds_, ctx);
    if (!creds.ok()) return creds.error();
    if (symlinkat(CName(target).c_str(), (*dfd)->get(), CName(name).c_str()) != 0) {
      return Errno::Last();
    }
  }
  return EntryForNew(parent, (*dfd)->get(), name);
}

Result<Entry> PassthroughFs::Link(const RequestContext& ctx, uint64_t nodeid, uint64_t newparent,
                                  std::string_view newname) {
  if (newname.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  Result<SharedFd> sfd = NodePathFd(nodeid);
  if (!sfd.ok()) return sfd.error();
  Result<SharedFd> dfd = NodePathFd(newparent);
  if (!dfd.ok()) return dfd.error();
  const CName cname(newname);
  if (linkat((*sfd)->get(), "", (*dfd)->get(), cname.c_str(), AT_EMPTY_PATH) != 0) {
    // Without CAP_DAC_READ_SEARCH, the /proc link does the same.
    if (errno != EPERM && errno != ENOENT) return Errno::Last();
    if (linkat(AT_FDCWD, ProcPath((*sfd)->get()).c_str(), (*dfd)->get(), cname.c_str(),
               AT_SYMLINK_FOLLOW) != 0) {
      return Errno::Last();
    }
  }
  return EntryForNew(newparent, (*dfd)->get(), newname);
}

namespace {
// Marks the inode `name` names in `dirfd` as losing its last link through
// us, so it keeps answering (with nlink 0) while the kernel holds it.
struct Victim {
  uint64_t dev = 0;
  uint64_t ino = 0;
  bool last_link = false;
};
bool StatVictim(int dirfd, const char* name, Victim* v) {
  struct statx st;
  if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT,
            STATX_INO | STATX_NLINK | STATX_TYPE, &st) != 0) {
    return false;
  }
  v->dev = makedev(st.stx_dev_major, st.stx_dev_minor);
  v->ino = st.stx_ino;
  v->last_link = S_ISDIR(st.stx_mode) || st.stx_nlink <= 1;
  return true;
}
}  // namespace

passthrough::SharedFd PassthroughFs::HoldForUnlink(int dirfd, const char* name, uint64_t dev, uint64_t ino) {
  ReleaseOldHolds();
  if (last_references_.load(std::memory_order_relaxed) >= kMaxLastReferences) return nullptr;
  uint64_t nodeid = 0;
  {
    Shard& s = (*shards_)[ShardIndexOfKey(dev, ino, kShards)];
    absl::ReaderMutexLock l(&s.mu);
    auto it = s.by_key.find(std::make_pair(dev, ino));
    // Unknown to the kernel: no FORGET will come to drop a hold.
    if (it == s.by_key.end() || it->second->pinned != nullptr) return nullptr;
    nodeid = it->second->nodeid;
  }
  if (SharedFd cached = fd_cache_.Get(nodeid)) return cached;
  const int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return nullptr;
  SharedFd opened = passthrough::MakeSharedFd(fd);
  // The name may have been given to another file since it was looked at.
  struct statx st;
  if (Statx(fd, &st) != 0 || DevOf(st) != dev || st.stx_ino != ino) return nullptr;
  return opened;
}

void PassthroughFs::ReleaseOldHolds() {
  if (last_references_.load(std::memory_order_relaxed) == 0) return;
  const uint64_t now = MonotonicNs();
  std::vector<SharedFd> released;  // closed once the locks are let go
  absl::MutexLock l(&holds_mu_);
  while (!holds_.empty()) {
    std::shared_ptr<Inode> held = holds_.front().first.lock();
    if (held != nullptr && now - holds_.front().second < kMaxHoldNs) break;
    if (held != nullptr) {
      absl::MutexLock il(&held->mu);
      if (held->last_reference != nullptr) {
        released.push_back(std::move(held->last_reference));
        last_references_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    holds_.pop_front();
  }
}

void PassthroughFs::MarkUnlinkedHere(uint64_t dev, uint64_t ino, SharedFd last_reference) {
  std::shared_ptr<Inode> gone;
  {
    Shard& s = (*shards_)[ShardIndexOfKey(dev, ino, kShards)];
    absl::MutexLock l(&s.mu);
    auto it = s.by_key.find(std::make_pair(dev, ino));
    if (it == s.by_key.end()) return;
    it->second->unlinked_here.store(true);
    gone = s.by_id.at(it->second->nodeid);
  }
  // A file nobody has open any more: what this daemon holds of it (its
  // cached O_PATH fd, a backing id kept between opens) would keep its space
  // and inode in the source until the kernel forgets the node, which for
  // a replaced file may be never (df, ENOSPC, statfs). Directories keep
  // theirs: a working directory inside one still asks for attributes.
  if (gone->type == S_IFDIR || gone->pinned != nullptr || gone->HasHandles()) return;
  fd_cache_.Erase(gone->nodeid);
  int32_t kept = 0;
  bool held = false;
  {
    absl::MutexLock l(&gone->mu);
    if (gone->open == nullptr) kept = std::exchange(gone->kept_backing_id, 0);
    if (last_reference != nullptr && gone->last_reference == nullptr && !gone->forgotten) {
      if (last_references_.fetch_add(1, std::memory_order_relaxed) < kMaxLastReferences) {
        gone->last_reference = std::move(last_reference);
        held = true;
      } else {
        last_references_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  if (held) {
    absl::MutexLock l(&holds_mu_);
    holds_.emplace_back(gone, MonotonicNs());
  }
  if (kept > 0 && kernel_ != nullptr) {
    kernel_->CloseBacking(kept).ok();
    backing_ids_.fetch_sub(1, std::memory_order_relaxed);
  }
}

// UNLINK and RMDIR: remove the name, then mark the inode removed by this
// mount when that was its last link (directories have one), so a later
// lookup of a reused inode number is not mistaken for it.
Status PassthroughFs::RemoveName(uint64_t parent, std::string_view name, int at_flags) {
  if (name.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  Result<SharedFd> dfd = NodePathFd(parent);
  if (!dfd.ok()) return dfd.error();
  const CName cname(name);
  Victim v;
  const bool known = StatVictim((*dfd)->get(), cname.c_str(), &v);
  // A file's last name: hold it across the unlinkat, so that the source
  // frees it when the kernel forgets the node instead of now (on ext4 that
  // freeing made the UNLINK 11 us instead of 9).
  SharedFd hold;
  if (known && v.last_link && at_flags == 0) hold = HoldForUnlink((*dfd)->get(), cname.c_str(), v.dev, v.ino);
  if (unlinkat((*dfd)->get(), cname.c_str(), at_flags) != 0) return Errno::Last();
  NamespaceChanged(parent);
  if (known && v.last_link) MarkUnlinkedHere(v.dev, v.ino, std::move(hold));
  return OkStatus();
}

Status PassthroughFs::Unlink(const RequestContext& ctx, uint64_t parent, std::string_view name) {
  return RemoveName(parent, name, 0);
}

Status PassthroughFs::Rmdir(const RequestContext& ctx, uint64_t parent, std::string_view name) {
  return RemoveName(parent, name, AT_REMOVEDIR);
}

Status PassthroughFs::Rename(const RequestContext& ctx, uint64_t parent, std::string_view name,
                             uint64_t newparent, std::string_view newname, uint32_t flags) {
  if (name.size() > NAME_MAX || newname.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  Result<SharedFd> ffd = NodePathFd(parent);
  if (!ffd.ok()) return ffd.error();
  Result<SharedFd> tfd = NodePathFd(newparent);
  if (!tfd.ok()) return tfd.error();
  const CName cname(name), cnew(newname);
  if ((flags & RENAME_EXCHANGE) != 0 && opts_.state != nullptr && ctx.unique != 0) {
    // An exchange is its own undo: resent after its first run made it
    // (that run recorded the inode it moved away from `name`), it is not
    // made again.
    const uint64_t first = ctx.unique & ~abi::kUniqueResend;
    struct stat moved, here;
    if ((ctx.unique & abi::kUniqueResend) != 0) {
      std::optional<uint64_t> was = opts_.state->IntentDetail(first);
      if (was && fstatat((*tfd)->get(), cnew.c_str(), &here, AT_SYMLINK_NOFOLLOW) == 0 &&
          static_cast<uint64_t>(here.st_ino) == *was) {
        return OkStatus();
      }
    }
    if (fstatat((*ffd)->get(), cname.c_str(), &moved, AT_SYMLINK_NOFOLLOW) == 0) {
      opts_.state->RecordIntentDetail(first, static_cast<uint64_t>(moved.st_ino));
    }
  }
  Victim v;
  const bool replaces =
      (flags & RENAME_EXCHANGE) == 0 && StatVictim((*tfd)->get(), cnew.c_str(), &v) && v.last_link;
  if (renameat2((*ffd)->get(), cname.c_str(), (*tfd)->get(), cnew.c_str(), flags) != 0) {
    return Errno::Last();
  }
  NamespaceChanged(parent, newparent == parent ? 0 : newparent);
  if (replaces) MarkUnlinkedHere(v.dev, v.ino);
  return OkStatus();
}

}  // namespace efuse
