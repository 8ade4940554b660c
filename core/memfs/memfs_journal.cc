// core/memfs/memfs_journal.cc — MemFs in the state region's journal, and its
// rebuilding by a successor server after a crash or an upgrade.
//
// What survives a server: the file contents are in the DataStore's memfd
// (the supervisor holds it); everything else (inodes and their attributes,
// symlink targets and xattrs, directory entries with their cookies, the
// kernel's lookup counts, open handles) is journaled here before the call
// that changed it returns, so before its reply.
//
// Records hold states, not operations: an inode record is the inode's whole
// state, read under its lock at the moment it is appended; an entry record
// is one (directory, cookie) slot and what it names. Replaying keeps the
// last record of each thing, in whatever order unrelated things came, so no
// lock needs to order changes of different inodes in the log. A record is
// appended after the change it records (the state it reads includes the
// change) and while the thing's lock orders it against other changes of
// the thing: inodes under Inode::mu, entries and frees under tree_mu_
// held exclusively, lookups under tree_mu_ (shared for additions:
// deltas, which commute), handles under handles_mu_ (a new name's handle
// under tree_mu_ held exclusively: every release of a handle holds it
// shared at least, the checkpoint's handles exclusively; JournalNewName).
//
// File bytes are written before the inode record that covers them (its
// size), and a truncation is recorded after it is made: a server killed
// between the two has not answered, and the kernel resends the request to
// its successor (core/dispatcher_journal.cc), which makes it again.
//
// Compaction: once the journal has grown past 8 MiB and four times its last
// checkpoint, a checkpoint is written: the id high-water marks, then every
// inode with its lookup count (tied to the requests of the last lookups
// counted) and its entries, 512 inodes per hold of tree_mu_ (exclusive),
// then every handle. Requests go on between the chunks and reads and
// writes during them; a record one writes meanwhile is either before the
// checkpoint's record of the same thing, which then holds its effect, or
// after it (MaybeCheckpoint).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/log.h"
#include "core/memfs/memfs.h"
#include "core/memfs/memfs_internal.h"
#include "core/state_region.h"
#include "core/test_faults.h"

