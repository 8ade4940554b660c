// tests/unit/memfs_test.cc — MemFs driven through the FileSystem interface,
// as the dispatcher drives it, with root and unprivileged callers.
#include "core/memfs/memfs.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/abi.h"

namespace efuse {
namespace {

constexpr uint64_t kRoot = 1;
constexpr uint64_t kBlock = 4096;

// The errno of a failed result, 0 on success: readable in test failures.
template <typename T>
int Err(const Result<T>& r) {
  return r.ok() ? 0 : r.error().value();
}

RequestContext Ctx(uint32_t uid, uint32_t gid,
                   std::span<const uint32_t> groups = {}) {
  RequestContext ctx;
  ctx.uid = uid;
  ctx.gid = gid;
  ctx.groups = groups;
  return ctx;  // pid 0: no /proc group lookup
}

bool Before(const timespec& a, const timespec& b) {
  return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}
bool Same(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// Lets the realtime clock move on, so the next timestamp differs.
void Tick() { std::this_thread::sleep_for(std::chrono::milliseconds(2)); }

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Collects directory entries; refuses everything after `limit` of them.
class VecSink : public DirSink {
 public:
  struct Item {
    std::string name;
    uint64_t ino;
    uint32_t mode;
    uint64_t next_offset;
    bool has_entry;
    Entry entry;
  };
  explicit VecSink(bool plus, size_t limit = SIZE_MAX)
      : plus_(plus), limit_(limit) {}
  bool Add(std::string_view name, uint64_t ino, uint32_t mode,
           uint64_t next_offset, const Entry* entry) override {
    if (items.size() >= limit_) return false;
    items.push_back({std::string(name), ino, mode, next_offset,
                     entry != nullptr, entry != nullptr ? *entry : Entry{}});
    return true;
  }
  bool plus() const override { return plus_; }

  std::vector<Item> items;

 private:
  bool plus_;
  size_t limit_;
};

constexpr uint32_t kAliceGroups[] = {500};

class MemFsTest : public ::testing::Test {
 protected:
  void Reset(MemFsOptions opts) { fs_ = std::make_unique<MemFs>(opts); }

  // Creates a regular file and closes it; the kernel's lookup stays counted.
  uint64_t MakeFile(const RequestContext& ctx, uint64_t parent,
                    std::string_view name, uint32_t mode = 0644) {
    Result<CreateReply> r =
        fs_->Create(ctx, parent, name, S_IFREG | mode, 0, O_CREAT | O_RDWR);
    EXPECT_EQ(Err(r), 0) << name;
    if (!r) return 0;
    fs_->Release(ctx, r->entry.nodeid, r->open.fh, 0, 0, 0);
    return r->entry.nodeid;
  }
  uint64_t MakeDir(const RequestContext& ctx, uint64_t parent,
                   std::string_view name, uint32_t mode = 0755) {
    Result<Entry> r = fs_->Mkdir(ctx, parent, name, mode, 0);
    EXPECT_EQ(Err(r), 0) << name;
    return r ? r->nodeid : 0;
  }
  uint64_t OpenFh(const RequestContext& ctx, uint64_t id, uint32_t flags) {
    Result<OpenReply> r = fs_->Open(ctx, id, flags, 0);
    EXPECT_EQ(Err(r), 0);
    return r ? r->fh : 0;
  }
  void WriteAt(uint64_t id, uint64_t fh, uint64_t off, std::string_view data) {
    Result<size_t> r = fs_->Write(root_, id, fh, off, Bytes(data), 0, O_RDWR);
    ASSERT_EQ(Err(r), 0);
    EXPECT_EQ(*r, data.size());
  }
  std::string ReadAt(uint64_t id, uint64_t fh, uint64_t off, size_t size) {
    std::string buf(size, '\xee');
    Result<size_t> r = fs_->Read(
        root_, id, fh, off,
        std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), size), 0);
    EXPECT_EQ(Err(r), 0);
    buf.resize(r ? *r : 0);
    return buf;
  }
  // The whole content of a file, through a fresh handle.
  std::string Content(uint64_t id) {
    const uint64_t fh = OpenFh(root_, id, O_RDONLY);
    std::string s = ReadAt(id, fh, 0, Attr(id).size);
    fs_->Release(root_, id, fh, 0, 0, 0);
    return s;
  }
  Attributes Attr(uint64_t id) {
    Result<AttrReply> r = fs_->GetAttr(root_, id, nullptr);
    EXPECT_EQ(Err(r), 0) << "node " << id;
    return r ? r->attr : Attributes{};
  }
  Result<AttrReply> SetMode(const RequestContext& ctx, uint64_t id,
                            uint32_t mode) {
    SetAttrRequest req;
    req.valid = abi::kFattrMode;
    req.mode = mode;
    return fs_->SetAttr(ctx, id, req);
  }
  Result<AttrReply> SetOwner(const RequestContext& ctx, uint64_t id,
                             std::optional<uint32_t> uid,
                             std::optional<uint32_t> gid) {
    SetAttrRequest req;
    if (uid) {
      req.valid |= abi::kFattrUid;
      req.uid = *uid;
    }
    if (gid) {
      req.valid |= abi::kFattrGid;
      req.gid = *gid;
    }
    return fs_->SetAttr(ctx, id, req);
  }
  Result<AttrReply> Truncate(const RequestContext& ctx, uint64_t id,
                             uint64_t size, bool with_fh = false) {
    SetAttrRequest req;
    req.valid = abi::kFattrSize | (with_fh ? abi::kFattrFh : 0);
    req.size = size;
    return fs_->SetAttr(ctx, id, req);
  }
  uint64_t LookupId(uint64_t parent, std::string_view name) {
    Result<Entry> r = fs_->Lookup(root_, parent, name);
    if (!r) return 0;
    fs_->Forget(r->nodeid, 1);  // keep lookup counts as they were
    return r->nodeid;
  }
  // A full READDIR listing without "." and "..".
  std::vector<std::string> List(uint64_t dir) {
    VecSink sink(false);
    EXPECT_EQ(Err(fs_->ReadDir(root_, dir, 0, 0, sink)), 0);
    std::vector<std::string> names;
    for (const auto& item : sink.items) {
      if (item.name != "." && item.name != "..") names.push_back(item.name);
    }
    return names;
  }

  std::unique_ptr<MemFs> fs_ = std::make_unique<MemFs>();
  RequestContext root_ = Ctx(0, 0);
  RequestContext alice_ = Ctx(1000, 1000, kAliceGroups);
  RequestContext bob_ = Ctx(1001, 1001);
  RequestContext carol_ = Ctx(1002, 1000);  // in alice's primary group
};

TEST_F(MemFsTest, RootAndBasics) {
  EXPECT_EQ(fs_->Name(), "memfs");
  EXPECT_EQ(fs_->InodeCount(), 1u);
  Attributes root = Attr(kRoot);
  EXPECT_EQ(root.ino, kRoot);
  EXPECT_EQ(root.mode, S_IFDIR | 0755u);
  EXPECT_EQ(root.nlink, 2u);
  Reset({.root_uid = 7, .root_gid = 8, .root_mode = 01777});
  root = Attr(kRoot);
  EXPECT_EQ(root.mode, S_IFDIR | 01777u);
  EXPECT_EQ(root.uid, 7u);
  EXPECT_EQ(root.gid, 8u);
}

TEST_F(MemFsTest, CreateWriteReadBack) {
  Result<CreateReply> c =
      fs_->Create(root_, kRoot, "f", S_IFREG | 0644, 022, O_CREAT | O_RDWR);
  ASSERT_EQ(Err(c), 0);
  const uint64_t id = c->entry.nodeid;
  EXPECT_EQ(id, 2u);
  EXPECT_EQ(c->entry.generation, 0u);
  EXPECT_EQ(c->entry.attr.ino, id);
  EXPECT_EQ(c->entry.attr.mode, S_IFREG | 0644u);
  EXPECT_EQ(c->open.open_flags, abi::kFopenNoflush);  // no FLUSH round trip on close
  WriteAt(id, c->open.fh, 0, "hello world");
  EXPECT_EQ(ReadAt(id, c->open.fh, 0, 100), "hello world");  // short at EOF
  EXPECT_EQ(ReadAt(id, c->open.fh, 6, 5), "world");
  EXPECT_EQ(ReadAt(id, c->open.fh, 11, 10), "");    // at EOF
  EXPECT_EQ(ReadAt(id, c->open.fh, 1000, 10), "");  // past EOF
  Attributes a = Attr(id);
  EXPECT_EQ(a.size, 11u);
  EXPECT_EQ(a.blocks, kBlock / 512);
  EXPECT_EQ(a.uid, 0u);
  EXPECT_EQ(a.nlink, 1u);
  fs_->Release(root_, id, c->open.fh, 0, 0, 0);
  EXPECT_EQ(fs_->OpenHandleCount(), 0u);
  // Ids keep increasing.
  EXPECT_EQ(MakeFile(root_, kRoot, "g"), 3u);
  EXPECT_EQ(Err(fs_->Read(root_, kRoot, 0, 0, {}, 0)), EISDIR);
  EXPECT_EQ(Err(fs_->Fsync(root_, id, 0, false)), 0);
  EXPECT_EQ(Err(fs_->Flush(root_, id, 0, 0)), 0);
  EXPECT_EQ(Err(fs_->SyncFs(root_)), 0);
}

// An open drops the kernel's cached pages (no FOPEN_KEEP_CACHE) unless
// another handle may be writing: then a dropped page could be read back
// from memfs before that writer's WRITE arrives and stay cached over it.
TEST_F(MemFsTest, OpensKeepTheCacheWhileAnotherHandleWrites) {
  const uint64_t id = MakeFile(root_, kRoot, "f");
  auto keeps = [&](uint32_t flags) {
    Result<OpenReply> r = fs_->Open(root_, id, flags, 0);
    EXPECT_EQ(Err(r), 0);
    if (!r) return false;
    fs_->Release(root_, id, r->fh, 0, 0, 0);
    return (r->open_flags & abi::kFopenKeepCache) != 0;
  };
  EXPECT_FALSE(keeps(O_RDONLY));
  EXPECT_FALSE(keeps(O_RDWR)) << "its own writes do not count";
  const uint64_t writer = OpenFh(root_, id, O_WRONLY);
  WriteAt(id, writer, 0, "changed");
  EXPECT_TRUE(keeps(O_RDONLY));
  EXPECT_TRUE(keeps(O_RDWR));
  EXPECT_FALSE(keeps(O_RDWR | O_TRUNC)) << "truncated: the pages must go";
  fs_->Release(root_, id, writer, 0, 0, 0);
  EXPECT_FALSE(keeps(O_RDONLY));
}

TEST_F(MemFsTest, AppendWritesAtEnd) {
  const uint64_t id = MakeFile(root_, kRoot, "f");
  const uint64_t fh = OpenFh(root_, id, O_WRONLY | O_APPEND);
  ASSERT_EQ(*fs_->Write(root_, id, fh, 0, Bytes("abc"), 0, O_WRONLY | O_APPEND),
            3u);
  ASSERT_EQ(*fs_->Write(root_, id, fh, 0, Bytes("def"), 0, O_WRONLY | O_APPEND),
            3u);
  EXPECT_EQ(Content(id), "abcdef");
}

TEST_F(MemFsTest, SparseSixteenGibFile) {
  const uint64_t id = MakeFile(root_, kRoot, "sparse");
  const uint64_t fh = OpenFh(root_, id, O_RDWR);
  const uint64_t k16G = 16ULL << 30;
  WriteAt(id, fh, k16G, "x");
  Attributes a = Attr(id);
  EXPECT_EQ(a.size, k16G + 1);
  EXPECT_EQ(a.blocks, kBlock / 512);
  EXPECT_EQ(fs_->BytesUsed(), kBlock);
  EXPECT_EQ(ReadAt(id, fh, 1ULL << 30, 8192), std::string(8192, '\0'));
  EXPECT_EQ(ReadAt(id, fh, k16G - 2, 10), std::string("\0\0x", 3));
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, 0, SEEK_DATA), k16G);
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, 0, SEEK_HOLE), 0u);
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, k16G, SEEK_DATA), k16G);
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, k16G, SEEK_HOLE), k16G + 1);
  EXPECT_EQ(Err(fs_->Lseek(root_, id, fh, k16G + 1, SEEK_DATA)), ENXIO);
  EXPECT_EQ(Err(fs_->Lseek(root_, id, fh, k16G + 1, SEEK_HOLE)), ENXIO);
  EXPECT_EQ(Err(fs_->Lseek(root_, id, fh, 0, SEEK_SET)), EINVAL);
  // Data in the middle of a block, then a hole after it.
  WriteAt(id, fh, 10000, "abc");
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, 0, SEEK_DATA), 8192u);
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, 9000, SEEK_DATA), 9000u);
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, 9000, SEEK_HOLE), 12288u);
  EXPECT_EQ(*fs_->Lseek(root_, id, fh, 12288, SEEK_DATA), k16G);
  // 1 TiB is the limit.
  const uint64_t kTiB = 1ULL << 40;
  EXPECT_EQ(Err(fs_->Write(root_, id, fh, kTiB, Bytes("y"), 0, O_RDWR)), EFBIG);
  Result<size_t> w =
      fs_->Write(root_, id, fh, kTiB - 1, Bytes("yz"), 0, O_RDWR);
  ASSERT_EQ(Err(w), 0);
  EXPECT_EQ(*w, 1u);
  EXPECT_EQ(Attr(id).size, kTiB);
  EXPECT_EQ(Err(Truncate(root_, id, kTiB + 1)), EFBIG);
  fs_->Release(root_, id, fh, 0, 0, 0);
}

