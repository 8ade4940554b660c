// efused --supervise=systemd: the service manager's fd store keeps the
// connection. systemd is not PID 1 here, so the test plays its part with
// the same protocol: a NOTIFY_SOCKET that keeps the descriptors sent with
// FDSTORE=1/FDNAME= (and drops them on FDSTOREREMOVE=1), and starts the
// service again with them as LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID, as
// systemd does after a crash with Restart= and in a restart job (whose stop
// signal is RestartKillSignal=SIGUSR2 in efused's units).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The service manager's side of one service: its notify socket, its fd
// store, and the one process it runs.
class ServiceManagerStandIn {
 public:
  explicit ServiceManagerStandIn(const std::string& dir) : socket_path_(dir + "/notify"), log_path_(dir + "/log") {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path_.c_str(), sizeof(addr.sun_path) - 1);
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~ServiceManagerStandIn() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    DropStore();
    close(fd_);
  }
  bool bound() const { return bound_; }

  // Starts `argv` as the service's main process, the store's descriptors
  // at 3, 4, ... (LISTEN_*), NOTIFY_SOCKET set unless `notify` is false.
  void Start(const std::vector<std::string>& argv, bool notify = true) {
    ready_ = false;
    pid_ = fork();
    if (pid_ != 0) return;
    const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(log, 1);
    dup2(log, 2);
    std::vector<int> high;
    for (const auto& [name, fd] : store_) high.push_back(fcntl(fd, F_DUPFD, 200));
    std::string names;
    for (size_t i = 0; i < store_.size(); ++i) {
      dup2(high[i], static_cast<int>(3 + i));
      names += (i ? ":" : "") + store_[i].first;
    }
    if (!store_.empty()) {
      setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
      setenv("LISTEN_FDS", std::to_string(store_.size()).c_str(), 1);
      setenv("LISTEN_FDNAMES", names.c_str(), 1);
    }
    if (notify) {
      setenv("NOTIFY_SOCKET", socket_path_.c_str(), 1);
    } else {
      unsetenv("NOTIFY_SOCKET");  // not the test runner's own manager's either
    }
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }

  // Takes the messages that came, until READY=1 (true) or `timeout`, or
  // the process exited (false).
  bool WaitReady(milliseconds timeout = seconds(15)) {
    for (const auto deadline = Clock::now() + timeout; Clock::now() < deadline && !ready_;) {
      if (!Receive(milliseconds(50)) && pid_ > 0 && waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = 0;
        while (Receive(milliseconds(0))) {
        }
        return ready_;
      }
    }
    return ready_;
  }

  // Sends `sig` to the main process and waits for it to exit; its status
  // (waitpid form), -1 on timeout. Messages sent on the way are taken.
  int Stop(int sig, milliseconds timeout = seconds(15)) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    for (const auto deadline = Clock::now() + timeout; Clock::now() < deadline;) {
      Receive(milliseconds(20));
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = 0;
        while (Receive(milliseconds(0))) {
        }
        return status_;
      }
    }
    return -1;
  }

  // Names in the store, with how many descriptors each.
  std::map<std::string, int> StoreNames() const {
    std::map<std::string, int> names;
    for (const auto& [name, fd] : store_) ++names[name];
    return names;
  }
  // Copies of the store's descriptors (a manager that missed FDSTOREREMOVE).
  std::vector<std::pair<std::string, int>> CopyStore() const {
    std::vector<std::pair<std::string, int>> copy;
    for (const auto& [name, fd] : store_) copy.emplace_back(name, fcntl(fd, F_DUPFD_CLOEXEC, 0));
    return copy;
  }
  void SetStore(std::vector<std::pair<std::string, int>> store) {
    DropStore();
    store_ = std::move(store);
  }
  void DropStore() {
    for (const auto& [name, fd] : store_) close(fd);
    store_.clear();
  }
  const std::vector<std::string>& messages() const { return messages_; }
  std::string Log() const {
    std::ifstream f(log_path_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  pid_t pid() const { return pid_; }

 private:
  // One datagram: its fields, and descriptors with FDSTORE=1.
  bool Receive(milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char buf[4096];
    char control[CMSG_SPACE(sizeof(int) * 253)];
    iovec iov{buf, sizeof(buf) - 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) return false;
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.push_back(fd);
      }
    }
    const std::string text(buf, static_cast<size_t>(n));
    messages_.push_back(text);
    std::map<std::string, std::string> fields;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      const size_t eq = line.find('=');
      if (eq != std::string::npos) fields[line.substr(0, eq)] = line.substr(eq + 1);
    }
    if (fields["READY"] == "1") ready_ = true;
    if (fields["FDSTORE"] == "1") {
      for (int fd : fds) store_.emplace_back(fields.count("FDNAME") ? fields["FDNAME"] : "stored", fd);
      fds.clear();
    }
    if (fields["FDSTOREREMOVE"] == "1") {
      std::vector<std::pair<std::string, int>> kept;
      for (const auto& [name, fd] : store_) {
        if (name == fields["FDNAME"]) {
          close(fd);
        } else {
          kept.emplace_back(name, fd);
        }
      }
      store_ = std::move(kept);
    }
    for (int fd : fds) close(fd);  // sent without FDSTORE=1: not kept
    return true;
  }

  std::string socket_path_, log_path_;
  int fd_ = -1;
  bool bound_ = false;
  pid_t pid_ = 0;
  int status_ = 0;
  bool ready_ = false;
  std::vector<std::pair<std::string, int>> store_;
  std::vector<std::string> messages_;
};

