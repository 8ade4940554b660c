// tests/mount/lifecycle_test.cc — how efused starts, stops and fails.
//
// Signals (clean exit 0 with the mount gone; a lazy unmount that keeps
// serving open files; a second signal that aborts), SIGKILL (a dead mount
// that fails fast with ENOTCONN and that `efusectl umount` removes), an
// external umount, and command lines that must be refused at once with one
// line naming the culprit.
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// Waits until `mountpoint` leaves /proc/self/mountinfo.
bool WaitUnmounted(const std::string& mountpoint, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (FindMount(mountpoint)) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

std::string ErrorLines(const std::string& log) {
  std::istringstream in(log);
  std::string line, out;
  while (std::getline(in, line))
    if (IsDaemonErrorLine(line)) out += line + "\n";
  return out;
}

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override { EFUSE_REQUIRE_FUSE(); }
  void Write(const std::string& path, const std::string& data) {
    std::string error;
    ASSERT_TRUE(WriteFile(path, data, &error)) << error;
  }
  EfuseMount mount_;
};

class StopSignalTest : public LifecycleTest, public ::testing::WithParamInterface<int> {};

TEST_P(StopSignalTest, ExitsZeroAndUnmounts) {
  ASSERT_TRUE(mount_.Start({"--size=64M"}));
  Write(mount_.Path("f"), "data");
  const auto start = Clock::now();
  ASSERT_TRUE(mount_.Stop(GetParam()));
  EXPECT_LT(Clock::now() - start, seconds(3)) << "an idle daemon should stop at once";
  EXPECT_TRUE(ProcessesMentioning(mount_.path()).empty()) << "an efused process is left";
  EXPECT_EQ(ErrorLines(mount_.Log()), "");
}

INSTANTIATE_TEST_SUITE_P(Signals, StopSignalTest, ::testing::Values(SIGTERM, SIGINT, SIGHUP),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(sigabbrev_np(info.param));
                         });

// memfs's default (auto) keeps file data in the kernel for root, whose reads
// then never reach the daemon; --passthrough=off keeps it in the daemon.
TEST_F(LifecycleTest, MemfsDefaultKeepsItsDataInTheKernel) {
  for (const bool off : {false, true}) {
    EfuseMount m;
    ASSERT_TRUE(off ? m.Start({"--passthrough=off"}) : m.Start({}));
    const std::string data(1 << 20, 'k');
    std::string error, back;
    ASSERT_TRUE(WriteFile(m.Path("f"), data, &error)) << error;
    ASSERT_TRUE(ReadFile(m.Path("f"), &back, &error)) << error;
    EXPECT_EQ(back, data);
    std::map<std::string, uint64_t> counts;
    ASSERT_TRUE(StatusReader(&m).Counts(&counts));
    const bool private_tmpfs = m.Log().find("serving '(private tmpfs)'") != std::string::npos;
    EXPECT_EQ(private_tmpfs, !off) << m.LogForMessage();
    // The bytes went through the daemon only with --passthrough=off.
    EXPECT_EQ(counts["WRITE"] > 0, off) << "WRITE requests: " << counts["WRITE"];
    ASSERT_TRUE(m.Stop());
  }
}

TEST_F(LifecycleTest, SigtermWithAnOpenFileServesItUntilClosed) {
  ASSERT_TRUE(mount_.Start({"--size=64M"}));
  int raw;
  ASSERT_SYS(raw = open(mount_.Path("open").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  ASSERT_EQ(write(fd.get(), "before", 6), 6);
  mount_.Signal(SIGTERM);
  // The mount leaves the namespace at once (lazy unmount)...
  ASSERT_TRUE(WaitUnmounted(mount_.path(), kExitTimeout)) << mount_.LogForMessage();
  // ...but the daemon stays to serve the open file.
  std::this_thread::sleep_for(milliseconds(300));
  ASSERT_TRUE(mount_.Alive()) << "efused exited while a file was still open" << mount_.LogForMessage();
  EXPECT_EQ(pwrite(fd.get(), "after", 5, 6), 5) << ErrnoName(errno);
  char buf[32] = {};
  EXPECT_EQ(pread(fd.get(), buf, sizeof(buf), 0), 11) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, 11), "beforeafter");
  struct stat st {};
  EXPECT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, 11);
  EXPECT_SYS(fsync(fd.get()));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_TRUE(mount_.Alive());
  // Closing the last file ends the connection; the daemon exits 0.
  fd.Reset();
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status))
      << "efused still runs " << kExitTimeout.count() << " s after the last file closed"
      << mount_.LogForMessage();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "status " << status << mount_.LogForMessage();
  EXPECT_FALSE(FindMount(mount_.path()));
  EXPECT_EQ(ErrorLines(mount_.Log()), "");
}

