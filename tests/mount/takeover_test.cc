// Supervised mounts (--supervise=on): the server process dies (SIGKILL) and
// a successor takes over the live connection without unmounting. What a
// process held before the kill — an open file, a working directory, an open
// directory listing, a mapping — keeps working, with what was written there.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
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

struct TakeoverConfig {
  const char* name;
  bool passthrough;  // else memfs
  std::vector<std::string> flags;
};
void PrintTo(const TakeoverConfig& c, std::ostream* os) { *os << c.name; }

class TakeoverTest : public ::testing::TestWithParam<TakeoverConfig> {
 protected:
  void SetUp() override {
    std::vector<std::string> flags = {"--supervise=on"};
    if (GetParam().passthrough) {
      ASSERT_FALSE(source_.path().empty());
      flags.push_back("--fs=passthrough");
      flags.push_back("--source=" + source_.path());
    } else {
      flags.push_back("--size=256M");
    }
    flags.insert(flags.end(), GetParam().flags.begin(), GetParam().flags.end());
    ASSERT_TRUE(mount_.Start(flags));
  }
  void TearDown() override {
    if (mount_.running()) EXPECT_TRUE(mount_.Stop()) << mount_.LogForMessage();
  }

  std::map<std::string, std::string> Status() {
    std::map<std::string, std::string> kv;
    EXPECT_TRUE(StatusReader(&mount_).Fresh(&kv));
    return kv;
  }
  // SIGKILL to the server; returns its pid.
  pid_t KillServer() {
    std::map<std::string, std::string> kv = Status();
    const pid_t server = static_cast<pid_t>(std::atol(kv["server_pid"].c_str()));
    EXPECT_GT(server, 0);
    EXPECT_NE(server, mount_.pid()) << "the status file names the supervisor as the server";
    if (server > 0) EXPECT_EQ(kill(server, SIGKILL), 0);
    return server;
  }

  ScratchDir source_;
  EfuseMount mount_;
};

TEST_P(TakeoverTest, KilledServerIsSucceededWithoutUnmounting) {
  ASSERT_EQ(mkdir(mount_.Path("d").c_str(), 0755), 0);
  std::string error;
  ASSERT_TRUE(WriteFile(mount_.Path("d/f"), "before", &error)) << error;
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(WriteFile(mount_.Path("d/e" + std::to_string(i)), "x", &error)) << error;

  // What a process holds across the kill.
  const int map_fd = open(mount_.Path("d/mapped").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(map_fd, 0);
  const int fd = open(mount_.Path("d/f").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
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
  // in the kernel meanwhile: no sleep needed).
  ASSERT_EQ(pwrite(fd, "after!", 6, 0), 6) << strerror(errno);
  char buf[16] = {};
  ASSERT_EQ(pread(fd, buf, 6, 0), 6) << strerror(errno);
  EXPECT_EQ(std::string(buf, 6), "after!");
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 6);
  EXPECT_EQ(fsync(fd), 0) << strerror(errno);
  for (dirent* e; (e = readdir(dir)) != nullptr;) listed.insert(e->d_name);
  EXPECT_EQ(listed.size(), 44u) << "the listing went on where it stopped";  // . .. f mapped e0..e39
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
  EXPECT_EQ(back, "after!");
  ASSERT_TRUE(ReadFile(mount_.Path("d/mapped"), &back, &error)) << error;
  EXPECT_EQ(back.substr(0, 11), "mapped+more");
  EXPECT_EQ(access(mount_.Path("d/made-by-cwd").c_str(), F_OK), 0);
  ASSERT_TRUE(WriteFile(mount_.Path("d/new"), "new", &error)) << error;
  ASSERT_EQ(rename(mount_.Path("d/new").c_str(), mount_.Path("renamed").c_str()), 0);
  ASSERT_EQ(unlink(mount_.Path("d/e0").c_str()), 0);

  std::map<std::string, std::string> kv = Status();
  EXPECT_NE(kv["server_pid"], std::to_string(old_server));
  EXPECT_EQ(kv["server_generation"], "2");
  EXPECT_EQ(kv["takeovers"], "1");
  EXPECT_NE(mount_.Log().find("takeover: server generation 2"), std::string::npos) << mount_.LogForMessage();
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

INSTANTIATE_TEST_SUITE_P(Supervised, TakeoverTest,
                         ::testing::Values(TakeoverConfig{"memfs_kernel_data", false, {"--memfs_data=kernel"}},
                                           TakeoverConfig{"passthrough", true, {}}),
                         [](const ::testing::TestParamInfo<TakeoverConfig>& info) {
                           return std::string(info.param.name);
                         });

// memfs with its data in the daemon cannot be rebuilt: the supervisor ends
// the mount (no dead mount stays) rather than serve an empty file system.
TEST(TakeoverRefusedTest, DaemonDataMemfsEndsTheMountWhenItsServerDies) {
  EfuseMount m;
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

}  // namespace
}  // namespace efuse::testing
