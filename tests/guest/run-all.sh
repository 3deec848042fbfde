#!/usr/bin/env bash
# The real-guest test as CI runs it: installs what is missing (setup.sh),
# builds the initramfs, and runs each workload against the daemon.
#
#   tests/guest/run-all.sh [run-guest.sh OPTIONS]
#
# Without --daemon/--daemon-bin (or DAXFSD_DAEMON/DAXFSD_DAEMON_BIN) it builds
# and tests target/debug/daxfsd. DAXFSD_GUEST_WORKLOADS picks the workloads
# (default: basic). Ends with a "guest: N passed, N failed" line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

t0=$SECONDS
"$here/setup.sh" >/dev/null
# shellcheck source=SCRIPTDIR/daemon-default.sh
. "$here/daemon-default.sh"
initrd=$("$here/build-initramfs.sh")
echo "guest: setup ready in $((SECONDS - t0))s" >&2

passed=0
failed=0
failures=()
for w in ${DAXFSD_GUEST_WORKLOADS:-basic}; do
  t=$SECONDS
  if "$here/run-guest.sh" --workload "$w" --initrd "$initrd" "$@"; then
    passed=$((passed + 1))
    echo "guest: PASS $w ($((SECONDS - t))s)"
  else
    failed=$((failed + 1))
    failures+=("$w")
    echo "guest: FAIL $w ($((SECONDS - t))s)"
  fi
done
[ "$failed" = 0 ] || echo "guest: failed workloads: ${failures[*]}" >&2
echo "guest: $passed passed, $failed failed"
[ "$failed" = 0 ]
