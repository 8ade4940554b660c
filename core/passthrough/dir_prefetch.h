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
// walk queues nothing. Never read ahead: mount points and automount triggers
// (nothing is mounted, no other file system is touched), symlinks.
//
// Also stat-ahead: while a listing that carries attributes is answered
// (`ls -l`), the files still ahead in its chunk are looked up by a reader on
// another CPU, so their inodes come off the disk while the daemon works on
// the first ones; the daemon then finds them in the inode cache.
//
// Thread-safety: AddChunk and Stats may be called from any thread; the
// queue's mutex is a leaf.
#ifndef EFUSE_CORE_PASSTHROUGH_DIR_PREFETCH_H_
#define EFUSE_CORE_PASSTHROUGH_DIR_PREFETCH_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace efuse::passthrough {

struct DirPrefetchStats {
  uint64_t queued = 0;   // directories queued
  uint64_t read = 0;     // directories read ahead
  uint64_t dropped = 0;  // not queued: the queue or the parents held were full
  uint64_t stat_chunks = 0;  // chunks of a listing queued for stat-ahead
  uint64_t statted = 0;      // names looked up ahead
};

class DirPrefetcher {
 public:
  // `threads` readers; at most `max_queued` directories wait. Without
  // threads (they could not start) nothing is ever queued.
  DirPrefetcher(size_t threads, size_t max_queued);
  ~DirPrefetcher();  // drops what waits, joins the readers
  DirPrefetcher(const DirPrefetcher&) = delete;
  DirPrefetcher& operator=(const DirPrefetcher&) = delete;

  // The subdirectories in getdents64 records `buf` of the directory open as
  // `dir_fd` on device `dev`: each queued unless queued among the last few
  // thousand. One dup of `dir_fd` is held while any of them waits.
  void AddChunk(int dir_fd, uint64_t dev, const char* buf, size_t len);
  // The names in getdents64 records `buf` of the directory open as `dir_fd`,
  // looked up (statx, nothing changed) by a reader ahead of the caller. One
  // dup of `dir_fd` is held until done; dropped when too many are held.
  void StatAhead(int dir_fd, const char* buf, size_t len);
  DirPrefetchStats Stats() const;

 private:
  struct Parent;  // a dup of a listed directory's fd, shared by its jobs
  struct Job {
    std::shared_ptr<Parent> parent;
    std::string name;
  };
  struct StatJob {
    std::shared_ptr<Parent> dir;
    std::string names;  // NUL-terminated, one after another
  };
  std::shared_ptr<Parent> HoldParent(int dir_fd);
  void StatNames(const StatJob& job);
  void Run();

  const size_t max_queued_;
  // Parents held by queued or running jobs: each is an open fd, so few.
  std::atomic<int> parents_held_{0};
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  // Served first: the listing they are for is being answered now.
  std::deque<StatJob> stat_queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Recently queued (dev, ino), oldest first: a directory listed again soon
  // (its parent re-read) is not read twice.
  absl::flat_hash_set<std::pair<uint64_t, uint64_t>> seen_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<uint64_t, uint64_t>> seen_order_ ABSL_GUARDED_BY(mu_);
  DirPrefetchStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace efuse::passthrough

#endif  // EFUSE_CORE_PASSTHROUGH_DIR_PREFETCH_H_