TEST_F(MemFsTest, TruncateShrinkAndGrow) {
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  const uint64_t id = MakeFile(alice_, pub, "f", 0644);
  const uint64_t fh = OpenFh(root_, id, O_RDWR);
  std::string data(10000, 'a');
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<char>('a' + i % 26);
  WriteAt(id, fh, 0, data);
  EXPECT_EQ(fs_->BytesUsed(), 3 * kBlock);
  const Attributes before = Attr(id);
  Tick();
  Result<AttrReply> r = Truncate(alice_, id, 5000);
  ASSERT_EQ(Err(r), 0);
  EXPECT_EQ(r->attr.size, 5000u);
  EXPECT_EQ(r->attr.blocks, 2 * kBlock / 512);
  EXPECT_EQ(fs_->BytesUsed(), 2 * kBlock);
  EXPECT_TRUE(Before(before.mtime, r->attr.mtime));
  EXPECT_TRUE(Before(before.ctime, r->attr.ctime));
  ASSERT_EQ(Err(Truncate(alice_, id, 20000)), 0);
  EXPECT_EQ(fs_->BytesUsed(), 2 * kBlock);  // growing makes a hole
  const std::string all = ReadAt(id, fh, 0, 30000);
  ASSERT_EQ(all.size(), 20000u);
  EXPECT_EQ(all.substr(0, 5000), data.substr(0, 5000));
  EXPECT_EQ(all.substr(5000), std::string(15000, '\0'));
  // Same size still moves mtime/ctime (ftruncate semantics).
  const Attributes mid = Attr(id);
  Tick();
  ASSERT_EQ(Err(Truncate(alice_, id, 20000)), 0);
  EXPECT_TRUE(Before(mid.mtime, Attr(id).mtime));
  // Rules.
  EXPECT_EQ(Err(Truncate(root_, kRoot, 0)), EISDIR);
  EXPECT_EQ(Err(Truncate(bob_, id, 0)), EACCES);
  EXPECT_EQ(Err(Truncate(bob_, id, 0, /*with_fh=*/true)), 0);
  EXPECT_EQ(Attr(id).size, 0u);
  EXPECT_EQ(fs_->BytesUsed(), 0u);
  fs_->Release(root_, id, fh, 0, 0, 0);
}

TEST_F(MemFsTest, NoSpaceAndStatFs) {
  Reset({.size_limit = 4 * kBlock});
  Result<FsStats> st = fs_->StatFs(root_, kRoot);
  ASSERT_EQ(Err(st), 0);
  EXPECT_EQ(st->bsize, kBlock);
  EXPECT_EQ(st->frsize, kBlock);
  EXPECT_EQ(st->namelen, 255u);
  EXPECT_EQ(st->blocks, 4u);
  EXPECT_EQ(st->bfree, 4u);
  EXPECT_EQ(st->bavail, 4u);
  const uint64_t id = MakeFile(root_, kRoot, "f");
  const uint64_t fh = OpenFh(root_, id, O_RDWR);
  WriteAt(id, fh, 0, std::string(3 * kBlock, 'a'));
  EXPECT_EQ(fs_->StatFs(root_, kRoot)->bfree, 1u);
  // Partly fits: the part that fits is written.
  Result<size_t> w = fs_->Write(root_, id, fh, 3 * kBlock,
                                Bytes(std::string(2 * kBlock, 'b')), 0, O_RDWR);
  ASSERT_EQ(Err(w), 0);
  EXPECT_EQ(*w, kBlock);
  EXPECT_EQ(fs_->BytesUsed(), 4 * kBlock);
  EXPECT_EQ(fs_->StatFs(root_, kRoot)->bfree, 0u);
  EXPECT_EQ(Err(fs_->Write(root_, id, fh, 4 * kBlock, Bytes("c"), 0, O_RDWR)),
            ENOSPC);
  WriteAt(id, fh, 0, "overwrite needs no new block");
  // Allocation that does not fit allocates nothing.
  EXPECT_EQ(Err(fs_->Fallocate(root_, id, fh, 8 * kBlock, 2 * kBlock, 0)),
            ENOSPC);
  EXPECT_EQ(Attr(id).size, 4 * kBlock);
  EXPECT_EQ(fs_->BytesUsed(), 4 * kBlock);
  EXPECT_EQ(Err(fs_->SetXattr(root_, id, "user.a", Bytes("0123456789"), 0, 0)),
            ENOSPC);
  EXPECT_EQ(Err(fs_->Symlink(root_, kRoot, "s", "target")), ENOSPC);
  ASSERT_EQ(Err(Truncate(root_, id, kBlock)), 0);
  EXPECT_EQ(fs_->BytesUsed(), kBlock);
  EXPECT_EQ(Err(fs_->SetXattr(root_, id, "user.a", Bytes("0123456789"), 0, 0)),
            0);
  EXPECT_EQ(fs_->BytesUsed(), kBlock + 16);
  ASSERT_EQ(Err(Truncate(root_, id, 1ULL << 30)), 0);  // a hole costs nothing
  EXPECT_EQ(fs_->BytesUsed(), kBlock + 16);
  fs_->Release(root_, id, fh, 0, 0, 0);
  ASSERT_EQ(Err(fs_->Unlink(root_, kRoot, "f")), 0);
  fs_->Forget(id, 1);
  EXPECT_EQ(fs_->BytesUsed(), 0u);
  EXPECT_EQ(fs_->StatFs(root_, kRoot)->bfree, 4u);
}

TEST_F(MemFsTest, InodeLimit) {
  Reset({.max_inodes = 3});
  EXPECT_EQ(fs_->StatFs(root_, kRoot)->files, 3u);
  EXPECT_EQ(fs_->StatFs(root_, kRoot)->ffree, 2u);
  const uint64_t d = MakeDir(root_, kRoot, "d");
  const uint64_t f = MakeFile(root_, d, "f");
  EXPECT_EQ(fs_->StatFs(root_, kRoot)->ffree, 0u);
  EXPECT_EQ(
      Err(fs_->Create(root_, kRoot, "g", S_IFREG | 0644, 0, O_CREAT | O_RDWR)),
      ENOSPC);
  EXPECT_EQ(Err(fs_->Mkdir(root_, kRoot, "e", 0755, 0)), ENOSPC);
  EXPECT_EQ(Err(fs_->Symlink(root_, kRoot, "s", "t")), ENOSPC);
  EXPECT_EQ(Err(fs_->Mknod(root_, kRoot, "p", S_IFIFO | 0644, 0, 0)), ENOSPC);
  EXPECT_EQ(Err(fs_->TmpFile(root_, kRoot, 0644, 0, O_RDWR)), ENOSPC);
  // A hard link needs no inode.
  EXPECT_EQ(Err(fs_->Link(root_, f, kRoot, "f2")), 0);
  fs_->Forget(f, 2);
  ASSERT_EQ(Err(fs_->Unlink(root_, d, "f")), 0);
  ASSERT_EQ(Err(fs_->Unlink(root_, kRoot, "f2")), 0);
  EXPECT_EQ(fs_->InodeCount(), 2u);
  EXPECT_NE(MakeFile(root_, kRoot, "g"), 0u);
}

TEST_F(MemFsTest, MkdirRmdir) {
  const Attributes root0 = Attr(kRoot);
  Tick();
  const uint64_t d = MakeDir(root_, kRoot, "d", 0750);
  Attributes a = Attr(d);
  EXPECT_EQ(a.mode, S_IFDIR | 0750u);
  EXPECT_EQ(a.nlink, 2u);
  EXPECT_EQ(Attr(kRoot).nlink, 3u);
  EXPECT_TRUE(Before(root0.mtime, Attr(kRoot).mtime));
  EXPECT_TRUE(Before(root0.ctime, Attr(kRoot).ctime));
  EXPECT_EQ(Err(fs_->Mkdir(root_, kRoot, "umask", 0777, 022)), 0);
  EXPECT_EQ(Attr(LookupId(kRoot, "umask")).mode, S_IFDIR | 0755u);
  const uint64_t e = MakeDir(root_, d, "e");
  EXPECT_EQ(Attr(d).nlink, 3u);
  MakeFile(root_, d, "file");
  EXPECT_EQ(Attr(d).nlink, 3u);  // files do not count
  EXPECT_EQ(Err(fs_->Mkdir(root_, kRoot, "d", 0755, 0)), EEXIST);
  EXPECT_EQ(Err(fs_->Mkdir(root_, kRoot, std::string(256, 'n'), 0755, 0)),
            ENAMETOOLONG);
  EXPECT_EQ(Err(fs_->Mkdir(root_, kRoot, std::string(255, 'n'), 0755, 0)), 0);
  EXPECT_EQ(Err(fs_->Lookup(root_, kRoot, std::string(256, 'n'))),
            ENAMETOOLONG);
  EXPECT_EQ(Err(fs_->Mkdir(root_, LookupId(d, "file"), "x", 0755, 0)), ENOTDIR);
  EXPECT_EQ(Err(fs_->Rmdir(root_, kRoot, "d")), ENOTEMPTY);
  EXPECT_EQ(Err(fs_->Rmdir(root_, d, "file")), ENOTDIR);
  EXPECT_EQ(Err(fs_->Rmdir(root_, d, "missing")), ENOENT);
  EXPECT_EQ(Err(fs_->Unlink(root_, d, "e")), EISDIR);
  EXPECT_EQ(LookupId(e, ".."), d);
  EXPECT_EQ(LookupId(e, "."), e);
  EXPECT_EQ(LookupId(kRoot, ".."), kRoot);
  ASSERT_EQ(Err(fs_->Rmdir(root_, d, "e")), 0);
  EXPECT_EQ(Attr(d).nlink, 2u);
  // Still known to the kernel: alive but empty and unlinked.
  EXPECT_EQ(Attr(e).nlink, 0u);
  EXPECT_EQ(Err(fs_->Lookup(root_, e, "..")), ENOENT);
  EXPECT_EQ(Err(fs_->Create(root_, e, "x", S_IFREG | 0644, 0, O_CREAT)),
            ENOENT);
  EXPECT_EQ(Err(fs_->Mkdir(root_, e, "x", 0755, 0)), ENOENT);
  const size_t count = fs_->InodeCount();
  fs_->Forget(e, fs_->LookupCount(e));
  EXPECT_EQ(fs_->InodeCount(), count - 1);
}

