// tests/mount/passthrough_mount_test.cc — efused --fs=passthrough on real
// mounts: the data path and what it must keep. Run on every transport.
//
// Each test serves a fresh temporary source directory at a fresh mount
// point (tests/mount/passthrough_fixture.h) and checks, from this process
// and from forked children as other users: that kernel passthrough really
// carries the data (the daemon's per-opcode request counters, read from its
// status file after SIGUSR1, show no READ/WRITE while a large file is read
// and written, and some with --passthrough=off), fsync'd data present in
// the source when the daemon is killed right after, mmap, ownership of files
// created by other users, POSIX/OFD/flock locks between processes and
// against the source, copy_file_range, xattrs (security.* and ACLs), hard
// links as one inode, and a per-file fallback where the kernel refuses a
// backing file.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>


#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"
#include "tests/mount/passthrough_fixture.h"

namespace efuse::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// ---------------------------------------------------------------------------
// Data paths: kernel passthrough versus the daemon.


class DataPathTest : public PassthroughMountTest, public ::testing::WithParamInterface<ModeCase> {
 protected:
  std::vector<std::string> ExtraFlags() const override { return GetParam().flags; }
};

TEST_P(DataPathTest, LargeReadsAndWritesReachTheDaemonOnlyWithoutPassthrough) {
  constexpr size_t kSize = 64 * kMiB;
  const std::string data = PatternBytes(7, kSize);
  {
    std::string error;
    ASSERT_TRUE(WriteFile(Src("big"), data, &error)) << error;
  }
  const auto before = Counts();
  {
    UniqueFd fd(open(Path("big").c_str(), O_RDONLY));
    ASSERT_SYS(fd.get());
    std::string got(kSize, '\0');
    size_t n = 0;
    ASSERT_TRUE(PreadAll(fd.get(), got.data(), kSize, 0, &n)) << ErrnoName(errno);
    ASSERT_EQ(n, kSize);
    EXPECT_TRUE(got == data) << "data read through the mount differs from the source";
  }
  const auto after_read = Counts();
  {
    UniqueFd fd(open(Path("out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
    ASSERT_SYS(fd.get());
    for (size_t off = 0; off < 32 * kMiB; off += kMiB)
      ASSERT_TRUE(PwriteAll(fd.get(), data.data() + off, kMiB, static_cast<off_t>(off)));
    ASSERT_SYS(fsync(fd.get()));
  }
  const auto after_write = Counts();
  {
    std::string out;
    std::string error;
    ASSERT_TRUE(ReadFile(Src("out"), &out, &error)) << error;
    EXPECT_TRUE(out == data.substr(0, 32 * kMiB)) << "the source did not get the written data";
  }
  const uint64_t reads = Delta(after_read, before, "READ");
  const uint64_t writes = Delta(after_write, after_read, "WRITE");
  if (GetParam().passthrough) {
    EXPECT_EQ(reads, 0u) << "READ requests reached the daemon while reading a passthrough file";
    EXPECT_EQ(writes, 0u) << "WRITE requests reached the daemon";
  } else {
    EXPECT_GT(reads, 0u) << "--passthrough=off must serve reads in the daemon";
    EXPECT_GT(writes, 0u);
  }
  // HANDLE_KILLPRIV_V2: no getxattr(security.capability) per write.
  EXPECT_LT(Delta(after_write, after_read, "GETXATTR"), 4u);
}

TEST_P(DataPathTest, MmapSharedReadAndWrite) {
  constexpr size_t kSize = 4 * kMiB;
  WriteSrc("m", PatternBytes(3, kSize));
  const auto before = Counts();
  {
    UniqueFd fd(open(Path("m").c_str(), O_RDWR));
    ASSERT_SYS(fd.get());
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(p, MAP_FAILED) << ErrnoName(errno);
    auto* bytes = static_cast<char*>(p);
    EXPECT_EQ(std::string(bytes, 64), PatternBytes(3, kSize).substr(0, 64));
    std::memcpy(bytes + kMiB, "written through mmap", 20);
    ASSERT_SYS(msync(p, kSize, MS_SYNC));
    munmap(p, kSize);
  }
  const auto after = Counts();
  const std::string src = ReadPath(Src("m"));
  ASSERT_EQ(src.size(), kSize);
  EXPECT_EQ(src.substr(kMiB, 20), "written through mmap");
  if (GetParam().passthrough) {
    EXPECT_EQ(Delta(after, before, "READ"), 0u);
    EXPECT_EQ(Delta(after, before, "WRITE"), 0u);
  }
}

TEST_P(DataPathTest, SpliceAndSendfile) {
  WriteSrc("in", PatternBytes(5, 3 * kMiB));
  const auto before = Counts();
  UniqueFd in(open(Path("in").c_str(), O_RDONLY));
  UniqueFd out(open(Path("copy").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
  ASSERT_SYS(in.get());
  ASSERT_SYS(out.get());
  off_t off = 0;
  size_t left = 3 * kMiB;
  while (left > 0) {
    ssize_t n = sendfile(out.get(), in.get(), &off, left);
    ASSERT_GT(n, 0) << ErrnoName(errno);
    left -= static_cast<size_t>(n);
  }
  out.Reset();
  in.Reset();
  EXPECT_TRUE(ReadPath(Src("copy")) == PatternBytes(5, 3 * kMiB));
  const auto after = Counts();
  if (GetParam().passthrough) {
    EXPECT_EQ(Delta(after, before, "READ"), 0u) << "splice reads go to the backing file";
    EXPECT_EQ(Delta(after, before, "WRITE"), 0u);
  }
}

TEST_P(DataPathTest, ODirectAndAppend) {
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, kMiB), 0);
  const std::string pattern = PatternBytes(9, kMiB);
  std::memcpy(buf, pattern.data(), kMiB);
  {
    UniqueFd fd(open(Path("direct").c_str(), O_RDWR | O_CREAT | O_DIRECT, 0644));
    ASSERT_SYS(fd.get());
    ASSERT_EQ(pwrite(fd.get(), buf, kMiB, 0), static_cast<ssize_t>(kMiB)) << ErrnoName(errno);
    std::memset(buf, 0, kMiB);
    ASSERT_EQ(pread(fd.get(), buf, kMiB, 0), static_cast<ssize_t>(kMiB)) << ErrnoName(errno);
    EXPECT_EQ(std::memcmp(buf, pattern.data(), kMiB), 0);
  }
  free(buf);
  EXPECT_TRUE(ReadPath(Src("direct")) == pattern);
  WriteSrc("log", "one\n");
  UniqueFd a(open(Path("log").c_str(), O_WRONLY | O_APPEND));
  UniqueFd b(open(Path("log").c_str(), O_WRONLY | O_APPEND));
  ASSERT_SYS(a.get());
  ASSERT_SYS(b.get());
  ASSERT_EQ(write(a.get(), "two\n", 4), 4);
  ASSERT_EQ(write(b.get(), "three\n", 6), 6);
  EXPECT_EQ(ReadPath(Path("log")), "one\ntwo\nthree\n");
  // With the writeback cache the source has it once the files are closed.
  a.Reset();
  b.Reset();
  EXPECT_EQ(ReadPath(Src("log")), "one\ntwo\nthree\n");
}

// Writes with their place through a file opened O_APPEND land there: the
// pages of a shared mapping written back (page writeback, not an append),
// and pwrite after fcntl took O_APPEND away. (The daemon's own fd of such a
// handle appends; it used to append these too.)
TEST_P(DataPathTest, WritesWithTheirPlaceThroughAnAppendHandleLandThere) {
  WriteSrc("mapped", std::string(8192, 'a'));
  {
    UniqueFd fd(open(Path("mapped").c_str(), O_RDWR | O_APPEND));
    ASSERT_SYS(fd.get());
    void* m = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(m, MAP_FAILED) << ErrnoName(errno);
    std::memcpy(static_cast<char*>(m) + 4096, "BBBB", 4);
    ASSERT_EQ(msync(m, 8192, MS_SYNC), 0) << ErrnoName(errno);
    munmap(m, 8192);
    ASSERT_EQ(fsync(fd.get()), 0) << ErrnoName(errno);
  }
  std::string want(8192, 'a');
  want.replace(4096, 4, "BBBB");
  EXPECT_TRUE(ReadPath(Src("mapped")) == want) << "the source holds " << ReadPath(Src("mapped")).size() << " bytes";
  // With kernel passthrough the kernel opens its own backing file with the
  // flags the file had at open (fs/fuse/passthrough.c, backing_file_open in
  // fuse_passthrough_open): an F_SETFL after that does not reach it, as no
  // daemon can change. The daemon-served modes follow it.
  if (GetParam().passthrough) return;
  WriteSrc("cleared", "0123456789");
  {
    UniqueFd fd(open(Path("cleared").c_str(), O_WRONLY | O_APPEND));
    ASSERT_SYS(fd.get());
    ASSERT_EQ(write(fd.get(), "AB", 2), 2);  // appended
    ASSERT_EQ(fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_APPEND), 0);
    ASSERT_EQ(pwrite(fd.get(), "xy", 2, 3), 2);  // in place
    ASSERT_EQ(fsync(fd.get()), 0);
  }
  EXPECT_EQ(ReadPath(Src("cleared")), "012xy56789AB");
  EXPECT_EQ(ReadPath(Path("cleared")), "012xy56789AB");
}

TEST_P(DataPathTest, CopyFileRangeWithinTheMount) {
  const std::string data = PatternBytes(11, 2 * kMiB);
  WriteSrc("a", data);
  UniqueFd in(open(Path("a").c_str(), O_RDONLY));
  UniqueFd out(open(Path("b").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
  ASSERT_SYS(in.get());
  ASSERT_SYS(out.get());
  loff_t off_in = 4096, off_out = 0;
  size_t left = kMiB;
  while (left > 0) {
    ssize_t n = copy_file_range(in.get(), &off_in, out.get(), &off_out, left, 0);
    ASSERT_GT(n, 0) << ErrnoName(errno);
    left -= static_cast<size_t>(n);
  }
  out.Reset();
  EXPECT_TRUE(ReadPath(Src("b")) == data.substr(4096, kMiB));
  EXPECT_TRUE(ReadPath(Path("b")) == data.substr(4096, kMiB));
}

// Buffered writes ending mid-page, then an O_DIRECT open of the same file:
// the kernel may write the dirty pages back through the O_DIRECT handle
// (with the writeback cache any writable handle carries writeback), the
// last one shorter than a page, which an O_DIRECT source file refuses. No
// byte may be lost, and the direct write after them must succeed.
TEST_P(DataPathTest, UnalignedWritebackThroughAnODirectHandleLosesNothing) {
  std::string want = PatternBytes(23, 3 * 4096 + 1746);
  int raw;
  ASSERT_SYS(raw = open(Path("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd buffered(raw);
  ASSERT_TRUE(PwriteAll(buffered.get(), want.data(), want.size(), 0));
  ASSERT_SYS(raw = open(Path("f").c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
  UniqueFd direct(raw);
  void* mem = nullptr;
  ASSERT_EQ(posix_memalign(&mem, 4096, 8192), 0);
  std::unique_ptr<void, decltype(&free)> guard(mem, &free);
  const std::string block = PatternBytes(24, 8192);
  std::memcpy(mem, block.data(), block.size());
  ASSERT_EQ(pwrite(direct.get(), mem, 8192, 8192), 8192) << ErrnoName(errno);
  want.replace(8192, 8192, block);
  ASSERT_SYS(fsync(buffered.get()));
  direct.Reset();
  buffered.Reset();
  EXPECT_TRUE(ReadPath(Src("f")) == want) << "the source lost or misplaced bytes";
  EXPECT_TRUE(ReadPath(Path("f")) == want);
}

// What fsync acknowledged is in the source even when the daemon is killed
// right after: with the writeback cache the acknowledged pages were sent to
// the daemon and written to the source before FSYNC was answered. Writes
// after the last fsync (kept beyond the synced size, files left open so no
// close flushes them) may be lost with the daemon; they must not damage
// what was synced.
TEST_P(DataPathTest, FsyncedDataIsInTheSourceWhenTheDaemonIsKilled) {
  constexpr int kFiles = 3;
  constexpr uint64_t kSpan = 2 * kMiB;
  std::mt19937_64 rng(17);
  std::vector<UniqueFd> fds;
  std::vector<std::string> synced(kFiles);  // each file as last acknowledged
  for (int i = 0; i < kFiles; ++i) {
    int raw;
    ASSERT_SYS(raw = open(Path("durable" + std::to_string(i)).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    fds.emplace_back(raw);
  }
  std::vector<std::string> model(kFiles);
  for (int round = 0; round < 200; ++round) {
    const int i = static_cast<int>(rng() % kFiles);
    const uint64_t offset = rng() % kSpan;
    const uint64_t len = 1 + rng() % (rng() % 4 == 0 ? 256 * 1024 : 8192);
    const std::string data = PatternBytes(rng(), len);
    ASSERT_TRUE(PwriteAll(fds[i].get(), data.data(), len, static_cast<off_t>(offset))) << ErrnoName(errno);
    if (model[i].size() < offset + len) model[i].resize(offset + len, '\0');
    model[i].replace(offset, len, data);
    if (rng() % 5 == 0) {
      ASSERT_SYS(round % 2 == 0 ? fsync(fds[i].get()) : fdatasync(fds[i].get()));
      synced[i] = model[i];
    }
  }
  for (int i = 0; i < kFiles; ++i) {
    ASSERT_SYS(fsync(fds[i].get()));
    synced[i] = model[i];
    // Unsynced writes past the synced end: these may be lost.
    const std::string tail = PatternBytes(rng(), 100 * 1024);
    ASSERT_TRUE(PwriteAll(fds[i].get(), tail.data(), tail.size(), static_cast<off_t>(synced[i].size())));
  }
  mount_.Signal(SIGKILL);
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status));
  fds.clear();  // the connection is gone: closing flushes nothing
  for (int i = 0; i < kFiles; ++i) {
    const std::string source = ReadPath(Src("durable" + std::to_string(i)));
    ASSERT_GE(source.size(), synced[i].size()) << "file " << i << " is shorter than what fsync acknowledged";
    EXPECT_TRUE(source.compare(0, synced[i].size(), synced[i]) == 0)
        << "file " << i << ": bytes fsync acknowledged are not in the source";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, DataPathTest,
    ::testing::Values(
        ModeCase{"auto", {}, true}, ModeCase{"on", {"--passthrough=on"}, true},
        ModeCase{"off", {"--passthrough=off"}, false},
        ModeCase{"off_no_writeback", {"--passthrough=off", "--writeback_cache=false"}, false}),
    [](const ::testing::TestParamInfo<ModeCase>& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------
// Identity: hard links, xattrs.

// system.posix_acl_access: user::rw- user:1234:r-- group::--- mask::r--
// other::---
constexpr uint8_t kAclUser1234Reads[] = {
    2,    0, 0, 0,                           // version
    1,    0, 6, 0, 0xff, 0xff, 0xff, 0xff,   // USER_OBJ
    2,    0, 4, 0, 0xd2, 0x04, 0,    0,      // USER 1234
    4,    0, 0, 0, 0xff, 0xff, 0xff, 0xff,   // GROUP_OBJ
    0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,   // MASK
    0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};  // OTHER

class IdentityTest : public PassthroughMountTest {
 protected:
  void PrepareSource() override {
    WriteSrc("a", "shared data");
    ASSERT_EQ(mkdir(Src("d").c_str(), 0755), 0);
    ASSERT_EQ(link(Src("a").c_str(), Src("d/b").c_str()), 0);
  }
};

TEST_F(IdentityTest, HardLinksOfTheSourceAreOneInode) {
  struct stat a {
  }, b{}, s{};
  ASSERT_SYS(stat(Path("a").c_str(), &a));
  ASSERT_SYS(stat(Path("d/b").c_str(), &b));
  ASSERT_SYS(stat(Src("a").c_str(), &s));
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_ino, s.st_ino) << "the mount shows the source's inode numbers";
  EXPECT_EQ(a.st_nlink, 2u);
  ASSERT_SYS(link(Path("a").c_str(), Path("c").c_str()));
  struct stat c {};
  ASSERT_SYS(stat(Path("c").c_str(), &c));
  EXPECT_EQ(c.st_ino, a.st_ino);
  EXPECT_EQ(c.st_nlink, 3u);
  {
    UniqueFd fd(open(Path("d/b").c_str(), O_WRONLY | O_TRUNC));
    ASSERT_SYS(fd.get());
    ASSERT_EQ(write(fd.get(), "changed", 7), 7);
  }
  EXPECT_EQ(ReadPath(Path("a")), "changed");
  EXPECT_EQ(ReadPath(Path("c")), "changed");
}

TEST_F(IdentityTest, ExtendedAttributesIncludingSecurity) {
  const std::string f = Path("a");
  ASSERT_SYS(setxattr(f.c_str(), "user.color", "blue", 4, 0));
  ASSERT_SYS(setxattr(f.c_str(), "security.efuse-test", "label", 5, 0));
  ASSERT_SYS(setxattr(f.c_str(), "trusted.efuse-test", "t", 1, 0));
  char buf[256];
  ssize_t n = getxattr(Src("a").c_str(), "user.color", buf, sizeof(buf));
  ASSERT_EQ(n, 4) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, 4), "blue");
  n = getxattr(Src("a").c_str(), "security.efuse-test", buf, sizeof(buf));
  ASSERT_EQ(n, 5) << ErrnoName(errno);
  n = getxattr(f.c_str(), "security.efuse-test", buf, sizeof(buf));
  ASSERT_EQ(n, 5) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, 5), "label");
  // Set in the source, seen on the mount.
  ASSERT_SYS(setxattr(Src("d/b").c_str(), "user.from-source", "s", 1, 0));
  n = getxattr(f.c_str(), "user.from-source", buf, sizeof(buf));
  EXPECT_EQ(n, 1) << ErrnoName(errno);
  n = listxattr(f.c_str(), buf, sizeof(buf));
  ASSERT_GT(n, 0) << ErrnoName(errno);
  std::string list(buf, static_cast<size_t>(n));
  for (const char* name :
       {"user.color", "security.efuse-test", "trusted.efuse-test", "user.from-source"})
    EXPECT_NE(list.find(name), std::string::npos) << name;
  ASSERT_SYS(removexattr(f.c_str(), "user.color"));
  EXPECT_ERRNO(getxattr(Src("a").c_str(), "user.color", buf, sizeof(buf)), ENODATA);
  EXPECT_ERRNO(getxattr(f.c_str(), "user.nothing", buf, sizeof(buf)), ENODATA);
  // Size probe and a too-small buffer.
  EXPECT_EQ(getxattr(f.c_str(), "security.efuse-test", nullptr, 0), 5);
  EXPECT_ERRNO(getxattr(f.c_str(), "security.efuse-test", buf, 2), ERANGE);
}

// `ls -l` asks every file for security.selinux: the daemon remembers the
// source's "no such attribute" (for the attribute lifetime) instead of
// opening the inode again, and forgets it when an xattr is set through the
// mount.
TEST_F(IdentityTest, AbsentSecurityLabelIsRememberedUntilSetThroughTheMount) {
  const std::string f = Path("a");
  char buf[64];
  StatusReader status(&mount_);
  EXPECT_ERRNO(getxattr(f.c_str(), "security.selinux", buf, sizeof(buf)), ENODATA);
  const uint64_t before = status.Number("pt_xattr_absences_answered");
  for (int i = 0; i < 5; ++i)
    EXPECT_ERRNO(getxattr(f.c_str(), "security.selinux", buf, sizeof(buf)), ENODATA);
  EXPECT_EQ(status.Number("pt_xattr_absences_answered"), before + 5);
  // Other names still reach the source.
  EXPECT_ERRNO(getxattr(f.c_str(), "user.nothing", buf, sizeof(buf)), ENODATA);
  EXPECT_EQ(status.Number("pt_xattr_absences_answered"), before + 5);

  // Set through the mount (here, and through the hard link d/b): seen at once.
  ASSERT_SYS(setxattr(Path("d/b").c_str(), "security.selinux", "label", 5, 0));
  ssize_t n = getxattr(f.c_str(), "security.selinux", buf, sizeof(buf));
  ASSERT_EQ(n, 5) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, 5), "label");
  ASSERT_SYS(removexattr(f.c_str(), "security.selinux"));
  EXPECT_ERRNO(getxattr(f.c_str(), "security.selinux", buf, sizeof(buf)), ENODATA);
  EXPECT_ERRNO(getxattr(Src("a").c_str(), "security.selinux", buf, sizeof(buf)), ENODATA);
}

// --posix_acl=false on a mount only root may use (no allow_other, user_id
// 0): ACLs are the source's alone (read, set and enforced there), and with
// no default_permissions creating and removing names costs no GETATTR of
// the directory, which the kernel needs after every change to it when it
// checks permissions itself.
class NoKernelAclTest : public IdentityTest {
 protected:
  std::vector<std::string> ExtraFlags() const override { return {"--posix_acl=false"}; }
};

TEST_F(NoKernelAclTest, AclsAreTheSourcesAndCreatesSkipTheDirectoryGetattr) {
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&mount_).Fresh(&kv));
  EXPECT_EQ(kv["pt_posix_acl"], "off");
  const auto& acl = kAclUser1234Reads;
  const std::string f = Path("a");
  if (setxattr(f.c_str(), "system.posix_acl_access", acl, sizeof(acl), 0) != 0)
    GTEST_SKIP() << "the source has no POSIX ACLs: " << ErrnoName(errno);
  uint8_t buf[128];
  ASSERT_EQ(getxattr(Src("a").c_str(), "system.posix_acl_access", buf, sizeof(buf)),
            static_cast<ssize_t>(sizeof(acl)));
  EXPECT_EQ(std::memcmp(buf, acl, sizeof(acl)), 0);
  ASSERT_EQ(getxattr(f.c_str(), "system.posix_acl_access", buf, sizeof(buf)),
            static_cast<ssize_t>(sizeof(acl)));
  EXPECT_EQ(std::memcmp(buf, acl, sizeof(acl)), 0);
  struct stat st {};
  ASSERT_SYS(stat(Src("a").c_str(), &st));
  EXPECT_EQ(st.st_mode & 0777, 0640u) << "the ACL's mask is the group class, set by the source";
  ASSERT_SYS(removexattr(f.c_str(), "system.posix_acl_access"));
  EXPECT_ERRNO(getxattr(Src("a").c_str(), "system.posix_acl_access", buf, sizeof(buf)), ENODATA);

  ASSERT_SYS(mkdir(Path("many").c_str(), 0755));
  StatusReader status(&mount_);
  const uint64_t before = status.Number("requests_GETATTR");
  constexpr int kFiles = 50;
  for (int i = 0; i < kFiles; ++i) {
    const std::string p = Path("many/f" + std::to_string(i));
    UniqueFd fd(open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644));
    ASSERT_SYS(fd.get());
  }
  for (int i = 0; i < kFiles; ++i) ASSERT_SYS(unlink(Path("many/f" + std::to_string(i)).c_str()));
  // With POSIX ACLs on (the default): one per create and one per unlink.
  EXPECT_LT(status.Number("requests_GETATTR") - before, 5u);
  EXPECT_SYS(rmdir(Src("many").c_str()));  // every name went from the source
}

// ---------------------------------------------------------------------------
// Other users (allow_other): ownership, permissions, ACLs.

class MultiUserTest : public PassthroughMountTest {
 protected:
  std::vector<std::string> ExtraFlags() const override { return {"-o", "allow_other"}; }
  void PrepareSource() override {
    ASSERT_EQ(mkdir(Src("pub").c_str(), 0777), 0);
    ASSERT_EQ(chmod(Src("pub").c_str(), 01777), 0);
    ASSERT_EQ(mkdir(Src("grp").c_str(), 0770), 0);
    ASSERT_EQ(chown(Src("grp").c_str(), 0, 4321), 0);
    ASSERT_EQ(chmod(Src("grp").c_str(), 02770), 0);
    WriteSrc("private", "root only");
    ASSERT_EQ(chmod(Src("private").c_str(), 0600), 0);
    WriteSrc("acl", "acl data");
    ASSERT_EQ(chmod(Src("acl").c_str(), 0600), 0);
  }
};

// A mount for one other user (-o user_id, no allow_other) without POSIX
// ACLs: the daemon still opens files as root, so the kernel must check that
// user (default_permissions is added, as for allow_other).
class OtherOwnerNoAclTest : public PassthroughMountTest {
 protected:
  std::vector<std::string> ExtraFlags() const override {
    return {"-o", "user_id=1234,group_id=1234", "--posix_acl=false"};
  }
  void PrepareSource() override {
    WriteSrc("private", "root only");
    ASSERT_EQ(chmod(Src("private").c_str(), 0600), 0);
    WriteSrc("mine", "theirs");
    ASSERT_EQ(chown(Src("mine").c_str(), 1234, 1234), 0);
    ASSERT_EQ(chmod(Src("mine").c_str(), 0600), 0);
  }
};

TEST_F(OtherOwnerNoAclTest, TheKernelStillChecksTheMountsUser) {
  EXPECT_NE(mount_.Log().find("default_permissions added"), std::string::npos) << mount_.Log();
  const std::string priv = Path("private"), mine = Path("mine");
  Creds owner{1234, 1234, {}};
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, open(priv.c_str(), O_RDONLY), EACCES);
        int fd = open(mine.c_str(), O_RDONLY);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
      },
      &owner));
}

