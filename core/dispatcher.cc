#include "core/dispatcher.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>
#include <cerrno>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstring>
#include <optional>

#include "absl/cleanup/cleanup.h"
#include "proto/dirent.h"

namespace efuse {

using abi::Opcode;
using proto::Reply;
using proto::Request;

abi::Attr ToWireAttr(const Attributes& a) {
  abi::Attr w{};
  w.ino = a.ino;
  w.size = a.size;
  w.blocks = a.blocks;
  w.atime = static_cast<uint64_t>(a.atime.tv_sec);
  w.mtime = static_cast<uint64_t>(a.mtime.tv_sec);
  w.ctime = static_cast<uint64_t>(a.ctime.tv_sec);
  w.atimensec = static_cast<uint32_t>(a.atime.tv_nsec);
  w.mtimensec = static_cast<uint32_t>(a.mtime.tv_nsec);
  w.ctimensec = static_cast<uint32_t>(a.ctime.tv_nsec);
  w.mode = a.mode;
  w.nlink = a.nlink;
  w.uid = a.uid;
  w.gid = a.gid;
  w.rdev = a.rdev;
  w.blksize = a.blksize;
  return w;
}

void SplitTimeout(double seconds, uint64_t* sec, uint32_t* nsec) {
  if (!(seconds > 0)) {  // also catches NaN
    *sec = 0;
    *nsec = 0;
    return;
  }
  double whole = std::floor(seconds);
  *sec = whole >= 1e15 ? uint64_t{1000000000000000} : static_cast<uint64_t>(whole);
  *nsec = static_cast<uint32_t>(std::min(999999999.0, (seconds - whole) * 1e9));
}

abi::EntryOut ToWireEntry(const Entry& e) {
  abi::EntryOut w{};
  w.nodeid = e.nodeid;
  w.generation = e.generation;
  SplitTimeout(e.entry_timeout, &w.entry_valid, &w.entry_valid_nsec);
  SplitTimeout(e.attr_timeout, &w.attr_valid, &w.attr_valid_nsec);
  w.attr = ToWireAttr(e.attr);
  return w;
}

namespace {

abi::Statx ToWireStatx(const Attributes& a) {
  abi::Statx s{};
  s.mask = STATX_BASIC_STATS | STATX_BTIME;
  s.blksize = a.blksize;
  s.nlink = a.nlink;
  s.uid = a.uid;
  s.gid = a.gid;
  s.mode = static_cast<uint16_t>(a.mode);
  s.ino = a.ino;
  s.size = a.size;
  s.blocks = a.blocks;
  auto t = [](const timespec& ts) {
    return abi::SxTime{ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec), 0};
  };
  s.atime = t(a.atime);
  s.btime = t(a.btime);
  s.ctime = t(a.ctime);
  s.mtime = t(a.mtime);
  // fuse_attr.rdev is the kernel's new_encode_dev() form.
  s.rdev_major = (a.rdev & 0xfff00) >> 8;
  s.rdev_minor = (a.rdev & 0xff) | ((a.rdev >> 12) & 0xfff00);
  return s;
}

// READDIR/READDIRPLUS: packs what the backend offers into the scratch buffer.
class WireDirSink final : public DirSink {
 public:
  WireDirSink(std::span<uint8_t> buffer, bool plus) : writer_(buffer), plus_(plus) {}
  bool Add(std::string_view name, uint64_t ino, uint32_t mode, uint64_t next_offset,
           const Entry* entry) override {
    if (!plus_) return writer_.Add(ino, next_offset, mode, name);
    abi::EntryOut out{};
    if (entry != nullptr) out = ToWireEntry(*entry);
    return writer_.AddPlus(out, ino, next_offset, mode, name);
  }
  bool plus() const override { return plus_; }
  std::span<const uint8_t> bytes() const { return writer_.bytes(); }

 private:
  proto::DirentWriter writer_;
  bool plus_;
};

timespec Ts(uint64_t sec, uint32_t nsec) {
  return timespec{static_cast<time_t>(sec), static_cast<long>(nsec)};
}

// How long a conflicting lock request waits for earlier RELEASEs: one is
// handled in microseconds, but a worker preempted right after reading one
// may take a few scheduler ticks on a loaded machine.
constexpr auto kReleaseWaitLimit = std::chrono::milliseconds(50);

LockRequest ToLock(const abi::LkIn& in) {
  LockRequest l;
  l.fh = in.fh;
  l.owner = in.owner;
  l.start = in.lk.start;
  l.end = in.lk.end;
  l.type = in.lk.type;
  l.pid = in.lk.pid;
  l.flock = (in.lk_flags & abi::kLkFlock) != 0;
  return l;
}

}  // namespace

Dispatcher::Dispatcher(FileSystem* fs, const proto::InitConfig& init_config,
                       size_t interrupt_slots, KernelConnection* kernel)
    : fs_(fs), kernel_(kernel), init_config_(init_config), interrupts_(interrupt_slots) {}

Dispatcher::~Dispatcher() { StopAsync(); }

