// tests/mount/passthrough_sources.h — source directories for running the
// shared mount suites (posix_test.cc, permission_test.cc) against
// --fs=passthrough.
//
// Owns: two per-process source directories, one on the disk /tmp lives on
// and one that is a private tmpfs while a test runs (tmpfs holds 64 KiB
// xattr values, as the POSIX suite expects; ext4 holds one block), and a
// GoogleTest listener that empties the source before every test (so every
// test starts from an empty source as it does from an empty memfs) and
// unmounts the tmpfs after it. A test whose parameter name starts with
// "tmpfs" uses the tmpfs one. Paths carry the process id, so test binaries
// of several build trees can run at once; they are made only when a test
// runs (listing the tests creates nothing).
//
// Thread-safety: none; used from the test main thread.
#ifndef EFUSE_TESTS_MOUNT_PASSTHROUGH_SOURCES_H_
#define EFUSE_TESTS_MOUNT_PASSTHROUGH_SOURCES_H_

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {

class PassthroughSources : public ::testing::EmptyTestEventListener {
 public:
  // The process-wide instance, registered with GoogleTest on first use.
  static PassthroughSources& Get() {
    static PassthroughSources* sources = [] {
      auto* s = new PassthroughSources();
      ::testing::UnitTest::GetInstance()->listeners().Append(s);  // GoogleTest owns it
      return s;
    }();
    return *sources;
  }
  const std::string& disk() const { return disk_; }
  const std::string& tmpfs() const { return tmpfs_; }

  void OnTestStart(const ::testing::TestInfo& info) override {
    const bool on_tmpfs = std::string(info.name()).find("/tmpfs") != std::string::npos;
    for (const std::string& d : {disk_, tmpfs_}) mkdir(d.c_str(), 0755);
    Empty(disk_);
    if (on_tmpfs && !mounted_) {
      mounted_ = mount("efuse-test", tmpfs_.c_str(), "tmpfs", 0, "mode=0755") == 0;
    }
    Empty(tmpfs_);
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    if (mounted_) umount2(tmpfs_.c_str(), MNT_DETACH);
    mounted_ = false;
    Empty(disk_);
    rmdir(disk_.c_str());
    rmdir(tmpfs_.c_str());
  }

 private:
  PassthroughSources()
      : disk_("/tmp/efuse-ptsuite-" + std::to_string(getpid()) + "-disk"),
        tmpfs_("/tmp/efuse-ptsuite-" + std::to_string(getpid()) + "-tmpfs") {}
  // Removes everything below `dir` (keeps `dir`, 0755 and root's).
  static void Empty(const std::string& dir) {
    if (dir.empty()) return;
    const std::string cmd = "find '" + dir + "' -mindepth 1 -delete 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      const std::string rm = "rm -rf '" + dir + "'/* '" + dir + "'/.[!.]* 2>/dev/null";
      (void)std::system(rm.c_str());
    }
    chmod(dir.c_str(), 0755);
    (void)!chown(dir.c_str(), 0, 0);
  }

  std::string disk_;
  std::string tmpfs_;
  bool mounted_ = false;
};

// The source directory for a config named `name`. Call it while tests are
// instantiated, so PassthroughSources listens before the first test starts.
inline std::string PassthroughSourceDir(const std::string& name) {
  PassthroughSources& s = PassthroughSources::Get();
  return name.rfind("tmpfs", 0) == 0 ? s.tmpfs() : s.disk();
}
// --fs=passthrough on that source, then `extra`.
inline std::vector<std::string> PassthroughFlags(const std::string& name,
                                                 const std::vector<std::string>& extra) {
  return WithFlags({"--fs=passthrough", "--source=" + PassthroughSourceDir(name)}, extra);
}

}  // namespace efuse::testing

#endif  // EFUSE_TESTS_MOUNT_PASSTHROUGH_SOURCES_H_
