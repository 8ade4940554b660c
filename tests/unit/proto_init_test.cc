// Tests of proto/init.h: INIT negotiation, from the kernel's InitIn (as
// decoded from bytes by DecodeRequest) to the InitOut we answer.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "proto/abi.h"
#include "proto/init.h"
#include "proto/reply.h"
#include "proto/request.h"
#include "tests/fuzz/request_builder.h"

namespace efuse::proto {
namespace {

namespace init = abi::init;

abi::InitIn KernelInit(uint32_t major, uint32_t minor, uint64_t flags = 0) {
  abi::InitIn in{};
  in.major = major;
  in.minor = minor;
  in.max_readahead = 128 * 1024;
  in.flags = static_cast<uint32_t>(flags);
  in.flags2 = static_cast<uint32_t>(flags >> 32);
  return in;
}

InitResult Negotiate(const abi::InitIn& in, const InitConfig& config = {}) {
  return NegotiateInit(in, sizeof(in), config);
}

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

TEST(NegotiateInitTest, OlderMajorIsEproto) {
  for (uint32_t major : {0u, 5u, 6u}) {
    const InitResult r = Negotiate(KernelInit(major, 45));
    EXPECT_EQ(r.error, EPROTO) << major;
    EXPECT_FALSE(r.major_retry);
    EXPECT_EQ(r.out_size, 0u);
  }
}

TEST(NegotiateInitTest, NewerMajorAsksForARetry) {
  for (uint32_t major : {8u, 100u, 0xffffffffu}) {
    const InitResult r = Negotiate(KernelInit(major, 0));
    EXPECT_EQ(r.error, 0);
    EXPECT_TRUE(r.major_retry);
    EXPECT_EQ(r.out_size, 8u);  // only major/minor
    EXPECT_EQ(r.out.major, 7u);
    EXPECT_EQ(r.out.minor, abi::kKernelMinor);
    // The 8-byte reply on the wire.
    Reply reply(1);
    reply.AddStruct(r.out, r.out_size);
    std::vector<uint8_t> bytes(reply.size());
    ASSERT_EQ(reply.CopyTo(bytes), 24u);
    uint32_t major_minor[2];
    std::memcpy(major_minor, bytes.data() + 16, 8);
    EXPECT_EQ(major_minor[0], 7u);
    EXPECT_EQ(major_minor[1], abi::kKernelMinor);
  }
}

TEST(NegotiateInitTest, MinorsBelowTheOldestSupportedAreEproto) {
  for (uint32_t minor : {0u, 5u, 22u, 30u}) {
    const InitResult r = Negotiate(KernelInit(7, minor));
    EXPECT_EQ(r.error, EPROTO) << minor;
    EXPECT_FALSE(r.major_retry);
  }
}

TEST(NegotiateInitTest, MinorIsTheSmallerOfBoth) {
  for (uint32_t minor : {31u, 38u, 45u, 46u, 99u}) {
    const InitResult r = Negotiate(KernelInit(7, minor));
    ASSERT_EQ(r.error, 0) << minor;
    EXPECT_FALSE(r.major_retry);
    EXPECT_EQ(r.conn.major, 7u);
    EXPECT_EQ(r.conn.minor, std::min(minor, 45u));
    EXPECT_EQ(r.out.major, 7u);
    EXPECT_EQ(r.out.minor, 45u);  // we state ours; the kernel takes the minimum
    EXPECT_EQ(r.out_size, sizeof(abi::InitOut));
    EXPECT_EQ(r.out_size, 64u);
  }
}

TEST(NegotiateInitTest, OnlyFlagsBothSidesNameAreChosen) {
  InitConfig config;
  config.wanted_flags =
      init::kAsyncRead | init::kWritebackCache | init::kParallelDirops | init::kSecurityCtx;
  const uint64_t offered =
      init::kAsyncRead | init::kBigWrites | init::kWritebackCache | init::kDontMask;
  const InitResult r = Negotiate(KernelInit(7, 45, offered), config);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.conn.kernel_flags, offered);
  EXPECT_EQ(r.conn.flags, init::kAsyncRead | init::kWritebackCache);
  EXPECT_TRUE(r.conn.Has(init::kWritebackCache));
  EXPECT_FALSE(r.conn.Has(init::kParallelDirops));
  EXPECT_FALSE(r.conn.Has(init::kBigWrites));
  EXPECT_EQ(r.out.flags, init::kAsyncRead | init::kWritebackCache);
  EXPECT_EQ(r.out.flags2, 0u);

