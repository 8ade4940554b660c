#include "tests/mount/mount_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace efuse::testing {

namespace {

using Clock = std::chrono::steady_clock;

std::string ErrnoText(int err) { return ErrnoName(err); }

}  // namespace

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return std::string(name != nullptr ? name : "E?") + " (" + std::strerror(err) + ")";
}

void RunListingRace(const std::string& dir, size_t names,
                    const std::function<void(const std::vector<std::string>& old_order)>& change, ListingRace* out) {
  ASSERT_SYS(mkdir(dir.c_str(), 0755));
  for (size_t i = 0; i < names; ++i) {
    ASSERT_SYS(mknod((dir + "/name-" + std::to_string(i)).c_str(), S_IFREG | 0644, 0));
  }
  std::vector<char> buf(1024);  // a few entries per call: the first piece ends early
  UniqueFd old_reader(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_SYS(old_reader.get());
  while (out->old_order.size() < names + 2) ASSERT_GT(ReadDirPiece(old_reader.get(), buf, &out->old_order), 0);
  change(out->old_order);
  if (::testing::Test::HasFatalFailure()) return;
  UniqueFd new_reader(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_SYS(new_reader.get());
  ReadDirPiece(new_reader.get(), buf, &out->new_order);
  out->first_piece = out->new_order.size();
  out->old_end = ReadDirPiece(old_reader.get(), buf, &out->old_order);
  while (ReadDirPiece(new_reader.get(), buf, &out->new_order) > 0) {
  }
}

long ReadDirPiece(int fd, std::vector<char>& buf, std::vector<std::string>* names) {
  const long n = syscall(SYS_getdents64, fd, buf.data(), buf.size());
  EXPECT_GE(n, 0) << "getdents64: " << ErrnoName(errno);
  for (long at = 0; at < n;) {
    const auto* e = reinterpret_cast<const struct dirent64*>(buf.data() + at);
    names->push_back(e->d_name);
    at += e->d_reclen;
  }
  return n;
}

namespace {

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return std::string("killed by signal ") + strsignal(WTERMSIG(status)) +
           (WCOREDUMP(status) ? " (core dumped)" : "");
  }
  return "wait status " + std::to_string(status);
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t j = 1; j <= 3; ++j) {
        if (i + j >= s.size() || s[i + j] < '0' || s[i + j] > '7') {
          ok = false;
          break;
        }
        v = v * 8 + (s[i + j] - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string ReadAllFromFd(int fd) {
  std::string out;
  char buf[65536];
  off_t off = 0;
  for (;;) {
    ssize_t n = pread(fd, buf, sizeof(buf), off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

std::string Indent(const std::string& text) {
  if (text.empty()) return "    (nothing)\n";
  std::string out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out += "    " + line + "\n";
  return out;
}

// Waits for `pid` until `deadline`; true (and *status) once reaped.
bool WaitPidUntil(pid_t pid, Clock::time_point deadline, int* status) {
  auto sleep = std::chrono::microseconds(200);
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) {
      *status = 0;
      return true;  // not our child any more (already reaped)
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(sleep);
    sleep = std::min<std::chrono::microseconds>(sleep * 2, std::chrono::milliseconds(10));
  }
}

std::vector<char*> ArgvOf(std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return argv;
}

// In a freshly forked child: stdin from /dev/null, everything else closed.
void ChildStdio(int out_fd, int err_fd) {
  int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
  if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
  if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
  close_range(3, ~0U, 0);
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
}

}  // namespace

std::string MountRequirementProblem() {
  if (geteuid() != 0)
    return "mounting FUSE needs root (euid 0); this process runs as euid " + std::to_string(geteuid());
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return "/dev/fuse is not usable: open(/dev/fuse) failed with " + ErrnoText(errno);
  close(fd);
  return "";
}

bool InCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string_view(ci) == "true";
}

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

bool FindMount(const std::string& mountpoint, MountEntry* entry) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::vector<std::string> f;
    std::istringstream fields(line);
    std::string word;
    while (fields >> word) f.push_back(word);
    if (f.size() < 7 || Unescape(f[4]) != mountpoint) continue;
    size_t dash = 0;
    for (size_t i = 6; i < f.size(); ++i) {
      if (f[i] == "-") {
        dash = i;
        break;
      }
    }
    if (entry != nullptr) {
      entry->mountpoint = mountpoint;
      entry->fstype = dash != 0 && dash + 1 < f.size() ? f[dash + 1] : "";
      entry->source = dash != 0 && dash + 2 < f.size() ? f[dash + 2] : "";
      unsigned major = 0;
      std::sscanf(f[2].c_str(), "%u:%u", &major, &entry->dev_minor);
    }
    return true;
  }
  return false;
}

EfuseMount::~EfuseMount() { Cleanup(); }

std::string EfuseMount::Path(std::string_view relative) const {
  if (relative.empty()) return path_;
  return path_ + "/" + std::string(relative);
}

std::string EfuseMount::Log() const {
  if (log_path_.empty()) return "";
  int fd = open(log_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "(cannot read " + log_path_ + ": " + ErrnoText(errno) + ")";
  std::string s = ReadAllFromFd(fd);
  close(fd);
  return s;
}

std::string EfuseMount::LogForMessage() const { return "\n  efused log:\n" + Indent(Log()); }

bool EfuseMount::StatusFileIsOurs(unsigned dev_minor) const { return !StatusFile(dev_minor).empty(); }

std::string EfuseMount::StatusFile(unsigned dev_minor) const {
  // Root's daemons write /run/efuse; a user's (fusermount3, user
  // namespaces) /run/user/<uid>/efuse or /tmp/efuse-<uid> (core/status_file.h).
  const std::string name = "/" + std::to_string(dev_minor) + ".status";
  std::vector<std::string> candidates = {"/run/efuse" + name};
  glob_t g{};
  for (const char* pattern : {"/run/user/*/efuse", "/tmp/efuse-*"}) {
    if (glob(pattern, 0, nullptr, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) candidates.push_back(g.gl_pathv[i] + name);
    }
    globfree(&g);
  }
  for (const std::string& path : candidates) {
    std::ifstream f(path);
    std::string line;
    if (std::getline(f, line) && line == "pid: " + std::to_string(pid_)) return path;
  }
  return "";
}

::testing::AssertionResult EfuseMount::Start(const std::vector<std::string>& flags) {
  if (pid_ > 0) return ::testing::AssertionFailure() << "EfuseMount::Start called twice";
  char mnt_template[] = "/tmp/efuse-mnt-XXXXXX";
  if (mkdtemp(mnt_template) == nullptr)
    return ::testing::AssertionFailure() << "mkdtemp: " << ErrnoText(errno);
  char resolved[PATH_MAX];
  path_ = realpath(mnt_template, resolved) != nullptr ? resolved : mnt_template;
  // Other users (permission tests) must be able to reach the mount's root.
  chmod(path_.c_str(), 0755);

  char log_template[] = "/tmp/efuse-log-XXXXXX";
  int log_fd = mkostemp(log_template, O_CLOEXEC | O_APPEND);
  if (log_fd < 0) return ::testing::AssertionFailure() << "mkostemp: " << ErrnoText(errno);
  log_path_ = log_template;

  std::vector<std::string> args = {EFUSED_PATH};
  args.insert(args.end(), flags.begin(), flags.end());
  // EFUSE_TRANSPORT runs a whole suite on one transport (ctest registers the
  // mount suites once per transport); a test's own --transport wins.
  forced_transport_.clear();
  if (const char* t = getenv("EFUSE_TRANSPORT"); t != nullptr && *t != '\0') {
    bool own = false;
    for (const std::string& f : flags) own = own || f.starts_with("--transport");
    if (!own) {
      forced_transport_ = t;
      args.push_back("--transport=" + forced_transport_);
    }
  }
  // The suites test a transport, not supervision (on by default), which a
  // test asks for by name; one server process keeps their logs and kills plain.
  bool names_supervision = false;
  for (const std::string& f : flags) names_supervision = names_supervision || f.starts_with("--supervise");
  if (!names_supervision && !default_supervision_) args.push_back("--supervise=off");
  args.push_back(path_);
  std::vector<char*> argv = ArgvOf(args);
  std::string command;
  for (const std::string& a : args) command += (command.empty() ? "" : " ") + a;

  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return ::testing::AssertionFailure() << "fork: " << ErrnoText(errno);
  }
  if (pid == 0) {
    // If the test process dies, the daemon unmounts and exits.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    ChildStdio(log_fd, log_fd);
    if (child_setup_) child_setup_();
    execv(argv[0], argv.data());
    dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  close(log_fd);
  pid_ = pid;
  reaped_ = false;

  const auto deadline = Clock::now() + kMountTimeout;
  auto sleep = std::chrono::microseconds(500);
  for (;;) {
    MountEntry e;
    if (FindMount(path_, &e)) {
      if (e.fstype != "fuse.efuse") {
        return ::testing::AssertionFailure()
               << path_ << " is mounted with type '" << e.fstype << "', expected fuse.efuse"
               << LogForMessage();
      }
      // The mount shows before the daemon has set up around it: its status
      // file comes after the BPF maps are pinned, and before INIT.
      if (StatusFileIsOurs(e.dev_minor)) return ::testing::AssertionSuccess();
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = status;
      return ::testing::AssertionFailure()
             << "efused exited before mounting (" << DescribeStatus(status) << ")\n  command: "
             << command << LogForMessage();
    }
    if (Clock::now() >= deadline) {
      return ::testing::AssertionFailure()
             << "no fuse.efuse mount at " << path_
             << " in /proc/self/mountinfo with its status file after "
             << kMountTimeout.count() << " s\n  command: " << command << LogForMessage();
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min<std::chrono::microseconds>(sleep * 2, std::chrono::milliseconds(10));
  }
}

void EfuseMount::Signal(int sig) const {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

bool EfuseMount::WaitExit(std::chrono::milliseconds timeout, int* status) {
  if (pid_ <= 0) return false;
  if (!reaped_) {
    int st = 0;
    if (!WaitPidUntil(pid_, Clock::now() + timeout, &st)) return false;
    reaped_ = true;
    status_ = st;
  }
  if (status != nullptr) *status = status_;
  return true;
}

bool EfuseMount::Alive() {
  if (pid_ <= 0 || reaped_) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) {
    reaped_ = true;
    status_ = st;
    return false;
  }
  return true;
}

::testing::AssertionResult EfuseMount::Stop(int sig) {
  if (!running()) return ::testing::AssertionFailure() << "efused is not running";
  Signal(sig);
  int status = 0;
  if (!WaitExit(kExitTimeout, &status)) {
    std::string log = LogForMessage();
    Cleanup();
    return ::testing::AssertionFailure() << "efused did not exit within " << kExitTimeout.count()
                                         << " s of " << strsignal(sig) << log;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return ::testing::AssertionFailure() << "efused ended with " << DescribeStatus(status)
                                         << " after " << strsignal(sig) << ", expected exit 0"
                                         << LogForMessage();
  }
  if (FindMount(path_)) {
    return ::testing::AssertionFailure() << "efused exited 0 after " << strsignal(sig)
                                         << " but " << path_ << " is still mounted"
                                         << LogForMessage();
  }
  // A suite run for one transport must really have used it, not a fallback.
  if (!forced_transport_.empty() &&
      Log().find("serving with the " + forced_transport_ + " transport") == std::string::npos) {
    return ::testing::AssertionFailure() << "EFUSE_TRANSPORT=" << forced_transport_
                                         << " but efused served with another transport"
                                         << LogForMessage();
  }
  return ::testing::AssertionSuccess();
}

void EfuseMount::Cleanup() {
  if (pid_ > 0 && !reaped_) {
    if (!path_.empty() && FindMount(path_)) umount2(path_.c_str(), MNT_DETACH);
    kill(pid_, SIGKILL);
    int st = 0;
    waitpid(pid_, &st, 0);
    reaped_ = true;
    status_ = st;
  }
  if (!path_.empty()) {
    // A dead mount (daemon killed) or one a failed test left behind.
    for (int i = 0; i < 4 && FindMount(path_); ++i) umount2(path_.c_str(), MNT_DETACH);
    rmdir(path_.c_str());
    path_.clear();
  }
  if (!log_path_.empty()) {
    unlink(log_path_.c_str());
    log_path_.clear();
  }
}

bool IsDaemonErrorLine(const std::string& line) {
  // efused's own errors, and sanitizer reports when it is built with them.
  return line.rfind("efused: error:", 0) == 0 || line.find("runtime error:") != std::string::npos ||
         line.find("ERROR: AddressSanitizer") != std::string::npos ||
         line.find("ERROR: LeakSanitizer") != std::string::npos;
}

void MountTest::SetUp() {
  EFUSE_REQUIRE_FUSE();
  ASSERT_TRUE(mount_.Start(DaemonFlags()));
}

void MountTest::TearDown() {
  if (!mount_.running()) return;
  EXPECT_TRUE(mount_.Stop(SIGTERM));
  std::string log = mount_.Log();
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    EXPECT_FALSE(IsDaemonErrorLine(line)) << "the daemon logged an error: " << line << mount_.LogForMessage();
  }
  if (HasFailure()) std::cerr << "efused log of this test:\n" << Indent(log);
}

std::string CommandResult::Describe() const {
  std::ostringstream o;
  o << (timed_out ? "timed out" : DescribeStatus(status)) << " after " << seconds << " s\n"
    << "  stdout:\n"
    << Indent(out) << "  stderr:\n"
    << Indent(err);
  return o.str();
}

CommandResult RunCommand(const std::vector<std::string>& command, std::chrono::milliseconds timeout) {
  CommandResult r;
  std::vector<std::string> args = command;
  std::vector<char*> argv = ArgvOf(args);
  int out_fd = memfd_create("stdout", MFD_CLOEXEC);
  int err_fd = memfd_create("stderr", MFD_CLOEXEC);
  const auto start = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ChildStdio(out_fd, err_fd);
    execv(argv[0], argv.data());
    dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  if (pid < 0) {
    r.err = "fork: " + ErrnoText(errno);
    r.status = 127 << 8;
  } else if (!WaitPidUntil(pid, start + timeout, &r.status)) {
    r.timed_out = true;
    kill(pid, SIGKILL);
    waitpid(pid, &r.status, 0);
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.out = ReadAllFromFd(out_fd);
  r.err += ReadAllFromFd(err_fd);
  close(out_fd);
  close(err_fd);
  return r;
}

void ChildChecks::Fail(const std::string& what, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  failures_ += std::string(base != nullptr ? base + 1 : file) + ":" + std::to_string(line) +
               ": " + what + "\n";
}

void ChildChecks::ExpectErrno(long rc, int err, int want, const char* expr, const char* file,
                              int line) {
  if (rc != -1) {
    Fail(std::string(expr) + " returned " + std::to_string(rc) + ", expected -1 with errno " +
             ErrnoText(want),
         file, line);
  } else if (err != want) {
    Fail(std::string(expr) + " failed with errno " + ErrnoText(err) + ", expected " +
             ErrnoText(want),
         file, line);
  }
}

void ChildChecks::ExpectOk(long rc, int err, const char* expr, const char* file, int line) {
  if (rc < 0) Fail(std::string(expr) + " failed: " + ErrnoText(err), file, line);
}

ScratchDir::ScratchDir(uid_t owner) {
  char t[] = "/tmp/efuse-scratch-XXXXXX";
  if (mkdtemp(t) == nullptr) return;
  path_ = t;
  if (chmod(t, 0755) != 0 || (owner != 0 && chown(t, owner, owner) != 0)) {
    rmdir(t);
    path_.clear();
  }
}

ScratchDir::~ScratchDir() {
  if (!path_.empty()) RunCommand({"/bin/rm", "-rf", "--one-file-system", path_}, std::chrono::seconds(30));
}

::testing::AssertionResult RunInChild(const std::function<void(ChildChecks&)>& body,
                                      const Creds* creds, std::chrono::milliseconds timeout) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ::testing::AssertionFailure() << "pipe2: " << ErrnoText(errno);
  std::cout.flush();
  std::cerr.flush();
  const auto start = Clock::now();
  pid_t pid = fork();
  if (pid < 0) return ::testing::AssertionFailure() << "fork: " << ErrnoText(errno);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(fds[0]);
    ChildChecks checks;
    bool ready = true;
    if (creds != nullptr) {
      if (setgroups(creds->groups.size(), creds->groups.data()) != 0 ||
          setresgid(creds->gid, creds->gid, creds->gid) != 0 ||
          setresuid(creds->uid, creds->uid, creds->uid) != 0) {
        checks.Fail("dropping privileges: " + ErrnoText(errno), __FILE__, __LINE__);
        ready = false;
      }
    }
    if (ready) body(checks);
    const std::string& f = checks.failures();
    for (size_t off = 0; off < f.size();) {
      ssize_t n = write(fds[1], f.data() + off, f.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    _exit(f.empty() ? 0 : 1);
  }
  close(fds[1]);
  std::string report;
  const auto deadline = start + timeout;
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int pr = poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) {
      timed_out = pr == 0;
      break;
    }
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    report.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  if (timed_out || !WaitPidUntil(pid, deadline + std::chrono::seconds(1), &status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return ::testing::AssertionFailure()
           << "child did not finish within " << timeout.count() << " ms (hung?)\n" << report;
  }
  if (!report.empty()) return ::testing::AssertionFailure() << "in the child:\n" << report;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return ::testing::AssertionFailure() << "child ended with " << DescribeStatus(status);
  return ::testing::AssertionSuccess();
}

namespace {
inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

void FillPattern(uint64_t seed, uint64_t stream_offset, uint8_t* out, size_t size) {
  size_t i = 0;
  while (i < size) {
    uint64_t pos = stream_offset + i;
    uint64_t word = Mix(seed + (pos / 8 + 1) * 0x9e3779b97f4a7c15ULL);
    size_t byte = pos % 8;
    if (byte == 0 && size - i >= 8) {
      std::memcpy(out + i, &word, 8);
      i += 8;
      continue;
    }
    for (; byte < 8 && i < size; ++byte, ++i) out[i] = static_cast<uint8_t>(word >> (8 * byte));
  }
}

std::string PatternBytes(uint64_t seed, size_t size) {
  std::string s(size, '\0');
  FillPattern(seed, 0, reinterpret_cast<uint8_t*>(s.data()), size);
  return s;
}

uint64_t Fnv1a(const void* data, size_t size, uint64_t h) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

bool PwriteAll(int fd, const void* data, size_t size, off_t offset) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = pwrite(fd, p, size, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = EIO;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
  return true;
}

bool PreadAll(int fd, void* data, size_t size, off_t offset, size_t* got) {
  char* p = static_cast<char*>(data);
  *got = 0;
  while (*got < size) {
    ssize_t n = pread(fd, p + *got, size - *got, offset + static_cast<off_t>(*got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) break;
    *got += static_cast<size_t>(n);
  }
  return true;
}

bool WriteFile(const std::string& path, std::string_view data, std::string* error, int flags,
               mode_t mode) {
  int fd = open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) {
    *error = "open " + path + ": " + ErrnoText(errno);
    return false;
  }
  bool ok = PwriteAll(fd, data.data(), data.size(), 0);
  int err = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) *error = "write " + path + ": " + ErrnoText(err);
  return ok;
}

FileHandle HandleOf(const std::string& path) {
  FileHandle h;
  h.bytes.resize(sizeof(file_handle) + MAX_HANDLE_SZ);
  h.get()->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), h.get(), &mount_id, 0) != 0) h.bytes.clear();
  return h;
}

