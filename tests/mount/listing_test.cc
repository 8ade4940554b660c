// tests/mount/listing_test.cc — directories opened without OPENDIR.
//
// Passthrough (by default, unless the source is declared shared) and memfs
// (both data modes) answer the first OPENDIR ENOSYS: the kernel
// then opens directories itself (no OPENDIR, no RELEASEDIR), keeps each
// listing until a change through the mount, and sends READDIR without a
// handle, which the daemon serves from a stream of its own. Pinned here,
// per configuration: a listing read again sends no READDIR; one changed
// through the mount (create, unlink, rename in and out, mkdir, rmdir, link)
// lists exactly the new names, each once; a reader that began after a
// change never gets a listing another reader began before it; a large
// listing read in small pieces, with seekdir back to a telldir mark and
// rewinddir, and two readers of one directory taking turns, give every name
// once; FSYNCDIR reaches the daemon. With directory handles (a shared
// source, or --dir_handles=on) the same holds, with an OPENDIR per open.
// The transport does not matter here: one is run.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"
#include "tests/mount/passthrough_sources.h"

namespace efuse::testing {
namespace {

struct ListingConfig {
  const char* name;
  std::vector<std::string> flags;
  bool dir_handles;  // the daemon answers OPENDIR
};

void PrintTo(const ListingConfig& c, std::ostream* os) { *os << c.name; }

class DirListingTest : public MountTest, public ::testing::WithParamInterface<ListingConfig> {
 protected:
  std::vector<std::string> DaemonFlags() const override { return GetParam().flags; }

  // Every name of `dir` with how often it was listed, read with getdents64
  // into a buffer of `buffer` bytes (small: many READDIRs of one stream).
  static std::map<std::string, int> List(const std::string& dir, size_t buffer = 32768) {
    std::map<std::string, int> seen;
    const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << dir << ": " << ErrnoName(errno);
    if (fd < 0) return seen;
    std::vector<char> buf(buffer);
    for (;;) {
      const long n = syscall(SYS_getdents64, fd, buf.data(), buf.size());
      EXPECT_GE(n, 0) << "getdents64: " << ErrnoName(errno);
      if (n <= 0) break;
      for (long at = 0; at < n;) {
        auto* e = reinterpret_cast<struct dirent64*>(buf.data() + at);
        ++seen[e->d_name];
        at += e->d_reclen;
      }
    }
    close(fd);
    return seen;
  }
  static std::set<std::string> Names(const std::map<std::string, int>& seen) {
    std::set<std::string> names;
    for (const auto& [name, count] : seen) {
      EXPECT_EQ(count, 1) << "'" << name << "' listed " << count << " times";
      names.insert(name);
    }
    return names;
  }
  uint64_t DirRequests(const std::map<std::string, uint64_t>& before, const std::map<std::string, uint64_t>& after,
                       const char* op) {
    auto count = [&](const std::map<std::string, uint64_t>& m) {
      auto it = m.find(op);
      return it == m.end() ? uint64_t{0} : it->second;
    };
    return count(after) - count(before);
  }
};

TEST_P(DirListingTest, ARepeatedListingSendsNothingAndAChangedOneListsTheChange) {
  const std::string d = Path("dir");
  ASSERT_SYS(mkdir(d.c_str(), 0755));
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < 400; ++i) {
    const std::string name = "file-" + std::to_string(i);
    ASSERT_SYS(mknod((d + "/" + name).c_str(), S_IFREG | 0644, 0));
    want.insert(name);
  }
  ASSERT_SYS(mkdir(Path("elsewhere").c_str(), 0755));
  ASSERT_SYS(mknod(Path("elsewhere/incoming").c_str(), S_IFREG | 0644, 0));
  EXPECT_EQ(Names(List(d)), want);  // the listing, now kept by the kernel

  StatusReader status(&mount_);
  std::map<std::string, uint64_t> before, after;
  ASSERT_TRUE(status.Counts(&before));
  for (int k = 0; k < 3; ++k) EXPECT_EQ(Names(List(d)), want);
  ASSERT_TRUE(status.Counts(&after));
  EXPECT_EQ(DirRequests(before, after, "READDIR") + DirRequests(before, after, "READDIRPLUS"), 0u)
      << "a kept listing was read again from the daemon";
  EXPECT_EQ(DirRequests(before, after, "OPENDIR"), GetParam().dir_handles ? 3u : 0u);
  // (The kernel sends RELEASEDIR after close() returns: the third may come
  // after the counts were read.)
  const uint64_t releases = GetParam().dir_handles ? 3u : 0u;
  for (int i = 0; i < 500 && DirRequests(before, after, "RELEASEDIR") < releases; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(status.Counts(&after));
  }
  EXPECT_EQ(DirRequests(before, after, "RELEASEDIR"), releases);

