// core/passthrough/files.cc — PassthroughFs: handles, OPEN and CREATE (kernel
// passthrough or the daemon), and the data calls.
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <climits>
#include <optional>
#include <utility>
#include <vector>

#include "core/log.h"
#include "core/passthrough/internal.h"
#include "core/privileges.h"
#include "core/state_region.h"
#include "proto/abi.h"

namespace efuse {

using passthrough::kPathFlags;
using passthrough::ProcPath;
using passthrough::CName;
using passthrough::Statx;
using passthrough::DevOf;
using passthrough::Stamp;
using passthrough::DropSuidgid;
using passthrough::PreadAll;
using passthrough::AlignedCopy;
using passthrough::MayMapForWriting;
using passthrough::WritesThroughDaemon;
using passthrough::ScopedCreds;
using passthrough::SharedFd;

// ---------------------------------------------------------------------------
// Handles.

uint64_t PassthroughFs::AddHandle(std::shared_ptr<Handle> h, uint64_t unique) {
  h->opened_by = unique & ~abi::kUniqueResend;
  const uint64_t fh = next_fh_.fetch_add(1, std::memory_order_relaxed);
  const Handle& handle = *h;
  {
    HandleShard& s = (*handles_)[fh % kHandleShards];
    absl::MutexLock l(&s.mu);
    s.map.emplace(fh, std::move(h));
  }
  // Journaled before the kernel hears of it (the reply follows), and after
  // it is in the table, where a journal checkpoint finds it.
  JournalHandle(fh, handle);
  return fh;
}

std::shared_ptr<PassthroughFs::Handle> PassthroughFs::GetHandle(uint64_t fh) {
  {
    const HandleShard& s = (*handles_)[fh % kHandleShards];
    absl::ReaderMutexLock l(&s.mu);
    auto it = s.map.find(fh);
    if (it != s.map.end()) return it->second;
  }
  return has_recovered_handles_.load(std::memory_order_acquire) ? ReviveHandle(fh) : nullptr;
}

std::shared_ptr<PassthroughFs::Handle> PassthroughFs::TakeHandle(uint64_t fh) {
  std::shared_ptr<Handle> h = GetHandle(fh);  // revived first, if only the journal knows it
  if (h == nullptr) return nullptr;
  HandleShard& s = (*handles_)[fh % kHandleShards];
  {
    absl::MutexLock l(&s.mu);
    auto it = s.map.find(fh);
    if (it == s.map.end()) return nullptr;
    h = std::move(it->second);
    s.map.erase(it);
  }
  JournalRelease(fh);
  return h;
}

Result<int> PassthroughFs::OpenOnce(Handle& h, std::atomic<int>& slot, uint32_t flags,
                                     bool* opened_here) {
  int fd = slot.load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  Result<int> opened = Reopen(*h.inode, static_cast<int>(flags));
  if (!opened.ok()) return opened.error();
  int expected = -1;
  if (!slot.compare_exchange_strong(expected, *opened, std::memory_order_acq_rel)) {
    close(*opened);  // another thread opened it first
    return expected;
  }
  if (opened_here != nullptr) *opened_here = true;
  return *opened;
}

Result<int> PassthroughFs::HandleFd(Handle& h) { return OpenOnce(h, h.fd, h.flags); }

// O_DIRECT refuses transfers not aligned to the source's block size, yet
// the kernel sends such through an O_DIRECT handle: writeback of a file's
// partial last page (with the writeback cache any writable handle carries
// it, and refusing it would lose that data) and callers' unaligned O_DIRECT
// I/O, which FUSE does not check. Those go through the same file opened
// without O_DIRECT.
Result<int> PassthroughFs::DirectFallbackFd(Handle& h) {
  bool opened_here = false;
  Result<int> fd =
      OpenOnce(h, h.buffered_fd, h.flags & ~static_cast<uint32_t>(O_DIRECT), &opened_here);
  if (opened_here) direct_fallbacks_.fetch_add(1, std::memory_order_relaxed);
  return fd;
}

// ---------------------------------------------------------------------------
// Files.

Result<OpenReply> PassthroughFs::OpenFile(const RequestContext& ctx, std::shared_ptr<Inode> inode,
                                          uint32_t flags, uint32_t open_flags, int fd,
                                          const struct statx* known) {
  if (!init_ok()) {
    if (fd >= 0) close(fd);
    return Errno(EIO);
  }
  auto handle = std::make_shared<Handle>();
  handle->inode = inode;
  if (fd >= 0) handle->fd.store(fd);
  uint32_t kflags = flags & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_NOCTTY);
  if (writeback_) {
    // The kernel reads around partial page writes, and handles O_APPEND
    // itself (its offsets are final).
    if ((kflags & O_ACCMODE) == O_WRONLY) kflags = (kflags & ~O_ACCMODE) | O_RDWR;
    kflags &= ~static_cast<uint32_t>(O_APPEND);
  }
  const bool writes = (kflags & O_ACCMODE) != O_RDONLY || (kflags & O_TRUNC) != 0;