TEST_F(MultiUserTest, FilesCreatedByAnotherUserBelongToThem) {
  {
    // Other users may use the mount: the kernel checks them (POSIX ACLs on, the default).
    std::map<std::string, std::string> kv;
    ASSERT_TRUE(StatusReader(&mount_).Fresh(&kv));
    EXPECT_EQ(kv["pt_posix_acl"], "on");
    EXPECT_NE(mount_.Log().find("default_permissions added"), std::string::npos) << mount_.Log();
  }
  const std::string pub = Path("pub");
  Creds user{1234, 1234, {}};
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        umask(022);
        int fd = open((pub + "/file").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) {
          CHILD_CHECK(c, write(fd, "mine", 4) == 4);
          close(fd);
        }
        CHILD_EXPECT_OK(c, mkdir((pub + "/dir").c_str(), 0777));
        CHILD_EXPECT_OK(c, symlink("file", (pub + "/link").c_str()));
        CHILD_EXPECT_OK(c, mkfifo((pub + "/fifo").c_str(), 0666));
        CHILD_EXPECT_OK(c, mknod((pub + "/node").c_str(), S_IFREG | 0640, 0));
        struct stat st {};
        CHILD_EXPECT_OK(c, stat((pub + "/file").c_str(), &st));
        CHILD_CHECK(c, st.st_uid == 1234 && st.st_gid == 1234);
        // O_TMPFILE, then linked into the directory.
        int t = open(pub.c_str(), O_TMPFILE | O_WRONLY, 0600);
        CHILD_EXPECT_OK(c, t);
        if (t >= 0) {
          char proc[64];
          std::snprintf(proc, sizeof(proc), "/proc/self/fd/%d", t);
          CHILD_EXPECT_OK(
              c, linkat(AT_FDCWD, proc, AT_FDCWD, (pub + "/tmp").c_str(), AT_SYMLINK_FOLLOW));
          close(t);
        }
      },
      &user));
  for (const char* name : {"file", "dir", "link", "fifo", "node", "tmp"}) {
    struct stat st {};
    ASSERT_SYS(lstat(Src(std::string("pub/") + name).c_str(), &st));
    EXPECT_EQ(st.st_uid, 1234u) << name;
    EXPECT_EQ(st.st_gid, 1234u) << name;
  }
  struct stat st {};
  ASSERT_SYS(stat(Src("pub/file").c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 0644u) << "the caller's umask applies";
  ASSERT_SYS(stat(Src("pub/dir").c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(ReadPath(Src("pub/file")), "mine");
  // The daemon is itself again for root.
  ASSERT_SYS(mkdir(Path("pub/roots").c_str(), 0755));
  ASSERT_SYS(stat(Src("pub/roots").c_str(), &st));
  EXPECT_EQ(st.st_uid, 0u);
}

TEST_F(MultiUserTest, SetgidDirectoryAndPermissionsAreEnforced) {
  const std::string grp = Path("grp");
  Creds member{1234, 1234, {4321}};
  Creds outsider{5678, 5678, {}};
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        int fd = open((grp + "/f").c_str(), O_WRONLY | O_CREAT, 0644);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        CHILD_EXPECT_OK(c, mkdir((grp + "/sub").c_str(), 0755));
      },
      &member));
  struct stat st {};
  ASSERT_SYS(stat(Src("grp/f").c_str(), &st));
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 4321u) << "a setgid directory hands its group down";
  ASSERT_SYS(stat(Src("grp/sub").c_str(), &st));
  EXPECT_EQ(st.st_gid, 4321u);
  EXPECT_NE(st.st_mode & S_ISGID, 0u);
  const std::string priv = Path("private");
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, open(priv.c_str(), O_RDONLY), EACCES);
        CHILD_EXPECT_ERRNO(c, open((grp + "/x").c_str(), O_WRONLY | O_CREAT, 0644), EACCES);
        CHILD_EXPECT_ERRNO(c, chmod(priv.c_str(), 0666), EPERM);
      },
      &outsider));
}

