// core/filesystem.h — the interface every efuse backend implements.
//
// Owns: the typed calls the dispatcher makes once proto/ has decoded a request,
// and the value types they exchange. Every call has a default that answers
// ENOSYS, so a backend implements only what it supports and the kernel learns
// (and, for most opcodes, remembers) that the rest is absent.
//
// Threading: the dispatcher calls a FileSystem concurrently from every worker
// thread; implementations must be thread-safe. A call returns a value (never a
// callback), which is how "exactly one reply per request" is guaranteed.
//
// Node ids: the backend chooses them. Every successful call that returns an
// Entry with a non-zero nodeid (Lookup, Mknod, Mkdir, Symlink, Link, Create,
// Tmpfile, and each entry that DirSink::Add accepts in ReadDirPlus) makes the
// kernel take one lookup reference, which the backend must count; Forget
// gives them back. Node id 1 is the root, never forgotten.
#ifndef EFUSE_CORE_FILESYSTEM_H_
#define EFUSE_CORE_FILESYSTEM_H_

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

/// Relative includes: these headers are installed together (include/efuse/).
#include "api.h"
#include "result.h"

namespace efuse {

/// "." and "..": names every backend answers from the tree, never creates.
inline bool IsDotOrDotDot(std::string_view name) { return name == "." || name == ".."; }

class Later;
class LaterSource;

/// Who asks, from the request header and its extensions.
struct EFUSE_API RequestContext {
  uint64_t unique = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t pid = 0;
  /// Supplementary groups, when the kernel sent them (FUSE_EXT_GROUPS) or the
  /// dispatcher looked them up; may be empty.
  std::span<const uint32_t> groups;
  /// Set by the dispatcher when the kernel sends INTERRUPT for this request. A
  /// backend that may block checks it and answers EINTR.
  const std::atomic<bool>* interrupted = nullptr;

  bool Interrupted() const {
    return interrupted != nullptr && interrupted->load(std::memory_order_relaxed);
  }
  /// True if `g` is the caller's gid or one of its supplementary groups. When
  /// the kernel sent no group list, the list is read once from
  /// /proc/PID/status (the caller is blocked in the syscall, so it exists).
  bool InGroup(uint32_t g) const;

  /// With FUSE_ALLOW_IDMAP (idmapped mounts) the kernel names the caller
  /// only in requests that create an inode; every other request carries
  /// this id (FUSE_INVALID_UIDGID). Such a mount always has
  /// default_permissions: the kernel made every permission decision, so a
  /// backend checks nothing more, and where the caller's identity matters
  /// for privileges (which set-id bits a write clears) takes the stricter
  /// answer (not root, in no group).
  static constexpr uint32_t kUnknownId = 0xffffffffu;
  bool IdentityKnown() const { return uid != kUnknownId; }

  /// To answer this request after the call returns, from any thread: the
  /// call takes a Later, returns kAnsweredLater, and answers through the
  /// Later once (see Later). An empty Later (false) means this request
  /// cannot be answered later (READDIR, FORGET, a second AnswerLater, a
  /// transport that cannot): answer it now.
  Later AnswerLater() const;

