// core/async_io.h — file I/O a backend hands to the transport's worker.
//
// Owns: the contract between the dispatcher and a transport that can run
// backing-file I/O asynchronously on its worker's io_uring (the FUSE ring
// transport): the worker queues the operation, goes on serving other
// requests, and runs `done` on its own thread when the kernel completes it.
// A backend opts in per request with FileSystem::AsyncFile (the fd to use);
// the dispatcher then answers the request from `done`.
#ifndef EFUSE_CORE_ASYNC_IO_H_
#define EFUSE_CORE_ASYNC_IO_H_

#include <cstdint>
#include <functional>
#include <span>

namespace efuse {

class AsyncIo {
 public:
  // `result`: bytes transferred (reads: < size only at end of file; short
  // transfers are continued by the implementation), or -errno.
  using Done = std::function<void(int64_t result)>;
  virtual ~AsyncIo() = default;
  // Each queues the operation; `done` runs exactly once, on the worker's
  // thread. The buffers must stay valid until it has run.
  virtual void Read(int fd, std::span<uint8_t> out, uint64_t offset, Done done) = 0;
  virtual void Write(int fd, std::span<const uint8_t> data, uint64_t offset, Done done) = 0;
  virtual void Fsync(int fd, bool datasync, Done done) = 0;
};

}  // namespace efuse

#endif  // EFUSE_CORE_ASYNC_IO_H_
