#include "bpf/telemetry_maps.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace efuse::bpf {
namespace {

absl::Status BpfError(int err, const std::string& what) {
  return absl::ErrnoToStatus(err < 0 ? -err : err, what);
}

// Per-CPU values come back as one slot per possible CPU, each rounded up to
// 8 bytes.
template <typename T>
absl::StatusOr<T> SumPerCpu(int fd, uint32_t key, void (*add)(T&, const T&)) {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return BpfError(cpus, "counting possible CPUs");
  const size_t stride = (sizeof(T) + 7) & ~size_t{7};
  std::vector<uint8_t> buf(stride * static_cast<size_t>(cpus));
  if (bpf_map_lookup_elem(fd, &key, buf.data()) != 0) return BpfError(errno, "reading a per-CPU map");
  T sum{};
  for (int c = 0; c < cpus; ++c) {
    T one;
    std::memcpy(&one, buf.data() + stride * static_cast<size_t>(c), sizeof(T));
    add(sum, one);
  }
  return sum;
}

void AddOpStats(efuse_op_stats& a, const efuse_op_stats& b) {
  a.sent += b.sent;
  a.completed += b.completed;
  a.errors += b.errors;
  a.timed += b.timed;
  a.latency_sum_ns += b.latency_sum_ns;
  a.latency_max_ns = std::max(a.latency_max_ns, b.latency_max_ns);
  for (int i = 0; i < EFUSE_LATENCY_BUCKETS; ++i) a.latency_hist[i] += b.latency_hist[i];
}

void AddMisc(efuse_misc& a, const efuse_misc& b) {
  a.events_dropped += b.events_dropped;
  a.inflight_full += b.inflight_full;
}

}  // namespace

std::string PinDir(unsigned connection_id) {
  return absl::StrCat(EFUSE_BPF_PIN_ROOT, "/", connection_id);
}

bool RemovePinned(unsigned connection_id) {
  const std::string dir = PinDir(connection_id);
  for (const char* map : kPinnedMaps) unlink(absl::StrCat(dir, "/", map).c_str());
  return rmdir(dir.c_str()) == 0;
}

uint32_t KernelDev(dev_t dev) {
  // The kernel's internal dev_t: 12-bit major above a 20-bit minor.
  return (static_cast<uint32_t>(major(dev)) << 20) | (static_cast<uint32_t>(minor(dev)) & 0xfffff);
}

uint64_t HistogramQuantile(const __u64 (&hist)[EFUSE_LATENCY_BUCKETS], double q,
                           uint64_t observed_max) {
  uint64_t total = 0;
  for (uint64_t n : hist) total += n;
  if (total == 0) return 0;
  // The bucket where the cumulative count reaches q of the total, then a
  // straight line across it: [2^i, 2^(i+1)) ns, bucket 0 being [0, 2).
  const double want = std::max(1.0, q * static_cast<double>(total));
  uint64_t estimate = uint64_t{2} << (EFUSE_LATENCY_BUCKETS - 1);
  uint64_t seen = 0;
  for (int i = 0; i < EFUSE_LATENCY_BUCKETS; ++i) {
    if (hist[i] == 0) continue;
    if (static_cast<double>(seen + hist[i]) >= want) {
      const double lo = i == 0 ? 0.0 : static_cast<double>(uint64_t{1} << i);
      const double hi = static_cast<double>(uint64_t{2} << i);
      const double fraction = (want - static_cast<double>(seen)) / static_cast<double>(hist[i]);
      estimate = static_cast<uint64_t>(lo + fraction * (hi - lo));
      break;
    }
    seen += hist[i];
  }
  // The line across the bucket knows nothing of the largest value seen.
  return observed_max > 0 ? std::min(estimate, observed_max) : estimate;
}

absl::StatusOr<TelemetryMaps> TelemetryMaps::OpenPinned(unsigned connection_id) {
  TelemetryMaps m;
  m.owned_ = true;
  const std::string dir = PinDir(connection_id);
  int* fds[] = {&m.config_fd_, &m.stats_fd_, &m.hot_fd_, &m.misc_fd_, &m.events_fd_};
  static_assert(std::size(fds) == std::size(kPinnedMaps));
  for (size_t i = 0; i < std::size(fds); ++i) {
    const std::string path = absl::StrCat(dir, "/", kPinnedMaps[i]);
    *fds[i] = bpf_obj_get(path.c_str());
    if (*fds[i] < 0) return BpfError(errno, absl::StrCat("opening ", path));
  }
  // A daemon built with another layout: refuse rather than misread.
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(m.stats_fd_, &info, &len) != 0) return BpfError(errno, "reading map info");
  if (info.value_size != sizeof(efuse_op_stats)) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, "/stats has values of ", info.value_size, " bytes, this efusectl expects ",
        sizeof(efuse_op_stats), ": daemon and tool come from different builds"));
  }
  return m;
}

