// tests/fuzz/make_seed_corpus.cc — writes the request_fuzzer seed corpus.
//
// One small, well-formed request per opcode the decoder knows, plus variants
// that reach the other decoding paths (extension records, the two SETXATTR
// forms, old INIT, BATCH_FORGET counts). The files in tests/fuzz/corpus/ are
// this program's output; after changing it, regenerate them with
//
//   g++ -std=c++20 -I. tests/fuzz/make_seed_corpus.cc -o /tmp/make_seed_corpus
//   rm -f tests/fuzz/corpus/* && /tmp/make_seed_corpus tests/fuzz/corpus
//
// Every seed must decode (with setxattr_ext matching its name); the unit test
// proto_corpus_test checks that and every truncation of every seed.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "proto/abi.h"
#include "tests/fuzz/request_builder.h"

namespace efuse::test {
namespace {

using abi::Opcode;

struct Seed {
  std::string name;
  std::vector<uint8_t> bytes;
};

std::vector<Seed> Seeds() {
  std::vector<Seed> s;
  uint64_t unique = 2;
  auto add = [&](std::string name, RequestBuilder b) {
    b.Unique(unique++);
    s.push_back({std::move(name), b.Build()});
  };
  auto req = [](Opcode op) { return RequestBuilder(op); };

  abi::InitIn init{};
  init.major = 7;
  init.minor = 45;
  init.max_readahead = 128 * 1024;
  init.flags =
      static_cast<uint32_t>(abi::init::kAsyncRead | abi::init::kMaxPages | abi::init::kInitExt);
  init.flags2 = static_cast<uint32_t>((abi::init::kSecurityCtx | abi::init::kOverIoUring) >> 32);
  add("init", std::move(req(Opcode::kInit).NodeId(0).Struct(init)));
  add("init-old", std::move(req(Opcode::kInit).NodeId(0).Struct(init, 16)));
  add("lookup", std::move(req(Opcode::kLookup).NodeId(1).Name("hello.txt")));
  add("forget", std::move(req(Opcode::kForget).Struct(abi::ForgetIn{3})));
  add("getattr", std::move(req(Opcode::kGetattr).Struct(abi::GetattrIn{abi::kGetattrFh, 0, 7})));
  abi::SetattrIn setattr{};
  setattr.valid = abi::kFattrMode | abi::kFattrSize | abi::kFattrMtimeNow;
  setattr.size = 4096;
  setattr.mode = S_IFREG | 0600;
  add("setattr", std::move(req(Opcode::kSetattr).Struct(setattr)));
  add("readlink", req(Opcode::kReadlink));
  add("symlink", std::move(req(Opcode::kSymlink).Name("link").Name("../target")));
  add("mknod",
      std::move(req(Opcode::kMknod).Struct(abi::MknodIn{S_IFIFO | 0644, 0, 022, 0}).Name("fifo")));
  add("mkdir", std::move(req(Opcode::kMkdir).Struct(abi::MkdirIn{0755, 022}).Name("dir")));
  add("mkdir-groups",
      std::move(
          req(Opcode::kMkdir).Struct(abi::MkdirIn{0755, 022}).Name("dir").Groups({100, 200, 300})));
  add("mkdir-secctx", std::move(req(Opcode::kMkdir)
                                    .Struct(abi::MkdirIn{0755, 022})
                                    .Name("dir")
                                    .SecurityContexts({{"security.selinux", "u:r:t:s0"}})));
  add("create-secctx-groups",
      std::move(req(Opcode::kCreate)
                    .Struct(abi::CreateIn{O_CREAT | O_RDWR, S_IFREG | 0644, 022, 0})
                    .Name("file")
                    .SecurityContexts({{"security.selinux", "ctx"}})
                    .Groups({1001})));
  add("unlink", std::move(req(Opcode::kUnlink).Name("gone")));
  add("rmdir", std::move(req(Opcode::kRmdir).Name("olddir")));
  add("rename", std::move(req(Opcode::kRename).Struct(abi::RenameIn{5}).Name("a").Name("b")));
  add("link", std::move(req(Opcode::kLink).Struct(abi::LinkIn{9}).Name("hard")));
  add("open", std::move(req(Opcode::kOpen).Struct(abi::OpenIn{O_RDWR, 0})));
  add("read", std::move(req(Opcode::kRead).Struct(abi::ReadIn{1, 0, 4096, 0, 0, O_RDONLY, 0})));
  add("write", std::move(req(Opcode::kWrite)
                             .Struct(abi::WriteIn{1, 0, 5, abi::kWriteCache, 0, O_WRONLY, 0})
                             .Bytes("hello")));
  add("statfs", req(Opcode::kStatfs));
  add("release", std::move(req(Opcode::kRelease).Struct(abi::ReleaseIn{1, O_RDWR, 0, 0})));
  add("fsync", std::move(req(Opcode::kFsync).Struct(abi::FsyncIn{1, abi::kFsyncFdatasync, 0})));
  add("setxattr", std::move(req(Opcode::kSetxattr)
                                .Struct(abi::SetxattrIn{3, 0, 0, 0}, 8)
                                .Name("user.k")
                                .Bytes("val")));
  add("setxattr-ext", std::move(req(Opcode::kSetxattr)
                                    .Struct(abi::SetxattrIn{3, 0, abi::kSetxattrAclKillSgid, 0})
                                    .Name("user.k")
                                    .Bytes("val")));
  add("getxattr", std::move(req(Opcode::kGetxattr).Struct(abi::GetxattrIn{64, 0}).Name("user.k")));
  add("listxattr", std::move(req(Opcode::kListxattr).Struct(abi::GetxattrIn{0, 0})));
  add("removexattr", std::move(req(Opcode::kRemovexattr).Name("user.k")));
  add("flush", std::move(req(Opcode::kFlush).Struct(abi::FlushIn{1, 0, 0, 0x11})));
  add("opendir", std::move(req(Opcode::kOpendir).Struct(abi::OpenIn{O_RDONLY | O_DIRECTORY, 0})));
  add("readdir", std::move(req(Opcode::kReaddir).Struct(abi::ReadIn{2, 0, 4096, 0, 0, 0, 0})));
  add("releasedir", std::move(req(Opcode::kReleasedir).Struct(abi::ReleaseIn{2, 0, 0, 0})));
  add("fsyncdir", std::move(req(Opcode::kFsyncdir).Struct(abi::FsyncIn{2, 0, 0})));
  add("getlk", std::move(req(Opcode::kGetlk).Struct(abi::LkIn{1, 2, {0, 100, F_RDLCK, 9}, 0, 0})));
  add("setlk", std::move(req(Opcode::kSetlk).Struct(abi::LkIn{1, 2, {0, 100, F_WRLCK, 9}, 0, 0})));
  add("setlkw",
      std::move(
          req(Opcode::kSetlkw).Struct(abi::LkIn{1, 2, {0, 0, F_UNLCK, 9}, abi::kLkFlock, 0})));
  add("access", std::move(req(Opcode::kAccess).Struct(abi::AccessIn{R_OK, 0})));
  add("create", std::move(req(Opcode::kCreate)
                              .Struct(abi::CreateIn{O_CREAT | O_EXCL, S_IFREG | 0600, 077, 0})
                              .Name("new")));
  add("interrupt", std::move(req(Opcode::kInterrupt).Struct(abi::InterruptIn{2})));
  add("bmap", std::move(req(Opcode::kBmap).Struct(abi::BmapIn{10, 4096, 0})));
  add("destroy", req(Opcode::kDestroy));
  add("ioctl", std::move(req(Opcode::kIoctl)
                             .Struct(abi::IoctlIn{1, 0, 0x5401, 0, 4, 8})
                             .Bytes(std::string_view("\x01\x00\x00\x00", 4))));
  add("poll", std::move(req(Opcode::kPoll).Struct(abi::PollIn{1, 5, 1, 1})));
  add("notify-reply",
      std::move(
          req(Opcode::kNotifyReply).Struct(abi::NotifyRetrieveIn{0, 0, 4, 0, 0, 0}).Bytes("data")));
  add("batch-forget", std::move(req(Opcode::kBatchForget)
                                    .Struct(abi::BatchForgetIn{2, 0})
                                    .Struct(abi::ForgetOne{5, 1})
                                    .Struct(abi::ForgetOne{6, 2})));
  add("batch-forget-empty", std::move(req(Opcode::kBatchForget).Struct(abi::BatchForgetIn{0, 0})));
  add("fallocate", std::move(req(Opcode::kFallocate).Struct(abi::FallocateIn{1, 0, 8192, 0, 0})));
  add("readdirplus",
      std::move(req(Opcode::kReaddirplus).Struct(abi::ReadIn{2, 0, 4096, 0, 0, 0, 0})));
  add("rename2",
      std::move(req(Opcode::kRename2).Struct(abi::Rename2In{5, 1, 0}).Name("x").Name("y")));
  add("lseek", std::move(req(Opcode::kLseek).Struct(abi::LseekIn{1, 0, SEEK_HOLE, 0})));
  add("copy-file-range",
      std::move(req(Opcode::kCopyFileRange).Struct(abi::CopyFileRangeIn{1, 0, 3, 2, 0, 4096, 0})));
  add("setupmapping", std::move(req(Opcode::kSetupmapping).Bytes(std::string(40, '\0'))));
  add("removemapping", std::move(req(Opcode::kRemovemapping).Bytes(std::string(8, '\0'))));
  add("syncfs", std::move(req(Opcode::kSyncfs).Struct(abi::SyncfsIn{0})));
  add("tmpfile",
      std::move(
          req(Opcode::kTmpfile).Struct(abi::CreateIn{O_RDWR, S_IFREG | 0600, 0, 0}).Name("/")));
  add("statx", std::move(req(Opcode::kStatx).Struct(abi::StatxIn{0, 0, 0, 0, 0x7ff})));
  add("copy-file-range-64",
      std::move(req(Opcode::kCopyFileRange64).Struct(abi::CopyFileRangeIn{1, 0, 3, 2, 0, 1, 0})));
  add("cuse-init", std::move(req(Opcode::kCuseInit)
                                 .NodeId(0)
                                 .Struct(uint32_t{7})
                                 .Struct(uint32_t{45})
                                 .Struct(uint64_t{0})));
  return s;
}

}  // namespace
}  // namespace efuse::test

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  for (const auto& seed : efuse::test::Seeds()) {
    const std::string path = std::string(argv[1]) + "/" + seed.name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr ||
        std::fwrite(seed.bytes.data(), 1, seed.bytes.size(), f) != seed.bytes.size()) {
      std::perror(path.c_str());
      return 1;
    }
    std::fclose(f);
  }
  return 0;
}
