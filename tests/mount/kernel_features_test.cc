// Kernel features a FUSE server may offer, on real mounts: idmapped bind
// mounts (FUSE_ALLOW_IDMAP, efused --idmap), made with the same syscalls
// mount(8) makes for X-mount.idmap= (open_tree, mount_setattr with
// MOUNT_ATTR_IDMAP, move_mount; Debian 12's util-linux 2.38 predates that
// option), and export (FUSE_EXPORT_SUPPORT): file handles from
// name_to_handle_at opened again with open_by_handle_at after the kernel
// and the daemon forgot the inode, which is what knfsd does (our kernels
// have no NFSD to run a real export). Not per transport: these are INIT
// and VFS matters.
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

constexpr uid_t kMappedUser = 5000;  // the id a file system's root (0) has in the idmapped mount

// A user namespace whose root is kMappedUser outside: as a mount's idmap,
// files owned by 0 appear owned by kMappedUser, and what kMappedUser
// creates is stored as owned by 0.
class MappingNamespace {
 public:
  MappingNamespace() {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(ready[1]);
      if (unshare(CLONE_NEWUSER) != 0) _exit(1);
      char c;
      while (read(ready[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(0);  // the parent holds the namespace through its fd
    }
    close(ready[0]);
    // The child is in its namespace once /proc says so.
    const std::string proc = "/proc/" + std::to_string(pid_);
    for (int i = 0; i < 2000; ++i) {
      char self[64] = {}, child[64] = {};
      if (readlink("/proc/self/ns/user", self, sizeof(self) - 1) > 0 &&
          readlink((proc + "/ns/user").c_str(), child, sizeof(child) - 1) > 0 &&
          std::strcmp(self, child) != 0) {
        break;
      }
      usleep(1000);
    }
    const std::string map = "0 " + std::to_string(kMappedUser) + " 1\n";
    std::ofstream(proc + "/uid_map") << map;
    std::ofstream(proc + "/setgroups") << "deny";
    std::ofstream(proc + "/gid_map") << map;
    fd_ = open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC);
    close(ready[1]);
    waitpid(pid_, nullptr, 0);
  }
  ~MappingNamespace() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

// An idmapped bind mount of `source` at a fresh directory, detached at the end.
class IdmappedBind {
 public:
  // 0, or the errno of the step that failed (`*step` names it).
  int Make(const std::string& source, int userns_fd, std::string* step) {
    char t[] = "/tmp/efuse-idmapped-XXXXXX";
    if (mkdtemp(t) == nullptr) return *step = "mkdtemp", errno;
    path_ = t;
    const int tree = static_cast<int>(syscall(SYS_open_tree, AT_FDCWD, source.c_str(),
                                              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    if (tree < 0) return *step = "open_tree", errno;
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(userns_fd);
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof(attr)) != 0) {
      const int err = errno;
      close(tree);
      return *step = "mount_setattr(MOUNT_ATTR_IDMAP)", err;
    }
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, path_.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      const int err = errno;
      close(tree);
      return *step = "move_mount", err;
    }
    close(tree);
    mounted_ = true;
    return 0;
  }
  ~IdmappedBind() {
    if (mounted_) umount2(path_.c_str(), MNT_DETACH);
    if (!path_.empty()) rmdir(path_.c_str());
  }
  std::string Path(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
  bool mounted_ = false;
};

struct IdmapCase {
  const char* name;
  bool passthrough;
  // memfs with its data in a private tmpfs (served by the passthrough
  // engine); memfs cases without it keep their data in the daemon.
  bool kernel_data = false;
  // Served by the passthrough engine (its pt_* figures).
  bool engine_passthrough() const { return passthrough || kernel_data; }
};

void PrintTo(const IdmapCase& c, std::ostream* os) { *os << c.name; }

class IdmapTest : public ::testing::TestWithParam<IdmapCase> {
 protected:
  void SetUp() override { EFUSE_REQUIRE_FUSE(); }
  std::vector<std::string> Flags(std::vector<std::string> extra) {
    std::vector<std::string> f = {"-o", "allow_other", "--telemetry=off"};
    if (GetParam().passthrough) {
      source_ = std::make_unique<ScratchDir>();
      f.push_back("--fs=passthrough");
      f.push_back("--source=" + source_->path());
    } else {
      f.push_back(GetParam().kernel_data ? "--memfs_data=kernel" : "--memfs_data=daemon");
    }
    f.insert(f.end(), extra.begin(), extra.end());
    return f;
  }
  // Owner of `rel` as the backend stores it (the source, or the plain mount).
  uid_t StoredOwner(const std::string& rel) {
    struct stat st;
    const std::string path = source_ ? source_->path() + "/" + rel : mount_.Path(rel);
    if (stat(path.c_str(), &st) != 0) return static_cast<uid_t>(-1);
    return st.st_uid;
  }
  std::unique_ptr<ScratchDir> source_;
  EfuseMount mount_;
};

TEST_P(IdmapTest, IdmappedBindCreatesFilesWithTheMappedOwners) {
  ASSERT_TRUE(mount_.Start(Flags({"--idmap"})));
  StatusReader status(&mount_);
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(status.Fresh(&kv));
  ASSERT_EQ(kv["idmapped_mounts"], "allowed") << mount_.LogForMessage();
  ASSERT_EQ(chmod(mount_.path().c_str(), 0777), 0);

  MappingNamespace ns;
  ASSERT_GE(ns.fd(), 0);
  IdmappedBind bind;
  std::string step;
  const int err = bind.Make(mount_.path(), ns.fd(), &step);
  ASSERT_EQ(err, 0) << step << ": " << ErrnoName(err) << mount_.LogForMessage();

  // Through the idmapped mount, kMappedUser creates, writes, changes modes.
  Creds mapped{kMappedUser, kMappedUser, {}};
  const std::string file = bind.Path("made-through-idmap");
  EXPECT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        std::string error;
        CHILD_CHECK(c, WriteFile(file, "first", &error, O_WRONLY | O_CREAT | O_EXCL, 0644));
        CHILD_EXPECT_OK(c, mkdir(bind.Path("dir-through-idmap").c_str(), 0755));
        struct stat st;
        CHILD_EXPECT_OK(c, stat(file.c_str(), &st));
        CHILD_CHECK(c, st.st_uid == kMappedUser && st.st_gid == kMappedUser);
        // Requests that create nothing name no caller: the kernel checked.
        CHILD_CHECK(c, WriteFile(file, "second", &error, O_WRONLY | O_APPEND));
        CHILD_EXPECT_OK(c, chmod(file.c_str(), 0600));
        CHILD_EXPECT_OK(c, truncate(file.c_str(), 3));
        CHILD_EXPECT_OK(c, rename(file.c_str(), bind.Path("renamed").c_str()));
        CHILD_EXPECT_OK(c, rename(bind.Path("renamed").c_str(), file.c_str()));
      },
      &mapped))
      << mount_.LogForMessage();
  // Stored with the file system's ids: 0, which the mapping shows as kMappedUser.
  EXPECT_EQ(StoredOwner("made-through-idmap"), 0u);
  EXPECT_EQ(StoredOwner("dir-through-idmap"), 0u);
  struct stat st;
  ASSERT_EQ(stat(mount_.Path("made-through-idmap").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 3);
  // Someone else is still kept out by the kernel's checks.
  Creds other{kMappedUser + 1, kMappedUser + 1, {}};
  EXPECT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, open(file.c_str(), O_RDONLY), EACCES);
        CHILD_EXPECT_ERRNO(c, chmod(file.c_str(), 0666), EPERM);
      },
      &other));
  // A caller the mapping does not cover cannot create through it.
  EXPECT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, open(bind.Path("unmapped").c_str(), O_CREAT | O_WRONLY, 0644), EOVERFLOW);
      },
      &other));
}

