// Dispatcher tests through a capturing sender: INIT first, typed calls,
// replies cut and shaped right, malformed requests answered, exactly one
// reply per request (none for FORGET), and INTERRUPT reaching a blocked call.
#include "core/dispatcher.h"

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/abi.h"
#include "proto/request.h"

namespace efuse {
namespace {

using abi::Opcode;

class CapturingSender : public ReplySender {
 public:
  int Send(proto::Reply& reply) override {
    std::vector<uint8_t> bytes(reply.size());
    reply.CopyTo(bytes);
    std::lock_guard<std::mutex> l(mu_);
    replies_.push_back(std::move(bytes));
    return 0;
  }
  std::vector<std::vector<uint8_t>> Take() {
    std::lock_guard<std::mutex> l(mu_);
    return std::move(replies_);
  }
  size_t Count() {
    std::lock_guard<std::mutex> l(mu_);
    return replies_.size();
  }

 private:
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> replies_;
};

abi::OutHeader HeaderOf(const std::vector<uint8_t>& r) {
  abi::OutHeader h;
  std::memcpy(&h, r.data(), sizeof(h));
  return h;
}

// A backend with a few calls, one of which blocks until interrupted.
class TestFs : public FileSystem {
 public:
  std::string_view Name() const override { return "test"; }
  void Init(const InitInfo& info) override { init_flags = info.flags; }
  Result<Entry> Lookup(const RequestContext& ctx, uint64_t parent, std::string_view name) override {
    last_name = std::string(name);
    last_uid = ctx.uid;
    if (name == "missing") return Errno(ENOENT);
    Entry e;
    e.nodeid = 42;
    e.attr.ino = 42;
    e.attr.mode = S_IFREG | 0644;
    e.attr.size = 1234;
    e.entry_timeout = 1.5;
    e.attr_timeout = 2.25;
    return e;
  }
  void Forget(uint64_t nodeid, uint64_t n) override { forgotten += n; }
  Result<size_t> Read(const RequestContext&, uint64_t, uint64_t, uint64_t offset,
                      std::span<uint8_t> out, uint32_t) override {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(offset + i);
    return out.size() / 2;  // a short read
  }
  // Node 11: answered from bytes of its own, held by `keep` until sent;
  // node 12: fails; the rest: Read.
  Result<ReadView> ViewRead(const RequestContext&, uint64_t nodeid, uint64_t, uint64_t offset, uint32_t,
                            uint32_t) override {
    if (nodeid == 12) return Errno(EHOSTDOWN);
    if (nodeid != 11) return ReadView{};
    // Its release notes how many replies were sent by then.
    auto bytes = std::shared_ptr<std::string>(new std::string("0123456789abcdef"), [this](std::string* b) {
      replies_at_view_release = replies_sent ? replies_sent() : 0;
      delete b;
    });
    view_keep = bytes;
    const std::string_view from = std::string_view(*bytes).substr(std::min<size_t>(offset, bytes->size()));
    return ReadView{{reinterpret_cast<const uint8_t*>(from.data()), from.size()}, bytes, true};
  }
  std::weak_ptr<std::string> view_keep;
  std::function<size_t()> replies_sent;
  size_t replies_at_view_release = 0;
  Result<std::string> GetXattr(const RequestContext&, uint64_t, std::string_view) override {
    return std::string("value!");
  }
  Status SetLk(const RequestContext& ctx, uint64_t, const LockRequest&, bool sleep) override {
    entered_lock = true;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!ctx.Interrupted()) {
      if (std::chrono::steady_clock::now() > deadline) return Errno(ETIMEDOUT);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return Errno(EINTR);
  }
  Status ReadDir(const RequestContext&, uint64_t, uint64_t, uint64_t offset, DirSink& sink) override {
    for (uint64_t i = offset; i < 100; ++i) {
      Entry e;
      e.nodeid = 1000 + i;
      e.attr.ino = 1000 + i;
      e.attr.mode = S_IFREG | 0600;
      if (!sink.Add("file" + std::to_string(i), 1000 + i, S_IFREG, i + 1, sink.plus() ? &e : nullptr))
        break;
      ++accepted;
    }
    return OkStatus();
  }