namespace efuse {

namespace {

// memfs's record types (the log holds one backend's records).
enum MemfsRecord : uint16_t {
  kInodeState = 101,      // InodeRecord, target, xattrs (XattrHead, name, value)*
  kEntrySet = 102,        // EntryRecord, name
  kEntryGone = 103,       // EntryRecord (child 0), no name
  kInodeFreed = 104,      // uint64_t id
  kLookupsAdded = 105,    // LookupRecord: a delta
  kLookupsSet = 106,      // LookupRecord: a checkpoint's count
  kHandleOpened = 107,    // HandleRecord
  kHandleReleased = 108,  // uint64_t fh
  kHighWater = 109,       // HighWaterRecord
  // (BatchHead, payload of any other type)*: all or none (a rename's
  // entries; a count and the requests it is tied to; a new name with its
  // inode, directory, count and handle)
  kEntryBatch = 110,
};

struct BatchHead {
  uint16_t type;
  uint16_t reserved;
  uint32_t size;
};

struct Time {
  int64_t sec;
  int64_t nsec;
};

struct XattrHead {
  uint32_t name_size;
  uint32_t value_size;
};

struct EntryRecord {
  uint64_t dir;
  uint64_t cookie;
  uint64_t child;
};

// A request whose intent the dispatcher recorded and whose answer it did
// not (core/state_region.h) died with its server before the reply left:
// the kernel never had what it gave, and resends it. What it added (a
// handle, lookups) is not revived.
struct LookupRecord {
  uint64_t id;
  int64_t count;
  uint64_t unique;  // the request that added them (0: unknown)
};

struct HandleRecord {
  uint64_t fh;
  uint64_t id;
  uint32_t flags;
  uint32_t reserved;
  uint64_t opened_by;
};

struct HighWaterRecord {
  uint64_t next_id;
  uint64_t next_fh;
};

Time ToTime(const timespec& t) { return Time{t.tv_sec, t.tv_nsec}; }
timespec FromTime(const Time& t) { return timespec{static_cast<time_t>(t.sec), static_cast<long>(t.nsec)}; }

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

template <typename T>
std::span<const uint8_t> BytesOf(const T& v) {
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof(v));
}

// One part of a batch record (kEntryBatch).
void PutPart(std::string* batch, uint16_t type, std::string_view bytes) {
  Put(batch, BatchHead{type, 0, static_cast<uint32_t>(bytes.size())});
  *batch += bytes;
}
template <typename T>
  requires std::is_trivially_copyable_v<T>
void PutPart(std::string* batch, uint16_t type, const T& record, std::string_view tail = {}) {
  Put(batch, BatchHead{type, 0, static_cast<uint32_t>(sizeof(record) + tail.size())});
  Put(batch, record);
  *batch += tail;
}

std::span<const uint8_t> BytesOf(const std::string& s) {
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Reads a record's parts in order; false once it runs short.
class RecordReader {
 public:
  explicit RecordReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* out) {
    if (bytes_.size() - at_ < sizeof(T)) return false;
    std::memcpy(out, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  bool GetString(size_t size, std::string* out) {
    if (bytes_.size() - at_ < size) return false;
    out->assign(reinterpret_cast<const char*>(bytes_.data() + at_), size);
    at_ += size;
    return true;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t at_ = 0;
};


}  // namespace

// An inode's state in the journal (kInodeState, then its symlink target
// and its xattrs).
struct MemFs::InodeRecord {
  uint64_t id;
  uint32_t slot;
  uint32_t type;
  uint32_t mode;
  uint32_t uid;
  uint32_t gid;
  uint32_t rdev;
  uint32_t nlink;
  uint32_t xattrs;
  Time atime, mtime, ctime, btime;
  uint64_t size;  // regular files
  uint64_t dir_size;
  uint64_t next_cookie;  // directories
  uint32_t target_size;
  uint32_t reserved;
};

// What replay gathers before the tables are built.
struct MemFs::JournalReplay {
  struct InodeState {
    InodeRecord rec;
    std::string target;
    std::map<std::string, std::string, std::less<>> xattrs;
  };
  struct EntryState {
    std::string name;
    uint64_t child;
  };
  std::map<uint64_t, InodeState> inodes;
  std::map<std::pair<uint64_t, uint64_t>, EntryState> entries;  // (dir, cookie)
  std::map<uint64_t, int64_t> lookups;
  // Of them, added by requests: their uniques (a FORGET's count is not).
  std::map<uint64_t, std::vector<std::pair<uint64_t, int64_t>>> lookups_by_request;
  std::map<uint64_t, HandleRecord> handles;
  uint64_t next_id = 0;
  uint64_t next_fh = 0;
  uint64_t bad_records = 0;

  void Clear() { *this = JournalReplay(); }
  void Apply(uint16_t type, std::span<const uint8_t> payload);
};

void MemFs::JournalReplay::Apply(uint16_t type, std::span<const uint8_t> payload) {
  RecordReader r(payload);
  switch (type) {
    case kInodeState: {
      InodeState s;
      if (!r.Get(&s.rec) || !r.GetString(s.rec.target_size, &s.target)) break;
      bool whole = true;
      for (uint32_t i = 0; i < s.rec.xattrs && whole; ++i) {
        XattrHead h;
        std::string name, value;
        whole = r.Get(&h) && r.GetString(h.name_size, &name) && r.GetString(h.value_size, &value);
        if (whole) s.xattrs.emplace(std::move(name), std::move(value));
      }
      if (!whole) break;
      next_id = std::max(next_id, s.rec.id + 1);
      inodes[s.rec.id] = std::move(s);
      return;
    }
    case kEntrySet: {
      EntryRecord e;
      std::string name;
      if (!r.Get(&e) || !r.GetString(payload.size() - sizeof(e), &name)) break;
      entries[{e.dir, e.cookie}] = EntryState{std::move(name), e.child};
      return;
    }
    case kEntryGone: {
      EntryRecord e;
      if (!r.Get(&e)) break;
      entries.erase({e.dir, e.cookie});
      return;
    }
    case kInodeFreed: {
      uint64_t id;
      if (!r.Get(&id)) break;
      inodes.erase(id);
      lookups.erase(id);
      lookups_by_request.erase(id);
      return;
    }
    case kLookupsAdded:
    case kLookupsSet: {
      LookupRecord l;
      if (!r.Get(&l)) break;
      if (type == kLookupsSet) {
        lookups[l.id] = l.count;
        lookups_by_request.erase(l.id);
      } else {
        lookups[l.id] += l.count;
        if (l.unique != 0) lookups_by_request[l.id].emplace_back(l.unique, l.count);
      }
      return;
    }
    case kHandleOpened: {
      HandleRecord h;
      if (!r.Get(&h)) break;
      handles[h.fh] = h;
      next_fh = std::max(next_fh, h.fh + 1);
      return;
    }
    case kHandleReleased: {
      uint64_t fh;
      if (!r.Get(&fh)) break;
      handles.erase(fh);
      return;
    }
    case kEntryBatch: {
      BatchHead h;
      std::string part;
      while (r.Get(&h)) {
        if (!r.GetString(h.size, &part) || h.type == kEntryBatch) {
          ++bad_records;
          return;
        }
        Apply(h.type, BytesOf(part));
      }
      return;
    }
    case kHighWater: {
      HighWaterRecord h;
      if (!r.Get(&h)) break;
      next_id = std::max(next_id, h.next_id);
      next_fh = std::max(next_fh, h.next_fh);
      return;
    }
    default:
      break;
  }
  ++bad_records;
}

void MemFs::JournalReplayDeleter::operator()(JournalReplay* r) const { delete r; }

MemFs::~MemFs() {
  if (compactor_.joinable()) {
    {
      absl::MutexLock l(&compact_mu_);
      compact_stop_ = true;
      compact_cv_.Signal();
    }
    compactor_.join();
  }
}

void MemFs::JournalAppend(uint16_t type, std::span<const uint8_t> payload) {
  if (!journal_refuses_ && journal_->Append(type, payload)) {
    if (!compact_pending_.load(std::memory_order_relaxed) && !checkpointing_.load(std::memory_order_relaxed) &&
        journal_->CheckpointDue(checkpoint_min_bytes_) && !compact_pending_.exchange(true)) {
      absl::MutexLock l(&compact_mu_);
      compact_wanted_ = true;
      compact_cv_.Signal();
    }
    return;
  }
  journal_failures_.fetch_add(1, std::memory_order_relaxed);
  // A successor would rebuild less than the kernel knows: the supervisor
  // ends the mount instead of starting one.
  journal_->header().recoverable.store(0);
}

void MemFs::JournalInode(const Inode& n) {
  if (journal_ == nullptr) return;
  memfs::ReadLock l(&n.mu);
  JournalInodeLocked(n);
}

void MemFs::JournalInodeLocked(const Inode& n) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (journal_ == nullptr || n.dead) return;
  InodeRecord rec = InodeRecordOf(n);
  if (rec.xattrs == 0 && n.target.empty()) return JournalAppend(kInodeState, BytesOf(rec));
  std::string bytes;
  PutInodeState(n, rec, &bytes);
  JournalAppend(kInodeState, BytesOf(bytes));
}

void MemFs::JournalNewName(const Inode& dir, uint64_t cookie, std::string_view name, const Inode& child,
                           uint64_t unique, const OpenReply* open, uint32_t flags) {
  if (journal_ == nullptr) return;
  unique &= ~abi::kUniqueResend;
  // (Built where the last one was: no allocation on a create's way.)
  thread_local std::string batch;
  batch.clear();
  // The directory's lock before its new child's (increasing node ids).
  memfs::ReadLock dl(&dir.mu);
  memfs::ReadLock cl(&child.mu);
  PutInodePart(child, &batch);
  PutPart(&batch, kEntrySet, EntryRecord{dir.id, cookie, child.id}, name);
  PutInodePart(dir, &batch);
  PutPart(&batch, kLookupsAdded, LookupRecord{child.id, 1, unique});
  if (open != nullptr) PutPart(&batch, kHandleOpened, HandleRecord{open->fh, child.id, flags, 0, unique});
  JournalAppend(kEntryBatch, BytesOf(batch));
}

void MemFs::PutInodePart(const Inode& n, std::string* batch) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  // The head's size once the state is written (what PutInodeState wrote).
  const size_t head = batch->size();
  Put(batch, BatchHead{kInodeState, 0, 0});
  PutInodeState(n, InodeRecordOf(n), batch);
  const uint32_t size = static_cast<uint32_t>(batch->size() - head - sizeof(BatchHead));
  std::memcpy(batch->data() + head + offsetof(BatchHead, size), &size, sizeof(size));
}

MemFs::InodeRecord MemFs::InodeRecordOf(const Inode& n) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  InodeRecord rec{};
  rec.id = n.id;
  rec.slot = n.data.slot();
  rec.type = n.type;
  rec.mode = n.mode;
  rec.uid = n.uid;
  rec.gid = n.gid;
  rec.rdev = n.rdev;
  rec.nlink = n.nlink;
  rec.xattrs = static_cast<uint32_t>(n.xattrs.size());
  rec.atime = ToTime(n.atime);
  rec.mtime = ToTime(n.mtime);
  rec.ctime = ToTime(n.ctime);
  rec.btime = ToTime(n.btime);
  rec.size = n.data.size();
  rec.dir_size = n.dir_size;
  // next_cookie changes under tree_mu_ (exclusive), which every caller
  // that changed it still holds.
  rec.next_cookie = n.dir != nullptr ? n.dir->next_cookie.load(std::memory_order_relaxed) : 0;
  rec.target_size = static_cast<uint32_t>(n.target.size());
  return rec;
}

