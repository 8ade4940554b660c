#!/usr/bin/python3
"""efuse benchmark runner (started by tools/bench/run.sh, which sets up).

Targets, side by side on one ext4 directory (/var/tmp/efuse-bench/data):
native ext4, efuse passthrough (auto), efuse passthrough (off), efuse memfs,
libfuse passthrough_ll, bindfs. Workloads: fio (sequential 1 MiB, random
4 KiB buffered and O_DIRECT, numjobs 1 and 2), a metadata workload (create,
stat, unlink), and find / ls -lR over a tree, cold and warm. Every figure is
"higher is better" (MiB/s, IOPS, ops/s, entries/s); the median of the
repeats is reported, with the FUSE daemon's CPU seconds (utime+stime).
The offload suite compares memfs with the BPF offload policy on and off
(times in s, lower is better, and the requests the BPF counters saw) and
the cost of the telemetry itself.
"""
import argparse
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time

import kreqs  # (this directory)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "build", "bench")
EFUSED = os.path.join(REPO, "build", "tools", "efused", "efused")
# efused runs here with --supervise=off: the comparisons are of the data and
# request paths (the FUSE io_uring queues, which a supervised server cannot
# use on this kernel); takeover.py measures what supervision costs.
PLL = os.path.join(OUT, "passthrough_ll")
# libfuse master's in-memory example, built by run.sh from LIBFUSE_SRC.
MEMFS_LL = os.path.join(OUT, "libfuse", "example", "memfs_ll")
# libfuse master's passthrough_hp, built by run.sh from LIBFUSE_SRC against
# a liburing built from LIBURING_SRC (its io_uring needs liburing >= 2.9).
PHP = os.path.join(OUT, "libfuse", "example", "passthrough_hp")
PH_PEERS = ("passthrough_hp", "passthrough_hp-nopt")
META = os.path.join(REPO, "tools", "bench", "meta.py")
ROOT = "/var/tmp/efuse-bench"
DATA = os.path.join(ROOT, "data")
MNT_PREFIX = "mnt-"  # FUSE targets mount at ROOT/mnt-NAME
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


def cpu_delta(c0, c1):
    """CPU seconds between two cpu_seconds() readings, None if either failed."""
    return c1 - c0 if c0 is not None and c1 is not None else None


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Target:
    """A file system under test; FUSE targets run their daemon in the foreground."""

    def __init__(self, name, argv=None, persistent=True, nofile=None):
        self.name = name
        self.argv = argv  # None: native ext4, no daemon
        self.persistent = persistent  # content survives a remount
        self.nofile = nofile  # RLIMIT_NOFILE for the daemon, if not inherited
        self.proc = None
        # Beside DATA, as deep: path-heavy workloads (stat, create) pay per
        # path component, and a mount one level deeper would cost the FUSE
        # targets a component that native does not walk.
        self.mnt = DATA if argv is None else os.path.join(ROOT, MNT_PREFIX + name)
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
        def limits(n=self.nofile):
            # As far as the hard limit allows without CAP_SYS_RESOURCE.
            if n is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                for want in (n, hard):
                    try:
                        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                        return
                    except (ValueError, OSError):
                        continue
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=self.logf,
                                     stdin=subprocess.DEVNULL, preexec_fn=limits)
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
        Target("efuse-pt", [EFUSED, "--supervise=off", "--fs=passthrough", "--source=" + src,
                            "--passthrough=auto", "@MNT@"]),
        Target("efuse-pt-off", [EFUSED, "--supervise=off", "--fs=passthrough", "--source=" + src,
                                "--passthrough=off", "@MNT@"]),
        # the option for users who need no extended attributes
        Target("efuse-pt-noxattr", [EFUSED, "--supervise=off", "--fs=passthrough", "--source=" + src,
                                    "--passthrough=auto", "--xattrs=false", "@MNT@"]),
        # directories opened with OPENDIR (by default the kernel opens
        # them itself and keeps their listings)
        Target("efuse-pt-dirh", [EFUSED, "--supervise=off", "--fs=passthrough", "--source=" + src,
                                 "--passthrough=auto", "--dir_handles=on", "@MNT@"]),
        Target("efuse-memfs", [EFUSED, "--supervise=off", "--fs=memfs", "--size=4G", "--memfs_data=daemon", "@MNT@"],
               persistent=False),
        # passthrough_ll holds an fd per inode the kernel knows: with
        # RLIMIT_NOFILE 20,000 it fails the 20,000-file phases. Raised where
        # the machine allows it (CAP_SYS_RESOURCE, or a higher hard limit).
        Target(REF_LL, [PLL, "-f", "-o", "source=" + src, "@MNT@"], nofile=1 << 20),
        Target("bindfs", ["bindfs", "-f", src, "@MNT@"]),
    ]
    # passthrough_hp on FUSE-over-io_uring, with kernel passthrough and
    # without (it then carries data itself, with a writeback cache).
    if os.access(PHP, os.X_OK):
        # (an fd per inode it knows, as passthrough_ll: the same limit)
        all_t += [Target(PH_PEERS[0], [PHP, "--foreground", "-o", "io_uring", src, "@MNT@"], nofile=1 << 20),
                  Target(PH_PEERS[1], [PHP, "--foreground", "--nopassthrough", "-o", "io_uring", src, "@MNT@"],
                         nofile=1 << 20)]
    else:
        log("no passthrough_hp peer (run.sh builds it from LIBFUSE_SRC=DIR and LIBURING_SRC=DIR)")
    if selected:
        names = selected.split(",")
        all_t = [t for t in all_t if t.name in names]
    return all_t


