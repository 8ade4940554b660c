// core/memfs/file_data.cc — sparse block storage for memfs regular files.
#include "core/memfs/file_data.h"

#include <algorithm>
#include <cstring>
#include <limits>

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

size_t FileData::Read(uint64_t offset, std::span<uint8_t> out) const {
  if (offset >= size_) return 0;
  const size_t n =
      static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
  auto it = blocks_.lower_bound(offset / kBlockSize);
  size_t done = 0;
  while (done < n) {
    const uint64_t pos = offset + done;
    const uint64_t index = pos / kBlockSize;
    const size_t in_block = pos % kBlockSize;
    const size_t chunk = static_cast<size_t>(
        std::min<uint64_t>(kBlockSize - in_block, n - done));
    if (it != blocks_.end() && it->first == index) {
      std::memcpy(out.data() + done, it->second.get() + in_block, chunk);
      if (done + chunk < n) ++it;  // a step past a node's end climbs the tree
    } else {
      std::memset(out.data() + done, 0, chunk);
    }
    done += chunk;
  }
  return n;
}

uint8_t* FileData::BlockForWrite(uint64_t index) {
  auto [it, inserted] = blocks_.try_emplace(index);
  if (inserted) {
    if (!space_->Reserve(kBlockSize)) {
      blocks_.erase(it);
      return nullptr;
    }
    it->second = std::make_unique<uint8_t[]>(kBlockSize);  // zero-filled
  }
  return it->second.get();
}

size_t FileData::Write(uint64_t offset, std::span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    const uint64_t pos = offset + done;
    const size_t in_block = pos % kBlockSize;
    const size_t chunk = static_cast<size_t>(
        std::min<uint64_t>(kBlockSize - in_block, data.size() - done));
    uint8_t* block = BlockForWrite(pos / kBlockSize);
    if (block == nullptr) break;
    std::memcpy(block + in_block, data.data() + done, chunk);
    done += chunk;
  }
  size_ = std::max<uint64_t>(size_, offset + done);
  return done;
}

void FileData::FreeFrom(uint64_t first_index) {
  auto it = blocks_.lower_bound(first_index);
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
      auto it = blocks_.find(first_free);
      if (it != blocks_.end()) {
        std::memset(it->second.get() + in_block, 0, kBlockSize - in_block);
      }
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
       it != blocks_.end() && it->first <= last; ++it) {
    ++present;
  }
  const uint64_t missing = last - first + 1 - present;
  if (missing == 0) return true;
  // Reserve everything first so a failure allocates nothing.
  if (missing > space_->limit() / kBlockSize ||
      !space_->Reserve(missing * kBlockSize)) {
    return false;
  }
  for (uint64_t index = first; index <= last; ++index) {
    auto [it, inserted] = blocks_.try_emplace(index);
    if (inserted) it->second = std::make_unique<uint8_t[]>(kBlockSize);
  }
  return true;
}

void FileData::PunchHole(uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  auto it = blocks_.lower_bound(offset / kBlockSize);
  while (it != blocks_.end() && it->first * kBlockSize < end) {
    const uint64_t block_start = it->first * kBlockSize;
    const uint64_t from = std::max(offset, block_start);
    const uint64_t to = std::min(end, block_start + kBlockSize);
    if (from == block_start && to == block_start + kBlockSize) {
      it = blocks_.erase(it);
      space_->Release(kBlockSize);
    } else {
      std::memset(it->second.get() + (from - block_start), 0, to - from);
      ++it;
    }
  }
}

bool FileData::ZeroRange(uint64_t offset, uint64_t length) {
  if (!Allocate(offset, length)) return false;
  const uint64_t end = offset + length;
  for (auto it = blocks_.lower_bound(offset / kBlockSize);
       it != blocks_.end() && it->first * kBlockSize < end; ++it) {
    const uint64_t block_start = it->first * kBlockSize;
    const uint64_t from = std::max(offset, block_start);
    const uint64_t to = std::min(end, block_start + kBlockSize);
    std::memset(it->second.get() + (from - block_start), 0, to - from);
  }
  return true;
}

std::optional<uint64_t> FileData::SeekData(uint64_t offset) const {
  if (offset >= size_) return std::nullopt;
  auto it = blocks_.lower_bound(offset / kBlockSize);
  if (it == blocks_.end()) return std::nullopt;
  const uint64_t pos = std::max(offset, it->first * kBlockSize);
  if (pos >= size_) return std::nullopt;
  return pos;
}

std::optional<uint64_t> FileData::SeekHole(uint64_t offset) const {
  if (offset >= size_) return std::nullopt;
  uint64_t index = offset / kBlockSize;
  for (auto it = blocks_.lower_bound(index);
       it != blocks_.end() && it->first == index; ++it) {
    ++index;
  }
  return std::min(std::max(offset, index * kBlockSize), size_);
}

uint64_t FileData::NextAllocated(uint64_t offset) const {
  auto it = blocks_.lower_bound(offset / kBlockSize);
  if (it == blocks_.end()) return std::numeric_limits<uint64_t>::max();
  return it->first * kBlockSize;
}

}  // namespace efuse
