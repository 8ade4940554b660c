// core/supervisor.h — the process that keeps a mount's connection alive
// while the servers behind it come and go.
//
// Owns: mounting (the /dev/fuse fd), the state region (core/state_region.h)
// and any other descriptor a server must find again (memfs's private tmpfs),
// for the life of the mount; starting a server process with them (each an
// exec of the server's command line, the descriptors passed as
// LISTEN_FDS/LISTEN_FDNAMES, as systemd passes its fd store), forwarding
// signals to it, and starting a successor when a server ends in any way
// but a clean stop (exit 0: unmounted). A server that dies before INIT was
// answered, or whose backend cannot be rebuilt, ends the mount instead
// (aborted and unmounted: no dead mount stays behind). Single-threaded; run
// from main before any thread exists.
#ifndef EFUSE_CORE_SUPERVISOR_H_
#define EFUSE_CORE_SUPERVISOR_H_

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "core/mount.h"

namespace efuse {

struct SupervisorOptions {
  MountOptions mount;
  // The server's command line; argv[0] is the binary to exec.
  std::vector<std::string> server_argv;
  // Descriptors passed to every server besides "fuse" and "state", by name
  // (e.g. {"source", fd of memfs's private tmpfs}); the supervisor owns them.
  std::vector<std::pair<std::string, int>> fds;
  // Servers that die before serving, within `restart_window`, past which
  // it gives up (one that cannot start would be restarted forever).
  int max_restarts = 5;
  // Clones of the connection's fd made for the servers' workers, held here
  // so that requests a dead server had read stay resendable (see
  // UseInheritedClones in core/sync_transport.h).
  int worker_clones = 0;
  std::chrono::seconds restart_window{10};
  // How long a server asked to retire (SIGUSR2) may take to drain.
  std::chrono::seconds retire_timeout{10};
};

// Runs until the mount ends; returns efused's exit code (0: a clean stop;
// a server's own code or 128+signal when the mount could not be kept).
int Supervise(const SupervisorOptions& options);

// The names of inherited descriptors (LISTEN_FDNAMES) a server looks for.
inline constexpr char kFuseFdName[] = "fuse";
inline constexpr char kStateFdName[] = "state";
inline constexpr char kSourceFdName[] = "source";
inline constexpr char kWorkerFdName[] = "fuse-worker";
// The mount point, resolved, for the servers (which must not stat it).
inline constexpr char kMountpointEnv[] = "EFUSE_MOUNTPOINT";

}  // namespace efuse

#endif  // EFUSE_CORE_SUPERVISOR_H_
