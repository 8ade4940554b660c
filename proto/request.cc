#include "proto/request.h"

#include <cstring>

#include <algorithm>
#include <cerrno>

#include "proto/reader.h"

namespace efuse::proto {

struct RequestDecoder {
  static void* Fixed(Request* r) { return r->fixed_; }
};

namespace {

constexpr DecodeError Fail(int error, const char* reason) { return {error, reason, true}; }

// The extension area: a sequence of 8-byte-aligned records, each with an
// ExtHeader whose size covers the record.
DecodeError DecodeExtensions(std::span<const uint8_t> ext, Request* out) {
  Reader r(ext);
  while (r.remaining() > 0) {
    abi::ExtHeader h;
    std::span<const uint8_t> record;
    {
      Reader peek(ext.subspan(ext.size() - r.remaining()));
      if (!peek.Read(&h)) return Fail(EINVAL, "extension header truncated");
    }
    if (h.size < sizeof(abi::ExtHeader) || h.size % 8 != 0)
      return Fail(EINVAL, "extension size not a multiple of 8");
    if (!r.ReadBytes(h.size, &record)) return Fail(EINVAL, "extension past end of request");
    Reader rec(record);
    rec.Skip(sizeof(abi::ExtHeader));
    if (h.type <= abi::kExtMaxNrSecctx) {
      // Security contexts: `type` is their count.
      for (uint32_t i = 0; i < h.type; ++i) {
        abi::Secctx c;
        SecurityContext sc;
        if (!rec.Read(&c)) return Fail(EINVAL, "security context truncated");
        if (!rec.ReadCString(&sc.name)) return Fail(EINVAL, "security context name without NUL");
        if (!rec.ReadBytes(c.size, &sc.value)) return Fail(EINVAL, "security context value truncated");
        out->security_contexts.push_back(sc);
      }
    } else if (h.type == abi::kExtGroups) {
      abi::SuppGroupsHeader g;
      if (!rec.Read(&g)) return Fail(EINVAL, "group extension truncated");
      if (g.nr_groups > rec.remaining() / sizeof(uint32_t))
        return Fail(EINVAL, "group extension count exceeds its size");
      out->groups.resize(g.nr_groups);
      rec.ReadInto(out->groups.data(), g.nr_groups * sizeof(uint32_t));
    }
    // Unknown extension types are skipped: newer kernels only send what we
    // negotiated, and skipping keeps us forward compatible.
  }
  return {};
}

// Reads exactly the remaining bytes as one name (strict: nothing after the NUL).
bool ReadLastName(Reader& r, std::string_view* out) {
  return r.ReadCString(out) && r.remaining() == 0;
}

}  // namespace

DecodeError DecodeRequest(std::span<const uint8_t> bytes, const DecodeOptions& options,
                          Request* out) {
  Reader r(bytes);
  if (!r.Read(&out->header)) return {EIO, "request shorter than its header", false};
  const abi::InHeader& h = out->header;
  // Set before any other check so that a caller answering a malformed request
  // knows whether the opcode takes a reply at all (FORGET, BATCH_FORGET).
  out->traits = TraitsOf(h.opcode);
  if (h.len != bytes.size()) {
    // We still know `unique`, so the kernel gets an answer.
    return Fail(EIO, h.len > bytes.size() ? "request truncated (len past the bytes read)"
                                          : "request length shorter than the bytes read");
  }
  const uint64_t ext_len = uint64_t{h.total_extlen} * 8;
  if (ext_len > r.remaining()) return Fail(EINVAL, "extension length past end of request");
  std::span<const uint8_t> args_and_ext = bytes.subspan(sizeof(abi::InHeader));
  std::span<const uint8_t> args = args_and_ext.first(args_and_ext.size() - ext_len);
  if (ext_len != 0) {
    DecodeError e = DecodeExtensions(args_and_ext.last(ext_len), out);
    if (!e.ok()) return e;
  }

  if (out->traits == nullptr) return Fail(ENOSYS, "unknown opcode");
  const OpcodeTraits& t = *out->traits;
  const auto op = static_cast<abi::Opcode>(h.opcode);

  Reader a(args);
  size_t want = t.in_size;
  if (op == abi::Opcode::kSetxattr) {
    want = options.setxattr_ext ? sizeof(abi::SetxattrIn) : t.min_in_size;
  } else if (t.min_in_size < t.in_size) {
    want = std::min<size_t>(a.remaining(), t.in_size);
    if (want < t.min_in_size) return Fail(EIO, "argument struct truncated");
  }
  if (!a.ReadInto(RequestDecoder::Fixed(out), want)) return Fail(EIO, "argument struct truncated");
  out->fixed_size = static_cast<uint32_t>(want);

  switch (t.tail) {
    case Tail::kNone:
      if (a.remaining() != 0) return Fail(EINVAL, "unexpected bytes after argument struct");
      break;
    case Tail::kName:
      if (!ReadLastName(a, &out->name)) return Fail(EINVAL, "name not NUL-terminated at end");
      break;
    case Tail::kTwoNames:
      if (!a.ReadCString(&out->name)) return Fail(EINVAL, "first name without NUL");
      if (!ReadLastName(a, &out->name2)) return Fail(EINVAL, "second name not NUL-terminated at end");
      break;
    case Tail::kNameAndValue: {
      auto in = out->Arg<abi::SetxattrIn>();
      if (!a.ReadCString(&out->name)) return Fail(EINVAL, "xattr name without NUL");
      if (in.size != a.remaining()) return Fail(EINVAL, "xattr value size does not match");
      out->data = a.Rest();
      break;
    }
    case Tail::kWriteData: {
      auto in = out->Arg<abi::WriteIn>();
      if (in.size != a.remaining()) return Fail(EIO, "write payload size does not match");
      out->data = a.Rest();
      break;
    }
    case Tail::kIoctlData: {
      auto in = out->Arg<abi::IoctlIn>();
      if (in.in_size != a.remaining()) return Fail(EINVAL, "ioctl input size does not match");
      out->data = a.Rest();
      break;
    }
    case Tail::kRest:
      out->data = a.Rest();
      break;
    case Tail::kForgets: {
      auto in = out->Arg<abi::BatchForgetIn>();
      if (in.count > a.remaining() / sizeof(abi::ForgetOne))
        return Fail(EIO, "batch forget count exceeds payload");
      out->forgets.resize(in.count);
      a.ReadInto(out->forgets.data(), in.count * sizeof(abi::ForgetOne));
      break;
    }
  }
  return {0, "", true};  // success: the header is valid too
}

std::vector<uint8_t> EncodeRequest(abi::Opcode op, uint64_t unique, uint64_t nodeid,
                                   const void* arg, size_t arg_size, std::string_view tail) {
  abi::InHeader h{};
  h.len = static_cast<uint32_t>(sizeof(h) + arg_size + tail.size());
  h.opcode = static_cast<uint32_t>(op);
  h.unique = unique;
  h.nodeid = nodeid;
  h.uid = 1000;
  h.gid = 1000;
  h.pid = 1;
  std::vector<uint8_t> b(h.len);
  std::memcpy(b.data(), &h, sizeof(h));
  if (arg_size != 0) std::memcpy(b.data() + sizeof(h), arg, arg_size);
  if (!tail.empty()) std::memcpy(b.data() + sizeof(h) + arg_size, tail.data(), tail.size());
  return b;
}

}  // namespace efuse::proto
