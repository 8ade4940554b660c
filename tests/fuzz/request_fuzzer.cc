// tests/fuzz/request_fuzzer.cc — libFuzzer target over request decoding.
//
// Each input is one request as read from /dev/fuse. It is decoded under
// several DecodeOptions (oldest/newest minor, SETXATTR_EXT off/on), and once
// more with header.len rewritten to the input's size so that mutations which
// change the length still get past the length check. When a request decodes,
// every view and field is read (names, payload, forgets, groups, security
// contexts, the opcode's struct through Arg<T>() of the type the traits table
// names) and fed to Reply, DirentWriter, the notify builders and, for INIT,
// NegotiateInit, so ASan/UBSan see every byte the decoder hands out. The
// decoder's documented contract is checked too; a violation aborts.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "proto/abi.h"
#include "proto/dirent.h"
#include "proto/init.h"
#include "proto/notify.h"
#include "proto/opcode.h"
#include "proto/reply.h"
#include "proto/request.h"

namespace efuse::proto {
namespace {

#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

// Everything read is folded in here and published through a volatile, so
// the reads cannot be optimised away.
uint64_t g_hash = 0;
volatile uint64_t g_sink = 0;

void Touch(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) g_hash = g_hash * 131 + b[i];
}

bool Inside(const void* p, size_t n, std::span<const uint8_t> input) {
  if (n == 0) return true;
  const auto* b = static_cast<const uint8_t*>(p);
  return b >= input.data() && b + n <= input.data() + input.size();
}

// Writes the reply out the two ways a transport would, and checks they agree.
void Emit(Reply& reply) {
  const size_t size = reply.size();
  size_t total = 0;
  for (const iovec& v : reply.Iov()) {
    Touch(v.iov_base, v.iov_len);
    total += v.iov_len;
  }
  FUZZ_CHECK(total == size);
  std::vector<uint8_t> flat(size);
  FUZZ_CHECK(reply.CopyTo(flat) == size);
  uint32_t len;
  std::memcpy(&len, flat.data(), sizeof(len));
  FUZZ_CHECK(len == size);
  Touch(flat.data(), flat.size());
}

template <typename T>
T ArgOf(const Request& req, Reply& reply) {
  FUZZ_CHECK(sizeof(T) == req.traits->in_size);
  T t = req.Arg<T>();
  Touch(&t, sizeof(t));
  reply.AddStruct(t);
  return t;
}

// Reads the opcode's struct as the type the traits table names, and checks
// the payload rules that depend on its fields.
void ExerciseArg(const Request& req, Reply& reply) {
  using abi::Opcode;
  switch (req.opcode()) {
    case Opcode::kForget:
      ArgOf<abi::ForgetIn>(req, reply);
      break;
    case Opcode::kGetattr:
      ArgOf<abi::GetattrIn>(req, reply);
      break;
    case Opcode::kSetattr:
      ArgOf<abi::SetattrIn>(req, reply);
      break;
    case Opcode::kMknod:
      ArgOf<abi::MknodIn>(req, reply);
      break;
    case Opcode::kMkdir:
      ArgOf<abi::MkdirIn>(req, reply);
      break;
    case Opcode::kRename:
      ArgOf<abi::RenameIn>(req, reply);
      break;
    case Opcode::kLink:
      ArgOf<abi::LinkIn>(req, reply);
      break;
    case Opcode::kOpen:
    case Opcode::kOpendir:
      ArgOf<abi::OpenIn>(req, reply);
      break;
    case Opcode::kRead:
    case Opcode::kReaddir:
    case Opcode::kReaddirplus:
      ArgOf<abi::ReadIn>(req, reply);
      break;
    case Opcode::kWrite: {
      const auto in = ArgOf<abi::WriteIn>(req, reply);
      FUZZ_CHECK(req.data.size() == in.size);
      break;
    }
    case Opcode::kRelease:
    case Opcode::kReleasedir:
      ArgOf<abi::ReleaseIn>(req, reply);
      break;
    case Opcode::kFsync:
    case Opcode::kFsyncdir:
      ArgOf<abi::FsyncIn>(req, reply);
      break;
    case Opcode::kSetxattr: {
      const auto in = ArgOf<abi::SetxattrIn>(req, reply);
      FUZZ_CHECK(req.data.size() == in.size);
      FUZZ_CHECK(req.fixed_size == 8 || req.fixed_size == 16);
      if (req.fixed_size == 8) FUZZ_CHECK(in.setxattr_flags == 0 && in.padding == 0);
      break;
    }
    case Opcode::kGetxattr:
    case Opcode::kListxattr:
      ArgOf<abi::GetxattrIn>(req, reply);
      break;
    case Opcode::kFlush:
      ArgOf<abi::FlushIn>(req, reply);
      break;
    case Opcode::kInit:
      ArgOf<abi::InitIn>(req, reply);
      break;
    case Opcode::kGetlk:
    case Opcode::kSetlk:
    case Opcode::kSetlkw:
      ArgOf<abi::LkIn>(req, reply);
      break;
    case Opcode::kAccess:
      ArgOf<abi::AccessIn>(req, reply);
      break;
    case Opcode::kCreate:
    case Opcode::kTmpfile:
      ArgOf<abi::CreateIn>(req, reply);
      break;
    case Opcode::kInterrupt:
      ArgOf<abi::InterruptIn>(req, reply);
      break;
    case Opcode::kBmap:
      ArgOf<abi::BmapIn>(req, reply);
      break;
    case Opcode::kIoctl: {
      const auto in = ArgOf<abi::IoctlIn>(req, reply);
      FUZZ_CHECK(req.data.size() == in.in_size);
      break;
    }
    case Opcode::kPoll:
      ArgOf<abi::PollIn>(req, reply);
      break;
    case Opcode::kNotifyReply:
      ArgOf<abi::NotifyRetrieveIn>(req, reply);
      break;
    case Opcode::kBatchForget: {
      const auto in = ArgOf<abi::BatchForgetIn>(req, reply);
      FUZZ_CHECK(req.forgets.size() == in.count);
      break;
    }
    case Opcode::kFallocate:
      ArgOf<abi::FallocateIn>(req, reply);
      break;
    case Opcode::kRename2:
      ArgOf<abi::Rename2In>(req, reply);
      break;
    case Opcode::kLseek:
      ArgOf<abi::LseekIn>(req, reply);
      break;
    case Opcode::kCopyFileRange:
    case Opcode::kCopyFileRange64:
      ArgOf<abi::CopyFileRangeIn>(req, reply);
      break;
    case Opcode::kSyncfs:
      ArgOf<abi::SyncfsIn>(req, reply);
      break;
    case Opcode::kStatx:
      ArgOf<abi::StatxIn>(req, reply);
      break;
    case Opcode::kLookup:
    case Opcode::kReadlink:
    case Opcode::kSymlink:
    case Opcode::kUnlink:
    case Opcode::kRmdir:
    case Opcode::kStatfs:
    case Opcode::kRemovexattr:
    case Opcode::kDestroy:
    case Opcode::kSetupmapping:
    case Opcode::kRemovemapping:
    case Opcode::kCuseInit:
      FUZZ_CHECK(req.traits->in_size == 0);
      break;
  }
}

void ExerciseInit(const Request& req) {
  InitConfig config;
  config.wanted_flags = ~uint64_t{0};
  config.max_write = static_cast<uint32_t>(req.header.nodeid);  // any value
  const InitResult r = NegotiateInit(req.Arg<abi::InitIn>(), req.fixed_size, config);
  FUZZ_CHECK(r.out_size <= sizeof(abi::InitOut));
  if (r.error != 0) {
    FUZZ_CHECK(r.error == EPROTO);
    return;
  }
  if (!r.major_retry) {
    FUZZ_CHECK(r.conn.minor >= abi::kMinSupportedMinor && r.conn.minor <= abi::kKernelMinor);
    FUZZ_CHECK((r.conn.flags & ~r.conn.kernel_flags) == 0);
    FUZZ_CHECK(r.conn.max_write >= 4096);
    FUZZ_CHECK(r.conn.max_pages <= 256);
  }
  Reply reply(req.header.unique);
  reply.AddStruct(r.out, r.out_size);
  Emit(reply);
}

void ExerciseNames(const Request& req) {
  std::vector<uint8_t> buf(4096);
  DirentWriter w(buf);
  for (std::string_view name : {req.name, req.name2}) {
    if (w.Add(req.header.nodeid, req.header.unique, req.header.uid, name)) {
      FUZZ_CHECK(!name.empty() && name.size() <= 1024);
    }
    abi::EntryOut entry{};
    entry.nodeid = req.header.nodeid;
    w.AddPlus(entry, req.header.nodeid, req.header.unique, req.header.gid, name);
    Reply inval = NotifyInvalEntry(req.header.nodeid, name);
    Emit(inval);
    Reply del = NotifyDelete(req.header.nodeid, req.header.unique, name);
    Emit(del);
  }
  FUZZ_CHECK(w.size() <= buf.size());
  Touch(w.bytes().data(), w.bytes().size());
}

void Exercise(std::span<const uint8_t> input, const DecodeOptions& options) {
  Request req;
  const DecodeError e = DecodeRequest(input, options, &req);
  FUZZ_CHECK(e.reason != nullptr);
  if (!e.ok()) {
    FUZZ_CHECK(e.error == EIO || e.error == EINVAL || e.error == ENOSYS);
    FUZZ_CHECK(e.header_valid == (input.size() >= sizeof(abi::InHeader)));
    if (e.header_valid) {
      FUZZ_CHECK(req.traits == TraitsOf(req.header.opcode));
      if (e.error == ENOSYS) FUZZ_CHECK(req.traits == nullptr);
      Reply reply = Reply::Error(req.header.unique, e.error);
      Emit(reply);
    }
    return;
  }
  FUZZ_CHECK(e.header_valid);
  FUZZ_CHECK(req.traits != nullptr && req.traits == TraitsOf(req.header.opcode));
  FUZZ_CHECK(req.header.len == input.size());
  FUZZ_CHECK(req.fixed_size <= req.traits->in_size);
  Touch(&req.header, sizeof(req.header));

  // Views stay inside the request; names hold no NUL.
  for (std::string_view name : {req.name, req.name2}) {
    FUZZ_CHECK(Inside(name.data(), name.size(), input));
    FUZZ_CHECK(name.find('\0') == std::string_view::npos);
    Touch(name.data(), name.size());
  }
  FUZZ_CHECK(Inside(req.data.data(), req.data.size(), input));
  Touch(req.data.data(), req.data.size());
  for (const abi::ForgetOne& f : req.forgets) Touch(&f, sizeof(f));
  for (uint32_t g : req.groups) Touch(&g, sizeof(g));
  FUZZ_CHECK(req.groups.size() * 4 <= input.size());
  for (const SecurityContext& sc : req.security_contexts) {
    FUZZ_CHECK(Inside(sc.name.data(), sc.name.size(), input));
    FUZZ_CHECK(Inside(sc.value.data(), sc.value.size(), input));
    FUZZ_CHECK(sc.name.find('\0') == std::string_view::npos);
    Touch(sc.name.data(), sc.name.size());
    Touch(sc.value.data(), sc.value.size());
  }

  Reply reply(req.header.unique);
  ExerciseArg(req, reply);
  reply.AddPayload(req.name);
  reply.AddPayload(req.name2);
  reply.AddPayload(req.data);
  Emit(reply);

  ExerciseNames(req);
  if (!req.data.empty()) {
    Reply store = NotifyStore(req.header.nodeid, req.header.unique, req.data);
    Emit(store);
  }
  if (req.opcode() == abi::Opcode::kInit) ExerciseInit(req);
}

const DecodeOptions kOptions[] = {
    {.minor = abi::kMinSupportedMinor, .setxattr_ext = false},
    {.minor = abi::kMinSupportedMinor, .setxattr_ext = true},
    {.minor = abi::kKernelMinor, .setxattr_ext = false},
    {.minor = abi::kKernelMinor, .setxattr_ext = true},
};

}  // namespace
}  // namespace efuse::proto

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using efuse::proto::Exercise;
  using efuse::proto::kOptions;
  const std::span<const uint8_t> input(data, size);
  for (const auto& options : kOptions) Exercise(input, options);

  // The same bytes with a consistent header.len, in an exact-size copy.
  if (size >= sizeof(efuse::abi::InHeader)) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint32_t len = static_cast<uint32_t>(size);
    std::memcpy(fixed.data(), &len, sizeof(len));
    for (const auto& options : kOptions) Exercise(fixed, options);
  }
  efuse::proto::g_sink = efuse::proto::g_hash;
  return 0;
}
