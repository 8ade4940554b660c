// core/passthrough/internal.h — what the passthrough backend's source files
// share; private to core/passthrough/ (the public surface is passthrough.h).
//
// Owns: PassthroughFs's private state types — OpenState (an inode's open
// files, backing id, lock owners), Inode (one source inode), DirStream,
// Handle (one open file or directory), and the shards of the inode and
// handle tables — and the helpers that act on the source: statx, file
// handles, /proc/self/fd paths, clearing setuid/setgid, the noatime clone of
// the source's mounts, read loops. The member functions live by concern:
// passthrough.cc (setup, INIT, status), inode_table.cc (the inode table,
// attributes and entries), names.cc (lookups and namespace changes),
// attributes.cc (GETATTR, SETATTR, ACCESS, STATFS), files.cc (handles, open,
// create, data), xattrs.cc, directories.cc, locks.cc, source_events.cc (the
// source watcher and attribute invalidations), source_ops.cc (these helpers).
//
// Thread-safety: the state types are guarded as annotated, in the lock
// order passthrough.h gives; the helpers keep no state.
#ifndef EFUSE_CORE_PASSTHROUGH_INTERNAL_H_
#define EFUSE_CORE_PASSTHROUGH_INTERNAL_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "core/filesystem.h"
#include "core/passthrough/fd_cache.h"
#include "core/passthrough/passthrough.h"
#include "core/result.h"
#include "proto/abi.h"

namespace efuse {
namespace passthrough {

inline constexpr uint64_t kRootId = abi::kRootId;
inline constexpr int kPathFlags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
inline constexpr unsigned kStatxMask = STATX_BASIC_STATS | STATX_BTIME;
inline constexpr size_t kDirBufferSize = 32 * 1024;
// Inode::listing (ListingAttrs::kAdaptive).
enum : uint8_t { kListingUnknown = 0, kListingNames = 1, kListingAttrs = 2 };

// "/proc/self/fd/N": how the calls that have no O_PATH form (xattrs,
// truncate) reach an inode without resolving a name. The magic link lands on
// the inode itself, even a symlink, and is never re-resolved.
class ProcPath {
 public:
  explicit ProcPath(int fd) { std::snprintf(buf_, sizeof(buf_), "/proc/self/fd/%d", fd); }
  const char* c_str() const { return buf_; }

 private:
  char buf_[32];
};

// A name as a NUL-terminated string for the *at calls.
class CName {
 public:
  explicit CName(std::string_view s) : s_(s) {}
  const char* c_str() const { return s_.c_str(); }

 private:
  std::string s_;
};

inline int Statx(int fd, struct statx* st) {
  return statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT, kStatxMask, st);
}

inline uint64_t DevOf(const struct statx& st) {
  return makedev(st.stx_dev_major, st.stx_dev_minor);
}

// fuse_attr.rdev is the kernel's new_encode_dev() form.
inline uint32_t EncodeDev(uint32_t major, uint32_t minor) {
  return (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xffu) << 12);
}
inline dev_t DecodeDev(uint32_t d) {
  return makedev((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00));
}

inline uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// What decides whether cached data or a cached listing is still good.
inline uint64_t Stamp(const struct statx& st) {
  uint64_t h =
      Mix(static_cast<uint64_t>(st.stx_mtime.tv_sec) * 1000000007ULL + st.stx_mtime.tv_nsec);
  h = Mix(h ^ (static_cast<uint64_t>(st.stx_ctime.tv_sec) * 1000000009ULL + st.stx_ctime.tv_nsec));
  h = Mix(h ^ st.stx_size);
  return h == 0 ? 1 : h;
}

inline timespec Ts(const struct statx_timestamp& t) {
  return timespec{static_cast<time_t>(t.tv_sec), static_cast<long>(t.tv_nsec)};
}

