#include "core/state_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace efuse {
namespace {

constexpr uint64_t kMagic = 0x6566757365535431ULL;  // "efuseST1"
constexpr uint64_t kHeaderPage = 4096;
// An answer slot's unique while a writer fills it (no FUSE unique has bit
// 62: the kernel counts in steps of 2 from 0, and marks resends with 63).
constexpr uint64_t kSlotBeingWritten = uint64_t{1} << 62;
constexpr uint64_t kGrowBytes = 1 << 20;
// The log's pages are made this far ahead of its end (AppendLocked).
constexpr uint64_t kPopulateAhead = 256 << 10;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif
static_assert(sizeof(StateHeader) <= kHeaderPage);

struct RecordHead {
  uint32_t size;  // payload bytes
  uint16_t type;
  uint16_t reserved;
};

constexpr uint64_t Padded(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// The region's own record: where a checkpoint begins (never passed on).
constexpr uint16_t kCheckpointMark = 0xffff;

}  // namespace

// One recorded answer: `unique` is stored last (release) and cleared first,
// so a reader sees whole answers or none.
struct StateRegion::AnswerSlot {
  std::atomic<uint64_t> unique;
  uint32_t size;
  uint32_t reserved;
  uint8_t bytes[kAnswerBytes];
};

namespace {
// The header page, then the answer slots, then the log.
constexpr uint64_t kHeaderBytes = kHeaderPage + StateRegion::kAnswerSlots * 512;
}  // namespace

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

StateRegion::AnswerSlot* StateRegion::answers() const {
  static_assert(sizeof(AnswerSlot) == 512);
  return reinterpret_cast<AnswerSlot*>(reinterpret_cast<uint8_t*>(header_) + kHeaderPage);
}

size_t StateRegion::Hold(uint64_t unique) {
  for (size_t i = 0; i < kHolds; ++i) {
    uint64_t free = 0;
    if (holds_[i].compare_exchange_strong(free, unique, std::memory_order_acq_rel)) {
      size_t used = holds_used_.load(std::memory_order_relaxed);
      while (used < i + 1 && !holds_used_.compare_exchange_weak(used, i + 1, std::memory_order_acq_rel)) {
      }
      return i + 1;
    }
  }
  return 0;
}

void StateRegion::Release(size_t ticket) {
  if (ticket != 0) holds_[ticket - 1].store(0, std::memory_order_release);
}

void StateRegion::HoldUnanswered() {
  // No other server writes now (the last one is dead, or retired having
  // finished what it carried out): a slot it was writing when it died is
  // free again (its request kept its intent, so its resend is caught).
  AnswerSlot* slots = answers();
  for (size_t i = 0; i < kAnswerSlots; ++i) {
    uint64_t torn = kSlotBeingWritten;
    slots[i].unique.compare_exchange_strong(torn, 0, std::memory_order_acq_rel);
  }
  const Recorded recorded = RecordedRequests();
  absl::MutexLock l(&adopted_mu_);
  size_t unheld = 0;
  for (uint64_t unique : recorded.intents) {
    if (!recorded.NeverAnswered(unique)) continue;
    if (const size_t ticket = Hold(unique); ticket != 0) {
      adopted_.emplace_back(ticket, unique);
    } else {
      ++unheld;
    }
  }
  if (unheld != 0) Log(LogLevel::kWarning, "%u requests cut off by the last server's end not held: no hold free", unheld);
  adopted_until_ = header_->answers_recorded.load() + kUnresentAfter;
  adopted_holds_.store(!adopted_.empty(), std::memory_order_relaxed);
}

void StateRegion::ReleaseHoldsOf(uint64_t unique) {
  // Compared, not stored: the entry may belong to another request by now.
  const size_t used = holds_used_.load(std::memory_order_acquire);
  for (size_t i = 0; i < used; ++i) {
    uint64_t held = unique;
    holds_[i].compare_exchange_strong(held, 0, std::memory_order_acq_rel);
  }
}

void StateRegion::ReleaseAdopted() {
  absl::MutexLock l(&adopted_mu_);
  if (header_->answers_recorded.load() < adopted_until_ || !adopted_holds_.exchange(false)) return;
  for (auto [ticket, unique] : adopted_) {
    uint64_t held = unique;
    holds_[ticket - 1].compare_exchange_strong(held, 0, std::memory_order_acq_rel);
  }
  adopted_.clear();
}

bool StateRegion::Held(uint64_t unique) const {
  const size_t used = holds_used_.load(std::memory_order_acquire);
  for (size_t i = 0; i < used; ++i) {
    if (holds_[i].load(std::memory_order_acquire) == unique) return true;
  }
  return false;
}

bool StateRegion::RecordAnswer(uint64_t unique, std::span<const iovec> reply) {
  size_t total = 0;
  for (const iovec& v : reply) total += v.iov_len;
  if (total > kAnswerBytes || unique == 0) return false;
  // The next slot in turn, passing over the intents of requests held. A
  // whole lap of held intents (more requests in flight than slots) takes
  // the next one anyway, and says so once.
  // A slot is claimed by swapping its unique for kSlotBeingWritten: two
  // writers (one that went a lap past held intents) never share one.
  AnswerSlot* slots = answers();
  AnswerSlot* chosen = nullptr;
  for (size_t turn = 0; chosen == nullptr; ++turn) {
    AnswerSlot& next = slots[header_->answer_turns.fetch_add(1) % kAnswerSlots];
    uint64_t previous = next.unique.load(std::memory_order_acquire);
    if (previous == kSlotBeingWritten && turn < 2 * kAnswerSlots) continue;
    int32_t mark = 0;
    std::memcpy(&mark, next.bytes + 4, sizeof(mark));
    const bool held_intent = previous != 0 && mark == kIntentMark && Held(previous);
    if (held_intent && turn < kAnswerSlots) continue;
    if (!next.unique.compare_exchange_strong(previous, kSlotBeingWritten, std::memory_order_acq_rel)) continue;
    chosen = &next;
    if (held_intent) {
      static std::atomic<bool> said{false};
      if (!said.exchange(true)) {
        Log(LogLevel::kWarning, "every answer slot holds the intent of a request in flight: one is overwritten");
      }
    }
  }
  header_->answers_recorded.fetch_add(1, std::memory_order_relaxed);
  AnswerSlot& slot = *chosen;
  size_t at = 0;
  for (const iovec& v : reply) {
    std::memcpy(slot.bytes + at, v.iov_base, v.iov_len);
    at += v.iov_len;
  }
  slot.size = static_cast<uint32_t>(total);
  slot.unique.store(unique, std::memory_order_release);
  return true;
}

namespace {
bool IsIntent(const std::string& bytes) {
  int32_t error = 0;
  if (bytes.size() < 8) return false;
  std::memcpy(&error, bytes.data() + 4, sizeof(error));
  return error == StateRegion::kIntentMark;
}
}  // namespace

uint64_t StateRegion::ReadSlot(size_t i, uint64_t unique, std::string* bytes) const {
  const AnswerSlot& slot = answers()[i];
  const uint64_t found = slot.unique.load(std::memory_order_acquire);
  if (found == 0 || found == kSlotBeingWritten || (unique != 0 && found != unique)) return 0;
  bytes->assign(reinterpret_cast<const char*>(slot.bytes), std::min<size_t>(slot.size, kAnswerBytes));
  std::atomic_thread_fence(std::memory_order_acquire);  // the copy before the second look
  return slot.unique.load(std::memory_order_acquire) == found ? found : 0;  // else rewritten as it was read
}

std::string StateRegion::FindAnswer(uint64_t unique) const {
  if (unique == 0) return "";  // never recorded
  std::string bytes;
  for (size_t i = 0; i < kAnswerSlots; ++i) {
    if (ReadSlot(i, unique, &bytes) != 0 && !IsIntent(bytes)) return bytes;
  }
  return "";
}

void StateRegion::RecordIntent(uint64_t unique) {
  const int32_t head[4] = {16, kIntentMark, 0, 0};
  const iovec v{const_cast<int32_t*>(head), sizeof(head)};
  RecordAnswer(unique, std::span<const iovec>(&v, 1));
}

void StateRegion::RecordIntentDetail(uint64_t unique, uint64_t detail) {
  int32_t head[6] = {24, kIntentMark, 0, 0, 0, 0};
  std::memcpy(&head[4], &detail, sizeof(detail));
  const iovec v{head, sizeof(head)};
  RecordAnswer(unique, std::span<const iovec>(&v, 1));
}

std::optional<uint64_t> StateRegion::IntentDetail(uint64_t unique) const {
  if (unique == 0) return std::nullopt;  // never recorded
  std::string bytes;
  for (size_t i = 0; i < kAnswerSlots; ++i) {
    if (ReadSlot(i, unique, &bytes) == 0 || !IsIntent(bytes) || bytes.size() < 24) continue;
    uint64_t detail = 0;
    std::memcpy(&detail, bytes.data() + 16, sizeof(detail));
    return detail;
  }
  return std::nullopt;
}

bool StateRegion::HasIntent(uint64_t unique) const {
  if (unique == 0) return false;  // never recorded
  std::string bytes;
  for (size_t i = 0; i < kAnswerSlots; ++i) {
    if (ReadSlot(i, unique, &bytes) != 0 && IsIntent(bytes)) return true;
  }
  return false;
}

StateRegion::Recorded StateRegion::RecordedRequests() const {
  Recorded r;
  std::string bytes;
  for (size_t i = 0; i < kAnswerSlots; ++i) {
    if (const uint64_t unique = ReadSlot(i, 0, &bytes); unique != 0) {
      (IsIntent(bytes) ? r.intents : r.answered).insert(unique);
    }
  }
  return r;
}

absl::StatusOr<std::unique_ptr<StateRegion>> StateRegion::Create() {
  int fd = memfd_create("efuse-state", MFD_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "memfd_create(efuse-state)");
  if (ftruncate(fd, static_cast<off_t>(kHeaderBytes + kGrowBytes)) != 0) {
    const int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, "sizing the state memfd");
  }
  void* p = mmap(nullptr, kHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, "mapping the state memfd");
  }
  // A fresh memfd reads as zeros: every atomic starts at 0.
  auto* h = new (p) StateHeader{};
  h->magic = kMagic;
  h->layout = kStateLayout;
  h->header_size = sizeof(StateHeader);
  std::unique_ptr<StateRegion> r(new StateRegion(fd, h));
  absl::MutexLock l(&r->mu_);
  if (!r->MapLog(kGrowBytes)) return absl::ErrnoToStatus(errno, "mapping the state log");
  return r;
}

