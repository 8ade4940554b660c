// core/interrupts.h — which requests are in flight, for FUSE_INTERRUPT.
//
// Owns: a fixed array of slots, one per request a worker can have in
// flight. A worker claims its slot for the duration of a request (two atomic
// stores, no lock); INTERRUPT scans the slots (few: workers x depth) and sets
// the target's flag, which the backend sees through RequestContext.
// Thread-safe.
#ifndef EFUSE_CORE_INTERRUPTS_H_
#define EFUSE_CORE_INTERRUPTS_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace efuse {

class InterruptTable {
 public:
  struct Slot {
    std::atomic<uint64_t> unique{0};  // 0: free
    std::atomic<bool> interrupted{false};
  };

  // `slots` fixed ones (slot(i): one per worker), plus `async_slots` claimed
  // one at a time by requests answered later from another thread.
  explicit InterruptTable(size_t slots, size_t async_slots = 64)
      : size_(slots), total_(slots + async_slots), slots_(new Slot[slots + async_slots]) {}
  size_t size() const { return size_; }
  Slot* slot(size_t i) { return &slots_[i]; }

  // Claims a free async slot for `unique` (nullptr: all taken); give it back
  // with End(). Interrupt() finds it like any other.
  Slot* Claim(uint64_t unique);
  // Flags every claimed async slot (shutdown: waiting requests give up).
  void InterruptAllAsync();

  // Marks `slot` as running request `unique`.
  static void Begin(Slot* slot, uint64_t unique) {
    slot->interrupted.store(false, std::memory_order_relaxed);
    slot->unique.store(unique, std::memory_order_release);
  }
  // Frees `slot`; waits out an Interrupt() flagging it this instant, so
  // that the flag cannot land on the next request the slot is given.
  static void End(Slot* slot);

  // Flags the request `unique` if it is in flight; false if it is not (not
  // yet registered, or already answered).
  bool Interrupt(uint64_t unique);

 private:
  // Set in a slot's unique while Interrupt() flags it (no FUSE unique has
  // it: the kernel counts in steps of 2 from 0 and marks resends with bit 63).
  static constexpr uint64_t kFlagging = uint64_t{1} << 62;

  size_t size_;
  size_t total_;
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace efuse

#endif  // EFUSE_CORE_INTERRUPTS_H_