// SIGTERM while threads are busy on the mount: descriptors keep working
// until closed (lazy unmount), paths stop resolving into the mount, nothing
// hangs, and the daemon exits 0 once the last descriptor is closed.
TEST_F(LifecycleTest, SigtermUnderLoadDrainsAndExitsZero) {
  ASSERT_TRUE(mount_.Start({"--size=256M"}));
  const std::string mnt = mount_.path();
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> fd_errors{0}, path_errors{0};
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string file = mnt + "/load" + std::to_string(t);
      int fd = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) {
        failures[t] = "open " + file + ": " + ErrnoName(errno);
        return;
      }
      const std::string block = PatternBytes(static_cast<uint64_t>(t), 64 * 1024);
      std::string back(block.size(), '\0');
      for (uint64_t i = 0; !stop.load(); ++i) {
        const off_t off = static_cast<off_t>((i % 64) * block.size());
        size_t got = 0;
        if (!PwriteAll(fd, block.data(), block.size(), off) ||
            !PreadAll(fd, back.data(), back.size(), off, &got) || got != block.size() || back != block) {
          if (failures[t].empty()) failures[t] = "I/O on an open descriptor failed: " + ErrnoName(errno);
          ++fd_errors;
          break;
        }
        // By path: found before the signal; after the lazy unmount the path
        // names the empty directory underneath, so ENOENT.
        struct stat st;
        if (stat(file.c_str(), &st) != 0 && errno != ENOENT) {
          if (failures[t].empty()) failures[t] = "stat by path: " + ErrnoName(errno);
          ++path_errors;
        }
      }
      close(fd);
    });
  }
  std::this_thread::sleep_for(milliseconds(500));
  mount_.Signal(SIGTERM);
  EXPECT_TRUE(WaitUnmounted(mnt, kExitTimeout)) << mount_.LogForMessage();
  std::this_thread::sleep_for(milliseconds(500));  // keep working on the detached mount
  EXPECT_TRUE(mount_.Alive()) << "efused left while descriptors were open" << mount_.LogForMessage();
  stop = true;
  for (auto& t : threads) t.join();
  for (const std::string& f : failures) EXPECT_EQ(f, "");
  EXPECT_EQ(fd_errors.load(), 0);
  EXPECT_EQ(path_errors.load(), 0);
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status))
      << "efused still runs after every descriptor was closed" << mount_.LogForMessage();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << mount_.LogForMessage();
  EXPECT_EQ(ErrorLines(mount_.Log()), "");
}

TEST_F(LifecycleTest, SecondSignalAbortsTheDrain) {
  // Daemon data: with kernel passthrough, a write to the open file goes to
  // the backing file the kernel holds and needs no daemon.
  ASSERT_TRUE(mount_.Start({"--size=64M", "--memfs_data=daemon"}));
  int raw;
  ASSERT_SYS(raw = open(mount_.Path("open").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  ASSERT_EQ(write(fd.get(), "x", 1), 1);
  mount_.Signal(SIGTERM);
  ASSERT_TRUE(WaitUnmounted(mount_.path(), kExitTimeout)) << mount_.LogForMessage();
  std::this_thread::sleep_for(milliseconds(200));
  ASSERT_TRUE(mount_.Alive());
  mount_.Signal(SIGTERM);
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status))
      << "a second SIGTERM must stop the daemon even with files open" << mount_.LogForMessage();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  // The open file now fails fast instead of hanging (calls that always reach
  // the daemon: a write, and a stat that bypasses the attribute cache).
  const int fd_num = fd.get();
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        alarm(5);
        CHILD_EXPECT_ERRNO(c, pwrite(fd_num, "y", 1, 4096), ENOTCONN);
        struct statx sx;
        CHILD_EXPECT_ERRNO(c, statx(fd_num, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx),
                           ENOTCONN);
      },
      nullptr, seconds(10)));
}

TEST_F(LifecycleTest, SigkillLeavesADeadMountThatEfusectlRemoves) {
  ASSERT_TRUE(mount_.Start({"--size=64M", "--telemetry=on"}));
  const std::string mnt = mount_.path();
  Write(mount_.Path("f"), "data");
  MountEntry entry;
  ASSERT_TRUE(FindMount(mnt, &entry));
  const std::string pins = "/sys/fs/bpf/efuse/" + std::to_string(entry.dev_minor);
  const std::string status_file = "/run/efuse/" + std::to_string(entry.dev_minor) + ".status";
  mount_.Signal(SIGKILL);
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status));
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_TRUE(ProcessesMentioning(mnt).empty()) << "an efused process is left";
  ASSERT_TRUE(FindMount(mnt)) << "a killed daemon cannot unmount: the dead mount stays";

  // Every call that reaches the connection fails at once with ENOTCONN; none
  // hangs (alarm as a guard). AT_STATX_FORCE_SYNC: a plain stat may still be
  // answered from the kernel's attribute cache for up to --attr_timeout.
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        alarm(5);
        const auto start = Clock::now();
        struct statx sx;
        // With the FUSE ring, the dying daemon's io_uring lets go of
        // /dev/fuse a moment after exit: a request queued in that moment
        // ends with ECONNABORTED when the connection is torn down.
        const int rc = statx(AT_FDCWD, mnt.c_str(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx);
        const int err = errno;
        CHILD_CHECK(c, rc == -1 && (err == ENOTCONN || err == ECONNABORTED));
        CHILD_EXPECT_ERRNO(c, open((mnt + "/f").c_str(), O_RDONLY), ENOTCONN);
        CHILD_EXPECT_ERRNO(c, open(mnt.c_str(), O_RDONLY | O_DIRECTORY), ENOTCONN);
        CHILD_EXPECT_ERRNO(c, mkdir((mnt + "/d").c_str(), 0755), ENOTCONN);
        CHILD_CHECK(c, Clock::now() - start < seconds(2));
      },
      nullptr, seconds(10)));
  // Once the (1 s) attribute cache has expired, so does a plain stat.
  std::this_thread::sleep_for(milliseconds(1100));
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        alarm(5);
        struct stat st;
        CHILD_EXPECT_ERRNO(c, stat(mnt.c_str(), &st), ENOTCONN);
      },
      nullptr, seconds(10)));

  CommandResult status_before = RunCommand({EFUSECTL_PATH, "status"}, seconds(10));
  EXPECT_EQ(status_before.exit_code(), 0) << status_before.Describe();
  EXPECT_NE(status_before.out.find(mnt), std::string::npos) << status_before.Describe();
  EXPECT_NE(status_before.out.find("dead"), std::string::npos) << status_before.Describe();

  struct stat pinned {};
  EXPECT_SYS(stat(pins.c_str(), &pinned));  // a killed daemon cannot unpin
  CommandResult umount = RunCommand({EFUSECTL_PATH, "umount", mnt}, seconds(10));
  EXPECT_EQ(umount.exit_code(), 0) << umount.Describe();
  EXPECT_FALSE(FindMount(mnt)) << "efusectl umount left the dead mount";
  // ... and with it what the daemon could not clean up.
  EXPECT_ERRNO(stat(pins.c_str(), &pinned), ENOENT);
  EXPECT_ERRNO(stat(status_file.c_str(), &pinned), ENOENT);

  CommandResult status_after = RunCommand({EFUSECTL_PATH, "status"}, seconds(10));
  EXPECT_EQ(status_after.exit_code(), 0) << status_after.Describe();
  EXPECT_EQ(status_after.out.find(mnt), std::string::npos) << status_after.Describe();
  // The mount point is an ordinary (empty) directory again.
  struct stat st {};
  EXPECT_SYS(stat(mnt.c_str(), &st));
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

