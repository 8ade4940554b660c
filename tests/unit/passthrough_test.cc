// tests/unit/passthrough_test.cc — PassthroughFs driven through the
// FileSystem interface on a temporary source directory, as the dispatcher
// drives it (no mount, no kernel: reads and writes are served by the
// backend). Credential tests need root and are skipped without it.
#include "core/passthrough/passthrough.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <malloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/passthrough/fd_cache.h"
#include "gtest/gtest.h"
#include "proto/abi.h"

namespace efuse {
namespace {

constexpr uint64_t kRoot = 1;

template <typename T>
int Err(const Result<T>& r) {
  return r.ok() ? 0 : r.error().value();
}

RequestContext Ctx(uint32_t uid = 0, uint32_t gid = 0, std::span<const uint32_t> groups = {}) {
  RequestContext ctx;
  ctx.uid = uid;
  ctx.gid = gid;
  ctx.groups = groups;
  return ctx;
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

int OpenFdCount() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

class VecSink : public DirSink {
 public:
  explicit VecSink(bool plus, size_t limit = SIZE_MAX) : plus_(plus), limit_(limit) {}
  bool Add(std::string_view name, uint64_t ino, uint32_t mode, uint64_t next_offset,
           const Entry* entry) override {
    if (names.size() >= limit_) return false;
    names.emplace_back(name);
    offsets.push_back(next_offset);
    nodeids.push_back(entry != nullptr ? entry->nodeid : 0);
    inos.push_back(ino);
    return true;
  }
  bool plus() const override { return plus_; }
  std::vector<std::string> names;
  std::vector<uint64_t> offsets, nodeids, inos;

 private:
  bool plus_;
  size_t limit_;
};

class PassthroughTest : public ::testing::Test {
 protected:
  void SetUp() override {
    umask(022);
    char tmpl[] = "/tmp/efuse-pt-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    src_ = tmpl;
    Make();
  }
  void TearDown() override {
    fs_.reset();
    std::string cmd = "rm -rf '" + src_ + "'";
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  void Make(PassthroughOptions o = {}) {
    fs_.reset();
    o.source = src_;
    if (o.fd_cache_size == 0) o.fd_cache_size = 256;
    absl::StatusOr<std::unique_ptr<PassthroughFs>> fs = PassthroughFs::Create(o);
    ASSERT_TRUE(fs.ok()) << fs.status();
    fs_ = std::move(*fs);
    // No kernel here: --passthrough=on would (rightly) refuse to start.
    if (o.passthrough != PassthroughMode::kOn) {
      fs_->Init(InitInfo{fs_->WantedInitFlags(0), 45, 1 << 20, nullptr});
    }
  }
  std::string S(std::string_view rel) const { return src_ + "/" + std::string(rel); }
  void WriteSource(std::string_view rel, std::string_view data) {
    FILE* f = std::fopen(S(rel).c_str(), "w");
    ASSERT_NE(f, nullptr) << S(rel);
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  }
  struct stat SourceStat(std::string_view rel) {
    struct stat st {};
    EXPECT_EQ(lstat(S(rel).c_str(), &st), 0) << S(rel);
    return st;
  }
  uint64_t Look(uint64_t parent, std::string_view name) {
    Result<Entry> e = fs_->Lookup(ctx_, parent, name);
    EXPECT_TRUE(e.ok()) << name << ": errno " << Err(e);
    return e.ok() ? e->nodeid : 0;
  }
  std::string ReadAll(uint64_t node, uint64_t fh, size_t max = 1 << 16) {
    std::vector<uint8_t> buf(max);
    Result<size_t> n = fs_->Read(ctx_, node, fh, 0, buf, 0);
    EXPECT_TRUE(n.ok()) << Err(n);
    return n.ok() ? std::string(reinterpret_cast<char*>(buf.data()), *n) : "";
  }
  // Opens `node` with `flags`, releases it at once, and returns the reply's
  // open flags (0 if the open failed).
  uint32_t OpenFlags(uint64_t node, uint32_t flags) {
    Result<OpenReply> o = fs_->Open(ctx_, node, flags, 0);
    EXPECT_TRUE(o.ok()) << Err(o);
    if (!o.ok()) return 0;
    fs_->Release(ctx_, node, o->fh, 0, 0, 0);
    return o->open_flags;
  }

  std::string src_;
  std::unique_ptr<PassthroughFs> fs_;
  RequestContext ctx_ = Ctx();
};

TEST_F(PassthroughTest, CreateFailsForAMissingOrNonDirectorySource) {
  PassthroughOptions o;
  o.source = src_ + "/missing";
  EXPECT_FALSE(PassthroughFs::Create(o).ok());
  WriteSource("file", "x");
  o.source = S("file");
  absl::StatusOr<std::unique_ptr<PassthroughFs>> fs = PassthroughFs::Create(o);
  ASSERT_FALSE(fs.ok());
  EXPECT_NE(fs.status().message().find("not a directory"), std::string::npos) << fs.status();
}

TEST_F(PassthroughTest, LookupReportsTheSourceAttributes) {
  WriteSource("a", "hello");
  Result<Entry> e = fs_->Lookup(ctx_, kRoot, "a");
  ASSERT_TRUE(e.ok()) << Err(e);
  struct stat st = SourceStat("a");
  EXPECT_NE(e->nodeid, 0u);
  EXPECT_NE(e->nodeid, kRoot);
  EXPECT_EQ(e->attr.ino, st.st_ino);
  EXPECT_EQ(e->attr.size, 5u);
  EXPECT_EQ(e->attr.mode, st.st_mode);
  EXPECT_EQ(e->attr.nlink, 1u);
  EXPECT_EQ(fs_->LookupCount(e->nodeid), 1u);
  EXPECT_EQ(Err(fs_->Lookup(ctx_, kRoot, "missing")), ENOENT);
  EXPECT_EQ(Err(fs_->Lookup(ctx_, e->nodeid, "x")), ENOTDIR);
  EXPECT_EQ(Err(fs_->Lookup(ctx_, kRoot, std::string(300, 'n'))), ENAMETOOLONG);
  // The root's ".." is the root: nothing above the source is reachable.
  Result<Entry> up = fs_->Lookup(ctx_, kRoot, "..");
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->nodeid, kRoot);
}

TEST_F(PassthroughTest, NegativeEntriesWhenConfigured) {
  PassthroughOptions o;
  o.negative_timeout = 5;
  Make(o);
  Result<Entry> e = fs_->Lookup(ctx_, kRoot, "missing");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->nodeid, 0u);
  EXPECT_EQ(e->entry_timeout, 5.0);
}

TEST_F(PassthroughTest, HardLinksAreOneInode) {
  WriteSource("a", "data");
  ASSERT_EQ(mkdir(S("d").c_str(), 0755), 0);
  ASSERT_EQ(link(S("a").c_str(), S("d/b").c_str()), 0);
  const uint64_t a = Look(kRoot, "a");
  const uint64_t d = Look(kRoot, "d");
  const uint64_t b = Look(d, "b");
  EXPECT_EQ(a, b);
  EXPECT_EQ(fs_->LookupCount(a), 2u);
  Result<AttrReply> attr = fs_->GetAttr(ctx_, a, nullptr);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->attr.nlink, 2u);
  // A link made through the backend is the same inode too.
  Result<Entry> c = fs_->Link(ctx_, a, kRoot, "c");
  ASSERT_TRUE(c.ok()) << Err(c);
  EXPECT_EQ(c->nodeid, a);
  EXPECT_EQ(c->attr.nlink, 3u);
  EXPECT_EQ(fs_->LookupCount(a), 3u);
}

TEST_F(PassthroughTest, ForgetDropsTheInode) {
  WriteSource("a", "data");
  const uint64_t a = Look(kRoot, "a");
  Look(kRoot, "a");
  const uint64_t before = fs_->Stats().inodes;
  fs_->Forget(a, 1);
  EXPECT_EQ(fs_->LookupCount(a), 1u);
  EXPECT_EQ(fs_->Stats().inodes, before);
  fs_->Forget(a, 1);
  EXPECT_EQ(fs_->LookupCount(a), 0u);
  EXPECT_EQ(fs_->Stats().inodes, before - 1);
  EXPECT_EQ(Err(fs_->GetAttr(ctx_, a, nullptr)), ENOENT);
  // Looked up again, the same file gets its old node id back (a file
  // handle the kernel gave out names it); another file gets a new one (ids
  // are never given to another file).
  const uint64_t again = Look(kRoot, "a");
  EXPECT_EQ(again, a);
  WriteSource("b", "other");
  EXPECT_NE(Look(kRoot, "b"), a);
  fs_->Forget(kRoot, 10);  // the root is never forgotten
  EXPECT_TRUE(fs_->GetAttr(ctx_, kRoot, nullptr).ok());
}

TEST_F(PassthroughTest, ReadWriteAppendTruncate) {
  Result<CreateReply> c = fs_->Create(ctx_, kRoot, "f", 0644, 022, O_RDWR);
  ASSERT_TRUE(c.ok()) << Err(c);
  const uint64_t n = c->entry.nodeid, fh = c->open.fh;
  EXPECT_EQ(c->open.open_flags & abi::kFopenPassthrough, 0u);  // no kernel here
  Result<size_t> w = fs_->Write(ctx_, n, fh, 0, Bytes("hello world"), 0, O_RDWR);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 11u);
  EXPECT_EQ(ReadAll(n, fh), "hello world");
  fs_->Release(ctx_, n, fh, O_RDWR, 0, 0);

