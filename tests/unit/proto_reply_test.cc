// Byte-level tests of proto/reply.h, proto/dirent.h and proto/notify.h.
//
// Expected messages are written field by field at the kernel's offsets
// (little-endian), never by copying the structs under test.
#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/abi.h"
#include "proto/dirent.h"
#include "proto/notify.h"
#include "proto/reply.h"

namespace efuse::proto {
namespace {

// Builds expected bytes.
class Golden {
 public:
  Golden& U16(uint16_t v) { return Le(v, 2); }
  Golden& U32(uint32_t v) { return Le(v, 4); }
  Golden& I32(int32_t v) { return Le(static_cast<uint32_t>(v), 4); }
  Golden& U64(uint64_t v) { return Le(v, 8); }
  Golden& I64(int64_t v) { return Le(static_cast<uint64_t>(v), 8); }
  Golden& Str(std::string_view s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Golden& Zeros(size_t n) {
    b_.insert(b_.end(), n, 0);
    return *this;
  }
  // The out-header.
  Golden& Header(uint32_t len, int32_t error, uint64_t unique) {
    return U32(len).I32(error).U64(unique);
  }
  const std::vector<uint8_t>& bytes() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  Golden& Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t> b_;
};

std::string Hex(std::span<const uint8_t> b) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i != 0 && i % 8 == 0) s += '|';
    s += kDigits[b[i] >> 4];
    s += kDigits[b[i] & 15];
  }
  return s;
}

// The whole message, through CopyTo.
std::vector<uint8_t> Bytes(Reply& r) {
  std::vector<uint8_t> out(r.size());
  EXPECT_EQ(r.CopyTo(out), out.size());
  return out;
}

// The whole message, by concatenating Iov().
std::vector<uint8_t> Gather(Reply& r) {
  std::vector<uint8_t> out;
  for (const iovec& v : r.Iov()) {
    const auto* p = static_cast<const uint8_t*>(v.iov_base);
    out.insert(out.end(), p, p + v.iov_len);
  }
  return out;
}

void ExpectMessage(Reply& r, const Golden& want) {
  EXPECT_EQ(r.size(), want.size());
  EXPECT_EQ(Hex(Bytes(r)), Hex(want.bytes()));
  EXPECT_EQ(Hex(Gather(r)), Hex(want.bytes()));
}

std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

abi::Attr SampleAttr() {
  abi::Attr a{};
  a.ino = 0x1111;
  a.size = 0x2222;
  a.blocks = 0x33;
  a.atime = 0x44;
  a.mtime = 0x55;
  a.ctime = 0x66;
  a.atimensec = 7;
  a.mtimensec = 8;
  a.ctimensec = 9;
  a.mode = S_IFREG | 0644;
  a.nlink = 2;
  a.uid = 1000;
  a.gid = 1001;
  a.rdev = 0;
  a.blksize = 4096;
  a.flags = abi::kAttrSubmount;
  return a;
}

Golden& AppendAttr(Golden& g, const abi::Attr& a) {
  return g.U64(a.ino)
      .U64(a.size)
      .U64(a.blocks)
      .U64(a.atime)
      .U64(a.mtime)
      .U64(a.ctime)
      .U32(a.atimensec)
      .U32(a.mtimensec)
      .U32(a.ctimensec)
      .U32(a.mode)
      .U32(a.nlink)
      .U32(a.uid)
      .U32(a.gid)
      .U32(a.rdev)
      .U32(a.blksize)
      .U32(a.flags);
}

abi::EntryOut SampleEntry() {
  abi::EntryOut e{};
  e.nodeid = 0xabc;
  e.generation = 3;
  e.entry_valid = 10;
  e.attr_valid = 11;
  e.entry_valid_nsec = 12;
  e.attr_valid_nsec = 13;
  e.attr = SampleAttr();
  return e;
}

Golden& AppendEntry(Golden& g, const abi::EntryOut& e) {
  g.U64(e.nodeid)
      .U64(e.generation)
      .U64(e.entry_valid)
      .U64(e.attr_valid)
      .U32(e.entry_valid_nsec)
      .U32(e.attr_valid_nsec);
  return AppendAttr(g, e.attr);
}

// ---------------------------------------------------------------------------
// Reply.

