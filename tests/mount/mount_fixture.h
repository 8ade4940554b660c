// tests/mount/mount_fixture.h — running the real efused on a real mount, for tests.
//
// Owns: EfuseMount (one efused process serving a fresh temporary mount point:
// start, wait for the mount, stop with a signal and check a clean exit, and
// unconditional cleanup — lazy umount + SIGKILL — when a test fails half-way),
// MountTest (a GoogleTest fixture built on it), the requirement check (root and
// /dev/fuse: GTEST_SKIP, or FAIL when CI=true), and small helpers the mount
// and stress tests share: RunCommand (a program with a deadline and captured
// output), RunInChild (code in a forked child, optionally as another user,
// whose failures come back as text), UniqueFd and pattern data.
//
// The daemon and efusectl are the built binaries, named at compile time by
// EFUSED_PATH and EFUSECTL_PATH. Each daemon's stdout and stderr go to a log
// file under /tmp (never on the mount), quoted in every failure message.
//
// Thread-safety: none; use an EfuseMount from the thread that created it (the
// daemon gets PR_SET_PDEATHSIG from that thread: if the test process dies, the
// daemon is told to unmount and exit).
#ifndef EFUSE_TESTS_MOUNT_MOUNT_FIXTURE_H_
#define EFUSE_TESTS_MOUNT_MOUNT_FIXTURE_H_

#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

#ifndef EFUSED_PATH
#error "EFUSED_PATH must name the efused binary (see tests/mount/CMakeLists.txt)"
#endif
#ifndef EFUSECTL_PATH
#error "EFUSECTL_PATH must name the efusectl binary (see tests/mount/CMakeLists.txt)"
#endif