// `efusectl status` must call a killed daemon's mount dead at once, even
// while the kernel still holds the root's attributes in its cache.
TEST_F(LifecycleTest, EfusectlStatusSeesADeadDaemonAtOnce) {
  ASSERT_TRUE(mount_.Start({"--size=64M"}));
  const std::string mnt = mount_.path();
  struct stat st {};
  ASSERT_SYS(stat(mnt.c_str(), &st));  // the kernel caches the root's attributes (1 s)
  mount_.Signal(SIGKILL);
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status));
  CommandResult r = RunCommand({EFUSECTL_PATH, "status"}, seconds(10));
  EXPECT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_NE(r.out.find(mnt), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("dead"), std::string::npos)
      << "efusectl status right after SIGKILL: " << r.Describe();
  CommandResult u = RunCommand({EFUSECTL_PATH, "umount", mnt}, seconds(10));
  EXPECT_EQ(u.exit_code(), 0) << u.Describe();
  EXPECT_FALSE(FindMount(mnt));
}

// A stuck daemon (here: SIGSTOP) must not make `efusectl status` hang; it
// should still list the mount.
TEST_F(LifecycleTest, EfusectlStatusDoesNotHangOnAStuckDaemon) {
  ASSERT_TRUE(mount_.Start({"--size=64M", "--attr_timeout=0"}));
  mount_.Signal(SIGSTOP);
  CommandResult r = RunCommand({EFUSECTL_PATH, "status"}, seconds(5));
  mount_.Signal(SIGCONT);
  EXPECT_FALSE(r.timed_out) << "efusectl status blocked on a stopped daemon: " << r.Describe();
  EXPECT_NE(r.out.find(mount_.path()), std::string::npos) << r.Describe();
  ASSERT_TRUE(mount_.Stop(SIGTERM));
}

TEST_F(LifecycleTest, ExternalUmountStopsTheDaemon) {
  ASSERT_TRUE(mount_.Start({"--size=64M"}));
  Write(mount_.Path("f"), "data");
  {
    // Busy: a plain umount is refused and the daemon carries on.
    int raw;
    ASSERT_SYS(raw = open(mount_.Path("f").c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd fd(raw);
    EXPECT_ERRNO(umount2(mount_.path().c_str(), 0), EBUSY);
    EXPECT_TRUE(mount_.Alive());
    EXPECT_TRUE(FindMount(mount_.path()));
  }
  ASSERT_SYS(umount2(mount_.path().c_str(), 0));
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status))
      << "efused still runs after its mount was unmounted" << mount_.LogForMessage();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "status " << status << mount_.LogForMessage();
  EXPECT_FALSE(FindMount(mount_.path()));
  EXPECT_EQ(ErrorLines(mount_.Log()), "");
}

// A daemon that stops answering (the test fault leaves one LOOKUP
// unanswered, core/test_faults.h): with --request_timeout the kernel aborts
// the connection, the waiting client gets ECONNABORTED instead of hanging, and
// the daemon sees the end, removes the dead mount and exits 0. The kernel
// looks every 15 s, so the client waits 15 to 30 s; never less.
TEST_F(LifecycleTest, RequestTimeoutAbortsAHungDaemon) {
  mount_.SetChildSetup([] { setenv("EFUSE_TEST_FAULTS", "no_reply_lookup=hung-lookup", 1); });
  // Passthrough, which would carry file locks to its source.
  ScratchDir source;
  ASSERT_FALSE(source.path().empty());
  ASSERT_TRUE(mount_.Start({"--fs=passthrough", "--source=" + source.path(), "--request_timeout=15"}));
  StatusReader status(&mount_);
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(status.Fresh(&kv));
  EXPECT_EQ(kv["request_timeout"], "15 s") << mount_.LogForMessage();
  Write(mount_.Path("answered"), "the daemon answers other requests");
  // Lock waits would count as hung requests: the kernel keeps the locks.
  EXPECT_NE(mount_.Log().find("file locks are kept by the kernel"), std::string::npos) << mount_.LogForMessage();
  {
    int a = open(mount_.Path("answered").c_str(), O_RDONLY | O_CLOEXEC);
    int b = open(mount_.Path("answered").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    EXPECT_EQ(flock(a, LOCK_EX | LOCK_NB), 0);
    EXPECT_ERRNO(flock(b, LOCK_EX | LOCK_NB), EWOULDBLOCK);  // still exclusive
    close(a);
    close(b);
  }
  const std::string hung = mount_.Path("hung-lookup");
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        const auto start = Clock::now();
        struct stat st;
        CHILD_EXPECT_ERRNO(c, stat(hung.c_str(), &st), ECONNABORTED);
        const auto waited = Clock::now() - start;
        CHILD_CHECK(c, waited >= seconds(14));  // the kernel's timeout, not something else
        CHILD_CHECK(c, waited <= seconds(40));
      },
      nullptr, seconds(60)))
      << mount_.LogForMessage();
  EXPECT_NE(mount_.Log().find("LOOKUP 'hung-lookup'"), std::string::npos) << mount_.LogForMessage();
  int exit_status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &exit_status))
      << "efused still runs after the kernel aborted its connection" << mount_.LogForMessage();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << "status " << exit_status << mount_.LogForMessage();
  EXPECT_FALSE(FindMount(mount_.path())) << "the aborted mount is left behind";
}

