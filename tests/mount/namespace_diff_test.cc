// tests/mount/namespace_diff_test.cc — the mount's namespace against the
// kernel's own tmpfs: the same random operations on both, compared.
//
// A differential test: a seeded random sequence of create, mkdir, unlink,
// rmdir, rename (plain, RENAME_NOREPLACE, RENAME_EXCHANGE), link, symlink,
// rewrite, read-after-unlink, chmod and user.* xattrs (set, create,
// replace, remove) runs on the mount and on a reference
// directory on tmpfs. Paths are drawn from a small universe (components
// a..e, up to three deep), so operations collide: they replace, refuse
// (EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, EINVAL, EPERM...) and move whole
// subtrees. Every operation must give the same result and errno on both;
// every 25 operations, and at the end, each path of the universe must match:
// existence, whether mtime and ctime moved since the last comparison, type,
// size, link count, mode, content, symlink target, directory listing,
// extended attributes, and which paths are hard links of one file. For
// passthrough the source directory itself is compared too, so what the
// daemon did to the source is what the reference shows; and in one configuration a third of
// the operations change the source behind the mount's back (there a rename
// may meet ESTALE once, as the issue allows, and must then succeed after the
// tree is looked up again).
//
// NamespaceDiffConcurrentTest runs three such processes at once, each in its
// own subtree of both trees.
//
// A failure prints the seed and the last operations; EFUSE_NSDIFF_SEED=N
// reruns with another seed.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <deque>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"
#include "tests/mount/passthrough_sources.h"

