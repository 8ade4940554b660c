// tests/mount/privilege_diff_test.cc — setuid, setgid and file capabilities
// after an unprivileged user changes a file, on the mount against the
// kernel's own file systems.
//
// Each case prepares the same file three times as root — on the mount, on
// ext4 (/var/tmp) and on tmpfs (/dev/shm) — a copy of /usr/bin/id (it prints
// the effective uid and gid it runs with) or of /usr/bin/cat with a file
// capability, with setuid/setgid bits in every combination that matters;
// then an unprivileged user changes it through one path (pwrite, O_DIRECT,
// pwritev2 flags, O_APPEND, ftruncate, truncate, O_TRUNC, every fallocate
// mode, copy_file_range, a shared mapping, a write while root holds the file
// open, chown and chmod by the owner), and then, as an attacker would, looks
// and runs it: the mode seen through a cached stat (statx asking for the mode
// only, as `stat -c %A` does), whether security.capability is still there,
// and what the program prints when that user (or another) executes it. The
// mount must show what ext4 or tmpfs show (the two differ only where one
// refuses an operation), and for passthrough the source file must hold the
// mode and capability the mount shows, and the times the mount shows must be
// the source's.
//
// Further cases: files and directories created in setgid directories, ACL
// mask changes by an owner outside the file's group, the times after a store
// through a shared mapping (no msync), and access times on `-o noatime` and
// default (relatime) mounts after reads and exec.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <linux/falloc.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"
#include "tests/mount/passthrough_sources.h"

