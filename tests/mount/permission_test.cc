// tests/mount/permission_test.cc — POSIX permission rules on a real mount,
// seen by non-root users.
//
// Root (this process) prepares files; forked children drop to other users
// (setgroups + setresgid + setresuid) and check what they may do. Runs on a
// mount with `-o allow_other` (memfs alone decides) and with
// `-o allow_other,default_permissions` (the kernel checks first): the answers
// must be the same. Without allow_other, other users cannot even stat the
// mount point.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

constexpr uid_t kUserA = 1001;
constexpr uid_t kUserB = 1002;
constexpr gid_t kGroupA = 1001;
constexpr gid_t kGroupB = 1002;
constexpr gid_t kSharedGroup = 4242;  // nobody's primary group
constexpr gid_t kExtraGroupA = 5000;  // a supplementary group of user A

const Creds kA{kUserA, kGroupA, {}};
const Creds kAWithExtra{kUserA, kGroupA, {kExtraGroupA}};
const Creds kB{kUserB, kGroupB, {}};

struct Config {
  const char* name;
  std::vector<std::string> flags;
  // False where the kernel walks cached names without asking memfs and checks
  // no search permission itself (allow_other alone, with an entry cache).
  bool checks_cached_walks = true;
};
void PrintTo(const Config& c, std::ostream* os) { *os << c.name; }

class PermissionTest : public MountTest, public ::testing::WithParamInterface<Config> {
 protected:
  std::vector<std::string> DaemonFlags() const override {
    return WithFlags({"--size=256M"}, GetParam().flags);
  }
  void SetUp() override {
    umask(022);
    MountTest::SetUp();
  }
  // A directory anyone may create in, like /tmp.
  void MakeStickyTmp(const std::string& path) {
    ASSERT_SYS(mkdir(path.c_str(), 0777));
    ASSERT_SYS(chmod(path.c_str(), 01777));
  }
  void MakeFile(const std::string& path, mode_t mode, uid_t uid, gid_t gid) {
    std::string error;
    ASSERT_TRUE(WriteFile(path, "content", &error)) << error;
    ASSERT_SYS(chown(path.c_str(), uid, gid));
    ASSERT_SYS(chmod(path.c_str(), mode));
  }
};

TEST_P(PermissionTest, OthersCannotOpenAPrivateRootFile) {
  const std::string secret = Path("secret"), readable = Path("readable");
  MakeFile(secret, 0600, 0, 0);
  MakeFile(readable, 0644, 0, 0);
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, open(secret.c_str(), O_RDONLY), EACCES);
        CHILD_EXPECT_ERRNO(c, open(secret.c_str(), O_WRONLY), EACCES);
        CHILD_EXPECT_ERRNO(c, access(secret.c_str(), R_OK), EACCES);
        CHILD_EXPECT_ERRNO(c, truncate(secret.c_str(), 0), EACCES);
        struct stat st;
        CHILD_EXPECT_OK(c, stat(secret.c_str(), &st));  // the directory is searchable
        int fd = open(readable.c_str(), O_RDONLY);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        CHILD_EXPECT_ERRNO(c, open(readable.c_str(), O_WRONLY), EACCES);
        CHILD_EXPECT_ERRNO(c, open(readable.c_str(), O_RDWR | O_TRUNC), EACCES);
        CHILD_EXPECT_OK(c, access(readable.c_str(), R_OK));
        CHILD_EXPECT_ERRNO(c, access(readable.c_str(), W_OK), EACCES);
      },
      &kA));
  std::string data, error;
  ASSERT_TRUE(ReadFile(secret, &data, &error)) << error;
  EXPECT_EQ(data, "content");
}

