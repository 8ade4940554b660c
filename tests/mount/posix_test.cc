// tests/mount/posix_test.cc — POSIX behaviour of memfs on a real efused mount.
//
// Every test gets a fresh mount (tests/mount/mount_fixture.h) and works on it
// from this process with plain syscalls, checking exact errno values and
// contents. The suite runs three times: with the daemon's defaults, with
// entry/attribute caching off (so the daemon answers what the kernel would
// otherwise answer from its caches), and with one-page requests
// (--max_write=4K: every large read and write is split).
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr long kFuseSuperMagic = 0x65735546;

long Renameat2(const std::string& from, const std::string& to, unsigned flags) {
  return syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags);
}

// Test-side helpers that fail the test (non-fatally) and return a value.
std::string Read(const std::string& path) {
  std::string data, error;
  EXPECT_TRUE(ReadFile(path, &data, &error)) << error;
  return data;
}
void Write(const std::string& path, std::string_view data) {
  std::string error;
  EXPECT_TRUE(WriteFile(path, data, &error)) << error;
}
struct stat Stat(const std::string& path) {
  struct stat st {};
  EXPECT_SYS(stat(path.c_str(), &st));
  return st;
}
struct stat Lstat(const std::string& path) {
  struct stat st {};
  EXPECT_SYS(lstat(path.c_str(), &st));
  return st;
}
std::string PreadString(int fd, size_t size, off_t offset) {
  std::string s(size, '\0');
  size_t got = 0;
  EXPECT_TRUE(PreadAll(fd, s.data(), size, offset, &got)) << ErrnoName(errno);
  s.resize(got);
  return s;
}
// Names in `dir` (with "." and ".."), in readdir order.
std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  EXPECT_NE(d, nullptr) << dir << ": " << ErrnoName(errno);
  if (d == nullptr) return names;
  errno = 0;
  while (dirent* e = readdir(d)) names.push_back(e->d_name);
  EXPECT_EQ(errno, 0) << "readdir " << dir << ": " << ErrnoName(errno);
  closedir(d);
  return names;
}

struct Config {
  const char* name;
  std::vector<std::string> flags;
};
void PrintTo(const Config& c, std::ostream* os) { *os << c.name; }

class PosixTest : public MountTest, public ::testing::WithParamInterface<Config> {
 protected:
  std::vector<std::string> DaemonFlags() const override {
    return WithFlags({"--size=1G"}, GetParam().flags);
  }
  void SetUp() override {
    umask(022);
    MountTest::SetUp();
  }
};

bool TimespecLess(const timespec& a, const timespec& b) {
  return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}
std::string Ts(const timespec& t) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%lld.%09ld", static_cast<long long>(t.tv_sec), t.tv_nsec);
  return buf;
}
#define EXPECT_TS_EQ(a, b) EXPECT_TRUE((a).tv_sec == (b).tv_sec && (a).tv_nsec == (b).tv_nsec) \
    << #a << " = " << Ts(a) << ", " << #b << " = " << Ts(b)
#define EXPECT_TS_LT(a, b) EXPECT_TRUE(TimespecLess((a), (b))) \
    << #a << " = " << Ts(a) << " should be before " << #b << " = " << Ts(b)

// Long enough that any clock the daemon uses (even a coarse one) moves on.
void Tick() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

// ---------------------------------------------------------------------------
// Files: create, read, write, offsets, append.