  Result<OpenReply> o = fs_->Open(ctx_, n, O_WRONLY | O_APPEND, 0);
  ASSERT_TRUE(o.ok()) << Err(o);
  ASSERT_TRUE(fs_->Write(ctx_, n, o->fh, 0, Bytes("!"), 0, O_WRONLY | O_APPEND).ok());
  fs_->Release(ctx_, n, o->fh, 0, 0, 0);
  o = fs_->Open(ctx_, n, O_RDONLY, 0);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(ReadAll(n, o->fh), "hello world!");
  fs_->Release(ctx_, n, o->fh, 0, 0, 0);

  o = fs_->Open(ctx_, n, O_RDWR | O_TRUNC, 0);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(ReadAll(n, o->fh), "");
  fs_->Release(ctx_, n, o->fh, 0, 0, 0);
  Result<OpenReply> dir = fs_->Open(ctx_, kRoot, O_RDONLY, 0);
  EXPECT_EQ(Err(dir), EISDIR);
  EXPECT_EQ(Err(fs_->Read(ctx_, n, 9999, 0, {}, 0)), EBADF);
  EXPECT_EQ(fs_->Stats().open_handles, 0u);
}

TEST_F(PassthroughTest, KeepCacheOnlyWhileTheFileIsUnchanged) {
  WriteSource("f", "one");
  const uint64_t n = Look(kRoot, "f");
  auto open_flags = [&] { return OpenFlags(n, O_RDONLY); };
  EXPECT_EQ(open_flags() & abi::kFopenKeepCache, 0u);  // first open
  EXPECT_NE(open_flags() & abi::kFopenKeepCache, 0u);  // unchanged
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  WriteSource("f", "two!");  // behind the mount's back
  EXPECT_EQ(open_flags() & abi::kFopenKeepCache, 0u);
  EXPECT_NE(open_flags() & abi::kFopenKeepCache, 0u);
  // O_DIRECT: no page cache at all.
  Result<OpenReply> o = fs_->Open(ctx_, n, O_RDONLY | O_DIRECT, 0);
  ASSERT_TRUE(o.ok());
  EXPECT_NE(o->open_flags & abi::kFopenDirectIo, 0u);
  fs_->Release(ctx_, n, o->fh, 0, 0, 0);
}

// Served by the daemon without the writeback cache, a changed file's pages
// are still kept while another handle of the mount may be writing: dropped,
// a page could be read back from the source before that writer's WRITE
// arrives and stay cached over it.
TEST_F(PassthroughTest, OpensKeepTheCacheWhileAnotherHandleWrites) {
  WriteSource("f", "one");
  const uint64_t n = Look(kRoot, "f");
  auto keeps = [&](uint32_t flags) { return (OpenFlags(n, flags) & abi::kFopenKeepCache) != 0; };
  EXPECT_FALSE(keeps(O_RDONLY));  // first open
  Result<OpenReply> writer = fs_->Open(ctx_, n, O_RDWR, 0);
  ASSERT_TRUE(writer.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs_->Write(ctx_, n, writer->fh, 0, Bytes("changed"), 0, O_RDWR).ok());
  EXPECT_TRUE(keeps(O_RDONLY)) << "changed, but by the open writer";
  EXPECT_FALSE(keeps(O_RDWR | O_TRUNC));
  fs_->Release(ctx_, n, writer->fh, 0, 0, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  WriteSource("f", "behind the back");
  EXPECT_FALSE(keeps(O_RDONLY)) << "no writer open: a change shows";
}

TEST_F(PassthroughTest, CreatedFilesBelongToTheCaller) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  const RequestContext user = Ctx(1234, 5678);
  Result<CreateReply> c = fs_->Create(user, kRoot, "f", 0640, 022, O_WRONLY);
  ASSERT_TRUE(c.ok()) << Err(c);
  fs_->Release(user, c->entry.nodeid, c->open.fh, 0, 0, 0);
  Result<Entry> d = fs_->Mkdir(user, kRoot, "d", 0777, 027);
  ASSERT_TRUE(d.ok()) << Err(d);
  Result<Entry> l = fs_->Symlink(user, kRoot, "l", "f");
  ASSERT_TRUE(l.ok()) << Err(l);
  Result<Entry> p = fs_->Mknod(user, kRoot, "p", S_IFIFO | 0666, 0, 0);
  ASSERT_TRUE(p.ok()) << Err(p);
  for (const char* name : {"f", "d", "l", "p"}) {
    struct stat st = SourceStat(name);
    EXPECT_EQ(st.st_uid, 1234u) << name;
    EXPECT_EQ(st.st_gid, 5678u) << name;
  }
  EXPECT_EQ(SourceStat("f").st_mode & 07777, 0640u);
  EXPECT_EQ(SourceStat("d").st_mode & 07777, 0750u);
  EXPECT_EQ(c->entry.attr.uid, 1234u);
  // The worker thread is itself again: root creates root's files.
  Result<Entry> mine = fs_->Mkdir(ctx_, kRoot, "mine", 0755, 0);
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(SourceStat("mine").st_uid, 0u);
  EXPECT_EQ(SourceStat("mine").st_gid, 0u);
  EXPECT_EQ(syscall(SYS_setfsuid, -1), 0);
  // Device nodes need CAP_MKNOD, which an unprivileged caller lacks.
  EXPECT_EQ(Err(fs_->Mknod(user, kRoot, "dev", S_IFCHR | 0600, makedev(1, 3), 0)), EPERM);
}