  uint64_t init_flags = 0;
  std::string last_name;
  uint32_t last_uid = 0;
  uint64_t forgotten = 0;
  std::atomic<bool> entered_lock{false};
  int accepted = 0;
};

// Builds a request: header + fixed struct + tail bytes.
std::vector<uint8_t> Req(Opcode op, uint64_t unique, uint64_t nodeid, const void* arg,
                         size_t arg_size, std::string_view tail = {}) {
  return proto::EncodeRequest(op, unique, nodeid, arg, arg_size, tail);
}

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.wanted_flags = abi::init::kAsyncRead | abi::init::kMaxPages | abi::init::kInitExt |
                           abi::init::kSetxattrExt | abi::init::kPassthrough;
    dispatcher_ = std::make_unique<Dispatcher>(&fs_, config_, 4);
  }
  // Sends `req` through Handle with a 1 MiB buffer; returns the replies.
  std::vector<std::vector<uint8_t>> Run(const std::vector<uint8_t>& req,
                                        InterruptTable::Slot* slot = nullptr) {
    std::vector<uint8_t> buf(1 << 20);
    std::memcpy(buf.data(), req.data(), req.size());
    dispatcher_->Handle(buf, req.size(), slot, sender_);
    return sender_.Take();
  }
  void Init() {
    abi::InitIn in{};
    in.major = 7;
    in.minor = 45;
    in.max_readahead = 128 * 1024;
    in.flags = static_cast<uint32_t>(abi::init::kAsyncRead | abi::init::kMaxPages |
                                     abi::init::kInitExt | abi::init::kSetxattrExt);
    in.flags2 = static_cast<uint32_t>(abi::init::kPassthrough >> 32);
    auto replies = Run(Req(Opcode::kInit, 2, 0, &in, sizeof(in)));
    ASSERT_EQ(replies.size(), 1u);
    ASSERT_EQ(HeaderOf(replies[0]).error, 0);
  }

  TestFs fs_;
  proto::InitConfig config_;
  std::unique_ptr<Dispatcher> dispatcher_;
  CapturingSender sender_;
};

