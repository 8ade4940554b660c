// tests/fuzz/request_builder.h — builds the bytes of one FUSE request.
//
// Owns: a test-only builder that lays a request out the way the kernel does:
// the InHeader, the opcode's fixed struct, names (each followed by NUL) and
// payload, then the extension area that total_extlen counts in 8-byte units
// (security-context block, supplementary groups, or raw bytes for malformed
// cases). header.len and total_extlen are filled in by Build() unless a test
// forces them. Used by the proto unit tests and by the seed-corpus generator.
// Not thread-safe; header-only.
#ifndef EFUSE_TESTS_FUZZ_REQUEST_BUILDER_H_
#define EFUSE_TESTS_FUZZ_REQUEST_BUILDER_H_

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "proto/abi.h"

namespace efuse::test {

// Appends the bytes of a trivially copyable value (host order: the FUSE wire
// order on every architecture efuse targets).
template <typename T>
void AppendValue(std::vector<uint8_t>& out, const T& v, size_t size = sizeof(T)) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + (size < sizeof(T) ? size : sizeof(T)));
}

inline void AppendString(std::vector<uint8_t>& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
}

inline void PadTo8(std::vector<uint8_t>& out) {
  while (out.size() % 8 != 0) out.push_back(0);
}

class RequestBuilder {
 public:
  explicit RequestBuilder(uint32_t opcode) {
    header_.opcode = opcode;
    header_.unique = 0x0123456789abcdefULL;
    header_.nodeid = 42;
    header_.uid = 1000;
    header_.gid = 1001;
    header_.pid = 4242;
  }
  explicit RequestBuilder(abi::Opcode op) : RequestBuilder(static_cast<uint32_t>(op)) {}

  RequestBuilder& Unique(uint64_t unique) {
    header_.unique = unique;
    return *this;
  }
  RequestBuilder& NodeId(uint64_t nodeid) {
    header_.nodeid = nodeid;
    return *this;
  }
  RequestBuilder& Caller(uint32_t uid, uint32_t gid, uint32_t pid) {
    header_.uid = uid;
    header_.gid = gid;
    header_.pid = pid;
    return *this;
  }
  // Forces header.len / total_extlen instead of the computed values.
  RequestBuilder& Len(uint32_t len) {
    len_ = len;
    return *this;
  }
  RequestBuilder& TotalExtlen(uint16_t units) {
    total_extlen_ = units;
    return *this;
  }

  // The first `size` bytes of `s` (older kernels send a prefix of some structs).
  template <typename T>
  RequestBuilder& Struct(const T& s, size_t size = sizeof(T)) {
    AppendValue(args_, s, size);
    return *this;
  }
  RequestBuilder& Bytes(std::span<const uint8_t> bytes) {
    args_.insert(args_.end(), bytes.begin(), bytes.end());
    return *this;
  }
  RequestBuilder& Bytes(std::string_view bytes) {
    AppendString(args_, bytes);
    return *this;
  }
  // `name` followed by its NUL.
  RequestBuilder& Name(std::string_view name) {
    AppendString(args_, name);
    args_.push_back(0);
    return *this;
  }

  // A FUSE_EXT_GROUPS record: ExtHeader, nr_groups, the gids, padded to 8.
  RequestBuilder& Groups(const std::vector<uint32_t>& gids) {
    std::vector<uint8_t> body;
    AppendValue(body, abi::SuppGroupsHeader{static_cast<uint32_t>(gids.size())});
    for (uint32_t g : gids) AppendValue(body, g);
    return Extension(abi::kExtGroups, body);
  }
  // A security-context block (type = number of contexts): per context a
  // Secctx{size}, the xattr name + NUL, then the value bytes; padded to 8.
  RequestBuilder& SecurityContexts(
      const std::vector<std::pair<std::string, std::string>>& contexts) {
    std::vector<uint8_t> body;
    for (const auto& [name, value] : contexts) {
      AppendValue(body, abi::Secctx{static_cast<uint32_t>(value.size()), 0});
      AppendString(body, name);
      body.push_back(0);
      AppendString(body, value);
    }
    return Extension(static_cast<uint32_t>(contexts.size()), body);
  }
  // Any extension record: ExtHeader{size, type} + body, padded to 8.
  RequestBuilder& Extension(uint32_t type, std::span<const uint8_t> body) {
    std::vector<uint8_t> rec;
    AppendValue(rec, abi::ExtHeader{0, type});
    rec.insert(rec.end(), body.begin(), body.end());
    PadTo8(rec);
    const uint32_t size = static_cast<uint32_t>(rec.size());
    std::memcpy(rec.data(), &size, sizeof(size));
    ext_.insert(ext_.end(), rec.begin(), rec.end());
    return *this;
  }
  // Raw bytes appended to the extension area (for malformed records).
  RequestBuilder& RawExtension(std::span<const uint8_t> bytes) {
    ext_.insert(ext_.end(), bytes.begin(), bytes.end());
    return *this;
  }

  std::vector<uint8_t> Build() const {
    abi::InHeader h = header_;
    const size_t total = sizeof(abi::InHeader) + args_.size() + ext_.size();
    h.len = len_.value_or(static_cast<uint32_t>(total));
    h.total_extlen = total_extlen_.value_or(static_cast<uint16_t>(ext_.size() / 8));
    std::vector<uint8_t> out;
    out.reserve(total);
    AppendValue(out, h);
    out.insert(out.end(), args_.begin(), args_.end());
    out.insert(out.end(), ext_.begin(), ext_.end());
    return out;
  }

 private:
  abi::InHeader header_{};
  std::vector<uint8_t> args_;
  std::vector<uint8_t> ext_;
  std::optional<uint32_t> len_;
  std::optional<uint16_t> total_extlen_;
};

// Sets header.len of an encoded request in place (the first 4 bytes).
inline void SetLen(std::vector<uint8_t>& bytes, uint32_t len) {
  if (bytes.size() >= sizeof(len)) std::memcpy(bytes.data(), &len, sizeof(len));
}

}  // namespace efuse::test

#endif  // EFUSE_TESTS_FUZZ_REQUEST_BUILDER_H_
