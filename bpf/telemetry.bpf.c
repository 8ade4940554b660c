// SPDX-License-Identifier: GPL-2.0 OR MIT
/* bpf/telemetry.bpf.c — kernel-side telemetry of one efuse mount's requests.
 *
 * Owns: the tp_btf programs on the FUSE tracepoints fuse_request_send and
 * fuse_request_end. For requests of the mount named in "config" (by its
 * super block's device; other FUSE mounts are ignored) they keep per-opcode
 * counters and log2 latency histograms (send to end: queueing plus the
 * daemon's service time), the hot-inode table, and a sampled ring buffer of
 * request events. Map layouts: bpf/telemetry_abi.h.
 *
 * Each request ends exactly once (fuse_request_end tests FR_FINISHED), so
 * counts are taken there; the send is only needed for latency.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "telemetry_abi.h"

/* The kernel types read, reduced to the fields used. CO-RE relocates each
 * access against the running kernel's BTF, so only the names must match. */
struct fuse_in_header {
  __u32 len;
  __u32 opcode;
  __u64 unique;
  __u64 nodeid;
  __u32 uid;
  __u32 gid;
  __u32 pid;
} __attribute__((preserve_access_index));

struct fuse_out_header {
  __u32 len;
  __s32 error;
  __u64 unique;
} __attribute__((preserve_access_index));

struct super_block {
  __u32 s_dev;
} __attribute__((preserve_access_index));

struct fuse_mount {
  struct super_block *sb;
} __attribute__((preserve_access_index));

struct fuse_req {
  struct {
    struct fuse_in_header h;
  } in;
  struct {
    struct fuse_out_header h;
  } out;
  struct fuse_mount *fm;
} __attribute__((preserve_access_index));

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct efuse_config);
} config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, EFUSE_OPCODE_SLOTS);
  __type(key, __u32);
  __type(value, struct efuse_op_stats);
} stats SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, EFUSE_INFLIGHT_SLOTS);
  __type(key, __u32);
  __type(value, struct efuse_inflight);
} inflight SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, EFUSE_HOT_INODES_MAX);
  __type(key, __u64);
  __type(value, struct efuse_hot_inode);
} hot_inodes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, EFUSE_EVENTS_BYTES);
} events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct efuse_misc);
} misc SEC(".maps");

/* The config if `req` belongs to the watched mount, else NULL. tp_btf
 * arguments are BTF pointers: plain loads (checked by the verifier,
 * fault-safe) instead of a probe-read helper call per field. */
static __always_inline struct efuse_config *watched(const struct fuse_req *req) {
  __u32 zero = 0;
  struct efuse_config *cfg = bpf_map_lookup_elem(&config, &zero);
  if (!cfg || cfg->dev == 0) return 0;
  if (req->fm->sb->s_dev != cfg->dev) return 0;
  return cfg;
}

/* The key of a request's send record. Its unique, where the kernel assigns
 * it before the send tracepoint (6.18 does): no helper call. Else its
 * address, read from the raw tracepoint arguments (the verifier allows no
 * arithmetic on a BTF pointer). */
static __always_inline __u64 req_address(unsigned long long *ctx) {
  __u64 addr = 0;
  bpf_probe_read_kernel(&addr, sizeof(addr), ctx);
  return addr;
}

static __always_inline __u32 inflight_slot(__u64 key) {
  /* Uniques step by 2; addresses are slab objects of a few hundred bytes. */
  return (__u32)((key >> 1) ^ (key >> 8) ^ (key >> 22)) % EFUSE_INFLIGHT_SLOTS;
}

static __always_inline __u32 opcode_slot(__u32 opcode) {
  return opcode < EFUSE_OPCODE_SLOTS ? opcode : 0;
}

/* Opcode numbers from the FUSE protocol (include/uapi/linux/fuse.h). */
static __always_inline __u32 hot_class(__u32 opcode) {
  switch (opcode) {
    case 1: return EFUSE_HOT_LOOKUP;
    case 3: case 52: return EFUSE_HOT_GETATTR;
    case 4: return EFUSE_HOT_SETATTR;
    case 14: case 27: return EFUSE_HOT_OPEN;
    case 15: return EFUSE_HOT_READ;
    case 16: return EFUSE_HOT_WRITE;
    case 28: case 44: return EFUSE_HOT_READDIR;
    case 22: case 23: return EFUSE_HOT_XATTR;
    case 6: case 8: case 9: case 13: case 35: case 51: return EFUSE_HOT_CREATE;
    case 10: case 11: case 12: case 45: return EFUSE_HOT_REMOVE;
    case 18: case 25: case 29: return EFUSE_HOT_CLOSE;
    default: return EFUSE_HOT_OTHER;
  }
}

static __always_inline __u32 log2_bucket(__u64 ns) {
  __u32 b = 0;
  /* Unrolled binary search: the verifier wants a bounded shape. */
  if (ns >> 32) { ns >>= 32; b += 32; }
  if (ns >> 16) { ns >>= 16; b += 16; }
  if (ns >> 8) { ns >>= 8; b += 8; }
  if (ns >> 4) { ns >>= 4; b += 4; }
  if (ns >> 2) { ns >>= 2; b += 2; }
  if (ns >> 1) { b += 1; }
  return b < EFUSE_LATENCY_BUCKETS ? b : EFUSE_LATENCY_BUCKETS - 1;
}