std::map<std::string, std::string> StatusOf(const std::string& mountpoint) {
  std::map<std::string, std::string> kv;
  MountEntry entry;
  if (!FindMount(mountpoint, &entry)) return kv;
  std::ifstream f("/run/efuse/" + std::to_string(entry.dev_minor) + ".status");
  for (std::string line; std::getline(f, line);) {
    const size_t colon = line.find(": ");
    if (colon != std::string::npos) kv[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return kv;
}

struct FdStoreConfig {
  const char* name;
  bool passthrough;
};
void PrintTo(const FdStoreConfig& c, std::ostream* os) { *os << c.name; }

class FdStoreTest : public ::testing::TestWithParam<FdStoreConfig> {
 protected:
  void SetUp() override {
    EFUSE_REQUIRE_FUSE();
    ASSERT_FALSE(dir_.path().empty());
    ASSERT_TRUE(manager_.bound()) << strerror(errno);
    // Made by efused itself (a unit's mkdir -p would stat it).
    mountpoint_ = dir_.path() + "/mnt";
    argv_ = {EFUSED_PATH, "--supervise=systemd"};
    if (GetParam().passthrough) {
      ASSERT_EQ(mkdir((dir_.path() + "/src").c_str(), 0755), 0);
      argv_.push_back("--fs=passthrough");
      argv_.push_back("--source=" + dir_.path() + "/src");
    } else {
      argv_.push_back("--size=64M");
      argv_.push_back("--memfs_data=kernel");
    }
    argv_.push_back(mountpoint_);
  }
  void TearDown() override {
    if (manager_.pid() > 0) manager_.Stop(SIGTERM);
    if (FindMount(mountpoint_)) umount2(mountpoint_.c_str(), MNT_DETACH);
  }
  std::string Path(const std::string& name) const { return mountpoint_ + "/" + name; }

  ScratchDir dir_;
  ServiceManagerStandIn manager_{dir_.path()};
  std::string mountpoint_;
  std::vector<std::string> argv_;
};

TEST_P(FdStoreTest, CrashAndRestartJobKeepTheMountStopEndsIt) {
  manager_.Start(argv_);
  ASSERT_TRUE(manager_.WaitReady()) << manager_.Log();
  ASSERT_TRUE(FindMount(mountpoint_));
  std::map<std::string, int> names = manager_.StoreNames();
  EXPECT_EQ(names["fuse"], 1);
  EXPECT_EQ(names["state"], 1);
  EXPECT_GE(names["fuse-worker"], 1);
  EXPECT_EQ(names.count("source"), GetParam().passthrough ? 0u : 1u) << "memfs's private tmpfs";
  std::string error;
  ASSERT_TRUE(WriteFile(Path("f"), "one", &error)) << error;
  UniqueFd file(open(Path("f").c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(file.ok());
  UniqueFd dir(open(mountpoint_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir.ok());

  // A crash: Restart=on-failure starts the service again with its store.
  const int killed = manager_.Stop(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(killed)) << killed;
  ASSERT_TRUE(FindMount(mountpoint_)) << "a dead server leaves the mount to its successor";
  manager_.Start(argv_);
  ASSERT_TRUE(manager_.WaitReady()) << manager_.Log();
  ASSERT_EQ(write(file.get(), "two", 3), 3) << strerror(errno);
  std::map<std::string, std::string> kv = StatusOf(mountpoint_);
  EXPECT_EQ(kv["server_generation"], "2");
  EXPECT_EQ(kv["takeovers"], "1");
  EXPECT_EQ(kv["connection_held_by"], "service manager's fd store");
  EXPECT_EQ(kv["pid"], std::to_string(manager_.pid())) << "signals for the mount go to the service's process";

  // efusectl restart leaves a service's server to the service manager.
  CommandResult r = RunCommand({EFUSECTL_PATH, "restart", mountpoint_}, seconds(20));
  EXPECT_EQ(r.exit_code(), 1) << r.Describe();
  EXPECT_NE(r.err.find("systemctl restart"), std::string::npos) << r.err;

  // A restart job: RestartKillSignal=SIGUSR2, the server hands over and
  // exits 75 (the units' SuccessExitStatus= and RestartForceExitStatus=),
  // and the next start takes over.
  const int retired = manager_.Stop(SIGUSR2);
  ASSERT_TRUE(WIFEXITED(retired) && WEXITSTATUS(retired) == 75) << retired << manager_.Log();
  ASSERT_TRUE(FindMount(mountpoint_)) << "a restart job keeps the mount";
  manager_.Start(argv_);
  ASSERT_TRUE(manager_.WaitReady()) << manager_.Log();
  ASSERT_EQ(write(file.get(), "three", 5), 5) << strerror(errno);
  std::string back;
  ASSERT_TRUE(ReadFile(Path("f"), &back, &error)) << error;
  EXPECT_EQ(back, "onetwothree");
  EXPECT_EQ(fchdir(dir.get()), 0) << strerror(errno);
  EXPECT_EQ(access("f", R_OK), 0) << "a working directory in the mount: " << strerror(errno);
  chdir("/");
  EXPECT_EQ(StatusOf(mountpoint_)["server_generation"], "3");
  EXPECT_NE(manager_.Log().find("every request being carried out was answered"), std::string::npos)
      << manager_.Log();

  // A stop: SIGTERM unmounts, and the store is emptied (FDSTOREREMOVE=1).
  file.Reset();
  dir.Reset();
  const int stopped = manager_.Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0) << stopped << manager_.Log();
  EXPECT_FALSE(FindMount(mountpoint_));
  EXPECT_TRUE(manager_.StoreNames().empty()) << "left in the store: " << manager_.StoreNames().size();
}

// A store that outlived its mount (a manager that kept the descriptors of
// a stopped service) is dropped, and the service mounts anew.
TEST_P(FdStoreTest, AStoreOfAnEndedMountIsDropped) {
  manager_.Start(argv_);
  ASSERT_TRUE(manager_.WaitReady()) << manager_.Log();
  std::vector<std::pair<std::string, int>> stale = manager_.CopyStore();
  ASSERT_EQ(manager_.Stop(SIGTERM), 0) << manager_.Log();
  ASSERT_FALSE(FindMount(mountpoint_));
  manager_.SetStore(std::move(stale));
  manager_.Start(argv_);
  ASSERT_TRUE(manager_.WaitReady()) << manager_.Log();
  EXPECT_NE(manager_.Log().find("has ended: mounting anew"), std::string::npos) << manager_.Log();
  std::string error, back;
  ASSERT_TRUE(WriteFile(Path("g"), "fresh", &error)) << error;
  ASSERT_TRUE(ReadFile(Path("g"), &back, &error)) << error;
  EXPECT_EQ(back, "fresh");
  EXPECT_EQ(StatusOf(mountpoint_)["server_generation"], "1");
}

INSTANTIATE_TEST_SUITE_P(Service, FdStoreTest,
                         ::testing::Values(FdStoreConfig{"memfs_kernel_data", false},
                                           FdStoreConfig{"passthrough", true}),
                         [](const ::testing::TestParamInfo<FdStoreConfig>& i) { return std::string(i.param.name); });

TEST(FdStoreRefusedTest, WithoutANotifySocketItSaysWhy) {
  EFUSE_REQUIRE_FUSE();
  ScratchDir dir;
  ServiceManagerStandIn manager(dir.path());
  manager.Start({EFUSED_PATH, "--supervise=systemd", dir.path()}, /*notify=*/false);
  const int status = manager.Stop(0, seconds(10));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  EXPECT_NE(manager.Log().find("--supervise=systemd: $NOTIFY_SOCKET is not set"), std::string::npos)
      << manager.Log();
}

}  // namespace
}  // namespace efuse::testing
