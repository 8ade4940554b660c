// core/passthrough/passthrough.h — a FileSystem that mirrors a source directory.
//
// Owns: PassthroughFs, serving the tree under PassthroughOptions::source:
//
//  * Identity. One Inode per source inode, keyed by (st_dev, st_ino), so the
//    hard links of the source are one inode on the mount. An Inode holds the
//    source's file handle (name_to_handle_at), not an fd: fds are borrowed
//    from a bounded FdCache (core/passthrough/fd_cache.h) and reopened by
//    handle (open_by_handle_at) on a miss, so a tree of millions of files is
//    served under RLIMIT_NOFILE. A file system without handles makes its
//    inodes pin an O_PATH fd each (logged once). Nothing is ever resolved by
//    a path string: every call is an *at call relative to an fd, or goes
//    through /proc/self/fd/N (xattrs and truncate, which have no O_PATH form).
//  * Changes behind the mount's back. A handle whose inode was freed fails
//    with ESTALE; a (dev, ino) found with a different handle (inode number
//    reused) gets a new Inode and the old one answers ESTALE; a source inode
//    with no links and no handle open through the mount answers ESTALE. So a
//    removed or renamed source file gives ENOENT/ESTALE, never another file.
//  * Credentials. Files are created (mknod, mkdir, symlink, create, tmpfile)
//    as the caller (core/passthrough/creds.h); every other call runs with the
//    daemon's credentials, so permission checks are the FUSE kernel's
//    (default_permissions, which FUSE_POSIX_ACL implies).
//  * Data. With kernel passthrough (FUSE_PASSTHROUGH, root), OPEN/CREATE
//    register the source file with FUSE_DEV_IOC_BACKING_OPEN once per inode
//    (the kernel insists that every open of an inode use the same backing
//    file) and answer FOPEN_PASSTHROUGH; the last RELEASE closes the backing
//    id. Where the kernel refuses, that inode's opens are served in the daemon
//    (pread/pwrite), with one log line per reason. An inode is in one mode at a
//    time: while it has passthrough opens every open is passthrough, while it
//    has daemon-served opens none is (the kernel fails mixed opens with EIO).
//  * Locks. POSIX and OFD locks become OFD locks on a per-owner open file
//    description of the source file; flock() is taken on the handle's own fd.
//    So conflicts are seen between processes on the mount and with processes
//    using the source directly. A blocking lock polls (so INTERRUPT works)
//    on a thread of its own (the dispatcher answers SETLKW asynchronously);
//    at most max_lock_waiters wait at once, the next one gets EDEADLK.
//  * Privileges on write. With FUSE_HANDLE_KILLPRIV_V2 the server clears
//    setuid/setgid on write, truncate and chown. Writes the daemon serves honor
//    FUSE_WRITE_KILL_SUIDGID; passthrough writes run with the daemon's
//    credentials, so a setuid/setgid file opened for writing by a non-root
//    caller is served in the daemon (or, if its inode is already in
//    passthrough mode, has the bits cleared at open).
//  * Caching. Entry/attribute lifetimes (and negative entries) as configured;
//    FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR while the source's mtime, ctime and
//    size are unchanged since the last open; the writeback cache when kernel
//    passthrough is off; READDIRPLUS as the kernel chooses (READDIRPLUS_AUTO),
//    cached symlinks, parallel directory operations, 1 MiB requests and
//    HANDLE_KILLPRIV_V2 come from the session's INIT defaults. GETXATTR
//    remembers, per inode and for --attr_timeout, that the source lacks a
//    name asked of every file (security.selinux for `ls -l`, ...).
//
// A source that others modify: the defaults (1 s lifetimes, kept page cache
// and listings while mtime/ctime/size match, writeback cache with
// --passthrough=off) are safe for a source only this mount writes. For a
// shared source use watch_source (--watch_source: fanotify events become
// FUSE_NOTIFY_INVAL_ENTRY/INODE at once; turns the writeback cache off), or
// short lifetimes (--entry_timeout, --attr_timeout, --negative_timeout; 0
// disables) with auto_inval_data and no writeback cache. Removed or renamed
// files still never show another file's data, whatever the lifetimes.
//
// Thread-safety: every FileSystem call may run concurrently. Locks, in the
// order they may be taken:
//   1. DirStream::mu   one directory stream (READDIRPLUS looks entries up
//                      while holding it).
//   2. Inode::mu       one inode's open state (handles, backing id, lock fds).
//   3. Shard::mu       (passthrough.cc) the inode table, 64 shards by node id;
//                      node ids encode their shard so Forget finds it.
//   4. HandleShard::mu the open handles, 16 shards; mounts_mu_, the mount
//                      fds by device; recovered_forgotten_mu_ (the last
//                      server's nodes forgotten here).
// FdCache shards and the DirPrefetcher's queue (taken under DirStream::mu)
// are leaves. No syscall is made under a table lock.
#ifndef EFUSE_CORE_PASSTHROUGH_PASSTHROUGH_H_
#define EFUSE_CORE_PASSTHROUGH_PASSTHROUGH_H_

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/filesystem.h"
#include "core/passthrough/creds.h"
#include "core/passthrough/dir_prefetch.h"
#include "core/passthrough/fd_cache.h"
#include "core/passthrough/source_watcher.h"
#include "core/result.h"