  // Nothing wanted: nothing chosen.
  const InitResult none = Negotiate(KernelInit(7, 45, offered), InitConfig{});
  EXPECT_EQ(none.conn.flags, 0u);
  EXPECT_EQ(none.out.flags, 0u);
  // Nothing offered: nothing chosen.
  const InitResult bare = Negotiate(KernelInit(7, 45, 0), config);
  EXPECT_EQ(bare.conn.flags, 0u);
  EXPECT_EQ(bare.out.flags, 0u);
}

TEST(NegotiateInitTest, HighFlagsTravelInFlags2WithInitExt) {
  InitConfig config;
  config.wanted_flags = init::kAsyncRead | init::kSecurityCtx | init::kCreateSuppGroup |
                        init::kOverIoUring | init::kInitExt;
  const uint64_t offered = init::kAsyncRead | init::kInitExt | init::kSecurityCtx |
                           init::kCreateSuppGroup | init::kPassthrough;
  const InitResult r = Negotiate(KernelInit(7, 45, offered), config);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.conn.kernel_flags, offered);
  // INIT_EXT describes the message, not a capability.
  EXPECT_EQ(r.conn.flags, init::kAsyncRead | init::kSecurityCtx | init::kCreateSuppGroup);
  EXPECT_EQ(r.out.flags, init::kAsyncRead | init::kInitExt);
  EXPECT_EQ(r.out.flags2, (init::kSecurityCtx | init::kCreateSuppGroup) >> 32);

  // INIT_EXT is echoed whenever the kernel offered it, even if not wanted.
  InitConfig no_ext = config;
  no_ext.wanted_flags &= ~init::kInitExt;
  const InitResult r2 = Negotiate(KernelInit(7, 45, offered), no_ext);
  EXPECT_EQ(r2.out.flags, init::kAsyncRead | init::kInitExt);
  EXPECT_EQ(r2.out.flags2, (init::kSecurityCtx | init::kCreateSuppGroup) >> 32);
}

TEST(NegotiateInitTest, Flags2IsIgnoredWithoutInitExt) {
  InitConfig config;
  config.wanted_flags = init::kAsyncRead | init::kSecurityCtx | init::kOverIoUring;
  // flags2 bits set, but INIT_EXT not: they are noise from an old kernel.
  abi::InitIn in = KernelInit(7, 45, init::kAsyncRead);
  in.flags2 = static_cast<uint32_t>((init::kSecurityCtx | init::kOverIoUring) >> 32);
  const InitResult r = Negotiate(in, config);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.conn.kernel_flags, init::kAsyncRead);
  EXPECT_EQ(r.conn.flags, init::kAsyncRead);
  EXPECT_EQ(r.out.flags, init::kAsyncRead);  // no INIT_EXT
  EXPECT_EQ(r.out.flags2, 0u);
}

TEST(NegotiateInitTest, Flags2IsIgnoredWhenNotSent) {
  InitConfig config;
  config.wanted_flags = init::kAsyncRead | init::kSecurityCtx;
  abi::InitIn in = KernelInit(7, 45, init::kAsyncRead | init::kInitExt | init::kSecurityCtx);
  // The kernel sent only the 16-byte struct: flags2 is not there to read.
  const InitResult r = NegotiateInit(in, abi::kCompatInitInSize, config);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.conn.flags, init::kAsyncRead);
  EXPECT_EQ(r.out.flags2, 0u);
  // 20 bytes reach flags2.
  const InitResult r20 = NegotiateInit(in, 20, config);
  EXPECT_EQ(r20.conn.flags, init::kAsyncRead | init::kSecurityCtx);
}

TEST(NegotiateInitTest, ReservedBit31IsNeverChosen) {
  InitConfig config;
  config.wanted_flags = ~uint64_t{0};
  const uint64_t offered = init::kInitReserved | init::kAsyncRead;
  const InitResult r = Negotiate(KernelInit(7, 45, offered), config);
  EXPECT_EQ(r.conn.flags, init::kAsyncRead);
  EXPECT_EQ(r.out.flags, init::kAsyncRead);
}