TEST_F(LifecycleTest, EfusectlStatusListsALiveMount) {
  ASSERT_TRUE(mount_.Start({"--size=64M"}));
  CommandResult r = RunCommand({EFUSECTL_PATH, "status"}, seconds(10));
  EXPECT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_NE(r.out.find(mount_.path()), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("serving"), std::string::npos) << r.Describe();
  ASSERT_TRUE(mount_.Stop(SIGTERM));
}

// ---------------------------------------------------------------------------
// Bad command lines: refused quickly, exit status non-zero, exactly one line
// on stderr naming the culprit, nothing mounted. No privileges needed.

struct BadCase {
  const char* name;
  std::vector<std::string> args;  // "MNT", "MNT2", "FILE", "MISSING" are replaced
  std::string culprit;            // likewise
};
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class BadCommandLineTest : public ::testing::TestWithParam<BadCase> {
 protected:
  void SetUp() override {
    char d1[] = "/tmp/efuse-bad-XXXXXX";
    char d2[] = "/tmp/efuse-bad-XXXXXX";
    ASSERT_NE(mkdtemp(d1), nullptr);
    ASSERT_NE(mkdtemp(d2), nullptr);
    mnt_ = d1;
    mnt2_ = d2;
    file_ = mnt2_ + "/plain-file";
    std::string error;
    ASSERT_TRUE(WriteFile(file_, "not a directory", &error)) << error;
  }
  void TearDown() override {
    for (const std::string& m : {mnt_, mnt2_}) {
      if (!m.empty() && FindMount(m)) {
        ADD_FAILURE() << "the refused command line mounted " << m;
        umount2(m.c_str(), MNT_DETACH);
      }
    }
    unlink(file_.c_str());
    rmdir(mnt_.c_str());
    rmdir(mnt2_.c_str());
  }
  std::string Subst(const std::string& s) const {
    if (s == "MNT") return mnt_;
    if (s == "MNT2") return mnt2_;
    if (s == "FILE") return file_;
    if (s == "MISSING") return "/nonexistent-efuse-dir/mnt";
    return s;
  }
  std::string mnt_, mnt2_, file_;
};

TEST_P(BadCommandLineTest, RefusedWithOneLineNamingTheCulprit) {
  const BadCase& c = GetParam();
  std::vector<std::string> argv = {EFUSED_PATH};
  for (const std::string& a : c.args) argv.push_back(Subst(a));
  const std::string culprit = Subst(c.culprit);
  CommandResult r = RunCommand(argv, seconds(10));
  ASSERT_FALSE(r.timed_out) << r.Describe();
  EXPECT_NE(r.exit_code(), 0) << r.Describe();
  EXPECT_TRUE(WIFEXITED(r.status)) << "must exit, not crash: " << r.Describe();
  EXPECT_LT(r.seconds, 3.0) << "must be refused quickly";
  std::vector<std::string> lines;
  std::istringstream in(r.err);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(line);
  EXPECT_EQ(lines.size(), 1u) << "want exactly one line on stderr; " << r.Describe();
  EXPECT_NE(r.err.find(culprit), std::string::npos)
      << "stderr should name '" << culprit << "'; " << r.Describe();
}

