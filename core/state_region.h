// core/state_region.h — what a successor server needs, in memory that
// outlives the server process.
//
// Owns: one memfd (kept open by the supervisor, or by a service manager's
// fd store) holding a fixed header — the negotiated INIT, the connection's
// device, server generations and takeover figures — and an append-only log
// of typed records (the node and handle tables of a backend). Crash-safe: a
// record counts only once the committed length covers it, and that length
// is stored (release) after the record's bytes, so a server killed at any
// instruction leaves either the whole record or none. Append is thread-safe
// (one mutex: passthrough writes records when a node or handle is born or
// dies; memfs with its data in the daemon also per change of an inode,
// writes included); Replay is for a server that is not serving yet (a
// successor, a standby following the log).
//
// Compaction: the log would hold every node ever born. Its owner writes a
// checkpoint (BeginCheckpoint, then records of what is live now, appended
// like any other, interleaved with the serving threads' own), and
// CommitCheckpoint moves the log's beginning to it and frees the memory
// before it (a hole punched in the memfd). A server killed before the
// commit leaves the old beginning: the checkpoint's records only repeat
// what the log said. So a checkpoint record must mean the same wherever it
// is replayed after what it describes, and the owner must put a thing in
// its table before it journals it (else a checkpoint could miss a thing
// journaled before it began).
#ifndef EFUSE_CORE_STATE_REGION_H_
#define EFUSE_CORE_STATE_REGION_H_

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <sys/uio.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/init.h"

namespace efuse {

// The fixed part, at offset 0 of the memfd. Plain data: a successor of
// another build checks `layout` before it trusts anything else.
struct StateHeader {
  uint64_t magic;
  uint32_t layout;  // kStateLayout of the writer
  uint32_t header_size;
  // Set once INIT is answered: a server that finds it adopts `conn`
  // instead of waiting for an INIT (none comes again).
  std::atomic<uint32_t> initialized;
  // The backend can be rebuilt from this region and its source or storage
  // (0: a file system that keeps no journal, or one whose journal could
  // not take a record).
  std::atomic<uint32_t> recoverable;
  proto::Connection conn;
  uint64_t device;  // the connection's dev_t (its number in /sys/fs/fuse/connections)
  // The process that holds the connection for the servers: signals for the
  // mount go to it (it passes them on), so the status file names it.
  int32_t supervisor_pid;
  // Figures for `efusectl status`, kept by the servers.
  std::atomic<uint64_t> generation;          // servers started on this connection
  std::atomic<uint64_t> serving_generation;  // the last of them that came to serve
  std::atomic<uint64_t> takeovers;           // of them, successors of a dead or retired one
  std::atomic<uint64_t> last_takeover_ns;    // start to first request served
  std::atomic<uint64_t> requests_resent;     // asked of the kernel at takeovers
  // Answers recorded (RecordAnswer) and answers replayed to resent requests.
  std::atomic<uint64_t> answers_recorded;
  std::atomic<uint64_t> answers_replayed;
  // The log's committed length in bytes (after the header and the answers).
  std::atomic<uint64_t> log_end;
  // The mount point, resolved (NUL-terminated): a successor must not look
  // it up, which would wait on the connection nobody serves yet.
  char mountpoint[1024];
  // The options only a new mount can change ("name=value" lines, written
  // by the first server): a successor with others keeps these.
  char fixed_options[2048];
  // When the last server stopped serving (CLOCK_MONOTONIC ns: a retiring
  // server as it exits, the supervisor when it reaps one that died): a
  // takeover's duration counts from here, replay and process start included.
  std::atomic<uint64_t> server_ended_ns;
  // Where replay starts (the last checkpoint committed; 0 before any) and
  // that checkpoint's size: the next is due when the log has grown well
  // past it (CheckpointDue).
  std::atomic<uint64_t> log_begin;
  std::atomic<uint64_t> checkpoint_bytes;
  std::atomic<uint64_t> checkpoints;
  // The serving server's BPF program links and their config map (fd
  // numbers in its process; -1: none), for the supervisor to hold copies
  // (pidfd_getfd): a server's death then does not wait for the kernel to
  // detach its programs, and the supervisor quiets them.
  int32_t server_bpf_links[4];
  int32_t server_bpf_config;
  // The status file's rewrite count, across servers (a reader that signals
  // for a rewrite waits for a higher one, whichever server writes it).
  std::atomic<uint64_t> status_seq;
  // Turns of the answer slots' rotation (one per answer or intent recorded,
  // one per held intent passed over).
  std::atomic<uint64_t> answer_turns;
};

// CLOCK_MONOTONIC in ns (the same clock in every process).
uint64_t MonotonicNs();

class StateRegion {
 public:
  // 7: memfs with its data in the daemon journals its tables (memfs_journal.cc).
  // 8: answer_turns; memfs's batch records carry lookup counts.
  // 9: memfs's batch records carry inodes and handles (a new name's).
  static constexpr uint32_t kStateLayout = 9;

