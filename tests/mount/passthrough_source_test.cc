// tests/mount/passthrough_source_test.cc — efused --fs=passthrough and its
// source: changes made in the source behind the mount's back (caching off,
// or --watch_source), directories read ahead, listings with or without
// attributes (--readdirplus), a tree with more files than the daemon may
// have fds, and source directories refused on the command line.
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
// The source changed behind the mount's back. Caching off, as documented
// for a source others modify.

class BehindTheBackTest : public PassthroughMountTest {
 protected:
  std::vector<std::string> ExtraFlags() const override {
    return {"--entry_timeout=0", "--attr_timeout=0", "--offload=off"};
  }
};

TEST_F(BehindTheBackTest, RemovedAndRenamedInTheSource) {
  WriteSrc("a", "AAAA");
  WriteSrc("b", "BBBB");
  ASSERT_EQ(mkdir(Src("dir").c_str(), 0755), 0);
  WriteSrc("dir/inner", "III");
  EXPECT_EQ(ReadPath(Path("a")), "AAAA");
  EXPECT_EQ(ReadPath(Path("b")), "BBBB");
  EXPECT_EQ(ReadPath(Path("dir/inner")), "III");
  struct stat st {};

  ASSERT_EQ(unlink(Src("a").c_str()), 0);
  EXPECT_ERRNO(stat(Path("a").c_str(), &st), ENOENT);
  EXPECT_ERRNO(open(Path("a").c_str(), O_RDONLY), ENOENT);

  ASSERT_EQ(rename(Src("b").c_str(), Src("c").c_str()), 0);
  EXPECT_ERRNO(open(Path("b").c_str(), O_RDONLY), ENOENT);
  EXPECT_EQ(ReadPath(Path("c")), "BBBB");

  RemoveTree(Src("dir"));
  EXPECT_ERRNO(stat(Path("dir/inner").c_str(), &st), ENOENT);
  EXPECT_ERRNO(stat(Path("dir").c_str(), &st), ENOENT);
}

TEST_F(BehindTheBackTest, ReplacedFilesNeverShowAnotherFilesData) {
  for (int round = 0; round < 50; ++round) {
    const std::string want = "version " + std::to_string(round);
    WriteSrc("x.new", want);
    ASSERT_EQ(rename(Src("x.new").c_str(), Src("x").c_str()), 0);
    EXPECT_EQ(ReadPath(Path("x")), want);
  }
  // An fd opened before the source removed the file keeps reading that
  // same file (or fails); never another one.
  WriteSrc("y", "YYYY");
  UniqueFd fd(open(Path("y").c_str(), O_RDONLY));
  ASSERT_SYS(fd.get());
  ASSERT_EQ(unlink(Src("y").c_str()), 0);
  for (int i = 0; i < 20; ++i) WriteSrc("z" + std::to_string(i), "ZZZZ");
  char buf[8] = {};
  ssize_t n = pread(fd.get(), buf, sizeof(buf), 0);
  if (n >= 0) {
    EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "YYYY");
  } else {
    EXPECT_TRUE(errno == ESTALE || errno == ENOENT) << ErrnoName(errno);
  }
}

// With attribute lifetime 0 nothing is remembered: a label set in the source
// shows at once.
TEST_F(BehindTheBackTest, AbsentXattrIsNotRememberedWithoutAttributeCaching) {
  WriteSrc("a", "AAAA");
  char buf[64];
  StatusReader status(&mount_);
  for (int i = 0; i < 3; ++i)
    EXPECT_ERRNO(getxattr(Path("a").c_str(), "security.selinux", buf, sizeof(buf)), ENODATA);
  EXPECT_EQ(status.Number("pt_xattr_absences_answered"), 0u);
  ASSERT_SYS(setxattr(Src("a").c_str(), "security.selinux", "x", 1, 0));
  EXPECT_EQ(getxattr(Path("a").c_str(), "security.selinux", buf, sizeof(buf)), 1)
      << ErrnoName(errno);
}