  // Changes through the mount: the next listing shows exactly them.
  ASSERT_SYS(mknod((d + "/new").c_str(), S_IFREG | 0644, 0));
  ASSERT_SYS(unlink((d + "/file-7").c_str()));
  ASSERT_SYS(rename((d + "/file-8").c_str(), Path("elsewhere/file-8").c_str()));
  ASSERT_SYS(rename(Path("elsewhere/incoming").c_str(), (d + "/incoming").c_str()));
  ASSERT_SYS(rename((d + "/file-9").c_str(), (d + "/file-9-renamed").c_str()));
  ASSERT_SYS(mkdir((d + "/sub").c_str(), 0755));
  ASSERT_SYS(mkdir((d + "/gone").c_str(), 0755));
  ASSERT_SYS(rmdir((d + "/gone").c_str()));
  for (const char* n : {"file-7", "file-8", "file-9"}) want.erase(n);
  for (const char* n : {"new", "incoming", "file-9-renamed", "sub"}) want.insert(n);
  EXPECT_EQ(Names(List(d)), want);
  EXPECT_EQ(Names(List(Path("elsewhere"))), (std::set<std::string>{".", "..", "file-8"}));
  // A hard link is a new name too.
  ASSERT_SYS(link(Path("elsewhere/file-8").c_str(), (d + "/file-8-link").c_str()));
  want.insert("file-8-link");
  EXPECT_EQ(Names(List(d)), want);
}

TEST_P(DirListingTest, ALargeListingReadInPiecesWithSeeksGivesEveryNameOnce) {
  const std::string d = Path("large");
  ASSERT_SYS(mkdir(d.c_str(), 0755));
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < 3000; ++i) {
    const std::string name = "entry-" + std::to_string(i) + (i % 3 == 0 ? "-with-a-longer-name" : "");
    ASSERT_SYS(mknod((d + "/" + name).c_str(), S_IFREG | 0644, 0));
    want.insert(name);
  }
  // Small buffers: each getdents64 is its own READDIR of one stream (a
  // first, uncached, read; then the kernel's kept copy).
  for (int k = 0; k < 2; ++k) EXPECT_EQ(Names(List(d, 1024)), want) << "pass " << k;
  // Two directories read at once, interleaved, each in pieces.
  ASSERT_SYS(mknod((d + "/one-more").c_str(), S_IFREG | 0644, 0));  // drops the kept listing
  want.insert("one-more");
  const std::string d2 = Path("second");
  ASSERT_SYS(mkdir(d2.c_str(), 0755));
  std::set<std::string> want2 = {".", ".."};
  for (int i = 0; i < 500; ++i) {
    ASSERT_SYS(mknod((d2 + "/s" + std::to_string(i)).c_str(), S_IFREG | 0644, 0));
    want2.insert("s" + std::to_string(i));
  }
  DIR* a = opendir(d.c_str());
  DIR* b = opendir(d2.c_str());
  ASSERT_NE(a, nullptr) << ErrnoName(errno);
  ASSERT_NE(b, nullptr) << ErrnoName(errno);
  std::map<std::string, int> seen_a, seen_b;
  std::vector<std::string> order;
  long mark = -1;
  for (bool more_a = true, more_b = true; more_a || more_b;) {
    if (more_a) {
      if (dirent* e = readdir(a)) {
        ++seen_a[e->d_name];
        order.push_back(e->d_name);
        if (order.size() == 1000) mark = telldir(a);
      } else {
        more_a = false;
      }
    }
    if (more_b) {
      if (dirent* e = readdir(b)) {
        ++seen_b[e->d_name];
      } else {
        more_b = false;
      }
    }
  }
  EXPECT_EQ(Names(seen_a), want);
  EXPECT_EQ(Names(seen_b), want2);
  // Back to the mark: the same names in the same order from there.
  ASSERT_NE(mark, -1);
  seekdir(a, mark);
  for (size_t i = 1000; i < order.size(); ++i) {
    dirent* e = readdir(a);
    ASSERT_NE(e, nullptr) << "after seekdir, at " << i << ": " << ErrnoName(errno);
    ASSERT_EQ(e->d_name, order[i]) << "after seekdir, at " << i;
  }
  EXPECT_EQ(readdir(a), nullptr);
  rewinddir(a);
  std::map<std::string, int> again;
  while (dirent* e = readdir(a)) ++again[e->d_name];
  EXPECT_EQ(Names(again), want);
  closedir(a);
  closedir(b);