absl::StatusOr<std::unique_ptr<StateRegion>> StateRegion::Adopt(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, "fstat of the state fd");
  if (static_cast<uint64_t>(st.st_size) < kHeaderBytes + kGrowBytes)
    return absl::InvalidArgumentError("the inherited state fd is not an efuse state region (too small)");
  void* p = mmap(nullptr, kHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return absl::ErrnoToStatus(errno, "mapping the inherited state fd");
  auto* h = static_cast<StateHeader*>(p);
  if (h->magic != kMagic || h->layout != kStateLayout || h->header_size != sizeof(StateHeader)) {
    const uint32_t layout = h->layout;
    munmap(p, kHeaderBytes);
    return absl::FailedPreconditionError(absl::StrCat(
        "the inherited state region has layout ", layout, ", this efused reads layout ", kStateLayout,
        " (a takeover needs a compatible build)"));
  }
  std::unique_ptr<StateRegion> r(new StateRegion(fd, h));
  absl::MutexLock l(&r->mu_);
  if (!r->MapLog(static_cast<uint64_t>(st.st_size) - kHeaderBytes))
    return absl::ErrnoToStatus(errno, "mapping the inherited state log");
  return r;
}

StateRegion::~StateRegion() {
  {
    absl::MutexLock l(&mu_);
    if (log_ != nullptr) munmap(log_, capacity_);
  }
  munmap(header_, kHeaderBytes);
  close(fd_);
}