namespace efuse::testing {
namespace {

constexpr uid_t kWriter = 1101;  // the unprivileged user who changes files
constexpr gid_t kWriterGroup = 1101;
constexpr uid_t kOther = 1102;  // runs what kWriter owns
constexpr gid_t kOtherGroup = 1102;
constexpr const char* kIdProgram = "/usr/bin/id";
constexpr const char* kCatProgram = "/usr/bin/cat";
constexpr size_t kBlock = 4096;

struct PrivConfig {
  const char* name;
  std::string source;  // passthrough: the source directory ("" for memfs)
  std::vector<std::string> flags;
  // The daemon writes file data to the source with write(2): a page written
  // back from a shared mapping then loses its file capability in the source
  // (the source kernel removes it on every write), where a local file system
  // keeps it. Stricter, never laxer: accepted for that one case.
  bool daemon_writes_pages = false;
  // The writeback cache: the kernel stamps mtime and ctime itself, before
  // the data reaches the source (and ctime cannot be set there), so the
  // mount's times are the kernel's, not the source's.
  bool kernel_owns_times = false;
  // File data goes through the daemon without the writeback cache (memfs,
  // passthrough --passthrough=off --writeback_cache=false): a store through
  // a shared mapping reaches the daemon when its page is written back, and
  // the kernel keeps no times of its own for such files (S_NOCMTIME), so
  // mtime and ctime move at msync (or writeback), not at the store.
  bool mapped_stores_at_writeback = false;
};
void PrintTo(const PrivConfig& c, std::ostream* os) { *os << c.name; }
PrivConfig Memfs(const char* name, std::vector<std::string> extra) {
  PrivConfig c{name, "", WithFlags({"--size=256M"}, extra)};
  c.mapped_stores_at_writeback = true;
  return c;
}
// Stores through a mapping reach the tmpfs page at once, as with passthrough.
PrivConfig MemfsKernelData(const char* name, std::vector<std::string> extra) {
  return {name, "", WithFlags({"--size=256M", "--memfs_data=kernel"}, extra)};
}
PrivConfig Passthrough(const char* name, const std::vector<std::string>& extra, bool daemon_io = false,
                       bool writeback = false) {
  return {name, PassthroughSourceDir(name), PassthroughFlags(name, WithFlags({"-o", "allow_other"}, extra)),
          daemon_io, writeback};
}

std::string ReadAll(const std::string& path) {
  std::string data, error;
  EXPECT_TRUE(ReadFile(path, &data, &error)) << error;
  return data;
}

// Forks; the child drops to uid/gid (no supplementary groups) and exits with
// body()'s value (0 or an errno). Returns it, or -1 if the child died or
// did not finish within 20 s (then it is killed).
int AsUser(uid_t uid, gid_t gid, const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
      _exit(125);
    }
    _exit(body() & 0xff);
  }
  int status = 0;
  for (int i = 0; i < 2000; ++i) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    poll(nullptr, 0, 10);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

// Runs `path args...` as uid/gid (no supplementary groups); returns what
// it printed (only the lines starting with `keep`, if given), or
// "exec failed: ERRNO".
std::string ExecAs(uid_t uid, gid_t gid, const std::string& path, const std::vector<std::string>& args,
                   const std::string& keep = "") {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    int e = 0;
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
      e = errno;
    } else {
      std::vector<char*> argv{const_cast<char*>(path.c_str())};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(path.c_str(), argv.data());
      e = errno;
    }
    (void)!write(err[1], &e, sizeof e);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  std::string text;
  char buf[4096];
  struct pollfd p{out[0], POLLIN, 0};
  while (poll(&p, 1, 20000) > 0) {
    ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  int e = 0;
  const bool exec_failed = read(err[0], &e, sizeof e) == sizeof e;
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (exec_failed) return "exec failed: " + ErrnoName(e);
  if (keep.empty()) return text;
  std::istringstream lines(text);
  std::string line, kept;
  while (std::getline(lines, line)) {
    if (line.rfind(keep, 0) == 0) kept += line + "\n";
  }
  return kept;
}

// security.capability, version 2: cap_net_raw permitted and effective.
std::string NetRawCapability() {
  struct {
    uint32_t magic_etc;
    struct {
      uint32_t permitted, inheritable;
    } data[2];
  } cap{0x02000000u | 0x1u, {{1u << 13, 0}, {0, 0}}};  // VFS_CAP_REVISION_2 | EFFECTIVE, CAP_NET_RAW
  return std::string(reinterpret_cast<const char*>(&cap), sizeof cap);
}

bool HasCapabilityXattr(const std::string& path) {
  char v[64];
  return getxattr(path.c_str(), "security.capability", v, sizeof v) >= 0;
}

// A file to prepare: the program it is a copy of, owner, mode, capability.
struct FileSpec {
  const char* name;
  const char* program;
  uid_t uid;
  gid_t gid;
  mode_t mode;
  bool capability = false;
};

// What the user does to the file (as kWriter): 0 or an errno.
struct Action {
  const char* name;
  std::function<int(const std::string& file, const std::string& bytes_file)> run;
  // Root holds the file open read-only while the user acts (on passthrough:
  // the inode is in kernel passthrough mode before the writer opens it).
  bool root_holds_open = false;
};

int Errno0(bool ok) { return ok ? 0 : errno; }

// Writes the file's own first block back (it stays a working program).
int WriteOwnBlock(const std::string& file, int flags) {
  int fd = open(file.c_str(), flags);
  if (fd < 0) return errno;
  void* buf = nullptr;
  if (posix_memalign(&buf, kBlock, kBlock) != 0) return ENOMEM;
  int rc = 0;
  int rfd = open(file.c_str(), O_RDONLY);  // the user may read what it may write here
  if (rfd < 0 || pread(rfd, buf, kBlock, 0) != static_cast<ssize_t>(kBlock)) rc = EIO;
  if (rfd >= 0) close(rfd);
  if (rc == 0 && pwrite(fd, buf, kBlock, 0) != static_cast<ssize_t>(kBlock)) rc = errno;
  free(buf);
  close(fd);
  return rc;
}

std::vector<Action> WriteActions() {
  auto with_fd = [](int flags, std::function<int(int, const std::string&)> f) {
    return [flags, f](const std::string& file, const std::string& bytes) {
      int fd = open(file.c_str(), flags);
      if (fd < 0) return errno;
      const int rc = f(fd, bytes);
      close(fd);
      return rc;
    };
  };
  auto size_of = [](int fd) {
    struct stat st {};
    fstat(fd, &st);
    return st.st_size;
  };
  std::vector<Action> a;
  a.push_back({"pwrite", [](const std::string& f, const std::string&) { return WriteOwnBlock(f, O_RDWR); }});
  a.push_back({"pwrite_o_direct", [](const std::string& f, const std::string&) {
                 return WriteOwnBlock(f, O_RDWR | O_DIRECT);
               }});
  a.push_back({"pwritev2_dsync", with_fd(O_RDWR, [](int fd, const std::string&) {
                 char block[kBlock];
                 if (pread(fd, block, kBlock, 0) != static_cast<ssize_t>(kBlock)) return EIO;
                 struct iovec iov{block, kBlock};
                 return Errno0(pwritev2(fd, &iov, 1, 0, RWF_DSYNC) == static_cast<ssize_t>(kBlock));
               })});
  a.push_back({"pwritev2_append", with_fd(O_WRONLY, [](int fd, const std::string&) {
                 char zeros[64] = {};
                 struct iovec iov{zeros, sizeof zeros};
                 return Errno0(pwritev2(fd, &iov, 1, -1, RWF_APPEND) == sizeof zeros);
               })});
  a.push_back({"o_append_write", with_fd(O_WRONLY | O_APPEND, [](int fd, const std::string&) {
                 char zeros[16] = {};
                 return Errno0(write(fd, zeros, sizeof zeros) == sizeof zeros);
               })});
  a.push_back({"ftruncate_same_size", with_fd(O_WRONLY, [size_of](int fd, const std::string&) {
                 return Errno0(ftruncate(fd, size_of(fd)) == 0);
               })});
  a.push_back({"truncate_by_path", [](const std::string& f, const std::string&) {
                 struct stat st {};
                 if (stat(f.c_str(), &st) != 0) return errno;
                 return Errno0(truncate(f.c_str(), st.st_size + 4096) == 0);
               }});
  a.push_back({"open_o_trunc_and_rewrite", [](const std::string& f, const std::string& bytes) {
                 std::string data, error;
                 if (!ReadFile(bytes, &data, &error)) return EIO;
                 int fd = open(f.c_str(), O_WRONLY | O_TRUNC);
                 if (fd < 0) return errno;
                 const int rc = Errno0(PwriteAll(fd, data.data(), data.size(), 0));
                 close(fd);
                 return rc;
               }});
  a.push_back({"fallocate_extend", with_fd(O_WRONLY, [size_of](int fd, const std::string&) {
                 return Errno0(fallocate(fd, 0, size_of(fd), 4096) == 0);
               })});
  a.push_back({"fallocate_keep_size", with_fd(O_WRONLY, [size_of](int fd, const std::string&) {
                 return Errno0(fallocate(fd, FALLOC_FL_KEEP_SIZE, size_of(fd), 4096) == 0);
               })});
  a.push_back({"fallocate_punch_hole", with_fd(O_WRONLY, [size_of](int fd, const std::string&) {
                 return Errno0(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, size_of(fd), 4096) == 0);
               })});
  a.push_back({"fallocate_zero_range", with_fd(O_WRONLY, [size_of](int fd, const std::string&) {
                 return Errno0(fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, size_of(fd), 4096) == 0);
               })});
  a.push_back({"copy_file_range", with_fd(O_WRONLY, [](int fd, const std::string& bytes) {
                 int in = open(bytes.c_str(), O_RDONLY);
                 if (in < 0) return errno;
                 loff_t off_in = 0, off_out = 0;
                 const int rc = Errno0(copy_file_range(in, &off_in, fd, &off_out, kBlock, 0) == kBlock);
                 close(in);
                 return rc;
               })});
  a.push_back({"shared_mapping_store", with_fd(O_RDWR, [](int fd, const std::string&) {
                 void* p = mmap(nullptr, kBlock, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                 if (p == MAP_FAILED) return errno;
                 volatile char* c = static_cast<char*>(p);
                 c[100] = c[100];  // the same byte: a store, and still the same program
                 munmap(p, kBlock);
                 return 0;
               })});
  Action held{"pwrite_while_root_holds_it_open",
              [](const std::string& f, const std::string&) { return WriteOwnBlock(f, O_RDWR); }};
  held.root_holds_open = true;
  a.push_back(held);
  Action direct_held{"pwrite_o_direct_while_root_holds_it_open", [](const std::string& f, const std::string&) {
                       return WriteOwnBlock(f, O_RDWR | O_DIRECT);
                     }};
  direct_held.root_holds_open = true;
  a.push_back(direct_held);
  return a;
}

