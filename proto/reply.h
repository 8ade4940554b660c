// proto/reply.h — building one reply (or notification) as iovecs.
//
// Owns: the out-header and the reply's shape: a fixed struct copied into the
// Reply's own storage, then at most a few payload spans that are referenced,
// not copied (READ data stays in the buffer the backend wrote it into).
// Struct sizes are cut to what the negotiated minor expects. One Reply per
// request; not thread-safe; payload spans must outlive Iov().
#ifndef EFUSE_PROTO_REPLY_H_
#define EFUSE_PROTO_REPLY_H_

#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "proto/abi.h"

namespace efuse::proto {

class Reply {
 public:
  static constexpr int kMaxPayloads = 3;
  static constexpr size_t kInlineCapacity = 320;  // StatxOut (288) is the largest

  explicit Reply(uint64_t unique) { header_.unique = unique; }

  // A reply carrying only -errno (errno > 0).
  static Reply Error(uint64_t unique, int errno_value) {
    Reply r(unique);
    r.header_.error = -errno_value;
    return r;
  }
  // A notification (unique 0, error = notify code).
  static Reply Notify(abi::NotifyCode code) {
    Reply r(0);
    r.header_.error = static_cast<int32_t>(code);
    return r;
  }

  // Appends the first `size` bytes of `s` to the inline part (size <= sizeof s;
  // used to cut a struct to an older minor's size).
  template <typename T>
  void AddStruct(const T& s, size_t size = sizeof(T)) {
    static_assert(std::is_trivially_copyable_v<T>);
    AddInline(&s, size < sizeof(T) ? size : sizeof(T));
  }
  void AddInline(const void* p, size_t n);
  // References `bytes` (not copied); at most kMaxPayloads.
  void AddPayload(std::span<const uint8_t> bytes);
  void AddPayload(std::string_view s) {
    AddPayload(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  }

  int32_t error() const { return header_.error; }
  uint64_t unique() const { return header_.unique; }
  size_t size() const;  // total bytes including the header

  // The iovecs to write; valid until this Reply changes or dies.
  std::span<const iovec> Iov();
  // Copies the whole message into `out` (tests, and transports that need one
  // contiguous buffer); returns bytes written or 0 if it does not fit.
  size_t CopyTo(std::span<uint8_t> out);

 private:
  abi::OutHeader header_{};
  alignas(8) uint8_t inline_[kInlineCapacity];
  size_t inline_size_ = 0;
  std::span<const uint8_t> payloads_[kMaxPayloads];
  int num_payloads_ = 0;
  iovec iov_[2 + kMaxPayloads];
};

// Size of fuse_entry_out / fuse_attr_out that a kernel speaking `minor` expects.
size_t EntryOutSize(uint32_t minor);
size_t AttrOutSize(uint32_t minor);

}  // namespace efuse::proto

#endif  // EFUSE_PROTO_REPLY_H_
