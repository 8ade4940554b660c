// core/passthrough/directories.cc — PassthroughFs: directory handles and
// listings (READDIR, READDIRPLUS, stat-ahead).
#include "core/passthrough/passthrough.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <utility>

#include "core/log.h"
#include "core/passthrough/internal.h"
#include "core/passthrough/source_dirent.h"
#include "proto/abi.h"

namespace efuse {

using passthrough::kDirBufferSize;
using passthrough::CName;
using passthrough::Statx;
using passthrough::Mix;
using passthrough::Stamp;
using passthrough::SharedFd;

namespace {
// Stat-ahead (DirPrefetcher::StatAhead) for what is left of a chunk of at
// least this many bytes of records: about 64 short names.
constexpr size_t kStatAheadMinBytes = 2048;
// A stream position no directory cookie names (they are off_t, never
// negative): ListFrom seeks from it.
constexpr uint64_t kNoCookie = ~uint64_t{0};
}  // namespace

// ---------------------------------------------------------------------------
// Directories.

Result<OpenReply> PassthroughFs::OpenDir(const RequestContext& ctx, uint64_t nodeid,
                                         uint32_t flags) {
  // The kernel takes this once for "open directories without asking".
  if (!opts_.dir_handles) return Errno(ENOSYS);
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if ((*n)->type != S_IFDIR) return Errno(ENOTDIR);
  Result<std::shared_ptr<Handle>> opened = OpenListing(*n);
  if (!opened.ok()) return opened.error();
  std::shared_ptr<Handle> h = std::move(*opened);
  struct statx st;
  if (Statx(h->fd.load(), &st) != 0) return Errno::Last();
  {
    absl::MutexLock l(&(*n)->mu);
    if ((*n)->open == nullptr) (*n)->open = std::make_unique<OpenState>();
    ++(*n)->open->handles;
  }
  OpenReply reply;
  if (opts_.cache_dir) {
    // The kernel keeps the listing; it drops it itself on changes made
    // through the mount, and we keep it only while the source's mtime and
    // ctime say nothing else changed it.
    reply.open_flags |= abi::kFopenCacheDir;
    const uint64_t stamp = Stamp(st);
    if ((*n)->stamp.exchange(stamp) == stamp) reply.open_flags |= abi::kFopenKeepCache;
  }
  reply.fh = AddHandle(std::move(h), ctx.unique);
  return reply;
}

Result<std::shared_ptr<PassthroughFs::Handle>> PassthroughFs::OpenListing(const std::shared_ptr<Inode>& dir) {
  Result<SharedFd> pfd = PathFd(*dir);
  if (!pfd.ok()) return pfd.error();
  const int fd = openat((*pfd)->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno::Last();
  auto h = std::make_shared<Handle>();
  h->inode = dir;
  h->flags = O_RDONLY | O_DIRECTORY;
  h->fd.store(fd);
  h->dir = std::make_unique<DirStream>();
  return h;
}

Result<std::shared_ptr<PassthroughFs::Handle>> PassthroughFs::OpenListingOf(uint64_t nodeid) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if ((*n)->type != S_IFDIR) return Errno(ENOTDIR);
  return OpenListing(*n);
}

std::shared_ptr<PassthroughFs::Handle> PassthroughFs::TakeListing(uint64_t nodeid, uint64_t offset) {
  std::shared_ptr<Handle> h;
  {
    absl::MutexLock l(&streams_mu_);
    // The walk's own stream if it is there (two readers of one directory
    // keep theirs), else any of the directory's: ListFrom seeks it and
    // drops what it had read ahead.
    auto best = streams_.end();
    for (auto it = streams_.begin(); it != streams_.end(); ++it) {
      if (it->first != nodeid) continue;
      if (best == streams_.end()) best = it;
      absl::MutexLock dl(&it->second->dir->mu);
      if (it->second->dir->offset == offset) {
        best = it;
        break;
      }
    }
    if (best == streams_.end()) return nullptr;
    h = std::move(best->second);
    streams_.erase(best);
  }
  // Only for the directory the node still is (not one forgotten since, or
  // replaced in the source).
  std::shared_ptr<Inode> now = Find(nodeid);
  if (now == nullptr || now.get() != h->inode.get() || now->stale.load(std::memory_order_relaxed)) return nullptr;
  return h;
}

void PassthroughFs::KeepListing(uint64_t nodeid, std::shared_ptr<Handle> h) {
  // A few walks at once; the oldest kept stream goes first.
  constexpr size_t kMaxStreams = 16;
  std::shared_ptr<Handle> evicted;  // closed once the lock is let go
  absl::MutexLock l(&streams_mu_);
  if (streams_.size() >= kMaxStreams) {
    evicted = std::move(streams_.front().second);
    streams_.erase(streams_.begin());
  }
  streams_.emplace_back(nodeid, std::move(h));
}

void PassthroughFs::NamespaceChanged(uint64_t dir, uint64_t other_dir) {
  namespace_version_.fetch_add(1, std::memory_order_release);
  if (kernel_ == nullptr) return;
  // Opened without OPENDIR, a directory's listing is kept by the kernel
  // (fs/fuse/readdir.c), which checks it against the directory's change
  // count only when a reader starts at position 0. A reader already past
  // it takes up a listing another reader finished, even one begun before
  // this change: a name moved away would still be listed to the very
  // process that moved it. Dropped now, while the change holds the
  // directory's lock, that listing is found incomplete and read again.
  // Only a directory listed without a handle has one (READDIR runs under
  // that lock too, so its mark is set before this change began), or, in a
  // successor, one the last server may have listed.
  for (uint64_t d : {dir, other_dir}) {
    if (d == 0) continue;
    std::shared_ptr<Inode> n = Find(d);
    if (n == nullptr) continue;
    if (!n->listed_without_handle.load(std::memory_order_acquire) &&
        (opts_.dir_handles || !recovered_nodes_.contains(d))) {
      continue;
    }
    if (crash_before_listing_drop_) {
      Log(LogLevel::kWarning, "test fault crash_before_listing_drop: dying before dropping the listing of node %u", d);
      raise(SIGKILL);
    }
    if (kernel_->InvalidateData(d).ok()) listing_drops_.fetch_add(1, std::memory_order_relaxed);
  }
}

Status PassthroughFs::ReadDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                              uint64_t offset, DirSink& sink) {
  if (fh != 0) {
    std::shared_ptr<Handle> h = GetHandle(fh);
    if (h == nullptr || h->dir == nullptr) return Errno(EBADF);
    bool at_end = false;
    return ListFrom(*h, offset, sink, &at_end);
  }
  // Opened without OPENDIR (dir_handles off, or a predecessor's choice).
  if (opts_.dir_handles && !told_no_opendir_.exchange(true)) {
    Log(LogLevel::kWarning,
        "the kernel opens directories without OPENDIR on this connection (an earlier server's "
        "--dir_handles=off): listings are kept until a change through the mount");
  }
  std::shared_ptr<Handle> h = TakeListing(nodeid, offset);
  if (h == nullptr) {
    Result<std::shared_ptr<Handle>> opened = OpenListingOf(nodeid);
    if (!opened.ok()) return opened.error();
    h = std::move(*opened);
  }
  // The kernel may keep what this answers: its changes drop it from now on.
  h->inode->listed_without_handle.store(true, std::memory_order_release);
  {
    // Names changed since this stream read ahead: read them again (the
    // reader may have begun after the change, and the kernel keeps what
    // it is given). A place no cookie names makes ListFrom seek and drop
    // its read-ahead.
    DirStream& d = *h->dir;
    absl::MutexLock l(&d.mu);
    const uint64_t now = namespace_version_.load(std::memory_order_acquire);
    if (d.read_at_version != now) d.offset = kNoCookie;
    d.read_at_version = now;
  }
  bool at_end = false;
  Status st = ListFrom(*h, offset, sink, &at_end);
  if (st.ok() && !at_end) KeepListing(nodeid, std::move(h));
  return st;
}