namespace efuse::testing {

inline constexpr std::chrono::seconds kMountTimeout{10};
inline constexpr std::chrono::seconds kExitTimeout{10};

// Why real mounts cannot run here ("" if they can): not root, or no usable
// /dev/fuse.
std::string MountRequirementProblem();
// True when the environment variable CI is "true": then a missing
// requirement is a failure, never a skip.
bool InCi();

// Use at the top of SetUp() or a TEST body (it returns from the function).
#define EFUSE_REQUIRE_FUSE()                                                        \
  do {                                                                              \
    const std::string efuse_problem_ = ::efuse::testing::MountRequirementProblem(); \
    if (!efuse_problem_.empty()) {                                                  \
      if (::efuse::testing::InCi()) {                                               \
        FAIL() << "real-mount test cannot run: " << efuse_problem_                  \
               << " (CI=true, so this is a failure, not a skip)";                   \
      } else {                                                                      \
        GTEST_SKIP() << "real-mount test skipped: " << efuse_problem_;              \
      }                                                                             \
    }                                                                               \
  } while (0)

// A file descriptor closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// "ENOENT (No such file or directory)".
std::string ErrnoName(int err);

// One getdents64 call on the directory `fd` into `buf` (its size is the
// piece: small buffers make many READDIRs of one stream); appends the
// names it gave to `names` and returns its result (0 at the end).
long ReadDirPiece(int fd, std::vector<char>& buf, std::vector<std::string>* names);

// The kept-listing race of fs/fuse/readdir.c (the kernel checks a kept
// listing against its directory only for a reader at position 0): `dir`
// is made with `names` files; reader A lists them all but not the end;
// `change` runs, given A's order; reader B opens `dir` and reads one small
// piece; A reads its end, which completes the kernel's kept listing; B
// reads on. Fatal failures end it early (see HasFatalFailure).
struct ListingRace {
  std::vector<std::string> old_order;  // A's listing
  size_t first_piece = 0;              // names in B's first piece
  long old_end = -1;                   // A's last getdents64 (0: the end)
  std::vector<std::string> new_order;  // B's listing
};
void RunListingRace(const std::string& dir, size_t names,
                    const std::function<void(const std::vector<std::string>& old_order)>& change, ListingRace* out);

// Syscall assertions that capture errno right after the call.
//   ASSERT_SYS(fd = open(...));          fails (and returns) if it returned -1
//   EXPECT_ERRNO(unlink(p), ENOENT);     expects -1 with exactly that errno
#define EFUSE_SYS_CHECK_(fatal_or_not, expr)                                           \
  do {                                                                                 \
    errno = 0;                                                                         \
    const long sys_rc_ = static_cast<long>(expr);                                      \
    const int sys_errno_ = errno;                                                      \
    fatal_or_not(sys_rc_ != -1) << #expr << " failed: " << ::efuse::testing::ErrnoName(sys_errno_); \
  } while (0)
#define ASSERT_SYS(expr) EFUSE_SYS_CHECK_(ASSERT_TRUE, expr)
#define EXPECT_SYS(expr) EFUSE_SYS_CHECK_(EXPECT_TRUE, expr)
#define EXPECT_ERRNO(expr, want)                                                       \
  do {                                                                                 \
    errno = 0;                                                                         \
    const long sys_rc_ = static_cast<long>(expr);                                      \
    const int sys_errno_ = errno;                                                      \
    if (sys_rc_ != -1) {                                                               \
      ADD_FAILURE() << #expr << " returned " << sys_rc_ << ", expected -1 with "        \
                    << ::efuse::testing::ErrnoName(want);                              \
    } else {                                                                           \
      EXPECT_EQ(sys_errno_, (want)) << #expr << " failed with "                        \
                                    << ::efuse::testing::ErrnoName(sys_errno_)         \
                                    << ", expected " << ::efuse::testing::ErrnoName(want); \
    }                                                                                  \
  } while (0)

// One line per entry of /proc/self/mountinfo that matters to us.
struct MountEntry {
  std::string mountpoint;
  std::string fstype;  // "fuse.efuse"
  std::string source;
  unsigned dev_minor = 0;
};
// The entry for `mountpoint` (an absolute, resolved path), if mounted.
bool FindMount(const std::string& mountpoint, MountEntry* entry = nullptr);

// An efused process serving memfs at a fresh mkdtemp() directory.
class EfuseMount {
 public:
  EfuseMount() = default;
  // Cleans up whatever is left: lazy umount, SIGKILL, reap, rmdir, log file.
  ~EfuseMount();
  EfuseMount(const EfuseMount&) = delete;
  EfuseMount& operator=(const EfuseMount&) = delete;

  // Creates the mount point, starts `efused flags... MOUNTPOINT` and waits
  // (kMountTimeout) until /proc/self/mountinfo lists it as fuse.efuse.
  ::testing::AssertionResult Start(const std::vector<std::string>& flags);
  // Runs in the forked child just before it execs efused (e.g. to install a
  // seccomp filter that takes a kernel feature away from the daemon).
  void SetChildSetup(std::function<void()> setup) { child_setup_ = std::move(setup); }
  // Start passes --supervise=off unless its flags name --supervise; this
  // leaves supervision to efused's default instead.
  void LeaveSupervisionToTheDefault() { default_supervision_ = true; }

  // Sends `sig` and waits (kExitTimeout) for exit status 0 and no mount left.
  ::testing::AssertionResult Stop(int sig = SIGTERM);

  // Sends `sig` without waiting.
  void Signal(int sig) const;
  // Waits up to `timeout` for the daemon to exit; fills *status (waitpid
  // form). False on timeout (the daemon is left running).
  bool WaitExit(std::chrono::milliseconds timeout, int* status);
  // True while the daemon process has not been reaped (and has not exited).
  bool Alive();