TEST_P(IdmapTest, WithoutIdmapTheKernelRefusesAnIdmappedBind) {
  ASSERT_TRUE(mount_.Start(Flags({})));
  MappingNamespace ns;
  ASSERT_GE(ns.fd(), 0);
  IdmappedBind bind;
  std::string step;
  EXPECT_EQ(bind.Make(mount_.path(), ns.fd(), &step), EINVAL) << step;
  EXPECT_EQ(step, "mount_setattr(MOUNT_ATTR_IDMAP)");
}

INSTANTIATE_TEST_SUITE_P(Backends, IdmapTest,
                         ::testing::Values(IdmapCase{"memfs", false}, IdmapCase{"passthrough", true}),
                         [](const ::testing::TestParamInfo<IdmapCase>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------
// Export: file handles that outlive the kernel's and the daemon's memory.

class ExportTest : public IdmapTest {
 protected:
  // Drops the kernel's unused dentries and inodes (the mount's among them)
  // until the daemon has been told to forget every node but the root
  // (memfs_known_to_kernel, pt_inodes), bounded in time.
  ::testing::AssertionResult ForgetEverything() {
    const std::string key = GetParam().engine_passthrough() ? "pt_inodes" : "memfs_known_to_kernel";
    return StatusEventually(&mount_, [&](auto& kv) { return kv[key] == "0"; }, /*drop_caches=*/true);
  }
  uint64_t Lookups() {
    std::map<std::string, uint64_t> counts;
    StatusReader(&mount_).Counts(&counts);
    return counts["LOOKUP"];
  }
};

TEST_P(ExportTest, HandlesOpenTheSameFilesAfterTheInodesAreForgotten) {
  ASSERT_TRUE(mount_.Start(Flags({})));
  ExportedFiles files;
  std::string error;
  ASSERT_TRUE(MakeExportedFiles(mount_.path(), &files, &error)) << error;

  ASSERT_TRUE(ForgetEverything()) << mount_.LogForMessage();
  const uint64_t lookups_before = Lookups();
  UniqueFd d;
  CheckExportedFiles(files, &d);
  ASSERT_GE(d.get(), 0) << mount_.LogForMessage();
  // The directory: reconnected to its place in the tree (LOOKUP "..").
  char link[PATH_MAX] = {};
  ASSERT_GT(readlink(("/proc/self/fd/" + std::to_string(d.get())).c_str(), link, sizeof(link) - 1), 0);
  EXPECT_EQ(std::string(link), mount_.Path("dir"));
  EXPECT_GT(Lookups(), lookups_before) << "the daemon was asked (LOOKUP \".\")";

  // Met again by name after being forgotten, a file keeps its node id:
  // the old handle still opens it.
  d.Reset();
  ASSERT_TRUE(ForgetEverything()) << mount_.LogForMessage();
  struct stat st;
  ASSERT_EQ(stat(mount_.Path("dir/file").c_str(), &st), 0);
  const int raw = open_by_handle_at(files.mount_fd.get(), files.file.get(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0) << "after a lookup by name: " << ErrnoName(errno) << mount_.LogForMessage();
  close(raw);
  if (GetParam().engine_passthrough()) {
    std::map<std::string, std::string> kv;
    ASSERT_TRUE(StatusReader(&mount_).Fresh(&kv));
    EXPECT_NE(kv["pt_revivals"], "0") << "forgotten nodes came back under their ids";
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ExportTest,
                         ::testing::Values(IdmapCase{"memfs", false}, IdmapCase{"memfs_kernel_data", false, true},
                                           IdmapCase{"passthrough", true}),
                         [](const ::testing::TestParamInfo<IdmapCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace efuse::testing
