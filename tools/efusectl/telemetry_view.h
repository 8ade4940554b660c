// tools/efusectl/telemetry_view.h — efusectl stats, top and trace.
//
// Owns: presenting what a running daemon's BPF programs count (the maps it
// pinned under /sys/fs/bpf/efuse/<id>/, read through bpf/telemetry_maps):
// per-opcode counts, rates and latency percentiles; a refreshing view of hot
// inodes and opcodes; the stream of sampled request events.
#ifndef EFUSE_TOOLS_EFUSECTL_TELEMETRY_VIEW_H_
#define EFUSE_TOOLS_EFUSECTL_TELEMETRY_VIEW_H_

#include <string>
#include <vector>

namespace efuse::ctl {

// A mount efusectl may show: its connection id and mount point.
struct Target {
  unsigned connection_id = 0;
  std::string mountpoint;
};

// Each takes the options after the command word (--interval=S, ...); the
// targets are the mounts chosen (one, or all efuse mounts). Exit codes: 0,
// 1 (nothing to read), 2 (bad option).
int StatsCommand(const std::vector<Target>& targets, const std::vector<std::string>& options);
int TopCommand(const std::vector<Target>& targets, const std::vector<std::string>& options);
int TraceCommand(const std::vector<Target>& targets, const std::vector<std::string>& options);
// The Prometheus text format (tools/efusectl/metrics.h) on stdout, or
// --output=FILE written whole (a node_exporter textfile collector's *.prom).
int MetricsCommand(const std::vector<Target>& targets, const std::vector<std::string>& options);

}  // namespace efuse::ctl

#endif  // EFUSE_TOOLS_EFUSECTL_TELEMETRY_VIEW_H_