TEST_F(MemFsTest, LookupCountsAndForget) {
  const uint64_t f = MakeFile(root_, kRoot, "f");
  EXPECT_EQ(fs_->LookupCount(f), 1u);
  ASSERT_EQ(Err(fs_->Lookup(root_, kRoot, "f")), 0);
  EXPECT_EQ(fs_->LookupCount(f), 2u);
  fs_->Forget(f, 2);
  EXPECT_EQ(fs_->LookupCount(f), 0u);
  EXPECT_EQ(fs_->InodeCount(), 2u);  // still linked
  ASSERT_EQ(Err(fs_->Unlink(root_, kRoot, "f")), 0);
  EXPECT_EQ(fs_->InodeCount(), 1u);  // no link, no lookup, no handle
  EXPECT_EQ(Err(fs_->GetAttr(root_, f, nullptr)), ENOENT);

  const uint64_t g = MakeFile(root_, kRoot, "g");
  ASSERT_EQ(Err(fs_->Unlink(root_, kRoot, "g")), 0);
  EXPECT_EQ(fs_->InodeCount(), 2u);  // the kernel still holds it
  EXPECT_EQ(Attr(g).nlink, 0u);
  fs_->Forget(g, 5);  // more than held: clamped
  EXPECT_EQ(fs_->InodeCount(), 1u);
  fs_->Forget(g, 1);        // unknown node: ignored
  fs_->Forget(kRoot, 100);  // never frees the root
  EXPECT_EQ(Attr(kRoot).ino, kRoot);

  // Every entry-returning call counts.
  const uint64_t d = MakeDir(root_, kRoot, "d");
  EXPECT_EQ(fs_->LookupCount(d), 1u);
  Result<Entry> s = fs_->Symlink(root_, kRoot, "s", "t");
  EXPECT_EQ(fs_->LookupCount(s->nodeid), 1u);
  Result<Entry> p = fs_->Mknod(root_, kRoot, "p", S_IFIFO | 0600, 0, 0);
  EXPECT_EQ(fs_->LookupCount(p->nodeid), 1u);
  const uint64_t h = MakeFile(root_, kRoot, "h");
  ASSERT_EQ(Err(fs_->Link(root_, h, d, "h2")), 0);
  EXPECT_EQ(fs_->LookupCount(h), 2u);
  Result<CreateReply> t = fs_->TmpFile(root_, kRoot, 0600, 0, O_RDWR);
  EXPECT_EQ(fs_->LookupCount(t->entry.nodeid), 1u);
  fs_->Release(root_, t->entry.nodeid, t->open.fh, 0, 0, 0);
  fs_->Forget(t->entry.nodeid, 1);
  EXPECT_EQ(fs_->LookupCount(t->entry.nodeid), 0u);
}

TEST_F(MemFsTest, NegativeLookupAndTimeouts) {
  EXPECT_EQ(Err(fs_->Lookup(root_, kRoot, "missing")), ENOENT);
  Reset({.entry_timeout = 3.0, .attr_timeout = 4.0, .negative_timeout = 2.5});
  Result<Entry> neg = fs_->Lookup(root_, kRoot, "missing");
  ASSERT_EQ(Err(neg), 0);
  EXPECT_EQ(neg->nodeid, 0u);
  EXPECT_EQ(neg->entry_timeout, 2.5);
  const uint64_t f = MakeFile(root_, kRoot, "f");
  Result<Entry> e = fs_->Lookup(root_, kRoot, "f");
  ASSERT_EQ(Err(e), 0);
  EXPECT_EQ(e->nodeid, f);
  EXPECT_EQ(e->entry_timeout, 3.0);
  EXPECT_EQ(e->attr_timeout, 4.0);
  EXPECT_EQ(fs_->GetAttr(root_, f, nullptr)->attr_timeout, 4.0);
  EXPECT_EQ(Err(fs_->Lookup(root_, f, "x")), ENOTDIR);
  EXPECT_EQ(Err(fs_->Lookup(root_, 999, "x")), ENOENT);
}

TEST_F(MemFsTest, CreateSemantics) {
  const uint64_t f = MakeFile(root_, kRoot, "f");
  EXPECT_EQ(Err(fs_->Create(root_, kRoot, "f", S_IFREG | 0644, 0,
                            O_CREAT | O_EXCL | O_RDWR)),
            EEXIST);
  const uint64_t fh0 = OpenFh(root_, f, O_WRONLY);
  WriteAt(f, fh0, 0, "content");
  fs_->Release(root_, f, fh0, 0, 0, 0);
  Result<CreateReply> again =
      fs_->Create(root_, kRoot, "f", S_IFREG | 0600, 0, O_CREAT | O_RDWR);
  ASSERT_EQ(Err(again), 0);
  EXPECT_EQ(again->entry.nodeid, f);
  EXPECT_EQ(again->entry.attr.mode, S_IFREG | 0644u);  // the existing file
  EXPECT_EQ(fs_->LookupCount(f), 2u);
  EXPECT_EQ(ReadAt(f, again->open.fh, 0, 100), "content");
  fs_->Release(root_, f, again->open.fh, 0, 0, 0);
  Result<CreateReply> trunc = fs_->Create(root_, kRoot, "f", S_IFREG | 0644, 0,
                                          O_CREAT | O_RDWR | O_TRUNC);
  ASSERT_EQ(Err(trunc), 0);
  EXPECT_EQ(trunc->entry.attr.size, 0u);
  fs_->Release(root_, f, trunc->open.fh, 0, 0, 0);
  // O_TRUNC over an existing setuid file with the kernel's kill flag.
  SetAttrRequest suid;
  suid.valid = abi::kFattrMode;
  suid.mode = 04755;
  ASSERT_EQ(Err(fs_->SetAttr(root_, f, suid)), 0);
  Result<CreateReply> killed = fs_->Create(root_, kRoot, "f", S_IFREG | 0644, 0,
                                           O_CREAT | O_RDWR | O_TRUNC,
                                           abi::kOpenKillSuidgid);
  ASSERT_EQ(Err(killed), 0);
  EXPECT_EQ(killed->entry.attr.mode & 07777, 0755u);
  fs_->Release(root_, f, killed->open.fh, 0, 0, 0);
  MakeDir(root_, kRoot, "d");
  EXPECT_EQ(
      Err(fs_->Create(root_, kRoot, "d", S_IFREG | 0644, 0, O_CREAT | O_RDWR)),
      EISDIR);
  EXPECT_EQ(Err(fs_->Create(root_, kRoot, std::string(256, 'x'), S_IFREG | 0644,
                            0, O_CREAT)),
            ENAMETOOLONG);
  // umask applies; a new file opens whatever its mode.
  Result<CreateReply> ro = fs_->Create(alice_, LookupId(kRoot, "d"), "x",
                                       S_IFREG | 0666, 0, O_CREAT | O_RDWR);
  EXPECT_EQ(Err(ro), EACCES);  // d is 0755 root
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  Result<CreateReply> nomode =
      fs_->Create(alice_, pub, "x", S_IFREG | 0444, 022, O_CREAT | O_RDWR);
  ASSERT_EQ(Err(nomode), 0);
  EXPECT_EQ(nomode->entry.attr.mode, S_IFREG | 0444u);
  EXPECT_EQ(nomode->entry.attr.uid, 1000u);
  EXPECT_EQ(nomode->entry.attr.gid, 1000u);
  fs_->Release(alice_, nomode->entry.nodeid, nomode->open.fh, 0, 0, 0);
  Result<CreateReply> masked =
      fs_->Create(alice_, pub, "y", S_IFREG | 0666, 027, O_CREAT | O_RDWR);
  EXPECT_EQ(masked->entry.attr.mode, S_IFREG | 0640u);
  fs_->Release(alice_, masked->entry.nodeid, masked->open.fh, 0, 0, 0);
}

TEST_F(MemFsTest, UnlinkWhileOpen) {
  const uint64_t f = MakeFile(root_, kRoot, "f");
  const uint64_t fh = OpenFh(root_, f, O_RDWR);
  WriteAt(f, fh, 0, "data");
  ASSERT_EQ(Err(fs_->Unlink(root_, kRoot, "f")), 0);
  fs_->Forget(f, 1);
  EXPECT_EQ(Err(fs_->Lookup(root_, kRoot, "f")), ENOENT);
  EXPECT_EQ(fs_->InodeCount(), 2u);  // the handle keeps it
  EXPECT_EQ(ReadAt(f, fh, 0, 100), "data");
  WriteAt(f, fh, 4, "more");
  EXPECT_EQ(ReadAt(f, fh, 0, 100), "datamore");
  EXPECT_EQ(Attr(f).nlink, 0u);
  EXPECT_EQ(fs_->BytesUsed(), kBlock);
  fs_->Release(root_, f, fh, 0, 0, 0);
  EXPECT_EQ(fs_->InodeCount(), 1u);
  EXPECT_EQ(fs_->BytesUsed(), 0u);
  fs_->Release(root_, f, fh, 0, 0, 0);  // a second release is ignored
}

// The last release of an unlinked file frees it, whether the kernel's
// FORGET came before it, after it or at the same time (a release holds
// the tree shared, a FORGET exclusively): it is never left behind.
TEST_F(MemFsTest, LastReleaseAndForgetRacingFreeTheFile) {
  for (int i = 0; i < 500; ++i) {
    const std::string name = "f" + std::to_string(i);
    const uint64_t f = MakeFile(root_, kRoot, name);
    const uint64_t fh = OpenFh(root_, f, O_RDWR);
    WriteAt(f, fh, 0, "data");
    ASSERT_EQ(Err(fs_->Unlink(root_, kRoot, name)), 0);
    // Either one started first, in turn.
    const auto release = [&] { fs_->Release(root_, f, fh, 0, 0, 0); };
    const auto forget = [&] { fs_->Forget(f, 1); };
    std::thread first = i % 2 == 0 ? std::thread(release) : std::thread(forget);
    std::thread second = i % 2 == 0 ? std::thread(forget) : std::thread(release);
    first.join();
    second.join();
    ASSERT_EQ(fs_->InodeCount(), 1u) << "round " << i;
    ASSERT_EQ(fs_->BytesUsed(), 0u) << "round " << i;
  }
}

TEST_F(MemFsTest, TmpFileThenLink) {
  const uint64_t d = MakeDir(root_, kRoot, "d", 0755);
  Result<CreateReply> t = fs_->TmpFile(root_, d, 0666, 022, O_RDWR);
  ASSERT_EQ(Err(t), 0);
  const uint64_t id = t->entry.nodeid;
  EXPECT_EQ(t->entry.attr.nlink, 0u);
  EXPECT_EQ(t->entry.attr.mode, S_IFREG | 0644u);
  EXPECT_TRUE(List(d).empty());
  WriteAt(id, t->open.fh, 0, "tmp");
  Result<Entry> l = fs_->Link(root_, id, d, "named");
  ASSERT_EQ(Err(l), 0);
  EXPECT_EQ(l->attr.nlink, 1u);
  EXPECT_EQ(LookupId(d, "named"), id);
  fs_->Release(root_, id, t->open.fh, 0, 0, 0);
  fs_->Forget(id, 2);
  EXPECT_EQ(Content(id), "tmp");
  // Never linked: gone at the last release/forget.
  const size_t count = fs_->InodeCount();
  Result<CreateReply> t2 = fs_->TmpFile(root_, d, 0600, 0, O_RDWR);
  ASSERT_EQ(Err(t2), 0);
  WriteAt(t2->entry.nodeid, t2->open.fh, 0, "gone");
  fs_->Release(root_, t2->entry.nodeid, t2->open.fh, 0, 0, 0);
  fs_->Forget(t2->entry.nodeid, 1);
  EXPECT_EQ(fs_->InodeCount(), count);
  EXPECT_EQ(fs_->BytesUsed(), kBlock);
  // Needs write and search on the directory.
  EXPECT_EQ(Err(fs_->TmpFile(bob_, d, 0600, 0, O_RDWR)), EACCES);
}

TEST_F(MemFsTest, HardLinks) {
  const uint64_t d = MakeDir(root_, kRoot, "d");
  const uint64_t f = MakeFile(root_, kRoot, "f");
  const Attributes before = Attr(f);
  const Attributes dir_before = Attr(d);
  Tick();
  Result<Entry> l = fs_->Link(root_, f, d, "g");
  ASSERT_EQ(Err(l), 0);
  EXPECT_EQ(l->nodeid, f);
  EXPECT_EQ(l->attr.nlink, 2u);
  EXPECT_TRUE(Before(before.ctime, l->attr.ctime));
  EXPECT_TRUE(Same(before.mtime, l->attr.mtime));
  EXPECT_TRUE(Before(dir_before.mtime, Attr(d).mtime));
  EXPECT_EQ(Err(fs_->Link(root_, f, d, "g")), EEXIST);
  EXPECT_EQ(Err(fs_->Link(root_, d, kRoot, "dirlink")), EPERM);
  EXPECT_EQ(Err(fs_->Link(root_, f, f, "x")), ENOTDIR);
  EXPECT_EQ(Err(fs_->Link(bob_, f, d, "x")), EACCES);  // d is 0755 root
  const uint64_t fh = OpenFh(root_, f, O_RDWR);
  WriteAt(f, fh, 0, "shared");
  fs_->Release(root_, f, fh, 0, 0, 0);
  ASSERT_EQ(Err(fs_->Unlink(root_, kRoot, "f")), 0);
  EXPECT_EQ(Attr(f).nlink, 1u);
  EXPECT_EQ(Content(LookupId(d, "g")), "shared");
}

