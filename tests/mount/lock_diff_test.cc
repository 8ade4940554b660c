// tests/mount/lock_diff_test.cc — file locks on the mount against the
// kernel's own tmpfs: the same random lock calls from several processes on
// both, every answer compared.
//
// Three child processes each hold, on a file of the mount and on a file of a
// tmpfs reference directory, one descriptor for POSIX locks, one for OFD
// locks, one for flock, and one spare. The parent draws a seeded sequence of
// calls and has one child make each on both files: F_SETLK (read, write,
// unlock) and F_GETLK over random ranges (to end of file too), the same with
// F_OFD_SETLK/F_OFD_GETLK, flock (shared, exclusive, unlock, non-blocking),
// and closing and reopening one of its descriptors — closing any descriptor
// of the file drops all of that process's POSIX locks, closing the OFD or
// flock one drops those. Every result and errno must match, and every
// F_GETLK must name the same conflicting lock: type and range, and for a
// POSIX F_GETLK meeting a POSIX lock the same process, or none where the
// daemon cannot tell which of several owners holds it (OFD locks, which
// the daemon uses on the source, carry no pid; FUSE cannot mark a lock as
// OFD, so those pids are not compared). Range splitting and merging, upgrades, the
// release on close (the kernel sends FLUSH at once and RELEASE later) and
// conflicts between the three kinds of lock are all exercised; on
// passthrough the locks are carried to the source file.
//
// A failure prints the seed and the last calls; EFUSE_LOCKDIFF_SEED=N
// reruns with another seed.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"
#include "tests/mount/passthrough_sources.h"

