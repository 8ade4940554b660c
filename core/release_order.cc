#include "core/release_order.h"

#include <thread>

namespace efuse {

namespace {
std::atomic<uint64_t> next_instance_id{1};

// The calling thread's ring of the instance it last served (a daemon has
// one dispatcher, so this is looked up once per thread).
struct ThreadRing {
  uint64_t owner = 0;
  void* ring = nullptr;
};
thread_local ThreadRing this_thread_ring;
}  // namespace

ReleaseOrder::ReleaseOrder() : id_(next_instance_id.fetch_add(1)) {}

ReleaseOrder::Ring& ReleaseOrder::ThisThreadsRing() {
  if (this_thread_ring.owner == id_) return *static_cast<Ring*>(this_thread_ring.ring);
  absl::MutexLock l(&rings_mu_);
  rings_.push_back(std::make_unique<Ring>());
  this_thread_ring = {id_, rings_.back().get()};
  return *rings_.back();
}

int ReleaseOrder::Received(uint64_t unique, bool is_release) {
  if (unique == 0 || unique % kStep != 0) return kOverflowToken;
  int token = kOverflowToken;
  // Counted as running before the number is marked, so a waiter that sees
  // the number also sees the RELEASE running.
  if (is_release) {
    for (size_t i = 0; i < kRunningSlots && token == kOverflowToken; ++i) {
      uint64_t free = 0;
      if (running_[i].compare_exchange_strong(free, unique, std::memory_order_seq_cst)) {
        token = static_cast<int>(i);
      }
    }
    if (token == kOverflowToken) overflow_.fetch_add(1, std::memory_order_seq_cst);
  }
  if (first_.load(std::memory_order_relaxed) == 0) {
    uint64_t zero = 0;
    first_.compare_exchange_strong(zero, unique, std::memory_order_acq_rel);
  }
  ThisThreadsRing().seen[(unique / kStep) % kRingSize].store(unique, std::memory_order_release);
  return token;
}

void ReleaseOrder::ReleaseDone(int token) {
  if (token == kOverflowToken) {
    overflow_.fetch_sub(1, std::memory_order_seq_cst);
  } else {
    running_[static_cast<size_t>(token)].store(0, std::memory_order_seq_cst);
  }
}

bool ReleaseOrder::AnyThreadReceived(uint64_t u) const {
  for (const auto& ring : rings_) {
    // A higher number there: that thread's ring has wrapped past `u` (at
    // least kRingSize numbers later), so `u` is old enough to be handled or
    // never coming.
    if (ring->seen[(u / kStep) % kRingSize].load(std::memory_order_acquire) >= u) return true;
  }
  return false;
}

bool ReleaseOrder::Pending(uint64_t unique) {
  const uint64_t first = first_.load(std::memory_order_acquire);
  const uint64_t span = kWindow * kStep;
  uint64_t from = unique > first + span ? unique - span : first;
  from -= from % kStep;
  {
    absl::ReaderMutexLock l(&rings_mu_);
    for (uint64_t u = from; u < unique; u += kStep) {
      if (!AnyThreadReceived(u)) return true;
    }
  }
  // After the numbers: a RELEASE counts as running before its number is
  // marked, so one seen above is still counted here unless it is done.
  if (overflow_.load(std::memory_order_seq_cst) > 0) return true;
  for (const auto& r : running_) {
    const uint64_t u = r.load(std::memory_order_seq_cst);
    if (u != 0 && u < unique) return true;
  }
  return false;
}

bool ReleaseOrder::WaitForEarlierReleases(uint64_t unique, std::chrono::microseconds limit) {
  if (!Pending(unique)) return false;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (Pending(unique) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

}  // namespace efuse