TEST(NegotiateInitTest, MaxPagesChosenDerivesPagesFromMaxWrite) {
  InitConfig config;
  config.wanted_flags = init::kMaxPages;
  const struct {
    uint32_t max_write, want_write;
    uint16_t want_pages;
  } kCases[] = {
      {1u << 20, 1u << 20, 256},  // 1 MiB = 256 pages
      {2u << 20, 1u << 20, 256},  // capped at 256 pages
      {10000, 10000, 3},          // ceil(10000 / 4096) = 3; max_write kept
      {4096, 4096, 1},
      {4097, 4097, 2},
      {100, 4096, 1},  // raised to one page
      {0, 4096, 1},
      {0xffffffffu, 1u << 20, 256},  // no wrap-around in the page count
      {0xfffff001u, 1u << 20, 256},
  };
  for (const auto& c : kCases) {
    config.max_write = c.max_write;
    const InitResult r = Negotiate(KernelInit(7, 45, init::kMaxPages), config);
    ASSERT_EQ(r.error, 0);
    EXPECT_TRUE(r.conn.Has(init::kMaxPages));
    EXPECT_EQ(r.conn.max_pages, c.want_pages) << c.max_write;
    EXPECT_EQ(r.conn.max_write, c.want_write) << c.max_write;
    EXPECT_EQ(r.out.max_pages, c.want_pages) << c.max_write;
    EXPECT_EQ(r.out.max_write, c.want_write) << c.max_write;
    EXPECT_EQ(r.out.flags, init::kMaxPages);
  }
}

TEST(NegotiateInitTest, FuseRingKeepsPayloadBigEnoughForLargeXattrs) {
  // The kernel sizes ring payload buffers from max_pages and crashes on a
  // request that does not fit: a small max_write must not shrink them.
  InitConfig config;
  config.wanted_flags = init::kMaxPages | init::kOverIoUring | init::kInitExt;
  config.max_write = 4096;
  const InitResult r = Negotiate(
      KernelInit(7, 45, init::kMaxPages | init::kOverIoUring | init::kInitExt), config);
  ASSERT_EQ(r.error, 0);
  EXPECT_TRUE(r.conn.Has(init::kOverIoUring));
  EXPECT_EQ(r.conn.max_write, 4096u);
  EXPECT_GE(uint32_t{r.out.max_pages} * 4096, kUringMinPayload);
  // Without the ring, max_pages follows max_write.
  const InitResult plain = Negotiate(KernelInit(7, 45, init::kMaxPages), config);
  EXPECT_EQ(plain.out.max_pages, 1u);
}

TEST(NegotiateInitTest, WithoutMaxPagesMaxWriteIsCappedAt128KiB) {
  for (uint64_t wanted : {uint64_t{0}, init::kMaxPages}) {
    for (uint64_t offered : {uint64_t{0}, init::kMaxPages}) {
      if ((wanted & offered) != 0) continue;
      InitConfig config;
      config.wanted_flags = wanted;
      for (uint32_t max_write : {1u << 20, 128u * 1024, 64u * 1024, 0xffffffffu, 1u}) {
        config.max_write = max_write;
        const InitResult r = Negotiate(KernelInit(7, 45, offered), config);
        const uint32_t want = std::clamp<uint32_t>(max_write, 4096, 128 * 1024);
        EXPECT_EQ(r.conn.max_write, want) << max_write;
        EXPECT_EQ(r.out.max_write, want) << max_write;
        EXPECT_EQ(r.conn.max_pages, 0u);
        EXPECT_EQ(r.out.max_pages, 0u);
        EXPECT_FALSE(r.conn.Has(init::kMaxPages));
      }
    }
  }
}

TEST(NegotiateInitTest, LimitsAndTunablesReachTheReply) {
  InitConfig config;
  config.max_readahead = 1 << 20;
  config.max_background = 100;
  config.congestion_threshold = 75;
  config.time_gran = 1000;
  abi::InitIn in = KernelInit(7, 45);
  in.max_readahead = 65536;
  InitResult r = Negotiate(in, config);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.conn.max_readahead, 65536u);  // the smaller
  EXPECT_EQ(r.out.max_readahead, 65536u);
  EXPECT_EQ(r.out.max_background, 100u);
  EXPECT_EQ(r.out.congestion_threshold, 75u);
  EXPECT_EQ(r.out.time_gran, 1000u);
  EXPECT_EQ(r.out.map_alignment, 0u);
  EXPECT_EQ(r.out.max_stack_depth, 0u);
  EXPECT_EQ(r.out.request_timeout, 0u);
  EXPECT_TRUE(AllZero(r.out.unused, sizeof(r.out.unused)));

  in.max_readahead = 4 << 20;
  r = Negotiate(in, config);
  EXPECT_EQ(r.out.max_readahead, 1u << 20);
}