// Every file the write actions run on. kWriter may write each one (group
// or other write permission, or its owner), and the ones it may run it runs.
std::vector<FileSpec> WriteTargets() {
  return {
      {"setuid_root_group_writable", kIdProgram, 0, kWriterGroup, 04775},
      {"setuid_setgid_group_writable", kIdProgram, 0, kWriterGroup, 06775},
      {"setgid_group_exec", kIdProgram, 0, kWriterGroup, 02775},
      {"setgid_no_group_exec_member", kIdProgram, 0, kWriterGroup, 02765},
      {"setuid_setgid_other_writable", kIdProgram, 0, 0, 06777},
      {"setgid_no_group_exec_nonmember", kIdProgram, 0, 0, 02767},
      {"owner_setuid_setgid_no_exec", kIdProgram, kWriter, kWriterGroup, 06644},
      {"file_capability", kCatProgram, 0, 0, 0777, /*capability=*/true},
  };
}

// What one root shows after the action.
struct Outcome {
  int action = 0;         // the user's call: 0 or errno
  uint32_t mode = 0;      // through statx(STATX_MODE), the cached path
  bool capability = false;
  std::string exec;       // what running it printed
  bool operator==(const Outcome& o) const {
    return action == o.action && mode == o.mode && capability == o.capability && exec == o.exec;
  }
  std::string Describe() const {
    std::ostringstream s;
    s << "action " << (action == 0 ? std::string("ok") : ErrnoName(action)) << ", mode 0" << std::oct
      << mode << std::dec << ", security.capability " << (capability ? "present" : "absent") << ", exec printed '"
      << exec << "'";
    return s.str();
  }
};

uint32_t CachedMode(const std::string& path) {
  struct statx stx {};
  if (statx(AT_FDCWD, path.c_str(), 0, STATX_MODE, &stx) != 0) return 0xffffffff;
  return stx.stx_mode & 07777;
}

