#!/usr/bin/env bash
# Workload "submounts", host side (see submounts.sh): prepare mounts a small
# tmpfs on sub/ inside the share (as root) with a marker file, and a plain
# directory beside it; verify checks the guest's write reached the tmpfs and
# unmounts it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

prepare() {
  local shared=$1
  mkdir -p "$shared/sub" "$shared/plain"
  mount -t tmpfs -o size=1M daxfsd-submount "$shared/sub"
  echo "on the tmpfs" >"$shared/sub/marker"
}

verify() {
  local shared=$1 log=$3
  check sub.written eq "sub/written" "$(cat "$shared/sub/written" 2>/dev/null)" "from the guest"
  check sub.own-device test "$(guest_value "$log" root.dev)" != "$(guest_value "$log" sub.dev)"
  umount "$shared/sub"
  check sub.unmounted absent "$shared/sub/marker"
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
