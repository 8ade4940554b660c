// bpf/telemetry_maps.h — reading the telemetry maps of a running daemon.
//
// Owns: opening the maps an efused pinned under /sys/fs/bpf/efuse/<id>/,
// summing per-CPU values, reading the hot-inode table in batches, the sample
// rate, and the arithmetic on latency histograms (percentiles). Used by the
// daemon's loader (the hot-inode table for the offload policy), by efusectl
// and by the tests. Layouts: bpf/telemetry_abi.h.
#ifndef EFUSE_BPF_TELEMETRY_MAPS_H_
#define EFUSE_BPF_TELEMETRY_MAPS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bpf/telemetry_abi.h"
#include "core/telemetry.h"

namespace efuse::bpf {

// The pin directory of connection `id`, and the maps pinned in it (the
// names of telemetry.bpf.c's maps).
std::string PinDir(unsigned connection_id);
inline constexpr const char* kPinnedMaps[] = {"config", "stats", "hot_inodes", "misc", "events"};
// Removes the pinned maps and the directory of connection `id` (what a
// killed daemon could not); false if the directory stays (or was not there).
bool RemovePinned(unsigned connection_id);

// The kernel's dev_t (MKDEV) for a user-space st_dev.
uint32_t KernelDev(dev_t dev);

// Sums of the per-CPU "stats", indexed by opcode slot.
using OpStatsTable = std::array<efuse_op_stats, EFUSE_OPCODE_SLOTS>;

// Latency at quantile q (0..1) from a log2 histogram, interpolated linearly
// inside the bucket holding it (ns); 0 if empty. Never above `observed_max`
// when that is given (> 0): a line across a bucket can pass the largest
// value actually seen (a p99 of 249.6 us against a max of 219.1 us).
uint64_t HistogramQuantile(const __u64 (&hist)[EFUSE_LATENCY_BUCKETS], double q,
                           uint64_t observed_max = 0);

// File descriptors of one daemon's maps (owned; closed on destruction).
class TelemetryMaps {
 public:
  // From the pinned maps of connection `id`.
  static absl::StatusOr<TelemetryMaps> OpenPinned(unsigned connection_id);
  // From fds the caller owns (the loader); not closed by this object.
  static TelemetryMaps Borrow(int config_fd, int stats_fd, int hot_fd, int misc_fd, int events_fd);

  TelemetryMaps(TelemetryMaps&& other) noexcept;
  TelemetryMaps& operator=(TelemetryMaps&& other) noexcept;
  TelemetryMaps(const TelemetryMaps&) = delete;
  ~TelemetryMaps();

  absl::StatusOr<OpStatsTable> ReadStats() const;
  absl::StatusOr<efuse_misc> ReadMisc() const;
  absl::StatusOr<efuse_config> ReadConfig() const;
  absl::Status WriteConfig(const efuse_config& config) const;
  // Rows whose last_seen_ns >= since_ns.
  absl::Status ReadHotInodes(uint64_t since_ns, std::vector<HotInode>* out) const;
  int events_fd() const { return events_fd_; }

 private:
  TelemetryMaps() = default;
  void Close();

  bool owned_ = false;
  int config_fd_ = -1, stats_fd_ = -1, hot_fd_ = -1, misc_fd_ = -1, events_fd_ = -1;
};

}  // namespace efuse::bpf

#endif  // EFUSE_BPF_TELEMETRY_MAPS_H_
