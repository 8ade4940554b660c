// core/passthrough/passthrough.cc — the passthrough backend.
#include "core/passthrough/passthrough.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "core/passthrough/source_dirent.h"
#include "core/privileges.h"
#include "proto/abi.h"
#include "proto/notify.h"

namespace efuse {

using passthrough::MakeSharedFd;
using passthrough::ScopedCreds;
using passthrough::SharedFd;

namespace {

constexpr uint64_t kRootId = abi::kRootId;
constexpr int kPathFlags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
constexpr unsigned kStatxMask = STATX_BASIC_STATS | STATX_BTIME;
constexpr size_t kDirBufferSize = 32 * 1024;
// Stat-ahead (DirPrefetcher::StatAhead) for what is left of a chunk of at
// least this many bytes of records: about 64 short names.
constexpr size_t kStatAheadMinBytes = 2048;
// ListingAttrs::kAdaptive: files of a directory looked up by name before its
// listings carry attributes (`ls -l` looks up every one; `find` none), and
// how many such directories are remembered.
constexpr uint32_t kLookupsForAttrs = 4;
constexpr size_t kMaxAttrListedDirs = 1 << 16;
enum : uint8_t { kListingUnknown = 0, kListingNames = 1, kListingAttrs = 2 };
// The kernel's OFFSET_MAX: a lock "to the end of the file".
constexpr uint64_t kOffsetMax = 0x7fffffffffffffffULL;
// GETXATTR of these names is answered from memory when the source lacked
// them at most --attr_timeout ago: `ls -l` asks for security.selinux on every
// file and exec for security.capability, and without it each answer costs an
// open by handle of an inode the fd cache no longer holds. Only names anyone
// may read (no permission check to bypass), and all listed by listxattr.
// Not security.ima or security.evm: the kernel itself writes those (on the
// last writer's close, on chmod/chown), with no SETXATTR for us to see.
constexpr std::string_view kAbsenceRemembered[] = {
    "security.selinux", "security.capability", "system.posix_acl_access",
    "system.posix_acl_default", "security.SMACK64",
};
// The bit of `name` in Inode::absent_xattrs, or 0 when not remembered.
uint8_t AbsenceBit(std::string_view name) {
  for (size_t i = 0; i < std::size(kAbsenceRemembered); ++i) {
    if (kAbsenceRemembered[i] == name) return static_cast<uint8_t>(1u << i);
  }
  return 0;
}
#ifndef SYS_fchmodat2
constexpr long SYS_fchmodat2 = 452;
#endif

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

int Statx(int fd, struct statx* st) {
  return statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT, kStatxMask, st);
}

uint64_t DevOf(const struct statx& st) { return makedev(st.stx_dev_major, st.stx_dev_minor); }

// fuse_attr.rdev is the kernel's new_encode_dev() form.
uint32_t EncodeDev(uint32_t major, uint32_t minor) {
  return (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xffu) << 12);
}
dev_t DecodeDev(uint32_t d) {
  return makedev((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00));
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// What decides whether cached data or a cached listing is still good.
uint64_t Stamp(const struct statx& st) {
  uint64_t h =
      Mix(static_cast<uint64_t>(st.stx_mtime.tv_sec) * 1000000007ULL + st.stx_mtime.tv_nsec);
  h = Mix(h ^ (static_cast<uint64_t>(st.stx_ctime.tv_sec) * 1000000009ULL + st.stx_ctime.tv_nsec));
  h = Mix(h ^ st.stx_size);
  return h == 0 ? 1 : h;
}

timespec Ts(const struct statx_timestamp& t) {
  return timespec{static_cast<time_t>(t.tv_sec), static_cast<long>(t.tv_nsec)};
}

// The source's file handle as bytes: handle_type, then f_handle.
Result<std::string> HandleOf(int fd) {
  struct {
    struct file_handle h;
    unsigned char bytes[MAX_HANDLE_SZ];
  } buf;
  buf.h.handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(fd, "", &buf.h, &mount_id, AT_EMPTY_PATH) != 0) return Errno::Last();
  std::string s(sizeof(int) + buf.h.handle_bytes, '\0');
  std::memcpy(s.data(), &buf.h.handle_type, sizeof(int));
  std::memcpy(s.data() + sizeof(int), buf.h.f_handle, buf.h.handle_bytes);
  return s;
}

int OpenByHandle(int mount_fd, const std::string& handle, int flags) {
  struct {
    struct file_handle h;
    unsigned char bytes[MAX_HANDLE_SZ];
  } buf;
  const size_t n = handle.size() - sizeof(int);
  buf.h.handle_bytes = static_cast<unsigned>(n);
  std::memcpy(&buf.h.handle_type, handle.data(), sizeof(int));
  std::memcpy(buf.h.f_handle, handle.data() + sizeof(int), n);
  return open_by_handle_at(mount_fd, &buf.h, flags | O_CLOEXEC);
}

bool HasCapability(int cap) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

// A shared writable mapping needs a file open for reading and writing.
bool MayMapForWriting(uint32_t open_flags) { return (open_flags & O_ACCMODE) == O_RDWR; }

int Chmod(int path_fd, uint32_t mode) {
  if (syscall(SYS_fchmodat2, path_fd, "", mode & 07777, AT_EMPTY_PATH) == 0) return 0;
  if (errno != ENOSYS) return errno;
  return fchmodat(AT_FDCWD, ProcPath(path_fd).c_str(), mode & 07777, 0) == 0 ? 0 : errno;
}