TEST_F(MemFsTest, Symlinks) {
  Result<Entry> s = fs_->Symlink(alice_, kRoot, "s", "target/path");
  EXPECT_EQ(Err(s), EACCES);  // root dir is 0755 root
  s = fs_->Symlink(root_, kRoot, "s", "target/path");
  ASSERT_EQ(Err(s), 0);
  EXPECT_EQ(s->attr.mode, S_IFLNK | 0777u);
  EXPECT_EQ(s->attr.size, 11u);
  EXPECT_EQ(*fs_->ReadLink(root_, s->nodeid), "target/path");
  EXPECT_EQ(fs_->BytesUsed(), 11u);
  const uint64_t f = MakeFile(root_, kRoot, "f");
  EXPECT_EQ(Err(fs_->ReadLink(root_, f)), EINVAL);
  EXPECT_EQ(Err(fs_->Symlink(root_, kRoot, "long", std::string(4096, 'x'))),
            ENAMETOOLONG);
  EXPECT_EQ(Err(fs_->Symlink(root_, kRoot, "max", std::string(4095, 'x'))), 0);
  EXPECT_EQ(Err(fs_->Symlink(root_, kRoot, "s", "other")), EEXIST);
  EXPECT_EQ(Err(fs_->Open(root_, s->nodeid, O_RDONLY, 0)), ELOOP);
  // user.* xattrs do not live on symlinks.
  EXPECT_EQ(Err(fs_->SetXattr(root_, s->nodeid, "user.x", Bytes("v"), 0, 0)),
            EPERM);
}

TEST_F(MemFsTest, MknodTypes) {
  Result<Entry> fifo = fs_->Mknod(root_, kRoot, "fifo", S_IFIFO | 0666, 0, 022);
  ASSERT_EQ(Err(fifo), 0);
  EXPECT_EQ(fifo->attr.mode, S_IFIFO | 0644u);
  Result<Entry> chr =
      fs_->Mknod(root_, kRoot, "chr", S_IFCHR | 0600, 0x0103, 0);
  ASSERT_EQ(Err(chr), 0);
  EXPECT_EQ(chr->attr.mode, S_IFCHR | 0600u);
  EXPECT_EQ(chr->attr.rdev, 0x0103u);
  Result<Entry> blk =
      fs_->Mknod(root_, kRoot, "blk", S_IFBLK | 0600, 0x0801, 0);
  EXPECT_EQ(blk->attr.rdev, 0x0801u);
  EXPECT_EQ(blk->attr.mode & S_IFMT, static_cast<uint32_t>(S_IFBLK));
  Result<Entry> sock = fs_->Mknod(root_, kRoot, "sock", S_IFSOCK | 0755, 0, 0);
  EXPECT_EQ(sock->attr.mode, S_IFSOCK | 0755u);
  Result<Entry> reg = fs_->Mknod(root_, kRoot, "reg", 0644, 0, 0);
  EXPECT_EQ(reg->attr.mode, S_IFREG | 0644u);
  EXPECT_EQ(Err(fs_->Mknod(root_, kRoot, "dir", S_IFDIR | 0755, 0, 0)), EPERM);
  EXPECT_EQ(Err(fs_->Mknod(root_, kRoot, "fifo", S_IFIFO | 0644, 0, 0)),
            EEXIST);
  EXPECT_EQ(Attr(fifo->nodeid).nlink, 1u);
  EXPECT_EQ(Err(fs_->Read(root_, fifo->nodeid, 0, 0, {}, 0)), EINVAL);
}

TEST_F(MemFsTest, RenameBasics) {
  const uint64_t a = MakeDir(root_, kRoot, "a");
  const uint64_t b = MakeDir(root_, kRoot, "b");
  const uint64_t f = MakeFile(root_, a, "f");
  const Attributes f0 = Attr(f);
  const Attributes a0 = Attr(a);
  const Attributes b0 = Attr(b);
  Tick();
  ASSERT_EQ(Err(fs_->Rename(root_, a, "f", b, "g", 0)), 0);
  EXPECT_EQ(LookupId(b, "g"), f);
  EXPECT_EQ(LookupId(a, "f"), 0u);
  EXPECT_TRUE(Before(f0.ctime, Attr(f).ctime));
  EXPECT_TRUE(Before(a0.mtime, Attr(a).mtime));
  EXPECT_TRUE(Before(b0.mtime, Attr(b).mtime));
  EXPECT_TRUE(Before(b0.ctime, Attr(b).ctime));
  EXPECT_EQ(Err(fs_->Rename(root_, a, "missing", b, "x", 0)), ENOENT);
  EXPECT_EQ(Err(fs_->Rename(root_, a, "x", b, std::string(256, 'n'), 0)),
            ENAMETOOLONG);
  EXPECT_EQ(Err(fs_->Rename(root_, b, "g", b, "g", RENAME_WHITEOUT)), EINVAL);
  EXPECT_EQ(Err(fs_->Rename(root_, b, "g", b, "g",
                            RENAME_EXCHANGE | RENAME_NOREPLACE)),
            EINVAL);
  EXPECT_EQ(Err(fs_->Rename(root_, b, "g", b, "g", 1u << 7)), EINVAL);
  // Rename onto itself: nothing changes.
  ASSERT_EQ(Err(fs_->Rename(root_, b, "g", b, "g", 0)), 0);
  EXPECT_EQ(LookupId(b, "g"), f);

  // Replace an existing file: its link goes, and it is freed.
  const uint64_t victim = MakeFile(root_, b, "victim");
  fs_->Forget(victim, 1);
  const size_t count = fs_->InodeCount();
  ASSERT_EQ(Err(fs_->Rename(root_, b, "g", b, "victim", 0)), 0);
  EXPECT_EQ(LookupId(b, "victim"), f);
  EXPECT_EQ(fs_->InodeCount(), count - 1);
  EXPECT_EQ(fs_->LookupCount(victim), 0u);

  // NOREPLACE.
  MakeFile(root_, b, "other");
  EXPECT_EQ(Err(fs_->Rename(root_, b, "victim", b, "other", RENAME_NOREPLACE)),
            EEXIST);
  ASSERT_EQ(Err(fs_->Rename(root_, b, "victim", b, "fresh", RENAME_NOREPLACE)),
            0);
  EXPECT_EQ(LookupId(b, "fresh"), f);
}

TEST_F(MemFsTest, RenameDirectoryRules) {
  const uint64_t a = MakeDir(root_, kRoot, "a");
  const uint64_t sub = MakeDir(root_, a, "sub");
  const uint64_t deep = MakeDir(root_, sub, "deep");
  MakeFile(root_, kRoot, "file");
  const uint64_t full = MakeDir(root_, kRoot, "full");
  MakeFile(root_, full, "x");
  const uint64_t empty = MakeDir(root_, kRoot, "empty");
  EXPECT_EQ(Err(fs_->Rename(root_, kRoot, "a", deep, "a2", 0)), EINVAL);
  EXPECT_EQ(Err(fs_->Rename(root_, kRoot, "a", a, "self", 0)), EINVAL);
  EXPECT_EQ(Err(fs_->Rename(root_, kRoot, "a", kRoot, "full", 0)), ENOTEMPTY);
  EXPECT_EQ(Err(fs_->Rename(root_, kRoot, "a", kRoot, "file", 0)), ENOTDIR);
  EXPECT_EQ(Err(fs_->Rename(root_, kRoot, "file", kRoot, "empty", 0)), EISDIR);
  // Onto an ancestor: it is not empty.
  EXPECT_EQ(Err(fs_->Rename(root_, sub, "deep", kRoot, "a", 0)), ENOTEMPTY);

  // A directory over an empty directory, across parents.
  EXPECT_EQ(Attr(kRoot).nlink, 2u + 3u);
  EXPECT_EQ(Attr(a).nlink, 3u);
  ASSERT_EQ(Err(fs_->Rename(root_, a, "sub", kRoot, "empty", 0)), 0);
  EXPECT_EQ(LookupId(kRoot, "empty"), sub);
  EXPECT_EQ(LookupId(sub, ".."), kRoot);
  EXPECT_EQ(Attr(a).nlink, 2u);
  EXPECT_EQ(Attr(kRoot).nlink, 2u + 3u);  // gained sub, lost empty
  EXPECT_EQ(Attr(empty).nlink, 0u);
  fs_->Forget(empty, fs_->LookupCount(empty));
  EXPECT_EQ(Err(fs_->GetAttr(root_, empty, nullptr)), ENOENT);
  // And back under a: parent link counts follow.
  ASSERT_EQ(Err(fs_->Rename(root_, kRoot, "empty", a, "sub", 0)), 0);
  EXPECT_EQ(Attr(a).nlink, 3u);
  EXPECT_EQ(Attr(kRoot).nlink, 2u + 2u);
  EXPECT_EQ(LookupId(sub, ".."), a);
}

TEST_F(MemFsTest, RenameSameInodeIsNoop) {
  const uint64_t f = MakeFile(root_, kRoot, "f");
  ASSERT_EQ(Err(fs_->Link(root_, f, kRoot, "g")), 0);
  ASSERT_EQ(Err(fs_->Rename(root_, kRoot, "f", kRoot, "g", 0)), 0);
  EXPECT_EQ(LookupId(kRoot, "f"), f);
  EXPECT_EQ(LookupId(kRoot, "g"), f);
  EXPECT_EQ(Attr(f).nlink, 2u);
}

TEST_F(MemFsTest, RenameExchange) {
  const uint64_t a = MakeDir(root_, kRoot, "a");
  const uint64_t b = MakeDir(root_, kRoot, "b");
  const uint64_t d = MakeDir(root_, a, "d");
  const uint64_t f = MakeFile(root_, b, "f");
  EXPECT_EQ(Err(fs_->Rename(root_, a, "d", b, "missing", RENAME_EXCHANGE)),
            ENOENT);
  EXPECT_EQ(Err(fs_->Rename(root_, a, "missing", b, "f", RENAME_EXCHANGE)),
            ENOENT);
  EXPECT_EQ(Attr(a).nlink, 3u);
  EXPECT_EQ(Attr(b).nlink, 2u);
  const Attributes d0 = Attr(d);
  const Attributes f0 = Attr(f);
  Tick();
  ASSERT_EQ(Err(fs_->Rename(root_, a, "d", b, "f", RENAME_EXCHANGE)), 0);
  EXPECT_EQ(LookupId(a, "d"), f);
  EXPECT_EQ(LookupId(b, "f"), d);
  EXPECT_EQ(Attr(a).nlink, 2u);
  EXPECT_EQ(Attr(b).nlink, 3u);
  EXPECT_EQ(LookupId(d, ".."), b);
  EXPECT_TRUE(Before(d0.ctime, Attr(d).ctime));
  EXPECT_TRUE(Before(f0.ctime, Attr(f).ctime));
  // Two files in one directory.
  const uint64_t x = MakeFile(root_, a, "x");
  ASSERT_EQ(Err(fs_->Rename(root_, a, "x", a, "d", RENAME_EXCHANGE)), 0);
  EXPECT_EQ(LookupId(a, "d"), x);
  EXPECT_EQ(LookupId(a, "x"), f);
  // Exchanging a directory with something inside it would make a loop.
  MakeFile(root_, d, "inner");
  EXPECT_EQ(Err(fs_->Rename(root_, b, "f", d, "inner", RENAME_EXCHANGE)),
            EINVAL);
  EXPECT_EQ(Err(fs_->Rename(root_, d, "inner", b, "f", RENAME_EXCHANGE)),
            EINVAL);
  // Exchange needs no emptiness.
  const uint64_t e = MakeDir(root_, kRoot, "e");
  ASSERT_EQ(Err(fs_->Rename(root_, kRoot, "e", b, "f", RENAME_EXCHANGE)), 0);
  EXPECT_EQ(LookupId(kRoot, "e"), d);
  EXPECT_EQ(LookupId(b, "f"), e);
}