void MemFs::PutInodeState(const Inode& n, const InodeRecord& rec, std::string* out) const
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  Put(out, rec);
  *out += n.target;
  for (const auto& [name, value] : n.xattrs) {
    Put(out, XattrHead{static_cast<uint32_t>(name.size()), static_cast<uint32_t>(value.size())});
    *out += name;
    *out += value;
  }
}

void MemFs::JournalEntry(const Inode& dir, uint64_t cookie, std::string_view name, const Inode& child) {
  if (journal_ == nullptr) return;
  std::string bytes;
  Put(&bytes, EntryRecord{dir.id, cookie, child.id});
  bytes += name;
  if (entry_batch_ != nullptr) return PutPart(entry_batch_, kEntrySet, bytes);
  JournalAppend(kEntrySet, BytesOf(bytes));
}

void MemFs::JournalEntryGone(const Inode& dir, uint64_t cookie) {
  if (journal_ == nullptr) return;
  const EntryRecord gone{dir.id, cookie, 0};
  if (entry_batch_ != nullptr) return PutPart(entry_batch_, kEntryGone, gone);
  JournalAppend(kEntryGone, BytesOf(gone));
}

MemFs::EntryBatch::EntryBatch(MemFs* fs) : fs_(fs) { fs_->entry_batch_ = &records_; }