TEST_F(PassthroughTest, SetgidDirectoryGroupAndSupplementaryGroups) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  ASSERT_EQ(mkdir(S("shared").c_str(), 0770), 0);
  ASSERT_EQ(chown(S("shared").c_str(), 0, 777), 0);
  ASSERT_EQ(chmod(S("shared").c_str(), 02770), 0);
  const uint64_t shared = Look(kRoot, "shared");
  // The kernel sends the parent's group when the caller is a member of it
  // (FUSE_CREATE_SUPP_GROUP); the new file takes the directory's group.
  const uint32_t groups[] = {777};
  const RequestContext member = Ctx(1234, 5678, groups);
  Result<CreateReply> c = fs_->Create(member, shared, "f", 02755, 0, O_WRONLY);
  ASSERT_TRUE(c.ok()) << Err(c);
  fs_->Release(member, c->entry.nodeid, c->open.fh, 0, 0, 0);
  struct stat st = SourceStat("shared/f");
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 777u);
  EXPECT_NE(st.st_mode & S_ISGID, 0u) << "a member keeps setgid";
  Result<Entry> sub = fs_->Mkdir(member, shared, "sub", 0755, 0);
  ASSERT_TRUE(sub.ok()) << Err(sub);
  EXPECT_NE(SourceStat("shared/sub").st_mode & S_ISGID, 0u) << "subdirectories inherit setgid";
  EXPECT_EQ(SourceStat("shared/sub").st_gid, 777u);
}

TEST_F(PassthroughTest, RemovedBehindTheBackIsStaleNeverAnotherFile) {
  WriteSource("a", "AAAA");
  const uint64_t a = Look(kRoot, "a");
  ASSERT_EQ(unlink(S("a").c_str()), 0);
  EXPECT_EQ(Err(fs_->GetAttr(ctx_, a, nullptr)), ESTALE);
  EXPECT_EQ(Err(fs_->Open(ctx_, a, O_RDONLY, 0)), ESTALE);
  EXPECT_EQ(Err(fs_->Lookup(ctx_, kRoot, "a")), ENOENT);
  EXPECT_GT(fs_->Stats().stale, 0u);
}

TEST_F(PassthroughTest, RenamedBehindTheBack) {
  WriteSource("a", "AAAA");
  WriteSource("b", "BBBB");
  const uint64_t a = Look(kRoot, "a");
  const uint64_t b = Look(kRoot, "b");
  // b is replaced by a: the old name a is gone, b now names a's inode.
  ASSERT_EQ(rename(S("a").c_str(), S("b").c_str()), 0);
  EXPECT_EQ(Err(fs_->Lookup(ctx_, kRoot, "a")), ENOENT);
  EXPECT_EQ(Look(kRoot, "b"), a);
  EXPECT_EQ(Err(fs_->Open(ctx_, b, O_RDONLY, 0)), ESTALE);
  Result<OpenReply> o = fs_->Open(ctx_, a, O_RDONLY, 0);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(ReadAll(a, o->fh), "AAAA");
  fs_->Release(ctx_, a, o->fh, 0, 0, 0);
}

TEST_F(PassthroughTest, ReusedInodeNumberGetsANewInode) {
  // A tiny fd cache, so nothing keeps the old inode alive.
  PassthroughOptions o;
  o.fd_cache_size = 16;
  Make(o);
  WriteSource("old", "OLD");
  const uint64_t old_id = Look(kRoot, "old");
  const ino_t old_ino = SourceStat("old").st_ino;
  for (int i = 0; i < 64; ++i) {  // push its fd out of the cache
    WriteSource("fill" + std::to_string(i), "x");
    Look(kRoot, "fill" + std::to_string(i));
  }
  ASSERT_EQ(unlink(S("old").c_str()), 0);
  // ext4 hands a freed inode number out again soon; try until it does.
  std::string reused;
  for (int i = 0; i < 200 && reused.empty(); ++i) {
    const std::string name = "new" + std::to_string(i);
    WriteSource(name, "NEW");
    if (SourceStat(name).st_ino == old_ino) reused = name;
  }
  EXPECT_EQ(Err(fs_->GetAttr(ctx_, old_id, nullptr)), ESTALE);
  if (reused.empty()) GTEST_SKIP() << "the source did not reuse the inode number";
  const uint64_t new_id = Look(kRoot, reused);
  EXPECT_NE(new_id, old_id);
  EXPECT_EQ(Err(fs_->Open(ctx_, old_id, O_RDONLY, 0)), ESTALE);
  Result<OpenReply> h = fs_->Open(ctx_, new_id, O_RDONLY, 0);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(ReadAll(new_id, h->fh), "NEW");
  fs_->Release(ctx_, new_id, h->fh, 0, 0, 0);
}

TEST_F(PassthroughTest, UnlinkedThroughTheBackendStaysUsableWhileOpen) {
  Result<CreateReply> c = fs_->Create(ctx_, kRoot, "f", 0644, 0, O_RDWR);
  ASSERT_TRUE(c.ok());
  const uint64_t n = c->entry.nodeid;
  ASSERT_TRUE(fs_->Write(ctx_, n, c->open.fh, 0, Bytes("still here"), 0, O_RDWR).ok());
  ASSERT_TRUE(fs_->Unlink(ctx_, kRoot, "f").ok());
  Result<AttrReply> a = fs_->GetAttr(ctx_, n, nullptr);
  ASSERT_TRUE(a.ok()) << Err(a);
  EXPECT_EQ(a->attr.nlink, 0u);
  EXPECT_EQ(ReadAll(n, c->open.fh), "still here");
  fs_->Release(ctx_, n, c->open.fh, 0, 0, 0);
  EXPECT_EQ(Err(fs_->Lookup(ctx_, kRoot, "f")), ENOENT);
}

