#include "core/interrupts.h"

#include <thread>

namespace efuse {

bool InterruptTable::Interrupt(uint64_t unique) {
  if (unique == 0) return false;
  // Every slot that names it: while a call that took a Later is still
  // running, the request holds its worker's slot and its Later's both.
  bool found = false;
  for (size_t i = 0; i < total_; ++i) {
    // Taken for flagging in one step, so the slot cannot be ended and
    // given to another request between the check and the flag.
    uint64_t expected = unique;
    if (slots_[i].unique.compare_exchange_strong(expected, unique | kFlagging, std::memory_order_acq_rel)) {
      slots_[i].interrupted.store(true, std::memory_order_release);
      slots_[i].unique.store(unique, std::memory_order_release);
      found = true;
    }
  }
  return found;
}

void InterruptTable::End(Slot* slot) {
  uint64_t u = slot->unique.load(std::memory_order_acquire);
  for (;;) {
    if ((u & kFlagging) != 0) {  // (two stores away from done)
      std::this_thread::yield();
      u = slot->unique.load(std::memory_order_acquire);
      continue;
    }
    if (slot->unique.compare_exchange_weak(u, 0, std::memory_order_acq_rel)) return;
  }
}

InterruptTable::Slot* InterruptTable::Claim(uint64_t unique) {
  for (size_t i = size_; i < total_; ++i) {
    uint64_t free = 0;
    // A claimed slot has unique != 0; reset the flag only once it is ours.
    if (slots_[i].unique.compare_exchange_strong(free, unique, std::memory_order_acq_rel)) {
      slots_[i].interrupted.store(false, std::memory_order_release);
      return &slots_[i];
    }
  }
  return nullptr;
}

void InterruptTable::InterruptAllAsync() {
  for (size_t i = size_; i < total_; ++i)
    if (slots_[i].unique.load(std::memory_order_acquire) != 0)
      slots_[i].interrupted.store(true, std::memory_order_release);
}

}  // namespace efuse
