// tests/unit/privileges_test.cc — core/privileges.h: what a change by a
// caller clears, case by case as Linux's setattr_should_drop_suidgid.
#include "core/privileges.h"

#include <sys/stat.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace efuse {
namespace {

RequestContext Caller(uint32_t uid, uint32_t gid, const std::vector<uint32_t>* groups = nullptr) {
  RequestContext ctx;
  ctx.uid = uid;
  ctx.gid = gid;
  if (groups != nullptr) ctx.groups = *groups;
  return ctx;
}

TEST(KilledSetIdBitsTest, FollowsLinux) {
  const std::vector<uint32_t> extra = {50};
  const RequestContext member = Caller(1000, 50);
  const RequestContext supplementary = Caller(1000, 1000, &extra);
  const RequestContext outsider = Caller(1000, 1000, &extra);  // not in 60
  const RequestContext root = Caller(0, 0);
  struct Case {
    uint32_t mode;
    uint32_t gid;
    const RequestContext& who;
    uint32_t killed;
  };
  const Case cases[] = {
      {04755, 50, member, S_ISUID},                       // setuid always
      {04755, 50, root, S_ISUID},                         // (the kernel asks only without CAP_FSETID)
      {02755, 50, member, S_ISGID},                       // a setgid program
      {02745, 50, member, 0},                             // mandatory-locking mark, member
      {02745, 50, supplementary, 0},                      // member through a supplementary group
      {02745, 60, outsider, S_ISGID},                     // not in the group: goes
      {02745, 60, root, 0},                               // root may keep it
      {06777, 60, outsider, S_ISUID | S_ISGID},
      {06745, 50, member, S_ISUID},
      {0777, 60, outsider, 0},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(KilledSetIdBits(c.mode, c.gid, c.who), c.killed)
        << std::oct << "mode 0" << c.mode << std::dec << ", group " << c.gid << ", uid " << c.who.uid;
  }
  EXPECT_TRUE(HasSetId(04000));
  EXPECT_TRUE(HasSetId(02000));
  EXPECT_FALSE(HasSetId(01777));
}

}  // namespace
}  // namespace efuse
