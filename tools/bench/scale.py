#!/usr/bin/python3
"""Scale run: efuse passthrough over a tree of N files (default 1,000,000).

  sudo /usr/bin/python3 tools/bench/scale.py [--files N] [--fd_cache N]
  sudo /usr/bin/python3 tools/bench/scale.py --memfs=daemon|kernel [--files N]

With --memfs: N empty files created through a memfs mount (data in the
daemon, or --memfs_data=kernel) in 1,000-file directories, then stat'ed
in the same order; it reports both rates and the memory per file, in the
daemon (RSS growth) and in the kernel (slab growth of the inode and dentry
caches, the FUSE inodes and, with kernel data, the private tmpfs's).
Mind the 60 s entry lifetime: names created longer ago than that are
looked up again by the stat pass.

Builds (once; kept with a stamp) N files of 1 byte in 1,000-file directories
under /var/tmp/efuse-bench/scale on ext4, mounts it with efused
--fs=passthrough (default flags: the fd cache is a quarter of RLIMIT_NOFILE),
then runs `find -size -2` (a LOOKUP for every file, so the kernel remembers
every inode) and `du --inodes` over the mount. It reports the walks' times,
how many inodes the daemon remembers, its open fds against RLIMIT_NOFILE, and
its memory per remembered inode (RSS growth over the walk: what the operator
pays, allocator slack included).
"""
import argparse
import os
import resource
import signal
import subprocess
import sys
import time

from bench import fresh_status  # same directory

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EFUSED = os.path.join(REPO, "build", "tools", "efused", "efused")
ROOT = "/var/tmp/efuse-bench"
SRC = os.path.join(ROOT, "scale")
MNT = os.path.join(ROOT, "mnt", "scale")


def log(*a):
    print("scale:", *a, flush=True)


def build(n):
    stamp = os.path.join(ROOT, ".scale-%d" % n)
    if os.path.exists(stamp):
        return
    subprocess.run(["rm", "-rf", SRC], check=True)
    log("building %d files in %s (once)" % (n, SRC))
    t0 = time.time()
    per = 1000
    dfd = None
    for i in range(n):
        if i % per == 0:
            if dfd is not None:
                os.close(dfd)
            d = os.path.join(SRC, "d%04d" % (i // per))
            os.makedirs(d)
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open("f%07d" % i, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd)
        os.write(fd, b"x")
        os.close(fd)
    if dfd is not None:
        os.close(dfd)
    open(stamp, "w").close()
    log("built in %.0f s" % (time.time() - t0))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def timed(cmd):
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit("scale: %s failed: %s" % (cmd[0], r.stderr[-300:]))
    return time.time() - t0, r.stdout


def start_efused(argv):
    """efused with argv (mounting at MNT), its log in ROOT; once mounted."""
    logf = open(os.path.join(ROOT, "scale-efused.log"), "w")
    p = subprocess.Popen(argv, stdout=logf, stderr=logf)
    for _ in range(300):
        if os.path.ismount(MNT):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return p


def stop_efused(p, mnt=MNT):
    """SIGTERM to efused `p`; killed after 120 s, and a mount left at `mnt`
    detached."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(120)
    except subprocess.TimeoutExpired:
        p.kill()
    if os.path.ismount(mnt):
        subprocess.call(["umount", "-l", mnt])


SLABS = ("shmem_inode_cache", "dentry", "inode_cache", "fuse_inode")


def slab_bytes():
    """Bytes in the slab caches a file costs the kernel (active objects x size)."""
    total = 0
    with open("/proc/slabinfo") as f:
        for line in f:
            w = line.split()
            if w and w[0] in SLABS:
                total += int(w[1]) * int(w[3])
    return total


def run_memfs(a):
    os.makedirs(MNT, exist_ok=True)
    subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"])
    argv = [EFUSED, "--supervise=off", "--fs=memfs", "--size=4G", "--max_inodes=%d" % (a.files + a.files // 1000 + 16),
            "--memfs_data=" + a.memfs, MNT]
    p = start_efused(argv)
    try:
        rss0, slab0 = rss_kib(p.pid), slab_bytes()
        per = 1000
        t0 = time.time()
        for i in range(a.files // per):
            d = os.path.join(MNT, "d%04d" % i)
            os.mkdir(d)
            for j in range(per):
                os.close(os.open(os.path.join(d, "f%04d" % j), os.O_CREAT | os.O_WRONLY, 0o644))
        t1 = time.time()
        for i in range(a.files // per):
            d = os.path.join(MNT, "d%04d" % i)
            for j in range(per):
                os.stat(os.path.join(d, "f%04d" % j))
        t2 = time.time()
        rss1, slab1 = rss_kib(p.pid), slab_bytes()
        n = a.files // per * per
        log("memfs (%s data), %d files: create %.0f/s, stat %.0f/s; per file: daemon RSS %.0f B, "
            "kernel slab (%s) %.0f B; %d open fds"
            % (a.memfs, n, n / (t1 - t0), n / (t2 - t1), (rss1 - rss0) * 1024.0 / n,
               ", ".join(SLABS), (slab1 - slab0) / n, fds(p.pid)))
        return 0
    finally:
        stop_efused(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000000)
    ap.add_argument("--fd_cache", type=int, default=0, help="0: efused's default")
    ap.add_argument("--memfs", choices=("daemon", "kernel"),
                    help="create and stat the files through memfs with this data mode instead")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("scale: run as root")
    if a.memfs:
        return run_memfs(a)
    build(a.files)
    os.makedirs(MNT, exist_ok=True)
    subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"])
    argv = [EFUSED, "--supervise=off", "--fs=passthrough", "--source=" + SRC, MNT]
    if a.fd_cache:
        argv.insert(1, "--fd_cache=%d" % a.fd_cache)
    p = start_efused(argv)
    try:
        rss0 = rss_kib(p.pid)
        st0 = fresh_status(p.pid, MNT)
        find_s, out = timed(["find", MNT, "-type", "f", "-size", "-2"])
        found = out.count("\n")
        st1 = fresh_status(p.pid, MNT)
        rss1 = rss_kib(p.pid)
        nfds = fds(p.pid)
        du_s, out = timed(["du", "-s", "--inodes", MNT])
        du_inodes = int(out.split()[0])
        inodes = int(st1.get("pt_inodes", "0")) - int(st0.get("pt_inodes", "0"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        per_inode = (rss1 - rss0) * 1024.0 / max(inodes, 1)
        log("files %d: find -size -2 found %d in %.1f s (%.0f files/s); du --inodes %d in %.1f s"
            % (a.files, found, find_s, found / find_s, du_inodes, du_s))
        log("daemon remembers %d inodes; %d open fds (RLIMIT_NOFILE %d; fd cache %s, "
            "pinned fds %s); RSS %d -> %d KiB: %.0f bytes per remembered inode"
            % (inodes, nfds, soft, st1.get("pt_fd_cache_size"), st1.get("pt_pinned_fds"),
               rss0, rss1, per_inode))
        ok = found == a.files and du_inodes == a.files + a.files // 1000 + 1 and nfds < soft
        log("RESULT %s" % ("ok" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        stop_efused(p)


if __name__ == "__main__":
    sys.exit(main())
