#include "core/session.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/service_notify.h"
#include "core/status_file.h"
#include "core/sync_transport.h"
#include "core/test_faults.h"
#include "proto/notify.h"
#include "proto/opcode.h"

namespace efuse {


// The status file also carries the dispatcher's per-opcode request counters
// ("requests_<OPCODE>: N", only non-zero ones, plus "requests_total"), so a
// test or an operator can see which requests reached the daemon. It is
// written at start and rewritten on SIGUSR1; "status_seq" grows with every
// rewrite, so a reader that sent SIGUSR1 knows when the new counts are there.
std::vector<std::pair<std::string, std::string>> Session::StatusLines() const {
  // Signals for the mount go to its supervisor, which passes them on.
  const int32_t supervisor = options_.state != nullptr ? options_.state->header().supervisor_pid : 0;
  std::vector<std::pair<std::string, std::string>> lines = {
      {"pid", std::to_string(supervisor > 0 ? supervisor : getpid())},
      {"mountpoint", options_.mount.mountpoint},
      {"fs", std::string(fs_->Name())},
      {"transport", transport_ ? absl::StrCat(std::string(transport_->Name()), " (", transport_note_, ")")
                               : std::string("(starting)")},
      {"protocol", absl::StrCat("7.", dispatcher_->connection().minor)},
      {"max_write", std::to_string(dispatcher_->connection().max_write)},
  };
  const proto::Connection& conn = dispatcher_->connection();
  if ((options_.init.wanted_flags & abi::init::kAllowIdmap) != 0) {
    lines.emplace_back("idmapped_mounts", conn.Has(abi::init::kAllowIdmap) ? "allowed"
                                          : dispatcher_->initialized()
                                              ? "refused (the kernel has no FUSE_ALLOW_IDMAP)"
                                              : "(at INIT)");
  }
  if (options_.init.request_timeout != 0) {
    lines.emplace_back("request_timeout",
                       conn.request_timeout != 0 ? absl::StrCat(conn.request_timeout, " s")
                       : dispatcher_->initialized()
                           ? std::string("refused (the kernel has no FUSE_REQUEST_TIMEOUT)")
                           : std::string("(at INIT)"));
  }
  if (options_.state != nullptr) {
    const StateHeader& h = options_.state->header();
    lines.emplace_back("server_pid", std::to_string(getpid()));
    lines.emplace_back("connection_held_by", supervisor > 0 ? absl::StrCat("supervisor (pid ", supervisor, ")")
                                                            : std::string("service manager's fd store"));
    lines.emplace_back("state_layout", std::to_string(StateRegion::kStateLayout));
    lines.emplace_back("server_generation", std::to_string(h.generation.load()));
    // The last generation that came to serve (efusectl restart waits for it).
    lines.emplace_back("serving_generation", std::to_string(h.serving_generation.load()));
    lines.emplace_back("takeovers", std::to_string(h.takeovers.load()));
    lines.emplace_back("last_takeover_ms", absl::StrCat(h.last_takeover_ns.load() / 1000000.0));
    lines.emplace_back("resend_requests", std::to_string(h.requests_resent.load()));
    lines.emplace_back("answers_recorded", std::to_string(h.answers_recorded.load()));
    lines.emplace_back("answers_replayed", std::to_string(h.answers_replayed.load()));
    // What a successor would read, and the checkpoints that keep it short.
    lines.emplace_back("journal_bytes", std::to_string(options_.state->log_bytes()));
    lines.emplace_back("journal_checkpoints", std::to_string(h.checkpoints.load()));
  }
  for (const auto& kv : options_.status_lines) lines.push_back(kv);
  if (options_.telemetry != nullptr) options_.telemetry->AppendStatus(&lines);
  if (offload_ != nullptr) {
    offload_->AppendStatus(&lines);
  } else {
    lines.emplace_back("offload", options_.telemetry == nullptr ? "off (needs BPF telemetry)" : "off (--offload=off)");
  }
  if (transport_) transport_->AppendStatus(&lines);
  fs_->AppendStatus(&lines);
  uint64_t total = 0;
  const auto& counts = dispatcher_->stats().requests;
  for (size_t op = 0; op < counts.size(); ++op) {
    const uint64_t n = counts[op].load(std::memory_order_relaxed);
    total += n;
    if (n != 0) lines.emplace_back(absl::StrCat("requests_", proto::OpcodeName(static_cast<uint32_t>(op))), std::to_string(n));
  }
  lines.emplace_back("requests_total", std::to_string(total));
  lines.emplace_back("requests_malformed", std::to_string(dispatcher_->stats().bad_requests.load()));
  lines.emplace_back("lock_conflicts_resolved_by_release",
                     std::to_string(dispatcher_->stats().lock_conflicts_resolved.load()));
  lines.emplace_back("resent_listing_drops", std::to_string(dispatcher_->stats().resent_listing_drops.load()));
  return lines;
}

// The status file also carries the dispatcher's per-opcode request counters
// ("requests_<OPCODE>: N", only non-zero ones, plus "requests_total"), so a
// test or an operator can see which requests reached the daemon. It is
// written at start and rewritten on SIGUSR1; "status_seq" grows with every
// rewrite, so a reader that sent SIGUSR1 knows when the new counts are there.
void Session::WriteStatusFile() {
  static std::atomic<uint64_t> seq{0};
  if (status_path_.empty()) {
    absl::StatusOr<std::string> dir = StatusDirectoryForWriting();
    if (!dir.ok()) {
      Log(LogLevel::kWarning, "status file: %s (efusectl will not see this daemon)",
          std::string(dir.status().message()));
      status_path_ = "-";
    } else {
      status_path_ = absl::StrCat(*dir, "/", minor(dev_), ".status");
    }
  }
  if (status_path_ == "-") return;
  const std::string& path = status_path_;
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    for (const auto& [k, v] : StatusLines()) f << k << ": " << v << "\n";
    std::atomic<uint64_t>& counter = options_.state != nullptr ? options_.state->header().status_seq : seq;
    f << "status_seq: " << counter.fetch_add(1) + 1 << "\n";
    if (!f) return;
  }
  rename(tmp.c_str(), path.c_str());
}

