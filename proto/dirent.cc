#include "proto/dirent.h"

#include <cstring>

namespace efuse::proto {

// The kernel rejects longer names in a dirent (FUSE_NAME_MAX).
constexpr size_t kNameMax = 1024;

bool DirentWriter::Put(const abi::EntryOut* entry, uint64_t ino, uint64_t next_offset,
                       uint32_t mode, std::string_view name) {
  if (name.empty() || name.size() > kNameMax) return false;
  const size_t rec = RecordSize(name, entry != nullptr);
  if (rec > buf_.size() - used_) return false;
  uint8_t* p = buf_.data() + used_;
  std::memset(p, 0, rec);  // padding must be zeros, never stale bytes
  if (entry != nullptr) {
    std::memcpy(p, entry, sizeof(*entry));
    p += sizeof(*entry);
  }
  abi::Dirent d{ino, next_offset, static_cast<uint32_t>(name.size()), (mode & 0170000) >> 12};
  std::memcpy(p, &d, sizeof(d));
  std::memcpy(p + sizeof(d), name.data(), name.size());
  used_ += rec;
  return true;
}

bool DirentWriter::Add(uint64_t ino, uint64_t next_offset, uint32_t mode, std::string_view name) {
  return Put(nullptr, ino, next_offset, mode, name);
}

bool DirentWriter::AddPlus(const abi::EntryOut& entry, uint64_t ino, uint64_t next_offset,
                           uint32_t mode, std::string_view name) {
  return Put(&entry, ino, next_offset, mode, name);
}

}  // namespace efuse::proto
