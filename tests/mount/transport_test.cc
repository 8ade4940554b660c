// Request transports on real mounts: the FUSE ring really carries the
// requests (the daemon's per-queue counters and the kernel's io_uring
// fdinfo agree), and `auto`/`uring` fall back to /dev/fuse, saying why, when
// the kernel switch is off or io_uring is refused. (The whole POSIX,
// permission and passthrough suites also run once per transport: see
// CMakeLists.txt.)
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <chrono>
#include <iterator>
#include <atomic>
#include <thread>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

constexpr int kStats = 2000;

std::string ReadSmallFile(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

// Restores a /proc or /sys switch on scope exit.
class SwitchGuard {
 public:
  SwitchGuard(std::string path, const std::string& value) : path_(std::move(path)) {
    old_ = ReadSmallFile(path_);
    std::ofstream(path_) << value;
  }
  ~SwitchGuard() { std::ofstream(path_) << old_; }
  bool set_to(const std::string& v) const { return ReadSmallFile(path_) == v; }

 private:
  std::string path_, old_;
};

// Sum of one fdinfo field over the daemon's io_uring fds.
uint64_t IoUringFdinfoSum(pid_t pid, const std::string& field, int* rings) {
  uint64_t sum = 0;
  *rings = 0;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    char target[256];
    const std::string link = dir + "/" + e->d_name;
    ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::string(target) != "anon_inode:[io_uring]") continue;
    ++*rings;
    std::ifstream info("/proc/" + std::to_string(pid) + "/fdinfo/" + e->d_name);
    std::string line;
    while (std::getline(info, line)) {
      if (line.rfind(field + ":", 0) == 0) sum += std::strtoull(line.c_str() + field.size() + 1, nullptr, 10);
    }
  }
  closedir(d);
  return sum;
}

// The transport is chosen after INIT, a moment after the mount appears.
bool LogShows(const EfuseMount& mount, const std::string& text) {
  for (int i = 0; i < 500; ++i) {
    if (mount.Log().find(text) != std::string::npos) return true;
    usleep(10000);
  }
  return false;
}

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override { EFUSE_REQUIRE_FUSE(); }
  void TearDown() override {
    if (mount_.running()) {
      EXPECT_TRUE(mount_.Stop());
    }
  }
  EfuseMount mount_;
};

// uring: the FUSE ring's queues; uring-dev: io_uring reads on /dev/fuse.
class IoUringTransportTest : public TransportTest,
                             public ::testing::WithParamInterface<std::string> {};

