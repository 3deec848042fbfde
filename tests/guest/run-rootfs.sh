#!/usr/bin/env bash
# Boots a Debian bookworm root filesystem served over virtio-fs as the guest's
# `/` (no initramfs) and runs real programs in checked phases
# (rootfs/init.sh): python compileall, `make -j4` of a C project (twice), git
# init/add/commit/fsck/status over /usr/share/doc, verified random writes and
# mmap random reads of a file twice the window (randio; fio as an optional
# phase), I/O whose
# buffer is an mmap of another file on the share, `rm -rf`; then powers off
# and checks the tree from the host. Ends with "rootfs: PASS|FAIL ..." and one
# "rootfs-phases: ..." line of wall times.
#
#   tests/guest/run-rootfs.sh [OPTIONS]
#     --daemon-bin PATH   daxfsd binary (default target/debug/daxfsd)
#     --virtiofsd PATH    run this upstream virtiofsd instead (no DAX)
#     --window SIZE       DAX window (e.g. 32M; 0 = no DAX)      default 32M
#     --protocol P        shmem | legacy                         default shmem
#     --mount-dax MODE    always | inode (rootflags=dax=MODE)    default always
#     --qemu PATH         QEMU (default: the patched build with a window,
#                         the system qemu-system-x86_64 without)
#     --smp N             vCPUs (and request queues)             default 2
#     --phases LIST       comma-separated phases of rootfs/init.sh
#     --modules N         C modules in the make phase's project   default 48
#     --rounds N          run the phase list N times             default 1
#     --soak SECONDS      repeat the phase list until the guest has run
#                         SECONDS (the soak: every round fully checked;
#                         raise --timeout above it)
#     --timeout S         wall clock limit for the guest         default 1200
#     --daemon-args ARGS  extra daemon flags
#     --keep              keep the work dir
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"

daemon_bin=$repo/target/debug/daxfsd
virtiofsd=
window=32M
protocol=shmem
mount_dax=always
qemu=
smp=2
phases=
rounds=1
modules=48
soak=0
timeout_s=1200
daemon_args=
keep=0
die() { echo "run-rootfs: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --daemon-bin) need "$@"; daemon_bin=$2; shift 2 ;;
    --virtiofsd) need "$@"; virtiofsd=$2; shift 2 ;;
    --window) need "$@"; window=$2; shift 2 ;;
    --protocol) need "$@"; protocol=$2; shift 2 ;;
    --mount-dax) need "$@"; mount_dax=$2; shift 2 ;;
    --qemu) need "$@"; qemu=$2; shift 2 ;;
    --smp) need "$@"; smp=$2; shift 2 ;;
    --phases) need "$@"; phases=$2; shift 2 ;;
    --rounds) need "$@"; rounds=$2; shift 2 ;;
    --soak) need "$@"; soak=$2; shift 2 ;;
    --modules) need "$@"; modules=$2; shift 2 ;;
    --timeout) need "$@"; timeout_s=$2; shift 2 ;;
    --daemon-args) need "$@"; daemon_args=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
case $mount_dax in always|inode) ;; *) die "--mount-dax: always or inode, not $mount_dax" ;; esac
[ -n "$virtiofsd" ] && window=0
dax=1
[ "$window" = 0 ] && dax=0

kernel=$("$here/setup.sh")
tree=$("$here/build-rootfs.sh")
if [ -z "$qemu" ]; then
  if [ $dax = 1 ]; then qemu=$("$repo/tests/qemu/build-qemu.sh"); else qemu=qemu-system-x86_64; fi
fi
command -v "$qemu" >/dev/null || die "no QEMU '$qemu'"

work=$(mktemp -d /tmp/daxfsd-rootfs.XXXXXX)
root=$work/root
state=$work/state
sock=$work/vhost-fs.sock
guest_log=$work/guest.log
daemon_log=$work/daemon.log
mkdir -p "$state"
label="window=$window"
[ $dax = 1 ] && label+=" protocol=$protocol dax=$mount_dax"
[ -n "$virtiofsd" ] && label="virtiofsd"

