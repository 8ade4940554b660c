// proto/reader.h — a bounds-checked reader over one request's bytes.
//
// Owns: the only way proto/ reads wire bytes. Every read states how many
// bytes it needs and fails (returns false, consumes nothing) when fewer
// remain; structs are copied out with memcpy, never aliased. Names must end
// in NUL inside the buffer. Not thread-safe (one reader per request).
#ifndef EFUSE_PROTO_READER_H_
#define EFUSE_PROTO_READER_H_

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

namespace efuse::proto {

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  bool Read(T* out) {
    static_assert(std::is_trivially_copyable_v<T>);
    return ReadInto(out, sizeof(T));
  }

  // Copies `n` bytes into `out` (n <= its size); used for versioned structs
  // whose tail an older peer does not send (the caller zeroed `out`).
  bool ReadInto(void* out, size_t n) {
    if (n > remaining()) return false;
    if (n != 0) std::memcpy(out, bytes_.data() + pos_, n);
    pos_ += n;
    return true;
  }

  bool ReadBytes(size_t n, std::span<const uint8_t>* out) {
    if (n > remaining()) return false;
    *out = bytes_.subspan(pos_, n);
    pos_ += n;
    return true;
  }

  // A NUL-terminated string; `out` excludes the NUL, which is consumed.
  bool ReadCString(std::string_view* out) {
    const uint8_t* begin = bytes_.data() + pos_;
    const void* nul = std::memchr(begin, 0, remaining());
    if (nul == nullptr) return false;
    size_t len = static_cast<const uint8_t*>(nul) - begin;
    *out = std::string_view(reinterpret_cast<const char*>(begin), len);
    pos_ += len + 1;
    return true;
  }

  bool Skip(size_t n) {
    if (n > remaining()) return false;
    pos_ += n;
    return true;
  }

  std::span<const uint8_t> Rest() {
    auto r = bytes_.subspan(pos_);
    pos_ = bytes_.size();
    return r;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

}  // namespace efuse::proto

#endif  // EFUSE_PROTO_READER_H_
