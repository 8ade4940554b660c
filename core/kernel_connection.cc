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

Status KernelConnection::RetrieveData(uint64_t nodeid, uint64_t offset, uint32_t size,
                                      std::function<void(Result<std::string>)> done) {
  uint64_t id;
  {
    // Registered before the kernel can answer.
    std::lock_guard<std::mutex> l(retrieve_mu_);
    id = next_retrieve_++;
    retrieves_[id] = std::move(done);
  }
  proto::Reply r = proto::NotifyRetrieve(id, nodeid, offset, size);
  Status s = Notify(r.Iov());
  if (!s.ok()) {
    std::lock_guard<std::mutex> l(retrieve_mu_);
    retrieves_.erase(id);
  }
  return s;
}

void KernelConnection::RetrieveAnswered(uint64_t notify_unique, std::string data) {
  std::function<void(Result<std::string>)> done;
  {
    std::lock_guard<std::mutex> l(retrieve_mu_);
    auto it = retrieves_.find(notify_unique);
    if (it == retrieves_.end()) return;  // not ours (or answered already)
    done = std::move(it->second);
    retrieves_.erase(it);
  }
  done(std::move(data));
}

Status KernelConnection::ResendPending() {
  proto::Reply r = proto::NotifyResend();
  return Notify(r.Iov());
}

Status KernelConnection::StoreData(uint64_t nodeid, uint64_t offset, std::span<const uint8_t> data) {
  proto::Reply r = proto::NotifyStore(nodeid, offset, data);
  return Notify(r.Iov());
}

}  // namespace efuse