TEST(ReplyTest, ErrorReplyIsSixteenBytes) {
  for (int err : {EIO, ENOENT, ENOSYS, EINTR, ERANGE}) {
    Reply r = Reply::Error(0x1122334455667788ULL, err);
    EXPECT_EQ(r.error(), -err);
    EXPECT_EQ(r.unique(), 0x1122334455667788ULL);
    ExpectMessage(r, Golden().Header(16, -err, 0x1122334455667788ULL));
    EXPECT_EQ(r.Iov().size(), 1u);
  }
}

TEST(ReplyTest, EmptySuccessReply) {
  Reply r(99);
  EXPECT_EQ(r.error(), 0);
  ExpectMessage(r, Golden().Header(16, 0, 99));
  EXPECT_EQ(r.Iov().size(), 1u);
}

TEST(ReplyTest, StructReply) {
  abi::AttrOut out{};
  out.attr_valid = 5;
  out.attr_valid_nsec = 6;
  out.attr = SampleAttr();
  Reply r(7);
  r.AddStruct(out);
  Golden g;
  g.Header(16 + 104, 0, 7).U64(5).U32(6).U32(0);
  AppendAttr(g, SampleAttr());
  ExpectMessage(r, g);
  EXPECT_EQ(r.Iov().size(), 2u);
}

TEST(ReplyTest, StructCutToAnOlderMinor) {
  const abi::EntryOut e = SampleEntry();
  Golden full;
  AppendEntry(full, e);

  Reply old_reply(8);
  old_reply.AddStruct(e, EntryOutSize(8));
  Golden old_golden;
  old_golden.Header(16 + 120, 0, 8)
      .Str(std::string_view(reinterpret_cast<const char*>(full.bytes().data()), 120));
  ExpectMessage(old_reply, old_golden);

  Reply new_reply(8);
  new_reply.AddStruct(e, EntryOutSize(45));
  Golden new_golden;
  new_golden.Header(16 + 128, 0, 8);
  AppendEntry(new_golden, e);
  ExpectMessage(new_reply, new_golden);

  // A size larger than the struct is clamped to it.
  Reply clamped(8);
  clamped.AddStruct(abi::WriteOut{.size = 3, .padding = 0}, 100);
  ExpectMessage(clamped, Golden().Header(24, 0, 8).U32(3).U32(0));
}

TEST(ReplyTest, StructAndPayloads) {
  // GETXATTR-like: a struct, then data spans referenced, not copied.
  const std::string a = "first", b = "", c = "third!";
  Reply r(12);
  r.AddStruct(abi::GetxattrOut{.size = 11, .padding = 0});
  r.AddPayload(a);
  r.AddPayload(b);
  r.AddPayload(AsBytes(c));
  ExpectMessage(r, Golden().Header(16 + 8 + 11, 0, 12).U32(11).U32(0).Str("first").Str("third!"));
  // Header, inline struct, two non-empty payloads.
  const auto iov = r.Iov();
  ASSERT_EQ(iov.size(), 4u);
  EXPECT_EQ(iov[2].iov_base, a.data());
  EXPECT_EQ(iov[3].iov_base, c.data());
}

TEST(ReplyTest, PayloadOnly) {
  // READ: no struct, just data.
  const std::string data(5000, 'z');
  Reply r(13);
  r.AddPayload(data);
  ExpectMessage(r, Golden().Header(16 + 5000, 0, 13).Str(data));
  EXPECT_EQ(r.Iov().size(), 2u);
}

TEST(ReplyTest, SeveralStructsConcatenate) {
  // CREATE: entry + open.
  Reply r(14);
  const abi::EntryOut e = SampleEntry();
  r.AddStruct(e);
  r.AddStruct(abi::OpenOut{.fh = 0x77, .open_flags = abi::kFopenKeepCache, .backing_id = -1});
  Golden g;
  g.Header(16 + 128 + 16, 0, 14);
  AppendEntry(g, e).U64(0x77).U32(abi::kFopenKeepCache).I32(-1);
  ExpectMessage(r, g);
}

TEST(ReplyTest, LargestStructFitsInline) {
  abi::StatxOut s{};
  s.attr_valid = 1;
  s.stat.ino = 2;
  s.stat.spare2[13] = 3;
  Reply r(15);
  r.AddStruct(s);
  EXPECT_EQ(r.size(), 16u + 288u);
  const auto bytes = Bytes(r);
  uint64_t last;
  std::memcpy(&last, bytes.data() + bytes.size() - 8, 8);
  EXPECT_EQ(last, 3u);
}

