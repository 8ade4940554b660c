// efused — the efuse daemon: mounts a file system and serves it until
// unmounted or signalled (SIGTERM/SIGINT: unmount and exit 0).
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "bpf/probe.h"
#include "bpf/telemetry.h"
#include "bpf/telemetry_maps.h"
#include "tools/efusectl/metrics.h"
#include "core/log.h"
#include "core/service_notify.h"
#include "core/state_region.h"
#include "core/supervisor.h"
#include "core/test_faults.h"
#include "core/sync_transport.h"
#include "uring/ring.h"
#include "tools/efused/cli.h"
#include "tools/efused/options.h"

namespace {

// The niceness of a gated server while it loads (see main).
constexpr int kLoadingNice = 10;

// --help, --version and --config=FILE act before the command line is
// parsed: the first two instead of it, the config file under it.
std::optional<int> EarlyOptions(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") break;
    if (a == "--help" || a == "-h" || a == "-help") {
      std::fputs(efuse::HelpText().c_str(), stdout);
      return 0;
    }
    if (a == "--man") {
      std::fputs(efuse::ManPage().c_str(), stdout);
      return 0;
    }
    if (a == "--state_layout") {
      // What efusectl restart --binary checks: a successor reads the
      // state region of this layout only.
      std::printf("%u\n", efuse::StateRegion::kStateLayout);
      return 0;
    }
    if (a == "--version" || a == "-V") {
      std::printf("%s\n", efuse::VersionText().c_str());
      return 0;
    }
    std::string path;
    if (a.starts_with("--config=")) {
      path = std::string(a.substr(9));
    } else if (a == "--config" && i + 1 < argc) {
      path = argv[i + 1];
    } else {
      continue;
    }
    if (absl::Status s = efuse::ApplyConfigFile(path); !s.ok()) {
      std::fprintf(stderr, "efused: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("efused [options] MOUNTPOINT (efused --help lists the options)");
  if (std::optional<int> done = EarlyOptions(argc, argv)) return *done;
  // Stop, retire and status signals wait (the session and the supervisor
  // take them from a signalfd): one that comes while efused starts must not
  // kill it between mounting and handing the mount to its keeper.
  sigset_t held_signals;
  sigemptyset(&held_signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&held_signals, sig);
  sigprocmask(SIG_BLOCK, &held_signals, nullptr);
  const std::vector<std::string> command_line(argv, argv + argc);
  // A supervisor's (or a service manager's) descriptors: this process is a
  // server of a connection that is mounted already.
  int inherited_fuse = -1, inherited_state = -1, inherited_storage = -1, gate = -1;
  std::vector<int> worker_clones;
  for (const auto& [name, fd] : efuse::TakeListenFds()) {
    if (name == efuse::kFuseFdName) inherited_fuse = fd;
    else if (name == efuse::kStateFdName) inherited_state = fd;
    else if (name == efuse::kSourceFdName) inherited_storage = fd;
    else if (name == efuse::kWorkerFdName) worker_clones.push_back(fd);
    else if (name == efuse::kGateFdName) gate = fd;
    else close(fd);
  }
  // A gated server (a standby, a planned successor) loads while another
  // serves: on a busy machine its loading (BPF verification above all)
  // must not take CPU from the clients. Niced (the threads it starts
  // meanwhile inherit it) until the supervisor, which may lower it again
  // (root), tells it to take over.
  if (gate >= 0 && geteuid() == 0) setpriority(PRIO_PROCESS, 0, kLoadingNice);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  // Debian's abseil is built with mutex deadlock detection on: a graph
  // update on every lock, visible in request latency. Our lock order is
  // fixed by design; the tests run with detection on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // A supervisor names the mount point; a service manager's fd store does
  // not, so it comes from the state region (a stat of the mount point
  // would wait for this very process to answer).
  const bool from_supervisor = std::getenv(efuse::kMountpointEnv) != nullptr;
  std::string mounted_at = from_supervisor ? std::getenv(efuse::kMountpointEnv) : "";
  unsetenv(efuse::kMountpointEnv);
  std::unique_ptr<efuse::StateRegion> state;
  if (inherited_fuse >= 0 && inherited_state >= 0) {
    absl::StatusOr<std::unique_ptr<efuse::StateRegion>> adopted = efuse::StateRegion::Adopt(inherited_state);
    if (!adopted.ok()) {
      std::fprintf(stderr, "efused: %s\n", std::string(adopted.status().message()).c_str());
      return 1;
    }
    state = std::move(*adopted);
    if (mounted_at.empty()) {
      const efuse::StateHeader& h = state->header();
      mounted_at.assign(h.mountpoint, strnlen(h.mountpoint, sizeof(h.mountpoint)));
    }
  }
  if (inherited_fuse >= 0 && !from_supervisor && efuse::ConnectionEnded(inherited_fuse)) {
    // An fd store's leftovers of a mount that ended (unmounted, aborted):
    // dropped there too, and this start mounts anew.
    efuse::Log(efuse::LogLevel::kWarning, "the fd store held a connection that has ended: mounting anew");
    efuse::DropStoredForSuccessors();
    state.reset();
    close(inherited_fuse);
    if (inherited_storage >= 0) close(inherited_storage);
    for (int fd : worker_clones) close(fd);
    inherited_fuse = inherited_storage = -1;
    worker_clones.clear();
    mounted_at.clear();
  }
  if (state != nullptr && !from_supervisor && state->header().initialized.load() == 0) {
    // Under an fd store: the first server died before INIT was answered,
    // and no INIT comes again. The mount cannot be served; the next start
    // mounts anew.
    efuse::Log(efuse::LogLevel::kError, "the last server died before INIT was answered: unmounting %s", mounted_at);
    efuse::AbortAndUnmount(static_cast<dev_t>(state->header().device), mounted_at);
    efuse::DropStoredForSuccessors();
    return 1;
  }
  const std::string recorded_fixed =
      state != nullptr ? std::string(state->header().fixed_options,
                                     strnlen(state->header().fixed_options, sizeof(state->header().fixed_options)))
                       : "";
  absl::StatusOr<efuse::DaemonConfig> config = efuse::BuildConfig(positional, mounted_at);
  std::vector<std::string> refused;  // options a restart asked to change and cannot
  if (!config.ok() && !recorded_fixed.empty()) {
    // A successor whose new options do not even build (a source that is
    // gone, a file system misnamed): if only those a new mount could
    // change are wrong, it serves with the mount's.
    refused = efuse::KeepFixedOptions(recorded_fixed);
    if (!refused.empty()) config = efuse::BuildConfig(positional, mounted_at);
  }
  if (!config.ok()) {
    std::fprintf(stderr, "efused: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  if (refused.empty() && !recorded_fixed.empty()) {
    refused = efuse::KeepFixedOptions(recorded_fixed);
    if (!refused.empty()) {
      config = efuse::BuildConfig(positional, mounted_at);
      if (!config.ok()) {
        std::fprintf(stderr, "efused: %s\n", std::string(config.status().message()).c_str());
        return 2;
      }
    }
  }
  for (const std::string& r : refused) {
    efuse::Log(efuse::LogLevel::kError, "restart: %s refused: only a new mount can change it; serving as before", r);
  }
  if (config->supervise && inherited_fuse < 0) {
    const int clones = std::max(efuse::PossibleCpuCount(), config->session.workers) + 1;
    std::vector<std::pair<std::string, int>> extra_fds;
    if (config->fs == "memfs") {
      absl::StatusOr<int> storage = efuse::MakeMemfsStorage(*config);
      if (!storage.ok()) {
        std::fprintf(stderr, "efused: %s\n", std::string(storage.status().message()).c_str());
        return 2;
      }
      extra_fds.emplace_back(efuse::kSourceFdName, *storage);
    }
    if (config->transport == "auto") {
      efuse::Log(efuse::LogLevel::kInfo,
                 "supervised: servers read /dev/fuse (uring-dev), not FUSE-over-io_uring queues, which this "
                 "kernel cannot hand to a successor");
    }
    if (!config->fd_store) {
      // The supervisor: mounts, keeps what must outlive a server, and runs
      // servers (this binary again, with the same command line).
      efuse::SupervisorOptions so;
      so.mount = config->session.mount;
      so.server_argv = command_line;
      // This binary by its path (the servers' name is efused, as ps and
      // efusectl expect), or, if it was replaced since, the one running.
      char self[PATH_MAX];
      const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
      const std::string path = n > 0 ? std::string(self, static_cast<size_t>(n)) : "";
      so.server_argv[0] = !path.empty() && access(path.c_str(), X_OK) == 0 ? path : "/proc/self/exe";
      so.worker_clones = clones;
      so.fds = std::move(extra_fds);
      so.quiet_programs = efuse::bpf::KernelTelemetry::QuietPrograms;
      return efuse::Supervise(so);
    }
    // Under systemd: this process mounts, puts what a successor needs into
    // the service's fd store, and serves as the first server.
    absl::StatusOr<efuse::HeldConnection> held = efuse::MountForServers(config->session.mount, extra_fds, clones);
    if (!held.ok()) {
      std::fprintf(stderr, "efused: %s\n", std::string(held.status().message()).c_str());
      return 1;
    }
    efuse::Log(efuse::LogLevel::kInfo, "mounted %s at %s with %s; the service's fd store keeps the connection",
               config->session.mount.fsname, config->session.mount.mountpoint, held->method);
    if (absl::Status ss = efuse::StoreForSuccessors(held->fds); !ss.ok()) {
      efuse::Log(efuse::LogLevel::kError, "%s; unmounting", std::string(ss.message()));
      efuse::AbortAndUnmount(static_cast<dev_t>(held->state->header().device), config->session.mount.mountpoint);
      return 1;
    }
    for (const auto& [name, fd] : held->fds) {
      if (name == efuse::kSourceFdName) inherited_storage = fd;
      if (name == efuse::kWorkerFdName) worker_clones.push_back(fd);
    }
    inherited_fuse = held->fuse_fd;
    state = std::move(held->state);
  }
  if (inherited_fuse >= 0) {
    if (gate < 0 && !from_supervisor && state != nullptr && state->header().initialized.load() != 0 &&
        state->header().recoverable.load() == 0) {
      // A supervisor checks this before it lets a server take over (and a
      // standby waiting at its gate must not touch the mount); under an fd
      // store the successor finds it out.
      efuse::Log(efuse::LogLevel::kError,
                 "the last server's file system cannot be rebuilt (its journal is incomplete): "
                 "unmounting %s", mounted_at);
      efuse::AbortAndUnmount(static_cast<dev_t>(state->header().device), mounted_at);
      return 1;
    }
    config->session.inherited_fd = inherited_fuse;
    config->session.state = state.get();
    config->memfs_storage_fd = inherited_storage;
    config->passthrough.state = state.get();
    efuse::UseInheritedClones(std::move(worker_clones));
    // What a successor can rebuild: the passthrough engine's nodes and
    // handles (from its journal in the region and the source), memfs's
    // from its journal and the data memfd the supervisor keeps (each says
    // no when it cannot journal). A file system of a library's own is not.
    if (state != nullptr && state->header().initialized.load() == 0) {
      state->header().recoverable.store(config->fs == "passthrough" || config->fs == "memfs" ? 1 : 0);
    }
    if (state != nullptr && state->header().fixed_options[0] == '\0') {
      // What the successors must keep (one that cannot be recorded is not
      // checked: a restart then serves what its own command line says).
      const std::string fixed = efuse::FixedOptionValues();
      if (fixed.size() < sizeof(state->header().fixed_options)) {
        std::memcpy(state->header().fixed_options, fixed.c_str(), fixed.size() + 1);
      } else {
        efuse::Log(efuse::LogLevel::kWarning, "restart: the mount's options are too long to record; a restart "
                   "will not check them");
      }
    }
    config->session.status_lines.emplace_back("restart_refused", refused.empty() ? "none" : absl::StrJoin(refused, "; "));
  }
  // --transport=uring asks for the FUSE ring: switch it on if we may.
  efuse::uring::UringSupport uring = efuse::uring::ProbeUring();
  if (config->transport == "uring" && uring.fuse_ring_known && !uring.fuse_ring_enabled &&
      geteuid() == 0) {
    absl::Status es = efuse::uring::EnableFuseRing();
    if (es.ok()) {
      efuse::Log(efuse::LogLevel::kInfo,
                 "--transport=uring: turned FUSE-over-io_uring on "
                 "(/sys/module/fuse/parameters/enable_uring = Y)");
      uring = efuse::uring::ProbeUring();
    } else {
      efuse::Log(efuse::LogLevel::kWarning, "--transport=uring: cannot turn FUSE-over-io_uring on: %s",
                 std::string(es.message()));
    }
  }
  // Say once what the kernel offers.
  efuse::bpf::BpfSupport bpf = efuse::bpf::ProbeBpf();
  std::string uring_line =
      uring.io_uring ? "available" : "unavailable (" + uring.io_uring_error + ")";
  std::string ring_line = !uring.fuse_ring_known     ? "not in this kernel"
                          : uring.fuse_ring_enabled ? "enabled"
                                                    : "off (enable_uring=N)";
  std::string bpf_line = bpf.Usable() ? "kernel BTF has the FUSE tracepoints"
                                      : "unusable (" + (bpf.error.empty() ? std::string("FUSE tracepoints missing from BTF") : bpf.error) + ")";
  efuse::Log(efuse::LogLevel::kInfo, "kernel features: io_uring %s; FUSE-over-io_uring %s; BPF %s",
             uring_line, ring_line, bpf_line);
  config->session.status_lines.insert(config->session.status_lines.begin(), {
      {"io_uring", uring_line},
      {"fuse_over_io_uring", ring_line},
      {"bpf", bpf_line},
  });
  // Telemetry: loaded now, pointed at the mount by the session.
  std::unique_ptr<efuse::bpf::KernelTelemetry> telemetry;
  if (config->telemetry != "off") {
    efuse::bpf::TelemetryOptions topts;
    topts.sample_every = config->trace_sample;
    topts.time_every = config->time_every;
    topts.attach_on_load = gate < 0;  // a standby's wait until it takes over
    if (state != nullptr && state->header().initialized.load() != 0) {
      topts.carry_on_connection = static_cast<int>(minor(static_cast<dev_t>(state->header().device)));
    }
    absl::StatusOr<std::unique_ptr<efuse::bpf::KernelTelemetry>> loaded =
        efuse::bpf::KernelTelemetry::Load(topts);
    if (!loaded.ok() && topts.carry_on_connection >= 0) {
      // The last server's maps do not fit these programs (another build):
      // counting starts again.
      efuse::Log(efuse::LogLevel::kWarning, "telemetry: the last server's counters could not be taken over (%s)",
                 std::string(loaded.status().message()));
      topts.carry_on_connection = -1;
      loaded = efuse::bpf::KernelTelemetry::Load(topts);
    }
    if (loaded.ok()) {
      telemetry = std::move(*loaded);
      efuse::Log(efuse::LogLevel::kInfo, "telemetry: BPF programs %s tp_btf/fuse_request_send and _end%s",
                 topts.attach_on_load ? "attached to" : "loaded, to be attached at takeover to",
                 config->session.offload ? "; offload policy on" : "; offload policy off (--offload=off)");
    } else if (config->telemetry == "on") {
      std::fprintf(stderr, "efused: --telemetry=on: %s\n", std::string(loaded.status().message()).c_str());
      return 1;
    } else {
      const std::string why(loaded.status().message());
      efuse::Log(efuse::LogLevel::kWarning, "telemetry off: %s; serving without it (no offload policy)", why);
      config->session.status_lines.emplace_back("telemetry", "off (" + why + ")");
    }
  } else {
    config->session.status_lines.emplace_back("telemetry", "off (--telemetry=off)");
  }
  config->session.telemetry = telemetry.get();
  // The backend, rebuilt from the journal on a takeover (a planned
  // successor reads the journal now, and what its predecessor adds until it
  // retires when the connection is adopted).
  absl::StatusOr<std::unique_ptr<efuse::FileSystem>> fs = efuse::MakeFileSystem(*config);
  if (!fs.ok()) {
    std::fprintf(stderr, "efused: %s\n", std::string(fs.status().message()).c_str());
    return 2;
  }
  if (gate >= 0) {
    // A planned successor, started while its predecessor still serves:
    // ready (loaded), then it waits for the supervisor's go, given once the
    // predecessor has retired. EOF: the upgrade was called off.
    // As a standby it may wait long: it follows the journal meanwhile.
    char c = 'R';
    // (A supervisor that already said go, and closed its end, is no
    // reason to die of SIGPIPE: its 'G' is there to read.)
    bool go = send(gate, &c, 1, MSG_NOSIGNAL) == 1 || errno == EPIPE;
    while (go) {
      pollfd p{gate, POLLIN, 0};
      const int ready = poll(&p, 1, 1000);
      if (ready == 0) {
        (*fs)->FollowJournal();
        continue;
      }
      if (ready < 0 && errno == EINTR) continue;
      go = ready > 0 && read(gate, &c, 1) == 1 && c == 'G';
      break;
    }
    if (!go) {
      efuse::Log(efuse::LogLevel::kInfo, "restart called off before this server took over");
      return 1;
    }
    close(gate);
    if (efuse::TestFault("crash_after_go")) {
      efuse::Log(efuse::LogLevel::kWarning, "test fault crash_after_go: dying as this server takes over");
      raise(SIGKILL);
    }
  }
  if (!config->metrics_file.empty()) {
    // The same text `efusectl metrics` prints, from the pinned maps and the
    // status lines, rewritten every --metrics_interval and at the end.
    config->session.report_every = std::chrono::seconds(config->metrics_interval);
    config->session.report = [path = config->metrics_file](
                                 unsigned connection_id,
                                 const std::vector<std::pair<std::string, std::string>>& status) {
      efuse::ctl::MountFigures figures;
      for (const auto& [k, v] : status)
        if (k == "mountpoint") figures.mountpoint = v;
      figures.status = status;
      if (absl::StatusOr<efuse::bpf::TelemetryMaps> maps = efuse::bpf::TelemetryMaps::OpenPinned(connection_id);
          maps.ok()) {
        if (absl::StatusOr<efuse::bpf::OpStatsTable> s = maps->ReadStats(); s.ok()) figures.telemetry = *s;
      }
      if (absl::Status ws = efuse::ctl::WriteMetricsFile(path, efuse::ctl::RenderMetrics({figures})); !ws.ok()) {
        efuse::Log(efuse::LogLevel::kWarning, "--metrics_file: %s", std::string(ws.message()));
      }
    };
  }
  efuse::Session session(fs->get(), config->session);
  absl::Status s = session.Run();
  if (s.ok() && config->fd_store) {
    // Unmounted: nothing for a next start to take over.
    efuse::DropStoredForSuccessors();
  }
  if (s.ok()) s = efuse::BackendResult(**fs);
  if (!s.ok()) {
    std::fprintf(stderr, "efused: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
