# tools/lib.sh — shell pieces shared by setup.sh and bench/run.sh (sourced).

# ensure_packages WHO PACKAGE...: apt-get installs the Debian packages that
# are missing (sudo when not root); WHO prefixes the one line it prints.
ensure_packages() {
  local who=$1; shift
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "$who: installing ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}

# enable_fuse_ring WHO: turns the kernel's FUSE-over-io_uring switch on (off
# by default; efused's best transport needs it) when we may.
enable_fuse_ring() {
  local ring=/sys/module/fuse/parameters/enable_uring
  if [ -w "$ring" ] && [ "$(cat "$ring")" != "Y" ]; then
    echo Y > "$ring" && echo "$1: turned FUSE-over-io_uring on ($ring)"
  fi
  return 0
}

# allow_fuse_for_users WHO: /dev/fuse mode 0666, as systemd-udev's rule
# (KERNEL=="fuse", MODE="0666") makes it on a Debian system.
allow_fuse_for_users() {
  if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ] && [ -w /dev/fuse ]; then
    chmod 0666 /dev/fuse && echo "$1: /dev/fuse is now 0666 (as Debian's udev rule makes it)"
  fi
  return 0
}
