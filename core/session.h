// core/session.h — one mounted efuse file system, from mount to clean exit.
//
// Owns: the lifecycle: mount (core/mount), serving INIT on the session fd
// before any worker runs, starting the transport, waiting for SIGTERM/SIGINT/
// SIGHUP or for the kernel to end the connection, then unmounting (lazily if
// busy: open files keep being served until closed) and joining the workers.
// A second signal while draining aborts the connection through
// /sys/fs/fuse/connections so the daemon never hangs. Run() is called once,
// from the main thread, which must not have started other threads yet (the
// signal mask is inherited by workers).
#ifndef EFUSE_CORE_SESSION_H_
#define EFUSE_CORE_SESSION_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/dispatcher.h"
#include "core/filesystem.h"
#include "core/mount.h"
#include "core/offload.h"
#include "core/state_region.h"
#include "core/telemetry.h"
#include "core/transport.h"
#include "proto/init.h"

namespace efuse {

struct SessionOptions {
  MountOptions mount;
  proto::InitConfig init;
  int workers = 0;  // 0: one per CPU
  bool pin_workers = true;
  // Builds the transports to try, best first (the first whose Start
  // succeeds serves; each failure is named in the log). Unset: sync only.
  std::function<std::vector<std::unique_ptr<Transport>>()> transports;
  // Extra "key: value" lines for the status file efusectl reads (features
  // probed by the caller, e.g. io_uring and BPF availability).
  std::vector<std::pair<std::string, std::string>> status_lines;
  // Kernel-side telemetry already loaded by the caller (null: none); the
  // session points it at this mount once mounted and detaches it at exit.
  Telemetry* telemetry = nullptr;
  // The offload policy, when telemetry is there to drive it.
  bool offload = true;
  OffloadOptions offload_options;
  // Called from the main thread every `report_every` while serving (first
  // at once) and once when serving ends, with the connection id and the
  // status lines (e.g. to keep a metrics file current). Unset or 0: never.
  std::function<void(unsigned connection_id,
                     const std::vector<std::pair<std::string, std::string>>& status)>
      report;
  std::chrono::milliseconds report_every{0};
  // A connection handed over by a supervisor (core/supervisor.h) or a
  // service manager's fd store: its /dev/fuse fd, mounted already (the
  // session owns it), and the state region. Once the region says INIT was
  // answered, the session adopts that INIT, and asks the kernel to resend
  // what the last server had read but not answered (FUSE_NOTIFY_RESEND).
  int inherited_fd = -1;
  StateRegion* state = nullptr;
};

class Session final : public KernelConnection {
 public:
  Session(FileSystem* fs, SessionOptions options);
  ~Session();

  // Mounts, serves until unmounted or signalled, unmounts. OK on a clean stop.
  absl::Status Run();

  // The flags efused asks the kernel for by default.
  static uint64_t DefaultInitFlags();

  // KernelConnection, on the session's /dev/fuse fd.
  Result<int32_t> OpenBacking(int fd) override;
  Status CloseBacking(int32_t backing_id) override;
  Status Notify(std::span<const iovec> message) override;

 private:
  absl::Status ServeInit();
  // After a takeover: the kernel's resend, the figures, one log line.
  // A takeover: asks the kernel to resend what the last server held (a log
  // phrase for the outcome), then, once serving, counts and logs it.
  std::string ResendHeld();
  void FinishTakeover(std::chrono::steady_clock::time_point started, const std::string& resent);
  void AbortConnection();
  // SIGUSR2 on a mount a successor can take over: stop taking requests,
  // let those being carried out finish, and exit 0 (never returns).
  [[noreturn]] void Retire();
  // A retired server's exit code under a service manager (EX_TEMPFAIL).
  static constexpr int kExitHandedOver = 75;
  void WriteStatusFile();
  // What the status file says ("key", "value"), status_seq aside.
  std::vector<std::pair<std::string, std::string>> StatusLines() const;

  FileSystem* fs_;
  SessionOptions options_;
  int fd_ = -1;
  int done_event_ = -1;
  dev_t dev_ = 0;
  std::unique_ptr<OffloadPolicy> offload_;  // before dispatcher_: it outlives no reply
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<Transport> transport_;
  std::string transport_note_;
  // Where this daemon describes itself for efusectl (core/status_file.h),
  // one "key: value" per line; "-" when no directory would take it.
  std::string status_path_;  // why this transport (what was passed over)
};

}  // namespace efuse

#endif  // EFUSE_CORE_SESSION_H_