TEST(NegotiateInitTest, ReplyGoldenBytes) {
  InitConfig config;
  config.wanted_flags = init::kAsyncRead | init::kMaxPages | init::kOverIoUring;
  config.max_write = 1 << 20;
  config.max_readahead = 1 << 20;
  config.max_background = 64;
  config.congestion_threshold = 48;
  config.time_gran = 1;
  const InitResult r = Negotiate(
      KernelInit(7, 45, init::kAsyncRead | init::kMaxPages | init::kInitExt | init::kOverIoUring),
      config);
  ASSERT_EQ(r.error, 0);
  Reply reply(0x33);
  reply.AddStruct(r.out, r.out_size);
  std::vector<uint8_t> got(reply.size());
  ASSERT_EQ(reply.CopyTo(got), 16u + 64u);
  std::vector<uint8_t> want;
  auto le = [&want](uint64_t v, int n) {  // n <= 8
    for (int i = 0; i < n; ++i) want.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  le(80, 4);          // len
  le(0, 4);           // error
  le(0x33, 8);        // unique
  le(7, 4);           // major
  le(45, 4);          // minor
  le(128 * 1024, 4);  // max_readahead (the kernel's, smaller)
  const uint64_t low = init::kAsyncRead | init::kMaxPages | init::kInitExt;
  le(low, 4);                        // flags
  le(64, 2);                         // max_background
  le(48, 2);                         // congestion_threshold
  le(1 << 20, 4);                    // max_write
  le(1, 4);                          // time_gran
  le(256, 2);                        // max_pages
  le(0, 2);                          // map_alignment
  le(init::kOverIoUring >> 32, 4);   // flags2
  le(0, 4);                          // max_stack_depth
  le(0, 2);                          // request_timeout
  want.resize(want.size() + 22, 0);  // unused[11]
  EXPECT_EQ(got, want);
}

TEST(NegotiateInitTest, FromDecodedOldAndNewInitRequests) {
  InitConfig config;
  config.wanted_flags = init::kAsyncRead | init::kSecurityCtx;
  const abi::InitIn in = KernelInit(7, 45, init::kAsyncRead | init::kInitExt | init::kSecurityCtx);
  for (size_t sent : {size_t{16}, size_t{64}}) {
    const auto bytes = test::RequestBuilder(abi::Opcode::kInit).Struct(in, sent).Build();
    Request req;
    ASSERT_TRUE(DecodeRequest(bytes, {}, &req).ok());
    ASSERT_EQ(req.fixed_size, sent);
    const InitResult r = NegotiateInit(req.Arg<abi::InitIn>(), req.fixed_size, config);
    ASSERT_EQ(r.error, 0);
    EXPECT_EQ(r.conn.Has(init::kSecurityCtx), sent == 64) << sent;
    EXPECT_TRUE(r.conn.Has(init::kAsyncRead));
  }
}

TEST(NegotiateInitTest, RequestTimeoutOnlyWhenAskedAndOffered) {
  InitConfig config;
  config.wanted_flags = init::kInitExt | init::kRequestTimeout;
  config.request_timeout = 30;
  // Offered: the flag and the seconds go out together.
  InitResult r = Negotiate(KernelInit(7, 45, init::kInitExt | init::kRequestTimeout), config);
  EXPECT_TRUE(r.conn.Has(init::kRequestTimeout));
  EXPECT_EQ(r.out.flags2 & (init::kRequestTimeout >> 32), init::kRequestTimeout >> 32);
  EXPECT_EQ(r.out.request_timeout, 30);
  EXPECT_EQ(r.conn.request_timeout, 30);
  // A kernel before 7.43 does not offer it: neither is sent.
  r = Negotiate(KernelInit(7, 42, init::kInitExt), config);
  EXPECT_FALSE(r.conn.Has(init::kRequestTimeout));
  EXPECT_EQ(r.out.request_timeout, 0);
  // No timeout configured: the flag is not claimed even if wanted.
  config.request_timeout = 0;
  r = Negotiate(KernelInit(7, 45, init::kInitExt | init::kRequestTimeout), config);
  EXPECT_FALSE(r.conn.Has(init::kRequestTimeout));
  EXPECT_EQ(r.out.request_timeout, 0);
}

}  // namespace
}  // namespace efuse::proto
