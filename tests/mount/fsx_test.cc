// tests/mount/fsx_test.cc — a file exerciser: random operations on one file
// of a real mount, each checked against a model of what the file must hold.
//
// RandomOperationsMatchTheModel, in the spirit of fsx (xfstests): a seeded
// random mix of pwrite, pread, O_APPEND writes through a second descriptor,
// (f)truncate up and down, mmap writes (with msync) and mmap reads,
// fallocate (allocate, keep-size, punch hole, zero range), copy_file_range
// within the file, O_DIRECT reads and writes, fsync/fdatasync, and
// close-and-reopen (sometimes with O_TRUNC). After every operation the
// file's size must match the model and every byte read must match it; every
// 64 operations the whole file is read and compared, and at the end the file
// is fsync'd, its cached pages dropped (posix_fadvise DONTNEED) and read once
// more, so the comparison is against what the daemon (or the passthrough
// source, read directly) really holds.
//
// Configurations cover each way data moves: memfs with 1 MiB and with
// one-page requests, passthrough with kernel passthrough (the daemon sees no
// READ/WRITE), passthrough served by the daemon with the kernel's writeback
// cache, and without it. A failure prints the seed and the last operations;
// EFUSE_FSX_SEED=N reruns with another seed, EFUSE_FSX_OPS=N runs N
// operations instead of 10,000. ConcurrentWritersSharingPagesKeepEachOthersBytes
// runs three processes writing interleaved stripes of one file at once.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"
#include "tests/mount/passthrough_sources.h"

namespace efuse::testing {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxFileSize = 1536 * kKiB;  // spans several 1 MiB requests
constexpr int kDefaultOperations = 10000;
constexpr int kFullCheckEvery = 64;

struct FsxConfig {
  const char* name;
  std::string source;  // passthrough: the source directory ("" for memfs)
  std::vector<std::string> flags;
};
FsxConfig Memfs(const char* name, std::vector<std::string> extra) { return {name, "", std::move(extra)}; }
FsxConfig Passthrough(const char* name, const std::vector<std::string>& extra) {
  return {name, PassthroughSourceDir(name), PassthroughFlags(name, extra)};
}
void PrintTo(const FsxConfig& c, std::ostream* os) { *os << c.name; }

int Operations() { return static_cast<int>(NumberFromEnv("EFUSE_FSX_OPS", kDefaultOperations)); }
uint64_t Seed() { return NumberFromEnv("EFUSE_FSX_SEED", 20261130); }

// Memory aligned for O_DIRECT.
struct AlignedBuffer {
  explicit AlignedBuffer(size_t size) {
    void* p = nullptr;
    if (posix_memalign(&p, kPage, std::max<size_t>(size, kPage)) == 0) data.reset(static_cast<char*>(p));
  }
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> data;
};

class FsxTest : public MountTest, public ::testing::WithParamInterface<FsxConfig> {
 protected:
  std::vector<std::string> DaemonFlags() const override {
    return WithFlags({"--size=1G"}, GetParam().flags);
  }

  void SetUp() override {
    MountTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    rng_.seed(Seed());
    path_ = Path("fsx-file");
    ASSERT_TRUE(Reopen(O_CREAT | O_TRUNC));
  }
  void TearDown() override {
    fd_.Reset();  // open files would keep the daemon serving after SIGTERM
    append_fd_.Reset();
    MountTest::TearDown();
  }

  // ---- the file ----
  bool Reopen(int extra_flags) {
    fd_.Reset();
    append_fd_.Reset();
    int raw = open(path_.c_str(), O_RDWR | O_CLOEXEC | extra_flags, 0644);
    if (raw < 0) return Fail("open: " + ErrnoName(errno));
    fd_.Reset(raw);
    raw = open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (raw < 0) return Fail("open O_APPEND: " + ErrnoName(errno));
    append_fd_.Reset(raw);
    if (extra_flags & O_TRUNC) model_.clear();
    return true;
  }

