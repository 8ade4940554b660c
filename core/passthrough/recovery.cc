// core/passthrough/recovery.cc — PassthroughFs: its node and handle tables
// in the state region (core/state_region.h), and their rebuilding by a
// successor server after a takeover.
//
// A node is journaled once, when its id is born (id, device, type, file
// handle: enough to open its file again); a handle when it opens and when
// it is released. The successor replays the journal: every node id the
// kernel may still name comes back on first use (opened by its file
// handle, under the same id), and every handle the kernel still holds is
// opened again on first use, with its flags and, for kernel passthrough,
// the backing id the connection kept. Lookup counts are not journaled: a
// revived node counts one lookup, and the kernel's FORGET (which carries
// its whole count) drops it.
//
// Compaction (CompactJournal, on a thread of its own once the log has
// grown well past its last checkpoint): the nodes the kernel may still
// name (live, forgotten but kept, journaled by the last server and not
// forgotten since), the open handles and the id high-water marks, written
// as ordinary records after a checkpoint mark; the log before the mark is
// then freed. The tables are filled before their records are appended
// (Remember, AddHandle) and emptied before a release is appended
// (TakeHandle), each checkpoint record under the lock of its table's shard:
// a checkpoint never misses what the log held before it, and a release is
// never followed by a stale "open".
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/passthrough/internal.h"
#include "core/passthrough/passthrough.h"
#include "core/state_region.h"
#include "core/test_faults.h"

namespace efuse {

using passthrough::MayMapForWriting;
using passthrough::SharedFd;
using passthrough::WritesThroughDaemon;

namespace {

enum RecordType : uint16_t {
  kNodeBorn = 1,       // NodeRecord + handle bytes
  kHandleOpened = 2,   // HandleRecord
  kHandleReleased = 3, // uint64_t fh
  kHighWater = 4,      // HighWaterRecord: ids and handle numbers given so far
  kNodeDropped = 5,    // DroppedRecord: the kernel forgot it
  kNodeForgotten = 6,  // NodeRecord + handle: a checkpoint's forgotten node, kept for its handle
};

struct NodeRecord {
  uint64_t nodeid;
  uint64_t dev;
  uint32_t type;
  uint32_t handle_size;
};

struct DroppedRecord {
  uint64_t nodeid;
  uint64_t kept;  // 1: kept among the forgotten (else gone for good)
};

struct HighWaterRecord {
  uint64_t next_fh;
  uint64_t next_in_shard[64];  // per shard of the inode table (kShards)
};

template <typename T>
std::span<const uint8_t> BytesOf(const T& v) {
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof(v));
}

template <typename T>
bool ReadRecord(std::span<const uint8_t> bytes, T* out) {
  if (bytes.size() < sizeof(T)) return false;
  std::memcpy(out, bytes.data(), sizeof(T));
  return true;
}

}  // namespace

struct PassthroughFs::HandleRecord {
  uint64_t fh;
  uint64_t nodeid;
  uint32_t flags;
  uint8_t passthrough;
  uint8_t dir;
  uint16_t reserved;
  int32_t backing_id;
  uint32_t reserved2;
  uint64_t opened_by;  // the first unique of the request that opened it
};

void PassthroughFs::JournalFailed() {
  journal_failures_.fetch_add(1, std::memory_order_relaxed);
  // A successor could give out an id or a handle number the kernel holds:
  // the supervisor ends the mount instead of starting one.
  opts_.state->header().recoverable.store(0);
}

void PassthroughFs::JournalNode(const Inode& inode) {
  if (opts_.state == nullptr) return;
  // A node without a file handle (its fd pinned) cannot be opened again by
  // a successor; its id is still journaled, so that none is given twice.
  if (inode.handle.empty()) opts_.state->header().recoverable.store(0);
  if (!AppendNode(kNodeBorn, inode.nodeid, inode.dev, inode.type, inode.handle)) JournalFailed();
  NoteJournalGrowth();
}

