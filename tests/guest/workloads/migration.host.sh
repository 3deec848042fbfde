#!/usr/bin/env bash
# Workload "migration", host side (see migration.sh; run by
# run-migration.sh). prepare fills SHARED/mig; verify checks what the guest
# wrote through the descriptor it held across the migration and after it,
# and the outcome of its read of descriptor 3 (EXPECT_FD3: data or eio).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

prepare() {
  local m=$1/mig
  mkdir -p "$m/data" "$m/work/sub" "$m/a/b/c/d/e/f"
  head -c 262144 /dev/urandom >"$m/data/read.bin"
  head -c 4096 "$m/data/read.bin" | md5sum | cut -d' ' -f1 >"$m/data/read.head.md5"
  tail -c +4097 "$m/data/read.bin" | md5sum | cut -d' ' -f1 >"$m/data/read.tail.md5"
  touch "$m/work/sub/one" "$m/work/sub/two" "$m/work/sub/three"
  mkdir "$m/data/churn"
  for i in 0 1 2 3 4 5 6 7; do head -c 262144 /dev/urandom >"$m/data/churn/$i.bin"; done
  (cd "$m/data/churn" && md5sum ./*.bin | sed 's| \./| |') >"$m/data/churn.md5"
  echo "deep file" >"$m/a/b/c/d/e/f/deep.txt"
}

verify() {
  local m=$1/mig log=$3
  check log.txt eq "mig/work/log.txt (appended through descriptor 4)" \
    "$(tr '\n' ' ' <"$m/work/log.txt" 2>/dev/null)" "before after "
  check new.txt eq "mig/work/new.txt" "$(cat "$m/work/new.txt" 2>/dev/null)" "created after migration"
  check fd3 eq "what reading descriptor 3 gave" "$(guest_value "$log" fd3)" "${EXPECT_FD3:-data}"
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