TEST(ReplyTest, CopyToNeedsRoomForTheWholeMessage) {
  Reply r(16);
  r.AddStruct(abi::WriteOut{.size = 1, .padding = 0});
  r.AddPayload(std::string_view("xyz"));
  std::vector<uint8_t> exact(27, 0xee);
  EXPECT_EQ(r.CopyTo(exact), 27u);
  std::vector<uint8_t> small(26, 0xee);
  EXPECT_EQ(r.CopyTo(small), 0u);
  EXPECT_EQ(small, std::vector<uint8_t>(26, 0xee));  // untouched
  std::vector<uint8_t> big(64, 0xee);
  EXPECT_EQ(r.CopyTo(big), 27u);
  EXPECT_EQ(std::vector<uint8_t>(big.begin(), big.begin() + 27), exact);
  EXPECT_EQ(big[27], 0xee);
}

TEST(ReplyTest, CopyToEqualsGatheredIov) {
  std::vector<Reply> replies;
  replies.push_back(Reply::Error(1, EPERM));
  replies.emplace_back(2);
  replies.back().AddStruct(abi::LseekOut{.offset = 9});
  replies.emplace_back(3);
  replies.back().AddPayload(std::string_view("payload"));
  replies.emplace_back(4);
  replies.back().AddStruct(abi::PollOut{.revents = 1, .padding = 0});
  replies.back().AddPayload(std::string_view("a"));
  replies.back().AddPayload(std::string_view("bc"));
  replies.back().AddPayload(std::string_view("def"));
  for (Reply& r : replies) {
    const auto copied = Bytes(r);
    EXPECT_EQ(copied, Gather(r));
    uint32_t len;
    std::memcpy(&len, copied.data(), 4);
    EXPECT_EQ(len, copied.size());
  }
}

TEST(ReplyTest, IovPointsIntoTheReplyAfterACopy) {
  Reply original(17);
  original.AddStruct(abi::BmapOut{.block = 5});
  (void)original.Iov();
  Reply copy = original;
  const auto iov = copy.Iov();
  const auto* lo = reinterpret_cast<const uint8_t*>(&copy);
  const auto* hi = lo + sizeof(copy);
  for (size_t i = 0; i < 2; ++i) {
    const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    EXPECT_TRUE(p >= lo && p < hi) << i;
  }
  ExpectMessage(copy, Golden().Header(24, 0, 17).U64(5));
}

TEST(ReplyTest, NotifyReplyHasUniqueZero) {
  Reply r = Reply::Notify(abi::NotifyCode::kInvalInode);
  EXPECT_EQ(r.unique(), 0u);
  EXPECT_EQ(r.error(), 2);
  ExpectMessage(r, Golden().Header(16, 2, 0));
}

TEST(ReplyTest, EntryAndAttrSizesByMinor) {
  for (uint32_t minor : {0u, 1u, 8u}) {
    EXPECT_EQ(EntryOutSize(minor), 120u) << minor;
    EXPECT_EQ(AttrOutSize(minor), 96u) << minor;
  }
  for (uint32_t minor : {9u, 31u, 45u, 99u}) {
    EXPECT_EQ(EntryOutSize(minor), sizeof(abi::EntryOut)) << minor;
    EXPECT_EQ(AttrOutSize(minor), sizeof(abi::AttrOut)) << minor;
  }
  EXPECT_EQ(sizeof(abi::EntryOut), 128u);
  EXPECT_EQ(sizeof(abi::AttrOut), 104u);
}

// ---------------------------------------------------------------------------
// DirentWriter.

TEST(DirentWriterTest, ReaddirRecordGoldenBytes) {
  std::vector<uint8_t> buf(64, 0xaa);  // stale bytes must not leak into padding
  DirentWriter w(buf);
  ASSERT_TRUE(w.Add(0x1020304050ULL, 7, S_IFDIR | 0755, "abc"));
  EXPECT_EQ(w.size(), 32u);
  Golden g;
  g.U64(0x1020304050ULL).U64(7).U32(3).U32(DT_DIR).Str("abc").Zeros(5);
  EXPECT_EQ(Hex(w.bytes()), Hex(g.bytes()));
  EXPECT_EQ(buf[32], 0xaa);  // nothing written past the record
}

