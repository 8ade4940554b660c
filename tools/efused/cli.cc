#include "tools/efused/cli.h"

#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/mount.h"
#include "core/status_file.h"
#include "core/memfs/memfs.h"
#include "core/passthrough/passthrough.h"
#include "tools/efused/options.h"
#include "uring/transport_choice.h"

ABSL_FLAG(std::string, fs, "memfs",
          "file system to serve: memfs (in memory) or passthrough (the directory --source)");
ABSL_FLAG(std::string, source, "", "passthrough: the directory to serve (must exist)");
ABSL_FLAG(std::string, passthrough, "auto",
          "passthrough: kernel passthrough of file data (FUSE_PASSTHROUGH, needs root): auto "
          "(where the kernel allows it, else served by the daemon), on (required: fail if "
          "refused), off (the daemon serves every read and write)");
ABSL_FLAG(uint64_t, fd_cache, 0,
          "passthrough: O_PATH fds kept open for inodes (0: a quarter of RLIMIT_NOFILE)");
ABSL_FLAG(bool, writeback_cache, true,
          "passthrough: kernel writeback cache when --passthrough=off (the kernel forbids "
          "it with passthrough)");
ABSL_FLAG(bool, keep_cache, true,
          "passthrough: let the kernel keep cached pages of a file unchanged since its last "
          "open (FOPEN_KEEP_CACHE)");
ABSL_FLAG(bool, cache_dir, true,
          "passthrough: let the kernel cache directory listings (FOPEN_CACHE_DIR)");
ABSL_FLAG(std::string, dir_handles, "auto",
          "passthrough: on: answer OPENDIR (a round trip per directory opened, the source's "
          "listing checked for changes by others); off: the kernel opens directories without "
          "asking and keeps their listings until a change through the mount, so a warm tree "
          "walk sends nothing; auto: off, unless the source is declared shared (--watch_source, "
          "an --attr_timeout or --entry_timeout of 0) or --cache_dir=false (kept for the "
          "connection: a restart cannot change it)");
ABSL_FLAG(bool, posix_acl, true,
          "passthrough: FUSE_POSIX_ACL: the kernel enforces and caches POSIX ACLs (implies "
          "default_permissions); false: ACLs are the source's alone, which saves a GETATTR of "
          "the directory per create and unlink but costs a GETXATTR per file in `ls -l`");
ABSL_FLAG(bool, xattrs, true,
          "passthrough: serve extended attributes; false: the kernel learns once that there "
          "are none (EOPNOTSUPP), saving a GETXATTR round trip per file in `ls -l` (implies "
          "--posix_acl=false)");
ABSL_FLAG(bool, auto_inval_data, false,
          "passthrough: drop cached data when a file changed outside the mount "
          "(FUSE_AUTO_INVAL_DATA); for a source that others modify");
ABSL_FLAG(bool, killpriv_v2, true,
          "passthrough: FUSE_HANDLE_KILLPRIV_V2 (the daemon clears setuid/setgid; no "
          "getxattr(security.capability) before every write)");
ABSL_FLAG(bool, watch_source, false,
          "passthrough: watch the source for changes made by others (fanotify, needs root) "
          "and invalidate the kernel's cached entries, attributes and data at once; with it, "
          "long --entry_timeout/--attr_timeout are safe for a shared source");
ABSL_FLAG(std::string, readdirplus, "adaptive",
          "passthrough: attributes in directory listings: adaptive (names only until the "
          "directory's files are looked up one by one, as `ls -l` does, then attributes; "
          "`find` never pays a stat per file), always (a stat per entry), never (each stat "
          "of a file is a LOOKUP)");
ABSL_FLAG(bool, readdir_ahead, true,
          "passthrough: read the subdirectories a listing shows in the background (without "
          "touching their access times, never into a mount point or an automount trigger), so "
          "a cold tree walk overlaps the source's disk reads");
ABSL_FLAG(bool, source_locks, true,
          "passthrough: carry POSIX, OFD and flock locks to the source files (else the "
          "kernel keeps them, local to this mount, as it does for a supervised mount: a "
          "source lock would die with its server)");