 private:
  friend class Dispatcher;
  LaterSource* later_source_ = nullptr;  // set by the dispatcher for this call
  mutable bool proc_groups_loaded_ = false;
  mutable std::vector<uint32_t> proc_groups_;
};

/// Attributes of an inode, as the kernel wants them (struct stat subset + btime).
struct Attributes {
  uint64_t ino = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;  ///< 512-byte units
  timespec atime{};
  timespec mtime{};
  timespec ctime{};
  timespec btime{};
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t rdev = 0;  ///< dev_t in the kernel's new_encode_dev form is done by proto
  uint32_t blksize = 4096;
};

struct AttrReply {
  Attributes attr;
  double attr_timeout = 1.0;  ///< seconds the kernel may cache them
  /// The attributes change where no request shows it (a file written through
  /// a shared mapping the kernel serves alone): attr_timeout is a bound that
  /// no cache policy (the offload) may raise.
  bool attr_volatile = false;
};

/// The answer to a name lookup. nodeid == 0 is a negative entry: the kernel
/// caches "does not exist" for entry_timeout and takes no reference.
struct Entry {
  uint64_t nodeid = 0;
  uint64_t generation = 0;
  Attributes attr;
  double entry_timeout = 1.0;
  double attr_timeout = 1.0;
  bool attr_volatile = false;  ///< as AttrReply::attr_volatile
};

struct OpenReply {
  uint64_t fh = 0;
  uint32_t open_flags = 0;  ///< abi::kFopen*
  int32_t backing_id = 0;   ///< with abi::kFopenPassthrough
};

struct CreateReply {
  Entry entry;
  OpenReply open;
};

/// SETATTR: only the fields whose abi::kFattr* bit is in `valid` are meaningful.
struct SetAttrRequest {
  uint32_t valid = 0;
  uint64_t fh = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  timespec atime{};  ///< ignored if kFattrAtimeNow
  timespec mtime{};
  timespec ctime{};
  uint64_t lock_owner = 0;
};

struct FsStats {
  uint64_t blocks = 0;
  uint64_t bfree = 0;
  uint64_t bavail = 0;
  uint64_t files = 0;
  uint64_t ffree = 0;
  uint32_t bsize = 4096;
  uint32_t namelen = 255;
  uint32_t frsize = 4096;
};

struct LockRequest {
  uint64_t fh = 0;
  uint64_t owner = 0;
  uint64_t start = 0;
  uint64_t end = 0;
  uint32_t type = 0;  ///< F_RDLCK / F_WRLCK / F_UNLCK
  uint32_t pid = 0;
  bool flock = false;  ///< BSD flock() rather than POSIX fcntl()
};

/// What a call returns when it took a Later (RequestContext::AnswerLater):
/// the answer comes through the Later; nothing is sent now.
inline constexpr Errno kAnsweredLater{0x7fff0001};

class LaterAnswer;

/// The answer to one request, given after its call returned, from any
/// thread: a file system whose backend is a network or a slow device need
/// not hold a worker per request. Movable, not copyable; answered once
/// (later calls do nothing); destroyed unanswered, it answers EIO.
///
/// The call's arguments (names, WRITE data, READ's `out`, ctx.groups, the
/// ctx itself) are valid only until the call returns: copy what the answer
/// needs. A thread that answers Laters must be started with SIGTERM, SIGINT,
/// SIGHUP, SIGUSR1 and SIGUSR2 blocked (or after Serve blocked them), so that
/// those signals reach the server, which unmounts, not that thread. Answer
/// with what the call would have returned:
/// - Entry: LOOKUP, MKNOD, MKDIR, SYMLINK, LINK;
/// - AttrReply: GETATTR (and statx), SETATTR;
/// - OpenReply: OPEN, OPENDIR; CreateReply: CREATE, TMPFILE;
/// - size_t: WRITE, LSEEK, COPY_FILE_RANGE;
/// - std::string: READ (the data), READLINK, GETXATTR, LISTXATTR;
/// - FsStats: STATFS; Status: the calls that return a Status.
///
/// An answer of the wrong kind for the request is sent as EIO (and logged).
class EFUSE_API Later {
 public:
  Later();
  explicit Later(std::unique_ptr<LaterAnswer> pending);
  Later(Later&& other) noexcept;
  Later& operator=(Later&& other) noexcept;
  ~Later();

  /// False: there is nothing to answer through this one.
  explicit operator bool() const { return pending_ != nullptr; }

  void Answer(Result<Entry> entry);
  void Answer(Result<AttrReply> attr);
  void Answer(Result<OpenReply> open);
  void Answer(Result<CreateReply> create);
  void Answer(Result<size_t> count);
  void Answer(Result<std::string> bytes);
  void Answer(Result<FsStats> stats);
  void Answer(Status status);
  /// The request failed with `error` (whatever kind of answer it wanted).
  void Fail(Errno error);
  /// The caller gave up (an INTERRUPT came for the request, during the call
  /// that took this Later or after it, or the mount is going away): answer
  /// soon, EINTR if the work was not done.
  bool Interrupted() const;

