// tests/mount/telemetry_test.cc — the BPF telemetry and the offload policy on
// real mounts.
//
// The daemon loads its programs for real (tp_btf on fuse_request_send/_end)
// and pins its maps; the tests read those maps (bpf/telemetry_maps) and
// compare them with what they did and with the daemon's own request counts:
// exact counts, the connection filter (a second mount is not counted), the
// fallback when BPF is refused (a seccomp filter, as containers use), the
// efusectl views, and the offload policy's effect (requests that stop
// reaching the daemon, with the data still right).
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bpf/telemetry_maps.h"
#include "gtest/gtest.h"
#include "proto/opcode.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

using Counts = std::map<std::string, uint64_t>;

unsigned ConnectionId(const EfuseMount& m) {
  MountEntry e;
  EXPECT_TRUE(FindMount(m.path(), &e)) << m.path() << " is not mounted";
  return e.dev_minor;
}

// Requests that ended, per opcode name, as the kernel-side programs counted.
::testing::AssertionResult BpfCounts(const EfuseMount& m, Counts* out) {
  absl::StatusOr<bpf::TelemetryMaps> maps = bpf::TelemetryMaps::OpenPinned(ConnectionId(m));
  if (!maps.ok()) return ::testing::AssertionFailure() << maps.status().message() << "\n" << m.LogForMessage();
  absl::StatusOr<bpf::OpStatsTable> stats = maps->ReadStats();
  if (!stats.ok()) return ::testing::AssertionFailure() << stats.status().message();
  out->clear();
  for (uint32_t op = 1; op < EFUSE_OPCODE_SLOTS; ++op)
    if ((*stats)[op].completed != 0) (*out)[proto::OpcodeName(op)] = (*stats)[op].completed;
  return ::testing::AssertionSuccess();
}

uint64_t Delta(const Counts& before, const Counts& after, const std::string& op) {
  auto a = after.find(op);
  auto b = before.find(op);
  return (a == after.end() ? 0 : a->second) - (b == before.end() ? 0 : b->second);
}

uint64_t Sum(const Counts& c) {
  uint64_t n = 0;
  for (const auto& [op, v] : c) n += v;
  return n;
}

std::map<std::string, std::string> Status(const EfuseMount& m) {
  std::map<std::string, std::string> kv;
  EXPECT_TRUE(StatusReader(&m).Fresh(&kv));
  return kv;
}

uint64_t StatusNumber(const EfuseMount& m, const std::string& key) {
  return StatusReader(&m).Number(key);
}

