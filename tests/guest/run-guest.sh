#!/usr/bin/env bash
# Boots the test guest under QEMU TCG against a vhost-user-fs daemon, runs one
# workload inside it, then checks the shared directory from the host.
#
#   run-guest.sh [OPTIONS]
#
# The daemon (every option also has an environment variable):
#   --daemon-bin PATH     binary run with the standard flags        DAXFSD_DAEMON_BIN
#                         (default <repo>/target/debug/daxfsd):
#                         PATH --socket-path {sock} --shared-dir {dir} --tag {tag} --cache {cache}
#   --daemon-args ARGS    extra flags after the standard ones       DAXFSD_DAEMON_ARGS
#   --daemon CMD          whole command line instead, with          DAXFSD_DAEMON
#                         {sock} {dir} {tag} {cache} {state} substituted
#                         ({state}: the workload's private host-side dir,
#                         e.g. for --metrics-file {state}/metrics.prom)
#   --cache MODE          value for {cache} (default auto)          DAXFSD_CACHE_POLICY
#   --tag TAG             virtio-fs tag (default daxfsd)            DAXFSD_TAG
# The guest:
#   --workload NAME       workloads/NAME.sh (default basic)         DAXFSD_WORKLOAD
#   --mount-opts OPTS     mount -t virtiofs -o OPTS (dax=always)    DAXFSD_MOUNT_OPTS
#   --append ARGS         extra kernel command line                 DAXFSD_KERNEL_APPEND
#   --kernel PATH         default: what setup.sh downloaded         DAXFSD_GUEST_KERNEL
#   --initrd PATH         default: built now by build-initramfs.sh  DAXFSD_INITRD
# QEMU:
#   --qemu PATH           default qemu-system-x86_64                DAXFSD_QEMU
#   --qemu-args ARGS      extra QEMU arguments                      DAXFSD_QEMU_ARGS
#   --fs-device-opts OPTS extra vhost-user-fs-pci properties,       DAXFSD_FS_DEVICE_OPTS
#                         e.g. cache-size=1G for a DAX window
#   --fs-device DEV       whole -device value instead of            DAXFSD_FS_DEVICE
#                         vhost-user-fs-pci (its chardev is char0;
#                         --fs-device-opts is still appended)
#   --mem SIZE            guest RAM (default 512M)                  DAXFSD_GUEST_MEM
#   --queue-size N        request queue size (default 1024)         DAXFSD_QUEUE_SIZE
#   --timeout SECS        QEMU wall clock limit (default 300)       DAXFSD_GUEST_TIMEOUT
#   --allow-reboot        let the guest reboot (a system reset, so   DAXFSD_ALLOW_REBOOT=1
#                         a device reset without FUSE_DESTROY) instead
#                         of QEMU exiting on it (-no-reboot)
# Output:
#   --work-dir DIR        socket, shared dir, logs (default: a new   DAXFSD_WORK_DIR
#                         temp dir, removed on success unless --keep)
#   --keep                keep the work dir on success
#   --console             also stream the guest console to stdout
#
# Exits 0 when every guest step and every host check passed; otherwise 1,
# naming the failing step, with the tails of the guest and daemon logs.
# QEMU runs with -accel tcg only: never KVM.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
# shellcheck source=SCRIPTDIR/../lib/cli.sh
. "$repo/tests/lib/cli.sh"

daemon_bin=${DAXFSD_DAEMON_BIN:-$repo/target/debug/daxfsd}
daemon_args=${DAXFSD_DAEMON_ARGS:-}
daemon_cmd=${DAXFSD_DAEMON:-}
cache_policy=${DAXFSD_CACHE_POLICY:-auto}
tag=${DAXFSD_TAG:-daxfsd}
workload=${DAXFSD_WORKLOAD:-basic}
mount_opts=${DAXFSD_MOUNT_OPTS:-}
append=${DAXFSD_KERNEL_APPEND:-}
kernel=${DAXFSD_GUEST_KERNEL:-${DAXFSD_CACHE:-$repo/.cache}/guest/vmlinuz}
initrd=${DAXFSD_INITRD:-}
qemu=${DAXFSD_QEMU:-qemu-system-x86_64}
qemu_args=${DAXFSD_QEMU_ARGS:-}
fs_device_opts=${DAXFSD_FS_DEVICE_OPTS:-}
fs_device=${DAXFSD_FS_DEVICE:-}
mem=${DAXFSD_GUEST_MEM:-512M}
queue_size=${DAXFSD_QUEUE_SIZE:-1024}
timeout_s=${DAXFSD_GUEST_TIMEOUT:-300}
allow_reboot=${DAXFSD_ALLOW_REBOOT:-0}
work=${DAXFSD_WORK_DIR:-}
keep=0
console=0