void MemFs::EntryBatch::Commit() {
  if (!open_) return;
  open_ = false;
  fs_->entry_batch_ = nullptr;
  if (fs_->journal_ != nullptr && !records_.empty()) fs_->JournalAppend(kEntryBatch, BytesOf(records_));
}

void MemFs::JournalFreed(const Inode& n) {
  if (journal_ == nullptr) return;
  JournalAppend(kInodeFreed, BytesOf(n.id));
}

void MemFs::AddLookups(Inode& n, int64_t delta, uint64_t unique) {
  CountLookups(n, delta, unique);
  if (journal_ != nullptr && delta != 0) {
    JournalAppend(kLookupsAdded, BytesOf(LookupRecord{n.id, delta, unique & ~abi::kUniqueResend}));
  }
}

void MemFs::CountLookups(Inode& n, int64_t delta, uint64_t unique) {
  if (delta >= 0) {
    n.lookups.fetch_add(static_cast<uint64_t>(delta), std::memory_order_relaxed);
  } else {
    n.lookups.fetch_sub(static_cast<uint64_t>(-delta), std::memory_order_relaxed);
  }
  // (Tied to their requests for checkpoints: see unsure_lookups_.)
  if (journal_ != nullptr && delta > 0 && unique != 0) {
    absl::MutexLock l(&unsure_lookups_mu_);
    unsure_lookups_[unsure_next_++ % kUnsureLookupsKept] = UnsureLookup{unique & ~abi::kUniqueResend, n.id, delta};
  }
}

