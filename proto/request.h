// proto/request.h — decoding one FUSE request into a typed view.
//
// Owns: turning the bytes of one request (as read from /dev/fuse, or
// reassembled from a ring entry) into a Request: the header, the opcode's
// fixed struct (copied, zero-extended when an older kernel sent less), its
// names/payload (views into the caller's buffer), and the extension area
// (security contexts, supplementary groups). Every failure is a DecodeError
// with the errno to answer and a reason for the log: nothing is read out of
// bounds, nothing is trusted. Pure; thread-compatible.
#ifndef EFUSE_PROTO_REQUEST_H_
#define EFUSE_PROTO_REQUEST_H_

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "proto/abi.h"
#include "proto/opcode.h"

namespace efuse::proto {

// What the decoder must know about the connection.
struct DecodeOptions {
  uint32_t minor = abi::kKernelMinor;  // negotiated minor (before INIT: the newest)
  bool setxattr_ext = false;           // FUSE_SETXATTR_EXT negotiated
};

struct SecurityContext {
  std::string_view name;  // the xattr name, e.g. "security.selinux"
  std::span<const uint8_t> value;
};

struct Request {
  abi::InHeader header{};
  const OpcodeTraits* traits = nullptr;
  std::string_view name;          // LOOKUP..., RENAME old name, SYMLINK entry name
  std::string_view name2;         // RENAME new name, SYMLINK target
  std::span<const uint8_t> data;  // WRITE, SETXATTR value, IOCTL input, NOTIFY_REPLY, INIT rest
  std::vector<abi::ForgetOne> forgets;  // BATCH_FORGET
  std::vector<uint32_t> groups;         // FUSE_EXT_GROUPS
  std::vector<SecurityContext> security_contexts;
  uint32_t fixed_size = 0;  // bytes of the fixed struct actually sent

  abi::Opcode opcode() const { return static_cast<abi::Opcode>(header.opcode); }

  // The opcode's fixed struct. T must be the struct the traits table names
  // for this opcode (or a prefix of it); bytes not sent read as zero.
  template <typename T>
  T Arg() const {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(fixed_));
    T t;
    std::memcpy(&t, fixed_, sizeof(T));
    return t;
  }

 private:
  friend struct RequestDecoder;
  alignas(8) uint8_t fixed_[128] = {};  // largest fixed struct is SetattrIn (88)
};

struct DecodeError {
  int error = 0;              // errno for the reply (EIO, EINVAL, ENOSYS)
  const char* reason = "";    // static string for the log
  bool header_valid = false;  // false: too short to even name `unique`; no reply possible
  bool ok() const { return error == 0; }
};

// Decodes `bytes` (exactly one request) into `out`. On failure `out->header`
// and `out->traits` (nullptr: unknown opcode) are valid when
// DecodeError::header_valid is set, so the caller can reply (or not, for
// no-reply opcodes). On success header_valid is set too.
DecodeError DecodeRequest(std::span<const uint8_t> bytes, const DecodeOptions& options,
                          Request* out);

// The other direction, for tests and tools that play the kernel: a request
// with header (uid/gid 1000, pid 1), the fixed argument struct, then `tail`
// (names, data), its len filled in.
std::vector<uint8_t> EncodeRequest(abi::Opcode op, uint64_t unique, uint64_t nodeid,
                                   const void* arg, size_t arg_size, std::string_view tail = {});

}  // namespace efuse::proto

#endif  // EFUSE_PROTO_REQUEST_H_
