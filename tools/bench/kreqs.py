#!/usr/bin/python3
"""Requests the kernel sends one FUSE connection, per opcode, counted on the
kernel's fuse:fuse_request_send tracepoint (perf stat, counting mode): the
same count for every FUSE server, efuse or not, so round trips per
operation compare across servers.

  with kreqs.Counting(mountpoint) as c:
      ...workload...
  c.counts  # {"LOOKUP": n, ..., "total": n}
"""
import os
import signal
import subprocess
import tempfile
import time

# The opcodes a metadata or tree workload sends (include/uapi/linux/fuse.h).
OPCODES = {
    "LOOKUP": 1, "FORGET": 2, "GETATTR": 3, "SETATTR": 4, "READLINK": 5, "MKNOD": 8, "MKDIR": 9,
    "UNLINK": 10, "RMDIR": 11, "OPEN": 14, "READ": 15, "WRITE": 16, "RELEASE": 18, "GETXATTR": 22,
    "LISTXATTR": 23, "FLUSH": 25, "OPENDIR": 27, "READDIR": 28, "RELEASEDIR": 29, "ACCESS": 34,
    "CREATE": 35, "BATCH_FORGET": 42, "READDIRPLUS": 44, "STATX": 52,
}
EVENT = "fuse:fuse_request_send"


class Counting:
    def __init__(self, mnt):
        # The tracepoint's connection is the kernel's dev_t of the mount
        # (major 0 for FUSE: the minor alone).
        self.conn = os.minor(os.stat(mnt).st_dev)
        self.counts = None
        self.proc = None

    def __enter__(self):
        self.out = tempfile.NamedTemporaryFile(prefix="kreqs-", suffix=".csv", delete=False)
        self.out.close()
        cmd = ["perf", "stat", "-a", "-x", ",", "-o", self.out.name]
        cmd += ["-e", EVENT, "--filter", "connection == %d" % self.conn]
        for op in OPCODES.values():
            cmd += ["-e", EVENT, "--filter", "connection == %d && opcode == %d" % (self.conn, op)]
        self.proc = subprocess.Popen(cmd + ["--", "sleep", "infinity"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        # perf opens its counters before it starts the command: wait for
        # the command so nothing the workload sends is missed.
        self._wait_for_child()
        return self

    def _wait_for_child(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("perf stat failed: %s" % self.proc.stderr.read().decode().strip()[-300:])
            try:
                with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                    if f.read().strip():
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("perf stat did not start")

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=30)
        rows = []
        with open(self.out.name) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[2] == EVENT:
                    rows.append(int(fields[0]) if fields[0].isdigit() else 0)
        os.unlink(self.out.name)
        if len(rows) != 1 + len(OPCODES):
            raise RuntimeError("perf stat printed %d counts, not %d" % (len(rows), 1 + len(OPCODES)))
        self.counts = {"total": rows[0]}
        self.counts.update({name: n for name, n in zip(OPCODES, rows[1:]) if n})
        return False