TEST_F(MultiUserTest, PosixAclGrantsAccess) {
  const auto& acl = kAclUser1234Reads;
  if (setxattr(Src("acl").c_str(), "system.posix_acl_access", acl, sizeof(acl), 0) != 0)
    GTEST_SKIP() << "the source has no POSIX ACLs: " << ErrnoName(errno);
  const std::string f = Path("acl");
  char buf[128];
  EXPECT_EQ(getxattr(f.c_str(), "system.posix_acl_access", buf, sizeof(buf)),
            static_cast<ssize_t>(sizeof(acl)));
  Creds named{1234, 1234, {}};
  Creds other{5678, 5678, {}};
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        int fd = open(f.c_str(), O_RDONLY);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        CHILD_EXPECT_ERRNO(c, open(f.c_str(), O_WRONLY), EACCES);
      },
      &named));
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) { CHILD_EXPECT_ERRNO(c, open(f.c_str(), O_RDONLY), EACCES); }, &other));
}

TEST_F(MultiUserTest, DefaultAclReplacesTheCallersUmaskAsInTheSource) {
  // Default ACL user::rwx group::r-x other::rwx: under it the creator's
  // umask does not apply (POSIX.1e); elsewhere it does.
  const uint8_t acl[] = {2,    0, 0, 0,                           // version
                         1,    0, 7, 0, 0xff, 0xff, 0xff, 0xff,   // USER_OBJ
                         4,    0, 5, 0, 0xff, 0xff, 0xff, 0xff,   // GROUP_OBJ
                         0x20, 0, 7, 0, 0xff, 0xff, 0xff, 0xff};  // OTHER
  ASSERT_EQ(mkdir(Src("inherit").c_str(), 0755), 0);
  if (setxattr(Src("inherit").c_str(), "system.posix_acl_default", acl, sizeof(acl), 0) != 0)
    GTEST_SKIP() << "the source has no POSIX ACLs: " << ErrnoName(errno);
  // The same creations in the source directly and through the mount.
  auto create_all = [](const std::string& dir, const std::string& tag, ChildChecks& c) {
    umask(077);
    int fd = open((dir + "/inherit/f" + tag).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
    CHILD_EXPECT_OK(c, fd);
    if (fd >= 0) close(fd);
    CHILD_EXPECT_OK(c, mkdir((dir + "/inherit/d" + tag).c_str(), 0777));
    CHILD_EXPECT_OK(c, mknod((dir + "/inherit/n" + tag).c_str(), S_IFREG | 0666, 0));
    fd = open((dir + "/pub/f" + tag).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
    CHILD_EXPECT_OK(c, fd);
    if (fd >= 0) close(fd);
    // A worker that served umask 077 keeps no trace of it for the next caller.
    umask(022);
    fd = open((dir + "/pub/g" + tag).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
    CHILD_EXPECT_OK(c, fd);
    if (fd >= 0) close(fd);
    CHILD_EXPECT_OK(c, mkdir((dir + "/pub/d" + tag).c_str(), 0777));
  };
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) { create_all(src_, "native", c); }));
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) { create_all(mount_.path(), "mount", c); }));
  const std::pair<const char*, mode_t> expected[] = {
      {"inherit/f", 0646}, {"inherit/d", 0757}, {"inherit/n", 0646},
      {"pub/f", 0600},     {"pub/g", 0644},     {"pub/d", 0755}};
  for (const auto& [name, mode] : expected) {
    struct stat native {}, mounted {};
    ASSERT_SYS(lstat(Src(std::string(name) + "native").c_str(), &native));
    ASSERT_SYS(lstat(Src(std::string(name) + "mount").c_str(), &mounted));
    EXPECT_EQ(native.st_mode & 07777, mode) << name;
    EXPECT_EQ(mounted.st_mode & 07777, native.st_mode & 07777) << name;
  }
}

