// core/server.h — serving a FileSystem at a mount point: libefuse's entry.
//
// Owns: ServerOptions (where and how to mount and serve), Serve(), which
// mounts, answers INIT, serves on the fastest transport the kernel allows
// (FUSE-over-io_uring queues, else io_uring reads of /dev/fuse, else plain
// reads), until the mount is unmounted or SIGTERM/SIGINT/SIGHUP arrives,
// then unmounts; and ServeMain(), the same from a command line, for a
// program's main().
//
// Thread-safety: call Serve or ServeMain once per process, from the main
// thread, before starting threads of your own (workers inherit its signal
// mask). The FileSystem is then called from every worker at once.
#ifndef EFUSE_CORE_SERVER_H_
#define EFUSE_CORE_SERVER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "api.h"
#include "filesystem.h"

namespace efuse {

struct ServerOptions {
  /// An existing directory.
  std::string mountpoint;
  /// mount(8)'s -o words: allow_other, default_permissions, ro, nosuid,
  /// nodev, noexec, noatime, fsname=NAME, subtype=NAME, max_read=N,
  /// rootmode=OCTAL, user_id=N, group_id=N. A user without privilege mounts
  /// through fusermount3 (package fuse3), as libfuse's programs do.
  std::vector<std::string> mount_options;
  /// "auto" (the FUSE-over-io_uring queues where the kernel has them
  /// enabled, else "uring-dev"), "uring", "uring-dev" (io_uring reads of
  /// /dev/fuse), "sync" (read(2) and writev(2)).
  std::string transport = "auto";
  int workers = 0;  ///< serving threads; 0: one per CPU
  bool pin_workers = true;  ///< the io_uring transports' workers (sync's float)
  uint32_t max_write = 1u << 20;  ///< largest WRITE (4 KiB .. 1 MiB)
  /// FUSE ring ("uring"): how long a busy worker looks for the next request
  /// without sleeping, in microseconds (0 .. 10000; 0: never polls).
  uint32_t poll_us = 50;
  /// BPF programs on the kernel's FUSE tracepoints count every request
  /// (`efusectl stats`, `top`, `trace`). "auto": where the kernel lets this
  /// process load them (root), "on": fail without them, "off".
  std::string telemetry = "auto";
  /// The offload policy (needs telemetry): the entry and attribute lifetimes
  /// of inodes the kernel asks about often are raised (to 30 s) and their
  /// open files keep the page cache. Only for a file system whose inodes
  /// change through this mount alone (or that marks the others
  /// attr_volatile).
  bool offload = false;
  /// Log lines go to stderr as "<log_name>: level: message".
  std::string log_name = "efuse";
  bool debug = false;  ///< also log debug lines
};

struct ServeResult {
  /// 0 after a clean stop; 1 if mounting or serving failed; 2 for options
  /// that make no sense (named in `error`).
  int exit_code = 0;
  std::string error;  ///< one line; empty when exit_code is 0
  bool ok() const { return exit_code == 0; }
};

/// Serves `fs` at options.mountpoint until it is unmounted or signalled.
/// The kernel is asked for neither FUSE_ATOMIC_O_TRUNC nor
/// FUSE_HANDLE_KILLPRIV_V2 unless the file system's WantedInitFlags adds
/// them: by default the kernel truncates for O_TRUNC and clears set-id bits
/// itself.
EFUSE_API ServeResult Serve(FileSystem& fs, const ServerOptions& options);

/// For main(): `PROGRAM MOUNTPOINT [-o OPTS] [--transport=NAME] [--workers=N] [--poll-us=N]
/// [--telemetry=auto|on|off] [--offload=on|off] [--debug]` (also `-f`,
/// accepted and ignored:
/// it serves in the foreground anyway). Prints a bad argument in one line and
/// returns 2; otherwise Serve's exit code, its error on stderr.
EFUSE_API int ServeMain(FileSystem& fs, int argc, char** argv, ServerOptions defaults = {});

}  // namespace efuse

#endif  // EFUSE_CORE_SERVER_H_