TEST_F(PassthroughTest, RenameFlagsAndDirectories) {
  WriteSource("a", "A");
  WriteSource("b", "B");
  ASSERT_TRUE(fs_->Mkdir(ctx_, kRoot, "d", 0755, 0).ok());
  EXPECT_EQ(Err(fs_->Rename(ctx_, kRoot, "a", kRoot, "b", RENAME_NOREPLACE)), EEXIST);
  ASSERT_TRUE(fs_->Rename(ctx_, kRoot, "a", kRoot, "b", RENAME_EXCHANGE).ok());
  FILE* f = std::fopen(S("b").c_str(), "r");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(std::fgetc(f), 'A');
  std::fclose(f);
  const uint64_t d = Look(kRoot, "d");
  ASSERT_TRUE(fs_->Rename(ctx_, kRoot, "a", d, "moved", 0).ok());
  EXPECT_EQ(SourceStat("d/moved").st_size, 1);
  EXPECT_EQ(Err(fs_->Rmdir(ctx_, kRoot, "d")), ENOTEMPTY);
  ASSERT_TRUE(fs_->Unlink(ctx_, d, "moved").ok());
  ASSERT_TRUE(fs_->Rmdir(ctx_, kRoot, "d").ok());
  EXPECT_EQ(Err(fs_->Unlink(ctx_, kRoot, "nothing")), ENOENT);
}

TEST_F(PassthroughTest, SetAttrChmodChownTruncateTimes) {
  WriteSource("f", "0123456789");
  const uint64_t n = Look(kRoot, "f");
  SetAttrRequest r;
  r.valid = abi::kFattrMode | abi::kFattrUid | abi::kFattrGid | abi::kFattrSize | abi::kFattrMtime |
            abi::kFattrAtime;
  r.mode = 0600;
  r.uid = 42;
  r.gid = 43;
  r.size = 4;
  r.atime = {1000, 5};
  r.mtime = {2000, 7};
  Result<AttrReply> a = fs_->SetAttr(ctx_, n, r);
  ASSERT_TRUE(a.ok()) << Err(a);
  struct stat st = SourceStat("f");
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 42u);
  EXPECT_EQ(st.st_gid, 43u);
  EXPECT_EQ(st.st_size, 4);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  EXPECT_EQ(st.st_atim.tv_sec, 1000);
  EXPECT_EQ(a->attr.size, 4u);
  EXPECT_EQ(a->attr.uid, 42u);
  // Kill-suidgid from the kernel (HANDLE_KILLPRIV_V2).
  ASSERT_EQ(chmod(S("f").c_str(), 06755), 0);
  SetAttrRequest k;
  k.valid = abi::kFattrSize | abi::kFattrKillSuidgid;
  k.size = 0;
  ASSERT_TRUE(fs_->SetAttr(ctx_, n, k).ok());
  EXPECT_EQ(SourceStat("f").st_mode & 07777, 0755u);
}

TEST_F(PassthroughTest, WriteKillSuidgidClearsTheBits) {
  WriteSource("f", "x");
  ASSERT_EQ(chmod(S("f").c_str(), 06775), 0);
  const uint64_t n = Look(kRoot, "f");
  Result<OpenReply> o = fs_->Open(Ctx(1000, 1000), n, O_WRONLY, 0);
  ASSERT_TRUE(o.ok());
  ASSERT_TRUE(fs_->Write(ctx_, n, o->fh, 0, Bytes("y"), 0, O_WRONLY).ok());
  EXPECT_EQ(SourceStat("f").st_mode & 07777, 06775u) << "root's write keeps them";
  ASSERT_TRUE(fs_->Write(ctx_, n, o->fh, 0, Bytes("z"), abi::kWriteKillSuidgid, O_WRONLY).ok());
  EXPECT_EQ(SourceStat("f").st_mode & 07777, 0775u);
  fs_->Release(ctx_, n, o->fh, 0, 0, 0);
}

// An attribute-less SETATTR is chown(f, -1, -1) or, with HANDLE_KILLPRIV_V2,
// the kernel's file_remove_privs() before a write, fallocate or
// copy_file_range it may never send us (kernel passthrough): setuid, setgid
// as Linux decides and the file capability go in the source, and the reply
// carries the mode the kernel must use for exec.
TEST_F(PassthroughTest, AttributeLessSetattrClearsPrivilegesAndRepliesTheNewMode) {
  WriteSource("f", "x");
  ASSERT_EQ(chown(S("f").c_str(), 0, 60), 0);
  ASSERT_EQ(chmod(S("f").c_str(), 06745), 0);
  const char cap[] = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
  const bool has_cap = setxattr(S("f").c_str(), "security.capability", cap, 20, 0) == 0;
  const uint64_t n = Look(kRoot, "f");
  SetAttrRequest none;
  Result<AttrReply> a = fs_->SetAttr(Ctx(1000, 1000), n, none);  // not in group 60
  ASSERT_TRUE(a.ok()) << Err(a);
  EXPECT_EQ(a->attr.mode & 07777, 0745u) << "setgid without group exec goes for a non-member";
  EXPECT_EQ(SourceStat("f").st_mode & 07777, 0745u);
  if (has_cap) {
    EXPECT_LT(getxattr(S("f").c_str(), "security.capability", nullptr, 0), 0);
  }
  // A member keeps setgid without group exec; setuid goes.
  ASSERT_EQ(chmod(S("f").c_str(), 06745), 0);
  const uint32_t group60[] = {60};
  a = fs_->SetAttr(Ctx(1000, 1000, group60), n, none);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->attr.mode & 07777, 02745u);
  // Directories keep their setgid.
  ASSERT_EQ(mkdir(S("d").c_str(), 02755), 0);
  ASSERT_EQ(chmod(S("d").c_str(), 02755), 0);
  a = fs_->SetAttr(Ctx(1000, 1000), Look(kRoot, "d"), none);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->attr.mode & 07777, 02755u);
}