void CreateFiles(const EfuseMount& m, int n, const std::string& prefix = "f") {
  for (int i = 0; i < n; ++i) {
    int fd = open(m.Path(prefix + std::to_string(i)).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    ASSERT_GE(fd, 0) << ErrnoName(errno);
    close(fd);
  }
}

void StatFiles(const EfuseMount& m, int n, const std::string& prefix = "f") {
  struct stat st;
  for (int i = 0; i < n; ++i) ASSERT_EQ(stat(m.Path(prefix + std::to_string(i)).c_str(), &st), 0) << ErrnoName(errno);
}

// Opcodes that are no fuse_req in the kernel (no tracepoint fires for them).
bool Untraced(const std::string& op) { return op == "FORGET" || op == "BATCH_FORGET" || op == "INTERRUPT"; }

class TelemetryTest : public ::testing::Test {
 protected:
  void SetUp() override { EFUSE_REQUIRE_FUSE(); }
};

TEST_F(TelemetryTest, CountsAreExact) {
  EfuseMount m;
  // Attribute lifetime 0 and no offload: every stat is one GETATTR. Every
  // request timed.
  ASSERT_TRUE(m.Start({"--attr_timeout=0", "--offload=off", "--telemetry_time_every=1"}));
  constexpr int kFiles = 300;
  Counts bpf_before, daemon_before;
  ASSERT_TRUE(BpfCounts(m, &bpf_before));
  ASSERT_TRUE(StatusReader(&m).Counts(&daemon_before));

  CreateFiles(m, kFiles);
  StatFiles(m, kFiles);
  for (int i = 0; i < kFiles; ++i) ASSERT_EQ(unlink(m.Path("f" + std::to_string(i)).c_str()), 0);

  // RELEASE is sent in the background after close(): wait until the
  // daemon and the kernel agree, then compare everything.
  Counts bpf_after, daemon_after;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    ASSERT_TRUE(StatusReader(&m).Counts(&daemon_after));
    ASSERT_TRUE(BpfCounts(m, &bpf_after));
    if (Delta(bpf_before, bpf_after, "RELEASE") == kFiles || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Delta(bpf_before, bpf_after, "CREATE"), kFiles);
  EXPECT_EQ(Delta(bpf_before, bpf_after, "GETATTR"), kFiles);
  EXPECT_EQ(Delta(bpf_before, bpf_after, "UNLINK"), kFiles);
  EXPECT_EQ(Delta(bpf_before, bpf_after, "RELEASE"), kFiles);
  // Every request the daemon received, the kernel counted, and no other.
  std::map<std::string, bool> ops;
  for (const auto& c : {bpf_after, daemon_after})
    for (const auto& [op, n] : c) ops[op] = true;
  ops.erase("total");
  for (const auto& [op, unused] : ops) {
    if (Untraced(op)) continue;
    EXPECT_EQ(Delta(bpf_before, bpf_after, op), Delta(daemon_before, daemon_after, op))
        << op << ": kernel-side count differs from the daemon's";
  }

  // Latency: every GETATTR was seen from send to end.
  absl::StatusOr<bpf::TelemetryMaps> maps = bpf::TelemetryMaps::OpenPinned(ConnectionId(m));
  ASSERT_TRUE(maps.ok());
  absl::StatusOr<bpf::OpStatsTable> stats = maps->ReadStats();
  ASSERT_TRUE(stats.ok());
  const efuse_op_stats& getattr = (*stats)[3];
  EXPECT_EQ(getattr.timed, getattr.completed);
  uint64_t in_histogram = 0;
  for (uint64_t n : getattr.latency_hist) in_histogram += n;
  EXPECT_EQ(in_histogram, getattr.timed);
  EXPECT_GT(getattr.latency_max_ns, 0u);
  EXPECT_GT(bpf::HistogramQuantile(getattr.latency_hist, 0.99), 0u);
  ASSERT_TRUE(m.Stop());
}

TEST_F(TelemetryTest, SampledLatencyKeepsCountsExact) {
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--attr_timeout=0", "--offload=off", "--telemetry_time_every=8"}));
  CreateFiles(m, 100);
  Counts before, after;
  ASSERT_TRUE(BpfCounts(m, &before));
  for (int round = 0; round < 20; ++round) StatFiles(m, 100);
  ASSERT_TRUE(BpfCounts(m, &after));
  EXPECT_EQ(Delta(before, after, "GETATTR"), 2000u);
  absl::StatusOr<bpf::TelemetryMaps> maps = bpf::TelemetryMaps::OpenPinned(ConnectionId(m));
  ASSERT_TRUE(maps.ok());
  absl::StatusOr<bpf::OpStatsTable> stats = maps->ReadStats();
  ASSERT_TRUE(stats.ok());
  const efuse_op_stats& getattr = (*stats)[3];
  // The first 64 per CPU, then 1 in 8: far fewer than all, never none.
  EXPECT_GT(getattr.timed, 2000u / 8);
  EXPECT_LT(getattr.timed, getattr.completed / 2);
  EXPECT_GT(bpf::HistogramQuantile(getattr.latency_hist, 0.5), 0u);
  EXPECT_EQ(Status(m)["telemetry_time_every"], "8");
  ASSERT_TRUE(m.Stop());
}

TEST_F(TelemetryTest, AnotherMountIsNotCounted) {
  EfuseMount watched, other;
  ASSERT_TRUE(watched.Start({"--attr_timeout=0", "--offload=off"}));
  // The other mount runs its own programs too: both filters are exercised.
  ASSERT_TRUE(other.Start({"--attr_timeout=0", "--offload=off"}));
  ASSERT_NE(ConnectionId(watched), ConnectionId(other));
  CreateFiles(other, 50);
  Counts w0, o0, w1, o1;
  ASSERT_TRUE(BpfCounts(watched, &w0));
  ASSERT_TRUE(BpfCounts(other, &o0));
  for (int round = 0; round < 4; ++round) StatFiles(other, 50);
  ASSERT_TRUE(BpfCounts(watched, &w1));
  ASSERT_TRUE(BpfCounts(other, &o1));
  EXPECT_EQ(Sum(w1) - Sum(w0), 0u) << "requests of another mount were counted";
  EXPECT_EQ(Delta(o0, o1, "GETATTR"), 200u);
  ASSERT_TRUE(other.Stop());
  ASSERT_TRUE(watched.Stop());
}

TEST_F(TelemetryTest, MapsArePinnedWhileServingAndRemovedAtExit) {
  EfuseMount m;
  ASSERT_TRUE(m.Start({}));
  const std::string dir = bpf::PinDir(ConnectionId(m));
  for (const char* map : {"config", "stats", "hot_inodes", "events", "misc"}) {
    struct stat st;
    EXPECT_EQ(stat((dir + "/" + map).c_str(), &st), 0) << dir << "/" << map << ": " << ErrnoName(errno);
  }
  auto kv = Status(m);
  EXPECT_EQ(kv["telemetry"], "on (BPF maps pinned at " + dir + ")");
  EXPECT_EQ(kv["offload"].rfind("on", 0), 0u) << kv["offload"];
  ASSERT_TRUE(m.Stop());
  struct stat st;
  EXPECT_NE(stat(dir.c_str(), &st), 0) << dir << " left behind";
}

// A seccomp filter refusing bpf(2) with EPERM, as container runtimes do.
void RefuseBpfSyscall() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_bpf, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) _exit(126);
}

