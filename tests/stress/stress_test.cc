// tests/stress/stress_test.cc — many threads and processes on one real mount.
//
// One efused (memfs) mount; 8 threads and 4 forked processes work on it for a
// bounded time (EFUSE_STRESS_SECONDS, default 20; EFUSE_STRESS_FLAGS adds
// daemon flags): they create files of random
// sizes (up to 1 MiB), write them in random chunks, fsync, read them back,
// resize them, rename them (into shared directories, over each other and
// across directories), hard-link, unlink, make/move/remove directories, and
// list and read the shared directories while the others change them.
//
// How results stay checkable under concurrency: every worker owns its names
// (a private directory, and names prefixed "k<worker>_" in the shared
// directories), so it knows exactly what each of its names must hold, and it
// checks every call's result against that model (an errno is allowed only
// where the model predicts it, e.g. EEXIST). Other workers' files are read
// too; they may vanish (ENOENT) but never be torn: every file carries a
// header (magic, seed, size) and a pattern derived from the seed, and a file
// is never modified once it is in a shared directory. At the end the whole
// tree is checked against the union of the workers' models (names, contents,
// hard-link groups, empty directories), the daemon is stopped with SIGTERM
// and must exit 0, unmount, and have logged no "efused: error:" line.
#include <dirent.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

namespace efuse::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kThreads = 8;
constexpr int kProcesses = 4;
constexpr int kWorkers = kThreads + kProcesses;
constexpr int kSharedDirs = 8;
constexpr int kFileSlots = 12;   // per worker, in each shared directory
constexpr int kDirSlots = 3;     // per worker, in each shared directory
constexpr size_t kMaxNames = 40;  // live names per worker
constexpr size_t kMaxFileSize = 1 << 20;
constexpr size_t kHeaderSize = 24;
constexpr uint64_t kMagic = 0x5345525453465545ULL;  // "EUFSTRES"
constexpr int kMaxErrorsPerWorker = 20;

int StressSeconds() {
  const char* s = std::getenv("EFUSE_STRESS_SECONDS");
  int v = s != nullptr ? std::atoi(s) : 0;
  return v > 0 ? v : 20;
}

// A file's bytes: header {magic, seed, size} then the pattern of `seed` from
// stream offset kHeaderSize. The pattern part of a longer file starts with the
// shorter one's, so a file can grow or shrink and stay self-describing.
void FillContent(uint64_t seed, uint64_t size, uint64_t from, uint8_t* out, size_t n) {
  for (size_t i = 0; i < n;) {
    uint64_t pos = from + i;
    if (pos < kHeaderSize) {
      uint64_t header[3] = {kMagic, seed, size};
      out[i] = reinterpret_cast<const uint8_t*>(header)[pos];
      ++i;
      continue;
    }
    size_t len = n - i;
    FillPattern(seed, pos, out + i, len);
    i += len;
  }
}

std::string Content(uint64_t seed, uint64_t size) {
  std::string s(size, '\0');
  FillContent(seed, size, 0, reinterpret_cast<uint8_t*>(s.data()), size);
  return s;
}

// Checks a file's bytes on their own; sets *seed. "" if fine, else why not.
std::string SelfCheck(const std::string& data, uint64_t* seed) {
  if (data.size() < kHeaderSize) return "shorter than its header (" + std::to_string(data.size()) + " bytes)";
  uint64_t header[3];
  std::memcpy(header, data.data(), sizeof(header));
  if (header[0] != kMagic) return "bad magic";
  if (header[2] != data.size())
    return "header says " + std::to_string(header[2]) + " bytes, file has " + std::to_string(data.size());
  *seed = header[1];
  if (data != Content(header[1], header[2])) return "contents differ from the pattern of its seed (torn?)";
  return "";
}

struct FileContent {
  uint64_t seed = 0;
  uint64_t size = 0;
};

// What one worker's names must hold.
struct Model {
  std::map<std::string, uint64_t> names;  // relative path -> token (one inode)
  std::map<uint64_t, FileContent> tokens;
  std::set<std::string> dirs;             // relative paths of its empty directories

  size_t Links(uint64_t token) const {
    size_t n = 0;
    for (const auto& [name, t] : names) n += t == token;
    return n;
  }
  void Erase(const std::string& name) {
    uint64_t token = names.at(name);
    names.erase(name);
    if (Links(token) == 0) tokens.erase(token);
  }
};

struct OpCounts {
  std::map<std::string, uint64_t> ok;
  uint64_t others_vanished = 0;  // ENOENT on another worker's name: allowed
};

std::string Dirname(const std::string& rel) { return rel.substr(0, rel.rfind('/')); }
std::string Basename(const std::string& rel) { return rel.substr(rel.rfind('/') + 1); }