// A setuid file opened for writing by its (non-root) owner is served by the
// daemon through the FUSE page cache; root's opens of it use kernel
// passthrough, whose writes bypass that cache. The owner's next open must
// not keep the pages it cached before root's same-size write.
TEST_F(MultiUserTest, PassthroughWritesAreNotHiddenByPagesCachedBefore) {
  WriteSrc("setuid", "AAAA");
  ASSERT_SYS(chown(Src("setuid").c_str(), 1234, 1234));
  ASSERT_SYS(chmod(Src("setuid").c_str(), 04766));
  const std::string f = Path("setuid");
  Creds owner{1234, 1234, {}};
  auto read_as_owner = [&](const char* want) {
    return RunInChild(
        [&](ChildChecks& c) {
          int fd = open(f.c_str(), O_RDWR);  // writable + setuid: daemon-served
          CHILD_EXPECT_OK(c, fd);
          if (fd < 0) return;
          char buf[8] = {};
          CHILD_CHECK(c, pread(fd, buf, sizeof(buf), 0) == 4);
          CHILD_CHECK(c, std::string(buf, 4) == want);
          close(fd);
        },
        &owner);
  };
  ASSERT_TRUE(read_as_owner("AAAA"));
  {
    UniqueFd fd(open(f.c_str(), O_RDWR));  // root: kernel passthrough
    ASSERT_SYS(fd.get());
    ASSERT_EQ(pwrite(fd.get(), "BBBB", 4, 0), 4);
  }
  EXPECT_EQ(ReadPath(Src("setuid")), "BBBB");
  EXPECT_TRUE(read_as_owner("BBBB"));
}

