#include "core/sync_transport.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace efuse {

int FdReplySender::Send(proto::Reply& reply) {
  std::span<const iovec> iov = reply.Iov();
  for (;;) {
    if (writev(fd_, iov.data(), static_cast<int>(iov.size())) >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

namespace {
// Set once before any worker exists; handed out round-robin after.
std::vector<int>& InheritedClones() {
  static std::vector<int> fds;
  return fds;
}
std::atomic<size_t> next_inherited_clone{0};
}  // namespace

void UseInheritedClones(std::vector<int> fds) { InheritedClones() = std::move(fds); }

absl::StatusOr<int> CloneFuseFd(int session_fd) {
  if (const std::vector<int>& kept = InheritedClones(); !kept.empty()) {
    const int fd = fcntl(kept[next_inherited_clone.fetch_add(1) % kept.size()], F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return absl::ErrnoToStatus(errno, "dup of an inherited /dev/fuse clone");
    return fd;
  }
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open /dev/fuse for a worker");
  uint32_t src = static_cast<uint32_t>(session_fd);
  if (ioctl(fd, abi::kDevIocClone, &src) != 0) {
    int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, "ioctl(FUSE_DEV_IOC_CLONE)");
  }
  return fd;
}

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i)
      if (CPU_ISSET(i, &set)) cpus.push_back(i);
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

int PossibleCpuCount() {
  // "0-3" or "0,2-5": the highest id + 1 is the kernel's nr_cpu_ids.
  std::ifstream f("/sys/devices/system/cpu/possible");
  std::string s;
  int highest = -1;
  if (f >> s) {
    size_t i = 0;
    while (i < s.size()) {
      size_t j = i;
      while (j < s.size() && s[j] != ',') ++j;
      std::string part = s.substr(i, j - i);
      size_t dash = part.find('-');
      int hi = std::atoi((dash == std::string::npos ? part : part.substr(dash + 1)).c_str());
      highest = std::max(highest, hi);
      i = j + 1;
    }
  }
  if (highest < 0) return static_cast<int>(AllowedCpus().size());
  return highest + 1;
}

bool PinThisThread(int cpu) {
  if (cpu < 0) return true;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof(set), &set) == 0;
}

void* MapWorkerMemory(size_t bytes) {
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  return mem == MAP_FAILED ? nullptr : mem;
}

SyncTransport::~SyncTransport() {
  Join();
  for (int fd : fds_) close(fd);
}

absl::Status SyncTransport::Start(int session_fd, Dispatcher* dispatcher,
                                  std::function<void()> on_exit) {
  std::vector<int> cpus = AllowedCpus();
  int n = options_.workers > 0 ? options_.workers : static_cast<int>(cpus.size());
  if (static_cast<size_t>(options_.first_slot + n) > dispatcher->interrupts().size())
    return absl::InvalidArgumentError("more workers than interrupt slots");
  // The kernel fails a request that does not fit the reader's buffer (EIO;
  // E2BIG for SETXATTR). The largest are a WRITE of max_write bytes and a
  // SETXATTR with the largest value the VFS allows (XATTR_SIZE_MAX, 64 KiB),
  // which a small --max_write would otherwise refuse; 4 KiB covers headers
  // and names.
  constexpr size_t kMaxXattrValue = 65536;
  buffer_size_ =
      options_.buffer_size != 0
          ? options_.buffer_size
          : std::max<size_t>(
                std::max<size_t>(dispatcher->connection().max_write, kMaxXattrValue) + 4096,
                abi::kMinReadBuffer);
  on_exit_ = std::move(on_exit);
  std::vector<int> worker_fds;
  worker_fds.push_back(session_fd);
  for (int i = 1; i < n; ++i) {
    absl::StatusOr<int> fd = CloneFuseFd(session_fd);
    if (!fd.ok()) {
      // Fewer workers still serve correctly; say so once.
      Log(LogLevel::kWarning, "%s; running %d worker(s) instead of %d",
          std::string(fd.status().message()), i, n);
      break;
    }
    fds_.push_back(*fd);
    worker_fds.push_back(*fd);
  }
  running_.store(static_cast<int>(worker_fds.size()));
  for (size_t i = 0; i < worker_fds.size(); ++i) {
    int cpu = options_.pin ? cpus[i % cpus.size()] : -1;
    threads_.emplace_back(&SyncTransport::WorkerLoop, this, static_cast<int>(i), worker_fds[i],
                          cpu, dispatcher);
  }
  return absl::OkStatus();
}

void SyncTransport::Join() {
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
}

void SyncTransport::WorkerLoop(int index, int fd, int cpu, Dispatcher* dispatcher) {
  if (!PinThisThread(cpu))
    Log(LogLevel::kDebug, "worker %d: cannot pin to cpu %d: %s", index, cpu, std::strerror(errno));
  // Allocated after pinning so first touch places it on this CPU's node;
  // MAP_POPULATE pre-faults it so the first large request costs no faults.
  void* mem = MapWorkerMemory(buffer_size_);
  if (mem == nullptr) {
    Log(LogLevel::kError, "worker %d: cannot allocate %u-byte buffer: %s", index, buffer_size_,
        std::strerror(errno));
  } else {
    std::span<uint8_t> buf(static_cast<uint8_t*>(mem), buffer_size_);
    FdReplySender sender(fd);
    InterruptTable::Slot* slot = dispatcher->interrupts().slot(options_.first_slot + index);
    for (;;) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n < 0) {
        int err = errno;
        // EINTR: a signal; ENOENT: the request was aborted while we read it.
        if (err == EINTR || err == ENOENT || err == EAGAIN) continue;
        // ENODEV (unmounted) and ECONNABORTED (aborted) are the normal end.
        if (err != ENODEV && err != ECONNABORTED)
          Log(LogLevel::kError, "worker %d: read /dev/fuse: %s", index, std::strerror(err));
        break;
      }
      dispatcher->Handle(buf, static_cast<size_t>(n), slot, sender);
    }
    munmap(mem, buffer_size_);
  }
  if (running_.fetch_sub(1) == 1 && on_exit_) on_exit_();
}

}  // namespace efuse