TEST_P(PermissionTest, OthersCannotCreateInARootDirectory) {
  const std::string dir = Path("rootdir");
  ASSERT_SYS(mkdir(dir.c_str(), 0755));
  MakeFile(dir + "/existing", 0666, 0, 0);
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, open((dir + "/new").c_str(), O_WRONLY | O_CREAT, 0644), EACCES);
        CHILD_EXPECT_ERRNO(c, mkdir((dir + "/newdir").c_str(), 0755), EACCES);
        CHILD_EXPECT_ERRNO(c, mknod((dir + "/fifo").c_str(), S_IFIFO | 0644, 0), EACCES);
        CHILD_EXPECT_ERRNO(c, symlink("x", (dir + "/sym").c_str()), EACCES);
        CHILD_EXPECT_ERRNO(c, link((dir + "/existing").c_str(), (dir + "/hard").c_str()), EACCES);
        CHILD_EXPECT_ERRNO(c, unlink((dir + "/existing").c_str()), EACCES);
        CHILD_EXPECT_ERRNO(c, rename((dir + "/existing").c_str(), (dir + "/moved").c_str()), EACCES);
        // The file itself is 0666: writing it is fine, only the directory is closed.
        int fd = open((dir + "/existing").c_str(), O_WRONLY);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
      },
      &kA));
}

// A 0700 directory cannot even be searched by others, even right after its
// owner used the names in it (so the kernel has them in its dentry cache).
// With allow_other alone and an entry cache this cannot hold: the kernel
// walks cached names without sending LOOKUP and, without
// default_permissions, checks no search permission itself, so memfs is never
// asked. That is a documented limitation; efused must warn about it.
TEST_P(PermissionTest, OthersCannotSearchAPrivateDirectory) {
  if (!GetParam().checks_cached_walks) {
    EXPECT_NE(mount_.Log().find("allow_other without default_permissions"), std::string::npos)
        << "efused must warn that this configuration skips path-walk checks" << mount_.LogForMessage();
    return;
  }
  const std::string priv = Path("private");
  ASSERT_SYS(mkdir(priv.c_str(), 0700));
  MakeFile(priv + "/inside", 0666, 0, 0);
  ASSERT_SYS(mkdir((priv + "/sub").c_str(), 0777));
  struct stat st {};
  ASSERT_SYS(stat((priv + "/inside").c_str(), &st));
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        struct stat st;
        CHILD_EXPECT_ERRNO(c, stat((priv + "/inside").c_str(), &st), EACCES);
        CHILD_EXPECT_ERRNO(c, open((priv + "/inside").c_str(), O_RDONLY), EACCES);
        CHILD_EXPECT_ERRNO(c, open((priv + "/sub/new").c_str(), O_WRONLY | O_CREAT, 0644), EACCES);
        CHILD_EXPECT_ERRNO(c, chdir((priv + "/sub").c_str()), EACCES);
        CHILD_EXPECT_ERRNO(c, opendir(priv.c_str()) == nullptr ? -1 : 0, EACCES);
      },
      &kA));
}

TEST_P(PermissionTest, StickyDirectoryProtectsOtherUsersEntries) {
  const std::string tmp = Path("tmp");
  MakeStickyTmp(tmp);
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        int fd = open((tmp + "/a_file").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        CHILD_EXPECT_OK(c, mkdir((tmp + "/a_dir").c_str(), 0777));
      },
      &kA));
  ASSERT_SYS(chmod((tmp + "/a_file").c_str(), 0666));
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, unlink((tmp + "/a_file").c_str()), EPERM);
        CHILD_EXPECT_ERRNO(c, rename((tmp + "/a_file").c_str(), (tmp + "/stolen").c_str()), EPERM);
        CHILD_EXPECT_ERRNO(c, rmdir((tmp + "/a_dir").c_str()), EPERM);
        int fd = open((tmp + "/b_file").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        // Replacing A's file by renaming over it removes it too: refused.
        CHILD_EXPECT_ERRNO(c, rename((tmp + "/b_file").c_str(), (tmp + "/a_file").c_str()), EPERM);
        // Writing A's 0666 file is allowed (the sticky bit is about names).
        fd = open((tmp + "/a_file").c_str(), O_WRONLY);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        CHILD_EXPECT_OK(c, unlink((tmp + "/b_file").c_str()));
      },
      &kB));
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_OK(c, rename((tmp + "/a_file").c_str(), (tmp + "/a_renamed").c_str()));
        CHILD_EXPECT_OK(c, unlink((tmp + "/a_renamed").c_str()));
      },
      &kA));
  // The directory's owner (root) may remove anything in it.
  EXPECT_SYS(rmdir((tmp + "/a_dir").c_str()));
}

