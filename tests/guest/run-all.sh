#!/usr/bin/env bash
# The real-guest test as CI runs it: installs what is missing (setup.sh),
# builds the initramfs, and runs each workload against the daemon.
#
#   tests/guest/run-all.sh [run-guest.sh OPTIONS]
#
# Without --daemon/--daemon-bin (or DAXFSD_DAEMON/DAXFSD_DAEMON_BIN) it builds
# and tests target/debug/daxfsd. DAXFSD_GUEST_WORKLOADS picks the workloads
# (default: basic many_files). Each workload runs once per daemon pass: extra daemon
# flags, passes separated by ';' in DAXFSD_GUEST_DAEMON_PASSES (default: the
# hardened "--sandbox namespace --seccomp kill", then "--sandbox none
# --seccomp none"; virtiofsd takes the same flags). An empty pass runs the
# daemon's defaults. Ends with a "guest: N passed, N failed" line.
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
IFS=';' read -r -a passes <<<"${DAXFSD_GUEST_DAEMON_PASSES---sandbox namespace --seccomp kill;--sandbox none --seccomp none}"
[ "${#passes[@]}" -gt 0 ] || passes=("")
for w in ${DAXFSD_GUEST_WORKLOADS:-basic many_files}; do
  for pass in "${passes[@]}"; do
    t=$SECONDS
    if "$here/run-guest.sh" --workload "$w" --initrd "$initrd" \
      --daemon-args "${DAXFSD_DAEMON_ARGS:-} $pass" "$@"; then
      passed=$((passed + 1))
      echo "guest: PASS $w [$pass] ($((SECONDS - t))s)"
    else
      failed=$((failed + 1))
      failures+=("$w [$pass]")
      echo "guest: FAIL $w [$pass] ($((SECONDS - t))s)"
    fi
  done
done
[ "$failed" = 0 ] || echo "guest: failed workloads: ${failures[*]}" >&2
echo "guest: $passed passed, $failed failed"
[ "$failed" = 0 ]