 private:
  std::unique_ptr<LaterAnswer> pending_;
};

/// Receives directory entries for READDIR/READDIRPLUS. Add returns false when
/// the reply buffer is full: the entry was NOT sent, and (for plus) the backend
/// must not count a lookup for it. `next_offset` is the cookie the kernel sends
/// back to continue after this entry.
class DirSink {
 public:
  virtual ~DirSink() = default;
  /// `entry` is consulted only for READDIRPLUS; pass nullptr for READDIR. For
  /// "." and ".." in READDIRPLUS pass an Entry with nodeid 0 (the kernel takes
  /// no reference for them).
  virtual bool Add(std::string_view name, uint64_t ino, uint32_t mode,
                   uint64_t next_offset, const Entry* entry) = 0;
  virtual bool plus() const = 0;
};

/// What a backend may ask of the kernel connection it serves. Implemented by
/// the session on its /dev/fuse fd; thread-safe.
class EFUSE_API KernelConnection {
 public:
  virtual ~KernelConnection() = default;
  /// Registers an open file as a passthrough backing file
  /// (FUSE_DEV_IOC_BACKING_OPEN); the id goes into OpenReply::backing_id
  /// with abi::kFopenPassthrough. Needs root and a negotiated kPassthrough.
  virtual Result<int32_t> OpenBacking(int fd) = 0;
  virtual Status CloseBacking(int32_t backing_id) = 0;
  /// Sends a whole FUSE_NOTIFY_* message (out header first). Must not be
  /// called while holding a lock the kernel may need to answer (an
  /// invalidation can wait for a request this daemon is serving).
  virtual Status Notify(std::span<const iovec> message) = 0;
  /// Drops the kernel's cached attributes of `nodeid` (FUSE_NOTIFY_INVAL_INODE,
  /// attributes only; cached pages stay): for a request whose reply cannot
  /// carry a change it made (a WRITE or OPEN that cleared setuid/setgid).
  /// Sent before that reply, the caller's syscall returns to a kernel that
  /// asks again.
  Status DropCachedAttributes(uint64_t nodeid);
  /// The three calls below send a notification, as Notify does, with the
  /// same rule: never while holding a lock a request needs (the kernel may
  /// wait for a request on that inode or directory before it takes the
  /// notification), and, from a request's own call, not about that
  /// request's inode or directory. One exception: InvalidateData of a
  /// directory (its kept listing and attributes) takes neither the
  /// directory's lock nor a page lock a request holds (fs/fuse/inode.c,
  /// readdir.c), so a change may drop its own directory's listing before
  /// it answers, as efused does.
  ///
  /// Drops cached data of `nodeid` in [offset, offset + length) (length 0:
  /// to the end) and its attributes (FUSE_NOTIFY_INVAL_INODE): for a file
  /// whose contents changed behind the kernel's back.
  Status InvalidateData(uint64_t nodeid, uint64_t offset = 0, uint64_t length = 0);
  /// Drops the cached name `name` in directory `parent` (FUSE_NOTIFY_INVAL_ENTRY):
  /// the next lookup asks again.
  Status InvalidateEntry(uint64_t parent, std::string_view name);
  /// Puts `data` into the kernel's page cache of `nodeid` at `offset`
  /// (FUSE_NOTIFY_STORE), growing its cached size if needed: reads of an
  /// open kept with kFopenKeepCache are then served without a request.
  Status StoreData(uint64_t nodeid, uint64_t offset, std::span<const uint8_t> data);
  /// Asks the kernel for what its page cache holds of `nodeid` from
  /// `offset` (FUSE_NOTIFY_RETRIEVE, up to `size` bytes, stopping at the
  /// first page it lacks). `done` is called once, from a worker, with those
  /// bytes (possibly none), unless this returns an error (ENOENT: the kernel
  /// has no such inode cached), when it is not called. `done` must not block.
  Status RetrieveData(uint64_t nodeid, uint64_t offset, uint32_t size,
                      std::function<void(Result<std::string>)> done);
  /// Asks the kernel to send again every request it sent and this server
  /// has not answered (FUSE_NOTIFY_RESEND; Linux 6.9+).
  Status ResendPending();

 private:
  friend class Dispatcher;
  // NOTIFY_REPLY, the kernel's answer to RETRIEVE `notify_unique`.
  void RetrieveAnswered(uint64_t notify_unique, std::string data);
  std::mutex retrieve_mu_;
  std::map<uint64_t, std::function<void(Result<std::string>)>> retrieves_;
  uint64_t next_retrieve_ = 1;
};

/// What INIT settled, handed to the backend before any other call.
struct InitInfo {
  uint64_t flags = 0;   ///< negotiated abi::init bits
  uint32_t minor = 0;   ///< negotiated protocol minor
  uint32_t max_write = 0;
  KernelConnection* kernel = nullptr;  ///< null in tests without a device
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  /// Names the backend for logs and `efusectl status`.
  virtual std::string_view Name() const = 0;

  /// The abi::init flags to ask the kernel for, given the session's defaults:
  /// a backend adds what it can use (kPassthrough) and drops what it cannot.
  virtual uint64_t WantedInitFlags(uint64_t defaults) const { return defaults; }
  /// Called once after INIT, before any other call (but FollowJournal).
  virtual void Init(const InitInfo& /*info*/) {}
  /// A standby server, built while another serves the connection: reads
  /// what that one added to the takeover journal since (called about once a
  /// second until it takes over), so little is left to read then.
  virtual void FollowJournal() {}
  /// "key: value" lines for the status file (efusectl status): the backend's
  /// own figures. Called from the session thread while requests run.
  virtual void AppendStatus(std::vector<std::pair<std::string, std::string>>* /*lines*/) const {}
  virtual void Destroy() {}

