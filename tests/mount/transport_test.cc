// Request transports on real mounts: the FUSE ring really carries the
// requests (the daemon's per-queue counters and the kernel's io_uring
// fdinfo agree), and `auto`/`uring` fall back to /dev/fuse, saying why, when
// the kernel switch is off or io_uring is refused. (The whole POSIX,
// permission and passthrough suites also run once per transport: see
// CMakeLists.txt.)
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

constexpr int kStats = 2000;

std::string ReadSmallFile(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

// Restores a /proc or /sys switch on scope exit.
class SwitchGuard {
 public:
  SwitchGuard(std::string path, const std::string& value) : path_(std::move(path)) {
    old_ = ReadSmallFile(path_);
    std::ofstream(path_) << value;
  }
  ~SwitchGuard() { std::ofstream(path_) << old_; }
  bool set_to(const std::string& v) const { return ReadSmallFile(path_) == v; }

 private:
  std::string path_, old_;
};

// Sum of one fdinfo field over the daemon's io_uring fds.
uint64_t IoUringFdinfoSum(pid_t pid, const std::string& field, int* rings) {
  uint64_t sum = 0;
  *rings = 0;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    char target[256];
    const std::string link = dir + "/" + e->d_name;
    ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::string(target) != "anon_inode:[io_uring]") continue;
    ++*rings;
    std::ifstream info("/proc/" + std::to_string(pid) + "/fdinfo/" + e->d_name);
    std::string line;
    while (std::getline(info, line)) {
      if (line.rfind(field + ":", 0) == 0) sum += std::strtoull(line.c_str() + field.size() + 1, nullptr, 10);
    }
  }
  closedir(d);
  return sum;
}

// The transport is chosen after INIT, a moment after the mount appears.
bool LogShows(const EfuseMount& mount, const std::string& text) {
  for (int i = 0; i < 500; ++i) {
    if (mount.Log().find(text) != std::string::npos) return true;
    usleep(10000);
  }
  return false;
}

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override { EFUSE_REQUIRE_FUSE(); }
  void TearDown() override {
    if (mount_.running()) EXPECT_TRUE(mount_.Stop());
  }
  EfuseMount mount_;
};

// uring: the FUSE ring's queues; uring-dev: io_uring reads on /dev/fuse.
class IoUringTransportTest : public TransportTest,
                             public ::testing::WithParamInterface<std::string> {};

TEST_P(IoUringTransportTest, CarriesTheRequests) {
  const std::string transport = GetParam();
  ASSERT_TRUE(mount_.Start({"--transport=" + transport, "--attr_timeout=0", "--entry_timeout=0"}));
  ASSERT_TRUE(LogShows(mount_, "serving with the " + transport + " transport")) << mount_.Log();
  const std::string f = mount_.Path("f");
  { UniqueFd fd(open(f.c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }

  StatusReader status(&mount_);
  std::map<std::string, std::string> before, after;
  ASSERT_TRUE(status.Fresh(&before));
  int rings_before = 0;
  const uint64_t sq_before = IoUringFdinfoSum(mount_.pid(), "SqHead", &rings_before);
  struct stat st;
  for (int i = 0; i < kStats; ++i) ASSERT_SYS(stat(f.c_str(), &st));
  ASSERT_TRUE(status.Fresh(&after));
  int rings = 0;
  const uint64_t sq_after = IoUringFdinfoSum(mount_.pid(), "SqHead", &rings);

  EXPECT_EQ(after["transport"].rfind(transport + " ", 0), 0u) << after["transport"];
  // Every queue is listed; together they served at least one LOOKUP and one
  // GETATTR per stat (timeouts 0: nothing is cached).
  uint64_t queue_requests_before = 0, queue_requests_after = 0;
  int queues = 0;
  auto requests_of = [](const std::string& line) {
    size_t p = line.find("requests ");
    return p == std::string::npos ? 0 : std::strtoull(line.c_str() + p + 9, nullptr, 10);
  };
  for (const auto& [k, v] : after) {
    if (k.rfind("queue_", 0) != 0) continue;
    ++queues;
    queue_requests_after += requests_of(v);
    queue_requests_before += requests_of(before[k]);
  }
  EXPECT_GE(queues, 1);
  EXPECT_GE(queue_requests_after - queue_requests_before, 2u * kStats);
  const uint64_t getattr = std::strtoull(after["requests_GETATTR"].c_str(), nullptr, 10) -
                           std::strtoull(before["requests_GETATTR"].c_str(), nullptr, 10);
  EXPECT_GE(getattr, static_cast<uint64_t>(kStats));
  // The kernel's own count: each request was answered through one of the
  // daemon's io_urings (one per queue): a COMMIT_AND_FETCH, or a WRITEV and
  // the next READ.
  EXPECT_EQ(rings, queues);
  EXPECT_GE(sq_after - sq_before, 2u * kStats) << "io_uring SQEs submitted by the daemon";
}

INSTANTIATE_TEST_SUITE_P(Transports, IoUringTransportTest, ::testing::Values("uring", "uring-dev"),
                         [](const auto& info) {
                           return info.param == "uring" ? std::string("FuseRing")
                                                        : std::string("DevFuse");
                         });

TEST_F(TransportTest, AutoTakesIoUringOnDevFuseWhenTheRingIsSwitchedOff) {
  SwitchGuard ring("/sys/module/fuse/parameters/enable_uring", "N");
  ASSERT_TRUE(ring.set_to("N"));
  ASSERT_TRUE(mount_.Start({"--transport=auto"}));
  const std::string f = mount_.Path("f");
  { UniqueFd fd(open(f.c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }
  EXPECT_TRUE(LogShows(mount_, "serving with the uring-dev transport (uring unavailable: the "
                               "kernel did not offer FUSE_OVER_IO_URING"))
      << mount_.Log();
}

TEST_F(TransportTest, UringFallsBackWhenIoUringIsRefused) {
  SwitchGuard disabled("/proc/sys/kernel/io_uring_disabled", "2");
  ASSERT_TRUE(disabled.set_to("2"));
  ASSERT_TRUE(mount_.Start({"--transport=uring"}));
  const std::string f = mount_.Path("f");
  { UniqueFd fd(open(f.c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }
  struct stat st;
  EXPECT_SYS(stat(f.c_str(), &st));
  EXPECT_TRUE(LogShows(mount_, "serving with the sync transport (uring unavailable: io_uring refused"))
      << mount_.Log();
}

}  // namespace
}  // namespace efuse::testing
