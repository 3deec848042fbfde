#!/usr/bin/env bash
# Workload "dax_reset", host side (see dax_reset.sh). Run with
# run-guest.sh --allow-reboot and --metrics-file {state}/metrics.prom.
# DAXFSD_DAX_PROTOCOL (shmem or legacy) says what the reset must look like:
# with shmem the frontend dropped the mappings at the reset, so the daemon's
# first unmap of the old records is refused and the rest are forgotten
# without a request; a legacy unmap clears whatever the range holds, so there
# the old records are simply unmapped. Neither counts an unmap failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

prepare() {
  local shared=$1
  head -c 6291456 /dev/urandom >"$shared/data.bin"
  head -c 12345 /dev/urandom >"$shared/tail.bin"
  (cd "$shared" && md5sum data.bin tail.bin >data.md5)
  printf 'first_boot' >"$shared/mapped.txt"
}

verify() {
  local shared=$1 log=$3 metrics=$2/metrics.prom refused
  check mapped.txt eq "mapped.txt" "$(cat "$shared/mapped.txt")" "BOOT2_boot"
  check two-boots eq "boots seen" "$(grep -c 'DAXFSD-INFO kernel' "$log")" 2
  check metrics.present test -s "$metrics"
  check metrics.setups test "$(metric "$metrics" dax_setupmapping_total)" -gt 0
  check metrics.no-unmap-failures eq "DAX unmap failures" \
    "$(metric "$metrics" dax_vmm_unmap_failures_total)" 0
  check metrics.no-refusals eq "DAX refusals" "$(metric "$metrics" dax_refusals_total)" 0
  # QEMU's stderr is in the console log: at most the one refused unmap by
  # which the daemon learns that the frontend dropped the mappings.
  refused=$(grep -c 'SHMEM_UNMAP.*refused' "$log" || true)
  if [ "${DAXFSD_DAX_PROTOCOL:-shmem}" = shmem ]; then
    check metrics.forgotten test "$(metric "$metrics" dax_forgotten_mappings_total)" -gt 0
    check qemu.one-refused-unmap eq "refused SHMEM_UNMAPs in QEMU's log" "$refused" 1
  else
    check metrics.none-forgotten eq "forgotten mappings" \
      "$(metric "$metrics" dax_forgotten_mappings_total)" 0
  fi
  report_metrics dax_reset "$metrics" dax_setupmapping_total dax_removed_mappings_total \
    dax_forgotten_mappings_total dax_vmm_unmap_failures_total
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