std::string RunProgram(const FileSpec& spec, const std::string& path, uid_t uid, gid_t gid) {
  if (spec.program == std::string(kCatProgram)) return ExecAs(uid, gid, path, {"/proc/self/status"}, "CapEff:");
  return ExecAs(uid, gid, path, {});
}

PrivConfig DataAtWriteback(PrivConfig c) {
  c.mapped_stores_at_writeback = true;
  return c;
}

class PrivilegeDiffTest : public MountTest, public ::testing::WithParamInterface<PrivConfig> {
 protected:
  std::vector<std::string> DaemonFlags() const override { return GetParam().flags; }
  void SetUp() override {
    umask(022);
    MountTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    for (const char* base : {"/var/tmp/efuse-privdiff-XXXXXX", "/dev/shm/efuse-privdiff-XXXXXX"}) {
      std::string tmpl = base;
      ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << ErrnoName(errno);
      ASSERT_SYS(chmod(tmpl.c_str(), 0755));
      references_.push_back(tmpl);
    }
    ASSERT_SYS(chmod(mount_.path().c_str(), 0755));
  }
  void TearDown() override {
    for (const std::string& r : references_) (void)std::system(("rm -rf '" + r + "'").c_str());
    MountTest::TearDown();
  }
  // The roots every case runs on: the mount first, then ext4 and tmpfs.
  std::vector<std::string> Roots() const {
    std::vector<std::string> roots{mount_.path()};
    roots.insert(roots.end(), references_.begin(), references_.end());
    return roots;
  }
  std::string SourcePath(const std::string& rel) const { return GetParam().source + "/" + rel; }
  bool IsPassthrough() const { return !GetParam().source.empty(); }

  // Makes `dir/name` as root from the spec, plus `dir/name.bytes` (0644,
  // the program's bytes, for copy_file_range and rewrites).
  void Prepare(const std::string& dir, const FileSpec& spec) {
    const std::string path = dir + "/" + spec.name;
    std::string error;
    const std::string bytes = ReadAll(spec.program);
    ASSERT_TRUE(WriteFile(path, bytes, &error, O_WRONLY | O_CREAT | O_TRUNC, 0700)) << error;
    ASSERT_TRUE(WriteFile(path + ".bytes", bytes, &error)) << error;
    ASSERT_SYS(chown(path.c_str(), spec.uid, spec.gid));
    ASSERT_SYS(chmod(path.c_str(), spec.mode));
    if (spec.capability) {
      const std::string cap = NetRawCapability();
      ASSERT_SYS(setxattr(path.c_str(), "security.capability", cap.data(), cap.size(), 0));
    }
    // The kernel (and the offload policy) may now hold what it saw.
    struct stat st {};
    for (int i = 0; i < 4; ++i) ASSERT_SYS(stat(path.c_str(), &st));
  }

  Outcome Run(const std::string& dir, const FileSpec& spec, const Action& action) {
    Outcome o;
    const std::string path = dir + "/" + spec.name;
    int held = -1;
    if (action.root_holds_open) held = open(path.c_str(), O_RDONLY);
    o.action = AsUser(kWriter, kWriterGroup, [&] { return action.run(path, path + ".bytes"); });
    if (held >= 0) close(held);
    o.mode = CachedMode(path);
    o.capability = HasCapabilityXattr(path);
    // The owner's own file is run by someone else; root's by the writer.
    const bool own = spec.uid == kWriter;
    o.exec = RunProgram(spec, path, own ? kOther : kWriter, own ? kOtherGroup : kWriterGroup);
    return o;
  }

  // The mount's outcome must be ext4's or tmpfs's; for passthrough the
  // source must hold what the mount shows, times included.
  void Compare(const std::string& what, const std::string& rel, const std::vector<Outcome>& got,
               bool page_writeback = false) {
    ASSERT_EQ(got.size(), 3u);
    bool same = got[0] == got[1] || got[0] == got[2];
    if (!same && page_writeback && GetParam().daemon_writes_pages && !got[0].capability) {
      // The one stricter answer allowed: the capability went (and with it
      // what running the program gains), all else as on ext4.
      Outcome without = got[1];
      without.capability = false;
      without.exec = got[0].exec;
      same = got[0] == without && got[0].exec.find("0000000000000000") != std::string::npos;
    }
    EXPECT_TRUE(same) << GetParam().name << ", " << what << ":\n  mount: " << got[0].Describe()
                      << "\n  ext4:  " << got[1].Describe() << "\n  tmpfs: " << got[2].Describe() << "\n"
                      << mount_.LogForMessage();
    if (!IsPassthrough()) return;
    const std::string mounted = mount_.Path(rel), source = SourcePath(rel);
    struct statx m {}, s {};
    ASSERT_SYS(statx(AT_FDCWD, mounted.c_str(), 0, STATX_BASIC_STATS, &m));
    ASSERT_SYS(statx(AT_FDCWD, source.c_str(), 0, STATX_BASIC_STATS, &s));
    EXPECT_EQ(m.stx_mode, s.stx_mode) << what << ": the mount shows a mode the source does not have";
    EXPECT_EQ(HasCapabilityXattr(mounted), HasCapabilityXattr(source)) << what;
    if (GetParam().kernel_owns_times) return;
    EXPECT_EQ(m.stx_mtime.tv_sec, s.stx_mtime.tv_sec) << what << ": mtime";
    EXPECT_EQ(m.stx_mtime.tv_nsec, s.stx_mtime.tv_nsec) << what << ": mtime";
    EXPECT_EQ(m.stx_ctime.tv_sec, s.stx_ctime.tv_sec) << what << ": ctime";
    EXPECT_EQ(m.stx_ctime.tv_nsec, s.stx_ctime.tv_nsec) << what << ": ctime";
  }