bool StateRegion::MapLog(uint64_t capacity) {
  void* p = log_ == nullptr
                ? mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, kHeaderBytes)
                : mremap(log_, capacity_, capacity, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) return false;
  log_ = static_cast<uint8_t*>(p);
  capacity_ = capacity;
  return true;
}

bool StateRegion::MapAtLeast(uint64_t bytes) {
  if (bytes <= capacity_) return true;
  // Another server may have grown the memfd since it was mapped here (a
  // successor adopts the region while its predecessor still appends): map
  // what is there, and never shrink it.
  struct stat st;
  if (fstat(fd_, &st) != 0) return false;
  uint64_t size = static_cast<uint64_t>(st.st_size) - kHeaderBytes;
  if (size < bytes) {
    size = Padded(bytes) + kGrowBytes;
    if (ftruncate(fd_, static_cast<off_t>(kHeaderBytes + size)) != 0) return false;
  }
  return MapLog(size);
}

bool StateRegion::Append(uint16_t type, std::span<const uint8_t> payload) {
  absl::MutexLock l(&mu_);
  return AppendLocked(type, payload);
}

bool StateRegion::AppendLocked(uint16_t type, std::span<const uint8_t> payload) {
  const uint64_t need = sizeof(RecordHead) + Padded(payload.size());
  const uint64_t end = header_->log_end.load(std::memory_order_relaxed);
  if (!MapAtLeast(end + need)) return false;
  RecordHead head{static_cast<uint32_t>(payload.size()), type, 0};
  std::memcpy(log_ + end, &head, sizeof(head));
  if (!payload.empty()) std::memcpy(log_ + end + sizeof(head), payload.data(), payload.size());
  // The record's bytes before the length that makes it count.
  header_->log_end.store(end + need, std::memory_order_release);
  // Into a new window: the next one's pages are made now, in one call,
  // instead of one fault per page on later requests' way (memfs's create
  // loop with its data in the daemon went from 0.88-0.95 of an unsupervised
  // server to 0.98). Only a hint: an older kernel refuses it.
  if (end / kPopulateAhead != (end + need) / kPopulateAhead) {
    const uint64_t next = ((end + need) / kPopulateAhead + 1) * kPopulateAhead;
    if (MapAtLeast(next + kPopulateAhead)) madvise(log_ + next, kPopulateAhead, MADV_POPULATE_WRITE);
  }
  return true;
}