// Clears what a change by `ctx` takes away (KilledSetIdBits) on the inode open
// as `fd`. True if the mode changed: the kernel's cached mode is then stale
// unless the reply carries the new attributes.
bool DropSuidgid(int fd, const RequestContext& ctx) {
  struct statx st;
  if (Statx(fd, &st) != 0) return false;
  const uint32_t kill = KilledSetIdBits(st.stx_mode, st.stx_gid, ctx);
  return kill != 0 && Chmod(fd, st.stx_mode & ~kill) == 0;
}

// The root of a private, detached clone of the mounts at and below `path`,
// all set noatime: every fd reached from it (by name or, through a mount fd
// of it, by handle) is on those mounts, so reads through it — the daemon's
// and the kernel's through a backing file registered from it — leave access
// times alone, as a noatime mount promises. -1 (logged) if refused.
int OpenNoatimeClone(const std::string& path) {
  int tree = static_cast<int>(open_tree(AT_FDCWD, path.c_str(),
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
  if (tree < 0) {
    Log(LogLevel::kWarning, "passthrough: noatime: cannot clone the mounts of '%s' (%s): reads may "
        "move the source's access times", path, std::strerror(errno));
    return -1;
  }
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_NOATIME;
  attr.attr_clr = MOUNT_ATTR__ATIME;
  if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) {
    Log(LogLevel::kWarning, "passthrough: noatime: cannot set the clone of '%s' noatime (%s): reads "
        "may move the source's access times", path, std::strerror(errno));
    close(tree);
    return -1;
  }
  return tree;  // an O_PATH fd of the clone's root; it keeps the clone alive
}

// Read/write loops: a short count from pread/pwrite is retried until the
// request is done or the file ends.
Result<size_t> PreadAll(int fd, std::span<uint8_t> out, uint64_t offset) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return Errno::Last();
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

// O_DIRECT wants aligned memory; WRITE data sits after the request headers.
std::span<const uint8_t> AlignedCopy(std::span<const uint8_t> data) {
  struct Free {
    void operator()(void* p) const { free(p); }
  };
  // One per worker thread, grown to the largest write; freed with the thread.
  thread_local std::unique_ptr<void, Free> buf;
  thread_local size_t cap = 0;
  if (cap < data.size()) {
    const size_t want = (data.size() + 4095) & ~size_t{4095};
    void* p = nullptr;
    if (posix_memalign(&p, 4096, want) != 0) return data;
    buf.reset(p);
    cap = want;
  }
  std::memcpy(buf.get(), data.data(), data.size());
  return {static_cast<const uint8_t*>(buf.get()), data.size()};
}

}  // namespace

// ---------------------------------------------------------------------------
// State.

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
  SharedFd pinned;
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
};

struct PassthroughFs::DirStream {
  absl::Mutex mu;
  std::unique_ptr<char[]> buf ABSL_GUARDED_BY(mu) = std::make_unique<char[]>(kDirBufferSize);
  size_t len ABSL_GUARDED_BY(mu) = 0;
  size_t pos ABSL_GUARDED_BY(mu) = 0;
  uint64_t offset ABSL_GUARDED_BY(mu) = 0;  // the cookie the stream is at
  bool statted_ahead ABSL_GUARDED_BY(mu) = false;  // buf went to stat-ahead
};

struct PassthroughFs::Handle {
  ~Handle() {
    for (int f : {fd.load(), buffered_fd.load()}) {
      if (f >= 0) close(f);
    }
  }
  std::shared_ptr<Inode> inode;
  uint32_t flags = 0;  // as opened (O_CREAT/O_EXCL/O_TRUNC stripped)
  bool passthrough = false;
  std::atomic<int> fd{-1};  // real fd; passthrough handles open it on demand
  // O_DIRECT handles: the file without O_DIRECT, for transfers O_DIRECT
  // refuses (opened on the first; see DirectFallbackFd).
  std::atomic<int> buffered_fd{-1};
  absl::Mutex mu;
  std::vector<uint64_t> lock_owners ABSL_GUARDED_BY(mu);
  std::unique_ptr<DirStream> dir;  // directories
};

struct PassthroughFs::Shard {
  mutable absl::Mutex mu;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Inode>> by_id ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, Inode*> by_key ABSL_GUARDED_BY(mu);
  uint64_t next ABSL_GUARDED_BY(mu) = 1;
};

struct PassthroughFs::HandleShard {
  mutable absl::Mutex mu;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Handle>> map ABSL_GUARDED_BY(mu);
};

namespace {
size_t ShardIndexOfKey(uint64_t dev, uint64_t ino, size_t shards) {
  return Mix(ino * 31 + dev) % shards;
}
size_t DefaultFdCacheSize() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 4096;
  return std::max<size_t>(64, static_cast<size_t>(rl.rlim_cur) / 4);
}
// Counted in OpenState::daemon_writers: a file handle open for writing
// whose writes reach the daemon (not kernel passthrough). Directories are
// open read-only.
bool WritesThroughDaemon(bool passthrough, uint32_t flags) {
  return !passthrough && (flags & O_ACCMODE) != O_RDONLY;
}
}  // namespace

// ---------------------------------------------------------------------------
// Setup.

PassthroughFs::PassthroughFs(PassthroughOptions opts)
    : opts_(std::move(opts)),
      creds_(passthrough::DaemonCreds::Capture()),
      fd_cache_(opts_.fd_cache_size != 0 ? opts_.fd_cache_size : DefaultFdCacheSize()),
      shards_(std::make_unique<std::array<Shard, kShards>>()),
      handles_(std::make_unique<std::array<HandleShard, kHandleShards>>()) {
  // Two readers: the disk reads of two directories overlap, and the
  // scratch reads cost little CPU.
  if (opts_.readdir_ahead) prefetch_ = std::make_unique<passthrough::DirPrefetcher>(2, 1024);
}