TEST_P(IoUringTransportTest, CarriesTheRequests) {
  const std::string transport = GetParam();
  ASSERT_TRUE(mount_.Start(
      {"--transport=" + transport, "--attr_timeout=0", "--entry_timeout=0", "--offload=off"}));
  ASSERT_TRUE(LogShows(mount_, "serving with the " + transport + " transport")) << mount_.Log();
  const std::string f = mount_.Path("f");
  { UniqueFd fd(open(f.c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }

  StatusReader status(&mount_);
  std::map<std::string, std::string> before, after;
  ASSERT_TRUE(status.Fresh(&before));
  int rings_before = 0;
  const uint64_t sq_before = IoUringFdinfoSum(mount_.pid(), "SqHead", &rings_before);
  struct stat st;
  for (int i = 0; i < kStats; ++i) ASSERT_SYS(stat(f.c_str(), &st));
  ASSERT_TRUE(status.Fresh(&after));
  int rings = 0;
  const uint64_t sq_after = IoUringFdinfoSum(mount_.pid(), "SqHead", &rings);

  EXPECT_EQ(after["transport"].rfind(transport + " ", 0), 0u) << after["transport"];
  // Every queue is listed; together they served at least one LOOKUP and one
  // GETATTR per stat (timeouts 0: nothing is cached).
  uint64_t queue_requests_before = 0, queue_requests_after = 0;
  int queues = 0;
  auto requests_of = [](const std::string& line) {
    size_t p = line.find("requests ");
    return p == std::string::npos ? 0 : std::strtoull(line.c_str() + p + 9, nullptr, 10);
  };
  for (const auto& [k, v] : after) {
    if (k.rfind("queue_", 0) != 0) continue;
    ++queues;
    queue_requests_after += requests_of(v);
    queue_requests_before += requests_of(before[k]);
  }
  EXPECT_GE(queues, 1);
  EXPECT_GE(queue_requests_after - queue_requests_before, 2u * kStats);
  const uint64_t getattr = std::strtoull(after["requests_GETATTR"].c_str(), nullptr, 10) -
                           std::strtoull(before["requests_GETATTR"].c_str(), nullptr, 10);
  EXPECT_GE(getattr, static_cast<uint64_t>(kStats));
  // The kernel's own count: each request was answered through one of the
  // daemon's io_urings (one per queue): a COMMIT_AND_FETCH, or a WRITEV and
  // the next READ.
  EXPECT_EQ(rings, queues);
  EXPECT_GE(sq_after - sq_before, 2u * kStats) << "io_uring SQEs submitted by the daemon";
}

INSTANTIATE_TEST_SUITE_P(Transports, IoUringTransportTest, ::testing::Values("uring", "uring-dev"),
                         [](const auto& info) {
                           return info.param == "uring" ? std::string("FuseRing")
                                                        : std::string("DevFuse");
                         });

TEST_F(TransportTest, AutoTakesIoUringOnDevFuseWhenTheRingIsSwitchedOff) {
  SwitchGuard ring("/sys/module/fuse/parameters/enable_uring", "N");
  ASSERT_TRUE(ring.set_to("N"));
  ASSERT_TRUE(mount_.Start({"--transport=auto"}));
  const std::string f = mount_.Path("f");
  { UniqueFd fd(open(f.c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }
  EXPECT_TRUE(LogShows(mount_, "serving with the uring-dev transport (uring unavailable: the "
                               "kernel did not offer FUSE_OVER_IO_URING"))
      << mount_.Log();
}

// How many of the daemon's threads may run on exactly one CPU.
int ThreadsPinnedToOneCpu(pid_t pid) {
  int pinned = 0;
  DIR* tasks = opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (tasks == nullptr) return -1;
  while (dirent* t = readdir(tasks)) {
    if (t->d_name[0] == '.') continue;
    std::ifstream status("/proc/" + std::to_string(pid) + "/task/" + t->d_name + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Cpus_allowed_list:", 0) != 0) continue;
      const std::string cpus = line.substr(line.find_first_not_of(" \t", 18));
      if (cpus.find_first_of(",-") == std::string::npos) ++pinned;
    }
  }
  closedir(tasks);
  return pinned;
}

// The sync transport's workers float: pinned, a request often waited for a
// wakeup of the worker on the other CPU (measured: a third of the reads
// with one client). The io_uring transports' workers stay pinned.
TEST_F(TransportTest, SyncWorkersFloatAndIoUringWorkersArePinned) {
  cpu_set_t mine;
  ASSERT_SYS(sched_getaffinity(0, sizeof(mine), &mine));
  const int cpus = CPU_COUNT(&mine);
  if (cpus < 2) GTEST_SKIP() << "one CPU: nothing to pin to or float over";
  for (const char* transport : {"sync", "uring-dev"}) {
    SCOPED_TRACE(transport);
    EfuseMount m;
    ASSERT_TRUE(m.Start({std::string("--transport=") + transport, "--workers=2"}));
    { UniqueFd fd(open(m.Path("f").c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }
    ASSERT_TRUE(LogShows(m, std::string("serving with the ") + transport + " transport")) << m.Log();
    const int pinned = ThreadsPinnedToOneCpu(m.pid());
    if (std::string(transport) == "sync") {
      EXPECT_EQ(pinned, 0) << m.Log();
    } else {
      EXPECT_GE(pinned, 2) << m.Log();
    }
    EXPECT_TRUE(m.Stop()) << m.Log();
  }
}

// --poll_us: workers that look for requests before sleeping serve the same
// bytes, from several clients at once, and still stop cleanly.
TEST_F(TransportTest, PollingWorkersServeAndStop) {
  ASSERT_TRUE(mount_.Start({"--transport=uring", "--poll_us=200", "--attr_timeout=0", "--offload=off"}));
  EXPECT_TRUE(LogShows(mount_, "workers poll 200 us")) << mount_.Log();
  std::vector<std::thread> clients;
  std::atomic<int> failures{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      const std::string f = mount_.Path("p" + std::to_string(c));
      const std::string data = PatternBytes(c, 1 << 20);
      std::string error, got;
      for (int i = 0; i < 5; ++i) {
        if (!WriteFile(f, data, &error) || !ReadFile(f, &got, &error) || got != data) ++failures;
        struct stat st;
        for (int k = 0; k < 200; ++k)
          if (stat(f.c_str(), &st) != 0) ++failures;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(mount_.Stop());
}

// The default polling (--poll_us=50) is for clients that hop between CPUs:
// a client that stays on its worker's CPU is served by a sleeping worker
// (polling would compete with it), two clients on different CPUs, whose
// requests interleave between the queues, are served by polling workers.
TEST_F(TransportTest, WorkersPollOnlyWhileRequestsMoveBetweenQueues) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs two CPUs";
  // Offload off: it would keep the hot file's attributes in the kernel.
  ASSERT_TRUE(mount_.Start({"--transport=uring", "--attr_timeout=0", "--offload=off"}));
  EXPECT_TRUE(LogShows(mount_, "workers poll 50 us")) << mount_.Log();
  const std::string f = mount_.Path("f");
  { UniqueFd fd(open(f.c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }
  StatusReader status(&mount_);
  // Sums of "requests" and "polled" over the queue lines.
  auto totals = [&](uint64_t* requests, uint64_t* polled) {
    std::map<std::string, std::string> kv;
    ASSERT_TRUE(status.Fresh(&kv));
    *requests = *polled = 0;
    for (const auto& [k, v] : kv) {
      if (k.rfind("queue_", 0) != 0) continue;
      std::istringstream words(v);
      std::string key;
      uint64_t value = 0;
      while (words >> key) {
        if (key != "requests" && key != "polled") continue;
        if (!(words >> value)) break;
        (key == "requests" ? *requests : *polled) += value;
      }
    }
  };
  auto stat_loop = [&](int cpu, int n, std::atomic<int>* failures) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) ++*failures;
    UniqueFd fd(open(f.c_str(), O_RDONLY));
    struct stat st;
    for (int i = 0; i < n; ++i)
      if (fstat(fd.get(), &st) != 0) ++*failures;
  };
  std::atomic<int> failures{0};
  uint64_t r0, p0, r1, p1, r2, p2;
  totals(&r0, &p0);
  std::thread([&] { stat_loop(0, 20000, &failures); }).join();
  totals(&r1, &p1);
  ASSERT_GE(r1 - r0, 20000u);
  EXPECT_LT(p1 - p0, (r1 - r0) / 20) << "a client staying on one CPU: workers sleep";
  std::thread a([&] { stat_loop(0, 20000, &failures); });
  std::thread b([&] { stat_loop(1, 20000, &failures); });
  a.join();
  b.join();
  totals(&r2, &p2);
  EXPECT_GE(r2 - r1, 40000u);
  EXPECT_GT(p2 - p1, (r2 - r1) / 10) << "clients on both CPUs: workers poll";
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(mount_.Stop());
}

TEST_F(TransportTest, UringFallsBackWhenIoUringIsRefused) {
  SwitchGuard disabled("/proc/sys/kernel/io_uring_disabled", "2");
  ASSERT_TRUE(disabled.set_to("2"));
  ASSERT_TRUE(mount_.Start({"--transport=uring"}));
  const std::string f = mount_.Path("f");
  { UniqueFd fd(open(f.c_str(), O_CREAT | O_WRONLY, 0644)); ASSERT_SYS(fd.get()); }
  struct stat st;
  EXPECT_SYS(stat(f.c_str(), &st));
  EXPECT_TRUE(LogShows(mount_, "serving with the sync transport (uring unavailable: io_uring refused"))
      << mount_.Log();
}


// With kernel passthrough off, the io_uring transports' workers do the
// backing files' reads, writes and fsyncs on their own io_uring (async_ops in
// the queue lines), and the data is right both ways.
TEST_P(IoUringTransportTest, PassthroughBackingIoGoesThroughTheWorkersRing) {
  const std::string transport = GetParam();
  char src_template[] = "/var/tmp/efuse-src-XXXXXX";
  ASSERT_NE(mkdtemp(src_template), nullptr);
  const std::string src = src_template;
  ASSERT_TRUE(mount_.Start({"--transport=" + transport, "--fs=passthrough", "--source=" + src,
                            "--passthrough=off", "--writeback_cache=false", "--keep_cache=false"}));
  ASSERT_TRUE(LogShows(mount_, "serving with the " + transport + " transport")) << mount_.Log();
  StatusReader status(&mount_);
  std::map<std::string, std::string> before, after;
  ASSERT_TRUE(status.Fresh(&before));

  constexpr size_t kSize = 4 << 20;
  std::vector<uint8_t> data(kSize);
  for (size_t i = 0; i < kSize; ++i) data[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  const std::string f = mount_.Path("f");
  {
    UniqueFd fd(open(f.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644));
    ASSERT_SYS(fd.get());
    for (size_t off = 0; off < kSize; off += 128 << 10)
      ASSERT_EQ(pwrite(fd.get(), data.data() + off, 128 << 10, static_cast<off_t>(off)), 128 << 10);
    ASSERT_SYS(fsync(fd.get()));
  }
  // The source file has the bytes.
  {
    std::ifstream in(src + "/f", std::ios::binary);
    std::vector<uint8_t> got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_EQ(got.size(), kSize);
    EXPECT_TRUE(got == data) << "the source file differs from what was written";
  }
  // Read back through the mount (a new open drops the cached pages).
  {
    UniqueFd fd(open(f.c_str(), O_RDONLY));
    ASSERT_SYS(fd.get());
    std::vector<uint8_t> got(kSize);
    size_t done = 0;
    while (done < kSize) {
      ssize_t n = pread(fd.get(), got.data() + done, kSize - done, static_cast<off_t>(done));
      ASSERT_GT(n, 0) << ErrnoName(errno);
      done += static_cast<size_t>(n);
    }
    EXPECT_TRUE(got == data) << "read back through the mount differs";
  }
  ASSERT_TRUE(status.Fresh(&after));
  auto count = [](std::map<std::string, std::string>& kv, const std::string& key) {
    return std::strtoull(kv[key].c_str(), nullptr, 10);
  };
  EXPECT_GT(count(after, "requests_WRITE"), count(before, "requests_WRITE"));
  EXPECT_GT(count(after, "requests_READ"), count(before, "requests_READ"));
  EXPECT_GT(count(after, "requests_FSYNC"), count(before, "requests_FSYNC"));
  uint64_t async_before = 0, async_after = 0;
  auto async_of = [](const std::string& line) {
    size_t p = line.find("async_ops ");
    return p == std::string::npos ? 0 : std::strtoull(line.c_str() + p + 10, nullptr, 10);
  };
  for (const auto& [k, v] : after) {
    if (k.rfind("queue_", 0) != 0) continue;
    async_after += async_of(v);
    async_before += async_of(before[k]);
  }
  // Every WRITE, READ and FSYNC went to the ring (at least one operation each).
  const uint64_t io_requests = count(after, "requests_WRITE") - count(before, "requests_WRITE") +
                               count(after, "requests_READ") - count(before, "requests_READ") +
                               count(after, "requests_FSYNC") - count(before, "requests_FSYNC");
  EXPECT_GE(async_after - async_before, io_requests);
  EXPECT_TRUE(mount_.Stop());
  RunCommand({"/bin/rm", "-rf", src}, std::chrono::seconds(30));
}

}  // namespace
}  // namespace efuse::testing
