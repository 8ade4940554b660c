// efusectl — inspect and recover efuse mounts.
//
//   efusectl status          list efuse mounts and whether their daemon is alive
//   efusectl umount MNT      unmount (lazily if busy); also clears the dead
//                            mount a killed daemon leaves ("Transport endpoint
//                            is not connected")
//   efusectl stats [MNT]     per-opcode counts, rates, latency percentiles
//   efusectl top [MNT]       live view of hot opcodes and inodes
//   efusectl trace [MNT]     stream of sampled requests
//   efusectl metrics [MNT]   Prometheus text format (node_exporter textfile collector)
// stats/top/trace read the BPF maps the daemon pinned (all mounts, or MNT).
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/mount.h"
#include "core/session.h"
#include "bpf/telemetry_maps.h"
#include "tools/efusectl/status_file.h"
#include "tools/efusectl/telemetry_view.h"

namespace {

using efuse::ctl::FreshStatusFile;
using efuse::ctl::ReadStatusFile;
using efuse::ctl::StatusValue;

struct MountInfo {
  std::string mountpoint, fstype, source;
  unsigned dev_major = 0, dev_minor = 0;
};

std::vector<MountInfo> EfuseMounts() {
  std::vector<MountInfo> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options ... - fstype source superopts
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    size_t dash = 0;
    for (size_t i = 6; i < f.size(); ++i)
      if (f[i] == "-") { dash = i; break; }
    if (dash == 0 || dash + 2 >= f.size()) continue;
    if (f[dash + 1].rfind("fuse.efuse", 0) != 0) continue;
    MountInfo m;
    m.mountpoint = f[4];
    m.fstype = f[dash + 1];
    m.source = f[dash + 2];
    std::sscanf(f[2].c_str(), "%u:%u", &m.dev_major, &m.dev_minor);
    out.push_back(m);
  }
  return out;
}

int Status() {
  std::vector<MountInfo> mounts = EfuseMounts();
  if (mounts.empty()) {
    std::printf("no efuse mounts\n");
    return 0;
  }
  for (const MountInfo& m : mounts) {
    // Liveness comes from the daemon's pid, never from stat() on the mount:
    // a stopped daemon would hang it, and a killed one may still be hidden
    // behind the kernel's attribute cache.
    // Live counters: the status file rewritten first.
    const std::vector<std::string> lines = FreshStatusFile(m.dev_minor);
    const long pid = StatusValue(lines, "pid");
    std::string state;
    if (pid <= 0) {
      state = "unknown (no status file: not an efused of this version, or it died at start)";
    } else if (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) {
      state = absl::StrCat("serving (pid ", pid, ")");
    } else {
      state = "dead (daemon gone; run: efusectl umount " + m.mountpoint + ")";
    }
    std::string waiting;
    std::ifstream w(absl::StrCat("/sys/fs/fuse/connections/", m.dev_minor, "/waiting"));
    if (w >> waiting) waiting = ", requests waiting: " + waiting;
    std::printf("%s  %s  source=%s  connection=%u%s  %s\n", m.mountpoint.c_str(), m.fstype.c_str(),
                m.source.c_str(), m.dev_minor, waiting.c_str(), state.c_str());
    for (const std::string& l : lines) std::printf("  %s\n", l.c_str());
  }
  return 0;
}

// What a daemon killed before its cleanup leaves of connection `id`: its
// status file and its pinned telemetry maps (frozen: their programs went
// with the process). Kept while that daemon still runs.
void RemoveLeftovers(unsigned id) {
  const long pid = StatusValue(ReadStatusFile(id), "pid");
  if (pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)) return;
  if (const std::string path = efuse::ctl::StatusFilePath(id); !path.empty()) unlink(path.c_str());
  if (efuse::bpf::RemovePinned(id))
    std::printf("removed %s (telemetry of the dead daemon)\n", efuse::bpf::PinDir(id).c_str());
}

// `path` as /proc/self/mountinfo names mount points (as given if it cannot
// be resolved).
std::string Resolved(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) != nullptr ? std::string(buf) : path;
}

