#include "bpf/telemetry.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "bpf/telemetry.skel.h"
#include "core/log.h"

namespace efuse::bpf {
namespace {

// libbpf's warnings while loading, kept so that a refusal can name its
// cause in the one log line the daemon writes (not printed to stderr).
thread_local std::string* libbpf_messages = nullptr;

int CollectLibbpfMessage(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG || libbpf_messages == nullptr) return 0;
  char line[512];
  int n = std::vsnprintf(line, sizeof(line), format, args);
  libbpf_messages->append(line);
  return n;
}

// The reason in what libbpf printed: the verifier's verdict (the line
// before its "processed N insns" summary) when there is a program log, else
// the last line.
std::string Reason(const std::string& text) {
  std::string last, before_summary;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    l = absl::StripAsciiWhitespace(l);
    if (l.empty()) continue;
    if (absl::StartsWith(l, "processed ") && before_summary.empty()) before_summary = last;
    last = std::string(l);
  }
  return before_summary.empty() ? last : before_summary;
}

absl::Status EnsureBpffs() {
  struct statfs fs;
  if (statfs("/sys/fs/bpf", &fs) == 0 && fs.f_type == BPF_FS_MAGIC) return absl::OkStatus();
  mkdir("/sys/fs/bpf", 0700);
  if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0 && errno != EBUSY) {
    return absl::ErrnoToStatus(errno, "mounting bpffs at /sys/fs/bpf");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KernelTelemetry>> KernelTelemetry::Load(const TelemetryOptions& options) {
  std::string messages;
  libbpf_messages = &messages;
  libbpf_print_fn_t previous = libbpf_set_print(CollectLibbpfMessage);
  auto refused = [&](const char* step, int err) {
    libbpf_set_print(previous);
    libbpf_messages = nullptr;
    std::string why = Reason(messages);
    return absl::ErrnoToStatus(err < 0 ? -err : err,
                               absl::StrCat(step, why.empty() ? "" : " (libbpf: ", why, why.empty() ? "" : ")"));
  };
  efuse_telemetry* skel = efuse_telemetry__open();
  if (skel == nullptr) return refused("opening the BPF object", errno);
  if (options.carry_on_connection >= 0) {
    const std::string dir = PinDir(static_cast<unsigned>(options.carry_on_connection));
    for (const char* name : {"stats", "hot_inodes", "misc"}) {
      const int fd = bpf_obj_get(absl::StrCat(dir, "/", name).c_str());
      if (fd < 0) continue;  // none pinned (telemetry was off): new ones
      bpf_map* map = bpf_object__find_map_by_name(skel->obj, name);
      if (map != nullptr) bpf_map__reuse_fd(map, fd);  // dups fd; a map of another shape fails the load
      close(fd);
    }
  }
  if (int err = efuse_telemetry__load(skel); err != 0) {
    efuse_telemetry__destroy(skel);
    return refused("loading the BPF programs", err);
  }
  if (options.attach_on_load) {
    if (int err = efuse_telemetry__attach(skel); err != 0) {
      efuse_telemetry__destroy(skel);
      return refused("attaching to tp_btf/fuse_request_send and _end", err);
    }
  }
  libbpf_set_print(previous);
  libbpf_messages = nullptr;
  std::unique_ptr<KernelTelemetry> t(new KernelTelemetry(skel, options));
  t->attached_ = options.attach_on_load;
  return t;
}

KernelTelemetry::KernelTelemetry(efuse_telemetry* skel, const TelemetryOptions& options)
    : skel_(skel),
      options_(options),
      maps_(TelemetryMaps::Borrow(bpf_map__fd(skel->maps.config), bpf_map__fd(skel->maps.stats),
                                  bpf_map__fd(skel->maps.hot_inodes), bpf_map__fd(skel->maps.misc),
                                  bpf_map__fd(skel->maps.events))) {}

KernelTelemetry::~KernelTelemetry() {
  Detach();
  efuse_telemetry__destroy(skel_);  // detaches the programs
}

absl::Status KernelTelemetry::Attach(dev_t dev, unsigned connection_id) {
  if (!attached_) {
    const auto started = std::chrono::steady_clock::now();
    if (int err = efuse_telemetry__attach(skel_); err != 0) {
      efuse_telemetry__detach(skel_);  // (a program attached before the other failed)
      return absl::UnavailableError(absl::StrCat("attaching to tp_btf/fuse_request_send and _end: ",
                                                 std::strerror(-err), "; nothing is counted"));
    }
    attached_ = true;
    Log(LogLevel::kInfo, "telemetry: programs attached in %.1f ms",
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
  }
  efuse_config config{};
  config.dev = KernelDev(dev);
  config.sample_every = options_.sample_every;
  config.owner_pid = static_cast<__u32>(getpid());
  config.time_every = options_.time_every;
  if (absl::Status s = maps_.WriteConfig(config); !s.ok()) return s;
  if (absl::Status s = Pin(connection_id); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), " (counting goes on; efusectl cannot read it)"));
  }
  return absl::OkStatus();
}

