// core/offload.h — the hot-path offload policy: let the kernel serve what is
// hot instead of asking the daemon again.
//
// Owns: deciding, from the kernel's hot-inode table (core/telemetry.h, filled
// by the BPF programs), which inodes are hot and what the next replies about
// them carry:
//   - hot with GETATTR/STATX: attribute lifetime raised to max_timeout;
//   - a directory hot with LOOKUP: entries found in it get entry and
//     attribute lifetimes max_timeout;
//   - hot with READ: the backend pushes the file into the page cache
//     (FileSystem::StoreInPageCache, FUSE_NOTIFY_STORE) and opens of it are
//     answered with FOPEN_KEEP_CACHE;
//   - hot with OPEN: the backend keeps the file's passthrough backing id
//     between opens (FileSystem::KeepBacking).
// Lifetime raises are dropped at the first change of the inode the daemon
// serves (Changed), and earned again only by new requests after it.
//
// Threading: the Adjust*/Changed calls come from every worker (shared lock,
// and none at all while nothing is hot); the scan runs on the policy's own
// thread, which also makes the backend calls (never under the lock).
#ifndef EFUSE_CORE_OFFLOAD_H_
#define EFUSE_CORE_OFFLOAD_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/filesystem.h"
#include "core/telemetry.h"

namespace efuse {

struct OffloadOptions {
  // Lifetime (seconds) given to hot entries and attributes: the bound.
  double max_timeout = 30.0;
  // Requests of one class that make an inode hot for it (counted by the
  // kernel since the inode's last change seen by the daemon).
  uint32_t hot_requests = 3;
  // How often the kernel's table is read (at most; a big table, less often).
  uint32_t period_ms = 100;
  // Files larger than this are not pushed into the page cache.
  uint64_t max_store_bytes = 256ull << 20;
  // Passthrough files that keep their backing id while closed, at most.
  uint32_t max_kept_backing = 1024;
  // A successor server's policy (a takeover): the kernel still holds the
  // pages its predecessor pushed (the connection is the same). A file the
  // first scan finds hot for reads counts as pushed then, as the
  // predecessor's policy had it; pushed again at once, a hot 64 MiB file
  // cost clients 40-120 ms of stalled calls 0.1-0.25 s after each takeover.
  bool successor = false;
};

class OffloadPolicy {
 public:
  OffloadPolicy(const OffloadOptions& options, Telemetry* telemetry, FileSystem* fs);
  ~OffloadPolicy();

  // The scan thread; Stop() joins it (idempotent).
  void Start();
  void Stop();

  // Reply adjustments, from the dispatcher. `parent`: the directory the
  // entry was found or made in.
  void AdjustEntry(uint64_t parent, Entry* entry);
  // Neither raises attributes the backend marked volatile (attr_volatile:
  // they change with no request, so the backend's lifetime is a bound).
  void AdjustAttr(uint64_t nodeid, bool attr_volatile, double* attr_timeout);
  void AdjustOpen(uint64_t nodeid, OpenReply* reply);
  // A request that changes `nodeid` (its data, attributes or, for a
  // directory, its entries) is being served.
  void Changed(uint64_t nodeid);

  // One pass over the kernel's table (the thread calls it every period_ms;
  // tests may call it directly).
  void Scan();

  void AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const;

  struct Counters {
    std::atomic<uint64_t> attr_raised{0};       // replies with a raised attribute lifetime
    std::atomic<uint64_t> entry_raised{0};      // replies with a raised entry lifetime
    std::atomic<uint64_t> keep_cache_opens{0};  // opens answered with FOPEN_KEEP_CACHE
    std::atomic<uint64_t> stores{0};            // files pushed into the page cache
    std::atomic<uint64_t> stored_bytes{0};
    std::atomic<uint64_t> kept_backing{0};      // files told to keep their backing id
    std::atomic<uint64_t> drops{0};             // raises dropped by a change
    std::atomic<uint64_t> scans{0};
  };
  const Counters& counters() const { return counters_; }

 private:
  enum Flag : uint8_t {
    kAttrHot = 1,
    kLookupHot = 2,
    kCached = 4,       // in the page cache: keep it on open
    kBackingKept = 8,
  };
  struct Node {
    uint8_t flags = 0;
  };
  // What the scan remembers per node id: counts at the last change.
  struct Baseline {
    std::array<uint32_t, EFUSE_HOT_CLASSES> counts{};
    uint64_t stored_at_ns = 0;  // last page-cache push
    uint32_t reads_at_store = 0;
  };

  uint8_t FlagsOf(uint64_t nodeid) const;
  void Loop();
  // Drops what the policy remembers of inodes quiet for long (scan thread).
  void ForgetIdle(uint64_t now);

  const OffloadOptions options_;
  Telemetry* const telemetry_;
  bool first_scan_ = true;  // scan thread
  FileSystem* const fs_;
  Counters counters_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Node> hot_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> changed_ ABSL_GUARDED_BY(mu_);  // since the last scan
  std::atomic<size_t> hot_count_{0};  // hot_.size(): skips the lock when 0
  std::atomic<uint64_t> scan_interval_ms_{0};  // the scan thread's current sleep

  // The scan thread's own state.
  absl::flat_hash_map<uint64_t, Baseline> baselines_;
  absl::flat_hash_map<uint64_t, uint64_t> active_;  // hot node id -> last scan that saw it
  uint64_t last_sweep_ns_ = 0;
  std::vector<HotInode> rows_;
  uint64_t last_scan_ns_ = 0;
  uint32_t kept_backing_ = 0;
  std::string last_error_;

  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace efuse

#endif  // EFUSE_CORE_OFFLOAD_H_
