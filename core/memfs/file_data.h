// core/memfs/file_data.h — sparse contents of one memfs regular file.
//
// Owns: SpaceAccount (the file system's byte budget, shared by every inode)
// and FileData (a file's logical size and the set of its allocated
// fixed-size blocks; the bytes live in the file's slot of the DataStore,
// core/memfs/data_store.h, and a missing block is a hole that reads as
// zeros).
//
// Invariant kept by every FileData method: bytes of allocated blocks that lie
// at or past size() are zero, so growing a file (truncate or a write past EOF)
// never exposes stale data.
//
// Thread-safety: SpaceAccount is thread-safe (one atomic counter).
// FileData is thread-compatible: memfs guards each one by its inode's mutex.
#ifndef EFUSE_CORE_MEMFS_FILE_DATA_H_
#define EFUSE_CORE_MEMFS_FILE_DATA_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "absl/container/btree_set.h"
#include "core/memfs/data_store.h"

namespace efuse {

// A byte budget: Reserve fails instead of passing the limit.
class SpaceAccount {
 public:
  explicit SpaceAccount(uint64_t limit) : limit_(limit) {}
  SpaceAccount(const SpaceAccount&) = delete;
  SpaceAccount& operator=(const SpaceAccount&) = delete;

  // Takes `bytes` from the budget; false (and nothing taken) if they don't fit.
  bool Reserve(uint64_t bytes);
  // Takes `bytes` whatever the limit: what a successor finds already used.
  void Charge(uint64_t bytes) { used_.fetch_add(bytes, std::memory_order_relaxed); }
  void Release(uint64_t bytes);
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

class FileData {
 public:
  // 4 KiB: the page size, statfs's block size and the unit fsx-style small
  // writes touch, so a small file costs one block and SEEK_DATA/SEEK_HOLE
  // answer at page granularity.
  static constexpr uint64_t kBlockSize = 4096;

  // Every block allocation and free goes through `space`; the bytes are in
  // `slot` of `store`. Both must outlive this object. The destructor gives
  // the budget back and leaves the bytes (a retiring server's successor
  // finds them); Truncate(0) frees them.
  FileData(SpaceAccount* space, const DataStore* store, uint32_t slot)
      : space_(space), store_(store), slot_(slot) {}
  ~FileData();
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;

  uint64_t size() const { return size_; }
  uint32_t slot() const { return slot_; }
  // A successor's: the file had `size` bytes, and its blocks are what the
  // store holds in its slot (charged to the budget whatever its limit).
  void Restore(uint64_t size);
  uint64_t allocated_bytes() const { return blocks_.size() * kBlockSize; }

  // Copies bytes at `offset` into `out`, stopping at size(); returns the count
  // (0 at or past end of file).
  size_t Read(uint64_t offset, std::span<uint8_t> out) const;

  // Writes `data` at `offset`, allocating blocks as needed. When the budget
  // runs out it stops before the first block it could not allocate and
  // returns the bytes written so far (possibly 0). Extends size() to cover
  // what was written. The caller bounds offset + data.size().
  size_t Write(uint64_t offset, std::span<const uint8_t> data);

  // Sets size() to `new_size`: shrinking frees the blocks past it (including
  // any preallocated past the old size) and zeroes the tail of the last one;
  // growing leaves a hole.
  void Truncate(uint64_t new_size);

  // Allocates (zeroed) every missing block touching [offset, offset + length),
  // all or nothing: false if the budget cannot cover them. size() unchanged.
  bool Allocate(uint64_t offset, uint64_t length);

  // Zeroes [offset, offset + length) and frees the blocks wholly inside it.
  void PunchHole(uint64_t offset, uint64_t length);

  // Zeroes [offset, offset + length) leaving it allocated (all or nothing:
  // false if allocation does not fit). size() unchanged.
  bool ZeroRange(uint64_t offset, uint64_t length);

  // lseek(SEEK_DATA / SEEK_HOLE): nullopt means ENXIO (offset >= size(), or
  // no data after it). There is always a hole at size().
  std::optional<uint64_t> SeekData(uint64_t offset) const;
  std::optional<uint64_t> SeekHole(uint64_t offset) const;

  // The start of the first allocated block at or after the block holding
  // `offset`, or UINT64_MAX; lets a copy skip a run of holes in one step.
  uint64_t NextAllocated(uint64_t offset) const;
  bool IsAllocated(uint64_t offset) const {
    return blocks_.count(offset / kBlockSize) != 0;
  }

 private:
  void FreeFrom(uint64_t first_index);

  SpaceAccount* const space_;
  const DataStore* const store_;
  const uint32_t slot_;
  uint64_t size_ = 0;
  // The allocated block indices, ordered (SEEK_DATA/HOLE and truncation
  // walk them in order). The store's pages and this set agree: a block is
  // allocated here exactly when its page holds data there.
  absl::btree_set<uint64_t> blocks_;
};

}  // namespace efuse

#endif  // EFUSE_CORE_MEMFS_FILE_DATA_H_