TEST_F(MemFsTest, ReadDirCookies) {
  const uint64_t d = MakeDir(root_, kRoot, "d");
  for (int i = 0; i < 10; ++i) MakeFile(root_, d, "f" + std::to_string(i));
  VecSink all(false);
  ASSERT_EQ(Err(fs_->ReadDir(root_, d, 0, 0, all)), 0);
  ASSERT_EQ(all.items.size(), 12u);
  EXPECT_EQ(all.items[0].name, ".");
  EXPECT_EQ(all.items[0].ino, d);
  EXPECT_EQ(all.items[0].next_offset, 1u);
  EXPECT_EQ(all.items[1].name, "..");
  EXPECT_EQ(all.items[1].ino, kRoot);
  EXPECT_EQ(all.items[1].next_offset, 2u);
  EXPECT_FALSE(all.items[2].has_entry);
  EXPECT_EQ(all.items[2].mode & S_IFMT, static_cast<uint32_t>(S_IFREG));
  for (size_t i = 2; i < all.items.size(); ++i) {
    EXPECT_EQ(all.items[i].name, "f" + std::to_string(i - 2));
    EXPECT_GT(all.items[i].next_offset, all.items[i - 1].next_offset);
  }
  // Resume after "." only.
  VecSink from1(false);
  ASSERT_EQ(Err(fs_->ReadDir(root_, d, 0, 1, from1)), 0);
  EXPECT_EQ(from1.items.front().name, "..");
  // Remove an entry already listed and one not yet listed, add one: the
  // rest of the listing neither skips nor repeats.
  const uint64_t resume = all.items[4].next_offset;  // after f2
  ASSERT_EQ(Err(fs_->Unlink(root_, d, "f1")), 0);
  ASSERT_EQ(Err(fs_->Unlink(root_, d, "f5")), 0);
  MakeFile(root_, d, "new");
  VecSink rest(false);
  ASSERT_EQ(Err(fs_->ReadDir(root_, d, 0, resume, rest)), 0);
  std::vector<std::string> names;
  for (const auto& item : rest.items) names.push_back(item.name);
  EXPECT_EQ(names, (std::vector<std::string>{"f3", "f4", "f6", "f7", "f8", "f9",
                                             "new"}));
  // A refused entry is the one the next call starts with.
  VecSink two(false, 2);
  ASSERT_EQ(Err(fs_->ReadDir(root_, d, 0, resume, two)), 0);
  ASSERT_EQ(two.items.size(), 2u);
  VecSink next(false, 1);
  ASSERT_EQ(Err(fs_->ReadDir(root_, d, 0, two.items[1].next_offset, next)), 0);
  EXPECT_EQ(next.items[0].name, "f6");
  EXPECT_EQ(Err(fs_->ReadDir(root_, LookupId(d, "f3"), 0, 0, next)), ENOTDIR);
}

TEST_F(MemFsTest, ReadDirStableUnderConcurrentChanges) {
  const uint64_t d = MakeDir(root_, kRoot, "d");
  std::set<std::string> stable;
  for (int i = 0; i < 150; ++i) {
    const std::string name = "s" + std::to_string(i);
    fs_->Forget(MakeFile(root_, d, name), 1);
    stable.insert(name);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> churned{0};
  std::atomic<bool> churn_done{false};
  std::thread churn([&] {
    RequestContext ctx = Ctx(0, 0);
    for (int k = 0; k < 20 || !stop.load(); ++k, ++churned) {
      const std::string name = "c" + std::to_string(k);
      Result<CreateReply> c = fs_->Create(ctx, d, name, S_IFREG | 0644, 0,
                                          O_CREAT | O_EXCL | O_RDWR);
      if (!c) {
        ADD_FAILURE() << "create " << name << ": " << Err(c);
        break;
      }
      fs_->Release(ctx, c->entry.nodeid, c->open.fh, 0, 0, 0);
      fs_->Forget(c->entry.nodeid, 1);
      if (k >= 3) {
        EXPECT_EQ(Err(fs_->Unlink(ctx, d, "c" + std::to_string(k - 3))), 0);
      }
    }
    churn_done = true;
  });
  while (churned.load() < 5 && !churn_done.load()) std::this_thread::yield();
  for (int round = 0; round < 30; ++round) {
    std::map<std::string, int> seen;
    uint64_t offset = 0;
    uint64_t last_cookie = 0;
    for (;;) {
      VecSink sink(round % 2 == 1, 7);
      ASSERT_EQ(Err(fs_->ReadDir(root_, d, 0, offset, sink)), 0);
      if (sink.items.empty()) break;
      for (const auto& item : sink.items) {
        EXPECT_GT(item.next_offset, last_cookie);
        last_cookie = item.next_offset;
        ++seen[item.name];
        if (item.has_entry && item.entry.nodeid != 0) {
          fs_->Forget(item.entry.nodeid, 1);
        }
      }
      offset = sink.items.back().next_offset;
    }
    for (const auto& [name, n] : seen) EXPECT_EQ(n, 1) << name;
    for (const std::string& name : stable)
      EXPECT_EQ(seen.count(name), 1u) << name;
  }
  stop = true;
  churn.join();
  // Three churn files remain; every lookup was given back.
  EXPECT_EQ(List(d).size(), stable.size() + 3);
  EXPECT_EQ(fs_->InodeCount(), 2 + stable.size() + 3);
  EXPECT_EQ(fs_->LookupCount(LookupId(d, "s7")), 0u);
}

TEST_F(MemFsTest, ReadDirPlusCountsAcceptedEntries) {
  const uint64_t d = MakeDir(root_, kRoot, "d");
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(MakeFile(root_, d, "f" + std::to_string(i)));
    fs_->Forget(ids.back(), 1);
  }
  VecSink sink(true, 4);  // ".", "..", f0, f1; f2 refused
  ASSERT_EQ(Err(fs_->ReadDir(root_, d, 0, 0, sink)), 0);
  ASSERT_EQ(sink.items.size(), 4u);
  EXPECT_TRUE(sink.items[0].has_entry);
  EXPECT_EQ(sink.items[0].entry.nodeid, 0u);
  EXPECT_EQ(sink.items[0].entry.attr.ino, d);
  EXPECT_EQ(sink.items[0].entry.attr.mode & S_IFMT,
            static_cast<uint32_t>(S_IFDIR));
  EXPECT_EQ(sink.items[1].entry.nodeid, 0u);
  EXPECT_EQ(sink.items[1].entry.attr.ino, kRoot);
  EXPECT_EQ(sink.items[2].entry.nodeid, ids[0]);
  EXPECT_EQ(sink.items[2].entry.attr.mode, S_IFREG | 0644u);
  EXPECT_EQ(sink.items[2].entry.attr.ino, ids[0]);
  EXPECT_EQ(fs_->LookupCount(ids[0]), 1u);
  EXPECT_EQ(fs_->LookupCount(ids[1]), 1u);
  EXPECT_EQ(fs_->LookupCount(ids[2]), 0u);  // refused: not counted
  EXPECT_EQ(fs_->LookupCount(ids[3]), 0u);
  EXPECT_EQ(fs_->LookupCount(d), 1u);  // "." took nothing
  // Unlinked while the kernel holds the plus lookup: freed at Forget.
  ASSERT_EQ(Err(fs_->Unlink(root_, d, "f0")), 0);
  EXPECT_EQ(Attr(ids[0]).nlink, 0u);
  fs_->Forget(ids[0], 1);
  EXPECT_EQ(Err(fs_->GetAttr(root_, ids[0], nullptr)), ENOENT);
}

TEST_F(MemFsTest, OpenAndAccessPermissions) {
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  const uint64_t f = MakeFile(alice_, pub, "f", 0640);
  EXPECT_EQ(Err(fs_->Open(bob_, f, O_RDONLY, 0)), EACCES);
  EXPECT_EQ(Err(fs_->Open(carol_, f, O_WRONLY, 0)), EACCES);
  Result<OpenReply> o = fs_->Open(carol_, f, O_RDONLY, 0);  // group member
  ASSERT_EQ(Err(o), 0);
  fs_->Release(carol_, f, o->fh, 0, 0, 0);
  EXPECT_EQ(Err(fs_->Open(carol_, f, O_RDONLY | O_TRUNC, 0)), EACCES);
  o = fs_->Open(alice_, f, O_RDWR, 0);
  ASSERT_EQ(Err(o), 0);
  fs_->Release(alice_, f, o->fh, 0, 0, 0);
  o = fs_->Open(root_, f, O_RDWR, 0);  // root bypasses r/w
  ASSERT_EQ(Err(o), 0);
  fs_->Release(root_, f, o->fh, 0, 0, 0);
  EXPECT_EQ(Err(fs_->Open(root_, pub, O_WRONLY, 0)), EISDIR);
  // Owner bits rule for the owner, even when others may do more.
  ASSERT_EQ(Err(SetMode(alice_, f, 0066)), 0);
  EXPECT_EQ(Err(fs_->Open(alice_, f, O_RDONLY, 0)), EACCES);

  EXPECT_EQ(Err(fs_->Access(bob_, f, F_OK)), 0);
  EXPECT_EQ(Err(fs_->Access(bob_, f, R_OK | W_OK)), 0);
  EXPECT_EQ(Err(fs_->Access(alice_, f, R_OK)), EACCES);
  EXPECT_EQ(Err(fs_->Access(root_, f, R_OK | W_OK)), 0);
  EXPECT_EQ(Err(fs_->Access(root_, f, X_OK)), EACCES);  // no x bit at all
  ASSERT_EQ(Err(SetMode(alice_, f, 0100)), 0);
  EXPECT_EQ(Err(fs_->Access(root_, f, X_OK)), 0);
  EXPECT_EQ(Err(fs_->Access(root_, 999, F_OK)), ENOENT);

  // Directories: search for lookup, read for opendir, write+search to change.
  const uint64_t priv = MakeDir(alice_, pub, "priv", 0700);
  MakeFile(alice_, priv, "secret");
  EXPECT_EQ(Err(fs_->Lookup(bob_, priv, "secret")), EACCES);
  EXPECT_EQ(Err(fs_->Lookup(root_, priv, "secret")), 0);
  ASSERT_EQ(Err(SetMode(alice_, priv, 0311)), 0);
  EXPECT_EQ(Err(fs_->OpenDir(bob_, priv, O_RDONLY)), EACCES);
  EXPECT_EQ(Err(fs_->Lookup(bob_, priv, "secret")), 0);
  EXPECT_EQ(
      Err(fs_->Create(bob_, priv, "x", S_IFREG | 0644, 0, O_CREAT | O_RDWR)),
      EACCES);
  EXPECT_EQ(Err(fs_->Unlink(bob_, priv, "secret")), EACCES);
  EXPECT_EQ(Err(fs_->Mkdir(bob_, priv, "x", 0755, 0)), EACCES);
  EXPECT_EQ(Err(fs_->Rename(bob_, priv, "secret", pub, "stolen", 0)), EACCES);
  Result<OpenReply> od = fs_->OpenDir(alice_, pub, O_RDONLY);
  ASSERT_EQ(Err(od), 0);
  EXPECT_EQ(Err(fs_->OpenDir(root_, f, O_RDONLY)), ENOTDIR);
  fs_->ReleaseDir(alice_, pub, od->fh);
  EXPECT_EQ(Err(fs_->FsyncDir(alice_, pub, 0, false)), 0);
  EXPECT_EQ(fs_->OpenHandleCount(), 0u);
}

TEST_F(MemFsTest, MovingDirectoryNeedsWriteOnIt) {
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  const uint64_t other = MakeDir(root_, kRoot, "other", 0777);
  const uint64_t x = MakeDir(alice_, pub, "x", 0555);
  EXPECT_EQ(Err(fs_->Rename(alice_, pub, "x", other, "x", 0)), EACCES);
  EXPECT_EQ(Err(fs_->Rename(alice_, pub, "x", pub, "y", 0)), 0);  // same parent
  ASSERT_EQ(Err(SetMode(alice_, x, 0755)), 0);
  EXPECT_EQ(Err(fs_->Rename(alice_, pub, "y", other, "x", 0)), 0);
}

TEST_F(MemFsTest, StickyDirectory) {
  const uint64_t tmp = MakeDir(root_, kRoot, "tmp", 01777);
  MakeFile(alice_, tmp, "a");
  MakeFile(bob_, tmp, "b");
  EXPECT_EQ(Err(fs_->Unlink(bob_, tmp, "a")), EPERM);
  EXPECT_EQ(Err(fs_->Rename(bob_, tmp, "a", tmp, "c", 0)), EPERM);
  EXPECT_EQ(Err(fs_->Rename(bob_, tmp, "b", tmp, "a", 0)),
            EPERM);  // target is alice's
  EXPECT_EQ(Err(fs_->Unlink(bob_, tmp, "b")), 0);
  EXPECT_EQ(Err(fs_->Rename(alice_, tmp, "a", tmp, "a2", 0)), 0);
  const uint64_t sub = MakeDir(alice_, tmp, "sub", 0777);
  EXPECT_EQ(Err(fs_->Rmdir(bob_, tmp, "sub")), EPERM);
  EXPECT_EQ(Err(fs_->Unlink(root_, tmp, "a2")), 0);
  // The directory's owner may remove anyone's entry.
  ASSERT_EQ(Err(SetMode(alice_, sub, 01777)), 0);
  MakeFile(bob_, sub, "bobs");
  EXPECT_EQ(Err(fs_->Unlink(carol_, sub, "bobs")), EPERM);
  EXPECT_EQ(Err(fs_->Unlink(alice_, sub, "bobs")), 0);
}

