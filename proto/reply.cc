#include "proto/reply.h"

#include <cstdlib>

namespace efuse::proto {

void Reply::AddInline(const void* p, size_t n) {
  // Overflowing the inline area is a programming error in a reply builder,
  // never a function of request input: fail loudly.
  if (inline_size_ + n > kInlineCapacity) std::abort();
  std::memcpy(inline_ + inline_size_, p, n);
  inline_size_ += n;
}

void Reply::AddPayload(std::span<const uint8_t> bytes) {
  if (num_payloads_ == kMaxPayloads) std::abort();
  payloads_[num_payloads_++] = bytes;
}

size_t Reply::size() const {
  size_t n = sizeof(header_) + inline_size_;
  for (int i = 0; i < num_payloads_; ++i) n += payloads_[i].size();
  return n;
}

std::span<const iovec> Reply::Iov() {
  header_.len = static_cast<uint32_t>(size());
  int n = 0;
  iov_[n++] = {&header_, sizeof(header_)};
  if (inline_size_ != 0) iov_[n++] = {inline_, inline_size_};
  for (int i = 0; i < num_payloads_; ++i) {
    if (payloads_[i].empty()) continue;
    iov_[n++] = {const_cast<uint8_t*>(payloads_[i].data()), payloads_[i].size()};
  }
  return {iov_, static_cast<size_t>(n)};
}

size_t Reply::CopyTo(std::span<uint8_t> out) {
  if (size() > out.size()) return 0;
  size_t off = 0;
  for (const iovec& v : Iov()) {
    std::memcpy(out.data() + off, v.iov_base, v.iov_len);
    off += v.iov_len;
  }
  return off;
}

size_t EntryOutSize(uint32_t minor) {
  return minor < 9 ? abi::kCompatEntryOutSize : sizeof(abi::EntryOut);
}
size_t AttrOutSize(uint32_t minor) {
  return minor < 9 ? abi::kCompatAttrOutSize : sizeof(abi::AttrOut);
}

}  // namespace efuse::proto