while [ $# -gt 0 ]; do
  case $1 in
    --daemon-bin) need_arg "$@"; daemon_bin=$2; shift 2 ;;
    --daemon-args) need_arg "$@"; daemon_args=$2; shift 2 ;;
    --daemon) need_arg "$@"; daemon_cmd=$2; shift 2 ;;
    --cache) need_arg "$@"; cache_policy=$2; shift 2 ;;
    --tag) need_arg "$@"; tag=$2; shift 2 ;;
    --workload) need_arg "$@"; workload=$2; shift 2 ;;
    --mount-opts) need_arg "$@"; mount_opts=$2; shift 2 ;;
    --append) need_arg "$@"; append=$2; shift 2 ;;
    --kernel) need_arg "$@"; kernel=$2; shift 2 ;;
    --initrd) need_arg "$@"; initrd=$2; shift 2 ;;
    --qemu) need_arg "$@"; qemu=$2; shift 2 ;;
    --qemu-args) need_arg "$@"; qemu_args=$2; shift 2 ;;
    --fs-device-opts) need_arg "$@"; fs_device_opts=$2; shift 2 ;;
    --fs-device) need_arg "$@"; fs_device=$2; shift 2 ;;
    --mem) need_arg "$@"; mem=$2; shift 2 ;;
    --queue-size) need_arg "$@"; queue_size=$2; shift 2 ;;
    --timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
    --work-dir) need_arg "$@"; work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --allow-reboot) allow_reboot=1; shift ;;
    --console) console=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case $tag in *[!A-Za-z0-9_.-]*|'') die "tag '$tag' must be [A-Za-z0-9_.-]+" ;; esac
case $mount_opts in *[[:space:]]*) die "mount options cannot contain spaces" ;; esac
host_script=$here/workloads/$workload.host.sh
[ -r "$here/workloads/$workload.sh" ] || die "no workload $here/workloads/$workload.sh"
[ -r "$kernel" ] || die "no guest kernel at $kernel (run tests/guest/setup.sh)"
command -v "$qemu" >/dev/null || die "no QEMU binary '$qemu' (run tests/guest/setup.sh)"
# A workload that needs daemon flags of its own (many_files: a descriptor
# limit) names them in workloads/NAME.args; a whole --daemon command does not
# get them.
if [ -r "$here/workloads/$workload.args" ]; then
  daemon_args="$(cat "$here/workloads/$workload.args") $daemon_args"
fi
if [ -z "$daemon_cmd" ]; then
  [ -x "$daemon_bin" ] || die "no daemon binary at $daemon_bin (cargo build -p daxfsd, or --daemon-bin)"
  daemon_cmd="$daemon_bin --socket-path {sock} --shared-dir {dir} --tag {tag} --cache {cache} $daemon_args"
fi

work=$(work_dir "$work" guest)
sock=$work/vhost-fs.sock
shared=$work/shared
state=$work/state
guest_log=$work/guest.log
daemon_log=$work/daemon.log
mkdir -p "$shared" "$state"

if [ -z "$initrd" ]; then
  initrd=$("$here/build-initramfs.sh" "$work/initramfs.cpio.gz")
fi

daemon_pid=
qemu_pid=
cleanup() {
  local pid
  for pid in $qemu_pid $daemon_pid; do
    kill "$pid" 2>/dev/null || true
  done
  # A workload's host side may mount inside the share (submounts): never
  # leave such a mount behind, even when the run fails.
  awk -v s="$shared/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "run-guest: FAIL: $1" >&2
  echo "----- guest log tail ($guest_log) -----" >&2
  tail -n 40 "$guest_log" >&2 2>/dev/null || true
  echo "----- daemon log tail ($daemon_log) -----" >&2
  tail -n 40 "$daemon_log" >&2 2>/dev/null || true
  echo "----- work dir kept: $work -----" >&2
  exit 1
}

# 1. Shared dir contents the workload expects.
if [ -x "$host_script" ]; then
  "$host_script" prepare "$shared" "$state" || fail "host prepare for workload $workload"
fi