TEST_F(DispatcherTest, RequestsBeforeInitGetEio) {
  auto r = Run(Req(Opcode::kLookup, 4, 1, nullptr, 0, std::string_view("a\0", 2)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EIO);
  EXPECT_EQ(HeaderOf(r[0]).unique, 4u);
}

TEST_F(DispatcherTest, InitNegotiatesAndPassesFlagsToBackend) {
  Init();
  EXPECT_TRUE(dispatcher_->initialized());
  EXPECT_EQ(dispatcher_->connection().minor, 45u);
  EXPECT_TRUE(dispatcher_->connection().Has(abi::init::kPassthrough));
  EXPECT_EQ(fs_.init_flags, dispatcher_->connection().flags);
  // A second INIT is a protocol error.
  abi::InitIn in{7, 45, 0, 0, 0, {}};
  auto r = Run(Req(Opcode::kInit, 6, 0, &in, sizeof(in)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EPROTO);
}

TEST_F(DispatcherTest, LookupReplyCarriesEntryAndTimeouts) {
  Init();
  auto r = Run(Req(Opcode::kLookup, 8, 1, nullptr, 0, std::string_view("name\0", 5)));
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(r[0].size(), sizeof(abi::OutHeader) + sizeof(abi::EntryOut));
  EXPECT_EQ(HeaderOf(r[0]).len, r[0].size());
  abi::EntryOut e;
  std::memcpy(&e, r[0].data() + sizeof(abi::OutHeader), sizeof(e));
  EXPECT_EQ(e.nodeid, 42u);
  EXPECT_EQ(e.entry_valid, 1u);
  EXPECT_EQ(e.entry_valid_nsec, 500000000u);
  EXPECT_EQ(e.attr_valid, 2u);
  EXPECT_EQ(e.attr_valid_nsec, 250000000u);
  EXPECT_EQ(e.attr.size, 1234u);
  EXPECT_EQ(fs_.last_name, "name");
  EXPECT_EQ(fs_.last_uid, 1000u);

  r = Run(Req(Opcode::kLookup, 10, 1, nullptr, 0, std::string_view("missing\0", 8)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -ENOENT);
  EXPECT_EQ(r[0].size(), sizeof(abi::OutHeader));
}

TEST_F(DispatcherTest, UnimplementedCallsAnswerEnosys) {
  Init();
  auto r = Run(Req(Opcode::kReadlink, 12, 5, nullptr, 0));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -ENOSYS);
  abi::IoctlIn io{};
  r = Run(Req(Opcode::kIoctl, 14, 5, &io, sizeof(io)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -ENOSYS);
}

TEST_F(DispatcherTest, ForgetGetsNoReply) {
  Init();
  abi::ForgetIn f{3};
  EXPECT_TRUE(Run(Req(Opcode::kForget, 16, 42, &f, sizeof(f))).empty());
  EXPECT_EQ(fs_.forgotten, 3u);
  struct {
    abi::BatchForgetIn in;
    abi::ForgetOne one[2];
  } batch{{2, 0}, {{42, 1}, {43, 5}}};
  EXPECT_TRUE(Run(Req(Opcode::kBatchForget, 18, 0, &batch, sizeof(batch))).empty());
  EXPECT_EQ(fs_.forgotten, 9u);
  // A malformed FORGET still gets no reply (the kernel waits for none).
  EXPECT_TRUE(Run(Req(Opcode::kForget, 20, 42, &f, 4)).empty());
}

TEST_F(DispatcherTest, MalformedRequestsGetErrorsNotCrashes) {
  Init();
  // Name without NUL.
  auto r = Run(Req(Opcode::kLookup, 22, 1, nullptr, 0, "abc"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EINVAL);
  // Unknown opcode.
  r = Run(Req(static_cast<Opcode>(999), 24, 1, nullptr, 0));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -ENOSYS);
  // Truncated struct.
  abi::ReadIn rd{};
  r = Run(Req(Opcode::kRead, 26, 1, &rd, sizeof(rd) - 1));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EIO);
  // Shorter than a header: nothing to answer.
  std::vector<uint8_t> tiny(10, 0);
  EXPECT_TRUE(Run(tiny).empty());
  EXPECT_GE(dispatcher_->stats().bad_requests.load(), 4u);
}

TEST_F(DispatcherTest, ReadWritesIntoScratchAndRepliesShort) {
  Init();
  abi::ReadIn rd{};
  rd.size = 4096;
  rd.offset = 7;
  auto r = Run(Req(Opcode::kRead, 28, 9, &rd, sizeof(rd)));
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(r[0].size(), sizeof(abi::OutHeader) + 2048);
  EXPECT_EQ(r[0][sizeof(abi::OutHeader)], 7);
  EXPECT_EQ(r[0][sizeof(abi::OutHeader) + 100], static_cast<uint8_t>(107));
}

TEST_F(DispatcherTest, ReadAnsweredFromTheFileSystemsOwnBytes) {
  Init();
  fs_.replies_sent = [this] { return sender_.Count(); };
  abi::ReadIn rd{};
  rd.size = 10;  // fewer than the view holds: cut to what was asked
  rd.offset = 2;
  auto r = Run(Req(Opcode::kRead, 28, 11, &rd, sizeof(rd)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(std::string(r[0].begin() + sizeof(abi::OutHeader), r[0].end()), "23456789ab");
  EXPECT_TRUE(fs_.view_keep.expired()) << "the bytes are let go once the reply is sent";
  EXPECT_EQ(fs_.replies_at_view_release, 1u) << "the bytes were let go before the reply was sent";
  rd.size = 4096;  // more: the view's end is the file's
  rd.offset = 12;
  r = Run(Req(Opcode::kRead, 30, 11, &rd, sizeof(rd)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(std::string(r[0].begin() + sizeof(abi::OutHeader), r[0].end()), "cdef");
  r = Run(Req(Opcode::kRead, 32, 12, &rd, sizeof(rd)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EHOSTDOWN);
  EXPECT_EQ(r[0].size(), sizeof(abi::OutHeader));
}

TEST_F(DispatcherTest, GetxattrSizeProbeAndErange) {
  Init();
  abi::GetxattrIn in{0, 0};
  auto r = Run(Req(Opcode::kGetxattr, 30, 9, &in, sizeof(in), std::string_view("user.a\0", 7)));
  ASSERT_EQ(r.size(), 1u);
  abi::GetxattrOut out;
  std::memcpy(&out, r[0].data() + sizeof(abi::OutHeader), sizeof(out));
  EXPECT_EQ(out.size, 6u);
  in.size = 3;
  r = Run(Req(Opcode::kGetxattr, 32, 9, &in, sizeof(in), std::string_view("user.a\0", 7)));
  EXPECT_EQ(HeaderOf(r[0]).error, -ERANGE);
  in.size = 64;
  r = Run(Req(Opcode::kGetxattr, 34, 9, &in, sizeof(in), std::string_view("user.a\0", 7)));
  ASSERT_EQ(r[0].size(), sizeof(abi::OutHeader) + 6);
  EXPECT_EQ(std::string(r[0].begin() + sizeof(abi::OutHeader), r[0].end()), "value!");
}

TEST_F(DispatcherTest, ReaddirFillsExactlyWhatFits) {
  Init();
  abi::ReadIn rd{};
  rd.size = 200;  // room for a few plain records only
  auto r = Run(Req(Opcode::kReaddir, 36, 1, &rd, sizeof(rd)));
  ASSERT_EQ(r.size(), 1u);
  size_t payload = r[0].size() - sizeof(abi::OutHeader);
  EXPECT_LE(payload, 200u);
  EXPECT_EQ(payload % 8, 0u);
  // "file0" record: 24 + 5 -> 32 bytes; 200 / 32 = 6 records.
  EXPECT_EQ(fs_.accepted, 6);
  fs_.accepted = 0;
  rd.size = 4096;
  r = Run(Req(Opcode::kReaddirplus, 38, 1, &rd, sizeof(rd)));
  payload = r[0].size() - sizeof(abi::OutHeader);
  // plus record: 128 + 24 + 5 -> 160 bytes; 4096 / 160 = 25.
  EXPECT_EQ(fs_.accepted, 25);
  EXPECT_EQ(payload, 25u * 160u);
}

TEST_F(DispatcherTest, InterruptReachesABlockedRequest) {
  Init();
  InterruptTable::Slot* slot = dispatcher_->interrupts().slot(0);
  abi::LkIn lk{};
  lk.lk.type = 1;
  std::vector<uint8_t> setlkw = Req(Opcode::kSetlkw, 40, 9, &lk, sizeof(lk));
  std::thread worker([&] {
    std::vector<uint8_t> buf(4096);
    std::memcpy(buf.data(), setlkw.data(), setlkw.size());
    dispatcher_->Handle(buf, setlkw.size(), slot, sender_);
  });
  while (!fs_.entered_lock) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // The kernel's INTERRUPT names the blocked request's unique.
  abi::InterruptIn intr{40};
  std::vector<uint8_t> buf(4096);
  auto req = Req(Opcode::kInterrupt, 41, 0, &intr, sizeof(intr));
  std::memcpy(buf.data(), req.data(), req.size());
  dispatcher_->Handle(buf, req.size(), dispatcher_->interrupts().slot(1), sender_);
  worker.join();
  auto r = sender_.Take();
  ASSERT_EQ(r.size(), 1u);  // INTERRUPT itself is not answered
  EXPECT_EQ(HeaderOf(r[0]).unique, 40u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EINTR);
  EXPECT_EQ(dispatcher_->stats().interrupts.load(), 1u);
}

TEST_F(DispatcherTest, InterruptForUnknownRequestAsksKernelToRetry) {
  Init();
  abi::InterruptIn intr{1234};
  auto r = Run(Req(Opcode::kInterrupt, 43, 0, &intr, sizeof(intr)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EAGAIN);
}

TEST(SplitTimeoutTest, Values) {
  uint64_t s;
  uint32_t ns;
  SplitTimeout(0, &s, &ns);
  EXPECT_EQ(s, 0u);
  EXPECT_EQ(ns, 0u);
  SplitTimeout(-1, &s, &ns);
  EXPECT_EQ(s, 0u);
  SplitTimeout(0.001, &s, &ns);
  EXPECT_EQ(s, 0u);
  EXPECT_EQ(ns, 1000000u);
  SplitTimeout(86400.5, &s, &ns);
  EXPECT_EQ(s, 86400u);
  EXPECT_EQ(ns, 500000000u);
}


// ---------------------------------------------------------------------------
// Answers given later (efuse::Later): from another thread, after the call
// returned; exactly one reply, of the kind the request wants.

// A sender whose Detach gives one that records into the same list, from
// any thread.
class DetachingSender : public CapturingSender {
 public:
  std::unique_ptr<ReplySender> Detach() override {
    ++detached;
    return std::make_unique<Late>(this);
  }
  std::atomic<int> detached{0};

 private:
  class Late : public ReplySender {
   public:
    explicit Late(CapturingSender* to) : to_(to) {}
    int Send(proto::Reply& reply) override { return to_->Send(reply); }

   private:
    CapturingSender* to_;
  };
};

// Answers from threads of its own; what each name asks for is below.
class LaterFs : public FileSystem {
 public:
  ~LaterFs() override { Join(); }
  std::string_view Name() const override { return "later"; }
  Result<Entry> Lookup(const RequestContext& ctx, uint64_t, std::string_view name) override {
    if (name == "claims-but-takes-none") return kAnsweredLater;
    if (name.starts_with("interrupted-")) {
      // The INTERRUPT comes while this call runs: before or after it takes
      // its Later. Either way the Later sees it.
      const bool take_first = name == "interrupted-after-taking";
      std::optional<Later> later;
      if (take_first) later.emplace(ctx.AnswerLater());
      in_call = true;
      while (!ctx.Interrupted()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (!take_first) later.emplace(ctx.AnswerLater());
      Spawn([l = std::move(*later)]() mutable {
        if (l.Interrupted()) return l.Fail(Errno(EINTR));
        l.Answer(Result<Entry>(Errno(ENOENT)));
      });
      return kAnsweredLater;
    }
    Later later = ctx.AnswerLater();
    if (!later) return Errno(ENOTSUP);
    if (name == "dropped") return kAnsweredLater;  // destroyed unanswered here
    if (name == "wrong-kind") {
      Spawn([l = std::move(later)]() mutable { l.Answer(Result<AttrReply>(AttrReply{})); });
      return kAnsweredLater;
    }
    if (name == "twice") {
      Later second = ctx.AnswerLater();
      second_was_empty = !second;
    }
    if (name == "fails") {
      Spawn([l = std::move(later)]() mutable { l.Fail(Errno(EHOSTUNREACH)); });
      return kAnsweredLater;
    }
    Spawn([l = std::move(later)]() mutable {
      Entry e;
      e.nodeid = 77;
      e.attr.ino = 77;
      e.attr.mode = S_IFREG | 0644;
      e.entry_timeout = 3;
      l.Answer(e);
    });
    return kAnsweredLater;
  }
  Result<size_t> Read(const RequestContext& ctx, uint64_t, uint64_t, uint64_t, std::span<uint8_t> out,
                      uint32_t) override {
    Later later = ctx.AnswerLater();
    if (!later) return Errno(ENOTSUP);
    // More than was asked for: the reply carries what was asked.
    Spawn([l = std::move(later), n = out.size() + 100]() mutable { l.Answer(std::string(n, 'z')); });
    return kAnsweredLater;
  }
  Status ReadDir(const RequestContext& ctx, uint64_t, uint64_t, uint64_t, DirSink&) override {
    readdir_later_empty = !ctx.AnswerLater();
    return OkStatus();
  }
  void Join() {
    std::vector<std::thread> t;
    {
      std::lock_guard<std::mutex> l(mu_);
      t.swap(threads_);
    }
    for (auto& th : t) th.join();
  }
  bool second_was_empty = false;
  bool readdir_later_empty = false;
  std::atomic<bool> in_call{false};

 private:
  template <typename F>
  void Spawn(F f) {
    std::lock_guard<std::mutex> l(mu_);
    threads_.emplace_back(std::move(f));
  }
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

class LaterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.wanted_flags = abi::init::kAsyncRead | abi::init::kMaxPages | abi::init::kInitExt;
    dispatcher_ = std::make_unique<Dispatcher>(&fs_, config_, 4);
    abi::InitIn in{};
    in.major = 7;
    in.minor = 45;
    in.flags = static_cast<uint32_t>(abi::init::kAsyncRead | abi::init::kMaxPages | abi::init::kInitExt);
    Handle(Req(Opcode::kInit, 2, 0, &in, sizeof(in)));
    sender_.Take();
  }
  void TearDown() override {
    fs_.Join();
    dispatcher_->StopAsync();
  }
  void Handle(const std::vector<uint8_t>& req) {
    std::vector<uint8_t> buf(1 << 20);
    std::memcpy(buf.data(), req.data(), req.size());
    dispatcher_->Handle(buf, req.size(), nullptr, sender_);
  }
  // Handles `req`, waits for the threads' answers, returns every reply.
  std::vector<std::vector<uint8_t>> Run(const std::vector<uint8_t>& req) {
    Handle(req);
    fs_.Join();
    return sender_.Take();
  }
  std::vector<uint8_t> Lookup(uint64_t unique, const std::string& name) {
    return Req(Opcode::kLookup, unique, 1, nullptr, 0, std::string_view(name.c_str(), name.size() + 1));
  }

  LaterFs fs_;
  proto::InitConfig config_;
  std::unique_ptr<Dispatcher> dispatcher_;
  DetachingSender sender_;
};

TEST_F(LaterTest, AnAnswerFromAnotherThreadIsTheOnlyReply) {
  auto r = Run(Lookup(20, "name"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).unique, 20u);
  EXPECT_EQ(HeaderOf(r[0]).error, 0);
  ASSERT_EQ(r[0].size(), sizeof(abi::OutHeader) + sizeof(abi::EntryOut));
  abi::EntryOut e;
  std::memcpy(&e, r[0].data() + sizeof(abi::OutHeader), sizeof(e));
  EXPECT_EQ(e.nodeid, 77u);
  EXPECT_EQ(e.entry_valid, 3u);
  EXPECT_EQ(dispatcher_->in_flight(), 0) << "an answered Later is no longer in flight";
}

TEST_F(LaterTest, AFailureAnsweredLaterCarriesItsErrno) {
  auto r = Run(Lookup(22, "fails"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EHOSTUNREACH);
}

TEST_F(LaterTest, ALaterDroppedUnansweredAnswersEio) {
  auto r = Run(Lookup(24, "dropped"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).unique, 24u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EIO);
  EXPECT_EQ(dispatcher_->in_flight(), 0);
}

TEST_F(LaterTest, TheWrongKindOfAnswerIsEioNotAGarbledReply) {
  auto r = Run(Lookup(26, "wrong-kind"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EIO);
  EXPECT_EQ(r[0].size(), sizeof(abi::OutHeader));
}

TEST_F(LaterTest, ClaimingALaterWithoutTakingOneIsEioNotAnOutOfRangeErrno) {
  auto r = Run(Lookup(28, "claims-but-takes-none"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, -EIO);
}

TEST_F(LaterTest, ARequestHasOneLaterAndReaddirNone) {
  auto r = Run(Lookup(30, "twice"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, 0);
  EXPECT_TRUE(fs_.second_was_empty);
  abi::ReadIn in{};
  in.size = 4096;
  r = Run(Req(Opcode::kReaddir, 32, 1, &in, sizeof(in)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(fs_.readdir_later_empty);
}

TEST_F(LaterTest, AReadAnsweredLaterIsCutToWhatWasAsked) {
  abi::ReadIn in{};
  in.size = 1000;
  auto r = Run(Req(Opcode::kRead, 34, 5, &in, sizeof(in)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(HeaderOf(r[0]).error, 0);
  EXPECT_EQ(r[0].size(), sizeof(abi::OutHeader) + 1000);
}

TEST_F(LaterTest, AnInterruptThatCameDuringTheCallReachesTheLater) {
  uint64_t unique = 40;
  for (const char* name : {"interrupted-before-taking", "interrupted-after-taking"}) {
    SCOPED_TRACE(name);
    unique += 2;
    fs_.in_call = false;
    std::thread worker([&] {
      std::vector<uint8_t> req = Lookup(unique, name), buf(1 << 20);
      std::memcpy(buf.data(), req.data(), req.size());
      dispatcher_->Handle(buf, req.size(), dispatcher_->interrupts().slot(0), sender_);
    });
    while (!fs_.in_call) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    abi::InterruptIn intr{unique};
    std::vector<uint8_t> req = Req(Opcode::kInterrupt, unique + 1, 0, &intr, sizeof(intr)), buf(4096);
    std::memcpy(buf.data(), req.data(), req.size());
    dispatcher_->Handle(buf, req.size(), dispatcher_->interrupts().slot(1), sender_);
    worker.join();
    fs_.Join();
    auto r = sender_.Take();
    ASSERT_EQ(r.size(), 1u) << "INTERRUPT found its request: no reply of its own";
    EXPECT_EQ(HeaderOf(r[0]).unique, unique);
    EXPECT_EQ(HeaderOf(r[0]).error, -EINTR);
  }
}

TEST_F(LaterTest, StopAsyncWaitsForOutstandingAnswers) {
  // Many at once, answered from as many threads, each exactly once.
  for (uint64_t u = 100; u < 164; u += 2) Handle(Lookup(u, "name"));
  dispatcher_->StopAsync();
  auto r = sender_.Take();
  ASSERT_EQ(r.size(), 32u);
  std::set<uint64_t> uniques;
  for (const auto& one : r) uniques.insert(HeaderOf(one).unique);
  EXPECT_EQ(uniques.size(), 32u);
  EXPECT_EQ(dispatcher_->in_flight(), 0);
}


// RETRIEVE and its NOTIFY_REPLY: the data the kernel sends back reaches
// the callback that asked, once; a failed notify calls nothing.
class RecordingKernel : public KernelConnection {
 public:
  Result<int32_t> OpenBacking(int) override { return Errno(ENOSYS); }
  Status CloseBacking(int32_t) override { return OkStatus(); }
  Status Notify(std::span<const iovec> message) override {
    std::string bytes;
    for (const iovec& v : message) bytes.append(static_cast<const char*>(v.iov_base), v.iov_len);
    sent.push_back(bytes);
    if (refuse) return Errno(ENOENT);
    return OkStatus();
  }
  std::vector<std::string> sent;
  bool refuse = false;
};

TEST(RetrieveTest, TheKernelsDataReachesTheCallbackThatAskedOnce) {
  RecordingKernel kernel;
  TestFs fs;
  proto::InitConfig config;
  config.wanted_flags = abi::init::kAsyncRead | abi::init::kMaxPages | abi::init::kInitExt;
  Dispatcher d(&fs, config, 4, &kernel);
  CapturingSender sender;
  auto handle = [&](const std::vector<uint8_t>& req) {
    std::vector<uint8_t> buf(1 << 16);
    std::memcpy(buf.data(), req.data(), req.size());
    d.Handle(buf, req.size(), nullptr, sender);
  };
  abi::InitIn in{};
  in.major = 7;
  in.minor = 45;
  in.flags = static_cast<uint32_t>(abi::init::kAsyncRead | abi::init::kMaxPages | abi::init::kInitExt);
  handle(Req(Opcode::kInit, 2, 0, &in, sizeof(in)));
  sender.Take();

  std::vector<std::string> got;
  ASSERT_TRUE(kernel.RetrieveData(9, 4096, 100, [&](Result<std::string> data) { got.push_back(*data); }).ok());
  ASSERT_EQ(kernel.sent.size(), 1u);
  abi::OutHeader h;
  abi::NotifyRetrieveOut out;
  ASSERT_EQ(kernel.sent[0].size(), sizeof(h) + sizeof(out));
  std::memcpy(&h, kernel.sent[0].data(), sizeof(h));
  std::memcpy(&out, kernel.sent[0].data() + sizeof(h), sizeof(out));
  EXPECT_EQ(h.error, static_cast<int32_t>(abi::NotifyCode::kRetrieve));
  EXPECT_EQ(out.nodeid, 9u);
  EXPECT_EQ(out.offset, 4096u);
  EXPECT_EQ(out.size, 100u);

  // The kernel's NOTIFY_REPLY carries the notify's unique and the bytes.
  abi::NotifyRetrieveIn reply{};
  reply.offset = 4096;
  reply.size = 5;
  handle(Req(Opcode::kNotifyReply, out.notify_unique, 9, &reply, sizeof(reply), std::string_view("hello")));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "hello");
  EXPECT_EQ(sender.Count(), 0u) << "NOTIFY_REPLY gets no reply";
  handle(Req(Opcode::kNotifyReply, out.notify_unique, 9, &reply, sizeof(reply), std::string_view("again")));
  EXPECT_EQ(got.size(), 1u) << "answered once";

  kernel.refuse = true;
  bool called = false;
  EXPECT_FALSE(kernel.RetrieveData(10, 0, 10, [&](Result<std::string>) { called = true; }).ok());
  handle(Req(Opcode::kNotifyReply, out.notify_unique + 1, 10, &reply, sizeof(reply), std::string_view("hello")));
  EXPECT_FALSE(called) << "a refused RETRIEVE is forgotten";

  kernel.refuse = false;
  ASSERT_TRUE(kernel.ResendPending().ok());
  std::memcpy(&h, kernel.sent.back().data(), sizeof(h));
  EXPECT_EQ(h.error, static_cast<int32_t>(abi::NotifyCode::kResend));
}

}  // namespace
}  // namespace efuse
