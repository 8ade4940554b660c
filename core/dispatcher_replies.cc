// core/dispatcher_replies.cc — the dispatcher's replies: a backend's
// answer laid out as the kernel's wire structs (Dispatcher::Send*), and the
// conversions they use.
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <string>

#include "core/dispatcher.h"
#include "core/log.h"

namespace efuse {

using proto::Reply;

abi::Attr ToWireAttr(const Attributes& a) {
  abi::Attr w{};
  w.ino = a.ino;
  w.size = a.size;
  w.blocks = a.blocks;
  w.atime = static_cast<uint64_t>(a.atime.tv_sec);
  w.mtime = static_cast<uint64_t>(a.mtime.tv_sec);
  w.ctime = static_cast<uint64_t>(a.ctime.tv_sec);
  w.atimensec = static_cast<uint32_t>(a.atime.tv_nsec);
  w.mtimensec = static_cast<uint32_t>(a.mtime.tv_nsec);
  w.ctimensec = static_cast<uint32_t>(a.ctime.tv_nsec);
  w.mode = a.mode;
  w.nlink = a.nlink;
  w.uid = a.uid;
  w.gid = a.gid;
  w.rdev = a.rdev;
  w.blksize = a.blksize;
  return w;
}

void SplitTimeout(double seconds, uint64_t* sec, uint32_t* nsec) {
  if (!(seconds > 0)) {  // also catches NaN
    *sec = 0;
    *nsec = 0;
    return;
  }
  double whole = std::floor(seconds);
  *sec = whole >= 1e15 ? uint64_t{1000000000000000} : static_cast<uint64_t>(whole);
  *nsec = static_cast<uint32_t>(std::min(999999999.0, (seconds - whole) * 1e9));
}

abi::EntryOut ToWireEntry(const Entry& e) {
  abi::EntryOut w{};
  w.nodeid = e.nodeid;
  w.generation = e.generation;
  SplitTimeout(e.entry_timeout, &w.entry_valid, &w.entry_valid_nsec);
  SplitTimeout(e.attr_timeout, &w.attr_valid, &w.attr_valid_nsec);
  w.attr = ToWireAttr(e.attr);
  return w;
}

namespace {

abi::Statx ToWireStatx(const Attributes& a) {
  abi::Statx s{};
  s.mask = STATX_BASIC_STATS | STATX_BTIME;
  s.blksize = a.blksize;
  s.nlink = a.nlink;
  s.uid = a.uid;
  s.gid = a.gid;
  s.mode = static_cast<uint16_t>(a.mode);
  s.ino = a.ino;
  s.size = a.size;
  s.blocks = a.blocks;
  auto t = [](const timespec& ts) {
    return abi::SxTime{ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec), 0};
  };
  s.atime = t(a.atime);
  s.btime = t(a.btime);
  s.ctime = t(a.ctime);
  s.mtime = t(a.mtime);
  // fuse_attr.rdev is the kernel's new_encode_dev() form.
  s.rdev_major = (a.rdev & 0xfff00) >> 8;
  s.rdev_minor = (a.rdev & 0xff) | ((a.rdev >> 12) & 0xfff00);
  return s;
}

}  // namespace

void Dispatcher::Send(ReplySender& sender, Reply& reply) {
  if (reply.error() != 0) stats_.errors.fetch_add(1, std::memory_order_relaxed);
  int err = sender.Send(reply);
  if (err != 0 && err != ENOENT) Log(LogLevel::kDebug, "reply to %d failed: errno %d", reply.unique(), err);
}

void Dispatcher::SendError(ReplySender& sender, uint64_t unique, int err) {
  if (err == kAnsweredLater.value()) {
    if (sender.AnsweredLater()) return;  // the Later answers
    // A backend said it answers later but took no Later: nothing would.
    uint64_t suppressed = 0;
    if (later_mismatch_log_.Allow(&suppressed)) {
      Log(LogLevel::kError, "request %u: the file system returned kAnsweredLater without taking a Later; answered EIO",
          unique);
    }
    err = EIO;
  }
  Reply r = Reply::Error(unique, err);
  Send(sender, r);
}