TEST_F(MemFsTest, SetgidDirectoryInheritance) {
  const uint64_t g = MakeDir(root_, kRoot, "g", 0777);
  ASSERT_EQ(Err(SetOwner(root_, g, std::nullopt, 500)), 0);
  ASSERT_EQ(Err(SetMode(root_, g, 02777)), 0);
  Result<Entry> sub = fs_->Mkdir(alice_, g, "sub", 0777, 0);
  ASSERT_EQ(Err(sub), 0);
  EXPECT_EQ(sub->attr.gid, 500u);
  EXPECT_EQ(sub->attr.mode, S_IFDIR | 02777u);
  // A file by a group member keeps a requested setgid bit...
  Result<CreateReply> af =
      fs_->Create(alice_, g, "af", S_IFREG | 02755, 0, O_CREAT | O_RDWR);
  ASSERT_EQ(Err(af), 0);
  EXPECT_EQ(af->entry.attr.gid, 500u);
  EXPECT_EQ(af->entry.attr.uid, 1000u);
  EXPECT_EQ(af->entry.attr.mode, S_IFREG | 02755u);
  fs_->Release(alice_, af->entry.nodeid, af->open.fh, 0, 0, 0);
  // ...one by a non-member loses it.
  Result<CreateReply> bf =
      fs_->Create(bob_, g, "bf", S_IFREG | 02755, 0, O_CREAT | O_RDWR);
  ASSERT_EQ(Err(bf), 0);
  EXPECT_EQ(bf->entry.attr.gid, 500u);
  EXPECT_EQ(bf->entry.attr.mode, S_IFREG | 0755u);
  fs_->Release(bob_, bf->entry.nodeid, bf->open.fh, 0, 0, 0);
  // Outside a setgid directory the creator's gid is used.
  Result<Entry> plain =
      fs_->Mknod(bob_, sub->nodeid, "n", S_IFREG | 0644, 0, 0);
  ASSERT_EQ(Err(plain), 0);
  EXPECT_EQ(plain->attr.gid, 500u);  // sub inherited setgid
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  Result<Entry> p2 = fs_->Mknod(bob_, pub, "n", S_IFREG | 0644, 0, 0);
  EXPECT_EQ(p2->attr.gid, 1001u);
}

TEST_F(MemFsTest, ChownAndChmodRules) {
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  const uint64_t f = MakeFile(alice_, pub, "f", 0644);
  EXPECT_EQ(Err(SetOwner(alice_, f, 1001, std::nullopt)), EPERM);
  EXPECT_EQ(Err(SetOwner(alice_, f, 1000, std::nullopt)), 0);  // to itself
  EXPECT_EQ(Err(SetOwner(alice_, f, std::nullopt, 600)), EPERM);
  EXPECT_EQ(Err(SetOwner(alice_, f, std::nullopt, 500)), 0);  // a group of hers
  EXPECT_EQ(Attr(f).gid, 500u);
  EXPECT_EQ(Err(SetOwner(bob_, f, std::nullopt, 1001)), EPERM);
  EXPECT_EQ(Err(SetMode(bob_, f, 0777)), EPERM);
  const Attributes a0 = Attr(f);
  Tick();
  Result<AttrReply> m = SetMode(alice_, f, 06755);
  ASSERT_EQ(Err(m), 0);
  EXPECT_EQ(m->attr.mode, S_IFREG | 06755u);
  EXPECT_TRUE(Before(a0.ctime, m->attr.ctime));
  EXPECT_TRUE(Same(a0.mtime, m->attr.mtime));
  // Any chown of a file drops setuid and (with group exec) setgid.
  Result<AttrReply> c = SetOwner(alice_, f, std::nullopt, 1000);
  ASSERT_EQ(Err(c), 0);
  EXPECT_EQ(c->attr.mode, S_IFREG | 0755u);
  ASSERT_EQ(Err(SetMode(alice_, f, 06755)), 0);
  c = SetOwner(root_, f, 1001, 1001);
  ASSERT_EQ(Err(c), 0);
  EXPECT_EQ(c->attr.mode, S_IFREG | 0755u);
  EXPECT_EQ(c->attr.uid, 1001u);
  EXPECT_EQ(c->attr.gid, 1001u);
  // Setgid without group exec is kept.
  ASSERT_EQ(Err(SetMode(root_, f, 02745)), 0);
  EXPECT_EQ(SetOwner(root_, f, 1000, std::nullopt)->attr.mode,
            S_IFREG | 02745u);
  // chmod by an owner outside the file's group silently drops setgid.
  ASSERT_EQ(Err(SetOwner(root_, f, 1000, 1001)), 0);
  EXPECT_EQ(SetMode(alice_, f, 02755)->attr.mode, S_IFREG | 0755u);
  EXPECT_EQ(SetMode(root_, f, 02755)->attr.mode, S_IFREG | 02755u);
  // Directories keep their bits on chown.
  const uint64_t d = MakeDir(alice_, pub, "d", 0755);
  ASSERT_EQ(Err(SetMode(alice_, d, 02755)), 0);
  EXPECT_EQ(SetOwner(root_, d, 1001, std::nullopt)->attr.mode,
            S_IFDIR | 02755u);
  // Nothing valid is chown(f, -1, -1): ctime moves, as on Linux.
  const Attributes before = Attr(f);
  Tick();
  EXPECT_FALSE(
      Same(fs_->SetAttr(root_, f, SetAttrRequest{})->attr.ctime, before.ctime));
}

TEST_F(MemFsTest, UtimensRules) {
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  const uint64_t f = MakeFile(alice_, pub, "f", 0666);
  SetAttrRequest set;
  set.valid = abi::kFattrAtime | abi::kFattrMtime;
  set.atime = {1000, 1};
  set.mtime = {2000, 2};
  EXPECT_EQ(Err(fs_->SetAttr(bob_, f, set)), EPERM);
  Result<AttrReply> r = fs_->SetAttr(alice_, f, set);
  ASSERT_EQ(Err(r), 0);
  EXPECT_TRUE(Same(r->attr.atime, set.atime));
  EXPECT_TRUE(Same(r->attr.mtime, set.mtime));
  SetAttrRequest now;
  now.valid = abi::kFattrAtime | abi::kFattrAtimeNow | abi::kFattrMtime |
              abi::kFattrMtimeNow;
  r = fs_->SetAttr(bob_, f, now);  // not owner, but may write
  ASSERT_EQ(Err(r), 0);
  EXPECT_GT(r->attr.mtime.tv_sec, 2000);
  EXPECT_GT(r->attr.atime.tv_sec, 1000);
  ASSERT_EQ(Err(SetMode(alice_, f, 0644)), 0);
  EXPECT_EQ(Err(fs_->SetAttr(bob_, f, now)), EACCES);
  EXPECT_EQ(Err(fs_->SetAttr(root_, f, set)), 0);
  // Only one of them: the other stays.
  SetAttrRequest only_m;
  only_m.valid = abi::kFattrMtime;
  only_m.mtime = {3000, 3};
  r = fs_->SetAttr(alice_, f, only_m);
  EXPECT_TRUE(Same(r->attr.atime, set.atime));
  EXPECT_TRUE(Same(r->attr.mtime, only_m.mtime));
  // An explicit ctime (kFattrCtime) is taken as given.
  SetAttrRequest c;
  c.valid = abi::kFattrCtime;
  c.ctime = {4000, 4};
  EXPECT_TRUE(Same(fs_->SetAttr(root_, f, c)->attr.ctime, c.ctime));
}

TEST_F(MemFsTest, Timestamps) {
  const uint64_t d = MakeDir(root_, kRoot, "d");
  const Attributes d0 = Attr(d);
  Tick();
  const uint64_t f = MakeFile(root_, d, "f");
  const Attributes f0 = Attr(f);
  EXPECT_TRUE(Before(d0.mtime, Attr(d).mtime));
  EXPECT_TRUE(Before(d0.ctime, Attr(d).ctime));
  EXPECT_TRUE(Same(f0.btime, f0.mtime));
  Tick();
  const uint64_t fh = OpenFh(root_, f, O_RDWR);
  WriteAt(f, fh, 0, "x");
  const Attributes f1 = Attr(f);
  EXPECT_TRUE(Before(f0.mtime, f1.mtime));
  EXPECT_TRUE(Before(f0.ctime, f1.ctime));
  EXPECT_TRUE(Same(f0.btime, f1.btime));
  // Relatime: the first read after a write moves atime, the next does not.
  Tick();
  ReadAt(f, fh, 0, 1);
  const Attributes f2 = Attr(f);
  EXPECT_TRUE(Before(f1.mtime, f2.atime));
  Tick();
  ReadAt(f, fh, 0, 1);
  EXPECT_TRUE(Same(f2.atime, Attr(f).atime));
  // Zero-length writes change nothing.
  Tick();
  ASSERT_EQ(*fs_->Write(root_, f, fh, 0, {}, 0, O_RDWR), 0u);
  EXPECT_TRUE(Same(f2.mtime, Attr(f).mtime));
  fs_->Release(root_, f, fh, 0, 0, 0);
  // Unlink: parent mtime and the file's ctime.
  ASSERT_EQ(Err(fs_->Link(root_, f, d, "g")), 0);
  const Attributes before_unlink = Attr(f);
  const Attributes d1 = Attr(d);
  Tick();
  ASSERT_EQ(Err(fs_->Unlink(root_, d, "g")), 0);
  EXPECT_TRUE(Before(before_unlink.ctime, Attr(f).ctime));
  EXPECT_TRUE(Before(d1.mtime, Attr(d).mtime));
}

TEST_F(MemFsTest, KillSuidgid) {
  const uint64_t f = MakeFile(root_, kRoot, "f", 06755);
  EXPECT_EQ(Attr(f).mode, S_IFREG | 06755u);
  const uint64_t fh = OpenFh(root_, f, O_RDWR);
  // A write without the flag keeps the bits.
  ASSERT_EQ(*fs_->Write(root_, f, fh, 0, Bytes("a"), 0, O_RDWR), 1u);
  EXPECT_EQ(Attr(f).mode, S_IFREG | 06755u);
  ASSERT_EQ(
      *fs_->Write(root_, f, fh, 0, Bytes("a"), abi::kWriteKillSuidgid, O_RDWR),
      1u);
  EXPECT_EQ(Attr(f).mode, S_IFREG | 0755u);
  fs_->Release(root_, f, fh, 0, 0, 0);
  ASSERT_EQ(Err(SetMode(root_, f, 06755)), 0);
  Result<OpenReply> o =
      fs_->Open(root_, f, O_WRONLY | O_TRUNC, abi::kOpenKillSuidgid);
  ASSERT_EQ(Err(o), 0);
  EXPECT_EQ(Attr(f).mode, S_IFREG | 0755u);
  EXPECT_EQ(Attr(f).size, 0u);
  fs_->Release(root_, f, o->fh, 0, 0, 0);
  // Setgid without group exec survives.
  ASSERT_EQ(Err(SetMode(root_, f, 06745)), 0);
  SetAttrRequest kill;
  kill.valid = abi::kFattrKillSuidgid;
  EXPECT_EQ(fs_->SetAttr(root_, f, kill)->attr.mode, S_IFREG | 02745u);
}

// Linux's rule (core/privileges.h): a writer outside the file's group drops
// setgid even without group exec; a member keeps it.
TEST_F(MemFsTest, KillSuidgidFollowsTheWritersGroup) {
  const uint64_t f = MakeFile(root_, kRoot, "f", 02766);
  SetAttrRequest kill;
  kill.valid = abi::kFattrKillSuidgid;
  EXPECT_EQ(fs_->SetAttr(carol_, f, kill)->attr.mode & 07777, 0766u) << "carol is not in group 0";
  SetAttrRequest group;
  group.valid = abi::kFattrGid;
  group.gid = 1000;
  ASSERT_EQ(Err(fs_->SetAttr(root_, f, group)), 0);
  ASSERT_EQ(Err(SetMode(root_, f, 02766)), 0);
  EXPECT_EQ(fs_->SetAttr(carol_, f, kill)->attr.mode & 07777, 02766u) << "carol is in group 1000";
  EXPECT_EQ(fs_->SetAttr(bob_, f, kill)->attr.mode & 07777, 0766u) << "bob is not";
  // A WRITE with the flag from a non-member, likewise.
  ASSERT_EQ(Err(SetMode(root_, f, 02766)), 0);
  const uint64_t fh = OpenFh(bob_, f, O_WRONLY);
  ASSERT_EQ(*fs_->Write(bob_, f, fh, 0, Bytes("a"), abi::kWriteKillSuidgid, O_WRONLY), 1u);
  EXPECT_EQ(Attr(f).mode & 07777, 0766u);
  fs_->Release(bob_, f, fh, 0, 0, 0);
}