bool IsWorkerName(const std::string& name) {
  // k<digits>_s<digits> or k<digits>_dir<digits>
  size_t i = 0;
  if (name.size() < 4 || name[i++] != 'k') return false;
  size_t digits = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i, ++digits;
  if (digits == 0 || i >= name.size() || name[i++] != '_') return false;
  std::string rest = name.substr(i);
  std::string num;
  if (rest.rfind("s", 0) == 0 && rest.rfind("dir", 0) != 0) num = rest.substr(1);
  else if (rest.rfind("dir", 0) == 0) num = rest.substr(3);
  else return false;
  return !num.empty() && std::all_of(num.begin(), num.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

class Worker {
 public:
  Worker(int id, std::string root, Clock::time_point deadline)
      : id_(id), root_(std::move(root)), deadline_(deadline),
        rng_(0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(id + 1) ^ static_cast<uint64_t>(getpid())) {}

  void Run() {
    const std::vector<std::pair<int, void (Worker::*)()>> ops = {
        {18, &Worker::Create}, {5, &Worker::Resize},   {15, &Worker::Publish},
        {12, &Worker::Move},   {6, &Worker::Link},     {8, &Worker::Unlink},
        {10, &Worker::Verify}, {10, &Worker::ReadOthers}, {8, &Worker::List},
        {5, &Worker::DirOp},   {3, &Worker::Stat}};
    int total = 0;
    for (const auto& [w, op] : ops) total += w;
    while (Clock::now() < deadline_ && errors_.size() < kMaxErrorsPerWorker) {
      int r = static_cast<int>(rng_() % static_cast<uint64_t>(total));
      for (const auto& [w, op] : ops) {
        if (r < w) {
          (this->*op)();
          break;
        }
        r -= w;
      }
    }
  }

  const Model& model() const { return model_; }
  Model& model() { return model_; }
  const std::vector<std::string>& errors() const { return errors_; }
  std::vector<std::string>& errors() { return errors_; }
  OpCounts& counts() { return counts_; }

 private:
  std::string Abs(const std::string& rel) const { return root_ + "/" + rel; }
  std::string PrivDir() const { return "priv/w" + std::to_string(id_); }
  std::string SharedDir(int d) const { return "shared/d" + std::to_string(d); }
  std::string FileSlot(int d, int s) const {
    return SharedDir(d) + "/k" + std::to_string(id_) + "_s" + std::to_string(s);
  }
  std::string DirSlot(int d, int s) const {
    return SharedDir(d) + "/k" + std::to_string(id_) + "_dir" + std::to_string(s);
  }
  int Rand(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }

  void Error(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    errors_.push_back("worker " + std::to_string(id_) + ": " + buf);
  }
  void SysError(const std::string& what, int err) {
    Error("%s: %s", what.c_str(), ErrnoName(err).c_str());
  }
  // For failures on our own names: what the kernel has cached (lstat) and
  // what the daemon says (statx with AT_STATX_FORCE_SYNC), against the model.
  std::string Views(const std::string& rel) {
    auto view = [&](bool force) {
      struct statx sx {};
      int flags = AT_SYMLINK_NOFOLLOW | (force ? AT_STATX_FORCE_SYNC : AT_STATX_DONT_SYNC);
      if (statx(AT_FDCWD, Abs(rel).c_str(), flags, STATX_BASIC_STATS, &sx) != 0) return ErrnoName(errno);
      return "ino " + std::to_string(sx.stx_ino) + " nlink " + std::to_string(sx.stx_nlink) + " size " +
             std::to_string(sx.stx_size);
    };
    std::string model = "absent";
    if (auto it = model_.names.find(rel); it != model_.names.end())
      model = "nlink " + std::to_string(model_.Links(it->second)) + " size " +
              std::to_string(model_.tokens.at(it->second).size);
    std::string cached = view(false);  // before the forced one refreshes the cache
    return " [" + rel + ": kernel cache: " + cached + "; daemon: " + view(true) + "; model: " + model + "]";
  }
  void Done(const char* op) { ++counts_.ok[op]; }

  uint64_t RandomSize() {
    int r = Rand(100);
    if (r < 40) return kHeaderSize + rng_() % (4096 - kHeaderSize + 1);
    if (r < 75) return 4096 + rng_() % (60 * 1024);
    if (r < 95) return 64 * 1024 + rng_() % (448 * 1024);
    return 512 * 1024 + rng_() % (kMaxFileSize - 512 * 1024 + 1);
  }
  uint64_t NewSeed() { return (static_cast<uint64_t>(id_) << 48) | (++seeds_ & 0xffffffffffffULL); }

  // A random existing name of ours, optionally only in the private dir or
  // only shared; "" if none.
  std::string PickName(int where /* 0 any, 1 private, 2 shared */) {
    std::vector<const std::string*> c;
    const std::string priv = PrivDir() + "/";
    for (const auto& [name, token] : model_.names) {
      bool is_priv = name.rfind(priv, 0) == 0;
      if (where == 0 || (where == 1) == is_priv) c.push_back(&name);
    }
    if (c.empty()) return "";
    return *c[static_cast<size_t>(Rand(static_cast<int>(c.size())))];
  }

  // Writes bytes [from, to) of `fc`'s content to fd at their offsets, in
  // random chunks.
  bool WriteRange(int fd, const FileContent& fc, uint64_t from, uint64_t to, const std::string& rel) {
    std::vector<uint8_t> buf;
    while (from < to) {
      uint64_t chunk = std::min<uint64_t>(to - from, 1 + rng_() % (256 * 1024));
      buf.resize(chunk);
      FillContent(fc.seed, fc.size, from, buf.data(), chunk);
      ssize_t n = pwrite(fd, buf.data(), chunk, static_cast<off_t>(from));
      if (n < 0) {
        SysError("pwrite " + rel + " at " + std::to_string(from), errno);
        return false;
      }
      if (static_cast<uint64_t>(n) != chunk) {
        Error("short pwrite on %s: %zd of %llu bytes", rel.c_str(), n, static_cast<unsigned long long>(chunk));
        return false;
      }
      from += chunk;
    }
    return true;
  }

  bool Sync(int fd, const std::string& rel) {
    int r = Rand(4);
    if (r == 0 && fsync(fd) != 0) return SysError("fsync " + rel, errno), false;
    if (r == 1 && fdatasync(fd) != 0) return SysError("fdatasync " + rel, errno), false;
    return true;
  }

  // Reads all of `rel` (ours) and compares with the model; checks size and nlink.
  bool CheckOwn(const std::string& rel) {
    uint64_t token = model_.names.at(rel);
    const FileContent& fc = model_.tokens.at(token);
    int fd = open(Abs(rel).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      return SysError("open own " + rel + Views(rel), err), false;
    }
    UniqueFd guard(fd);
    struct stat st {};
    if (fstat(fd, &st) != 0) return SysError("fstat " + rel, errno), false;
    if (!S_ISREG(st.st_mode)) return Error("%s is not a regular file (mode 0%o)", rel.c_str(), st.st_mode), false;
    if (static_cast<uint64_t>(st.st_size) != fc.size)
      return Error("%s: size %lld, expected %llu", rel.c_str(), static_cast<long long>(st.st_size),
                   static_cast<unsigned long long>(fc.size)), false;
    if (st.st_nlink != model_.Links(token))
      return Error("%s: nlink %lu, expected %zu", rel.c_str(), static_cast<unsigned long>(st.st_nlink),
                   model_.Links(token)), false;
    std::string data(fc.size + 1, '\0');
    size_t got = 0;
    if (!PreadAll(fd, data.data(), data.size(), 0, &got)) return SysError("read " + rel, errno), false;
    data.resize(got);
    if (data != Content(fc.seed, fc.size)) {
      uint64_t seed = 0;
      std::string why = SelfCheck(data, &seed);
      return Error("%s: contents differ from what it was last given (seed %llx): %s%s", rel.c_str(),
                   static_cast<unsigned long long>(fc.seed),
                   why.empty() ? "it holds another intact file, seed " : why.c_str(),
                   why.empty() ? std::to_string(seed).c_str() : ""), false;
    }
    return true;
  }

  // ---- operations ----

  void Create() {
    if (model_.names.size() >= kMaxNames) return Unlink();
    const std::string rel = PrivDir() + "/f" + std::to_string(++files_);
    FileContent fc{NewSeed(), RandomSize()};
    int fd = open(Abs(rel).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return SysError("create " + rel, errno);
    bool ok = WriteRange(fd, fc, 0, fc.size, rel) && Sync(fd, rel);
    if (close(fd) != 0) {
      SysError("close " + rel, errno);
      ok = false;
    }
    // Failed (and reported): its content is unknown, so it leaves the
    // model and the tree rather than fail every later check of it.
    if (!ok) {
      unlink(Abs(rel).c_str());
      return;
    }
    const uint64_t token = ++tokens_;
    model_.names[rel] = token;
    model_.tokens[token] = fc;
    if (ok && CheckOwn(rel)) Done("create");
  }

  // Grows (pwrite past the end) or shrinks (truncate) a private file that has
  // no other name, then rewrites its header.
  void Resize() {
    std::string rel = PickName(1);
    if (rel.empty()) return Create();
    const uint64_t token = model_.names.at(rel);
    if (model_.Links(token) != 1) return;
    FileContent& fc = model_.tokens.at(token);
    FileContent next{fc.seed, RandomSize()};
    int fd = open(Abs(rel).c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return SysError("open for resize " + rel, errno);
    bool ok = true;
    if (next.size > fc.size) {
      ok = WriteRange(fd, next, fc.size, next.size, rel);
    } else if (ftruncate(fd, static_cast<off_t>(next.size)) != 0) {
      SysError("ftruncate " + rel, errno);
      ok = false;
    }
    ok = ok && WriteRange(fd, next, 0, kHeaderSize, rel) && Sync(fd, rel);
    if (close(fd) != 0) {
      SysError("close " + rel, errno);
      ok = false;
    }
    if (!ok) {  // (reported; as in Create)
      unlink(Abs(rel).c_str());
      model_.Erase(rel);
      return;
    }
    fc = next;
    if (CheckOwn(rel)) Done("resize");
  }

  void RenameModel(const std::string& from, const std::string& to) {
    uint64_t token = model_.names.at(from);
    auto it = model_.names.find(to);
    if (it != model_.names.end() && it->second == token) return;  // same inode: no-op
    if (it != model_.names.end()) model_.Erase(to);
    model_.names.erase(from);
    model_.names[to] = token;
  }

  void DoRename(const std::string& from, const std::string& to, const char* op) {
    if (from == to) return;
    if (rename(Abs(from).c_str(), Abs(to).c_str()) != 0) {
      int err = errno;
      return SysError("rename " + from + " -> " + to + Views(from) + Views(to), err);
    }
    RenameModel(from, to);
    Done(op);
  }

  void Publish() {
    std::string from = PickName(1);
    if (from.empty()) return Create();
    DoRename(from, FileSlot(Rand(kSharedDirs), Rand(kFileSlots)), "publish");
  }

  void Move() {
    std::string from = PickName(2);
    if (from.empty()) return Publish();
    int d = Rand(kSharedDirs);
    if (SharedDir(d) == Dirname(from)) d = (d + 1) % kSharedDirs;  // across directories
    DoRename(from, FileSlot(d, Rand(kFileSlots)), "move");
  }

  void Link() {
    std::string from = PickName(0);
    if (from.empty()) return Create();
    std::string to = FileSlot(Rand(kSharedDirs), Rand(kFileSlots));
    const bool exists = model_.names.count(to) != 0;
    int rc = link(Abs(from).c_str(), Abs(to).c_str());
    int err = errno;
    if (exists) {
      if (rc == 0 || err != EEXIST)
        return Error("link %s -> existing %s: %s, expected EEXIST", from.c_str(), to.c_str(),
                     rc == 0 ? "succeeded" : ErrnoName(err).c_str());
      return Done("link_eexist");
    }
    if (rc != 0 && err == ENOENT && KernelNlinkRace(from)) {
      rc = link(Abs(from).c_str(), Abs(to).c_str());  // the cache is fresh again: must work
      err = errno;
      if (rc == 0) Done("link_after_kernel_nlink_race");
    }
    if (rc != 0) return SysError("link " + from + " -> " + to + Views(from), err);
    model_.names[to] = model_.names.at(from);
    struct stat a {}, b {};
    if (stat(Abs(from).c_str(), &a) != 0 || stat(Abs(to).c_str(), &b) != 0)
      return SysError("stat after link " + to, errno);
    if (a.st_ino != b.st_ino) return Error("link %s -> %s: different inodes", from.c_str(), to.c_str());
    if (b.st_nlink != model_.Links(model_.names.at(to)))
      return Error("after link %s: nlink %lu, expected %zu", to.c_str(),
                   static_cast<unsigned long>(b.st_nlink), model_.Links(model_.names.at(to)));
    Done("link");
  }

  // A Linux FUSE race (6.18; libfuse's passthrough_ll shows it too): unlink
  // makes the kernel drop its cached nlink by one *after* the reply, so when
  // another thread's LOOKUP/GETATTR answered after the server's unlink has
  // already stored the new count, the cache ends one too low, possibly 0 for
  // a file that still has a name. link() then fails with ENOENT in vfs_link()
  // without asking the server. True if that is what happened to our `rel`
  // (cached nlink 0, the daemon's count equal to the model's); the forced
  // statx also refreshes the cache.
  bool KernelNlinkRace(const std::string& rel) {
    struct statx cached {}, fresh {};
    if (statx(AT_FDCWD, Abs(rel).c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &cached) != 0 ||
        cached.stx_nlink != 0)
      return false;
    if (statx(AT_FDCWD, Abs(rel).c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &fresh) != 0)
      return false;
    return fresh.stx_nlink == model_.Links(model_.names.at(rel));
  }

  void Unlink() {
    std::string rel = PickName(0);
    if (rel.empty()) return;
    if (unlink(Abs(rel).c_str()) != 0) {
      int err = errno;
      return SysError("unlink " + rel + Views(rel), err);
    }
    model_.Erase(rel);
    Done("unlink");
  }

  void Verify() {
    std::string rel = PickName(0);
    if (rel.empty()) return Create();
    if (CheckOwn(rel)) Done("verify");
  }

  void Stat() {
    std::string rel = PickName(0);
    if (rel.empty()) return;
    struct stat st {};
    if (lstat(Abs(rel).c_str(), &st) != 0) return SysError("lstat " + rel, errno);
    const uint64_t token = model_.names.at(rel);
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != model_.tokens.at(token).size ||
        st.st_nlink != model_.Links(token))
      return Error("lstat %s: mode 0%o size %lld nlink %lu; expected a regular file of %llu bytes, nlink %zu",
                   rel.c_str(), st.st_mode, static_cast<long long>(st.st_size),
                   static_cast<unsigned long>(st.st_nlink),
                   static_cast<unsigned long long>(model_.tokens.at(token).size), model_.Links(token));
    Done("stat");
  }

  // Lists `dir` (relative); fails on readdir errors, malformed names, or our
  // own names not matching the model (those cannot change during the listing).
  bool ListDir(const std::string& dir, std::vector<std::string>* names) {
    DIR* d = opendir(Abs(dir).c_str());
    if (d == nullptr) return SysError("opendir " + dir, errno), false;
    errno = 0;
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names->push_back(n);
      errno = 0;
    }
    int err = errno;
    closedir(d);
    if (err != 0) return SysError("readdir " + dir, err), false;
    const bool priv = dir == PrivDir();
    const std::string mine = "k" + std::to_string(id_) + "_";
    std::multiset<std::string> own_seen;
    for (const std::string& n : *names) {
      if (!priv && !IsWorkerName(n)) return Error("listing %s: unexpected name '%s'", dir.c_str(), n.c_str()), false;
      if (priv || n.rfind(mine, 0) == 0) own_seen.insert(dir + "/" + n);
    }
    std::multiset<std::string> own_want;
    for (const auto& [name, t] : model_.names)
      if (Dirname(name) == dir) own_want.insert(name);
    for (const std::string& name : model_.dirs)
      if (Dirname(name) == dir) own_want.insert(name);
    if (own_seen != own_want) {
      std::string seen, want;
      for (const auto& s : own_seen) seen += " " + Basename(s);
      for (const auto& s : own_want) want += " " + Basename(s);
      return Error("listing %s: own entries [%s ] but expected [%s ]", dir.c_str(), seen.c_str(), want.c_str()), false;
    }
    return true;
  }

  void List() {
    std::vector<std::string> names;
    std::string dir = Rand(4) == 0 ? PrivDir() : SharedDir(Rand(kSharedDirs));
    if (ListDir(dir, &names)) Done("list");
  }

  void ReadOthers() {
    std::vector<std::string> names;
    const std::string dir = SharedDir(Rand(kSharedDirs));
    if (!ListDir(dir, &names)) return;
    const std::string mine = "k" + std::to_string(id_) + "_";
    std::vector<std::string> files;
    for (const std::string& n : names)
      if (n.rfind(mine, 0) != 0 && n.find("_s") != std::string::npos) files.push_back(n);
    if (files.empty()) return;
    const std::string rel = dir + "/" + files[static_cast<size_t>(Rand(static_cast<int>(files.size())))];
    int fd = open(Abs(rel).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return void(++counts_.others_vanished);  // renamed or unlinked meanwhile
      return SysError("open other's " + rel, errno);
    }
    UniqueFd guard(fd);
    struct stat st {};
    if (fstat(fd, &st) != 0) return SysError("fstat other's " + rel, errno);
    if (!S_ISREG(st.st_mode)) return Error("%s is not a regular file", rel.c_str());
    std::string data(static_cast<size_t>(st.st_size) + 1, '\0');
    size_t got = 0;
    if (!PreadAll(fd, data.data(), data.size(), 0, &got)) return SysError("read other's " + rel, errno);
    data.resize(got);
    if (got != static_cast<size_t>(st.st_size))
      return Error("%s: read %zu bytes, fstat said %lld", rel.c_str(), got, static_cast<long long>(st.st_size));
    uint64_t seed = 0;
    std::string why = SelfCheck(data, &seed);
    if (!why.empty()) return Error("another worker's %s: %s", rel.c_str(), why.c_str());
    Done("read_others");
  }

  // mkdir / rename across directories / rmdir of our own empty directories.
  void DirOp() {
    const std::string slot = DirSlot(Rand(kSharedDirs), Rand(kDirSlots));
    const bool exists = model_.dirs.count(slot) != 0;
    int r = Rand(3);
    if (r == 0 || model_.dirs.empty()) {
      int rc = mkdir(Abs(slot).c_str(), 0755);
      int err = errno;
      if (exists) {
        if (rc == 0 || err != EEXIST)
          return Error("mkdir existing %s: %s, expected EEXIST", slot.c_str(),
                       rc == 0 ? "succeeded" : ErrnoName(err).c_str());
        return Done("mkdir_eexist");
      }
      if (rc != 0) return SysError("mkdir " + slot, err);
      model_.dirs.insert(slot);
      return Done("mkdir");
    }
    auto it = model_.dirs.begin();
    std::advance(it, Rand(static_cast<int>(model_.dirs.size())));
    const std::string from = *it;
    if (r == 1) {
      if (from == slot) return;
      // Over an existing (empty) directory of ours, or to a free name.
      if (rename(Abs(from).c_str(), Abs(slot).c_str()) != 0)
        return SysError("rename dir " + from + " -> " + slot, errno);
      model_.dirs.erase(from);
      model_.dirs.insert(slot);
      return Done("rename_dir");
    }
    if (rmdir(Abs(from).c_str()) != 0) return SysError("rmdir " + from, errno);
    model_.dirs.erase(from);
    Done("rmdir");
  }

  const int id_;
  const std::string root_;
  const Clock::time_point deadline_;
  std::mt19937_64 rng_;
  Model model_;
  std::vector<std::string> errors_;
  OpCounts counts_;
  uint64_t files_ = 0, tokens_ = 0, seeds_ = 0;
};

// A forked worker hands its model, counts and errors back through a file.
void SaveWorker(Worker& w, const std::string& path) {
  std::ofstream out(path);
  for (const auto& [name, token] : w.model().names) out << "N " << name << " " << token << "\n";
  for (const auto& [token, fc] : w.model().tokens) out << "T " << token << " " << fc.seed << " " << fc.size << "\n";
  for (const std::string& d : w.model().dirs) out << "D " << d << "\n";
  for (const auto& [op, n] : w.counts().ok) out << "C " << op << " " << n << "\n";
  out << "V " << w.counts().others_vanished << "\n";
  for (const std::string& e : w.errors()) out << "E " << e << "\n";
  out << "END\n";
}

bool LoadWorker(const std::string& path, Worker* w, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "no result file " + path;
    return false;
  }
  std::string line;
  bool end = false;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string tag;
    l >> tag;
    if (tag == "N") {
      std::string name;
      uint64_t token;
      l >> name >> token;
      w->model().names[name] = token;
    } else if (tag == "T") {
      uint64_t token;
      FileContent fc;
      l >> token >> fc.seed >> fc.size;
      w->model().tokens[token] = fc;
    } else if (tag == "D") {
      std::string d;
      l >> d;
      w->model().dirs.insert(d);
    } else if (tag == "C") {
      std::string op;
      uint64_t n;
      l >> op >> n;
      w->counts().ok[op] = n;
    } else if (tag == "V") {
      l >> w->counts().others_vanished;
    } else if (tag == "E") {
      w->errors().push_back(line.substr(2));
    } else if (tag == "END") {
      end = true;
    }
  }
  if (!end) *error = "truncated result file " + path;
  return end;
}

