// Rootless mounts, as a user without CAP_SYS_ADMIN meets them: through
// Debian's setuid fusermount3 (the /dev/fuse descriptor passed back over
// _FUSE_COMMFD), unmounted with fusermount3 -u, efusectl umount or a
// signal; allow_other only where /etc/fuse.conf says user_allow_other (a
// private copy bind-mounted in a mount namespace, so the machine's own file
// never decides the result); and inside a user namespace (unshare -Urm),
// where efused mounts by itself and kernel passthrough and BPF telemetry
// step aside. The users are base-passwd's fixed ones, on every Debian
// system: fusermount3 wants a passwd entry for whoever mounts.
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

constexpr uid_t kUser = 65534;  // nobody (group nogroup): the mount's owner
constexpr uid_t kOther = 33;    // www-data: someone else

std::string UserPrefix(uid_t uid) {
  return "/usr/bin/setpriv --reuid=" + std::to_string(uid) + " --regid=" + std::to_string(uid) +
         " --clear-groups ";
}

// Runs `script` with bash as root, bounded; its output is the test's evidence.
CommandResult Bash(const std::string& script, std::chrono::seconds timeout = std::chrono::seconds(60)) {
  return RunCommand({"/bin/bash", "-c", "set -u\n" + script}, timeout);
}

class RootlessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EFUSE_REQUIRE_FUSE();
    if (access("/usr/bin/fusermount3", X_OK) != 0 || access("/usr/bin/setpriv", X_OK) != 0) {
      FAIL() << "fusermount3 (Debian fuse3) and setpriv (util-linux) are needed: run tools/setup.sh";
    }
  }

  // Starts efused as kUser: it must mount through fusermount3.
  ::testing::AssertionResult StartAsUser(std::vector<std::string> flags) {
    mount_.SetChildSetup([this] {
      // The mount point is the user's (fusermount3 wants write access).
      if (chown(mount_.path().c_str(), kUser, kUser) != 0) _exit(126);
      if (setgroups(0, nullptr) != 0 || setresgid(kUser, kUser, kUser) != 0 ||
          setresuid(kUser, kUser, kUser) != 0) {
        _exit(126);
      }
      // A change of credentials clears the parent-death signal: set it again.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
    });
    flags.push_back("--telemetry=off");
    return mount_.Start(flags);
  }

  EfuseMount mount_;
};

std::string MountOptionsOf(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + mountpoint + " ") != std::string::npos) return line;
  }
  return "";
}

TEST_F(RootlessTest, UserMountsThroughFusermountAndServesOnlyThemselves) {
  ASSERT_TRUE(StartAsUser({"--size=64M"}));
  const std::string info = MountOptionsOf(mount_.path());
  EXPECT_NE(info.find("user_id=" + std::to_string(kUser)), std::string::npos) << info;
  // fusermount3 forces nosuid and nodev on a user's mount.
  EXPECT_NE(info.find("nosuid"), std::string::npos) << info;
  EXPECT_NE(info.find("nodev"), std::string::npos) << info;
  EXPECT_NE(mount_.Log().find("with fusermount3"), std::string::npos) << mount_.LogForMessage();

  Creds user{kUser, kUser, {}};
  const std::string file = mount_.Path("mine");
  EXPECT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        std::string error, data;
        CHILD_CHECK(c, WriteFile(file, "written by the owner", &error));
        CHILD_CHECK(c, ReadFile(file, &data, &error) && data == "written by the owner");
        struct stat st;
        CHILD_EXPECT_OK(c, stat(file.c_str(), &st));
        CHILD_CHECK(c, st.st_uid == kUser && st.st_gid == kUser);
        CHILD_EXPECT_OK(c, mkdir(mount_.Path("dir").c_str(), 0755));
        CHILD_EXPECT_OK(c, rename(file.c_str(), mount_.Path("dir/moved").c_str()));
      },
      &user));
  // Without allow_other the kernel keeps everyone else out, root included.
  struct stat st;
  EXPECT_ERRNO(stat(mount_.Path("dir").c_str(), &st), EACCES);
  Creds other{kOther, kOther, {}};
  EXPECT_TRUE(RunInChild(
      [&](ChildChecks& c) { CHILD_EXPECT_ERRNO(c, access(mount_.Path("dir").c_str(), F_OK), EACCES); },
      &other));

  // efusectl, run by the user, finds the daemon's status in the user's own
  // directory, as root's efusectl does.
  for (const std::string& prefix : {UserPrefix(kUser), std::string()}) {
    CommandResult r = Bash(prefix + EFUSECTL_PATH + " status");
    EXPECT_EQ(r.exit_code(), 0) << r.Describe();
    EXPECT_NE(r.out.find("serving (pid " + std::to_string(mount_.pid()) + ")"), std::string::npos)
        << r.Describe();
    EXPECT_NE(r.out.find("fs: memfs"), std::string::npos) << r.Describe();
  }
  // SIGTERM: the daemon unmounts through fusermount3 -u and exits 0.
  EXPECT_TRUE(mount_.Stop());
  EXPECT_FALSE(FindMount(mount_.path()));
}