void PassthroughFs::JournalDropped(uint64_t nodeid, bool kept) {
  if (opts_.state == nullptr) return;
  if (!opts_.state->Append(kNodeDropped, BytesOf(DroppedRecord{nodeid, kept ? 1u : 0u}))) JournalFailed();
  NoteJournalGrowth();
}

bool PassthroughFs::AppendNode(uint16_t type, uint64_t nodeid, uint64_t dev, uint32_t node_type,
                               const std::string& handle) {
  NodeRecord r{nodeid, dev, node_type, static_cast<uint32_t>(handle.size())};
  std::string bytes(reinterpret_cast<const char*>(&r), sizeof(r));
  bytes += handle;
  return opts_.state->Append(type, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                            bytes.size()));
}

void PassthroughFs::JournalHandle(uint64_t fh, const Handle& h) {
  if (opts_.state == nullptr) return;
  if (!opts_.state->Append(kHandleOpened, BytesOf(HandleRecordOf(fh, h)))) JournalFailed();
  NoteJournalGrowth();
}

PassthroughFs::HandleRecord PassthroughFs::HandleRecordOf(uint64_t fh, const Handle& h) {
  HandleRecord r{};
  r.fh = fh;
  r.nodeid = h.inode->nodeid;
  r.flags = h.flags;
  r.passthrough = h.passthrough ? 1 : 0;
  r.dir = h.dir != nullptr ? 1 : 0;
  r.opened_by = h.opened_by;
  if (h.passthrough) {
    absl::MutexLock l(&h.inode->mu);
    if (h.inode->open != nullptr) r.backing_id = h.inode->open->backing_id;
  }
  return r;
}

void PassthroughFs::JournalRelease(uint64_t fh) {
  if (opts_.state == nullptr) return;
  if (!opts_.state->Append(kHandleReleased, BytesOf(fh))) JournalFailed();
  NoteJournalGrowth();
}

struct PassthroughFs::JournalReplay {
  uint64_t offset = 0;  // the log read so far
  uint64_t nodes = 0, max_fh = 0;
  std::vector<uint64_t> next_in_shard = std::vector<uint64_t>(kShards, 0);  // ids are never given twice
  absl::flat_hash_map<uint64_t, HandleRecord> open;
  std::chrono::nanoseconds took{0};
};

void PassthroughFs::JournalReplayDeleter::operator()(JournalReplay* r) const { delete r; }

