#!/usr/bin/python3
"""Metadata workload and tree builder for tools/bench.

  meta.py create|stat|unlink DIR N   one phase over N files in DIR; prints ops/s
  meta.py tree DIR N                 builds a tree of N files shaped like a source
                                     checkout or /usr (below); prints its entries
  meta.py fstat FILE SECONDS         fstat() of one open file in a loop; prints ops/s
                                     (with attribute lifetime 0: one GETATTR each)
"""
import math
import os
import random
import sys
import time


def names(d, n):
    return [os.path.join(d, "f%06d" % i) for i in range(n)]


def real_tree(top, n, seed=1):
    """A tree of n regular files shaped like a real one (a source checkout,
    /usr): many small directories (one per ~8 files, up to 8 deep, files per
    directory skewed: most hold a few, some hundreds), file sizes spread
    log-normally around 2 KiB (5% empty, at most 1 MiB), 3% of the entries
    symlinks to files elsewhere in it and 1% of the files hard-linked from a
    second directory. The same n and seed give the same tree. Returns the
    number of entries below top (what find prints, less top itself)."""
    rng = random.Random(seed)
    stems = ["core", "util", "main", "test", "io", "net", "fs", "mem", "log", "api", "impl", "proto",
             "config", "parse", "types", "sched", "event", "queue", "hash", "list", "map", "str"]
    exts = [".c", ".h", ".cc", ".py", ".txt", ".md", ".json", ".so", ".o", ".rs", ""]

    def name(i):
        return "%s_%s%d%s" % (rng.choice(stems), rng.choice(stems), i, rng.choice(exts))

    dirs = [(top, 0)]
    os.makedirs(top, exist_ok=True)
    for i in range(max(1, n // 8)):
        parent, depth = rng.choice([x for x in dirs[-64:] if x[1] < 8] or dirs[:1])
        if rng.random() < 0.3:  # an older branch now and then: width as well as depth
            parent, depth = rng.choice(dirs)
            if depth >= 8:
                parent, depth = dirs[0]
        path = os.path.join(parent, "d%d_%s" % (i, rng.choice(stems)))
        os.mkdir(path)
        dirs.append((path, depth + 1))
    weights = [rng.lognormvariate(0, 1.2) for _ in dirs]
    files = []
    for i, (where, _) in enumerate(zip(rng.choices(dirs, weights, k=n), range(n))):
        path = os.path.join(where[0], name(i))
        size = 0 if rng.random() < 0.05 else min(1 << 20, int(rng.lognormvariate(math.log(2048), 1.5)))
        with open(path, "wb") as f:
            f.write(b"%08d" % i * (size // 8) + b"x" * (size % 8))
        files.append(path)
    entries = len(dirs) - 1 + n
    for i in range(n // 33):  # symlinks, 3% of the entries
        target = rng.choice(files)
        at = os.path.join(rng.choice(dirs)[0], "link%d" % i)
        os.symlink(os.path.relpath(target, os.path.dirname(at)), at)
        entries += 1
    for i in range(n // 100):  # hard links
        os.link(rng.choice(files), os.path.join(rng.choice(dirs)[0], "hard%d" % i))
        entries += 1
    return entries


def main():
    mode, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "fstat":
        fd = os.open(d, os.O_RDONLY | os.O_CREAT, 0o644)
        ops, t0 = 0, time.perf_counter()
        end = t0 + n
        while True:
            for _ in range(1000):
                os.fstat(fd)
            ops += 1000
            if time.perf_counter() >= end:
                break
        dt = time.perf_counter() - t0
        os.close(fd)
        print("%.3f %d" % (ops / dt, ops))
        return
    if mode == "tree":
        print(real_tree(d, n))
        return
    files = names(d, n)
    if mode == "create":
        os.makedirs(d, exist_ok=True)
    t0 = time.perf_counter()
    if mode == "create":
        for p in files:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    elif mode == "stat":
        for p in files:
            os.stat(p)
    elif mode == "unlink":
        for p in files:
            os.unlink(p)
    else:
        sys.exit("meta.py: unknown mode " + mode)
    dt = time.perf_counter() - t0
    print("%.3f" % (n / dt))


if __name__ == "__main__":
    main()