// ---------------------------------------------------------------------------
// Locks between processes, carried to the source file.

class LockTest : public PassthroughMountTest {
 protected:
  void PrepareSource() override { WriteSrc("f", std::string(4096, 'l')); }
};

TEST_F(LockTest, PosixLocksConflictAcrossProcessesAndWithTheSource) {
  const std::string f = Path("f"), s = Src("f");
  UniqueFd fd(open(f.c_str(), O_RDWR));
  UniqueFd other(open(f.c_str(), O_RDONLY));  // a second fd of this process
  ASSERT_SYS(fd.get());
  ASSERT_SYS(other.get());
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 100;
  ASSERT_SYS(fcntl(fd.get(), F_SETLK, &fl));
  const pid_t me = getpid();
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) {
    int cfd = open(f.c_str(), O_RDWR);
    CHILD_EXPECT_OK(c, cfd);
    struct flock want {};
    want.l_type = F_WRLCK;
    want.l_whence = SEEK_SET;
    want.l_start = 50;
    want.l_len = 10;
    CHILD_EXPECT_ERRNO(c, fcntl(cfd, F_SETLK, &want), EAGAIN);
    struct flock probe = want;
    CHILD_EXPECT_OK(c, fcntl(cfd, F_GETLK, &probe));
    CHILD_CHECK(c, probe.l_type == F_WRLCK);
    CHILD_CHECK(c, probe.l_pid == me);
    // Past the locked range: free.
    want.l_start = 200;
    CHILD_EXPECT_OK(c, fcntl(cfd, F_SETLK, &want));
    // A process using the source directly sees the lock.
    int sfd = open(s.c_str(), O_RDWR);
    struct flock direct {};
    direct.l_type = F_WRLCK;
    direct.l_whence = SEEK_SET;
    direct.l_start = 0;
    direct.l_len = 1;
    CHILD_EXPECT_ERRNO(c, fcntl(sfd, F_SETLK, &direct), EAGAIN);
    close(sfd);
    close(cfd);
  }));
  // POSIX: closing any fd of the file drops the process's locks.
  other.Reset();
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) {
    int cfd = open(f.c_str(), O_RDWR);
    struct flock want {};
    want.l_type = F_WRLCK;
    want.l_whence = SEEK_SET;
    want.l_len = 100;
    CHILD_EXPECT_OK(c, fcntl(cfd, F_SETLK, &want));
    close(cfd);
  }));
}

