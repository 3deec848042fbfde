#!/usr/bin/env bash
# Workload "dax_parallel", host side (see dax_parallel.sh). The daemon must run
# with --metrics-file {state}/metrics.prom and two request queues.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

# Keep in sync with dax_parallel.sh.
JOBS=8
ROUNDS=3
HEAD=4194304
STAMP_AT=5242880
MMAP_STAMP_AT=5767168
SIZE=6291456

prepare() {
  local shared=$1 state=$2 i
  for i in $(seq 0 $((JOBS - 1))); do
    head -c "$SIZE" /dev/urandom >"$shared/f$i"
    head -c "$HEAD" "$shared/f$i" | md5sum | cut -d' ' -f1 >"$shared/f$i.head.md5"
    cp "$shared/f$i" "$state/f$i.orig"
  done
}

verify() {
  local shared=$1 state=$2 metrics=$2/metrics.prom i want
  for i in $(seq 0 $((JOBS - 1))); do
    # The original bytes with the last round's stamp and the mmap stamp:
    # nothing else changed.
    cp "$state/f$i.orig" "$state/f$i.want"
    printf 'job%s-round%s' "$i" "$ROUNDS" |
      dd of="$state/f$i.want" bs=1 seek="$STAMP_AT" conv=notrunc status=none
    printf 'mmap%s' "$i" |
      dd of="$state/f$i.want" bs=1 seek="$MMAP_STAMP_AT" conv=notrunc status=none
    want=$(md5_of "$state/f$i.want")
    check "f$i" eq "f$i md5" "$(md5_of "$shared/f$i")" "$want"
    check "f$i.size" eq "f$i size" "$(stat -c %s "$shared/f$i")" "$SIZE"
  done
  check metrics.present test -s "$metrics"
  check metrics.setups test "$(metric "$metrics" dax_setupmapping_total)" -gt 0
  check metrics.removes test "$(metric "$metrics" dax_removed_mappings_total)" -gt 0
  check metrics.no-refusals eq "DAX refusals" "$(metric "$metrics" dax_refusals_total)" 0
  check metrics.no-map-failures eq "VMM map failures" "$(metric "$metrics" dax_vmm_map_failures_total)" 0
  check metrics.no-unmap-failures eq "VMM unmap failures" "$(metric "$metrics" dax_vmm_unmap_failures_total)" 0
  report_metrics dax_parallel "$metrics" dax_setupmapping_total dax_upgrades_total \
    dax_removed_mappings_total dax_waits_total dax_conflicts_total dax_thrash_total
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
