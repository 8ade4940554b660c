// core/memfs/memfs.h — an in-memory POSIX file system backend.
//
// Owns: MemFs, a complete FileSystem kept in memory: a directory tree with
// stable readdir cookies, sparse regular files (core/memfs/file_data.h),
// symlinks, device nodes, FIFOs, sockets, hard links, extended attributes,
// POSIX permission checks (always, whether or not the mount uses
// default_permissions), lookup counting, and size/inode limits. It backs the
// dispatcher tests and the POSIX/fsx suites run on real mounts. File bytes
// live in a DataStore memfd (core/memfs/data_store.h); with a journal
// (MemFsOptions::journal) everything else is journaled before each reply,
// and a successor server rebuilds the file system from the two
// (core/memfs/memfs_journal.cc). Sources: memfs.cc (tables, names,
// handles, directories), memfs_data.cc (attributes and file data),
// memfs_xattrs.cc, memfs_journal.cc; memfs_internal.h holds what they share.
//
// Thread-safety: every FileSystem call may run concurrently from any thread.
// Locks, in the order they may be taken (never the reverse):
//   1. tree_mu_      the namespace: directory contents, link counts, the
//                    creation and freeing of inodes. Shared for lookups and
//                    readdir, exclusive for every namespace change, Forget and
//                    the freeing of an inode (Release holds it shared, and
//                    exclusively only to free the last handle's unnamed file).
//   2. Inode::mu     one inode's attributes, data and xattrs (memfs.cc). At
//                    most one at a time, except CopyFileRange and
//                    JournalNewName (a directory's, then its new child's),
//                    which take two in increasing node id order. Data calls (read, write,
//                    setattr, xattrs, ...) take only this one, after a brief
//                    table_mu_ look-up, never tree_mu_.
//   3. table_mu_,    leaves: the node id -> inode map and the open handles;
//      handles_mu_   nothing is taken while one is held.
//   4. store_mu_     a leaf too: page-cache pushes against writers of one
//                    inode. A writer may wait on store_cv_ holding tree_mu_
//                    (never an Inode::mu); a push holds no lock while the
//                    kernel takes its pages.
//   5. leaves of their own: the data store's slot mutex, the state
//      region's append mutex, compact_mu_ (the compactor's wakeup),
//      unsure_lookups_mu_.
// The byte budget (SpaceAccount) is a lock-free counter.
//
// Policies: node ids start at 2 and are never reused (generation 0); files
// use 4 KiB blocks; the largest file is 1 TiB (EFBIG past it); atime follows
// relatime on Read only (set when not newer than mtime/ctime, or a day old).
#ifndef EFUSE_CORE_MEMFS_MEMFS_H_
#define EFUSE_CORE_MEMFS_MEMFS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/filesystem.h"
#include "core/memfs/data_store.h"
#include "core/memfs/file_data.h"
#include "core/memfs/rw_mutex.h"
#include "core/result.h"

