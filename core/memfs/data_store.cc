// core/memfs/data_store.cc — the memfd that holds memfs's file contents.
#include "core/memfs/data_store.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>

// Linux 6.3's flag; Debian 12's headers (6.1) lack it.
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

namespace efuse {

namespace {

constexpr uint64_t kBlock = 4096;
// Every slot's range lies below this; the memfd's size, set once.
constexpr uint64_t kStoreSize = static_cast<uint64_t>(DataStore::kMaxSlots) << DataStore::kSlotShift;

}  // namespace

absl::StatusOr<int> DataStore::NewMemfd() {
  // Never executable (vm.memfd_noexec=2 refuses a memfd that could be);
  // kernels before 6.3 know no such flag.
  int fd = memfd_create("efuse-memfs-data", MFD_CLOEXEC | MFD_NOEXEC_SEAL);
  if (fd < 0 && errno == EINVAL) fd = memfd_create("efuse-memfs-data", MFD_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "memfd_create for memfs's data");
  if (ftruncate(fd, static_cast<off_t>(kStoreSize)) != 0) {
    const int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, "sizing memfs's data memfd");
  }
  return fd;
}

absl::StatusOr<std::unique_ptr<DataStore>> DataStore::Create() {
  absl::StatusOr<int> fd = NewMemfd();
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<DataStore>(new DataStore(*fd));
}

absl::StatusOr<std::unique_ptr<DataStore>> DataStore::Adopt(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, "fstat of memfs's data fd");
  if (static_cast<uint64_t>(st.st_size) != kStoreSize) {
    return absl::FailedPreconditionError("the inherited fd is not memfs's data store (another size)");
  }
  return std::unique_ptr<DataStore>(new DataStore(fd));
}

DataStore::~DataStore() { close(fd_); }

std::optional<uint32_t> DataStore::TakeSlot() {
  absl::MutexLock l(&mu_);
  std::optional<uint32_t> taken;
  while (!taken && !free_.empty()) {
    const uint32_t s = free_.back();
    free_.pop_back();
    if (!IsUsed(s)) taken = s;
  }
  while (!taken && next_slot_ < kMaxSlots) {
    const uint32_t s = next_slot_++;
    if (!IsUsed(s)) taken = s;
  }
  if (taken) SetUsed(*taken, true);
  return taken;
}

void DataStore::GiveBack(uint32_t slot) {
  absl::MutexLock l(&mu_);
  if (!IsUsed(slot)) return;  // given back already: never twice in free_
  // Emptied before it is free (a punch of an empty range costs little).
  Punch(slot, 0, uint64_t{1} << kSlotShift);
  SetUsed(slot, false);
  free_.push_back(slot);
}

void DataStore::MarkUsed(uint32_t slot) {
  absl::MutexLock l(&mu_);
  SetUsed(slot, true);
}

void DataStore::SetUsed(uint32_t slot, bool used) {
  if (slot >= used_.size()) used_.resize(slot + 1, false);
  used_[slot] = used;
}

void DataStore::FreeUnused() {
  std::vector<uint32_t> unclaimed;
  {
    absl::MutexLock l(&mu_);
    // Made anew: every slot below the last claimed one that nobody claims.
    free_.clear();
    next_slot_ = static_cast<uint32_t>(used_.size());
    for (uint32_t s = 0; s < used_.size(); ++s)
      if (!used_[s]) unclaimed.push_back(s);
    // Past it, any slot holding data was taken by a server killed before
    // it journaled the file.
    uint64_t from = static_cast<uint64_t>(used_.size()) << kSlotShift;
    off_t data;
    while (from < kStoreSize && (data = lseek(fd_, static_cast<off_t>(from), SEEK_DATA)) >= 0) {
      const uint32_t s = static_cast<uint32_t>(static_cast<uint64_t>(data) >> kSlotShift);
      for (uint32_t skipped = next_slot_; skipped < s; ++skipped) free_.push_back(skipped);
      unclaimed.push_back(s);
      next_slot_ = s + 1;
      from = static_cast<uint64_t>(next_slot_) << kSlotShift;
    }
    // Emptied before anyone may take them (a successor calls this before
    // it serves; the punch is cheap on an empty range).
    for (uint32_t s : unclaimed) Punch(s, 0, uint64_t{1} << kSlotShift);
    for (uint32_t s : unclaimed) free_.push_back(s);
    // The lowest are taken first.
    std::sort(free_.begin(), free_.end(), std::greater<uint32_t>());
  }
}

ssize_t DataStore::Read(uint32_t slot, uint64_t offset, std::span<uint8_t> out) const {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(Base(slot) + offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

ssize_t DataStore::Write(uint32_t slot, uint64_t offset, std::span<const uint8_t> data) const {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(Base(slot) + offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return done > 0 ? static_cast<ssize_t>(done) : -errno;
    }
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

int DataStore::Punch(uint32_t slot, uint64_t offset, uint64_t length) const {
  if (length == 0) return 0;
  return fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(Base(slot) + offset),
                   static_cast<off_t>(length)) == 0
             ? 0
             : -errno;
}

int DataStore::WriteZeros(uint32_t slot, uint64_t offset, uint64_t length) const {
  static const uint8_t kZeros[64 << 10] = {};
  while (length > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(length, sizeof(kZeros)));
    const ssize_t n = Write(slot, offset, std::span<const uint8_t>(kZeros, chunk));
    if (n < 0) return static_cast<int>(n);
    if (static_cast<size_t>(n) < chunk) return -ENOSPC;
    offset += chunk;
    length -= chunk;
  }
  return 0;
}

std::vector<uint64_t> DataStore::AllocatedBlocks(uint32_t slot) const {
  std::vector<uint64_t> blocks;
  const uint64_t base = Base(slot);
  const uint64_t end = base + (uint64_t{1} << kSlotShift);
  uint64_t at = base;
  while (at < end) {
    const off_t data = lseek(fd_, static_cast<off_t>(at), SEEK_DATA);
    if (data < 0 || static_cast<uint64_t>(data) >= end) break;
    off_t hole = lseek(fd_, data, SEEK_HOLE);
    if (hole < 0) break;
    const uint64_t stop = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
    for (uint64_t b = (static_cast<uint64_t>(data) - base) / kBlock; b < (stop - base + kBlock - 1) / kBlock; ++b)
      blocks.push_back(b);
    at = stop;
  }
  return blocks;
}

}  // namespace efuse
