#include "proto/init.h"

#include <algorithm>
#include <cerrno>

namespace efuse::proto {

namespace {
constexpr uint32_t kPageSize = 4096;
constexpr uint32_t kMaxMaxPages = 256;  // the kernel's default max_pages_limit
}  // namespace

InitResult NegotiateInit(const abi::InitIn& in, size_t in_size, const InitConfig& config) {
  InitResult r;
  if (in.major < abi::kKernelMajor) {
    r.error = EPROTO;
    return r;
  }
  if (in.major > abi::kKernelMajor) {
    // Protocol rule: answer with our major only; the kernel retries with it.
    r.major_retry = true;
    r.out.major = abi::kKernelMajor;
    r.out.minor = abi::kKernelMinor;
    r.out_size = abi::kCompatInitOutSize;
    return r;
  }
  const uint32_t minor = std::min(in.minor, abi::kKernelMinor);
  if (minor < abi::kMinSupportedMinor) {
    r.error = EPROTO;
    return r;
  }
  uint64_t offered = in.flags;
  if ((in.flags & abi::init::kInitExt) != 0 && in_size >= offsetof(abi::InitIn, flags2) + 4)
    offered |= uint64_t{in.flags2} << 32;

  uint64_t chosen = offered & config.wanted_flags;
  if (config.request_timeout == 0) chosen &= ~abi::init::kRequestTimeout;
  // Flags that only describe the INIT message itself are not capabilities.
  chosen &= ~(abi::init::kInitExt | abi::init::kInitReserved);
  const bool ext = (offered & abi::init::kInitExt) != 0;
  if (!ext) chosen &= 0xffffffffULL;

  r.conn.major = abi::kKernelMajor;
  r.conn.minor = minor;
  r.conn.kernel_flags = offered;
  r.conn.max_readahead = std::min(in.max_readahead, config.max_readahead);

  uint32_t max_write = std::max<uint32_t>(config.max_write, kPageSize);
  uint16_t max_pages = 0;
  if ((chosen & abi::init::kMaxPages) != 0) {
    // 64-bit: max_write + 4095 wraps for max_write > 0xfffff000.
    max_pages = static_cast<uint16_t>(
        std::min<uint64_t>((uint64_t{max_write} + kPageSize - 1) / kPageSize, kMaxMaxPages));
    max_write = std::min<uint32_t>(max_write, max_pages * kPageSize);
    // The FUSE ring sizes its payload buffers from max_pages (see
    // kUringMinPayload); reads may then be larger than max_write.
    if ((chosen & abi::init::kOverIoUring) != 0)
      max_pages = std::max<uint16_t>(max_pages, kUringMinPayload / kPageSize);
  } else {
    max_write = std::min<uint32_t>(max_write, 32 * kPageSize);  // kernel's default cap
  }
  r.conn.max_write = max_write;
  r.conn.max_pages = max_pages;
  r.conn.flags = chosen;

  r.out.major = abi::kKernelMajor;
  r.out.minor = abi::kKernelMinor;  // the kernel takes the smaller of the two itself
  r.out.max_readahead = r.conn.max_readahead;
  r.out.flags = static_cast<uint32_t>(chosen) | (ext ? static_cast<uint32_t>(abi::init::kInitExt) : 0);
  r.out.flags2 = ext ? static_cast<uint32_t>(chosen >> 32) : 0;
  r.out.max_background = config.max_background;
  r.out.congestion_threshold = config.congestion_threshold;
  r.out.max_write = max_write;
  r.out.time_gran = config.time_gran;
  r.out.max_pages = max_pages;
  if ((chosen & abi::init::kPassthrough) != 0) r.out.max_stack_depth = config.max_stack_depth;
  if ((chosen & abi::init::kRequestTimeout) != 0) {
    r.out.request_timeout = config.request_timeout;
    r.conn.request_timeout = config.request_timeout;
  }
  r.out_size = minor < 5 ? abi::kCompatInitOutSize
               : minor < 23 ? abi::kCompat22InitOutSize
                            : sizeof(abi::InitOut);
  return r;
}

}  // namespace efuse::proto
