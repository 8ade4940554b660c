// core/dispatcher_parts.h — the dispatcher's senders that wrap a reply:
// an answer given later (PendingLater, taken through LaterTaker during the
// call) and an answer recorded in the journal before it is sent
// (JournalingSender). Private to core/dispatcher*.cc.
#ifndef EFUSE_CORE_DISPATCHER_PARTS_H_
#define EFUSE_CORE_DISPATCHER_PARTS_H_

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "core/dispatcher.h"
#include "core/log.h"
#include "core/state_region.h"

namespace efuse {

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

// Test fault crash_before_reply for a request that records no answer (a
// LOOKUP): dies having carried it out with success, its answer unsent
// (errors and a name not found, an entry of node 0, are sent).
class Dispatcher::DyingSender final : public ReplySender {
 public:
  DyingSender(ReplySender* out, uint64_t unique) : out_(out), unique_(unique) {}
  int Send(proto::Reply& reply) override {
    // The answer's first 8 bytes after the out header: a LOOKUP's node id.
    uint8_t head[sizeof(abi::OutHeader) + sizeof(uint64_t)] = {};
    size_t have = 0;
    for (const iovec& v : reply.Iov()) {
      const size_t n = std::min(v.iov_len, sizeof(head) - have);
      std::memcpy(head + have, v.iov_base, n);
      have += n;
    }
    uint64_t node = 0;
    std::memcpy(&node, head + sizeof(abi::OutHeader), sizeof(node));
    if (reply.error() != 0 || have < sizeof(head) || node == 0) return out_->Send(reply);
    Log(LogLevel::kWarning, "test fault crash_before_reply: unique %u carried out, dying unsent", unique_);
    raise(SIGKILL);
    return -EIO;
  }
  std::unique_ptr<ReplySender> Detach() override { return nullptr; }  // answered in line

 private:
  ReplySender* out_;
  uint64_t unique_;
};

// Records each answer in the state region before it is sent.
class Dispatcher::JournalingSender final : public ReplySender {
 public:
  // `amend`: for a request resent after its intent was recorded, the answer
  // to give instead of an error its first run may have caused (or none).
  using Amend = std::function<std::optional<proto::Reply>(int err)>;
  // Test faults: die before the answer is recorded (once `others` more
  // answers were recorded, up to 30 s), or after, unsent.
  enum class Crash { kNo, kBeforeAnswer, kBeforeReply };
  // Holds the request's intents (StateRegion::Hold) until its answer is
  // recorded: made before the intent is recorded.
  JournalingSender(ReplySender* out, StateRegion* region, uint64_t unique, Crash crash, Amend amend = nullptr,
                   uint64_t others = 0)
      : out_(out),
        region_(region),
        unique_(unique),
        crash_(crash),
        amend_(std::move(amend)),
        hold_(region->Hold(unique)),
        others_(others),
        recorded_at_start_(region->header().answers_recorded.load()) {}
  ~JournalingSender() override { region_->Release(hold_); }
  JournalingSender(const JournalingSender&) = delete;
  JournalingSender& operator=(const JournalingSender&) = delete;
  int Send(proto::Reply& reply) override {
    if (amend_ && reply.error() < 0) {
      if (std::optional<proto::Reply> better = amend_(-reply.error())) return Send(*better);
    }
    if (crash_ == Crash::kBeforeAnswer) {
      for (int i = 0; i < 30000 && region_->header().answers_recorded.load() < recorded_at_start_ + others_; ++i) {
        usleep(1000);
      }
      Log(LogLevel::kWarning, "test fault crash_before_answer: unique %u carried out, dying before its answer is "
          "recorded", unique_);
      raise(SIGKILL);
    }
    region_->RecordAnswer(unique_, reply.Iov());
    region_->Release(hold_);
    hold_ = 0;
    // A resend of a request cut off mid-way: its predecessor's intents were
    // held since the takeover (StateRegion::HoldUnanswered).
    if (amend_) region_->ReleaseHoldsOf(unique_);
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
  size_t hold_;
  uint64_t others_;
  uint64_t recorded_at_start_;
};

}  // namespace efuse

#endif  // EFUSE_CORE_DISPATCHER_PARTS_H_
