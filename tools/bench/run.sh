#!/usr/bin/env bash
# Benchmark runner: native ext4, efuse passthrough (auto, off, no xattrs), efuse memfs,
# libfuse passthrough_ll, passthrough_hp (LIBFUSE_SRC, LIBURING_SRC) and bindfs,
# side by side on one ext4 directory.
# Usage: sudo tools/bench/run.sh [--quick] [--suite=fs,transports,micro,offload,memfs] [--workloads=fio,meta,tree] [--targets=a,b]
#                               [--runtime=S] [--repeats=N] [--data=image|dir]
# Output: a table on stdout, build/bench/results.json, build/bench/results.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (sudo)" >&2; exit 1; }

. tools/lib.sh
ensure_packages bench fio fuse3 libfuse3-dev bindfs dbench python3-matplotlib pkg-config \
  cmake ninja-build g++ libbenchmark-dev bpftool

# Always bring build/ up to date: the figures must be those of this tree.
echo "bench: building efused and micro_bench"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j2 efused $(ninja -C build -t targets all 2>/dev/null | grep -q '^micro_bench:' && echo micro_bench)
# The transport suite needs the FUSE io_uring queues.
enable_fuse_ring bench

# The libfuse peer, compiled at run time from Debian's example source (never
# copied into the repository).
mkdir -p build/bench
SRC=/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c
if [ ! -x build/bench/passthrough_ll ] || [ "$SRC" -nt build/bench/passthrough_ll ]; then
  echo "bench: compiling passthrough_ll"
  gcc -O2 -Wall -o build/bench/passthrough_ll "$SRC" $(pkg-config fuse3 --cflags --libs)
fi

# libfuse master's peers (memfs_ll, passthrough_hp; Debian's libfuse 3.14
# has neither): given a libfuse source tree (LIBFUSE_SRC=DIR, e.g. a clone
# of github.com/libfuse/libfuse), built with meson into build/bench/libfuse,
# never into the repository. Its io_uring wants liburing >= 2.9 (Debian 12
# has 2.3): LIBURING_SRC=DIR (a clone of github.com/axboe/liburing) is built
# into build/bench/liburing first. Without them the suites run without
# these peers.
if [ -n "${LIBFUSE_SRC:-}" ]; then
  ensure_packages bench meson
  if [ -n "${LIBURING_SRC:-}" ] && [ ! -f build/bench/liburing/lib/pkgconfig/liburing.pc ]; then
    echo "bench: building liburing from $LIBURING_SRC"
    rm -rf build/bench/liburing-src
    cp -a "$LIBURING_SRC" build/bench/liburing-src  # its build writes into its tree
    (cd build/bench/liburing-src && ./configure --prefix="$PWD/../liburing" >/dev/null &&
      make -j2 -C src >/dev/null && make install >/dev/null)
  fi
  if [ -f build/bench/liburing/lib/pkgconfig/liburing.pc ]; then
    export PKG_CONFIG_PATH="$PWD/build/bench/liburing/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    # (found through the peers' rpath: efused keeps Debian's liburing)
    export LDFLAGS="-Wl,-rpath,$PWD/build/bench/liburing/lib${LDFLAGS:+ $LDFLAGS}"
  fi
  # Configured anew when the liburing it would find changed.
  uring_version=$(pkg-config --modversion liburing 2>/dev/null || echo none)
  if [ "$(cat build/bench/libfuse.liburing 2>/dev/null)" != "$uring_version" ]; then
    rm -rf build/bench/libfuse
  fi
  if [ ! -f build/bench/libfuse/build.ninja ]; then
    echo "bench: configuring libfuse from $LIBFUSE_SRC (liburing $uring_version)"
    meson setup build/bench/libfuse "$LIBFUSE_SRC" -Dexamples=true -Dutils=false -Dtests=false \
      -Denable-io-uring=true >/dev/null
    echo "$uring_version" > build/bench/libfuse.liburing
  fi
  grep -q "HAVE_URING" build/bench/libfuse/fuse_config.h build/bench/libfuse/libfuse_config.h 2>/dev/null ||
    echo "bench: libfuse was configured without io_uring (liburing too old?): its peers run without it" >&2
  ninja -C build/bench/libfuse -j2 example/memfs_ll example/passthrough_hp >/dev/null
fi

exec /usr/bin/python3 -B tools/bench/bench.py "$@"