INSTANTIATE_TEST_SUITE_P(
    Efused, BadCommandLineTest,
    ::testing::Values(
        BadCase{"UnknownFlag", {"--bogus_flag=1", "MNT"}, "bogus_flag"},
        BadCase{"UnknownMountOption", {"-o", "bogus", "MNT"}, "bogus"},
        BadCase{"BadMountOptionValue", {"-o", "allow_other,max_read=lots", "MNT"}, "max_read=lots"},
        BadCase{"BadSizeSuffix", {"--size=12Q", "MNT"}, "12Q"},
        BadCase{"UnknownFs", {"--fs=zfs", "MNT"}, "zfs"},
        BadCase{"BadLogLevel", {"--log_level=loud", "MNT"}, "loud"},
        BadCase{"NegativeWorkers", {"--workers=-1", "MNT"}, "--workers"},
        BadCase{"NegativeTimeout", {"--attr_timeout=-1", "MNT"}, "--attr_timeout"},
        BadCase{"BadTelemetryMode", {"--telemetry=maybe", "MNT"}, "--telemetry"},
        BadCase{"PollTooLong", {"--poll_us=20000", "MNT"}, "--poll_us"},
        BadCase{"MetricsFileInAMissingDirectory", {"--metrics_file=/nonexistent/dir/m.prom", "MNT"}, "/nonexistent/dir/"},
        BadCase{"MetricsIntervalZero", {"--metrics_interval=0", "MNT"}, "--metrics_interval"},
        BadCase{"UnknownMemfsData", {"--memfs_data=disk", "MNT"}, "--memfs_data"},
        BadCase{"SupervisedFuseRing", {"--supervise=on", "--transport=uring", "MNT"}, "--transport=uring"},
        BadCase{"BadSupervise", {"--supervise=maybe", "MNT"}, "--supervise"},
        BadCase{"KernelMemfsDataWithPassthroughOff", {"--memfs_data=kernel", "--passthrough=off", "MNT"},
                "--passthrough=off"},
        BadCase{"RequestTimeoutTooLong", {"--request_timeout=70000", "MNT"}, "--request_timeout"},
        BadCase{"BadOffloadMode", {"--offload=sometimes", "MNT"}, "--offload"},
        BadCase{"TimeEveryNotAPowerOfTwo", {"--telemetry_time_every=3", "MNT"}, "--telemetry_time_every"},
        BadCase{"NotNameValueInConfig", {"--config", "FILE", "MNT"}, "FILE"},
        BadCase{"MissingConfig", {"--config", "MISSING", "MNT"}, "MISSING"},
        BadCase{"BadOptionValueAsMountOption", {"-o", "allow_other,attr_timeout=soon", "MNT"}, "attr_timeout"},
        BadCase{"OptionWithoutValueAsMountOption", {"-o", "size", "MNT"}, "size"},
        BadCase{"MissingMountPoint", {"--size=64M"}, "mount point"},
        BadCase{"MountPointIsAFile", {"FILE"}, "FILE"},
        BadCase{"MountPointDoesNotExist", {"MISSING"}, "MISSING"},
        BadCase{"TwoMountPoints", {"MNT", "MNT2"}, "MNT2"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

// The option table (tools/efused/options.h): --help shows every option of
// efused with its default, checked against absl's own listing of the same
// flags (--helpfull); --version; the README names every option.
struct HelpfullOption {
  std::string name;
  std::string default_value;
};
std::vector<HelpfullOption> OptionsFromHelpfull() {
  CommandResult r = RunCommand({EFUSED_PATH, "--helpfull"}, seconds(10));
  std::vector<HelpfullOption> out;
  std::istringstream in(r.out + r.err);
  std::string line, entry;
  bool ours = false;
  auto finish = [&] {
    if (entry.empty()) return;
    HelpfullOption o;
    o.name = entry.substr(0, entry.find(' '));
    const size_t d = entry.rfind("default: ");
    if (d != std::string::npos) {
      o.default_value = entry.substr(d + 9, entry.find(';', d) - d - 9);
      if (o.default_value.size() >= 2 && o.default_value.front() == '"') {
        o.default_value = o.default_value.substr(1, o.default_value.size() - 2);
      }
    }
    out.push_back(o);
    entry.clear();
  };
  while (std::getline(in, line)) {
    if (line.find("Flags from ") != std::string::npos) {
      finish();
      ours = line.find("tools/efused/cli.cc") != std::string::npos;
      continue;
    }
    if (!ours) continue;
    if (line.rfind("    --", 0) == 0) {
      finish();
      entry = line.substr(6);
    } else if (!entry.empty() && line.find_first_not_of(' ') != std::string::npos) {
      entry += " " + line.substr(line.find_first_not_of(' '));
    }
  }
  finish();
  return out;
}

TEST(OptionTableTest, HelpShowsEveryOptionWithItsDefault) {
  const std::vector<HelpfullOption> options = OptionsFromHelpfull();
  ASSERT_GE(options.size(), 30u) << "absl's listing of efused's flags";
  CommandResult r = RunCommand({EFUSED_PATH, "--help"}, seconds(10));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out.find("No flags matched"), std::string::npos);
  for (const HelpfullOption& o : options) {
    const std::string head = o.name == "o" ? "  -o OPTIONS" : "  --" + o.name;
    const size_t at = r.out.find("\n" + head);
    ASSERT_NE(at, std::string::npos) << "--help lacks " << head << "\n" << r.out;
    const std::string line = r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1);
    const std::string want = o.default_value.empty() ? "(default \"\")" : "(default " + o.default_value + ")";
    EXPECT_NE(line.find(want), std::string::npos) << line << " should show " << want;
  }
  for (const char* group : {"general:", "memfs:", "passthrough:", "transport:", "telemetry:", "offload:"}) {
    EXPECT_NE(r.out.find(std::string("\n") + group + "\n"), std::string::npos) << group;
  }
}

TEST(OptionTableTest, VersionNamesReleaseCommitAndProtocol) {
  CommandResult r = RunCommand({EFUSED_PATH, "--version"}, seconds(10));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  // "efused 0.1.0 (git 1a2b3c4d5e6f), FUSE protocol 7.45"
  std::istringstream in(r.out);
  std::string name, version, git, commit, fuse, protocol, minor;
  in >> name >> version >> git >> commit >> fuse >> protocol >> minor;
  EXPECT_EQ(name, "efused");
  EXPECT_EQ(std::count(version.begin(), version.end(), '.'), 2) << r.out;
  EXPECT_EQ(git, "(git");
  EXPECT_GE(commit.size(), 8u) << r.out;
  EXPECT_EQ(protocol, "protocol");
  EXPECT_EQ(minor.rfind("7.", 0), 0u) << r.out;
  EXPECT_GE(std::atoi(minor.c_str() + 2), 31) << r.out;
}

TEST(OptionTableTest, ReadmeNamesEveryOption) {
  std::string readme, error;
  ASSERT_TRUE(ReadFile(EFUSE_SOURCE_DIR "/README.md", &readme, &error)) << error;
  for (const HelpfullOption& o : OptionsFromHelpfull()) {
    const std::string want = o.name == "o" ? "`-o`" : "--" + o.name;
    EXPECT_NE(readme.find(want), std::string::npos) << "README.md does not name " << want;
  }
  for (const char* extra : {"--help", "--version"}) EXPECT_NE(readme.find(extra), std::string::npos) << extra;
}

// Any option as a mount option (how mount(8) and fstab pass them) and as a
// line of a --config file; the command line overrides the file.
class OptionSourcesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EFUSE_REQUIRE_FUSE();
    char d[] = "/tmp/efuse-optsrc-XXXXXX";
    ASSERT_NE(mkdtemp(d), nullptr);
    source_ = d;
    ASSERT_EQ(chmod(d, 0755), 0);  // the mount's root: others may enter it
    std::string error;
    ASSERT_TRUE(WriteFile(source_ + "/in-source", "x", &error)) << error;
  }
  void TearDown() override { (void)std::system(("rm -rf '" + source_ + "'").c_str()); }
  std::map<std::string, std::string> Status(EfuseMount& m) {
    std::map<std::string, std::string> kv;
    EXPECT_TRUE(StatusReader(&m).Fresh(&kv));
    return kv;
  }
  std::string Fs(EfuseMount& m) { return Status(m)["fs"]; }
  std::string source_;
};

