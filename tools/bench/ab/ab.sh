#!/usr/bin/env bash
# Two efused binaries side by side on one passthrough workload: each round
# mounts the old and then the new binary on a fresh source (same ext4
# directory) and runs open(O_RDWR)+close, open(O_RDONLY)+close, stat and
# create+unlink loops; prints each round and the medians with new/old ratios.
# For changes on the metadata path (where fio says nothing).
# Usage: sudo tools/bench/ab/ab.sh OLD_EFUSED NEW_EFUSED [ROUNDS] [efused flags...]
#   e.g. git worktree add /tmp/old HEAD~3 && cmake -S /tmp/old -B /tmp/old/build -G Ninja &&
#        ninja -C /tmp/old/build efused && sudo tools/bench/ab/ab.sh /tmp/old/build/tools/efused/efused build/tools/efused/efused
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,11p "$0"; exit 2; }
OLD=$1; NEW=$2; ROUNDS=${3:-5}; shift $(( $# >= 3 ? 3 : 2 ))
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=/var/tmp/efuse-ab; MNT=$WORK/mnt; mkdir -p "$MNT"
LOOPS=$WORK/open_loops; gcc -O2 -o "$LOOPS" "$HERE/open_loops.c"
RESULTS=$WORK/results.txt; : > "$RESULTS"
WORKLOADS="open_rdwr:20000 open_rdonly:20000 stat:300000 create_unlink:5000"
for round in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    src=$WORK/src-$which; rm -rf "$src"; mkdir -p "$src"; head -c 65536 /dev/zero > "$src/file"
    "$bin" --fs=passthrough --source="$src" "$@" "$MNT" > "$WORK/efused-$which.log" 2>&1 &
    for _ in $(seq 200); do mountpoint -q "$MNT" && break; sleep 0.05; done
    mountpoint -q "$MNT" || { echo "ab.sh: $which did not mount (see $WORK/efused-$which.log)"; exit 1; }
    line="$round $which"
    for w in $WORKLOADS; do line="$line ${w%%:*}=$("$LOOPS" "$MNT" "${w%%:*}" "${w##*:}")"; done
    echo "$line" | tee -a "$RESULTS"
    umount "$MNT"; wait
    rm -rf "$src"
  done
done
python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    fields = line.split()
    for kv in fields[2:]:
        k, v = kv.split("=")
        runs[(fields[1], k)].append(int(v))
print(f"{'ops/s (median)':<16}{'old':>10}{'new':>10}{'new/old':>9}")
for k in ["open_rdwr", "open_rdonly", "stat", "create_unlink"]:
    o, n = statistics.median(runs[("old", k)]), statistics.median(runs[("new", k)])
    print(f"{k:<16}{o:>10.0f}{n:>10.0f}{n / o:>9.2f}")
PY
