#include "tools/efusectl/metrics.h"

#include <cstdlib>

#include <unistd.h>

#include <sys/stat.h>

#include <fcntl.h>

#include <fstream>

#include <cstdio>

#include <cerrno>

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "proto/opcode.h"

namespace efuse::ctl {
namespace {

// A label value: backslash, quote and newline escaped.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return out;
}

std::string OpName(uint32_t slot) { return slot == 0 ? "OTHER" : std::string(proto::OpcodeName(slot)); }

void Family(std::string* out, const char* name, const char* type, const char* help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

std::string RenderMetrics(const std::vector<MountFigures>& mounts) {
  std::string out;
  Family(&out, "efuse_daemon_info", "gauge",
         "A serving efused: its file system, transport and pid (value 1).");
  for (const MountFigures& m : mounts) {
    std::map<std::string, std::string> kv(m.status.begin(), m.status.end());
    absl::StrAppend(&out, "efuse_daemon_info{mountpoint=\"", Label(m.mountpoint), "\",fs=\"", Label(kv["fs"]),
                    "\",transport=\"", Label(kv["transport"].substr(0, kv["transport"].find(' '))),
                    "\",pid=\"", Label(kv["pid"]), "\"} 1\n");
  }
  // Each opcode a mount's kernel counted, with its labels.
  auto each_op = [&](const std::function<void(const std::string&, const efuse_op_stats&)>& fn) {
    for (const MountFigures& m : mounts) {
      if (!m.telemetry) continue;
      for (uint32_t s = 0; s < EFUSE_OPCODE_SLOTS; ++s) {
        const efuse_op_stats& st = (*m.telemetry)[s];
        if (st.completed == 0) continue;
        fn(absl::StrCat("mountpoint=\"", Label(m.mountpoint), "\",op=\"", OpName(s), "\""), st);
      }
    }
  };
  Family(&out, "efuse_requests_total", "counter",
         "FUSE requests the kernel completed, by opcode (BPF on the fuse_request_end tracepoint).");
  each_op([&](const std::string& labels, const efuse_op_stats& st) {
    absl::StrAppend(&out, "efuse_requests_total{", labels, "} ", st.completed, "\n");
  });
  Family(&out, "efuse_request_errors_total", "counter",
         "FUSE requests answered with an error, by opcode (BPF).");
  each_op([&](const std::string& labels, const efuse_op_stats& st) {
    absl::StrAppend(&out, "efuse_request_errors_total{", labels, "} ", st.errors, "\n");
  });
  Family(&out, "efuse_request_duration_seconds", "histogram",
         "Time from the kernel sending a request to its reply (the timed ones: see "
         "--telemetry_time_every), by opcode (BPF).");
  each_op([&](const std::string& labels, const efuse_op_stats& st) {
    // The log2 buckets [2^i, 2^(i+1)) ns, counted cumulatively as le=.
    uint64_t cumulative = 0;
    for (int b = 0; b < EFUSE_LATENCY_BUCKETS; ++b) {
      cumulative += st.latency_hist[b];
      const double le = static_cast<double>(uint64_t{2} << b) / 1e9;
      absl::StrAppend(&out, "efuse_request_duration_seconds_bucket{", labels, ",le=\"",
                      absl::StrFormat("%.9g", le), "\"} ", cumulative, "\n");
    }
    absl::StrAppend(&out, "efuse_request_duration_seconds_bucket{", labels, ",le=\"+Inf\"} ", cumulative,
                    "\n");
    absl::StrAppend(&out, "efuse_request_duration_seconds_sum{", labels, "} ",
                    absl::StrFormat("%.9f", static_cast<double>(st.latency_sum_ns) / 1e9), "\n");
    absl::StrAppend(&out, "efuse_request_duration_seconds_count{", labels, "} ", cumulative, "\n");
  });
  Family(&out, "efuse_daemon_requests_total", "counter",
         "Requests the daemon received, by opcode (its own counters).");
  for (const MountFigures& m : mounts) {
    for (const auto& [key, value] : m.status) {
      uint64_t n = 0;
      if (key.rfind("requests_", 0) != 0 || !absl::SimpleAtoi(value, &n)) continue;
      absl::StrAppend(&out, "efuse_daemon_requests_total{mountpoint=\"", Label(m.mountpoint), "\",op=\"",
                      Label(key.substr(9)), "\"} ", n, "\n");
    }
  }
  Family(&out, "efuse_daemon_status", "gauge",
         "Every numeric line of the daemon's status file (efusectl status), by key.");
  for (const MountFigures& m : mounts) {
    for (const auto& [key, value] : m.status) {
      double v = 0;
      if (key.rfind("requests_", 0) == 0 || key == "pid" || !absl::SimpleAtod(value, &v) ||
          !std::isfinite(v)) {
        continue;
      }
      absl::StrAppend(&out, "efuse_daemon_status{mountpoint=\"", Label(m.mountpoint), "\",key=\"", Label(key),
                      "\"} ", absl::StrFormat("%.17g", v), "\n");
    }
  }
  return out;
}

absl::Status WriteMetricsFile(const std::string& path, const std::string& text) {
  // A fresh temporary name beside it (mkstemp: O_EXCL, never a planted
  // file or symlink), then rename over it.
  std::string tmp = path + ".XXXXXX";
  const int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "cannot create a file beside '" + path + "'");
  bool ok = fchmod(fd, 0644) == 0;
  for (size_t done = 0; ok && done < text.size();) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  const int err = errno;
  if (close(fd) != 0) ok = false;
  if (!ok) {
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(err, "cannot write '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rerr = errno;
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(rerr, "cannot rename to '" + path + "'");
  }
  return absl::OkStatus();
}

}  // namespace efuse::ctl