bool MakeExportedFiles(const std::string& mount_path, ExportedFiles* out, std::string* error) {
  const std::string dir = mount_path + "/dir", file = dir + "/file", removed = mount_path + "/removed";
  if (mkdir(dir.c_str(), 0755) != 0) {
    *error = "mkdir " + dir + ": " + ErrnoText(errno);
    return false;
  }
  if (!WriteFile(file, "exported data", error) || !WriteFile(removed, "soon gone", error)) return false;
  struct stat file_st, dir_st;
  if (stat(file.c_str(), &file_st) != 0 || stat(dir.c_str(), &dir_st) != 0) {
    *error = "stat: " + ErrnoText(errno);
    return false;
  }
  out->file_ino = file_st.st_ino;
  out->dir_ino = dir_st.st_ino;
  out->file = HandleOf(file);
  out->dir = HandleOf(dir);
  out->removed = HandleOf(removed);
  if (out->file.bytes.empty() || out->dir.bytes.empty() || out->removed.bytes.empty()) {
    *error = "name_to_handle_at: " + ErrnoText(errno);
    return false;
  }
  if (unlink(removed.c_str()) != 0) {
    *error = "unlink " + removed + ": " + ErrnoText(errno);
    return false;
  }
  out->mount_fd = UniqueFd(open(mount_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (out->mount_fd.get() < 0) {
    *error = "open " + mount_path + ": " + ErrnoText(errno);
    return false;
  }
  return true;
}

void CheckExportedFiles(ExportedFiles& files, UniqueFd* dir) {
  // The file: same inode, same data, found again by its node id.
  UniqueFd f(open_by_handle_at(files.mount_fd.get(), files.file.get(), O_RDONLY | O_CLOEXEC));
  ASSERT_GE(f.get(), 0) << "open_by_handle_at(file): " << ErrnoText(errno);
  char buf[64] = {};
  ASSERT_EQ(read(f.get(), buf, sizeof(buf)), 13);
  EXPECT_EQ(std::string(buf), "exported data");
  struct stat st;
  ASSERT_EQ(fstat(f.get(), &st), 0);
  EXPECT_EQ(st.st_ino, files.file_ino);
  *dir = UniqueFd(open_by_handle_at(files.mount_fd.get(), files.dir.get(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_GE(dir->get(), 0) << "open_by_handle_at(dir): " << ErrnoText(errno);
  ASSERT_EQ(fstat(dir->get(), &st), 0);
  EXPECT_EQ(st.st_ino, files.dir_ino);
  // A removed file's handle is stale, as on a local file system.
  EXPECT_ERRNO(open_by_handle_at(files.mount_fd.get(), files.removed.get(), O_RDONLY | O_CLOEXEC), ESTALE);
}

bool ReadFile(const std::string& path, std::string* data, std::string* error) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "open " + path + ": " + ErrnoText(errno);
    return false;
  }
  data->clear();
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = "read " + path + ": " + ErrnoText(errno);
      close(fd);
      return false;
    }
    if (n == 0) break;
    data->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return true;
}

std::vector<pid_t> ProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> found;
  DIR* d = opendir("/proc");
  if (d == nullptr) return found;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid == getpid()) continue;
    std::ifstream in("/proc/" + std::string(e->d_name) + "/cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (char& c : cmdline)
      if (c == '\0') c = ' ';
    if (cmdline.find(needle) != std::string::npos) found.push_back(static_cast<pid_t>(pid));
  }
  closedir(d);
  return found;
}