namespace efuse {

class StateRegion;

struct MemFsOptions {
  // Bytes for file blocks, xattr names and values, symlink targets; ENOSPC
  // beyond.
  uint64_t size_limit = 1ULL << 30;
  // Live inodes, the root included; ENOSPC for a new inode past it.
  uint64_t max_inodes = 1 << 20;
  // Seconds, put into every Entry and AttrReply. A negative_timeout > 0 makes
  // Lookup of a missing name answer a negative entry instead of ENOENT.
  double entry_timeout = 1.0;
  double attr_timeout = 1.0;
  double negative_timeout = 0.0;
  uint32_t root_uid = 0;
  uint32_t root_gid = 0;
  uint32_t root_mode = 0755;
  // The mount is noatime (-o noatime): reads never move atime. Otherwise
  // memfs keeps relatime (the first read after a change, or one a day).
  bool noatime = false;
  // false: OPENDIR is answered ENOSYS once; the kernel then opens
  // directories without asking and keeps their listings until a change
  // through the mount (memfs has no other), so a warm walk sends nothing.
  // Only where the kernel checks an opendir() (default_permissions) or
  // only root can enter: memfs cannot refuse an open it never sees.
  bool dir_handles = true;
  // The store of file contents to adopt (a memfd a supervisor holds;
  // core/memfs/data_store.h); -1: a new one of this server's own.
  int data_fd = -1;
  // Where memfs journals its namespace, attributes, lookups and handles
  // (core/memfs/memfs_journal.cc), for a successor server to rebuild the
  // file system after this one dies. nullptr: no journal. If the region
  // was initialized (INIT answered) the file system is rebuilt from it in
  // Init, which a successor calls once it takes over.
  StateRegion* journal = nullptr;
  // A checkpoint is due once the journal has grown past this many bytes
  // and four times its last checkpoint.
  uint64_t journal_checkpoint_bytes = 8 << 20;
  // A checkpoint writes this many inodes at a time, letting requests go on
  // between; tests make it small and run `between_checkpoint_chunks` (on
  // the compactor's thread, no lock held) to change the tree there.
  size_t checkpoint_chunk = 512;
  std::function<void()> between_checkpoint_chunks = nullptr;
};

class MemFs : public FileSystem {
 public:
  static constexpr uint64_t kMaxFileSize = 1ULL << 40;
  static constexpr size_t kMaxNameLength = 255;
  static constexpr size_t kMaxSymlinkLength = 4095;
  static constexpr size_t kMaxXattrNameLength = 255;
  static constexpr size_t kMaxXattrValueSize = 65536;
  static constexpr uint32_t kMaxLinks = 65000;

  explicit MemFs(MemFsOptions opts = {});
  ~MemFs() override;
  MemFs(const MemFs&) = delete;
  MemFs& operator=(const MemFs&) = delete;

  std::string_view Name() const override { return "memfs"; }
  // memfs_inodes (all, root included) and memfs_known_to_kernel (those the
  // kernel holds a lookup of, root excluded).
  void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const override;
  void Init(const InitInfo& info) override;
  // A successor waiting to take over (a standby, a planned successor)
  // gathers what the journal says as it grows, so that taking over reads
  // only its last records.
  void FollowJournal() override;
  // memfs data changes only through this mount, so the kernel's page cache
  // stays right once filled (see FileSystem::StoreInPageCache).
  Result<uint64_t> StoreInPageCache(uint64_t nodeid, uint64_t max_bytes) override;

