// bpf/telemetry.h — loads efuse's BPF programs and serves their maps.
//
// Owns: the life of the programs of bpf/telemetry.bpf.c in one daemon: open,
// load (CO-RE against the running kernel's BTF) and attach when the daemon
// starts; the connection filter and pinning under /sys/fs/bpf/efuse/<id>/
// when the session has mounted (Attach); unpinning and detaching on exit.
// Reading the maps is bpf/telemetry_maps.
#ifndef EFUSE_BPF_TELEMETRY_H_
#define EFUSE_BPF_TELEMETRY_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "bpf/telemetry_maps.h"
#include "core/telemetry.h"

struct efuse_telemetry;  // the generated skeleton

namespace efuse::bpf {

struct TelemetryOptions {
  // One event in the "events" ring buffer per this many requests (0: none
  // until `efusectl trace` asks).
  uint32_t sample_every = 0;
  // Time (latency histograms) 1 in this many requests of each opcode, a
  // power of 2; 1: every request. Counts are exact either way.
  uint32_t time_every = 1;
  // A successor server's: the counters this connection's last server
  // pinned (stats, hot inodes, misc) are taken over, not started again.
  int carry_on_connection = -1;
  // False for a standby: its programs are loaded but attached only when it
  // takes over (Attach). Attached, they would run on every request of
  // every FUSE mount while it waits, beside those of the server it stands
  // by for (measured: 5% of a supervised GETATTR loop).
  bool attach_on_load = true;
};

class KernelTelemetry final : public Telemetry {
 public:
  // Loads the programs and, unless options.attach_on_load is false,
  // attaches them. An error says why BPF cannot be used (not root, BTF
  // missing, program refused); the daemon runs on without.
  static absl::StatusOr<std::unique_ptr<KernelTelemetry>> Load(const TelemetryOptions& options);
  ~KernelTelemetry() override;

  // Attaches the programs if Load did not, then points them at `dev`.
  absl::Status Attach(dev_t dev, unsigned connection_id) override;
  void Detach() override;
  void ReleasePrograms() override;
  std::vector<int> ProgramLinkFds() const override;
  int ConfigMapFd() const override;
  absl::Status ReadHotInodes(uint64_t since_ns, std::vector<HotInode>* out) override;
  void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const override;

  const TelemetryMaps& maps() const { return maps_; }

  // Makes the programs behind a copy of their config map's fd count
  // nothing (a supervisor's, for a server that died). False on error.
  static bool QuietPrograms(int config_map_fd);

 private:
  KernelTelemetry(efuse_telemetry* skel, const TelemetryOptions& options);
  absl::Status Pin(unsigned connection_id);
  void Unpin();

  efuse_telemetry* skel_;
  const TelemetryOptions options_;
  TelemetryMaps maps_;
  mutable absl::Mutex mu_;
  std::optional<unsigned> pinned_ ABSL_GUARDED_BY(mu_);  // the connection whose maps we pinned
  bool attached_ = false;  // the programs' links exist (Load or Attach)
};

}  // namespace efuse::bpf

#endif  // EFUSE_BPF_TELEMETRY_H_