TEST_F(PassthroughTest, WriteKillSuidgidFollowsTheWritersGroup) {
  WriteSource("f", "x");
  ASSERT_EQ(chown(S("f").c_str(), 0, 60), 0);
  ASSERT_EQ(chmod(S("f").c_str(), 02766), 0);
  const uint64_t n = Look(kRoot, "f");
  Result<OpenReply> o = fs_->Open(Ctx(1000, 1000), n, O_WRONLY, 0);
  ASSERT_TRUE(o.ok());
  const uint32_t group60[] = {60};
  ASSERT_TRUE(fs_->Write(Ctx(1000, 1000, group60), n, o->fh, 0, Bytes("y"), abi::kWriteKillSuidgid, O_WRONLY).ok());
  EXPECT_EQ(SourceStat("f").st_mode & 07777, 02766u) << "a member keeps it";
  ASSERT_TRUE(fs_->Write(Ctx(1000, 1000), n, o->fh, 0, Bytes("z"), abi::kWriteKillSuidgid, O_WRONLY).ok());
  EXPECT_EQ(SourceStat("f").st_mode & 07777, 0766u) << "a non-member drops it";
  fs_->Release(ctx_, n, o->fh, 0, 0, 0);
}

TEST_F(PassthroughTest, SymlinksAndReadLink) {
  Result<Entry> l = fs_->Symlink(ctx_, kRoot, "l", "some/target");
  ASSERT_TRUE(l.ok());
  EXPECT_TRUE(S_ISLNK(l->attr.mode));
  Result<std::string> t = fs_->ReadLink(ctx_, l->nodeid);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, "some/target");
  EXPECT_EQ(Err(fs_->ReadLink(ctx_, kRoot)), EINVAL);
  EXPECT_EQ(Err(fs_->Open(ctx_, l->nodeid, O_RDONLY, 0)), ELOOP);
}

TEST_F(PassthroughTest, TmpFileThenLink) {
  Result<CreateReply> t = fs_->TmpFile(ctx_, kRoot, 0600, 0, O_RDWR);
  ASSERT_TRUE(t.ok()) << Err(t);
  const uint64_t n = t->entry.nodeid;
  EXPECT_EQ(t->entry.attr.nlink, 0u);
  ASSERT_TRUE(fs_->Write(ctx_, n, t->open.fh, 0, Bytes("tmp"), 0, O_RDWR).ok());
  EXPECT_TRUE(fs_->GetAttr(ctx_, n, nullptr).ok());
  Result<Entry> e = fs_->Link(ctx_, n, kRoot, "named");
  ASSERT_TRUE(e.ok()) << Err(e);
  EXPECT_EQ(e->nodeid, n);
  fs_->Release(ctx_, n, t->open.fh, 0, 0, 0);
  EXPECT_EQ(SourceStat("named").st_size, 3);
}

TEST_F(PassthroughTest, ExtendedAttributesIncludingSecurityAndAcls) {
  WriteSource("f", "x");
  const uint64_t n = Look(kRoot, "f");
  ASSERT_TRUE(fs_->SetXattr(ctx_, n, "user.color", Bytes("blue"), 0, 0).ok());
  EXPECT_EQ(Err(fs_->SetXattr(ctx_, n, "user.color", Bytes("red"), XATTR_CREATE, 0)), EEXIST);
  EXPECT_EQ(Err(fs_->SetXattr(ctx_, n, "user.none", Bytes("x"), XATTR_REPLACE, 0)), ENODATA);
  Result<std::string> v = fs_->GetXattr(ctx_, n, "user.color");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "blue");
  char buf[64];
  ASSERT_EQ(getxattr(S("f").c_str(), "user.color", buf, sizeof(buf)), 4);
  ASSERT_TRUE(fs_->SetXattr(ctx_, n, "security.efuse", Bytes("label"), 0, 0).ok());
  ASSERT_TRUE(fs_->SetXattr(ctx_, n, "trusted.secret", Bytes("t"), 0, 0).ok());
  // A POSIX ACL (version 2): user::rw- user:1000:r-- group::r-- mask::r-- other::---
  const uint8_t acl[] = {2,    0, 0, 0,                           // version
                         1,    0, 6, 0, 0xff, 0xff, 0xff, 0xff,   // USER_OBJ rw
                         2,    0, 4, 0, 0xe8, 0x03, 0,    0,      // USER 1000 r
                         4,    0, 4, 0, 0xff, 0xff, 0xff, 0xff,   // GROUP_OBJ r
                         0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,   // MASK r
                         0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};  // OTHER ---
  ASSERT_TRUE(fs_->SetXattr(ctx_, n, "system.posix_acl_access", acl, 0, 0).ok());
  Result<std::string> got = fs_->GetXattr(ctx_, n, "system.posix_acl_access");
  ASSERT_TRUE(got.ok()) << Err(got);
  EXPECT_EQ(*got, std::string(reinterpret_cast<const char*>(acl), sizeof(acl)));
  EXPECT_EQ(SourceStat("f").st_mode & 0777, 0640u) << "the ACL set the mode bits";

  auto names = [](const std::string& list) {
    std::set<std::string> out;
    for (size_t p = 0; p < list.size();) {
      size_t e = list.find('\0', p);
      out.insert(list.substr(p, e - p));
      p = e + 1;
    }
    return out;
  };
  Result<std::string> all = fs_->ListXattr(ctx_, n);
  ASSERT_TRUE(all.ok());
  std::set<std::string> root_sees = names(*all);
  EXPECT_TRUE(root_sees.count("user.color"));
  EXPECT_TRUE(root_sees.count("security.efuse"));
  EXPECT_TRUE(root_sees.count("trusted.secret"));
  EXPECT_TRUE(root_sees.count("system.posix_acl_access"));
  Result<std::string> theirs = fs_->ListXattr(Ctx(1000, 1000), n);
  ASSERT_TRUE(theirs.ok());
  EXPECT_FALSE(names(*theirs).count("trusted.secret"));
  EXPECT_TRUE(names(*theirs).count("user.color"));
  EXPECT_EQ(Err(fs_->GetXattr(Ctx(1000, 1000), n, "trusted.secret")), ENODATA);
  ASSERT_TRUE(fs_->RemoveXattr(ctx_, n, "user.color").ok());
  EXPECT_EQ(Err(fs_->GetXattr(ctx_, n, "user.color")), ENODATA);
  EXPECT_EQ(Err(fs_->RemoveXattr(ctx_, n, "user.color")), ENODATA);
  // Symlinks carry their own xattrs (trusted.* works on them).
  Result<Entry> l = fs_->Symlink(ctx_, kRoot, "l", "f");
  ASSERT_TRUE(l.ok());
  ASSERT_TRUE(fs_->SetXattr(ctx_, l->nodeid, "trusted.link", Bytes("L"), 0, 0).ok());
  EXPECT_EQ(lgetxattr(S("l").c_str(), "trusted.link", buf, sizeof(buf)), 1);
  EXPECT_EQ(getxattr(S("f").c_str(), "trusted.link", buf, sizeof(buf)), -1);
}