PassthroughFs::~PassthroughFs() {
  watcher_.reset();  // its thread calls into the tables
  prefetch_.reset();
  absl::MutexLock l(&mounts_mu_);
  for (auto& [dev, fd] : mount_fds_) close(fd);
}

absl::StatusOr<std::unique_ptr<PassthroughFs>> PassthroughFs::Create(PassthroughOptions options) {
  std::unique_ptr<PassthroughFs> fs(new PassthroughFs(std::move(options)));
  absl::Status s = fs->OpenSource();
  if (!s.ok()) return s;
  return fs;
}

absl::Status PassthroughFs::OpenSource() {
  const std::string& src = opts_.source;
  int fd = opts_.noatime ? OpenNoatimeClone(src) : -1;
  noatime_clone_ = fd >= 0;
  if (fd < 0) fd = open(src.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, "source '" + src + "'" + (errno == ENOTDIR ? " is not a directory" : ""));
  }
  struct statx st;
  if (Statx(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, "statx of source '" + src + "'");
  }
  int mount_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (mount_fd < 0) {
    int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, "opening source '" + src + "'");
  }
  root_dev_ = DevOf(st);
  root_ino_ = st.stx_ino;
  root_ = std::make_shared<Inode>(kRootId, root_dev_, root_ino_, S_IFDIR);
  root_->pinned = MakeSharedFd(fd);
  {
    absl::MutexLock l(&mounts_mu_);
    mount_fds_[root_dev_] = mount_fd;
  }
  // open_by_handle_at needs CAP_DAC_READ_SEARCH; without it (or without
  // handles in the source fs) inodes pin an fd each.
  Result<std::string> h = HandleOf(fd);
  handles_ok_ = h.ok();
  if (h.ok()) root_handle_ = *h;
  if (handles_ok_) {
    int probe = OpenByHandle(mount_fd, *h, O_PATH);
    if (probe < 0) {
      handles_ok_ = false;
    } else {
      close(probe);
    }
  }
  if (!handles_ok_) {
    warned_no_handles_.store(true);
    Log(LogLevel::kWarning,
        "passthrough: file handles unusable on '%s' (%s): every inode the kernel remembers "
        "keeps an fd open, so the tree served is bounded by RLIMIT_NOFILE",
        src, std::strerror(h.ok() ? errno : h.error().value()));
  }
  return absl::OkStatus();
}

uint64_t PassthroughFs::WantedInitFlags(uint64_t defaults) const {
  namespace f = abi::init;
  uint64_t flags = defaults;
  if (opts_.locks) flags |= f::kPosixLocks | f::kFlockLocks;
  // Kernel passthrough is refused on a connection with writeback cache, and
  // needs CAP_SYS_ADMIN: without it, auto means off (and writeback is free).
  const bool may_pass =
      opts_.passthrough == PassthroughMode::kOn ||
      (opts_.passthrough == PassthroughMode::kAuto && HasCapability(CAP_SYS_ADMIN));
  if (may_pass) {
    flags |= f::kPassthrough;
    flags &= ~f::kWritebackCache;
  } else if (opts_.writeback_cache && !opts_.watch_source) {
    // The writeback cache keeps the kernel's file sizes authoritative: it
    // cannot follow a source that others change.
    flags |= f::kWritebackCache;
  }
  if (opts_.posix_acl && opts_.xattrs) flags |= f::kPosixAcl;
  // The caller's umask unapplied: the source applies it, or a default ACL
  // of the parent instead (ModeUnderCallerUmask).
  flags |= f::kDontMask;
  if (opts_.auto_inval_data) flags |= f::kAutoInvalData;
  if (!opts_.killpriv_v2) flags &= ~f::kHandleKillprivV2;
  return flags;
}

void PassthroughFs::Init(const InitInfo& info) {
  namespace f = abi::init;
  kernel_ = info.kernel;
  posix_acl_ = (info.flags & f::kPosixAcl) != 0;
  writeback_ = (info.flags & f::kWritebackCache) != 0;
  std::string why;
  if (opts_.passthrough != PassthroughMode::kOff) {
    if ((info.flags & f::kPassthrough) == 0) {
      why = "the kernel did not agree to FUSE_PASSTHROUGH";
    } else if (!HasCapability(CAP_SYS_ADMIN)) {
      why = "the daemon lacks CAP_SYS_ADMIN (backing files need it)";
    } else if (kernel_ == nullptr) {
      why = "no kernel connection";
    }
    kernel_pt_ = why.empty();
  }
  if (opts_.passthrough == PassthroughMode::kOn && !kernel_pt_) {
    Log(LogLevel::kError, "--passthrough=on: %s; stopping", why);
    init_ok_.store(false, std::memory_order_release);
    // The session unmounts on SIGTERM; main then reports the failure.
    if (kernel_ != nullptr) kill(getpid(), SIGTERM);
    return;
  }
  if (opts_.passthrough == PassthroughMode::kAuto && !kernel_pt_ && kernel_ != nullptr) {
    Log(LogLevel::kInfo,
        "passthrough: kernel passthrough unavailable (%s); serving reads "
        "and writes in the daemon",
        why);
  }
  if (opts_.watch_source && kernel_ != nullptr) {
    absl::StatusOr<std::unique_ptr<passthrough::SourceWatcher>> w =
        handles_ok_ ? passthrough::SourceWatcher::Start(
                          [this](const passthrough::SourceEvent& ev) { OnSourceEvent(ev); })
                    : absl::FailedPreconditionError("the source has no file handles");
    if (w.ok()) {
      watcher_ = std::move(*w);
      WatchDir(*root_, root_->pinned->get());
    } else {
      Log(LogLevel::kWarning,
          "passthrough: --watch_source unavailable (%s); changes others "
          "make to the source show after the cache timeouts",
          std::string(w.status().message()));
    }
  }
  Log(LogLevel::kInfo,
      "passthrough: serving '%s'; kernel passthrough %s, writeback cache %s, POSIX ACLs %s, "
      "fd cache %u, file handles %s, source watcher %s%s",
      opts_.source, kernel_pt_ ? "on" : "off", writeback_ ? "on" : "off", posix_acl_ ? "on" : "off",
      fd_cache_.capacity(), handles_ok_ ? "yes" : "no", watcher_ != nullptr ? "on" : "off",
      noatime_clone_ ? ", through a noatime clone of its mounts" : "");
}

