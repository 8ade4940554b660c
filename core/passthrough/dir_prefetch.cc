// core/passthrough/dir_prefetch.cc — see dir_prefetch.h.
#include "core/passthrough/dir_prefetch.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <system_error>

#include "core/filesystem.h"
#include "core/passthrough/source_dirent.h"

namespace efuse::passthrough {

namespace {
constexpr size_t kSeenKeys = 4096;
constexpr int kMaxParentsHeld = 16;
constexpr size_t kBufferSize = 32 * 1024;
// A huge directory is read only this far ahead: the kernel's own listing
// reads the rest.
constexpr size_t kMaxBytesPerDir = 1 << 20;

}  // namespace

struct DirPrefetcher::Parent {
  Parent(int f, std::atomic<int>* h) : fd(f), held(h) {}
  ~Parent() {
    close(fd);
    held->fetch_sub(1, std::memory_order_relaxed);
  }
  const int fd;
  std::atomic<int>* const held;
};

DirPrefetcher::DirPrefetcher(size_t threads, size_t max_queued) : max_queued_(max_queued) {
  // The readers take no signal: the session takes them on its own thread
  // (signalfd), and a reader started before it blocked them would meet
  // SIGUSR1's default action (exit). They inherit this mask.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  try {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  } catch (const std::system_error&) {
    // No more threads (RLIMIT_NPROC): run with those that started, if any.
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

DirPrefetcher::~DirPrefetcher() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
    queue_.clear();
    stat_queue_.clear();
  }
  cv_.SignalAll();
  for (std::thread& t : threads_) t.join();
}

void DirPrefetcher::AddChunk(int dir_fd, uint64_t dev, const char* buf, size_t len) {
  if (threads_.empty()) return;
  std::shared_ptr<Parent> parent;
  bool added = false;
  {
    absl::MutexLock l(&mu_);
    if (stop_) return;
    SourceDirent rec;
    for (size_t pos = 0; ReadSourceDirent(buf, len, pos, &rec); pos += rec.reclen) {
      if (rec.type != DT_DIR || IsDotOrDotDot(rec.name)) continue;
      const auto key = std::make_pair(dev, rec.ino);
      if (seen_.contains(key)) continue;
      if (queue_.size() >= max_queued_) {
        ++stats_.dropped;
        continue;
      }
      if (parent == nullptr) {
        parent = HoldParent(dir_fd);
        if (parent == nullptr) {
          ++stats_.dropped;
          continue;
        }
      }
      seen_.insert(key);
      seen_order_.push_back(key);
      if (seen_order_.size() > kSeenKeys) {
        seen_.erase(seen_order_.front());
        seen_order_.pop_front();
      }
      queue_.push_back(Job{parent, std::string(rec.name)});
      ++stats_.queued;
      added = true;
    }
  }
  if (added) cv_.SignalAll();
}

std::shared_ptr<DirPrefetcher::Parent> DirPrefetcher::HoldParent(int dir_fd) {
  // Each held parent is an open fd; past the cap the walk goes unaided.
  if (parents_held_.load(std::memory_order_relaxed) >= kMaxParentsHeld) return nullptr;
  const int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  parents_held_.fetch_add(1, std::memory_order_relaxed);
  return std::make_shared<Parent>(fd, &parents_held_);
}

void DirPrefetcher::StatAhead(int dir_fd, const char* buf, size_t len) {
  if (threads_.empty()) return;
  StatJob job;
  SourceDirent rec;
  for (size_t pos = 0; ReadSourceDirent(buf, len, pos, &rec); pos += rec.reclen) {
    if (IsDotOrDotDot(rec.name)) continue;
    job.names.append(rec.name);
    job.names.push_back('\0');
  }
  if (job.names.empty()) return;
  {
    absl::MutexLock l(&mu_);
    if (stop_) return;
    job.dir = HoldParent(dir_fd);
    if (job.dir == nullptr) {
      ++stats_.dropped;
      return;
    }
    stat_queue_.push_back(std::move(job));
    ++stats_.stat_chunks;
  }
  cv_.Signal();
}

void DirPrefetcher::StatNames(const StatJob& job) {
  // Any lookup reads the inode in; the mask asks for nothing more. No
  // automount is triggered and no link followed.
  uint64_t n = 0;
  struct statx st;
  for (size_t pos = 0; pos < job.names.size();) {
    const char* name = job.names.c_str() + pos;
    statx(job.dir->fd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_TYPE, &st);
    pos += std::strlen(name) + 1;
    ++n;
  }
  absl::MutexLock l(&mu_);
  stats_.statted += n;
}

DirPrefetchStats DirPrefetcher::Stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

void DirPrefetcher::Run() {
  // Work ahead is worth only a CPU nobody else wants: woken by a worker, a
  // reader of normal priority would run on the worker's CPU, in front of
  // the client waiting there for the listing. SCHED_IDLE yields to every
  // other thread and is moved to an idle CPU.
  struct sched_param idle {};
  pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
  auto buf = std::make_unique<char[]>(kBufferSize);
  for (;;) {
    Job job;
    {
      StatJob stat_job;
      {
        absl::MutexLock l(&mu_);
        while (!stop_ && queue_.empty() && stat_queue_.empty()) cv_.Wait(&mu_);
        if (stop_) return;
        if (!stat_queue_.empty()) {
          stat_job = std::move(stat_queue_.front());
          stat_queue_.pop_front();
        } else {
          job = std::move(queue_.front());
          queue_.pop_front();
        }
      }
      if (stat_job.dir != nullptr) {
        StatNames(stat_job);
        continue;
      }
    }
    // Not a mount point or an automount trigger (statx triggers nothing with
    // AT_NO_AUTOMOUNT); openat2 then refuses to cross into a mount or follow
    // a link that appeared since. O_NOATIME needs the owner or CAP_FOWNER;
    // without it nothing is read: a walk must not change what the source
    // reports.
    struct statx st;
    if (statx(job.parent->fd, job.name.c_str(), AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT,
              STATX_TYPE, &st) != 0 ||
        !S_ISDIR(st.stx_mode) ||
        (st.stx_attributes & (STATX_ATTR_AUTOMOUNT | STATX_ATTR_MOUNT_ROOT)) != 0) {
      continue;
    }
    struct open_how how {};
    how.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC;
    how.resolve = RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS;
    const int fd =
        static_cast<int>(syscall(SYS_openat2, job.parent->fd, job.name.c_str(), &how, sizeof(how)));
    job.parent.reset();
    if (fd < 0) continue;
    size_t total = 0;
    while (total < kMaxBytesPerDir) {
      long n = syscall(SYS_getdents64, fd, buf.get(), kBufferSize);
      if (n <= 0) break;
      total += static_cast<size_t>(n);
    }
    close(fd);
    absl::MutexLock l(&mu_);
    ++stats_.read;
  }
}

}  // namespace efuse::passthrough
