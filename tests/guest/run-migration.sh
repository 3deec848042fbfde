#!/usr/bin/env bash
# Live migration of a guest whose virtio-fs back-end state travels with it:
# daemon A + QEMU A (source) and daemon B + QEMU B (destination, -incoming
# defer) share one directory; QEMU 10.0.2's vhost-user-fs-pci carries the
# daemon's state in the migration stream (VHOST_USER_PROTOCOL_F_DEVICE_STATE:
# SET_DEVICE_STATE_FD on both sides, then CHECK_DEVICE_STATE). The guest
# (workloads/migration.sh) holds a cwd, open files and a directory handle,
# prints DAXFSD-MIGRATION READY, and after the host's marker checks them all.
#
#   run-migration.sh [OPTIONS]
#
#   --daemon-bin PATH    default <repo>/target/debug/daxfsd; each daemon runs as  DAXFSD_DAEMON_BIN
#                        PATH --socket-path S --shared-dir DIR --tag T ARGS
#   --daemon-args ARGS   extra flags for both daemons, e.g.                      DAXFSD_DAEMON_ARGS
#                        "--migration-on-error guest-error"
#   --scenario NAME      basic (default) or unlinked
#   --qemu PATH          default qemu-system-x86_64                              DAXFSD_QEMU
#   --qemu-args ARGS     extra arguments for both QEMUs, e.g.                    DAXFSD_QEMU_ARGS
#                        "-trace vhost_user_write -trace vhost_user_read"
#   --kernel, --initrd   as run-guest.sh (the initramfs is built if not given)
#   --timeout SECS       limit of each wait and of each QEMU (default 600)       DAXFSD_GUEST_TIMEOUT
#   --work-dir DIR       sockets, shared dir, logs (default a new temp dir,
#                        removed on success unless --keep)
#   --keep               keep the work dir on success
#
# Scenarios and what must happen (the host asserts each):
#   basic     migration completes; on B the guest reads the rest of
#             descriptor 3, appends through 4, lists through 5, stats the
#             deep path, reads back the page cache it filled during the
#             migration, lists the cwd, creates and reads a file: all pass.
#   unlinked  after READY the host removes mig/data/read.bin, which the guest
#             holds open as descriptor 3: no path leads to that inode.
#             --migration-on-error abort (the default): migration fails
#             (query-migrate: failed) and the guest goes on on A, where every
#             check passes (A still holds the file open).
#             --migration-on-error guest-error: migration completes; on B
#             reading descriptor 3 gives EIO and every other check passes.
#             --migration-mode file-handles: migration completes and B reads
#             the data (the source sends a file handle, which still opens
#             the unlinked inode while A holds it open).
#   The settings are read from --daemon-args. on-error matters on the
#   destination: the source (virtiofsd 1.14 at least) sends the inode it
#   cannot find as lost, and the destination refuses it (CHECK_DEVICE_STATE
#   fails) or serves it as an error. For A to learn that B failed and resume
#   the guest, both QEMUs have the return-path capability; without it A
#   reports "completed" and stays paused while B exits.
#
# virtiofsd 1.14 passes all of these (2026-12-07, 2 cores: 10-20 s a run, up
# to 60 s under load; migration 0.9-2.7 s, downtime 2-30 ms). It leaves its socket
# file behind on exit (daxfsd removes it): only a socket that still accepts
# connections fails the run, a stale file is noted.
#
# Exits 0 when the outcome is the expected one; otherwise 1, naming the step
# that failed, with the tails of the QEMU, daemon and serial logs. A daemon
# without migration support fails at `migrate` with QEMU's blocker message.
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
scenario=basic
qemu=${DAXFSD_QEMU:-qemu-system-x86_64}
qemu_args=${DAXFSD_QEMU_ARGS:-}
kernel=${DAXFSD_GUEST_KERNEL:-${DAXFSD_CACHE:-$repo/.cache}/guest/vmlinuz}
initrd=${DAXFSD_INITRD:-}
timeout_s=${DAXFSD_GUEST_TIMEOUT:-600}
work=
keep=0
tag=migfs
mem=512M

