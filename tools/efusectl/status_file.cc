#include "tools/efusectl/status_file.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_split.h"
#include "core/status_file.h"

namespace efuse::ctl {

namespace {

// The user_id of the FUSE mount whose device is 0:`id` (the daemon's owner,
// in our namespace), from /proc/self/mountinfo; root if none is listed.
uid_t MountOwner(unsigned id) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  const std::string dev = "0:" + std::to_string(id);
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() < 3 || f[2] != dev) continue;
    for (absl::string_view opt : absl::StrSplit(f.back(), ',')) {
      if (opt.substr(0, 8) == "user_id=") return static_cast<uid_t>(std::strtoul(std::string(opt.substr(8)).c_str(), nullptr, 10));
    }
  }
  return 0;
}

// True if `pid` is an efused whose real uid is `owner` (the status file's
// owner). A user writes their daemon's status file: without this check the
// pid in it could make root's efusectl signal any process (SIGUSR1 ends a
// process that does not handle it).
bool IsDaemonOf(pid_t pid, uid_t owner) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::ifstream comm(proc + "/comm");
  std::string name;
  if (!std::getline(comm, name) || name != "efused") return false;
  std::ifstream status(proc + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Uid:", 0) == 0) {
      return std::strtoul(line.c_str() + 4, nullptr, 10) == owner;
    }
  }
  return false;
}

}  // namespace

std::string StatusFilePath(unsigned id) { return FindStatusFile(id, MountOwner(id)); }

std::vector<std::string> ReadStatusFile(unsigned id) {
  std::vector<std::string> lines;
  const std::string path = StatusFilePath(id);
  if (path.empty()) return lines;
  std::ifstream status(path);
  std::string line;
  while (std::getline(status, line)) lines.push_back(line);
  return lines;
}

long StatusValue(const std::vector<std::string>& lines, const std::string& key) {
  for (const std::string& l : lines)
    if (l.rfind(key + ": ", 0) == 0) return std::strtol(l.c_str() + key.size() + 2, nullptr, 10);
  return 0;
}

std::string StatusText(const std::vector<std::string>& lines, const std::string& key) {
  for (const std::string& l : lines)
    if (l.rfind(key + ": ", 0) == 0) return l.substr(key.size() + 2);
  return "";
}

bool SignalDaemon(unsigned id, int sig) {
  const long pid = StatusValue(ReadStatusFile(id), "pid");
  struct stat st;
  const std::string path = StatusFilePath(id);
  return pid > 0 && !path.empty() && stat(path.c_str(), &st) == 0 &&
         IsDaemonOf(static_cast<pid_t>(pid), st.st_uid) && kill(static_cast<pid_t>(pid), sig) == 0;
}

std::string RestartRequestPath(unsigned id) {
  std::string path = StatusFilePath(id);
  if (path.empty()) return "";
  return path.substr(0, path.size() - std::string(".status").size()) + ".restart";
}

std::vector<std::string> FreshStatusFile(unsigned id) {
  std::vector<std::string> lines = ReadStatusFile(id);
  if (!SignalDaemon(id, SIGUSR1)) return lines;
  const long seq = StatusValue(lines, "status_seq");
  for (int i = 0; i < 200; ++i) {
    std::vector<std::string> fresh = ReadStatusFile(id);
    if (StatusValue(fresh, "status_seq") > seq) return fresh;
    usleep(5000);
  }
  return lines;
}

}  // namespace efuse::ctl