  const std::string& path() const { return path_; }
  // The status file naming this daemon's pid for connection `dev_minor`
  // (/run/efuse, or a user's directory: core/status_file.h), "" if none.
  std::string StatusFile(unsigned dev_minor) const;
  std::string Path(std::string_view relative) const;
  pid_t pid() const { return pid_; }
  // Started and not yet seen to exit.
  bool running() const { return pid_ > 0 && !reaped_; }
  // Everything the daemon wrote to stdout/stderr so far.
  std::string Log() const;
  // The daemon's log, indented, for failure messages.
  std::string LogForMessage() const;

  // Lazy umount + SIGKILL + reap + rmdir; idempotent. The destructor calls it.
  void Cleanup();

 private:
  std::string path_;
  std::string forced_transport_;  // from EFUSE_TRANSPORT, checked at Stop
  std::function<void()> child_setup_;
  bool default_supervision_ = false;
  std::string log_path_;
  pid_t pid_ = -1;
  // The daemon's status file (<dir>/<dev_minor>.status) names its pid.
  bool StatusFileIsOurs(unsigned dev_minor) const;
  bool reaped_ = false;  // waitpid() collected pid_; status_ holds its status
  int status_ = 0;
};

// A GoogleTest fixture: a fresh mount per test, checked clean stop after it.
// The daemon's status file, fresh: SIGUSR1 makes it rewrite
// <dir>/<connection>.status (see core/status_file.h), with one
// "requests_<OPCODE>: N" line per opcode seen, the transport's lines (e.g.
// "queue_0: ...") and a growing "status_seq".
class StatusReader {
 public:
  explicit StatusReader(const EfuseMount* mount) : mount_(mount) {}
  // Every "key: value" line, after a rewrite asked for now.
  ::testing::AssertionResult Fresh(std::map<std::string, std::string>* kv);
  // Only the request counters, keyed by opcode name.
  ::testing::AssertionResult Counts(std::map<std::string, uint64_t>* out);
  // One numeric line after a fresh rewrite; 0 (and a test failure if the
  // file was not rewritten) when absent.
  uint64_t Number(const std::string& key);

 private:
  const EfuseMount* mount_;
};

// Reads `m`'s status until `done` holds of it, for at most 10 s; with
// `drop_caches`, drops the kernel's unused dentries and inodes between
// reads (for it to forget the mount's nodes). A failure lists the last
// status.
::testing::AssertionResult StatusEventually(const EfuseMount* m,
                                            const std::function<bool(std::map<std::string, std::string>&)>& done,
                                            bool drop_caches = false);

class MountTest : public ::testing::Test {
 protected:
  // Flags for efused (the mount point is added last).
  virtual std::vector<std::string> DaemonFlags() const { return {"--size=1G"}; }
  void SetUp() override;
  void TearDown() override;
  std::string Path(std::string_view relative) const { return mount_.Path(relative); }

  EfuseMount mount_;
};

// True for a line of the daemon's log that reports an error: "efused: error:"
// or a sanitizer report (ASan/LSan/UBSan builds).
bool IsDaemonErrorLine(const std::string& line);

// Output of a finished program.
struct CommandResult {
  bool timed_out = false;
  int status = 0;  // waitpid form
  std::string out, err;
  double seconds = 0;
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
  std::string Describe() const;
};
// Runs argv[0] (a path) with argv, no stdin, a deadline (then SIGKILL).
CommandResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// Credentials a child takes before running checks.
struct Creds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

// Collects failures inside a forked child (gtest assertions do not work there).
class ChildChecks {
 public:
  void Fail(const std::string& what, const char* file, int line);
  void Check(bool ok, const char* expr, const char* file, int line) {
    if (!ok) Fail(std::string("expected true: ") + expr, file, line);
  }
  // `rc` and `err` are the call's result and errno, read right after it.
  void ExpectErrno(long rc, int err, int want, const char* expr, const char* file, int line);
  void ExpectOk(long rc, int err, const char* expr, const char* file, int line);
  const std::string& failures() const { return failures_; }

