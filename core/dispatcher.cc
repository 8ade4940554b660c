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
#include "core/dispatcher_parts.h"
#include "proto/dirent.h"

namespace efuse {

using abi::Opcode;
using proto::Reply;
using proto::Request;

namespace {


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
  std::optional<DyingSender> dying;  // (a test fault)
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
      // A new request: once enough answers followed a takeover, the
      // predecessor's intents that no resend came for go with the rotation
      // (StateRegion::HoldUnanswered).
      if ((req.header.unique & abi::kUniqueResend) == 0) answers_->ReleaseUnresent();
      // (The first server only: its successor must answer.)
      const bool first = answers_->header().generation.load() == 1;
      const JournalingSender::Crash crash =
          !first                                                                         ? JournalingSender::Crash::kNo
          : crash_before_reply_ && *crash_before_reply_ == proto::OpcodeName(op)   ? JournalingSender::Crash::kBeforeReply
          : crash_before_answer_ && *crash_before_answer_ == proto::OpcodeName(op) ? JournalingSender::Crash::kBeforeAnswer
                                                                                   : JournalingSender::Crash::kNo;
      JournalingSender::Amend amend;
      const bool cut_off = (req.header.unique & abi::kUniqueResend) != 0 && answers_->HasIntent(first_unique);
      if (cut_off) {
        // Its server died while carrying it out: it may have taken effect.
        amend = [this, &req, &ctx](int err) {
          std::optional<Reply> r = AfterIntent(req, ctx, err);
          if (r) answers_->header().answers_replayed.fetch_add(1);
          return r;
        };
      }
      journaling.emplace(&sender, answers_, first_unique, crash, std::move(amend),
                         crash == JournalingSender::Crash::kBeforeAnswer ? crash_before_answer_after_ : 0);
      if (!cut_off) answers_->RecordIntent(first_unique);
      out = &*journaling;
    } else if (crash_before_reply_ && *crash_before_reply_ == proto::OpcodeName(op) &&
               answers_->header().generation.load() == 1) {
      dying.emplace(&sender, first_unique);
      out = &*dying;
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
