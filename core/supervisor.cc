#include "core/supervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/log.h"
#include "core/service_notify.h"
#include "core/state_region.h"
#include "core/status_file.h"
#include "core/sync_transport.h"

namespace efuse {
namespace {

using Clock = std::chrono::steady_clock;

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by ", strsignal(WTERMSIG(status)));
  return absl::StrCat("ended (status ", status, ")");
}

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// The binary a restart request names (efusectl restart --binary), if its
// file is there and owned by this process's user; the file is removed.
std::string TakeRestartRequest(uint64_t device) {
  absl::StatusOr<std::string> dir = StatusDirectoryForWriting();
  if (!dir.ok()) return "";
  const std::string path = absl::StrCat(*dir, "/", minor(static_cast<dev_t>(device)), ".restart");
  struct stat st;
  std::string binary;
  if (stat(path.c_str(), &st) == 0 && st.st_uid == geteuid()) {
    std::ifstream(path) >> binary;
    unlink(path.c_str());
  }
  return binary.empty() || access(binary.c_str(), X_OK) != 0 ? "" : binary;
}

// Tells efusectl restart that its request was called off, and why (it
// waits for a new server generation otherwise).
void ReportRestartCalledOff(uint64_t device, const std::string& why) {
  absl::StatusOr<std::string> dir = StatusDirectoryForWriting();
  if (!dir.ok()) return;
  // Whole or not at all: efusectl reads it as soon as the name is there.
  const std::string path = absl::StrCat(*dir, "/", minor(static_cast<dev_t>(device)), ".restart-result");
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << why << "\n";
    if (!out.flush()) return;
  }
  rename(tmp.c_str(), path.c_str());
}

// In the child: the descriptors at 3, 4, ... in order, LISTEN_* set for
// this process, the signal mask of a fresh process; then the server.
[[noreturn]] void ExecServer(const std::vector<std::string>& argv,
                             const std::vector<std::pair<std::string, int>>& fds, const std::string& mountpoint) {
  // The stop and status signals stay blocked across exec: one forwarded
  // while the server starts waits for its signalfd instead of killing it.
  sigset_t held;
  sigemptyset(&held);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&held, s);
  sigprocmask(SIG_SETMASK, &held, nullptr);
  // Its own process group: a terminal's ^C or hangup reaches the
  // supervisor only, which passes it on once. The supervisor's session,
  // not one of its own: the scheduler groups a session's processes
  // (autogroup), and a server in a group apart from the clients that
  // started it answers them later (a create loop: 9% slower). Job control
  // never stops it: from a background group, a write to the terminal
  // would raise SIGTTOU (with `stty tostop`), ignored here.
  setpgid(0, 0);
  signal(SIGTTOU, SIG_IGN);
  signal(SIGTTIN, SIG_IGN);
  // Out of the way of 3..3+n first, so no dup2 overwrites one still to move.
  std::vector<int> high;
  for (const auto& [name, fd] : fds) high.push_back(fcntl(fd, F_DUPFD_CLOEXEC, 100));
  std::vector<std::string> names;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (high[i] < 0 || dup2(high[i], static_cast<int>(3 + i)) < 0) _exit(127);
    names.push_back(fds[i].first);
  }
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  setenv("LISTEN_FDS", std::to_string(fds.size()).c_str(), 1);
  setenv("LISTEN_FDNAMES", absl::StrJoin(names, ":").c_str(), 1);
  setenv(kMountpointEnv, mountpoint.c_str(), 1);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

// Starts a server with a gate (kGateFdName): it loads, writes 'R' and
// waits for 'G'. False if it cannot be started.
bool ForkGated(const std::vector<std::string>& argv, std::vector<std::pair<std::string, int>> fds,
               const std::string& mountpoint, pid_t* pid, int* gate) {
  int ends[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) {
    Log(LogLevel::kError, "supervisor: socketpair: %s", std::strerror(errno));
    return false;
  }
  fds.emplace_back(kGateFdName, ends[1]);
  const pid_t child = fork();
  if (child == 0) ExecServer(argv, fds, mountpoint);
  // Its own group from the parent's side too (the child does the same):
  // whichever runs first, a terminal's ^C after fork returns misses it.
  if (child > 0) setpgid(child, child);
  close(ends[1]);
  if (child < 0) {
    close(ends[0]);
    Log(LogLevel::kError, "supervisor: fork: %s", std::strerror(errno));
    return false;
  }
  *pid = child;
  *gate = ends[0];
  return true;
}

