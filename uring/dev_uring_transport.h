// uring/dev_uring_transport.h — io_uring reads and writes on /dev/fuse.
//
// Owns: for kernels without the FUSE ring (or with it switched off), one
// worker per allowed CPU (pinned), each with its own /dev/fuse fd cloned from
// the session (O_NONBLOCK, so io_uring waits by polling instead of parking a
// kernel thread in read) and its own io_uring (single issuer). A worker keeps
// `depth` reads in flight, each into its own request buffer; a reply is a
// WRITEV on the same ring, linked to the next read of that buffer, so one
// io_uring_enter both answers and re-arms. READ data stays in the request
// buffer it was read into (no copy); other reply payloads are copied into the
// buffer's own reply area. Requests answered late (blocking locks) are written
// with writev from their thread.
//
// Threading: each ring is touched only by its worker; counters are
// single-writer atomics.
#ifndef EFUSE_URING_DEV_URING_TRANSPORT_H_
#define EFUSE_URING_DEV_URING_TRANSPORT_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "core/transport.h"
#include "uring/queue_counters.h"
#include "uring/start_barrier.h"

namespace efuse::uring {

struct DevUringOptions {
  int workers = 0;     // 0: one per allowed CPU
  bool pin = true;
  unsigned depth = 4;  // reads in flight per worker
};

class DevUringTransport final : public Transport {
 public:
  explicit DevUringTransport(DevUringOptions options);
  ~DevUringTransport() override;

  std::string_view Name() const override { return "uring-dev"; }
  absl::Status Start(int session_fd, Dispatcher* dispatcher,
                     std::function<void()> on_exit) override;
  void Join() override;
  void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const override;

 private:
  struct Worker;
  class Loop;

  void WorkerMain(Worker* w);

  DevUringOptions options_;
  Dispatcher* dispatcher_ = nullptr;
  size_t buffer_size_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<int> running_{0};
  std::function<void()> on_exit_;

  std::unique_ptr<StartBarrier> start_;  // every worker sets up, or none serves
};

}  // namespace efuse::uring

#endif  // EFUSE_URING_DEV_URING_TRANSPORT_H_
