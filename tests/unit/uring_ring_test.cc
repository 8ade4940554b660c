// Real io_uring: a ring with 128-byte SQEs is set up, carries a NOP, and the
// probe agrees with the kernel's own switches.
#include "uring/ring.h"

#include <fstream>

#include "gtest/gtest.h"

namespace efuse::uring {
namespace {

int IoUringDisabledSysctl() {
  std::ifstream f("/proc/sys/kernel/io_uring_disabled");
  int v = 0;
  return (f >> v) ? v : 0;
}

TEST(RingTest, NopRoundTripOnBigSqeRing) {
  if (IoUringDisabledSysctl() != 0) GTEST_SKIP() << "kernel.io_uring_disabled is set";
  absl::StatusOr<Ring> ring = Ring::Create(8, true);
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_TRUE(ring->big_sqe());
  EXPECT_GE(ring->sq_entries(), 8u);
  io_uring_sqe* sqe = io_uring_get_sqe(ring->get());
  ASSERT_NE(sqe, nullptr);
  io_uring_prep_nop(sqe);
  io_uring_sqe_set_data64(sqe, 0xfeed);
  ASSERT_EQ(io_uring_submit(ring->get()), 1);
  io_uring_cqe* cqe = nullptr;
  ASSERT_EQ(io_uring_wait_cqe(ring->get(), &cqe), 0);
  EXPECT_EQ(cqe->user_data, 0xfeedu);
  EXPECT_EQ(cqe->res, 0);
  io_uring_cqe_seen(ring->get(), cqe);
}

TEST(RingTest, MovedRingStaysUsable) {
  if (IoUringDisabledSysctl() != 0) GTEST_SKIP() << "kernel.io_uring_disabled is set";
  absl::StatusOr<Ring> a = Ring::Create(4, false);
  ASSERT_TRUE(a.ok());
  Ring b(std::move(*a));
  EXPECT_FALSE(b.big_sqe());
  io_uring_sqe* sqe = io_uring_get_sqe(b.get());
  ASSERT_NE(sqe, nullptr);
  io_uring_prep_nop(sqe);
  EXPECT_EQ(io_uring_submit(b.get()), 1);
}

TEST(RingTest, ProbeMatchesKernelSwitches) {
  UringSupport s = ProbeUring();
  EXPECT_EQ(s.io_uring, IoUringDisabledSysctl() == 0) << s.io_uring_error;
  std::ifstream f("/sys/module/fuse/parameters/enable_uring");
  std::string v;
  if (f >> v) {
    EXPECT_TRUE(s.fuse_ring_known);
    EXPECT_EQ(s.fuse_ring_enabled, v == "Y");
  } else {
    EXPECT_FALSE(s.fuse_ring_known);
  }
}

TEST(RingTest, ImpossibleSizeIsAClearError) {
  absl::StatusOr<Ring> r = Ring::Create(1u << 30, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("io_uring_setup"), std::string::npos);
}

}  // namespace
}  // namespace efuse::uring
