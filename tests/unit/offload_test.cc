// tests/unit/offload_test.cc — the offload policy's decisions, from a
// hot-inode table the test writes (the BPF side is covered by
// tests/mount/telemetry_test.cc on real mounts).
#include "core/offload.h"

#include <vector>

#include "core/clock.h"
#include "gtest/gtest.h"
#include "proto/abi.h"

namespace efuse {
namespace {

// The kernel's table as the test sets it: counts per node id.
class TableTelemetry : public Telemetry {
 public:
  absl::Status Attach(dev_t, unsigned) override { return absl::OkStatus(); }
  void Detach() override {}
  absl::Status ReadHotInodes(uint64_t since_ns, std::vector<HotInode>* out) override {
    out->clear();
    for (const HotInode& h : rows)
      if (h.last_seen_ns >= since_ns) out->push_back(h);
    return absl::OkStatus();
  }
  void AppendStatus(std::vector<std::pair<std::string, std::string>>*) const override {}

  void Add(uint64_t nodeid, int cls, uint32_t n) {
    for (HotInode& h : rows) {
      if (h.nodeid == nodeid) {
        h.counts[cls] += n;
        h.last_seen_ns = MonotonicNs();
        return;
      }
    }
    HotInode h;
    h.nodeid = nodeid;
    h.counts[cls] = n;
    h.last_seen_ns = MonotonicNs();
    rows.push_back(h);
  }
  std::vector<HotInode> rows;
};

// Records what the policy asks of the backend.
class RecordingFs : public FileSystem {
 public:
  std::string_view Name() const override { return "recording"; }
  Result<uint64_t> StoreInPageCache(uint64_t nodeid, uint64_t) override {
    stored.push_back(nodeid);
    if (store_error != 0) return Errno(store_error);
    return uint64_t{4096};
  }
  bool KeepBacking(uint64_t nodeid) override {
    kept.push_back(nodeid);
    return keep_ok;
  }
  std::vector<uint64_t> stored, kept;
  int store_error = 0;
  bool keep_ok = true;
};

class OffloadTest : public ::testing::Test {
 protected:
  OffloadTest() : policy_(Options(), &table_, &fs_) {}
  static OffloadOptions Options() {
    OffloadOptions o;
    o.max_timeout = 30;
    o.hot_requests = 3;
    return o;
  }
  double AttrTimeoutOf(uint64_t nodeid) {
    double t = 0;
    policy_.AdjustAttr(nodeid, /*attr_volatile=*/false, &t);
    return t;
  }
  TableTelemetry table_;
  RecordingFs fs_;
  OffloadPolicy policy_;
};

TEST_F(OffloadTest, AttributesOfAnInodeHotWithGetattrLiveLonger) {
  table_.Add(5, EFUSE_HOT_GETATTR, 2);
  policy_.Scan();
  EXPECT_EQ(AttrTimeoutOf(5), 0) << "2 requests are not hot yet";
  table_.Add(5, EFUSE_HOT_GETATTR, 1);
  policy_.Scan();
  EXPECT_EQ(AttrTimeoutOf(5), 30);
  EXPECT_EQ(AttrTimeoutOf(6), 0) << "only the hot inode";
  // Never shorter than what the backend chose.
  double longer = 100;
  policy_.AdjustAttr(5, false, &longer);
  EXPECT_EQ(longer, 100);
  EXPECT_EQ(policy_.counters().attr_raised.load(), 1u);
}

TEST_F(OffloadTest, EntriesOfADirectoryHotWithLookupLiveLonger) {
  table_.Add(1, EFUSE_HOT_LOOKUP, 10);
  policy_.Scan();
  Entry e;
  e.nodeid = 9;
  e.entry_timeout = 0;
  e.attr_timeout = 0;
  policy_.AdjustEntry(1, &e);
  EXPECT_EQ(e.entry_timeout, 30);
  EXPECT_EQ(e.attr_timeout, 30);
  Entry negative;  // node id 0: the kernel keeps it for entry_timeout, untouched
  negative.entry_timeout = 0;
  policy_.AdjustEntry(1, &negative);
  EXPECT_EQ(negative.entry_timeout, 0);
  Entry elsewhere;
  elsewhere.nodeid = 10;
  elsewhere.entry_timeout = 0;
  policy_.AdjustEntry(2, &elsewhere);
  EXPECT_EQ(elsewhere.entry_timeout, 0);
}

// Attributes that change with no request (a passthrough file open for
// writing, whose mapping the kernel serves alone) keep the backend's
// lifetime, hot or not: raised, a stat would show old times for 30 s.
TEST_F(OffloadTest, VolatileAttributesAreNeverRaised) {
  table_.Add(5, EFUSE_HOT_GETATTR, 10);
  table_.Add(1, EFUSE_HOT_LOOKUP, 10);
  policy_.Scan();
  double t = 0;
  policy_.AdjustAttr(5, /*attr_volatile=*/true, &t);
  EXPECT_EQ(t, 0);
  Entry e;
  e.nodeid = 5;
  e.entry_timeout = 0;
  e.attr_timeout = 0;
  e.attr_volatile = true;
  policy_.AdjustEntry(1, &e);
  EXPECT_EQ(e.entry_timeout, 30) << "the name may still live long";
  EXPECT_EQ(e.attr_timeout, 0);
  EXPECT_EQ(policy_.counters().attr_raised.load(), 0u);
}

TEST_F(OffloadTest, AChangeDropsTheRaiseUntilEarnedAgain) {
  table_.Add(5, EFUSE_HOT_GETATTR, 5);
  policy_.Scan();
  ASSERT_EQ(AttrTimeoutOf(5), 30);
  policy_.Changed(5);
  EXPECT_EQ(AttrTimeoutOf(5), 0) << "dropped at once";
  EXPECT_EQ(policy_.counters().drops.load(), 1u);
  // The table still holds 5 requests from before the change: not hot.
  table_.Add(5, EFUSE_HOT_SETATTR, 1);
  policy_.Scan();
  EXPECT_EQ(AttrTimeoutOf(5), 0) << "requests from before the change counted";
  table_.Add(5, EFUSE_HOT_GETATTR, 3);
  policy_.Scan();
  EXPECT_EQ(AttrTimeoutOf(5), 30);
}

TEST_F(OffloadTest, HotReadsArePushedAndOpensKeepTheCache) {
  table_.Add(7, EFUSE_HOT_READ, 64);
  policy_.Scan();
  ASSERT_EQ(fs_.stored, std::vector<uint64_t>{7});
  OpenReply open;
  policy_.AdjustOpen(7, &open);
  EXPECT_NE(open.open_flags & abi::kFopenKeepCache, 0u);
  OpenReply direct;
  direct.open_flags = abi::kFopenDirectIo;
  policy_.AdjustOpen(7, &direct);
  EXPECT_EQ(direct.open_flags & abi::kFopenKeepCache, 0u) << "direct I/O has no cache to keep";
  // Not pushed again while the kernel serves the reads.
  policy_.Scan();
  EXPECT_EQ(fs_.stored.size(), 1u);
  EXPECT_EQ(policy_.counters().stores.load(), 1u);
  EXPECT_EQ(policy_.counters().stored_bytes.load(), 4096u);
}

// A successor's policy (a takeover): the kernel still holds what the dead
// server pushed. A file hot for reads at its first scan is not pushed again
// then; one that becomes hot later is, as before.
TEST_F(OffloadTest, ASuccessorDoesNotPushAgainWhatItsPredecessorPushed) {
  OffloadOptions o = Options();
  o.successor = true;
  OffloadPolicy successor(o, &table_, &fs_);
  table_.Add(7, EFUSE_HOT_READ, 64);  // counts carry on in the pinned maps
  successor.Scan();
  EXPECT_TRUE(fs_.stored.empty());
  table_.Add(7, EFUSE_HOT_READ, 64);
  table_.Add(8, EFUSE_HOT_READ, 64);
  successor.Scan();
  EXPECT_EQ(fs_.stored, std::vector<uint64_t>{8});
}

TEST_F(OffloadTest, ABackendThatCannotStoreKeepsDroppingTheCache) {
  fs_.store_error = ENOSYS;
  table_.Add(7, EFUSE_HOT_READ, 64);
  policy_.Scan();
  OpenReply open;
  policy_.AdjustOpen(7, &open);
  EXPECT_EQ(open.open_flags & abi::kFopenKeepCache, 0u);
  EXPECT_EQ(policy_.counters().stores.load(), 0u);
}

TEST_F(OffloadTest, FilesOpenedOftenKeepTheirBackingOnce) {
  table_.Add(8, EFUSE_HOT_OPEN, 3);
  policy_.Scan();
  table_.Add(8, EFUSE_HOT_OPEN, 3);
  policy_.Scan();
  EXPECT_EQ(fs_.kept, std::vector<uint64_t>{8});
  EXPECT_EQ(policy_.counters().kept_backing.load(), 1u);
}

TEST_F(OffloadTest, TheScanThreadActsOnItsOwn) {
  table_.Add(5, EFUSE_HOT_GETATTR, 3);
  policy_.Start();
  for (int i = 0; i < 200 && AttrTimeoutOf(5) == 0; ++i) usleep(10000);
  policy_.Stop();
  EXPECT_EQ(AttrTimeoutOf(5), 30);
  EXPECT_GE(policy_.counters().scans.load(), 1u);
}

}  // namespace
}  // namespace efuse