  // Two readers of one directory the kernel keeps no listing of (a change
  // dropped it), in pieces, taking turns: each READDIR continues its own
  // reader's place in the daemon (a stream each, or one sought back and
  // forth), and each reader lists every name once.
  ASSERT_SYS(unlink((d + "/one-more").c_str()));
  want.erase("one-more");
  const int r1 = open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int r2 = open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_SYS(r1);
  ASSERT_SYS(r2);
  std::map<std::string, int> seen1, seen2;
  std::vector<char> buf(1024);
  for (bool more1 = true, more2 = true; more1 || more2;) {
    for (auto [fd, seen, more] : {std::tuple{r1, &seen1, &more1}, std::tuple{r2, &seen2, &more2}}) {
      if (!*more) continue;
      const long n = syscall(SYS_getdents64, fd, buf.data(), buf.size());
      ASSERT_GE(n, 0) << ErrnoName(errno);
      *more = n > 0;
      for (long at = 0; at < n;) {
        auto* e = reinterpret_cast<struct dirent64*>(buf.data() + at);
        ++(*seen)[e->d_name];
        at += e->d_reclen;
      }
    }
  }
  close(r1);
  close(r2);
  EXPECT_EQ(Names(seen1), want);
  EXPECT_EQ(Names(seen2), want);

  // fsync of a directory: FSYNCDIR reaches the daemon (with or without a
  // handle) and succeeds.
  StatusReader status(&mount_);
  std::map<std::string, uint64_t> before, after;
  ASSERT_TRUE(status.Counts(&before));
  const int fd = open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_SYS(fd);
  EXPECT_EQ(fsync(fd), 0) << ErrnoName(errno);
  close(fd);
  ASSERT_TRUE(status.Counts(&after));
  EXPECT_EQ(DirRequests(before, after, "FSYNCDIR"), 1u);
}

// The kernel checks a kept listing against the directory's changes only
// when a reader starts at position 0 (fs/fuse/readdir.c). A reader already
// past it takes up a listing that another reader finished, even one that
// other reader began before a change. Here, in one thread: an old reader
// lists everything but the end; the names it listed last are moved away; a
// new reader takes its first piece (from the daemon: the listing was not
// complete), which ends before them; the old reader reaches the end (the
// listing is complete now); and the new reader goes on. It must not list
// the names moved away before it opened the directory: the daemon drops the
// kept listing on each change.
TEST_P(DirListingTest, AReaderThatBeganAfterAChangeNeverGetsAListingFromBeforeIt) {
  const std::string d = Path("moving"), away = Path("away");
  ASSERT_SYS(mkdir(away.c_str(), 0755));
  constexpr size_t kNames = 100, kKept = 60;
  std::set<std::string> moved;
  ListingRace race;
  RunListingRace(d, kNames, [&](const std::vector<std::string>& old_order) {
    // Those listed last, where their places (the source's cookies) stay.
    for (size_t i = 0, kept = 0; i < old_order.size(); ++i) {
      const std::string& n = old_order[i];
      if (n == "." || n == ".." || kept++ < kKept) continue;
      ASSERT_SYS(rename((d + "/" + n).c_str(), (away + "/" + n).c_str()));
      moved.insert(n);
    }
  }, &race);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_LT(race.first_piece, kKept) << "the first piece must end before the moved names";
  EXPECT_EQ(race.old_end, 0);  // the old listing's end
  std::map<std::string, int> seen;
  for (const std::string& n : race.new_order) ++seen[n];
  std::set<std::string> want(race.old_order.begin(), race.old_order.end());
  for (const std::string& n : moved) want.erase(n);
  EXPECT_EQ(Names(seen), want) << "a name moved away before the listing began was listed";
  EXPECT_EQ(Names(List(away)).size(), moved.size() + 2);
}

INSTANTIATE_TEST_SUITE_P(
    Dirs, DirListingTest,
    ::testing::Values(// the default: without directory handles
                      ListingConfig{"disk_passthrough", PassthroughFlags("disk_passthrough", {}), false},
                      // memfs with its data in the kernel (passthrough to a private tmpfs)
                      ListingConfig{"memfs_kernel_data", {"--memfs_data=kernel"}, false},
                      // memfs with its data in the daemon (its own tree)
                      ListingConfig{"memfs_daemon_data", {"--memfs_data=daemon"}, false},
                      // a source declared shared: with them
                      ListingConfig{"disk_passthrough_watched",
                                    PassthroughFlags("disk_passthrough_watched", {"--watch_source"}), true},
                      // asked for
                      ListingConfig{"disk_passthrough_dir_handles",
                                    PassthroughFlags("disk_passthrough_dir_handles", {"--dir_handles=on"}), true}),
    [](const ::testing::TestParamInfo<ListingConfig>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace efuse::testing