uint64_t StateRegion::Replay(const std::function<void(uint16_t, std::span<const uint8_t>)>& fn, uint64_t from,
                             const std::function<void()>& reset) {
  absl::MutexLock l(&mu_);
  for (;;) {
    const uint64_t begin = header_->log_begin.load(std::memory_order_acquire);
    if (from < begin) {
      // A checkpoint replaced what was read: start over from it.
      if (reset) reset();
      from = begin;
    }
    const uint64_t end = header_->log_end.load(std::memory_order_acquire);
    if (!MapAtLeast(end)) return from;
    uint64_t at = from;
    while (at + sizeof(RecordHead) <= end && end <= capacity_) {
      RecordHead head;
      std::memcpy(&head, log_ + at, sizeof(head));
      const uint64_t next = at + sizeof(RecordHead) + Padded(head.size);
      if (head.type == 0 || next > end) break;  // never written (or freed): nothing after it counts
      if (head.type != kCheckpointMark) fn(head.type, std::span<const uint8_t>(log_ + at + sizeof(head), head.size));
      at = next;
    }
    // Freed while it was read (a checkpoint committed meanwhile): what was
    // passed on may be torn; read it again from the checkpoint. (The fence
    // orders the record reads above before this load.)
    std::atomic_thread_fence(std::memory_order_acquire);
    if (header_->log_begin.load(std::memory_order_acquire) <= from) return at;
  }
}

std::optional<uint64_t> StateRegion::BeginCheckpoint() {
  absl::MutexLock l(&mu_);
  const uint64_t begin = header_->log_end.load(std::memory_order_relaxed);
  if (!AppendLocked(kCheckpointMark, {})) return std::nullopt;
  return begin;
}

void StateRegion::CommitCheckpoint(uint64_t begin) {
  absl::MutexLock l(&mu_);
  if (begin <= header_->log_begin.load(std::memory_order_relaxed)) return;
  header_->checkpoint_bytes.store(header_->log_end.load(std::memory_order_relaxed) - begin,
                                  std::memory_order_relaxed);
  header_->log_begin.store(begin, std::memory_order_release);
  header_->checkpoints.fetch_add(1, std::memory_order_relaxed);
  // The whole pages before it go back to the system (a successor that was
  // reading them sees the beginning moved and reads again). From the log's
  // start every time: pages an earlier punch missed (its server killed
  // before it, a reader faulting them back in) go too.
  const uint64_t to = begin / 4096 * 4096;
  if (to > 0) {
    fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(kHeaderBytes),
              static_cast<off_t>(to));
  }
}

}  // namespace efuse
