#include "tools/efusectl/telemetry_view.h"

#include <bpf/libbpf.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bpf/telemetry_maps.h"
#include "core/clock.h"
#include "proto/opcode.h"
#include "tools/efusectl/metrics.h"
#include "tools/efusectl/status_file.h"

namespace efuse::ctl {
namespace {

using bpf::OpStatsTable;
using bpf::TelemetryMaps;

std::atomic<bool> stop_requested{false};

void RequestStop(int) { stop_requested.store(true); }

void CatchStopSignals() {
  struct sigaction sa {};
  sa.sa_handler = RequestStop;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Sleeps up to `seconds`, returning early (false) on SIGINT/SIGTERM.
bool SleepUnlessStopped(double seconds) {
  const int steps = std::max(1, static_cast<int>(seconds * 20));
  for (int i = 0; i < steps; ++i) {
    if (stop_requested.load()) return false;
    usleep(static_cast<useconds_t>(seconds * 1e6 / steps));
  }
  return !stop_requested.load();
}

double NowSeconds() { return static_cast<double>(MonotonicNs()) / 1e9; }

// --name=value options; every option must be one of `known`.
struct Options {
  std::map<std::string, std::string> values;
  std::string error;

  Options(const std::vector<std::string>& args, std::initializer_list<const char*> known) {
    for (const std::string& a : args) {
      const size_t eq = a.find('=');
      const std::string name = a.substr(0, eq);
      bool ok = a.rfind("--", 0) == 0 && eq != std::string::npos;
      if (ok) ok = std::any_of(known.begin(), known.end(), [&](const char* k) { return name == k; });
      if (!ok) {
        error = absl::StrCat("unknown option '", a, "' (options: ");
        for (const char* k : known) absl::StrAppend(&error, k, "=N ");
        error.back() = ')';
        return;
      }
      values[name] = a.substr(eq + 1);
    }
  }
  // The value of `name` as a number in [lo, hi], or `fallback`; sets error.
  double Number(const char* name, double fallback, double lo, double hi) {
    auto it = values.find(name);
    if (it == values.end()) return fallback;
    double v;
    if (!absl::SimpleAtod(it->second, &v) || v < lo || v > hi) {
      error = absl::StrCat(name, ": '", it->second, "' is not a number from ", lo, " to ", hi);
      return fallback;
    }
    return v;
  }
};

struct Opened {
  Target target;
  TelemetryMaps maps;
};

// Opens each target's pinned maps; names the ones without telemetry.
std::vector<Opened> OpenTargets(const std::vector<Target>& targets) {
  std::vector<Opened> out;
  for (const Target& t : targets) {
    absl::StatusOr<TelemetryMaps> maps = TelemetryMaps::OpenPinned(t.connection_id);
    if (!maps.ok()) {
      std::fprintf(stderr, "efusectl: %s: no telemetry (%s); see 'efusectl status'\n", t.mountpoint.c_str(),
                   std::string(maps.status().message()).c_str());
      continue;
    }
    // Maps a killed daemon could not unpin stay behind, frozen: say so
    // rather than show old figures as live.
    absl::StatusOr<efuse_config> config = maps->ReadConfig();
    if (config.ok() && config->owner_pid != 0 && kill(static_cast<pid_t>(config->owner_pid), 0) != 0 &&
        errno == ESRCH) {
      std::fprintf(stderr, "efusectl: %s: the pinned telemetry belongs to a daemon that is gone (pid %u); "
                   "remove %s\n", t.mountpoint.c_str(), config->owner_pid, bpf::PinDir(t.connection_id).c_str());
      continue;
    }
    out.push_back({t, std::move(*maps)});
  }
  return out;
}

std::string FormatNs(uint64_t ns) {
  if (ns == 0) return "-";
  if (ns < 10'000) return absl::StrCat(ns, "ns");
  if (ns < 10'000'000) return absl::StrFormat("%.1fus", static_cast<double>(ns) / 1e3);
  if (ns < 10'000'000'000ull) return absl::StrFormat("%.1fms", static_cast<double>(ns) / 1e6);
  return absl::StrFormat("%.1fs", static_cast<double>(ns) / 1e9);
}

std::string SlotName(uint32_t slot) { return slot == 0 ? "(other)" : proto::OpcodeName(slot); }

// One opcode's figures between two reads (or since the start: before all 0).
struct OpRow {
  uint32_t slot;
  uint64_t total, delta, errors;
  efuse_op_stats window;  // the histogram of the interval, or of all time
};

std::vector<OpRow> OpRows(const OpStatsTable& before, const OpStatsTable& after, bool window) {
  std::vector<OpRow> rows;
  for (uint32_t slot = 0; slot < EFUSE_OPCODE_SLOTS; ++slot) {
    const efuse_op_stats& a = after[slot];
    if (a.completed == 0) continue;
    OpRow r{slot, a.completed, a.completed - before[slot].completed, a.errors, a};
    if (window) {
      for (int b = 0; b < EFUSE_LATENCY_BUCKETS; ++b)
        r.window.latency_hist[b] = a.latency_hist[b] - before[slot].latency_hist[b];
      r.window.timed = a.timed - before[slot].timed;
      r.window.latency_sum_ns = a.latency_sum_ns - before[slot].latency_sum_ns;
    }
    rows.push_back(r);
  }
  return rows;
}

void PrintOpTable(const std::vector<OpRow>& rows, double interval, bool window) {
  std::printf("  %-16s %12s %10s %8s %9s %9s %9s %9s\n", "OPCODE", "COUNT", "RATE/s", "ERRORS", "AVG", "P50",
              "P99", "MAX");
  for (const OpRow& r : rows) {
    const efuse_op_stats& h = r.window;
    const uint64_t avg = h.timed ? h.latency_sum_ns / h.timed : 0;
    std::printf("  %-16s %12llu %10s %8llu %9s %9s %9s %9s\n", SlotName(r.slot).c_str(),
                static_cast<unsigned long long>(r.total),
                interval > 0 ? absl::StrFormat("%.0f", static_cast<double>(r.delta) / interval).c_str() : "-",
                static_cast<unsigned long long>(r.errors), FormatNs(avg).c_str(),
                // Bounded by the largest latency seen (all time: a bound
                // for an interval's too).
                FormatNs(bpf::HistogramQuantile(h.latency_hist, 0.5, h.latency_max_ns)).c_str(),
                FormatNs(bpf::HistogramQuantile(h.latency_hist, 0.99, h.latency_max_ns)).c_str(),
                window ? "-" : FormatNs(r.window.latency_max_ns).c_str());
  }
}

}  // namespace

int StatsCommand(const std::vector<Target>& targets, const std::vector<std::string>& args) {
  Options o(args, {"--interval"});
  const double interval = o.Number("--interval", 1.0, 0, 3600);
  if (!o.error.empty()) {
    std::fprintf(stderr, "efusectl stats: %s\n", o.error.c_str());
    return 2;
  }
  std::vector<Opened> opened = OpenTargets(targets);
  if (opened.empty()) return 1;
  std::vector<OpStatsTable> before(opened.size());
  for (size_t i = 0; i < opened.size(); ++i) {
    absl::StatusOr<OpStatsTable> s = opened[i].maps.ReadStats();
    if (s.ok()) before[i] = *s;
  }
  const double t0 = NowSeconds();
  if (interval > 0) SleepUnlessStopped(interval);
  const double elapsed = interval > 0 ? NowSeconds() - t0 : 0;
  for (size_t i = 0; i < opened.size(); ++i) {
    absl::StatusOr<OpStatsTable> after = opened[i].maps.ReadStats();
    if (!after.ok()) {
      std::fprintf(stderr, "efusectl: %s: %s\n", opened[i].target.mountpoint.c_str(),
                   std::string(after.status().message()).c_str());
      continue;
    }
    uint64_t total = 0, delta = 0;
    for (uint32_t s = 0; s < EFUSE_OPCODE_SLOTS; ++s) {
      total += (*after)[s].completed;
      delta += (*after)[s].completed - before[i][s].completed;
    }
    std::printf("%s (connection %u): %llu requests since the daemon started", opened[i].target.mountpoint.c_str(),
                opened[i].target.connection_id, static_cast<unsigned long long>(total));
    if (elapsed > 0) std::printf(", %.0f/s over the last %.1f s", static_cast<double>(delta) / elapsed, elapsed);
    std::printf("\n  latency: from the kernel sending the request to its reply (queueing + daemon), all time\n");
    PrintOpTable(OpRows(before[i], *after, /*window=*/false), elapsed, /*window=*/false);
    absl::StatusOr<efuse_misc> misc = opened[i].maps.ReadMisc();
    if (misc.ok() && (misc->events_dropped || misc->inflight_full)) {
      std::printf("  trace events dropped: %llu, sends not timed (table full): %llu\n",
                  static_cast<unsigned long long>(misc->events_dropped),
                  static_cast<unsigned long long>(misc->inflight_full));
    }
  }
  return 0;
}

int TopCommand(const std::vector<Target>& targets, const std::vector<std::string>& args) {
  Options o(args, {"--interval", "--iterations", "--count"});
  const double interval = o.Number("--interval", 1.0, 0.1, 3600);
  const int iterations = static_cast<int>(o.Number("--iterations", 0, 0, 1e9));  // 0: until ^C
  const size_t count = static_cast<size_t>(o.Number("--count", 15, 1, 1000));
  if (!o.error.empty()) {
    std::fprintf(stderr, "efusectl top: %s\n", o.error.c_str());
    return 2;
  }
  std::vector<Opened> opened = OpenTargets(targets);
  if (opened.empty()) return 1;
  CatchStopSignals();
  const bool tty = isatty(STDOUT_FILENO);
  struct State {
    OpStatsTable stats{};
    absl::flat_hash_map<uint64_t, uint64_t> inode_totals;
  };
  std::vector<State> state(opened.size());
  auto inode_total = [](const HotInode& h) {
    uint64_t n = 0;
    for (uint32_t c : h.counts) n += c;
    return n;
  };
  // The first read sets the baseline; every later one shows the interval.
  for (size_t i = 0; i < opened.size(); ++i) {
    if (auto s = opened[i].maps.ReadStats(); s.ok()) state[i].stats = *s;
    std::vector<HotInode> rows;
    if (opened[i].maps.ReadHotInodes(0, &rows).ok())
      for (const HotInode& h : rows) state[i].inode_totals[h.nodeid] = inode_total(h);
  }
  double last = NowSeconds();
  for (int it = 0; iterations == 0 || it < iterations; ++it) {
    if (!SleepUnlessStopped(interval)) break;
    const double now = NowSeconds();
    const double dt = now - last;
    last = now;
    if (tty) std::printf("\033[H\033[2J");
    time_t wall = time(nullptr);
    char clock[16];
    strftime(clock, sizeof(clock), "%H:%M:%S", localtime(&wall));
    std::printf("efusectl top - %s, every %.1f s (^C to quit)\n", clock, interval);
    for (size_t i = 0; i < opened.size(); ++i) {
      absl::StatusOr<OpStatsTable> stats = opened[i].maps.ReadStats();
      if (!stats.ok()) continue;
      std::vector<OpRow> ops = OpRows(state[i].stats, *stats, /*window=*/true);
      state[i].stats = *stats;
      uint64_t delta = 0;
      for (const OpRow& r : ops) delta += r.delta;
      std::printf("\n%s (connection %u): %.0f requests/s\n", opened[i].target.mountpoint.c_str(),
                  opened[i].target.connection_id, static_cast<double>(delta) / dt);
      std::sort(ops.begin(), ops.end(), [](const OpRow& a, const OpRow& b) { return a.delta > b.delta; });
      ops.erase(std::remove_if(ops.begin(), ops.end(), [](const OpRow& r) { return r.delta == 0; }), ops.end());
      if (ops.size() > count) ops.resize(count);
      std::printf(" opcodes in the last interval (latency of the interval):\n");
      PrintOpTable(ops, dt, /*window=*/true);

      std::vector<HotInode> rows;
      const uint64_t since = static_cast<uint64_t>((now - dt - 1.0) * 1e9);
      if (!opened[i].maps.ReadHotInodes(since > 0 ? since : 0, &rows).ok()) continue;
      struct Hot {
        const HotInode* row;
        uint64_t delta;
      };
      std::vector<Hot> hot;
      for (const HotInode& h : rows) {
        const uint64_t total = inode_total(h);
        uint64_t& seen = state[i].inode_totals[h.nodeid];
        const uint64_t d = total >= seen ? total - seen : total;
        seen = total;
        if (d > 0) hot.push_back({&h, d});
      }
      std::sort(hot.begin(), hot.end(), [](const Hot& a, const Hot& b) { return a.delta > b.delta; });
      if (hot.size() > count) hot.resize(count);
      std::printf(" hot inodes (requests/s in the last interval; counts since first seen):\n");
      std::printf("  %-12s %9s %8s %8s %8s %8s %8s %8s %8s %8s\n", "NODEID", "REQ/s", "LOOKUP", "GETATTR", "OPEN",
                  "READ", "WRITE", "READDIR", "XATTR", "OTHER");
      for (const Hot& h : hot) {
        const auto& c = h.row->counts;
        const uint64_t other = c[EFUSE_HOT_SETATTR] + c[EFUSE_HOT_CREATE] + c[EFUSE_HOT_REMOVE] +
                               c[EFUSE_HOT_CLOSE] + c[EFUSE_HOT_OTHER];
        std::printf("  %-12llu %9.0f %8u %8u %8u %8u %8u %8u %8u %8llu\n",
                    static_cast<unsigned long long>(h.row->nodeid), static_cast<double>(h.delta) / dt,
                    c[EFUSE_HOT_LOOKUP], c[EFUSE_HOT_GETATTR], c[EFUSE_HOT_OPEN], c[EFUSE_HOT_READ],
                    c[EFUSE_HOT_WRITE], c[EFUSE_HOT_READDIR], c[EFUSE_HOT_XATTR],
                    static_cast<unsigned long long>(other));
      }
    }
    std::fflush(stdout);
  }
  return 0;
}

namespace {

struct TraceContext {
  std::string mountpoint;
  bool many;  // more than one mount: name it on each line
  uint64_t* printed;
  uint64_t limit;
};

int PrintEvent(void* ctx, void* data, size_t size) {
  auto* t = static_cast<TraceContext*>(ctx);
  if (size < sizeof(efuse_event)) return 0;
  efuse_event e;
  std::memcpy(&e, data, sizeof(e));
  std::printf("%14.6f %-14s unique=%-8llu node=%-10llu %10s %-8s pid=%-7u len=%u%s%s\n",
              static_cast<double>(e.time_ns) / 1e9, proto::OpcodeName(e.opcode),
              static_cast<unsigned long long>(e.unique), static_cast<unsigned long long>(e.nodeid),
              FormatNs(e.latency_ns).c_str(), e.error == 0 ? "ok" : strerrorname_np(-e.error) ?: "error", e.pid,
              e.len, t->many ? "  " : "", t->many ? t->mountpoint.c_str() : "");
  ++*t->printed;
  // A negative return stops ring_buffer__poll: the count is reached.
  return t->limit != 0 && *t->printed >= t->limit ? -1 : 0;
}

}  // namespace

int TraceCommand(const std::vector<Target>& targets, const std::vector<std::string>& args) {
  Options o(args, {"--sample", "--count", "--duration"});
  const uint32_t sample = static_cast<uint32_t>(o.Number("--sample", 1, 1, 1e9));
  const uint64_t limit = static_cast<uint64_t>(o.Number("--count", 0, 0, 1e12));  // 0: until ^C
  const double duration = o.Number("--duration", 0, 0, 1e9);                     // 0: until ^C
  if (!o.error.empty()) {
    std::fprintf(stderr, "efusectl trace: %s\n", o.error.c_str());
    return 2;
  }
  std::vector<Opened> opened = OpenTargets(targets);
  if (opened.empty()) return 1;
  CatchStopSignals();
  uint64_t printed = 0;
  std::vector<std::unique_ptr<TraceContext>> contexts;
  ring_buffer* rb = nullptr;
  std::vector<std::optional<efuse_config>> restore(opened.size());
  for (size_t i = 0; i < opened.size(); ++i) {
    contexts.push_back(std::make_unique<TraceContext>(
        TraceContext{opened[i].target.mountpoint, opened.size() > 1, &printed, limit}));
    const int fd = opened[i].maps.events_fd();
    if (rb == nullptr) {
      rb = ring_buffer__new(fd, PrintEvent, contexts.back().get(), nullptr);
      if (rb == nullptr) {
        std::fprintf(stderr, "efusectl trace: cannot read the event ring buffer: %s\n", strerror(errno));
        return 1;
      }
    } else if (ring_buffer__add(rb, fd, PrintEvent, contexts.back().get()) != 0) {
      std::fprintf(stderr, "efusectl trace: cannot read %s's ring buffer\n", opened[i].target.mountpoint.c_str());
      continue;
    }
    // Ask the programs for events while we read them; put back the daemon's
    // own rate on the way out.
    absl::StatusOr<efuse_config> c = opened[i].maps.ReadConfig();
    if (!c.ok()) continue;
    restore[i] = *c;
    efuse_config want = *c;
    want.sample_every = sample;
    opened[i].maps.WriteConfig(want).IgnoreError();
  }
  std::printf("# TIME(s) (CLOCK_MONOTONIC)  OPCODE  unique  node  LATENCY  RESULT  pid  len\n");
  const double start = NowSeconds();
  while (!stop_requested.load() && (limit == 0 || printed < limit) &&
         (duration == 0 || NowSeconds() - start < duration)) {
    int n = ring_buffer__poll(rb, 100);
    if (n < 0 && n != -EINTR) break;
    std::fflush(stdout);
  }
  ring_buffer__free(rb);
  std::fflush(stdout);
  for (size_t i = 0; i < opened.size(); ++i) {
    if (!restore[i]) continue;
    // Only the rate goes back: the daemon owns the filter.
    absl::StatusOr<efuse_config> now = opened[i].maps.ReadConfig();
    if (!now.ok()) continue;
    now->sample_every = restore[i]->sample_every;
    opened[i].maps.WriteConfig(*now).IgnoreError();
  }
  std::fprintf(stderr, "efusectl trace: %llu events\n", static_cast<unsigned long long>(printed));
  return 0;
}

int MetricsCommand(const std::vector<Target>& targets, const std::vector<std::string>& args) {
  std::string output;
  for (const std::string& a : args) {
    if (a.rfind("--output=", 0) == 0) {
      output = a.substr(9);
    } else {
      std::fprintf(stderr, "efusectl metrics: unknown option '%s'\n", a.c_str());
      return 2;
    }
  }
  std::vector<MountFigures> figures;
  for (const Target& t : targets) {
    MountFigures f;
    f.mountpoint = t.mountpoint;
    if (absl::StatusOr<TelemetryMaps> maps = TelemetryMaps::OpenPinned(t.connection_id); maps.ok()) {
      if (absl::StatusOr<OpStatsTable> s = maps->ReadStats(); s.ok()) f.telemetry = *s;
    }
    // "key: value" lines, rewritten first so the counters are current.
    for (const std::string& line : FreshStatusFile(t.connection_id)) {
      const size_t colon = line.find(": ");
      if (colon != std::string::npos) f.status.emplace_back(line.substr(0, colon), line.substr(colon + 2));
    }
    figures.push_back(std::move(f));
  }
  const std::string text = RenderMetrics(figures);
  if (output.empty()) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  if (absl::Status s = WriteMetricsFile(output, text); !s.ok()) {
    std::fprintf(stderr, "efusectl metrics: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace efuse::ctl