  std::vector<std::string> references_;
};

TEST_P(PrivilegeDiffTest, EveryWritePathMatchesLocalFileSystems) {
  int n = 0;
  for (const Action& action : WriteActions()) {
    for (const FileSpec& spec : WriteTargets()) {
      // Each case in its own directory, the same name on every root.
      const std::string sub = "c" + std::to_string(n++);
      std::vector<Outcome> got;
      for (const std::string& root : Roots()) {
        const std::string dir = root + "/" + sub;
        ASSERT_SYS(mkdir(dir.c_str(), 0755));
        Prepare(dir, spec);
        if (HasFatalFailure()) return;
        got.push_back(Run(dir, spec, action));
      }
      Compare(std::string(action.name) + " on " + spec.name, sub + "/" + spec.name, got,
              std::string(action.name) == "shared_mapping_store");
    }
  }
}

// chown(f, -1, -1) and chown to the owner's own group clear setuid (and
// setgid as Linux decides); chmod g+s by an owner outside the file's group
// is refused the setgid bit.
TEST_P(PrivilegeDiffTest, ChownAndChmodByTheOwner) {
  struct Case {
    const char* name;
    FileSpec spec;
    std::function<int(const std::string&)> run;
  };
  const std::vector<Case> cases = {
      {"chown_same_owner", {"f", kIdProgram, kWriter, kWriterGroup, 06775},
       [](const std::string& f) { return Errno0(chown(f.c_str(), -1, -1) == 0); }},
      {"chgrp_own_group", {"f", kIdProgram, kWriter, kWriterGroup, 06755},
       [](const std::string& f) { return Errno0(chown(f.c_str(), -1, kWriterGroup) == 0); }},
      {"chown_setgid_no_group_exec_foreign_group", {"f", kIdProgram, kWriter, 0, 02745},
       [](const std::string& f) { return Errno0(chown(f.c_str(), kWriter, -1) == 0); }},
      {"chmod_setgid_foreign_group", {"f", kIdProgram, kWriter, 0, 0755},
       [](const std::string& f) { return Errno0(chmod(f.c_str(), 02755) == 0); }},
      {"chmod_setuid_setgid_own_group", {"f", kIdProgram, kWriter, kWriterGroup, 0755},
       [](const std::string& f) { return Errno0(chmod(f.c_str(), 06755) == 0); }},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string sub = "o" + std::to_string(n++);
    std::vector<Outcome> got;
    for (const std::string& root : Roots()) {
      const std::string dir = root + "/" + sub;
      ASSERT_SYS(mkdir(dir.c_str(), 0755));
      Prepare(dir, c.spec);
      if (HasFatalFailure()) return;
      Action action{c.name, [&](const std::string& f, const std::string&) { return c.run(f); }};
      got.push_back(Run(dir, c.spec, action));
    }
    Compare(c.name, sub + "/f", got);
  }
}

// New files and directories in setgid directories: the group and the
// setgid bit they get, by a member and by a non-member.
TEST_P(PrivilegeDiffTest, SetgidDirectories) {
  int n = 0;
  struct Who {
    uid_t uid;
    gid_t gid;
  };
  for (const Who& who : {Who{kWriter, kWriterGroup}, Who{kOther, kOtherGroup}}) {
    const std::string sub = "d" + std::to_string(n++);
    std::vector<std::string> seen;
    for (const std::string& root : Roots()) {
      const std::string dir = root + "/" + sub;
      ASSERT_SYS(mkdir(dir.c_str(), 0755));
      ASSERT_SYS(chown(dir.c_str(), 0, kWriterGroup));
      ASSERT_SYS(chmod(dir.c_str(), 02777));
      const int rc = AsUser(who.uid, who.gid, [&] {
        umask(0);
        int fd = open((dir + "/file").c_str(), O_WRONLY | O_CREAT | O_EXCL, 02755);
        if (fd < 0) return errno;
        close(fd);
        if (mkdir((dir + "/sub").c_str(), 0755) != 0) return errno;
        fd = open((dir + "/sub/inner").c_str(), O_WRONLY | O_CREAT | O_EXCL, 02711);
        if (fd < 0) return errno;
        close(fd);
        return mknod((dir + "/sub/fifo").c_str(), S_IFIFO | 02770, 0) == 0 ? 0 : errno;
      });
      std::ostringstream s;
      s << "rc " << rc;
      for (const char* rel : {"file", "sub", "sub/inner", "sub/fifo"}) {
        struct stat st {};
        if (stat((dir + "/" + rel).c_str(), &st) != 0) {
          s << "; " << rel << " missing";
        } else {
          s << "; " << rel << " 0" << std::oct << (st.st_mode & 07777) << std::dec << " " << st.st_uid << ":"
            << st.st_gid;
        }
      }
      seen.push_back(s.str());
    }
    EXPECT_TRUE(seen[0] == seen[1] || seen[0] == seen[2])
        << GetParam().name << ", user " << who.uid << "\n  mount: " << seen[0] << "\n  ext4:  " << seen[1]
        << "\n  tmpfs: " << seen[2];
  }
}