  // A new, empty region (the supervisor, before the first server).
  static absl::StatusOr<std::unique_ptr<StateRegion>> Create();
  // The region behind an inherited fd (taken over: closed with the object).
  static absl::StatusOr<std::unique_ptr<StateRegion>> Adopt(int fd);
  ~StateRegion();
  StateRegion(const StateRegion&) = delete;
  StateRegion& operator=(const StateRegion&) = delete;

  int fd() const { return fd_; }
  StateHeader& header() { return *header_; }
  const StateHeader& header() const { return *header_; }

  // Appends one record; false (and nothing written) when the memfd cannot
  // grow. `type` is the owner's own (0 is reserved).
  bool Append(uint16_t type, std::span<const uint8_t> payload);
  // Every committed record from log offset `from` (0, or what an earlier
  // call returned), in order; returns the offset after the last. If a
  // checkpoint moved the log's beginning past `from` (before or during the
  // call: what was read may be gone), `reset` is called and replay starts
  // again at the new beginning: the caller forgets what it gathered.
  uint64_t Replay(const std::function<void(uint16_t type, std::span<const uint8_t> payload)>& fn,
                  uint64_t from = 0, const std::function<void()>& reset = nullptr);
  // Log bytes a successor would read (from the last checkpoint on).
  uint64_t log_bytes() const {
    // (The beginning first: it never passes the end read after it.)
    const uint64_t begin = header_->log_begin.load(std::memory_order_acquire);
    const uint64_t end = header_->log_end.load(std::memory_order_acquire);
    return end > begin ? end - begin : 0;
  }
  // The log has grown past `min_bytes` and four times the last checkpoint.
  bool CheckpointDue(uint64_t min_bytes) const {
    return log_bytes() > std::max(min_bytes, 4 * header_->checkpoint_bytes.load(std::memory_order_relaxed));
  }
  // Marks where a checkpoint starts (a record Replay does not pass on);
  // its offset, or nullopt if the memfd cannot grow.
  std::optional<uint64_t> BeginCheckpoint();
  // The checkpoint begun at `begin` is whole: replay starts there from now
  // on, and the log before it is freed.
  void CommitCheckpoint(uint64_t begin);

