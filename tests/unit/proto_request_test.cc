// Byte-level tests of proto/request.h (DecodeRequest) and proto/opcode.h.
//
// Every opcode in the traits table gets one well-formed request built byte by
// byte; its fixed struct must round-trip through Arg<T>(), its names, payload
// and forgets must come out right, and every strict truncation of it must fail
// with the errno the decoder documents, without reading past the buffer (each
// truncation is its own exact-size heap allocation, so ASan sees overreads).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "proto/abi.h"
#include "proto/opcode.h"
#include "proto/request.h"
#include "tests/fuzz/request_builder.h"

namespace efuse::proto {
namespace {

using abi::Opcode;
using test::AppendValue;
using test::RequestBuilder;

constexpr size_t kHeader = sizeof(abi::InHeader);

uint32_t Op(Opcode op) { return static_cast<uint32_t>(op); }

std::string Hex(std::span<const uint8_t> b) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s += kDigits[c >> 4];
    s += kDigits[c & 15];
    s += ' ';
  }
  return s;
}

std::string Str(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

template <typename T>
std::vector<uint8_t> Raw(const T& v) {
  std::vector<uint8_t> out;
  AppendValue(out, v);
  return out;
}

template <typename T>
std::vector<uint8_t> Bytes(std::initializer_list<T> values) {
  std::vector<uint8_t> out;
  for (const T& v : values) AppendValue(out, v);
  return out;
}

// Little-endian encoders for hand-written golden requests.
void Le16(std::vector<uint8_t>& b, uint16_t v) {
  for (int i = 0; i < 2; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Le32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Le64(std::vector<uint8_t>& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Decodes a private, exactly-sized copy of `bytes`.
DecodeError Decode(std::span<const uint8_t> bytes, Request* out,
                   const DecodeOptions& options = {}) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  // The views in `out` must not outlive `copy`; tests that inspect views
  // call DecodeInPlace instead.
  DecodeError e = DecodeRequest(copy, options, out);
  out->name = {};
  out->name2 = {};
  out->data = {};
  out->security_contexts.clear();
  return e;
}

DecodeError DecodeInPlace(const std::vector<uint8_t>& bytes, Request* out,
                          const DecodeOptions& options = {}) {
  return DecodeRequest(bytes, options, out);
}

// ---------------------------------------------------------------------------
// The per-opcode table of well-formed requests.

struct OpCase {
  std::string label;
  uint32_t opcode = 0;
  DecodeOptions options;
  std::vector<uint8_t> bytes;                     // the whole request
  uint32_t fixed_size = 0;                        // struct bytes sent (what fixed_size must report)
  std::function<void(const Request&)> check_arg;  // Arg<T>() == what was sent
  std::string name, name2, data;                  // expected views
  std::vector<abi::ForgetOne> forgets;
  // Consistent-length truncations (header.len = bytes kept): fewer argument
  // bytes than `min_fixed` fail with EIO; past that, `tail_cut_error` (0: a
  // shorter request that still decodes, e.g. opaque data).
  uint32_t min_fixed = 0;
  int tail_cut_error = 0;
};

template <typename T>
std::function<void(const Request&)> ArgEquals(const T& want) {
  // No padding, so byte equality is field equality.
  static_assert(std::has_unique_object_representations_v<T>);
  return [want](const Request& r) {
    const T got = r.Arg<T>();
    EXPECT_EQ(Hex(Raw(got)), Hex(Raw(want)));
  };
}

class CaseMaker {
 public:
  // An op whose fixed struct is `in`, followed by what `tail` appends.
  // `sent`: bytes of `in` on the wire (a prefix, for older struct forms).
  template <typename T>
  CaseMaker& Add(Opcode op, const T& in, std::function<void(RequestBuilder&)> tail = {},
                 int tail_cut_error = 0, size_t sent = sizeof(T)) {
    OpCase c;
    c.opcode = Op(op);
    c.label = OpcodeName(c.opcode);
    RequestBuilder b(op);
    b.Unique(0x1000 + cases_.size()).NodeId(0x2000 + cases_.size());
    b.Struct(in, sent);
    if (tail) tail(b);
    c.bytes = b.Build();
    c.fixed_size = static_cast<uint32_t>(sent);
    c.min_fixed = static_cast<uint32_t>(sent);
    c.check_arg = ArgEquals(in);
    c.tail_cut_error = tail_cut_error;
    cases_.push_back(std::move(c));
    return *this;
  }
  // An op without a fixed struct.
  CaseMaker& AddNoStruct(uint32_t opcode, std::function<void(RequestBuilder&)> tail = {},
                         int tail_cut_error = 0) {
    OpCase c;
    c.opcode = opcode;
    c.label = OpcodeName(opcode);
    RequestBuilder b(opcode);
    b.Unique(0x1000 + cases_.size()).NodeId(0x2000 + cases_.size());
    if (tail) tail(b);
    c.bytes = b.Build();
    c.tail_cut_error = tail_cut_error;
    cases_.push_back(std::move(c));
    return *this;
  }
  // Adjusts the case added last.
  OpCase& Last() { return cases_.back(); }
  std::vector<OpCase> Take() { return std::move(cases_); }

 private:
  std::vector<OpCase> cases_;
};

abi::ReadIn SampleReadIn(uint32_t flags) {
  return {.fh = 0xf00d0001,
          .offset = 0x123456789ULL,
          .size = 65536,
          .read_flags = abi::kReadLockowner,
          .lock_owner = 0x0a0b0c0d0e0f1011ULL,
          .flags = flags,
          .padding = 0};
}

abi::ReleaseIn SampleReleaseIn() {
  return {
      .fh = 0xf00d0002, .flags = O_RDWR, .release_flags = abi::kReleaseFlush, .lock_owner = 0x77};
}

abi::LkIn SampleLkIn(uint32_t type) {
  return {.fh = 0xf00d0003,
          .owner = 0xabcdef,
          .lk = {.start = 10, .end = 0x7fffffffffffffffULL, .type = type, .pid = 999},
          .lk_flags = abi::kLkFlock,
          .padding = 0};
}

abi::CopyFileRangeIn SampleCopyIn() {
  return {.fh_in = 1,
          .off_in = 2,
          .nodeid_out = 3,
          .fh_out = 4,
          .off_out = 5,
          .len = 0x100000000ULL,
          .flags = 0};
}

auto Names(std::string a) {
  return [a](RequestBuilder& b) { b.Name(a); };
}
auto Names(std::string a, std::string c) {
  return [a, c](RequestBuilder& b) { b.Name(a).Name(c); };
}

std::vector<OpCase> AllCases() {
  CaseMaker m;
  m.AddNoStruct(Op(Opcode::kLookup), Names("hello.txt"), EINVAL);
  m.Last().name = "hello.txt";
  m.Add(Opcode::kForget, abi::ForgetIn{.nlookup = 7});
  m.Add(Opcode::kGetattr,
        abi::GetattrIn{.getattr_flags = abi::kGetattrFh, .dummy = 0, .fh = 0xfeed});
  m.Add(Opcode::kSetattr, abi::SetattrIn{.valid = abi::kFattrMode | abi::kFattrSize | abi::kFattrFh,
                                         .padding = 0,
                                         .fh = 11,
                                         .size = 12,
                                         .lock_owner = 13,
                                         .atime = 14,
                                         .mtime = 15,
                                         .ctime = 16,
                                         .atimensec = 17,
                                         .mtimensec = 18,
                                         .ctimensec = 19,
                                         .mode = S_IFREG | 0640,
                                         .unused4 = 0,
                                         .uid = 21,
                                         .gid = 22,
                                         .unused5 = 0});
  m.AddNoStruct(Op(Opcode::kReadlink));
  m.AddNoStruct(Op(Opcode::kSymlink), Names("link", "../target/file"), EINVAL);
  m.Last().name = "link";
  m.Last().name2 = "../target/file";
  m.Add(Opcode::kMknod,
        abi::MknodIn{.mode = S_IFCHR | 0600, .rdev = 0x0103, .umask = 022, .padding = 0},
        Names("dev"), EINVAL);
  m.Last().name = "dev";
  m.Add(Opcode::kMkdir, abi::MkdirIn{.mode = 0755, .umask = 022}, Names("dir"), EINVAL);
  m.Last().name = "dir";
  m.AddNoStruct(Op(Opcode::kUnlink), Names("gone"), EINVAL);
  m.Last().name = "gone";
  m.AddNoStruct(Op(Opcode::kRmdir), Names("olddir"), EINVAL);
  m.Last().name = "olddir";
  m.Add(Opcode::kRename, abi::RenameIn{.newdir = 77}, Names("a", "bb"), EINVAL);
  m.Last().name = "a";
  m.Last().name2 = "bb";
  m.Add(Opcode::kLink, abi::LinkIn{.oldnodeid = 88}, Names("hard"), EINVAL);
  m.Last().name = "hard";
  m.Add(Opcode::kOpen,
        abi::OpenIn{.flags = O_RDWR | O_APPEND, .open_flags = abi::kOpenKillSuidgid});
  m.Add(Opcode::kRead, SampleReadIn(O_RDONLY));
  m.Add(
      Opcode::kWrite,
      abi::WriteIn{.fh = 5,
                   .offset = 4096,
                   .size = 11,
                   .write_flags = abi::kWriteCache | abi::kWriteLockowner,
                   .lock_owner = 99,
                   .flags = O_WRONLY,
                   .padding = 0},
      [](RequestBuilder& b) { b.Bytes("hello world"); }, EIO);
  m.Last().data = "hello world";
  m.AddNoStruct(Op(Opcode::kStatfs));
  m.Add(Opcode::kRelease, SampleReleaseIn());
  m.Add(Opcode::kFsync, abi::FsyncIn{.fh = 6, .fsync_flags = abi::kFsyncFdatasync, .padding = 0});
  // Without FUSE_SETXATTR_EXT: only {size, flags}; the value holds a NUL.
  {
    const abi::SetxattrIn in{.size = 5, .flags = XATTR_CREATE, .setxattr_flags = 0, .padding = 0};
    m.Add(
        Opcode::kSetxattr, in,
        [](RequestBuilder& b) { b.Name("user.key").Bytes(std::string_view("v\0lue", 5)); }, EINVAL,
        8);
    OpCase& c = m.Last();
    c.label = "SETXATTR(compat)";
    c.name = "user.key";
    c.data = std::string("v\0lue", 5);
  }
  m.Add(
      Opcode::kSetxattr,
      abi::SetxattrIn{.size = 3,
                      .flags = XATTR_REPLACE,
                      .setxattr_flags = abi::kSetxattrAclKillSgid,
                      .padding = 0},
      [](RequestBuilder& b) { b.Name("system.posix_acl_access").Bytes("abc"); }, EINVAL);
  m.Last().label = "SETXATTR(ext)";
  m.Last().options.setxattr_ext = true;
  m.Last().name = "system.posix_acl_access";
  m.Last().data = "abc";
  m.Add(Opcode::kGetxattr, abi::GetxattrIn{.size = 256, .padding = 0}, Names("user.key"), EINVAL);
  m.Last().name = "user.key";
  m.Add(Opcode::kListxattr, abi::GetxattrIn{.size = 4096, .padding = 0});
  m.AddNoStruct(Op(Opcode::kRemovexattr), Names("user.key"), EINVAL);
  m.Last().name = "user.key";
  m.Add(Opcode::kFlush, abi::FlushIn{.fh = 8, .unused = 0, .padding = 0, .lock_owner = 0x42});
  m.Add(Opcode::kInit,
        abi::InitIn{.major = 7,
                    .minor = 45,
                    .max_readahead = 131072,
                    .flags = static_cast<uint32_t>(abi::init::kAsyncRead | abi::init::kInitExt),
                    .flags2 = static_cast<uint32_t>(abi::init::kOverIoUring >> 32),
                    .unused = {}});
  m.Last().min_fixed = abi::kCompatInitInSize;  // 16..63 bytes decode as an older INIT
  m.Add(Opcode::kOpendir, abi::OpenIn{.flags = O_RDONLY | O_DIRECTORY, .open_flags = 0});
  m.Add(Opcode::kReaddir, SampleReadIn(O_RDONLY | O_DIRECTORY));
  m.Add(Opcode::kReleasedir, SampleReleaseIn());
  m.Add(Opcode::kFsyncdir, abi::FsyncIn{.fh = 9, .fsync_flags = 0, .padding = 0});
  m.Add(Opcode::kGetlk, SampleLkIn(F_RDLCK));
  m.Add(Opcode::kSetlk, SampleLkIn(F_WRLCK));
  m.Add(Opcode::kSetlkw, SampleLkIn(F_UNLCK));
  m.Add(Opcode::kAccess, abi::AccessIn{.mask = R_OK | W_OK, .padding = 0});
  m.Add(Opcode::kCreate,
        abi::CreateIn{.flags = O_CREAT | O_WRONLY | O_TRUNC,
                      .mode = S_IFREG | 0644,
                      .umask = 022,
                      .open_flags = abi::kOpenKillSuidgid},
        Names("new.txt"), EINVAL);
  m.Last().name = "new.txt";
  m.Add(Opcode::kInterrupt, abi::InterruptIn{.unique = 0x1234});
  m.Add(Opcode::kBmap, abi::BmapIn{.block = 100, .blocksize = 4096, .padding = 0});
  m.AddNoStruct(Op(Opcode::kDestroy));
  m.Add(
      Opcode::kIoctl,
      abi::IoctlIn{
          .fh = 10, .flags = 0, .cmd = 0x80045401, .arg = 0x7ffc0000, .in_size = 4, .out_size = 8},
      [](RequestBuilder& b) { b.Bytes(std::string_view("\x01\x00\x02\x03", 4)); }, EINVAL);
  m.Last().data = std::string("\x01\x00\x02\x03", 4);
  m.Add(Opcode::kPoll, abi::PollIn{.fh = 11, .kh = 0xaa55, .flags = 1, .events = 0x19});
  m.Add(Opcode::kNotifyReply,
        abi::NotifyRetrieveIn{
            .dummy1 = 0, .offset = 8192, .size = 6, .dummy2 = 0, .dummy3 = 0, .dummy4 = 0},
        [](RequestBuilder& b) { b.Bytes("stored"); });
  m.Last().data = "stored";
  m.Add(
      Opcode::kBatchForget, abi::BatchForgetIn{.count = 2, .dummy = 0},
      [](RequestBuilder& b) {
        b.Struct(abi::ForgetOne{.nodeid = 10, .nlookup = 1})
            .Struct(abi::ForgetOne{.nodeid = 11, .nlookup = 2});
      },
      EIO);
  m.Last().forgets = {{10, 1}, {11, 2}};
  m.Add(Opcode::kFallocate,
        abi::FallocateIn{.fh = 12, .offset = 0, .length = 1 << 20, .mode = 1, .padding = 0});
  m.Add(Opcode::kReaddirplus, SampleReadIn(O_RDONLY | O_DIRECTORY));
  m.Add(Opcode::kRename2, abi::Rename2In{.newdir = 99, .flags = 1, .padding = 0}, Names("x", "y"),
        EINVAL);
  m.Last().name = "x";
  m.Last().name2 = "y";
  m.Add(Opcode::kLseek, abi::LseekIn{.fh = 13, .offset = 77, .whence = SEEK_DATA, .padding = 0});
  m.Add(Opcode::kCopyFileRange, SampleCopyIn());
  m.AddNoStruct(Op(Opcode::kSetupmapping),
                [](RequestBuilder& b) { b.Bytes("0123456789abcdef0123456789abcdef01234567"); });
  m.Last().data = "0123456789abcdef0123456789abcdef01234567";
  m.AddNoStruct(Op(Opcode::kRemovemapping), [](RequestBuilder& b) { b.Bytes("removeme"); });
  m.Last().data = "removeme";
  m.Add(Opcode::kSyncfs, abi::SyncfsIn{.padding = 0});
  m.Add(Opcode::kTmpfile,
        abi::CreateIn{.flags = O_RDWR, .mode = S_IFREG | 0600, .umask = 077, .open_flags = 0},
        Names("/"), EINVAL);
  m.Last().name = "/";
  m.Add(Opcode::kStatx, abi::StatxIn{.getattr_flags = abi::kGetattrFh,
                                     .reserved = 0,
                                     .fh = 14,
                                     .sx_flags = 0x800,
                                     .sx_mask = 0xfff});
  m.Add(Opcode::kCopyFileRange64, SampleCopyIn());
  // CUSE_INIT: cuse_init_in {major, minor, unused, flags}, opaque to proto.
  m.AddNoStruct(Op(Opcode::kCuseInit), [](RequestBuilder& b) {
    b.Struct(uint32_t{7}).Struct(uint32_t{45}).Struct(uint32_t{0}).Struct(uint32_t{0});
  });
  {
    std::vector<uint8_t> d;
    AppendValue(d, uint32_t{7});
    AppendValue(d, uint32_t{45});
    AppendValue(d, uint64_t{0});
    m.Last().data = Str(d);
  }
  return m.Take();
}

std::set<uint32_t> KnownOpcodes() {
  std::set<uint32_t> ops;
  for (uint32_t op = 1; op <= abi::kMaxOpcode; ++op) {
    if (TraitsOf(op) != nullptr) ops.insert(op);
  }
  ops.insert(Op(Opcode::kCuseInit));
  return ops;
}

// ---------------------------------------------------------------------------
// The traits table.

TEST(OpcodeTraitsTest, KnowsExactlyTheKernelOpcodes) {
  for (uint32_t op = 1; op <= abi::kMaxOpcode; ++op) {
    const bool hole = op == 7 || op == 19;  // never assigned (old GETDIR, unused)
    EXPECT_EQ(TraitsOf(op) == nullptr, hole) << op;
  }
  EXPECT_EQ(TraitsOf(0), nullptr);
  EXPECT_EQ(TraitsOf(abi::kMaxOpcode + 1), nullptr);
  ASSERT_NE(TraitsOf(Op(Opcode::kCuseInit)), nullptr);
  EXPECT_STREQ(OpcodeName(Op(Opcode::kCuseInit)), "CUSE_INIT");
  EXPECT_STREQ(OpcodeName(Op(Opcode::kLookup)), "LOOKUP");
  EXPECT_STREQ(OpcodeName(Op(Opcode::kCopyFileRange64)), "COPY_FILE_RANGE_64");
  EXPECT_STREQ(OpcodeName(7), "UNKNOWN");
  EXPECT_STREQ(OpcodeName(0xffffffff), "UNKNOWN");
}

TEST(OpcodeTraitsTest, OnlyForgetsAndNotifyReplyGetNoReply) {
  for (uint32_t op : KnownOpcodes()) {
    const bool none = op == Op(Opcode::kForget) || op == Op(Opcode::kBatchForget) ||
                      op == Op(Opcode::kNotifyReply);
    EXPECT_EQ(TraitsOf(op)->no_reply, none) << OpcodeName(op);
    EXPECT_LE(TraitsOf(op)->min_in_size, TraitsOf(op)->in_size) << OpcodeName(op);
  }
}

TEST(OpcodeTraitsTest, EveryOpcodeHasAWellFormedCase) {
  std::set<uint32_t> covered;
  for (const OpCase& c : AllCases()) {
    covered.insert(c.opcode);
    // The struct a case sends is the one the table names (SETXATTR's compat
    // form and INIT's minimum are the documented exceptions).
    const OpcodeTraits* t = TraitsOf(c.opcode);
    ASSERT_NE(t, nullptr) << c.label;
    if (c.label != "SETXATTR(compat)") {
      EXPECT_EQ(c.fixed_size, t->in_size) << c.label;
    }
  }
  EXPECT_EQ(covered, KnownOpcodes());
}

// ---------------------------------------------------------------------------
// Well-formed requests and their truncations, for every opcode.

TEST(DecodeRequestTest, EveryOpcodeDecodes) {
  for (const OpCase& c : AllCases()) {
    SCOPED_TRACE(c.label);
    for (uint32_t minor : {abi::kMinSupportedMinor, abi::kKernelMinor}) {
      DecodeOptions options = c.options;
      options.minor = minor;
      Request r;
      const DecodeError e = DecodeInPlace(c.bytes, &r, options);
      ASSERT_TRUE(e.ok()) << e.reason;
      EXPECT_EQ(e.error, 0);
      EXPECT_TRUE(e.header_valid);
      ASSERT_EQ(r.traits, TraitsOf(c.opcode));
      EXPECT_EQ(r.header.opcode, c.opcode);
      EXPECT_EQ(static_cast<uint32_t>(r.opcode()), c.opcode);
      EXPECT_EQ(r.header.len, c.bytes.size());
      EXPECT_EQ(r.header.unique & ~uint64_t{0xff}, 0x1000u);
      EXPECT_EQ(r.header.nodeid - r.header.unique, 0x1000u);
      EXPECT_EQ(r.header.uid, 1000u);
      EXPECT_EQ(r.header.gid, 1001u);
      EXPECT_EQ(r.header.pid, 4242u);
      EXPECT_EQ(r.header.total_extlen, 0u);
      EXPECT_EQ(r.fixed_size, c.fixed_size);
      if (c.check_arg) c.check_arg(r);
      EXPECT_EQ(r.name, c.name);
      EXPECT_EQ(r.name2, c.name2);
      EXPECT_EQ(Str(r.data), c.data);
      ASSERT_EQ(r.forgets.size(), c.forgets.size());
      for (size_t i = 0; i < c.forgets.size(); ++i) {
        EXPECT_EQ(r.forgets[i].nodeid, c.forgets[i].nodeid);
        EXPECT_EQ(r.forgets[i].nlookup, c.forgets[i].nlookup);
      }
      EXPECT_TRUE(r.groups.empty());
      EXPECT_TRUE(r.security_contexts.empty());
      // Views point into the request, after the header.
      if (!r.name.empty()) {
        EXPECT_GE(reinterpret_cast<const uint8_t*>(r.name.data()), c.bytes.data() + kHeader);
      }
      if (!r.data.empty()) {
        EXPECT_EQ(r.data.data() + r.data.size(), c.bytes.data() + c.bytes.size());
      }
    }
  }
}

TEST(DecodeRequestTest, EveryTruncationWithTheFullLenFailsWithEio) {
  for (const OpCase& c : AllCases()) {
    SCOPED_TRACE(c.label);
    for (size_t n = 0; n < c.bytes.size(); ++n) {
      SCOPED_TRACE(n);
      Request r;
      const DecodeError e = Decode(std::span(c.bytes).first(n), &r, c.options);
      EXPECT_EQ(e.error, EIO);
      EXPECT_EQ(e.header_valid, n >= kHeader);
      EXPECT_STRNE(e.reason, "");
      if (n >= kHeader) {
        EXPECT_EQ(r.header.len, c.bytes.size());
        EXPECT_EQ(r.header.opcode, c.opcode);
        // Known even on failure, so no-reply ops get no error reply.
        EXPECT_EQ(r.traits, TraitsOf(c.opcode));
        EXPECT_EQ(r.header.unique & ~uint64_t{0xff}, 0x1000u);
      }
    }
  }
}

TEST(DecodeRequestTest, EveryTruncationWithAConsistentLenFailsCleanly) {
  for (const OpCase& c : AllCases()) {
    SCOPED_TRACE(c.label);
    for (size_t n = 0; n < c.bytes.size(); ++n) {
      SCOPED_TRACE(n);
      std::vector<uint8_t> prefix(c.bytes.begin(), c.bytes.begin() + n);
      test::SetLen(prefix, static_cast<uint32_t>(n));
      Request r;
      const DecodeError e = Decode(prefix, &r, c.options);
      if (n < kHeader) {
        EXPECT_EQ(e.error, EIO);
        EXPECT_FALSE(e.header_valid);
        continue;
      }
      EXPECT_TRUE(e.header_valid);
      EXPECT_EQ(r.header.opcode, c.opcode);
      EXPECT_EQ(r.traits, TraitsOf(c.opcode));
      const size_t args = n - kHeader;
      const int want = args < c.min_fixed ? EIO : c.tail_cut_error;
      EXPECT_EQ(e.error, want) << e.reason;
      if (want == 0 && e.ok()) {
        EXPECT_EQ(r.fixed_size, std::min<size_t>(args, c.fixed_size));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The header.

TEST(DecodeRequestTest, HeaderAndStructFromGoldenBytes) {
  // FORGET, written field by field at the kernel's offsets.
  std::vector<uint8_t> b;
  Le32(b, 48);                     // len
  Le32(b, 2);                      // opcode FORGET
  Le64(b, 0x0102030405060708ULL);  // unique
  Le64(b, 0x1122334455667788ULL);  // nodeid
  Le32(b, 1000);                   // uid
  Le32(b, 100);                    // gid
  Le32(b, 4321);                   // pid
  Le16(b, 0);                      // total_extlen
  Le16(b, 0);                      // padding
  Le64(b, 5);                      // fuse_forget_in.nlookup
  Request r;
  const DecodeError e = DecodeInPlace(b, &r);
  ASSERT_TRUE(e.ok()) << e.reason;
  EXPECT_EQ(r.header.len, 48u);
  EXPECT_EQ(r.opcode(), Opcode::kForget);
  EXPECT_EQ(r.header.unique, 0x0102030405060708ULL);
  EXPECT_EQ(r.header.nodeid, 0x1122334455667788ULL);
  EXPECT_EQ(r.header.uid, 1000u);
  EXPECT_EQ(r.header.gid, 100u);
  EXPECT_EQ(r.header.pid, 4321u);
  EXPECT_EQ(r.Arg<abi::ForgetIn>().nlookup, 5u);
  EXPECT_TRUE(r.traits->no_reply);
}

TEST(DecodeRequestTest, WriteFromGoldenBytes) {
  std::vector<uint8_t> b;
  Le32(b, 40 + 40 + 5);
  Le32(b, 16);  // WRITE
  Le64(b, 9);
  Le64(b, 3);
  Le32(b, 0);
  Le32(b, 0);
  Le32(b, 1);
  Le32(b, 0);
  Le64(b, 0xabc);         // fh
  Le64(b, 0x1000000000);  // offset
  Le32(b, 5);             // size
  Le32(b, abi::kWriteKillSuidgid);
  Le64(b, 0x55);      // lock_owner
  Le32(b, O_WRONLY);  // flags
  Le32(b, 0);         // padding
  test::AppendString(b, "HELLO");
  Request r;
  const DecodeError e = DecodeInPlace(b, &r);
  ASSERT_TRUE(e.ok()) << e.reason;
  const auto w = r.Arg<abi::WriteIn>();
  EXPECT_EQ(w.fh, 0xabcu);
  EXPECT_EQ(w.offset, 0x1000000000u);
  EXPECT_EQ(w.size, 5u);
  EXPECT_EQ(w.write_flags, abi::kWriteKillSuidgid);
  EXPECT_EQ(w.lock_owner, 0x55u);
  EXPECT_EQ(w.flags, static_cast<uint32_t>(O_WRONLY));
  EXPECT_EQ(Str(r.data), "HELLO");
}

TEST(DecodeRequestTest, MalformedForgetsStillNameTheirTraits) {
  // A bad extension area fails before the opcode is looked at; the caller
  // must still see that FORGET takes no reply.
  const auto forget = RequestBuilder(Opcode::kForget)
                          .Struct(abi::ForgetIn{1})
                          .RawExtension(Bytes<uint32_t>({0, 0}))
                          .Build();
  Request r;
  const DecodeError e = Decode(forget, &r);
  EXPECT_EQ(e.error, EINVAL);
  EXPECT_TRUE(e.header_valid);
  ASSERT_NE(r.traits, nullptr);
  EXPECT_TRUE(r.traits->no_reply);
}

TEST(DecodeRequestTest, LenDisagreeingWithTheBytesIsEio) {
  const auto full = RequestBuilder(Opcode::kGetattr).Struct(abi::GetattrIn{}).Build();
  for (uint32_t len : {0u, 39u, 40u, 55u, 57u, 4096u, 0xffffffffu}) {
    std::vector<uint8_t> b = full;
    test::SetLen(b, len);
    Request r;
    const DecodeError e = Decode(b, &r);
    EXPECT_EQ(e.error, EIO) << len;
    EXPECT_TRUE(e.header_valid) << len;
    EXPECT_EQ(r.header.unique, 0x0123456789abcdefULL);
  }
}

TEST(DecodeRequestTest, UnknownOpcodesAreEnosysWithAValidHeader) {
  for (uint32_t op : {0u, 7u, 19u, 54u, 4095u, 4097u, 0xffffffffu}) {
    for (size_t extra : {0, 8, 64}) {
      const auto b = RequestBuilder(op).Unique(77).Bytes(std::string(extra, 'x')).Build();
      Request r;
      const DecodeError e = Decode(b, &r);
      EXPECT_EQ(e.error, ENOSYS) << op;
      EXPECT_TRUE(e.header_valid) << op;
      EXPECT_EQ(r.header.unique, 77u);
      EXPECT_EQ(r.header.opcode, op);
      EXPECT_EQ(r.traits, nullptr);
    }
  }
}

TEST(DecodeRequestTest, BytesAfterAFixedOnlyStructAreEinval) {
  const auto b = RequestBuilder(Opcode::kGetattr).Struct(abi::GetattrIn{}).Bytes("x").Build();
  Request r;
  EXPECT_EQ(Decode(b, &r).error, EINVAL);
  const auto d = RequestBuilder(Opcode::kDestroy).Bytes("12345678").Build();
  EXPECT_EQ(Decode(d, &r).error, EINVAL);
}

// ---------------------------------------------------------------------------
// Names.

TEST(DecodeNamesTest, NameWithoutNulIsEinval) {
  const auto b = RequestBuilder(Opcode::kLookup).Bytes("noterm").Build();
  Request r;
  EXPECT_EQ(Decode(b, &r).error, EINVAL);
  const auto m = RequestBuilder(Opcode::kMkdir).Struct(abi::MkdirIn{0755, 0}).Bytes("dir").Build();
  EXPECT_EQ(Decode(m, &r).error, EINVAL);
}

TEST(DecodeNamesTest, BytesAfterTheLastNameAreEinval) {
  Request r;
  for (const std::string& extra :
       {std::string("x"), std::string(1, '\0'), std::string("other\0", 6)}) {
    const auto lookup = RequestBuilder(Opcode::kLookup).Name("a").Bytes(extra).Build();
    EXPECT_EQ(Decode(lookup, &r).error, EINVAL);
    const auto rename = RequestBuilder(Opcode::kRename)
                            .Struct(abi::RenameIn{5})
                            .Name("a")
                            .Name("b")
                            .Bytes(extra)
                            .Build();
    EXPECT_EQ(Decode(rename, &r).error, EINVAL);
  }
}

TEST(DecodeNamesTest, TwoNameOpsWithOneNameAreEinval) {
  Request r;
  const auto rename = RequestBuilder(Opcode::kRename).Struct(abi::RenameIn{5}).Name("a").Build();
  EXPECT_EQ(Decode(rename, &r).error, EINVAL);
  const auto rename2 =
      RequestBuilder(Opcode::kRename2).Struct(abi::Rename2In{5, 0, 0}).Name("a").Build();
  EXPECT_EQ(Decode(rename2, &r).error, EINVAL);
  const auto symlink = RequestBuilder(Opcode::kSymlink).Name("link").Build();
  EXPECT_EQ(Decode(symlink, &r).error, EINVAL);
  // The second name present but unterminated.
  const auto cut = RequestBuilder(Opcode::kSymlink).Name("link").Bytes("target").Build();
  EXPECT_EQ(Decode(cut, &r).error, EINVAL);
}

TEST(DecodeNamesTest, EmptyNamesDecode) {
  Request r;
  const auto lookup = RequestBuilder(Opcode::kLookup).Name("").Build();
  ASSERT_TRUE(DecodeInPlace(lookup, &r).ok());
  EXPECT_EQ(r.name, "");
  Request r2;
  const auto rename =
      RequestBuilder(Opcode::kRename).Struct(abi::RenameIn{5}).Name("").Name("").Build();
  ASSERT_TRUE(DecodeInPlace(rename, &r2).ok());
  EXPECT_EQ(r2.name, "");
  EXPECT_EQ(r2.name2, "");
  EXPECT_EQ(r2.Arg<abi::RenameIn>().newdir, 5u);
  // No bytes at all where a name belongs is not an empty name.
  Request r3;
  EXPECT_EQ(Decode(RequestBuilder(Opcode::kLookup).Build(), &r3).error, EINVAL);
}

TEST(DecodeNamesTest, NamesKeepNonAsciiBytes) {
  const std::string name = "\xc3\xa9t\xc3\xa9\x01\xff";
  const auto b = RequestBuilder(Opcode::kUnlink).Name(name).Build();
  Request r;
  ASSERT_TRUE(DecodeInPlace(b, &r).ok());
  EXPECT_EQ(r.name, name);
}

// ---------------------------------------------------------------------------
// Payload sizes.

TEST(DecodePayloadTest, WriteSizeMismatchIsEio) {
  Request r;
  for (uint32_t size : {0u, 4u, 6u, 0xffffffffu}) {
    abi::WriteIn in{};
    in.fh = 1;
    in.size = size;
    const auto b = RequestBuilder(Opcode::kWrite).Struct(in).Bytes("12345").Build();
    EXPECT_EQ(Decode(b, &r).error, EIO) << size;
  }
  const auto empty = RequestBuilder(Opcode::kWrite).Struct(abi::WriteIn{}).Build();
  Request ok;
  ASSERT_TRUE(DecodeInPlace(empty, &ok).ok());
  EXPECT_TRUE(ok.data.empty());
}

TEST(DecodePayloadTest, SetxattrStructSizeFollowsTheOption) {
  // setxattr_ext: 16-byte struct.
  const auto ext = RequestBuilder(Opcode::kSetxattr)
                       .Struct(abi::SetxattrIn{.size = 2,
                                               .flags = XATTR_CREATE,
                                               .setxattr_flags = abi::kSetxattrAclKillSgid,
                                               .padding = 0})
                       .Name("user.a")
                       .Bytes("hi")
                       .Build();
  Request r;
  ASSERT_TRUE(DecodeInPlace(ext, &r, {.setxattr_ext = true}).ok());
  EXPECT_EQ(r.fixed_size, 16u);
  EXPECT_EQ(r.Arg<abi::SetxattrIn>().size, 2u);
  EXPECT_EQ(r.Arg<abi::SetxattrIn>().flags, static_cast<uint32_t>(XATTR_CREATE));
  EXPECT_EQ(r.Arg<abi::SetxattrIn>().setxattr_flags, abi::kSetxattrAclKillSgid);
  EXPECT_EQ(r.name, "user.a");
  EXPECT_EQ(Str(r.data), "hi");
  // The same bytes read as the 8-byte form: the extra word becomes the name.
  Request wrong;
  EXPECT_EQ(Decode(ext, &wrong, {.setxattr_ext = false}).error, EINVAL);

  // No setxattr_ext: 8-byte struct; setxattr_flags reads as zero.
  const auto compat = RequestBuilder(Opcode::kSetxattr)
                          .Struct(abi::SetxattrIn{2, XATTR_REPLACE, 0, 0}, 8)
                          .Name("user.a")
                          .Bytes("hi")
                          .Build();
  Request c;
  ASSERT_TRUE(DecodeInPlace(compat, &c, {.setxattr_ext = false}).ok());
  EXPECT_EQ(c.fixed_size, 8u);
  EXPECT_EQ(c.Arg<abi::SetxattrIn>().size, 2u);
  EXPECT_EQ(c.Arg<abi::SetxattrIn>().flags, static_cast<uint32_t>(XATTR_REPLACE));
  EXPECT_EQ(c.Arg<abi::SetxattrIn>().setxattr_flags, 0u);
  EXPECT_EQ(c.name, "user.a");
  EXPECT_EQ(Str(c.data), "hi");
  Request wrong2;
  EXPECT_EQ(Decode(compat, &wrong2, {.setxattr_ext = true}).error, EINVAL);
}

TEST(DecodePayloadTest, SetxattrValueSizeMismatchIsEinval) {
  for (bool ext : {false, true}) {
    for (uint32_t size : {0u, 1u, 3u, 100u}) {
      const auto b = RequestBuilder(Opcode::kSetxattr)
                         .Struct(abi::SetxattrIn{size, 0, 0, 0}, ext ? 16 : 8)
                         .Name("user.a")
                         .Bytes("hi")
                         .Build();
      Request r;
      EXPECT_EQ(Decode(b, &r, {.setxattr_ext = ext}).error, EINVAL) << ext << " " << size;
    }
    // An empty value is fine.
    const auto empty = RequestBuilder(Opcode::kSetxattr)
                           .Struct(abi::SetxattrIn{}, ext ? 16 : 8)
                           .Name("user.a")
                           .Build();
    Request r;
    ASSERT_TRUE(DecodeInPlace(empty, &r, {.setxattr_ext = ext}).ok());
    EXPECT_TRUE(r.data.empty());
    EXPECT_EQ(r.name, "user.a");
  }
}

TEST(DecodePayloadTest, IoctlInSizeMustMatch) {
  Request r;
  for (uint32_t in_size : {0u, 3u, 5u, 0xffffffffu}) {
    abi::IoctlIn in{};
    in.cmd = 1;
    in.in_size = in_size;
    const auto b = RequestBuilder(Opcode::kIoctl).Struct(in).Bytes("abcd").Build();
    EXPECT_EQ(Decode(b, &r).error, EINVAL) << in_size;
  }
  abi::IoctlIn in{};
  in.cmd = 1;
  in.out_size = 16;
  const auto none = RequestBuilder(Opcode::kIoctl).Struct(in).Build();
  Request ok;
  ASSERT_TRUE(DecodeInPlace(none, &ok).ok());
  EXPECT_TRUE(ok.data.empty());
  EXPECT_EQ(ok.Arg<abi::IoctlIn>().out_size, 16u);
}

TEST(DecodePayloadTest, BatchForgetCounts) {
  auto build = [](uint32_t count, int records) {
    RequestBuilder b(Opcode::kBatchForget);
    b.Struct(abi::BatchForgetIn{.count = count, .dummy = 0});
    for (int i = 0; i < records; ++i) {
      b.Struct(abi::ForgetOne{.nodeid = 100u + i, .nlookup = 1u + i});
    }
    return b.Build();
  };
  Request r0;
  ASSERT_TRUE(DecodeInPlace(build(0, 0), &r0).ok());
  EXPECT_TRUE(r0.forgets.empty());

  Request r3;
  ASSERT_TRUE(DecodeInPlace(build(3, 3), &r3).ok());
  ASSERT_EQ(r3.forgets.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r3.forgets[i].nodeid, 100u + i);
    EXPECT_EQ(r3.forgets[i].nlookup, 1u + i);
  }

  Request bad;
  EXPECT_EQ(Decode(build(4, 3), &bad).error, EIO);
  EXPECT_EQ(Decode(build(1, 0), &bad).error, EIO);
  // A count that would overflow count * 16 must not allocate or wrap.
  EXPECT_EQ(Decode(build(0xffffffffu, 2), &bad).error, EIO);
  EXPECT_EQ(Decode(build(0x10000001u, 1), &bad).error, EIO);
  // Half a record is not a record.
  auto half = build(1, 0);
  half.resize(half.size() + 8, 0);
  test::SetLen(half, static_cast<uint32_t>(half.size()));
  EXPECT_EQ(Decode(half, &bad).error, EIO);
}

// ---------------------------------------------------------------------------
// INIT: a struct that grew.

TEST(DecodeInitTest, OldAndNewInitInDecode) {
  const abi::InitIn in{.major = 7,
                       .minor = 45,
                       .max_readahead = 65536,
                       .flags = static_cast<uint32_t>(abi::init::kInitExt),
                       .flags2 = 3,
                       .unused = {}};
  Request old_init;
  const auto old_bytes = RequestBuilder(Opcode::kInit).Struct(in, 16).Build();
  ASSERT_TRUE(DecodeInPlace(old_bytes, &old_init).ok());
  EXPECT_EQ(old_init.fixed_size, 16u);
  EXPECT_EQ(old_init.Arg<abi::InitIn>().major, 7u);
  EXPECT_EQ(old_init.Arg<abi::InitIn>().minor, 45u);
  EXPECT_EQ(old_init.Arg<abi::InitIn>().max_readahead, 65536u);
  EXPECT_EQ(old_init.Arg<abi::InitIn>().flags, in.flags);
  EXPECT_EQ(old_init.Arg<abi::InitIn>().flags2, 0u);  // not sent: zero
  EXPECT_TRUE(old_init.data.empty());

  Request new_init;
  const auto new_bytes = RequestBuilder(Opcode::kInit).Struct(in).Build();
  ASSERT_TRUE(DecodeInPlace(new_bytes, &new_init).ok());
  EXPECT_EQ(new_init.fixed_size, 64u);
  EXPECT_EQ(new_init.Arg<abi::InitIn>().flags2, 3u);

  // A future kernel's longer INIT: the struct we know, then the rest.
  Request longer;
  const auto long_bytes = RequestBuilder(Opcode::kInit).Struct(in).Bytes("future!!").Build();
  ASSERT_TRUE(DecodeInPlace(long_bytes, &longer).ok());
  EXPECT_EQ(longer.fixed_size, 64u);
  EXPECT_EQ(Str(longer.data), "future!!");

  for (size_t size = 0; size < 16; ++size) {
    Request bad;
    const auto b = RequestBuilder(Opcode::kInit).Struct(in, size).Build();
    EXPECT_EQ(Decode(b, &bad).error, EIO) << size;
  }
  for (size_t size = 16; size <= 64; ++size) {
    Request part;
    const auto b = RequestBuilder(Opcode::kInit).Struct(in, size).Build();
    ASSERT_TRUE(Decode(b, &part).ok()) << size;
    EXPECT_EQ(part.fixed_size, size);
  }
}

// ---------------------------------------------------------------------------
// Extensions.

std::vector<uint8_t> MkdirWith(const std::function<void(RequestBuilder&)>& ext) {
  RequestBuilder b(Opcode::kMkdir);
  b.Struct(abi::MkdirIn{.mode = 0755, .umask = 022}).Name("newdir");
  ext(b);
  return b.Build();
}

TEST(DecodeExtensionTest, GroupsOneAndThree) {
  {
    const auto b = MkdirWith([](RequestBuilder& x) { x.Groups({1234}); });
    Request r;
    ASSERT_TRUE(DecodeInPlace(b, &r).ok());
    EXPECT_EQ(r.header.total_extlen, 2u);  // 8 header + 4 count + 4 gid
    EXPECT_EQ(r.groups, std::vector<uint32_t>{1234});
    EXPECT_EQ(r.name, "newdir");
    EXPECT_EQ(r.Arg<abi::MkdirIn>().mode, 0755u);
    EXPECT_TRUE(r.security_contexts.empty());
  }
  {
    const auto b = MkdirWith([](RequestBuilder& x) { x.Groups({10, 20, 30}); });
    Request r;
    ASSERT_TRUE(DecodeInPlace(b, &r).ok());
    EXPECT_EQ(r.header.total_extlen, 3u);  // 8 + 4 + 12 = 24
    EXPECT_EQ(r.groups, (std::vector<uint32_t>{10, 20, 30}));
    EXPECT_EQ(r.name, "newdir");
  }
}

TEST(DecodeExtensionTest, GroupsGoldenBytes) {
  // CREATE as a 6.x kernel with FUSE_CREATE_SUPP_GROUP sends it.
  std::vector<uint8_t> b;
  Le32(b, 40 + 16 + 4 + 16);
  Le32(b, 35);  // CREATE
  Le64(b, 1);
  Le64(b, 1);
  Le32(b, 0);
  Le32(b, 0);
  Le32(b, 1);
  Le16(b, 2);  // total_extlen: 16 bytes
  Le16(b, 0);
  Le32(b, O_CREAT | O_RDWR);
  Le32(b, S_IFREG | 0644);
  Le32(b, 022);
  Le32(b, 0);
  test::AppendString(b, std::string("abc\0", 4));
  Le32(b, 16);  // ExtHeader.size
  Le32(b, 32);  // FUSE_EXT_GROUPS
  Le32(b, 1);   // nr_groups
  Le32(b, 4242);
  Request r;
  const DecodeError e = DecodeInPlace(b, &r);
  ASSERT_TRUE(e.ok()) << e.reason;
  EXPECT_EQ(r.name, "abc");
  EXPECT_EQ(r.groups, std::vector<uint32_t>{4242});
  EXPECT_EQ(r.Arg<abi::CreateIn>().mode, static_cast<uint32_t>(S_IFREG | 0644));
}

TEST(DecodeExtensionTest, SecurityContexts) {
  const std::string value = "system_u:object_r:tmp_t:s0";
  {
    const auto b = MkdirWith([&](RequestBuilder& x) {
      x.SecurityContexts({{"security.selinux", value}});
    });
    Request r;
    const DecodeError e = DecodeInPlace(b, &r);
    ASSERT_TRUE(e.ok()) << e.reason;
    ASSERT_EQ(r.security_contexts.size(), 1u);
    EXPECT_EQ(r.security_contexts[0].name, "security.selinux");
    EXPECT_EQ(Str(r.security_contexts[0].value), value);
    EXPECT_EQ(r.name, "newdir");
    EXPECT_TRUE(r.groups.empty());
  }
  {
    // Two contexts, one with an empty value, one holding a NUL.
    const auto b = MkdirWith([](RequestBuilder& x) {
      x.SecurityContexts({{"security.a", ""}, {"security.bb", std::string("x\0y", 3)}});
    });
    Request r;
    ASSERT_TRUE(DecodeInPlace(b, &r).ok());
    ASSERT_EQ(r.security_contexts.size(), 2u);
    EXPECT_EQ(r.security_contexts[0].name, "security.a");
    EXPECT_TRUE(r.security_contexts[0].value.empty());
    EXPECT_EQ(r.security_contexts[1].name, "security.bb");
    EXPECT_EQ(Str(r.security_contexts[1].value), std::string("x\0y", 3));
  }
  {
    // The kernel sends a header-only block when the LSM has no context.
    const auto b = MkdirWith([](RequestBuilder& x) { x.SecurityContexts({}); });
    Request r;
    ASSERT_TRUE(DecodeInPlace(b, &r).ok());
    EXPECT_EQ(r.header.total_extlen, 1u);
    EXPECT_TRUE(r.security_contexts.empty());
  }
}

TEST(DecodeExtensionTest, SecurityContextGoldenBytes) {
  std::vector<uint8_t> ext;
  Le32(ext, 32);  // record size: 8 + 8 + "sec.x\0" (6) + "ctx" (3) = 25 -> 32
  Le32(ext, 1);   // one context
  Le32(ext, 3);   // fuse_secctx.size
  Le32(ext, 0);
  test::AppendString(ext, std::string("sec.x\0ctx", 9));
  ext.resize(32, 0);
  const auto b = RequestBuilder(Opcode::kSymlink).Name("l").Name("t").RawExtension(ext).Build();
  Request r;
  const DecodeError e = DecodeInPlace(b, &r);
  ASSERT_TRUE(e.ok()) << e.reason;
  EXPECT_EQ(r.name, "l");
  EXPECT_EQ(r.name2, "t");
  ASSERT_EQ(r.security_contexts.size(), 1u);
  EXPECT_EQ(r.security_contexts[0].name, "sec.x");
  EXPECT_EQ(Str(r.security_contexts[0].value), "ctx");
}

TEST(DecodeExtensionTest, SecurityContextAndGroupsTogether) {
  for (bool groups_first : {false, true}) {
    const auto b = MkdirWith([&](RequestBuilder& x) {
      if (groups_first) x.Groups({5, 6});
      x.SecurityContexts({{"security.selinux", "ctx"}});
      if (!groups_first) x.Groups({5, 6});
    });
    Request r;
    const DecodeError e = DecodeInPlace(b, &r);
    ASSERT_TRUE(e.ok()) << e.reason;
    EXPECT_EQ(r.groups, (std::vector<uint32_t>{5, 6}));
    ASSERT_EQ(r.security_contexts.size(), 1u);
    EXPECT_EQ(r.security_contexts[0].name, "security.selinux");
    EXPECT_EQ(Str(r.security_contexts[0].value), "ctx");
    EXPECT_EQ(r.name, "newdir");
  }
}

TEST(DecodeExtensionTest, UnknownTypesAreSkipped) {
  const std::vector<uint8_t> body = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto b = MkdirWith([&](RequestBuilder& x) {
    x.Extension(33, body).Groups({7}).Extension(0xffffffffu, {}).Extension(1000, body);
  });
  Request r;
  const DecodeError e = DecodeInPlace(b, &r);
  ASSERT_TRUE(e.ok()) << e.reason;
  EXPECT_EQ(r.groups, std::vector<uint32_t>{7});
  EXPECT_TRUE(r.security_contexts.empty());
  EXPECT_EQ(r.name, "newdir");
}

TEST(DecodeExtensionTest, TotalExtlenPastTheEndIsEinval) {
  Request r;
  // No extension, yet 24 bytes claimed: more than MkdirIn (8) + "newdir\0" (7).
  const auto b = MkdirWith([](RequestBuilder& x) { x.TotalExtlen(3); });
  const DecodeError e = Decode(b, &r);
  EXPECT_EQ(e.error, EINVAL);
  EXPECT_TRUE(e.header_valid);
  const auto max = MkdirWith([](RequestBuilder& x) { x.Groups({1}).TotalExtlen(0xffff); });
  EXPECT_EQ(Decode(max, &r).error, EINVAL);
  // An op with no arguments and an extension claimed.
  const auto statfs = RequestBuilder(Opcode::kStatfs).TotalExtlen(1).Build();
  EXPECT_EQ(Decode(statfs, &r).error, EINVAL);
}

TEST(DecodeExtensionTest, BadRecordSizesAreEinval) {
  Request r;
  // Size 0 (would loop forever if accepted).
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.RawExtension(Bytes<uint32_t>({0, 32, 0, 0}));
                   }),
                   &r)
                .error,
            EINVAL);
  // Size 4: smaller than its own header.
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.RawExtension(Bytes<uint32_t>({4, 32}));
                   }),
                   &r)
                .error,
            EINVAL);
  // Not a multiple of 8.
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.RawExtension(Bytes<uint32_t>({12, 32, 0, 0}));
                   }),
                   &r)
                .error,
            EINVAL);
  // Past the end of the extension area.
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.RawExtension(Bytes<uint32_t>({24, 32, 1, 5}));
                   }),
                   &r)
                .error,
            EINVAL);
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.RawExtension(Bytes<uint32_t>({0xfffffff8u, 99}));
                   }),
                   &r)
                .error,
            EINVAL);
  // A good record followed by a bad one.
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.Groups({1}).RawExtension(Bytes<uint32_t>({0, 0}));
                   }),
                   &r)
                .error,
            EINVAL);
}