  struct statx st;
  if (known != nullptr) {
    st = *known;
  } else if (fd >= 0) {
    if (Statx(fd, &st) != 0) return Errno::Last();
  } else {
    Result<Attributes> a = StatInode(*inode, &st);
    if (!a.ok()) return a.error();
  }
  if (!S_ISREG(st.stx_mode)) return Errno(S_ISDIR(st.stx_mode) ? EISDIR : EINVAL);
  // Passthrough writes run with the daemon's credentials, which keep
  // setuid/setgid: such files are served by the daemon for such writers,
  // whose WRITEs then say what to clear (FUSE_WRITE_KILL_SUIDGID), judged
  // by the source's own mode rather than by what the kernel has cached.
  const bool suid_risk = writes && ctx.uid != 0 && HasSetId(st.stx_mode);

  bool use_pt = false;
  int32_t backing_id = 0;
  bool other_writers = false;
  {
    absl::MutexLock l(&inode->mu);
    if (inode->open == nullptr) inode->open = std::make_unique<OpenState>();
    OpenState& os = *inode->open;
    if (kernel_pt_) {
      if (os.passthrough > 0) {
        use_pt = true;  // the kernel wants every open of the inode alike
        backing_id = os.backing_id;
      } else if (os.handles == 0 && !suid_risk && inode->kept_backing_id > 0) {
        use_pt = true;  // kept since the last release: no ioctl
        backing_id = std::exchange(inode->kept_backing_id, 0);
        backing_reuses_.fetch_add(1, std::memory_order_relaxed);
      } else if (os.handles == 0 && !suid_risk) {
        // The O_PATH fd, not a writable one: the kernel holds the registered
        // file as long as the backing id lives (a kept id outlives every
        // handle), and a write-mode file would keep the source inode busy
        // for exec (ETXTBSY) and read-only remounts.
        // A private source's fd in hand (a create's) serves as well, and
        // spares an open by handle.
        int backing_fd = opts_.source_private ? fd : -1;
        SharedFd pfd;
        if (backing_fd < 0) {
          Result<SharedFd> path_fd = PathFd(*inode);
          if (!path_fd.ok()) return path_fd.error();
          pfd = *std::move(path_fd);
          backing_fd = pfd->get();
        }
        Result<int32_t> id = kernel_->OpenBacking(backing_fd);
        if (id.ok()) {
          use_pt = true;
          backing_id = *id;
          backing_ids_.fetch_add(1, std::memory_order_relaxed);
          backing_opens_.fetch_add(1, std::memory_order_relaxed);
        } else {
          backing_refusals_.fetch_add(1, std::memory_order_relaxed);
          LogRefusal(id.error().value());
          if (opts_.passthrough == PassthroughMode::kOn) {
            if (os.handles == 0) inode->open.reset();
            return Errno(EIO);
          }
        }
      }
    }
    ++os.handles;
    if (use_pt) {
      ++os.passthrough;
      os.backing_id = backing_id;
      if (MayMapForWriting(kflags)) {
        inode->passthrough_writers.fetch_add(1, std::memory_order_acq_rel);
      }
    }
    other_writers = os.daemon_writers > 0;
    if (WritesThroughDaemon(use_pt, kflags)) ++os.daemon_writers;
  }
  handle->passthrough = use_pt;
  handle->flags = kflags & ~static_cast<uint32_t>(O_TRUNC);
  // A daemon-served handle needs its fd now; a passthrough one only for
  // O_TRUNC (done here) and later calls that need one (locks, fsync, ...).
  if (handle->fd.load() < 0 && (!use_pt || (kflags & O_TRUNC) != 0)) {
    Result<int> opened = Reopen(*inode, static_cast<int>(kflags));
    if (opened.ok() && (kflags & O_TRUNC) != 0 && ftruncate(*opened, 0) != 0) {
      int err = errno;
      close(*opened);
      opened = Errno(err);
    }
    if (!opened.ok()) {
      CloseFile(*handle);
      return opened.error();
    }
    handle->fd.store(*opened);
  }
  // O_TRUNC by a caller without CAP_FSETID (the kernel says so); or a
  // writer of a setuid/setgid file that must share the inode's passthrough
  // mode with open handles (the kernel will not send its writes): cleared
  // now rather than at its first write. The reply carries no attributes.
  if ((open_flags & abi::kOpenKillSuidgid) != 0 || (use_pt && suid_risk)) {
    Result<SharedFd> pfd = PathFd(*inode);
    if (pfd.ok() && DropSuidgid((*pfd)->get(), ctx)) AttrsChangedUnseen(inode->nodeid);
  }