void PassthroughFs::Destroy() {
  PassthroughStats s = Stats();
  Log(LogLevel::kInfo,
      "passthrough: %u inodes remembered, %u opens in kernel passthrough, %u served by the "
      "daemon, %u backing refusals, fd cache %u/%u (%u misses)",
      s.inodes, s.passthrough_opens, s.daemon_opens, s.backing_refusals, s.fd_cache.size,
      fd_cache_.capacity(), s.fd_cache.misses);
}

void PassthroughFs::LogRefusal(int err) {
  const uint64_t bit = uint64_t{1} << (static_cast<unsigned>(err) % 64);
  if ((refusal_errnos_.fetch_or(bit) & bit) != 0) return;
  Log(LogLevel::kWarning,
      "passthrough: the kernel refused a backing file (%s); such files are served by the "
      "daemon (logged once per reason)",
      std::strerror(err));
}

// ---------------------------------------------------------------------------
// The inode table.

std::shared_ptr<PassthroughFs::Inode> PassthroughFs::Find(uint64_t nodeid) const {
  if (nodeid == kRootId) return root_;
  const Shard& s = (*shards_)[nodeid % kShards];
  absl::ReaderMutexLock l(&s.mu);
  auto it = s.by_id.find(nodeid);
  return it == s.by_id.end() ? nullptr : it->second;
}

Result<std::shared_ptr<PassthroughFs::Inode>> PassthroughFs::Get(uint64_t nodeid) const {
  std::shared_ptr<Inode> n = Find(nodeid);
  if (n == nullptr) return Errno(ENOENT);
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
      const uint64_t id = (s.next++ * kShards) + index;
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
  {
    absl::MutexLock l(&s.mu);
    auto it = s.by_id.find(nodeid);
    if (it == s.by_id.end()) return;
    Inode& inode = *it->second;
    inode.lookups = inode.lookups > n ? inode.lookups - n : 0;
    if (inode.lookups != 0) return;
    auto kit = s.by_key.find(std::make_pair(inode.dev, inode.ino));
    if (kit != s.by_key.end() && kit->second == &inode) s.by_key.erase(kit);
    if (inode.pinned != nullptr) pinned_.fetch_sub(1, std::memory_order_relaxed);
    dropped = std::move(it->second);
    s.by_id.erase(it);
  }
  if (watcher_ != nullptr && dropped->type == S_IFDIR) UnwatchDir(*dropped);
  fd_cache_.Erase(nodeid);
  int32_t kept = 0;
  {
    absl::MutexLock l(&dropped->mu);
    kept = std::exchange(dropped->kept_backing_id, 0);
  }
  if (kept > 0 && kernel_ != nullptr) {
    kernel_->CloseBacking(kept).ok();
    backing_ids_.fetch_sub(1, std::memory_order_relaxed);
  }
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

Result<Entry> PassthroughFs::EntryForNew(int dirfd, std::string_view name) {
  return LookupAt(dirfd, name);
}

uint64_t PassthroughFs::LookupCount(uint64_t nodeid) const {
  if (nodeid == kRootId) return 0;
  const Shard& s = (*shards_)[nodeid % kShards];
  absl::ReaderMutexLock l(&s.mu);
  auto it = s.by_id.find(nodeid);
  return it == s.by_id.end() ? 0 : it->second->lookups;
}

PassthroughStats PassthroughFs::Stats() const {
  PassthroughStats st;
  for (const Shard& s : *shards_) {
    absl::ReaderMutexLock l(&s.mu);
    st.inodes += s.by_id.size();
  }
  for (const HandleShard& h : *handles_) {
    absl::ReaderMutexLock l(&h.mu);
    st.open_handles += h.map.size();
  }
  st.pinned_fds = pinned_.load();
  st.passthrough_opens = passthrough_opens_.load();
  st.daemon_opens = daemon_opens_.load();
  st.backing_refusals = backing_refusals_.load();
  st.backing_ids = backing_ids_.load();
  st.direct_fallbacks = direct_fallbacks_.load();
  st.stale = stale_.load();
  st.invalidations = invalidations_.load();
  st.listings_with_attrs = listings_with_attrs_.load();
  st.listings_names_only = listings_names_only_.load();
  {
    absl::ReaderMutexLock l(&watch_mu_);
    st.watched_dirs = watched_.size();
  }
  st.fd_cache = fd_cache_.Stats();
  return st;
}

void PassthroughFs::AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const {
  const PassthroughStats st = Stats();
  auto add = [lines](const char* k, uint64_t v) { lines->emplace_back(k, std::to_string(v)); };
  // on: the kernel checks permissions and caches POSIX ACLs; off: ACLs are
  // the source's alone (the kernel checks mode bits, if default_permissions).
  lines->emplace_back("pt_posix_acl", posix_acl_ ? "on" : "off");
  add("pt_inodes", st.inodes);
  add("pt_pinned_fds", st.pinned_fds);
  add("pt_open_handles", st.open_handles);
  add("pt_passthrough_opens", st.passthrough_opens);
  add("pt_daemon_opens", st.daemon_opens);
  add("pt_backing_ids", st.backing_ids);
  add("pt_backing_refusals", st.backing_refusals);
  add("pt_backing_opens", backing_opens_.load(std::memory_order_relaxed));
  add("pt_backing_reuses", backing_reuses_.load(std::memory_order_relaxed));
  add("pt_direct_fallbacks", st.direct_fallbacks);
  add("pt_stale", st.stale);
  add("pt_invalidations", st.invalidations);
  // Attribute drops sent ahead of replies that cannot carry a change
  // (setuid/setgid cleared by a write or open; opens for writing).
  add("pt_unseen_attr_invalidations", unseen_attr_invalidations_.load(std::memory_order_relaxed));
  add("pt_listings_with_attrs", st.listings_with_attrs);
  add("pt_listings_names_only", st.listings_names_only);
  add("pt_xattr_absences_answered", absences_answered_.load(std::memory_order_relaxed));
  if (prefetch_ != nullptr) {
    const passthrough::DirPrefetchStats ra = prefetch_->Stats();
    add("pt_readdir_ahead_queued", ra.queued);
    add("pt_readdir_ahead_dirs", ra.read);
    add("pt_readdir_ahead_dropped", ra.dropped);
    add("pt_stat_ahead_chunks", ra.stat_chunks);
    add("pt_stat_ahead_names", ra.statted);
  }
  add("pt_fd_cache_size", st.fd_cache.size);
  add("pt_fd_cache_hits", st.fd_cache.hits);
  add("pt_fd_cache_misses", st.fd_cache.misses);
  add("pt_fd_cache_evictions", st.fd_cache.evictions);
}

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
  if (kernel_ == nullptr) return;
  // Offset -1: attributes only (and cached ACLs); the pages stay. Sent
  // before the reply, so the caller's syscall returns to a kernel that
  // asks again (exec checks permission first, which then reads the mode).
  proto::Reply r = proto::NotifyInvalInode(nodeid, -1, 0);
  if (kernel_->Notify(r.Iov()).ok()) unseen_attr_invalidations_.fetch_add(1, std::memory_order_relaxed);
}