TEST_P(PosixTest, CreateWriteReadPreadPwrite) {
  const std::string f = Path("f");
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  EXPECT_EQ(write(fd.get(), "hello world", 11), 11);
  EXPECT_EQ(pwrite(fd.get(), "WORLD", 5, 6), 5);
  EXPECT_EQ(lseek(fd.get(), 0, SEEK_CUR), 11);  // pwrite leaves the offset alone
  ASSERT_EQ(lseek(fd.get(), 0, SEEK_SET), 0);
  char buf[64] = {};
  EXPECT_EQ(read(fd.get(), buf, sizeof(buf)), 11);
  EXPECT_EQ(std::string(buf, 11), "hello WORLD");
  EXPECT_EQ(read(fd.get(), buf, sizeof(buf)), 0);  // EOF
  EXPECT_EQ(PreadString(fd.get(), 5, 6), "WORLD");
  EXPECT_EQ(pread(fd.get(), buf, 10, 100), 0);  // past EOF
  // Writing past EOF leaves a hole that reads as zeros.
  EXPECT_EQ(pwrite(fd.get(), "!", 1, 20), 1);
  EXPECT_EQ(PreadString(fd.get(), 21, 0), std::string("hello WORLD") + std::string(9, '\0') + "!");
  struct stat st {};
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_EQ(st.st_size, 21);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  fd.Reset();

  EXPECT_EQ(Read(f), std::string("hello WORLD") + std::string(9, '\0') + "!");
  EXPECT_ERRNO(open(f.c_str(), O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST);
  EXPECT_ERRNO(open(Path("missing").c_str(), O_RDONLY), ENOENT);
  EXPECT_ERRNO(open(Path("missing/x").c_str(), O_RDONLY | O_CREAT, 0644), ENOENT);
  EXPECT_ERRNO(open(Path("f/x").c_str(), O_RDONLY | O_CREAT, 0644), ENOTDIR);
  EXPECT_ERRNO(open(Path(std::string(256, 'n')).c_str(), O_RDWR | O_CREAT, 0644), ENAMETOOLONG);
  EXPECT_ERRNO(unlink(Path("missing").c_str()), ENOENT);
  EXPECT_ERRNO(open(Path("").c_str(), O_WRONLY), EISDIR);
  // 255 bytes is the longest name.
  const std::string longest = Path(std::string(255, 'n'));
  ASSERT_SYS(raw = open(longest.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  close(raw);
  EXPECT_SYS(unlink(longest.c_str()));
  // O_TRUNC empties an existing file.
  ASSERT_SYS(raw = open(f.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  close(raw);
  EXPECT_EQ(Stat(f).st_size, 0);
  EXPECT_EQ(Read(f), "");
}

TEST_P(PosixTest, AppendFromTwoDescriptors) {
  const std::string f = Path("log");
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  UniqueFd a(raw);
  ASSERT_SYS(raw = open(f.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  UniqueFd b(raw);
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    std::string rec = (i % 2 == 0 ? "a" : "b") + std::to_string(i) + std::string(i % 7, '.') + "\n";
    int fd = i % 2 == 0 ? a.get() : b.get();
    ASSERT_EQ(write(fd, rec.data(), rec.size()), static_cast<ssize_t>(rec.size()));
    expected += rec;
    // Each append lands at the current end, whatever the fd's own offset was.
    EXPECT_EQ(lseek(fd, 0, SEEK_CUR), static_cast<off_t>(expected.size()));
  }
  a.Reset();
  b.Reset();
  EXPECT_EQ(Read(f), expected);
}

TEST_P(PosixTest, LargeSequentialWriteAndReadBack) {
  const std::string f = Path("big");
  const size_t kSize = 64 * kMiB, kChunk = 1 * kMiB;
  const uint64_t seed = 0x5eed;
  std::vector<uint8_t> buf(kChunk);
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  uint64_t want = Fnv1a(nullptr, 0);
  for (size_t off = 0; off < kSize; off += kChunk) {
    FillPattern(seed, off, buf.data(), kChunk);
    want = Fnv1a(buf.data(), kChunk, want);
    ssize_t n = write(fd.get(), buf.data(), kChunk);
    ASSERT_EQ(n, static_cast<ssize_t>(kChunk)) << "at " << off << ": " << ErrnoName(errno);
  }
  EXPECT_SYS(fsync(fd.get()));
  fd.Reset();

  struct stat st = Stat(f);
  EXPECT_EQ(static_cast<size_t>(st.st_size), kSize);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, kSize);

  // Reopen (drops the page cache: no FOPEN_KEEP_CACHE) and read with an odd
  // chunk size so requests straddle pages.
  ASSERT_SYS(raw = open(f.c_str(), O_RDONLY | O_CLOEXEC));
  fd.Reset(raw);
  posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  const size_t kOdd = 192 * kKiB + 17;
  std::vector<uint8_t> rbuf(kOdd);
  uint64_t got = Fnv1a(nullptr, 0);
  size_t total = 0;
  for (;;) {
    ssize_t n = read(fd.get(), rbuf.data(), kOdd);
    ASSERT_GE(n, 0) << ErrnoName(errno);
    if (n == 0) break;
    got = Fnv1a(rbuf.data(), static_cast<size_t>(n), got);
    total += static_cast<size_t>(n);
  }
  EXPECT_EQ(total, kSize);
  EXPECT_EQ(got, want) << "checksum of the 64 MiB read back differs from what was written";
}

TEST_P(PosixTest, MmapReadSeesFileData) {
  const std::string f = Path("m");
  const size_t kSize = 3 * 4096 + 100;
  const std::string data = PatternBytes(7, kSize);
  Write(f, data);
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd fd(raw);
  void* p = mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(p, MAP_FAILED) << ErrnoName(errno);
  EXPECT_EQ(std::memcmp(p, data.data(), kSize), 0);
  munmap(p, kSize);
}

TEST_P(PosixTest, MmapSharedWriteReachesTheFile) {
  const std::string f = Path("mw");
  const size_t kSize = 3 * 4096 + 100;
  const std::string data = PatternBytes(8, kSize);
  {
    int raw;
    ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    UniqueFd fd(raw);
    ASSERT_SYS(ftruncate(fd.get(), kSize));
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(p, MAP_FAILED) << ErrnoName(errno);
    std::memcpy(p, data.data(), kSize);
    EXPECT_SYS(msync(p, kSize, MS_SYNC));
    // Visible through read() on another descriptor while still mapped.
    int raw2;
    ASSERT_SYS(raw2 = open(f.c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd other(raw2);
    EXPECT_EQ(PreadString(other.get(), kSize, 0), data);
    munmap(p, kSize);
  }
  // And after the mapping is gone and the cache dropped: it reached the daemon.
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd fd(raw);
  posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  EXPECT_EQ(PreadString(fd.get(), kSize + 10, 0), data);
  EXPECT_EQ(Stat(f).st_size, static_cast<off_t>(kSize));
}

TEST_P(PosixTest, CloseToOpenAndSharedVisibility) {
  const std::string f = Path("c2o");
  Write(f, "version1");
  EXPECT_EQ(Read(f), "version1");
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd a(raw);
  ASSERT_SYS(raw = open(f.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd b(raw);
  EXPECT_EQ(pwrite(a.get(), "VERSION2", 8, 0), 8);
  // Another descriptor, open all along, sees it at once...
  EXPECT_EQ(PreadString(b.get(), 100, 0), "VERSION2");
  // ...and so does another process opening it afresh.
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) {
    std::string data, error;
    CHILD_CHECK(c, ReadFile(f, &data, &error));
    CHILD_CHECK(c, data == "VERSION2");
  }));
}

// ---------------------------------------------------------------------------
// Directories.

TEST_P(PosixTest, MkdirRmdirAndTheirErrors) {
  const std::string d = Path("d");
  ASSERT_SYS(mkdir(d.c_str(), 0755));
  struct stat st = Stat(d);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_ERRNO(mkdir(d.c_str(), 0755), EEXIST);
  ASSERT_SYS(mkdir((d + "/sub").c_str(), 0700));
  EXPECT_EQ(Stat(d).st_nlink, 3u) << "a subdirectory's '..' counts as a link of its parent";
  EXPECT_EQ(Stat(d + "/sub").st_mode & 07777, 0700u);
  Write(d + "/sub/f", "x");
  EXPECT_ERRNO(rmdir(d.c_str()), ENOTEMPTY);
  EXPECT_ERRNO(rmdir((d + "/sub").c_str()), ENOTEMPTY);
  EXPECT_ERRNO(unlink((d + "/sub").c_str()), EISDIR);
  EXPECT_ERRNO(rmdir((d + "/sub/f").c_str()), ENOTDIR);
  EXPECT_ERRNO(mkdir((d + "/sub/f/g").c_str(), 0755), ENOTDIR);
  EXPECT_ERRNO(rmdir(Path("missing").c_str()), ENOENT);
  EXPECT_SYS(unlink((d + "/sub/f").c_str()));
  EXPECT_SYS(rmdir((d + "/sub").c_str()));
  EXPECT_EQ(Stat(d).st_nlink, 2u);
  EXPECT_SYS(rmdir(d.c_str()));
  struct stat gone;
  EXPECT_ERRNO(stat(d.c_str(), &gone), ENOENT);
  EXPECT_EQ(List(Path("")), (std::vector<std::string>{".", ".."}));
}

TEST_P(PosixTest, ReaddirListsThousandsOfEntries) {
  const std::string d = Path("many");
  ASSERT_SYS(mkdir(d.c_str(), 0755));
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < 1500; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "entry-%04d-%s", i, i % 3 == 0 ? "long-name-padding-x" : "y");
    want.insert(name);
    if (i % 10 == 0) {
      ASSERT_SYS(mkdir((d + "/" + name).c_str(), 0755));
    } else {
      int raw;
      ASSERT_SYS(raw = open((d + "/" + name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      close(raw);
    }
  }
  DIR* dir = opendir(d.c_str());
  ASSERT_NE(dir, nullptr) << ErrnoName(errno);
  std::map<std::string, int> seen;
  errno = 0;
  struct stat dst = Stat(d);
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    ++seen[name];
    if (name == "." || name == "..") {
      EXPECT_EQ(e->d_type, DT_DIR) << name;
      if (name == ".") {
        EXPECT_EQ(e->d_ino, dst.st_ino);
      }
      continue;
    }
    int i = std::atoi(name.c_str() + 6);
    EXPECT_EQ(e->d_type, i % 10 == 0 ? DT_DIR : DT_REG) << name;
    if (i % 97 == 0) {
      EXPECT_EQ(e->d_ino, Lstat(d + "/" + name).st_ino) << name;
    }
  }
  EXPECT_EQ(errno, 0) << "readdir: " << ErrnoName(errno);
  closedir(dir);
  std::set<std::string> got;
  for (const auto& [name, count] : seen) {
    EXPECT_EQ(count, 1) << "'" << name << "' listed " << count << " times";
    got.insert(name);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(Stat(d).st_nlink, 2u + 150u);
}

TEST_P(PosixTest, ReaddirWhileEntriesAreAdded) {
  const std::string d = Path("growing");
  ASSERT_SYS(mkdir(d.c_str(), 0755));
  std::set<std::string> old_names, new_names;
  for (int i = 0; i < 600; ++i) {
    std::string n = "old-" + std::to_string(i);
    old_names.insert(n);
    ASSERT_SYS(mknod((d + "/" + n).c_str(), S_IFREG | 0644, 0));
  }
  DIR* dir = opendir(d.c_str());
  ASSERT_NE(dir, nullptr) << ErrnoName(errno);
  std::map<std::string, int> seen;
  for (int i = 0; i < 100; ++i) {
    dirent* e = readdir(dir);
    ASSERT_NE(e, nullptr) << ErrnoName(errno);
    ++seen[e->d_name];
  }
  for (int i = 0; i < 300; ++i) {
    std::string n = "new-" + std::to_string(i);
    new_names.insert(n);
    ASSERT_SYS(mknod((d + "/" + n).c_str(), S_IFREG | 0644, 0));
  }
  errno = 0;
  while (dirent* e = readdir(dir)) ++seen[e->d_name];
  EXPECT_EQ(errno, 0) << "readdir: " << ErrnoName(errno);
  closedir(dir);
  for (const std::string& n : old_names) EXPECT_EQ(seen[n], 1) << n << " (present all along)";
  for (const auto& [name, count] : seen) {
    EXPECT_EQ(count, 1) << "'" << name << "' listed " << count << " times";
    EXPECT_TRUE(old_names.count(name) || new_names.count(name) || name == "." || name == "..")
        << "unexpected name '" << name << "'";
  }
  EXPECT_EQ(seen["."], 1);
  EXPECT_EQ(seen[".."], 1);
}

TEST_P(PosixTest, TelldirSeekdirResume) {
  const std::string d = Path("seek");
  ASSERT_SYS(mkdir(d.c_str(), 0755));
  for (int i = 0; i < 300; ++i)
    ASSERT_SYS(mknod((d + "/file-" + std::to_string(i)).c_str(), S_IFREG | 0644, 0));
  DIR* dir = opendir(d.c_str());
  ASSERT_NE(dir, nullptr) << ErrnoName(errno);
  std::vector<std::string> order;
  long mark = -1;
  while (dirent* e = readdir(dir)) {
    order.push_back(e->d_name);
    if (order.size() == 100) mark = telldir(dir);
  }
  ASSERT_EQ(order.size(), 302u);
  ASSERT_NE(mark, -1);
  seekdir(dir, mark);
  for (size_t i = 100; i < order.size(); ++i) {
    dirent* e = readdir(dir);
    ASSERT_NE(e, nullptr) << "after seekdir, entry " << i << ": " << ErrnoName(errno);
    EXPECT_EQ(e->d_name, order[i]) << "entry " << i << " after seekdir";
  }
  EXPECT_EQ(readdir(dir), nullptr);
  rewinddir(dir);
  dirent* first = readdir(dir);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->d_name, order[0]);
  closedir(dir);
}

// ---------------------------------------------------------------------------
// Symlinks, hard links, renames.

TEST_P(PosixTest, Symlinks) {
  Write(Path("target"), "pointed-at");
  ASSERT_SYS(symlink("target", Path("link").c_str()));
  char buf[8192];
  ssize_t n = readlink(Path("link").c_str(), buf, sizeof(buf));
  ASSERT_EQ(n, 6) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, 6), "target");
  struct stat l = Lstat(Path("link")), s = Stat(Path("link")), t = Stat(Path("target"));
  EXPECT_TRUE(S_ISLNK(l.st_mode));
  EXPECT_EQ(l.st_size, 6);
  EXPECT_TRUE(S_ISREG(s.st_mode));
  EXPECT_EQ(s.st_ino, t.st_ino);
  EXPECT_NE(l.st_ino, t.st_ino);
  EXPECT_EQ(Read(Path("link")), "pointed-at");

  ASSERT_SYS(symlink("nowhere", Path("dangling").c_str()));
  struct stat st;
  EXPECT_SYS(lstat(Path("dangling").c_str(), &st));
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_ERRNO(stat(Path("dangling").c_str(), &st), ENOENT);
  EXPECT_ERRNO(open(Path("dangling").c_str(), O_RDONLY), ENOENT);
  EXPECT_ERRNO(readlink(Path("target").c_str(), buf, sizeof(buf)), EINVAL);
  EXPECT_ERRNO(symlink("x", Path("link").c_str()), EEXIST);
  // A long absolute target, through a directory symlink.
  const std::string long_target = "/" + std::string(3000, 'p');
  ASSERT_SYS(symlink(long_target.c_str(), Path("longlink").c_str()));
  n = readlink(Path("longlink").c_str(), buf, sizeof(buf));
  EXPECT_EQ(std::string(buf, std::max<ssize_t>(n, 0)), long_target);
  ASSERT_SYS(mkdir(Path("realdir").c_str(), 0755));
  Write(Path("realdir/inner"), "inner");
  ASSERT_SYS(symlink("realdir", Path("dirlink").c_str()));
  EXPECT_EQ(Read(Path("dirlink/inner")), "inner");
  // O_NOFOLLOW refuses a symlink as the last component.
  EXPECT_ERRNO(open(Path("link").c_str(), O_RDONLY | O_NOFOLLOW), ELOOP);
  // Removing the link leaves the target.
  EXPECT_SYS(unlink(Path("link").c_str()));
  EXPECT_EQ(Read(Path("target")), "pointed-at");
}

TEST_P(PosixTest, HardLinks) {
  Write(Path("a"), "shared data");
  ASSERT_SYS(mkdir(Path("d").c_str(), 0755));
  ASSERT_SYS(link(Path("a").c_str(), Path("d/b").c_str()));
  struct stat a = Stat(Path("a")), b = Stat(Path("d/b"));
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_EQ(b.st_nlink, 2u);
  EXPECT_ERRNO(link(Path("a").c_str(), Path("d/b").c_str()), EEXIST);
  EXPECT_ERRNO(link(Path("d").c_str(), Path("dlink").c_str()), EPERM);
  EXPECT_ERRNO(link(Path("missing").c_str(), Path("x").c_str()), ENOENT);
  // Writing through one name shows through the other.
  {
    int raw;
    ASSERT_SYS(raw = open(Path("d/b").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    UniqueFd fd(raw);
    EXPECT_EQ(write(fd.get(), "!", 1), 1);
  }
  EXPECT_EQ(Read(Path("a")), "shared data!");
  EXPECT_SYS(unlink(Path("a").c_str()));
  struct stat st;
  EXPECT_ERRNO(stat(Path("a").c_str(), &st), ENOENT);
  b = Stat(Path("d/b"));
  EXPECT_EQ(b.st_nlink, 1u);
  EXPECT_EQ(b.st_ino, a.st_ino);
  EXPECT_EQ(Read(Path("d/b")), "shared data!");
}

TEST_P(PosixTest, RenameReplacesTarget) {
  Write(Path("a"), "AAA");
  Write(Path("b"), "BB");
  int raw;
  ASSERT_SYS(raw = open(Path("b").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd old_b(raw);
  const ino_t a_ino = Stat(Path("a")).st_ino;
  ASSERT_SYS(Renameat2(Path("a"), Path("b"), 0));
  struct stat st;
  EXPECT_ERRNO(stat(Path("a").c_str(), &st), ENOENT);
  EXPECT_EQ(Stat(Path("b")).st_ino, a_ino);
  EXPECT_EQ(Read(Path("b")), "AAA");
  // The replaced file lives on while open.
  EXPECT_EQ(PreadString(old_b.get(), 10, 0), "BB");
  ASSERT_SYS(fstat(old_b.get(), &st));
  EXPECT_EQ(st.st_nlink, 0u);
  // Across directories, and back.
  ASSERT_SYS(mkdir(Path("d1").c_str(), 0755));
  ASSERT_SYS(mkdir(Path("d2").c_str(), 0755));
  ASSERT_SYS(Renameat2(Path("b"), Path("d1/x"), 0));
  ASSERT_SYS(Renameat2(Path("d1/x"), Path("d2/y"), 0));
  EXPECT_EQ(Read(Path("d2/y")), "AAA");
  EXPECT_EQ(List(Path("d1")), (std::vector<std::string>{".", ".."}));
  // A directory moves with its contents and its '..' follows.
  Write(Path("d1/inner"), "in");
  ASSERT_SYS(Renameat2(Path("d1"), Path("d2/moved"), 0));
  EXPECT_EQ(Read(Path("d2/moved/inner")), "in");
  EXPECT_EQ(Stat(Path("d2")).st_nlink, 3u);
  EXPECT_EQ(Stat(Path("")).st_nlink, 3u);  // root: '.', '..' and d2's '..'
  EXPECT_ERRNO(Renameat2(Path("missing"), Path("z"), 0), ENOENT);
  // Renaming a name onto itself, or onto another link of the same inode, does nothing.
  ASSERT_SYS(link(Path("d2/y").c_str(), Path("y2").c_str()));
  EXPECT_SYS(Renameat2(Path("d2/y"), Path("y2"), 0));
  EXPECT_EQ(Read(Path("d2/y")), "AAA");
  EXPECT_EQ(Read(Path("y2")), "AAA");
  EXPECT_SYS(Renameat2(Path("y2"), Path("y2"), 0));
  EXPECT_EQ(Read(Path("y2")), "AAA");
}

TEST_P(PosixTest, RenameNoreplace) {
  Write(Path("a"), "A");
  Write(Path("b"), "B");
  EXPECT_ERRNO(Renameat2(Path("a"), Path("b"), RENAME_NOREPLACE), EEXIST);
  EXPECT_EQ(Read(Path("a")), "A");
  EXPECT_EQ(Read(Path("b")), "B");
  EXPECT_SYS(Renameat2(Path("a"), Path("c"), RENAME_NOREPLACE));
  EXPECT_EQ(Read(Path("c")), "A");
  struct stat st;
  EXPECT_ERRNO(stat(Path("a").c_str(), &st), ENOENT);
}

TEST_P(PosixTest, RenameExchangeFileAndDirectory) {
  Write(Path("f"), "file");
  ASSERT_SYS(mkdir(Path("d").c_str(), 0755));
  Write(Path("d/inner"), "inner");
  const ino_t f_ino = Stat(Path("f")).st_ino, d_ino = Stat(Path("d")).st_ino;
  ASSERT_SYS(Renameat2(Path("f"), Path("d"), RENAME_EXCHANGE));
  struct stat f = Stat(Path("f")), d = Stat(Path("d"));
  EXPECT_TRUE(S_ISDIR(f.st_mode));
  EXPECT_TRUE(S_ISREG(d.st_mode));
  EXPECT_EQ(f.st_ino, d_ino);
  EXPECT_EQ(d.st_ino, f_ino);
  EXPECT_EQ(Read(Path("f/inner")), "inner");
  EXPECT_EQ(Read(Path("d")), "file");
  EXPECT_ERRNO(Renameat2(Path("f"), Path("missing"), RENAME_EXCHANGE), ENOENT);
  EXPECT_ERRNO(Renameat2(Path("f"), Path("d"), RENAME_EXCHANGE | RENAME_NOREPLACE), EINVAL);
  // Across directories: the moved directory's '..' changes parent.
  ASSERT_SYS(mkdir(Path("p").c_str(), 0755));
  Write(Path("p/file"), "pf");
  ASSERT_SYS(Renameat2(Path("f"), Path("p/file"), RENAME_EXCHANGE));
  EXPECT_EQ(Read(Path("f")), "pf");
  EXPECT_EQ(Read(Path("p/file/inner")), "inner");
  EXPECT_EQ(Stat(Path("p")).st_nlink, 3u);
}

TEST_P(PosixTest, RenameDirectoryIntoItselfIsEinval) {
  ASSERT_SYS(mkdir(Path("a").c_str(), 0755));
  ASSERT_SYS(mkdir(Path("a/b").c_str(), 0755));
  EXPECT_ERRNO(Renameat2(Path("a"), Path("a/b/c"), 0), EINVAL);
  EXPECT_ERRNO(Renameat2(Path("a"), Path("a/c"), 0), EINVAL);
  EXPECT_TRUE(S_ISDIR(Stat(Path("a/b")).st_mode));
}

TEST_P(PosixTest, RenameTypeAndEmptinessRules) {
  ASSERT_SYS(mkdir(Path("src").c_str(), 0755));
  ASSERT_SYS(mkdir(Path("full").c_str(), 0755));
  Write(Path("full/x"), "x");
  ASSERT_SYS(mkdir(Path("empty").c_str(), 0755));
  Write(Path("file"), "f");
  EXPECT_ERRNO(Renameat2(Path("src"), Path("full"), 0), ENOTEMPTY);
  EXPECT_ERRNO(Renameat2(Path("file"), Path("empty"), 0), EISDIR);
  EXPECT_ERRNO(Renameat2(Path("src"), Path("file"), 0), ENOTDIR);
  const ino_t src_ino = Stat(Path("src")).st_ino;
  EXPECT_SYS(Renameat2(Path("src"), Path("empty"), 0));  // over an empty directory
  EXPECT_EQ(Stat(Path("empty")).st_ino, src_ino);
  struct stat st;
  EXPECT_ERRNO(stat(Path("src").c_str(), &st), ENOENT);
  EXPECT_EQ(Read(Path("full/x")), "x");
  EXPECT_EQ(Stat(Path("")).st_nlink, 4u);  // '.', '..', full, empty
}

// ---------------------------------------------------------------------------
// Special files.

TEST_P(PosixTest, DeviceNodesKeepTheirNumbers) {
  struct Node {
    const char* name;
    mode_t type;
    dev_t dev;
  };
  const Node nodes[] = {
      {"null", S_IFCHR, makedev(1, 3)},
      {"chr", S_IFCHR, makedev(250, 70000)},
      {"blk", S_IFBLK, makedev(7, 3)},
      {"blkmax", S_IFBLK, makedev(4095, 1048575)},  // 12-bit major, 20-bit minor
  };
  for (const Node& n : nodes) {
    SCOPED_TRACE(n.name);
    ASSERT_SYS(mknod(Path(n.name).c_str(), n.type | 0640, n.dev));
    struct stat st = Lstat(Path(n.name));
    EXPECT_EQ(st.st_mode & S_IFMT, n.type);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    EXPECT_EQ(major(st.st_rdev), major(n.dev));
    EXPECT_EQ(minor(st.st_rdev), minor(n.dev));
    // statx with btime goes to the daemon as FUSE_STATX: the same numbers.
    struct statx sx {};
    ASSERT_SYS(statx(AT_FDCWD, Path(n.name).c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC,
                     STATX_BASIC_STATS | STATX_BTIME, &sx));
    EXPECT_EQ(sx.stx_rdev_major, major(n.dev));
    EXPECT_EQ(sx.stx_rdev_minor, minor(n.dev));
    EXPECT_EQ(sx.stx_mode & S_IFMT, n.type);
  }
  // /dev/null's numbers work: opening it reaches the real driver.
  int raw;
  ASSERT_SYS(raw = open(Path("null").c_str(), O_WRONLY | O_CLOEXEC));
  UniqueFd fd(raw);
  EXPECT_EQ(write(fd.get(), "discard", 7), 7);
  EXPECT_ERRNO(mknod(Path("null").c_str(), S_IFCHR | 0640, makedev(1, 3)), EEXIST);
}

TEST_P(PosixTest, FifoPassesData) {
  ASSERT_SYS(mkfifo(Path("fifo").c_str(), 0644));
  EXPECT_TRUE(S_ISFIFO(Lstat(Path("fifo")).st_mode));
  int raw;
  // O_RDWR on a FIFO does not block (Linux).
  ASSERT_SYS(raw = open(Path("fifo").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd rw(raw);
  EXPECT_EQ(write(rw.get(), "ping", 4), 4);
  char buf[16] = {};
  EXPECT_EQ(read(rw.get(), buf, sizeof(buf)), 4);
  EXPECT_EQ(std::string(buf, 4), "ping");
  // A separate reader and writer.
  ASSERT_SYS(raw = open(Path("fifo").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  UniqueFd r(raw);
  ASSERT_SYS(raw = open(Path("fifo").c_str(), O_WRONLY | O_CLOEXEC));
  UniqueFd w(raw);
  EXPECT_EQ(write(w.get(), "pong!", 5), 5);
  EXPECT_EQ(read(r.get(), buf, sizeof(buf)), 5);
  EXPECT_EQ(std::string(buf, 5), "pong!");
  EXPECT_EQ(Lstat(Path("fifo")).st_size, 0);
}

TEST_P(PosixTest, UnixSocketBindsOnTheMount) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string p = Path("sock");
  ASSERT_LT(p.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  int raw;
  ASSERT_SYS(raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd server(raw);
  ASSERT_SYS(bind(server.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  ASSERT_SYS(listen(server.get(), 1));
  EXPECT_TRUE(S_ISSOCK(Lstat(p).st_mode));
  ASSERT_SYS(raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd client(raw);
  ASSERT_SYS(connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  ASSERT_SYS(raw = accept(server.get(), nullptr, nullptr));
  UniqueFd conn(raw);
  EXPECT_EQ(send(client.get(), "hi", 2, 0), 2);
  char buf[4] = {};
  EXPECT_EQ(recv(conn.get(), buf, sizeof(buf), 0), 2);
  EXPECT_EQ(std::string(buf, 2), "hi");
  ASSERT_SYS(raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd again(raw);
  EXPECT_ERRNO(bind(again.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), EADDRINUSE);
  EXPECT_SYS(unlink(p.c_str()));
}

// ---------------------------------------------------------------------------
// Extended attributes.

TEST_P(PosixTest, ExtendedAttributes) {
  const std::string f = Path("x");
  Write(f, "data");
  char buf[70000];
  EXPECT_ERRNO(getxattr(f.c_str(), "user.missing", buf, sizeof(buf)), ENODATA);
  ASSERT_SYS(setxattr(f.c_str(), "user.a", "alpha", 5, 0));
  EXPECT_EQ(getxattr(f.c_str(), "user.a", nullptr, 0), 5);  // size probe
  EXPECT_ERRNO(getxattr(f.c_str(), "user.a", buf, 2), ERANGE);
  ASSERT_EQ(getxattr(f.c_str(), "user.a", buf, sizeof(buf)), 5);
  EXPECT_EQ(std::string(buf, 5), "alpha");
  EXPECT_ERRNO(setxattr(f.c_str(), "user.a", "x", 1, XATTR_CREATE), EEXIST);
  EXPECT_ERRNO(setxattr(f.c_str(), "user.b", "beta", 4, XATTR_REPLACE), ENODATA);
  EXPECT_SYS(setxattr(f.c_str(), "user.b", "", 0, XATTR_CREATE));  // empty value
  EXPECT_EQ(getxattr(f.c_str(), "user.b", buf, sizeof(buf)), 0);
  EXPECT_EQ(getxattr(f.c_str(), "user.b", nullptr, 0), 0);
  EXPECT_SYS(setxattr(f.c_str(), "user.a", "ALPHA!", 6, XATTR_REPLACE));
  ASSERT_EQ(getxattr(f.c_str(), "user.a", buf, sizeof(buf)), 6);
  EXPECT_EQ(std::string(buf, 6), "ALPHA!");
  EXPECT_SYS(setxattr(f.c_str(), "trusted.t", "tt", 2, 0));
  // The largest value the VFS allows.
  const std::string big = PatternBytes(3, 65536);
  EXPECT_SYS(setxattr(f.c_str(), "user.big", big.data(), big.size(), 0));
  ASSERT_EQ(getxattr(f.c_str(), "user.big", buf, sizeof(buf)), 65536);
  EXPECT_EQ(std::memcmp(buf, big.data(), big.size()), 0);

  ssize_t len = listxattr(f.c_str(), nullptr, 0);
  ASSERT_GT(len, 0) << ErrnoName(errno);
  EXPECT_ERRNO(listxattr(f.c_str(), buf, 1), ERANGE);
  ASSERT_EQ(listxattr(f.c_str(), buf, sizeof(buf)), len);
  std::set<std::string> names;
  for (ssize_t off = 0; off < len;) {
    std::string n(buf + off);
    names.insert(n);
    off += static_cast<ssize_t>(n.size()) + 1;
  }
  EXPECT_EQ(names, (std::set<std::string>{"user.a", "user.b", "trusted.t", "user.big"}));

  EXPECT_SYS(removexattr(f.c_str(), "user.b"));
  EXPECT_ERRNO(removexattr(f.c_str(), "user.b"), ENODATA);
  EXPECT_ERRNO(getxattr(f.c_str(), "user.b", buf, sizeof(buf)), ENODATA);
  // On a directory too; and fsetxattr/fgetxattr through a descriptor.
  ASSERT_SYS(mkdir(Path("d").c_str(), 0755));
  EXPECT_SYS(setxattr(Path("d").c_str(), "user.dir", "yes", 3, 0));
  EXPECT_EQ(getxattr(Path("d").c_str(), "user.dir", buf, sizeof(buf)), 3);
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd fd(raw);
  EXPECT_SYS(fsetxattr(fd.get(), "user.fd", "1", 1, 0));
  EXPECT_EQ(fgetxattr(fd.get(), "user.fd", buf, sizeof(buf)), 1);
  // The contents are untouched by all this.
  EXPECT_EQ(Read(f), "data");
}

// ---------------------------------------------------------------------------
// Sizes, holes, allocation.

TEST_P(PosixTest, TruncateShrinksAndGrowsWithZeros) {
  const std::string f = Path("t");
  const std::string data = PatternBytes(11, 10000);
  Write(f, data);
  ASSERT_SYS(truncate(f.c_str(), 5000));
  EXPECT_EQ(Stat(f).st_size, 5000);
  EXPECT_EQ(Read(f), data.substr(0, 5000));
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd fd(raw);
  ASSERT_SYS(ftruncate(fd.get(), 20000));
  struct stat st;
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, 20000);
  // The old bytes 5000..10000 must not come back: the grown part is zeros.
  EXPECT_EQ(PreadString(fd.get(), 20000, 0), data.substr(0, 5000) + std::string(15000, '\0'));
  ASSERT_SYS(ftruncate(fd.get(), 0));
  ASSERT_SYS(ftruncate(fd.get(), 8192));
  EXPECT_EQ(PreadString(fd.get(), 9000, 0), std::string(8192, '\0'));
  // Grow far: a hole, cheap in blocks.
  ASSERT_SYS(ftruncate(fd.get(), static_cast<off_t>(1 * kGiB)));
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, static_cast<off_t>(kGiB));
  EXPECT_LE(st.st_blocks, 64);
  EXPECT_EQ(PreadString(fd.get(), 4096, static_cast<off_t>(kGiB - 4096)), std::string(4096, '\0'));
  ASSERT_SYS(mkdir(Path("d").c_str(), 0755));
  EXPECT_ERRNO(truncate(Path("d").c_str(), 0), EISDIR);
  EXPECT_ERRNO(truncate(Path("missing").c_str(), 0), ENOENT);
  EXPECT_ERRNO(ftruncate(fd.get(), -1), EINVAL);
}

TEST_P(PosixTest, SparseFileSeekDataAndHole) {
  const std::string f = Path("sparse");
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  const off_t kData1 = 1 * kMiB, kData2 = 16 * kGiB;
  const std::string page = PatternBytes(5, 4096);
  ASSERT_TRUE(PwriteAll(fd.get(), page.data(), page.size(), kData1)) << ErrnoName(errno);
  ASSERT_EQ(pwrite(fd.get(), "x", 1, kData2), 1) << ErrnoName(errno);
  struct stat st;
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, kData2 + 1);
  EXPECT_LE(st.st_blocks, 64) << "two written pages should cost a few blocks, not 16 GiB";
  EXPECT_GE(st.st_blocks, 2);

  EXPECT_EQ(lseek(fd.get(), 0, SEEK_HOLE), 0);
  EXPECT_EQ(lseek(fd.get(), 0, SEEK_DATA), kData1);
  EXPECT_EQ(lseek(fd.get(), kData1 + 100, SEEK_DATA), kData1 + 100);
  EXPECT_EQ(lseek(fd.get(), kData1, SEEK_HOLE), kData1 + 4096);
  EXPECT_EQ(lseek(fd.get(), kData1 + 4096, SEEK_DATA), kData2);
  EXPECT_EQ(lseek(fd.get(), kData2, SEEK_HOLE), kData2 + 1) << "the end of file is a hole";
  EXPECT_ERRNO(lseek(fd.get(), kData2 + 1, SEEK_DATA), ENXIO);
  EXPECT_ERRNO(lseek(fd.get(), kData2 + 1, SEEK_HOLE), ENXIO);
  EXPECT_ERRNO(lseek(fd.get(), kData2 + 4096, SEEK_DATA), ENXIO);

  EXPECT_EQ(PreadString(fd.get(), 1, kData2), "x");
  EXPECT_EQ(PreadString(fd.get(), 4096, kData1), page);
  EXPECT_EQ(PreadString(fd.get(), 8192, 8 * kGiB), std::string(8192, '\0'));
  EXPECT_EQ(PreadString(fd.get(), 100, kData2 - 50), std::string(50, '\0') + "x");
}

TEST_P(PosixTest, FallocateModes) {
  const std::string f = Path("fa");
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  struct stat st;

  ASSERT_SYS(fallocate(fd.get(), 0, 0, 1 * kMiB));
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, static_cast<off_t>(kMiB));
  EXPECT_GE(st.st_blocks, static_cast<blkcnt_t>(kMiB / 512));
  EXPECT_EQ(PreadString(fd.get(), kMiB, 0), std::string(kMiB, '\0'));

  ASSERT_SYS(fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 1 * kMiB, 1 * kMiB));
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, static_cast<off_t>(kMiB)) << "KEEP_SIZE must not change the size";
  EXPECT_GE(st.st_blocks, static_cast<blkcnt_t>(2 * kMiB / 512));
  const blkcnt_t blocks_before_punch = st.st_blocks;

  const std::string data = PatternBytes(21, kMiB);
  ASSERT_TRUE(PwriteAll(fd.get(), data.data(), data.size(), 0));
  ASSERT_SYS(fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 64 * kKiB, 128 * kKiB));
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, static_cast<off_t>(kMiB));
  EXPECT_LE(st.st_blocks, blocks_before_punch - static_cast<blkcnt_t>(128 * kKiB / 512));
  std::string want = data;
  std::fill(want.begin() + 64 * kKiB, want.begin() + 192 * kKiB, '\0');
  EXPECT_TRUE(PreadString(fd.get(), kMiB, 0) == want) << "punched range must read as zeros, the rest intact";
  EXPECT_EQ(lseek(fd.get(), 0, SEEK_HOLE), static_cast<off_t>(64 * kKiB));
  EXPECT_EQ(lseek(fd.get(), 64 * kKiB, SEEK_DATA), static_cast<off_t>(192 * kKiB));
  // The VFS insists that a punch keeps the size.
  EXPECT_ERRNO(fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);
  // Read-only descriptors cannot allocate.
  ASSERT_SYS(raw = open(f.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd ro(raw);
  EXPECT_ERRNO(fallocate(ro.get(), 0, 0, 4096), EBADF);
}

TEST_P(PosixTest, TmpfileThenLinkat) {
  int raw;
  ASSERT_SYS(raw = open(Path("").c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  UniqueFd t1(raw);
  EXPECT_EQ(write(t1.get(), "tmpdata", 7), 7);
  struct stat st;
  ASSERT_SYS(fstat(t1.get(), &st));
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_nlink, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(List(Path("")), (std::vector<std::string>{".", ".."})) << "an O_TMPFILE has no name";
  ASSERT_SYS(linkat(t1.get(), "", AT_FDCWD, Path("named").c_str(), AT_EMPTY_PATH));
  struct stat named = Stat(Path("named"));
  EXPECT_EQ(named.st_ino, st.st_ino);
  EXPECT_EQ(named.st_nlink, 1u);
  EXPECT_EQ(Read(Path("named")), "tmpdata");

  // Through /proc/self/fd, in a subdirectory.
  ASSERT_SYS(mkdir(Path("sub").c_str(), 0755));
  ASSERT_SYS(raw = open(Path("sub").c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0640));
  UniqueFd t2(raw);
  EXPECT_EQ(write(t2.get(), "via proc", 8), 8);
  const std::string proc = "/proc/self/fd/" + std::to_string(t2.get());
  ASSERT_SYS(linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, Path("sub/named2").c_str(), AT_SYMLINK_FOLLOW));
  EXPECT_EQ(Read(Path("sub/named2")), "via proc");

  // O_EXCL: never linkable.
  ASSERT_SYS(raw = open(Path("").c_str(), O_TMPFILE | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
  UniqueFd t3(raw);
  EXPECT_ERRNO(linkat(t3.get(), "", AT_FDCWD, Path("never").c_str(), AT_EMPTY_PATH), ENOENT);
}

// ---------------------------------------------------------------------------
// Attributes and timestamps.

TEST_P(PosixTest, ChmodChownUtimensat) {
  const std::string f = Path("attrs");
  Write(f, "a");
  ASSERT_SYS(chmod(f.c_str(), 0640));
  EXPECT_EQ(Stat(f).st_mode & 07777, 0640u);
  ASSERT_SYS(chmod(f.c_str(), 04755));
  EXPECT_EQ(Stat(f).st_mode & 07777, 04755u);
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd fd(raw);
  ASSERT_SYS(fchmod(fd.get(), 0600));
  EXPECT_EQ(Stat(f).st_mode & 07777, 0600u);

  ASSERT_SYS(chown(f.c_str(), 1234, 5678));
  struct stat st = Stat(f);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  ASSERT_SYS(fchown(fd.get(), static_cast<uid_t>(-1), 42));
  st = Stat(f);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 42u);
  ASSERT_SYS(symlink("attrs", Path("ln").c_str()));
  ASSERT_SYS(lchown(Path("ln").c_str(), 77, 88));
  EXPECT_EQ(Lstat(Path("ln")).st_uid, 77u);
  EXPECT_EQ(Lstat(Path("ln")).st_gid, 88u);
  EXPECT_EQ(Stat(f).st_uid, 1234u) << "lchown must not follow the link";

  // Explicit times, with nanoseconds.
  const timespec t[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
  ASSERT_SYS(utimensat(AT_FDCWD, f.c_str(), t, 0));
  st = Stat(f);
  EXPECT_TS_EQ(st.st_atim, t[0]);
  EXPECT_TS_EQ(st.st_mtim, t[1]);
  // UTIME_OMIT leaves one alone.
  const timespec t2[2] = {{0, UTIME_OMIT}, {1200000000, 5}};
  ASSERT_SYS(utimensat(AT_FDCWD, f.c_str(), t2, 0));
  st = Stat(f);
  EXPECT_TS_EQ(st.st_atim, t[0]);
  EXPECT_TS_EQ(st.st_mtim, t2[1]);
  // UTIME_NOW sets the current time (and ctime moves too).
  timespec before, after;
  clock_gettime(CLOCK_REALTIME, &before);
  const timespec t3[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
  ASSERT_SYS(utimensat(AT_FDCWD, f.c_str(), t3, 0));
  clock_gettime(CLOCK_REALTIME, &after);
  st = Stat(f);
  EXPECT_GE(st.st_atim.tv_sec, before.tv_sec - 1);
  EXPECT_LE(st.st_atim.tv_sec, after.tv_sec + 1);
  EXPECT_TS_EQ(st.st_mtim, t2[1]);
  EXPECT_GE(st.st_ctim.tv_sec, before.tv_sec - 1);
  ASSERT_SYS(futimens(fd.get(), nullptr));
  st = Stat(f);
  EXPECT_GE(st.st_mtim.tv_sec, before.tv_sec - 1);
  EXPECT_LE(st.st_mtim.tv_sec, after.tv_sec + 2);
  // A symlink's own times, not its target's.
  const timespec tl[2] = {{1300000000, 1}, {1300000000, 2}};
  const timespec target_mtime = Stat(f).st_mtim;
  ASSERT_SYS(utimensat(AT_FDCWD, Path("ln").c_str(), tl, AT_SYMLINK_NOFOLLOW));
  EXPECT_TS_EQ(Lstat(Path("ln")).st_mtim, tl[1]);
  EXPECT_TS_EQ(Stat(f).st_mtim, target_mtime);
}

// With FUSE_HANDLE_KILLPRIV_V2 the server clears privileges: chown clears
// setuid (and setgid with group-execute) even for root; a write by root
// (CAP_FSETID) keeps them; any write removes security.capability.
TEST_P(PosixTest, PrivilegeBitsOnChownAndWrite) {
  const std::string f = Path("priv");
  Write(f, "x");
  ASSERT_SYS(chmod(f.c_str(), 06755));
  {
    int raw;
    ASSERT_SYS(raw = open(f.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    UniqueFd fd(raw);
    ASSERT_EQ(write(fd.get(), "y", 1), 1);
  }
  EXPECT_EQ(Stat(f).st_mode & 07777, 06755u) << "root (CAP_FSETID) writing keeps setuid/setgid";
  ASSERT_SYS(chown(f.c_str(), 1234, static_cast<gid_t>(-1)));
  EXPECT_EQ(Stat(f).st_mode & 07777, 0755u) << "chown clears setuid and setgid (group-exec set)";
  ASSERT_SYS(chmod(f.c_str(), 02745));  // setgid without group-execute
  ASSERT_SYS(chown(f.c_str(), 1235, static_cast<gid_t>(-1)));
  EXPECT_EQ(Stat(f).st_mode & 07777, 02745u) << "setgid without group-execute survives chown";
  // Directories keep setgid across chown.
  ASSERT_SYS(mkdir(Path("sgdir").c_str(), 0755));
  ASSERT_SYS(chmod(Path("sgdir").c_str(), 02775));
  ASSERT_SYS(chown(Path("sgdir").c_str(), 1234, 1234));
  EXPECT_EQ(Stat(Path("sgdir")).st_mode & 07777, 02775u);

  // A file capability (struct vfs_cap_data, revision 2: CAP_NET_BIND_SERVICE).
  const uint32_t cap[5] = {0x02000000, 1u << 10, 0, 0, 0};
  const std::string g = Path("capfile");
  Write(g, "bin");
  ASSERT_SYS(setxattr(g.c_str(), "security.capability", cap, sizeof(cap), 0));
  ASSERT_EQ(getxattr(g.c_str(), "security.capability", nullptr, 0), static_cast<ssize_t>(sizeof(cap)));
  {
    int raw;
    ASSERT_SYS(raw = open(g.c_str(), O_WRONLY | O_CLOEXEC));
    UniqueFd fd(raw);
    ASSERT_EQ(pwrite(fd.get(), "B", 1, 0), 1);
  }
  EXPECT_ERRNO(getxattr(g.c_str(), "security.capability", nullptr, 0), ENODATA);
}

TEST_P(PosixTest, TimestampsAdvance) {
  const std::string f = Path("ts");
  Write(f, "1");
  struct stat s1 = Stat(f);
  Tick();
  {
    int raw;
    ASSERT_SYS(raw = open(f.c_str(), O_WRONLY | O_CLOEXEC));
    UniqueFd fd(raw);
    ASSERT_EQ(write(fd.get(), "2", 1), 1);
  }
  struct stat s2 = Stat(f);
  EXPECT_TS_LT(s1.st_mtim, s2.st_mtim);
  EXPECT_TS_LT(s1.st_ctim, s2.st_ctim);
  Tick();
  ASSERT_SYS(chmod(f.c_str(), 0600));
  struct stat s3 = Stat(f);
  EXPECT_TS_LT(s2.st_ctim, s3.st_ctim);
  EXPECT_TS_EQ(s3.st_mtim, s2.st_mtim);
  // Reading changes neither mtime nor ctime.
  Tick();
  EXPECT_EQ(Read(f), "2");
  struct stat s4 = Stat(f);
  EXPECT_TS_EQ(s4.st_mtim, s3.st_mtim);
  EXPECT_TS_EQ(s4.st_ctim, s3.st_ctim);
  // Truncation is a modification.
  Tick();
  ASSERT_SYS(truncate(f.c_str(), 0));
  struct stat s5 = Stat(f);
  EXPECT_TS_LT(s4.st_mtim, s5.st_mtim);
  EXPECT_TS_LT(s4.st_ctim, s5.st_ctim);
  // A link changes the file's ctime.
  Tick();
  ASSERT_SYS(link(f.c_str(), Path("ts2").c_str()));
  EXPECT_TS_LT(s5.st_ctim, Stat(f).st_ctim);

  // The parent directory's mtime and ctime follow its entries.
  const std::string d = Path("dir");
  ASSERT_SYS(mkdir(d.c_str(), 0755));
  struct stat d1 = Stat(d);
  Tick();
  Write(d + "/child", "c");
  struct stat d2 = Stat(d);
  EXPECT_TS_LT(d1.st_mtim, d2.st_mtim) << "create in a directory";
  EXPECT_TS_LT(d1.st_ctim, d2.st_ctim);
  Tick();
  ASSERT_SYS(Renameat2(d + "/child", d + "/renamed", 0));
  struct stat d3 = Stat(d);
  EXPECT_TS_LT(d2.st_mtim, d3.st_mtim) << "rename within a directory";
  Tick();
  ASSERT_SYS(unlink((d + "/renamed").c_str()));
  struct stat d4 = Stat(d);
  EXPECT_TS_LT(d3.st_mtim, d4.st_mtim) << "unlink";
  Tick();
  ASSERT_SYS(mkdir((d + "/sub").c_str(), 0755));
  struct stat d5 = Stat(d);
  EXPECT_TS_LT(d4.st_mtim, d5.st_mtim) << "mkdir";
}

TEST_P(PosixTest, StatxReportsBirthTime) {
  timespec before, after;
  clock_gettime(CLOCK_REALTIME, &before);
  Write(Path("born"), "x");
  clock_gettime(CLOCK_REALTIME, &after);
  struct statx sx {};
  ASSERT_SYS(statx(AT_FDCWD, Path("born").c_str(), 0, STATX_BASIC_STATS | STATX_BTIME, &sx));
  EXPECT_TRUE(sx.stx_mask & STATX_BTIME) << "stx_mask = 0x" << std::hex << sx.stx_mask;
  EXPECT_GE(sx.stx_btime.tv_sec, before.tv_sec - 1);
  EXPECT_LE(sx.stx_btime.tv_sec, after.tv_sec + 1);
  EXPECT_EQ(sx.stx_size, 1u);
  EXPECT_TRUE(S_ISREG(sx.stx_mode));
  const auto btime = sx.stx_btime;
  Tick();
  Write(Path("born"), "changed");
  ASSERT_SYS(statx(AT_FDCWD, Path("born").c_str(), AT_STATX_FORCE_SYNC,
                   STATX_BASIC_STATS | STATX_BTIME, &sx));
  EXPECT_TRUE(sx.stx_mask & STATX_BTIME);
  EXPECT_EQ(sx.stx_btime.tv_sec, btime.tv_sec) << "btime must not change on write";
  EXPECT_EQ(sx.stx_btime.tv_nsec, btime.tv_nsec);
  EXPECT_EQ(sx.stx_size, 7u);
}

// ---------------------------------------------------------------------------
// Open-file semantics, syncing, copying, O_DIRECT.

TEST_P(PosixTest, UnlinkedOpenFileStaysUsable) {
  const std::string f = Path("doomed");
  int raw;
  ASSERT_SYS(raw = open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  ASSERT_SYS(raw = open(f.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd reader(raw);
  EXPECT_EQ(write(fd.get(), "still here", 10), 10);
  ASSERT_SYS(unlink(f.c_str()));
  struct stat st;
  EXPECT_ERRNO(stat(f.c_str(), &st), ENOENT);
  EXPECT_EQ(List(Path("")), (std::vector<std::string>{".", ".."}));
  ASSERT_SYS(fstat(fd.get(), &st));
  EXPECT_EQ(st.st_nlink, 0u);
  EXPECT_EQ(st.st_size, 10);
  EXPECT_EQ(PreadString(fd.get(), 100, 0), "still here");
  EXPECT_EQ(pwrite(fd.get(), " and more", 9, 10), 9);
  EXPECT_EQ(PreadString(reader.get(), 100, 0), "still here and more");
  // A new file with the same name is a different file.
  Write(f, "new");
  EXPECT_EQ(Read(f), "new");
  EXPECT_EQ(PreadString(reader.get(), 100, 0), "still here and more");
}

TEST_P(PosixTest, SyncCallsSucceed) {
  int raw;
  ASSERT_SYS(raw = open(Path("s").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd fd(raw);
  EXPECT_EQ(write(fd.get(), "sync me", 7), 7);
  EXPECT_SYS(fsync(fd.get()));
  EXPECT_SYS(fdatasync(fd.get()));
  EXPECT_SYS(syncfs(fd.get()));
  EXPECT_SYS(sync_file_range(fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER));
  ASSERT_SYS(raw = open(Path("").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  UniqueFd dir(raw);
  EXPECT_SYS(fsync(dir.get()));
  EXPECT_SYS(fdatasync(dir.get()));
  EXPECT_EQ(Read(Path("s")), "sync me");
}

TEST_P(PosixTest, CopyFileRangeWithinTheMount) {
  const std::string src = PatternBytes(31, 1 * kMiB + 123);
  const std::string dst0 = PatternBytes(32, 64 * kKiB);
  Write(Path("src"), src);
  ASSERT_SYS(mkdir(Path("d").c_str(), 0755));
  Write(Path("d/dst"), dst0);
  int raw;
  ASSERT_SYS(raw = open(Path("src").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd in(raw);
  ASSERT_SYS(raw = open(Path("d/dst").c_str(), O_WRONLY | O_CLOEXEC));
  UniqueFd out(raw);
  loff_t off_in = 1000, off_out = 5000;
  size_t left = 300000;
  while (left > 0) {
    ssize_t n = copy_file_range(in.get(), &off_in, out.get(), &off_out, left, 0);
    ASSERT_GT(n, 0) << "copy_file_range: " << ErrnoName(errno);
    left -= static_cast<size_t>(n);
  }
  EXPECT_EQ(off_in, 301000);
  EXPECT_EQ(off_out, 305000);
  // File offsets were not used, so they did not move.
  EXPECT_EQ(lseek(in.get(), 0, SEEK_CUR), 0);
  std::string want = dst0.substr(0, 5000) + src.substr(1000, 300000);
  EXPECT_EQ(Stat(Path("d/dst")).st_size, static_cast<off_t>(want.size()));
  EXPECT_TRUE(Read(Path("d/dst")) == want) << "copied bytes differ";
  // With the descriptors' own offsets, the whole file.
  ASSERT_SYS(raw = open(Path("whole").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd whole(raw);
  size_t total = 0;
  for (;;) {
    ssize_t n = copy_file_range(in.get(), nullptr, whole.get(), nullptr, 1 * kGiB, 0);
    ASSERT_GE(n, 0) << ErrnoName(errno);
    if (n == 0) break;
    total += static_cast<size_t>(n);
  }
  EXPECT_EQ(total, src.size());
  EXPECT_TRUE(Read(Path("whole")) == src);
}

TEST_P(PosixTest, ODirectIfSupported) {
  int raw = open(Path("direct").c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  if (raw < 0 && errno == EINVAL) {
    // Documented outcome: a file system may refuse O_DIRECT with EINVAL.
    GTEST_SKIP() << "O_DIRECT refused with EINVAL (allowed)";
  }
  ASSERT_GE(raw, 0) << ErrnoName(errno);
  UniqueFd fd(raw);
  const size_t kSize = 64 * kKiB;
  void* mem = nullptr;
  ASSERT_EQ(posix_memalign(&mem, 4096, kSize), 0);
  std::unique_ptr<void, decltype(&free)> guard(mem, &free);
  FillPattern(41, 0, static_cast<uint8_t*>(mem), kSize);
  ASSERT_EQ(pwrite(fd.get(), mem, kSize, 0), static_cast<ssize_t>(kSize)) << ErrnoName(errno);
  void* rmem = nullptr;
  ASSERT_EQ(posix_memalign(&rmem, 4096, kSize), 0);
  std::unique_ptr<void, decltype(&free)> rguard(rmem, &free);
  ASSERT_EQ(pread(fd.get(), rmem, kSize, 0), static_cast<ssize_t>(kSize)) << ErrnoName(errno);
  EXPECT_EQ(std::memcmp(mem, rmem, kSize), 0);
  EXPECT_EQ(Read(Path("direct")), std::string(static_cast<char*>(mem), kSize));
}

INSTANTIATE_TEST_SUITE_P(Memfs, PosixTest,
                         ::testing::Values(// File data in the daemon's memory.
                                           Config{"default_cache", {"--memfs_data=daemon"}},
                                           Config{"no_cache", {"--memfs_data=daemon", "--entry_timeout=0",
                                                               "--attr_timeout=0", "--offload=off"}},
                                           // One-page requests: every large
                                           // read and write is split.
                                           Config{"small_requests", {"--memfs_data=daemon", "--max_write=4K"}},
                                           // File data in a private tmpfs,
                                           // through kernel passthrough.
                                           Config{"kernel_data", {"--memfs_data=kernel"}}),
                         [](const ::testing::TestParamInfo<Config>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------
// A small file system: statfs and running out of space.

// With memfs's data in the daemon and in a private tmpfs (where --size and
// --max_inodes become the tmpfs's size= and nr_inodes=).
class SmallFsTest : public MountTest, public ::testing::WithParamInterface<const char*> {
 protected:
  std::vector<std::string> DaemonFlags() const override {
    return {"--size=64M", "--max_inodes=200", std::string("--memfs_data=") + GetParam()};
  }
};

TEST_P(SmallFsTest, StatfsMatchesSize) {
  struct statfs sf {};
  ASSERT_SYS(statfs(Path("").c_str(), &sf));
  EXPECT_EQ(sf.f_type, kFuseSuperMagic);
  ASSERT_GT(sf.f_frsize, 0);
  EXPECT_EQ(static_cast<uint64_t>(sf.f_blocks) * static_cast<uint64_t>(sf.f_frsize), 64 * kMiB)
      << "f_blocks " << sf.f_blocks << " x f_frsize " << sf.f_frsize;
  EXPECT_LE(sf.f_bfree, sf.f_blocks);
  EXPECT_LE(sf.f_bavail, sf.f_bfree);
  EXPECT_GE(static_cast<uint64_t>(sf.f_bfree) * sf.f_frsize, 63 * kMiB) << "an empty fs is nearly all free";
  EXPECT_EQ(sf.f_namelen, 255);
  EXPECT_GT(sf.f_files, 0u);
  EXPECT_LE(sf.f_ffree, sf.f_files);
  struct statvfs sv {};
  ASSERT_SYS(statvfs(Path("").c_str(), &sv));
  EXPECT_EQ(static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize, 64 * kMiB);
  // Writing 8 MiB takes about 8 MiB.
  std::string error;
  ASSERT_TRUE(WriteFile(Path("eight"), PatternBytes(1, 8 * kMiB), &error)) << error;
  struct statfs after {};
  ASSERT_SYS(statfs(Path("").c_str(), &after));
  const int64_t used = (static_cast<int64_t>(sf.f_bfree) - static_cast<int64_t>(after.f_bfree)) *
                       static_cast<int64_t>(sf.f_frsize);
  EXPECT_GE(used, static_cast<int64_t>(8 * kMiB));
  EXPECT_LE(used, static_cast<int64_t>(8 * kMiB + 64 * kKiB));
}

TEST_P(SmallFsTest, FillUntilEnospcThenFreeAndWriteAgain) {
  const std::string chunk = PatternBytes(2, 1 * kMiB);
  uint64_t written = 0;
  int last_errno = 0;
  {
    int raw;
    ASSERT_SYS(raw = open(Path("fill").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    UniqueFd fd(raw);
    for (int i = 0; i < 200; ++i) {  // 200 MiB: far more than fits
      ssize_t n = write(fd.get(), chunk.data(), chunk.size());
      if (n < 0) {
        last_errno = errno;
        break;
      }
      ASSERT_GT(n, 0) << "write returned 0";
      written += static_cast<uint64_t>(n);
    }
    EXPECT_EQ(last_errno, ENOSPC) << "got " << ErrnoName(last_errno) << " after " << written << " bytes";
    EXPECT_LE(written, 64 * kMiB);
    EXPECT_GE(written, 60 * kMiB) << "the fs should hold nearly its size in data";
    struct stat st;
    ASSERT_SYS(fstat(fd.get(), &st));
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), written) << "a failed write must not grow the file";
    struct statfs sf {};
    ASSERT_SYS(statfs(Path("").c_str(), &sf));
    EXPECT_LT(static_cast<uint64_t>(sf.f_bavail) * sf.f_frsize, 1 * kMiB);
    // Other space-taking calls fail the same way.
    EXPECT_ERRNO(fallocate(fd.get(), 0, static_cast<off_t>(written), 4 * kMiB), ENOSPC);
  }
  EXPECT_EQ(Stat(Path("fill")).st_size, static_cast<off_t>(written));
  ASSERT_SYS(unlink(Path("fill").c_str()));
  // FUSE sends RELEASE and FORGET asynchronously, so the daemon may free the
  // unlinked file's blocks a moment after unlink() returns: allow up to 5 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::string error;
  bool ok = false;
  while (!(ok = WriteFile(Path("again"), PatternBytes(3, 32 * kMiB), &error)) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(ok) << "after freeing the space: " << error;
  EXPECT_EQ(Read(Path("again")), PatternBytes(3, 32 * kMiB));
}

TEST_P(SmallFsTest, RemovingEverythingGivesBackAllSpaceAndInodes) {
  struct statfs empty {};
  ASSERT_SYS(statfs(Path("").c_str(), &empty));
  // Files of odd sizes, holes, preallocation, xattrs, symlinks, devices,
  // directories, hard links, an O_TMPFILE, and a file unlinked while open.
  ASSERT_SYS(mkdir(Path("d").c_str(), 0755));
  ASSERT_SYS(mkdir(Path("d/e").c_str(), 0755));
  for (int i = 0; i < 50; ++i) Write(Path("d/f" + std::to_string(i)), PatternBytes(i, 1 + i * 7777));
  ASSERT_SYS(link(Path("d/f3").c_str(), Path("d/e/link").c_str()));
  ASSERT_SYS(setxattr(Path("d/f1").c_str(), "user.x", "value", 5, 0));
  ASSERT_SYS(setxattr(Path("d").c_str(), "user.big", PatternBytes(9, 60000).data(), 60000, 0));
  ASSERT_SYS(symlink(std::string(3000, 's').c_str(), Path("d/sym").c_str()));
  ASSERT_SYS(mknod(Path("d/fifo").c_str(), S_IFIFO | 0644, 0));
  ASSERT_SYS(mknod(Path("d/chr").c_str(), S_IFCHR | 0644, makedev(1, 3)));
  {
    int raw;
    ASSERT_SYS(raw = open(Path("d/sparse").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    UniqueFd fd(raw);
    ASSERT_EQ(pwrite(fd.get(), "x", 1, 40 * kMiB), 1);
    ASSERT_SYS(fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, 2 * kMiB));
  }
  ASSERT_SYS(Renameat2(Path("d/f4"), Path("d/f5"), 0));  // replaces f5
  int raw;
  ASSERT_SYS(raw = open(Path("d").c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  UniqueFd tmp(raw);
  ASSERT_EQ(write(tmp.get(), "tmp", 3), 3);
  ASSERT_SYS(raw = open(Path("d/f10").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd open_unlinked(raw);
  struct statfs full {};
  ASSERT_SYS(statfs(Path("").c_str(), &full));
  EXPECT_LT(full.f_bfree, empty.f_bfree);
  EXPECT_LT(full.f_ffree, empty.f_ffree);

  // Remove it all; close the last descriptors.
  for (const char* n : {"d/e/link", "d/sym", "d/fifo", "d/chr", "d/sparse"}) EXPECT_SYS(unlink(Path(n).c_str()));
  for (int i = 0; i < 50; ++i) {
    if (i == 4) continue;  // renamed away
    EXPECT_SYS(unlink(Path("d/f" + std::to_string(i)).c_str()));
  }
  EXPECT_SYS(rmdir(Path("d/e").c_str()));
  EXPECT_EQ(PreadString(open_unlinked.get(), 3, 0).size(), 3u);
  open_unlinked.Reset();
  tmp.Reset();
  EXPECT_SYS(removexattr(Path("d").c_str(), "user.big"));
  EXPECT_SYS(rmdir(Path("d").c_str()));

  // RELEASE and FORGET are asynchronous: allow a moment.
  struct statfs after {};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_SYS(statfs(Path("").c_str(), &after));
  } while ((after.f_bfree != empty.f_bfree || after.f_ffree != empty.f_ffree) &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(after.f_bfree, empty.f_bfree) << "blocks not given back";
  EXPECT_EQ(after.f_ffree, empty.f_ffree) << "inodes not given back";
}

// Inodes run out as the limit says: creates fail with ENOSPC, and a
// removed file's inode is there again.
TEST_P(SmallFsTest, InodeLimitGivesEnospcThenRoomAgain) {
  struct statfs sf {};
  ASSERT_SYS(statfs(Path("").c_str(), &sf));
  EXPECT_EQ(sf.f_files, 200u);
  int made = 0, last_errno = 0;
  for (int i = 0; i < 300; ++i) {
    const int fd = open(Path("i" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      last_errno = errno;
      break;
    }
    close(fd);
    ++made;
  }
  EXPECT_EQ(last_errno, ENOSPC) << "after " << made << " files";
  EXPECT_GE(made, 195);
  EXPECT_LE(made, 199) << "the root is an inode too";
  EXPECT_ERRNO(mkdir(Path("one-more").c_str(), 0755), ENOSPC);
  ASSERT_SYS(unlink(Path("i0").c_str()));
  // The removed inode comes back once the kernel's FORGET is in (async).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int fd = -1;
  while ((fd = open(Path("again").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) < 0 && errno == ENOSPC &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(fd, 0) << ErrnoName(errno);
  if (fd >= 0) close(fd);
}

INSTANTIATE_TEST_SUITE_P(Memfs, SmallFsTest, ::testing::Values("daemon", "kernel"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param) + "_data";
                         });

}  // namespace
}  // namespace efuse::testing