TEST_F(TelemetryTest, WithoutBpfTheDaemonServesOnAndSaysSo) {
  EfuseMount m;
  m.SetChildSetup(RefuseBpfSyscall);
  ASSERT_TRUE(m.Start({}));
  std::string error, data;
  ASSERT_TRUE(WriteFile(m.Path("x"), "still served", &error)) << error;
  ASSERT_TRUE(ReadFile(m.Path("x"), &data, &error)) << error;
  EXPECT_EQ(data, "still served");
  auto kv = Status(m);
  EXPECT_EQ(kv["telemetry"].rfind("off (", 0), 0u) << kv["telemetry"];
  EXPECT_EQ(kv["offload"], "off (needs BPF telemetry)");
  int lines = 0;
  for (size_t p = 0; (p = m.Log().find("telemetry off:", p)) != std::string::npos; ++p) ++lines;
  EXPECT_EQ(lines, 1) << m.LogForMessage();
  struct stat st;
  EXPECT_NE(stat(bpf::PinDir(ConnectionId(m)).c_str(), &st), 0);
  CommandResult stats = RunCommand({EFUSECTL_PATH, "stats", m.path(), "--interval=0"}, std::chrono::seconds(10));
  EXPECT_EQ(stats.exit_code(), 1) << stats.Describe();
  EXPECT_NE(stats.err.find("no telemetry"), std::string::npos) << stats.Describe();
  ASSERT_TRUE(m.Stop());
}