class TmpfsTarget(Target):
    """The kernel's tmpfs, memfs's anchor: mounted for the run, no daemon."""

    def __init__(self, name):
        super().__init__(name)
        self.mnt = os.path.join(ROOT, MNT_PREFIX + name)

    def start(self):
        os.makedirs(self.mnt, exist_ok=True)
        if not is_mounted(self.mnt):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4G", "bench-tmpfs", self.mnt], check=True)

    def stop(self):
        if is_mounted(self.mnt):
            subprocess.call(["umount", "-l", self.mnt])


def make_memfs_targets(selected):
    """memfs beside tmpfs: its data in a private tmpfs through kernel
    passthrough (the default for root, --memfs_data=kernel) and in the
    daemon (--memfs_data=daemon); the peer is libfuse master's memfs_ll,
    on /dev/fuse and with its io_uring option, where run.sh built it."""
    all_t = [TmpfsTarget("tmpfs"),
             Target("efuse-memfs-kernel", [EFUSED, "--supervise=off", "--fs=memfs", "--size=4G", "--memfs_data=kernel",
                                           "@MNT@"], persistent=False),
             Target("efuse-memfs", [EFUSED, "--supervise=off", "--fs=memfs", "--size=4G", "--memfs_data=daemon", "@MNT@"],
                    persistent=False)]
    if os.access(MEMFS_LL, os.X_OK):
        all_t += [Target("memfs_ll", [MEMFS_LL, "-f", "@MNT@"], persistent=False),
                  Target("memfs_ll-uring", [MEMFS_LL, "-f", "-o", "io_uring", "@MNT@"], persistent=False)]
    elif not selected:
        log("memfs: no memfs_ll peer (run.sh builds it from LIBFUSE_SRC=DIR, a libfuse source tree)")
    if selected:
        names = selected.split(",")
        all_t = [t for t in all_t if t.name in names]
    return all_t


SUITES = ("fs", "transports", "micro", "offload", "memfs")
SHM_SRC = "/dev/shm/efuse-bench-src"
TRANSPORTS = ("sync", "uring-dev", "uring")


def make_transport_targets(selected):
    """memfs per request transport (attribute lifetime 0), and the libfuse
    peer: passthrough_ll over tmpfs (data in memory too; timeout=0). The
    offload policy is off: it would raise the hot file's attribute lifetime
    and the GETATTR loop would no longer reach the daemon."""
    all_t = [Target("memfs-" + tr, [EFUSED, "--supervise=off", "--fs=memfs", "--size=4G", "--memfs_data=daemon", "--transport=" + tr,
                                    "--attr_timeout=0", "--offload=off", "@MNT@"],
                    persistent=False)
             for tr in TRANSPORTS]
    # uring whose workers never poll (efused --poll_us=0; the default polls
    # 50 us while clients hop between CPUs)
    all_t.append(Target("memfs-uring-nopoll", [EFUSED, "--supervise=off", "--fs=memfs", "--size=4G", "--memfs_data=daemon",
                                               "--transport=uring",
                                               "--poll_us=0", "--attr_timeout=0", "--offload=off", "@MNT@"],
                        persistent=False))
    all_t.append(Target("pt_ll-tmpfs", [PLL, "-f", "-o", "source=%s,timeout=0" % SHM_SRC, "@MNT@"],
                        persistent=False))
    if selected:
        names = selected.split(",")
        all_t = [t for t in all_t if t.name in names]
    return all_t


def make_offload_pairs():
    """Per offload workload, the two daemons compared (memfs, a fresh one per
    run). Telemetry is on in both offload runs: the off side is counted by
    the same BPF programs and differs only in the policy."""
    memfs = [EFUSED, "--supervise=off", "--fs=memfs", "--size=512M", "--memfs_data=daemon"]
    zero = ["--attr_timeout=0", "--entry_timeout=0"]

    def offload(extra):
        return [Target("offload-on", memfs + extra + ["--telemetry=on", "--offload=on", "@MNT@"],
                       persistent=False),
                Target("offload-off", memfs + extra + ["--telemetry=on", "--offload=off", "@MNT@"],
                       persistent=False)]
    # The transports suite's GETATTR loop; the policy is off on both sides,
    # so only the BPF programs on the tracepoints differ. Once as by default
    # (every request timed), once timing 1 in 8.
    loop = memfs + ["--attr_timeout=0", "--offload=off"]
    off = Target("telemetry-off", loop + ["--telemetry=off", "@MNT@"], persistent=False)
    telemetry = [Target("telemetry-on", loop + ["--telemetry=on", "@MNT@"], persistent=False), off]
    sampled = [Target("telemetry-on-time-1in8", loop + ["--telemetry=on", "--telemetry_time_every=8", "@MNT@"],
                      persistent=False), off]
    return {"hot-read": offload([]), "hot-stat": offload(zero), "telemetry-cost": telemetry,
            "telemetry-cost-sampled": sampled}