ABSL_FLAG(std::string, size, "1G", "memfs: capacity of file data (e.g. 512M, 4G); ENOSPC past it");
ABSL_FLAG(uint64_t, max_inodes, 1u << 20, "memfs: maximum number of inodes");
ABSL_FLAG(std::string, memfs_data, "auto",
          "memfs: where file data lives: kernel (a private tmpfs instance reached only through "
          "this mount, its files opened with kernel passthrough so the page cache serves them; "
          "needs root), daemon (the daemon's memory; it serves every read and write), auto "
          "(kernel where allowed, else daemon; daemon with --passthrough=off)");
ABSL_FLAG(std::vector<std::string>, o, {},
          "mount options, comma-separated: allow_other, default_permissions, ro, nosuid, "
          "nodev, noexec, noatime, max_read=N, fsname=NAME, subtype=NAME, rootmode=OCTAL, "
          "user_id=N, group_id=N; and any efused option as NAME=VALUE (NAME or noNAME for "
          "yes/no ones), which overrides the same option given as --NAME");
ABSL_FLAG(std::string, config, "",
          "a file of NAME=VALUE lines setting any option (# comments), e.g. "
          "/etc/efuse/INSTANCE.conf; read first, so the command line overrides it");
ABSL_FLAG(int, workers, 0, "transport: worker threads (0: one per CPU)");
ABSL_FLAG(bool, pin_workers, true, "transport: pin each io_uring worker thread to its own CPU (sync's float)");
ABSL_FLAG(std::string, transport, "auto",
          "transport: request transport: auto (the best the kernel offers), uring (FUSE-over-io_uring "
          "queues, one per CPU; turns the kernel's enable_uring switch on when root), "
          "uring-dev (io_uring reads and writes on /dev/fuse), sync (blocking reads of "
          "/dev/fuse); an unavailable choice falls back to the next, and the log says why");
ABSL_FLAG(uint32_t, queue_depth, 4,
          "uring, uring-dev: requests in flight per queue (ring entries, or reads) (1..128)");
ABSL_FLAG(uint32_t, poll_us, 50,
          "uring: after serving, a worker keeps looking for the next request this many "
          "microseconds before it sleeps, while its clients move between CPUs (0..10000; 0: "
          "always sleep at once). Saves waking a halted CPU, which is slow in VMs (4K direct "
          "reads, 1 job: 2.7x here); a client that stays on the worker's CPU is served without "
          "polling, which would compete with it");
ABSL_FLAG(std::string, max_write, "1M", "transport: largest WRITE request (4K..1M)");
// Long by default: every change made through the mount updates the kernel's
// caches itself, so for a tree only this mount writes (memfs always; the
// passthrough default) nothing goes stale. A source others modify wants
// --watch_source, or short timeouts (see README).
ABSL_FLAG(double, entry_timeout, 60.0, "seconds the kernel caches a name lookup");
ABSL_FLAG(double, attr_timeout, 60.0, "seconds the kernel caches attributes");
ABSL_FLAG(double, negative_timeout, 0.0, "seconds the kernel caches a failed lookup");
ABSL_FLAG(bool, idmap, false,
          "allow idmapped bind mounts of this mount (FUSE_ALLOW_IDMAP, Linux 6.12+: files created "
          "through such a mount get the mapped owners); implies default_permissions, and the "
          "kernel then names the caller only in requests that create files");
ABSL_FLAG(uint32_t, request_timeout, 0,
          "seconds a request may wait for the daemon's answer before the kernel aborts the "
          "connection (FUSE_REQUEST_TIMEOUT, Linux 6.14+): clients of a hung daemon get "
          "ECONNABORTED (later calls ENOTCONN) instead of waiting forever. 0: wait forever. The kernel looks every 15 s, "
          "so the abort comes up to 15 s late, and values below 15 count as 15 (0..65535). "
          "With it, file locks are kept by the kernel, local to this mount (a lock wait would "
          "count as a hung request)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(std::string, log_to, "stderr",
          "where the log goes: stderr, or syslog (the journal under systemd; the mount "
          "helper's choice)");
ABSL_FLAG(std::string, supervise, "auto",
          "auto (the default): on, unless --transport=uring asks for the FUSE io_uring queues, "
          "which this kernel cannot hand to a successor (then off, said in one log line); "
          "on: a supervisor process mounts and keeps the connection (and memfs's storage) while "
          "server processes come and go: a server that dies (SIGKILL, a crash) is followed by a "
          "successor that takes over without unmounting, open files and working directories "
          "intact; systemd: the service's fd store keeps them (FDSTORE=1), and the next start "
          "(Restart=, systemctl restart with RestartKillSignal=SIGUSR2) takes over; the mount point "
          "is created if missing; off: one process");