TEST_F(LockTest, BlockingLockWaitsForTheHolder) {
  const std::string f = Path("f");
  UniqueFd fd(open(f.c_str(), O_RDWR));
  ASSERT_SYS(fd.get());
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_SYS(fcntl(fd.get(), F_SETLK, &fl));
  std::thread releaser([&] {
    std::this_thread::sleep_for(milliseconds(300));
    struct flock un {};
    un.l_type = F_UNLCK;
    un.l_whence = SEEK_SET;
    fcntl(fd.get(), F_SETLK, &un);
  });
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) {
    int cfd = open(f.c_str(), O_RDWR);
    struct flock want {};
    want.l_type = F_WRLCK;
    want.l_whence = SEEK_SET;
    CHILD_EXPECT_OK(c, fcntl(cfd, F_SETLKW, &want));
    close(cfd);
  }));
  releaser.join();
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(250));
}

TEST_F(LockTest, OfdLocksAndFlock) {
  const std::string f = Path("f"), s = Src("f");
  UniqueFd a(open(f.c_str(), O_RDWR));
  UniqueFd b(open(f.c_str(), O_RDWR));
  ASSERT_SYS(a.get());
  ASSERT_SYS(b.get());
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_len = 10;
  ASSERT_SYS(fcntl(a.get(), F_OFD_SETLK, &fl));
  // OFD locks conflict between open files, even in one process.
  struct flock again = fl;
  EXPECT_ERRNO(fcntl(b.get(), F_OFD_SETLK, &again), EAGAIN);
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) {
    int cfd = open(f.c_str(), O_RDWR);
    struct flock want {};
    want.l_type = F_RDLCK;
    want.l_whence = SEEK_SET;
    want.l_len = 10;
    CHILD_EXPECT_ERRNO(c, fcntl(cfd, F_OFD_SETLK, &want), EAGAIN);
    close(cfd);
  }));
  // Closing the open file releases its OFD lock.
  a.Reset();
  struct flock now = fl;
  EXPECT_SYS(fcntl(b.get(), F_OFD_SETLK, &now));
  now.l_type = F_UNLCK;
  EXPECT_SYS(fcntl(b.get(), F_OFD_SETLK, &now));

  ASSERT_SYS(flock(b.get(), LOCK_EX));
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) {
    int cfd = open(f.c_str(), O_RDONLY);
    CHILD_EXPECT_ERRNO(c, flock(cfd, LOCK_SH | LOCK_NB), EWOULDBLOCK);
    int sfd = open(s.c_str(), O_RDONLY);
    CHILD_EXPECT_ERRNO(c, flock(sfd, LOCK_SH | LOCK_NB), EWOULDBLOCK);
    close(sfd);
    close(cfd);
  }));
  b.Reset();
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) {
    int cfd = open(f.c_str(), O_RDONLY);
    CHILD_EXPECT_OK(c, flock(cfd, LOCK_EX | LOCK_NB));
    close(cfd);
  }));
}