  Result<Entry> Lookup(const RequestContext& ctx, uint64_t parent,
                       std::string_view name) override;
  void Forget(uint64_t nodeid, uint64_t nlookup) override;
  Result<AttrReply> GetAttr(const RequestContext& ctx, uint64_t nodeid,
                            const uint64_t* fh) override;
  Result<AttrReply> SetAttr(const RequestContext& ctx, uint64_t nodeid,
                            const SetAttrRequest& req) override;
  Result<std::string> ReadLink(const RequestContext& ctx,
                               uint64_t nodeid) override;
  Result<Entry> Symlink(const RequestContext& ctx, uint64_t parent,
                        std::string_view name,
                        std::string_view target) override;
  Result<Entry> Mknod(const RequestContext& ctx, uint64_t parent,
                      std::string_view name, uint32_t mode, uint32_t rdev,
                      uint32_t umask) override;
  Result<Entry> Mkdir(const RequestContext& ctx, uint64_t parent,
                      std::string_view name, uint32_t mode,
                      uint32_t umask) override;
  Status Unlink(const RequestContext& ctx, uint64_t parent,
                std::string_view name) override;
  Status Rmdir(const RequestContext& ctx, uint64_t parent,
               std::string_view name) override;
  Status Rename(const RequestContext& ctx, uint64_t parent,
                std::string_view name, uint64_t newparent,
                std::string_view newname, uint32_t flags) override;
  Result<Entry> Link(const RequestContext& ctx, uint64_t nodeid,
                     uint64_t newparent, std::string_view newname) override;
  Result<OpenReply> Open(const RequestContext& ctx, uint64_t nodeid,
                         uint32_t flags, uint32_t open_flags) override;
  Result<size_t> Read(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                      uint64_t offset, std::span<uint8_t> out,
                      uint32_t flags) override;
  Result<size_t> Write(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                       uint64_t offset, std::span<const uint8_t> data,
                       uint32_t write_flags, uint32_t flags) override;
  Result<FsStats> StatFs(const RequestContext& ctx, uint64_t nodeid) override;
  void Release(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
               uint32_t flags, uint32_t release_flags,
               uint64_t lock_owner) override;
  Status Fsync(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
               bool datasync) override;
  Status Flush(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
               uint64_t lock_owner) override;
  Status SetXattr(const RequestContext& ctx, uint64_t nodeid,
                  std::string_view name, std::span<const uint8_t> value,
                  uint32_t flags, uint32_t setxattr_flags) override;
  Result<std::string> GetXattr(const RequestContext& ctx, uint64_t nodeid,
                               std::string_view name) override;
  Result<std::string> ListXattr(const RequestContext& ctx,
                                uint64_t nodeid) override;
  Status RemoveXattr(const RequestContext& ctx, uint64_t nodeid,
                     std::string_view name) override;
  Result<OpenReply> OpenDir(const RequestContext& ctx, uint64_t nodeid,
                            uint32_t flags) override;
  Status ReadDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                 uint64_t offset, DirSink& sink) override;
  void ReleaseDir(const RequestContext& ctx, uint64_t nodeid,
                  uint64_t fh) override;
  Status FsyncDir(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                  bool datasync) override;
  Status Access(const RequestContext& ctx, uint64_t nodeid,
                uint32_t mask) override;
  Result<CreateReply> Create(const RequestContext& ctx, uint64_t parent,
                             std::string_view name, uint32_t mode,
                             uint32_t umask, uint32_t flags,
                             uint32_t open_flags = 0) override;
  Result<CreateReply> TmpFile(const RequestContext& ctx, uint64_t parent,
                              uint32_t mode, uint32_t umask,
                              uint32_t flags) override;
  Status Fallocate(const RequestContext& ctx, uint64_t nodeid, uint64_t fh,
                   uint64_t offset, uint64_t length, uint32_t mode) override;
  Result<uint64_t> Lseek(const RequestContext& ctx, uint64_t nodeid,
                         uint64_t fh, uint64_t offset,
                         uint32_t whence) override;
  Result<uint64_t> CopyFileRange(const RequestContext& ctx, uint64_t nodeid_in,
                                 uint64_t fh_in, uint64_t off_in,
                                 uint64_t nodeid_out, uint64_t fh_out,
                                 uint64_t off_out, uint64_t len,
                                 uint64_t flags) override;
  Status SyncFs(const RequestContext& ctx) override;

  // Observers for tests and `efusectl status`.
  // Live inodes, the root included (an unlinked inode lives on while the
  // kernel holds a lookup on it or a handle is open).
  size_t InodeCount() const;
  // The kernel's outstanding lookups on `nodeid`; 0 if it does not exist.
  uint64_t LookupCount(uint64_t nodeid) const;
  // Bytes of the size_limit budget in use: allocated blocks, xattrs, symlinks.
  uint64_t BytesUsed() const { return space_.used(); }
  // Open file and directory handles.
  size_t OpenHandleCount() const;
  // Journal appends that failed (the memfd could not grow): the mount is
  // then marked not recoverable.
  uint64_t JournalFailures() const { return journal_failures_.load(std::memory_order_relaxed); }

