#include "uring/queue_counters.h"

#include "absl/strings/str_cat.h"

namespace efuse::uring {

std::string DescribeQueue(int cpu, const QueueCounters& c) {
  return absl::StrCat("cpu ", cpu, " entries ", c.entries.load(std::memory_order_relaxed),
                      " requests ", c.requests.load(std::memory_order_relaxed), " bytes_in ",
                      c.bytes_in.load(std::memory_order_relaxed), " bytes_out ",
                      c.bytes_out.load(std::memory_order_relaxed), " in_flight ",
                      c.in_flight.load(std::memory_order_relaxed), " errors ",
                      c.errors.load(std::memory_order_relaxed), " async_ops ",
                      c.async_ops.load(std::memory_order_relaxed), " polled ",
                      c.polled.load(std::memory_order_relaxed));
}

}  // namespace efuse::uring