namespace efuse {

enum class PassthroughMode {
  kOff,   // serve READ/WRITE in the daemon (writeback cache possible)
  kAuto,  // kernel passthrough where allowed, else the daemon, logged once
  kOn,    // kernel passthrough required: refused at INIT is fatal
};

// What a READDIRPLUS entry carries. Attributes cost a stat (and on a cold
// cache an inode-table read) per entry, which `find` and other walks by
// name never use; `ls -l` needs them or it looks each file up.
enum class ListingAttrs {
  // Names and types until the kernel looks up kLookupsForAttrs files of the
  // directory one by one; from then on (remembered across the kernel
  // forgetting the directory) its listings carry attributes.
  kAdaptive,
  kAlways,  // every entry (the classic READDIRPLUS)
  kNever,   // names and types only: a stat of each file is a LOOKUP
};

class StateRegion;

// A node the kernel forgot (or one a takeover found in the journal), kept so that its id keeps naming the same
// source file: the kernel's export operations (open_by_handle_at, NFS)
// bring back a file handle holding the node id and ask for it by LOOKUP
// ".", and a file met again by name gets its old id back.
struct ForgottenNode {
  uint64_t dev = 0;
  uint32_t type = 0;
  std::string handle;  // the source's file handle (HandleOf)
  uint64_t seq = 0;    // when it was forgotten (Shard::forgotten_seq)
};

struct PassthroughOptions {
  std::string source;  // an existing directory
  // Instead of `source`: an fd of the directory to serve, taken over (e.g.
  // the root of a private tmpfs: memfs with its data in the kernel).
  int source_fd = -1;
  // Where the node and handle tables are journaled (core/state_region.h),
  // and rebuilt from at a takeover; null: nowhere (no successor can serve).
  StateRegion* state = nullptr;
  // Nothing but this daemon opens the source's files (memfs's private
  // tmpfs): the fd a create opened may itself be the backing file, as no
  // exec or read-only remount of the source can meet its write access.
  bool source_private = false;
  // What Name() says (status lines, logs).
  std::string name = "passthrough";
  PassthroughMode passthrough = PassthroughMode::kAuto;
  // Seconds, put into every Entry and AttrReply. Safe for a source only this
  // mount changes; for a source others change, use small values (0 for
  // none) so the kernel asks again.
  double entry_timeout = 1.0;
  double attr_timeout = 1.0;
  // > 0: a missing name is answered with a negative entry the kernel caches.
  double negative_timeout = 0.0;
  // O_PATH fds kept open for inodes; 0: a quarter of RLIMIT_NOFILE.
  size_t fd_cache_size = 0;
  // Kernel page cache policies (only where kernel passthrough is off for the
  // file, which forbids them).
  // FUSE_WRITEBACK_CACHE when passthrough is off (and the source is not
  // watched: with it the kernel trusts its own file sizes, so it assumes
  // only this mount writes the files).
  bool writeback_cache = true;
  bool keep_cache = true;  // FOPEN_KEEP_CACHE when the file is unchanged
  bool cache_dir = true;   // FOPEN_CACHE_DIR (+KEEP_CACHE when unchanged)
  // false: OPENDIR is answered ENOSYS once (FUSE_NO_OPENDIR_SUPPORT). The
  // kernel then opens directories without asking (no OPENDIR, no
  // RELEASEDIR), keeps each listing (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE)
  // until a change through the mount or to its attributes, and READDIR
  // comes without a handle. A directory changed in the source by others is
  // then listed stale until its attributes expire: for a source only this
  // mount changes.
  bool dir_handles = true;
  // FUSE_AUTO_INVAL_DATA: drop cached data when attributes show a change
  // made outside the mount. For sources others modify.
  bool auto_inval_data = false;
  bool posix_acl = true;     // FUSE_POSIX_ACL: the kernel enforces and caches ACLs
  // false: every xattr request is answered ENOSYS once, after which the
  // kernel answers EOPNOTSUPP itself (no GETXATTR round trip per file in
  // `ls -l`); implies posix_acl = false.
  bool xattrs = true;
  bool killpriv_v2 = true;   // FUSE_HANDLE_KILLPRIV_V2 (no getxattr per write)
  bool locks = true;         // carry POSIX/OFD/flock locks to the source
  int max_lock_waiters = 1;  // blocking lock requests waiting at once
  // Watch the directories the kernel remembers (fanotify, root only) and
  // invalidate the kernel's entries, attributes, listings and data when
  // others change them in the source (core/passthrough/source_watcher.h).
  bool watch_source = false;
  ListingAttrs listing_attrs = ListingAttrs::kAdaptive;
  // Read the subdirectories a listing shows ahead of the kernel, in the
  // background (core/passthrough/dir_prefetch.h): a cold tree walk overlaps
  // the source's disk reads.
  bool readdir_ahead = true;
  // The mount is noatime: the source is reached through a private clone of
  // its mounts set noatime (open_tree + mount_setattr), so reading or
  // executing through the mount, kernel passthrough included, never moves
  // the source's access times.
  bool noatime = false;
};

struct PassthroughStats {
  uint64_t inodes = 0;      // remembered by the table (root excluded)
  uint64_t pinned_fds = 0;  // inodes holding an fd (no file handles)
  uint64_t open_handles = 0;
  uint64_t passthrough_opens = 0;  // opens answered with FOPEN_PASSTHROUGH
  uint64_t daemon_opens = 0;       // regular-file opens served in the daemon
  uint64_t backing_refusals = 0;   // BACKING_OPEN failures (fell back)
  uint64_t backing_ids = 0;        // backing ids registered now
  uint64_t direct_fallbacks = 0;   // O_DIRECT handles that also opened the file without it
  uint64_t stale = 0;              // ESTALE answers
  uint64_t watched_dirs = 0;       // directories marked by the source watcher
  uint64_t invalidations = 0;      // FUSE_NOTIFY_INVAL_* sent for source changes
  uint64_t listings_with_attrs = 0;  // READDIRPLUS replies whose entries carry attributes
  uint64_t listings_names_only = 0;  // READDIRPLUS replies with names and types only
  passthrough::FdCacheStats fd_cache;
};

class PassthroughFs : public FileSystem {
 public:
  // Opens the source (must be a directory) and prepares the tables.
  static absl::StatusOr<std::unique_ptr<PassthroughFs>> Create(PassthroughOptions options);
  ~PassthroughFs() override;
  PassthroughFs(const PassthroughFs&) = delete;
  PassthroughFs& operator=(const PassthroughFs&) = delete;