void Dispatcher::SendStatus(ReplySender& sender, uint64_t unique, const Status& s) {
  if (!s.ok()) return SendError(sender, unique, s.error().value());
  Reply r(unique);
  Send(sender, r);
}

void Dispatcher::SendEntry(ReplySender& sender, uint64_t unique, uint64_t node, Result<Entry> e) {
  if (!e.ok()) return SendError(sender, unique, e.error().value());
  if (offload_ != nullptr) offload_->AdjustEntry(node, &*e);
  Reply r(unique);
  r.AddStruct(ToWireEntry(*e), proto::EntryOutSize(conn_.minor));
  Send(sender, r);
}

double Dispatcher::AttrTimeout(uint64_t node, const AttrReply& a) const {
  double attr_timeout = a.attr_timeout;
  if (offload_ != nullptr) offload_->AdjustAttr(node, a.attr_volatile, &attr_timeout);
  return attr_timeout;
}

void Dispatcher::SendAttr(ReplySender& sender, uint64_t unique, uint64_t node, const Result<AttrReply>& a) {
  if (!a.ok()) return SendError(sender, unique, a.error().value());
  abi::AttrOut out{};
  SplitTimeout(AttrTimeout(node, *a), &out.attr_valid, &out.attr_valid_nsec);
  out.attr = ToWireAttr(a->attr);
  Reply r(unique);
  r.AddStruct(out, proto::AttrOutSize(conn_.minor));
  Send(sender, r);
}

void Dispatcher::SendStatx(ReplySender& sender, uint64_t unique, uint64_t node, const Result<AttrReply>& a) {
  if (!a.ok()) return SendError(sender, unique, a.error().value());
  abi::StatxOut out{};
  SplitTimeout(AttrTimeout(node, *a), &out.attr_valid, &out.attr_valid_nsec);
  out.stat = ToWireStatx(a->attr);
  Reply r(unique);
  r.AddStruct(out);
  Send(sender, r);
}

void Dispatcher::SendOpen(ReplySender& sender, uint64_t unique, uint64_t node, Result<OpenReply> o) {
  if (!o.ok()) return SendError(sender, unique, o.error().value());
  if (offload_ != nullptr) offload_->AdjustOpen(node, &*o);
  Reply r(unique);
  r.AddStruct(abi::OpenOut{o->fh, o->open_flags, o->backing_id});
  Send(sender, r);
}

void Dispatcher::SendCreate(ReplySender& sender, uint64_t unique, uint64_t node, Result<CreateReply> c) {
  if (!c.ok()) return SendError(sender, unique, c.error().value());
  if (offload_ != nullptr) offload_->AdjustEntry(node, &c->entry);
  Reply r(unique);
  r.AddStruct(ToWireEntry(c->entry), proto::EntryOutSize(conn_.minor));
  r.AddStruct(abi::OpenOut{c->open.fh, c->open.open_flags, c->open.backing_id});
  Send(sender, r);
}

void Dispatcher::SendXattr(ReplySender& sender, uint64_t unique, const Result<std::string>& v, uint32_t size) {
  if (!v.ok()) return SendError(sender, unique, v.error().value());
  Reply r(unique);
  if (size == 0) {
    r.AddStruct(abi::GetxattrOut{static_cast<uint32_t>(v->size()), 0});
  } else if (v->size() > size) {
    return SendError(sender, unique, ERANGE);
  } else {
    r.AddPayload(*v);
  }
  Send(sender, r);
}

void Dispatcher::SendStatfs(ReplySender& sender, uint64_t unique, const Result<FsStats>& s) {
  if (!s.ok()) return SendError(sender, unique, s.error().value());
  abi::StatfsOut out{};
  out.st = {s->blocks, s->bfree, s->bavail, s->files, s->ffree, s->bsize, s->namelen, s->frsize, 0, {}};
  Reply r(unique);
  r.AddStruct(out);
  Send(sender, r);
}

}  // namespace efuse
