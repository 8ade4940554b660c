// core/dispatcher.h — from one decoded request to one FileSystem call to one reply.
//
// Owns: the per-opcode glue: decoding (through proto/), INIT negotiation and
// the connection state it produces, the request context, interrupt slots,
// converting backend values to wire structs, and sending exactly one reply
// (none for FORGET/BATCH_FORGET/NOTIFY_REPLY). Malformed requests are
// answered with the decoder's errno and a rate-limited log line.
//
// Threading: Handle() is called concurrently from every worker. INIT must be
// handled (once) before any other request; the session guarantees that by
// serving INIT before it starts the workers.
#ifndef EFUSE_CORE_DISPATCHER_H_
#define EFUSE_CORE_DISPATCHER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <span>
#include <vector>

#include "core/async_io.h"
#include "core/filesystem.h"
#include "core/state_region.h"
#include "core/interrupts.h"
#include "core/later.h"
#include "core/log.h"
#include "core/offload.h"
#include "core/release_order.h"
#include "core/test_faults.h"
#include "proto/init.h"
#include "proto/reply.h"
#include "proto/request.h"

namespace efuse {

// Where replies go: the transport's write side.
class ReplySender {
 public:
  virtual ~ReplySender() = default;
  // Sends one reply; returns 0 or an errno (ENOENT: the kernel no longer
  // waits for this request, which is normal after an interrupt).
  virtual int Send(proto::Reply& reply) = 0;
  // For a request answered later, from another thread: a sender that stays
  // valid until the dispatcher's StopAsync() returns, usable once. After
  // Detach, this sender must not be used for the request. nullptr: this
  // transport cannot (the request is then answered in line).
  virtual std::unique_ptr<ReplySender> Detach() { return nullptr; }
  // True once the request's answer was promised to an efuse::Later: what
  // the call itself returns (kAnsweredLater) is not sent.
  virtual bool AnsweredLater() const { return false; }
};

struct DispatcherStats {
  std::array<std::atomic<uint64_t>, abi::kMaxOpcode + 1> requests{};
  std::atomic<uint64_t> errors{};       // replies with error != 0
  std::atomic<uint64_t> bad_requests{}; // failed to decode
  std::atomic<uint64_t> interrupts{};   // INTERRUPTs that found their request
  // Lock conflicts that an earlier RELEASE, handled late, resolved.
  std::atomic<uint64_t> lock_conflicts_resolved{};
  // Kept listings dropped before a resent change was answered.
  std::atomic<uint64_t> resent_listing_drops{};
};

class Dispatcher {
 public:
  // `kernel` (may be null in tests) is handed to the backend at INIT.
  Dispatcher(FileSystem* fs, const proto::InitConfig& init_config, size_t interrupt_slots,
             KernelConnection* kernel = nullptr);

  // Handles the request in buffer[0, length). After decoding, the whole
  // `buffer` is reused as scratch space for READ/READDIR data, so the reply
  // payload is written once, by the backend, where the transport sends from.
  // `slot` is this request's interrupt slot (the worker's).
  void Handle(std::span<uint8_t> buffer, size_t length, InterruptTable::Slot* slot,
              ReplySender& sender) {
    Handle(buffer.first(length), buffer, slot, sender);
  }
  // The same with the request and the reply scratch apart (transports whose
  // request and payload buffers differ, like the FUSE io_uring queues: READ
  // data is written into `scratch` and sent from there).
  // `io`: the worker's io_uring for backing-file I/O (READ/WRITE/FSYNC are
  // then answered from its completions when the backend offers an fd).
  void Handle(std::span<const uint8_t> request, std::span<uint8_t> scratch,
              InterruptTable::Slot* slot, ReplySender& sender, AsyncIo* io = nullptr);

  ~Dispatcher();
  // Interrupts requests still answered from their own threads (blocking
  // locks) and waits for their replies. Call after the transport stopped,
  // before it is destroyed.
  void StopAsync();