// Keeps the mount busy with stats of `n` files until stopped.
class StatLoad {
 public:
  StatLoad(const EfuseMount& m, int n)
      : thread_([this, &m, n] {
          struct stat st;
          while (!stop_.load())
            for (int i = 0; i < n; ++i) stat(m.Path("f" + std::to_string(i)).c_str(), &st);
        }) {}
  ~StatLoad() {
    stop_.store(true);
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// efusectl metrics: the Prometheus text format, checked by Prometheus's own
// parser (promtool), with the counts the kernel made.
TEST_F(TelemetryTest, MetricsPassPromtoolAndCarryTheCounts) {
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--attr_timeout=0", "--offload=off", "--telemetry_time_every=1"}));
  constexpr int kFiles = 40;
  CreateFiles(m, kFiles);
  StatFiles(m, kFiles);
  const std::string file = m.path() + ".prom";  // beside the mount, not on it
  CommandResult r = RunCommand({EFUSECTL_PATH, "metrics", m.path(), "--output=" + file}, std::chrono::seconds(10));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  std::string text, error;
  ASSERT_TRUE(ReadFile(file, &text, &error)) << error;
  CommandResult check = RunCommand({"/bin/sh", "-c", "/usr/bin/promtool check metrics < '" + file + "'"},
                                   std::chrono::seconds(30));
  EXPECT_EQ(check.exit_code(), 0) << "promtool (Debian's prometheus package): " << check.Describe();
  const std::string labels = "{mountpoint=\"" + m.path() + "\",op=\"";
  auto value_of = [&](const std::string& series) -> long {
    const size_t at = text.find(series + " ");
    return at == std::string::npos ? -1 : std::atol(text.c_str() + at + series.size() + 1);
  };
  EXPECT_EQ(value_of("efuse_requests_total" + labels + "CREATE\"}"), kFiles) << text;
  EXPECT_GE(value_of("efuse_requests_total" + labels + "GETATTR\"}"), kFiles) << text;
  EXPECT_GE(value_of("efuse_daemon_requests_total" + labels + "CREATE\"}"), kFiles) << text;
  // Every GETATTR timed: the histogram's count is the request count.
  EXPECT_EQ(value_of("efuse_request_duration_seconds_count" + labels + "GETATTR\"}"),
            value_of("efuse_requests_total" + labels + "GETATTR\"}"));
  EXPECT_NE(text.find("efuse_daemon_info{mountpoint=\"" + m.path() + "\",fs=\"memfs\""), std::string::npos);
  unlink(file.c_str());
  ASSERT_TRUE(m.Stop());
}

// efused --metrics_file keeps the same text current by itself: rewritten
// every --metrics_interval while serving (polled for here, bounded), and a
// last time when it stops, with every request counted.
TEST_F(TelemetryTest, MetricsFileIsKeptCurrentByTheDaemon) {
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string file = dir.path() + "/efuse.prom";
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--attr_timeout=0", "--offload=off", "--metrics_file=" + file, "--metrics_interval=1"}));
  const std::string labels = "{mountpoint=\"" + m.path() + "\",op=\"";
  auto value_in = [&](const std::string& text, const std::string& series) -> long {
    const size_t at = text.find(series + " ");
    return at == std::string::npos ? -1 : std::atol(text.c_str() + at + series.size() + 1);
  };
  constexpr int kFiles = 30;
  CreateFiles(m, kFiles);
  std::string text, error;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!ReadFile(file, &text, &error) ||
         value_in(text, "efuse_requests_total" + labels + "CREATE\"}") != kFiles) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the metrics file never showed " << kFiles
                                                          << " CREATEs:\n" << text << m.LogForMessage();
    usleep(20000);
  }
  CommandResult check = RunCommand({"/bin/sh", "-c", "/usr/bin/promtool check metrics < '" + file + "'"},
                                   std::chrono::seconds(30));
  EXPECT_EQ(check.exit_code(), 0) << "promtool: " << check.Describe();
  EXPECT_NE(text.find("efuse_daemon_info{mountpoint=\"" + m.path() + "\",fs=\"memfs\""), std::string::npos);
  // More work, then stop: the last rewrite counts all of it.
  CreateFiles(m, kFiles, "more-");
  ASSERT_TRUE(m.Stop());
  ASSERT_TRUE(ReadFile(file, &text, &error)) << error;
  EXPECT_EQ(value_in(text, "efuse_daemon_requests_total" + labels + "CREATE\"}"), 2 * kFiles) << text;
  CommandResult left = RunCommand({"/bin/sh", "-c", "ls " + dir.path()}, std::chrono::seconds(10));
  EXPECT_EQ(left.out, "efuse.prom\n") << "a temporary file is left";
}