// An access ACL set by the owner outside the file's group: the group bits
// become the mask and setgid goes; then a mask change moves the group bits.
TEST_P(PrivilegeDiffTest, AclMaskChanges) {
  // POSIX ACL xattr, version 2: (tag, perm, id) entries, sorted by tag.
  auto acl = [](uint16_t mask_perm) {
    struct Entry {
      uint16_t tag, perm;
      uint32_t id;
    };
    std::string v(4, '\0');
    const uint32_t version = 2;
    std::memcpy(v.data(), &version, 4);
    const Entry entries[] = {{0x01, 7, 0xffffffff},   // ACL_USER_OBJ rwx
                             {0x02, 5, kOther},       // ACL_USER kOther r-x
                             {0x04, 7, 0xffffffff},   // ACL_GROUP_OBJ rwx
                             {0x10, mask_perm, 0xffffffff},  // ACL_MASK
                             {0x20, 0, 0xffffffff}};  // ACL_OTHER ---
    for (const Entry& e : entries) v.append(reinterpret_cast<const char*>(&e), sizeof e);
    return v;
  };
  std::vector<std::string> seen;
  for (const std::string& root : Roots()) {
    const std::string dir = root + "/acl";
    ASSERT_SYS(mkdir(dir.c_str(), 0755));
    const FileSpec spec{"f", kIdProgram, kWriter, 0, 02770};
    Prepare(dir, spec);
    if (HasFatalFailure()) return;
    const std::string path = dir + "/f";
    std::ostringstream s;
    for (uint16_t mask : {uint16_t{5}, uint16_t{7}, uint16_t{1}}) {
      const std::string value = acl(mask);
      const int rc = AsUser(kWriter, kWriterGroup, [&] {
        return Errno0(setxattr(path.c_str(), "system.posix_acl_access", value.data(), value.size(), 0) == 0);
      });
      s << "mask " << mask << ": rc " << rc << " mode 0" << std::oct << CachedMode(path) << std::dec << "; ";
    }
    s << "other runs it: " << ExecAs(kOther, kOtherGroup, path, {});
    seen.push_back(s.str());
  }
  // memfs keeps no ACLs (EOPNOTSUPP, nothing changes); the others must match.
  if (GetParam().source.empty()) {
    EXPECT_NE(seen[0].find("rc 95"), std::string::npos) << seen[0];
    return;
  }
  EXPECT_TRUE(seen[0] == seen[1] || seen[0] == seen[2])
      << GetParam().name << "\n  mount: " << seen[0] << "\n  ext4:  " << seen[1] << "\n  tmpfs: " << seen[2];
  if (IsPassthrough()) {
    struct stat m {}, s {};
    ASSERT_SYS(stat(Path("acl/f").c_str(), &m));
    ASSERT_SYS(stat(SourcePath("acl/f").c_str(), &s));
    EXPECT_EQ(m.st_mode, s.st_mode);
  }
}

