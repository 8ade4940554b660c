// core/clock.h — clocks as one number of nanoseconds.
//
// Owns: reading CLOCK_MONOTONIC, the clock BPF's bpf_ktime_get_ns reads
// too, so times from the kernel-side telemetry and from user space compare
// directly; and the calling thread's CPU time.
#ifndef EFUSE_CORE_CLOCK_H_
#define EFUSE_CORE_CLOCK_H_

#include <time.h>

#include <cstdint>

namespace efuse {

inline uint64_t ClockNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline uint64_t MonotonicNs() { return ClockNs(CLOCK_MONOTONIC); }
inline uint64_t ThreadCpuNs() { return ClockNs(CLOCK_THREAD_CPUTIME_ID); }

}  // namespace efuse

#endif  // EFUSE_CORE_CLOCK_H_