  virtual Result<Entry> Lookup(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/) { return Errno(ENOSYS); }
  virtual void Forget(uint64_t /*nodeid*/, uint64_t /*nlookup*/) {}
  virtual Result<AttrReply> GetAttr(const RequestContext&, uint64_t /*nodeid*/, const uint64_t* /*fh*/) { return Errno(ENOSYS); }
  virtual Result<AttrReply> SetAttr(const RequestContext&, uint64_t /*nodeid*/, const SetAttrRequest&) { return Errno(ENOSYS); }
  virtual Result<std::string> ReadLink(const RequestContext&, uint64_t /*nodeid*/) { return Errno(ENOSYS); }
  virtual Result<Entry> Symlink(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/, std::string_view /*target*/) { return Errno(ENOSYS); }
  virtual Result<Entry> Mknod(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/, uint32_t /*mode*/, uint32_t /*rdev*/, uint32_t /*umask*/) { return Errno(ENOSYS); }
  virtual Result<Entry> Mkdir(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/, uint32_t /*mode*/, uint32_t /*umask*/) { return Errno(ENOSYS); }
  virtual Status Unlink(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/) { return Errno(ENOSYS); }
  virtual Status Rmdir(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/) { return Errno(ENOSYS); }
  /// flags: 0, RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT.
  virtual Status Rename(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/, uint64_t /*newparent*/, std::string_view /*newname*/, uint32_t /*flags*/) { return Errno(ENOSYS); }
  virtual Result<Entry> Link(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*newparent*/, std::string_view /*newname*/) { return Errno(ENOSYS); }

  /// flags: the open(2) flags. open_flags: abi::kOpenKillSuidgid.
  virtual Result<OpenReply> Open(const RequestContext&, uint64_t /*nodeid*/, uint32_t /*flags*/, uint32_t /*open_flags*/) { return Errno(ENOSYS); }
  /// Reads up to out.size() bytes at `offset` into `out` (the transport's reply
  /// buffer: no extra copy); returns the count, 0 at end of file.
  virtual Result<size_t> Read(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint64_t /*offset*/, std::span<uint8_t> /*out*/, uint32_t /*flags*/) { return Errno(ENOSYS); }
  /// READ answered from memory the file system owns (a cache, a mapping,
  /// a buffer of zeros) instead of Read filling the reply buffer: the reply
  /// is written from `data` as it is (the sync transport hands it to the
  /// kernel with no copy in the daemon, uring-dev too above 68 KiB; the
  /// FUSE ring copies it into its entry, whose buffer the kernel fixed at
  /// registration). `keep` (may be null) holds the memory until the reply
  /// is sent; its bytes must not change meanwhile. `data` longer than asked
  /// for is cut; shorter means end of file there. Only a ReadView with
  /// `use` set is one: the default (`use` false) has Read called instead.
  struct ReadView {
    std::span<const uint8_t> data;
    std::shared_ptr<const void> keep;
    bool use = false;
  };
  virtual Result<ReadView> ViewRead(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint64_t /*offset*/, uint32_t /*size*/, uint32_t /*flags*/) { return ReadView{}; }
  /// write_flags: abi::kWrite* (kWriteKillSuidgid: clear setuid/setgid).
  virtual Result<size_t> Write(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint64_t /*offset*/, std::span<const uint8_t> /*data*/, uint32_t /*write_flags*/, uint32_t /*flags*/) { return Errno(ENOSYS); }
  /// READ/WRITE/FSYNC on `fh` done by the transport's io_uring instead of
  /// Read/Write/Fsync: the fd to use, kept open by `keep` until the I/O ends.
  /// fd -1 (the default): not for this request, call Read/Write/Fsync.
  /// write_flags as for Write (0 for reads and fsync).
  struct AsyncFileRef {
    int fd = -1;
    std::shared_ptr<const void> keep;
  };
  virtual Result<AsyncFileRef> AsyncFile(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint32_t /*write_flags*/) { return AsyncFileRef{}; }
  /// Offload (core/offload.h): the file is read often. Push its data (up to
  /// max_bytes; EFBIG past it) into the kernel's page cache with
  /// FUSE_NOTIFY_STORE, so that opens answered with FOPEN_KEEP_CACHE are
  /// served by the kernel. Only for a backend whose data changes only through
  /// this mount (the kernel's cache then stays right). Returns bytes stored.
  virtual Result<uint64_t> StoreInPageCache(uint64_t /*nodeid*/, uint64_t /*max_bytes*/) { return Errno(ENOSYS); }
  /// Offload: the file is opened often. Keep its kernel passthrough backing
  /// id registered after its last release, so the next open costs no new
  /// FUSE_DEV_IOC_BACKING_OPEN. False: nothing to keep here.
  virtual bool KeepBacking(uint64_t /*nodeid*/) { return false; }
  virtual Result<FsStats> StatFs(const RequestContext&, uint64_t /*nodeid*/) { return Errno(ENOSYS); }
  virtual void Release(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint32_t /*flags*/, uint32_t /*release_flags*/, uint64_t /*lock_owner*/) {}
  virtual Status Fsync(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, bool /*datasync*/) { return Errno(ENOSYS); }
  virtual Status Flush(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint64_t /*lock_owner*/) { return Errno(ENOSYS); }

