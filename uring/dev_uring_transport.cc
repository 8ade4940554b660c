#include "uring/dev_uring_transport.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/sync_transport.h"
#include "proto/abi.h"
#include "uring/file_ops.h"
#include "uring/ring.h"

namespace efuse::uring {

namespace {

constexpr uint64_t kRead = 0, kWrite = 1;
// Reply payloads that do not live in the request buffer (xattr values,
// symlink targets, the fixed reply structs) are copied here so the WRITEV
// can run after Send() returns. XATTR_SIZE_MAX plus headers.
constexpr size_t kReplyArea = 65536 + 4096;

uint64_t Tag(unsigned slot, uint64_t kind) { return uint64_t{slot} << 2 | kind; }

}  // namespace

struct DevUringTransport::Worker {
  int index = 0;
  int cpu = -1;
  int fd = -1;  // cloned, O_NONBLOCK
  std::thread thread;
  QueueCounters counters;
};

// A worker's ring and buffers; lives on the worker thread.
class DevUringTransport::Loop {
 public:
  struct Slot {
    uint8_t* buf = nullptr;    // request buffer (READ replies are sent from here)
    uint8_t* reply = nullptr;  // kReplyArea bytes
    iovec iov[2 + proto::Reply::kMaxPayloads]{};
    int iovcnt = 0;
    bool kept = false;  // a backing-file operation's reply is still to come
  };

  Loop(DevUringTransport* t, Worker* w) : t_(t), w_(w) {}
  ~Loop() {
    if (mem_ != nullptr) munmap(mem_, mem_size_);
  }

  absl::Status Setup() {
    const unsigned depth = t_->options_.depth;
    // Per slot: a read, a reply write, a backing-file operation.
    absl::StatusOr<Ring> ring = Ring::Create(3 * depth + 2, /*big_sqe=*/false,
                                             IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (!ring.ok()) return ring.status();
    ring_.emplace(std::move(*ring));
    file_ops_.emplace(&*ring_, &pending_, &w_->counters.async_ops);
    const size_t stride = t_->buffer_size_ + kReplyArea;
    mem_size_ = stride * depth;
    // After pinning: NUMA-local first touch, pre-faulted.
    void* mem = MapWorkerMemory(mem_size_);
    if (mem == nullptr) return absl::ErrnoToStatus(errno, "allocating request buffers");
    mem_ = static_cast<uint8_t*>(mem);
    slots_.resize(depth);
    for (unsigned i = 0; i < depth; ++i) {
      slots_[i].buf = mem_ + i * stride;
      slots_[i].reply = slots_[i].buf + t_->buffer_size_;
    }
    return absl::OkStatus();
  }

  void Run() {
    owner_ = std::this_thread::get_id();
    for (unsigned i = 0; i < slots_.size(); ++i) ArmRead(i);
    w_->counters.entries.store(static_cast<uint32_t>(slots_.size()), std::memory_order_relaxed);
    while (pending_ > 0) {
      int rc = io_uring_submit_and_wait(ring_->get(), 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        Log(LogLevel::kError, "uring-dev worker %d: io_uring_enter: %s", w_->index, std::strerror(-rc));
        break;
      }
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(ring_->get(), head, cqe) {
        ++seen;
        --pending_;
        if (RingFileOps::IsOp(cqe->user_data)) {
          file_ops_->Complete(cqe->user_data, cqe->res);
          continue;
        }
        const unsigned slot = static_cast<unsigned>(cqe->user_data >> 2);
        if ((cqe->user_data & 3) == kWrite) {
          // ENOENT: the kernel stopped waiting (interrupted); the linked
          // read then completes with ECANCELED and is re-armed below.
          if (cqe->res < 0 && cqe->res != -ENOENT) {
            w_->counters.errors.fetch_add(1, std::memory_order_relaxed);
            Log(LogLevel::kDebug, "uring-dev worker %d: reply: %s", w_->index, std::strerror(-cqe->res));
          }
          continue;
        }
        if (cqe->res > 0) {
          Serve(slot, static_cast<size_t>(cqe->res));
          continue;
        }
        const int err = -cqe->res;
        if (err == ENODEV || err == ECONNABORTED) {  // unmounted or aborted: the normal end
          w_->counters.entries.fetch_sub(1, std::memory_order_relaxed);
          continue;
        }
        if (err == ECANCELED || err == EAGAIN || err == EINTR || err == ENOENT) {
          ArmRead(slot);
          continue;
        }
        Log(LogLevel::kError, "uring-dev worker %d: read /dev/fuse: %s", w_->index, std::strerror(err));
        w_->counters.entries.fetch_sub(1, std::memory_order_relaxed);
      }
      io_uring_cq_advance(ring_->get(), seen);
    }
  }

 private:
  class Sender final : public ReplySender {
   public:
    Sender(Loop* l, unsigned slot) : l_(l), slot_(slot) {}
    int Send(proto::Reply& reply) override {
      if (used_) return EALREADY;
      used_ = true;
      return l_->QueueReply(slot_, reply);
    }
    std::unique_ptr<ReplySender> Detach() override {
      if (used_) return nullptr;
      used_ = true;
      return std::make_unique<LateSender>(l_, slot_);
    }
    bool used() const { return used_; }

   private:
    Loop* l_;
    unsigned slot_;
    bool used_ = false;
  };

  // A reply given after Serve returned. From this worker (a backing-file
  // completion: the slot was kept, its buffer may hold the READ data) it is
  // queued like any reply; from another thread (a blocking lock, whose
  // slot was re-armed at once) it is written directly.
  class LateSender final : public ReplySender {
   public:
    LateSender(Loop* l, unsigned slot) : l_(l), slot_(slot) {}
    int Send(proto::Reply& reply) override {
      if (used_) return EALREADY;
      used_ = true;
      // Queued only where the slot still waits for it: the request being
      // served, or one a backing-file operation kept. Any other slot was
      // re-armed when its call returned (a blocking lock, an answer given
      // later, even from this thread).
      if (std::this_thread::get_id() == l_->owner_ &&
          (l_->serving_ == static_cast<int>(slot_) || l_->slots_[slot_].kept)) {
        l_->slots_[slot_].kept = false;
        return l_->QueueReply(slot_, reply);
      }
      FdReplySender direct(l_->w_->fd);
      return direct.Send(reply);
    }

   private:
    Loop* l_;
    unsigned slot_;
    bool used_ = false;
  };

  io_uring_sqe* Sqe() { return ring_->Sqe(); }

  void ArmRead(unsigned slot) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_read(sqe, w_->fd, slots_[slot].buf, static_cast<unsigned>(t_->buffer_size_), 0);
    sqe->user_data = Tag(slot, kRead);
    ++pending_;
  }

