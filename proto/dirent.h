// proto/dirent.h — packing READDIR / READDIRPLUS replies.
//
// Owns: the record format (fuse_dirent / fuse_direntplus, names padded to 8
// bytes) written into a caller-supplied buffer of the size the kernel asked
// for. A record that does not fit is refused whole. Not thread-safe.
#ifndef EFUSE_PROTO_DIRENT_H_
#define EFUSE_PROTO_DIRENT_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "proto/abi.h"

namespace efuse::proto {

class DirentWriter {
 public:
  explicit DirentWriter(std::span<uint8_t> buffer) : buf_(buffer) {}

  // d_type is (mode & S_IFMT) >> 12. Returns false (writing nothing) when
  // the record does not fit or the name is empty or longer than 1024 bytes.
  bool Add(uint64_t ino, uint64_t next_offset, uint32_t mode, std::string_view name);
  bool AddPlus(const abi::EntryOut& entry, uint64_t ino, uint64_t next_offset, uint32_t mode,
               std::string_view name);

  size_t size() const { return used_; }
  std::span<const uint8_t> bytes() const { return buf_.first(used_); }

  static size_t RecordSize(std::string_view name, bool plus) {
    return abi::DirentAlign((plus ? sizeof(abi::EntryOut) : 0) + sizeof(abi::Dirent) + name.size());
  }

 private:
  bool Put(const abi::EntryOut* entry, uint64_t ino, uint64_t next_offset, uint32_t mode,
           std::string_view name);
  std::span<uint8_t> buf_;
  size_t used_ = 0;
};

}  // namespace efuse::proto

#endif  // EFUSE_PROTO_DIRENT_H_
