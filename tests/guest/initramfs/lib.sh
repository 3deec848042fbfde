# Helpers for guest workloads (busybox sh), installed as /lib/daxfsd.sh.
# A workload is a list of `step NAME FUNCTION [ARGS...]` calls; the first
# failing step prints its reason, the final FAIL marker, and powers off.
# shellcheck shell=sh

# Prints to stderr and fails the current step.
fail() {
  echo "daxfsd-guest: $*" >&2
  return 1
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
  [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}

# Publishes a value for the host-side checks.
value() {
  echo "DAXFSD-VALUE $1 $2"
}

# Drops the guest page cache so the next read goes to the daemon.
drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

# step NAME FUNCTION [ARGS...]: runs FUNCTION in a subshell that stops at the
# first failing command (set -e) or explicit `fail`, traced (set -x) into a
# file whose tail is printed when the step fails. The subshell must not sit
# in an `if` condition: set -e is ignored there.
step() {
  run_step "$@"
  [ "$_rc" -eq 0 ] || finish FAIL "$_name"
}

# soft_step NAME FUNCTION [ARGS...]: like step, but a failure does not end the
# workload: NAME is added to $FAILED_STEPS and the next step runs.
soft_step() {
  run_step "$@"
  [ "$_rc" -eq 0 ] || FAILED_STEPS="${FAILED_STEPS:+$FAILED_STEPS }$_name"
}

# run_step NAME FUNCTION [ARGS...]: runs the step, prints its marker and
# leaves its status in $_rc. Never call it as a condition (`if`, `||`): set -e
# would be off in the step.
run_step() {
  _name=$1
  shift
  ( set -ex; "$@" ) 2>/tmp/step.trace
  _rc=$?
  if [ "$_rc" -eq 0 ]; then
    echo "DAXFSD-STEP PASS $_name (t=$(cut -d" " -f1 /proc/uptime)s)"
  else
    echo "--- last commands of step $_name ---"
    tail -n 12 /tmp/step.trace
    echo "DAXFSD-STEP FAIL $_name: exit $_rc"
  fi
}

# finish PASS | finish FAIL STEP: prints the result marker and powers off;
# with daxfsd.hold=1 on the kernel command line it stays up instead (for a
# host that stops the VM itself, as tests/libvirt/run-libvirt.sh does with
# `virsh destroy`).
finish() {
  if [ "$1" = PASS ]; then
    echo "DAXFSD-RESULT PASS"
  else
    echo "DAXFSD-RESULT FAIL $2"
    # Leave the share unmounted cleanly if we can, then stop anyway.
    umount "${MNT:-/mnt}" 2>/dev/null
  fi
  sync
  if grep -qw 'daxfsd.hold=1' /proc/cmdline; then
    echo "DAXFSD-HOLD waiting to be stopped by the host"
    while :; do sleep 3600; done
  fi
  poweroff -f
  # poweroff -f does not return; if it did, make the kernel panic (panic=-1
  # on the command line reboots, and QEMU's -no-reboot turns that into exit).
  exit 1
}