namespace {
bool ParseStatusFile(const std::string& path, std::map<std::string, std::string>* kv) {
  std::ifstream in(path);
  if (!in) return false;
  kv->clear();
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(": ");
    if (colon != std::string::npos) (*kv)[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return kv->count("status_seq") != 0;
}
}  // namespace

::testing::AssertionResult StatusReader::Fresh(std::map<std::string, std::string>* kv) {
  MountEntry e;
  if (!FindMount(mount_->path(), &e)) return ::testing::AssertionFailure() << "not mounted";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  // The file appears once the daemon serves (and blocks SIGUSR1).
  std::string path;
  while ((path = mount_->StatusFile(e.dev_minor)).empty() || !ParseStatusFile(path, kv) ||
         (*kv)["pid"] != std::to_string(mount_->pid())) {
    if (std::chrono::steady_clock::now() > deadline)
      return ::testing::AssertionFailure() << "no status file of connection " << e.dev_minor << " for our daemon";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const long seq = std::atol((*kv)["status_seq"].c_str());
  mount_->Signal(SIGUSR1);
  while (!ParseStatusFile(path, kv) || std::atol((*kv)["status_seq"].c_str()) <= seq) {
    if (std::chrono::steady_clock::now() > deadline)
      return ::testing::AssertionFailure() << "status file " << path << " not rewritten";
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult StatusEventually(const EfuseMount* m,
                                            const std::function<bool(std::map<std::string, std::string>&)>& done,
                                            bool drop_caches) {
  StatusReader status(m);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    std::map<std::string, std::string> kv;
    if (::testing::AssertionResult fresh = status.Fresh(&kv); !fresh) return fresh;
    if (done(kv)) return ::testing::AssertionSuccess();
    if (std::chrono::steady_clock::now() > deadline) {
      ::testing::AssertionResult failure = ::testing::AssertionFailure();
      failure << "not so 10 s later" << (drop_caches ? " (dropping caches)" : "") << "; the last status:";
      for (const auto& [key, value] : kv) failure << "\n  " << key << ": " << value;
      return failure;
    }
    if (drop_caches) std::ofstream("/proc/sys/vm/drop_caches") << "2";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

uint64_t StatusReader::Number(const std::string& key) {
  std::map<std::string, std::string> kv;
  EXPECT_TRUE(Fresh(&kv));
  auto it = kv.find(key);
  return it == kv.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
}

::testing::AssertionResult StatusReader::Counts(std::map<std::string, uint64_t>* out) {
  std::map<std::string, std::string> kv;
  ::testing::AssertionResult r = Fresh(&kv);
  if (!r) return r;
  out->clear();
  for (const auto& [k, v] : kv) {
    if (k.rfind("requests_", 0) == 0) (*out)[k.substr(9)] = std::strtoull(v.c_str(), nullptr, 10);
  }
  return ::testing::AssertionSuccess();
}

}  // namespace efuse::testing