// memfs mounted by a user keeps its data in the daemon (kernel passthrough
// is root's): under --supervise=on the bytes are in a memfd the supervisor
// holds and the rest in its journal, so a killed server is succeeded
// without a word to the user's processes, and without privilege (no file
// handles to open again, unlike memfs with kernel data or passthrough).
TEST_F(RootlessTest, SupervisedMemfsOfAUserSurvivesItsServerBeingKilled) {
  ASSERT_TRUE(StartAsUser({"--size=64M", "--supervise=on"}));
  EXPECT_NE(mount_.Log().find("with fusermount3"), std::string::npos) << mount_.LogForMessage();
  Creds user{kUser, kUser, {}};
  const std::string dir = mount_.Path("dir"), file = mount_.Path("dir/file");
  const std::string big(300000, 'b');
  EXPECT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        std::string error;
        CHILD_EXPECT_OK(c, mkdir(dir.c_str(), 0750));
        CHILD_CHECK(c, WriteFile(file, big, &error));
        CHILD_EXPECT_OK(c, symlink("file", mount_.Path("dir/link").c_str()));
      },
      &user));
  std::map<std::string, std::string> kv;
  ASSERT_TRUE(StatusReader(&mount_).Fresh(&kv));
  const pid_t server = static_cast<pid_t>(std::atol(kv["server_pid"].c_str()));
  ASSERT_GT(server, 0);
  ASSERT_EQ(kill(server, SIGKILL), 0);
  EXPECT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        std::string error, data;
        CHILD_CHECK(c, ReadFile(mount_.Path("dir/link"), &data, &error) && data == big);
        struct stat st;
        CHILD_EXPECT_OK(c, stat(dir.c_str(), &st));
        CHILD_CHECK(c, (st.st_mode & 07777) == 0750 && st.st_uid == kUser);
        CHILD_CHECK(c, WriteFile(mount_.Path("dir/after"), "after", &error));
      },
      &user));
  ASSERT_TRUE(StatusReader(&mount_).Fresh(&kv));
  EXPECT_EQ(kv["takeovers"], "1") << mount_.LogForMessage();
  EXPECT_NE(mount_.Log().find("memfs: took over"), std::string::npos) << mount_.LogForMessage();
  EXPECT_TRUE(mount_.Stop()) << mount_.LogForMessage();
  EXPECT_FALSE(FindMount(mount_.path()));
}

TEST_F(RootlessTest, FusermountUnmountEndsTheDaemonCleanly) {
  ASSERT_TRUE(StartAsUser({"--size=64M"}));
  CommandResult r = Bash(UserPrefix(kUser) + "/usr/bin/fusermount3 -u " + mount_.path());
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status)) << mount_.LogForMessage();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << mount_.LogForMessage();
  EXPECT_FALSE(FindMount(mount_.path()));
}

