// core/server.cc — Serve and ServeMain: the engine assembled for a program
// built on libefuse (efused assembles the same parts with its own options).
#include "core/server.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bpf/telemetry.h"
#include "core/log.h"
#include "core/mount.h"
#include "core/session.h"
#include "proto/abi.h"
#include "uring/transport_choice.h"

namespace efuse {
namespace {

ServeResult BadOption(std::string message) { return ServeResult{2, std::move(message)}; }

}  // namespace

ServeResult Serve(FileSystem& fs, const ServerOptions& o) {
  SetLogName(o.log_name);
  if (o.debug) SetLogLevel(LogLevel::kDebug);
  SessionOptions so;
  MountOptions& m = so.mount;
  // The caller's mount unless -o says otherwise (who may use it without
  // allow_other, and who owns the root for fusermount3).
  m.user_id = getuid();
  m.group_id = getgid();
  // Shown as "fuse.efuse.NAME" (efusectl lists the fuse.efuse* mounts),
  // the source NAME; -o fsname=, subtype= say otherwise.
  // (Commas and spaces would split the option string mount gets.)
  std::string name = o.log_name;
  for (char& c : name) {
    if (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '=') c = '_';
  }
  m.fsname = name;
  m.subtype = "efuse." + name;
  if (absl::Status s = ParseMountOptions(o.mount_options, &m); !s.ok()) return BadOption(absl::StrCat("-o: ", s.message()));
  if (o.mountpoint.empty()) return BadOption("no mount point");
  char resolved[PATH_MAX];
  struct stat st;
  if (realpath(o.mountpoint.c_str(), resolved) == nullptr)
    return BadOption(absl::StrCat("mount point '", o.mountpoint, "': ", std::strerror(errno)));
  if (stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode))
    return BadOption(absl::StrCat("mount point '", o.mountpoint, "' is not a directory"));
  m.mountpoint = resolved;

  absl::StatusOr<uring::TransportChoice> choice = uring::ParseTransportChoice(o.transport);
  if (!choice.ok()) return BadOption(absl::StrCat("transport: ", choice.status().message()));
  if (o.workers < 0 || o.workers > 1024) return BadOption("workers: must be 0..1024");
  if (o.poll_us > 10000) return BadOption("poll_us: must be 0..10000");
  if (o.max_write < 4096 || o.max_write > (1u << 20)) return BadOption("max_write: must be 4096..1048576 bytes");
  if (o.telemetry != "auto" && o.telemetry != "on" && o.telemetry != "off")
    return BadOption(absl::StrCat("telemetry: '", o.telemetry, "' is not auto, on or off"));
  uring::TransportSettings ts;
  ts.choice = *choice;
  ts.workers = o.workers;
  ts.poll_us = o.poll_us;
  ts.pin = o.pin_workers;
  so.transports = uring::TransportsFor(ts);
  so.workers = o.workers;
  so.pin_workers = o.pin_workers;
  // Not the duties efused's own backends take on (a file system asks for
  // them in WantedInitFlags): O_TRUNC carried out by OPEN (kAtomicOTrunc),
  // and clearing setuid/setgid and capabilities on WRITE, truncate and
  // chown (kHandleKillprivV2); without them the kernel does both.
  so.init.wanted_flags = Session::DefaultInitFlags() & ~(abi::init::kAtomicOTrunc | abi::init::kHandleKillprivV2);
  so.init.max_write = o.max_write;

  std::unique_ptr<bpf::KernelTelemetry> telemetry;
  if (o.telemetry != "off") {
    absl::StatusOr<std::unique_ptr<bpf::KernelTelemetry>> loaded = bpf::KernelTelemetry::Load({});
    if (loaded.ok()) {
      telemetry = std::move(*loaded);
    } else if (o.telemetry == "on") {
      return ServeResult{1, absl::StrCat("telemetry: ", loaded.status().message())};
    } else {
      Log(LogLevel::kInfo, "telemetry off: %s", std::string(loaded.status().message()));
      so.status_lines.emplace_back("telemetry", absl::StrCat("off (", loaded.status().message(), ")"));
    }
  } else {
    so.status_lines.emplace_back("telemetry", "off");
  }
  so.telemetry = telemetry.get();
  so.offload = o.offload && telemetry != nullptr;

  // The session blocks the signals it waits for; the caller gets its own
  // mask back.
  sigset_t caller_mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &caller_mask);
  absl::Status s;
  {
    Session session(&fs, std::move(so));
    s = session.Run();
  }
  pthread_sigmask(SIG_SETMASK, &caller_mask, nullptr);
  if (!s.ok()) return ServeResult{1, std::string(s.message())};
  return ServeResult{};
}

int ServeMain(FileSystem& fs, int argc, char** argv, ServerOptions o) {
  const std::string program = argc > 0 ? std::string(argv[0]) : std::string("efuse");
  if (o.log_name == "efuse" && argc > 0) {
    const std::string_view base = std::string_view(program).substr(program.rfind('/') + 1);
    if (!base.empty()) o.log_name = std::string(base);
  }
  auto usage = [&](const std::string& what) {
    std::fprintf(stderr,
                 "%s: %s (usage: %s MOUNTPOINT [-o OPTIONS] [--transport=auto|uring|uring-dev|sync] "
                 "[--workers=N] [--poll-us=N] [--telemetry=auto|on|off] [--offload=on|off] [--debug])\n",
                 o.log_name.c_str(), what.c_str(), program.c_str());
    return 2;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value_of = [&](const std::string& flag, std::string* out) {
      if (!a.starts_with(flag + "=")) return false;
      *out = a.substr(flag.size() + 1);
      return true;
    };
    std::string v;
    if (a == "-o") {
      if (i + 1 >= argc) return usage("-o needs a value");
      for (absl::string_view w : absl::StrSplit(argv[++i], ',', absl::SkipEmpty())) o.mount_options.emplace_back(w);
    } else if (a.starts_with("-o") && a.size() > 2) {
      for (absl::string_view w : absl::StrSplit(a.substr(2), ',', absl::SkipEmpty())) o.mount_options.emplace_back(w);
    } else if (a == "-f") {
      // libfuse programs' "foreground": this one never daemonizes.
    } else if (a == "--debug" || a == "-d") {
      o.debug = true;
    } else if (value_of("--transport", &v)) {
      o.transport = v;
    } else if (value_of("--telemetry", &v)) {
      o.telemetry = v;
    } else if (value_of("--offload", &v)) {
      if (v != "on" && v != "off") return usage(absl::StrCat("--offload: '", v, "' is not on or off"));
      o.offload = v == "on";
    } else if (value_of("--workers", &v)) {
      if (!absl::SimpleAtoi(v, &o.workers)) return usage(absl::StrCat("--workers: '", v, "' is not a number"));
    } else if (value_of("--poll-us", &v)) {
      if (!absl::SimpleAtoi(v, &o.poll_us)) return usage(absl::StrCat("--poll-us: '", v, "' is not a number"));
    } else if (a.starts_with("-")) {
      return usage(absl::StrCat("unknown option '", a, "'"));
    } else if (o.mountpoint.empty()) {
      o.mountpoint = a;
    } else {
      return usage(absl::StrCat("unexpected argument '", a, "' (only one mount point)"));
    }
  }
  if (o.mountpoint.empty()) return usage("missing mount point");
  ServeResult r = Serve(fs, o);
  if (!r.ok()) std::fprintf(stderr, "%s: %s\n", o.log_name.c_str(), r.error.c_str());
  return r.exit_code;
}

}  // namespace efuse
