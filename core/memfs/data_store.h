// core/memfs/data_store.h — where memfs keeps the bytes of its files.
//
// Owns: one memfd holding every regular file's contents. File slot s owns
// the byte range [s << kSlotShift, (s + 1) << kSlotShift) of it, so a file
// is one sparse range: its holes are the memfd's holes, SEEK_DATA and
// SEEK_HOLE are the memfd's own, and freeing a file punches its range.
// The memfd outlives the server when a supervisor (or a service manager's
// fd store) holds it: a successor adopts it and finds every byte a dead
// server wrote (memfs's journal, core/memfs/memfs_journal.cc, says which
// slot is whose).
//
// Reads and writes go through pread/pwrite, never a mapping: a read of a
// hole in a shared mapping of tmpfs would allocate the page.
//
// Thread-safety: the I/O calls are thread-safe (the kernel orders them);
// slots are taken and given back under the store's own mutex.
#ifndef EFUSE_CORE_MEMFS_DATA_STORE_H_
#define EFUSE_CORE_MEMFS_DATA_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace efuse {

class DataStore {
 public:
  // 1 TiB per file: memfs's largest file (MemFs::kMaxFileSize).
  static constexpr int kSlotShift = 40;
  // 2^22 slots of 2^40 bytes stay below the 2^63 a file offset reaches.
  static constexpr uint32_t kMaxSlots = 1u << 22;

  // A new, empty store (its memfd sized once to every slot's range: holes
  // cost nothing).
  static absl::StatusOr<std::unique_ptr<DataStore>> Create();
  // The memfd of a new, empty store, for a supervisor to hold and its
  // servers to Adopt.
  static absl::StatusOr<int> NewMemfd();
  // The store behind an inherited fd (closed with the object). Every slot
  // counts as free until MarkUsed.
  static absl::StatusOr<std::unique_ptr<DataStore>> Adopt(int fd);
  ~DataStore();
  DataStore(const DataStore&) = delete;
  DataStore& operator=(const DataStore&) = delete;

  int fd() const { return fd_; }

  // A free slot (its range is empty), or nullopt when all are taken. A
  // slot is never given twice before it is given back.
  std::optional<uint32_t> TakeSlot();
  // Empties the slot's range and makes it free.
  void GiveBack(uint32_t slot);
  // A successor's: `slot` belongs to a file found in the journal. Then
  // FreeUnused empties the ranges of the slots nobody claimed (a server
  // may have died between a file's end and the punch of its range).
  void MarkUsed(uint32_t slot);
  void FreeUnused();

  // pread/pwrite within a slot: the byte count, or -errno.
  ssize_t Read(uint32_t slot, uint64_t offset, std::span<uint8_t> out) const;
  ssize_t Write(uint32_t slot, uint64_t offset, std::span<const uint8_t> data) const;
  // Punches [offset, offset + length) (whole pages freed; partial ones
  // zeroed by the kernel). 0 or -errno.
  int Punch(uint32_t slot, uint64_t offset, uint64_t length) const;
  // Writes zeros over [offset, offset + length), allocating its pages.
  // Not fallocate: tmpfs keeps a fallocated page "not up to date", and
  // SEEK_DATA, which a successor rebuilds a file's blocks from, reports it
  // as a hole. 0 or -errno.
  int WriteZeros(uint32_t slot, uint64_t offset, uint64_t length) const;
  // The allocated pages of a slot, as 4 KiB block indices in order (a
  // successor rebuilding a file's block set).
  std::vector<uint64_t> AllocatedBlocks(uint32_t slot) const;

 private:
  explicit DataStore(int fd) : fd_(fd) {}
  bool IsUsed(uint32_t slot) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return slot < used_.size() && used_[slot];
  }
  void SetUsed(uint32_t slot, bool used) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static uint64_t Base(uint32_t slot) { return static_cast<uint64_t>(slot) << kSlotShift; }

  const int fd_;
  absl::Mutex mu_;
  uint32_t next_slot_ ABSL_GUARDED_BY(mu_) = 0;  // never taken at or past it
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> used_ ABSL_GUARDED_BY(mu_);  // taken (or claimed: MarkUsed)
};

}  // namespace efuse

#endif  // EFUSE_CORE_MEMFS_DATA_STORE_H_
