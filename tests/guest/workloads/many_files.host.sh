#!/usr/bin/env bash
# Workload "many_files", host side (see many_files.sh): 30,000 empty files
# (the first and last hold their numbers); the guest must have listed all of
# them twice and written alive.txt after.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

prepare() {
  local shared=$1
  mkdir "$shared/many"
  (cd "$shared/many" && seq -f f%05g 0 29999 | xargs -n 1000 touch --)
  printf 0 >"$shared/many/f00000"
  printf 29999 >"$shared/many/f29999"
}

verify() {
  local shared=$1 log=$3
  check round1 eq "files the guest listed in round 1" "$(guest_value "$log" many.round1)" 30000
  check round2 eq "files the guest listed in round 2" "$(guest_value "$log" many.round2)" 30000
  check alive eq "alive.txt" "$(cat "$shared/alive.txt")" alive
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
