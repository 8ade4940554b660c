#include "uring/fuse_ring_transport.h"

#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/clock.h"
#include "core/log.h"
#include "proto/abi.h"
#include "proto/init.h"
#include "uring/file_ops.h"
#include "uring/ring.h"

namespace efuse::uring {

namespace {

constexpr size_t kPage = 4096;
// Room in front of each payload buffer: the header (288 bytes) at its start,
// and, just before the payload, the staging area where the in-header (40
// bytes) and the op struct (at most 128) are copied so that header, op
// struct and payload read as one contiguous request for the decoder.
constexpr size_t kHeadRoom = kPage;
constexpr size_t kMaxOpStruct = sizeof(abi::UringReqHeader::op_in);
static_assert(sizeof(abi::UringReqHeader) + sizeof(abi::InHeader) + kMaxOpStruct <= kHeadRoom);

constexpr uint64_t kWakeTag = ~0ULL;

bool ConnectionGone(int err) {
  return err == ENOTCONN || err == ECANCELED || err == ENODEV || err == ECONNABORTED;
}

void PrepUringCmd(io_uring_sqe* sqe, int fd, abi::UringCmd op, uint64_t commit_id, uint16_t qid) {
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // SQE128: the command area is the second half
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = static_cast<uint32_t>(op);
  abi::UringCmdReq req{};
  req.commit_id = commit_id;
  req.qid = qid;
  std::memcpy(sqe->cmd, &req, sizeof(req));
}

}  // namespace

struct FuseRingTransport::Queue {
  uint16_t qid = 0;
  int cpu = -1;  // CPU to pin to, -1: not pinned (not in our affinity)
  std::thread thread;
  std::unique_ptr<Worker> worker;  // lives until the transport dies (late replies)
  QueueCounters counters;
};

// One queue's worker: its ring, its entries, its replies. Created on the
// worker thread, owned by the Queue so that a reply finished late on
// another thread (blocking locks) always finds its entry and mailbox.
class FuseRingTransport::Worker {
 public:
  struct Entry {
    abi::UringReqHeader* header = nullptr;
    uint8_t* payload = nullptr;
    iovec iov[2]{};
    uint64_t commit_id = 0;  // the request it holds
  };

