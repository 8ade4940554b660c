// core/release_order.h — keeping lock requests from overtaking a RELEASE.
//
// The kernel sends RELEASE in the background: close() returns before the
// daemon has seen it. A lock request the same process makes next can reach
// another worker while the RELEASE that frees the conflicting OFD lock or
// flock is still on its way or being handled, and would then fail where a
// local file system would grant it. The kernel numbers requests in the order
// it creates them (`unique`, in steps of 2), so a lock request that meets a
// conflict can wait until every request numbered shortly before it has been
// received and no RELEASE numbered before it is still being handled, then
// ask again (always: the RELEASE may have ended between the first attempt
// and the wait).
//
// Owns: which recent request numbers each receiving thread has seen, and
// which RELEASE/RELEASEDIR requests are being handled. Thread-safe. Per
// request, a thread writes only its own ring (no shared cache line); only a
// lock request that met a conflict reads them all.
#ifndef EFUSE_CORE_RELEASE_ORDER_H_
#define EFUSE_CORE_RELEASE_ORDER_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace efuse {

class ReleaseOrder {
 public:
  ReleaseOrder();
  ReleaseOrder(const ReleaseOrder&) = delete;
  ReleaseOrder& operator=(const ReleaseOrder&) = delete;

  // Every request, as soon as its header is read. A RELEASE/RELEASEDIR
  // (`is_release`) counts as being handled until ReleaseDone(token), with
  // the token this returns.
  int Received(uint64_t unique, bool is_release);
  void ReleaseDone(int token);

  // For the lock request `unique` that met a conflict: waits, at most
  // `limit`, until no RELEASE numbered before it is being handled and the
  // kWindow requests numbered before it have all been received. True if
  // there was anything to wait for; false at once if not.
  bool WaitForEarlierReleases(uint64_t unique, std::chrono::microseconds limit);
  // Whether there is anything to wait for now.
  bool Pending(uint64_t unique);

  // How far back a RELEASE may have been numbered, in requests: close() and
  // the next lock call of one thread are a few requests apart at most, even
  // with other processes busy on the mount.
  static constexpr uint64_t kWindow = 64;

 private:
  static constexpr uint64_t kStep = 2;  // FUSE_REQ_ID_STEP; odd numbers are INTERRUPTs
  static constexpr size_t kRingSize = 256;  // > kWindow: numbers a thread received
  static constexpr size_t kRunningSlots = 64;
  static constexpr int kOverflowToken = -1;

  // One receiving thread's recent numbers, at ring[(u / kStep) % kRingSize]
  // (older ones overwritten).
  struct alignas(64) Ring {
    std::array<std::atomic<uint64_t>, kRingSize> seen{};
  };
  Ring& ThisThreadsRing();
  // Whether some thread has received `u` (or is past it); the caller holds rings_mu_.
  bool AnyThreadReceived(uint64_t u) const ABSL_SHARED_LOCKS_REQUIRED(rings_mu_);

  const uint64_t id_;  // tells this instance's rings from an earlier one's
  std::atomic<uint64_t> first_{0};  // the first number received (INIT)
  // Numbers of the RELEASEs being handled (0: free); more at once than
  // slots are counted in overflow_, which makes every lock wait.
  std::array<std::atomic<uint64_t>, kRunningSlots> running_{};
  std::atomic<int> overflow_{0};
  absl::Mutex rings_mu_;
  std::vector<std::unique_ptr<Ring>> rings_ ABSL_GUARDED_BY(rings_mu_);
};

}  // namespace efuse

#endif  // EFUSE_CORE_RELEASE_ORDER_H_
