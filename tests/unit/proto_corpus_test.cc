// Decodes every seed of the request_fuzzer corpus (tests/fuzz/corpus) and
// every strict prefix of it, with the plain compiler: a seed must decode, a
// prefix must fail with a proper errno (or, for opaque tails, decode as a
// shorter request), and nothing may read out of bounds (each prefix is its
// own exact-size allocation; run under EFUSE_SANITIZE to have ASan check).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/abi.h"
#include "proto/opcode.h"
#include "proto/request.h"

#ifndef EFUSE_CORPUS_DIR
#error "EFUSE_CORPUS_DIR must name tests/fuzz/corpus"
#endif

namespace efuse::proto {
namespace {

constexpr size_t kHeader = sizeof(abi::InHeader);

struct Seed {
  std::string name;
  std::vector<uint8_t> bytes;
};

std::vector<Seed> LoadCorpus() {
  std::vector<Seed> seeds;
  for (const auto& entry : std::filesystem::directory_iterator(EFUSE_CORPUS_DIR)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    seeds.push_back({entry.path().filename().string(),
                     std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {})});
  }
  std::sort(seeds.begin(), seeds.end(),
            [](const Seed& a, const Seed& b) { return a.name < b.name; });
  return seeds;
}

const DecodeOptions kOptions[] = {
    {.minor = abi::kKernelMinor, .setxattr_ext = false},
    {.minor = abi::kKernelMinor, .setxattr_ext = true},
    {.minor = abi::kMinSupportedMinor, .setxattr_ext = false},
    {.minor = abi::kMinSupportedMinor, .setxattr_ext = true},
};

DecodeError DecodeCopy(const std::vector<uint8_t>& bytes, size_t n, bool consistent_len,
                       const DecodeOptions& options, Request* out) {
  std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + n);
  if (consistent_len && n >= sizeof(uint32_t)) {
    const uint32_t len = static_cast<uint32_t>(n);
    std::memcpy(prefix.data(), &len, sizeof(len));
  }
  return DecodeRequest(prefix, options, out);
}

TEST(ProtoCorpusTest, CorpusCoversEveryOpcode) {
  const std::vector<Seed> seeds = LoadCorpus();
  ASSERT_GE(seeds.size(), 24u) << "corpus missing at " << EFUSE_CORPUS_DIR;
  std::set<uint32_t> seen;
  for (const Seed& s : seeds) {
    ASSERT_GE(s.bytes.size(), kHeader) << s.name;
    uint32_t opcode;
    std::memcpy(&opcode, s.bytes.data() + 4, sizeof(opcode));
    seen.insert(opcode);
  }
  for (uint32_t op = 1; op <= abi::kMaxOpcode; ++op) {
    if (TraitsOf(op) != nullptr) {
      EXPECT_TRUE(seen.count(op)) << OpcodeName(op);
    }
  }
  EXPECT_TRUE(seen.count(static_cast<uint32_t>(abi::Opcode::kCuseInit)));
}

TEST(ProtoCorpusTest, EverySeedDecodes) {
  for (const Seed& s : LoadCorpus()) {
    int decoded = 0;
    for (const DecodeOptions& options : kOptions) {
      Request r;
      const DecodeError e = DecodeCopy(s.bytes, s.bytes.size(), false, options, &r);
      if (e.ok()) {
        ++decoded;
        EXPECT_NE(r.traits, nullptr) << s.name;
      } else {
        // Only SETXATTR's struct size depends on the options.
        EXPECT_EQ(r.opcode(), abi::Opcode::kSetxattr) << s.name << ": " << e.reason;
      }
    }
    EXPECT_GE(decoded, 2) << s.name;
  }
}

TEST(ProtoCorpusTest, EveryPrefixOfEverySeedFailsCleanly) {
  for (const Seed& s : LoadCorpus()) {
    SCOPED_TRACE(s.name);
    for (const DecodeOptions& options : kOptions) {
      Request whole;
      if (!DecodeCopy(s.bytes, s.bytes.size(), false, options, &whole).ok()) continue;
      for (size_t n = 0; n < s.bytes.size(); ++n) {
        SCOPED_TRACE(n);
        // As read: header.len still names the full request.
        Request r;
        const DecodeError e = DecodeCopy(s.bytes, n, false, options, &r);
        EXPECT_EQ(e.error, EIO);
        EXPECT_EQ(e.header_valid, n >= kHeader);
        EXPECT_STRNE(e.reason, "");

        // header.len rewritten to the prefix: a shorter request.
        Request c;
        const DecodeError ce = DecodeCopy(s.bytes, n, true, options, &c);
        if (n < kHeader) {
          EXPECT_EQ(ce.error, EIO);
          EXPECT_FALSE(ce.header_valid);
          continue;
        }
        EXPECT_TRUE(ce.header_valid);
        if (ce.ok()) {
          // Only opaque tails (INIT's grown struct, NOTIFY_REPLY data, ...)
          // can lose bytes and stay well-formed.
          ASSERT_NE(c.traits, nullptr);
          EXPECT_EQ(c.traits->tail, Tail::kRest) << c.traits->name;
        } else {
          EXPECT_TRUE(ce.error == EIO || ce.error == EINVAL) << ce.error << " " << ce.reason;
          EXPECT_STRNE(ce.reason, "");
        }
      }
    }
  }
}

}  // namespace
}  // namespace efuse::proto
