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
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/mount.h"
#include "core/state_region.h"

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
  // How long a planned successor may take to load (its journal replay
  // included) and a server asked to retire (SIGUSR2) to drain.
  std::chrono::seconds retire_timeout{30};
  // A standby server waits, loaded and reading the journal as it grows, to
  // take over at once when the server dies (it costs a second process's
  // memory for the node tables).
  bool standby = true;
  // Quiets a server's BPF programs through a copy of their config map's fd
  // (true if done). The supervisor holds copies of a serving server's
  // program links, so that its death does not wait for the kernel to
  // detach them (tens of ms that fell between two servers); once it is
  // gone its programs are quieted at once and unlinked after the successor
  // is told to go. Null: no copies are held.
  std::function<bool(int config_map_fd)> quiet_programs;
};

// What successor servers need, made once at mount time: the mounted
// connection's fd, the state region, one /dev/fuse clone per worker, and
// the extra descriptors, all by their LISTEN_FDNAMES names (`fds`, "fuse"
// first). Held by the supervisor, or by systemd's fd store.
struct HeldConnection {
  std::unique_ptr<StateRegion> state;
  int fuse_fd = -1;
  std::vector<std::pair<std::string, int>> fds;
  std::string method;  // how it was mounted
};
absl::StatusOr<HeldConnection> MountForServers(const MountOptions& mount,
                                               const std::vector<std::pair<std::string, int>>& extra_fds,
                                               int worker_clones);

// Puts `fds` into the service manager's fd store ($NOTIFY_SOCKET,
// FDSTORE=1 with FDNAME= per name, FDPOLL=0: a memfd or a directory is
// not pollable), from where the next start of the service gets them as
// LISTEN_FDS. The manager drops what it cannot keep (FileDescriptorStoreMax=
// too small) with a line in its own log only.
absl::Status StoreForSuccessors(const std::vector<std::pair<std::string, int>>& fds);
// Takes them out again (FDSTOREREMOVE=1 per name): the mount ended, and a
// next start must mount anew. Nothing to do without a service manager.
void DropStoredForSuccessors();

// Runs until the mount ends; returns efused's exit code (0: a clean stop;
// a server's own code or 128+signal when the mount could not be kept).
int Supervise(const SupervisorOptions& options);

// The connection ended (aborted, or unmounted with nothing open): the
// kernel reports an error on the device.
bool ConnectionEnded(int fuse_fd);
// Ends a mount that can no longer be served: the connection is aborted (so
// nothing waits on it) and, if it is still mounted there, unmounted.
void AbortAndUnmount(dev_t dev, const std::string& mountpoint);

// The names of inherited descriptors (LISTEN_FDNAMES) a server looks for.
inline constexpr char kFuseFdName[] = "fuse";
inline constexpr char kStateFdName[] = "state";
inline constexpr char kSourceFdName[] = "source";
inline constexpr char kWorkerFdName[] = "fuse-worker";
// A planned successor's end of a socket to its supervisor: it writes 'R'
// when loaded and waits for 'G' (its predecessor retired) to take over.
inline constexpr char kGateFdName[] = "gate";
// The mount point, resolved, for the servers (which must not stat it).
inline constexpr char kMountpointEnv[] = "EFUSE_MOUNTPOINT";

}  // namespace efuse

#endif  // EFUSE_CORE_SUPERVISOR_H_