uint64_t Session::DefaultInitFlags() {
  namespace f = abi::init;
  // Chosen explicitly; each is a promise the dispatcher and backends keep.
  return f::kAsyncRead | f::kAtomicOTrunc | f::kBigWrites | f::kDoReaddirplus |
         f::kReaddirplusAuto | f::kAsyncDio | f::kParallelDirops | f::kMaxPages |
         f::kHandleKillprivV2 | f::kSetxattrExt | f::kInitExt | f::kCreateSuppGroup |
         f::kCacheSymlinks |
         // LOOKUP of "." and "..": a file handle outlives the kernel's
         // memory of its inode (open_by_handle_at, NFS export).
         f::kExportSupport;
}

Result<int32_t> Session::OpenBacking(int fd) {
  abi::BackingMap map{};
  map.fd = fd;
  int id = ioctl(fd_, abi::kDevIocBackingOpen, &map);
  if (id < 0) return Errno::Last();
  return static_cast<int32_t>(id);
}

Status Session::CloseBacking(int32_t backing_id) {
  uint32_t id = static_cast<uint32_t>(backing_id);
  if (ioctl(fd_, abi::kDevIocBackingClose, &id) != 0) return Errno::Last();
  return OkStatus();
}

Status Session::Notify(std::span<const iovec> message) {
  for (;;) {
    if (writev(fd_, message.data(), static_cast<int>(message.size())) >= 0) return OkStatus();
    if (errno != EINTR) return Errno::Last();
  }
}

Session::Session(FileSystem* fs, SessionOptions options)
    : fs_(fs), options_(std::move(options)) {}

Session::~Session() {
  if (fd_ >= 0) close(fd_);
  if (done_event_ >= 0) close(done_event_);
}

absl::Status Session::ServeInit() {
  // INIT is the first request on a new connection; nothing else is sent
  // until it is answered, so one read on the session fd finds it.
  std::vector<uint8_t> buf(std::max<size_t>(abi::kMinReadBuffer, 4096 + 64));
  FdReplySender sender(fd_);
  while (!dispatcher_->initialized()) {
    ssize_t n = read(fd_, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "reading INIT from /dev/fuse");
    }
    dispatcher_->Handle(buf, static_cast<size_t>(n), nullptr, sender);
  }
  return absl::OkStatus();
}