  /// flags: XATTR_CREATE / XATTR_REPLACE.
  virtual Status SetXattr(const RequestContext&, uint64_t /*nodeid*/, std::string_view /*name*/, std::span<const uint8_t> /*value*/, uint32_t /*flags*/, uint32_t /*setxattr_flags*/) { return Errno(ENOSYS); }
  /// Returns the whole value; the dispatcher answers size probes and ERANGE.
  virtual Result<std::string> GetXattr(const RequestContext&, uint64_t /*nodeid*/, std::string_view /*name*/) { return Errno(ENOSYS); }
  /// Returns the names, each followed by NUL.
  virtual Result<std::string> ListXattr(const RequestContext&, uint64_t /*nodeid*/) { return Errno(ENOSYS); }
  virtual Status RemoveXattr(const RequestContext&, uint64_t /*nodeid*/, std::string_view /*name*/) { return Errno(ENOSYS); }

  virtual Result<OpenReply> OpenDir(const RequestContext&, uint64_t /*nodeid*/, uint32_t /*flags*/) { return Errno(ENOSYS); }
  /// Fills `sink` starting after cookie `offset` (0 = from the start) until it
  /// refuses an entry or the directory ends. sink.plus() tells READDIRPLUS.
  virtual Status ReadDir(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint64_t /*offset*/, DirSink& /*sink*/) { return Errno(ENOSYS); }
  virtual void ReleaseDir(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/) {}
  virtual Status FsyncDir(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, bool /*datasync*/) { return Errno(ENOSYS); }

  virtual Result<LockRequest> GetLk(const RequestContext&, uint64_t /*nodeid*/, const LockRequest&) { return Errno(ENOSYS); }
  /// `sleep` is SETLKW: may block until granted or ctx.Interrupted().
  virtual Status SetLk(const RequestContext&, uint64_t /*nodeid*/, const LockRequest&, bool /*sleep*/) { return Errno(ENOSYS); }

  virtual Status Access(const RequestContext&, uint64_t /*nodeid*/, uint32_t /*mask*/) { return Errno(ENOSYS); }
  /// open_flags: abi::kOpenKillSuidgid, for when the name already exists and
  /// O_TRUNC truncates it.
  virtual Result<CreateReply> Create(const RequestContext&, uint64_t /*parent*/, std::string_view /*name*/, uint32_t /*mode*/, uint32_t /*umask*/, uint32_t /*flags*/, uint32_t /*open_flags*/ = 0) { return Errno(ENOSYS); }
  /// O_TMPFILE: an unnamed regular file in `parent`, opened.
  virtual Result<CreateReply> TmpFile(const RequestContext&, uint64_t /*parent*/, uint32_t /*mode*/, uint32_t /*umask*/, uint32_t /*flags*/) { return Errno(ENOSYS); }
  virtual Status Fallocate(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint64_t /*offset*/, uint64_t /*length*/, uint32_t /*mode*/) { return Errno(ENOSYS); }
  virtual Result<uint64_t> Lseek(const RequestContext&, uint64_t /*nodeid*/, uint64_t /*fh*/, uint64_t /*offset*/, uint32_t /*whence*/) { return Errno(ENOSYS); }
  virtual Result<uint64_t> CopyFileRange(const RequestContext&, uint64_t /*nodeid_in*/, uint64_t /*fh_in*/, uint64_t /*off_in*/, uint64_t /*nodeid_out*/, uint64_t /*fh_out*/, uint64_t /*off_out*/, uint64_t /*len*/, uint64_t /*flags*/) { return Errno(ENOSYS); }
  virtual Status SyncFs(const RequestContext&) { return Errno(ENOSYS); }
};

}  // namespace efuse

#endif  // EFUSE_CORE_FILESYSTEM_H_