  OpenReply reply;
  // FLUSH only drops the closer's POSIX locks here; without source locks
  // (the kernel keeps them) it has nothing to do.
  if (!opts_.locks) reply.open_flags |= abi::kFopenNoflush;
  if (use_pt) {
    reply.open_flags |= abi::kFopenPassthrough;
    reply.backing_id = backing_id;
    passthrough_opens_.fetch_add(1, std::memory_order_relaxed);
  } else {
    daemon_opens_.fetch_add(1, std::memory_order_relaxed);
    if ((kflags & O_DIRECT) != 0) {
      reply.open_flags |= abi::kFopenDirectIo;
    } else if ((kflags & O_TRUNC) == 0) {
      // Unchanged since the last open: the kernel may keep its pages.
      const uint64_t stamp = Stamp(st);
      const bool unchanged = inode->stamp.exchange(stamp) == stamp;
      // Another handle of this mount writes the file through the daemon:
      // its pages must stay, changed or not. Without the writeback cache
      // the kernel unlocks a page once a write has copied into it, before
      // the WRITE reaches us; dropped then, the page could be read again
      // from the source before the write lands and stay cached over the
      // writer's bytes (a stale read after write).
      if ((opts_.keep_cache && unchanged) || other_writers) {
        reply.open_flags |= abi::kFopenKeepCache;
      }
    }
  }
  reply.fh = AddHandle(std::move(handle), ctx.unique);
  return reply;
}