  void Serve(unsigned slot, size_t length) {
    QueueCounters& c = w_->counters;
    c.requests.fetch_add(1, std::memory_order_relaxed);
    c.bytes_in.fetch_add(length, std::memory_order_relaxed);
    c.in_flight.fetch_add(1, std::memory_order_relaxed);
    Slot& s = slots_[slot];
    Sender sender(this, slot);
    queued_write_ = false;  // a late reply queued since the last Serve set it
    const uint64_t ops_before = w_->counters.async_ops.load(std::memory_order_relaxed);
    serving_ = static_cast<int>(slot);
    t_->dispatcher_->Handle(std::span<const uint8_t>(s.buf, length),
                            std::span<uint8_t>(s.buf, t_->buffer_size_),
                            t_->dispatcher_->interrupts().slot(static_cast<size_t>(w_->index)), sender,
                            &*file_ops_);
    serving_ = -1;
    c.in_flight.fetch_sub(1, std::memory_order_relaxed);
    // A backing-file operation for this request keeps the slot (its reply is
    // queued from the completion, re-arming the read). Otherwise, with no
    // reply queued (FORGET, a blocking lock's late reply, a reply written in
    // line), the buffer is free for the next request now.
    const bool async = w_->counters.async_ops.load(std::memory_order_relaxed) != ops_before;
    if (async && !queued_write_) s.kept = true;
    if (!queued_write_ && !async) ArmRead(slot);
    queued_write_ = false;
  }

