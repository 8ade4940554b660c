// core/dispatcher_later.cc — answers given later (efuse::Later): which
// requests may have one, and the reply each kind of value makes.
#include <string>
#include <variant>

#include "core/dispatcher.h"
#include "core/dispatcher_parts.h"
#include "core/log.h"

namespace efuse {

using abi::Opcode;
using proto::Reply;

bool Dispatcher::CanAnswerLater(Opcode op) {
  switch (op) {
    case Opcode::kLookup: case Opcode::kMknod: case Opcode::kMkdir: case Opcode::kSymlink: case Opcode::kLink:
    case Opcode::kGetattr: case Opcode::kStatx: case Opcode::kSetattr:
    case Opcode::kOpen: case Opcode::kOpendir: case Opcode::kCreate: case Opcode::kTmpfile:
    case Opcode::kRead: case Opcode::kReadlink: case Opcode::kGetxattr: case Opcode::kListxattr:
    case Opcode::kWrite: case Opcode::kLseek: case Opcode::kCopyFileRange: case Opcode::kCopyFileRange64:
    case Opcode::kStatfs:
    case Opcode::kUnlink: case Opcode::kRmdir: case Opcode::kRename: case Opcode::kRename2:
    case Opcode::kSetxattr: case Opcode::kRemovexattr: case Opcode::kFsync: case Opcode::kFsyncdir:
    case Opcode::kFlush: case Opcode::kFallocate: case Opcode::kAccess: case Opcode::kSyncfs:
      return true;
    default:
      return false;
  }
}

void Dispatcher::SendLater(ReplySender& sender, const LaterReply& info, LaterValue value) {
  const uint64_t unique = info.unique;
  if (const Errno* e = std::get_if<Errno>(&value)) return SendError(sender, unique, e->value());
  auto as_size = [&]() -> const size_t* { return std::get_if<size_t>(&value); };
  auto as_bytes = [&]() -> const std::string* { return std::get_if<std::string>(&value); };
  switch (info.op) {
    case Opcode::kLookup: case Opcode::kMknod: case Opcode::kMkdir: case Opcode::kSymlink: case Opcode::kLink:
      if (Entry* e = std::get_if<Entry>(&value)) return SendEntry(sender, unique, info.node, std::move(*e));
      break;
    case Opcode::kGetattr: case Opcode::kSetattr:
      if (const AttrReply* a = std::get_if<AttrReply>(&value)) return SendAttr(sender, unique, info.node, *a);
      break;
    case Opcode::kStatx:
      if (const AttrReply* a = std::get_if<AttrReply>(&value)) return SendStatx(sender, unique, info.node, *a);
      break;
    case Opcode::kOpen: case Opcode::kOpendir:
      if (const OpenReply* o = std::get_if<OpenReply>(&value)) return SendOpen(sender, unique, info.node, *o);
      break;
    case Opcode::kCreate: case Opcode::kTmpfile:
      if (const CreateReply* c = std::get_if<CreateReply>(&value)) return SendCreate(sender, unique, info.node, *c);
      break;
    case Opcode::kRead: case Opcode::kReadlink:
      if (const std::string* b = as_bytes()) {
        Reply r(unique);
        // READ: never more than the kernel asked for.
        r.AddPayload(info.op == Opcode::kRead ? std::string_view(*b).substr(0, info.size) : std::string_view(*b));
        return Send(sender, r);
      }
      break;
    case Opcode::kGetxattr: case Opcode::kListxattr:
      if (const std::string* b = as_bytes()) return SendXattr(sender, unique, *b, info.size);
      break;
    case Opcode::kWrite: case Opcode::kCopyFileRange:
      if (const size_t* n = as_size()) {
        Reply r(unique);
        r.AddStruct(abi::WriteOut{static_cast<uint32_t>(std::min<size_t>(*n, UINT32_MAX)), 0});
        return Send(sender, r);
      }
      break;
    case Opcode::kCopyFileRange64:
      if (const size_t* n = as_size()) {
        Reply r(unique);
        r.AddStruct(abi::CopyFileRangeOut{*n});
        return Send(sender, r);
      }
      break;
    case Opcode::kLseek:
      if (const size_t* n = as_size()) {
        Reply r(unique);
        r.AddStruct(abi::LseekOut{*n});
        return Send(sender, r);
      }
      break;
    case Opcode::kStatfs:
      if (const FsStats* st = std::get_if<FsStats>(&value)) return SendStatfs(sender, unique, *st);
      break;
    default:
      if (std::holds_alternative<Ok>(value)) return SendStatus(sender, unique, OkStatus());
      break;
  }
  uint64_t suppressed = 0;
  if (later_mismatch_log_.Allow(&suppressed)) {
    Log(LogLevel::kError, "request %u (%s): answered later with the wrong kind of answer; answered EIO", unique,
        proto::OpcodeName(static_cast<uint32_t>(info.op)));
  }
  SendError(sender, unique, EIO);
}

}  // namespace efuse