 private:
  struct Inode;
  struct DirData;
  KernelConnection* kernel_ = nullptr;  // set by Init, before any request
  // A change of `dir`'s names, made under tree_mu_ held exclusively: drops
  // the listing the kernel may keep of it (see the .cc).
  void DirChanged(Inode* dir);
  // Page-cache pushes against writers of the same inode (Inode::storing,
  // Inode::writers). A leaf: nothing else is taken while it is held.
  absl::Mutex store_mu_;
  absl::CondVar store_cv_;
  // Counts a writer of `n` (a write handle, or a truncation while it runs),
  // after any push of `n` in progress has finished. Never with n.mu held.
  void BeginWrite(Inode& n);
  // Where an O_APPEND write of `data` by `ctx` lands: the end, or, for a
  // resent one whose first run had begun, where that run began (recorded
  // in the journal's intent). n.mu held exclusively.
  uint64_t AppendPosition(const RequestContext& ctx, const Inode& n, std::span<const uint8_t> data);
  void EndWrite(Inode& n);
  struct Handle {
    std::shared_ptr<Inode> inode;
    uint32_t flags = 0;
    // The request that opened it (its unique, without the resend bit): a
    // successor does not revive a handle whose open was never answered.
    uint64_t opened_by = 0;
  };

  std::shared_ptr<Inode> Find(uint64_t nodeid) const;
  // Find() for a holder of tree_mu_: inodes enter and leave the table only
  // under tree_mu_ held exclusively, so neither table_mu_ nor a reference
  // (a shared_ptr count touched per request) is needed while it is held.
  Inode* FindInTree(uint64_t nodeid) const ABSL_SHARED_LOCKS_REQUIRED(tree_mu_);
  // An Entry for `n` with the configured timeouts; takes n.mu.
  Entry LockedEntryOf(Inode& n) const;