ABSL_FLAG(std::string, telemetry, "auto",
          "telemetry: BPF request telemetry (efusectl stats/top/trace): auto (on where the kernel "
          "allows it, else off with one log line), on (refuse to start without it), off");
ABSL_FLAG(uint32_t, trace_sample, 0,
          "telemetry: put 1 of every N requests into the trace ring buffer (0: none until "
          "'efusectl trace' asks)");
ABSL_FLAG(uint32_t, telemetry_time_every, 1,
          "telemetry: measure the latency of 1 in N requests of each opcode (a power of 2; "
          "the first 64 of each opcode per CPU always); counts stay exact");
ABSL_FLAG(std::string, metrics_file, "",
          "telemetry: keep this file current with the Prometheus text format of the mount's "
          "figures (what `efusectl metrics` prints; replaced whole, so node_exporter's textfile "
          "collector never reads half of it); \"\": none");
ABSL_FLAG(uint32_t, metrics_interval, 15,
          "telemetry: seconds between rewrites of --metrics_file (1..3600)");
ABSL_FLAG(std::string, offload, "on",
          "offload: on or off: let the kernel serve hot inodes (needs telemetry): longer lifetimes for hot "
          "entries and attributes, page cache kept for hot memfs files, backing ids kept "
          "for hot passthrough files");
ABSL_FLAG(double, offload_timeout, 30.0,
          "offload: the entry/attribute lifetime (seconds) hot inodes get, at most");
ABSL_FLAG(uint32_t, offload_hot, 3,
          "offload: requests of one kind (since its last change) that make an inode hot");

namespace efuse {

namespace {

bool HasCapSysAdmin() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  return (data[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32))) != 0;
}

// The --fs=passthrough flags; the mount options are parsed already.
absl::Status BuildPassthroughConfig(DaemonConfig* c, bool* added_default_permissions) {
  PassthroughOptions& p = c->passthrough;
  p.source = absl::GetFlag(FLAGS_source);
  if (p.source.empty())
    return absl::InvalidArgumentError("--source: required with --fs=passthrough (the directory to serve)");
  struct stat st;
  if (stat(p.source.c_str(), &st) != 0)
    return absl::InvalidArgumentError(absl::StrCat("--source '", p.source, "': ", std::strerror(errno)));
  if (!S_ISDIR(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat("--source '", p.source, "' is not a directory"));
  const std::string mode = absl::GetFlag(FLAGS_passthrough);
  if (mode == "auto") {
    p.passthrough = PassthroughMode::kAuto;
  } else if (mode == "on") {
    p.passthrough = PassthroughMode::kOn;
    if (!HasCapSysAdmin())
      return absl::InvalidArgumentError("--passthrough=on: kernel passthrough needs CAP_SYS_ADMIN (run as root)");
  } else if (mode == "off") {
    p.passthrough = PassthroughMode::kOff;
  } else {
    return absl::InvalidArgumentError("--passthrough: '" + mode + "' is not auto, on or off");
  }
  p.fd_cache_size = absl::GetFlag(FLAGS_fd_cache);
  p.writeback_cache = absl::GetFlag(FLAGS_writeback_cache);
  p.keep_cache = absl::GetFlag(FLAGS_keep_cache);
  p.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  const std::string dir_handles = absl::GetFlag(FLAGS_dir_handles);
  if (dir_handles == "auto") {
    // Listings kept without asking are as stale as attributes kept
    // without asking: only where the source is not declared shared.
    p.dir_handles = absl::GetFlag(FLAGS_watch_source) || absl::GetFlag(FLAGS_attr_timeout) == 0 ||
                    absl::GetFlag(FLAGS_entry_timeout) == 0 || !p.cache_dir;
  } else if (dir_handles == "on" || dir_handles == "off") {
    p.dir_handles = dir_handles == "on";
  } else {
    return absl::InvalidArgumentError("--dir_handles: '" + dir_handles + "' is not auto, on or off");
  }
  // What the kernel keeps for the connection is what a restart must keep:
  // recorded as resolved, so a successor whose flags would resolve `auto`
  // the other way is held to it (KeepFixedOptions).
  absl::SetFlag(&FLAGS_dir_handles, p.dir_handles ? "on" : "off");
  if (!p.dir_handles && !p.cache_dir) {
    return absl::InvalidArgumentError(
        "--dir_handles=off: the kernel then keeps every listing, which --cache_dir=false forbids");
  }
  p.xattrs = absl::GetFlag(FLAGS_xattrs);
  p.posix_acl = absl::GetFlag(FLAGS_posix_acl) && p.xattrs;
  p.auto_inval_data = absl::GetFlag(FLAGS_auto_inval_data);
  p.killpriv_v2 = absl::GetFlag(FLAGS_killpriv_v2);
  p.locks = absl::GetFlag(FLAGS_source_locks);
  p.watch_source = absl::GetFlag(FLAGS_watch_source);
  p.readdir_ahead = absl::GetFlag(FLAGS_readdir_ahead);
  const std::string listing = absl::GetFlag(FLAGS_readdirplus);
  if (listing == "adaptive") {
    p.listing_attrs = ListingAttrs::kAdaptive;
  } else if (listing == "always") {
    p.listing_attrs = ListingAttrs::kAlways;
  } else if (listing == "never") {
    p.listing_attrs = ListingAttrs::kNever;
  } else {
    return absl::InvalidArgumentError("--readdirplus: '" + listing +
                                      "' is not adaptive, always or never");
  }
  MountOptions& m = c->session.mount;
  p.noatime = m.noatime;
  // Who the kernel lets use the mount: without allow_other, processes of
  // user_id only. Root callers pass every mode and ACL check anyway; anyone
  // else must be checked by the kernel.
  const bool root_only = !m.allow_other && m.user_id == 0;
  if (!root_only && !m.default_permissions) {
    // The daemon reaches the source as root: other users must be checked
    // by the kernel, against the attributes the source reports. (Said in
    // the log once the whole command line is known to be good.)
    m.default_permissions = true;
    *added_default_permissions = true;
  }
  return absl::OkStatus();
}

// --fs=memfs with its data in the kernel: the passthrough engine serves a
// private tmpfs (MakeFileSystem mounts it) that nothing else can reach, so
// every cache lifetime is as safe as memfs's own and nothing needs watching.
// FUSE passthrough came with Linux 6.9: before it, memfs over a private
// tmpfs would serve every byte through the daemon, slower than its own
// memory. (Whether this kernel was built with it, INIT tells.)
bool KernelMayPassThrough() {
  struct utsname u;
  int major = 0, minor = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 9);
}