// Readdir-ahead: a listing that shows subdirectories has them read in the
// background (the source's caches warm before the kernel walks there),
// without moving their access times.
class ReadAheadTest : public PassthroughMountTest {
 protected:
  static constexpr int kSubdirs = 8;
  void PrepareSource() override {
    ASSERT_EQ(mkdir(Src("tree").c_str(), 0755), 0);
    for (int i = 0; i < kSubdirs; ++i) {
      const std::string d = "tree/s" + std::to_string(i);
      ASSERT_EQ(mkdir(Src(d).c_str(), 0755), 0);
      WriteSrc(d + "/f", "x");
      const timespec old[2] = {{1000000, 0}, {UTIME_OMIT, 0}};  // atime, mtime
      ASSERT_EQ(utimensat(AT_FDCWD, Src(d).c_str(), old, 0), 0);
    }
    WriteSrc("tree/file", "not a directory");
  }
  std::vector<std::string> List(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return names;
    while (dirent* e = readdir(d)) names.push_back(e->d_name);
    closedir(d);
    return names;
  }
};

TEST_F(ReadAheadTest, SubdirectoriesAreReadInTheBackgroundWithoutTouchingAtime) {
  // A mount point among them is not read ahead (nor would an automount
  // trigger be: nothing gets mounted by a listing).
  ASSERT_SYS(mount("efuse-ra", Src("tree/s0").c_str(), "tmpfs", 0, "size=1m"));
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{Src("tree/s0")};
  StatusReader status(&mount_);
  EXPECT_EQ(status.Number("pt_readdir_ahead_dirs"), 0u);
  EXPECT_EQ(List(Path("tree")).size(), static_cast<size_t>(kSubdirs + 3));
  // Queued while the listing was answered: no waiting needed.
  EXPECT_EQ(status.Number("pt_readdir_ahead_queued"), static_cast<uint64_t>(kSubdirs));
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  uint64_t read = 0;
  while ((read = status.Number("pt_readdir_ahead_dirs")) < kSubdirs - 1 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(read, static_cast<uint64_t>(kSubdirs - 1)) << "every subdirectory but the mount point";
  for (int i = 1; i < kSubdirs; ++i) {
    struct stat st {};
    ASSERT_SYS(stat(Src("tree/s" + std::to_string(i)).c_str(), &st));
    EXPECT_EQ(st.st_atim.tv_sec, 1000000) << "read ahead without O_NOATIME: s" << i;
  }
  // A new name makes the kernel read the listing again: the daemon sees the
  // same subdirectories and queues none of them twice.
  const uint64_t listings = Counts()["READDIR"] + Counts()["READDIRPLUS"];
  WriteSrc("tree/new", "n");
  ASSERT_SYS(close(open(Path("tree/new2").c_str(), O_CREAT | O_WRONLY, 0644)));
  EXPECT_EQ(List(Path("tree")).size(), static_cast<size_t>(kSubdirs + 5));
  EXPECT_GT(Counts()["READDIR"] + Counts()["READDIRPLUS"], listings);
  EXPECT_EQ(status.Number("pt_readdir_ahead_queued"), static_cast<uint64_t>(kSubdirs));
  EXPECT_EQ(List(Path("tree/s3")).size(), 3u);
}

class ReadAheadOffTest : public ReadAheadTest {
 protected:
  std::vector<std::string> ExtraFlags() const override { return {"--readdir_ahead=false"}; }
};

TEST_F(ReadAheadOffTest, NothingIsReadAhead) {
  EXPECT_EQ(List(Path("tree")).size(), static_cast<size_t>(kSubdirs + 3));
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&mount_).Fresh(&kv));
  EXPECT_EQ(kv.count("pt_readdir_ahead_dirs"), 0u);
  EXPECT_EQ(kv.count("pt_readdir_ahead_queued"), 0u);
}