 private:
  std::string failures_;
};

#define CHILD_CHECK(c, cond) (c).Check(static_cast<bool>(cond), #cond, __FILE__, __LINE__)
#define CHILD_EXPECT_ERRNO(c, expr, want)                           \
  do {                                                              \
    long child_rc_ = static_cast<long>(expr);                       \
    int child_errno_ = errno;                                       \
    (c).ExpectErrno(child_rc_, child_errno_, (want), #expr, __FILE__, __LINE__); \
  } while (0)
#define CHILD_EXPECT_OK(c, expr)                                    \
  do {                                                              \
    long child_rc_ = static_cast<long>(expr);                       \
    int child_errno_ = errno;                                       \
    (c).ExpectOk(child_rc_, child_errno_, #expr, __FILE__, __LINE__); \
  } while (0)

// Forks; the child takes `creds` (if given: setgroups + setresgid +
// setresuid), runs `body`, and reports its failures through a pipe. The
// child is killed after `timeout`. Success means: exited 0, no failures.
::testing::AssertionResult RunInChild(const std::function<void(ChildChecks&)>& body,
                                      const Creds* creds = nullptr,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(20));

// A fresh directory under /tmp (mode 0755, owned by `owner`), removed with
// everything in it on destruction (never crossing into a mount). path() is
// empty if it could not be made.
class ScratchDir {
 public:
  explicit ScratchDir(uid_t owner = 0);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Deterministic pseudo-random bytes (splitmix64 stream from `seed`).
std::string PatternBytes(uint64_t seed, size_t size);
void FillPattern(uint64_t seed, uint64_t stream_offset, uint8_t* out, size_t size);
// FNV-1a 64 over `data`, continuing from `h`.
uint64_t Fnv1a(const void* data, size_t size, uint64_t h = 1469598103934665603ULL);

// Whole-file helpers; on failure they return false and set *error.
bool WriteFile(const std::string& path, std::string_view data, std::string* error,
               int flags = O_WRONLY | O_CREAT | O_TRUNC, mode_t mode = 0644);
bool ReadFile(const std::string& path, std::string* data, std::string* error);
// Writes all of `data` at `offset` (pwrite loop); false with errno kept.
bool PwriteAll(int fd, const void* data, size_t size, off_t offset);
bool PreadAll(int fd, void* data, size_t size, off_t offset, size_t* got);

// A file handle (struct file_handle and its bytes) for open_by_handle_at.
struct FileHandle {
  std::vector<unsigned char> bytes;
  file_handle* get() { return reinterpret_cast<file_handle*>(bytes.data()); }
};
// name_to_handle_at of `path`; empty bytes (and errno) on failure.
FileHandle HandleOf(const std::string& path);

// What the export tests hand out: dir/file ("exported data"), dir, and a
// file removed after its handle was taken; the mount's root open.
struct ExportedFiles {
  FileHandle file, dir, removed;
  ino_t file_ino = 0, dir_ino = 0;
  UniqueFd mount_fd;
};
// Makes them under `mount_path`; false and *error on failure.
bool MakeExportedFiles(const std::string& mount_path, ExportedFiles* out, std::string* error);
// Opens the file and the directory by their handles (the same inodes, the
// file's data) and expects ESTALE for the removed one. The directory's
// descriptor in *dir.
void CheckExportedFiles(ExportedFiles& files, UniqueFd* dir);

// `base` followed by `extra` (daemon flags of a suite and of its parameter).
inline std::vector<std::string> WithFlags(std::vector<std::string> base,
                                          const std::vector<std::string>& extra) {
  base.insert(base.end(), extra.begin(), extra.end());
  return base;
}
// The environment variable `name` as a number (a seed, a count), else
// `fallback`.
inline uint64_t NumberFromEnv(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// Processes (other than us) whose command line mentions `needle`.
std::vector<pid_t> ProcessesMentioning(const std::string& needle);

}  // namespace efuse::testing

#endif  // EFUSE_TESTS_MOUNT_MOUNT_FIXTURE_H_