void ConfigureMemfsInKernel(DaemonConfig* c, bool* added_default_permissions) {
  PassthroughOptions& p = c->passthrough;
  p.name = "memfs";
  // Nothing else reaches the private tmpfs: locks are the kernel's to keep
  // (no FLUSH per close), and, as with memfs's daemon data, no POSIX ACLs
  // (which would add default_permissions and a directory GETATTR per change).
  p.locks = false;
  p.posix_acl = false;
  p.readdir_ahead = false;  // no disk to overlap
  p.source_private = true;
  // Only this mount changes the tmpfs: the kernel's listings are never
  // stale, and a directory needs no OPENDIR round trip to check them.
  p.dir_handles = false;
  MountOptions& m = c->session.mount;
  p.noatime = false;  // no clone to make: the private tmpfs itself is noatime (MakeFileSystem)
  // The daemon reaches the files as root: users other than root are checked
  // by the kernel (as for passthrough).
  if ((m.allow_other || m.user_id != 0) && !m.default_permissions) {
    m.default_permissions = true;
    *added_default_permissions = true;
  }
}

}  // namespace

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

absl::StatusOr<DaemonConfig> BuildConfig(const std::vector<char*>& positional, const std::string& mounted_at) {
  DaemonConfig c;
  // -o words that name efused options set them (mount(8) passes everything
  // as -o); the rest are mount options proper.
  std::vector<std::string> mount_words = absl::GetFlag(FLAGS_o);
  if (absl::Status s = ApplyOptionsFromMountOptions(&mount_words); !s.ok()) return s;
  std::string level = absl::GetFlag(FLAGS_log_level);
  if (level == "debug") SetLogLevel(LogLevel::kDebug);
  else if (level == "info") SetLogLevel(LogLevel::kInfo);
  else if (level == "warning") SetLogLevel(LogLevel::kWarning);
  else if (level == "error") SetLogLevel(LogLevel::kError);
  else return absl::InvalidArgumentError("--log_level: '" + level + "' is not debug, info, warning or error");
  const std::string log_to = absl::GetFlag(FLAGS_log_to);
  if (log_to == "syslog") {
    LogToSyslog();
  } else if (log_to != "stderr") {
    return absl::InvalidArgumentError("--log_to: '" + log_to + "' is not stderr or syslog");
  }

  c.fs = absl::GetFlag(FLAGS_fs);
  if (c.fs != "memfs" && c.fs != "passthrough")
    return absl::InvalidArgumentError("--fs: unknown file system '" + c.fs +
                                      "' (available: memfs, passthrough)");
  absl::StatusOr<uint64_t> size = ParseSize(absl::GetFlag(FLAGS_size));
  if (!size.ok()) return absl::InvalidArgumentError(absl::StrCat("--size: ", size.status().message()));
  if (*size < 4096) return absl::InvalidArgumentError("--size: must be at least 4K");
  c.size_limit = *size;
  c.max_inodes = absl::GetFlag(FLAGS_max_inodes);
  if (c.max_inodes < 1) return absl::InvalidArgumentError("--max_inodes: must be at least 1");

  const std::string supervise = absl::GetFlag(FLAGS_supervise);
  if (supervise != "auto" && supervise != "on" && supervise != "off" && supervise != "systemd")
    return absl::InvalidArgumentError("--supervise: '" + supervise + "' is not auto, on, off or systemd");
  c.transport = absl::GetFlag(FLAGS_transport);
  if (absl::StatusOr<uring::TransportChoice> t = uring::ParseTransportChoice(c.transport); !t.ok())
    return absl::InvalidArgumentError(absl::StrCat("--transport: ", t.status().message()));
  // Supervised by default: a crash or an upgrade must not end the mount.
  // A server a supervisor started is supervised whatever its options say
  // now (a restart reads them again). Otherwise an explicit
  // --transport=uring, a wish a supervised server cannot meet here (below),
  // leaves a default mount unsupervised; so does a service manager's
  // notify socket, whose service expects its main process to serve and
  // keeps the mount only with --supervise=systemd.
  const bool supervisors_server = !mounted_at.empty();
  if (supervisors_server && supervise == "off")
    return absl::InvalidArgumentError(
        "--supervise=off: this mount is supervised (only a new mount can change it)");
  const bool under_a_service_manager = std::getenv("NOTIFY_SOCKET") != nullptr;
  const bool automatic = supervise == "auto" && !supervisors_server;
  const bool unsupervised_for_the_ring = automatic && c.transport == "uring";  // said at the end
  const bool unsupervised_for_the_service = automatic && !unsupervised_for_the_ring && under_a_service_manager;
  c.supervise = supervise == "on" || supervise == "systemd" || (supervise == "auto" && supervisors_server) ||
                (automatic && !unsupervised_for_the_ring && !unsupervised_for_the_service);
  c.fd_store = supervise == "systemd";
  if (c.fd_store && std::getenv("NOTIFY_SOCKET") == nullptr)
    return absl::InvalidArgumentError(
        "--supervise=systemd: $NOTIFY_SOCKET is not set (run it as a Type=notify service with "
        "FileDescriptorStoreMax=)");
  // Linux (6.18) cannot hand FUSE-over-io_uring queues to a successor: a
  // dead server's ring entries keep their requests out of FUSE_NOTIFY_RESEND
  // (fuse_resend walks the /dev/fuse processing lists only), and requests
  // sent to them fail with ECANCELED; once the ring is set up, /dev/fuse
  // reads get no requests. Supervised servers read /dev/fuse (uring-dev).
  if (c.supervise && c.transport == "uring")
    return absl::InvalidArgumentError(
        "--transport=uring with --supervise=" + (supervisors_server ? std::string("on (a supervised mount)") : supervise) +
        ": this kernel cannot hand FUSE-over-io_uring queues to a successor server (use uring-dev or auto, "
        "or --supervise=off)");
  c.poll_us = absl::GetFlag(FLAGS_poll_us);
  if (c.poll_us > 10000) return absl::InvalidArgumentError("--poll_us: must be 0..10000");
  c.queue_depth = absl::GetFlag(FLAGS_queue_depth);
  if (c.queue_depth < 1 || c.queue_depth > 128)
    return absl::InvalidArgumentError("--queue_depth: must be 1..128");

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
  absl::Status s = ParseMountOptions(mount_words, &m);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("-o: ", s.message()));
  bool added_default_permissions = false;
  bool locks_kept_by_the_kernel = false;  // said at the end
  if (c.fs == "passthrough") {
    absl::Status ps = BuildPassthroughConfig(&c, &added_default_permissions);
    if (ps.ok() && c.supervise && c.passthrough.locks) {
      // A source lock lives in an fd of the server: a killed server's locks
      // would go with it while their owners still believe they hold them.
      // Kept by the kernel, they outlive any server.
      c.passthrough.locks = false;
      locks_kept_by_the_kernel = true;
    }
    if (!ps.ok()) return ps;
  } else if (!absl::GetFlag(FLAGS_source).empty()) {
    return absl::InvalidArgumentError("--source: only meaningful with --fs=passthrough");
  }
  const std::string memfs_data = absl::GetFlag(FLAGS_memfs_data);
  if (memfs_data != "daemon" && memfs_data != "kernel" && memfs_data != "auto")
    return absl::InvalidArgumentError("--memfs_data: '" + memfs_data + "' is not daemon, kernel or auto");
  if (c.fs == "memfs" && memfs_data != "daemon") {
    // Backing files need CAP_SYS_ADMIN in the initial user namespace.
    const bool allowed = HasCapSysAdmin() && InInitialUserNamespace();
    const bool passthrough_off = absl::GetFlag(FLAGS_passthrough) == "off";
    if (memfs_data == "kernel" && !allowed)
      return absl::InvalidArgumentError("--memfs_data=kernel: kernel passthrough needs root (CAP_SYS_ADMIN in the initial user namespace)");
    if (memfs_data == "kernel" && passthrough_off)
      return absl::InvalidArgumentError("--memfs_data=kernel: needs kernel passthrough, which --passthrough=off turns off");
    c.memfs_in_kernel = allowed && !passthrough_off && (memfs_data == "kernel" || KernelMayPassThrough());
    if (c.memfs_in_kernel) {
      ConfigureMemfsInKernel(&c, &added_default_permissions);
      // auto: a kernel without FUSE passthrough (before 6.9) still serves
      // the tmpfs files, through the daemon; kernel: refuse to run so.
      c.passthrough.passthrough = memfs_data == "kernel" ? PassthroughMode::kOn : PassthroughMode::kAuto;
    }
  }
  if (m.allow_other && !m.default_permissions) {
    // Without it the kernel skips search-permission checks on cached path
    // walks (it never asks the daemon), so other users can reach files
    // below directories they cannot search.
    Log(LogLevel::kWarning,
        "-o allow_other without default_permissions: path-walk permissions of cached "
        "entries are not checked; add default_permissions for a multi-user mount");
  }
  if (!mounted_at.empty()) {
    // A supervisor's server: the mount is there, and a stat of it would
    // wait for this very process to answer.
    m.mountpoint = mounted_at;
  } else {
    char resolved[PATH_MAX];
    // Under systemd the mount point is made here: a unit's `mkdir -p` of
    // one whose server is being replaced would stat it and wait forever.
    if (c.fd_store && mkdir(positional[1], 0755) == 0)
      Log(LogLevel::kInfo, "created the mount point %s", positional[1]);
    if (realpath(positional[1], resolved) == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("mount point '", positional[1], "': ", std::strerror(errno)));
    struct stat st;
    if (stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode))
      return absl::InvalidArgumentError(absl::StrCat("mount point '", positional[1], "' is not a directory"));
    m.mountpoint = resolved;
  }

  if (c.fs == "passthrough") {
    char src[PATH_MAX];
    if (realpath(c.passthrough.source.c_str(), src) != nullptr) {
      const std::string s(src), mp(m.mountpoint);
      // Serving the mount through itself would make the daemon wait on its
      // own requests.
      if (s == mp || s.starts_with(mp + "/"))
        return absl::InvalidArgumentError(absl::StrCat("--source '", c.passthrough.source,
                                                       "' lies inside the mount point"));
      if (mp.starts_with(s == "/" ? s : s + "/"))
        Log(LogLevel::kWarning,
            "--source '%s' contains the mount point: looking up the mount point through "
            "the mount would wait on this daemon",
            c.passthrough.source);
    }
  }

  uring::TransportSettings ts;
  ts.choice = *uring::ParseTransportChoice(c.transport);  // checked above
  ts.workers = workers;
  ts.pin = c.session.pin_workers;
  ts.depth = c.queue_depth;
  ts.poll_us = c.poll_us;
  ts.supervised = c.supervise;
  c.session.transports = uring::TransportsFor(ts);
  if (c.supervise && c.transport == "auto") {
    c.session.status_lines.emplace_back(
        "fuse_ring_supervised", "not used: this kernel cannot hand FUSE-over-io_uring queues to a successor server");
  }
  c.session.init.wanted_flags = Session::DefaultInitFlags();
  c.session.init.max_write = static_cast<uint32_t>(*max_write);
  const uint32_t request_timeout = absl::GetFlag(FLAGS_request_timeout);
  if (request_timeout > 65535)
    return absl::InvalidArgumentError("--request_timeout: must be seconds from 0 to 65535");
  c.session.init.request_timeout = static_cast<uint16_t>(request_timeout);
  if (request_timeout != 0) c.session.init.wanted_flags |= abi::init::kRequestTimeout;
  if (absl::GetFlag(FLAGS_idmap)) {
    // The kernel refuses FUSE_ALLOW_IDMAP (and the whole INIT) without
    // default_permissions: it must check permissions for callers it no
    // longer names to the daemon.
    c.session.init.wanted_flags |= abi::init::kAllowIdmap;
    if (!m.default_permissions) {
      m.default_permissions = true;
      Log(LogLevel::kInfo, "--idmap: default_permissions added (the kernel checks permissions)");
    }
  }
  c.telemetry = absl::GetFlag(FLAGS_telemetry);
  if (c.telemetry != "auto" && c.telemetry != "on" && c.telemetry != "off")
    return absl::InvalidArgumentError("--telemetry: '" + c.telemetry + "' is not auto, on or off");
  c.trace_sample = absl::GetFlag(FLAGS_trace_sample);
  c.time_every = absl::GetFlag(FLAGS_telemetry_time_every);
  if (c.time_every == 0 || (c.time_every & (c.time_every - 1)) != 0 || c.time_every > 65536)
    return absl::InvalidArgumentError("--telemetry_time_every: must be a power of 2 from 1 to 65536");
  c.metrics_file = absl::GetFlag(FLAGS_metrics_file);
  c.metrics_interval = absl::GetFlag(FLAGS_metrics_interval);
  if (c.metrics_interval < 1 || c.metrics_interval > 3600)
    return absl::InvalidArgumentError("--metrics_interval: must be seconds from 1 to 3600");
  if (!c.metrics_file.empty()) {
    const std::string dir = c.metrics_file.find('/') == std::string::npos
                                ? std::string(".")
                                : c.metrics_file.substr(0, c.metrics_file.rfind('/') + 1);
    if (access(dir.c_str(), W_OK) != 0)
      return absl::InvalidArgumentError(absl::StrCat("--metrics_file '", c.metrics_file, "': cannot write in ",
                                                     dir, ": ", std::strerror(errno)));
  }
  const std::string offload = absl::GetFlag(FLAGS_offload);
  if (offload != "on" && offload != "off")
    return absl::InvalidArgumentError("--offload: '" + offload + "' is not on or off");
  c.session.offload = offload == "on";
  const double offload_timeout = absl::GetFlag(FLAGS_offload_timeout);
  if (!(offload_timeout > 0) || offload_timeout > 86400)
    return absl::InvalidArgumentError("--offload_timeout: must be seconds in (0, 86400]");
  c.session.offload_options.max_timeout = offload_timeout;
  c.session.offload_options.hot_requests = absl::GetFlag(FLAGS_offload_hot);
  if (c.session.offload_options.hot_requests < 1)
    return absl::InvalidArgumentError("--offload_hot: must be at least 1");
  c.passthrough.entry_timeout = c.entry_timeout;
  c.passthrough.attr_timeout = c.attr_timeout;
  c.passthrough.negative_timeout = c.negative_timeout;
  // Blocking locks wait on their own threads (the dispatcher's async
  // slots), not on workers.
  c.passthrough.max_lock_waiters = 64;
  // What the daemon chose for the user, once every option is good.
  if (unsupervised_for_the_ring) {
    Log(LogLevel::kInfo,
        "--transport=uring: not supervised (this kernel cannot hand FUSE-over-io_uring queues to a "
        "successor server): a crash or an upgrade ends the mount");
  }
  if (unsupervised_for_the_service) {
    Log(LogLevel::kInfo,
        "a service ($NOTIFY_SOCKET): not supervised, a crash ends the mount (--supervise=systemd keeps "
        "it in the service's fd store)");
  }
  if (locks_kept_by_the_kernel) {
    Log(LogLevel::kInfo,
        "supervised: file locks are kept by the kernel, local to this mount (a source lock would "
        "die with the server that holds it)");
  }
  if (added_default_permissions) {
    Log(LogLevel::kInfo,
        "passthrough: a mount users other than root may use (allow_other or user_id): "
        "default_permissions added (the kernel checks permissions; the daemon acts on the "
        "source with its own credentials)");
  }
  return c;
}

