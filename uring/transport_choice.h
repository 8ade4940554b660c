// uring/transport_choice.h — which transports a session tries, best first.
//
// Owns: TransportChoice (the user's pick: auto, uring, uring-dev, sync) and
// TransportsFor(), the list a Session tries in order (the first whose Start
// succeeds serves; each failure is named in the log). One owner for efused
// and for programs built on libefuse.
//
// Thread-safety: pure; the returned factory may be called from any thread.
#ifndef EFUSE_URING_TRANSPORT_CHOICE_H_
#define EFUSE_URING_TRANSPORT_CHOICE_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/transport.h"

namespace efuse::uring {

enum class TransportChoice {
  kAuto,      // the FUSE-over-io_uring queues, else io_uring on /dev/fuse, else reads
  kFuseRing,  // "uring": the queues (then the others, each failure logged)
  kDevUring,  // "uring-dev": io_uring reads of /dev/fuse, else plain reads
  kSync,      // "sync": a thread per worker in read(2)/writev(2)
};

// "auto", "uring", "uring-dev", "sync".
absl::StatusOr<TransportChoice> ParseTransportChoice(std::string_view name);
std::string_view TransportChoiceName(TransportChoice choice);

struct TransportSettings {
  TransportChoice choice = TransportChoice::kAuto;
  int workers = 0;  // 0: one per CPU
  bool pin = true;
  unsigned depth = 4;     // ring entries or reads in flight per worker
  unsigned poll_us = 50;  // FUSE ring: polling before a worker sleeps
  // A successor must be able to take the connection over: the FUSE ring,
  // whose queues die with the process that registered them, is left out of
  // kAuto.
  bool supervised = false;
};

std::function<std::vector<std::unique_ptr<Transport>>()> TransportsFor(const TransportSettings& settings);

}  // namespace efuse::uring

#endif  // EFUSE_URING_TRANSPORT_CHOICE_H_
