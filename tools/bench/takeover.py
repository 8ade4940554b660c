#!/usr/bin/python3
"""Takeover bench: what a client sees when a supervised server is replaced.

  sudo /usr/bin/python3 tools/bench/takeover.py [--crashes N] [--upgrades N] [--repeats N]
      [--steady-only | --takeovers-only] [--only NAME] [--baseline=PATH]

For each configuration (memfs with kernel data, memfs with daemon data,
passthrough with kernel passthrough, passthrough with data through the
daemon), efused
--supervise=on serves while two client processes run: 4 KiB O_DIRECT
random reads of a 64 MiB file (every block checked) and a create loop
(O_CREAT|O_EXCL, then close; each file unlinked 1,000 creations later, so
the live files stay few while the journal grows). The runner then
  * kills the server (SIGKILL) --crashes times (default 100), 0.5-1 s
    apart: crash takeovers;
  * runs `efusectl restart` --upgrades times (default 30): planned
    upgrades (the successor loads while the server serves, then the server
    drains and hands over).
Per phase it prints the client errors, the worst single operation around
an event (from 0.2 s before it to 1 s after), the median of the per-event
worst, and the p99 of the operations in those windows; after the run,
every created file must be there and every read block must have been
right (data lost: 0).

Then the steady-state cost of supervision: a create loop and a GETATTR
loop (fstat, attribute lifetime 0, offload off), medians of --repeats, for
--supervise=off on the default transport (the FUSE io_uring queues),
--supervise=off on uring-dev (the transport a supervised server uses) and
--supervise=on: on ÷ off on uring-dev is the journal's cost, on ÷ off on
the default what a user pays in all. Beside the rates, the serving
server's CPU time per operation (exact, from schedstat), which this noisy
2-core machine spreads less than the rates: off on uring-dev → on.
--baseline=PATH adds a supervised server of another efused binary (an
earlier build) to the turns, for a before/after in one run.
"""
import argparse
import array
import bisect
import errno
import mmap
import multiprocessing as mp
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import time

from scale import stop_efused  # same directory

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EFUSED = os.path.join(REPO, "build", "tools", "efused", "efused")
EFUSECTL = os.path.join(REPO, "build", "tools", "efusectl", "efusectl")
ROOT = "/var/tmp/efuse-bench/takeover"
MNT = os.path.join(ROOT, "mnt")
SRC = os.path.join(ROOT, "src")
FILE_BLOCKS = 16384  # 64 MiB of 4 KiB blocks

CONFIGS = [
    ("memfs, kernel data", ["--fs=memfs", "--size=1G"]),
    # what a user without root gets: the bytes in the supervisor's memfd,
    # the rest in memfs's journal
    ("memfs, daemon data", ["--fs=memfs", "--size=1G", "--memfs_data=daemon"]),
    ("passthrough", ["--fs=passthrough", "--source=" + SRC]),
    ("passthrough, daemon I/O", ["--fs=passthrough", "--source=" + SRC, "--passthrough=off"]),
]


def log(*a):
    print("takeover:", *a, flush=True)


def status():
    path = "/run/efuse/%d.status" % os.minor(os.stat(MNT).st_dev)
    kv = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition(": ")
            kv[k] = v
    return kv


def mount(flags, binary=EFUSED):
    os.makedirs(MNT, exist_ok=True)
    logf = open(os.path.join(ROOT, "efused.log"), "a")
    p = subprocess.Popen([binary] + flags + [MNT], stdout=logf, stderr=logf)
    for _ in range(400):
        if os.path.ismount(MNT):
            break
        time.sleep(0.025)
    else:
        raise SystemExit("takeover: efused did not mount (see %s/efused.log)" % ROOT)
    return p


def unmount(p):
    stop_efused(p, MNT)


def block(i):
    return struct.pack("<Q", i) * 512


def reader(path, stop, out):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    rng = random.Random(os.getpid())
    starts, lats, errors, bad = array.array("q"), array.array("q"), {}, 0
    while not stop.is_set():
        i = rng.randrange(FILE_BLOCKS)
        t = time.perf_counter_ns()
        try:
            n = os.preadv(fd, [buf], i * 4096)
            if n != 4096 or buf[:8] != struct.pack("<Q", i):
                bad += 1
        except OSError as e:
            key = "read " + errno.errorcode.get(e.errno, str(e.errno))
            errors[key] = errors.get(key, 0) + 1
        starts.append(t)
        lats.append(time.perf_counter_ns() - t)
    os.close(fd)
    out.send((starts, lats, errors, bad, []))


KEEP = 1000  # the creator's last files stay; older ones are unlinked


