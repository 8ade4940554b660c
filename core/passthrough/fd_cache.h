// core/passthrough/fd_cache.h — a bounded cache of O_PATH descriptors.
//
// Owns: FdCache, which maps a node id to an open O_PATH fd of its source
// inode, keeps at most `capacity` of them (least recently used go first), and
// SharedFd, the reference a caller holds while it uses one. The kernel may
// remember far more inodes than RLIMIT_NOFILE allows open fds (a 1,000,000
// file tree against a limit of 20,000), so inodes keep a file handle and
// borrow an fd from here; a miss reopens by handle.
//
// An evicted fd is closed when its last SharedFd goes, never under a user, so
// in-flight calls are safe; the number of open fds is at most capacity plus
// the calls in flight.
//
// Thread-safety: thread-safe. 16 shards, each under its own mutex (no global
// lock on the request path); no syscall is made while a shard lock is held.
#ifndef EFUSE_CORE_PASSTHROUGH_FD_CACHE_H_
#define EFUSE_CORE_PASSTHROUGH_FD_CACHE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace efuse::passthrough {

// An fd that closes itself when the last reference goes (unless borrowed).
class OwnedFd {
 public:
  explicit OwnedFd(int fd, bool owned = true) : fd_(fd), owned_(owned) {}
  ~OwnedFd();
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
  const bool owned_;
};
using SharedFd = std::shared_ptr<const OwnedFd>;

inline SharedFd MakeSharedFd(int fd, bool owned = true) {
  return std::make_shared<const OwnedFd>(fd, owned);
}

struct FdCacheStats {
  uint64_t size = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
};

class FdCache {
 public:
  static constexpr size_t kShards = 16;

  explicit FdCache(size_t capacity);
  FdCache(const FdCache&) = delete;
  FdCache& operator=(const FdCache&) = delete;

  // The cached fd of `key`, or null (counted as a miss).
  SharedFd Get(uint64_t key);
  // Caches `fd` for `key` and returns what is cached now: if another thread
  // won the race, its fd (and `fd` is dropped). May evict.
  SharedFd Put(uint64_t key, SharedFd fd);
  void Erase(uint64_t key);

  size_t capacity() const { return capacity_; }
  FdCacheStats Stats() const;

 private:
  using Lru = std::list<std::pair<uint64_t, SharedFd>>;
  struct Shard {
    mutable absl::Mutex mu;
    Lru lru ABSL_GUARDED_BY(mu);  // front: most recently used
    absl::flat_hash_map<uint64_t, Lru::iterator> index ABSL_GUARDED_BY(mu);
  };
  Shard& ShardOf(uint64_t key) { return shards_[(key * 0x9E3779B97F4A7C15ULL) >> 60]; }

  const size_t capacity_;
  const size_t per_shard_;
  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace efuse::passthrough

#endif  // EFUSE_CORE_PASSTHROUGH_FD_CACHE_H_