TelemetryMaps TelemetryMaps::Borrow(int config_fd, int stats_fd, int hot_fd, int misc_fd,
                                    int events_fd) {
  TelemetryMaps m;
  m.config_fd_ = config_fd;
  m.stats_fd_ = stats_fd;
  m.hot_fd_ = hot_fd;
  m.misc_fd_ = misc_fd;
  m.events_fd_ = events_fd;
  return m;
}

TelemetryMaps::TelemetryMaps(TelemetryMaps&& other) noexcept { *this = std::move(other); }

TelemetryMaps& TelemetryMaps::operator=(TelemetryMaps&& other) noexcept {
  if (this != &other) {
    Close();
    owned_ = std::exchange(other.owned_, false);
    config_fd_ = std::exchange(other.config_fd_, -1);
    stats_fd_ = std::exchange(other.stats_fd_, -1);
    hot_fd_ = std::exchange(other.hot_fd_, -1);
    misc_fd_ = std::exchange(other.misc_fd_, -1);
    events_fd_ = std::exchange(other.events_fd_, -1);
  }
  return *this;
}

TelemetryMaps::~TelemetryMaps() { Close(); }

void TelemetryMaps::Close() {
  if (!owned_) return;
  for (int fd : {config_fd_, stats_fd_, hot_fd_, misc_fd_, events_fd_})
    if (fd >= 0) close(fd);
  owned_ = false;
}

absl::StatusOr<OpStatsTable> TelemetryMaps::ReadStats() const {
  OpStatsTable table{};
  for (uint32_t slot = 0; slot < EFUSE_OPCODE_SLOTS; ++slot) {
    absl::StatusOr<efuse_op_stats> s = SumPerCpu<efuse_op_stats>(stats_fd_, slot, AddOpStats);
    if (!s.ok()) return s.status();
    table[slot] = *s;
  }
  return table;
}

absl::StatusOr<efuse_misc> TelemetryMaps::ReadMisc() const {
  return SumPerCpu<efuse_misc>(misc_fd_, 0, AddMisc);
}

absl::StatusOr<efuse_config> TelemetryMaps::ReadConfig() const {
  uint32_t key = 0;
  efuse_config c{};
  if (bpf_map_lookup_elem(config_fd_, &key, &c) != 0) return BpfError(errno, "reading config");
  return c;
}

absl::Status TelemetryMaps::WriteConfig(const efuse_config& config) const {
  uint32_t key = 0;
  if (bpf_map_update_elem(config_fd_, &key, &config, BPF_ANY) != 0) return BpfError(errno, "writing config");
  return absl::OkStatus();
}

absl::Status TelemetryMaps::ReadHotInodes(uint64_t since_ns, std::vector<HotInode>* out) const {
  out->clear();
  // Batches: one syscall per 4096 rows instead of two per row.
  constexpr uint32_t kBatch = 4096;
  std::vector<uint64_t> keys(kBatch);
  std::vector<efuse_hot_inode> values(kBatch);
  uint64_t cursor = 0;
  bool first = true;
  for (;;) {
    uint32_t count = kBatch;
    int rc = bpf_map_lookup_batch(hot_fd_, first ? nullptr : &cursor, &cursor, keys.data(), values.data(),
                                  &count, nullptr);
    const int err = rc != 0 ? errno : 0;
    if (rc != 0 && err != ENOENT) return BpfError(err, "reading hot_inodes");
    for (uint32_t i = 0; i < count; ++i) {
      if (values[i].last_seen_ns < since_ns) continue;
      HotInode h;
      h.nodeid = keys[i];
      std::copy(std::begin(values[i].counts), std::end(values[i].counts), h.counts.begin());
      h.last_seen_ns = values[i].last_seen_ns;
      out->push_back(h);
    }
    if (err == ENOENT) return absl::OkStatus();  // the end of the table
    first = false;
  }
}

}  // namespace efuse::bpf