  std::string_view Name() const override { return opts_.name; }
  uint64_t WantedInitFlags(uint64_t defaults) const override;
  void Init(const InitInfo& info) override;
  void Destroy() override;

  Result<Entry> Lookup(const RequestContext& ctx, uint64_t parent, std::string_view name) override;
  void Forget(uint64_t nodeid, uint64_t nlookup) override;
  Result<AttrReply> GetAttr(const RequestContext& ctx, uint64_t nodeid,
                            const uint64_t* fh) override;
  Result<AttrReply> SetAttr(const RequestContext& ctx, uint64_t nodeid,
                            const SetAttrRequest& req) override;
  Result<std::string> ReadLink(const RequestContext& ctx, uint64_t nodeid) override;
  Result<Entry> Symlink(const RequestContext& ctx, uint64_t parent, std::string_view name,
                        std::string_view target) override;
  Result<Entry> Mknod(const RequestContext& ctx, uint64_t parent, std::string_view name,
                      uint32_t mode, uint32_t rdev, uint32_t umask) override;
  Result<Entry> Mkdir(const RequestContext& ctx, uint64_t parent, std::string_view name,
                      uint32_t mode, uint32_t umask) override;
  Status Unlink(const RequestContext& ctx, uint64_t parent, std::string_view name) override;
  Status Rmdir(const RequestContext& ctx, uint64_t parent, std::string_view name) override;
  Status Rename(const RequestContext& ctx, uint64_t parent, std::string_view name,
                uint64_t newparent, std::string_view newname, uint32_t flags) override;
  Result<Entry> Link(const RequestContext& ctx, uint64_t nodeid, uint64_t newparent,
                     std::string_view newname) override;
  Result<OpenReply> Open(const RequestContext& ctx, uint64_t nodeid, uint32_t flags,
                         uint32_t open_flags) override;
  Result<size_t> Read(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, uint64_t offset,
                      std::span<uint8_t> out, uint32_t flags) override;
  Result<size_t> Write(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, uint64_t offset,
                       std::span<const uint8_t> data, uint32_t write_flags,
                       uint32_t flags) override;
  Result<AsyncFileRef> AsyncFile(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                                 uint32_t write_flags) override;
  Result<FsStats> StatFs(const RequestContext& ctx, uint64_t nodeid) override;
  void Release(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, uint32_t flags,
               uint32_t release_flags, uint64_t lock_owner) override;
  Status Fsync(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, bool datasync) override;
  Status Flush(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
               uint64_t lock_owner) override;
  Status SetXattr(const RequestContext& ctx, uint64_t nodeid, std::string_view name,
                  std::span<const uint8_t> value, uint32_t flags, uint32_t setxattr_flags) override;
  Result<std::string> GetXattr(const RequestContext& ctx, uint64_t nodeid,
                               std::string_view name) override;
  Result<std::string> ListXattr(const RequestContext& ctx, uint64_t nodeid) override;
  Status RemoveXattr(const RequestContext& ctx, uint64_t nodeid, std::string_view name) override;
  Result<OpenReply> OpenDir(const RequestContext& ctx, uint64_t nodeid, uint32_t flags) override;
  Status ReadDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, uint64_t offset,
                 DirSink& sink) override;
  void ReleaseDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh) override;
  Status FsyncDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, bool datasync) override;
  Result<LockRequest> GetLk(const RequestContext& ctx, uint64_t nodeid,
                            const LockRequest& lk) override;
  Status SetLk(const RequestContext& ctx, uint64_t nodeid, const LockRequest& lk,
               bool sleep) override;
  Status Access(const RequestContext& ctx, uint64_t nodeid, uint32_t mask) override;
  Result<CreateReply> Create(const RequestContext& ctx, uint64_t parent, std::string_view name,
                             uint32_t mode, uint32_t umask, uint32_t flags,
                             uint32_t open_flags = 0) override;
  Result<CreateReply> TmpFile(const RequestContext& ctx, uint64_t parent, uint32_t mode,
                              uint32_t umask, uint32_t flags) override;
  Status Fallocate(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, uint64_t offset,
                   uint64_t length, uint32_t mode) override;
  Result<uint64_t> Lseek(const RequestContext& ctx, uint64_t nodeid, uint64_t fh, uint64_t offset,
                         uint32_t whence) override;
  Result<uint64_t> CopyFileRange(const RequestContext& ctx, uint64_t nodeid_in, uint64_t fh_in,
                                 uint64_t off_in, uint64_t nodeid_out, uint64_t fh_out,
                                 uint64_t off_out, uint64_t len, uint64_t flags) override;
  Status SyncFs(const RequestContext& ctx) override;

  // Observers for tests, logs and `efusectl status`.
  PassthroughStats Stats() const;
  void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const override;
  // Offload: keeps the file's backing id between opens (kernel passthrough).
  bool KeepBacking(uint64_t nodeid) override;
  // The kernel's outstanding lookups on `nodeid`; 0 if unknown.
  uint64_t LookupCount(uint64_t nodeid) const;
  // False once INIT showed that --passthrough=on cannot be honored.
  bool init_ok() const { return init_ok_.load(std::memory_order_acquire); }
  // True while kernel passthrough may be used for new opens.
  bool kernel_passthrough() const { return kernel_pt_; }
  const PassthroughOptions& options() const { return opts_; }

 private:
  struct Inode;
  struct OpenState;
  struct Handle;
  struct DirStream;
  struct Shard;
  struct HandleShard;
  struct StatResult;
  static constexpr size_t kShards = 64;
  static constexpr size_t kHandleShards = 16;

  explicit PassthroughFs(PassthroughOptions opts);
  absl::Status OpenSource();
  // UNLINK (at_flags 0) and RMDIR (AT_REMOVEDIR).
  Status RemoveName(uint64_t parent, std::string_view name, int at_flags);

  // The inode table.
  std::shared_ptr<Inode> Find(uint64_t nodeid) const;
  // Find() for a call on the inode: ENOENT if unknown, ESTALE if replaced.
  // After a takeover, a node only the journal knows is revived (Revive).
  Result<std::shared_ptr<Inode>> Get(uint64_t nodeid);
  // Finds or creates the Inode for the source inode open as `fd` (an O_PATH
  // fd this takes over) with attributes `st`, and counts one kernel lookup.
  Result<std::shared_ptr<Inode>> Remember(int fd, const struct statx& st);
  // Remember() with the handle read from `handle_fd` (any mode; not taken
  // over) and `path_fd` the O_PATH fd taken over, or -1 for none: the fd is
  // then opened by handle when first needed, and EAGAIN answers where one
  // must be pinned (no handles, or a device without a known mount fd).
  Result<std::shared_ptr<Inode>> RememberFd(int path_fd, int handle_fd, const struct statx& st);
  // The known Inode of (dev, ino), with one more kernel lookup, if an fd we
  // hold proves the number still names it; else null.
  std::shared_ptr<Inode> CountIfLive(uint64_t dev, uint64_t ino);
  // Gives back `n` lookups; drops the Inode at zero.
  void Unremember(uint64_t nodeid, uint64_t n);

  // An O_PATH fd for `inode` (cached, pinned, or reopened by handle).
  Result<passthrough::SharedFd> PathFd(Inode& inode);
  // Get() then PathFd(): the O_PATH fd of the node the kernel names.
  Result<passthrough::SharedFd> NodePathFd(uint64_t nodeid);
  // The inode (dev, ino) lost its last link through this mount: it keeps
  // answering (nlink 0) while the kernel holds it, and a reused number is
  // not mistaken for it.
  // An fd of the file `name` in `dirfd` (the node (dev, ino) the kernel
  // knows) to hold across the unlink of its last name, or null.
  passthrough::SharedFd HoldForUnlink(int dirfd, const char* name, uint64_t dev, uint64_t ino);
  // `last_reference`, if given, is an fd of the file held across its
  // unlinkat: kept in the node until FORGET (see Inode::last_reference).
  void MarkUnlinkedHere(uint64_t dev, uint64_t ino, passthrough::SharedFd last_reference = nullptr);
  // READDIRPLUS of directory `dir`: give entries attributes? (ListingAttrs)
  bool ListWithAttrs(Inode& dir);
  // The kernel looked up `child` in `dir` by name (kAdaptive's evidence).
  void NoteLookupIn(Inode& dir, const Entry& child);
  // Subdirectory `sub_nodeid` became known in `dir`, by a LOOKUP or in a
  // listing with attributes: found in a directory listed with attributes
  // (`ls -lR`), it will be listed so too.
  void NoteSubdirIn(const Inode& dir, uint64_t sub_nodeid, bool dir_attrs);
  // GETXATTR's memory of names the source lacked (kAbsenceRemembered):
  // true if `bit`'s absence is remembered and still fresh; `changes` gets
  // the count a later RememberAbsent must still find.
  // A private source without FUSE_POSIX_ACL (memfs with its data in the
  // kernel): ACLs set there would bind the tmpfs but never the kernel's
  // checks of this mount, so, as memfs with daemon data, it keeps none.
  bool AclsRefused() const { return opts_.source_private && !opts_.posix_acl; }
  bool KnownAbsent(Inode& inode, uint8_t bit, uint32_t* changes);
  void RememberAbsent(Inode& inode, uint8_t bit, uint32_t changes);
  // The inode's xattrs changed (through us, or in the source): forget.
  void XattrsChanged(Inode& inode);
  // Opens `inode` afresh with `flags` (not O_PATH): by handle, else through
  // /proc/self/fd.
  Result<int> Reopen(Inode& inode, int flags);
  // A resent O_APPEND write recorded to begin at `at`: true if the source
  // holds a prefix of `data` there (its first run wrote that much).
  bool FirstRunBeganAt(Inode& inode, uint64_t at, std::span<const uint8_t> data);
  // The mount fd open_by_handle_at needs for source device `dev`, or -1.
  int MountFdFor(uint64_t dev) const;

  // statx of `fd` (AT_EMPTY_PATH), as an Attributes.
  Result<Attributes> StatFd(int fd, struct statx* raw = nullptr) const;
  // Attributes of `inode`, ESTALE when the source removed it behind us.
  Result<Attributes> StatInode(Inode& inode, struct statx* raw = nullptr);
  Attributes ToAttributes(const struct statx& st) const;
  Entry MakeEntry(const Inode& inode, const Attributes& attr) const;
  AttrReply MakeAttrReply(const Inode& inode, const Attributes& attr) const;
  // True when the kernel must not cache `attr` of `inode`: while they may
  // change with no request (an open passthrough handle that may be mapped
  // for writing), and for setuid/setgid files (a bit cleared in the source
  // must not keep granting privilege). Replies then carry lifetime 0,
  // which no policy raises.
  bool AttrsVolatile(const Inode& inode, const Attributes& attr) const;
  // Looks `name` up in the directory open as `dirfd` and remembers it.
  Result<Entry> LookupAt(int dirfd, std::string_view name);
  // LOOKUP "." of `nodeid`, live or forgotten (ForgottenNode): the entry of
  // that very node, ESTALE if its file is gone or no longer remembered.
  Result<Entry> LookupSelf(uint64_t nodeid);
  // Keeps what names a dropped node's file, within the shard's bound.
  void RememberForgotten(Shard& s, uint64_t nodeid, ForgottenNode node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // No longer among the forgotten (revived, or gone for good).
  void DropForgotten(Shard& s, uint64_t nodeid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // Forgotten nodes kept per shard (about 130 bytes each at most).
  static constexpr size_t kForgottenPerShard = 4096;
  // After a create: looks the new name up, falling back to `created_fd`
  // (which it closes) when the name was already replaced.
  Result<Entry> EntryForNew(uint64_t parent, int dirfd, std::string_view name);

  // The journal in the state region (core/passthrough/recovery.cc).
  void JournalNode(const Inode& inode);
  void JournalFailed();
  void JournalHandle(uint64_t fh, const Handle& h);
  void JournalRelease(uint64_t fh);
  // The kernel forgot the node; `kept`: among the forgotten, for its file
  // handle (else its file cannot come back by it: unlinked, replaced).
  void JournalDropped(uint64_t nodeid, bool kept);
  struct HandleRecord;
  HandleRecord HandleRecordOf(uint64_t fh, const Handle& h);
  // A node record: kNodeBorn, or kNodeForgotten (a checkpoint's).
  bool AppendNode(uint16_t type, uint64_t nodeid, uint64_t dev, uint32_t node_type, const std::string& handle);
  // Wakes the compactor once the log is due a checkpoint.
  void NoteJournalGrowth();
  // Writes a checkpoint of the tables and frees the log before it (the
  // compactor's thread; see recovery.cc).
  bool CompactJournal();
  void CompactorLoop();
  void StartCompactor();
  void StopCompactor();
  absl::Mutex compact_mu_;
  absl::CondVar compact_cv_;
  bool compact_wanted_ ABSL_GUARDED_BY(compact_mu_) = false;
  bool compact_stop_ ABSL_GUARDED_BY(compact_mu_) = false;
  std::atomic<bool> compact_pending_{false};
  std::atomic<bool> compactor_running_{false};
  std::thread compactor_;
  // Log bytes before a checkpoint is due (test fault journal_checkpoint_at
  // lowers it), and the test fault that kills the server halfway through.
  uint64_t checkpoint_min_bytes_ = 8u << 20;
  bool crash_in_checkpoint_ = false;
  bool crash_mid_append_ = false;  // test fault: die after half an O_APPEND write
  bool crash_before_listing_drop_ = false;  // test fault: die between a change and its listing drop
  // Nodes of the last server's the kernel has forgotten without asking
  // for them (Unremember): left out of the next checkpoint.
  absl::Mutex recovered_forgotten_mu_;
  absl::flat_hash_set<uint64_t> recovered_forgotten_ ABSL_GUARDED_BY(recovered_forgotten_mu_);
  // On a takeover: what the journal says was there. ReplayJournal reads
  // the records not read yet (at construction, which a planned successor
  // reaches while its predecessor still serves; again at Init, for what
  // the predecessor added since); FinishRecovery, at Init, opens the
  // handles the kernel still holds.
  void ReplayJournal();
  void FinishRecovery();
 public:
  void FollowJournal() override { ReplayJournal(); }
 private:
  struct JournalReplay;  // what ReplayJournal gathered (recovery.cc)
  struct JournalReplayDeleter {
    void operator()(JournalReplay* r) const;
  };
  std::unique_ptr<JournalReplay, JournalReplayDeleter> replay_;
  // A forgotten or journaled node's file, O_PATH, by its file handle
  // (ESTALE: the file is gone).
  Result<int> OpenNodeByHandle(const ForgottenNode& f);
  // The node `nodeid` again, from an O_PATH `fd` of its file (taken over;
  // *st filled): ESTALE if that file is known under another id now, or,
  // with `unlinked_is_stale` (a file handle's LOOKUP "."), has no name.
  Result<std::shared_ptr<Inode>> RememberAs(uint64_t nodeid, int fd, struct statx* st,
                                            bool unlinked_is_stale = false);
  // The last server's node `nodeid` (journaled as `journaled`) is the id
  // its file had last, not one a newer id replaced.
  bool IsNewestIdOfItsFile(uint64_t nodeid, const ForgottenNode& journaled) const;
  // A node id the journal knows, opened again by its file handle.
  Result<std::shared_ptr<Inode>> Revive(uint64_t nodeid);
  // A handle the kernel still holds from the last server, opened again.
  std::shared_ptr<Handle> ReviveHandle(uint64_t fh);
  struct RecoveredHandle {
    uint64_t nodeid = 0;
    uint32_t flags = 0;
    bool passthrough = false;
    bool dir = false;
    int32_t backing_id = 0;
    uint64_t opened_by = 0;
  };
  // Read-only once FinishRecovery returned (before any request).
  absl::flat_hash_map<uint64_t, ForgottenNode> recovered_nodes_;
  absl::flat_hash_map<std::pair<uint64_t, std::string>, uint64_t> recovered_by_handle_;
  absl::Mutex recovered_handles_mu_;
  absl::flat_hash_map<uint64_t, RecoveredHandle> recovered_handles_ ABSL_GUARDED_BY(recovered_handles_mu_);
  std::atomic<uint64_t> journal_failures_{0};
  std::atomic<bool> has_recovered_handles_{false};
  absl::Mutex revive_mu_;
  // Backing ids of handles a takeover could not open again: closed at Init,
  // when the connection is there to close them on.
  std::vector<int32_t> orphan_backing_ids_;
  std::atomic<uint64_t> handles_revived_{0};

  // Handles.
  uint64_t AddHandle(std::shared_ptr<Handle> h, uint64_t unique);
  // After a takeover, a handle only the journal knows is opened again.
  std::shared_ptr<Handle> GetHandle(uint64_t fh);
  std::shared_ptr<Handle> TakeHandle(uint64_t fh);
  // The handle's real fd, opening it on first use (passthrough handles have
  // none until a call needs one).
  Result<int> HandleFd(Handle& h);
  // `slot` of `h` (its fd or buffered_fd): `h`'s file opened with `flags`
  // on first use; of two threads opening at once, one fd is kept.
  // *opened_here is set when this call's open was the one kept.
  Result<int> OpenOnce(Handle& h, std::atomic<int>& slot, uint32_t flags,
                       bool* opened_here = nullptr);
  // An O_DIRECT handle's file without O_DIRECT, for transfers O_DIRECT
  // refuses (opened on first use, kept with the handle).
  Result<int> DirectFallbackFd(Handle& h);

  // Opens a regular file for the kernel: mode choice, backing id, flags.
  // `fd` (or -1) is the file already open, with its statx in `known`.
  Result<OpenReply> OpenFile(const RequestContext& ctx, std::shared_ptr<Inode> inode,
                             uint32_t flags, uint32_t open_flags, int fd,
                             const struct statx* known = nullptr);
  void CloseFile(Handle& h);
  // Creates a regular file (or O_TMPFILE when name is empty) as the caller.
  Result<CreateReply> CreateFile(const RequestContext& ctx, uint64_t parent, std::string_view name,
                                 uint32_t mode, uint32_t umask, uint32_t flags);

  // Locks.
  Result<int> OwnerLockFd(Inode& inode, Handle& h, uint64_t owner, bool create);
  Status WaitLock(const RequestContext& ctx, const std::function<int()>& attempt);

  void LogRefusal(int err);

  // The source watcher: marks directories the kernel remembers and turns
  // changes others make into FUSE_NOTIFY_INVAL_ENTRY/INODE.
  void WatchDir(const Inode& inode, int fd);
  void UnwatchDir(Inode& inode);
  void OnSourceEvent(const passthrough::SourceEvent& ev);
  void InvalidateInode(uint64_t nodeid);
  // `nodeid`'s attributes changed (or may now change) in a way the reply to
  // this request does not carry: KernelConnection::DropCachedAttributes,
  // before the reply, counted (exec's permission check then reads the mode).
  void AttrsChangedUnseen(uint64_t nodeid);

  const PassthroughOptions opts_;
  passthrough::DaemonCreds creds_;
  passthrough::FdCache fd_cache_;
  std::shared_ptr<Inode> root_;
  uint64_t root_dev_ = 0;
  uint64_t root_ino_ = 0;
  bool handles_ok_ = true;  // open_by_handle_at usable (CAP_DAC_READ_SEARCH)
  bool noatime_clone_ = false;  // the source is reached through OpenNoatimeClone

  // Set by Init, read-only afterwards.
  KernelConnection* kernel_ = nullptr;
  bool kernel_pt_ = false;
  bool writeback_ = false;
  bool posix_acl_ = false;
  std::atomic<bool> init_ok_{true};

  mutable absl::Mutex mounts_mu_;
  absl::flat_hash_map<uint64_t, int> mount_fds_ ABSL_GUARDED_BY(mounts_mu_);

  std::unique_ptr<std::array<Shard, kShards>> shards_;
  std::unique_ptr<std::array<HandleShard, kHandleShards>> handles_;
  std::atomic<uint64_t> next_fh_{1};

  std::atomic<int> lock_waiters_{0};
  std::atomic<uint64_t> refusal_errnos_{0};  // bit e: errno e logged already
  mutable std::atomic<uint64_t> passthrough_opens_{0};
  mutable std::atomic<uint64_t> daemon_opens_{0};
  mutable std::atomic<uint64_t> backing_refusals_{0};
  std::atomic<uint64_t> direct_fallbacks_{0};
  mutable std::atomic<uint64_t> backing_ids_{0};
  // Inode::last_reference fds held now: a kernel that keeps unlinked nodes
  // (stale link counts) must not run the daemon out of fds.
  static constexpr int kMaxLastReferences = 256;
  std::atomic<int> last_references_{0};
  // The holds, oldest first. One the kernel has not forgotten within
  // kMaxHoldNs is let go by ReleaseOldHolds (called as holds are taken and
  // nodes forgotten): a kernel whose link count was stale (a name removed
  // in the source behind its back) keeps the node, and the file's space
  // would stay taken.
  static constexpr uint64_t kMaxHoldNs = 1'000'000'000;
  void ReleaseOldHolds();
  absl::Mutex holds_mu_;  // before any Inode::mu
  std::deque<std::pair<std::weak_ptr<Inode>, uint64_t>> holds_ ABSL_GUARDED_BY(holds_mu_);
  // FUSE_DEV_IOC_BACKING_OPEN calls that succeeded.
  mutable std::atomic<uint64_t> backing_opens_{0};
  // Opens that reused a backing id kept by KeepBacking (no ioctl).
  mutable std::atomic<uint64_t> backing_reuses_{0};
  // Forgotten nodes given their id back (LOOKUP "." or met again by name).
  std::atomic<uint64_t> revivals_{0};
  mutable std::atomic<uint64_t> stale_{0};
  mutable std::atomic<uint64_t> pinned_{0};
  std::atomic<bool> warned_no_handles_{false};
  mutable std::atomic<uint64_t> invalidations_{0};
  // Attribute invalidations sent for changes no reply carries: setuid/setgid
  // cleared by a WRITE or OPEN, a passthrough open for writing
  // (AttrsChangedUnseen).
  std::atomic<uint64_t> unseen_attr_invalidations_{0};
  // GETXATTRs answered ENODATA from the inode's memory (KnownAbsent).
  std::atomic<uint64_t> absences_answered_{0};
  mutable std::atomic<uint64_t> listings_with_attrs_{0};
  mutable std::atomic<uint64_t> listings_names_only_{0};
  // READDIR without a handle (no OPENDIR): the directory opened for the
  // call, kept for the walk's next call while it has more to list.
  Result<std::shared_ptr<Handle>> OpenListing(const std::shared_ptr<Inode>& dir);
  // OpenListing of node `nodeid` (a call that came without a handle).
  Result<std::shared_ptr<Handle>> OpenListingOf(uint64_t nodeid);
  std::shared_ptr<Handle> TakeListing(uint64_t nodeid, uint64_t offset);
  void KeepListing(uint64_t nodeid, std::shared_ptr<Handle> h);
  Status ListFrom(Handle& h, uint64_t offset, DirSink& sink, bool* at_end);
  std::atomic<bool> told_no_opendir_{false};  // logged once: READDIR without a handle we wanted
  // Every change of a name through the mount (and seen in the source), in
  // directory `dir` (and `other_dir`, a rename's other one): bumps
  // namespace_version_, so a kept stream's read-ahead from before it is not
  // served to a reader that may have begun after it (the kernel would keep
  // it); without directory handles, also drops the kernel's kept listing
  // of each (directories.cc says why).
  void NamespaceChanged(uint64_t dir, uint64_t other_dir = 0);
  std::atomic<uint64_t> namespace_version_{0};
  std::atomic<uint64_t> listing_drops_{0};  // NamespaceChanged's notifications
  absl::Mutex streams_mu_;
  std::vector<std::pair<uint64_t, std::shared_ptr<Handle>>> streams_ ABSL_GUARDED_BY(streams_mu_);
  // Directories (dev, ino) whose listings carry attributes (kAdaptive),
  // kept while the kernel forgets them; cleared when it reaches its bound.
  absl::Mutex listing_mu_;
  absl::flat_hash_set<std::pair<uint64_t, uint64_t>> attr_listed_dirs_ ABSL_GUARDED_BY(listing_mu_);

  std::string root_handle_;  // for the watcher's map
  mutable absl::Mutex watch_mu_;
  // Watched directories by file handle (as HandleOf encodes it).
  absl::flat_hash_map<std::string, uint64_t> watched_ ABSL_GUARDED_BY(watch_mu_);
  // Declared last: destroyed (its thread joined) before what it calls into.
  std::unique_ptr<passthrough::SourceWatcher> watcher_;
  std::unique_ptr<passthrough::DirPrefetcher> prefetch_;  // null: readdir_ahead off
};

}  // namespace efuse

#endif  // EFUSE_CORE_PASSTHROUGH_PASSTHROUGH_H_