TEST_F(PassthroughTest, DefaultAclReplacesTheUmask) {
  ASSERT_EQ(mkdir(S("acl").c_str(), 0755), 0);
  // Default ACL: user::rw- group::r-- other::---
  const uint8_t acl[] = {2,    0, 0, 0,                           // version
                         1,    0, 6, 0, 0xff, 0xff, 0xff, 0xff,   // USER_OBJ rw
                         4,    0, 4, 0, 0xff, 0xff, 0xff, 0xff,   // GROUP_OBJ r
                         0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};  // OTHER ---
  if (setxattr(S("acl").c_str(), "system.posix_acl_default", acl, sizeof(acl), 0) != 0) {
    GTEST_SKIP() << "no POSIX ACLs on the source: " << strerror(errno);
  }
  const uint64_t dir = Look(kRoot, "acl");
  // The kernel leaves masking to us with FUSE_POSIX_ACL: the default ACL
  // decides (0640), not the umask (which would give 0600).
  Result<CreateReply> c = fs_->Create(ctx_, dir, "f", 0666, 077, O_WRONLY);
  ASSERT_TRUE(c.ok()) << Err(c);
  fs_->Release(ctx_, c->entry.nodeid, c->open.fh, 0, 0, 0);
  EXPECT_EQ(SourceStat("acl/f").st_mode & 0777, 0640u);
  // Without a default ACL the umask applies.
  Result<CreateReply> g = fs_->Create(ctx_, kRoot, "g", 0666, 077, O_WRONLY);
  ASSERT_TRUE(g.ok());
  fs_->Release(ctx_, g->entry.nodeid, g->open.fh, 0, 0, 0);
  EXPECT_EQ(SourceStat("g").st_mode & 0777, 0600u);
}

TEST_F(PassthroughTest, LseekFallocateCopyFileRange) {
  Result<CreateReply> c = fs_->Create(ctx_, kRoot, "sparse", 0644, 0, O_RDWR);
  ASSERT_TRUE(c.ok());
  const uint64_t n = c->entry.nodeid, fh = c->open.fh;
  const std::string block(4096, 'd');
  ASSERT_TRUE(fs_->Write(ctx_, n, fh, 1 << 20, Bytes(block), 0, O_RDWR).ok());
  Result<uint64_t> data = fs_->Lseek(ctx_, n, fh, 0, SEEK_DATA);
  ASSERT_TRUE(data.ok()) << Err(data);
  EXPECT_EQ(*data, 1u << 20);
  Result<uint64_t> hole = fs_->Lseek(ctx_, n, fh, 0, SEEK_HOLE);
  ASSERT_TRUE(hole.ok());
  EXPECT_EQ(*hole, 0u);
  EXPECT_EQ(Err(fs_->Lseek(ctx_, n, fh, 2 << 20, SEEK_DATA)), ENXIO);

  ASSERT_TRUE(fs_->Fallocate(ctx_, n, fh, 2 << 20, 8192, 0).ok());
  EXPECT_EQ(SourceStat("sparse").st_size, (2 << 20) + 8192);
  ASSERT_TRUE(fs_->Fallocate(ctx_, n, fh, 3 << 20, 8192, FALLOC_FL_KEEP_SIZE).ok());
  EXPECT_EQ(SourceStat("sparse").st_size, (2 << 20) + 8192);
  EXPECT_GE(SourceStat("sparse").st_blocks, 2 * 8192 / 512 + 4096 / 512);
  ASSERT_TRUE(
      fs_->Fallocate(ctx_, n, fh, 1 << 20, 4096, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE).ok());
  Result<uint64_t> punched = fs_->Lseek(ctx_, n, fh, 1 << 20, SEEK_HOLE);
  ASSERT_TRUE(punched.ok());
  EXPECT_EQ(*punched, 1u << 20) << "the punched block is a hole";

  Result<CreateReply> d = fs_->Create(ctx_, kRoot, "copy", 0644, 0, O_RDWR);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(fs_->Write(ctx_, n, fh, 100, Bytes("copy me"), 0, O_RDWR).ok());
  Result<uint64_t> copied =
      fs_->CopyFileRange(ctx_, n, fh, 100, d->entry.nodeid, d->open.fh, 10, 7, 0);
  ASSERT_TRUE(copied.ok()) << Err(copied);
  EXPECT_EQ(*copied, 7u);
  std::vector<uint8_t> out(17);
  ASSERT_EQ(*fs_->Read(ctx_, d->entry.nodeid, d->open.fh, 0, out, 0), 17u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(out.data()) + 10, 7), "copy me");
  fs_->Release(ctx_, n, fh, 0, 0, 0);
  fs_->Release(ctx_, d->entry.nodeid, d->open.fh, 0, 0, 0);
}

TEST_F(PassthroughTest, PosixAndOfdLocksReachTheSourceFile) {
  WriteSource("f", std::string(1000, 'x'));
  const uint64_t n = Look(kRoot, "f");
  Result<OpenReply> h1 = fs_->Open(ctx_, n, O_RDWR, 0);
  Result<OpenReply> h2 = fs_->Open(ctx_, n, O_RDWR, 0);
  ASSERT_TRUE(h1.ok() && h2.ok());
  LockRequest a;
  a.fh = h1->fh;
  a.owner = 0xA;
  a.pid = 111;
  a.type = F_WRLCK;
  a.start = 0;
  a.end = 99;
  ASSERT_TRUE(fs_->SetLk(ctx_, n, a, false).ok());
  LockRequest b = a;
  b.fh = h2->fh;
  b.owner = 0xB;
  b.pid = 222;
  b.type = F_RDLCK;
  Result<LockRequest> probe = fs_->GetLk(ctx_, n, b);
  ASSERT_TRUE(probe.ok()) << Err(probe);
  EXPECT_EQ(probe->type, static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(probe->pid, 111u);
  EXPECT_EQ(probe->end, 99u);
  EXPECT_EQ(Err(fs_->SetLk(ctx_, n, b, false)), EAGAIN);
  // The owner does not conflict with itself.
  Result<LockRequest> self = fs_->GetLk(ctx_, n, a);
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(self->type, static_cast<uint32_t>(F_UNLCK));
  // A process using the source directly sees the lock.
  int direct = open(S("f").c_str(), O_RDWR);
  ASSERT_GE(direct, 0);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 50;
  fl.l_len = 1;
  ASSERT_EQ(fcntl(direct, F_OFD_GETLK, &fl), 0) << strerror(errno);
  EXPECT_EQ(fl.l_type, F_WRLCK);
  // Beyond the range: free.
  b.start = 100;
  b.end = 0x7fffffffffffffffULL;
  EXPECT_TRUE(fs_->SetLk(ctx_, n, b, false).ok());
  // Closing any fd of the owner (FLUSH) drops its POSIX locks.
  ASSERT_TRUE(fs_->Flush(ctx_, n, h1->fh, 0xA).ok());
  fl.l_type = F_WRLCK;
  fl.l_start = 50;
  fl.l_len = 1;
  fl.l_pid = 0;  // the last answer said -1 (an OFD lock)
  ASSERT_EQ(fcntl(direct, F_OFD_GETLK, &fl), 0);
  EXPECT_EQ(fl.l_type, F_UNLCK);
  b.start = 0;
  b.end = 99;
  b.type = F_WRLCK;
  EXPECT_TRUE(fs_->SetLk(ctx_, n, b, false).ok());
  // Blocking: interrupted while waiting.
  std::atomic<bool> interrupted{true};
  RequestContext ictx = Ctx();
  ictx.interrupted = &interrupted;
  a.type = F_WRLCK;
  EXPECT_EQ(Err(fs_->SetLk(ictx, n, a, true)), EINTR);
  // Blocking: granted once the holder lets go.
  interrupted = false;
  std::thread unlocker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    LockRequest u = b;
    u.type = F_UNLCK;
    EXPECT_TRUE(fs_->SetLk(ctx_, n, u, false).ok());
  });
  EXPECT_TRUE(fs_->SetLk(ictx, n, a, true).ok());
  unlocker.join();
  close(direct);
  fs_->Release(ctx_, n, h1->fh, 0, 0, 0);
  fs_->Release(ctx_, n, h2->fh, 0, 0, 0);
}