daemon_pid= qemu_pid=
cleanup() {
  local pid
  for pid in $qemu_pid $daemon_pid; do kill "$pid" 2>/dev/null || true; done
  if [ "$keep" = 0 ] && [ -z "${failed:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
  failed=1
  echo "run-rootfs: FAIL ($label): $1" >&2
  echo "----- guest log tail ($guest_log) -----" >&2
  grep -v '^\s*$' "$guest_log" 2>/dev/null | tail -n 40 >&2 || true
  echo "----- daemon log tail ($daemon_log) -----" >&2
  tail -n 20 "$daemon_log" >&2 2>/dev/null || true
  echo "----- work dir kept: $work -----" >&2
  echo "rootfs: FAIL $label"
  exit 1
}

# 1. A private copy of the tree, the test's init and the C project.
cp -a --reflink=auto "$tree" "$root"
install -m 0755 "$here/rootfs/init.sh" "$root/daxfsd-init"
mkdir -p "$root/work"
"$here/rootfs/gen-cproj.sh" "$root/work/cproj" "$modules"

# 2. The daemon.
if [ -n "$virtiofsd" ]; then
  cmd=("$virtiofsd" --socket-path "$sock" --shared-dir "$root" --cache auto)
else
  [ -x "$daemon_bin" ] || die "no daemon binary at $daemon_bin (cargo build -p daxfsd)"
  cmd=("$daemon_bin" --socket-path "$sock" --shared-dir "$root" --tag rootfs --cache auto
       --num-request-queues "$smp" --metrics-file "$state/metrics.prom")
  [ $dax = 1 ] && cmd+=(--cache-size "$window" --dax-protocol "$protocol")
  # shellcheck disable=SC2206  # word splitting of the extra flags is intended
  [ -n "$daemon_args" ] && cmd+=($daemon_args)
fi
echo "run-rootfs: daemon: ${cmd[*]}" >&2
"${cmd[@]}" >"$daemon_log" 2>&1 &
daemon_pid=$!
wait_for_socket "$sock" 30 "$daemon_pid" || fail "daemon did not create $sock"

# 3. The guest.
cmdline="console=ttyS0 panic=-1 root=rootfs rootfstype=virtiofs rw init=/daxfsd-init sysrq_always_enabled daxfsd.rounds=$rounds daxfsd.soak=$soak"
[ $dax = 1 ] && cmdline+=" rootflags=dax=$mount_dax"
[ -n "$phases" ] && cmdline+=" daxfsd.phases=$phases"
fs_dev="vhost-user-fs-pci,chardev=char0,tag=rootfs,queue-size=1024"
# upstream virtiofsd serves one request queue
[ "$smp" -gt 1 ] && [ -z "$virtiofsd" ] && fs_dev+=",num-request-queues=$smp"
[ $dax = 1 ] && fs_dev+=",cache-size=$window"
qemu_cmd=("$qemu" -machine q35 -accel tcg -cpu max -smp "$smp" -m 2G
  -object memory-backend-memfd,id=mem,size=2G,share=on -numa node,memdev=mem
  -chardev "socket,id=char0,path=$sock" -device "$fs_dev"
  -kernel "$kernel" -append "$cmdline" -nographic -no-reboot -nic none
  -L /usr/share/seabios -L /usr/share/qemu)
echo "run-rootfs: qemu: ${qemu_cmd[*]}" >&2
t0=$SECONDS
timeout -k 10 "$timeout_s" "${qemu_cmd[@]}" </dev/null >"$guest_log" 2>&1 &
qemu_pid=$!
qemu_rc=0
wait_pid_timeout "$qemu_pid" $((timeout_s + 20)) "QEMU" || qemu_rc=$?
qemu_pid=
elapsed=$((SECONDS - t0))
sed -i 's/\r$//' "$guest_log"
daemon_rc=0
await_exit "$daemon_pid" 5 "the daemon after QEMU's exit" || daemon_rc=$?
daemon_pid=

# 4. Verdict.
last=$(sed -n 's/^.*DAXFSD-STEP PASS \([^ ]*\).*$/\1/p' "$guest_log" | tail -n 1)
[ "$qemu_rc" != 124 ] && [ "$qemu_rc" != 137 ] || fail "guest timed out after ${timeout_s}s (last phase passed: ${last:-none})"
bad=$(sed -n 's/^.*DAXFSD-RESULT FAIL \([^ ]*\).*$/\1/p' "$guest_log" | head -n 1)
[ -z "$bad" ] || fail "phase '$bad' failed"
grep -q 'DAXFSD-RESULT PASS' "$guest_log" || fail "no result from the guest (QEMU exit $qemu_rc; last phase passed: ${last:-none})"
if grep -q 'panicked at' "$daemon_log"; then fail "daemon panicked"; fi
case $daemon_rc in 0|143) ;; *) fail "daemon exited with status $daemon_rc" ;; esac
# shellcheck source=SCRIPTDIR/host-checks.sh
. "$here/host-checks.sh"
all=${phases:-compileall,make,git,randio,window_io,rmrf}
w=$root/work
if [[ ,$all, == *,make,* ]]; then
  check make.output cmp -s "$w/cproj/out.2" "$w/cproj/want"
