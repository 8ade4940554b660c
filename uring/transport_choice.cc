#include "uring/transport_choice.h"

#include "absl/strings/str_cat.h"
#include "core/sync_transport.h"
#include "uring/dev_uring_transport.h"
#include "uring/fuse_ring_transport.h"

namespace efuse::uring {

absl::StatusOr<TransportChoice> ParseTransportChoice(std::string_view name) {
  if (name == "auto") return TransportChoice::kAuto;
  if (name == "uring") return TransportChoice::kFuseRing;
  if (name == "uring-dev") return TransportChoice::kDevUring;
  if (name == "sync") return TransportChoice::kSync;
  return absl::InvalidArgumentError(absl::StrCat("'", std::string(name), "' is not auto, uring, uring-dev or sync"));
}

std::string_view TransportChoiceName(TransportChoice choice) {
  switch (choice) {
    case TransportChoice::kAuto: return "auto";
    case TransportChoice::kFuseRing: return "uring";
    case TransportChoice::kDevUring: return "uring-dev";
    case TransportChoice::kSync: return "sync";
  }
  return "auto";
}

std::function<std::vector<std::unique_ptr<Transport>>()> TransportsFor(const TransportSettings& s) {
  return [s] {
    std::vector<std::unique_ptr<Transport>> list;
    if ((s.choice == TransportChoice::kAuto && !s.supervised) || s.choice == TransportChoice::kFuseRing) {
      FuseRingOptions ro;
      ro.depth = s.depth;
      ro.pin = s.pin;
      ro.poll_us = s.poll_us;
      list.push_back(std::make_unique<FuseRingTransport>(ro));
    }
    if (s.choice != TransportChoice::kSync) {
      DevUringOptions uo;
      uo.workers = s.workers;
      uo.pin = s.pin;
      uo.depth = s.depth;
      list.push_back(std::make_unique<DevUringTransport>(uo));
    }
    SyncTransportOptions so;
    so.workers = s.workers;  // (its workers float: SyncTransportOptions::pin)
    list.push_back(std::make_unique<SyncTransport>(so));
    return list;
  };
}

}  // namespace efuse::uring