TEST_F(PassthroughTest, BlockingLockWaitersAreBounded) {
  PassthroughOptions o;
  o.max_lock_waiters = 0;
  Make(o);
  WriteSource("f", "x");
  const uint64_t n = Look(kRoot, "f");
  Result<OpenReply> h1 = fs_->Open(ctx_, n, O_RDWR, 0);
  Result<OpenReply> h2 = fs_->Open(ctx_, n, O_RDWR, 0);
  LockRequest a;
  a.fh = h1->fh;
  a.owner = 1;
  a.type = F_WRLCK;
  a.end = 0x7fffffffffffffffULL;
  ASSERT_TRUE(fs_->SetLk(ctx_, n, a, true).ok());  // free: granted at once
  LockRequest b = a;
  b.fh = h2->fh;
  b.owner = 2;
  EXPECT_EQ(Err(fs_->SetLk(ctx_, n, b, true)), EDEADLK);
  fs_->Release(ctx_, n, h1->fh, 0, 0, 0);
  fs_->Release(ctx_, n, h2->fh, 0, 0, 0);
}

TEST_F(PassthroughTest, FlockBelongsToTheOpenFile) {
  WriteSource("f", "x");
  const uint64_t n = Look(kRoot, "f");
  Result<OpenReply> h1 = fs_->Open(ctx_, n, O_RDONLY, 0);
  Result<OpenReply> h2 = fs_->Open(ctx_, n, O_RDONLY, 0);
  LockRequest l;
  l.flock = true;
  l.type = F_WRLCK;
  l.fh = h1->fh;
  l.owner = 1;
  ASSERT_TRUE(fs_->SetLk(ctx_, n, l, false).ok());
  LockRequest m = l;
  m.fh = h2->fh;
  m.owner = 2;
  EXPECT_EQ(Err(fs_->SetLk(ctx_, n, m, false)), EAGAIN);
  int direct = open(S("f").c_str(), O_RDONLY);
  EXPECT_EQ(::flock(direct, LOCK_SH | LOCK_NB), -1);
  EXPECT_EQ(errno, EWOULDBLOCK);
  fs_->Release(ctx_, n, h1->fh, 0, abi::kReleaseFlockUnlock, 1);
  EXPECT_TRUE(fs_->SetLk(ctx_, n, m, false).ok());
  close(direct);
  fs_->Release(ctx_, n, h2->fh, 0, 0, 0);
}

TEST_F(PassthroughTest, ReadDirAndReadDirPlus) {
  for (int i = 0; i < 100; ++i) WriteSource("f" + std::to_string(i), "x");
  ASSERT_EQ(mkdir(S("sub").c_str(), 0755), 0);
  Result<OpenReply> d = fs_->OpenDir(ctx_, kRoot, O_RDONLY);
  ASSERT_TRUE(d.ok());
  EXPECT_NE(d->open_flags & abi::kFopenCacheDir, 0u);
  VecSink all(false);
  ASSERT_TRUE(fs_->ReadDir(ctx_, kRoot, d->fh, 0, all).ok());
  std::set<std::string> names(all.names.begin(), all.names.end());
  EXPECT_EQ(names.size(), 103u);
  EXPECT_TRUE(names.count(".") && names.count("..") && names.count("sub") && names.count("f42"));
  // Paged: a sink that takes 10 at a time resumes at the cookie. With
  // --readdirplus=adaptive the entries carry attributes (and a lookup)
  // only once files of the directory were looked up one by one.
  auto paged = [&](bool attrs) {
    std::vector<std::string> names;
    uint64_t off = 0;
    for (;;) {
      VecSink page(true, 10);
      EXPECT_TRUE(fs_->ReadDir(ctx_, kRoot, d->fh, off, page).ok());
      if (page.names.empty()) break;
      for (size_t i = 0; i < page.names.size(); ++i) {
        names.push_back(page.names[i]);
        if (attrs && page.names[i] != "." && page.names[i] != "..") {
          EXPECT_NE(page.nodeids[i], 0u) << page.names[i];
          EXPECT_GE(fs_->LookupCount(page.nodeids[i]), 1u) << page.names[i];
        } else {
          EXPECT_EQ(page.nodeids[i], 0u) << page.names[i];
        }
      }
      off = page.offsets.back();
    }
    return names;
  };
  EXPECT_EQ(paged(false), all.names);
  // Directories looked up are no evidence (walks descend into them); files are.
  Look(kRoot, "sub");
  EXPECT_EQ(paged(false), all.names);
  for (const char* f : {"f1", "f2", "f3", "f4"}) Look(kRoot, f);
  EXPECT_EQ(paged(true), all.names);
  fs_->ReleaseDir(ctx_, kRoot, d->fh);
  // Unchanged directory: the kernel may keep its cached listing.
  d = fs_->OpenDir(ctx_, kRoot, O_RDONLY);
  EXPECT_NE(d->open_flags & abi::kFopenKeepCache, 0u);
  fs_->ReleaseDir(ctx_, kRoot, d->fh);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  WriteSource("late", "x");
  d = fs_->OpenDir(ctx_, kRoot, O_RDONLY);
  EXPECT_EQ(d->open_flags & abi::kFopenKeepCache, 0u);
  fs_->ReleaseDir(ctx_, kRoot, d->fh);
  EXPECT_EQ(Err(fs_->OpenDir(ctx_, Look(kRoot, "f1"), O_RDONLY)), ENOTDIR);
}

