// core/memfs/memfs_data.cc — MemFs: file contents and attribute changes
// (setattr, read, write, fallocate, lseek, copy_file_range, page-cache pushes).
#include "core/memfs/memfs.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <vector>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "core/memfs/memfs_internal.h"
#include "core/state_region.h"
#include "core/privileges.h"
#include "proto/abi.h"
#include "proto/notify.h"

namespace efuse {

using namespace memfs;  // NOLINT: the shared rules and constants of memfs_internal.h

// ---------------------------------------------------------------------------
// Attribute changes.

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
  JournalInodeLocked(*n);
  return AttrReply{n->Attrs(), opts_.attr_timeout};
}

// ---------------------------------------------------------------------------
// File data.

uint64_t MemFs::AppendPosition(const RequestContext& ctx, const Inode& n, std::span<const uint8_t> data) {
  if (journal_ == nullptr) return n.data.size();
  // Where the first run began is recorded before a byte is written: a
  // server killed after it wrote (and journaled the size) but before the
  // answer left would otherwise have the resent WRITE append it twice.
  const uint64_t first = ctx.unique & ~abi::kUniqueResend;
  if ((ctx.unique & abi::kUniqueResend) != 0) {
    if (std::optional<uint64_t> at = journal_->IntentDetail(first); at && *at <= n.data.size()) {
      // Taken only if its bytes are there (another writer may have come
      // between the crash and the resend: then the first run wrote none).
      const size_t have = static_cast<size_t>(std::min<uint64_t>(data.size(), n.data.size() - *at));
      std::vector<uint8_t> there(have);
      if (have > 0 && n.data.Read(*at, there) == have && std::equal(there.begin(), there.end(), data.begin())) {
        return *at;
      }
    }
  }
  journal_->RecordIntentDetail(first, n.data.size());
  return n.data.size();
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
    if (n->NeedsAtime(now)) {
      n->atime = now;
      JournalInodeLocked(*n);
    }
  }
  return count;
}

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
  uint64_t size;
  {
    memfs::ReadLock l(&n->mu);
    if (n->dead) return Errno(ENOENT);
    size = n->data.size();
    if (size > max_bytes) return Errno(EFBIG);
  }
  // A chunk at a time, through one buffer (a copy of the whole file first
  // cost a fresh allocation and its page faults, tens of ms for 64 MiB
  // while clients waited): writers are kept out for the whole push, so the
  // chunks are one snapshot. Each is sent outside n->mu: the kernel may
  // wait on requests this daemon serves.
  constexpr size_t kChunk = 1 << 20;
  std::vector<uint8_t> buffer(static_cast<size_t>(std::min<uint64_t>(size, kChunk)));
  for (uint64_t off = 0; off < size; off += kChunk) {
    const std::span<uint8_t> chunk = std::span<uint8_t>(buffer).first(static_cast<size_t>(std::min<uint64_t>(kChunk, size - off)));
    {
      memfs::ReadLock l(&n->mu);
      if (n->dead) return Errno(ENOENT);
      // Short only if the store failed (the size cannot change meanwhile):
      // never push what the buffer held before.
      if (n->data.Read(off, chunk) != chunk.size()) return Errno(EIO);
    }
    proto::Reply r = proto::NotifyStore(nodeid, off, chunk);
    if (Status s = kernel_->Notify(r.Iov()); !s.ok()) return s.error();
  }
  return size;
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
    if (data.empty()) return size_t{0};
    const uint64_t pos = append ? AppendPosition(ctx, *n, data) : offset;
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
    // After the bytes: a record never claims a size not yet written.
    JournalInodeLocked(*n);
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
  JournalInodeLocked(*n);
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
  JournalInodeLocked(*out);
  return copied;
}

}  // namespace efuse