TEST(DecodeExtensionTest, GroupCountTooBigIsEinval) {
  Request r;
  for (uint32_t nr : {2u, 3u, 0x40000000u, 0xffffffffu}) {
    const auto b = MkdirWith([&](RequestBuilder& x) {
      x.RawExtension(Bytes<uint32_t>({16, 32, nr, 1}));
    });
    EXPECT_EQ(Decode(b, &r).error, EINVAL) << nr;
  }
  // A groups record with no room for nr_groups.
  const auto b = MkdirWith([](RequestBuilder& x) { x.RawExtension(Bytes<uint32_t>({8, 32})); });
  EXPECT_EQ(Decode(b, &r).error, EINVAL);
  // nr_groups 0 is valid.
  Request ok;
  const auto zero = MkdirWith([](RequestBuilder& x) {
    x.RawExtension(Bytes<uint32_t>({16, 32, 0, 0}));
  });
  ASSERT_TRUE(DecodeInPlace(zero, &ok).ok());
  EXPECT_TRUE(ok.groups.empty());
}

TEST(DecodeExtensionTest, BadSecurityContextsAreEinval) {
  Request r;
  // The name has no NUL inside the record.
  {
    std::vector<uint8_t> ext = Bytes<uint32_t>({24, 1, 0, 0});
    test::AppendString(ext, "abcdefgh");
    EXPECT_EQ(Decode(MkdirWith([&](RequestBuilder& x) { x.RawExtension(ext); }), &r).error, EINVAL);
  }
  // The name's NUL lies beyond the record (in the next one): still refused.
  {
    std::vector<uint8_t> ext = Bytes<uint32_t>({24, 1, 0, 0});
    test::AppendString(ext, "abcdefgh");
    const auto groups = Bytes<uint32_t>({16, 32, 0, 0});
    ext.insert(ext.end(), groups.begin(), groups.end());
    EXPECT_EQ(Decode(MkdirWith([&](RequestBuilder& x) { x.RawExtension(ext); }), &r).error, EINVAL);
  }
  // The value runs past the record.
  {
    std::vector<uint8_t> ext = Bytes<uint32_t>({24, 1, 100, 0});
    test::AppendString(ext, std::string("a\0bcdefg", 8));
    EXPECT_EQ(Decode(MkdirWith([&](RequestBuilder& x) { x.RawExtension(ext); }), &r).error, EINVAL);
  }
  for (uint32_t huge : {0x7fffffffu, 0xffffffffu}) {
    std::vector<uint8_t> ext = Bytes<uint32_t>({24, 1, huge, 0});
    test::AppendString(ext, std::string("a\0bcdefg", 8));
    EXPECT_EQ(Decode(MkdirWith([&](RequestBuilder& x) { x.RawExtension(ext); }), &r).error, EINVAL);
  }
  // More contexts announced than the record holds.
  {
    std::vector<uint8_t> ext = Bytes<uint32_t>({24, 2, 1, 0});
    test::AppendString(ext, std::string("a\0v\0\0\0\0\0", 8));
    EXPECT_EQ(Decode(MkdirWith([&](RequestBuilder& x) { x.RawExtension(ext); }), &r).error, EINVAL);
  }
  // A context header cut by the record's end.
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.RawExtension(Bytes<uint32_t>({8, 1}));
                   }),
                   &r)
                .error,
            EINVAL);
  EXPECT_EQ(Decode(MkdirWith([](RequestBuilder& x) {
                     x.RawExtension(Bytes<uint32_t>({8, 31}));
                   }),
                   &r)
                .error,
            EINVAL);
}

TEST(DecodeExtensionTest, TruncatedRequestsWithExtensionsFail) {
  const auto full = MkdirWith([](RequestBuilder& x) {
    x.SecurityContexts({{"security.selinux", "ctx"}}).Groups({1, 2, 3});
  });
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    Request r;
    const DecodeError as_is = Decode(std::span(full).first(n), &r);
    EXPECT_EQ(as_is.error, EIO);
    EXPECT_EQ(as_is.header_valid, n >= kHeader);

    std::vector<uint8_t> prefix(full.begin(), full.begin() + n);
    test::SetLen(prefix, static_cast<uint32_t>(n));
    Request r2;
    const DecodeError cut = Decode(prefix, &r2);
    EXPECT_FALSE(cut.ok());
    EXPECT_TRUE(cut.error == EIO || cut.error == EINVAL) << cut.error << " " << cut.reason;
    EXPECT_EQ(cut.header_valid, n >= kHeader);
  }
}

}  // namespace
}  // namespace efuse::proto