TEST_P(PermissionTest, NonRootCannotGiveFilesAway) {
  const std::string tmp = Path("tmp");
  MakeStickyTmp(tmp);
  const std::string f = tmp + "/mine";
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        int fd = open(f.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
        CHILD_EXPECT_OK(c, fd);
        CHILD_EXPECT_ERRNO(c, chown(f.c_str(), kUserB, static_cast<gid_t>(-1)), EPERM);
        CHILD_EXPECT_ERRNO(c, chown(f.c_str(), static_cast<uid_t>(-1), kSharedGroup), EPERM);
        CHILD_EXPECT_ERRNO(c, fchown(fd, kUserB, kGroupA), EPERM);
        // No change at all is allowed; so is a group the owner belongs to.
        CHILD_EXPECT_OK(c, chown(f.c_str(), kUserA, kGroupA));
        CHILD_EXPECT_OK(c, chown(f.c_str(), static_cast<uid_t>(-1), kExtraGroupA));
        struct stat st {};
        CHILD_EXPECT_OK(c, stat(f.c_str(), &st));
        CHILD_CHECK(c, st.st_uid == kUserA);
        CHILD_CHECK(c, st.st_gid == kExtraGroupA);
        if (fd >= 0) close(fd);
      },
      &kAWithExtra));
  struct stat st {};
  ASSERT_SYS(stat(f.c_str(), &st));
  EXPECT_EQ(st.st_uid, kUserA);
  EXPECT_EQ(st.st_gid, kExtraGroupA);
}

TEST_P(PermissionTest, OthersCannotChmod) {
  const std::string theirs = Path("theirs"), roots = Path("roots");
  MakeFile(theirs, 0666, kUserB, kGroupB);
  MakeFile(roots, 0666, 0, 0);
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, chmod(theirs.c_str(), 0777), EPERM);
        CHILD_EXPECT_ERRNO(c, chmod(roots.c_str(), 0600), EPERM);
        int fd = open(theirs.c_str(), O_RDWR);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) {
          CHILD_EXPECT_ERRNO(c, fchmod(fd, 0600), EPERM);
          close(fd);
        }
      },
      &kA));
  struct stat st {};
  ASSERT_SYS(stat(theirs.c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  // The owner may.
  ASSERT_TRUE(RunInChild([&](ChildChecks& c) { CHILD_EXPECT_OK(c, chmod(theirs.c_str(), 0640)); }, &kB));
  ASSERT_SYS(stat(theirs.c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST_P(PermissionTest, OthersCannotSetExplicitTimes) {
  const std::string writable = Path("writable"), readonly = Path("readonly");
  MakeFile(writable, 0666, kUserB, kGroupB);
  MakeFile(readonly, 0644, kUserB, kGroupB);
  const timespec explicit_times[2] = {{1000000000, 0}, {1000000000, 0}};
  struct stat before {};
  ASSERT_SYS(stat(writable.c_str(), &before));
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_ERRNO(c, utimensat(AT_FDCWD, writable.c_str(), explicit_times, 0), EPERM);
        CHILD_EXPECT_ERRNO(c, utimensat(AT_FDCWD, readonly.c_str(), explicit_times, 0), EPERM);
        // "Now" only needs write permission.
        CHILD_EXPECT_OK(c, utimensat(AT_FDCWD, writable.c_str(), nullptr, 0));
        CHILD_EXPECT_ERRNO(c, utimensat(AT_FDCWD, readonly.c_str(), nullptr, 0), EACCES);
      },
      &kA));
  struct stat after {};
  ASSERT_SYS(stat(writable.c_str(), &after));
  EXPECT_NE(after.st_mtim.tv_sec, 1000000000);
  // The owner may set any time.
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        CHILD_EXPECT_OK(c, utimensat(AT_FDCWD, readonly.c_str(), explicit_times, 0));
      },
      &kB));
  ASSERT_SYS(stat(readonly.c_str(), &after));
  EXPECT_EQ(after.st_mtim.tv_sec, 1000000000);
}