def creator(d, stop, out):
    """Creates c0, c1, ... and unlinks each one KEEP creations later (the
    unlink timed too): churn, with a bounded number of live files."""
    starts, lats, errors, kept = array.array("q"), array.array("q"), {}, []
    i = 0
    while not stop.is_set():
        name = os.path.join(d, "c%07d" % i)
        i += 1
        for op in ("create", "unlink"):
            if op == "unlink" and len(kept) <= KEEP:
                continue
            t = time.perf_counter_ns()
            try:
                if op == "create":
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                    kept.append(name)
                else:
                    os.unlink(kept.pop(0))
            except OSError as e:
                key = op + " " + errno.errorcode.get(e.errno, str(e.errno))
                errors[key] = errors.get(key, 0) + 1
            starts.append(t)
            lats.append(time.perf_counter_ns() - t)
    out.send((starts, lats, errors, 0, kept))


def p99(xs):
    return sorted(xs)[int(len(xs) * 0.99)] if xs else 0


def run_phase(kind, cycles):
    """Load while `cycles` events of `kind` happen; a result row."""
    d = os.path.join(MNT, "creates-%s" % kind)
    os.mkdir(d)
    stop = mp.Event()
    loads = []
    for fn, arg in ((reader, os.path.join(MNT, "data")), (creator, d)):
        rx, tx = mp.Pipe(duplex=False)
        proc = mp.Process(target=fn, args=(arg, stop, tx))
        proc.start()
        loads.append((proc, rx))
    time.sleep(1)
    events = []
    rng = random.Random(7)
    for _ in range(cycles):
        gen = int(status()["server_generation"])
        t = time.perf_counter_ns()
        if kind == "crash":
            os.kill(int(status()["server_pid"]), signal.SIGKILL)
        else:
            r = subprocess.run([EFUSECTL, "restart", MNT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise SystemExit("takeover: efusectl restart: " + r.stderr)
        events.append(t)
        deadline = time.time() + 10
        while int(status()["server_generation"]) <= gen:
            if time.time() > deadline:
                raise SystemExit("takeover: no successor within 10 s")
            time.sleep(0.002)
        time.sleep(rng.uniform(0.5, 1.0))
    time.sleep(1)
    stop.set()
    results = []
    for proc, rx in loads:
        results.append(rx.recv())
        proc.join()
    worst, window_lats, errors, bad, lost = [], [], {}, 0, 0
    for starts, lats, e, b, kept in results:
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
        bad += b
        if kept:
            # exactly the files not yet unlinked: none lost, none back
            lost += len(set(kept) ^ set(os.path.join(d, n) for n in os.listdir(d)))
    for t in events:
        lo, hi = t - 200_000_000, t + 1_000_000_000
        w = []
        for starts, lats, *_ in results:
            # starts are in order: the ops that began up to 10 s before the
            # window (a stalled one ends in it) and before its end
            first = bisect.bisect_left(starts, lo - 10_000_000_000)
            last = bisect.bisect_right(starts, hi)
            w += [lats[k] for k in range(first, last) if starts[k] + lats[k] >= lo]
        worst.append(max(w) if w else 0)
        window_lats += w
    ops = sum(len(r[0]) for r in results)
    return {
        "events": len(events), "ops": ops, "errors": sum(errors.values()), "error_kinds": errors,
        "bad_reads": bad, "lost_files": lost,
        "max_ms": max(worst) / 1e6, "median_event_max_ms": statistics.median(worst) / 1e6,
        "p99_window_ms": p99(window_lats) / 1e6,
    }


STEADY_RUNS = [0]


def cpu_ns(pid):
    """CPU time of every thread of `pid` (exact, from schedstat; not the
    tick-sampled user/system split)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended
    return total


def steady_once(flags, binary=EFUSED):
    """Creates/s and GETATTRs/s of one mount with these flags, and the
    serving server's CPU time per create and per GETATTR (us)."""
    p = mount(flags + ["--attr_timeout=0", "--offload=off"], binary)
    try:
        # Steady state: a supervised mount's standby loads in its first
        # second; every mount gets the same time.
        time.sleep(2)
        server = int(status().get("server_pid", p.pid))
        STEADY_RUNS[0] += 1
        d = os.path.join(MNT, "s%d" % STEADY_RUNS[0])
        os.mkdir(d)
        n, t0, c0 = 0, time.perf_counter(), cpu_ns(server)
        while time.perf_counter() - t0 < 3:
            for _ in range(200):
                os.close(os.open(os.path.join(d, "f%07d" % n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                n += 1
        creates = n / (time.perf_counter() - t0)
        create_us = (cpu_ns(server) - c0) / 1e3 / n
        fd = os.open(os.path.join(d, "f0000000"), os.O_RDONLY)
        n, t0, c0 = 0, time.perf_counter(), cpu_ns(server)
        while time.perf_counter() - t0 < 3:
            for _ in range(1000):
                os.fstat(fd)
            n += 1000
        getattrs = n / (time.perf_counter() - t0)
        getattr_us = (cpu_ns(server) - c0) / 1e3 / n
        os.close(fd)
        return creates, getattrs, create_us, getattr_us
    finally:
        unmount(p)


def steady(variants, repeats):
    """Medians of `repeats` of each variant's steady_once figures; a variant
    is (flags, binary). The variants take turns, so a drift of the machine
    falls on all alike."""
    runs = [[] for _ in variants]
    for _ in range(repeats):
        for i, (flags, binary) in enumerate(variants):
            runs[i].append(steady_once(flags, binary))
    return [tuple(statistics.median(r[k] for r in rs) for k in range(4)) for rs in runs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crashes", type=int, default=100)
    ap.add_argument("--upgrades", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steady-only", action="store_true", help="only the steady-state cost of supervision")
    ap.add_argument("--takeovers-only", action="store_true", help="no steady-state rows")
    ap.add_argument("--only", help="only the configurations whose name contains this (e.g. 'daemon I/O')")
    ap.add_argument("--baseline", help="another efused binary (an earlier build): its supervised server "
                    "takes turns with the others, for a before/after in one run")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("takeover: run as root")
    for tool in (EFUSED, EFUSECTL):
        if not os.access(tool, os.X_OK):
            raise SystemExit("takeover: build first (tools/setup.sh): no " + tool)
    if os.path.ismount(MNT):
        subprocess.call(["umount", "-l", MNT])
    subprocess.run(["rm", "-rf", ROOT], check=True)
    os.makedirs(SRC)
    rows = []
    configs = [c for c in CONFIGS if a.only is None or a.only in c[0]]
    if not configs:
        raise SystemExit("takeover: no configuration's name contains %r" % a.only)
    for name, flags in ([] if a.steady_only else configs):
        p = mount(flags + ["--supervise=on"])
        try:
            with open(os.path.join(MNT, "data"), "wb") as f:
                for i in range(FILE_BLOCKS):
                    f.write(block(i))
            for kind, cycles in (("crash", a.crashes), ("upgrade", a.upgrades)):
                if cycles == 0:
                    continue
                log("%s: %d %s takeovers under load" % (name, cycles, kind))
                r = run_phase(kind, cycles)
                r.update(config=name, kind=kind)
                rows.append(r)
                log(r)
        finally:
            unmount(p)
        subprocess.run(["rm", "-rf", SRC], check=True)
        os.makedirs(SRC)
    if rows:
        print()
        print("| configuration | takeover | events | client ops | errors | data lost | worst op | median of per-event worst | p99 around events |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| %s | %s | %d | %d | %d | %d | %.1f ms | %.1f ms | %.2f ms |" % (
            r["config"], r["kind"], r["events"], r["ops"], r["errors"], r["lost_files"] + r["bad_reads"],
            r["max_ms"], r["median_event_max_ms"], r["p99_window_ms"]))
    if a.takeovers_only:
        return 0
    print()
    print("| configuration | loop | off, default transport | off, uring-dev | on | on ÷ off (uring-dev): the journal | on ÷ off (default) | server CPU per op, off (uring-dev) → on |%s" %
          (" on, baseline |" if a.baseline else ""))
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |%s" % (" ---: |" if a.baseline else ""))
    for name, flags in configs:
        variants = [(flags + ["--supervise=off"], EFUSED), (flags + ["--supervise=off", "--transport=uring-dev"], EFUSED),
                    (flags + ["--supervise=on"], EFUSED)]
        if a.baseline:
            variants.append((flags + ["--supervise=on"], a.baseline))
        medians = steady(variants, a.repeats)
        (c0, g0, _, _), (cd, gd, cd_us, gd_us), (c1, g1, c1_us, g1_us) = medians[:3]
        for loop, base, dev, on, dev_us, on_us, k in (("create", c0, cd, c1, cd_us, c1_us, 0),
                                                      ("GETATTR", g0, gd, g1, gd_us, g1_us, 1)):
            extra = ""
            if a.baseline:
                b = medians[3]
                extra = " %.0f/s (%.2f), %.2f us |" % (b[k], b[k] / dev, b[k + 2])
            print("| %s | %s | %.0f/s | %.0f/s | %.0f/s | %.2f | %.2f | %.2f → %.2f us |%s" % (
                name, loop, base, dev, on, on / dev, on / base, dev_us, on_us, extra), flush=True)


if __name__ == "__main__":
    sys.exit(main())
