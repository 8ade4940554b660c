// core/passthrough/source_events.cc — PassthroughFs: the source watcher's
// events and the attribute invalidations sent to the kernel.
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>

#include <cstring>

#include "core/log.h"
#include "core/passthrough/internal.h"
#include "proto/notify.h"

namespace efuse {

using passthrough::CName;
using passthrough::DevOf;
using passthrough::ShardIndexOfKey;
using passthrough::SharedFd;

// ---------------------------------------------------------------------------
// The source watcher.

void PassthroughFs::WatchDir(const Inode& inode, int fd) {
  const std::string& handle = &inode == root_.get() ? root_handle_ : inode.handle;
  if (handle.empty()) return;
  if (int err = watcher_->Watch(fd); err != 0) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      Log(LogLevel::kWarning,
          "passthrough: cannot watch a source directory (%s); its changes "
          "show after the cache timeouts (logged once)",
          std::strerror(err));
    }
    return;
  }
  absl::MutexLock l(&watch_mu_);
  watched_[handle] = inode.nodeid;
}

void PassthroughFs::UnwatchDir(Inode& inode) {
  {
    absl::MutexLock l(&watch_mu_);
    auto it = watched_.find(inode.handle);
    if (it == watched_.end() || it->second != inode.nodeid) return;
    watched_.erase(it);
  }
  if (Result<SharedFd> fd = PathFd(inode); fd.ok()) watcher_->Unwatch((*fd)->get());
}

void PassthroughFs::AttrsChangedUnseen(uint64_t nodeid) {
  if (kernel_ != nullptr && kernel_->DropCachedAttributes(nodeid).ok()) {
    unseen_attr_invalidations_.fetch_add(1, std::memory_order_relaxed);
  }
}

void PassthroughFs::InvalidateInode(uint64_t nodeid) {
  // Source events land here: its xattrs may have changed too (FAN_ATTRIB).
  if (std::shared_ptr<Inode> n = Find(nodeid); n != nullptr) XattrsChanged(*n);
  if (kernel_->InvalidateData(nodeid).ok()) invalidations_.fetch_add(1, std::memory_order_relaxed);
}

void PassthroughFs::OnSourceEvent(const passthrough::SourceEvent& ev) {
  uint64_t dir_id;
  {
    absl::ReaderMutexLock l(&watch_mu_);
    auto it = watched_.find(ev.dir_handle);
    if (it == watched_.end()) return;
    dir_id = it->second;
  }
  // The directory itself (its attributes, or it went away).
  if (ev.name == "." || (ev.mask & FAN_DELETE_SELF) != 0) {
    InvalidateInode(dir_id);
    return;
  }
  if ((ev.mask & (FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO)) != 0) {
    // The name (or its absence, for a negative entry), then the
    // directory's attributes and cached listing (InvalidateInode drops its
    // pages: no NamespaceChanged notification needed).
    namespace_version_.fetch_add(1, std::memory_order_release);
    proto::Reply r = proto::NotifyInvalEntry(dir_id, ev.name);
    if (kernel_->Notify(r.Iov()).ok()) invalidations_.fetch_add(1, std::memory_order_relaxed);
    InvalidateInode(dir_id);
  }
  if ((ev.mask & (FAN_ATTRIB | FAN_CLOSE_WRITE)) != 0) {
    // An entry's attributes or data: find its inode, if the kernel has it.
    std::shared_ptr<Inode> dir = Find(dir_id);
    if (dir == nullptr) return;
    Result<SharedFd> dfd = PathFd(*dir);
    if (!dfd.ok()) return;
    struct statx st;
    if (statx((*dfd)->get(), CName(ev.name).c_str(), AT_SYMLINK_NOFOLLOW, STATX_INO, &st) != 0) {
      return;
    }
    const uint64_t dev = DevOf(st), ino = st.stx_ino;
    uint64_t child = 0;
    {
      Shard& s = (*shards_)[ShardIndexOfKey(dev, ino, kShards)];
      absl::ReaderMutexLock l(&s.mu);
      auto it = s.by_key.find(std::make_pair(dev, ino));
      if (it != s.by_key.end()) child = it->second->nodeid;
    }
    if (child != 0) InvalidateInode(child);
  }
}

}  // namespace efuse