void KernelTelemetry::ReleasePrograms() {
  // (The skeleton's links are destroyed and cleared: a second call, or the
  // destructor's, finds none.)
  efuse_telemetry__detach(skel_);
}

std::vector<int> KernelTelemetry::ProgramLinkFds() const {
  std::vector<int> fds;
  for (bpf_link* link : {skel_->links.efuse_request_send, skel_->links.efuse_request_end}) {
    if (link != nullptr && bpf_link__fd(link) >= 0) fds.push_back(bpf_link__fd(link));
  }
  return fds;
}

int KernelTelemetry::ConfigMapFd() const { return bpf_map__fd(skel_->maps.config); }

bool KernelTelemetry::QuietPrograms(int config_map_fd) {
  const uint32_t key = 0;
  const efuse_config off{};  // dev 0: no mount's requests are counted
  return bpf_map_update_elem(config_map_fd, &key, &off, BPF_ANY) == 0;
}

void KernelTelemetry::Detach() {
  efuse_config off{};
  maps_.WriteConfig(off).IgnoreError();
  Unpin();
}

absl::Status KernelTelemetry::Pin(unsigned connection_id) {
  if (absl::Status s = EnsureBpffs(); !s.ok()) return s;
  // A daemon that died without unpinning left this connection id's maps
  // (ids are reused only after that mount is gone): replace them.
  RemovePinned(connection_id);
  const std::string dir = PinDir(connection_id);
  mkdir(EFUSE_BPF_PIN_ROOT, 0755);
  mkdir(dir.c_str(), 0755);
  absl::MutexLock l(&mu_);
  pinned_ = connection_id;  // also what a half-done pinning leaves to remove
  for (const char* name : kPinnedMaps) {
    const std::string path = absl::StrCat(dir, "/", name);
    bpf_map* map = bpf_object__find_map_by_name(skel_->obj, name);
    const int err = map == nullptr ? -ENOENT : bpf_map__pin(map, path.c_str());
    if (err != 0) return absl::ErrnoToStatus(-err, absl::StrCat("pinning ", path));
  }
  return absl::OkStatus();
}

void KernelTelemetry::Unpin() {
  absl::MutexLock l(&mu_);
  if (!pinned_) return;
  RemovePinned(*pinned_);
  pinned_.reset();
}

absl::Status KernelTelemetry::ReadHotInodes(uint64_t since_ns, std::vector<HotInode>* out) {
  return maps_.ReadHotInodes(since_ns, out);
}

void KernelTelemetry::AppendStatus(std::vector<std::pair<std::string, std::string>>* lines) const {
  absl::MutexLock l(&mu_);
  if (!attached_) {
    lines->emplace_back("telemetry", "off (the BPF programs could not be attached when this server took over)");
    return;
  }
  lines->emplace_back("telemetry", pinned_ ? absl::StrCat("on (BPF maps pinned at ", PinDir(*pinned_), ")")
                                           : "on (BPF programs attached; maps not pinned)");
  absl::StatusOr<efuse_config> c = maps_.ReadConfig();
  if (c.ok()) {
    lines->emplace_back("telemetry_sample_every", absl::StrCat(c->sample_every));
    lines->emplace_back("telemetry_time_every", absl::StrCat(c->time_every));
  }
  absl::StatusOr<efuse_misc> m = maps_.ReadMisc();
  if (m.ok()) lines->emplace_back("telemetry_events_dropped", absl::StrCat(m->events_dropped));
}

}  // namespace efuse::bpf
