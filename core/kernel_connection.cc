// core/kernel_connection.cc — KernelConnection's helpers built on Notify.
#include "core/filesystem.h"
#include "proto/notify.h"

namespace efuse {

Status KernelConnection::DropCachedAttributes(uint64_t nodeid) {
  proto::Reply r = proto::NotifyInvalInode(nodeid, -1, 0);  // offset -1: attributes only
  return Notify(r.Iov());
}

}  // namespace efuse