// A store through a shared mapping moves mtime and ctime (the kernel's
// page-fault path, no write(2), no msync): a stat right after shows it,
// as on ext4 and tmpfs. Where the store reaches the daemon only at
// writeback (mapped_stores_at_writeback), a stat right after msync does.
TEST_P(PrivilegeDiffTest, SharedMappingStoreShowsNewTimesAtOnce) {
  std::vector<std::string> seen;
  for (const std::string& root : Roots()) {
    const std::string path = root + "/mapped";
    std::string error;
    ASSERT_TRUE(WriteFile(path, std::string(2 * kBlock, 'a'), &error)) << error;
    const struct timespec past[2] = {{946684800, 0}, {946684800, 0}};  // 2000-01-01
    ASSERT_SYS(utimensat(AT_FDCWD, path.c_str(), past, 0));
    int fd;
    ASSERT_SYS(fd = open(path.c_str(), O_RDWR));
    struct statx before {}, after {};
    void* p = mmap(nullptr, kBlock, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED) << ErrnoName(errno);
    // Mapped, then looked at (mmap itself drops the cached atime, so this
    // stat asks): what the kernel caches now must not outlive the store.
    ASSERT_SYS(statx(AT_FDCWD, path.c_str(), 0, STATX_BASIC_STATS, &before));
    // A FUSE inode keeps coarse times (no multigrain timestamps, unlike
    // ext4 and tmpfs): a store in the clock tick of the last change leaves
    // ctime where it is. The store waits for the coarse clock to pass it.
    for (int spins = 0; spins < 1000000; ++spins) {
      struct timespec coarse {};
      clock_gettime(CLOCK_REALTIME_COARSE, &coarse);
      if (coarse.tv_sec > before.stx_ctime.tv_sec ||
          (coarse.tv_sec == before.stx_ctime.tv_sec && coarse.tv_nsec > static_cast<long>(before.stx_ctime.tv_nsec))) {
        break;
      }
      sched_yield();
    }
    static_cast<volatile char*>(p)[7] = 'b';
    if (GetParam().mapped_stores_at_writeback) ASSERT_SYS(msync(p, kBlock, MS_SYNC));
    ASSERT_SYS(statx(AT_FDCWD, path.c_str(), 0, STATX_BASIC_STATS, &after));
    std::ostringstream s;
    s << "mtime moved " << (after.stx_mtime.tv_sec != before.stx_mtime.tv_sec) << ", ctime moved "
      << (after.stx_ctime.tv_sec != before.stx_ctime.tv_sec ||
          after.stx_ctime.tv_nsec != before.stx_ctime.tv_nsec);
    seen.push_back(s.str());
    if (root == mount_.path() && IsPassthrough() && !GetParam().kernel_owns_times) {
      struct statx src {};
      ASSERT_SYS(statx(AT_FDCWD, SourcePath("mapped").c_str(), 0, STATX_BASIC_STATS, &src));
      EXPECT_EQ(after.stx_mtime.tv_sec, src.stx_mtime.tv_sec);
      EXPECT_EQ(after.stx_mtime.tv_nsec, src.stx_mtime.tv_nsec);
      EXPECT_EQ(after.stx_ctime.tv_nsec, src.stx_ctime.tv_nsec);
    }
    munmap(p, kBlock);
    close(fd);
  }
  EXPECT_TRUE(seen[0] == seen[1] || seen[0] == seen[2])
      << GetParam().name << "\n  mount: " << seen[0] << "\n  ext4:  " << seen[1] << "\n  tmpfs: " << seen[2];
}

// Access times after reading a file and running it: a default (relatime)
// mount moves them as ext4 and tmpfs do; a `-o noatime` mount moves them
// neither on the mount nor in the source (kernel passthrough included), as a
// tmpfs mounted noatime does not.
class AccessTimeTest : public PrivilegeDiffTest {
 protected:
  void CheckAccessTimes(bool noatime, const std::vector<std::string>& roots) {
    std::vector<std::string> seen;
    for (const std::string& root : roots) {
      const std::string path = root + "/prog";
      std::string error;
      ASSERT_TRUE(WriteFile(path, ReadAll(kIdProgram), &error, O_WRONLY | O_CREAT | O_TRUNC, 0755)) << error;
      const struct timespec past[2] = {{946684800, 0}, {946684800, 0}};  // 2000-01-01
      ASSERT_SYS(utimensat(AT_FDCWD, path.c_str(), past, 0));
      // The read must reach the file system: a read the kernel answers from
      // its page cache reaches no FUSE server (the kernel keeps no access
      // times for FUSE files), so the data goes out and its pages are dropped.
      int fd;
      ASSERT_SYS(fd = open(path.c_str(), O_RDONLY));
      ASSERT_SYS(fsync(fd));
      ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
      close(fd);
      struct stat st {};
      ASSERT_SYS(stat(path.c_str(), &st));  // cached by the kernel, as a user's ls -l would
      std::ostringstream s;
      std::string data;
      ASSERT_TRUE(ReadFile(path, &data, &error)) << error;
      ASSERT_SYS(stat(path.c_str(), &st));
      s << "after a read: atime moved " << (st.st_atime != past[0].tv_sec);
      const std::string out = ExecAs(kWriter, kWriterGroup, path, {"-u"});
      ASSERT_SYS(stat(path.c_str(), &st));
      s << "; ran it (" << out.substr(0, out.find('\n')) << "), atime moved " << (st.st_atime != past[0].tv_sec);
      if (root == mount_.path() && IsPassthrough()) {
        struct stat src {};
        ASSERT_SYS(stat(SourcePath("prog").c_str(), &src));
        s << "; the source's atime moved " << (src.st_atime != past[0].tv_sec);
      }
      seen.push_back(s.str());
    }
    for (size_t i = 1; i < seen.size(); ++i) {
      std::string want = seen[i];
      if (IsPassthrough()) want += std::string("; the source's atime moved ") + (noatime ? "0" : "1");
      if (seen[0] == want) return;
    }
    ADD_FAILURE() << GetParam().name << (noatime ? ", -o noatime" : ", default atime") << "\n  mount:     "
                  << seen[0] << "\n  reference: " << seen[1] << (seen.size() > 2 ? "\n  reference: " + seen[2] : "");
  }
};