  // The answers of the last kAnswerSlots non-idempotent requests, each
  // recorded before it is sent: a request the kernel resends after its
  // server died (the reply may never have left) is answered from here
  // instead of being carried out twice. Lock-free; any thread.
  static constexpr size_t kAnswerSlots = 512;
  static constexpr size_t kAnswerBytes = 496;
  // `reply`: the whole message, out header first. False if it does not fit.
  bool RecordAnswer(uint64_t unique, std::span<const iovec> reply);
  // The message recorded for `unique` (out header first), or empty.
  std::string FindAnswer(uint64_t unique) const;
  // Recorded before a non-idempotent request is carried out: a resent
  // request with an intent and no answer may have taken effect already.
  void RecordIntent(uint64_t unique);
  bool HasIntent(uint64_t unique) const;
  // An intent that carries what the first run chose before acting, for a
  // resent request to choose the same (where an O_APPEND write began: run
  // again at the end of what a partial first run wrote, it would append
  // twice). Recorded after RecordIntent, before the action.
  void RecordIntentDetail(uint64_t unique, uint64_t detail);
  std::optional<uint64_t> IntentDetail(uint64_t unique) const;
  static constexpr int32_t kIntentMark = INT32_MIN;
  // The uniques of every intent and every answer recorded, read at once
  // (a rebuild asks about many requests; HasIntent reads every slot).
  struct Recorded {
    std::unordered_set<uint64_t> intents;
    std::unordered_set<uint64_t> answered;
    // Carried out (an intent) and never answered: the kernel resends it.
    bool NeverAnswered(uint64_t unique) const {
      return unique != 0 && intents.contains(unique) && !answered.contains(unique);
    }
  };
  Recorded RecordedRequests() const;

  // The intents of a request being carried out are not overwritten by the
  // slots' rotation, however many answers others record meanwhile (a slow
  // request among many quick ones): held from before its intent until its
  // answer is recorded. Process-local; any thread. A hold is a ticket: 0
  // when none was free (the intents are then only as safe as the rotation).
  static constexpr size_t kHolds = 256;
  size_t Hold(uint64_t unique);
  void Release(size_t ticket);
  // A successor's, once the kernel was asked to resend what its
  // predecessor held: holds the intents of requests carried out and never
  // answered, each until its resend's answer is recorded (ReleaseHoldsOf),
  // the rest once kUnresentAfter answers were recorded since
  // (ReleaseUnresent, on new requests: the kernel queues the resent first,
  // and each takes its own hold as it is handled; one never resent, its
  // caller gone, must not hold a slot for good). Also frees a slot the
  // last server died writing.
  void HoldUnanswered();
  void ReleaseHoldsOf(uint64_t unique);
  void ReleaseUnresent() {
    if (adopted_holds_.load(std::memory_order_relaxed)) ReleaseAdopted();
  }

 private:
  struct AnswerSlot;
  StateRegion(int fd, StateHeader* header) : fd_(fd), header_(header) {}
  AnswerSlot* answers() const;
  bool MapLog(uint64_t capacity) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AppendLocked(uint16_t type, std::span<const uint8_t> payload) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Maps at least `bytes` of log, growing the memfd only if it is smaller.
  bool MapAtLeast(uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  bool Held(uint64_t unique) const;
  // Slot i's unique and a whole copy of its bytes, if it holds `unique`
  // (0: any request); 0 if not, or if it was rewritten as it was read.
  uint64_t ReadSlot(size_t i, uint64_t unique, std::string* bytes) const;
  void ReleaseAdopted();

  int fd_;
  StateHeader* header_;
  // holds_[ticket - 1]: a unique held, or 0. Scanned up to holds_used_.
  std::unique_ptr<std::atomic<uint64_t>[]> holds_{new std::atomic<uint64_t>[kHolds]()};
  std::atomic<size_t> holds_used_{0};
  // HoldUnanswered's holds not released yet: (ticket, unique).
  std::atomic<bool> adopted_holds_{false};
  static constexpr uint64_t kUnresentAfter = 4 * kAnswerSlots;
  uint64_t adopted_until_ ABSL_GUARDED_BY(adopted_mu_) = 0;
  absl::Mutex adopted_mu_;
  std::vector<std::pair<size_t, uint64_t>> adopted_ ABSL_GUARDED_BY(adopted_mu_);
  mutable absl::Mutex mu_;
  uint8_t* log_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t capacity_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace efuse

#endif  // EFUSE_CORE_STATE_REGION_H_