// The kernel sends RELEASE in the background after close() returns, so the
// next lock request can reach another worker while the RELEASE that frees
// the lock is still being handled. Many rounds, so a reordering shows.
TEST_F(LockTest, CloseFreesOfdLocksAndFlocksForTheNextLockRequest) {
  const std::string f = Path("f");
  UniqueFd other(open(f.c_str(), O_RDWR));
  ASSERT_SYS(other.get());
  for (int round = 0; round < 300; ++round) {
    SCOPED_TRACE(round);
    UniqueFd holder(open(f.c_str(), O_RDWR));
    ASSERT_SYS(holder.get());
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_len = 10;
    if (round % 2 == 0) {
      ASSERT_SYS(fcntl(holder.get(), F_OFD_SETLK, &fl));
      holder.Reset();
      struct flock want = fl;
      ASSERT_SYS(fcntl(other.get(), F_OFD_SETLK, &want));
      want.l_type = F_UNLCK;
      ASSERT_SYS(fcntl(other.get(), F_OFD_SETLK, &want));
    } else {
      ASSERT_SYS(flock(holder.get(), LOCK_EX));
      holder.Reset();
      ASSERT_SYS(flock(other.get(), LOCK_EX | LOCK_NB));
      ASSERT_SYS(flock(other.get(), LOCK_UN));
    }
  }
}

