#!/usr/bin/env bash
# Builds the DAX-capable QEMU for the real-guest tests: Debian's QEMU 10.0.2
# source (bookworm-backports) with qemu-10.0.2-dax-window.patch applied, only
# the x86_64 system emulator, TCG + vhost-user. Prints the binary's path on
# stdout; progress goes to stderr.
#
#   build-qemu.sh            build if absent or stale, print the path
#   build-qemu.sh --force    rebuild even if the cached binary is current
#
# The binary lands in $DAXFSD_CACHE/qemu-dax/bin/qemu-system-x86_64
# (DAXFSD_CACHE defaults to <repo>/.cache). It is rebuilt only when it is
# absent or when the stamp beside it does not match the hash of the patch and
# of this recipe; the build tree is kept, so a changed patch rebuilds
# incrementally (the old patch is reversed, the new one applied). Also installs the firmware QEMU needs at run time (seabios,
# qemu-system-data); run the binary with
#   -L /usr/share/seabios -L /usr/share/qemu -nic none
#
# Env: DAXFSD_CACHE (cache root), DAXFSD_QEMU_JOBS (ninja -j, default 2).
# What the patch does and how to run a DAX guest: docs/qemu-dax.md.
# Needs root when packages are missing (apt-get); about 4 minutes of build on
# two cores.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
root=${DAXFSD_CACHE:-$repo/.cache}/qemu-dax
patch_file=$here/qemu-10.0.2-dax-window.patch
bin=$root/bin/qemu-system-x86_64
suite=bookworm-backports
upstream_version=10.0.2
orig=qemu_${upstream_version}+ds.orig.tar.xz
jobs=${DAXFSD_QEMU_JOBS:-2}
force=0

log() { echo "build-qemu: $*" >&2; }
die() { log "$*"; exit 1; }

case ${1:-} in
  --force) force=1 ;;
  "") ;;
  *) die "usage: build-qemu.sh [--force]" ;;
esac

configure_args=(
  --python=/usr/bin/python3
  --target-list=x86_64-softmmu
  --without-default-features
  --enable-vhost-user
  --enable-tcg
  --disable-docs
  --disable-rust
  --enable-pixman
  --enable-fdt=system
  --disable-install-blobs
)
build_deps=(build-essential ninja-build libglib2.0-dev libpixman-1-dev libfdt-dev
            flex bison pkg-config zlib1g-dev xz-utils patch python3-venv)
backports_build_deps=(meson python3-pycotap)
runtime_deps=(seabios)
backports_runtime_deps=(qemu-system-data)

[ -r "$patch_file" ] || die "missing $patch_file"
# The recipe is part of the hash: changing configure flags rebuilds too.
recipe_hash=$( { cat "$patch_file"; printf '%s\n' "$upstream_version" "${configure_args[@]}"; } |
  sha256sum | cut -d' ' -f1)

have_pkg() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

apt_opts=(-o DPkg::Lock::Timeout=600 -q)
apt_updated=0
apt_update() {
  local i
  for i in 1 2 3; do
    if install_step "apt-get update" apt-get "${apt_opts[@]}" update >&2; then apt_updated=1; return 0; fi
    log "apt-get update failed (try $i), retrying"
    sleep 10
  done
  die "apt-get update failed"
}

