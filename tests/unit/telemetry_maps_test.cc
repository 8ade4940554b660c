// tests/unit/telemetry_maps_test.cc — arithmetic on what the BPF programs
// record: latency percentiles from log2 histograms, the kernel's dev_t.
#include "bpf/telemetry_maps.h"

#include <sys/sysmacros.h>

#include "gtest/gtest.h"

namespace efuse::bpf {
namespace {

TEST(HistogramQuantileTest, EmptyIsZero) {
  __u64 hist[EFUSE_LATENCY_BUCKETS] = {};
  EXPECT_EQ(HistogramQuantile(hist, 0.5), 0u);
}

TEST(HistogramQuantileTest, InterpolatesInsideTheBucket) {
  __u64 hist[EFUSE_LATENCY_BUCKETS] = {};
  hist[12] = 100;  // [4096, 8192) ns
  EXPECT_EQ(HistogramQuantile(hist, 0.5), 4096u + 2048u);
  EXPECT_EQ(HistogramQuantile(hist, 1.0), 8192u);
  EXPECT_EQ(HistogramQuantile(hist, 0.01), 4096u + 40u);
}

// A p99 interpolated inside its log2 bucket can pass the largest latency
// observed (seen on a pjdfstest load: MKNOD p99 249.6 us, max 219.1 us):
// with the max given, no quantile is above it.
TEST(HistogramQuantileTest, NeverAboveTheObservedMax) {
  __u64 hist[EFUSE_LATENCY_BUCKETS] = {};
  hist[17] = 100;  // [131072, 262144) ns, all at most 219100 ns in truth
  EXPECT_GT(HistogramQuantile(hist, 0.99), 219100u) << "the bare line overshoots";
  EXPECT_EQ(HistogramQuantile(hist, 0.99, 219100), 219100u);
  EXPECT_EQ(HistogramQuantile(hist, 0.5, 219100), 131072u + 65536u);
  EXPECT_EQ(HistogramQuantile(hist, 0.99, 0), HistogramQuantile(hist, 0.99)) << "0: no max known";
}

TEST(HistogramQuantileTest, FindsTheBucketOfTheQuantile) {
  __u64 hist[EFUSE_LATENCY_BUCKETS] = {};
  hist[10] = 98;  // [1024, 2048)
  hist[20] = 2;   // [1 Mi, 2 Mi)
  EXPECT_LT(HistogramQuantile(hist, 0.5), 2048u);
  EXPECT_GE(HistogramQuantile(hist, 0.5), 1024u);
  EXPECT_GE(HistogramQuantile(hist, 0.99), 1u << 20);
  EXPECT_LE(HistogramQuantile(hist, 0.99), 2u << 20);
}

TEST(KernelDevTest, MajorAboveA20BitMinor) {
  EXPECT_EQ(KernelDev(makedev(0, 45)), 45u);
  EXPECT_EQ(KernelDev(makedev(0, 300)), 300u);  // user space splits minors past 255
  EXPECT_EQ(KernelDev(makedev(8, 1)), (8u << 20) | 1u);
}

}  // namespace
}  // namespace efuse::bpf