void PassthroughFs::InvalidateInode(uint64_t nodeid) {
  // Source events land here: its xattrs may have changed too (FAN_ATTRIB).
  if (std::shared_ptr<Inode> n = Find(nodeid); n != nullptr) XattrsChanged(*n);
  proto::Reply r = proto::NotifyInvalInode(nodeid, 0, 0);
  if (kernel_->Notify(r.Iov()).ok()) invalidations_.fetch_add(1, std::memory_order_relaxed);
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
    // directory's attributes and cached listing.
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

// ---------------------------------------------------------------------------
// Names.

Result<Entry> PassthroughFs::Lookup(const RequestContext& ctx, uint64_t parent,
                                    std::string_view name) {
  if (name.size() > NAME_MAX) return Errno(ENAMETOOLONG);
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
    if (std::shared_ptr<Inode> sub = Find(child.nodeid)) {
      sub->looked_up_in.store(dir.nodeid, std::memory_order_relaxed);
      // `ls -lR`: a directory found in one listed with attributes will be too.
      if (attrs) {
        uint8_t expected = kListingUnknown;
        sub->listing.compare_exchange_strong(expected, kListingAttrs, std::memory_order_relaxed);
      }
    }
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
  return EntryForNew((*dfd)->get(), name);
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
  return EntryForNew((*dfd)->get(), name);
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
  return EntryForNew((*dfd)->get(), name);
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
  return EntryForNew((*dfd)->get(), newname);
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

void PassthroughFs::MarkUnlinkedHere(uint64_t dev, uint64_t ino) {
  Shard& s = (*shards_)[ShardIndexOfKey(dev, ino, kShards)];
  absl::MutexLock l(&s.mu);
  auto it = s.by_key.find(std::make_pair(dev, ino));
  if (it != s.by_key.end()) it->second->unlinked_here.store(true);
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
  if (unlinkat((*dfd)->get(), cname.c_str(), at_flags) != 0) return Errno::Last();
  if (known && v.last_link) MarkUnlinkedHere(v.dev, v.ino);
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
  Victim v;
  const bool replaces =
      (flags & RENAME_EXCHANGE) == 0 && StatVictim((*tfd)->get(), cnew.c_str(), &v) && v.last_link;
  if (renameat2((*ffd)->get(), cname.c_str(), (*tfd)->get(), cnew.c_str(), flags) != 0) {
    return Errno::Last();
  }
  if (replaces) MarkUnlinkedHere(v.dev, v.ino);
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Attributes.

Result<AttrReply> PassthroughFs::GetAttr(const RequestContext& ctx, uint64_t nodeid,
                                         const uint64_t* fh) {
  if (fh != nullptr) {
    if (std::shared_ptr<Handle> h = GetHandle(*fh); h != nullptr && h->fd.load() >= 0) {
      Result<Attributes> a = StatFd(h->fd.load());
      if (!a.ok()) return a.error();
      return MakeAttrReply(*h->inode, *a);
    }
  }
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<Attributes> a = StatInode(**n);
  if (!a.ok()) return a.error();
  return MakeAttrReply(**n, *a);
}

Result<AttrReply> PassthroughFs::SetAttr(const RequestContext& ctx, uint64_t nodeid,
                                         const SetAttrRequest& req) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<SharedFd> pfd = PathFd(**n);
  if (!pfd.ok()) return pfd.error();
  const int fd = (*pfd)->get();
  const uint32_t v = req.valid;
  // ftruncate and fstat through the caller's handle when there is one: the
  // file may have no name left.
  std::shared_ptr<Handle> h;
  if ((v & abi::kFattrFh) != 0) h = GetHandle(req.fh);

  // Permission checks are the kernel's (default_permissions); the source
  // sees the daemon. Order: owner first (chown clears setuid, which an
  // explicit mode in the same request then sets again), size, mode, times.
  //
  // Privileges. The source kernel clears what a change by the daemon (root,
  // with CAP_FSETID) clears; a change by the caller may clear more, which
  // the kernel asks for: FATTR_KILL_SUIDGID (chown, truncate without
  // CAP_FSETID), or a SETATTR with no attribute at all. That one comes from
  // chown(f, -1, -1) and, with HANDLE_KILLPRIV_V2, from the kernel's
  // file_remove_privs() before a write, fallocate or copy_file_range it does
  // not send us (kernel passthrough) or sends without a kill flag: both are
  // a chown to the same owner, which clears setuid, setgid with group exec
  // and file capabilities (security.capability) in the source, and whose
  // reply gives the kernel the mode it must use for exec from now on.
  const bool no_attribute = (v & ~(abi::kFattrFh | abi::kFattrLockowner | abi::kFattrCtime)) == 0;
  const bool kill = (v & abi::kFattrKillSuidgid) != 0 && (v & abi::kFattrMode) == 0;
  struct statx before;
  if ((kill || no_attribute) && Statx(fd, &before) != 0) return Errno::Last();
  if (no_attribute && (*n)->type != S_IFDIR) {
    if (fchownat(fd, "", static_cast<uid_t>(-1), static_cast<gid_t>(-1),
                 AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return Errno::Last();
    }
  }
  if ((v & (abi::kFattrUid | abi::kFattrGid)) != 0) {
    const uid_t uid = (v & abi::kFattrUid) != 0 ? req.uid : static_cast<uid_t>(-1);
    const gid_t gid = (v & abi::kFattrGid) != 0 ? req.gid : static_cast<gid_t>(-1);
    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return Errno::Last();
  }
  if ((v & abi::kFattrSize) != 0) {
    if ((*n)->type == S_IFDIR) return Errno(EISDIR);
    if ((*n)->type != S_IFREG) return Errno(EINVAL);
    int rc;
    if (h != nullptr && h->fd.load() >= 0 && (h->flags & O_ACCMODE) != O_RDONLY) {
      rc = ftruncate(h->fd.load(), static_cast<off_t>(req.size));
    } else {
      rc = truncate(ProcPath(fd).c_str(), static_cast<off_t>(req.size));
    }
    if (rc != 0) return Errno::Last();
  }
  if ((v & abi::kFattrMode) != 0) {
    if (int err = Chmod(fd, req.mode); err != 0) return Errno(err);
  }
  if ((kill || (no_attribute && (*n)->type != S_IFDIR)) && HasSetId(before.stx_mode)) {
    // What the caller's change takes away, judged by the file as it was
    // (a chown's new group does not make its caller a member of the old).
    const uint32_t bits = KilledSetIdBits(before.stx_mode, before.stx_gid, ctx);
    struct statx now;
    if (bits != 0 && Statx(fd, &now) == 0 && (now.stx_mode & bits) != 0) {
      if (int err = Chmod(fd, now.stx_mode & ~bits); err != 0) return Errno(err);
    }
  }
  constexpr uint32_t kTimes =
      abi::kFattrAtime | abi::kFattrMtime | abi::kFattrAtimeNow | abi::kFattrMtimeNow;
  if ((v & kTimes) != 0) {
    timespec ts[2];
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_nsec = UTIME_OMIT;
    if ((v & abi::kFattrAtimeNow) != 0) {
      ts[0].tv_nsec = UTIME_NOW;
    } else if ((v & abi::kFattrAtime) != 0) {
      ts[0] = req.atime;
    }
    if ((v & abi::kFattrMtimeNow) != 0) {
      ts[1].tv_nsec = UTIME_NOW;
    } else if ((v & abi::kFattrMtime) != 0) {
      ts[1] = req.mtime;
    }
    if (utimensat(fd, "", ts, AT_EMPTY_PATH) != 0) return Errno::Last();
  }
  Result<Attributes> a = (h != nullptr && h->fd.load() >= 0) ? StatFd(h->fd.load()) : StatFd(fd);
  if (!a.ok()) return a.error();
  return MakeAttrReply(**n, *a);
}

Result<std::string> PassthroughFs::ReadLink(const RequestContext& ctx, uint64_t nodeid) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if ((*n)->type != S_IFLNK) return Errno(EINVAL);
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  std::string target(PATH_MAX, '\0');
  ssize_t len = readlinkat((*fd)->get(), "", target.data(), target.size());
  if (len < 0) return Errno::Last();
  target.resize(static_cast<size_t>(len));
  return target;
}

Status PassthroughFs::Access(const RequestContext& ctx, uint64_t nodeid, uint32_t mask) {
  // Only sent without default_permissions. Mode bits only (ACLs are the
  // kernel's business once FUSE_POSIX_ACL is on, which implies
  // default_permissions and no ACCESS at all).
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  struct statx st;
  Result<Attributes> a = StatInode(**n, &st);
  if (!a.ok()) return a.error();
  mask &= R_OK | W_OK | X_OK;
  if (mask == 0) return OkStatus();
  if (ctx.uid == 0) {
    if ((mask & X_OK) != 0 && !S_ISDIR(st.stx_mode) && (st.stx_mode & 0111) == 0) {
      return Errno(EACCES);
    }
    return OkStatus();
  }
  uint32_t bits;
  if (ctx.uid == st.stx_uid) {
    bits = (st.stx_mode >> 6) & 7;
  } else if (ctx.InGroup(st.stx_gid)) {
    bits = (st.stx_mode >> 3) & 7;
  } else {
    bits = st.stx_mode & 7;
  }
  return (bits & mask) == mask ? OkStatus() : Status(Errno(EACCES));
}

Result<FsStats> PassthroughFs::StatFs(const RequestContext& ctx, uint64_t nodeid) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  std::shared_ptr<Inode> inode = n.ok() ? *n : root_;
  Result<SharedFd> fd = PathFd(*inode);
  if (!fd.ok()) return fd.error();
  struct statfs sf;
  if (fstatfs((*fd)->get(), &sf) != 0) return Errno::Last();
  FsStats s;
  s.blocks = sf.f_blocks;
  s.bfree = sf.f_bfree;
  s.bavail = sf.f_bavail;
  s.files = sf.f_files;
  s.ffree = sf.f_ffree;
  s.bsize = static_cast<uint32_t>(sf.f_bsize);
  s.namelen = static_cast<uint32_t>(sf.f_namelen);
  s.frsize = static_cast<uint32_t>(sf.f_frsize != 0 ? sf.f_frsize : sf.f_bsize);
  return s;
}

// ---------------------------------------------------------------------------
// Handles.

uint64_t PassthroughFs::AddHandle(std::shared_ptr<Handle> h) {
  const uint64_t fh = next_fh_.fetch_add(1, std::memory_order_relaxed);
  HandleShard& s = (*handles_)[fh % kHandleShards];
  absl::MutexLock l(&s.mu);
  s.map.emplace(fh, std::move(h));
  return fh;
}

std::shared_ptr<PassthroughFs::Handle> PassthroughFs::GetHandle(uint64_t fh) const {
  const HandleShard& s = (*handles_)[fh % kHandleShards];
  absl::ReaderMutexLock l(&s.mu);
  auto it = s.map.find(fh);
  return it == s.map.end() ? nullptr : it->second;
}

std::shared_ptr<PassthroughFs::Handle> PassthroughFs::TakeHandle(uint64_t fh) {
  HandleShard& s = (*handles_)[fh % kHandleShards];
  absl::MutexLock l(&s.mu);
  auto it = s.map.find(fh);
  if (it == s.map.end()) return nullptr;
  std::shared_ptr<Handle> h = std::move(it->second);
  s.map.erase(it);
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
        Result<SharedFd> pfd = PathFd(*inode);
        if (!pfd.ok()) return pfd.error();
        Result<int32_t> id = kernel_->OpenBacking((*pfd)->get());
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
      if (MayMapForWriting(kflags)) inode->passthrough_writers.fetch_add(1, std::memory_order_acq_rel);
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
  reply.fh = AddHandle(std::move(handle));
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
    if (h.passthrough && --os.passthrough == 0) {
      if (inode.keep_backing && inode.kept_backing_id == 0) {
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

Result<FileSystem::AsyncFileRef> PassthroughFs::AsyncFile(const RequestContext& ctx, uint64_t nodeid,
                                                          uint64_t fh, uint32_t write_flags) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  // What Write does besides pwrite stays on the synchronous path: O_DIRECT
  // data may need re-aligning, and clearing setuid/setgid follows the write.
  if ((h->flags & O_DIRECT) != 0) return AsyncFileRef{};
  if ((write_flags & abi::kWriteKillSuidgid) != 0) return AsyncFileRef{};
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
  if (fallocate(*fd, static_cast<int>(mode), static_cast<off_t>(offset),
                static_cast<off_t>(length)) != 0) {
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

// ---------------------------------------------------------------------------
// Extended attributes: through /proc/self/fd (f*xattr refuse O_PATH fds).

Status PassthroughFs::SetXattr(const RequestContext& ctx, uint64_t nodeid, std::string_view name,
                               std::span<const uint8_t> value, uint32_t flags,
                               uint32_t setxattr_flags) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  const ProcPath path((*fd)->get());
  const int rc = setxattr(path.c_str(), CName(name).c_str(), value.data(), value.size(),
                          static_cast<int>(flags));
  const int err = errno;
  XattrsChanged(**n);  // after the call: a GETXATTR that ran before it forgets
  if (rc != 0) return Errno(err);
  // Setting an access ACL as a non-member of the group drops setgid, as
  // the kernel tells us (FUSE_SETXATTR_ACL_KILL_SGID).
  if ((setxattr_flags & abi::kSetxattrAclKillSgid) != 0) {
    struct statx st;
    if (Statx((*fd)->get(), &st) == 0 && (st.stx_mode & S_ISGID) != 0) {
      Chmod((*fd)->get(), st.stx_mode & ~static_cast<uint32_t>(S_ISGID));
    }
  }
  return OkStatus();
}

bool PassthroughFs::KnownAbsent(Inode& inode, uint8_t bit, uint32_t* changes) {
  absl::MutexLock l(&inode.mu);
  *changes = inode.xattr_changes;
  return (inode.absent_xattrs & bit) != 0 && MonotonicNs() < inode.absent_until;
}

void PassthroughFs::RememberAbsent(Inode& inode, uint8_t bit, uint32_t changes) {
  if (opts_.attr_timeout <= 0) return;  // nothing cached: nothing remembered
  const uint64_t now = MonotonicNs();
  absl::MutexLock l(&inode.mu);
  if (inode.xattr_changes != changes) return;  // the answer may be outdated
  // One window for all bits, opened by the first: no absence is trusted
  // longer than attr_timeout after it was read.
  if (now >= inode.absent_until) {
    inode.absent_xattrs = 0;
    inode.absent_until = now + static_cast<uint64_t>(opts_.attr_timeout * 1e9);
  }
  inode.absent_xattrs |= bit;
}

void PassthroughFs::XattrsChanged(Inode& inode) {
  absl::MutexLock l(&inode.mu);
  inode.absent_xattrs = 0;
  ++inode.xattr_changes;
}

Result<std::string> PassthroughFs::GetXattr(const RequestContext& ctx, uint64_t nodeid,
                                            std::string_view name) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if (ctx.uid != 0 && name.starts_with("trusted.")) return Errno(ENODATA);
  const uint8_t absence_bit = AbsenceBit(name);
  uint32_t changes = 0;
  if (absence_bit != 0 && KnownAbsent(**n, absence_bit, &changes)) {
    absences_answered_.fetch_add(1, std::memory_order_relaxed);
    return Errno(ENODATA);
  }
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  const ProcPath path((*fd)->get());
  const CName cname(name);
  std::string value;
  for (;;) {
    ssize_t size = getxattr(path.c_str(), cname.c_str(), nullptr, 0);
    if (size < 0) {
      if (errno == ENODATA && absence_bit != 0) RememberAbsent(**n, absence_bit, changes);
      return Errno::Last();
    }
    value.resize(static_cast<size_t>(size));
    if (size == 0) return value;
    ssize_t got = getxattr(path.c_str(), cname.c_str(), value.data(), value.size());
    if (got >= 0) {
      value.resize(static_cast<size_t>(got));
      return value;
    }
    if (errno != ERANGE) return Errno::Last();  // grew in between: again
  }
}

Result<std::string> PassthroughFs::ListXattr(const RequestContext& ctx, uint64_t nodeid) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  Result<SharedFd> fd = NodePathFd(nodeid);
  if (!fd.ok()) return fd.error();
  const ProcPath path((*fd)->get());
  std::string names;
  for (;;) {
    ssize_t size = listxattr(path.c_str(), nullptr, 0);
    if (size < 0) return Errno::Last();
    names.resize(static_cast<size_t>(size));
    if (size == 0) break;
    ssize_t got = listxattr(path.c_str(), names.data(), names.size());
    if (got >= 0) {
      names.resize(static_cast<size_t>(got));
      break;
    }
    if (errno != ERANGE) return Errno::Last();
  }
  if (ctx.uid == 0) return names;
  // The source lists trusted.* to the daemon (root); others must not see it.
  std::string visible;
  for (size_t pos = 0; pos < names.size();) {
    size_t end = names.find('\0', pos);
    if (end == std::string::npos) end = names.size();
    std::string_view one(names.data() + pos, end - pos);
    if (!one.empty() && !one.starts_with("trusted.")) {
      visible.append(one);
      visible.push_back('\0');
    }
    pos = end + 1;
  }
  return visible;
}

Status PassthroughFs::RemoveXattr(const RequestContext& ctx, uint64_t nodeid,
                                  std::string_view name) {
  if (!opts_.xattrs) return Errno(ENOSYS);  // the kernel stops asking
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  Result<SharedFd> fd = PathFd(**n);
  if (!fd.ok()) return fd.error();
  const int rc = removexattr(ProcPath((*fd)->get()).c_str(), CName(name).c_str());
  const int err = errno;
  XattrsChanged(**n);
  if (rc != 0) return Errno(err);
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Directories.

Result<OpenReply> PassthroughFs::OpenDir(const RequestContext& ctx, uint64_t nodeid,
                                         uint32_t flags) {
  Result<std::shared_ptr<Inode>> n = Get(nodeid);
  if (!n.ok()) return n.error();
  if ((*n)->type != S_IFDIR) return Errno(ENOTDIR);
  Result<SharedFd> pfd = PathFd(**n);
  if (!pfd.ok()) return pfd.error();
  int fd = openat((*pfd)->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno::Last();
  struct statx st;
  if (Statx(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Errno(err);
  }
  auto h = std::make_shared<Handle>();
  h->inode = *n;
  h->flags = O_RDONLY | O_DIRECTORY;
  h->fd.store(fd);
  h->dir = std::make_unique<DirStream>();
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
  reply.fh = AddHandle(std::move(h));
  return reply;
}

Status PassthroughFs::ReadDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                              uint64_t offset, DirSink& sink) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr || h->dir == nullptr) return Errno(EBADF);
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
      if (n == 0) break;
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
        if (!accepted) Unremember(e->nodeid, 1);  // the kernel never saw it
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
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return Errno(EBADF);
  const int fd = h->fd.load();
  if ((datasync ? fdatasync(fd) : fsync(fd)) != 0) return Errno::Last();
  return OkStatus();
}

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