// The source's file handle as bytes: handle_type, then f_handle.
Result<std::string> HandleOf(int fd);
// open_by_handle_at of a HandleOf() string (O_CLOEXEC added).
int OpenByHandle(int mount_fd, const std::string& handle, int flags);
// `cap` is in the daemon's effective set.
bool HasCapability(int cap);
// ... and counts for the whole system: the daemon runs in the initial user
// namespace (the kernel checks backing files against it).
bool HasInitialNamespaceCapability(int cap);
// chmod of the inode open as `path_fd` (an O_PATH fd): 0 or an errno.
int Chmod(int path_fd, uint32_t mode);
// Clears what a change by `ctx` takes away (core/privileges.h) on the inode
// open as `fd`. True if the mode changed: the kernel's cached mode is then
// stale unless the reply carries the new attributes.
bool DropSuidgid(int fd, const RequestContext& ctx);
// The root of a private, detached clone of the mounts at and below `path`,
// all set noatime (O_PATH; it keeps the clone alive), or -1 (logged).
int OpenNoatimeClone(const std::string& path);
// pread until `out` is full or the file ends (a short count is retried).
Result<size_t> PreadAll(int fd, std::span<uint8_t> out, uint64_t offset);
// `data` in memory aligned for O_DIRECT (a per-thread buffer).
std::span<const uint8_t> AlignedCopy(std::span<const uint8_t> data);

// A shared writable mapping needs a file open for reading and writing.
inline bool MayMapForWriting(uint32_t open_flags) { return (open_flags & O_ACCMODE) == O_RDWR; }
// Counted in OpenState::daemon_writers: a file handle open for writing
// whose writes reach the daemon (not kernel passthrough). Directories are
// open read-only.
inline bool WritesThroughDaemon(bool passthrough, uint32_t flags) {
  return !passthrough && (flags & O_ACCMODE) != O_RDONLY;
}
inline size_t ShardIndexOfKey(uint64_t dev, uint64_t ino, size_t shards) {
  return Mix(ino * 31 + dev) % shards;
}

}  // namespace passthrough


struct PassthroughFs::OpenState {
  struct OwnerLock {
    int fd = -1;
    uint32_t pid = 0;
  };
  int handles = 0;      // open file and directory handles
  int passthrough = 0;  // of them, files in kernel passthrough
  int daemon_writers = 0;  // of them, files open for writing served by the daemon
  int32_t backing_id = 0;
  // POSIX/OFD lock owners: each gets its own open file description of the
  // source file, so the source kernel tells their locks apart.
  absl::flat_hash_map<uint64_t, OwnerLock> owners;

  ~OpenState() {
    for (auto& [owner, l] : owners) close(l.fd);
  }
};

struct PassthroughFs::Inode {
  Inode(uint64_t id, uint64_t d, uint64_t i, uint32_t t) : nodeid(id), dev(d), ino(i), type(t) {}

  bool HasHandles() const {
    absl::MutexLock l(&mu);
    return open != nullptr && open->handles > 0;
  }

  const uint64_t nodeid;
  const uint64_t dev;
  const uint64_t ino;
  const uint32_t type;  // S_IFMT bits
  // The source's file handle, or empty when `pinned` is used instead. Both
  // are fixed before the inode is published.
  std::string handle;
  passthrough::SharedFd pinned;
  uint64_t lookups = 0;                    // guarded by its shard's mutex
  std::atomic<bool> stale{false};          // (dev, ino) now names another inode
  std::atomic<bool> unlinked_here{false};  // its last name went through us
  std::atomic<uint64_t> stamp{0};          // Stamp() when last opened
  // Open passthrough handles that may write: through a shared mapping the
  // source's times (and data) change with no request to tell us or the
  // kernel, so attributes are not cached meanwhile (AttrsVolatile).
  std::atomic<int> passthrough_writers{0};
  // Directories: kListingUnknown/Names/Attrs, and the files looked up in
  // it by name while its listings carried names only (ListingAttrs).
  std::atomic<uint8_t> listing{0};
  std::atomic<uint32_t> file_lookups{0};
  // Directories: the directory it was last looked up in (0: none yet), and
  // whether one of this directory's subdirectories came to be listed with
  // attributes, so that the others start that way (`ls -lR` stats them all
  // before it lists the first).
  std::atomic<uint64_t> looked_up_in{0};
  std::atomic<bool> subdirs_listed_with_attrs{false};
  // Directories: listed by a READDIR without a handle, so the kernel may
  // keep the listing (NamespaceChanged drops it on each change).
  std::atomic<bool> listed_without_handle{false};
  mutable absl::Mutex mu;
  std::unique_ptr<OpenState> open ABSL_GUARDED_BY(mu);
  // Offload (KeepBacking): the backing id outlives the last release, ready
  // for the next open; closed when the kernel forgets the inode.
  bool keep_backing ABSL_GUARDED_BY(mu) = false;
  int32_t kept_backing_id ABSL_GUARDED_BY(mu) = 0;
  // kAbsenceRemembered names the source lacked, within a window that closes
  // at absent_until (MonotonicNs); xattr_changes counts SETXATTR/REMOVEXATTR
  // here and source events, so an answer read before one is not remembered.
  uint8_t absent_xattrs ABSL_GUARDED_BY(mu) = 0;
  uint32_t xattr_changes ABSL_GUARDED_BY(mu) = 0;
  uint64_t absent_until ABSL_GUARDED_BY(mu) = 0;
  // A file whose last name an UNLINK through us removed: an fd of it held
  // until the kernel forgets the node (moments later), so that freeing the
  // source inode (ext4 truncates and releases it on the last close) runs on
  // the FORGET path, not inside the UNLINK its client waits for.
  passthrough::SharedFd last_reference ABSL_GUARDED_BY(mu);
  bool forgotten ABSL_GUARDED_BY(mu) = false;  // Unremember let it go: it holds nothing more
};

