// tests/unit/mount_options_test.cc — core/mount.h ParseMountOptions: every
// word mount(8) and fstab pass, and what each sets.
#include "core/mount.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace efuse {
namespace {

MountOptions Parse(const std::string& words) {
  MountOptions o;
  absl::Status s = ParseMountOptions({words}, &o);
  EXPECT_TRUE(s.ok()) << words << ": " << s.message();
  return o;
}

TEST(MountOptionsTest, GenericMountOptionsSetTheirFlags) {
  MountOptions o = Parse("ro,nosuid,nodev,noexec,nodiratime,lazytime,sync,dirsync,strictatime");
  EXPECT_TRUE(o.read_only && o.nosuid && o.nodev && o.noexec && o.nodiratime && o.lazytime &&
              o.synchronous && o.dirsync && o.strictatime);
  EXPECT_FALSE(o.noatime);
  // The positive forms undo them; the last access-time word wins.
  o = Parse("nosuid,nodev,noexec,nodiratime,lazytime,sync,ro,suid,dev,exec,diratime,nolazytime,async,rw");
  EXPECT_FALSE(o.read_only || o.nosuid || o.nodev || o.noexec || o.nodiratime || o.lazytime ||
               o.synchronous);
  o = Parse("strictatime,noatime");
  EXPECT_TRUE(o.noatime);
  EXPECT_FALSE(o.strictatime);
  o = Parse("noatime,relatime");
  EXPECT_FALSE(o.noatime || o.strictatime);
}

TEST(MountOptionsTest, FstabWordsAreForOthers) {
  const MountOptions plain;
  MountOptions o = Parse(
      "defaults,auto,noauto,nofail,_netdev,user,users,nouser,owner,group,user=alice,comment=x,"
      "x-systemd.automount,x-systemd.requires=/srv,x-mount.mkdir");
  EXPECT_EQ(o.read_only, plain.read_only);
  EXPECT_EQ(o.allow_other, plain.allow_other);
  EXPECT_EQ(o.nosuid, plain.nosuid);
}

TEST(MountOptionsTest, UnknownAndBadWordsAreNamed) {
  MountOptions o;
  absl::Status s = ParseMountOptions({"allow_other,bogus"}, &o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'bogus'"), std::string::npos) << s.message();
  s = ParseMountOptions({"max_read=lots"}, &o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("max_read=lots"), std::string::npos) << s.message();
  s = ParseMountOptions({"noatime=1"}, &o);
  EXPECT_FALSE(s.ok()) << "a flag takes no value";
}

}  // namespace
}  // namespace efuse