// execve() opens with __FMODE_EXEC: execute permission of the caller's own
// class decides (no read needed), which the kernel does not check without
// default_permissions.
TEST_F(MemFsTest, ExecOpenNeedsExecutePermissionOfTheCallersClass) {
  const uint64_t f = MakeFile(root_, kRoot, "prog", 0741);  // group r--: denied exec
  constexpr uint32_t kExecOpen = O_RDONLY | abi::kOpenFlagExec;
  EXPECT_EQ(Err(fs_->Open(Ctx(1005, 0), f, kExecOpen, 0)), EACCES) << "group class, no x";
  Result<OpenReply> other = fs_->Open(bob_, f, kExecOpen, 0);
  EXPECT_EQ(Err(other), 0) << "other class has x (and no r)";
  if (other.ok()) fs_->Release(bob_, f, other->fh, 0, 0, 0);
  EXPECT_EQ(Err(fs_->Open(bob_, f, O_RDONLY, 0)), EACCES) << "a plain open still needs read";
}

// Page writeback (a store through a shared mapping: kWriteCache) leaves
// the file capability alone, as local file systems do; write(2) drops it.
TEST_F(MemFsTest, PageWritebackKeepsTheCapability) {
  const uint64_t f = MakeFile(root_, kRoot, "f", 0755);
  ASSERT_EQ(Err(fs_->SetXattr(root_, f, "security.capability", Bytes("cap"), 0, 0)), 0);
  const uint64_t fh = OpenFh(root_, f, O_RDWR);
  ASSERT_EQ(*fs_->Write(root_, f, fh, 0, Bytes("a"), abi::kWriteCache, O_RDWR), 1u);
  EXPECT_EQ(*fs_->GetXattr(root_, f, "security.capability"), "cap");
  ASSERT_EQ(*fs_->Write(root_, f, fh, 0, Bytes("a"), 0, O_RDWR), 1u);
  EXPECT_EQ(Err(fs_->GetXattr(root_, f, "security.capability")), ENODATA);
  fs_->Release(root_, f, fh, 0, 0, 0);
}

// The file-capability xattr goes on every content or owner change, as the
// Linux VFS drops it (with FUSE_HANDLE_KILLPRIV_V2 that is the server's job).
TEST_F(MemFsTest, ChownToSameIdsStillDropsSetuid) {
  // chown(f, -1, -1) reaches us as a SETATTR with no attribute bits.
  const uint64_t f = MakeFile(root_, kRoot, "f", 06755);
  Result<AttrReply> before = fs_->GetAttr(root_, f, nullptr);
  ASSERT_EQ(Err(before), 0);
  SetAttrRequest none;
  Result<AttrReply> after = fs_->SetAttr(root_, f, none);
  ASSERT_EQ(Err(after), 0);
  EXPECT_EQ(after->attr.mode & 07777, 0755u);
  EXPECT_GE(after->attr.ctime.tv_sec * 1000000000L + after->attr.ctime.tv_nsec,
            before->attr.ctime.tv_sec * 1000000000L + before->attr.ctime.tv_nsec);
  const uint64_t d = MakeDir(root_, kRoot, "d", 0755);
  ASSERT_EQ(Err(SetMode(root_, d, 02755)), 0);
  Result<AttrReply> dir = fs_->SetAttr(root_, d, none);
  ASSERT_EQ(Err(dir), 0);
  EXPECT_EQ(dir->attr.mode & 07777, 02755u);  // directories keep setgid
}

TEST_F(MemFsTest, CapabilityDroppedOnWriteTruncateChown) {
  const uint64_t f = MakeFile(root_, kRoot, "f", 0755);
  const uint64_t fh = OpenFh(root_, f, O_RDWR);
  auto set_cap = [&] {
    ASSERT_EQ(
        Err(fs_->SetXattr(root_, f, "security.capability", Bytes("cap"), 0, 0)),
        0);
    ASSERT_EQ(Err(fs_->SetXattr(root_, f, "user.keep", Bytes("k"), 0, 0)), 0);
  };
  set_cap();
  WriteAt(f, fh, 0, "x");
  EXPECT_EQ(Err(fs_->GetXattr(root_, f, "security.capability")), ENODATA);
  EXPECT_EQ(*fs_->GetXattr(root_, f, "user.keep"), "k");
  set_cap();
  ASSERT_EQ(Err(Truncate(root_, f, 0)), 0);
  EXPECT_EQ(Err(fs_->GetXattr(root_, f, "security.capability")), ENODATA);
  set_cap();
  ASSERT_EQ(Err(SetOwner(root_, f, 5, 5)), 0);
  EXPECT_EQ(Err(fs_->GetXattr(root_, f, "security.capability")), ENODATA);
  set_cap();
  SetAttrRequest chmod;
  chmod.valid = abi::kFattrMode;
  chmod.mode = 0700;
  ASSERT_EQ(Err(fs_->SetAttr(root_, f, chmod)), 0);  // chmod keeps it
  EXPECT_EQ(*fs_->GetXattr(root_, f, "security.capability"), "cap");
  ASSERT_EQ(*fs_->Read(root_, f, fh, 0, {}, 0), 0u);  // so does a read
  EXPECT_EQ(*fs_->GetXattr(root_, f, "security.capability"), "cap");
  EXPECT_EQ(fs_->BytesUsed(), kBlock * 0 + 19 + 3 + 9 + 1);
  fs_->Release(root_, f, fh, 0, 0, 0);
}

TEST_F(MemFsTest, Fallocate) {
  const uint64_t f = MakeFile(root_, kRoot, "f");
  const uint64_t fh = OpenFh(root_, f, O_RDWR);
  ASSERT_EQ(Err(fs_->Fallocate(root_, f, fh, 0, 10000, 0)), 0);
  EXPECT_EQ(Attr(f).size, 10000u);
  EXPECT_EQ(Attr(f).blocks, 3 * kBlock / 512);
  EXPECT_EQ(fs_->BytesUsed(), 3 * kBlock);
  EXPECT_EQ(ReadAt(f, fh, 0, 20000), std::string(10000, '\0'));
  // KEEP_SIZE allocates past EOF without growing.
  ASSERT_EQ(Err(fs_->Fallocate(root_, f, fh, 4 * kBlock, kBlock,
                               FALLOC_FL_KEEP_SIZE)),
            0);
  EXPECT_EQ(Attr(f).size, 10000u);
  EXPECT_EQ(fs_->BytesUsed(), 4 * kBlock);
  // Punch: zeroes the range and frees whole blocks inside it.
  WriteAt(f, fh, 0, std::string(3 * kBlock, 'd'));
  const Attributes before = Attr(f);
  Tick();
  ASSERT_EQ(Err(fs_->Fallocate(root_, f, fh, 100, 10000,
                               FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)),
            0);
  EXPECT_EQ(Attr(f).size, 3 * kBlock);
  EXPECT_EQ(fs_->BytesUsed(), 3 * kBlock);  // block 1 freed
  EXPECT_TRUE(Before(before.mtime, Attr(f).mtime));
  const std::string s = ReadAt(f, fh, 0, 3 * kBlock);
  EXPECT_EQ(s.substr(0, 100), std::string(100, 'd'));
  EXPECT_EQ(s.substr(100, 10000), std::string(10000, '\0'));
  EXPECT_EQ(s.substr(10100), std::string(3 * kBlock - 10100, 'd'));
  EXPECT_EQ(*fs_->Lseek(root_, f, fh, 100, SEEK_HOLE), kBlock);
  EXPECT_EQ(*fs_->Lseek(root_, f, fh, kBlock, SEEK_DATA), 2 * kBlock);
  // Zero range: zeroes, stays allocated, may extend.
  ASSERT_EQ(Err(fs_->Fallocate(root_, f, fh, 0, 50, FALLOC_FL_ZERO_RANGE)), 0);
  EXPECT_EQ(ReadAt(f, fh, 0, 100),
            std::string(50, '\0') + std::string(50, 'd'));
  ASSERT_EQ(Err(fs_->Fallocate(root_, f, fh, kBlock, kBlock,
                               FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)),
            0);
  EXPECT_EQ(fs_->BytesUsed(), 4 * kBlock);
  ASSERT_EQ(
      Err(fs_->Fallocate(root_, f, fh, 5 * kBlock, 10, FALLOC_FL_ZERO_RANGE)),
      0);
  EXPECT_EQ(Attr(f).size, 5 * kBlock + 10);
  // Errors.
  EXPECT_EQ(Err(fs_->Fallocate(root_, f, fh, 0, 10, FALLOC_FL_PUNCH_HOLE)),
            EOPNOTSUPP);
  EXPECT_EQ(Err(fs_->Fallocate(root_, f, fh, 0, 10, FALLOC_FL_COLLAPSE_RANGE)),
            EOPNOTSUPP);
  EXPECT_EQ(Err(fs_->Fallocate(root_, f, fh, 0, 0, 0)), EINVAL);
  EXPECT_EQ(Err(fs_->Fallocate(root_, f, fh, 1ULL << 40, 1, 0)), EFBIG);
  EXPECT_EQ(Err(fs_->Fallocate(root_, kRoot, 0, 0, 1, 0)), EISDIR);
  fs_->Release(root_, f, fh, 0, 0, 0);
}

TEST_F(MemFsTest, CopyFileRange) {
  const uint64_t src = MakeFile(root_, kRoot, "src");
  const uint64_t dst = MakeFile(root_, kRoot, "dst");
  const uint64_t sfh = OpenFh(root_, src, O_RDWR);
  const uint64_t dfh = OpenFh(root_, dst, O_RDWR);
  const uint64_t kMiB = 1 << 20;
  WriteAt(src, sfh, 0, "0123456789");
  WriteAt(src, sfh, kMiB, "Z");
  Result<uint64_t> n =
      fs_->CopyFileRange(root_, src, sfh, 0, dst, dfh, 0, 10 * kMiB, 0);
  ASSERT_EQ(Err(n), 0);
  EXPECT_EQ(*n, kMiB + 1);  // clamped at the source's end
  EXPECT_EQ(Attr(dst).size, kMiB + 1);
  EXPECT_EQ(Attr(dst).blocks, 2 * kBlock / 512);  // the hole stayed a hole
  EXPECT_EQ(ReadAt(dst, dfh, 0, 10), "0123456789");
  EXPECT_EQ(ReadAt(dst, dfh, kMiB, 10), "Z");
  EXPECT_EQ(ReadAt(dst, dfh, 500000, 4), std::string(4, '\0'));
  // Over existing data, the source hole replaces it with zeros.
  WriteAt(dst, dfh, 8 * kBlock, "junk");
  ASSERT_EQ(*fs_->CopyFileRange(root_, src, sfh, 0, dst, dfh, 0, kMiB, 0),
            kMiB);
  EXPECT_EQ(ReadAt(dst, dfh, 8 * kBlock, 4), std::string(4, '\0'));
  // Unaligned offsets.
  ASSERT_EQ(
      *fs_->CopyFileRange(root_, src, sfh, 3, dst, dfh, kMiB + 5000, 4, 0), 4u);
  EXPECT_EQ(ReadAt(dst, dfh, kMiB + 5000, 10), "3456");
  EXPECT_EQ(*fs_->CopyFileRange(root_, src, sfh, 2 * kMiB, dst, dfh, 0, 10, 0),
            0u);
  // Same file: overlapping ranges are refused, disjoint ones work.
  EXPECT_EQ(Err(fs_->CopyFileRange(root_, src, sfh, 0, src, sfh, 5, 10, 0)),
            EINVAL);
  ASSERT_EQ(*fs_->CopyFileRange(root_, src, sfh, 0, src, sfh, 100, 10, 0), 10u);
  EXPECT_EQ(ReadAt(src, sfh, 100, 10), "0123456789");
  EXPECT_EQ(Err(fs_->CopyFileRange(root_, src, sfh, 0, dst, dfh, 0, 10, 1)),
            EINVAL);
  EXPECT_EQ(Err(fs_->CopyFileRange(root_, src, sfh, 0, kRoot, 0, 0, 10, 0)),
            EISDIR);
  fs_->Release(root_, src, sfh, 0, 0, 0);
  fs_->Release(root_, dst, dfh, 0, 0, 0);
}

