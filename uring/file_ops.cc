#include "uring/file_ops.h"

#include <utility>

namespace efuse::uring {

struct RingFileOps::Op {
  enum Kind { kRead, kWrite, kFsync } kind;
  int fd;
  uint8_t* buf;
  size_t len;
  uint64_t offset;
  bool datasync;
  size_t transferred;
  Done done;
};

void RingFileOps::Read(int fd, std::span<uint8_t> out, uint64_t offset, Done done) {
  Submit(new Op{Op::kRead, fd, out.data(), out.size(), offset, false, 0, std::move(done)});
}

void RingFileOps::Write(int fd, std::span<const uint8_t> data, uint64_t offset, Done done) {
  Submit(new Op{Op::kWrite, fd, const_cast<uint8_t*>(data.data()), data.size(), offset, false, 0,
                std::move(done)});
}

void RingFileOps::Fsync(int fd, bool datasync, Done done) {
  Submit(new Op{Op::kFsync, fd, nullptr, 0, 0, datasync, 0, std::move(done)});
}

void RingFileOps::Submit(Op* op) {
  io_uring_sqe* sqe = ring_->Sqe();
  const size_t at = op->transferred;
  switch (op->kind) {
    case Op::kRead:
      io_uring_prep_read(sqe, op->fd, op->buf + at, static_cast<unsigned>(op->len - at), op->offset + at);
      break;
    case Op::kWrite:
      io_uring_prep_write(sqe, op->fd, op->buf + at, static_cast<unsigned>(op->len - at), op->offset + at);
      break;
    case Op::kFsync:
      io_uring_prep_fsync(sqe, op->fd, op->datasync ? IORING_FSYNC_DATASYNC : 0);
      break;
  }
  sqe->user_data = reinterpret_cast<uint64_t>(op) | kOpBit;
  ++*pending_;
  queued_->fetch_add(1, std::memory_order_relaxed);
}

void RingFileOps::Complete(uint64_t user_data, int res) {
  Op* op = reinterpret_cast<Op*>(user_data & ~kOpBit);
  if (res > 0 && op->kind != Op::kFsync) {
    op->transferred += static_cast<size_t>(res);
    if (op->transferred < op->len) return Submit(op);  // short: go on (0 ends a read: EOF)
  }
  const int64_t result = res < 0 && op->transferred == 0 ? res : static_cast<int64_t>(op->transferred);
  Done done = std::move(op->done);
  delete op;
  done(result);
}

}  // namespace efuse::uring
