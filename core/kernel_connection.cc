// core/kernel_connection.cc — KernelConnection's helpers built on Notify.
#include "core/filesystem.h"
#include "proto/notify.h"

namespace efuse {

Status KernelConnection::DropCachedAttributes(uint64_t nodeid) {
  proto::Reply r = proto::NotifyInvalInode(nodeid, -1, 0);  // offset -1: attributes only
  return Notify(r.Iov());
}

Status KernelConnection::InvalidateData(uint64_t nodeid, uint64_t offset, uint64_t length) {
  proto::Reply r = proto::NotifyInvalInode(nodeid, static_cast<int64_t>(offset), static_cast<int64_t>(length));
  return Notify(r.Iov());
}

Status KernelConnection::InvalidateEntry(uint64_t parent, std::string_view name) {
  proto::Reply r = proto::NotifyInvalEntry(parent, name);
  return Notify(r.Iov());
}

Status KernelConnection::StoreData(uint64_t nodeid, uint64_t offset, std::span<const uint8_t> data) {
  proto::Reply r = proto::NotifyStore(nodeid, offset, data);
  return Notify(r.Iov());
}

}  // namespace efuse
