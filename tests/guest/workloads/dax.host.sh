#!/usr/bin/env bash
# Workload "dax", host side (see dax.sh). The daemon must run with
# --metrics-file {state}/metrics.prom so the checks can read its counters.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

prepare() {
  local shared=$1
  printf 'hello from the host\n' >"$shared/hello.txt"
  head -c 3145728 /dev/urandom >"$shared/data.bin"
  (cd "$shared" && md5sum data.bin >data.md5)
  printf '0123456789' >"$shared/mapped.txt"
  head -c 67108864 /dev/urandom >"$shared/large.bin"
  md5sum "$shared/large.bin" | cut -d' ' -f1 >"$shared/large.md5"
}

verify() {
  local shared=$1 log=$3 big metrics=$2/metrics.prom
  check hello.txt eq "hello.txt" "$(cat "$shared/hello.txt")" "HELLO FROM the host"
  check mapped.txt eq "mapped.txt" "$(cat "$shared/mapped.txt")" "0123MMAP89"
  big=$(guest_value "$log" big.bin.md5)
  check big.bin.md5 eq "big.bin md5" "$(md5_of "$shared/big.bin")" "$big"
  check metrics.present test -s "$metrics"
  check metrics.setups test "$(metric "$metrics" dax_setupmapping_total)" -gt 0
  check metrics.removes test "$(metric "$metrics" dax_removed_mappings_total)" -gt 0
  check metrics.no-refusals eq "DAX refusals" "$(metric "$metrics" dax_refusals_total)" 0
  report_metrics dax "$metrics" dax_setupmapping_total dax_upgrades_total \
    dax_removed_mappings_total dax_thrash_total
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
