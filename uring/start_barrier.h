// uring/start_barrier.h — all of a transport's workers start, or none does.
//
// Owns: the start-up handshake of the io_uring transports. Each worker sets
// up its ring and buffers (on its own, pinned thread), reports, and waits;
// the starting thread collects every report and then lets all workers serve,
// or, if any setup failed, tells all of them to quit (closing a ring cancels
// what it had registered). Thread-safe.
#ifndef EFUSE_URING_START_BARRIER_H_
#define EFUSE_URING_START_BARRIER_H_

#include <condition_variable>
#include <mutex>
#include <string>

#include "absl/status/status.h"

namespace efuse::uring {

class StartBarrier {
 public:
  explicit StartBarrier(int workers) : workers_(workers) {}

  // A worker: its setup result; blocks until Release. True: serve.
  bool ReportAndWait(const absl::Status& setup) {
    std::unique_lock<std::mutex> l(mu_);
    if (!setup.ok() && first_error_.ok()) first_error_ = setup;
    ++reported_;
    cv_.notify_all();
    cv_.wait(l, [&] { return released_; });
    return serve_;
  }
  // The starter: waits for every worker's report; the first failure or OK.
  absl::Status WaitForReports() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return reported_ == workers_; });
    return first_error_;
  }
  // The starter: lets every worker go, to serve or to quit.
  void Release(bool serve) {
    {
      std::lock_guard<std::mutex> l(mu_);
      serve_ = serve;
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  const int workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  int reported_ = 0;
  absl::Status first_error_;
  bool released_ = false;
  bool serve_ = false;
};

}  // namespace efuse::uring

#endif  // EFUSE_URING_START_BARRIER_H_
