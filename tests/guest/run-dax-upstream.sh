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
# QEMU 11.1 cannot map the partial last page of a file nor a read-only
# descriptor (the daemon probes this at INIT; docs/operating.md, "Upstream
# QEMU 11.1"). So under dax=inode the daemon puts only whole-page files the
# caller may write in the window, and every workload is expected to pass;
# dax=always cannot be served and the daemon refuses it at INIT: that run is
# expected to fail at the guest's first access to the mount ("Connection
# refused"), with the guest kernel's "FUSE: map_alignment 63 incompatible"
# and the daemon's error naming the fix, and is checked for exactly that
# (once per window, with the first workload: the refusal happens at INIT).
#
# Every workload runs once per window size with dax=inode (dax_inode with
# daemon --inode-dax min-size=1M, its subject; the others with the default
# --inode-dax always). dax_parallel gets two request queues. dax_truncate
# truncates to a whole number of pages (DAXFSD_TRUNCATE_KEEP, default here
# 1052672): a size inside a page leaves a partial last page the guest's write
# faults would need mapped, which this frontend refuses (EIO). dax_exec runs
# only with windows of 16 MiB or less (its 12 programs must not all fit, or
# nothing is reclaimed), and its one known failure is QEMU's, not the
# daemon's: under TCG, QEMU 11.1 runs translated code of the program a window
# range held before (the guest prints another program's number with its own
# text; docs/qemu-dax.md, "Upstream QEMU 11.1"). A dax_exec run failing
# exactly that way is reported KNOWN and does not fail the script.
# DAXFSD_DAX_WORKLOADS (default: dax dax_exec dax_truncate dax_parallel
# dax_inode), DAXFSD_DAX_WINDOWS (default "64M 8M"; powers of two only: QEMU
# 11.1 aborts on any other size, "pci_register_bar: Assertion
# `is_power_of_2(size)' failed"), DAXFSD_DAX_MOUNTS (default "dax=inode
# dax=always"),
# DAXFSD_DAX_SANDBOX (default "--sandbox namespace --seccomp kill"),
# DAXFSD_DAX_UPSTREAM_OUT (default: a new /tmp/daxfsd-dax-upstream.XXXXXX):
# one run-guest log per run (LABEL.log), and the work dir of each failed run
# (LABEL/: guest.log with QEMU's stderr, daemon.log, state/metrics.prom,
# state/dax-trace.jsonl). Each failure is summarised with run-guest's reason,
# QEMU's own messages and the daemon's warnings.
# Each passing run prints its metrics line. Ends with "guest-dax-upstream: N
# passed, N failed, N known (QEMU)". Needs root.
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
mounts=${DAXFSD_DAX_MOUNTS:-dax=inode dax=always}
export DAXFSD_TRUNCATE_KEEP=${DAXFSD_TRUNCATE_KEEP:-1052672}
sandbox=${DAXFSD_DAX_SANDBOX---sandbox namespace --seccomp kill}
passed=0
failed=0
known=0
failures=()

# window_mib SIZE: SIZE (NNM or NNG) in MiB.
window_mib() {
  case $1 in
    *G) echo $((${1%G} * 1024)) ;;
    *M) echo "${1%M}" ;;
    *) echo 0 ;;
  esac
}

# stale_code LABEL: whether the failed dax_exec run LABEL printed, for one
# program, the number another program prints (its text is its own): the
# program ran translated code of the range's previous occupant.
stale_code() {
  local work=$out/$1 line n got others
  line=$(grep -a -m1 -oE "daxfsd-guest: round [0-9]+: prog[0-9]+ printed 'prog [0-9]+ [0-9]+'" "$work/guest.log") ||
    return 1
  n=$(sed -E "s/.*: prog([0-9]+) printed 'prog ([0-9]+) .*/\1 \2/" <<<"$line")
  [ "${n% *}" = "${n#* }" ] || return 1 # its own text
  n=${n% *}
  got=$(sed -E "s/.* ([0-9]+)'$/\1/" <<<"$line")
  others=$(grep -lx "prog [0-9]* $got" "$work/shared/bin/"*.want 2>/dev/null | grep -v "/prog$n.want$" || true)
  [ -n "$others" ]
}

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

