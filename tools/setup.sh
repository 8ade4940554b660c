#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test efuse, then
# builds it into build/ (and the clang fuzz build into build-fuzz/ with --fuzz).
# Usage: tools/setup.sh [--fuzz]      (root, or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

. tools/lib.sh
# prometheus: its promtool checks `efusectl metrics` in the tests; fuse3:
# fusermount3, for users' mounts; dpkg-dev: cpack's dependency list for the
# .deb (dpkg-shlibdeps); man-db: the man pages are checked; doxygen: the
# libefuse API reference is built (any warning fails its test).
ensure_packages setup cmake ninja-build g++ clang libclang-rt-14-dev pkg-config \
  libgtest-dev libgmock-dev libbenchmark-dev libabsl-dev \
  liburing-dev libbpf-dev bpftool attr prometheus fuse3 dpkg-dev man-db doxygen
# What Debian's udev rule does for /dev/fuse (no udev runs on our machines):
# anyone may open it, for user namespaces; fusermount3 checks the rest.
allow_fuse_for_users setup
# efused --transport=uring would also turn the FUSE ring on itself.
enable_fuse_ring setup

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build
if [ "${1:-}" = "--fuzz" ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DEFUSE_FUZZ=ON >/dev/null
  ninja -C build-fuzz request_fuzzer
fi