TEST_P(AccessTimeTest, ReadAndExecMoveAtimeAsLocally) { CheckAccessTimes(false, Roots()); }

class NoatimeMountTest : public AccessTimeTest {
 protected:
  // The config's flags with noatime added to its -o list.
  std::vector<std::string> DaemonFlags() const override {
    std::vector<std::string> flags = GetParam().flags;
    for (size_t i = 0; i + 1 < flags.size(); ++i) {
      if (flags[i] == "-o") {
        flags[i + 1] += ",noatime";
        return flags;
      }
    }
    flags.insert(flags.end(), {"-o", "noatime"});
    return flags;
  }
};

TEST_P(NoatimeMountTest, ReadAndExecLeaveAtimeAlone) {
  char tmpl[] = "/tmp/efuse-privdiff-noatime-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr) << ErrnoName(errno);
  ASSERT_SYS(mount("efuse-test-noatime", tmpl, "tmpfs", MS_NOATIME, "mode=0755"));
  CheckAccessTimes(true, {mount_.path(), tmpl});
  umount2(tmpl, MNT_DETACH);
  rmdir(tmpl);
}

// Passthrough only: the source changed directly, not through the mount.
class SourceChangeTest : public PrivilegeDiffTest {};

// An administrator disarms a setuid-root program in the source itself: the
// next exec through the mount runs without root, however often the mount
// has looked at the file (the offload policy raises lifetimes of hot ones).
TEST_P(SourceChangeTest, SetuidClearedInTheSourceCountsAtTheNextExec) {
  const std::string path = Path("prog");
  std::string error;
  ASSERT_TRUE(WriteFile(path, ReadAll(kIdProgram), &error, O_WRONLY | O_CREAT | O_TRUNC, 0755)) << error;
  ASSERT_SYS(chmod(path.c_str(), 04755));
  for (int i = 0; i < 5; ++i) {
    const std::string out = ExecAs(kWriter, kWriterGroup, path, {"-u"});
    ASSERT_EQ(out, "0\n") << "a setuid-root program runs as root";
    struct stat st {};
    ASSERT_SYS(stat(path.c_str(), &st));
  }
  ASSERT_SYS(chmod(SourcePath("prog").c_str(), 0755));
  EXPECT_EQ(ExecAs(kWriter, kWriterGroup, path, {"-u"}), std::to_string(kWriter) + "\n");
  struct statx stx {};
  ASSERT_SYS(statx(AT_FDCWD, path.c_str(), 0, STATX_MODE, &stx));
  EXPECT_EQ(stx.stx_mode & 07777, 0755u);
}

const auto kConfigs =
    ::testing::Values(Memfs("memfs", {"--memfs_data=daemon", "-o", "allow_other,default_permissions"}),
                      // memfs alone judges permissions (no default_permissions)
                      Memfs("memfs_no_default_permissions", {"--memfs_data=daemon", "-o", "allow_other"}),
                      // data in a private tmpfs through kernel passthrough
                      // (default_permissions added)
                      MemfsKernelData("memfs_kernel_data", {"-o", "allow_other"}),
                      // kernel passthrough where the kernel allows it (the default)
                      Passthrough("disk_passthrough", {}),
                      // the daemon serves data, with and without the writeback cache
                      Passthrough("disk_daemon_io_writeback", {"--passthrough=off"}, /*daemon_io=*/true,
                                  /*writeback=*/true),
                      DataAtWriteback(Passthrough("disk_daemon_io_writethrough",
                                                  {"--passthrough=off", "--writeback_cache=false"},
                                                  /*daemon_io=*/true)));
auto ConfigName(const ::testing::TestParamInfo<PrivConfig>& info) { return std::string(info.param.name); }
INSTANTIATE_TEST_SUITE_P(Diff, PrivilegeDiffTest, kConfigs, ConfigName);
INSTANTIATE_TEST_SUITE_P(Diff, AccessTimeTest, kConfigs, ConfigName);
INSTANTIATE_TEST_SUITE_P(Diff, NoatimeMountTest, kConfigs, ConfigName);
INSTANTIATE_TEST_SUITE_P(Diff, SourceChangeTest,
                         ::testing::Values(Passthrough("disk_passthrough", {}),
                                           Passthrough("disk_daemon_io_writeback", {"--passthrough=off"}, true, true)),
                         ConfigName);

}  // namespace
}  // namespace efuse::testing
