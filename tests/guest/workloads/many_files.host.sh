#!/usr/bin/env bash
# Workload "many_files", host side (see many_files.sh): DAXFSD_MANY_FILES
# (default 30,000) empty files (the first and last hold their numbers); the
# guest must have listed all of them twice and written alive.txt after. The
# count reaches the guest in many.count.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

count=${DAXFSD_MANY_FILES:-30000}
[[ $count =~ ^[1-9][0-9]*$ ]] || { echo "many_files: DAXFSD_MANY_FILES must be a positive number, not '$count'" >&2; exit 2; }
last=$((count - 1))

prepare() {
  local shared=$1
  mkdir "$shared/many"
  (cd "$shared/many" && seq -f f%06g 0 "$last" | xargs -n 1000 touch --)
  printf 0 >"$shared/many/f000000"
  printf '%s' "$last" >"$shared/many/$(printf f%06d "$last")"
  printf '%s' "$count" >"$shared/many.count"
}

verify() {
  local shared=$1 log=$3
  check round1 eq "files the guest listed in round 1" "$(guest_value "$log" many.round1)" "$count"
  check round2 eq "files the guest listed in round 2" "$(guest_value "$log" many.round2)" "$count"
  check alive eq "alive.txt" "$(cat "$shared/alive.txt")" alive
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
