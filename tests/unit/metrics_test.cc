// tests/unit/metrics_test.cc — tools/efusectl/metrics.h: the Prometheus text
// format from known figures (a real parser, promtool, checks it on a mount:
// telemetry_test).
#include "tools/efusectl/metrics.h"

#include <string>

#include "gtest/gtest.h"

namespace efuse::ctl {
namespace {

bool Has(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(MetricsTest, CountersHistogramsAndStatusLines) {
  MountFigures m;
  m.mountpoint = "/mnt/a \"b\"";
  bpf::OpStatsTable t{};
  efuse_op_stats& getattr = t[3];
  getattr.completed = 10;
  getattr.errors = 1;
  getattr.timed = 10;
  getattr.latency_hist[10] = 4;  // [1024, 2048) ns
  getattr.latency_hist[12] = 6;  // [4096, 8192) ns
  getattr.latency_sum_ns = 50000;
  m.telemetry = t;
  m.status = {{"fs", "memfs"}, {"transport", "uring (first choice)"}, {"pid", "42"},
              {"requests_GETATTR", "10"}, {"pt_inodes", "7"}, {"queue_0", "busy"}};
  const std::string text = RenderMetrics({m});
  const std::string l = "mountpoint=\"/mnt/a \\\"b\\\"\",op=\"GETATTR\"";
  EXPECT_TRUE(Has(text, "efuse_requests_total{" + l + "} 10")) << text;
  EXPECT_TRUE(Has(text, "efuse_request_errors_total{" + l + "} 1")) << text;
  // Cumulative: nothing below 1024 ns, 4 up to 2048, 10 from 8192 on.
  EXPECT_TRUE(Has(text, "efuse_request_duration_seconds_bucket{" + l + ",le=\"1.024e-06\"} 0")) << text;
  EXPECT_TRUE(Has(text, "efuse_request_duration_seconds_bucket{" + l + ",le=\"2.048e-06\"} 4")) << text;
  EXPECT_TRUE(Has(text, "efuse_request_duration_seconds_bucket{" + l + ",le=\"8.192e-06\"} 10")) << text;
  EXPECT_TRUE(Has(text, "efuse_request_duration_seconds_bucket{" + l + ",le=\"+Inf\"} 10")) << text;
  EXPECT_TRUE(Has(text, "efuse_request_duration_seconds_sum{" + l + "} 0.000050000")) << text;
  EXPECT_TRUE(Has(text, "efuse_request_duration_seconds_count{" + l + "} 10")) << text;
  EXPECT_TRUE(Has(text, "efuse_daemon_requests_total{" + l + "} 10")) << text;
  EXPECT_TRUE(Has(text, "efuse_daemon_status{mountpoint=\"/mnt/a \\\"b\\\"\",key=\"pt_inodes\"} 7")) << text;
  EXPECT_EQ(text.find("key=\"queue_0\""), std::string::npos) << "text lines are not figures";
  EXPECT_TRUE(Has(text, "efuse_daemon_info{mountpoint=\"/mnt/a \\\"b\\\"\",fs=\"memfs\",transport=\"uring\",pid=\"42\"} 1"))
      << text;
  EXPECT_TRUE(Has(text, "# TYPE efuse_request_duration_seconds histogram"));
}

TEST(MetricsTest, AMountWithoutTelemetryStillHasItsStatus) {
  MountFigures m;
  m.mountpoint = "/mnt/x";
  m.status = {{"fs", "passthrough"}, {"pt_inodes", "3"}};
  const std::string text = RenderMetrics({m});
  EXPECT_EQ(text.find("efuse_requests_total{"), std::string::npos);
  EXPECT_TRUE(Has(text, "efuse_daemon_status{mountpoint=\"/mnt/x\",key=\"pt_inodes\"} 3")) << text;
}

}  // namespace
}  // namespace efuse::ctl
