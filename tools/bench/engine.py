#!/usr/bin/python3
"""The engine benchmark: one trivial file system served through efuse and
through libfuse, side by side in one run.

The file system is tools/examples/null (one file of zeros that takes every
write; attributes never cached, so every fstat is a GETATTR; direct I/O, so
every read is a READ) on libefuse, and the same file system on libfuse 3's
low-level API (engine/null_ll.c, built against Debian's libfuse3-dev). It
does no work, so what a request costs is what the engine costs.

  sudo python3 tools/bench/engine.py [--repeats 3] [--seconds 3] [--build build]

Per workload (GETATTR loop, 4 KiB and 1 MiB O_DIRECT reads) and client count
(1, 2): requests/s of each target, the median of the repeats (the targets
take turns in each repeat), efuse's ratio to libfuse, and the daemon's CPU
time per request (utime + stime of all its threads over the run). efuse runs
on each of its transports, with telemetry off (libfuse has none), and once
with GETATTR and READ answered later from the file system's own threads;
libfuse with its multi-threaded loop, with and without clone_fd. A second
table gives the rest of the machine's CPU time per request (clients and
kernel: all busy time less the daemon's) and how many CPUs were busy: where
both CPUs are busy, that share bounds requests/s whatever the daemon does.
--workload and --target pick rows and columns by name. Nothing else may
run while it measures: the machine has 2 CPUs.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import CLK, cpu_seconds, is_mounted  # (this directory's runner)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def log(*a):
    print("engine:", *a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build(work, build_dir):
    """efuse's null against the installed library, libfuse's null_ll."""
    prefix = os.path.join(work, "prefix")
    run(["cmake", "--install", build_dir, "--prefix", prefix], stdout=subprocess.DEVNULL)
    ex = os.path.join(work, "examples")
    run(["cmake", "-S", os.path.join(ROOT, "tools/examples"), "-B", ex, "-G", "Ninja",
         "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DCMAKE_PREFIX_PATH=" + prefix], stdout=subprocess.DEVNULL)
    run(["cmake", "--build", ex, "--target", "null"], stdout=subprocess.DEVNULL)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                           capture_output=True, text=True).stdout.split()
    peer = os.path.join(work, "null_ll")
    run(["gcc", "-O2", "-o", peer, os.path.join(HERE, "engine/null_ll.c")] + flags)
    return prefix, os.path.join(ex, "null"), peer


class Target:
    def __init__(self, name, argv, env=None):
        self.name, self.argv, self.env = name, argv, env
        self.proc = None
        self.mnt = None

    def start(self, mnt):
        self.mnt = mnt
        self.proc = subprocess.Popen(self.argv + [mnt], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=self.env)
        deadline = time.monotonic() + 10
        while not is_mounted(mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("engine: %s did not mount: %s" % (self.name, self.proc.stderr.read().decode()))
            time.sleep(0.02)
        time.sleep(0.5)  # its threads started

    def stop(self):
        subprocess.run(["umount", self.mnt], check=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            subprocess.run(["umount", "-l", self.mnt], check=False)
            self.proc.wait()


def machine_busy_seconds():
    """CPU time all CPUs spent on anything but idling, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK


def getattr_loop(path, clients, seconds):
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "meta.py"), "fstat", path, str(seconds)],
                              stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    ops = 0
    for p in procs:
        out = p.communicate()[0].split()
        if p.returncode != 0 or len(out) != 2:
            raise SystemExit("engine: the GETATTR loop failed")
        ops += int(out[1])
    return ops


def fio_reads(path, clients, seconds, bs, rw):
    out = subprocess.run(["fio", "--name=engine", "--filename=" + path, "--rw=" + rw, "--bs=" + bs,
                          "--direct=1", "--ioengine=psync", "--numjobs=%d" % clients, "--group_reporting",
                          "--time_based", "--runtime=%d" % seconds, "--size=64G", "--invalidate=0",
                          "--output-format=json"], check=True, capture_output=True, text=True).stdout
    job = json.loads(out)["jobs"][0]
    if job["error"] != 0:
        raise SystemExit("engine: fio failed")
    return int(job["read"]["total_ios"])


