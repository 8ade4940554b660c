#include "core/interrupts.h"

namespace efuse {

bool InterruptTable::Interrupt(uint64_t unique) {
  if (unique == 0) return false;
  for (size_t i = 0; i < size_; ++i) {
    if (slots_[i].unique.load(std::memory_order_acquire) == unique) {
      slots_[i].interrupted.store(true, std::memory_order_release);
      return true;
    }
  }
  return false;
}

}  // namespace efuse
