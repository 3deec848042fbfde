#!/usr/bin/env bash
# Upstream QEMU (11.1 or later) for the real-guest DAX tests, unpatched:
# Debian unstable's binary package qemu-system-x86, run inside a Debian sid
# chroot (it needs a newer glibc than bookworm's). Prints on stdout the path
# of a wrapper script that runs the chroot's qemu-system-x86_64 with the
# arguments it is given; progress goes to stderr.
#
#   upstream-qemu.sh            make the chroot if absent, print the wrapper
#   upstream-qemu.sh --force    make it again (e.g. to take a newer sid QEMU)
#
# The chroot is `debootstrap --variant=minbase --include=qemu-system-x86 sid`
# from the machine's own Debian mirror (tests/tools/debian-mirror.sh), made
# once and cached in $DAXFSD_CACHE/qemu-upstream/ (DAXFSD_CACHE defaults to
# <repo>/.cache) with a stamp recording the recipe and the package version.
# The script refuses (exit 1, no wrapper) when the chroot's qemu-system-x86 is
# older than 1:11.1, the first release with the vhost-user SHMEM protocol,
# or has no vhost-user-test-device-pci.
#
# The wrapper ($DAXFSD_CACHE/qemu-upstream/qemu-system-x86_64, run as root):
# in a private mount namespace (unshare -m; nothing leaks to the host) it
# bind-mounts /proc, /dev, /sys and /tmp, the cache root (kernel, initramfs)
# and the directory of every absolute path in the arguments that does not
# exist inside the chroot (DAXFSD_UPSTREAM_QEMU_BIND adds more, ':'-separated)
# at the same paths, then execs `chroot DIR /usr/bin/qemu-system-x86_64 ARGS`.
# Every step execs, so the wrapper's pid is QEMU's: signals sent to it (kill,
# timeout) reach QEMU. Firmware comes from the chroot's own /usr/share/seabios
# and /usr/share/qemu (`-L /usr/share/seabios -L /usr/share/qemu` names
# those). No window for vhost-user-fs-pci upstream; the window comes through
#   -device vhost-user-test-device-pci,chardev=C,virtio-id=26,num_vqs=2,config_size=40,vq_size=1024
# (see /work/shared/notes and tests/guest/run-dax-upstream.sh).
#
# Needs root (debootstrap, mount, chroot); installs debootstrap if missing.
# First use: about 90 s here; the chroot takes ~290 MB (the downloaded .debs
# and package lists are deleted). Cached runs take about a second.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
cache_root=${DAXFSD_CACHE:-$repo/.cache}
mkdir -p "$cache_root"
cache_root=$(cd "$cache_root" && pwd -P)
top=$cache_root/qemu-upstream
chroot_dir=$top/sid
wrapper=$top/qemu-system-x86_64
suite=sid
package=qemu-system-x86
min_version=1:11.1
force=0

log() { echo "upstream-qemu: $*" >&2; }
die() { log "$*"; exit 1; }

case ${1:-} in
  --force) force=1 ;;
  "") ;;
  *) die "usage: upstream-qemu.sh [--force]" ;;
esac
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and the wrapper's mount/chroot)"

debootstrap_args=(--variant=minbase "--include=$package" "$suite")
recipe=$(printf '%s\n' "${debootstrap_args[@]}" | sha256sum | cut -d' ' -f1)

mkdir -p "$top"
exec 9>"$top/.lock"
flock 9

chroot_version() {
  chroot "$chroot_dir" dpkg-query -W -f='${Version}' "$package" 2>/dev/null
}