TEST_P(PermissionTest, NewFilesBelongToTheirCreator) {
  const std::string tmp = Path("tmp");
  MakeStickyTmp(tmp);
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        int fd = open((tmp + "/f").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0640);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        CHILD_EXPECT_OK(c, mkdir((tmp + "/d").c_str(), 0750));
        CHILD_EXPECT_OK(c, symlink("f", (tmp + "/l").c_str()));
        CHILD_EXPECT_OK(c, mknod((tmp + "/p").c_str(), S_IFIFO | 0600, 0));
        for (const char* n : {"/f", "/d", "/l", "/p"}) {
          struct stat st {};
          CHILD_EXPECT_OK(c, lstat((tmp + n).c_str(), &st));
          CHILD_CHECK(c, st.st_uid == kUserA);
          CHILD_CHECK(c, st.st_gid == kGroupA);
        }
      },
      &kA));
  struct stat st {};
  ASSERT_SYS(stat((tmp + "/f").c_str(), &st));
  EXPECT_EQ(st.st_uid, kUserA);
  EXPECT_EQ(st.st_gid, kGroupA);
  EXPECT_EQ(st.st_mode & 07777, 0640u & ~022u);
  ASSERT_SYS(stat((tmp + "/d").c_str(), &st));
  EXPECT_EQ(st.st_uid, kUserA);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
}

TEST_P(PermissionTest, SetgidDirectoryPassesItsGroupOn) {
  const std::string sg = Path("sg");
  ASSERT_SYS(mkdir(sg.c_str(), 0777));
  ASSERT_SYS(chown(sg.c_str(), 0, kSharedGroup));
  ASSERT_SYS(chmod(sg.c_str(), 02777));
  struct stat st {};
  ASSERT_SYS(stat(sg.c_str(), &st));
  ASSERT_EQ(st.st_mode & 07777, 02777u);
  ASSERT_EQ(st.st_gid, kSharedGroup);
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        int fd = open((sg + "/f").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        CHILD_EXPECT_OK(c, mkdir((sg + "/sub").c_str(), 0755));
        fd = open((sg + "/sub/g").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
      },
      &kA));
  ASSERT_SYS(stat((sg + "/f").c_str(), &st));
  EXPECT_EQ(st.st_uid, kUserA);
  EXPECT_EQ(st.st_gid, kSharedGroup) << "a new file takes a setgid directory's group";
  EXPECT_EQ(st.st_mode & S_ISGID, 0u);
  ASSERT_SYS(stat((sg + "/sub").c_str(), &st));
  EXPECT_EQ(st.st_gid, kSharedGroup);
  EXPECT_NE(st.st_mode & S_ISGID, 0u) << "a new subdirectory inherits the setgid bit";
  ASSERT_SYS(stat((sg + "/sub/g").c_str(), &st));
  EXPECT_EQ(st.st_gid, kSharedGroup);
}