void MemFs::TakeOutLookupsOfResent(uint64_t unique) {
  std::vector<std::pair<uint64_t, int64_t>> counted;
  {
    absl::MutexLock l(&unsure_lookups_mu_);
    for (UnsureLookup& u : unsure_lookups_) {
      if (u.unique != unique) continue;
      counted.emplace_back(u.id, u.delta);
      u = UnsureLookup{};
    }
    if (counted.empty()) return;
  }
  // The kernel never had them (it resends only what was not answered), so
  // it holds none of them: each node still counts at least as many. One
  // left with no lookup, no name and no handle goes.
  memfs::WriteLock tl(&tree_mu_);
  for (auto [id, delta] : counted) {
    if (Inode* n = FindInTree(id); n != nullptr) {
      AddLookups(*n, -std::min<int64_t>(delta, static_cast<int64_t>(n->lookups.load())), unique);
      MaybeFree(n);
    }
  }
}

void MemFs::JournalHandle(uint64_t fh, const Handle& h) {
  if (journal_ == nullptr) return;
  JournalAppend(kHandleOpened, BytesOf(HandleRecord{fh, h.inode->id, h.flags, 0, h.opened_by}));
}

void MemFs::JournalHandleGone(uint64_t fh) {
  if (journal_ == nullptr) return;
  JournalAppend(kHandleReleased, BytesOf(fh));
}

void MemFs::RunCompactor() {
  // Test faults (core/test_faults.h); the crash only in the first server:
  // its successor must take over without dying.
  if (std::optional<std::string> at = TestFault("journal_checkpoint_at")) {
    checkpoint_min_bytes_ = std::strtoull(at->c_str(), nullptr, 10);
  }
  crash_in_checkpoint_ = TestFault("crash_in_checkpoint").has_value() && journal_->header().generation.load() == 1;
  // A successor may find the log due already.
  if (journal_->CheckpointDue(checkpoint_min_bytes_)) MaybeCheckpoint();
  while (true) {
    {
      absl::MutexLock l(&compact_mu_);
      while (!compact_wanted_ && !compact_stop_) compact_cv_.Wait(&compact_mu_);
      if (compact_stop_) return;
      compact_wanted_ = false;
    }
    MaybeCheckpoint();
    compact_pending_.store(false);
  }
}