void PassthroughFs::ReplayJournal() {
  if (opts_.state == nullptr || opts_.state->header().initialized.load() == 0) return;
  const auto started = std::chrono::steady_clock::now();
  if (replay_ == nullptr) {
    replay_.reset(new JournalReplay);
    // Sized for the log at once (a node record is about 50 bytes): growing
    // two maps of a million nodes step by step is most of a replay's time.
    const size_t expected_nodes = std::min<uint64_t>(opts_.state->log_bytes() / 48, 1u << 22);
    recovered_nodes_.reserve(expected_nodes);
    recovered_by_handle_.reserve(expected_nodes);
  }
  JournalReplay& r = *replay_;
  auto read_node = [](std::span<const uint8_t> payload, NodeRecord* n, ForgottenNode* f) {
    if (!ReadRecord(payload, n) || payload.size() < sizeof(*n) + n->handle_size) return false;
    f->dev = n->dev;
    f->type = n->type;
    f->handle.assign(reinterpret_cast<const char*>(payload.data() + sizeof(*n)), n->handle_size);
    return true;
  };
  // The node is no longer one the kernel holds: it goes among the
  // forgotten (`f`, or what the journal said of it), if `kept`. Into the
  // shards at once (no request reads them before Init): a takeover has
  // nothing left to sort in.
  auto forget = [&](uint64_t nodeid, ForgottenNode* f, bool kept) {
    auto it = recovered_nodes_.find(nodeid);
    if (it != recovered_nodes_.end()) {
      auto hit = recovered_by_handle_.find(std::make_pair(it->second.dev, it->second.handle));
      if (hit != recovered_by_handle_.end() && hit->second == nodeid) recovered_by_handle_.erase(hit);
      if (f == nullptr) f = &it->second;
    }
    Shard& s = (*shards_)[nodeid % kShards];
    absl::MutexLock l(&s.mu);
    if (kept && f != nullptr && !f->handle.empty()) {
      RememberForgotten(s, nodeid, std::move(*f));
    } else if (!kept) {
      DropForgotten(s, nodeid);
    }  // (kept, known only from a checkpoint before this record: as it was)
    if (it != recovered_nodes_.end()) recovered_nodes_.erase(it);
  };
  r.offset = opts_.state->Replay(
      [&](uint16_t type, std::span<const uint8_t> payload) {
        if (type == kNodeBorn || type == kNodeForgotten) {
          NodeRecord n;
          ForgottenNode f;
          if (!read_node(payload, &n, &f)) return;
          uint64_t& next = r.next_in_shard[n.nodeid % kShards];
          next = std::max(next, n.nodeid / kShards + 1);
          if (type == kNodeForgotten) return forget(n.nodeid, &f, true);
          {
            Shard& s = (*shards_)[n.nodeid % kShards];
            absl::MutexLock l(&s.mu);
            DropForgotten(s, n.nodeid);  // live again
          }
          if (n.handle_size > 0) {
            recovered_by_handle_[std::make_pair(f.dev, f.handle)] = n.nodeid;
            recovered_nodes_[n.nodeid] = std::move(f);
          }
          ++r.nodes;
        } else if (type == kNodeDropped) {
          DroppedRecord d;
          if (ReadRecord(payload, &d)) forget(d.nodeid, nullptr, d.kept != 0);
        } else if (type == kHandleOpened) {
          HandleRecord h;
          if (!ReadRecord(payload, &h)) return;
          r.open[h.fh] = h;
          r.max_fh = std::max(r.max_fh, h.fh);
        } else if (type == kHandleReleased) {
          uint64_t fh;
          if (ReadRecord(payload, &fh)) r.open.erase(fh);
        } else if (type == kHighWater) {
          HighWaterRecord w;
          if (!ReadRecord(payload, &w)) return;
          if (w.next_fh > 0) r.max_fh = std::max(r.max_fh, w.next_fh - 1);
          for (size_t i = 0; i < kShards; ++i) r.next_in_shard[i] = std::max(r.next_in_shard[i], w.next_in_shard[i]);
        }
      },
      r.offset,
      [&] {
        // A checkpoint replaced the log read so far: it names every node
        // and handle that still counts (the high-water marks are kept).
        recovered_nodes_.clear();
        recovered_by_handle_.clear();
        r.open.clear();
        r.nodes = 0;
        for (Shard& s : *shards_) {
          absl::MutexLock l(&s.mu);
          s.forgotten.clear();
          s.forgotten_by_handle.clear();
          s.forgotten_order.clear();
        }
      });
  r.took += std::chrono::steady_clock::now() - started;
}