void PassthroughFs::CloseFile(Handle& h) {
  Inode& inode = *h.inode;
  const int fd = h.fd.exchange(-1);
  // What our own writes did is not a change the kernel missed. Passthrough
  // writes bypassed the FUSE page cache: its pages (from a daemon-served
  // open) may be stale even where the times and size did not move, so the
  // next such open drops them (no Stamp() is 0).
  if (fd >= 0 && (h.flags & O_ACCMODE) != O_RDONLY && h.dir == nullptr) {
    struct statx st;
    if (h.passthrough) {
      inode.stamp.store(0);
    } else if (Statx(fd, &st) == 0) {
      inode.stamp.store(Stamp(st));
    }
  }
  if (fd >= 0) close(fd);
  if (const int buffered = h.buffered_fd.exchange(-1); buffered >= 0) close(buffered);
  std::vector<uint64_t> owners;
  {
    absl::MutexLock l(&h.mu);
    owners.swap(h.lock_owners);
  }
  int32_t close_id = 0;
  bool drop_cached_fd = false;
  std::unique_ptr<OpenState> gone;  // closes lock fds after the lock
  {
    absl::MutexLock l(&inode.mu);
    if (inode.open == nullptr) return;
    OpenState& os = *inode.open;
    // OFD-style owners live as long as this file; POSIX owners were flushed.
    for (uint64_t owner : owners) {
      auto it = os.owners.find(owner);
      if (it != os.owners.end()) {
        close(it->second.fd);
        os.owners.erase(it);
      }
    }
    --os.handles;
    if (WritesThroughDaemon(h.passthrough, h.flags)) --os.daemon_writers;
    if (h.passthrough && MayMapForWriting(h.flags)) {
      inode.passthrough_writers.fetch_sub(1, std::memory_order_acq_rel);
    }
    // The last handle of a file this mount removed: nothing of it is kept
    // (MarkUnlinkedHere says why).
    const bool unlinked = os.handles <= 0 && inode.unlinked_here.load(std::memory_order_relaxed);
    drop_cached_fd = unlinked && h.dir == nullptr;
    if (h.passthrough && --os.passthrough == 0) {
      if (inode.keep_backing && inode.kept_backing_id == 0 && !unlinked) {
        inode.kept_backing_id = os.backing_id;
      } else {
        close_id = os.backing_id;
      }
      os.backing_id = 0;
    }
    if (os.handles <= 0) gone = std::move(inode.open);
    // Closed under the lock: a new open must not reuse an id being closed.
    if (close_id > 0 && kernel_ != nullptr) {
      kernel_->CloseBacking(close_id).ok();
      backing_ids_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  if (drop_cached_fd && inode.pinned == nullptr) fd_cache_.Erase(inode.nodeid);
}

Result<OpenReply> PassthroughFs::Open(const RequestContext& ctx, uint64_t nodeid, uint32_t flags,
                                      uint32_t open_flags) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if ((*n)->type == S_IFDIR) return Errno(EISDIR);
  if ((*n)->type == S_IFLNK) return Errno(ELOOP);
  Result<OpenReply> r = OpenFile(ctx, *n, flags, open_flags, -1);
  // A passthrough handle that may be mapped for writing: what the kernel
  // cached before (with its full lifetime) must not outlive the first
  // store through the mapping; later replies carry no lifetime while it
  // is open (AttrsVolatile). A create's reply is the first, so it needs none.
  if (r.ok() && (r->open_flags & abi::kFopenPassthrough) != 0 && MayMapForWriting(flags)) {
    AttrsChangedUnseen(nodeid);
  }
  return r;
}

Result<CreateReply> PassthroughFs::CreateFile(const RequestContext& ctx, uint64_t parent,
                                              std::string_view name, uint32_t mode, uint32_t umask,
                                              uint32_t flags) {
  if (name.size() > NAME_MAX) return Errno(ENAMETOOLONG);
  Result<std::shared_ptr<Inode>> dir = Get(parent);
  if (!dir.ok()) return dir.error();
  if ((*dir)->type != S_IFDIR) return Errno(ENOTDIR);
  Result<SharedFd> dfd = PathFd(**dir);
  if (!dfd.ok()) return dfd.error();
  const uint32_t m = passthrough::ModeUnderCallerUmask(mode & 07777, umask);
  const bool tmpfile = name.empty();
  uint32_t oflags = flags & ~static_cast<uint32_t>(O_NOCTTY | O_CREAT);
  if (writeback_) {
    if ((oflags & O_ACCMODE) == O_WRONLY) oflags = (oflags & ~O_ACCMODE) | O_RDWR;
    oflags &= ~static_cast<uint32_t>(O_APPEND);
  }
  int fd;
  {
    ScopedCreds creds(creds_, ctx);
    if (!creds.ok()) return creds.error();
    if (tmpfile) {
      fd = openat((*dfd)->get(), ".",
                  (oflags & ~static_cast<uint32_t>(O_TMPFILE)) | O_TMPFILE | O_CLOEXEC, m);
    } else {
      fd = openat((*dfd)->get(), CName(name).c_str(), oflags | O_CREAT | O_CLOEXEC, m);
    }
    if (fd < 0) return Errno::Last();
    if (!tmpfile) NamespaceChanged(parent);
  }
  struct statx st;
  if (Statx(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Errno(err);
  }
  // Remembered by the handle of `fd` itself: no O_PATH open by name and
  // re-stat to prove it names what we created (the O_PATH fd is opened by
  // handle when a request needs one). Where an fd must be pinned, or for an
  // O_TMPFILE (no name, no handle use), its O_PATH fd: by name (a
  // dentry-cache hit) when the name still leads to what we created, else
  // through /proc.
  Result<std::shared_ptr<Inode>> inode =
      tmpfile ? Result<std::shared_ptr<Inode>>(Errno(EAGAIN)) : RememberFd(-1, fd, st);
  int pfd = -1;
  if (!inode.ok() && !tmpfile) {
    struct statx named;
    pfd = openat((*dfd)->get(), CName(name).c_str(), kPathFlags);
    if (pfd >= 0 && (Statx(pfd, &named) != 0 || named.stx_ino != st.stx_ino ||
                     DevOf(named) != DevOf(st))) {
      close(pfd);
      pfd = -1;
    }
  }
  if (!inode.ok()) {
    if (pfd < 0) pfd = open(ProcPath(fd).c_str(), O_PATH | O_CLOEXEC);
    if (pfd < 0) {
      int err = errno;
      close(fd);
      return Errno(err);
    }
    inode = Remember(pfd, st);
  }
  if (!inode.ok()) {
    close(fd);
    return inode.error();
  }
  if (tmpfile) (*inode)->unlinked_here.store(true);
  const Attributes attrs = ToAttributes(st);
  // O_TRUNC and O_EXCL were done by openat; the handle opens as the kernel asked.
  Result<OpenReply> open =
      OpenFile(ctx, *inode, flags & ~static_cast<uint32_t>(O_TRUNC), 0, fd, &st);
  if (!open.ok()) {
    Unremember((*inode)->nodeid, 1);
    return open.error();
  }
  CreateReply reply{MakeEntry(**inode, attrs), *open};
  // An existing setuid/setgid file may have lost the bits since `st` (the
  // caller's O_TRUNC, or OpenFile): the reply's attributes are what the
  // kernel caches, and must be the source's after all of it.
  if (HasSetId(st.stx_mode)) {
    if (Result<Attributes> now = StatInode(**inode); now.ok()) reply.entry.attr = *now;
  }
  return reply;
}

Result<CreateReply> PassthroughFs::Create(const RequestContext& ctx, uint64_t parent,
                                          std::string_view name, uint32_t mode, uint32_t umask,
                                          uint32_t flags, uint32_t open_flags) {
  if (name.empty()) return Errno(EINVAL);
  Result<CreateReply> r = CreateFile(ctx, parent, name, mode, umask, flags);
  // An existing file opened with O_TRUNC by an unprivileged caller: the
  // source kernel cleared what the caller's truncate clears (it opened as
  // the caller), this makes sure; the reply then carries the result.
  if (r.ok() && (open_flags & abi::kOpenKillSuidgid) != 0) {
    if (std::shared_ptr<Handle> h = GetHandle(r->open.fh); h != nullptr && h->fd.load() >= 0) {
      if (DropSuidgid(h->fd.load(), ctx)) {
        if (Result<Attributes> now = StatFd(h->fd.load()); now.ok()) r->entry.attr = *now;
      }
    }
  }
  return r;
}

Result<CreateReply> PassthroughFs::TmpFile(const RequestContext& ctx, uint64_t parent,
                                           uint32_t mode, uint32_t umask, uint32_t flags) {
  return CreateFile(ctx, parent, "", mode, umask, flags);
}

Result<size_t> PassthroughFs::Read(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                                   uint64_t offset, std::span<uint8_t> out, uint32_t flags) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  Result<int> fd = HandleFd(*h);
  if (!fd.ok()) return fd.error();
  Result<size_t> got = PreadAll(*fd, out, offset);
  if (!got.ok() && got.error().value() == EINVAL && (h->flags & O_DIRECT) != 0) {
    fd = DirectFallbackFd(*h);
    if (!fd.ok()) return fd.error();
    got = PreadAll(*fd, out, offset);
  }
  return got;
}

Result<size_t> PassthroughFs::Write(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                                    uint64_t offset, std::span<const uint8_t> data,
                                    uint32_t write_flags, uint32_t flags) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  Result<int> fd = HandleFd(*h);
  if (!fd.ok()) return fd.error();
  if ((h->flags & O_DIRECT) != 0 && (reinterpret_cast<uintptr_t>(data.data()) & 4095) != 0) {
    data = AlignedCopy(data);
  }
  // The kernel sends an O_APPEND file's writes with O_APPEND in `flags`
  // (page writeback, kWriteCache, has its place). A handle opened O_APPEND
  // appends through its fd, at the source's end, atomically against its
  // other writers; a write with its place goes through the file opened
  // without O_APPEND.
  const bool appends =
      (flags & O_APPEND) != 0 && (write_flags & abi::kWriteCache) == 0 && (h->flags & O_APPEND) != 0;
  bool positioned = !appends && (h->flags & O_APPEND) != 0;
  if (appends && opts_.state != nullptr) {
    // Journaled: where it lands is recorded first. A server killed halfway
    // through leaves part of it; the resent WRITE writes all of it there
    // again, instead of appending it once more after that part.
    const uint64_t first = ctx.unique & ~abi::kUniqueResend;
    std::optional<uint64_t> at;
    if ((ctx.unique & abi::kUniqueResend) != 0) {
      at = opts_.state->IntentDetail(first);
      if (!at) {
        // Its first run died before writing, or its record was overwritten
        // by kAnswerSlots later answers (then a part it wrote may repeat).
        Log(LogLevel::kDebug, "passthrough: a resent O_APPEND write (unique %u) has no recorded offset: appended",
            first);
      } else if (!FirstRunBeganAt(*h->inode, *at, data)) {
        // What is there is not its beginning (another writer of the source
        // came first): its first run wrote nothing there.
        at.reset();
      }
    }
    if (at) {
      positioned = true;
      offset = *at;
    } else {
      struct stat st;
      if (fstat(*fd, &st) != 0) return Errno::Last();
      opts_.state->RecordIntentDetail(first, static_cast<uint64_t>(st.st_size));  // before a byte is written
    }
  }
  if (positioned) {
    // (Buffered too: these are few, and an unaligned one must not fall back
    // to the O_DIRECT fallback fd, which appends.)
    fd = OpenOnce(*h, h->positioned_fd, h->flags & ~static_cast<uint32_t>(O_APPEND | O_DIRECT));
    if (!fd.ok()) return fd.error();
  }
  if (appends && crash_mid_append_ && data.size() >= 2) {
    Log(LogLevel::kWarning, "test fault crash_mid_append: dying halfway through an O_APPEND write");
    [[maybe_unused]] const ssize_t half = pwrite(*fd, data.data(), data.size() / 2, static_cast<off_t>(offset));
    raise(SIGKILL);
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        pwrite(*fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && (h->flags & O_DIRECT) != 0 && *fd != h->buffered_fd.load()) {
        fd = DirectFallbackFd(*h);
        if (!fd.ok()) return fd.error();
        continue;
      }
      if (done > 0) break;
      return Errno::Last();
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  // The source kernel keeps setuid/setgid for the daemon (it may): the
  // kernel told us the writer may not. Checked at every such write, not
  // only for files that had the bits at open: a chmod may come between.
  if ((write_flags & abi::kWriteKillSuidgid) != 0 && DropSuidgid(*fd, ctx)) {
    AttrsChangedUnseen(nodeid);
  }
  return done;
}

// True if the source holds, from `at`, a prefix of `data` (none at all: at
// the end): a resent append's first run began writing there.
bool PassthroughFs::FirstRunBeganAt(Inode& inode, uint64_t at, std::span<const uint8_t> data) {
  // (The handle may be write-only: the file is read through an fd of its own.)
  Result<int> opened = Reopen(inode, O_RDONLY);
  if (!opened.ok()) return true;  // unreadable: the record stands
  const passthrough::OwnedFd owned(*opened);
  const int fd = owned.get();
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < at) return false;
  const size_t there = static_cast<size_t>(std::min<uint64_t>(data.size(), static_cast<uint64_t>(st.st_size) - at));
  std::vector<uint8_t> bytes(there);
  size_t got = 0;
  while (got < there) {
    const ssize_t n = pread(fd, bytes.data() + got, there - got, static_cast<off_t>(at + got));
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return std::equal(bytes.begin(), bytes.end(), data.begin());
}

Result<FileSystem::AsyncFileRef> PassthroughFs::AsyncFile(const RequestContext& ctx, uint64_t nodeid,
                                                          uint64_t fh, uint32_t write_flags) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  // What Write does besides pwrite stays on the synchronous path: O_DIRECT
  // data may need re-aligning, and clearing setuid/setgid follows the write.
  if ((h->flags & O_DIRECT) != 0) return AsyncFileRef{};
  if ((write_flags & abi::kWriteKillSuidgid) != 0) return AsyncFileRef{};
  // Its fd appends: Write picks the fd for each WRITE (and records where an
  // append lands).
  if ((h->flags & O_APPEND) != 0) return AsyncFileRef{};
  Result<int> fd = HandleFd(*h);
  if (!fd.ok()) return fd.error();
  return AsyncFileRef{*fd, h};  // the handle (and so its fd) lives until the I/O ends
}

