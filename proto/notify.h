// proto/notify.h — builders for every notification the server can send.
//
// Owns: the wire form of FUSE_NOTIFY_* messages (unique 0, error = code). A
// builder returns a Reply whose name/data payloads reference the caller's
// memory, which must outlive the write. Pure; thread-compatible.
#ifndef EFUSE_PROTO_NOTIFY_H_
#define EFUSE_PROTO_NOTIFY_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "proto/reply.h"

namespace efuse::proto {

Reply NotifyPollWakeup(uint64_t kh);
// off < 0 drops only attributes; len == 0 means to the end.
Reply NotifyInvalInode(uint64_t nodeid, int64_t off, int64_t len);
// `flags`: abi::kExpireOnly to expire rather than drop.
Reply NotifyInvalEntry(uint64_t parent, std::string_view name, uint32_t flags = 0);
Reply NotifyDelete(uint64_t parent, uint64_t child, std::string_view name);
Reply NotifyStore(uint64_t nodeid, uint64_t offset, std::span<const uint8_t> data);
Reply NotifyRetrieve(uint64_t notify_unique, uint64_t nodeid, uint64_t offset, uint32_t size);
Reply NotifyResend();
Reply NotifyIncEpoch();
// `nodeids` must stay alive until the Reply is written.
Reply NotifyPrune(std::span<const uint64_t> nodeids);

}  // namespace efuse::proto

#endif  // EFUSE_PROTO_NOTIFY_H_