static __always_inline struct efuse_misc *misc_counters(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&misc, &zero);
}

/* Set once a send had no unique yet and was recorded by address: only
 * then does an end look there too (a probe-read per request otherwise). */
volatile __u32 keyed_by_address = 0;
/* The clock at the last timed request: what untimed ones use as "last
 * seen" (tracing programs may not read the coarse clock). */
volatile __u64 last_clock_ns = 0;

SEC("tp_btf/fuse_request_send")
int BPF_PROG(efuse_request_send, const struct fuse_req *req) {
  struct efuse_config *cfg = watched(req);
  if (!cfg) return 0;
  __u32 slot = opcode_slot(req->in.h.opcode);
  struct efuse_op_stats *s = bpf_map_lookup_elem(&stats, &slot);
  if (!s) return 0;
  const __u64 sent = ++s->sent;
  /* Latency of 1 in time_every requests of an opcode (per CPU), and of
   * each of its first ones: the clock read is most of this program's cost. */
  const __u32 every = cfg->time_every;
  if (every > 1 && sent > EFUSE_TIME_FIRST && (sent & (every - 1)) != 0) return 0;
  __u64 key = req->in.h.unique;
  if (key == 0) {
    key = req_address(ctx);
    keyed_by_address = 1;
  }
  __u32 i = inflight_slot(key);
  struct efuse_inflight *f = bpf_map_lookup_elem(&inflight, &i);
  if (f) {
    if (f->req != 0) {
      struct efuse_misc *m = misc_counters();
      if (m) m->inflight_full++;
    }
    f->req = key;
    f->sent_ns = bpf_ktime_get_ns();
  }
  return 0;
}

SEC("tp_btf/fuse_request_end")
int BPF_PROG(efuse_request_end, const struct fuse_req *req) {
  struct efuse_config *cfg = watched(req);
  if (!cfg) return 0;
  const __u32 opcode = req->in.h.opcode;
  const __s32 error = req->out.h.error;
  const __u64 nodeid = req->in.h.nodeid;

  __u64 now;
  __u64 latency = 0;
  int timed = 0;
  __u64 key = req->in.h.unique;
  __u32 i = inflight_slot(key);
  struct efuse_inflight *f = bpf_map_lookup_elem(&inflight, &i);
  if ((!f || f->req != key) && keyed_by_address) {
    key = req_address(ctx);
    i = inflight_slot(key);
    f = bpf_map_lookup_elem(&inflight, &i);
  }
  if (f && f->req == key) {
    now = bpf_ktime_get_ns();
    last_clock_ns = now;
    timed = 1;
    latency = now > f->sent_ns ? now - f->sent_ns : 0;
    f->req = 0;
  } else {
    /* Not timed: the hot-inode table needs no finer clock than this. */
    now = last_clock_ns;
  }

  __u32 slot = opcode_slot(opcode);
  struct efuse_op_stats *s = bpf_map_lookup_elem(&stats, &slot);
  if (s) {
    s->completed++;
    if (error != 0) s->errors++;
    if (timed) {
      s->timed++;
      s->latency_sum_ns += latency;
      if (latency > s->latency_max_ns) s->latency_max_ns = latency;
      __u32 b = log2_bucket(latency);
      if (b < EFUSE_LATENCY_BUCKETS) s->latency_hist[b]++;
    }
  }

  if (nodeid != 0) {
    const __u32 cls = hot_class(opcode);
    struct efuse_hot_inode *h = bpf_map_lookup_elem(&hot_inodes, &nodeid);
    if (!h) {
      struct efuse_hot_inode fresh = {};
      fresh.first_seen_ns = now;
      fresh.last_seen_ns = now;
      /* NOEXIST: another CPU may have just created it; then add to that. */
      bpf_map_update_elem(&hot_inodes, &nodeid, &fresh, BPF_NOEXIST);
      h = bpf_map_lookup_elem(&hot_inodes, &nodeid);
    }
    if (h) {
      if (cls < EFUSE_HOT_CLASSES) __sync_fetch_and_add(&h->counts[cls], 1);
      if (error != 0) __sync_fetch_and_add(&h->errors, 1);
      h->last_seen_ns = now;
    }
  }

  const __u32 every = cfg->sample_every;
  if (every != 0 && (every == 1 || bpf_get_prandom_u32() % every == 0)) {
    struct efuse_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
      struct efuse_misc *m = misc_counters();
      if (m) m->events_dropped++;
      return 0;
    }
    e->time_ns = timed ? now : bpf_ktime_get_ns();
    e->unique = req->in.h.unique;
    e->nodeid = nodeid;
    e->latency_ns = latency;
    e->opcode = opcode;
    e->error = error;
    e->pid = req->in.h.pid;
    e->len = req->in.h.len;
    bpf_ringbuf_submit(e, 0);
  }
  return 0;
}
