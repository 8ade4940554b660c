// Installing efuse as a Debian system would: `cmake --install` puts every
// file where Debian expects it; `cpack -G DEB` builds a package whose
// dependencies this Debian 12 satisfies (apt-get's simulation), which dpkg
// installs into a scratch root (its status copied from this machine, so the
// dependencies are checked, not forced); then, in a private mount namespace
// where the scratch root's /usr/sbin is laid over the machine's (overlayfs)
// and its fstab over /etc/fstab, one fstab line each mounts memfs and a
// passthrough with plain `mount MOUNTPOINT`, and the mount units
// systemd-fstab-generator makes from the same lines mount with the command
// systemd runs for them. Nothing outside the scratch root and the namespace
// changes.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

#ifndef EFUSE_BINARY_DIR
#error "EFUSE_BINARY_DIR must name the build tree (see tests/mount/CMakeLists.txt)"
#endif

namespace efuse::testing {
namespace {

using std::chrono::seconds;

class InstallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EFUSE_REQUIRE_FUSE();
    ASSERT_FALSE(scratch_.path().empty());
    dir_ = scratch_.path();
  }
  CommandResult Bash(const std::string& script, seconds timeout = seconds(120)) {
    return RunCommand({"/bin/bash", "-c", "set -euo pipefail\n" + script}, timeout);
  }
  ScratchDir scratch_;
  std::string dir_;
};

TEST_F(InstallTest, CmakeInstallPutsEveryFileWhereDebianExpectsIt) {
  CommandResult r = Bash("cmake --install '" EFUSE_BINARY_DIR "' --prefix '" + dir_ + "/usr' >/dev/null\n"
                         "cd '" + dir_ + "' && find . -type f | sort");
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  for (const char* path : {"./usr/sbin/efused", "./usr/sbin/mount.fuse.efuse", "./usr/bin/efusectl",
                           "./usr/lib/systemd/system/efused@.service", "./usr/lib/systemd/system/efused.service",
                           "./usr/share/man/man8/efused.8", "./usr/share/man/man8/efusectl.8",
                           "./usr/share/doc/efuse/README.md", "./usr/share/doc/efuse/LICENSE",
                           "./usr/share/doc/efuse/examples/instance.conf.example"}) {
    EXPECT_NE(r.out.find(std::string(path) + "\n"), std::string::npos) << path << " missing:\n" << r.out;
  }
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/usr/sbin/mount.fuse.efuse").c_str(), &st), 0);
  EXPECT_NE(st.st_mode & 0111, 0u) << "the mount helper must be executable";
  // The man pages render without warnings.
  CommandResult man = Bash("for p in '" + dir_ + "'/usr/share/man/man8/*.8; do\n"
                           "  LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l \"$p\" 2>&1 >/dev/null; done");
  EXPECT_EQ(man.exit_code(), 0) << man.Describe();
  EXPECT_EQ(man.out, "") << man.Describe();
}

