#!/usr/bin/env bash
# Workload "dax_truncate", host side (see dax_truncate.sh). prepare starts a
# background truncator: when the guest creates `ready` (it holds victim.bin
# mapped), it shrinks victim.bin to KEEP bytes as another host process would,
# waits until the daemon's metrics show the host-side repair, and creates
# `truncated`. The daemon must run with --metrics-file {state}/metrics.prom.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"
# shellcheck source=SCRIPTDIR/../../lib/wait.sh
. "$here/../../lib/wait.sh"

# Keep in sync with dax_truncate.sh. KEEP is the size after the truncation:
# by default inside a page (the partial last page's bytes past the end read
# as zeros); DAXFSD_TRUNCATE_KEEP changes it (run-dax-upstream.sh takes a
# whole number of pages: QEMU 11.1 cannot map a partial last page, so the
# guest's write faults in the head would get EIO). The guest reads it from
# the file `keep` in the share.
LEN=4194304
KEEP=${DAXFSD_TRUNCATE_KEEP:-1049576}

repaired() { [ "$(metric "$1" dax_host_repairs_total)" -ge 1 ] 2>/dev/null; }

# Without `ready` in 180 s it gives up (the guest then fails waiting for
# `truncated`); without a repair in 10 s it goes on (verify then fails on
# the metrics).
truncator() {
  local shared=$1 metrics=$2/metrics.prom
  wait_until 180 "the guest's $shared/ready" test -e "$shared/ready" || return 0
  truncate -s "$KEEP" "$shared/victim.bin"
  date +%s.%N >"$2/truncated-at"
  # The race between a host truncation and the repair is measured in the
  # harness; here the guest touches the old range after the repair.
  wait_until 10 "dax_host_repairs_total >= 1 in $metrics" repaired "$metrics" || true
  touch "$shared/truncated"
}

prepare() {
  local shared=$1 state=$2
  head -c "$LEN" /dev/urandom >"$shared/victim.bin"
  echo "$KEEP" >"$shared/keep"
  # Detached from run-guest.sh's output; it ends on its own (timeouts above).
  truncator "$shared" "$state" </dev/null >/dev/null 2>&1 &
  echo $! >"$state/truncator.pid"
}

verify() {
  local shared=$1 state=$2 log=$3 metrics=$2/metrics.prom
  kill "$(cat "$state/truncator.pid")" 2>/dev/null || true
  check truncated test -e "$shared/truncated"
  check victim.size eq "victim.bin size" "$(stat -c %s "$shared/victim.bin")" "$KEEP"
  check victim.md5 eq "victim.bin md5 (guest vs host)" "$(guest_value "$log" victim.md5)" "$(md5_of "$shared/victim.bin")"
  check after.md5 eq "after.bin md5" "$(md5_of "$shared/after.bin")" "$(guest_value "$log" after.md5)"
  # The pages past the new end read zeros in the guest (or SIGBUS in the
  # guest process, had it noticed the new size), never data.
  check zero-pages test "$(guest_value "$log" touch.zero-pages)" -gt 0
  check metrics.host-repairs test "$(metric "$metrics" dax_host_repairs_total)" -ge 1
  check metrics.invalidated test "$(metric "$metrics" dax_invalidated_mappings_total)" -ge 1
  check metrics.no-repair-failures eq "repair failures" "$(metric "$metrics" dax_repair_failures_total)" 0
  echo "dax_truncate: zero pages $(guest_value "$log" touch.zero-pages)," \
    "guest SIGBUS pages $(guest_value "$log" touch.sigbus-pages)," \
    "invalidated $(metric "$metrics" dax_invalidated_mappings_total)" \
    "($(metric "$metrics" dax_invalidated_bytes_total) bytes)," \
    "host repairs $(metric "$metrics" dax_host_repairs_total)" >&2
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
