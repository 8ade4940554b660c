// core/dispatcher_journal.cc — what the dispatcher keeps for a successor
// (--supervise): which requests must not run twice, the answer a resent
// one gets (replayed from the journal, or amended after its intent), and
// the listings a resent change drops.
#include <fcntl.h>

#include <cerrno>
#include <optional>
#include <string>

#include "core/dispatcher.h"
#include "core/dispatcher_parts.h"

namespace efuse {

using abi::Opcode;
using proto::Reply;
using proto::Request;

std::optional<Reply> Dispatcher::AfterIntent(const Request& req, const RequestContext& ctx, int err) {
  const uint64_t unique = req.header.unique;
  switch (req.opcode()) {
    // The name is gone: the first run removed (or moved) it.
    case Opcode::kUnlink:
    case Opcode::kRmdir:
    case Opcode::kRename:
    case Opcode::kRename2:
      if (err != ENOENT) return std::nullopt;
      return Reply(unique);
    // The attribute is gone, or there: the first run removed or created it.
    case Opcode::kRemovexattr:
      if (err != ENODATA) return std::nullopt;
      return Reply(unique);
    case Opcode::kSetxattr:
      if (err != EEXIST) return std::nullopt;
      return Reply(unique);
    // The name is there: the first run made it; its entry is the answer.
    case Opcode::kMkdir:
    case Opcode::kMknod:
    case Opcode::kSymlink:
    case Opcode::kLink: {
      if (err != EEXIST) return std::nullopt;
      Result<Entry> e = fs_->Lookup(ctx, req.header.nodeid, req.name);
      if (!e.ok()) return std::nullopt;
      Reply r(unique);
      r.AddStruct(ToWireEntry(*e), proto::EntryOutSize(conn_.minor));
      return r;
    }
    // O_EXCL found the file the first run created: it is opened now.
    case Opcode::kCreate: {
      if (err != EEXIST) return std::nullopt;
      auto in = req.Arg<abi::CreateIn>();
      Result<CreateReply> c = fs_->Create(ctx, req.header.nodeid, req.name, in.mode, in.umask,
                                          in.flags & ~static_cast<uint32_t>(O_EXCL | O_TRUNC), in.open_flags);
      if (!c.ok()) return std::nullopt;
      Reply r(unique);
      r.AddStruct(ToWireEntry(c->entry), proto::EntryOutSize(conn_.minor));
      r.AddStruct(abi::OpenOut{c->open.fh, c->open.open_flags, c->open.backing_id});
      return r;
    }
    default:
      return std::nullopt;
  }
}

bool Dispatcher::NotIdempotent(Opcode op) {
  switch (op) {
    case Opcode::kCreate:
    case Opcode::kMknod:
    case Opcode::kMkdir:
    case Opcode::kSymlink:
    case Opcode::kLink:
    case Opcode::kUnlink:
    case Opcode::kRmdir:
    case Opcode::kRename:
    case Opcode::kRename2:
    case Opcode::kTmpfile:
    case Opcode::kSetattr:
    case Opcode::kSetxattr:
    case Opcode::kRemovexattr:
    case Opcode::kWrite:
    case Opcode::kFallocate:
    case Opcode::kCopyFileRange:
    case Opcode::kCopyFileRange64:
    // A second open would leave the first handle behind.
    case Opcode::kOpen:
    case Opcode::kOpendir:
      return true;
    default:
      return false;
  }
}

void Dispatcher::DropListingsOfResent(const Request& req) {
  if (kernel_ == nullptr) return;
  uint64_t dirs[2] = {req.header.nodeid, 0};
  switch (req.opcode()) {
    case Opcode::kCreate: case Opcode::kMknod: case Opcode::kMkdir: case Opcode::kSymlink:
    case Opcode::kLink: case Opcode::kUnlink: case Opcode::kRmdir:
      break;
    case Opcode::kRename:
      dirs[1] = req.Arg<abi::RenameIn>().newdir;
      break;
    case Opcode::kRename2:
      dirs[1] = req.Arg<abi::Rename2In>().newdir;
      break;
    default:
      return;
  }
  if (dirs[1] == dirs[0]) dirs[1] = 0;  // a rename within one directory
  // FUSE_NOTIFY_INVAL_INODE takes no directory lock (fs/fuse/inode.c), so
  // it is safe while this request holds its directories': sent now, before
  // the answer, a listing begun before the change is found incomplete and
  // read again (the race PassthroughFs::NamespaceChanged describes).
  for (uint64_t d : dirs) {
    if (d != 0 && kernel_->InvalidateData(d).ok()) stats_.resent_listing_drops.fetch_add(1, std::memory_order_relaxed);
  }
}

void Dispatcher::ReplayAnswer(const Request& req, const std::string& recorded, ReplySender& sender) {
  abi::OutHeader head{};
  if (recorded.size() < sizeof(head)) return SendError(sender, req.header.unique, EIO);
  std::memcpy(&head, recorded.data(), sizeof(head));
  answers_->header().answers_replayed.fetch_add(1);
  if (head.error != 0) return SendError(sender, req.header.unique, -head.error);
  Reply r(req.header.unique);  // with the resend bit, as the kernel asks
  const std::string_view payload = std::string_view(recorded).substr(sizeof(head));
  if (!payload.empty()) r.AddPayload(payload);
  Send(sender, r);
}

}  // namespace efuse