std::string Session::ResendHeld() {
  // What the last server read and never answered goes back to the queue
  // (the kernel marks each with FUSE_UNIQUE_RESEND). Before any worker
  // reads: the kernel resends every request being processed on the
  // connection, and one this server had read already would be carried out
  // twice, both runs racing (a CREATE then opens two handles, one of which
  // the kernel never hears of).
  if ((dispatcher_->connection().kernel_flags & abi::init::kHasResend) == 0) {
    return "this kernel cannot resend (no FUSE_HAS_RESEND): requests the last server held are lost";
  }
  proto::Reply r = proto::NotifyResend();
  Status ns = Notify(r.Iov());
  if (!ns.ok()) return absl::StrCat("FUSE_NOTIFY_RESEND failed: ", std::strerror(ns.error().value()));
  // Their intents stay until their resends are answered, however many
  // answers come first (no worker reads yet).
  options_.state->HoldUnanswered();
  options_.state->header().requests_resent.fetch_add(1);
  return "asked the kernel to resend what it held";
}

void Session::FinishTakeover(std::chrono::steady_clock::time_point started, const std::string& resent) {
  StateHeader& h = options_.state->header();
  h.takeovers.fetch_add(1);
  // From the moment the last server stopped (the supervisor or the retiring
  // server noted it), else from this session's start.
  const uint64_t ended = h.server_ended_ns.exchange(0);  // stale for the next takeover
  const uint64_t now = MonotonicNs();
  const uint64_t took =
      ended != 0 && ended <= now
          ? now - ended
          : static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
  h.last_takeover_ns.store(took);
  Log(LogLevel::kInfo, "takeover: server generation %u serves %s from pid %d %.1f ms after its predecessor stopped; %s",
      h.generation.load(), options_.mount.mountpoint, getpid(), took / 1e6, resent);
}

void Session::Retire() {
  // New requests stay unanswered for the successor; the ones being carried
  // out finish, so nothing is left half done for the journal to settle. A
  // request stuck in the backend is not waited for past the bound: its
  // intent is journaled, and the successor settles it when it is resent.
  const auto started = std::chrono::steady_clock::now();
  dispatcher_->Retire();
  constexpr auto kDrainBound = std::chrono::seconds(5);
  while (dispatcher_->in_flight() > 0 && std::chrono::steady_clock::now() - started < kDrainBound) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const int left = dispatcher_->in_flight();
  Log(left == 0 ? LogLevel::kInfo : LogLevel::kWarning,
      "retired after %.1f ms: %s; the successor serves from here",
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count(),
      left == 0 ? std::string("every request being carried out was answered")
                : absl::StrCat(left, " requests still in the backend, left to the journal"));
  // Nothing to undo: the connection, the state region and the pinned maps
  // are the successor's; exiting is what hands them over. Under a service
  // manager's fd store the code says "start me again" (the units'
  // RestartForceExitStatus=), so a stray SIGUSR2 does not leave the mount
  // without a server.
  std::fflush(nullptr);
  options_.state->header().server_ended_ns.store(MonotonicNs());
  _exit(options_.state->header().supervisor_pid > 0 ? 0 : kExitHandedOver);
}

void Session::AbortConnection() {
  std::string path = absl::StrCat("/sys/fs/fuse/connections/", minor(dev_), "/abort");
  std::ofstream abort_file(path);
  abort_file << "1";
  Log(LogLevel::kWarning, "aborted the FUSE connection (%s)", path);
}

