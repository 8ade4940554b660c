#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test efuse, then
# builds it into build/ (and the clang fuzz build into build-fuzz/ with --fuzz).
# Usage: tools/setup.sh [--fuzz]      (root, or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(cmake ninja-build g++ clang libclang-rt-14-dev pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev libabsl-dev
  liburing-dev libbpf-dev bpftool attr)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# FUSE-over-io_uring is built into our kernels but off by default; efused's
# best transport needs it (efused --transport=uring would also turn it on).
RING=/sys/module/fuse/parameters/enable_uring
if [ -w "$RING" ] && [ "$(cat "$RING")" != "Y" ]; then
  echo Y > "$RING" && echo "setup: turned FUSE-over-io_uring on ($RING)"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build
if [ "${1:-}" = "--fuzz" ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DEFUSE_FUZZ=ON >/dev/null
  ninja -C build-fuzz request_fuzzer
fi
