#!/usr/bin/env bash
# The real-guest DAX workloads on upstream, unpatched QEMU (11.1 or later:
# Debian sid's qemu-system-x86 in a chroot, tests/qemu/upstream-qemu.sh), as
# run-dax.sh runs them on the patched 10.0.2. Upstream's vhost-user-fs-pci has
# no window; the window comes through the generic vhost-user device, whose
# BAR carries one shared-memory region per entry of GET_SHMEM_CONFIG (shmid 0
# is the virtio-fs cache) and whose config space (tag, queue count) the
# daemon serves (CONFIG protocol feature):
#   -device vhost-user-test-device-pci,chardev=char0,virtio-id=26,num_vqs=N+1,config_size=40,vq_size=1024
# The daemon speaks the standard SHMEM_MAP/UNMAP protocol (upstream has no
# legacy FS_MAP).
#
#   tests/guest/run-dax-upstream.sh [run-guest.sh OPTIONS]
#
# Every workload runs once per window size and mount option: dax_inode only
# with dax=inode (its subject; daemon --inode-dax min-size=1M), the others
# with each of DAXFSD_DAX_MOUNTS (default "dax=always dax=inode"; under
# dax=inode the daemon's default --inode-dax always puts every file in the
# window). dax_parallel gets two request queues.
# DAXFSD_DAX_WORKLOADS (default: dax dax_exec dax_truncate dax_parallel
# dax_inode), DAXFSD_DAX_WINDOWS (default "64M 8M"; powers of two only: QEMU
# 11.1 aborts on any other size, "pci_register_bar: Assertion
# `is_power_of_2(size)' failed"), DAXFSD_DAX_MOUNTS,
# DAXFSD_DAX_SANDBOX (default "--sandbox namespace --seccomp kill"),
# DAXFSD_DAX_UPSTREAM_OUT (default: a new /tmp/daxfsd-dax-upstream.XXXXXX):
# one run-guest log per run (LABEL.log), and the work dir of each failed run
# (LABEL/: guest.log with QEMU's stderr, daemon.log, state/metrics.prom,
# state/dax-trace.jsonl). Each failure is summarised with run-guest's reason,
# QEMU's own messages and the daemon's warnings.
# Ends with "guest-dax-upstream: N passed, N failed". Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

t0=$SECONDS
qemu=$("$repo/tests/qemu/upstream-qemu.sh")
DAXFSD_QEMU=$qemu "$here/setup.sh" >/dev/null
# shellcheck source=SCRIPTDIR/daemon-default.sh
. "$here/daemon-default.sh"
initrd=$("$here/build-initramfs.sh")
out=${DAXFSD_DAX_UPSTREAM_OUT:-}
if [ -z "$out" ]; then
  out=$(mktemp -d /tmp/daxfsd-dax-upstream.XXXXXX)
else
  mkdir -p "$out"
fi
echo "guest-dax-upstream: $("$qemu" --version | head -n 1) ($qemu), setup ready in $((SECONDS - t0))s; logs in $out" >&2

windows=${DAXFSD_DAX_WINDOWS:-64M 8M}
mounts=${DAXFSD_DAX_MOUNTS:-dax=always dax=inode}
sandbox=${DAXFSD_DAX_SANDBOX---sandbox namespace --seccomp kill}
passed=0
failed=0
failures=()

# summarise WORKDIR: QEMU's messages and the daemon's warnings of a failed run.
summarise() {
  local work=$1
  [ -d "$work" ] || return 0
  grep -a '^qemu-system-x86_64: ' "$work/guest.log" 2>/dev/null | sort | uniq -c | sort -rn | head -n 5 |
    sed 's/^/    qemu: /' || true
  grep -aE ' (WARN|ERROR) ' "$work/daemon.log" 2>/dev/null | head -n 3 | sed 's/^/    daemon: /' || true
  sed -n 's/^daxfsd_\(dax_[a-z_]*\) \([1-9][0-9]*\)$/\1=\2/p' "$work/state/metrics.prom" 2>/dev/null |
    tr '\n' ' ' | sed 's/^/    metrics: /;s/ $/\n/' || true
}

for window in $windows; do
  for w in ${DAXFSD_DAX_WORKLOADS:-dax dax_exec dax_truncate dax_parallel dax_inode}; do
    queues=1 daemon_opts="" workload_mounts=$mounts
    case $w in
      dax_parallel) queues=2 ;;
      dax_inode) workload_mounts=dax=inode daemon_opts="--inode-dax min-size=1M" ;;
    esac
    device="vhost-user-test-device-pci,chardev=char0,virtio-id=26,num_vqs=$((queues + 1)),config_size=40,vq_size=1024"
    for m in $workload_mounts; do
      label=$w.${m#dax=}.$window
      t=$SECONDS
      if "$here/run-guest.sh" --workload "$w" --initrd "$initrd" --qemu "$qemu" \
        --qemu-args "-L /usr/share/seabios -L /usr/share/qemu" \
        --fs-device "$device" --mount-opts "$m" --work-dir "$out/$label" \
        --daemon-args "--cache-size $window --dax-protocol shmem --num-request-queues $queues --metrics-file {state}/metrics.prom --dax-trace {state}/dax-trace.jsonl $daemon_opts $sandbox" \
        "$@" >"$out/$label.log" 2>&1; then
        passed=$((passed + 1))
        echo "guest-dax-upstream: PASS $w $m window=$window ($((SECONDS - t))s)"
      else
        failed=$((failed + 1))
        failures+=("$label")
        echo "guest-dax-upstream: FAIL $w $m window=$window ($((SECONDS - t))s):" \
          "$(sed -n 's/^run-guest: FAIL: //p' "$out/$label.log" | head -n 1)"
        summarise "$out/$label"
      fi
    done
  done
done
[ "$failed" = 0 ] || echo "guest-dax-upstream: failed: ${failures[*]} (logs in $out)" >&2
echo "guest-dax-upstream: $passed passed, $failed failed"
[ "$failed" = 0 ]
