// core/passthrough/dir_prefetch.h — reading source directories ahead of the
// kernel (readdir-ahead).
//
// Owns: DirPrefetcher, a bounded queue of subdirectories a listing just
// showed, and the threads that read each one's entries into a scratch buffer
// (getdents64; opened O_NOATIME, so the source's access times do not move
// for directories nobody listed). The kernel walks a tree one directory at a
// time and each cold directory costs the source a few disk reads in turn;
// read ahead, the disk reads overlap and are done when the kernel opens the
// directory. Listings the kernel has cached never reach the daemon, so a warm
// walk queues nothing.
//
// Thread-safety: Add and Stats may be called from any thread.
#ifndef EFUSE_CORE_PASSTHROUGH_DIR_PREFETCH_H_
#define EFUSE_CORE_PASSTHROUGH_DIR_PREFETCH_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "core/passthrough/fd_cache.h"

namespace efuse::passthrough {

struct DirPrefetchStats {
  uint64_t read = 0;     // directories read ahead
  uint64_t dropped = 0;  // not queued: the queue was full
};

class DirPrefetcher {
 public:
  // `threads` readers; at most `max_queued` directories wait.
  DirPrefetcher(size_t threads, size_t max_queued);
  ~DirPrefetcher();  // drops what waits, joins the readers
  DirPrefetcher(const DirPrefetcher&) = delete;
  DirPrefetcher& operator=(const DirPrefetcher&) = delete;

  // Queues directory `name` of `parent`, known as `key` (its inode number,
  // as listed) unless it was queued among the last few thousand.
  void Add(SharedFd parent, std::string_view name, uint64_t key);
  DirPrefetchStats Stats() const;

 private:
  struct Job {
    SharedFd parent;
    std::string name;
  };
  void Run();

  const size_t max_queued_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Recently queued keys, oldest first: a directory listed again soon (its
  // parent re-read) is not read twice.
  absl::flat_hash_set<uint64_t> seen_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> seen_order_ ABSL_GUARDED_BY(mu_);
  DirPrefetchStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace efuse::passthrough

#endif  // EFUSE_CORE_PASSTHROUGH_DIR_PREFETCH_H_