namespace efuse::testing {
namespace {

constexpr int kChildren = 3;
constexpr int kCalls = 2000;

uint64_t Seed() { return NumberFromEnv("EFUSE_LOCKDIFF_SEED", 1201); }

enum Op : int {
  kPosixSet,
  kPosixGet,
  kOfdSet,
  kOfdGet,
  kFlock,
  kReopenPosix,  // close the POSIX descriptor: drops the process's POSIX locks
  kReopenOfd,
  kReopenFlock,
  kReopenSpare,  // any close of the file drops the process's POSIX locks
  kOps
};

struct Call {
  int op = 0;
  short type = F_UNLCK;  // F_RDLCK, F_WRLCK, F_UNLCK; flock: LOCK_SH/EX/UN
  off_t start = 0;
  off_t len = 0;  // 0: to end of file
};

// One side's answer.
struct Answer {
  int rc = 0;
  int err = 0;
  bool getlk = false;  // F_GETLK / F_OFD_GETLK: the fields below
  short type = 0;
  off_t start = 0, len = 0;
  pid_t pid = 0;
  bool operator==(const Answer& o) const {
    return rc == o.rc && err == o.err && getlk == o.getlk && type == o.type && start == o.start && len == o.len &&
           pid == o.pid;
  }
};
struct Reply {
  Answer mount, reference;
};

std::string Describe(const Call& c) {
  static const char* const kNames[] = {"F_SETLK",       "F_GETLK",       "F_OFD_SETLK",       "F_OFD_GETLK",
                                       "flock",         "reopen posix fd", "reopen ofd fd",    "reopen flock fd",
                                       "reopen spare fd"};
  std::ostringstream d;
  d << kNames[c.op];
  if (c.op == kFlock) {
    d << (c.type == LOCK_SH ? " LOCK_SH" : c.type == LOCK_EX ? " LOCK_EX" : " LOCK_UN");
  } else if (c.op <= kOfdGet) {
    d << (c.type == F_RDLCK ? " F_RDLCK" : c.type == F_WRLCK ? " F_WRLCK" : " F_UNLCK") << " " << c.start << " +"
      << (c.len == 0 ? std::string("EOF") : std::to_string(c.len));
  }
  return d.str();
}
std::string Describe(const Answer& a) {
  std::ostringstream d;
  if (a.rc != 0) return "-1 " + ErrnoName(a.err);
  d << "ok";
  if (a.getlk) {
    d << ", " << (a.type == F_UNLCK ? "no conflict" : a.type == F_RDLCK ? "F_RDLCK" : "F_WRLCK");
    if (a.type != F_UNLCK) d << " " << a.start << " +" << a.len << " pid " << a.pid;
  }
  return d.str();
}

// A child's descriptors on one file.
struct Fds {
  int posix = -1, ofd = -1, flock = -1, spare = -1;
};
int OpenRw(const std::string& path) { return open(path.c_str(), O_RDWR | O_CLOEXEC); }

Answer Run(const Call& c, Fds& fds, const std::string& path) {
  Answer a;
  auto result = [&a](int rc) {
    a.rc = rc < 0 ? -1 : 0;
    a.err = rc < 0 ? errno : 0;
  };
  struct flock fl {};
  fl.l_type = c.type;
  fl.l_whence = SEEK_SET;
  fl.l_start = c.start;
  fl.l_len = c.len;
  auto reopen = [&](int* fd) {
    close(*fd);
    *fd = OpenRw(path);
    result(*fd);
  };
  switch (c.op) {
    case kPosixSet: result(fcntl(fds.posix, F_SETLK, &fl)); break;
    case kOfdSet: result(fcntl(fds.ofd, F_OFD_SETLK, &fl)); break;
    case kPosixGet:
    case kOfdGet: {
      const bool ofd = c.op == kOfdGet;
      result(fcntl(ofd ? fds.ofd : fds.posix, ofd ? F_OFD_GETLK : F_GETLK, &fl));
      a.getlk = true;
      a.type = fl.l_type;
      if (fl.l_type != F_UNLCK) {
        a.start = fl.l_start;
        a.len = fl.l_len;
        a.pid = fl.l_pid;
      }
      break;
    }
    case kFlock: result(flock(fds.flock, c.type | LOCK_NB)); break;
    case kReopenPosix: reopen(&fds.posix); break;
    case kReopenOfd: reopen(&fds.ofd); break;
    case kReopenFlock: reopen(&fds.flock); break;
    default: reopen(&fds.spare); break;
  }
  return a;
}

// The child: serves calls from the parent until the pipe closes.
[[noreturn]] void ChildLoop(int cmd_fd, int reply_fd, const std::string& on_mount, const std::string& on_tmpfs) {
  Fds mount_fds, tmpfs_fds;
  for (auto [fds, path] : {std::pair<Fds*, const std::string*>{&mount_fds, &on_mount}, {&tmpfs_fds, &on_tmpfs}}) {
    fds->posix = OpenRw(*path);
    fds->ofd = OpenRw(*path);
    fds->flock = OpenRw(*path);
    fds->spare = OpenRw(*path);
    if (fds->posix < 0 || fds->ofd < 0 || fds->flock < 0 || fds->spare < 0) _exit(2);
  }
  Call c;
  while (read(cmd_fd, &c, sizeof(c)) == static_cast<ssize_t>(sizeof(c))) {
    Reply r;
    r.mount = Run(c, mount_fds, on_mount);
    r.reference = Run(c, tmpfs_fds, on_tmpfs);
    if (write(reply_fd, &r, sizeof(r)) != static_cast<ssize_t>(sizeof(r))) _exit(3);
  }
  _exit(0);
}

struct LockConfig {
  const char* name;
  std::vector<std::string> flags;
};
void PrintTo(const LockConfig& c, std::ostream* os) { *os << c.name; }
LockConfig Passthrough(const char* name, const std::vector<std::string>& extra) {
  return {name, PassthroughFlags(name, extra)};
}

class LockDiffTest : public MountTest, public ::testing::WithParamInterface<LockConfig> {
 protected:
  std::vector<std::string> DaemonFlags() const override {
    return WithFlags({"--size=256M"}, GetParam().flags);
  }
  void SetUp() override {
    MountTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    char tmpl[] = "/dev/shm/efuse-lockdiff-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << ErrnoName(errno);
    reference_ = tmpl;
  }
  void TearDown() override {
    for (Child& c : children_) {
      if (c.cmd >= 0) close(c.cmd);
      if (c.reply >= 0) close(c.reply);
      if (c.pid > 0) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, nullptr, 0);
      }
    }
    children_.clear();
    if (!reference_.empty()) (void)std::system(("rm -rf '" + reference_ + "'").c_str());
    MountTest::TearDown();
  }

  struct Child {
    pid_t pid = -1;
    int cmd = -1, reply = -1;
  };
  std::vector<Child> children_;
  std::string reference_;
};

