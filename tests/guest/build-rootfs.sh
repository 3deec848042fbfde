#!/usr/bin/env bash
# Builds (once) the Debian bookworm root filesystem the real-program DAX test
# boots as its `/` over virtio-fs: debootstrap minbase plus gcc, make, git,
# python3 and fio, from the Debian mirror this machine's apt is configured with
# (tests/tools/debian-mirror.sh). Prints the cached tree's path on stdout.
#
#   build-rootfs.sh            build if absent or stale, print the path
#   build-rootfs.sh --force    rebuild
#
# The tree lands in $DAXFSD_CACHE/rootfs/bookworm (DAXFSD_CACHE defaults to
# <repo>/.cache) with a stamp of the package list; tests copy it, never use it
# in place. About 2 minutes and 450 MB. Needs root (debootstrap, apt-get).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
root=${DAXFSD_CACHE:-$repo/.cache}/rootfs
tree=$root/bookworm
packages=gcc,libc6-dev,make,git,python3,fio,ca-certificates
recipe="bookworm minbase $packages v1"
log() { echo "build-rootfs: $*" >&2; }
die() { log "$*"; exit 1; }

force=0
case ${1:-} in --force) force=1 ;; "") ;; *) die "usage: build-rootfs.sh [--force]" ;; esac

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if [ $force -eq 0 ] && [ -x "$tree/usr/bin/gcc" ] && [ "$(cat "$root/stamp" 2>/dev/null)" = "$recipe" ]; then
  echo "$tree"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap)"
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive install_step "apt-get install debootstrap" \
      apt-get -o DPkg::Lock::Timeout=600 -q install -y --no-install-recommends debootstrap >&2
  }
  apt_install ||
    { install_step "apt-get update" apt-get -o DPkg::Lock::Timeout=600 -q update >&2 && apt_install; } ||
    die "cannot install debootstrap"
fi
mirror=$("$repo/tests/tools/debian-mirror.sh")
start=$SECONDS
rm -rf "$tree" "$tree.tmp"
log "debootstrap bookworm (minbase + $packages) from $mirror"
install_step "debootstrap of bookworm" \
  debootstrap --variant=minbase --include="$packages" bookworm "$tree.tmp" "$mirror" \
  >"$root/debootstrap.log" 2>&1 || { tail -n 20 "$root/debootstrap.log" >&2; die "debootstrap failed (log: $root/debootstrap.log)"; }
# The guest boots without an initramfs, straight into the test's init: no
# apt caches needed inside.
rm -rf "$tree.tmp"/var/cache/apt/archives/*.deb "$tree.tmp"/var/lib/apt/lists/*
mv "$tree.tmp" "$tree"
echo "$recipe" >"$root/stamp"
log "built in $((SECONDS - start)) s: $tree ($(du -sh "$tree" | cut -f1))"
echo "$tree"
