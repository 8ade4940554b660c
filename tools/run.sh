#!/usr/bin/env bash
# Sets up, builds, and mounts efuse's in-memory file system (memfs) in the
# foreground. Usage: sudo tools/run.sh [MOUNTPOINT] [efused flags...]
# Default mount point: /mnt/efuse. Stop with Ctrl-C (or SIGTERM): it unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
MNT="${1:-/mnt/efuse}"
[ $# -gt 0 ] && shift
mkdir -p "$MNT"
cat <<MSG

efuse memfs is mounting at $MNT (in memory, 1 GiB by default).
  use it:   ls $MNT; echo hello > $MNT/hello; cat $MNT/hello
  status:   build/tools/efusectl/efusectl status
  stop:     Ctrl-C here, or: umount $MNT
  crashes:  a supervisor keeps the mount; a server killed hard is followed by a new one
            (build/tools/efusectl/efusectl restart $MNT upgrades it the same way)

MSG
exec build/tools/efused/efused --fs=memfs -o allow_other,default_permissions "$@" "$MNT"