absl::Status Session::Run() {
  const std::string& mp = options_.mount.mountpoint;
  // Signals are taken synchronously through a signalfd by this thread only:
  // block them before any worker exists so every thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  sigaddset(&sigs, SIGUSR1);  // rewrite the status file (request counters)
  sigaddset(&sigs, SIGUSR2);  // retire: hand the mount to a successor (below)
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
  if (sfd < 0) return absl::ErrnoToStatus(errno, "signalfd");
  done_event_ = eventfd(0, EFD_CLOEXEC);

  // One interrupt slot per worker of any transport: per allowed CPU (sync),
  // per possible CPU (FUSE ring queues), or --workers, plus side readers.
  size_t slots = std::max<size_t>(AllowedCpus().size(), PossibleCpuCount()) +
                 static_cast<size_t>(std::max(options_.workers, 0)) + 2;
  std::vector<std::unique_ptr<Transport>> candidates;
  if (options_.transports) candidates = options_.transports();
  SyncTransportOptions topts;
  topts.workers = options_.workers;
  if (candidates.empty()) candidates.push_back(std::make_unique<SyncTransport>(topts));
  options_.init.wanted_flags = fs_->WantedInitFlags(options_.init.wanted_flags);
  constexpr uint64_t kLockFlags = abi::init::kPosixLocks | abi::init::kFlockLocks;
  if (options_.init.request_timeout != 0 && (options_.init.wanted_flags & kLockFlags) != 0) {
    // The kernel's timeout spares no request: a lock wait served by the
    // daemon (SETLKW, flock) that outlasts it would abort the connection,
    // so anyone who can hold a lock could cut everyone off.
    options_.init.wanted_flags &= ~kLockFlags;
    Log(LogLevel::kInfo,
        "--request_timeout: file locks are kept by the kernel, local to this mount (a lock "
        "wait served by the daemon could outlast the timeout and abort the connection)");
  }
  for (const auto& t : candidates) options_.init.wanted_flags |= t->InitFlags();
  dispatcher_ = std::make_unique<Dispatcher>(fs_, options_.init, slots, this);
  if (options_.state != nullptr) dispatcher_->SetAnswerJournal(options_.state);

  const auto started = std::chrono::steady_clock::now();
  StateRegion* const state = options_.state;
  const bool takeover = state != nullptr && state->header().initialized.load() != 0;
  std::string method;
  if (options_.inherited_fd >= 0) {
    fd_ = options_.inherited_fd;
    method = "a supervisor";
    if (state != nullptr) dev_ = static_cast<dev_t>(state->header().device);
    if (dev_ == 0) {
      if (absl::StatusOr<dev_t> dev = MountDevice(mp); dev.ok()) dev_ = *dev;
    }
    if (state != nullptr) state->header().generation.fetch_add(1);
  } else {
    absl::StatusOr<int> fd = MountFuse(options_.mount, &method);
    if (!fd.ok()) {
      close(sfd);
      return fd.status();
    }
    fd_ = *fd;
    if (absl::StatusOr<dev_t> dev = MountDevice(mp); dev.ok()) dev_ = *dev;
    EnsureFusectl();
    Log(LogLevel::kInfo, "mounted %s (%s) at %s with %s", options_.mount.fsname,
        std::string(fs_->Name()), mp, method);
  }
  // Before INIT is answered, so the telemetry sees every request after it.
  if (options_.telemetry != nullptr) {
    bool counting = true;
    if (absl::Status ts = options_.telemetry->Attach(dev_, minor(dev_)); !ts.ok()) {
      // Unavailable: the programs are not attached (a standby taking over).
      counting = !absl::IsUnavailable(ts);
      Log(counting ? LogLevel::kWarning : LogLevel::kError, "telemetry: %s%s", std::string(ts.message()),
          counting || !options_.offload ? "" : "; no offload policy");
    }
    if (options_.offload && counting) {
      OffloadOptions offload_options = options_.offload_options;
      offload_options.successor = takeover;
      offload_ = std::make_unique<OffloadPolicy>(offload_options, options_.telemetry, fs_);
      dispatcher_->SetOffload(offload_.get());
    }
  }
  if (state != nullptr) {
    // For the supervisor to hold copies of (supervisor.cc).
    std::vector<int> links;
    if (options_.telemetry != nullptr) links = options_.telemetry->ProgramLinkFds();
    StateHeader& h = state->header();
    for (size_t i = 0; i < std::size(h.server_bpf_links); ++i) h.server_bpf_links[i] = i < links.size() ? links[i] : -1;
    h.server_bpf_config = options_.telemetry != nullptr ? options_.telemetry->ConfigMapFd() : -1;
  }
  // At once, so that `efusectl status` knows this daemon (and can tell when
  // it died) even before it serves.
  WriteStatusFile();

  absl::Status s;
  if (takeover) {
    dispatcher_->Adopt(state->header().conn);
  } else {
    s = ServeInit();
    if (!s.ok()) {
      UnmountFuse(mp).IgnoreError();
      close(sfd);
      return s;
    }
    if (state != nullptr) {
      state->header().conn = dispatcher_->connection();
      state->header().initialized.store(1);
    }
  }
  if (options_.init.request_timeout != 0) {
    if (dispatcher_->connection().request_timeout != 0) {
      Log(LogLevel::kInfo, "request timeout: the kernel aborts the connection if an answer takes over %u s",
          dispatcher_->connection().request_timeout);
    } else {
      Log(LogLevel::kWarning, "--request_timeout: this kernel has no FUSE_REQUEST_TIMEOUT (Linux 6.14+); "
          "requests wait as long as they must");
    }
  }

  const std::string resent = takeover ? ResendHeld() : "";
  int done_fd = done_event_;
  std::string passed_over;  // transports that could not start, and why
  for (auto& candidate : candidates) {
    s = candidate->Start(fd_, dispatcher_.get(), [done_fd] {
      uint64_t one = 1;
      ssize_t unused = write(done_fd, &one, sizeof(one));
      (void)unused;
    });
    if (s.ok()) {
      transport_ = std::move(candidate);
      break;
    }
    absl::StrAppend(&passed_over, passed_over.empty() ? "" : "; ", std::string(candidate->Name()), " unavailable: ",
                    std::string(s.message()));
  }
  if (transport_ == nullptr) {
    AbortConnection();
    UnmountFuse(mp).IgnoreError();
    close(sfd);
    return absl::UnavailableError(absl::StrCat("no transport could start (", passed_over, ")"));
  }
  transport_note_ = passed_over.empty() ? "first choice" : passed_over;
  if (takeover) FinishTakeover(started, resent);
  if (state != nullptr && TestFault("crash_before_serving")) {
    Log(LogLevel::kWarning, "test fault crash_before_serving: generation %u dying before it serves",
        state->header().generation.load());
    raise(SIGKILL);
  }
  if (state != nullptr) state->header().serving_generation.store(state->header().generation.load());
  if (offload_ != nullptr) offload_->Start();
  Log(passed_over.empty() ? LogLevel::kInfo : LogLevel::kWarning,
      "serving with the %s transport (%s); stop with SIGTERM/SIGINT or '%s %s'",
      std::string(transport_->Name()), transport_note_,
      method == "fusermount3" ? "fusermount3 -u" : "umount", mp);
  WriteStatusFile();
  // A service manager (systemd Type=notify) learns the mount is live only
  // now: INIT is answered and a transport serves.
  std::unique_ptr<ServiceNotifier> notifier = ServiceNotifier::FromEnvironment();
  auto tell = [&](const std::string& message) {
    if (notifier == nullptr) return;
    if (absl::Status ns = notifier->Send(message); !ns.ok()) {
      Log(LogLevel::kWarning, "service manager: %s", std::string(ns.message()));
    }
  };
  tell(absl::StrCat("READY=1\nMAINPID=", getpid(), "\nSTATUS=serving ", std::string(fs_->Name()), " at ", mp,
                    " (", std::string(transport_->Name()), " transport)"));
  // Pings at half the manager's period, and reports (--metrics_file) at
  // theirs; the loop below wakes for whichever is due first.
  using SteadyClock = std::chrono::steady_clock;
  const auto ping_every = notifier != nullptr && notifier->watchdog_usec() > 0
                              ? std::chrono::microseconds(std::max<uint64_t>(1000, notifier->watchdog_usec() / 2))
                              : std::chrono::microseconds(0);
  const bool reporting = options_.report && options_.report_every.count() > 0;
  auto next_ping = SteadyClock::now() + ping_every;
  auto next_report = SteadyClock::now();  // one report at once
  auto report = [&] {
    if (reporting) options_.report(minor(dev_), StatusLines());
  };

  // Under a supervisor: readable once it has exited (a pidfd).
  int supervisor_exit = -1;
  // The supervisor is gone (killed): this server keeps the connection (its
  // own descriptors) and serves on, unsupervised: it obeys stop signals
  // from anyone, the status file names it, and its own end ends the mount.
  bool supervisor_lost = false;
  auto supervisor_gone = [&] {
    supervisor_lost = true;
    if (supervisor_exit >= 0) close(supervisor_exit);
    supervisor_exit = -1;
    options_.state->header().supervisor_pid = 0;
    options_.state->header().recoverable.store(0);
    Log(LogLevel::kError, "the supervisor died: serving %s on without it (a crash of this server now ends the mount)",
        mp);
    WriteStatusFile();
  };
  if (options_.state != nullptr && options_.state->header().supervisor_pid > 0) {
    supervisor_exit = static_cast<int>(syscall(SYS_pidfd_open, options_.state->header().supervisor_pid, 0));
    if (getppid() != options_.state->header().supervisor_pid) supervisor_gone();  // before we looked
  }
  bool unmounting = false;
  for (;;) {
    const auto now = SteadyClock::now();
    if (ping_every.count() > 0 && now >= next_ping) {
      tell("WATCHDOG=1");
      next_ping = now + ping_every;
    }
    if (reporting && now >= next_report) {
      report();
      next_report = now + options_.report_every;
    }
    int timeout_ms = -1;
    for (auto [on, due] : {std::pair{ping_every.count() > 0, next_ping}, std::pair{reporting, next_report}}) {
      if (!on) continue;
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(due - SteadyClock::now()).count();
      const int wait = static_cast<int>(std::max<int64_t>(0, ms));
      timeout_ms = timeout_ms < 0 ? wait : std::min(timeout_ms, wait);
    }
    pollfd pfds[3] = {{sfd, POLLIN, 0}, {done_event_, POLLIN, 0}, {supervisor_exit, POLLIN, 0}};
    const int ready = poll(pfds, supervisor_exit >= 0 ? 3 : 2, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (ready == 0) continue;
    if (pfds[1].revents & POLLIN) break;  // every worker saw the connection end
    if (supervisor_exit >= 0 && (pfds[2].revents & POLLIN)) {
      supervisor_gone();
      continue;
    }
    if (pfds[0].revents & POLLIN) {
      signalfd_siginfo si;
      if (read(sfd, &si, sizeof(si)) != sizeof(si)) continue;
      if (si.ssi_signo == SIGUSR1) {
        if (!unmounting) WriteStatusFile();
        continue;
      }
      // A supervised server stops when its supervisor says so: a manager
      // that signals the whole group (systemd's KillMode=control-group)
      // reaches both, and the supervisor passes its copy on.
      if (const int32_t supervisor = options_.state != nullptr ? options_.state->header().supervisor_pid : 0;
          supervisor > 0 && static_cast<int32_t>(si.ssi_pid) != supervisor) {
        continue;
      }
      if (si.ssi_signo == SIGUSR2) {
        if (options_.state == nullptr || unmounting || options_.state->header().recoverable.load() == 0) {
          Log(LogLevel::kWarning, "SIGUSR2 (retire) ignored: %s",
              unmounting                  ? "unmounting"
              : options_.state == nullptr ? "no successor can take this mount over (--supervise=off)"
              : supervisor_lost           ? "the supervisor is gone: no successor would be started"
                                          : "a successor could not rebuild this file system (its journal is incomplete)");
          continue;
        }
        tell(absl::StrCat("STOPPING=1\nSTATUS=handing ", mp, " over to a successor"));
        // While this server still serves: unlinking the programs waits for
        // the kernel (about 25 ms here), which at exit fell between the
        // two servers. The successor counts from its takeover on. (Under a
        // supervisor that holds copies of the links this only closes ours:
        // the supervisor quiets and unlinks them after the handover.)
        if (options_.telemetry != nullptr) options_.telemetry->ReleasePrograms();
        Retire();  // does not return
      }
      if (!unmounting) {
        unmounting = true;
        tell(absl::StrCat("STOPPING=1\nSTATUS=unmounting ", mp, " (signal ", strsignal(si.ssi_signo), ")"));
        bool lazy = false;
        absl::Status us = UnmountFuse(mp, &lazy);
        if (!us.ok()) {
          Log(LogLevel::kError, "signal %s: %s; aborting the connection", strsignal(si.ssi_signo),
              std::string(us.message()));
          AbortConnection();
        } else {
          Log(LogLevel::kInfo, "signal %s: unmounted %s%s", strsignal(si.ssi_signo), mp,
              lazy ? " lazily (files still open; serving them until closed, signal again to abort)"
                   : "");
        }
      } else {
        AbortConnection();
      }
    }
  }
  if (!unmounting) tell(absl::StrCat("STOPPING=1\nSTATUS=", mp, " was unmounted"));
  report();  // the final figures
  if (offload_ != nullptr) offload_->Stop();  // no page-cache push into a dying connection
  transport_->Join();
  dispatcher_->StopAsync();  // before the transport's buffers go away
  if (options_.telemetry != nullptr) options_.telemetry->Detach();
  close(sfd);
  if (supervisor_exit >= 0) close(supervisor_exit);
  if (status_path_ != "-") unlink(status_path_.c_str());
  // The connection ended without our unmount (aborted, or the kernel gave
  // up): do not leave a dead mount behind.
  // Only our own: someone may have mounted anew at the same place since.
  absl::StatusOr<dev_t> now_there = MountDevice(mp);
  if (!unmounting && now_there.ok() && *now_there == dev_) {
    bool lazy = false;
    if (UnmountFuse(mp, &lazy).ok()) Log(LogLevel::kInfo, "removed stale mount %s", mp);
  }
  Log(LogLevel::kInfo, "stopped: %u requests served, %u malformed",
      [this] {
        uint64_t n = 0;
        for (const auto& c : dispatcher_->stats().requests) n += c.load();
        return n;
      }(),
      dispatcher_->stats().bad_requests.load());
  return absl::OkStatus();
}

}  // namespace efuse
