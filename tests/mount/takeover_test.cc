// Supervised mounts (--supervise=on): the server process dies (SIGKILL) and
// a successor takes over the live connection without unmounting. What a
// process held before the kill — an open file, a working directory, an open
// directory listing, a mapping — keeps working, with what was written there.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <deque>
#include <fstream>
#include <functional>
#include <cstring>
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The open handles a status names: the passthrough engine's (passthrough,
// memfs with kernel data) or memfs's own.
std::string OpenHandlesOf(const std::map<std::string, std::string>& kv) {
  auto it = kv.find("pt_open_handles");
  if (it == kv.end()) it = kv.find("memfs_open_handles");
  return it == kv.end() ? "(none named)" : it->second;
}

// SIGKILL to the server of supervised mount `m`; returns its pid.
pid_t KillServerOf(EfuseMount& m) {
  std::map<std::string, std::string> kv;
  EXPECT_TRUE(StatusReader(&m).Fresh(&kv));
  const pid_t server = static_cast<pid_t>(std::atol(kv["server_pid"].c_str()));
  EXPECT_GT(server, 0);
  EXPECT_NE(server, m.pid()) << "the status file names the supervisor as the server";
  if (server > 0) {
    EXPECT_EQ(kill(server, SIGKILL), 0);
  }
  return server;
}

struct TakeoverConfig {
  const char* name;
  bool passthrough;  // else memfs
  std::vector<std::string> flags;
};
void PrintTo(const TakeoverConfig& c, std::ostream* os) { *os << c.name; }

class TakeoverTest : public ::testing::TestWithParam<TakeoverConfig> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(source_.path().empty());
    ASSERT_TRUE(mount_.Start(Flags(source_)));
  }
  // The config's supervised mount, a passthrough one serving `source`.
  static std::vector<std::string> Flags(const ScratchDir& source) {
    std::vector<std::string> flags = {"--supervise=on"};
    if (GetParam().passthrough) {
      flags.push_back("--fs=passthrough");
      flags.push_back("--source=" + source.path());
    } else {
      flags.push_back("--size=256M");
    }
    flags.insert(flags.end(), GetParam().flags.begin(), GetParam().flags.end());
    return flags;
  }
  void TearDown() override {
    if (mount_.running()) {
      EXPECT_TRUE(mount_.Stop()) << mount_.LogForMessage();
    }
  }

  std::map<std::string, std::string> Status() {
    std::map<std::string, std::string> kv;
    EXPECT_TRUE(StatusReader(&mount_).Fresh(&kv));
    return kv;
  }
  // SIGKILL to the server; returns its pid.
  pid_t KillServer() { return KillServerOf(mount_); }

  int RunUnderLoad(std::chrono::seconds run, const std::function<void()>& disrupt);
  // efusectl restart into a server with test fault `fault` set: it goes back.
  void CheckAnUpgradeGoesBack(const std::string& fault);

  ScratchDir source_;
  EfuseMount mount_;
};

