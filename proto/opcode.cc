#include "proto/opcode.h"

#include <array>

namespace efuse::proto {
namespace {

using abi::Opcode;

constexpr OpcodeTraits T(const char* name, uint16_t in_size, Tail tail = Tail::kNone,
                         uint16_t min_in_size = 0xffff, bool no_reply = false) {
  return OpcodeTraits{name, in_size, min_in_size == 0xffff ? in_size : min_in_size, tail,
                      no_reply};
}

constexpr auto BuildTable() {
  std::array<OpcodeTraits, abi::kMaxOpcode + 1> t{};
  auto set = [&t](Opcode op, OpcodeTraits tr) { t[static_cast<uint32_t>(op)] = tr; };
  set(Opcode::kLookup, T("LOOKUP", 0, Tail::kName));
  set(Opcode::kForget, T("FORGET", sizeof(abi::ForgetIn), Tail::kNone, 0xffff, true));
  set(Opcode::kGetattr, T("GETATTR", sizeof(abi::GetattrIn)));
  set(Opcode::kSetattr, T("SETATTR", sizeof(abi::SetattrIn)));
  set(Opcode::kReadlink, T("READLINK", 0));
  set(Opcode::kSymlink, T("SYMLINK", 0, Tail::kTwoNames));
  set(Opcode::kMknod, T("MKNOD", sizeof(abi::MknodIn), Tail::kName));
  set(Opcode::kMkdir, T("MKDIR", sizeof(abi::MkdirIn), Tail::kName));
  set(Opcode::kUnlink, T("UNLINK", 0, Tail::kName));
  set(Opcode::kRmdir, T("RMDIR", 0, Tail::kName));
  set(Opcode::kRename, T("RENAME", sizeof(abi::RenameIn), Tail::kTwoNames));
  set(Opcode::kLink, T("LINK", sizeof(abi::LinkIn), Tail::kName));
  set(Opcode::kOpen, T("OPEN", sizeof(abi::OpenIn)));
  set(Opcode::kRead, T("READ", sizeof(abi::ReadIn)));
  set(Opcode::kWrite, T("WRITE", sizeof(abi::WriteIn), Tail::kWriteData));
  set(Opcode::kStatfs, T("STATFS", 0));
  set(Opcode::kRelease, T("RELEASE", sizeof(abi::ReleaseIn)));
  set(Opcode::kFsync, T("FSYNC", sizeof(abi::FsyncIn)));
  // Without FUSE_SETXATTR_EXT the kernel sends only {size, flags}.
  set(Opcode::kSetxattr, T("SETXATTR", sizeof(abi::SetxattrIn), Tail::kNameAndValue, 8));
  set(Opcode::kGetxattr, T("GETXATTR", sizeof(abi::GetxattrIn), Tail::kName));
  set(Opcode::kListxattr, T("LISTXATTR", sizeof(abi::GetxattrIn)));
  set(Opcode::kRemovexattr, T("REMOVEXATTR", 0, Tail::kName));
  set(Opcode::kFlush, T("FLUSH", sizeof(abi::FlushIn)));
  // INIT grew over time; the first 16 bytes have always been there.
  set(Opcode::kInit, T("INIT", sizeof(abi::InitIn), Tail::kRest, abi::kCompatInitInSize));
  set(Opcode::kOpendir, T("OPENDIR", sizeof(abi::OpenIn)));
  set(Opcode::kReaddir, T("READDIR", sizeof(abi::ReadIn)));
  set(Opcode::kReleasedir, T("RELEASEDIR", sizeof(abi::ReleaseIn)));
  set(Opcode::kFsyncdir, T("FSYNCDIR", sizeof(abi::FsyncIn)));
  set(Opcode::kGetlk, T("GETLK", sizeof(abi::LkIn)));
  set(Opcode::kSetlk, T("SETLK", sizeof(abi::LkIn)));
  set(Opcode::kSetlkw, T("SETLKW", sizeof(abi::LkIn)));
  set(Opcode::kAccess, T("ACCESS", sizeof(abi::AccessIn)));
  set(Opcode::kCreate, T("CREATE", sizeof(abi::CreateIn), Tail::kName));
  set(Opcode::kInterrupt, T("INTERRUPT", sizeof(abi::InterruptIn)));
  set(Opcode::kBmap, T("BMAP", sizeof(abi::BmapIn)));
  set(Opcode::kDestroy, T("DESTROY", 0));
  set(Opcode::kIoctl, T("IOCTL", sizeof(abi::IoctlIn), Tail::kIoctlData));
  set(Opcode::kPoll, T("POLL", sizeof(abi::PollIn)));
  set(Opcode::kNotifyReply, T("NOTIFY_REPLY", sizeof(abi::NotifyRetrieveIn), Tail::kRest, 0xffff, true));
  set(Opcode::kBatchForget, T("BATCH_FORGET", sizeof(abi::BatchForgetIn), Tail::kForgets, 0xffff, true));
  set(Opcode::kFallocate, T("FALLOCATE", sizeof(abi::FallocateIn)));
  set(Opcode::kReaddirplus, T("READDIRPLUS", sizeof(abi::ReadIn)));
  set(Opcode::kRename2, T("RENAME2", sizeof(abi::Rename2In), Tail::kTwoNames));
  set(Opcode::kLseek, T("LSEEK", sizeof(abi::LseekIn)));
  set(Opcode::kCopyFileRange, T("COPY_FILE_RANGE", sizeof(abi::CopyFileRangeIn)));
  // DAX mappings are virtiofs-only; decoded as opaque bytes and refused.
  set(Opcode::kSetupmapping, T("SETUPMAPPING", 0, Tail::kRest));
  set(Opcode::kRemovemapping, T("REMOVEMAPPING", 0, Tail::kRest));
  set(Opcode::kSyncfs, T("SYNCFS", sizeof(abi::SyncfsIn)));
  set(Opcode::kTmpfile, T("TMPFILE", sizeof(abi::CreateIn), Tail::kName));
  set(Opcode::kStatx, T("STATX", sizeof(abi::StatxIn)));
  set(Opcode::kCopyFileRange64, T("COPY_FILE_RANGE_64", sizeof(abi::CopyFileRangeIn)));
  return t;
}

constexpr auto kTable = BuildTable();
constexpr OpcodeTraits kCuseInit = T("CUSE_INIT", 0, Tail::kRest);

}  // namespace

const OpcodeTraits* TraitsOf(uint32_t opcode) {
  if (opcode < kTable.size() && kTable[opcode].name != nullptr) return &kTable[opcode];
  if (opcode == static_cast<uint32_t>(Opcode::kCuseInit)) return &kCuseInit;
  return nullptr;
}

const char* OpcodeName(uint32_t opcode) {
  const OpcodeTraits* t = TraitsOf(opcode);
  return t != nullptr ? t->name : "UNKNOWN";
}

}  // namespace efuse::proto
