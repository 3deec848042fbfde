#!/usr/bin/env bash
# The Debian root-filesystem test (run-rootfs.sh) in the configurations CI
# runs: a 32 MiB window (the guest reclaims throughout), 2 vCPUs and two
# request queues, over the standard SHMEM protocol and the legacy one with
# rootflags=dax=always, and over SHMEM with dax=inode (--inode-dax
# min-size=64K: small files through the page cache, larger ones through the
# window; without the compileall phase). The C project has 2 modules here:
# under a 32 MiB window each compile re-maps cc1's text thousands of times
# (about 30 s a compile under TCG; docs/benchmarks.md). The daemon runs sandboxed with the seccomp allow-list enforced.
#   tests/guest/run-rootfs-all.sh [--daemon-bin PATH]
# DAXFSD_ROOTFS_CONFIGS overrides the list ("PROTOCOL:MODE[:DAEMON-ARGS]"
# entries separated by ';'). Ends with "guest-rootfs: N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
daemon_bin=$repo/target/debug/daxfsd
case ${1:-} in
  --daemon-bin) daemon_bin=$2 ;;
  "") ;;
  *) echo "usage: $0 [--daemon-bin PATH]" >&2; exit 2 ;;
esac
sandbox="--sandbox namespace --seccomp kill"
configs=${DAXFSD_ROOTFS_CONFIGS:-"shmem:always;legacy:always;shmem:inode:--inode-dax min-size=64K"}
# dax=inode's subject is the per-file split (and READ into window pages):
# python compileall adds nothing there but minutes.
inode_phases=make,git,randio,window_io,rmrf
passed=0 failed=0 failures=()
IFS=';' read -r -a list <<<"$configs"
for c in "${list[@]}"; do
  IFS=':' read -r protocol mode extra <<<"$c"
  t=$SECONDS
  phases=()
  [ "$mode" = inode ] && phases=(--phases "$inode_phases")
  if "$here/run-rootfs.sh" --daemon-bin "$daemon_bin" --window 32M --protocol "$protocol" --modules 2 \
    --mount-dax "$mode" "${phases[@]}" --daemon-args "$sandbox ${extra:-}"; then
    passed=$((passed + 1))
    echo "guest-rootfs: PASS $protocol/dax=$mode ($((SECONDS - t))s)"
  else
    failed=$((failed + 1))
    failures+=("$protocol/dax=$mode")
    echo "guest-rootfs: FAIL $protocol/dax=$mode ($((SECONDS - t))s)"
  fi
done
[ "$failed" = 0 ] || echo "guest-rootfs: failed: ${failures[*]}" >&2
echo "guest-rootfs: $passed passed, $failed failed"
[ "$failed" = 0 ]
