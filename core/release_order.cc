#include "core/release_order.h"

#include <thread>

namespace efuse {

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
  uint64_t zero = 0;
  first_.compare_exchange_strong(zero, unique, std::memory_order_seq_cst);
  std::atomic<uint64_t>& slot = seen_[(unique / kStep) % kSlots];
  uint64_t have = slot.load(std::memory_order_relaxed);
  while (have < unique &&
         !slot.compare_exchange_weak(have, unique, std::memory_order_seq_cst)) {
  }
  return token;
}

void ReleaseOrder::ReleaseDone(int token) {
  if (token == kOverflowToken) {
    overflow_.fetch_sub(1, std::memory_order_seq_cst);
  } else {
    running_[static_cast<size_t>(token)].store(0, std::memory_order_seq_cst);
  }
}

bool ReleaseOrder::Pending(uint64_t unique) const {
  const uint64_t first = first_.load(std::memory_order_seq_cst);
  const uint64_t span = kWindow * kStep;
  uint64_t from = unique > first + span ? unique - span : first;
  from -= from % kStep;
  for (uint64_t u = from; u < unique; u += kStep) {
    // A higher number in the slot: this one is kSlots requests old, long
    // handled or never coming.
    if (seen_[(u / kStep) % kSlots].load(std::memory_order_seq_cst) < u) return true;
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