  // ---- bookkeeping ----
  // One operation, remembered for the failure message.
  void Note(const std::string& op) {
    ++ops_done_;
    Trace(std::to_string(ops_done_) + ": " + op);
  }
  void Trace(const std::string& line) {
    trace_.push_back(line);
    if (trace_.size() > 40) trace_.pop_front();
  }
  bool Fail(const std::string& what) {
    std::ostringstream m;
    m << what << "\n  config " << GetParam().name << ", seed " << Seed() << ", after " << ops_done_
      << " operations; model size " << model_.size() << "; last operations:\n";
    for (const std::string& t : trace_) m << "    " << t << "\n";
    ADD_FAILURE() << m.str();
    return false;
  }
  // Bytes [offset, offset+got) read from the file must be the model's.
  bool Compare(const char* got, uint64_t offset, uint64_t size, const char* how) {
    const uint64_t want_size = offset >= model_.size() ? 0 : std::min<uint64_t>(size, model_.size() - offset);
    for (uint64_t i = 0; i < want_size; ++i) {
      if (got[i] != model_[offset + i]) {
        std::ostringstream m;
        m << how << ": byte " << offset + i << " is 0x" << std::hex
          << (static_cast<unsigned>(got[i]) & 0xff) << ", expected 0x"
          << (static_cast<unsigned>(model_[offset + i]) & 0xff) << std::dec;
        return Fail(m.str());
      }
    }
    return true;
  }
  bool CheckSize() {
    struct stat st {};
    if (fstat(fd_.get(), &st) != 0) return Fail("fstat: " + ErrnoName(errno));
    if (static_cast<uint64_t>(st.st_size) != model_.size()) {
      return Fail("st_size " + std::to_string(st.st_size) + ", expected " + std::to_string(model_.size()));
    }
    return true;
  }
  bool ReadAndCompare(int fd, uint64_t offset, uint64_t size, const char* how) {
    std::string got(size, '\0');
    size_t n = 0;
    if (!PreadAll(fd, got.data(), size, offset, &n)) return Fail(std::string(how) + ": " + ErrnoName(errno));
    const uint64_t want = offset >= model_.size() ? 0 : std::min<uint64_t>(size, model_.size() - offset);
    if (n != want) {
      return Fail(std::string(how) + ": read " + std::to_string(n) + " bytes at " + std::to_string(offset) +
                  ", expected " + std::to_string(want));
    }
    return Compare(got.data(), offset, n, how);
  }
  bool FullCheck(const char* how) { return CheckSize() && ReadAndCompare(fd_.get(), 0, kMaxFileSize + kPage, how); }

  // ---- random choices ----
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  // Mostly small, sometimes up to 256 KiB (several pages, one request).
  uint64_t Length() { return Below(8) == 0 ? 1 + Below(256 * kKiB) : 1 + Below(16 * kKiB); }
  uint64_t Offset() { return Below(kMaxFileSize); }
  void PutModel(uint64_t offset, const std::string& data) {
    if (model_.size() < offset + data.size()) model_.resize(offset + data.size(), '\0');
    std::copy(data.begin(), data.end(), model_.begin() + static_cast<std::ptrdiff_t>(offset));
  }