TEST_F(PassthroughTest, StatFsAndSync) {
  Result<FsStats> s = fs_->StatFs(ctx_, kRoot);
  ASSERT_TRUE(s.ok()) << Err(s);
  EXPECT_GT(s->blocks, 0u);
  EXPECT_EQ(s->namelen, 255u);
  EXPECT_TRUE(fs_->SyncFs(ctx_).ok());
}

TEST_F(PassthroughTest, InitFlags) {
  namespace f = abi::init;
  PassthroughOptions o;
  o.passthrough = PassthroughMode::kOff;
  Make(o);
  uint64_t flags = fs_->WantedInitFlags(f::kHandleKillprivV2);
  EXPECT_NE(flags & f::kWritebackCache, 0u);
  EXPECT_EQ(flags & f::kPassthrough, 0u);
  EXPECT_NE(flags & f::kPosixLocks, 0u);
  EXPECT_NE(flags & f::kFlockLocks, 0u);
  EXPECT_NE(flags & f::kPosixAcl, 0u);
  EXPECT_NE(flags & f::kHandleKillprivV2, 0u);
  o.passthrough = PassthroughMode::kOn;
  o.killpriv_v2 = false;
  Make(o);
  flags = fs_->WantedInitFlags(f::kHandleKillprivV2 | f::kWritebackCache);
  EXPECT_NE(flags & f::kPassthrough, 0u);
  EXPECT_EQ(flags & f::kWritebackCache, 0u) << "the kernel refuses passthrough with it";
  EXPECT_EQ(flags & f::kHandleKillprivV2, 0u);
}

TEST_F(PassthroughTest, ConcurrentLookupsAndForgetsKeepCountsRight) {
  for (int i = 0; i < 20; ++i) WriteSource("f" + std::to_string(i), "x");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        const std::string name = "f" + std::to_string((round + t) % 20);
        Result<Entry> e = fs_->Lookup(ctx_, kRoot, name);
        if (!e.ok()) {
          ++failures;
          continue;
        }
        if (!fs_->GetAttr(ctx_, e->nodeid, nullptr).ok()) ++failures;
        fs_->Forget(e->nodeid, 1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(fs_->Stats().inodes, 0u);
}

// 30,000 files against an fd cache of 1,000: every inode stays usable, the
// process never holds more fds than the cache plus a little.
TEST_F(PassthroughTest, FdBudgetHoldsForManyMoreInodesThanFds) {
  PassthroughOptions o;
  o.fd_cache_size = 1000;
  Make(o);
  constexpr int kFiles = 30000;
  ASSERT_EQ(mkdir(S("many").c_str(), 0755), 0);
  {
    int dfd = open(S("many").c_str(), O_PATH | O_DIRECTORY);
    ASSERT_GE(dfd, 0);
    for (int i = 0; i < kFiles; ++i) {
      const std::string name = "f" + std::to_string(i);
      int fd = openat(dfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      ASSERT_GE(fd, 0) << name;
      ASSERT_EQ(write(fd, name.data(), name.size()), static_cast<ssize_t>(name.size()));
      close(fd);
    }
    close(dfd);
  }
  const int fds_before = OpenFdCount();
  const uint64_t dir = Look(kRoot, "many");
  const size_t heap_before = mallinfo2().uordblks;
  std::vector<uint64_t> ids(kFiles);
  for (int i = 0; i < kFiles; ++i) {
    Result<Entry> e = fs_->Lookup(ctx_, dir, "f" + std::to_string(i));
    ASSERT_TRUE(e.ok()) << i << ": errno " << Err(e);
    ids[i] = e->nodeid;
  }
  const size_t heap_after = mallinfo2().uordblks;
  const PassthroughStats st = fs_->Stats();
  EXPECT_EQ(st.inodes, static_cast<uint64_t>(kFiles) + 1);
  EXPECT_LE(st.fd_cache.size, 1000u);
  EXPECT_LE(OpenFdCount() - fds_before, 1000 + 16);
  // Heap per remembered inode (the cached fds' list nodes included).
  const double per_inode = static_cast<double>(heap_after - heap_before) / kFiles;
  RecordProperty("heap_bytes_per_inode", static_cast<int>(per_inode));
  std::printf("heap per remembered inode: %.0f bytes\n", per_inode);
  EXPECT_LT(per_inode, 512.0);
  // Every inode still answers, reopened by handle.
  for (int i = 0; i < kFiles; i += 7) {
    Result<AttrReply> a = fs_->GetAttr(ctx_, ids[i], nullptr);
    ASSERT_TRUE(a.ok()) << i << ": errno " << Err(a);
    EXPECT_EQ(a->attr.size, ("f" + std::to_string(i)).size());
  }
  for (int i = 0; i < kFiles; i += 997) {
    Result<OpenReply> h = fs_->Open(ctx_, ids[i], O_RDONLY, 0);
    ASSERT_TRUE(h.ok()) << Err(h);
    EXPECT_EQ(ReadAll(ids[i], h->fh), "f" + std::to_string(i));
    fs_->Release(ctx_, ids[i], h->fh, 0, 0, 0);
  }
  EXPECT_LE(OpenFdCount() - fds_before, 1000 + 16);
  EXPECT_EQ(fs_->Stats().pinned_fds, 0u);
  for (int i = 0; i < kFiles; ++i) fs_->Forget(ids[i], 1);
  EXPECT_EQ(fs_->Stats().inodes, 1u);
}

TEST(FdCacheTest, BoundedAndEvictedFdsCloseWhenUnused) {
  passthrough::FdCache cache(32);
  std::vector<passthrough::SharedFd> held;
  for (uint64_t k = 0; k < 200; ++k) {
    int fd = open("/dev/null", O_RDONLY);
    ASSERT_GE(fd, 0);
    passthrough::SharedFd got = cache.Put(k, passthrough::MakeSharedFd(fd));
    EXPECT_EQ(got->get(), fd);
    if (k == 0) held.push_back(got);
  }
  EXPECT_LE(cache.Stats().size, 32u);
  EXPECT_GT(cache.Stats().evictions, 0u);
  // Key 0 was evicted but is still open while held.
  EXPECT_EQ(cache.Get(0), nullptr);
  EXPECT_NE(fcntl(held[0]->get(), F_GETFD), -1);
  // A second Put for a cached key keeps the first fd.
  int a = open("/dev/null", O_RDONLY), b = open("/dev/null", O_RDONLY);
  EXPECT_EQ(cache.Put(1000, passthrough::MakeSharedFd(a))->get(), a);
  EXPECT_EQ(cache.Put(1000, passthrough::MakeSharedFd(b))->get(), a);
  EXPECT_EQ(fcntl(b, F_GETFD), -1) << "the loser is closed";
  cache.Erase(1000);
  EXPECT_EQ(cache.Get(1000), nullptr);
}

}  // namespace
}  // namespace efuse
