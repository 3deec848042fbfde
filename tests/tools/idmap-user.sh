#!/usr/bin/env bash
# Prepares an ordinary user with subordinate id ranges for the tests of
# daxfsd's --uid-map/--gid-map (tests/harness/tests/daxfsd_uid_map.rs), as
# libvirt's session mode has: installs newuidmap/newgidmap (Debian's uidmap
# package) if missing, creates the user (default daxfsd-idmap, or $1) if
# missing, and gives it 65536 subordinate uids and gids in /etc/subuid and
# /etc/subgid if it has none, after every range already there. Idempotent.
# Needs root.
#
# Prints one line: NAME UID GID SUBUID_START SUBUID_COUNT SUBGID_START SUBGID_COUNT
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
name=${1:-daxfsd-idmap}
die() {
  echo "idmap-user: $*" >&2
  exit 1
}
[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, useradd, /etc/subuid)"
# One at a time (test binaries may call this in parallel).
exec 9>/run/daxfsd-idmap-user.lock
flock -w 900 9 || die "another run held /run/daxfsd-idmap-user.lock too long"

if ! command -v newuidmap >/dev/null || ! command -v newgidmap >/dev/null; then
  echo "idmap-user: installing uidmap (newuidmap, newgidmap)" >&2
  install_step "apt-get update" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive install_step "apt-get install uidmap" \
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends uidmap >&2
fi
command -v newuidmap >/dev/null && command -v newgidmap >/dev/null ||
  die "newuidmap/newgidmap still missing after installing uidmap"

if ! getent passwd "$name" >/dev/null; then
  useradd --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$name"
  echo "idmap-user: created the user $name" >&2
fi
touch /etc/subuid /etc/subgid
# The first range of NAME in FILE: "START COUNT".
range_of() { awk -F: -v n="$name" '$1 == n { print $2, $3; exit }' "$1"; }
if [ -z "$(range_of /etc/subuid)" ] || [ -z "$(range_of /etc/subgid)" ]; then
  # After every range of either file, and at least at 100000 (login.defs).
  start=$(awk -F: 'BEGIN { m = 100000 } NF >= 3 && $2 + $3 > m { m = $2 + $3 } END { print m }' \
    /etc/subuid /etc/subgid)
  end=$((start + 65535))
  [ -n "$(range_of /etc/subuid)" ] || usermod --add-subuids "$start-$end" "$name"
  [ -n "$(range_of /etc/subgid)" ] || usermod --add-subgids "$start-$end" "$name"
  echo "idmap-user: gave $name the subordinate ids $start-$end" >&2
fi
read -r subuid subuid_count <<<"$(range_of /etc/subuid)"
read -r subgid subgid_count <<<"$(range_of /etc/subgid)"
echo "$name $(id -u "$name") $(id -g "$name") $subuid $subuid_count $subgid $subgid_count"