fi
if [[ ,$all, == *,randio,* ]]; then
  check randio.md5 test "$(md5_of "$w/randio.dat")" = "$(cat "$w/randio.md5")"
fi
if [[ ,$all, == *,fio,* ]]; then
  check fio.md5 test "$(md5_of "$w/fio.dat")" = "$(cat "$w/fio.md5")"
fi
if [[ ,$all, == *,window_io,* ]]; then
  check window_io.write test "$(md5_of "$w/dst.bin")" = "$(cat "$w/src.md5")"
  check window_io.read test "$(md5_of "$w/rdst.bin")" = "$(cat "$w/src.md5")"
  check window_io.direct-write test "$(md5_of "$w/wdirect.bin")" = "$(cat "$w/wdirect.md5")"
  check window_io.direct-read test "$(dd if="$w/rdst2.bin" bs=4096 skip=2 count=10 status=none | md5sum | cut -d' ' -f1)" = "$(cat "$w/small.md5")"
  if [ $dax = 1 ]; then
    # WRITE data taken from window pages (git's config, dst.bin) ...
    check window_io.served-writes test "$(metric "$state/metrics.prom" dax_window_io_read_bytes_total)" -gt 0
    # ... and, under dax=inode, READ data put into window pages.
    if [ "$mount_dax" = inode ]; then
      check window_io.served-reads test "$(metric "$state/metrics.prom" dax_window_io_written_bytes_total)" -gt 0
    fi
  fi
fi
if [[ ,$all, == *,git,* ]] && [[ ,$all, != *,rmrf,* ]]; then
  check git.fsck git -c safe.directory='*' -C "$w/repo" fsck --full --strict
fi
if [ -n "$virtiofsd" ] || [ $dax = 0 ]; then
  :
else
  m=$state/metrics.prom
  check metrics.setups test "$(metric "$m" dax_setupmapping_total)" -gt 0
  check metrics.refusals test "$(metric "$m" dax_refusals_total)" = 0
  if [ "$window" != 1G ]; then
    check metrics.removals test "$(metric "$m" dax_removed_mappings_total)" -gt 0
  fi
  report_metrics "rootfs $label" "$m" dax_setupmapping_total dax_upgrades_total \
    dax_removed_mappings_total dax_waits_total dax_conflicts_total dax_thrash_total
fi
checks_done || fail "host checks"
times=$(sed -n 's/^.*DAXFSD-VALUE phase\.\([^ ]*\) \([0-9.]*\).*$/\1=\2/p' "$guest_log" | tr '\n' ' ')
echo "rootfs-phases: $label total=${elapsed}s $times"
echo "rootfs: rounds completed: $(guest_value "$guest_log" rounds)"
echo "rootfs: PASS $label (${elapsed}s)"