TEST_F(RootlessTest, EfusectlUmountByTheUser) {
  ASSERT_TRUE(StartAsUser({"--size=64M"}));
  // Another user may not unmount it (fusermount3 checks the owner).
  CommandResult denied = Bash(UserPrefix(kOther) + EFUSECTL_PATH + " umount " + mount_.path());
  EXPECT_NE(denied.exit_code(), 0) << denied.Describe();
  EXPECT_TRUE(FindMount(mount_.path()));
  CommandResult r = Bash(UserPrefix(kUser) + EFUSECTL_PATH + " umount " + mount_.path());
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  int status = 0;
  ASSERT_TRUE(mount_.WaitExit(kExitTimeout, &status)) << mount_.LogForMessage();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << mount_.LogForMessage();
  EXPECT_FALSE(FindMount(mount_.path()));
}

// allow_other for a user's mount: refused unless /etc/fuse.conf has
// user_allow_other. Each case runs in a private mount namespace with its
// own fuse.conf bind-mounted over the machine's.
std::string AllowOtherScenario(const std::string& dir, bool user_allow_other) {
  const std::string u = UserPrefix(kUser), o = UserPrefix(kOther);
  return "conf=" + dir + "/fuse.conf; mnt=" + dir + "/mnt\n" +
         "printf '%s\\n' '" + (user_allow_other ? "user_allow_other" : "# nothing allowed") + "' > $conf\n" +
         "mkdir $mnt && chown " + std::to_string(kUser) + " $mnt && chmod 777 " + dir + "\n" +
         "exec /usr/bin/unshare -m --propagation private /bin/bash -c '\n"
         "  set -u; mount --bind " + dir + "/fuse.conf /etc/fuse.conf\n"
         "  " + u + EFUSED_PATH + " --telemetry=off -o allow_other,default_permissions " +
         dir + "/mnt 2>" + dir + "/log &\n"
         "  pid=$!\n"
         "  for i in $(seq 400); do grep -q \" " + dir + "/mnt \" /proc/self/mountinfo && break\n"
         "    kill -0 $pid 2>/dev/null || break; sleep 0.025; done\n"
         "  if ! grep -q \" " + dir + "/mnt \" /proc/self/mountinfo; then\n"
         "    wait $pid; echo \"exit=$?\"; cat " + dir + "/log; exit 0; fi\n"
         "  " + u + "/bin/sh -c \"chmod 1777 " + dir + "/mnt && echo owner > " + dir + "/mnt/a\"\n"
         "  " + o + "/bin/sh -c \"cat " + dir + "/mnt/a; echo other > " + dir + "/mnt/b\"\n"
         "  echo \"b_owner=$(stat -c %u " + dir + "/mnt/b)\"\n"
         "  kill -TERM $pid; wait $pid; echo \"exit=$?\"; cat " + dir + "/log'\n";
}

TEST_F(RootlessTest, AllowOtherNeedsUserAllowOther) {
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  CommandResult r = Bash(AllowOtherScenario(dir.path(), false));
  ASSERT_FALSE(r.timed_out) << r.Describe();
  EXPECT_EQ(r.out.find("exit=0"), std::string::npos) << "efused must refuse to start\n" << r.Describe();
  EXPECT_NE(r.out.find("exit=1"), std::string::npos) << r.Describe();
  // One line says why, naming the setting.
  EXPECT_NE(r.out.find("only allowed if 'user_allow_other' is set"), std::string::npos) << r.Describe();
}

TEST_F(RootlessTest, AllowOtherWithUserAllowOtherServesOtherUsers) {
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  CommandResult r = Bash(AllowOtherScenario(dir.path(), true));
  ASSERT_FALSE(r.timed_out) << r.Describe();
  EXPECT_NE(r.out.find("owner\n"), std::string::npos) << "the other user reads the file\n" << r.Describe();
  // memfs records the creating user of the file, as the kernel sent it.
  EXPECT_NE(r.out.find("b_owner=" + std::to_string(kOther)), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("exit=0"), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("with fusermount3"), std::string::npos) << r.Describe();
}

