// tests/mount/passthrough_fixture.h — a passthrough mount of a fresh
// source directory, for the passthrough mount suites
// (passthrough_mount_test.cc: data paths, identity, users, locks, fallback;
// passthrough_source_test.cc: the source changed behind the mount, walks,
// listings, many files, command lines).
#ifndef EFUSE_TESTS_MOUNT_PASSTHROUGH_FIXTURE_H_
#define EFUSE_TESTS_MOUNT_PASSTHROUGH_FIXTURE_H_

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {

inline constexpr size_t kMiB = 1 << 20;

inline void RemoveTree(const std::string& dir) {
  if (dir.empty()) return;
  RunCommand({"/bin/rm", "-rf", dir}, std::chrono::seconds(60));
}

inline uint64_t Delta(const std::map<std::string, uint64_t>& after,
                      const std::map<std::string, uint64_t>& before, const std::string& op) {
  auto a = after.find(op);
  auto b = before.find(op);
  return (a == after.end() ? 0 : a->second) - (b == before.end() ? 0 : b->second);
}

class PassthroughMountTest : public MountTest {
 protected:
  void SetUp() override {
    umask(022);
    char tmpl[] = "/tmp/efuse-ptsrc-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    src_ = tmpl;
    ASSERT_EQ(chmod(src_.c_str(), 0755), 0);
    PrepareSource();
    if (HasFatalFailure()) return;
    MountTest::SetUp();
  }
  void TearDown() override {
    MountTest::TearDown();
    RemoveTree(src_);
  }
  std::vector<std::string> DaemonFlags() const override {
    std::vector<std::string> f = {"--fs=passthrough", "--source=" + src_};
    for (const std::string& x : ExtraFlags()) f.push_back(x);
    return f;
  }
  virtual std::vector<std::string> ExtraFlags() const { return {}; }
  // Runs before the mount: fill the source.
  virtual void PrepareSource() {}

  std::string Src(std::string_view rel) const { return src_ + "/" + std::string(rel); }
  void WriteSrc(std::string_view rel, std::string_view data) {
    std::string error;
    ASSERT_TRUE(WriteFile(Src(rel), data, &error)) << error;
  }
  std::string ReadPath(const std::string& path) {
    std::string data, error;
    EXPECT_TRUE(ReadFile(path, &data, &error)) << error;
    return data;
  }
  std::map<std::string, uint64_t> Counts() {
    std::map<std::string, uint64_t> c;
    EXPECT_TRUE(StatusReader(&mount_).Counts(&c));
    return c;
  }

  std::string src_;
};


// A passthrough configuration a suite runs under.
struct ModeCase {
  const char* name;
  std::vector<std::string> flags;
  bool passthrough;  // data should bypass the daemon
};
inline void PrintTo(const ModeCase& c, std::ostream* os) { *os << c.name; }

}  // namespace efuse::testing

#endif  // EFUSE_TESTS_MOUNT_PASSTHROUGH_FIXTURE_H_
