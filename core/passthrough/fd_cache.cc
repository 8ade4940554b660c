// core/passthrough/fd_cache.cc — the bounded O_PATH fd cache.
#include "core/passthrough/fd_cache.h"

#include <unistd.h>

#include <algorithm>
#include <vector>

namespace efuse::passthrough {

OwnedFd::~OwnedFd() {
  if (owned_ && fd_ >= 0) close(fd_);
}

FdCache::FdCache(size_t capacity)
    : capacity_(std::max<size_t>(capacity, kShards)),
      per_shard_(std::max<size_t>(capacity_ / kShards, 1)) {}

SharedFd FdCache::Get(uint64_t key) {
  Shard& s = ShardOf(key);
  absl::MutexLock l(&s.mu);
  auto it = s.index.find(key);
  if (it == s.index.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->second;
}

SharedFd FdCache::Put(uint64_t key, SharedFd fd) {
  Shard& s = ShardOf(key);
  std::vector<SharedFd> evicted;  // closed after the lock is released
  SharedFd result;
  {
    absl::MutexLock l(&s.mu);
    auto it = s.index.find(key);
    if (it != s.index.end()) {
      s.lru.splice(s.lru.begin(), s.lru, it->second);
      result = it->second->second;
      evicted.push_back(std::move(fd));
    } else {
      s.lru.emplace_front(key, fd);
      s.index.emplace(key, s.lru.begin());
      result = std::move(fd);
      while (s.lru.size() > per_shard_) {
        evicted.push_back(std::move(s.lru.back().second));
        s.index.erase(s.lru.back().first);
        s.lru.pop_back();
        evictions_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  return result;
}

void FdCache::Erase(uint64_t key) {
  Shard& s = ShardOf(key);
  SharedFd victim;
  absl::MutexLock l(&s.mu);
  auto it = s.index.find(key);
  if (it == s.index.end()) return;
  victim = std::move(it->second->second);
  s.lru.erase(it->second);
  s.index.erase(it);
  // `victim` is released after the lock (declared before the guard).
}

FdCacheStats FdCache::Stats() const {
  FdCacheStats st;
  for (const Shard& s : shards_) {
    absl::MutexLock l(&s.mu);
    st.size += s.lru.size();
  }
  st.hits = hits_.load(std::memory_order_relaxed);
  st.misses = misses_.load(std::memory_order_relaxed);
  st.evictions = evictions_.load(std::memory_order_relaxed);
  return st;
}

}  // namespace efuse::passthrough