TEST_F(OptionSourcesTest, MountOptionsSetEfusedOptions) {
  EfuseMount m;
  ASSERT_TRUE(m.Start({"-o", "fs=passthrough,source=" + source_ + ",allow_other,noreaddir_ahead,attr_timeout=5"}));
  std::map<std::string, std::string> kv = Status(m);
  EXPECT_EQ(kv["fs"], "passthrough");
  EXPECT_EQ(kv.count("pt_readdir_ahead_dirs"), 0u) << "noreaddir_ahead turned it off";
  struct stat st {};
  EXPECT_EQ(stat(m.Path("in-source").c_str(), &st), 0) << "the source is served";
  // allow_other, a mount option proper, still reached the mount.
  const Creds other{4321, 4321, {}};
  const std::string path = m.Path("in-source");
  EXPECT_TRUE(RunInChild([&](ChildChecks& c) {
    struct stat s {};
    CHILD_EXPECT_OK(c, stat(path.c_str(), &s));
  }, &other));
  ASSERT_TRUE(m.Stop());
}

TEST_F(OptionSourcesTest, ConfigFileSetsOptionsTheCommandLineOverrides) {
  const std::string config = source_ + ".conf";
  std::string error;
  ASSERT_TRUE(WriteFile(config, "# efused options\n\nfs = passthrough\nsource=" + source_ + "\nsize=12Q\n", &error))
      << error;
  {
    EfuseMount m;
    // --size=64M on the command line wins over the file's bad size.
    ASSERT_TRUE(m.Start({"--config=" + config, "--size=64M"}));
    EXPECT_EQ(Fs(m), "passthrough");
    ASSERT_TRUE(m.Stop());
  }
  unlink(config.c_str());
}

// mount(8) and fstab through tools/efused/mount.fuse.efuse: mount(8) finds
// helpers in /sbin, so the test links the built one there (the machine is
// the test's; the link goes when the test ends).
class MountHelperTest : public ::testing::Test {
 protected:
  static constexpr const char* kHelperLink = "/usr/sbin/mount.fuse.efuse";
  void SetUp() override {
    EFUSE_REQUIRE_FUSE();
    const std::string built = std::string(EFUSED_PATH).substr(0, std::string(EFUSED_PATH).rfind('/')) +
                              "/mount.fuse.efuse";
    // Another build's link (a run that died half-way) is set aside and put
    // back; an installed helper (a real file) is left alone and fails.
    char target[4096] = {};
    const ssize_t n = readlink(kHelperLink, target, sizeof target - 1);
    if (n >= 0 && std::string(target, n) != built) {
      previous_ = std::string(target, n);
      ASSERT_EQ(unlink(kHelperLink), 0) << ErrnoName(errno);
    }
    if (n < 0 || !previous_.empty()) {
      ASSERT_EQ(symlink(built.c_str(), kHelperLink), 0)
          << kHelperLink << ": " << ErrnoName(errno) << " (an installed helper is in the way)";
      linked_ = true;
    }
    char m[] = "/tmp/efuse-helper-mnt-XXXXXX";
    char d[] = "/tmp/efuse-helper-src-XXXXXX";
    ASSERT_NE(mkdtemp(m), nullptr);
    ASSERT_NE(mkdtemp(d), nullptr);
    mnt_ = m;
    source_ = d;
    ASSERT_EQ(chmod(d, 0755), 0);
    std::string error;
    ASSERT_TRUE(WriteFile(source_ + "/in-source", "from the source", &error)) << error;
  }
  void TearDown() override {
    if (!mnt_.empty() && FindMount(mnt_)) umount2(mnt_.c_str(), MNT_DETACH);
    for (pid_t pid : ProcessesMentioning(mnt_)) kill(pid, SIGKILL);
    if (linked_) unlink(kHelperLink);
    if (!previous_.empty()) (void)!symlink(previous_.c_str(), kHelperLink);
    rmdir(mnt_.c_str());
    (void)std::system(("rm -rf '" + source_ + "'").c_str());
  }
  // The mount's line in /proc/self/mountinfo ("" when not mounted).
  std::string MountInfoLine() const {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string id, parent, dev, root, point;
      f >> id >> parent >> dev >> root >> point;
      if (point == mnt_) return line;
    }
    return "";
  }
  CommandResult Mount(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/mount");
    return RunCommand(args, seconds(20));
  }
  bool linked_ = false;
  std::string previous_;  // another build's link, put back at the end
  std::string mnt_, source_;
};