TEST_F(MemFsTest, Xattrs) {
  const uint64_t pub = MakeDir(root_, kRoot, "pub", 0777);
  const uint64_t f = MakeFile(alice_, pub, "f", 0644);
  const Attributes a0 = Attr(f);
  Tick();
  ASSERT_EQ(Err(fs_->SetXattr(alice_, f, "user.one", Bytes("1"), 0, 0)), 0);
  EXPECT_TRUE(Before(a0.ctime, Attr(f).ctime));
  ASSERT_EQ(Err(fs_->SetXattr(alice_, f, "user.two",
                              Bytes(std::string("2\0x", 3)), 0, 0)),
            0);
  EXPECT_EQ(*fs_->GetXattr(alice_, f, "user.one"), "1");
  EXPECT_EQ(*fs_->GetXattr(alice_, f, "user.two"), std::string("2\0x", 3));
  EXPECT_EQ(*fs_->ListXattr(alice_, f),
            std::string("user.one\0user.two\0", 18));
  EXPECT_EQ(
      Err(fs_->SetXattr(alice_, f, "user.one", Bytes("x"), XATTR_CREATE, 0)),
      EEXIST);
  EXPECT_EQ(
      Err(fs_->SetXattr(alice_, f, "user.new", Bytes("x"), XATTR_REPLACE, 0)),
      ENODATA);
  ASSERT_EQ(
      Err(fs_->SetXattr(alice_, f, "user.one", Bytes("uno"), XATTR_REPLACE, 0)),
      0);
  EXPECT_EQ(*fs_->GetXattr(alice_, f, "user.one"), "uno");
  EXPECT_EQ(Err(fs_->GetXattr(alice_, f, "user.none")), ENODATA);
  EXPECT_EQ(Err(fs_->RemoveXattr(alice_, f, "user.none")), ENODATA);
  const Attributes a1 = Attr(f);
  Tick();
  ASSERT_EQ(Err(fs_->RemoveXattr(alice_, f, "user.two")), 0);
  EXPECT_TRUE(Before(a1.ctime, Attr(f).ctime));
  EXPECT_EQ(*fs_->ListXattr(alice_, f), std::string("user.one\0", 9));
  EXPECT_EQ(fs_->BytesUsed(), std::string("user.one").size() + 3);
  // Sizes.
  EXPECT_EQ(Err(fs_->SetXattr(alice_, f, "user." + std::string(251, 'n'),
                              Bytes("v"), 0, 0)),
            ERANGE);
  EXPECT_EQ(Err(fs_->SetXattr(alice_, f, "user." + std::string(250, 'n'),
                              Bytes("v"), 0, 0)),
            0);
  EXPECT_EQ(Err(fs_->SetXattr(alice_, f, "user.big",
                              Bytes(std::string(65537, 'v')), 0, 0)),
            E2BIG);
  EXPECT_EQ(Err(fs_->SetXattr(alice_, f, "user.max",
                              Bytes(std::string(65536, 'v')), 0, 0)),
            0);
  EXPECT_EQ(Err(fs_->SetXattr(alice_, f, "user.x", Bytes("v"), 0x100, 0)),
            EINVAL);
  // user.*: write permission to set/remove, read permission to get.
  EXPECT_EQ(Err(fs_->SetXattr(bob_, f, "user.b", Bytes("v"), 0, 0)), EACCES);
  EXPECT_EQ(Err(fs_->RemoveXattr(bob_, f, "user.one")), EACCES);
  EXPECT_EQ(*fs_->GetXattr(bob_, f, "user.one"), "uno");
  ASSERT_EQ(Err(SetMode(alice_, f, 0600)), 0);
  EXPECT_EQ(Err(fs_->GetXattr(bob_, f, "user.one")), EACCES);
  // trusted.*: root only, and hidden from others' lists.
  EXPECT_EQ(Err(fs_->SetXattr(alice_, f, "trusted.t", Bytes("v"), 0, 0)),
            EPERM);
  ASSERT_EQ(Err(fs_->SetXattr(root_, f, "trusted.t", Bytes("v"), 0, 0)), 0);
  EXPECT_EQ(*fs_->GetXattr(root_, f, "trusted.t"), "v");
  EXPECT_EQ(Err(fs_->GetXattr(alice_, f, "trusted.t")), ENODATA);
  EXPECT_EQ(Err(fs_->RemoveXattr(alice_, f, "trusted.t")), EPERM);
  EXPECT_NE(fs_->ListXattr(root_, f)->find("trusted.t"), std::string::npos);
  EXPECT_EQ(fs_->ListXattr(alice_, f)->find("trusted.t"), std::string::npos);
  // security.*: anyone who may write.
  ASSERT_EQ(Err(fs_->SetXattr(alice_, f, "security.s", Bytes("v"), 0, 0)), 0);
  EXPECT_EQ(Err(fs_->SetXattr(bob_, f, "security.s", Bytes("v"), 0, 0)),
            EACCES);
  EXPECT_EQ(*fs_->GetXattr(bob_, f, "security.s"), "v");
  // Unsupported names.
  EXPECT_EQ(
      Err(fs_->SetXattr(root_, f, "system.posix_acl_access", Bytes("v"), 0, 0)),
      EOPNOTSUPP);
  EXPECT_EQ(Err(fs_->GetXattr(root_, f, "system.posix_acl_default")),
            EOPNOTSUPP);
  EXPECT_EQ(Err(fs_->SetXattr(root_, f, "other.x", Bytes("v"), 0, 0)),
            EOPNOTSUPP);
  EXPECT_EQ(Err(fs_->SetXattr(root_, f, "noprefix", Bytes("v"), 0, 0)),
            EOPNOTSUPP);
  EXPECT_EQ(Err(fs_->SetXattr(root_, f, "user.", Bytes("v"), 0, 0)), EINVAL);
  // user.* on special files.
  Result<Entry> fifo = fs_->Mknod(root_, kRoot, "fifo", S_IFIFO | 0666, 0, 0);
  EXPECT_EQ(Err(fs_->SetXattr(root_, fifo->nodeid, "user.x", Bytes("v"), 0, 0)),
            EPERM);
  EXPECT_EQ(Err(fs_->GetXattr(root_, fifo->nodeid, "user.x")), ENODATA);
  ASSERT_EQ(
      Err(fs_->SetXattr(root_, fifo->nodeid, "trusted.x", Bytes("v"), 0, 0)),
      0);
  // On directories too; a sticky directory's user.* belong to its owner.
  ASSERT_EQ(Err(fs_->SetXattr(root_, pub, "user.d", Bytes("v"), 0, 0)), 0);
  ASSERT_EQ(Err(SetMode(root_, pub, 01777)), 0);
  EXPECT_EQ(Err(fs_->SetXattr(alice_, pub, "user.d", Bytes("v"), 0, 0)), EPERM);
  // Freed with the inode.
  const uint64_t used_before = fs_->BytesUsed();
  ASSERT_EQ(Err(fs_->Unlink(root_, pub, "f")), 0);
  fs_->Forget(f, 1);
  EXPECT_LT(fs_->BytesUsed(), used_before - 65536);
}

// Many threads create, write, rename and unlink distinct and shared names
// while one lists the directory with READDIRPLUS; afterwards every count and
// every file's content must add up.
TEST_F(MemFsTest, ConcurrentNamespaceAndData) {
  constexpr int kThreads = 8;
  constexpr int kIters = 300;
  constexpr int kShared = 4;
  const uint64_t d = MakeDir(root_, kRoot, "d", 0777);
  fs_->Forget(d, 1);
  auto content_of = [](int t, int i) {
    std::string s;
    while (s.size() < 100)
      s += "t" + std::to_string(t) + "_" + std::to_string(i) + ";";
    return s;
  };
  std::atomic<bool> failed{false};
  std::atomic<bool> stop{false};
  auto worker = [&](int t) {
    RequestContext ctx = Ctx(1000 + t, 1000);
    for (int i = 0; i < kIters && !failed; ++i) {
      const std::string name =
          "t" + std::to_string(t) + "_" + std::to_string(i);
      Result<CreateReply> c = fs_->Create(ctx, d, name, S_IFREG | 0644, 0,
                                          O_CREAT | O_EXCL | O_RDWR);
      if (!c) {
        failed = true;
        break;
      }
      const std::string data = content_of(t, i);
      Result<size_t> w = fs_->Write(ctx, c->entry.nodeid, c->open.fh, 0,
                                    Bytes(data), 0, O_RDWR);
      if (!w || *w != data.size()) failed = true;
      fs_->Release(ctx, c->entry.nodeid, c->open.fh, 0, 0, 0);
      fs_->Forget(c->entry.nodeid, 1);
      std::string current = name;
      if (i % 3 == 0) {
        if (!fs_->Rename(ctx, d, name, d, name + ".r", 0)) failed = true;
        current = name + ".r";
      }
      if (i % 5 == 0 && !fs_->Unlink(ctx, d, current)) failed = true;

      // Shared names: races between threads are expected to fail cleanly.
      const std::string shared = "shared" + std::to_string(i % kShared);
      Result<CreateReply> s =
          fs_->Create(ctx, d, shared, S_IFREG | 0666, 0, O_CREAT | O_RDWR);
      if (s) {
        const std::string tag(64, static_cast<char>('A' + t));
        Result<size_t> sw = fs_->Write(ctx, s->entry.nodeid, s->open.fh, 0,
                                       Bytes(tag), 0, O_RDWR);
        if (!sw || *sw != tag.size()) failed = true;
        fs_->Release(ctx, s->entry.nodeid, s->open.fh, 0, 0, 0);
        fs_->Forget(s->entry.nodeid, 1);
      } else {
        failed = true;
      }
      const std::string from = "shared" + std::to_string((i + t) % kShared);
      const std::string to = "shared" + std::to_string((i + t + 1) % kShared);
      Status r = fs_->Rename(ctx, d, from, d, to, 0);
      if (!r && r.error().value() != ENOENT) failed = true;
      if (i % 7 == t % 7) {
        Status u =
            fs_->Unlink(ctx, d, "shared" + std::to_string((i * t) % kShared));
        if (!u && u.error().value() != ENOENT) failed = true;
      }
      Result<Entry> l = fs_->Lookup(ctx, d, current);
      if (l) fs_->Forget(l->nodeid, 1);
    }
  };
  std::thread lister([&] {
    while (!stop) {
      uint64_t offset = 0;
      for (;;) {
        VecSink sink(true, 16);
        if (!fs_->ReadDir(root_, d, 0, offset, sink)) {
          failed = true;
          return;
        }
        if (sink.items.empty()) break;
        for (const auto& item : sink.items) {
          if (item.entry.nodeid != 0) fs_->Forget(item.entry.nodeid, 1);
        }
        offset = sink.items.back().next_offset;
      }
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  stop = true;
  lister.join();
  ASSERT_FALSE(failed);

  std::set<std::string> expected;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kIters; ++i) {
      if (i % 5 == 0) continue;
      expected.insert("t" + std::to_string(t) + "_" + std::to_string(i) +
                      (i % 3 == 0 ? ".r" : ""));
    }
  }
  const std::vector<std::string> names = List(d);
  std::set<std::string> distinct;
  size_t shared_count = 0;
  for (const std::string& name : names) {
    const uint64_t id = LookupId(d, name);
    ASSERT_NE(id, 0u) << name;
    EXPECT_EQ(fs_->LookupCount(id), 0u) << name;
    EXPECT_EQ(Attr(id).nlink, 1u) << name;
    const std::string content = Content(id);
    if (name.starts_with("shared")) {
      ++shared_count;
      ASSERT_EQ(content.size(), 64u) << name;
      EXPECT_EQ(content, std::string(64, content[0])) << name;
    } else {
      distinct.insert(name);
      const size_t us = name.find('_');
      const int t = std::stoi(name.substr(1, us - 1));
      const int i = std::stoi(name.substr(us + 1));
      EXPECT_EQ(content, content_of(t, i)) << name;
    }
  }
  EXPECT_EQ(distinct, expected);
  EXPECT_LE(shared_count, static_cast<size_t>(kShared));
  EXPECT_EQ(names.size(), distinct.size() + shared_count);
  // Nothing leaked: root, d, and what is listed; one block per file.
  EXPECT_EQ(fs_->InodeCount(), 2 + names.size());
  EXPECT_EQ(fs_->BytesUsed(), names.size() * kBlock);
  EXPECT_EQ(fs_->OpenHandleCount(), 0u);
  EXPECT_EQ(Attr(d).nlink, 2u);
}

}  // namespace
}  // namespace efuse
