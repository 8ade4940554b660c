#include "tools/efused/cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/memfs/memfs.h"

ABSL_FLAG(std::string, fs, "memfs", "file system to serve: memfs (in memory)");
ABSL_FLAG(std::string, size, "1G", "memfs: capacity of file data (e.g. 512M, 4G); ENOSPC past it");
ABSL_FLAG(uint64_t, max_inodes, 1u << 20, "memfs: maximum number of inodes");
ABSL_FLAG(std::vector<std::string>, o, {},
          "mount options, comma-separated: allow_other, default_permissions, ro, nosuid, "
          "nodev, noexec, noatime, max_read=N, fsname=NAME, subtype=NAME, rootmode=OCTAL, "
          "user_id=N, group_id=N");
ABSL_FLAG(int, workers, 0, "worker threads (0: one per CPU)");
ABSL_FLAG(bool, pin_workers, true, "pin each worker thread to its own CPU");
ABSL_FLAG(std::string, transport, "auto", "request transport: auto or sync");
ABSL_FLAG(std::string, max_write, "1M", "largest WRITE request (4K..1M)");
ABSL_FLAG(double, entry_timeout, 1.0, "seconds the kernel caches a name lookup");
ABSL_FLAG(double, attr_timeout, 1.0, "seconds the kernel caches attributes");
ABSL_FLAG(double, negative_timeout, 0.0, "seconds the kernel caches a failed lookup");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");

namespace efuse {

absl::StatusOr<uint64_t> ParseSize(std::string_view text) {
  std::string t = absl::AsciiStrToLower(std::string(text));
  if (t.empty()) return absl::InvalidArgumentError("empty size");
  uint64_t mult = 1;
  char last = t.back();
  const std::string suffixes = "kmgtp";
  if (size_t pos = suffixes.find(last); pos != std::string::npos) {
    mult = uint64_t{1} << (10 * (pos + 1));
    t.pop_back();
  } else if (last == 'b') {
    t.pop_back();
  }
  uint64_t v = 0;
  if (t.empty() || !absl::SimpleAtoi(t, &v))
    return absl::InvalidArgumentError(absl::StrCat("'", std::string(text), "' is not a size (use e.g. 512M, 4G)"));
  if (v != 0 && mult > UINT64_MAX / v) return absl::InvalidArgumentError(absl::StrCat("size '", std::string(text), "' is too large"));
  return v * mult;
}

absl::StatusOr<DaemonConfig> BuildConfig(const std::vector<char*>& positional) {
  DaemonConfig c;
  std::string level = absl::GetFlag(FLAGS_log_level);
  if (level == "debug") SetLogLevel(LogLevel::kDebug);
  else if (level == "info") SetLogLevel(LogLevel::kInfo);
  else if (level == "warning") SetLogLevel(LogLevel::kWarning);
  else if (level == "error") SetLogLevel(LogLevel::kError);
  else return absl::InvalidArgumentError("--log_level: '" + level + "' is not debug, info, warning or error");

  c.fs = absl::GetFlag(FLAGS_fs);
  if (c.fs != "memfs")
    return absl::InvalidArgumentError("--fs: unknown file system '" + c.fs + "' (available: memfs)");
  absl::StatusOr<uint64_t> size = ParseSize(absl::GetFlag(FLAGS_size));
  if (!size.ok()) return absl::InvalidArgumentError(absl::StrCat("--size: ", size.status().message()));
  if (*size < 4096) return absl::InvalidArgumentError("--size: must be at least 4K");
  c.size_limit = *size;
  c.max_inodes = absl::GetFlag(FLAGS_max_inodes);
  if (c.max_inodes < 1) return absl::InvalidArgumentError("--max_inodes: must be at least 1");

  std::string transport = absl::GetFlag(FLAGS_transport);
  if (transport != "auto" && transport != "sync")
    return absl::InvalidArgumentError("--transport: '" + transport + "' is not auto or sync");

  absl::StatusOr<uint64_t> max_write = ParseSize(absl::GetFlag(FLAGS_max_write));
  if (!max_write.ok() || *max_write < 4096 || *max_write > (1u << 20))
    return absl::InvalidArgumentError("--max_write: must be a size from 4K to 1M");

  for (auto [name, value] : {std::pair{"--entry_timeout", absl::GetFlag(FLAGS_entry_timeout)},
                             std::pair{"--attr_timeout", absl::GetFlag(FLAGS_attr_timeout)},
                             std::pair{"--negative_timeout", absl::GetFlag(FLAGS_negative_timeout)}}) {
    if (!(value >= 0) || std::isinf(value))
      return absl::InvalidArgumentError(absl::StrCat(name, ": must be a number of seconds >= 0"));
  }
  c.entry_timeout = absl::GetFlag(FLAGS_entry_timeout);
  c.attr_timeout = absl::GetFlag(FLAGS_attr_timeout);
  c.negative_timeout = absl::GetFlag(FLAGS_negative_timeout);

  int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 0 || workers > 1024) return absl::InvalidArgumentError("--workers: must be 0..1024");
  c.session.workers = workers;
  c.session.pin_workers = absl::GetFlag(FLAGS_pin_workers);

  if (positional.size() < 2) return absl::InvalidArgumentError("missing mount point (usage: efused [flags] MOUNTPOINT)");
  if (positional.size() > 2)
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[2], "' (only one mount point)"));
  MountOptions& m = c.session.mount;
  m.user_id = getuid();
  m.group_id = getgid();
  absl::Status s = ParseMountOptions(absl::GetFlag(FLAGS_o), &m);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("-o: ", s.message()));
  if (m.allow_other && !m.default_permissions) {
    // Without it the kernel skips search-permission checks on cached path
    // walks (it never asks the daemon), so other users can reach files
    // below directories they cannot search.
    Log(LogLevel::kWarning,
        "-o allow_other without default_permissions: path-walk permissions of cached "
        "entries are not checked; add default_permissions for a multi-user mount");
  }
  char resolved[PATH_MAX];
  if (realpath(positional[1], resolved) == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("mount point '", positional[1], "': ", std::strerror(errno)));
  struct stat st;
  if (stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat("mount point '", positional[1], "' is not a directory"));
  m.mountpoint = resolved;

  c.session.init.wanted_flags = Session::DefaultInitFlags();
  c.session.init.max_write = static_cast<uint32_t>(*max_write);
  return c;
}

absl::StatusOr<std::unique_ptr<FileSystem>> MakeFileSystem(const DaemonConfig& c) {
  MemFsOptions o;
  o.size_limit = c.size_limit;
  o.max_inodes = c.max_inodes;
  o.entry_timeout = c.entry_timeout;
  o.attr_timeout = c.attr_timeout;
  o.negative_timeout = c.negative_timeout;
  o.root_uid = c.session.mount.user_id;
  o.root_gid = c.session.mount.group_id;
  o.root_mode = c.session.mount.rootmode & 07777;
  return std::unique_ptr<FileSystem>(std::make_unique<MemFs>(o));
}

}  // namespace efuse