TEST_F(MountHelperTest, MountsAPassthroughWithEveryGenericOptionRemountsAndUnmounts) {
  CommandResult r = Mount({"-t", "fuse.efuse", "-o",
                           "allow_other,nodiratime,strictatime,lazytime,sync,dirsync,nosuid,nodev,noexec,"
                           "rw,suid,dev,exec,noexec,atime,diratime,nodiratime,defaults,noauto,nofail,_netdev,"
                           "x-systemd.automount,comment=x,attr_timeout=5,readdir_ahead=false",
                           source_, mnt_});
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  const std::string info = MountInfoLine();
  ASSERT_FALSE(info.empty()) << "mount(8) returned before the mount was live";
  for (const char* want : {"nodiratime", "noexec", "fuse.efuse " , "sync", "dirsync", "lazytime", "allow_other"}) {
    EXPECT_NE(info.find(want), std::string::npos) << want << " in " << info;
  }
  EXPECT_NE(info.find(" " + source_ + " "), std::string::npos) << "the source names the mount: " << info;
  std::string data, error;
  ASSERT_TRUE(ReadFile(mnt_ + "/in-source", &data, &error)) << error;
  EXPECT_EQ(data, "from the source");
  // Supervised by default: a supervisor, its server (and, once that
  // serves, a standby). The supervisor is the one whose parent is not listed.
  auto parent_of = [](pid_t pid) {
    std::string stat, error;
    if (!ReadFile("/proc/" + std::to_string(pid) + "/stat", &stat, &error)) return pid_t{0};
    std::istringstream after_comm(stat.substr(stat.rfind(')') + 1));  // "pid (comm) state ppid ..."
    std::string state;
    pid_t parent = 0;
    after_comm >> state >> parent;
    return parent;
  };
  auto supervisors = [&](const std::vector<pid_t>& daemons) {
    std::vector<pid_t> roots;
    for (pid_t pid : daemons) {
      const pid_t parent = parent_of(pid);  // 0: gone since it was listed
      if (parent != 0 && std::find(daemons.begin(), daemons.end(), parent) == daemons.end()) roots.push_back(pid);
    }
    return roots;
  };
  const std::vector<pid_t> daemons = ProcessesMentioning(mnt_);
  ASSERT_GE(daemons.size(), 2u);
  const std::vector<pid_t> supervisor = supervisors(daemons);
  ASSERT_EQ(supervisor.size(), 1u);
  // A remount changes the live mount; no other daemon starts.
  r = Mount({"-o", "remount,ro", mnt_});
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(open((mnt_ + "/new").c_str(), O_WRONLY | O_CREAT, 0644), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(supervisors(ProcessesMentioning(mnt_)), supervisor);
  // Its server (and standby) killed, a successor serves the fstab mount.
  for (pid_t pid : ProcessesMentioning(mnt_)) {
    if (pid != supervisor[0]) {
      EXPECT_TRUE(kill(pid, SIGKILL) == 0 || errno == ESRCH) << ErrnoName(errno);
    }
  }
  data.clear();
  ASSERT_TRUE(ReadFile(mnt_ + "/in-source", &data, &error)) << error;
  EXPECT_EQ(data, "from the source");
  // umount stops the daemon.
  r = RunCommand({"/usr/bin/umount", mnt_}, seconds(20));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_TRUE(MountInfoLine().empty());
  for (int i = 0; i < 200 && !ProcessesMentioning(mnt_).empty(); ++i) usleep(10000);
  EXPECT_TRUE(ProcessesMentioning(mnt_).empty()) << "efused outlived its mount";
}

TEST_F(MountHelperTest, AnFstabLineMountsMemfs) {
  const std::string fstab = source_ + "/fstab";
  std::string error;
  ASSERT_TRUE(WriteFile(fstab, "# efuse\nmemfs " + mnt_ + " fuse.efuse size=64M,allow_other,default_permissions,nofail 0 0\n",
                        &error))
      << error;
  CommandResult r = Mount({"-T", fstab, mnt_});
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  const std::string info = MountInfoLine();
  EXPECT_NE(info.find("fuse.efuse memfs "), std::string::npos) << info;
  ASSERT_TRUE(WriteFile(mnt_ + "/hello", "in memory", &error)) << error;
  r = RunCommand({"/usr/bin/umount", mnt_}, seconds(20));
  EXPECT_EQ(r.exit_code(), 0) << r.Describe();
}

TEST_F(MountHelperTest, ARefusalIsOneLineAndAMountFailure) {
  struct Refused {
    std::vector<std::string> args;
    std::string culprit;
  };
  for (const Refused& c :
       {Refused{{"-t", "fuse.efuse", "-o", "allow_other,attr_timeout=soon", "memfs", mnt_}, "attr_timeout"},
        Refused{{"-t", "fuse.efuse", "-o", "bogus_word", "memfs", mnt_}, "bogus_word"},
        Refused{{"-t", "fuse.efuse", "/nonexistent-efuse-source", mnt_}, "/nonexistent-efuse-source"}}) {
    CommandResult r = Mount(c.args);
    EXPECT_EQ(r.exit_code(), 32) << r.Describe();
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.Describe();
    EXPECT_NE(r.err.find(c.culprit), std::string::npos) << r.Describe();
    EXPECT_TRUE(MountInfoLine().empty());
  }
}

TEST(OptionTableTest, ManPageDescribesEveryOption) {
  CommandResult r = RunCommand({EFUSED_PATH, "--man"}, seconds(10));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out.rfind(".TH EFUSED 8", 0), 0u) << r.out.substr(0, 200);
  for (const HelpfullOption& o : OptionsFromHelpfull()) {
    std::string roff_name;
    for (char c : o.name) roff_name += c == '-' ? std::string("\\-") : std::string(1, c);
    const std::string want = o.name == "o" ? "\\-o " : "\\-\\-" + roff_name;
    EXPECT_NE(r.out.find(want), std::string::npos) << "efused(8) lacks " << o.name;
  }
}