// With --watch_source, long cache lifetimes still see what others do to the
// source: the daemon invalidates the kernel's entries, listings, attributes
// and data from fanotify events.
class WatchTest : public PassthroughMountTest, public ::testing::WithParamInterface<ModeCase> {
 protected:
  std::vector<std::string> ExtraFlags() const override {
    std::vector<std::string> f = {"--watch_source", "--entry_timeout=600", "--attr_timeout=600",
                                  "--negative_timeout=600"};
    f.insert(f.end(), GetParam().flags.begin(), GetParam().flags.end());
    return f;
  }
  void PrepareSource() override {
    WriteSrc("f", "one");
    WriteSrc("gone", "soon");
    ASSERT_EQ(mkdir(Src("dir").c_str(), 0755), 0);
    WriteSrc("dir/old", "o");
  }
  // Polls `check` for up to 5 s: invalidation is asynchronous.
  static bool Eventually(const std::function<bool()>& check) {
    const auto deadline = std::chrono::steady_clock::now() + seconds(5);
    while (!check()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return true;
  }
  std::vector<std::string> Names(const std::string& dir) {
    std::vector<std::string> out;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return out;
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
        out.push_back(e->d_name);
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_P(WatchTest, ChangesInTheSourceShowDespiteLongCacheLifetimes) {
  struct stat st {};
  // Prime every cache: entries, a negative entry, attributes, data, listing.
  EXPECT_EQ(ReadPath(Path("f")), "one");
  EXPECT_EQ(ReadPath(Path("f")), "one");
  ASSERT_SYS(stat(Path("gone").c_str(), &st));
  EXPECT_ERRNO(stat(Path("new").c_str(), &st), ENOENT);
  EXPECT_EQ(Names(Path("dir")), std::vector<std::string>{"old"});
  EXPECT_EQ(Names(Path("dir")), std::vector<std::string>{"old"});
  ASSERT_SYS(stat(Path("f").c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  char label[16];
  EXPECT_ERRNO(getxattr(Path("f").c_str(), "security.selinux", label, sizeof(label)), ENODATA);
  EXPECT_ERRNO(getxattr(Path("f").c_str(), "security.selinux", label, sizeof(label)), ENODATA);

  WriteSrc("f", "changed by someone else");
  ASSERT_SYS(setxattr(Src("f").c_str(), "security.selinux", "lbl", 3, 0));
  ASSERT_EQ(chmod(Src("f").c_str(), 0600), 0);
  ASSERT_EQ(unlink(Src("gone").c_str()), 0);
  WriteSrc("new", "appeared");
  WriteSrc("dir/added", "a");

  EXPECT_TRUE(Eventually([&] { return ReadPath(Path("f")) == "changed by someone else"; }))
      << ReadPath(Path("f"));
  EXPECT_TRUE(Eventually([&] {
    struct stat s {};
    return stat(Path("f").c_str(), &s) == 0 && (s.st_mode & 07777) == 0600;
  }));
  EXPECT_TRUE(Eventually([&] {
    struct stat s {};
    return stat(Path("gone").c_str(), &s) != 0 && errno == ENOENT;
  }));
  EXPECT_TRUE(Eventually([&] {
    return getxattr(Path("f").c_str(), "security.selinux", label, sizeof(label)) == 3;
  })) << "a label set in the source";
  // The negative entry may still be cached on the first tries: ENOENT until
  // the invalidation lands is not a failure.
  EXPECT_TRUE(Eventually([&] {
    std::string data, error;
    return ReadFile(Path("new"), &data, &error) && data == "appeared";
  }));
  EXPECT_TRUE(Eventually([&] {
    return Names(Path("dir")) == std::vector<std::string>{"added", "old"};
  }));
  // Changes through the mount are not reported back to the kernel (they are
  // the daemon's own), and still work.
  std::string error;
  ASSERT_TRUE(WriteFile(Path("dir/mine"), "m", &error)) << error;
  EXPECT_EQ(Names(Path("dir")), (std::vector<std::string>{"added", "mine", "old"}));
}

INSTANTIATE_TEST_SUITE_P(Modes, WatchTest,
                         ::testing::Values(ModeCase{"auto", {}, true},
                                           ModeCase{"off", {"--passthrough=off"}, false}),
                         [](const ::testing::TestParamInfo<ModeCase>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------
// Listings with or without attributes (--readdirplus).

class ListingTest : public PassthroughMountTest {
 protected:
  static constexpr int kFiles = 40;
  void PrepareSource() override {
    ASSERT_EQ(mkdir(Src("d").c_str(), 0755), 0);
    ASSERT_EQ(mkdir(Src("d/sub").c_str(), 0755), 0);
    for (int i = 0; i < kFiles; ++i) WriteSrc("d/f" + std::to_string(i), std::string(i, 'x'));
  }
  // Name -> d_type of the listing of `dir`, without "." and "..".
  std::map<std::string, int> Listing(const std::string& dir) {
    std::map<std::string, int> out;
    DIR* d = opendir(dir.c_str());
    EXPECT_NE(d, nullptr) << ErrnoName(errno);
    if (d == nullptr) return out;
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
        out[e->d_name] = e->d_type;
    }
    closedir(d);
    return out;
  }
  // `ls -l`: every file stat'ed, sizes checked.
  void StatEveryFile() {
    for (int i = 0; i < kFiles; ++i) {
      struct stat st {};
      ASSERT_SYS(lstat(Path("d/f" + std::to_string(i)).c_str(), &st));
      EXPECT_EQ(st.st_size, i);
      EXPECT_TRUE(S_ISREG(st.st_mode));
    }
  }
  // The kernel forgets its dentries and inodes (and cached listings).
  static void DropKernelCaches() {
    std::ofstream("/proc/sys/vm/drop_caches") << "2" << std::endl;
  }
  uint64_t StatusValue(const std::string& key) { return StatusReader(&mount_).Number(key); }
  void ExpectTypes(const std::map<std::string, int>& listing) {
    ASSERT_EQ(listing.size(), static_cast<size_t>(kFiles + 1));
    EXPECT_EQ(listing.at("sub"), DT_DIR);
    for (int i = 0; i < kFiles; ++i) EXPECT_EQ(listing.at("f" + std::to_string(i)), DT_REG);
  }
};

TEST_F(ListingTest, AdaptiveListingsCarryAttributesOnlyWhereFilesAreLookedUp) {
  // A walk by name, as find does: names and types, and no stat per file.
  struct stat st {};
  ASSERT_SYS(lstat(Path("d").c_str(), &st));
  auto before = Counts();
  ExpectTypes(Listing(Path("d")));
  auto after = Counts();
  EXPECT_EQ(Delta(after, before, "LOOKUP"), 0u);
  EXPECT_GE(StatusValue("pt_listings_names_only"), 1u);
  EXPECT_EQ(StatusValue("pt_listings_with_attrs"), 0u);

  // `ls -l` looks every file up: the directory learns it.
  before = Counts();
  StatEveryFile();
  after = Counts();
  EXPECT_EQ(Delta(after, before, "LOOKUP"), static_cast<uint64_t>(kFiles));

  // Forgotten by the kernel, listed and stat'ed again: the attributes come
  // with the listing (remembered across the forget), no LOOKUP per file.
  DropKernelCaches();
  ExpectTypes(Listing(Path("d")));
  before = Counts();
  StatEveryFile();
  after = Counts();
  EXPECT_EQ(Delta(after, before, "LOOKUP"), 0u);
  EXPECT_GE(StatusValue("pt_listings_with_attrs"), 1u);

  // A file changed in the source behind the mount's back still shows its
  // own size once the kernel asks again: listings never hide a change.
  WriteSrc("d/f1", "changed");
  DropKernelCaches();
  ExpectTypes(Listing(Path("d")));
  ASSERT_SYS(lstat(Path("d/f1").c_str(), &st));
  EXPECT_EQ(st.st_size, 7);
}

// `ls -lR`: it lists a directory, stats every entry (the subdirectories
// too), then descends into each subdirectory in turn.
class WalkListingTest : public ListingTest {
 protected:
  static constexpr int kSubdirs = 3;
  static constexpr int kWalkFiles = 150;  // records past the stat-ahead minimum
  static constexpr int kLookupsToLearn = 4;  // kLookupsForAttrs in passthrough.cc
  void PrepareSource() override {
    ASSERT_EQ(mkdir(Src("tree").c_str(), 0755), 0);
    for (int d = 0; d < kSubdirs; ++d) {
      ASSERT_EQ(mkdir(Src(SubdirName(d)).c_str(), 0755), 0);
      for (int i = 0; i < kWalkFiles; ++i) WriteSrc(SubdirName(d) + "/f" + std::to_string(i), "x");
    }
  }
  static std::string SubdirName(int d) { return "tree/s" + std::to_string(d); }
  // Lists the subdirectory and stats every file: the LOOKUPs it took.
  uint64_t ListLong(int d) {
    const auto before = Counts();
    const std::string dir = Path(SubdirName(d));
    EXPECT_EQ(Listing(dir).size(), static_cast<size_t>(kWalkFiles));
    for (int i = 0; i < kWalkFiles; ++i) {
      struct stat st {};
      EXPECT_EQ(lstat((dir + "/f" + std::to_string(i)).c_str(), &st), 0) << i;
    }
    return Delta(Counts(), before, "LOOKUP");
  }
};

TEST_F(WalkListingTest, SiblingsOfALongListedDirectoryAreListedWithAttributes) {
  EXPECT_EQ(Listing(Path("tree")).size(), static_cast<size_t>(kSubdirs));
  for (int d = 0; d < kSubdirs; ++d) {
    struct stat st {};
    ASSERT_SYS(lstat(Path(SubdirName(d)).c_str(), &st));
  }
  // The first is learned the slow way: its listing carried names only.
  EXPECT_GE(ListLong(0), static_cast<uint64_t>(kLookupsToLearn));
  // Its siblings' listings carry attributes from the start: no LOOKUP.
  for (int d = 1; d < kSubdirs; ++d) EXPECT_EQ(ListLong(d), 0u) << SubdirName(d);
  // While those were answered, a reader looked their files up ahead.
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  const uint64_t want = static_cast<uint64_t>(kWalkFiles) * (kSubdirs - 1);
  while (StatusValue("pt_stat_ahead_names") < want && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(StatusValue("pt_stat_ahead_names"), want);
  EXPECT_EQ(StatusValue("pt_stat_ahead_chunks"), static_cast<uint64_t>(kSubdirs - 1));
}

TEST_F(WalkListingTest, AWalkByNameLearnsNothingAndStatsNothingAhead) {
  // find: lists and descends, stats no file.
  EXPECT_EQ(Listing(Path("tree")).size(), static_cast<size_t>(kSubdirs));
  for (int d = 0; d < kSubdirs; ++d) {
    EXPECT_EQ(Listing(Path(SubdirName(d))).size(), static_cast<size_t>(kWalkFiles));
  }
  EXPECT_EQ(StatusValue("pt_listings_with_attrs"), 0u);
  EXPECT_EQ(StatusValue("pt_stat_ahead_chunks"), 0u);
  EXPECT_EQ(StatusValue("pt_stat_ahead_names"), 0u);
}

// `ls -lR` down a deep tree: once a directory is listed with attributes,
// every directory below it is too, whether the kernel looked it up or got
// it in a listing with attributes (then no LOOKUP tells the daemon about
// it): no level goes back to names only and a LOOKUP per file.
class DeepWalkListingTest : public ListingTest {
 protected:
  static constexpr int kLevels = 5;
  static constexpr int kLevelFiles = 20;
  void PrepareSource() override {
    std::string dir = "deep";
    for (int level = 0; level < kLevels; ++level) {
      ASSERT_EQ(mkdir(Src(dir).c_str(), 0755), 0);
      for (int i = 0; i < kLevelFiles; ++i) WriteSrc(dir + "/f" + std::to_string(i), "x");
      dir += "/next";
    }
  }
};

TEST_F(DeepWalkListingTest, EveryLevelBelowTheFirstListedWithAttributesIsListedSo) {
  std::string dir = Path("deep");
  for (int level = 0; level < kLevels; ++level) {
    const auto before = Counts();
    const std::map<std::string, int> names = Listing(dir);
    ASSERT_EQ(names.size(), static_cast<size_t>(kLevelFiles + (level + 1 < kLevels ? 1 : 0))) << dir;
    // The files first, then the directory to descend into.
    for (int i = 0; i < kLevelFiles; ++i) {
      struct stat st {};
      EXPECT_EQ(lstat((dir + "/f" + std::to_string(i)).c_str(), &st), 0) << dir << "/f" << i;
    }
    if (level + 1 < kLevels) {
      struct stat st {};
      EXPECT_EQ(lstat((dir + "/next").c_str(), &st), 0) << dir;
    }
    const uint64_t lookups = Delta(Counts(), before, "LOOKUP");
    if (level == 0) {
      EXPECT_GE(lookups, static_cast<uint64_t>(kLevelFiles)) << "the top level is learned the slow way";
    } else {
      EXPECT_EQ(lookups, 0u) << "level " << level << " (" << dir << ") went back to a LOOKUP per file";
    }
    dir += "/next";
  }
}

class ListingAlwaysTest : public ListingTest {
 protected:
  std::vector<std::string> ExtraFlags() const override { return {"--readdirplus=always"}; }
};

TEST_F(ListingAlwaysTest, EveryListingCarriesAttributes) {
  ExpectTypes(Listing(Path("d")));
  const auto before = Counts();
  StatEveryFile();
  const auto after = Counts();
  EXPECT_EQ(Delta(after, before, "LOOKUP"), 0u);
  EXPECT_EQ(StatusValue("pt_listings_names_only"), 0u);
}

class ListingNeverTest : public ListingTest {
 protected:
  std::vector<std::string> ExtraFlags() const override { return {"--readdirplus=never"}; }
};

TEST_F(ListingNeverTest, NoListingCarriesAttributes) {
  for (int round = 0; round < 2; ++round) {
    DropKernelCaches();
    ExpectTypes(Listing(Path("d")));
    const auto before = Counts();
    StatEveryFile();
    const auto after = Counts();
    EXPECT_EQ(Delta(after, before, "LOOKUP"), static_cast<uint64_t>(kFiles)) << "round " << round;
  }
  EXPECT_EQ(StatusValue("pt_listings_with_attrs"), 0u);
}

// ---------------------------------------------------------------------------
// More files than the daemon may keep fds open.

class ManyFilesTest : public PassthroughMountTest {
 protected:
  static constexpr int kDirs = 25;
  static constexpr int kPerDir = 1000;
  std::vector<std::string> ExtraFlags() const override { return {"--fd_cache=2000"}; }
  void PrepareSource() override {
    for (int d = 0; d < kDirs; ++d) {
      const std::string dir = Src("d" + std::to_string(d));
      ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
      UniqueFd dfd(open(dir.c_str(), O_PATH | O_DIRECTORY));
      for (int i = 0; i < kPerDir; ++i) {
        UniqueFd fd(openat(dfd.get(), ("f" + std::to_string(i)).c_str(),
                           O_WRONLY | O_CREAT | O_EXCL, 0644));
        ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
        ASSERT_EQ(write(fd.get(), "x", 1), 1);
      }
    }
  }
};

int DaemonFdCount(pid_t pid) {
  int n = 0;
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

long DaemonRssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

TEST_F(ManyFilesTest, FindOverMoreFilesThanTheFdLimitAllows) {
  const long rss_before = DaemonRssKiB(mount_.pid());
  // -size makes find stat every file: a LOOKUP each, 25,000 remembered inodes.
  CommandResult r =
      RunCommand({"/usr/bin/find", mount_.path(), "-type", "f", "-size", "-2"}, seconds(100));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  size_t lines = 0;
  for (char ch : r.out) lines += ch == '\n';
  EXPECT_EQ(lines, static_cast<size_t>(kDirs * kPerDir));
  // The daemon's memory for what the kernel now remembers (RSS, so it
  // includes allocator slack; the unit test measures the heap alone).
  const long rss_after = DaemonRssKiB(mount_.pid());
  const double per_inode = (rss_after - rss_before) * 1024.0 / (kDirs * kPerDir + kDirs);
  RecordProperty("daemon_rss_bytes_per_inode", static_cast<int>(per_inode));
  std::printf("daemon RSS per remembered inode: %.0f bytes (%ld -> %ld KiB)\n", per_inode,
              rss_before, rss_after);
  const int fds = DaemonFdCount(mount_.pid());
  EXPECT_GT(fds, 0);
  EXPECT_LT(fds, 2000 + 64) << "the daemon's fds stay within its fd cache";
  // Again, now that the kernel remembers them: every file still answers.
  r = RunCommand({"/usr/bin/du", "-s", "--inodes", mount_.path()}, seconds(100));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(std::atoi(r.out.c_str()), kDirs * kPerDir + kDirs + 1) << r.out;
  EXPECT_EQ(ReadPath(Path("d24/f999")), "x");
  EXPECT_LT(DaemonFdCount(mount_.pid()), 2000 + 64);
}

// ---------------------------------------------------------------------------
// Command lines: refused with one line naming the culprit, nothing mounted.

TEST(PassthroughCommandLineTest, BadSourcesAreRefusedWithOneLine) {
  char mnt[] = "/tmp/efuse-ptbad-XXXXXX";
  ASSERT_NE(mkdtemp(mnt), nullptr);
  const std::string file = std::string(mnt) + "-file";
  std::string error;
  ASSERT_TRUE(WriteFile(file, "x", &error)) << error;
  struct Case {
    std::vector<std::string> args;
    std::string culprit;
  };
  const std::vector<Case> cases = {
      {{"--fs=passthrough", mnt}, "--source"},
      {{"--fs=passthrough", "--source=/nonexistent-efuse-src", mnt}, "/nonexistent-efuse-src"},
      {{"--fs=passthrough", "--source=" + file, mnt}, "not a directory"},
      {{"--fs=passthrough", "--source=/tmp", "--passthrough=maybe", mnt}, "maybe"},
      {{"--fs=passthrough", "--source=/tmp", "--readdirplus=sometimes", mnt}, "--readdirplus"},
      {{"--fs=passthrough", "--source=" + std::string(mnt), mnt}, "inside the mount point"},
      {{"--fs=memfs", "--source=/tmp", mnt}, "--source"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {EFUSED_PATH};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    CommandResult r = RunCommand(argv, seconds(10));
    EXPECT_NE(r.exit_code(), 0) << r.Describe();
    size_t lines = 0;
    for (char ch : r.err) lines += ch == '\n';
    EXPECT_EQ(lines, 1u) << r.Describe();
    EXPECT_NE(r.err.find(c.culprit), std::string::npos) << c.culprit << ": " << r.Describe();
    EXPECT_FALSE(FindMount(mnt));
  }
  // --passthrough=on without CAP_SYS_ADMIN: refused before mounting.
  if (access("/usr/bin/setpriv", X_OK) == 0 && geteuid() == 0) {
    CommandResult r =
        RunCommand({"/usr/bin/setpriv", "--reuid=1234", "--regid=1234", "--clear-groups",
                    EFUSED_PATH, "--fs=passthrough", "--source=/tmp", "--passthrough=on", mnt},
                   seconds(10));
    EXPECT_NE(r.exit_code(), 0) << r.Describe();
    EXPECT_NE(r.err.find("CAP_SYS_ADMIN"), std::string::npos) << r.Describe();
  }
  unlink(file.c_str());
  rmdir(mnt);
}

}  // namespace
}  // namespace efuse::testing
