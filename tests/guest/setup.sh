#!/usr/bin/env bash
# Installs what the real-guest test needs on a Debian bookworm host (as root):
#   - qemu-system-x86 from bookworm-backports (QEMU 10.0.2: vhost-user-fs-pci,
#     memory-backend-memfd),
#   - busybox-static and cpio (the guest initramfs), python3 (host side of
#     the acl workload),
#   - vmlinuz of the newest bookworm-backports linux-image-6.12.*-amd64-unsigned,
#     extracted into the cache dir (virtiofs, FUSE and FUSE_DAX are built in).
# Idempotent: when everything is already there it touches neither apt nor the
# network. Prints the path of the cached vmlinuz on stdout; progress on stderr.
#
# Env:
#   DAXFSD_CACHE        cache root (default <repo>/.cache); the kernel lands in
#                       $DAXFSD_CACHE/guest/
#   DAXFSD_GUEST_KERNEL use this vmlinuz instead of downloading one
#   DAXFSD_QEMU         a QEMU binary of your own: skips installing qemu-system-x86
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
cache=${DAXFSD_CACHE:-$repo/.cache}/guest
suite=bookworm-backports
log() { echo "setup: $*" >&2; }

have_pkg() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# QEMU from backports: anything older than 10 counts as missing.
qemu_ok() {
  if [ -n "${DAXFSD_QEMU:-}" ]; then
    command -v "$DAXFSD_QEMU" >/dev/null || { log "DAXFSD_QEMU=$DAXFSD_QEMU is not executable"; exit 1; }
    return 0
  fi
  have_pkg qemu-system-x86 || return 1
  local v
  v=$(dpkg-query -W -f='${Version}' qemu-system-x86)
  dpkg --compare-versions "$v" ge "1:10.0"
}

kernel_ok() {
  if [ -n "${DAXFSD_GUEST_KERNEL:-}" ]; then
    [ -r "$DAXFSD_GUEST_KERNEL" ] || { log "DAXFSD_GUEST_KERNEL=$DAXFSD_GUEST_KERNEL is not readable"; exit 1; }
    return 0
  fi
  [ -s "$cache/vmlinuz" ]
}

kernel_path() {
  if [ -n "${DAXFSD_GUEST_KERNEL:-}" ]; then echo "$DAXFSD_GUEST_KERNEL"; else echo "$cache/vmlinuz"; fi
}

missing=()
qemu_ok || missing+=(qemu)
have_pkg busybox-static || missing+=(busybox-static)
have_pkg cpio || missing+=(cpio)
kernel_ok || missing+=(kernel)
if [ ${#missing[@]} -eq 0 ]; then
  log "everything present ($(kernel_path))"
  kernel_path
  exit 0
fi
log "missing: ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root to install ${missing[*]}"
  exit 1
fi

# apt is shared with whatever else runs on the machine: wait for its locks.
apt_opts=(-o DPkg::Lock::Timeout=600 -q)
apt_update() {
  local i
  for i in 1 2 3 4 5 6; do
    if install_step "apt-get update" apt-get "${apt_opts[@]}" update >&2; then return 0; fi
    log "apt-get update failed (try $i), retrying"
    sleep 10
  done
  install_step "apt-get update" apt-get "${apt_opts[@]}" update >&2
}

# The backports source, deb822 style beside Debian's own debian.sources, only
# when no configured source names the suite yet.
if ! grep -rqs --include='*.list' --include='*.sources' --include=sources.list \
    -E "^[^#]*\b$suite\b" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding $suite apt source"
  cat >/etc/apt/sources.list.d/$suite.sources <<SRC
Types: deb
URIs: $("$repo/tests/tools/debian-mirror.sh")
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt_update

pkgs=()
have_pkg busybox-static || pkgs+=(busybox-static)
have_pkg cpio || pkgs+=(cpio)
# The acl workload's host side writes default ACLs with python3.
have_pkg python3 || pkgs+=(python3)
if [ ${#pkgs[@]} -gt 0 ]; then
  log "installing ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive install_step "apt-get install ${pkgs[*]}" \
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${pkgs[@]}" >&2
fi
if ! qemu_ok; then
  log "installing qemu-system-x86 from $suite"
  DEBIAN_FRONTEND=noninteractive install_step "apt-get install qemu-system-x86" \
    apt-get "${apt_opts[@]}" install -y --no-install-recommends -t "$suite" qemu-system-x86 >&2
  qemu_ok || { log "qemu-system-x86 >= 10 did not install"; exit 1; }
fi

if ! kernel_ok; then
  # Newest linux-image-6.12.N+debXX-amd64-unsigned that has an installable candidate.
  pkg=
  while read -r name; do
    policy=$(apt-cache policy "$name")
    if [[ $policy == *"Candidate: "[0-9]* ]]; then pkg=$name; break; fi
  done < <(apt-cache pkgnames linux-image-6.12. \
             | grep -E '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$' | sort -rV)
  [ -n "$pkg" ] || { log "no linux-image-6.12.*-amd64-unsigned in $suite"; exit 1; }
  log "downloading $pkg"
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.dl.XXXXXX")
  chown _apt "$work" 2>/dev/null || true  # apt-get download runs as _apt
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && install_step "apt-get download $pkg" apt-get "${apt_opts[@]}" download -t "$suite" "$pkg" >&2)
  deb=$(find "$work" -maxdepth 1 -name '*.deb' | head -n1)
  [ -n "$deb" ] || { log "apt-get download produced no .deb"; exit 1; }
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
  img=$(find "$work/boot" -name 'vmlinuz-*' | head -n1)
  [ -s "$img" ] || { log "no vmlinuz in $deb"; exit 1; }
  mv "$img" "$cache/vmlinuz.tmp"
  echo "$pkg $(dpkg-deb -f "$deb" Version)" >"$cache/vmlinuz.version"
  mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
  log "kernel: $(cat "$cache/vmlinuz.version")"
fi
kernel_path