void PassthroughFs::Release(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, uint32_t flags,
                            uint32_t release_flags, uint64_t lock_owner) {
  std::shared_ptr<Handle> h = TakeHandle(fh);
  if (h != nullptr) CloseFile(*h);
}

Status PassthroughFs::Fsync(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                            bool datasync) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  Result<int> fd = HandleFd(*h);
  if (!fd.ok()) return fd.error();
  if ((datasync ? fdatasync(*fd) : fsync(*fd)) != 0) return Errno::Last();
  return OkStatus();
}

Status PassthroughFs::Flush(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                            uint64_t lock_owner) {
  // close() by a process drops its POSIX locks on the file: close that
  // owner's open file description, which drops them in the source.
  // Without source locks a FLUSH carries nothing (data is written through
  // at once): ENOSYS, and the kernel sends no more (a round trip per close).
  if (!opts_.locks) return Errno(ENOSYS);
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return OkStatus();
  Inode& inode = *h->inode;
  int fd = -1;
  {
    absl::MutexLock l(&inode.mu);
    if (inode.open != nullptr) {
      auto it = inode.open->owners.find(lock_owner);
      if (it != inode.open->owners.end()) {
        fd = it->second.fd;
        inode.open->owners.erase(it);
      }
    }
  }
  if (fd >= 0) close(fd);
  return OkStatus();
}