TEST_F(InstallTest, DebianPackageInstallsAndMountsFromFstab) {
  const std::string root = dir_ + "/root";
  // Package, simulate installing it here, install it into the scratch root.
  CommandResult pkg = Bash(
      "cpack --config '" EFUSE_BINARY_DIR "/CPackConfig.cmake' -G DEB -B '" + dir_ + "/pkg' >/dev/null\n"
      "deb=$(ls '" + dir_ + "'/pkg/efuse_*.deb)\n"
      "dpkg-deb -f \"$deb\" Package Version Depends Recommends\n"
      "dpkg-deb -c \"$deb\" | awk '{print $6}'\n"
      "apt-get install -s \"$deb\" 2>&1 | grep '^Inst efuse'\n"
      "mkdir -p '" + root + "'/var/lib/dpkg/info '" + root + "'/var/lib/dpkg/updates '" + root +
      "'/var/lib/dpkg/triggers\n"
      "cp /var/lib/dpkg/status '" + root + "'/var/lib/dpkg/status\n"
      "dpkg --root='" + root + "' -i \"$deb\" >/dev/null\n"
      "dpkg --root='" + root + "' -s efuse | grep '^Status:'\n");
  ASSERT_EQ(pkg.exit_code(), 0) << pkg.Describe();
  EXPECT_NE(pkg.out.find("Package: efuse"), std::string::npos) << pkg.out;
  EXPECT_NE(pkg.out.find("liburing2"), std::string::npos) << "Depends from the libraries linked:\n" << pkg.out;
  EXPECT_NE(pkg.out.find("Recommends: fuse3"), std::string::npos) << pkg.out;
  EXPECT_NE(pkg.out.find("./usr/sbin/mount.fuse.efuse"), std::string::npos) << pkg.out;
  EXPECT_EQ(pkg.out.find("/usr/local"), std::string::npos) << "a Debian package stays out of /usr/local\n"
                                                           << pkg.out;
  EXPECT_NE(pkg.out.find("Inst efuse"), std::string::npos) << "apt-get would not install it:\n" << pkg.out;
  EXPECT_NE(pkg.out.find("Status: install ok installed"), std::string::npos) << pkg.out;

  // One fstab line per mount, as a user writes them.
  const std::string mem = root + "/mnt/mem", data = root + "/mnt/data", src = root + "/srv/data";
  ASSERT_EQ(mkdir((root + "/etc").c_str(), 0755), 0);
  std::ofstream(root + "/etc/fstab")
      << "# efuse: memory, and a directory with kernel passthrough of file data\n"
      << "memfs " << mem << " fuse.efuse size=64M,allow_other,nofail 0 0\n"
      << src << " " << data << " fuse.efuse allow_other,noatime,x-systemd.requires-mounts-for=" << src
      << " 0 0\n";
  const std::string check =
      "findmnt -n -o FSTYPE,SOURCE,OPTIONS " + mem + "\n"
      "findmnt -n -o FSTYPE,SOURCE,OPTIONS " + data + "\n"
      "echo written > " + mem + "/a; cat " + mem + "/a; cat " + data + "/f\n"
      "umount " + mem + "; umount " + data + "\n"
      "if findmnt " + mem + " >/dev/null || findmnt " + data + " >/dev/null; then echo still-mounted; fi\n";
  const std::string inner =
      "set -euo pipefail\n"
      "mount -t overlay overlay -o lowerdir=" + root + "/usr/sbin:/usr/sbin /usr/sbin\n"
      "mount --bind " + root + "/etc/fstab /etc/fstab\n"
      "echo '## mount(8) with the fstab lines'\n"
      "mount " + mem + "\nmount " + data + "\n" + check +
      "echo '## the units systemd-fstab-generator makes, mounted as systemd does'\n"
      "gen=" + dir_ + "/generated; mkdir -p $gen/n $gen/e $gen/l\n"
      "SYSTEMD_FSTAB=/etc/fstab SYSTEMD_PROC_CMDLINE= "
      "/lib/systemd/system-generators/systemd-fstab-generator $gen/n $gen/e $gen/l\n"
      "for unit in $gen/n/*.mount; do\n"
      "  what=$(sed -n 's/^What=//p' $unit); where=$(sed -n 's/^Where=//p' $unit)\n"
      "  type=$(sed -n 's/^Type=//p' $unit); options=$(sed -n 's/^Options=//p' $unit)\n"
      "  echo \"unit $(basename $unit): $what $where $type\"\n"
      "  mount \"$what\" \"$where\" -t \"$type\" -o \"$options\"\n"
      "done\n" + check;
  std::ofstream(dir_ + "/inner.sh") << inner;
  const std::string script = "mkdir -p " + mem + " " + data + " " + src + "; echo from-source > " + src +
                             "/f\nexec unshare -m --propagation private bash " + dir_ + "/inner.sh\n";
  CommandResult r = Bash(script);
  ASSERT_FALSE(r.timed_out) << r.Describe();
  EXPECT_EQ(r.exit_code(), 0) << r.Describe();
  size_t at = 0;
  for (int round = 0; round < 2; ++round) {
    at = r.out.find("fuse.efuse memfs ", at);
    ASSERT_NE(at, std::string::npos) << "round " << round << ":\n" << r.Describe();
    EXPECT_NE(r.out.find("fuse.efuse " + src + " ", at), std::string::npos) << r.Describe();
    at = r.out.find("written\nfrom-source\n", at);
    ASSERT_NE(at, std::string::npos) << "round " << round << ":\n" << r.Describe();
  }
  EXPECT_NE(r.out.find(".mount: memfs " + mem + " fuse.efuse"), std::string::npos) << r.Describe();
  EXPECT_EQ(r.out.find("still-mounted"), std::string::npos) << r.Describe();
  // The passthrough line's noatime reached the mount.
  EXPECT_NE(r.out.find("fuse.efuse " + src + " rw,noatime"), std::string::npos) << r.Describe();
}

}  // namespace
}  // namespace efuse::testing
