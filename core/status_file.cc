#include "core/status_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace efuse {

namespace {

constexpr char kSystemDir[] = "/run/efuse";

// The per-user directories for kernel uid `kuid`, preferred first.
std::vector<std::string> UserDirectories(uid_t kuid) {
  std::vector<std::string> dirs;
  const std::string run_user = absl::StrCat("/run/user/", kuid);
  struct stat st;
  if (stat(run_user.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) dirs.push_back(run_user + "/efuse");
  dirs.push_back(absl::StrCat("/tmp/efuse-", kuid));
  return dirs;
}

// A directory `owner` (or root) owns and nobody else may write: a status
// file in it can be believed.
bool Trusted(const std::string& dir, uid_t owner) {
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  return (st.st_uid == owner || st.st_uid == 0) && (st.st_mode & 022) == 0;
}

}  // namespace

uid_t InitialNamespaceUid(uid_t uid) {
  // Lines "inside outside count": outside is in the parent namespace, which
  // is the initial one for the user namespaces efused meets (one level).
  std::ifstream map("/proc/self/uid_map");
  unsigned long inside = 0, outside = 0, count = 0;
  while (map >> inside >> outside >> count) {
    if (uid >= inside && uid - inside < count) return static_cast<uid_t>(outside + (uid - inside));
  }
  return uid;
}

bool InInitialUserNamespace() {
  std::ifstream map("/proc/self/uid_map");
  unsigned long inside = 0, outside = 0, count = 0;
  return map >> inside >> outside >> count && inside == 0 && outside == 0 && count == 4294967295UL;
}

absl::StatusOr<std::string> StatusDirectoryForWriting() {
  const uid_t euid = geteuid();
  if (euid == 0) {
    mkdir(kSystemDir, 0755);
    if (Trusted(kSystemDir, 0) && access(kSystemDir, W_OK) == 0) return std::string(kSystemDir);
  }
  std::string why;
  for (const std::string& dir : UserDirectories(InitialNamespaceUid(euid))) {
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      absl::StrAppend(&why, why.empty() ? "" : "; ", dir, ": ", std::strerror(errno));
      continue;
    }
    struct stat st;
    if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != euid ||
        (st.st_mode & 022) != 0) {
      absl::StrAppend(&why, why.empty() ? "" : "; ", dir,
                      ": not a directory of ours that only we may write");
      continue;
    }
    return dir;
  }
  return absl::PermissionDeniedError(absl::StrCat("no directory for the status file (", why, ")"));
}

std::string FindStatusFile(unsigned connection_id, uid_t owner) {
  const std::string name = absl::StrCat("/", connection_id, ".status");
  std::vector<std::string> dirs = {kSystemDir};
  for (std::string& d : UserDirectories(InitialNamespaceUid(owner))) dirs.push_back(std::move(d));
  for (const std::string& dir : dirs) {
    const std::string path = dir + name;
    struct stat st;
    if (Trusted(dir, dir == kSystemDir ? 0 : owner) && lstat(path.c_str(), &st) == 0 &&
        S_ISREG(st.st_mode)) {
      return path;
    }
  }
  return "";
}

}  // namespace efuse
