// core/clock.h — the monotonic clock as one number.
//
// Owns: reading CLOCK_MONOTONIC in nanoseconds, the clock BPF's
// bpf_ktime_get_ns reads too, so times from the kernel-side telemetry and
// from user space compare directly.
#ifndef EFUSE_CORE_CLOCK_H_
#define EFUSE_CORE_CLOCK_H_

#include <time.h>

#include <cstdint>

namespace efuse {

inline uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace efuse

#endif  // EFUSE_CORE_CLOCK_H_