struct PassthroughFs::DirStream {
  absl::Mutex mu;
  std::unique_ptr<char[]> buf ABSL_GUARDED_BY(mu) =
      std::make_unique<char[]>(passthrough::kDirBufferSize);
  size_t len ABSL_GUARDED_BY(mu) = 0;
  size_t pos ABSL_GUARDED_BY(mu) = 0;
  uint64_t offset ABSL_GUARDED_BY(mu) = 0;  // the cookie the stream is at
  bool statted_ahead ABSL_GUARDED_BY(mu) = false;  // buf went to stat-ahead
  // PassthroughFs::namespace_version_ when buf was read (streams without a
  // handle only: see ReadDir).
  uint64_t read_at_version ABSL_GUARDED_BY(mu) = 0;
};

struct PassthroughFs::Handle {
  ~Handle() {
    for (int f : {fd.load(), buffered_fd.load(), positioned_fd.load()}) {
      if (f >= 0) close(f);
    }
  }
  std::shared_ptr<Inode> inode;
  // The request that opened it (its first unique): a successor drops a
  // journaled handle whose open the kernel never had the answer to.
  uint64_t opened_by = 0;
  uint32_t flags = 0;  // as opened (O_CREAT/O_EXCL/O_TRUNC stripped)
  bool passthrough = false;
  std::atomic<int> fd{-1};  // real fd; passthrough handles open it on demand
  // O_DIRECT handles: the file without O_DIRECT, for transfers O_DIRECT
  // refuses (opened on the first; see DirectFallbackFd).
  std::atomic<int> buffered_fd{-1};
  // O_APPEND handles: the file without O_APPEND, for writes with their
  // place (page writeback, a resent append; see Write).
  std::atomic<int> positioned_fd{-1};
  absl::Mutex mu;
  std::vector<uint64_t> lock_owners ABSL_GUARDED_BY(mu);
  std::unique_ptr<DirStream> dir;  // directories
};

struct PassthroughFs::Shard {
  mutable absl::Mutex mu;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Inode>> by_id ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, Inode*> by_key ABSL_GUARDED_BY(mu);
  uint64_t next ABSL_GUARDED_BY(mu) = 1;
  // Forgotten nodes, oldest first in `forgotten_order` as (id, seq)
  // (bounded: the oldest go, and their handles answer ESTALE). An order
  // entry whose seq no longer matches is of a node revived since.
  absl::flat_hash_map<uint64_t, ForgottenNode> forgotten ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::pair<uint64_t, std::string>, uint64_t> forgotten_by_handle ABSL_GUARDED_BY(mu);
  std::deque<std::pair<uint64_t, uint64_t>> forgotten_order ABSL_GUARDED_BY(mu);
  uint64_t forgotten_seq ABSL_GUARDED_BY(mu) = 0;
};

struct PassthroughFs::HandleShard {
  mutable absl::Mutex mu;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Handle>> map ABSL_GUARDED_BY(mu);
};


}  // namespace efuse

#endif  // EFUSE_CORE_PASSTHROUGH_INTERNAL_H_