TEST_F(TelemetryTest, EfusectlStatsTopAndTraceReadARunningDaemon) {
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--attr_timeout=0", "--offload=off"}));
  CreateFiles(m, 20);
  StatLoad load(m, 20);
  CommandResult stats = RunCommand({EFUSECTL_PATH, "stats", m.path(), "--interval=0.5"}, std::chrono::seconds(10));
  EXPECT_EQ(stats.exit_code(), 0) << stats.Describe();
  EXPECT_NE(stats.out.find(m.path() + " (connection " + std::to_string(ConnectionId(m)) + ")"), std::string::npos)
      << stats.out;
  EXPECT_NE(stats.out.find("GETATTR"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("P99"), std::string::npos) << stats.out;

  CommandResult top = RunCommand({EFUSECTL_PATH, "top", m.path(), "--iterations=2", "--interval=0.3"},
                                 std::chrono::seconds(10));
  EXPECT_EQ(top.exit_code(), 0) << top.Describe();
  EXPECT_NE(top.out.find("hot inodes"), std::string::npos) << top.out;
  EXPECT_NE(top.out.find("GETATTR"), std::string::npos) << top.out;

  CommandResult trace = RunCommand({EFUSECTL_PATH, "trace", m.path(), "--count=10"}, std::chrono::seconds(10));
  EXPECT_EQ(trace.exit_code(), 0) << trace.Describe();
  int events = 0;
  for (size_t p = 0; (p = trace.out.find(" unique=", p)) != std::string::npos; ++p) ++events;
  EXPECT_EQ(events, 10) << trace.out;
  EXPECT_NE(trace.out.find("GETATTR"), std::string::npos) << trace.out;
  // The daemon's own sample rate (none) is back.
  EXPECT_EQ(Status(m)["telemetry_sample_every"], "0");

  CommandResult bad = RunCommand({EFUSECTL_PATH, "top", m.path(), "--interval=fast"}, std::chrono::seconds(10));
  EXPECT_EQ(bad.exit_code(), 2) << bad.Describe();
  EXPECT_NE(bad.err.find("--interval"), std::string::npos) << bad.Describe();
}

// Requests of `ops` reaching the daemon per round of `work` after warm-up:
// `warm` rounds, a pause for the policy's scans, and one more round, whose
// replies carry what the policy decided.
uint64_t RequestsPerRound(const EfuseMount& m, const std::vector<std::string>& ops, int warm, int rounds,
                          const std::function<void()>& work) {
  for (int i = 0; i < warm; ++i) work();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // several scans
  work();
  Counts before, after;
  EXPECT_TRUE(BpfCounts(m, &before));
  for (int i = 0; i < rounds; ++i) work();
  EXPECT_TRUE(BpfCounts(m, &after));
  uint64_t n = 0;
  for (const std::string& op : ops) n += Delta(before, after, op);
  return n / static_cast<uint64_t>(rounds);
}

TEST_F(TelemetryTest, OffloadKeepsHotStatsInTheKernel) {
  constexpr int kFiles = 400;
  uint64_t per_round[2];
  for (bool offload : {false, true}) {
    EfuseMount m;
    ASSERT_TRUE(m.Start({"--attr_timeout=0", "--entry_timeout=0", offload ? "--offload=on" : "--offload=off"}));
    CreateFiles(m, kFiles);
    per_round[offload] = RequestsPerRound(m, {"LOOKUP", "GETATTR"}, 5, 5, [&] { StatFiles(m, kFiles); });
    if (offload) {
      EXPECT_GT(StatusNumber(m, "offload_attr_raised") + StatusNumber(m, "offload_entry_raised"), 0u);
      // A change through the mount is seen at once, raised lifetime or not.
      ASSERT_EQ(chmod(m.Path("f7").c_str(), 0600), 0);
      struct stat st;
      ASSERT_EQ(stat(m.Path("f7").c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0600u);
      // Lookups no longer reach the daemon, so the directory is lookup-hot
      // (f7 itself may never have become hot: its entry came with raised
      // lifetimes): a new entry in it drops that raise.
      int fd = open(m.Path("new").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      ASSERT_GE(fd, 0) << ErrnoName(errno);
      close(fd);
      ASSERT_EQ(stat(m.Path("new").c_str(), &st), 0);
      EXPECT_GT(StatusNumber(m, "offload_drops"), 0u);
    }
    ASSERT_TRUE(m.Stop());
  }
  std::printf("LOOKUP+GETATTR per round of %d stats after warm-up: %llu with offload, %llu without\n", kFiles,
              static_cast<unsigned long long>(per_round[true]), static_cast<unsigned long long>(per_round[false]));
  EXPECT_GE(per_round[false], static_cast<uint64_t>(kFiles));
  EXPECT_LE(per_round[true] * 10, per_round[false])
      << "with offload " << per_round[true] << " requests per round, without " << per_round[false];
}

TEST_F(TelemetryTest, OffloadServesHotReadsFromThePageCache) {
  const std::string data = PatternBytes(7, 16 << 20);
  uint64_t per_round[2];
  for (bool offload : {false, true}) {
    EfuseMount m;
    // Data the daemon serves: what the offload policy pushes to the page
    // cache (with data in the kernel, no READ reaches the daemon at all).
    ASSERT_TRUE(m.Start({"--memfs_data=daemon", offload ? "--offload=on" : "--offload=off"}));
    std::string error;
    ASSERT_TRUE(WriteFile(m.Path("hot"), data, &error)) << error;
    per_round[offload] = RequestsPerRound(m, {"READ"}, 3, 4, [&] {
      std::string got, err;
      ASSERT_TRUE(ReadFile(m.Path("hot"), &got, &err)) << err;
      ASSERT_TRUE(got == data) << "hot file read back wrong";
    });
    if (offload) {
      EXPECT_GE(StatusNumber(m, "offload_page_cache_stores"), 1u);
      EXPECT_GE(StatusNumber(m, "offload_keep_cache_opens"), 1u);
      // Kept pages follow writes through the mount.
      const std::string patch = PatternBytes(8, 4096);
      int fd = open(m.Path("hot").c_str(), O_WRONLY);
      ASSERT_GE(fd, 0);
      ASSERT_TRUE(PwriteAll(fd, patch.data(), patch.size(), 1 << 20));
      close(fd);
      std::string got;
      ASSERT_TRUE(ReadFile(m.Path("hot"), &got, &error)) << error;
      std::string want = data;
      want.replace(1 << 20, patch.size(), patch);
      EXPECT_TRUE(got == want) << "a write through the mount is not seen after the page-cache push";
    }
    ASSERT_TRUE(m.Stop());
  }
  std::printf("READs per pass over a 16 MiB file after warm-up: %llu with offload, %llu without\n",
              static_cast<unsigned long long>(per_round[true]), static_cast<unsigned long long>(per_round[false]));
  EXPECT_GT(per_round[false], 0u);
  EXPECT_LE(per_round[true] * 10, per_round[false])
      << "with offload " << per_round[true] << " READs per pass, without " << per_round[false];
}

// Page-cache pushes race with writers that rewrite the same files: what a
// writer reads back right after its own write must be what it wrote, never
// older pages or an older size pushed meanwhile.
TEST_F(TelemetryTest, PageCachePushesNeverHideAWrite) {
  EfuseMount m;
  ASSERT_TRUE(m.Start({"--memfs_data=daemon"}));  // pushes are for daemon-served data
  constexpr int kFiles = 40;
  std::string error;
  for (int i = 0; i < kFiles; ++i)
    ASSERT_TRUE(WriteFile(m.Path("f" + std::to_string(i)), PatternBytes(i, 64 << 10), &error)) << error;
  std::atomic<bool> stop{false};
  // Readers make every file hot, so the policy pushes them.
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      std::string got, err;
      while (!stop.load())
        for (int i = 0; i < kFiles && !stop.load(); ++i) ReadFile(m.Path("f" + std::to_string(i)), &got, &err);
    });
  }
  std::atomic<int> mismatches{0};
  std::string first_mismatch;
  std::thread writer([&] {
    uint64_t gen = 1000;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(4);
    while (std::chrono::steady_clock::now() < end) {
      const int i = static_cast<int>(gen % kFiles);
      const std::string want = PatternBytes(gen, (16 << 10) + (gen * 7919) % (200 << 10));
      std::string got, err;
      const std::string path = m.Path("f" + std::to_string(i));
      if (!WriteFile(path, want, &err) || !ReadFile(path, &got, &err) || got != want) {
        if (mismatches.fetch_add(1) == 0)
          first_mismatch = path + ": wrote " + std::to_string(want.size()) + " bytes, read " +
                           std::to_string(got.size()) + (err.empty() ? "" : " (" + err + ")");
      }
      ++gen;
    }
  });
  writer.join();
  stop.store(true);
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(mismatches.load(), 0) << first_mismatch;
  EXPECT_GE(StatusNumber(m, "offload_page_cache_stores"), 1u) << "no push happened: the race was not exercised";
  ASSERT_TRUE(m.Stop());
}