while [ $# -gt 0 ]; do
  case $1 in
    --daemon-bin) need_arg "$@"; daemon_bin=$2; shift 2 ;;
    --daemon-args) need_arg "$@"; daemon_args=$2; shift 2 ;;
    --scenario) need_arg "$@"; scenario=$2; shift 2 ;;
    --qemu) need_arg "$@"; qemu=$2; shift 2 ;;
    --qemu-args) need_arg "$@"; qemu_args=$2; shift 2 ;;
    --kernel) need_arg "$@"; kernel=$2; shift 2 ;;
    --initrd) need_arg "$@"; initrd=$2; shift 2 ;;
    --timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
    --work-dir) need_arg "$@"; work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -x "$daemon_bin" ] || die "no daemon binary at $daemon_bin (cargo build -p daxfsd, or --daemon-bin)"
[ -r "$kernel" ] || die "no guest kernel at $kernel (run tests/guest/setup.sh)"
command -v "$qemu" >/dev/null || die "no QEMU binary '$qemu' (run tests/guest/setup.sh)"
read -r -a extra_args <<<"$daemon_args"
read -r -a extra_qemu <<<"$qemu_args"

# flag NAME DEFAULT: the value of --NAME in --daemon-args (the last one).
flag() {
  local v=$2 prev='' w
  for w in "${extra_args[@]}"; do
    case $w in --$1=*) v=${w#*=} ;; esac
    [ "$prev" != "--$1" ] || v=$w
    prev=$w
  done
  echo "$v"
}
on_error=$(flag migration-on-error abort)
mode=$(flag migration-mode find-paths)
# The expected outcome: the migration's end state, the side the guest goes on
# on, and what its read of descriptor 3 gives there.
case $scenario/$mode/$on_error in
  basic/*) expect=completed live=b other=a fd3=data ;;
  unlinked/file-handles/*) expect=completed live=b other=a fd3=data ;;
  unlinked/*/abort) expect=failed live=a other=b fd3=data ;;
  unlinked/*/guest-error) expect=completed live=b other=a fd3=eio ;;
  *) die "unknown scenario '$scenario' (basic, unlinked) or --migration-on-error '$on_error'" ;;
esac

work=$(work_dir "$work" mig)
shared=$work/shared
mkdir -p "$shared" "$work/state"
migration_uri=unix:$work/migration.sock
qmp_py=$repo/tests/lib/qmp.py
declare -A pid=()

cleanup() {
  local k
  for k in "${!pid[@]}"; do stop_group "${pid[$k]}" 5 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  local f
  echo "run-migration: FAIL ($scenario, $mode, on-error $on_error): $1" >&2
  for f in qemu-a qemu-b daemon-a daemon-b serial-a serial-b; do
    echo "----- $f.log (tail) -----" >&2
    tail -n 25 "$work/$f.log" 2>/dev/null | sed 's/\r$//' >&2 || true
  done
  echo "----- work dir kept: $work -----" >&2
  exit 1
}
log() { echo "run-migration: [$((SECONDS - t0))s] $*" >&2; }
# qmp SIDE COMMAND [ARGS_JSON] [qmp.py options]
qmp() { local side=$1; shift; python3 "$qmp_py" "$work/$side.qmp" "$@"; }
# start NAME CMD...: CMD in a process group of its own (the daemons' sandbox
# children included), output to NAME.log; pid[NAME] is the group.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$work/$name.log" 2>&1 &
  pid[$name]=$!
}
# ended NAME SECONDS WHAT: waits for NAME's group leader to exit; the status
# lands in rc[NAME] ("stopped" if it had to be signalled).
declare -A rc=()
ended() {
  local r=0
  await_exit "${pid[$1]}" "$2" "$3" || r=$?
  rc[$1]=$r
  [ "$STOPPED" = 0 ] || rc[$1]="stopped ($r)"
}
t0=$SECONDS

# 1. The shared directory, the initramfs, both daemons.
"$here/workloads/migration.host.sh" prepare "$shared" "$work/state" || fail "host prepare"
[ -n "$initrd" ] || initrd=$(run_bounded 600 "build-initramfs.sh" "$here/build-initramfs.sh" "$work/initramfs.cpio.gz") ||
  fail "build-initramfs.sh"
for side in a b; do
  start "daemon-$side" "$daemon_bin" --socket-path "$work/$side.sock" --shared-dir "$shared" --tag "$tag" "${extra_args[@]}"
  wait_for_socket "$work/$side.sock" 30 "${pid[daemon-$side]}" || fail "daemon $side did not create its socket"
done
log "daemons: $daemon_bin --socket-path {a,b}.sock --shared-dir $shared --tag $tag $daemon_args"

# 2. QEMU A boots the guest; QEMU B waits for the incoming migration. Same
#    devices on both, 1 vCPU under TCG, guest RAM shared with the daemon.
cmdline="console=ttyS0 panic=-1 daxfsd.tag=$tag daxfsd.workload=migration"
cmdline+=" daxfsd.arg.fd3=$fd3 daxfsd.arg.wait=$timeout_s"
for side in a b; do
  qemu_cmd=(
    "$qemu" -machine q35 -accel tcg -cpu max -smp 1 -m "$mem"
    -object "memory-backend-memfd,id=mem,size=$mem,share=on" -numa "node,memdev=mem"
    -chardev "socket,id=char0,path=$work/$side.sock"
    -device "vhost-user-fs-pci,chardev=char0,tag=$tag,queue-size=1024"
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline"
    -display none -monitor none -nic none -no-reboot
    -serial "file:$work/serial-$side.log" -qmp "unix:$work/$side.qmp,server=on,wait=off"
    "${extra_qemu[@]}"
  )
  [ "$side" = b ] && qemu_cmd+=(-incoming defer)
  start "qemu-$side" timeout -k 10 "$timeout_s" "${qemu_cmd[@]}"
  wait_for_socket "$work/$side.qmp" 60 "${pid[qemu-$side]}" || fail "QEMU $side did not open its QMP socket"
done
log "qemu: ${qemu_cmd[*]}"

ready() { grep -q 'DAXFSD-MIGRATION READY' "$work/serial-a.log"; }
alive_or_ready() { ready || gone "${pid[qemu-a]}"; }
wait_until "$timeout_s" "READY on A's console" alive_or_ready || fail "the guest did not get READY on A"
ready || fail "QEMU A exited before the guest was READY"
grep -q 'DAXFSD-STEP FAIL' "$work/serial-a.log" && fail "a guest step failed before the migration"
log "guest READY on A"

# 3. The scenario's change, then the migration (both sides with the return
#    path, so that A hears of B's failure and resumes the guest).
if [ "$scenario" = unlinked ]; then
  rm "$shared/mig/data/read.bin"
  log "removed mig/data/read.bin, open in the guest as descriptor 3"
fi
caps='{"capabilities": [{"capability": "return-path", "state": true}]}'
for side in a b; do
  qmp "$side" migrate-set-capabilities "$caps" >/dev/null || fail "migrate-set-capabilities on $side"
done
qmp b migrate-incoming "{\"uri\": \"$migration_uri\"}" >/dev/null || fail "migrate-incoming on B"
wait_for_socket "$work/migration.sock" 30 "${pid[qemu-b]}" || fail "QEMU B does not listen on $migration_uri"
if ! err=$(qmp a migrate "{\"uri\": \"$migration_uri\"}" 2>&1); then
  fail "QEMU A refused to migrate: $err"
fi
log "migrating"
status=$(qmp a query-migrate --field status --until completed,failed,cancelled --timeout "$timeout_s") ||
  fail "migration did not end within ${timeout_s}s (last: $(qmp a query-migrate 2>&1))"
info=$(qmp a query-migrate)
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$info" "$1"; }
log "migration $status: total $(field total-time) ms, downtime $(field downtime) ms, error: $(field error-desc)"
[ "$status" = "$expect" ] || fail "migration $status, expected $expect: $(field error-desc)"
[ "$status" = completed ] ||
  log "QEMU B: $(sed -n "/warning:/d; s/^.*$(basename "$qemu"): //p" "$work/qemu-b.log" | paste -sd '|')"
qmp "$live" query-status --field status --until running --timeout 60 >/dev/null ||
  fail "QEMU $live is not running after the migration ended $status"
if [ "$live" = b ]; then
  st=$(qmp a query-status --field status) || fail "query-status on A"
  [ "$st" = postmigrate ] || fail "QEMU A is '$st' after the migration, expected postmigrate"
fi

# 4. The guest goes on where it now runs, and finishes its checks.
if [ "$live" = b ]; then echo destination; else echo source; fi >"$shared/mig/migrated"
result() { grep -q 'DAXFSD-RESULT' "$work/serial-$live.log" || gone "${pid[qemu-$live]}"; }
wait_until "$timeout_s" "the guest's result on $live" result || fail "no guest result on QEMU $live"
ended "qemu-$live" 60 "QEMU $live after the guest's poweroff"
log "guest finished on $live (QEMU $live exit ${rc[qemu-$live]})"
if ! gone "${pid[qemu-$other]}"; then
  qmp "$other" quit >/dev/null 2>&1 || true
fi
ended "qemu-$other" 30 "QEMU $other"
for side in a b; do ended "daemon-$side" 15 "daemon $side after its QEMU left"; done
log "exit statuses: qemu-a ${rc[qemu-a]}, qemu-b ${rc[qemu-b]}, daemon-a ${rc[daemon-a]}, daemon-b ${rc[daemon-b]}"

# 5. Verdict.
sed -i 's/\r$//' "$work/serial-a.log" "$work/serial-b.log"
grep -q 'DAXFSD-MIGRATION CONTINUED' "$work/serial-$live.log" || fail "the guest did not go on on QEMU $live"
grep -q 'DAXFSD-MIGRATION CONTINUED' "$work/serial-$other.log" && fail "the guest went on on QEMU $other"
grep 'DAXFSD-STEP' "$work/serial-$live.log" | sed -n '/ marker /,$p' | sed 's/^/  guest: /' >&2
failed_step=$(sed -n 's/^.*DAXFSD-RESULT FAIL \([^ ]*\).*$/\1/p' "$work/serial-$live.log")
[ -z "$failed_step" ] || fail "guest step '$failed_step' failed on QEMU $live"
grep -q 'DAXFSD-RESULT PASS' "$work/serial-$live.log" || fail "the guest gave no result on QEMU $live"
EXPECT_FD3=$fd3 "$here/workloads/migration.host.sh" verify "$shared" "$work/state" "$work/serial-$live.log" >&2 ||
  fail "host checks"
[ "${rc[qemu-$live]}" = 0 ] || fail "QEMU $live ended with status ${rc[qemu-$live]}"
[ "$live" = a ] || [ "${rc[qemu-a]}" = 0 ] || fail "QEMU A ended with status ${rc[qemu-a]} on quit"
for side in a b; do
  grep -q 'panicked at' "$work/daemon-$side.log" && fail "daemon $side panicked"
  [ "${rc[daemon-$side]}" = 0 ] || fail "daemon $side ended with status ${rc[daemon-$side]} after its QEMU left"
  group_gone "${pid[daemon-$side]}" || fail "daemon $side left processes: $(group_members "${pid[daemon-$side]}")"
  # A stale socket file is only noted (virtiofsd 1.14 leaves it, daxfsd
  # removes it); one that still accepts connections is a stray listener.
  if [ -e "$work/$side.sock" ]; then
    python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$work/$side.sock" 2>/dev/null &&
      fail "something still listens on daemon $side's socket $work/$side.sock"
    log "note: daemon $side left its socket file (nothing listens on it)"
  fi
done
log "PASS scenario=$scenario mode=$mode on-error=$on_error migration=$status guest-on=$live"
if [ "$keep" = 1 ]; then
  log "work dir kept: $work"
else
  rm -rf "$work"
fi