  bool initialized() const { return initialized_.load(std::memory_order_acquire); }
  // Takes over a connection whose INIT an earlier server answered (the
  // kernel sends none again): as if `conn` had just been negotiated.
  void Adopt(const proto::Connection& conn);
  bool destroyed() const { return destroyed_.load(std::memory_order_acquire); }
  const proto::Connection& connection() const { return conn_; }
  const DispatcherStats& stats() const { return stats_; }
  InterruptTable& interrupts() { return interrupts_; }
  FileSystem* filesystem() { return fs_; }
  // The policy that adjusts replies about hot inodes (core/offload.h), or
  // null. Set before the workers start; it must outlive them.
  void SetOffload(OffloadPolicy* offload) { offload_ = offload; }
  // Under a supervisor: the answer of every non-idempotent request is
  // recorded in `region` before it is sent, and a request the kernel
  // resends (FUSE_UNIQUE_RESEND) is answered from there if its answer was
  // recorded, instead of being carried out twice. Set before workers start.
  void SetAnswerJournal(StateRegion* region) { answers_ = region; }
  // A planned hand-over (efusectl restart, systemd's restart): requests
  // read from now on are left unanswered, for the successor to have resent
  // (FUSE_NOTIFY_RESEND); those already being carried out finish. FORGETs
  // and INTERRUPTs, which are never resent, are still handled.
  void Retire() { retiring_.store(true); }
  // Requests being carried out (from decode to reply, including answers
  // that come from io_uring completions or their own threads).
  int in_flight() const { return in_flight_.load(); }

 private:
  class JournalingSender;
  class DyingSender;
  // Whether a second execution of `op` could answer differently (or do
  // something twice) than the first.
  static bool NotIdempotent(abi::Opcode op);
  // The answer to a request resent after its intent was recorded, whose
  // second run failed with `err` only because the first took effect.
  std::optional<proto::Reply> AfterIntent(const proto::Request& req, const RequestContext& ctx, int err);
  // Before a resent request that changes directories is answered: drops
  // the listings the kernel keeps of them (as the file systems do for a
  // change they make). The last server may have made the change and died
  // before its own drop; a recorded answer is then replayed with none.
  void DropListingsOfResent(const proto::Request& req);
  // Answers `req` with the recorded message `recorded` (out header first).
  void ReplayAnswer(const proto::Request& req, const std::string& recorded, ReplySender& sender);
  StateRegion* answers_ = nullptr;
  // core/test_faults.h: the first server of a connection dies (SIGKILL)
  // right after recording its answer to this opcode, before sending it.
  const std::optional<std::string> crash_before_reply_ = TestFault("crash_before_reply");
  const std::optional<std::string> crash_before_answer_ = TestFault("crash_before_answer");
  const uint64_t crash_before_answer_after_ = std::stoull(TestFault("crash_before_answer_after").value_or("0"));
  // core/test_faults.h: LOOKUPs of this name get no answer.
  const std::optional<std::string> no_reply_lookup_ = TestFault("no_reply_lookup");
  std::mutex unanswered_mu_;
  std::vector<std::unique_ptr<ReplySender>> unanswered_;
  void HandleInit(const proto::Request& req, ReplySender& sender);
  void Dispatch(const proto::Request& req, std::span<uint8_t> scratch,
                const RequestContext& ctx, ReplySender& sender, AsyncIo* io);
  // READ/WRITE/FSYNC through `io` when the backend offers an fd for `fh`:
  // `submit` queues the operation, `answer` replies from its result. False:
  // the backend wants the synchronous call.
  bool TryAsyncIo(const RequestContext& ctx, const proto::Request& req, uint64_t fh,
                  uint32_t write_flags, ReplySender& sender,
                  const std::function<void(int fd, AsyncIo::Done)>& submit,
                  std::function<void(ReplySender&, int64_t)> answer);
  void Send(ReplySender& sender, proto::Reply& reply);
  // Tells the offload policy which inodes `req` changes.
  void NoteChange(const proto::Request& req);
  void SendError(ReplySender& sender, uint64_t unique, int err);
  // Replies, from a backend's answer (in line, or later from a Later).
  void SendEntry(ReplySender& sender, uint64_t unique, uint64_t node, Result<Entry> e);
  // How long the kernel may keep `a`: the backend's lifetime, as the
  // offload policy adjusts it for `node`.
  double AttrTimeout(uint64_t node, const AttrReply& a) const;
  void SendAttr(ReplySender& sender, uint64_t unique, uint64_t node, const Result<AttrReply>& a);
  void SendStatx(ReplySender& sender, uint64_t unique, uint64_t node, const Result<AttrReply>& a);
  void SendOpen(ReplySender& sender, uint64_t unique, uint64_t node, Result<OpenReply> o);
  void SendCreate(ReplySender& sender, uint64_t unique, uint64_t node, Result<CreateReply> c);
  // GETXATTR/LISTXATTR: size 0 asks for the length; too small is ERANGE.
  void SendXattr(ReplySender& sender, uint64_t unique, const Result<std::string>& v, uint32_t size);
  void SendStatfs(ReplySender& sender, uint64_t unique, const Result<FsStats>& s);
  void SendStatus(ReplySender& sender, uint64_t unique, const Status& s);