Status PassthroughFs::Fallocate(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                                uint64_t offset, uint64_t length, uint32_t mode) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  Result<int> fd = HandleFd(*h);
  if (!fd.ok()) return fd.error();
  const off_t off = static_cast<off_t>(offset), len = static_cast<off_t>(length);
  if (fallocate(*fd, static_cast<int>(mode), off, len) == 0) return OkStatus();
  // A source without ZERO_RANGE (tmpfs: memfs's data in the kernel) gets
  // the same bytes from a punched hole, allocated again (and the size
  // extended unless KEEP_SIZE): the modes memfs serves stay served.
  constexpr uint32_t kZero = FALLOC_FL_ZERO_RANGE, kKeep = FALLOC_FL_KEEP_SIZE;
  if (errno != EOPNOTSUPP || (mode & ~(kZero | kKeep)) != 0 || (mode & kZero) == 0) {
    return Errno::Last();
  }
  if (fallocate(*fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0 ||
      fallocate(*fd, static_cast<int>(mode & kKeep), off, len) != 0) {
    return Errno::Last();
  }
  return OkStatus();
}

Result<uint64_t> PassthroughFs::Lseek(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                                      uint64_t offset, uint32_t whence) {
  // With the writeback cache the kernel does not flush before LSEEK: the
  // source would call dirty data a hole (and `cp --sparse` would skip it).
  // ENOSYS makes the kernel answer itself (all data up to EOF).
  if (writeback_) return Errno(ENOSYS);
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  Result<int> fd = HandleFd(*h);
  if (!fd.ok()) return fd.error();
  off_t r = lseek(*fd, static_cast<off_t>(offset), static_cast<int>(whence));
  if (r < 0) return Errno::Last();
  return static_cast<uint64_t>(r);
}