TEST_P(LockDiffTest, RandomLockCallsMatchTmpfs) {
  const std::string on_mount = Path("locked"), on_tmpfs = reference_ + "/locked";
  for (const std::string& p : {on_mount, on_tmpfs}) {
    std::string error;
    ASSERT_TRUE(WriteFile(p, std::string(100, 'x'), &error)) << error;
  }
  for (int k = 0; k < kChildren; ++k) {
    int cmd[2], reply[2];
    ASSERT_SYS(pipe2(cmd, O_CLOEXEC));
    ASSERT_SYS(pipe2(reply, O_CLOEXEC));
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << ErrnoName(errno);
    if (pid == 0) {
      close(cmd[1]);
      close(reply[0]);
      alarm(300);
      ChildLoop(cmd[0], reply[1], on_mount, on_tmpfs);
    }
    close(cmd[0]);
    close(reply[1]);
    children_.push_back({pid, cmd[1], reply[0]});
  }

  std::mt19937_64 rng(Seed());
  auto below = [&rng](uint64_t n) { return static_cast<int>(std::uniform_int_distribution<uint64_t>(0, n - 1)(rng)); };
  std::deque<std::string> trace;
  int answers[kOps] = {};  // calls that succeeded, per kind
  int conflicts = 0;       // calls refused, or GETLKs that found a lock
  int named_holders = 0, unnamed_holders = 0;  // POSIX F_GETLK meeting a POSIX holder
  for (int i = 0; i < kCalls; ++i) {
    const int k = below(kChildren);
    Call c;
    // Lock calls mostly; a reopen now and then.
    c.op = below(20);
    c.op = c.op < 5 ? kPosixSet : c.op < 7 ? kPosixGet : c.op < 11 ? kOfdSet : c.op < 13 ? kOfdGet
         : c.op < 16 ? kFlock : kReopenPosix + (c.op - 16);
    if (c.op == kFlock) {
      static constexpr short kFlockTypes[] = {LOCK_SH, LOCK_EX, LOCK_UN};
      c.type = kFlockTypes[below(3)];
    } else {
      static constexpr short kTypes[] = {F_RDLCK, F_WRLCK, F_UNLCK};
      c.type = kTypes[below(3)];
      if ((c.op == kPosixGet || c.op == kOfdGet) && c.type == F_UNLCK) c.type = F_WRLCK;  // asks about a lock
      c.start = below(100);
      c.len = below(4) == 0 ? 0 : 1 + below(30);
    }
    Reply r;
    ASSERT_EQ(write(children_[k].cmd, &c, sizeof(c)), static_cast<ssize_t>(sizeof(c)));
    ASSERT_EQ(read(children_[k].reply, &r, sizeof(r)), static_cast<ssize_t>(sizeof(r)))
        << "child " << k << " died";
    // Holders' pids are compared for POSIX F_GETLK meeting a POSIX lock only.
    // A lock held through an OFD description belongs to no process (the
    // kernel says pid -1), but FUSE cannot tell the daemon a lock is OFD, so
    // the mount names the process that took it; and the kernel answers an
    // F_OFD_GETLK on FUSE with pid -1 whoever holds the lock (the answer
    // keeps the asking lock's OFD flag), where tmpfs names POSIX holders.
    if (r.reference.pid == -1 || c.op == kOfdGet) r.mount.pid = r.reference.pid = -1;
    // Where several owners could hold the lock found, the daemon cannot tell
    // which (it asks the source from each owner's side) and names none: pid
    // 0, counted. A wrong pid is never accepted.
    if (r.mount.pid == 0 && r.reference.pid > 0 && r.mount.rc == 0 && r.mount.getlk) {
      ++unnamed_holders;
      r.mount.pid = r.reference.pid;
    }
    // POSIX holders are processes: name them by child number on both sides.
    for (Answer* a : {&r.mount, &r.reference}) {
      for (int j = 0; j < kChildren; ++j) {
        if (a->pid == children_[j].pid) a->pid = 1000 + j;
      }
    }
    trace.push_back(std::to_string(i + 1) + ": child " + std::to_string(k) + " " + Describe(c) + " -> " +
                    Describe(r.reference));
    if (trace.size() > 30) trace.pop_front();
    if (!(r.mount == r.reference)) {
      std::ostringstream m;
      m << Describe(c) << " by child " << k << ": the mount gave " << Describe(r.mount) << ", tmpfs gave "
        << Describe(r.reference) << "\n  config " << GetParam().name << ", seed " << Seed()
        << " (holders named 1000 + child); last calls:\n";
      for (const std::string& t : trace) m << "    " << t << "\n";
      FAIL() << m.str();
    }
    if (r.reference.rc == 0) ++answers[c.op];
    if (r.reference.pid > 0) ++named_holders;
    if (r.reference.rc != 0 || (r.reference.type != 0 && r.reference.type != F_UNLCK)) ++conflicts;
  }
  // The sequence did what it is for: every kind of call succeeded somewhere
  // and many met another process's lock.
  for (int op = 0; op < kOps; ++op) EXPECT_GT(answers[op], 0) << Describe(Call{op});
  EXPECT_GT(conflicts, kCalls / 10);
  // Most holders are named: only locks several owners could hold are not.
  EXPECT_LE(unnamed_holders * 4, named_holders) << unnamed_holders << " of " << named_holders;
  std::cout << "  " << conflicts << " of " << kCalls << " calls met another lock; F_GETLK named "
            << named_holders - unnamed_holders << " of " << named_holders << " POSIX holders" << std::endl;
}

INSTANTIATE_TEST_SUITE_P(
    Diff, LockDiffTest,
    ::testing::Values(
        // memfs leaves locks to the kernel (it answers no lock request)
        LockConfig{"memfs", {"--memfs_data=daemon"}},
        // so does memfs with its data in a private tmpfs
        LockConfig{"memfs_kernel_data", {"--memfs_data=kernel"}},
        // passthrough carries them to the source file (--source_locks)
        Passthrough("disk_passthrough", {}),
        Passthrough("tmpfs_daemon_io", {"--passthrough=off", "--writeback_cache=false"})),
    [](const ::testing::TestParamInfo<LockConfig>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace efuse::testing
