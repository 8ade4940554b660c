// core/passthrough/dir_prefetch.cc — see dir_prefetch.h.
#include "core/passthrough/dir_prefetch.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <utility>

namespace efuse::passthrough {

namespace {
constexpr size_t kSeenKeys = 4096;
constexpr size_t kBufferSize = 32 * 1024;
// A huge directory is read only this far ahead: the kernel's own listing
// reads the rest.
constexpr size_t kMaxBytesPerDir = 1 << 20;
}  // namespace

DirPrefetcher::DirPrefetcher(size_t threads, size_t max_queued) : max_queued_(max_queued) {
  // The readers take no signal: the session takes them on its own thread
  // (signalfd), and a reader started before it blocked them would meet
  // SIGUSR1's default action (exit). They inherit this mask.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

DirPrefetcher::~DirPrefetcher() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.SignalAll();
  for (std::thread& t : threads_) t.join();
}

void DirPrefetcher::Add(SharedFd parent, std::string_view name, uint64_t key) {
  {
    absl::MutexLock l(&mu_);
    if (stop_ || seen_.contains(key)) return;
    if (queue_.size() >= max_queued_) {
      ++stats_.dropped;
      return;
    }
    seen_.insert(key);
    seen_order_.push_back(key);
    if (seen_order_.size() > kSeenKeys) {
      seen_.erase(seen_order_.front());
      seen_order_.pop_front();
    }
    queue_.push_back(Job{std::move(parent), std::string(name)});
  }
  cv_.Signal();
}

DirPrefetchStats DirPrefetcher::Stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

void DirPrefetcher::Run() {
  auto buf = std::make_unique<char[]>(kBufferSize);
  for (;;) {
    Job job;
    {
      absl::MutexLock l(&mu_);
      while (!stop_ && queue_.empty()) cv_.Wait(&mu_);
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    // O_NOATIME needs the owner or CAP_FOWNER; without it, nothing is read
    // (a walk must not change what the source reports).
    int fd = openat(job.parent->get(), job.name.c_str(),
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
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