Status PassthroughFs::ListFrom(Handle& handle, uint64_t offset, DirSink& sink, bool* at_end) {
  Handle* const h = &handle;
  const int fd = h->fd.load();
  DirStream& d = *h->dir;
  const bool plus = sink.plus();
  const bool attrs = plus && ListWithAttrs(*h->inode);
  if (plus) (attrs ? listings_with_attrs_ : listings_names_only_).fetch_add(1, std::memory_order_relaxed);
  absl::MutexLock l(&d.mu);
  if (offset != d.offset) {
    // A seek, or a restart after entries the kernel could not take.
    if (lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0) return Errno::Last();
    d.len = d.pos = 0;
    d.offset = offset;
    d.statted_ahead = false;
  }
  for (;;) {
    if (d.pos >= d.len) {
      long n = syscall(SYS_getdents64, fd, d.buf.get(), kDirBufferSize);
      if (n < 0) return Errno::Last();
      if (n == 0) {
        *at_end = true;
        break;
      }
      d.len = static_cast<size_t>(n);
      d.pos = 0;
      d.statted_ahead = false;
      if (prefetch_ != nullptr) prefetch_->AddChunk(fd, h->inode->dev, d.buf.get(), d.len);
    }
    // Worth another CPU only for more than a handful of names.
    if (attrs && !d.statted_ahead && prefetch_ != nullptr && d.len - d.pos >= kStatAheadMinBytes) {
      prefetch_->StatAhead(fd, d.buf.get() + d.pos, d.len - d.pos);
      d.statted_ahead = true;
    }
    passthrough::SourceDirent rec;
    if (!passthrough::ReadSourceDirent(d.buf.get(), d.len, d.pos, &rec)) {
      d.pos = d.len;  // no whole record left: read on
      continue;
    }
    const uint64_t d_ino = rec.ino;
    const int64_t d_off = rec.off;
    const uint8_t d_type = rec.type;
    const std::string_view name = rec.name;
    uint32_t mode = static_cast<uint32_t>(d_type) << 12;  // DT_x << 12 == S_IFx
    const uint64_t ino = h->inode->dev == root_dev_ ? d_ino : d_ino ^ (Mix(h->inode->dev) << 40);
    bool accepted;
    if (attrs && !IsDotOrDotDot(name)) {
      Result<Entry> e = LookupAt(fd, name);
      if (e.ok()) {
        accepted = sink.Add(name, e->attr.ino, e->attr.mode, static_cast<uint64_t>(d_off), &*e);
        if (!accepted) {
          Unremember(e->nodeid, 1);  // the kernel never saw it
        } else if (S_ISDIR(e->attr.mode)) {
          // The kernel needs no LOOKUP of it: what a lookup would have
          // taught (`ls -lR` goes on into it), this listing does.
          NoteSubdirIn(*h->inode, e->nodeid, /*dir_attrs=*/true);
        }
      } else {
        // Gone since getdents: list the name without an entry.
        Entry none;
        none.attr.ino = ino;
        none.attr.mode = mode;
        accepted = sink.Add(name, ino, mode, static_cast<uint64_t>(d_off), &none);
      }
    } else {
      if (d_type == DT_UNKNOWN) {
        struct statx st;
        if (statx(fd, CName(name).c_str(), AT_SYMLINK_NOFOLLOW, STATX_TYPE, &st) == 0) {
          mode = st.stx_mode & S_IFMT;
        }
      }
      Entry dot;
      dot.attr.ino = ino;
      dot.attr.mode = mode;
      accepted = sink.Add(name, ino, mode, static_cast<uint64_t>(d_off), plus ? &dot : nullptr);
    }
    if (!accepted) break;
    d.pos += rec.reclen;
    d.offset = static_cast<uint64_t>(d_off);
  }
  return OkStatus();
}

void PassthroughFs::ReleaseDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh) {
  std::shared_ptr<Handle> h = TakeHandle(fh);
  if (h != nullptr) CloseFile(*h);
}

Status PassthroughFs::FsyncDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                               bool datasync) {
  std::shared_ptr<Handle> h;
  if (fh != 0) {
    h = GetHandle(fh);
    if (h == nullptr) return Errno(EBADF);
  } else {  // opened without OPENDIR
    Result<std::shared_ptr<Handle>> opened = OpenListingOf(nodeid);
    if (!opened.ok()) return opened.error();
    h = std::move(*opened);
  }
  const int fd = h->fd.load();
  if ((datasync ? fdatasync(fd) : fsync(fd)) != 0) return Errno::Last();
  return OkStatus();
}

}  // namespace efuse
