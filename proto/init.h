// proto/init.h — INIT negotiation.
//
// Owns: choosing the protocol version and capabilities from what the kernel
// offers and what the server wants: the smallest common minor, flags chosen
// explicitly (only bits both sides name), limits clamped, the reply cut to
// the size the kernel's minor expects. Pure; thread-compatible.
#ifndef EFUSE_PROTO_INIT_H_
#define EFUSE_PROTO_INIT_H_

#include <cstddef>
#include <cstdint>

#include "proto/abi.h"

namespace efuse::proto {

// What the server asks for.
struct InitConfig {
  uint64_t wanted_flags = 0;        // abi::init::* bits the server can handle
  uint32_t max_write = 1 << 20;     // bytes per WRITE
  uint32_t max_readahead = 1 << 20;
  uint16_t max_background = 64;
  uint16_t congestion_threshold = 48;
  uint32_t time_gran = 1;           // nanoseconds
  // With kPassthrough: how deep backing files may be stacked (1: backing
  // files live on a non-stacked fs). The kernel accepts 1..2.
  uint32_t max_stack_depth = 1;
  // Seconds after which the kernel aborts the connection if a request is
  // still unanswered (FUSE_REQUEST_TIMEOUT, 7.43); 0: never. Sent only
  // when kRequestTimeout is wanted and offered.
  uint16_t request_timeout = 0;
};

// With FUSE_OVER_IO_URING, each ring entry's payload buffer holds a whole
// request after its op struct, and the kernel (6.14..6.18 at least) hits a
// BUG() instead of failing a request that does not fit. The largest
// non-WRITE request is SETXATTR (a 255-byte name and a 64 KiB value), so
// the negotiated max_pages keep the payload at least this big.
inline constexpr uint32_t kUringMinPayload = 65536 + 4096;

// What both sides agreed.
struct Connection {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t kernel_flags = 0;  // everything the kernel offered
  uint64_t flags = 0;         // negotiated: offered & wanted
  uint32_t max_write = 0;
  uint32_t max_readahead = 0;
  uint16_t max_pages = 0;
  uint16_t request_timeout = 0;  // seconds, 0 when not agreed
  bool Has(uint64_t flag) const { return (flags & flag) != 0; }
};

struct InitResult {
  int error = 0;             // errno to answer instead (EPROTO: unusable version)
  bool major_retry = false;  // kernel's major is newer: answered with ours, expect a new INIT
  abi::InitOut out{};
  size_t out_size = 0;       // bytes of `out` to send
  Connection conn;
};

// `in_size` is how many bytes of InitIn the kernel sent (>= 16).
InitResult NegotiateInit(const abi::InitIn& in, size_t in_size, const InitConfig& config);

}  // namespace efuse::proto

#endif  // EFUSE_PROTO_INIT_H_