void Dispatcher::StopAsync() {
  while (async_ops_.load(std::memory_order_acquire) > 0) {
    interrupts_.InterruptAllAsync();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool Dispatcher::AnswerOnOwnThread(const RequestContext& ctx, ReplySender& sender,
                                   std::function<void(RequestContext&, ReplySender&)> answer) {
  std::unique_ptr<ReplySender> late = sender.Detach();
  if (late == nullptr) return false;
  // The request buffer is reused as soon as we return: copy the context,
  // including the caller's groups. Its interrupt flag is the worker's slot,
  // which goes on to the next request.
  std::vector<uint32_t> groups(ctx.groups.begin(), ctx.groups.end());
  RequestContext copy = ctx;
  copy.interrupted = nullptr;
  copy.later_source_ = nullptr;  // (the request is this thread's to answer)
  async_ops_.fetch_add(1, std::memory_order_acq_rel);
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  std::thread([this, late = std::move(late), answer = std::move(answer),
               groups = std::move(groups), copy]() mutable {
    copy.groups = groups;
    answer(copy, *late);
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    async_ops_.fetch_sub(1, std::memory_order_acq_rel);
  }).detach();
  return true;
}

bool Dispatcher::DispatchBlockingLock(const Request& req, const RequestContext& ctx,
                                      ReplySender& sender) {
  const uint64_t unique = req.header.unique;
  const uint64_t node = req.header.nodeid;
  const LockRequest lock = ToLock(req.Arg<abi::LkIn>());
  return AnswerOnOwnThread(ctx, sender, [this, unique, node, lock](RequestContext& c,
                                                                   ReplySender& late) {
    InterruptTable::Slot* slot = interrupts_.Claim(unique);
    if (slot == nullptr) {
      // Every waiting slot is taken: refuse rather than wait uninterruptibly.
      return SendError(late, unique, EDEADLK);
    }
    c.interrupted = &slot->interrupted;
    Status s = fs_->SetLk(c, node, lock, /*sleep=*/true);
    InterruptTable::End(slot);
    if (!s.ok()) return SendError(late, unique, s.error().value());
    Reply r(unique);
    Send(late, r);
  });
}

Dispatcher::LockAnswer Dispatcher::TryLock(const RequestContext& ctx, uint64_t node,
                                           const LockRequest& lock, bool getlk) {
  LockAnswer a;
  if (getlk) {
    Result<LockRequest> holder = fs_->GetLk(ctx, node, lock);
    if (!holder.ok()) {
      a.error = holder.error().value();
    } else {
      a.holder = *holder;
      a.conflict = holder->type != F_UNLCK;
    }
  } else {
    Status s = fs_->SetLk(ctx, node, lock, /*sleep=*/false);
    if (!s.ok()) a.error = s.error().value();
    a.conflict = a.error == EAGAIN;
  }
  return a;
}

void Dispatcher::SendLockAnswer(ReplySender& sender, uint64_t unique, const LockAnswer& a,
                                bool getlk) {
  if (a.error != 0) return SendError(sender, unique, a.error);
  Reply r(unique);
  if (getlk) r.AddStruct(abi::LkOut{{a.holder.start, a.holder.end, a.holder.type, a.holder.pid}});
  Send(sender, r);
}

void Dispatcher::DispatchLock(const Request& req, const RequestContext& ctx,
                              ReplySender& sender) {
  const uint64_t unique = req.header.unique;
  const uint64_t node = req.header.nodeid;
  const bool getlk = req.opcode() == Opcode::kGetlk;
  const LockRequest lock = ToLock(req.Arg<abi::LkIn>());
  LockAnswer a = TryLock(ctx, node, lock, getlk);
  if (a.conflict) {
    // The holder may be a file closed just before, whose RELEASE is still
    // on its way (core/release_order.h), possibly behind this request in
    // this worker's own queue: then wait on another thread, so this worker
    // goes on and handles it.
    auto again = [this, node, lock, getlk](const RequestContext& c) {
      LockAnswer b = TryLock(c, node, lock, getlk);
      if (!b.conflict && b.error == 0) stats_.lock_conflicts_resolved.fetch_add(1, std::memory_order_relaxed);
      return b;
    };
    if (release_order_.Pending(unique)) {
      if (AnswerOnOwnThread(ctx, sender, [this, unique, getlk, again](RequestContext& c,
                                                                      ReplySender& late) {
            release_order_.WaitForEarlierReleases(unique, kReleaseWaitLimit);
            SendLockAnswer(late, unique, again(c), getlk);
          })) {
        return;
      }
      // No late replies (the sync transport): each worker holds one
      // request, so the RELEASE is with another one.
      release_order_.WaitForEarlierReleases(unique, kReleaseWaitLimit);
    }
    // Asked again in any case: the RELEASE may have ended since.
    a = again(ctx);
  }
  SendLockAnswer(sender, unique, a, getlk);
}

void Dispatcher::Send(ReplySender& sender, Reply& reply) {
  if (reply.error() != 0) stats_.errors.fetch_add(1, std::memory_order_relaxed);
  int err = sender.Send(reply);
  if (err != 0 && err != ENOENT) Log(LogLevel::kDebug, "reply to %d failed: errno %d", reply.unique(), err);
}

void Dispatcher::SendError(ReplySender& sender, uint64_t unique, int err) {
  if (err == kAnsweredLater.value()) {
    if (sender.AnsweredLater()) return;  // the Later answers
    // A backend said it answers later but took no Later: nothing would.
    uint64_t suppressed = 0;
    if (later_mismatch_log_.Allow(&suppressed)) {
      Log(LogLevel::kError, "request %u: the file system returned kAnsweredLater without taking a Later; answered EIO",
          unique);
    }
    err = EIO;
  }
  Reply r = Reply::Error(unique, err);
  Send(sender, r);
}

void Dispatcher::SendStatus(ReplySender& sender, uint64_t unique, const Status& s) {
  if (!s.ok()) return SendError(sender, unique, s.error().value());
  Reply r(unique);
  Send(sender, r);
}

void Dispatcher::SendEntry(ReplySender& sender, uint64_t unique, uint64_t node, Result<Entry> e) {
  if (!e.ok()) return SendError(sender, unique, e.error().value());
  if (offload_ != nullptr) offload_->AdjustEntry(node, &*e);
  Reply r(unique);
  r.AddStruct(ToWireEntry(*e), proto::EntryOutSize(conn_.minor));
  Send(sender, r);
}

double Dispatcher::AttrTimeout(uint64_t node, const AttrReply& a) const {
  double attr_timeout = a.attr_timeout;
  if (offload_ != nullptr) offload_->AdjustAttr(node, a.attr_volatile, &attr_timeout);
  return attr_timeout;
}

void Dispatcher::SendAttr(ReplySender& sender, uint64_t unique, uint64_t node, const Result<AttrReply>& a) {
  if (!a.ok()) return SendError(sender, unique, a.error().value());
  abi::AttrOut out{};
  SplitTimeout(AttrTimeout(node, *a), &out.attr_valid, &out.attr_valid_nsec);
  out.attr = ToWireAttr(a->attr);
  Reply r(unique);
  r.AddStruct(out, proto::AttrOutSize(conn_.minor));
  Send(sender, r);
}

void Dispatcher::SendStatx(ReplySender& sender, uint64_t unique, uint64_t node, const Result<AttrReply>& a) {
  if (!a.ok()) return SendError(sender, unique, a.error().value());
  abi::StatxOut out{};
  SplitTimeout(AttrTimeout(node, *a), &out.attr_valid, &out.attr_valid_nsec);
  out.stat = ToWireStatx(a->attr);
  Reply r(unique);
  r.AddStruct(out);
  Send(sender, r);
}

void Dispatcher::SendOpen(ReplySender& sender, uint64_t unique, uint64_t node, Result<OpenReply> o) {
  if (!o.ok()) return SendError(sender, unique, o.error().value());
  if (offload_ != nullptr) offload_->AdjustOpen(node, &*o);
  Reply r(unique);
  r.AddStruct(abi::OpenOut{o->fh, o->open_flags, o->backing_id});
  Send(sender, r);
}

void Dispatcher::SendCreate(ReplySender& sender, uint64_t unique, uint64_t node, Result<CreateReply> c) {
  if (!c.ok()) return SendError(sender, unique, c.error().value());
  if (offload_ != nullptr) offload_->AdjustEntry(node, &c->entry);
  Reply r(unique);
  r.AddStruct(ToWireEntry(c->entry), proto::EntryOutSize(conn_.minor));
  r.AddStruct(abi::OpenOut{c->open.fh, c->open.open_flags, c->open.backing_id});
  Send(sender, r);
}

void Dispatcher::SendXattr(ReplySender& sender, uint64_t unique, const Result<std::string>& v, uint32_t size) {
  if (!v.ok()) return SendError(sender, unique, v.error().value());
  Reply r(unique);
  if (size == 0) {
    r.AddStruct(abi::GetxattrOut{static_cast<uint32_t>(v->size()), 0});
  } else if (v->size() > size) {
    return SendError(sender, unique, ERANGE);
  } else {
    r.AddPayload(*v);
  }
  Send(sender, r);
}

void Dispatcher::SendStatfs(ReplySender& sender, uint64_t unique, const Result<FsStats>& s) {
  if (!s.ok()) return SendError(sender, unique, s.error().value());
  abi::StatfsOut out{};
  out.st = {s->blocks, s->bfree, s->bavail, s->files, s->ffree, s->bsize, s->namelen, s->frsize, 0, {}};
  Reply r(unique);
  r.AddStruct(out);
  Send(sender, r);
}

// ---------------------------------------------------------------------------
// Answers given later (efuse::Later).

bool Dispatcher::CanAnswerLater(Opcode op) {
  switch (op) {
    case Opcode::kLookup: case Opcode::kMknod: case Opcode::kMkdir: case Opcode::kSymlink: case Opcode::kLink:
    case Opcode::kGetattr: case Opcode::kStatx: case Opcode::kSetattr:
    case Opcode::kOpen: case Opcode::kOpendir: case Opcode::kCreate: case Opcode::kTmpfile:
    case Opcode::kRead: case Opcode::kReadlink: case Opcode::kGetxattr: case Opcode::kListxattr:
    case Opcode::kWrite: case Opcode::kLseek: case Opcode::kCopyFileRange: case Opcode::kCopyFileRange64:
    case Opcode::kStatfs:
    case Opcode::kUnlink: case Opcode::kRmdir: case Opcode::kRename: case Opcode::kRename2:
    case Opcode::kSetxattr: case Opcode::kRemovexattr: case Opcode::kFsync: case Opcode::kFsyncdir:
    case Opcode::kFlush: case Opcode::kFallocate: case Opcode::kAccess: case Opcode::kSyncfs:
      return true;
    default:
      return false;
  }
}

void Dispatcher::SendLater(ReplySender& sender, const LaterReply& info, LaterValue value) {
  const uint64_t unique = info.unique;
  if (const Errno* e = std::get_if<Errno>(&value)) return SendError(sender, unique, e->value());
  auto as_size = [&]() -> const size_t* { return std::get_if<size_t>(&value); };
  auto as_bytes = [&]() -> const std::string* { return std::get_if<std::string>(&value); };
  switch (info.op) {
    case Opcode::kLookup: case Opcode::kMknod: case Opcode::kMkdir: case Opcode::kSymlink: case Opcode::kLink:
      if (Entry* e = std::get_if<Entry>(&value)) return SendEntry(sender, unique, info.node, std::move(*e));
      break;
    case Opcode::kGetattr: case Opcode::kSetattr:
      if (const AttrReply* a = std::get_if<AttrReply>(&value)) return SendAttr(sender, unique, info.node, *a);
      break;
    case Opcode::kStatx:
      if (const AttrReply* a = std::get_if<AttrReply>(&value)) return SendStatx(sender, unique, info.node, *a);
      break;
    case Opcode::kOpen: case Opcode::kOpendir:
      if (const OpenReply* o = std::get_if<OpenReply>(&value)) return SendOpen(sender, unique, info.node, *o);
      break;
    case Opcode::kCreate: case Opcode::kTmpfile:
      if (const CreateReply* c = std::get_if<CreateReply>(&value)) return SendCreate(sender, unique, info.node, *c);
      break;
    case Opcode::kRead: case Opcode::kReadlink:
      if (const std::string* b = as_bytes()) {
        Reply r(unique);
        // READ: never more than the kernel asked for.
        r.AddPayload(info.op == Opcode::kRead ? std::string_view(*b).substr(0, info.size) : std::string_view(*b));
        return Send(sender, r);
      }
      break;
    case Opcode::kGetxattr: case Opcode::kListxattr:
      if (const std::string* b = as_bytes()) return SendXattr(sender, unique, *b, info.size);
      break;
    case Opcode::kWrite: case Opcode::kCopyFileRange:
      if (const size_t* n = as_size()) {
        Reply r(unique);
        r.AddStruct(abi::WriteOut{static_cast<uint32_t>(std::min<size_t>(*n, UINT32_MAX)), 0});
        return Send(sender, r);
      }
      break;
    case Opcode::kCopyFileRange64:
      if (const size_t* n = as_size()) {
        Reply r(unique);
        r.AddStruct(abi::CopyFileRangeOut{*n});
        return Send(sender, r);
      }
      break;
    case Opcode::kLseek:
      if (const size_t* n = as_size()) {
        Reply r(unique);
        r.AddStruct(abi::LseekOut{*n});
        return Send(sender, r);
      }
      break;
    case Opcode::kStatfs:
      if (const FsStats* st = std::get_if<FsStats>(&value)) return SendStatfs(sender, unique, *st);
      break;
    default:
      if (std::holds_alternative<Ok>(value)) return SendStatus(sender, unique, OkStatus());
      break;
  }
  uint64_t suppressed = 0;
  if (later_mismatch_log_.Allow(&suppressed)) {
    Log(LogLevel::kError, "request %u (%s): answered later with the wrong kind of answer; answered EIO", unique,
        proto::OpcodeName(static_cast<uint32_t>(info.op)));
  }
  SendError(sender, unique, EIO);
}

// The reply a Later gives: through a detached sender, counted as an answer
// from its own thread (StopAsync waits for it).
class Dispatcher::PendingLater final : public LaterAnswer {
 public:
  // `slot`: an interrupt slot of its own (INTERRUPT finds the request there
  // once its call has returned), or null if all were taken.
  PendingLater(Dispatcher* d, LaterReply info, InterruptTable::Slot* slot)
      : d_(d), info_(info), slot_(slot) {}
  ~PendingLater() override {
    if (late_ != nullptr) Give(Errno(EIO));
    if (slot_ != nullptr) InterruptTable::End(slot_);
  }
  // Counted from here until the answer is sent (StopAsync, Retire wait).
  void Start(std::unique_ptr<ReplySender> late) {
    late_ = std::move(late);
    d_->async_ops_.fetch_add(1, std::memory_order_acq_rel);
    d_->in_flight_.fetch_add(1, std::memory_order_acq_rel);
  }
  void Give(LaterValue value) override {
    std::unique_ptr<ReplySender> late = std::move(late_);
    if (late == nullptr) return;
    absl::Cleanup counted = [this] {
      d_->in_flight_.fetch_sub(1, std::memory_order_acq_rel);
      d_->async_ops_.fetch_sub(1, std::memory_order_acq_rel);
    };
    if (slot_ != nullptr) InterruptTable::End(std::exchange(slot_, nullptr));
    d_->SendLater(*late, info_, std::move(value));
  }
  bool Interrupted() const override {
    return slot_ != nullptr && slot_->interrupted.load(std::memory_order_acquire);
  }
  // An INTERRUPT that came during the call, before this slot was claimed,
  // flagged only the call's slot (later ones flag both).
  void CarryInterrupt(const std::atomic<bool>* call_flag) {
    if (slot_ != nullptr && call_flag != nullptr && call_flag->load(std::memory_order_acquire)) {
      slot_->interrupted.store(true, std::memory_order_release);
    }
  }

 private:
  Dispatcher* const d_;
  std::unique_ptr<ReplySender> late_;
  const LaterReply info_;
  InterruptTable::Slot* slot_;
};

// During one call: what RequestContext::AnswerLater takes, and the sender
// the call's in-line reply goes through (dropped once a Later was taken).
class Dispatcher::LaterTaker final : public LaterSource, public ReplySender {
 public:
  // `call_interrupted`: the call's own interrupt flag (may be null).
  LaterTaker(Dispatcher* d, ReplySender* out, LaterReply info, const std::atomic<bool>* call_interrupted)
      : d_(d), out_(out), info_(info), call_interrupted_(call_interrupted) {}
  std::unique_ptr<LaterAnswer> Take() override {
    if (taken_) return nullptr;
    // (Made before the sender is detached: nothing can fail after.)
    auto pending = std::make_unique<PendingLater>(d_, info_, d_->interrupts_.Claim(info_.unique));
    pending->CarryInterrupt(call_interrupted_);
    std::unique_ptr<ReplySender> late = out_->Detach();
    if (late == nullptr) return nullptr;
    taken_ = true;
    pending->Start(std::move(late));
    return pending;
  }
  // The call's own answer (kAnsweredLater, or whatever it returned) once a
  // Later was taken: the Later answers.
  int Send(proto::Reply& reply) override { return taken_ ? 0 : out_->Send(reply); }
  std::unique_ptr<ReplySender> Detach() override { return taken_ ? nullptr : out_->Detach(); }
  bool AnsweredLater() const override { return taken_; }

 private:
  Dispatcher* const d_;
  ReplySender* const out_;
  const LaterReply info_;
  const std::atomic<bool>* const call_interrupted_;
  bool taken_ = false;
};

// Records each answer in the state region before it is sent.
class Dispatcher::JournalingSender final : public ReplySender {
 public:
  // `amend`: for a request resent after its intent was recorded, the answer
  // to give instead of an error its first run may have caused (or none).
  using Amend = std::function<std::optional<Reply>(int err)>;
  // Test faults: die before the answer is recorded, or after, unsent.
  enum class Crash { kNo, kBeforeAnswer, kBeforeReply };
  JournalingSender(ReplySender* out, StateRegion* region, uint64_t unique, Crash crash, Amend amend = nullptr)
      : out_(out), region_(region), unique_(unique), crash_(crash), amend_(std::move(amend)) {}
  int Send(proto::Reply& reply) override {
    if (amend_ && reply.error() < 0) {
      if (std::optional<Reply> better = amend_(-reply.error())) return Send(*better);
    }
    if (crash_ == Crash::kBeforeAnswer) {
      Log(LogLevel::kWarning, "test fault crash_before_answer: unique %u carried out, dying before its answer is "
          "recorded", unique_);
      raise(SIGKILL);
    }
    region_->RecordAnswer(unique_, reply.Iov());
    if (crash_ == Crash::kBeforeReply) {
      Log(LogLevel::kWarning, "test fault crash_before_reply: answer to unique %u recorded, dying unsent",
          unique_);
      raise(SIGKILL);
    }
    return out_->Send(reply);
  }
  std::unique_ptr<ReplySender> Detach() override {
    // A resent request whose first run may have taken effect is answered in
    // line: its answer may need amending (AfterIntent), which a late one
    // would lose.
    if (amend_) return nullptr;
    // Owned by the journaling sender it returns.
    std::unique_ptr<ReplySender> late = out_->Detach();
    if (late == nullptr) return nullptr;
    class Owning final : public ReplySender {
     public:
      Owning(std::unique_ptr<ReplySender> out, StateRegion* region, uint64_t unique)
          : out_(std::move(out)), journal_(out_.get(), region, unique, Crash::kNo) {}
      int Send(proto::Reply& reply) override { return journal_.Send(reply); }

     private:
      std::unique_ptr<ReplySender> out_;
      JournalingSender journal_;
    };
    return std::make_unique<Owning>(std::move(late), region_, unique_);
  }

 private:
  ReplySender* out_;
  StateRegion* region_;
  uint64_t unique_;
  Crash crash_;
  Amend amend_;
};

std::optional<Reply> Dispatcher::AfterIntent(const Request& req, const RequestContext& ctx, int err) {
  const uint64_t unique = req.header.unique;
  switch (req.opcode()) {
    // The name is gone: the first run removed (or moved) it.
    case Opcode::kUnlink:
    case Opcode::kRmdir:
    case Opcode::kRename:
    case Opcode::kRename2:
      if (err != ENOENT) return std::nullopt;
      return Reply(unique);
    // The name is there: the first run made it; its entry is the answer.
    case Opcode::kMkdir:
    case Opcode::kMknod:
    case Opcode::kSymlink:
    case Opcode::kLink: {
      if (err != EEXIST) return std::nullopt;
      Result<Entry> e = fs_->Lookup(ctx, req.header.nodeid, req.name);
      if (!e.ok()) return std::nullopt;
      Reply r(unique);
      r.AddStruct(ToWireEntry(*e), proto::EntryOutSize(conn_.minor));
      return r;
    }
    // O_EXCL found the file the first run created: it is opened now.
    case Opcode::kCreate: {
      if (err != EEXIST) return std::nullopt;
      auto in = req.Arg<abi::CreateIn>();
      Result<CreateReply> c = fs_->Create(ctx, req.header.nodeid, req.name, in.mode, in.umask,
                                          in.flags & ~static_cast<uint32_t>(O_EXCL | O_TRUNC), in.open_flags);
      if (!c.ok()) return std::nullopt;
      Reply r(unique);
      r.AddStruct(ToWireEntry(c->entry), proto::EntryOutSize(conn_.minor));
      r.AddStruct(abi::OpenOut{c->open.fh, c->open.open_flags, c->open.backing_id});
      return r;
    }
    default:
      return std::nullopt;
  }
}

bool Dispatcher::NotIdempotent(Opcode op) {
  switch (op) {
    case Opcode::kCreate:
    case Opcode::kMknod:
    case Opcode::kMkdir:
    case Opcode::kSymlink:
    case Opcode::kLink:
    case Opcode::kUnlink:
    case Opcode::kRmdir:
    case Opcode::kRename:
    case Opcode::kRename2:
    case Opcode::kTmpfile:
    case Opcode::kSetattr:
    case Opcode::kSetxattr:
    case Opcode::kRemovexattr:
    case Opcode::kWrite:
    case Opcode::kFallocate:
    case Opcode::kCopyFileRange:
    case Opcode::kCopyFileRange64:
    // A second open would leave the first handle behind.
    case Opcode::kOpen:
    case Opcode::kOpendir:
      return true;
    default:
      return false;
  }
}

void Dispatcher::DropListingsOfResent(const Request& req) {
  if (kernel_ == nullptr) return;
  uint64_t dirs[2] = {req.header.nodeid, 0};
  switch (req.opcode()) {
    case Opcode::kCreate: case Opcode::kMknod: case Opcode::kMkdir: case Opcode::kSymlink:
    case Opcode::kLink: case Opcode::kUnlink: case Opcode::kRmdir:
      break;
    case Opcode::kRename:
      dirs[1] = req.Arg<abi::RenameIn>().newdir;
      break;
    case Opcode::kRename2:
      dirs[1] = req.Arg<abi::Rename2In>().newdir;
      break;
    default:
      return;
  }
  if (dirs[1] == dirs[0]) dirs[1] = 0;  // a rename within one directory
  // FUSE_NOTIFY_INVAL_INODE takes no directory lock (fs/fuse/inode.c), so
  // it is safe while this request holds its directories': sent now, before
  // the answer, a listing begun before the change is found incomplete and
  // read again (the race PassthroughFs::NamespaceChanged describes).
  for (uint64_t d : dirs) {
    if (d != 0 && kernel_->InvalidateData(d).ok()) stats_.resent_listing_drops.fetch_add(1, std::memory_order_relaxed);
  }
}

void Dispatcher::ReplayAnswer(const Request& req, const std::string& recorded, ReplySender& sender) {
  abi::OutHeader head{};
  if (recorded.size() < sizeof(head)) return SendError(sender, req.header.unique, EIO);
  std::memcpy(&head, recorded.data(), sizeof(head));
  answers_->header().answers_replayed.fetch_add(1);
  if (head.error != 0) return SendError(sender, req.header.unique, -head.error);
  Reply r(req.header.unique);  // with the resend bit, as the kernel asks
  const std::string_view payload = std::string_view(recorded).substr(sizeof(head));
  if (!payload.empty()) r.AddPayload(payload);
  Send(sender, r);
}

void Dispatcher::Handle(std::span<const uint8_t> request, std::span<uint8_t> scratch,
                        InterruptTable::Slot* slot, ReplySender& sender, AsyncIo* io) {
  const size_t length = request.size();
  Request req;
  proto::DecodeError derr = proto::DecodeRequest(request, decode_options_, &req);
  if (!derr.ok()) {
    if (derr.header_valid) release_order_.Received(req.header.unique, false);
    stats_.bad_requests.fetch_add(1, std::memory_order_relaxed);
    uint64_t suppressed = 0;
    if (bad_request_log_.Allow(&suppressed)) {
      Log(LogLevel::kWarning,
          "malformed request (opcode %u %s, unique %u, %u bytes): %s; answered errno %d%s",
          derr.header_valid ? req.header.opcode : 0,
          derr.header_valid ? proto::OpcodeName(req.header.opcode) : "?",
          derr.header_valid ? req.header.unique : 0, length, derr.reason, derr.error,
          suppressed ? absl::StrFormat(" (%u similar lines suppressed)", suppressed) : "");
    }
    const bool no_reply = req.traits != nullptr && req.traits->no_reply;
    if (derr.header_valid && !no_reply) SendError(sender, req.header.unique, derr.error);
    return;
  }
  const uint32_t op = req.header.opcode;
  if (op <= abi::kMaxOpcode) stats_.requests[op].fetch_add(1, std::memory_order_relaxed);
  const bool is_release = req.opcode() == Opcode::kRelease || req.opcode() == Opcode::kReleasedir;
  const int release_token = release_order_.Received(req.header.unique, is_release);
  absl::Cleanup release_done = [&] {
    if (is_release) release_order_.ReleaseDone(release_token);
  };

  if (req.opcode() == Opcode::kInit) return HandleInit(req, sender);
  if (!initialized()) return SendError(sender, req.header.unique, EIO);
  // Counted before the retire check (both sequentially consistent), so a
  // retiring server that sees none in flight sees every request that will
  // be carried out.
  in_flight_.fetch_add(1);
  absl::Cleanup handled = [this] { in_flight_.fetch_sub(1); };
  if (retiring_.load() && !(req.traits != nullptr && req.traits->no_reply) &&
      req.opcode() != Opcode::kInterrupt) {
    return HoldUnanswered(sender);  // the successor's, once resent
  }
  if (req.opcode() == Opcode::kInterrupt) {
    uint64_t target = req.Arg<abi::InterruptIn>().unique;
    if (interrupts_.Interrupt(target)) {
      stats_.interrupts.fetch_add(1, std::memory_order_relaxed);
      return;  // INTERRUPT itself gets no reply when it found its target
    }
    // Not (yet) in flight: EAGAIN makes the kernel queue it again.
    return SendError(sender, req.header.unique, EAGAIN);
  }

  // (Under a supervisor, by the first server only: its successor answers.)
  if (no_reply_lookup_ && req.opcode() == Opcode::kLookup && req.name == *no_reply_lookup_ &&
      (answers_ == nullptr || answers_->header().generation.load() == 1)) {
    Log(LogLevel::kWarning, "test fault no_reply_lookup: LOOKUP '%s' (unique %u) left unanswered",
        std::string(req.name), req.header.unique);
    HoldUnanswered(sender);
    return;
  }

  RequestContext ctx;
  ctx.unique = req.header.unique;
  ctx.uid = req.header.uid;
  ctx.gid = req.header.gid;
  ctx.pid = req.header.pid;
  ctx.groups = req.groups;

  std::optional<JournalingSender> journaling;
  ReplySender* out = &sender;
  if (answers_ != nullptr) {
    const uint64_t first_unique = req.header.unique & ~abi::kUniqueResend;
    if ((req.header.unique & abi::kUniqueResend) != 0) {
      DropListingsOfResent(req);
      // Its server died before the kernel had the answer: if that answer
      // was recorded, the request was carried out; it is not done again.
      if (std::string recorded = answers_->FindAnswer(first_unique); !recorded.empty()) {
        return ReplayAnswer(req, recorded, sender);
      }
    }
    if (NotIdempotent(req.opcode())) {
      // (The first server only: its successor must answer.)
      const bool first = answers_->header().generation.load() == 1;
      const JournalingSender::Crash crash =
          !first                                                                         ? JournalingSender::Crash::kNo
          : crash_before_reply_ && *crash_before_reply_ == proto::OpcodeName(op)   ? JournalingSender::Crash::kBeforeReply
          : crash_before_answer_ && *crash_before_answer_ == proto::OpcodeName(op) ? JournalingSender::Crash::kBeforeAnswer
                                                                                   : JournalingSender::Crash::kNo;
      JournalingSender::Amend amend;
      if ((req.header.unique & abi::kUniqueResend) != 0 && answers_->HasIntent(first_unique)) {
        // Its server died while carrying it out: it may have taken effect.
        amend = [this, &req, &ctx](int err) {
          std::optional<Reply> r = AfterIntent(req, ctx, err);
          if (r) answers_->header().answers_replayed.fetch_add(1);
          return r;
        };
      } else {
        answers_->RecordIntent(first_unique);
      }
      journaling.emplace(&sender, answers_, first_unique, crash, std::move(amend));
      out = &*journaling;
    }
  }

  if (slot != nullptr) {
    InterruptTable::Begin(slot, req.header.unique);
    ctx.interrupted = &slot->interrupted;
  }
  if (CanAnswerLater(req.opcode())) {
    LaterReply info;
    info.unique = req.header.unique;
    info.node = req.header.nodeid;
    info.op = req.opcode();
    if (info.op == Opcode::kRead) info.size = req.Arg<abi::ReadIn>().size;
    if (info.op == Opcode::kGetxattr || info.op == Opcode::kListxattr) info.size = req.Arg<abi::GetxattrIn>().size;
    LaterTaker taker(this, out, info, ctx.interrupted);
    ctx.later_source_ = &taker;
    Dispatch(req, scratch, ctx, taker, io);
  } else {
    Dispatch(req, scratch, ctx, *out, io);
  }
  if (slot != nullptr) InterruptTable::End(slot);
}

void Dispatcher::HoldUnanswered(ReplySender& sender) {
  // Held like an answer that never comes back from a stuck backend (a
  // ring entry must not be committed, which returning would do).
  if (std::unique_ptr<ReplySender> held = sender.Detach()) {
    std::lock_guard<std::mutex> lock(unanswered_mu_);
    unanswered_.push_back(std::move(held));
  }
}

void Dispatcher::HandleInit(const Request& req, ReplySender& sender) {
  if (initialized()) return SendError(sender, req.header.unique, EPROTO);
  abi::InitIn in = req.Arg<abi::InitIn>();
  proto::InitResult r = proto::NegotiateInit(in, req.fixed_size, init_config_);
  if (r.error != 0) {
    Log(LogLevel::kError, "INIT: kernel protocol %u.%u is not supported (need 7.%u or newer)",
        in.major, in.minor, abi::kMinSupportedMinor);
    return SendError(sender, req.header.unique, r.error);
  }
  Reply reply(req.header.unique);
  reply.AddStruct(r.out, r.out_size);
  if (!r.major_retry) {
    Adopt(r.conn);
    Log(LogLevel::kInfo, "INIT: protocol 7.%u, flags 0x%x, max_write %u, max_pages %u",
        conn_.minor, conn_.flags, conn_.max_write, conn_.max_pages);
  }
  Send(sender, reply);
}

void Dispatcher::Adopt(const proto::Connection& conn) {
  conn_ = conn;
  decode_options_.minor = conn_.minor;
  decode_options_.setxattr_ext = conn_.Has(abi::init::kSetxattrExt);
  fs_->Init(InitInfo{conn_.flags, conn_.minor, conn_.max_write, kernel_});
  initialized_.store(true, std::memory_order_release);
}

bool Dispatcher::TryAsyncIo(const RequestContext& ctx, const Request& req, uint64_t fh,
                            uint32_t write_flags, ReplySender& sender,
                            const std::function<void(int fd, AsyncIo::Done)>& submit,
                            std::function<void(ReplySender&, int64_t)> answer) {
  Result<FileSystem::AsyncFileRef> file = fs_->AsyncFile(ctx, req.header.nodeid, fh, write_flags);
  if (!file.ok()) {
    SendError(sender, req.header.unique, file.error().value());
    return true;
  }
  if (file->fd < 0) return false;
  std::shared_ptr<ReplySender> late(sender.Detach());
  if (late == nullptr) return false;
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  submit(file->fd, [this, late, keep = file->keep, answer = std::move(answer)](int64_t result) {
    answer(*late, result);
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  });
  return true;
}

void Dispatcher::NoteChange(const Request& req) {
  const uint64_t node = req.header.nodeid;
  switch (req.opcode()) {
    // The inode's data or attributes.
    case Opcode::kSetattr:
    case Opcode::kWrite:
    case Opcode::kSetxattr:
    case Opcode::kRemovexattr:
    case Opcode::kFallocate:
    // A directory's entries (and its mtime).
    case Opcode::kMknod:
    case Opcode::kMkdir:
    case Opcode::kSymlink:
    case Opcode::kCreate:
    case Opcode::kTmpfile:
    case Opcode::kUnlink:
    case Opcode::kRmdir:
      offload_->Changed(node);
      return;
    case Opcode::kLink:
      offload_->Changed(node);
      offload_->Changed(req.Arg<abi::LinkIn>().oldnodeid);  // its nlink
      return;
    case Opcode::kRename:
      offload_->Changed(node);
      offload_->Changed(req.Arg<abi::RenameIn>().newdir);
      return;
    case Opcode::kRename2:
      offload_->Changed(node);
      offload_->Changed(req.Arg<abi::Rename2In>().newdir);
      return;
    case Opcode::kCopyFileRange:
    case Opcode::kCopyFileRange64:
      offload_->Changed(req.Arg<abi::CopyFileRangeIn>().nodeid_out);
      return;
    default:
      return;
  }
}

void Dispatcher::Dispatch(const Request& req, std::span<uint8_t> scratch,
                          const RequestContext& ctx, ReplySender& sender, AsyncIo* io) {
  const uint64_t unique = req.header.unique;
  const uint64_t node = req.header.nodeid;

  auto reply_status = [&](const Status& s) { SendStatus(sender, unique, s); };
  auto reply_entry = [&](Result<Entry> e) { SendEntry(sender, unique, node, std::move(e)); };
  auto reply_attr = [&](const Result<AttrReply>& a) { SendAttr(sender, unique, node, a); };
  auto reply_open = [&](Result<OpenReply> o) { SendOpen(sender, unique, node, std::move(o)); };
  auto reply_create = [&](Result<CreateReply> c) { SendCreate(sender, unique, node, std::move(c)); };
  auto reply_xattr = [&](const Result<std::string>& v, uint32_t size) { SendXattr(sender, unique, v, size); };
  auto reply_u32_size = [&](uint64_t n) {
    Reply r(unique);
    r.AddStruct(abi::WriteOut{static_cast<uint32_t>(n), 0});
    Send(sender, r);
  };

  if (offload_ != nullptr) NoteChange(req);
  switch (req.opcode()) {
    case Opcode::kLookup:
      return reply_entry(fs_->Lookup(ctx, node, req.name));
    case Opcode::kForget:
      fs_->Forget(node, req.Arg<abi::ForgetIn>().nlookup);
      return;
    case Opcode::kBatchForget:
      for (const abi::ForgetOne& f : req.forgets) fs_->Forget(f.nodeid, f.nlookup);
      return;
    case Opcode::kGetattr: {
      auto in = req.Arg<abi::GetattrIn>();
      const bool has_fh = (in.getattr_flags & abi::kGetattrFh) != 0;
      return reply_attr(fs_->GetAttr(ctx, node, has_fh ? &in.fh : nullptr));
    }
    case Opcode::kStatx: {
      auto in = req.Arg<abi::StatxIn>();
      const bool has_fh = (in.getattr_flags & abi::kGetattrFh) != 0;
      return SendStatx(sender, unique, node, fs_->GetAttr(ctx, node, has_fh ? &in.fh : nullptr));
    }
    case Opcode::kSetattr: {
      auto in = req.Arg<abi::SetattrIn>();
      SetAttrRequest s;
      s.valid = in.valid;
      s.fh = in.fh;
      s.mode = in.mode;
      s.uid = in.uid;
      s.gid = in.gid;
      s.size = in.size;
      s.atime = Ts(in.atime, in.atimensec);
      s.mtime = Ts(in.mtime, in.mtimensec);
      s.ctime = Ts(in.ctime, in.ctimensec);
      s.lock_owner = in.lock_owner;
      return reply_attr(fs_->SetAttr(ctx, node, s));
    }
    case Opcode::kReadlink: {
      Result<std::string> t = fs_->ReadLink(ctx, node);
      if (!t.ok()) return SendError(sender, unique, t.error().value());
      Reply r(unique);
      r.AddPayload(*t);
      return Send(sender, r);
    }
    case Opcode::kSymlink:
      return reply_entry(fs_->Symlink(ctx, node, req.name, req.name2));
    case Opcode::kMknod: {
      auto in = req.Arg<abi::MknodIn>();
      return reply_entry(fs_->Mknod(ctx, node, req.name, in.mode, in.rdev, in.umask));
    }
    case Opcode::kMkdir: {
      auto in = req.Arg<abi::MkdirIn>();
      return reply_entry(fs_->Mkdir(ctx, node, req.name, in.mode, in.umask));
    }
    case Opcode::kUnlink:
      return reply_status(fs_->Unlink(ctx, node, req.name));
    case Opcode::kRmdir:
      return reply_status(fs_->Rmdir(ctx, node, req.name));
    case Opcode::kRename:
      return reply_status(
          fs_->Rename(ctx, node, req.name, req.Arg<abi::RenameIn>().newdir, req.name2, 0));
    case Opcode::kRename2: {
      auto in = req.Arg<abi::Rename2In>();
      return reply_status(fs_->Rename(ctx, node, req.name, in.newdir, req.name2, in.flags));
    }
    case Opcode::kLink:
      return reply_entry(fs_->Link(ctx, req.Arg<abi::LinkIn>().oldnodeid, node, req.name));
    case Opcode::kOpen: {
      auto in = req.Arg<abi::OpenIn>();
      return reply_open(fs_->Open(ctx, node, in.flags, in.open_flags));
    }
    case Opcode::kRead: {
      auto in = req.Arg<abi::ReadIn>();
      Result<FileSystem::ReadView> view = fs_->ViewRead(ctx, node, in.fh, in.offset, in.size, in.flags);
      if (!view.ok()) return SendError(sender, unique, view.error().value());
      if (view->use) {
        // view->keep holds the bytes until Send returns: every transport
        // has written or copied them by then.
        Reply r(unique);
        r.AddPayload(view->data.first(std::min<size_t>(view->data.size(), in.size)));
        return Send(sender, r);
      }
      std::span<uint8_t> out = scratch.first(std::min<size_t>(in.size, scratch.size()));
      if (io != nullptr &&
          TryAsyncIo(ctx, req, in.fh, 0, sender,
                     [io, out, offset = in.offset](int fd, AsyncIo::Done done) {
                       io->Read(fd, out, offset, std::move(done));
                     },
                     [this, unique, out](ReplySender& late, int64_t n) {
                       if (n < 0) return SendError(late, unique, static_cast<int>(-n));
                       Reply r(unique);
                       r.AddPayload(out.first(std::min<size_t>(static_cast<size_t>(n), out.size())));
                       Send(late, r);
                     })) {
        return;
      }
      Result<size_t> n = fs_->Read(ctx, node, in.fh, in.offset, out, in.flags);
      if (!n.ok()) return SendError(sender, unique, n.error().value());
      Reply r(unique);
      r.AddPayload(out.first(std::min(*n, out.size())));
      return Send(sender, r);
    }
    case Opcode::kWrite: {
      auto in = req.Arg<abi::WriteIn>();
      // The request's data stays where the transport received it until the
      // (detached) reply is sent.
      if (io != nullptr &&
          TryAsyncIo(ctx, req, in.fh, in.write_flags, sender,
                     [io, data = req.data, offset = in.offset](int fd, AsyncIo::Done done) {
                       io->Write(fd, data, offset, std::move(done));
                     },
                     [this, unique](ReplySender& late, int64_t n) {
                       if (n < 0) return SendError(late, unique, static_cast<int>(-n));
                       Reply r(unique);
                       r.AddStruct(abi::WriteOut{static_cast<uint32_t>(n), 0});
                       Send(late, r);
                     })) {
        return;
      }
      Result<size_t> n =
          fs_->Write(ctx, node, in.fh, in.offset, req.data, in.write_flags, in.flags);
      if (!n.ok()) return SendError(sender, unique, n.error().value());
      return reply_u32_size(*n);
    }
    case Opcode::kStatfs:
      return SendStatfs(sender, unique, fs_->StatFs(ctx, node));
    case Opcode::kRelease: {
      auto in = req.Arg<abi::ReleaseIn>();
      fs_->Release(ctx, node, in.fh, in.flags, in.release_flags, in.lock_owner);
      return reply_status(OkStatus());
    }
    case Opcode::kFsync: {
      auto in = req.Arg<abi::FsyncIn>();
      if (io != nullptr &&
          TryAsyncIo(ctx, req, in.fh, 0, sender,
                     [io, datasync = (in.fsync_flags & abi::kFsyncFdatasync) != 0](
                         int fd, AsyncIo::Done done) { io->Fsync(fd, datasync, std::move(done)); },
                     [this, unique](ReplySender& late, int64_t n) {
                       if (n < 0) return SendError(late, unique, static_cast<int>(-n));
                       Reply r(unique);
                       Send(late, r);
                     })) {
        return;
      }
      return reply_status(
          fs_->Fsync(ctx, node, in.fh, (in.fsync_flags & abi::kFsyncFdatasync) != 0));
    }
    case Opcode::kSetxattr: {
      auto in = req.Arg<abi::SetxattrIn>();
      return reply_status(
          fs_->SetXattr(ctx, node, req.name, req.data, in.flags, in.setxattr_flags));
    }
    case Opcode::kGetxattr:
      return reply_xattr(fs_->GetXattr(ctx, node, req.name), req.Arg<abi::GetxattrIn>().size);
    case Opcode::kListxattr:
      return reply_xattr(fs_->ListXattr(ctx, node), req.Arg<abi::GetxattrIn>().size);
    case Opcode::kRemovexattr:
      return reply_status(fs_->RemoveXattr(ctx, node, req.name));
    case Opcode::kFlush: {
      auto in = req.Arg<abi::FlushIn>();
      return reply_status(fs_->Flush(ctx, node, in.fh, in.lock_owner));
    }
    case Opcode::kOpendir:
      return reply_open(fs_->OpenDir(ctx, node, req.Arg<abi::OpenIn>().flags));
    case Opcode::kReaddir:
    case Opcode::kReaddirplus: {
      auto in = req.Arg<abi::ReadIn>();
      WireDirSink sink(scratch.first(std::min<size_t>(in.size, scratch.size())),
                       req.opcode() == Opcode::kReaddirplus);
      Status s = fs_->ReadDir(ctx, node, in.fh, in.offset, sink);
      if (!s.ok()) return SendError(sender, unique, s.error().value());
      Reply r(unique);
      r.AddPayload(sink.bytes());
      return Send(sender, r);
    }
    case Opcode::kReleasedir:
      fs_->ReleaseDir(ctx, node, req.Arg<abi::ReleaseIn>().fh);
      return reply_status(OkStatus());
    case Opcode::kFsyncdir: {
      auto in = req.Arg<abi::FsyncIn>();
      return reply_status(
          fs_->FsyncDir(ctx, node, in.fh, (in.fsync_flags & abi::kFsyncFdatasync) != 0));
    }
    case Opcode::kGetlk:
      return DispatchLock(req, ctx, sender);
    case Opcode::kSetlkw:
      // A blocking lock may wait as long as another process holds it: it
      // waits on its own thread, so the worker (with the FUSE ring, every
      // request from its CPU) goes on, and the unlock can get through.
      if (DispatchBlockingLock(req, ctx, sender)) return;
      return reply_status(fs_->SetLk(ctx, node, ToLock(req.Arg<abi::LkIn>()), /*sleep=*/true));
    case Opcode::kSetlk:
      return DispatchLock(req, ctx, sender);
    case Opcode::kAccess:
      return reply_status(fs_->Access(ctx, node, req.Arg<abi::AccessIn>().mask));
    case Opcode::kCreate: {
      auto in = req.Arg<abi::CreateIn>();
      return reply_create(
          fs_->Create(ctx, node, req.name, in.mode, in.umask, in.flags, in.open_flags));
    }
    case Opcode::kTmpfile: {
      auto in = req.Arg<abi::CreateIn>();
      return reply_create(fs_->TmpFile(ctx, node, in.mode, in.umask, in.flags));
    }
    case Opcode::kDestroy:
      destroyed_.store(true, std::memory_order_release);
      fs_->Destroy();
      return reply_status(OkStatus());
    case Opcode::kFallocate: {
      auto in = req.Arg<abi::FallocateIn>();
      return reply_status(fs_->Fallocate(ctx, node, in.fh, in.offset, in.length, in.mode));
    }
    case Opcode::kLseek: {
      auto in = req.Arg<abi::LseekIn>();
      Result<uint64_t> off = fs_->Lseek(ctx, node, in.fh, in.offset, in.whence);
      if (!off.ok()) return SendError(sender, unique, off.error().value());
      Reply r(unique);
      r.AddStruct(abi::LseekOut{*off});
      return Send(sender, r);
    }
    case Opcode::kCopyFileRange:
    case Opcode::kCopyFileRange64: {
      auto in = req.Arg<abi::CopyFileRangeIn>();
      const bool wide = req.opcode() == Opcode::kCopyFileRange64;
      // The 32-bit reply cannot say more than UINT32_MAX; copy no more.
      uint64_t len = wide ? in.len : std::min<uint64_t>(in.len, UINT32_MAX & ~uint64_t{4095});
      Result<uint64_t> n = fs_->CopyFileRange(ctx, node, in.fh_in, in.off_in, in.nodeid_out,
                                              in.fh_out, in.off_out, len, in.flags);
      if (!n.ok()) return SendError(sender, unique, n.error().value());
      if (!wide) return reply_u32_size(*n);
      Reply r(unique);
      r.AddStruct(abi::CopyFileRangeOut{*n});
      return Send(sender, r);
    }
    case Opcode::kSyncfs:
      return reply_status(fs_->SyncFs(ctx));
    case Opcode::kNotifyReply: {
      // The data a RETRIEVE asked for (no reply expected).
      if (kernel_ == nullptr) return;
      const uint32_t size = req.Arg<abi::NotifyRetrieveIn>().size;
      const std::span<const uint8_t> data = req.data.first(std::min<size_t>(size, req.data.size()));
      kernel_->RetrieveAnswered(unique, std::string(data.begin(), data.end()));
      return;
    }
    case Opcode::kBmap:
    case Opcode::kIoctl:
    case Opcode::kPoll:
    case Opcode::kSetupmapping:
    case Opcode::kRemovemapping:
    case Opcode::kCuseInit:
    case Opcode::kInit:
    case Opcode::kInterrupt:
      return SendError(sender, unique, ENOSYS);
  }
  SendError(sender, unique, ENOSYS);
}

}  // namespace efuse
