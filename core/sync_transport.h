// core/sync_transport.h — blocking read()/writev() on /dev/fuse.
//
// Owns: one worker thread per CPU (floating unless asked to pin), each reading its own fd cloned
// from the session fd with FUSE_DEV_IOC_CLONE, so workers never share a file
// position or a lock in the daemon. Each worker's buffer is allocated after
// pinning (first touch puts it on the worker's NUMA node) and pre-faulted.
// The portable fallback transport; thread-safe by construction (no shared
// mutable state between workers besides the Dispatcher).
#ifndef EFUSE_CORE_SYNC_TRANSPORT_H_
#define EFUSE_CORE_SYNC_TRANSPORT_H_

#include <atomic>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "core/transport.h"

namespace efuse {

// Writes each reply with one writev() on a /dev/fuse fd.
class FdReplySender final : public ReplySender {
 public:
  explicit FdReplySender(int fd) : fd_(fd) {}
  int Send(proto::Reply& reply) override;
  // Any thread may write a reply to /dev/fuse.
  std::unique_ptr<ReplySender> Detach() override { return std::make_unique<FdReplySender>(fd_); }

 private:
  int fd_;
};

struct SyncTransportOptions {
  int workers = 0;       // 0: one per CPU the daemon may run on
  // Pin worker i to the i-th allowed CPU. Off by default: with every
  // worker blocked in read(2) on the same queue, the kernel wakes whichever
  // waited first, and one pinned to the other CPU costs a cross-CPU wakeup
  // per request (one client: 29-34k 4 KiB reads/s pinned, 93-101k/s
  // floating; two clients: equal).
  bool pin = false;
  size_t buffer_size = 0;  // 0: max_write + room for headers
  int first_slot = 0;      // worker i uses interrupt slot first_slot + i
  std::string_view name = "sync";
};

class SyncTransport final : public Transport {
 public:
  explicit SyncTransport(SyncTransportOptions options) : options_(options) {}
  ~SyncTransport() override;
  std::string_view Name() const override { return options_.name; }
  absl::Status Start(int session_fd, Dispatcher* dispatcher,
                     std::function<void()> on_exit) override;
  void Join() override;
  int worker_count() const { return static_cast<int>(threads_.size()); }

 private:
  void WorkerLoop(int index, int fd, int cpu, Dispatcher* dispatcher);

  SyncTransportOptions options_;
  std::vector<std::thread> threads_;
  std::vector<int> fds_;  // cloned fds (not the session fd)
  std::atomic<int> running_{0};
  std::function<void()> on_exit_;
  size_t buffer_size_ = 0;
};

// Opens /dev/fuse and attaches it to `session_fd`'s connection; where the
// process was given clones (UseInheritedClones), a dup of the next of them.
absl::StatusOr<int> CloneFuseFd(int session_fd);
// Clones of the connection's fd that a supervisor holds too (and keeps
// open). The kernel ends the requests a worker's fd had read but not
// answered when that fd's last holder closes it (fuse_dev_release): read
// through these, a dead server's requests stay, for its successor to have
// resent (FUSE_NOTIFY_RESEND). Called once, before any transport starts.
void UseInheritedClones(std::vector<int> fds);
// CPUs this process may run on, in order.
std::vector<int> AllowedCpus();
// Pins the calling thread to `cpu` (no-op for -1); false if refused.
bool PinThisThread(int cpu);
// Anonymous memory for a worker's buffers, pre-faulted (MAP_POPULATE). Call
// after pinning: first touch places it on the worker's NUMA node. nullptr
// (errno set) on failure; free with munmap.
void* MapWorkerMemory(size_t bytes);
// The number of CPUs the kernel may ever bring online (nr_cpu_ids: the
// FUSE ring has one queue per possible CPU).
int PossibleCpuCount();

}  // namespace efuse

#endif  // EFUSE_CORE_SYNC_TRANSPORT_H_
