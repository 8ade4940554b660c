// uring/fuse_ring_transport.h — FUSE over io_uring (Linux 6.14+).
//
// Owns: one queue per possible CPU (the kernel puts a request on the queue of
// the CPU its caller runs on), each served by one worker thread pinned to that
// CPU and owning its own io_uring (128-byte SQEs, single issuer, task work
// deferred to the worker). A queue has `depth` entries: a 288-byte header
// (fuse_uring_req_header) and a payload buffer of max(8 KiB, max_write,
// max_pages pages), allocated after pinning (NUMA-local) and pre-faulted,
// registered with FUSE_IO_URING_CMD_REGISTER. A reply and the fetch of the
// next request are one FUSE_IO_URING_CMD_COMMIT_AND_FETCH. FORGET, INTERRUPT
// and notifications stay on /dev/fuse: one extra unpinned thread reads it.
//
// Threading: each ring is touched only by its worker (its only submitter);
// counters are single-writer atomics read lock-free by the status writer.
#ifndef EFUSE_URING_FUSE_RING_TRANSPORT_H_
#define EFUSE_URING_FUSE_RING_TRANSPORT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "core/sync_transport.h"
#include "core/transport.h"
#include "uring/queue_counters.h"
#include "uring/start_barrier.h"

namespace efuse::uring {

struct FuseRingOptions {
  unsigned depth = 4;  // entries per queue
  bool pin = true;
  // After serving, a worker keeps checking its ring this long before it
  // sleeps, while its clients move between CPUs: where waking a halted CPU
  // costs tens of microseconds (VMs), the next request then finds the CPUs
  // awake. A client that stays on the worker's CPU is served without it (a
  // polling worker would compete with it). 0: always sleep at once.
  unsigned poll_us = 50;
};

class FuseRingTransport final : public Transport {
 public:
  explicit FuseRingTransport(FuseRingOptions options);
  ~FuseRingTransport() override;

  std::string_view Name() const override { return "uring"; }
  uint64_t InitFlags() const override;
  // Registers every queue's entries; fails (and leaves the kernel serving
  // through /dev/fuse) when the kernel did not grant FUSE_OVER_IO_URING or
  // refuses a registration.
  absl::Status Start(int session_fd, Dispatcher* dispatcher,
                     std::function<void()> on_exit) override;
  void Join() override;
  void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const override;

  size_t queue_count() const { return queues_.size(); }
  const QueueCounters& counters(size_t qid) const;

 private:
  struct Queue;
  class Worker;

  absl::Status StartQueues(std::function<void()> on_exit);
  void QueueMain(Queue* q);
  void WorkerStopped();
  // Makes the kernel give up on the ring for this connection, so requests
  // that wait for it go through /dev/fuse instead.
  void DisableKernelRing();

  FuseRingOptions options_;
  int fd_ = -1;
  Dispatcher* dispatcher_ = nullptr;
  size_t payload_size_ = 0;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::unique_ptr<SyncTransport> dev_reader_;  // FORGET, INTERRUPT, NOTIFY_REPLY
  std::atomic<int> running_{0};
  // Requests served by all queues: a worker polls only while its client
  // moves between CPUs (other queues served in between its requests).
  std::atomic<uint64_t> served_{0};
  std::function<void()> on_exit_;

  std::unique_ptr<StartBarrier> start_;  // every queue registers, or none serves
};

}  // namespace efuse::uring

#endif  // EFUSE_URING_FUSE_RING_TRANSPORT_H_
