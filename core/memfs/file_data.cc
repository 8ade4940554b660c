// core/memfs/file_data.cc — the size and allocated blocks of a memfs file,
// its bytes in the DataStore.
#include "core/memfs/file_data.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace efuse {

bool SpaceAccount::Reserve(uint64_t bytes) {
  uint64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (bytes > limit_ || used > limit_ - bytes) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes,
                                        std::memory_order_relaxed));
  return true;
}

void SpaceAccount::Release(uint64_t bytes) {
  used_.fetch_sub(bytes, std::memory_order_relaxed);
}

FileData::~FileData() { space_->Release(allocated_bytes()); }

void FileData::Restore(uint64_t size) {
  size_ = size;
  // A write killed before its size was journaled may have left bytes past
  // the size: nothing past it may be read back but zeros. (Blocks that
  // were preallocated past the end go with them.)
  store_->Punch(slot_, size, (uint64_t{1} << DataStore::kSlotShift) - size);
  for (uint64_t b : store_->AllocatedBlocks(slot_)) blocks_.insert(blocks_.end(), b);
  space_->Charge(allocated_bytes());
}

size_t FileData::Read(uint64_t offset, std::span<uint8_t> out) const {
  if (offset >= size_) return 0;
  const size_t n =
      static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
  // Holes read as zeros from the store itself.
  const ssize_t got = store_->Read(slot_, offset, out.first(n));
  return got > 0 ? static_cast<size_t>(got) : 0;
}

size_t FileData::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return 0;
  const uint64_t first = offset / kBlockSize;
  const uint64_t last = (offset + data.size() - 1) / kBlockSize;
  // Budget for the missing blocks, in order, up to the first that does not
  // fit: the write stops before it.
  std::vector<uint64_t> added;
  uint64_t index = first;
  for (; index <= last; ++index) {
    if (blocks_.contains(index)) continue;
    if (!space_->Reserve(kBlockSize)) break;
    added.push_back(index);
  }
  // Up to the first block that did not fit (none of it if that is the
  // block the write starts in).
  const size_t len = index > last              ? data.size()
                     : index * kBlockSize <= offset ? 0
                                                    : static_cast<size_t>(index * kBlockSize - offset);
  const ssize_t written = len == 0 ? 0 : store_->Write(slot_, offset, data.first(len));
  const uint64_t done = written > 0 ? static_cast<uint64_t>(written) : 0;
  for (uint64_t b : added) {
    if (b * kBlockSize < offset + done) {
      blocks_.insert(b);
    } else {
      space_->Release(kBlockSize);  // reserved, never reached
    }
  }
  if (done > 0) size_ = std::max<uint64_t>(size_, offset + done);
  return static_cast<size_t>(done);
}

void FileData::FreeFrom(uint64_t first_index) {
  auto it = blocks_.lower_bound(first_index);
  if (it == blocks_.end()) return;
  const uint64_t end = (*blocks_.rbegin() + 1) * kBlockSize;
  store_->Punch(slot_, first_index * kBlockSize, end - first_index * kBlockSize);
  const uint64_t freed =
      static_cast<uint64_t>(std::distance(it, blocks_.end())) * kBlockSize;
  blocks_.erase(it, blocks_.end());
  space_->Release(freed);
}

void FileData::Truncate(uint64_t new_size) {
  if (new_size < size_) {
    uint64_t first_free = new_size / kBlockSize;
    const size_t in_block = new_size % kBlockSize;
    if (in_block != 0) {
      // The kernel zeroes the part of a page a punch does not free.
      if (blocks_.contains(first_free)) store_->Punch(slot_, new_size, kBlockSize - in_block);
      ++first_free;
    }
    FreeFrom(first_free);
  }
  size_ = new_size;
}

bool FileData::Allocate(uint64_t offset, uint64_t length) {
  if (length == 0) return true;
  const uint64_t first = offset / kBlockSize;
  const uint64_t last = (offset + length - 1) / kBlockSize;
  uint64_t present = 0;
  for (auto it = blocks_.lower_bound(first);
       it != blocks_.end() && *it <= last; ++it) {
    ++present;
  }
  const uint64_t missing = last - first + 1 - present;
  if (missing == 0) return true;
  // Reserve everything first so a failure allocates nothing.
  if (missing > space_->limit() / kBlockSize ||
      !space_->Reserve(missing * kBlockSize)) {
    return false;
  }
  // The missing blocks, written as zeros run by run (the present ones keep
  // their bytes).
  for (uint64_t index = first; index <= last;) {
    if (blocks_.contains(index)) {
      ++index;
      continue;
    }
    uint64_t end = index + 1;
    while (end <= last && !blocks_.contains(end)) ++end;
    if (store_->WriteZeros(slot_, index * kBlockSize, (end - index) * kBlockSize) != 0) {
      // The memory is not there (a cgroup limit): what this call added is
      // taken back, so the store and the block set agree.
      for (uint64_t b = first; b < end; ++b)
        if (!blocks_.contains(b)) store_->Punch(slot_, b * kBlockSize, kBlockSize);
      space_->Release(missing * kBlockSize);
      return false;
    }
    index = end;
  }
  for (uint64_t index = first; index <= last; ++index) blocks_.insert(index);
  return true;
}

void FileData::PunchHole(uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  // One punch: whole pages are freed, the parts of the end pages zeroed.
  if (blocks_.lower_bound(offset / kBlockSize) != blocks_.end()) store_->Punch(slot_, offset, length);
  auto it = blocks_.lower_bound((offset + kBlockSize - 1) / kBlockSize);
  while (it != blocks_.end() && (*it + 1) * kBlockSize <= end) {
    it = blocks_.erase(it);
    space_->Release(kBlockSize);
  }
}

bool FileData::ZeroRange(uint64_t offset, uint64_t length) {
  if (!Allocate(offset, length)) return false;
  // Every block is allocated now: zeros written over them stay allocated.
  return store_->WriteZeros(slot_, offset, length) == 0;
}

std::optional<uint64_t> FileData::SeekData(uint64_t offset) const {
  if (offset >= size_) return std::nullopt;
  auto it = blocks_.lower_bound(offset / kBlockSize);
  if (it == blocks_.end()) return std::nullopt;
  const uint64_t pos = std::max(offset, *it * kBlockSize);
  if (pos >= size_) return std::nullopt;
  return pos;
}

std::optional<uint64_t> FileData::SeekHole(uint64_t offset) const {
  if (offset >= size_) return std::nullopt;
  uint64_t index = offset / kBlockSize;
  for (auto it = blocks_.lower_bound(index);
       it != blocks_.end() && *it == index; ++it) {
    ++index;
  }
  return std::min(std::max(offset, index * kBlockSize), size_);
}

uint64_t FileData::NextAllocated(uint64_t offset) const {
  auto it = blocks_.lower_bound(offset / kBlockSize);
  if (it == blocks_.end()) return std::numeric_limits<uint64_t>::max();
  return *it * kBlockSize;
}

}  // namespace efuse
