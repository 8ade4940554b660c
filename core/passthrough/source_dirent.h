// core/passthrough/source_dirent.h — the records getdents64 returns.
//
// Owns: reading one struct linux_dirent64 out of a getdents64 buffer, with
// its length checked, for the listings the backend serves (ReadDir) and the
// ones it reads ahead (DirPrefetcher).
//
// Thread-safety: pure functions.
#ifndef EFUSE_CORE_PASSTHROUGH_SOURCE_DIRENT_H_
#define EFUSE_CORE_PASSTHROUGH_SOURCE_DIRENT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace efuse::passthrough {

struct SourceDirent {
  uint64_t ino = 0;
  int64_t off = 0;      // the cookie after this record
  uint16_t reclen = 0;  // bytes to the next record
  uint8_t type = 0;     // DT_*
  std::string_view name;
};

// The record at `pos` of the `len` bytes in `buf`; false if none fits there.
inline bool ReadSourceDirent(const char* buf, size_t len, size_t pos, SourceDirent* out) {
  // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
  constexpr size_t kNameAt = 19;
  if (pos + kNameAt >= len) return false;
  const char* rec = buf + pos;
  std::memcpy(&out->ino, rec, 8);
  std::memcpy(&out->off, rec + 8, 8);
  std::memcpy(&out->reclen, rec + 16, 2);
  std::memcpy(&out->type, rec + 18, 1);
  if (out->reclen <= kNameAt || out->reclen > len - pos) return false;
  out->name = std::string_view(rec + kNameAt, strnlen(rec + kNameAt, out->reclen - kNameAt));
  return true;
}

}  // namespace efuse::passthrough

#endif  // EFUSE_CORE_PASSTHROUGH_SOURCE_DIRENT_H_