TEST(DirentWriterTest, ReaddirplusRecordGoldenBytes) {
  std::vector<uint8_t> buf(200, 0x55);
  DirentWriter w(buf);
  const abi::EntryOut e = SampleEntry();
  ASSERT_TRUE(w.AddPlus(e, 0xabc, 99, S_IFREG | 0644, "file.txt!"));
  // 128 (entry) + 24 (dirent) + 9 = 161 -> 168.
  EXPECT_EQ(w.size(), 168u);
  Golden g;
  AppendEntry(g, e).U64(0xabc).U64(99).U32(9).U32(DT_REG).Str("file.txt!").Zeros(7);
  EXPECT_EQ(Hex(w.bytes()), Hex(g.bytes()));
  EXPECT_EQ(buf[168], 0x55);
}

TEST(DirentWriterTest, TypeComesFromTheMode) {
  const struct {
    uint32_t mode;
    uint32_t type;
  } kCases[] = {{S_IFREG | 0777, DT_REG}, {S_IFDIR, DT_DIR}, {S_IFLNK, DT_LNK},
                {S_IFCHR, DT_CHR},        {S_IFBLK, DT_BLK}, {S_IFIFO, DT_FIFO},
                {S_IFSOCK, DT_SOCK},      {0, DT_UNKNOWN},   {07777, DT_UNKNOWN}};
  for (const auto& c : kCases) {
    std::vector<uint8_t> buf(32);
    DirentWriter w(buf);
    ASSERT_TRUE(w.Add(1, 1, c.mode, "n"));
    uint32_t type;
    std::memcpy(&type, buf.data() + 20, 4);
    EXPECT_EQ(type, c.type) << std::oct << c.mode;
  }
}

TEST(DirentWriterTest, RecordsAreAppendedInOrder) {
  std::vector<uint8_t> buf(4096);
  DirentWriter w(buf);
  ASSERT_TRUE(w.Add(10, 1, S_IFREG, "."));
  ASSERT_TRUE(w.Add(11, 2, S_IFDIR, "12345678"));   // 24 + 8 = 32, no padding
  ASSERT_TRUE(w.Add(12, 3, S_IFLNK, "123456789"));  // 33 -> 40
  EXPECT_EQ(w.size(), 32u + 32u + 40u);
  Golden g;
  g.U64(10).U64(1).U32(1).U32(DT_REG).Str(".").Zeros(7);
  g.U64(11).U64(2).U32(8).U32(DT_DIR).Str("12345678");
  g.U64(12).U64(3).U32(9).U32(DT_LNK).Str("123456789").Zeros(7);
  EXPECT_EQ(Hex(w.bytes()), Hex(g.bytes()));
}

TEST(DirentWriterTest, RecordSizes) {
  EXPECT_EQ(DirentWriter::RecordSize("a", false), 32u);
  EXPECT_EQ(DirentWriter::RecordSize("12345678", false), 32u);
  EXPECT_EQ(DirentWriter::RecordSize("123456789", false), 40u);
  EXPECT_EQ(DirentWriter::RecordSize("a", true), 160u);
  EXPECT_EQ(DirentWriter::RecordSize("12345678", true), 160u);
  EXPECT_EQ(DirentWriter::RecordSize("123456789", true), 168u);
}

TEST(DirentWriterTest, RefusesARecordThatDoesNotFitExactly) {
  for (bool plus : {false, true}) {
    for (const std::string& name :
         std::vector<std::string>{"a", "12345678", "123456789", std::string(255, 'n')}) {
      SCOPED_TRACE(name.size());
      const size_t rec = DirentWriter::RecordSize(name, plus);
      auto add = [&](DirentWriter& w) {
        return plus ? w.AddPlus(SampleEntry(), 5, 6, S_IFREG, name) : w.Add(5, 6, S_IFREG, name);
      };
      // Exactly the record: accepted.
      std::vector<uint8_t> exact(rec);
      DirentWriter fits(exact);
      EXPECT_TRUE(add(fits));
      EXPECT_EQ(fits.size(), rec);
      // One byte less: refused, nothing written.
      std::vector<uint8_t> short_buf(rec - 1, 0x5a);
      DirentWriter too_small(short_buf);
      EXPECT_FALSE(add(too_small));
      EXPECT_EQ(too_small.size(), 0u);
      EXPECT_EQ(short_buf, std::vector<uint8_t>(rec - 1, 0x5a));
      // The second record at the boundary of a two-record buffer.
      std::vector<uint8_t> two(2 * rec - 1);
      DirentWriter w(two);
      EXPECT_TRUE(add(w));
      EXPECT_FALSE(add(w));
      EXPECT_EQ(w.size(), rec);
    }
  }
  // An empty buffer refuses everything.
  DirentWriter empty(std::span<uint8_t>{});
  EXPECT_FALSE(empty.Add(1, 1, S_IFREG, "a"));
  EXPECT_EQ(empty.size(), 0u);
}