# Opcodes the offload workloads look at (include/uapi/linux/fuse.h numbers:
# the BPF "stats" map is indexed by them, the status file names them).
OPCODES = {"LOOKUP": 1, "GETATTR": 3, "READ": 15, "STATX": 52}
BPF_PIN_ROOT = "/sys/fs/bpf/efuse"  # EFUSE_BPF_PIN_ROOT, bpf/telemetry_abi.h


def conn_id(mnt):
    """The FUSE connection id: the minor of the mount's device."""
    return os.minor(os.stat(mnt).st_dev)


def bpf_completed(conn):
    """Requests completed per opcode since the daemon started, summed over
    CPUs, from its pinned per-CPU "stats" map. bpftool prints each CPU's
    struct efuse_op_stats as raw bytes; `completed` is its second __u64
    (little-endian), counted once per request that reached the daemon."""
    path = os.path.join(BPF_PIN_ROOT, str(conn), "stats")
    r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("bpftool map dump %s: %s" % (path, (r.stderr or r.stdout).strip()[-200:]))
    out = {}
    for e in json.loads(r.stdout):
        op = int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little")
        n = sum(int.from_bytes(bytes(int(b, 16) for b in v["value"][8:16]), "little")
                for v in e["values"])
        if n:
            out[op] = n
    return out


def fresh_status(pid, mnt):
    """The status file of the daemon `pid` serving `mnt`, fresh: SIGUSR1
    makes it rewrite the file with a larger status_seq (as tests/mount's
    StatusReader waits for)."""
    path = "/run/efuse/%d.status" % os.minor(os.stat(mnt).st_dev)

    def read():
        kv = {}
        try:
            with open(path) as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition(": ")
                    kv[k] = v
        except OSError:
            pass
        return kv
    deadline = time.time() + 10
    kv = read()
    # a file of an earlier daemon on the same connection id may linger
    while kv.get("pid") != str(pid):
        if time.time() > deadline:
            raise RuntimeError("no status file %s for pid %d" % (path, pid))
        time.sleep(0.005)
        kv = read()
    seq = int(kv["status_seq"])
    os.kill(pid, signal.SIGUSR1)
    while int(kv.get("status_seq", "0")) <= seq:
        if time.time() > deadline:
            raise RuntimeError("status file %s not rewritten" % path)
        time.sleep(0.002)
        kv = read()
    return kv


def daemon_status(t):
    """Target t's status file, fresh."""
    return fresh_status(t.pid, t.mnt)


def request_counts(t):
    """Requests that reached t's daemon so far: {"bpf": by opcode name and
    "total" (None without telemetry), "daemon": its own counters, same
    keys, "offload": the policy's status lines}."""
    st = daemon_status(t)
    daemon = {k[len("requests_"):]: int(v) for k, v in st.items() if k.startswith("requests_")}
    try:
        slots = bpf_completed(conn_id(t.mnt))
        bpf = {name: slots.get(op, 0) for name, op in OPCODES.items()}
        bpf["total"] = sum(slots.values())
    except (OSError, RuntimeError, ValueError) as e:
        log("%s: no BPF counters (%s); using the daemon's" % (t.name, e))
        bpf = None
    return {"bpf": bpf, "daemon": daemon,
            "offload": {k: v for k, v in st.items() if k.startswith("offload")}}


def count_delta(c0, c1, keys):
    """Requests between two request_counts() snapshots, for "total" and each
    (label, opcodes) of keys: the BPF counts where both snapshots have them."""
    src = "bpf" if c0["bpf"] is not None and c1["bpf"] is not None else "daemon"
    a, b = c0[src], c1[src]

    def d(op):
        return b.get(op, 0) - a.get(op, 0)
    out = {"total": d("total")}
    for label, ops in keys:
        out[label] = sum(d(op) for op in ops)
    return src, out


# The offload workloads: the first passes warm up (the policy learns what is
# hot from them), then a pause longer than the policy's 100 ms scan.
OFFLOAD_WARMUP = 3
OFFLOAD_SETTLE_S = 0.5
HOT_READ_MIB = 64
# The targets: after warm-up, offload sends at least 90% fewer
# requests and is faster; telemetry costs under 5% of the GETATTR rate.
TARGET_REDUCTION = 0.90
TARGET_TELEMETRY_COST = 0.05


def median_record(runs):
    """One record from a target's runs (dicts from a *_sample method): the
    median of each figure; the runs themselves stay in the JSON."""
    vals = [r["value"] for r in runs]
    rec = {"value": statistics.median(vals), "samples": vals}
    cpus = [r["daemon_cpu_s"] for r in runs if r.get("daemon_cpu_s") is not None]
    if cpus:
        rec["daemon_cpu_s"] = statistics.median(cpus)
        rec["daemon_cpu_samples"] = cpus
    if "requests" in runs[0]:
        rec["requests"] = {k: statistics.median([r["requests"][k] for r in runs])
                           for k in runs[0]["requests"]}
        rec["counter"] = ",".join(sorted({r["counter"] for r in runs}))
    if "ops" in runs[0]:
        Runner.add_cpu_per_request(rec, statistics.median([r["ops"] for r in runs]))
    rec["runs"] = runs
    return rec