Result<uint64_t> PassthroughFs::CopyFileRange(const RequestContext& ctx, uint64_t nodeid_in,
                                              uint64_t fh_in, uint64_t off_in, uint64_t nodeid_out,
                                              uint64_t fh_out, uint64_t off_out, uint64_t len,
                                              uint64_t flags) {
  std::shared_ptr<Handle> in = GetHandle(fh_in);
  std::shared_ptr<Handle> out = GetHandle(fh_out);
  if (in == nullptr || out == nullptr) return Errno(EBADF);
  Result<int> ifd = HandleFd(*in);
  if (!ifd.ok()) return ifd.error();
  Result<int> ofd = HandleFd(*out);
  if (!ofd.ok()) return ofd.error();
  loff_t a = static_cast<loff_t>(off_in), b = static_cast<loff_t>(off_out);
  ssize_t n =
      copy_file_range(*ifd, &a, *ofd, &b, static_cast<size_t>(len), static_cast<unsigned>(flags));
  if (n < 0) return Errno::Last();
  return static_cast<uint64_t>(n);
}

Status PassthroughFs::SyncFs(const RequestContext& ctx) {
  std::vector<int> fds;
  {
    absl::ReaderMutexLock l(&mounts_mu_);
    for (const auto& [dev, fd] : mount_fds_) fds.push_back(fd);
  }
  for (int fd : fds) {
    if (syncfs(fd) != 0) return Errno::Last();
  }
  return OkStatus();
}

}  // namespace efuse
