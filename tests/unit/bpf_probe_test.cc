// The BPF probe reads the real kernel BTF and finds the FUSE tracepoints.
#include "bpf/probe.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace efuse::bpf {
namespace {

TEST(BpfProbeTest, FindsFuseTracepointsInKernelBtf) {
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) GTEST_SKIP() << "no kernel BTF on this machine";
  BpfSupport s = ProbeBpf();
  ASSERT_TRUE(s.vmlinux_btf) << s.error;
  EXPECT_TRUE(s.fuse_request_send);
  EXPECT_TRUE(s.fuse_request_end);
  EXPECT_TRUE(s.fuse_req_struct);
  EXPECT_TRUE(s.Usable());
}

}  // namespace
}  // namespace efuse::bpf