// The template unit passes systemd's own checker (systemd is installed but
// not PID 1 here: units cannot start, but verify reads them whole).
TEST(ServiceUnitTest, TemplateUnitVerifies) {
  char d[] = "/tmp/efuse-unit-XXXXXX";
  ASSERT_NE(mkdtemp(d), nullptr);
  const std::string dir = d;
  std::string unit, error;
  ASSERT_TRUE(ReadFile(EFUSE_SOURCE_DIR "/tools/efused/efused@.service", &unit, &error)) << error;
  // The binary it names must exist: the built one stands in for the
  // installed one systemd would find by its bare name.
  const std::string installed = "ExecStart=efused ";
  const size_t at = unit.find(installed);
  ASSERT_NE(at, std::string::npos) << unit;
  unit.replace(at, installed.size(), std::string("ExecStart=") + EFUSED_PATH + " ");
  ASSERT_TRUE(WriteFile(dir + "/efused@.service", unit, &error)) << error;
  const std::string efused_dir = std::string(EFUSED_PATH).substr(0, std::string(EFUSED_PATH).rfind('/'));
  const std::string efusectl_dir = std::string(EFUSECTL_PATH).substr(0, std::string(EFUSECTL_PATH).rfind('/'));
  CommandResult r = RunCommand({"/usr/bin/env", "MANPATH=" + efused_dir + ":" + efusectl_dir, "SYSTEMD_LOG_LEVEL=notice",
                                "/usr/bin/systemd-analyze", "verify", dir + "/efused@mnt-data.service"},
                               seconds(60));
  EXPECT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out + r.err, "") << r.Describe();
  unlink((dir + "/efused@.service").c_str());
  rmdir(d);
}

// The service manager's notify protocol (sd_notify): a listener speaking
// it, as systemd does, on the socket $NOTIFY_SOCKET names.
class NotifyListener {
 public:
  // `name`: a path, or "@abstract".
  explicit NotifyListener(const std::string& name) : name_(name) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    if (name[0] == '@') {
      addr.sun_path[0] = '\0';
    } else {
      unlink(name.c_str());
      ++len;
    }
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0;
  }
  ~NotifyListener() {
    close(fd_);
    if (name_[0] != '@') unlink(name_.c_str());
  }
  bool bound() const { return bound_; }
  // The next datagram holding `key`, within `timeout` ("" if none came).
  std::string WaitFor(const std::string& key, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return "";
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      std::string message(buf, static_cast<size_t>(n));
      received_.push_back(message);
      if (("\n" + message + "\n").find("\n" + key + "\n") != std::string::npos ||
          ("\n" + message).find("\n" + key) != std::string::npos) {
        return message;
      }
    }
  }
  const std::vector<std::string>& received() const { return received_; }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
  std::vector<std::string> received_;
};

// Sets an environment variable for the daemons started in its scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) { setenv(name, value.c_str(), 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

class ServiceNotifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EFUSE_REQUIRE_FUSE();
    char d[] = "/tmp/efuse-notify-XXXXXX";
    ASSERT_NE(mkdtemp(d), nullptr);
    dir_ = d;
  }
  void TearDown() override { rmdir(dir_.c_str()); }
  std::string dir_;
};

TEST_F(ServiceNotifyTest, ReadyOnceServingThenStopping) {
  NotifyListener listener(dir_ + "/notify");
  ASSERT_TRUE(listener.bound()) << ErrnoName(errno);
  EfuseMount m;
  // A service's efused is its main process (unsupervised, unless told
  // --supervise=systemd), whatever the default.
  m.LeaveSupervisionToTheDefault();
  {
    ScopedEnv env("NOTIFY_SOCKET", dir_ + "/notify");
    ASSERT_TRUE(m.Start({"--size=64M"}));
  }
  const std::string ready = listener.WaitFor("READY=1", seconds(10));
  ASSERT_FALSE(ready.empty()) << "no READY=1; got " << listener.received().size() << " messages";
  EXPECT_NE(ready.find("MAINPID=" + std::to_string(m.pid())), std::string::npos) << ready;
  // (Said for the service, or on the uring transport for the FUSE ring.)
  EXPECT_NE(m.Log().find(": not supervised"), std::string::npos) << m.LogForMessage();
  EXPECT_NE(ready.find("STATUS=serving memfs at " + m.path()), std::string::npos) << ready;
  struct stat st {};
  EXPECT_EQ(stat(m.path().c_str(), &st), 0) << "READY=1 means INIT is answered";
  ASSERT_TRUE(m.Stop(SIGTERM));
  const std::string stopping = listener.WaitFor("STOPPING=1", seconds(10));
  EXPECT_NE(stopping.find("STATUS=unmounting " + m.path()), std::string::npos) << stopping;
}

TEST_F(ServiceNotifyTest, WatchdogPingsAtHalfThePeriodOnAnAbstractSocket) {
  const std::string name = "@efuse-notify-test-" + std::to_string(getpid());
  NotifyListener listener(name);
  ASSERT_TRUE(listener.bound()) << ErrnoName(errno);
  EfuseMount m;
  {
    ScopedEnv env("NOTIFY_SOCKET", name);
    ScopedEnv watchdog("WATCHDOG_USEC", "100000");  // 100 ms: a ping each 50 ms
    ASSERT_TRUE(m.Start({"--size=64M"}));
  }
  ASSERT_FALSE(listener.WaitFor("READY=1", seconds(10)).empty());
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(listener.WaitFor("WATCHDOG=1", seconds(10)).empty()) << "ping " << i;
  }
  ASSERT_TRUE(m.Stop(SIGTERM));
}

}  // namespace
}  // namespace efuse::testing
