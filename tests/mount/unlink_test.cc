// tests/mount/unlink_test.cc — passthrough: a file's last name unlinked
// through the mount.
//
// The daemon holds such a file across its unlinkat until the kernel forgets
// the node, so that the source frees it on the FORGET path rather than inside
// the UNLINK its client waits for. Pinned here: the source file is freed once
// the kernel forgets the node (no fd of a deleted file is left in the
// daemon), not while a client still keeps the inode (an O_PATH descriptor
// sends no OPEN) for less than a second, and a kernel that keeps many
// unlinked nodes makes the daemon hold no more than its bound. Not a transport matter: one is run.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"
#include "tests/mount/passthrough_sources.h"

namespace efuse::testing {
namespace {

// PassthroughFs::kMaxLastReferences.
constexpr size_t kMaxHeld = 256;
// Named before the tests start, so the source is made for the first one.
const std::string kSourceDir = PassthroughSourceDir("disk");

class UnlinkHoldTest : public MountTest {
 protected:
  std::vector<std::string> DaemonFlags() const override { return PassthroughFlags("disk", {}); }
  std::string Src(const std::string& rel) const { return kSourceDir + "/" + rel; }

  // The daemon's fds of files no longer in the source (no name left).
  size_t DeletedFdsOfDaemon() const {
    const std::string dir = "/proc/" + std::to_string(mount_.pid()) + "/fd";
    size_t n = 0;
    DIR* d = opendir(dir.c_str());
    EXPECT_NE(d, nullptr) << dir;
    if (d == nullptr) return 0;
    while (dirent* e = readdir(d)) {
      char target[4096];
      const ssize_t len = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
      if (len <= 0) continue;
      // A file of the source with no name left (a name the fd was opened
      // by may be gone while another still holds the file).
      struct stat st {};
      if (std::string(target, static_cast<size_t>(len)).rfind(Src(""), 0) == 0 &&
          fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 0) {
        ++n;
      }
    }
    closedir(d);
    return n;
  }
  // Polls (up to 5 s) until the daemon holds no deleted file: FORGET comes
  // after the unlink returns, asynchronously.
  bool NoneHeldEventually() const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (DeletedFdsOfDaemon() != 0) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }
};

TEST_F(UnlinkHoldTest, TheSourceFreesTheFileOnceTheKernelForgetsIt) {
  // Files the kernel learns by lookup only (no OPEN, so no handle is open
  // when they are unlinked), each kept by a client's O_PATH descriptor.
  constexpr int kFiles = 300;
  std::vector<UniqueFd> kept;
  for (int i = 0; i < kFiles; ++i) {
    std::string error;
    ASSERT_TRUE(WriteFile(Src("u" + std::to_string(i)), "data", &error)) << error;
    const int fd = open(Path("u" + std::to_string(i)).c_str(), O_PATH | O_CLOEXEC);
    ASSERT_GE(fd, 0) << ErrnoName(errno);
    kept.emplace_back(fd);
  }
  for (int i = 0; i < kFiles; ++i) ASSERT_SYS(unlink(Path("u" + std::to_string(i)).c_str()));
  struct stat st {};
  EXPECT_ERRNO(stat(Src("u0").c_str(), &st), ENOENT);  // gone from the source at once
  // The kernel keeps every node while the descriptors are open: the daemon
  // holds one file per node, up to its bound.
  EXPECT_EQ(DeletedFdsOfDaemon(), kMaxHeld);
  kept.clear();  // the kernel forgets them now
  EXPECT_TRUE(NoneHeldEventually()) << DeletedFdsOfDaemon() << " deleted files still held";

  // The plain case: written and closed through the mount, then unlinked.
  std::string error;
  ASSERT_TRUE(WriteFile(Path("big"), PatternBytes(1, 4 << 20), &error)) << error;
  ASSERT_SYS(unlink(Path("big").c_str()));
  EXPECT_TRUE(NoneHeldEventually()) << DeletedFdsOfDaemon() << " deleted files still held";
}

// A node the kernel keeps (here a client's O_PATH descriptor keeps it; a
// link count the kernel had stale would too) is let go after a second, at
// the next hold or FORGET: the source gets the file's space back.
TEST_F(UnlinkHoldTest, AHoldTheKernelNeverEndsIsLetGoAfterASecond) {
  std::string error;
  ASSERT_TRUE(WriteFile(Src("kept"), PatternBytes(2, 1 << 20), &error)) << error;
  UniqueFd kept(open(Path("kept").c_str(), O_PATH | O_CLOEXEC));
  ASSERT_SYS(kept.get());
  ASSERT_SYS(unlink(Path("kept").c_str()));
  EXPECT_EQ(DeletedFdsOfDaemon(), 1u);
  // (PassthroughFs::kMaxHoldNs is 1 s: a wait past it, not a guess.)
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_TRUE(WriteFile(Path("next"), "n", &error)) << error;
  ASSERT_SYS(unlink(Path("next").c_str()));
  EXPECT_TRUE(NoneHeldEventually()) << DeletedFdsOfDaemon() << " deleted files still held";
}

// A name that is not the file's last keeps nothing: the file stays in the
// source under its other name.
TEST_F(UnlinkHoldTest, AnotherNameKeepsNothingHeld) {
  std::string error;
  ASSERT_TRUE(WriteFile(Path("a"), "x", &error)) << error;
  ASSERT_SYS(link(Path("a").c_str(), Path("b").c_str()));
  ASSERT_SYS(unlink(Path("a").c_str()));
  EXPECT_EQ(DeletedFdsOfDaemon(), 0u);
  std::string data;
  ASSERT_TRUE(ReadFile(Path("b"), &data, &error)) << error;
  EXPECT_EQ(data, "x");
}

}  // namespace
}  // namespace efuse::testing
