// tools/efusectl/metrics.h — efuse's figures in the Prometheus text format.
//
// Owns: rendering what `efusectl metrics` prints (and a node_exporter
// textfile collector reads): per mount, the BPF per-opcode request and error
// counters and latency histograms (efuse_requests_total,
// efuse_request_errors_total, efuse_request_duration_seconds), the daemon's
// own request counters (efuse_daemon_requests_total) and every numeric line
// of its status file (efuse_daemon_status{key=...}), with an info series
// naming the file system and transport. Pure, but for WriteMetricsFile.
// Used by `efusectl metrics` and by efused --metrics_file.
//
// Thread-safety: none needed (pure functions).
#ifndef EFUSE_TOOLS_EFUSECTL_METRICS_H_
#define EFUSE_TOOLS_EFUSECTL_METRICS_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "bpf/telemetry_maps.h"

namespace efuse::ctl {

struct MountFigures {
  std::string mountpoint;
  std::optional<bpf::OpStatsTable> telemetry;  // absent: no BPF telemetry
  std::vector<std::pair<std::string, std::string>> status;  // the status file's lines
};

std::string RenderMetrics(const std::vector<MountFigures>& mounts);

// The one piece of I/O here: `text` into `path` whole or not at all (a
// temporary file renamed over it), so a collector never reads half a file.
absl::Status WriteMetricsFile(const std::string& path, const std::string& text);

}  // namespace efuse::ctl

#endif  // EFUSE_TOOLS_EFUSECTL_METRICS_H_