void PassthroughFs::FinishRecovery() {
  // A planned successor built before its predecessor answered INIT read
  // nothing then: all of it now.
  if (replay_ == nullptr) ReplayJournal();
  if (replay_ == nullptr) return;
  const auto started = std::chrono::steady_clock::now();
  const uint64_t read_before = replay_->offset;
  ReplayJournal();  // what the predecessor added since construction
  std::unique_ptr<JournalReplay, JournalReplayDeleter> r = std::move(replay_);
  for (size_t i = 0; i < kShards; ++i) {
    Shard& s = (*shards_)[i];
    absl::MutexLock l(&s.mu);
    s.next = std::max(s.next, r->next_in_shard[i]);
  }
  next_fh_.store(std::max<uint64_t>(next_fh_.load(), r->max_fh + 1));
  {
    absl::MutexLock l(&recovered_handles_mu_);
    for (const auto& [fh, h] : r->open) {
      recovered_handles_[fh] =
          RecoveredHandle{h.nodeid, h.flags, h.passthrough != 0, h.dir != 0, h.backing_id, h.opened_by};
    }
  }
  // Every handle the kernel still holds, opened again now, before a request
  // comes: a passthrough handle's I/O never reaches the daemon, yet the
  // inode's open state (its backing id above all) must be known before the
  // next open of that file.
  // A handle whose open the last server died answering (its intent is
  // recorded, its answer not: the reply never left) is one the kernel
  // never had: it opens another when it resends that request. Not revived.
  size_t lost = 0, unanswered = 0;
  absl::flat_hash_set<int32_t> backing_in_use;
  std::vector<int32_t> backing_unused;
  const StateRegion::Recorded recorded = opts_.state->RecordedRequests();
  for (const auto& [fh, h] : r->open) {
    if (recorded.NeverAnswered(h.opened_by)) {
      absl::MutexLock l(&recovered_handles_mu_);
      recovered_handles_.erase(fh);
      ++unanswered;
    } else if (ReviveHandle(fh) != nullptr) {
      if (h.passthrough) backing_in_use.insert(h.backing_id);
      continue;
    } else {
      ++lost;
    }
    // Released in the journal too: a later successor must not revive it.
    JournalRelease(fh);
    if (h.passthrough && h.backing_id > 0) backing_unused.push_back(h.backing_id);
  }
  for (int32_t id : backing_unused) {
    if (!backing_in_use.contains(id)) {
      backing_in_use.insert(id);  // (once)
      orphan_backing_ids_.push_back(id);
    }
  }
  {
    absl::MutexLock l(&recovered_handles_mu_);
    has_recovered_handles_.store(!recovered_handles_.empty(), std::memory_order_release);
  }
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  Log(lost == 0 ? LogLevel::kInfo : LogLevel::kWarning,
      "passthrough: took over %u node(s) and %u open handle(s) from the journal (%u bytes, %u of them read at "
      "takeover) in %.1f ms at takeover, %.1f ms before%s",
      r->nodes, r->open.size() - lost - unanswered, opts_.state->log_bytes(),
      std::min(r->offset - std::min(r->offset, read_before), opts_.state->log_bytes()),
      ms(std::chrono::steady_clock::now() - started), ms(r->took),
      absl::StrCat(lost == 0 ? "" : absl::StrCat("; ", lost, " handle(s) could not be opened again (their files are gone?)"),
                   unanswered == 0 ? "" : absl::StrCat("; ", unanswered, " opened by a request never answered, dropped")));
}

bool PassthroughFs::IsNewestIdOfItsFile(uint64_t nodeid, const ForgottenNode& journaled) const {
  auto hit = recovered_by_handle_.find(std::make_pair(journaled.dev, journaled.handle));
  return hit != recovered_by_handle_.end() && hit->second == nodeid;
}

Result<std::shared_ptr<PassthroughFs::Inode>> PassthroughFs::Revive(uint64_t nodeid) {
  // One revival per node: a second would count a second lookup.
  absl::MutexLock revive(&revive_mu_);
  if (std::shared_ptr<Inode> live = Find(nodeid)) return live;
  auto it = recovered_nodes_.find(nodeid);
  if (it == recovered_nodes_.end()) return Errno(ENOENT);
  Result<int> fd = OpenNodeByHandle(it->second);
  if (!fd.ok()) return fd.error();
  // Remember() gives a recovered file its journaled id (recovered_by_handle_).
  struct statx st;
  Result<std::shared_ptr<Inode>> n = RememberAs(nodeid, *fd, &st);
  if (n.ok()) revivals_.fetch_add(1, std::memory_order_relaxed);
  return n;
}