  // ---- operations; each returns false after reporting a failure ----
  bool OpWrite() {
    uint64_t offset = Offset();
    uint64_t len = std::min(Length(), kMaxFileSize - offset);
    std::string data = PatternBytes(rng_(), len);
    Note("pwrite " + std::to_string(offset) + " +" + std::to_string(len));
    if (!PwriteAll(fd_.get(), data.data(), len, offset)) return Fail("pwrite: " + ErrnoName(errno));
    PutModel(offset, data);
    return CheckSize() && ReadAndCompare(fd_.get(), offset, len, "read back after pwrite");
  }
  bool OpAppend() {
    uint64_t len = std::min<uint64_t>(Length(), kMaxFileSize - std::min(kMaxFileSize, model_.size()));
    if (len == 0) return true;
    std::string data = PatternBytes(rng_(), len);
    Note("append +" + std::to_string(len) + " at " + std::to_string(model_.size()));
    size_t done = 0;
    while (done < len) {
      ssize_t n = write(append_fd_.get(), data.data() + done, len - done);
      if (n <= 0) return Fail("append write: " + ErrnoName(errno));
      done += static_cast<size_t>(n);
    }
    PutModel(model_.size(), data);
    return CheckSize();
  }
  bool OpRead() {
    uint64_t offset = Below(model_.size() + 8 * kKiB);
    uint64_t len = Length();
    Note("pread " + std::to_string(offset) + " +" + std::to_string(len));
    return ReadAndCompare(fd_.get(), offset, len, "pread");
  }
  // ftruncate, or truncate(2) by path (SETATTR without a file handle).
  bool OpTruncate() {
    uint64_t size = Below(4) == 0 ? 0 : Below(kMaxFileSize);
    const bool by_path = Below(3) == 0;
    Note(std::string(by_path ? "truncate " : "ftruncate ") + std::to_string(size));
    if ((by_path ? truncate(path_.c_str(), static_cast<off_t>(size)) : ftruncate(fd_.get(), static_cast<off_t>(size))) != 0) {
      return Fail("truncate: " + ErrnoName(errno));
    }
    model_.resize(size, '\0');
    return CheckSize();
  }
  // Maps the whole file, changes or reads a range inside it.
  bool OpMmap(bool write) {
    if (model_.empty()) return true;
    uint64_t offset = Below(model_.size());
    uint64_t len = std::min<uint64_t>(Length(), model_.size() - offset);
    Note(std::string(write ? "mmap write " : "mmap read ") + std::to_string(offset) + " +" + std::to_string(len));
    const size_t map_len = model_.size();
    void* m = mmap(nullptr, map_len, write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd_.get(), 0);
    if (m == MAP_FAILED) return Fail("mmap: " + ErrnoName(errno));
    char* p = static_cast<char*>(m);
    bool ok = true;
    if (write) {
      std::string data = PatternBytes(rng_(), len);
      std::memcpy(p + offset, data.data(), len);
      // fsx does the same: without msync a copy_file_range or O_DIRECT read
      // may legitimately not see dirty mapped pages yet.
      if (msync(m, map_len, MS_SYNC) != 0) ok = Fail("msync: " + ErrnoName(errno));
      PutModel(offset, data);
    } else {
      ok = Compare(p + offset, offset, len, "mmap read");
    }
    munmap(m, map_len);
    return ok && CheckSize() && (!write || ReadAndCompare(fd_.get(), offset, len, "read back after mmap write"));
  }
  bool OpFallocate() {
    static constexpr struct {
      int mode;
      const char* name;
    } kModes[] = {{0, "allocate"},
                  {FALLOC_FL_KEEP_SIZE, "keep_size"},
                  {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "punch_hole"},
                  {FALLOC_FL_ZERO_RANGE, "zero_range"},
                  {FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, "zero_range_keep_size"}};
    const auto& m = kModes[Below(std::size(kModes))];
    if (unsupported_fallocate_modes_ & (1u << (&m - kModes))) return true;
    uint64_t offset = Offset();
    uint64_t len = std::min(Length(), kMaxFileSize - offset);
    Note(std::string("fallocate ") + m.name + " " + std::to_string(offset) + " +" + std::to_string(len));
    if (fallocate(fd_.get(), m.mode, static_cast<off_t>(offset), static_cast<off_t>(len)) != 0) {
      if (errno == EOPNOTSUPP) {
        unsupported_fallocate_modes_ |= 1u << (&m - kModes);
        Trace(std::string("  (") + m.name + " not supported here: EOPNOTSUPP)");
        return true;
      }
      return Fail(std::string("fallocate ") + m.name + ": " + ErrnoName(errno));
    }
    const bool keep_size = m.mode & FALLOC_FL_KEEP_SIZE;
    const bool zeroes = m.mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
    const uint64_t old_size = model_.size();
    if (!keep_size && offset + len > old_size) model_.resize(offset + len, '\0');
    if (zeroes && offset < model_.size()) {
      const uint64_t end = std::min<uint64_t>(offset + len, model_.size());
      std::fill(model_.begin() + static_cast<std::ptrdiff_t>(offset),
                model_.begin() + static_cast<std::ptrdiff_t>(end), '\0');
    }
    return CheckSize() && ReadAndCompare(fd_.get(), offset > kPage ? offset - kPage : 0, len + 2 * kPage,
                                         "read after fallocate");
  }
  // Copies a range of the file to a non-overlapping place in it.
  bool OpCopyRange() {
    if (model_.empty() || !copy_supported_) return true;
    uint64_t in = Below(model_.size());
    uint64_t len = std::min<uint64_t>(Length(), model_.size() - in);
    uint64_t out = Offset();
    if (out < in + len && in < out + len) return true;  // the kernel refuses overlap (EINVAL)
    len = std::min(len, kMaxFileSize - out);
    Note("copy_file_range " + std::to_string(in) + " -> " + std::to_string(out) + " +" + std::to_string(len));
    loff_t off_in = static_cast<loff_t>(in), off_out = static_cast<loff_t>(out);
    uint64_t done = 0;
    while (done < len) {
      ssize_t n = copy_file_range(fd_.get(), &off_in, fd_.get(), &off_out, len - done, 0);
      if (n < 0 && (errno == EOPNOTSUPP || errno == EXDEV) && done == 0) {
        copy_supported_ = false;
        Trace("  (copy_file_range not supported here: " + ErrnoName(errno) + ")");
        return true;
      }
      if (n <= 0) return Fail("copy_file_range: " + (n < 0 ? ErrnoName(errno) : std::string("returned 0")));
      done += static_cast<uint64_t>(n);
    }
    PutModel(out, model_.substr(in, len));
    return CheckSize() && ReadAndCompare(fd_.get(), out, len, "read after copy_file_range");
  }
  bool OpDirectRead() {
    if (!direct_supported_) return true;
    uint64_t offset = Below(model_.size() / kPage + 2) * kPage;
    uint64_t len = (1 + Below(16)) * kPage;
    Note("O_DIRECT pread " + std::to_string(offset) + " +" + std::to_string(len));
    int raw = open(path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (raw < 0 && errno == EINVAL) {
      direct_supported_ = false;  // allowed: the file system refuses O_DIRECT
      Trace("  (O_DIRECT refused: EINVAL)");
      return true;
    }
    if (raw < 0) return Fail("open O_DIRECT: " + ErrnoName(errno));
    UniqueFd direct(raw);
    AlignedBuffer buf(len);
    size_t got = 0;
    if (!PreadAll(direct.get(), buf.data.get(), len, static_cast<off_t>(offset), &got)) {
      return Fail("O_DIRECT pread: " + ErrnoName(errno));
    }
    const uint64_t want = offset >= model_.size() ? 0 : std::min<uint64_t>(len, model_.size() - offset);
    if (got != want) {
      return Fail("O_DIRECT pread: " + std::to_string(got) + " bytes at " + std::to_string(offset) +
                  ", expected " + std::to_string(want));
    }
    return Compare(buf.data.get(), offset, got, "O_DIRECT pread");
  }
  // Page-aligned O_DIRECT write through its own descriptor: the kernel must
  // write back and drop its cached pages of the range around it.
  bool OpDirectWrite() {
    if (!direct_supported_) return true;
    uint64_t offset = Below(kMaxFileSize / kPage) * kPage;
    uint64_t len = std::min<uint64_t>((1 + Below(16)) * kPage, kMaxFileSize - offset);
    Note("O_DIRECT pwrite " + std::to_string(offset) + " +" + std::to_string(len));
    int raw = open(path_.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (raw < 0 && errno == EINVAL) {
      direct_supported_ = false;
      Trace("  (O_DIRECT refused: EINVAL)");
      return true;
    }
    if (raw < 0) return Fail("open O_DIRECT for writing: " + ErrnoName(errno));
    UniqueFd direct(raw);
    AlignedBuffer buf(len);
    const std::string data = PatternBytes(rng_(), len);
    std::memcpy(buf.data.get(), data.data(), len);
    if (!PwriteAll(direct.get(), buf.data.get(), len, static_cast<off_t>(offset))) {
      return Fail("O_DIRECT pwrite: " + ErrnoName(errno));
    }
    PutModel(offset, data);
    return CheckSize() && ReadAndCompare(fd_.get(), offset > kPage ? offset - kPage : 0, len + 2 * kPage,
                                         "buffered read after O_DIRECT pwrite");
  }
  bool OpSync() {
    const bool data_only = Below(2) == 0;
    Note(data_only ? "fdatasync" : "fsync");
    if ((data_only ? fdatasync(fd_.get()) : fsync(fd_.get())) != 0) return Fail("fsync: " + ErrnoName(errno));
    return true;
  }
  bool OpReopen() {
    const bool truncate = Below(8) == 0;
    Note(truncate ? "close, reopen O_TRUNC" : "close, reopen");
    return Reopen(truncate ? O_TRUNC : 0) && FullCheck("read after reopen");
  }

  bool Step() {
    const uint64_t kind = Below(kKinds);
    ++kind_counts_[kind];
    switch (kind) {
      case 0: case 1: case 2: case 3: return OpWrite();
      case 4: case 5: case 6: return OpRead();
      case 7: return OpAppend();
      case 8: case 9: return OpTruncate();
      case 10: return OpMmap(true);
      case 11: return OpMmap(false);
      case 12: case 13: return OpFallocate();
      case 14: case 15: return OpCopyRange();
      case 16: return OpDirectRead();
      case 17: return OpSync();
      case 18: return OpDirectWrite();
      default: return OpReopen();
    }
  }

  // `operations` random steps, then more while `more` says so (at most ten
  // times as many); then the file is checked after fsync with its cached
  // pages dropped (and in the source), and every operation kind must have
  // run.
  void RunAndCheckModel(int operations, const std::function<bool()>& more = nullptr);

  std::string path_;
  UniqueFd fd_, append_fd_;
  std::string model_;
  std::mt19937_64 rng_;
  std::deque<std::string> trace_;
  int ops_done_ = 0;
  static constexpr int kKinds = 21;
  int kind_counts_[kKinds] = {};
  unsigned unsupported_fallocate_modes_ = 0;
  bool copy_supported_ = true;
  bool direct_supported_ = true;
};

TEST_P(FsxTest, RandomOperationsMatchTheModel) { RunAndCheckModel(Operations()); }

void FsxTest::RunAndCheckModel(int operations, const std::function<bool()>& more) {
  for (int i = 0; i < operations || (more && i < 10 * operations && more()); ++i) {
    ASSERT_TRUE(Step());
    if (i % kFullCheckEvery == kFullCheckEvery - 1) {
      ASSERT_TRUE(FullCheck("full read"));
    }
  }
  // What the daemon (or the source) holds, not what the kernel caches: the
  // file is made durable, its clean pages dropped, and read again.
  ASSERT_SYS(fsync(fd_.get()));
  ASSERT_EQ(posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  ASSERT_TRUE(Reopen(0));
  ASSERT_TRUE(FullCheck("final read after fsync and dropped caches"));
  if (!GetParam().source.empty()) {
    std::string source, error;
    ASSERT_TRUE(ReadFile(GetParam().source + "/fsx-file", &source, &error)) << error;
    ASSERT_EQ(source.size(), model_.size()) << "the source file's size";
    EXPECT_TRUE(source == model_) << "the source file differs from the model";
  }
  for (int kind = 0; kind < kKinds; ++kind) EXPECT_GT(kind_counts_[kind], 0) << "operation kind " << kind;
  // The features, on every configuration: copy_file_range, O_DIRECT,
  // and fallocate to allocate, keep the size and punch holes.
  EXPECT_TRUE(copy_supported_);
  EXPECT_TRUE(direct_supported_);
  EXPECT_EQ(unsupported_fallocate_modes_ & 0b111u, 0u) << "allocate, keep_size, punch_hole (bits 0-2)";
}

// Several processes write one file at once, each only its own bytes:
// 1000-byte stripes dealt out in turn, so every page holds bytes of several
// writers. A partial-page write makes the kernel read the rest of the page
// (with the writeback cache) and write the whole page back: a read-modify-
// write that races with another writer's change to the same page must not
// bring old bytes back. Each writer checks its own bytes as it goes; at the
// end the file, read after fsync with cached pages dropped (and the source
// itself), must hold every writer's last bytes.
// (EFUSE_FSX_OPS does not change this test's 20,000 operations per writer.)
TEST_P(FsxTest, ConcurrentWritersSharingPagesKeepEachOthersBytes) {
  constexpr int kWriters = 3;
  constexpr uint64_t kStripe = 1000;
  constexpr uint64_t kFileSize = 256 * kKiB;
  constexpr int kWriterOperations = 20000;
  ASSERT_SYS(ftruncate(fd_.get(), kFileSize));
  ASSERT_SYS(fsync(fd_.get()));
  const std::string model_prefix = "/tmp/efuse-fsx-model-" + std::to_string(getpid()) + "-";
  std::vector<pid_t> writers;
  for (int k = 0; k < kWriters; ++k) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << ErrnoName(errno);
    if (pid == 0) {
      alarm(120);  // a hang fails the test instead of blocking it
      std::mt19937_64 rng(Seed() * 31 + k);
      auto below = [&rng](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
      std::string mine(kFileSize, '\0');  // only this writer's stripes matter
      const int fd = open(path_.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) _exit(10);
      const uint64_t stripes = (kFileSize + kStripe - 1) / kStripe;
      for (int op = 0; op < kWriterOperations; ++op) {
        // One of this writer's stripes, and a range inside it.
        const uint64_t stripe = (below(stripes / kWriters) * kWriters + k);
        const uint64_t start = stripe * kStripe;
        if (start >= kFileSize) continue;
        const uint64_t end = std::min(start + kStripe, kFileSize);
        const uint64_t offset = start + below(end - start);
        const uint64_t len = 1 + below(end - offset);
        const std::string data = PatternBytes(rng(), len);
        switch (below(5)) {
          case 0:
          case 1:
            if (!PwriteAll(fd, data.data(), len, static_cast<off_t>(offset))) _exit(11);
            mine.replace(offset, len, data);
            break;
          case 2: {
            void* m = mmap(nullptr, kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (m == MAP_FAILED) _exit(12);
            std::memcpy(static_cast<char*>(m) + offset, data.data(), len);
            if (below(2) == 0 && msync(m, kFileSize, MS_SYNC) != 0) _exit(13);
            munmap(m, kFileSize);
            mine.replace(offset, len, data);
            break;
          }
          case 3: {
            std::string got(end - start, '\0');
            size_t n = 0;
            if (!PreadAll(fd, got.data(), got.size(), static_cast<off_t>(start), &n) || n != got.size()) _exit(14);
            if (got != mine.substr(start, end - start)) {
              uint64_t first = 0, last = 0, count = 0;
              for (uint64_t i = 0; i < got.size(); ++i) {
                if (got[i] == mine[start + i]) continue;
                if (count++ == 0) first = i;
                last = i;
              }
              std::fprintf(stderr,
                           "writer %d: stripe at %llu changed under it after %d operations: %llu bytes "
                           "differ in [%llu, %llu], first 0x%02x where 0x%02x was written\n",
                           k, static_cast<unsigned long long>(start), op, static_cast<unsigned long long>(count),
                           static_cast<unsigned long long>(start + first), static_cast<unsigned long long>(start + last),
                           static_cast<unsigned>(got[first]) & 0xff, static_cast<unsigned>(mine[start + first]) & 0xff);
              _exit(15);
            }
            break;
          }
          default:
            if (below(4) == 0 && fsync(fd) != 0) _exit(16);
            break;
        }
      }
      if (fsync(fd) != 0) _exit(17);
      close(fd);
      std::string error;
      _exit(WriteFile(model_prefix + std::to_string(k), mine, &error) ? 0 : 18);
    }
    writers.push_back(pid);
  }
  for (int k = 0; k < kWriters; ++k) {
    int status = 0;
    ASSERT_EQ(waitpid(writers[k], &status, 0), writers[k]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "writer " << k << " failed: wait status " << status
        << " (exit 10 open, 11 pwrite, 12 mmap, 13 msync, 14 pread, 15 its bytes changed under it, "
           "16/17 fsync, 18 saving its model)";
  }
  std::string want(kFileSize, '\0');
  for (int k = 0; k < kWriters; ++k) {
    std::string theirs, error;
    const std::string file = model_prefix + std::to_string(k);
    ASSERT_TRUE(ReadFile(file, &theirs, &error)) << error;
    unlink(file.c_str());
    for (uint64_t at = k * kStripe; at < kFileSize; at += kWriters * kStripe) {
      const uint64_t n = std::min(kStripe, kFileSize - at);
      want.replace(at, n, theirs, at, n);
    }
  }
  ASSERT_EQ(posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  ASSERT_TRUE(Reopen(0));
  model_ = want;
  ASSERT_TRUE(FullCheck("the merged file after all writers"));
  if (!GetParam().source.empty()) {
    std::string source, error;
    ASSERT_TRUE(ReadFile(GetParam().source + "/fsx-file", &source, &error)) << error;
    EXPECT_TRUE(source == want) << "the source file differs from the writers' bytes";
  }
}

// A process writes and reads back its own bytes while two others keep
// opening the file and reading it. Without the writeback cache the kernel
// unlocks a page once a write has copied into it, before the WRITE reaches
// the daemon: an open that dropped the cached pages then let a reader fetch
// the page from the old data and leave it cached over the writer's bytes, so
// the writer read back what it had just overwritten (memfs within about 20
// writes on uring, passthrough daemon I/O at the first). Opens keep the
// pages while the mount has the file open for writing.
TEST_P(FsxTest, ReadAfterWriteHoldsWhileOthersOpenAndRead) {
  constexpr uint64_t kFileSize = 64 * kKiB;
  constexpr int kWrites = 20000;
  ASSERT_SYS(ftruncate(fd_.get(), kFileSize));
  std::vector<pid_t> readers;
  for (int r = 0; r < 2; ++r) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << ErrnoName(errno);
    if (pid == 0) {
      alarm(120);
      std::mt19937_64 rng(Seed() + r);
      char buf[kPage];
      for (;;) {
        const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) _exit(1);
        size_t n = 0;
        PreadAll(fd, buf, sizeof(buf), static_cast<off_t>(rng() % (kFileSize / kPage) * kPage), &n);
        close(fd);
      }
    }
    readers.push_back(pid);
  }
  std::string failure;
  for (int i = 0; i < kWrites && failure.empty(); ++i) {
    const uint64_t offset = rng_() % (kFileSize - 2000);
    const uint64_t len = 1 + rng_() % 2000;
    const std::string data = PatternBytes(rng_(), len);
    if (!PwriteAll(fd_.get(), data.data(), len, static_cast<off_t>(offset))) {
      failure = "pwrite: " + ErrnoName(errno);
      break;
    }
    std::string got(len, '\0');
    size_t n = 0;
    if (!PreadAll(fd_.get(), got.data(), len, static_cast<off_t>(offset), &n) || n != len) {
      failure = "pread: " + ErrnoName(errno);
    } else if (got != data) {
      failure = "write " + std::to_string(i) + " of " + std::to_string(len) + " bytes at " +
                std::to_string(offset) + ": read back other bytes";
    }
  }
  for (pid_t pid : readers) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  EXPECT_EQ(failure, "");
}

INSTANTIATE_TEST_SUITE_P(
    Fsx, FsxTest,
    ::testing::Values(Memfs("memfs", {"--memfs_data=daemon"}),
                      Memfs("memfs_small_requests", {"--memfs_data=daemon", "--max_write=4K"}),
                      // file data in a private tmpfs, through kernel passthrough
                      Memfs("memfs_kernel_data", {"--memfs_data=kernel"}),
                      // kernel passthrough: reads, writes and mmap go to the source file
                      Passthrough("tmpfs_passthrough", {"--passthrough=on"}),
                      // the daemon serves READ/WRITE, the kernel's writeback cache in front
                      Passthrough("disk_writeback", {"--passthrough=off"}),
                      // the daemon serves every read and write
                      Passthrough("disk_daemon_io", {"--passthrough=off", "--writeback_cache=false"})),
    [](const ::testing::TestParamInfo<FsxConfig>& info) { return std::string(info.param.name); });

// Under --supervise=on the server is killed (SIGKILL) every 0.5-2 s while
// the operations run (a successor takes each kill over): every call still
// returns what the model says, and the file holds the model at the end.
// Registered on sync and uring-dev only (the FUSE ring cannot be handed
// over: tools/efused/cli.cc).
class FsxKillTest : public FsxTest {};

TEST_P(FsxKillTest, RandomOperationsMatchTheModelWhileTheServerIsKilled) {
  MountEntry entry;
  ASSERT_TRUE(FindMount(mount_.path(), &entry));
  const std::string status_file = mount_.StatusFile(entry.dev_minor);
  auto server_pid = [&] {
    std::string text, error;
    ReadFile(status_file, &text, &error);
    const size_t at = text.find("\nserver_pid: ");
    return at == std::string::npos ? 0L : std::atol(text.c_str() + at + 13);
  };
  std::atomic<bool> stop{false};
  std::atomic<int> kills{0};
  std::thread killer([&] {
    std::mt19937 rng(Seed());
    while (!stop.load()) {
      const auto wake = std::chrono::steady_clock::now() + std::chrono::milliseconds(500 + rng() % 1500);
      while (!stop.load() && std::chrono::steady_clock::now() < wake) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      const long pid = server_pid();
      if (stop.load() || pid <= 0 || kill(static_cast<pid_t>(pid), SIGKILL) != 0) continue;
      ++kills;
      // Until the successor has written its own status (bounded).
      for (int i = 0; i < 1000 && server_pid() == pid; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  // Past the first two kills whatever the machine's speed (a fast one got
  // through 30,000 operations before the first).
  RunAndCheckModel(std::max(Operations(), 30000), [&] { return kills.load() < 2; });
  stop.store(true);
  killer.join();
  EXPECT_GE(kills.load(), 1) << "the run ended before the first kill";
  std::cout << "fsx under a kill loop: " << kills.load() << " kills" << std::endl;
}

INSTANTIATE_TEST_SUITE_P(
    Supervised, FsxKillTest,
    ::testing::Values(Memfs("memfs_kernel_data", {"--memfs_data=kernel", "--supervise=on"}),
                      // bytes in the supervisor's memfd, the rest from memfs's journal
                      Memfs("memfs_daemon_data", {"--memfs_data=daemon", "--supervise=on"}),
                      Passthrough("tmpfs_passthrough_supervised", {"--passthrough=on", "--supervise=on"}),
                      Passthrough("disk_daemon_io_supervised",
                                  {"--passthrough=off", "--writeback_cache=false", "--supervise=on"})),
    [](const ::testing::TestParamInfo<FsxConfig>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace efuse::testing