// Extra efused flags from EFUSE_STRESS_FLAGS (space-separated), e.g.
// "--entry_timeout=0 --attr_timeout=0 --workers=4".
class StressTest : public MountTest {
 protected:
  std::vector<std::string> DaemonFlags() const override {
    // Data in the daemon: the audit at the end checks memfs's own block
    // accounting to the block. (With data in a private tmpfs, statfs is
    // tmpfs's: inodes match the tree exactly there too, but tmpfs counted
    // about 9% more blocks than the files' sizes after this workload.)
    std::vector<std::string> flags = {"--size=2G", "--memfs_data=daemon"};
    if (const char* extra = std::getenv("EFUSE_STRESS_FLAGS")) {
      std::istringstream in(extra);
      std::string f;
      while (in >> f) flags.push_back(f);
    }
    return flags;
  }
};

TEST_F(StressTest, ThreadsAndProcessesKeepEveryFileIntact) {
  const int seconds = StressSeconds();
  const std::string root = mount_.path();
  ASSERT_SYS(mkdir((root + "/shared").c_str(), 0755));
  ASSERT_SYS(mkdir((root + "/priv").c_str(), 0755));
  for (int d = 0; d < kSharedDirs; ++d) ASSERT_SYS(mkdir((root + "/shared/d" + std::to_string(d)).c_str(), 0755));
  for (int k = 0; k < kWorkers; ++k) ASSERT_SYS(mkdir((root + "/priv/w" + std::to_string(k)).c_str(), 0755));
  char results_template[] = "/tmp/efuse-stress-XXXXXX";
  ASSERT_NE(mkdtemp(results_template), nullptr);
  const std::string results = results_template;

  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(seconds);
  std::cout.flush();
  std::cerr.flush();
  // Processes first, while this process has no other thread.
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const int id = kThreads + p;
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << ErrnoName(errno);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      Worker w(id, root, deadline);
      w.Run();
      SaveWorker(w, results + "/w" + std::to_string(id));
      _exit(0);
    }
    children.push_back(pid);
  }
  std::vector<std::unique_ptr<Worker>> workers;
  for (int k = 0; k < kThreads; ++k) workers.push_back(std::make_unique<Worker>(k, root, deadline));
  // A watchdog: if the workers hang (a request the daemon never answers), abort
  // the connection so they fail with ENOTCONN instead of hanging the test.
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  std::atomic<bool> watchdog_fired{false};
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    if (cv.wait_until(lock, deadline + std::chrono::seconds(90), [&] { return finished; })) return;
    watchdog_fired = true;
    MountEntry e;
    if (FindMount(root, &e)) {
      std::ofstream abort_file("/sys/fs/fuse/connections/" + std::to_string(e.dev_minor) + "/abort");
      abort_file << "1";
    }
  });
  {
    std::vector<std::thread> threads;
    for (auto& w : workers) threads.emplace_back([&w] { w->Run(); });
    for (auto& t : threads) t.join();
  }
  for (size_t p = 0; p < children.size(); ++p) {
    int status = 0;
    waitpid(children[p], &status, 0);
    const int id = kThreads + static_cast<int>(p);
    auto w = std::make_unique<Worker>(id, root, deadline);
    std::string error;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ADD_FAILURE() << "worker process " << id << " ended with status " << status;
    } else if (!LoadWorker(results + "/w" + std::to_string(id), w.get(), &error)) {
      ADD_FAILURE() << error;
    }
    unlink((results + "/w" + std::to_string(id)).c_str());
    workers.push_back(std::move(w));
  }
  rmdir(results.c_str());
  {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
  }
  cv.notify_all();
  watchdog.join();
  EXPECT_FALSE(watchdog_fired) << "workers hung for 90 s past the deadline; the connection was aborted";
  const double ran = std::chrono::duration<double>(Clock::now() - start).count();

  // Every call's result, as each worker checked it.
  std::map<std::string, uint64_t> totals;
  uint64_t vanished = 0;
  for (auto& w : workers) {
    for (const std::string& e : w->errors()) ADD_FAILURE() << e;
    for (const auto& [op, n] : w->counts().ok) totals[op] += n;
    vanished += w->counts().others_vanished;
  }
  std::cout << "stress: " << kThreads << " threads + " << kProcesses << " processes for " << ran << " s:";
  for (const auto& [op, n] : totals) std::cout << " " << op << "=" << n;
  std::cout << " others_vanished=" << vanished << std::endl;
  EXPECT_GT(totals["create"], 0u);
  EXPECT_GT(totals["move"], 0u);
  EXPECT_GT(totals["read_others"], 0u);

  // The tree must be exactly the union of the models.
  struct Want {
    int worker;
    uint64_t token;
    FileContent content;
  };
  std::map<std::string, Want> want_files;
  std::set<std::string> want_dirs;
  for (size_t i = 0; i < workers.size(); ++i) {
    const Model& m = workers[i]->model();
    for (const auto& [name, token] : m.names) {
      ASSERT_TRUE(m.tokens.count(token)) << "model of worker " << i << " lacks token " << token;
      want_files[name] = Want{static_cast<int>(i), token, m.tokens.at(token)};
    }
    want_dirs.insert(m.dirs.begin(), m.dirs.end());
  }
  std::vector<std::string> dirs;
  for (int d = 0; d < kSharedDirs; ++d) dirs.push_back("shared/d" + std::to_string(d));
  for (int k = 0; k < kWorkers; ++k) dirs.push_back("priv/w" + std::to_string(k));
  std::set<std::string> found_files, found_dirs;
  std::map<std::pair<int, uint64_t>, std::set<ino_t>> inodes;
  std::map<std::pair<int, uint64_t>, nlink_t> nlinks;
  size_t bad = 0;
  for (const std::string& dir : dirs) {
    DIR* d = opendir((root + "/" + dir).c_str());
    ASSERT_NE(d, nullptr) << dir << ": " << ErrnoName(errno);
    std::vector<std::string> names;
    while (dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
    closedir(d);
    for (const std::string& n : names) {
      const std::string rel = dir + "/" + n;
      struct stat st {};
      if (lstat((root + "/" + rel).c_str(), &st) != 0) {
        ADD_FAILURE() << "lstat " << rel << ": " << ErrnoName(errno);
        continue;
      }
      if (S_ISDIR(st.st_mode)) {
        found_dirs.insert(rel);
        if (!want_dirs.count(rel)) {
          ADD_FAILURE() << "unexpected directory " << rel;
          ++bad;
        }
        DIR* sub = opendir((root + "/" + rel).c_str());
        int entries = 0;
        while (sub != nullptr && readdir(sub) != nullptr) ++entries;
        if (sub != nullptr) closedir(sub);
        EXPECT_EQ(entries, 2) << rel << " should be empty";
        continue;
      }
      found_files.insert(rel);
      auto it = want_files.find(rel);
      if (it == want_files.end()) {
        ADD_FAILURE() << "unexpected file " << rel << " (" << st.st_size << " bytes)";
        ++bad;
        continue;
      }
      const auto key = std::make_pair(it->second.worker, it->second.token);
      inodes[key].insert(st.st_ino);
      nlinks[key] = st.st_nlink;
      std::string data, error;
      if (!ReadFile(root + "/" + rel, &data, &error)) {
        ADD_FAILURE() << error;
        continue;
      }
      if (data != Content(it->second.content.seed, it->second.content.size)) {
        uint64_t seed = 0;
        std::string why = SelfCheck(data, &seed);
        ADD_FAILURE() << rel << ": contents differ from the record (" << data.size() << " bytes, expected "
                      << it->second.content.size << "): " << (why.empty() ? "holds another intact file" : why);
        ++bad;
      }
    }
  }
  for (const auto& [name, w] : want_files) {
    if (!found_files.count(name)) {
      ADD_FAILURE() << "lost file " << name << " (worker " << w.worker << ")";
      ++bad;
    }
  }
  for (const std::string& name : want_dirs) {
    if (!found_dirs.count(name)) {
      ADD_FAILURE() << "lost directory " << name;
      ++bad;
    }
  }
  std::map<std::pair<int, uint64_t>, size_t> group_sizes;
  for (const auto& [name, w] : want_files) ++group_sizes[{w.worker, w.token}];
  for (const auto& [key, ids] : inodes) {
    EXPECT_EQ(ids.size(), 1u) << "names of one hard-link group (worker " << key.first << ") have different inodes";
    EXPECT_EQ(nlinks[key], group_sizes[key]) << "nlink of a hard-link group of worker " << key.first;
  }
  std::cout << "stress: verified " << found_files.size() << " files and " << found_dirs.size()
            << " directories against the record; " << bad << " problems" << std::endl;

  // No leaks: memfs's statfs counts live inodes (f_files - f_ffree) and bytes
  // in use (f_blocks - f_bfree, in 4 KiB blocks); both must match the tree
  // exactly once the kernel's asynchronous FORGETs and RELEASEs are in.
  uint64_t want_inodes = 1 + 2 + kSharedDirs + kWorkers + want_dirs.size() + group_sizes.size();
  uint64_t want_blocks = 0;
  for (const auto& [key, n] : group_sizes) {
    (void)n;
    const FileContent& fc = workers[static_cast<size_t>(key.first)]->model().tokens.at(key.second);
    want_blocks += (fc.size + 4095) / 4096;
  }
  uint64_t live_inodes = 0, used_blocks = 0;
  const auto audit_deadline = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    struct statfs sf {};
    ASSERT_SYS(statfs(root.c_str(), &sf));
    live_inodes = sf.f_files - sf.f_ffree;
    used_blocks = sf.f_blocks - sf.f_bfree;
    if ((live_inodes == want_inodes && used_blocks == want_blocks) || Clock::now() >= audit_deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(live_inodes, want_inodes) << "live inodes per statfs vs. the tree (leaked or lost inodes)";
  EXPECT_EQ(used_blocks, want_blocks) << "4 KiB blocks in use per statfs vs. the files' sizes";
  // TearDown: SIGTERM, exit 0, mount gone, no "efused: error:" line.
}


// Signals and an unmount in the middle of load: client threads read a large
// file, stat and create/unlink while another thread keeps sending them a
// signal with a handler (no SA_RESTART), so requests in flight are
// interrupted (the kernel sends INTERRUPT); halfway through, the daemon gets
// SIGTERM and unmounts under load (lazily: files are open). Nothing may hang:
// every client stops, the daemon exits 0 and no mount is left. Until the
// unmount, every read returns the right bytes (or EINTR).
std::atomic<uint64_t> g_signals_handled{0};
void CountSignal(int) { g_signals_handled.fetch_add(1, std::memory_order_relaxed); }

TEST_F(StressTest, InterruptsAndUnmountUnderLoadNeverHang) {
  const int seconds = std::max(4, StressSeconds() / 2);
  const std::string root = mount_.path();
  constexpr size_t kFileSize = 8 << 20, kChunk = 1 << 20;
  const std::string big = root + "/big";
  {
    std::vector<uint8_t> data(kFileSize);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i * 131) >> 8);
    UniqueFd fd(open(big.c_str(), O_CREAT | O_WRONLY, 0644));
    ASSERT_SYS(fd.get());
    ASSERT_EQ(pwrite(fd.get(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  }
  struct sigaction sa {};
  sa.sa_handler = CountSignal;  // no SA_RESTART: interrupted calls may see EINTR
  sigemptyset(&sa.sa_mask);
  struct sigaction old {};
  ASSERT_SYS(sigaction(SIGUSR2, &sa, &old));

  std::atomic<bool> unmounting{false}, stop{false};
  std::atomic<uint64_t> ok_reads{0}, bad_reads{0}, failed_after_unmount{0};
  std::mutex err_mu;
  std::vector<std::string> errors;
  auto record = [&](const std::string& e) {
    std::lock_guard<std::mutex> l(err_mu);
    if (errors.size() < 20) errors.push_back(e);
  };
  constexpr int kClients = 8;
  std::vector<pthread_t> handles(kClients);
  std::vector<std::thread> clients;
  std::atomic<int> ready{0};
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      handles[c] = pthread_self();
      ready.fetch_add(1);
      std::vector<uint8_t> buf(kChunk);
      uint64_t n = 0;
      while (!stop.load()) {
        ++n;
        const bool before = !unmounting.load();
        int fd = open(big.c_str(), O_RDONLY);
        if (fd < 0) {
          if (before && errno != EINTR) record("open big: " + ErrnoName(errno));
          if (!before) failed_after_unmount.fetch_add(1);
          continue;
        }
        const off_t off = static_cast<off_t>(((n * 7 + c) % (kFileSize / kChunk)) * kChunk);
        ssize_t got = pread(fd, buf.data(), buf.size(), off);
        if (got == static_cast<ssize_t>(kChunk)) {
          bool same = true;
          for (size_t i = 0; i < kChunk && same; i += 4093)
            same = buf[i] == static_cast<uint8_t>(((off + i) * 131) >> 8);
          (same ? ok_reads : bad_reads).fetch_add(1);
          if (!same) record("torn read at " + std::to_string(off));
        } else if (got < 0 && errno != EINTR && before) {
          record("pread: " + ErrnoName(errno));
        }
        close(fd);
        if (before) {
          const std::string name = root + "/c" + std::to_string(c) + "_" + std::to_string(n % 16);
          int f = open(name.c_str(), O_CREAT | O_WRONLY, 0644);
          if (f >= 0) close(f);
          struct stat st;
          stat(name.c_str(), &st);
          unlink(name.c_str());
        }
      }
    });
  }
  while (ready.load() < kClients) std::this_thread::yield();
  std::thread signaller([&] {
    uint64_t i = 0;
    while (!stop.load()) {
      pthread_kill(handles[i++ % kClients], SIGUSR2);
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });

  std::this_thread::sleep_for(std::chrono::seconds(seconds) / 2);
  StatusReader status(&mount_);
  std::map<std::string, uint64_t> counts;
  EXPECT_TRUE(status.Counts(&counts));
  // The kernel withdraws a queued INTERRUPT when its request ends first: on
  // a loaded machine the load runs on, up to 30 s, until one gets through.
  for (const auto give_up = Clock::now() + std::chrono::seconds(30);
       counts["INTERRUPT"] == 0 && Clock::now() < give_up;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    EXPECT_TRUE(status.Counts(&counts));
  }
  unmounting.store(true);
  const auto term = Clock::now();
  mount_.Signal(SIGTERM);
  int exit_status = 0;
  const bool exited = mount_.WaitExit(std::chrono::seconds(20), &exit_status);
  const double exit_seconds = std::chrono::duration<double>(Clock::now() - term).count();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop.store(true);
  signaller.join();
  for (std::thread& t : clients) t.join();  // a hang here is a test timeout
  sigaction(SIGUSR2, &old, nullptr);

  EXPECT_TRUE(exited) << "efused did not exit within 20 s of SIGTERM under load" << mount_.LogForMessage();
  if (exited) {
    EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
        << "efused ended with status " << exit_status << mount_.LogForMessage();
  }
  EXPECT_FALSE(FindMount(root)) << "a mount is left at " << root;
  std::istringstream log(mount_.Log());
  for (std::string line; std::getline(log, line);)
    EXPECT_FALSE(IsDaemonErrorLine(line)) << "the daemon logged an error: " << line;
  EXPECT_GT(g_signals_handled.load(), 100u);
  EXPECT_GT(counts["INTERRUPT"], 0u) << "no INTERRUPT reached the daemon";
  EXPECT_GT(ok_reads.load(), 0u);
  EXPECT_EQ(bad_reads.load(), 0u);
  for (const std::string& e : errors) ADD_FAILURE() << "before the unmount: " << e;
  std::cout << "interrupt stress: " << g_signals_handled.load() << " signals, "
            << counts["INTERRUPT"] << " INTERRUPT requests, " << ok_reads.load()
            << " verified 1 MiB reads; daemon exited " << exit_seconds << " s after SIGTERM; "
            << failed_after_unmount.load() << " opens failed after the unmount" << std::endl;
}

}  // namespace
}  // namespace efuse::testing