  // Finds `id` as a live directory for a namespace change: ENOENT, ENOTDIR,
  // or ENOENT once it was removed.
  Result<Inode*> DirForChange(uint64_t id) ABSL_SHARED_LOCKS_REQUIRED(tree_mu_);
  // Checks a new entry `name` in `parent` and the caller's rights to add it:
  // ENAMETOOLONG, EACCES, EEXIST.
  Status CheckCanAdd(const RequestContext& ctx, Inode* parent,
                     std::string_view name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  // Creates an inode owned by the caller, not yet linked anywhere, with
  // setgid-directory inheritance from `parent`; ENOSPC past max_inodes.
  // Not journaled: the caller journals it once it is whole (JournalNewName).
  Result<Inode*> NewInode(const RequestContext& ctx, Inode* parent,
                          uint32_t mode, uint32_t rdev,
                          std::string_view target = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  // Add or remove `name` in `dir`, keeping cookies and `dir`'s mtime, ctime,
  // size and (for subdirectories) nlink up to date. Link counts of the child
  // are the caller's business.
  void AddEntry(Inode* dir, std::string_view name, Inode* child,
                const timespec& now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  // AddEntry's change alone (AddEntry and AddNewName journal it): the new
  // entry's cookie.
  uint64_t LinkEntry(Inode* dir, std::string_view name, Inode* child, const timespec& now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  // A new inode's first name: AddEntry, and the kernel's lookup the reply
  // gives it (request `unique`), with a create's handle (`open`, opened
  // with `flags`) journaled as one record (JournalNewName).
  void AddNewName(Inode* dir, std::string_view name, Inode* child, uint64_t unique,
                  const OpenReply* open = nullptr, uint32_t flags = 0) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  void RemoveEntry(Inode* dir, std::string_view name, const timespec& now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  // The sticky-directory rule: only root, the directory's owner or the
  // entry's owner may remove or rename an entry of a sticky directory.
  bool StickyDenies(const RequestContext& ctx, const Inode& dir,
                    const Inode& child) const;
  // True if directory `dir` is `top` or lies below it.
  bool IsInSubtree(const Inode* dir, const Inode* top) const
      ABSL_SHARED_LOCKS_REQUIRED(tree_mu_);
  // Registers an open handle on `n`.
  // `unique`: the request that opens it (the journal's opened_by).
  // `journal`: false for a caller that journals it itself (JournalNewName).
  OpenReply NewHandle(std::shared_ptr<Inode> n, uint32_t flags, uint64_t unique, bool journal = true)
      ABSL_SHARED_LOCKS_REQUIRED(tree_mu_);
  // Opens an existing `n`: permission checks, O_TRUNC, kOpenKillSuidgid
  // (a file just created is opened with the rights asked for, whatever its
  // mode: Create).
  Result<OpenReply> OpenInode(const RequestContext& ctx,
                              std::shared_ptr<Inode> n, uint32_t flags,
                              uint32_t open_flags)
      ABSL_SHARED_LOCKS_REQUIRED(tree_mu_);
  void ReleaseHandle(uint64_t fh) ABSL_LOCKS_EXCLUDED(tree_mu_);
  // Frees `n` once nothing refers to it: no link, no kernel lookup, no open
  // handle. `n` may dangle afterwards.
  void MaybeFree(Inode* n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);

  // The journal (memfs_journal.cc). Every change is journaled before the
  // call that made it returns (so before its reply): a record holds the
  // whole current state of what it names, read under that thing's lock, so
  // the last record of a thing is never older than a change already made.
  struct JournalReplay;
  struct InodeRecord;
  // n's state as journaled: the fixed part, then the whole of it (the
  // symlink target and xattrs after the fixed part). n.mu held.
  InodeRecord InodeRecordOf(const Inode& n) const;
  void PutInodeState(const Inode& n, const InodeRecord& rec, std::string* out) const;
  // n's state as one part of a batch record. n.mu held.
  void PutInodePart(const Inode& n, std::string* batch) const;
  void JournalInode(const Inode& n);  // takes n.mu
  void JournalInodeLocked(const Inode& n);  // n.mu held (shared at least)
  void JournalEntry(const Inode& dir, uint64_t cookie, std::string_view name, const Inode& child);
  void JournalEntryGone(const Inode& dir, uint64_t cookie);
  void JournalFreed(const Inode& n);
  // A new inode under its first name (create, mknod, mkdir, symlink): the
  // inode, its entry, the directory, the lookup the reply gives the kernel
  // and, for a create, the handle (`open`, opened with `flags`), as one
  // record: one append per request instead of five (the journal's share of
  // a create loop's cost), and a successor sees all of them or none. After
  // the change, under tree_mu_ held exclusively (which orders the entry,
  // the count and the handle); takes dir.mu and child.mu, which order the
  // inodes' states against their other changes.
  void JournalNewName(const Inode& dir, uint64_t cookie, std::string_view name, const Inode& child,
                      uint64_t unique, const OpenReply* open = nullptr, uint32_t flags = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  // Makes the entry records of one namespace change (a rename's two or
  // three) one journal record: a successor sees all of them or none.
  // Under tree_mu_ held exclusively.
  class EntryBatch {
   public:
    explicit EntryBatch(MemFs* fs);
    ~EntryBatch() { Commit(); }
    EntryBatch(const EntryBatch&) = delete;
    EntryBatch& operator=(const EntryBatch&) = delete;
    void Commit();

   private:
    MemFs* fs_;
    std::string records_;
    bool open_ = true;
  };
  std::string* entry_batch_ = nullptr;  // while an EntryBatch is open
  // Adds `delta` to n's kernel lookups, and journals it with the request
  // that asked (`unique`; 0 for a FORGET).
  void AddLookups(Inode& n, int64_t delta, uint64_t unique);
  // AddLookups without the journal record (JournalNewName writes it).
  void CountLookups(Inode& n, int64_t delta, uint64_t unique);
  // A resent LOOKUP or READDIRPLUS (`unique` without the resend bit): what
  // its first run counted, kept by a rebuild, is taken out before it counts
  // again. Rare (after a takeover only): takes tree_mu_ exclusively.
  void TakeOutLookupsOfResent(uint64_t unique) ABSL_LOCKS_EXCLUDED(tree_mu_);
  void JournalHandle(uint64_t fh, const Handle& h) ABSL_SHARED_LOCKS_REQUIRED(handles_mu_);
  void JournalHandleGone(uint64_t fh) ABSL_EXCLUSIVE_LOCKS_REQUIRED(handles_mu_);
  void JournalAppend(uint16_t type, std::span<const uint8_t> payload);
  // Writes a checkpoint once the journal has grown well past the last one;
  // on the compactor's thread, which JournalAppend wakes when one is due.
  void MaybeCheckpoint() ABSL_LOCKS_EXCLUDED(tree_mu_);
  // A checkpoint's records of these inodes (at of total: a test fault's place).
  void CheckpointInodes(std::span<const std::shared_ptr<Inode>> chunk, size_t at, size_t total)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_);
  void RunCompactor();
  // A successor's: the file system as the journal left it.
  void Rebuild() ABSL_LOCKS_EXCLUDED(tree_mu_);
  // What FollowJournal gathered, and the log offset it read to.
  struct JournalReplayDeleter {
    void operator()(JournalReplay* r) const;  // where JournalReplay is whole
  };
  std::unique_ptr<JournalReplay, JournalReplayDeleter> followed_;
  uint64_t followed_to_ = 0;
  // The last kUnsureLookupsKept lookups requests counted, each as
  // (request, node id, count), kept through checkpoints (a checkpoint ties
  // them to the counts it writes) and rebuilds, so that a request in flight
  // when its server died is among them. A rebuild takes out what requests
  // carried out and never answered had counted (their intents say so); a
  // LOOKUP or READDIRPLUS records no intent, so whether the kernel had its
  // answer is not known until it resends it (then it did not), and that
  // resend takes the first count out (TakeOutLookupsOfResent). A ring: the
  // oldest go first.
  static constexpr size_t kUnsureLookupsKept = 4096;
  struct UnsureLookup {
    uint64_t unique = 0;  // 0: an empty place
    uint64_t id = 0;
    int64_t delta = 0;
  };
  absl::Mutex unsure_lookups_mu_;  // a leaf
  std::vector<UnsureLookup> unsure_lookups_ ABSL_GUARDED_BY(unsure_lookups_mu_) =
      std::vector<UnsureLookup>(kUnsureLookupsKept);
  size_t unsure_next_ ABSL_GUARDED_BY(unsure_lookups_mu_) = 0;

  const MemFsOptions opts_;
  SpaceAccount space_;
  std::unique_ptr<DataStore> store_;
  StateRegion* const journal_;
  // Set while a successor has not rebuilt yet (Init does).
  bool rebuild_pending_ = false;
  std::atomic<bool> checkpointing_{false};
  absl::Mutex compact_mu_;
  absl::CondVar compact_cv_;
  bool compact_wanted_ ABSL_GUARDED_BY(compact_mu_) = false;
  bool compact_stop_ ABSL_GUARDED_BY(compact_mu_) = false;
  std::atomic<bool> compact_pending_{false};
  // A checkpoint is due past this many journal bytes (and four times the
  // last checkpoint); set before the compactor starts.
  std::atomic<uint64_t> checkpoint_min_bytes_;
  bool crash_in_checkpoint_ = false;  // test fault; the compactor's own
  bool crash_before_listing_drop_ = false;  // test fault; set by Init
  // Test fault journal_refuses: every append fails, as when the memfd
  // cannot grow (set once, at construction).
  const bool journal_refuses_;
  std::thread compactor_;
  std::atomic<uint64_t> journal_failures_{0};

  mutable memfs::RwMutex tree_mu_ ABSL_ACQUIRED_BEFORE(table_mu_, handles_mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(tree_mu_) = 2;
  Inode* root_ = nullptr;  // set once by the constructor

  // Insertions and removals also hold tree_mu_ exclusively.
  mutable memfs::RwMutex table_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Inode>> inodes_
      ABSL_GUARDED_BY(table_mu_);

  mutable memfs::RwMutex handles_mu_;
  std::unordered_map<uint64_t, Handle> handles_ ABSL_GUARDED_BY(handles_mu_);
  uint64_t next_fh_ ABSL_GUARDED_BY(handles_mu_) = 1;
};

}  // namespace efuse

#endif  // EFUSE_CORE_MEMFS_MEMFS_H_
