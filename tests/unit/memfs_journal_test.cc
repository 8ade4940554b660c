// memfs's journal and data store (core/memfs/memfs_journal.cc): a second
// MemFs built on the first one's state region and data memfd, as a
// successor server is, holds the same file system: every name, attribute,
// byte, xattr, symlink, lookup count and open handle. Also after a
// checkpoint, and without what a request the kernel never got an answer to
// had added.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/memfs/data_store.h"
#include "core/memfs/memfs.h"
#include "core/state_region.h"
#include "gtest/gtest.h"
#include "proto/abi.h"

namespace efuse {
namespace {

constexpr uint64_t kRoot = 1;

std::span<const uint8_t> Bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

RequestContext Ctx(uint32_t uid, uint32_t gid, uint64_t unique = 0) {
  RequestContext ctx;
  ctx.uid = uid;
  ctx.gid = gid;
  ctx.unique = unique;
  return ctx;
}

class Names : public DirSink {
 public:
  bool Add(std::string_view name, uint64_t ino, uint32_t mode, uint64_t next_offset, const Entry*) override {
    if (name != "." && name != "..") entries.emplace_back(std::string(name), ino, next_offset);
    return true;
  }
  bool plus() const override { return false; }
  std::vector<std::tuple<std::string, uint64_t, uint64_t>> entries;  // name, ino, cookie
};

// Everything a client could see of the tree below `dir`, one line per name.
void Dump(MemFs& fs, uint64_t dir, const std::string& path, std::map<std::string, std::string>* out) {
  const RequestContext root = Ctx(0, 0);
  Names names;
  ASSERT_TRUE(fs.ReadDir(root, dir, 0, 0, names).ok()) << path;
  for (const auto& [name, ino, cookie] : names.entries) {
    Result<AttrReply> a = fs.GetAttr(root, ino, nullptr);
    ASSERT_TRUE(a.ok()) << path << "/" << name;
    const Attributes& at = a->attr;
    std::string line = "ino=" + std::to_string(ino) + " cookie=" + std::to_string(cookie) +
                       " mode=" + std::to_string(at.mode) + " uid=" + std::to_string(at.uid) +
                       " gid=" + std::to_string(at.gid) + " nlink=" + std::to_string(at.nlink) +
                       " size=" + std::to_string(at.size) + " blocks=" + std::to_string(at.blocks) +
                       " rdev=" + std::to_string(at.rdev) + " mtime=" + std::to_string(at.mtime.tv_sec) + "." +
                       std::to_string(at.mtime.tv_nsec) + " ctime=" + std::to_string(at.ctime.tv_sec) + "." +
                       std::to_string(at.ctime.tv_nsec) + " lookups=" + std::to_string(fs.LookupCount(ino));
    if (Result<std::string> x = fs.ListXattr(root, ino); x.ok()) {
      for (size_t at_name = 0; at_name < x->size();) {
        const std::string xname = x->c_str() + at_name;
        at_name += xname.size() + 1;
        Result<std::string> v = fs.GetXattr(root, ino, xname);
        line += " " + xname + "=" + (v.ok() ? *v : "?");
      }
    }
    if (S_ISLNK(at.mode)) line += " -> " + fs.ReadLink(root, ino).value();
    if (S_ISREG(at.mode)) {
      Result<OpenReply> o = fs.Open(root, ino, O_RDONLY, 0);
      ASSERT_TRUE(o.ok());
      std::string data(at.size, '\0');
      Result<size_t> n = fs.Read(root, ino, o->fh, 0,
                                 std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()), O_NOATIME);
      fs.Release(root, ino, o->fh, 0, 0, 0);
      ASSERT_TRUE(n.ok());
      data.resize(*n);
      line += " data=" + std::to_string(std::hash<std::string>{}(data));
    }
    (*out)[path + "/" + name] = line;
    if (S_ISDIR(at.mode)) Dump(fs, ino, path + "/" + name, out);
  }
}

class MemFsJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<StateRegion>> region = StateRegion::Create();
    ASSERT_TRUE(region.ok()) << region.status();
    region_ = std::move(*region);
    absl::StatusOr<int> fd = DataStore::NewMemfd();
    ASSERT_TRUE(fd.ok()) << fd.status();
    data_fd_ = *fd;
  }
  void TearDown() override {
    first_.reset();
    if (data_fd_ >= 0) close(data_fd_);
  }
  MemFsOptions Options() const {
    MemFsOptions o;
    o.size_limit = 1ULL << 30;
    o.data_fd = dup(data_fd_);
    o.journal = region_.get();
    o.journal_checkpoint_bytes = checkpoint_bytes_;
    o.checkpoint_chunk = checkpoint_chunk_;
    o.between_checkpoint_chunks = between_checkpoint_chunks_;
    return o;
  }
  // The first server: builds a fresh file system, then INIT is answered.
  MemFs& First() {
    first_ = std::make_unique<MemFs>(Options());
    first_->Init(InitInfo{});
    region_->header().initialized.store(1);
    return *first_;
  }
  // A successor: the same region and data, rebuilt at Init.
  std::unique_ptr<MemFs> Successor() {
    auto fs = std::make_unique<MemFs>(Options());
    fs->Init(InitInfo{});
    return fs;
  }

  // File "f<n>" in `dir`, written and closed; unlinked and forgotten
  // unless kept.
  static void Churn(MemFs& fs, uint64_t dir, int n, bool keep) {
    const RequestContext root = Ctx(0, 0);
    const std::string name = "f" + std::to_string(n);
    Result<CreateReply> c = fs.Create(root, dir, name, S_IFREG | 0644, 0, O_CREAT | O_RDWR);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(fs.Write(root, c->entry.nodeid, c->open.fh, 0, Bytes(name), 0, O_RDWR).ok());
    fs.Release(root, c->entry.nodeid, c->open.fh, 0, 0, 0);
    if (keep) return;
    ASSERT_TRUE(fs.Unlink(root, dir, name).ok());
    fs.Forget(c->entry.nodeid, 1);
  }

  // Files made and removed in a directory of their own until the
  // compactor commits a checkpoint (bounded: 20 s).
  void ChurnUntilACheckpoint(MemFs& fs) {
    const uint64_t dir = fs.Mkdir(Ctx(0, 0), kRoot, "churn", 0755, 0)->nodeid;
    const uint64_t committed = region_->header().checkpoints.load();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int n = 0; region_->header().checkpoints.load() == committed && std::chrono::steady_clock::now() < deadline;) {
      for (int i = 0; i < 100; ++i, ++n) ASSERT_NO_FATAL_FAILURE(Churn(fs, dir, n, /*keep=*/false));
    }
    ASSERT_GT(region_->header().checkpoints.load(), committed) << "no checkpoint in 20 s";
  }

  // File `name` in the root, created and closed, its lookup forgotten: the
  // kernel knows nothing of it.
  static void MakeUnknownFile(MemFs& fs, const std::string& name, uint64_t* node) {
    Result<CreateReply> c = fs.Create(Ctx(0, 0), kRoot, name, S_IFREG | 0644, 0, O_CREAT | O_RDWR);
    ASSERT_TRUE(c.ok());
    fs.Release(Ctx(0, 0), c->entry.nodeid, c->open.fh, 0, 0, 0);
    fs.Forget(c->entry.nodeid, 1);
    *node = c->entry.nodeid;
  }

  std::unique_ptr<StateRegion> region_;
  int data_fd_ = -1;
  uint64_t checkpoint_bytes_ = 8 << 20;
  size_t checkpoint_chunk_ = 512;
  std::function<void()> between_checkpoint_chunks_;
  std::unique_ptr<MemFs> first_;
};

