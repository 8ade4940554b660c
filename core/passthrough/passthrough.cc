// core/passthrough/passthrough.cc — PassthroughFs: setup, INIT, statistics
// and status lines (shared state and helpers: internal.h).
#include "core/passthrough/passthrough.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "core/log.h"
#include "core/passthrough/internal.h"
#include "proto/abi.h"

namespace efuse {

using passthrough::kRootId;
using passthrough::Statx;
using passthrough::DevOf;
using passthrough::HandleOf;
using passthrough::OpenByHandle;
using passthrough::HasInitialNamespaceCapability;
using passthrough::OpenNoatimeClone;
using passthrough::MakeSharedFd;

namespace {
size_t DefaultFdCacheSize() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 4096;
  return std::max<size_t>(64, static_cast<size_t>(rl.rlim_cur) / 4);
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
  StopCompactor();   // its thread walks the tables
  watcher_.reset();  // its thread calls into the tables
  prefetch_.reset();
  absl::MutexLock l(&mounts_mu_);
  for (auto& [dev, fd] : mount_fds_) close(fd);
}

absl::StatusOr<std::unique_ptr<PassthroughFs>> PassthroughFs::Create(PassthroughOptions options) {
  std::unique_ptr<PassthroughFs> fs(new PassthroughFs(std::move(options)));
  absl::Status s = fs->OpenSource();
  if (!s.ok()) return s;
  fs->ReplayJournal();
  return fs;
}

absl::Status PassthroughFs::OpenSource() {
  const std::string& src = opts_.source;
  int fd = -1;
  if (opts_.source_fd >= 0) {
    fd = opts_.source_fd;  // taken over: the root inode owns it from here
  } else {
    fd = opts_.noatime ? OpenNoatimeClone(src) : -1;
    noatime_clone_ = fd >= 0;
    if (fd < 0) fd = open(src.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  }
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
      (opts_.passthrough == PassthroughMode::kAuto && HasInitialNamespaceCapability(CAP_SYS_ADMIN));
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
  FinishRecovery();  // before the orphan backing ids it finds are closed below
  StartCompactor();  // serving from now on: this server keeps the journal short
  if (kernel_ != nullptr) {
    for (int32_t id : std::exchange(orphan_backing_ids_, {})) kernel_->CloseBacking(id).ok();
  }
  posix_acl_ = (info.flags & f::kPosixAcl) != 0;
  writeback_ = (info.flags & f::kWritebackCache) != 0;
  std::string why;
  if (opts_.passthrough != PassthroughMode::kOff) {
    if (!HasInitialNamespaceCapability(CAP_SYS_ADMIN)) {
      why = "the daemon lacks CAP_SYS_ADMIN in the initial user namespace (backing files need it)";
    } else if ((info.flags & f::kPassthrough) == 0) {
      why = "the kernel did not agree to FUSE_PASSTHROUGH";
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
  // Without directory handles: kept listings dropped by a change of a name.
  add("pt_listing_drops", listing_drops_.load(std::memory_order_relaxed));
  add("pt_xattr_absences_answered", absences_answered_.load(std::memory_order_relaxed));
  uint64_t forgotten = 0;
  for (const Shard& s : *shards_) {
    absl::ReaderMutexLock l(&s.mu);
    forgotten += s.forgotten.size();
  }
  // Nodes the kernel forgot whose ids still name their files (file handles).
  add("pt_forgotten_remembered", forgotten);
  add("pt_revivals", revivals_.load(std::memory_order_relaxed));
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

}  // namespace efuse