# deb (meson, pycotap, qemu-system-data) and deb-src (the QEMU source) lines
# for bookworm-backports, added only for the kinds no configured source has.
ensure_backports_sources() {
  local have types=()
  have=$(apt-get indextargets --format '$(TARGET_OF) $(CODENAME)' 2>/dev/null | sort -u)
  grep -qx "deb $suite" <<<"$have" || types+=(deb)
  grep -qx "deb-src $suite" <<<"$have" || types+=(deb-src)
  [ ${#types[@]} -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || die "need root to add the $suite apt source (${types[*]})"
  log "adding $suite apt source (${types[*]})"
  cat >"/etc/apt/sources.list.d/daxfsd-qemu-$suite.sources" <<SRC
Types: ${types[*]}
URIs: $("$repo/tests/tools/debian-mirror.sh")
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_update
}

# install_missing [-t SUITE] PKG...
install_missing() {
  local target=() need=() p
  if [ "$1" = -t ]; then target=(-t "$2"); shift 2; fi
  for p in "$@"; do have_pkg "$p" || need+=("$p"); done
  [ ${#need[@]} -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || die "missing packages ${need[*]} (run as root or install them)"
  [ $apt_updated -eq 1 ] || apt_update
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive install_step "apt-get install ${need[*]}" apt-get "${apt_opts[@]}" \
    install -y --no-install-recommends "${target[@]}" "${need[@]}" >&2
}

install_runtime() {
  local p missing=0
  for p in "${runtime_deps[@]}" "${backports_runtime_deps[@]}"; do
    have_pkg "$p" || missing=1
  done
  [ $missing -eq 1 ] || return 0
  ensure_backports_sources
  install_missing "${runtime_deps[@]}"
  install_missing -t "$suite" "${backports_runtime_deps[@]}"
}

# One build at a time per cache dir (CI and a developer may start together).
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9

if [ $force -eq 0 ] && [ -x "$bin" ] && [ "$(cat "$root/stamp" 2>/dev/null)" = "$recipe_hash" ]; then
  install_runtime
  log "up to date ($bin)"
  echo "$bin"
  exit 0
fi

start=$(date +%s)
ensure_backports_sources
install_missing "${build_deps[@]}"
install_missing -t "$suite" "${backports_build_deps[@]}"
install_runtime

work=$root/work
src=$work/qemu-$upstream_version
applied=$root/applied.patch
tree_recipe=$( { printf '%s\n' "$upstream_version" "${configure_args[@]}"; } | sha256sum | cut -d' ' -f1)

# An earlier build's tree is kept: when only the patch changed, take the old
# patch back out, put the new one in and let ninja rebuild what changed
# (about a minute instead of a full build).
incremental=0
if [ $force -eq 0 ] && [ -f "$src/build/build.ninja" ] && [ -s "$applied" ] &&
  [ "$(cat "$root/tree-stamp" 2>/dev/null)" = "$tree_recipe" ]; then
  if patch -d "$src" -p1 -R --batch --quiet --dry-run <"$applied" >/dev/null 2>&1 &&
    patch -d "$src" -p1 -R --batch --quiet <"$applied" >&2; then
    if patch -d "$src" -p1 --batch --forward --quiet <"$patch_file" >&2; then
      incremental=1
      log "patch changed: rebuilding incrementally"
    else
      log "the new patch does not apply to the kept tree; full rebuild"
    fi
  else
    log "the kept tree does not match the last patch; full rebuild"
  fi
fi

if [ $incremental -eq 0 ]; then
  # The source: only the upstream (orig) tarball is needed. Debian's own
  # patches are not applied. apt-get source fetches the .dsc and the Debian
  # tarball too; when those are gone from the mirror it still leaves a
  # hash-checked orig tarball behind, which is all we use.
  dl=$root/dl
  mkdir -p "$dl"
  if [ ! -s "$dl/$orig" ]; then
    log "downloading the qemu source from $suite"
    chown _apt "$dl" 2>/dev/null || true # apt-get source downloads as _apt
    (cd "$dl" && install_step "apt-get source qemu/$suite" \
      apt-get "${apt_opts[@]}" source --download-only "qemu/$suite" >&2) ||
      log "apt-get source reported errors; using the orig tarball if it arrived"
    [ -s "$dl/$orig" ] || die "no $orig from $suite (is QEMU $upstream_version still there?)"
  fi

  rm -rf "$work" "$applied" "$root/tree-stamp"
  mkdir -p "$work"
  log "unpacking $orig"
  tar -xf "$dl/$orig" -C "$work"
  [ -d "$src" ] || die "$orig did not unpack to qemu-$upstream_version"

  # The +ds tarball ships no edk2 firmware: do not unpack it even if bzip2 is there.
  sed -i 's/^if unpack_edk2_blobs$/if false  # daxfsd: no edk2 blobs in the +ds tarball/' \
    "$src/pc-bios/meson.build"
  grep -q '^if false  # daxfsd' "$src/pc-bios/meson.build" ||
    die "pc-bios/meson.build changed: cannot disable the edk2 blobs"

  log "applying $(basename "$patch_file")"
  patch -d "$src" -p1 --batch --forward --quiet <"$patch_file" >&2 ||
    die "the patch does not apply to QEMU $upstream_version"

  log "configuring"
  mkdir -p "$src/build"
  (cd "$src/build" && ../configure "${configure_args[@]}" >"$root/configure.log" 2>&1) ||
    { tail -n 30 "$root/configure.log" >&2; die "configure failed (log: $root/configure.log)"; }
fi
cp "$patch_file" "$applied"
echo "$tree_recipe" >"$root/tree-stamp"

log "building with ninja -j$jobs"
if ! (cd "$src/build" && install_step "building QEMU" nice ninja -j"$jobs" qemu-system-x86_64 \
  >"$root/build.log" 2>&1); then
  grep -E 'error|Error' "$root/build.log" | head -n 30 >&2 || true
  die "build failed (log: $root/build.log)"
fi

mkdir -p "$root/bin"
install -m 0755 "$src/build/qemu-system-x86_64" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$recipe_hash" >"$root/stamp"
"$bin" -device vhost-user-fs-pci,help 2>/dev/null | grep -q 'cache-size=' ||
  die "built binary has no cache-size property on vhost-user-fs-pci"
log "built in $(($(date +%s) - start)) s: $bin"
echo "$bin"