  Worker(FuseRingTransport* t, Queue* q) : t_(t), q_(q) {}
  ~Worker() {
    if (mem_ != nullptr) munmap(mem_, mem_size_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  // Ring, memory, registrations. Non-OK: nothing of this queue is in use.
  absl::Status Setup() {
    const unsigned depth = t_->options_.depth;
    wake_fd_ = eventfd(0, EFD_CLOEXEC);
    if (wake_fd_ < 0) return absl::ErrnoToStatus(errno, "eventfd");
    // Room for a commit per entry, a backing-file operation per entry and
    // the wake read.
    absl::StatusOr<Ring> ring = Ring::Create(
        2 * depth + 4, /*big_sqe=*/true, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (!ring.ok()) return ring.status();
    ring_.emplace(std::move(*ring));
    file_ops_.emplace(&*ring_, &pending_, &q_->counters.async_ops);
    stride_ = kHeadRoom + (t_->payload_size_ + kPage - 1) / kPage * kPage;
    mem_size_ = stride_ * depth;
    // After pinning, so first touch is NUMA-local; MAP_POPULATE pre-faults.
    void* mem = MapWorkerMemory(mem_size_);
    if (mem == nullptr) return absl::ErrnoToStatus(errno, "allocating FUSE ring buffers");
    mem_ = static_cast<uint8_t*>(mem);
    entries_.resize(depth);
    for (unsigned i = 0; i < depth; ++i) {
      Entry& e = entries_[i];
      e.header = reinterpret_cast<abi::UringReqHeader*>(mem_ + i * stride_);
      e.payload = mem_ + i * stride_ + kHeadRoom;
      e.iov[0] = {e.header, sizeof(abi::UringReqHeader)};
      e.iov[1] = {e.payload, t_->payload_size_};
      Register(i);
    }
    ArmRead(wake_fd_, &wake_value_, kWakeTag);
    int rc = io_uring_submit_and_get_events(ring_->get());
    if (rc < 0) return absl::ErrnoToStatus(-rc, "io_uring_submit (FUSE ring registration)");
    // A refused registration completes at once; accepted ones stay pending
    // until a request arrives (a completion with res 0 is such a request,
    // served by the loop).
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    int refused = 0;
    io_uring_for_each_cqe(ring_->get(), head, cqe) {
      ++seen;
      if (cqe->user_data == kWakeTag) continue;
      --pending_;
      if (cqe->res < 0) {
        if (refused == 0) refused = -cqe->res;
        continue;
      }
      early_.push_back(static_cast<unsigned>(cqe->user_data));
    }
    io_uring_cq_advance(ring_->get(), seen);
    if (refused != 0)
      return absl::ErrnoToStatus(refused, absl::StrCat("FUSE_IO_URING_CMD_REGISTER on queue ", q_->qid));
    q_->counters.entries.store(depth, std::memory_order_relaxed);
    return absl::OkStatus();
  }

  // Serves until the kernel has let go of every entry (unmount, abort) or
  // the transport is stopped.
  void Run() {
    owner_ = std::this_thread::get_id();
    for (unsigned idx : early_) Serve(idx);
    early_.clear();
    const uint64_t poll_ns = uint64_t{t_->options_.poll_us} * 1000;
    uint64_t last_work_ns = 0;
    // (An entry answered later has no SQE outstanding until its reply
    // comes: the worker waits for it too, while the connection lasts. One
    // held for good, as a hung request's is, must not keep it once the
    // connection is gone.)
    while (pending_ > 0 || (detached_ > 0 && !connection_gone_.load(std::memory_order_acquire))) {
      int rc;
      polling_ = poll_ns > 0 && hops_ > kHopsToPoll && MonotonicNs() - last_work_ns < poll_ns;
      if (polling_) {
        // Busy: look for new requests without sleeping. With DEFER_TASKRUN
        // they reach the completion queue only inside io_uring_enter.
        rc = io_uring_submit_and_get_events(ring_->get());
        if (rc >= 0 && io_uring_cq_ready(ring_->get()) == 0) {
          sched_yield();  // the CPU's own clients first: they make the next request
          continue;
        }
      } else {
        rc = io_uring_submit_and_wait(ring_->get(), 1);
      }
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        Log(LogLevel::kError, "FUSE ring queue %d: io_uring_enter: %s", q_->qid, std::strerror(-rc));
        break;
      }
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(ring_->get(), head, cqe) {
        ++seen;
        if (cqe->user_data == kWakeTag) {
          CommitLateReplies();
          ArmRead(wake_fd_, &wake_value_, kWakeTag);
          continue;
        }
        if (RingFileOps::IsOp(cqe->user_data)) {
          --pending_;
          file_ops_->Complete(cqe->user_data, cqe->res);
          continue;
        }
        --pending_;
        const unsigned idx = static_cast<unsigned>(cqe->user_data);
        if (cqe->res >= 0) {
          if (poll_ns > 0) NoteRequest();
          Serve(idx);
          continue;
        }
        const int err = -cqe->res;
        if (ConnectionGone(err)) {
          connection_gone_.store(true, std::memory_order_release);
          q_->counters.entries.fetch_sub(1, std::memory_order_relaxed);
          continue;
        }
        // The commit was refused (e.g. the request was no longer known):
        // the kernel let go of the entry, so hand the buffers back as a new
        // one instead of losing a slot of the queue.
        q_->counters.errors.fetch_add(1, std::memory_order_relaxed);
        Log(LogLevel::kWarning, "FUSE ring queue %d: commit failed: %s; re-registering the entry",
            q_->qid, std::strerror(err));
        Register(idx);
      }
      io_uring_cq_advance(ring_->get(), seen);
      // The clock only matters while requests hop between queues.
      if (seen > 0 && poll_ns > 0 && hops_ > kHopsToPoll) last_work_ns = MonotonicNs();
    }
  }

  // From any thread: the connection has ended (its /dev/fuse reader saw it
  // go). Wakes the worker, which has nothing left to wait for.
  void ConnectionEnded() {
    connection_gone_.store(true, std::memory_order_release);
    uint64_t one = 1;
    ssize_t unused = write(wake_fd_, &one, sizeof(one));
    (void)unused;
  }

  // From any thread: the reply for entry `idx`, answered late. The entry is
  // ours alone until its commit is submitted, so filling it needs no lock;
  // the mailbox hands the commit to the worker, the only submitter.
  void PostLateReply(unsigned idx, proto::Reply& reply) {
    FillReply(idx, reply);
    if (std::this_thread::get_id() == owner_) {  // from a completion on this worker
      --detached_;
      QueueCommit(idx);
      return;
    }
    {
      std::lock_guard<std::mutex> l(mail_mu_);
      mail_.push_back(idx);
    }
    uint64_t one = 1;
    ssize_t unused = write(wake_fd_, &one, sizeof(one));
    (void)unused;
  }

 private:
  class Sender final : public ReplySender {
   public:
    Sender(Worker* w, unsigned idx) : w_(w), idx_(idx) {}
    int Send(proto::Reply& reply) override {
      if (used_) return EALREADY;
      used_ = true;
      w_->FillReply(idx_, reply);
      w_->QueueCommit(idx_);
      return 0;
    }
    std::unique_ptr<ReplySender> Detach() override {
      if (used_) return nullptr;
      used_ = true;
      ++w_->detached_;  // (worker thread: Detach is called while serving)
      return std::make_unique<LateSender>(w_, idx_);
    }
    bool used() const { return used_; }

   private:
    Worker* w_;
    unsigned idx_;
    bool used_ = false;
  };

  class LateSender final : public ReplySender {
   public:
    LateSender(Worker* w, unsigned idx) : w_(w), idx_(idx) {}
    int Send(proto::Reply& reply) override {
      if (used_) return EALREADY;
      used_ = true;
      w_->PostLateReply(idx_, reply);
      return 0;
    }

   private:
    Worker* w_;
    unsigned idx_;
    bool used_ = false;
  };

  io_uring_sqe* Sqe() { return ring_->Sqe(); }

  void Register(unsigned idx) {
    Entry& e = entries_[idx];
    io_uring_sqe* sqe = Sqe();
    PrepUringCmd(sqe, t_->fd_, abi::UringCmd::kRegister, 0, q_->qid);
    sqe->addr = reinterpret_cast<uintptr_t>(e.iov);
    sqe->len = 2;
    sqe->user_data = idx;
    ++pending_;
  }

  void ArmRead(int fd, uint64_t* value, uint64_t tag) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_read(sqe, fd, value, sizeof(*value), 0);
    sqe->user_data = tag;
  }

  void CommitLateReplies() {
    std::vector<unsigned> ready;
    {
      std::lock_guard<std::mutex> l(mail_mu_);
      ready.swap(mail_);
    }
    for (unsigned idx : ready) {
      --detached_;
      QueueCommit(idx);
    }
  }

  // One request from entry `idx`: lay it out contiguously, dispatch, and
  // make sure exactly one commit goes back for it.
  void Serve(unsigned idx) {
    Entry& e = entries_[idx];
    QueueCounters& c = q_->counters;
    c.in_flight.fetch_add(1, std::memory_order_relaxed);
    c.requests.fetch_add(1, std::memory_order_relaxed);
    abi::InHeader in;
    std::memcpy(&in, e.header->in_out, sizeof(in));
    const abi::UringEntInOut io = e.header->ring_ent_in_out;
    e.commit_id = io.commit_id;
    Sender sender(this, idx);
    // The in-header's len counts header, op struct and payload, so the op
    // struct's size is what is left; anything inconsistent is answered EIO.
    const uint64_t fixed = static_cast<uint64_t>(in.len) - sizeof(in) - io.payload_sz;
    if (in.len < sizeof(in) || io.payload_sz > t_->payload_size_ ||
        static_cast<uint64_t>(in.len) < sizeof(in) + io.payload_sz || fixed > kMaxOpStruct) {
      proto::Reply r = proto::Reply::Error(io.commit_id, EIO);
      sender.Send(r);
      return;
    }
    uint8_t* start = e.payload - fixed - sizeof(in);
    std::memcpy(start, &in, sizeof(in));
    std::memcpy(start + sizeof(in), e.header->op_in, fixed);
    c.bytes_in.fetch_add(in.len, std::memory_order_relaxed);
    t_->dispatcher_->Handle(std::span<const uint8_t>(start, in.len),
                            std::span<uint8_t>(e.payload, t_->payload_size_),
                            t_->dispatcher_->interrupts().slot(q_->qid), sender, &*file_ops_);
    if (!sender.used()) {
      // Every ring request must be committed or its entry is lost; the
      // dispatcher answers everything except malformed headers.
      proto::Reply r = proto::Reply::Error(io.commit_id, EIO);
      sender.Send(r);
    }
  }

  // The reply into entry `idx`: out-header into the header area, everything
  // after it into the payload buffer (READ data is already there: no copy).
  void FillReply(unsigned idx, proto::Reply& reply) {
    Entry& e = entries_[idx];
    std::span<const iovec> iov = reply.Iov();
    size_t total = 0;
    for (size_t i = 1; i < iov.size(); ++i) total += iov[i].iov_len;
    abi::OutHeader out{};
    out.unique = e.commit_id;
    out.error = reply.error();
    if (total > t_->payload_size_) out.error = -EIO;
    if (out.error != 0) {
      total = 0;
      q_->counters.errors.fetch_add(1, std::memory_order_relaxed);
    } else {
      // Back to front with memmove: a payload the backend wrote at the start
      // of the buffer may have to move right, past an inline struct.
      size_t end = total;
      for (size_t i = iov.size() - 1; i >= 1; --i) {
        end -= iov[i].iov_len;
        uint8_t* dst = e.payload + end;
        if (iov[i].iov_base != dst && iov[i].iov_len != 0) std::memmove(dst, iov[i].iov_base, iov[i].iov_len);
      }
    }
    out.len = static_cast<uint32_t>(sizeof(out) + total);
    std::memcpy(e.header->in_out, &out, sizeof(out));
    abi::UringEntInOut io{};
    io.commit_id = e.commit_id;
    io.payload_sz = static_cast<uint32_t>(total);
    e.header->ring_ent_in_out = io;
    q_->counters.bytes_out.fetch_add(out.len, std::memory_order_relaxed);
  }

  // Worker thread only: the commit (and fetch of the next request) for `idx`.
  void QueueCommit(unsigned idx) {
    io_uring_sqe* sqe = Sqe();
    PrepUringCmd(sqe, t_->fd_, abi::UringCmd::kCommitAndFetch, entries_[idx].commit_id, q_->qid);
    sqe->user_data = idx;
    ++pending_;
    q_->counters.in_flight.fetch_sub(1, std::memory_order_relaxed);
  }

  FuseRingTransport* t_;
  Queue* q_;
  std::optional<Ring> ring_;
  std::optional<RingFileOps> file_ops_;  // backing-file I/O on ring_
  uint8_t* mem_ = nullptr;
  size_t mem_size_ = 0;
  size_t stride_ = 0;
  std::vector<Entry> entries_;
  std::vector<unsigned> early_;  // requests that arrived during Setup
  // Did another queue serve a request since this one's last? A moving
  // average of it, 0..kHopsOne: high while the client hops between CPUs.
  void NoteRequest() {
    const uint64_t before = t_->served_.fetch_add(1, std::memory_order_relaxed);
    const bool hopped = before != last_served_ + 1;
    if (polling_) q_->counters.polled.fetch_add(1, std::memory_order_relaxed);
    last_served_ = before;
    hops_ = hops_ - hops_ / 8 + (hopped ? kHopsOne / 8 : 0);
  }
  static constexpr unsigned kHopsOne = 1024;
  static constexpr unsigned kHopsToPoll = kHopsOne / 4;

  unsigned pending_ = 0;         // entries the kernel holds (an SQE outstanding)
  unsigned detached_ = 0;        // entries whose reply comes late (worker thread only)
  std::atomic<bool> connection_gone_{false};
  uint64_t last_served_ = 0;     // served_ before this queue's last request
  unsigned hops_ = 0;
  bool polling_ = false;         // the current pass looked without sleeping
  uint64_t wake_value_ = 0;
  int wake_fd_ = -1;
  std::thread::id owner_;  // the worker thread (Run)
  std::mutex mail_mu_;
  std::vector<unsigned> mail_;  // entries whose late reply is filled in
};

FuseRingTransport::FuseRingTransport(FuseRingOptions options) : options_(options) {
  if (options_.depth == 0) options_.depth = 1;
}

FuseRingTransport::~FuseRingTransport() {
  Join();
}

uint64_t FuseRingTransport::InitFlags() const {
  // Once granted, the kernel holds every request until the ring is ready,
  // and only an io_uring command can release it: ask only if we can make
  // rings (kernel.io_uring_disabled, seccomp) and the kernel switch is on.
  UringSupport support = ProbeUring();
  if (!support.io_uring || !support.fuse_ring_enabled) return 0;
  return abi::init::kOverIoUring;
}

void FuseRingTransport::WorkerStopped() {
  if (running_.fetch_sub(1) == 1 && on_exit_) on_exit_();
}

void FuseRingTransport::QueueMain(Queue* q) {
  if (!PinThisThread(q->cpu))
    Log(LogLevel::kDebug, "FUSE ring queue %d: cannot pin to cpu %d: %s", q->qid, q->cpu,
        std::strerror(errno));
  q->worker = std::make_unique<Worker>(this, q);
  Worker& w = *q->worker;
  // Serve only once every queue is registered: a failure anywhere means the
  // whole transport steps aside.
  if (start_->ReportAndWait(w.Setup())) w.Run();
}

void FuseRingTransport::DisableKernelRing() {
  // A registration the kernel refuses (queue id out of range) clears the
  // connection's io_uring mode and wakes the requests waiting for the ring.
  absl::StatusOr<Ring> ring = Ring::Create(2, /*big_sqe=*/true);
  if (!ring.ok()) {
    Log(LogLevel::kError, "cannot hand the FUSE connection back to /dev/fuse: %s",
        std::string(ring.status().message()));
    return;
  }
  static abi::UringReqHeader header;
  static uint8_t payload[abi::kMinReadBuffer];
  iovec iov[2] = {{&header, sizeof(header)}, {payload, sizeof(payload)}};
  io_uring_sqe* sqe = io_uring_get_sqe(ring->get());
  if (sqe == nullptr) return;  // a fresh ring of 2 always has one
  PrepUringCmd(sqe, fd_, abi::UringCmd::kRegister, 0, 0xffff);
  sqe->addr = reinterpret_cast<uintptr_t>(iov);
  sqe->len = 2;
  io_uring_cqe* cqe = nullptr;
  if (io_uring_submit_and_wait(ring->get(), 1) >= 0 && io_uring_peek_cqe(ring->get(), &cqe) == 0)
    io_uring_cqe_seen(ring->get(), cqe);
}

absl::Status FuseRingTransport::Start(int session_fd, Dispatcher* dispatcher,
                                      std::function<void()> on_exit) {
  fd_ = session_fd;
  dispatcher_ = dispatcher;
  if (!dispatcher->connection().Has(abi::init::kOverIoUring)) {
    UringSupport support = ProbeUring();
    if (!support.io_uring) return absl::UnavailableError("io_uring refused: " + support.io_uring_error);
    return absl::UnavailableError(
        support.fuse_ring_known
            ? "the kernel did not offer FUSE_OVER_IO_URING (switched off: echo Y > "
              "/sys/module/fuse/parameters/enable_uring, or efused --transport=uring as root)"
            : "this kernel has no FUSE_OVER_IO_URING (CONFIG_FUSE_IO_URING)");
  }
  absl::Status s = StartQueues(std::move(on_exit));
  // Granted at INIT, the kernel holds every request until all queues are
  // registered: when we cannot serve the ring, tell it to use /dev/fuse.
  if (!s.ok()) DisableKernelRing();
  return s;
}

absl::Status FuseRingTransport::StartQueues(std::function<void()> on_exit) {
  const proto::Connection& conn = dispatcher_->connection();
  // The kernel's payload size: max(8 KiB, max_write, max_pages pages), with
  // max_pages capped by fs.fuse.max_pages_limit. A request that does not fit
  // crashes the kernel's copy (see proto::kUringMinPayload): refuse instead.
  size_t max_pages = conn.max_pages;
  {
    std::ifstream limit("/proc/sys/fs/fuse/max_pages_limit");
    size_t l = 0;
    if (limit >> l && l > 0) max_pages = std::min(max_pages, l);
  }
  payload_size_ = std::max<size_t>({abi::kMinReadBuffer, conn.max_write, max_pages * kPage});
  if (payload_size_ < proto::kUringMinPayload)
    return absl::UnavailableError(absl::StrCat(
        "ring payload would be ", payload_size_ / 1024, " KiB (max_pages ", max_pages,
        "); a 64 KiB extended attribute needs ", proto::kUringMinPayload / 1024, " KiB"));
  const int nqueues = PossibleCpuCount();
  // Queue q serves CPU q's callers; its slot is q, the /dev/fuse reader's is nqueues.
  if (static_cast<size_t>(nqueues) + 1 > dispatcher_->interrupts().size())
    return absl::InvalidArgumentError("more FUSE ring queues than interrupt slots");
  std::vector<int> allowed = AllowedCpus();
  on_exit_ = std::move(on_exit);
  for (int i = 0; i < nqueues; ++i) {
    auto q = std::make_unique<Queue>();
    q->qid = static_cast<uint16_t>(i);
    q->cpu = options_.pin && std::find(allowed.begin(), allowed.end(), i) != allowed.end() ? i : -1;
    queues_.push_back(std::move(q));
  }
  running_.store(nqueues);
  start_ = std::make_unique<StartBarrier>(nqueues);
  for (auto& q : queues_) {
    Queue* qp = q.get();
    qp->thread = std::thread([this, qp] {
      QueueMain(qp);
      WorkerStopped();
    });
  }
  absl::Status setup = start_->WaitForReports();
  if (!setup.ok()) {
    // Step aside: every worker quits (closing a ring cancels its pending
    // registrations; the caller tells the kernel to use /dev/fuse), and
    // without telling the session the transport ended.
    on_exit_ = nullptr;
    start_->Release(false);
    Join();
    queues_.clear();
    return absl::UnavailableError(setup.message());
  }
  start_->Release(true);
  // FORGET, INTERRUPT and NOTIFY_REPLY still arrive on /dev/fuse.
  SyncTransportOptions dev;
  dev.workers = 1;
  dev.pin = false;
  dev.first_slot = nqueues;
  dev.name = "uring-dev-side";
  dev_reader_ = std::make_unique<SyncTransport>(dev);
  running_.fetch_add(1);
  absl::Status s = dev_reader_->Start(fd_, dispatcher_, [this] {
    // It stops when the connection ends: a queue worker waiting only for
    // answers given late learns it here.
    for (auto& q : queues_) {
      if (q->worker != nullptr) q->worker->ConnectionEnded();
    }
    WorkerStopped();
  });
  if (!s.ok()) {
    // The ring is live and serves; only FORGETs and INTERRUPTs go unread.
    running_.fetch_sub(1);
    Log(LogLevel::kError, "FUSE ring: no /dev/fuse reader for FORGET/INTERRUPT: %s",
        std::string(s.message()));
  }
  Log(LogLevel::kInfo, "FUSE-over-io_uring: %d queue(s) x %u entries, %u KiB payload each, workers poll %u us",
      nqueues, options_.depth, static_cast<unsigned>(payload_size_ / 1024), options_.poll_us);
  return absl::OkStatus();
}

void FuseRingTransport::Join() {
  for (auto& q : queues_)
    if (q->thread.joinable()) q->thread.join();
  if (dev_reader_) dev_reader_->Join();
}

const QueueCounters& FuseRingTransport::counters(size_t qid) const { return queues_[qid]->counters; }

void FuseRingTransport::AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const {
  for (const auto& q : queues_)
    lines->emplace_back(absl::StrCat("queue_", q->qid), DescribeQueue(q->cpu, q->counters));
}

}  // namespace efuse::uring
