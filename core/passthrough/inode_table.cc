// core/passthrough/inode_table.cc — PassthroughFs: the inode table (node
// ids, lookup counts, fds by file handle), attributes and entries.
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/log.h"
#include "core/passthrough/internal.h"
#include "core/privileges.h"

namespace efuse {

using passthrough::kRootId;
using passthrough::kPathFlags;
using passthrough::kStatxMask;
using passthrough::ProcPath;
using passthrough::CName;
using passthrough::Statx;
using passthrough::DevOf;
using passthrough::EncodeDev;
using passthrough::Mix;
using passthrough::Ts;
using passthrough::HandleOf;
using passthrough::OpenByHandle;
using passthrough::ShardIndexOfKey;
using passthrough::MakeSharedFd;
using passthrough::SharedFd;

// ---------------------------------------------------------------------------
// The inode table.

std::shared_ptr<PassthroughFs::Inode> PassthroughFs::Find(uint64_t nodeid) const {
  if (nodeid == kRootId) return root_;
  const Shard& s = (*shards_)[nodeid % kShards];
  absl::ReaderMutexLock l(&s.mu);
  auto it = s.by_id.find(nodeid);
  return it == s.by_id.end() ? nullptr : it->second;
}

Result<std::shared_ptr<PassthroughFs::Inode>> PassthroughFs::Get(uint64_t nodeid) {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return recovered_nodes_.empty() ? Result<std::shared_ptr<Inode>>(Errno(ENOENT)) : Revive(nodeid);
  if (n->stale.load(std::memory_order_relaxed)) {
    stale_.fetch_add(1, std::memory_order_relaxed);
    return Errno(ESTALE);
  }
  return n;
}

int PassthroughFs::MountFdFor(uint64_t dev) const {
  absl::ReaderMutexLock l(&mounts_mu_);
  auto it = mount_fds_.find(dev);
  return it == mount_fds_.end() ? -1 : it->second;
}

std::shared_ptr<PassthroughFs::Inode> PassthroughFs::CountIfLive(uint64_t dev, uint64_t ino) {
  if (dev == root_dev_ && ino == root_ino_) return root_;
  Shard& s = (*shards_)[ShardIndexOfKey(dev, ino, kShards)];
  absl::MutexLock l(&s.mu);
  auto it = s.by_key.find(std::make_pair(dev, ino));
  if (it == s.by_key.end()) return nullptr;
  // A live fd of the known inode proves the number still names it (an
  // inode number cannot be reused while an fd holds the inode).
  Inode* n = it->second;
  if (n->pinned == nullptr && fd_cache_.Get(n->nodeid) == nullptr) return nullptr;
  ++n->lookups;
  return s.by_id.at(n->nodeid);
}

Result<std::shared_ptr<PassthroughFs::Inode>> PassthroughFs::Remember(int fd,
                                                                      const struct statx& st) {
  return RememberFd(fd, fd, st);
}

Result<std::shared_ptr<PassthroughFs::Inode>> PassthroughFs::RememberFd(int path_fd, int handle_fd,
                                                                        const struct statx& st) {
  SharedFd sfd = path_fd >= 0 ? MakeSharedFd(path_fd) : nullptr;
  const uint64_t dev = DevOf(st);
  const uint64_t ino = st.stx_ino;
  if (dev == root_dev_ && ino == root_ino_) return root_;  // never counted
  const auto key = std::make_pair(dev, ino);
  const size_t index = ShardIndexOfKey(dev, ino, kShards);
  Shard& s = (*shards_)[index];

  if (std::shared_ptr<Inode> n = CountIfLive(dev, ino)) return n;

  // Slow path: compare file handles (the handle carries the generation).
  std::string handle;
  bool pin = !handles_ok_;
  if (!pin) {
    Result<std::string> h = HandleOf(handle_fd);
    if (!h.ok()) {
      pin = true;
      if (!warned_no_handles_.exchange(true)) {
        Log(LogLevel::kWarning,
            "passthrough: no file handles for some source inodes (%s): those keep an fd open",
            std::strerror(h.error().value()));
      }
    } else {
      handle = std::move(*h);
    }
  }
  if (!pin && MountFdFor(dev) < 0) {
    // A file system below the source we have not met: its first directory
    // gives the mount fd open_by_handle_at needs.
    if (S_ISDIR(st.stx_mode)) {
      int mfd = openat(handle_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (mfd >= 0) {
        absl::MutexLock l(&mounts_mu_);
        if (!mount_fds_.emplace(dev, mfd).second) close(mfd);
      } else {
        pin = true;
      }
    } else {
      pin = true;
    }
  }

  if (pin && sfd == nullptr) return Errno(EAGAIN);  // no fd to pin

  std::shared_ptr<Inode> result;
  bool created = false;
  bool born = false;  // a new id (or the last server's): journaled for a successor
  {
    absl::MutexLock l(&s.mu);
    auto it = s.by_key.find(key);
    if (it != s.by_key.end()) {
      Inode* n = it->second;
      const bool same = n->pinned != nullptr ? pin  // pinned: its fd kept the number
                                             : (!pin && n->handle == handle);
      if (same) {
        ++n->lookups;
        result = s.by_id.at(n->nodeid);
      } else {
        // The inode number was reused: the old Inode answers ESTALE from now
        // on and stays until the kernel forgets it.
        n->stale.store(true, std::memory_order_relaxed);
        s.by_key.erase(it);
      }
    }
    if (result == nullptr) {
      // A forgotten node's file comes back under its old id: a file handle
      // the kernel gave out (open_by_handle_at, NFS) holds that id. The
      // last server's id (journal) first: the kernel may still hold it.
      uint64_t id = 0;
      if (!pin) {
        if (!recovered_by_handle_.empty()) {
          auto rit = recovered_by_handle_.find(std::make_pair(dev, handle));
          // (Its id is of this shard: ids follow the shard of their key.)
          if (rit != recovered_by_handle_.end() && !s.by_id.contains(rit->second)) {
            id = rit->second;
            // Journaled again: a checkpoint begun before this may have
            // passed over it as forgotten (CompactJournal).
            born = true;
            DropForgotten(s, id);  // (if it was forgotten here before)
          }
        }
        auto fit = id == 0 ? s.forgotten_by_handle.find(std::make_pair(dev, handle)) : s.forgotten_by_handle.end();
        if (fit != s.forgotten_by_handle.end()) {
          id = fit->second;
          s.forgotten.erase(id);
          s.forgotten_by_handle.erase(fit);
          revivals_.fetch_add(1, std::memory_order_relaxed);
          born = true;  // live again, for the journal (it said dropped)
        }
      }
      if (id == 0) {
        id = (s.next++ * kShards) + index;
        born = true;
      }
      result = std::make_shared<Inode>(id, dev, ino, st.stx_mode & S_IFMT);
      if (pin) {
        result->pinned = sfd;
        pinned_.fetch_add(1, std::memory_order_relaxed);
      } else {
        result->handle = std::move(handle);
      }
      result->lookups = 1;
      created = true;
      s.by_id.emplace(id, result);
      s.by_key.emplace(key, result.get());
    }
  }
  if (born) JournalNode(*result);
  if (watcher_ != nullptr && created && result->type == S_IFDIR && sfd != nullptr) {
    WatchDir(*result, sfd->get());
  }
  if (result->pinned == nullptr && sfd != nullptr) fd_cache_.Put(result->nodeid, std::move(sfd));
  return result;
}

void PassthroughFs::Unremember(uint64_t nodeid, uint64_t n) {
  if (nodeid == kRootId) return;
  Shard& s = (*shards_)[nodeid % kShards];
  std::shared_ptr<Inode> dropped;  // destroyed after the lock
  bool kept = false;               // among the forgotten, for its file handle
  {
    absl::ReleasableMutexLock l(&s.mu);
    auto it = s.by_id.find(nodeid);
    if (it == s.by_id.end()) {
      // One the last server named and the kernel forgets before asking
      // for it again: among the forgotten, for the file handles given out
      // (whether its file was unlinked meanwhile is asked when one comes:
      // LookupSelf), unless its file has a newer id. Left out of the next
      // checkpoint's nodes the kernel holds either way.
      auto rit = recovered_nodes_.find(nodeid);
      if (rit == recovered_nodes_.end()) return;
      {
        absl::MutexLock f(&recovered_forgotten_mu_);
        if (!recovered_forgotten_.insert(nodeid).second) return;
      }
      const ForgottenNode& last = rit->second;
      kept = IsNewestIdOfItsFile(nodeid, last);
      if (kept) RememberForgotten(s, nodeid, ForgottenNode{last.dev, last.type, last.handle, 0});
      l.Release();
      JournalDropped(nodeid, kept);
      return;
    }
    Inode& inode = *it->second;
    inode.lookups = inode.lookups > n ? inode.lookups - n : 0;
    if (inode.lookups != 0) return;
    auto kit = s.by_key.find(std::make_pair(inode.dev, inode.ino));
    if (kit != s.by_key.end() && kit->second == &inode) s.by_key.erase(kit);
    if (inode.pinned != nullptr) pinned_.fetch_sub(1, std::memory_order_relaxed);
    // (A file whose last name went through us cannot come back by its
    // handle: not kept.)
    kept = !inode.handle.empty() && !inode.stale.load(std::memory_order_relaxed) &&
           !inode.unlinked_here.load(std::memory_order_relaxed);
    if (kept) RememberForgotten(s, inode.nodeid, ForgottenNode{inode.dev, inode.type, inode.handle, 0});
    dropped = std::move(it->second);
    s.by_id.erase(it);
  }
  if (recovered_nodes_.contains(nodeid)) {
    // The last server's, revived and forgotten here: a checkpoint writes
    // it from the forgotten (if kept), never again as one the kernel holds.
    absl::MutexLock f(&recovered_forgotten_mu_);
    recovered_forgotten_.insert(nodeid);
  }
  JournalDropped(nodeid, kept);
  if (watcher_ != nullptr && dropped->type == S_IFDIR) UnwatchDir(*dropped);
  fd_cache_.Erase(nodeid);
  int32_t backing_id = 0;
  SharedFd last_reference;  // closed last: the source may free the file then
  {
    absl::MutexLock l(&dropped->mu);
    backing_id = std::exchange(dropped->kept_backing_id, 0);
    last_reference = std::move(dropped->last_reference);
    dropped->forgotten = true;
  }
  if (last_reference != nullptr) last_references_.fetch_sub(1, std::memory_order_relaxed);
  ReleaseOldHolds();
  if (backing_id > 0 && kernel_ != nullptr) {
    kernel_->CloseBacking(backing_id).ok();
    backing_ids_.fetch_sub(1, std::memory_order_relaxed);
  }
}

void PassthroughFs::RememberForgotten(Shard& s, uint64_t nodeid, ForgottenNode node) {
  node.seq = ++s.forgotten_seq;
  const auto key = std::make_pair(node.dev, node.handle);
  s.forgotten_order.emplace_back(nodeid, node.seq);
  s.forgotten[nodeid] = std::move(node);
  s.forgotten_by_handle[key] = nodeid;
  auto current = [&s](const std::pair<uint64_t, uint64_t>& entry) {
    auto it = s.forgotten.find(entry.first);
    return it != s.forgotten.end() && it->second.seq == entry.second;
  };
  while (s.forgotten.size() > kForgottenPerShard && !s.forgotten_order.empty()) {
    const std::pair<uint64_t, uint64_t> oldest = s.forgotten_order.front();
    s.forgotten_order.pop_front();
    if (!current(oldest)) continue;  // revived since
    auto it = s.forgotten.find(oldest.first);
    // (The handle may name a newer id of the same file by now.)
    auto hit = s.forgotten_by_handle.find(std::make_pair(it->second.dev, it->second.handle));
    if (hit != s.forgotten_by_handle.end() && hit->second == oldest.first) s.forgotten_by_handle.erase(hit);
    s.forgotten.erase(it);
  }
  // Entries of revived nodes pile up in the order when nodes come and go
  // without eviction: drop them once they outnumber the live ones.
  if (s.forgotten_order.size() > 2 * std::max(s.forgotten.size(), size_t{64})) {
    std::deque<std::pair<uint64_t, uint64_t>> kept;
    for (const auto& entry : s.forgotten_order)
      if (current(entry)) kept.push_back(entry);
    s.forgotten_order.swap(kept);
  }
}

void PassthroughFs::DropForgotten(Shard& s, uint64_t nodeid) {
  auto it = s.forgotten.find(nodeid);
  if (it == s.forgotten.end()) return;
  auto hit = s.forgotten_by_handle.find(std::make_pair(it->second.dev, it->second.handle));
  if (hit != s.forgotten_by_handle.end() && hit->second == nodeid) s.forgotten_by_handle.erase(hit);
  s.forgotten.erase(it);  // (its order entry no longer matches: skipped)
}

Result<Entry> PassthroughFs::LookupSelf(uint64_t nodeid) {
  int fd = -1;
  if (std::shared_ptr<Inode> live = Find(nodeid)) {
    if (live->stale.load(std::memory_order_relaxed)) return Errno(ESTALE);
    Result<SharedFd> pfd = PathFd(*live);
    if (!pfd.ok()) return pfd.error();
    fd = fcntl((*pfd)->get(), F_DUPFD_CLOEXEC, 0);
  } else {
    ForgottenNode f;
    {
      const Shard& s = (*shards_)[nodeid % kShards];
      absl::ReaderMutexLock l(&s.mu);
      auto it = s.forgotten.find(nodeid);
      if (it != s.forgotten.end()) f = it->second;
    }
    if (f.handle.empty()) {
      // The last server's (journal), or none.
      if (!Revive(nodeid).ok()) return Errno(ESTALE);
      Result<Entry> e = LookupSelf(nodeid);  // live now: counts this LOOKUP
      Unremember(nodeid, 1);                 // and not the revival
      return e;
    }
    Result<int> opened = OpenNodeByHandle(f);
    if (!opened.ok()) return opened.error();
    fd = *opened;
  }
  if (fd < 0) return Errno::Last();
  struct statx st;
  Result<std::shared_ptr<Inode>> n = RememberAs(nodeid, fd, &st, /*unlinked_is_stale=*/true);
  if (!n.ok()) return n.error();
  return MakeEntry(**n, ToAttributes(st));
}

Result<int> PassthroughFs::OpenNodeByHandle(const ForgottenNode& f) {
  const int mfd = MountFdFor(f.dev);
  if (mfd < 0) return Errno(ESTALE);
  const int fd = OpenByHandle(mfd, f.handle, O_PATH);
  // The source file is gone (or its handle no longer opens).
  if (fd < 0) return Errno(errno == ENOMEM ? ENOMEM : ESTALE);
  return fd;
}

Result<std::shared_ptr<PassthroughFs::Inode>> PassthroughFs::RememberAs(uint64_t nodeid, int fd,
                                                                        struct statx* st, bool unlinked_is_stale) {
  if (Statx(fd, st) != 0) {
    const int err = errno;
    close(fd);
    return Errno(err);
  }
  // A file without a name is gone for a file handle, as on a local file
  // system (the source may still open one kept open, or kept alive by a
  // backing file; a forgotten node's unlink may have gone through another
  // server).
  if (unlinked_is_stale && st->stx_nlink == 0 && !S_ISDIR(st->stx_mode)) {
    close(fd);
    return Errno(ESTALE);
  }
  Result<std::shared_ptr<Inode>> n = Remember(fd, *st);
  if (!n.ok()) return n.error();
  if ((*n)->nodeid != nodeid) {
    // Its file is known under another id now: that id is stale.
    Unremember((*n)->nodeid, 1);
    return Errno(ESTALE);
  }
  return n;
}

bool PassthroughFs::KeepBacking(uint64_t nodeid) {
  if (!kernel_pt_) return false;
  std::shared_ptr<Inode> inode = Find(nodeid);
  if (inode == nullptr || inode->type != S_IFREG) return false;
  absl::MutexLock l(&inode->mu);
  inode->keep_backing = true;
  return true;
}

Result<SharedFd> PassthroughFs::PathFd(Inode& inode) {
  if (inode.pinned != nullptr) return inode.pinned;
  if (SharedFd fd = fd_cache_.Get(inode.nodeid)) return fd;
  const int mfd = MountFdFor(inode.dev);
  if (mfd < 0) return Errno(ESTALE);
  int fd = OpenByHandle(mfd, inode.handle, O_PATH);
  if (fd < 0) {
    if (errno == ESTALE) stale_.fetch_add(1, std::memory_order_relaxed);
    return Errno::Last();
  }
  return fd_cache_.Put(inode.nodeid, MakeSharedFd(fd));
}

Result<SharedFd> PassthroughFs::NodePathFd(uint64_t nodeid) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  return PathFd(**n);
}

Result<int> PassthroughFs::Reopen(Inode& inode, int flags) {
  flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_PATH);
  if (inode.pinned == nullptr) {
    const int mfd = MountFdFor(inode.dev);
    if (mfd < 0) return Errno(ESTALE);
    int fd = OpenByHandle(mfd, inode.handle, flags);
    if (fd < 0) return Errno::Last();
    return fd;
  }
  int fd = open(ProcPath(inode.pinned->get()).c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Errno::Last();
  return fd;
}

// ---------------------------------------------------------------------------
// Attributes and entries.

Attributes PassthroughFs::ToAttributes(const struct statx& st) const {
  Attributes a;
  const uint64_t dev = DevOf(st);
  // The source's inode number, so hard links and tools that compare st_ino
  // see what the source shows; inodes of other file systems below the
  // source are mixed with their device to stay apart.
  a.ino = dev == root_dev_ ? st.stx_ino : st.stx_ino ^ (Mix(dev) << 40);
  a.size = st.stx_size;
  a.blocks = st.stx_blocks;
  a.atime = Ts(st.stx_atime);
  a.mtime = Ts(st.stx_mtime);
  a.ctime = Ts(st.stx_ctime);
  if ((st.stx_mask & STATX_BTIME) != 0) a.btime = Ts(st.stx_btime);
  a.mode = st.stx_mode;
  a.nlink = st.stx_nlink;
  a.uid = st.stx_uid;
  a.gid = st.stx_gid;
  a.rdev = EncodeDev(st.stx_rdev_major, st.stx_rdev_minor);
  a.blksize = st.stx_blksize;
  return a;
}

Result<Attributes> PassthroughFs::StatFd(int fd, struct statx* raw) const {
  struct statx st;
  if (Statx(fd, &st) != 0) return Errno::Last();
  if (raw != nullptr) *raw = st;
  return ToAttributes(st);
}

Result<Attributes> PassthroughFs::StatInode(Inode& inode, struct statx* raw) {
  Result<SharedFd> fd = PathFd(inode);
  if (!fd.ok()) return fd.error();
  struct statx st;
  if (Statx((*fd)->get(), &st) != 0) return Errno::Last();
  // Removed in the source behind our back (its last name went elsewhere,
  // not through us, and nothing here has it open): it is gone.
  if (st.stx_nlink == 0 && &inode != root_.get() &&
      !inode.unlinked_here.load(std::memory_order_relaxed) && !inode.HasHandles()) {
    stale_.fetch_add(1, std::memory_order_relaxed);
    return Errno(ESTALE);
  }
  if (raw != nullptr) *raw = st;
  return ToAttributes(st);
}

Entry PassthroughFs::MakeEntry(const Inode& inode, const Attributes& attr) const {
  Entry e;
  e.nodeid = inode.nodeid;
  e.generation = 0;  // node ids are never reused
  e.attr = attr;
  e.entry_timeout = opts_.entry_timeout;
  e.attr_volatile = AttrsVolatile(inode, attr);
  e.attr_timeout = e.attr_volatile ? 0 : opts_.attr_timeout;
  return e;
}

bool PassthroughFs::AttrsVolatile(const Inode& inode, const Attributes& attr) const {
  // A setuid/setgid program: exec takes its identity from the mode the
  // kernel has cached, so a bit cleared in the source by someone else
  // (an administrator disarming a program) must count at the next exec,
  // not a lifetime later. Such files are few; each exec asks once more.
  if (S_ISREG(attr.mode) && HasSetId(attr.mode)) return true;
  return inode.passthrough_writers.load(std::memory_order_acquire) > 0;
}

AttrReply PassthroughFs::MakeAttrReply(const Inode& inode, const Attributes& attr) const {
  const bool vol = AttrsVolatile(inode, attr);
  return AttrReply{attr, vol ? 0 : opts_.attr_timeout, vol};
}

Result<Entry> PassthroughFs::LookupAt(int dirfd, std::string_view name) {
  const CName cname(name);
  struct statx st;
  // An inode we know and hold an fd for needs no open: its number is proof.
  if (statx(dirfd, cname.c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT, kStatxMask, &st) !=
      0) {
    return Errno::Last();
  }
  if (std::shared_ptr<Inode> n = CountIfLive(DevOf(st), st.stx_ino)) {
    return MakeEntry(*n, ToAttributes(st));
  }
  int fd = openat(dirfd, cname.c_str(), kPathFlags);
  if (fd < 0) return Errno::Last();
  if (Statx(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Errno(err);
  }
  Result<std::shared_ptr<Inode>> n = Remember(fd, st);
  if (!n.ok()) return n.error();
  return MakeEntry(**n, ToAttributes(st));
}

Result<Entry> PassthroughFs::EntryForNew(uint64_t parent, int dirfd, std::string_view name) {
  NamespaceChanged(parent);  // a name was made (mknod, mkdir, symlink, link)
  return LookupAt(dirfd, name);
}

}  // namespace efuse
