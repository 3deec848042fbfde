# shellcheck shell=bash
# Bounded waits for the test scripts: every wait has a limit, and running out of
# it is a failure whose message names what was waited for, never a stuck run.
# Source this file; each function prints its failure to stderr and returns
# non-zero (124 on a timeout), so the caller decides what follows.
#
# Scripts that run inside a guest (guest/workloads/*.sh, guest/rootfs/init.sh,
# guest/initramfs/lib.sh) are bounded by the host's QEMU timeout
# (run-guest.sh and run-rootfs.sh --timeout; run-libvirt.sh --timeout): a hang
# there fails as "guest timed out ... (last passed step: STEP)".

# now_us: the wall clock in microseconds (bash 5's EPOCHREALTIME, whatever
# the locale's decimal point).
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# wait_until SECONDS WHAT CMD...: runs CMD every 0.1 s until it succeeds; after
# SECONDS (a whole number) it gives up.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$(($(now_us) + seconds * 1000000))
  until "$@"; do
    if [ "$(now_us)" -ge "$deadline" ]; then
      echo "timed out after ${seconds}s waiting for $what" >&2
      return 124
    fi
    sleep 0.1
  done
}

# gone PID: the process has exited (a child of this shell is reaped by bash).
gone() { ! kill -0 "$1" 2>/dev/null; }

# socket_or_gone PATH [PID]: PATH is a socket, or PID has exited.
socket_or_gone() { [ -S "$1" ] || { [ -n "${2:-}" ] && gone "$2"; }; }

# wait_for_socket PATH SECONDS [PID]: until PATH is a socket; fails at once if
# PID, the process that should create it, exits first.
wait_for_socket() {
  local path=$1 seconds=$2 pid=${3:-}
  wait_until "$seconds" "socket $path" socket_or_gone "$path" "$pid" || return
  [ -S "$path" ] && return 0
  echo "process $pid exited before creating socket $path" >&2
  return 1
}

# wait_pid_timeout PID SECONDS WHAT: waits up to SECONDS for the child PID to
# exit and returns its exit status; 124 if it is still running (left running).
wait_pid_timeout() {
  local pid=$1 seconds=$2 what=$3 rc=0
  wait_until "$seconds" "$what (pid $pid) to exit" gone "$pid" || return 124
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

# stop_pid PID SECONDS WHAT: SIGTERM, up to SECONDS for an exit, then SIGKILL
# (and 10 s more). Returns the exit status (137 when it took SIGKILL).
stop_pid() {
  local pid=$1 seconds=$2 what=$3 rc=0
  kill -TERM "$pid" 2>/dev/null || true
  wait_pid_timeout "$pid" "$seconds" "$what" 2>/dev/null || rc=$?
  if [ "$rc" = 124 ] && ! gone "$pid"; then
    echo "$what (pid $pid) ignored SIGTERM for ${seconds}s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rc=0
    wait_pid_timeout "$pid" 10 "$what after SIGKILL" || rc=$?
  fi
  return "$rc"
}

# await_exit PID GRACE WHAT: up to GRACE s for PID to exit by itself, then
# stop_pid with as long again. Returns its exit status; sets STOPPED to 1 if
# it had to be signalled, 0 if not.
# shellcheck disable=SC2034  # STOPPED is read by the caller
await_exit() {
  local pid=$1 grace=$2 what=$3 rc=0
  STOPPED=0
  wait_pid_timeout "$pid" "$grace" "$what" 2>/dev/null || rc=$?
  if [ "$rc" = 124 ] && ! gone "$pid"; then
    STOPPED=1
    rc=0
    stop_pid "$pid" "$grace" "$what" || rc=$?
  fi
  return "$rc"
}

# group_members PGID: the processes in process group PGID, read from /proc
# (so also those in other PID namespaces, which the daemons' sandboxes create).
group_members() {
  local f stat pgid
  for f in /proc/[0-9]*/stat; do
    stat=$(cat "$f" 2>/dev/null) || continue
    # fields after the command: state ppid pgrp ...
    read -r _ _ pgid _ <<<"${stat##*) }"
    [ "$pgid" = "$1" ] && echo "${f//[^0-9]/}"
  done
  return 0
}

# group_gone PGID: no process is left in the group.
group_gone() { [ -z "$(group_members "$1")" ]; }

# stop_group PGID SECONDS: SIGTERM to the group, up to SECONDS for it to
# empty, then SIGKILL and as long again; fails, naming the survivors, if a
# member outlives that.
stop_group() {
  local pgid=$1 seconds=$2
  kill -TERM -- "-$pgid" 2>/dev/null || true
  wait_until "$seconds" "process group $pgid to exit on SIGTERM" group_gone "$pgid" 2>/dev/null && return 0
  kill -KILL -- "-$pgid" 2>/dev/null || true
  wait_until "$seconds" "process group $pgid to exit on SIGKILL" group_gone "$pgid" && return 0
  echo "processes of group $pgid survived SIGKILL: $(group_members "$pgid" | tr '\n' ' ')" >&2
  return 1
}

# install_step WHAT CMD...: run_bounded with DAXFSD_INSTALL_TIMEOUT seconds
# (default 3600), for downloads, package installs, debootstrap and builds.
install_step() {
  local what=$1
  shift
  run_bounded "${DAXFSD_INSTALL_TIMEOUT:-3600}" "$what" "$@"
}

# run_bounded SECONDS WHAT CMD...: runs the program CMD (not a shell function)
# under timeout(1), SIGKILL 10 s after SIGTERM; returns its status, 124 or 137
# on a timeout, with a message naming WHAT.
run_bounded() {
  local seconds=$1 what=$2 rc=0
  shift 2
  timeout -k 10 "$seconds" "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "timed out after ${seconds}s: $what" >&2
  fi
  return "$rc"
}