// Ends a successor waiting at its gate.
void DropStandby(pid_t* pid, int* gate) {
  if (*pid > 0) {
    kill(*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
  }
  if (*gate >= 0) close(*gate);
  *pid = -1;
  *gate = -1;
}

// A planned successor: started, and waited for up to `timeout` to be ready;
// false (it is killed, and the running server stays) if it exits or is not
// ready in time: a binary that cannot start never costs the mount its server.
bool StartSuccessor(const std::vector<std::string>& argv, const std::vector<std::pair<std::string, int>>& fds,
                    const std::string& mountpoint, std::chrono::seconds timeout, pid_t* pid, int* gate) {
  if (!ForkGated(argv, fds, mountpoint, pid, gate)) return false;
  pollfd p{*gate, POLLIN, 0};
  char ready = 0;
  if (poll(&p, 1, static_cast<int>(timeout.count() * 1000)) == 1 && read(*gate, &ready, 1) == 1 && ready == 'R') {
    return true;
  }
  DropStandby(pid, gate);
  Log(LogLevel::kError, "supervisor: restart: the new server (%s) did not get ready; the running one serves on",
      argv[0]);
  return false;
}

}  // namespace

bool ConnectionEnded(int fuse_fd) {
  pollfd p{fuse_fd, POLLIN, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

void AbortAndUnmount(dev_t dev, const std::string& mountpoint) {
  std::ofstream(absl::StrCat("/sys/fs/fuse/connections/", minor(dev), "/abort")) << "1";
  absl::StatusOr<dev_t> there = MountDevice(mountpoint);
  if (there.ok() && *there == dev) UnmountFuse(mountpoint).IgnoreError();
}

absl::StatusOr<HeldConnection> MountForServers(const MountOptions& mount,
                                               const std::vector<std::pair<std::string, int>>& extra_fds,
                                               int worker_clones) {
  HeldConnection held;
  absl::StatusOr<std::unique_ptr<StateRegion>> state = StateRegion::Create();
  if (!state.ok()) return state.status();
  held.state = std::move(*state);
  if (mount.mountpoint.size() >= sizeof(StateHeader::mountpoint)) {
    return absl::InvalidArgumentError(absl::StrCat("mount point path longer than ",
                                                   sizeof(StateHeader::mountpoint) - 1, " bytes"));
  }
  std::memcpy(held.state->header().mountpoint, mount.mountpoint.c_str(), mount.mountpoint.size() + 1);
  absl::StatusOr<int> fuse_fd = MountFuse(mount, &held.method);
  if (!fuse_fd.ok()) return fuse_fd.status();
  held.fuse_fd = *fuse_fd;
  absl::StatusOr<dev_t> dev = MountDevice(mount.mountpoint);
  held.state->header().device = dev.ok() ? *dev : 0;
  EnsureFusectl();
  held.fds = {{kFuseFdName, held.fuse_fd}, {kStateFdName, held.state->fd()}};
  held.fds.insert(held.fds.end(), extra_fds.begin(), extra_fds.end());
  for (int i = 0; i < worker_clones; ++i) {
    absl::StatusOr<int> clone = CloneFuseFd(held.fuse_fd);
    if (!clone.ok()) break;  // the servers clone the rest themselves
    held.fds.emplace_back(kWorkerFdName, *clone);
  }
  return held;
}

absl::Status StoreForSuccessors(const std::vector<std::pair<std::string, int>>& fds) {
  std::unique_ptr<ServiceNotifier> notifier = ServiceNotifier::FromEnvironment();
  if (notifier == nullptr) return absl::FailedPreconditionError("no service manager ($NOTIFY_SOCKET) to keep the connection");
  std::vector<std::string> names;
  for (const auto& [name, fd] : fds)
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  constexpr size_t kMaxPerMessage = 250;  // the kernel's SCM_MAX_FD is 253
  for (const std::string& name : names) {
    std::vector<int> group;
    for (const auto& [n, fd] : fds)
      if (n == name) group.push_back(fd);
    for (size_t at = 0; at < group.size(); at += kMaxPerMessage) {
      const size_t count = std::min(kMaxPerMessage, group.size() - at);
      absl::Status s = notifier->SendWithFds(absl::StrCat("FDSTORE=1\nFDNAME=", name, "\nFDPOLL=0"),
                                             std::span<const int>(group).subspan(at, count));
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

void DropStoredForSuccessors() {
  std::unique_ptr<ServiceNotifier> notifier = ServiceNotifier::FromEnvironment();
  if (notifier == nullptr) return;
  for (const char* name : {kFuseFdName, kStateFdName, kSourceFdName, kWorkerFdName})
    notifier->Send(absl::StrCat("FDSTOREREMOVE=1\nFDNAME=", name)).IgnoreError();
}

namespace {

// Every thread of `pid` back to niceness 0 (a gated server loads niced,
// tools/efused/main.cc; the supervisor, as root, may lower it again).
void ServeAtFullPriority(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid, "/task");
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') setpriority(PRIO_PROCESS, static_cast<id_t>(std::atoi(e->d_name)), 0);
    }
    closedir(d);
  }
}

// Copies of a serving server's BPF program links and config map (see
// SupervisorOptions::quiet_programs).
struct HeldPrograms {
  std::vector<int> links;
  int config = -1;
  bool taken = false;  // tried for this server

  void Take(pid_t server, const StateHeader& h) {
    taken = true;
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, server, 0));
    if (pidfd < 0) return;
    auto copy = [pidfd](int fd) { return fd < 0 ? -1 : static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0)); };
    for (int32_t fd : h.server_bpf_links) {
      if (const int held = copy(fd); held >= 0) links.push_back(held);
    }
    config = copy(h.server_bpf_config);
    close(pidfd);
  }
  // The server is gone: its programs count nothing from now on.
  void Quiet(const SupervisorOptions& options) {
    if (config >= 0 && options.quiet_programs) options.quiet_programs(config);
  }
  // Unlinks them. Closing a link's last fd detaches it and waits out a
  // kernel grace period (25-50 ms here, more under load): on a thread of its
  // own, so the supervisor is never that late to see its server die (a
  // crash in that window used to wait for it: takeovers of ~90 ms).
  void Release() {
    std::vector<int> fds = std::move(links);
    if (config >= 0) fds.push_back(config);
    *this = HeldPrograms();
    if (fds.empty()) return;
    std::thread([fds = std::move(fds)] {
      for (int fd : fds) close(fd);
    }).detach();
  }
};

}  // namespace