# 2. The daemon, listening on its socket before QEMU connects. Placeholders
#    are substituted per word, so paths with spaces survive.
read -r -a words <<<"$daemon_cmd"
cmd=()
for w in "${words[@]}"; do
  w=${w//\{sock\}/$sock}; w=${w//\{dir\}/$shared}; w=${w//\{tag\}/$tag}; w=${w//\{cache\}/$cache_policy}
  w=${w//\{state\}/$state}
  cmd+=("$w")
done
echo "run-guest: daemon: ${cmd[*]}" >&2
"${cmd[@]}" >"$daemon_log" 2>&1 &
daemon_pid=$!
wait_for_socket "$sock" 30 "$daemon_pid" || fail "daemon did not create $sock"

# 3. The guest, under TCG with a hard wall clock limit.
cmdline="console=ttyS0 panic=-1 daxfsd.tag=$tag daxfsd.workload=$workload"
[ -n "$mount_opts" ] && cmdline+=" daxfsd.mount_opts=$mount_opts"
[ -n "$append" ] && cmdline+=" $append"
fs_dev=${fs_device:-"vhost-user-fs-pci,chardev=char0,tag=$tag,queue-size=$queue_size"}
[ -n "$fs_device_opts" ] && fs_dev+=",$fs_device_opts"
read -r -a extra_qemu <<<"$qemu_args"
qemu_cmd=(
  "$qemu" -machine q35 -accel tcg -cpu max -smp 2 -m "$mem"
  -object "memory-backend-memfd,id=mem,size=$mem,share=on" -numa "node,memdev=mem"
  -chardev "socket,id=char0,path=$sock"
  -device "$fs_dev"
  -kernel "$kernel" -initrd "$initrd" -append "$cmdline"
  -nographic -nic none
  "${extra_qemu[@]}"
)
# A reboot (or a panic: panic=-1) ends QEMU unless the workload reboots on
# purpose; then a panic loops until the timeout, which still fails the run.
[ "$allow_reboot" = 1 ] || qemu_cmd+=(-no-reboot)
echo "run-guest: qemu: ${qemu_cmd[*]}" >&2
start=$(date +%s.%N)
timeout -k 10 "$timeout_s" "${qemu_cmd[@]}" </dev/null >"$guest_log" 2>&1 &
qemu_pid=$!
tail_pid=
if [ "$console" = 1 ]; then
  tail -n +1 -f --pid="$qemu_pid" "$guest_log" &
  tail_pid=$!
fi
# A daemon leaves once QEMU disconnects, i.e. when QEMU is already exiting.
# One that goes while the guest still runs has crashed: the guest would wait
# for its replies until the timeout, so stop QEMU after a short grace period.
# (QEMU runs under timeout(1), so this loop ends within timeout_s + 10 s.)
daemon_died=0
qemu_rc=
while ! gone "$qemu_pid"; do
  if gone "$daemon_pid"; then
    rc=0
    wait_pid_timeout "$qemu_pid" 5 "QEMU after the daemon's exit" 2>/dev/null || rc=$?
    qemu_rc=$rc
    if [ "$rc" = 124 ] && ! gone "$qemu_pid"; then
      daemon_died=1
      qemu_rc=0
      stop_pid "$qemu_pid" 10 "QEMU" || qemu_rc=$?
    fi
    break
  fi
  sleep 0.2
done
if [ -z "$qemu_rc" ]; then
  qemu_rc=0
  wait_pid_timeout "$qemu_pid" $((timeout_s + 20)) "QEMU" || qemu_rc=$?
fi
qemu_pid=
if [ -n "$tail_pid" ]; then
  wait_pid_timeout "$tail_pid" 5 "the console tail" || stop_pid "$tail_pid" 1 "the console tail" || true
fi
end=$(date +%s.%N)
# The serial console ends lines with CR LF.
sed -i 's/\r$//' "$guest_log"
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "run-guest: guest ran ${elapsed}s (QEMU exit $qemu_rc)" >&2

# 4. The daemon should leave on its own once the frontend is gone; stop it if not.
daemon_rc=0
await_exit "$daemon_pid" 5 "the daemon after QEMU's exit" || daemon_rc=$?
stopped_by_us=$STOPPED
daemon_pid=

# 5. Verdict: the guest's own markers first, then the host's view.
last_pass=$(sed -n 's/^.*DAXFSD-STEP PASS \([^ ]*\).*$/\1/p' "$guest_log" | tail -n 1)
if [ "$daemon_died" = 1 ]; then
  fail "daemon exited (status $daemon_rc) while the guest was running (last passed step: ${last_pass:-none})"
fi
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  fail "guest timed out after ${timeout_s}s (last passed step: ${last_pass:-none})"
fi
failed_step=$(sed -n 's/^.*DAXFSD-RESULT FAIL \([^ ]*\).*$/\1/p' "$guest_log" | head -n 1)
[ -z "$failed_step" ] || fail "guest step '$failed_step' failed"
grep -q 'DAXFSD-RESULT PASS' "$guest_log" ||
  fail "guest gave no result (QEMU exit $qemu_rc, daemon exit $daemon_rc; last passed step: ${last_pass:-none})"
[ "$qemu_rc" = 0 ] || fail "QEMU exited with status $qemu_rc"
if grep -q 'panicked at' "$daemon_log"; then fail "daemon panicked"; fi
if [ "$stopped_by_us" = 0 ] && [ "$daemon_rc" != 0 ]; then
  fail "daemon exited with status $daemon_rc after the guest left"
fi
if [ "$stopped_by_us" = 1 ] && [ "$daemon_rc" != 0 ] && [ "$daemon_rc" != 143 ]; then
  fail "daemon ended with status $daemon_rc on SIGTERM"
fi
if [ -x "$host_script" ]; then
  "$host_script" verify "$shared" "$state" "$guest_log" || fail "host checks of workload $workload"
fi

steps=$(grep -c 'DAXFSD-STEP PASS' "$guest_log" || true)
echo "run-guest: PASS workload=$workload steps=$steps guest_time=${elapsed}s" >&2
if [ "$keep" = 1 ]; then
  echo "run-guest: work dir kept: $work" >&2
else
  rm -rf "$work"
fi
