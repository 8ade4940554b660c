// uring/ring.h — an owning io_uring and what the kernel offers.
//
// Owns: setting up and tearing down one io_uring (liburing) with the flags a
// FUSE transport needs (128-byte SQEs for FUSE ring commands), and probing
// the machine: is io_uring allowed (kernel.io_uring_disabled), is the FUSE
// ring switched on (/sys/module/fuse/parameters/enable_uring). A Ring is
// used by the one thread that owns it (its only submitter); not thread-safe.
#ifndef EFUSE_URING_RING_H_
#define EFUSE_URING_RING_H_

#include <liburing.h>

#include <string>

#include "absl/status/statusor.h"

namespace efuse::uring {

class Ring {
 public:
  // `big_sqe`: IORING_SETUP_SQE128, required for FUSE_IO_URING_CMD_*.
  // `extra_flags`: more IORING_SETUP_* flags (e.g. SINGLE_ISSUER |
  // DEFER_TASKRUN for a ring only its creating thread uses); dropped, with
  // the ring still created, when the kernel refuses them.
  static absl::StatusOr<Ring> Create(unsigned entries, bool big_sqe, unsigned extra_flags = 0);
  Ring(Ring&& other) noexcept;
  Ring& operator=(Ring&&) = delete;
  Ring(const Ring&) = delete;
  ~Ring();

  io_uring* get() { return &ring_; }
  // A free SQE; when the queue is full, submits what is queued first.
  io_uring_sqe* Sqe();
  unsigned sq_entries() const { return ring_.sq.ring_entries; }
  bool big_sqe() const { return (ring_.flags & IORING_SETUP_SQE128) != 0; }

 private:
  Ring() = default;
  io_uring ring_{};
  bool live_ = false;
};

struct UringSupport {
  bool io_uring = false;       // io_uring_setup works for this process
  std::string io_uring_error;  // why not, when it does not
  bool fuse_ring_enabled = false;  // /sys/module/fuse/parameters/enable_uring is Y
  bool fuse_ring_known = false;    // that file exists (CONFIG_FUSE_IO_URING)
};

UringSupport ProbeUring();

// Turns the kernel's FUSE-over-io_uring switch on (root only):
// /sys/module/fuse/parameters/enable_uring = Y.
absl::Status EnableFuseRing();

}  // namespace efuse::uring

#endif  // EFUSE_URING_RING_H_