int Supervise(const SupervisorOptions& options) {
  const std::string& mp = options.mount.mountpoint;
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD}) sigaddset(&sigs, s);
  sigprocmask(SIG_BLOCK, &sigs, nullptr);
  const int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
  if (sfd < 0) {
    Log(LogLevel::kError, "supervisor: signalfd: %s", std::strerror(errno));
    return 1;
  }
  absl::StatusOr<HeldConnection> held = MountForServers(options.mount, options.fds, options.worker_clones);
  if (!held.ok()) {
    std::fprintf(stderr, "efused: %s\n", std::string(held.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<StateRegion>& state = held->state;
  const int fuse_fd = held->fuse_fd;
  const std::vector<std::pair<std::string, int>>& fds = held->fds;
  state->header().supervisor_pid = getpid();
  Log(LogLevel::kInfo, "mounted %s at %s with %s; supervisor pid %d keeps the connection for its servers",
      options.mount.fsname, mp, held->method, getpid());

  std::deque<Clock::time_point> recent_restarts;
  int exit_code = 0;
  bool stop_requested = false;  // a stop signal was passed on: no successor
  bool restart_requested = false;
  std::vector<std::string> server_argv = options.server_argv;
  // The command line of the last server that came to serve: where an
  // upgrade goes back to if its new server dies before it serves.
  std::vector<std::string> last_serving_argv;
  // A planned successor, loaded and waiting at its gate for the running
  // server to retire (efusectl restart).
  pid_t successor = -1;
  int gate = -1;
  // Standbys that could not start or died waiting: past a few, none more
  // (a crash is then followed by a fresh start, as without them).
  int standby_failures = 0;
  bool standby_ready = false;  // it said 'R'
  constexpr int kMaxStandbyFailures = 3;
  bool report_to_successor = false;  // a SIGUSR1 that came as its server died
  HeldPrograms programs;       // the serving server's
  HeldPrograms ended_programs;  // its predecessor's, unlinked once it is followed
  for (;;) {
    const pid_t child = successor > 0 ? std::exchange(successor, -1) : fork();
    if (child < 0) {
      Log(LogLevel::kError, "supervisor: fork: %s", std::strerror(errno));
      exit_code = 1;
      break;
    }
    if (child == 0) ExecServer(server_argv, fds, mp);
    setpgid(child, child);  // as in ForkGated (after exec: refused, harmless)
    // (A standby or planned successor was started with server_argv too.)
    const std::vector<std::string> child_argv = server_argv;
    // This server comes to serve once the serving generation passes this.
    const uint64_t generation_before = state->header().generation.load();
    standby_ready = false;
    if (gate >= 0) {
      // Its predecessor is gone: the successor takes over, at full
      // priority from its first instruction (it loaded niced).
      ServeAtFullPriority(child);
      const char go = 'G';
      if (send(gate, &go, 1, MSG_NOSIGNAL) != 1) {
        Log(LogLevel::kWarning, "supervisor: the successor's gate: %s", std::strerror(errno));
      }
      close(gate);
      gate = -1;
    }
    if (std::exchange(report_to_successor, false)) kill(child, SIGUSR1);  // (held until it reads signals)
    int status = 0;
    bool reaped = false;
    // A retiring server that has not exited by then is killed: its
    // successor settles what it left from the journal, as after a crash.
    bool retiring = false;
    Clock::time_point retire_deadline{};
    // A successor that died at its gate: its SIGCHLD came before it was ours.
    if (waitpid(child, &status, WNOHANG) == child) reaped = true;
    // It serves once it has answered INIT or taken the connection over.
    auto is_serving = [&] {
      return state->header().initialized.load() != 0 && state->header().serving_generation.load() > generation_before;
    };
    // Copies of its program links, taken once it serves and before it could
    // close them (copies taken later could be of whatever reused the numbers).
    auto take_programs_if_serving = [&](bool serving) {
      if (serving && !programs.taken && options.quiet_programs) programs.Take(child, state->header());
    };
    while (!reaped) {
      // A standby: the next server, started once this one serves, loaded
      // and keeping up with the journal at its gate, so that a crash is
      // followed by a server that only reads the journal's tail. Of no use
      // once the file system cannot be rebuilt.
      if (successor > 0 && !retiring && state->header().recoverable.load() == 0) DropStandby(&successor, &gate);
      // (Whether the file system can be rebuilt is known once it serves.)
      const bool serving = is_serving();
      // The last server's programs are unlinked once this one serves (a
      // fresh fork inherits the copies until its exec: released before,
      // its exec would wait for the detach).
      if (serving) ended_programs.Release();
      take_programs_if_serving(serving);
      const bool want_standby = options.standby && successor < 0 && !retiring && !stop_requested &&
                                standby_failures < kMaxStandbyFailures &&
                                (!serving || state->header().recoverable.load() != 0);
      int wait_ms = want_standby ? (serving ? 0 : 50) : -1;
      if (!serving && !programs.taken && options.quiet_programs) wait_ms = 50;  // to take them once it serves
      if (retiring) {
        wait_ms = static_cast<int>(std::max<int64_t>(
            0, std::chrono::ceil<std::chrono::milliseconds>(retire_deadline - Clock::now()).count()));
      }
      // The signals, and a loading standby's gate (it says 'R' when ready).
      const bool standby_loading = successor > 0 && !standby_ready && !retiring;
      pollfd p[2] = {{sfd, POLLIN, 0}, {standby_loading ? gate : -1, POLLIN, 0}};
      const int n = poll(p, 2, wait_ms);
      if (n == 0) {
        if (retiring) {
          Log(LogLevel::kWarning, "supervisor: the retiring server (pid %d) did not exit in time; killing it", child);
          kill(child, SIGKILL);
          retiring = false;
        } else if (want_standby && serving) {
          if (!ForkGated(server_argv, fds, mp, &successor, &gate)) ++standby_failures;
        }
        continue;
      }
      if (standby_loading && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        char ready = 0;
        if (read(gate, &ready, 1) == 1 && ready == 'R') {
          standby_ready = true;
          standby_failures = 0;
          Log(LogLevel::kInfo, "supervisor: standby server (pid %d) ready", successor);
        } else {
          Log(LogLevel::kWarning, "supervisor: the standby server (pid %d) ended before it was ready", successor);
          DropStandby(&successor, &gate);
          ++standby_failures;
        }
      }
      if ((p[0].revents & POLLIN) == 0) continue;
      signalfd_siginfo si;
      if (read(sfd, &si, sizeof(si)) != sizeof(si)) {
        if (errno == EINTR || errno == EAGAIN) continue;
        break;
      }
      if (si.ssi_signo == SIGUSR2) {
        // efusectl restart: a successor (of --binary's file, if the
        // request names one) is started and loads while the server still
        // serves; once it is ready, the server hands over (it stops taking
        // requests and finishes those it carries out) and exits.
        if (retiring) continue;  // one upgrade at a time
        const std::string binary = TakeRestartRequest(state->header().device);
        if (state->header().recoverable.load() == 0) {
          ReportRestartCalledOff(state->header().device,
                                 "a successor could not rebuild this mount's file system (memfs with its data in "
                                 "the daemon, or a journal that failed): refused");
          continue;
        }
        std::vector<std::string> argv = server_argv;
        if (!binary.empty()) argv[0] = binary;
        // Not the standby: it read the options (and is the binary) of its
        // start; a restart reads them again.
        DropStandby(&successor, &gate);
        if (!StartSuccessor(argv, fds, mp, options.retire_timeout, &successor, &gate)) {
          ReportRestartCalledOff(state->header().device,
                                 absl::StrCat("the new server (", argv[0], ") did not get ready; the running one serves on"));
          continue;
        }
        server_argv = std::move(argv);
        restart_requested = true;
        take_programs_if_serving(is_serving());  // before it retires and closes its own
        kill(child, SIGUSR2);
        retire_deadline = Clock::now() + options.retire_timeout;
        retiring = true;
        continue;
      }
      if (si.ssi_signo != SIGCHLD) {
        if (si.ssi_signo != SIGUSR1) stop_requested = true;
        // (A server that died already, or retires, cannot report: its
        // successor does.)
        if (si.ssi_signo == SIGUSR1 && retiring && successor > 0) {
          kill(successor, SIGUSR1);
          continue;
        }
        if (si.ssi_signo == SIGUSR1 && waitpid(child, &status, WNOHANG) == child) {
          reaped = true;
          report_to_successor = true;
          continue;
        }
        kill(child, static_cast<int>(si.ssi_signo));  // the server stops (or reports) as asked
        continue;
      }
      if (int standby_status = 0; successor > 0 && !retiring && waitpid(successor, &standby_status, WNOHANG) == successor) {
        Log(LogLevel::kWarning, "supervisor: the standby server (pid %d) %s at its gate", successor,
            DescribeExit(standby_status));
        successor = -1;
        close(std::exchange(gate, -1));
        ++standby_failures;
      }
      if (waitpid(child, &status, WNOHANG) == child) reaped = true;
    }
    if (!reaped) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
    }
    programs.Quiet(options);
    ended_programs.Release();  // (one that never served kept them)
    ended_programs = std::exchange(programs, HeldPrograms());
    StateHeader& h = state->header();
    const bool retired = std::exchange(restart_requested, false);
    if (!retired) h.server_ended_ns.store(MonotonicNs());  // a retired one noted its own end
    if (!retired && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      exit_code = 0;  // a clean stop: unmounted
      break;
    }
    // How long a retired server took to exit after it stopped serving: its
    // successor waits for that (the upgrade's stall).
    const uint64_t ended_ns = h.server_ended_ns.load();
    const std::string how =
        retired ? absl::StrCat("was retired (efusectl restart; it ", DescribeExit(status),
                               ended_ns != 0 ? absl::StrFormat(" %.1f ms after it handed over", (MonotonicNs() - ended_ns) / 1e6)
                                             : std::string(),
                               ")")
                : DescribeExit(status);
    // (Read before anything below changes what it asks.)
    const bool served = is_serving();
    if (served) last_serving_argv = child_argv;
    // From here every way out ends the mount: a retired server's 0 too.
    exit_code = ExitCodeOf(status) != 0 ? ExitCodeOf(status) : 1;
    if (stop_requested) {
      Log(LogLevel::kWarning, "supervisor: the server %s while stopping; unmounting", how);
      break;
    }
    if (h.initialized.load() == 0) {
      Log(LogLevel::kError, "supervisor: the server %s before INIT was answered; unmounting", how);
      break;
    }
    if (ConnectionEnded(fuse_fd)) {
      Log(LogLevel::kWarning, "supervisor: the server %s and the connection has ended", how);
      break;
    }
    if (h.recoverable.load() == 0) {
      Log(LogLevel::kError,
          "supervisor: the server %s; its file system cannot be rebuilt (its journal is incomplete, "
          "or a library's file system keeps none): unmounting",
          how);
      break;
    }
    // Only servers that died before they served count: one that cannot
    // start would be restarted forever; one killed while serving is what
    // the supervisor is for, however often.
    if (!served) {
      const Clock::time_point now = Clock::now();
      while (!recent_restarts.empty() && now - recent_restarts.front() > options.restart_window) {
        recent_restarts.pop_front();
      }
      if (static_cast<int>(recent_restarts.size()) >= options.max_restarts) {
        Log(LogLevel::kError,
            "supervisor: the server %s before serving, the %d-th time within %lld s; giving up: unmounting", how,
            options.max_restarts + 1, static_cast<long long>(options.restart_window.count()));
        break;
      }
      recent_restarts.push_back(now);
    }
    if (!served && !last_serving_argv.empty() && child_argv != last_serving_argv) {
      // An upgrade whose new server died before it served (a broken build,
      // a crash while taking over): its predecessor's command line serves
      // on, from the journal, as after any crash.
      Log(LogLevel::kError, "supervisor: the new server (%s) %s before it served; going back to %s", child_argv[0],
          how, last_serving_argv[0]);
      ReportRestartCalledOff(h.device, absl::StrCat("the new server (", child_argv[0], ") ", how,
                                                    " before it served; went back to ", last_serving_argv[0]));
      server_argv = last_serving_argv;
    }
    Log(LogLevel::kWarning, "supervisor: the server (pid %d) %s; starting a successor (%s)", child, how,
        server_argv[0]);
  }
  DropStandby(&successor, &gate);  // the mount ends while a successor waits at its gate
  ended_programs.Release();
  if (exit_code != 0) {
    AbortAndUnmount(state->header().device, mp);
  }
  for (const auto& [name, fd] : fds)
    if (name == kWorkerFdName) close(fd);
  close(fuse_fd);
  close(sfd);
  return exit_code;
}

}  // namespace efuse
