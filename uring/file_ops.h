// uring/file_ops.h — backing-file I/O on a worker's own io_uring.
//
// Owns: the AsyncIo a transport worker offers the dispatcher: each read,
// write or fsync becomes an SQE on the worker's ring (tagged so the worker's
// loop can tell it from its own requests), short transfers are continued,
// and `done` runs on the worker thread when the whole operation ended.
// Used only by the thread that owns the ring.
#ifndef EFUSE_URING_FILE_OPS_H_
#define EFUSE_URING_FILE_OPS_H_

#include <atomic>
#include <cstdint>

#include "core/async_io.h"
#include "uring/ring.h"

namespace efuse::uring {

class RingFileOps final : public AsyncIo {
 public:
  // `pending` counts the ring's outstanding SQEs (the worker loop's);
  // `queued` counts operations (a queue counter).
  RingFileOps(Ring* ring, unsigned* pending, std::atomic<uint64_t>* queued)
      : ring_(ring), pending_(pending), queued_(queued) {}

  void Read(int fd, std::span<uint8_t> out, uint64_t offset, Done done) override;
  void Write(int fd, std::span<const uint8_t> data, uint64_t offset, Done done) override;
  void Fsync(int fd, bool datasync, Done done) override;

  // True for the user_data of one of our SQEs (the worker's own tags are
  // small indices or all-ones values: check those first).
  static bool IsOp(uint64_t user_data) { return (user_data & kOpBit) != 0; }
  // Its completion (the caller has already counted it off `pending`).
  void Complete(uint64_t user_data, int res);

 private:
  struct Op;
  static constexpr uint64_t kOpBit = 1ULL << 62;
  void Submit(Op* op);

  Ring* ring_;
  unsigned* pending_;
  std::atomic<uint64_t>* queued_;
};

}  // namespace efuse::uring

#endif  // EFUSE_URING_FILE_OPS_H_