WORKLOADS = [
    ("GETATTR loop", lambda p, c, s: getattr_loop(p, c, s)),
    ("4 KiB direct reads", lambda p, c, s: fio_reads(p, c, s, "4k", "randread")),
    ("1 MiB direct reads", lambda p, c, s: fio_reads(p, c, s, "1M", "read")),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--workload", help="only the workloads whose name contains this (e.g. '1 MiB')")
    ap.add_argument("--target", action="append",
                    help="only the targets whose name contains this (repeatable; e.g. 'efuse uring' 'libfuse')")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("engine: run as root (it mounts)")
    work = tempfile.mkdtemp(prefix="efuse-engine-")
    prefix, efuse_null, peer = build(work, args.build)
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(prefix, "lib"))
    targets = [Target("efuse uring", [efuse_null, "--transport=uring", "--telemetry=off"], env),
               Target("efuse uring-dev", [efuse_null, "--transport=uring-dev", "--telemetry=off"], env),
               Target("efuse sync", [efuse_null, "--transport=sync", "--telemetry=off"], env),
               # GETATTR and READ answered from the file system's own threads
               # (efuse::Later): what answering later costs. Not a "best efuse".
               Target("efuse uring, answered later", [efuse_null, "--answer-later", "--transport=uring",
                                                      "--telemetry=off"], env),
               Target("libfuse", [peer]),
               Target("libfuse clone_fd", [peer, "-o", "clone_fd"])]
    targets = [t for t in targets if not args.target or any(f in t.name for f in args.target)]
    workloads = [w for w in WORKLOADS if args.workload is None or args.workload in w[0]]
    if not targets or not workloads:
        raise SystemExit("engine: --target/--workload leave nothing to run")
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    # results[(workload, clients)][target] = [(ops/s, cpu us per op), ...]
    results = {}
    for rep in range(args.repeats):
        for t in targets:
            t.start(mnt)
            try:
                for wl, fn in workloads:
                    for clients in (1, 2):
                        c0, m0 = cpu_seconds(t.proc.pid), machine_busy_seconds()
                        t0 = time.monotonic()
                        ops = fn(os.path.join(mnt, "null"), clients, args.seconds)
                        dt = time.monotonic() - t0
                        cpu = cpu_seconds(t.proc.pid) - c0
                        # Everything else the machine did meanwhile: the
                        # clients and the kernel's side of each request.
                        rest = max(0.0, machine_busy_seconds() - m0 - cpu)
                        results.setdefault((wl, clients), {}).setdefault(t.name, []).append(
                            (ops / dt, cpu / ops * 1e6, rest / ops * 1e6, (cpu + rest) / dt))
                        log("repeat %d %s, %s, %d client(s): %.0f/s, %.2f us daemon CPU and %.2f us client and "
                            "kernel CPU per request, %.2f CPUs busy" %
                            (rep + 1, t.name, wl, clients, ops / dt, cpu / ops * 1e6, rest / ops * 1e6,
                             (cpu + rest) / dt))
            finally:
                t.stop()
    shutil.rmtree(work, ignore_errors=True)

    names = [t.name for t in targets]
    print("Engine benchmark: tools/examples/null on efuse and on libfuse %s (null_ll), %d repeats of %d s, "
          "medians" % (subprocess.run(["pkg-config", "--modversion", "fuse3"], capture_output=True,
                                      text=True).stdout.strip(), args.repeats, args.seconds))
    print()
    print("| workload | clients | " + " | ".join(names) + " | best efuse / best libfuse | CPU/request, best efuse / best libfuse |")
    print("| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: |")
    machine = []
    for (wl, clients), per in results.items():
        med = {n: tuple(statistics.median(r[i] for r in per[n]) for i in range(4)) for n in names}
        cells = ["%.0f/s, %.1f us" % med[n][:2] for n in names]
        machine.append("| %s | %d | %s |" % (wl, clients, " | ".join(
            "%.1f us, %.2f CPUs" % (med[n][2], med[n][3]) for n in names)))
        efuses = [n for n in names if n.startswith("efuse") and "later" not in n]
        peers = [n for n in names if n.startswith("libfuse")]
        if not efuses or not peers:
            print("| %s | %d | %s | | |" % (wl, clients, " | ".join(cells)))
            continue
        efuse = max(efuses, key=lambda n: med[n][0])
        peer_best = max(peers, key=lambda n: med[n][0])
        print("| %s | %d | %s | %.2f (%s vs %s) | %.2f |" % (
            wl, clients, " | ".join(cells), med[efuse][0] / med[peer_best][0], efuse, peer_best,
            med[efuse][1] / med[peer_best][1]))
    # Where the machine is saturated, requests/s is bounded by all the CPU
    # a request takes, the daemon's share only part of it.
    print()
    print("Client and kernel CPU per request (the machine's busy time less the daemon's), and CPUs busy:")
    print()
    print("| workload | clients | " + " | ".join(names) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in names) + " |")
    print("\n".join(machine))


if __name__ == "__main__":
    main()
