// core/passthrough/locks.cc — PassthroughFs: POSIX, OFD and flock locks
// carried to the source.
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "core/passthrough/internal.h"

namespace efuse {

namespace {
// The kernel's OFFSET_MAX: a lock "to the end of the file".
constexpr uint64_t kOffsetMax = 0x7fffffffffffffffULL;
}  // namespace

// ---------------------------------------------------------------------------
// Locks.

Result<int> PassthroughFs::OwnerLockFd(Inode& inode, Handle& h, uint64_t owner, bool create) {
  {
    absl::MutexLock l(&inode.mu);
    if (inode.open != nullptr) {
      auto it = inode.open->owners.find(owner);
      if (it != inode.open->owners.end()) return it->second.fd;
    }
  }
  if (!create) return -1;
  // Read-write when the source allows it, so one description serves read
  // and write locks alike (a lock owner's locks must share one).
  Result<int> fd = Reopen(inode, O_RDWR | O_NONBLOCK);
  if (!fd.ok()) fd = Reopen(inode, static_cast<int>(h.flags & O_ACCMODE) | O_NONBLOCK);
  if (!fd.ok()) return fd.error();
  int result = *fd;
  {
    absl::MutexLock l(&inode.mu);
    if (inode.open == nullptr) {
      close(*fd);
      return Errno(EBADF);
    }
    auto [it, inserted] = inode.open->owners.emplace(owner, OpenState::OwnerLock{*fd, 0});
    if (!inserted) {
      close(*fd);
      result = it->second.fd;
    }
  }
  absl::MutexLock l(&h.mu);
  if (std::find(h.lock_owners.begin(), h.lock_owners.end(), owner) == h.lock_owners.end()) {
    h.lock_owners.push_back(owner);
  }
  return result;
}

Status PassthroughFs::WaitLock(const RequestContext& ctx, const std::function<int()>& attempt) {
  int err = attempt();
  if (err == 0) return OkStatus();
  if (err != EAGAIN && err != EWOULDBLOCK) return Errno(err);
  // A waiting lock holds this worker: never let waiters take them all.
  if (lock_waiters_.fetch_add(1) >= std::max(opts_.max_lock_waiters, 0)) {
    lock_waiters_.fetch_sub(1);
    return Errno(EDEADLK);
  }
  auto delay = std::chrono::milliseconds(1);
  Status result = OkStatus();
  for (;;) {
    if (ctx.Interrupted()) {
      result = Errno(EINTR);
      break;
    }
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(20));
    err = attempt();
    if (err == 0) break;
    if (err != EAGAIN && err != EWOULDBLOCK) {
      result = Errno(err);
      break;
    }
  }
  lock_waiters_.fetch_sub(1);
  return result;
}

namespace {
struct flock ToFlock(const LockRequest& lk) {
  struct flock fl {};
  fl.l_type = static_cast<short>(lk.type);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(lk.start);
  fl.l_len = lk.end >= kOffsetMax ? 0 : static_cast<off_t>(lk.end - lk.start + 1);
  fl.l_pid = 0;  // required by OFD locks
  return fl;
}
}  // namespace