void MemFs::MaybeCheckpoint() {
  if (journal_ == nullptr || !journal_->CheckpointDue(checkpoint_min_bytes_)) return;
  bool idle = false;
  if (!checkpointing_.compare_exchange_strong(idle, true)) return;
  const auto started = std::chrono::steady_clock::now();
  std::optional<uint64_t> begin;
  std::vector<std::shared_ptr<Inode>> all;
  {
    memfs::WriteLock tl(&tree_mu_);
    begin = journal_->BeginCheckpoint();
    if (begin) {
      {
        memfs::ReadLock l(&table_mu_);
        all.reserve(inodes_.size());
        for (const auto& [id, n] : inodes_) all.push_back(n);
      }
      memfs::ReadLock l(&handles_mu_);
      JournalAppend(kHighWater, BytesOf(HighWaterRecord{next_id_, next_fh_}));
    }
  }
  // The inodes in chunks, the tree lock let go between them: requests go
  // on meanwhile (a whole checkpoint under it stalled them for 30 ms at
  // 50,000 inodes). A record a request writes after the checkpoint began
  // is replayed after it too: before the chunk that writes the same inode
  // as it is then (each under the lock the request changed it under:
  // tree_mu_ for names and lookup counts, the inode's own for the rest),
  // or after it. An inode born meanwhile has every record after the
  // beginning; one freed meanwhile is skipped.
  const size_t chunk = std::max<size_t>(opts_.checkpoint_chunk, 1);
  for (size_t from = 0; begin && from < all.size(); from += chunk) {
    {
      memfs::WriteLock tl(&tree_mu_);
      CheckpointInodes(std::span(all).subspan(from, std::min(chunk, all.size() - from)), from, all.size());
    }
    if (opts_.between_checkpoint_chunks) opts_.between_checkpoint_chunks();
  }
  if (begin) {
    memfs::WriteLock tl(&tree_mu_);
    {
      memfs::ReadLock l(&handles_mu_);
      for (const auto& [fh, h] : handles_) JournalHandle(fh, h);
    }
    if (journal_failures_.load(std::memory_order_relaxed) == 0) journal_->CommitCheckpoint(*begin);
  }
  checkpointing_.store(false);
  Log(LogLevel::kDebug, "memfs journal checkpoint: %u inodes in %.1f ms", all.size(),
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
}

void MemFs::CheckpointInodes(std::span<const std::shared_ptr<Inode>> chunk, size_t at, size_t total) {
  // The last lookups counted stay tied to their requests (a request cut
  // off by a crash has its first count taken out after the takeover). Read
  // with each chunk: lookups counted since the last one are among them, and
  // a resend may have taken its own out.
  std::unordered_map<uint64_t, std::vector<std::pair<uint64_t, int64_t>>> unsure_by_node;
  {
    std::unordered_set<uint64_t> ids;
    for (const std::shared_ptr<Inode>& n : chunk) ids.insert(n->id);
    absl::MutexLock l(&unsure_lookups_mu_);
    for (const UnsureLookup& u : unsure_lookups_) {
      if (u.unique != 0 && ids.contains(u.id)) unsure_by_node[u.id].emplace_back(u.unique, u.delta);
    }
  }
  for (size_t i = 0; i < chunk.size(); ++i) {
    if (crash_in_checkpoint_ && at + i == total / 2) {
      Log(LogLevel::kWarning, "test fault crash_in_checkpoint: dying halfway through a journal checkpoint");
      raise(SIGKILL);
    }
    Inode& n = *chunk[i];
    {
      memfs::ReadLock l(&n.mu);
      if (n.dead) continue;
      JournalInodeLocked(n);
    }
    // The count, even 0: a FORGET journaled since the checkpoint began
    // must not be replayed alone.
    const int64_t count = static_cast<int64_t>(n.lookups.load(std::memory_order_relaxed));
    auto unsure = count == 0 ? unsure_by_node.end() : unsure_by_node.find(n.id);
    if (unsure != unsure_by_node.end()) {
      // The count and the requests tied to part of it, in one record (a
      // kill between them would leave the count without its part). The
      // newest requests first, within the count: FORGETs lowered it for
      // older ones the kernel did have.
      std::sort(unsure->second.begin(), unsure->second.end(), std::greater<>());
      std::string ties;
      int64_t tied = 0;
      for (auto [unique, delta] : unsure->second) {
        if (tied + delta > count) continue;
        tied += delta;
        Put(&ties, BatchHead{kLookupsAdded, 0, sizeof(LookupRecord)});
        Put(&ties, LookupRecord{n.id, delta, unique});
      }
      std::string batch;
      Put(&batch, BatchHead{kLookupsSet, 0, sizeof(LookupRecord)});
      Put(&batch, LookupRecord{n.id, count - tied, 0});
      JournalAppend(kEntryBatch, BytesOf(batch + ties));
    } else {
      JournalAppend(kLookupsSet, BytesOf(LookupRecord{n.id, count, 0}));
    }
    if (n.dir == nullptr) continue;
    for (const auto& [cookie, slot] : n.dir->slots) JournalEntry(n, cookie, slot.name, *slot.inode);
  }
}

void MemFs::FollowJournal() {
  if (!rebuild_pending_) return;
  if (followed_ == nullptr) followed_.reset(new JournalReplay());
  JournalReplay& replay = *followed_;
  followed_to_ = journal_->Replay([&](uint16_t type, std::span<const uint8_t> payload) { replay.Apply(type, payload); },
                                  followed_to_, [&] { replay.Clear(); });
}

void MemFs::Rebuild() {
  FollowJournal();  // the records since the last call, or all of them
  JournalReplay replay = std::move(*followed_);
  followed_.reset();
  memfs::WriteLock tl(&tree_mu_);
  std::unordered_map<uint64_t, std::shared_ptr<Inode>> table;
  uint64_t charged = 0;
  for (auto& [id, s] : replay.inodes) {
    const InodeRecord& rec = s.rec;
    auto n = std::make_shared<Inode>(id, rec.type, &space_, store_.get(),
                                     rec.type == S_IFREG ? rec.slot : Inode::kNoSlot);
    {
      memfs::WriteLock l(&n->mu);
      n->mode = rec.mode;
      n->uid = rec.uid;
      n->gid = rec.gid;
      n->rdev = rec.rdev;
      n->nlink = rec.nlink;
      n->atime = FromTime(rec.atime);
      n->mtime = FromTime(rec.mtime);
      n->ctime = FromTime(rec.ctime);
      n->btime = FromTime(rec.btime);
      n->dir_size = rec.dir_size;
      n->xattrs = std::move(s.xattrs);
      for (const auto& [name, value] : n->xattrs) charged += name.size() + value.size();
      if (rec.type == S_IFREG) {
        store_->MarkUsed(rec.slot);
        n->data.Restore(rec.size);
      }
    }
    n->target = std::move(s.target);
    charged += n->target.size();
    if (rec.type == S_IFDIR) {
      n->dir = std::make_unique<DirData>();
      n->dir->next_cookie.store(std::max<uint64_t>(rec.next_cookie, memfs::kFirstEntryCookie));
      // The kernel may keep listings a dead server gave: every change drops them.
      n->dir->listed_without_handle.store(true);
    }
    table.emplace(id, std::move(n));
  }
  space_.Charge(charged);
  auto find = [&](uint64_t id) -> Inode* {
    auto it = table.find(id);
    return it == table.end() ? nullptr : it->second.get();
  };
  Inode* root = find(abi::kRootId);
  if (root == nullptr || root->dir == nullptr) {
    Log(LogLevel::kError, "memfs journal: no root directory; serving an empty file system");
    return;
  }
  root->dir->parent = root;
  uint64_t entries = 0;
  // Link counts and directory sizes follow from the entries (a record of
  // a count may lag the entries it counts by one crash).
  std::unordered_map<Inode*, uint32_t> names, subdirs, entries_in;
  for (auto& [key, e] : replay.entries) {
    Inode* dir = find(key.first);
    Inode* child = find(e.child);
    if (dir == nullptr || dir->dir == nullptr || child == nullptr) {
      ++replay.bad_records;
      continue;
    }
    ++names[child];
    ++entries_in[dir];
    if (child->dir != nullptr) ++subdirs[dir];
    auto it = dir->dir->slots.emplace_hint(dir->dir->slots.end(), key.second, DirData::Slot{std::move(e.name), child});
    dir->dir->by_name.emplace(it->second.name, it);
    dir->dir->next_cookie.store(std::max<uint64_t>(dir->dir->next_cookie.load(), key.second + 1));
    if (child->dir != nullptr) child->dir->parent = dir;
    ++entries;
  }
  for (auto& [id, n] : table) {
    Inode* i = n.get();
    memfs::WriteLock l(&i->mu);
    if (i->dir != nullptr) {
      const bool named = i == root || names[i] != 0;
      i->nlink = named ? 2 + subdirs[i] : 0;
      i->dir_size = (2 + entries_in[i]) * memfs::kDirentSize;
    } else {
      i->nlink = names[i];
    }
  }
  const StateRegion::Recorded recorded = journal_->RecordedRequests();
  auto never_answered = [&recorded](uint64_t unique) { return recorded.NeverAnswered(unique); };
  std::map<uint64_t, std::map<uint64_t, int64_t>> unsure;  // unique -> node id -> count
  for (auto [id, count] : replay.lookups) {
    for (const auto& [unique, delta] : replay.lookups_by_request[id]) {
      if (unique != 0 && !recorded.intents.contains(unique)) {
        // A LOOKUP's: kept; its resend, if one comes, takes it out.
        unsure[unique][id] += delta;
        continue;
      }
      if (!never_answered(unique)) continue;
      count -= delta;
      // Journaled under the same request: a later successor that finds it
      // still unanswered takes both out (no second subtraction), and one
      // that finds it answered (its resend added again) keeps both.
      JournalAppend(kLookupsAdded, BytesOf(LookupRecord{id, -delta, unique}));
    }
    if (Inode* n = find(id); n != nullptr && count > 0) n->lookups.store(static_cast<uint64_t>(count));
  }
  {
    // Uniques grow: the last ones are the requests most recently made,
    // kept, and put in the ring last (the oldest go first).
    std::vector<UnsureLookup> kept;
    for (auto it = unsure.rbegin(); it != unsure.rend() && kept.size() < kUnsureLookupsKept; ++it) {
      for (auto [id, delta] : it->second) {
        if (delta > 0 && find(id) != nullptr && kept.size() < kUnsureLookupsKept) {
          kept.push_back(UnsureLookup{it->first, id, delta});
        }
      }
    }
    absl::MutexLock l(&unsure_lookups_mu_);
    unsure_lookups_.assign(kUnsureLookupsKept, UnsureLookup{});
    unsure_next_ = 0;
    for (auto it = kept.rbegin(); it != kept.rend(); ++it) unsure_lookups_[unsure_next_++] = *it;
  }
  {
    memfs::WriteLock l(&handles_mu_);
    handles_.clear();
    for (const auto& [fh, h] : replay.handles) {
      auto it = table.find(h.id);
      if (it == table.end() || never_answered(h.opened_by)) {
        // Released in the journal too: a later successor must not revive it.
        if (it == table.end()) ++replay.bad_records;
        JournalHandleGone(fh);
        continue;
      }
      it->second->opens.fetch_add(1);
      if ((h.flags & O_ACCMODE) != O_RDONLY) it->second->writers.fetch_add(1);
      handles_.emplace(fh, Handle{it->second, h.flags, h.opened_by});
    }
    next_fh_ = std::max(next_fh_, replay.next_fh);
  }
  next_id_ = std::max(next_id_, replay.next_id);
  {
    memfs::WriteLock l(&table_mu_);
    inodes_ = std::move(table);
    root_ = root;
  }
  // A file a dead server had given its last name and lookup up (and not
  // yet freed) goes now.
  std::vector<Inode*> unreferenced;
  {
    memfs::ReadLock l(&table_mu_);
    for (const auto& [id, n] : inodes_) unreferenced.push_back(n.get());
  }
  // (Slots first: a freed file gives its slot back, once.)
  store_->FreeUnused();
  for (Inode* n : unreferenced) MaybeFree(n);
  if (replay.bad_records != 0) {
    Log(LogLevel::kWarning, "memfs journal: %u records did not fit the file system and were left out",
        replay.bad_records);
  }
  Log(LogLevel::kInfo, "memfs: took over %u inode(s), %u entries and %u open handle(s) from the journal (%u bytes of "
      "data in the store)",
      replay.inodes.size(), entries, replay.handles.size(), space_.used());
}

}  // namespace efuse