  // Answers given later (efuse::Later, core/later.h): what the reply to a
  // request needs once its call has returned.
  struct LaterReply {
    uint64_t unique = 0;
    uint64_t node = 0;
    abi::Opcode op{};
    uint32_t size = 0;  // READ, GETXATTR, LISTXATTR: what the kernel asked for
  };
  class LaterTaker;
  class PendingLater;
  static bool CanAnswerLater(abi::Opcode op);
  void SendLater(ReplySender& sender, const LaterReply& info, LaterValue value);
  RateLimiter later_mismatch_log_{5};
  // A GETLK or non-blocking SETLK, before it is sent: conflict is set when
  // another owner holds the range.
  struct LockAnswer {
    int error = 0;
    bool conflict = false;
    LockRequest holder;  // GETLK
  };
  LockAnswer TryLock(const RequestContext& ctx, uint64_t node, const LockRequest& lock,
                     bool getlk);
  void SendLockAnswer(ReplySender& sender, uint64_t unique, const LockAnswer& a, bool getlk);
  // GETLK and SETLK: a conflict is looked at again once the RELEASEs the
  // kernel sent before the request are handled.
  void DispatchLock(const proto::Request& req, const RequestContext& ctx, ReplySender& sender);
  // Runs `answer` on its own thread with a copy of `ctx` (no interrupt
  // flag) and a sender that outlives the request buffer; false if the
  // transport cannot (answer in line then).
  bool AnswerOnOwnThread(const RequestContext& ctx, ReplySender& sender,
                         std::function<void(RequestContext&, ReplySender&)> answer);
  // SETLKW: waits on its own thread; false if it must be answered in line.
  bool DispatchBlockingLock(const proto::Request& req, const RequestContext& ctx,
                            ReplySender& sender);

  FileSystem* const fs_;
  KernelConnection* const kernel_;
  const proto::InitConfig init_config_;
  proto::Connection conn_;  // written once by INIT before workers start
  proto::DecodeOptions decode_options_;
  std::atomic<bool> initialized_{false};
  std::atomic<bool> destroyed_{false};
  InterruptTable interrupts_;
  ReleaseOrder release_order_;
  DispatcherStats stats_;
  OffloadPolicy* offload_ = nullptr;
  RateLimiter bad_request_log_{5};
  std::atomic<int> async_ops_{0};  // requests answered from their own threads
  std::atomic<int> in_flight_{0};
  std::atomic<bool> retiring_{false};
  // Requests left unanswered (no_reply_lookup, Retire): held, never sent.
  void HoldUnanswered(ReplySender& sender);
};

// Conversions between backend values and wire structs (shared with tests).
abi::Attr ToWireAttr(const Attributes& a);
void SplitTimeout(double seconds, uint64_t* sec, uint32_t* nsec);
abi::EntryOut ToWireEntry(const Entry& e);

}  // namespace efuse

#endif  // EFUSE_CORE_DISPATCHER_H_
