#!/usr/bin/env bash
# The real-guest DAX tests: builds (or reuses) the DAX-capable QEMU from
# tests/qemu/, then runs each DAX workload with the guest mounting
# `dax=always` and the daemon serving a small window, so the guest's own
# reclaim sends REMOVEMAPPING.
#
#   tests/guest/run-dax.sh [run-guest.sh OPTIONS]
#
# Each workload runs once per DAX protocol: the standard SHMEM_MAP/UNMAP and
# the legacy FS_MAP/FS_UNMAP (the patched QEMU speaks both); dax_inode, whose
# subject is the per-file policy rather than the channel, runs with shmem only.
# dax_parallel gives the guest two request queues (one per vCPU), dax_inode
# mounts dax=inode with --inode-dax min-size=1M; the others mount dax=always.
# dax_reset reboots the guest with the share mounted (a device reset without
# FUSE_DESTROY; run-guest.sh --allow-reboot) and maps the same files again.
# DAXFSD_DAX_WORKLOADS picks the workloads (default: dax dax_exec dax_truncate
# dax_parallel dax_inode dax_reset), DAXFSD_DAX_PROTOCOLS the protocols (default: shmem
# legacy), DAXFSD_DAX_WINDOW the window size
# (default 8M), DAXFSD_DAX_SANDBOX the daemon's isolation flags (default
# "--sandbox namespace --seccomp kill": the DAX paths run under the
# sandbox and the seccomp allow-list). Ends with "guest-dax: N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

t0=$SECONDS
"$here/setup.sh" >/dev/null
qemu=$("$repo/tests/qemu/build-qemu.sh")
# shellcheck source=SCRIPTDIR/daemon-default.sh
. "$here/daemon-default.sh"
initrd=$("$here/build-initramfs.sh")
echo "guest-dax: QEMU $qemu, setup ready in $((SECONDS - t0))s" >&2

window=${DAXFSD_DAX_WINDOW:-8M}
sandbox=${DAXFSD_DAX_SANDBOX---sandbox namespace --seccomp kill}
passed=0
failed=0
failures=()
protocols=${DAXFSD_DAX_PROTOCOLS:-shmem legacy}
for w in ${DAXFSD_DAX_WORKLOADS:-dax dax_exec dax_truncate dax_parallel dax_inode dax_reset}; do
  mount_opts=dax=always device_opts="" daemon_opts="" workload_protocols=$protocols
  guest_opts=()
  case $w in
    dax_parallel)
      device_opts=",num-request-queues=2"
      daemon_opts="--num-request-queues 2" ;;
    dax_inode)
      mount_opts=dax=inode
      daemon_opts="--inode-dax min-size=1M"
      workload_protocols=${protocols%% *} ;;
    dax_reset)
      guest_opts=(--allow-reboot) ;;
  esac
  for p in $workload_protocols; do
    t=$SECONDS
    if DAXFSD_DAX_PROTOCOL=$p "$here/run-guest.sh" --workload "$w" "${guest_opts[@]}" --initrd "$initrd" --qemu "$qemu" \
      --qemu-args "-L /usr/share/seabios -L /usr/share/qemu" \
      --fs-device-opts "cache-size=$window$device_opts" --mount-opts "$mount_opts" \
      --daemon-args "--cache-size $window --dax-protocol $p --metrics-file {state}/metrics.prom $daemon_opts $sandbox" "$@"; then
      passed=$((passed + 1))
      echo "guest-dax: PASS $w/$p ($((SECONDS - t))s)"
    else
      failed=$((failed + 1))
      failures+=("$w/$p")
      echo "guest-dax: FAIL $w/$p ($((SECONDS - t))s)"
    fi
  done
done
[ "$failed" = 0 ] || echo "guest-dax: failed workloads: ${failures[*]}" >&2
echo "guest-dax: $passed passed, $failed failed"
[ "$failed" = 0 ]