namespace efuse::testing {
namespace {

constexpr int kOperations = 3000;
constexpr int kCompareEvery = 25;
constexpr char kComponents[] = "abcde";
constexpr int kMaxDepth = 3;

uint64_t Seed() { return NumberFromEnv("EFUSE_NSDIFF_SEED", 1130); }

// Every relative path of the universe: "a", "a/b", "a/b/c", ...
std::vector<std::string> Universe() {
  std::vector<std::string> paths;
  std::vector<std::string> level = {""};
  for (int depth = 1; depth <= kMaxDepth; ++depth) {
    std::vector<std::string> next;
    for (const std::string& parent : level) {
      for (const char* c = kComponents; *c != '\0'; ++c) {
        next.push_back(parent.empty() ? std::string(1, *c) : parent + "/" + *c);
      }
    }
    paths.insert(paths.end(), next.begin(), next.end());
    level = std::move(next);
  }
  return paths;
}

// One call's outcome: 0, or -1 and errno.
struct Outcome {
  long rc = 0;
  int err = 0;
  bool operator==(const Outcome& o) const { return rc == o.rc && err == o.err; }
  std::string Describe() const { return rc == -1 ? ErrnoName(err) : "ok (" + std::to_string(rc) + ")"; }
};
template <typename F>
Outcome Call(F f) {
  errno = 0;
  long rc = f();
  return Outcome{rc < 0 ? -1 : rc, rc < 0 ? errno : 0};
}

// What a tree showed at the last comparison (inode times) and shows now.
struct TreeState {
  struct Times {
    timespec mtime, ctime;
  };
  std::map<ino_t, Times> before, now;
  std::map<ino_t, std::string> first_link;  // per comparison: hard links
};
bool SameTime(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

// What one path shows, as text (compared between the trees). Times are
// compared as "moved since the last comparison or not" (new inodes count as
// moved), which tmpfs and the mount must agree on.
std::string Describe(const std::string& root, const std::string& rel, TreeState* state) {
  const std::string p = root + "/" + rel;
  struct stat st {};
  if (lstat(p.c_str(), &st) != 0) return "absent (" + ErrnoName(errno) + ")";
  std::ostringstream d;
  auto* first_link = &state->first_link;
  {
    auto it = state->before.find(st.st_ino);
    const bool known = it != state->before.end();
    d << (known && SameTime(it->second.mtime, st.st_mtim) ? "mtime kept, " : "mtime moved, ")
      << (known && SameTime(it->second.ctime, st.st_ctim) ? "ctime kept; " : "ctime moved; ");
    state->now[st.st_ino] = {st.st_mtim, st.st_ctim};
  }
  if (S_ISREG(st.st_mode)) {
    std::string content, error;
    if (!ReadFile(p, &content, &error)) content = "<unreadable: " + error + ">";
    d << "file size " << st.st_size << " nlink " << st.st_nlink << " content '" << content << "'";
    // Hard links: the first path (in universe order) showing this inode.
    auto [it, fresh] = first_link->emplace(st.st_ino, rel);
    if (!fresh) d << " same file as " << it->second;
  } else if (S_ISLNK(st.st_mode)) {
    char target[256];
    ssize_t n = readlink(p.c_str(), target, sizeof(target));
    d << "symlink -> '" << std::string(target, n > 0 ? n : 0) << "' nlink " << st.st_nlink;
    auto [it, fresh] = first_link->emplace(st.st_ino, rel);
    if (!fresh) d << " same file as " << it->second;
  } else if (S_ISDIR(st.st_mode)) {
    std::set<std::string> names;
    if (DIR* dir = opendir(p.c_str())) {
      while (dirent* e = readdir(dir)) names.insert(e->d_name);
      closedir(dir);
    }
    d << "dir nlink " << st.st_nlink << " entries";
    for (const std::string& n : names) d << " " << n;
  } else {
    d << "mode " << std::oct << st.st_mode;
  }
  d << " perm " << std::oct << (st.st_mode & 07777) << std::dec;
  // Extended attributes, sorted by name, with their values.
  char names[4096];
  const ssize_t len = llistxattr(p.c_str(), names, sizeof(names));
  std::set<std::string> sorted;
  for (ssize_t i = 0; i < len; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) sorted.insert(names + i);
  for (const std::string& name : sorted) {
    char value[256];
    const ssize_t n = lgetxattr(p.c_str(), name.c_str(), value, sizeof(value));
    d << " xattr " << name << "='" << std::string(value, n > 0 ? n : 0) << "'";
  }
  return d.str();
}

struct NsConfig {
  const char* name;
  std::string source;  // passthrough: the source directory ("" for memfs)
  std::vector<std::string> flags;
  // A third of the operations go to the source directly, behind the
  // mount's back; the mount must show them (run with lifetimes 0).
  bool behind_back = false;
  // Everything runs as an unprivileged user (kUser) who owns both roots: the
  // chmods then make searches, reads and writes fail with EACCES, which the
  // mount must report where tmpfs does.
  bool as_user = false;
};
constexpr uid_t kUser = 1003;
constexpr gid_t kUserGroup = 1003;
void PrintTo(const NsConfig& c, std::ostream* os) { *os << c.name; }
NsConfig Memfs(const char* name, std::vector<std::string> extra) { return {name, "", std::move(extra)}; }
NsConfig Passthrough(const char* name, const std::vector<std::string>& extra, bool behind_back = false) {
  return {name, PassthroughSourceDir(name), PassthroughFlags(name, extra), behind_back};
}
NsConfig AsUser(NsConfig c) {
  c.as_user = true;
  return c;
}

class NamespaceDiffTest : public MountTest, public ::testing::WithParamInterface<NsConfig> {
 protected:
  std::vector<std::string> DaemonFlags() const override {
    return WithFlags({"--size=1G"}, GetParam().flags);
  }
  void SetUp() override {
    umask(022);
    MountTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    char tmpl[] = "/dev/shm/efuse-nsdiff-XXXXXX";  // tmpfs: the kernel's reference
    ASSERT_NE(mkdtemp(tmpl), nullptr) << ErrnoName(errno);
    reference_ = tmpl;
    UseRoots("");
    rng_.seed(Seed());
  }
  void TearDown() override {
    if (!reference_.empty()) {
      (void)std::system(("rm -rf '" + reference_ + "'").c_str());
    }
    MountTest::TearDown();
  }

  uint64_t Below(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  // Half the time a path that exists in the reference, else mostly a name
  // in an existing directory (new or not), sometimes any path.
  std::string PickPath() {
    std::vector<std::string> existing, dirs = {""};
    struct stat st;
    for (const std::string& p : universe_) {
      if (lstat((reference_root_ + "/" + p).c_str(), &st) != 0) continue;
      existing.push_back(p);
      if (S_ISDIR(st.st_mode) && std::count(p.begin(), p.end(), '/') + 1 < kMaxDepth) dirs.push_back(p);
    }
    max_existing_ = std::max(max_existing_, existing.size());
    const uint64_t choice = Below(10);
    if (!existing.empty() && choice < 5) return existing[Below(existing.size())];
    if (choice < 9) {
      const std::string& dir = dirs[Below(dirs.size())];
      const std::string name(1, kComponents[Below(sizeof(kComponents) - 1)]);
      return dir.empty() ? name : dir + "/" + name;
    }
    return universe_[Below(universe_.size())];
  }

  void Trace(const std::string& line) {
    trace_.push_back(line);
    if (trace_.size() > 30) trace_.pop_front();
  }
  std::string Context() const {
    std::ostringstream m;
    m << "\n  config " << GetParam().name << ", seed " << Seed() << "; last operations:\n";
    for (const std::string& t : trace_) m << "    " << t << "\n";
    return m.str();
  }

  // Runs op(root) on the mount (or, behind its back, on the source) and on
  // the reference; both must agree. A rename may meet ESTALE after a
  // directory moved behind the mount's back: the kernel still has the
  // directory's old dentry, and cannot move it while the rename holds the
  // rename lock (d_splice_alias in fs/dcache.c). The walk of the tree that
  // follows looks the old path up again, after which the same rename must
  // give what tmpfs gives.
  template <typename Op>
  bool Both(const std::string& what, Op op, bool is_rename = false) {
    const bool on_source = GetParam().behind_back && Below(3) == 0;
    Outcome on_mount = op(on_source ? source_root_ : mount_root_);
    if (!on_source && is_rename && GetParam().behind_back && on_mount == Outcome{-1, ESTALE}) {
      ++stale_renames_;
      Trace(std::to_string(ops_ + 1) + ": " + what + " -> ESTALE on the mount; walking the tree, then again");
      if (!CompareTrees("after ESTALE")) return false;
      on_mount = op(mount_root_);
    }
    const Outcome on_reference = op(reference_root_);
    Trace(std::to_string(++ops_) + ": " + (on_source ? "in the source: " : "") + what + " -> " +
          on_reference.Describe());
    if (on_reference.rc == 0) ++succeeded_;
    else ++errors_[on_reference.err];
    if (on_mount == on_reference) return true;
    return Report(what + ": the mount gave " + on_mount.Describe() + ", tmpfs gave " + on_reference.Describe() +
                  Context());
  }

  // Each path of the universe, on the mount (and the source) as on tmpfs.
  bool CompareTrees(const char* when) {
    for (TreeState* t : {&mount_state_, &reference_state_, &source_state_}) {
      t->now.clear();
      t->first_link.clear();
    }
    for (const std::string& rel : universe_) {
      const std::string want = Describe(reference_root_, rel, &reference_state_);
      const std::string got = Describe(mount_root_, rel, &mount_state_);
      if (got != want) {
        return Report(std::string(when) + ": " + rel + " on the mount: " + got + "\n  on tmpfs: " + want + Context());
      }
      if (!source_root_.empty()) {
        const std::string source = Describe(source_root_, rel, &source_state_);
        if (source != want) {
          return Report(std::string(when) + ": " + rel + " in the source: " + source + "\n  on tmpfs: " + want +
                        Context());
        }
      }
    }
    for (TreeState* t : {&mount_state_, &reference_state_, &source_state_}) t->before.swap(t->now);
    // tmpfs stamps times from a coarse clock: a change in the same tick as
    // the times just read could leave them equal there and not here.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return true;
  }

  bool Step() {
    const std::string a = PickPath(), b = PickPath();
    const std::string content = "c" + std::to_string(ops_);
    auto at = [](const std::string& root, const std::string& rel) { return root + "/" + rel; };
    switch (Below(15)) {
      case 0:
      case 1:
        return Both("create " + a, [&](const std::string& r) {
          return Call([&] {
            int fd = open(at(r, a).c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0) return -1L;
            long rc = write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) ? 0 : -1;
            close(fd);
            return rc;
          });
        });
      case 2:
      case 3:
        return Both("mkdir " + a, [&](const std::string& r) {
          return Call([&] { return static_cast<long>(mkdir(at(r, a).c_str(), 0755)); });
        });
      case 4:
        return Both("unlink " + a, [&](const std::string& r) {
          return Call([&] { return static_cast<long>(unlink(at(r, a).c_str())); });
        });
      case 5:
        return Both("rmdir " + a, [&](const std::string& r) {
          return Call([&] { return static_cast<long>(rmdir(at(r, a).c_str())); });
        });
      case 6:
      case 7: {
        static constexpr struct {
          unsigned flags;
          const char* name;
        } kKinds[] = {{0, "rename"}, {RENAME_NOREPLACE, "rename noreplace"}, {RENAME_EXCHANGE, "rename exchange"}};
        const auto& k = kKinds[Below(3)];
        return Both(std::string(k.name) + " " + a + " " + b, [&](const std::string& r) {
          return Call([&] {
            return syscall(SYS_renameat2, AT_FDCWD, at(r, a).c_str(), AT_FDCWD, at(r, b).c_str(), k.flags);
          });
        }, /*is_rename=*/true);
      }
      case 8:
        return Both("link " + a + " " + b, [&](const std::string& r) {
          return Call([&] { return static_cast<long>(link(at(r, a).c_str(), at(r, b).c_str())); });
        });
      case 9:
        return Both("symlink " + a + " -> " + content, [&](const std::string& r) {
          return Call([&] { return static_cast<long>(symlink(content.c_str(), at(r, a).c_str())); });
        });
      case 10:
        return Both("rewrite " + a, [&](const std::string& r) {
          return Call([&] {
            int fd = open(at(r, a).c_str(), O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) return -1L;
            long rc = write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) ? 0 : -1;
            close(fd);
            return rc;
          });
        });
      case 11: {
        // An open file outlives its name: unlink, then read through the fd.
        std::string read_back[2];
        int side = 0;
        bool same = Both("open, unlink, read " + a, [&](const std::string& r) {
          std::string& got = read_back[side++];
          return Call([&] {
            int fd = open(at(r, a).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) return -1L;
            long rc = unlink(at(r, a).c_str());
            char buf[64];
            ssize_t n = pread(fd, buf, sizeof(buf), 0);
            if (n > 0) got.assign(buf, n);
            close(fd);
            return rc;
          });
        });
        if (same && read_back[0] != read_back[1]) {
          return Report("read after unlink of " + a + ": the mount gave '" + read_back[0] + "', tmpfs '" +
                        read_back[1] + "'" + Context());
        }
        return same;
      }
      case 13: {
        // A few names, so sets replace and removes find something.
        const std::string name = "user.k" + std::to_string(Below(3));
        static constexpr struct {
          int flags;
          const char* name;
        } kModes[] = {{0, "set"}, {XATTR_CREATE, "create"}, {XATTR_REPLACE, "replace"}};
        const auto& m = kModes[Below(3)];
        return Both(std::string("setxattr ") + m.name + " " + a + " " + name + "=" + content,
                    [&](const std::string& r) {
                      return Call([&] {
                        return static_cast<long>(
                            lsetxattr(at(r, a).c_str(), name.c_str(), content.data(), content.size(), m.flags));
                      });
                    });
      }
      case 14: {
        const std::string name = "user.k" + std::to_string(Below(3));
        return Both("removexattr " + a + " " + name, [&](const std::string& r) {
          return Call([&] { return static_cast<long>(lremovexattr(at(r, a).c_str(), name.c_str())); });
        });
      }
      default:
      {
        // Mostly modes that let the owner in; some take away search (x) or
        // write permission, which matters when running as kUser.
        static constexpr mode_t kModes[] = {0755, 0755, 0700, 0711, 0644, 0555, 0600};
        const mode_t mode = kModes[Below(std::size(kModes))];
        std::ostringstream what;
        what << "chmod " << std::oct << mode << " " << a;
        return Both(what.str(), [&](const std::string& r) {
          return Call([&] { return static_cast<long>(chmod(at(r, a).c_str(), mode)); });
        });
      }
    }
  }

  // A failure: to GoogleTest, or from the unprivileged child to its parent.
  bool Report(const std::string& message) {
    if (child_ != nullptr) {
      child_->Fail(message, __FILE__, __LINE__);
    } else {
      ADD_FAILURE() << message;
    }
    return false;
  }

  // The whole run: operations, comparisons, and checks that the mix did what
  // it is for (many operations changed the trees, many were refused, and the
  // trees grew deep enough for subtree moves).
  void Run() {
    for (int i = 0; i < kOperations; ++i) {
      if (!Step()) return;
      if (i % kCompareEvery == kCompareEvery - 1 && !CompareTrees("compared")) return;
    }
    if (!CompareTrees("at the end")) return;
    std::ostringstream refused;
    for (auto [err, n] : errors_) refused << " " << ErrnoName(err) << " x" << n;
    if (succeeded_ <= kOperations / 10) Report("only " + std::to_string(succeeded_) + " operations succeeded");
    if (errors_.size() < 5) Report("too few kinds of refusal:" + refused.str());
    if (max_existing_ < 15) Report("the trees stayed small: " + std::to_string(max_existing_) + " paths");
    std::cout << "  " << succeeded_ << " of " << kOperations << " operations succeeded, at most "
              << max_existing_ << " paths existed; refused:" << refused.str()
              << "; renames that met ESTALE once: " << stale_renames_ << std::endl;
  }

  // Operations and comparisons happen below `sub` ("" for the whole trees).
  void UseRoots(const std::string& sub) {
    const std::string tail = sub.empty() ? "" : "/" + sub;
    mount_root_ = mount_.path() + tail;
    reference_root_ = reference_ + tail;
    source_root_ = GetParam().source.empty() ? "" : GetParam().source + tail;
  }

  ChildChecks* child_ = nullptr;  // set while running in a child process
  std::string mount_root_, reference_root_, source_root_;
  TreeState mount_state_, reference_state_, source_state_;
  std::vector<std::string> universe_ = Universe();
  std::string reference_;
  std::mt19937_64 rng_;
  std::deque<std::string> trace_;
  int ops_ = 0;
  int succeeded_ = 0;
  std::map<int, int> errors_;  // errno -> how often tmpfs refused with it
  size_t max_existing_ = 0;
  int stale_renames_ = 0;  // renames that met ESTALE once (behind_back only)
};

TEST_P(NamespaceDiffTest, RandomOperationsMatchTmpfs) {
  if (!GetParam().as_user) {
    Run();
    return;
  }
  std::vector<std::string> roots = {mount_.path(), reference_};
  if (!GetParam().source.empty()) roots.push_back(GetParam().source);
  for (const std::string& root : roots) ASSERT_SYS(chown(root.c_str(), kUser, kUserGroup));
  const Creds user{kUser, kUserGroup, {}};
  ASSERT_TRUE(RunInChild(
      [&](ChildChecks& c) {
        child_ = &c;
        umask(022);
        Run();
      },
      &user, std::chrono::seconds(240)));
}

// Three processes at once, each making its own random operations in its own
// subtree of both trees: the daemon serves them concurrently (its inode
// table, names and links), and each subtree must end as on tmpfs.
class NamespaceDiffConcurrentTest : public NamespaceDiffTest {};

TEST_P(NamespaceDiffConcurrentTest, ProcessesInTheirOwnSubtreesMatchTmpfs) {
  constexpr int kProcesses = 3;
  const std::string report_prefix = "/tmp/efuse-nsdiff-" + std::to_string(getpid()) + "-";
  std::vector<pid_t> pids;
  for (int k = 0; k < kProcesses; ++k) {
    const std::string sub = "p" + std::to_string(k);
    for (const std::string& root : {mount_.path(), reference_}) ASSERT_SYS(mkdir((root + "/" + sub).c_str(), 0755));
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << ErrnoName(errno);
    if (pid == 0) {
      alarm(240);
      ChildChecks checks;
      child_ = &checks;
      UseRoots(sub);
      rng_.seed(Seed() * 7 + k);
      Run();
      std::string error;
      WriteFile(report_prefix + std::to_string(k), checks.failures(), &error);
      _exit(checks.failures().empty() ? 0 : 1);
    }
    pids.push_back(pid);
  }
  for (int k = 0; k < kProcesses; ++k) {
    int status = 0;
    ASSERT_EQ(waitpid(pids[k], &status, 0), pids[k]);
    std::string failures, error;
    const std::string report = report_prefix + std::to_string(k);
    ReadFile(report, &failures, &error);
    unlink(report.c_str());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "process " << k << " (wait status " << status << "):\n" << failures;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Diff, NamespaceDiffConcurrentTest,
    ::testing::Values(Memfs("memfs", {"--memfs_data=daemon"}),
                      Memfs("memfs_nocache", {"--memfs_data=daemon", "--entry_timeout=0", "--attr_timeout=0", "--offload=off"}),
                      Passthrough("disk_passthrough", {}),
                      Passthrough("disk_passthrough_tiny_fd_cache", {"--fd_cache=2"})),
    [](const ::testing::TestParamInfo<NsConfig>& info) { return std::string(info.param.name); });

INSTANTIATE_TEST_SUITE_P(
    Diff, NamespaceDiffTest,
    ::testing::Values(Memfs("memfs", {"--memfs_data=daemon"}),
                      // the daemon answers every lookup: no entry or attribute cache
                      Memfs("memfs_nocache", {"--memfs_data=daemon", "--entry_timeout=0", "--attr_timeout=0", "--offload=off"}),
                      // file data in a private tmpfs, through kernel passthrough
                      Memfs("memfs_kernel_data", {"--memfs_data=kernel"}),
                      Passthrough("disk_passthrough", {}),
                      Passthrough("tmpfs_passthrough_nocache", {"--entry_timeout=0", "--attr_timeout=0", "--offload=off"}),
                      // the smallest fd cache (one fd per shard, 16 in all,
                      // for up to ~60 inodes): inodes are reopened by their
                      // file handles all the time, and a reused inode number
                      // is told apart by the handle alone
                      Passthrough("disk_passthrough_tiny_fd_cache", {"--fd_cache=2"}),
                      // directories opened with OPENDIR (by default, without:
                      // the kernel keeps listings until a change)
                      Passthrough("disk_passthrough_dir_handles", {"--dir_handles=on"}),
                      Passthrough("disk_changed_behind_the_mount_tiny_fd_cache",
                                  {"--fd_cache=2", "--entry_timeout=0", "--attr_timeout=0", "--offload=off"},
                                  /*behind_back=*/true),
                      // others change the source: names, attributes and data
                      // are asked again every time, so the mount must show
                      // each change at once, never a wrong or vanished file
                      // (ext4 reuses inode numbers of removed files at once)
                      Passthrough("disk_changed_behind_the_mount",
                                  {"--entry_timeout=0", "--attr_timeout=0", "--negative_timeout=0",
                                   "--offload=off"},
                                  /*behind_back=*/true),
                      // as an unprivileged user, with the kernel checking
                      // permissions as it does for tmpfs (default_permissions;
                      // passthrough adds it with allow_other). Without it
                      // memfs checks each request itself, and where several
                      // errors apply the kernel's own order of requests can
                      // pick another one (ENOENT of the first name before
                      // EACCES of the second parent): permission_test covers
                      // that mode case by case.
                      AsUser(Memfs("memfs_as_user", {"-o", "allow_other,default_permissions"})),
                      AsUser(Memfs("memfs_as_user_nocache",
                                   {"-o", "allow_other,default_permissions", "--entry_timeout=0",
                                    "--attr_timeout=0", "--offload=off"})),
                      AsUser(Passthrough("disk_passthrough_as_user", {"-o", "allow_other"})),
                      AsUser(Passthrough("disk_changed_behind_the_mount_as_user",
                                         {"-o", "allow_other", "--entry_timeout=0", "--attr_timeout=0",
                                          "--offload=off"},
                                         /*behind_back=*/true))),
    [](const ::testing::TestParamInfo<NsConfig>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace efuse::testing