def compare_pair(key, wl, on, off):
    """The first target of a pair (on) against the second (off), with the
    issue's target and whether this run met it."""
    c = {"workload": wl}
    if key.startswith("telemetry-cost"):
        c["cost"] = 1 - on["value"] / off["value"]
        c["target"] = "cost < %d%%" % round(TARGET_TELEMETRY_COST * 100)
        c["met"] = c["cost"] < TARGET_TELEMETRY_COST
        return c
    c["time_ratio"] = on["value"] / off["value"]
    c["request_reduction"] = {
        k: (1 - on["requests"][k] / n if n else None) for k, n in off["requests"].items()}
    c["target"] = "requests after warm-up >= %d%% fewer, time ratio < 1" % round(
        TARGET_REDUCTION * 100)
    red = c["request_reduction"]["total"]
    c["met"] = red is not None and red >= TARGET_REDUCTION and c["time_ratio"] < 1
    return c


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
        self.groups = {}  # workload -> "fs", "transport" or "offload"
        self.micro = {}   # micro benchmark -> ns per op (median)
        self.offload = {}  # offload workload -> how offload-on compares with offload-off
        self.offload_targets = []

    # The fs workloads (run_fio, run_meta) also serve the memfs suite, whose
    # rows are named "memfs: ..." and grouped apart (their base is tmpfs).
    group = "fs"
    prefix = ""

    def record(self, wl, unit, target, rec, group=None):
        group = group or self.group
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

    def run_workload(self, t, wl, unit, fn, group=None):
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
    def fio(self, target, wdir, rw, bs, direct, jobs, size=None, create_only=False, engine="psync"):
        cmd = ["fio", "--name=bench", "--directory=" + wdir,
               "--filename_format=f.$jobnum", "--size=" + (size or self.a.size),
               "--rw=" + rw, "--bs=" + bs, "--direct=%d" % direct,
               "--numjobs=%d" % jobs, "--ioengine=" + engine, "--time_based",
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
            specs += [("seq-write 1M", "write", "1M", 0, jobs, "MiB/s", "psync"),
                      ("seq-read 1M", "read", "1M", 0, jobs, "MiB/s", "psync")]
            for direct in (0, 1):
                kind = "direct" if direct else "buffered"
                specs += [("rand-write 4K %s" % kind, "randwrite", "4k", direct, jobs, "IOPS", "psync"),
                          ("rand-read 4K %s" % kind, "randread", "4k", direct, jobs, "IOPS", "psync")]
            if self.group == "memfs":
                # loads from a shared mapping: the page cache, with no syscall
                specs.append(("rand-read 4K mmap", "randread", "4k", 0, jobs, "IOPS", "mmap"))
        for name, rw, bs, direct, jobs, unit, engine in specs:
            wl = self.prefix + "fio %s j%d" % (name, jobs)
            if direct and direct_skip:
                self.record(wl, unit, t, {"skipped": direct_skip})
                continue
            self.run_workload(t, wl, unit, lambda: self.measure(
                t, lambda: self.fio(t, wdir, rw, bs, direct, jobs, engine=engine)))
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
        # One more pass, untimed, with the kernel's requests counted.
        counted = {}
        if not err and self.a.count_requests:
            shutil.rmtree(d, ignore_errors=True)
            for phase in ("create", "stat", "unlink"):
                with kreqs.Counting(t.mnt) as c:
                    subprocess.run([sys.executable, META, phase, d, n], capture_output=True, check=True)
                counted[phase] = per_op(c.counts, self.a.files)
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
                if phase in counted:
                    rec["requests_per_op"] = counted[phase]
            self.record(self.prefix + "meta %s (%d files)" % (phase, self.a.files), "ops/s", t, rec)
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
        if t.persistent:
            entries = tree_entries(self.a.tree)
        else:
            log("%s: building tree of %d files" % (t.name, self.a.tree))
            entries = int(subprocess.run([sys.executable, META, "tree", os.path.join(base, "tree"),
                                          str(self.a.tree)], check=True, capture_output=True,
                                         text=True).stdout)
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

            def counted_walk(before):
                """One more walk, untimed, with the kernel's requests counted."""
                if not (t.fuse and self.a.count_requests):
                    return None
                before()
                with kreqs.Counting(t.mnt) as c:
                    walk()
                return per_op(c.counts, entries)

            def cold():
                rec = self.measure(t, walk, before=cold_prep)
                rec["note"] = cold_note
                rec["requests_per_op"] = counted_walk(cold_prep)
                return rec

            def warm():
                # an untimed walk just before fills the caches
                rec = self.measure(t, walk, before=walk)
                rec["requests_per_op"] = counted_walk(walk)
                return rec

            self.run_workload(t, "%s cold (%d files)" % (name, self.a.tree), "entries/s", cold)
            self.run_workload(t, "%s warm (%d files)" % (name, self.a.tree), "entries/s", warm)

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
            self.run_workload(t, "transport GETATTR loop (fstat, attr 0)", "req/s",
                              lambda: self.getattr_loop(t), group="transport")
        finally:
            t.stop()
            if t.name.startswith("pt_ll"):
                shutil.rmtree(SHM_SRC, ignore_errors=True)

    def fstat_loop(self, t):
        """One GETATTR loop on t (meta.py fstat for runtime seconds; with
        attribute lifetime 0 every fstat is one GETATTR): (req/s, requests)."""
        f = os.path.join(t.mnt, "statme")
        r = subprocess.run([sys.executable, META, "fstat", f, str(self.a.runtime)],
                           capture_output=True, text=True, check=True)
        rate, ops = r.stdout.split()
        return float(rate), int(ops)

    def getattr_loop(self, t):
        counts = []

        def loop():
            rate, ops = self.fstat_loop(t)
            counts.append(ops)
            return rate
        rec = self.measure(t, loop)
        self.add_cpu_per_request(rec, statistics.median(counts))
        return rec

    @staticmethod
    def add_cpu_per_request(rec, requests):
        if "daemon_cpu_s" in rec and requests:
            rec["daemon_cpu_us_per_req"] = rec["daemon_cpu_s"] * 1e6 / requests

    # ---- offload: the BPF hot-inode policy on and off ----
    def run_offload(self):
        pairs = make_offload_pairs()
        self.offload_targets = [t for p in pairs.values() for t in p]
        a = self.a
        self.run_pair("hot-read", "hot-read (%d MiB, passes %d-%d)" % (
            HOT_READ_MIB, OFFLOAD_WARMUP + 1, a.read_passes), "s", pairs["hot-read"],
            self.hot_read_sample)
        self.run_pair("hot-stat", "hot-stat (%d files, rounds %d-%d)" % (
            a.stat_files, OFFLOAD_WARMUP + 1, a.stat_rounds), "s", pairs["hot-stat"],
            self.hot_stat_sample)
        self.run_pair("telemetry-cost", "telemetry-cost (GETATTR loop, attr 0)", "req/s",
                      pairs["telemetry-cost"], self.telemetry_sample, a.cost_repeats)
        self.run_pair("telemetry-cost-sampled", "telemetry-cost, 1 in 8 requests timed", "req/s",
                      pairs["telemetry-cost-sampled"], self.telemetry_sample, a.cost_repeats)

    def run_pair(self, key, wl, unit, pair, sample, repeats=None):
        """Runs sample(t) on a fresh daemon of each of the two targets in pair,
        offload_repeats times, alternating which goes first (drift and order
        then hit both alike); records per target the medians and, in
        self.offload[key], how the first compares with the second."""
        log("offload: %s" % wl)
        runs = {t.name: [] for t in pair}
        try:
            for i in range(repeats or self.a.offload_repeats):
                for t in (pair if i % 2 == 0 else pair[::-1]):
                    if not self.started(t):
                        raise RuntimeError("%s cannot start: %s" % (t.name, self.failed[t.name]))
                    try:
                        runs[t.name].append(sample(t))
                    finally:
                        t.stop()
        except Exception as e:
            log("offload: %s: %s" % (wl, e))
            for t in pair:
                self.record(wl, unit, t, {"error": str(e)}, group="offload")
            return
        for t in pair:
            rec = median_record(runs[t.name])
            rec["argv"] = t.argv
            self.record(wl, unit, t, rec, group="offload")
        on, off = (self.results[wl][t.name] for t in pair)
        self.offload[key] = compare_pair(key, wl, on, off)

    def warm_then_measure(self, t, one, n, keys):
        """Runs one() n times on t: the first OFFLOAD_WARMUP untimed, then a
        pause for the policy's scan (every 100 ms) to mark what they made hot;
        the rest timed, with the requests they cost (total and per keys)."""
        for _ in range(OFFLOAD_WARMUP):
            one()
        time.sleep(OFFLOAD_SETTLE_S)
        c0 = request_counts(t)
        cpu0 = cpu_seconds(t.pid)
        t0 = time.perf_counter()
        for _ in range(n - OFFLOAD_WARMUP):
            one()
        dt = time.perf_counter() - t0
        cpu1 = cpu_seconds(t.pid)
        c1 = request_counts(t)
        src, req = count_delta(c0, c1, keys)
        _, daemon = count_delta({"bpf": None, "daemon": c0["daemon"]},
                                {"bpf": None, "daemon": c1["daemon"]}, keys)
        return {"value": dt, "requests": req, "counter": src, "daemon_requests": daemon,
                "daemon_cpu_s": cpu_delta(cpu0, cpu1),
                "offload_status": c1["offload"]}

    def hot_read_sample(self, t):
        """A HOT_READ_MIB file written once, then open + read it whole in
        1 MiB reads + close, read_passes times."""
        p = os.path.join(t.mnt, "hot.bin")
        buf = bytearray(1 << 20)
        with open(p, "wb") as f:
            for i in range(HOT_READ_MIB):
                buf[0] = i  # not one page repeated
                f.write(buf)

        def one_pass():
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
        return self.warm_then_measure(t, one_pass, self.a.read_passes, [("READ", ["READ"])])

    def hot_stat_sample(self, t):
        """stat_files empty files in one directory, then stat_rounds rounds of
        stat() of each. Relative to a directory fd, so every stat costs the
        file's own LOOKUP and GETATTR (lifetimes 0), not the path's above it."""
        d = os.path.join(t.mnt, "hot")
        os.mkdir(d)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            names = ["f%06d" % i for i in range(self.a.stat_files)]
            for n in names:
                os.close(os.open(n, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))

            def one_round():
                for n in names:
                    os.stat(n, dir_fd=dfd)
            # the kernel sends STATX instead of GETATTR where it may
            return self.warm_then_measure(t, one_round, self.a.stat_rounds,
                                          [("LOOKUP+GETATTR", ["LOOKUP", "GETATTR", "STATX"])])
        finally:
            os.close(dfd)  # else the mount stays busy

    def telemetry_sample(self, t):
        c0 = cpu_seconds(t.pid)
        rate, ops = self.fstat_loop(t)
        c1 = cpu_seconds(t.pid)
        return {"value": rate, "ops": ops,
                "daemon_cpu_s": cpu_delta(c0, c1)}

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


class DataImage:
    """A fresh ext4 (mkfs defaults: journal) on a loop device at DATA.

    Why: the VM's root file system has no journal, and there ext4 skips
    inodes freed in the last minutes when it allocates (recently_deleted()),
    so every create got slower as the run went on (native itself moved 10x
    between targets). Inode tables and journal are written by mkfs, not
    lazily during the run, and the loop device does direct I/O (no second
    page cache)."""

    SIZE = "12G"

    def __init__(self):
        self.image = os.path.join(ROOT, "data.img")
        if is_mounted(DATA):
            subprocess.run(["umount", DATA], check=True)
        if os.path.exists(self.image):
            os.unlink(self.image)
        # What earlier runs with --data=dir left (the tree, fio files).
        for f in os.listdir(DATA):
            p = os.path.join(DATA, f)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        subprocess.run(["truncate", "-s", self.SIZE, self.image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                        self.image], check=True)
        self.loop = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", self.image],
                                   check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", self.loop, DATA], check=True)
        log("data: fresh ext4 (journal) of %s on %s at %s" % (self.SIZE, self.loop, DATA))

    def remove(self):
        subprocess.run(["umount", DATA])
        subprocess.run(["losetup", "-d", self.loop])
        if os.path.exists(self.image):
            os.unlink(self.image)


def per_op(counts, ops):
    """Kernel requests per operation (per file, per tree entry), by opcode."""
    return {k: v / ops for k, v in counts.items()}


def tree_stamp(n):
    """Names the tree built for n files (meta.py's real shape); holds its
    entry count."""
    return os.path.join(DATA, ".realtree-%d" % n)


def build_tree(n):
    tree = os.path.join(DATA, "tree")
    stamp = tree_stamp(n)
    if os.path.exists(stamp):
        return
    shutil.rmtree(tree, ignore_errors=True)
    for f in os.listdir(DATA):
        if f.startswith(".tree-") or f.startswith(".realtree-"):
            os.unlink(os.path.join(DATA, f))
    log("building tree of %d files in %s" % (n, tree))
    entries = subprocess.run([sys.executable, META, "tree", tree, str(n)], check=True,
                             capture_output=True, text=True).stdout
    with open(stamp, "w") as f:
        f.write(entries)


def tree_entries(n):
    with open(tree_stamp(n)) as f:
        return int(f.read())


def fmt(v):
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def report_section(runner, group, title, names, base, ll, last_col):
    """One table: per workload of `group`, a row per target with the figure,
    its ratios to the targets named `base` and `ll` (a tuple of names: the
    best of them in each row), and `last_col` ("cpu s": daemon CPU seconds,
    "cpu us/req": CPU microseconds per request)."""
    wls = [wl for wl in runner.order if runner.groups[wl] == group]
    if not wls:
        return []
    peers = ll if isinstance(ll, tuple) else (ll,)
    hdr = "%-40s %-18s %12s %-9s %9s %9s %11s" % (
        title, "target", "value", "unit", "x " + base,
        "x " + (ll if isinstance(ll, str) else "best peer"), last_col)
    lines = [hdr, "-" * len(hdr)]
    for wl in wls:
        row = runner.results[wl]
        vb = row.get(base, {}).get("value")
        vl = max((row.get(p, {}).get("value") or 0 for p in peers), default=0) or None
        for n in names:
            rec = row.get(n)
            if rec is None:
                continue
            if "value" not in rec:
                what = ("skipped: " + rec["skipped"]) if "skipped" in rec else \
                    ("ERROR: " + rec.get("error", "?"))
                lines.append("%-40s %-18s %s" % (wl, n, " ".join(what.split())[:110]))
                continue
            v = rec["value"]
            if last_col == "cpu s":
                cpu = "%.2f" % rec["daemon_cpu_s"] if "daemon_cpu_s" in rec else "-"
            else:
                cpu = "%.1f" % rec["daemon_cpu_us_per_req"] if "daemon_cpu_us_per_req" in rec else "-"
            lines.append("%-40s %-18s %12s %-9s %9s %9s %11s" % (
                wl, n, fmt(v), runner.units[wl], "%.2f" % (v / vb) if vb else "-",
                "%.2f" % (v / vl) if vl else "-", cpu))
        lines.append("")
    return lines


def offload_row(wl, n, rec, unit):
    if "value" not in rec:
        return "%-40s %-14s ERROR: %s" % (wl, n, " ".join(rec.get("error", "?").split())[:110])
    req = rec.get("requests")
    if req:
        label = [k for k in req if k != "total"][0]
        counts = "%11s %22s" % ("%.0f" % req["total"], "%.0f %s" % (req[label], label))
    else:
        counts = "%11s %22s" % ("-", "-")
    if "daemon_cpu_us_per_req" in rec:
        cpu = "%.2f us/req" % rec["daemon_cpu_us_per_req"]
    else:
        cpu = "%.2f s" % rec["daemon_cpu_s"] if "daemon_cpu_s" in rec else "-"
    v = rec["value"]
    value = "%.3f" % v if unit == "s" else fmt(v)  # times of a fraction of a second
    return "%-40s %-14s %10s %-6s %s %13s" % (wl, n, value, unit, counts, cpu)


def offload_summary(c):
    met = "met" if c["met"] else "NOT met"
    if "cost" in c:
        return "  telemetry costs %.1f%% of the GETATTR rate  [target: %s: %s]" % (
            c["cost"] * 100, c["target"], met)
    # rounded down: 89.99% must not print as the 90% it misses
    parts = ["%s %s" % ("%.1f%%" % (math.floor(r * 1000) / 10) if r is not None else "-", k)
             for k, r in c["request_reduction"].items()]
    return "  on/off: time x%.2f, requests fewer by %s  [target: %s: %s]" % (
        c["time_ratio"], ", ".join(parts), c["target"], met)


def report_offload(runner):
    """The offload table: per workload the two sides (median time of the
    passes after warm-up, or req/s), the requests that reached the daemon
    meanwhile, the daemon's CPU, then the comparison with its target."""
    wls = [wl for wl in runner.order if runner.groups[wl] == "offload"]
    if not wls:
        return []
    hdr = "%-40s %-14s %10s %-6s %11s %22s %13s" % (
        "offload (memfs; after warm-up)", "target", "value", "unit", "requests",
        "of which", "daemon cpu")
    lines = [hdr, "-" * len(hdr)]
    by_wl = {c["workload"]: c for c in runner.offload.values()}
    for wl in wls:
        for n, rec in runner.results[wl].items():
            lines.append(offload_row(wl, n, rec, runner.units[wl]))
        if wl in by_wl:
            lines.append(offload_summary(by_wl[wl]))
        lines.append("")
    counters = {rec.get("counter") for wl in wls for rec in runner.results[wl].values()} - {None}
    lines.append("requests counted by: %s" % ", ".join(
        "BPF stats map (completed, all opcodes and CPUs)" if c == "bpf" else
        "the daemon's status counters" if c == "daemon" else c for c in sorted(counters)))
    lines.append("")
    return lines


def report_round_trips(runner, group, names):
    """Per metadata and tree workload of `group`: the requests the kernel
    sent per operation (per file, per tree entry), in all and the opcodes
    that make up most of them."""
    lines = []
    for wl in runner.order:
        if runner.groups[wl] != group:
            continue
        for n in names:
            per = runner.results[wl].get(n, {}).get("requests_per_op")
            if not per:
                continue
            top = sorted(((v, k) for k, v in per.items() if k != "total" and v >= 0.005), reverse=True)[:6]
            lines.append("%-40s %-18s %7.2f  %s" % (wl, n, per["total"],
                                                    " ".join("%s %.2f" % (k, v) for v, k in top)))
        if lines and lines[-1] != "":
            lines.append("")
    if not lines:
        return []
    hdr = "%-40s %-18s %7s  %s" % ("round trips per operation", "target", "total", "by opcode (kernel tracepoint)")
    return [hdr, "-" * len(hdr)] + lines


def report(runner, targets, ttargets, mtargets=()):
    names = [t.name for t in targets]
    peer = tuple(n for n in PH_PEERS if n in names) or REF_LL
    lines = report_section(runner, "fs", "workload", names, "native", peer, "cpu s")
    lines += report_round_trips(runner, "fs", names)
    lines += report_section(runner, "memfs", "memfs beside tmpfs", [t.name for t in mtargets],
                            "tmpfs", ("memfs_ll", "memfs_ll-uring"), "cpu s")
    lines += report_round_trips(runner, "memfs", [t.name for t in mtargets])
    lines += report_section(runner, "transport", "request transports (memfs)",
                            [t.name for t in ttargets], "memfs-sync", "pt_ll-tmpfs",
                            "cpu us/req")
    lines += report_offload(runner)
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
    global EFUSED  # --efused: the targets are made after the options are read
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes, 3 s per fio job, 1 repeat (offload: 2, 8 passes, "
                         "2,000 files)")
    ap.add_argument("--targets", help="comma-separated subset of targets")
    ap.add_argument("--workloads", default="fio,meta,tree",
                    help="fs suite workloads: fio, meta (create/stat/unlink), tree (find, ls -lR)")
    ap.add_argument("--suite", default=",".join(SUITES),
                    help="what to run: fs (file system targets vs native), transports "
                         "(memfs per request transport vs passthrough_ll), micro, offload "
                         "(memfs with the BPF offload policy on vs off, telemetry on vs off)")
    ap.add_argument("--runtime", type=int, help="seconds per fio job")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--size", help="fio file size per job")
    ap.add_argument("--files", type=int, help="metadata workload files")
    ap.add_argument("--tree", type=int, help="files in the find/ls tree")
    ap.add_argument("--count-requests", action=argparse.BooleanOptionalAction, default=True,
                    help="one more untimed pass of each metadata and tree workload with the kernel's "
                         "requests counted (perf, the fuse_request_send tracepoint)")
    ap.add_argument("--read_passes", type=int, help="offload hot-read: passes over the file")
    ap.add_argument("--stat_rounds", type=int, help="offload hot-stat: rounds of stat()")
    ap.add_argument("--stat_files", type=int, help="offload hot-stat: files")
    ap.add_argument("--efused", help="the efused binary (default: %s)" % EFUSED)
    ap.add_argument("--data", default="image", choices=("image", "dir"),
                    help="where the fs suite's files live: 'image' (default: a fresh ext4 "
                         "with its journal, made for this run on a loop device, so every "
                         "target meets the same file-system state) or 'dir' (%s as it is)"
                    % DATA)
    a = ap.parse_args()
    q = a.quick
    # the offload pairs compare two sides: even --quick takes 2 runs of each
    a.offload_repeats = a.repeats or (2 if q else 3)
    # the telemetry cost is a few % against run-to-run noise of the same
    # order on this VM: more repeats for its medians
    a.cost_repeats = a.repeats or (2 if q else 7)
    a.read_passes = a.read_passes or (8 if q else 20)
    a.stat_rounds = a.stat_rounds or (8 if q else 10)
    a.stat_files = a.stat_files or (2000 if q else 10000)
    if min(a.read_passes, a.stat_rounds) <= OFFLOAD_WARMUP:
        sys.exit("bench: --read_passes and --stat_rounds must exceed the %d warm-up passes"
                 % OFFLOAD_WARMUP)
    if a.efused:
        EFUSED = os.path.abspath(a.efused)
    a.runtime = a.runtime or (3 if q else 5)
    a.repeats = a.repeats or (1 if q else 3)
    a.size = a.size or ("256M" if q else "1G")
    a.files = a.files or (2000 if q else 20000)
    a.tree = a.tree or (5000 if q else 50000)

    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    os.makedirs(DATA, exist_ok=True)

    a.workloads = set(a.workloads.split(","))
    suites = set(a.suite.split(","))
    if suites - set(SUITES):
        sys.exit("bench: unknown suite(s) %s" % ",".join(sorted(suites - set(SUITES))))
    if a.targets:
        known = {t.name for t in make_targets(None) + make_transport_targets(None) + make_memfs_targets(None)}
        unknown = set(a.targets.split(",")) - known
        if unknown:
            sys.exit("bench: unknown target(s) %s (known: %s)" % (
                ",".join(sorted(unknown)), ",".join(sorted(known))))
    targets = make_targets(a.targets) if "fs" in suites else []
    ttargets = make_transport_targets(a.targets) if "transports" in suites else []
    mtargets = make_memfs_targets(a.targets) if "memfs" in suites else []
    runner = Runner(a)
    runner.failed = {}

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    est = ((len(targets) + len(mtargets)) * 12 * ("fio" in a.workloads) + len(ttargets) * 5) * a.runtime * a.repeats
    if targets or ttargets or mtargets:
        log("%d targets, %d fio jobs of %d s x %d repeats each: fio alone takes ~%d min"
            % (len(targets) + len(mtargets), 12, a.runtime, a.repeats, (est + 59) // 60))
    # Made last, right before the try that removes it.
    data_image = DataImage() if targets and a.data == "image" else None
    fstype = subprocess.run(["stat", "-f", "-c", "%T", DATA],
                            capture_output=True, text=True).stdout.strip()
    if fstype != "ext2/ext3":  # stat -f reports ext4 as ext2/ext3
        log("warning: %s is on %s, not ext4" % (DATA, fstype))
    t_start = time.time()
    try:
        if targets:
            build_tree(a.tree)
        for t in targets:
            runner.run_target(t)
        for t in ttargets:
            runner.run_transport_target(t)
        # memfs beside tmpfs: the fio and meta workloads of the fs suite.
        runner.group, runner.prefix = "memfs", "memfs: "
        for t in mtargets:
            log("=== %s ===" % t.name)
            if not runner.started(t):
                continue
            try:
                if "fio" in a.workloads:
                    runner.run_fio(t, t.mnt)
                if "meta" in a.workloads:
                    runner.run_meta(t, t.mnt)
            finally:
                t.stop()
        runner.group, runner.prefix = "fs", ""
        if "micro" in suites:
            runner.run_micro()
        if "offload" in suites:
            runner.run_offload()
    finally:
        for t in targets + ttargets + mtargets + runner.offload_targets:
            t.stop()
        if data_image is not None:
            data_image.remove()
    elapsed = time.time() - t_start

    table = report(runner, targets, ttargets, mtargets)
    print(table)
    res = {
        "config": {"quick": q, "runtime_s": a.runtime, "repeats": a.repeats,
                   "fio_size": a.size, "meta_files": a.files, "tree_files": a.tree,
                   "offload_repeats": a.offload_repeats, "cost_repeats": a.cost_repeats, "offload_warmup": OFFLOAD_WARMUP,
                   "hot_read_mib": HOT_READ_MIB, "read_passes": a.read_passes,
                   "stat_rounds": a.stat_rounds, "stat_files": a.stat_files, "efused": EFUSED,
                   "data_dir": DATA, "data": a.data, "kernel": os.uname().release,
                   "elapsed_s": round(elapsed, 1),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "note": "higher is better for every figure but the offload group's times "
                "(unit s: the passes after warm-up); value is the median of the "
                "samples; daemon_cpu_s is the FUSE daemon's utime+stime during "
                "the workload; offload requests are those that reached the daemon "
                "after warm-up (counter: bpf = the BPF stats map's completed)",
        "targets": [{"name": t.name, "argv": t.argv} for t in targets + ttargets + mtargets],
        "offload": runner.offload,
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