TEST_F(MemFsJournalTest, ASuccessorHoldsTheSameFileSystem) {
  MemFs& fs = First();
  const RequestContext root = Ctx(0, 0), alice = Ctx(1000, 1000);
  const uint64_t dir = fs.Mkdir(root, kRoot, "dir", 0755, 0)->nodeid;
  ASSERT_TRUE(fs.SetAttr(root, dir, SetAttrRequest{.valid = abi::kFattrUid | abi::kFattrGid, .uid = 1000, .gid = 1000})
                  .ok());
  Result<CreateReply> a = fs.Create(alice, dir, "a", S_IFREG | 0640, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(a.ok());
  const uint64_t a_id = a->entry.nodeid;
  ASSERT_TRUE(fs.Write(alice, a_id, a->open.fh, 0, Bytes("hello, journal"), 0, O_RDWR).ok());
  // Sparse: a block at 64 MiB and a hole before it.
  ASSERT_TRUE(fs.Write(alice, a_id, a->open.fh, 64ULL << 20, Bytes("far"), 0, O_RDWR).ok());
  ASSERT_TRUE(fs.SetXattr(alice, a_id, "user.color", Bytes("blue"), 0, 0).ok());
  fs.Release(alice, a_id, a->open.fh, 0, 0, 0);
  ASSERT_TRUE(fs.Link(root, a_id, kRoot, "a-link").ok());
  ASSERT_TRUE(fs.Symlink(root, kRoot, "sym", "dir/a").ok());
  ASSERT_TRUE(fs.Mknod(root, dir, "fifo", S_IFIFO | 0600, 0, 0).ok());
  // A rename over an existing name, and one of a directory.
  Result<CreateReply> b = fs.Create(root, kRoot, "b", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(fs.Write(root, b->entry.nodeid, b->open.fh, 0, Bytes(std::string(70000, 'b')), 0, O_RDWR).ok());
  fs.Release(root, b->entry.nodeid, b->open.fh, 0, 0, 0);
  Result<CreateReply> c = fs.Create(root, kRoot, "c", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  fs.Release(root, c->entry.nodeid, c->open.fh, 0, 0, 0);
  ASSERT_TRUE(fs.Rename(root, kRoot, "b", kRoot, "c", 0).ok());
  ASSERT_TRUE(fs.Mkdir(root, kRoot, "moving", 0700, 0).ok());
  ASSERT_TRUE(fs.Rename(root, kRoot, "moving", dir, "moved", 0).ok());
  // Truncated, and unlinked while open (its handle and bytes live on).
  ASSERT_TRUE(fs.SetAttr(root, b->entry.nodeid, SetAttrRequest{.valid = abi::kFattrSize, .size = 5000}).ok());
  Result<CreateReply> gone = fs.Create(root, kRoot, "gone", S_IFREG | 0600, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(fs.Write(root, gone->entry.nodeid, gone->open.fh, 0, Bytes("still here"), 0, O_RDWR).ok());
  ASSERT_TRUE(fs.Unlink(root, kRoot, "gone").ok());
  // Freed for good: its slot's bytes are punched.
  Result<CreateReply> freed = fs.Create(root, kRoot, "freed", S_IFREG | 0600, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(fs.Write(root, freed->entry.nodeid, freed->open.fh, 0, Bytes("x"), 0, O_RDWR).ok());
  fs.Release(root, freed->entry.nodeid, freed->open.fh, 0, 0, 0);
  ASSERT_TRUE(fs.Unlink(root, kRoot, "freed").ok());
  fs.Forget(freed->entry.nodeid, 1);

  // Preallocated (kept size and grown), and a range zeroed: blocks the
  // successor must find allocated too.
  Result<CreateReply> pre = fs.Create(root, kRoot, "pre", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(fs.Fallocate(root, pre->entry.nodeid, pre->open.fh, 0, 3 * 4096, FALLOC_FL_KEEP_SIZE).ok());
  ASSERT_TRUE(fs.Fallocate(root, pre->entry.nodeid, pre->open.fh, 8 * 4096, 4096, 0).ok());
  ASSERT_TRUE(fs.Write(root, pre->entry.nodeid, pre->open.fh, 0, Bytes(std::string(5 * 4096, 'p')), 0, O_RDWR).ok());
  ASSERT_TRUE(fs.Fallocate(root, pre->entry.nodeid, pre->open.fh, 4096, 4096, FALLOC_FL_ZERO_RANGE).ok());
  fs.Release(root, pre->entry.nodeid, pre->open.fh, 0, 0, 0);
  ASSERT_EQ(fs.GetAttr(root, pre->entry.nodeid, nullptr)->attr.blocks, 6u * 8) << "blocks 0-4 and 8";

  std::map<std::string, std::string> before, after;
  Dump(fs, kRoot, "", &before);
  const size_t inodes = fs.InodeCount(), handles = fs.OpenHandleCount();
  const uint64_t used = fs.BytesUsed();
  ASSERT_EQ(fs.JournalFailures(), 0u);

  std::unique_ptr<MemFs> next = Successor();
  Dump(*next, kRoot, "", &after);
  EXPECT_EQ(after, before);
  EXPECT_EQ(next->InodeCount(), inodes);
  EXPECT_EQ(next->OpenHandleCount(), handles);
  EXPECT_EQ(next->BytesUsed(), used);
  EXPECT_EQ(next->LookupCount(gone->entry.nodeid), 1u);
  // The unlinked file is read through the handle the kernel holds.
  std::string data(10, '\0');
  Result<size_t> n = next->Read(root, gone->entry.nodeid, gone->open.fh, 0,
                                std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()), 0);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(data, "still here");
  // New ids and handles never repeat the first server's.
  Result<CreateReply> fresh = next->Create(root, kRoot, "fresh", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(fresh.ok());
  EXPECT_GT(fresh->entry.nodeid, freed->entry.nodeid);
  EXPECT_GT(fresh->open.fh, gone->open.fh);
  Result<size_t> empty = next->Read(root, fresh->entry.nodeid, fresh->open.fh, 0,
                                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()), 0);
  EXPECT_EQ(*empty, 0u) << "a new file found an old file's bytes";
  // Release and forget end the unlinked file in the successor.
  next->Release(root, gone->entry.nodeid, gone->open.fh, 0, 0, 0);
  next->Forget(gone->entry.nodeid, 1);
  EXPECT_EQ(next->InodeCount(), inodes);  // one gone, "fresh" born
  // And a third server finds the second's changes.
  next.reset();
  std::unique_ptr<MemFs> third = Successor();
  EXPECT_EQ(third->LookupCount(gone->entry.nodeid), 0u);
  EXPECT_EQ(third->OpenHandleCount(), 1u);  // "fresh"
}

TEST_F(MemFsJournalTest, ACheckpointKeepsTheFileSystemAndShortensTheJournal) {
  checkpoint_bytes_ = 64 << 10;
  MemFs& fs = First();
  const RequestContext root = Ctx(0, 0);
  const uint64_t dir = fs.Mkdir(root, kRoot, "kept", 0755, 0)->nodeid;
  Result<CreateReply> held = fs.Create(root, dir, "held", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(held.ok());
  // Churn until the compactor has committed a checkpoint (bounded).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int n = 0;
  while (region_->header().checkpoints.load() < 2 && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 100; ++i, ++n) ASSERT_NO_FATAL_FAILURE(Churn(fs, dir, n, /*keep=*/n % 10 == 0));
  }
  ASSERT_GE(region_->header().checkpoints.load(), 2u) << "no checkpoint in 20 s";
  EXPECT_GE(n, 100) << "checkpointed before the churn";
  std::printf("checkpoints after %d files: %lu, journal %lu bytes\n", n,
              static_cast<unsigned long>(region_->header().checkpoints.load()),
              static_cast<unsigned long>(region_->log_bytes()));
  // Settle: no checkpoint runs while the tree is read.
  std::map<std::string, std::string> before, after;
  Dump(fs, kRoot, "", &before);
  EXPECT_LT(region_->log_bytes(), 8 * (64u << 10)) << "the journal was not kept short";
  std::unique_ptr<MemFs> next = Successor();
  Dump(*next, kRoot, "", &after);
  EXPECT_EQ(after, before);
  EXPECT_EQ(next->OpenHandleCount(), 1u);  // "held"
  EXPECT_EQ(next->InodeCount(), fs.InodeCount());
}

// A checkpoint writes a few inodes at a time and lets requests change the
// tree between: whatever they change, before or after the chunk that
// writes the same inode, a successor finds the tree as it is.
TEST_F(MemFsJournalTest, ChangesBetweenACheckpointsChunksAreKept) {
  checkpoint_bytes_ = 64 << 10;
  checkpoint_chunk_ = 4;
  const RequestContext root = Ctx(0, 0);
  std::vector<uint64_t> kept;
  uint64_t a = 0, b = 0, open_fh = 0, open_node = 0;
  bool changed = false;
  // After the first chunk (most inodes still to be written): forget every
  // kept file (its count goes to 0 before its chunk, if it comes later),
  // move files between the directories, remove one, make new ones, write
  // into one, and close the handle held open.
  between_checkpoint_chunks_ = [&] {
    if (changed) return;
    changed = true;
    for (uint64_t node : kept) first_->Forget(node, 1);
    ASSERT_TRUE(first_->Rename(root, a, "k1", b, "moved-from-a", 0).ok());
    ASSERT_TRUE(first_->Rename(root, b, "k2", a, "moved-from-b", 0).ok());
    ASSERT_TRUE(first_->Unlink(root, a, "k3").ok());
    for (int i = 0; i < 6; ++i) {
      Result<CreateReply> c = first_->Create(root, i % 2 ? a : b, "born" + std::to_string(i), S_IFREG | 0644, 0,
                                             O_CREAT | O_RDWR);
      ASSERT_TRUE(c.ok());
      ASSERT_TRUE(first_->Write(root, c->entry.nodeid, c->open.fh, 0, Bytes("new"), 0, O_RDWR).ok());
      first_->Release(root, c->entry.nodeid, c->open.fh, 0, 0, 0);
    }
    ASSERT_TRUE(first_->Write(root, open_node, open_fh, 0, Bytes("rewritten"), 0, O_RDWR).ok());
    first_->Release(root, open_node, open_fh, 0, 0, 0);
  };
  MemFs& fs = First();
  a = fs.Mkdir(root, kRoot, "a", 0755, 0)->nodeid;
  b = fs.Mkdir(root, kRoot, "b", 0755, 0)->nodeid;
  for (int i = 0; i < 40; ++i) {
    Result<CreateReply> c = fs.Create(root, i % 2 ? a : b, "k" + std::to_string(i), S_IFREG | 0644, 0, O_CREAT | O_RDWR);
    ASSERT_TRUE(c.ok());
    kept.push_back(c->entry.nodeid);
    if (i == 0) {
      open_node = c->entry.nodeid;
      open_fh = c->open.fh;
    } else {
      fs.Release(root, c->entry.nodeid, c->open.fh, 0, 0, 0);
    }
  }
  ASSERT_NO_FATAL_FAILURE(ChurnUntilACheckpoint(fs));
  ASSERT_TRUE(changed) << "the checkpoint ran in one chunk";
  // Counted again after the checkpoint: a count replayed as the FORGET
  // alone (no record of the 0 it came to) would end one short.
  for (int i = 0; i < 40; ++i) {
    if (i == 3) continue;  // removed
    const std::string name = i == 1 ? "moved-from-a" : i == 2 ? "moved-from-b" : "k" + std::to_string(i);
    ASSERT_TRUE(fs.Lookup(root, i == 1 ? b : i == 2 ? a : i % 2 ? a : b, name).ok()) << name;
  }
  std::map<std::string, std::string> before, after;
  Dump(fs, kRoot, "", &before);
  std::unique_ptr<MemFs> next = Successor();
  Dump(*next, kRoot, "", &after);
  EXPECT_EQ(after, before);
  EXPECT_EQ(next->OpenHandleCount(), fs.OpenHandleCount());
  EXPECT_EQ(next->InodeCount(), fs.InodeCount());
}

// An O_APPEND write the server carried out (and journaled) and died
// answering is resent: it lands where its first run began, not once more
// at the end.
TEST_F(MemFsJournalTest, AResentAppendIsWrittenWhereItsFirstRunBegan) {
  MemFs& fs = First();
  Result<CreateReply> c = fs.Create(Ctx(0, 0), kRoot, "log", S_IFREG | 0644, 0, O_CREAT | O_RDWR | O_APPEND);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(fs.Write(Ctx(0, 0), c->entry.nodeid, c->open.fh, 0, Bytes("head"), 0, O_RDWR | O_APPEND).ok());
  const uint64_t unique = 0x2000;
  region_->RecordIntent(unique);
  ASSERT_TRUE(fs.Write(Ctx(0, 0, unique), c->entry.nodeid, c->open.fh, 0, Bytes("body"), 0, O_RDWR | O_APPEND).ok());
  std::unique_ptr<MemFs> next = Successor();
  Result<size_t> again = next->Write(Ctx(0, 0, unique | abi::kUniqueResend), c->entry.nodeid, c->open.fh, 0,
                                     Bytes("body"), 0, O_RDWR | O_APPEND);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(next->GetAttr(Ctx(0, 0), c->entry.nodeid, nullptr)->attr.size, 8u) << "appended twice";
  // A later append goes to the end.
  ASSERT_TRUE(next->Write(Ctx(0, 0, 0x2002), c->entry.nodeid, c->open.fh, 0, Bytes("tail"), 0, O_RDWR | O_APPEND).ok());
  std::string data(12, '\0');
  ASSERT_TRUE(next->Read(Ctx(0, 0), c->entry.nodeid, c->open.fh, 0,
                         std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()), 0)
                  .ok());
  EXPECT_EQ(data, "headbodytail");
}

// A server may die between any two journal records. A successor built
// from every prefix of the journal of a run of renames (moves, a replace,
// an exchange) finds each file under exactly one name, with the link
// count of its names, and lists every directory.
TEST_F(MemFsJournalTest, EveryPrefixOfTheJournalIsAConsistentFileSystem) {
  MemFs& fs = First();
  const RequestContext root = Ctx(0, 0);
  const uint64_t a = fs.Mkdir(root, kRoot, "a", 0755, 0)->nodeid;
  const uint64_t b = fs.Mkdir(root, kRoot, "b", 0755, 0)->nodeid;
  std::vector<uint64_t> files;
  for (const char* name : {"f", "g", "h"}) {
    Result<CreateReply> c = fs.Create(root, a, name, S_IFREG | 0644, 0, O_CREAT | O_RDWR);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(fs.Write(root, c->entry.nodeid, c->open.fh, 0, Bytes(name), 0, O_RDWR).ok());
    fs.Release(root, c->entry.nodeid, c->open.fh, 0, 0, 0);
    files.push_back(c->entry.nodeid);
  }
  const uint64_t sub = fs.Mkdir(root, a, "sub", 0755, 0)->nodeid;
  size_t setup = 0;  // records before the renames
  region_->Replay([&](uint16_t, std::span<const uint8_t>) { ++setup; });
  ASSERT_TRUE(fs.Rename(root, a, "f", b, "f2", 0).ok());                 // a move
  ASSERT_TRUE(fs.Rename(root, a, "g", b, "f2", 0).ok());                 // a replace (f's last name)
  ASSERT_TRUE(fs.Rename(root, a, "sub", b, "sub", 0).ok());              // a directory moves
  ASSERT_TRUE(fs.Rename(root, a, "h", b, "sub", RENAME_EXCHANGE).ok());  // a file and a directory swap
  ASSERT_TRUE(fs.Link(root, files[2], a, "h-link").ok());

  std::vector<std::pair<uint16_t, std::string>> records;
  region_->Replay([&](uint16_t type, std::span<const uint8_t> payload) {
    records.emplace_back(type, std::string(reinterpret_cast<const char*>(payload.data()), payload.size()));
  });
  ASSERT_GT(records.size(), setup + 10);
  for (size_t k = setup; k <= records.size(); ++k) {
    SCOPED_TRACE("the first " + std::to_string(k) + " records");
    absl::StatusOr<std::unique_ptr<StateRegion>> prefix = StateRegion::Create();
    ASSERT_TRUE(prefix.ok());
    (*prefix)->header().initialized.store(1);
    for (size_t i = 0; i < k; ++i) {
      ASSERT_TRUE((*prefix)->Append(records[i].first, Bytes(records[i].second)));
    }
    MemFsOptions o = Options();
    o.journal = prefix->get();
    MemFs next(o);
    next.Init(InitInfo{});
    std::map<std::string, std::string> tree;
    Dump(next, kRoot, "", &tree);
    // Names per inode, against each one's link count.
    std::map<uint64_t, int> names;
    std::map<uint64_t, uint32_t> nlink;
    for (const auto& [path, line] : tree) {
      const uint64_t ino = std::stoull(line.substr(4));
      ++names[ino];
      nlink[ino] = static_cast<uint32_t>(std::stoul(line.substr(line.find("nlink=") + 6)));
    }
    for (const auto& [ino, count] : names) {
      // Only h gets a second name (the link, last).
      EXPECT_TRUE(count == 1 || (ino == files[2] && count == 2)) << "inode " << ino << ": " << count << " names";
      if (ino != a && ino != b && ino != sub) {
        EXPECT_EQ(nlink[ino], static_cast<uint32_t>(count)) << "inode " << ino;
      }
    }
    // The moved file: under one name (f, then f2), until the replace ends it.
    if (names.count(files[0]) != 0) {
      EXPECT_EQ(names[files[0]], 1);
    }
    EXPECT_EQ(names.count(files[1]), 1u) << "g lost its name";
    EXPECT_EQ(names.count(files[2]), 1u) << "h lost its name";
    EXPECT_EQ(names.count(sub), 1u) << "sub lost its name";
  }
}

// A standby follows the journal while the server serves (FollowJournal,
// about once a second), checkpoints included, and takes over with what it
// gathered plus the last records.
TEST_F(MemFsJournalTest, AFollowerHoldsTheSameFileSystemWhenItTakesOver) {
  checkpoint_bytes_ = 64 << 10;
  MemFs& fs = First();
  const RequestContext root = Ctx(0, 0);
  auto standby = std::make_unique<MemFs>(Options());  // built while the server serves
  standby->FollowJournal();
  const uint64_t dir = fs.Mkdir(root, kRoot, "d", 0755, 0)->nodeid;
  const uint64_t checkpoints = region_->header().checkpoints.load();
  for (int n = 0; n < 3000; ++n) {
    ASSERT_NO_FATAL_FAILURE(Churn(fs, dir, n, /*keep=*/n % 3 == 0));
    if (n % 500 == 0) standby->FollowJournal();
  }
  // (The compactor is asynchronous: wait, bounded, for one checkpoint.)
  for (int i = 0; i < 2000 && region_->header().checkpoints.load() == checkpoints; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GT(region_->header().checkpoints.load(), checkpoints) << "no checkpoint while it followed";
  standby->FollowJournal();
  ASSERT_TRUE(fs.Rename(root, dir, "f0", kRoot, "last", 0).ok());  // after the last follow
  std::map<std::string, std::string> before, after;
  Dump(fs, kRoot, "", &before);
  standby->Init(InitInfo{});
  Dump(*standby, kRoot, "", &after);
  EXPECT_EQ(after, before);
  EXPECT_EQ(standby->InodeCount(), fs.InodeCount());
}

// A CREATE the server carried out and died answering (its intent is in
// the region, its answer not): the kernel never had the handle or the
// lookup, and resends the request. The successor keeps the file (the
// resent request finds it) but neither the handle nor the lookup.
TEST_F(MemFsJournalTest, WhatANeverAnsweredRequestGaveIsNotRevived) {
  MemFs& fs = First();
  const uint64_t unique = 0x1000;
  region_->RecordIntent(unique);
  Result<CreateReply> c = fs.Create(Ctx(0, 0, unique), kRoot, "made", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(fs.OpenHandleCount(), 1u);
  std::unique_ptr<MemFs> next = Successor();
  EXPECT_EQ(next->OpenHandleCount(), 0u);
  EXPECT_EQ(next->LookupCount(c->entry.nodeid), 0u);
  Result<Entry> e = next->Lookup(Ctx(0, 0), kRoot, "made");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->nodeid, c->entry.nodeid);
  // The kernel resends the CREATE; the successor serves and answers it.
  // Its lookup counts once: the next successor keeps it and the Lookup's,
  // not the first run's too.
  ASSERT_TRUE(next->Create(Ctx(0, 0, unique | abi::kUniqueResend), kRoot, "made", S_IFREG | 0644, 0, O_CREAT | O_RDWR)
                  .ok());
  abi::OutHeader answer{};
  answer.len = sizeof(answer);
  answer.unique = unique;
  iovec iov{&answer, sizeof(answer)};
  ASSERT_TRUE(region_->RecordAnswer(unique, std::span<const iovec>(&iov, 1)));
  EXPECT_EQ(next->LookupCount(c->entry.nodeid), 2u);
  next.reset();
  EXPECT_EQ(Successor()->LookupCount(c->entry.nodeid), 2u) << "the first run's lookup came back";
  EXPECT_EQ(Successor()->LookupCount(c->entry.nodeid), 2u);
}

// A LOOKUP counted by a server that died before answering it (a LOOKUP
// records no intent: whether the kernel had its answer is not known): the
// successor keeps the count, and takes it out when the kernel resends the
// request (proof it never had the answer), which then counts once. A
// LOOKUP whose answer the kernel had is not resent: its count stays.
TEST_F(MemFsJournalTest, AResentLookupCountsOnce) {
  MemFs& fs = First();
  uint64_t node = 0;
  ASSERT_NO_FATAL_FAILURE(MakeUnknownFile(fs, "looked", &node));
  const uint64_t answered = 0x2000, unanswered = 0x2002;
  ASSERT_TRUE(fs.Lookup(Ctx(0, 0, answered), kRoot, "looked").ok());
  ASSERT_TRUE(fs.Lookup(Ctx(0, 0, unanswered), kRoot, "looked").ok());
  std::unique_ptr<MemFs> next = Successor();
  EXPECT_EQ(next->LookupCount(node), 2u);
  ASSERT_TRUE(next->Lookup(Ctx(0, 0, unanswered | abi::kUniqueResend), kRoot, "looked").ok());
  EXPECT_EQ(next->LookupCount(node), 2u) << "the resent LOOKUP counted twice";
  // Its second run's answer lost too: the next successor, resent again.
  next.reset();
  next = Successor();
  EXPECT_EQ(next->LookupCount(node), 2u);
  ASSERT_TRUE(next->Lookup(Ctx(0, 0, unanswered | abi::kUniqueResend), kRoot, "looked").ok());
  EXPECT_EQ(next->LookupCount(node), 2u);
  // The kernel forgets both: unlinked, the file is freed.
  const size_t inodes = next->InodeCount();
  ASSERT_TRUE(next->Unlink(Ctx(0, 0), kRoot, "looked").ok());
  next->Forget(node, 2);
  EXPECT_EQ(next->LookupCount(node), 0u);
  EXPECT_EQ(next->InodeCount(), inodes - 1) << "the unlinked file stayed";
}

// The same across a checkpoint the successor writes before the resend
// comes (and dies after): the next successor still knows which request
// made the count. The resend's take-out frees a file it was the last to
// hold (unlinked meanwhile).
TEST_F(MemFsJournalTest, AResentLookupsFirstCountOutlivesACheckpointAndFreesWhatItHeld) {
  MemFs& fs = First();
  uint64_t node = 0;
  ASSERT_NO_FATAL_FAILURE(MakeUnknownFile(fs, "looked", &node));
  const uint64_t unanswered = 0x3002;
  ASSERT_TRUE(fs.Lookup(Ctx(0, 0, unanswered), kRoot, "looked").ok());
  checkpoint_bytes_ = 64 << 10;
  std::unique_ptr<MemFs> next = Successor();
  ASSERT_NO_FATAL_FAILURE(ChurnUntilACheckpoint(*next));
  next.reset();
  next = Successor();
  EXPECT_EQ(next->LookupCount(node), 1u);
  // Unlinked by someone else first: the kernel never held the file.
  ASSERT_TRUE(next->Unlink(Ctx(0, 0), kRoot, "looked").ok());
  const size_t inodes = next->InodeCount();
  EXPECT_FALSE(next->Lookup(Ctx(0, 0, unanswered | abi::kUniqueResend), kRoot, "looked").ok());
  EXPECT_EQ(next->LookupCount(node), 0u) << "the first run's count outlived the checkpoint";
  EXPECT_EQ(next->InodeCount(), inodes - 1) << "the file nobody holds stayed";
}

// The same CREATE, with a checkpoint written between it and its server's
// death: the checkpoint keeps its lookup tied to it, and the successor
// still leaves that lookup out (and the handle).
TEST_F(MemFsJournalTest, WhatANeverAnsweredRequestGaveIsNotRevivedAfterACheckpoint) {
  checkpoint_bytes_ = 64 << 10;
  MemFs& fs = First();
  const uint64_t unique = 0x1000;
  region_->RecordIntent(unique);
  Result<CreateReply> c = fs.Create(Ctx(0, 0, unique), kRoot, "made", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(c.ok());
  ASSERT_NO_FATAL_FAILURE(ChurnUntilACheckpoint(fs));
  std::unique_ptr<MemFs> next = Successor();
  EXPECT_EQ(next->OpenHandleCount(), 0u);
  EXPECT_EQ(next->LookupCount(c->entry.nodeid), 0u) << "the unanswered CREATE's lookup came back";
}

// A LOOKUP counted before a checkpoint, by a server that died after it
// without answering: the checkpoint keeps the count tied to the request
// (it writes counts, and the request's own record is before it), so the
// resend takes the first count out and counts once.
TEST_F(MemFsJournalTest, ALookupCountedBeforeACheckpointAndResentCountsOnce) {
  checkpoint_bytes_ = 64 << 10;
  MemFs& fs = First();
  uint64_t node = 0;
  ASSERT_NO_FATAL_FAILURE(MakeUnknownFile(fs, "looked", &node));
  const uint64_t unanswered = 0x3002;
  ASSERT_TRUE(fs.Lookup(Ctx(0, 0, unanswered), kRoot, "looked").ok());
  ASSERT_NO_FATAL_FAILURE(ChurnUntilACheckpoint(fs));
  std::unique_ptr<MemFs> next = Successor();
  EXPECT_EQ(next->LookupCount(node), 1u);
  ASSERT_TRUE(next->Lookup(Ctx(0, 0, unanswered | abi::kUniqueResend), kRoot, "looked").ok());
  EXPECT_EQ(next->LookupCount(node), 1u) << "the resent LOOKUP counted twice";
  // Unlinked and forgotten, the file goes: nothing holds it any more.
  ASSERT_TRUE(next->Unlink(Ctx(0, 0), kRoot, "looked").ok());
  next->Forget(node, 1);
  EXPECT_EQ(next->LookupCount(node), 0u);
  EXPECT_EQ(next->InodeCount(), fs.InodeCount() - 1) << "the unlinked file stayed";
}

// Requests a rebuild is unsure of may add up to more than the count (a
// FORGET lowered it for one whose answer the kernel had): a checkpoint
// keeps the whole count, tying to requests only what fits, newest first.
TEST_F(MemFsJournalTest, ACheckpointKeepsACountItsUnsureRequestsExceed) {
  MemFs& fs = First();
  uint64_t node = 0;
  ASSERT_NO_FATAL_FAILURE(MakeUnknownFile(fs, "looked", &node));
  const uint64_t answered = 0x4000, unanswered = 0x4002;
  ASSERT_TRUE(fs.Lookup(Ctx(0, 0, answered), kRoot, "looked").ok());
  fs.Forget(node, 1);  // the kernel had that answer
  ASSERT_TRUE(fs.Lookup(Ctx(0, 0, unanswered), kRoot, "looked").ok());
  checkpoint_bytes_ = 64 << 10;
  std::unique_ptr<MemFs> next = Successor();
  EXPECT_EQ(next->LookupCount(node), 1u);
  ASSERT_NO_FATAL_FAILURE(ChurnUntilACheckpoint(*next));
  next.reset();
  next = Successor();
  EXPECT_EQ(next->LookupCount(node), 1u) << "the checkpoint lost the count";
  ASSERT_TRUE(next->Lookup(Ctx(0, 0, unanswered | abi::kUniqueResend), kRoot, "looked").ok());
  EXPECT_EQ(next->LookupCount(node), 1u) << "the resent LOOKUP counted twice";
}

// RENAME_EXCHANGE undoes itself: resent after its first run swapped the
// names (and died answering), it must not swap them back.
TEST_F(MemFsJournalTest, AResentExchangeIsNotMadeTwice) {
  MemFs& fs = First();
  const RequestContext root = Ctx(0, 0);
  const uint64_t x = fs.Mkdir(root, kRoot, "x", 0755, 0)->nodeid;
  Result<CreateReply> y = fs.Create(root, kRoot, "y", S_IFREG | 0644, 0, O_CREAT | O_RDWR);
  ASSERT_TRUE(y.ok());
  const uint64_t unique = 0x3000;
  region_->RecordIntent(unique);
  ASSERT_TRUE(fs.Rename(Ctx(0, 0, unique), kRoot, "x", kRoot, "y", RENAME_EXCHANGE).ok());
  std::unique_ptr<MemFs> next = Successor();
  ASSERT_TRUE(next->Rename(Ctx(0, 0, unique | abi::kUniqueResend), kRoot, "x", kRoot, "y", RENAME_EXCHANGE).ok());
  EXPECT_EQ(next->Lookup(root, kRoot, "y")->nodeid, x) << "swapped back";
  EXPECT_EQ(next->Lookup(root, kRoot, "x")->nodeid, y->entry.nodeid);
  // A resent exchange its first run did not make is made.
  const uint64_t other = 0x3010;
  region_->RecordIntent(other);
  ASSERT_TRUE(next->Rename(Ctx(0, 0, other | abi::kUniqueResend), kRoot, "x", kRoot, "y", RENAME_EXCHANGE).ok());
  EXPECT_EQ(next->Lookup(root, kRoot, "y")->nodeid, y->entry.nodeid);
}

// A server killed after it wrote into a slot and before it journaled the
// file leaves bytes nobody claims: an adopter empties such slots before it
// gives them to new files.
TEST(DataStoreTest, AnAdopterEmptiesSlotsNobodyClaimed) {
  absl::StatusOr<int> fd = DataStore::NewMemfd();
  ASSERT_TRUE(fd.ok());
  {
    absl::StatusOr<std::unique_ptr<DataStore>> first = DataStore::Adopt(dup(*fd));
    ASSERT_TRUE(first.ok());
    for (int i = 0; i < 4; ++i) ASSERT_EQ((*first)->TakeSlot(), std::optional<uint32_t>(i));
    for (uint32_t slot : {0u, 2u, 3u}) ASSERT_EQ((*first)->Write(slot, 4096, Bytes("data")), 4);
  }
  absl::StatusOr<std::unique_ptr<DataStore>> next = DataStore::Adopt(dup(*fd));
  ASSERT_TRUE(next.ok());
  DataStore& store = **next;
  store.MarkUsed(0);  // only slot 0's file was journaled
  store.FreeUnused();
  EXPECT_EQ(store.AllocatedBlocks(0), std::vector<uint64_t>{1});
  for (uint32_t slot : {1u, 2u, 3u}) EXPECT_TRUE(store.AllocatedBlocks(slot).empty()) << slot;
  EXPECT_EQ(store.TakeSlot(), std::optional<uint32_t>(1));
  EXPECT_EQ(store.TakeSlot(), std::optional<uint32_t>(2));
  EXPECT_EQ(store.TakeSlot(), std::optional<uint32_t>(3));
  EXPECT_EQ(store.TakeSlot(), std::optional<uint32_t>(4));
  close(*fd);
}

}  // namespace
}  // namespace efuse