absl::StatusOr<int> MakeMemfsStorage(const DaemonConfig& c) {
  if (!c.memfs_in_kernel) {
    // The daemon's own data: a memfd the supervisor keeps (DataStore).
    absl::StatusOr<int> fd = DataStore::NewMemfd();
    if (!fd.ok()) return absl::InternalError(absl::StrCat("memfs: ", fd.status().message()));
    return fd;
  }
  PrivateTmpfsOptions t;
  t.size = c.size_limit;
  t.max_inodes = c.max_inodes;
  t.root_mode = c.session.mount.rootmode & 07777;
  t.root_uid = c.session.mount.user_id;
  t.root_gid = c.session.mount.group_id;
  t.noatime = c.session.mount.noatime;
  absl::StatusOr<int> root = MountPrivateTmpfs(t);
  if (!root.ok()) return absl::InvalidArgumentError(absl::StrCat("--memfs_data=kernel: ", root.status().message()));
  return root;
}

absl::StatusOr<std::unique_ptr<FileSystem>> MakeFileSystem(const DaemonConfig& c) {
  if (c.fs == "memfs" && c.memfs_in_kernel) {
    int root_fd = c.memfs_storage_fd;
    if (root_fd < 0) {
      absl::StatusOr<int> root = MakeMemfsStorage(c);
      if (!root.ok()) return root.status();
      root_fd = *root;
    }
    PassthroughOptions p = c.passthrough;
    p.source_fd = root_fd;
    p.source = "(private tmpfs)";
    absl::StatusOr<std::unique_ptr<PassthroughFs>> fs = PassthroughFs::Create(p);
    if (!fs.ok()) return absl::InvalidArgumentError(absl::StrCat("--memfs_data=kernel: ", fs.status().message()));
    return std::unique_ptr<FileSystem>(std::move(*fs));
  }
  if (c.fs == "passthrough") {
    absl::StatusOr<std::unique_ptr<PassthroughFs>> fs = PassthroughFs::Create(c.passthrough);
    if (!fs.ok()) return absl::InvalidArgumentError(absl::StrCat("--source: ", fs.status().message()));
    return std::unique_ptr<FileSystem>(std::move(*fs));
  }
  MemFsOptions o;
  o.size_limit = c.size_limit;
  o.max_inodes = c.max_inodes;
  o.entry_timeout = c.entry_timeout;
  o.attr_timeout = c.attr_timeout;
  o.negative_timeout = c.negative_timeout;
  o.root_uid = c.session.mount.user_id;
  o.root_gid = c.session.mount.group_id;
  o.root_mode = c.session.mount.rootmode & 07777;
  o.noatime = c.session.mount.noatime;
  // Under a supervisor (or an fd store): the data in the memfd it keeps,
  // and the rest journaled for a successor to rebuild.
  o.data_fd = c.memfs_storage_fd;
  if (o.data_fd < 0) {
    absl::StatusOr<int> store = MakeMemfsStorage(c);  // this server's own
    if (!store.ok()) return store.status();
    o.data_fd = *store;
  }
  o.journal = c.session.state;
  // Only this mount changes memfs, so its listings stay right without
  // OPENDIR; but then nobody checks an opendir() but the kernel, which it
  // does with default_permissions (root passes anyway).
  const MountOptions& m = c.session.mount;
  o.dir_handles = !m.default_permissions && (m.allow_other || m.user_id != 0);
  return std::unique_ptr<FileSystem>(std::make_unique<MemFs>(o));
}

absl::Status BackendResult(const FileSystem& fs) {
  if (const auto* p = dynamic_cast<const PassthroughFs*>(&fs); p != nullptr && !p->init_ok())
    return absl::FailedPreconditionError(
        "--passthrough=on: the kernel refused passthrough at INIT (see the log above)");
  return absl::OkStatus();
}

}  // namespace efuse