# refused_as_documented LABEL: whether the failed dax=always run LABEL failed
# the documented way: the daemon refused DAX at INIT (its error, the metric),
# the guest rejected the INIT reply and its first access to the mount got
# ECONNREFUSED, and nothing was mapped.
refused_as_documented() {
  local work=$out/$1 metrics=$out/$1/state/metrics.prom
  grep -aq 'cannot map partial last pages: mount with -o dax=inode' "$work/daemon.log" &&
    grep -aq 'FUSE: map_alignment 63 incompatible with dax mem range size' "$work/guest.log" &&
    grep -aq 'Connection refused' "$work/guest.log" &&
    [ "$(sed -n 's/^daxfsd_dax_init_refusals_total //p' "$metrics")" -ge 1 ] 2>/dev/null &&
    [ "$(sed -n 's/^daxfsd_dax_setupmapping_total //p' "$metrics")" = 0 ]
}

for window in $windows; do
  always_checked=0
  for w in ${DAXFSD_DAX_WORKLOADS:-dax dax_exec dax_truncate dax_parallel dax_inode}; do
    queues=1 daemon_opts="" workload_mounts=$mounts
    case $w in
      dax_parallel) queues=2 ;;
      dax_inode) workload_mounts=dax=inode daemon_opts="--inode-dax min-size=1M" ;;
    esac
    if [ "$always_checked" = 1 ]; then
      workload_mounts=${workload_mounts//dax=always/}
    fi
    if [ "$w" = dax_exec ] && [ "$(window_mib "$window")" -gt 16 ]; then
      echo "guest-dax-upstream: SKIP dax_exec window=$window (its 12 programs fit: nothing to reclaim)"
      workload_mounts=${workload_mounts//dax=inode/}
    fi
    device="vhost-user-test-device-pci,chardev=char0,virtio-id=26,num_vqs=$((queues + 1)),config_size=40,vq_size=1024"
    for m in $workload_mounts; do
      label=$w.${m#dax=}.$window
      t=$SECONDS
      if [ "$m" = dax=always ]; then
        always_checked=1
        if "$here/run-guest.sh" --workload "$w" --initrd "$initrd" --qemu "$qemu" \
          --qemu-args "-L /usr/share/seabios -L /usr/share/qemu" \
          --fs-device "$device" --mount-opts "$m" --work-dir "$out/$label" \
          --daemon-args "--cache-size $window --dax-protocol shmem --num-request-queues $queues --metrics-file {state}/metrics.prom $daemon_opts $sandbox" \
          "$@" >"$out/$label.log" 2>&1; then
          failed=$((failed + 1))
          failures+=("$label")
          echo "guest-dax-upstream: FAIL $w $m window=$window ($((SECONDS - t))s): the daemon served dax=always"
        elif refused_as_documented "$label"; then
          passed=$((passed + 1))
          echo "guest-dax-upstream: PASS $w $m window=$window ($((SECONDS - t))s): refused at INIT as documented" \
            "(daemon error, guest 'map_alignment 63 incompatible', then 'Connection refused')"
          rm -rf "${out:?}/$label"
        else
          failed=$((failed + 1))
          failures+=("$label")
          echo "guest-dax-upstream: FAIL $w $m window=$window ($((SECONDS - t))s): not refused as documented:" \
            "$(sed -n 's/^run-guest: FAIL: //p' "$out/$label.log" | head -n 1)"
          summarise "$out/$label"
        fi
        continue
      fi
      if "$here/run-guest.sh" --workload "$w" --initrd "$initrd" --qemu "$qemu" \
        --qemu-args "-L /usr/share/seabios -L /usr/share/qemu" \
        --fs-device "$device" --mount-opts "$m" --work-dir "$out/$label" \
        --daemon-args "--cache-size $window --dax-protocol shmem --num-request-queues $queues --metrics-file {state}/metrics.prom --dax-trace {state}/dax-trace.jsonl $daemon_opts $sandbox" \
        "$@" >"$out/$label.log" 2>&1; then
        passed=$((passed + 1))
        echo "guest-dax-upstream: PASS $w $m window=$window ($((SECONDS - t))s)" \
          "$(grep -a -E '^(dax[a-z_]* metrics|dax_truncate): ' "$out/$label.log" | head -n 1 || true)"
      elif [ "$w" = dax_exec ] && stale_code "$label"; then
        known=$((known + 1))
        echo "guest-dax-upstream: KNOWN $w $m window=$window ($((SECONDS - t))s): QEMU ran stale" \
          "translated code: $(grep -a -m1 -oE "prog[0-9]+ printed '[^']*', expected '[^']*'" "$out/$label/guest.log")"
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
echo "guest-dax-upstream: $passed passed, $failed failed, $known known (QEMU)"
[ "$failed" = 0 ]