// ---------------------------------------------------------------------------
// Kernel refusal: a source on a stacked file system (overlayfs) cannot back
// passthrough files with max_stack_depth 1, so each file falls back to the
// daemon, logged once.

class FallbackTest : public PassthroughMountTest {
 protected:
  void PrepareSource() override {
    char tmpl[] = "/tmp/efuse-ovl-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    ovl_ = tmpl;
    for (const char* d : {"/lower", "/upper", "/work", "/merged"})
      ASSERT_EQ(mkdir((ovl_ + d).c_str(), 0755), 0);
    std::string error;
    ASSERT_TRUE(WriteFile(ovl_ + "/lower/f", PatternBytes(1, 2 * kMiB), &error)) << error;
    const std::string opts =
        "lowerdir=" + ovl_ + "/lower,upperdir=" + ovl_ + "/upper,workdir=" + ovl_ + "/work";
    if (mount("overlay", (ovl_ + "/merged").c_str(), "overlay", 0, opts.c_str()) != 0) {
      GTEST_SKIP() << "no overlayfs here: " << ErrnoName(errno);
    }
    mounted_ = true;
    RemoveTree(src_);
    src_ = ovl_ + "/merged";
  }
  void TearDown() override {
    PassthroughMountTest::TearDown();  // removes the overlay's contents
    if (mounted_) umount2((ovl_ + "/merged").c_str(), MNT_DETACH);
    RemoveTree(ovl_);
    src_.clear();
  }
  std::string ovl_;
  bool mounted_ = false;
};

TEST_F(FallbackTest, RefusedBackingFilesAreServedByTheDaemon) {
  const auto before = Counts();
  EXPECT_TRUE(ReadPath(Path("f")) == PatternBytes(1, 2 * kMiB));
  EXPECT_TRUE(ReadPath(Path("f")) == PatternBytes(1, 2 * kMiB));
  const auto after = Counts();
  EXPECT_GT(Delta(after, before, "READ"), 0u) << "the daemon serves what the kernel refused";
  const std::string log = mount_.Log();
  size_t lines = 0;
  for (size_t p = log.find("refused a backing file"); p != std::string::npos;
       p = log.find("refused a backing file", p + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << "one log line for the refusal" << mount_.LogForMessage();
}

// --passthrough=on: a file the kernel will not back fails to open (EIO)
// instead of being served by the daemon.
class FallbackRequiredTest : public FallbackTest {
 protected:
  std::vector<std::string> ExtraFlags() const override { return {"--passthrough=on"}; }
};

TEST_F(FallbackRequiredTest, RefusedBackingFileFailsTheOpen) {
  EXPECT_ERRNO(open(Path("f").c_str(), O_RDONLY), EIO);
  struct stat st {};
  EXPECT_SYS(stat(Path("f").c_str(), &st));  // everything but the data works
}

}  // namespace
}  // namespace efuse::testing
