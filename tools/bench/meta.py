#!/usr/bin/python3
"""Metadata workload and tree builder for tools/bench.

  meta.py create|stat|unlink DIR N   one phase over N files in DIR; prints ops/s
  meta.py tree DIR N                 builds a tree of N files (1000 per directory)
  meta.py fstat FILE SECONDS         fstat() of one open file in a loop; prints ops/s
                                     (with attribute lifetime 0: one GETATTR each)
"""
import os
import sys
import time


def names(d, n):
    return [os.path.join(d, "f%06d" % i) for i in range(n)]


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
        per = 1000
        for i in range(n):
            sub = os.path.join(d, "d%03d" % (i // per))
            if i % per == 0:
                os.makedirs(sub, exist_ok=True)
            fd = os.open(os.path.join(sub, "f%06d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, b"x" * (i % 64))
            os.close(fd)
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