int Umount(const std::string& mp) {
  const std::string resolved = Resolved(mp);
  std::optional<unsigned> id;
  for (const MountInfo& m : EfuseMounts())
    if (m.mountpoint == resolved) id = m.dev_minor;
  bool lazy = false;
  absl::Status s = efuse::UnmountFuse(mp, &lazy);
  if (!s.ok()) {
    std::fprintf(stderr, "efusectl: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("unmounted %s%s\n", mp.c_str(), lazy ? " (lazily: it was busy)" : "");
  if (id) RemoveLeftovers(*id);
  return 0;
}

// A supervised mount's server replaced by a new one (the same binary, or
// --binary=PATH: an upgrade). The successor takes the connection over as
// after a crash (core/supervisor.h); the command line (and --config file)
// is the running one's.
int Restart(const std::string& mp, const std::string& binary) {
  const std::string resolved = Resolved(mp);
  std::optional<unsigned> id;
  for (const MountInfo& m : EfuseMounts())
    if (m.mountpoint == resolved) id = m.dev_minor;
  if (!id) {
    std::fprintf(stderr, "efusectl restart: '%s' is not an efuse mount\n", mp.c_str());
    return 2;
  }
  const std::vector<std::string> lines = efuse::ctl::FreshStatusFile(*id);
  const long generation = StatusValue(lines, "server_generation");
  if (generation <= 0) {
    std::fprintf(stderr, "efusectl restart: %s is not supervised (efused --supervise=off, or --transport=uring)\n", mp.c_str());
    return 1;
  }
  if (efuse::ctl::StatusText(lines, "connection_held_by").starts_with("service manager")) {
    // Its server is the service's main process: the service manager
    // starts the successor (with RestartKillSignal=SIGUSR2 it retires).
    std::fprintf(stderr, "efusectl restart: %s is kept by its service's fd store: use systemctl restart\n",
                 mp.c_str());
    return 1;
  }
  const std::string request = efuse::ctl::RestartRequestPath(*id);
  if (!binary.empty()) {
    // The successor reads what the server left: a build of another layout
    // could not, so it is refused here rather than found out there.
    char resolved_binary[PATH_MAX];
    if (realpath(binary.c_str(), resolved_binary) == nullptr || access(resolved_binary, X_OK) != 0) {
      std::fprintf(stderr, "efusectl restart: --binary '%s' is not an executable file\n", binary.c_str());
      return 2;
    }
    std::string out;
    if (FILE* p = popen((std::string("'") + resolved_binary + "' --state_layout 2>/dev/null").c_str(), "r")) {
      char buf[64];
      while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
      pclose(p);
    }
    const long want = StatusValue(lines, "state_layout");
    if (std::strtol(out.c_str(), nullptr, 10) != want || want == 0) {
      std::fprintf(stderr,
                   "efusectl restart: '%s' reads state layout '%s', the running server wrote layout %ld: a restart "
                   "into it would lose the mount\n",
                   binary.c_str(), std::string(absl::StripAsciiWhitespace(out)).c_str(), want);
      return 1;
    }
    std::ofstream(request) << resolved_binary << "\n";
  } else {
    unlink(request.c_str());
  }
  const std::string called_off = request + "-result";  // the supervisor's, if it calls the restart off
  unlink(called_off.c_str());
  if (!efuse::ctl::SignalDaemon(*id, SIGUSR2)) {
    std::fprintf(stderr, "efusectl restart: no supervisor of %s answers (is it running?)\n", mp.c_str());
    return 1;
  }
  // The supervisor's word that the restart was called off, or went back
  // to the last server (written before any server that follows serves).
  auto called_off_why = [&]() -> std::optional<std::string> {
    std::ifstream result(called_off);
    if (!result) return std::nullopt;
    std::string why;
    std::getline(result, why);
    unlink(called_off.c_str());
    return why;
  };
  // A new server counts once it serves: one that took the generation and
  // died before it served is followed by the last one (supervisor.cc).
  // (A server of a build before serving_generation existed: its generation.)
  auto serving = [](const std::vector<std::string>& now) {
    return efuse::ctl::StatusText(now, "serving_generation").empty() ? StatusValue(now, "server_generation")
                                                                     : StatusValue(now, "serving_generation");
  };
  for (int i = 0; i < 6000; ++i) {  // up to 60 s: the new server loads (30 s at most), the old one drains
    const std::vector<std::string> now = efuse::ctl::ReadStatusFile(*id);
    // (Looked for after the status was read: a server that went back wrote
    // it before whatever serves now.)
    if (std::optional<std::string> why = called_off_why()) {
      std::fprintf(stderr, "efusectl restart: %s: %s\n", mp.c_str(), why->c_str());
      return 1;
    }
    if (serving(now) > generation) {
      std::printf("restarted %s: server generation %ld, pid %ld\n", mp.c_str(), StatusValue(now, "server_generation"),
                  StatusValue(now, "server_pid"));
      // Options changed in its --config file that only a new mount can change.
      if (const std::string refused = efuse::ctl::StatusText(now, "restart_refused");
          !refused.empty() && refused != "none") {
        std::fprintf(stderr, "efusectl restart: refused, only a new mount can change them: %s\n", refused.c_str());
        return 1;
      }
      return 0;
    }
    usleep(10000);
  }
  std::fprintf(stderr, "efusectl restart: no new server of %s within 60 s (see its log)\n", mp.c_str());
  return 1;
}

void Usage() {
  std::fprintf(stderr,
               "usage: efusectl status\n"
               "       efusectl umount MOUNTPOINT\n"
               "       efusectl restart MOUNTPOINT [--binary=PATH]   (a supervised mount: a new server takes over)\n"
               "       efusectl stats [MOUNTPOINT] [--interval=SECONDS]\n"
               "       efusectl top [MOUNTPOINT] [--interval=SECONDS] [--iterations=N] [--count=ROWS]\n"
               "       efusectl trace [MOUNTPOINT] [--sample=N] [--count=EVENTS] [--duration=SECONDS]\n"
               "       efusectl metrics [MOUNTPOINT] [--output=FILE]   (Prometheus text format)\n");
}

// stats/top/trace: the mounts to show (MOUNTPOINT, or every efuse mount) and
// the options; exit code 2 on a bad mount point.
int TelemetryCommand(const std::string& cmd, int argc, char** argv) {
  std::vector<std::string> options;
  std::string wanted;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      options.push_back(a);
    } else if (wanted.empty()) {
      wanted = a;
    } else {
      std::fprintf(stderr, "efusectl %s: one mount point at most ('%s')\n", cmd.c_str(), a.c_str());
      return 2;
    }
  }
  std::vector<efuse::ctl::Target> targets;
  const std::string resolved = wanted.empty() ? "" : Resolved(wanted);
  for (const MountInfo& m : EfuseMounts())
    if (wanted.empty() || m.mountpoint == resolved) targets.push_back({m.dev_minor, m.mountpoint});
  if (targets.empty()) {
    std::fprintf(stderr, "efusectl %s: %s\n", cmd.c_str(),
                 wanted.empty() ? "no efuse mounts" : ("'" + wanted + "' is not an efuse mount").c_str());
    return wanted.empty() ? 1 : 2;
  }
  if (cmd == "stats") return efuse::ctl::StatsCommand(targets, options);
  if (cmd == "top") return efuse::ctl::TopCommand(targets, options);
  if (cmd == "metrics") return efuse::ctl::MetricsCommand(targets, options);
  return efuse::ctl::TraceCommand(targets, options);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage();
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "status" && argc == 2) return Status();
  if (cmd == "umount" && argc == 3) return Umount(argv[2]);
  if (cmd == "restart" && (argc == 3 || (argc == 4 && std::string(argv[3]).rfind("--binary=", 0) == 0))) {
    return Restart(argv[2], argc == 4 ? std::string(argv[3]).substr(9) : "");
  }
  if (cmd == "stats" || cmd == "top" || cmd == "trace" || cmd == "metrics") {
    return TelemetryCommand(cmd, argc, argv);
  }
  std::fprintf(stderr, "efusectl: unknown command or arguments: '%s'\n", cmd.c_str());
  Usage();
  return 2;
}
