#include "proto/notify.h"

namespace efuse::proto {

namespace {
const uint8_t kNul = 0;
std::span<const uint8_t> NulByte() { return {&kNul, 1}; }
}  // namespace

Reply NotifyPollWakeup(uint64_t kh) {
  Reply r = Reply::Notify(abi::NotifyCode::kPoll);
  r.AddStruct(abi::NotifyPollWakeupOut{kh});
  return r;
}

Reply NotifyInvalInode(uint64_t nodeid, int64_t off, int64_t len) {
  Reply r = Reply::Notify(abi::NotifyCode::kInvalInode);
  r.AddStruct(abi::NotifyInvalInodeOut{nodeid, off, len});
  return r;
}

Reply NotifyInvalEntry(uint64_t parent, std::string_view name, uint32_t flags) {
  Reply r = Reply::Notify(abi::NotifyCode::kInvalEntry);
  r.AddStruct(abi::NotifyInvalEntryOut{parent, static_cast<uint32_t>(name.size()), flags});
  r.AddPayload(name);
  r.AddPayload(NulByte());
  return r;
}

Reply NotifyDelete(uint64_t parent, uint64_t child, std::string_view name) {
  Reply r = Reply::Notify(abi::NotifyCode::kDelete);
  r.AddStruct(abi::NotifyDeleteOut{parent, child, static_cast<uint32_t>(name.size()), 0});
  r.AddPayload(name);
  r.AddPayload(NulByte());
  return r;
}

Reply NotifyStore(uint64_t nodeid, uint64_t offset, std::span<const uint8_t> data) {
  Reply r = Reply::Notify(abi::NotifyCode::kStore);
  r.AddStruct(abi::NotifyStoreOut{nodeid, offset, static_cast<uint32_t>(data.size()), 0});
  r.AddPayload(data);
  return r;
}

Reply NotifyRetrieve(uint64_t notify_unique, uint64_t nodeid, uint64_t offset, uint32_t size) {
  Reply r = Reply::Notify(abi::NotifyCode::kRetrieve);
  r.AddStruct(abi::NotifyRetrieveOut{notify_unique, nodeid, offset, size, 0});
  return r;
}

Reply NotifyResend() { return Reply::Notify(abi::NotifyCode::kResend); }
Reply NotifyIncEpoch() { return Reply::Notify(abi::NotifyCode::kIncEpoch); }

Reply NotifyPrune(std::span<const uint64_t> nodeids) {
  Reply r = Reply::Notify(abi::NotifyCode::kPrune);
  r.AddStruct(abi::NotifyPruneOut{static_cast<uint32_t>(nodeids.size()), 0, 0});
  r.AddPayload(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(nodeids.data()),
                                        nodeids.size_bytes()));
  return r;
}

}  // namespace efuse::proto
