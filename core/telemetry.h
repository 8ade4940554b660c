// core/telemetry.h — what the engine needs from kernel-side request telemetry.
//
// Owns: the interface between a session (and its offload policy) and the
// telemetry that watches the mount's requests in the kernel. bpf/ implements
// it with BPF programs on the FUSE tracepoints; the engine does not depend on
// libbpf. Layouts of what is read (hot-inode classes) come from
// bpf/telemetry_abi.h, shared by both sides.
#ifndef EFUSE_CORE_TELEMETRY_H_
#define EFUSE_CORE_TELEMETRY_H_

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "bpf/telemetry_abi.h"

namespace efuse {

// One row of the kernel's hot-inode table: requests that ended per opcode
// class (EFUSE_HOT_*) for this node id since it entered the table.
struct HotInode {
  uint64_t nodeid = 0;
  std::array<uint32_t, EFUSE_HOT_CLASSES> counts{};
  uint64_t last_seen_ns = 0;  // CLOCK_MONOTONIC
};

class Telemetry {
 public:
  virtual ~Telemetry() = default;
  // Starts counting the requests of the mount whose device is `dev` (the
  // st_dev of its mount point); `connection_id` names it for the tools.
  // Called by the session after mounting, before INIT is answered.
  virtual absl::Status Attach(dev_t dev, unsigned connection_id) = 0;
  // Stops counting and removes what Attach published. Idempotent.
  virtual void Detach() = 0;
  // Unlinks the programs from the kernel, keeping the maps for a successor
  // (a retiring server: the kernel waits out a grace period per program,
  // tens of ms that must not fall between two servers). Idempotent.
  virtual void ReleasePrograms() {}
  // The programs' link fds and their config map's fd (empty, -1: none).
  virtual std::vector<int> ProgramLinkFds() const { return {}; }
  virtual int ConfigMapFd() const { return -1; }
  // The rows seen since `since_ns` (CLOCK_MONOTONIC; 0: all). Called by the
  // offload policy's thread only.
  virtual absl::Status ReadHotInodes(uint64_t since_ns, std::vector<HotInode>* out) = 0;
  // "key: value" lines for the status file.
  virtual void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const = 0;
};

}  // namespace efuse

#endif  // EFUSE_CORE_TELEMETRY_H_