TEST(DirentWriterTest, RefusesEmptyAndOverlongNames) {
  std::vector<uint8_t> buf(8192);
  DirentWriter w(buf);
  EXPECT_FALSE(w.Add(1, 1, S_IFREG, ""));
  EXPECT_FALSE(w.AddPlus(SampleEntry(), 1, 1, S_IFREG, ""));
  const std::string too_long(1025, 'x');
  EXPECT_FALSE(w.Add(1, 1, S_IFREG, too_long));
  EXPECT_FALSE(w.AddPlus(SampleEntry(), 1, 1, S_IFREG, too_long));
  EXPECT_EQ(w.size(), 0u);
  const std::string longest(1024, 'y');
  ASSERT_TRUE(w.Add(1, 1, S_IFREG, longest));
  EXPECT_EQ(w.size(), 24u + 1024u);
  ASSERT_TRUE(w.AddPlus(SampleEntry(), 1, 1, S_IFREG, longest));
  EXPECT_EQ(w.size(), 24u + 1024u + 152u + 1024u);
}

// ---------------------------------------------------------------------------
// Notifications: unique 0, error = the notify code, name + NUL.

TEST(NotifyTest, PollWakeup) {
  Reply r = NotifyPollWakeup(0xfeedface);
  ExpectMessage(r, Golden().Header(24, 1, 0).U64(0xfeedface));
}

TEST(NotifyTest, InvalInode) {
  Reply r = NotifyInvalInode(0x42, -1, 0);
  ExpectMessage(r, Golden().Header(40, 2, 0).U64(0x42).I64(-1).I64(0));
  Reply range = NotifyInvalInode(7, 4096, 8192);
  ExpectMessage(range, Golden().Header(40, 2, 0).U64(7).I64(4096).I64(8192));
}

TEST(NotifyTest, InvalEntry) {
  Reply r = NotifyInvalEntry(1, "name");
  ExpectMessage(r, Golden().Header(16 + 16 + 5, 3, 0).U64(1).U32(4).U32(0).Str("name").Zeros(1));
  Reply expire = NotifyInvalEntry(9, "x", abi::kExpireOnly);
  ExpectMessage(
      expire,
      Golden().Header(16 + 16 + 2, 3, 0).U64(9).U32(1).U32(abi::kExpireOnly).Str("x").Zeros(1));
}

TEST(NotifyTest, Delete) {
  Reply r = NotifyDelete(1, 77, "gone.txt");
  ExpectMessage(
      r, Golden().Header(16 + 24 + 9, 6, 0).U64(1).U64(77).U32(8).U32(0).Str("gone.txt").Zeros(1));
}

TEST(NotifyTest, Store) {
  const std::string data = "stored bytes";
  Reply r = NotifyStore(5, 4096, AsBytes(data));
  ExpectMessage(r, Golden().Header(16 + 24 + 12, 4, 0).U64(5).U64(4096).U32(12).U32(0).Str(data));
  Reply empty = NotifyStore(5, 0, {});
  ExpectMessage(empty, Golden().Header(16 + 24, 4, 0).U64(5).U64(0).U32(0).U32(0));
}

TEST(NotifyTest, Retrieve) {
  Reply r = NotifyRetrieve(0x99, 5, 8192, 65536);
  ExpectMessage(r, Golden().Header(48, 5, 0).U64(0x99).U64(5).U64(8192).U32(65536).U32(0));
}

TEST(NotifyTest, ResendAndIncEpochAreHeaderOnly) {
  Reply resend = NotifyResend();
  ExpectMessage(resend, Golden().Header(16, 7, 0));
  Reply epoch = NotifyIncEpoch();
  ExpectMessage(epoch, Golden().Header(16, 8, 0));
}

TEST(NotifyTest, Prune) {
  const uint64_t ids[] = {3, 0x1000000000ULL, 5};
  Reply r = NotifyPrune(ids);
  ExpectMessage(
      r,
      Golden().Header(16 + 16 + 24, 9, 0).U32(3).U32(0).U64(0).U64(3).U64(0x1000000000ULL).U64(5));
  Reply none = NotifyPrune({});
  ExpectMessage(none, Golden().Header(32, 9, 0).U32(0).U32(0).U64(0));
}

}  // namespace
}  // namespace efuse::proto