TEST_P(TakeoverTest, KilledServerIsSucceededWithoutUnmounting) {
  ASSERT_EQ(mkdir(mount_.Path("d").c_str(), 0755), 0);
  std::string error;
  ASSERT_TRUE(WriteFile(mount_.Path("d/f"), "before", &error)) << error;
  // More names than one READDIR carries: the listing crosses the kill.
  constexpr int kNames = 1000;
  for (int i = 0; i < kNames; ++i) {
    ASSERT_TRUE(WriteFile(mount_.Path("d/entry-with-a-longer-name-" + std::to_string(i)), "x", &error)) << error;
  }

  // What a process holds across the kill.
  const int map_fd = open(mount_.Path("d/mapped").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(map_fd, 0);
  const int fd = open(mount_.Path("d/f").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // A lock held across the kill (kept by the kernel under supervision).
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_len = 10;
  ASSERT_EQ(fcntl(fd, F_SETLK, &lock), 0) << strerror(errno);
  DIR* dir = opendir(mount_.Path("d").c_str());
  ASSERT_NE(dir, nullptr);
  std::set<std::string> listed;
  for (int i = 0; i < 5; ++i) {
    dirent* e = readdir(dir);
    ASSERT_NE(e, nullptr);
    listed.insert(e->d_name);
  }
  ASSERT_EQ(ftruncate(map_fd, 4096), 0);
  char* map = static_cast<char*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0));
  ASSERT_NE(map, MAP_FAILED);
  std::memcpy(map, "mapped", 6);
  // A process whose working directory is in the mount, waiting for a word.
  int go[2];
  ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
  const pid_t cwd_child = fork();
  ASSERT_GE(cwd_child, 0);
  if (cwd_child == 0) {
    alarm(30);
    if (chdir(mount_.Path("d").c_str()) != 0) _exit(10);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(11);
    struct stat st;
    if (stat("f", &st) != 0) _exit(12);
    const int made = open("made-by-cwd", O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (made < 0 || close(made) != 0) _exit(13);
    _exit(0);
  }
  close(go[0]);

  const pid_t old_server = KillServer();

  // Everything after this line is served by the successor (requests wait
  // in the kernel meanwhile: no sleep needed). The lock is still held.
  const std::string locked = mount_.Path("d/f");
  EXPECT_TRUE(RunInChild([&](ChildChecks& c) {
    const int other = open(locked.c_str(), O_RDWR | O_CLOEXEC);
    CHILD_CHECK(c, other >= 0);
    struct flock want {};
    want.l_type = F_WRLCK;
    want.l_whence = SEEK_SET;
    want.l_len = 10;
    CHILD_EXPECT_ERRNO(c, fcntl(other, F_SETLK, &want), EAGAIN);
  }));
  ASSERT_EQ(pwrite(fd, "after!", 6, 0), 6) << strerror(errno);
  ASSERT_EQ(pwrite(fd, "tail", 4, 100), 4) << strerror(errno);
  char buf[16] = {};
  ASSERT_EQ(pread(fd, buf, 6, 0), 6) << strerror(errno);
  EXPECT_EQ(std::string(buf, 6), "after!");
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 104);
  EXPECT_EQ(fsync(fd), 0) << strerror(errno);
  // The same file opened again while the old handle lives: both see one file.
  const int again = open(mount_.Path("d/f").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(again, 0) << strerror(errno);
  ASSERT_EQ(pwrite(again, "AFTER", 5, 0), 5) << strerror(errno);
  ASSERT_EQ(pread(fd, buf, 6, 0), 6);
  EXPECT_EQ(std::string(buf, 6), "AFTER!");
  EXPECT_EQ(close(again), 0);
  errno = 0;
  for (dirent* e; (e = readdir(dir)) != nullptr;) listed.insert(e->d_name);
  EXPECT_EQ(errno, 0) << "readdir after the kill: " << strerror(errno);
  EXPECT_EQ(listed.size(), kNames + 4u) << "the listing went on where it stopped";  // . .. f mapped
  closedir(dir);
  EXPECT_EQ(std::string(map, 6), "mapped");
  std::memcpy(map + 6, "+more", 5);
  ASSERT_EQ(msync(map, 4096, MS_SYNC), 0);
  munmap(map, 4096);
  close(map_fd);
  EXPECT_EQ(close(fd), 0);
  ASSERT_EQ(write(go[1], "g", 1), 1);
  close(go[1]);
  int status = 0;
  ASSERT_EQ(waitpid(cwd_child, &status, 0), cwd_child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "cwd child: status " << status;

  std::string back;
  ASSERT_TRUE(ReadFile(mount_.Path("d/f"), &back, &error)) << error;
  EXPECT_EQ(back.substr(0, 6), "AFTER!");
  EXPECT_EQ(back.size(), 104u);
  ASSERT_TRUE(ReadFile(mount_.Path("d/mapped"), &back, &error)) << error;
  EXPECT_EQ(back.substr(0, 11), "mapped+more");
  EXPECT_EQ(access(mount_.Path("d/made-by-cwd").c_str(), F_OK), 0);
  ASSERT_TRUE(WriteFile(mount_.Path("d/new"), "new", &error)) << error;
  ASSERT_EQ(rename(mount_.Path("d/new").c_str(), mount_.Path("renamed").c_str()), 0);
  ASSERT_EQ(unlink(mount_.Path("d/entry-with-a-longer-name-0").c_str()), 0);

  std::map<std::string, std::string> kv = Status();
  EXPECT_NE(kv["server_pid"], std::to_string(old_server));
  EXPECT_EQ(kv["server_generation"], "2");
  EXPECT_EQ(kv["takeovers"], "1");
  EXPECT_NE(mount_.Log().find("takeover: server generation 2"), std::string::npos) << mount_.LogForMessage();
}

// A request the dead server had read and never answered is sent again to
// its successor (FUSE_NOTIFY_RESEND): the caller never sees the death.
TEST_P(TakeoverTest, ARequestHeldByTheDeadServerIsResent) {
  EfuseMount m;
  ScratchDir source;
  const std::vector<std::string> flags = Flags(source);
  m.SetChildSetup([] { setenv("EFUSE_TEST_FAULTS", "no_reply_lookup=held", 1); });
  ASSERT_TRUE(m.Start(flags));
  // No such name: its LOOKUP is the held request; the successor says ENOENT.
  const std::string held = m.Path("held");
  int ready[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  const pid_t client = fork();
  ASSERT_GE(client, 0);
  if (client == 0) {
    alarm(30);
    close(ready[0]);
    if (write(ready[1], "r", 1) != 1) _exit(10);
    struct stat st;
    _exit(stat(held.c_str(), &st) != 0 && errno == ENOENT ? 0 : 11);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  // The LOOKUP is held once the first server logged it.
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (m.Log().find("left unanswered") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the LOOKUP never came" << m.LogForMessage();
    std::this_thread::sleep_for(milliseconds(5));
  }
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  const pid_t server = static_cast<pid_t>(std::atol(kv["server_pid"].c_str()));
  ASSERT_GT(server, 0);
  ASSERT_EQ(kill(server, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(client, &status, 0), client);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the held stat: status " << status
                                                              << m.LogForMessage();
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv["takeovers"], "1");
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

// Creates, writes, fsyncs, renames, unlinks, mkdir/rmdir in three
// directories and an fsync'ing appender run while `disrupt` (a kill or a
// planned restart) is called every 0.5-2 s for `run`; no client call may
// fail, and afterwards every acknowledged change is there: each kept
// name's content, each unlinked name gone, each appended record. Each
// worker keeps at most kLiveFiles files (it unlinks its oldest past that),
// so a faster machine makes more changes, never a fuller file system.
// Returns how often `disrupt` ran.
int TakeoverTest::RunUnderLoad(std::chrono::seconds run, const std::function<void()>& disrupt) {
  const auto kRun = run;
  std::atomic<bool> stop{false};
  std::vector<std::string> failures;
  std::mutex failures_mu;
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> l(failures_mu);
    if (failures.size() < 20) failures.push_back(what + ": " + strerror(errno));
  };
  // Per worker: name -> content of every acknowledged file, its names in
  // the order made, and the names acknowledged as unlinked.
  constexpr size_t kLiveFiles = 4096;
  std::vector<std::map<std::string, std::string>> acked(3);
  std::vector<std::deque<std::string>> made(3);
  std::vector<std::vector<std::string>> unlinked(3);
  std::vector<std::thread> workers;
  for (int k = 0; k < 3; ++k) {
    workers.emplace_back([&, k] {
      const std::string dir = mount_.Path("w" + std::to_string(k));
      if (mkdir(dir.c_str(), 0755) != 0) return fail("mkdir " + dir);
      auto remove = [&](const std::string& name) {
        if (unlink(name.c_str()) != 0) return false;
        acked[k].erase(name);
        unlinked[k].push_back(name);
        return true;
      };
      for (int i = 1; !stop.load(); ++i) {
        const std::string a = dir + "/f" + std::to_string(i), b = a + ".r";
        const std::string data(100 + i % 900, static_cast<char>('a' + i % 26));
        const int fd = open(a.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) return fail("create " + a);
        const bool written = write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
        if (!written) fail("write " + a);
        const bool synced = written && fsync(fd) == 0;
        if (written && !synced) fail("fsync " + a);
        if (close(fd) != 0) return fail("close " + a);
        if (!synced) return;  // (its content was never acknowledged)
        if (rename(a.c_str(), b.c_str()) != 0) return fail("rename " + a);
        acked[k][b] = data;
        if (i % 3 == 0) {
          if (!remove(b)) return fail("unlink " + b);
        } else {
          made[k].push_back(b);
        }
        if (made[k].size() > kLiveFiles) {
          if (!remove(made[k].front())) return fail("unlink " + made[k].front());
          made[k].pop_front();
        }
        if (i % 5 == 0) {
          const std::string d = dir + "/d" + std::to_string(i);
          if (mkdir(d.c_str(), 0755) != 0 || rmdir(d.c_str()) != 0) return fail("mkdir/rmdir " + d);
        }
      }
    });
  }
  // The fsync'ing writer: records appended to one open file.
  std::atomic<int> records{0};
  std::thread appender([&] {
    const int fd = open(mount_.Path("log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return fail("open log");
    for (int i = 0; !stop.load(); ++i) {
      char line[32];
      const int n = snprintf(line, sizeof(line), "record %08d\n", i);
      if (write(fd, line, static_cast<size_t>(n)) != n || fsync(fd) != 0) {
        fail("append");
        break;
      }
      records.store(i + 1);
    }
    close(fd);
  });
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> pause_ms(500, 2000);
  int kills = 0;
  for (auto end = std::chrono::steady_clock::now() + kRun; std::chrono::steady_clock::now() < end;) {
    std::this_thread::sleep_for(milliseconds(pause_ms(rng)));
    disrupt();
    ++kills;
  }
  stop.store(true);
  for (std::thread& t : workers) t.join();
  appender.join();
  for (const std::string& f : failures) ADD_FAILURE() << f;
  size_t kept = 0, gone = 0, mismatched = 0;
  for (const auto& names : acked) {
    for (const auto& [name, data] : names) {
      std::string back, error;
      const bool ok = ReadFile(name, &back, &error) && back == data;
      if (!ok && ++mismatched <= 20) {
        ADD_FAILURE() << name << ": " << (error.empty() ? std::to_string(back.size()) + " bytes, not the " +
                                                             std::to_string(data.size()) + " acknowledged"
                                                       : error);
      }
      ++kept;
    }
  }
  EXPECT_EQ(mismatched, 0u) << "acknowledged files not as written";
  for (const auto& names : unlinked) {
    for (const std::string& name : names) {
      struct stat st;
      EXPECT_TRUE(lstat(name.c_str(), &st) != 0 && errno == ENOENT) << name << " was unlinked, yet is there";
      ++gone;
    }
  }
  std::string log, error;
  EXPECT_TRUE(ReadFile(mount_.Path("log"), &log, &error)) << error;
  EXPECT_EQ(log.size(), static_cast<size_t>(records.load()) * 16) << "appended records";
  std::cout << kills << " takeovers under load, " << kept << " files kept, " << gone << " unlinked, "
            << records.load() << " records" << std::endl;
  return kills;
}

TEST_P(TakeoverTest, KillLoopUnderLoadLosesNothing) {
  const int kills = RunUnderLoad(seconds(8), [&] { KillServer(); });
  EXPECT_EQ(Status()["takeovers"], std::to_string(kills));
}

// Planned restarts (efusectl restart: the server drains and hands over)
// under the same load: nothing fails, nothing is lost, and each retiring
// server answered what it had started.
TEST_P(TakeoverTest, RestartLoopUnderLoadLosesNothing) {
  const int restarts = RunUnderLoad(seconds(8), [&] {
    CommandResult r = RunCommand({EFUSECTL_PATH, "restart", mount_.path()}, seconds(30));
    EXPECT_EQ(r.exit_code(), 0) << r.Describe();
  });
  EXPECT_EQ(Status()["takeovers"], std::to_string(restarts));
  const std::string log = mount_.Log();
  EXPECT_NE(log.find("every request being carried out was answered"), std::string::npos) << log;
  EXPECT_EQ(log.find("did not exit in time"), std::string::npos) << log;
}

// A planned upgrade: efusectl restart replaces the server with another
// binary (or the same one) and the mount, with its open files, carries on;
// a binary whose state layout differs is refused before anything happens.
TEST_P(TakeoverTest, EfusectlRestartUpgradesTheServer) {
  ScratchDir bin;
  const std::string copy = bin.path() + "/efused";
  ASSERT_EQ(RunCommand({"/bin/cp", EFUSED_PATH, copy}, seconds(10)).exit_code(), 0);
  std::string error;
  ASSERT_TRUE(WriteFile(mount_.Path("f"), "one", &error)) << error;
  const int fd = open(mount_.Path("f").c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);

  CommandResult r = RunCommand({EFUSECTL_PATH, "restart", mount_.path(), "--binary=" + copy}, seconds(20));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe() << mount_.LogForMessage();
  EXPECT_NE(r.out.find("server generation 2"), std::string::npos) << r.out;
  std::map<std::string, std::string> kv = Status();
  EXPECT_EQ(kv["server_generation"], "2");
  char exe[PATH_MAX] = {};
  ASSERT_GT(readlink(("/proc/" + kv["server_pid"] + "/exe").c_str(), exe, sizeof(exe) - 1), 0);
  EXPECT_EQ(std::string(exe), copy) << "the new server runs the new binary";
  ASSERT_EQ(write(fd, "two", 3), 3) << strerror(errno);

  r = RunCommand({EFUSECTL_PATH, "restart", mount_.path(), "--binary=/bin/true"}, seconds(20));
  EXPECT_EQ(r.exit_code(), 1) << r.Describe();
  EXPECT_NE(r.err.find("state layout"), std::string::npos) << r.err;
  EXPECT_EQ(Status()["server_generation"], "2") << "a refused restart changes nothing";

  r = RunCommand({EFUSECTL_PATH, "restart", mount_.path()}, seconds(20));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe() << mount_.LogForMessage();
  ASSERT_EQ(write(fd, "three", 5), 5) << strerror(errno);
  close(fd);
  std::string back;
  ASSERT_TRUE(ReadFile(mount_.Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "onetwothree");
  EXPECT_EQ(Status()["server_generation"], "3");
}

// An upgrade to a server that dies as it takes over (its binary here: a
// wrapper that switches on test fault crash_after_go): the supervisor goes
// back to the last server that served, which takes over from the journal
// as after a crash; efusectl restart says so and exits 1, and what was
// written and held open before is there.
TEST_P(TakeoverTest, AnUpgradeWhoseServerDiesBeforeServingGoesBack) {
  // Before it takes the generation, and after (then its status already
  // names it: efusectl must wait for it to serve).
  for (const char* fault : {"crash_after_go", "crash_before_serving"}) {
    SCOPED_TRACE(fault);
    CheckAnUpgradeGoesBack(fault);
    if (HasFatalFailure()) return;
  }
}

void TakeoverTest::CheckAnUpgradeGoesBack(const std::string& fault) {
  ScratchDir bin;
  const std::string broken = bin.path() + "/efused-dies";
  std::string error;
  // (Its servers are named efused-dies: argv[0] tells which command line runs.)
  ASSERT_TRUE(WriteFile(broken,
                        "#!/bin/bash\nEFUSE_TEST_FAULTS=" + fault + "=1 exec -a efused-dies '" EFUSED_PATH "' \"$@\"\n",
                        &error))
      << error;
  ASSERT_EQ(chmod(broken.c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(mount_.Path("f"), "one", &error)) << error;
  const long generation_before = std::atol(Status()["server_generation"].c_str());
  const int fd = open(mount_.Path("f").c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);

  CommandResult r = RunCommand({EFUSECTL_PATH, "restart", mount_.path(), "--binary=" + broken}, seconds(30));
  EXPECT_EQ(r.exit_code(), 1) << r.Describe() << mount_.LogForMessage();
  EXPECT_NE(r.err.find("before it served; went back to " EFUSED_PATH), std::string::npos)
      << r.Describe() << mount_.LogForMessage();
  // The server that serves now runs the binary of the mount's start.
  std::map<std::string, std::string> kv;
  for (int i = 0; i < 500; ++i) {  // (bounded: the journal's takeover takes milliseconds)
    kv = Status();
    if (std::atol(kv["serving_generation"].c_str()) > generation_before && kv["server_pid"] != "" &&
        kill(std::atoi(kv["server_pid"].c_str()), 0) == 0) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  std::string cmdline;
  ASSERT_TRUE(ReadFile("/proc/" + kv["server_pid"] + "/cmdline", &cmdline, &error)) << error;
  EXPECT_EQ(cmdline.substr(0, cmdline.find('\0')), std::string(EFUSED_PATH)) << mount_.LogForMessage();
  ASSERT_EQ(write(fd, "two", 3), 3) << strerror(errno) << mount_.LogForMessage();
  close(fd);
  std::string back;
  ASSERT_TRUE(ReadFile(mount_.Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "onetwo");
  // And a restart after it upgrades as usual.
  r = RunCommand({EFUSECTL_PATH, "restart", mount_.path()}, seconds(30));
  EXPECT_EQ(r.exit_code(), 0) << r.Describe() << mount_.LogForMessage();
}

// The BPF counters of the connection (efusectl metrics) carry on across a
// takeover: the successor's programs count into the maps the last pinned.
TEST_P(TakeoverTest, TelemetryCountersCarryOn) {
  auto total = [&] {
    CommandResult r = RunCommand({EFUSECTL_PATH, "metrics", mount_.path()}, seconds(10));
    uint64_t sum = 0;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("efuse_requests_total{", 0) == 0) sum += std::strtoull(line.substr(line.rfind(' ') + 1).c_str(), nullptr, 10);
    }
    return sum;
  };
  for (int i = 0; i < 300; ++i) {
    struct stat st;
    stat(mount_.Path("missing-" + std::to_string(i)).c_str(), &st);  // a LOOKUP each
  }
  const uint64_t before = total();
  ASSERT_GE(before, 300u) << "no telemetry counted" << mount_.LogForMessage();
  KillServer();
  std::string error;
  ASSERT_TRUE(WriteFile(mount_.Path("after"), "x", &error)) << error;  // served by the successor
  EXPECT_GT(total(), before) << "the successor's counters started again" << mount_.LogForMessage();
}

// The supervisor holds copies of the serving server's BPF program links
// (so that the server's death does not wait for the kernel to detach
// them); once the server is gone they are quieted and let go, and the
// successor's are taken: every request is counted once.
std::set<std::string> HeldLinkIds(pid_t pid) {
  std::set<std::string> ids;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fdinfo";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ids;
  while (dirent* e = readdir(d)) {
    std::ifstream in(dir + "/" + e->d_name);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("link_id:", 0) == 0) ids.insert(line.substr(line.find_first_not_of(" \t", 8)));
    }
  }
  closedir(d);
  return ids;
}

TEST_P(TakeoverTest, TheSupervisorHoldsTheServersProgramLinks) {
  auto held = [&](const std::set<std::string>& not_these) {
    std::set<std::string> ids;
    for (int i = 0; i < 500; ++i) {  // taken once the server serves (bounded wait)
      ids = HeldLinkIds(mount_.pid());
      if (ids.size() == 2 && ids != not_these) break;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return ids;
  };
  const std::set<std::string> first = held({});
  ASSERT_EQ(first.size(), 2u) << "the supervisor holds no copies of the server's links" << mount_.LogForMessage();
  std::map<std::string, std::string> kv = Status();
  EXPECT_EQ(first, HeldLinkIds(static_cast<pid_t>(std::atol(kv["server_pid"].c_str()))))
      << "not the server's links";
  KillServer();
  std::string error;
  ASSERT_TRUE(WriteFile(mount_.Path("after"), "x", &error)) << error;  // served by the successor
  const std::set<std::string> second = held(first);
  ASSERT_EQ(second.size(), 2u) << mount_.LogForMessage();
  for (const std::string& id : second) EXPECT_EQ(first.count(id), 0u) << "the dead server's links are still held";
  // Counted once after the takeover (the standby's programs count nothing
  // until it takes over; the dead server's were quieted and let go).
  auto lookups = [&] {
    CommandResult r = RunCommand({EFUSECTL_PATH, "metrics", mount_.path()}, seconds(10));
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("efuse_requests_total{", 0) == 0 && line.find("\"LOOKUP\"") != std::string::npos) {
        return std::strtoull(line.substr(line.rfind(' ') + 1).c_str(), nullptr, 10);
      }
    }
    return 0ull;
  };
  const uint64_t before = lookups();
  for (int i = 0; i < 100; ++i) {
    struct stat st;
    stat(mount_.Path("missing-" + std::to_string(i)).c_str(), &st);  // a LOOKUP each
  }
  EXPECT_EQ(lookups() - before, 100u) << mount_.LogForMessage();
}

TEST_P(TakeoverTest, SuccessiveKillsKeepTheMount) {
  std::string error;
  ASSERT_TRUE(WriteFile(mount_.Path("f"), "0", &error)) << error;
  const int fd = open(mount_.Path("f").c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int round = 1; round <= 3; ++round) {
    KillServer();
    const std::string word = std::to_string(round);
    ASSERT_EQ(write(fd, word.data(), word.size()), static_cast<ssize_t>(word.size())) << strerror(errno);
    ASSERT_TRUE(WriteFile(mount_.Path("g" + word), word, &error)) << error;
  }
  close(fd);
  std::string back;
  ASSERT_TRUE(ReadFile(mount_.Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "0123");
  EXPECT_EQ(Status()["takeovers"], "3");
}

// The server dies after carrying a request out and recording its answer,
// before sending it (test fault crash_before_reply=OPCODE, first server
// only): the kernel resends the request to the successor, which answers
// it from the record. Without the record, each of these would fail the
// second time (EEXIST, ENOENT) though the first did its work.
struct CrashCase {
  const char* opcode;
  // Prepares with other opcodes; the call under test returns 0 or more.
  std::function<void(const std::string& mnt)> prepare;
  std::function<long(const std::string& mnt)> call;
  // What must hold afterwards.
  std::function<bool(const std::string& mnt)> after;
};

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

std::vector<CrashCase> CrashCases() {
  auto make_file = [](const std::string& mnt) {
    std::string e;
    WriteFile(mnt + "/a", "data", &e);
  };
  return {
      {"CREATE", nullptr,
       [](const std::string& mnt) {
         const int fd = open((mnt + "/new").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
         if (fd >= 0) close(fd);
         return static_cast<long>(fd);
       },
       [](const std::string& mnt) { return Exists(mnt + "/new"); }},
      {"MKDIR", nullptr, [](const std::string& mnt) { return static_cast<long>(mkdir((mnt + "/d").c_str(), 0755)); },
       [](const std::string& mnt) { return Exists(mnt + "/d"); }},
      {"MKNOD", nullptr, [](const std::string& mnt) { return static_cast<long>(mkfifo((mnt + "/p").c_str(), 0644)); },
       [](const std::string& mnt) { return Exists(mnt + "/p"); }},
      {"SYMLINK", nullptr,
       [](const std::string& mnt) { return static_cast<long>(symlink("target", (mnt + "/s").c_str())); },
       [](const std::string& mnt) { return Exists(mnt + "/s"); }},
      {"LINK", make_file,
       [](const std::string& mnt) { return static_cast<long>(link((mnt + "/a").c_str(), (mnt + "/b").c_str())); },
       [](const std::string& mnt) { return Exists(mnt + "/a") && Exists(mnt + "/b"); }},
      {"UNLINK", make_file, [](const std::string& mnt) { return static_cast<long>(unlink((mnt + "/a").c_str())); },
       [](const std::string& mnt) { return !Exists(mnt + "/a"); }},
      {"RMDIR", [](const std::string& mnt) { mkdir((mnt + "/d").c_str(), 0755); },
       [](const std::string& mnt) { return static_cast<long>(rmdir((mnt + "/d").c_str())); },
       [](const std::string& mnt) { return !Exists(mnt + "/d"); }},
      {"RENAME", make_file,
       [](const std::string& mnt) { return static_cast<long>(rename((mnt + "/a").c_str(), (mnt + "/b").c_str())); },
       [](const std::string& mnt) { return !Exists(mnt + "/a") && Exists(mnt + "/b"); }},
      // An exchange is its own undo: made again, it would swap back.
      {"RENAME2",
       [make_file](const std::string& mnt) {
         make_file(mnt);
         mkdir((mnt + "/d").c_str(), 0755);
       },
       [](const std::string& mnt) {
         return static_cast<long>(
             renameat2(AT_FDCWD, (mnt + "/a").c_str(), AT_FDCWD, (mnt + "/d").c_str(), RENAME_EXCHANGE));
       },
       [](const std::string& mnt) {
         // The kernel's own names (its dentries, swapped when it got the
         // success) against the server's: a listing, which it reads from the
         // server (a resent change drops what it kept of it).
         struct stat a, d;
         if (lstat((mnt + "/a").c_str(), &a) != 0 || !S_ISDIR(a.st_mode) || lstat((mnt + "/d").c_str(), &d) != 0 ||
             !S_ISREG(d.st_mode)) {
           return false;
         }
         DIR* dir = opendir(mnt.c_str());
         if (dir == nullptr) return false;
         bool a_is_dir = false, d_is_file = false;
         while (dirent* e = readdir(dir)) {
           if (std::string(e->d_name) == "a") a_is_dir = e->d_type == DT_DIR && e->d_ino == a.st_ino;
           if (std::string(e->d_name) == "d") d_is_file = e->d_type == DT_REG && e->d_ino == d.st_ino;
         }
         closedir(dir);
         return a_is_dir && d_is_file;
       }},
      // XATTR_CREATE made it the first time, REMOVEXATTR removed it: run
      // again, they would fail (EEXIST, ENODATA).
      {"SETXATTR", make_file,
       [](const std::string& mnt) {
         return static_cast<long>(setxattr((mnt + "/a").c_str(), "user.k", "v", 1, XATTR_CREATE));
       },
       [](const std::string& mnt) {
         char v[4];
         return getxattr((mnt + "/a").c_str(), "user.k", v, sizeof(v)) == 1;
       }},
      {"REMOVEXATTR",
       [make_file](const std::string& mnt) {
         make_file(mnt);
         setxattr((mnt + "/a").c_str(), "user.k", "v", 1, 0);
       },
       [](const std::string& mnt) { return static_cast<long>(removexattr((mnt + "/a").c_str(), "user.k")); },
       [](const std::string& mnt) {
         char v[4];
         return getxattr((mnt + "/a").c_str(), "user.k", v, sizeof(v)) < 0 && errno == ENODATA;
       }},
      {"OPEN", make_file,
       [](const std::string& mnt) {
         const int fd = open((mnt + "/a").c_str(), O_RDONLY | O_CLOEXEC);
         if (fd < 0) return -1L;
         char buf[8] = {};
         const long n = read(fd, buf, sizeof(buf));
         close(fd);
         return n == 4 ? 0L : -1L;
       },
       [](const std::string& mnt) { return Exists(mnt + "/a"); }},
  };
}

// Also when the server dies before the answer is recorded (test fault
// crash_before_answer: only the intent is): the resent request is carried
// out again and answered as its first run would have been; a handle the
// first run opened, whose answer the kernel never had, is not kept open.
TEST_P(TakeoverTest, ARequestCarriedOutButNotAnsweredIsAnsweredOnce) {
  for (const char* point : {"crash_before_reply", "crash_before_answer"}) {
    for (const CrashCase& c : CrashCases()) {
      SCOPED_TRACE(std::string(point) + " " + c.opcode);
      EfuseMount m;
      ScratchDir source;
      const std::vector<std::string> flags = Flags(source);
      const std::string fault = std::string(point) + "=" + c.opcode;
      m.SetChildSetup([fault] { setenv("EFUSE_TEST_FAULTS", fault.c_str(), 1); });
      ASSERT_TRUE(m.Start(flags));
      if (c.prepare) c.prepare(m.path());
      errno = 0;
      const long rc = c.call(m.path());
      EXPECT_GE(rc, 0) << c.opcode << ": " << strerror(errno) << m.LogForMessage();
      EXPECT_TRUE(c.after(m.path())) << c.opcode << m.LogForMessage();
      std::map<std::string, std::string> kv;
      ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
      EXPECT_EQ(kv["takeovers"], "1") << "the fault did not fire" << m.LogForMessage();
      if (std::string(point) == "crash_before_reply") {
        EXPECT_NE(kv["answers_replayed"], "0") << m.LogForMessage();
      }
      // Every file the call opened is closed: the RELEASE is sent after
      // close() returns, so it is waited for (bounded).
      for (int i = 0; i < 500 && OpenHandlesOf(kv) != "0"; ++i) {
        std::this_thread::sleep_for(milliseconds(10));
        ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
      }
      EXPECT_EQ(OpenHandlesOf(kv), "0") << "a handle stayed open" << m.LogForMessage();
      // And the next server does not revive one from the journal either.
      KillServerOf(m);
      std::string error;
      ASSERT_TRUE(WriteFile(m.Path("served-by-the-third"), "x", &error)) << error;
      EXPECT_TRUE(c.after(m.path())) << c.opcode << m.LogForMessage();
      ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
      for (int i = 0; i < 500 && OpenHandlesOf(kv) != "0"; ++i) {  // (its RELEASE)
        std::this_thread::sleep_for(milliseconds(10));
        ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
      }
      EXPECT_EQ(kv["takeovers"], "2") << m.LogForMessage();
      EXPECT_EQ(OpenHandlesOf(kv), "0") << "a handle came back at the second takeover" << m.LogForMessage();
      EXPECT_TRUE(m.Stop()) << m.LogForMessage();
    }
  }
}

// A LOOKUP that the server carried out and died before answering (test
// fault crash_before_reply=LOOKUP: the first that finds a name; a LOOKUP
// records no answer) is resent and counted once: the file it found,
// unlinked, is forgotten by the kernel and freed. (memfs with daemon data
// journals lookup counts; counted twice, the file stayed until unmount.)
TEST_P(TakeoverTest, ALookupCarriedOutButNotAnsweredCountsOnce) {
  EfuseMount m;
  ScratchDir source;
  std::vector<std::string> flags = Flags(source);
  flags.push_back("--entry_timeout=0");  // each stat looks its name up again
  m.SetChildSetup([] { setenv("EFUSE_TEST_FAULTS", "crash_before_reply=LOOKUP", 1); });
  ASSERT_TRUE(m.Start(flags));
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  const std::string inodes_before = kv["memfs_inodes"];
  std::string error;
  ASSERT_TRUE(WriteFile(m.Path("a"), "data", &error)) << error;
  struct stat st;
  ASSERT_EQ(stat(m.Path("a").c_str(), &st), 0) << strerror(errno) << m.LogForMessage();
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv["takeovers"], "1") << "the fault did not fire" << m.LogForMessage();
  ASSERT_EQ(unlink(m.Path("a").c_str()), 0) << strerror(errno);
  if (kv.count("memfs_inodes") != 0) {
    // The kernel's FORGET follows the unlink (waited for, bounded).
    for (int i = 0; i < 500 && kv["memfs_inodes"] != inodes_before; ++i) {
      std::this_thread::sleep_for(milliseconds(10));
      ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
    }
    EXPECT_EQ(kv["memfs_inodes"], inodes_before) << "the unlinked file stayed: a lookup counted twice"
                                                 << m.LogForMessage();
  }
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

// A request carried out slowly while many others are answered (test
// fault: CREATE waits until 1,100 other answers were recorded, more than
// the 512 answer slots hold, then its server dies) keeps its intent: resent,
// it is answered as its first run would have been, not with EEXIST.
TEST_P(TakeoverTest, ASlowRequestKeepsItsIntentWhileOthersAreAnswered) {
  EfuseMount m;
  ScratchDir source;
  std::vector<std::string> flags = Flags(source);
  // Two workers, one read each: the other requests reach the worker the
  // slow one does not hold up.
  flags.push_back("--workers=2");
  flags.push_back("--queue_depth=1");
  m.SetChildSetup(
      [] { setenv("EFUSE_TEST_FAULTS", "crash_before_answer=CREATE,crash_before_answer_after=1100", 1); });
  ASSERT_TRUE(m.Start(flags));
  ASSERT_EQ(mkdir(m.Path("others").c_str(), 0755), 0) << strerror(errno);
  int slow_fd = -1, slow_errno = 0;
  std::thread slow([&] {
    slow_fd = open(m.Path("slow").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    slow_errno = errno;
  });
  // Each a LOOKUP and a SYMLINK: an intent and an answer.
  for (int i = 0; i < 700; ++i) {
    ASSERT_EQ(symlink("t", m.Path("others/s" + std::to_string(i)).c_str()), 0) << i << ": " << strerror(errno);
  }
  slow.join();
  EXPECT_GE(slow_fd, 0) << strerror(slow_errno) << m.LogForMessage();
  if (slow_fd >= 0) close(slow_fd);
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv["takeovers"], "1") << "the fault did not fire" << m.LogForMessage();
  for (int i = 0; i < 500 && OpenHandlesOf(kv) != "0"; ++i) {  // (the RELEASE)
    std::this_thread::sleep_for(milliseconds(10));
    ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  }
  EXPECT_EQ(OpenHandlesOf(kv), "0") << "the first run's handle stayed open" << m.LogForMessage();
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

// The journal is checkpointed as it grows (test fault: at 64 KiB instead
// of 8 MiB), so a successor reads what is live, not every node ever born.
// The first server dies halfway through its first checkpoint (test fault
// crash_in_checkpoint): its successor reads the log as it was; a second
// kill is taken over from a committed checkpoint. Either way, files held
// open, a working directory and every name kept are there.
TEST_P(TakeoverTest, JournalCheckpointsKeepWhatTheKernelHolds) {
  EfuseMount m;
  ScratchDir source;
  m.SetChildSetup([] { setenv("EFUSE_TEST_FAULTS", "journal_checkpoint_at=65536,crash_in_checkpoint=1", 1); });
  ASSERT_TRUE(m.Start(Flags(source)));
  std::string error;
  ASSERT_EQ(mkdir(m.Path("kept").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(m.Path("kept/held"), "held", &error)) << error;
  const int held = open(m.Path("kept/held").c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  ASSERT_GE(held, 0);
  // A directory the kernel holds (an O_PATH fd: no open request) and that
  // no request names until the third server: the second knows its id only
  // from the first's journal, the third only from the second's checkpoint.
  ASSERT_EQ(mkdir(m.Path("kept/untouched").c_str(), 0755), 0);
  const int untouched = open(m.Path("kept/untouched").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(untouched, 0);
  const int dir_fd = open(m.Path("kept").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir_fd, 0);
  std::set<std::string> kept;
  auto status = [&m] {
    std::map<std::string, std::string> kv;
    EXPECT_TRUE(StatusReader(&m).Fresh(&kv));
    return kv;
  };
  // Churn: nodes born and forgotten, handles opened and released, every
  // tenth name kept, until a checkpoint has been committed by the successor.
  int n = 0;
  auto churn = [&](int files) {
    for (int i = 0; i < files; ++i, ++n) {
      const std::string name = "kept/f" + std::to_string(n);
      if (!WriteFile(m.Path(name), name, &error)) return false;
      if (n % 10 == 0) {
        kept.insert(name);
      } else if (unlink(m.Path(name).c_str()) != 0) {
        error = name + ": " + strerror(errno);
        return false;
      }
    }
    return true;
  };
  std::map<std::string, std::string> kv;
  for (int round = 0; round < 40; ++round) {
    ASSERT_TRUE(churn(500)) << error << m.LogForMessage();
    kv = status();
    if (kv["takeovers"] == "1" && kv["journal_checkpoints"] != "0") break;
  }
  ASSERT_EQ(kv["takeovers"], "1") << "the server did not die in its checkpoint" << m.LogForMessage();
  ASSERT_NE(kv["journal_checkpoints"], "0") << m.LogForMessage();
  EXPECT_NE(m.Log().find("test fault crash_in_checkpoint"), std::string::npos) << m.LogForMessage();

  auto check = [&](const std::string& word) {
    ASSERT_EQ(write(held, word.data(), word.size()), static_cast<ssize_t>(word.size())) << strerror(errno);
    struct stat st;
    ASSERT_EQ(fstatat(dir_fd, "held", &st, 0), 0) << strerror(errno);
    for (const std::string& name : kept) {
      std::string back;
      ASSERT_TRUE(ReadFile(m.Path(name), &back, &error)) << error << m.LogForMessage();
      ASSERT_EQ(back, name);
    }
    // The directory's listing, served by this server (with the handle it
    // took over, or without one): every kept name, "held" and "untouched".
    std::set<std::string> listed;
    DIR* d = opendir(m.Path("kept").c_str());
    ASSERT_NE(d, nullptr) << strerror(errno) << m.LogForMessage();
    while (dirent* e = readdir(d)) listed.insert(std::string("kept/") + e->d_name);
    closedir(d);
    for (const std::string& name : kept) ASSERT_TRUE(listed.count(name)) << name << " not listed" << m.LogForMessage();
    EXPECT_TRUE(listed.count("kept/held") && listed.count("kept/untouched"));
  };
  check("+1");
  // Far more churn than the journal may hold: checkpoints keep it to about
  // four times what is live (a few hundred nodes), not every node born.
  ASSERT_TRUE(churn(4000)) << error << m.LogForMessage();
  kv = status();
  EXPECT_GE(std::atoi(kv["journal_checkpoints"].c_str()), 3) << m.LogForMessage();
  const uint64_t journal = std::strtoull(kv["journal_bytes"].c_str(), nullptr, 10);
  // (memfs's records carry whole inodes, passthrough's file handles: the
  // same four times what is live is more bytes for memfs.)
  const uint64_t live_bound = std::string(GetParam().name) == "memfs_daemon_data" ? 8 * 65536u : 4 * 65536u;
  EXPECT_LT(journal, live_bound) << "the journal was not kept short";
  // A kill after committed checkpoints: the successor reads the last. (Once
  // the kernel's last RELEASE of the churn is served: it is sent after
  // close() returns.)
  // The file's handle, and the directory's where OPENDIR is answered (not
  // by default: the kernel opens directories itself).
  const bool dir_handles = std::find(GetParam().flags.begin(), GetParam().flags.end(), "--dir_handles=on") !=
                           GetParam().flags.end();
  const int handles = dir_handles ? 2 : 1;
  const std::string handles_text = std::to_string(handles);
  for (int i = 0; i < 500 && OpenHandlesOf(status()) != handles_text; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_EQ(OpenHandlesOf(status()), handles_text) << m.LogForMessage();
  KillServerOf(m);
  check("+2");
  const int created = openat(untouched, "new", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  EXPECT_GE(created, 0) << "a directory the kernel held was lost by the checkpoint: " << strerror(errno)
                        << m.LogForMessage();
  if (created >= 0) close(created);
  EXPECT_TRUE(Exists(m.Path("kept/untouched/new")));
  // The successor of the checkpoints found the handles the test holds open
  // (the file, and the directory where it has one), no more: none released
  // was taken for open. (The first may also find the churn's file open at
  // the crash.)
  const std::string log = m.Log();
  std::vector<std::string> lines;
  for (size_t at = log.find("took over"); at != std::string::npos; at = log.find("took over", at + 1)) {
    lines.push_back(log.substr(at, log.find('\n', at) - at));
  }
  ASSERT_EQ(lines.size(), 2u) << m.LogForMessage();
  auto says_handles = [](const std::string& line, int n) {
    return line.find(" and " + std::to_string(n) + " open handle(s)") != std::string::npos;
  };
  EXPECT_TRUE(says_handles(lines[0], handles) || says_handles(lines[0], handles + 1)) << lines[0];
  EXPECT_TRUE(says_handles(lines[1], handles)) << lines[1];
  ASSERT_TRUE(churn(500)) << error << m.LogForMessage();
  check("+3");
  kv = status();
  EXPECT_EQ(kv["takeovers"], "2");
  std::string back;
  ASSERT_TRUE(ReadFile(m.Path("kept/held"), &back, &error)) << error;
  EXPECT_EQ(back, "held+1+2+3");
  close(held);
  close(dir_fd);
  close(untouched);
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

void CheckAListingBegunBeforeACrashedRename(EfuseMount& m) {
  const std::string d = m.Path("moving"), away = m.Path("away");
  ASSERT_SYS(mkdir(away.c_str(), 0755));
  constexpr size_t kNames = 100;
  std::string moved;
  ListingRace race;
  RunListingRace(d, kNames, [&](const std::vector<std::string>& old_order) {
    moved = old_order.back();
    if (moved == "." || moved == "..") moved = old_order[old_order.size() - 2];
    if (moved == "." || moved == "..") moved = old_order[old_order.size() - 3];
    ASSERT_SYS(rename((d + "/" + moved).c_str(), (away + "/" + moved).c_str()));
    std::map<std::string, std::string> kv;
    ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
    ASSERT_EQ(kv["takeovers"], "1") << "the fault did not fire" << m.LogForMessage();
    ASSERT_TRUE(kv.contains("resent_listing_drops")) << m.LogForMessage();
    EXPECT_EQ(kv["resent_listing_drops"], "2") << "the two directories of the resent RENAME" << m.LogForMessage();
  }, &race);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  ASSERT_LT(race.first_piece, kNames / 2) << "the first piece must end before the moved name";
  EXPECT_EQ(race.old_end, 0);  // the old listing's end
  std::multiset<std::string> got(race.new_order.begin(), race.new_order.end()),
      want(race.old_order.begin(), race.old_order.end());
  want.erase(moved);
  EXPECT_EQ(got.count(moved), 0u) << "'" << moved << "', moved away before the listing began, was listed"
                                  << m.LogForMessage();
  EXPECT_EQ(got, want);
  EXPECT_TRUE(Exists(away + "/" + moved));
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

// A listing the kernel keeps across a crash in a rename: the server moves
// the last name a reader listed out of its directory and dies before it
// drops that directory's kept listing (test fault
// crash_before_listing_drop); its successor finds the resent RENAME done
// (ENOENT after its intent) and answers success. A reader that began after
// the rename must not be given the listing the first reader began before
// it and completes now (listing_test's race, with the change made by a
// server that died before it could drop that listing). Run where
// directories are opened without OPENDIR, where the kernel keeps listings
// (with directory handles it keeps none).
TEST(TakeoverListingTest, AListingBegunBeforeACrashedRenameIsNotGivenToALaterReader) {
  for (const char* config : {"memfs_kernel_data", "memfs_daemon_data", "passthrough"}) {
    SCOPED_TRACE(config);
    ScratchDir source;
    std::vector<std::string> flags = {"--supervise=on"};
    if (std::string(config) == "passthrough") {
      flags.insert(flags.end(), {"--fs=passthrough", "--source=" + source.path()});
    } else if (std::string(config) == "memfs_kernel_data") {
      flags.insert(flags.end(), {"--size=256M", "--memfs_data=kernel"});
    } else {
      flags.insert(flags.end(), {"--size=256M", "--memfs_data=daemon"});
    }
    EfuseMount m;
    m.SetChildSetup([] { setenv("EFUSE_TEST_FAULTS", "crash_before_listing_drop=1", 1); });
    ASSERT_TRUE(m.Start(flags));
    CheckAListingBegunBeforeACrashedRename(m);
  }
}

// File handles given out before a takeover (open_by_handle_at, knfsd)
// open the same files after it, once the kernel has forgotten their nodes
// (which the successor never met) and one more takeover has replayed
// what it kept; a file removed before the first answers ESTALE.
TEST_P(TakeoverTest, FileHandlesOutliveTakeoversAndForgottenNodes) {
  ExportedFiles files;
  std::string error;
  ASSERT_TRUE(MakeExportedFiles(mount_.path(), &files, &error)) << error;

  KillServer();
  ASSERT_TRUE(StatusEventually(&mount_, [](auto& kv) { return kv["takeovers"] == "1"; })) << mount_.LogForMessage();
  // The kernel forgets dir and dir/file: memfs counts their lookups down,
  // passthrough keeps the last server's nodes among the forgotten.
  ASSERT_TRUE(StatusEventually(
      &mount_,
      [](auto& kv) {
        return kv.contains("memfs_known_to_kernel") ? kv["memfs_known_to_kernel"] == "0"
                                                    : std::atol(kv["pt_forgotten_remembered"].c_str()) >= 2;
      },
      /*drop_caches=*/true))
      << "the kernel's forgetting never came (or was not kept)" << mount_.LogForMessage();
  KillServer();
  ASSERT_TRUE(StatusEventually(&mount_, [](auto& kv) { return kv["takeovers"] == "2"; })) << mount_.LogForMessage();

  UniqueFd d;
  CheckExportedFiles(files, &d);
  EXPECT_GE(d.get(), 0) << mount_.LogForMessage();
}

INSTANTIATE_TEST_SUITE_P(Supervised, TakeoverTest,
                         ::testing::Values(TakeoverConfig{"memfs_kernel_data", false, {"--memfs_data=kernel"}},
                                           // the data in a memfd the supervisor keeps, the rest
                                           // journaled (what a rootless memfs gets)
                                           TakeoverConfig{"memfs_daemon_data", false, {"--memfs_data=daemon"}},
                                           TakeoverConfig{"passthrough", true, {}},
                                           // handles whose I/O the daemon serves, and
                                           // directories opened with OPENDIR
                                           TakeoverConfig{"passthrough_daemon_io", true,
                                                          {"--passthrough=off", "--dir_handles=on"}}),
                         [](const ::testing::TestParamInfo<TakeoverConfig>& info) {
                           return std::string(info.param.name);
                         });

// A server killed halfway through an O_APPEND write it serves (daemon
// I/O without the writeback cache: the daemon appends; test fault
// crash_mid_append) leaves half the data in the source. The resent WRITE
// is written where the first run began, not appended after that half: the
// file holds the data once, as if no crash had happened.
TEST(TakeoverAppendTest, AnAppendCutShortByACrashIsWrittenOnce) {
  EfuseMount m;
  ScratchDir source;
  m.SetChildSetup([] { setenv("EFUSE_TEST_FAULTS", "crash_mid_append=1", 1); });
  ASSERT_TRUE(m.Start({"--supervise=on", "--fs=passthrough", "--source=" + source.path(), "--passthrough=off",
                       "--writeback_cache=false"}));
  std::string error;
  const std::string head(1000, 'a'), body(10000, 'b'), tail(500, 'c');
  ASSERT_TRUE(WriteFile(m.Path("log"), head, &error)) << error;
  for (const std::string* part : {&body, &tail}) {  // the fault fires once: the first server only
    const int fd = open(m.Path("log").c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0) << strerror(errno);
    EXPECT_EQ(write(fd, part->data(), part->size()), static_cast<ssize_t>(part->size()))
        << strerror(errno) << m.LogForMessage();
    close(fd);
  }
  const std::string want = head + body + tail;
  std::string through_mount, in_source;
  ASSERT_TRUE(ReadFile(m.Path("log"), &through_mount, &error)) << error;
  ASSERT_TRUE(ReadFile(source.path() + "/log", &in_source, &error)) << error;
  EXPECT_EQ(through_mount.size(), want.size()) << m.LogForMessage();
  EXPECT_TRUE(through_mount == want) << "the mount's file differs";
  EXPECT_TRUE(in_source == want) << "the source file holds " << in_source.size() << " bytes, " << want.size()
                                 << " expected";
  EXPECT_NE(m.Log().find("test fault crash_mid_append"), std::string::npos) << m.LogForMessage();
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv["takeovers"], "1") << m.LogForMessage();
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

// A file system whose journal took no record (test fault journal_refuses:
// as when its memfd cannot grow) cannot be rebuilt: the supervisor ends
// the mount (no dead mount stays) rather than serve a file system that
// lost what the kernel knows.
TEST(TakeoverRefusedTest, AMountWhoseJournalFailedEndsWhenItsServerDies) {
  EfuseMount m;
  m.SetChildSetup([] { setenv("EFUSE_TEST_FAULTS", "journal_refuses=1", 1); });
  ASSERT_TRUE(m.Start({"--supervise=on", "--memfs_data=daemon"}));
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  const pid_t server = static_cast<pid_t>(std::atol(kv["server_pid"].c_str()));
  ASSERT_GT(server, 0);
  ASSERT_EQ(kill(server, SIGKILL), 0);
  int status = 0;
  ASSERT_TRUE(m.WaitExit(seconds(10), &status)) << m.LogForMessage();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL) << "status " << status;
  EXPECT_NE(m.Log().find("cannot be rebuilt"), std::string::npos) << m.LogForMessage();
  MountEntry e;
  EXPECT_FALSE(FindMount(m.path(), &e)) << "the mount stayed";
}

// A restart reads its --config file again: options that can change
// without a new mount (here the offload policy) take effect; one that only
// a new mount can change (max_write, negotiated at INIT) is refused with a
// line naming it, and the successor serves with the mount's value.
TEST(TakeoverOptionsTest, RestartTakesNewOptionsAndRefusesThoseOfANewMount) {
  ScratchDir dir;
  const std::string config = dir.path() + "/efuse.conf";
  std::string error;
  ASSERT_TRUE(WriteFile(config, "max_write=128K\noffload=off\n", &error)) << error;
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--supervise=on", "--config=" + config}));
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  ASSERT_EQ(kv["max_write"], "131072");
  ASSERT_EQ(kv["offload"], "off (--offload=off)");
  ASSERT_EQ(kv["restart_refused"], "none");

  ASSERT_TRUE(WriteFile(config, "max_write=64K\noffload=on\n", &error)) << error;
  CommandResult r = RunCommand({EFUSECTL_PATH, "restart", m.path()}, seconds(20));
  EXPECT_EQ(r.exit_code(), 1) << r.Describe();
  EXPECT_NE(r.err.find("--max_write=64K (the mount has 128K)"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("offload"), std::string::npos) << r.err;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv["server_generation"], "2");
  EXPECT_EQ(kv["max_write"], "131072") << "served as negotiated at INIT";
  EXPECT_NE(kv["offload"], "off (--offload=off)") << "a changeable option took effect";
  EXPECT_NE(m.Log().find("restart: --max_write=64K (the mount has 128K) refused"), std::string::npos)
      << m.LogForMessage();
  ASSERT_TRUE(WriteFile(m.Path("f"), "still served", &error)) << error;

  // A value that would not even build (an unknown file system) is refused
  // the same way, instead of leaving the mount without a server.
  ASSERT_TRUE(WriteFile(config, "fs=bogus\nmax_write=128K\n", &error)) << error;
  r = RunCommand({EFUSECTL_PATH, "restart", m.path()}, seconds(20));
  EXPECT_EQ(r.exit_code(), 1) << r.Describe();
  EXPECT_NE(r.err.find("--fs=bogus (the mount has memfs)"), std::string::npos) << r.err;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv["server_generation"], "3");
  std::string back;
  ASSERT_TRUE(ReadFile(m.Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "still served");
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

// File "f" of `m` written with `first`, then opened to append.
UniqueFd AppendingFileWith(EfuseMount& m, const std::string& first) {
  std::string error;
  EXPECT_TRUE(WriteFile(m.Path("f"), first, &error)) << error;
  return UniqueFd(open(m.Path("f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
}

// efused with no --supervise is supervised: its server killed, a successor
// serves the same mount, an open file's writes carry on.
TEST(TakeoverOptionsTest, AMountIsSupervisedByDefault) {
  EfuseMount m;
  m.LeaveSupervisionToTheDefault();
  ASSERT_TRUE(m.Start({}));
  std::string error;
  UniqueFd fd = AppendingFileWith(m, "one");
  ASSERT_TRUE(fd.ok());
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv["connection_held_by"], "supervisor (pid " + std::to_string(m.pid()) + ")") << m.LogForMessage();
  const pid_t first = KillServerOf(m);
  ASSERT_EQ(write(fd.get(), "two", 3), 3) << strerror(errno);
  std::string back;
  ASSERT_TRUE(ReadFile(m.Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "onetwo");
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_NE(kv["server_pid"], std::to_string(first));
  EXPECT_EQ(kv["server_generation"], "2");
  fd.Reset();
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

// Asking for the FUSE ring, which this kernel cannot hand to a successor,
// leaves a default mount unsupervised, and the log says so in one line.
TEST(TakeoverOptionsTest, AskingForTheFuseRingLeavesADefaultMountUnsupervised) {
  EfuseMount m;
  m.LeaveSupervisionToTheDefault();
  ASSERT_TRUE(m.Start({"--transport=uring"}));
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  EXPECT_EQ(kv.count("server_pid"), 0u) << "no supervisor, no server apart from it";
  EXPECT_EQ(kv["pid"], std::to_string(m.pid()));
  EXPECT_NE(m.Log().find("--transport=uring: not supervised"), std::string::npos) << m.LogForMessage();
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
  // Said as refused when supervision is asked for by name.
  CommandResult r = RunCommand({EFUSED_PATH, "--supervise=on", "--transport=uring", m.path()}, seconds(10));
  EXPECT_EQ(r.exit_code(), 2) << r.err;
  EXPECT_NE(r.err.find("--transport=uring with --supervise=on"), std::string::npos) << r.err;
}

// The supervisor killed: its server keeps the connection (its own
// descriptors) and serves on, unsupervised; the status file names it, and
// SIGTERM to it unmounts.
TEST(TakeoverOptionsTest, AKilledSupervisorLeavesItsServerServing) {
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--supervise=on"}));
  std::string error;
  UniqueFd fd = AppendingFileWith(m, "one");
  ASSERT_TRUE(fd.ok());
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&m).Fresh(&kv));
  const std::string server = kv["server_pid"];
  MountEntry entry;
  ASSERT_TRUE(FindMount(m.path(), &entry));
  // Its path while it still names the supervisor (the fixture's daemon).
  const std::string status_file = m.StatusFile(entry.dev_minor);
  ASSERT_FALSE(status_file.empty());
  m.Signal(SIGKILL);
  int status = 0;
  ASSERT_TRUE(m.WaitExit(seconds(10), &status));
  // The server notices at once (a pidfd) and rewrites its status file.
  std::string text;
  for (int i = 0; i < 1000 && text.find("\npid: " + server + "\n") == std::string::npos &&
                  text.rfind("pid: " + server + "\n", 0) != 0;
       ++i) {
    std::this_thread::sleep_for(milliseconds(10));
    ReadFile(status_file, &text, &error);
  }
  EXPECT_TRUE(text.rfind("pid: " + server + "\n", 0) == 0 || text.find("\npid: " + server + "\n") != std::string::npos)
      << text << m.LogForMessage();
  ASSERT_EQ(write(fd.get(), "two", 3), 3) << strerror(errno);
  std::string back;
  ASSERT_TRUE(ReadFile(m.Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "onetwo");
  EXPECT_NE(m.Log().find("the supervisor died: serving"), std::string::npos) << m.LogForMessage();
  fd.Reset();
  ASSERT_EQ(kill(static_cast<pid_t>(std::atol(server.c_str())), SIGTERM), 0);
  for (int i = 0; i < 1000 && FindMount(m.path()); ++i) std::this_thread::sleep_for(milliseconds(10));
  EXPECT_FALSE(FindMount(m.path())) << "SIGTERM to the unsupervised server unmounts";
}

// An upgrade to a binary that cannot serve (it passes the layout check,
// then exits) is called off before the running server hands over: the
// mount keeps its server, and its open files.
TEST(TakeoverOptionsTest, AnUpgradeToABinaryThatCannotStartKeepsTheRunningServer) {
  ScratchDir dir;
  const std::string broken = dir.path() + "/efused";
  std::string error;
  ASSERT_TRUE(WriteFile(broken,
                        "#!/bin/sh\n[ \"$1\" = --state_layout ] && exec " EFUSED_PATH " --state_layout\nexit 1\n",
                        &error, O_WRONLY | O_CREAT | O_TRUNC, 0755))
      << error;
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--supervise=on"}));
  ASSERT_TRUE(WriteFile(m.Path("f"), "one", &error)) << error;
  UniqueFd fd(open(m.Path("f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(fd.ok());
  std::map<std::string, std::string> before;
  ASSERT_TRUE(StatusReader(&m).Fresh(&before));
  CommandResult r = RunCommand({EFUSECTL_PATH, "restart", m.path(), "--binary=" + broken}, seconds(30));
  EXPECT_EQ(r.exit_code(), 1) << r.Describe();
  EXPECT_NE(r.err.find("did not get ready; the running one serves on"), std::string::npos) << r.Describe();
  EXPECT_LT(r.seconds, 5) << "efusectl learns at once that the restart was called off";
  EXPECT_NE(m.Log().find("did not get ready; the running one serves on"), std::string::npos) << m.LogForMessage();
  std::map<std::string, std::string> after;
  ASSERT_TRUE(StatusReader(&m).Fresh(&after));
  EXPECT_EQ(after["server_pid"], before["server_pid"]);
  EXPECT_EQ(after["server_generation"], "1");
  ASSERT_EQ(write(fd.get(), "two", 3), 3) << strerror(errno);
  std::string back;
  ASSERT_TRUE(ReadFile(m.Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "onetwo");
  fd.Reset();  // else the unmount is lazy and the server serves it on
  EXPECT_TRUE(m.Stop()) << m.LogForMessage();
}

}  // namespace
}  // namespace efuse::testing
