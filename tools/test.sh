#!/usr/bin/env bash
# Sets up, builds, and runs every efuse test: unit, mount (real /dev/fuse
# mounts: needs root), stress, and the bounded libFuzzer run.
# Usage: sudo tools/test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh --fuzz || exit 1

total=0; failed=0; status=0
run() {  # run LABEL-REGEX BUILD-DIR [ctest args...]
  local log; log=$(mktemp)
  ctest --test-dir "$2" --output-on-failure -L "$1" "${@:3}" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line; line=$(grep -E '[0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  if [ -z "$line" ]; then
    echo "test.sh: no tests ran for label '$1' in $2"; status=1
  else
    local f n; f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    n=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    total=$((total + n)); failed=$((failed + f))
  fi
  [ "$rc" -eq 0 ] || status=1
  rm -f "$log"
}
run unit build -j2
# Mount and stress tests mount real file systems; ctest keeps them serial.
run 'mount|stress' build
run fuzz build-fuzz
echo
echo "tests: $((total - failed)) passed, $failed failed"
exit $status