std::shared_ptr<PassthroughFs::Handle> PassthroughFs::ReviveHandle(uint64_t fh) {
  // One at a time (only after a takeover): two requests on one handle find
  // the same revival.
  absl::MutexLock revive(&recovered_handles_mu_);
  auto it = recovered_handles_.find(fh);
  if (it == recovered_handles_.end()) {
    const HandleShard& s = (*handles_)[fh % kHandleShards];
    absl::ReaderMutexLock l(&s.mu);
    auto live = s.map.find(fh);
    return live == s.map.end() ? nullptr : live->second;
  }
  const RecoveredHandle r = it->second;
  recovered_handles_.erase(it);
  Result<std::shared_ptr<Inode>> n = Get(r.nodeid);
  if (!n.ok()) return nullptr;
  auto h = std::make_shared<Handle>();
  h->inode = *n;
  h->flags = r.flags;
  h->passthrough = r.passthrough;
  h->opened_by = r.opened_by;
  Inode& inode = **n;
  if (r.dir) {
    Result<SharedFd> pfd = PathFd(inode);
    if (!pfd.ok()) return nullptr;
    const int fd = openat((*pfd)->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return nullptr;
    h->fd.store(fd);
    h->dir = std::make_unique<DirStream>();
  } else if (!r.passthrough) {
    Result<int> fd = Reopen(inode, static_cast<int>(r.flags));
    if (!fd.ok()) return nullptr;
    h->fd.store(*fd);
  }
  {
    absl::MutexLock l(&inode.mu);
    if (inode.open == nullptr) inode.open = std::make_unique<OpenState>();
    OpenState& os = *inode.open;
    ++os.handles;
    if (r.passthrough) {
      // The connection kept the backing id the dead server registered.
      if (os.passthrough++ == 0) os.backing_id = r.backing_id;
      if (MayMapForWriting(r.flags)) inode.passthrough_writers.fetch_add(1, std::memory_order_acq_rel);
    } else if (!r.dir && WritesThroughDaemon(false, r.flags)) {
      ++os.daemon_writers;
    }
  }
  HandleShard& s = (*handles_)[fh % kHandleShards];
  absl::MutexLock l(&s.mu);
  s.map.emplace(fh, h);
  handles_revived_.fetch_add(1, std::memory_order_relaxed);
  return h;
}

// ---------------------------------------------------------------------------
// Compaction.

void PassthroughFs::StartCompactor() {
  if (opts_.state == nullptr || compactor_running_.load()) return;
  if (std::optional<std::string> at = TestFault("journal_checkpoint_at")) {
    checkpoint_min_bytes_ = std::strtoull(at->c_str(), nullptr, 10);
  }
  // (The first server only: its successor must take over without dying.)
  crash_in_checkpoint_ = TestFault("crash_in_checkpoint").has_value() &&
                         opts_.state->header().generation.load() == 1;
  crash_mid_append_ = TestFault("crash_mid_append").has_value() && opts_.state->header().generation.load() == 1;
  crash_before_listing_drop_ =
      TestFault("crash_before_listing_drop").has_value() && opts_.state->header().generation.load() == 1;
  compactor_ = std::thread([this] { CompactorLoop(); });
  compactor_running_.store(true);
  NoteJournalGrowth();  // a successor may find the log due already
}

void PassthroughFs::StopCompactor() {
  if (!compactor_.joinable()) return;
  {
    absl::MutexLock l(&compact_mu_);
    compact_stop_ = true;
    compact_cv_.Signal();
  }
  compactor_.join();
}

void PassthroughFs::NoteJournalGrowth() {
  if (!compactor_running_.load(std::memory_order_relaxed) || compact_pending_.load(std::memory_order_relaxed) ||
      !opts_.state->CheckpointDue(checkpoint_min_bytes_) || compact_pending_.exchange(true)) {
    return;
  }
  absl::MutexLock l(&compact_mu_);
  compact_wanted_ = true;
  compact_cv_.Signal();
}

void PassthroughFs::CompactorLoop() {
  for (;;) {
    {
      absl::MutexLock l(&compact_mu_);
      while (!compact_wanted_ && !compact_stop_) compact_cv_.Wait(&compact_mu_);
      if (compact_stop_) return;
      compact_wanted_ = false;
    }
    if (!CompactJournal()) {
      // The memfd cannot grow: the appends that fail say so (JournalFailed);
      // an abandoned checkpoint only repeats what the log holds.
      Log(LogLevel::kWarning, "passthrough: a journal checkpoint could not be written; no more are tried");
      compactor_running_.store(false);
      return;
    }
    compact_pending_.store(false);
    NoteJournalGrowth();  // (grown past the mark again meanwhile)
  }
}

bool PassthroughFs::CompactJournal() {
  static_assert(std::size(HighWaterRecord{}.next_in_shard) == kShards);
  const auto started = std::chrono::steady_clock::now();
  const uint64_t bytes_before = opts_.state->log_bytes();
  std::optional<uint64_t> begin = opts_.state->BeginCheckpoint();
  if (!begin) return false;
  uint64_t nodes = 0, forgotten = 0, handles = 0;
  // First the last server's nodes not revived here (read-only while
  // serving), but those the kernel forgot since (among the forgotten now)
  // and those whose file has a newer id: what follows wins in a replay.
  // One revived from now on is journaled again as it comes back.
  {
    // A copy: Unremember takes recovered_forgotten_mu_ under a shard's lock,
    // which Find takes. One forgotten after the copy is written born here
    // and forgotten later (its dropped record, or the forgotten below).
    absl::flat_hash_set<uint64_t> forgotten_since;
    {
      absl::MutexLock l(&recovered_forgotten_mu_);
      forgotten_since = recovered_forgotten_;
    }
    for (const auto& [id, f] : recovered_nodes_) {
      if (forgotten_since.contains(id) || Find(id) != nullptr || !IsNewestIdOfItsFile(id, f)) continue;
      if (!AppendNode(kNodeBorn, id, f.dev, f.type, f.handle)) return false;
      ++nodes;
    }
  }
  // The nodes the kernel may name, and the forgotten ones kept for file
  // handles given out (LookupSelf). Each shard's under its lock: a node is
  // in the table, or it was journaled after the mark.
  HighWaterRecord marks{};
  for (size_t i = 0; i < kShards; ++i) {
    Shard& s = (*shards_)[i];
    absl::ReaderMutexLock l(&s.mu);
    for (const auto& [id, n] : s.by_id) {
      if (n->handle.empty()) continue;  // pinned: not recoverable anyway
      if (!AppendNode(kNodeBorn, id, n->dev, n->type, n->handle)) return false;
      ++nodes;
    }
    // Oldest first: a replay keeps them in this order for eviction.
    for (const auto& [id, seq] : s.forgotten_order) {
      auto it = s.forgotten.find(id);
      if (it == s.forgotten.end() || it->second.seq != seq) continue;  // revived since
      const ForgottenNode& f = it->second;
      if (!AppendNode(kNodeForgotten, id, f.dev, f.type, f.handle)) return false;
      ++forgotten;
    }
    marks.next_in_shard[i] = s.next;
    if (crash_in_checkpoint_ && i == kShards / 2) {
      Log(LogLevel::kWarning, "test fault crash_in_checkpoint: dying halfway through a journal checkpoint");
      raise(SIGKILL);
    }
  }
  // Open handles: re-checked under their shard's lock when appended, so a
  // release (appended after it leaves the table) always follows. (Those
  // the last server left were all opened again at FinishRecovery.)
  for (size_t i = 0; i < kHandleShards; ++i) {
    HandleShard& s = (*handles_)[i];
    std::vector<std::pair<uint64_t, std::shared_ptr<Handle>>> open;
    {
      absl::ReaderMutexLock l(&s.mu);
      open.assign(s.map.begin(), s.map.end());
    }
    for (const auto& [fh, h] : open) {
      const HandleRecord r = HandleRecordOf(fh, *h);  // takes the inode's lock
      absl::ReaderMutexLock l(&s.mu);
      auto it = s.map.find(fh);
      if (it == s.map.end() || it->second != h) continue;
      if (!opts_.state->Append(kHandleOpened, BytesOf(r))) return false;
      ++handles;
    }
  }
  marks.next_fh = next_fh_.load();
  if (!opts_.state->Append(kHighWater, BytesOf(marks))) return false;
  opts_.state->CommitCheckpoint(*begin);
  Log(LogLevel::kDebug,
      "passthrough: journal checkpoint of %u node(s), %u forgotten and %u handle(s): %u bytes to %u, in %.1f ms",
      nodes, forgotten, handles, bytes_before, opts_.state->log_bytes(),
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
  return true;
}
}  // namespace efuse
