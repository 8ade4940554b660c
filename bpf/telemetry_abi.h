/* bpf/telemetry_abi.h — the layout of every map efuse's BPF programs share
 * with the daemon and efusectl.
 *
 * Owns: map names, key and value layouts, the opcode classes of the hot-inode
 * table, the latency histogram's buckets. Included by bpf/telemetry.bpf.c
 * (clang -target bpf) and by C++ (bpf/, core/, tools/), so it is plain C with
 * fixed-width types and no padding holes. Change a layout here and both sides
 * follow; the pinned maps of a running daemon keep the layout it was built
 * with (efusectl checks value sizes against this header).
 */
#ifndef EFUSE_BPF_TELEMETRY_ABI_H_
#define EFUSE_BPF_TELEMETRY_ABI_H_

#ifdef __bpf__
/* The BPF side gets __u32 & co. from <linux/types.h>. */
#else
#include <linux/types.h>
#endif

/* Pinned under EFUSE_BPF_PIN_ROOT "/<connection id>/<map name>", the
 * connection id being the minor of the mount's device (as in
 * /sys/fs/fuse/connections and /run/efuse/<id>.status). */
#define EFUSE_BPF_PIN_ROOT "/sys/fs/bpf/efuse"

/* Per-opcode statistics: one slot per FUSE opcode below this bound; slot 0
 * (no opcode has number 0) collects the few larger ones (CUSE_INIT). */
#define EFUSE_OPCODE_SLOTS 64

/* Latency histogram: bucket i counts latencies in [2^i, 2^(i+1)) ns, bucket 0
 * also takes 0 and 1 ns, the last one everything from 2^31 ns (2.1 s) up. */
#define EFUSE_LATENCY_BUCKETS 32

/* "stats": BPF_MAP_TYPE_PERCPU_ARRAY, key __u32 opcode slot. Each CPU's
 * copy has one writer (BPF programs run with preemption off), so the
 * programs add without atomics; readers sum over CPUs. */
struct efuse_op_stats {
  __u64 sent;            /* fuse_request_send seen */
  __u64 completed;       /* fuse_request_end seen: each request exactly once */
  __u64 errors;          /* completed with out.h.error != 0 */
  __u64 timed;           /* completed with a timed send (latency known; see time_every) */
  __u64 latency_sum_ns;  /* over the timed ones */
  __u64 latency_max_ns;
  __u64 latency_hist[EFUSE_LATENCY_BUCKETS];
};

/* "config": BPF_MAP_TYPE_ARRAY, one entry (key 0), written by the daemon
 * (and by `efusectl trace` for the sample rate). */
struct efuse_config {
  __u32 dev;           /* kernel dev_t of the mount (MKDEV: major << 20 | minor); 0 = count nothing */
  __u32 sample_every;  /* emit 1 event per this many completed requests into "events"; 0 = none */
  __u32 owner_pid;     /* the daemon that pinned the maps: tools tell stale pins by it */
  __u32 time_every;    /* time 1 of this many requests of an opcode (a power of 2; 0, 1: all) */
};
/* Each CPU times the first this many requests of every opcode whatever
 * time_every says, so rare opcodes always have latencies. */
#define EFUSE_TIME_FIRST 64

/* "inflight": BPF_MAP_TYPE_ARRAY of EFUSE_INFLIGHT_SLOTS send records, the
 * slot chosen by the request's unique (or, where the kernel assigns the
 * unique after the send tracepoint, its struct fuse_req address). An array
 * slot costs no hash update on the request path; two requests in flight in
 * one slot lose the first one's latency (counted as untimed). */
#define EFUSE_INFLIGHT_SLOTS 16384
struct efuse_inflight {
  __u64 req;      /* the request's unique (or address), 0 when free */
  __u64 sent_ns;  /* bpf_ktime_get_ns at fuse_request_send */
};

/* The opcode classes the hot-inode table counts: what the offload policy and
 * `efusectl top` look at, plus everything else together. */
enum efuse_hot_class {
  EFUSE_HOT_LOOKUP = 0,  /* LOOKUP (node id: the parent directory) */
  EFUSE_HOT_GETATTR,     /* GETATTR, STATX */
  EFUSE_HOT_SETATTR,     /* SETATTR */
  EFUSE_HOT_OPEN,        /* OPEN, OPENDIR */
  EFUSE_HOT_READ,        /* READ */
  EFUSE_HOT_WRITE,       /* WRITE */
  EFUSE_HOT_READDIR,     /* READDIR, READDIRPLUS */
  EFUSE_HOT_XATTR,       /* GETXATTR, LISTXATTR */
  EFUSE_HOT_CREATE,      /* CREATE, MKNOD, MKDIR, SYMLINK, LINK, TMPFILE (node id: the parent) */
  EFUSE_HOT_REMOVE,      /* UNLINK, RMDIR, RENAME, RENAME2 (node id: the parent) */
  EFUSE_HOT_CLOSE,       /* FLUSH, RELEASE, RELEASEDIR */
  EFUSE_HOT_OTHER,
  EFUSE_HOT_CLASSES
};

/* "hot_inodes": BPF_MAP_TYPE_LRU_HASH, key __u64 node id (the request
 * header's), value below. Updated at fuse_request_end with atomic adds (one
 * entry is shared by all CPUs). */
#define EFUSE_HOT_INODES_MAX 65536
struct efuse_hot_inode {
  __u32 counts[EFUSE_HOT_CLASSES];
  __u32 errors;
  __u64 first_seen_ns;  /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
  __u64 last_seen_ns;   /* of the last timed request of the mount, unless this one was timed */
};

/* "events": BPF_MAP_TYPE_RINGBUF of these, 1 per sample_every completions. */
#define EFUSE_EVENTS_BYTES (1u << 20)
struct efuse_event {
  __u64 time_ns;     /* completion, bpf_ktime_get_ns */
  __u64 unique;
  __u64 nodeid;
  __u64 latency_ns;  /* 0 when the send was not seen */
  __u32 opcode;
  __s32 error;       /* out.h.error: 0 or -errno */
  __u32 pid;         /* the requesting process (in.h.pid) */
  __u32 len;         /* request length (in.h.len) */
};

/* "misc": BPF_MAP_TYPE_PERCPU_ARRAY, key 0: what the programs could not do. */
struct efuse_misc {
  __u64 events_dropped;    /* ring buffer full: no reader keeps up */
  __u64 inflight_full;     /* a send overwrote another one's slot */
};
/* (Requests ended without a timed send: completed - timed in "stats".) */

#endif /* EFUSE_BPF_TELEMETRY_ABI_H_ */