  // The reply as a WRITEV linked to the slot's next read (which must not
  // overwrite READ data before it is written).
  int QueueReply(unsigned slot, proto::Reply& reply) {
    Slot& s = slots_[slot];
    std::span<const iovec> iov = reply.Iov();
    size_t used = 0;
    bool fits = true;
    s.iovcnt = 0;
    for (const iovec& v : iov) {
      const auto* p = static_cast<const uint8_t*>(v.iov_base);
      if (p >= s.buf && p + v.iov_len <= s.buf + t_->buffer_size_) {
        s.iov[s.iovcnt++] = v;  // already in the request buffer: no copy
        continue;
      }
      if (used + v.iov_len > kReplyArea) {
        fits = false;
        break;
      }
      std::memcpy(s.reply + used, v.iov_base, v.iov_len);
      s.iov[s.iovcnt++] = {s.reply + used, v.iov_len};
      used += v.iov_len;
    }
    w_->counters.bytes_out.fetch_add(reply.size(), std::memory_order_relaxed);
    if (reply.error() != 0) w_->counters.errors.fetch_add(1, std::memory_order_relaxed);
    if (!fits) {
      // Larger than the reply area (not expected): write it in line.
      FdReplySender direct(w_->fd);
      return direct.Send(reply);
    }
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_writev(sqe, w_->fd, s.iov, static_cast<unsigned>(s.iovcnt), 0);
    sqe->flags |= IOSQE_IO_LINK;
    sqe->user_data = Tag(slot, kWrite);
    ++pending_;
    ArmRead(slot);
    queued_write_ = true;
    return 0;
  }

  DevUringTransport* t_;
  Worker* w_;
  std::optional<Ring> ring_;
  std::optional<RingFileOps> file_ops_;  // backing-file I/O on ring_
  std::thread::id owner_;                // the worker thread (Run)
  uint8_t* mem_ = nullptr;
  size_t mem_size_ = 0;
  std::vector<Slot> slots_;
  unsigned pending_ = 0;        // SQEs whose completion has not been seen
  bool queued_write_ = false;   // the request being served queued its reply
  int serving_ = -1;            // the slot whose request is being served
};

DevUringTransport::DevUringTransport(DevUringOptions options) : options_(options) {
  if (options_.depth == 0) options_.depth = 1;
}

DevUringTransport::~DevUringTransport() {
  Join();
  for (auto& w : workers_)
    if (w->fd >= 0) close(w->fd);
}

void DevUringTransport::WorkerMain(Worker* w) {
  if (!PinThisThread(w->cpu))
    Log(LogLevel::kDebug, "uring-dev worker %d: cannot pin to cpu %d: %s", w->index, w->cpu,
        std::strerror(errno));
  Loop loop(this, w);
  if (start_->ReportAndWait(loop.Setup())) loop.Run();
}

absl::Status DevUringTransport::Start(int session_fd, Dispatcher* dispatcher,
                                      std::function<void()> on_exit) {
  dispatcher_ = dispatcher;
  // The kernel refuses a read buffer smaller than a WRITE of max_write; 64 KiB
  // for the largest SETXATTR value; 4 KiB for headers and names.
  buffer_size_ = std::max<size_t>(
      std::max<size_t>(dispatcher->connection().max_write, 65536) + 4096, abi::kMinReadBuffer);
  std::vector<int> cpus = AllowedCpus();
  const int n = options_.workers > 0 ? options_.workers : static_cast<int>(cpus.size());
  if (static_cast<size_t>(n) > dispatcher->interrupts().size())
    return absl::InvalidArgumentError("more workers than interrupt slots");
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<int> fd = CloneFuseFd(session_fd);
    if (!fd.ok()) {
      if (i == 0) return fd.status();
      break;  // fewer workers still serve
    }
    // Non-blocking: io_uring then waits for a request by polling, in this
    // worker's context, instead of parking a kernel thread in read().
    fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->cpu = options_.pin ? cpus[static_cast<size_t>(i) % cpus.size()] : -1;
    w->fd = *fd;
    workers_.push_back(std::move(w));
  }
  on_exit_ = std::move(on_exit);
  running_.store(static_cast<int>(workers_.size()));
  start_ = std::make_unique<StartBarrier>(static_cast<int>(workers_.size()));
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->thread = std::thread([this, wp] {
      WorkerMain(wp);
      if (running_.fetch_sub(1) == 1 && on_exit_) on_exit_();
    });
  }
  absl::Status setup = start_->WaitForReports();
  if (!setup.ok()) {
    on_exit_ = nullptr;  // quitting workers must not tell the session we ended
    start_->Release(false);
    Join();
    for (auto& w : workers_) close(w->fd);
    workers_.clear();
    return absl::UnavailableError(setup.message());
  }
  start_->Release(true);
  Log(LogLevel::kInfo, "io_uring on /dev/fuse: %d worker(s) x %u reads in flight",
      static_cast<int>(workers_.size()), options_.depth);
  return absl::OkStatus();
}

void DevUringTransport::Join() {
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
}

void DevUringTransport::AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const {
  for (const auto& w : workers_)
    lines->emplace_back(absl::StrCat("queue_", w->index), DescribeQueue(w->cpu, w->counters));
}

}  // namespace efuse::uring