// A rootless container's view: the user makes a user and mount namespace
// and, as its root, mounts FUSE directly (the fuse file system allows
// mounts in user namespaces; /dev/fuse must be 0666, as Debian's udev rule
// and tools/setup.sh make it).
TEST_F(RootlessTest, UserNamespaceMountsDirectly) {
  struct stat dev;
  ASSERT_EQ(stat("/dev/fuse", &dev), 0);
  ASSERT_EQ(dev.st_mode & 0666, 0666u)
      << "/dev/fuse must be 0666 (what Debian's udev rule does; tools/setup.sh does it here)";
  ScratchDir dir(kUser);
  ASSERT_FALSE(dir.path().empty());
  const std::string d = dir.path();
  const std::string inner =
      "set -u; cd " + d + "; mkdir mnt src pmnt; echo from-source > src/f\n"
      // memfs
      EFUSED_PATH " --size=64M mnt 2>memfs.log &\n"
      "m=$!\n"
      "for i in $(seq 400); do grep -q \" " + d + "/mnt \" /proc/self/mountinfo && break; sleep 0.025; done\n"
      "echo hello > mnt/a && echo \"memfs_read=$(cat mnt/a)\" && echo \"memfs_owner=$(stat -c %u mnt/a)\"\n"
      EFUSECTL_PATH " status > memfs.status\n"
      "kill -TERM $m; wait $m; echo \"memfs_exit=$?\"\n"
      // passthrough over the user's own directory
      EFUSED_PATH " --fs=passthrough --source=src pmnt 2>pt.log &\n"
      "p=$!\n"
      "for i in $(seq 400); do grep -q \" " + d + "/pmnt \" /proc/self/mountinfo && break; sleep 0.025; done\n"
      "echo \"pt_read=$(cat pmnt/f)\"; echo new > pmnt/g; mkdir pmnt/sub\n"
      "kill -TERM $p; wait $p; echo \"pt_exit=$?\"\n";
  std::ofstream(d + "/inner.sh") << inner;
  CommandResult r = Bash(UserPrefix(kUser) + "/usr/bin/unshare -Urm /bin/bash " + d + "/inner.sh");
  ASSERT_FALSE(r.timed_out) << r.Describe();
  auto file = [&](const std::string& name) {
    std::ifstream f(d + "/" + name);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  };
  const std::string memfs_log = file("memfs.log"), pt_log = file("pt.log"), status = file("memfs.status");
  const std::string all = r.Describe() + "\nmemfs log:\n" + memfs_log + "\npassthrough log:\n" + pt_log;
  EXPECT_NE(r.out.find("memfs_read=hello"), std::string::npos) << all;
  EXPECT_NE(r.out.find("memfs_owner=0"), std::string::npos) << "the namespace's root created it\n" << all;
  EXPECT_NE(r.out.find("memfs_exit=0"), std::string::npos) << all;
  EXPECT_NE(memfs_log.find("with fsopen"), std::string::npos) << "mounted by itself, not fusermount3\n" << all;
  // BPF needs privileges the namespace does not grant: telemetry steps
  // aside with one line and the daemon serves on.
  EXPECT_NE(status.find("telemetry: off"), std::string::npos) << status << all;
  EXPECT_NE(status.find("serving (pid"), std::string::npos) << status << all;
  EXPECT_NE(r.out.find("pt_read=from-source"), std::string::npos) << all;
  EXPECT_NE(r.out.find("pt_exit=0"), std::string::npos) << all;
  EXPECT_NE(pt_log.find("lacks CAP_SYS_ADMIN in the initial user namespace"), std::string::npos) << all;
  // Outside, what the namespace's root made through the passthrough
  // belongs to the user.
  struct stat st;
  ASSERT_EQ(stat((d + "/src/g").c_str(), &st), 0) << all;
  EXPECT_EQ(st.st_uid, kUser);
  ASSERT_EQ(stat((d + "/src/sub").c_str(), &st), 0) << all;
  EXPECT_EQ(st.st_uid, kUser);
}

}  // namespace
}  // namespace efuse::testing