// FUSE_HANDLE_KILLPRIV_V2 (negotiated by efused) makes the server clear
// setuid/setgid when a caller without CAP_FSETID writes or truncates; setgid
// without group-execute only when the writer is not in the file's group, as
// Linux does (privilege_diff_test compares every case with tmpfs).
TEST_P(PermissionTest, WritesByOthersClearSetuidAndSetgid) {
  const std::string names[] = {"write", "trunc", "otrunc", "sgid_noexec", "sgid_noexec_member"};
  for (const std::string& n : names) MakeFile(Path(n), n == "sgid_noexec" ? 02666 : 06777, 0, 0);
  MakeFile(Path("sgid_noexec_member"), 02666, 0, kGroupA);
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        int fd = open(Path("write").c_str(), O_WRONLY);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) {
          CHILD_EXPECT_OK(c, write(fd, "x", 1));
          close(fd);
        }
        CHILD_EXPECT_OK(c, truncate(Path("trunc").c_str(), 3));
        fd = open(Path("otrunc").c_str(), O_WRONLY | O_TRUNC);
        CHILD_EXPECT_OK(c, fd);
        if (fd >= 0) close(fd);
        for (const char* n : {"sgid_noexec", "sgid_noexec_member"}) {
          fd = open(Path(n).c_str(), O_WRONLY);
          CHILD_EXPECT_OK(c, fd);
          if (fd >= 0) {
            CHILD_EXPECT_OK(c, write(fd, "x", 1));
            close(fd);
          }
        }
      },
      &kA));
  struct stat st {};
  for (const char* n : {"write", "trunc", "otrunc"}) {
    ASSERT_SYS(stat(Path(n).c_str(), &st));
    EXPECT_EQ(st.st_mode & 07777, 0777u) << n << ": setuid/setgid must be cleared";
  }
  ASSERT_SYS(stat(Path("sgid_noexec").c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 0666u) << "setgid without group-execute goes for a non-member";
  ASSERT_SYS(stat(Path("sgid_noexec_member").c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 02666u) << "setgid without group-execute stays for a member";
}

// allow_other alone: memfs is the only judge, but it can judge only what the
// kernel asks; with the default 1 s entry cache the kernel walks cached names
// without asking (see OthersCannotSearchAPrivateDirectory). With no entry
// cache, every path walk reaches memfs. With default_permissions the kernel
// checks mode bits itself before asking.
INSTANTIATE_TEST_SUITE_P(
    Memfs, PermissionTest,
    ::testing::Values(// File data in the daemon's memory: memfs alone judges.
                      Config{"allow_other", {"--memfs_data=daemon", "-o", "allow_other"}, /*checks_cached_walks=*/false},
                      Config{"allow_other_no_entry_cache",
                             {"--memfs_data=daemon", "-o", "allow_other", "--entry_timeout=0", "--attr_timeout=0", "--offload=off"}},
                      Config{"allow_other_default_permissions",
                             {"--memfs_data=daemon", "-o", "allow_other,default_permissions"}},
                      // Data in a private tmpfs (default_permissions added).
                      Config{"allow_other_kernel_data", {"-o", "allow_other", "--memfs_data=kernel"}}),
    [](const ::testing::TestParamInfo<Config>& info) { return std::string(info.param.name); });

class NoAllowOtherTest : public MountTest {
 protected:
  std::vector<std::string> DaemonFlags() const override { return {"--size=64M"}; }
};

TEST_F(NoAllowOtherTest, OtherUsersAreShutOut) {
  const std::string f = Path("f");
  std::string error;
  ASSERT_TRUE(WriteFile(f, "x", &error)) << error;
  ASSERT_SYS(chmod(f.c_str(), 0666));
  const std::string mnt = Path("");
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        struct stat st;
        CHILD_EXPECT_ERRNO(c, stat(mnt.c_str(), &st), EACCES);
        CHILD_EXPECT_ERRNO(c, open(f.c_str(), O_RDONLY), EACCES);
        CHILD_EXPECT_ERRNO(c, open((mnt + "/new").c_str(), O_WRONLY | O_CREAT, 0666), EACCES);
      },
      &kA));
  // The mount's owner (root here) is served as usual.
  struct stat st {};
  EXPECT_SYS(stat(mnt.c_str(), &st));
  std::string data;
  ASSERT_TRUE(ReadFile(f, &data, &error)) << error;
  EXPECT_EQ(data, "x");
}

}  // namespace
}  // namespace efuse::testing