if [ $force -eq 1 ] || [ ! -x "$chroot_dir/usr/bin/qemu-system-x86_64" ] ||
  [ "$(sed -n 1p "$top/stamp" 2>/dev/null)" != "$recipe" ]; then
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    install_step "apt-get update" apt-get -o DPkg::Lock::Timeout=600 -q update >&2
    DEBIAN_FRONTEND=noninteractive install_step "apt-get install debootstrap" \
      apt-get -o DPkg::Lock::Timeout=600 -q install -y --no-install-recommends debootstrap >&2
  fi
  mirror=$("$repo/tests/tools/debian-mirror.sh")
  rm -f "$top/stamp" "$wrapper"
  rm -rf "$chroot_dir" "$chroot_dir.tmp"
  log "debootstrap ${debootstrap_args[*]} from $mirror (log: $top/debootstrap.log)"
  start=$(date +%s)
  if ! install_step "debootstrap of the sid chroot" debootstrap "${debootstrap_args[@]}" \
    "$chroot_dir.tmp" "$mirror" >"$top/debootstrap.log" 2>&1; then
    tail -n 20 "$top/debootstrap.log" >&2
    tail -n 20 "$chroot_dir.tmp/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    die "debootstrap failed (logs: $top/debootstrap.log, $chroot_dir.tmp/debootstrap/debootstrap.log)"
  fi
  # No package cache or lists needed at run time.
  rm -rf "$chroot_dir.tmp"/var/cache/apt/archives/*.deb "$chroot_dir.tmp"/var/lib/apt/lists/*_Packages
  mv "$chroot_dir.tmp" "$chroot_dir"
  secs=$(($(date +%s) - start))
  size=$(du -sh "$chroot_dir" | cut -f1)
  printf '%s\n%s\n' "$recipe" "$(chroot_version)" >"$top/stamp"
  log "chroot made in ${secs} s, $size: $chroot_dir"
fi

version=$(chroot_version) || die "no $package in $chroot_dir (remove it or use --force)"
if ! dpkg --compare-versions "$version" ge "$min_version"; then
  rm -f "$wrapper"
  die "$package $version in $chroot_dir is older than $min_version: no vhost-user SHMEM" \
    "protocol (QEMU 11.1 is the first release with it). Is the mirror's sid current? --force remakes the chroot."
fi

# The wrapper. Regenerated on every call (cheap), atomically.
cat >"$wrapper.tmp" <<'WRAPPER'
#!/usr/bin/env bash
# Generated by tests/qemu/upstream-qemu.sh: runs the Debian sid chroot's
# /usr/bin/qemu-system-x86_64 with these arguments, in a private mount
# namespace, as this same pid (every step execs).
set -euo pipefail
WRAPPER
cat >>"$wrapper.tmp" <<VARS
chroot_dir=$(printf '%q' "$chroot_dir")
cache_root=$(printf '%q' "$cache_root")
VARS
cat >>"$wrapper.tmp" <<'WRAPPER'
die() { echo "qemu-upstream wrapper: $*" >&2; exit 1; }
if [ "${1:-}" != --daxfsd-in-namespace ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root (unshare -m, mount, chroot)"
  [ -x "$chroot_dir/usr/bin/qemu-system-x86_64" ] || die "no chroot at $chroot_dir (run tests/qemu/upstream-qemu.sh)"
  exec unshare --mount --propagation private -- bash "$0" --daxfsd-in-namespace "$@"
fi
shift

bound=()
bind() { # bind DIR [--rbind]: the host's DIR at the same path inside the chroot.
  local d=$1 how=${2:---bind} b
  for b in "${bound[@]}"; do
    case $d/ in "$b"/*) return 0 ;; esac
  done
  mkdir -p "$chroot_dir$d"
  mount "$how" "$d" "$chroot_dir$d"
  bound+=("$d")
}
for d in /proc /dev /sys; do bind "$d" --rbind; done
bind /tmp
bind "$cache_root"
IFS=: read -r -a extra <<<"${DAXFSD_UPSTREAM_QEMU_BIND:-}"
for d in "${extra[@]}"; do [ -n "$d" ] && bind "$(cd "$d" && pwd -P)"; done
# Host paths in the arguments (-kernel /x, path=/y, file=/z, ...) that the
# chroot does not have: bind their directory. Paths the chroot has (its
# firmware under /usr/share) stay the chroot's.
for a in "$@"; do
  IFS=',' read -r -a parts <<<"$a"
  for p in "${parts[@]}"; do
    p=${p#*=}
    case $p in /*) ;; *) continue ;; esac
    [ -e "$chroot_dir$p" ] && continue
    if [ -d "$p" ]; then
      bind "$(cd "$p" && pwd -P)"
    elif [ -e "$p" ] || [ -d "$(dirname "$p")" ]; then
      bind "$(cd "$(dirname "$p")" && pwd -P)"
    fi
  done
done
exec chroot "$chroot_dir" /usr/bin/qemu-system-x86_64 "$@"
WRAPPER
chmod 0755 "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"

# What the wrapper runs: the version, and the generic device the window needs.
qv=$("$wrapper" --version 2>&1 | head -n 1) || die "the wrapper cannot run QEMU: $qv"
"$wrapper" -device vhost-user-test-device-pci,help 2>/dev/null | grep -q 'virtio-id' ||
  die "$qv has no vhost-user-test-device-pci (virtio-id property)"
log "$package $version: $qv"
echo "$wrapper"
