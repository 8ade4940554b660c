#include "core/interrupts.h"

namespace efuse {

bool InterruptTable::Interrupt(uint64_t unique) {
  if (unique == 0) return false;
  // Every slot that names it: while a call that took a Later is still
  // running, the request holds its worker's slot and its Later's both.
  bool found = false;
  for (size_t i = 0; i < total_; ++i) {
    if (slots_[i].unique.load(std::memory_order_acquire) == unique) {
      slots_[i].interrupted.store(true, std::memory_order_release);
      found = true;
    }
  }
  return found;
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
