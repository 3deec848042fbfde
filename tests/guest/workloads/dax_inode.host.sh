#!/usr/bin/env bash
# Workload "dax_inode", host side (see dax_inode.sh). The daemon must run with
# --inode-dax min-size=1M and --metrics-file {state}/metrics.prom.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

prepare() {
  local shared=$1
  printf 'a small file, below --inode-dax min-size\n' >"$shared/small.txt"
  head -c 6291456 /dev/urandom >"$shared/large.bin"
  md5sum "$shared/large.bin" | cut -d' ' -f1 >"$shared/large.md5"
}

verify() {
  local metrics=$2/metrics.prom
  check metrics.present test -s "$metrics"
  # large.bin is 3 ranges of 2 MiB; the small file maps none.
  check metrics.setups test "$(metric "$metrics" dax_setupmapping_total)" -ge 3
  check metrics.no-refusals eq "DAX refusals" "$(metric "$metrics" dax_refusals_total)" 0
  report_metrics dax_inode "$metrics" dax_setupmapping_total
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
