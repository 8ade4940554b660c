#include "uring/ring.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace efuse::uring {

absl::StatusOr<Ring> Ring::Create(unsigned entries, bool big_sqe, unsigned extra_flags) {
  Ring r;
  io_uring_params p{};
  if (big_sqe) p.flags |= IORING_SETUP_SQE128;
  p.flags |= extra_flags;
  int rc = io_uring_queue_init_params(entries, &r.ring_, &p);
  if (rc == -EINVAL && extra_flags != 0) {
    p = io_uring_params{};
    if (big_sqe) p.flags |= IORING_SETUP_SQE128;
    rc = io_uring_queue_init_params(entries, &r.ring_, &p);
  }
  if (rc < 0)
    return absl::ErrnoToStatus(-rc, absl::StrCat("io_uring_setup(", entries, big_sqe ? ", SQE128)" : ")"));
  r.live_ = true;
  return r;
}

io_uring_sqe* Ring::Sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

Ring::Ring(Ring&& other) noexcept : ring_(other.ring_), live_(other.live_) {
  other.live_ = false;
}

Ring::~Ring() {
  if (live_) io_uring_queue_exit(&ring_);
}

UringSupport ProbeUring() {
  UringSupport s;
  absl::StatusOr<Ring> ring = Ring::Create(4, true);
  s.io_uring = ring.ok();
  if (!ring.ok()) s.io_uring_error = std::string(ring.status().message());
  std::ifstream f("/sys/module/fuse/parameters/enable_uring");
  std::string v;
  if (f >> v) {
    s.fuse_ring_known = true;
    s.fuse_ring_enabled = (v == "Y" || v == "1");
  }
  return s;
}

absl::Status EnableFuseRing() {
  constexpr const char* kPath = "/sys/module/fuse/parameters/enable_uring";
  std::ofstream f(kPath);
  if (!f) return absl::ErrnoToStatus(errno, absl::StrCat("open ", kPath));
  f << "Y";
  f.close();
  if (!f) return absl::ErrnoToStatus(errno, absl::StrCat("write ", kPath));
  return absl::OkStatus();
}

}  // namespace efuse::uring
