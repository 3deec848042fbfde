#!/usr/bin/env bash
# Builds daxfsd in release mode (cargo install --path daemon --locked) and
# installs the binary and its vhost-user descriptor (contrib/50-daxfsd.json,
# type "fs", with the installed binary's path substituted).
#
#   tests/tools/install-daxfsd.sh [options]
#     --prefix DIR      installation prefix (default /usr/local): the binary
#                       goes to DIR/bin/daxfsd, the descriptor to
#                       DIR/share/qemu/vhost-user/50-daxfsd.json
#     --destdir DIR     stage everything under DIR (for packaging); the
#                       descriptor still names PREFIX/bin/daxfsd
#     --register        also install the descriptor in
#                       SYSCONFDIR/qemu/vhost-user/ (default /etc/qemu/...),
#                       where libvirt and QEMU look besides /usr/share/qemu:
#                       libvirt then starts daxfsd for every virtiofs
#                       filesystem without a <binary path=...> (50-daxfsd.json
#                       sorts before Debian's virtiofsd descriptor). Refused
#                       unless the binary answers --print-capabilities with
#                       type fs (i.e. takes libvirt's command line; issue 14)
#     --sysconfdir DIR  default /etc
#     --binary PATH     install this daxfsd binary instead of building one
#     -h, --help
#
# Debian's libvirt and QEMU read descriptors from /usr/share/qemu/vhost-user
# and /etc/qemu/vhost-user only (and, for session libvirt,
# $XDG_CONFIG_HOME/qemu/vhost-user): with the default prefix /usr/local the
# descriptor is found only with --register (or --prefix /usr). See
# docs/libvirt.md.
#
# Idempotent: files already identical are left alone; it prints what it
# installed and what was unchanged. Building needs cargo; the build output
# goes to <repo>/target/release (so a second run is quick).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
prefix=/usr/local
destdir=
sysconfdir=/etc
register=0
binary=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "install-daxfsd: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) need_arg "$@"; prefix=$2; shift 2 ;;
    --destdir) need_arg "$@"; destdir=$2; shift 2 ;;
    --sysconfdir) need_arg "$@"; sysconfdir=$2; shift 2 ;;
    --register) register=1; shift ;;
    --binary) need_arg "$@"; binary=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case $prefix in /*) ;; *) die "--prefix must be absolute (it is written into the descriptor): '$prefix'" ;; esac
case $sysconfdir in /*) ;; *) die "--sysconfdir must be absolute: '$sysconfdir'" ;; esac
prefix=${prefix%/}
[ -n "$prefix" ] || die "--prefix / is not supported"
template=$repo/contrib/50-daxfsd.json
[ -r "$template" ] || die "missing $template"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

if [ -z "$binary" ]; then
  command -v cargo >/dev/null || die "cargo is needed to build daxfsd (or pass --binary)"
  echo "install-daxfsd: building: cargo install --path daemon --locked (release)" >&2
  install_step "cargo install daxfsd" cargo install --path "$repo/daemon" --locked \
    --root "$stage/root" --target-dir "$repo/target" --quiet >&2 || die "cargo install failed"
  binary=$stage/root/bin/daxfsd
fi
[ -x "$binary" ] || die "no daxfsd binary at $binary"
"$binary" --version >/dev/null 2>&1 || die "$binary does not run (--version failed)"

# Registering makes libvirt start this binary with its own command line:
# check before installing anything.
if [ "$register" = 1 ]; then
  caps=$("$binary" --print-capabilities 2>/dev/null) ||
    die "--register: $binary does not answer --print-capabilities, so libvirt could not start it (issue 14); nothing installed"
  grep -q '"type": *"fs"' <<<"$caps" || die "--register: --print-capabilities does not say type fs: $caps"
fi

# The descriptor, with the installed binary's path.
installed_bin=$prefix/bin/daxfsd
sed "s|\"binary\": *\"[^\"]*\"|\"binary\": \"$installed_bin\"|" "$template" >"$stage/50-daxfsd.json"
grep -q "\"binary\": \"$installed_bin\"" "$stage/50-daxfsd.json" || die "could not set the binary path in the descriptor"
grep -q '"type": "fs"' "$stage/50-daxfsd.json" || die "$template is not a type fs descriptor"

# put SRC DEST MODE: installs SRC at DEST unless identical; says which.
put() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    echo "unchanged  $dest"
  else
    install -D -m "$mode" "$src" "$dest"
    echo "installed  $dest"
  fi
}

put "$binary" "$destdir$installed_bin" 0755
put "$stage/50-daxfsd.json" "$destdir$prefix/share/qemu/vhost-user/50-daxfsd.json" 0644
if [ "$register" = 1 ]; then
  put "$stage/50-daxfsd.json" "$destdir$sysconfdir/qemu/vhost-user/50-daxfsd.json" 0644
fi
