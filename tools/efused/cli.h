// tools/efused/cli.h — efused's command line: flags to SessionOptions.
//
// Owns: validating every flag and option with a message that names what is
// wrong (size suffixes, mount options, the mount point), so main() only runs.
#ifndef EFUSE_TOOLS_EFUSED_CLI_H_
#define EFUSE_TOOLS_EFUSED_CLI_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/filesystem.h"
#include "core/passthrough/passthrough.h"
#include "core/session.h"

namespace efuse {

struct DaemonConfig {
  std::string fs = "memfs";
  SessionOptions session;
  uint64_t size_limit = 0;
  uint64_t max_inodes = 0;
  double entry_timeout = 1.0;
  double attr_timeout = 1.0;
  double negative_timeout = 0.0;
  std::string transport = "auto";  // auto, uring, sync
  uint32_t queue_depth = 4;
  uint32_t poll_us = 50;  // uring: workers poll this long before sleeping (clients hopping CPUs)
  std::string telemetry = "auto";  // auto, on, off
  uint32_t trace_sample = 0;
  uint32_t time_every = 1;
  std::string metrics_file;  // "": none
  // --fs=memfs --memfs_data=kernel (or auto, where allowed): served by the
  // passthrough engine over a private tmpfs (`passthrough` configures it).
  bool memfs_in_kernel = false;
  // memfs's storage, made by the supervisor (which keeps it) and
  // inherited: the private tmpfs's root (memfs_in_kernel) or the memfd of
  // the daemon's data (core/memfs/data_store.h); -1 to make one here.
  int memfs_storage_fd = -1;
  // --supervise: a supervisor process keeps the connection (and memfs's
  // storage) and starts a successor server when one dies.
  bool supervise = false;
  // --supervise=systemd: the service manager's fd store keeps them instead
  // of a supervisor process; the next start of the service takes over.
  bool fd_store = false;
  uint32_t metrics_interval = 15;  // seconds
  // --fs=passthrough: the source and cache policies (timeouts are copied
  // from the three above).
  PassthroughOptions passthrough;
};

// "1G", "512M", "4096", "10k" (powers of 1024) -> bytes.
absl::StatusOr<uint64_t> ParseSize(std::string_view text);

// Builds the config from parsed flag values and positional arguments
// (argv[0] first, then exactly one mount point). `mounted_at`: the mount
// point a supervisor mounted for this server (not looked at again).
absl::StatusOr<DaemonConfig> BuildConfig(const std::vector<char*>& positional,
                                         const std::string& mounted_at = "");

// memfs's private tmpfs for --memfs_data=kernel: the directory fd of its root.
absl::StatusOr<int> MakeMemfsStorage(const DaemonConfig& config);

// Creates the backend the config names.
absl::StatusOr<std::unique_ptr<FileSystem>> MakeFileSystem(const DaemonConfig& config);

// After Session::Run returned: an error if the backend found at INIT that it
// could not serve as configured (--passthrough=on refused by the kernel).
absl::Status BackendResult(const FileSystem& fs);

}  // namespace efuse

#endif  // EFUSE_TOOLS_EFUSED_CLI_H_