TEST_F(TelemetryTest, OffloadKeepsPassthroughBackingIdsOfHotFiles) {
  char tmpl[] = "/tmp/efuse-ptsrc-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string src = tmpl;
  std::string error;
  ASSERT_TRUE(WriteFile(src + "/hot", "kept backing", &error)) << error;
  {
    EfuseMount m;
    ASSERT_TRUE(m.Start({"--fs=passthrough", "--source=" + src}));
    auto open_close = [&] {
      std::string got, err;
      ASSERT_TRUE(ReadFile(m.Path("hot"), &got, &err)) << err;
      ASSERT_EQ(got, "kept backing");
    };
    for (int i = 0; i < 4; ++i) open_close();
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    const uint64_t ioctls = StatusNumber(m, "pt_backing_opens");
    for (int i = 0; i < 5; ++i) open_close();
    EXPECT_GE(StatusNumber(m, "offload_kept_backing"), 1u);
    // At most the first open registers the file; the id then stays.
    EXPECT_LE(StatusNumber(m, "pt_backing_opens") - ioctls, 1u) << m.LogForMessage();
    EXPECT_GE(StatusNumber(m, "pt_backing_reuses"), 1u) << m.LogForMessage();
    ASSERT_TRUE(m.Stop());
  }
  unlink((src + "/hot").c_str());
  rmdir(src.c_str());
}

}  // namespace
}  // namespace efuse::testing
