// uring/queue_counters.h — per-queue request counters of the io_uring transports.
//
// Owns: the counters one worker (a FUSE ring queue, or an io_uring reader of
// /dev/fuse) keeps without locks on its hot path, and their status-file line.
// Each counter has a single writer (the worker, relaxed stores); anyone reads.
#ifndef EFUSE_URING_QUEUE_COUNTERS_H_
#define EFUSE_URING_QUEUE_COUNTERS_H_

#include <atomic>
#include <cstdint>
#include <string>

namespace efuse::uring {

struct QueueCounters {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> bytes_in{0};   // request bytes the kernel delivered
  std::atomic<uint64_t> bytes_out{0};  // reply bytes committed
  std::atomic<uint64_t> errors{0};     // replies with an error, failed commits
  std::atomic<uint32_t> in_flight{0};  // entries holding a request right now
  std::atomic<uint32_t> entries{0};    // entries registered with the kernel
  std::atomic<uint64_t> async_ops{0};  // backing-file reads/writes/fsyncs queued on the ring
  std::atomic<uint64_t> polled{0};     // requests found while polling, not woken for (uring)
};

// "cpu C entries E requests R bytes_in I bytes_out O in_flight F errors X async_ops A
// polled P"
std::string DescribeQueue(int cpu, const QueueCounters& c);

}  // namespace efuse::uring

#endif  // EFUSE_URING_QUEUE_COUNTERS_H_
