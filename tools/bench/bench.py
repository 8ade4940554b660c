#!/usr/bin/python3
"""efuse benchmark runner (started by tools/bench/run.sh, which sets up).

Targets, side by side on one ext4 directory (/var/tmp/efuse-bench/data):
native ext4, efuse passthrough (auto), efuse passthrough (off), efuse memfs,
libfuse passthrough_ll, bindfs. Workloads: fio (sequential 1 MiB, random
4 KiB buffered and O_DIRECT, numjobs 1 and 2), a metadata workload (create,
stat, unlink), and find / ls -lR over a tree, cold and warm. Every figure is
"higher is better" (MiB/s, IOPS, ops/s, entries/s); the median of the
repeats is reported, with the FUSE daemon's CPU seconds (utime+stime).
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "build", "bench")
EFUSED = os.path.join(REPO, "build", "tools", "efused", "efused")
PLL = os.path.join(OUT, "passthrough_ll")
META = os.path.join(REPO, "tools", "bench", "meta.py")
ROOT = "/var/tmp/efuse-bench"
DATA = os.path.join(ROOT, "data")
MNTROOT = os.path.join(ROOT, "mnt")
CLK = os.sysconf("SC_CLK_TCK")
REF_LL = "passthrough_ll"


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cpu_seconds(pid):
    if pid is None:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except OSError:
        return None


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Target:
    """A file system under test; FUSE targets run their daemon in the foreground."""

    def __init__(self, name, argv=None, persistent=True):
        self.name = name
        self.argv = argv  # None: native ext4, no daemon
        self.persistent = persistent  # content survives a remount
        self.proc = None
        self.mnt = DATA if argv is None else os.path.join(MNTROOT, name)
        self.logf = None

    @property
    def fuse(self):
        return self.argv is not None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        if not self.fuse:
            return
        os.makedirs(self.mnt, exist_ok=True)
        if self.logf is None:
            self.logf = open(os.path.join(OUT, "logs", self.name + ".log"), "a")
        argv = [a.replace("@MNT@", self.mnt) for a in self.argv]
        self.logf.write("# %s\n" % " ".join(argv))
        self.logf.flush()
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=self.logf,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %d (see %s)" % (
                    self.name, self.proc.returncode, self.logf.name))
            if is_mounted(self.mnt):
                return
            time.sleep(0.05)
        raise RuntimeError("%s did not mount within 15 s" % self.name)

    def stop(self):
        if not self.fuse:
            return
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                log("%s: no exit after SIGTERM, SIGKILL" % self.name)
                p.kill()
                p.wait()
        if is_mounted(self.mnt):
            subprocess.call(["umount", "-l", self.mnt])

    def remount(self):
        self.stop()
        self.start()


def make_targets(selected):
    src = DATA
    all_t = [
        Target("native"),
        Target("efuse-pt", [EFUSED, "--fs=passthrough", "--source=" + src,
                            "--passthrough=auto", "@MNT@"]),
        Target("efuse-pt-off", [EFUSED, "--fs=passthrough", "--source=" + src,
                                "--passthrough=off", "@MNT@"]),
        # the option for users who need no extended attributes
        Target("efuse-pt-noxattr", [EFUSED, "--fs=passthrough", "--source=" + src,
                                    "--passthrough=auto", "--xattrs=false", "@MNT@"]),
        Target("efuse-memfs", [EFUSED, "--fs=memfs", "--size=4G", "@MNT@"],
               persistent=False),
        Target(REF_LL, [PLL, "-f", "-o", "source=" + src, "@MNT@"]),
        Target("bindfs", ["bindfs", "-f", src, "@MNT@"]),
    ]
    if selected:
        names = selected.split(",")
        all_t = [t for t in all_t if t.name in names]
    return all_t


SHM_SRC = "/dev/shm/efuse-bench-src"
TRANSPORTS = ("sync", "uring-dev", "uring")


def make_transport_targets(selected):
    """memfs per request transport (attribute lifetime 0), and the libfuse
    peer: passthrough_ll over tmpfs (data in memory too; timeout=0)."""
    all_t = [Target("memfs-" + tr, [EFUSED, "--fs=memfs", "--size=4G", "--transport=" + tr,
                                    "--attr_timeout=0", "@MNT@"], persistent=False)
             for tr in TRANSPORTS]
    all_t.append(Target("pt_ll-tmpfs", [PLL, "-f", "-o", "source=%s,timeout=0" % SHM_SRC, "@MNT@"],
                        persistent=False))
    if selected:
        names = selected.split(",")
        all_t = [t for t in all_t if t.name in names]
    return all_t


def supports_direct(d):
    """None if O_DIRECT writes and reads work in d, else why not."""
    import mmap
    p = os.path.join(d, ".direct-probe")
    buf = mmap.mmap(-1, 4096)
    try:
        fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
        try:
            os.write(fd, buf)
            os.preadv(fd, [buf], 0)  # into the aligned buffer
        finally:
            os.close(fd)
        return None
    except OSError as e:
        log("O_DIRECT probe in %s: %s" % (d, e))
        return "O_DIRECT not supported (probe: %s)" % e
    finally:
        try:
            os.unlink(p)
        except OSError:
            pass


class Runner:
    def __init__(self, args):
        self.a = args
        self.results = {}  # workload -> target -> record
        self.order = []
        self.units = {}
        self.groups = {}  # workload -> "fs" or "transport"
        self.micro = {}   # micro benchmark -> ns per op (median)

    def record(self, wl, unit, target, rec, group="fs"):
        if wl not in self.results:
            self.results[wl] = {}
            self.order.append(wl)
            self.units[wl] = unit
            self.groups[wl] = group
        self.results[wl][target.name] = rec

    def measure(self, target, fn, before=None):
        """Runs fn() (returns a figure) repeats times; before() runs untimed first."""
        vals, cpus = [], []
        for _ in range(self.a.repeats):
            if before:
                before()
            c0 = cpu_seconds(target.pid)
            v = fn()
            c1 = cpu_seconds(target.pid)
            vals.append(v)
            if c0 is not None and c1 is not None:
                cpus.append(c1 - c0)
        rec = {"value": statistics.median(vals), "samples": vals}
        if cpus:
            rec["daemon_cpu_s"] = statistics.median(cpus)
            rec["daemon_cpu_samples"] = cpus
        return rec

    def run_workload(self, t, wl, unit, fn, group="fs"):
        """Runs fn() (returns a record) for workload wl on target t and records
        it; a failure is recorded too, and the run goes on."""
        log("%s: %s" % (t.name, wl))
        try:
            rec = fn()
        except Exception as e:
            rec = {"error": str(e)}
            log("%s: %s: %s" % (t.name, wl, e))
        self.record(wl, unit, t, rec, group=group)

    def started(self, t):
        """Starts t; False (recorded as a failed target) if it cannot."""
        try:
            t.start()
            return True
        except Exception as e:
            log("%s: cannot start: %s" % (t.name, e))
            self.failed[t.name] = str(e)
            return False

    # ---- fio ----
    def fio(self, target, wdir, rw, bs, direct, jobs, size=None, create_only=False):
        cmd = ["fio", "--name=bench", "--directory=" + wdir,
               "--filename_format=f.$jobnum", "--size=" + (size or self.a.size),
               "--rw=" + rw, "--bs=" + bs, "--direct=%d" % direct,
               "--numjobs=%d" % jobs, "--ioengine=psync", "--time_based",
               "--runtime=%d" % self.a.runtime, "--group_reporting",
               "--fallocate=none", "--output-format=json",
               # buffered jobs measure the page cache as the earlier jobs left
               # it: fio's default fadvise(DONTNEED) at start would empty it on
               # ext4 but not behind a FUSE passthrough mount (unfair either way)
               "--invalidate=%d" % direct]
        if create_only:
            cmd.append("--create_only=1")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if create_only:
            return None
        out = r.stdout
        if r.returncode != 0 or "{" not in out:
            raise RuntimeError("fio failed (%d): %s" % (r.returncode,
                                                        (r.stderr or out)[-300:]))
        j = json.loads(out[out.index("{"):])
        job = j["jobs"][0]
        if job.get("error"):
            raise RuntimeError("fio job error %d" % job["error"])
        side = job["read"] if "read" in rw else job["write"]
        return side["bw"] / 1024.0 if bs == "1M" else side["iops"]

    def run_fio(self, t, base):
        wdir = os.path.join(base, "work", "fio")
        os.makedirs(wdir, exist_ok=True)
        direct_skip = supports_direct(wdir)
        specs = []
        for jobs in (1, 2):
            specs += [("seq-write 1M", "write", "1M", 0, jobs, "MiB/s"),
                      ("seq-read 1M", "read", "1M", 0, jobs, "MiB/s")]
            for direct in (0, 1):
                kind = "direct" if direct else "buffered"
                specs += [("rand-write 4K %s" % kind, "randwrite", "4k", direct, jobs, "IOPS"),
                          ("rand-read 4K %s" % kind, "randread", "4k", direct, jobs, "IOPS")]
        for name, rw, bs, direct, jobs, unit in specs:
            wl = "fio %s j%d" % (name, jobs)
            if direct and direct_skip:
                self.record(wl, unit, t, {"skipped": direct_skip})
                continue
            self.run_workload(t, wl, unit,
                              lambda: self.measure(t, lambda: self.fio(t, wdir, rw, bs, direct, jobs)))
        shutil.rmtree(wdir, ignore_errors=True)

    # ---- metadata ----
    def run_meta(self, t, base):
        d = os.path.join(base, "work", "meta")
        n = str(self.a.files)
        log("%s: meta create/stat/unlink x%s" % (t.name, n))
        recs = {p: {"samples": [], "cpu": []} for p in ("create", "stat", "unlink")}
        err = None
        for _ in range(self.a.repeats):
            shutil.rmtree(d, ignore_errors=True)
            for phase in ("create", "stat", "unlink"):
                c0 = cpu_seconds(t.pid)
                r = subprocess.run([sys.executable, META, phase, d, n],
                                   capture_output=True, text=True)
                c1 = cpu_seconds(t.pid)
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or ["?"])[-1]
                    err = "%s phase failed: %s" % (phase, last[:200])
                    break
                recs[phase]["samples"].append(float(r.stdout))
                if c0 is not None and c1 is not None:
                    recs[phase]["cpu"].append(c1 - c0)
            if err:
                break
        shutil.rmtree(d, ignore_errors=True)
        for phase in ("create", "stat", "unlink"):
            s = recs[phase]
            if err or not s["samples"]:
                rec = {"error": err or "no samples"}
            else:
                rec = {"value": statistics.median(s["samples"]), "samples": s["samples"]}
                if s["cpu"]:
                    rec["daemon_cpu_s"] = statistics.median(s["cpu"])
                    rec["daemon_cpu_samples"] = s["cpu"]
            self.record("meta %s (%d files)" % (phase, self.a.files), "ops/s", t, rec)
        if err:
            log("%s: meta: %s" % (t.name, err))

    # ---- find / ls -lR ----
    def tree_walk(self, t, base, cmd, entries):
        tree = os.path.join(t.mnt, "tree")
        t0 = time.perf_counter()
        r = subprocess.run(cmd + [tree], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            first = (r.stderr.strip().splitlines() or [""])[0]
            raise RuntimeError("%s: rc %d: %s" % (cmd[0], r.returncode, first[:200]))
        return entries / dt

    def run_tree(self, t, base):
        if not t.persistent:
            log("%s: building tree of %d files" % (t.name, self.a.tree))
            subprocess.run([sys.executable, META, "tree", os.path.join(base, "tree"),
                            str(self.a.tree)], check=True)
        entries = self.a.tree + (self.a.tree + 999) // 1000
        for name, cmd in (("find", ["find"]), ("ls -lR", ["ls", "-lR"])):
            cold_note = ("drop_caches + remount" if t.fuse and t.persistent else
                         "drop_caches only (memfs content does not survive a remount)"
                         if t.fuse else "drop_caches")

            def cold_prep():
                drop_caches()
                if t.fuse and t.persistent:
                    t.remount()

            def walk(cmd=cmd):
                return self.tree_walk(t, base, cmd, entries)

            def cold():
                rec = self.measure(t, walk, before=cold_prep)
                rec["note"] = cold_note
                return rec

            self.run_workload(t, "%s cold (%d files)" % (name, self.a.tree), "entries/s", cold)
            # warm: an untimed walk just before fills the caches
            self.run_workload(t, "%s warm (%d files)" % (name, self.a.tree), "entries/s",
                              lambda: self.measure(t, walk, before=walk))

    # ---- request transports ----
    def run_transport_target(self, t):
        log("=== %s ===" % t.name)
        if t.name.startswith("pt_ll"):
            shutil.rmtree(SHM_SRC, ignore_errors=True)
            os.makedirs(SHM_SRC)
        if not self.started(t):
            return
        try:
            wdir = os.path.join(t.mnt, "fio")
            os.makedirs(wdir, exist_ok=True)
            for rw in ("randread", "randwrite"):
                for jobs in (1, 2):
                    def direct_io(rw=rw, jobs=jobs):
                        # files laid out untimed, so the daemon CPU counts requests only
                        rec = self.measure(
                            t, lambda: self.fio(t, wdir, rw, "4k", 1, jobs, size="256M"),
                            before=lambda: self.fio(t, wdir, rw, "4k", 1, jobs, size="256M",
                                                    create_only=True))
                        # one request per 4 KiB O_DIRECT I/O
                        self.add_cpu_per_request(rec, rec["value"] * self.a.runtime)
                        return rec
                    self.run_workload(t, "transport %s 4K direct j%d" % (rw, jobs), "IOPS",
                                      direct_io, group="transport")
            f = os.path.join(t.mnt, "statme")
            counts = []

            def loop():
                r = subprocess.run([sys.executable, META, "fstat", f, str(self.a.runtime)],
                                   capture_output=True, text=True, check=True)
                rate, ops = r.stdout.split()
                counts.append(int(ops))
                return float(rate)
            def getattr_loop():
                rec = self.measure(t, loop)
                self.add_cpu_per_request(rec, statistics.median(counts))
                return rec
            self.run_workload(t, "transport GETATTR loop (fstat, attr 0)", "req/s",
                              getattr_loop, group="transport")
        finally:
            t.stop()
            if t.name.startswith("pt_ll"):
                shutil.rmtree(SHM_SRC, ignore_errors=True)

    @staticmethod
    def add_cpu_per_request(rec, requests):
        if "daemon_cpu_s" in rec and requests:
            rec["daemon_cpu_us_per_req"] = rec["daemon_cpu_s"] * 1e6 / requests

    # ---- micro benchmarks (Google Benchmark) ----
    def run_micro(self):
        exe = os.path.join(REPO, "build", "tools", "bench", "micro_bench")
        if not os.path.exists(exe):
            log("micro: %s not built (needs libbenchmark-dev)" % exe)
            return
        log("micro: decode and dispatch")
        r = subprocess.run([exe, "--benchmark_format=json", "--benchmark_repetitions=%d" % max(3, self.a.repeats),
                            "--benchmark_report_aggregates_only=true"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            log("micro: failed: %s" % r.stderr[-300:])
            return
        j = json.loads(r.stdout)
        for b in j["benchmarks"]:
            if b.get("aggregate_name") != "median":
                continue
            name = b["run_name"]
            self.micro[name] = b["real_time"] if b["time_unit"] == "ns" else b["real_time"] * 1000

    def run_target(self, t):
        log("=== %s ===" % t.name)
        shutil.rmtree(os.path.join(DATA, "work"), ignore_errors=True)
        if not self.started(t):
            return
        try:
            base = t.mnt
            if "fio" in self.a.workloads:
                self.run_fio(t, base)
            if "meta" in self.a.workloads:
                self.run_meta(t, base)
            if "tree" in self.a.workloads:
                self.run_tree(t, base)
        finally:
            t.stop()
            shutil.rmtree(os.path.join(DATA, "work"), ignore_errors=True)


def build_tree(n):
    tree = os.path.join(DATA, "tree")
    stamp = os.path.join(DATA, ".tree-%d" % n)
    if os.path.exists(stamp):
        return
    shutil.rmtree(tree, ignore_errors=True)
    for f in os.listdir(DATA):
        if f.startswith(".tree-"):
            os.unlink(os.path.join(DATA, f))
    log("building tree of %d files in %s" % (n, tree))
    subprocess.run([sys.executable, META, "tree", tree, str(n)], check=True)
    open(stamp, "w").close()


def fmt(v):
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def report_section(runner, group, title, names, base, ll, last_col):
    """One table: per workload of `group`, a row per target with the figure,
    its ratios to the targets named `base` and `ll`, and `last_col`
    ("cpu s": daemon CPU seconds, "cpu us/req": CPU microseconds per request)."""
    wls = [wl for wl in runner.order if runner.groups[wl] == group]
    if not wls:
        return []
    hdr = "%-40s %-15s %12s %-9s %9s %9s %11s" % (
        title, "target", "value", "unit", "x " + base, "x " + ll, last_col)
    lines = [hdr, "-" * len(hdr)]
    for wl in wls:
        row = runner.results[wl]
        vb = row.get(base, {}).get("value")
        vl = row.get(ll, {}).get("value")
        for n in names:
            rec = row.get(n)
            if rec is None:
                continue
            if "value" not in rec:
                what = ("skipped: " + rec["skipped"]) if "skipped" in rec else \
                    ("ERROR: " + rec.get("error", "?"))
                lines.append("%-40s %-15s %s" % (wl, n, " ".join(what.split())[:110]))
                continue
            v = rec["value"]
            if last_col == "cpu s":
                cpu = "%.2f" % rec["daemon_cpu_s"] if "daemon_cpu_s" in rec else "-"
            else:
                cpu = "%.1f" % rec["daemon_cpu_us_per_req"] if "daemon_cpu_us_per_req" in rec else "-"
            lines.append("%-40s %-15s %12s %-9s %9s %9s %11s" % (
                wl, n, fmt(v), runner.units[wl], "%.2f" % (v / vb) if vb else "-",
                "%.2f" % (v / vl) if vl else "-", cpu))
        lines.append("")
    return lines


def report(runner, targets, ttargets):
    lines = report_section(runner, "fs", "workload", [t.name for t in targets],
                           "native", REF_LL, "cpu s")
    lines += report_section(runner, "transport", "request transports (memfs)",
                            [t.name for t in ttargets], "memfs-sync", "pt_ll-tmpfs",
                            "cpu us/req")
    if runner.micro:
        lines.append("micro benchmarks (Google Benchmark, median)")
        for name, ns in sorted(runner.micro.items()):
            lines.append("  %-60s %10.1f ns" % (name, ns))
        lines.append("")
    return "\n".join(lines)


def chart(runner, targets, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        log("no chart: %s" % e)
        return False
    names = [t.name for t in targets if t.name != "native"]
    wls = [wl for wl in runner.order if runner.groups[wl] == "fs"]
    if not wls or not names:
        return False
    fig, ax = plt.subplots(figsize=(max(12, 0.9 * len(wls)), 7))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        ys = []
        for wl in wls:
            row = runner.results[wl]
            nat = row.get("native", {}).get("value")
            v = row.get(n, {}).get("value")
            ys.append(v / nat if (v and nat) else 0)
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(wls))]
        ax.bar(xs, ys, width, label=n)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("ratio to native ext4 (higher is better, log)")
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels(wls, rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("efuse benchmarks (median of %d)" % runner.a.repeats)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes, 3 s per fio job, 1 repeat")
    ap.add_argument("--targets", help="comma-separated subset of targets")
    ap.add_argument("--workloads", default="fio,meta,tree",
                    help="fs suite workloads: fio, meta (create/stat/unlink), tree (find, ls -lR)")
    ap.add_argument("--suite", default="fs,transports,micro",
                    help="what to run: fs (file system targets vs native), transports "
                         "(memfs per request transport vs passthrough_ll), micro")
    ap.add_argument("--runtime", type=int, help="seconds per fio job")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--size", help="fio file size per job")
    ap.add_argument("--files", type=int, help="metadata workload files")
    ap.add_argument("--tree", type=int, help="files in the find/ls tree")
    a = ap.parse_args()
    q = a.quick
    a.runtime = a.runtime or (3 if q else 5)
    a.repeats = a.repeats or (1 if q else 3)
    a.size = a.size or ("256M" if q else "1G")
    a.files = a.files or (2000 if q else 20000)
    a.tree = a.tree or (5000 if q else 50000)

    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    os.makedirs(DATA, exist_ok=True)
    os.makedirs(MNTROOT, exist_ok=True)
    fstype = subprocess.run(["stat", "-f", "-c", "%T", DATA],
                            capture_output=True, text=True).stdout.strip()
    if fstype != "ext2/ext3":  # stat -f reports ext4 as ext2/ext3
        log("warning: %s is on %s, not ext4" % (DATA, fstype))

    a.workloads = set(a.workloads.split(","))
    suites = set(a.suite.split(","))
    if suites - {"fs", "transports", "micro"}:
        sys.exit("bench: unknown suite(s) %s" % ",".join(sorted(suites - {"fs", "transports", "micro"})))
    if a.targets:
        known = {t.name for t in make_targets(None) + make_transport_targets(None)}
        unknown = set(a.targets.split(",")) - known
        if unknown:
            sys.exit("bench: unknown target(s) %s (known: %s)" % (
                ",".join(sorted(unknown)), ",".join(sorted(known))))
    targets = make_targets(a.targets) if "fs" in suites else []
    ttargets = make_transport_targets(a.targets) if "transports" in suites else []
    runner = Runner(a)
    runner.failed = {}

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    est = (len(targets) * 12 * ("fio" in a.workloads) + len(ttargets) * 5) * a.runtime * a.repeats
    log("%d targets, %d fio jobs of %d s x %d repeats each: fio alone takes ~%d min"
        % (len(targets), 12, a.runtime, a.repeats, (est + 59) // 60))
    t_start = time.time()
    try:
        if targets:
            build_tree(a.tree)
        for t in targets:
            runner.run_target(t)
        for t in ttargets:
            runner.run_transport_target(t)
        if "micro" in suites:
            runner.run_micro()
    finally:
        for t in targets + ttargets:
            t.stop()
    elapsed = time.time() - t_start

    table = report(runner, targets, ttargets)
    print(table)
    res = {
        "config": {"quick": q, "runtime_s": a.runtime, "repeats": a.repeats,
                   "fio_size": a.size, "meta_files": a.files, "tree_files": a.tree,
                   "data_dir": DATA, "kernel": os.uname().release,
                   "elapsed_s": round(elapsed, 1),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "note": "higher is better for every figure; value is the median of the "
                "samples; daemon_cpu_s is the FUSE daemon's utime+stime during "
                "the workload",
        "targets": [{"name": t.name, "argv": t.argv} for t in targets + ttargets],
        "micro_ns": runner.micro,
        "groups": runner.groups,
        "failed_targets": runner.failed,
        "units": runner.units,
        "results": runner.results,
    }
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    png = os.path.join(OUT, "results.png")
    chart(runner, targets, png)
    log("done in %.0f s: %s, %s" % (elapsed, os.path.join(OUT, "results.json"), png))


if __name__ == "__main__":
    main()
