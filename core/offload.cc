#include "core/offload.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/clock.h"
#include "core/log.h"
#include "proto/abi.h"

namespace efuse {
namespace {

constexpr uint64_t kSecond = 1000000000ull;
// The scan thread sleeps at least this many times its last scan's CPU time.
constexpr uint64_t kScanCpuInverseShare = 50;
// Rows are read from a little before the last scan: a request that ended
// while the last scan ran must not be missed.
constexpr uint64_t kScanOverlapNs = kSecond;
// A page-cache push is repeated (pages evicted, or invalidated by an open
// that raced with the first push) at most this often.
constexpr uint64_t kRestoreIntervalNs = 5 * kSecond;
// How often hot inodes that went quiet are forgotten.
constexpr uint64_t kSweepIntervalNs = 10 * kSecond;

}  // namespace

OffloadPolicy::OffloadPolicy(const OffloadOptions& options, Telemetry* telemetry, FileSystem* fs)
    : options_(options), telemetry_(telemetry), fs_(fs) {}

OffloadPolicy::~OffloadPolicy() { Stop(); }

void OffloadPolicy::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void OffloadPolicy::Stop() {
  if (!thread_.joinable()) return;
  stop_.Notify();
  thread_.join();
}

void OffloadPolicy::Loop() {
  const uint64_t period_ns = uint64_t{options_.period_ms} * 1000000;
  uint64_t wait_ns = period_ns;
  while (!stop_.WaitForNotificationWithTimeout(absl::Nanoseconds(wait_ns))) {
    const uint64_t cpu0 = ThreadCpuNs();
    Scan();
    // Reading the kernel's table costs about 0.3 us a row: a big table is
    // read less often, so that scanning stays under 2% of one CPU.
    wait_ns = std::max(period_ns, (ThreadCpuNs() - cpu0) * kScanCpuInverseShare);
    scan_interval_ms_.store(wait_ns / 1000000, std::memory_order_relaxed);
  }
}

uint8_t OffloadPolicy::FlagsOf(uint64_t nodeid) const {
  if (hot_count_.load(std::memory_order_relaxed) == 0) return 0;
  absl::ReaderMutexLock l(&mu_);
  auto it = hot_.find(nodeid);
  return it == hot_.end() ? 0 : it->second.flags;
}

void OffloadPolicy::AdjustEntry(uint64_t parent, Entry* entry) {
  if (entry->nodeid == 0 || hot_count_.load(std::memory_order_relaxed) == 0) return;
  // A directory looked up often: its entries, and the attributes that come
  // with them (else every next stat of an entry is a GETATTR instead).
  const bool hot_dir = (FlagsOf(parent) & kLookupHot) != 0;
  if (hot_dir && entry->entry_timeout < options_.max_timeout) {
    entry->entry_timeout = options_.max_timeout;
    counters_.entry_raised.fetch_add(1, std::memory_order_relaxed);
  }
  if ((hot_dir || (FlagsOf(entry->nodeid) & kAttrHot) != 0) && !entry->attr_volatile &&
      entry->attr_timeout < options_.max_timeout) {
    entry->attr_timeout = options_.max_timeout;
    counters_.attr_raised.fetch_add(1, std::memory_order_relaxed);
  }
}

void OffloadPolicy::AdjustAttr(uint64_t nodeid, bool attr_volatile, double* attr_timeout) {
  if (!attr_volatile && (FlagsOf(nodeid) & kAttrHot) != 0 && *attr_timeout < options_.max_timeout) {
    *attr_timeout = options_.max_timeout;
    counters_.attr_raised.fetch_add(1, std::memory_order_relaxed);
  }
}

void OffloadPolicy::AdjustOpen(uint64_t nodeid, OpenReply* reply) {
  // Direct I/O and passthrough opens do not use the page cache.
  if ((reply->open_flags & (abi::kFopenDirectIo | abi::kFopenPassthrough)) != 0) return;
  if ((FlagsOf(nodeid) & kCached) != 0) {
    reply->open_flags |= abi::kFopenKeepCache;
    counters_.keep_cache_opens.fetch_add(1, std::memory_order_relaxed);
  }
}

void OffloadPolicy::Changed(uint64_t nodeid) {
  if ((FlagsOf(nodeid) & (kAttrHot | kLookupHot)) == 0) return;
  absl::MutexLock l(&mu_);
  auto it = hot_.find(nodeid);
  if (it == hot_.end() || (it->second.flags & (kAttrHot | kLookupHot)) == 0) return;
  it->second.flags &= static_cast<uint8_t>(~(kAttrHot | kLookupHot));
  if (it->second.flags == 0) {
    hot_.erase(it);
    hot_count_.store(hot_.size(), std::memory_order_relaxed);
  }
  changed_.push_back(nodeid);
  counters_.drops.fetch_add(1, std::memory_order_relaxed);
}

void OffloadPolicy::Scan() {
  counters_.scans.fetch_add(1, std::memory_order_relaxed);
  const uint64_t now = MonotonicNs();
  const uint64_t since = last_scan_ns_ > kScanOverlapNs ? last_scan_ns_ - kScanOverlapNs : 0;
  absl::Status s = telemetry_->ReadHotInodes(since, &rows_);
  if (!s.ok()) {
    std::string error(s.message());
    if (error != last_error_) Log(LogLevel::kWarning, "offload: reading the hot-inode table: %s", error);
    last_error_ = error;
    return;
  }
  last_scan_ns_ = now;
  std::vector<uint64_t> changed;
  {
    absl::MutexLock l(&mu_);
    changed.swap(changed_);
  }
  // A change restarts the count: what was asked before it made the old
  // value hot, not the new one.
  if (!changed.empty()) {
    absl::flat_hash_map<uint64_t, const HotInode*> by_id;
    by_id.reserve(rows_.size());
    for (const HotInode& row : rows_) by_id[row.nodeid] = &row;
    for (uint64_t id : changed) {
      auto it = by_id.find(id);
      if (it != by_id.end()) baselines_[id].counts = it->second->counts;
    }
  }

  struct Decision {
    uint64_t nodeid;
    uint8_t add;
  };
  std::vector<Decision> decisions;
  std::vector<uint64_t> to_store, to_keep_backing;
  for (const HotInode& row : rows_) {
    if (auto a = active_.find(row.nodeid); a != active_.end()) a->second = now;
    if (first_scan_ && options_.successor && row.counts[EFUSE_HOT_READ] >= options_.hot_requests &&
        !baselines_.contains(row.nodeid)) {
      // (OffloadOptions::successor.) Pushed again only when a push made now
      // would be due again.
      Baseline& b = baselines_[row.nodeid];
      b.stored_at_ns = now;
      b.reads_at_store = row.counts[EFUSE_HOT_READ];
    }
    // Most rows never need a baseline (no change seen, never stored): none
    // is kept for them, so the map stays as small as the hot set.
    static const Baseline kNone;
    auto bit = baselines_.find(row.nodeid);
    const Baseline& base = bit != baselines_.end() ? bit->second : kNone;
    std::array<uint32_t, EFUSE_HOT_CLASSES> counts{};
    for (int c = 0; c < EFUSE_HOT_CLASSES; ++c) {
      // Smaller than the baseline: the kernel evicted and re-created the row.
      counts[c] = row.counts[c] >= base.counts[c] ? row.counts[c] - base.counts[c] : row.counts[c];
    }
    uint8_t add = 0;
    if (counts[EFUSE_HOT_GETATTR] >= options_.hot_requests) add |= kAttrHot;
    if (counts[EFUSE_HOT_LOOKUP] >= options_.hot_requests) add |= kLookupHot;
    const uint32_t reads_since_store = row.counts[EFUSE_HOT_READ] - std::min(row.counts[EFUSE_HOT_READ], base.reads_at_store);
    if (counts[EFUSE_HOT_READ] >= options_.hot_requests &&
        (base.stored_at_ns == 0 ||
         (now - base.stored_at_ns >= kRestoreIntervalNs && reads_since_store >= options_.hot_requests))) {
      to_store.push_back(row.nodeid);
      Baseline& b = baselines_[row.nodeid];
      b.stored_at_ns = now;
      b.reads_at_store = row.counts[EFUSE_HOT_READ];
    }
    if (counts[EFUSE_HOT_OPEN] >= options_.hot_requests) to_keep_backing.push_back(row.nodeid);
    if (add != 0) decisions.push_back({row.nodeid, add});
  }

  // Cached before the push: an open that races with it must keep the pages.
  auto set_flags = [&](uint64_t id, uint8_t add) {
    active_[id] = now;
    absl::MutexLock l(&mu_);
    hot_[id].flags |= add;
    hot_count_.store(hot_.size(), std::memory_order_relaxed);
  };
  for (const Decision& d : decisions) set_flags(d.nodeid, d.add);
  for (uint64_t id : to_store) {
    set_flags(id, kCached);
    Result<uint64_t> stored = fs_->StoreInPageCache(id, options_.max_store_bytes);
    if (stored.ok()) {
      counters_.stores.fetch_add(1, std::memory_order_relaxed);
      counters_.stored_bytes.fetch_add(*stored, std::memory_order_relaxed);
      continue;
    }
    // Not for this backend (ENOSYS) or this file (too big, gone): its opens
    // keep dropping the cache as before.
    absl::MutexLock l(&mu_);
    auto it = hot_.find(id);
    if (it != hot_.end()) it->second.flags &= static_cast<uint8_t>(~kCached);
  }
  first_scan_ = false;
  if (now - last_sweep_ns_ > kSweepIntervalNs) {
    ForgetIdle(now);
    last_sweep_ns_ = now;
  }
  for (uint64_t id : to_keep_backing) {
    if ((FlagsOf(id) & kBackingKept) != 0 || kept_backing_ >= options_.max_kept_backing) continue;
    if (fs_->KeepBacking(id)) {
      ++kept_backing_;
      counters_.kept_backing.fetch_add(1, std::memory_order_relaxed);
      set_flags(id, kBackingKept);
    }
  }
}

void OffloadPolicy::ForgetIdle(uint64_t now) {
  // An inode the kernel has served alone for this long has outlived every
  // lifetime it was given: its next request earns the raise again. Kept
  // backing ids stay (bounded by max_kept_backing; the backend drops them
  // with the inode).
  const uint64_t idle_ns = static_cast<uint64_t>(std::max(60.0, 2 * options_.max_timeout) * 1e9);
  std::vector<uint64_t> idle;
  for (const auto& [id, seen] : active_)
    if (now - seen > idle_ns) idle.push_back(id);
  if (idle.empty()) return;
  absl::MutexLock l(&mu_);
  for (uint64_t id : idle) {
    auto it = hot_.find(id);
    if (it != hot_.end() && (it->second.flags & kBackingKept) != 0) continue;
    if (it != hot_.end()) hot_.erase(it);
    active_.erase(id);
    baselines_.erase(id);
  }
  hot_count_.store(hot_.size(), std::memory_order_relaxed);
}

void OffloadPolicy::AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const {
  lines->emplace_back("offload", absl::StrCat("on (hot after ", options_.hot_requests,
                                              " requests; lifetimes raised to ", options_.max_timeout, " s)"));
  lines->emplace_back("offload_hot_inodes", absl::StrCat(hot_count_.load(std::memory_order_relaxed)));
  lines->emplace_back("offload_attr_raised", absl::StrCat(counters_.attr_raised.load()));
  lines->emplace_back("offload_entry_raised", absl::StrCat(counters_.entry_raised.load()));
  lines->emplace_back("offload_keep_cache_opens", absl::StrCat(counters_.keep_cache_opens.load()));
  lines->emplace_back("offload_page_cache_stores", absl::StrCat(counters_.stores.load()));
  lines->emplace_back("offload_page_cache_bytes", absl::StrCat(counters_.stored_bytes.load()));
  lines->emplace_back("offload_kept_backing", absl::StrCat(counters_.kept_backing.load()));
  lines->emplace_back("offload_drops", absl::StrCat(counters_.drops.load()));
  lines->emplace_back("offload_scans", absl::StrCat(counters_.scans.load()));
  lines->emplace_back("offload_scan_interval_ms",
                      absl::StrCat(scan_interval_ms_.load(std::memory_order_relaxed)));
}

}  // namespace efuse