Result<LockRequest> PassthroughFs::GetLk(const RequestContext& ctx, uint64_t nodeid,
                                         const LockRequest& lk) {
  std::shared_ptr<Handle> h = GetHandle(lk.fh);
  if (h == nullptr) return Errno(EBADF);
  Inode& inode = *h->inode;
  // Test from the owner's own description (its locks do not conflict with
  // themselves), else from the handle's, which holds no POSIX locks.
  Result<int> fd = OwnerLockFd(inode, *h, lk.owner, /*create=*/false);
  if (!fd.ok()) return fd.error();
  int test_fd = *fd;
  if (test_fd < 0) {
    Result<int> hfd = HandleFd(*h);
    if (!hfd.ok()) return hfd.error();
    test_fd = *hfd;
  }
  struct flock fl = ToFlock(lk);
  if (fcntl(test_fd, F_OFD_GETLK, &fl) != 0) return Errno::Last();
  LockRequest out = lk;
  out.type = static_cast<uint32_t>(fl.l_type);
  if (fl.l_type == F_UNLCK) {
    out.pid = 0;
    return out;
  }
  out.start = static_cast<uint64_t>(fl.l_start);
  out.end = fl.l_len == 0 ? kOffsetMax : static_cast<uint64_t>(fl.l_start + fl.l_len - 1);
  // OFD locks carry no pid: find which of our owners holds the lock found.
  // Asked from the holder's own description, over the part of that lock the
  // caller asked about, the answer is no longer that lock. Asked from any
  // other owner's, it usually still is; but it may be a lock of the caller
  // (excluded from the first answer, not from this one) or a copy of the
  // same range held by two owners. So the holder is named only when exactly
  // one owner's answer changes, else left unknown (pid 0), never guessed.
  out.pid = 0;
  const uint64_t probe_start = std::max(out.start, lk.start);
  const uint64_t probe_end = std::min(out.end, lk.end);
  absl::MutexLock l(&inode.mu);
  if (inode.open != nullptr && probe_start <= probe_end) {
    LockRequest part = lk;
    part.start = probe_start;
    part.end = probe_end;
    int candidates = 0;
    uint32_t pid = 0;
    for (const auto& [owner, ol] : inode.open->owners) {
      if (owner == lk.owner) continue;
      struct flock probe = ToFlock(part);
      if (fcntl(ol.fd, F_OFD_GETLK, &probe) != 0) continue;
      const bool same_lock =
          probe.l_type == fl.l_type && probe.l_start == fl.l_start && probe.l_len == fl.l_len;
      if (!same_lock) {
        ++candidates;
        pid = ol.pid;
      }
    }
    if (candidates == 1) out.pid = pid;
  }
  return out;
}

Status PassthroughFs::SetLk(const RequestContext& ctx, uint64_t nodeid, const LockRequest& lk,
                            bool sleep) {
  std::shared_ptr<Handle> h = GetHandle(lk.fh);
  if (h == nullptr) return Errno(EBADF);
  Inode& inode = *h->inode;
  if (lk.flock) {
    // BSD locks belong to the open file: the handle's own description.
    Result<int> fd = HandleFd(*h);
    if (!fd.ok()) return fd.error();
    if (lk.type == F_UNLCK) {
      return flock(*fd, LOCK_UN) == 0 ? OkStatus() : Status(Errno::Last());
    }
    const int op = (lk.type == F_RDLCK ? LOCK_SH : LOCK_EX) | LOCK_NB;
    const int lfd = *fd;
    auto attempt = [lfd, op]() { return flock(lfd, op) == 0 ? 0 : errno; };
    if (!sleep) {
      int err = attempt();
      return err == 0 ? OkStatus() : Status(Errno(err == EWOULDBLOCK ? EAGAIN : err));
    }
    return WaitLock(ctx, attempt);
  }
  const bool unlock = lk.type == F_UNLCK;
  Result<int> fd = OwnerLockFd(inode, *h, lk.owner, /*create=*/!unlock);
  if (!fd.ok()) return fd.error();
  if (*fd < 0) return OkStatus();  // unlocking what was never locked
  {
    absl::MutexLock l(&inode.mu);
    if (inode.open != nullptr) {
      auto it = inode.open->owners.find(lk.owner);
      if (it != inode.open->owners.end() && !unlock) it->second.pid = lk.pid;
    }
  }
  const int lfd = *fd;
  const struct flock want = ToFlock(lk);
  auto attempt = [lfd, want]() {
    struct flock fl = want;
    return fcntl(lfd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
  };
  if (!sleep || unlock) {
    int err = attempt();
    return err == 0 ? OkStatus() : Status(Errno(err));
  }
  return WaitLock(ctx, attempt);
}

}  // namespace efuse
