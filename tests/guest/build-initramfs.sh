#!/usr/bin/env bash
# Builds the test guest's initramfs (cpio, gzip) from busybox-static, the /init
# in initramfs/, its helper library and every workloads/*.sh (guest side).
# Prints the path of the image on stdout.
#
#   build-initramfs.sh [OUTPUT]    default: $DAXFSD_CACHE/guest/initramfs.cpio.gz
#                                  (DAXFSD_CACHE defaults to <repo>/.cache)
# Needs busybox-static and cpio (setup.sh installs them). No root needed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-${DAXFSD_CACHE:-$repo/.cache}/guest/initramfs.cpio.gz}
busybox=${DAXFSD_BUSYBOX:-/bin/busybox}

die() { echo "build-initramfs: $*" >&2; exit 1; }
[ -x "$busybox" ] || die "$busybox missing (run tests/guest/setup.sh)"
# A dynamically linked busybox would not run in the initramfs.
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is not statically linked (install busybox-static)"
fi
command -v cpio >/dev/null || die "cpio missing (run tests/guest/setup.sh)"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,lib,workloads}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$here/initramfs/init" "$root/init"
install -m 0644 "$here/initramfs/lib.sh" "$root/lib/daxfsd.sh"
n=0
for w in "$here"/workloads/*.sh; do
  case $w in *.host.sh) continue ;; esac
  install -m 0644 "$w" "$root/workloads/"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || die "no guest workloads in $here/workloads"
# Static helpers (C, built with the host's gcc and static libc).
command -v gcc >/dev/null || die "gcc missing (apt-get install gcc libc6-dev)"
for c in "$here"/helpers/*.c; do
  gcc -static -O2 -Wall -Werror -o "$root/bin/$(basename "$c" .c)" "$c" ||
    die "building helper $c"
done

mkdir -p "$(dirname "$out")"
# Fixed owner and timestamps, sorted names: the same inputs give the same image.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -9 >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
